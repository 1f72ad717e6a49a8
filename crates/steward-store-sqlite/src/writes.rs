//! The device lifecycle's write transactions: enrollment, each check-in message, command enqueues,
//! certificate renewal, the end of an enrollment and the issuance log. They run on the writer
//! thread (`writer.rs`), synchronously: a statement is a function call on that thread, not a round
//! trip to sqlx's per-connection worker thread (two thread wake-ups each, seven per idle check-in
//! before the writer thread; docs/BENCHMARKS.md, third pass). Statements are prepared once per
//! connection (`prepare_cached`).
//!
//! Each function is one `BEGIN IMMEDIATE` transaction: whole or not at all. They write the rows the
//! values they are given describe; what a device's answer means (a command's state, an event, the
//! end of an enrollment, which certificates a renewal revokes) was decided in steward-core.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use steward_core::*;
use time::OffsetDateTime;

use crate::error::from_rusqlite;
use crate::rows::{exec, thumbprint};
use crate::{bad, micros, opt_micros};

/// Raw device messages kept per enrollment: at least this many of the newest ones, fewer than twice
/// as many (they are trimmed in batches, see [`commit_checkin`]).
pub(crate) const DEVICE_MESSAGES_KEPT: i64 = 10;

/// Commands per transaction of a large enqueue (see `CommandQueue::enqueue_commands`).
pub(crate) const ENQUEUE_BATCH: usize = 10_000;

pub(crate) fn immediate(conn: &mut Connection) -> StoreResult<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(from_rusqlite)
}

fn insert_log(conn: &Connection, e: &IssuanceLogEntry) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO certificate_log (serial, event, thumbprint, subject, device_id, enrollment_id, \
         not_before, not_after, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            e.serial.as_str(),
            e.event.as_str(),
            e.thumbprint.as_ref().map(Thumbprint::as_str),
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

/// Appends an event of enrollment `id` (see `device_events` in migration 0002) inside the caller's
/// transaction; the device id is the enrollment's own.
pub(crate) fn insert_event(conn: &Connection, id: &str, e: &NewDeviceEvent, at: OffsetDateTime) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO device_events (kind, enrollment_id, device_id, data, at) \
         SELECT ?1, id, device_id, ?2, ?3 FROM enrollments WHERE id = ?4",
        params![e.kind.as_str(), e.data.to_string(), micros(at), id],
    )?;
    Ok(())
}

/// A revocation entry of the issuance log for `device`'s enrollment `id`.
fn revoked(cert: &CertRef, device: &DeviceId, id: EnrollmentId, reason: &str, at: OffsetDateTime) -> IssuanceLogEntry {
    IssuanceLogEntry {
        serial: cert.serial.clone(),
        event: IssuanceEvent::Revoked,
        thumbprint: Some(cert.thumbprint.clone()),
        subject: None,
        device_id: Some(device.clone()),
        enrollment_id: Some(id),
        not_before: None,
        not_after: None,
        reason: Some(reason.to_owned()),
        at,
    }
}

fn cert_ref(serial: String, thumb: &str) -> StoreResult<CertRef> {
    Ok(CertRef {
        serial: CertSerial::new(serial),
        thumbprint: thumbprint(thumb)?,
    })
}

/// An event outside any lifecycle commit (`EventLog::append_device_event`); false if the
/// enrollment does not exist.
pub(crate) fn append_event(
    conn: &mut Connection,
    id: EnrollmentId,
    e: &NewDeviceEvent,
    at: OffsetDateTime,
) -> StoreResult<bool> {
    let tx = immediate(conn)?;
    let n = exec(
        &tx,
        "INSERT INTO device_events (kind, enrollment_id, device_id, data, at) \
         SELECT ?1, id, device_id, ?2, ?3 FROM enrollments WHERE id = ?4",
        params![e.kind.as_str(), e.data.to_string(), micros(at), id.to_string()],
    )?;
    tx.commit().map_err(from_rusqlite)?;
    Ok(n == 1)
}

