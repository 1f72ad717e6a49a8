//! Many simulated devices at once: enrollment at a paced rate, then management sessions, all on
//! tokio with bounded concurrency.
//!
//! Memory is the constraint at 100,000 devices, so an idle device is only its [`ManagedDevice`]
//! (profile, CSP tree, certificate, key). Nothing TLS-related is kept between sessions: each
//! session builds its own [`HttpsClient`] (rustls config and one connection), which is also what
//! Windows does — one connection per OMA-DM session, reused for that session's messages. The
//! per-device task future stays small because the session future is boxed and lives only while
//! the session runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steward_pki::DeviceKey;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::csp::DeviceProfile;
use crate::enroll::{Credentials, EnrollOptions, enroll_with_key};
use crate::https::HttpsClient;
use crate::ratelimit::RateLimiter;
use crate::session::{ManagedDevice, SessionTrigger};
use crate::stats::{ErrorCounts, ErrorKind, LatencyRecorder, LatencySummary};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("generating device keys: {0}")]
    Key(#[from] steward_pki::PkiError),
    #[error("the key pool is empty (it holds fewer keys than devices to enroll)")]
    KeyPoolExhausted,
    #[error("a worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

// ---- Keys ----

/// Where enrolling devices get their RSA keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// One fresh RSA-2048 key per device, generated in parallel before the run.
    Pool,
    /// Benchmark-only shortcut: one key generated once, loaded into every device. Every device
    /// still gets its own certificate (and DeviceID), so the server's work is unchanged; only the
    /// uniqueness of the public key differs from real life.
    Shared,
}

/// Pre-generated keys, handed out one per enrollment.
#[derive(Debug)]
pub struct KeyPool {
    keys: Vec<DeviceKey>,
    shared: Option<Arc<DeviceKey>>,
}

/// A key taken from the pool; [`PendingKey::resolve`] loads a shared key off the async threads.
#[derive(Debug)]
pub enum PendingKey {
    Ready(Box<DeviceKey>),
    Shared(Arc<DeviceKey>),
}

impl PendingKey {
    pub async fn resolve(self) -> Result<DeviceKey, FleetError> {
        match self {
            PendingKey::Ready(k) => Ok(*k),
            // Loading a PKCS#8 key includes a private-key consistency check (a modular
            // exponentiation): milliseconds of CPU that must not stall the runtime.
            PendingKey::Shared(k) => {
                Ok(tokio::task::spawn_blocking(move || DeviceKey::from_pkcs8(&k.pkcs8_der())).await??)
            }
        }
    }
}

impl KeyPool {
    /// Generates `n` RSA-2048 keys on `workers` blocking threads (RSA generation is 50–100 ms of
    /// CPU each, so this spreads it over the cores before the run instead of during it).
    /// `done` counts finished keys for progress reporting.
    pub async fn generate(n: usize, workers: usize, done: Arc<AtomicU64>) -> Result<Self, FleetError> {
        let workers = workers.clamp(1, n.max(1));
        let mut set = JoinSet::new();
        for w in 0..workers {
            // Split n as evenly as possible: the first n % workers get one extra.
            let share = n / workers + usize::from(w < n % workers);
            let done = done.clone();
            set.spawn_blocking(move || {
                let mut keys = Vec::with_capacity(share);
                for _ in 0..share {
                    keys.push(DeviceKey::generate_rsa(2048)?);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, steward_pki::PkiError>(keys)
            });
        }
        let mut keys = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            keys.extend(r??);
        }
        Ok(Self { keys, shared: None })
    }

    /// One key for every device (see [`KeySource::Shared`]).
    pub async fn shared() -> Result<Self, FleetError> {
        let key = tokio::task::spawn_blocking(|| DeviceKey::generate_rsa(2048)).await??;
        Ok(Self {
            keys: Vec::new(),
            shared: Some(Arc::new(key)),
        })
    }

    /// Keys left (a shared pool never runs out).
    pub fn remaining(&self) -> Option<usize> {
        self.shared.is_none().then_some(self.keys.len())
    }

    pub fn take(&mut self) -> Result<PendingKey, FleetError> {
        if let Some(k) = &self.shared {
            return Ok(PendingKey::Shared(k.clone()));
        }
        self.keys
            .pop()
            .map(|k| PendingKey::Ready(Box::new(k)))
            .ok_or(FleetError::KeyPoolExhausted)
    }
}

// ---- Phase statistics ----

/// Counters and samples of one phase, shared by the worker tasks and read by the progress loop.
#[derive(Debug, Default)]
pub struct PhaseStats {
    started: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    inner: Mutex<PhaseSamples>,
}

#[derive(Debug, Default)]
struct PhaseSamples {
    latency: LatencyRecorder,
    errors: ErrorCounts,
    /// SyncML messages the devices sent (check-ins).
    messages: u64,
    /// Server commands the devices executed (check-ins).
    commands: u64,
}

