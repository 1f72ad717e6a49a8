//! The adversarial plan's tests that had no home yet (issue 17, docs/SECURITY.md maps every plan
//! item to its test): the unauthenticated route sweep (I5), hostile XML on every SOAP endpoint,
//! concurrent duplicate messages and a device racing its own wipe. Each asserts the answer and then
//! the invariants ([`crate::invariants`]); a refused input must leave the ledgers unchanged.

use std::time::{Duration, Instant};

use steward_core::*;
use steward_sim::session::{SessionError, SessionTrigger};
use steward_sim::{Credentials, HttpsClient};
use steward_windows::{CommandItem, OmaDmCommand, Verb};
use steward_windows_proto::syncml::{self, SyncMl};

use crate::common::{TestServer, admin};
use crate::invariants;

const SYNCML: &str = "application/vnd.syncml.dm+xml";
const SOAP: &str = "application/soap+xml; charset=utf-8";
const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";

fn replace(target: &str, value: &str) -> OmaDmCommand {
    OmaDmCommand::single(
        Verb::Replace,
        CommandItem {
            target: target.into(),
            format: Some("int".into()),
            type_: None,
            data: Some(value.into()),
        },
    )
}

/// Posts the same message on two connections at once (a duplicated POST, a retry racing the
/// original) and returns both answers.
async fn post_twice(a: &HttpsClient, b: &HttpsClient, url: &str, msg: &SyncMl) -> [syncml::SyncMl; 2] {
    let body = syncml::write(msg);
    let (r1, r2) = tokio::join!(a.post(url, SYNCML, body.clone()), b.post(url, SYNCML, body));
    [r1.unwrap(), r2.unwrap()].map(|r| {
        assert!(r.status.is_success(), "{}: {}", r.status, r.text());
        syncml::parse_bytes(&r.body).unwrap()
    })
}

/// The CmdIDs of the commands a server message carries (not its Status elements).
fn carried(msg: &SyncMl) -> Vec<String> {
    msg.body
        .commands
        .iter()
        .filter(|c| c.name() != "Status")
        .map(|c| c.cmd_id().to_owned())
        .collect()
}

// ---------------------------------------------------------------- A9 / I5: the anonymous column

/// With real data in every table (an enrolled, managed device with a queued command, a profile
/// row), no route outside the public device endpoints and the sign-in pages answers 2xx without
/// credentials, even for the id of a device that exists, and no answer names the device.
#[tokio::test]
async fn no_route_answers_without_authentication() {
    let t = TestServer::start().await;
    let mut d = t.managed_device(None).await;
    let client = t.device_client(&d);
    d.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    let e = t.enrollment_of(&d).await;
    admin::queue_command(t.store(), &e, replace(CAMERA, "0"), "admin", 0, None)
        .await
        .unwrap();
    let routes = invariants::protected_routes(Some(e.id));
    assert!(
        routes.len() >= steward_api::ROUTES.len() / 2 + invariants::CONSOLE_ROUTES.len() / 2,
        "the sweep covers the tables: {routes:?}"
    );
    invariants::check_all(&t).await;
    t.server.shutdown().await;
}

// ---------------------------------------------------------------- B1 / C1: hostile XML, early

