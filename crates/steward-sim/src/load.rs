//! `steward-sim load`: a load test against one server, as a library function so benchmarks and
//! tests can run it in-process.
//!
//! Phases: `keys` (RSA keys generated before the run), `enroll` (N devices at a paced rate), then
//! `checkin` (sessions per device or per poll schedule). While a phase runs, a 500 ms tick samples
//! the server's and our own `/proc` figures and calls the progress callback.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::fleet::{CheckinMode, CheckinPlan, EnrollPlan, Fleet, FleetError, KeyPool, KeySource, PhaseStats};
use crate::stats::{CLK_TCK, ErrorCounts, LatencySummary, ProcError, ProcReport, ProcTracker};

/// How often `/proc` is sampled and progress reported.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server base URL; the run sends traffic nowhere else.
    pub server_url: String,
    /// DER certificates trusted for the server's TLS certificate.
    pub roots: Vec<Vec<u8>>,
    /// Enrollment token with at least `devices` uses left.
    pub token: String,
    pub devices: usize,
    /// Enrollments started per second (≤ 0: unpaced).
    pub enroll_rate: f64,
    /// Operations (enrollments, sessions) in flight at once.
    pub concurrency: usize,
    /// Length of the check-in phase.
    pub duration: Duration,
    pub checkins: CheckinMode,
    pub keys: KeySource,
    /// Threads generating the key pool (default: the number of cores).
    pub key_workers: usize,
    /// Server process to watch (`/proc/<pid>`), if it runs on this machine.
    pub server_pid: Option<u32>,
    /// Upper bound for one enrollment or session.
    pub op_timeout: Duration,
}

impl LoadConfig {
    /// Defaults: 10 devices at 10/s, concurrency 16, 1 session each, 60 s, pooled keys.
    pub fn new(server_url: impl Into<String>, roots: Vec<Vec<u8>>, token: impl Into<String>) -> Self {
        Self {
            server_url: server_url.into().trim_end_matches('/').to_owned(),
            roots,
            token: token.into(),
            devices: 10,
            enroll_rate: 10.0,
            concurrency: 16,
            duration: Duration::from_secs(60),
            checkins: CheckinMode::Sessions(1),
            keys: KeySource::Pool,
            key_workers: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            server_pid: None,
            op_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid load configuration: {0}")]
    Config(String),
    #[error("watching a process: {0}")]
    Proc(#[from] ProcError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// The phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Keys,
    Enroll,
    Checkin,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Keys => "keys",
            Phase::Enroll => "enroll",
            Phase::Checkin => "checkin",
        }
    }
}

/// What the progress callback sees every [`SAMPLE_INTERVAL`] and at each phase's end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    /// Operations the phase will do, when known (not for a schedule-driven check-in phase).
    pub total: Option<u64>,
    pub done: u64,
    pub failed: u64,
    pub in_flight: u64,
    pub elapsed: Duration,
    /// The phase's time limit, when it has one.
    pub limit: Option<Duration>,
    /// Whether the phase has ended (the last call for it).
    pub finished: bool,
}

/// One phase's results.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub phase: Phase,
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    pub wall_seconds: f64,
    /// Successful operations per second of the phase.
    pub throughput_per_sec: f64,
    /// Over all operations, failed ones included.
    pub latency: LatencySummary,
    pub errors: ErrorCounts,
    /// SyncML messages sent by devices (check-in).
    pub messages: u64,
    /// Server commands executed by devices (check-in).
    pub commands: u64,
    /// The server's CPU seconds during this phase, and as a share of one core.
    pub server_cpu_seconds: Option<f64>,
    pub server_cpu_utilisation: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub server_url: String,
    pub devices_requested: usize,
    pub devices_enrolled: usize,
    pub concurrency: usize,
    pub enroll_rate: f64,
    pub checkin_mode: String,
    pub shared_key: bool,
    pub phases: Vec<PhaseReport>,
    pub server: Option<ProcReport>,
    pub sim: ProcReport,
    /// Our RSS growth from before the key pool to after enrollment, per enrolled device: what an
    /// idle simulated device costs (keys, certificate, CSP tree), allocator slack included.
    pub sim_bytes_per_device: Option<u64>,
}

