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

    async fn device_events_of(
        &self,
        id: EnrollmentId,
        kinds: &[EventKind],
        limit: u32,
    ) -> StoreResult<Vec<DeviceEvent>> {
        // The kinds as one ",a,b," parameter keeps the statement static; the enrollment index
        // orders the scan, so the filter only reads that device's rows.
        let kinds = kinds_param(kinds);
        self.read_all(
            "SELECT * FROM device_events WHERE enrollment_id = ?1 \
             AND (?2 = '' OR instr(?2, ',' || kind || ',') > 0) ORDER BY seq DESC LIMIT ?3",
            (id.to_string(), kinds, i64::from(limit)),
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

/// `,a,b,` for kinds a and b; empty for every kind.
fn kinds_param(kinds: &[EventKind]) -> String {
    if kinds.is_empty() {
        return String::new();
    }
    let mut out = String::from(",");
    for k in kinds {
        out.push_str(k.as_str());
        out.push(',');
    }
    out
}