/// Billion laughs, XXE (file and cloud-metadata URLs), 10⁵-deep nesting and an oversized body on
/// discovery, policy and enrollment: each refused (a SOAP fault or 413), never expanded, quickly,
/// and nothing written.
#[tokio::test]
async fn hostile_xml_on_every_soap_endpoint_is_refused_early() {
    let t = TestServer::start().await;
    let client = t.client();
    let before = invariants::check(&t).await;
    let laughs = {
        let mut dtd = String::from("<!ENTITY l0 \"lol\">");
        for i in 1..10 {
            let prev = format!("&l{};", i - 1).repeat(10);
            dtd.push_str(&format!("<!ENTITY l{i} \"{prev}\">"));
        }
        format!(
            "<?xml version=\"1.0\"?><!DOCTYPE s:Envelope [{dtd}]><s:Envelope \
             xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body>&l9;</s:Body></s:Envelope>"
        )
    };
    let xxe = |url: &str| {
        format!(
            "<?xml version=\"1.0\"?><!DOCTYPE s:Envelope [<!ENTITY x SYSTEM \"{url}\">]><s:Envelope \
             xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body>&x;</s:Body></s:Envelope>"
        )
    };
    let deep = format!(
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body>{}{}</s:Body></s:Envelope>",
        "<a>".repeat(100_000),
        "</a>".repeat(100_000)
    );
    let limit = t.server.config.limits.enrollment_body_bytes;
    let oversized = format!(
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body>{}</s:Body></s:Envelope>",
        "A".repeat(limit)
    );
    let bodies = [
        ("billion laughs", laughs),
        ("XXE file", xxe("file:///etc/passwd")),
        ("XXE metadata", xxe("http://169.254.169.254/latest/meta-data/")),
        ("deep nesting", deep),
        ("oversized", oversized),
    ];
    for path in [
        "/EnrollmentServer/Discovery.svc",
        "/EnrollmentServer/Policy.svc",
        "/EnrollmentServer/Enrollment.svc",
    ] {
        for (what, body) in &bodies {
            let started = Instant::now();
            let resp = client.post(&t.url(path), SOAP, body.clone()).await.unwrap();
            let took = started.elapsed();
            let text = resp.text();
            if *what == "oversized" {
                assert_eq!(resp.status, 413, "{path} {what}");
            } else {
                // SOAP faults go out as HTTP 500 (MS-MDE2, interop review C-1): the fault is the
                // refusal, and it names a malformed message.
                assert!(!resp.status.is_success(), "{path} {what}: {}", resp.status);
                assert!(text.contains("MessageFormat"), "{path} {what}: {text}");
            }
            assert!(
                !text.contains("lollol") && !text.contains("root:"),
                "{path} {what} expanded"
            );
            // Refused before any expansion or full parse: well under a second even on a busy CI.
            assert!(took < Duration::from_secs(2), "{path} {what} took {took:?}");
        }
    }
    let after = invariants::check_all(&t).await;
    before.assert_unchanged(&after, "hostile XML");
    t.server.shutdown().await;
}

// ---------------------------------------------------------------- E1: duplicate messages at once

/// The same SyncML message posted twice at once, at every step of a session (the first message
/// carrying the device's inventory, then its Status for an admin command): the command is
/// recorded once, with one answer event, and the ledgers reconcile.
#[tokio::test]
async fn concurrent_duplicate_messages_are_recorded_once() {
    let t = TestServer::start().await;
    let mut d = t.managed_device(None).await;
    let (c1, c2) = (t.device_client(&d), t.device_client(&d));
    let e = t.enrollment_of(&d).await;
    let cmd = admin::queue_command(t.store(), &e, replace(CAMERA, "0"), "admin", 0, None)
        .await
        .unwrap();
    let url = d.session_url();
    let mut msg = d.start_session(SessionTrigger::Scheduled).unwrap();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 10, "the session ends");
        let answers = post_twice(&c1, &c2, &url, &msg).await;
        // One of the two is processed first; the other's commit then finds the session record
        // changed, is refused as stale and processed again, and is now an exact repeat: it gets
        // the first one's answer byte for byte (rule 7's at-least-once delivery), on SQLite and
        // PostgreSQL alike. Nothing of it is planned twice (docs/SECURITY.md, "Findings").
        let [first, second] = answers;
        assert_eq!(first, second, "a duplicate is answered exactly as the original");
        match d.respond(&first).unwrap() {
            Some(next) => msg = next,
            None => break,
        }
    }
    d.end_session();
    assert_eq!(d.tree.value(CAMERA), Some("0"));
    let c = t.store().command(cmd).await.unwrap().unwrap();
    assert_eq!((c.state, c.status_code), (CommandState::Succeeded, Some(200)));
    let answered = t
        .store()
        .device_events_for(e.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|ev| ev.data.get("command_id").and_then(|v| v.as_str()) == Some(cmd.to_string().as_str()))
        .count();
    assert_eq!(answered, 1, "one answer event for the command");
    invariants::check_all(&t).await;
    t.server.shutdown().await;
}

