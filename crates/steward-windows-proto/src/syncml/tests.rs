#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::xml::XmlError;
use proptest::prelude::*;

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

const SERVER: &str = "https://windows.fleetdm.ngrok.io/ManagementServer/MDM.svc";
const DEVICE: &str = "B5B954E81FBCB94EB79BD08BE625F4EE";

fn devinfo_replace(msg: &SyncMl, cmd_id: &str) {
    let Some(Command::Replace(r)) = msg.body.commands.last() else {
        panic!("last command is not Replace: {:?}", msg.body.commands.last())
    };
    assert_eq!(r.cmd_id, cmd_id);
    let got: Vec<_> = r
        .items
        .iter()
        .map(|i| (i.source_uri().unwrap(), i.data.as_ref().unwrap().as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("./DevInfo/DevId", DEVICE),
            ("./DevInfo/Man", "VMware, Inc."),
            ("./DevInfo/Mod", "VMware7,1"),
            ("./DevInfo/DmV", "1.3"),
            ("./DevInfo/Lang", "en-US"),
        ]
    );
}

fn login_status_alert(cmd: &Command, cmd_id: &str) {
    let Command::Alert(a) = cmd else {
        panic!("not an Alert: {cmd:?}")
    };
    assert_eq!((a.cmd_id.as_str(), a.code()), (cmd_id, Some(ALERT_CLIENT_EVENT)));
    assert_eq!(a.items.len(), 1);
    assert_eq!(
        a.items[0].meta.as_ref().unwrap().type_.as_deref(),
        Some(TYPE_LOGIN_STATUS)
    );
    assert_eq!(a.items[0].data, Some(ItemData::Text("user".into())));
}

// ---- Real device messages ----

#[test]
fn parses_fixture_04_session_start() {
    let msg = parse(&fixture!("04-session1-msg1.request.xml")).unwrap();
    let h = &msg.header;
    assert_eq!((h.ver_dtd.as_str(), h.ver_proto.as_str()), (VER_DTD, VER_PROTO));
    assert_eq!((h.session_id.as_str(), h.msg_id), ("1", 1));
    assert_eq!(h.target, Some(LocTarget::new(SERVER)));
    assert_eq!(h.source, Some(LocTarget::new(DEVICE)));
    assert_eq!((&h.cred, &h.meta), (&None, &None));

    let cmds = &msg.body.commands;
    assert_eq!(cmds.len(), 3);
    assert_eq!(
        cmds[0],
        Command::Alert(Alert {
            cmd_id: "2".into(),
            data: ALERT_CLIENT_INITIATED.to_string(),
            items: vec![]
        })
    );
    login_status_alert(&cmds[1], "3");
    devinfo_replace(&msg, "4");
    assert_eq!(
        cmds.iter().map(Command::name).collect::<Vec<_>>(),
        ["Alert", "Alert", "Replace"]
    );
    assert_eq!(cmds.iter().map(Command::cmd_id).collect::<Vec<_>>(), ["2", "3", "4"]);
    assert!(msg.body.final_);
}

#[test]
fn parses_fixture_05_unenroll() {
    let msg = parse_bytes(fixture!("05-session2-unenroll.request.xml").as_bytes()).unwrap();
    assert_eq!((msg.header.session_id.as_str(), msg.header.msg_id), ("2", 1));
    login_status_alert(&msg.body.commands[1], "3");
    let Command::Alert(a) = &msg.body.commands[2] else {
        panic!("not an Alert")
    };
    assert_eq!((a.cmd_id.as_str(), a.code()), ("4", Some(ALERT_GENERIC)));
    let meta = a.items[0].meta.as_ref().unwrap();
    assert_eq!(meta.type_.as_deref(), Some(TYPE_UNENROLL_USER_REQUEST));
    assert_eq!(meta.format.as_deref(), Some("int"));
    assert_eq!(a.items[0].data, Some(ItemData::Text("1".into())));
    devinfo_replace(&msg, "5");
    assert!(msg.body.final_);
}

#[test]
fn rewrites_fixtures_and_reparses_equal() {
    for (name, xml) in [
        ("fixture_04_rewritten", fixture!("04-session1-msg1.request.xml")),
        ("fixture_05_rewritten", fixture!("05-session2-unenroll.request.xml")),
    ] {
        let msg = parse(&xml).unwrap();
        let out = write(&msg);
        insta::assert_snapshot!(name, out);
        assert_eq!(parse(&out).unwrap(), msg);
    }
}

