//! The one password check, for every surface that takes a password (the console sign-in, the
//! Windows enrollment UsernameToken, the federated sign-in page), with one throttling and lockout
//! policy and a bounded number of hashes at once.
//!
//! - **Throttling before hashing.** An attempt reserves its place in the failure counts before the
//!   (slow) hash runs and keeps it unless the password was right, so a burst of concurrent guesses
//!   cannot race past the limit.
//! - **Keys.** Failures count per (user, peer address) — that pair is refused after
//!   [`PasswordPolicy::max_failures_per_user_and_address`] in the window — and per address over all
//!   users. A user's failures from all addresses together never lock the user out (anyone could do
//!   that from anywhere): past [`PasswordPolicy::user_slowdown_after`] they only slow that user's
//!   attempts to one per [`PasswordPolicy::user_slow_interval`].
//! - **Bounded hashing.** Argon2id holds ~19 MiB per check; at most
//!   [`PasswordPolicy::max_concurrent_hashes`] run at once and a short queue waits for a slot;
//!   past that the check is refused at once as busy (retryable), so a flood of password attempts
//!   cannot exhaust memory. The hashes run on that many dedicated threads ([`Hashers`]), each
//!   reusing one Argon2 buffer, so hashing never holds more than slots × 19 MiB whatever the
//!   allocator does with large frees (a fresh buffer per hash on tokio's blocking pool, with
//!   glibc: +137 MiB resident after 12 hashes two at a time; docs/BENCHMARKS.md).
//! - **No user enumeration.** An unknown user's check hashes against a fixed dummy hash with the
//!   same parameters, through the same queue.
//!
//! Counts are in memory: a restart resets them and each replica counts on its own
//! (docs/OPERATIONS.md).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::console::ConsoleUser;
use crate::model::User;
use crate::store::{StoreError, UserStore};

/// Memory one Argon2id check uses (the crate's default parameters, which `hash_password` writes
/// into every stored hash): used to size [`PasswordPolicy::max_concurrent_hashes`].
pub const ARGON2_MEMORY_BYTES: u64 = 19 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    /// The window failures are counted in.
    pub window: Duration,
    /// Failures of one user from one address before that pair is refused for the window.
    pub max_failures_per_user_and_address: u32,
    /// Failures from one address (any users) before the address is refused for the window.
    pub max_failures_per_address: u32,
    /// Failures of one user (all addresses) after which that user's attempts are slowed…
    pub user_slowdown_after: u32,
    /// …to one per this interval.
    pub user_slow_interval: Duration,
    /// Password hashes computed at once.
    pub max_concurrent_hashes: usize,
    /// Checks that may wait for a hashing slot; more are refused at once.
    pub max_queued_hashes: usize,
    /// How long a queued check waits for a slot before it is refused as busy.
    pub queue_wait: Duration,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(15 * 60),
            max_failures_per_user_and_address: 5,
            max_failures_per_address: 20,
            user_slowdown_after: 20,
            user_slow_interval: Duration::from_secs(10),
            max_concurrent_hashes: 4,
            max_queued_hashes: 16,
            queue_wait: Duration::from_secs(2),
        }
    }
}

impl PasswordPolicy {
    /// Hashing slots for a machine with `cores` and `memory_bytes` of memory: two per core, and
    /// never more than an eighth of the memory in Argon2 buffers (at least one).
    pub fn hashes_for(cores: usize, memory_bytes: u64) -> usize {
        let by_memory = (memory_bytes / 8 / ARGON2_MEMORY_BYTES).max(1) as usize;
        (cores.max(1) * 2).min(by_memory).max(1)
    }
}

