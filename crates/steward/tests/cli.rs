//! The `steward` binary end to end: `config check`, `serve` on a fresh data directory (zero
//! configuration besides where and on which port), `enroll-token create` against the same data
//! directory while the server runs, and a simulated device enrolling with that token.

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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.path().join("steward.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("DROP TRIGGER audit_events_no_update")
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_events SET actor = 'someone else' WHERE seq = 1")
            .execute(&mut db)
            .await
            .unwrap();
        db.close().await.unwrap();
    }
    let out = steward(dir.path(), 9443).args(["audit", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BROKEN at event #1"), "{err}");
}
