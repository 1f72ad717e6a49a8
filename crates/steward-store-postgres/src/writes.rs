//! The device lifecycle's write transactions: enrollment, each check-in message, command enqueues,
//! certificate renewal, the end of an enrollment and the issuance log. Each is one transaction:
//! whole or not at all. They write the rows the values they are given describe; what a device's
//! answer means (a command's state, an event, the end of an enrollment, which certificates a
//! renewal revokes) was decided in steward-core. How each one stays correct with many writers
//! (other connections, other replicas) is said where it matters and summed up in lib.rs.

use sqlx::{PgConnection, Row};
use steward_core::*;
use time::OffsetDateTime;

use crate::error::{from_sqlx, unique_violation};
use crate::rows::{Col, thumbprint};
use crate::{LOCK_EVENTS, PgStore, bad, lock, micros, opt_micros};

/// Raw device messages kept per enrollment: at least this many of the newest ones, fewer than twice
/// as many (they are trimmed in batches, see [`commit_checkin`]).
pub(crate) const DEVICE_MESSAGES_KEPT: i64 = 10;

/// Commands per transaction of a large enqueue (see `CommandQueue::enqueue_commands`).
pub(crate) const ENQUEUE_BATCH: usize = 10_000;

/// Runs one statement that returns no rows; rows changed.
pub(crate) async fn exec(tx: &mut PgConnection, q: crate::PgQuery<'_>) -> StoreResult<u64> {
    Ok(q.execute(&mut *tx).await.map_err(from_sqlx)?.rows_affected())
}

async fn insert_log(tx: &mut PgConnection, e: &IssuanceLogEntry) -> StoreResult<()> {
    exec(
        tx,
        sqlx::query(
            "INSERT INTO certificate_log (serial, event, thumbprint, subject, device_id, enrollment_id, \
             not_before, not_after, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(e.serial.as_str())
        .bind(e.event.as_str())
        .bind(e.thumbprint.as_ref().map(|t| t.as_str().to_owned()))
        .bind(e.subject.clone())
        .bind(e.device_id.as_ref().map(|d| d.as_str().to_owned()))
        .bind(e.enrollment_id.map(|i| i.to_string()))
        .bind(e.not_before.map(micros))
        .bind(e.not_after.map(micros))
        .bind(e.reason.clone())
        .bind(micros(e.at)),
    )
    .await?;
    Ok(())
}

/// Appends an event of enrollment `id` inside the caller's transaction (the device id is the
/// enrollment's own); rows inserted (0: no such enrollment). The events lock is taken first and
/// held to the end of the transaction, so `seq` values are drawn in commit order: a webhook cursor
/// past an event never has an earlier one commit behind it.
pub(crate) async fn insert_event(
    tx: &mut PgConnection,
    id: &str,
    e: &NewDeviceEvent,
    at: OffsetDateTime,
) -> StoreResult<u64> {
    lock(tx, LOCK_EVENTS).await?;
    exec(
        tx,
        sqlx::query(
            "INSERT INTO device_events (kind, enrollment_id, device_id, data, at) \
             SELECT $1, id, device_id, $2, $3 FROM enrollments WHERE id = $4",
        )
        .bind(e.kind.as_str())
        .bind(e.data.to_string())
        .bind(micros(at))
        .bind(id.to_owned()),
    )
    .await
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

impl PgStore {
    /// An event outside any lifecycle commit (`EventLog::append_device_event`); false if the
    /// enrollment does not exist.
    pub(crate) async fn append_event(
        &self,
        id: EnrollmentId,
        e: &NewDeviceEvent,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let n = insert_event(&mut tx, &id.to_string(), e, at).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(n == 1)
    }

    pub(crate) async fn write_issuance_log(&self, e: &IssuanceLogEntry) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_log(&mut tx, e).await?;
        tx.commit().await.map_err(from_sqlx)
    }

    pub(crate) async fn write_enrollment(&self, c: &EnrollmentCommit) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        commit_enrollment(&mut tx, c).await?;
        tx.commit().await.map_err(from_sqlx)
    }

    /// One transaction of `enqueue_commands`: at most [`ENQUEUE_BATCH`] commands.
    pub(crate) async fn write_commands(&self, commands: &[NewCommand]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_commands(&mut tx, commands).await?;
        tx.commit().await.map_err(from_sqlx)
    }

    pub(crate) async fn write_end_enrollment(
        &self,
        id: EnrollmentId,
        end: &EnrollmentEnd,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let changed = end_enrollment_in(&mut tx, id, end, now).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(changed)
    }

    pub(crate) async fn write_checkin(
        &self,
        id: EnrollmentId,
        c: &CheckinCommit,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        commit_checkin(&mut tx, id, c, now).await?;
        tx.commit().await.map_err(from_sqlx)
    }

    pub(crate) async fn write_renewal(&self, r: &RenewalCommit) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        commit_renewal(&mut tx, r).await?;
        tx.commit().await.map_err(from_sqlx)
    }
}

