//! The conformance stories on temp-file stores, and what only this backend has: batching, the
//! writer thread, append-only triggers, migrations, busy handling.

use std::path::Path;
use std::time::Duration;

use steward_core::conformance;
use steward_core::*;
use time::OffsetDateTime;

use super::*;
use crate::error::from_rusqlite;

/// A store in a fresh file: the writer thread and the hot read open the file by path.
async fn temp_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    (dir, store)
}

/// One statement on the store's own write connection (raw access to the file, as an operator or an
/// attacker with a shell would have); its error as text.
async fn raw(store: &SqliteStore, sql: &'static str) -> Result<usize, String> {
    store
        .writer
        .run(move |conn| Ok(conn.execute(sql, []).map_err(|e| e.to_string())))
        .await
        .unwrap()
}

/// [`raw`] with parameters.
async fn raw_with(
    store: &SqliteStore,
    sql: &'static str,
    params: Vec<rusqlite::types::Value>,
) -> Result<usize, String> {
    store
        .writer
        .run(move |conn| {
            Ok(conn
                .execute(sql, rusqlite::params_from_iter(params))
                .map_err(|e| e.to_string()))
        })
        .await
        .unwrap()
}

/// A `COUNT(*)` read on a read connection.
async fn count(store: &SqliteStore, sql: &'static str) -> i64 {
    store
        .read(move |conn| conn.query_row(sql, [], |r| r.get(0)).map_err(from_rusqlite))
        .await
        .unwrap()
}

/// One test per story, so one failure does not hide the others.
macro_rules! stories {
    ($($story:ident),* $(,)?) => {
        mod stories {
            $(
                #[tokio::test]
                async fn $story() {
                    let (_dir, store) = super::temp_store().await;
                    steward_core::conformance::$story(&store).await;
                }
            )*
        }
    };
}

stories!(
    enrollments,
    replaces_conflict,
    command_queue,
    checkin_hot_path,
    completions,
    requeue,
    enqueue_and_sent,
    stale_checkins,
    renewal_plans,
    inventory,
    users,
    groups,
    access,
    audit_chain,
    events,
    webhooks,
    device_reports,
    dashboard,
    readiness,
    profiles,
    configuration_in_checkin,
    rollouts,
    dynamic_groups,
    device_tags,
    config_lock_versions,
);

#[tokio::test]
async fn run_all_on_fresh_stores() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance::run_all(|| {
        n += 1;
        let path = dir.path().join(format!("{n}.db"));
        async move { SqliteStore::open(&path).await.unwrap() }
    })
    .await;
    assert_eq!(n, 25);
}

#[tokio::test]
async fn raw_messages_are_bounded_and_keep_the_newest() {
    let (_dir, store) = temp_store().await;
    let e = conformance::enroll_device(&store, "RAW-1").await;
    let t0 = OffsetDateTime::now_utc();
    let kept = writes::DEVICE_MESSAGES_KEPT as usize;
    let mut counts = Vec::new();
    for i in 0..5 * kept {
        let commit = CheckinCommit {
            raw_message: Some(format!("message {i}")),
            ..CheckinCommit::default()
        };
        store
            .commit_checkin(e.id, &commit, t0 + time::Duration::seconds(i as i64))
            .await
            .unwrap();
        let messages = store.device_messages(e.id).await.unwrap();
        assert_eq!(messages.last().unwrap().1, format!("message {i}"), "the newest is kept");
        let bodies: Vec<&str> = messages.iter().map(|(_, b)| b.as_str()).collect();
        let expected: Vec<String> = (i + 1 - messages.len()..=i).map(|j| format!("message {j}")).collect();
        assert_eq!(bodies, expected, "the newest ones, oldest first");
        counts.push(messages.len());
    }
    assert!(
        counts.iter().skip(kept).all(|n| (kept..2 * kept).contains(n)),
        "{counts:?}"
    );
    assert_eq!(counts.iter().max(), Some(&(2 * kept - 1)), "{counts:?}");
}

