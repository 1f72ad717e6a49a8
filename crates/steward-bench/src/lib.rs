//! `steward-bench`: the issue-5 measurements in one run on one machine. Everything talks to
//! 127.0.0.1 only: an in-process Steward server driven by the device simulator, a bare
//! hyper+rustls server on the same TLS configuration as the baseline, and a child server process
//! for the memory figure (so the simulator's own memory is not counted). Both in-process servers
//! run on their own runtime, so the CPU they spend per session is reported apart from the
//! simulated devices' (which the bare baseline's client does not do).
//!
//! Sizes come from [`BenchOptions`]; the smoke test runs it tiny and checks only that figures come
//! out. No figure here is asserted anywhere: timings on shared CI machines are noise.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use steward_core::*;
use steward_pki::{DeviceCertParams, DeviceKey};
use steward_server::Config;
use steward_sim::{Credentials, DeviceProfile, EnrollOptions, HttpsClient, ManagedDevice, SessionTrigger, TlsProfile};
use steward_windows::{CommandItem, OmaDmCommand, Verb};
use steward_windows_proto::syncml;
use time::OffsetDateTime;
use tokio::net::TcpListener;

mod pgstats;
mod profiles;
pub use profiles::{ProfilesOptions, catalog_documents, profiles};

const SYNCML: &str = "application/vnd.syncml.dm+xml";
const MANAGEMENT_PATH: &str = "/ManagementServer/MDM.svc";

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("setup: {0}")]
    Setup(String),
    #[error(transparent)]
    Server(#[from] steward_server::ServeError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("pki: {0}")]
    Pki(#[from] steward_pki::PkiError),
    #[error("https: {0}")]
    Https(#[from] steward_sim::HttpsError),
    #[error("enrollment: {0}")]
    Enroll(#[from] steward_sim::EnrollError),
    #[error("session: {0}")]
    Session(#[from] steward_sim::SessionError),
    #[error("syncml: {0}")]
    SyncMl(#[from] syncml::SyncMlError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

type Result<T> = std::result::Result<T, BenchError>;

/// What to measure and how big. Defaults are the documented reference run's sizes.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Seconds spent on each CPU-only measurement (signing, each codec figure).
    pub cpu_seconds: f64,
    /// Directory holding the real captures `04-session1-msg1.request.xml` and
    /// `05-session2-unenroll.request.xml`; missing files are reported, not fatal.
    pub fixtures: Option<PathBuf>,
    /// Items in the generated large SyncML message (Results, ~300 bytes each).
    pub large_items: usize,
    /// Devices enrolled over the wire for the enrollment figure (also the management fleet).
    pub enroll_devices: usize,
    /// Devices taking part in the session measurements (at most `enroll_devices`).
    pub devices: usize,
    /// Sessions per session measurement (run in whole rounds over `devices`).
    pub sessions: usize,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Devices written directly through the store for the store-size, fan-out and RSS figures.
    pub store_devices: usize,
    /// The executable to run as the child server (`<exe> serve-child`); None skips the RSS figure.
    pub child_exe: Option<PathBuf>,
    /// Devices that enroll and check in against the child server before its RSS is read.
    pub child_active_devices: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            cpu_seconds: 2.0,
            fixtures: None,
            large_items: 2_000,
            enroll_devices: 1_000,
            devices: 200,
            sessions: 4_000,
            concurrency: 32,
            store_devices: 10_000,
            child_exe: None,
            child_active_devices: 100,
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub note: String,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub figures: Vec<Figure>,
}

impl Report {
    fn add(&mut self, name: impl Into<String>, value: f64, unit: &'static str, note: impl Into<String>) {
        let f = Figure {
            name: name.into(),
            value,
            unit,
            note: note.into(),
        };
        eprintln!("  {:<58} {:>12.2} {:<10} {}", f.name, f.value, f.unit, f.note);
        self.figures.push(f);
    }

    pub fn get(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }

    /// A Markdown table of every figure.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from("| figure | value | unit | note |\n|---|---:|---|---|\n");
        for f in &self.figures {
            s.push_str(&format!("| {} | {:.2} | {} | {} |\n", f.name, f.value, f.unit, f.note));
        }
        s
    }
}

/// Latency distribution of one measurement.
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn latency(samples: &mut [Duration]) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_unstable();
    // Nearest rank, as steward-sim's load report does.
    let rank = |q: f64| {
        let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e3
    };
    Latency {
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: rank(1.0),
    }
}

/// Runs every measurement and returns the figures (also printed to stderr as they come).
pub async fn run(opts: &BenchOptions) -> Result<Report> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut report = Report::default();

    eprintln!("CA signing");
    for threads in [1, 2] {
        let rate = signing_rate(opts.cpu_seconds, threads).await?;
        report.add(format!("CA signing, {threads} thread(s)"), rate, "certs/s", "");
    }

    eprintln!("SyncML codec");
    codec(opts, &mut report)?;

    eprintln!("wire: in-process server on 127.0.0.1");
    let server = BenchServer::start().await?;
    let devices = enrollment(&server, opts, &mut report).await?;
    let template = sessions(&server, devices, opts, &mut report).await?;
    server.server.shutdown().await;

    eprintln!("store and memory");
    store_and_memory(opts, &template, &mut report).await?;
    Ok(report)
}

// ---- CA signing ----

async fn signing_rate(seconds: f64, threads: usize) -> Result<f64> {
    tokio::task::spawn_blocking(move || -> Result<f64> {
        let validity = time::Duration::days(3650);
        let root = steward_pki::generate_root_ca("Bench Root", "Steward Bench", validity)?;
        let issuing = steward_pki::generate_issuing_ca(&root, "Bench Issuing", "Steward Bench", validity)?;
        let spki = DeviceKey::generate_rsa(2048)?.spki_der();
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let issued = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| -> Result<u64> {
                        let mut n = 0u64;
                        // At least one signature per thread: on a loaded machine a thread may only
                        // start after a short deadline has passed, and a rate of 0 means nothing.
                        while n == 0 || Instant::now() < deadline {
                            let now = OffsetDateTime::now_utc();
                            let params = DeviceCertParams {
                                serial: *uuid::Uuid::new_v4().as_bytes(),
                                common_name: uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
                                organizational_unit: Some(uuid::Uuid::new_v4().to_string()),
                                not_before: now,
                                not_after: now + time::Duration::days(365),
                            };
                            std::hint::black_box(steward_pki::issue_device_certificate(&issuing, &spki, &params)?);
                            n += 1;
                        }
                        Ok(n)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .map_err(|_| BenchError::Setup("signing thread panicked".into()))?
                })
                .sum::<Result<u64>>()
        })?;
        Ok(issued as f64 / started.elapsed().as_secs_f64())
    })
    .await?
}

// ---- SyncML codec ----

/// MB/s of `f` over `bytes` bytes per call, for `seconds`.
fn throughput(seconds: f64, bytes: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < seconds || n == 0 {
        f()?;
        n += 1;
    }
    Ok((bytes as f64 * n as f64) / started.elapsed().as_secs_f64() / 1e6)
}

fn codec_one(name: &str, input: &[u8], seconds: f64, report: &mut Report) -> Result<()> {
    let msg = syncml::parse_bytes(input)?;
    let parse = throughput(seconds, input.len(), || {
        std::hint::black_box(syncml::parse_bytes(std::hint::black_box(input))?);
        Ok(())
    })?;
    let written_len = syncml::write(&msg).len();
    let mut buf = String::with_capacity(written_len);
    let write = throughput(seconds, written_len, || {
        buf.clear();
        syncml::write_into(std::hint::black_box(&msg), &mut buf);
        std::hint::black_box(&buf);
        Ok(())
    })?;
    let note = format!("{} bytes", input.len());
    report.add(format!("SyncML parse, {name}"), parse, "MB/s", note.clone());
    report.add(
        format!("SyncML write, {name}"),
        write,
        "MB/s",
        format!("{written_len} bytes out"),
    );
    Ok(())
}

