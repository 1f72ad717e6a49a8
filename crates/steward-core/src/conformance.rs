//! The storage conformance stories: scripted sequences every backend must pass, so SQLite and
//! PostgreSQL behave identically. There is one story per concern (mostly one per store trait); each
//! starts from a fresh, empty store, takes the narrowest traits it needs plus [`Inspect`], and
//! panics with a message naming the step at the first divergence. [`run_all`] runs every story, each
//! on a fresh store; a backend's tests had better call the stories one test each, so that one
//! failure does not hide the others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;

use time::{Duration, OffsetDateTime};

use crate::*;

/// Runs every story, each on a store `fresh` makes (fresh and empty).
pub async fn run_all<S, F, Fut>(mut fresh: F)
where
    S: Store + Inspect,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    enrollments(&fresh().await).await;
    replaces_conflict(&fresh().await).await;
    command_queue(&fresh().await).await;
    checkin_hot_path(&fresh().await).await;
    completions(&fresh().await).await;
    requeue(&fresh().await).await;
    enqueue_and_sent(&fresh().await).await;
    stale_checkins(&fresh().await).await;
    renewal_plans(&fresh().await).await;
    inventory(&fresh().await).await;
    users(&fresh().await).await;
    groups(&fresh().await).await;
    access(&fresh().await).await;
    audit_chain(&fresh().await).await;
    events(&fresh().await).await;
    webhooks(&fresh().await).await;
    device_reports(&fresh().await).await;
    dashboard(&fresh().await).await;
    readiness(&fresh().await).await;
    profiles(&fresh().await).await;
    configuration_in_checkin(&fresh().await).await;
    rollouts(&fresh().await).await;
    dynamic_groups(&fresh().await).await;
    device_tags(&fresh().await).await;
    config_lock_versions(&fresh().await).await;
}

// ---------------------------------------------------------------- fixtures

fn now() -> OffsetDateTime {
    // Whole microseconds: the resolution every backend stores.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000).unwrap()
}

/// The thumbprint of the certificate a story calls `name`.
fn thumb(name: &str) -> Thumbprint {
    Thumbprint::of_der(name.as_bytes())
}

/// The certificate a story calls `serial`.
fn cert(serial: &str) -> CertRef {
    CertRef {
        serial: CertSerial::new(serial),
        thumbprint: thumb(serial),
    }
}

/// The session credential every story's enrollment provisions.
const CREDENTIAL: &str = "bWQ1LWtleQ==";

fn new_enrollment(device: &str, serial: &str, token: Option<EnrollmentTokenId>, at: OffsetDateTime) -> Enrollment {
    Enrollment {
        id: EnrollmentId::new(),
        platform: Platform::Windows,
        device_id: DeviceId::parse(device).unwrap(),
        hardware_id: Some("HW".into()),
        device_name: Some("PC-1".into()),
        os_version: Some("10.0.26100.1".into()),
        os_edition: Some("72".into()),
        enrollment_type: EnrollmentType::Full,
        user_email: Some("a@example.com".into()),
        auth_method: if token.is_some() {
            AuthMethod::EnrollmentToken
        } else {
            AuthMethod::UserPassword
        },
        enrollment_token_id: token,
        group_id: None,
        cert_serial: CertSerial::new(serial),
        cert_thumbprint: thumb(serial),
        cert_not_after: at + Duration::days(365),
        previous_cert: None,
        state: EnrollmentState::Active,
        enrolled_at: at,
        updated_at: at,
        last_seen_at: None,
    }
}

/// The commit of a first enrollment of `e`'s device.
fn commit(
    e: Enrollment,
    token: Option<EnrollmentTokenId>,
    nonce: Option<(TokenHash, OffsetDateTime)>,
) -> EnrollmentCommit {
    EnrollmentCommit {
        subject: format!("CN={}", e.device_id),
        not_before: e.enrolled_at,
        enrollment: e,
        consume_token: token,
        consume_nonce: nonce,
        session_credential: Some(CREDENTIAL.into()),
        replaces: None,
    }
}

/// The commit of `e` re-enrolling the device whose active enrollment is (as read) `replaced`.
fn recommit(e: Enrollment, replaced: &Enrollment) -> EnrollmentCommit {
    EnrollmentCommit {
        replaces: ReplacedEnrollment::of(replaced),
        ..commit(e, None, None)
    }
}

/// Enrolls a device that has no enrollment yet and returns the enrollment: a starting point for a
/// backend's own tests.
pub async fn enroll_device<S: EnrollmentStore>(store: &S, device: &str) -> Enrollment {
    let e = new_enrollment(device, &format!("S-{device}"), None, now());
    store
        .commit_enrollment(&commit(e.clone(), None, None))
        .await
        .expect("enrollment");
    e
}

async fn enroll<S: EnrollmentStore>(store: &S, device: &str, serial: &str, at: OffsetDateTime) -> Enrollment {
    let e = new_enrollment(device, serial, None, at);
    store
        .commit_enrollment(&commit(e.clone(), None, None))
        .await
        .expect("enrollment");
    e
}

/// A command body as a platform adapter might write it (opaque to the store).
fn payload(target: &str) -> PlatformPayload {
    PlatformPayload::from_json(serde_json::json!({ "verb": "Get", "target": target }).to_string())
}

fn new_command(
    e: &Enrollment,
    target: &str,
    priority: i32,
    expires_at: Option<OffsetDateTime>,
    at: OffsetDateTime,
) -> NewCommand {
    NewCommand {
        id: CommandId::new(),
        enrollment_id: e.id,
        payload: payload(target),
        priority,
        origin: CommandOrigin::Other("story".into()),
        created_at: at,
        expires_at,
    }
}

/// A session as a platform adapter might keep it (its state is opaque to the store).
fn session(key: &str) -> SessionRecord {
    SessionRecord {
        key: key.into(),
        state: format!(r#"{{"session_id":"{key}","client_msg_id":1}}"#),
        last_request_hash: format!("hash-{key}"),
        last_response: format!("<SyncML>{key}</SyncML>"),
        updated_at: None,
    }
}

fn in_session(s: &SessionRecord) -> CheckinCommit {
    CheckinCommit {
        session: s.clone(),
        ..CheckinCommit::default()
    }
}

fn answered(outcomes: Vec<Outcome>, s: &SessionRecord) -> CheckinCommit {
    CheckinCommit {
        outcomes,
        ..in_session(s)
    }
}

fn ok(command_id: CommandId, code: u16) -> Outcome {
    Outcome::new(command_id, code, vec![], vec![])
}

async fn event_kinds<S: Inspect>(store: &S, id: EnrollmentId) -> Vec<EventKind> {
    store
        .device_events_for(id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect()
}

async fn state_of<S: CommandQueue>(store: &S, id: CommandId) -> CommandState {
    store.command(id).await.unwrap().expect("command").state
}

// ---------------------------------------------------------------- enrollments

/// Enrollment tokens (and the group a token names), enrollment commits (token uses, single-use
/// nonces, all or nothing), re-enrollment, lookups, the issuance log, token revocation and the end
/// of an enrollment.
pub async fn enrollments<S>(store: &S)
where
    S: EnrollmentStore + GroupStore + CommandQueue + CheckinStore + EventLog + Inspect,
{
    let t0 = now();

    // Tokens and groups.
    let hash = TokenHash::of("stw_enr_conformance");
    let token = store
        .create_enrollment_token(&NewEnrollmentToken {
            id: EnrollmentTokenId::new(),
            token_hash: hash,
            description: Some("story".into()),
            max_uses: Some(1),
            expires_at: Some(t0 + Duration::hours(1)),
            group: Some("pilot".into()),
            created_at: t0,
        })
        .await
        .expect("create token");
    let found = store
        .enrollment_token_by_hash(&hash)
        .await
        .unwrap()
        .expect("token by hash");
    assert_eq!(found, token, "token round trip");
    assert!(found.group_id.is_some(), "group created for the token");
    let group = store.group_by_name("pilot").await.unwrap().expect("group by name");
    assert_eq!(Some(group.id), found.group_id);
    assert!(
        store
            .enrollment_token_by_hash(&TokenHash::of("other"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.list_enrollment_tokens().await.unwrap().len(), 1);
    assert_eq!(
        store
            .list_groups()
            .await
            .unwrap()
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        vec!["pilot"]
    );

    // Enrollment commit consumes the token's single use.
    let dev = "0123456789ABCDEF0123456789ABCDEF";
    let first = new_enrollment(dev, "01", Some(token.id), t0);
    store
        .commit_enrollment(&commit(first.clone(), Some(token.id), None))
        .await
        .expect("first commit");
    let active = store
        .active_enrollment_by_device_id(&first.device_id)
        .await
        .unwrap()
        .expect("active enrollment");
    assert_eq!(active, first, "enrollment round trip");
    assert_eq!(store.enrollment_by_id(first.id).await.unwrap().as_ref(), Some(&first));
    assert_eq!(
        store
            .enrollment_by_certificate(&first.cert_thumbprint)
            .await
            .unwrap()
            .as_ref(),
        Some(&first)
    );
    assert!(store.enrollment_by_certificate(&thumb("none")).await.unwrap().is_none());
    assert!(store.enrollment_by_id(EnrollmentId::new()).await.unwrap().is_none());
    assert_eq!(store.enrollment_token_by_hash(&hash).await.unwrap().unwrap().uses, 1);
    // The session credential is read with the check-in context.
    let ctx = store
        .checkin_context(EnrollmentKey::Id(first.id), &[], t0)
        .await
        .unwrap()
        .expect("context");
    assert_eq!(ctx.session_credential.as_deref(), Some(CREDENTIAL));
    // The enrollment was recorded as an event in the same transaction.
    let events = store.device_events_for(first.id).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Enrolled]
    );
    assert_eq!(events[0].device_id, dev);
    assert_eq!(events[0].data, NewDeviceEvent::enrolled(&first, false).data);
    assert_eq!(events[0].at, t0);
    assert!(
        store
            .device_events_after(events[0].seq, 10)
            .await
            .unwrap()
            .iter()
            .all(|e| e.seq > events[0].seq)
    );

    // The exhausted token fails the whole commit: no row, no log line.
    let refused = new_enrollment("FEDCBA9876543210FEDCBA9876543210", "02", Some(token.id), t0);
    let err = store
        .commit_enrollment(&commit(refused.clone(), Some(token.id), None))
        .await;
    assert!(
        matches!(err, Err(StoreError::TokenUnusable(TokenUnusable::Exhausted))),
        "{err:?}"
    );
    assert!(
        store.enrollment_by_id(refused.id).await.unwrap().is_none(),
        "nothing written on failure"
    );
    assert_eq!(store.issuance_log().await.unwrap().len(), 1);
    assert!(store.device_events_for(refused.id).await.unwrap().is_empty());

    // Single-use nonces: spent once committed (the pre-signing check), and refused at the commit.
    let nonce = (TokenHash::of("jti-1"), t0 + Duration::minutes(10));
    assert!(
        !store.nonce_spent(&nonce.0).await.unwrap(),
        "a fresh nonce is not spent"
    );
    let fed = new_enrollment("11111111111111111111111111111111", "03", None, t0);
    store
        .commit_enrollment(&commit(fed, None, Some(nonce)))
        .await
        .expect("federated commit");
    assert!(store.nonce_spent(&nonce.0).await.unwrap(), "a committed nonce is spent");
    assert!(
        !store.nonce_spent(&TokenHash::of("jti-2")).await.unwrap(),
        "only the committed nonce is spent"
    );
    let again = new_enrollment("22222222222222222222222222222222", "04", None, t0);
    let err = store.commit_enrollment(&commit(again.clone(), None, Some(nonce))).await;
    assert!(matches!(err, Err(StoreError::NonceReused)), "{err:?}");
    assert!(store.enrollment_by_id(again.id).await.unwrap().is_none());

    // Re-enrollment of the same DeviceID replaces the old enrollment and revokes its certificate.
    let t1 = t0 + Duration::seconds(5);
    let second = new_enrollment(dev, "05", None, t1);
    store
        .commit_enrollment(&recommit(second.clone(), &first))
        .await
        .expect("re-enrollment");
    let active = store
        .active_enrollment_by_device_id(&second.device_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active.id, second.id);
    let old = store.enrollment_by_id(first.id).await.unwrap().unwrap();
    assert_eq!(old.state, EnrollmentState::Replaced);
    assert_eq!(old.updated_at, t1);
    assert_eq!(store.list_enrollments().await.unwrap().len(), 3);
    let events = store.device_events_for(second.id).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Enrolled]
    );
    assert_eq!(events[0].data, NewDeviceEvent::enrolled(&second, true).data);
    assert_eq!(events[0].data["replaced"], true, "a re-enrollment says so");
    let latest = store
        .latest_enrollment_by_device_id(&first.device_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.id, second.id);

    // The issuance log, in order.
    store
        .append_issuance_log(&IssuanceLogEntry {
            serial: CertSerial::new("99"),
            event: IssuanceEvent::Void,
            thumbprint: None,
            subject: None,
            device_id: None,
            enrollment_id: None,
            not_before: None,
            not_after: None,
            reason: Some("commit failed".into()),
            at: t1,
        })
        .await
        .unwrap();
    let log = store.issuance_log().await.unwrap();
    let events: Vec<(&str, IssuanceEvent)> = log.iter().map(|e| (e.serial.as_str(), e.event)).collect();
    assert_eq!(
        events,
        vec![
            ("01", IssuanceEvent::Issued),
            ("03", IssuanceEvent::Issued),
            ("01", IssuanceEvent::Revoked),
            ("05", IssuanceEvent::Issued),
            ("99", IssuanceEvent::Void),
        ]
    );
    assert_eq!(log[0].not_after, Some(t0 + Duration::days(365)));
    assert_eq!(log[0].enrollment_id, Some(first.id));
    assert_eq!(log[0].thumbprint.as_ref(), Some(&first.cert_thumbprint));
    assert_eq!(log[0].subject.as_deref(), Some(format!("CN={dev}").as_str()));
    assert_eq!(
        (log[2].reason.as_deref(), log[2].thumbprint.as_ref(), log[2].at),
        (
            Some(reasons::SUPERSEDED_BY_REENROLLMENT),
            Some(&first.cert_thumbprint),
            t1
        )
    );
    assert_eq!(log[4].reason.as_deref(), Some("commit failed"));

    // Enrollment token revocation, once.
    assert!(store.revoke_enrollment_token(token.id).await.unwrap());
    assert!(!store.revoke_enrollment_token(token.id).await.unwrap());
    assert!(!store.revoke_enrollment_token(EnrollmentTokenId::new()).await.unwrap());
    let t = store
        .list_enrollment_tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.id == token.id)
        .unwrap();
    assert!(t.revoked);

    // The end of an enrollment: its certificate revoked (logged), its open commands cancelled, the
    // event recorded; only an active enrollment ends.
    let open = new_command(&second, "./A", 0, None, t1);
    store.enqueue_commands(std::slice::from_ref(&open)).await.unwrap();
    let t2 = t1 + Duration::seconds(1);
    let end = EnrollmentEnd::new(EnrollmentState::Unenrolled, reasons::DEVICE_UNENROLLED);
    assert!(store.end_enrollment(second.id, &end, t2).await.unwrap());
    assert!(!store.end_enrollment(second.id, &end, t2).await.unwrap(), "ends once");
    assert!(
        !store.end_enrollment(first.id, &end, t2).await.unwrap(),
        "a replaced enrollment is not active"
    );
    assert!(!store.end_enrollment(EnrollmentId::new(), &end, t2).await.unwrap());
    let ended = store.enrollment_by_id(second.id).await.unwrap().unwrap();
    assert_eq!((ended.state, ended.updated_at), (EnrollmentState::Unenrolled, t2));
    let c = store.command(open.id).await.unwrap().unwrap();
    assert_eq!((c.state, c.completed_at), (CommandState::Cancelled, Some(t2)));
    let events = store.device_events_for(second.id).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Enrolled, EventKind::Unenrolled]
    );
    assert_eq!(
        events[1].data,
        NewDeviceEvent::enrollment_ended(EnrollmentState::Unenrolled, reasons::DEVICE_UNENROLLED).data
    );
    let log = store.issuance_log().await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(
        (last.serial.as_str(), last.event, last.reason.as_deref()),
        ("05", IssuanceEvent::Revoked, Some(reasons::DEVICE_UNENROLLED))
    );
    assert_eq!(log.len(), 6, "one revocation");
    assert!(
        store
            .active_enrollment_by_device_id(&first.device_id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .latest_enrollment_by_device_id(&first.device_id)
            .await
            .unwrap()
            .map(|e| e.id),
        Some(second.id),
        "the newest enrollment, in any state"
    );
}

/// A re-enrollment commits only against the device's active enrollment it was decided on
/// ([`EnrollmentCommit::replaces`]); anything else is a conflict that writes nothing.
pub async fn replaces_conflict<S>(store: &S)
where
    S: EnrollmentStore + Inspect,
{
    let t0 = now();
    let dev = "C0FFEE00C0FFEE00C0FFEE00C0FFEE00";
    let first = enroll(store, dev, "R1", t0).await;
    let conflict = |r: StoreResult<()>| matches!(r, Err(StoreError::Conflict(_)));
    let token = store
        .create_enrollment_token(&NewEnrollmentToken {
            id: EnrollmentTokenId::new(),
            token_hash: TokenHash::of("stw_enr_race"),
            description: None,
            max_uses: Some(5),
            expires_at: None,
            group: None,
            created_at: t0,
        })
        .await
        .unwrap();
    let log_before = store.issuance_log().await.unwrap().len();

    // Decided as a first enrollment, but the device has an active one by now.
    let racing = new_enrollment(dev, "R2", Some(token.id), t0 + Duration::seconds(1));
    assert!(conflict(
        store
            .commit_enrollment(&commit(racing.clone(), Some(token.id), None))
            .await
    ));
    assert_eq!(
        store
            .enrollment_token_by_hash(&token.token_hash)
            .await
            .unwrap()
            .unwrap()
            .uses,
        0,
        "the token's use is not consumed"
    );
    // Decided against another device's enrollment.
    let other = enroll(store, "0DD00DD00DD00DD00DD00DD00DD00DD0", "R3", t0).await;
    let log_before = log_before + 1;
    assert!(conflict(
        store.commit_enrollment(&recommit(racing.clone(), &other)).await
    ));
    // Decided against the right enrollment, whose certificate has changed since (a renewal).
    let renewal = RenewalPlan::for_enrollment(&first, &first.cert_thumbprint)
        .unwrap()
        .commit(
            &first,
            cert("R1b"),
            format!("CN={dev}"),
            t0,
            t0 + Duration::days(365),
            t0,
        );
    store.commit_renewal(&renewal).await.unwrap();
    let log_before = log_before + 1;
    assert!(conflict(
        store.commit_enrollment(&recommit(racing.clone(), &first)).await
    ));
    // Nothing was written by any of them.
    assert!(store.enrollment_by_id(racing.id).await.unwrap().is_none());
    assert_eq!(store.issuance_log().await.unwrap().len(), log_before);
    assert_eq!(store.list_enrollments().await.unwrap().len(), 2);
    let current = store
        .active_enrollment_by_device_id(&first.device_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.id, first.id);
    assert_eq!(current.state, EnrollmentState::Active);

    // Decided against the enrollment as it is now: it commits, and the replaced enrollment's
    // certificates (the renewed one and the one still accepted from before) are revoked.
    store
        .commit_enrollment(&EnrollmentCommit {
            consume_token: Some(token.id),
            ..recommit(racing.clone(), &current)
        })
        .await
        .unwrap();
    let replaced = store.enrollment_by_id(first.id).await.unwrap().unwrap();
    assert_eq!(replaced.state, EnrollmentState::Replaced);
    assert_eq!(replaced.previous_cert, None);
    assert_eq!(
        store
            .enrollment_token_by_hash(&token.token_hash)
            .await
            .unwrap()
            .unwrap()
            .uses,
        1
    );
    let log = store.issuance_log().await.unwrap();
    let revoked: Vec<(&str, Option<&str>)> = log
        .iter()
        .filter(|e| e.event == IssuanceEvent::Revoked)
        .map(|e| (e.serial.as_str(), e.reason.as_deref()))
        .collect();
    assert_eq!(
        revoked,
        vec![
            ("R1", Some(reasons::SUPERSEDED_BY_REENROLLMENT)),
            ("R1b", Some(reasons::SUPERSEDED_BY_REENROLLMENT)),
        ]
    );
    assert!(
        store
            .enrollment_by_certificate(&first.cert_thumbprint)
            .await
            .unwrap()
            .is_none(),
        "the replaced enrollment's earlier certificate finds nothing"
    );
    assert_eq!(
        store
            .active_enrollment_by_device_id(&first.device_id)
            .await
            .unwrap()
            .map(|e| e.id),
        Some(racing.id)
    );

    // Decided against an enrollment that is no longer active.
    let late = new_enrollment(dev, "R4", None, t0 + Duration::seconds(2));
    assert!(conflict(
        store.commit_enrollment(&recommit(late.clone(), &current)).await
    ));
    assert!(conflict(
        store.commit_enrollment(&commit(late.clone(), None, None)).await
    ));
    assert!(store.enrollment_by_id(late.id).await.unwrap().is_none());
    // Decided as a re-enrollment of a device that has no active enrollment.
    let lone = new_enrollment("10E10E10E10E10E10E10E10E10E10E10", "R5", None, t0);
    let named = ReplacedEnrollment::of(&other);
    assert!(conflict(
        store
            .commit_enrollment(&EnrollmentCommit {
                replaces: named,
                ..commit(lone.clone(), None, None)
            })
            .await
    ));
    assert!(store.enrollment_by_id(lone.id).await.unwrap().is_none());
}

