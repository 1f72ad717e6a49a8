//! The two storage backends hold the same schema: the same migration list (versions and names, so
//! a database's history reads the same on either) and, after it, the same tables with the same
//! columns. What each does with them is held equal by the conformance stories both crates run.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Connection, Row};

use crate::common::postgres_database;

#[test]
fn both_backends_have_the_same_migration_list() {
    let names = |m: &[(i64, &str, &str)]| m.iter().map(|(v, n, _)| (*v, n.to_string())).collect::<Vec<_>>();
    assert_eq!(
        names(steward_store_sqlite::MIGRATIONS),
        names(steward_store_postgres::MIGRATIONS)
    );
}

type Tables = BTreeMap<String, BTreeSet<String>>;

#[tokio::test]
async fn both_backends_end_with_the_same_tables_and_columns() {
    // SQLite: a fresh file, migrated.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(steward_store_sqlite::SqliteStore::open(&path).await.unwrap());
    let lite = rusqlite::Connection::open(&path).unwrap();
    let mut sqlite = Tables::new();
    let tables: Vec<String> = lite
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_%' ESCAPE '\\'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in tables {
        let cols: Vec<String> = lite
            .prepare("SELECT name FROM pragma_table_info(?)")
            .unwrap()
            .query_map([&t], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        sqlite.insert(t, cols.into_iter().collect());
    }

    // PostgreSQL: a fresh schema of the test database (or the local server's), migrated.
    let admin = postgres_database();
    let schema = format!("t_schema_{}", uuid::Uuid::new_v4().simple());
    let mut pg = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut pg)
        .await
        .unwrap();
    let sep = if admin.contains('?') { '&' } else { '?' };
    let url = format!("{admin}{sep}options=-c%20search_path%3D{schema}");
    let store = steward_store_postgres::PgStore::connect(&url, Default::default())
        .await
        .unwrap();
    store.close().await;
    let rows = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name NOT LIKE '\\_%'",
    )
    .bind(&schema)
    .fetch_all(&mut pg)
    .await
    .unwrap();
    let mut postgres = Tables::new();
    for r in rows {
        postgres.entry(r.get("t")).or_default().insert(r.get("c"));
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut pg)
        .await
        .unwrap();

    assert!(sqlite.contains_key("enrollments") && sqlite.len() > 10, "{sqlite:?}");
    assert_eq!(sqlite, postgres);
}
