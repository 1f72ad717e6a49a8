//! [`HealthStore`]: the readiness read, one query through the pool requests use (so a pool that
//! cannot hand out a connection, or a schema that is gone, shows as not ready).

use async_trait::async_trait;
use sqlx::Row;
use steward_core::*;

use crate::PgStore;
use crate::error::from_sqlx;
use crate::migrate::MIGRATIONS;

#[async_trait]
impl HealthStore for PgStore {
    async fn schema_versions(&self) -> StoreResult<SchemaVersions> {
        let applied = sqlx::query("SELECT version FROM _steward_migrations ORDER BY version")
            .fetch_all(&self.pool)
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
