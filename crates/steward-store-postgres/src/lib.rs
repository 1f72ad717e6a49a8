//! PostgreSQL backend for Steward's store traits (`steward_core::store`), for installations that
//! outgrow one SQLite file or run several replicas against one database. It implements the same
//! traits, passes the same conformance stories and has the same migration list (names and order)
//! as the SQLite backend, written expand/contract so an old and a new release can share a database
//! during an upgrade (migrations/0001_initial.sql).
//!
//! Each module implements one trait directly for [`PgStore`]:
//!
//! | trait | module |
//! |---|---|
//! | `EnrollmentStore` | `enrollment.rs` (its commits in `writes.rs`) |
//! | `CommandQueue` | `commands.rs` |
//! | `CheckinStore` | `checkin.rs` (the hot read; its write is in `writes.rs`) |
//! | `InventoryStore` | `inventory.rs` |
//! | `UserStore` | `users.rs` |
//! | `GroupStore` | `groups.rs` |
//! | `ProfileStore` | `profiles.rs` (the device's rows written by the check-in commit) |
//! | `AccessStore` | `access.rs` |
//! | `AuditLog` | `audit.rs` |
//! | `EventLog` | `events.rs` |
//! | `WebhookStore` | `webhooks.rs` |
//! | `ReportStore` | `reports.rs` |
//! | `HealthStore` | `health.rs` |
//! | `Inspect` (feature `inspect`) | `inspect.rs` |
//!
//! One driver, sqlx's PostgreSQL one, over one pool (`max_connections`, every connection with the
//! configured `statement_timeout`); docs/ARCHITECTURE.md says why sqlx and not tokio-postgres.
//! TLS to the database is optional and chosen by the URL (`sslmode=require`, `verify-ca`,
//! `verify-full`, with `sslrootcert`), through rustls.
//!
//! SQLite has one writer; PostgreSQL has many, at READ COMMITTED. Where the SQLite store relied on
//! its write lock, this one says what it serialises on, in a way that holds across replicas too:
//! - the audit chain and the device event outbox take a transaction-level advisory lock (the audit
//!   head is read and extended under it; an event's `seq` is drawn under it, so `seq` order is commit
//!   order and a reader past a `seq` never sees an earlier one commit later);
//! - a check-in commit first updates its enrollment row, which serialises two messages of one
//!   device (on any replica) and holds off an admin ending that enrollment meanwhile;
//! - a command's outcome is an `INSERT … ON CONFLICT DO NOTHING` on its result row, so it is taken
//!   once however many transactions race;
//! - tokens and enrollments are read `FOR UPDATE`, and the unique index on a device's active
//!   enrollment turns two racing first enrollments into one success and one conflict;
//! - every profile write first moves the configuration epoch (an UPDATE of its one row, whose lock
//!   serialises profile writes), and an update's expected version is the UPDATE's own condition.

/// The first key of every advisory lock this store takes: the schema's name, hashed, so two
/// Steward installations in two schemas of one database do not wait for each other.
macro_rules! lock_namespace {
    () => {
        "hashtext(current_schema())"
    };
}

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
mod reports;
mod rows;
mod users;
mod webhooks;
mod writes;

#[cfg(test)]
mod tests;

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use steward_core::{StoreError, StoreResult};
use time::OffsetDateTime;

use crate::error::from_sqlx;

pub use migrate::MIGRATIONS;

/// Connection settings of a [`PgStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgOptions {
    /// Connections the pool opens at most (each replica's own limit; size the server's
    /// `max_connections` for the sum).
    pub max_connections: u32,
    /// `statement_timeout` of every connection: a statement running longer is cancelled and the
    /// call fails with [`StoreError::Unavailable`] (retryable), instead of holding a connection.
    pub statement_timeout: Duration,
    /// How long a call waits for a free pooled connection before [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            statement_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// The store on one PostgreSQL database (or one schema of it: `search_path` in the URL's
/// `options`).
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
}

/// Advisory lock keys (the second half; the first is the schema's, [`lock_namespace!`]).
pub(crate) const LOCK_MIGRATIONS: i32 = 1;
pub(crate) const LOCK_AUDIT: i32 = 2;
pub(crate) const LOCK_EVENTS: i32 = 3;
pub(crate) const LOCK_BOOTSTRAP: i32 = 4;

/// Takes a transaction-level advisory lock (released at commit or rollback; taking it again in the
/// same transaction is free).
pub(crate) const LOCK_XACT: &str = concat!("SELECT pg_advisory_xact_lock(", lock_namespace!(), ", $1)");

pub(crate) async fn lock(tx: &mut sqlx::PgConnection, key: i32) -> StoreResult<()> {
    sqlx::query(LOCK_XACT)
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
    Ok(())
}

/// A statement being bound.
pub(crate) type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

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

impl PgStore {
    /// Connects to the database `url` names (`postgres://user:pass@host:port/db?sslmode=…`) and
    /// applies pending migrations.
    pub async fn connect(url: &str, o: PgOptions) -> StoreResult<Self> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("database.url: {e}")))?
            .application_name("steward")
            .options([("statement_timeout", o.statement_timeout.as_millis().to_string())]);
        let pool = PgPoolOptions::new()
            .max_connections(o.max_connections)
            .acquire_timeout(o.acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(from_sqlx)?;
        migrate::run(&pool).await?;
        Ok(Self { pool })
    }

    /// Closes the pool's connections (waits for those in use to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await.map_err(from_sqlx)
    }

    /// One statement on its own (autocommit; the small admin edits); rows it changed.
    pub(crate) async fn write_one(
        &self,
        sql: &'static str,
        bind: impl FnOnce(PgQuery<'static>) -> PgQuery<'static>,
    ) -> StoreResult<u64> {
        Ok(bind(sqlx::query(sql))
            .execute(&self.pool)
            .await
            .map_err(from_sqlx)?
            .rows_affected())
    }

    /// Runs `statements` in order inside `tx`, each with `id` as its one parameter (a delete and the
    /// clean-up before it); rows changed by the last.
    pub(crate) async fn each_for_id(
        tx: &mut sqlx::PgConnection,
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