/// A device's answer to a big inventory Get: `items` Results items with escapable text.
pub fn large_message(items: usize) -> String {
    let mut results = syncml::Results {
        cmd_id: "3".into(),
        msg_ref: Some("1".into()),
        cmd_ref: "5".into(),
        ..Default::default()
    };
    for i in 0..items {
        let mut item = syncml::Item {
            source: Some(syncml::LocTarget::new(format!(
                "./Device/Vendor/MSFT/DeviceStatus/Bench/Node{i:05}/Value"
            ))),
            ..Default::default()
        };
        item.meta = Some(syncml::Meta::format("chr"));
        item.data = Some(syncml::ItemData::Text(format!(
            "value {i} <with> & escapable characters and some padding to look like a real setting {}",
            "x".repeat(120)
        )));
        results.items.push(item);
    }
    let msg = syncml::SyncMl {
        header: syncml::SyncHdr::new("1A", 2, "https://localhost/ManagementServer/MDM.svc", "BENCHDEVICE"),
        body: syncml::SyncBody {
            commands: vec![
                syncml::Command::Status(syncml::Status {
                    cmd_id: "1".into(),
                    msg_ref: "1".into(),
                    cmd_ref: "0".into(),
                    cmd: "SyncHdr".into(),
                    data: "200".into(),
                    ..Default::default()
                }),
                syncml::Command::Results(results),
            ],
            final_: true,
        },
    };
    syncml::write(&msg)
}

fn codec(opts: &BenchOptions, report: &mut Report) -> Result<()> {
    for file in ["04-session1-msg1.request.xml", "05-session2-unenroll.request.xml"] {
        let Some(path) = opts.fixtures.as_ref().map(|d| d.join(file)) else {
            eprintln!("  (no --fixtures directory: skipping {file})");
            continue;
        };
        match std::fs::read(&path) {
            Ok(bytes) => codec_one(file, &bytes, opts.cpu_seconds, report)?,
            Err(e) => eprintln!("  (cannot read {}: {e}; skipped)", path.display()),
        }
    }
    let large = large_message(opts.large_items);
    codec_one(
        &format!("generated Results, {} items", opts.large_items),
        large.as_bytes(),
        opts.cpu_seconds,
        report,
    )
}

// ---- The in-process server ----

struct BenchServer {
    server: steward_server::RunningServer,
    /// The server's store, with the readers no handler uses (the session state is read through
    /// `Inspect`).
    store: Arc<dyn BenchStore>,
    /// The PostgreSQL database made for this run (dropped by [`BenchServer::finish`]), if any.
    pg: Option<PgDatabase>,
    url: String,
    roots: Arc<Vec<Vec<u8>>>,
    /// The server's own runtime: its worker threads are named [`SERVER_THREADS`], so the CPU the
    /// server spends can be told from the simulated clients' (which run on the caller's runtime).
    runtime: ServerRuntime,
    _dir: tempfile::TempDir,
}

struct ServerRuntime(Option<tokio::runtime::Runtime>);

/// Name of the in-process servers' runtime threads (Steward's and the bare baseline's).
const SERVER_THREADS: &str = "bench-server";

impl Drop for ServerRuntime {
    fn drop(&mut self) {
        // Dropped from async code: a runtime may not block there to wait for its tasks.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn server_config(dir: &Path, port: u16) -> Config {
    Config {
        data_dir: dir.to_owned(),
        listen: ([127, 0, 0, 1], port).into(),
        public_url: Some(format!("https://localhost:{port}")),
        ..Config::default()
    }
}

/// What the benchmarks read from the server's store: every trait, and the readers of `Inspect`.
trait BenchStore: Store + Inspect {}
impl<T: Store + Inspect> BenchStore for T {}

/// A PostgreSQL database created for one run on the server `admin_url` names, and dropped after.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

/// The name of the run's PostgreSQL database, once made: the PostgreSQL backends serving it (their
/// command line names the database) are whose CPU the figures add (see [`ProcCounters`]).
static PG_DATABASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

impl PgDatabase {
    async fn create(admin_url: &str) -> Result<Self> {
        use sqlx::Connection;
        let name = format!("steward_bench_{}", uuid::Uuid::new_v4().simple());
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (admin_url, None),
        };
        let (server, _db) = base
            .rsplit_once('/')
            .filter(|(s, _)| s.contains("://"))
            .ok_or_else(|| BenchError::Setup(format!("--database-url: no database in {admin_url}")))?;
        let url = match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        };
        let mut c = sqlx::PgConnection::connect(admin_url)
            .await
            .map_err(|e| BenchError::Setup(format!("PostgreSQL at {admin_url}: {e}")))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .map_err(|e| BenchError::Setup(format!("CREATE DATABASE {name}: {e}")))?;
        let _ = PG_DATABASE.set(name.clone());
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }

    async fn drop_database(&self) -> Result<()> {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .map_err(|e| BenchError::Setup(format!("PostgreSQL at {}: {e}", self.admin_url)))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut c)
        .await
        .map_err(|e| BenchError::Setup(format!("DROP DATABASE {}: {e}", self.name)))?;
        Ok(())
    }
}

impl BenchServer {
    async fn start() -> Result<Self> {
        Self::start_on(None).await
    }

    /// The server on SQLite in its temporary data directory, or, with `database_url`, on a fresh
    /// PostgreSQL database of that server.
    async fn start_on(database_url: Option<&str>) -> Result<Self> {
        let pg = match database_url {
            Some(u) => Some(PgDatabase::create(u).await?),
            None => None,
        };
        let pg_url = pg.as_ref().map(|p| p.url.clone());
        let dir = tempfile::tempdir()?;
        // Two workers, as `steward serve` has on this machine.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(SERVER_THREADS)
            .enable_all()
            .build()?;
        let data_dir = dir.path().to_owned();
        let server = runtime
            .spawn(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let port = listener.local_addr()?.port();
                let mut config = server_config(&data_dir, port);
                let store: Arc<dyn BenchStore> = match pg_url {
                    Some(url) => {
                        config.database.url = Some(SecretString::new(url));
                        steward_server::open_postgres(&config).await?
                    }
                    None => steward_server::open_sqlite(&config).await?,
                };
                let server = steward_server::start_with_store(config, listener, store.clone()).await?;
                Ok::<_, BenchError>((server, store))
            })
            .await??;
        let (server, store) = server;
        let roots = Arc::new(vec![server.pki.root.cert_der().to_vec()]);
        Ok(Self {
            store,
            pg,
            url: format!("https://localhost:{}", server.local_addr.port()),
            server,
            roots,
            runtime: ServerRuntime(Some(runtime)),
            _dir: dir,
        })
    }

    fn handle(&self) -> Result<tokio::runtime::Handle> {
        self.runtime
            .0
            .as_ref()
            .map(|rt| rt.handle().clone())
            .ok_or_else(|| BenchError::Setup("the server runtime has stopped".into()))
    }

    fn store(&self) -> &dyn BenchStore {
        self.store.as_ref()
    }

    /// Stops the server and drops the run's PostgreSQL database, if it made one.
    async fn finish(self) -> Result<()> {
        self.server.shutdown().await;
        if let Some(pg) = &self.pg {
            pg.drop_database().await?;
        }
        Ok(())
    }
}