// ---------------------------------------------------------------- command queue

/// The command queue: delivery order, expiry, cancellation, and commands reading back as queued.
pub async fn command_queue<S>(store: &S)
where
    S: EnrollmentStore + CommandQueue,
{
    let t0 = now();
    let e = enroll(store, "ABCDEFABCDEFABCDEFABCDEFABCDEF01", "Q1", t0).await;
    let low = new_command(&e, "./A", -10, None, t0);
    let high = new_command(&e, "./B", 100, None, t0);
    let normal = new_command(&e, "./C", 0, None, t0);
    let stale = new_command(&e, "./D", 0, Some(t0 - Duration::seconds(1)), t0);
    let cancelled = new_command(&e, "./E", 0, None, t0);
    let later = new_command(&e, "./F", 0, Some(t0 + Duration::hours(1)), t0);
    let queued = [
        low.clone(),
        high.clone(),
        normal.clone(),
        stale.clone(),
        cancelled.clone(),
        later.clone(),
    ];
    store.enqueue_commands(&queued).await.unwrap();
    assert!(store.cancel_command(cancelled.id, t0).await.unwrap());
    assert!(
        !store.cancel_command(cancelled.id, t0).await.unwrap(),
        "cancel is not repeatable"
    );
    assert!(!store.cancel_command(CommandId::new(), t0).await.unwrap());

    let order: Vec<CommandId> = store
        .deliverable_commands(e.id, t0)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        order,
        vec![high.id, normal.id, later.id, low.id],
        "priority first, then queue order; expired and cancelled out"
    );
    assert_eq!(
        store
            .deliverable_commands(e.id, t0 + Duration::hours(2))
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        vec![high.id, normal.id, low.id],
        "a deadline passes"
    );

    // Commands read back as queued: the payload untouched, the origin kept.
    assert_eq!(store.command(low.id).await.unwrap(), Some(Command::queued(&low)));
    assert_eq!(store.command(later.id).await.unwrap(), Some(Command::queued(&later)));
    let c = store.command(cancelled.id).await.unwrap().unwrap();
    assert_eq!((c.state, c.completed_at), (CommandState::Cancelled, Some(t0)));
    assert!(store.command(CommandId::new()).await.unwrap().is_none());
    let all: Vec<CommandId> = store
        .commands_for_enrollment(e.id)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        all,
        queued.iter().map(|c| c.id).collect::<Vec<_>>(),
        "every command, oldest first"
    );
    assert!(
        store
            .commands_for_enrollment(EnrollmentId::new())
            .await
            .unwrap()
            .is_empty()
    );
    for origin in [
        CommandOrigin::Admin,
        CommandOrigin::Inventory,
        CommandOrigin::Action(ActionKind::Wipe),
        CommandOrigin::Other("profile:x".into()),
    ] {
        let c = NewCommand {
            origin: origin.clone(),
            ..new_command(&e, "./G", 0, None, t0)
        };
        store.enqueue_commands(std::slice::from_ref(&c)).await.unwrap();
        assert_eq!(store.command(c.id).await.unwrap().unwrap().origin, origin);
    }
}

// ---------------------------------------------------------------- check-in

/// The hot path: the context (by certificate, id or active DeviceID) is one snapshot of the
/// enrollment, its credential, session and queue; the commit marks commands sent, records each
/// command's first answer once with the state and event it is given (a repeat records nothing),
/// keeps the raw message and the session, sweeps overdue commands only when asked, and ends the
/// enrollment when told to.
pub async fn checkin_hot_path<S>(store: &S)
where
    S: EnrollmentStore + CommandQueue + CheckinStore + Inspect,
{
    let t0 = now();
    let e = enroll(store, "ABCDEFABCDEFABCDEFABCDEFABCDEF01", "H1", t0).await;
    let low = new_command(&e, "./A", -10, None, t0);
    let high = new_command(&e, "./B", 100, None, t0);
    let normal = new_command(&e, "./C", 0, None, t0);
    let stale = new_command(&e, "./D", 0, Some(t0 - Duration::seconds(1)), t0);
    store
        .enqueue_commands(&[low.clone(), high.clone(), normal.clone(), stale.clone()])
        .await
        .unwrap();
    let deliverable = store.deliverable_commands(e.id, t0).await.unwrap();
    let order: Vec<CommandId> = deliverable.iter().map(|c| c.id).collect();
    assert_eq!(order, vec![high.id, normal.id, low.id]);

    // The context: one read with the same queue, the overdue flag, the credential, no session yet.
    let ctx = store
        .checkin_context(EnrollmentKey::Certificate(&e.cert_thumbprint), &[], t0)
        .await
        .unwrap()
        .expect("context by certificate");
    assert_eq!(ctx.enrollment, e);
    assert_eq!(ctx.open.iter().map(|c| c.id).collect::<Vec<_>>(), order);
    assert_eq!(ctx.open, deliverable);
    assert!(ctx.overdue, "the stale command is past its deadline");
    assert!(ctx.enrollment.previous_cert.is_none() && ctx.session.is_none() && ctx.facts.is_empty());
    assert!(ctx.awaiting.is_empty());
    assert_eq!(ctx.session_credential.as_deref(), Some(CREDENTIAL));
    for key in [EnrollmentKey::Id(e.id), EnrollmentKey::ActiveDevice(&e.device_id)] {
        assert_eq!(
            store.checkin_context(key, &[], t0).await.unwrap().as_ref(),
            Some(&ctx),
            "{key:?}"
        );
    }
    let nobody = DeviceId::parse("nobody").unwrap();
    for key in [
        EnrollmentKey::Certificate(&thumb("none")),
        EnrollmentKey::Id(EnrollmentId::new()),
        EnrollmentKey::ActiveDevice(&nobody),
    ] {
        assert!(store.checkin_context(key, &[], t0).await.unwrap().is_none(), "{key:?}");
    }

    // Sent in a session, answered twice: recorded once.
    let s = session("k1");
    let sent = CheckinCommit {
        sent: vec![high.id],
        raw_message: Some("<SyncML>1</SyncML>".into()),
        ..in_session(&s)
    };
    store.commit_checkin(e.id, &sent, t0).await.unwrap();
    assert_eq!(
        state_of(store, stale.id).await,
        CommandState::Pending,
        "no sweep unless the commit asks for it"
    );
    let ctx = store
        .checkin_context(EnrollmentKey::Id(e.id), &[], t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ctx.session, store.session_record(e.id).await.unwrap());
    assert_eq!(
        ctx.session,
        Some(SessionRecord {
            updated_at: Some(t0),
            ..s.clone()
        }),
        "the session round trip"
    );
    assert_eq!(
        ctx.enrollment.last_seen_at,
        Some(t0),
        "a committed message is a sighting"
    );
    assert_eq!(
        ctx.open.iter().find(|c| c.id == high.id).unwrap().state,
        CommandState::Sent
    );
    let c = store.command(high.id).await.unwrap().unwrap();
    assert_eq!(
        (c.state, c.send_count, c.last_session.as_deref(), c.last_sent_at),
        (CommandState::Sent, 1, Some("k1"), Some(t0))
    );
    assert_eq!(
        store.device_messages(e.id).await.unwrap(),
        vec![(t0, "<SyncML>1</SyncML>".to_owned())]
    );
    let items = vec![ResultItem {
        source: "./B".into(),
        format: Some("chr".into()),
        data: Some("x".into()),
    }];
    let t1 = t0 + Duration::seconds(1);
    let answer = CheckinCommit {
        expire_overdue: true,
        ..answered(vec![Outcome::new(high.id, 200, items.clone(), vec![200, 216])], &s)
    };
    store.commit_checkin(e.id, &answer, t1).await.unwrap();
    let again = answered(vec![ok(high.id, 500)], &s);
    store.commit_checkin(e.id, &again, t1).await.unwrap();
    let c = store.command(high.id).await.unwrap().unwrap();
    assert_eq!(
        (c.state, c.status_code, c.completed_at),
        (CommandState::Succeeded, Some(200), Some(t1)),
        "the first outcome wins"
    );
    let result = store.command_result(high.id).await.unwrap().unwrap();
    assert_eq!(
        result,
        CommandResult {
            command_id: high.id,
            enrollment_id: e.id,
            status_code: 200,
            results: items,
            child_codes: vec![200, 216],
            received_at: t1,
        }
    );
    let stale = store.command(stale.id).await.unwrap().unwrap();
    assert_eq!(
        (stale.state, stale.completed_at),
        (CommandState::Expired, Some(t1)),
        "expired when a session committed past its deadline"
    );
    assert!(
        !store
            .checkin_context(EnrollmentKey::Id(e.id), &[], t1)
            .await
            .unwrap()
            .unwrap()
            .overdue
    );
    assert_eq!(
        event_kinds(store, e.id).await,
        vec![EventKind::Enrolled, EventKind::CommandAcknowledged],
        "one event per recorded outcome, none for the repeat"
    );
    let events = store.device_events_for(e.id).await.unwrap();
    assert_eq!(events[1].data, ok(high.id, 200).event.data);

    // The store records the state and event it is given: the meaning of a code is core's rule.
    let mut given = ok(low.id, 204);
    given.state = CommandState::Failed;
    given.event = NewDeviceEvent::command_answered(low.id, 204, CommandState::Failed);
    store
        .commit_checkin(e.id, &answered(vec![given.clone()], &s), t1)
        .await
        .unwrap();
    let c = store.command(low.id).await.unwrap().unwrap();
    assert_eq!((c.state, c.status_code), (CommandState::Failed, Some(204)));
    let events = store.device_events_for(e.id).await.unwrap();
    assert_eq!(
        (events[2].kind, &events[2].data),
        (EventKind::CommandFailed, &given.event.data)
    );

    // Another enrollment cannot record an outcome for this one's command.
    let other = enroll(store, "ABCDEFABCDEFABCDEFABCDEFABCDEF02", "H2", t0).await;
    store
        .commit_checkin(other.id, &answered(vec![ok(normal.id, 200)], &session("k2")), t1)
        .await
        .unwrap();
    assert_eq!(state_of(store, normal.id).await, CommandState::Pending);
    assert!(store.command_result(normal.id).await.unwrap().is_none());
    assert_eq!(event_kinds(store, other.id).await, vec![EventKind::Enrolled]);
    assert_eq!(
        store.session_record(e.id).await.unwrap().map(|s| s.key),
        Some("k1".into()),
        "each enrollment has its own session"
    );

    // An acknowledged wipe ends the enrollment in the same commit: its open commands are cancelled,
    // the event recorded; the context by DeviceID then finds nothing, by id the ended enrollment.
    let wipe = NewCommand {
        origin: CommandOrigin::Action(ActionKind::Wipe),
        priority: Priority::WIPE,
        ..new_command(&e, "./Vendor/MSFT/RemoteWipe/doWipe", 0, None, t1)
    };
    store.enqueue_commands(std::slice::from_ref(&wipe)).await.unwrap();
    let outcome = ok(wipe.id, 200);
    let end = outcome.enrollment_end(&wipe.origin);
    assert!(end.is_some());
    let t2 = t1 + Duration::seconds(1);
    store
        .commit_checkin(
            e.id,
            &CheckinCommit {
                end_enrollment: end,
                ..answered(vec![outcome], &s)
            },
            t2,
        )
        .await
        .unwrap();
    assert_eq!(state_of(store, wipe.id).await, CommandState::Succeeded);
    assert_eq!(state_of(store, normal.id).await, CommandState::Cancelled);
    let ended = store.enrollment_by_id(e.id).await.unwrap().unwrap();
    assert_eq!(ended.state, EnrollmentState::Wiped);
    assert_eq!(
        event_kinds(store, e.id).await[3..],
        [EventKind::CommandAcknowledged, EventKind::Wiped]
    );
    let log = store.issuance_log().await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(
        (last.serial.as_str(), last.event, last.reason.as_deref()),
        ("H1", IssuanceEvent::Revoked, Some(reasons::WIPE_ACKNOWLEDGED))
    );
    assert!(
        store
            .checkin_context(EnrollmentKey::ActiveDevice(&e.device_id), &[], t2)
            .await
            .unwrap()
            .is_none()
    );
    let ctx = store
        .checkin_context(EnrollmentKey::Id(e.id), &[], t2)
        .await
        .unwrap()
        .expect("any state by id");
    assert_eq!(ctx.enrollment.state, EnrollmentState::Wiped);
    assert!(ctx.open.is_empty());
}

/// Asynchronous outcomes: a command accepted for later processing is awaited (newest first) until
/// its completion names it; a completion changes only this enrollment's accepted commands, once.
pub async fn completions<S>(store: &S)
where
    S: EnrollmentStore + CommandQueue + CheckinStore + Inspect,
{
    let t0 = now();
    let e = enroll(store, "A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5", "A1", t0).await;
    let install = new_command(&e, "./MSI/one/DownloadInstall", 0, None, t0);
    let second = new_command(&e, "./MSI/two/DownloadInstall", 0, None, t0);
    let pending = new_command(&e, "./MSI/three/DownloadInstall", 0, None, t0);
    store
        .enqueue_commands(&[install.clone(), second.clone(), pending.clone()])
        .await
        .unwrap();
    let s = session("k1");
    store
        .commit_checkin(
            e.id,
            &CheckinCommit {
                sent: vec![install.id, second.id],
                ..in_session(&s)
            },
            t0,
        )
        .await
        .unwrap();
    let accepted = answered(vec![ok(install.id, 202), ok(second.id, 202)], &s);
    assert_eq!(accepted.outcomes[0].state, CommandState::Accepted);
    store.commit_checkin(e.id, &accepted, t0).await.unwrap();
    let c = store.command(install.id).await.unwrap().unwrap();
    assert_eq!(
        (c.state, c.status_code, c.completed_at),
        (CommandState::Accepted, Some(202), None),
        "accepted is not done"
    );
    let ctx = store
        .checkin_context(EnrollmentKey::Id(e.id), &[], t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ctx.awaiting.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![second.id, install.id],
        "awaited, newest first"
    );
    assert_eq!(ctx.open.iter().map(|c| c.id).collect::<Vec<_>>(), vec![pending.id]);
    let acks = |n: usize| {
        let mut v = vec![EventKind::Enrolled];
        v.extend(std::iter::repeat_n(EventKind::CommandAcknowledged, n));
        v
    };
    assert_eq!(event_kinds(store, e.id).await, acks(2));

    // The completion names its command, which finishes with the completion's state and event.
    let t1 = t0 + Duration::seconds(1);
    let done = Completion::new(install.id, 200);
    let completes = |c: Vec<Completion>| CheckinCommit {
        completions: c,
        ..in_session(&s)
    };
    store
        .commit_checkin(e.id, &completes(vec![done.clone()]), t1)
        .await
        .unwrap();
    let c = store.command(install.id).await.unwrap().unwrap();
    assert_eq!(
        (c.state, c.status_code, c.completed_at),
        (CommandState::Succeeded, Some(200), Some(t1))
    );
    let events = store.device_events_for(e.id).await.unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(
        (events[3].kind, &events[3].data),
        (EventKind::CommandAcknowledged, &done.event.data)
    );
    assert_eq!(events[3].data["completion"], "async");
    // Once: a repeated completion finds the command no longer accepted.
    store
        .commit_checkin(e.id, &completes(vec![Completion::new(install.id, 500)]), t1)
        .await
        .unwrap();
    assert_eq!(store.command(install.id).await.unwrap().unwrap().status_code, Some(200));
    assert_eq!(
        store.device_events_for(e.id).await.unwrap().len(),
        4,
        "no event for a repeat"
    );
    // Another enrollment cannot complete this one's command; a command never accepted is not
    // completed.
    let other = enroll(store, "B5B5B5B5B5B5B5B5B5B5B5B5B5B5B5B5", "A2", t0).await;
    store
        .commit_checkin(other.id, &completes(vec![Completion::new(second.id, 500)]), t1)
        .await
        .unwrap();
    assert_eq!(state_of(store, second.id).await, CommandState::Accepted);
    assert_eq!(event_kinds(store, other.id).await, vec![EventKind::Enrolled]);
    store
        .commit_checkin(e.id, &completes(vec![Completion::new(pending.id, 200)]), t1)
        .await
        .unwrap();
    assert_eq!(state_of(store, pending.id).await, CommandState::Pending);
    // A failed completion.
    let failed = Completion::new(second.id, 500);
    store
        .commit_checkin(e.id, &completes(vec![failed.clone()]), t1)
        .await
        .unwrap();
    assert_eq!(state_of(store, second.id).await, CommandState::Failed);
    let events = store.device_events_for(e.id).await.unwrap();
    assert_eq!(events.len(), 5);
    assert_eq!(
        (events[4].kind, &events[4].data),
        (EventKind::CommandFailed, &failed.event.data)
    );
    assert!(
        store
            .checkin_context(EnrollmentKey::Id(e.id), &[], t1)
            .await
            .unwrap()
            .unwrap()
            .awaiting
            .is_empty()
    );
}

/// Re-queues: an open command goes out again with its new body; a finished command or another
/// enrollment's is left alone.
pub async fn requeue<S>(store: &S)
where
    S: EnrollmentStore + CommandQueue + CheckinStore,
{
    let t0 = now();
    let e = enroll(store, "C5C5C5C5C5C5C5C5C5C5C5C5C5C5C5C5", "Y1", t0).await;
    let add = new_command(&e, "./Add", 0, None, t0);
    let done = new_command(&e, "./Done", 0, None, t0);
    store.enqueue_commands(&[add.clone(), done.clone()]).await.unwrap();
    let s = session("k1");
    store
        .commit_checkin(
            e.id,
            &CheckinCommit {
                sent: vec![add.id, done.id],
                ..in_session(&s)
            },
            t0,
        )
        .await
        .unwrap();
    store
        .commit_checkin(e.id, &answered(vec![ok(done.id, 200)], &s), t0)
        .await
        .unwrap();
    let again = |id: CommandId, body: &str| Requeue {
        command_id: id,
        payload: payload(body),
    };
    store
        .commit_checkin(
            e.id,
            &CheckinCommit {
                requeue: vec![again(add.id, "./Replace"), again(done.id, "./Replace")],
                ..in_session(&s)
            },
            t0,
        )
        .await
        .unwrap();
    let c = store.command(add.id).await.unwrap().unwrap();
    assert_eq!(
        (c.state, &c.payload, c.send_count),
        (CommandState::Pending, &payload("./Replace"), 1),
        "pending again with the new body"
    );
    let ctx = store
        .checkin_context(EnrollmentKey::Id(e.id), &[], t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ctx.open, vec![c]);
    let d = store.command(done.id).await.unwrap().unwrap();
    assert_eq!((d.state, &d.payload), (CommandState::Succeeded, &payload("./Done")));
    let other = enroll(store, "D5D5D5D5D5D5D5D5D5D5D5D5D5D5D5D5", "Y2", t0).await;
    store
        .commit_checkin(
            other.id,
            &CheckinCommit {
                requeue: vec![again(add.id, "./Foreign")],
                ..in_session(&session("k2"))
            },
            t0,
        )
        .await
        .unwrap();
    assert_eq!(
        store.command(add.id).await.unwrap().unwrap().payload,
        payload("./Replace")
    );
}

