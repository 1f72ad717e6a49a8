//! SQLite implementation of the management part of the store: command queue, outcomes, facts,
//! device messages and session state.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use steward_core::*;
use time::OffsetDateTime;

use rusqlite::OptionalExtension;

use crate::writes::db;
use crate::{Cols, NamedRow, SqliteStore, backend, enrollment_from_row, from_micros, micros, opt_micros, parse_id};

/// Raw device messages kept per enrollment: at least this many of the newest ones, fewer than twice
/// as many (they are trimmed in batches, see `commit_session_message_in`).
pub const DEVICE_MESSAGES_KEPT: i64 = 10;

pub(crate) fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("bad JSON in database: {e}"))
}

fn command_from_row(r: &impl Cols) -> StoreResult<Command> {
    Ok(Command {
        id: parse_id(&r.text("id")?)?,
        enrollment_id: parse_id(&r.text("enrollment_id")?)?,
        payload: serde_json::from_str(&r.text("payload")?).map_err(json_err)?,
        priority: r.int("priority")? as i32,
        origin: r.text("origin")?,
        state: CommandState::parse(&r.text("state")?).ok_or_else(|| StoreError::Backend("bad command state".into()))?,
        created_at: from_micros(r.int("created_at")?)?,
        expires_at: opt_micros(r.opt_int("expires_at")?)?,
        send_count: r.int("send_count")? as u32,
        last_sent_at: opt_micros(r.opt_int("last_sent_at")?)?,
        last_session: r.opt_text("last_session")?,
        status_code: r.opt_int("status_code")?.map(|c| c as u16),
        completed_at: opt_micros(r.opt_int("completed_at")?)?,
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

/// The enrollment row and its session state (LEFT JOIN: None before the first message), the first
/// of the reads of `management_context`.
macro_rules! context_sql {
    ($where:literal) => {
        concat!(
            "SELECT e.*, e.previous_cert_thumbprint IS NOT NULL AS ctx_previous, ",
            session_columns!(),
            " FROM enrollments e LEFT JOIN mdm_sessions s ON s.enrollment_id = e.id WHERE ",
            $where
        )
    };
}

const CONTEXT_BY_CERTIFICATE: &str = context_sql!("e.cert_thumbprint = ?1 OR e.previous_cert_thumbprint = ?1");
const CONTEXT_BY_ID: &str = context_sql!("e.id = ?1");

/// The session state from `session_columns!()`; None when the row has none (LEFT JOIN).
fn session_from_row(r: &impl Cols) -> StoreResult<Option<SessionState>> {
    let Some(key) = r.opt_text("s_session_key")? else {
        return Ok(None);
    };
    Ok(Some(SessionState {
        key,
        session_id: r.text("s_session_id")?,
        client_msg_id: r.int("s_client_msg_id")? as u32,
        server_msg_id: r.int("s_server_msg_id")? as u32,
        last_request_hash: r.text("s_last_request_hash")?,
        last_response: r.text("s_last_response")?,
        login_status: r.opt_text("s_login_status")?,
        md5_nonce: r.opt_text("s_md5_nonce")?,
        chunk: match (r.opt_text("s_chunk_command")?, r.opt_int("s_chunk_offset")?) {
            (Some(id), Some(off)) => Some((parse_id(&id)?, off as usize)),
            _ => None,
        },
        updated_at: Some(from_micros(r.int("s_updated_at")?)?),
    }))
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

/// `management_context` on one read connection, in one read transaction (one snapshot). The
/// statements are function calls here (`reads.rs`), so each part is its own plain indexed query:
/// the single statement this replaced (JSON aggregates over `json_each` lists, needed when every
/// statement was a thread round trip) cost more in SQLite's temporary tables and JSON than the
/// extra statements do.
fn read_context(
    conn: &rusqlite::Connection,
    key: EnrollmentKey<'_>,
    fact_names: &[&str],
    now: OffsetDateTime,
) -> StoreResult<Option<ManagementContext>> {
    let tx = conn.unchecked_transaction().map_err(db)?;
    let (sql, key) = match key {
        EnrollmentKey::Certificate(t) => (CONTEXT_BY_CERTIFICATE, t.to_ascii_uppercase()),
        EnrollmentKey::Id(id) => (CONTEXT_BY_ID, id.to_string()),
    };
    let (enrollment, previous_certificate, session) = {
        let mut stmt = tx.prepare_cached(sql).map_err(db)?;
        let mut rows = stmt.query(rusqlite::params![key]).map_err(db)?;
        let Some(r) = rows.next().map_err(db)? else {
            return Ok(None);
        };
        let r = NamedRow::new(r)?;
        (
            enrollment_from_row(&r)?,
            r.int("ctx_previous")? != 0,
            session_from_row(&r)?,
        )
    };
    let eid = enrollment.id.to_string();
    let mut facts = Vec::with_capacity(fact_names.len());
    {
        let mut stmt = tx
            .prepare_cached("SELECT value, updated_at FROM device_facts WHERE enrollment_id = ?1 AND name = ?2")
            .map_err(db)?;
        for name in fact_names {
            let fact = stmt
                .query_row(rusqlite::params![eid, name], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
                .map_err(db)?;
            if let Some((value, at)) = fact {
                facts.push(DeviceFact {
                    name: (*name).to_owned(),
                    value,
                    updated_at: from_micros(at)?,
                });
            }
        }
    }
    facts.sort_by(|a, b| a.name.cmp(&b.name));
    let (mut open, mut overdue) = (Vec::new(), false);
    {
        // Delivery order, as deliverable_commands: priority first, then queue order. Expired ones
        // are not deliverable; that one is open tells the commit to expire it.
        let mut stmt = tx
            .prepare_cached(
                "SELECT * FROM commands WHERE enrollment_id = ?1 AND state IN ('pending', 'sent') \
                 ORDER BY priority DESC, seq",
            )
            .map_err(db)?;
        let mut rows = stmt.query(rusqlite::params![eid]).map_err(db)?;
        while let Some(r) = rows.next().map_err(db)? {
            let command = command_from_row(&NamedRow::new(r)?)?;
            if command.expires_at.is_some_and(|at| at <= now) {
                overdue = true;
            } else {
                open.push(command);
            }
        }
    }
    Ok(Some(ManagementContext {
        enrollment,
        previous_certificate,
        session,
        facts,
        open,
        overdue,
    }))
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
        let n = self
            .write_one(
                "UPDATE commands SET state = 'cancelled', completed_at = ? WHERE id = ? AND state IN ('pending', 'sent')",
                |q| q.bind(micros(now)).bind(id.to_string()),
            )
            .await?;
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
        // Every management message starts here, on a rusqlite connection of the calling thread
        // instead of a round trip to a sqlx worker thread (see `reads.rs`).
        self.readers.read(|conn| read_context(conn, key, facts, now))
    }
}

impl SqliteStore {
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
