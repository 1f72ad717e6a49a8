//! Fault injection (issue 17 item 5; docs/SECURITY.md, plan D1–D5): the server killed with SIGKILL
//! under load, its database cut off, its data directory unable to take a write, and clocks that
//! disagree. After each fault the invariant checker reconciles the ledgers.
//!
//! The server under SIGKILL runs in a child process: this test binary again, running
//! [`child_server`], which starts the server library exactly as `steward serve` does
//! (`start_with_store` on a listener, on the data directory it is given). A child, because SIGKILL
//! must end a whole process with whatever it had in flight; the `steward` binary itself belongs to
//! another package, whose executable this test binary cannot name.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use steward_core::*;
use steward_sim::session::SessionTrigger;
use steward_sim::{CheckinMode, CheckinPlan, EnrollPlan, Fleet, HttpsClient, KeyPool, PhaseStats};
use steward_windows_proto::syncml;
use time::OffsetDateTime;

use crate::at_rest::assert_retryable;
use crate::common::{ADMIN_TOKEN, TestServer, TestStore, config_for, open_test_store, test_database};
use crate::enrollment_faults::{cred, fault_of, good_csr, post_rst};

const CHILD_ENV: &str = "STEWARD_TEST_FAULTS_CHILD";

/// How long any one step may take before the test gives up (a guard against a hang, not a timing
/// assertion: each step normally takes milliseconds).
const HANG_GUARD: Duration = Duration::from_secs(60);

/// The seed of the kill schedule; `STEWARD_FAULTS_SEED` replays another.
const DEFAULT_SEED: u64 = 0x5eed_0017;

/// SplitMix64 (Steele, Lea, Flood 2014): a seeded, reproducible schedule without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the modulo bias is irrelevant at these ranges).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// An enrollment token with `uses` uses, created in `store` as `steward token create` does.
async fn create_token(store: &dyn TestStore, uses: u32) -> String {
    let secret = TokenKind::Enrollment.generate().unwrap();
    let now = OffsetDateTime::now_utc();
    store
        .create_enrollment_token(&NewEnrollmentToken {
            id: EnrollmentTokenId::new(),
            token_hash: TokenHash::of(secret.expose()),
            description: Some("fault injection".into()),
            max_uses: Some(uses),
            expires_at: Some(now + ::time::Duration::hours(1)),
            group: None,
            created_at: now,
        })
        .await
        .unwrap();
    secret.expose().to_owned()
}

// ---- The server in a child process ----