async fn create_token(store: &dyn Store, uses: usize) -> Result<String> {
    let secret = TokenKind::Enrollment
        .generate()
        .map_err(|_| BenchError::Setup("random generator failed".into()))?;
    let now = OffsetDateTime::now_utc();
    store
        .create_enrollment_token(&NewEnrollmentToken {
            id: EnrollmentTokenId::new(),
            token_hash: TokenHash::of(secret.expose()),
            description: Some("steward-bench".into()),
            max_uses: Some(u32::try_from(uses).unwrap_or(u32::MAX)),
            expires_at: Some(now + time::Duration::hours(6)),
            group: None,
            created_at: now,
        })
        .await?;
    Ok(secret.expose().to_owned())
}

// ---- Enrollment ----

/// Keys for `n` devices. Benchmark shortcut (as `steward-sim load --shared-key`): one RSA key
/// loaded `n` times, before the clock starts, so RSA generation does not compete with the server.
async fn device_keys(n: usize) -> Result<Vec<DeviceKey>> {
    tokio::task::spawn_blocking(move || -> Result<Vec<DeviceKey>> {
        let key = DeviceKey::generate_rsa(2048)?;
        let der = key.pkcs8_der();
        let mut keys = vec![key];
        for _ in 1..n {
            keys.push(DeviceKey::from_pkcs8(&der)?);
        }
        Ok(keys)
    })
    .await?
}

async fn enroll_fleet(
    url: &str,
    roots: &Arc<Vec<Vec<u8>>>,
    token: &str,
    n: usize,
    concurrency: usize,
) -> Result<(Vec<ManagedDevice>, Vec<Duration>, Duration, Vec<String>)> {
    let keys = Arc::new(Mutex::new(
        device_keys(n).await?.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (keys, roots, url, token) = (keys.clone(), roots.clone(), url.to_owned(), token.to_owned());
        set.spawn(async move {
            let mut out = (Vec::new(), Vec::new(), Vec::new());
            loop {
                let next = keys.lock().map(|mut k| k.pop()).unwrap_or(None);
                let Some((i, key)) = next else { break };
                let t = Instant::now();
                let mut opts = EnrollOptions::new(
                    url.clone(),
                    format!("bench{i:06}@bench.example"),
                    Credentials::Password(token.clone()),
                );
                opts.device_name = format!("BENCH-{i:06}");
                // A fresh client per device: Windows enrolls over its own connection.
                let r = match HttpsClient::new(&roots, None) {
                    Ok(client) => steward_sim::enroll_with_key(&client, &opts, key)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match r {
                    Ok(enrolled) => {
                        out.1.push(t.elapsed());
                        let profile = DeviceProfile::random(&enrolled.device_id);
                        out.0.push(ManagedDevice::from_enrolled(enrolled, profile));
                    }
                    Err(e) => out.2.push(e),
                }
            }
            out
        });
    }
    let (mut devices, mut lat, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(r) = set.join_next().await {
        let (d, l, e) = r?;
        devices.extend(d);
        lat.extend(l);
        errors.extend(e);
    }
    Ok((devices, lat, started.elapsed(), errors))
}

async fn enrollment(server: &BenchServer, opts: &BenchOptions, report: &mut Report) -> Result<Vec<ManagedDevice>> {
    let n = opts.enroll_devices.max(opts.devices).max(1);
    let name = "enrollment end to end (probe, Discover, Policy, RST, stored)";
    enroll_and_report(server, n, opts.concurrency, name, report).await
}

/// Enrolls `n` devices over the wire, `concurrency` at a time, and reports the rate as `name`.
async fn enroll_and_report(
    server: &BenchServer,
    n: usize,
    concurrency: usize,
    name: &str,
    report: &mut Report,
) -> Result<Vec<ManagedDevice>> {
    let token = create_token(server.store(), n).await?;
    let (devices, mut lat, wall, errors) = enroll_fleet(&server.url, &server.roots, &token, n, concurrency).await?;
    let l = latency(&mut lat);
    report.add(
        name,
        devices.len() as f64 / wall.as_secs_f64(),
        "enroll/s",
        format!(
            "{} ok, {} failed, concurrency {concurrency}, p50 {:.1} ms, p99 {:.1} ms",
            devices.len(),
            errors.len(),
            l.p50_ms,
            l.p99_ms
        ),
    );
    if let Some(e) = errors.first() {
        eprintln!("  first enrollment error: {e}");
    }
    Ok(devices)
}

// ---- Management sessions ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConnMode {
    /// A new connection per session with a full handshake (no resumption possible).
    Fresh,
    /// A new connection per session, resuming the device's previous TLS session when the server
    /// allows it (Windows keeps its TLS session cache across OMA-DM sessions).
    Resumed,
    /// One connection kept open across sessions: no handshake at all after the first.
    Reused,
}

impl ConnMode {
    pub fn label(self) -> &'static str {
        match self {
            ConnMode::Fresh => "new connection per session, full handshake",
            ConnMode::Resumed => "new connection per session, TLS resumption",
            ConnMode::Reused => "connection reused across sessions",
        }
    }
}

struct Dev {
    device: ManagedDevice,
    enrollment: EnrollmentId,
    /// The Windows TLS stack the device plays ([`TlsProfile`]); `tls` is built for it.
    profile: TlsProfile,
    tls: Arc<rustls::ClientConfig>,
    kept: Option<HttpsClient>,
}

impl Dev {
    /// Plays `profile`'s TLS stack from now on: a new client configuration (so no TLS session of
    /// the other version is resumed) and no kept connection.
    fn set_profile(&mut self, profile: TlsProfile, roots: &[Vec<u8>]) -> Result<()> {
        self.tls = HttpsClient::tls_config_for(roots, self.device.tls_identity(), profile)?;
        self.profile = profile;
        self.kept = None;
        Ok(())
    }
}

/// What one session is.
#[derive(Clone)]
enum Work {
    Steward,
    /// The baseline: `posts` POSTs of `body` to the bare server.
    Bare {
        url: String,
        body: Bytes,
        posts: usize,
    },
}

#[derive(Default)]
struct RoundResult {
    latencies: Vec<Duration>,
    messages: u64,
    commands: u64,
    errors: Vec<String>,
}

async fn one_session(d: &mut Dev, mode: ConnMode, work: &Work, roots: &[Vec<u8>]) -> Result<(u64, u64)> {
    let fresh;
    let client = match mode {
        ConnMode::Fresh => {
            fresh = HttpsClient::with_profile(roots, d.device.tls_identity(), d.profile)?;
            &fresh
        }
        ConnMode::Resumed => {
            fresh = HttpsClient::with_config(d.tls.clone());
            &fresh
        }
        ConnMode::Reused => d.kept.get_or_insert_with(|| HttpsClient::with_config(d.tls.clone())),
    };
    match work {
        Work::Steward => {
            let r = d.device.run_session(client, SessionTrigger::Scheduled).await?;
            if !r.ended {
                return Err(BenchError::Setup("the server did not end the session".into()));
            }
            Ok((u64::from(r.messages), r.received.len() as u64))
        }
        Work::Bare { url, body, posts } => {
            for _ in 0..*posts {
                let r = client.post(url, SYNCML, body.clone()).await?;
                if !r.status.is_success() {
                    return Err(BenchError::Setup(format!("bare server answered {}", r.status)));
                }
            }
            Ok((*posts as u64, 0))
        }
    }
}

/// One session per device, `concurrency` at a time; returns the devices and what happened.
async fn round(
    devs: Vec<Dev>,
    mode: ConnMode,
    work: &Work,
    concurrency: usize,
    roots: &Arc<Vec<Vec<u8>>>,
) -> Result<(Vec<Dev>, RoundResult, Duration)> {
    let queue = Arc::new(Mutex::new(devs.into_iter().collect::<VecDeque<_>>()));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (queue, roots, work) = (queue.clone(), roots.clone(), work.clone());
        set.spawn(async move {
            let mut done = Vec::new();
            let mut res = RoundResult::default();
            loop {
                let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                let Some(mut d) = next else { break };
                let t = Instant::now();
                match one_session(&mut d, mode, &work, &roots).await {
                    Ok((m, c)) => {
                        res.latencies.push(t.elapsed());
                        res.messages += m;
                        res.commands += c;
                    }
                    Err(e) => res.errors.push(e.to_string()),
                }
                done.push(d);
            }
            (done, res)
        });
    }
    let mut devs = Vec::new();
    let mut total = RoundResult::default();
    while let Some(r) = set.join_next().await {
        let (d, res) = r?;
        devs.extend(d);
        total.latencies.extend(res.latencies);
        total.messages += res.messages;
        total.commands += res.commands;
        total.errors.extend(res.errors);
    }
    Ok((devs, total, started.elapsed()))
}