/// Why a password check did not let the caller in.
#[derive(Debug, thiserror::Error)]
pub enum PasswordRefused {
    /// Unknown user, wrong password (indistinguishable on purpose), or — for the console — a user
    /// without console access or disabled.
    #[error("wrong e-mail or password")]
    Wrong,
    /// The password was right but the user is disabled.
    #[error("this user is disabled")]
    Disabled,
    /// Too many failures: try again after `retry_after`.
    #[error("too many failed sign-ins; try again in {} seconds", retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    /// Too many password checks at once: retryable.
    #[error("too many sign-ins at once; try again shortly")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Default)]
struct Counts {
    failures: u32,
    since: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl Counts {
    fn current(&mut self, window: Duration, now: Instant) -> &mut Self {
        if self.since.is_none_or(|s| now.duration_since(s) >= window) {
            *self = Counts {
                failures: 0,
                since: Some(now),
                last_attempt: self.last_attempt,
            };
        }
        self
    }
    fn retry_after(&self, window: Duration, now: Instant) -> Duration {
        self.since
            .map_or(window, |s| window.saturating_sub(now.duration_since(s)))
    }
}

/// Bound on tracked keys: past it, expired entries are dropped, then the oldest.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Default)]
struct Limiter {
    keys: Mutex<HashMap<String, Counts>>,
}

fn pair_key(email: &str, peer: Option<IpAddr>) -> String {
    format!("pair:{email}|{}", peer.map_or("unknown".to_owned(), |p| p.to_string()))
}
fn addr_key(peer: Option<IpAddr>) -> String {
    format!("ip:{}", peer.map_or("unknown".to_owned(), |p| p.to_string()))
}
fn user_key(email: &str) -> String {
    format!("user:{email}")
}

impl Limiter {
    /// Checks the limits and, if the attempt may go ahead, counts it as a failure until
    /// [`Limiter::succeeded`] says otherwise.
    fn reserve(&self, p: &PasswordPolicy, email: &str, peer: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut map) = self.keys.lock() else {
            return Err(p.window);
        };
        if map.len() >= MAX_TRACKED {
            map.retain(|_, c| c.since.is_some_and(|s| now.duration_since(s) < p.window));
            while map.len() >= MAX_TRACKED {
                let Some(oldest) = map.iter().min_by_key(|(_, c)| c.since).map(|(k, _)| k.clone()) else {
                    break;
                };
                map.remove(&oldest);
            }
        }
        let (pair, addr, user) = (pair_key(email, peer), addr_key(peer), user_key(email));
        for (key, limit) in [
            (&pair, p.max_failures_per_user_and_address),
            (&addr, p.max_failures_per_address),
        ] {
            let c = map.entry(key.clone()).or_default().current(p.window, now);
            if c.failures >= limit {
                return Err(c.retry_after(p.window, now));
            }
        }
        let u = map.entry(user.clone()).or_default().current(p.window, now);
        if u.failures >= p.user_slowdown_after
            && let Some(last) = u.last_attempt
            && now.duration_since(last) < p.user_slow_interval
        {
            return Err(p.user_slow_interval - now.duration_since(last));
        }
        u.last_attempt = Some(now);
        for key in [pair, addr, user] {
            map.entry(key).or_default().current(p.window, now).failures += 1;
        }
        Ok(())
    }

    /// The reserved attempt had the right password: it was not a failure.
    fn release(&self, email: &str, peer: Option<IpAddr>) {
        let Ok(mut map) = self.keys.lock() else { return };
        for key in [pair_key(email, peer), addr_key(peer), user_key(email)] {
            if let Some(c) = map.get_mut(&key) {
                c.failures = c.failures.saturating_sub(1);
            }
        }
    }

    /// The user signed in from this address: their failures from it are forgiven.
    fn forgive(&self, email: &str, peer: Option<IpAddr>) {
        if let Ok(mut map) = self.keys.lock() {
            map.remove(&pair_key(email, peer));
        }
    }

    fn succeeded(&self, email: &str, peer: Option<IpAddr>) {
        self.release(email, peer);
        self.forgive(email, peer);
    }

    /// An extra failure outside a password check (a wrong second-factor code).
    fn fail(&self, p: &PasswordPolicy, email: &str, peer: Option<IpAddr>) {
        let now = Instant::now();
        let Ok(mut map) = self.keys.lock() else { return };
        for key in [pair_key(email, peer), addr_key(peer), user_key(email)] {
            map.entry(key).or_default().current(p.window, now).failures += 1;
        }
    }