// ---------------------------------------------------------------- E2: a device racing its wipe

/// A device acknowledges its pending wipe on two connections at once while a third connection
/// opens a new session with the same certificate. The wipe is recorded once, the certificate is
/// revoked and refused afterwards, and the DeviceID enrolled again gets nothing of the old queue
/// (rule 7: re-enrollment fences the queue).
#[tokio::test]
async fn a_device_racing_its_own_wipe() {
    // Three requests of one device at once: room for all three, so that what races is the wipe
    // and not the per-device request limit (2 by default; its 503 is limits::'s subject).
    let t = TestServer::start_with(|c| c.limits.sessions_per_device = 3).await;
    let mut d = t.managed_device(None).await;
    let (c1, c2, c3) = (t.device_client(&d), t.device_client(&d), t.device_client(&d));
    let e = t.enrollment_of(&d).await;
    let wipe = admin::queue_action(t.store(), &e, &Action::Wipe(WipeKind::Protected))
        .await
        .unwrap();
    let url = d.session_url();
    let first = d.start_session(SessionTrigger::Scheduled).unwrap();
    let answer = c1.post(&url, SYNCML, syncml::write(&first)).await.unwrap();
    assert!(answer.status.is_success(), "{}", answer.status);
    let server = syncml::parse_bytes(&answer.body).unwrap();
    let reply = d.respond(&server).unwrap().expect("the device answers the wipe");
    assert!(d.wiped.is_some(), "the device executed the wipe");
    // An admin queues another command while the wipe is in flight: it is stale from here on.
    let stale = admin::queue_command(t.store(), &e, replace(CAMERA, "0"), "admin", 0, None)
        .await
        .unwrap();
    // The acknowledgement twice at once, racing a fresh session on the same certificate.
    let fresh = {
        let mut m = first.clone();
        m.header.msg_id = 1;
        m.header.session_id = "FF".into();
        m
    };
    let body = syncml::write(&reply);
    let (r1, r2, r3) = tokio::join!(
        c1.post(&url, SYNCML, body.clone()),
        c2.post(&url, SYNCML, body),
        c3.post(&url, SYNCML, syncml::write(&fresh)),
    );
    let statuses = [r1.unwrap().status, r2.unwrap().status, r3.unwrap().status];
    assert!(statuses[..2].iter().any(|s| s.is_success()), "{statuses:?}");
    for s in statuses {
        assert!(
            s.is_success() || s == 403,
            "only success or the revoked certificate's 403: {statuses:?}"
        );
    }
    d.end_session();

    let after = t.store().enrollment_by_id(e.id).await.unwrap().unwrap();
    assert_eq!(after.state, EnrollmentState::Wiped);
    let w = t.store().command(wipe).await.unwrap().unwrap();
    assert_eq!(w.state, CommandState::Succeeded);
    let log = t.store().issuance_log().await.unwrap();
    assert!(
        log.iter()
            .any(|l| l.event == IssuanceEvent::Revoked && l.serial == e.cert_serial)
    );
    let wiped_events = t
        .store()
        .device_events_for(e.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|ev| ev.kind == EventKind::Wiped)
        .count();
    assert_eq!(wiped_events, 1);

    // The revoked certificate opens no new session.
    d.wiped = None;
    let err = d.run_session(&c3, SessionTrigger::Scheduled).await.unwrap_err();
    assert!(matches!(err, SessionError::HttpStatus { status: 403, .. }), "{err:?}");

    // The same DeviceID enrolled again: the stale command of the old enrollment never reaches it.
    let token = t.token(Some(1), ::time::Duration::hours(1), None).await;
    let mut opts = t.options(Credentials::Password(token));
    opts.device_id = Some(d.profile.device_id.clone());
    let enrolled = steward_sim::enroll::enroll(&t.client(), &opts).await.unwrap();
    let again_doc = enrolled.provisioning_doc.clone();
    let profile = steward_sim::csp::DeviceProfile::random(&enrolled.device_id);
    let mut again = steward_sim::ManagedDevice::from_enrolled(enrolled, profile);
    again.md5 = crate::common::md5_credentials(&again_doc);
    let report = again
        .run_session(&t.device_client(&again), SessionTrigger::Scheduled)
        .await
        .unwrap();
    assert!(
        report
            .received
            .iter()
            .all(|c| c.cmd_id != stale.wire_id() && c.cmd_id != wipe.wire_id()),
        "{:?}",
        report.received
    );
    assert!(again.wiped.is_none() && again.tree.value(CAMERA).is_none());
    let old = t.store().command(stale).await.unwrap().unwrap();
    assert_eq!(old.enrollment_id, e.id);
    assert!(
        !matches!(
            old.state,
            CommandState::Succeeded | CommandState::Failed | CommandState::Accepted
        ),
        "the stale command was never answered: {:?}",
        old.state
    );
    invariants::check_all(&t).await;
    t.server.shutdown().await;
}

