//! [`InventoryStore`]: facts and their history (written by the check-in commit, `writes.rs`).

use async_trait::async_trait;
use steward_core::*;

use crate::rows::NamedRow;
use crate::{SqliteStore, bad, from_micros};

fn fact_name(r: &NamedRow<'_>) -> StoreResult<FactName> {
    FactName::parse(&r.text("name")?).ok_or_else(|| bad("fact name"))
}

#[async_trait]
impl InventoryStore for SqliteStore {
    async fn device_facts(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceFact>> {
        self.read_all(
            "SELECT name, value, updated_at FROM device_facts WHERE enrollment_id = ?1 ORDER BY name",
            (id.to_string(),),
            |r| {
                Ok(DeviceFact {
                    name: fact_name(r)?,
                    value: r.get("value")?,
                    updated_at: from_micros(r.int("updated_at")?)?,
                })
            },
        )
        .await
    }

    async fn fact_history(&self, id: EnrollmentId) -> StoreResult<Vec<FactChange>> {
        self.read_all(
            "SELECT * FROM device_fact_history WHERE enrollment_id = ?1 ORDER BY seq",
            (id.to_string(),),
            |r| {
                Ok(FactChange {
                    name: fact_name(r)?,
                    old_value: r.get("old_value")?,
                    new_value: r.get("new_value")?,
                    at: from_micros(r.int("at")?)?,
                })
            },
        )
        .await
    }
}
