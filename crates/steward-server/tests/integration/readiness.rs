//! `GET /readyz` over real TLS, on the backend the pass runs on (SQLite, or PostgreSQL when
//! `STEWARD_TEST_DATABASE_URL` is set): ready on a current schema, not ready (503, problem+json
//! naming the check, `Retry-After`) when the database records a migration this binary does not know
//! or one it needs is missing, and when the database's tables are gone.

use sqlx::Connection;
use steward_core::AuditFilter;
use steward_server::config::DatabaseUrl;

use crate::common::{TestServer, config_for, test_database};

/// Runs `sql` on the server's own database (its SQLite file, or its PostgreSQL schema), from a
/// connection of its own: what another process (an operator, a newer release) would do to it.
async fn on_database(t: &TestServer, sql: &str) {
    match config_for(t.dir.path(), 0).database_url().unwrap() {
        DatabaseUrl::Sqlite(path) => {
            let sql = sql.to_owned();
            tokio::task::spawn_blocking(move || {
                let c = rusqlite::Connection::open(&path).unwrap();
                // The server may be mid-write; wait for its lock as another process would.
                c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
                c.execute_batch(&sql).unwrap();
            })
            .await
            .unwrap();
        }
        DatabaseUrl::Postgres(url) => {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

/// The readiness answer: status, and the problem document's `check` and `code` when not ready.
pub(crate) async fn readyz(t: &TestServer) -> (u16, Option<(String, String)>) {
    let resp = t.client().get(&t.url("/readyz")).await.unwrap();
    assert_eq!(resp.headers.get("cache-control").unwrap(), "no-store");
    let status = resp.status.as_u16();
    if status == 200 {
        assert_eq!(&resp.body[..], b"ready");
        return (status, None);
    }
    assert_eq!(resp.headers.get("content-type").unwrap(), "application/problem+json");
    assert_eq!(resp.headers.get("retry-after").unwrap(), "5");
    let p: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(p["status"], status);
    assert!(!p["detail"].as_str().unwrap().is_empty());
    let s = |k: &str| p[k].as_str().unwrap().to_owned();
    (status, Some((s("check"), s("code"))))
}

fn not_ready(check: &str, code: &str) -> (u16, Option<(String, String)>) {
    (503, Some((check.into(), code.into())))
}

#[tokio::test]
async fn readyz_follows_the_schema_version() {
    let t = TestServer::start().await;
    assert_eq!(readyz(&t).await, (200, None));
    // Unauthenticated and not audited: the probe adds no audit row.
    let audited = || async {
        t.store()
            .audit_events(&AuditFilter::default(), None, 1000)
            .await
            .unwrap()
            .len()
    };
    let before = audited().await;
    assert_eq!(readyz(&t).await, (200, None));
    assert_eq!(audited().await, before);

    let newer = steward_store_sqlite::MIGRATIONS.last().unwrap().0 + 1;
    on_database(
        &t,
        &format!("INSERT INTO _steward_migrations (version, name, applied_at) VALUES ({newer}, 'from_the_future', 0)"),
    )
    .await;
    assert_eq!(readyz(&t).await, not_ready("schema", "schema_newer"));
    on_database(&t, &format!("DELETE FROM _steward_migrations WHERE version = {newer}")).await;
    assert_eq!(readyz(&t).await, (200, None));

    // A migration recorded as not applied (a deployment that failed half-way).
    on_database(&t, "DELETE FROM _steward_migrations WHERE version = 9").await;
    assert_eq!(readyz(&t).await, not_ready("schema", "schema_behind"));
}

#[tokio::test]
async fn readyz_is_not_ready_when_the_database_is_gone() {
    let t = TestServer::start().await;
    assert_eq!(readyz(&t).await, (200, None));
    if test_database().is_some() {
        // PostgreSQL: the server's whole schema dropped under it.
        let DatabaseUrl::Postgres(url) = config_for(t.dir.path(), 0).database_url().unwrap() else {
            unreachable!("the PostgreSQL pass");
        };
        let schema = url.rsplit("search_path%3D").next().unwrap().to_owned();
        on_database(&t, &format!("DROP SCHEMA {schema} CASCADE")).await;
    } else {
        // SQLite: the schema's tables dropped under it (the file itself stays open in the server).
        on_database(&t, "DROP TABLE _steward_migrations").await;
    }
    assert_eq!(readyz(&t).await, not_ready("database", "database_unavailable"));
    // /healthz still says the process serves HTTP: the two answer different questions.
    assert_eq!(t.client().get(&t.url("/healthz")).await.unwrap().status, 200);
}