#[tokio::test]
async fn a_large_enqueue_commits_in_batches_and_reports_a_partial_failure() {
    let (_dir, store) = temp_store().await;
    let e = conformance::enroll_device(&store, "FAN-OUT-1").await;
    let t0 = OffsetDateTime::now_utc();
    let cmd = |i: usize| NewCommand {
        id: CommandId::new(),
        enrollment_id: e.id,
        payload: PlatformPayload::from_json(format!(r#"{{"verb":"Get","target":"./Vendor/Bench/{i}"}}"#)),
        priority: 0,
        origin: CommandOrigin::Other("fan-out".into()),
        created_at: t0,
        expires_at: None,
    };
    let before = store.commands_for_enrollment(e.id).await.unwrap().len();
    let batch = writes::ENQUEUE_BATCH;
    let all: Vec<NewCommand> = (0..2 * batch + 3).map(cmd).collect();
    store.enqueue_commands(&all).await.unwrap();
    let queued = store.commands_for_enrollment(e.id).await.unwrap();
    assert_eq!(queued.len(), before + all.len());
    let ids: Vec<CommandId> = queued[before..].iter().map(|c| c.id).collect();
    let expected: Vec<CommandId> = all.iter().map(|c| c.id).collect();
    assert_eq!(ids, expected, "queue order is the call's order across batches");

    // The third batch repeats an id: the first two batches stay, the third is rolled back whole.
    let mut again: Vec<NewCommand> = (0..2 * batch + 3).map(cmd).collect();
    again[2 * batch + 1].id = all[0].id;
    let err = store.enqueue_commands(&again).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("the first {} commands were queued", 2 * batch)),
        "{err}"
    );
    let queued = store.commands_for_enrollment(e.id).await.unwrap();
    assert_eq!(queued.len(), before + all.len() + 2 * batch);
}

#[tokio::test]
async fn a_panicking_write_job_fails_alone_and_the_writer_goes_on() {
    let (_dir, store) = temp_store().await;
    let insert = |tx: &rusqlite::Transaction<'_>, name: &str| {
        tx.execute(
            "INSERT INTO groups (id, name, created_at) VALUES (?1, ?2, 0)",
            rusqlite::params![GroupId::new().to_string(), name],
        )
        .map_err(from_rusqlite)
    };
    let failed = store
        .writer
        .run(move |conn| -> StoreResult<()> {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(from_rusqlite)?;
            insert(&tx, "half-written")?;
            panic!("a bug in a write job");
        })
        .await;
    assert!(failed.is_err());
    store
        .writer
        .run(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(from_rusqlite)?;
            insert(&tx, "kept")?;
            tx.commit().map_err(from_rusqlite)
        })
        .await
        .expect("the writer goes on after a panicked job");
    let names: Vec<String> = store.list_groups().await.unwrap().into_iter().map(|g| g.name).collect();
    assert!(names.contains(&"kept".to_owned()), "{names:?}");
    assert!(!names.contains(&"half-written".to_owned()), "rolled back: {names:?}");
}