/// A consistent-enough view of a [`PhaseStats`] for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PhaseCounts {
    pub started: u64,
    pub ok: u64,
    pub failed: u64,
}

impl PhaseCounts {
    pub fn done(&self) -> u64 {
        self.ok + self.failed
    }

    pub fn in_flight(&self) -> u64 {
        self.started.saturating_sub(self.done())
    }
}

/// The final figures of a phase's operations.
#[derive(Debug, Clone)]
pub struct PhaseTotals {
    pub counts: PhaseCounts,
    pub latency: LatencySummary,
    pub errors: ErrorCounts,
    pub messages: u64,
    pub commands: u64,
}

impl PhaseStats {
    fn samples(&self) -> std::sync::MutexGuard<'_, PhaseSamples> {
        // A panicking recorder cannot leave the samples half-updated in a harmful way; keep going.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn begin(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_ok(&self, latency: Duration, messages: u64, commands: u64) {
        let mut s = self.samples();
        s.latency.record(latency);
        s.messages += messages;
        s.commands += commands;
        drop(s);
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    /// Failed operations count in the latency figures too: a timeout or a fault after 2 s is what
    /// the device experienced.
    pub fn record_err(&self, latency: Duration, kind: &ErrorKind) {
        let mut s = self.samples();
        s.latency.record(latency);
        *s.errors.entry(kind.key()).or_default() += 1;
        drop(s);
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> PhaseCounts {
        PhaseCounts {
            started: self.started.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    pub fn totals(&self) -> PhaseTotals {
        let counts = self.counts();
        let s = self.samples();
        PhaseTotals {
            counts,
            latency: s.latency.summary(),
            errors: s.errors.clone(),
            messages: s.messages,
            commands: s.commands,
        }
    }
}

// ---- The fleet ----

/// How to enroll the fleet.
#[derive(Debug, Clone)]
pub struct EnrollPlan {
    /// Server base URL (`https://host:port`); the only host the fleet talks to.
    pub server_url: String,
    /// Enrollment token (OnPremise password) with at least as many uses as devices.
    pub token: String,
    pub devices: usize,
    /// Enrollments started per second (token bucket, burst 1); ≤ 0 = as fast as concurrency allows.
    pub rate: f64,
    pub concurrency: usize,
    /// Upper bound for one enrollment (four HTTPS exchanges).
    pub op_timeout: Duration,
}

/// How devices check in after enrolling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckinMode {
    /// Each device runs this many sessions back to back (throughput benchmark).
    Sessions(u32),
    /// Each device follows its DMClient poll schedule, compressed by `time_scale` (60 = one
    /// simulated minute per real second).
    Schedule { time_scale: f64 },
}

#[derive(Debug, Clone, Copy)]
pub struct CheckinPlan {
    pub mode: CheckinMode,
    pub concurrency: usize,
    /// No session starts after this; running ones finish (bounded by `op_timeout`).
    pub duration: Duration,
    pub op_timeout: Duration,
}

/// A set of enrolled simulated devices.
#[derive(Debug)]
pub struct Fleet {
    roots: Arc<Vec<Vec<u8>>>,
    devices: Vec<ManagedDevice>,
}

impl Fleet {
    /// An empty fleet trusting `roots` (DER) for the server's TLS certificate.
    pub fn new(roots: Vec<Vec<u8>>) -> Self {
        Self {
            roots: Arc::new(roots),
            devices: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn devices(&self) -> &[ManagedDevice] {
        &self.devices
    }

    pub fn devices_mut(&mut self) -> &mut [ManagedDevice] {
        &mut self.devices
    }

    /// Adds an already enrolled device.
    pub fn push(&mut self, device: ManagedDevice) {
        self.devices.push(device);
    }

    /// Moves every device of `other` (enrolled by another run, e.g. concurrently with this fleet's
    /// check-ins) into this fleet.
    pub fn absorb(&mut self, other: Fleet) {
        self.devices.extend(other.devices);
    }

    /// Enrolls `plan.devices` devices, starting at most `plan.rate` per second with at most
    /// `plan.concurrency` in flight. Failures are counted in `stats`, not returned: a load test
    /// wants to see them all. Errors only for the pool running dry or a worker panicking.
    pub async fn enroll(
        &mut self,
        plan: &EnrollPlan,
        keys: &mut KeyPool,
        stats: Arc<PhaseStats>,
    ) -> Result<(), FleetError> {
        let sem = Arc::new(Semaphore::new(plan.concurrency.max(1)));
        let mut limiter = RateLimiter::new(plan.rate, 1);
        let mut set: JoinSet<Option<ManagedDevice>> = JoinSet::new();
        let base = self.devices.len();
        for i in 0..plan.devices {
            limiter.acquire().await;
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            let key = keys.take()?;
            let roots = self.roots.clone();
            let mut opts = EnrollOptions::new(
                plan.server_url.clone(),
                format!("load{:06}@loadtest.example", base + i),
                Credentials::Password(plan.token.clone()),
            );
            opts.device_name = format!("LOAD-{:06}", base + i);
            stats.begin();
            let timeout = plan.op_timeout;
            let stats = stats.clone();
            set.spawn(async move {
                let _permit = permit;
                enroll_one(&roots, &opts, key, timeout, &stats).await
            });
            // Collect finished enrollments as we go so the JoinSet stays small.
            while let Some(r) = set.try_join_next() {
                self.devices.extend(r?);
            }
        }
        while let Some(r) = set.join_next().await {
            self.devices.extend(r?);
        }
        Ok(())
    }

    /// Runs check-ins for every device until each has done its sessions or `plan.duration` has
    /// passed. Devices are moved into one task each and come back when it ends.
    pub async fn run_checkins(&mut self, plan: &CheckinPlan, stats: Arc<PhaseStats>) -> Result<(), FleetError> {
        let sem = Arc::new(Semaphore::new(plan.concurrency.max(1)));
        let deadline = Instant::now() + plan.duration;
        let mut set = JoinSet::new();
        for device in self.devices.drain(..) {
            let ctx = CheckinCtx {
                roots: self.roots.clone(),
                sem: sem.clone(),
                stats: stats.clone(),
                deadline,
                plan: *plan,
            };
            set.spawn(device_loop(device, ctx));
        }
        while let Some(r) = set.join_next().await {
            self.devices.push(r?);
        }
        Ok(())
    }
}

async fn enroll_one(
    roots: &[Vec<u8>],
    opts: &EnrollOptions,
    key: PendingKey,
    timeout: Duration,
    stats: &PhaseStats,
) -> Option<ManagedDevice> {
    let key = match key.resolve().await {
        Ok(k) => k,
        Err(_) => {
            stats.record_err(Duration::ZERO, &ErrorKind::Key);
            return None;
        }
    };
    let started = Instant::now();
    // A fresh client per device: Windows enrolls over its own connection.
    let client = match HttpsClient::new(roots, None) {
        Ok(c) => c,
        Err(e) => {
            stats.record_err(started.elapsed(), &ErrorKind::from_https(&e));
            return None;
        }
    };
    let enrolled = match tokio::time::timeout(timeout, enroll_with_key(&client, opts, key)).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            stats.record_err(started.elapsed(), &ErrorKind::from_enroll(&e));
            return None;
        }
        Err(_) => {
            stats.record_err(started.elapsed(), &ErrorKind::Timeout);
            return None;
        }
    };
    stats.record_ok(started.elapsed(), 0, 0);
    let mut profile = DeviceProfile::random(&enrolled.device_id);
    profile.device_name.clone_from(&opts.device_name);
    Some(ManagedDevice::from_enrolled(enrolled, profile))
}

struct CheckinCtx {
    roots: Arc<Vec<Vec<u8>>>,
    sem: Arc<Semaphore>,
    stats: Arc<PhaseStats>,
    deadline: Instant,
    plan: CheckinPlan,
}

/// One device's life during the check-in phase.
async fn device_loop(mut device: ManagedDevice, ctx: CheckinCtx) -> ManagedDevice {
    let mut sessions_done = 0u32;
    loop {
        let due = match ctx.plan.mode {
            CheckinMode::Sessions(k) if sessions_done >= k => break,
            CheckinMode::Sessions(_) => Instant::now(),
            // The schedule counts from the previous session's start (or, before the first one,
            // from now: Windows polls right after enrollment, so every device is due at once).
            CheckinMode::Schedule { time_scale } => Instant::now() + device.next_poll_delay_scaled(time_scale),
        };
        if due >= ctx.deadline {
            break;
        }
        tokio::time::sleep_until(due).await;
        let permit = tokio::select! {
            p = ctx.sem.clone().acquire_owned() => p.ok(),
            () = tokio::time::sleep_until(ctx.deadline) => None,
        };
        let Some(_permit) = permit else { break };
        // Boxed so the (large) session state machine is allocated only while a session runs,
        // not for the whole life of every idle device's task.
        Box::pin(one_session(&mut device, &ctx)).await;
        sessions_done += 1;
    }
    device
}

async fn one_session(device: &mut ManagedDevice, ctx: &CheckinCtx) {
    ctx.stats.begin();
    let started = Instant::now();
    let client = match HttpsClient::new(&ctx.roots, device.tls_identity()) {
        Ok(c) => c,
        Err(e) => {
            ctx.stats.record_err(started.elapsed(), &ErrorKind::from_https(&e));
            return;
        }
    };
    let run = device.run_session(&client, SessionTrigger::Scheduled);
    match tokio::time::timeout(ctx.plan.op_timeout, run).await {
        Ok(Ok(report)) => ctx.stats.record_ok(
            started.elapsed(),
            u64::from(report.messages),
            report.received.len() as u64,
        ),
        Ok(Err(e)) => ctx.stats.record_err(started.elapsed(), &ErrorKind::from_session(&e)),
        Err(_) => ctx.stats.record_err(started.elapsed(), &ErrorKind::Timeout),
    }
}