/// A realistic first server response: SyncHdr status, statuses for the client's commands, then
/// management commands (MS-MDM §4 examples, reference §2.4 step 2).
fn server_response() -> SyncMl {
    let status = |cmd_id: &str, cmd_ref: &str, cmd: &str| {
        Command::Status(Status {
            cmd_id: cmd_id.into(),
            msg_ref: "1".into(),
            cmd_ref: cmd_ref.into(),
            cmd: cmd.into(),
            data: STATUS_OK.to_string(),
            ..Status::default()
        })
    };
    let replace = |cmd_id: &str, uri: &str, format: &str, data: &str| {
        Command::Replace(ItemCommand {
            cmd_id: cmd_id.into(),
            meta: None,
            items: vec![Item {
                meta: Some(Meta::format(format)),
                data: Some(ItemData::Text(data.into())),
                ..Item::target(uri)
            }],
        })
    };
    let mut header = SyncHdr::new("1", 1, DEVICE, SERVER);
    header.meta = Some(Meta {
        max_msg_size: Some(524_288),
        ..Meta::default()
    });
    SyncMl {
        header,
        body: SyncBody {
            commands: vec![
                status("1", "0", "SyncHdr"),
                status("2", "2", "Alert"),
                status("3", "3", "Alert"),
                status("4", "4", "Replace"),
                Command::Get(ItemCommand {
                    cmd_id: "5".into(),
                    meta: None,
                    items: vec![
                        Item::target("./DevDetail/SwV"),
                        Item::target("./DevDetail/Ext/Microsoft/OSPlatform"),
                    ],
                }),
                replace("6", "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera", "int", "0"),
                Command::Exec(ItemCommand {
                    cmd_id: "7".into(),
                    meta: None,
                    items: vec![Item::target("./Device/Vendor/MSFT/RemoteWipe/doWipeProtected")],
                }),
                Command::Atomic(Container {
                    cmd_id: "8".into(),
                    meta: None,
                    commands: vec![
                        replace(
                            "9",
                            "./Device/Vendor/MSFT/Policy/Config/DeviceLock/DevicePasswordEnabled",
                            "int",
                            "0",
                        ),
                        replace(
                            "10",
                            "./Device/Vendor/MSFT/Policy/Config/Experience/Configure<Chat & \"Icon\">",
                            "chr",
                            "<enabled/> & 'quoted'",
                        ),
                    ],
                }),
            ],
            final_: true,
        },
    }
}

#[test]
fn writes_typical_server_response() {
    let msg = server_response();
    let out = write(&msg);
    insta::assert_snapshot!("server_response", out);
    assert_eq!(parse(&out).unwrap(), msg);
    // write_into appends; estimated_size is exact per command.
    let mut buf = String::from("prefix");
    write_into(&msg, &mut buf);
    assert_eq!(&buf["prefix".len()..], out);
    let empty = write(&SyncMl {
        body: SyncBody {
            commands: vec![],
            final_: true,
        },
        ..msg.clone()
    });
    let sum: usize = msg.body.commands.iter().map(estimated_size).sum();
    assert_eq!(out.len(), empty.len() + sum);
}

