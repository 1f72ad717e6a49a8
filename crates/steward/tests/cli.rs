//! The `steward` binary end to end: `config check`, `serve` on a fresh data directory (zero
//! configuration besides where and on which port), `enroll-token create` against the same data
//! directory while the server runs, a simulated device enrolling with that token, and the CLI as an
//! API client (`login`, `devices`, `commands`, `sync`, `wipe`, `tokens`, errors and exit codes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use steward_sim::{Credentials, EnrollOptions, HttpsClient};

fn steward(dir: &std::path::Path, port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_steward"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STEWARD_DATA_DIR", dir)
        .env("STEWARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("STEWARD_PUBLIC_URL", format!("https://localhost:{port}"))
        .env("STEWARD_LOG", "warn");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);

const ADMIN_TOKEN: &str = "stw_adm_cli_test_bootstrap_0123456789";

/// Starts `steward serve` with a known bootstrap admin token and waits for its banner.
fn start_server(dir: &std::path::Path, port: u16) -> Server {
    start_server_with(dir, port, &[])
}

/// [`start_server`] with more environment variables.
fn start_server_with(dir: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Server {
    let mut child = steward(dir, port)
        .envs(env.iter().copied())
        .env("STEWARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("server printed its banner");
        assert!(!line.contains(ADMIN_TOKEN), "a configured admin token is never printed");
        if line.contains("ms-device-enrollment:") {
            return server;
        }
    }
}

/// The CLI as a client: no data directory it could fall back to, its own config home.
fn client(home: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_steward"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("STEWARD_LOG", "warn")
        .stdin(Stdio::null());
    c
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}{}",
        c.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_json(c: &mut Command) -> serde_json::Value {
    let text = run_ok(c.args(["--output", "json"]));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn login(home: &std::path::Path, port: u16, ca: &std::path::Path, token: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = client(home)
        .args([
            "login",
            "--server",
            &format!("https://localhost:{port}"),
            "--token-stdin",
            "--ca",
        ])
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    // `steward … | head`: the reader is gone before the command prints.
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = steward(dir.path(), 9443)
        .args(["config", "check"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn config_check_reports_and_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let out = steward(dir.path(), 9443).args(["config", "check"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("configuration is valid") && text.contains("https://localhost:9443"),
        "{text}"
    );
    assert!(!dir.path().join("steward.db").exists(), "config check starts nothing");

    let out = steward(dir.path(), 9443)
        .env("STEWARD_PUBLIC_URL", "http://insecure.example.com")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_then_enroll_with_a_cli_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = steward(dir.path(), port)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);

    // Read the banner until the enrollment instructions, collecting the admin token line.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut banner = Vec::new();
    while !banner.iter().any(|l: &String| l.contains("ms-device-enrollment:")) {
        let left = deadline.saturating_duration_since(Instant::now());
        banner.push(rx.recv_timeout(left).expect("server printed its banner"));
    }
    let banner = banner.join("\n");
    assert!(banner.contains("Admin token (shown once"), "{banner}");
    // Interop review E-1: the self-issued certificate is said to be untrusted by devices, once.
    assert_eq!(
        banner
            .matches("Warning: devices will not trust this server's TLS certificate")
            .count(),
        1,
        "{banner}"
    );
    // Zero configuration keeps working, but says where the KEK should not stay.
    assert!(
        banner.contains("Warning: the key-encryption key") && banner.contains("steward-kek"),
        "{banner}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        for name in ["steward.db", "kek", "pki/root-ca.pem", "pki/server.meta"] {
            let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
    assert!(
        banner.contains(&format!("https://localhost:{port}/EnrollmentServer/Discovery.svc")),
        "{banner}"
    );
    assert!(banner.contains("Enroll only in device management"), "{banner}");

    let out = steward(dir.path(), port)
        .args([
            "enroll-token",
            "create",
            "--uses",
            "1",
            "--expires",
            "1h",
            "--group",
            "lab",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("stw_enr_"), "{token}");

    let root_pem = std::fs::read(dir.path().join("pki/root-ca.pem")).unwrap();
    let root: Vec<Vec<u8>> = rustls_pki_types::pem::PemObject::pem_slice_iter(&root_pem)
        .map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| c.unwrap().to_vec())
        .collect();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = HttpsClient::new(&root, None).unwrap();
    let opts = EnrollOptions::new(
        format!("https://localhost:{port}"),
        "dave@example.com",
        Credentials::Password(token.clone()),
    );
    let device = steward_sim::enroll::enroll(&client, &opts).await.unwrap();
    assert_eq!(
        device.management_url,
        format!("https://localhost:{port}/ManagementServer/MDM.svc")
    );

    // The single-use token is spent: a second device is refused.
    let err = steward_sim::enroll::enroll(&client, &opts).await.unwrap_err();
    assert!(err.to_string().contains("Authentication"), "{err}");

    let out = steward(dir.path(), port)
        .args(["enroll-token", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("1/1") && list.contains("exhausted"), "{list}");
    drop(server);
}

/// Local admin actions are audited, `audit export` prints them as JSON lines, and `audit verify`
/// notices a row edited behind Steward's back (exit code 1, naming the row).
#[tokio::test]
async fn audit_verify_detects_an_edited_row() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = steward(dir.path(), 9443)
            .args(["enroll-token", "create", "--uses", "1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = steward(dir.path(), 9443).args(["audit", "verify"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact: 2 events"));

    let out = steward(dir.path(), 9443).args(["audit", "export"]).output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["action"], "enrollment_token.create");
    assert_eq!(lines[0]["actor"], "cli (local)");
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);

    // Someone with write access to the file drops the append-only trigger and rewrites history.
    {
        let db = rusqlite::Connection::open(dir.path().join("steward.db")).unwrap();
        db.execute_batch(
            "DROP TRIGGER audit_events_no_update; \
             UPDATE audit_events SET actor = 'someone else' WHERE seq = 1;",
        )
        .unwrap();
    }
    let out = steward(dir.path(), 9443).args(["audit", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BROKEN at event #1"), "{err}");
}

/// A forged event appended with a correct unkeyed hash after the head ("ada wiped device 1"), the
/// kind of row the chain used to accept: `audit verify` names it, exit code 1. Also: what it prints
/// for an intact log with no checkpoint yet (no server ran).
#[tokio::test]
async fn audit_verify_detects_a_forged_append() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = steward(dir.path(), 9443)
            .args(["enroll-token", "create", "--uses", "1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = steward(dir.path(), 9443).args(["audit", "verify"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("events #1-#2: keyed HMAC-SHA-256"), "{report}");
    assert!(report.contains("no signed checkpoint yet"), "{report}");

    let out = steward(dir.path(), 9443).args(["audit", "export"]).output().unwrap();
    let head: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let forged = steward_core::NewAuditEvent {
        at: time::OffsetDateTime::now_utc(),
        actor: "ada".into(),
        actor_id: None,
        actor_role: Some(steward_core::Role::Admin),
        action: "device.wipe".into(),
        target: Some("1".into()),
        source_ip: None,
        outcome: steward_core::AuditOutcome::Success,
        status: None,
        details: None,
    }
    .chained(3, head["hash"].as_str().unwrap());
    {
        let db = rusqlite::Connection::open(dir.path().join("steward.db")).unwrap();
        db.execute(
            "INSERT INTO audit_events (seq, at, actor, actor_id, actor_role, action, target, source_ip, outcome, \
             status, details, prev_hash, hash) VALUES (3, ?1, 'ada', NULL, 'admin', 'device.wipe', '1', NULL, \
             'success', NULL, NULL, ?2, ?3)",
            rusqlite::params![steward_core::unix_micros(forged.at), forged.prev_hash, forged.hash],
        )
        .unwrap();
    }
    let out = steward(dir.path(), 9443).args(["audit", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BROKEN at event #3") && err.contains("keyed MAC"), "{err}");
}

/// What the API answers (and so every surface prints) for an enrollment-token group that is not
/// a group name, and for an over-long description.
const BAD_GROUP: &str =
    "error: a group name has 1-64 letters, digits, spaces, '-', '_' or '.' (422 Unprocessable Entity)";
const LONG_DESCRIPTION: &str = "error: description must be at most 256 printable characters (422 Unprocessable Entity)";

/// `enroll-token create` on the data directory goes through the same validation as the API: a
/// path-like group and an over-long description are refused with the API's words, exit code 1, and
/// nothing is created.
#[test]
fn enroll_token_fields_are_refused_like_the_api_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let long = "d".repeat(257);
    for (args, expected) in [
        (["--group", "../../x"], BAD_GROUP),
        (["--description", long.as_str()], LONG_DESCRIPTION),
    ] {
        let out = steward(dir.path(), 9443)
            .args(["enroll-token", "create"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), expected);
    }
    let out = steward(dir.path(), 9443)
        .args(["enroll-token", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("x"), "nothing created");
    let out = steward(dir.path(), 9443).args(["groups", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("../../x"));
}

#[test]
fn doctor_tls_sees_what_a_device_sees() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = start_server_with(dir.path(), port, &[("STEWARD_TLS_DEVICE_HOSTNAME", "device.localhost")]);
    let url = format!("https://localhost:{port}");
    // With the system's roots, as a fresh device: our own CA is not trusted, exit non-zero.
    let out = client(home.path())
        .args(["doctor", "tls", "--url", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("trusted: NO"), "{stdout}");
    assert!(stdout.contains("devices will not trust"), "{stdout}");
    assert!(stdout.contains("names   localhost, device.localhost"), "{stdout}");
    // Trusting the root (a device that has it, or a public CA's): no problems. The public host
    // requests no client certificate, the device host does.
    let root = dir.path().join("pki/root-ca.pem");
    let mut doctor = client(home.path());
    doctor
        .args([
            "doctor",
            "tls",
            "--url",
            &url,
            "--device-host",
            "device.localhost",
            "--connect",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--ca")
        .arg(&root);
    let stdout = run_ok(&mut doctor);
    assert!(stdout.contains("no problems found"), "{stdout}");
    let sections: Vec<&str> = stdout.split("(as a device trusting").collect();
    assert_eq!(sections.len(), 3, "{stdout}");
    assert!(sections[1].contains("client certificate requested: no"), "{stdout}");
    assert!(sections[2].contains("client certificate requested: yes"), "{stdout}");
    // Naming a discovery domain the certificate lacks is a problem.
    let out = client(home.path())
        .args([
            "doctor",
            "tls",
            "--url",
            &url,
            "--device-host",
            "device.localhost",
            "--email-domain",
            "example.com",
            "--ca",
        ])
        .arg(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("does not name EnterpriseEnrollment.example.com"),
        "{stdout}"
    );
}

#[test]
fn completions_generate_for_every_shell() {
    let home = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "_steward()"),
        ("zsh", "#compdef steward"),
        ("fish", "complete -c steward"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let script = run_ok(client(home.path()).args(["completions", shell]));
        assert!(script.contains(marker), "{shell}: {}", &script[..script.len().min(200)]);
        assert!(
            script.contains("enroll-tokens") && script.contains("devices"),
            "{shell}"
        );
    }
    let out = client(home.path()).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
}

/// `steward login` with the bootstrap token, then the device, command, action and token commands
/// through the admin API against a real server and a simulated device; `--local` and `logout`
/// fall back to the data directory; bad tokens give one clear line and exit code 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_cli_manages_a_simulated_device() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = start_server(dir.path(), port);
    let ca = dir.path().join("pki/root-ca.pem");
    let cli_toml = home.path().join("config/steward/cli.toml");

    // Not logged in, no data directory named: the local form (here an empty default directory
    // would be created, so just check that the remote-only command says what to do).
    let out = client(home.path()).args(["tokens", "list"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("steward login"));

    // A wrong token: refused, nothing stored.
    let out = login(home.path(), port, &ca, "stw_adm_not_a_real_token_at_all");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("login to https://localhost:") && err.contains("401"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!cli_toml.exists());

    // Without --ca the server's private CA is not trusted, and the error says what to do.
    let out = client(home.path())
        .env("STEWARD_TOKEN", ADMIN_TOKEN)
        .args(["login", "--server", &format!("https://localhost:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ca"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = login(home.path(), port, &ca, ADMIN_TOKEN);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Logged in to https://localhost:"), "{said}");
    assert!(!said.contains(ADMIN_TOKEN), "the token is never printed");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cli_toml).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&cli_toml).unwrap();
        assert!(
            text.contains(&format!("https://localhost:{port}")) && text.contains("root-ca.pem"),
            "{text}"
        );
    }

    // The built-in catalog over HTTPS: the table, the API's JSON, one entry, an unknown one.
    let table = run_ok(client(home.path()).args(["catalog", "list"]));
    assert!(table.starts_with("NAME"), "{table}");
    let bitlocker = table
        .lines()
        .find(|l| l.starts_with("baseline-bitlocker "))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = bitlocker.split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        ["baseline-bitlocker", "baseline", "bitlocker", "17"],
        "{bitlocker}"
    );
    let list = run_json(client(home.path()).args(["catalog", "list"]));
    let items = list["items"].as_array().unwrap();
    let baselines = items.iter().filter(|i| i["category"] == "baseline").count();
    assert_eq!(baselines, 8, "{list}");
    assert!(items.iter().any(|i| i["category"] == "update-ring"));
    let wifi = items.iter().find(|i| i["name"] == "kind-wifi").unwrap();
    assert_eq!(wifi["parameters"], serde_json::json!(["ssid", "passphrase"]));
    let show = run_ok(client(home.path()).args(["catalog", "show", "baseline-firewall"]));
    assert!(
        show.contains("./Vendor/MSFT/Firewall/MdmStore/PublicProfile/EnableFirewall")
            && show.contains("https://learn.microsoft.com/en-us/windows/client-management/mdm/firewall-csp#"),
        "{show}"
    );
    let detail = run_json(client(home.path()).args(["catalog", "show", "kind-client-certificate-pfx"]));
    let password = detail["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "pfx_password")
        .unwrap();
    assert_eq!(password["secret"], true);
    let shown = run_ok(client(home.path()).args(["catalog", "show", "kind-client-certificate-pfx"]));
    assert!(
        !shown.contains(password["example"].as_str().unwrap()),
        "a secret's example is not printed: {shown}"
    );
    let out = client(home.path())
        .args(["catalog", "show", "no-such-entry"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("catalog entry not found"), "{err}");

    // Enrollment tokens through the API; the simulated device enrolls with one.
    let token = run_ok(client(home.path()).args([
        "enroll-tokens",
        "create",
        "--uses",
        "2",
        "--expires",
        "1h",
        "--group",
        "lab",
    ]));
    let token = token.trim().to_owned();
    assert!(token.starts_with("stw_enr_"), "{token}");
    // Over HTTPS the same refusal as on the data directory, word for word.
    let out = client(home.path())
        .args(["enroll-tokens", "create", "--group", "../../x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), BAD_GROUP);
    let tokens = run_json(client(home.path()).args(["enroll-tokens", "list"]));
    assert_eq!(tokens["items"][0]["group"], "lab");
    assert!(
        tokens.to_string().find(&token).is_none(),
        "listings never hold token values"
    );

    let root_pem = std::fs::read(&ca).unwrap();
    let root: Vec<Vec<u8>> = rustls_pki_types::pem::PemObject::pem_slice_iter(&root_pem)
        .map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| c.unwrap().to_vec())
        .collect();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let https = HttpsClient::new(&root, None).unwrap();
    let opts = EnrollOptions::new(
        format!("https://localhost:{port}"),
        "erin@example.com",
        Credentials::Password(token.clone()),
    );
    let device = steward_sim::enroll::enroll(&https, &opts).await.unwrap();
    let id = device.device_id.clone();

    // devices list / show
    let list = run_json(client(home.path()).args(["devices", "list"]));
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["device_id"], id.as_str());
    assert_eq!(items[0]["state"], "active");
    let table = run_ok(client(home.path()).args(["devices", "list", "--group", "lab"]));
    assert!(table.starts_with("DEVICE ID") && table.contains(&id), "{table}");
    let none = run_json(client(home.path()).args(["devices", "list", "--search", "no-such-name"]));
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let out = client(home.path())
        .args(["devices", "list", "--group", "nope"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no group named \"nope\""));
    // Groups through the API: create, move the device, the list filters by it server-side.
    run_ok(client(home.path()).args(["groups", "create", "Finance"]));
    let moved = run_json(client(home.path()).args(["devices", "move", &id, "--group", "Finance"]));
    assert_eq!(moved["device_id"], id.as_str());
    let groups = run_json(client(home.path()).args(["groups", "list"]));
    let finance = groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "Finance")
        .unwrap()
        .clone();
    assert_eq!(finance["active_devices"], 1, "{groups}");
    let listed = run_json(client(home.path()).args(["devices", "list", "--group", "Finance"]));
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let out = client(home.path())
        .args(["groups", "delete", "Finance"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a group in use is not deleted");
    run_ok(client(home.path()).args(["devices", "move", &id, "--none"]));
    run_ok(client(home.path()).args(["groups", "delete", "Finance"]));
    run_ok(client(home.path()).args(["devices", "move", &id, "--group", "lab"]));
    // A dynamic group: members by rule (the device's user is at example.com), never moved into.
    let rule = r#"{"all": [{"fact": "user.domain", "op": "==", "value": "example.com"}]}"#;
    let created = run_json(client(home.path()).args(["groups", "create", "Example", "--rule", rule]));
    assert_eq!(created["rule"]["all"][0]["fact"], "user.domain", "{created}");
    let members = run_json(client(home.path()).args(["groups", "members", "Example"]));
    assert_eq!(members["items"][0]["device_id"], id.as_str(), "{members}");
    let table = run_ok(client(home.path()).args(["groups", "members", "lab"]));
    assert!(table.contains(&id), "a static group's members: {table}");
    let out = client(home.path())
        .args(["devices", "move", &id, "--group", "Example"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dynamic"), "{out:?}");
    let bad = home.path().join("bad-rule.json");
    std::fs::write(&bad, r#"{"all": [{"fact": "os.version", "op": "~=", "value": "10"}]}"#).unwrap();
    let out = client(home.path())
        .args(["groups", "create", "Bad", "--rule-file"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown op"), "{out:?}");
    let other = r#"{"all": [{"fact": "user.domain", "op": "==", "value": "other.example"}]}"#;
    run_ok(client(home.path()).args(["groups", "set-rule", "Example", "--rule", other]));
    let members = run_json(client(home.path()).args(["groups", "members", "Example"]));
    assert_eq!(members["items"].as_array().unwrap().len(), 0, "{members}");
    run_ok(client(home.path()).args(["groups", "delete", "Example"]));
    // Users through the API, with a console role; their second factor can be reset remotely.
    let added = run_json(client(home.path()).args([
        "user",
        "add",
        "ops@example.com",
        "--password",
        "correct horse battery",
        "--console-role",
        "operator",
    ]));
    assert_eq!(added["email"], "ops@example.com");
    run_ok(client(home.path()).args(["user", "reset-totp", "ops@example.com"]));
    let users = run_json(client(home.path()).args(["user", "list"]));
    let ops = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "ops@example.com")
        .unwrap()
        .clone();
    assert_eq!(
        (ops["console_role"].as_str(), ops["disabled"].as_bool()),
        (Some("operator"), Some(false))
    );
    let changed = run_json(client(home.path()).args(["user", "set-role", "ops@example.com", "auditor"]));
    assert_eq!(changed["console_role"], "auditor");
    let disabled = run_json(client(home.path()).args(["user", "disable", "ops@example.com"]));
    assert_eq!(disabled["disabled"], true);
    let table = run_ok(client(home.path()).args(["user", "list"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ops@example.com") && l.contains("auditor") && l.ends_with("yes")),
        "{table}"
    );
    let shown = run_json(client(home.path()).args(["devices", "show", &id]));
    assert_eq!(shown["device"]["device_id"], id.as_str());
    let out = client(home.path())
        .args(["devices", "show", "NO-SUCH-DEVICE"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("device not found (404 Not Found)"));

    // sync queues an inventory refresh visible in the command timeline.
    let said = run_ok(client(home.path()).args(["sync", &id]));
    assert!(said.contains("queued inventory"), "{said}");
    let commands = run_json(client(home.path()).args(["commands", "list", &id]));
    let items = commands["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|c| c["origin"] == "inventory" && c["state"] == "pending"),
        "{commands}"
    );
    let table = run_ok(client(home.path()).args(["commands", "list", &id]));
    assert!(table.contains("inventory") && table.contains("pending"), "{table}");

    // Bulk sync over a group, and a custom command then cancelled.
    let said = run_ok(client(home.path()).args(["sync", "--group", "lab"]));
    assert!(said.contains("queued an inventory refresh on 1 of 1 devices"), "{said}");
    let queued = run_ok(client(home.path()).args([
        "commands",
        "send",
        &id,
        "--verb",
        "replace",
        "--format",
        "int",
        "--item",
        "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera=0",
    ]));
    let cid = queued.trim().to_owned();
    let cancelled = run_json(client(home.path()).args(["commands", "cancel", &cid]));
    assert_eq!(cancelled["state"], "cancelled");
    let out = client(home.path()).args(["commands", "cancel", &cid]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("409 Conflict"));

    // A help-desk token may sync but not wipe: exit code 3 and the reason.
    let helpdesk =
        run_ok(client(home.path()).args(["tokens", "create", "desk", "--role", "helpdesk", "--expires", "30d"]));
    let helpdesk = helpdesk.trim().to_owned();
    assert!(helpdesk.starts_with("stw_adm_"), "{helpdesk}");
    let out = client(home.path())
        .env("STEWARD_TOKEN", &helpdesk)
        .args(["wipe", &id, "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403 Forbidden") && err.contains("helpdesk"), "{err}");
    let tokens = run_json(client(home.path()).args(["tokens", "list"]));
    let desk = &tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "desk")
        .unwrap();
    assert_eq!(desk["role"], "helpdesk");
    let desk_id = desk["id"].as_str().unwrap().to_owned();
    run_ok(client(home.path()).args(["tokens", "revoke", &desk_id]));
    // The bootstrap token is in the list too, with its kind and creation time.
    let bootstrap = tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "bootstrap")
        .expect("the bootstrap token is listed")
        .clone();
    assert_eq!(
        (bootstrap["name"].as_str(), bootstrap["active"].as_bool()),
        (Some("bootstrap (configured)"), Some(true))
    );
    let bootstrap_id = bootstrap["id"].as_str().unwrap().to_owned();
    let table = run_ok(client(home.path()).args(["tokens", "list"]));
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains("KIND") && header.contains("CREATED"), "{table}");
    let created = bootstrap["created_at"].as_str().unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with(&bootstrap_id))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("bootstrap") && row.contains("admin") && row.contains("active") && row.contains(&created[..10]),
        "{row}"
    );

    // An invalid (here: revoked) token: one clear line, exit code 3.
    let out = client(home.path())
        .env("STEWARD_TOKEN", &helpdesk)
        .args(["devices", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("401 Unauthorized") && err.contains("steward login"),
        "{err}"
    );
    assert!(!err.contains(&helpdesk));

    // wipe through the API: --yes required, then queued ahead of everything.
    let out = client(home.path()).args(["wipe", &id]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let wiped = run_json(client(home.path()).args(["wipe", &id, "--yes", "--kind", "wipe"]));
    assert_eq!(wiped["origin"], "action:wipe");
    assert_eq!(wiped["state"], "pending");

    // `tokens revoke` works for the bootstrap token too: here with an admin token made to take
    // over, after which the stored login (the bootstrap token) is refused.
    let admin = run_ok(client(home.path()).args(["tokens", "create", "ops-admin", "--role", "admin"]));
    let admin = admin.trim().to_owned();
    run_ok(
        client(home.path())
            .env("STEWARD_TOKEN", &admin)
            .args(["tokens", "revoke", &bootstrap_id]),
    );
    let out = client(home.path()).args(["devices", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let tokens = run_json(
        client(home.path())
            .env("STEWARD_TOKEN", &admin)
            .args(["tokens", "list"]),
    );
    let revoked = tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == bootstrap_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked["active"], false);
    assert!(revoked["revoked_at"].is_string());

    // The API calls were audited with the token's name, not as the local CLI.
    let out = steward(dir.path(), port).args(["audit", "export"]).output().unwrap();
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(
        audit.contains("\"device.wipe\"") && audit.contains("\"device.sync\""),
        "{audit}"
    );
    assert!(!audit.contains("cli (local)"), "{audit}");

    // --local works on the data directory even while logged in.
    let local = run_ok(
        steward(dir.path(), port)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .args(["--local", "devices", "list"]),
    );
    assert!(local.contains(&id), "{local}");

    // logout forgets the server: the same command is local again.
    let said = run_ok(client(home.path()).arg("logout"));
    assert!(said.contains("logged out"), "{said}");
    assert!(!cli_toml.exists());
    let out = steward(dir.path(), port)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .args(["devices", "list", "--output", "json"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output json needs the API"));
}

/// `steward apply`, `export`, `profiles`, `catalog assign` and `verify` on the local data
/// directory (the in-process API): a dry run writes nothing, a second apply and the export's apply
/// say "no changes", a bad setting is named and nothing is saved.
#[test]
fn profiles_apply_export_and_show_locally() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| run_ok(steward(dir.path(), 9443).args(args));
    run(&["groups", "create", "pilot"]);
    std::fs::write(
        files.path().join("10-camera.yaml"),
        "kind: profile
name: camera-off
platform: windows
settings:
  - loc_uri: ./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera
    format: int
    value: 0
assign:
  groups: [pilot]        # or: all: true ; exclude_groups: [...]
",
    )
    .unwrap();
    std::fs::write(
        files.path().join("20-lock.yml"),
        "kind: profile
name: screen-lock
platform: windows
priority: 50
settings:
  - loc_uri: ./Device/Vendor/MSFT/Policy/Config/DeviceLock/MaxInactivityTimeDeviceLock
    format: int
    value: 15
assign:
  all: true
---
kind: profile
name: smartscreen
platform: windows
remediation: report
settings:
  - loc_uri: ./Device/Vendor/MSFT/Policy/Config/SmartScreen/EnableSmartScreenInShell
    format: int
    value: 1
",
    )
    .unwrap();
    std::fs::write(files.path().join("README.txt"), "not a profile").unwrap();
    let d = files.path().to_str().unwrap();

    let dry = run(&["apply", "-f", d, "--dry-run"]);
    assert!(
        dry.contains("camera-off (windows): would be created, version 1"),
        "{dry}"
    );
    assert!(
        dry.contains("+ ./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera"),
        "{dry}"
    );
    assert!(dry.contains("assignment: groups pilot (0 devices)"), "{dry}");
    assert!(dry.ends_with("dry run: nothing was written\n"), "{dry}");
    assert!(
        !run(&["profiles", "list"]).contains("camera-off"),
        "a dry run writes nothing"
    );

    let applied = run(&["apply", "-f", d]);
    assert!(
        applied.contains("screen-lock (windows): created, version 1"),
        "{applied}"
    );
    assert!(applied.ends_with("3 profile(s) written\n"), "{applied}");
    assert!(run(&["apply", "-f", d]).ends_with("no changes\n"));
    let list = run(&["profiles", "list"]);
    for name in ["camera-off", "screen-lock", "smartscreen"] {
        assert!(list.contains(name), "{list}");
    }

    // A bad setting: exit code 1 naming the profile and the setting; nothing saved.
    let bad = files.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: profile
name: screen-lock
platform: windows
settings:
  - loc_uri: ./Device/Vendor/MSFT/Policy/Config/DeviceLock/MaxInactivityTimeDeviceLock
    format: integer
    value: 5
",
    )
    .unwrap();
    let out = steward(dir.path(), 9443)
        .args(["apply", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("screen-lock") && err.contains("setting 0"), "{err}");
    std::fs::remove_file(&bad).unwrap();
    let shown = run(&["profiles", "show", "screen-lock"]);
    assert!(shown.contains("version 1"), "{shown}");
    assert!(shown.contains("\"value\":15"), "{shown}");

    // The export (stdout, and a directory) applies back with no changes.
    let exported = run(&["export"]);
    assert!(exported.contains("name: camera-off"), "{exported}");
    let back = files.path().join("export.yaml");
    std::fs::write(&back, &exported).unwrap();
    assert!(run(&["apply", "-f", back.to_str().unwrap()]).ends_with("no changes\n"));
    let out_dir = files.path().join("exported");
    run(&["export", "--dir", out_dir.to_str().unwrap()]);
    assert!(out_dir.join("smartscreen.yaml").is_file());
    assert!(run(&["apply", "-f", out_dir.to_str().unwrap()]).ends_with("no changes\n"));

    let status = run(&["profiles", "status", "camera-off"]);
    assert!(
        status.contains("camera-off: version 1, assigned to 0 active devices"),
        "{status}"
    );
    let dry = run(&[
        "catalog",
        "assign",
        "baseline-smartscreen",
        "--group",
        "pilot",
        "--dry-run",
    ]);
    assert!(
        dry.contains("baseline-smartscreen (windows): would be created"),
        "{dry}"
    );
    assert!(!run(&["profiles", "list"]).contains("baseline-smartscreen"));
    let assigned = run(&["catalog", "assign", "baseline-smartscreen", "--group", "pilot"]);
    assert!(
        assigned.contains("baseline-smartscreen (windows): created"),
        "{assigned}"
    );
    let verified = run(&["verify", "--group", "pilot"]);
    assert!(
        verified.contains("verification requested for 0 device(s)"),
        "{verified}"
    );
    run(&["profiles", "delete", "smartscreen"]);
    let list = run(&["profiles", "list"]);
    assert!(!list.lines().any(|l| l.starts_with("smartscreen ")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("baseline-smartscreen ")), "{list}");
}
