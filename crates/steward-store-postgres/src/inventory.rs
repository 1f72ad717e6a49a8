//! [`InventoryStore`]: facts and their history (written by the check-in commit, `writes.rs`).

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use steward_core::*;

use crate::error::from_sqlx;
use crate::rows::Col;
use crate::{PgStore, bad, from_micros};

fn fact_name(r: &PgRow) -> StoreResult<FactName> {
    FactName::parse(r.col("name")?).ok_or_else(|| bad("fact name"))
}

#[async_trait]
impl InventoryStore for PgStore {
    async fn device_facts(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceFact>> {
        sqlx::query("SELECT name, value, updated_at FROM device_facts WHERE enrollment_id = $1 ORDER BY name")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(|r| {
                Ok(DeviceFact {
                    name: fact_name(r)?,
                    value: r.col("value")?,
                    updated_at: from_micros(r.col("updated_at")?)?,
                })
            })
            .collect()
    }

    async fn fact_history(&self, id: EnrollmentId) -> StoreResult<Vec<FactChange>> {
        sqlx::query("SELECT * FROM device_fact_history WHERE enrollment_id = $1 ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(|r| {
                Ok(FactChange {
                    name: fact_name(r)?,
                    old_value: r.col("old_value")?,
                    new_value: r.col("new_value")?,
                    at: from_micros(r.col("at")?)?,
                })
            })
            .collect()
    }
}