/// What a Windows device answers when one command of an Atomic fails: 507 for the Atomic, 216 for
/// the rolled-back commands and the failing command's own code, with Fleet-style UUID CmdRefs.
const ATOMIC_FAILURE_RESPONSE: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2">
  <SyncHdr>
    <VerDTD>1.2</VerDTD>
    <VerProto>DM/1.2</VerProto>
    <SessionID>2F</SessionID>
    <MsgID>2</MsgID>
    <Target>
      <LocURI>https://mdm.example.com/ManagementServer/MDM.svc</LocURI>
    </Target>
    <Source>
      <LocURI>B5B954E81FBCB94EB79BD08BE625F4EE</LocURI>
    </Source>
  </SyncHdr>
  <SyncBody xmlns:msft="http://schemas.microsoft.com/MobileDevice/MDM">
    <Status>
      <CmdID>1</CmdID>
      <MsgRef>1</MsgRef>
      <CmdRef>0</CmdRef>
      <Cmd>SyncHdr</Cmd>
      <Data>200</Data>
    </Status>
    <Status>
      <CmdID>2</CmdID>
      <MsgRef>1</MsgRef>
      <CmdRef>8b4ea6f4-7a35-4b5e-9d0a-2f7c3c2a1e01</CmdRef>
      <Cmd>Atomic</Cmd>
      <Data>507</Data>
    </Status>
    <Status>
      <CmdID>3</CmdID>
      <MsgRef>1</MsgRef>
      <CmdRef>0c3f1b6e-1d64-4a0f-8f6e-5b2d9f3a7c02</CmdRef>
      <Cmd>Replace</Cmd>
      <TargetRef>./Device/Vendor/MSFT/Policy/Config/DeviceLock/DevicePasswordEnabled</TargetRef>
      <Data>216</Data>
    </Status>
    <Status>
      <CmdID>4</CmdID>
      <MsgRef>1</MsgRef>
      <CmdRef>e6a9d8c4-2b1f-4c3e-a7d5-9f0b1c2d3e03</CmdRef>
      <Cmd>Replace</Cmd>
      <TargetRef>./Device/Vendor/MSFT/Policy/Config/DoesNot/Exist</TargetRef>
      <Data>404</Data>
      <Item>
        <Data><msft:originalerror>0x86000002</msft:originalerror></Data>
      </Item>
    </Status>
    <Status>
      <CmdID>5</CmdID>
      <MsgRef>1</MsgRef>
      <CmdRef>4f1e2d3c-5b6a-4978-8a9b-0c1d2e3f4a04</CmdRef>
      <Cmd>Get</Cmd>
      <Data>200</Data>
    </Status>
    <Results>
      <CmdID>6</CmdID>
      <MsgRef>1</MsgRef>
      <CmdRef>4f1e2d3c-5b6a-4978-8a9b-0c1d2e3f4a04</CmdRef>
      <Item>
        <Source>
          <LocURI>./DevDetail/SwV</LocURI>
        </Source>
        <Meta>
          <Format xmlns="syncml:metinf">chr</Format>
          <Type xmlns="syncml:metinf">text/plain</Type>
        </Meta>
        <Data>10.0.19043.2364</Data>
      </Item>
    </Results>
    <Final/>
  </SyncBody>
</SyncML>"#;

#[test]
fn parses_atomic_failure_response() {
    let msg = parse(ATOMIC_FAILURE_RESPONSE).unwrap();
    assert_eq!((msg.header.session_id.as_str(), msg.header.msg_id), ("2F", 2));
    let statuses: Vec<_> = msg
        .body
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Status(s) => Some((s.cmd_ref.as_str(), s.cmd.as_str(), s.code().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("0", "SyncHdr", STATUS_OK),
            ("8b4ea6f4-7a35-4b5e-9d0a-2f7c3c2a1e01", "Atomic", STATUS_ATOMIC_FAILED),
            (
                "0c3f1b6e-1d64-4a0f-8f6e-5b2d9f3a7c02",
                "Replace",
                STATUS_ATOMIC_ROLLBACK_OK
            ),
            ("e6a9d8c4-2b1f-4c3e-a7d5-9f0b1c2d3e03", "Replace", STATUS_NOT_FOUND),
            ("4f1e2d3c-5b6a-4978-8a9b-0c1d2e3f4a04", "Get", STATUS_OK),
        ]
    );
    let Command::Status(failed) = &msg.body.commands[3] else {
        panic!()
    };
    assert_eq!(failed.target_ref, ["./Device/Vendor/MSFT/Policy/Config/DoesNot/Exist"]);
    assert_eq!(
        failed.items[0].data,
        Some(ItemData::Xml(
            "<msft:originalerror>0x86000002</msft:originalerror>".into()
        ))
    );
    let Command::Results(r) = &msg.body.commands[5] else {
        panic!()
    };
    assert_eq!(r.msg_ref.as_deref(), Some("1"));
    assert_eq!(r.cmd_ref, "4f1e2d3c-5b6a-4978-8a9b-0c1d2e3f4a04");
    assert_eq!(r.items[0].source_uri(), Some("./DevDetail/SwV"));
    assert_eq!(r.items[0].meta.as_ref().unwrap().format.as_deref(), Some("chr"));
    assert_eq!(r.items[0].data, Some(ItemData::Text("10.0.19043.2364".into())));
    // The raw msft: fragment stays in scope because the writer always declares xmlns:msft.
    assert_eq!(parse(&write(&msg)).unwrap(), msg);
}

// ---- Namespace and whitespace tolerance ----

fn wrap(body: &str) -> String {
    format!(
        "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>\
         <SessionID>A</SessionID><MsgID>3</MsgID></SyncHdr><SyncBody>{body}</SyncBody></SyncML>"
    )
}

