//! [`HealthStore`]: the readiness read, one query on a read-only connection (so it waits for
//! nothing the writer holds: WAL readers do not block on it).

use async_trait::async_trait;
use steward_core::*;

use crate::SqliteStore;
use crate::migrate::MIGRATIONS;

#[async_trait]
impl HealthStore for SqliteStore {
    async fn schema_versions(&self) -> StoreResult<SchemaVersions> {
        let applied = self
            .read_all("SELECT version FROM _steward_migrations ORDER BY version", (), |r| {
                r.int("version")
            })
            .await?;
        Ok(SchemaVersions {
            applied,
            known: MIGRATIONS.iter().map(|m| m.0).collect(),
        })
    }
}
