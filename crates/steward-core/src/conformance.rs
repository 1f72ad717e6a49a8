//! The storage conformance story: one scripted sequence every [`Store`] backend must pass, so SQLite
//! and PostgreSQL behave identically. Backends call [`run`] from their tests with a fresh, empty store.
//! Panics (with a message naming the step) on the first divergence.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use time::{Duration, OffsetDateTime};

use crate::*;

fn now() -> OffsetDateTime {
    // Whole microseconds: the resolution every backend stores.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000).unwrap()
}

fn enrollment(device: &str, serial: &str, token: Option<EnrollmentTokenId>, at: OffsetDateTime) -> Enrollment {
    Enrollment {
        id: EnrollmentId::new(),
        device_id: DeviceId::parse(device).unwrap(),
        hw_dev_id: Some("HW".into()),
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
        cert_serial: serial.into(),
        cert_thumbprint: format!("THUMB{serial}"),
        cert_not_after: at + Duration::days(365),
        state: EnrollmentState::Active,
        enrolled_at: at,
        updated_at: at,
        last_seen_at: None,
    }
}

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
        md5_credential: Some("bWQ1LWtleQ==".into()),
    }
}

pub async fn run(store: &dyn Store) {
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

    // Users: e-mail is case-insensitive and unique.
    let user = User {
        id: UserId::new(),
        email: "Alice@Example.com".into(),
        display_name: Some("Alice".into()),
        password_hash: "$argon2id$fake".into(),
        disabled: false,
        created_at: t0,
    };
    store.create_user(&user).await.unwrap();
    let u = store
        .user_by_email("alice@EXAMPLE.com")
        .await
        .unwrap()
        .expect("user by e-mail");
    assert_eq!(u.email, "alice@example.com");
    assert_eq!(u.created_at, t0);
    assert_eq!(
        store.user_by_id(user.id).await.unwrap().map(|u| u.email),
        Some(u.email.clone())
    );
    assert!(store.user_by_id(UserId::new()).await.unwrap().is_none());
    assert!(matches!(
        store
            .create_user(&User {
                id: UserId::new(),
                ..user.clone()
            })
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Admin tokens: idempotent registration.
    let admin = TokenHash::of("stw_adm_x");
    assert_eq!(store.count_admin_tokens().await.unwrap(), 0);
    store.put_admin_token("bootstrap", &admin, t0).await.unwrap();
    store.put_admin_token("bootstrap", &admin, t0).await.unwrap();
    assert_eq!(store.count_admin_tokens().await.unwrap(), 1);
    assert!(store.admin_token_exists(&admin).await.unwrap());

    // Enrollment commit consumes the token's single use.
    let dev = "0123456789ABCDEF0123456789ABCDEF";
    let first = enrollment(dev, "01", Some(token.id), t0);
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
    assert_eq!(store.enrollment_token_by_hash(&hash).await.unwrap().unwrap().uses, 1);
    assert_eq!(
        store.md5_credential(first.id).await.unwrap().as_deref(),
        Some("bWQ1LWtleQ==")
    );
    // The enrollment was recorded as an event in the same transaction.
    let events = store.device_events_for(first.id).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Enrolled]
    );
    assert_eq!(events[0].device_id, dev);
    assert!(
        store
            .device_events_after(events[0].seq, 10)
            .await
            .unwrap()
            .iter()
            .all(|e| e.seq > events[0].seq)
    );

    // The exhausted token fails the whole commit: no row, no log line.
    let refused = enrollment("FEDCBA9876543210FEDCBA9876543210", "02", Some(token.id), t0);
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

    // Single-use nonces.
    let nonce = (TokenHash::of("jti-1"), t0 + Duration::minutes(10));
    let fed = enrollment("11111111111111111111111111111111", "03", None, t0);
    store
        .commit_enrollment(&commit(fed, None, Some(nonce)))
        .await
        .expect("federated commit");
    let again = enrollment("22222222222222222222222222222222", "04", None, t0);
    let err = store.commit_enrollment(&commit(again.clone(), None, Some(nonce))).await;
    assert!(matches!(err, Err(StoreError::NonceReused)), "{err:?}");
    assert!(store.enrollment_by_id(again.id).await.unwrap().is_none());

    // Re-enrollment of the same DeviceID replaces the old enrollment and revokes its certificate.
    let t1 = t0 + Duration::seconds(5);
    let second = enrollment(dev, "05", None, t1);
    store
        .commit_enrollment(&commit(second.clone(), None, None))
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
    assert_eq!(store.list_enrollments().await.unwrap().len(), 3);

    // The issuance log, in order.
    store
        .append_issuance_log(&IssuanceLogEntry {
            serial: "99".into(),
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

    admin_story(store, t0, &first, &second, token.id).await;
    webhook_story(store, t0).await;
}

/// The admin surface: device search and keyset pages, API tokens, enrollment token revocation,
/// listings, counts, and the hash-chained audit log.
async fn admin_story(
    store: &dyn Store,
    t0: OffsetDateTime,
    replaced: &Enrollment,
    active: &Enrollment,
    token: EnrollmentTokenId,
) {
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
    let latest = store
        .latest_enrollment_by_device_id(&replaced.device_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.id, active.id);

    // Listings.
    assert_eq!(store.list_users().await.unwrap().len(), 1);
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

    // Enrollment token revocation, once.
    assert!(store.revoke_enrollment_token(token).await.unwrap());
    assert!(!store.revoke_enrollment_token(token).await.unwrap());
    assert!(!store.revoke_enrollment_token(EnrollmentTokenId::new()).await.unwrap());
    let t = store
        .list_enrollment_tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.id == token)
        .unwrap();
    assert!(t.revoked);

    // API tokens: stored by hash, revocable once, last use recorded.
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
    let used = t0 + Duration::seconds(3);
    store.touch_api_token(created.id, used).await.unwrap();
    assert!(store.revoke_api_token(created.id, used).await.unwrap());
    assert!(!store.revoke_api_token(created.id, used).await.unwrap());
    let listed = store.list_api_tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, Some(used));
    assert_eq!(listed[0].revoked_at, Some(used));
    assert!(!listed[0].usable_at(t0));

    // The audit log: seq assigned in order, each row chained to the previous one.
    for (i, action) in ["device.wipe", "api_token.create", "device.wipe"].iter().enumerate() {
        let e = store
            .append_audit_event(&NewAuditEvent {
                at: t0 + Duration::seconds(i as i64),
                actor: "bootstrap".into(),
                actor_id: None,
                actor_role: Some(Role::Admin),
                action: (*action).into(),
                target: Some(format!("target-{i}")),
                source_ip: Some("192.0.2.1".into()),
                outcome: if i == 1 {
                    AuditOutcome::Failure
                } else {
                    AuditOutcome::Success
                },
                status: Some(200),
                details: None,
            })
            .await
            .unwrap();
        assert_eq!(e.seq, i as i64 + 1);
    }
    let all = store.audit_events(&AuditFilter::default(), None, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(all[0].prev_hash, AUDIT_GENESIS_HASH);
    assert_eq!(all[1].prev_hash, all[0].hash);
    assert_eq!(all[0].at, t0);
    assert_eq!(all[1].outcome, AuditOutcome::Failure);
    let newest = AuditFilter {
        newest_first: true,
        ..AuditFilter::default()
    };
    let page = store.audit_events(&newest, None, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 2]);
    let page = store.audit_events(&newest, Some(2), 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
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
    let v = crate::verify_audit_log(store).await.unwrap().expect("chain verifies");
    assert_eq!(v.count(), 3);

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
}

/// The command queue: delivery order, expiry, cancellation, exactly-once outcomes, events.
pub async fn command_queue(store: &dyn Store) {
    let t0 = now();
    let e = enrollment("ABCDEFABCDEFABCDEFABCDEFABCDEF01", "Q1", None, t0);
    store
        .commit_enrollment(&commit(e.clone(), None, None))
        .await
        .expect("enrollment");
    let item = |target: &str| CommandItem {
        target: target.into(),
        format: None,
        type_: None,
        data: None,
    };
    let cmd = |target: &str, priority: i32, expires_at: Option<OffsetDateTime>| NewCommand {
        id: CommandId::new(),
        enrollment_id: e.id,
        payload: CommandPayload::single(Verb::Get, item(target)),
        priority,
        origin: "story".into(),
        created_at: t0,
        expires_at,
    };
    let low = cmd("./A", -10, None);
    let high = cmd("./B", 100, None);
    let normal = cmd("./C", 0, None);
    let stale = cmd("./D", 0, Some(t0 - Duration::seconds(1)));
    let cancelled = cmd("./E", 0, None);
    store
        .enqueue_commands(&[
            low.clone(),
            high.clone(),
            normal.clone(),
            stale.clone(),
            cancelled.clone(),
        ])
        .await
        .unwrap();
    assert!(store.cancel_command(cancelled.id, t0).await.unwrap());
    assert!(
        !store.cancel_command(cancelled.id, t0).await.unwrap(),
        "cancel is not repeatable"
    );

    let order: Vec<CommandId> = store
        .deliverable_commands(e.id, t0)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        order,
        vec![high.id, normal.id, low.id],
        "priority first, then queue order; expired and cancelled out"
    );

    // The management context: one read with the same queue, the overdue flag, no session yet.
    let ctx = store
        .management_context(EnrollmentKey::Certificate(&e.cert_thumbprint), &[], t0)
        .await
        .unwrap()
        .expect("context by certificate");
    assert_eq!(ctx.enrollment, e);
    assert_eq!(ctx.open.iter().map(|c| c.id).collect::<Vec<_>>(), order);
    assert_eq!(ctx.open, store.deliverable_commands(e.id, t0).await.unwrap());
    assert!(ctx.overdue, "the stale command is past its deadline");
    assert!(!ctx.previous_certificate && ctx.session.is_none() && ctx.facts.is_empty());
    assert_eq!(
        store
            .management_context(EnrollmentKey::Id(e.id), &[], t0)
            .await
            .unwrap()
            .unwrap(),
        ctx
    );
    assert!(
        store
            .management_context(EnrollmentKey::Certificate("THUMBnone"), &[], t0)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .management_context(EnrollmentKey::Id(EnrollmentId::new()), &[], t0)
            .await
            .unwrap()
            .is_none()
    );

    // Sent in a session, answered twice: recorded once.
    let session = SessionState {
        key: "k1".into(),
        session_id: "1".into(),
        client_msg_id: 1,
        ..SessionState::default()
    };
    let sent = SessionCommit {
        sent: vec![high.id],
        session: session.clone(),
        ..SessionCommit::default()
    };
    store.commit_session_message(e.id, &sent, t0).await.unwrap();
    assert_eq!(
        store.command(stale.id).await.unwrap().unwrap().state,
        CommandState::Pending,
        "no sweep unless the commit asks for it"
    );
    let ctx = store
        .management_context(EnrollmentKey::Id(e.id), &[], t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ctx.session, store.session_state(e.id).await.unwrap());
    assert_eq!(ctx.session.as_ref().map(|s| s.key.as_str()), Some("k1"));
    assert_eq!(
        ctx.open.iter().find(|c| c.id == high.id).unwrap().state,
        CommandState::Sent
    );
    let c = store.command(high.id).await.unwrap().unwrap();
    assert_eq!(
        (c.state, c.send_count, c.last_session.as_deref()),
        (CommandState::Sent, 1, Some("k1"))
    );
    let outcome = |code: u16| CommandOutcome {
        command_id: high.id,
        status_code: code,
        results: vec![],
        child_codes: vec![],
    };
    let answer = SessionCommit {
        outcomes: vec![outcome(200)],
        session: session.clone(),
        expire_overdue: true,
        ..SessionCommit::default()
    };
    store.commit_session_message(e.id, &answer, t0).await.unwrap();
    let again = SessionCommit {
        outcomes: vec![outcome(500)],
        session,
        ..SessionCommit::default()
    };
    store.commit_session_message(e.id, &again, t0).await.unwrap();
    let c = store.command(high.id).await.unwrap().unwrap();
    assert_eq!(
        (c.state, c.status_code),
        (CommandState::Succeeded, Some(200)),
        "the first outcome wins"
    );
    assert_eq!(store.command_result(high.id).await.unwrap().unwrap().status_code, 200);
    let stale = store.command(stale.id).await.unwrap().unwrap();
    assert_eq!(
        stale.state,
        CommandState::Expired,
        "expired when a session committed past its deadline"
    );
    assert!(
        !store
            .management_context(EnrollmentKey::Id(e.id), &[], t0)
            .await
            .unwrap()
            .unwrap()
            .overdue
    );
    let acks = store
        .device_events_for(e.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|ev| ev.kind == EventKind::CommandAcknowledged)
        .count();
    assert_eq!(acks, 1, "one event per recorded outcome");

    // Another enrollment cannot record an outcome for this one's command.
    let other = enrollment("ABCDEFABCDEFABCDEFABCDEFABCDEF02", "q2", None, t0);
    store
        .commit_enrollment(&commit(other.clone(), None, None))
        .await
        .unwrap();
    let foreign = SessionCommit {
        outcomes: vec![CommandOutcome {
            command_id: normal.id,
            status_code: 200,
            results: vec![],
            child_codes: vec![],
        }],
        ..SessionCommit::default()
    };
    store.commit_session_message(other.id, &foreign, t0).await.unwrap();
    assert_eq!(
        store.command(normal.id).await.unwrap().unwrap().state,
        CommandState::Pending
    );
    assert!(store.command_result(normal.id).await.unwrap().is_none());
}