#[test]
fn namespace_variants_are_accepted() {
    let lower = r#"<SyncML xmlns='syncml:syncml1.2'><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>
        <SessionID>ff</SessionID><MsgID> 7 </MsgID><Meta><MaxMsgSize>65536</MaxMsgSize></Meta></SyncHdr>
        <SyncBody><Final/></SyncBody></SyncML>"#;
    let msg = parse(lower).unwrap();
    assert_eq!((msg.header.session_id.as_str(), msg.header.msg_id), ("ff", 7));
    assert_eq!(msg.header.meta.unwrap().max_msg_size, Some(65536));
    assert!(msg.body.final_ && msg.body.commands.is_empty());

    // Meta itself in syncml:metinf, children inheriting it; and a prefixed SyncML namespace.
    let prefixed = r#"<s:SyncML xmlns:s="SYNCML:SYNCML1.2"><s:SyncHdr><s:VerDTD>1.2</s:VerDTD>
        <s:VerProto>DM/1.2</s:VerProto><s:SessionID>1</s:SessionID><s:MsgID>1</s:MsgID></s:SyncHdr>
        <s:SyncBody><s:Replace><s:CmdID>1</s:CmdID><s:Item><s:Target><s:LocURI>./a</s:LocURI></s:Target>
        <Meta xmlns="syncml:metinf"><Format>int</Format><Size>4</Size></Meta><s:Data>1</s:Data>
        <s:MoreData/></s:Item></s:Replace></s:SyncBody></s:SyncML>"#;
    let msg = parse(prefixed).unwrap();
    let Command::Replace(r) = &msg.body.commands[0] else {
        panic!()
    };
    assert_eq!(
        r.items[0].meta,
        Some(Meta {
            format: Some("int".into()),
            size: Some(4),
            ..Meta::default()
        })
    );
    assert!(r.items[0].more_data);
    assert!(!msg.body.final_);
}

#[test]
fn data_forms() {
    let msg = parse(&wrap(
        "<Add><CmdID>1</CmdID>\
         <Item><Target><LocURI>./a</LocURI></Target><Data><![CDATA[<x>&amp;</x>]]></Data></Item>\
         <Item><Target><LocURI>./b</LocURI></Target><Data>\n  <x a='>'>&amp;</x><!-- c -->\n</Data></Item>\
         <Item><Target><LocURI>./c</LocURI></Target><Data> padded </Data></Item>\
         <Item><Target><LocURI>./d</LocURI></Target><Data/></Item>\
         </Add>",
    ))
    .unwrap();
    let Command::Add(a) = &msg.body.commands[0] else {
        panic!()
    };
    let data: Vec<_> = a.items.iter().map(|i| i.data.clone().unwrap()).collect();
    assert_eq!(
        data,
        [
            ItemData::Text("<x>&amp;</x>".into()),
            ItemData::Xml("<x a='>'>&amp;</x><!-- c -->".into()),
            ItemData::Text(" padded ".into()),
            ItemData::Text(String::new()),
        ]
    );
}

#[test]
fn well_formed_fragment_check() {
    assert!(is_well_formed_fragment("<a x=\"1\">t &amp; <b/></a>text"));
    assert!(is_well_formed_fragment("<msft:originalerror>0x1</msft:originalerror>"));
    assert!(is_well_formed_fragment("plain text"));
    assert!(!is_well_formed_fragment("<a>"));
    assert!(!is_well_formed_fragment("a & b"));
    assert!(!is_well_formed_fragment("</Data><Data>"));
    assert!(!is_well_formed_fragment("<x:y/>"));
    assert!(!is_well_formed_fragment("<!DOCTYPE a>"));
    assert!(!is_well_formed_fragment("\u{1}"));
}

#[test]
fn writer_replaces_characters_xml_cannot_carry() {
    let mut msg = server_response();
    let Command::Replace(r) = &mut msg.body.commands[5] else {
        panic!()
    };
    r.items[0].data = Some(ItemData::Text("a\u{0}b\u{1b}c\u{fffe}\r\n\t]]>".into()));
    let out = write(&msg);
    let Command::Replace(r) = &parse(&out).unwrap().body.commands[5] else {
        panic!()
    };
    assert_eq!(
        r.items[0].data,
        Some(ItemData::Text("a\u{fffd}b\u{fffd}c\u{fffd}\r\n\t]]>".into()))
    );
}

// ---- Rejections ----

#[test]
fn rejects_dtd() {
    let xml = format!("<!DOCTYPE SyncML [<!ENTITY e \"x\">]>{}", wrap("<Final/>"));
    assert_eq!(parse(&xml), Err(SyncMlError::Xml(XmlError::Dtd)));
}

