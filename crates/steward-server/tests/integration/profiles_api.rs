//! Configuration profiles through the admin API of a running server (real TLS, the configured
//! store): apply validates everything first (a bad setting is a 422 naming the document and the
//! setting, and nothing is saved), a second identical apply is unchanged and writes nothing, a dry
//! run writes nothing, the export applies back unchanged, settings and assignment changes are told
//! apart, a read-only role cannot apply, a device shows its settings pending with the reason, and
//! catalog entries assign.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use steward_core::*;
use time::{Duration, OffsetDateTime};

use crate::common::{ADMIN_TOKEN, TestServer};

const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";
const SCREEN: &str = "./Device/Vendor/MSFT/Policy/Config/DeviceLock/MaxInactivityTimeDeviceLock";

async fn api(t: &TestServer, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let resp = t.client().request(method, &t.url(path), &headers, body).await.unwrap();
    let value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, value)
}

async fn admin(t: &TestServer, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    api(t, method, path, ADMIN_TOKEN, body).await
}

async fn apply(t: &TestServer, documents: Value, dry_run: bool) -> (StatusCode, Value) {
    admin(
        t,
        Method::POST,
        "/api/v1/profiles/apply",
        Some(json!({ "documents": documents, "dry_run": dry_run })),
    )
    .await
}

fn camera_off(groups: &[&str]) -> Value {
    json!({
        "kind": "profile",
        "name": "camera-off",
        "platform": "windows",
        "settings": [{"loc_uri": CAMERA, "format": "int", "value": 0}],
        "assign": {"groups": groups},
    })
}

fn screen_lock(minutes: u32) -> Value {
    json!({
        "kind": "profile",
        "name": "screen-lock",
        "platform": "windows",
        "description": "lock after inactivity",
        "priority": 50,
        "settings": [{"loc_uri": SCREEN, "format": "int", "value": minutes}],
        "assign": {"all": true, "exclude_groups": ["lab"]},
    })
}

async fn group(t: &TestServer, name: &str) -> GroupId {
    let (status, g) = admin(t, Method::POST, "/api/v1/groups", Some(json!({"name": name}))).await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    GroupId(g["id"].as_str().unwrap().parse().unwrap())
}

