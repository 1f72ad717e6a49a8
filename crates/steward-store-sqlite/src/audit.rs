//! [`AuditLog`]: the keyed, append-only audit log (the chain is computed in steward-core; the key
//! comes from the caller and is never stored here).

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use steward_core::*;

use crate::error::from_sqlx;
use crate::{SqliteStore, bad, from_micros, micros};

fn audit_from_row(r: &SqliteRow) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        seq: r.get("seq"),
        at: from_micros(r.get("at"))?,
        actor: r.get("actor"),
        actor_id: r.get("actor_id"),
        actor_role: r
            .get::<Option<String>, _>("actor_role")
            .map(|s| Role::parse(&s).ok_or_else(|| bad("audit actor_role")))
            .transpose()?,
        action: r.get("action"),
        target: r.get("target"),
        source_ip: r.get("source_ip"),
        outcome: AuditOutcome::parse(&r.get::<String, _>("outcome")).ok_or_else(|| bad("audit outcome"))?,
        status: r.get::<Option<i64>, _>("status").map(|s| s as u16),
        details: r.get("details"),
        prev_hash: r.get("prev_hash"),
        hash: r.get("hash"),
    })
}

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append_audit_event(&self, e: &NewAuditEvent, key: &AuditChainKey) -> StoreResult<AuditEvent> {
        // The write lock (BEGIN IMMEDIATE) serialises appenders, so reading the head and inserting
        // after it cannot race with another process (the CLI) appending at the same time.
        let mut tx = self.begin_write().await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let (seq, prev) = match head {
            Some(r) => (r.get::<i64, _>("seq") + 1, r.get::<String, _>("hash")),
            None => (1, AUDIT_GENESIS_HASH.to_owned()),
        };
        let keyed_from: Option<i64> = sqlx::query_scalar("SELECT keyed_from FROM audit_chain WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        if keyed_from.is_none() {
            // The first keyed row: rows before it are the unkeyed chain of an earlier version.
            sqlx::query("INSERT INTO audit_chain (id, keyed_from) VALUES (1, ?)")
                .bind(seq)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        }
        let ev = e.chained_with(Some(key), seq, &prev);
        sqlx::query(
            "INSERT INTO audit_events (seq, at, actor, actor_id, actor_role, action, target, source_ip, outcome, \
             status, details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            .fetch_optional(&self.read)
            .await
            .map_err(from_sqlx)
    }

    async fn audit_events(
        &self,
        filter: &AuditFilter,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        let mut b = QueryBuilder::<Sqlite>::new("SELECT * FROM audit_events WHERE 1 = 1");
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
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(audit_from_row)
            .collect()
    }
}
