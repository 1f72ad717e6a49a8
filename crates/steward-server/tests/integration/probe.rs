//! Regression tests for the black-box probe's findings (issue #18), over real TLS unless the finding
//! is about routing: device takeover by re-enrollment, the password oracle and lockout bypass
//! through enrollment, the console sign-in limiter, pre-authentication CPU exhaustion, 5xx answers
//! to unusual methods, SyncML answers that ignored MaxMsgSize, oversized bodies answered by a closed
//! connection, and an audit chain that someone with write access to the database could rewrite,
//! truncate or extend unnoticed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use steward_core::*;
use steward_http::ConnInfo;
use steward_sim::session::SessionTrigger;
use steward_sim::{Credentials, HttpsClient, ManagedDevice, Response, enroll::enroll};
use steward_windows_proto::mde2::{self, Credential};
use steward_windows_proto::syncml::{self, Command, Item, ItemCommand, Meta, SyncBody, SyncHdr, SyncMl};
use time::OffsetDateTime;
use tower::ServiceExt;

use crate::common::{ADMIN_TOKEN, TestServer};

const SOAP: &str = "application/soap+xml; charset=utf-8";
const SYNCML: &str = "application/vnd.syncml.dm+xml";

fn fault_of(resp: &Response) -> (String, String) {
    mde2::parse_fault(&resp.text())
        .unwrap_or_else(|| panic!("expected a SOAP fault, got {}: {}", resp.status, resp.text()))
}

async fn audit_rows(t: &TestServer, action: &str) -> Vec<AuditEvent> {
    let filter = AuditFilter {
        action: Some(action.into()),
        newest_first: true,
        ..AuditFilter::default()
    };
    t.store().audit_events(&filter, None, 100).await.unwrap()
}

async fn enrollments_of(t: &TestServer, device_id: &str) -> Vec<Enrollment> {
    t.store()
        .list_enrollments()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.device_id.as_str() == device_id)
        .collect()
}

// ---------------------------------------------------------------- 1. takeover by re-enrollment