/// Watches the processes and reports progress while a phase runs.
struct Monitor<'a, P: Fn(&Progress)> {
    sim: ProcTracker,
    server: Option<ProcTracker>,
    progress: &'a P,
}

impl<P: Fn(&Progress)> Monitor<'_, P> {
    fn sample(&mut self) {
        // A failed read keeps the previous reading: the report shows the last good one. The
        // server may well exit mid-run; that is a finding, not a reason to abort the test.
        let _ = self.sim.sample();
        if let Some(s) = &mut self.server {
            let _ = s.sample();
        }
    }

    fn server_ticks(&self) -> Option<u64> {
        self.server.as_ref().map(|s| s.last().cpu_ticks)
    }

    /// Runs `fut` to completion, sampling and reporting every [`SAMPLE_INTERVAL`].
    async fn drive<T>(&mut self, fut: impl Future<Output = T>, view: impl Fn(Duration) -> Progress) -> T {
        let started = Instant::now();
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(fut);
        let out = loop {
            tokio::select! {
                out = &mut fut => break out,
                _ = tick.tick() => {
                    self.sample();
                    (self.progress)(&view(started.elapsed()));
                }
            }
        };
        self.sample();
        let mut last = view(started.elapsed());
        last.finished = true;
        (self.progress)(&last);
        out
    }
}

fn phase_report(phase: Phase, stats: &PhaseStats, wall: Duration, server_ticks: Option<(u64, u64)>) -> PhaseReport {
    let t = stats.totals();
    let wall_seconds = wall.as_secs_f64();
    let server_cpu_seconds = server_ticks.map(|(a, b)| b.saturating_sub(a) as f64 / CLK_TCK as f64);
    PhaseReport {
        phase,
        attempted: t.counts.started,
        ok: t.counts.ok,
        failed: t.counts.failed,
        wall_seconds,
        throughput_per_sec: if wall_seconds > 0.0 {
            t.counts.ok as f64 / wall_seconds
        } else {
            0.0
        },
        latency: t.latency,
        errors: t.errors,
        messages: t.messages,
        commands: t.commands,
        server_cpu_seconds,
        server_cpu_utilisation: server_cpu_seconds.map(|c| if wall_seconds > 0.0 { c / wall_seconds } else { 0.0 }),
    }
}

fn validate(c: &LoadConfig) -> Result<(), LoadError> {
    let bad = |m: &str| Err(LoadError::Config(m.to_owned()));
    if !c.server_url.starts_with("https://") {
        return bad("the server URL must start with https://");
    }
    if c.devices == 0 {
        return bad("devices must be at least 1");
    }
    if c.concurrency == 0 {
        return bad("concurrency must be at least 1");
    }
    if c.roots.is_empty() {
        return bad("no CA certificate to trust the server with");
    }
    if let CheckinMode::Schedule { time_scale } = c.checkins
        && !(time_scale.is_finite() && time_scale > 0.0)
    {
        return bad("time scale must be a positive number");
    }
    Ok(())
}