/// Facts: unchanged values only move `updated_at`, changed and new ones are written with history (a
/// name reported twice in one message counts in order), the context reads only the named facts, and
/// a certificate replaced by renewal shows in the context until the commit retires it.
pub async fn facts_and_renewal(store: &dyn Store) {
    let t0 = now();
    // Thumbprints are stored in upper case (a lookup may use any case).
    let e = enrollment("ABCDEFABCDEFABCDEFABCDEFABCDEF03", "F1", None, t0);
    store
        .commit_enrollment(&commit(e.clone(), None, None))
        .await
        .expect("enrollment");
    let report = |facts: &[(&str, &str)], at: OffsetDateTime| {
        let commit = SessionCommit {
            facts: facts.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
            ..SessionCommit::default()
        };
        async move { store.commit_session_message(e.id, &commit, at).await.unwrap() }
    };
    let value = |name: &'static str| async move {
        store
            .device_facts(e.id)
            .await
            .unwrap()
            .into_iter()
            .find(|f| f.name == name)
            .map(|f| (f.value, f.updated_at))
    };
    let history = || async {
        store
            .fact_history(e.id)
            .await
            .unwrap()
            .into_iter()
            .map(|h| (h.name, h.old_value, h.new_value))
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
    // The same name twice in one message: taken in order.
    report(&[("a", "5"), ("a", "1"), ("b", "3")], t2).await;
    assert_eq!(value("a").await, Some(("1".into(), t2)));
    assert_eq!(value("b").await, Some(("3".into(), t2)));
    assert_eq!(history().await[4..], [h("a", Some("1"), "5"), h("a", Some("5"), "1")]);
    report(&[("c", "4")], t3).await;
    assert_eq!(history().await.len(), 6, "nothing changed, nothing recorded");
    assert_eq!(value("c").await, Some(("4".into(), t3)));

    let ctx = store
        .management_context(EnrollmentKey::Id(e.id), &["c", "a", "missing"], t3)
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
    assert!(!ctx.previous_certificate);

    // Renewal: the old certificate still finds the enrollment, which now has a previous certificate
    // until a commit retires it.
    store
        .renew_certificate(&CertificateRenewal {
            enrollment_id: e.id,
            old_thumbprint: e.cert_thumbprint.clone(),
            new_serial: "F2".into(),
            new_thumbprint: "THUMBF2".into(),
            subject: format!("CN={}", e.device_id),
            not_before: t3,
            not_after: t3 + Duration::days(365),
            at: t3,
        })
        .await
        .unwrap();
    for thumb in ["thumbf1", "thumbf2"] {
        let ctx = store
            .management_context(EnrollmentKey::Certificate(thumb), &[], t3)
            .await
            .unwrap()
            .expect("old and new certificate");
        assert_eq!((ctx.enrollment.id, ctx.previous_certificate), (e.id, true));
        assert_eq!(ctx.enrollment.cert_thumbprint, "THUMBF2");
    }
    let retire = SessionCommit {
        retire_previous_certificate: true,
        ..SessionCommit::default()
    };
    store.commit_session_message(e.id, &retire, t3).await.unwrap();
    let ctx = store
        .management_context(EnrollmentKey::Certificate("THUMBF2"), &[], t3)
        .await
        .unwrap()
        .unwrap();
    assert!(!ctx.previous_certificate);
    assert!(
        store
            .management_context(EnrollmentKey::Certificate(&e.cert_thumbprint), &[], t3)
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
}

/// Webhooks: a subscription starts at the newest event, pings queue and make it due, attempts are
/// logged and move the cursor (or drop the ping) only when delivered or given up, the log pages newest
/// first and is pruned, and deleting a subscription takes its log with it.
async fn webhook_story(store: &dyn Store, t0: OffsetDateTime) {
    let newest = store
        .device_events_after(0, 1000)
        .await
        .unwrap()
        .last()
        .map_or(0, |e| e.seq);
    assert!(newest > 0, "the story above recorded device events");
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
    let page = store.webhook_deliveries(a.id, Some(log[1].id), 100).await.unwrap();
    assert_eq!(
        page.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![log[2].id, log[3].id]
    );
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
    assert_eq!(store.list_webhooks().await.unwrap().len(), 1);
}

/// The console's part of the store (users with a role, staged sessions, second factor, dashboard
/// aggregates) and group management. Run on a fresh, empty store.
pub async fn console_and_groups(store: &dyn Store) {
    let t0 = now();
    let user = |email: &str| User {
        id: UserId::new(),
        email: email.into(),
        display_name: None,
        password_hash: "$argon2id$fake".into(),
        disabled: false,
        created_at: t0,
    };

    // Console users: a role on the user; enrollment-only users are not console users.
    let admin = user("Root@Example.com");
    store.create_console_user(&admin, Role::Admin, None).await.unwrap();
    assert!(matches!(
        store
            .create_console_user(&user("root@example.com"), Role::Auditor, None)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let plain = user("plain@example.com");
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

    // Sessions: pending and full, looked up with the user, touched, deleted with the expired ones.
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
    // Resetting the second factor ends the user's sessions (done by the caller, in this order).
    assert!(store.set_user_totp(admin.id, None).await.unwrap());
    assert!(store.console_user(admin.id).await.unwrap().unwrap().totp.is_none());
    assert_eq!(store.delete_console_sessions_of(admin.id).await.unwrap(), 1);
    assert!(store.console_session(&s2.id_hash).await.unwrap().is_none());

    // Groups: create, names unique, devices moved in and out, counts, delete only when unused.
    let g = |name: &str| Group {
        id: GroupId::new(),
        name: name.into(),
        created_at: t0,
    };
    let sales = g("sales");
    store.create_group(&sales).await.unwrap();
    assert!(matches!(
        store.create_group(&g("sales")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.group_by_name("sales").await.unwrap(), Some(sales.clone()));
    let e1 = enrollment("dev-console-1", "C1", None, t0);
    store.commit_enrollment(&commit(e1.clone(), None, None)).await.unwrap();
    let e2 = enrollment("dev-console-2", "C2", None, t0);
    store.commit_enrollment(&commit(e2.clone(), None, None)).await.unwrap();
    assert!(store.set_enrollment_group(e1.id, Some(sales.id)).await.unwrap());
    assert!(store.set_enrollment_group(e2.id, Some(sales.id)).await.unwrap());
    assert!(
        !store
            .set_enrollment_group(EnrollmentId::new(), Some(sales.id))
            .await
            .unwrap()
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
    store
        .end_enrollment(
            e1.id,
            EnrollmentState::Unenrolled,
            "user unenrolled",
            t0 + Duration::seconds(1),
        )
        .await
        .unwrap();
    assert_eq!(store.group_device_counts().await.unwrap(), vec![]);
    assert!(store.delete_group(sales.id).await.unwrap());
    assert!(!store.delete_group(sales.id).await.unwrap());
    // A team's console user is scoped to its group, which stays in use while the user exists.
    let team_group = g("team");
    store.create_group(&team_group).await.unwrap();
    let team = user("team@example.com");
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
    assert!(matches!(
        store.delete_group(team_group.id).await,
        Err(StoreError::Conflict(_))
    ));

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
    assert!(store.delete_group(team_group.id).await.unwrap(), "no longer in use");
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
    assert!(store.set_console_access(plain.id, None, None).await.unwrap());
    assert!(
        store.console_user(plain.id).await.unwrap().is_none(),
        "console access removed"
    );
    assert!(
        store.user_by_email("plain@example.com").await.unwrap().is_some(),
        "the user stays"
    );
    assert!(!store.set_console_access(UserId::new(), None, None).await.unwrap());
    assert!(store.set_user_disabled(team.id, true).await.unwrap());
    assert!(store.console_user(team.id).await.unwrap().unwrap().user.disabled);
    assert!(store.set_user_disabled(team.id, false).await.unwrap());
    assert!(!store.console_user(team.id).await.unwrap().unwrap().user.disabled);
    assert!(!store.set_user_disabled(UserId::new(), true).await.unwrap());
    assert!(store.group_by_name("sales").await.unwrap().is_none());
    assert_eq!(store.enrollment_by_id(e1.id).await.unwrap().unwrap().group_id, None);

    // Dashboard aggregates and the activity by day, from the device event log.
    let stats = store.device_stats(t0).await.unwrap();
    assert_eq!(
        stats.by_state,
        vec![("active".to_owned(), 1), ("unenrolled".to_owned(), 1)]
    );
    assert_eq!((stats.never_seen, stats.seen_last_hour), (1, 0));
    assert_eq!(stats.os_versions, vec![("10.0.26100.1".to_owned(), 1)]);
    let again = enrollment("dev-console-2", "C3", None, t0 + Duration::seconds(2));
    store.commit_enrollment(&commit(again, None, None)).await.unwrap();
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
