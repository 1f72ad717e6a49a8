//! Webhooks end to end: a receiver on 127.0.0.1 records what Steward POSTs. Subscriptions are made
//! through the admin API; devices are simulated over real TLS. Signatures are checked the way
//! docs/OPERATIONS.md tells receivers to (HMAC-SHA256 over "<t>.<body>", timestamp tolerance), with
//! an independent implementation rather than Steward's own signer.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::admin;
use axum::body::{Body, Bytes};
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{Value, json};
use steward_core::*;

use steward_sim::session::SessionTrigger;
use tower::ServiceExt;

use crate::common::{ADMIN_TOKEN, TestServer};

// ---------------------------------------------------------------- the receiver

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// What the receiver answered.
    status: u16,
    at: Instant,
}

#[derive(Clone, Default)]
struct Receiver {
    log: Arc<Mutex<Vec<Received>>>,
    /// Answer 500 to this many requests before answering 204 again.
    fail_next: Arc<AtomicU32>,
}

impl Receiver {
    async fn start() -> (Self, u16) {
        let r = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = r.clone();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let state = state.clone();
            async move {
                let path = req.uri().path().to_owned();
                let headers = req.headers().clone();
                let body = http_body_util::BodyExt::collect(req.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                let failing = state
                    .fail_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let status = if failing {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                };
                state.log.lock().unwrap().push(Received {
                    path,
                    headers,
                    body,
                    status: status.as_u16(),
                    at: Instant::now(),
                });
                status
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, port)
    }

    fn fail(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    fn all(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    fn on(&self, path: &str) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.path == path).collect()
    }

    /// Waits until `done` holds for the requests on `path` (10 s at most).
    async fn wait(&self, path: &str, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.on(path);
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {:#?}",
                summary(&got)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn summary(got: &[Received]) -> Vec<(String, String, u16)> {
    got.iter()
        .map(|r| (header(r, "steward-webhook-id"), header(r, "steward-event"), r.status))
        .collect()
}

fn header(r: &Received, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn json_of(r: &Received) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn delivered_types(got: &[Received]) -> Vec<String> {
    got.iter()
        .filter(|r| r.status < 300)
        .map(|r| json_of(r)["type"].as_str().unwrap().to_owned())
        .collect()
}

/// The receiver-side check from docs/OPERATIONS.md: split `t=` and `v1=`, refuse a timestamp more
/// than 5 minutes off, recompute HMAC-SHA256(secret, "<t>.<raw body>") and compare in constant time.
fn verify_signature(secret: &str, r: &Received) -> Result<(), String> {
    let sig = header(r, "steward-signature");
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_owned()),
            Some(("v1", v)) => v1 = Some(v.to_owned()),
            _ => {}
        }
    }
    let (t, v1) = (t.ok_or("no t")?, v1.ok_or("no v1")?);
    let ts: i64 = t.parse().map_err(|_| "bad t")?;
    let now = ::time::OffsetDateTime::now_utc().unix_timestamp();
    if (now - ts).abs() > 300 {
        return Err(format!("timestamp {ts} outside tolerance"));
    }
    let mac = hex::decode(&v1).map_err(|_| "v1 not hex")?;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&r.body);
    aws_lc_rs::hmac::verify(&key, &signed, &mac).map_err(|_| "signature mismatch".to_owned())
}

// ---------------------------------------------------------------- helpers

fn fast(schedule: &[f64]) -> impl FnOnce(&mut steward_server::Config) {
    let schedule = schedule.to_vec();
    move |c| {
        c.webhooks.poll_interval_ms = 25;
        c.webhooks.retry_schedule_seconds = schedule;
        c.webhooks.timeout_seconds = 2;
    }
}

/// An admin API call in-process against the running server's router (same state, same store).
pub(crate) async fn api(
    t: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"));
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => {
            req = req.header("content-length", "0");
            req.body(Body::empty()).unwrap()
        }
    };
    let resp = t.server.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v)
}

