//! Parsing device messages without starving the async runtime. Enrollment requests are parsed
//! before anyone is authenticated (the credential is inside the SOAP body), and XML parsing can
//! cost far more than its size suggests: a 256 KiB Discover whose one element carries ~33,000
//! distinct attributes took ~5 s of CPU in the release build (the reader's duplicate-attribute
//! check is quadratic). On an async worker that stalls every connection the worker serves —
//! `/healthz` and device check-ins included.
//!
//! So a body above [`INLINE_PARSE_BYTES`] is parsed on the blocking pool, and only a few at once
//! ([`ParseSlots`]); a bounded number wait for a slot and further ones are refused as retryable.
//! Enrollment requests (anyone may send them) and management messages (from an authenticated
//! device) have separate slots ([`Parsers`]), so hostile enrollment traffic cannot hold up device
//! check-ins, and it never gets every core: one is left to the runtime. Small bodies — the idle
//! check-in, a normal Discover — are parsed inline, where they cost less than the hand-off would.
//!
//! Measured (release build, 2-vCPU reference machine): a 1.2 KB SyncML message or Discover parses
//! in 40–60 µs and a 4.6 KB RequestSecurityToken in ~100 µs, while a round trip through
//! `spawn_blocking` costs ~13 µs; the worst 4 KiB body (~420 distinct attributes) parses in
//! ~0.9 ms, an 8 KiB one in ~9 ms and a 16 KiB one in ~16 ms. 4 KiB keeps every everyday message
//! inline and caps what one hostile message can hold a worker for at about a millisecond.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

/// Bodies up to this many bytes are parsed on the async worker (see the module docs).
pub const INLINE_PARSE_BYTES: usize = 4 * 1024;

/// Parses that may wait for a slot; more are refused at once (each holds its body meanwhile).
const MAX_WAITING: usize = 32;

/// The large-body parses of one server: how many run at once, how many wait.
#[derive(Clone, Debug)]
pub struct ParseSlots {
    running: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

impl ParseSlots {
    /// `slots` parses at once (at least one).
    pub fn new(slots: usize) -> Self {
        Self {
            running: Arc::new(Semaphore::new(slots.max(1))),
            waiting: Arc::default(),
        }
    }
}

/// The parse slots of one server's Windows surfaces.
#[derive(Clone, Debug)]
pub struct Parsers {
    /// Enrollment (SOAP) requests, parsed before anyone is authenticated: one slot fewer than
    /// the cores.
    pub enrollment: ParseSlots,
    /// Management (SyncML) messages of authenticated devices: one slot per core.
    pub management: ParseSlots,
}

impl Parsers {
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            enrollment: ParseSlots::new(cores.saturating_sub(1)),
            management: ParseSlots::new(cores),
        }
    }
}

/// The parser was too busy to take this body now (retryable), or its task failed.
#[derive(Debug, thiserror::Error)]
pub enum ParseRefused {
    #[error("too many large messages at once; try again shortly")]
    Busy,
    #[error("parser task failed: {0}")]
    Failed(String),
}

/// Runs `parse` over a body of `len` bytes: inline when small, else on the blocking pool within
/// `slots`.
pub async fn off_workers<T: Send + 'static>(
    slots: &ParseSlots,
    len: usize,
    parse: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ParseRefused> {
    if len <= INLINE_PARSE_BYTES {
        return Ok(parse());
    }
    let permit = match slots.running.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            if slots.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
                slots.waiting.fetch_sub(1, Ordering::SeqCst);
                return Err(ParseRefused::Busy);
            }
            let acquired = slots.running.clone().acquire_owned().await;
            slots.waiting.fetch_sub(1, Ordering::SeqCst);
            acquired.map_err(|e| ParseRefused::Failed(e.to_string()))?
        }
    };
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        parse()
    })
    .await
    .map_err(|e| ParseRefused::Failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_bodies_inline_large_ones_on_the_pool_and_the_queue_is_bounded() {
        let main = std::thread::current().id();
        let slots = ParseSlots::new(1);
        let here = off_workers(&slots, 100, move || std::thread::current().id())
            .await
            .unwrap();
        assert_eq!(here, main);
        let there = off_workers(&slots, 100_000, move || std::thread::current().id())
            .await
            .unwrap();
        assert_ne!(there, main);

        // One slot held: MAX_WAITING may queue, the next is refused at once.
        let held = slots.running.clone().try_acquire_owned().unwrap();
        slots.waiting.store(MAX_WAITING, Ordering::SeqCst);
        assert!(matches!(
            off_workers(&slots, 100_000, || ()).await,
            Err(ParseRefused::Busy)
        ));
        slots.waiting.store(0, Ordering::SeqCst);
        drop(held);
        assert!(off_workers(&slots, 100_000, || ()).await.is_ok());
    }
}
