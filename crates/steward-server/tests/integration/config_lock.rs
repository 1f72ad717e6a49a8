//! DMClient ConfigLock over real mutual TLS: a profile with `config_lock: true` also sets
//! `DMClient/Provider/Steward/ConfigLock/Lock` = 1 on a Windows 11 secured-core PC (the simulator
//! reports `ConfigLock/SecureCore` true), tracks it like any setting (applied, then verified by
//! reading it back), says why not on a device that is not a secured-core PC, keeps the option
//! across export and apply, and sets the node back to 0 once no assigned profile asks for it.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use steward_core::*;
use steward_sim::csp::{Access, Format};

use crate::common::{TestServer, admin_api as api, sync};

const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";
const LOCK: &str = "./Device/Vendor/MSFT/DMClient/Provider/Steward/ConfigLock/Lock";
const SECURE_CORE: &str = "./Device/Vendor/MSFT/DMClient/Provider/Steward/ConfigLock/SecureCore";

fn document(config_lock: bool) -> Value {
    json!({
        "kind": "profile", "name": "locked-camera", "platform": "windows",
        "settings": [{"loc_uri": CAMERA, "format": "int", "value": 0}],
        "config_lock": config_lock,
        "assign": {"all": true}
    })
}

async fn apply(t: &TestServer, documents: Value) -> Value {
    let (status, report) = api(
        t,
        Method::POST,
        "/api/v1/profiles/apply",
        Some(json!({ "documents": documents })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

async fn settings(t: &TestServer, e: &Enrollment) -> Value {
    let (status, v) = api(
        t,
        Method::GET,
        &format!("/api/v1/devices/{}/settings", e.device_id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

fn item<'a>(view: &'a Value, path: &str) -> Option<&'a Value> {
    view["items"].as_array().unwrap().iter().find(|i| i["path"] == path)
}

#[tokio::test]
async fn config_lock_is_set_on_secured_core_pcs_and_explained_elsewhere() {
    let t = TestServer::start().await;
    // A Windows 11 secured-core PC and a Windows 11 PC that is not one.
    let mut locked = t.managed_device(None).await;
    locked.profile.secured_core = true;
    locked.tree.seed(SECURE_CORE, Format::Bool, Access::GET, "true");
    let mut plain = t.managed_device(None).await;
    let (el, ep) = (t.enrollment_of(&locked).await, t.enrollment_of(&plain).await);
    // Their first sessions read the inventory, SecureCore with it.
    sync(&t, &mut locked).await;
    sync(&t, &mut plain).await;
    let secured = |facts: Vec<DeviceFact>| {
        facts
            .into_iter()
            .find(|f| f.name == facts::SECURED_CORE)
            .map(|f| f.value)
    };
    assert_eq!(
        secured(t.store().device_facts(el.id).await.unwrap()).as_deref(),
        Some("true")
    );
    assert_eq!(
        secured(t.store().device_facts(ep.id).await.unwrap()).as_deref(),
        Some("false")
    );

    let report = apply(&t, json!([document(true)])).await;
    assert_eq!(report["profiles"][0]["action"], "created", "{report}");
    let (_, shown) = api(&t, Method::GET, "/api/v1/profiles/locked-camera", None).await;
    assert_eq!(shown["versions"][0]["config_lock"], true, "{shown}");

    // The secured-core PC gets the camera setting and the lock, each acknowledged, then verified.
    for _ in 0..3 {
        sync(&t, &mut locked).await;
    }
    assert_eq!(locked.tree.value(CAMERA), Some("0"));
    assert_eq!(locked.tree.value(LOCK), Some("1"), "ConfigLock set");
    let view = settings(&t, &el).await;
    assert_eq!(view["config_lock"]["status"], "applied", "{view}");
    assert_eq!(view["config_lock"]["requested_by"], json!(["locked-camera"]));
    assert_eq!(view["config_lock"]["paths"], json!([LOCK]));
    let lock_row = item(&view, LOCK).unwrap_or_else(|| panic!("the lock is a row: {view}"));
    assert_eq!(lock_row["status"], "verified", "read back: {lock_row}");
    assert_eq!(lock_row["observed"], "1");
    assert_eq!(lock_row["profile"], "locked-camera");

    // The other PC gets the camera setting only, and its settings view says why not the lock.
    for _ in 0..2 {
        sync(&t, &mut plain).await;
    }
    assert_eq!(plain.tree.value(CAMERA), Some("0"));
    assert_eq!(plain.tree.value(LOCK), Some("0"), "never sent");
    let view = settings(&t, &ep).await;
    assert_eq!(view["config_lock"]["status"], "unsupported", "{view}");
    assert!(
        view["config_lock"]["reason"]
            .as_str()
            .unwrap()
            .contains("not a secured-core PC"),
        "{view}"
    );
    assert!(item(&view, LOCK).is_none());

    // Kept across export and apply: the export says config_lock, and applying it changes nothing.
    let (_, export) = api(&t, Method::GET, "/api/v1/profiles/export", None).await;
    let doc = export["documents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "locked-camera")
        .cloned()
        .unwrap();
    assert_eq!(doc["config_lock"], true, "{doc}");
    let again = apply(&t, json!([doc])).await;
    assert_eq!(again["profiles"][0]["action"], "unchanged", "{again}");

    // Turned off: a new version (the option is in the digest); the lock is set back to 0 by its
    // removal rule, and the device's settings no longer mention it.
    let off = apply(&t, json!([document(false)])).await;
    assert_eq!(off["profiles"][0]["action"], "updated", "{off}");
    assert_eq!(off["profiles"][0]["version_after"], 2, "{off}");
    for _ in 0..2 {
        sync(&t, &mut locked).await;
    }
    assert_eq!(locked.tree.value(LOCK), Some("0"), "unlocked by the removal rule");
    assert_eq!(locked.tree.value(CAMERA), Some("0"), "the camera setting stays");
    let view = settings(&t, &el).await;
    assert!(view.get("config_lock").is_none_or(Value::is_null), "{view}");
    assert!(item(&view, LOCK).is_none(), "{view}");
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}
