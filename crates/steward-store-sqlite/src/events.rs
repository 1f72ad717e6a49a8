//! [`EventLog`]: the device event outbox (rows are written by the lifecycle commits, `writes.rs`, and
//! for events that go with no other write by `append_device_event`, on the writer thread too).

use async_trait::async_trait;
use steward_core::*;
use time::OffsetDateTime;

use crate::rows::event_from_row;
use crate::{SqliteStore, writes};

#[async_trait]
impl EventLog for SqliteStore {
    async fn device_events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<DeviceEvent>> {
        self.read_all(
            "SELECT * FROM device_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            (after, i64::from(limit)),
            event_from_row,
        )
        .await
    }

    async fn append_device_event(&self, id: EnrollmentId, e: &NewDeviceEvent, at: OffsetDateTime) -> StoreResult<bool> {
        let e = e.clone();
        self.writer
            .run(move |conn| writes::append_event(conn, id, &e, at))
            .await
    }
}