#[test]
fn rejects_invalid_utf8() {
    let mut bytes = wrap("<Final/>").into_bytes();
    bytes.insert(10, 0xFF);
    assert_eq!(parse_bytes(&bytes), Err(SyncMlError::NotUtf8(10)));
    let bom = [b"\xEF\xBB\xBF".as_slice(), wrap("<Final/>").as_bytes()].concat();
    assert!(parse_bytes(&bom).is_ok());
}

/// The one command of `body`, which the reader refused: its (name, code, reason).
fn refused(body: &str) -> (&'static str, u16, String) {
    let msg = parse(&wrap(body)).expect("a bad command does not fail the message (interop review M-10)");
    match msg.body.commands.as_slice() {
        [Command::Refused(r)] => (r.name, r.code, r.reason.clone()),
        other => panic!("not one refused command: {other:?}"),
    }
}

#[test]
fn rejects_nested_atomic() {
    let get = "<Get><CmdID>3</CmdID><Item><Target><LocURI>./a</LocURI></Target></Item></Get>";
    let direct = format!("<Atomic><CmdID>1</CmdID><Atomic><CmdID>2</CmdID>{get}</Atomic></Atomic>");
    let nested = SyncMlError::NestedAtomic.to_string();
    assert_eq!(refused(&direct), ("Atomic", 400, nested.clone()));
    let via_sequence = format!(
        "<Atomic><CmdID>1</CmdID><Sequence><CmdID>2</CmdID><Atomic><CmdID>4</CmdID>{get}</Atomic></Sequence></Atomic>"
    );
    assert_eq!(refused(&via_sequence), ("Atomic", 400, nested));
    // Atomic inside a top-level Sequence is fine.
    let ok = format!("<Sequence><CmdID>1</CmdID><Atomic><CmdID>2</CmdID>{get}</Atomic></Sequence>");
    assert!(parse(&wrap(&ok)).is_ok());
}

#[test]
fn rejects_structural_errors() {
    let no_hdr = "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncBody><Final/></SyncBody></SyncML>";
    assert_eq!(parse(no_hdr), Err(SyncMlError::Missing("SyncHdr")));
    assert_eq!(
        parse("<SyncML><SyncHdr/><SyncBody/></SyncML>"),
        Err(SyncMlError::NotSyncMl)
    );
    assert_eq!(
        parse("<Envelope xmlns=\"SYNCML:SYNCML1.2\"/>"),
        Err(SyncMlError::NotSyncMl)
    );
    assert!(matches!(
        parse("<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr>"),
        Err(SyncMlError::Xml(_))
    ));

    for msg_id in ["abc", "-1", "4294967296", ""] {
        let xml = wrap("<Final/>").replace("<MsgID>3</MsgID>", &format!("<MsgID>{msg_id}</MsgID>"));
        assert!(
            matches!(
                parse(&xml),
                Err(SyncMlError::Invalid(_) | SyncMlError::Missing("SyncHdr/MsgID"))
            ),
            "{msg_id}"
        );
    }
    for session_id in ["12345678901234567", "XYZ", "1 2", "-1"] {
        let xml = wrap("<Final/>").replace(
            "<SessionID>A</SessionID>",
            &format!("<SessionID>{session_id}</SessionID>"),
        );
        assert!(matches!(parse(&xml), Err(SyncMlError::Invalid(_))), "{session_id}");
    }
    // Hex as MS-MDM shows it, and decimal as Learn says Windows sends it, up to a 32-bit
    // counter's 10 digits (interop review M-8).
    for session_id in ["DEADBEEF", "4294967295", "1234567890", "7"] {
        let xml = wrap("<Final/>").replace(
            "<SessionID>A</SessionID>",
            &format!("<SessionID>{session_id}</SessionID>"),
        );
        assert_eq!(parse(&xml).unwrap().header.session_id, session_id);
    }

    // Malformed commands are answered one by one (400); one whose CmdID is unusable cannot be
    // answered and is dropped. The rest of the message stands (interop review M-10).
    let zero = "<Alert><CmdID>0</CmdID><Data>1201</Data></Alert>";
    assert!(parse(&wrap(zero)).unwrap().body.commands.is_empty());
    let no_items = "<Get><CmdID>1</CmdID></Get>";
    assert_eq!(
        refused(no_items),
        ("Get", 400, SyncMlError::Missing("Item").to_string())
    );
    let status_in_atomic = "<Atomic><CmdID>1</CmdID><Status><CmdID>2</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef>\
                            <Cmd>SyncHdr</Cmd><Data>200</Data></Status></Atomic>";
    assert_eq!(refused(status_in_atomic).0, "Atomic");
    let no_code = "<Status><CmdID>2</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd></Status>";
    assert_eq!(
        refused(no_code),
        ("Status", 400, SyncMlError::Missing("Status/Data").to_string())
    );
    let bad_size = "<Replace><CmdID>1</CmdID><Item><Target><LocURI>./a</LocURI></Target>\
                    <Meta><Size xmlns=\"syncml:metinf\">big</Size></Meta></Item></Replace>";
    assert_eq!(refused(bad_size).0, "Replace");
    // An empty LocURI reads as no Source: the command stays.
    let empty_loc = "<Replace><CmdID>1</CmdID><Item><Source><LocURI> </LocURI></Source><Data>x</Data></Item></Replace>";
    let Command::Replace(r) = &parse(&wrap(empty_loc)).unwrap().body.commands[0] else {
        panic!("not a Replace")
    };
    assert_eq!(r.items[0].source, None);
    // The SyncHdr stays strict: without it there is no message to answer.
    let no_hdr_loc = wrap("<Final/>").replace("<SessionID>A</SessionID>", "<SessionID></SessionID>");
    assert!(parse(&no_hdr_loc).is_err());
}

