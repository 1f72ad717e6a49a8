#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::csp::DeviceProfile;

const SERVER: &str = "https://windows.fleetdm.ngrok.io/ManagementServer/MDM.svc";
const DEVICE: &str = "B5B954E81FBCB94EB79BD08BE625F4EE";

macro_rules! fixture {
    ($name:literal) => {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/windows/win10-19043-fleet-poc/",
            $name
        ))
        .expect("fixture readable")
    };
}

/// The device of the fleet POC capture (VMware VM, DeviceID B5B9…).
fn fleet_device() -> ManagedDevice {
    let mut p = DeviceProfile::random(DEVICE);
    p.manufacturer = "VMware, Inc.".into();
    p.model = "VMware7,1".into();
    ManagedDevice::new(p, SERVER)
}

/// A server message: SyncHdr status for our MsgID `msg_ref`, then `body` (raw SyncML commands).
fn server_msg(session: &str, msg_id: u32, msg_ref: u32, body: &str, final_: bool) -> SyncMl {
    let xml = format!(
        r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>
<SessionID>{session}</SessionID><MsgID>{msg_id}</MsgID><Target><LocURI>{DEVICE}</LocURI></Target>
<Source><LocURI>{SERVER}</LocURI></Source></SyncHdr><SyncBody>
<Status><CmdID>1</CmdID><MsgRef>{msg_ref}</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>
{body}{}</SyncBody></SyncML>"#,
        if final_ { "<Final/>" } else { "" }
    );
    syncml::parse(&xml).unwrap()
}

fn statuses(msg: &SyncMl) -> Vec<(String, String, Vec<String>, String)> {
    msg.body
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Status(s) => Some((s.cmd_ref.clone(), s.cmd.clone(), s.target_ref.clone(), s.data.clone())),
            _ => None,
        })
        .collect()
}

fn st(cmd_ref: &str, cmd: &str, targets: &[&str], code: &str) -> (String, String, Vec<String>, String) {
    (
        cmd_ref.into(),
        cmd.into(),
        targets.iter().map(|t| (*t).to_owned()).collect(),
        code.into(),
    )
}

fn alerts(msg: &SyncMl) -> Vec<u16> {
    msg.body
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Alert(a) => a.code(),
            _ => None,
        })
        .collect()
}

/// Runs a one-message server exchange: start, answer `body`, return the reply.
fn one_exchange(dev: &mut ManagedDevice, body: &str) -> SyncMl {
    let m1 = dev.start_session(SessionTrigger::Scheduled).unwrap();
    let sid = m1.header.session_id.clone();
    dev.respond(&server_msg(&sid, 1, 1, body, true)).unwrap().unwrap()
}

fn finish(dev: &mut ManagedDevice, reply: &SyncMl) -> SessionReport {
    let sid = reply.header.session_id.clone();
    let msg_ref = reply.header.msg_id;
    assert!(dev.respond(&server_msg(&sid, 9, msg_ref, "", true)).unwrap().is_none());
    dev.end_session()
}

#[test]
fn first_message_matches_fixture_04() {
    let mut dev = fleet_device();
    let ours = dev.start_session(SessionTrigger::Scheduled).unwrap();
    let real = syncml::parse(&fixture!("04-session1-msg1.request.xml")).unwrap();
    assert_eq!(ours.header, real.header);
    assert_eq!(ours.body, real.body);
    // And it survives our own writer.
    assert_eq!(syncml::parse(&syncml::write(&ours)).unwrap(), real);
}

#[test]
fn unenroll_message_matches_fixture_05() {
    let mut dev = fleet_device();
    dev.set_session_counter(1);
    dev.request_unenroll();
    dev.request_unenroll(); // idempotent
    let ours = dev.start_session(SessionTrigger::Scheduled).unwrap();
    let real = syncml::parse(&fixture!("05-session2-unenroll.request.xml")).unwrap();
    assert_eq!(ours, real);
    // The session completes: the device is unenrolled and opens no more sessions.
    let sid = ours.header.session_id.clone();
    assert!(dev.respond(&server_msg(&sid, 1, 1, "", true)).unwrap().is_none());
    let report = dev.end_session();
    assert!(report.ended);
    assert!(dev.unenrolled);
    assert!(matches!(
        dev.start_session(SessionTrigger::Scheduled),
        Err(SessionError::Unenrolled)
    ));
}

