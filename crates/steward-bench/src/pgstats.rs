//! PostgreSQL's own counters for the run's database (`pg_stat_database`, `pg_stat_user_tables`,
//! `pg_statio_user_tables`; PostgreSQL 15 manual §28.2, "The Cumulative Statistics System"), read
//! before and after a measured phase. The difference says what the phase did per session in
//! the database: transactions, buffer accesses, and per table the scans, the rows read and written,
//! and the buffers touched. Nothing here needs an extension or a server setting:
//! `pg_stat_statements` has to be preloaded by the whole server, which a benchmark must not
//! change. A backend flushes its counters at the end of a transaction at most once a second, and
//! what it still holds when it goes idle within PGSTAT_IDLE_INTERVAL (10 s, pgstat.c), so a
//! snapshot first waits for that: the counters then cover every session of the phase.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{Connection, Row};

use super::{BenchError, Result};

/// Cumulative counters of one table (its indexes' buffers included in `idx_blks`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TableCounters {
    seq_scan: i64,
    seq_tup_read: i64,
    idx_scan: i64,
    idx_tup_fetch: i64,
    ins: i64,
    upd: i64,
    hot_upd: i64,
    del: i64,
    heap_blks: i64,
    idx_blks: i64,
    /// Not cumulative: the table's dead row versions now (no vacuum has removed them).
    dead: i64,
}

impl TableCounters {
    fn minus(&self, before: &Self) -> Self {
        Self {
            seq_scan: self.seq_scan - before.seq_scan,
            seq_tup_read: self.seq_tup_read - before.seq_tup_read,
            idx_scan: self.idx_scan - before.idx_scan,
            idx_tup_fetch: self.idx_tup_fetch - before.idx_tup_fetch,
            ins: self.ins - before.ins,
            upd: self.upd - before.upd,
            hot_upd: self.hot_upd - before.hot_upd,
            del: self.del - before.del,
            heap_blks: self.heap_blks - before.heap_blks,
            idx_blks: self.idx_blks - before.idx_blks,
            dead: self.dead,
        }
    }

    fn touched(&self) -> bool {
        self.seq_scan + self.idx_scan + self.ins + self.upd + self.del + self.heap_blks + self.idx_blks > 0
    }
}

/// One snapshot of the run database's counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct PgCounters {
    xact_commit: i64,
    tup_returned: i64,
    tup_fetched: i64,
    blks: i64,
    tables: BTreeMap<String, TableCounters>,
}

fn pg(e: sqlx::Error) -> BenchError {
    BenchError::Setup(format!("PostgreSQL statistics: {e}"))
}

impl PgCounters {
    /// The counters of the database `url` names, after the backends had time to flush theirs.
    pub(crate) async fn read(url: &str) -> Result<Self> {
        // PGSTAT_IDLE_INTERVAL (10 s): by then every idle backend has reported what it held.
        tokio::time::sleep(Duration::from_millis(11_000)).await;
        let mut c = sqlx::PgConnection::connect(url).await.map_err(pg)?;
        let db = sqlx::query(
            "SELECT xact_commit, tup_returned, tup_fetched, blks_hit + blks_read AS blks FROM pg_stat_database \
             WHERE datname = current_database()",
        )
        .fetch_one(&mut c)
        .await
        .map_err(pg)?;
        let rows = sqlx::query(
            "SELECT t.relname::text AS relname, t.seq_scan, t.seq_tup_read, COALESCE(t.idx_scan, 0) AS idx_scan, \
             COALESCE(t.idx_tup_fetch, 0) AS idx_tup_fetch, t.n_tup_ins, t.n_tup_upd, t.n_tup_hot_upd, t.n_tup_del, \
             t.n_dead_tup, COALESCE(io.heap_blks_hit, 0) + COALESCE(io.heap_blks_read, 0) AS heap_blks, \
             COALESCE(io.idx_blks_hit, 0) + COALESCE(io.idx_blks_read, 0) AS idx_blks \
             FROM pg_stat_user_tables t JOIN pg_statio_user_tables io ON io.relid = t.relid",
        )
        .fetch_all(&mut c)
        .await
        .map_err(pg)?;
        let mut tables = BTreeMap::new();
        for r in &rows {
            tables.insert(
                r.try_get::<String, _>("relname").map_err(pg)?,
                TableCounters {
                    seq_scan: r.try_get("seq_scan").map_err(pg)?,
                    seq_tup_read: r.try_get("seq_tup_read").map_err(pg)?,
                    idx_scan: r.try_get("idx_scan").map_err(pg)?,
                    idx_tup_fetch: r.try_get("idx_tup_fetch").map_err(pg)?,
                    ins: r.try_get("n_tup_ins").map_err(pg)?,
                    upd: r.try_get("n_tup_upd").map_err(pg)?,
                    hot_upd: r.try_get("n_tup_hot_upd").map_err(pg)?,
                    del: r.try_get("n_tup_del").map_err(pg)?,
                    heap_blks: r.try_get("heap_blks").map_err(pg)?,
                    idx_blks: r.try_get("idx_blks").map_err(pg)?,
                    dead: r.try_get("n_dead_tup").map_err(pg)?,
                },
            );
        }
        c.close().await.map_err(pg)?;
        Ok(Self {
            xact_commit: db.try_get("xact_commit").map_err(pg)?,
            tup_returned: db.try_get("tup_returned").map_err(pg)?,
            tup_fetched: db.try_get("tup_fetched").map_err(pg)?,
            blks: db.try_get("blks").map_err(pg)?,
            tables,
        })
    }

    /// What happened between `before` and `self`, per session of `sessions`, in one line: the
    /// database's totals, then every table the phase touched.
    pub(crate) fn per_session_since(&self, before: &Self, sessions: usize) -> String {
        let n = sessions.max(1) as f64;
        let mut s = format!(
            "per session: {:.1} transactions, {:.0} buffer accesses, {:.1} rows returned, {:.1} rows fetched",
            (self.xact_commit - before.xact_commit) as f64 / n,
            (self.blks - before.blks) as f64 / n,
            (self.tup_returned - before.tup_returned) as f64 / n,
            (self.tup_fetched - before.tup_fetched) as f64 / n,
        );
        for (name, now) in &self.tables {
            let d = now.minus(&before.tables.get(name).copied().unwrap_or_default());
            if !d.touched() {
                continue;
            }
            s.push_str(&format!(
                "; {name}: {:.2} index scans ({:.1} rows), {:.2} seq scans ({:.1} rows), {:.2} ins, {:.2} upd \
                 ({:.2} HOT), {:.2} del, {:.1} heap + {:.1} index buffers, {} dead rows",
                d.idx_scan as f64 / n,
                d.idx_tup_fetch as f64 / n,
                d.seq_scan as f64 / n,
                d.seq_tup_read as f64 / n,
                d.ins as f64 / n,
                d.upd as f64 / n,
                d.hot_upd as f64 / n,
                d.del as f64 / n,
                d.heap_blks as f64 / n,
                d.idx_blks as f64 / n,
                d.dead,
            ));
        }
        s
    }
}

/// `VACUUM (ANALYZE)` of the whole database `url` names: the dead row versions the check-ins left
/// removed and the planner's statistics taken, as autovacuum would have done by then.
pub(crate) async fn vacuum_analyze(url: &str) -> Result<()> {
    let mut c = sqlx::PgConnection::connect(url).await.map_err(pg)?;
    sqlx::raw_sql("VACUUM (ANALYZE)").execute(&mut c).await.map_err(pg)?;
    c.close().await.map_err(pg)?;
    Ok(())
}
