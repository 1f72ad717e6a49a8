//! SQLite backend for Steward's store traits (`steward_core::store`): the embedded default. One file
//! in the data directory, WAL mode so readers never block the writer, and a single-connection write
//! pool so writes queue in the process instead of fighting over SQLite's one write lock. Write
//! transactions start with `BEGIN IMMEDIATE` so a concurrent writer in another process (the
//! `steward` CLI) waits on `busy_timeout` instead of failing half-way with SQLITE_BUSY; if it waits
//! longer than that, the call fails with [`StoreError::Unavailable`] (retryable).
//!
//! Each module implements one trait directly for [`SqliteStore`]:
//!
//! | trait | module |
//! |---|---|
//! | `EnrollmentStore` | `enrollment.rs` |
//! | `CommandQueue` | `commands.rs` |
//! | `CheckinStore` | `checkin.rs` (the hot read; its write is in `writes.rs`) |
//! | `InventoryStore` | `inventory.rs` |
//! | `UserStore` | `users.rs` |
//! | `GroupStore` | `groups.rs` |
//! | `AccessStore` | `access.rs` |
//! | `AuditLog` | `audit.rs` |
//! | `EventLog` | `events.rs` |
//! | `WebhookStore` | `webhooks.rs` |
//! | `ReportStore` | `reports.rs` |
//! | `HealthStore` | `health.rs` |
//! | `Inspect` (feature `inspect`) | `inspect.rs` |
//!
//! Two drivers serve them. sqlx pools serve the admin, console and webhook reads and writes and the
//! migrations. The device lifecycle's write transactions (enrollment, check-in commits, renewal,
//! command enqueues) run on a rusqlite connection owned by the writer thread (`writer.rs`,
//! `writes.rs`), and the check-in's context read on a small pool of read-only rusqlite connections
//! (`reads.rs`): docs/BENCHMARKS.md shows why. Each driver has exactly one error converter
//! (`error.rs`).

mod access;
mod audit;
mod checkin;
mod commands;
mod enrollment;
mod error;
mod events;
mod groups;
mod health;
#[cfg(any(test, feature = "inspect"))]
mod inspect;
mod inventory;
mod migrate;
mod reads;
mod reports;
mod rows;
mod users;
mod webhooks;
mod writer;
mod writes;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use steward_core::{StoreError, StoreResult};
use time::OffsetDateTime;

use crate::error::from_sqlx;

pub use migrate::MIGRATIONS;

/// Connection settings of a [`SqliteStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How long a statement waits for another connection's lock (another process writing, e.g. the
    /// `steward` CLI) before the call fails with [`StoreError::Unavailable`].
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) read: SqlitePool,
    pub(crate) write: SqlitePool,
    /// The hot write paths (see `writer.rs`); the rest use `write` directly.
    pub(crate) writer: writer::Writer,
    /// The hot read (see `reads.rs`); the rest use `read`.
    pub(crate) readers: std::sync::Arc<reads::Readers>,
}

/// A statement being bound.
pub(crate) type SqlxQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

pub(crate) fn from_micros(v: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000)
        .map_err(|e| StoreError::Backend(format!("bad timestamp {v}: {e}")))
}

pub(crate) fn opt_micros(v: Option<i64>) -> StoreResult<Option<OffsetDateTime>> {
    v.map(from_micros).transpose()
}

pub(crate) fn parse_id<T: FromStr>(s: &str) -> StoreResult<T> {
    s.parse()
        .map_err(|_| StoreError::Backend(format!("bad id in database: {s}")))
}

pub(crate) fn opt_parse<T: FromStr>(s: Option<String>) -> StoreResult<Option<T>> {
    s.map(|s| parse_id(&s)).transpose()
}

/// A value the database holds that this version cannot read.
pub(crate) fn bad(what: &str) -> StoreError {
    StoreError::Backend(format!("bad {what} in database"))
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// [`SqliteStore::open`] with other connection settings.
    pub async fn open_with(path: &Path, o: SqliteOptions) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(o.busy_timeout);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await
            .map_err(from_sqlx)?;
        migrate::run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(opts.clone().read_only(true))
            .await
            .map_err(from_sqlx)?;
        Ok(Self {
            read,
            writer: writer::Writer::start(write.clone(), opts.get_filename(), o.busy_timeout)?,
            readers: std::sync::Arc::new(reads::Readers::new(opts.get_filename().to_owned(), o.busy_timeout)),
            write,
        })
    }

    pub(crate) async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.write.begin_with("BEGIN IMMEDIATE").await.map_err(from_sqlx)
    }

    /// One statement in its own write transaction (the small admin edits); rows it changed.
    pub(crate) async fn write_one(
        &self,
        sql: &'static str,
        bind: impl FnOnce(SqlxQuery<'static>) -> SqlxQuery<'static>,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let n = bind(sqlx::query(sql))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
        tx.commit().await.map_err(from_sqlx)?;
        Ok(n)
    }

    /// Runs `statements` in order inside `tx`, each with `id` as its one parameter (a delete and the
    /// clean-up before it); rows changed by the last.
    pub(crate) async fn each_for_id(
        tx: &mut sqlx::SqliteConnection,
        statements: &[&'static str],
        id: &str,
    ) -> StoreResult<u64> {
        let mut n = 0;
        for &sql in statements {
            n = sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?
                .rows_affected();
        }
        Ok(n)
    }
}
