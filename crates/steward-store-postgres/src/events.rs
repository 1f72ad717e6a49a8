//! [`EventLog`]: the device event outbox (rows are written by the lifecycle commits, `writes.rs`,
//! and for events that go with no other write by `append_device_event`).

use async_trait::async_trait;
use steward_core::*;
use time::OffsetDateTime;

use crate::PgStore;
use crate::error::from_sqlx;
use crate::rows::event_from_row;

#[async_trait]
impl EventLog for PgStore {
    async fn device_events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<DeviceEvent>> {
        sqlx::query("SELECT * FROM device_events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(event_from_row)
            .collect()
    }

    async fn device_events_of(
        &self,
        id: EnrollmentId,
        kinds: &[EventKind],
        limit: u32,
    ) -> StoreResult<Vec<DeviceEvent>> {
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        sqlx::query(
            "SELECT * FROM device_events WHERE enrollment_id = $1 \
             AND (cardinality($2::text[]) = 0 OR kind = ANY($2)) ORDER BY seq DESC LIMIT $3",
        )
        .bind(id.to_string())
        .bind(kinds)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn append_device_event(&self, id: EnrollmentId, e: &NewDeviceEvent, at: OffsetDateTime) -> StoreResult<bool> {
        self.append_event(id, e, at).await
    }
}
