//! Management sessions as Windows plays them (interop review M-2, M-4..M-6, M-8..M-11), over real
//! mutual TLS, with the simulator following the OMA-DM and MS-MDE2 rules it cites; and both TLS
//! stacks: Windows 10 (TLS 1.2 only) and Windows 11 (TLS 1.3).

use std::time::Duration;

use crate::common::{TestServer, admin};
use steward_core::*;
use steward_sim::csp::{Access, Format};
use steward_sim::session::{LoginStatus, SessionTrigger};
use steward_sim::{HttpsClient, TlsProfile};
use steward_windows::{CommandItem, OmaDmCommand, Verb};
use steward_windows_proto::syncml;

fn item(target: &str, format: Option<&str>, data: Option<&str>) -> CommandItem {
    CommandItem {
        target: target.into(),
        format: format.map(Into::into),
        type_: None,
        data: data.map(Into::into),
    }
}

/// A value of `len` bytes with characters XML must escape, so escaping is part of what is sent.
fn big_value(len: usize) -> String {
    (0..len)
        .map(|i| match i % 101 {
            0 => '<',
            50 => '&',
            _ => char::from(b'a' + (i % 26) as u8),
        })
        .collect()
}

#[tokio::test]
async fn a_session_over_tls_1_2_like_windows_10_and_tls_1_3_like_windows_11() {
    let t = TestServer::start().await;
    for (profile, version) in [
        (TlsProfile::Windows10, rustls::ProtocolVersion::TLSv1_2),
        (TlsProfile::Windows11, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut device = t.managed_device(None).await;
        let client =
            HttpsClient::with_profile(std::slice::from_ref(&t.root_der), device.tls_identity(), profile).unwrap();
        let report = device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
        assert!(report.ended, "{profile:?}");
        assert_eq!(client.negotiated_version(), Some(version), "{profile:?}");
        // The inventory read went out and came back over this connection.
        let e = t.enrollment_of(&device).await;
        let commands = t.store().commands_for_enrollment(e.id).await.unwrap();
        assert_eq!(commands.len(), 1, "{profile:?}");
        assert_eq!(commands[0].state, CommandState::Succeeded, "{profile:?}");
    }
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

/// M-2 and M-9: the provisioned schedule leaves the remaining set reachable (MS-MDE2 §2.2.9.3),
/// so the engine's interval change is what the device then polls at; `./user/…` in Learn's lower
/// case waits for sign-in like `./User/…`.
#[tokio::test]
async fn the_poll_interval_change_takes_effect_and_lower_case_user_scope_waits() {
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let schedule = device.poll_schedule();
    assert_eq!(schedule.configuration_error(), None, "{schedule:?}");
    assert_eq!(
        (schedule.second.interval_minutes, schedule.remaining.count),
        (0, 0),
        "second set disabled, remaining set infinite"
    );
    let client = t.device_client(&device);
    let e = t.enrollment_of(&device).await;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    let lower = "./user/vendor/MSFT/Policy/Config/Start/HideSleep";
    let id = admin::queue_command(
        t.store(),
        &e,
        OmaDmCommand::single(Verb::Replace, item(lower, Some("int"), Some("1"))),
        "admin",
        0,
        None,
    )
    .await
    .unwrap();

    // Nobody signed in: the command waits and the device is told to poll every 3 minutes, which
    // it then does once the first set (3 min × 5) is used up.
    device.login_status = LoginStatus::None;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert_eq!(
        t.store().command(id).await.unwrap().unwrap().state,
        CommandState::Pending
    );
    device.set_scheduled_polls(50);
    assert_eq!(device.next_poll_delay(), Duration::from_secs(3 * 60));

    device.login_status = LoginStatus::User;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert_eq!(
        t.store().command(id).await.unwrap().unwrap().state,
        CommandState::Succeeded
    );
    assert_eq!(device.next_poll_delay(), Duration::from_secs(60 * 60), "back to steady");
    assert_eq!(
        device.tree.value("./User/Vendor/MSFT/Policy/Config/Start/HideSleep"),
        Some("1")
    );

    // An enrollment provisioned before the fix (infinite second set): the same Replace turns the
    // second set off, so the change takes effect there too.
    let second = "./Vendor/MSFT/DMClient/Provider/Steward/Poll/IntervalForSecondSetOfRetries";
    device.tree.seed(second, Format::Int, Access::GET_REPLACE, "60");
    assert_eq!(device.poll_schedule().configuration_error(), None);
    let user_only = admin::queue_command(
        t.store(),
        &e,
        OmaDmCommand::single(Verb::Replace, item(lower, Some("int"), Some("0"))),
        "admin",
        0,
        None,
    )
    .await
    .unwrap();
    device.login_status = LoginStatus::None;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert_eq!(device.tree.value(second), Some("0"));
    assert_eq!(device.next_poll_delay(), Duration::from_secs(3 * 60));
    assert_eq!(
        t.store().command(user_only).await.unwrap().unwrap().state,
        CommandState::Pending
    );
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

/// M-5: with a small MaxMsgSize, many commands go in messages that each close our package (Final),
/// the rest after the device's statuses; a large object goes in pieces, the device answering each
/// 213 + 1222 without Final, until the last piece. Nothing loops and everything lands.
#[tokio::test]
async fn small_max_msg_size_packs_and_chunks_by_the_oma_package_rules() {
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    let e = t.enrollment_of(&device).await;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    device.max_msg_size = Some(4096);
    let big = big_value(20_000);
    let big_target = "./Device/Vendor/MSFT/Policy/Config/Big/Value";
    let mut ids = Vec::new();
    for i in 0..12 {
        let target = format!("./Device/Vendor/MSFT/Policy/Config/Area{i}/Setting");
        let c = OmaDmCommand::single(Verb::Replace, item(&target, Some("int"), Some("1")));
        ids.push(admin::queue_command(t.store(), &e, c, "admin", 0, None).await.unwrap());
    }
    let c = OmaDmCommand::single(Verb::Replace, item(big_target, Some("chr"), Some(&big)));
    ids.push(admin::queue_command(t.store(), &e, c, "admin", 0, None).await.unwrap());
    let report = device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.ended);
    assert!(report.messages >= 6, "{} messages", report.messages);
    for id in ids {
        assert_eq!(
            t.store().command(id).await.unwrap().unwrap().state,
            CommandState::Succeeded
        );
    }
    assert_eq!(device.tree.value(big_target), Some(big.as_str()), "reassembled exactly");
    assert!(
        report.received.iter().any(|r| r.name == "Replace" && r.status == 213),
        "pieces were answered 213"
    );
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

/// M-6: a Results value larger than the device's upload limit comes in pieces with MoreData; the
/// server answers each 213 (the simulator refuses to go on otherwise) and records the whole value.
#[tokio::test]
async fn large_results_from_the_device_are_reassembled_not_truncated() {
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    let e = t.enrollment_of(&device).await;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    let node = "./Device/Vendor/MSFT/Policy/Config/Big/Value";
    let value = big_value(30_000);
    device.tree.seed(node, Format::Chr, Access::GET_REPLACE, &value);
    device.upload_chunk_bytes = 4096;
    let id = admin::queue_command(
        t.store(),
        &e,
        OmaDmCommand::single(Verb::Get, item(node, None, None)),
        "admin",
        0,
        None,
    )
    .await
    .unwrap();
    let report = device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.ended);
    assert!(report.messages >= 8, "{} messages", report.messages);
    let pieces_acknowledged = report
        .server_statuses
        .iter()
        .filter(|s| s.cmd == "Results" && s.code == "213")
        .count();
    assert!(pieces_acknowledged >= 7, "{pieces_acknowledged}");
    let c = t.store().command(id).await.unwrap().unwrap();
    assert_eq!((c.state, c.status_code), (CommandState::Succeeded, Some(200)));
    let outcome = t.store().command_result(id).await.unwrap().expect("outcome");
    assert_eq!(outcome.results.len(), 1);
    assert_eq!(outcome.results[0].data.as_deref(), Some(value.as_str()), "whole value");
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

/// M-4, M-8, M-10 on the wire: a message with a decimal 10-digit SessionID, an MSI completion as
/// Alert 1224 with the node spelled differently from the command, an unknown command and a
/// malformed one is answered per command, and the completion lands.
#[tokio::test]
async fn decimal_session_ids_per_command_refusals_and_msi_completion_by_1224() {
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let client = t.device_client(&device);
    let e = t.enrollment_of(&device).await;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    let msi = "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7Baaaa-bbbb%7D";
    let node = OmaDmCommand::single(Verb::Add, item(msi, Some("node"), None));
    admin::queue_command(t.store(), &e, node, "admin", 0, None)
        .await
        .unwrap();
    let add = OmaDmCommand::single(
        Verb::Add,
        item(&format!("{msi}/DownloadInstall"), Some("chr"), Some("")),
    );
    admin::queue_command(t.store(), &e, add, "admin", 0, None)
        .await
        .unwrap();
    let job = "<MsiInstallJob id=\"{AAAA-BBBB}\"><Product Version=\"1.0\"/></MsiInstallJob>";
    let exec = OmaDmCommand::single(
        Verb::Exec,
        item(&format!("{msi}/DownloadInstall"), Some("xml"), Some(job)),
    );
    let exec = admin::queue_command(t.store(), &e, exec, "admin", 0, None)
        .await
        .unwrap();
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    let c = t.store().command(exec).await.unwrap().unwrap();
    assert_eq!((c.state, c.status_code), (CommandState::Accepted, Some(202)));
    // The simulator's own completion alert would match by the exact LocURI; this one is spelled as
    // Windows may: `./Vendor`, braces decoded, GUID upper case.
    device.pending_alerts().iter().for_each(|a| assert_eq!(a.code, 1224));
    let device_id = device.profile.device_id.clone();
    let url = t.url("/ManagementServer/MDM.svc?mode=Maintenance&Platform=WoA");
    let message = format!(
        r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>4294967295</SessionID><MsgID>1</MsgID><Target><LocURI>{}</LocURI></Target><Source><LocURI>{device_id}</LocURI></Source></SyncHdr><SyncBody>
<Alert><CmdID>2</CmdID><Data>1201</Data></Alert>
<Alert><CmdID>3</CmdID><Data>1224</Data><Item><Source><LocURI>./Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{{AAAA-BBBB}}/DownloadInstall</LocURI></Source><Meta><Type xmlns="syncml:metinf">Reversed-Domain-Name:com.microsoft.mdm.win32csp_install</Type><Format xmlns="syncml:metinf">int</Format><Mark xmlns="syncml:metinf">informational</Mark></Meta><Data>0</Data></Item></Alert>
<Sync><CmdID>4</CmdID></Sync>
<Replace><CmdID>5</CmdID></Replace>
<Final/></SyncBody></SyncML>"#,
        device.management_url
    );
    let resp = client
        .post(&url, "application/vnd.syncml.dm+xml", message)
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let answer = syncml::parse(&resp.text()).unwrap();
    assert_eq!(answer.header.session_id, "4294967295");
    let statuses: Vec<(String, String, String)> = answer
        .body
        .commands
        .iter()
        .filter_map(|c| match c {
            syncml::Command::Status(s) => Some((s.cmd_ref.clone(), s.cmd.clone(), s.data.clone())),
            _ => None,
        })
        .collect();
    let own = |r: &str, c: &str, d: &str| (r.to_owned(), c.to_owned(), d.to_owned());
    assert_eq!(
        statuses,
        vec![
            own("0", "SyncHdr", "200"),
            own("2", "Alert", "200"),
            own("3", "Alert", "200"),
            own("4", "Sync", "406"),
            own("5", "Replace", "400"),
        ]
    );
    let c = t.store().command(exec).await.unwrap().unwrap();
    assert_eq!(c.state, CommandState::Succeeded, "completed by the 1224 alert");
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}