// ---------------------------------------------------------------- B4 / I2: statuses that lie

/// Device A answers, besides its own command: B's command that the server sent to B (B's session
/// never answered it), a CmdID never sent, and its own command a second time. A's command is
/// recorded once; B's command and events are byte-identical until B itself answers.
#[tokio::test]
async fn statuses_for_another_devices_or_unsent_commands_change_nothing() {
    let t = TestServer::start().await;
    let mut a = t.managed_device(None).await;
    let mut b = t.managed_device(None).await;
    let (ca, cb) = (t.device_client(&a), t.device_client(&b));
    let (ea, eb) = (t.enrollment_of(&a).await, t.enrollment_of(&b).await);
    let cmd_a = admin::queue_command(t.store(), &ea, replace(CAMERA, "0"), "admin", 0, None)
        .await
        .unwrap();
    let cmd_b = admin::queue_command(t.store(), &eb, replace(CAMERA, "1"), "admin", 0, None)
        .await
        .unwrap();

    // B's command goes out to B, whose answer never comes.
    let first = b.start_session(SessionTrigger::Scheduled).unwrap();
    let resp = cb.post(&b.session_url(), SYNCML, syncml::write(&first)).await.unwrap();
    assert!(carried(&syncml::parse_bytes(&resp.body).unwrap()).contains(&cmd_b.wire_id()));
    b.end_session();
    let b_commands = format!("{:?}", t.store().commands_for_enrollment(eb.id).await.unwrap());
    let b_events = format!("{:?}", t.store().device_events_for(eb.id).await.unwrap());

    let url = a.session_url();
    let mut msg = a.start_session(SessionTrigger::Scheduled).unwrap();
    let mut lied = false;
    for _ in 0..10 {
        let resp = ca.post(&url, SYNCML, syncml::write(&msg)).await.unwrap();
        assert!(resp.status.is_success(), "{}: {}", resp.status, resp.text());
        let server = syncml::parse_bytes(&resp.body).unwrap();
        let Some(mut next) = a.respond(&server).unwrap() else {
            break;
        };
        let own = next.body.commands.iter().find_map(|c| match c {
            syncml::Command::Status(s) if s.cmd_ref == cmd_a.wire_id() => Some(s.clone()),
            _ => None,
        });
        if let Some(own) = own.filter(|_| !lied) {
            lied = true;
            let forged = |cmd_id: &str, cmd_ref: String| {
                syncml::Command::Status(syncml::Status {
                    cmd_id: cmd_id.into(),
                    cmd_ref,
                    ..own.clone()
                })
            };
            next.body.commands.push(forged("9001", cmd_b.wire_id()));
            next.body.commands.push(forged("9002", "424242".into()));
            next.body.commands.push(forged("9003", cmd_a.wire_id()));
        }
        msg = next;
    }
    a.end_session();
    assert!(lied, "A answered its command");

    let c = t.store().command(cmd_a).await.unwrap().unwrap();
    assert_eq!((c.state, c.status_code), (CommandState::Succeeded, Some(200)));
    assert_eq!(
        format!("{:?}", t.store().commands_for_enrollment(eb.id).await.unwrap()),
        b_commands,
        "B's queue changed"
    );
    assert_eq!(
        format!("{:?}", t.store().device_events_for(eb.id).await.unwrap()),
        b_events,
        "B's events changed"
    );
    assert!(t.store().command_result(cmd_b).await.unwrap().is_none());
    invariants::check(&t).await;

    // B's own answer, in its next session, is the one recorded.
    b.run_session(&cb, SessionTrigger::Scheduled).await.unwrap();
    let c = t.store().command(cmd_b).await.unwrap().unwrap();
    assert_eq!(c.state, CommandState::Succeeded);
    assert_eq!(
        t.store().command_result(cmd_b).await.unwrap().unwrap().enrollment_id,
        eb.id
    );
    invariants::check_all(&t).await;
    t.server.shutdown().await;
}

