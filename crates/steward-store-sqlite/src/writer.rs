//! The hot write path's own thread.
//!
//! SQLite has one writer, so the store has one write connection, and every statement of a write
//! transaction is a round trip to that connection's sqlx worker thread. Awaited on the server's
//! async workers, each of those wake-ups queued behind whatever else was ready there (TLS, parsing
//! of other requests), and so did handing the connection to the next transaction (sqlx returns a
//! connection to its pool in a spawned task). Measured under check-in load, the write connection
//! was held ~1 ms per three-statement commit and idle ~40 % of the time between commits while
//! dozens of commits waited for it: commits per second, not CPU, bounded check-ins
//! (docs/BENCHMARKS.md).
//!
//! Here one OS thread takes write jobs from a queue and runs them back to back on the write
//! connection, each in its own transaction, so a round trip is two thread wake-ups and a hand-over
//! costs nothing. After [`BATCH`] jobs, or when the queue is empty, the connection goes back to the
//! pool so the other writers (admin API, webhooks, which use the pool directly) get their turn.
//! A job runs to its end even if its caller has gone away (a device that dropped the connection):
//! its transaction is then committed or rolled back whole, as always.

use std::future::Future;
use std::pin::Pin;

use sqlx::{SqliteConnection, SqlitePool};
use steward_domain::{StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A write job: given the write connection (or the error getting it), does its work and sends its
/// own answer.
type Job = Box<dyn for<'c> FnOnce(StoreResult<&'c mut SqliteConnection>) -> BoxFuture<'c, ()> + Send>;

/// Jobs run on one checkout of the write connection before it goes back to the pool.
const BATCH: usize = 64;

fn stopped() -> StoreError {
    StoreError::Backend("the database writer thread has stopped".into())
}

#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the writer thread on `pool`'s connection. It runs its jobs on the caller's Tokio
    /// runtime (timers, sqlx's pool tasks) and ends when the last [`Writer`] clone is dropped.
    pub(crate) fn start(pool: SqlitePool) -> StoreResult<Self> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| StoreError::Backend(format!("the SQLite store needs a Tokio runtime: {e}")))?;
        let (jobs, queue) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("steward-sqlite-writer".into())
            .spawn(move || handle.block_on(run(pool, queue)))
            .map_err(|e| StoreError::Backend(format!("starting the database writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the write connection, on the writer thread, and returns its result. `f` must use
    /// only the connection it is given: anything else that needs the write connection would wait
    /// for this job to end.
    pub(crate) async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = match conn {
                    Ok(conn) => f(conn).await,
                    Err(e) => Err(e),
                };
                // The caller may have gone away; the work is done either way.
                let _ = reply.send(result);
            })
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(pool: SqlitePool, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = queue.recv().await {
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                job(Err(StoreError::Backend(e.to_string()))).await;
                continue;
            }
        };
        job(Ok(&mut conn)).await;
        for _ in 1..BATCH {
            let Ok(job) = queue.try_recv() else { break };
            job(Ok(&mut conn)).await;
        }
    }
}