async fn profile_names(t: &TestServer) -> Vec<String> {
    let (status, list) = admin(t, Method::GET, "/api/v1/profiles", None).await;
    assert_eq!(status, StatusCode::OK);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

fn actions(report: &Value) -> Vec<(String, String)> {
    report["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// An active enrollment committed straight into the store (it has never checked in).
async fn device(t: &TestServer, device_id: &str, group: Option<GroupId>) -> Enrollment {
    let now = OffsetDateTime::now_utc();
    let e = Enrollment {
        id: EnrollmentId::new(),
        platform: Platform::Windows,
        device_id: DeviceId::parse(device_id).unwrap(),
        hardware_id: None,
        device_name: Some(device_id.into()),
        os_version: Some("10.0.26100.2".into()),
        os_edition: Some("72".into()),
        enrollment_type: EnrollmentType::Full,
        user_email: None,
        auth_method: AuthMethod::UserPassword,
        enrollment_token_id: None,
        group_id: group,
        cert_serial: CertSerial::new(format!("SERIAL{device_id}")),
        cert_thumbprint: Thumbprint::of_der(format!("THUMB{device_id}").as_bytes()),
        cert_not_after: now + Duration::days(365),
        previous_cert: None,
        state: EnrollmentState::Active,
        enrolled_at: now,
        updated_at: now,
        last_seen_at: None,
    };
    t.store()
        .commit_enrollment(&EnrollmentCommit {
            subject: format!("CN={device_id}"),
            not_before: now,
            enrollment: e.clone(),
            consume_token: None,
            consume_nonce: None,
            session_credential: None,
            replaces: None,
        })
        .await
        .unwrap();
    e
}

async fn role_token(t: &TestServer, role: Role) -> String {
    let secret = TokenKind::Admin.generate().unwrap();
    let now = OffsetDateTime::now_utc();
    t.store()
        .create_api_token(&NewApiToken {
            id: ApiTokenId::new(),
            name: format!("{role}-profiles"),
            token_hash: TokenHash::of(secret.expose()),
            role,
            group_id: None,
            created_at: now,
            expires_at: None,
            created_by: "test".into(),
        })
        .await
        .unwrap();
    secret.expose().to_owned()
}

#[tokio::test]
async fn apply_is_validated_whole_idempotent_and_exports_back() {
    let t = TestServer::start().await;
    group(&t, "pilot").await;
    group(&t, "lab").await;
    let epoch0 = t.store().configuration_epoch().await.unwrap();

    // A bad setting in the second document: 422 naming the document's profile and the setting,
    // and the first (valid) document is not saved either.
    let mut bad = screen_lock(15);
    bad["settings"] = json!([
        {"loc_uri": SCREEN, "format": "int", "value": 15},
        {"loc_uri": "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera", "format": "integer", "value": 0}
    ]);
    let (status, problem) = apply(&t, json!([camera_off(&["pilot"]), bad]), false).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("screen-lock") && detail.contains("document 2"),
        "{detail}"
    );
    assert!(detail.contains("setting 1") && detail.contains(CAMERA), "{detail}");
    assert!(profile_names(&t).await.is_empty(), "nothing half-saved");
    assert_eq!(t.store().configuration_epoch().await.unwrap(), epoch0);

    // Other refusals name what is wrong.
    for (docs, wanted) in [
        (json!([camera_off(&["no-such-group"])]), "no-such-group"),
        (json!([camera_off(&["pilot"]), camera_off(&["lab"])]), "more than once"),
        (
            json!([{"kind": "policy", "name": "x", "platform": "windows", "settings": []}]),
            "kind",
        ),
        (
            json!([{"kind": "profile", "name": "Bad Name", "platform": "windows", "settings": []}]),
            "Bad Name",
        ),
        (
            json!([{"kind": "profile", "name": "x", "platform": "palmos", "settings": []}]),
            "palmos",
        ),
        (
            json!([{"kind": "profile", "name": "export", "platform": "windows", "settings": []}]),
            "reserved",
        ),
    ] {
        let (status, problem) = apply(&t, docs, false).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(wanted), "{wanted}: {detail}");
    }
    assert!(profile_names(&t).await.is_empty());

    // A dry run reports and writes nothing.
    let docs = json!([camera_off(&["pilot"]), screen_lock(15)]);
    let (status, report) = apply(&t, docs.clone(), true).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["written"], false);
    assert_eq!(report["changed"], true);
    assert_eq!(
        actions(&report),
        [
            ("camera-off".into(), "created".into()),
            ("screen-lock".into(), "created".into())
        ]
    );
    assert!(profile_names(&t).await.is_empty(), "a dry run writes nothing");
    assert_eq!(t.store().configuration_epoch().await.unwrap(), epoch0);

    // Applied: created, version 1, with the settings added and the devices counted.
    let pilot_device = device(
        &t,
        "PILOT-1",
        Some(t.store().group_by_name("pilot").await.unwrap().unwrap().id),
    )
    .await;
    let (status, report) = apply(&t, docs.clone(), false).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["written"], true);
    let camera = &report["profiles"][0];
    assert_eq!(camera["action"], "created");
    assert_eq!(camera["version_before"], Value::Null);
    assert_eq!(camera["version_after"], 1);
    assert_eq!(camera["settings_added"], json!([CAMERA]));
    assert_eq!(camera["assignment_after"], json!({"groups": ["pilot"]}));
    assert_eq!(camera["devices_after"], 1);
    assert_eq!(report["profiles"][1]["devices_after"], 1, "all devices except lab");
    assert_eq!(profile_names(&t).await, ["camera-off", "screen-lock"]);
    let epoch1 = t.store().configuration_epoch().await.unwrap();
    assert!(epoch1 > epoch0);

    // The same documents again: unchanged, nothing written.
    let (status, report) = apply(&t, docs.clone(), false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        actions(&report),
        [
            ("camera-off".into(), "unchanged".into()),
            ("screen-lock".into(), "unchanged".into())
        ]
    );
    assert_eq!(
        (report["written"].clone(), report["changed"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(t.store().configuration_epoch().await.unwrap(), epoch1);

    // A settings change is a new version; an assignment-only change is not.
    let (_, report) = apply(&t, json!([screen_lock(10)]), false).await;
    let p = &report["profiles"][0];
    assert_eq!(
        (
            p["action"].clone(),
            p["version_before"].clone(),
            p["version_after"].clone()
        ),
        (json!("updated"), json!(1), json!(2))
    );
    assert_eq!(p["settings_changed"], json!([SCREEN]));
    let (_, report) = apply(&t, json!([camera_off(&["pilot", "lab"])]), false).await;
    let p = &report["profiles"][0];
    assert_eq!(
        (p["action"].clone(), p["version_after"].clone()),
        (json!("updated"), json!(1))
    );
    assert_eq!(p["assignment_before"], json!({"groups": ["pilot"]}));
    assert_eq!(p["assignment_after"], json!({"groups": ["lab", "pilot"]}));
    assert_eq!(
        (p["devices_before"].clone(), p["devices_after"].clone()),
        (json!(1), json!(1))
    );

    // The profile page: versions, counts, no conflicts (different paths).
    let (status, shown) = admin(&t, Method::GET, "/api/v1/profiles/screen-lock", None).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["profile"]["current_version"], 2);
    assert_eq!(shown["versions"].as_array().unwrap().len(), 2);
    assert_eq!(shown["versions"][1]["settings"][0]["value"], 10);
    assert_eq!(shown["profile"]["devices"], 1);
    assert!(shown["conflicts"].as_array().unwrap().is_empty());

    // The export applies back unchanged.
    let (status, export) = admin(&t, Method::GET, "/api/v1/profiles/export", None).await;
    assert_eq!(status, StatusCode::OK);
    let documents = export["documents"].clone();
    assert_eq!(documents.as_array().unwrap().len(), 2);
    assert_eq!(documents[1]["priority"], 50);
    let epoch2 = t.store().configuration_epoch().await.unwrap();
    let (status, report) = apply(&t, documents, false).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert!(actions(&report).iter().all(|(_, a)| a == "unchanged"), "{report}");
    assert_eq!(t.store().configuration_epoch().await.unwrap(), epoch2);

    // The device has not checked in since: its settings are pending, and say why.
    let (status, settings) = admin(
        &t,
        Method::GET,
        &format!("/api/v1/devices/{}/settings", pilot_device.device_id.as_str()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    let items = settings["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{settings}");
    for i in items {
        assert_eq!(i["status"], "pending", "{i}");
        assert!(
            i["reason"].as_str().unwrap().contains("has not checked in since"),
            "{i}"
        );
    }
    let camera_row = items.iter().find(|i| i["path"] == CAMERA).unwrap();
    assert_eq!(camera_row["profile"], "camera-off");
    assert_eq!(camera_row["desired"]["value"], 0);

    // Verification of a device and of a group.
    let (status, v) = admin(
        &t,
        Method::POST,
        &format!("/api/v1/devices/{}/actions/verify", pilot_device.id),
        None,
    )
    .await;
    assert_eq!((status, v["devices"].clone()), (StatusCode::ACCEPTED, json!(1)), "{v}");
    let (status, v) = admin(&t, Method::POST, "/api/v1/groups/pilot/actions/verify", None).await;
    assert_eq!((status, v["devices"].clone()), (StatusCode::ACCEPTED, json!(1)), "{v}");
    let (status, _) = admin(&t, Method::POST, "/api/v1/groups/nobody/actions/verify", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Every change is audited under the route table's action names.
    let applied = t
        .store()
        .audit_events(
            &AuditFilter {
                action: Some("profile.apply".into()),
                ..AuditFilter::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert!(
        applied
            .iter()
            .any(|e| e.status == Some(422) && e.outcome == AuditOutcome::Failure)
    );
    assert!(
        applied
            .iter()
            .any(|e| e.status == Some(200) && e.details.as_deref().is_some_and(|d| d.contains("camera-off created")))
    );

    // Delete: gone from the list; the device's row-less settings disappear from its table.
    let (status, _) = admin(&t, Method::DELETE, "/api/v1/profiles/camera-off", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin(&t, Method::DELETE, "/api/v1/profiles/camera-off", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(profile_names(&t).await, ["screen-lock"]);
}

#[tokio::test]
async fn read_only_roles_cannot_apply_and_conflicts_are_reported() {
    let t = TestServer::start().await;
    let pilot = group(&t, "pilot").await;
    let auditor = role_token(&t, Role::Auditor).await;
    let helpdesk = role_token(&t, Role::Helpdesk).await;
    let operator = role_token(&t, Role::Operator).await;
    let body = json!({"documents": [camera_off(&["pilot"])]});

    for token in [&auditor, &helpdesk] {
        let (status, problem) = api(&t, Method::POST, "/api/v1/profiles/apply", token, Some(body.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("profiles.write"));
        let (status, _) = api(&t, Method::GET, "/api/v1/profiles", token, None).await;
        assert_eq!(status, StatusCode::OK, "reading is open to every role");
    }
    assert!(profile_names(&t).await.is_empty());
    let (status, report) = api(&t, Method::POST, "/api/v1/profiles/apply", &operator, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let (status, _) = api(&t, Method::DELETE, "/api/v1/profiles/camera-off", &auditor, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A second profile setting the same node differently on the same group: a conflict on both
    // profiles and on the device; the lower priority number wins.
    let camera_on = json!({
        "kind": "profile",
        "name": "camera-on",
        "platform": "windows",
        "priority": 10,
        "settings": [{"loc_uri": CAMERA, "format": "int", "value": 1}],
        "assign": {"groups": ["pilot"]},
    });
    let (status, _) = apply(&t, json!([camera_on]), false).await;
    assert_eq!(status, StatusCode::OK);
    for name in ["camera-off", "camera-on"] {
        let (_, shown) = admin(&t, Method::GET, &format!("/api/v1/profiles/{name}"), None).await;
        assert_eq!(
            shown["conflicts"],
            json!([{"path": CAMERA, "winner": "camera-on", "loser": "camera-off"}]),
            "{name}: {shown}"
        );
    }
    let d = device(&t, "PILOT-2", Some(pilot)).await;
    let (_, settings) = admin(&t, Method::GET, &format!("/api/v1/devices/{}/settings", d.id), None).await;
    assert_eq!(settings["items"].as_array().unwrap().len(), 1);
    assert_eq!(settings["items"][0]["profile"], "camera-on");
    assert_eq!(settings["conflicts"][0]["loser"], "camera-off");
}

#[tokio::test]
async fn catalog_entries_assign_and_apply_as_files() {
    let t = TestServer::start().await;
    group(&t, "pilot").await;
    let (status, report) = admin(
        &t,
        Method::POST,
        "/api/v1/catalog/baseline-smartscreen/assign",
        Some(json!({"groups": ["pilot"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let p = &report["profiles"][0];
    assert_eq!(
        (p["name"].clone(), p["action"].clone()),
        (json!("baseline-smartscreen"), json!("created"))
    );
    assert!(!p["settings_added"].as_array().unwrap().is_empty());
    let (_, again) = admin(
        &t,
        Method::POST,
        "/api/v1/catalog/baseline-smartscreen/assign",
        Some(json!({"groups": ["pilot"]})),
    )
    .await;
    assert_eq!(again["profiles"][0]["action"], "unchanged");

    // A kind needs parameters first; an unknown entry or group is named.
    let (status, problem) = admin(
        &t,
        Method::POST,
        "/api/v1/catalog/kind-wifi/assign",
        Some(json!({"all": true})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, _) = admin(
        &t,
        Method::POST,
        "/api/v1/catalog/no-such-entry/assign",
        Some(json!({"all": true})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, problem) = admin(
        &t,
        Method::POST,
        "/api/v1/catalog/baseline-firewall/assign",
        Some(json!({"groups": ["ghosts"]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["detail"].as_str().unwrap().contains("ghosts"));

    // A catalog file applies as it is (its catalog metadata accepted, not stored), and the
    // catalog-assigned profile's export applies back unchanged.
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../steward-windows/catalog/baseline-firewall.yaml"
    ))
    .unwrap();
    let doc: Value = serde_saphyr::from_str(&yaml).unwrap();
    let (status, report) = apply(&t, json!([doc]), false).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["profiles"][0]["action"], "created");
    let (_, export) = admin(&t, Method::GET, "/api/v1/profiles/export", None).await;
    let (_, report) = apply(&t, export["documents"].clone(), false).await;
    assert!(actions(&report).iter().all(|(_, a)| a == "unchanged"), "{report}");
}

fn settings_of(v: &Value) -> Vec<(String, String, u64)> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["path"].as_str().unwrap().to_owned(),
                i["status"].as_str().unwrap().to_owned(),
                i["version"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn sync(t: &TestServer, d: &mut steward_sim::ManagedDevice) {
    let client = t.device_client(d);
    let report = d
        .run_session(&client, steward_sim::session::SessionTrigger::Scheduled)
        .await
        .unwrap();
    assert!(report.ended, "the server ends the session");
}

/// The API's views follow a real device: applied through the API, delivered and read back by the
/// simulator's session, counted on the profile page; a new version is pending (with the device's
/// last check-in in the reason) until the device's next session.
#[tokio::test]
async fn the_api_views_follow_a_checking_in_device() {
    let t = TestServer::start().await;
    let pilot = group(&t, "pilot").await;
    let mut d = t.managed_device(None).await;
    let e = t.enrollment_of(&d).await;
    assert!(t.store().set_enrollment_group(e.id, Some(pilot)).await.unwrap());
    sync(&t, &mut d).await;

    let (status, _) = apply(&t, json!([camera_off(&["pilot"])]), false).await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/api/v1/devices/{}/settings", e.id);
    let (_, before) = admin(&t, Method::GET, &path, None).await;
    assert_eq!(settings_of(&before), [(CAMERA.to_owned(), "pending".to_owned(), 1)]);
    let reason = before["items"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("has not checked in since it was assigned (last seen"),
        "{reason}"
    );

    // One session delivers and the read-back verifies (a Policy CSP node is readable).
    for _ in 0..3 {
        sync(&t, &mut d).await;
    }
    let (_, after) = admin(&t, Method::GET, &path, None).await;
    assert_eq!(
        settings_of(&after),
        [(CAMERA.to_owned(), "verified".to_owned(), 1)],
        "{after}"
    );
    assert_eq!(after["items"][0]["observed"], "0");
    let (_, shown) = admin(&t, Method::GET, "/api/v1/profiles/camera-off", None).await;
    assert_eq!(shown["profile"]["devices"], 1);
    assert_eq!(
        shown["status"],
        json!([{"version": 1, "status": "verified", "count": 1}])
    );

    // A new version: pending on the device until its next session, then verified at version 2.
    let mut v2 = camera_off(&["pilot"]);
    v2["settings"][0]["value"] = json!(1);
    let (_, report) = apply(&t, json!([v2]), false).await;
    assert_eq!(report["profiles"][0]["version_after"], 2);
    assert_eq!(report["profiles"][0]["devices_after"], 1);
    let (_, pending) = admin(&t, Method::GET, &path, None).await;
    assert_eq!(
        settings_of(&pending),
        [(CAMERA.to_owned(), "pending".to_owned(), 2)],
        "{pending}"
    );
    for _ in 0..3 {
        sync(&t, &mut d).await;
    }
    let (_, done) = admin(&t, Method::GET, &path, None).await;
    assert_eq!(
        settings_of(&done),
        [(CAMERA.to_owned(), "verified".to_owned(), 2)],
        "{done}"
    );
    assert_eq!(done["items"][0]["observed"], "1");
}
