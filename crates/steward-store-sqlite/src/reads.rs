//! The read connections: a small idle list of read-only rusqlite connections (WAL readers never
//! wait for the writer, nor it for them).
//!
//! The hot read: every management message starts with one indexed read of its enrollment's context
//! (`CheckinStore::checkin_context`). Through sqlx that read was a round trip to a pool connection's
//! worker thread: two thread wake-ups and a pool checkout for a statement of tens of microseconds,
//! and after the writer thread (`writer.rs`) those hand-overs were the largest cost left in an idle
//! check-in besides TLS (docs/BENCHMARKS.md, third pass). So that statement runs on the calling
//! task's thread ([`Readers::read`]). That is blocking work on an async worker, accepted for this one
//! read because it is short and bounded: indexed lookups of one device's rows, no lock to wait for
//! and, on a warm page cache, no disk I/O.
//!
//! Every other read ([`Readers::run`]: admin lists, reports, the console) may scan a table, so it
//! runs on Tokio's blocking threads, at most [`CONCURRENT`] at a time (the size of the sqlx read
//! pool these replaced); a read that waits longer than [`QUEUE_TIMEOUT`] for its turn fails with
//! `StoreError::Unavailable`, as a sqlx pool checkout did.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use steward_core::{StoreError, StoreResult};
use tokio::sync::Semaphore;

use crate::error::from_rusqlite;

/// Idle connections kept; more are opened under a burst and closed after it.
const IDLE: usize = 8;

/// Reads on the blocking threads at one time.
const CONCURRENT: usize = 8;

/// How long a read waits for its turn (sqlx's default pool acquire timeout).
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Prepared statements kept per connection: the check-in's few and the admin surfaces' many share
/// the connections, and an admin page must not push the check-in's out.
const STATEMENTS: usize = 64;

#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    turns: Semaphore,
}

impl Readers {
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration) -> Self {
        Self {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            turns: Semaphore::new(CONCURRENT),
        }
    }

    /// Runs `f` on an idle read connection (opening one if none is idle), on this thread.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE {
            idle.push(conn);
        }
        result
    }

    /// [`Readers::read`] on one of Tokio's blocking threads.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let turn = tokio::time::timeout(QUEUE_TIMEOUT, self.turns.acquire())
            .await
            .map_err(|_| StoreError::Unavailable("timed out waiting for a database read connection".into()))?
            .map_err(|_| StoreError::Backend("the database readers are closed".into()))?;
        let readers = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || readers.read(f))
            .await
            .map_err(|e| StoreError::Backend(format!("a database read failed: {e}")))?;
        drop(turn);
        result
    }

    fn open(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(from_rusqlite)?;
        conn.busy_timeout(self.busy_timeout).map_err(from_rusqlite)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        Ok(conn)
    }
}
