//! The conformance stories, each on a fresh schema of the test database, and what only this backend
//! has: migrations, append-only triggers, batching, the statement timeout, racing writers.
//!
//! The database is `STEWARD_TEST_POSTGRES_URL` (scripts/test creates one per run and drops it at
//! the end), else the local server's `postgres` database. Every test makes its own schema, so tests
//! run in parallel without seeing each other, and drops it when it passed.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use steward_core::conformance;
use steward_core::*;
use time::OffsetDateTime;

use super::*;

fn database_url() -> String {
    std::env::var("STEWARD_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A URL to the test database whose connections use `schema`.
fn url_in(schema: &str) -> String {
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// A fresh, empty schema in the test database; dropped by [`Schema::drop`].
struct Schema(String);

impl Schema {
    async fn new() -> Self {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut c = PgConnection::connect(&database_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} (STEWARD_TEST_POSTGRES_URL): {e}", database_url()));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut c)
            .await
            .unwrap();
        Self(name)
    }

    fn url(&self) -> String {
        url_in(&self.0)
    }

    async fn drop(self, store: PgStore) {
        store.close().await;
        let mut c = PgConnection::connect(&database_url()).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.0)))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

async fn temp_store() -> (Schema, PgStore) {
    temp_store_with(PgOptions::default()).await
}

async fn temp_store_with(o: PgOptions) -> (Schema, PgStore) {
    let schema = Schema::new().await;
    let store = PgStore::connect(&schema.url(), o).await.unwrap();
    (schema, store)
}

/// One test per story, so one failure does not hide the others.
macro_rules! stories {
    ($($story:ident),* $(,)?) => {
        mod stories {
            $(
                #[tokio::test]
                async fn $story() {
                    let (schema, store) = super::temp_store().await;
                    steward_core::conformance::$story(&store).await;
                    schema.drop(store).await;
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
async fn run_all_on_fresh_schemas() {
    let mut schemas = Vec::new();
    let mut n = 0;
    conformance::run_all(|| {
        n += 1;
        let schema = schema_name();
        let url = url_in(&schema);
        schemas.push(schema.clone());
        async move {
            let mut c = PgConnection::connect(&database_url()).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut c)
                .await
                .unwrap();
            PgStore::connect(&url, PgOptions::default()).await.unwrap()
        }
    })
    .await;
    assert_eq!(n, 25);
    let mut c = PgConnection::connect(&database_url()).await.unwrap();
    for s in schemas {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {s} CASCADE")))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

fn schema_name() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn migrations_are_recorded_once_and_a_reconnect_keeps_the_data() {
    let (schema, store) = temp_store().await;
    conformance::enrollments(&store).await;
    let before = store.list_enrollments().await.unwrap();
    store.close().await;
    let store = PgStore::connect(&schema.url(), PgOptions::default()).await.unwrap();
    assert_eq!(store.list_enrollments().await.unwrap(), before);
    let applied: Vec<(i64, String)> = sqlx::query_as("SELECT version, name FROM _steward_migrations ORDER BY version")
        .fetch_all(&store.pool)
        .await
        .unwrap();
    let expected: Vec<(i64, String)> = MIGRATIONS.iter().map(|(v, n, _)| (*v, (*n).to_owned())).collect();
    assert_eq!(applied, expected);
    schema.drop(store).await;
}

#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    let schema = Schema::new().await;
    let url = schema.url();
    let (a, b, c) = tokio::join!(
        PgStore::connect(&url, PgOptions::default()),
        PgStore::connect(&url, PgOptions::default()),
        PgStore::connect(&url, PgOptions::default()),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _steward_migrations")
        .fetch_one(&a.pool)
        .await
        .unwrap();
    assert_eq!(n, MIGRATIONS.len() as i64);
    b.close().await;
    c.close().await;
    schema.drop(a).await;
}

#[tokio::test]
async fn refuses_a_database_from_a_newer_version() {
    let (schema, store) = temp_store().await;
    sqlx::query("INSERT INTO _steward_migrations (version, name, applied_at) VALUES (999, 'future', 0)")
        .execute(&store.pool)
        .await
        .unwrap();
    let err = PgStore::connect(&schema.url(), PgOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("newer than this binary"), "{err}");
    schema.drop(store).await;
}

#[tokio::test]
async fn certificate_log_and_audit_log_are_append_only() {
    let (schema, store) = temp_store().await;
    conformance::enrollments(&store).await;
    conformance::audit_chain(&store).await;
    for sql in [
        "UPDATE certificate_log SET reason = 'edited'",
        "DELETE FROM certificate_log",
        "TRUNCATE certificate_log",
        "UPDATE audit_events SET actor = 'mallory'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let err = sqlx::query(sql).execute(&store.pool).await.unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    schema.drop(store).await;
}

#[tokio::test]
async fn a_large_enqueue_commits_in_batches_and_reports_a_partial_failure() {
    let (schema, store) = temp_store().await;
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
    schema.drop(store).await;
}

#[tokio::test]
async fn raw_messages_are_bounded_and_keep_the_newest() {
    let (schema, store) = temp_store().await;
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
    schema.drop(store).await;
}

#[tokio::test]
async fn a_statement_past_the_timeout_is_cancelled_and_unavailable() {
    let (schema, store) = temp_store_with(PgOptions {
        statement_timeout: Duration::from_millis(250),
        ..PgOptions::default()
    })
    .await;
    // The migrations ran without the timeout (they may take longer); the pool's connections have it.
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(timeout, "250ms");
    let err = sqlx::query("SELECT pg_sleep(5)")
        .execute(&store.pool)
        .await
        .map_err(error::from_sqlx)
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    // The pool goes on serving.
    assert_eq!(store.count_admin_tokens().await.unwrap(), 0);
    schema.drop(store).await;
}

#[tokio::test]
async fn racing_writers_keep_the_audit_chain_and_the_event_order() {
    let (schema, store) = temp_store().await;
    let key = std::sync::Arc::new(AuditChainKey::generate().unwrap());
    let appends = (0..40).map(|i| {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move {
            store
                .append_audit_event(
                    &NewAuditEvent {
                        at: OffsetDateTime::now_utc(),
                        actor: format!("actor-{i}"),
                        actor_id: None,
                        actor_role: None,
                        action: "test.race".into(),
                        target: None,
                        source_ip: None,
                        outcome: AuditOutcome::Success,
                        status: None,
                        details: None,
                    },
                    &key,
                )
                .await
                .unwrap()
        })
    });
    for a in appends {
        a.await.unwrap();
    }
    let events = store.audit_events(&AuditFilter::default(), None, 100).await.unwrap();
    assert_eq!(events.len(), 40);
    let mut prev = AUDIT_GENESIS_HASH.to_owned();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "no gaps");
        assert_eq!(e.prev_hash, prev, "each row links to the one before");
        prev = e.hash.clone();
    }
    // Keyed from the first row, and the whole chain verifies under the key.
    assert_eq!(store.audit_keyed_from().await.unwrap(), Some(1));
    let verified = verify_audit_log(&store, Some(key.clone()), Vec::new()).await.unwrap();
    assert!(verified.is_ok(), "the keyed chain verifies");
    schema.drop(store).await;
}

/// `sslmode=require` in the URL: every pooled connection is TLS (rustls). The test server
/// (Debian's cluster on the CI machine) has `ssl = on` with its own certificate, so `require`
/// (encryption without verifying the certificate) is what it can show.
#[tokio::test]
async fn sslmode_in_the_url_puts_the_connections_on_tls() {
    let schema = Schema::new().await;
    let store = PgStore::connect(&format!("{}&sslmode=require", schema.url()), PgOptions::default())
        .await
        .unwrap();
    let (ssl, version): (bool, Option<String>) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert!(ssl, "the connection is encrypted");
    assert!(version.is_some_and(|v| v.starts_with("TLS")));
    schema.drop(store).await;
}

/// A profile write for this module's races: created at version 1 (`expected` None) or version
/// `expected + 1` decided against `expected`, with one setting of `value`.
fn profile_write(id: ProfileId, name: &str, groups: Vec<GroupId>, expected: Option<u32>, value: &str) -> ProfileWrite {
    let at = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let version = expected.map_or(1, |v| v + 1);
    let settings = vec![Setting {
        path: "./Vendor/MSFT/Policy/Config/Camera/AllowCamera".into(),
        format: "int".into(),
        verb: "replace".into(),
        value: value.into(),
        type_: None,
        readable: true,
        on_remove: OnRemove::Delete,
        remove_path: None,
    }];
    ProfileWrite {
        profile: Profile {
            id,
            name: name.into(),
            platform: Platform::Windows,
            description: String::new(),
            priority: 100,
            remediation: Remediation::Remediate,
            current_version: version,
            assignment: Assignment {
                all: groups.is_empty(),
                groups,
                exclude_groups: vec![],
            },
            created_at: at,
            updated_at: at,
        },
        new_version: Some(ProfileVersion {
            profile_id: id,
            version,
            digest: ProfileVersion::digest_of(&settings),
            config_lock: false,
            settings,
            created_at: at,
        }),
        expected_version: expected,
    }
}

/// Applies racing on many connections, all decided against version 1: one appends version 2, every
/// other is a Conflict (the UPDATE's version condition under the epoch row's lock), and the epoch
/// moved once per successful write.
#[tokio::test]
async fn racing_applies_of_one_version_append_it_once() {
    let (schema, store) = temp_store().await;
    let id = ProfileId::new();
    store
        .write_profiles(&[profile_write(id, "camera", vec![], None, "0")])
        .await
        .unwrap();
    let epoch = store.configuration_epoch().await.unwrap();
    let applies: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write_profiles(&[profile_write(id, "camera", vec![], Some(1), &i.to_string())])
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for a in applies {
        match a.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("a racing apply failed otherwise: {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one apply of version 1 wins");
    let versions = store.profile_versions(id).await.unwrap();
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(store.profile(id).await.unwrap().unwrap().current_version, 2);
    assert_eq!(
        store.configuration_epoch().await.unwrap(),
        epoch + 1,
        "losers moved nothing"
    );
    schema.drop(store).await;
}

/// A group deleted while a profile write names it, on two connections: exactly one of them
/// succeeds (the write's FOR KEY SHARE against delete_group's FOR UPDATE), so no assignment ever
/// names a deleted group and no in-use group is deleted.
#[tokio::test]
async fn a_group_deleted_while_a_profile_names_it_is_one_or_the_other() {
    let (schema, store) = temp_store().await;
    for round in 0..10 {
        let g = Group::named(&format!("race-{round}"), OffsetDateTime::now_utc()).unwrap();
        store.create_group(&g).await.unwrap();
        let id = ProfileId::new();
        let write = [profile_write(id, &format!("p-{round}"), vec![g.id], None, "1")];
        let (deleted, written) = tokio::join!(store.delete_group(g.id), store.write_profiles(&write));
        match (deleted, written) {
            (Ok(true), Err(StoreError::Conflict(_))) => {
                assert!(store.profile(id).await.unwrap().is_none());
            }
            (Err(StoreError::Conflict(_)), Ok(())) => {
                assert!(store.group_by_name(&g.name).await.unwrap().is_some());
                assert_eq!(store.profile(id).await.unwrap().unwrap().assignment.groups, vec![g.id]);
            }
            other => panic!("round {round}: both or neither succeeded: {other:?}"),
        }
    }
    schema.drop(store).await;
}

/// Writes that contradict themselves are refused (a Conflict, as on SQLite) before any statement:
/// nothing of the batch written, the epoch where it was.
#[tokio::test]
async fn contradictory_profile_writes_write_nothing() {
    let (schema, store) = temp_store().await;
    let g = Group::named("lab", OffsetDateTime::now_utc()).unwrap();
    store.create_group(&g).await.unwrap();
    let epoch = store.configuration_epoch().await.unwrap();
    let good = profile_write(ProfileId::new(), "good", vec![], None, "1");

    let mut both = profile_write(ProfileId::new(), "both", vec![g.id], None, "1");
    both.profile.assignment.exclude_groups = vec![g.id];
    let mut wrong_version = profile_write(ProfileId::new(), "wrong-version", vec![], None, "1");
    wrong_version.profile.current_version = 2;
    let mut no_version = profile_write(ProfileId::new(), "no-version", vec![], None, "1");
    no_version.new_version = None;
    let twice = profile_write(ProfileId::new(), "twice", vec![g.id, g.id], None, "1");
    let mut skipped = profile_write(good.profile.id, "good", vec![], Some(1), "2");
    skipped.profile.current_version = 3;
    skipped.new_version.as_mut().unwrap().version = 3;
    for bad in [both, wrong_version, no_version, twice, skipped] {
        let name = bad.profile.name.clone();
        let err = store.write_profiles(&[good.clone(), bad]).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict(m) if m.contains(&name)),
            "{name}: {err}"
        );
    }
    assert!(store.list_profiles().await.unwrap().is_empty());
    assert_eq!(store.configuration_epoch().await.unwrap(), epoch);
    schema.drop(store).await;
}

/// A check-in that did not reconcile (`configuration: None`, every idle message) writes nothing of
/// the configuration: no stamp, no rows; one that did writes its stamp in the same commit.
#[tokio::test]
async fn a_checkin_without_configuration_writes_none_of_it() {
    let (schema, store) = temp_store().await;
    let e = conformance::enroll_device(&store, "IDLE-1").await;
    let at = OffsetDateTime::now_utc();
    store.commit_checkin(e.id, &CheckinCommit::default(), at).await.unwrap();
    let count = |table: &'static str| {
        let pool = store.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("device_config_state").await, 0);
    assert_eq!(count("device_settings").await, 0);
    let epoch = store.configuration_epoch().await.unwrap();
    let reconciled = CheckinCommit {
        configuration: Some(ConfigurationCommit {
            state: DeviceConfigState {
                epoch_seen: epoch,
                unsettled: 0,
                verify_at: None,
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    store.commit_checkin(e.id, &reconciled, at).await.unwrap();
    assert_eq!(count("device_config_state").await, 1);
    let ctx = store
        .checkin_context(EnrollmentKey::Id(e.id), &[], at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ctx.configuration.epoch, epoch);
    assert!(ctx.configuration.loaded.is_none(), "settled: nothing loaded");
    schema.drop(store).await;
}