/// Runs the load test. `progress` is called from this task (never concurrently) every
/// [`SAMPLE_INTERVAL`] and once at the end of each phase.
pub async fn run_load(config: LoadConfig, progress: impl Fn(&Progress)) -> Result<LoadReport, LoadError> {
    validate(&config)?;
    let mut mon = Monitor {
        sim: ProcTracker::start(None)?,
        server: config.server_pid.map(|p| ProcTracker::start(Some(p))).transpose()?,
        progress: &progress,
    };
    let rss_before = mon.sim.last().rss_bytes;
    let mut phases = Vec::new();

    // Keys.
    let keys_done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let ticks0 = mon.server_ticks();
    let key_total = match config.keys {
        KeySource::Pool => config.devices as u64,
        KeySource::Shared => 1,
    };
    let generate = async {
        match config.keys {
            KeySource::Pool => KeyPool::generate(config.devices, config.key_workers, keys_done.clone()).await,
            KeySource::Shared => {
                let p = KeyPool::shared().await;
                keys_done.store(1, Ordering::Relaxed);
                p
            }
        }
    };
    let mut pool = mon
        .drive(generate, |elapsed| Progress {
            phase: Phase::Keys,
            total: Some(key_total),
            done: keys_done.load(Ordering::Relaxed),
            failed: 0,
            in_flight: 0,
            elapsed,
            limit: None,
            finished: false,
        })
        .await?;
    let key_stats = PhaseStats::default();
    for _ in 0..keys_done.load(Ordering::Relaxed) {
        key_stats.begin();
    }
    // Key generation has no per-key latency worth reporting; count and throughput are what matter.
    let mut keys_report = phase_report(
        Phase::Keys,
        &key_stats,
        started.elapsed(),
        ticks0.zip(mon.server_ticks()),
    );
    keys_report.ok = keys_report.attempted;
    keys_report.throughput_per_sec = keys_report.ok as f64 / keys_report.wall_seconds.max(1e-9);
    phases.push(keys_report);

    // Enrollment.
    let mut fleet = Fleet::new(config.roots.clone());
    let stats = Arc::new(PhaseStats::default());
    let plan = EnrollPlan {
        server_url: config.server_url.clone(),
        token: config.token.clone(),
        devices: config.devices,
        rate: config.enroll_rate,
        concurrency: config.concurrency,
        op_timeout: config.op_timeout,
    };
    let started = Instant::now();
    let ticks0 = mon.server_ticks();
    let total = config.devices as u64;
    let view_stats = stats.clone();
    mon.drive(fleet.enroll(&plan, &mut pool, stats.clone()), |elapsed| {
        let c = view_stats.counts();
        Progress {
            phase: Phase::Enroll,
            total: Some(total),
            done: c.done(),
            failed: c.failed,
            in_flight: c.in_flight(),
            elapsed,
            limit: None,
            finished: false,
        }
    })
    .await?;
    phases.push(phase_report(
        Phase::Enroll,
        &stats,
        started.elapsed(),
        ticks0.zip(mon.server_ticks()),
    ));
    // The pool is empty now (or holds only the shared key); drop it before measuring.
    drop(pool);
    let rss_after = mon.sim.last().rss_bytes;
    let sim_bytes_per_device = (!fleet.is_empty()).then(|| rss_after.saturating_sub(rss_before) / fleet.len() as u64);

    // Check-ins.
    if !fleet.is_empty() {
        let stats = Arc::new(PhaseStats::default());
        let plan = CheckinPlan {
            mode: config.checkins,
            concurrency: config.concurrency,
            duration: config.duration,
            op_timeout: config.op_timeout,
        };
        let total = match config.checkins {
            CheckinMode::Sessions(k) => Some(u64::from(k) * fleet.len() as u64),
            CheckinMode::Schedule { .. } => None,
        };
        let started = Instant::now();
        let ticks0 = mon.server_ticks();
        let view_stats = stats.clone();
        mon.drive(fleet.run_checkins(&plan, stats.clone()), |elapsed| {
            let c = view_stats.counts();
            Progress {
                phase: Phase::Checkin,
                total,
                done: c.done(),
                failed: c.failed,
                in_flight: c.in_flight(),
                elapsed,
                limit: Some(config.duration),
                finished: false,
            }
        })
        .await?;
        phases.push(phase_report(
            Phase::Checkin,
            &stats,
            started.elapsed(),
            ticks0.zip(mon.server_ticks()),
        ));
    }

    Ok(LoadReport {
        server_url: config.server_url.clone(),
        devices_requested: config.devices,
        devices_enrolled: fleet.len(),
        concurrency: config.concurrency,
        enroll_rate: config.enroll_rate,
        checkin_mode: match config.checkins {
            CheckinMode::Sessions(k) => format!("{k} session(s) per device"),
            CheckinMode::Schedule { time_scale } => format!("poll schedule, time scale {time_scale}"),
        },
        shared_key: config.keys == KeySource::Shared,
        phases,
        server: mon.server.as_ref().map(ProcTracker::report),
        sim: mon.sim.report(),
        sim_bytes_per_device,
    })
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl LoadReport {
    /// The human-readable report.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "load test against {}: {} of {} devices enrolled, concurrency {}, enroll rate {}/s, {}{}",
            self.server_url,
            self.devices_enrolled,
            self.devices_requested,
            self.concurrency,
            self.enroll_rate,
            self.checkin_mode,
            if self.shared_key {
                ", shared key (benchmark only)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            o,
            "{:<8} {:>8} {:>8} {:>7} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
            "phase", "ok", "failed", "wall s", "ops/s", "mean ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "srv cpu"
        );
        for p in &self.phases {
            // Phases without per-operation latency (key generation) show "-" rather than zeros.
            let ms = |v: f64| {
                if p.latency.count == 0 {
                    "-".to_owned()
                } else {
                    format!("{v:.1}")
                }
            };
            let _ = writeln!(
                o,
                "{:<8} {:>8} {:>8} {:>7.1} {:>8.1} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
                p.phase.as_str(),
                p.ok,
                p.failed,
                p.wall_seconds,
                p.throughput_per_sec,
                ms(p.latency.mean_ms),
                ms(p.latency.p50_ms),
                ms(p.latency.p90_ms),
                ms(p.latency.p99_ms),
                ms(p.latency.max_ms),
                p.server_cpu_utilisation
                    .map_or_else(|| "-".to_owned(), |u| format!("{:.0}%", u * 100.0)),
            );
            if p.messages > 0 {
                let _ = writeln!(
                    o,
                    "         {} SyncML messages sent, {} server commands executed",
                    p.messages, p.commands
                );
            }
            for (kind, n) in &p.errors {
                let _ = writeln!(o, "         error {kind}: {n}");
            }
        }
        if let Some(s) = &self.server {
            let _ = writeln!(
                o,
                "server pid {}: RSS start {:.1} MiB, end {:.1} MiB, max {:.1} MiB; CPU {:.1} s over {:.1} s = {:.0}% of one core",
                s.pid.unwrap_or_default(),
                mib(s.rss_start_bytes),
                mib(s.rss_end_bytes),
                mib(s.rss_max_bytes),
                s.cpu_seconds,
                s.wall_seconds,
                s.cpu_utilisation * 100.0
            );
        }
        let s = &self.sim;
        let _ = writeln!(
            o,
            "simulator: RSS start {:.1} MiB, end {:.1} MiB, max {:.1} MiB; CPU {:.1} s = {:.0}% of one core{}",
            mib(s.rss_start_bytes),
            mib(s.rss_end_bytes),
            mib(s.rss_max_bytes),
            s.cpu_seconds,
            s.cpu_utilisation * 100.0,
            self.sim_bytes_per_device
                .map_or_else(String::new, |b| format!("; ~{b} bytes per idle device"))
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_bad_configs_before_doing_anything() {
        let cfg = LoadConfig::new("http://127.0.0.1:1", vec![vec![1]], "t");
        assert!(matches!(run_load(cfg, |_| {}).await, Err(LoadError::Config(_))));
        let mut cfg = LoadConfig::new("https://127.0.0.1:1", vec![vec![1]], "t");
        cfg.checkins = CheckinMode::Schedule { time_scale: 0.0 };
        assert!(matches!(run_load(cfg, |_| {}).await, Err(LoadError::Config(_))));
    }

    #[tokio::test]
    async fn unreachable_server_counts_connect_errors() {
        // Port 1 on loopback: nothing listens, so every enrollment fails to connect. Only
        // 127.0.0.1 is contacted. A self-signed throwaway CA is enough to build the TLS config.
        let ca = steward_pki::generate_root_ca("test", "test", time::Duration::days(1)).unwrap();
        let mut cfg = LoadConfig::new("https://127.0.0.1:1", vec![ca.cert_der().to_vec()], "t");
        cfg.devices = 3;
        cfg.enroll_rate = 0.0;
        cfg.keys = KeySource::Shared;
        let calls = std::sync::Mutex::new(Vec::new());
        let report = run_load(cfg, |p| calls.lock().unwrap().push(*p)).await.unwrap();
        assert_eq!(report.devices_enrolled, 0);
        let enroll = &report.phases[1];
        assert_eq!(enroll.phase, Phase::Enroll);
        assert_eq!((enroll.attempted, enroll.ok, enroll.failed), (3, 0, 3));
        assert_eq!(enroll.errors.get("connect"), Some(&3));
        assert_eq!(report.phases.len(), 2, "no check-in phase without devices");
        let calls = calls.into_inner().unwrap();
        assert!(
            calls
                .iter()
                .any(|p| p.phase == Phase::Enroll && p.finished && p.done == 3)
        );
        assert!(report.to_text().contains("error connect: 3"));
    }
}
