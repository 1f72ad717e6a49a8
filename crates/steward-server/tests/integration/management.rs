//! Management over real mutual TLS: the simulator enrolls, then runs OMA-DM sessions like Windows.

use crate::common::admin;
use steward_core::*;
use steward_sim::session::{SessionError, SessionOptions, SessionTrigger};
use steward_windows::{CommandItem, OmaDmCommand as CommandPayload, Verb};
use steward_windows_proto::syncml;

use crate::common::TestServer;

fn replace(target: &str, value: &str) -> CommandPayload {
    CommandPayload::single(
        Verb::Replace,
        CommandItem {
            target: target.into(),
            format: Some("int".into()),
            type_: None,
            data: Some(value.into()),
        },
    )
}

fn get(target: &str) -> CommandPayload {
    CommandPayload::single(
        Verb::Get,
        CommandItem {
            target: target.into(),
            format: None,
            type_: None,
            data: None,
        },
    )
}

const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";

#[tokio::test]
async fn first_session_reports_inventory() {
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    let report = device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.ended, "server ended the session");
    assert!(
        report.received.iter().any(|c| c.name == "Get" && c.status == 200),
        "{:?}",
        report.received
    );

    let e = t.enrollment_of(&device).await;
    assert!(e.last_seen_at.is_some());
    let facts: std::collections::HashMap<String, String> = t
        .store()
        .device_facts(e.id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.name.to_string(), f.value))
        .collect();
    let p = &device.profile;
    assert_eq!(facts.get("os.version"), Some(&p.os_version));
    assert_eq!(facts.get("hardware.serial_number"), Some(&p.serial_number));
    assert_eq!(facts.get("hardware.manufacturer"), Some(&p.manufacturer));
    assert_eq!(facts.get("hardware.ram_mb"), Some(&p.total_ram_mb.to_string()));
    assert!(facts.contains_key("security.tpm_version"));
    assert!(facts.contains_key("inventory.collected_at"));
    let inv = t.store().commands_for_enrollment(e.id).await.unwrap();
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].state, CommandState::Succeeded);

    // The next session within the interval asks for nothing: a bare status ends it at once.
    let report = device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.ended && report.received.is_empty(), "{:?}", report.received);
    assert_eq!(t.store().commands_for_enrollment(e.id).await.unwrap().len(), 1);
    // Raw messages are kept for audit.
    assert!(t.store().device_messages(e.id).await.unwrap().len() >= 3);
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn admin_commands_reach_only_their_device_and_are_recorded_once() {
    let t = TestServer::start().await;
    let mut a = t.managed_device(None).await;
    let mut b = t.managed_device(None).await;
    let (ca, cb) = (t.device_client(&a), t.device_client(&b));
    let ea = t.enrollment_of(&a).await;
    let store = t.store();
    let set = admin::queue_command(store, &ea, replace(CAMERA, "0"), "admin", 0, None)
        .await
        .unwrap();
    let read = admin::queue_command(store, &ea, get("./DevDetail/SwV"), "admin", 0, None)
        .await
        .unwrap();
    let reboot = admin::queue_action(store, &ea, &Action::Reboot).await.unwrap();

    // B checks in first and gets none of A's commands.
    let rb = b.run_session(&cb, SessionTrigger::Scheduled).await.unwrap();
    assert!(
        rb.received.iter().all(|c| c.target.as_deref() != Some(CAMERA)),
        "{:?}",
        rb.received
    );
    assert_eq!(b.reboot_count, 0);
    assert_eq!(store.command(set).await.unwrap().unwrap().state, CommandState::Pending);

    let ra = a.run_session(&ca, SessionTrigger::Scheduled).await.unwrap();
    assert!(ra.ended);
    assert_eq!(a.tree.value(CAMERA), Some("0"));
    assert_eq!(a.reboot_count, 1);
    for id in [set, read, reboot] {
        let c = store.command(id).await.unwrap().unwrap();
        assert_eq!(
            (c.state, c.status_code, c.send_count),
            (CommandState::Succeeded, Some(200), 1),
            "{id}"
        );
    }
    let result = store.command_result(read).await.unwrap().unwrap();
    assert_eq!(result.results[0].data.as_deref(), Some(a.profile.os_version.as_str()));

    // Nothing is sent twice.
    let again = a.run_session(&ca, SessionTrigger::Scheduled).await.unwrap();
    assert!(again.received.is_empty(), "{:?}", again.received);
    assert_eq!(a.reboot_count, 1);

    // A failing command is recorded as failed with the device's code; Add of an existing node is
    // retried as Replace.
    let bad = admin::queue_command(store, &ea, get("./Vendor/MSFT/NoSuchCsp/Node"), "admin", 0, None)
        .await
        .unwrap();
    let add = CommandPayload {
        verb: Verb::Add,
        ..replace(CAMERA, "1")
    };
    let add = admin::queue_command(store, &ea, add, "admin", 0, None).await.unwrap();
    a.run_session(&ca, SessionTrigger::Scheduled).await.unwrap();
    let bad = store.command(bad).await.unwrap().unwrap();
    assert_eq!((bad.state, bad.status_code), (CommandState::Failed, Some(404)));
    let add = store.command(add).await.unwrap().unwrap();
    assert_eq!(
        (
            add.state,
            add.status_code,
            CommandPayload::from_payload(&add.payload).unwrap().verb
        ),
        (CommandState::Succeeded, Some(200), Verb::Replace)
    );
    assert_eq!(a.tree.value(CAMERA), Some("1"));

    // Cancelled commands are not sent.
    let cancelled = admin::queue_command(store, &ea, replace(CAMERA, "2"), "admin", 0, None)
        .await
        .unwrap();
    assert!(
        store
            .cancel_command(cancelled, ::time::OffsetDateTime::now_utc())
            .await
            .unwrap()
    );
    a.run_session(&ca, SessionTrigger::Scheduled).await.unwrap();
    assert_eq!(a.tree.value(CAMERA), Some("1"));
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn wipe_revokes_the_certificate_and_later_sessions_are_refused() {
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    let e = t.enrollment_of(&device).await;
    admin::queue_action(t.store(), &e, &Action::Wipe(WipeKind::Protected))
        .await
        .unwrap();
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(
        device
            .wiped
            .as_ref()
            .is_some_and(|(v, _)| v.contains("doWipeProtected")),
        "{:?}",
        device.wiped
    );

    let after = t.store().enrollment_by_id(e.id).await.unwrap().unwrap();
    assert_eq!(after.state, EnrollmentState::Wiped);
    let kinds: Vec<EventKind> = t
        .store()
        .device_events_for(e.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.first(), Some(&EventKind::Enrolled));
    assert!(
        kinds.contains(&EventKind::CommandAcknowledged) && kinds.last() == Some(&EventKind::Wiped),
        "{kinds:?}"
    );
    let log = t.store().issuance_log().await.unwrap();
    assert!(
        log.iter()
            .any(|l| l.event == IssuanceEvent::Revoked && l.serial == e.cert_serial)
    );

    // The same certificate opening another session is refused.
    device.wiped = None;
    let err = device
        .run_session(&client, SessionTrigger::Scheduled)
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::HttpStatus { status: 403, .. }), "{err:?}");
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn real_captured_sessions_are_answered() {
    let t = TestServer::start().await;
    // A simulated device with the capture's DeviceID, so the captured messages come from "its" certificate.
    let device = t.managed_device(Some("B5B954E81FBCB94EB79BD08BE625F4EE")).await;
    let client = t.device_client(&device);
    let url = t.url("/ManagementServer/MDM.svc?mode=Maintenance&Platform=WoA");
    let fixture = |name: &str| {
        std::fs::read_to_string(format!(
            "{}/../../../shared/fixtures/windows/win10-19043-fleet-poc/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let resp = client
        .post(
            &url,
            "application/vnd.syncml.dm+xml",
            fixture("04-session1-msg1.request.xml"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.headers.get("content-type").unwrap(),
        "application/vnd.syncml.dm+xml"
    );
    let answer = syncml::parse(&resp.text()).unwrap();
    assert_eq!(answer.header.session_id, "1");
    assert_eq!(answer.header.msg_id, 1);
    let syncml::Command::Status(first) = &answer.body.commands[0] else {
        panic!("Status first")
    };
    assert_eq!(
        (first.cmd_ref.as_str(), first.cmd.as_str(), first.data.as_str()),
        ("0", "SyncHdr", "200")
    );
    let statuses: Vec<(&str, &str)> = answer.body.commands[1..4]
        .iter()
        .map(|c| match c {
            syncml::Command::Status(s) => (s.cmd_ref.as_str(), s.cmd.as_str()),
            other => panic!("{}", other.name()),
        })
        .collect();
    assert_eq!(statuses, vec![("2", "Alert"), ("3", "Alert"), ("4", "Replace")]);
    assert!(
        answer.body.commands.iter().any(|c| c.name() == "Get"),
        "first session asks for inventory"
    );
    assert!(answer.body.final_);

    let e = t.enrollment_of(&device).await;
    let resp = client
        .post(
            &url,
            "application/vnd.syncml.dm+xml",
            fixture("05-session2-unenroll.request.xml"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let after = t.store().enrollment_by_id(e.id).await.unwrap().unwrap();
    assert_eq!(after.state, EnrollmentState::Unenrolled);
    assert!(
        t.store()
            .deliverable_commands(e.id, ::time::OffsetDateTime::now_utc())
            .await
            .unwrap()
            .is_empty()
    );
    let resp = client
        .post(
            &url,
            "application/vnd.syncml.dm+xml",
            fixture("04-session1-msg1.request.xml"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 403);
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn simulated_unenroll_and_msi_completion() {
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    let e = t.enrollment_of(&device).await;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();

    // MSI install: Add the product node, Add DownloadInstall, Exec (202 accepted); completion comes as
    // Alert 1224 in the next session (EnterpriseDesktopAppManagement CSP "Alert example").
    let msi = "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7BAAAA-BBBB%7D";
    let node = CommandPayload::single(
        Verb::Add,
        CommandItem {
            target: msi.into(),
            format: Some("node".into()),
            type_: None,
            data: None,
        },
    );
    admin::queue_command(t.store(), &e, node, "admin", 0, None)
        .await
        .unwrap();
    let job = "<MsiInstallJob id=\"{AAAA-BBBB}\"><Product Version=\"1.0\"/></MsiInstallJob>";
    let add = CommandPayload::single(
        Verb::Add,
        CommandItem {
            target: format!("{msi}/DownloadInstall"),
            format: Some("chr".into()),
            type_: None,
            data: Some(String::new()),
        },
    );
    admin::queue_command(t.store(), &e, add, "admin", 0, None)
        .await
        .unwrap();
    let exec = CommandPayload::single(
        Verb::Exec,
        CommandItem {
            target: format!("{msi}/DownloadInstall"),
            format: Some("xml".into()),
            type_: Some("text/plain".into()),
            data: Some(job.into()),
        },
    );
    let exec = admin::queue_command(t.store(), &e, exec, "admin", 0, None)
        .await
        .unwrap();
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    let c = t.store().command(exec).await.unwrap().unwrap();
    assert_eq!((c.state, c.status_code), (CommandState::Accepted, Some(202)));
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    let c = t.store().command(exec).await.unwrap().unwrap();
    assert_eq!(c.state, CommandState::Succeeded, "completed by the 1224 alert");

    device.request_unenroll();
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert_eq!(
        t.store().enrollment_by_id(e.id).await.unwrap().unwrap().state,
        EnrollmentState::Unenrolled
    );
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn lost_status_after_a_restart_is_resent_and_recorded_once() {
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    let e = t.enrollment_of(&device).await;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap(); // inventory out of the way
    let id = admin::queue_command(t.store(), &e, replace(CAMERA, "0"), "admin", 0, None)
        .await
        .unwrap();

    // The server sends the command, then dies before the device's Status arrives.
    let msg1 = device.start_session(SessionTrigger::Scheduled).unwrap();
    let resp = client
        .post(
            &device.session_url(),
            "application/vnd.syncml.dm+xml",
            syncml::write(&msg1),
        )
        .await
        .unwrap();
    let answer = syncml::parse_bytes(&resp.body).unwrap();
    assert!(answer.body.commands.iter().any(|c| c.cmd_id() == id.wire_id()));
    let _statuses_never_delivered = device.respond(&answer).unwrap();
    let _ = device.end_session();
    let t = t.restart().await;
    let c = t.store().command(id).await.unwrap().unwrap();
    assert_eq!((c.state, c.send_count), (CommandState::Sent, 1));

    // Next session: sent again, recorded once.
    let client = t.device_client(&device);
    let report = device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(
        report.received.iter().any(|r| r.cmd_id == id.wire_id()),
        "{:?}",
        report.received
    );
    let c = t.store().command(id).await.unwrap().unwrap();
    assert_eq!(
        (c.state, c.send_count, c.status_code),
        (CommandState::Succeeded, 2, Some(200))
    );
    assert!(t.store().command_result(id).await.unwrap().is_some());

    // A duplicated POST of the same message is answered identically and records nothing twice.
    let id2 = admin::queue_command(t.store(), &e, get("./DevDetail/SwV"), "admin", 0, None)
        .await
        .unwrap();
    let opts = SessionOptions {
        duplicate_post: Some(2),
        ..Default::default()
    };
    let report = device
        .run_session_with(&client, SessionTrigger::Scheduled, &opts)
        .await
        .unwrap();
    assert!(report.ended);
    let c = t.store().command(id2).await.unwrap().unwrap();
    assert_eq!((c.state, c.send_count), (CommandState::Succeeded, 1));

    // A reply lost after the device sent its statuses: the statuses count, nothing is resent.
    let id3 = admin::queue_command(t.store(), &e, replace(CAMERA, "1"), "admin", 0, None)
        .await
        .unwrap();
    let opts = SessionOptions {
        drop_response_after_send: Some(2),
        ..Default::default()
    };
    let report = device
        .run_session_with(&client, SessionTrigger::Scheduled, &opts)
        .await
        .unwrap();
    assert!(report.response_lost);
    assert_eq!(
        t.store().command(id3).await.unwrap().unwrap().state,
        CommandState::Succeeded
    );
    let report = device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.received.is_empty());
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn hostile_management_requests_are_refused_and_harm_no_one() {
    let t = TestServer::start().await;
    let mut a = t.managed_device(None).await;
    let mut b = t.managed_device(None).await;
    let (ca, cb) = (t.device_client(&a), t.device_client(&b));
    let eb = t.enrollment_of(&b).await;
    a.run_session(&ca, SessionTrigger::Scheduled).await.unwrap();
    b.run_session(&cb, SessionTrigger::Scheduled).await.unwrap();
    let b_cmd = admin::queue_command(t.store(), &eb, replace(CAMERA, "0"), "admin", 0, None)
        .await
        .unwrap();
    let url = a.session_url();
    const SYNCML: &str = "application/vnd.syncml.dm+xml";

    // A presents B's DeviceID as its Source: refused, and B's command is untouched.
    let mut spoof = a.start_session(SessionTrigger::Scheduled).unwrap();
    let _ = a.end_session();
    spoof.header.source = Some(syncml::LocTarget::new(b.profile.device_id.clone()));
    let resp = ca.post(&url, SYNCML, syncml::write(&spoof)).await.unwrap();
    assert_eq!(resp.status, 403);
    assert!(!resp.text().contains(CAMERA));

    // No client certificate at all.
    let anonymous = t.client();
    let resp = anonymous.post(&url, SYNCML, syncml::write(&spoof)).await.unwrap();
    assert_eq!(resp.status, 401);

    // A certificate from another CA fails the TLS handshake.
    let other_root = steward_pki::generate_root_ca("Other Root", "Other", ::time::Duration::days(30)).unwrap();
    let other_ca =
        steward_pki::generate_issuing_ca(&other_root, "Other Issuing", "Other", ::time::Duration::days(30)).unwrap();
    let key = steward_pki::DeviceKey::generate_rsa(2048).unwrap();
    let now = ::time::OffsetDateTime::now_utc();
    let forged = steward_pki::issue_device_certificate(
        &other_ca,
        &key.spki_der(),
        &steward_pki::DeviceCertParams {
            serial: [7; 16],
            common_name: a.profile.device_id.clone(),
            organizational_unit: None,
            not_before: now - ::time::Duration::minutes(1),
            not_after: now + ::time::Duration::days(1),
        },
    )
    .unwrap();
    let forger = steward_sim::HttpsClient::new(
        std::slice::from_ref(&t.root_der),
        Some((
            vec![forged.der.clone(), other_ca.cert_der().to_vec()],
            key.pkcs8_der().to_vec(),
        )),
    )
    .unwrap();
    assert!(
        forger.post(&url, SYNCML, syncml::write(&spoof)).await.is_err(),
        "TLS layer refuses a foreign CA"
    );

    // 10 MB of Data: refused by size before parsing.
    let mut big = a.start_session(SessionTrigger::Scheduled).unwrap();
    let _ = a.end_session();
    if let Some(syncml::Command::Replace(r)) = big.body.commands.iter_mut().find(|c| c.name() == "Replace") {
        r.items[0].data = Some(syncml::ItemData::Text("A".repeat(10 * 1024 * 1024)));
    }
    let resp = ca.post(&url, SYNCML, syncml::write(&big)).await.unwrap();
    assert_eq!(resp.status, 413);
    // Deep nesting, invalid UTF-8, a DTD: malformed.
    let deep = format!(
        "<SyncML xmlns=\"SYNCML:SYNCML1.2\">{}{}</SyncML>",
        "<Atomic>".repeat(100),
        "</Atomic>".repeat(100)
    );
    assert_eq!(ca.post(&url, SYNCML, deep).await.unwrap().status, 400);
    let mut invalid = syncml::write(&spoof).into_bytes();
    invalid.extend_from_slice(&[0xff, 0xfe, 0xfd]);
    assert_eq!(ca.post(&url, SYNCML, invalid).await.unwrap().status, 400);
    let dtd = "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e \"e\">]><SyncML xmlns=\"SYNCML:SYNCML1.2\">&e;</SyncML>";
    assert_eq!(ca.post(&url, SYNCML, dtd).await.unwrap().status, 400);

    // B is unaffected: its command is delivered at its next session.
    let report = b.run_session(&cb, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.received.iter().any(|r| r.cmd_id == b_cmd.wire_id()));
    assert_eq!(
        t.store().command(b_cmd).await.unwrap().unwrap().state,
        CommandState::Succeeded
    );
    // And A still works.
    a.run_session(&ca, SessionTrigger::Scheduled).await.unwrap();
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn robo_renewal_swaps_the_certificate() {
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let old_client = t.device_client(&device);
    let e = t.enrollment_of(&device).await;
    device
        .run_session(&old_client, SessionTrigger::Scheduled)
        .await
        .unwrap();

    // Renewal RST: PKCS#7 signed with the current key, over mTLS with the current certificate.
    let identity = device.identity.as_ref().unwrap();
    let new_key = steward_pki::DeviceKey::generate_rsa(2048).unwrap();
    let pkcs7 = steward_pki::build_renewal_request(
        &new_key,
        &format!("X!{}\0", device.profile.device_id),
        &device.profile.device_id,
        &identity.cert_der,
        &identity.key,
        true,
    )
    .unwrap();
    use base64::Engine;
    let url = t.url("/EnrollmentServer/Enrollment.svc");
    let rst = steward_windows_proto::mde2::write_rst_renew_request(
        "urn:uuid:renew-1",
        &url,
        None,
        &base64::engine::general_purpose::STANDARD.encode(&pkcs7),
        &[],
    );
    let resp = old_client
        .post(&url, "application/soap+xml; charset=utf-8", rst.clone())
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let doc = steward_windows_proto::mde2::parse_provisioning_doc(
        &steward_windows_proto::mde2::parse_rstr(&resp.text()).unwrap(),
    )
    .unwrap();
    let new_cert = doc.client_certificate_der().unwrap();
    assert!(doc.management_url().is_none(), "renewal carries only the certificate");
    // Shaped like Learn's "Certificate renewal response" example (interop review M-7): the
    // account's PROVIDER-ID, and PrivateKeyContainer inside the thumbprint characteristic.
    assert_eq!(doc.get("APPLICATION/PROVIDER-ID"), Some("Steward"));
    let thumb = steward_pki::sha1_thumbprint(&new_cert);
    assert!(
        doc.characteristics
            .iter()
            .any(|(p, _)| *p == format!("CertificateStore/My/User/{thumb}/PrivateKeyContainer")),
        "{:?}",
        doc.characteristics
    );
    // Same subject as at enrollment: exactly CN=<DeviceID> (M-1), so the search criteria still match.
    assert_eq!(
        steward_pki::subject_attributes(&new_cert).unwrap(),
        vec![("CN".to_owned(), device.profile.device_id.clone())]
    );
    let renewed = t.store().enrollment_by_id(e.id).await.unwrap().unwrap();
    assert_eq!(
        renewed.cert_thumbprint.as_str(),
        steward_pki::sha1_thumbprint(&new_cert)
    );

    // The old certificate still works until the new one is used...
    device
        .run_session(&old_client, SessionTrigger::Scheduled)
        .await
        .unwrap();
    let new_client = steward_sim::HttpsClient::new(
        std::slice::from_ref(&t.root_der),
        Some((vec![new_cert.clone()], new_key.pkcs8_der().to_vec())),
    )
    .unwrap();
    device
        .run_session(&new_client, SessionTrigger::Scheduled)
        .await
        .unwrap();
    // ...then it is revoked.
    let err = device
        .run_session(&old_client, SessionTrigger::Scheduled)
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::HttpStatus { status: 403, .. }), "{err:?}");
    let log = t.store().issuance_log().await.unwrap();
    assert!(
        log.iter()
            .any(|l| l.event == IssuanceEvent::Revoked && l.serial == e.cert_serial)
    );

    // A renewal signed by one certificate over TLS with another is refused.
    let other = t.managed_device(None).await;
    let other_client = t.device_client(&other);
    let resp = other_client
        .post(&url, "application/soap+xml; charset=utf-8", rst)
        .await
        .unwrap();
    assert!(
        steward_windows_proto::mde2::parse_fault(&resp.text())
            .unwrap()
            .0
            .contains("Authentication")
    );
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn md5_digest_sessions_for_clients_without_certificates() {
    let t = TestServer::start_with(|c| c.management.md5_auth = true).await;
    let mut device = t.managed_device(None).await;
    assert!(
        device.md5.is_some(),
        "credentials provisioned in the w7 APPAUTH CLIENT block"
    );
    let e = t.enrollment_of(&device).await;
    let stored = t
        .store()
        .checkin_context(EnrollmentKey::Id(e.id), &[], time::OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap()
        .session_credential
        .unwrap();
    assert!(
        !stored.contains(&device.md5.as_ref().unwrap().secret),
        "only the digest key is stored"
    );

    // No TLS client certificate and no Cred: a SyncHdr 407 challenge with a nonce, nothing else.
    let no_cert = t.client();
    let probe = device.start_session(SessionTrigger::Scheduled).unwrap();
    let _ = device.end_session();
    let resp = no_cert
        .post(
            &device.session_url(),
            "application/vnd.syncml.dm+xml",
            syncml::write(&probe),
        )
        .await
        .unwrap();
    let challenge = syncml::parse(&resp.text()).unwrap();
    assert_eq!(challenge.body.commands.len(), 1);
    let syncml::Command::Status(st) = &challenge.body.commands[0] else {
        panic!("status")
    };
    assert_eq!(st.data, "407");
    let chal = st.chal.as_ref().unwrap();
    assert_eq!(chal.type_.as_deref(), Some("syncml:auth-md5"));
    assert!(chal.next_nonce.is_some());

    // The device answers the challenge with Cred and is managed (SyncHdr 212).
    let report = device.run_session(&no_cert, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.ended && report.messages >= 2, "{report:?}");
    assert!(
        report.received.iter().any(|c| c.name == "Get"),
        "inventory over an MD5 session"
    );
    let id = admin::queue_command(t.store(), &e, replace(CAMERA, "0"), "admin", 0, None)
        .await
        .unwrap();
    device.run_session(&no_cert, SessionTrigger::Scheduled).await.unwrap();
    assert_eq!(
        t.store().command(id).await.unwrap().unwrap().state,
        CommandState::Succeeded
    );

    // A wrong secret is refused after the challenge.
    device.md5.as_mut().unwrap().secret = "wrong".into();
    let err = device
        .run_session(&no_cert, SessionTrigger::Scheduled)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SessionError::AuthFailed { .. } | SessionError::AuthRequired { .. }),
        "{err:?}"
    );
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn client_certificate_forwarded_by_a_trusted_proxy() {
    const SYNCML: &str = "application/vnd.syncml.dm+xml";
    use base64::Engine;
    for trusted in [true, false] {
        let t = TestServer::start_with(|c| {
            if trusted {
                c.management.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            }
        })
        .await;
        let mut device = t.managed_device(None).await;
        let cert = base64::engine::general_purpose::STANDARD.encode(&device.identity.as_ref().unwrap().cert_der);
        let msg = device.start_session(SessionTrigger::Scheduled).unwrap();
        let _ = device.end_session();
        let resp = t
            .client()
            .request(
                http::Method::POST,
                &device.session_url(),
                &[("content-type", SYNCML), ("x-client-cert", &cert)],
                syncml::write(&msg).into(),
            )
            .await
            .unwrap();
        if trusted {
            assert_eq!(resp.status, 200, "{}", resp.text());
            assert!(syncml::parse(&resp.text()).is_ok());
        } else {
            assert_eq!(resp.status, 401, "the header is ignored from untrusted peers");
        }
        t.server.shutdown().await;
    }
}

#[tokio::test]
async fn user_scoped_commands_wait_for_sign_in_with_fast_polling() {
    use steward_sim::session::LoginStatus;
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    let e = t.enrollment_of(&device).await;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    const USER_POLICY: &str = "./User/Vendor/MSFT/Policy/Config/Start/HideSleep";
    const POLL: &str = "./Vendor/MSFT/DMClient/Provider/Steward/Poll/IntervalForRemainingScheduledRetries";
    let id = admin::queue_command(t.store(), &e, replace(USER_POLICY, "1"), "admin", 0, None)
        .await
        .unwrap();

    // Nobody signed in: the command waits and the device is told to poll every 3 minutes.
    device.login_status = LoginStatus::None;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert_eq!(
        t.store().command(id).await.unwrap().unwrap().state,
        CommandState::Pending
    );
    assert_eq!(device.tree.value(POLL), Some("3"));

    // A user signs in: the command is delivered, and polling returns to the steady 60 minutes.
    device.login_status = LoginStatus::User;
    device.tree.set_user_session(true);
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert_eq!(
        t.store().command(id).await.unwrap().unwrap().state,
        CommandState::Succeeded
    );
    assert_eq!(device.tree.value(POLL), Some("60"));
    let facts = t.store().device_facts(e.id).await.unwrap();
    assert!(
        facts
            .iter()
            .any(|f| f.name.as_str() == "mdm.poll_interval_minutes" && f.value == "60")
    );
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

/// Built-in catalog entries, rendered with their example parameters, queued like admin commands
/// and delivered to a simulated device over mutual TLS: every Policy CSP setting of a baseline area
/// and an update ring is answered 200 and reads back with the recommended value; the MSI kind's
/// product node and DownloadInstall are added, its Exec accepted (202) and completed by the 1226
/// alert of the next session.
#[tokio::test]
async fn catalog_entries_apply_to_a_simulated_device() {
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    let e = t.enrollment_of(&device).await;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();

    let catalog = steward_windows::catalog::builtin().unwrap();
    let entry = |name: &str| catalog.iter().find(|p| p.name == name).unwrap();
    let mut policies = Vec::new();
    for name in [
        "baseline-defender-antivirus",
        "baseline-device-lock",
        "update-ring-pilot",
    ] {
        let p = entry(name);
        for (setting, command) in p
            .settings
            .iter()
            .zip(steward_windows::catalog::render(p, &p.example_parameters()).unwrap())
        {
            let id = admin::queue_command(t.store(), &e, command, "admin", 0, None)
                .await
                .unwrap();
            policies.push((id, setting.loc_uri.clone(), setting.value.clone()));
        }
    }
    let msi = entry("kind-msi-app");
    let mut msi_ids = Vec::new();
    for command in steward_windows::catalog::render(msi, &msi.example_parameters()).unwrap() {
        msi_ids.push(
            admin::queue_command(t.store(), &e, command, "admin", 0, None)
                .await
                .unwrap(),
        );
    }
    // Large batches go out over several messages of one session.
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    for (id, uri, _) in &policies {
        let c = t.store().command(*id).await.unwrap().unwrap();
        assert_eq!((c.state, c.status_code), (CommandState::Succeeded, Some(200)), "{uri}");
    }
    let states: Vec<(CommandState, Option<u16>)> = {
        let mut v = Vec::new();
        for id in &msi_ids {
            let c = t.store().command(*id).await.unwrap().unwrap();
            v.push((c.state, c.status_code));
        }
        v
    };
    assert_eq!(
        states,
        [
            (CommandState::Succeeded, Some(200)),
            (CommandState::Succeeded, Some(200)),
            (CommandState::Accepted, Some(202)),
        ]
    );

    // The device holds the recommended values.
    let mut reads = Vec::new();
    for (_, uri, _) in &policies {
        reads.push(
            admin::queue_command(t.store(), &e, get(uri), "admin", 0, None)
                .await
                .unwrap(),
        );
    }
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    for (read, (_, uri, value)) in reads.iter().zip(&policies) {
        assert_eq!(device.tree.value(uri), Some(value.as_str()), "{uri}");
        let c = t.store().command(*read).await.unwrap().unwrap();
        assert_eq!(c.state, CommandState::Succeeded, "{uri}");
        let result = t.store().command_result(*read).await.unwrap().unwrap();
        assert_eq!(result.results[0].data.as_deref(), Some(value.as_str()), "{uri}");
    }
    let exec = t.store().command(msi_ids[2]).await.unwrap().unwrap();
    assert_eq!(exec.state, CommandState::Succeeded, "completed by the 1226 alert");
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}