#[tokio::test]
async fn data_survives_a_reopen_without_migrating_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = SqliteStore::open(&path).await.unwrap();
    conformance::enrollments(&store).await;
    drop(store);
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.list_enrollments().await.unwrap().len(), 3);
    let applied = count(&store, "SELECT COUNT(*) FROM _steward_migrations").await;
    assert_eq!(applied, MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn certificate_log_is_append_only() {
    let (_dir, store) = temp_store().await;
    conformance::enrollments(&store).await;
    let upd = raw(&store, "UPDATE certificate_log SET event = 'issued'").await;
    assert!(upd.unwrap_err().contains("append-only"));
    let del = raw(&store, "DELETE FROM certificate_log").await;
    assert!(del.unwrap_err().contains("append-only"));
}

#[tokio::test]
async fn audit_log_is_append_only_and_verify_finds_an_edited_row() {
    let (_dir, store) = temp_store().await;
    let key = conformance::audit_chain(&store).await;
    let upd = raw(&store, "UPDATE audit_chain SET keyed_from = 3").await;
    assert!(upd.unwrap_err().contains("append-only"));
    let upd = raw(&store, "UPDATE audit_events SET actor = 'mallory'").await;
    assert!(upd.unwrap_err().contains("append-only"));
    let del = raw(&store, "DELETE FROM audit_events").await;
    assert!(del.unwrap_err().contains("append-only"));

    // Someone with raw access to the file drops the trigger and edits a row: the chain breaks
    // at exactly that row.
    raw(&store, "DROP TRIGGER audit_events_no_update").await.unwrap();
    raw(&store, "UPDATE audit_events SET target = 'someone-else' WHERE seq = 2")
        .await
        .unwrap();
    let broken = steward_core::verify_audit_log(&store, Some(key), Vec::new())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(broken.seq, 2, "{broken}");
}

/// A log an earlier version wrote (unkeyed links, no marker) continues keyed: the marker names the
/// first keyed row, the whole chain verifies, and an edit of an old unkeyed row recomputed through
/// the unkeyed rows is caught at the first keyed row, whose MAC covers it.
#[tokio::test]
async fn an_unkeyed_log_from_an_earlier_version_continues_keyed() {
    let (_dir, store) = temp_store().await;
    let t0 = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let event = |n: i64| NewAuditEvent {
        at: t0 + time::Duration::seconds(n),
        actor: "cli (local)".into(),
        actor_id: None,
        actor_role: Some(Role::Admin),
        action: "enrollment_token.create".into(),
        target: Some(format!("token-{n}")),
        source_ip: None,
        outcome: AuditOutcome::Success,
        status: None,
        details: None,
    };
    let insert = |e: AuditEvent| {
        raw_with(
            &store,
            "INSERT INTO audit_events (seq, at, actor, actor_id, actor_role, action, target, source_ip, outcome, \
             status, details, prev_hash, hash) VALUES (?, ?, ?, NULL, 'admin', ?, ?, NULL, 'success', NULL, NULL, ?, ?)",
            vec![
                e.seq.into(),
                crate::micros(e.at).into(),
                e.actor.into(),
                e.action.into(),
                e.target.into(),
                e.prev_hash.into(),
                e.hash.into(),
            ],
        )
    };
    // What the earlier version's store wrote.
    let mut prev = AUDIT_GENESIS_HASH.to_owned();
    for n in 1..=2 {
        let e = event(n).chained(n, &prev);
        prev = e.hash.clone();
        insert(e).await.unwrap();
    }
    assert_eq!(store.audit_keyed_from().await.unwrap(), None);
    let key = std::sync::Arc::new(AuditChainKey::generate().unwrap());
    for n in 3..=4 {
        store.append_audit_event(&event(n), &key).await.unwrap();
    }
    assert_eq!(store.audit_keyed_from().await.unwrap(), Some(3));
    let v = steward_core::verify_audit_log(&store, Some(key.clone()), Vec::new())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((v.count(), v.keyed_from()), (4, Some(3)));

    // Rewrite #1 and recompute #2 without the key: #3's MAC no longer matches its prev_hash.
    raw(&store, "DROP TRIGGER audit_events_no_update").await.unwrap();
    let mut forged = event(1);
    forged.actor = "mallory".into();
    let one = forged.chained(1, AUDIT_GENESIS_HASH);
    let two = event(2).chained(2, &one.hash);
    assert_ne!(two.hash, prev);
    raw_with(
        &store,
        "UPDATE audit_events SET prev_hash = ? WHERE seq = 3",
        vec![two.hash.clone().into()],
    )
    .await
    .unwrap();
    for e in [one, two] {
        raw_with(
            &store,
            "UPDATE audit_events SET actor = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            vec![e.actor.into(), e.prev_hash.into(), e.hash.into(), e.seq.into()],
        )
        .await
        .unwrap();
    }
    let broken = steward_core::verify_audit_log(&store, Some(key), Vec::new())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(broken.seq, 3, "{broken}");
    assert!(broken.reason.contains("keyed MAC"), "{broken}");
}

#[tokio::test]
async fn refuses_a_database_from_a_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = SqliteStore::open(&path).await.unwrap();
    raw(
        &store,
        "INSERT INTO _steward_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
    )
    .await
    .unwrap();
    drop(store);
    let err = SqliteStore::open(&path).await.unwrap_err().to_string();
    assert!(err.contains("newer"), "{err}");
}