/// Creates a subscription through the API; returns (id, secret).
async fn subscribe(t: &TestServer, url: &str, events: Value) -> (String, String) {
    let (status, v) = api(
        t,
        Method::POST,
        "/api/v1/webhooks",
        ADMIN_TOKEN,
        Some(json!({"name": "test receiver", "url": url, "events": events})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("stw_whs_"), "{secret}");
    (v["id"].as_str().unwrap().to_owned(), secret)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn signed_device_events_reach_the_receiver_filtered_by_kind() {
    let (rx, port) = Receiver::start().await;
    let t = TestServer::start_with(fast(&[0.2])).await;
    let (all_id, secret) = subscribe(&t, &format!("http://127.0.0.1:{port}/all"), json!(["all"])).await;
    let (only_id, only_secret) = subscribe(&t, &format!("http://127.0.0.1:{port}/enrolled"), json!(["enrolled"])).await;

    // Validation: plain http off loopback, unknown kinds, empty kinds.
    for (body, why) in [
        (
            json!({"name": "x", "url": "http://hooks.example.com/x", "events": ["all"]}),
            "http off loopback",
        ),
        (
            json!({"name": "x", "url": "https://hooks.example.com/x", "events": ["nope"]}),
            "unknown kind",
        ),
        (
            json!({"name": "x", "url": "https://hooks.example.com/x", "events": []}),
            "no kinds",
        ),
        (
            json!({"name": "", "url": "https://hooks.example.com/x", "events": ["all"]}),
            "no name",
        ),
    ] {
        let (status, v) = api(&t, Method::POST, "/api/v1/webhooks", ADMIN_TOKEN, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {v}");
    }
    // The secret is never shown again.
    let (status, list) = api(&t, Method::GET, "/api/v1/webhooks", ADMIN_TOKEN, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains("stw_whs_"));
    let (_, one) = api(
        &t,
        Method::GET,
        &format!("/api/v1/webhooks/{only_id}"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(one["events"], json!(["enrolled"]));

    // A device enrolls and acknowledges a queued reboot in its first session.
    let mut device = t.managed_device(None).await;
    let e = t.enrollment_of(&device).await;
    admin::queue_action(t.store(), &e, &Action::Reboot).await.unwrap();
    let client = t.device_client(&device);
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();

    let got = rx
        .wait("/all", "enrolled + command_acknowledged", |g| {
            let types = delivered_types(g);
            types.first().map(String::as_str) == Some("enrolled")
                && types.iter().filter(|k| *k == "command_acknowledged").count() >= 2
        })
        .await;
    let events = t.store().device_events_for(e.id).await.unwrap();
    for r in &got {
        verify_signature(&secret, r).unwrap();
        assert!(
            verify_signature(&only_secret, r).is_err(),
            "each subscription has its own secret"
        );
        let body = json_of(r);
        let seq: i64 = body["id"]
            .as_str()
            .unwrap()
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body["id"], format!("{all_id}-{seq}"));
        let event = events.iter().find(|ev| ev.seq == seq).expect("a stored event");
        assert_eq!(body["type"], event.kind.as_str());
        assert_eq!(header(r, "steward-event"), event.kind.as_str());
        assert_eq!(header(r, "steward-webhook-id"), body["id"].as_str().unwrap());
        assert_eq!(header(r, "steward-delivery-attempt"), "1");
        assert_eq!(header(r, "content-type"), "application/json");
        assert_eq!(body["device"]["device_id"], device.profile.device_id);
        assert_eq!(body["device"]["enrollment_id"], e.id.to_string());
        assert_eq!(body["data"], event.data);
        assert!(
            ::time::OffsetDateTime::parse(
                body["occurred_at"].as_str().unwrap(),
                &::time::format_description::well_known::Rfc3339
            )
            .is_ok()
        );
    }
    // In order: sequence numbers increase.
    let seqs: Vec<i64> = got
        .iter()
        .map(|r| {
            json_of(r)["id"]
                .as_str()
                .unwrap()
                .rsplit('-')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // The reboot's acknowledgement names its command.
    let reboot = t
        .store()
        .commands_for_enrollment(e.id)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.origin.as_str().contains("reboot"))
        .unwrap();
    assert!(
        got.iter()
            .any(|r| r.body.windows(36).any(|w| w == reboot.id.to_string().as_bytes())),
        "an acknowledgement carries the reboot's command id"
    );

    // The enrolled-only subscription got exactly the enrollment.
    let only = rx.wait("/enrolled", "enrolled", |g| !g.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let only_now = rx.on("/enrolled");
    assert_eq!(
        delivered_types(&only_now),
        vec!["enrolled"],
        "{:#?}",
        summary(&only_now)
    );
    verify_signature(&only_secret, &only[0]).unwrap();

    // A test ping.
    let (status, ping) = api(
        &t,
        Method::POST,
        &format!("/api/v1/webhooks/{only_id}/test"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ping}");
    let got = rx
        .wait("/enrolled", "ping", |g| delivered_types(g).contains(&"ping".to_owned()))
        .await;
    let p = got.iter().find(|r| header(r, "steward-event") == "ping").unwrap();
    assert_eq!(json_of(p)["id"], ping["delivery_id"]);
    assert_eq!(json_of(p)["device"], Value::Null);
    verify_signature(&only_secret, p).unwrap();

    // The delivery log shows each attempt (recorded just after the receiver answered); deleting
    // stops deliveries and the log goes with it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let (status, log) = api(
            &t,
            Method::GET,
            &format!("/api/v1/webhooks/{only_id}/deliveries?limit=1"),
            ADMIN_TOKEN,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        if log["items"][0]["event"] == "ping" || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(log["items"][0]["event"], "ping");
    assert_eq!(log["items"][0]["outcome"], "delivered");
    assert_eq!(log["items"][0]["status_code"], 204);
    let cursor = log["next_cursor"].as_str().unwrap();
    let (_, older) = api(
        &t,
        Method::GET,
        &format!("/api/v1/webhooks/{only_id}/deliveries?cursor={cursor}"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(older["items"][0]["event"], "enrolled");
    assert_eq!(older["next_cursor"], Value::Null);

    let (status, _) = api(
        &t,
        Method::DELETE,
        &format!("/api/v1/webhooks/{only_id}"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api(
        &t,
        Method::GET,
        &format!("/api/v1/webhooks/{only_id}"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let audit = t
        .store()
        .audit_events(&AuditFilter::default(), None, 100)
        .await
        .unwrap();
    for action in ["webhook.create", "webhook.test", "webhook.delete"] {
        assert!(audit.iter().any(|a| a.action == action), "{action} audited");
    }
    t.server.shutdown().await;
}

#[tokio::test]
async fn failing_endpoint_is_retried_with_backoff_and_blocks_nobody_else() {
    let (rx, port) = Receiver::start().await;
    let backoff = 0.3;
    let t = TestServer::start_with(fast(&[backoff, backoff])).await;
    // A dead endpoint (nothing listens on port 1) subscribed first: it must not hold up the other.
    let (dead, _) = subscribe(&t, "http://127.0.0.1:1/dead", json!(["all"])).await;
    let (id, secret) = subscribe(&t, &format!("http://127.0.0.1:{port}/flaky"), json!(["all"])).await;
    let ping = |id: String| {
        let t = &t;
        async move {
            let (status, v) = api(
                t,
                Method::POST,
                &format!("/api/v1/webhooks/{id}/test"),
                ADMIN_TOKEN,
                None,
            )
            .await;
            assert_eq!(status, StatusCode::ACCEPTED);
            v["delivery_id"].as_str().unwrap().to_owned()
        }
    };
    ping(dead.clone()).await;

    // Two failures, then success on the third attempt.
    rx.fail(2);
    let first = ping(id.clone()).await;
    let got = rx.wait("/flaky", "three attempts", |g| g.len() >= 3).await;
    assert_eq!(got.iter().map(|r| r.status).collect::<Vec<_>>(), vec![500, 500, 204]);
    for (n, r) in got.iter().enumerate() {
        assert_eq!(header(r, "steward-webhook-id"), first);
        assert_eq!(header(r, "steward-delivery-attempt"), (n + 1).to_string());
        verify_signature(&secret, r).unwrap();
    }
    for w in got.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_millis(250), "backoff respected: {gap:?}");
    }

    // Retries used up: the item is given up (logged as failed) and the next one goes out.
    rx.fail(100);
    let doomed = ping(id.clone()).await;
    rx.wait("/flaky", "three failed attempts", |g| g.len() >= 6).await;
    rx.fail(0);
    let next = ping(id.clone()).await;
    let got = rx
        .wait("/flaky", "the next ping", |g| {
            g.iter()
                .any(|r| header(r, "steward-webhook-id") == next && r.status == 204)
        })
        .await;
    assert_eq!(
        got.iter().filter(|r| header(r, "steward-webhook-id") == doomed).count(),
        3,
        "1 + 2 retries"
    );

    let wid: WebhookId = id.parse().unwrap();
    // The last attempt is recorded just after the receiver answered it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = t.store().webhook_deliveries(wid, None, 100).await.unwrap();
        if log.len() >= 7 || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mine: Vec<(String, u32, Option<u16>, DeliveryOutcome)> = log
        .iter()
        .rev()
        .map(|d| (d.delivery_id.clone(), d.attempt, d.status_code, d.outcome))
        .collect();
    use DeliveryOutcome::*;
    assert_eq!(
        mine,
        vec![
            (first.clone(), 1, Some(500), Retrying),
            (first.clone(), 2, Some(500), Retrying),
            (first.clone(), 3, Some(204), Delivered),
            (doomed.clone(), 1, Some(500), Retrying),
            (doomed.clone(), 2, Some(500), Retrying),
            (doomed.clone(), 3, Some(500), Failed),
            (next.clone(), 1, Some(204), Delivered),
        ]
    );
    // The dead endpoint failed meanwhile, with the error logged and a retry scheduled.
    let dead_log = t
        .store()
        .webhook_deliveries(dead.parse().unwrap(), None, 100)
        .await
        .unwrap();
    assert!(!dead_log.is_empty());
    assert!(dead_log.iter().all(|d| d.status_code.is_none() && d.error.is_some()));
    t.server.shutdown().await;
}

#[tokio::test]
async fn a_restart_resumes_delivery_without_loss_or_skip() {
    let (rx, port) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start_in(dir, fast(&[0.5; 10])).await;
    let (id, secret) = subscribe(&t, &format!("http://127.0.0.1:{port}/hook"), json!(["enrolled"])).await;

    let one = t.managed_device(None).await;
    rx.wait("/hook", "the first enrollment", |g| g.iter().any(|r| r.status == 204))
        .await;
    // The receiver goes down; two more enrollments pile up behind a failing delivery.
    rx.fail(u32::MAX);
    let two = t.managed_device(None).await;
    let three = t.managed_device(None).await;
    rx.wait("/hook", "a failed attempt", |g| g.iter().any(|r| r.status == 500))
        .await;

    let port_server = t.server.local_addr.port();
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;
    rx.fail(0);
    let t = TestServer::start_on(dir, port_server, fast(&[0.5; 10])).await;
    let four = t.managed_device(None).await;

    let got = rx
        .wait("/hook", "all four enrollments", |g| {
            g.iter().filter(|r| r.status == 204).count() >= 4
        })
        .await;
    let delivered: Vec<Value> = got.iter().filter(|r| r.status == 204).map(json_of).collect();
    for r in &got {
        verify_signature(&secret, r).unwrap();
    }
    let devices: Vec<&str> = delivered
        .iter()
        .map(|b| b["device"]["device_id"].as_str().unwrap())
        .collect();
    // Each event delivered exactly once here (no crash mid-request), in the order it happened.
    assert_eq!(
        devices,
        vec![
            one.profile.device_id.as_str(),
            two.profile.device_id.as_str(),
            three.profile.device_id.as_str(),
            four.profile.device_id.as_str(),
        ]
    );
    let wanted: Vec<String> = t
        .store()
        .device_events_after(0, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::Enrolled)
        .map(|e| format!("{id}-{}", e.seq))
        .collect();
    let ids: Vec<&str> = delivered.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, wanted.iter().map(String::as_str).collect::<Vec<_>>());
    let last = t
        .store()
        .device_events_after(0, 1000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let w = t.store().webhook(id.parse().unwrap()).await.unwrap().unwrap();
        if (w.cursor, w.attempts) == (last, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "cursor {} attempts {}", w.cursor, w.attempts);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.server.shutdown().await;
}