#[test]
fn unknown_commands_are_refused_one_by_one() {
    let unknown = |name: &str| SyncMlError::UnknownCommand(name.into()).to_string();
    assert_eq!(refused("<Sync><CmdID>1</CmdID></Sync>"), ("Sync", 406, unknown("Sync")));
    assert_eq!(refused("<Copy><CmdID>1</CmdID></Copy>"), ("Copy", 406, unknown("Copy")));
    assert_eq!(refused("<Frobnicate><CmdID>1</CmdID></Frobnicate>").0, "Unknown");
    // Elements of other namespaces are extensions, not commands: skipped.
    let foreign = format!("<msft:Foo xmlns:msft=\"{NS_MSFT}\"/>");
    assert!(parse(&wrap(&foreign)).unwrap().body.commands.is_empty());
    // Inside a container the container is refused whole.
    let in_sequence = "<Sequence><CmdID>1</CmdID><Map><CmdID>2</CmdID></Map></Sequence>";
    assert_eq!(refused(in_sequence), ("Sequence", 406, unknown("Map")));
    // The rest of the message is kept, in order.
    let mixed = parse(&wrap(
        "<Sync><CmdID>1</CmdID></Sync><Alert><CmdID>2</CmdID><Data>1201</Data></Alert><Final/>",
    ))
    .unwrap();
    assert_eq!(mixed.body.commands.len(), 2);
    assert!(matches!(&mixed.body.commands[1], Command::Alert(a) if a.code() == Some(1201)));
    assert!(mixed.body.final_);
}

#[test]
fn rejects_deep_nesting() {
    let depth = crate::xml::MAX_DEPTH + 4;
    let open: String = (1..=depth).map(|i| format!("<Sequence><CmdID>{i}</CmdID>")).collect();
    let xml = wrap(&format!("{open}{}", "</Sequence>".repeat(depth)));
    assert_eq!(parse(&xml), Err(SyncMlError::Xml(XmlError::TooDeep)));
}

/// There is no per-value cap: a 10 MB Data parses. The HTTP layer applies the request body limit
/// before the codec ever sees the bytes.
#[test]
fn large_data_value_parses() {
    let big = "A".repeat(10 * 1024 * 1024);
    let xml = wrap(&format!(
        "<Replace><CmdID>1</CmdID><Item><Target><LocURI>./a</LocURI></Target><Data>{big}</Data></Item></Replace>"
    ));
    let msg = parse(&xml).unwrap();
    let Command::Replace(r) = &msg.body.commands[0] else {
        panic!()
    };
    assert_eq!(r.items[0].data.as_ref().unwrap().as_str().len(), big.len());
}

// ---- Round-trip properties ----

/// Character data XML 1.0 can carry (no C0 controls except tab/LF/CR, no U+FFFE/U+FFFF), biased
/// towards markup characters.
fn payload() -> BoxedStrategy<String> {
    prop_oneof![
        "[^\\x{0}-\\x{8}\\x{b}\\x{c}\\x{e}-\\x{1f}\\x{fffe}\\x{ffff}]{0,16}",
        "[<>&\"' a-z0-9é€😀\\r\\n\\t\\]]{0,16}",
    ]
    .boxed()
}