/// The child side: a server on the data directory and port the parent names
/// (`dir=<path>;port=<n>`), driven over stdin: `fsize <bytes>` / `fsize max` set the process's
/// RLIMIT_FSIZE (the disk-full stand-in); end of input stops it gracefully. SIGKILL stops it
/// otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the server process of the tests in this module"]
async fn child_server() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut dir = None;
    let mut port = 0u16;
    let mut sqlite_only = false;
    for (k, v) in spec.split(';').filter_map(|kv| kv.split_once('=')) {
        match k {
            "dir" => dir = Some(std::path::PathBuf::from(v)),
            "port" => port = v.parse().unwrap(),
            "sqlite" => sqlite_only = v == "1",
            other => panic!("unknown child spec key {other}"),
        }
    }
    let dir = dir.expect("dir=");
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(std::env::var("STEWARD_CHILD_LOG").unwrap_or_else(|_| "steward=warn".into()))
        .try_init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // A write past RLIMIT_FSIZE raises SIGXFSZ, whose default action ends the process; handled (and
    // so ignored), the write fails with EFBIG instead, which is what the disk-full test needs.
    let mut xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
        rustix::process::Signal::XFSZ.as_raw(),
    ))
    .unwrap();
    tokio::spawn(async move { while xfsz.recv().await.is_some() {} });

    // The previous server on this port was just killed: its socket may take a moment to go.
    let mut bound = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => {
                bound = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let listener = bound.expect("bind the server's port");
    let mut config = config_for(&dir, port);
    if sqlite_only {
        crate::common::sqlite(&mut config);
    }
    let backend = open_test_store(&config).await;
    let server = steward_server::start_with_store(config, listener, backend.clone())
        .await
        .unwrap();
    let token = create_token(backend.as_ref(), 10_000).await;
    println!(
        "CHILD-READY {} {} {token}",
        server.local_addr.port(),
        hex::encode(server.pki.root.cert_der())
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(8);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(command) = rx.recv().await {
        let command = command.trim().to_owned();
        if let Some(limit) = command.strip_prefix("fsize ") {
            use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
            let hard = getrlimit(Resource::Fsize).maximum;
            let current = if limit == "max" {
                hard
            } else {
                Some(limit.parse().unwrap())
            };
            setrlimit(Resource::Fsize, Rlimit { current, maximum: hard }).unwrap();
            println!("CHILD-FSIZE {limit}");
        } else if !command.is_empty() {
            panic!("unknown command {command:?}");
        }
    }
    server.shutdown().await;
}

/// The parent side of [`child_server`].
struct ChildServer {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
    port: u16,
    root_der: Vec<u8>,
    token: String,
}

impl ChildServer {
    async fn start(dir: &std::path::Path, port: u16, sqlite_only: bool) -> Self {
        let spec = format!("dir={};port={port};sqlite={}", dir.display(), u8::from(sqlite_only));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "faults::child_server",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, spec)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print "test … " on the same line first.
                if let Some(at) = line.find("CHILD-")
                    && tx.send(line[at..].to_owned()).is_err()
                {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut err, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take();
        let mut this = Self {
            child,
            stdin,
            lines,
            stderr,
            port,
            root_der: Vec::new(),
            token: String::new(),
        };
        let ready = this.expect("CHILD-READY").await;
        let mut parts = ready.split_whitespace().skip(1);
        assert_eq!(parts.next().unwrap().parse::<u16>().unwrap(), port);
        this.root_der = hex::decode(parts.next().unwrap()).unwrap();
        this.token = parts.next().unwrap().to_owned();
        this
    }

    async fn expect(&mut self, prefix: &str) -> String {
        let line = tokio::time::timeout(HANG_GUARD, async {
            loop {
                match self.lines.recv().await {
                    Some(l) if l.starts_with(prefix) => return Some(l),
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("child server: no {prefix}"));
        line.unwrap_or_else(|| panic!("child server exited before {prefix}: {}", self.stderr.lock().unwrap()))
    }

    async fn command(&mut self, command: &str, reply: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        self.expect(reply).await
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    fn client(&self) -> HttpsClient {
        HttpsClient::new(std::slice::from_ref(&self.root_der), None).unwrap()
    }

    /// SIGKILL (`Child::kill` on Unix), then reaps the process.
    fn kill(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "the child was killed");
    }

    /// End of input: the child shuts down gracefully.
    fn stop(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child server failed: {}", self.stderr.lock().unwrap());
    }
}

/// A free loopback port (bound and released; the child binds it again at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Queues a Get of the device's OS version through the admin API; the command's id.
async fn queue_get(server: &ChildServer, client: &HttpsClient, device_id: &str) -> String {
    queue_get_at(&server.url(""), client, device_id).await
}

/// [`queue_get`] against the server at `base_url`.
async fn queue_get_at(base_url: &str, client: &HttpsClient, device_id: &str) -> String {
    let body = serde_json::json!({"verb": "get", "items": [{"target": "./DevDetail/SwV"}]});
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let resp = client
        .request(
            Method::POST,
            &format!("{base_url}/api/v1/devices/{device_id}/commands"),
            &[("content-type", "application/json"), ("authorization", &auth)],
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.text());
    let view: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    view["id"].as_str().unwrap().to_owned()
}

/// [`queue_get`] for each device, four admin connections at a time; `(device, command)` pairs.
async fn queue_for_each(server: &ChildServer, devices: impl Iterator<Item = String>) -> Vec<(String, String)> {
    let devices: Vec<String> = devices.collect();
    let mut tasks = tokio::task::JoinSet::new();
    for share in devices.chunks(devices.len().div_ceil(4).max(1)) {
        let share = share.to_vec();
        let client = server.client();
        let url = server.url("");
        tasks.spawn(async move {
            let mut queued = Vec::new();
            for device in share {
                let id = queue_get_at(&url, &client, &device).await;
                queued.push((device, id));
            }
            queued
        });
    }
    let mut queued = Vec::new();
    while let Some(share) = tasks.join_next().await {
        queued.extend(share.unwrap());
    }
    queued
}

/// Waits until `stats` has an operation in flight.
async fn until_in_flight(stats: &PhaseStats) {
    tokio::time::timeout(HANG_GUARD, async {
        while stats.counts().in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the fleet started an operation");
}

const KILLS: usize = 6;
/// Devices enrolled before the first kill (so the first round has sessions to interrupt), and per
/// round while the round's kill comes.
const FIRST_DEVICES: usize = 8;
const DEVICES_PER_ROUND: usize = 6;

/// Plan D1–D3 under load: a fleet from the simulator's load machinery (paced enrollment and
/// back-to-back management sessions, each device with admin commands queued) runs against a
/// server that is SIGKILLed six times at seeded moments, alternately aimed at enrollments and at
/// sessions in flight, and restarted on the same data directory each time. Then the fleet checks
/// in until nothing is left to deliver, and: every queued command was recorded exactly once, on
/// its own device (none lost, none duplicated); every certificate the CA logged as issued has its
/// committed enrollment (a kill between signing and commit leaves a serial that was never
/// delivered and never logged); every device that finished enrolling has its one active
/// enrollment; the audit chain verifies (all by the invariant checker, plus the per-command
/// check below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_and_duplicates_nothing() {
    let seed = std::env::var("STEWARD_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = SplitMix(seed);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = ChildServer::start(dir.path(), port, false).await;
    let roots = vec![server.root_der.clone()];
    let server_url = server.url("");
    // One RSA key for every device (the load harness's benchmark shortcut): each device still gets
    // its own certificate, DeviceID and enrollment, and the run spends no time generating keys.
    let mut keys = KeyPool::shared().await.unwrap();
    let enroll_plan = |token: &str, devices: usize| EnrollPlan {
        server_url: server_url.clone(),
        token: token.to_owned(),
        devices,
        rate: 0.0,
        concurrency: 4,
        op_timeout: Duration::from_secs(20),
    };
    let checkin_plan = |sessions: u32| CheckinPlan {
        mode: CheckinMode::Sessions(sessions),
        concurrency: 4,
        duration: HANG_GUARD,
        op_timeout: Duration::from_secs(20),
    };
    let mut fleet = Fleet::new(roots.clone());
    let stats = Arc::new(PhaseStats::default());
    fleet
        .enroll(&enroll_plan(&server.token, FIRST_DEVICES), &mut keys, stats.clone())
        .await
        .unwrap();
    assert_eq!(fleet.len(), FIRST_DEVICES, "{:?}", stats.totals().errors);

    // (device, command) for every command queued.
    let mut queued: Vec<(String, String)> = Vec::new();
    // Per kill: what it aimed at, and the enrollments and sessions in flight when it came.
    let mut kills: Vec<(&str, u64, u64)> = Vec::new();
    let mut enrolled_by_fleet = FIRST_DEVICES;
    for round in 0..KILLS {
        queued.extend(queue_for_each(&server, fleet.devices().iter().map(|d| d.profile.device_id.clone())).await);
        let enroll_stats = Arc::new(PhaseStats::default());
        let checkin_stats = Arc::new(PhaseStats::default());
        let plan = enroll_plan(&server.token, DEVICES_PER_ROUND);
        let mut newcomers = Fleet::new(roots.clone());
        let stats = enroll_stats.clone();
        let enrolling = tokio::spawn(async move {
            newcomers.enroll(&plan, &mut keys, stats).await.unwrap();
            (newcomers, keys)
        });
        let plan = checkin_plan(3);
        let stats = checkin_stats.clone();
        let checking_in = tokio::spawn(async move {
            fleet.run_checkins(&plan, stats).await.unwrap();
            fleet
        });
        let aim = if round % 2 == 0 { "enrollment" } else { "sessions" };
        until_in_flight(if round % 2 == 0 { &enroll_stats } else { &checkin_stats }).await;
        tokio::time::sleep(Duration::from_millis(rng.between(10, 500))).await;
        kills.push((
            aim,
            enroll_stats.counts().in_flight(),
            checkin_stats.counts().in_flight(),
        ));
        server.kill();
        let (newcomers, pool) = enrolling.await.unwrap();
        keys = pool;
        fleet = checking_in.await.unwrap();
        enrolled_by_fleet += newcomers.len();
        fleet.absorb(newcomers);
        server = ChildServer::start(dir.path(), port, false).await;
    }
    assert_eq!(fleet.len(), enrolled_by_fleet);

    // No more kills: the fleet checks in until a whole round delivers nothing and fails nothing.
    let mut rounds = 0;
    loop {
        let stats = Arc::new(PhaseStats::default());
        fleet.run_checkins(&checkin_plan(1), stats.clone()).await.unwrap();
        let totals = stats.totals();
        if totals.counts.failed == 0 && totals.commands == 0 {
            break;
        }
        rounds += 1;
        assert!(rounds < 10, "the fleet keeps getting commands or failing: {totals:?}");
    }
    server.stop();

    // The ledgers, read by a server on the same data directory.
    let t = TestServer::start_in(dir, |_| {}).await;
    let ledgers = crate::invariants::check(&t).await;
    let by_enrollment: std::collections::BTreeMap<EnrollmentId, &Enrollment> =
        ledgers.enrollments.iter().map(|e| (e.id, e)).collect();
    for (device, id) in &queued {
        let found: Vec<_> = ledgers
            .commands
            .iter()
            .filter(|(c, _)| &c.id.to_string() == id)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "command {id} for {device} is listed {} times",
            found.len()
        );
        let (c, result) = found[0];
        let owner = by_enrollment[&c.enrollment_id];
        assert_eq!(owner.device_id.as_str(), device, "command {id} belongs to its device");
        assert_eq!(c.state, CommandState::Succeeded, "command {id} for {device}");
        let result = result.as_ref().unwrap_or_else(|| panic!("command {id} has no result"));
        assert_eq!(result.enrollment_id, c.enrollment_id);
        let answers = ledgers
            .events
            .iter()
            .filter(|ev| {
                matches!(ev.kind, EventKind::CommandAcknowledged | EventKind::CommandFailed)
                    && ev.data.get("command_id").and_then(|v| v.as_str()) == Some(id)
            })
            .count();
        assert_eq!(answers, 1, "command {id} answered once");
    }
    // Every device the fleet holds finished enrolling: its one active enrollment exists. The
    // enrollments no device knows of are those whose answer the kill cut off after the commit.
    let active: Vec<&Enrollment> = ledgers
        .enrollments
        .iter()
        .filter(|e| e.state == EnrollmentState::Active)
        .collect();
    for d in fleet.devices() {
        let n = active
            .iter()
            .filter(|e| e.device_id.as_str() == d.profile.device_id)
            .count();
        assert_eq!(n, 1, "device {} has {n} active enrollments", d.profile.device_id);
    }
    let issued = ledgers
        .issuance
        .iter()
        .filter(|e| e.event == IssuanceEvent::Issued)
        .count();
    // Sent more than once: delivered in a session a kill cut short, then delivered again.
    let resent = queued
        .iter()
        .filter(|(_, id)| {
            ledgers
                .commands
                .iter()
                .any(|(c, _)| &c.id.to_string() == id && c.send_count > 1)
        })
        .count();
    assert!(kills.len() >= 5);
    assert!(
        kills.iter().any(|(_, enrolling, _)| *enrolling > 0),
        "a kill came while enrollments were in flight: {kills:?}"
    );
    assert!(
        kills.iter().any(|(_, _, sessions)| *sessions > 0),
        "a kill came while sessions were in flight: {kills:?}"
    );
    println!(
        "kill -9 under load (seed {seed:#x}): {} kills (aim, enrollments, sessions in flight) {kills:?}; \
         {} commands queued, each recorded once ({resent} of them delivered again after a kill); {} devices enrolled by the fleet, {} enrollments \
         committed ({} unknown to the fleet, answer cut by a kill), {} certificates issued; {rounds} extra \
         check-in rounds",
        kills.len(),
        queued.len(),
        fleet.len(),
        ledgers.enrollments.len(),
        ledgers.enrollments.len() - fleet.len(),
        issued,
    );
    t.server.shutdown().await;
}

// ---- Disk full ----

/// Plan D5, disk full on the data directory (SQLite: its database lives there; on PostgreSQL the
/// data directory holds only keys, written at first start). The child server's RLIMIT_FSIZE is set
/// to 0, so every write to a regular file fails with EFBIG (SIGXFSZ handled), as every write that
/// must allocate fails on a full disk with ENOSPC. SQLite reports the first as
/// SQLITE_IOERR_WRITE and the second as SQLITE_FULL; the store answers both as retryable, and
/// SQLite rolls the transaction back in both. Devices checking in and enrolling get 503 with
/// `Retry-After`; when the limit is lifted ("space returns"), the same device and the same token go
/// through, the queued command is delivered and recorded once, and the invariants hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_directory_is_answered_retryable_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = ChildServer::start(dir.path(), port, true).await;
    let roots = vec![server.root_der.clone()];
    let mut keys = KeyPool::shared().await.unwrap();
    let mut fleet = Fleet::new(roots.clone());
    let plan = EnrollPlan {
        server_url: server.url(""),
        token: server.token.clone(),
        devices: 1,
        rate: 0.0,
        concurrency: 1,
        op_timeout: HANG_GUARD,
    };
    fleet
        .enroll(&plan, &mut keys, Arc::new(PhaseStats::default()))
        .await
        .unwrap();
    let device = &mut fleet.devices_mut()[0];
    let client = device.https_client(&roots).unwrap();
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    let device_id = device.profile.device_id.clone();
    let command = queue_get(&server, &server.client(), &device_id).await;
    // A token for a second device, made before the disk fills.
    let token = server.token.clone();

    server.command("fsize 0", "CHILD-FSIZE").await;
    let device = &mut fleet.devices_mut()[0];
    let first = device.start_session(SessionTrigger::Scheduled).unwrap();
    let checkin = client
        .request(
            Method::POST,
            &device.session_url(),
            &[("content-type", "application/vnd.syncml.dm+xml")],
            Bytes::from(syncml::write(&first)),
        )
        .await
        .unwrap();
    assert_retryable("check-in on a full disk", &checkin);
    let _ = device.end_session();
    let enroller = server.client();
    let rst = post_rst_to(&server, &enroller, &token).await;
    assert_retryable("enrollment on a full disk", &rst);
    assert!(fault_of(&rst).0.contains("InternalServiceFault"), "{}", rst.text());
    // Health still answers: the process serves; it is the storage that is full.
    assert_eq!(server.client().get(&server.url("/healthz")).await.unwrap().status, 200);

    server.command("fsize max", "CHILD-FSIZE").await;
    let report = device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(
        report
            .received
            .iter()
            .any(|r| r.name == "Get" && r.target.as_deref() == Some("./DevDetail/SwV")),
        "the queued Get is delivered once space returns: {:?}",
        report.received
    );
    let rst = post_rst_to(&server, &enroller, &token).await;
    assert_eq!(rst.status, StatusCode::OK, "{}", rst.text());
    server.stop();

    let t = TestServer::start_in(dir, crate::common::sqlite).await;
    let ledgers = crate::invariants::check(&t).await;
    assert_eq!(ledgers.enrollments.len(), 2, "both enrollments, nothing more");
    let (c, result) = ledgers
        .commands
        .iter()
        .find(|(c, _)| c.id.to_string() == command)
        .expect("the queued command");
    assert_eq!(c.state, CommandState::Succeeded);
    assert!(result.is_some());
    t.server.shutdown().await;
}

/// A RequestSecurityToken for a fresh DeviceID with `token`, to the child server.
async fn post_rst_to(server: &ChildServer, client: &HttpsClient, token: &str) -> steward_sim::Response {
    use base64::Engine;
    let url = server.url("/EnrollmentServer/Enrollment.svc");
    let body = steward_windows_proto::mde2::write_rst_request(
        "urn:uuid:11111111-2222-3333-4444-555555555555",
        &url,
        &cred(token),
        &base64::engine::general_purpose::STANDARD.encode(good_csr()),
        &crate::enrollment_faults::context(),
    );
    client.post(&url, crate::enrollment_faults::SOAP, body).await.unwrap()
}

// ---- PostgreSQL unavailable ----

/// A TCP proxy between the server and PostgreSQL that can be cut: while cut, every proxied
/// connection is closed and each new one is closed as soon as it is accepted, which is what the
/// server sees when PostgreSQL restarts or the network between them fails.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let cut = cut.clone();
            let connections = connections.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    // Under the lock `cut` takes: a connection is either refused or aborted by it.
                    let mut open = connections.lock().unwrap();
                    if cut.load(std::sync::atomic::Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let forward = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    open.push(forward.abort_handle());
                }
            }
        });
        Self {
            addr,
            cut,
            connections,
            accept,
        }
    }

    fn cut(&self) {
        let mut open = self.connections.lock().unwrap();
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in open.drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `host:port` of a `postgres://[user[:password]@]host:port/…` URL.
fn authority_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

/// Plan D5 on PostgreSQL: the database cut off (a proxy between the server and PostgreSQL drops
/// every connection and refuses new ones) while a device checks in and another enrolls. Both are
/// told to retry (503 with `Retry-After`, a SOAP `InternalServiceFault` for enrollment, the same
/// answers as for a locked SQLite file in `at_rest`), `/readyz` is not ready, and once the proxy
/// lets traffic through again the server recovers by itself: the device gets its queued command,
/// recorded once; the same token enrolls; the invariants hold. The SQLite pass skips it (its
/// outage is the locked file, `at_rest::a_device_meeting_a_locked_database_is_told_to_retry_and_then_succeeds`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_answered_retryable_and_recovers() {
    let Some(database) = test_database() else {
        println!(
            "skipped: the PostgreSQL outage runs on the PostgreSQL pass only (STEWARD_TEST_DATABASE_URL); \
             the SQLite pass has at_rest's locked-database test"
        );
        return;
    };
    let upstream = authority_of(&database);
    let proxy = Proxy::start(upstream.clone()).await;
    let through = proxy.addr.to_string();
    let t = TestServer::start_with(|c| {
        let url = c.database.url.as_ref().expect("the PostgreSQL pass").expose();
        c.database.url = Some(SecretString::new(url.replacen(&upstream, &through, 1)));
    })
    .await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    let (status, queued) = crate::webhooks::api(
        &t,
        Method::POST,
        &format!("/api/v1/devices/{}/commands", device.profile.device_id),
        ADMIN_TOKEN,
        Some(serde_json::json!({"verb": "get", "items": [{"target": "./DevDetail/SwV"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let command = queued["id"].as_str().unwrap().to_owned();
    let token = t.token(Some(1), ::time::Duration::hours(1), None).await;
    let enroller = t.client();
    let before = crate::invariants::check(&t).await;

    proxy.cut();
    let first = device.start_session(SessionTrigger::Scheduled).unwrap();
    let checkin = client
        .request(
            Method::POST,
            &device.session_url(),
            &[("content-type", "application/vnd.syncml.dm+xml")],
            Bytes::from(syncml::write(&first)),
        )
        .await
        .unwrap();
    assert_retryable("check-in without the database", &checkin);
    let _ = device.end_session();
    let rst = post_rst(&t, &enroller, &cred(&token), &good_csr()).await;
    assert_retryable("enrollment without the database", &rst);
    assert!(fault_of(&rst).0.contains("InternalServiceFault"), "{}", rst.text());
    assert_eq!(
        crate::readiness::readyz(&t).await,
        (503, Some(("database".into(), "database_unavailable".into())))
    );

    proxy.restore();
    // Recovery needs no operator: the pool opens new connections on the next request.
    tokio::time::timeout(HANG_GUARD, async {
        while crate::readiness::readyz(&t).await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("ready again once the database is back");
    let during = crate::invariants::check(&t).await;
    before.assert_unchanged(&during, "requests refused while the database was away");
    let report = device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(
        report
            .received
            .iter()
            .any(|r| r.name == "Get" && r.target.as_deref() == Some("./DevDetail/SwV")),
        "the queued Get is delivered: {:?}",
        report.received
    );
    let rst = post_rst(&t, &enroller, &cred(&token), &good_csr()).await;
    assert_eq!(rst.status, StatusCode::OK, "{}", rst.text());
    let ledgers = crate::invariants::check(&t).await;
    assert_eq!(ledgers.enrollments.len(), 2);
    let (c, result) = ledgers
        .commands
        .iter()
        .find(|(c, _)| c.id.to_string() == command)
        .expect("the queued command");
    assert_eq!(c.state, CommandState::Succeeded);
    assert!(result.is_some());
    t.server.shutdown().await;
}

// ---- Clock skew ----

/// Plan D5, clocks on certificates: the TLS layer checks a client certificate's validity against
/// the server's clock with no leeway, so one not yet valid or already expired by that clock is
/// refused in the handshake (alert `certificate_expired`, which RFC 8446 §6.2 also uses for "not
/// yet valid"), before any request is read. The certificates Steward issues start an hour early
/// (`identity::BACKDATE`): a device whose clock is up to an hour behind the server's already sees
/// its fresh certificate as valid. A certificate at the edge of its period (valid for two more
/// minutes) is still accepted by TLS.
#[tokio::test]
async fn device_certificates_outside_their_validity_by_the_servers_clock_are_refused() {
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    let (chain, key_der) = device.tls_identity().unwrap();
    let (_, issued) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let now = OffsetDateTime::now_utc();
    let not_before = issued.validity().not_before.to_datetime();
    assert!(
        not_before <= now - steward_core::service::identity::BACKDATE + ::time::Duration::minutes(1),
        "issued certificates are backdated by an hour: {not_before} at {now}"
    );

    let key = steward_pki::DeviceKey::from_pkcs8(&key_der).unwrap();
    let before = crate::invariants::check(&t).await;
    let minutes = ::time::Duration::minutes;
    let cases = [
        (
            "not yet valid by the server's clock",
            now + minutes(10),
            now + minutes(60),
            false,
        ),
        (
            "expired by the server's clock",
            now - minutes(60),
            now - minutes(10),
            false,
        ),
        ("valid for two more minutes", now - minutes(60), now + minutes(2), true),
    ];
    for (what, not_before, not_after, tls_accepts) in cases {
        let cert = steward_pki::issue_device_certificate(
            &t.server.pki.issuing,
            &key.spki_der(),
            &steward_pki::DeviceCertParams {
                serial: steward_pki::random_bytes::<16>().unwrap(),
                common_name: device.profile.device_id.clone(),
                organizational_unit: None,
                not_before,
                not_after,
            },
        )
        .unwrap();
        let mut presented = chain.clone();
        presented[0] = cert.der;
        let skewed = HttpsClient::new(std::slice::from_ref(&t.root_der), Some((presented, key_der.clone()))).unwrap();
        let answer = skewed
            .request(
                Method::POST,
                &device.session_url(),
                &[("content-type", "application/vnd.syncml.dm+xml")],
                Bytes::from_static(b"<SyncML/>"),
            )
            .await;
        match (tls_accepts, answer) {
            (false, Err(e)) => {
                // The alert reaches the client after its side of the TLS 1.3 handshake, as the cause
                // of the first request's failure.
                let chain = e.to_string();
                assert!(chain.contains("CertificateExpired"), "{what}: {chain}");
            }
            (false, Ok(r)) => panic!("{what}: answered {} over TLS", r.status),
            // Past TLS, the certificate is not the one the enrollment holds: the management
            // endpoint refuses it by its own binding (I1), which is not the subject here.
            (true, Ok(r)) => assert!(!r.status.is_success(), "{what}: {}", r.status),
            (true, Err(e)) => panic!("{what}: refused by TLS: {e}"),
        }
    }
    let after = crate::invariants::check(&t).await;
    before.assert_unchanged(&after, "certificates outside their validity");
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    t.server.shutdown().await;
}

/// Plan D5, clocks on federated tokens (`steward_windows::federated::CLOCK_SKEW`, two minutes):
/// a token from an issuer whose clock is ahead of this server's, or one used just after its
/// expiry, is accepted within the skew; beyond it, refused with an Authentication fault that says
/// which ("issued in the future", "expired"), and nothing is written.
#[tokio::test]
async fn federated_tokens_from_skewed_clocks_are_accepted_within_the_skew_only() {
    use steward_windows::federated::{CLOCK_SKEW, issue_token};
    let t = TestServer::start_with(crate::common::federated).await;
    t.user("carol@example.com", "federated password").await;
    let lifetime = ::time::Duration::minutes(15); // [enrollment] federated_token_minutes
    let minute = ::time::Duration::minutes(1);
    let client = t.client();
    let url = t.url("/EnrollmentServer/Policy.svc");
    let before = crate::invariants::check(&t).await;
    let cases = [
        ("issued now", ::time::Duration::ZERO, None),
        ("issuer one minute ahead", minute, None),
        ("issuer an hour ahead", 60 * minute, Some("issued in the future")),
        (
            "issuer just beyond the skew ahead",
            CLOCK_SKEW + minute,
            Some("issued in the future"),
        ),
        ("expired a minute ago", -(lifetime + minute), None),
        (
            "expired beyond the skew",
            -(lifetime + CLOCK_SKEW + minute),
            Some("expired"),
        ),
    ];
    for (what, offset, refused) in cases {
        let now = OffsetDateTime::now_utc();
        let token = issue_token(
            &t.server.pki.federation_key,
            "carol@example.com",
            lifetime,
            now + offset,
        )
        .unwrap();
        let cred = steward_windows_proto::mde2::Credential::BinarySecurityToken {
            value_type: steward_windows_proto::mde2::VALUE_TYPE_USER_TOKEN.into(),
            encoding_type: Some(steward_windows_proto::mde2::ENCODING_TYPE_BASE64.into()),
            token: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, token.as_bytes()),
        };
        let body = steward_windows_proto::mde2::write_get_policies_request(
            "urn:uuid:22222222-3333-4444-5555-666666666666",
            &url,
            &cred,
        );
        let resp = client.post(&url, crate::enrollment_faults::SOAP, body).await.unwrap();
        match refused {
            None => assert_eq!(resp.status, StatusCode::OK, "{what}: {}", resp.text()),
            Some(reason) => {
                let (code, text) = fault_of(&resp);
                assert!(code.contains("Authentication"), "{what}: {}", resp.text());
                assert!(text.contains(reason), "{what}: {text}");
            }
        }
    }
    let after = crate::invariants::check(&t).await;
    before.assert_unchanged(&after, "federated tokens from skewed clocks");
    t.server.shutdown().await;
}