fn replace_commands(enrollment: EnrollmentId, n: usize, tag: &str, now: OffsetDateTime) -> Vec<NewCommand> {
    (0..n)
        .map(|i| NewCommand {
            id: CommandId::new(),
            enrollment_id: enrollment,
            payload: OmaDmCommand::single(
                Verb::Replace,
                CommandItem {
                    target: format!("./Device/Vendor/MSFT/Policy/Config/Bench/Setting{i}"),
                    format: Some("int".into()),
                    type_: None,
                    data: Some(tag.to_owned()),
                },
            )
            .to_payload(),
            priority: 0,
            origin: CommandOrigin::Admin,
            created_at: now,
            expires_at: None,
        })
        .collect()
}

/// What the store-size figure copies into every synthetic device: a real inventoried device's
/// facts and session state.
#[derive(Debug, Clone, Default)]
pub struct DeviceTemplate {
    facts: Vec<FactUpdate>,
    session: SessionRecord,
}

/// How many sessions a measurement runs, how many at once.
#[derive(Debug, Clone, Copy)]
struct Size {
    sessions: usize,
    concurrency: usize,
}

struct Measured {
    rate: f64,
    lat: Latency,
    sessions: usize,
    messages_per_session: f64,
    commands_per_session: f64,
    errors: usize,
    /// CPU time of this whole process (server and simulated clients, user + system) per session.
    cpu_us_per_session: f64,
    /// Context switches of this process's threads per session.
    switches_per_session: f64,
    /// CPU time of the server's threads alone (its runtime with its blocking pool, the SQLite writer)
    /// per session: what one session costs the server, without the simulated device's own work.
    server_cpu_us_per_session: f64,
    /// CPU time of the PostgreSQL backends serving the run's database per session (0 on SQLite).
    db_cpu_us_per_session: f64,
}

/// CPU ticks and context switches of this process so far. On a shared machine throughput moves
/// with the neighbours' load; CPU per session moves much less, so before/after comparisons of a
/// change use it (next to callgrind's instruction counts).
#[derive(Debug, Clone, Copy, Default)]
struct ProcCounters {
    cpu_ticks: u64,
    switches: u64,
    /// User + system ticks of the server's threads (see [`is_server_thread`]).
    server_ticks: u64,
    /// User + system ticks of the PostgreSQL backends serving the run's database ([`PG_DATABASE`]),
    /// which run outside this process; 0 on SQLite.
    db_ticks: u64,
}

/// User + system ticks of the live PostgreSQL backend processes whose command line names
/// `database` (`postgres: <user> <database> <client> <state>`, proc(5) `cmdline`).
fn database_ticks(database: &str) -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut ticks = 0;
    for p in procs.flatten() {
        let path = p.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.starts_with("postgres: ") || !cmdline.split_whitespace().any(|w| w == database) {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(path.join("stat"))
            && let Some((_, t)) = thread_ticks(&stat)
        {
            ticks += t;
        }
    }
    ticks
}

/// The in-process server's threads, by name: its runtime's workers and blocking pool (where the
/// store's reads other than the check-in's run) and the SQLite writer thread (the clients use
/// neither).
fn is_server_thread(comm: &str) -> bool {
    comm.starts_with(SERVER_THREADS) || comm.starts_with("steward-sqlite")
}