// ---------------------------------------------------------------- E3: cancel while delivering

/// An admin cancels a command at the moment the device fetches it (both at once), and another
/// after the device received it but before it answered. Each command ends either delivered and
/// recorded or cancelled and never recorded — never both — and the ledgers agree.
#[tokio::test]
async fn a_cancel_racing_delivery_is_either_delivered_or_cancelled() {
    let t = TestServer::start().await;
    let mut d = t.managed_device(None).await;
    let c = t.device_client(&d);
    let e = t.enrollment_of(&d).await;
    let racing = admin::queue_command(t.store(), &e, replace(CAMERA, "0"), "admin", 0, None)
        .await
        .unwrap();
    let url = d.session_url();
    let first = d.start_session(SessionTrigger::Scheduled).unwrap();
    let now = ::time::OffsetDateTime::now_utc();
    let (resp, cancelled) = tokio::join!(
        c.post(&url, SYNCML, syncml::write(&first)),
        t.store().cancel_command(racing, now)
    );
    let resp = resp.unwrap();
    let cancelled = cancelled.unwrap();
    let server = syncml::parse_bytes(&resp.body).unwrap();
    let delivered = carried(&server).contains(&racing.wire_id());
    let mut msg = d.respond(&server).unwrap();
    // A second command, cancelled after it went out and before the device's answer arrives.
    let late = admin::queue_command(t.store(), &e, replace(CAMERA, "1"), "admin", 0, None)
        .await
        .unwrap();
    let mut late_cancelled = None;
    for _ in 0..10 {
        let Some(m) = msg else { break };
        let resp = c.post(&url, SYNCML, syncml::write(&m)).await.unwrap();
        assert!(resp.status.is_success(), "{}", resp.status);
        let server = syncml::parse_bytes(&resp.body).unwrap();
        if late_cancelled.is_none() && carried(&server).contains(&late.wire_id()) {
            late_cancelled = Some(
                t.store()
                    .cancel_command(late, ::time::OffsetDateTime::now_utc())
                    .await
                    .unwrap(),
            );
        }
        msg = d.respond(&server).unwrap();
    }
    d.end_session();
    // Another session picks up anything left.
    d.run_session(&c, SessionTrigger::Scheduled).await.unwrap();

    for (id, cancel_won) in [(racing, cancelled), (late, late_cancelled.unwrap_or(false))] {
        let cmd = t.store().command(id).await.unwrap().unwrap();
        let result = t.store().command_result(id).await.unwrap();
        match cmd.state {
            CommandState::Cancelled => assert!(result.is_none(), "{id} cancelled and recorded"),
            CommandState::Succeeded => {
                assert!(result.is_some(), "{id} succeeded unrecorded");
                assert!(!cancel_won, "{id}: the cancel was acknowledged but the command ran");
            }
            other => panic!("{id} ended {other:?}"),
        }
    }
    // The cancel (one statement) commits before the check-in (a TLS request, a parse, a plan):
    // before its context read, or while its answer is built, and then the check-in's commit
    // finds the command no longer open, is refused as stale and is planned again without it.
    // Either way a cancel that won was never sent, on both backends.
    if cancelled {
        assert!(!delivered, "a command cancelled before delivery was sent");
    }
    invariants::check(&t).await;
    t.server.shutdown().await;
}
