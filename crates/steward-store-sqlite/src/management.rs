//! SQLite implementation of the management part of the store: command queue, outcomes, facts,
//! device messages and session state.

use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, Row, SqliteConnection};
use steward_domain::*;
use time::OffsetDateTime;

use crate::{SqliteStore, backend, enrollment_from_row, from_micros, insert_log, micros, opt_micros, parse_id};

/// Raw device messages kept per enrollment: at least this many of the newest ones, fewer than twice
/// as many (they are trimmed in batches, see `commit_session_message_in`).
pub const DEVICE_MESSAGES_KEPT: i64 = 10;

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("bad JSON in database: {e}"))
}

fn command_from_row(r: &SqliteRow) -> StoreResult<Command> {
    Ok(Command {
        id: parse_id(&r.get::<String, _>("id"))?,
        enrollment_id: parse_id(&r.get::<String, _>("enrollment_id"))?,
        payload: serde_json::from_str(&r.get::<String, _>("payload")).map_err(json_err)?,
        priority: r.get::<i64, _>("priority") as i32,
        origin: r.get("origin"),
        state: CommandState::parse(&r.get::<String, _>("state"))
            .ok_or_else(|| StoreError::Backend("bad command state".into()))?,
        created_at: from_micros(r.get("created_at"))?,
        expires_at: opt_micros(r.get("expires_at"))?,
        send_count: r.get::<i64, _>("send_count") as u32,
        last_sent_at: opt_micros(r.get("last_sent_at"))?,
        last_session: r.get("last_session"),
        status_code: r.get::<Option<i64>, _>("status_code").map(|c| c as u16),
        completed_at: opt_micros(r.get("completed_at"))?,
    })
}

/// The `mdm_sessions` columns as `s_*` (table alias `s`), read by [`session_from_row`].
macro_rules! session_columns {
    () => {
        "s.session_key AS s_session_key, s.session_id AS s_session_id, s.client_msg_id AS s_client_msg_id, \
         s.server_msg_id AS s_server_msg_id, s.last_request_hash AS s_last_request_hash, \
         s.last_response AS s_last_response, s.login_status AS s_login_status, s.md5_nonce AS s_md5_nonce, \
         s.chunk_command AS s_chunk_command, s.chunk_offset AS s_chunk_offset, s.updated_at AS s_updated_at"
    };
}

/// One statement for everything a management message reads (`management_context`): the enrollment
/// row, its session state (LEFT JOIN: None before the first message), and as JSON the named facts
/// (`?2`, a JSON array of names) and the open commands unexpired at `?3`, plus whether any is
/// overdue. One statement is one round trip to the SQLite worker thread and one read snapshot,
/// where four separate reads cost four of each (docs/BENCHMARKS.md).
macro_rules! context_sql {
    ($where:literal) => {
        concat!(
            "SELECT e.*, e.previous_cert_thumbprint IS NOT NULL AS ctx_previous, ",
            session_columns!(),
            ", (SELECT json_group_array(json_array(f.name, f.value, f.updated_at)) FROM device_facts f \
               WHERE f.enrollment_id = e.id AND f.name IN (SELECT j.value FROM json_each(?2) AS j)) AS ctx_facts, \
             (SELECT json_group_array(json_array(c.id, json(c.payload), c.priority, c.origin, c.state, c.created_at, \
               c.expires_at, c.send_count, c.last_sent_at, c.last_session, c.status_code, c.completed_at, c.seq)) \
               FROM commands c WHERE c.enrollment_id = e.id AND c.state IN ('pending', 'sent') \
               AND (c.expires_at IS NULL OR c.expires_at > ?3)) AS ctx_open, \
             EXISTS (SELECT 1 FROM commands c WHERE c.enrollment_id = e.id AND c.state IN ('pending', 'sent') \
               AND c.expires_at <= ?3) AS ctx_overdue \
             FROM enrollments e LEFT JOIN mdm_sessions s ON s.enrollment_id = e.id WHERE ",
            $where
        )
    };
}

