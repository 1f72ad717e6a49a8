//! Configuration profiles over real mutual TLS: profiles written to the store (settings validated
//! by the Windows adapter, as every surface does), assigned to groups, and reconciled by the
//! simulator's sessions — delivery to exactly the assigned devices, read-back verification, local
//! drift detected and corrected (or only reported), removal rules, and the conflict winner.

use serde_json::{Value, json};
use steward_core::configuration::{
    Assignment, DeviceSetting, Profile, ProfileId, ProfileVersion, ProfileWrite, Remediation, SettingStatus,
};
use steward_core::store::VerifyTarget;
use steward_core::*;
use steward_sim::ManagedDevice;
use steward_sim::session::SessionTrigger;
use steward_windows::WindowsAdapter;
use time::OffsetDateTime;

use crate::common::TestServer;

const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";
const SCREEN_CAPTURE: &str = "./Device/Vendor/MSFT/Policy/Config/Experience/AllowScreenCapture";
const TELEMETRY: &str = "./Device/Vendor/MSFT/Policy/Config/System/AllowTelemetry";

/// A new profile's write: version 1 of `settings` (validated by the Windows adapter), assigned as
/// given.
fn new_profile(
    name: &str,
    priority: i32,
    remediation: Remediation,
    settings: Vec<Value>,
    assignment: Assignment,
) -> ProfileWrite {
    let settings = WindowsAdapter::default()
        .profile_settings(&settings)
        .expect("valid settings");
    let now = OffsetDateTime::now_utc();
    let id = ProfileId::new();
    ProfileWrite {
        profile: Profile {
            id,
            name: name.into(),
            platform: Platform::Windows,
            description: String::new(),
            priority,
            remediation,
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

/// The same profile with another assignment (no new version).
fn reassigned(w: &ProfileWrite, assignment: Assignment) -> ProfileWrite {
    let mut profile = w.profile.clone();
    profile.assignment = assignment;
    profile.updated_at = OffsetDateTime::now_utc();
    ProfileWrite {
        expected_version: Some(profile.current_version),
        profile,
        new_version: None,
    }
}

fn groups(ids: &[GroupId]) -> Assignment {
    Assignment {
        all: false,
        groups: ids.to_vec(),
        exclude_groups: vec![],
    }
}

fn everyone() -> Assignment {
    Assignment {
        all: true,
        ..Default::default()
    }
}

fn int(loc_uri: &str, value: i64) -> Value {
    json!({"loc_uri": loc_uri, "format": "int", "value": value})
}

async fn group(t: &TestServer, name: &str) -> GroupId {
    let g = Group::named(name, OffsetDateTime::now_utc()).unwrap();
    t.store().create_group(&g).await.unwrap();
    g.id
}

/// A simulated device enrolled and put in `group`.
async fn device_in(t: &TestServer, group: Option<GroupId>) -> (ManagedDevice, Enrollment) {
    let d = t.managed_device(None).await;
    let e = t.enrollment_of(&d).await;
    if group.is_some() {
        assert!(t.store().set_enrollment_group(e.id, group).await.unwrap());
    }
    (d, e)
}

async fn sync(t: &TestServer, d: &mut ManagedDevice) {
    let client = t.device_client(d);
    let report = d.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.ended, "the server ends the session");
}

async fn rows(t: &TestServer, e: &Enrollment) -> Vec<DeviceSetting> {
    t.store().device_configuration(e.id).await.unwrap().settings
}

async fn row(t: &TestServer, e: &Enrollment, path: &str) -> Option<DeviceSetting> {
    rows(t, e).await.into_iter().find(|r| r.path == path)
}

async fn events(t: &TestServer, e: &Enrollment, kind: EventKind) -> Vec<DeviceEvent> {
    t.store()
        .device_events_for(e.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|ev| ev.kind == kind)
        .collect()
}

#[tokio::test]
async fn a_group_profile_reaches_its_devices_is_verified_and_drift_is_corrected() {
    let t = TestServer::start().await;
    let eng = group(&t, "eng").await;
    let ops = group(&t, "ops").await;
    let (mut a, ea) = device_in(&t, Some(eng)).await;
    let (mut b, eb) = device_in(&t, Some(ops)).await;
    let (mut c, ec) = device_in(&t, None).await;
    let camera = new_profile(
        "camera-off",
        100,
        Remediation::Remediate,
        vec![int(CAMERA, 0)],
        groups(&[eng]),
    );
    t.store().write_profiles(std::slice::from_ref(&camera)).await.unwrap();

    for d in [&mut a, &mut b, &mut c] {
        sync(&t, d).await;
    }
    // Exactly the group's device got it; the others have nothing, on the device or in the store.
    assert_eq!(a.tree.value(CAMERA), Some("0"));
    assert_eq!(b.tree.value(CAMERA), None);
    assert_eq!(c.tree.value(CAMERA), None);
    assert!(rows(&t, &eb).await.is_empty() && rows(&t, &ec).await.is_empty());
    let r = row(&t, &ea, CAMERA).await.unwrap();
    assert_eq!(r.status, SettingStatus::Applied, "{r:?}");
    // No command rows for settings: only the inventory read is in the queue.
    assert!(
        t.store()
            .commands_for_enrollment(ea.id)
            .await
            .unwrap()
            .iter()
            .all(|c| c.origin == CommandOrigin::Inventory)
    );

    // The acknowledged setting is read back at the next check-in.
    sync(&t, &mut a).await;
    let r = row(&t, &ea, CAMERA).await.unwrap();
    assert_eq!(
        (r.status, r.observed.as_deref()),
        (SettingStatus::Verified, Some("0")),
        "{r:?}"
    );
    assert!(r.verified_at.is_some());

    // A local administrator turns the camera back on; a verification finds it and remediates.
    a.set_local(CAMERA, "1").unwrap();
    let covered = t
        .store()
        .request_verification(VerifyTarget::Enrollment(ea.id), OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(covered, 1);
    sync(&t, &mut a).await;
    let drifted = events(&t, &ea, EventKind::SettingDrifted).await;
    assert_eq!(drifted.len(), 1, "{drifted:?}");
    assert_eq!(drifted[0].data["path"], CAMERA);
    assert_eq!(drifted[0].data["observed"], "1");
    assert_eq!(drifted[0].data["remediation"], "remediate");
    // Corrected: the device holds the desired value again, and the next read-back verifies it.
    for _ in 0..2 {
        sync(&t, &mut a).await;
    }
    assert_eq!(a.tree.value(CAMERA), Some("0"));
    assert_eq!(row(&t, &ea, CAMERA).await.unwrap().status, SettingStatus::Verified);
    // b was never asked to verify anything.
    assert!(events(&t, &eb, EventKind::SettingDrifted).await.is_empty());

    // Unassigned: the removal rule (delete) takes the node away on the device.
    t.store()
        .write_profiles(&[reassigned(&camera, Assignment::default())])
        .await
        .unwrap();
    sync(&t, &mut a).await;
    assert_eq!(a.tree.value(CAMERA), None, "deleted on unassignment");
    assert!(row(&t, &ea, CAMERA).await.is_none());
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn report_only_drift_is_recorded_and_left_and_removal_can_replace() {
    let t = TestServer::start().await;
    let (mut d, e) = device_in(&t, None).await;
    let watch = new_profile(
        "watch-capture",
        100,
        Remediation::Report,
        vec![json!({"loc_uri": SCREEN_CAPTURE, "format": "int", "value": 0, "on_remove": "replace:1"})],
        everyone(),
    );
    t.store().write_profiles(std::slice::from_ref(&watch)).await.unwrap();
    sync(&t, &mut d).await; // applied
    sync(&t, &mut d).await; // verified
    assert_eq!(
        row(&t, &e, SCREEN_CAPTURE).await.unwrap().status,
        SettingStatus::Verified
    );

    // Deleted locally: the read-back gets 404, which is drift too; only reported.
    assert!(d.delete_local(SCREEN_CAPTURE));
    t.store()
        .request_verification(VerifyTarget::All, OffsetDateTime::now_utc())
        .await
        .unwrap();
    sync(&t, &mut d).await;
    let drifted = events(&t, &e, EventKind::SettingDrifted).await;
    assert_eq!(drifted.len(), 1, "{drifted:?}");
    assert_eq!(drifted[0].data["remediation"], "report");
    assert_eq!(drifted[0].data["observed"], Value::Null);
    let r = row(&t, &e, SCREEN_CAPTURE).await.unwrap();
    assert_eq!(r.status, SettingStatus::Drifted);
    for _ in 0..2 {
        sync(&t, &mut d).await;
    }
    assert_eq!(d.tree.value(SCREEN_CAPTURE), None, "report only: not corrected");
    assert_eq!(
        row(&t, &e, SCREEN_CAPTURE).await.unwrap().status,
        SettingStatus::Drifted
    );

    // Unassigned: the rule writes its value.
    t.store()
        .write_profiles(&[reassigned(&watch, Assignment::default())])
        .await
        .unwrap();
    sync(&t, &mut d).await;
    assert_eq!(d.tree.value(SCREEN_CAPTURE), Some("1"), "replace:1 on removal");
    assert!(row(&t, &e, SCREEN_CAPTURE).await.is_none());
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn conflicting_profiles_give_the_device_the_winners_value() {
    let t = TestServer::start().await;
    let eng = group(&t, "eng").await;
    let (mut d, e) = device_in(&t, Some(eng)).await;
    // Both apply to the device; the lower priority number wins whatever the write order.
    let strict = new_profile(
        "strict",
        10,
        Remediation::Remediate,
        vec![int(TELEMETRY, 0)],
        everyone(),
    );
    let loose = new_profile(
        "loose",
        50,
        Remediation::Remediate,
        vec![int(TELEMETRY, 3)],
        groups(&[eng]),
    );
    t.store().write_profiles(&[loose, strict.clone()]).await.unwrap();
    sync(&t, &mut d).await;
    assert_eq!(d.tree.value(TELEMETRY), Some("0"));
    let r = row(&t, &e, TELEMETRY).await.unwrap();
    assert_eq!(r.profile_id, strict.profile.id);
    // The winner unassigned: the other profile's value takes over.
    t.store()
        .write_profiles(&[reassigned(&strict, Assignment::default())])
        .await
        .unwrap();
    sync(&t, &mut d).await;
    assert_eq!(d.tree.value(TELEMETRY), Some("3"));
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn raw_groups_and_user_scoped_settings() {
    let t = TestServer::start().await;
    let (mut d, e) = device_in(&t, None).await;
    d.login_status = steward_sim::session::LoginStatus::None;
    let replace = |cmd_id: u32, uri: &str, value: &str| {
        format!(
            "<Replace><CmdID>{cmd_id}</CmdID><Item><Target><LocURI>{uri}</LocURI></Target>\
             <Meta><Format xmlns=\"syncml:metinf\">int</Format></Meta><Data>{value}</Data></Item></Replace>"
        )
    };
    const HIDE_SLEEP: &str = "./User/Vendor/MSFT/Policy/Config/Start/HideSleep";
    const NOWHERE: &str = "./Device/Vendor/MSFT/NoSuchCsp/Node";
    let both = format!("{}{}", replace(1, CAMERA, "0"), replace(2, SCREEN_CAPTURE, "0"));
    let half = format!("{}{}", replace(1, TELEMETRY, "1"), replace(2, NOWHERE, "1"));
    let p = new_profile(
        "raw",
        100,
        Remediation::Remediate,
        vec![
            json!({"name": "two-policies", "syncml": both}),
            json!({"name": "half-bad", "syncml": half}),
            int(HIDE_SLEEP, 1),
        ],
        everyone(),
    );
    t.store().write_profiles(&[p]).await.unwrap();
    sync(&t, &mut d).await;
    // Both commands of the group landed, answered under one operation.
    assert_eq!(
        (d.tree.value(CAMERA), d.tree.value(SCREEN_CAPTURE)),
        (Some("0"), Some("0"))
    );
    let group = row(&t, &e, "syncml:two-policies").await.unwrap();
    assert_eq!(group.status, SettingStatus::Applied, "{group:?}");
    // A group counts as applied only if every command did: its second command was refused.
    let half = row(&t, &e, "syncml:half-bad").await.unwrap();
    assert_eq!(
        (half.status, half.status_code),
        (SettingStatus::Failed, Some(404)),
        "{half:?}"
    );
    assert_eq!(events(&t, &e, EventKind::SettingFailed).await.len(), 1);
    // The user-scoped setting waits for the user, with the reason on its row.
    assert_eq!(d.tree.value(HIDE_SLEEP), None);
    let user = row(&t, &e, HIDE_SLEEP).await.unwrap();
    assert_eq!(
        (user.status, user.reason.as_str()),
        (SettingStatus::Pending, "waiting for a user to sign in")
    );
    d.login_status = steward_sim::session::LoginStatus::User;
    sync(&t, &mut d).await;
    assert_eq!(d.tree.value(HIDE_SLEEP), Some("1"));
    assert_eq!(row(&t, &e, HIDE_SLEEP).await.unwrap().status, SettingStatus::Applied);
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}
