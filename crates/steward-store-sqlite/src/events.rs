//! [`EventLog`]: the device event outbox (rows are written by the lifecycle commits, `writes.rs`).

use async_trait::async_trait;
use steward_core::*;

use crate::SqliteStore;
use crate::error::from_sqlx;
use crate::rows::event_from_row;

#[async_trait]
impl EventLog for SqliteStore {
    async fn device_events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<DeviceEvent>> {
        sqlx::query("SELECT * FROM device_events WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(event_from_row)
            .collect()
    }
}