    fn blocked(&self, p: &PasswordPolicy, email: &str, peer: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let Ok(mut map) = self.keys.lock() else {
            return Some(p.window);
        };
        for (key, limit) in [
            (pair_key(email, peer), p.max_failures_per_user_and_address),
            (addr_key(peer), p.max_failures_per_address),
        ] {
            if let Some(c) = map.get_mut(&key) {
                let c = c.current(p.window, now);
                if c.failures >= limit {
                    return Some(c.retry_after(p.window, now));
                }
            }
        }
        None
    }
}

/// A valid Argon2 hash of nothing anyone knows, verified when the user is unknown so that a wrong
/// e-mail takes as long as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut pw = [0u8; 24];
        let _ = aws_lc_rs::rand::fill(&mut pw);
        crate::secret::hash_password(&hex::encode(pw)).unwrap_or_default()
    })
}

thread_local! {
    /// This hashing thread's Argon2 working memory, kept between checks. Allocated once, so the
    /// memory hashing holds is one buffer per thread whatever the allocator does with large frees
    /// (glibc kept up to eight freed 19 MiB buffers per thread: +150 MiB resident).
    static ARGON2_MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most Argon2 memory a stored hash may ask for (4× the parameters we write); a hash asking
/// for more is refused instead of allocated.
const MAX_ARGON2_BLOCKS: usize = 4 * (ARGON2_MEMORY_BYTES / 1024) as usize;

/// The PHC check of [`crate::secret::verify_password`] (algorithm, version and parameters from the
/// stored hash; constant-time comparison of the output) on this thread's reused memory.
fn verify_on_this_thread(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{Output, PasswordHash};
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let Ok(version) = hash
        .version
        .map_or(Ok(argon2::Version::default()), argon2::Version::try_from)
    else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(&hash) else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_ARGON2_BLOCKS {
        return false;
    }
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let argon = argon2::Argon2::new(algorithm, version, params);
    let hashed = ARGON2_MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        argon.hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
    });
    hashed.is_ok() && Output::new(out).is_ok_and(|computed| computed == expected)
}

type HashJob = Box<dyn FnOnce() + Send>;

/// The threads password hashes run on: as many as there are hashing slots, started on first use,
/// ended when the last [`Passwords`] clone is dropped.
struct Hashers {
    threads: usize,
    jobs: OnceLock<Option<std::sync::mpsc::Sender<HashJob>>>,
}

impl Hashers {
    fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            jobs: OnceLock::new(),
        }
    }

    fn start(threads: usize) -> Option<std::sync::mpsc::Sender<HashJob>> {
        let (tx, rx) = std::sync::mpsc::channel::<HashJob>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("steward-hash-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panicking hash fails its own check (its result sender is dropped),
                        // not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            if spawned.is_ok() {
                started += 1;
            }
        }
        (started > 0).then_some(tx)
    }

    /// Runs `f` on a hashing thread; `None` if no thread could be started.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<tokio::sync::oneshot::Receiver<T>> {
        let jobs = self.jobs.get_or_init(|| Self::start(self.threads)).as_ref()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        jobs.send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .ok()?;
        Some(rx)
    }
}

