//! [`CheckinStore`]: the per-message hot path. The context is three indexed reads in one
//! REPEATABLE READ, READ ONLY transaction (one snapshot: the enrollment with its session and its
//! configuration stamp and the configuration epoch, the named facts, the open and awaiting
//! commands), plus two more only when the device's configuration must be reconciled
//! ([`DeviceConfigState::needs_load`]); the commit is one transaction (`writes.rs`).

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::from_sqlx;
use crate::profiles::{load_configuration, stamp_from_row};
use crate::rows::{Col, command_from_row, enrollment_from_row};
use crate::{PgStore, from_micros};

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
/// message), its configuration stamp (`c_*`, LEFT JOIN: none before the first reconciliation) and
/// the configuration epoch: what an idle check-in needs to know that nothing changed, in the one
/// statement it ran before.
macro_rules! context_sql {
    ($where:literal) => {
        concat!(
            "SELECT e.*, ",
            session_columns!(),
            ", c.epoch_seen AS c_epoch_seen, c.unsettled AS c_unsettled, c.verify_at AS c_verify_at, \
             (SELECT epoch FROM configuration_epoch) AS config_epoch \
             FROM enrollments e LEFT JOIN checkin_sessions s ON s.enrollment_id = e.id \
             LEFT JOIN device_config_state c ON c.enrollment_id = e.id WHERE ",
            $where
        )
    };
}

const CONTEXT_BY_CERTIFICATE: &str = context_sql!("e.cert_thumbprint = $1 OR e.previous_cert_thumbprint = $1");
const CONTEXT_BY_ID: &str = context_sql!("e.id = $1");
const CONTEXT_BY_ACTIVE_DEVICE: &str = context_sql!("e.device_id = $1 AND e.state = 'active'");

/// The session from `session_columns!()`; None when the row has none (LEFT JOIN).
pub(crate) fn session_from_row(r: &PgRow) -> StoreResult<Option<SessionRecord>> {
    let Some(key) = r.col::<Option<String>>("s_session_key")? else {
        return Ok(None);
    };
    Ok(Some(SessionRecord {
        key,
        state: r.col("s_state")?,
        last_request_hash: r.col("s_last_request_hash")?,
        last_response: r.col("s_last_response")?,
        updated_at: Some(from_micros(r.col("s_updated_at")?)?),
    }))
}

#[async_trait]
impl CheckinStore for PgStore {
    async fn checkin_context(
        &self,
        key: EnrollmentKey<'_>,
        fact_names: &[FactName],
        now: OffsetDateTime,
    ) -> StoreResult<Option<CheckinContext>> {
        let (sql, key) = match key {
            EnrollmentKey::Certificate(t) => (CONTEXT_BY_CERTIFICATE, t.as_str().to_owned()),
            EnrollmentKey::Id(id) => (CONTEXT_BY_ID, id.to_string()),
            EnrollmentKey::ActiveDevice(d) => (CONTEXT_BY_ACTIVE_DEVICE, d.as_str().to_owned()),
        };
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(from_sqlx)?;
        let Some(row) = sqlx::query(sql)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?
        else {
            tx.commit().await.map_err(from_sqlx)?;
            return Ok(None);
        };
        let enrollment = enrollment_from_row(&row)?;
        let session_credential = row.col("session_credential")?;
        let session = session_from_row(&row)?;
        let eid = enrollment.id.to_string();
        let epoch = row
            .col::<Option<i64>>("config_epoch")?
            .ok_or_else(|| crate::bad("configuration epoch"))?;
        let state = stamp_from_row(&row)?;

        let mut facts = Vec::with_capacity(fact_names.len());
        if !fact_names.is_empty() {
            let names: Vec<String> = fact_names.iter().map(|n| n.as_str().to_owned()).collect();
            let rows = sqlx::query(
                "SELECT name, value, updated_at FROM device_facts WHERE enrollment_id = $1 AND name = ANY($2) \
                 ORDER BY name",
            )
            .bind(&eid)
            .bind(names)
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            for r in &rows {
                facts.push(DeviceFact {
                    name: FactName::parse(r.col("name")?).ok_or_else(|| crate::bad("fact name"))?,
                    value: r.col("value")?,
                    updated_at: from_micros(r.col("updated_at")?)?,
                });
            }
        }
        facts.sort_by(|a, b| a.name.cmp(&b.name));

        // The open and the awaiting commands in one statement: open ones in delivery order (as
        // deliverable_commands: priority first, then queue order), then the accepted ones newest
        // first. Expired open ones are not deliverable; that one is open tells the commit to expire it.
        let rows = sqlx::query(
            "SELECT * FROM commands WHERE enrollment_id = $1 AND state IN ('pending', 'sent', 'accepted') \
             ORDER BY state = 'accepted', CASE WHEN state = 'accepted' THEN 0 ELSE priority END DESC, \
             CASE WHEN state = 'accepted' THEN -seq ELSE seq END",
        )
        .bind(&eid)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        // Only when something may have changed (the epoch moved, something is unsettled, a
        // read-back is due): an idle check-in of a settled device reads nothing more.
        let loaded = if state.needs_load(epoch, now) {
            Some(load_configuration(&mut tx, &enrollment).await?)
        } else {
            None
        };
        tx.commit().await.map_err(from_sqlx)?;
        let mut open = Vec::new();
        let mut awaiting = Vec::new();
        let mut overdue = false;
        for r in &rows {
            let c = command_from_row(r)?;
            if c.state == CommandState::Accepted {
                awaiting.push(c);
            } else if c.expires_at.is_none_or(|at| at > now) {
                open.push(c);
            } else {
                overdue = true;
            }
        }
        Ok(Some(CheckinContext {
            enrollment,
            session_credential,
            session,
            facts,
            open,
            awaiting,
            overdue,
            configuration: ConfigurationContext { epoch, state, loaded },
        }))
    }

    async fn commit_checkin(&self, id: EnrollmentId, commit: &CheckinCommit, now: OffsetDateTime) -> StoreResult<()> {
        self.write_checkin(id, commit, now).await
    }
}