/// Structural values are trimmed of XML whitespace and empty ones read as absent.
fn token() -> BoxedStrategy<String> {
    payload()
        .prop_map(|s| s.trim_matches([' ', '\t', '\r', '\n']).to_owned())
        .prop_filter("non-empty", |s| !s.is_empty())
        .boxed()
}

fn cmd_id() -> BoxedStrategy<String> {
    token()
        .prop_filter("CmdID 0 is reserved", |s| !s.bytes().all(|b| b == b'0'))
        .boxed()
}

fn meta() -> BoxedStrategy<Meta> {
    (
        proptest::option::of(token()),
        proptest::option::of(token()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(token()),
        proptest::option::of(token()),
    )
        .prop_map(
            |(format, type_, max_msg_size, max_obj_size, size, next_nonce, mark)| Meta {
                format,
                type_,
                max_msg_size,
                max_obj_size,
                size,
                next_nonce,
                mark,
            },
        )
        .boxed()
}

fn loc() -> BoxedStrategy<LocTarget> {
    (token(), proptest::option::of(token()))
        .prop_map(|(loc_uri, loc_name)| LocTarget { loc_uri, loc_name })
        .boxed()
}

fn item_data() -> BoxedStrategy<ItemData> {
    let esc = |s: &str| crate::xml::escape(s).replace('\r', "&#13;");
    prop_oneof![
        payload().prop_map(ItemData::Text),
        (payload(), payload()).prop_map(move |(a, b)| ItemData::Xml(format!(
            "<a x=\"{}\">{}<msft:b/></a>",
            esc(&a),
            esc(&b)
        ))),
    ]
    .boxed()
}

fn item() -> BoxedStrategy<Item> {
    (
        proptest::option::of(loc()),
        proptest::option::of(loc()),
        proptest::option::of(meta()),
        proptest::option::of(item_data()),
        any::<bool>(),
    )
        .prop_map(|(source, target, meta, data, more_data)| Item {
            source,
            target,
            meta,
            data,
            more_data,
        })
        .boxed()
}

fn items(min: usize) -> BoxedStrategy<Vec<Item>> {
    proptest::collection::vec(item(), min..min + 2).boxed()
}

fn item_command() -> BoxedStrategy<ItemCommand> {
    (cmd_id(), proptest::option::of(meta()), items(1))
        .prop_map(|(cmd_id, meta, items)| ItemCommand { cmd_id, meta, items })
        .boxed()
}

fn alert() -> BoxedStrategy<Alert> {
    (cmd_id(), token(), items(0))
        .prop_map(|(cmd_id, data, items)| Alert { cmd_id, data, items })
        .boxed()
}

/// Operations allowed inside Atomic and Sequence.
fn operation() -> BoxedStrategy<Command> {
    prop_oneof![
        alert().prop_map(Command::Alert),
        item_command().prop_map(Command::Get),
        item_command().prop_map(Command::Add),
        item_command().prop_map(Command::Replace),
        item_command().prop_map(Command::Delete),
        item_command().prop_map(Command::Exec),
    ]
    .boxed()
}

fn container(inner: impl Strategy<Value = Command> + 'static) -> BoxedStrategy<Container> {
    (
        cmd_id(),
        proptest::option::of(meta()),
        proptest::collection::vec(inner, 0..3),
    )
        .prop_map(|(cmd_id, meta, commands)| Container { cmd_id, meta, commands })
        .boxed()
}

fn status() -> BoxedStrategy<Status> {
    (
        (cmd_id(), token(), token(), token()),
        proptest::collection::vec(token(), 0..2),
        proptest::collection::vec(token(), 0..2),
        proptest::option::of(meta()),
        token(),
        items(0),
    )
        .prop_map(
            |((cmd_id, msg_ref, cmd_ref, cmd), target_ref, source_ref, chal, data, items)| Status {
                cmd_id,
                msg_ref,
                cmd_ref,
                cmd,
                target_ref,
                source_ref,
                chal,
                data,
                items,
            },
        )
        .boxed()
}

fn results() -> BoxedStrategy<Results> {
    (
        cmd_id(),
        proptest::option::of(token()),
        token(),
        proptest::option::of(meta()),
        items(0),
    )
        .prop_map(|(cmd_id, msg_ref, cmd_ref, meta, items)| Results {
            cmd_id,
            msg_ref,
            cmd_ref,
            meta,
            items,
        })
        .boxed()
}

fn command() -> BoxedStrategy<Command> {
    let in_atomic = prop_oneof![operation(), container(operation()).prop_map(Command::Sequence)];
    let in_sequence = prop_oneof![operation(), container(operation()).prop_map(Command::Atomic)];
    prop_oneof![
        status().prop_map(Command::Status),
        results().prop_map(Command::Results),
        operation(),
        container(in_atomic).prop_map(Command::Atomic),
        container(in_sequence).prop_map(Command::Sequence),
    ]
    .boxed()
}

fn cred() -> BoxedStrategy<Cred> {
    (proptest::option::of(meta()), token())
        .prop_map(|(meta, data)| Cred { meta, data })
        .boxed()
}

fn syncml() -> BoxedStrategy<SyncMl> {
    let header = (
        (token(), token(), "[0-9A-Fa-f]{1,16}", any::<u32>()),
        proptest::option::of(loc()),
        proptest::option::of(loc()),
        proptest::option::of(cred()),
        proptest::option::of(meta()),
    )
        .prop_map(
            |((ver_dtd, ver_proto, session_id, msg_id), target, source, cred, meta)| SyncHdr {
                ver_dtd,
                ver_proto,
                session_id,
                msg_id,
                target,
                source,
                cred,
                meta,
            },
        );
    let body = (proptest::collection::vec(command(), 0..4), any::<bool>())
        .prop_map(|(commands, final_)| SyncBody { commands, final_ });
    (header, body)
        .prop_map(|(header, body)| SyncMl { header, body })
        .boxed()
}

/// Writer output reformatted the way other peers write SyncML: whitespace and comments between
/// elements, and the namespace in the OMA DTD's lower case (compared ignoring case). `<Data>`
/// contents are left as they are, since they are payload.
fn reformat(xml: &str, between: &str) -> String {
    let spread = |s: &str| s.replace("><", &format!(">{between}<"));
    let mut out = String::with_capacity(xml.len() * 2);
    let mut rest = xml;
    while let Some(start) = rest.find("<Data>") {
        let (outside, tail) = rest.split_at(start);
        out.push_str(&spread(outside));
        let end = tail.find("</Data>").map_or(tail.len(), |e| e + "</Data>".len());
        out.push_str(&tail[..end]);
        rest = &tail[end..];
    }
    out.push_str(&spread(rest));
    out.replacen(NS_SYNCML, "syncml:syncml1.2", 1)
}

proptest! {
    /// parse → write → parse on messages our writer did not lay out: the same message, and the
    /// writer's text for it is stable (the `syncml_round_trip` fuzz target's property).
    #[test]
    fn parse_write_parse_of_foreign_layout(
        msg in syncml(),
        between in prop_oneof![Just(String::new()), "[ \t\r\n]{1,4}", Just("\n  <!-- x -->\n".to_owned())],
    ) {
        let foreign = reformat(&write(&msg), &between);
        prop_assert_eq!(parse(&foreign), Ok(msg.clone()));
        crate::fuzz_checks::syncml_round_trip(foreign.as_bytes());
    }

    #[test]
    fn write_parse_round_trip(msg in syncml()) {
        let out = write(&msg);
        prop_assert_eq!(parse(&out), Ok(msg.clone()));
        let without = write(&SyncMl { body: SyncBody { commands: vec![], final_: msg.body.final_ }, ..msg.clone() });
        prop_assert_eq!(out.len(), without.len() + msg.body.commands.iter().map(estimated_size).sum::<usize>());
    }

    /// Whatever text goes in, the writer emits well-formed XML.
    #[test]
    fn writer_output_is_always_well_formed(uri in any::<String>(), data in any::<String>(), code in any::<String>()) {
        let msg = SyncMl {
            header: SyncHdr::new("1", 1, &uri, &uri),
            body: SyncBody {
                commands: vec![Command::Alert(Alert {
                    cmd_id: code.clone(),
                    data: code,
                    items: vec![Item { data: Some(ItemData::Text(data)), ..Item::target(uri) }],
                })],
                final_: true,
            },
        };
        prop_assert!(crate::xml::parse(&write(&msg)).is_ok());
    }
}

/// The committed fuzz corpora (and any local findings in fuzz/artifacts) through the fuzz targets'
/// own checks, on stable Rust.
#[test]
fn replay_fuzz_corpus() {
    crate::fuzz_checks::replay("syncml_parse", crate::fuzz_checks::syncml_parse);
    crate::fuzz_checks::replay("syncml_round_trip", crate::fuzz_checks::syncml_round_trip);
}
