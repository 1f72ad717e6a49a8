//! Resource limits before authentication (issue 19), over real TLS: stalled bodies and heads are
//! cut, idle connections closed, connection caps answered 503 + Retry-After, devices served while
//! hundreds of connections stall, the accept loop surviving exhausted descriptors, and password
//! checks bounded in memory.
//!
//! Outcomes are asserted, never durations: [`HANG_GUARD`] only turns a hang into a failure. The
//! descriptor and memory tests run the server in a child process (this test binary again, running
//! the ignored [`child_server`] test) so that exhausting its descriptors does not starve the other
//! tests, and its peak memory is its own.

use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::{CertificateDer, ServerName};
use steward_sim::{Credentials, EnrollOptions, HttpsClient};
use steward_windows_proto::mde2;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::common::{ADMIN_TOKEN, TestServer};

/// Long enough for a loaded 2-core CI machine; only a hang reaches it.
const HANG_GUARD: Duration = Duration::from_secs(60);
const SOAP: &str = "application/soap+xml; charset=utf-8";

/// Raises this test process's own descriptor limit (it holds both ends of every connection).
fn enough_descriptors() {
    let _ = steward_server::listener::raise_descriptor_limit();
}

/// A TLS client that connects from a chosen loopback address (Linux routes all of 127/8 to lo),
/// so one test can play many peers.
#[derive(Clone)]
struct Peers {
    connector: TlsConnector,
    port: u16,
}

impl Peers {
    fn new(root_der: &[u8], port: u16) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(root_der.to_vec())).unwrap();
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        Self {
            connector: TlsConnector::from(Arc::new(config)),
            port,
        }
    }

    async fn tls(&self, from: Ipv4Addr) -> std::io::Result<TlsStream<TcpStream>> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((from, 0)))?;
        let tcp = socket.connect(SocketAddr::from(([127, 0, 0, 1], self.port))).await?;
        let name = ServerName::try_from("localhost").unwrap();
        self.connector.connect(name, tcp).await
    }

    /// An HTTP/1.1 connection from `from`, kept open while the returned sender lives.
    async fn http(&self, from: Ipv4Addr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let tls = self.tls(from).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender
    }
}

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// One request on an open connection: status, headers, body.
async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<(http::StatusCode, http::HeaderMap, String), hyper::Error> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender.ready().await?;
    let resp = sender.send_request(req.body(Full::new(body.into())).unwrap()).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned()))
}

