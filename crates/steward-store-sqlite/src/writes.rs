//! The device lifecycle's write transactions: enrollment, each management message, command
//! enqueues, certificate renewal, the end of an enrollment and the issuance log. They run on the
//! writer thread (`writer.rs`) with rusqlite, synchronously: a statement is a function call on
//! that thread, not a round trip to sqlx's per-connection worker thread (two thread wake-ups each,
//! seven per idle check-in before this; docs/BENCHMARKS.md, third pass). Statements are prepared
//! once per connection (`prepare_cached`).
//!
//! Each function is one `BEGIN IMMEDIATE` transaction: whole or not at all.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use steward_core::*;
use time::OffsetDateTime;

use crate::management::{DEVICE_MESSAGES_KEPT, json_err};
use crate::{micros, opt_micros, parse_id};

pub(crate) fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn immediate(conn: &mut Connection) -> StoreResult<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)
}

/// Runs one cached statement that returns no rows; rows changed.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<usize> {
    conn.prepare_cached(sql).map_err(db)?.execute(params).map_err(db)
}

fn bad(what: &str) -> StoreError {
    StoreError::Backend(format!("bad {what} in database"))
}

fn insert_log(conn: &Connection, e: &IssuanceLogEntry) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO certificate_log (serial, event, thumbprint, subject, device_id, enrollment_id, \
         not_before, not_after, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            e.serial,
            e.event.as_str(),
            e.thumbprint,
            e.subject,
            e.device_id.as_ref().map(DeviceId::as_str),
            e.enrollment_id.map(|i| i.to_string()),
            e.not_before.map(micros),
            e.not_after.map(micros),
            e.reason,
            micros(e.at),
        ],
    )?;
    Ok(())
}

/// Appends a device event (see `device_events` in migration 0002) inside the caller's transaction.
fn insert_event(
    conn: &Connection,
    kind: EventKind,
    enrollment_id: EnrollmentId,
    device_id: &str,
    data: serde_json::Value,
    at: OffsetDateTime,
) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO device_events (kind, enrollment_id, device_id, data, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            kind.as_str(),
            enrollment_id.to_string(),
            device_id,
            data.to_string(),
            micros(at)
        ],
    )?;
    Ok(())
}

/// A revocation entry of the issuance log for `device`'s enrollment `id`.
fn revoked(
    serial: String,
    thumbprint: Option<String>,
    device: &DeviceId,
    id: EnrollmentId,
    reason: &str,
    at: OffsetDateTime,
) -> IssuanceLogEntry {
    IssuanceLogEntry {
        serial,
        event: IssuanceEvent::Revoked,
        thumbprint,
        subject: None,
        device_id: Some(device.clone()),
        enrollment_id: Some(id),
        not_before: None,
        not_after: None,
        reason: Some(reason.to_owned()),
        at,
    }
}

pub(crate) fn append_issuance_log(conn: &mut Connection, e: &IssuanceLogEntry) -> StoreResult<()> {
    let tx = immediate(conn)?;
    insert_log(&tx, e)?;
    tx.commit().map_err(db)
}

