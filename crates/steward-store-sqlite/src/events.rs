//! [`EventLog`]: the device event outbox (rows are written by the lifecycle commits, `writes.rs`, and
//! for events that go with no other write by `append_device_event`, on the writer thread too).

use async_trait::async_trait;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::from_sqlx;
use crate::rows::event_from_row;
use crate::{SqliteStore, writes};

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

    async fn append_device_event(&self, id: EnrollmentId, e: &NewDeviceEvent, at: OffsetDateTime) -> StoreResult<bool> {
        let e = e.clone();
        self.writer
            .run(move |conn| writes::append_event(conn, id, &e, at))
            .await
    }
}
