//! The writer thread: every write transaction of the store runs here, one after another, on the
//! store's only read-write connection, which this thread owns.
//!
//! SQLite has one writer, so every write transaction waits for the previous one anyway. Run through
//! sqlx, each statement of a transaction was a round trip to the connection's worker thread, awaited
//! on the server's async workers: under check-in load the write connection was held ~1 ms per
//! commit and sat idle ~40 % of the time between commits while dozens waited, and thread wake-ups
//! were the largest single cost of an idle check-in (docs/BENCHMARKS.md). Here a transaction is
//! plain function calls on one thread that owns its connection: the only hand-overs are the job
//! going in and its answer coming out.
//!
//! The device lifecycle's transactions (`writes.rs`) and the admin surfaces' edits
//! (`SqliteStore::write`) share this one queue, in arrival order: one connection in the process
//! writes, so its writers never contend for SQLite's lock (an admin edit waits behind the queued
//! check-ins, as it waited for sqlx's single write connection before). Another process (the
//! `steward` CLI) holding the lock makes a job wait up to `busy_timeout`, then fail with
//! `StoreError::Unavailable`.
//!
//! A job runs to its end even if its caller has gone away (a device that dropped the connection):
//! its transaction is then committed or rolled back whole, as always.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;
use steward_core::{StoreError, StoreResult};
use tokio::sync::oneshot;

use crate::error::from_rusqlite;

/// A write job: given the write connection, does its work and sends its own answer.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Page cache of the writer's connection. A fleet-wide enqueue writes into the `commands` indexes
/// at random places (ids are random); with SQLite's default 2 MB those pages were read back from
/// the OS again and again (docs/BENCHMARKS.md). Memory is only taken as pages are used.
const CACHE_KIB: i64 = 64 * 1024;

fn stopped() -> StoreError {
    StoreError::Backend("the database writer thread has stopped".into())
}

#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread, which opens (creating if missing) the database file; returns once
    /// it is open. The thread ends when the last [`Writer`] clone is dropped.
    pub(crate) async fn start(path: PathBuf, busy_timeout: Duration) -> StoreResult<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, opened) = oneshot::channel();
        // Opening may wait on `busy_timeout` (switching to WAL), so it happens on the thread too.
        std::thread::Builder::new()
            .name("steward-sqlite-writer".into())
            .spawn(move || match open(&path, busy_timeout) {
                Ok(conn) => {
                    if ready.send(Ok(())).is_ok() {
                        run(conn, &queue);
                    }
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Backend(format!("starting the database writer thread: {e}")))?;
        opened.await.map_err(|_| stopped())??;
        Ok(Self { jobs })
    }

    /// Runs `f` on the writer thread's connection and returns its result.
    pub(crate) async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have gone away; the work is done either way.
            let _ = reply.send(f(conn));
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The settings sqlx applied before (journal mode, synchronous, foreign keys, busy timeout), and the
/// writer's own page cache.
fn open(path: &Path, busy_timeout: Duration) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(from_rusqlite)?;
    conn.busy_timeout(busy_timeout).map_err(from_rusqlite)?;
    // WAL is a property of the file: readers never block the writer, nor it them. The pragma
    // answers with the mode now in force (a file system without shared memory may refuse WAL; the
    // store then works as sqlx left it, in the old mode, only slower).
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(from_rusqlite)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "the database could not be switched to WAL mode");
    }
    conn.pragma_update(None, "foreign_keys", true).map_err(from_rusqlite)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(from_rusqlite)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(from_rusqlite)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn run(mut conn: Connection, queue: &mpsc::Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        run_one(job, &mut conn);
    }
}

/// Runs one job. A panic in it (a bug) fails that job alone: its transaction rolls back as the
/// stack unwinds, its caller gets an error, and the thread goes on serving the others.
fn run_one(job: Job, conn: &mut Connection) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn))).is_err() {
        tracing::error!("a database write job panicked; its transaction was rolled back");
    }
}
