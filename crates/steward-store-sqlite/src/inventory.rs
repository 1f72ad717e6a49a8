//! [`InventoryStore`]: facts and their history (written by the check-in commit, `writes.rs`).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use steward_core::*;

use crate::error::from_sqlx;
use crate::{SqliteStore, bad, from_micros};

fn fact_name(r: &SqliteRow) -> StoreResult<FactName> {
    FactName::parse(&r.get::<String, _>("name")).ok_or_else(|| bad("fact name"))
}

#[async_trait]
impl InventoryStore for SqliteStore {
    async fn device_facts(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceFact>> {
        sqlx::query("SELECT name, value, updated_at FROM device_facts WHERE enrollment_id = ? ORDER BY name")
            .bind(id.to_string())
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(|r| {
                Ok(DeviceFact {
                    name: fact_name(r)?,
                    value: r.get("value"),
                    updated_at: from_micros(r.get("updated_at"))?,
                })
            })
            .collect()
    }

    async fn fact_history(&self, id: EnrollmentId) -> StoreResult<Vec<FactChange>> {
        sqlx::query("SELECT * FROM device_fact_history WHERE enrollment_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(|r| {
                Ok(FactChange {
                    name: fact_name(r)?,
                    old_value: r.get("old_value"),
                    new_value: r.get("new_value"),
                    at: from_micros(r.get("at"))?,
                })
            })
            .collect()
    }
}