async fn commit_enrollment(tx: &mut PgConnection, c: &EnrollmentCommit) -> StoreResult<()> {
    let e = &c.enrollment;
    let now = e.enrolled_at;

    if let Some(token_id) = c.consume_token {
        // Re-check usability with the token row locked: the pre-check the server did may be stale,
        // and two enrollments racing for the last use take turns here.
        let row =
            sqlx::query("SELECT revoked, expires_at, max_uses, uses FROM enrollment_tokens WHERE id = $1 FOR UPDATE")
                .bind(token_id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?
                .ok_or(StoreError::NotFound)?;
        token_usable(
            row.col("revoked")?,
            opt_micros(row.col("expires_at")?)?,
            row.col::<Option<i64>>("max_uses")?.map(|m| m as u32),
            row.col::<i64>("uses")? as u32,
            now,
        )?;
        exec(
            tx,
            sqlx::query("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = $1").bind(token_id.to_string()),
        )
        .await?;
    }

    if let Some((nonce, expires_at)) = &c.consume_nonce {
        // ON CONFLICT rather than catching the unique violation: an error would abort the whole
        // transaction, and a racing insert of the same nonce waits for ours and then does nothing.
        let inserted = exec(
            tx,
            sqlx::query("INSERT INTO used_nonces (nonce_hash, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(nonce.to_hex())
                .bind(micros(*expires_at)),
        )
        .await?;
        if inserted == 0 {
            return Err(StoreError::NonceReused);
        }
        exec(
            tx,
            sqlx::query("DELETE FROM used_nonces WHERE expires_at < $1").bind(micros(now)),
        )
        .await?;
    }

    // The enrollment was decided against the device's active enrollment as it was then; if that
    // changed meanwhile (a concurrent enrollment, a renewal, an unenrollment), the decision is stale.
    // FOR UPDATE: a concurrent commit that changes the row waits for ours, and ours for theirs.
    let active = sqlx::query(
        "SELECT id, cert_serial, cert_thumbprint, previous_cert_serial, previous_cert_thumbprint \
         FROM enrollments WHERE device_id = $1 AND state = 'active' FOR UPDATE",
    )
    .bind(e.device_id.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(from_sqlx)?;
    let active = match &active {
        Some(r) => Some((
            r.col::<String>("id")?,
            r.col::<String>("cert_serial")?,
            r.col::<String>("cert_thumbprint")?,
            r.col::<Option<String>>("previous_cert_serial")?,
            r.col::<Option<String>>("previous_cert_thumbprint")?,
        )),
        None => None,
    };
    let matches = match (&active, &c.replaces) {
        (None, None) => true,
        (Some((id, serial, thumb, _, _)), Some(r)) => {
            *id == r.id.to_string() && *serial == r.cert.serial.as_str() && *thumb == r.cert.thumbprint.as_str()
        }
        _ => false,
    };
    let changed = || StoreError::Conflict("the device's enrollment changed meanwhile".into());
    if !matches {
        return Err(changed());
    }
    if let (Some((_, _, _, previous_serial, previous_thumb)), Some(r)) = (active, &c.replaces) {
        // A device that enrolls again replaces its previous enrollment; its certificates must stop
        // working, so they are revoked in the same transaction (a renewal's previous one too).
        exec(
            tx,
            sqlx::query(
                "UPDATE enrollments SET state = 'replaced', updated_at = $1, previous_cert_serial = NULL, \
                 previous_cert_thumbprint = NULL WHERE id = $2",
            )
            .bind(micros(now))
            .bind(r.id.to_string()),
        )
        .await?;
        let reason = reasons::SUPERSEDED_BY_REENROLLMENT;
        if let (Some(serial), Some(thumb)) = (previous_serial, previous_thumb) {
            insert_log(
                tx,
                &revoked(&cert_ref(serial, &thumb)?, &e.device_id, r.id, reason, now),
            )
            .await?;
        }
        insert_log(tx, &revoked(&r.cert, &e.device_id, r.id, reason, now)).await?;
    }

    let res = sqlx::query(
        "INSERT INTO enrollments (id, platform, device_id, hardware_id, device_name, os_version, os_edition, \
         enrollment_type, user_email, auth_method, enrollment_token_id, group_id, cert_serial, \
         cert_thumbprint, cert_not_after, previous_cert_serial, previous_cert_thumbprint, state, enrolled_at, \
         updated_at, last_seen_at, session_credential) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
    )
    .bind(e.id.to_string())
    .bind(e.platform.as_str())
    .bind(e.device_id.as_str().to_owned())
    .bind(e.hardware_id.clone())
    .bind(e.device_name.clone())
    .bind(e.os_version.clone())
    .bind(e.os_edition.clone())
    .bind(e.enrollment_type.as_str())
    .bind(e.user_email.clone())
    .bind(e.auth_method.as_str())
    .bind(e.enrollment_token_id.map(|i| i.to_string()))
    .bind(e.group_id.map(|i| i.to_string()))
    .bind(e.cert_serial.as_str().to_owned())
    .bind(e.cert_thumbprint.as_str().to_owned())
    .bind(micros(e.cert_not_after))
    .bind(e.previous_cert.as_ref().map(|p| p.serial.as_str().to_owned()))
    .bind(e.previous_cert.as_ref().map(|p| p.thumbprint.as_str().to_owned()))
    .bind(e.state.as_str())
    .bind(micros(e.enrolled_at))
    .bind(micros(e.updated_at))
    .bind(e.last_seen_at.map(micros))
    .bind(c.session_credential.clone())
    .execute(&mut *tx)
    .await;
    match res {
        // Two first enrollments of one device racing: the partial unique index lets one through,
        // the other waited for it and finds the device enrolled, as the SQLite store's check would.
        Err(err) if unique_violation(&err).as_deref() == Some("enrollments_active_device") => {
            return Err(changed());
        }
        other => {
            other.map_err(from_sqlx)?;
        }
    }

    insert_log(
        tx,
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
    )
    .await?;
    let event = NewDeviceEvent::enrolled(e, c.replaces.is_some());
    insert_event(tx, &e.id.to_string(), &event, now).await?;
    Ok(())
}

/// Inserts `commands` in order in one statement (`unnest … WITH ORDINALITY`, ordered), so `seq`
/// keeps the call's order and a batch is one round trip.
async fn insert_commands(tx: &mut PgConnection, commands: &[NewCommand]) -> StoreResult<()> {
    if commands.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = commands.iter().map(|c| c.id.to_string()).collect();
    let enrollments: Vec<String> = commands.iter().map(|c| c.enrollment_id.to_string()).collect();
    let payloads: Vec<String> = commands.iter().map(|c| c.payload.as_json().to_owned()).collect();
    let priorities: Vec<i64> = commands.iter().map(|c| i64::from(c.priority)).collect();
    let origins: Vec<String> = commands.iter().map(|c| c.origin.as_str().into_owned()).collect();
    let created: Vec<i64> = commands.iter().map(|c| micros(c.created_at)).collect();
    let expires: Vec<Option<i64>> = commands.iter().map(|c| c.expires_at.map(micros)).collect();
    exec(
        tx,
        sqlx::query(
            "INSERT INTO commands (id, enrollment_id, payload, priority, origin, state, created_at, expires_at) \
             SELECT id, enrollment_id, payload, priority, origin, 'pending', created_at, expires_at \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[]) \
             WITH ORDINALITY AS c(id, enrollment_id, payload, priority, origin, created_at, expires_at, n) \
             ORDER BY n",
        )
        .bind(ids)
        .bind(enrollments)
        .bind(payloads)
        .bind(priorities)
        .bind(origins)
        .bind(created)
        .bind(expires),
    )
    .await?;
    Ok(())
}

/// Moves an active enrollment out of `active`: revokes its certificates (logged), cancels its open
/// commands and records the event. False if it was not active.
async fn end_enrollment_in(
    tx: &mut PgConnection,
    id: EnrollmentId,
    end: &EnrollmentEnd,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let eid = id.to_string();
    let row = sqlx::query(
        "SELECT device_id, cert_serial, cert_thumbprint, previous_cert_serial, previous_cert_thumbprint \
         FROM enrollments WHERE id = $1 AND state = 'active' FOR UPDATE",
    )
    .bind(&eid)
    .fetch_optional(&mut *tx)
    .await
    .map_err(from_sqlx)?;
    let Some(row) = row else {
        return Ok(false);
    };
    let device = DeviceId::parse(row.col("device_id")?).ok_or_else(|| bad("device_id"))?;
    let current = cert_ref(row.col("cert_serial")?, row.col("cert_thumbprint")?)?;
    if let (Some(serial), Some(thumb)) = (
        row.col::<Option<String>>("previous_cert_serial")?,
        row.col::<Option<String>>("previous_cert_thumbprint")?,
    ) {
        insert_log(tx, &revoked(&cert_ref(serial, &thumb)?, &device, id, &end.reason, now)).await?;
    }
    exec(
        tx,
        sqlx::query(
            "UPDATE enrollments SET state = $1, updated_at = $2, previous_cert_serial = NULL, \
             previous_cert_thumbprint = NULL WHERE id = $3",
        )
        .bind(end.state.as_str())
        .bind(micros(now))
        .bind(&eid),
    )
    .await?;
    exec(
        tx,
        sqlx::query(
            "UPDATE commands SET state = 'cancelled', completed_at = $1 WHERE enrollment_id = $2 \
             AND state IN ('pending', 'sent')",
        )
        .bind(micros(now))
        .bind(&eid),
    )
    .await?;
    insert_event(tx, &eid, &NewDeviceEvent::enrollment_ended(end.state, &end.reason), now).await?;
    insert_log(tx, &revoked(&current, &device, id, &end.reason, now)).await?;
    Ok(true)
}

/// Records reported facts, in order: an unchanged value only gets `updated_at` (when last
/// reported); a changed or new one is written with a history row. Every check-in reports the same
/// DevInfo facts, so the usual case is that every fact is unchanged: one UPDATE over all of them
/// (arrays) finds that, and only the changed ones go one by one. With a name twice in one commit
/// the one-by-one path takes them all, as a later item compares against the value just written.
/// Returns whether a fact a dynamic group's rule or the device-side lock can read changed
/// ([`steward_core::configuration::fact_resets_configuration`]).
async fn write_facts(tx: &mut PgConnection, eid: &str, facts: &[FactUpdate], at: i64) -> StoreResult<bool> {
    let mut rule_fact_changed = false;
    let mut names: Vec<String> = facts.iter().map(|f| f.name.as_str().to_owned()).collect();
    names.sort_unstable();
    let unique = names.windows(2).all(|w| w[0] != w[1]);
    let mut touched = std::collections::HashSet::new();
    if unique {
        let names: Vec<String> = facts.iter().map(|f| f.name.as_str().to_owned()).collect();
        let values: Vec<String> = facts.iter().map(|f| f.value.clone()).collect();
        let rows = sqlx::query(
            "UPDATE device_facts f SET updated_at = $1 FROM unnest($2::text[], $3::text[]) AS u(name, value) \
             WHERE f.enrollment_id = $4 AND f.name = u.name AND f.value = u.value RETURNING f.name",
        )
        .bind(at)
        .bind(names)
        .bind(values)
        .bind(eid)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        for r in rows {
            touched.insert(r.try_get::<String, _>(0).map_err(from_sqlx)?);
        }
    }
    for f in facts {
        let name = f.name.as_str();
        if touched.contains(name) {
            continue;
        }
        if !unique {
            let n = exec(
                tx,
                sqlx::query(
                    "UPDATE device_facts SET updated_at = $1 WHERE enrollment_id = $2 AND name = $3 AND value = $4",
                )
                .bind(at)
                .bind(eid)
                .bind(name)
                .bind(&f.value),
            )
            .await?;
            if n > 0 {
                continue;
            }
        }
        let old: Option<String> =
            sqlx::query_scalar("SELECT value FROM device_facts WHERE enrollment_id = $1 AND name = $2 FOR UPDATE")
                .bind(eid)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        exec(
            tx,
            sqlx::query(
                "INSERT INTO device_facts (enrollment_id, name, value, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (enrollment_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(eid)
            .bind(name)
            .bind(&f.value)
            .bind(at),
        )
        .await?;
        exec(
            tx,
            sqlx::query(
                "INSERT INTO device_fact_history (enrollment_id, name, old_value, new_value, at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(eid)
            .bind(name)
            .bind(old)
            .bind(&f.value)
            .bind(at),
        )
        .await?;
        rule_fact_changed |= steward_core::configuration::fact_resets_configuration(&f.name);
    }
    Ok(rule_fact_changed)
}

/// Revokes (logs) and forgets the certificate a renewal replaced, if any.
async fn retire_previous(
    tx: &mut PgConnection,
    id: EnrollmentId,
    reason: &str,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let row = sqlx::query(
        "SELECT device_id, previous_cert_serial, previous_cert_thumbprint FROM enrollments \
         WHERE id = $1 AND previous_cert_serial IS NOT NULL FOR UPDATE",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *tx)
    .await
    .map_err(from_sqlx)?;
    let Some(row) = row else {
        return Ok(());
    };
    let device = DeviceId::parse(row.col("device_id")?).ok_or_else(|| bad("device_id"))?;
    let cert = cert_ref(row.col("previous_cert_serial")?, row.col("previous_cert_thumbprint")?)?;
    exec(
        tx,
        sqlx::query(
            "UPDATE enrollments SET previous_cert_serial = NULL, previous_cert_thumbprint = NULL WHERE id = $1",
        )
        .bind(id.to_string()),
    )
    .await?;
    insert_log(tx, &revoked(&cert, &device, id, reason, now)).await
}

/// Records everything one check-in message produced (see [`CheckinCommit`]), in its documented
/// order, in the caller's transaction.
async fn commit_checkin(
    tx: &mut PgConnection,
    id: EnrollmentId,
    c: &CheckinCommit,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let eid = id.to_string();
    let at = micros(now);

    // First, and out of the documented order on purpose: the enrollment row's lock. Two messages
    // of one device (on any replica) commit one after the other, and an admin ending the
    // enrollment waits for this commit or this one for it. Setting last_seen_at early changes
    // nothing else the commit reads.
    exec(
        tx,
        sqlx::query("UPDATE enrollments SET last_seen_at = $1 WHERE id = $2")
            .bind(at)
            .bind(&eid),
    )
    .await?;

    // The session record must still be the one the message was processed against. The lock just
    // taken makes every other commit for this enrollment wait, and under READ COMMITTED this read
    // sees whatever committed before: a second message processed at the same time as the first
    // finds the first one's record here and is refused, to be replanned (then replayed as a repeat).
    if c.session_read != SessionPrecondition::Unchecked {
        let current =
            sqlx::query("SELECT session_key, state, last_request_hash FROM checkin_sessions WHERE enrollment_id = $1")
                .bind(&eid)
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        let current = match &current {
            Some(r) => Some((
                r.col::<&str>("session_key")?,
                r.col::<&str>("state")?,
                r.col::<&str>("last_request_hash")?,
            )),
            None => None,
        };
        if !c.session_read.holds(current) {
            return Err(StoreError::Stale("the device's session record".into()));
        }
    }

    // The engine may have sent (or even been answered for) a command it queued itself.
    if !c.enqueue.is_empty() {
        insert_commands(tx, &c.enqueue).await?;
    }

    if c.expire_overdue {
        exec(
            tx,
            sqlx::query(
                "UPDATE commands SET state = 'expired', completed_at = $1 WHERE enrollment_id = $2 \
                 AND state IN ('pending', 'sent') AND expires_at IS NOT NULL AND expires_at <= $1",
            )
            .bind(at)
            .bind(&eid),
        )
        .await?;
    }

    for o in &c.outcomes {
        // Only this enrollment's own, still-open commands take an outcome; the first one wins. The
        // check and the insert are one statement, and the result row's key settles a race.
        let inserted = exec(
            tx,
            sqlx::query(
                "INSERT INTO command_results (command_id, enrollment_id, status_code, results, child_codes, \
                 received_at) SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM commands WHERE id = $1 \
                 AND enrollment_id = $2 AND state IN ('pending', 'sent')) ON CONFLICT (command_id) DO NOTHING",
            )
            .bind(o.command_id.to_string())
            .bind(&eid)
            .bind(i64::from(o.status_code))
            .bind(serde_json::to_string(&o.results).map_err(|e| StoreError::Backend(e.to_string()))?)
            .bind(serde_json::to_string(&o.child_codes).map_err(|e| StoreError::Backend(e.to_string()))?)
            .bind(at),
        )
        .await?;
        if inserted == 0 {
            continue;
        }
        // An accepted command is not done yet: its completion arrives later.
        let completed = (o.state != CommandState::Accepted).then_some(at);
        exec(
            tx,
            sqlx::query("UPDATE commands SET state = $1, status_code = $2, completed_at = $3 WHERE id = $4")
                .bind(o.state.as_str())
                .bind(i64::from(o.status_code))
                .bind(completed)
                .bind(o.command_id.to_string()),
        )
        .await?;
        insert_event(tx, &eid, &o.event, now).await?;
    }

    for done in &c.completions {
        let changed = exec(
            tx,
            sqlx::query(
                "UPDATE commands SET state = $1, status_code = $2, completed_at = $3 WHERE id = $4 \
                 AND enrollment_id = $5 AND state = 'accepted'",
            )
            .bind(done.state.as_str())
            .bind(i64::from(done.status_code))
            .bind(at)
            .bind(done.command_id.to_string())
            .bind(&eid),
        )
        .await?;
        if changed > 0 {
            insert_event(tx, &eid, &done.event, now).await?;
        }
    }

    for r in &c.requeue {
        exec(
            tx,
            sqlx::query(
                "UPDATE commands SET payload = $1, state = 'pending' WHERE id = $2 AND enrollment_id = $3 \
                 AND state IN ('pending', 'sent')",
            )
            .bind(r.payload.as_json().to_owned())
            .bind(r.command_id.to_string())
            .bind(&eid),
        )
        .await?;
    }

    if !c.sent.is_empty() {
        let mut ids: Vec<String> = c.sent.iter().map(ToString::to_string).collect();
        ids.sort_unstable();
        ids.dedup();
        let expected = ids.len() as u64;
        let marked = exec(
            tx,
            sqlx::query(
                "UPDATE commands SET state = 'sent', send_count = send_count + 1, last_sent_at = $1, \
                 last_session = $2 WHERE id = ANY($3) AND enrollment_id = $4 AND state IN ('pending', 'sent')",
            )
            .bind(at)
            .bind(c.session.key.clone())
            .bind(ids)
            .bind(&eid),
        )
        .await?;
        // Every command the answer carries is still open. Under READ COMMITTED the UPDATE waits for
        // a concurrent cancel of one of them and then skips it: that answer must not go out, so
        // the whole commit is refused and replanned.
        if marked != expected {
            return Err(StoreError::Stale("a command in the answer is no longer open".into()));
        }
    }

    let rule_fact_changed = !c.facts.is_empty() && write_facts(tx, &eid, &c.facts, at).await?;

    if let Some(end) = &c.end_enrollment {
        end_enrollment_in(tx, id, end, now).await?;
    }

    if let Some(body) = &c.raw_message {
        // Trimming back to DEVICE_MESSAGES_KEPT once there are twice as many does it on one message in
        // DEVICE_MESSAGES_KEPT instead of after every insert: between KEPT and 2 × KEPT − 1 are kept.
        // (The count's snapshot precedes the insert, hence the + 1.)
        let stored: i64 = sqlx::query_scalar(
            "INSERT INTO device_messages (enrollment_id, received_at, body) VALUES ($1, $2, $3) \
             RETURNING (SELECT COUNT(*) FROM device_messages WHERE enrollment_id = $1) + 1",
        )
        .bind(&eid)
        .bind(at)
        .bind(body.clone())
        .fetch_one(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        if stored >= 2 * DEVICE_MESSAGES_KEPT {
            exec(
                tx,
                sqlx::query(
                    "DELETE FROM device_messages WHERE enrollment_id = $1 AND seq <= \
                     (SELECT seq FROM device_messages WHERE enrollment_id = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2)",
                )
                .bind(&eid)
                .bind(DEVICE_MESSAGES_KEPT),
            )
            .await?;
        }
    }

    let s = &c.session;
    exec(
        tx,
        sqlx::query(
            "INSERT INTO checkin_sessions (enrollment_id, session_key, state, last_request_hash, last_response, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (enrollment_id) DO UPDATE SET session_key = excluded.session_key, state = excluded.state, \
             last_request_hash = excluded.last_request_hash, last_response = excluded.last_response, \
             updated_at = excluded.updated_at",
        )
        .bind(&eid)
        .bind(s.key.clone())
        .bind(s.state.clone())
        .bind(s.last_request_hash.clone())
        .bind(s.last_response.clone())
        .bind(at),
    )
    .await?;

    if c.retire_previous_certificate {
        retire_previous(tx, id, reasons::RENEWED_CERTIFICATE_IN_USE, now).await?;
    }

    // None (the usual idle message): no statement at all.
    if let Some(config) = &c.configuration {
        crate::profiles::write_configuration(tx, &eid, config, now).await?;
    }
    // A fact a dynamic group's rule reads changed, so the device's groups may have: its next
    // check-in reconciles. After the configuration part, whose stamp was decided on the facts
    // this message's context read, before the change.
    if rule_fact_changed {
        exec(
            tx,
            sqlx::query("UPDATE device_config_state SET epoch_seen = 0 WHERE enrollment_id = $1").bind(&eid),
        )
        .await?;
    }
    Ok(())
}

/// Applies a renewal as [`RenewalCommit`] describes it. NotFound unless the enrollment is active and
/// its current certificate is still the one the renewal was planned against.
async fn commit_renewal(tx: &mut PgConnection, r: &RenewalCommit) -> StoreResult<()> {
    let id = r.enrollment_id;
    let eid = id.to_string();
    let row =
        sqlx::query("SELECT device_id, cert_thumbprint FROM enrollments WHERE id = $1 AND state = 'active' FOR UPDATE")
            .bind(&eid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
    let Some(row) = row else {
        return Err(StoreError::NotFound);
    };
    if row.col::<&str>("cert_thumbprint")? != r.expected_current.as_str() {
        return Err(StoreError::NotFound);
    }
    let device = DeviceId::parse(row.col("device_id")?).ok_or_else(|| bad("device_id"))?;
    for (cert, reason) in &r.revoke {
        insert_log(tx, &revoked(cert, &device, id, reason, r.at)).await?;
    }
    if r.current_becomes_previous {
        exec(
            tx,
            sqlx::query(
                "UPDATE enrollments SET previous_cert_serial = cert_serial, previous_cert_thumbprint = cert_thumbprint \
                 WHERE id = $1",
            )
            .bind(&eid),
        )
        .await?;
    }
    exec(
        tx,
        sqlx::query(
            "UPDATE enrollments SET cert_serial = $1, cert_thumbprint = $2, cert_not_after = $3, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(r.new_cert.serial.as_str().to_owned())
        .bind(r.new_cert.thumbprint.as_str().to_owned())
        .bind(micros(r.not_after))
        .bind(micros(r.at))
        .bind(&eid),
    )
    .await?;
    insert_log(
        tx,
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
    )
    .await?;
    insert_event(tx, &eid, &r.event, r.at).await?;
    Ok(())
}
