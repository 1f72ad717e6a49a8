//! Credentials and data at rest (issue #20): bootstrap admin tokens are replaced by a newly
//! configured one, listed and revocable; every file the server creates in the data directory is
//! private and a KEK others can read refuses the start; a device whose request meets a locked
//! database is told to retry, with a trace id and nothing of the database's words; the browser
//! surfaces carry HSTS; the federated sign-in page exists only under the Federated policy, with the
//! console's headers and the password limits.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use steward_core::SecretString;
use steward_server::Config;
use steward_sim::session::SessionTrigger;
use steward_sim::{HttpsClient, Response};
use steward_windows_proto::{mde2, syncml};

use crate::common::{ADMIN_TOKEN, TestServer, config_for, federated, sqlite};
use crate::enrollment_faults::{SOAP, cred, fault_of, good_csr, post_rst};

const HSTS: &str = "max-age=31536000";

/// An admin API call over TLS with a bearer token.
async fn api(
    t: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let resp = t.client().request(method, &t.url(path), &headers, body).await.unwrap();
    let value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, resp.headers, value)
}

fn configured(token: &'static str) -> impl FnOnce(&mut Config) {
    move |c| c.admin_token = Some(SecretString::new(token))
}

fn bootstrap_entries(list: &Value) -> Vec<Value> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "bootstrap")
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_new_bootstrap_token_revokes_the_old_one_and_both_are_listed() {
    const ROTATED: &str = "stw_adm_rotated-bootstrap-token-0001";
    let t = TestServer::start().await;
    let (status, headers, _) = api(&t, Method::GET, "/api/v1/server", ADMIN_TOKEN, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["strict-transport-security"], HSTS, "API responses carry HSTS");
    let port = t.server.local_addr.port();
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;

    // Restarted with another configured value: the old one is revoked at start.
    let t = TestServer::start_on(dir, port, configured(ROTATED)).await;
    let (status, headers, _) = api(&t, Method::GET, "/api/v1/server", ADMIN_TOKEN, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the replaced bootstrap token no longer works"
    );
    assert_eq!(headers["strict-transport-security"], HSTS);
    let mint = json!({"name": "backdoor", "role": "admin"});
    let (status, _, _) = api(&t, Method::POST, "/api/v1/api-tokens", ADMIN_TOKEN, Some(mint)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "nor can it mint an admin token");

    // Both are listed, with their creation time; never their values.
    let (status, _, list) = api(&t, Method::GET, "/api/v1/api-tokens", ROTATED, None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(!list.to_string().contains(ROTATED) && !list.to_string().contains(ADMIN_TOKEN));
    let entries = bootstrap_entries(&list);
    assert_eq!(entries.len(), 2, "{list}");
    let (old, new) = (&entries[0], &entries[1]);
    for e in [old, new] {
        assert_eq!(
            (e["name"].as_str(), e["role"].as_str()),
            (Some("bootstrap (configured)"), Some("admin"))
        );
        assert!(
            e["created_at"].is_string() && e["group"].is_null() && e["expires_at"].is_null(),
            "{e}"
        );
    }
    assert_eq!(
        (old["active"].as_bool(), old["revoked_at"].is_string()),
        (Some(false), true)
    );
    assert_eq!(
        (new["active"].as_bool(), new["revoked_at"].is_null()),
        (Some(true), true)
    );
    assert!(new["last_used_at"].is_string(), "its use is recorded: {new}");
    assert!(old["created_at"].as_str() < new["created_at"].as_str());

    // A bootstrap token is revoked like any token, and stays revoked when configured again.
    let url = format!("/api/v1/api-tokens/{}", new["id"].as_str().unwrap());
    assert_eq!(
        api(&t, Method::DELETE, &url, ROTATED, None).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, _, _) = api(&t, Method::GET, "/api/v1/server", ROTATED, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked at once");
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;
    let t = TestServer::start_on(dir, port, configured(ROTATED)).await;
    let (status, _, _) = api(&t, Method::GET, "/api/v1/server", ROTATED, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a restart does not bring a revoked value back"
    );
    t.server.shutdown().await;
}

/// Every file and directory under `dir`, with its permission bits.
#[cfg(unix)]
fn walk(dir: &std::path::Path) -> Vec<(std::path::PathBuf, bool, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((path.clone(), meta.is_dir(), meta.permissions().mode() & 0o7777));
        if meta.is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn every_file_the_server_creates_is_private_and_a_readable_kek_refuses_to_start() {
    let t = TestServer::start_with(sqlite).await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    for _ in 0..3 {
        device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    }
    // While it runs: the database with its WAL and shared-memory files, the keys, the certificates.
    let entries = walk(t.dir.path());
    for name in [
        "steward.db",
        "steward.db-wal",
        "steward.db-shm",
        "kek",
        "pki/root-ca.pem",
        "pki/server.meta",
    ] {
        assert!(
            entries.iter().any(|(p, _, _)| p == &t.dir.path().join(name)),
            "{name} exists: {entries:?}"
        );
    }
    for (path, is_dir, mode) in &entries {
        let expected = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, expected, "{} is {mode:04o}", path.display());
    }
    assert_eq!(mode(t.dir.path()), 0o700);
    assert!(
        t.server.pki.kek_source.in_data_dir().is_some(),
        "the zero-configuration KEK sits in the data directory (and start warns about it)"
    );
    let port = t.server.local_addr.port();
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;

    // Files an earlier version wrote 0644 are made private at start; a KEK others can read is not
    // fixed behind the operator's back but refused.
    let kek = dir.path().join("kek");
    chmod(&dir.path().join("pki/root-ca.pem"), 0o644);
    chmod(&dir.path().join("steward.db"), 0o644);
    chmod(&kek, 0o640);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = config_for(dir.path(), port);
    sqlite(&mut config);
    let err = match steward_server::start_with_listener(config, listener).await {
        Ok(_) => panic!("started with a group-readable KEK"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("can be read by group or others (mode 0640)")
            && err.contains("refusing to start")
            && err.contains(&kek.display().to_string()),
        "{err}"
    );
    assert_eq!(mode(&kek), 0o640, "left as found");
    assert_eq!(mode(&dir.path().join("pki/root-ca.pem")), 0o600);
    assert_eq!(mode(&dir.path().join("steward.db")), 0o600);

    chmod(&kek, 0o600);
    let t = TestServer::start_in(dir, sqlite).await;
    t.server.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_kek_from_the_systemd_credentials_directory_stays_out_of_the_data_directory() {
    let credentials = tempfile::tempdir().unwrap();
    let path = credentials.path().join("steward-kek");
    let kek = steward_pki::Kek::generate().unwrap();
    std::fs::write(&path, kek.to_base64().as_bytes()).unwrap();
    // What systemd gives a service: readable by its user only.
    chmod(&path, 0o400);
    let dir = credentials.path().to_owned();
    let t = TestServer::start_with(move |c| c.credentials_directory = Some(dir)).await;
    assert_eq!(
        t.server.pki.kek_source,
        steward_server::bootstrap::KekSource::File {
            path: path.clone(),
            in_data_dir: false
        }
    );
    assert!(!t.dir.path().join("kek").exists(), "no KEK generated beside the keys");
    let sealed = std::fs::read_to_string(t.dir.path().join("pki/root-ca.key.sealed")).unwrap();
    assert!(
        kek.open("root-ca.key", sealed.trim()).is_ok(),
        "the CA is sealed under the credential"
    );
    t.server.shutdown().await;
}

/// A 503 with Retry-After that says nothing about why beyond a trace id.
pub(crate) fn assert_retryable(what: &str, resp: &Response) {
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {}", resp.text());
    assert_eq!(resp.headers["retry-after"], "5", "{what}");
    let text = resp.text().to_lowercase();
    for internal in ["locked", "database", "sqlite", "busy"] {
        assert!(!text.contains(internal), "{what} leaks {internal:?}: {text}");
    }
    // A SOAP fault carries it as the ActivityId header (interop review C-1), text answers as words.
    assert!(
        text.contains("trace") || text.contains("<activityid correlationid="),
        "{what} carries a trace id: {text}"
    );
}

#[tokio::test]
async fn a_device_meeting_a_locked_database_is_told_to_retry_and_then_succeeds() {
    let t = TestServer::start_with(|c| {
        sqlite(c);
        c.database.busy_timeout_ms = 200;
    })
    .await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    let token = t.token(Some(1), ::time::Duration::hours(1), None).await;
    let enroller = t.client();

    // Another process (the CLI, a backup tool) holds SQLite's write lock.
    let lock = rusqlite::Connection::open(t.dir.path().join("steward.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();

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
    assert_retryable("check-in", &checkin);
    let _ = device.end_session();

    let enrollment = post_rst(&t, &enroller, &cred(&token), &good_csr()).await;
    assert_retryable("enrollment", &enrollment);
    let (code, reason) = fault_of(&enrollment);
    assert!(code.contains("InternalServiceFault"), "{code}: {reason}");
    assert!(enrollment.text().contains("<ActivityId CorrelationId="));
    assert_eq!(t.enrollment_count().await, 1, "nothing enrolled meanwhile");

    // Once the lock is gone, the same device and the same token go through.
    lock.execute_batch("ROLLBACK").unwrap();
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    let enrollment = post_rst(&t, &enroller, &cred(&token), &good_csr()).await;
    assert_eq!(enrollment.status, StatusCode::OK, "{}", enrollment.text());
    assert_eq!(t.enrollment_count().await, 2);
    t.server.shutdown().await;
}

async fn get(client: &HttpsClient, url: &str) -> Response {
    client.get(url).await.unwrap()
}

const APPRU: &str = "ms-app://windows.immersivecontrolpanel";

#[tokio::test]
async fn browser_surfaces_carry_hsts_and_the_sign_in_page_needs_the_federated_policy() {
    let t = TestServer::start().await;
    let client = t.client();
    for path in ["/", "/console/login", "/api/v1/openapi.json", "/api/v1/devices"] {
        let resp = get(&client, &t.url(path)).await;
        assert_eq!(
            resp.headers
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            Some(HSTS),
            "{path} ({})",
            resp.status
        );
    }
    // Device endpoints talk to the Windows MDM client, which is no browser.
    let resp = get(&client, &t.url("/EnrollmentServer/Discovery.svc")).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.headers.get("strict-transport-security").is_none());

    // OnPremise: there is no sign-in page to phish with or guess against.
    let page = format!("/EnrollmentServer/Auth?appru={APPRU}&login_hint=a@example.com");
    assert_eq!(get(&client, &t.url(&page)).await.status, StatusCode::NOT_FOUND);
    let resp = client
        .post(
            &t.url("/EnrollmentServer/Auth"),
            "application/x-www-form-urlencoded",
            format!("appru={APPRU}&email=a%40example.com&password=whatever"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    t.server.shutdown().await;
}

fn assert_page_headers(what: &str, resp: &Response) -> String {
    let h = |name: &str| {
        resp.headers
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("cache-control"), "no-store", "{what}");
    assert_eq!(h("strict-transport-security"), HSTS, "{what}");
    let csp = h("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
        "{what}: {csp}"
    );
    csp
}

#[tokio::test]
async fn the_federated_sign_in_page_has_the_console_headers_and_the_password_limits() {
    let t = TestServer::start_with(federated).await;
    t.user("carol@example.com", "federated password").await;
    t.user("dave@example.com", "another password").await;
    let client = t.client();
    let url = t.url("/EnrollmentServer/Auth");
    let form =
        |email: &str, password: &str| format!("appru={APPRU}&email={}&password={password}", email.replace('@', "%40"));
    let post = |body: String| {
        let client = &client;
        let url = &url;
        async move {
            client
                .post(url, "application/x-www-form-urlencoded", body)
                .await
                .unwrap()
        }
    };

    let resp = get(&client, &format!("{url}?appru={APPRU}&login_hint=carol@example.com")).await;
    assert_eq!(resp.status, StatusCode::OK);
    let csp = assert_page_headers("sign-in form", &resp);
    assert!(
        !csp.contains("script-src") && csp.contains("form-action 'self'"),
        "no script at all: {csp}"
    );

    // The signed-in page runs exactly one script, pinned by its hash.
    let resp = post(form("dave@example.com", "another%20password")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let csp = assert_page_headers("signed-in page", &resp);
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(resp.text().contains("name=\"wresult\""));

    // Wrong passwords count against the one password policy: refused from this address after 5.
    for _ in 0..5 {
        let resp = post(form("carol@example.com", "wrong")).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
        assert_page_headers("wrong password", &resp);
    }
    let resp = post(form("carol@example.com", "federated%20password")).await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS, "{}", resp.text());
    assert!(resp.headers.contains_key("retry-after"));
    assert_page_headers("throttled", &resp);

    // A form far larger than any sign-in is refused before it is read.
    let resp = post(format!("appru={APPRU}&email=x&password={}", "p".repeat(32 * 1024))).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Discovery names the page only under this policy.
    let disc = t.url("/EnrollmentServer/Discovery.svc");
    let body = mde2::write_discover_request("urn:uuid:1", &disc, &mde2::DiscoverRequest::default());
    let resp = client.post(&disc, SOAP, body).await.unwrap();
    assert!(resp.text().contains("/EnrollmentServer/Auth"));
    t.server.shutdown().await;
}