/// A check-in may queue commands itself and send them in the same commit; a commit that fails
/// writes nothing.
pub async fn enqueue_and_sent<S>(store: &S)
where
    S: EnrollmentStore + CommandQueue + CheckinStore + InventoryStore + Inspect,
{
    let t0 = now();
    let e = enroll(store, "E5E5E5E5E5E5E5E5E5E5E5E5E5E5E5E5", "E1", t0).await;
    let inventory = NewCommand {
        origin: CommandOrigin::Inventory,
        priority: Priority::INVENTORY,
        ..new_command(&e, "./DevDetail", 0, None, t0)
    };
    let later = new_command(&e, "./Later", 0, None, t0);
    let s = session("k1");
    store
        .commit_checkin(
            e.id,
            &CheckinCommit {
                enqueue: vec![inventory.clone(), later.clone()],
                sent: vec![inventory.id],
                ..in_session(&s)
            },
            t0,
        )
        .await
        .unwrap();
    let c = store.command(inventory.id).await.unwrap().unwrap();
    assert_eq!(
        (c.state, c.send_count, c.last_session.as_deref(), &c.origin, c.priority),
        (
            CommandState::Sent,
            1,
            Some("k1"),
            &CommandOrigin::Inventory,
            Priority::INVENTORY
        ),
        "queued and sent in one commit"
    );
    assert_eq!(c.payload, inventory.payload);
    assert_eq!(store.command(later.id).await.unwrap(), Some(Command::queued(&later)));
    assert_eq!(
        store
            .commands_for_enrollment(e.id)
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        vec![inventory.id, later.id],
        "queued in the commit's order"
    );

    // A commit that cannot be written whole is not written at all: an id queued twice fails it.
    let t1 = t0 + Duration::seconds(1);
    let failing = CheckinCommit {
        enqueue: vec![NewCommand {
            id: later.id,
            ..new_command(&e, "./Twice", 0, None, t1)
        }],
        sent: vec![later.id],
        facts: vec![FactUpdate::new(FactName::from_static("os.version"), "10")],
        raw_message: Some("<SyncML>2</SyncML>".into()),
        ..in_session(&session("k2"))
    };
    assert!(store.commit_checkin(e.id, &failing, t1).await.is_err());
    assert_eq!(store.command(later.id).await.unwrap(), Some(Command::queued(&later)));
    assert!(store.device_facts(e.id).await.unwrap().is_empty());
    assert!(store.device_messages(e.id).await.unwrap().is_empty());
    assert_eq!(
        store.session_record(e.id).await.unwrap().map(|s| (s.key, s.updated_at)),
        Some(("k1".into(), Some(t0)))
    );
    assert_eq!(
        store.enrollment_by_id(e.id).await.unwrap().unwrap().last_seen_at,
        Some(t0)
    );
}

// ---------------------------------------------------------------- stale check-ins

/// A check-in commit applies only over the session record its context read
/// ([`SessionPrecondition`]) and only while every command it marks sent is still open; otherwise
/// it is refused with [`StoreError::Stale`] and writes nothing at all (two duplicate messages
/// processed at once; a cancel committed while the answer was built).
pub async fn stale_checkins<S>(store: &S)
where
    S: EnrollmentStore + CommandQueue + CheckinStore + Inspect,
{
    let t0 = now();
    let e = enroll(store, "ABCDEFABCDEFABCDEFABCDEFABCDEF05", "ST1", t0).await;
    let first = context_of(store, e.id, t0).await;
    assert!(first.session.is_none());

    // Two commits planned on the same (absent) record: the first applies, the second is stale.
    let s1 = session("s1");
    let queued = new_command(&e, "./Q", 0, None, t0);
    let one = CheckinCommit {
        session_read: SessionPrecondition::of(first.session.as_ref()),
        ..in_session(&s1)
    };
    store.commit_checkin(e.id, &one, t0).await.unwrap();
    let two = CheckinCommit {
        enqueue: vec![queued.clone()],
        raw_message: Some("<SyncML>dup</SyncML>".into()),
        session_read: SessionPrecondition::of(first.session.as_ref()),
        ..in_session(&session("s2"))
    };
    assert!(matches!(
        store.commit_checkin(e.id, &two, t0).await,
        Err(StoreError::Stale(_))
    ));
    let after = context_of(store, e.id, t0).await;
    assert_eq!(
        after.session.as_ref().map(|r| r.key.as_str()),
        Some("s1"),
        "the stale commit wrote no session"
    );
    assert!(store.command(queued.id).await.unwrap().is_none(), "nor its command");

    // Planned on the current record, it applies; a record that moved on since refuses it again.
    let three = CheckinCommit {
        session_read: SessionPrecondition::of(after.session.as_ref()),
        ..in_session(&session("s3"))
    };
    store.commit_checkin(e.id, &three, t0).await.unwrap();
    assert!(matches!(
        store.commit_checkin(e.id, &three, t0).await,
        Err(StoreError::Stale(_))
    ));
    let ctx = context_of(store, e.id, t0).await;
    assert_eq!(ctx.session.as_ref().map(|r| r.key.as_str()), Some("s3"));

    // A command cancelled after the context was read: the answer carrying it is refused whole.
    let cmd = new_command(&e, "./C", 0, None, t0);
    let other = new_command(&e, "./O", 0, None, t0);
    store.enqueue_commands(&[cmd.clone(), other.clone()]).await.unwrap();
    let ctx = context_of(store, e.id, t0).await;
    assert_eq!(ctx.open.len(), 2);
    assert!(store.cancel_command(cmd.id, t0).await.unwrap());
    let carrying = CheckinCommit {
        sent: vec![other.id, cmd.id, other.id],
        session_read: SessionPrecondition::of(ctx.session.as_ref()),
        ..in_session(&session("s4"))
    };
    assert!(matches!(
        store.commit_checkin(e.id, &carrying, t0).await,
        Err(StoreError::Stale(_))
    ));
    assert_eq!(
        state_of(store, other.id).await,
        CommandState::Pending,
        "nothing was marked sent"
    );
    assert_eq!(state_of(store, cmd.id).await, CommandState::Cancelled);
    // Planned again on a fresh context, without it: applies (a command named twice counts once).
    let ctx = context_of(store, e.id, t0).await;
    assert_eq!(ctx.open.iter().map(|c| c.id).collect::<Vec<_>>(), vec![other.id]);
    let replanned = CheckinCommit {
        sent: vec![other.id, other.id],
        session_read: SessionPrecondition::of(ctx.session.as_ref()),
        ..in_session(&session("s4"))
    };
    store.commit_checkin(e.id, &replanned, t0).await.unwrap();
    assert_eq!(state_of(store, other.id).await, CommandState::Sent);
    // Unchecked (the default) writes over whatever is there.
    store
        .commit_checkin(e.id, &in_session(&session("s5")), t0)
        .await
        .unwrap();
}

async fn context_of<S: CheckinStore>(store: &S, id: EnrollmentId, at: OffsetDateTime) -> CheckinContext {
    store
        .checkin_context(EnrollmentKey::Id(id), &[], at)
        .await
        .unwrap()
        .expect("context")
}

// ---------------------------------------------------------------- renewal

/// Certificate renewal carried out as [`RenewalPlan`]s: Normal keeps the current certificate
/// accepted as the previous one, Retry revokes the unused one, a certificate that is neither gets
/// no plan; a stale plan or an ended enrollment is refused (NotFound) and writes nothing; the first
/// check-in with the new certificate retires the previous one.
pub async fn renewal_plans<S>(store: &S)
where
    S: EnrollmentStore + CheckinStore + Inspect,
{
    let t0 = now();
    let e = enroll(store, "ABCDEFABCDEFABCDEFABCDEFABCDEF03", "N1", t0).await;
    let subject = format!("CN={}", e.device_id);
    let renew = |e: &Enrollment, presented: &str, new: &str, at: OffsetDateTime| {
        RenewalPlan::for_enrollment(e, &thumb(presented))
            .expect("a plan")
            .commit(e, cert(new), subject.clone(), at, at + Duration::days(365), at)
    };
    let current = |_: ()| async { store.enrollment_by_id(e.id).await.unwrap().unwrap() };
    let log_tail = |n: usize| async move {
        let log = store.issuance_log().await.unwrap();
        log[log.len() - n..]
            .iter()
            .map(|l| (l.serial.as_str().to_owned(), l.event, l.reason.clone()))
            .collect::<Vec<_>>()
    };
    let entry = |serial: &str, event: IssuanceEvent, reason: Option<&str>| {
        (serial.to_owned(), event, reason.map(str::to_owned))
    };

    // Normal: renewed with the current certificate, which stays accepted as the previous one.
    assert_eq!(
        RenewalPlan::for_enrollment(&e, &e.cert_thumbprint),
        Some(RenewalPlan::Normal { revoke_previous: None })
    );
    let t1 = t0 + Duration::seconds(1);
    let first = renew(&e, "N1", "N2", t1);
    store.commit_renewal(&first).await.unwrap();
    let r = current(()).await;
    assert_eq!(
        (
            r.cert_serial.as_str(),
            &r.cert_thumbprint,
            r.cert_not_after,
            r.updated_at
        ),
        ("N2", &thumb("N2"), t1 + Duration::days(365), t1)
    );
    assert_eq!(r.previous_cert, Some(e.certificate()));
    // Thumbprints compare in upper case, however a device writes them.
    for t in [thumb("N1"), thumb("N2")] {
        let written = Thumbprint::parse(&t.as_str().to_ascii_lowercase()).unwrap();
        assert_eq!(
            store.enrollment_by_certificate(&written).await.unwrap().map(|e| e.id),
            Some(e.id)
        );
        let ctx = store
            .checkin_context(EnrollmentKey::Certificate(&written), &[], t1)
            .await
            .unwrap()
            .expect("old and new certificate");
        assert_eq!(
            (ctx.enrollment.id, ctx.enrollment.previous_cert.is_some()),
            (e.id, true)
        );
        assert_eq!(ctx.enrollment.cert_thumbprint, thumb("N2"));
    }
    assert_eq!(
        log_tail(1).await,
        vec![entry("N2", IssuanceEvent::Issued, Some("renewal"))]
    );
    let log = store.issuance_log().await.unwrap();
    let issued = log.last().unwrap();
    assert_eq!(
        (
            issued.subject.as_deref(),
            issued.not_before,
            issued.not_after,
            issued.at
        ),
        (Some(subject.as_str()), Some(t1), Some(t1 + Duration::days(365)), t1)
    );
    assert_eq!(issued.thumbprint.as_ref(), Some(&thumb("N2")));
    let events = store.device_events_for(e.id).await.unwrap();
    let renewed = events.last().unwrap();
    assert_eq!(
        (renewed.kind, &renewed.data),
        (EventKind::CertificateRenewed, &first.event.data)
    );

    // A plan made before the certificate changed is refused and writes nothing.
    let log_len = store.issuance_log().await.unwrap().len();
    assert!(matches!(store.commit_renewal(&first).await, Err(StoreError::NotFound)));
    assert_eq!(store.issuance_log().await.unwrap().len(), log_len);
    assert_eq!(current(()).await, r);

    // Retry: the device renews again with its previous certificate (it never installed N2): N2 is
    // revoked, N1 stays accepted.
    assert_eq!(
        RenewalPlan::for_enrollment(&r, &thumb("N1")),
        Some(RenewalPlan::Retry {
            revoke_unused: cert("N2")
        })
    );
    let t2 = t1 + Duration::seconds(1);
    store.commit_renewal(&renew(&r, "N1", "N3", t2)).await.unwrap();
    let r = current(()).await;
    assert_eq!(
        (r.cert_serial.as_str(), r.previous_cert.clone()),
        ("N3", Some(cert("N1")))
    );
    assert_eq!(
        log_tail(2).await,
        vec![
            entry("N2", IssuanceEvent::Revoked, Some(reasons::RENEWAL_ANSWER_NOT_USED)),
            entry("N3", IssuanceEvent::Issued, Some("renewal")),
        ]
    );
    assert!(store.enrollment_by_certificate(&thumb("N2")).await.unwrap().is_none());

    // Normal again: the previous certificate from the earlier renewal is revoked now.
    assert_eq!(
        RenewalPlan::for_enrollment(&r, &thumb("N3")),
        Some(RenewalPlan::Normal {
            revoke_previous: Some(cert("N1"))
        })
    );
    store.commit_renewal(&renew(&r, "N3", "N4", t2)).await.unwrap();
    let r = current(()).await;
    assert_eq!(
        (r.cert_serial.as_str(), r.previous_cert.clone()),
        ("N4", Some(cert("N3")))
    );
    assert_eq!(
        log_tail(2).await,
        vec![
            entry(
                "N1",
                IssuanceEvent::Revoked,
                Some(reasons::SUPERSEDED_BY_SECOND_RENEWAL)
            ),
            entry("N4", IssuanceEvent::Issued, Some("renewal")),
        ]
    );
    assert!(store.enrollment_by_certificate(&thumb("N1")).await.unwrap().is_none());

    // Not current: a certificate that is neither the current nor the previous one gets no plan.
    assert_eq!(RenewalPlan::for_enrollment(&r, &thumb("N1")), None);
    assert_eq!(RenewalPlan::for_enrollment(&r, &thumb("stranger")), None);

    // The device uses its renewed certificate: the commit retires the previous one.
    let t3 = t2 + Duration::seconds(1);
    let retire = CheckinCommit {
        retire_previous_certificate: true,
        ..CheckinCommit::default()
    };
    store.commit_checkin(e.id, &retire, t3).await.unwrap();
    let ctx = store
        .checkin_context(EnrollmentKey::Certificate(&thumb("N4")), &[], t3)
        .await
        .unwrap()
        .unwrap();
    assert!(ctx.enrollment.previous_cert.is_none());
    assert!(
        store
            .checkin_context(EnrollmentKey::Certificate(&thumb("N3")), &[], t3)
            .await
            .unwrap()
            .is_none(),
        "the retired certificate no longer finds the enrollment"
    );
    assert_eq!(
        ctx.enrollment.last_seen_at,
        Some(t3),
        "every committed message is a sighting"
    );
    assert_eq!(
        log_tail(1).await,
        vec![entry(
            "N3",
            IssuanceEvent::Revoked,
            Some(reasons::RENEWED_CERTIFICATE_IN_USE)
        )]
    );
    // Retiring again finds nothing to retire.
    let log_len = store.issuance_log().await.unwrap().len();
    store.commit_checkin(e.id, &retire, t3).await.unwrap();
    assert_eq!(store.issuance_log().await.unwrap().len(), log_len);

    // An enrollment that ended meanwhile is not renewed.
    let plan = renew(&ctx.enrollment, "N4", "N5", t3);
    let end = EnrollmentEnd::new(EnrollmentState::Unenrolled, reasons::DEVICE_UNENROLLED);
    assert!(store.end_enrollment(e.id, &end, t3).await.unwrap());
    let log_len = store.issuance_log().await.unwrap().len();
    assert!(matches!(store.commit_renewal(&plan).await, Err(StoreError::NotFound)));
    assert_eq!(store.issuance_log().await.unwrap().len(), log_len);
    assert_eq!(RenewalPlan::for_enrollment(&current(()).await, &thumb("N4")), None);
}

// ---------------------------------------------------------------- inventory

/// Facts: unchanged values only move `updated_at`, changed and new ones are written with history (a
/// name reported twice in one message counts in order), and the context reads only the named facts.
pub async fn inventory<S>(store: &S)
where
    S: EnrollmentStore + CheckinStore + InventoryStore,
{
    let t0 = now();
    let e = enroll(store, "ABCDEFABCDEFABCDEFABCDEFABCDEF04", "F1", t0).await;
    let name = |n: &str| FactName::parse(n).unwrap();
    let report = |facts: &[(&str, &str)], at: OffsetDateTime| {
        let commit = CheckinCommit {
            facts: facts.iter().map(|(n, v)| FactUpdate::new(name(n), *v)).collect(),
            ..CheckinCommit::default()
        };
        async move { store.commit_checkin(e.id, &commit, at).await.unwrap() }
    };
    let value = |n: &'static str| async move {
        store
            .device_facts(e.id)
            .await
            .unwrap()
            .into_iter()
            .find(|f| f.name.as_str() == n)
            .map(|f| (f.value, f.updated_at))
    };
    let history = || async {
        store
            .fact_history(e.id)
            .await
            .unwrap()
            .into_iter()
            .map(|h| (h.name.as_str().to_owned(), h.old_value, h.new_value))
            .collect::<Vec<_>>()
    };
    let t1 = t0 + Duration::seconds(1);
    let t2 = t0 + Duration::seconds(2);
    let t3 = t0 + Duration::seconds(3);
    report(&[("a", "1"), ("b", "2")], t0).await;
    report(&[("a", "1"), ("b", "3"), ("c", "4")], t1).await;
    assert_eq!(
        value("a").await,
        Some(("1".into(), t1)),
        "unchanged: only reported again"
    );
    assert_eq!(value("b").await, Some(("3".into(), t1)));
    let h = |n: &str, o: Option<&str>, v: &str| (n.to_owned(), o.map(str::to_owned), v.to_owned());
    assert_eq!(
        history().await,
        vec![
            h("a", None, "1"),
            h("b", None, "2"),
            h("b", Some("2"), "3"),
            h("c", None, "4")
        ]
    );
    assert!(
        store.fact_history(e.id).await.unwrap().iter().all(|c| c.at <= t1),
        "history at the reporting times"
    );
    // The same name twice in one message: taken in order.
    report(&[("a", "5"), ("a", "1"), ("b", "3")], t2).await;
    assert_eq!(value("a").await, Some(("1".into(), t2)));
    assert_eq!(value("b").await, Some(("3".into(), t2)));
    assert_eq!(history().await[4..], [h("a", Some("1"), "5"), h("a", Some("5"), "1")]);
    report(&[("c", "4")], t3).await;
    assert_eq!(history().await.len(), 6, "nothing changed, nothing recorded");
    assert_eq!(value("c").await, Some(("4".into(), t3)));
    assert_eq!(
        store
            .device_facts(e.id)
            .await
            .unwrap()
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b", "c"],
        "in name order"
    );

    let ctx = store
        .checkin_context(EnrollmentKey::Id(e.id), &[name("c"), name("a"), name("missing")], t3)
        .await
        .unwrap()
        .unwrap();
    let named: Vec<(&str, &str)> = ctx.facts.iter().map(|f| (f.name.as_str(), f.value.as_str())).collect();
    assert_eq!(
        named,
        vec![("a", "1"), ("c", "4")],
        "only the named facts, in name order"
    );
    assert_eq!(ctx.facts[1].updated_at, t3);
    assert!(ctx.enrollment.previous_cert.is_none());
    assert_eq!(
        ctx.enrollment.last_seen_at,
        Some(t3),
        "every committed message is a sighting"
    );
    assert!(store.device_facts(EnrollmentId::new()).await.unwrap().is_empty());
}

// ---------------------------------------------------------------- users

fn user(email: &str, at: OffsetDateTime) -> User {
    User {
        id: UserId::new(),
        email: email.into(),
        display_name: None,
        password_hash: "$argon2id$fake".into(),
        disabled: false,
        created_at: at,
    }
}

