//! Device tags over real mutual TLS: an administrator tags a simulated device through the admin
//! API, a dynamic group whose rule is `tags == kiosk` picks it up at its next check-in and the
//! group's profile reaches it; untagging takes it out again and the setting's removal rule applies.
//! Bad tags are refused with problem+json naming the tag, and nothing is written.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use steward_core::*;

use crate::common::{TestServer, admin_api as api, sync};

const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";

async fn members(t: &TestServer, id: &str) -> Vec<String> {
    let (status, page) = api(t, Method::GET, &format!("/api/v1/groups/{id}/members"), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn put_tags(t: &TestServer, e: &Enrollment, tags: Value) -> (StatusCode, Value) {
    api(
        t,
        Method::PUT,
        &format!("/api/v1/devices/{}/tags", e.device_id),
        Some(json!({ "tags": tags })),
    )
    .await
}

#[tokio::test]
async fn tagging_a_device_puts_it_in_a_tag_rule_group_and_untagging_removes_the_profile() {
    let t = TestServer::start().await;
    let mut d = t.managed_device(None).await;
    let other = t.managed_device(None).await;
    let e = t.enrollment_of(&d).await;
    let e_other = t.enrollment_of(&other).await;
    sync(&t, &mut d).await;

    // The dynamic group on tags and a profile assigned to it, through the API.
    let rule = json!({"all": [{"fact": "tags", "op": "==", "value": "kiosk"}]});
    let (status, created) = api(
        &t,
        Method::POST,
        "/api/v1/groups",
        Some(json!({"name": "kiosks", "rule": rule})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let gid = created["id"].as_str().unwrap().to_owned();
    let (status, report) = api(
        &t,
        Method::POST,
        "/api/v1/profiles/apply",
        Some(json!({"documents": [{
            "kind": "profile", "name": "kiosk-camera-off", "platform": "windows",
            "settings": [{"loc_uri": CAMERA, "format": "int", "value": 0}],
            "assign": {"groups": ["kiosks"]}
        }]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    sync(&t, &mut d).await;
    assert_eq!(d.tree.value(CAMERA), None, "untagged: not a member, nothing sent");
    assert!(members(&t, &gid).await.is_empty());

    // Bad tags are refused, naming the tag, and nothing is written.
    for bad in [
        json!(["kiosk", "front desk"]),
        json!(["-kiosk"]),
        json!(["x".repeat(65)]),
    ] {
        let (status, problem) = put_tags(&t, &e, bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("tag"), "{problem}");
    }
    let too_many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let (status, problem) = put_tags(&t, &e, json!(too_many)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("at most 32"), "{problem}");
    let (status, _) = put_tags(&t, &e, json!("kiosk")).await;
    assert!(status.is_client_error(), "a string where a list belongs");
    assert!(t.store().device_tags(e.id).await.unwrap().is_empty(), "nothing written");

    // Tagged (normalised), shown on the device, audited.
    let (status, tagged) = put_tags(&t, &e, json!([" Kiosk ", "lobby"])).await;
    assert_eq!(status, StatusCode::OK, "{tagged}");
    assert_eq!(tagged["tags"], json!(["kiosk", "lobby"]));
    let (_, detail) = api(&t, Method::GET, &format!("/api/v1/devices/{}", e.device_id), None).await;
    assert_eq!(detail["tags"], json!(["kiosk", "lobby"]), "{detail}");
    assert_eq!(members(&t, &gid).await, vec![e.device_id.to_string()]);
    let audited = t
        .store()
        .audit_events(
            &AuditFilter {
                action: Some("device.set_tags".into()),
                ..AuditFilter::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert!(
        audited
            .iter()
            .any(|a| a.status == Some(200) && a.details.as_deref() == Some("tags: (none) -> kiosk, lobby")),
        "{audited:?}"
    );
    assert!(
        audited.iter().any(|a| a.status == Some(422)),
        "refusals are audited too"
    );

    // The next check-in reconciles with the new membership: the group's profile arrives.
    sync(&t, &mut d).await;
    if d.tree.value(CAMERA).is_none() {
        sync(&t, &mut d).await;
    }
    assert_eq!(
        d.tree.value(CAMERA),
        Some("0"),
        "tagged: the group's profile reached it"
    );
    let rows = t.store().device_configuration(e.id).await.unwrap().settings;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        t.store()
            .device_configuration(e_other.id)
            .await
            .unwrap()
            .settings
            .is_empty(),
        "the untagged device gets nothing"
    );

    // Untagged (the other tag stays): out of the group, and the removal rule (delete) applies.
    let (status, untagged) = put_tags(&t, &e, json!(["lobby"])).await;
    assert_eq!(status, StatusCode::OK, "{untagged}");
    assert!(members(&t, &gid).await.is_empty());
    for _ in 0..2 {
        sync(&t, &mut d).await;
    }
    assert_eq!(d.tree.value(CAMERA), None, "removed once no longer tagged");
    assert!(t.store().device_configuration(e.id).await.unwrap().settings.is_empty());
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}