#[tokio::test]
async fn reenrolling_an_active_device_id_needs_a_link_to_it() {
    const VICTIM: &str = "0A0B0C0D0E0F00112233445566778899";
    let t = TestServer::start().await;
    let client = t.client();
    let own_token = t.token(None, ::time::Duration::hours(1), None).await;
    let mut own = t.options(Credentials::Password(own_token.clone()));
    own.device_id = Some(VICTIM.into());
    enroll(&client, &own).await.unwrap();
    let victim = enrollments_of(&t, VICTIM).await.remove(0);

    // Another valid token naming the victim's DeviceID with a fresh key: refused, nothing changes.
    let other_token = t.token(None, ::time::Duration::hours(1), None).await;
    let mut attack = t.options(Credentials::Password(other_token.clone()));
    attack.device_id = Some(VICTIM.into());
    attack.email = "mallory@example.com".into();
    let err = enroll(&client, &attack).await.unwrap_err().to_string();
    assert!(err.contains("Authorization"), "{err}");
    // A user's own password does not reach another device either.
    t.user("mallory@example.com", "mallory's password").await;
    attack.credentials = Credentials::Password("mallory's password".into());
    let err = enroll(&client, &attack).await.unwrap_err().to_string();
    assert!(err.contains("Authorization"), "{err}");

    let now = enrollments_of(&t, VICTIM).await;
    assert_eq!(now.len(), 1, "no enrollment was added");
    assert_eq!((now[0].id, now[0].state), (victim.id, EnrollmentState::Active));
    assert_eq!(now[0].cert_thumbprint, victim.cert_thumbprint);
    assert_eq!(t.issued_count().await, 1, "nothing was signed");
    let log = t.store().issuance_log().await.unwrap();
    assert!(
        log.iter().all(|e| e.event != IssuanceEvent::Revoked),
        "nothing was revoked"
    );

    // Audited under the attempt's credential, and announced on the victim's enrollment.
    let refused = audit_rows(&t, "enrollment.takeover_refused").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|e| e.outcome == AuditOutcome::Failure));
    assert!(refused.iter().all(|e| e.target.as_deref() == Some(VICTIM)));
    assert!(refused.iter().all(|e| e.source_ip.as_deref() == Some("127.0.0.1")));
    assert!(
        refused[0].actor.contains("mallory@example.com"),
        "{:?}",
        refused[0].actor
    );
    assert!(refused[1].actor.contains("enrollment token"), "{:?}", refused[1].actor);
    let events = t.store().device_events_for(victim.id).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["enrolled", "reenrollment_refused", "reenrollment_refused"]);
    assert_eq!(events[1].data["auth_method"], "enrollment_token");

    // The same token (a reinstalled device) re-enrolls and replaces the enrollment.
    let reinstalled = enroll(&client, &own).await.unwrap();
    let now = enrollments_of(&t, VICTIM).await;
    assert_eq!(
        now.iter().map(|e| e.state).collect::<Vec<_>>(),
        [EnrollmentState::Replaced, EnrollmentState::Active]
    );

    // The device's current certificate on the connection links any credential to it.
    let profile = steward_sim::csp::DeviceProfile::random(VICTIM);
    let device = ManagedDevice::from_enrolled(reinstalled, profile);
    attack.credentials = Credentials::Password(other_token.clone());
    enroll(&t.device_client(&device), &attack).await.unwrap();
    assert_eq!(enrollments_of(&t, VICTIM).await.len(), 3);

    // An admin releases the DeviceID; then any credential enrolls it.
    let third = t.token(None, ::time::Duration::hours(1), None).await;
    attack.credentials = Credentials::Password(third.clone());
    assert!(enroll(&client, &attack).await.is_err());
    let resp = client
        .request(
            Method::POST,
            &t.url(&format!("/api/v1/devices/{VICTIM}/actions/unenroll")),
            &[
                ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
                ("content-type", "application/json"),
            ],
            "{}".into(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(audit_rows(&t, "device.unenroll").await.len(), 1);
    enroll(&client, &attack).await.unwrap();
    let states: Vec<_> = enrollments_of(&t, VICTIM).await.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [
            EnrollmentState::Replaced,
            EnrollmentState::Replaced,
            EnrollmentState::Unenrolled,
            EnrollmentState::Active
        ]
    );
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn the_same_user_reenrolls_a_device_another_user_cannot() {
    const DEVICE: &str = "11223344556677889900AABBCCDDEEFF";
    let t = TestServer::start().await;
    let client = t.client();
    t.user("carol@example.com", "carol's password").await;
    t.user("dan@example.com", "dan's password").await;
    let mut carol = t.options(Credentials::Password("carol's password".into()));
    carol.email = "carol@example.com".into();
    carol.device_id = Some(DEVICE.into());
    enroll(&client, &carol).await.unwrap();
    let mut dan = t.options(Credentials::Password("dan's password".into()));
    dan.email = "dan@example.com".into();
    dan.device_id = Some(DEVICE.into());
    let err = enroll(&client, &dan).await.unwrap_err().to_string();
    assert!(err.contains("Authorization"), "{err}");
    // Carol's reinstall (same user, different case) is allowed.
    carol.email = "Carol@Example.com".into();
    enroll(&client, &carol).await.unwrap();
    let states: Vec<_> = enrollments_of(&t, DEVICE).await.iter().map(|e| e.state).collect();
    assert_eq!(states, [EnrollmentState::Replaced, EnrollmentState::Active]);
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

// ---------------------------------------------------------------- 2. password oracle via enrollment

async fn get_policies(t: &TestServer, client: &HttpsClient, user: &str, password: &str) -> Response {
    let url = t.url("/EnrollmentServer/Policy.svc");
    let cred = Credential::UsernameToken {
        username: user.into(),
        password: password.into(),
    };
    let body = mde2::write_get_policies_request("urn:uuid:5f0c2a8e-0000-4000-8000-000000000001", &url, &cred);
    client.post(&url, SOAP, body).await.unwrap()
}

#[tokio::test]
async fn get_policies_is_throttled_like_every_password_check() {
    let t = TestServer::start().await;
    let client = t.client();
    t.user("dave@example.com", "dave's right password").await;
    for _ in 0..5 {
        let r = get_policies(&t, &client, "dave@example.com", "a wrong guess").await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        let (code, reason) = fault_of(&r);
        assert!(code.contains("Authentication"), "{code}");
        assert!(reason.contains("incorrect"), "{reason}");
    }
    // Past the limit: refused without a verdict, and then the right password is refused too.
    for password in ["another wrong guess", "dave's right password"] {
        let r = get_policies(&t, &client, "dave@example.com", password).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text());
        let (code, reason) = fault_of(&r);
        assert!(code.contains("Authentication"), "{code}");
        assert!(reason.contains("too many failed sign-ins"), "{reason}");
    }
    // The same refusal on RequestSecurityToken: no certificate for the locked user.
    let mut opts = t.options(Credentials::Password("dave's right password".into()));
    opts.email = "dave@example.com".into();
    let err = enroll(&client, &opts).await.unwrap_err().to_string();
    assert!(err.contains("too many failed sign-ins"), "{err}");
    assert_eq!(t.enrollment_count().await, 0);
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

/// One console request in-process, from `peer`.
async fn console_post(t: &TestServer, peer: SocketAddr, path: &str, form: String) -> (StatusCode, String) {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .extension(ConnInfo {
            peer,
            client_cert: None,
        })
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap();
    let resp = t.server.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn login_form(email: &str, password: &str) -> String {
    format!(
        "email={}&password={}",
        email.replace('@', "%40"),
        password.replace(' ', "+").replace('\'', "%27")
    )
}

async fn console_user(t: &TestServer, email: &str, password: &str) {
    t.store()
        .create_console_user(
            &User {
                id: UserId::new(),
                email: email.into(),
                display_name: None,
                password_hash: steward_core::secret::hash_password(password).unwrap(),
                disabled: false,
                created_at: OffsetDateTime::now_utc(),
            },
            Role::Operator,
            None,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_console_lockout_holds_for_enrollment_from_the_same_address() {
    let t = TestServer::start().await;
    console_user(&t, "erin@example.com", "erin's right password").await;
    // The TLS test client connects from 127.0.0.1: fail the console sign-in from there.
    let here: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    for _ in 0..5 {
        let (status, _) = console_post(
            &t,
            here,
            "/console/login",
            login_form("erin@example.com", "wrong guess"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let r = get_policies(&t, &t.client(), "erin@example.com", "erin's right password").await;
    let (code, reason) = fault_of(&r);
    assert!(
        code.contains("Authentication") && reason.contains("too many"),
        "{code}: {reason}"
    );
    // A refusal, sent as every SOAP fault is: HTTP 500 (interop review C-1).
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

/// Plan A10: the guesses rotate `X-Forwarded-For`, `X-Real-IP` and `True-Client-IP` from a peer
/// that is no trusted proxy (Fleet GHSA-j8h8-75h3-jg53): the limiter counts the real peer, so the
/// sixth guess is throttled like the rest and no guess succeeds.
#[tokio::test]
async fn rotating_forwarded_headers_does_not_reset_the_password_limiter() {
    let t = TestServer::start().await;
    let client = t.client();
    t.user("erin@example.com", "erin's right password").await;
    let url = t.url("/EnrollmentServer/Policy.svc");
    let guess = |n: u32, password: &'static str| {
        let cred = Credential::UsernameToken {
            username: "erin@example.com".into(),
            password: password.into(),
        };
        let body = mde2::write_get_policies_request("urn:uuid:5f0c2a8e-0000-4000-8000-000000000002", &url, &cred);
        let ip = format!("198.51.100.{n}");
        (body, ip)
    };
    let mut throttled = 0;
    for n in 1..=7u32 {
        let password = if n == 7 {
            "erin's right password"
        } else {
            "a wrong guess"
        };
        let (body, ip) = guess(n, password);
        let headers = [
            ("content-type", SOAP),
            ("x-forwarded-for", ip.as_str()),
            ("x-real-ip", ip.as_str()),
            ("true-client-ip", ip.as_str()),
        ];
        let r = client
            .request(http::Method::POST, &url, &headers, body.into())
            .await
            .unwrap();
        assert_eq!(
            r.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "guess {n} succeeded: {}",
            r.text()
        );
        if fault_of(&r).1.contains("too many failed sign-ins") {
            throttled += 1;
        }
    }
    assert_eq!(throttled, 2, "guesses 6 and 7 are throttled");
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

// ---------------------------------------------------------------- 3. console sign-in limiter

#[tokio::test]
async fn concurrent_console_guesses_get_at_most_five_verdicts() {
    let t = Arc::new(TestServer::start().await);
    console_user(&t, "fay@example.com", "fay's right password").await;
    let attacker: SocketAddr = "192.0.2.10:50000".parse().unwrap();
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move {
                console_post(
                    &t,
                    attacker,
                    "/console/login",
                    login_form("fay@example.com", &format!("guess {i}")),
                )
                .await
                .0
            })
        })
        .collect();
    let mut verdicts = 0;
    for g in guesses {
        match g.await.unwrap() {
            StatusCode::UNAUTHORIZED => verdicts += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected answer {other}"),
        }
    }
    assert!(verdicts <= 5, "{verdicts} guesses got a verdict");
    // Failures from that address do not lock the user out elsewhere.
    let elsewhere: SocketAddr = "198.51.100.20:50000".parse().unwrap();
    let (status, body) = console_post(
        &t,
        elsewhere,
        "/console/login",
        login_form("fay@example.com", "fay's right password"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
}

// ---------------------------------------------------------------- 4. pre-authentication CPU

/// A Discover whose Body element carries as many distinct attributes as fit in 256 KiB.
fn attribute_heavy_discover(url: &str) -> String {
    let plain = mde2::write_discover_request("urn:uuid:1", url, &mde2::DiscoverRequest::default());
    let mut attrs = String::new();
    let mut i = 0u32;
    while plain.len() + attrs.len() < 256 * 1024 - 16 {
        attrs.push_str(&format!(" a{i:x}=\"\""));
        i += 1;
    }
    plain.replacen("<s:Body", &format!("<s:Body{attrs}"), 1)
}

#[tokio::test]
async fn health_and_checkins_answer_while_a_hostile_discover_is_parsed() {
    let t = Arc::new(TestServer::start().await);
    let mut device = t.managed_device(None).await;
    let url = t.url("/EnrollmentServer/Discovery.svc");
    let heavy = attribute_heavy_discover(&url);
    assert!(heavy.len() <= 256 * 1024);
    let hostile = {
        let t = t.clone();
        tokio::spawn(async move { t.client().post(&url, SOAP, heavy).await.unwrap() })
    };
    // Let the request reach the server (not a timing assertion: nothing below depends on how long).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let health = t.client().get(&t.url("/healthz")).await.unwrap();
    assert_eq!(health.status, StatusCode::OK);
    // Answered while the hostile request was still being parsed — or after the reader's own caps
    // refused it; either way the parse did not hold the runtime. (On the current-thread test
    // runtime a parse on the async worker would answer the hostile client before `/healthz`.)
    let parse_still_running = !hostile.is_finished();
    // A device check-in (its inventory messages are large enough to be parsed off the workers
    // too, on the management slots) completes meanwhile.
    let report = device
        .run_session(&t.device_client(&device), SessionTrigger::Scheduled)
        .await
        .unwrap();
    assert!(report.messages >= 1);
    let r = hostile.await.unwrap();
    // Answered (200) or refused by the reader's caps with a MessageFormat fault (HTTP 500 like every
    // SOAP fault, interop review C-1), never an internal failure.
    let refused = mde2::parse_fault(&r.text()).map(|(code, _)| code);
    assert!(
        r.status == StatusCode::OK || refused.as_deref() == Some("s:MessageFormat"),
        "{}: {}",
        r.status,
        r.text()
    );
    assert!(
        parse_still_running || refused.is_some(),
        "the hostile Discover was parsed to completion before /healthz could answer"
    );
}

/// JSON and form entry points: bounded in size and nesting, refused with 4xx problem answers.
#[tokio::test]
async fn json_and_form_bodies_are_bounded_in_size_and_depth() {
    let t = TestServer::start().await;
    let post = |path: &'static str, content_type: &'static str, body: Vec<u8>| {
        let req = Request::builder()
            .method("POST")
            .uri(path)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let router = t.server.router.clone();
        async move {
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    // Nested far deeper than serde_json's recursion limit (128), where a field is typed and where
    // a value would be skipped: refused as a client error, no stack overflow.
    for field in ["name", "unknown"] {
        let deep = format!("{{\"{field}\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let (status, body) = post("/api/v1/groups", "application/json", deep.into_bytes()).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{status}: {body}"
        );
    }
    // Over the API's body limit: 413 as a problem document.
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(steward_api::API_BODY_BYTES));
    let (status, body) = post("/api/v1/groups", "application/json", big.into_bytes()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body.contains("\"code\":\"too_large\""), "{body}");
    // A console form over its limit is refused without a server error.
    let form = format!("email=a%40b.c&password={}", "x".repeat(steward_console::FORM_BYTES));
    let (status, _) = post("/console/login", "application/x-www-form-urlencoded", form.into_bytes()).await;
    assert!(status.is_client_error(), "{status}");
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

// ---------------------------------------------------------------- 5. unusual methods

/// Every path the server routes, with the methods it serves (HEAD implied by GET).
fn routed_paths() -> Vec<(String, Vec<&'static str>)> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut paths: Vec<(String, Vec<&'static str>)> = Vec::new();
    for r in steward_api::ROUTES {
        let p = r.path.replace("{id}", &id);
        match paths.iter_mut().find(|(q, _)| *q == p) {
            Some((_, m)) => m.push(r.method),
            None => paths.push((p, vec![r.method])),
        }
    }
    let fixed: &[(&str, &[&'static str])] = &[
        ("/healthz", &["GET"]),
        ("/readyz", &["GET"]),
        ("/", &["GET"]),
        (steward_api::OPENAPI_PATH, &["GET"]),
        ("/EnrollmentServer/Discovery.svc", &["GET", "POST"]),
        ("/EnrollmentServer/Policy.svc", &["POST"]),
        ("/EnrollmentServer/Enrollment.svc", &["POST"]),
        ("/EnrollmentServer/Auth", &["GET", "POST"]),
        ("/ManagementServer/MDM.svc", &["POST"]),
        ("/console", &["GET"]),
        ("/console/login", &["GET", "POST"]),
        ("/console/devices", &["GET"]),
        ("/console/static/console.css", &["GET"]),
    ];
    for (p, m) in fixed {
        paths.push(((*p).to_owned(), m.to_vec()));
    }
    let dynamic = format!("/console/devices/{id}/wipe");
    paths.push((dynamic, vec!["GET", "POST"]));
    paths
}

async fn call(
    router: &axum::Router,
    method: &Method,
    uri: &str,
    token: bool,
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method.clone()).uri(uri).extension(ConnInfo {
        peer: "192.0.2.99:1234".parse().unwrap(),
        client_cert: None,
    });
    if token {
        req = req.header("authorization", format!("Bearer {ADMIN_TOKEN}"));
    }
    let resp = router.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, headers, bytes.to_vec())
}

fn allow_set(headers: &http::HeaderMap) -> Vec<String> {
    let mut v: Vec<String> = headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn unusual_methods_get_405_with_allow_and_head_works_like_get() {
    // Federated, so that the sign-in page is routed too (it is absent under OnPremise).
    let t = TestServer::start_with(crate::common::federated).await;
    let router = &t.server.router;
    let methods: Vec<Method> = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PROPFIND",
    ]
    .iter()
    .map(|m| m.parse().unwrap())
    .collect();
    for (path, served) in routed_paths() {
        // In-process requests skip the listener's path rewrite: use the canonical device paths.
        let path = steward_windows::normalize_path(Request::builder().uri(&path).body(()).unwrap())
            .uri()
            .to_string();
        let mut allowed: Vec<String> = served.iter().map(|m| (*m).to_owned()).collect();
        if served.contains(&"GET") {
            allowed.push("HEAD".into());
        }
        allowed.sort();
        for token in [false, true] {
            if token && !path.starts_with("/api/") {
                continue;
            }
            for m in &methods {
                let (status, headers, body) = call(router, m, &path, token).await;
                let len = body.len();
                // A SOAP refusal is an HTTP 500 fault (interop review C-1): a server error only if
                // its subcode says so.
                let refusal = status == StatusCode::INTERNAL_SERVER_ERROR
                    && mde2::parse_fault(&String::from_utf8_lossy(&body))
                        .is_some_and(|(code, _)| !code.contains("InternalServiceFault"));
                assert!(
                    !status.is_server_error() || refusal,
                    "{m} {path} (token: {token}) answered {status}"
                );
                if allowed.iter().any(|a| a == m.as_str()) {
                    assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
                    if m == Method::HEAD {
                        assert_eq!(len, 0, "HEAD {path} has no body");
                    }
                } else {
                    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path} (token: {token})");
                    assert_eq!(allow_set(&headers), allowed, "Allow of {m} {path}");
                }
            }
        }
    }
    // HEAD is GET without the body.
    let (status, _, body) = call(router, &Method::HEAD, "/api/v1/devices", true).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    let (status, _, body) = call(router, &Method::GET, "/api/v1/devices", true).await;
    assert!(status == StatusCode::OK && !body.is_empty());
    // Method overrides are not honoured: the request's own method decides.
    let (status, headers, _) = call(router, &Method::POST, "/api/v1/server?_method=GET", true).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allow_set(&headers), ["GET", "HEAD"]);
    let (status, _, _) = call(router, &Method::GET, "/api/v1/groups?_method=DELETE", true).await;
    assert_eq!(status, StatusCode::OK);
    // Unknown paths are 404 whatever the method.
    for m in &methods {
        for p in ["/nothing-here", "/api/v1/nothing-here", "/console/nothing-here"] {
            let (status, _, _) = call(router, m, p, false).await;
            assert!(
                status == StatusCode::NOT_FOUND || status == StatusCode::SEE_OTHER,
                "{m} {p} answered {status}"
            );
        }
    }

    // The same over real TLS, through the listener.
    let client = t.client();
    let r = client
        .request(Method::OPTIONS, &t.url("/api/v1/devices"), &[], Default::default())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allow_set(&r.headers), ["GET", "HEAD"]);
    let r = client
        .request(Method::HEAD, &t.url("/healthz"), &[], Default::default())
        .await
        .unwrap();
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    let r = client
        .request(
            Method::TRACE,
            &t.url("/ManagementServer/MDM.svc"),
            &[],
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allow_set(&r.headers), ["POST"]);
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

// ---------------------------------------------------------------- 7. bounded SyncML answers

fn device_message(device_id: &str, url: &str, msg_id: u32, commands: Vec<Command>, max: u64) -> String {
    let mut header = SyncHdr::new("1A2B", msg_id, url, device_id);
    header.meta = Some(Meta {
        max_msg_size: Some(max),
        ..Meta::default()
    });
    syncml::write(&SyncMl {
        header,
        body: SyncBody { commands, final_: true },
    })
}

fn gets(n: usize) -> Vec<Command> {
    (2..n + 2)
        .map(|i| {
            Command::Get(ItemCommand {
                cmd_id: i.to_string(),
                meta: None,
                items: vec![Item::target("./DevDetail/SwV")],
            })
        })
        .collect()
}

#[tokio::test]
async fn syncml_answers_respect_max_msg_size_and_bound_the_command_count() {
    let t = TestServer::start().await;
    let device = t.managed_device(None).await;
    let client = t.device_client(&device);
    let url = t.url("/ManagementServer/MDM.svc");
    let id = device.profile.device_id.clone();

    // 200 device Gets, each owed a Status, with MaxMsgSize 1,024: the statuses come over several
    // messages, each within the limit, every one exactly once.
    let mut msg = device_message(&id, &url, 1, gets(200), 1024);
    let mut answered: Vec<String> = Vec::new();
    let mut msg_id = 1;
    loop {
        let r = client.post(&url, SYNCML, msg).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let answer = syncml::parse_bytes(&r.body).unwrap();
        let statuses: Vec<String> = answer
            .body
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Status(s) if s.msg_ref == "1" && s.cmd_ref != "0" => {
                    assert_eq!(s.code(), Some(406), "a server takes no Get from a device");
                    Some(s.cmd_ref.clone())
                }
                _ => None,
            })
            .collect();
        if !statuses.is_empty() {
            assert!(r.body.len() <= 1024, "answer {msg_id} is {} bytes", r.body.len());
        }
        answered.extend(statuses);
        if answered.len() >= 200 || answer.body.final_ {
            break;
        }
        msg_id += 1;
        assert!(msg_id <= 150, "no progress after {} statuses", answered.len());
        // The device has nothing more to say: Alert 1222 asks for the rest of the package.
        let next = Command::Alert(syncml::Alert {
            cmd_id: "1".into(),
            data: syncml::ALERT_NEXT_MESSAGE.to_string(),
            items: Vec::new(),
        });
        msg = device_message(&id, &url, msg_id, vec![next], 1024);
    }
    let expected: Vec<String> = (2..202).map(|i| i.to_string()).collect();
    assert_eq!(answered, expected);
    assert!(msg_id > 2, "the statuses took several messages");

    // 6,000 commands in one message: refused as a whole with SyncHdr status 413, a small answer.
    let r = client
        .post(&url, SYNCML, device_message(&id, &url, 1, gets(6000), 512 * 1024))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.len() < 2048, "{} bytes", r.body.len());
    let answer = syncml::parse_bytes(&r.body).unwrap();
    let codes: Vec<(String, Option<u16>)> = answer
        .body
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Status(s) => Some((s.cmd_ref.clone(), s.code())),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [("0".to_owned(), Some(413))]);
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

/// Sends a raw HTTP/1.1 request over TLS with the device's identity the way a simple client does —
/// the head and the whole body first, only then reading — and returns the answer. Many clients
/// give up on a write error (EPIPE) without reading what the server said.
async fn raw_request(t: &TestServer, device: &ManagedDevice, head: String, body: Vec<Vec<u8>>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = HttpsClient::tls_config(std::slice::from_ref(&t.root_der), device.tls_identity()).unwrap();
    let tcp = tokio::net::TcpStream::connect(t.server.local_addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    let mut wrote = stream.write_all(head.as_bytes()).await;
    for piece in body {
        if wrote.is_err() {
            break;
        }
        wrote = stream.write_all(&piece).await;
    }
    if wrote.is_ok() {
        wrote = stream.flush().await;
    }
    // One answer: the head, then Content-Length bytes (the connection may stay open after it).
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let read = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                break Ok(());
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) => break Err("closed".to_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e.to_string()),
        }
    };
    let text = String::from_utf8_lossy(&got).into_owned();
    // The client could send its whole request (the server did not hang up on it mid-body), then
    // read an answer.
    assert!(wrote.is_ok(), "the connection was closed while sending: {wrote:?}");
    assert!(text.starts_with("HTTP/1.1"), "no answer: {read:?}, {} bytes", got.len());
    text
}

#[tokio::test]
async fn an_oversized_syncml_body_gets_a_413_with_a_body() {
    let t = TestServer::start().await;
    let device = t.managed_device(None).await;
    let limit = t.server.config.limits.management_body_bytes;
    let over = limit + 512 * 1024;
    let piece = vec![b'x'; 64 * 1024];
    let pieces = over.div_ceil(piece.len());

    // Declared length over the limit.
    let head = format!(
        "POST /ManagementServer/MDM.svc HTTP/1.1\r\nHost: localhost\r\nContent-Type: {SYNCML}\r\n\
         Content-Length: {}\r\n\r\n",
        pieces * piece.len()
    );
    let answer = raw_request(&t, &device, head, vec![piece.clone(); pieces]).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
    assert!(
        !answer.contains("connection: close"),
        "drained: the connection stays usable"
    );
    assert!(
        answer.contains(&format!("request body exceeds {limit} bytes")),
        "{answer:.400}"
    );

    // Chunked, no declared length.
    let chunk = {
        let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
        c.extend_from_slice(&piece);
        c.extend_from_slice(b"\r\n");
        c
    };
    let mut chunks = vec![chunk; pieces];
    chunks.push(b"0\r\n\r\n".to_vec());
    let head = format!(
        "POST /ManagementServer/MDM.svc HTTP/1.1\r\nHost: localhost\r\nContent-Type: {SYNCML}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    let answer = raw_request(&t, &device, head, chunks).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
    assert!(
        answer.contains(&format!("request body exceeds {limit} bytes")),
        "{answer:.400}"
    );
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

// ---------------------------------------------------------------- 6. the audit chain against a database writer

/// How many audited admin calls [`audited_data_dir`] makes.
const AUDITED_CALLS: i64 = 4;

/// A data directory whose audit log holds [`AUDITED_CALLS`] events made over TLS, closed by a
/// graceful shutdown (which signs the last checkpoint). On SQLite in every pass: the tampering
/// below edits the database file directly (the same attacker on PostgreSQL edits rows over SQL, and
/// the chain checks are the backend-independent code of steward-core).
async fn audited_data_dir() -> (tempfile::TempDir, steward_server::Config) {
    let t = TestServer::start_with(crate::common::sqlite).await;
    let client = t.client();
    for i in 0..AUDITED_CALLS {
        let resp = client
            .request(
                Method::POST,
                &t.url("/api/v1/groups"),
                &[
                    ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
                    ("content-type", "application/json"),
                ],
                format!(r#"{{"name":"group-{i}"}}"#).into(),
            )
            .await
            .unwrap();
        assert!(resp.status.is_success(), "{}: {}", resp.status, resp.text());
    }
    let config = (*t.server.config).clone();
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;
    (dir, config)
}

/// What `steward audit verify` runs, on the data directory: the chain with its key, through the
/// signed checkpoints in the data directory.
async fn verify_data_dir(config: &steward_server::Config) -> Result<steward_server::audit::Verified, AuditChainBroken> {
    let api = steward_server::local::LocalApi::open(config).await.unwrap();
    steward_server::audit::verify(&config.data_dir, api.core(), api.audit_keys())
        .await
        .unwrap()
}

/// Raw write access to the database file, as someone holding a stolen copy or the replica host has:
/// the append-only triggers are only a speed bump.
async fn raw_db(config: &steward_server::Config) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(config.data_dir.join("steward.db")).unwrap();
    for drop in [
        "DROP TRIGGER audit_events_no_update",
        "DROP TRIGGER audit_events_no_delete",
    ] {
        db.execute_batch(drop).unwrap();
    }
    db
}

async fn rows(config: &steward_server::Config) -> Vec<AuditEvent> {
    let store = steward_server::open_sqlite(config).await.unwrap();
    store.audit_events(&AuditFilter::default(), None, 100).await.unwrap()
}

fn content(e: &AuditEvent) -> NewAuditEvent {
    NewAuditEvent {
        at: e.at,
        actor: e.actor.clone(),
        actor_id: e.actor_id.clone(),
        actor_role: e.actor_role,
        action: e.action.clone(),
        target: e.target.clone(),
        source_ip: e.source_ip.clone(),
        outcome: e.outcome,
        status: e.status,
        details: e.details.clone(),
    }
}

#[tokio::test]
async fn audit_verify_passes_an_untouched_log_and_says_what_it_covers() {
    let (_dir, config) = audited_data_dir().await;
    let v = verify_data_dir(&config).await.unwrap();
    assert_eq!(v.count, AUDITED_CALLS as u64);
    assert_eq!(
        v.keyed_from,
        Some(1),
        "a new data directory is keyed from the first event"
    );
    let newest = v.newest.clone().expect("the shutdown signed a checkpoint");
    assert_eq!((newest.count, newest.head.as_str()), (AUDITED_CALLS, v.head.as_str()));
    let file = std::fs::read_to_string(steward_server::audit::checkpoint_path(&config.data_dir)).unwrap();
    assert_eq!(
        file.lines().count(),
        v.checkpoints,
        "every line in the file was checked"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(steward_server::audit::checkpoint_path(&config.data_dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let report = v.to_string();
    assert!(report.contains("events #1-#4: keyed HMAC-SHA-256"), "{report}");
    assert!(report.contains("covers events #1-#4"), "{report}");
    // The keys live sealed in the data directory, not in the database.
    for sealed in ["audit-chain.key.sealed", "audit-checkpoint.key.sealed"] {
        assert!(config.data_dir.join(sealed).exists(), "{sealed}");
    }
}

/// Edit a row and recompute every following hash the way the chain used to be computed (unkeyed
/// SHA-256): the first edited row no longer verifies.
#[tokio::test]
async fn audit_verify_detects_an_edit_with_recomputed_hashes() {
    let (_dir, config) = audited_data_dir().await;
    let before = rows(&config).await;
    let db = raw_db(&config).await;
    let mut prev = before[0].hash.clone();
    for (i, e) in before.iter().enumerate().skip(1) {
        let mut c = content(e);
        if i == 1 {
            c.actor = "someone else".into();
        }
        let hash = c.chain_hash(e.seq, &prev);
        db.execute(
            "UPDATE audit_events SET actor = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![c.actor, prev, hash, e.seq],
        )
        .unwrap();
        prev = hash;
    }
    drop(db);
    let broken = verify_data_dir(&config).await.unwrap_err();
    assert_eq!(broken.seq, 2, "{broken}");
    assert!(broken.reason.contains("keyed MAC"), "{broken}");
}

/// Delete the newest rows: what is left still links, but the signed checkpoint of the shutdown
/// covers more events than the log holds.
#[tokio::test]
async fn audit_verify_detects_truncation() {
    let (_dir, config) = audited_data_dir().await;
    let db = raw_db(&config).await;
    db.execute(
        "DELETE FROM audit_events WHERE seq > ?1",
        rusqlite::params![AUDITED_CALLS - 2],
    )
    .unwrap();
    drop(db);
    let broken = verify_data_dir(&config).await.unwrap_err();
    assert_eq!(broken.seq, AUDITED_CALLS - 1, "{broken}");
    assert!(broken.reason.contains("deleted"), "{broken}");
}

/// Append a forged event ("ada wiped device 1") with a correct unkeyed hash after the head.
#[tokio::test]
async fn audit_verify_detects_a_forged_append() {
    let (_dir, config) = audited_data_dir().await;
    let head = rows(&config).await.pop().unwrap();
    let forged = NewAuditEvent {
        at: OffsetDateTime::now_utc(),
        actor: "ada".into(),
        actor_id: None,
        actor_role: Some(Role::Admin),
        action: "device.wipe".into(),
        target: Some("1".into()),
        source_ip: Some("127.0.0.1".into()),
        outcome: AuditOutcome::Success,
        status: Some(202),
        details: None,
    }
    .chained(head.seq + 1, &head.hash);
    let db = raw_db(&config).await;
    db.execute(
        "INSERT INTO audit_events (seq, at, actor, actor_id, actor_role, action, target, source_ip, outcome, \
         status, details, prev_hash, hash) VALUES (?1, ?2, ?3, NULL, 'admin', ?4, ?5, ?6, 'success', 202, NULL, ?7, ?8)",
        rusqlite::params![
            forged.seq,
            steward_core::unix_micros(forged.at),
            forged.actor,
            forged.action,
            forged.target,
            forged.source_ip,
            forged.prev_hash,
            forged.hash
        ],
    )
    .unwrap();
    drop(db);
    let broken = verify_data_dir(&config).await.unwrap_err();
    assert_eq!(broken.seq, AUDITED_CALLS + 1, "{broken}");
    assert!(broken.reason.contains("keyed MAC"), "{broken}");
}

/// Lowering a checkpoint's count (to make a truncation fit) breaks its signature: verify names the
/// line instead of trusting it.
#[tokio::test]
async fn audit_verify_refuses_an_edited_checkpoint() {
    let (_dir, config) = audited_data_dir().await;
    let path = steward_server::audit::checkpoint_path(&config.data_dir);
    let text = std::fs::read_to_string(&path).unwrap();
    // The writer may have taken a checkpoint while the calls were still running (a slow machine,
    // the PostgreSQL pass) before the one at shutdown: edit the one that counts every call.
    let full = format!("\"count\":{AUDITED_CALLS},");
    let line = 1 + text
        .lines()
        .position(|l| l.contains(&full))
        .expect("a checkpoint of every call");
    let edited = text.replace(&full, &format!("\"count\":{},", AUDITED_CALLS - 2));
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    let api = steward_server::local::LocalApi::open(&config).await.unwrap();
    let err = steward_server::audit::verify(&config.data_dir, api.core(), api.audit_keys())
        .await
        .unwrap_err();
    assert!(
        matches!(err, steward_server::audit::CheckpointError::Bad { line: l, .. } if l == line),
        "{err}"
    );
}