/// Users (e-mail case-insensitive and unique), console access (a role, optionally limited to a
/// group), the TOTP second factor (each step used once) and disabling.
pub async fn users<S>(store: &S)
where
    S: UserStore + GroupStore,
{
    let t0 = now();

    // Users: e-mail is case-insensitive and unique.
    let alice = User {
        display_name: Some("Alice".into()),
        ..user("Alice@Example.com", t0)
    };
    store.create_user(&alice).await.unwrap();
    let u = store
        .user_by_email("alice@EXAMPLE.com")
        .await
        .unwrap()
        .expect("user by e-mail");
    assert_eq!(u.email, "alice@example.com");
    assert_eq!(u.created_at, t0);
    assert_eq!(u.display_name.as_deref(), Some("Alice"));
    assert_eq!(
        store.user_by_id(alice.id).await.unwrap().map(|u| u.email),
        Some(u.email.clone())
    );
    assert!(store.user_by_id(UserId::new()).await.unwrap().is_none());
    assert!(matches!(
        store
            .create_user(&User {
                id: UserId::new(),
                ..alice.clone()
            })
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.list_users().await.unwrap().len(), 1);

    // Console users: a role on the user; enrollment-only users are not console users.
    let admin = user("Root@Example.com", t0);
    store.create_console_user(&admin, Role::Admin, None).await.unwrap();
    assert!(matches!(
        store
            .create_console_user(&user("root@example.com", t0), Role::Auditor, None)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let plain = user("plain@example.com", t0);
    store.create_user(&plain).await.unwrap();
    let cu = store
        .console_user_by_email(" ROOT@example.com")
        .await
        .unwrap()
        .expect("console user");
    assert_eq!(
        (cu.user.id, cu.role, cu.user.email.as_str()),
        (admin.id, Role::Admin, "root@example.com")
    );
    assert!(cu.totp.is_none(), "no second factor until set up");
    assert!(
        store
            .console_user_by_email("plain@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .console_user_by_email("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.console_user(admin.id).await.unwrap().map(|u| (u.role, u.group)),
        Some((Role::Admin, None))
    );
    assert!(store.console_user(plain.id).await.unwrap().is_none());

    // Second factor: set up (unconfirmed), confirmed with a first step, each step used once.
    assert!(
        store
            .set_user_totp(admin.id, Some("steward-sealed-v1:seed"))
            .await
            .unwrap()
    );
    assert!(
        !store.set_user_totp(UserId::new(), Some("x")).await.unwrap(),
        "unknown user"
    );
    let t = store
        .console_user(admin.id)
        .await
        .unwrap()
        .unwrap()
        .totp
        .expect("seed stored");
    assert_eq!(
        (t.sealed_secret.as_str(), t.confirmed(), t.last_step),
        ("steward-sealed-v1:seed", false, None)
    );
    assert!(
        !store.use_totp_step(admin.id, 100).await.unwrap(),
        "an unconfirmed seed signs nobody in"
    );
    assert!(store.confirm_user_totp(admin.id, 100, t0).await.unwrap());
    let t = store.console_user(admin.id).await.unwrap().unwrap().totp.unwrap();
    assert_eq!((t.confirmed_at, t.last_step), (Some(t0), Some(100)));
    assert!(
        !store.use_totp_step(admin.id, 100).await.unwrap(),
        "the confirming code is used"
    );
    assert!(!store.use_totp_step(admin.id, 99).await.unwrap(), "older steps too");
    assert!(store.use_totp_step(admin.id, 101).await.unwrap());
    assert!(
        !store.use_totp_step(admin.id, 101).await.unwrap(),
        "a step is accepted once"
    );
    assert!(
        !store.confirm_user_totp(plain.id, 5, t0).await.unwrap(),
        "no seed, nothing to confirm"
    );
    // A new seed starts over: unconfirmed, no step used.
    assert!(
        store
            .set_user_totp(admin.id, Some("steward-sealed-v1:new"))
            .await
            .unwrap()
    );
    let t = store.console_user(admin.id).await.unwrap().unwrap().totp.unwrap();
    assert_eq!((t.confirmed_at, t.last_step), (None, None));
    assert!(store.set_user_totp(admin.id, None).await.unwrap());
    assert!(store.console_user(admin.id).await.unwrap().unwrap().totp.is_none());

    // A team's console user is scoped to its group.
    let team_group = Group {
        id: GroupId::new(),
        name: "team".into(),
        created_at: t0,
        rule: None,
    };
    store.create_group(&team_group).await.unwrap();
    let team = user("team@example.com", t0);
    store
        .create_console_user(&team, Role::Operator, Some(team_group.id))
        .await
        .unwrap();
    assert_eq!(
        store.console_user(team.id).await.unwrap().unwrap().group,
        Some(team_group.id)
    );
    assert_eq!(
        store
            .console_user_by_email("team@example.com")
            .await
            .unwrap()
            .unwrap()
            .group,
        Some(team_group.id)
    );

    // Access changes: role and group, removal, disabling.
    let emails = |v: Vec<ConsoleUser>| {
        let mut e = v.into_iter().map(|u| u.user.email).collect::<Vec<_>>();
        e.sort();
        e
    };
    assert_eq!(
        emails(store.list_console_users().await.unwrap()),
        vec!["root@example.com", "team@example.com"]
    );
    assert!(
        store
            .set_console_access(team.id, Some(Role::Auditor), None)
            .await
            .unwrap()
    );
    let t = store.console_user(team.id).await.unwrap().unwrap();
    assert_eq!((t.role, t.group), (Role::Auditor, None));
    assert!(
        store
            .set_console_access(plain.id, Some(Role::Helpdesk), None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.console_user(plain.id).await.unwrap().unwrap().role,
        Role::Helpdesk
    );
    assert!(
        store
            .set_console_access(plain.id, None, Some(team_group.id))
            .await
            .unwrap()
    );
    assert!(
        store.console_user(plain.id).await.unwrap().is_none(),
        "console access removed (and no group kept without a role)"
    );
    assert!(
        store.user_by_email("plain@example.com").await.unwrap().is_some(),
        "the user stays"
    );
    assert!(!store.set_console_access(UserId::new(), None, None).await.unwrap());
    assert!(store.set_user_disabled(team.id, true).await.unwrap());
    assert!(store.console_user(team.id).await.unwrap().unwrap().user.disabled);
    assert!(store.user_by_id(team.id).await.unwrap().unwrap().disabled);
    assert!(store.set_user_disabled(team.id, false).await.unwrap());
    assert!(!store.console_user(team.id).await.unwrap().unwrap().user.disabled);
    assert!(!store.set_user_disabled(UserId::new(), true).await.unwrap());
    let mut all: Vec<String> = store.list_users().await.unwrap().into_iter().map(|u| u.email).collect();
    all.sort();
    assert_eq!(
        all,
        vec![
            "alice@example.com",
            "plain@example.com",
            "root@example.com",
            "team@example.com"
        ]
    );
}

// ---------------------------------------------------------------- groups

fn group(name: &str, at: OffsetDateTime) -> Group {
    Group {
        id: GroupId::new(),
        name: name.into(),
        created_at: at,
        rule: None,
    }
}

/// Groups: names unique, devices moved in and out, counts, and deletion only while nothing active
/// refers to the group (history rows let go of it).
pub async fn groups<S>(store: &S)
where
    S: GroupStore + EnrollmentStore + UserStore + AccessStore + ReportStore,
{
    let t0 = now();
    let sales = group("sales", t0);
    store.create_group(&sales).await.unwrap();
    assert!(matches!(
        store.create_group(&group("sales", t0)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.group_by_name("sales").await.unwrap(), Some(sales.clone()));
    assert!(
        store.group_by_name("Sales").await.unwrap().is_none(),
        "names are case-sensitive"
    );
    let e1 = enroll(store, "dev-console-1", "C1", t0).await;
    let e2 = enroll(store, "dev-console-2", "C2", t0).await;
    assert!(store.set_enrollment_group(e1.id, Some(sales.id)).await.unwrap());
    assert!(store.set_enrollment_group(e2.id, Some(sales.id)).await.unwrap());
    assert!(
        !store
            .set_enrollment_group(EnrollmentId::new(), Some(sales.id))
            .await
            .unwrap()
    );
    assert_eq!(
        store.enrollment_by_id(e1.id).await.unwrap().unwrap().group_id,
        Some(sales.id)
    );
    assert_eq!(store.group_device_counts().await.unwrap(), vec![(sales.id, 2)]);
    let q = DeviceQuery {
        group_id: Some(sales.id),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list_devices(&q).await.unwrap().len(), 2);
    assert!(
        matches!(store.delete_group(sales.id).await, Err(StoreError::Conflict(_))),
        "in use"
    );
    assert!(store.set_enrollment_group(e2.id, None).await.unwrap());
    assert_eq!(store.enrollment_by_id(e2.id).await.unwrap().unwrap().group_id, None);
    // An ended enrollment does not keep the group alive.
    let end = EnrollmentEnd::new(EnrollmentState::Unenrolled, reasons::DEVICE_UNENROLLED);
    assert!(
        store
            .end_enrollment(e1.id, &end, t0 + Duration::seconds(1))
            .await
            .unwrap()
    );
    assert_eq!(store.group_device_counts().await.unwrap(), vec![]);
    assert!(store.delete_group(sales.id).await.unwrap());
    assert!(!store.delete_group(sales.id).await.unwrap());
    assert!(store.group_by_name("sales").await.unwrap().is_none());
    assert_eq!(
        store.enrollment_by_id(e1.id).await.unwrap().unwrap().group_id,
        None,
        "history rows let go of a deleted group"
    );

    // A team's console user keeps its group in use while it is scoped to it.
    let team_group = group("team", t0);
    store.create_group(&team_group).await.unwrap();
    let team = user("team@example.com", t0);
    store
        .create_console_user(&team, Role::Operator, Some(team_group.id))
        .await
        .unwrap();
    assert!(matches!(
        store.delete_group(team_group.id).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        store
            .set_console_access(team.id, Some(Role::Auditor), None)
            .await
            .unwrap()
    );
    assert!(store.delete_group(team_group.id).await.unwrap(), "no longer in use");

    // So do an unrevoked enrollment token and an unrevoked API token.
    let token = store
        .create_enrollment_token(&NewEnrollmentToken {
            id: EnrollmentTokenId::new(),
            token_hash: TokenHash::of("stw_enr_groups"),
            description: None,
            max_uses: None,
            expires_at: None,
            group: Some("lab".into()),
            created_at: t0,
        })
        .await
        .unwrap();
    let lab = store
        .group_by_name("lab")
        .await
        .unwrap()
        .expect("created for the token");
    assert_eq!(token.group_id, Some(lab.id));
    let api = store
        .create_api_token(&NewApiToken {
            id: ApiTokenId::new(),
            name: "lab".into(),
            token_hash: TokenHash::of("stw_adm_lab"),
            role: Role::Helpdesk,
            group_id: Some(lab.id),
            created_at: t0,
            expires_at: None,
            created_by: "story".into(),
        })
        .await
        .unwrap();
    assert!(matches!(store.delete_group(lab.id).await, Err(StoreError::Conflict(_))));
    assert!(store.revoke_enrollment_token(token.id).await.unwrap());
    assert!(matches!(store.delete_group(lab.id).await, Err(StoreError::Conflict(_))));
    assert!(store.revoke_api_token(api.id, t0).await.unwrap());
    assert!(store.delete_group(lab.id).await.unwrap());
    assert_eq!(
        store.list_api_tokens().await.unwrap()[0].group_id,
        None,
        "a revoked token lets go of a deleted group"
    );

    let mut names = vec!["b-team", "a-team"];
    for n in &names {
        store.create_group(&group(n, t0)).await.unwrap();
    }
    names.sort();
    assert_eq!(
        store
            .list_groups()
            .await
            .unwrap()
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        names,
        "by name"
    );
}

// ---------------------------------------------------------------- access

/// The admin surfaces' credentials: bootstrap admin tokens (idempotent, one active at a time,
/// revocable), named API tokens (by hash, revocable once, last use recorded) and console sessions
/// (staged, touched, deleted with the expired ones, ended for a user, dead once the user loses
/// console access).
pub async fn access<S>(store: &S)
where
    S: AccessStore + UserStore + GroupStore,
{
    let t0 = now();

    // Bootstrap tokens: idempotent installation; a new one revokes the others; revocable once.
    assert_eq!(store.count_admin_tokens().await.unwrap(), 0);
    let bootstrap = |name: &str, value: &str, at: OffsetDateTime| NewBootstrapToken {
        id: ApiTokenId::new(),
        name: name.into(),
        token_hash: TokenHash::of(value),
        created_at: at,
    };
    let first = bootstrap("bootstrap (generated)", "stw_adm_x", t0);
    let installed = store.install_bootstrap_token(&first).await.unwrap();
    assert_eq!(installed.revoked_others, 0);
    assert_eq!(
        installed.token,
        BootstrapToken {
            id: first.id,
            name: first.name.clone(),
            token_hash: first.token_hash,
            created_at: t0,
            last_used_at: None,
            revoked_at: None,
        },
        "bootstrap token round trip"
    );
    let again = store
        .install_bootstrap_token(&bootstrap(
            "bootstrap (configured)",
            "stw_adm_x",
            t0 + Duration::seconds(1),
        ))
        .await
        .unwrap();
    assert_eq!(
        again.token, installed.token,
        "same hash: the stored row is kept as it was"
    );
    assert_eq!(again.revoked_others, 0);
    assert_eq!(store.count_admin_tokens().await.unwrap(), 1);
    assert!(
        store
            .bootstrap_token_by_hash(&TokenHash::of("stw_adm_y"))
            .await
            .unwrap()
            .is_none()
    );
    let t1 = t0 + Duration::seconds(2);
    store.touch_bootstrap_token(first.id, t1).await.unwrap();
    let second = bootstrap("bootstrap (configured)", "stw_adm_y", t1);
    let replaced = store.install_bootstrap_token(&second).await.unwrap();
    assert_eq!(
        replaced.revoked_others, 1,
        "the new bootstrap token replaces the old one"
    );
    assert!(replaced.token.usable());
    let old = store
        .bootstrap_token_by_hash(&first.token_hash)
        .await
        .unwrap()
        .expect("kept, revoked");
    assert_eq!((old.revoked_at, old.last_used_at), (Some(t1), Some(t1)));
    assert!(!old.usable());
    // Re-installing a revoked value does not bring it back, but still revokes the others.
    let back = store
        .install_bootstrap_token(&bootstrap(
            "bootstrap (configured)",
            "stw_adm_x",
            t1 + Duration::seconds(1),
        ))
        .await
        .unwrap();
    assert_eq!((back.token.id, back.token.revoked_at), (first.id, Some(t1)));
    assert_eq!(back.revoked_others, 1);
    let listed = store.list_bootstrap_tokens().await.unwrap();
    assert_eq!(
        listed.iter().map(|t| (t.id, t.usable())).collect::<Vec<_>>(),
        vec![(first.id, false), (second.id, false)],
        "oldest first, revoked ones listed"
    );
    assert_eq!(listed[1].revoked_at, Some(t1 + Duration::seconds(1)));
    let third = bootstrap("bootstrap (configured)", "stw_adm_z", t1 + Duration::seconds(2));
    store.install_bootstrap_token(&third).await.unwrap();
    assert!(
        store
            .revoke_bootstrap_token(third.id, t1 + Duration::seconds(3))
            .await
            .unwrap()
    );
    assert!(
        !store.revoke_bootstrap_token(third.id, t1).await.unwrap(),
        "revoked once"
    );
    assert!(!store.revoke_bootstrap_token(ApiTokenId::new(), t1).await.unwrap());
    assert_eq!(store.count_admin_tokens().await.unwrap(), 3);

    // API tokens: stored by hash, revocable once, last use recorded.
    let pilot = group("pilot", t0);
    store.create_group(&pilot).await.unwrap();
    let hash = TokenHash::of("stw_adm_named");
    let new = NewApiToken {
        id: ApiTokenId::new(),
        name: "ci".into(),
        token_hash: hash,
        role: Role::Helpdesk,
        group_id: Some(pilot.id),
        created_at: t0,
        expires_at: Some(t0 + Duration::days(30)),
        created_by: "bootstrap".into(),
    };
    let created = store.create_api_token(&new).await.unwrap();
    assert!(matches!(
        store
            .create_api_token(&NewApiToken {
                id: ApiTokenId::new(),
                ..new.clone()
            })
            .await,
        Err(StoreError::Conflict(_))
    ));
    let found = store
        .api_token_by_hash(&hash)
        .await
        .unwrap()
        .expect("api token by hash");
    assert_eq!(found, created, "api token round trip");
    assert!(found.usable_at(t0));
    assert!(!found.usable_at(t0 + Duration::days(31)), "expired");
    assert!(
        store
            .api_token_by_hash(&TokenHash::of("other"))
            .await
            .unwrap()
            .is_none()
    );
    let used = t0 + Duration::seconds(3);
    store.touch_api_token(created.id, used).await.unwrap();
    assert!(store.revoke_api_token(created.id, used).await.unwrap());
    assert!(!store.revoke_api_token(created.id, used).await.unwrap());
    assert!(!store.revoke_api_token(ApiTokenId::new(), used).await.unwrap());
    let listed = store.list_api_tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, Some(used));
    assert_eq!(listed[0].revoked_at, Some(used));
    assert!(!listed[0].usable_at(t0));

    // Sessions: pending and full, looked up with the user, touched, deleted with the expired ones.
    let admin = user("root@example.com", t0);
    store.create_console_user(&admin, Role::Admin, None).await.unwrap();
    assert!(
        store
            .set_user_totp(admin.id, Some("steward-sealed-v1:seed"))
            .await
            .unwrap()
    );
    assert!(store.confirm_user_totp(admin.id, 100, t0).await.unwrap());
    let session = |id: &str, pending: bool, expires: OffsetDateTime| ConsoleSession {
        id_hash: TokenHash::of(id),
        user_id: admin.id,
        created_at: t0,
        last_seen_at: t0,
        expires_at: expires,
        source_ip: Some("192.0.2.1".into()),
        second_factor_pending: pending,
    };
    let s1 = session("s1", true, t0 + Duration::minutes(5));
    store.create_console_session(&s1).await.unwrap();
    let s2 = session("s2", false, t0 + Duration::hours(12));
    store.create_console_session(&s2).await.unwrap();
    let old = session("old", false, t0 - Duration::seconds(1));
    store.create_console_session(&old).await.unwrap();
    let (got, who) = store.console_session(&s1.id_hash).await.unwrap().expect("session");
    assert_eq!(got, s1);
    assert_eq!(who.user.id, admin.id);
    assert!(who.totp.is_some_and(|t| t.confirmed()));
    assert!(
        !store
            .console_session(&s2.id_hash)
            .await
            .unwrap()
            .unwrap()
            .0
            .second_factor_pending
    );
    assert!(store.console_session(&TokenHash::of("nope")).await.unwrap().is_none());
    store
        .touch_console_session(&s2.id_hash, t0 + Duration::minutes(3))
        .await
        .unwrap();
    assert_eq!(
        store
            .console_session(&s2.id_hash)
            .await
            .unwrap()
            .unwrap()
            .0
            .last_seen_at,
        t0 + Duration::minutes(3)
    );
    assert!(store.delete_console_session(&s1.id_hash, t0).await.unwrap());
    assert!(!store.delete_console_session(&s1.id_hash, t0).await.unwrap());
    assert!(
        store.console_session(&old.id_hash).await.unwrap().is_none(),
        "expired sessions swept"
    );
    assert!(store.console_session(&s2.id_hash).await.unwrap().is_some());
    // A role change applies at once: the session carries the user's current role.
    assert!(
        store
            .set_console_access(admin.id, Some(Role::Auditor), None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.console_session(&s2.id_hash).await.unwrap().unwrap().1.role,
        Role::Auditor
    );
    // Resetting the second factor ends the user's sessions (done by the caller, in this order).
    assert!(store.set_user_totp(admin.id, None).await.unwrap());
    assert!(store.console_user(admin.id).await.unwrap().unwrap().totp.is_none());
    assert_eq!(store.delete_console_sessions_of(admin.id).await.unwrap(), 1);
    assert!(store.console_session(&s2.id_hash).await.unwrap().is_none());
    assert_eq!(store.delete_console_sessions_of(admin.id).await.unwrap(), 0);
    // A user who loses console access loses the sessions with it.
    let s3 = session("s3", false, t0 + Duration::hours(1));
    store.create_console_session(&s3).await.unwrap();
    assert!(store.console_session(&s3.id_hash).await.unwrap().is_some());
    assert!(store.set_console_access(admin.id, None, None).await.unwrap());
    assert!(store.console_session(&s3.id_hash).await.unwrap().is_none());
}

// ---------------------------------------------------------------- audit

fn audit_event(i: usize, action: &str, at: OffsetDateTime) -> NewAuditEvent {
    NewAuditEvent {
        at,
        actor: "bootstrap".into(),
        actor_id: None,
        actor_role: Some(Role::Admin),
        action: action.into(),
        target: Some(format!("target-{i}")),
        source_ip: Some("192.0.2.1".into()),
        outcome: if i == 1 {
            AuditOutcome::Failure
        } else {
            AuditOutcome::Success
        },
        status: Some(200),
        details: None,
    }
}

/// The audit log: seq assigned in order, each row linked to the previous one with the chain key, the
/// keyed-from marker set by the first keyed append, filters and pages in both directions, and the
/// whole chain verifies with the key (and not without it). Returns the key.
pub async fn audit_chain<S>(store: &S) -> std::sync::Arc<AuditChainKey>
where
    S: AuditLog,
{
    let t0 = now();
    let key = std::sync::Arc::new(AuditChainKey::generate().unwrap());
    assert_eq!(store.audit_keyed_from().await.unwrap(), None);
    for (i, action) in ["device.wipe", "api_token.create", "device.wipe"].iter().enumerate() {
        let new = audit_event(i, action, t0 + Duration::seconds(i as i64));
        let e = store.append_audit_event(&new, &key).await.unwrap();
        assert_eq!(e.seq, i as i64 + 1);
        assert_eq!(e.hash, new.chain_mac(&key, e.seq, &e.prev_hash), "the chain is core's");
        assert_eq!(
            store.audit_keyed_from().await.unwrap(),
            Some(1),
            "set once, by the first append"
        );
    }
    let all = store.audit_events(&AuditFilter::default(), None, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(all[0].prev_hash, AUDIT_GENESIS_HASH);
    assert_eq!(all[1].prev_hash, all[0].hash);
    assert_eq!(all[2].prev_hash, all[1].hash);
    assert_eq!(all[0].at, t0);
    assert_eq!(all[1].outcome, AuditOutcome::Failure);
    assert_eq!(
        all[0],
        audit_event(0, "device.wipe", t0).chained_with(Some(&key), 1, AUDIT_GENESIS_HASH)
    );
    let newest = AuditFilter {
        newest_first: true,
        ..AuditFilter::default()
    };
    let page = store.audit_events(&newest, None, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 2]);
    let page = store.audit_events(&newest, Some(2), 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
    let page = store.audit_events(&AuditFilter::default(), Some(1), 1).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
    let wipes = AuditFilter {
        action: Some("device.wipe".into()),
        ..AuditFilter::default()
    };
    assert_eq!(store.audit_events(&wipes, None, 100).await.unwrap().len(), 2);
    let by_target = AuditFilter {
        target: Some("target-1".into()),
        ..AuditFilter::default()
    };
    assert_eq!(store.audit_events(&by_target, None, 100).await.unwrap().len(), 1);
    let by_actor = AuditFilter {
        actor: Some("someone".into()),
        ..AuditFilter::default()
    };
    assert!(store.audit_events(&by_actor, None, 100).await.unwrap().is_empty());
    let v = crate::verify_audit_log(store, Some(key.clone()), Vec::new())
        .await
        .unwrap()
        .expect("chain verifies");
    assert_eq!(v.count(), 3);
    assert_eq!(v.head(), all[2].hash);
    let other = std::sync::Arc::new(AuditChainKey::generate().unwrap());
    let broken = crate::verify_audit_log(store, Some(other), Vec::new())
        .await
        .unwrap()
        .expect_err("another key does not verify the chain");
    assert_eq!(broken.seq, 1);
    key
}

// ---------------------------------------------------------------- events

/// The device event outbox: every lifecycle commit records its event in the same transaction, with
/// strictly increasing `seq`, the enrollment's ids and the commit's time; consumers page after a
/// cursor.
pub async fn events<S>(store: &S)
where
    S: EnrollmentStore + CommandQueue + CheckinStore + EventLog + Inspect,
{
    let t0 = now();
    assert!(store.device_events_after(0, 100).await.unwrap().is_empty());
    let a = enroll(store, "E0E0E0E0E0E0E0E0E0E0E0E0E0E0E0E0", "V1", t0).await;
    let t1 = t0 + Duration::seconds(1);
    let b = enroll(store, "E1E1E1E1E1E1E1E1E1E1E1E1E1E1E1E1", "V2", t1).await;
    let cmd = new_command(&a, "./A", 0, None, t1);
    store.enqueue_commands(std::slice::from_ref(&cmd)).await.unwrap();
    let t2 = t1 + Duration::seconds(1);
    store
        .commit_checkin(a.id, &answered(vec![ok(cmd.id, 404)], &session("k")), t2)
        .await
        .unwrap();
    let t3 = t2 + Duration::seconds(1);
    let wiped = EnrollmentEnd::new(EnrollmentState::Wiped, reasons::WIPE_ACKNOWLEDGED);
    assert!(store.end_enrollment(b.id, &wiped, t3).await.unwrap());

    let all = store.device_events_after(0, 100).await.unwrap();
    let seen: Vec<(EventKind, EnrollmentId, &str, OffsetDateTime)> = all
        .iter()
        .map(|e| (e.kind, e.enrollment_id, e.device_id.as_str(), e.at))
        .collect();
    assert_eq!(
        seen,
        vec![
            (EventKind::Enrolled, a.id, a.device_id.as_str(), t0),
            (EventKind::Enrolled, b.id, b.device_id.as_str(), t1),
            (EventKind::CommandFailed, a.id, a.device_id.as_str(), t2),
            (EventKind::Wiped, b.id, b.device_id.as_str(), t3),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "seq increases");
    assert_eq!(all[2].data, ok(cmd.id, 404).event.data);
    assert_eq!(
        all[3].data,
        NewDeviceEvent::enrollment_ended(EnrollmentState::Wiped, reasons::WIPE_ACKNOWLEDGED).data
    );
    assert_eq!(store.device_events_after(all[0].seq, 2).await.unwrap(), all[1..3]);
    assert!(store.device_events_after(all[3].seq, 100).await.unwrap().is_empty());
    assert_eq!(store.device_events_after(0, 1).await.unwrap(), all[..1]);
    assert_eq!(
        store.device_events_for(a.id).await.unwrap(),
        vec![all[0].clone(), all[2].clone()]
    );
    assert!(store.device_events_for(EnrollmentId::new()).await.unwrap().is_empty());

    // An event that goes with no other write (a refused re-enrollment) lands on its enrollment,
    // after everything before it; an unknown enrollment gets none.
    let t4 = t3 + Duration::seconds(1);
    let refused =
        NewDeviceEvent::reenrollment_refused(AuthMethod::EnrollmentToken, Some("eve@example.com"), None, None);
    assert!(store.append_device_event(a.id, &refused, t4).await.unwrap());
    assert!(
        !store
            .append_device_event(EnrollmentId::new(), &refused, t4)
            .await
            .unwrap()
    );
    let after = store.device_events_after(all[3].seq, 100).await.unwrap();
    let seen: Vec<_> = after
        .iter()
        .map(|e| (e.kind, e.enrollment_id, e.device_id.as_str(), e.at, &e.data))
        .collect();
    assert_eq!(
        seen,
        vec![(
            EventKind::ReenrollmentRefused,
            a.id,
            a.device_id.as_str(),
            t4,
            &refused.data
        )]
    );
}

// ---------------------------------------------------------------- webhooks

/// Webhooks: a subscription starts at the newest event, pings queue and make it due, attempts are
/// logged and move the cursor (or drop the ping) only when delivered or given up, the log pages newest
/// first and is pruned, and deleting a subscription takes its log with it.
pub async fn webhooks<S>(store: &S)
where
    S: EnrollmentStore + EventLog + WebhookStore,
{
    let t0 = now();
    enroll(store, "F0F0F0F0F0F0F0F0F0F0F0F0F0F0F0F0", "W1", t0).await;
    enroll(store, "F1F1F1F1F1F1F1F1F1F1F1F1F1F1F1F1", "W2", t0).await;
    let newest = store
        .device_events_after(0, 1000)
        .await
        .unwrap()
        .last()
        .map_or(0, |e| e.seq);
    assert!(newest > 0, "the enrollments above recorded device events");
    let new = |name: &str, kinds: WebhookKinds| NewWebhook {
        id: WebhookId::new(),
        name: name.into(),
        url: "https://hooks.example.com/steward".into(),
        kinds,
        sealed_secret: "steward-sealed-v1:opaque".into(),
        enabled: true,
        created_by: "test".into(),
        created_at: t0,
    };
    let a = store.create_webhook(&new("a", WebhookKinds::All)).await.unwrap();
    assert_eq!(
        a.cursor, newest,
        "a subscription gets what happens after it was created"
    );
    assert_eq!(
        (a.attempts, a.retry_item.as_deref(), a.next_attempt_at),
        (0, None, None)
    );
    assert_eq!(
        (
            a.name.as_str(),
            a.url.as_str(),
            a.sealed_secret.as_str(),
            a.enabled,
            a.created_by.as_str(),
            a.created_at
        ),
        (
            "a",
            "https://hooks.example.com/steward",
            "steward-sealed-v1:opaque",
            true,
            "test",
            t0
        )
    );
    let b = store
        .create_webhook(&new("b", WebhookKinds::only([EventKind::Wiped, EventKind::Enrolled])))
        .await
        .unwrap();
    assert_eq!(store.webhook(b.id).await.unwrap().unwrap(), b);
    assert_eq!(b.kinds.names(), vec!["enrolled", "wiped"]);
    let listed: Vec<WebhookId> = store.list_webhooks().await.unwrap().iter().map(|w| w.id).collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&a.id) && listed.contains(&b.id));
    assert!(store.webhook(WebhookId::new()).await.unwrap().is_none());
    // Pausing keeps everything else (the cursor above all).
    assert!(store.set_webhook_enabled(b.id, false).await.unwrap());
    let paused = store.webhook(b.id).await.unwrap().unwrap();
    assert!(!paused.enabled);
    assert_eq!(paused.cursor, b.cursor);
    assert!(store.set_webhook_enabled(b.id, true).await.unwrap());
    assert_eq!(store.webhook(b.id).await.unwrap().unwrap(), b);
    assert!(!store.set_webhook_enabled(WebhookId::new(), false).await.unwrap());

    // A failing attempt records the retry state and leaves the cursor alone.
    let attempt = |item: DeliveryItem, n: u32, outcome: DeliveryOutcome| WebhookAttempt {
        webhook_id: a.id,
        item,
        delivery_id: format!("{}-x", a.id),
        event_type: "enrolled".into(),
        attempt: n,
        status_code: Some(500),
        error: None,
        duration_ms: 12,
        at: t0 + Duration::seconds(i64::from(n)),
        outcome,
        next_attempt_at: (outcome == DeliveryOutcome::Retrying).then(|| t0 + Duration::minutes(1)),
    };
    store
        .record_webhook_attempt(&attempt(DeliveryItem::Event(newest + 1), 1, DeliveryOutcome::Retrying))
        .await
        .unwrap();
    let w = store.webhook(a.id).await.unwrap().unwrap();
    assert_eq!((w.cursor, w.attempts), (newest, 1));
    assert_eq!(w.next_attempt_at, Some(t0 + Duration::minutes(1)));
    assert_eq!(w.retry_item, Some(format!("{}-x", a.id)));
    let mut ok = attempt(DeliveryItem::Event(newest + 1), 2, DeliveryOutcome::Delivered);
    ok.status_code = Some(204);
    store.record_webhook_attempt(&ok).await.unwrap();
    let w = store.webhook(a.id).await.unwrap().unwrap();
    assert_eq!(
        (w.cursor, w.attempts, w.retry_item, w.next_attempt_at),
        (newest + 1, 0, None, None)
    );
    // The cursor never moves backwards.
    store.advance_webhook_cursor(a.id, newest).await.unwrap();
    assert_eq!(store.webhook(a.id).await.unwrap().unwrap().cursor, newest + 1);
    store.advance_webhook_cursor(a.id, newest + 5).await.unwrap();
    assert_eq!(store.webhook(a.id).await.unwrap().unwrap().cursor, newest + 5);

    // Pings: queued in order, due at once, dropped when delivered or given up.
    store
        .record_webhook_attempt(&attempt(DeliveryItem::Event(newest + 6), 1, DeliveryOutcome::Retrying))
        .await
        .unwrap();
    let p1 = store.queue_webhook_ping(a.id, t0).await.unwrap().unwrap();
    let p2 = store.queue_webhook_ping(a.id, t0).await.unwrap().unwrap();
    assert!(p2.id > p1.id);
    assert_eq!((p1.webhook_id, p1.created_at), (a.id, t0));
    assert_eq!(store.webhook(a.id).await.unwrap().unwrap().next_attempt_at, None);
    assert!(store.queue_webhook_ping(WebhookId::new(), t0).await.unwrap().is_none());
    assert_eq!(store.next_webhook_ping(a.id).await.unwrap(), Some(p1.clone()));
    assert_eq!(store.next_webhook_ping(b.id).await.unwrap(), None);
    store
        .record_webhook_attempt(&attempt(DeliveryItem::Ping(p1.id), 1, DeliveryOutcome::Failed))
        .await
        .unwrap();
    assert_eq!(store.next_webhook_ping(a.id).await.unwrap(), Some(p2));
    assert_eq!(store.webhook(a.id).await.unwrap().unwrap().cursor, newest + 5);

    // The log, newest first, paged by id.
    let log = store.webhook_deliveries(a.id, None, 100).await.unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(log[0].outcome, DeliveryOutcome::Failed);
    assert_eq!(log[0].event_seq, None);
    assert_eq!(log[3].event_seq, Some(newest + 1));
    assert_eq!(
        (log[3].attempt, log[3].status_code, log[3].duration_ms),
        (1, Some(500), 12)
    );
    assert_eq!(log[3].at, t0 + Duration::seconds(1));
    assert_eq!(
        (
            log[3].webhook_id,
            log[3].delivery_id.clone(),
            log[3].event_type.as_str(),
            log[3].error.clone()
        ),
        (a.id, format!("{}-x", a.id), "enrolled", None)
    );
    let page = store.webhook_deliveries(a.id, Some(log[1].id), 100).await.unwrap();
    assert_eq!(
        page.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![log[2].id, log[3].id]
    );
    assert_eq!(store.webhook_deliveries(a.id, None, 2).await.unwrap(), log[..2]);
    assert!(store.webhook_deliveries(b.id, None, 100).await.unwrap().is_empty());

    // Retention: by row count per subscription, then by age.
    assert_eq!(
        store.prune_webhook_deliveries(t0 - Duration::days(1), 3).await.unwrap(),
        1
    );
    assert_eq!(store.webhook_deliveries(a.id, None, 100).await.unwrap().len(), 3);
    assert_eq!(
        store
            .prune_webhook_deliveries(t0 + Duration::seconds(2), 100)
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.webhook_deliveries(a.id, None, 100).await.unwrap().len(), 1);

    // An attempt for a deleted subscription writes nothing; deleting takes the log along.
    assert!(store.delete_webhook(a.id).await.unwrap());
    assert!(!store.delete_webhook(a.id).await.unwrap());
    store
        .record_webhook_attempt(&attempt(DeliveryItem::Event(newest + 6), 2, DeliveryOutcome::Retrying))
        .await
        .unwrap();
    assert!(store.webhook(a.id).await.unwrap().is_none());
    assert!(store.webhook_deliveries(a.id, None, 100).await.unwrap().is_empty());
    assert!(store.next_webhook_ping(a.id).await.unwrap().is_none(), "pings go too");
    assert_eq!(store.list_webhooks().await.unwrap().len(), 1);
}

// ---------------------------------------------------------------- reports

/// Device lists (keyset pages in every order and direction, filters) and the server overview's
/// counts.
pub async fn device_reports<S>(store: &S)
where
    S: ReportStore + EnrollmentStore + CommandQueue + UserStore + GroupStore + AccessStore + AuditLog,
{
    let t0 = now();
    let key = AuditChainKey::generate().unwrap();
    let token = store
        .create_enrollment_token(&NewEnrollmentToken {
            id: EnrollmentTokenId::new(),
            token_hash: TokenHash::of("stw_enr_reports"),
            description: None,
            max_uses: Some(1),
            expires_at: None,
            group: Some("pilot".into()),
            created_at: t0,
        })
        .await
        .unwrap();
    // Three enrollments: one replaced by a re-enrollment of the same device, one other device.
    let dev = "0123456789ABCDEF0123456789ABCDEF";
    let replaced = new_enrollment(dev, "01", Some(token.id), t0);
    store
        .commit_enrollment(&commit(replaced.clone(), Some(token.id), None))
        .await
        .unwrap();
    enroll(store, "11111111111111111111111111111111", "03", t0).await;
    let active = new_enrollment(dev, "05", None, t0 + Duration::seconds(5));
    store
        .commit_enrollment(&recommit(active.clone(), &replaced))
        .await
        .unwrap();

    // Page through every enrollment, two at a time, both directions: no gaps, no repeats.
    for descending in [false, true] {
        for sort in [DeviceSort::EnrolledAt, DeviceSort::Name, DeviceSort::LastSeen] {
            let mut q = DeviceQuery {
                sort,
                descending,
                limit: 2,
                ..DeviceQuery::default()
            };
            let mut seen = Vec::new();
            loop {
                let page = store.list_devices(&q).await.unwrap();
                assert!(page.len() <= 2);
                let Some(last) = page.last() else { break };
                q.after = Some(DeviceCursor {
                    key: sort.key_of(last),
                    id: last.id,
                });
                seen.extend(page.iter().map(|e| e.id));
            }
            let mut unique = seen.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                (seen.len(), unique.len()),
                (3, 3),
                "{sort:?} desc={descending}: {seen:?}"
            );
            if sort == DeviceSort::EnrolledAt {
                // The re-enrollment came last.
                let newest = if descending { seen[0] } else { seen[2] };
                assert_eq!(newest, active.id);
            }
        }
    }
    let count = |q: DeviceQuery| async move {
        store
            .list_devices(&DeviceQuery { limit: 100, ..q })
            .await
            .unwrap()
            .len()
    };
    let q = DeviceQuery::default;
    assert_eq!(
        count(DeviceQuery {
            state: Some(EnrollmentState::Active),
            ..q()
        })
        .await,
        2
    );
    assert_eq!(
        count(DeviceQuery {
            state: Some(EnrollmentState::Replaced),
            ..q()
        })
        .await,
        1
    );
    assert_eq!(
        count(DeviceQuery {
            name_contains: Some("pc-".into()),
            ..q()
        })
        .await,
        3
    );
    assert_eq!(
        count(DeviceQuery {
            name_contains: Some("%".into()),
            ..q()
        })
        .await,
        0,
        "no wildcards"
    );
    assert_eq!(
        count(DeviceQuery {
            user: Some("A@EXAMPLE.COM".into()),
            ..q()
        })
        .await,
        3
    );
    assert_eq!(
        count(DeviceQuery {
            os_version: Some("10.0.26100".into()),
            ..q()
        })
        .await,
        3
    );
    assert_eq!(
        count(DeviceQuery {
            os_version: Some("11.".into()),
            ..q()
        })
        .await,
        0
    );
    assert_eq!(
        count(DeviceQuery {
            last_seen_after: Some(t0 - Duration::days(1)),
            ..q()
        })
        .await,
        0,
        "never seen"
    );
    let pilot = store.group_by_name("pilot").await.unwrap().unwrap();
    assert_eq!(
        count(DeviceQuery {
            group_id: Some(pilot.id),
            ..q()
        })
        .await,
        0
    );
    assert!(store.set_enrollment_group(active.id, Some(pilot.id)).await.unwrap());
    assert_eq!(
        count(DeviceQuery {
            group_id: Some(pilot.id),
            ..q()
        })
        .await,
        1
    );
    assert_eq!(
        store
            .list_devices(&DeviceQuery { limit: 1, ..q() })
            .await
            .unwrap()
            .len(),
        1,
        "the limit"
    );

    // The overview's counts.
    store
        .create_user(&User {
            id: UserId::new(),
            email: "alice@example.com".into(),
            display_name: None,
            password_hash: "$argon2id$fake".into(),
            disabled: false,
            created_at: t0,
        })
        .await
        .unwrap();
    store
        .create_api_token(&NewApiToken {
            id: ApiTokenId::new(),
            name: "ci".into(),
            token_hash: TokenHash::of("stw_adm_reports"),
            role: Role::Auditor,
            group_id: None,
            created_at: t0,
            expires_at: None,
            created_by: "bootstrap".into(),
        })
        .await
        .unwrap();
    for (i, action) in ["device.wipe", "api_token.create", "device.wipe"].iter().enumerate() {
        store
            .append_audit_event(&audit_event(i, action, t0 + Duration::seconds(i as i64)), &key)
            .await
            .unwrap();
    }
    let open = new_command(&active, "./A", 0, None, t0);
    let cancelled = new_command(&active, "./B", 0, None, t0);
    store
        .enqueue_commands(&[open.clone(), cancelled.clone()])
        .await
        .unwrap();
    assert!(store.cancel_command(cancelled.id, t0).await.unwrap());
    let c = store.admin_counts().await.unwrap();
    assert_eq!(
        (
            c.active_devices,
            c.enrollments,
            c.users,
            c.groups,
            c.api_tokens,
            c.audit_events
        ),
        (2, 3, 1, 1, 1, 3)
    );
    assert_eq!((c.open_commands, c.enrollment_tokens), (1, 1));
}

/// The dashboard: fleet totals, and the activity by day from the device event log.
pub async fn dashboard<S>(store: &S)
where
    S: ReportStore + EnrollmentStore + CheckinStore + CommandQueue,
{
    let t0 = now();
    assert_eq!(store.device_stats(t0).await.unwrap(), DeviceStats::default());
    let e1 = enroll(store, "dev-console-1", "C1", t0).await;
    let e2 = enroll(store, "dev-console-2", "C2", t0).await;
    let end = EnrollmentEnd::new(EnrollmentState::Unenrolled, reasons::DEVICE_UNENROLLED);
    assert!(
        store
            .end_enrollment(e1.id, &end, t0 + Duration::seconds(1))
            .await
            .unwrap()
    );

    let stats = store.device_stats(t0).await.unwrap();
    assert_eq!(
        stats.by_state,
        vec![("active".to_owned(), 1), ("unenrolled".to_owned(), 1)]
    );
    assert_eq!((stats.never_seen, stats.seen_last_hour), (1, 0));
    assert_eq!(stats.os_versions, vec![("10.0.26100.1".to_owned(), 1)]);
    // A check-in is a sighting; open commands are counted.
    store
        .enqueue_commands(&[new_command(&e2, "./A", 0, None, t0)])
        .await
        .unwrap();
    store
        .commit_checkin(e2.id, &CheckinCommit::default(), t0 - Duration::hours(2))
        .await
        .unwrap();
    let stats = store.device_stats(t0).await.unwrap();
    assert_eq!(
        (
            stats.seen_last_hour,
            stats.seen_last_day,
            stats.seen_older,
            stats.never_seen,
            stats.open_commands
        ),
        (0, 1, 0, 0, 1)
    );
    let stats = store.device_stats(t0 + Duration::days(2)).await.unwrap();
    assert_eq!((stats.seen_last_day, stats.seen_older), (0, 1));

    let again = new_enrollment("dev-console-2", "C3", None, t0 + Duration::seconds(2));
    store.commit_enrollment(&recommit(again, &e2)).await.unwrap();
    let days = store.daily_activity(t0 - Duration::days(1), None).await.unwrap();
    let total = days.iter().fold(DailyActivity::default(), |mut a, d| {
        a.enrolled += d.enrolled;
        a.reenrolled += d.reenrolled;
        a.removed += d.removed;
        a
    });
    assert_eq!((total.enrolled, total.reenrolled, total.removed), (2, 1, 1), "{days:?}");
    assert!(days.iter().all(|d| d.day == utc_midnight(d.day)));
    assert!(
        store
            .daily_activity(t0 + Duration::days(2), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .daily_activity(t0 - Duration::days(3), Some(t0 - Duration::days(1)))
            .await
            .unwrap()
            .is_empty(),
        "the upper bound excludes its own day and later"
    );
    let bounded = store
        .daily_activity(t0 - Duration::days(1), Some(t0 + Duration::days(1)))
        .await
        .unwrap();
    assert_eq!(bounded, days);
}

// ---------------------------------------------------------------- readiness

/// A freshly opened store answers the readiness read, and its schema is the binary's.
pub async fn readiness<S>(store: &S)
where
    S: HealthStore,
{
    let v = store
        .schema_versions()
        .await
        .expect("readiness: the schema read answers");
    assert!(!v.known.is_empty(), "readiness: the binary carries migrations");
    assert_eq!(
        v.applied, v.known,
        "readiness: a store open has applied every migration it knows"
    );
    assert_eq!(v.state(), SchemaState::Current, "readiness: the schema is current");
    // The read is cheap and repeatable: a second one answers the same.
    assert_eq!(store.schema_versions().await.unwrap(), v, "readiness: a second read");
}

// ---------------------------------------------------------------- configuration profiles

/// A Windows setting as the platform adapter would validate it (an int node).
fn config_setting(path: &str, value: &str, readable: bool) -> Setting {
    Setting {
        path: path.into(),
        format: "int".into(),
        verb: "replace".into(),
        value: value.into(),
        type_: None,
        readable,
        on_remove: OnRemove::Delete,
        remove_path: None,
    }
}

fn groups_assignment(groups: &[GroupId], exclude: &[GroupId]) -> Assignment {
    Assignment {
        all: false,
        groups: groups.to_vec(),
        exclude_groups: exclude.to_vec(),
    }
}

/// The write that creates profile `name` at version 1 with `settings`.
fn create_profile(name: &str, assignment: Assignment, settings: Vec<Setting>, at: OffsetDateTime) -> ProfileWrite {
    let id = ProfileId::new();
    ProfileWrite {
        profile: Profile {
            id,
            name: name.into(),
            platform: Platform::Windows,
            description: format!("the {name} story profile"),
            priority: 100,
            remediation: Remediation::Remediate,
            current_version: 1,
            assignment,
            created_at: at,
            updated_at: at,
        },
        new_version: Some(ProfileVersion {
            profile_id: id,
            version: 1,
            digest: ProfileVersion::digest_of(&settings),
            config_lock: false,
            settings,
            created_at: at,
        }),
        expected_version: None,
    }
}

/// The write that updates `p` (as read) with a new assignment and, if given, new settings (a new
/// version).
fn update_profile(
    p: &Profile,
    assignment: Assignment,
    settings: Option<Vec<Setting>>,
    at: OffsetDateTime,
) -> ProfileWrite {
    let version = p.current_version + u32::from(settings.is_some());
    ProfileWrite {
        profile: Profile {
            current_version: version,
            assignment,
            updated_at: at,
            ..p.clone()
        },
        new_version: settings.map(|settings| ProfileVersion {
            profile_id: p.id,
            version,
            digest: ProfileVersion::digest_of(&settings),
            config_lock: false,
            settings,
            created_at: at,
        }),
        expected_version: Some(p.current_version),
    }
}

/// Profiles: create, read back (by id, by name, listed, versions), update against the expected
/// version (a new version appended, the assignment replaced), stale updates and duplicate names
/// refused, batches all or nothing, assignments naming only existing groups, the epoch moved by every
/// write and only by writes, deletion, and groups kept while an assignment names them.
pub async fn profiles<S>(store: &S)
where
    S: ProfileStore + GroupStore,
{
    let t0 = now();
    let (lab, quarantine) = (group("lab", t0), group("quarantine", t0));
    store.create_group(&lab).await.unwrap();
    store.create_group(&quarantine).await.unwrap();
    assert!(store.list_profiles().await.unwrap().is_empty());
    let epoch0 = store.configuration_epoch().await.unwrap();

    // Create: version 1 with its settings, an assignment with a group and an excluded group.
    let w1 = create_profile(
        "camera-off",
        groups_assignment(&[lab.id], &[quarantine.id]),
        vec![config_setting("./A", "1", true), config_setting("./B", "2", false)],
        t0,
    );
    store.write_profiles(std::slice::from_ref(&w1)).await.unwrap();
    let epoch1 = store.configuration_epoch().await.unwrap();
    assert!(epoch1 > epoch0, "profiles: a create moves the epoch");
    let p1 = w1.profile.clone();
    let v1 = w1.new_version.clone().unwrap();
    assert_eq!(store.profile(p1.id).await.unwrap(), Some(p1.clone()), "profiles: by id");
    assert_eq!(
        store.profile_by_name("camera-off").await.unwrap(),
        Some(p1.clone()),
        "profiles: by name"
    );
    assert!(store.profile_by_name("Camera-off").await.unwrap().is_none());
    assert!(store.profile(ProfileId::new()).await.unwrap().is_none());
    assert_eq!(store.list_profiles().await.unwrap(), vec![p1.clone()]);
    assert_eq!(store.profile_version(p1.id, 1).await.unwrap(), Some(v1.clone()));
    assert!(store.profile_version(p1.id, 2).await.unwrap().is_none());
    assert_eq!(store.profile_versions(p1.id).await.unwrap(), vec![v1.clone()]);
    assert_eq!(
        store.configuration_epoch().await.unwrap(),
        epoch1,
        "profiles: reads do not move the epoch"
    );

    // The included group is in use while the assignment names it.
    assert!(
        matches!(store.delete_group(lab.id).await, Err(StoreError::Conflict(_))),
        "profiles: an assigned group is in use"
    );

    // Update against the current version: version 2 appended, the assignment replaced.
    let t1 = t0 + Duration::seconds(1);
    let w2 = update_profile(
        &p1,
        Assignment {
            all: true,
            groups: vec![],
            exclude_groups: vec![quarantine.id],
        },
        Some(vec![config_setting("./A", "0", true)]),
        t1,
    );
    store.write_profiles(std::slice::from_ref(&w2)).await.unwrap();
    let epoch2 = store.configuration_epoch().await.unwrap();
    assert!(epoch2 > epoch1, "profiles: an update moves the epoch");
    let p2 = w2.profile.clone();
    let v2 = w2.new_version.clone().unwrap();
    assert_eq!(
        store.profile(p1.id).await.unwrap(),
        Some(p2.clone()),
        "profiles: updated"
    );
    assert_eq!(
        store.profile_versions(p1.id).await.unwrap(),
        vec![v1.clone(), v2.clone()]
    );
    assert_eq!(store.profile_version(p1.id, 1).await.unwrap(), Some(v1.clone()), "kept");

    // A stale update (decided against version 1) is a Conflict and writes nothing.
    let stale = update_profile(
        &p1,
        Assignment::default(),
        Some(vec![config_setting("./Z", "9", false)]),
        t1,
    );
    assert!(
        matches!(store.write_profiles(&[stale]).await, Err(StoreError::Conflict(_))),
        "profiles: stale expected version"
    );
    assert_eq!(store.profile(p1.id).await.unwrap(), Some(p2.clone()));
    assert_eq!(store.profile_versions(p1.id).await.unwrap().len(), 2);
    assert_eq!(store.configuration_epoch().await.unwrap(), epoch2, "nothing written");
    // So is an update of a profile that does not exist.
    let ghost = create_profile("ghost", Assignment::default(), vec![], t1);
    assert!(matches!(
        store
            .write_profiles(&[update_profile(&ghost.profile, Assignment::default(), None, t1)])
            .await,
        Err(StoreError::Conflict(_))
    ));

    // A second profile with the same name is a Conflict.
    let dup = create_profile("camera-off", Assignment::default(), vec![], t1);
    assert!(
        matches!(store.write_profiles(&[dup]).await, Err(StoreError::Conflict(_))),
        "profiles: duplicate name"
    );

    // A batch whose second write conflicts writes neither.
    let fresh = create_profile(
        "a-first",
        Assignment::default(),
        vec![config_setting("./C", "3", false)],
        t1,
    );
    let stale_again = update_profile(&p1, Assignment::default(), None, t1);
    assert!(matches!(
        store.write_profiles(&[fresh.clone(), stale_again]).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        store.profile_by_name("a-first").await.unwrap().is_none(),
        "profiles: a failed batch writes nothing"
    );
    assert_eq!(store.profile(p1.id).await.unwrap(), Some(p2.clone()));
    assert_eq!(store.configuration_epoch().await.unwrap(), epoch2);

    // An assignment naming a group that does not exist is a Conflict.
    let unknown = create_profile("orphan", groups_assignment(&[GroupId::new()], &[]), vec![], t1);
    assert!(matches!(
        store.write_profiles(&[unknown]).await,
        Err(StoreError::Conflict(_))
    ));
    let unknown_excluded = create_profile("orphan", groups_assignment(&[lab.id], &[GroupId::new()]), vec![], t1);
    assert!(matches!(
        store.write_profiles(&[unknown_excluded]).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.profile_by_name("orphan").await.unwrap().is_none());
    assert_eq!(store.configuration_epoch().await.unwrap(), epoch2);

    // A batch of two good writes: both, in one epoch move or more; an assignment-only update keeps
    // the version.
    let t2 = t1 + Duration::seconds(1);
    let reassign = update_profile(&p2, groups_assignment(&[], &[quarantine.id]), None, t2);
    store.write_profiles(&[fresh.clone(), reassign.clone()]).await.unwrap();
    let epoch3 = store.configuration_epoch().await.unwrap();
    assert!(epoch3 > epoch2, "profiles: a batch moves the epoch");
    let p3 = reassign.profile.clone();
    assert_eq!(p3.current_version, 2);
    assert_eq!(store.profile(p1.id).await.unwrap(), Some(p3.clone()));
    assert_eq!(store.profile_versions(p1.id).await.unwrap(), vec![v1, v2]);
    assert_eq!(
        store.list_profiles().await.unwrap(),
        vec![fresh.profile.clone(), p3.clone()],
        "profiles: by name"
    );

    // The group the assignment no longer names can go; the excluded one cannot.
    assert!(store.delete_group(lab.id).await.unwrap());
    assert!(
        matches!(store.delete_group(quarantine.id).await, Err(StoreError::Conflict(_))),
        "profiles: an excluded group is in use too"
    );

    // Delete: the profile, its versions and its assignment go; the epoch moves.
    assert!(store.delete_profile(p1.id).await.unwrap());
    let epoch4 = store.configuration_epoch().await.unwrap();
    assert!(epoch4 > epoch3, "profiles: a delete moves the epoch");
    assert!(store.profile(p1.id).await.unwrap().is_none());
    assert!(store.profile_by_name("camera-off").await.unwrap().is_none());
    assert!(store.profile_versions(p1.id).await.unwrap().is_empty());
    assert!(store.profile_version(p1.id, 1).await.unwrap().is_none());
    assert!(!store.delete_profile(p1.id).await.unwrap(), "profiles: deleted once");
    assert_eq!(
        store.configuration_epoch().await.unwrap(),
        epoch4,
        "a no-op delete writes nothing"
    );
    assert_eq!(store.list_profiles().await.unwrap(), vec![fresh.profile]);
    assert!(store.delete_group(quarantine.id).await.unwrap(), "no longer named");
    // The name is free again.
    store
        .write_profiles(&[create_profile("camera-off", Assignment::default(), vec![], t2)])
        .await
        .unwrap();
}

/// The device's rows as a model of the store: what the commits wrote.
fn apply_config_commit(
    model: &mut std::collections::BTreeMap<String, DeviceSetting>,
    c: &crate::configuration::ConfigurationCommit,
) {
    for r in &c.upserts {
        model.insert(r.path.clone(), r.clone());
    }
    for p in &c.deletes {
        model.remove(p);
    }
}

fn assigned(w: &ProfileWrite) -> AssignedProfile {
    let v = w.new_version.as_ref().unwrap();
    AssignedProfile {
        id: w.profile.id,
        name: w.profile.name.clone(),
        priority: w.profile.priority,
        remediation: w.profile.remediation,
        created_at: w.profile.created_at,
        version: v.version,
        assignment: w.profile.assignment.clone(),
        settings: v.settings.clone(),
        config_lock: v.config_lock,
    }
}

async fn config_context<S: CheckinStore>(store: &S, id: EnrollmentId, at: OffsetDateTime) -> ConfigurationContext {
    store
        .checkin_context(EnrollmentKey::Id(id), &[], at)
        .await
        .unwrap()
        .expect("context")
        .configuration
}

/// Commits a check-in of `e` whose configuration part is `c`.
async fn commit_config<S: CheckinStore>(
    store: &S,
    id: EnrollmentId,
    c: &crate::configuration::ConfigurationCommit,
    at: OffsetDateTime,
) {
    let commit = CheckinCommit {
        configuration: Some(c.clone()),
        ..in_session(&session("cfg"))
    };
    store.commit_checkin(id, &commit, at).await.unwrap();
}

/// The configuration in the check-in: the stamp read with the context and the profiles and rows
/// loaded only when needed (first contact, epoch moved, verification due or requested, group
/// changed); a commit built with core's `plan`/`absorb` writes rows (every field round-trips), row
/// deletions, events and the stamp; assignment counts, per-profile status counts and verification
/// requests cover the active enrollments they should.
pub async fn configuration_in_checkin<S>(store: &S)
where
    S: EnrollmentStore + CheckinStore + ProfileStore + GroupStore + Inspect,
{
    use crate::configuration::{ConfigurationCommit, OpAnswers, absorb, plan};
    use std::collections::BTreeMap;

    let policy = VerifyPolicy::default();
    let t0 = now();
    let (lab, other) = (group("lab", t0), group("other", t0));
    store.create_group(&lab).await.unwrap();
    store.create_group(&other).await.unwrap();
    let e = enroll_device(store, "CFG-1").await;
    assert!(store.set_enrollment_group(e.id, Some(lab.id)).await.unwrap());

    // Profiles: one for the lab (report-only), one for every device but the lab, one assigned to
    // nobody (not a candidate).
    let mut wifi = create_profile(
        "wifi",
        groups_assignment(&[lab.id], &[]),
        vec![
            config_setting("./A", "1", true),
            config_setting("./B", "2", true),
            Setting {
                type_: Some("text/plain".into()),
                on_remove: OnRemove::Replace("0".into()),
                remove_path: Some("./C/Reset".into()),
                ..config_setting("./C", "3", false)
            },
        ],
        t0,
    );
    wifi.profile.remediation = Remediation::Report;
    wifi.profile.priority = 5;
    let others = create_profile(
        "others",
        Assignment {
            all: true,
            groups: vec![],
            exclude_groups: vec![lab.id],
        },
        vec![config_setting("./D", "4", true)],
        t0,
    );
    let idle = create_profile(
        "idle",
        Assignment::default(),
        vec![config_setting("./E", "5", true)],
        t0,
    );
    store
        .write_profiles(&[wifi.clone(), others.clone(), idle.clone()])
        .await
        .unwrap();
    let epoch = store.configuration_epoch().await.unwrap();

    // First contact: never reconciled, so everything is loaded.
    let ctx = config_context(store, e.id, t0).await;
    assert_eq!(ctx.epoch, epoch, "configuration: the epoch with the context");
    assert_eq!(ctx.state, DeviceConfigState::default(), "configuration: no stamp yet");
    let loaded = ctx.loaded.clone().expect("configuration: loaded on first contact");
    assert_eq!(loaded.groups, vec![lab.id]);
    let mut candidates = loaded.candidates.clone();
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        candidates,
        vec![assigned(&others), assigned(&wifi)],
        "configuration: candidates are the platform's assigned profiles"
    );
    assert!(loaded.settings.is_empty());
    assert_eq!(store.device_configuration(e.id).await.unwrap(), loaded);
    assert!(matches!(
        store.device_configuration(EnrollmentId::new()).await,
        Err(StoreError::NotFound)
    ));

    // Round 1: every apply sent, none answered.
    let mut model: BTreeMap<String, DeviceSetting> = BTreeMap::new();
    let plan1 = plan(e.id, &ctx, t0).unwrap();
    assert_eq!(plan1.ops.len(), 3, "configuration: wifi's three settings");
    let sent: Vec<CommandId> = plan1.ops.iter().map(|o| o.id).collect();
    let c1 = absorb(
        &plan1,
        &OpAnswers {
            session: "cfg",
            sent: &sent,
            ..Default::default()
        },
        &policy,
        t0,
    );
    commit_config(store, e.id, &c1, t0).await;
    apply_config_commit(&mut model, &c1);
    let stored = store.device_configuration(e.id).await.unwrap();
    assert_eq!(
        stored.settings,
        model.values().cloned().collect::<Vec<_>>(),
        "configuration: rows round-trip, in flight included"
    );
    assert!(stored.settings.iter().all(|r| r.in_flight.is_some()));

    // Round 2 (the same session): ./A and ./B acknowledged, ./C refused with the device's error.
    let t1 = t0 + Duration::microseconds(1_234_567);
    let ctx = config_context(store, e.id, t1).await;
    assert_eq!(ctx.state, c1.state, "configuration: the stamp round-trips");
    let plan2 = plan(e.id, &ctx, t1).expect("configuration: loaded while unsettled");
    let id_of = |p: &crate::configuration::Plan, path: &str| plan_op(p, path);
    let (a, b, c) = (id_of(&plan2, "./A"), id_of(&plan2, "./B"), id_of(&plan2, "./C"));
    let outcomes = vec![ok(a, 200), ok(b, 200), ok(c, 405)];
    let errors = vec![(c, "0x86000011".to_owned())];
    let c2 = absorb(
        &plan2,
        &OpAnswers {
            session: "cfg",
            outcomes: &outcomes,
            errors: &errors,
            ..Default::default()
        },
        &policy,
        t1,
    );
    commit_config(store, e.id, &c2, t1).await;
    apply_config_commit(&mut model, &c2);
    assert_eq!(
        store.device_configuration(e.id).await.unwrap().settings,
        model.values().cloned().collect::<Vec<_>>()
    );

    // Round 3, a verification (due at once after an apply): ./A holds, ./B drifted (reported).
    let t2 = t1 + Duration::seconds(1);
    let ctx = config_context(store, e.id, t2).await;
    assert_eq!(ctx.state, c2.state);
    let plan3 = plan(e.id, &ctx, t2).expect("configuration: loaded when a verification is due");
    assert!(plan3.verifying);
    let read = |id, value: &str| {
        Outcome::new(
            id,
            200,
            vec![ResultItem {
                source: String::new(),
                format: Some("int".into()),
                data: Some(value.into()),
            }],
            vec![],
        )
    };
    let outcomes = vec![read(id_of(&plan3, "./A"), "1"), read(id_of(&plan3, "./B"), "7")];
    let c3 = absorb(
        &plan3,
        &OpAnswers {
            session: "cfg-2",
            outcomes: &outcomes,
            ..Default::default()
        },
        &policy,
        t2,
    );
    assert_eq!(c3.state.unsettled, 0, "the story's premise: settled");
    commit_config(store, e.id, &c3, t2).await;
    apply_config_commit(&mut model, &c3);
    let stored = store.device_configuration(e.id).await.unwrap();
    assert_eq!(stored.settings, model.values().cloned().collect::<Vec<_>>());
    let a_row = &stored.settings[0];
    assert_eq!(
        (
            a_row.status,
            a_row.observed.as_deref(),
            a_row.observed_at,
            a_row.verified_at
        ),
        (SettingStatus::Verified, Some("1"), Some(t2), Some(t2))
    );
    let c_row = &stored.settings[2];
    assert_eq!(
        (c_row.status, c_row.status_code, c_row.error.as_deref()),
        (SettingStatus::Failed, Some(405), Some("0x86000011"))
    );
    let kinds = event_kinds(store, e.id).await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| matches!(k, EventKind::SettingDrifted | EventKind::SettingFailed))
            .collect::<Vec<_>>(),
        vec![&EventKind::SettingFailed, &EventKind::SettingDrifted],
        "configuration: the events in the outbox, in order"
    );
    let events = store.device_events_for(e.id).await.unwrap();
    let drift = events.iter().find(|x| x.kind == EventKind::SettingDrifted).unwrap();
    assert_eq!(drift.data, c3.events[0].data);

    // Settled: the next check-in loads nothing.
    let settled = c3.state;
    let ctx = config_context(store, e.id, t2).await;
    assert_eq!(ctx.state, settled);
    assert_eq!(ctx.epoch, epoch);
    assert!(ctx.loaded.is_none(), "configuration: a settled device loads nothing");

    // Profile status and assignment counts, with more devices: one more in the lab, one in no
    // group, one in the other group, one in the lab whose enrollment ended.
    let e2 = enroll_device(store, "CFG-2").await;
    assert!(store.set_enrollment_group(e2.id, Some(lab.id)).await.unwrap());
    let _e3 = enroll_device(store, "CFG-3").await;
    let e4 = enroll_device(store, "CFG-4").await;
    assert!(store.set_enrollment_group(e4.id, Some(other.id)).await.unwrap());
    let e5 = enroll_device(store, "CFG-5").await;
    assert!(store.set_enrollment_group(e5.id, Some(lab.id)).await.unwrap());
    let end = EnrollmentEnd::new(EnrollmentState::Unenrolled, reasons::DEVICE_UNENROLLED);
    assert!(store.end_enrollment(e5.id, &end, t2).await.unwrap());
    let count = |a: Assignment| async move { store.count_assigned(Platform::Windows, &a).await.unwrap() };
    assert_eq!(
        count(Assignment {
            all: true,
            ..Default::default()
        })
        .await,
        4,
        "configuration: all active"
    );
    assert_eq!(count(groups_assignment(&[lab.id], &[])).await, 2, "the lab's active");
    assert_eq!(
        count(Assignment {
            all: true,
            groups: vec![],
            exclude_groups: vec![lab.id],
        })
        .await,
        2,
        "all but the lab (a device in no group included)"
    );
    assert_eq!(count(groups_assignment(&[lab.id, other.id], &[other.id])).await, 2);
    assert_eq!(count(Assignment::default()).await, 0, "an empty assignment");
    let mut status = store.profile_status(wifi.profile.id).await.unwrap();
    status.settings.sort();
    assert_eq!(
        status,
        ProfileStatusCounts {
            devices: 2,
            settings: vec![
                (1, SettingStatus::Verified, 1),
                (1, SettingStatus::Failed, 1),
                (1, SettingStatus::Drifted, 1),
            ],
        },
        "configuration: the profile's rows per version and status"
    );
    assert_eq!(
        store.profile_status(idle.profile.id).await.unwrap(),
        ProfileStatusCounts::default()
    );

    // A verification request makes the device load again; a stamp-only commit settles it.
    assert_eq!(
        store
            .request_verification(VerifyTarget::Enrollment(e.id), t2)
            .await
            .unwrap(),
        1
    );
    let ctx = config_context(store, e.id, t2).await;
    assert_eq!(ctx.state.verify_at, Some(t2));
    assert!(
        ctx.loaded.is_some(),
        "configuration: loaded after a verification request"
    );
    let stamp_only = |state| ConfigurationCommit {
        state,
        ..Default::default()
    };
    commit_config(store, e.id, &stamp_only(settled), t2).await;
    assert!(config_context(store, e.id, t2).await.loaded.is_none());
    assert_eq!(
        store
            .request_verification(VerifyTarget::Enrollment(EnrollmentId::new()), t2)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .request_verification(VerifyTarget::Enrollment(e5.id), t2)
            .await
            .unwrap(),
        0,
        "an ended enrollment is not covered"
    );

    // A profile write moves the epoch: loaded again.
    let t3 = t2 + Duration::seconds(1);
    let touched = update_profile(&idle.profile, Assignment::default(), None, t3);
    store.write_profiles(&[touched]).await.unwrap();
    let epoch2 = store.configuration_epoch().await.unwrap();
    let ctx = config_context(store, e.id, t3).await;
    assert_eq!(ctx.epoch, epoch2);
    assert!(ctx.loaded.is_some(), "configuration: loaded after the epoch moved");
    let resettled = DeviceConfigState {
        epoch_seen: epoch2,
        ..settled
    };
    commit_config(store, e.id, &stamp_only(resettled), t3).await;
    assert!(config_context(store, e.id, t3).await.loaded.is_none());

    // A verification requested while a check-in was being processed is not overwritten by that
    // check-in's commit: the commit names the stamp it read, the store sees it changed.
    let read = config_context(store, e.id, t3).await.state;
    store
        .request_verification(VerifyTarget::Enrollment(e.id), t3)
        .await
        .unwrap();
    let racing = ConfigurationCommit {
        state: resettled,
        expected_state: Some(read),
        ..Default::default()
    };
    commit_config(store, e.id, &racing, t3).await;
    let ctx = config_context(store, e.id, t3).await;
    assert_eq!(
        (ctx.state.epoch_seen, ctx.state.verify_at),
        (0, Some(t3)),
        "configuration: a stamp changed since the context read it is kept (and reconciled again)"
    );
    assert!(ctx.loaded.is_some());
    // The commit that follows, made from the stamp now stored, settles it again.
    let settle = ConfigurationCommit {
        state: resettled,
        expected_state: Some(ctx.state),
        ..Default::default()
    };
    commit_config(store, e.id, &settle, t3).await;
    assert!(config_context(store, e.id, t3).await.loaded.is_none());

    // Moving the device out of the lab resets its stamp: loaded again, without the lab.
    assert!(store.set_enrollment_group(e.id, None).await.unwrap());
    let ctx = config_context(store, e.id, t3).await;
    assert_eq!(
        ctx.state.epoch_seen, 0,
        "configuration: the group change reset the stamp"
    );
    let loaded = ctx.loaded.clone().expect("configuration: loaded after a group change");
    assert!(loaded.groups.is_empty());
    // Now wifi no longer applies: its rows go (./A and ./B removed by the device, ./C never
    // applied); `others` applies ./D.
    let plan4 = plan(e.id, &ctx, t3).unwrap();
    let outcomes = vec![ok(id_of(&plan4, "./A"), 200), ok(id_of(&plan4, "./B"), 404)];
    let d = id_of(&plan4, "./D");
    let c4 = absorb(
        &plan4,
        &OpAnswers {
            session: "cfg-3",
            sent: &[d],
            outcomes: &outcomes,
            ..Default::default()
        },
        &policy,
        t3,
    );
    assert_eq!(c4.deletes, vec!["./A".to_owned(), "./B".to_owned(), "./C".to_owned()]);
    commit_config(store, e.id, &c4, t3).await;
    apply_config_commit(&mut model, &c4);
    let stored = store.device_configuration(e.id).await.unwrap();
    assert_eq!(stored.settings, model.values().cloned().collect::<Vec<_>>());
    assert_eq!(
        stored.settings.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        vec!["./D"],
        "configuration: deletes remove rows"
    );
    assert_eq!(config_context(store, e.id, t3).await.state, c4.state);
    assert_eq!(
        store.profile_status(wifi.profile.id).await.unwrap(),
        ProfileStatusCounts {
            devices: 1,
            settings: vec![],
        }
    );

    // Verification by group and for everyone: the active enrollments covered.
    assert_eq!(
        store
            .request_verification(VerifyTarget::Group(lab.id), t3)
            .await
            .unwrap(),
        1,
        "configuration: the lab's one active device"
    );
    assert_eq!(
        store
            .request_verification(VerifyTarget::Group(GroupId::new()), t3)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.request_verification(VerifyTarget::All, t3).await.unwrap(),
        4,
        "configuration: every active device"
    );
    let ctx2 = config_context(store, e2.id, t3).await;
    assert_eq!(ctx2.state.verify_at, Some(t3), "a device without a stamp gets one");
    assert!(ctx2.loaded.is_some());

    // An ended enrollment's rows stay (history) but no longer count in the profile's status.
    let before = store.profile_status(others.profile.id).await.unwrap();
    assert!(before.settings.iter().any(|(_, _, n)| *n > 0), "{before:?}");
    let end = EnrollmentEnd::new(EnrollmentState::Unenrolled, reasons::ADMIN_UNENROLLED);
    assert!(store.end_enrollment(e.id, &end, t3).await.unwrap());
    let after = store.profile_status(others.profile.id).await.unwrap();
    let on = |c: &ProfileStatusCounts| c.settings.iter().map(|(_, _, n)| *n).sum::<u64>();
    assert_eq!(
        on(&after),
        on(&before) - 1,
        "configuration: the ended enrollment's ./D row is not counted"
    );
    assert_eq!(store.device_configuration(e.id).await.unwrap().settings.len(), 1);
}

/// The id of the plan's operation on `path`.
fn plan_op(p: &crate::configuration::Plan, path: &str) -> CommandId {
    p.ops
        .iter()
        .find(|o| o.path == path)
        .unwrap_or_else(|| panic!("no operation on {path}: {:?}", p.ops))
        .id
}

/// Staged rollouts ([`RolloutStore`]): created atomically with the version they roll out (one
/// active per profile; a Conflict writes nothing), read back field for field, loaded with a
/// check-in's candidates (with the from version's settings and the device's bucket) so `plan` gives
/// a pilot member the new version and the others the old one; the per-device stats count the rows
/// at the to version; state changes are compare-and-set (the loser writes nothing, the epoch
/// included); a rolled-back rollout still resolves (to the from version) and a completed one does
/// not; deleting the profile deletes its rollouts.
pub async fn rollouts<S>(store: &S)
where
    S: EnrollmentStore + CheckinStore + ProfileStore + RolloutStore + GroupStore + Inspect,
{
    use crate::configuration::{OpAnswers, absorb, plan};

    let t0 = now();
    let pilots = group("pilots", t0);
    store.create_group(&pilots).await.unwrap();
    let p = enroll_device(store, "RING-P").await;
    let d1 = enroll_device(store, "RING-1").await;
    assert!(store.set_enrollment_group(p.id, Some(pilots.id)).await.unwrap());
    let all = Assignment {
        all: true,
        ..Default::default()
    };
    let v1 = create_profile("fw", all, vec![config_setting("./X", "1", false)], t0);
    store.write_profiles(std::slice::from_ref(&v1)).await.unwrap();
    let id = v1.profile.id;
    let next = |version: u32, value: &str| {
        let settings = vec![config_setting("./X", value, false)];
        ProfileWrite {
            profile: Profile {
                current_version: version,
                ..v1.profile.clone()
            },
            new_version: Some(ProfileVersion {
                profile_id: id,
                version,
                digest: ProfileVersion::digest_of(&settings),
                config_lock: false,
                settings,
                created_at: t0,
            }),
            expected_version: Some(version - 1),
        }
    };
    let spec = RolloutSpec {
        rings: vec![
            RingSpec {
                pilot: Some("pilots".into()),
                ..Default::default()
            },
            RingSpec {
                percent: Some(50),
                ..Default::default()
            },
        ],
        soak_seconds: 60,
        success_ratio: 0.5,
        failure_threshold: 0.25,
        auto_advance: false,
    };
    let rollout = spec.build(id, 1, 2, |_| Some(pilots.id), t0).unwrap();
    let epoch = store.configuration_epoch().await.unwrap();
    store
        .write_profiles_with_rollouts(&[next(2, "2")], std::slice::from_ref(&rollout))
        .await
        .unwrap();
    assert!(
        store.configuration_epoch().await.unwrap() > epoch,
        "rollouts: the epoch moves"
    );
    assert_eq!(
        store.rollout(rollout.id).await.unwrap().as_ref(),
        Some(&rollout),
        "rollouts: round trip"
    );
    assert_eq!(store.latest_rollout(id).await.unwrap().as_ref(), Some(&rollout));
    assert_eq!(store.active_rollouts().await.unwrap(), vec![rollout.clone()]);
    assert_eq!(store.list_rollouts(id).await.unwrap(), vec![rollout.clone()]);
    assert_eq!(store.rollout(RolloutId::new()).await.unwrap(), None);

    // A second active rollout is a Conflict, and the version written with it is not written.
    let again = spec.build(id, 2, 3, |_| Some(pilots.id), t0).unwrap();
    assert!(matches!(
        store.write_profiles_with_rollouts(&[next(3, "3")], &[again]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.profile(id).await.unwrap().unwrap().current_version,
        2,
        "rollouts: all or nothing"
    );

    // The check-in loads the rollout with the candidates: the pilot gets 2, the other device 1
    // (unless its bucket is under 50 %, which is not released yet either).
    let value_for = |ctx: &ConfigurationContext, e: EnrollmentId| {
        plan(e, ctx, t0)
            .unwrap()
            .desired
            .get("./X")
            .map(|d| (d.version, d.setting.value.clone()))
    };
    let ctx_p = config_context(store, p.id, t0).await;
    let loaded = ctx_p.loaded.clone().expect("rollouts: loaded on first contact");
    assert_eq!(loaded.rollouts.len(), 1, "rollouts: the candidate's rollout is loaded");
    let c = &loaded.rollouts[0];
    assert_eq!(c.rollout, rollout);
    assert_eq!(c.from_settings, vec![config_setting("./X", "1", false)]);
    assert_eq!(c.bucket, rollout_bucket(id, p.id));
    assert_eq!(value_for(&ctx_p, p.id), Some((2, "2".into())));
    let ctx_1 = config_context(store, d1.id, t0).await;
    assert_eq!(
        value_for(&ctx_1, d1.id),
        Some((1, "1".into())),
        "rollouts: outside the pilot"
    );

    // The pilot acknowledges version 2; the other device version 1.
    for (e, ctx) in [(p.id, &ctx_p), (d1.id, &ctx_1)] {
        let pl = plan(e, ctx, t0).unwrap();
        let outcomes: Vec<Outcome> = pl.ops.iter().map(|o| ok(o.id, 200)).collect();
        let c = absorb(
            &pl,
            &OpAnswers {
                session: "ring",
                outcomes: &outcomes,
                ..Default::default()
            },
            &VerifyPolicy::default(),
            t0,
        );
        commit_config(store, e, &c, t0).await;
    }
    let mut stats = store.rollout_device_stats(&rollout).await.unwrap();
    stats.sort_by_key(|s| s.enrollment);
    let mut want = vec![
        RolloutDeviceStat {
            enrollment: p.id,
            group: Some(pilots.id),
            rows: 1,
            acknowledged: 1,
            failed: 0,
        },
        RolloutDeviceStat {
            enrollment: d1.id,
            group: None,
            rows: 0,
            acknowledged: 0,
            failed: 0,
        },
    ];
    want.sort_by_key(|s| s.enrollment);
    assert_eq!(stats, want, "rollouts: rows at the to version, per assigned device");
    let rings = rollout.ring_stats(&stats);
    assert_eq!((rings[0].devices, rings[0].acknowledged), (1, 1));

    // Compare and set: the first advance wins and moves the epoch; the second writes nothing.
    let t = rollout.action(RolloutAction::Advance, "story".into(), t0).unwrap();
    let before = store.configuration_epoch().await.unwrap();
    assert!(store.transition_rollout(&t).await.unwrap());
    let moved = store.configuration_epoch().await.unwrap();
    assert!(moved > before, "rollouts: advancing moves the epoch");
    assert!(
        !store.transition_rollout(&t).await.unwrap(),
        "rollouts: a stale transition loses"
    );
    assert_eq!(store.configuration_epoch().await.unwrap(), moved);
    let advanced = store.rollout(rollout.id).await.unwrap().unwrap();
    assert_eq!(advanced, t.rollout);

    // Rolled back: still loaded, and resolves to version 1 for the pilot too.
    let back = advanced.action(RolloutAction::Rollback, "story".into(), t0).unwrap();
    assert!(store.transition_rollout(&back).await.unwrap());
    assert!(store.active_rollouts().await.unwrap().is_empty());
    let ctx_p = config_context(store, p.id, t0).await;
    assert_eq!(value_for(&ctx_p, p.id), Some((1, "1".into())), "rollouts: rollback");

    // A new rollout may start now; completed, it is no longer loaded (everyone gets version 2).
    let second = spec
        .build(id, 1, 2, |_| Some(pilots.id), t0 + Duration::seconds(1))
        .unwrap();
    store
        .write_profiles_with_rollouts(&[], std::slice::from_ref(&second))
        .await
        .unwrap();
    assert_eq!(store.latest_rollout(id).await.unwrap().map(|r| r.id), Some(second.id));
    let done = RolloutTransition {
        expected_state: RolloutState::Running,
        expected_ring: 0,
        rollout: Rollout {
            state: RolloutState::Completed,
            ..second.clone()
        },
        moves_epoch: false,
    };
    assert!(store.transition_rollout(&done).await.unwrap());
    let ctx_1 = config_context(store, d1.id, t0).await;
    let loaded = ctx_1.loaded.clone().expect("rollouts: the epoch moved");
    assert!(
        loaded.rollouts.is_empty(),
        "rollouts: a completed rollout is not loaded"
    );
    assert_eq!(value_for(&ctx_1, d1.id), Some((2, "2".into())));

    // Deleting the profile deletes its rollouts.
    assert!(store.delete_profile(id).await.unwrap());
    assert_eq!(store.latest_rollout(id).await.unwrap(), None);
    assert_eq!(store.rollout(rollout.id).await.unwrap(), None);
}

// ---------------------------------------------------------------- dynamic groups

/// Dynamic groups: the rule round-trips with the group; creating, changing and deleting one moves
/// the epoch; a reconciliation loads the dynamic groups the candidates name with the facts their
/// rules read and the enrollment's fields (and nothing of it while the device is settled); a
/// check-in that changes a rule fact resets the device's stamp, one that changes another fact or
/// repeats the value does not; the rule subjects and assignment counts follow the facts.
pub async fn dynamic_groups<S>(store: &S)
where
    S: EnrollmentStore + CheckinStore + ProfileStore + GroupStore + Inspect,
{
    use crate::configuration::{ConfigurationCommit, DynamicMembership};
    use crate::group_rule::{DynamicGroup, EnrollmentFields, GroupRule};

    let t0 = now();
    let rule = |min: &str| {
        GroupRule::from_json(&format!(
            r#"{{"all": [{{"fact": "os.version", "op": ">=", "value": "{min}"}},
                         {{"fact": "enrollment.type", "op": "==", "value": "full"}}]}}"#
        ))
        .unwrap()
    };
    let os = FactName::from_static("os.version");
    let epoch0 = store.configuration_epoch().await.unwrap();
    let lab = group("lab", t0);
    store.create_group(&lab).await.unwrap();
    assert_eq!(
        store.configuration_epoch().await.unwrap(),
        epoch0,
        "dynamic groups: a static group leaves the epoch"
    );
    let modern = Group {
        rule: Some(rule("10.0.22000")),
        ..group("modern", t0)
    };
    store.create_group(&modern).await.unwrap();
    let epoch1 = store.configuration_epoch().await.unwrap();
    assert!(epoch1 > epoch0, "dynamic groups: creating one moves the epoch");
    assert_eq!(store.group_by_name("modern").await.unwrap(), Some(modern.clone()));
    assert_eq!(store.group_by_name("lab").await.unwrap().unwrap().rule, None);
    assert_eq!(store.list_groups().await.unwrap(), vec![lab.clone(), modern.clone()]);
    let unused = Group {
        rule: Some(rule("1")),
        ..group("unused", t0)
    };
    store.create_group(&unused).await.unwrap();

    let e = enroll_device(store, "DYN-1").await;
    let e2 = enroll_device(store, "DYN-2").await;
    let modern_only = groups_assignment(&[modern.id], &[]);
    let p = create_profile(
        "modern-only",
        modern_only.clone(),
        vec![config_setting("./M", "1", true)],
        t0,
    );
    store.write_profiles(std::slice::from_ref(&p)).await.unwrap();
    let report = |version: &'static str, at| CheckinCommit {
        facts: vec![
            FactUpdate::new(os.clone(), version),
            FactUpdate::new(facts::INVENTORY_COLLECTED_AT, at_text(at)),
        ],
        ..in_session(&session("dyn"))
    };
    store
        .commit_checkin(e.id, &report("10.0.19045.3803", t0), t0)
        .await
        .unwrap();
    store
        .commit_checkin(e2.id, &report("10.0.22631.2861", t0), t0)
        .await
        .unwrap();

    // Loaded on first contact: only the dynamic group an assignment names, with its fact.
    let ctx = config_context(store, e.id, t0).await;
    let loaded = ctx.loaded.clone().expect("dynamic groups: loaded on first contact");
    assert_eq!(
        loaded.dynamic,
        DynamicMembership {
            groups: vec![DynamicGroup {
                id: modern.id,
                rule: rule("10.0.22000"),
            }],
            facts: vec![DeviceFact {
                name: os.clone(),
                value: "10.0.19045.3803".into(),
                updated_at: t0,
            }],
            enrollment: EnrollmentFields::of(&e),
        },
        "dynamic groups: the named dynamic groups, their facts, the enrollment's fields"
    );
    assert!(
        loaded.member_groups().is_empty(),
        "dynamic groups: the old build is not a member"
    );
    assert_eq!(store.device_configuration(e.id).await.unwrap(), loaded);
    let e2_loaded = store.device_configuration(e2.id).await.unwrap();
    assert_eq!(e2_loaded.member_groups(), vec![modern.id]);

    // Settled: nothing loaded.
    let settled = |epoch| ConfigurationCommit {
        state: DeviceConfigState {
            epoch_seen: epoch,
            unsettled: 0,
            verify_at: None,
        },
        ..Default::default()
    };
    let epoch2 = store.configuration_epoch().await.unwrap();
    commit_config(store, e.id, &settled(epoch2), t0).await;
    assert!(config_context(store, e.id, t0).await.loaded.is_none());

    // Facts that no rule reads, and a rule fact reported unchanged, leave the stamp.
    let t1 = t0 + Duration::seconds(1);
    store
        .commit_checkin(e.id, &report("10.0.19045.3803", t1), t1)
        .await
        .unwrap();
    assert!(
        config_context(store, e.id, t1).await.loaded.is_none(),
        "dynamic groups: an unchanged rule fact leaves the stamp"
    );

    // The build changes: the stamp is reset in the same commit, even when that commit also
    // reconciled (its plan saw the old facts), and the device is now a member.
    let t2 = t1 + Duration::seconds(1);
    let changed = CheckinCommit {
        configuration: Some(settled(epoch2)),
        ..report("10.0.22631.2861", t2)
    };
    store.commit_checkin(e.id, &changed, t2).await.unwrap();
    let ctx = config_context(store, e.id, t2).await;
    assert_eq!(
        ctx.state.epoch_seen, 0,
        "dynamic groups: a changed rule fact resets the stamp"
    );
    let loaded = ctx.loaded.expect("dynamic groups: loaded after the fact changed");
    assert_eq!(loaded.member_groups(), vec![modern.id]);
    commit_config(store, e.id, &settled(epoch2), t2).await;

    // Rule subjects and counts.
    let subjects = store
        .active_enrollments_with_facts(Some(Platform::Windows), std::slice::from_ref(&os))
        .await
        .unwrap();
    let mine: Vec<_> = subjects
        .iter()
        .filter(|s| [e.id, e2.id].contains(&s.enrollment.id))
        .collect();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0].facts.len(), 1);
    assert_eq!(mine[0].facts[0].name, os);
    assert!(
        store
            .active_enrollments_with_facts(Some(Platform::Windows), &[])
            .await
            .unwrap()
            .iter()
            .all(|s| s.facts.is_empty())
    );
    assert_eq!(store.count_assigned(Platform::Windows, &modern_only).await.unwrap(), 2);
    assert_eq!(
        store
            .count_assigned(
                Platform::Windows,
                &Assignment {
                    all: true,
                    groups: vec![],
                    exclude_groups: vec![modern.id],
                }
            )
            .await
            .unwrap(),
        0,
        "dynamic groups: excluded by rule"
    );
    assert_eq!(store.profile_status(p.profile.id).await.unwrap().devices, 2);

    // Changing the rule moves the epoch; the membership follows.
    assert!(store.set_group_rule(modern.id, &rule("10.0.26100")).await.unwrap());
    let epoch3 = store.configuration_epoch().await.unwrap();
    assert!(epoch3 > epoch2, "dynamic groups: changing a rule moves the epoch");
    let ctx = config_context(store, e.id, t2).await;
    assert!(
        ctx.loaded
            .expect("loaded after the rule changed")
            .member_groups()
            .is_empty()
    );
    assert_eq!(store.count_assigned(Platform::Windows, &modern_only).await.unwrap(), 0);
    assert_eq!(
        store.group_by_name("modern").await.unwrap().unwrap().rule,
        Some(rule("10.0.26100"))
    );
    assert!(matches!(
        store.set_group_rule(lab.id, &rule("1")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.group_by_name("lab").await.unwrap().unwrap().rule.is_none());
    assert!(!store.set_group_rule(GroupId::new(), &rule("1")).await.unwrap());

    // Deleting: refused while assigned; once free, it moves the epoch.
    assert!(matches!(
        store.delete_group(modern.id).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.delete_profile(p.profile.id).await.unwrap());
    let epoch4 = store.configuration_epoch().await.unwrap();
    assert!(store.delete_group(modern.id).await.unwrap());
    assert!(
        store.configuration_epoch().await.unwrap() > epoch4,
        "dynamic groups: deleting one moves the epoch"
    );
    assert!(store.group_by_name("modern").await.unwrap().is_none());
}

/// Device tags (migration 0013): replaced as a set, read back sorted, only on active enrollments;
/// a change resets the device's configuration stamp (an unchanged set does not), and rules on
/// `tags` see them as facts named [`crate::group_rule::TAGS`], with the configuration and in the
/// whole-fleet subjects and counts.
pub async fn device_tags<S>(store: &S)
where
    S: EnrollmentStore + CheckinStore + ProfileStore + GroupStore + Inspect,
{
    use crate::configuration::ConfigurationCommit;
    use crate::group_rule::{GroupRule, TAGS};

    let t0 = now();
    let tags = |t: &[&str]| DeviceTags::parse(t).unwrap();
    let e = enroll_device(store, "TAG-1").await;
    let e2 = enroll_device(store, "TAG-2").await;
    assert!(store.device_tags(e.id).await.unwrap().is_empty(), "tags: none at first");
    assert!(store.device_tags(EnrollmentId::new()).await.unwrap().is_empty());

    assert!(store.set_device_tags(e.id, &tags(&["lab", "kiosk"]), t0).await.unwrap());
    assert_eq!(store.device_tags(e.id).await.unwrap().as_slice(), ["kiosk", "lab"]);
    assert!(
        store.device_tags(e2.id).await.unwrap().is_empty(),
        "tags: per enrollment"
    );
    assert!(
        !store
            .set_device_tags(EnrollmentId::new(), &tags(&["x"]), t0)
            .await
            .unwrap(),
        "tags: an unknown enrollment"
    );

    // A dynamic group on tags, assigned a profile.
    let kiosks = Group {
        rule: Some(GroupRule::from_json(r#"{"all": [{"fact": "tags", "op": "==", "value": "kiosk"}]}"#).unwrap()),
        ..group("kiosks", t0)
    };
    store.create_group(&kiosks).await.unwrap();
    let to_kiosks = groups_assignment(&[kiosks.id], &[]);
    let p = create_profile(
        "kiosk-mode",
        to_kiosks.clone(),
        vec![config_setting("./K", "1", true)],
        t0,
    );
    store.write_profiles(std::slice::from_ref(&p)).await.unwrap();
    let loaded = store.device_configuration(e.id).await.unwrap();
    let tag_facts: Vec<(String, String)> = loaded
        .dynamic
        .facts
        .iter()
        .map(|f| (f.name.to_string(), f.value.clone()))
        .collect();
    assert_eq!(
        tag_facts,
        vec![
            ("tags".to_owned(), "kiosk".to_owned()),
            ("tags".to_owned(), "lab".to_owned())
        ],
        "tags: loaded as facts named tags for a rule that reads them"
    );
    assert!(loaded.dynamic.facts.iter().all(|f| f.updated_at == t0));
    assert_eq!(loaded.member_groups(), vec![kiosks.id]);
    assert!(
        store
            .device_configuration(e2.id)
            .await
            .unwrap()
            .member_groups()
            .is_empty()
    );
    assert_eq!(store.count_assigned(Platform::Windows, &to_kiosks).await.unwrap(), 1);
    let subjects = store
        .active_enrollments_with_facts(Some(Platform::Windows), &[TAGS])
        .await
        .unwrap();
    let of = |id: EnrollmentId| {
        subjects
            .iter()
            .find(|s| s.enrollment.id == id)
            .map(|s| s.facts.iter().map(|f| f.value.clone()).collect::<Vec<_>>())
            .unwrap()
    };
    assert_eq!(of(e.id), ["kiosk", "lab"]);
    assert!(of(e2.id).is_empty());

    // Settled; an unchanged set leaves the stamp, a changed one resets it.
    let epoch = store.configuration_epoch().await.unwrap();
    let settled = ConfigurationCommit {
        state: DeviceConfigState {
            epoch_seen: epoch,
            unsettled: 0,
            verify_at: None,
        },
        ..Default::default()
    };
    commit_config(store, e.id, &settled, t0).await;
    assert!(config_context(store, e.id, t0).await.loaded.is_none());
    let t1 = t0 + Duration::seconds(1);
    assert!(store.set_device_tags(e.id, &tags(&["lab", "kiosk"]), t1).await.unwrap());
    assert!(
        config_context(store, e.id, t1).await.loaded.is_none(),
        "tags: the same set again leaves the stamp"
    );
    assert!(store.set_device_tags(e.id, &tags(&["lab"]), t1).await.unwrap());
    let ctx = config_context(store, e.id, t1).await;
    assert_eq!(ctx.state.epoch_seen, 0, "tags: a change resets the stamp");
    assert!(
        ctx.loaded
            .expect("tags: loaded after the change")
            .member_groups()
            .is_empty()
    );
    assert_eq!(store.count_assigned(Platform::Windows, &to_kiosks).await.unwrap(), 0);

    // A tag kept across a replacement keeps its time; a new one has the write's.
    assert!(store.set_device_tags(e.id, &tags(&["lab", "kiosk"]), t1).await.unwrap());
    let facts = store.device_configuration(e.id).await.unwrap().dynamic.facts;
    let at = |v: &str| facts.iter().find(|f| f.value == v).map(|f| f.updated_at);
    assert_eq!((at("kiosk"), at("lab")), (Some(t1), Some(t0)));

    // Cleared, and an ended enrollment takes none.
    assert!(store.set_device_tags(e.id, &DeviceTags::default(), t1).await.unwrap());
    assert!(store.device_tags(e.id).await.unwrap().is_empty());
    assert!(store.set_device_tags(e2.id, &tags(&["kiosk"]), t1).await.unwrap());
    let end = EnrollmentEnd::new(EnrollmentState::Unenrolled, "conformance");
    assert!(store.end_enrollment(e2.id, &end, t1).await.unwrap());
    assert!(
        !store.set_device_tags(e2.id, &tags(&["lab"]), t1).await.unwrap(),
        "tags: an ended enrollment takes none"
    );
    assert_eq!(
        store.device_tags(e2.id).await.unwrap().as_slice(),
        ["kiosk"],
        "tags: an ended enrollment keeps its history"
    );
    assert_eq!(store.count_assigned(Platform::Windows, &to_kiosks).await.unwrap(), 0);
}

/// A profile version's `config_lock` (migration 0013): stored with the version and read back, on
/// the candidates a check-in loads (and a rollout's `from` version), and when a candidate asks for
/// it the configuration carries the facts the platform decides support from
/// ([`crate::configuration::DEVICE_LOCK_FACTS`]); a change of one resets the device's stamp.
pub async fn config_lock_versions<S>(store: &S)
where
    S: EnrollmentStore + CheckinStore + ProfileStore + GroupStore + Inspect,
{
    use crate::configuration::ConfigurationCommit;

    let t0 = now();
    let e = enroll_device(store, "LOCK-1").await;
    let all = Assignment {
        all: true,
        ..Default::default()
    };
    let os = FactName::from_static("os.version");
    store
        .commit_checkin(
            e.id,
            &CheckinCommit {
                facts: vec![
                    FactUpdate::new(os.clone(), "10.0.22631.2861"),
                    FactUpdate::new(FactName::from_static("hardware.model"), "Surface"),
                ],
                ..in_session(&session("lock"))
            },
            t0,
        )
        .await
        .unwrap();

    // Without the lock: stored false, and no lock facts loaded.
    let plain = create_profile("plain", all.clone(), vec![config_setting("./P", "1", true)], t0);
    store.write_profiles(std::slice::from_ref(&plain)).await.unwrap();
    let loaded = store.device_configuration(e.id).await.unwrap();
    assert!(!loaded.candidates[0].config_lock);
    assert!(
        loaded.dynamic.facts.is_empty(),
        "config lock: no facts without a profile asking"
    );
    assert!(
        !store
            .profile_version(plain.profile.id, 1)
            .await
            .unwrap()
            .unwrap()
            .config_lock
    );

    // With it: the version keeps it, the candidate carries it, the facts come with the load.
    let mut locked = create_profile("locked", all.clone(), vec![config_setting("./L", "1", true)], t0);
    if let Some(v) = locked.new_version.as_mut() {
        v.config_lock = true;
        v.digest = ProfileVersion::digest_with(&v.settings, true);
    }
    store.write_profiles(std::slice::from_ref(&locked)).await.unwrap();
    let v = store.profile_version(locked.profile.id, 1).await.unwrap().unwrap();
    assert!(v.config_lock, "config lock: stored with the version");
    assert_eq!(v.digest, ProfileVersion::digest_with(&v.settings, true));
    assert_ne!(
        v.digest,
        ProfileVersion::digest_of(&v.settings),
        "config lock: in the digest"
    );
    assert!(store.profile_versions(locked.profile.id).await.unwrap()[0].config_lock);
    let loaded = store.device_configuration(e.id).await.unwrap();
    let by_name = |n: &str| loaded.candidates.iter().find(|p| p.name == n).unwrap().config_lock;
    assert!(by_name("locked") && !by_name("plain"));
    assert!(loaded.asks_lock());
    assert_eq!(
        loaded.lock, None,
        "config lock: the platform decides support, not the store"
    );
    let names: Vec<&str> = loaded.dynamic.facts.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["os.version"], "config lock: the lock facts the device reported");
    let ctx = config_context(store, e.id, t0).await;
    assert_eq!(
        ctx.loaded.as_ref(),
        Some(&loaded),
        "config lock: the check-in loads the same"
    );

    // Settled; a secured-core report resets the stamp, an unrelated fact does not.
    let epoch = store.configuration_epoch().await.unwrap();
    let settled = ConfigurationCommit {
        state: DeviceConfigState {
            epoch_seen: epoch,
            unsettled: 0,
            verify_at: None,
        },
        ..Default::default()
    };
    commit_config(store, e.id, &settled, t0).await;
    let t1 = t0 + Duration::seconds(1);
    let report = |name: FactName, value: &str| CheckinCommit {
        facts: vec![FactUpdate::new(name, value)],
        ..in_session(&session("lock"))
    };
    store
        .commit_checkin(e.id, &report(FactName::from_static("hardware.ram_mb"), "16384"), t1)
        .await
        .unwrap();
    assert!(
        config_context(store, e.id, t1).await.loaded.is_none(),
        "config lock: an unrelated fact leaves the stamp"
    );
    store
        .commit_checkin(e.id, &report(facts::SECURED_CORE, "true"), t1)
        .await
        .unwrap();
    let ctx = config_context(store, e.id, t1).await;
    assert_eq!(
        ctx.state.epoch_seen, 0,
        "config lock: a secured-core report resets the stamp"
    );
    let facts = ctx.loaded.expect("loaded").dynamic.facts;
    let names: Vec<&str> = facts.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["os.version", "security.secured_core"]);
}

fn at_text(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