const CONTEXT_BY_CERTIFICATE: &str = context_sql!("e.cert_thumbprint = ?1 OR e.previous_cert_thumbprint = ?1");
const CONTEXT_BY_ID: &str = context_sql!("e.id = ?1");

/// An open command as `context_sql!` encodes it: id, payload, priority, origin, state, created_at,
/// expires_at, send_count, last_sent_at, last_session, status_code, completed_at, seq.
type OpenCommandJson = (
    String,
    CommandPayload,
    i64,
    String,
    String,
    i64,
    Option<i64>,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    i64,
);

fn open_command_from_json(enrollment_id: EnrollmentId, c: OpenCommandJson) -> StoreResult<Command> {
    Ok(Command {
        id: parse_id(&c.0)?,
        enrollment_id,
        payload: c.1,
        priority: c.2 as i32,
        origin: c.3,
        state: CommandState::parse(&c.4).ok_or_else(|| StoreError::Backend("bad command state".into()))?,
        created_at: from_micros(c.5)?,
        expires_at: opt_micros(c.6)?,
        send_count: c.7 as u32,
        last_sent_at: opt_micros(c.8)?,
        last_session: c.9,
        status_code: c.10.map(|v| v as u16),
        completed_at: opt_micros(c.11)?,
    })
}

/// The session state from `session_columns!()`; None when the row has none (LEFT JOIN).
fn session_from_row(r: &SqliteRow) -> StoreResult<Option<SessionState>> {
    let Some(key) = r.get::<Option<String>, _>("s_session_key") else {
        return Ok(None);
    };
    Ok(Some(SessionState {
        key,
        session_id: r.get("s_session_id"),
        client_msg_id: r.get::<i64, _>("s_client_msg_id") as u32,
        server_msg_id: r.get::<i64, _>("s_server_msg_id") as u32,
        last_request_hash: r.get("s_last_request_hash"),
        last_response: r.get("s_last_response"),
        login_status: r.get("s_login_status"),
        md5_nonce: r.get("s_md5_nonce"),
        chunk: match (
            r.get::<Option<String>, _>("s_chunk_command"),
            r.get::<Option<i64>, _>("s_chunk_offset"),
        ) {
            (Some(id), Some(off)) => Some((parse_id(&id)?, off as usize)),
            _ => None,
        },
        updated_at: Some(from_micros(r.get("s_updated_at"))?),
    }))
}