/// (name, user + system ticks) of one thread from its `/proc/<pid>/task/<tid>/stat`.
fn thread_ticks(stat: &str) -> Option<(&str, u64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3 of proc(5), utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

impl ProcCounters {
    fn read() -> Self {
        let cpu_ticks = steward_sim::stats::read_proc(None).map_or(0, |s| s.cpu_ticks);
        // Summed over the live threads (tokio workers, SQLite connection workers); threads that
        // ended lose their count, which the measured phase does not have.
        let (mut switches, mut server_ticks) = (0, 0);
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for t in tasks.flatten() {
                if let Ok(stat) = std::fs::read_to_string(t.path().join("stat"))
                    && let Some((comm, ticks)) = thread_ticks(&stat)
                    && is_server_thread(comm)
                {
                    server_ticks += ticks;
                }
                let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
                    continue;
                };
                switches += status
                    .lines()
                    .filter(|l| {
                        l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:")
                    })
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        Self {
            cpu_ticks,
            switches,
            server_ticks,
            db_ticks: PG_DATABASE.get().map_or(0, |d| database_ticks(d)),
        }
    }
}

async fn measure(
    mut devs: Vec<Dev>,
    mode: ConnMode,
    work: &Work,
    replaces: usize,
    store: &dyn Store,
    size: Size,
    roots: &Arc<Vec<Vec<u8>>>,
) -> Result<(Vec<Dev>, Measured)> {
    let rounds = (size.sessions / devs.len().max(1)).max(1);
    let mut all = RoundResult::default();
    let mut wall = Duration::ZERO;
    let (mut cpu_ticks, mut switches, mut server_ticks, mut db_ticks) = (0u64, 0u64, 0u64, 0u64);
    for r in 0..rounds {
        if replaces > 0 {
            // Queued before the clock starts: the figure is the session, not the enqueue.
            let now = OffsetDateTime::now_utc();
            let cmds: Vec<NewCommand> = devs
                .iter()
                .flat_map(|d| replace_commands(d.enrollment, replaces, &r.to_string(), now))
                .collect();
            store.enqueue_commands(&cmds).await?;
        }
        let before = ProcCounters::read();
        let (back, res, took) = round(devs, mode, work, size.concurrency, roots).await?;
        let after = ProcCounters::read();
        cpu_ticks += after.cpu_ticks.saturating_sub(before.cpu_ticks);
        switches += after.switches.saturating_sub(before.switches);
        server_ticks += after.server_ticks.saturating_sub(before.server_ticks);
        db_ticks += after.db_ticks.saturating_sub(before.db_ticks);
        devs = back;
        wall += took;
        all.latencies.extend(res.latencies);
        all.messages += res.messages;
        all.commands += res.commands;
        all.errors.extend(res.errors);
    }
    if let Some(e) = all.errors.first() {
        eprintln!("  first error ({} in all): {e}", all.errors.len());
    }
    let ok = all.latencies.len();
    let m = Measured {
        rate: ok as f64 / wall.as_secs_f64(),
        lat: latency(&mut all.latencies),
        sessions: ok,
        messages_per_session: all.messages as f64 / ok.max(1) as f64,
        commands_per_session: all.commands as f64 / ok.max(1) as f64,
        errors: all.errors.len(),
        cpu_us_per_session: cpu_ticks as f64 * 1e6 / steward_sim::stats::CLK_TCK as f64 / ok.max(1) as f64,
        switches_per_session: switches as f64 / ok.max(1) as f64,
        server_cpu_us_per_session: server_ticks as f64 * 1e6 / steward_sim::stats::CLK_TCK as f64 / ok.max(1) as f64,
        db_cpu_us_per_session: db_ticks as f64 * 1e6 / steward_sim::stats::CLK_TCK as f64 / ok.max(1) as f64,
    };
    Ok((devs, m))
}

fn add_measured(report: &mut Report, name: String, m: &Measured, baseline: Option<f64>) {
    let mut note = format!(
        "{} sessions, {} failed, {:.1} msgs and {:.1} cmds/session, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        m.sessions, m.errors, m.messages_per_session, m.commands_per_session, m.lat.p50_ms, m.lat.p99_ms, m.lat.max_ms
    );
    note.push_str(&format!(
        ", process CPU {:.0} µs (server {:.0} µs) and {:.1} context switches/session",
        m.cpu_us_per_session, m.server_cpu_us_per_session, m.switches_per_session
    ));
    if PG_DATABASE.get().is_some() {
        note.push_str(&format!(
            ", PostgreSQL backends CPU {:.0} µs/session",
            m.db_cpu_us_per_session
        ));
    }
    if let Some(b) = baseline.filter(|b| *b > 0.0) {
        note.push_str(&format!(", {:.0} % of bare baseline", 100.0 * m.rate / b));
    }
    report.add(name, m.rate, "sessions/s", note);
}

/// The enrolled devices as session clients, after three warm-up sessions each (not measured): the
/// first carries the inventory, the next ones settle the poll schedule; after them a check-in is
/// idle (the figures print commands/session to show it).
async fn prepare_devs(
    server: &BenchServer,
    devices: Vec<ManagedDevice>,
    limit: usize,
    concurrency: usize,
) -> Result<Vec<Dev>> {
    let store = server.store();
    let mut devs = Vec::new();
    for device in devices.into_iter().take(limit.max(1)) {
        let id = DeviceId::parse(&device.profile.device_id)
            .ok_or_else(|| BenchError::Setup("simulator produced a bad DeviceID".into()))?;
        let e = store
            .active_enrollment_by_device_id(&id)
            .await?
            .ok_or_else(|| BenchError::Setup("enrolled device not in the store".into()))?;
        let tls = HttpsClient::tls_config(&server.roots, device.tls_identity())?;
        devs.push(Dev {
            device,
            enrollment: e.id,
            profile: TlsProfile::Windows11,
            tls,
            kept: None,
        });
    }
    if devs.is_empty() {
        return Err(BenchError::Setup("no device enrolled".into()));
    }
    let mut warm_up_errors = Vec::new();
    for _ in 0..3 {
        let (back, res, _) = round(devs, ConnMode::Resumed, &Work::Steward, concurrency, &server.roots).await?;
        devs = back;
        warm_up_errors.extend(res.errors);
    }
    if let Some(e) = warm_up_errors.first() {
        eprintln!("  warm-up errors ({}): {e}", warm_up_errors.len());
    }
    Ok(devs)
}

/// The bare baseline server and what it is fed: the device's message 1 and our answer to it
/// (taken from `dev`'s stored session state), so both sides move the same bytes.
struct Baseline {
    url: String,
    request: Bytes,
    answer: Bytes,
    task: tokio::task::JoinHandle<()>,
}

async fn start_baseline(server: &BenchServer, dev: &mut Dev) -> Result<(Baseline, DeviceTemplate)> {
    let store = server.store();
    let request = {
        let d = &mut dev.device;
        let msg = d.start_session(SessionTrigger::Scheduled)?;
        d.end_session();
        Bytes::from(syncml::write(&msg))
    };
    let state = store
        .session_record(dev.enrollment)
        .await?
        .ok_or_else(|| BenchError::Setup("no session state after warm-up".into()))?;
    let template = DeviceTemplate {
        facts: store
            .device_facts(dev.enrollment)
            .await?
            .into_iter()
            .map(|f| FactUpdate::new(f.name, f.value))
            .collect(),
        session: state.clone(),
    };
    let answer = Bytes::from(state.last_response.clone());
    let tls = steward_server::tls::server_config(&server.server.pki).map_err(|e| BenchError::Setup(e.to_string()))?;
    let (addr, task) = start_bare(&server.handle()?, tls, answer.clone()).await?;
    let baseline = Baseline {
        url: format!("https://localhost:{}{MANAGEMENT_PATH}", addr.port()),
        request,
        answer,
        task,
    };
    Ok((baseline, template))
}

impl Baseline {
    fn work(&self, posts: f64) -> Work {
        Work::Bare {
            url: self.url.clone(),
            body: self.request.clone(),
            posts: posts.round().max(1.0) as usize,
        }
    }
}

async fn sessions(
    server: &BenchServer,
    devices: Vec<ManagedDevice>,
    opts: &BenchOptions,
    report: &mut Report,
) -> Result<DeviceTemplate> {
    let store = server.store();
    let mut devs = prepare_devs(server, devices, opts.devices, opts.concurrency).await?;
    let roots = &server.roots;
    let (baseline, template) = start_baseline(server, &mut devs[0]).await?;
    let size = Size {
        sessions: opts.sessions,
        concurrency: opts.concurrency,
    };

    let mut idle_msgs = 1.0;
    for mode in [ConnMode::Fresh, ConnMode::Resumed, ConnMode::Reused] {
        let (back, idle) = measure(devs, mode, &Work::Steward, 0, store, size, roots).await?;
        devs = back;
        idle_msgs = idle.messages_per_session;
        let bare_work = baseline.work(idle.messages_per_session);
        let (back, bare) = measure(devs, mode, &bare_work, 0, store, size, roots).await?;
        devs = back;
        add_measured(
            report,
            format!("bare hyper+rustls baseline, {}", mode.label()),
            &bare,
            None,
        );
        add_measured(
            report,
            format!("idle check-in, {}", mode.label()),
            &idle,
            Some(bare.rate),
        );
        let (back, ten) = measure(devs, mode, &Work::Steward, 10, store, size, roots).await?;
        devs = back;
        add_measured(report, format!("10-Replace session, {}", mode.label()), &ten, None);
    }
    eprintln!(
        "  (baseline: {} request bytes, {} answer bytes, {idle_msgs:.1} POSTs per session)",
        baseline.request.len(),
        baseline.answer.len()
    );
    baseline.task.abort();
    Ok(template)
}

/// `steward-bench checkins`: only the idle check-in, in one connection mode, optionally next to the
/// bare baseline. Small and repeatable enough to run under `valgrind --tool=callgrind` or
/// `perf record` when comparing one change of the hot path (docs/BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct CheckinOptions {
    /// Devices enrolled and taking part.
    pub devices: usize,
    /// Measured sessions (whole rounds over `devices`).
    pub sessions: usize,
    pub concurrency: usize,
    pub mode: ConnMode,
    /// Also measure the bare baseline the same way.
    pub bare: bool,
    /// Running under `valgrind --tool=callgrind`: zero its counters just before the measured
    /// sessions and dump them right after (`callgrind_control -z/-d`), so the profile holds the
    /// measured sessions only, not the setup (key generation, enrollment, warm-up).
    pub callgrind: bool,
    /// Also measure the idle check-in with every device on TLS 1.2 only, as Windows 10's
    /// Schannel speaks it ([`TlsProfile::Windows10`]), right after the TLS 1.3 figure in the same
    /// run, and print the ratio of the two.
    pub tls12: bool,
    /// Run the server on PostgreSQL: a fresh database on the server this URL names (its database
    /// part is only where the run connects to create it), dropped at the end. None: SQLite.
    pub database_url: Option<String>,
}

/// Asks callgrind (`callgrind_control`) to act on this process; see [`CheckinOptions::callgrind`].
fn callgrind_control(flag: &str) -> Result<()> {
    let status = std::process::Command::new("callgrind_control")
        .arg(flag)
        .arg(std::process::id().to_string())
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        return Err(BenchError::Setup(format!("callgrind_control {flag} failed: {status}")));
    }
    Ok(())
}