pub(crate) fn commit_enrollment(conn: &mut Connection, c: &EnrollmentCommit) -> StoreResult<()> {
    let e = &c.enrollment;
    let now = e.enrolled_at;
    let tx = immediate(conn)?;

    if let Some(token_id) = c.consume_token {
        // Re-check usability inside the write lock: the pre-check the server did may be stale.
        let (revoked, expires_at, max_uses, uses) = tx
            .prepare_cached("SELECT revoked, expires_at, max_uses, uses FROM enrollment_tokens WHERE id = ?1")
            .map_err(db)?
            .query_row(params![token_id.to_string()], |r| {
                Ok((
                    r.get::<_, i64>(0)? != 0,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        token_usable(
            revoked,
            opt_micros(expires_at)?,
            max_uses.map(|m| m as u32),
            uses as u32,
            now,
        )?;
        exec(
            &tx,
            "UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?1",
            params![token_id.to_string()],
        )?;
    }

    if let Some((nonce, expires_at)) = &c.consume_nonce {
        let res = tx
            .prepare_cached("INSERT INTO used_nonces (nonce_hash, expires_at) VALUES (?1, ?2)")
            .map_err(db)?
            .execute(params![nonce.to_hex(), micros(*expires_at)]);
        match res {
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                return Err(StoreError::NonceReused);
            }
            other => {
                other.map_err(db)?;
            }
        }
        exec(
            &tx,
            "DELETE FROM used_nonces WHERE expires_at < ?1",
            params![micros(now)],
        )?;
    }

    // A device that enrolls again replaces its previous enrollment; the old certificate must stop
    // working, so it is revoked in the same transaction.
    let previous: Vec<(String, String)> = tx
        .prepare_cached("SELECT id, cert_serial FROM enrollments WHERE device_id = ?1 AND state = 'active'")
        .map_err(db)?
        .query_map(params![e.device_id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db)?
        .collect::<Result<_, _>>()
        .map_err(db)?;
    for (old_id, old_serial) in &previous {
        exec(
            &tx,
            "UPDATE enrollments SET state = 'replaced', updated_at = ?1 WHERE id = ?2",
            params![micros(now), old_id],
        )?;
        let entry = revoked(
            old_serial.clone(),
            None,
            &e.device_id,
            parse_id(old_id)?,
            "superseded by re-enrollment",
            now,
        );
        insert_log(&tx, &entry)?;
    }

    exec(
        &tx,
        "INSERT INTO enrollments (id, device_id, hw_dev_id, device_name, os_version, os_edition, \
         enrollment_type, user_email, auth_method, enrollment_token_id, group_id, cert_serial, \
         cert_thumbprint, cert_not_after, state, enrolled_at, updated_at, md5_credential) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        params![
            e.id.to_string(),
            e.device_id.as_str(),
            e.hw_dev_id,
            e.device_name,
            e.os_version,
            e.os_edition,
            e.enrollment_type.as_str(),
            e.user_email,
            e.auth_method.as_str(),
            e.enrollment_token_id.map(|i| i.to_string()),
            e.group_id.map(|i| i.to_string()),
            e.cert_serial,
            e.cert_thumbprint,
            micros(e.cert_not_after),
            e.state.as_str(),
            micros(e.enrolled_at),
            micros(e.updated_at),
            c.md5_credential,
        ],
    )?;

    insert_log(
        &tx,
        &IssuanceLogEntry {
            serial: e.cert_serial.clone(),
            event: IssuanceEvent::Issued,
            thumbprint: Some(e.cert_thumbprint.clone()),
            subject: Some(c.subject.clone()),
            device_id: Some(e.device_id.clone()),
            enrollment_id: Some(e.id),
            not_before: Some(c.not_before),
            not_after: Some(e.cert_not_after),
            reason: None,
            at: now,
        },
    )?;
    let data = serde_json::json!({
        "enrollment_type": e.enrollment_type.as_str(),
        "auth_method": e.auth_method.as_str(),
        "user": e.user_email,
        "device_name": e.device_name,
        "serial": e.cert_serial,
        // Re-enrollment: the device had an active enrollment, now replaced (fleet size unchanged).
        "replaced": !previous.is_empty(),
    });
    insert_event(&tx, EventKind::Enrolled, e.id, e.device_id.as_str(), data, now)?;
    tx.commit().map_err(db)
}

/// Commands per transaction of a large enqueue (see `Store::enqueue_commands`).
pub(crate) const ENQUEUE_BATCH: usize = 10_000;

/// One transaction of `enqueue_commands`: at most [`ENQUEUE_BATCH`] commands.
pub(crate) fn enqueue_commands(conn: &mut Connection, commands: &[NewCommand]) -> StoreResult<()> {
    let tx = immediate(conn)?;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO commands (id, enrollment_id, payload, priority, origin, state, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
            )
            .map_err(db)?;
        // One prepared statement, executed per row in queue order, so `seq` keeps it.
        for c in commands {
            insert
                .execute(params![
                    c.id.to_string(),
                    c.enrollment_id.to_string(),
                    serde_json::to_string(&c.payload).map_err(json_err)?,
                    i64::from(c.priority),
                    c.origin,
                    micros(c.created_at),
                    c.expires_at.map(micros),
                ])
                .map_err(db)?;
        }
    }
    tx.commit().map_err(db)
}

/// Moves an enrollment out of `active`: revokes its certificate (logged) and cancels open commands.
fn end_enrollment_in(
    tx: &Connection,
    id: EnrollmentId,
    state: EnrollmentState,
    reason: &str,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let row = tx
        .prepare_cached(
            "SELECT device_id, cert_serial, cert_thumbprint, previous_cert_serial, previous_cert_thumbprint \
             FROM enrollments WHERE id = ?1 AND state = 'active'",
        )
        .map_err(db)?
        .query_row(params![id.to_string()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .optional()
        .map_err(db)?;
    let Some((device_id, serial, thumbprint, previous_serial, previous_thumbprint)) = row else {
        return Ok(false);
    };
    let device = DeviceId::parse(&device_id).ok_or_else(|| bad("device_id"))?;
    if let Some(serial) = previous_serial {
        insert_log(tx, &revoked(serial, previous_thumbprint, &device, id, reason, now))?;
    }
    exec(
        tx,
        "UPDATE enrollments SET state = ?1, updated_at = ?2, previous_cert_serial = NULL, \
         previous_cert_thumbprint = NULL WHERE id = ?3",
        params![state.as_str(), micros(now), id.to_string()],
    )?;
    exec(
        tx,
        "UPDATE commands SET state = 'cancelled', completed_at = ?1 WHERE enrollment_id = ?2 \
         AND state IN ('pending', 'sent')",
        params![micros(now), id.to_string()],
    )?;
    let kind = if state == EnrollmentState::Wiped {
        EventKind::Wiped
    } else {
        EventKind::Unenrolled
    };
    insert_event(tx, kind, id, &device_id, serde_json::json!({ "reason": reason }), now)?;
    insert_log(tx, &revoked(serial, Some(thumbprint), &device, id, reason, now))?;
    Ok(true)
}

pub(crate) fn end_enrollment(
    conn: &mut Connection,
    id: EnrollmentId,
    state: EnrollmentState,
    reason: &str,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let tx = immediate(conn)?;
    let changed = end_enrollment_in(&tx, id, state, reason, now)?;
    tx.commit().map_err(db)?;
    Ok(changed)
}

/// Records reported facts, in order: an unchanged value only gets `updated_at` (when last
/// reported); a changed or new one is written with a history row. Every check-in reports the same
/// DevInfo facts, so the usual case is one cached UPDATE per fact that finds its row unchanged. A
/// later item for the same name compares against the value just written.
fn write_facts(tx: &Connection, eid: &str, facts: &[(String, String)], at: i64) -> StoreResult<()> {
    let mut touch = tx
        .prepare_cached("UPDATE device_facts SET updated_at = ?1 WHERE enrollment_id = ?2 AND name = ?3 AND value = ?4")
        .map_err(db)?;
    for (name, value) in facts {
        if touch.execute(params![at, eid, name, value]).map_err(db)? > 0 {
            continue;
        }
        let old: Option<String> = tx
            .prepare_cached("SELECT value FROM device_facts WHERE enrollment_id = ?1 AND name = ?2")
            .map_err(db)?
            .query_row(params![eid, name], |r| r.get(0))
            .optional()
            .map_err(db)?;
        exec(
            tx,
            "INSERT INTO device_facts (enrollment_id, name, value, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (enrollment_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![eid, name, value, at],
        )?;
        exec(
            tx,
            "INSERT INTO device_fact_history (enrollment_id, name, old_value, new_value, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![eid, name, old, value, at],
        )?;
    }
    Ok(())
}

/// Revokes (logs) and forgets the certificate a renewal replaced, if any.
fn retire_previous(tx: &Connection, id: EnrollmentId, reason: &str, now: OffsetDateTime) -> StoreResult<()> {
    let row = tx
        .prepare_cached(
            "SELECT device_id, previous_cert_serial, previous_cert_thumbprint FROM enrollments \
             WHERE id = ?1 AND previous_cert_serial IS NOT NULL",
        )
        .map_err(db)?
        .query_row(params![id.to_string()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .optional()
        .map_err(db)?;
    let Some((device_id, serial, thumbprint)) = row else {
        return Ok(());
    };
    exec(
        tx,
        "UPDATE enrollments SET previous_cert_serial = NULL, previous_cert_thumbprint = NULL WHERE id = ?1",
        params![id.to_string()],
    )?;
    let device = DeviceId::parse(&device_id).ok_or_else(|| bad("device_id"))?;
    insert_log(tx, &revoked(serial, thumbprint, &device, id, reason, now))
}

/// Records one management message's effects (see [`SessionCommit`]).
pub(crate) fn commit_session_message(
    conn: &mut Connection,
    id: EnrollmentId,
    c: &SessionCommit,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let eid = id.to_string();
    let at = micros(now);
    let tx = immediate(conn)?;

    if c.expire_overdue {
        exec(
            &tx,
            "UPDATE commands SET state = 'expired', completed_at = ?1 WHERE enrollment_id = ?2 \
             AND state IN ('pending', 'sent') AND expires_at IS NOT NULL AND expires_at <= ?1",
            params![at, eid],
        )?;
    }

    let device_id: String = if c.outcomes.is_empty() && c.async_completions.is_empty() {
        String::new()
    } else {
        tx.prepare_cached("SELECT device_id FROM enrollments WHERE id = ?1")
            .map_err(db)?
            .query_row(params![eid], |r| r.get(0))
            .optional()
            .map_err(db)?
            .unwrap_or_default()
    };
    for o in &c.outcomes {
        // Only this enrollment's own, still-open commands take an outcome; the first one wins. The
        // check and the insert are one statement.
        let inserted = exec(
            &tx,
            "INSERT INTO command_results (command_id, enrollment_id, status_code, results, child_codes, received_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM commands WHERE id = ?1 AND enrollment_id = ?2 \
             AND state IN ('pending', 'sent')) ON CONFLICT (command_id) DO NOTHING",
            params![
                o.command_id.to_string(),
                eid,
                i64::from(o.status_code),
                serde_json::to_string(&o.results).map_err(json_err)?,
                serde_json::to_string(&o.child_codes).map_err(json_err)?,
                at,
            ],
        )?;
        if inserted == 0 {
            continue;
        }
        let state = match o.status_code {
            202 => CommandState::Accepted,
            200..=299 => CommandState::Succeeded,
            _ => CommandState::Failed,
        };
        let completed = (state != CommandState::Accepted).then_some(at);
        exec(
            &tx,
            "UPDATE commands SET state = ?1, status_code = ?2, completed_at = ?3 WHERE id = ?4",
            params![
                state.as_str(),
                i64::from(o.status_code),
                completed,
                o.command_id.to_string()
            ],
        )?;
        let kind = if state == CommandState::Failed {
            EventKind::CommandFailed
        } else {
            EventKind::CommandAcknowledged
        };
        let data = serde_json::json!({ "command_id": o.command_id, "status_code": o.status_code });
        insert_event(&tx, kind, id, &device_id, data, now)?;
    }

    for (cid, payload) in &c.requeue {
        exec(
            &tx,
            "UPDATE commands SET payload = ?1, state = 'pending' WHERE id = ?2 AND enrollment_id = ?3 \
             AND state IN ('pending', 'sent')",
            params![serde_json::to_string(payload).map_err(json_err)?, cid.to_string(), eid],
        )?;
    }

    if !c.sent.is_empty() {
        let mut sent = tx
            .prepare_cached(
                "UPDATE commands SET state = 'sent', send_count = send_count + 1, last_sent_at = ?1, \
                 last_session = ?2 WHERE id = ?3 AND enrollment_id = ?4 AND state IN ('pending', 'sent')",
            )
            .map_err(db)?;
        for cid in &c.sent {
            sent.execute(params![at, c.session.key, cid.to_string(), eid])
                .map_err(db)?;
        }
    }

    for (target, code) in &c.async_completions {
        // The newest accepted command of this enrollment that targeted this node.
        let accepted: Vec<(String, String)> = tx
            .prepare_cached(
                "SELECT id, payload FROM commands WHERE enrollment_id = ?1 AND state = 'accepted' ORDER BY seq DESC",
            )
            .map_err(db)?
            .query_map(params![eid], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?;
        for (command_id, payload) in accepted {
            let payload: CommandPayload = serde_json::from_str(&payload).map_err(json_err)?;
            if !payload.targets().iter().any(|t| t == target) {
                continue;
            }
            let state = if (200..300).contains(code) {
                CommandState::Succeeded
            } else {
                CommandState::Failed
            };
            exec(
                &tx,
                "UPDATE commands SET state = ?1, status_code = ?2, completed_at = ?3 WHERE id = ?4",
                params![state.as_str(), i64::from(*code), at, command_id],
            )?;
            let kind = if state == CommandState::Failed {
                EventKind::CommandFailed
            } else {
                EventKind::CommandAcknowledged
            };
            let data = serde_json::json!({
                "command_id": command_id, "status_code": code, "completion": "async"
            });
            insert_event(&tx, kind, id, &device_id, data, now)?;
            break;
        }
    }

    if !c.facts.is_empty() {
        write_facts(&tx, &eid, &c.facts, at)?;
    }

    if let Some((state, reason)) = &c.new_state {
        end_enrollment_in(&tx, id, *state, reason, now)?;
    }

    if let Some(body) = &c.raw_message {
        // Trimming back to DEVICE_MESSAGES_KEPT once there are twice as many does it on one message in
        // DEVICE_MESSAGES_KEPT instead of after every insert: between KEPT and 2 × KEPT − 1 are kept.
        let stored: i64 = tx
            .prepare_cached(
                "INSERT INTO device_messages (enrollment_id, received_at, body) VALUES (?1, ?2, ?3) \
                 RETURNING (SELECT COUNT(*) FROM device_messages WHERE enrollment_id = ?1)",
            )
            .map_err(db)?
            .query_row(params![eid, at, body], |r| r.get(0))
            .map_err(db)?;
        if stored >= 2 * DEVICE_MESSAGES_KEPT {
            exec(
                &tx,
                "DELETE FROM device_messages WHERE enrollment_id = ?1 AND seq <= \
                 (SELECT seq FROM device_messages WHERE enrollment_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
                params![eid, DEVICE_MESSAGES_KEPT],
            )?;
        }
    }

    let s = &c.session;
    exec(
        &tx,
        "INSERT INTO mdm_sessions (enrollment_id, session_key, session_id, client_msg_id, server_msg_id, \
         last_request_hash, last_response, login_status, md5_nonce, chunk_command, chunk_offset, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT (enrollment_id) DO UPDATE SET session_key = excluded.session_key, \
         session_id = excluded.session_id, \
         client_msg_id = excluded.client_msg_id, server_msg_id = excluded.server_msg_id, \
         last_request_hash = excluded.last_request_hash, last_response = excluded.last_response, \
         login_status = excluded.login_status, md5_nonce = excluded.md5_nonce, \
         chunk_command = excluded.chunk_command, chunk_offset = excluded.chunk_offset, updated_at = excluded.updated_at",
        params![
            eid,
            s.key,
            s.session_id,
            i64::from(s.client_msg_id),
            i64::from(s.server_msg_id),
            s.last_request_hash,
            s.last_response,
            s.login_status,
            s.md5_nonce,
            s.chunk.map(|(id, _)| id.to_string()),
            s.chunk.map(|(_, off)| off as i64),
            at,
        ],
    )?;

    exec(
        &tx,
        "UPDATE enrollments SET last_seen_at = ?1 WHERE id = ?2",
        params![at, eid],
    )?;

    if c.retire_previous_certificate {
        retire_previous(&tx, id, "device uses its renewed certificate", now)?;
    }

    tx.commit().map_err(db)
}

pub(crate) fn renew_certificate(conn: &mut Connection, r: &CertificateRenewal) -> StoreResult<()> {
    let tx = immediate(conn)?;
    let row = tx
        .prepare_cached(
            "SELECT device_id, cert_serial, cert_thumbprint, previous_cert_thumbprint FROM enrollments \
             WHERE id = ?1 AND state = 'active'",
        )
        .map_err(db)?
        .query_row(params![r.enrollment_id.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?,
            ))
        })
        .optional()
        .map_err(db)?;
    let Some((device_id, serial, thumbprint, previous_thumbprint)) = row else {
        return Err(StoreError::NotFound);
    };
    let device = DeviceId::parse(&device_id).ok_or_else(|| bad("device_id"))?;
    let id = r.enrollment_id;
    let old = r.old_thumbprint.to_ascii_uppercase();
    if old == thumbprint {
        // Normal renewal: the current certificate becomes the previous one (still accepted).
        if previous_thumbprint.is_some() {
            retire_previous(&tx, id, "superseded by a second renewal", r.at)?;
        }
        exec(
            &tx,
            "UPDATE enrollments SET previous_cert_serial = cert_serial, previous_cert_thumbprint = cert_thumbprint \
             WHERE id = ?1",
            params![id.to_string()],
        )?;
    } else if previous_thumbprint.as_deref() == Some(old.as_str()) {
        // The device renews again with the old certificate: it never got (or never used) the one
        // we issued last time, which is revoked now.
        let entry = revoked(serial, Some(thumbprint), &device, id, "renewal answer not used", r.at);
        insert_log(&tx, &entry)?;
    } else {
        return Err(StoreError::NotFound);
    }
    exec(
        &tx,
        "UPDATE enrollments SET cert_serial = ?1, cert_thumbprint = ?2, cert_not_after = ?3, updated_at = ?4 \
         WHERE id = ?5",
        params![
            r.new_serial,
            r.new_thumbprint,
            micros(r.not_after),
            micros(r.at),
            id.to_string()
        ],
    )?;
    insert_log(
        &tx,
        &IssuanceLogEntry {
            serial: r.new_serial.clone(),
            event: IssuanceEvent::Issued,
            thumbprint: Some(r.new_thumbprint.clone()),
            subject: Some(r.subject.clone()),
            device_id: Some(device.clone()),
            enrollment_id: Some(id),
            not_before: Some(r.not_before),
            not_after: Some(r.not_after),
            reason: Some("renewal".into()),
            at: r.at,
        },
    )?;
    let data = serde_json::json!({ "serial": r.new_serial, "not_after": micros(r.not_after) });
    insert_event(&tx, EventKind::CertificateRenewed, id, &device_id, data, r.at)?;
    tx.commit().map_err(db)
}
