//! [`AuditLog`]: the keyed, append-only audit log (the chain is computed in steward-core; the key
//! comes from the caller and is never stored here).

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder};
use steward_core::*;

use crate::error::from_sqlx;
use crate::rows::Col;
use crate::{LOCK_AUDIT, PgStore, bad, from_micros, lock, micros};

fn audit_from_row(r: &PgRow) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        seq: r.col("seq")?,
        at: from_micros(r.col("at")?)?,
        actor: r.col("actor")?,
        actor_id: r.col("actor_id")?,
        actor_role: r
            .col::<Option<&str>>("actor_role")?
            .map(|s| Role::parse(s).ok_or_else(|| bad("audit actor_role")))
            .transpose()?,
        action: r.col("action")?,
        target: r.col("target")?,
        source_ip: r.col("source_ip")?,
        outcome: AuditOutcome::parse(r.col("outcome")?).ok_or_else(|| bad("audit outcome"))?,
        status: r.col::<Option<i64>>("status")?.map(|s| s as u16),
        details: r.col("details")?,
        prev_hash: r.col("prev_hash")?,
        hash: r.col("hash")?,
    })
}

#[async_trait]
impl AuditLog for PgStore {
    async fn append_audit_event(&self, e: &NewAuditEvent, key: &AuditChainKey) -> StoreResult<AuditEvent> {
        // The audit lock serialises appenders (every connection, every replica, the CLI): reading
        // the head and inserting after it cannot interleave with another append.
        let mut tx = self.begin().await?;
        lock(&mut tx, LOCK_AUDIT).await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let (seq, prev) = match head {
            Some(r) => (r.col::<i64>("seq")? + 1, r.col::<String>("hash")?),
            None => (1, AUDIT_GENESIS_HASH.to_owned()),
        };
        let keyed_from: Option<i64> = sqlx::query_scalar("SELECT keyed_from FROM audit_chain WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        if keyed_from.is_none() {
            // The first keyed row: rows before it are the unkeyed chain of an earlier version.
            sqlx::query("INSERT INTO audit_chain (id, keyed_from) VALUES (1, $1)")
                .bind(seq)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        }
        let ev = e.chained_with(Some(key), seq, &prev);
        sqlx::query(
            "INSERT INTO audit_events (seq, at, actor, actor_id, actor_role, action, target, source_ip, outcome, \
             status, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(ev.seq)
        .bind(micros(ev.at))
        .bind(&ev.actor)
        .bind(&ev.actor_id)
        .bind(ev.actor_role.map(Role::as_str))
        .bind(&ev.action)
        .bind(&ev.target)
        .bind(&ev.source_ip)
        .bind(ev.outcome.as_str())
        .bind(ev.status.map(i64::from))
        .bind(&ev.details)
        .bind(&ev.prev_hash)
        .bind(&ev.hash)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(ev)
    }

    async fn audit_keyed_from(&self) -> StoreResult<Option<i64>> {
        sqlx::query_scalar("SELECT keyed_from FROM audit_chain WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)
    }

    async fn audit_events(
        &self,
        filter: &AuditFilter,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        let mut b = QueryBuilder::<Postgres>::new("SELECT * FROM audit_events WHERE TRUE");
        if let Some(a) = &filter.actor {
            b.push(" AND actor = ").push_bind(a.clone());
        }
        if let Some(a) = &filter.action {
            b.push(" AND action = ").push_bind(a.clone());
        }
        if let Some(t) = &filter.target {
            b.push(" AND target = ").push_bind(t.clone());
        }
        let (cmp, dir) = if filter.newest_first {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(s) = after_seq {
            b.push(format!(" AND seq {cmp} ")).push_bind(s);
        }
        b.push(format!(" ORDER BY seq {dir} LIMIT "))
            .push_bind(i64::from(limit));
        b.build()
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(audit_from_row)
            .collect()
    }
}