pub async fn checkins(opts: &CheckinOptions) -> Result<Report> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut report = Report::default();
    let server = BenchServer::start_on(opts.database_url.as_deref()).await?;
    let n = opts.devices.max(1);
    let name = "enrollment end to end (probe, Discover, Policy, RST, stored)";
    let devices = enroll_and_report(&server, n, opts.concurrency, name, &mut report).await?;
    let mut devs = prepare_devs(&server, devices, n, opts.concurrency).await?;
    let size = Size {
        sessions: opts.sessions,
        concurrency: opts.concurrency,
    };
    if opts.callgrind {
        callgrind_control("-z")?;
    }
    let (back, idle) = measure(devs, opts.mode, &Work::Steward, 0, server.store(), size, &server.roots).await?;
    if opts.callgrind {
        callgrind_control("-d")?;
    }
    devs = back;
    let baseline_rate = if opts.bare {
        let (baseline, _) = start_baseline(&server, &mut devs[0]).await?;
        let work = baseline.work(idle.messages_per_session);
        let (back, bare) = measure(devs, opts.mode, &work, 0, server.store(), size, &server.roots).await?;
        devs = back;
        add_measured(
            &mut report,
            format!("bare hyper+rustls baseline, {}", opts.mode.label()),
            &bare,
            None,
        );
        baseline.task.abort();
        Some(bare.rate)
    } else {
        None
    };
    add_measured(
        &mut report,
        format!("idle check-in, {}", opts.mode.label()),
        &idle,
        baseline_rate,
    );
    if opts.tls12 {
        // Same devices, same server, same mode: only the TLS stack changes. One unmeasured round
        // first, so that a resumed mode resumes TLS 1.2 sessions rather than paying for a full
        // handshake once per device inside the figure.
        for d in &mut devs {
            d.set_profile(TlsProfile::Windows10, &server.roots)?;
        }
        let (back, res, _) = round(devs, opts.mode, &Work::Steward, opts.concurrency, &server.roots).await?;
        devs = back;
        if let Some(e) = res.errors.first() {
            eprintln!("  TLS 1.2 warm-up errors ({}): {e}", res.errors.len());
        }
        let (_, idle12) = measure(devs, opts.mode, &Work::Steward, 0, server.store(), size, &server.roots).await?;
        add_measured(
            &mut report,
            format!("idle check-in, TLS 1.2 (Windows 10), {}", opts.mode.label()),
            &idle12,
            baseline_rate,
        );
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        report.add(
            "idle check-in rate, TLS 1.2 / TLS 1.3",
            ratio(idle12.rate, idle.rate),
            "ratio",
            format!(
                "{:.1} vs {:.1} sessions/s; server CPU {:.0} vs {:.0} µs/session (ratio {:.2})",
                idle12.rate,
                idle.rate,
                idle12.server_cpu_us_per_session,
                idle.server_cpu_us_per_session,
                ratio(idle12.server_cpu_us_per_session, idle.server_cpu_us_per_session)
            ),
        );
    }
    server.finish().await?;
    Ok(report)
}

// ---- Policy storm ----

/// `steward-bench storm`: a new "profile" (a set of Policy CSP Replace commands) is assigned to a
/// whole enrolled fleet at once, then every device checks in. Profiles as objects do not exist yet;
/// on the wire a profile is exactly such a set of queued Replace commands.
#[derive(Debug, Clone)]
pub struct StormOptions {
    /// Devices enrolled over the wire (own certificate each; one RSA key loaded per device, as
    /// `steward-sim load --shared-key`).
    pub devices: usize,
    /// Replace commands in the profile.
    pub commands: usize,
    /// Check-ins (and enrollments) in flight at once.
    pub concurrency: usize,
    /// 0: every device checks in as soon as a slot is free (all at once). Otherwise device i starts
    /// its check-in `i × spread / devices` seconds after the assignment: a poll schedule compressed
    /// into `spread` seconds.
    pub spread_seconds: f64,
}

/// One device's storm check-in: when it started and ended, relative to the assignment.
struct StormSample {
    start: Duration,
    end: Duration,
    commands: usize,
}

