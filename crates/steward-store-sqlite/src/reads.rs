//! The hot read: every management message starts with one indexed read of its enrollment's context
//! (`CheckinStore::checkin_context`). Through sqlx that read was a round trip to a pool connection's
//! worker thread: two thread wake-ups and a pool checkout for a statement of tens of microseconds,
//! and after the writer thread (`writer.rs`) those hand-overs were the largest cost left in an idle
//! check-in besides TLS (docs/BENCHMARKS.md, third pass).
//!
//! Here the statement runs on the calling task's thread on a read-only rusqlite connection taken
//! from a small idle list. That is blocking work on an async worker, accepted for this one statement
//! because it is short and bounded: indexed lookups of one device's rows, no lock to wait for (WAL
//! readers never wait for the writer) and, on a warm page cache, no disk I/O. Everything else reads through
//! the sqlx pool.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use steward_core::StoreResult;

use crate::error::from_rusqlite;

/// Idle connections kept; more are opened under a burst and closed after it.
const IDLE: usize = 8;

#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration) -> Self {
        Self {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on an idle read connection (opening one if none is idle).
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

    fn open(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(from_rusqlite)?;
        conn.busy_timeout(self.busy_timeout).map_err(from_rusqlite)?;
        conn.set_prepared_statement_cache_capacity(8);
        Ok(conn)
    }
}
