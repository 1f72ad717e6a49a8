//! The writer thread: the device lifecycle's write transactions (`writes.rs`) run here, one after
//! another, on the store's own rusqlite connection.
//!
//! SQLite has one writer, so every write transaction waits for the previous one anyway. Run through
//! sqlx, each statement of a transaction was a round trip to the connection's worker thread, awaited
//! on the server's async workers: under check-in load the write connection was held ~1 ms per
//! commit and sat idle ~40 % of the time between commits while dozens waited, and thread wake-ups
//! were the largest single cost of an idle check-in (docs/BENCHMARKS.md). Here a transaction is
//! plain function calls on one thread that owns its connection: the only hand-overs are the job
//! going in and its answer coming out.
//!
//! The other writers (admin API edits, webhooks, the console) still write through the sqlx write
//! pool of one connection. That connection is the process's write lock: this thread holds it (as a
//! token, unused) while it runs a batch of up to [`BATCH`] jobs, so the two never contend for
//! SQLite's lock; between batches the pool's writers get their turn. Another process (the `steward`
//! CLI) waits on `busy_timeout`, as before.
//!
//! A job runs to its end even if its caller has gone away (a device that dropped the connection):
//! its transaction is then committed or rolled back whole, as always.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;
use sqlx::SqlitePool;
use steward_core::{StoreError, StoreResult};
use tokio::sync::oneshot;

use crate::error::{from_rusqlite, from_sqlx};

/// A write job: given the write connection (or the error getting the write lock), does its work and
/// sends its own answer.
type Job = Box<dyn FnOnce(StoreResult<&mut Connection>) + Send>;

/// Jobs run under one hold of the write lock before the pool's writers get a turn.
const BATCH: usize = 64;

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
    /// Opens the writer's connection and starts its thread. `lock` is the sqlx write pool (one
    /// connection) whose connection serves as the write lock. The thread uses the caller's Tokio
    /// runtime to take that lock and ends when the last [`Writer`] clone is dropped.
    pub(crate) fn start(lock: SqlitePool, path: &Path, busy_timeout: Duration) -> StoreResult<Self> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| StoreError::Backend(format!("the SQLite store needs a Tokio runtime: {e}")))?;
        let conn = open(path, busy_timeout)?;
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("steward-sqlite-writer".into())
            .spawn(move || run(&handle, &lock, conn, &queue))
            .map_err(|e| StoreError::Backend(format!("starting the database writer thread: {e}")))?;
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
            let _ = reply.send(conn.and_then(f));
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn open(path: &Path, busy_timeout: Duration) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(from_rusqlite)?;
    // The same settings as the sqlx connections (lib.rs); WAL is a property of the file, set there.
    conn.busy_timeout(busy_timeout).map_err(from_rusqlite)?;
    conn.pragma_update(None, "foreign_keys", true).map_err(from_rusqlite)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(from_rusqlite)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(from_rusqlite)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn run(handle: &tokio::runtime::Handle, lock: &SqlitePool, mut conn: Connection, queue: &mpsc::Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        // Blocking on the runtime from this thread (not one of its workers) only to take and give
        // back the lock; the jobs themselves are synchronous.
        handle.block_on(async {
            match lock.acquire().await {
                Err(e) => job(Err(from_sqlx(e))),
                Ok(_held) => {
                    run_one(job, &mut conn);
                    for _ in 1..BATCH {
                        let Ok(job) = queue.try_recv() else { break };
                        run_one(job, &mut conn);
                    }
                }
            }
        });
    }
}

/// Runs one job. A panic in it (a bug) fails that job alone: its transaction rolls back as the
/// stack unwinds, its caller gets an error, and the thread goes on serving the others.
fn run_one(job: Job, conn: &mut Connection) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(conn)))).is_err() {
        tracing::error!("a database write job panicked; its transaction was rolled back");
    }
}