/// A database at schema 6 (before the platform-neutral model), written directly.
fn database_at_version_6(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE _steward_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
         applied_at INTEGER NOT NULL)",
    )
    .unwrap();
    for &(version, name, sql) in &MIGRATIONS[..6] {
        conn.execute_batch(sql).unwrap();
        conn.execute(
            "INSERT INTO _steward_migrations (version, name, applied_at) VALUES (?1, ?2, 0)",
            rusqlite::params![version, name],
        )
        .unwrap();
    }
    conn
}

#[tokio::test]
async fn migration_7_converts_windows_sessions_and_renames_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let chunked = CommandId::new();
    let (with_chunk, without_chunk) = (EnrollmentId::new(), EnrollmentId::new());
    {
        let conn = database_at_version_6(&path);
        assert_eq!(MIGRATIONS[6].0, 7);
        for (id, device, serial, credential) in [
            (with_chunk, "DEV-A", "0A", Some("bWQ1LWtleQ==")),
            (without_chunk, "DEV-B", "0B", None),
        ] {
            conn.execute(
                "INSERT INTO enrollments (id, device_id, hw_dev_id, enrollment_type, auth_method, cert_serial, \
                 cert_thumbprint, cert_not_after, state, enrolled_at, updated_at, md5_credential) \
                 VALUES (?1, ?2, 'HW-1', 'Full', 'user_password', ?3, ?4, 2000000, 'active', 1000000, 1000000, ?5)",
                rusqlite::params![
                    id.to_string(),
                    device,
                    serial,
                    Thumbprint::of_der(serial.as_bytes()).as_str(),
                    credential
                ],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO mdm_sessions (enrollment_id, session_key, session_id, client_msg_id, server_msg_id, \
             last_request_hash, last_response, login_status, md5_nonce, chunk_command, chunk_offset, updated_at) \
             VALUES (?1, 'key-a', '7', 3, 4, 'hash-a', '<SyncML>a</SyncML>', 'Pass', 'bm9uY2U=', ?2, 1024, 5000000)",
            rusqlite::params![with_chunk.to_string(), chunked.to_string()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO mdm_sessions (enrollment_id, session_key, session_id, client_msg_id, server_msg_id, \
             last_request_hash, last_response, login_status, md5_nonce, chunk_command, chunk_offset, updated_at) \
             VALUES (?1, 'key-b', '1', 1, 2, '', '', NULL, NULL, NULL, NULL, 6000000)",
            rusqlite::params![without_chunk.to_string()],
        )
        .unwrap();
    }

    let store = SqliteStore::open(&path).await.expect("migrates to 7");
    let state = |id: EnrollmentId| {
        let store = &store;
        async move { store.session_record(id).await.unwrap().expect("session converted") }
    };
    let a = state(with_chunk).await;
    assert_eq!(
        a.state,
        format!(
            r#"{{"session_id":"7","client_msg_id":3,"server_msg_id":4,"login_status":"Pass","md5_nonce":"bm9uY2U=","chunk":{{"command":"{chunked}","offset":1024}}}}"#
        )
    );
    assert_eq!(
        (a.key.as_str(), a.last_request_hash.as_str(), a.last_response.as_str()),
        ("key-a", "hash-a", "<SyncML>a</SyncML>")
    );
    assert_eq!(a.updated_at, Some(from_micros(5_000_000).unwrap()));
    let b = state(without_chunk).await;
    assert_eq!(
        b.state,
        r#"{"session_id":"1","client_msg_id":1,"server_msg_id":2,"login_status":null,"md5_nonce":null,"chunk":null}"#
    );
    assert_eq!(b.key, "key-b");

    // The renamed columns carry their values; every enrollment so far is a Windows one.
    let e = store.enrollment_by_id(with_chunk).await.unwrap().unwrap();
    assert_eq!(
        (e.platform, e.hardware_id.as_deref(), e.device_id.as_str()),
        (Platform::Windows, Some("HW-1"), "DEV-A")
    );
    let device = DeviceId::parse("DEV-A").unwrap();
    let ctx = store
        .checkin_context(EnrollmentKey::ActiveDevice(&device), &[], OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ctx.session_credential.as_deref(), Some("bWQ1LWtleQ=="));
    assert_eq!(ctx.session, Some(a));
    let ctx = store
        .checkin_context(EnrollmentKey::Id(without_chunk), &[], OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ctx.session_credential, None);
    let gone = count(&store, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'mdm_sessions'").await;
    assert_eq!(gone, 0, "mdm_sessions dropped");
    // The indexes on enrollments still serve (the active-device one is unique).
    let dup = raw(
        &store,
        "INSERT INTO enrollments (id, device_id, enrollment_type, auth_method, cert_serial, cert_thumbprint, \
         cert_not_after, state, enrolled_at, updated_at) VALUES ('x', 'DEV-A', 'Full', 'user_password', '0C', \
         'T', 0, 'active', 0, 0)",
    )
    .await;
    assert!(dup.unwrap_err().contains("UNIQUE"));
}

#[tokio::test]
async fn migration_8_gives_existing_bootstrap_tokens_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let conn = database_at_version_6(&path);
        let (version, name, sql) = MIGRATIONS[6];
        conn.execute_batch(sql).unwrap();
        conn.execute(
            "INSERT INTO _steward_migrations (version, name, applied_at) VALUES (?1, ?2, 0)",
            rusqlite::params![version, name],
        )
        .unwrap();
        for (value, at) in [("stw_adm_generated", 1_000_000), ("stw_adm_configured", 2_000_000)] {
            conn.execute(
                "INSERT INTO admin_tokens (token_hash, name, created_at) VALUES (?1, 'bootstrap', ?2)",
                rusqlite::params![TokenHash::of(value).to_hex(), at],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&path).await.expect("migrates to 8");
    let tokens = store.list_bootstrap_tokens().await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0].id, tokens[1].id, "one random id per row");
    assert!(
        tokens.iter().all(BootstrapToken::usable),
        "nothing revoked by the migration"
    );
    assert_eq!(tokens[0].token_hash, TokenHash::of("stw_adm_generated"));
    // The ids are real: revocation by id works.
    assert!(
        store
            .revoke_bootstrap_token(tokens[0].id, OffsetDateTime::now_utc())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_write_lock_held_elsewhere_makes_writes_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = SqliteStore::open_with(
        &path,
        SqliteOptions {
            busy_timeout: Duration::from_millis(200),
        },
    )
    .await
    .unwrap();
    let e = conformance::enroll_device(&store, "BUSY-1").await;

    // Another process (the CLI, say) holds the write lock.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    // The writer thread (rusqlite) ...
    let err = store
        .commit_checkin(e.id, &CheckinCommit::default(), OffsetDateTime::now_utc())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    // ... for the admin writes too (the same thread) ...
    let err = store
        .create_group(&Group::named("busy", OffsetDateTime::now_utc()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    // Reads go on (WAL).
    assert!(store.enrollment_by_id(e.id).await.unwrap().is_some());
    assert!(
        store
            .checkin_context(EnrollmentKey::Id(e.id), &[], OffsetDateTime::now_utc())
            .await
            .unwrap()
            .is_some()
    );

    // Once the lock is released, writes succeed again.
    other.execute_batch("ROLLBACK").unwrap();
    store
        .commit_checkin(e.id, &CheckinCommit::default(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    store
        .create_group(&Group::named("free", OffsetDateTime::now_utc()).unwrap())
        .await
        .unwrap();
}

/// `fixtures/main-schema-8.db` was made by the sqlx-based store (the `steward` binary of main
/// before this crate moved to one driver: `steward --local groups create lab`, `enroll-tokens
/// create --uses 5 --group lab`, `user add alice@example.com`, then a WAL checkpoint). The
/// rusqlite store must open it, keep its migration bookkeeping, apply only what is newer, and
/// read and extend what the old store wrote (the audit chain included).
#[tokio::test]
async fn opens_and_upgrades_a_database_created_by_the_sqlx_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.db");
    std::fs::write(&path, include_bytes!("../fixtures/main-schema-8.db")).unwrap();
    let before: Vec<(i64, String, i64)> = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = conn
            .prepare("SELECT version, name, applied_at FROM _steward_migrations ORDER BY version")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(before.len(), 8, "the fixture is at schema 8");

    let store = SqliteStore::open(&path).await.expect("opens and migrates");
    let after: Vec<(i64, String, i64)> = store
        .read_all(
            "SELECT version, name, applied_at FROM _steward_migrations ORDER BY version",
            (),
            |r| Ok((r.int("version")?, r.text("name")?, r.int("applied_at")?)),
        )
        .await
        .unwrap();
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "the old bookkeeping is kept as it was"
    );
    let versions: Vec<i64> = after.iter().map(|m| m.0).collect();
    let known: Vec<i64> = MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(versions, known, "every newer migration applied once");
    let mode: String = store
        .read(|conn| {
            conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .map_err(from_rusqlite)
        })
        .await
        .unwrap();
    assert_eq!(mode, "wal");

    // What the old store wrote reads back.
    let lab = store.group_by_name("lab").await.unwrap().expect("group lab");
    let tokens = store.list_enrollment_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].group_id, Some(lab.id));
    assert_eq!(tokens[0].max_uses, Some(5));
    let alice = store.user_by_email("alice@example.com").await.unwrap().expect("alice");
    assert!(!alice.password_hash.is_empty());
    let audit = store.audit_events(&AuditFilter::default(), None, 10).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["group.create", "enrollment_token.create", "user.create"]);
    assert_eq!(
        store.audit_keyed_from().await.unwrap(),
        None,
        "the old rows are unkeyed"
    );
    let key = std::sync::Arc::new(AuditChainKey::generate().unwrap());
    steward_core::verify_audit_log(&store, Some(key.clone()), Vec::new())
        .await
        .unwrap()
        .unwrap();

    // ... and the new store extends it: the chain goes on from the old head.
    let next = store
        .append_audit_event(
            &NewAuditEvent {
                at: OffsetDateTime::now_utc(),
                actor: "test".into(),
                actor_id: None,
                actor_role: Some(Role::Admin),
                action: "group.create".into(),
                target: Some("lab-2".into()),
                source_ip: None,
                outcome: AuditOutcome::Success,
                status: None,
                details: None,
            },
            &key,
        )
        .await
        .unwrap();
    assert_eq!(next.seq, 4);
    assert_eq!(next.prev_hash, audit[2].hash);
    assert_eq!(
        store.audit_keyed_from().await.unwrap(),
        Some(4),
        "keyed from the first new row"
    );
    let v = steward_core::verify_audit_log(&store, Some(key), Vec::new())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((v.count(), v.keyed_from()), (4, Some(4)));
    store
        .create_group(&Group::named("lab-2", OffsetDateTime::now_utc()).unwrap())
        .await
        .unwrap();
    assert_eq!(store.list_groups().await.unwrap().len(), 2);
}