#[derive(Clone)]
pub struct Passwords {
    users: Arc<dyn UserStore>,
    policy: Arc<PasswordPolicy>,
    limiter: Arc<Limiter>,
    hashing: Arc<Semaphore>,
    hashers: Arc<Hashers>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl Passwords {
    pub fn new(users: Arc<dyn UserStore>, policy: PasswordPolicy) -> Self {
        let slots = policy.max_concurrent_hashes.max(1);
        Self {
            hashing: Arc::new(Semaphore::new(slots)),
            hashers: Arc::new(Hashers::new(slots)),
            users,
            policy: Arc::new(policy),
            limiter: Arc::default(),
            queued: Arc::default(),
        }
    }

    /// Starts the hashing threads and computes the dummy hash (one Argon2 hash, once per process)
    /// in the background, so that the first unknown user's check takes no longer than a known
    /// user's. The server calls it at start.
    pub fn warm_up(&self) {
        let _ = self.hashers.run(|| {
            dummy_hash();
        });
    }

    pub fn policy(&self) -> &PasswordPolicy {
        &self.policy
    }

    /// A user of the user store (device enrollment, the federated sign-in page). A right password
    /// of a disabled user is refused as [`PasswordRefused::Disabled`].
    pub async fn check_user(&self, email: &str, password: &str, peer: Option<IpAddr>) -> Result<User, PasswordRefused> {
        let email = email.trim().to_lowercase();
        self.reserve(&email, peer)?;
        let user = self.users.user_by_email(&email).await?;
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        let ok = self.verify_reserved(&email, peer, password, phc).await?;
        match user {
            Some(u) if ok => {
                self.limiter.succeeded(&email, peer);
                if u.disabled {
                    Err(PasswordRefused::Disabled)
                } else {
                    Ok(u)
                }
            }
            _ => Err(PasswordRefused::Wrong),
        }
    }

    /// A user with console access who is not disabled. The attempt stays counted against the
    /// limits until [`Passwords::signed_in`] (the console may still ask for a second factor).
    pub async fn check_console_user(
        &self,
        email: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<ConsoleUser, PasswordRefused> {
        let email = email.trim().to_lowercase();
        self.reserve(&email, peer)?;
        let user = self
            .users
            .console_user_by_email(&email)
            .await?
            .filter(|u| !u.user.disabled);
        let phc = user.as_ref().map(|u| u.user.password_hash.clone());
        let right = self.verify_reserved(&email, peer, password, phc).await?;
        match user {
            Some(u) if right => {
                // Not a failure; the address's earlier failures are forgiven only once the sign-in
                // completes (a second factor may still be due, and shares this budget).
                self.limiter.release(&email, peer);
                Ok(u)
            }
            _ => Err(PasswordRefused::Wrong),
        }
    }

    /// The console sign-in completed (password and, if due, second factor): its attempts are
    /// forgiven.
    pub fn signed_in(&self, email: &str, peer: Option<IpAddr>) {
        self.limiter.forgive(&email.trim().to_lowercase(), peer);
    }

    /// A wrong second-factor code: it counts against the same limits as a wrong password.
    pub fn second_factor_failed(&self, email: &str, peer: Option<IpAddr>) {
        self.limiter.fail(&self.policy, &email.trim().to_lowercase(), peer);
    }

    /// Whether this user is refused from this address now (without counting an attempt).
    pub fn throttled(&self, email: &str, peer: Option<IpAddr>) -> Option<Duration> {
        self.limiter.blocked(&self.policy, &email.trim().to_lowercase(), peer)
    }

    fn reserve(&self, email: &str, peer: Option<IpAddr>) -> Result<(), PasswordRefused> {
        self.limiter
            .reserve(&self.policy, email, peer)
            .map_err(|retry_after| PasswordRefused::Throttled { retry_after })
    }

    /// [`Passwords::verify`] for an attempt reserved against the limits: refused as busy, no
    /// password was tried, so the reservation is given back (a flood that only meets a full queue
    /// must not lock a user or an address out).
    async fn verify_reserved(
        &self,
        email: &str,
        peer: Option<IpAddr>,
        password: &str,
        phc: Option<String>,
    ) -> Result<bool, PasswordRefused> {
        let verified = self.verify(password, phc).await;
        if matches!(verified, Err(PasswordRefused::Busy)) {
            self.limiter.release(email, peer);
        }
        verified
    }

    /// Runs the hash on a blocking thread once a slot is free (or refuses as busy).
    async fn verify(&self, password: &str, phc: Option<String>) -> Result<bool, PasswordRefused> {
        use std::sync::atomic::Ordering;
        let permit = match self.hashing.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.queued.fetch_add(1, Ordering::SeqCst) >= self.policy.max_queued_hashes {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    return Err(PasswordRefused::Busy);
                }
                let waited = tokio::time::timeout(self.policy.queue_wait, self.hashing.clone().acquire_owned()).await;
                self.queued.fetch_sub(1, Ordering::SeqCst);
                match waited {
                    Ok(Ok(p)) => p,
                    _ => return Err(PasswordRefused::Busy),
                }
            }
        };
        let password = zeroize::Zeroizing::new(password.to_owned());
        let known = phc.is_some();
        let hashed = self.hashers.run(move || {
            let _permit = permit;
            verify_on_this_thread(&password, phc.as_deref().unwrap_or_else(|| dummy_hash()))
        });
        let Some(hashed) = hashed else {
            return Err(PasswordRefused::Busy);
        };
        let ok = hashed.await.unwrap_or(false);
        Ok(ok && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy {
            user_slow_interval: Duration::from_secs(3600),
            ..PasswordPolicy::default()
        }
    }

    #[test]
    fn a_pair_is_refused_after_its_failures_and_forgiven_on_success() {
        let (l, p) = (Limiter::default(), policy());
        let ip: Option<IpAddr> = "10.0.0.1".parse().ok();
        for _ in 0..5 {
            assert!(l.reserve(&p, "ada@x", ip).is_ok());
        }
        assert!(l.reserve(&p, "ada@x", ip).is_err());
        assert!(l.blocked(&p, "ada@x", ip).is_some());
        // The same user from another address is not locked out by these failures.
        let other: Option<IpAddr> = "10.0.0.2".parse().ok();
        assert!(l.reserve(&p, "ada@x", other).is_ok());
        l.succeeded("ada@x", other);
        assert!(l.blocked(&p, "ada@x", other).is_none());
    }

    #[test]
    fn failures_from_many_addresses_slow_a_user_without_locking_them_out() {
        let (l, p) = (Limiter::default(), policy());
        for i in 0..20u8 {
            let ip: Option<IpAddr> = format!("10.0.1.{i}").parse().ok();
            assert!(l.reserve(&p, "bob@x", ip).is_ok());
        }
        // The 21st attempt comes right after the 20th: slowed (not for the window, for the interval).
        let ip: Option<IpAddr> = "10.0.2.1".parse().ok();
        let wait = l.reserve(&p, "bob@x", ip).unwrap_err();
        assert!(wait <= p.user_slow_interval);
        // Another user from the same addresses is unaffected.
        assert!(l.reserve(&p, "carol@x", ip).is_ok());
    }

    #[test]
    fn an_address_is_refused_after_failures_across_users() {
        let (l, p) = (Limiter::default(), policy());
        let ip: Option<IpAddr> = "10.0.3.1".parse().ok();
        for i in 0..20 {
            assert!(l.reserve(&p, &format!("u{i}@x"), ip).is_ok());
        }
        assert!(l.reserve(&p, "new@x", ip).is_err());
    }

    #[test]
    fn the_reused_memory_check_agrees_with_the_plain_one() {
        let phc = crate::secret::hash_password("correct horse").unwrap();
        for (password, stored, right) in [
            ("correct horse", phc.as_str(), true),
            ("wrong horse", phc.as_str(), false),
            ("correct horse", dummy_hash(), false),
            ("correct horse", "not a hash", false),
        ] {
            assert_eq!(
                verify_on_this_thread(password, stored),
                right,
                "{password} against {stored}"
            );
            assert_eq!(crate::secret::verify_password(password, stored), right);
        }
        // A stored hash asking for 4 GiB is refused, not allocated.
        let greedy = "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
        assert!(!verify_on_this_thread("x", greedy));
    }

    #[test]
    fn hashing_slots_follow_cores_and_memory() {
        assert_eq!(PasswordPolicy::hashes_for(2, 24 << 30), 4);
        assert_eq!(PasswordPolicy::hashes_for(64, 1 << 30), 6);
        assert_eq!(PasswordPolicy::hashes_for(8, 64 << 20), 1);
    }
}
