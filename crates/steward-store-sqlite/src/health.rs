//! [`HealthStore`]: the readiness read, one query on the read pool (so it waits for nothing the
//! writer holds: WAL readers do not block on it).

use async_trait::async_trait;
use sqlx::Row;
use steward_core::*;

use crate::SqliteStore;
use crate::error::from_sqlx;
use crate::migrate::MIGRATIONS;

#[async_trait]
impl HealthStore for SqliteStore {
    async fn schema_versions(&self) -> StoreResult<SchemaVersions> {
        let applied = sqlx::query("SELECT version FROM _steward_migrations ORDER BY version")
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()
            .map_err(from_sqlx)?;
        Ok(SchemaVersions {
            applied,
            known: MIGRATIONS.iter().map(|m| m.0).collect(),
        })
    }
}