/// The check-in's reads stay indexed lookups: the stamp and epoch folded into the context's first
/// statement, and the configuration loads by platform and enrollment (no table scans as the fleet
/// or the profile list grows).
#[tokio::test]
async fn the_configuration_reads_of_a_check_in_are_indexed() {
    let (_dir, store) = temp_store().await;
    let statements = [
        crate::checkin::CONTEXT_BY_ID,
        crate::checkin::CONTEXT_BY_CERTIFICATE,
        crate::checkin::CONTEXT_BY_ACTIVE_DEVICE,
        crate::profiles::ASSIGNMENTS_OF_PLATFORM,
        crate::profiles::CANDIDATES,
        crate::profiles::DEVICE_SETTINGS,
        crate::profiles::DYNAMIC_GROUP,
        crate::profiles::FACT,
    ];
    for sql in statements {
        let plan: Vec<String> = store
            .read(move |conn| {
                let mut stmt = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .map_err(from_rusqlite)?;
                let params = vec!["x"; stmt.parameter_count()];
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(params), |r| r.get::<_, String>(3))
                    .map_err(from_rusqlite)?;
                rows.collect::<Result<_, _>>().map_err(from_rusqlite)
            })
            .await
            .unwrap();
        // The one-row epoch table is the only table read whole.
        let scans: Vec<&String> = plan
            .iter()
            .filter(|d| d.starts_with("SCAN") && !d.contains("configuration_epoch"))
            .collect();
        assert!(scans.is_empty(), "{sql}\n{plan:#?}");
        assert!(plan.iter().any(|d| d.starts_with("SEARCH")), "{sql}\n{plan:#?}");
    }
}
