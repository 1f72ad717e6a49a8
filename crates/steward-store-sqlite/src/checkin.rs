//! [`CheckinStore`]: the per-message hot path. The context is one read snapshot on a rusqlite
//! reader of the calling thread (`reads.rs`); the commit is one write transaction on the writer
//! thread (`writes::commit_checkin`).

use async_trait::async_trait;
use rusqlite::OptionalExtension;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::from_rusqlite;
use crate::rows::{NamedRow, command_from_row, enrollment_from_row};
use crate::{SqliteStore, bad, from_micros, opt_micros, profiles, writes};

/// The `checkin_sessions` columns as `s_*` (table alias `s`), read by [`session_from_row`].
macro_rules! session_columns {
    () => {
        "s.session_key AS s_session_key, s.state AS s_state, s.last_request_hash AS s_last_request_hash, \
         s.last_response AS s_last_response, s.updated_at AS s_updated_at"
    };
}
#[cfg(any(test, feature = "inspect"))]
pub(crate) use session_columns;

/// The enrollment row, its session credential and its session (LEFT JOIN: None before the first
/// message), the first of the reads of `checkin_context`. The configuration stamp (LEFT JOIN: none
/// before the first reconciliation) and the configuration epoch (a one-row table) come with it, so
/// an idle check-in of a settled device reads no statement more than before (`profiles.rs`).
macro_rules! context_sql {
    ($where:literal) => {
        concat!(
            "SELECT e.*, ",
            session_columns!(),
            ", c.epoch_seen AS c_epoch_seen, c.unsettled AS c_unsettled, c.verify_at AS c_verify_at, \
             (SELECT epoch FROM configuration_epoch WHERE id = 1) AS c_epoch \
             FROM enrollments e LEFT JOIN checkin_sessions s ON s.enrollment_id = e.id \
             LEFT JOIN device_config_state c ON c.enrollment_id = e.id WHERE ",
            $where
        )
    };
}

pub(crate) const CONTEXT_BY_CERTIFICATE: &str =
    context_sql!("e.cert_thumbprint = ?1 OR e.previous_cert_thumbprint = ?1");
pub(crate) const CONTEXT_BY_ID: &str = context_sql!("e.id = ?1");
pub(crate) const CONTEXT_BY_ACTIVE_DEVICE: &str = context_sql!("e.device_id = ?1 AND e.state = 'active'");

/// The session from `session_columns!()`; None when the row has none (LEFT JOIN).
pub(crate) fn session_from_row(r: &NamedRow<'_>) -> StoreResult<Option<SessionRecord>> {
    let Some(key) = r.opt_text("s_session_key")? else {
        return Ok(None);
    };
    Ok(Some(SessionRecord {
        key,
        state: r.text("s_state")?,
        last_request_hash: r.text("s_last_request_hash")?,
        last_response: r.text("s_last_response")?,
        updated_at: Some(from_micros(r.int("s_updated_at")?)?),
    }))
}

/// The configuration epoch and the device's stamp from `context_sql!()`'s `c_*` columns.
fn config_stamp(r: &NamedRow<'_>) -> StoreResult<(i64, DeviceConfigState)> {
    let state = match r.opt_int("c_epoch_seen")? {
        Some(epoch_seen) => DeviceConfigState {
            epoch_seen,
            unsettled: u32::try_from(r.int("c_unsettled")?).map_err(|_| bad("unsettled count"))?,
            verify_at: opt_micros(r.opt_int("c_verify_at")?)?,
        },
        None => DeviceConfigState::default(),
    };
    Ok((r.int("c_epoch")?, state))
}

/// All commands of one enrollment in one state-set query, mapped in the statement's order.
fn commands(tx: &rusqlite::Transaction<'_>, sql: &str, eid: &str) -> StoreResult<Vec<Command>> {
    let mut stmt = tx.prepare_cached(sql).map_err(from_rusqlite)?;
    let mut rows = stmt.query(rusqlite::params![eid]).map_err(from_rusqlite)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(from_rusqlite)? {
        out.push(command_from_row(&NamedRow::new(r)?)?);
    }
    Ok(out)
}

