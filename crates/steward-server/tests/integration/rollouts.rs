//! Staged rollouts over a running server (real mTLS sessions of simulated devices, the configured
//! store): a new version applied with a `rollout` section reaches only the pilot group; the pilot
//! device refuses the setting, so the evaluation (at an injected time) halts the rollout before the
//! next ring and the other devices never get the new value; the device settings table says which
//! ring a waiting device is in; a rollback gives everyone the previous value again.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use steward_core::configuration::{SettingStatus, device_view};
use steward_core::*;
use steward_sim::ManagedDevice;
use steward_sim::session::SessionTrigger;
use time::{Duration, OffsetDateTime};

use crate::common::{ADMIN_TOKEN, TestServer};

const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";

async fn admin(t: &TestServer, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let resp = t.client().request(method, &t.url(path), &headers, body).await.unwrap();
    (resp.status, serde_json::from_slice(&resp.body).unwrap_or(Value::Null))
}

fn camera(value: i64, rollout: Option<Value>) -> Value {
    let mut doc = json!({
        "kind": "profile",
        "name": "camera",
        "platform": "windows",
        "settings": [{"loc_uri": CAMERA, "format": "int", "value": value}],
        "assign": {"all": true},
    });
    if let Some(r) = rollout {
        doc["rollout"] = r;
    }
    doc
}

async fn apply(t: &TestServer, doc: Value) {
    let (status, body) = admin(
        t,
        Method::POST,
        "/api/v1/profiles/apply",
        Some(json!({ "documents": [doc] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["written"], true, "{body}");
}

async fn sync(t: &TestServer, d: &mut ManagedDevice) {
    let client = t.device_client(d);
    let report = d.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.ended, "the server ends the session");
}

async fn camera_row(t: &TestServer, e: &Enrollment) -> Option<DeviceSetting> {
    t.store()
        .device_configuration(e.id)
        .await
        .unwrap()
        .settings
        .into_iter()
        .find(|r| r.path == CAMERA)
}

#[tokio::test]
async fn a_failing_pilot_ring_halts_the_rollout_before_the_next_ring() {
    // The server's own loop would evaluate at start and every hour: the test evaluates itself, at
    // the times it chooses.
    let t = TestServer::start_with(|c| c.rollouts.evaluate_interval_seconds = 3600).await;
    let pilots = Group::named("pilots", OffsetDateTime::now_utc()).unwrap();
    t.store().create_group(&pilots).await.unwrap();
    let mut pilot = t.managed_device(None).await;
    let ep = t.enrollment_of(&pilot).await;
    assert!(t.store().set_enrollment_group(ep.id, Some(pilots.id)).await.unwrap());
    let mut others = Vec::new();
    for _ in 0..3 {
        let d = t.managed_device(None).await;
        let e = t.enrollment_of(&d).await;
        others.push((d, e));
    }

    // Version 1 everywhere.
    apply(&t, camera(1, None)).await;
    sync(&t, &mut pilot).await;
    for (d, _) in &mut others {
        sync(&t, d).await;
    }
    assert_eq!(pilot.tree.value(CAMERA), Some("1"));
    assert!(others.iter().all(|(d, _)| d.tree.value(CAMERA) == Some("1")));

    // Version 2 in rings: the pilot group, then 50 %, then everyone. The pilot device refuses it.
    let rollout = json!({
        "rings": [{"pilot": "pilots"}, {"percent": 50}],
        "soak_seconds": 600,
        "success_ratio": 1.0,
        "failure_threshold": 0.0,
    });
    apply(&t, camera(0, Some(rollout))).await;
    let (status, r) = admin(&t, Method::GET, "/api/v1/profiles/camera/rollout", None).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        (
            r["state"].as_str(),
            r["from_version"].as_u64(),
            r["to_version"].as_u64()
        ),
        (Some("running"), Some(1), Some(2))
    );
    assert_eq!(r["rings"].as_array().unwrap().len(), 3, "everyone is appended: {r}");
    assert_eq!(r["current_ring"], 1);

    pilot.tree.refuse_writes(CAMERA);
    sync(&t, &mut pilot).await;
    for (d, _) in &mut others {
        sync(&t, d).await;
    }
    let row = camera_row(&t, &ep).await.unwrap();
    assert_eq!((row.status, row.profile_version), (SettingStatus::Failed, 2), "{row:?}");
    assert_eq!(pilot.tree.value(CAMERA), Some("1"), "the device kept its value");
    for (d, e) in &others {
        assert_eq!(d.tree.value(CAMERA), Some("1"), "outside the pilot: still version 1");
        assert_eq!(camera_row(&t, e).await.unwrap().profile_version, 1);
        // The settings table says what the device waits for.
        let (view, _, _) = device_view(&t.store().device_configuration(e.id).await.unwrap(), None);
        let v = view.iter().find(|v| v.path == CAMERA).unwrap();
        assert_eq!((v.status, v.version), (SettingStatus::Pending, 2));
        assert!(v.reason.starts_with("waiting in rollout ring "), "{}", v.reason);
    }

    // The evaluation, past the soak: the pilot ring failed (1 of 1 > 0 %), so it halts.
    let core = &t.server.core;
    let later = OffsetDateTime::now_utc() + Duration::hours(1);
    let done = core.rollouts.evaluate_all(later).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].outcome, "halt", "{done:?}");
    let (_, r) = admin(&t, Method::GET, "/api/v1/profiles/camera/rollout", None).await;
    assert_eq!(r["state"], "halted", "{r}");
    assert_eq!(r["current_ring"], 1, "the next ring was never released");
    assert_eq!(r["rings"][0]["failed"], 1);
    assert!(r["reason"].as_str().unwrap().contains("1 of 1 devices failed"), "{r}");
    // Halted, evaluation does nothing more; the other devices stay on version 1 however often
    // they check in.
    assert!(
        core.rollouts
            .evaluate_all(later + Duration::hours(5))
            .await
            .unwrap()
            .is_empty()
    );
    for (d, _) in &mut others {
        sync(&t, d).await;
        assert_eq!(
            d.tree.value(CAMERA),
            Some("1"),
            "the non-pilot devices never get the new value"
        );
    }
    // An advance is refused while halted.
    let (status, _) = admin(
        &t,
        Method::POST,
        "/api/v1/profiles/camera/rollout/actions/advance",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Rollback: every device has version 1 again; the pilot's row is applied, not failed.
    let (status, r) = admin(
        &t,
        Method::POST,
        "/api/v1/profiles/camera/rollout/actions/rollback",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["state"], "rolled_back");
    pilot.tree.allow_writes(CAMERA);
    sync(&t, &mut pilot).await;
    let row = camera_row(&t, &ep).await.unwrap();
    assert_eq!(
        (row.status, row.profile_version),
        (SettingStatus::Applied, 1),
        "{row:?}"
    );
    assert_eq!(pilot.tree.value(CAMERA), Some("1"));
    // Audited under the route's action names.
    let audit = t
        .store()
        .audit_events(&AuditFilter::default(), None, 100)
        .await
        .unwrap();
    assert!(audit.iter().any(|a| a.action == "rollout.rollback"), "rollback audited");
}
