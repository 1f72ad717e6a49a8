//! SQLite backend for Steward's store traits (`steward_core::store`): the embedded default. One file
//! in the data directory, WAL mode so readers never block the writer, and a single writer thread
//! with the only read-write connection so writes queue in the process instead of fighting over
//! SQLite's one write lock. Write
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
//! | `ProfileStore` | `profiles.rs` (the check-in's part: `checkin.rs`, `writes.rs`) |
//! | `AccessStore` | `access.rs` |
//! | `AuditLog` | `audit.rs` |
//! | `EventLog` | `events.rs` |
//! | `WebhookStore` | `webhooks.rs` |
//! | `ReportStore` | `reports.rs` |
//! | `HealthStore` | `health.rs` |
//! | `Inspect` (feature `inspect`) | `inspect.rs` |
//!
//! One driver serves them all: rusqlite, with SQLite built in (`bundled`). Every write transaction
//! (the device lifecycle's and the admin surfaces' alike) is a job for the one writer thread that
//! owns the store's only read-write connection (`writer.rs`; the lifecycle's transactions are in
//! `writes.rs`), so writes queue in the process and never fight over SQLite's lock. Reads run on a
//! small pool of read-only connections (`reads.rs`): the check-in's context read on the calling
//! thread, every other read on Tokio's blocking threads so a large admin scan never stalls the
//! async workers. Migrations run on the writer's connection before it serves anything
//! (`migrate.rs`). docs/BENCHMARKS.md ("SQLite on one driver") has the measurements of replacing
//! sqlx, which served the admin paths before; `error.rs` is the one error converter.

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
mod profiles;
mod reads;
mod reports;
mod rollouts;
mod rows;
mod users;
mod webhooks;
mod writer;
mod writes;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, Params, Transaction};
use steward_core::{StoreError, StoreResult};
use time::OffsetDateTime;

use crate::error::from_rusqlite;
use crate::rows::NamedRow;

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
    /// Every write (see `writer.rs`).
    pub(crate) writer: writer::Writer,
    /// Every read (see `reads.rs`).
    pub(crate) readers: Arc<reads::Readers>,
}

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
        // The writer creates the file and switches it to WAL before any reader opens it read-only.
        let writer = writer::Writer::start(path.to_owned(), o.busy_timeout).await?;
        writer.run(migrate::run).await?;
        Ok(Self {
            writer,
            readers: Arc::new(reads::Readers::new(path.to_owned(), o.busy_timeout)),
        })
    }

    /// `f` in one `BEGIN IMMEDIATE` transaction on the writer thread, committed if it returns Ok
    /// (rolled back otherwise).
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.writer
            .run(move |conn| {
                let tx = writes::immediate(conn)?;
                let out = f(&tx)?;
                tx.commit().map_err(from_rusqlite)?;
                Ok(out)
            })
            .await
    }

    /// One statement in its own write transaction (the small admin edits); rows it changed.
    pub(crate) async fn write_one(&self, sql: &'static str, params: impl Params + Send + 'static) -> StoreResult<u64> {
        self.write(move |tx| rows::exec(tx, sql, params).map(|n| n as u64))
            .await
    }

    /// `f` on a read connection, off the async workers (`reads.rs`).
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.readers.run(f).await
    }

    /// Every row of a read query, mapped.
    pub(crate) async fn read_all<T, M>(
        &self,
        sql: &'static str,
        params: impl Params + Send + 'static,
        map: M,
    ) -> StoreResult<Vec<T>>
    where
        T: Send + 'static,
        M: Fn(&NamedRow<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.read(move |conn| rows::all(conn, sql, params, map)).await
    }

    /// The first row of a read query, mapped, if there is one.
    pub(crate) async fn read_opt<T, M>(
        &self,
        sql: &'static str,
        params: impl Params + Send + 'static,
        map: M,
    ) -> StoreResult<Option<T>>
    where
        T: Send + 'static,
        M: FnOnce(&NamedRow<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.read(move |conn| rows::first(conn, sql, params, map)).await
    }

    /// Runs `statements` in order inside `tx`, each with `id` as its one parameter (a delete and the
    /// clean-up before it); rows changed by the last.
    pub(crate) fn each_for_id(tx: &Transaction<'_>, statements: &[&'static str], id: &str) -> StoreResult<u64> {
        let mut n = 0;
        for &sql in statements {
            n = rows::exec(tx, sql, (id,))? as u64;
        }
        Ok(n)
    }
}
