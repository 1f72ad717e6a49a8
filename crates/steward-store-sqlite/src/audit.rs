//! [`AuditLog`]: the keyed, append-only audit log (the chain is computed in steward-core; the key
//! comes from the caller and is never stored here).

use async_trait::async_trait;
use steward_core::*;

use crate::rows::{NamedRow, Sql, exec, first};
use crate::{SqliteStore, bad, from_micros, micros};

fn audit_from_row(r: &NamedRow<'_>) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        seq: r.int("seq")?,
        at: from_micros(r.int("at")?)?,
        actor: r.get("actor")?,
        actor_id: r.get("actor_id")?,
        actor_role: r
            .opt_text("actor_role")?
            .map(|s| Role::parse(&s).ok_or_else(|| bad("audit actor_role")))
            .transpose()?,
        action: r.get("action")?,
        target: r.get("target")?,
        source_ip: r.get("source_ip")?,
        outcome: AuditOutcome::parse(&r.text("outcome")?).ok_or_else(|| bad("audit outcome"))?,
        status: r.opt_int("status")?.map(|s| s as u16),
        details: r.get("details")?,
        prev_hash: r.get("prev_hash")?,
        hash: r.get("hash")?,
    })
}

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append_audit_event(&self, e: &NewAuditEvent, key: &AuditChainKey) -> StoreResult<AuditEvent> {
        let e = e.clone();
        // A copy for the writer thread; it lives only as long as the job.
        let key = key.clone();
        // The write lock (BEGIN IMMEDIATE) serialises appenders, so reading the head and inserting
        // after it cannot race with another process (the CLI) appending at the same time.
        self.write(move |tx| {
            let head = first(
                tx,
                "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
                (),
                |r| Ok((r.int("seq")?, r.text("hash")?)),
            )?;
            let (seq, prev) = match head {
                Some((seq, hash)) => (seq + 1, hash),
                None => (1, AUDIT_GENESIS_HASH.to_owned()),
            };
            let keyed_from = first(tx, "SELECT keyed_from FROM audit_chain WHERE id = 1", (), |r| {
                r.int("keyed_from")
            })?;
            if keyed_from.is_none() {
                // The first keyed row: rows before it are the unkeyed chain of an earlier version.
                exec(tx, "INSERT INTO audit_chain (id, keyed_from) VALUES (1, ?1)", (seq,))?;
            }
            let ev = e.chained_with(Some(&key), seq, &prev);
            exec(
                tx,
                "INSERT INTO audit_events (seq, at, actor, actor_id, actor_role, action, target, source_ip, outcome, \
                 status, details, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                (
                    ev.seq,
                    micros(ev.at),
                    &ev.actor,
                    &ev.actor_id,
                    ev.actor_role.map(Role::as_str),
                    &ev.action,
                    &ev.target,
                    &ev.source_ip,
                    ev.outcome.as_str(),
                    ev.status.map(i64::from),
                    &ev.details,
                    &ev.prev_hash,
                    &ev.hash,
                ),
            )?;
            Ok(ev)
        })
        .await
    }

    async fn audit_keyed_from(&self) -> StoreResult<Option<i64>> {
        self.read_opt("SELECT keyed_from FROM audit_chain WHERE id = 1", (), |r| {
            r.int("keyed_from")
        })
        .await
    }

    async fn audit_events(
        &self,
        filter: &AuditFilter,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        let mut b = Sql::new("SELECT * FROM audit_events WHERE 1 = 1");
        if let Some(a) = &filter.actor {
            b.push(" AND actor = ").bind(a.clone());
        }
        if let Some(a) = &filter.action {
            b.push(" AND action = ").bind(a.clone());
        }
        if let Some(t) = &filter.target {
            b.push(" AND target = ").bind(t.clone());
        }
        let (cmp, dir) = if filter.newest_first {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(s) = after_seq {
            b.push(&format!(" AND seq {cmp} ")).bind(s);
        }
        b.push(&format!(" ORDER BY seq {dir} LIMIT ")).bind(i64::from(limit));
        self.read(move |conn| b.all(conn, audit_from_row)).await
    }
}