/// `checkin_context` on one read connection, in one read transaction (one snapshot). The
/// statements are function calls here (`reads.rs`), so each part is its own plain indexed query:
/// the single statement this replaced (JSON aggregates over `json_each` lists, needed when every
/// statement was a thread round trip) cost more in SQLite's temporary tables and JSON than the
/// extra statements do.
fn read_context(
    conn: &rusqlite::Connection,
    key: EnrollmentKey<'_>,
    fact_names: &[FactName],
    now: OffsetDateTime,
) -> StoreResult<Option<CheckinContext>> {
    let tx = conn.unchecked_transaction().map_err(from_rusqlite)?;
    let (sql, key) = match key {
        EnrollmentKey::Certificate(t) => (CONTEXT_BY_CERTIFICATE, t.as_str().to_owned()),
        EnrollmentKey::Id(id) => (CONTEXT_BY_ID, id.to_string()),
        EnrollmentKey::ActiveDevice(d) => (CONTEXT_BY_ACTIVE_DEVICE, d.as_str().to_owned()),
    };
    let (enrollment, session_credential, session, (epoch, state)) = {
        let mut stmt = tx.prepare_cached(sql).map_err(from_rusqlite)?;
        let mut rows = stmt.query(rusqlite::params![key]).map_err(from_rusqlite)?;
        let Some(r) = rows.next().map_err(from_rusqlite)? else {
            return Ok(None);
        };
        let r = NamedRow::new(r)?;
        (
            enrollment_from_row(&r)?,
            r.opt_text("session_credential")?,
            session_from_row(&r)?,
            config_stamp(&r)?,
        )
    };
    let eid = enrollment.id.to_string();
    let mut facts = Vec::with_capacity(fact_names.len());
    {
        let mut stmt = tx
            .prepare_cached("SELECT value, updated_at FROM device_facts WHERE enrollment_id = ?1 AND name = ?2")
            .map_err(from_rusqlite)?;
        for name in fact_names {
            let fact = stmt
                .query_row(rusqlite::params![eid, name.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
                .map_err(from_rusqlite)?;
            if let Some((value, at)) = fact {
                facts.push(DeviceFact {
                    name: name.clone(),
                    value,
                    updated_at: from_micros(at)?,
                });
            }
        }
    }
    facts.sort_by(|a, b| a.name.cmp(&b.name));
    // Delivery order, as deliverable_commands: priority first, then queue order. Expired ones are
    // not deliverable; that one is open tells the commit to expire it.
    let (open, expired): (Vec<Command>, Vec<Command>) = commands(
        &tx,
        "SELECT * FROM commands WHERE enrollment_id = ?1 AND state IN ('pending', 'sent') \
         ORDER BY priority DESC, seq",
        &eid,
    )?
    .into_iter()
    .partition(|c| c.expires_at.is_none_or(|at| at > now));
    let awaiting = commands(
        &tx,
        "SELECT * FROM commands WHERE enrollment_id = ?1 AND state = 'accepted' ORDER BY seq DESC",
        &eid,
    )?;
    // The profiles and rows only when something may have changed (core decides what).
    let loaded = if state.needs_load(epoch, now) {
        Some(profiles::load_configuration(&tx, &enrollment)?)
    } else {
        None
    };
    Ok(Some(CheckinContext {
        enrollment,
        session_credential,
        session,
        facts,
        open,
        awaiting,
        overdue: !expired.is_empty(),
        configuration: ConfigurationContext { epoch, state, loaded },
    }))
}

#[async_trait]
impl CheckinStore for SqliteStore {
    async fn checkin_context(
        &self,
        key: EnrollmentKey<'_>,
        facts: &[FactName],
        now: OffsetDateTime,
    ) -> StoreResult<Option<CheckinContext>> {
        // Every device message starts here, on a read connection of the calling thread instead of a
        // hand-over to another thread (see `reads.rs`).
        self.readers.read(|conn| read_context(conn, key, facts, now))
    }

    async fn commit_checkin(&self, id: EnrollmentId, commit: &CheckinCommit, now: OffsetDateTime) -> StoreResult<()> {
        let commit = commit.clone();
        self.writer
            .run(move |conn| writes::commit_checkin(conn, id, &commit, now))
            .await
    }
}
