//! Dynamic groups over real mutual TLS: a group whose rule is `os.version >= 10.0.22000`, created
//! through the admin API, picks up a simulated device when the build it reports changes (the
//! inventory read a sync action queues), and a profile assigned to the group reaches the device
//! then and not before.

use http::{Method, StatusCode};
use serde_json::json;
use steward_core::configuration::{Assignment, Profile, ProfileId, ProfileVersion, ProfileWrite, Remediation};
use steward_core::*;
use steward_sim::ManagedDevice;
use steward_sim::csp::{Access, Format};
use steward_windows::WindowsAdapter;
use time::OffsetDateTime;

use crate::common::{TestServer, admin, admin_api as api, sync};

const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";
const SWV: &str = "./DevDetail/SwV";

/// The DeviceIDs the members endpoint lists for group `id`.
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

/// The device reports this build from now on (DevDetail/SwV, read by the inventory).
fn set_build(d: &mut ManagedDevice, version: &str) {
    d.tree.seed(SWV, Format::Chr, Access::GET, version);
    d.profile.os_version = version.to_owned();
}

async fn os_version(t: &TestServer, e: &Enrollment) -> Option<String> {
    t.store()
        .device_facts(e.id)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.name.as_str() == "os.version")
        .map(|f| f.value)
}

/// Version 1 of a camera-off profile assigned as given (settings validated by the adapter).
fn camera_off(assignment: Assignment) -> ProfileWrite {
    let settings = WindowsAdapter::default()
        .profile_settings(&[json!({"loc_uri": CAMERA, "format": "int", "value": 0})])
        .expect("valid settings");
    let now = OffsetDateTime::now_utc();
    let id = ProfileId::new();
    ProfileWrite {
        profile: Profile {
            id,
            name: "win11-camera-off".into(),
            platform: Platform::Windows,
            description: String::new(),
            priority: 100,
            remediation: Remediation::Remediate,
            current_version: 1,
            assignment,
            created_at: now,
            updated_at: now,
        },
        new_version: Some(ProfileVersion {
            profile_id: id,
            version: 1,
            digest: ProfileVersion::digest_of(&settings),
            config_lock: false,
            settings,
            created_at: now,
        }),
        expected_version: None,
    }
}

#[tokio::test]
async fn a_dynamic_group_picks_up_a_device_when_its_build_changes() {
    let t = TestServer::start().await;
    // A Windows 10 device: its first session reports the old build.
    let mut d = t.managed_device(None).await;
    set_build(&mut d, "10.0.19045.3803");
    let e = t.enrollment_of(&d).await;
    sync(&t, &mut d).await;
    assert_eq!(os_version(&t, &e).await.as_deref(), Some("10.0.19045.3803"));

    // A bad rule is refused with what is wrong, and nothing is created.
    let (status, problem) = api(
        &t,
        Method::POST,
        "/api/v1/groups",
        Some(json!({"name": "win11", "rule": {"all": [{"fact": "os.version", "op": ">=", "value": "eleven"}]}})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("not a version"),
        "{problem}"
    );
    assert!(t.store().group_by_name("win11").await.unwrap().is_none());

    // The dynamic group, through the API.
    let rule = json!({"all": [{"fact": "os.version", "op": ">=", "value": "10.0.22000"}]});
    let (status, created) = api(
        &t,
        Method::POST,
        "/api/v1/groups",
        Some(json!({"name": "win11", "rule": rule})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["rule"], rule);
    let gid = created["id"].as_str().unwrap().to_owned();
    let group: GroupId = gid.parse().unwrap();

    // Nobody moves a device into it.
    let (status, problem) = api(
        &t,
        Method::PUT,
        &format!("/api/v1/devices/{}/group", e.id),
        Some(json!({"group": "win11"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("dynamic"), "{problem}");

    // A profile for the group's devices: the old build is not a member and gets nothing.
    t.store()
        .write_profiles(&[camera_off(Assignment {
            groups: vec![group],
            ..Default::default()
        })])
        .await
        .unwrap();
    assert!(members(&t, &gid).await.is_empty());
    sync(&t, &mut d).await;
    assert_eq!(d.tree.value(CAMERA), None);
    assert!(t.store().device_configuration(e.id).await.unwrap().settings.is_empty());

    // The device is upgraded; a sync action reads its inventory, the new build is recorded, and
    // the change of a rule fact makes the device reconcile with its new membership.
    set_build(&mut d, "10.0.22631.2861");
    admin::queue_action(t.store(), &e, &Action::Sync).await.unwrap();
    sync(&t, &mut d).await;
    assert_eq!(os_version(&t, &e).await.as_deref(), Some("10.0.22631.2861"));
    assert_eq!(members(&t, &gid).await, vec![e.device_id.to_string()]);
    let (_, list) = api(&t, Method::GET, "/api/v1/groups", None).await;
    let listed = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == gid.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["active_devices"], 1, "{listed}");
    assert_eq!(listed["rule"], rule);
    // The profile reaches the device (in that session's later messages or the next session).
    if d.tree.value(CAMERA).is_none() {
        sync(&t, &mut d).await;
    }
    assert_eq!(d.tree.value(CAMERA), Some("0"));
    let rows = t.store().device_configuration(e.id).await.unwrap().settings;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].path, CAMERA);

    // Tightening the rule takes the device out again, and the setting's removal rule applies.
    let (status, _) = api(
        &t,
        Method::PUT,
        &format!("/api/v1/groups/{gid}/rule"),
        Some(json!({"rule": {"all": [{"fact": "os.version", "op": ">=", "value": "10.0.26100"}]}})),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(members(&t, &gid).await.is_empty());
    for _ in 0..2 {
        sync(&t, &mut d).await;
    }
    assert_eq!(d.tree.value(CAMERA), None, "removed once no longer a member");
    t.server.shutdown().await;
}