#[test]
fn md5_digest_known_vector() {
    // python3: b64(md5(b64(md5(b"user:pass")) + b":" + b64decode(nonce)))
    assert_eq!(
        md5_digest("user", "pass", "bm9uY2UtMDEyMzQ1Njc4OQ=="),
        "IagvI/t/492yRo1vR4LUJg=="
    );
}

#[test]
fn session_ids_are_decimal_and_wrap() {
    let mut dev = fleet_device();
    dev.set_session_counter(9);
    assert_eq!(
        dev.start_session(SessionTrigger::ServerInitiated)
            .unwrap()
            .header
            .session_id,
        "10"
    );
    dev.set_session_counter(u32::MAX - 1);
    let m = dev.start_session(SessionTrigger::ServerInitiated).unwrap();
    assert_eq!(m.header.session_id, "4294967295", "ten decimal digits");
    dev.set_session_counter(u32::MAX);
    let m = dev.start_session(SessionTrigger::ServerInitiated).unwrap();
    assert_eq!(m.header.session_id, "1");
    assert_eq!(alerts(&m)[0], 1200);
}

#[test]
fn multi_message_exchange() {
    let mut dev = fleet_device();
    let m1 = dev.start_session(SessionTrigger::Scheduled).unwrap();
    let sid = m1.header.session_id.clone();
    // Server message 1: a Get, no Final (more to come) → statuses, Results and Alert 1222, and no
    // Final of ours while the server's package is open (OMA-DM Protocol §8.2).
    let s1 = server_msg(
        &sid,
        1,
        1,
        r#"<Status><CmdID>2</CmdID><MsgRef>1</MsgRef><CmdRef>4</CmdRef><Cmd>Replace</Cmd><Data>200</Data></Status>
<Get><CmdID>a1b2c3d4-0000-4000-8000-000000000001</CmdID><Item><Target><LocURI>./DevDetail/SwV</LocURI></Target></Item>
<Item><Target><LocURI>./DevInfo</LocURI></Target></Item></Get>"#,
        false,
    );
    let r1 = dev.respond(&s1).unwrap().unwrap();
    assert_eq!(r1.header.msg_id, 2);
    assert_eq!(r1.header.session_id, sid);
    assert!(!r1.body.final_);
    let uuid = "a1b2c3d4-0000-4000-8000-000000000001";
    assert_eq!(
        statuses(&r1),
        vec![
            st("0", "SyncHdr", &[], "200"),
            st(uuid, "Get", &["./DevDetail/SwV", "./DevInfo"], "200"),
        ]
    );
    let Some(Command::Results(res)) = r1.body.commands.get(2) else {
        panic!("no Results")
    };
    assert_eq!(
        (res.cmd_ref.as_str(), res.msg_ref.as_deref(), res.cmd_id.as_str()),
        (uuid, Some("1"), "3")
    );
    let leaf = &res.items[0];
    assert_eq!(leaf.source_uri(), Some("./DevDetail/SwV"));
    assert_eq!(leaf.meta.as_ref().unwrap().format.as_deref(), Some("chr"));
    assert_eq!(leaf.data.as_ref().unwrap().as_str(), "10.0.26100.2605");
    let interior = &res.items[1];
    assert_eq!(interior.meta.as_ref().unwrap().format.as_deref(), Some("node"));
    assert_eq!(interior.data.as_ref().unwrap().as_str(), "DevId/DmV/Lang/Man/Mod");
    assert_eq!(alerts(&r1), vec![1222]);

    // Server message 2: a Replace with Final → just statuses, and our Final.
    let s2 = server_msg(
        &sid,
        2,
        2,
        r#"<Replace><CmdID>7</CmdID><Item><Target><LocURI>./Device/Vendor/MSFT/Policy/Config/Update/ActiveHoursStart</LocURI></Target>
<Meta><Format xmlns="syncml:metinf">int</Format></Meta><Data>8</Data></Item></Replace>"#,
        true,
    );
    let r2 = dev.respond(&s2).unwrap().unwrap();
    assert_eq!(r2.header.msg_id, 3);
    assert!(r2.body.final_);
    assert!(alerts(&r2).is_empty());
    assert_eq!(
        statuses(&r2),
        vec![
            st("0", "SyncHdr", &[], "200"),
            st(
                "7",
                "Replace",
                &["./Device/Vendor/MSFT/Policy/Config/Update/ActiveHoursStart"],
                "200"
            ),
        ]
    );
    // Server message 3: bare SyncHdr status + Final → the session is over, no reply.
    assert!(dev.respond(&server_msg(&sid, 3, 3, "", true)).unwrap().is_none());
    let report = dev.end_session();
    assert!(report.ended);
    assert_eq!(report.messages, 3);
    assert_eq!(report.server_statuses.len(), 1);
    assert_eq!(
        report.received,
        vec![
            received("Get", uuid, Some("./DevDetail/SwV".into()), 200),
            received("Get", uuid, Some("./DevInfo".into()), 200),
            received(
                "Replace",
                "7",
                Some("./Device/Vendor/MSFT/Policy/Config/Update/ActiveHoursStart".into()),
                200
            ),
        ]
    );
    // A server message without commands but without Final still gets a reply (Alert 1222).
    let m = dev.start_session(SessionTrigger::Scheduled).unwrap();
    let r = dev
        .respond(&server_msg(&m.header.session_id, 1, 1, "", false))
        .unwrap()
        .unwrap();
    assert_eq!(alerts(&r), vec![1222]);
    assert!(!r.body.final_);
}