/// Runs the storm check-ins: each device one session over a new connection with TLS resumption
/// (what Windows does on its poll), started on the schedule `spread` describes.
async fn storm_round(
    devs: Vec<Dev>,
    t0: Instant,
    spread: Duration,
    concurrency: usize,
    roots: &Arc<Vec<Vec<u8>>>,
) -> Result<(Vec<Dev>, Vec<StormSample>, Vec<String>)> {
    let n = devs.len().max(1);
    let queue = Arc::new(Mutex::new(devs.into_iter().enumerate().collect::<VecDeque<_>>()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (queue, roots) = (queue.clone(), roots.clone());
        set.spawn(async move {
            let (mut done, mut samples, mut errors) = (Vec::new(), Vec::new(), Vec::new());
            loop {
                let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                let Some((i, mut d)) = next else { break };
                let due = t0 + spread.mul_f64(i as f64 / n as f64);
                tokio::time::sleep_until(due.into()).await;
                let start = t0.elapsed();
                match one_session(&mut d, ConnMode::Resumed, &Work::Steward, &roots).await {
                    Ok((_, commands)) => samples.push(StormSample {
                        start,
                        end: t0.elapsed(),
                        commands: commands as usize,
                    }),
                    Err(e) => errors.push(e.to_string()),
                }
                done.push(d);
            }
            (done, samples, errors)
        });
    }
    let (mut devs, mut samples, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(r) = set.join_next().await {
        let (d, s, e) = r?;
        devs.extend(d);
        samples.extend(s);
        errors.extend(e);
    }
    Ok((devs, samples, errors))
}

/// The newest device event's seq (0 if none).
async fn newest_event(store: &dyn Store) -> Result<i64> {
    let mut after = 0;
    loop {
        let page = store.device_events_after(after, 10_000).await?;
        match page.last() {
            Some(e) => after = e.seq,
            None => return Ok(after),
        }
    }
}

/// Acknowledged and failed command events after `after` whose command is in `ids`.
async fn recorded_outcomes(
    store: &dyn Store,
    after: i64,
    ids: &std::collections::HashSet<String>,
) -> Result<(usize, usize)> {
    let (mut acked, mut failed, mut cursor) = (0, 0, after);
    loop {
        let page = store.device_events_after(cursor, 10_000).await?;
        let Some(last) = page.last() else {
            return Ok((acked, failed));
        };
        cursor = last.seq;
        for e in &page {
            let ours = e
                .data
                .get("command_id")
                .and_then(|v| v.as_str())
                .is_some_and(|id| ids.contains(id));
            match e.kind {
                EventKind::CommandAcknowledged if ours => acked += 1,
                EventKind::CommandFailed if ours => failed += 1,
                _ => {}
            }
        }
    }
}

/// Resident set size of this process, MB.
fn own_rss_mb() -> f64 {
    steward_sim::stats::read_proc(None).map_or(0.0, |s| s.rss_bytes as f64 / 1e6)
}

pub async fn storm(opts: &StormOptions) -> Result<Report> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut report = Report::default();
    let server = BenchServer::start().await?;
    let n = opts.devices.max(1);
    let rss_before = own_rss_mb();
    eprintln!("policy storm: enrolling {n} devices");
    let devices = enroll_and_report(
        &server,
        n,
        opts.concurrency,
        &format!("policy storm: enroll {n} devices"),
        &mut report,
    )
    .await?;
    eprintln!("policy storm: warm-up sessions (inventory, poll schedule)");
    let devs = prepare_devs(&server, devices, n, opts.concurrency).await?;
    let enrolled = devs.len();
    report.add(
        "policy storm: this process's RSS per enrolled simulated device",
        (own_rss_mb() - rss_before) * 1e6 / enrolled.max(1) as f64,
        "bytes",
        format!(
            "{:.1} MB for {enrolled} devices after 3 sessions each; an upper bound for the simulator, as \
             the in-process server's own growth is included",
            own_rss_mb() - rss_before
        ),
    );

    let store = server.store();
    let seq0 = newest_event(store).await?;
    let now = OffsetDateTime::now_utc();
    let cmds: Vec<NewCommand> = devs
        .iter()
        .flat_map(|d| {
            (0..opts.commands).map(move |i| NewCommand {
                id: CommandId::new(),
                enrollment_id: d.enrollment,
                payload: OmaDmCommand::single(
                    Verb::Replace,
                    CommandItem {
                        target: format!("./Device/Vendor/MSFT/Policy/Config/StormProfile/Setting{i}"),
                        format: Some("int".into()),
                        type_: None,
                        data: Some("1".into()),
                    },
                )
                .to_payload(),
                priority: 0,
                origin: CommandOrigin::Admin,
                created_at: now,
                expires_at: None,
            })
        })
        .collect();
    let ids: std::collections::HashSet<String> = cmds.iter().map(|c| c.id.to_string()).collect();
    eprintln!(
        "policy storm: assigning {} commands, then every device checks in",
        cmds.len()
    );
    let assigned = Instant::now();
    store.enqueue_commands(&cmds).await?;
    let assign = assigned.elapsed();
    report.add(
        format!(
            "policy storm: assign a {}-Replace profile to {enrolled} devices",
            opts.commands
        ),
        assign.as_secs_f64(),
        "s",
        format!("{} commands in one store call", cmds.len()),
    );

    let t0 = Instant::now();
    let spread = Duration::from_secs_f64(opts.spread_seconds.max(0.0));
    let (_devs, samples, errors) = storm_round(devs, t0, spread, opts.concurrency, &server.roots).await?;
    if let Some(e) = errors.first() {
        eprintln!("  first check-in error ({} in all): {e}", errors.len());
    }
    let (acked, failed) = recorded_outcomes(store, seq0, &ids).await?;
    let received: usize = samples.iter().map(|s| s.commands).sum();
    let last = samples.iter().map(|s| s.end).max().unwrap_or_default();
    let mut per_device: Vec<Duration> = samples.iter().map(|s| s.end.saturating_sub(s.start)).collect();
    let mut since_assign: Vec<Duration> = samples.iter().map(|s| s.end).collect();
    let l = latency(&mut per_device);
    let a = latency(&mut since_assign);
    let schedule = if spread.is_zero() {
        format!("all at once, {} in flight", opts.concurrency)
    } else {
        format!(
            "check-ins spread evenly over {:.0} s, at most {} in flight",
            spread.as_secs_f64(),
            opts.concurrency
        )
    };
    report.add(
        format!("policy storm: {enrolled} devices, time from assignment to the last acknowledgement"),
        (assign + last).as_secs_f64(),
        "s",
        format!(
            "{schedule}; {} sessions ok, {} failed; {acked} acknowledgements and {failed} failures recorded \
             in the store of {} commands ({received} executed by the devices); from assignment: p50 {:.1} s, \
             p99 {:.1} s",
            samples.len(),
            errors.len(),
            cmds.len(),
            (assign.as_secs_f64() * 1e3 + a.p50_ms) / 1e3,
            (assign.as_secs_f64() * 1e3 + a.p99_ms) / 1e3
        ),
    );
    report.add(
        "policy storm: per device, check-in start to acknowledgement recorded, p99",
        l.p99_ms,
        "ms",
        format!(
            "p50 {:.1} ms, max {:.1} ms (the session ends after the server committed the statuses, so \
             this includes sending the final answer)",
            l.p50_ms, l.max_ms
        ),
    );
    server.server.shutdown().await;
    Ok(report)
}

/// The baseline: hyper http1 with keep-alive on the server's own rustls configuration (same
/// certificates, same client-certificate verifier, same resumption settings), answering every
/// POST with a fixed body the size of our idle answer. No routing, no store, no SyncML.
async fn start_bare(
    rt: &tokio::runtime::Handle,
    tls: Arc<rustls::ServerConfig>,
    answer: Bytes,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    // Bound and served on the server runtime, as Steward is, so its CPU is counted the same way.
    let listener = rt.spawn(TcpListener::bind("127.0.0.1:0")).await??;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let task = rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        let mut resp = http::Response::new(Full::new(answer));
                        resp.headers_mut()
                            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(SYNCML));
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

// ---- Store size, fan-out, server memory ----

fn synthetic_enrollment(i: usize, now: OffsetDateTime) -> Result<Enrollment> {
    let device_id = DeviceId::parse(&uuid::Uuid::new_v4().simple().to_string().to_uppercase())
        .ok_or_else(|| BenchError::Setup("bad synthetic DeviceID".into()))?;
    let thumb = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    // 40 hex digits like a SHA-1 thumbprint (a UUID is 32).
    let thumbprint = Thumbprint::parse(&format!("{thumb}{}", &thumb[..8]))
        .ok_or_else(|| BenchError::Setup("bad synthetic thumbprint".into()))?;
    Ok(Enrollment {
        id: EnrollmentId::new(),
        platform: Platform::Windows,
        device_id,
        hardware_id: Some(uuid::Uuid::new_v4().simple().to_string()),
        device_name: Some(format!("SYNTH-{i:06}")),
        os_version: Some("10.0.26100.2605".into()),
        os_edition: Some("72".into()),
        enrollment_type: EnrollmentType::Full,
        user_email: Some(format!("synth{i:06}@bench.example")),
        auth_method: AuthMethod::EnrollmentToken,
        enrollment_token_id: None,
        group_id: None,
        cert_serial: CertSerial::new(uuid::Uuid::new_v4().simple().to_string()),
        cert_thumbprint: thumbprint,
        cert_not_after: now + time::Duration::days(365),
        previous_cert: None,
        state: EnrollmentState::Active,
        enrolled_at: now,
        updated_at: now,
        last_seen_at: None,
    })
}

async fn checkpoint(db: &Path) -> Result<()> {
    let db = db.to_owned();
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(&db)?;
        // The pragma answers with a row (busy, log pages, checkpointed pages).
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    })
    .await
    .map_err(|e| BenchError::Setup(format!("checkpoint: {e}")))?
    .map_err(|e| BenchError::Setup(format!("checkpoint: {e}")))
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn db_bytes(dir: &Path) -> (u64, u64) {
    let db = dir.join("steward.db");
    (file_len(&db), file_len(&dir.join("steward.db-wal")))
}

/// The admin surfaces' reads over the populated store: every device listed in pages of 100 by name
/// (keyset pagination, as the console and `GET /devices` page), then the dashboard's aggregates.
async fn admin_reads(store: &dyn Store, n: usize, report: &mut Report) -> Result<()> {
    const PAGE: u32 = 100;
    let t = Instant::now();
    let mut q = DeviceQuery {
        sort: DeviceSort::Name,
        limit: PAGE,
        ..Default::default()
    };
    let (mut pages, mut listed) = (0usize, 0usize);
    loop {
        let page = store.list_devices(&q).await?;
        pages += 1;
        listed += page.len();
        let Some(last) = page.last() else { break };
        if page.len() < PAGE as usize {
            break;
        }
        q.after = Some(DeviceCursor {
            key: DeviceSort::Name.key_of(last),
            id: last.id,
        });
    }
    let list = t.elapsed();
    if listed != n {
        return Err(BenchError::Setup(format!("listed {listed} of {n} devices")));
    }
    const AGGREGATES: usize = 20;
    let t = Instant::now();
    for _ in 0..AGGREGATES {
        store.admin_counts().await?;
        store.device_stats(OffsetDateTime::now_utc()).await?;
        store.group_device_counts().await?;
    }
    let aggregates = t.elapsed();
    report.add(
        format!("admin reads: list {n} devices in pages of {PAGE}"),
        pages as f64 / list.as_secs_f64(),
        "pages/s",
        format!("{:.1} ms per page", list.as_secs_f64() * 1e3 / pages as f64),
    );
    report.add(
        format!("admin reads: dashboard aggregates over {n} devices"),
        aggregates.as_secs_f64() * 1e3 / AGGREGATES as f64,
        "ms",
        "admin_counts + device_stats + group_device_counts, one round",
    );
    Ok(())
}

