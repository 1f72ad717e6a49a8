//! Embedded, forward-only migrations, the same list (versions and names) as the SQLite backend's;
//! a test in steward-server holds the two lists equal. Each file runs once, in order, inside its
//! own transaction, and is recorded in `_steward_migrations`. Replicas starting together take a
//! session-level advisory lock first, so one of them migrates and the others find the work done.
//! A database that has a migration this binary does not know (written by a newer Steward) is
//! refused rather than guessed at.

use sqlx::{PgPool, Row};
use steward_core::{StoreError, StoreResult};

use crate::LOCK_MIGRATIONS;
use crate::error::from_sqlx;

/// (version, name, SQL). Append only; never edit an entry that has shipped. Each migration only
/// expands the schema (see migrations/0001_initial.sql), so the release before it runs on the result.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (2, "management", include_str!("../migrations/0002_management.sql")),
    (3, "admin", include_str!("../migrations/0003_admin.sql")),
    (4, "webhooks", include_str!("../migrations/0004_webhooks.sql")),
    (5, "console", include_str!("../migrations/0005_console.sql")),
    (
        6,
        "groups_totp_activity",
        include_str!("../migrations/0006_groups_totp_activity.sql"),
    ),
    (
        7,
        "platform_neutral",
        include_str!("../migrations/0007_platform_neutral.sql"),
    ),
    (
        8,
        "bootstrap_tokens",
        include_str!("../migrations/0008_bootstrap_tokens.sql"),
    ),
    (
        9,
        "keyed_audit_chain",
        include_str!("../migrations/0009_keyed_audit_chain.sql"),
    ),
    (10, "profiles", include_str!("../migrations/0010_profiles.sql")),
    (
        11,
        "dynamic_groups",
        include_str!("../migrations/0011_dynamic_groups.sql"),
    ),
    (12, "rollouts", include_str!("../migrations/0012_rollouts.sql")),
    (
        13,
        "device_tags_config_lock",
        include_str!("../migrations/0013_device_tags_config_lock.sql"),
    ),
];

fn be(e: sqlx::Error) -> StoreError {
    match from_sqlx(e) {
        StoreError::Backend(m) => StoreError::Backend(format!("migration: {m}")),
        other => other,
    }
}

pub(crate) async fn run(pool: &PgPool) -> StoreResult<()> {
    let mut conn = pool.acquire().await.map_err(be)?;
    // A migration (an index on a big table) or the wait for another replica's may take longer than
    // the pool's statement_timeout; this connection goes without one until it is back in the pool.
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await
        .map_err(be)?;
    sqlx::query(LOCK_SESSION)
        .bind(LOCK_MIGRATIONS)
        .execute(&mut *conn)
        .await
        .map_err(be)?;
    let result = apply(&mut conn).await;
    // The lock is the connection's until released; the connection goes back to the pool.
    let unlocked = sqlx::query(UNLOCK_SESSION)
        .bind(LOCK_MIGRATIONS)
        .execute(&mut *conn)
        .await
        .map_err(be);
    let reset = sqlx::query("RESET statement_timeout")
        .execute(&mut *conn)
        .await
        .map_err(be);
    result?;
    unlocked?;
    reset?;
    Ok(())
}

const LOCK_SESSION: &str = concat!("SELECT pg_advisory_lock(", lock_namespace!(), ", $1)");
const UNLOCK_SESSION: &str = concat!("SELECT pg_advisory_unlock(", lock_namespace!(), ", $1)");

async fn apply(conn: &mut sqlx::PgConnection) -> StoreResult<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS _steward_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
         applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .map_err(be)?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM _steward_migrations ORDER BY version")
        .fetch_all(&mut *conn)
        .await
        .map_err(be)?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()
        .map_err(be)?;
    let known_max = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(&newest) = applied.last()
        && newest > known_max
    {
        return Err(StoreError::Backend(format!(
            "database schema version {newest} is newer than this binary supports ({known_max}); upgrade Steward"
        )));
    }
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(be)?;
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(be)?;
        sqlx::query(
            "INSERT INTO _steward_migrations (version, name, applied_at) \
             VALUES ($1, $2, extract(epoch FROM now())::bigint)",
        )
        .bind(version)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(be)?;
        tx.commit().await.map_err(be)?;
        tracing::info!(version, name, "applied migration");
    }
    Ok(())
}