/// A Results value longer than the upload limit goes in pieces, one per message, each answered
/// 213 + 1222 by the server; the last piece carries our Final (OMA-DM large object handling).
#[test]
fn large_results_go_in_pieces_with_more_data() {
    let mut dev = fleet_device();
    let node = "./Device/Vendor/MSFT/Policy/Config/Big/Value";
    let value: String = (0..100).map(|i| char::from(b'a' + (i % 26) as u8)).collect::<String>() + "é";
    dev.tree
        .seed(node, crate::csp::Format::Chr, crate::csp::Access::GET_REPLACE, &value);
    dev.upload_chunk_bytes = 40;
    let m1 = dev.start_session(SessionTrigger::Scheduled).unwrap();
    let sid = m1.header.session_id.clone();
    let get = format!(
        r#"<Get><CmdID>g1</CmdID><Item><Target><LocURI>{node}</LocURI></Target></Item></Get>
<Get><CmdID>g2</CmdID><Item><Target><LocURI>./DevDetail/SwV</LocURI></Target></Item></Get>"#
    );
    let mut reply = dev.respond(&server_msg(&sid, 1, 1, &get, true)).unwrap().unwrap();
    let mut pieces = Vec::new();
    let mut server_id = 1;
    loop {
        let results: Vec<&Results> = reply
            .body
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Results(r) if r.cmd_ref == "g1" => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(results.len(), 1, "one piece per message");
        let item = &results[0].items[0];
        pieces.push((item.data.as_ref().unwrap().as_str().to_owned(), item.more_data));
        if pieces.len() == 1 {
            assert_eq!(
                item.meta.as_ref().unwrap().size,
                Some(value.len() as u64),
                "Meta/Size first"
            );
        } else {
            assert_eq!(item.meta.as_ref().unwrap().size, None);
        }
        assert_eq!(reply.body.final_, !item.more_data, "Final only with the last piece");
        if !item.more_data {
            break;
        }
        let piece_id = results[0].cmd_id.clone();
        server_id += 1;
        let body = format!(
            r#"<Status><CmdID>2</CmdID><MsgRef>{}</MsgRef><CmdRef>{piece_id}</CmdRef><Cmd>Results</Cmd><Data>213</Data></Status>
<Alert><CmdID>3</CmdID><Data>1222</Data></Alert>"#,
            reply.header.msg_id
        );
        reply = dev
            .respond(&server_msg(&sid, server_id, reply.header.msg_id, &body, false))
            .unwrap()
            .unwrap();
    }
    assert!(pieces.len() >= 3, "{pieces:?}");
    let whole: String = pieces.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(whole, value);
    assert!(pieces.iter().all(|(p, _)| p.len() <= 40));
    // The other Get's Results come after the large object, in the last message.
    assert!(
        reply
            .body
            .commands
            .iter()
            .any(|c| matches!(c, Command::Results(r) if r.cmd_ref == "g2"))
    );

    // A server that does not answer a piece 213 broke large object handling: the device stops.
    let mut dev = fleet_device();
    dev.tree
        .seed(node, crate::csp::Format::Chr, crate::csp::Access::GET_REPLACE, &value);
    dev.upload_chunk_bytes = 40;
    let m1 = dev.start_session(SessionTrigger::Scheduled).unwrap();
    let sid = m1.header.session_id.clone();
    let r = dev.respond(&server_msg(&sid, 1, 1, &get, true)).unwrap().unwrap();
    assert!(!r.body.final_);
    let no_213 = r#"<Alert><CmdID>2</CmdID><Data>1222</Data></Alert>"#;
    assert!(matches!(
        dev.respond(&server_msg(&sid, 2, r.header.msg_id, no_213, false)),
        Err(SessionError::Protocol(_))
    ));
}