async fn store_and_memory(opts: &BenchOptions, template: &DeviceTemplate, report: &mut Report) -> Result<()> {
    let n = opts.store_devices.max(1);
    let dir = tempfile::tempdir()?;
    let config = server_config(dir.path(), 0);
    let store = steward_server::open_store(&config).await?;
    let (db0, wal0) = db_bytes(dir.path());
    let started = Instant::now();
    // Each device is written as the server writes it: its enrollment commit, then one session
    // commit with a real device's facts and session state. POPULATE_TASKS of them in flight keep
    // the store's writer busy, so 100,000 devices take minutes, not the better part of an hour.
    const POPULATE_TASKS: usize = 64;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let template = Arc::new(template.clone());
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..POPULATE_TASKS.min(n) {
        let (store, next, template) = (store.clone(), next.clone(), template.clone());
        set.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, BenchError>(ids);
                }
                let now = OffsetDateTime::now_utc();
                let e = synthetic_enrollment(i, now)?;
                let id = e.id;
                store
                    .commit_enrollment(&EnrollmentCommit {
                        subject: format!("CN={}", e.device_id),
                        enrollment: e,
                        not_before: now,
                        consume_token: None,
                        consume_nonce: None,
                        session_credential: None,
                        replaces: None,
                    })
                    .await?;
                let mut session = template.session.clone();
                session.key = uuid::Uuid::new_v4().to_string();
                store
                    .commit_checkin(
                        id,
                        &CheckinCommit {
                            facts: template.facts.clone(),
                            session,
                            ..Default::default()
                        },
                        now,
                    )
                    .await?;
                ids.push(id);
            }
        });
    }
    let mut ids = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        ids.extend(r??);
    }
    let populate = started.elapsed();
    // Fold the WAL into the database file so the file size is the data's size (the WAL is
    // bounded by the autocheckpoint, whatever the fleet size).
    let steward_server::config::DatabaseUrl::Sqlite(db_path) =
        config.database_url().map_err(|e| BenchError::Setup(e.to_string()))?
    else {
        return Err(BenchError::Setup(
            "the store-size figure measures the SQLite file".into(),
        ));
    };
    checkpoint(&db_path).await?;
    let (db1, wal1) = db_bytes(dir.path());
    let per_device = db1.saturating_sub(db0 + wal0) as f64 / n as f64;
    report.add(
        format!("store bytes per enrolled, inventoried device ({n} devices)"),
        per_device,
        "bytes",
        format!(
            "db {} bytes after checkpoint (wal {}); {} facts each; written through the Store ({POPULATE_TASKS} \
             in flight) at {:.0} devices/s",
            db1,
            wal1,
            template.facts.len(),
            n as f64 / populate.as_secs_f64()
        ),
    );

    admin_reads(store.as_ref(), n, report).await?;

    let now = OffsetDateTime::now_utc();
    let cmds: Vec<NewCommand> = ids.iter().flat_map(|id| replace_commands(*id, 10, "1", now)).collect();
    let t = Instant::now();
    store.enqueue_commands(&cmds).await?;
    let fan = t.elapsed();
    report.add(
        format!("fan-out: enqueue 10 commands to {n} devices"),
        fan.as_secs_f64(),
        "s",
        format!(
            "{:.0} commands/s, one store call",
            cmds.len() as f64 / fan.as_secs_f64()
        ),
    );

    let Some(exe) = &opts.child_exe else {
        eprintln!("  (no child executable: skipping server RSS)");
        return Ok(());
    };
    let token = create_token(store.as_ref(), opts.child_active_devices.max(1)).await?;
    drop(store);
    let child = ChildServer::spawn(exe, dir.path()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start = child.rss()?;
    report.add(
        format!("server RSS after start, {n} enrolled idle devices"),
        rss_start.0 as f64 / 1e6,
        "MB",
        "child process, nothing connected yet",
    );
    let roots = Arc::new(vec![child.root_der.clone()]);
    let (fleet, _, _, errors) =
        enroll_fleet(&child.url, &roots, &token, opts.child_active_devices, opts.concurrency).await?;
    let mut devs = Vec::new();
    for device in fleet {
        let tls = HttpsClient::tls_config(&roots, device.tls_identity())?;
        devs.push(Dev {
            device,
            enrollment: EnrollmentId::new(),
            profile: TlsProfile::Windows11,
            tls,
            kept: None,
        });
    }
    let mut failed = errors.len();
    for _ in 0..2 {
        let (back, res, _) = round(devs, ConnMode::Fresh, &Work::Steward, opts.concurrency, &roots).await?;
        devs = back;
        failed += res.errors.len();
    }
    let (rss, hwm) = child.rss()?;
    report.add(
        format!("server RSS, {n} idle + {} active devices", opts.child_active_devices),
        rss as f64 / 1e6,
        "MB",
        format!(
            "peak (VmHWM) {:.1} MB after {} enrollments and 2 sessions each over the wire, {failed} failed",
            hwm as f64 / 1e6,
            opts.child_active_devices
        ),
    );
    child.stop().await?;
    Ok(())
}

/// `steward-bench serve-child`: a Steward server in its own process, so its RSS is its own.
struct ChildServer {
    child: tokio::process::Child,
    url: String,
    root_der: Vec<u8>,
}

impl ChildServer {
    async fn spawn(exe: &Path, data_dir: &Path) -> Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(exe)
            .arg("serve-child")
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Setup("child has no stdout".into()))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let port = loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .map_err(|_| BenchError::Setup("child server did not start in 60 s".into()))??
                .ok_or_else(|| BenchError::Setup("child server exited".into()))?;
            if let Some(p) = line.strip_prefix("PORT ") {
                break p
                    .trim()
                    .parse::<u16>()
                    .map_err(|e| BenchError::Setup(format!("child port: {e}")))?;
            }
        };
        let root_pem = std::fs::read_to_string(data_dir.join("pki").join("root-ca.pem"))?;
        let root_der = pem_to_der(&root_pem).ok_or_else(|| BenchError::Setup("bad root-ca.pem".into()))?;
        Ok(Self {
            child,
            url: format!("https://localhost:{port}"),
            root_der,
        })
    }

    /// (VmRSS, VmHWM) in bytes.
    fn rss(&self) -> Result<(u64, u64)> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| BenchError::Setup("child server exited".into()))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .map(|v| v * 1024)
                .unwrap_or(0)
        };
        Ok((kb("VmRSS:"), kb("VmHWM:")))
    }

    async fn stop(mut self) -> Result<()> {
        // Closing stdin asks the child to shut down gracefully.
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The body of `steward-bench serve-child`: serve `data_dir` on 127.0.0.1 (an ephemeral port,
/// printed as `PORT <n>`) until stdin closes.
pub async fn serve_child(data_dir: &Path) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = steward_server::start_with_listener(server_config(data_dir, port), listener).await?;
    println!("PORT {port}");
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    server.shutdown().await;
    Ok(())
}
