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
}