/// Writes `head`, then `drip` every 200 ms until the server stops taking it, and returns all the
/// server wrote before it closed the connection (the test fails if it never closes).
async fn stall(stream: TlsStream<TcpStream>, head: String, drip: Option<&'static [u8]>) -> String {
    let (mut rd, mut wr) = tokio::io::split(stream);
    wr.write_all(head.as_bytes()).await.unwrap();
    wr.flush().await.unwrap();
    let writer = tokio::spawn(async move {
        let Some(drip) = drip else {
            // Keep the write half (and so the connection) open.
            std::future::pending::<()>().await;
            return;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(drip).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    // A close without TLS close_notify is a read error here; what was read before it is kept.
    let _ = tokio::time::timeout(HANG_GUARD, rd.read_to_end(&mut answer))
        .await
        .expect("the server kept a stalled connection open");
    writer.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_are_cut_on_every_surface() {
    let t = TestServer::start_with(|c| {
        c.limits.header_timeout_seconds = 2;
        c.limits.body_timeout_seconds = 2;
        c.limits.body_min_rate_grace_seconds = 1;
        c.limits.idle_timeout_seconds = 2;
    })
    .await;
    let peers = Peers::new(&t.root_der, t.server.local_addr.port());
    let head =
        |method: &str, path: &str, extra: &str| format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n{extra}\r\n");
    let cases: Vec<(&str, String, Option<&'static [u8]>)> = vec![
        (
            "device, Content-Length",
            head(
                "POST",
                "/EnrollmentServer/Discovery.svc",
                &format!("content-type: {SOAP}\r\ncontent-length: 1000\r\n"),
            ),
            Some(b"<"),
        ),
        (
            "device, chunked without end",
            head(
                "POST",
                "/EnrollmentServer/Discovery.svc",
                &format!("content-type: {SOAP}\r\ntransfer-encoding: chunked\r\n"),
            ),
            Some(b"1\r\n<\r\n"),
        ),
        (
            "admin API",
            head(
                "POST",
                "/api/v1/groups",
                &format!(
                    "authorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n"
                ),
            ),
            Some(b" "),
        ),
        (
            "console",
            head(
                "POST",
                "/console/login",
                "content-type: application/x-www-form-urlencoded\r\ncontent-length: 1000\r\n",
            ),
            Some(b"a"),
        ),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for (name, head, drip) in cases {
        let stream = peers.tls(loopback(1)).await.unwrap();
        tasks.spawn(async move { (name, stall(stream, head, drip).await) });
    }
    // A head that never ends: closed without an answer.
    let stream = peers.tls(loopback(1)).await.unwrap();
    tasks.spawn(async move {
        let head = "POST /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: ".to_owned();
        ("slow head", stall(stream, head, Some(b"a")).await)
    });
    // A kept-alive connection left idle: answered, then closed.
    let stream = peers.tls(loopback(1)).await.unwrap();
    tasks.spawn(async move { ("idle", stall(stream, head("GET", "/healthz", ""), None).await) });

    while let Some(done) = tasks.join_next().await {
        let (name, answer) = done.unwrap();
        match name {
            "slow head" => assert_eq!(answer, "", "a slow head is closed unanswered"),
            "idle" => assert!(status_line(&answer).starts_with("HTTP/1.1 200"), "idle: {answer:?}"),
            _ => {
                assert!(status_line(&answer).starts_with("HTTP/1.1 408"), "{name}: {answer:?}");
                assert!(
                    answer.to_ascii_lowercase().contains("connection: close"),
                    "{name}: {answer:?}"
                );
            }
        }
    }
    // The server is fine afterwards.
    let mut c = peers.http(loopback(1)).await;
    assert_eq!(send(&mut c, "GET", "/healthz", &[], "").await.unwrap().0, 200);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_a_cap_are_answered_503_with_retry_after() {
    let t = TestServer::start_with(|c| {
        c.limits.max_connections = 4;
        c.limits.max_connections_per_address = 2;
    })
    .await;
    let peers = Peers::new(&t.root_der, t.server.local_addr.port());
    let ok = |r: Result<(http::StatusCode, http::HeaderMap, String), hyper::Error>| r.unwrap().0 == 200;
    let refused = |r: Result<(http::StatusCode, http::HeaderMap, String), hyper::Error>| {
        let (status, headers, _) = r.unwrap();
        status == 503
            && headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.parse::<u32>().is_ok_and(|s| s > 0))
    };

    let mut a1 = peers.http(loopback(1)).await;
    let mut a2 = peers.http(loopback(1)).await;
    assert!(ok(send(&mut a1, "GET", "/healthz", &[], "").await));
    assert!(ok(send(&mut a2, "GET", "/healthz", &[], "").await));
    // The third from the same address: over the per-address cap.
    let mut a3 = peers.http(loopback(1)).await;
    assert!(refused(send(&mut a3, "GET", "/healthz", &[], "").await));
    // Another address still gets in, up to the total.
    let mut b1 = peers.http(loopback(2)).await;
    let mut b2 = peers.http(loopback(2)).await;
    assert!(ok(send(&mut b1, "GET", "/healthz", &[], "").await));
    assert!(ok(send(&mut b2, "GET", "/healthz", &[], "").await));
    let mut c1 = peers.http(loopback(3)).await;
    assert!(
        refused(send(&mut c1, "GET", "/healthz", &[], "").await),
        "over the total"
    );
    // A connection that ends gives its place back.
    drop(a1);
    let mut served = false;
    for _ in 0..100 {
        let mut c = peers.http(loopback(3)).await;
        if let Ok((status, _, _)) = send(&mut c, "GET", "/healthz", &[], "").await
            && status == 200
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a freed place is taken by the next connection");
    drop((a2, b1, b2));
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_served_while_200_connections_stall() {
    enough_descriptors();
    let t = TestServer::start_with(|c| {
        // The stalled connections must outlive the device's work: no body deadline in reach.
        c.limits.body_timeout_seconds = 600;
        c.limits.body_min_rate_bytes_per_second = 0;
        c.limits.max_connections_per_address = 50;
    })
    .await;
    let peers = Peers::new(&t.root_der, t.server.local_addr.port());
    let head = format!(
        "POST /EnrollmentServer/Discovery.svc HTTP/1.1\r\nhost: localhost\r\ncontent-type: {SOAP}\r\n\
         content-length: 1000\r\n\r\n<"
    );
    let mut stalled = Vec::new();
    for n in 2..=5 {
        for _ in 0..50 {
            let mut s = peers.tls(loopback(n)).await.unwrap();
            s.write_all(head.as_bytes()).await.unwrap();
            s.flush().await.unwrap();
            stalled.push(s);
        }
    }
    // One more from a full address is refused, not queued.
    let mut over = peers.http(loopback(2)).await;
    assert_eq!(send(&mut over, "GET", "/healthz", &[], "").await.unwrap().0, 503);

    // Devices and health checks are served meanwhile.
    assert_eq!(t.client().get(&t.url("/healthz")).await.unwrap().status, 200);
    let mut device = t.managed_device(None).await;
    let report = device
        .run_session(
            &t.device_client(&device),
            steward_sim::session::SessionTrigger::Scheduled,
        )
        .await
        .unwrap();
    assert!(report.ended);
    assert_eq!(t.client().get(&t.url("/healthz")).await.unwrap().status, 200);

    // …while the stalled connections are still open (a read finds nothing, not an end).
    for s in stalled.iter_mut().step_by(10) {
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(20), s.read(&mut byte))
                .await
                .is_err(),
            "a stalled connection was closed early"
        );
    }
    drop(stalled);
    t.server.shutdown().await;
}

/// Thousands of idle connections (issue 17, plan C1): 2,000 TCP connections that never start the
/// TLS handshake, 250 from each of 8 addresses (under the default 256 per address and 4,096 in
/// all), hold their slots only until the handshake deadline. Meanwhile a device enrolls and runs a
/// session; afterwards every idle connection has been closed by the server and the ledgers
/// reconcile.
#[tokio::test]
async fn two_thousand_idle_connections_are_timed_out_and_starve_no_device() {
    enough_descriptors();
    const PER_ADDRESS: usize = 250;
    const ADDRESSES: u8 = 8;
    let t = TestServer::start_with(|c| c.limits.handshake_timeout_seconds = 3).await;
    assert!(PER_ADDRESS < t.server.config.limits.max_connections_per_address);
    let port = t.server.local_addr.port();
    let mut idle = Vec::with_capacity(PER_ADDRESS * usize::from(ADDRESSES));
    for n in 0..ADDRESSES {
        for _ in 0..PER_ADDRESS {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from((loopback(10 + n), 0))).unwrap();
            idle.push(socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await.unwrap());
        }
    }
    let mut device = t.managed_device(None).await;
    let report = device
        .run_session(
            &t.device_client(&device),
            steward_sim::session::SessionTrigger::Scheduled,
        )
        .await
        .unwrap();
    assert!(report.ended);
    // Every idle connection is closed by the handshake deadline: a read ends (0 bytes or a reset).
    let closed = tokio::time::timeout(HANG_GUARD, async {
        for mut s in idle {
            let mut byte = [0u8; 1];
            match s.read(&mut byte).await {
                Ok(0) | Err(_) => {}
                Ok(_) => panic!("the server wrote to a connection that sent nothing"),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connections outlived the handshake deadline");
    assert_eq!(t.client().get(&t.url("/healthz")).await.unwrap().status, 200);
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

// ---- The server in a child process ----

const CHILD_ENV: &str = "STEWARD_TEST_CHILD_SERVER";

/// What the child server is asked to be: `key=value` pairs separated by commas.
#[derive(Debug, Default)]
struct ChildSpec {
    /// Soft RLIMIT_NOFILE the child sets for itself before starting.
    nofile: Option<u64>,
    password_hashes: Option<usize>,
    password_queue: Option<usize>,
}

impl ChildSpec {
    fn parse(s: &str) -> Self {
        let mut spec = Self::default();
        for (k, v) in s.split(',').filter_map(|kv| kv.split_once('=')) {
            match k {
                "nofile" => spec.nofile = v.parse().ok(),
                "password_hashes" => spec.password_hashes = v.parse().ok(),
                "password_queue" => spec.password_queue = v.parse().ok(),
                _ => panic!("unknown child spec key {k}"),
            }
        }
        spec
    }
}

/// The child side: a server in this process, driven by the parent test over stdin (`exhaust`:
/// open /dev/null until no descriptor is left; `release`: close those; end of input: stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the server process of other tests in this module"]
async fn child_server() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let spec = ChildSpec::parse(&spec);
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(std::env::var("STEWARD_CHILD_LOG").unwrap_or_else(|_| "steward_server=warn".into()))
        .try_init();
    if let Some(soft) = spec.nofile {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let hard = getrlimit(Resource::Nofile).maximum;
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(soft),
                maximum: hard,
            },
        )
        .unwrap();
    }
    let t = TestServer::start_with(|c| {
        // Federated, so the sign-in page (one of the password surfaces under test) is routed.
        crate::common::federated(c);
        if let Some(n) = spec.password_hashes {
            c.limits.password_hashes = Some(n);
        }
        if let Some(n) = spec.password_queue {
            c.limits.password_queue = n;
        }
    })
    .await;
    let token = t.token(Some(1000), ::time::Duration::hours(1), None).await;
    println!(
        "CHILD-READY {} {} {token}",
        t.server.local_addr.port(),
        hex::encode(&t.root_der)
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
    let mut held = Vec::new();
    while let Some(command) = rx.recv().await {
        match command.trim() {
            "exhaust" => {
                // Until nothing has been freed for a while: start-up work (the webhook
                // dispatcher reading the system's CA files) may still close a file.
                let mut quiet_rounds = 0;
                while quiet_rounds < 5 {
                    let before = held.len();
                    while let Ok(f) = std::fs::File::open("/dev/null") {
                        held.push(f);
                    }
                    quiet_rounds = if held.len() == before { quiet_rounds + 1 } else { 0 };
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                println!("CHILD-EXHAUSTED {}", held.len());
            }
            "release" => {
                held.clear();
                println!("CHILD-RELEASED");
            }
            "" => {}
            other => panic!("unknown command {other:?}"),
        }
    }
    t.server.shutdown().await;
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
    async fn start(spec: &str) -> Self {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "limits::child_server",
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
            port: 0,
            root_der: Vec::new(),
            token: String::new(),
        };
        let ready = this.expect("CHILD-READY").await;
        let mut parts = ready.split_whitespace().skip(1);
        this.port = parts.next().unwrap().parse().unwrap();
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

    /// A field of the child's /proc status, in kB (VmRSS, VmHWM).
    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Resets the child's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0); false if refused.
    fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").is_ok()
    }

    /// Enrolls a simulated device and plays its first session.
    async fn device(&self) -> steward_sim::ManagedDevice {
        let opts = EnrollOptions::new(
            self.url(""),
            "alice@example.com",
            Credentials::Password(self.token.clone()),
        );
        let enrolled = steward_sim::enroll::enroll(&self.client(), &opts).await.unwrap();
        let profile = steward_sim::csp::DeviceProfile::random(&enrolled.device_id);
        let mut device = steward_sim::ManagedDevice::from_enrolled(enrolled, profile);
        self.session(&mut device).await.unwrap();
        device
    }

    async fn session(&self, device: &mut steward_sim::ManagedDevice) -> Result<(), String> {
        let client = device
            .https_client(std::slice::from_ref(&self.root_der))
            .map_err(|e| e.to_string())?;
        let report = device
            .run_session(&client, steward_sim::session::SessionTrigger::Scheduled)
            .await
            .map_err(|e| e.to_string())?;
        if report.ended {
            Ok(())
        } else {
            Err("session not ended".into())
        }
    }

    /// Ends the child (end of its input) and returns its stderr.
    async fn finish(mut self) -> String {
        drop(self.stdin.take());
        let mut child = std::mem::replace(&mut self.child, std::process::Command::new("true").spawn().unwrap());
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "child server failed: {stderr}");
        stderr
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_sheds_connections_when_descriptors_run_out() {
    let mut child = ChildServer::start("nofile=256").await;
    let exhausted = child.command("exhaust", "CHILD-EXHAUSTED").await;
    let peers = Peers::new(&child.root_der, child.port);
    // Without a descriptor the server cannot take these; it must close them rather than leave
    // them hanging in the backlog.
    for _ in 0..20 {
        let attempt = tokio::time::timeout(HANG_GUARD, peers.tls(loopback(1))).await;
        let handshake = attempt.expect("a connection was left hanging while descriptors were exhausted");
        assert!(
            handshake.is_err(),
            "served without descriptors? ({exhausted})\n{}",
            child.stderr.lock().unwrap()
        );
    }
    child.command("release", "CHILD-RELEASED").await;
    // Serving again, devices included.
    let health = child.client().get(&child.url("/healthz")).await;
    assert!(
        health.as_ref().is_ok_and(|r| r.status == 200),
        "{health:?}\n{}",
        child.stderr.lock().unwrap()
    );
    let mut device = child.device().await;
    child.session(&mut device).await.unwrap();
    let stderr = child.finish().await;
    let warnings = stderr.matches("out of file descriptors").count();
    assert!(
        (1..=3).contains(&warnings),
        "20 shed connections are logged once per interval, not each: {warnings} warnings\n{stderr}"
    );
}

/// Memory one Argon2id check holds (the parameters every stored hash uses).
const ARGON2_MIB: u64 = steward_core::service::passwords::ARGON2_MEMORY_BYTES >> 20;
/// Password hashing slots of the child server.
const HASHES: u64 = 2;
/// Everything else 200 concurrent TLS connections and requests may take: rustls and hyper buffers,
/// tasks, the parsed SOAP documents, allocator slack.
const SLACK_MIB: u64 = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_password_checks_keep_memory_bounded() {
    enough_descriptors();
    let child = ChildServer::start(&format!("password_hashes={HASHES},password_queue=16")).await;
    let mut devices = vec![child.device().await, child.device().await];
    let peers = Peers::new(&child.root_der, child.port);
    let policy_url = child.url("/EnrollmentServer/Policy.svc");
    let get_policies = move |n: u32| {
        mde2::write_get_policies_request(
            &format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            &policy_url,
            &mde2::Credential::UsernameToken {
                username: format!("nobody-{n}@example.com"),
                password: "not the password".into(),
            },
        )
    };
    // Warm up: the dummy hash, one unknown user's check.
    let mut warm = peers.http(loopback(1)).await;
    let (status, _, _) = send(
        &mut warm,
        "POST",
        "/EnrollmentServer/Policy.svc",
        &[("content-type", SOAP)],
        get_policies(0),
    )
    .await
    .unwrap();
    assert_eq!(status, 500, "an unknown user's password is refused");

    let rss_before = child.status_kb("VmRSS");
    let peak_reset = child.reset_peak();
    let hwm_before = child.status_kb("VmHWM");
    // 200 unknown users' GetPolicies at once, and 20 console and 20 federated sign-ins with them,
    // each from its own address (so that the per-address throttling, which runs before any hash,
    // does not stop them first) and on its own connection.
    let mut checks = tokio::task::JoinSet::new();
    for n in 0..240u32 {
        let peers = peers.clone();
        let from = Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8);
        let email = format!("nobody-{n}@example.com");
        let (surface, path, content_type, body) = match n {
            0..200 => ("GetPolicies", "/EnrollmentServer/Policy.svc", SOAP, get_policies(n + 1)),
            200..220 => (
                "console",
                "/console/login",
                "application/x-www-form-urlencoded",
                format!("email={email}&password=not-the-password"),
            ),
            _ => (
                "federated",
                "/EnrollmentServer/Auth",
                "application/x-www-form-urlencoded",
                format!("appru=ms-app%3A%2F%2Fwindows.immersivecontrolpanel&email={email}&password=not-the-password"),
            ),
        };
        checks.spawn(async move {
            let mut c = peers.http(from).await;
            let answer = send(&mut c, "POST", path, &[("content-type", content_type)], body)
                .await
                .unwrap();
            (surface, answer)
        });
    }
    // Devices check in meanwhile.
    let mut sessions = Vec::new();
    for device in &mut devices {
        for _ in 0..3 {
            sessions.push(child.session(device).await);
        }
    }
    // Per surface: (refused as wrong, refused as busy).
    let mut outcomes: std::collections::BTreeMap<&str, (u32, u32)> = Default::default();
    while let Some(done) = checks.join_next().await {
        let (surface, (status, headers, body)) = done.unwrap();
        let counts = outcomes.entry(surface).or_default();
        match (surface, status.as_u16()) {
            (_, 503) => {
                assert!(
                    headers.contains_key(http::header::RETRY_AFTER),
                    "{surface}: busy without Retry-After"
                );
                counts.1 += 1;
            }
            ("GetPolicies", 500) if body.contains("incorrect") => counts.0 += 1,
            ("console" | "federated", 401) => counts.0 += 1,
            (_, other) => panic!("{surface}: unexpected answer {other}: {body}"),
        }
    }
    let (wrong, busy) = outcomes["GetPolicies"];
    let hwm_after = child.status_kb("VmHWM");
    let stderr = child.finish().await;
    let growth_mib = hwm_after.saturating_sub(if peak_reset { rss_before } else { hwm_before }) / 1024;
    let bound_mib = HASHES * ARGON2_MIB + SLACK_MIB;
    println!(
        "200 concurrent unknown-user GetPolicies (+ 20 console, 20 federated sign-ins): {outcomes:?} \
         (wrong, busy); RSS {} MiB before, peak {} MiB (+{growth_mib} MiB, bound {bound_mib} MiB)",
        rss_before / 1024,
        hwm_after / 1024
    );
    assert!(sessions.iter().all(Result::is_ok), "{sessions:?}\n{stderr}");
    assert_eq!(wrong + busy, 200);
    assert!(
        u64::from(wrong) >= HASHES,
        "some checks were hashed: {wrong} wrong, {busy} busy"
    );
    // Every surface answers a full hashing queue as retryable.
    for surface in ["console", "federated"] {
        let (wrong, busy) = outcomes[surface];
        assert_eq!(wrong + busy, 20);
        assert!(busy >= 1, "{surface}: no check was refused busy ({outcomes:?})");
    }
    assert!(
        growth_mib <= bound_mib,
        "peak RSS grew {growth_mib} MiB, over {HASHES} hashes × {ARGON2_MIB} MiB + {SLACK_MIB} MiB"
    );
}

// ---------------------------------------------------------------- per-device and per-address limits

/// A TLS client presenting `device`'s certificate, connecting from 127.0.0.1.
async fn device_tls(t: &TestServer, device: &steward_sim::ManagedDevice) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(t.root_der.clone())).unwrap();
    let (chain, key) = device.tls_identity().unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            chain.into_iter().map(CertificateDer::from).collect(),
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .unwrap();
    let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], t.server.local_addr.port())))
        .await
        .unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// A management POST from `device` whose body is not SyncML: 400 when admitted (nothing is
/// processed or written), 503 + Retry-After while the device is at its limit.
async fn management_probe(t: &TestServer, device: &steward_sim::ManagedDevice) -> (http::StatusCode, http::HeaderMap) {
    let tls = device_tls(t, device).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let (status, headers, _) = send(
        &mut sender,
        "POST",
        steward_windows::MANAGEMENT_PATH,
        &[("content-type", "application/vnd.syncml.dm+xml")],
        "not syncml",
    )
    .await
    .unwrap();
    (status, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_over_its_concurrent_session_limit_is_told_to_retry_and_others_are_served() {
    let t = TestServer::start_with(|c| {
        c.limits.sessions_per_device = 1;
        c.limits.body_timeout_seconds = 600;
        c.limits.body_min_rate_bytes_per_second = 0;
    })
    .await;
    let mut busy = t.managed_device(None).await;
    let mut other = t.managed_device(None).await;

    // The busy device's first request holds its one slot: its head is in, its body never ends.
    let mut stalled = device_tls(&t, &busy).await;
    stalled
        .write_all(
            format!(
                "POST {} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/vnd.syncml.dm+xml\r\n\
                 content-length: 1000\r\n\r\n<",
                steward_windows::MANAGEMENT_PATH
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stalled.flush().await.unwrap();
    // Until the server has admitted the stalled request, a probe is admitted itself (and refused
    // as malformed); once it has, the probe is the device's second request at once.
    let mut refused = None;
    for _ in 0..200 {
        let (status, headers) = management_probe(&t, &busy).await;
        if status == http::StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(headers);
            break;
        }
        assert_eq!(status, http::StatusCode::BAD_REQUEST);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let headers = refused.expect("the device's second request at once is refused");
    assert_eq!(headers["retry-after"], "5", "retryable");

    // Another device is served in full meanwhile.
    let client = t.device_client(&other);
    let report = other
        .run_session(&client, steward_sim::session::SessionTrigger::Scheduled)
        .await
        .unwrap();
    assert!(report.ended);

    // The stalled request ends (the client goes away): the slot frees and the device is served.
    drop(stalled);
    let mut freed = false;
    for _ in 0..200 {
        if management_probe(&t, &busy).await.0 == http::StatusCode::BAD_REQUEST {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the slot is given back when the request ends");
    let client = t.device_client(&busy);
    let report = busy
        .run_session(&client, steward_sim::session::SessionTrigger::Scheduled)
        .await
        .unwrap();
    assert!(report.ended);
    let e = t.enrollment_of(&busy).await;
    assert!(e.last_seen_at.is_some());
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

fn discover_body(port: u16) -> String {
    mde2::write_discover_request(
        "urn:uuid:00000000-0000-0000-0000-000000000001",
        &format!("https://localhost:{port}/EnrollmentServer/Discovery.svc"),
        &mde2::DiscoverRequest {
            email_address: Some("user@example.com".into()),
            request_version: Some("4.0".into()),
            device_type: Some("CIMClient_Windows".into()),
            application_version: Some("10.0.19043.0".into()),
            os_edition: Some("4".into()),
            auth_policies: vec!["OnPremise".into()],
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_is_limited_per_address_and_other_addresses_and_devices_are_served() {
    let t = TestServer::start_with(|c| c.limits.discovery_per_minute_per_address = 3).await;
    let port = t.server.local_addr.port();
    let peers = Peers::new(&t.root_der, port);
    let body = discover_body(port);
    async fn discover(
        sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        body: &str,
    ) -> (http::StatusCode, http::HeaderMap, String) {
        send(
            sender,
            "POST",
            "/EnrollmentServer/Discovery.svc",
            &[("content-type", SOAP)],
            body.to_owned(),
        )
        .await
        .unwrap()
    }

    // A burst of 3 from one address is answered; past it, a retryable fault. The bucket refills
    // at 3 a minute, so the refusal comes within a few more unless each took ~20 s.
    let mut flooding = peers.http(loopback(30)).await;
    let mut answered = 0;
    let mut refusal = None;
    for _ in 0..23 {
        let (status, headers, text) = discover(&mut flooding, &body).await;
        if status == http::StatusCode::OK {
            answered += 1;
            continue;
        }
        refusal = Some((status, headers, text));
        break;
    }
    assert!(answered >= 3, "the burst is answered");
    let (status, headers, text) = refusal.expect("a flood from one address is refused");
    assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "5");
    assert!(text.contains("s:Fault") && text.contains("try again"), "{text}");

    // Another address, and a device enrolling from 127.0.0.1, are unaffected.
    let mut neighbour = peers.http(loopback(31)).await;
    assert_eq!(discover(&mut neighbour, &body).await.0, http::StatusCode::OK);
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    assert!(
        device
            .run_session(&client, steward_sim::session::SessionTrigger::Scheduled)
            .await
            .unwrap()
            .ended
    );
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_console_body_limits_are_the_configured_ones() {
    let t = TestServer::start_with(|c| {
        c.limits.api_body_bytes = 64 * 1024;
        c.limits.console_form_bytes = 4 * 1024;
    })
    .await;
    let peers = Peers::new(&t.root_der, t.server.local_addr.port());
    let mut api = peers.http(loopback(40)).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let json = |n: usize| format!("{{\"name\":\"g\",\"description\":\"{}\"}}", "x".repeat(n));
    let (status, _, text) = send(
        &mut api,
        "POST",
        "/api/v1/groups",
        &[("authorization", &auth), ("content-type", "application/json")],
        json(70 * 1024),
    )
    .await
    .unwrap();
    assert_eq!(status, http::StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("65536"), "the problem names the configured limit: {text}");
    let (status, _, text) = send(
        &mut api,
        "POST",
        "/api/v1/groups",
        &[("authorization", &auth), ("content-type", "application/json")],
        json(60 * 1024),
    )
    .await
    .unwrap();
    assert_ne!(
        status,
        http::StatusCode::PAYLOAD_TOO_LARGE,
        "under the limit is read: {text}"
    );

    // A sign-in form padded past the configured 4 KiB is refused unread (413); under it, it is read
    // and the wrong password answered (401). The default 64 KiB would read both.
    let mut console = peers.http(loopback(41)).await;
    for (pad, expected) in [
        (5 * 1024, http::StatusCode::PAYLOAD_TOO_LARGE),
        (3 * 1024, http::StatusCode::UNAUTHORIZED),
    ] {
        let form = format!("email=a%40example.com&password=wrong&pad={}", "p".repeat(pad));
        let (status, _, _) = send(
            &mut console,
            "POST",
            "/console/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                // `send` names the host `localhost`: the console's same-origin check compares with it.
                ("origin", "https://localhost"),
            ],
            form,
        )
        .await
        .unwrap();
        assert_eq!(status, expected, "pad {pad}");
    }
    t.server.shutdown().await;
}
