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
//!   cannot exhaust memory.
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

#[derive(Clone)]
pub struct Passwords {
    users: Arc<dyn UserStore>,
    policy: Arc<PasswordPolicy>,
    limiter: Arc<Limiter>,
    hashing: Arc<Semaphore>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl Passwords {
    pub fn new(users: Arc<dyn UserStore>, policy: PasswordPolicy) -> Self {
        Self {
            hashing: Arc::new(Semaphore::new(policy.max_concurrent_hashes.max(1))),
            users,
            policy: Arc::new(policy),
            limiter: Arc::default(),
            queued: Arc::default(),
        }
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
        let ok = self.verify(password, phc).await?;
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
        let right = self.verify(password, phc).await?;
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
        let phc = phc.unwrap_or_else(|| dummy_hash().to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            crate::secret::verify_password(&password, &phc)
        })
        .await
        .unwrap_or(false);
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
    fn hashing_slots_follow_cores_and_memory() {
        assert_eq!(PasswordPolicy::hashes_for(2, 24 << 30), 4);
        assert_eq!(PasswordPolicy::hashes_for(64, 1 << 30), 6);
        assert_eq!(PasswordPolicy::hashes_for(8, 64 << 20), 1);
    }
}