#[test]
fn per_item_statuses_when_codes_differ() {
    let mut dev = fleet_device();
    let r = one_exchange(
        &mut dev,
        r#"<Get><CmdID>5</CmdID><Item><Target><LocURI>./DevInfo/Man</LocURI></Target></Item>
<Item><Target><LocURI>./DevInfo/Nope</LocURI></Target></Item></Get>"#,
    );
    assert_eq!(
        statuses(&r)[1..],
        [
            st("5", "Get", &["./DevInfo/Man"], "200"),
            st("5", "Get", &["./DevInfo/Nope"], "404")
        ]
    );
    let Some(Command::Results(res)) = r.body.commands.last() else {
        panic!()
    };
    assert_eq!(res.items.len(), 1);
}

#[test]
fn atomic_rolls_back_everything() {
    let mut dev = fleet_device();
    let before = dev.tree.clone();
    let r = one_exchange(
        &mut dev,
        r#"<Atomic><CmdID>10</CmdID>
<Add><CmdID>11</CmdID><Item><Target><LocURI>./Vendor/MSFT/Policy/Config/Camera/AllowCamera</LocURI></Target><Meta><Format xmlns="syncml:metinf">int</Format></Meta><Data>0</Data></Item></Add>
<Replace><CmdID>12</CmdID><Item><Target><LocURI>./Vendor/MSFT/DMClient/Provider/Steward/Poll/NumberOfFirstRetries</LocURI></Target><Data>1</Data></Item></Replace>
<Replace><CmdID>13</CmdID><Item><Target><LocURI>./DevDetail/SwV</LocURI></Target><Data>1</Data></Item></Replace>
<Add><CmdID>14</CmdID><Item><Target><LocURI>./Vendor/MSFT/Policy/Config/Camera/Other</LocURI></Target><Data>1</Data></Item></Add>
</Atomic>"#,
    );
    assert_eq!(
        statuses(&r)[1..],
        [
            st("10", "Atomic", &[], "507"),
            st("11", "Add", &["./Vendor/MSFT/Policy/Config/Camera/AllowCamera"], "216"),
            st(
                "12",
                "Replace",
                &["./Vendor/MSFT/DMClient/Provider/Steward/Poll/NumberOfFirstRetries"],
                "216"
            ),
            st("13", "Replace", &["./DevDetail/SwV"], "405"),
            st("14", "Add", &["./Vendor/MSFT/Policy/Config/Camera/Other"], "215"),
        ]
    );
    assert_eq!(dev.tree, before, "tree restored");

    // The same Atomic without the bad command commits.
    let mut dev = fleet_device();
    let r = one_exchange(
        &mut dev,
        r#"<Atomic><CmdID>10</CmdID>
<Add><CmdID>11</CmdID><Item><Target><LocURI>./Vendor/MSFT/Policy/Config/Camera/AllowCamera</LocURI></Target><Meta><Format xmlns="syncml:metinf">int</Format></Meta><Data>0</Data></Item></Add>
</Atomic>"#,
    );
    assert_eq!(statuses(&r)[1].3, "200");
    assert_eq!(
        dev.tree.value("./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera"),
        Some("0")
    );
}