pub(crate) fn append_issuance_log(conn: &mut Connection, e: &IssuanceLogEntry) -> StoreResult<()> {
    let tx = immediate(conn)?;
    insert_log(&tx, e)?;
    tx.commit().map_err(from_rusqlite)
}

/// The device's active enrollment: (id, current certificate, the previous one a renewal left).
type ActiveRow = (String, String, String, Option<String>, Option<String>);

pub(crate) fn commit_enrollment(conn: &mut Connection, c: &EnrollmentCommit) -> StoreResult<()> {
    let e = &c.enrollment;
    let now = e.enrolled_at;
    let tx = immediate(conn)?;

    if let Some(token_id) = c.consume_token {
        // Re-check usability inside the write lock: the pre-check the server did may be stale.
        let (revoked, expires_at, max_uses, uses) = tx
            .prepare_cached("SELECT revoked, expires_at, max_uses, uses FROM enrollment_tokens WHERE id = ?1")
            .map_err(from_rusqlite)?
            .query_row(params![token_id.to_string()], |r| {
                Ok((
                    r.get::<_, i64>(0)? != 0,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()
            .map_err(from_rusqlite)?
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
            .map_err(from_rusqlite)?
            .execute(params![nonce.to_hex(), micros(*expires_at)]);
        match res {
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                return Err(StoreError::NonceReused);
            }
            other => {
                other.map_err(from_rusqlite)?;
            }
        }
        exec(
            &tx,
            "DELETE FROM used_nonces WHERE expires_at < ?1",
            params![micros(now)],
        )?;
    }

    // The enrollment was decided against the device's active enrollment as it was then; if that
    // changed meanwhile (a concurrent enrollment, a renewal, an unenrollment), the decision is stale.
    let active: Option<ActiveRow> = tx
        .prepare_cached(
            "SELECT id, cert_serial, cert_thumbprint, previous_cert_serial, previous_cert_thumbprint \
             FROM enrollments WHERE device_id = ?1 AND state = 'active'",
        )
        .map_err(from_rusqlite)?
        .query_row(params![e.device_id.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()
        .map_err(from_rusqlite)?;
    let matches = match (&active, &c.replaces) {
        (None, None) => true,
        (Some((id, serial, thumb, _, _)), Some(r)) => {
            *id == r.id.to_string() && *serial == r.cert.serial.as_str() && *thumb == r.cert.thumbprint.as_str()
        }
        _ => false,
    };
    if !matches {
        return Err(StoreError::Conflict("the device's enrollment changed meanwhile".into()));
    }
    if let (Some((_, _, _, previous_serial, previous_thumb)), Some(r)) = (active, &c.replaces) {
        // A device that enrolls again replaces its previous enrollment; its certificates must stop
        // working, so they are revoked in the same transaction (a renewal's previous one too).
        let old = r.id.to_string();
        exec(
            &tx,
            "UPDATE enrollments SET state = 'replaced', updated_at = ?1, previous_cert_serial = NULL, \
             previous_cert_thumbprint = NULL WHERE id = ?2",
            params![micros(now), old],
        )?;
        let reason = reasons::SUPERSEDED_BY_REENROLLMENT;
        if let (Some(serial), Some(thumb)) = (previous_serial, previous_thumb) {
            insert_log(
                &tx,
                &revoked(&cert_ref(serial, &thumb)?, &e.device_id, r.id, reason, now),
            )?;
        }
        insert_log(&tx, &revoked(&r.cert, &e.device_id, r.id, reason, now))?;
    }

    exec(
        &tx,
        "INSERT INTO enrollments (id, platform, device_id, hardware_id, device_name, os_version, os_edition, \
         enrollment_type, user_email, auth_method, enrollment_token_id, group_id, cert_serial, \
         cert_thumbprint, cert_not_after, previous_cert_serial, previous_cert_thumbprint, state, enrolled_at, \
         updated_at, last_seen_at, session_credential) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
        params![
            e.id.to_string(),
            e.platform.as_str(),
            e.device_id.as_str(),
            e.hardware_id,
            e.device_name,
            e.os_version,
            e.os_edition,
            e.enrollment_type.as_str(),
            e.user_email,
            e.auth_method.as_str(),
            e.enrollment_token_id.map(|i| i.to_string()),
            e.group_id.map(|i| i.to_string()),
            e.cert_serial.as_str(),
            e.cert_thumbprint.as_str(),
            micros(e.cert_not_after),
            e.previous_cert.as_ref().map(|p| p.serial.as_str()),
            e.previous_cert.as_ref().map(|p| p.thumbprint.as_str()),
            e.state.as_str(),
            micros(e.enrolled_at),
            micros(e.updated_at),
            e.last_seen_at.map(micros),
            c.session_credential,
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
    let event = NewDeviceEvent::enrolled(e, c.replaces.is_some());
    insert_event(&tx, &e.id.to_string(), &event, now)?;
    tx.commit().map_err(from_rusqlite)
}

/// Inserts `commands` in order with one prepared statement, so `seq` keeps the call's order.
fn insert_commands(tx: &Connection, commands: &[NewCommand]) -> StoreResult<()> {
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO commands (id, enrollment_id, payload, priority, origin, state, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
        )
        .map_err(from_rusqlite)?;
    for c in commands {
        insert
            .execute(params![
                c.id.to_string(),
                c.enrollment_id.to_string(),
                c.payload.as_json(),
                i64::from(c.priority),
                c.origin.as_str(),
                micros(c.created_at),
                c.expires_at.map(micros),
            ])
            .map_err(from_rusqlite)?;
    }
    Ok(())
}

/// One transaction of `enqueue_commands`: at most [`ENQUEUE_BATCH`] commands.
pub(crate) fn enqueue_commands(conn: &mut Connection, commands: &[NewCommand]) -> StoreResult<()> {
    let tx = immediate(conn)?;
    insert_commands(&tx, commands)?;
    tx.commit().map_err(from_rusqlite)
}

/// Moves an active enrollment out of `active`: revokes its certificates (logged), cancels its open
/// commands and records the event. False if it was not active.
fn end_enrollment_in(tx: &Connection, id: EnrollmentId, end: &EnrollmentEnd, now: OffsetDateTime) -> StoreResult<bool> {
    let eid = id.to_string();
    let row = tx
        .prepare_cached(
            "SELECT device_id, cert_serial, cert_thumbprint, previous_cert_serial, previous_cert_thumbprint \
             FROM enrollments WHERE id = ?1 AND state = 'active'",
        )
        .map_err(from_rusqlite)?
        .query_row(params![eid], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .optional()
        .map_err(from_rusqlite)?;
    let Some((device_id, serial, thumb, previous_serial, previous_thumb)) = row else {
        return Ok(false);
    };
    let device = DeviceId::parse(&device_id).ok_or_else(|| bad("device_id"))?;
    if let (Some(serial), Some(thumb)) = (previous_serial, previous_thumb) {
        insert_log(tx, &revoked(&cert_ref(serial, &thumb)?, &device, id, &end.reason, now))?;
    }
    exec(
        tx,
        "UPDATE enrollments SET state = ?1, updated_at = ?2, previous_cert_serial = NULL, \
         previous_cert_thumbprint = NULL WHERE id = ?3",
        params![end.state.as_str(), micros(now), eid],
    )?;
    exec(
        tx,
        "UPDATE commands SET state = 'cancelled', completed_at = ?1 WHERE enrollment_id = ?2 \
         AND state IN ('pending', 'sent')",
        params![micros(now), eid],
    )?;
    insert_event(tx, &eid, &NewDeviceEvent::enrollment_ended(end.state, &end.reason), now)?;
    insert_log(tx, &revoked(&cert_ref(serial, &thumb)?, &device, id, &end.reason, now))?;
    Ok(true)
}

pub(crate) fn end_enrollment(
    conn: &mut Connection,
    id: EnrollmentId,
    end: &EnrollmentEnd,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let tx = immediate(conn)?;
    let changed = end_enrollment_in(&tx, id, end, now)?;
    tx.commit().map_err(from_rusqlite)?;
    Ok(changed)
}

/// Records reported facts, in order: an unchanged value only gets `updated_at` (when last
/// reported); a changed or new one is written with a history row. Every check-in reports the same
/// DevInfo facts, so the usual case is one cached UPDATE per fact that finds its row unchanged. A
/// later item for the same name compares against the value just written. Returns whether a fact a
/// dynamic group's rule or the device-side lock can read changed
/// ([`steward_core::configuration::fact_resets_configuration`]).
fn write_facts(tx: &Connection, eid: &str, facts: &[FactUpdate], at: i64) -> StoreResult<bool> {
    let mut rule_fact_changed = false;
    let mut touch = tx
        .prepare_cached("UPDATE device_facts SET updated_at = ?1 WHERE enrollment_id = ?2 AND name = ?3 AND value = ?4")
        .map_err(from_rusqlite)?;
    for f in facts {
        let name = f.name.as_str();
        if touch.execute(params![at, eid, name, f.value]).map_err(from_rusqlite)? > 0 {
            continue;
        }
        let old: Option<String> = tx
            .prepare_cached("SELECT value FROM device_facts WHERE enrollment_id = ?1 AND name = ?2")
            .map_err(from_rusqlite)?
            .query_row(params![eid, name], |r| r.get(0))
            .optional()
            .map_err(from_rusqlite)?;
        exec(
            tx,
            "INSERT INTO device_facts (enrollment_id, name, value, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (enrollment_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![eid, name, f.value, at],
        )?;
        exec(
            tx,
            "INSERT INTO device_fact_history (enrollment_id, name, old_value, new_value, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![eid, name, old, f.value, at],
        )?;
        rule_fact_changed |= steward_core::configuration::fact_resets_configuration(&f.name);
    }
    Ok(rule_fact_changed)
}

/// Revokes (logs) and forgets the certificate a renewal replaced, if any.
fn retire_previous(tx: &Connection, id: EnrollmentId, reason: &str, now: OffsetDateTime) -> StoreResult<()> {
    let row = tx
        .prepare_cached(
            "SELECT device_id, previous_cert_serial, previous_cert_thumbprint FROM enrollments \
             WHERE id = ?1 AND previous_cert_serial IS NOT NULL",
        )
        .map_err(from_rusqlite)?
        .query_row(params![id.to_string()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })
        .optional()
        .map_err(from_rusqlite)?;
    let Some((device_id, serial, thumb)) = row else {
        return Ok(());
    };
    exec(
        tx,
        "UPDATE enrollments SET previous_cert_serial = NULL, previous_cert_thumbprint = NULL WHERE id = ?1",
        params![id.to_string()],
    )?;
    let device = DeviceId::parse(&device_id).ok_or_else(|| bad("device_id"))?;
    insert_log(tx, &revoked(&cert_ref(serial, &thumb)?, &device, id, reason, now))
}

/// Records everything one check-in message produced (see [`CheckinCommit`]), in its documented
/// order, in one transaction.
pub(crate) fn commit_checkin(
    conn: &mut Connection,
    id: EnrollmentId,
    c: &CheckinCommit,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let eid = id.to_string();
    let at = micros(now);
    let tx = immediate(conn)?;

    // The session record must still be the one the message was processed against (under the
    // write lock, so no other commit can change it before this one ends). Returning drops the
    // transaction: nothing is written.
    if c.session_read != SessionPrecondition::Unchecked {
        let current: Option<(String, String, String)> = tx
            .prepare_cached(
                "SELECT session_key, state, last_request_hash FROM checkin_sessions WHERE enrollment_id = ?1",
            )
            .map_err(from_rusqlite)?
            .query_row(params![eid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(from_rusqlite)?;
        let current = current.as_ref().map(|(k, st, h)| (k.as_str(), st.as_str(), h.as_str()));
        if !c.session_read.holds(current) {
            return Err(StoreError::Stale("the device's session record".into()));
        }
    }

    // First: the engine may have sent (or even been answered for) a command it queued itself.
    if !c.enqueue.is_empty() {
        insert_commands(&tx, &c.enqueue)?;
    }

    if c.expire_overdue {
        exec(
            &tx,
            "UPDATE commands SET state = 'expired', completed_at = ?1 WHERE enrollment_id = ?2 \
             AND state IN ('pending', 'sent') AND expires_at IS NOT NULL AND expires_at <= ?1",
            params![at, eid],
        )?;
    }

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
                serde_json::to_string(&o.results).map_err(|e| StoreError::Backend(e.to_string()))?,
                serde_json::to_string(&o.child_codes).map_err(|e| StoreError::Backend(e.to_string()))?,
                at,
            ],
        )?;
        if inserted == 0 {
            continue;
        }
        // An accepted command is not done yet: its completion arrives later.
        let completed = (o.state != CommandState::Accepted).then_some(at);
        exec(
            &tx,
            "UPDATE commands SET state = ?1, status_code = ?2, completed_at = ?3 WHERE id = ?4",
            params![
                o.state.as_str(),
                i64::from(o.status_code),
                completed,
                o.command_id.to_string()
            ],
        )?;
        insert_event(&tx, &eid, &o.event, now)?;
    }

    for done in &c.completions {
        let changed = exec(
            &tx,
            "UPDATE commands SET state = ?1, status_code = ?2, completed_at = ?3 WHERE id = ?4 \
             AND enrollment_id = ?5 AND state = 'accepted'",
            params![
                done.state.as_str(),
                i64::from(done.status_code),
                at,
                done.command_id.to_string(),
                eid
            ],
        )?;
        if changed > 0 {
            insert_event(&tx, &eid, &done.event, now)?;
        }
    }

    for r in &c.requeue {
        exec(
            &tx,
            "UPDATE commands SET payload = ?1, state = 'pending' WHERE id = ?2 AND enrollment_id = ?3 \
             AND state IN ('pending', 'sent')",
            params![r.payload.as_json(), r.command_id.to_string(), eid],
        )?;
    }

    if !c.sent.is_empty() {
        let mut sent = tx
            .prepare_cached(
                "UPDATE commands SET state = 'sent', send_count = send_count + 1, last_sent_at = ?1, \
                 last_session = ?2 WHERE id = ?3 AND enrollment_id = ?4 AND state IN ('pending', 'sent')",
            )
            .map_err(from_rusqlite)?;
        let ids: std::collections::BTreeSet<&CommandId> = c.sent.iter().collect();
        let mut marked = 0;
        for cid in &ids {
            marked += sent
                .execute(params![at, c.session.key, cid.to_string(), eid])
                .map_err(from_rusqlite)?;
        }
        // Every command the answer carries is still open; one cancelled (or expired) since the
        // context was read must not go out, so the whole commit is refused and replanned.
        if marked != ids.len() {
            return Err(StoreError::Stale("a command in the answer is no longer open".into()));
        }
    }

    let rule_fact_changed = !c.facts.is_empty() && write_facts(&tx, &eid, &c.facts, at)?;

    if let Some(config) = &c.configuration {
        crate::profiles::write_configuration(&tx, &eid, config, now)?;
    }
    // A fact a dynamic group's rule reads changed, so the device's groups may have: its next
    // check-in reconciles. After the configuration part, whose stamp was decided on the facts
    // this message's context read, before the change.
    if rule_fact_changed {
        exec(
            &tx,
            "UPDATE device_config_state SET epoch_seen = 0 WHERE enrollment_id = ?1",
            params![eid],
        )?;
    }

    if let Some(end) = &c.end_enrollment {
        end_enrollment_in(&tx, id, end, now)?;
    }

    if let Some(body) = &c.raw_message {
        // Trimming back to DEVICE_MESSAGES_KEPT once there are twice as many does it on one message in
        // DEVICE_MESSAGES_KEPT instead of after every insert: between KEPT and 2 × KEPT − 1 are kept.
        let stored: i64 = tx
            .prepare_cached(
                "INSERT INTO device_messages (enrollment_id, received_at, body) VALUES (?1, ?2, ?3) \
                 RETURNING (SELECT COUNT(*) FROM device_messages WHERE enrollment_id = ?1)",
            )
            .map_err(from_rusqlite)?
            .query_row(params![eid, at, body], |r| r.get(0))
            .map_err(from_rusqlite)?;
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
        "INSERT INTO checkin_sessions (enrollment_id, session_key, state, last_request_hash, last_response, \
         updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (enrollment_id) DO UPDATE SET session_key = excluded.session_key, state = excluded.state, \
         last_request_hash = excluded.last_request_hash, last_response = excluded.last_response, \
         updated_at = excluded.updated_at",
        params![eid, s.key, s.state, s.last_request_hash, s.last_response, at],
    )?;

    exec(
        &tx,
        "UPDATE enrollments SET last_seen_at = ?1 WHERE id = ?2",
        params![at, eid],
    )?;

    if c.retire_previous_certificate {
        retire_previous(&tx, id, reasons::RENEWED_CERTIFICATE_IN_USE, now)?;
    }

    tx.commit().map_err(from_rusqlite)
}

/// Applies a renewal as [`RenewalCommit`] describes it. NotFound unless the enrollment is active and
/// its current certificate is still the one the renewal was planned against.
pub(crate) fn commit_renewal(conn: &mut Connection, r: &RenewalCommit) -> StoreResult<()> {
    let id = r.enrollment_id;
    let eid = id.to_string();
    let tx = immediate(conn)?;
    let row = tx
        .prepare_cached("SELECT device_id, cert_thumbprint FROM enrollments WHERE id = ?1 AND state = 'active'")
        .map_err(from_rusqlite)?
        .query_row(params![eid], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .optional()
        .map_err(from_rusqlite)?;
    let Some((device_id, current)) = row else {
        return Err(StoreError::NotFound);
    };
    if current != r.expected_current.as_str() {
        return Err(StoreError::NotFound);
    }
    let device = DeviceId::parse(&device_id).ok_or_else(|| bad("device_id"))?;
    for (cert, reason) in &r.revoke {
        insert_log(&tx, &revoked(cert, &device, id, reason, r.at))?;
    }
    if r.current_becomes_previous {
        exec(
            &tx,
            "UPDATE enrollments SET previous_cert_serial = cert_serial, previous_cert_thumbprint = cert_thumbprint \
             WHERE id = ?1",
            params![eid],
        )?;
    }
    exec(
        &tx,
        "UPDATE enrollments SET cert_serial = ?1, cert_thumbprint = ?2, cert_not_after = ?3, updated_at = ?4 \
         WHERE id = ?5",
        params![
            r.new_cert.serial.as_str(),
            r.new_cert.thumbprint.as_str(),
            micros(r.not_after),
            micros(r.at),
            eid
        ],
    )?;
    insert_log(
        &tx,
        &IssuanceLogEntry {
            serial: r.new_cert.serial.clone(),
            event: IssuanceEvent::Issued,
            thumbprint: Some(r.new_cert.thumbprint.clone()),
            subject: Some(r.subject.clone()),
            device_id: Some(device),
            enrollment_id: Some(id),
            not_before: Some(r.not_before),
            not_after: Some(r.not_after),
            reason: Some("renewal".into()),
            at: r.at,
        },
    )?;
    insert_event(&tx, &eid, &r.event, r.at)?;
    tx.commit().map_err(from_rusqlite)
}
