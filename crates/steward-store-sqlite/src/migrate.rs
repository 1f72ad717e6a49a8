//! Embedded, forward-only migrations. Each file runs once, in order, inside its own transaction, and
//! is recorded in `_steward_migrations`. A database that has a migration this binary does not know
//! (written by a newer Steward) is refused rather than guessed at.
//!
//! They run on the writer thread's connection (`writer.rs`) before the store serves anything. The
//! bookkeeping table is the one the sqlx-based store kept (the same columns, the same rows), so a
//! database it created opens and migrates unchanged (`tests.rs`,
//! `opens_and_upgrades_a_database_created_by_the_sqlx_store`).

use rusqlite::{Connection, TransactionBehavior, params};
use steward_core::{StoreError, StoreResult};

use crate::error::from_rusqlite;

/// (version, name, SQL). Append only; never edit an entry that has shipped.
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

pub(crate) fn run(conn: &mut Connection) -> StoreResult<()> {
    let be = |e: rusqlite::Error| match from_rusqlite(e) {
        StoreError::Backend(m) => StoreError::Backend(format!("migration: {m}")),
        other => other,
    };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _steward_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .map_err(be)?;
    let applied: Vec<i64> = conn
        .prepare("SELECT version FROM _steward_migrations ORDER BY version")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
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
        // IMMEDIATE: another process (the CLI) migrating at the same moment waits for this one
        // instead of failing half-way when its read turns into a write, and then finds the
        // migration applied.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(be)?;
        let done: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM _steward_migrations WHERE version = ?1)",
                [version],
                |r| r.get(0),
            )
            .map_err(be)?;
        if done {
            continue;
        }
        tx.execute_batch(sql).map_err(be)?;
        tx.execute(
            "INSERT INTO _steward_migrations (version, name, applied_at) VALUES (?1, ?2, strftime('%s','now'))",
            params![version, name],
        )
        .map_err(be)?;
        tx.commit().map_err(be)?;
        tracing::info!(version, name, "applied migration");
    }
    Ok(())
}