#[test]
fn atomic_rollback_discards_exec_effects() {
    let mut dev = fleet_device();
    let r = one_exchange(
        &mut dev,
        r#"<Atomic><CmdID>1</CmdID>
<Exec><CmdID>2</CmdID><Item><Target><LocURI>./Device/Vendor/MSFT/Reboot/RebootNow</LocURI></Target></Item></Exec>
<Delete><CmdID>3</CmdID><Item><Target><LocURI>./Device/Vendor/MSFT/Policy/Config/Nope</LocURI></Target></Item></Delete>
</Atomic>"#,
    );
    assert_eq!(
        statuses(&r)[1..].iter().map(|s| s.3.as_str()).collect::<Vec<_>>(),
        ["507", "216", "404"]
    );
    assert_eq!(dev.reboot_count, 0);
}

#[test]
fn sequence_stops_at_first_failure() {
    let mut dev = fleet_device();
    let r = one_exchange(
        &mut dev,
        r#"<Sequence><CmdID>20</CmdID>
<Replace><CmdID>21</CmdID><Item><Target><LocURI>./Device/Vendor/MSFT/Policy/Config/A/B</LocURI></Target><Data>x</Data></Item></Replace>
<Delete><CmdID>22</CmdID><Item><Target><LocURI>./Device/Vendor/MSFT/Policy/Config/A/Missing</LocURI></Target></Item></Delete>
<Exec><CmdID>23</CmdID><Item><Target><LocURI>./Device/Vendor/MSFT/Reboot/RebootNow</LocURI></Target></Item></Exec>
</Sequence>"#,
    );
    assert_eq!(
        statuses(&r)[1..]
            .iter()
            .map(|s| (s.0.as_str(), s.3.as_str()))
            .collect::<Vec<_>>(),
        [("20", "200"), ("21", "200"), ("22", "404"), ("23", "215")]
    );
    assert_eq!(dev.tree.value("./Device/Vendor/MSFT/Policy/Config/A/B"), Some("x"));
    assert_eq!(dev.reboot_count, 0);
}

const LO: &str = "./Device/Vendor/MSFT/Policy/Config/Big/Blob";

