//! No secret reaches the log. A child process (this test binary again, running [`child_run`])
//! starts a server with every log event of every crate enabled (`trace`, formatted to stderr as
//! the server's own subscriber would), and in it creates and uses each kind of secret the server
//! hands out or receives: an enrollment token (enrolled with, then a management session), a named
//! API token (created, then used), a webhook signing secret, a console user's password (a wrong
//! and a right sign-in), a TOTP seed (set up and used), the console session ids and the bootstrap
//! admin token. It prints each value on stdout; the parent asserts none of them occurs in any line
//! the child logged. A child process, because a tracing subscriber that sees the server's spawned
//! tasks and blocking threads must be the process-wide default, which the other tests of this
//! binary must not share.

use std::io::Read;

use http::{Method, StatusCode};
use serde_json::json;
use steward_core::Role;
use steward_core::totp::TotpSecret;
use steward_sim::enroll::Credentials;
use steward_sim::session::SessionTrigger;

use crate::common::{ADMIN_TOKEN, TestServer};
use crate::console::{PASSWORD, console_user, element_text, enc, send, session_of};
use crate::webhooks::api;

const CHILD_ENV: &str = "STEWARD_TEST_SECRET_LOG_CHILD";

#[test]
fn no_secret_value_appears_in_any_log_line() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "secret_logs::child_run",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let status = child.wait().unwrap();
    let log = err.join().unwrap();
    assert!(status.success(), "child failed: {stdout}\n{log}");

    // libtest may print "test … " on the same line first.
    let secrets: Vec<(&str, &str)> = stdout
        .lines()
        .filter_map(|l| l.find("SECRET ").map(|at| &l[at + 7..]))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let kinds: std::collections::BTreeSet<&str> = secrets.iter().map(|(k, _)| *k).collect();
    for kind in [
        "enrollment_token",
        "api_token",
        "webhook_secret",
        "password",
        "totp_seed",
        "session",
        "admin_token",
    ] {
        assert!(kinds.contains(kind), "the child printed no {kind}: {stdout}");
    }
    // The run really logged (the server's own events and the libraries'), so the check below
    // looked at something.
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("steward_server")) && lines.len() > 100,
        "too little was logged ({} lines)",
        lines.len()
    );
    for (kind, value) in &secrets {
        assert!(value.len() >= 16, "{kind} {value:?} is too short to search for");
        if let Some(line) = lines.iter().find(|l| l.contains(value)) {
            panic!("the {kind} appears in the log: {line}");
        }
    }
}

/// The child side of [`no_secret_value_appears_in_any_log_line`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of no_secret_value_appears_in_any_log_line"]
async fn child_run() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .init();
    let secret = |kind: &str, value: &str| println!("SECRET {kind} {value}");
    secret("admin_token", ADMIN_TOKEN);

    let t = TestServer::start().await; // the console requires TOTP (the default)

    // Enrollment token: enroll with it, then a management session.
    let token = t.token(Some(1), ::time::Duration::hours(1), None).await;
    secret("enrollment_token", &token);
    let enrolled = steward_sim::enroll::enroll(&t.client(), &t.options(Credentials::Password(token)))
        .await
        .unwrap();
    let md5 = crate::common::md5_credentials(&enrolled.provisioning_doc);
    let profile = steward_sim::csp::DeviceProfile::random(&enrolled.device_id);
    let mut device = steward_sim::ManagedDevice::from_enrolled(enrolled, profile);
    device.md5 = md5;
    let client = t.device_client(&device);
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();

    // A named API token, created and then used; a webhook subscription's signing secret.
    let (status, v) = api(
        &t,
        Method::POST,
        "/api/v1/api-tokens",
        ADMIN_TOKEN,
        Some(json!({"name": "log check", "role": "operator"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let api_token = v["token"].as_str().unwrap().to_owned();
    secret("api_token", &api_token);
    let (status, _) = api(&t, Method::GET, "/api/v1/devices", &api_token, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = api(
        &t,
        Method::POST,
        "/api/v1/webhooks",
        ADMIN_TOKEN,
        Some(json!({"name": "log check", "url": "http://127.0.0.1:9/hook", "events": ["all"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    secret("webhook_secret", v["secret"].as_str().unwrap());

    // A console user: a wrong password, the right one, the TOTP set-up and a code.
    secret("password", PASSWORD);
    let wrong = "wrong-but-secret-password-attempt";
    secret("password", wrong);
    console_user(&t, "admin@example.com", Role::Admin).await;
    let r = send(
        &t,
        "POST",
        "/console/login",
        None,
        Some(&format!("email=admin%40example.com&password={}", enc(wrong))),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(
        &t,
        "POST",
        "/console/login",
        None,
        Some(&format!("email=admin%40example.com&password={}", enc(PASSWORD))),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let pending = session_of(&r);
    secret("session", &pending);
    let page = send(&t, "GET", "/console/login/second-factor", Some(&pending), None).await;
    assert_eq!(page.status, StatusCode::OK);
    let key = element_text(&page.body, "totp-secret");
    // The page may group the key for reading; the seed is the same with or without spaces.
    secret("totp_seed", &key.replace(' ', ""));
    let seed = TotpSecret::from_base32(&key).unwrap();
    let code = seed.code_at(time::OffsetDateTime::now_utc());
    let r = send(
        &t,
        "POST",
        "/console/login/second-factor",
        Some(&pending),
        Some(&format!("csrf={}&code={code}", page.csrf())),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let full = session_of(&r);
    secret("session", &full);
    assert_eq!(
        send(&t, "GET", "/console", Some(&full), None).await.status,
        StatusCode::OK
    );
    t.server.shutdown().await;
}