/// Moves an enrollment out of `active`: revokes its certificate (logged) and cancels open commands.
pub(crate) async fn end_enrollment_in(
    conn: &mut SqliteConnection,
    id: EnrollmentId,
    state: EnrollmentState,
    reason: &str,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let Some(row) = sqlx::query("SELECT * FROM enrollments WHERE id = ? AND state = 'active'")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?
    else {
        return Ok(false);
    };
    let e = enrollment_from_row(&row)?;
    let previous: Option<String> = row.get("previous_cert_serial");
    if let Some(serial) = previous {
        let entry = IssuanceLogEntry {
            serial,
            event: IssuanceEvent::Revoked,
            thumbprint: row.get("previous_cert_thumbprint"),
            subject: None,
            device_id: Some(e.device_id.clone()),
            enrollment_id: Some(id),
            not_before: None,
            not_after: None,
            reason: Some(reason.to_owned()),
            at: now,
        };
        insert_log(conn, &entry).await?;
    }
    sqlx::query(
        "UPDATE enrollments SET state = ?, updated_at = ?, previous_cert_serial = NULL, previous_cert_thumbprint = NULL \
         WHERE id = ?",
    )
        .bind(state.as_str())
        .bind(micros(now))
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    sqlx::query(
        "UPDATE commands SET state = 'cancelled', completed_at = ? WHERE enrollment_id = ? AND state IN ('pending', 'sent')",
    )
    .bind(micros(now))
    .bind(id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    let kind = if state == EnrollmentState::Wiped {
        EventKind::Wiped
    } else {
        EventKind::Unenrolled
    };
    insert_event(
        conn,
        kind,
        id,
        e.device_id.as_str(),
        serde_json::json!({ "reason": reason }),
        now,
    )
    .await?;
    insert_log(
        conn,
        &IssuanceLogEntry {
            serial: e.cert_serial,
            event: IssuanceEvent::Revoked,
            thumbprint: Some(e.cert_thumbprint),
            subject: None,
            device_id: Some(e.device_id),
            enrollment_id: Some(id),
            not_before: None,
            not_after: None,
            reason: Some(reason.to_owned()),
            at: now,
        },
    )
    .await?;
    Ok(true)
}

/// Appends a device event (see `device_events` in migration 0002) inside the caller's transaction.
pub(crate) async fn insert_event(
    conn: &mut SqliteConnection,
    kind: EventKind,
    enrollment_id: EnrollmentId,
    device_id: &str,
    data: serde_json::Value,
    at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO device_events (kind, enrollment_id, device_id, data, at) VALUES (?, ?, ?, ?, ?)")
        .bind(kind.as_str())
        .bind(enrollment_id.to_string())
        .bind(device_id)
        .bind(data.to_string())
        .bind(micros(at))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(())
}

fn event_from_row(r: &SqliteRow) -> StoreResult<DeviceEvent> {
    Ok(DeviceEvent {
        seq: r.get("seq"),
        kind: EventKind::parse(&r.get::<String, _>("kind"))
            .ok_or_else(|| StoreError::Backend("bad event kind".into()))?,
        enrollment_id: parse_id(&r.get::<String, _>("enrollment_id"))?,
        device_id: r.get("device_id"),
        data: serde_json::from_str(&r.get::<String, _>("data")).map_err(json_err)?,
        at: from_micros(r.get("at"))?,
    })
}

/// Records reported facts: unchanged values only get `updated_at` (when last reported); changed or
/// new ones are written with a history row. Every check-in reports the same DevInfo facts, and each
/// statement is a round trip to the single write connection's worker thread, so the usual case
/// (each name once, nothing changed) is one statement: an UPDATE that marks the unchanged facts and
/// returns their names. Only the rest are read and written one by one.
async fn write_facts(conn: &mut SqliteConnection, eid: &str, facts: &[(String, String)], at: i64) -> StoreResult<()> {
    let mut seen = std::collections::HashSet::new();
    let distinct = facts.iter().all(|(name, _)| seen.insert(name.as_str()));
    let mut rest: Vec<&(String, String)> = facts.iter().collect();
    if distinct {
        // With a name reported twice, "unchanged" would depend on which of its values is meant; the
        // general path below takes them in order instead.
        let pairs = serde_json::to_string(facts).map_err(json_err)?;
        let unchanged: std::collections::HashSet<String> = sqlx::query_scalar(
            "UPDATE device_facts SET updated_at = ?1 WHERE enrollment_id = ?2 \
             AND (name, value) IN (SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?3) AS j) RETURNING name",
        )
        .bind(at)
        .bind(eid)
        .bind(pairs)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
        .into_iter()
        .collect();
        rest.retain(|(name, _)| !unchanged.contains(name));
        if rest.is_empty() {
            return Ok(());
        }
    }
    let names = serde_json::to_string(&rest.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()).map_err(json_err)?;
    let mut current: std::collections::HashMap<String, String> = sqlx::query_as::<_, (String, String)>(
        "SELECT name, value FROM device_facts WHERE enrollment_id = ?1 \
         AND name IN (SELECT j.value FROM json_each(?2) AS j)",
    )
    .bind(eid)
    .bind(names)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    .into_iter()
    .collect();
    let mut unchanged: Vec<&str> = Vec::new();
    for (name, value) in rest {
        let old = current.get(name).cloned();
        if old.as_deref() == Some(value.as_str()) {
            unchanged.push(name);
            continue;
        }
        sqlx::query(
            "INSERT INTO device_facts (enrollment_id, name, value, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (enrollment_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(eid)
        .bind(name)
        .bind(value)
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
        sqlx::query(
            "INSERT INTO device_fact_history (enrollment_id, name, old_value, new_value, at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(eid)
        .bind(name)
        .bind(old)
        .bind(value)
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
        // A later item for the same name compares against this value, as it would against the row
        // just written.
        current.insert(name.clone(), value.clone());
    }
    if !unchanged.is_empty() {
        let names = serde_json::to_string(&unchanged).map_err(json_err)?;
        sqlx::query(
            "UPDATE device_facts SET updated_at = ?1 WHERE enrollment_id = ?2 \
             AND name IN (SELECT j.value FROM json_each(?3) AS j)",
        )
        .bind(at)
        .bind(eid)
        .bind(names)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    Ok(())
}

/// Revokes (logs) and forgets the certificate a renewal replaced, if any.
async fn retire_previous(
    conn: &mut SqliteConnection,
    id: EnrollmentId,
    reason: &str,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let row = sqlx::query(
        "SELECT device_id, previous_cert_serial, previous_cert_thumbprint FROM enrollments \
         WHERE id = ? AND previous_cert_serial IS NOT NULL",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?;
    let Some(row) = row else { return Ok(()) };
    sqlx::query("UPDATE enrollments SET previous_cert_serial = NULL, previous_cert_thumbprint = NULL WHERE id = ?")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    let entry = IssuanceLogEntry {
        serial: row.get("previous_cert_serial"),
        event: IssuanceEvent::Revoked,
        thumbprint: row.get("previous_cert_thumbprint"),
        subject: None,
        device_id: DeviceId::parse(&row.get::<String, _>("device_id")),
        enrollment_id: Some(id),
        not_before: None,
        not_after: None,
        reason: Some(reason.to_owned()),
        at: now,
    };
    insert_log(conn, &entry).await
}

impl SqliteStore {
    pub(crate) async fn enrollment_by_certificate_impl(&self, thumbprint: &str) -> StoreResult<Option<Enrollment>> {
        let t = thumbprint.to_ascii_uppercase();
        sqlx::query("SELECT * FROM enrollments WHERE cert_thumbprint = ? OR previous_cert_thumbprint = ?")
            .bind(&t)
            .bind(&t)
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
            .as_ref()
            .map(enrollment_from_row)
            .transpose()
    }

    pub(crate) async fn end_enrollment_impl(
        &self,
        id: EnrollmentId,
        state: EnrollmentState,
        reason: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let changed = end_enrollment_in(&mut tx, id, state, reason, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(changed)
    }

    pub(crate) async fn command_impl(&self, id: CommandId) -> StoreResult<Option<Command>> {
        sqlx::query("SELECT * FROM commands WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
            .as_ref()
            .map(command_from_row)
            .transpose()
    }

    pub(crate) async fn commands_for_enrollment_impl(&self, id: EnrollmentId) -> StoreResult<Vec<Command>> {
        sqlx::query("SELECT * FROM commands WHERE enrollment_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(command_from_row)
            .collect()
    }

    pub(crate) async fn deliverable_commands_impl(
        &self,
        id: EnrollmentId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Command>> {
        sqlx::query(
            "SELECT * FROM commands WHERE enrollment_id = ? AND state IN ('pending', 'sent') \
             AND (expires_at IS NULL OR expires_at > ?) ORDER BY priority DESC, seq",
        )
        .bind(id.to_string())
        .bind(micros(now))
        .fetch_all(&self.read)
        .await
        .map_err(backend)?
        .iter()
        .map(command_from_row)
        .collect()
    }

    pub(crate) async fn cancel_command_impl(&self, id: CommandId, now: OffsetDateTime) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE commands SET state = 'cancelled', completed_at = ? WHERE id = ? AND state IN ('pending', 'sent')",
        )
        .bind(micros(now))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(n == 1)
    }

    pub(crate) async fn command_result_impl(&self, id: CommandId) -> StoreResult<Option<CommandResult>> {
        let Some(r) = sqlx::query("SELECT * FROM command_results WHERE command_id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        Ok(Some(CommandResult {
            command_id: parse_id(&r.get::<String, _>("command_id"))?,
            enrollment_id: parse_id(&r.get::<String, _>("enrollment_id"))?,
            status_code: r.get::<i64, _>("status_code") as u16,
            results: serde_json::from_str(&r.get::<String, _>("results")).map_err(json_err)?,
            child_codes: serde_json::from_str(&r.get::<String, _>("child_codes")).map_err(json_err)?,
            received_at: from_micros(r.get("received_at"))?,
        }))
    }

    pub(crate) async fn session_state_impl(&self, id: EnrollmentId) -> StoreResult<Option<SessionState>> {
        let r = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM mdm_sessions s WHERE s.enrollment_id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.read)
        .await
        .map_err(backend)?;
        match r {
            Some(r) => session_from_row(&r),
            None => Ok(None),
        }
    }

    pub(crate) async fn management_context_impl(
        &self,
        key: EnrollmentKey<'_>,
        facts: &[&str],
        now: OffsetDateTime,
    ) -> StoreResult<Option<ManagementContext>> {
        let (sql, key) = match key {
            EnrollmentKey::Certificate(t) => (CONTEXT_BY_CERTIFICATE, t.to_ascii_uppercase()),
            EnrollmentKey::Id(id) => (CONTEXT_BY_ID, id.to_string()),
        };
        let names = serde_json::to_string(facts).map_err(json_err)?;
        let Some(r) = sqlx::query(sql)
            .bind(key)
            .bind(names)
            .bind(micros(now))
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let enrollment = enrollment_from_row(&r)?;
        let mut facts = serde_json::from_str::<Vec<(String, String, i64)>>(&r.get::<String, _>("ctx_facts"))
            .map_err(json_err)?
            .into_iter()
            .map(|(name, value, at)| {
                Ok(DeviceFact {
                    name,
                    value,
                    updated_at: from_micros(at)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        facts.sort_by(|a, b| a.name.cmp(&b.name));
        let mut open = serde_json::from_str::<Vec<OpenCommandJson>>(&r.get::<String, _>("ctx_open"))
            .map_err(json_err)?
            .into_iter()
            .map(|c| Ok((c.12, c.2, open_command_from_json(enrollment.id, c)?)))
            .collect::<StoreResult<Vec<(i64, i64, Command)>>>()?;
        // Delivery order, as deliverable_commands: priority first, then queue order.
        open.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(Some(ManagementContext {
            enrollment,
            previous_certificate: r.get::<bool, _>("ctx_previous"),
            session: session_from_row(&r)?,
            facts,
            open: open.into_iter().map(|(_, _, c)| c).collect(),
            overdue: r.get::<bool, _>("ctx_overdue"),
        }))
    }
}

/// The body of `enqueue_commands`, run by the writer thread on the write connection.
pub(crate) async fn enqueue_commands_in(conn: &mut SqliteConnection, commands: &[NewCommand]) -> StoreResult<()> {
    // Multi-row INSERTs: a fan-out to a fleet is one call with N × commands rows, and a statement
    // per row made it cost 3.8 s per 100,000 (docs/BENCHMARKS.md). 100 rows × 7 parameters stays
    // far below SQLite's bound-parameter limit; rows keep their order, so `seq` (queue order) does too.
    const ROWS: usize = 100;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    for chunk in commands.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO commands (id, enrollment_id, payload, priority, origin, state, created_at, expires_at) \
                 VALUES {}",
            vec!["(?, ?, ?, ?, ?, 'pending', ?, ?)"; chunk.len()].join(", ")
        );
        // Only placeholders are generated; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for c in chunk {
            let payload = serde_json::to_string(&c.payload).map_err(json_err)?;
            q = q
                .bind(c.id.to_string())
                .bind(c.enrollment_id.to_string())
                .bind(payload)
                .bind(i64::from(c.priority))
                .bind(c.origin.clone())
                .bind(micros(c.created_at))
                .bind(c.expires_at.map(micros));
        }
        q.execute(&mut *tx).await.map_err(backend)?;
    }
    tx.commit().await.map_err(backend)
}

/// The body of `commit_session_message`, run by the writer thread on the write connection.
pub(crate) async fn commit_session_message_in(
    conn: &mut SqliteConnection,
    id: EnrollmentId,
    c: &SessionCommit,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let eid = id.to_string();
    let at = micros(now);
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;

    if c.expire_overdue {
        sqlx::query(
            "UPDATE commands SET state = 'expired', completed_at = ? WHERE enrollment_id = ? \
                 AND state IN ('pending', 'sent') AND expires_at IS NOT NULL AND expires_at <= ?",
        )
        .bind(at)
        .bind(&eid)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }

    let device_id: String = if c.outcomes.is_empty() && c.async_completions.is_empty() {
        String::new()
    } else {
        sqlx::query_scalar("SELECT device_id FROM enrollments WHERE id = ?")
            .bind(&eid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .unwrap_or_default()
    };
    for o in &c.outcomes {
        // Only this enrollment's own, still-open commands take an outcome; the first one wins. The
        // check and the insert are one statement (one round trip less per outcome).
        let inserted = sqlx::query(
            "INSERT INTO command_results (command_id, enrollment_id, status_code, results, child_codes, received_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM commands WHERE id = ?1 AND enrollment_id = ?2 \
             AND state IN ('pending', 'sent')) ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(o.command_id.to_string())
        .bind(&eid)
        .bind(i64::from(o.status_code))
        .bind(serde_json::to_string(&o.results).map_err(json_err)?)
        .bind(serde_json::to_string(&o.child_codes).map_err(json_err)?)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if inserted == 0 {
            continue;
        }
        let state = match o.status_code {
            202 => CommandState::Accepted,
            200..=299 => CommandState::Succeeded,
            _ => CommandState::Failed,
        };
        let completed = (state != CommandState::Accepted).then_some(at);
        sqlx::query("UPDATE commands SET state = ?, status_code = ?, completed_at = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(i64::from(o.status_code))
            .bind(completed)
            .bind(o.command_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let kind = if state == CommandState::Failed {
            EventKind::CommandFailed
        } else {
            EventKind::CommandAcknowledged
        };
        let data = serde_json::json!({ "command_id": o.command_id, "status_code": o.status_code });
        insert_event(&mut tx, kind, id, &device_id, data, now).await?;
    }

    for (cid, payload) in &c.requeue {
        sqlx::query(
            "UPDATE commands SET payload = ?, state = 'pending' WHERE id = ? AND enrollment_id = ? \
                 AND state IN ('pending', 'sent')",
        )
        .bind(serde_json::to_string(payload).map_err(json_err)?)
        .bind(cid.to_string())
        .bind(&eid)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }

    if !c.sent.is_empty() {
        // One statement for every command in the answer, not one each: a profile is several commands
        // in one message, and each statement is a round trip while the write connection is held.
        let ids = serde_json::to_string(&c.sent).map_err(json_err)?;
        sqlx::query(
            "UPDATE commands SET state = 'sent', send_count = send_count + 1, last_sent_at = ?1, last_session = ?2 \
             WHERE enrollment_id = ?3 AND state IN ('pending', 'sent') \
             AND id IN (SELECT j.value FROM json_each(?4) AS j)",
        )
        .bind(at)
        .bind(&c.session.key)
        .bind(&eid)
        .bind(ids)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }

    for (target, code) in &c.async_completions {
        // The newest accepted command of this enrollment that targeted this node.
        let rows = sqlx::query(
            "SELECT id, payload FROM commands WHERE enrollment_id = ? AND state = 'accepted' ORDER BY seq DESC",
        )
        .bind(&eid)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        for r in rows {
            let payload: CommandPayload = serde_json::from_str(&r.get::<String, _>("payload")).map_err(json_err)?;
            if payload.targets().iter().any(|t| t == target) {
                let state = if (200..300).contains(code) {
                    CommandState::Succeeded
                } else {
                    CommandState::Failed
                };
                sqlx::query("UPDATE commands SET state = ?, status_code = ?, completed_at = ? WHERE id = ?")
                    .bind(state.as_str())
                    .bind(i64::from(*code))
                    .bind(at)
                    .bind(r.get::<String, _>("id"))
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                let kind = if state == CommandState::Failed {
                    EventKind::CommandFailed
                } else {
                    EventKind::CommandAcknowledged
                };
                let data = serde_json::json!({
                    "command_id": r.get::<String, _>("id"), "status_code": code, "completion": "async"
                });
                insert_event(&mut tx, kind, id, &device_id, data, now).await?;
                break;
            }
        }
    }

    if !c.facts.is_empty() {
        write_facts(&mut tx, &eid, &c.facts, at).await?;
    }

    if let Some((state, reason)) = &c.new_state {
        end_enrollment_in(&mut tx, id, *state, reason, now).await?;
    }

    if let Some(body) = &c.raw_message {
        // Trimming after every insert was a second statement per message, each a round trip while the
        // write connection is held. Trimming back to DEVICE_MESSAGES_KEPT once there are twice as many
        // does it on one message in DEVICE_MESSAGES_KEPT: between KEPT and 2 × KEPT − 1 are kept.
        let stored: i64 = sqlx::query_scalar(
            "INSERT INTO device_messages (enrollment_id, received_at, body) VALUES (?1, ?2, ?3) \
             RETURNING (SELECT COUNT(*) FROM device_messages WHERE enrollment_id = ?1)",
        )
        .bind(&eid)
        .bind(at)
        .bind(body)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        if stored >= 2 * DEVICE_MESSAGES_KEPT {
            sqlx::query(
                "DELETE FROM device_messages WHERE enrollment_id = ? AND seq <= \
                 (SELECT seq FROM device_messages WHERE enrollment_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            )
            .bind(&eid)
            .bind(&eid)
            .bind(DEVICE_MESSAGES_KEPT)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
    }

    let s = &c.session;
    sqlx::query(
            "INSERT INTO mdm_sessions (enrollment_id, session_key, session_id, client_msg_id, server_msg_id, \
             last_request_hash, last_response, login_status, md5_nonce, chunk_command, chunk_offset, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (enrollment_id) DO UPDATE SET session_key = excluded.session_key, \
             session_id = excluded.session_id, \
             client_msg_id = excluded.client_msg_id, server_msg_id = excluded.server_msg_id, \
             last_request_hash = excluded.last_request_hash, last_response = excluded.last_response, \
             login_status = excluded.login_status, md5_nonce = excluded.md5_nonce, \
             chunk_command = excluded.chunk_command, chunk_offset = excluded.chunk_offset, updated_at = excluded.updated_at",
        )
        .bind(&eid)
        .bind(&s.key)
        .bind(&s.session_id)
        .bind(i64::from(s.client_msg_id))
        .bind(i64::from(s.server_msg_id))
        .bind(&s.last_request_hash)
        .bind(&s.last_response)
        .bind(&s.login_status)
        .bind(&s.md5_nonce)
        .bind(s.chunk.map(|(id, _)| id.to_string()))
        .bind(s.chunk.map(|(_, off)| off as i64))
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;

    sqlx::query("UPDATE enrollments SET last_seen_at = ? WHERE id = ?")
        .bind(at)
        .bind(&eid)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;

    if c.retire_previous_certificate {
        retire_previous(&mut tx, id, "device uses its renewed certificate", now).await?;
    }

    tx.commit().await.map_err(backend)
}

impl SqliteStore {
    pub(crate) async fn renew_certificate_impl(&self, r: &CertificateRenewal) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query("SELECT * FROM enrollments WHERE id = ? AND state = 'active'")
            .bind(r.enrollment_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
        else {
            return Err(StoreError::NotFound);
        };
        let e = enrollment_from_row(&row)?;
        let prev_thumb: Option<String> = row.get("previous_cert_thumbprint");
        let old = r.old_thumbprint.to_ascii_uppercase();
        let log = |serial: String, thumb: Option<String>, reason: &str| IssuanceLogEntry {
            serial,
            event: IssuanceEvent::Revoked,
            thumbprint: thumb,
            subject: None,
            device_id: Some(e.device_id.clone()),
            enrollment_id: Some(e.id),
            not_before: None,
            not_after: None,
            reason: Some(reason.to_owned()),
            at: r.at,
        };
        if old == e.cert_thumbprint {
            // Normal renewal: the current certificate becomes the previous one (still accepted).
            if prev_thumb.is_some() {
                retire_previous(&mut tx, e.id, "superseded by a second renewal", r.at).await?;
            }
            sqlx::query(
                "UPDATE enrollments SET previous_cert_serial = cert_serial, previous_cert_thumbprint = cert_thumbprint \
                 WHERE id = ?",
            )
            .bind(e.id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        } else if prev_thumb.as_deref() == Some(old.as_str()) {
            // The device renews again with the old certificate: it never got (or never used) the
            // one we issued last time, which is revoked now.
            insert_log(
                &mut tx,
                &log(
                    e.cert_serial.clone(),
                    Some(e.cert_thumbprint.clone()),
                    "renewal answer not used",
                ),
            )
            .await?;
        } else {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE enrollments SET cert_serial = ?, cert_thumbprint = ?, cert_not_after = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&r.new_serial)
        .bind(&r.new_thumbprint)
        .bind(micros(r.not_after))
        .bind(micros(r.at))
        .bind(e.id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        insert_log(
            &mut tx,
            &IssuanceLogEntry {
                serial: r.new_serial.clone(),
                event: IssuanceEvent::Issued,
                thumbprint: Some(r.new_thumbprint.clone()),
                subject: Some(r.subject.clone()),
                device_id: Some(e.device_id.clone()),
                enrollment_id: Some(e.id),
                not_before: Some(r.not_before),
                not_after: Some(r.not_after),
                reason: Some("renewal".into()),
                at: r.at,
            },
        )
        .await?;
        let data = serde_json::json!({ "serial": r.new_serial, "not_after": micros(r.not_after) });
        insert_event(
            &mut tx,
            EventKind::CertificateRenewed,
            e.id,
            e.device_id.as_str(),
            data,
            r.at,
        )
        .await?;
        tx.commit().await.map_err(backend)
    }

    pub(crate) async fn device_events_after_impl(&self, after: i64, limit: u32) -> StoreResult<Vec<DeviceEvent>> {
        sqlx::query("SELECT * FROM device_events WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(event_from_row)
            .collect()
    }

    pub(crate) async fn device_events_for_impl(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceEvent>> {
        sqlx::query("SELECT * FROM device_events WHERE enrollment_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(event_from_row)
            .collect()
    }

    pub(crate) async fn device_facts_impl(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceFact>> {
        sqlx::query("SELECT name, value, updated_at FROM device_facts WHERE enrollment_id = ? ORDER BY name")
            .bind(id.to_string())
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| {
                Ok(DeviceFact {
                    name: r.get("name"),
                    value: r.get("value"),
                    updated_at: from_micros(r.get("updated_at"))?,
                })
            })
            .collect()
    }

    pub(crate) async fn fact_history_impl(&self, id: EnrollmentId) -> StoreResult<Vec<FactChange>> {
        sqlx::query("SELECT * FROM device_fact_history WHERE enrollment_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| {
                Ok(FactChange {
                    name: r.get("name"),
                    old_value: r.get("old_value"),
                    new_value: r.get("new_value"),
                    at: from_micros(r.get("at"))?,
                })
            })
            .collect()
    }

    pub(crate) async fn device_messages_impl(&self, id: EnrollmentId) -> StoreResult<Vec<(OffsetDateTime, String)>> {
        sqlx::query("SELECT received_at, body FROM device_messages WHERE enrollment_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| Ok((from_micros(r.get("received_at"))?, r.get("body"))))
            .collect()
    }
}