fn lo_chunk(cmd_id: u32, data: &str, size: Option<u64>, more: bool) -> String {
    format!(
        r#"<Replace><CmdID>{cmd_id}</CmdID><Item><Target><LocURI>{LO}</LocURI></Target><Meta><Format xmlns="syncml:metinf">chr</Format>{}</Meta><Data>{data}</Data>{}</Item></Replace>"#,
        size.map(|s| format!(r#"<Size xmlns="syncml:metinf">{s}</Size>"#))
            .unwrap_or_default(),
        if more { "<MoreData/>" } else { "" }
    )
}

#[test]
fn large_object_reassembly_and_size_check() {
    for (declared, expect) in [(10u64, "200"), (11, "424")] {
        let mut dev = fleet_device();
        let m1 = dev.start_session(SessionTrigger::Scheduled).unwrap();
        let sid = m1.header.session_id.clone();
        let r1 = dev
            .respond(&server_msg(
                &sid,
                1,
                1,
                &lo_chunk(1, "abcde", Some(declared), true),
                false,
            ))
            .unwrap()
            .unwrap();
        assert_eq!(statuses(&r1)[1], st("1", "Replace", &[LO], "213"));
        assert_eq!(alerts(&r1), vec![1222]);
        assert!(!dev.tree.exists(LO), "nothing applied before the last chunk");
        let r2 = dev
            .respond(&server_msg(&sid, 2, 2, &lo_chunk(2, "fghij", None, false), true))
            .unwrap()
            .unwrap();
        assert_eq!(statuses(&r2)[1], st("2", "Replace", &[LO], expect));
        if expect == "200" {
            assert_eq!(dev.tree.value(LO), Some("abcdefghij"));
        } else {
            assert!(!dev.tree.exists(LO));
        }
    }
}

#[test]
fn unfinished_large_object_gets_alert_1225() {
    let mut dev = fleet_device();
    let r = one_exchange(&mut dev, &lo_chunk(1, "abc", Some(6), true));
    assert_eq!(statuses(&r)[1].3, "213");
    assert_eq!(alerts(&r), vec![1225]);
    let Some(Command::Alert(a)) = r.body.commands.last() else {
        panic!()
    };
    assert_eq!(a.items[0].target_uri(), Some(LO));
}

#[test]
fn user_scope_fails_without_a_user_session() {
    let mut dev = fleet_device();
    dev.login_status = LoginStatus::None;
    let body = r#"<Add><CmdID>1</CmdID><Item><Target><LocURI>./User/Vendor/MSFT/Policy/Config/Start/HideSleep</LocURI></Target><Meta><Format xmlns="syncml:metinf">int</Format></Meta><Data>1</Data></Item></Add>
<Atomic><CmdID>2</CmdID><Replace><CmdID>3</CmdID><Item><Target><LocURI>./User/Vendor/MSFT/Policy/Config/Start/HideShutDown</LocURI></Target><Data>1</Data></Item></Replace></Atomic>"#;
    let m1 = dev.start_session(SessionTrigger::Scheduled).unwrap();
    let Command::Alert(login) = &m1.body.commands[1] else {
        panic!()
    };
    assert_eq!(login.items[0].data.as_ref().unwrap().as_str(), "none");
    let r = dev
        .respond(&server_msg(&m1.header.session_id, 1, 1, body, true))
        .unwrap()
        .unwrap();
    let codes: Vec<_> = statuses(&r)[1..].iter().map(|s| s.3.clone()).collect();
    assert_eq!(codes, ["500", "507", "500"]);
    dev.end_session();
    // With the user signed in the same commands succeed.
    dev.login_status = LoginStatus::User;
    let r = one_exchange(&mut dev, body);
    let codes: Vec<_> = statuses(&r)[1..].iter().map(|s| s.3.clone()).collect();
    assert_eq!(codes, ["200", "200", "200"]);
}

#[test]
fn wipe_and_reboot() {
    let mut dev = fleet_device();
    let r = one_exchange(
        &mut dev,
        r#"<Exec><CmdID>1</CmdID><Item><Target><LocURI>./Device/Vendor/MSFT/Reboot/RebootNow</LocURI></Target></Item></Exec>
<Exec><CmdID>2</CmdID><Item><Target><LocURI>./Device/Vendor/MSFT/RemoteWipe/doWipeProtected</LocURI></Target></Item></Exec>
<Exec><CmdID>3</CmdID><Item><Target><LocURI>./DevInfo/Man</LocURI></Target></Item></Exec>"#,
    );
    let codes: Vec<_> = statuses(&r)[1..].iter().map(|s| s.3.clone()).collect();
    assert_eq!(codes, ["200", "200", "405"]);
    assert_eq!(dev.reboot_count, 1);
    assert_eq!(dev.wiped.as_ref().map(|w| w.0.as_str()), Some("doWipeProtected"));
    let report = finish(&mut dev, &r);
    assert!(report.ended);
    assert!(matches!(
        dev.start_session(SessionTrigger::Scheduled),
        Err(SessionError::DeviceWiped)
    ));
}

#[test]
fn msi_install_alert_goes_to_the_next_session() {
    let mut dev = fleet_device();
    let node = "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7BAF3E8C5B-0000-4000-8000-000000000001%7D";
    let body = format!(
        r#"<Add><CmdID>1</CmdID><Item><Target><LocURI>{node}/DownloadInstall</LocURI></Target></Item></Add>
<Exec><CmdID>2</CmdID><Item><Target><LocURI>{node}/DownloadInstall</LocURI></Target>
<Meta><Format xmlns="syncml:metinf">xml</Format><Type xmlns="syncml:metinf">text/plain</Type></Meta>
<Data>&lt;MsiInstallJob id="{{AF3E}}"&gt;&lt;Product Version="1.0"/&gt;&lt;/MsiInstallJob&gt;</Data></Item></Exec>
<Exec><CmdID>3</CmdID><Item><Target><LocURI>{node}/DownloadInstall</LocURI></Target>
<Meta><Format xmlns="syncml:metinf">xml</Format></Meta><Data>&lt;MsiInstallJob&gt;</Data></Item></Exec>"#
    );
    // Without MSI/{ProductID} (Add with Format node) the DownloadInstall node cannot be created.
    let r = one_exchange(&mut dev, &body);
    let codes: Vec<_> = statuses(&r)[1..].iter().map(|s| s.3.clone()).collect();
    assert_eq!(codes, ["404", "404", "404"]);
    dev.end_session();

    let body = format!(
        r#"<Add><CmdID>p1</CmdID><Item><Target><LocURI>{node}</LocURI></Target><Meta><Format xmlns="syncml:metinf">node</Format></Meta></Item></Add>{body}"#
    );
    let r = one_exchange(&mut dev, &body);
    let codes: Vec<_> = statuses(&r)[1..].iter().map(|s| s.3.clone()).collect();
    assert_eq!(codes, ["200", "200", "202", "400"]);
    assert!(dev.pending_alerts().is_empty(), "not in the current session");
    finish(&mut dev, &r);
    assert_eq!(dev.pending_alerts().len(), 1);
    let m = dev.start_session(SessionTrigger::Scheduled).unwrap();
    let Command::Alert(a) = &m.body.commands[2] else {
        panic!("no generic alert")
    };
    assert_eq!(a.code(), Some(1224), "EnterpriseDesktopAppManagement CSP alert example");
    let item = &a.items[0];
    assert_eq!(item.source_uri(), Some(format!("{node}/DownloadInstall").as_str()));
    let meta = item.meta.as_ref().unwrap();
    assert_eq!(meta.type_.as_deref(), Some(TYPE_MSI_INSTALL));
    assert_eq!(meta.mark.as_deref(), Some("informational"));
    assert_eq!(dev.tree.value(&format!("{node}/Status")), Some("70"));
    // Delivered once the session completes.
    let sid = m.header.session_id.clone();
    assert!(dev.respond(&server_msg(&sid, 1, 1, "", true)).unwrap().is_none());
    dev.end_session();
    assert!(dev.pending_alerts().is_empty());
}

#[test]
fn interrupted_session_keeps_its_alerts() {
    let mut dev = fleet_device();
    dev.request_unenroll();
    dev.start_session(SessionTrigger::Scheduled).unwrap();
    let report = dev.end_session();
    assert!(!report.ended);
    assert!(!dev.unenrolled);
    assert_eq!(dev.pending_alerts().len(), 1);
}

#[test]
fn md5_challenge_is_answered_once() {
    let chal = |sid: &str, msg_ref: u32, code: u16| {
        let xml = format!(
            r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>{sid}</SessionID><MsgID>1</MsgID>
<Target><LocURI>{DEVICE}</LocURI></Target><Source><LocURI>{SERVER}</LocURI></Source></SyncHdr><SyncBody>
<Status><CmdID>1</CmdID><MsgRef>{msg_ref}</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd>
<Chal><Meta><Format xmlns="syncml:metinf">b64</Format><Type xmlns="syncml:metinf">syncml:auth-md5</Type><NextNonce xmlns="syncml:metinf">bm9uY2UtMDEyMzQ1Njc4OQ==</NextNonce></Meta></Chal>
<Data>{code}</Data></Status><Final/></SyncBody></SyncML>"#
        );
        syncml::parse(&xml).unwrap()
    };
    // Without credentials a challenge is fatal.
    let mut dev = fleet_device();
    let m1 = dev.start_session(SessionTrigger::Scheduled).unwrap();
    assert!(matches!(
        dev.respond(&chal(&m1.header.session_id, 1, 401)),
        Err(SessionError::AuthRequired { code: 401 })
    ));

    // Credentials provisioned through DMAcc (as Fleet does) are used after the challenge.
    let mut dev = fleet_device();
    let acct = "./SyncML/DMAcc/0x0000800cABF8/AppAuth/CLCRED";
    let r = one_exchange(
        &mut dev,
        &format!(
            r#"<Replace><CmdID>1</CmdID><Item><Target><LocURI>{acct}/AAuthName</LocURI></Target><Data>user</Data></Item>
<Item><Target><LocURI>{acct}/AAuthSecret</LocURI></Target><Data>pass</Data></Item></Replace>"#
        ),
    );
    assert_eq!(statuses(&r)[1].3, "200");
    finish(&mut dev, &r);
    let m1 = dev.start_session(SessionTrigger::Scheduled).unwrap();
    let src = m1.header.source.as_ref().unwrap();
    assert_eq!(src.loc_name.as_deref(), Some("user"));
    assert!(m1.header.cred.is_none(), "no nonce yet");
    let again = dev.respond(&chal(&m1.header.session_id, 1, 407)).unwrap().unwrap();
    assert_eq!(again.header.msg_id, 2);
    assert_eq!(again.body, m1.body, "same commands, resent");
    let cred = again.header.cred.as_ref().unwrap();
    assert_eq!(cred.data, "IagvI/t/492yRo1vR4LUJg==");
    assert_eq!(cred.meta.as_ref().unwrap().type_.as_deref(), Some("syncml:auth-md5"));
    assert!(matches!(
        dev.respond(&chal(&m1.header.session_id, 2, 401)),
        Err(SessionError::AuthFailed { code: 401 })
    ));
}

#[test]
fn protocol_violations_are_errors() {
    let mut dev = fleet_device();
    let m1 = dev.start_session(SessionTrigger::Scheduled).unwrap();
    let mut bad = server_msg(&m1.header.session_id, 1, 1, "", true);
    bad.body.commands.clear();
    assert!(matches!(dev.respond(&bad), Err(SessionError::Protocol(_))));
    let other = server_msg("FFFF", 1, 1, "", true);
    assert!(matches!(dev.respond(&other), Err(SessionError::Protocol(_))));
    let mut refused = server_msg(&m1.header.session_id, 1, 1, "", true);
    if let Some(Command::Status(s)) = refused.body.commands.first_mut() {
        s.data = "403".into();
    }
    assert!(matches!(dev.respond(&refused), Err(SessionError::Protocol(_))));
    dev.end_session();
    assert!(matches!(dev.respond(&other), Err(SessionError::NoSession)));
}

#[test]
fn server_abort_ends_the_session() {
    let mut dev = fleet_device();
    let m1 = dev.start_session(SessionTrigger::Scheduled).unwrap();
    let s = server_msg(
        &m1.header.session_id,
        1,
        1,
        "<Alert><CmdID>2</CmdID><Data>1223</Data></Alert>",
        true,
    );
    assert!(dev.respond(&s).unwrap().is_none());
    assert!(dev.end_session().ended);
}

#[test]
fn session_url_and_identity() {
    let dev = fleet_device();
    assert_eq!(dev.session_url(), format!("{SERVER}?mode=Maintenance&Platform=WoA"));
    assert!(dev.tls_identity().is_none());
    assert_eq!(dev.ent_dm_id(), None);
}
