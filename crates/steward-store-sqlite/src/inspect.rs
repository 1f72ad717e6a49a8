//! [`Inspect`]: the readers only tests and offline checks use (crate feature `inspect`).

use async_trait::async_trait;
use steward_core::*;
use time::OffsetDateTime;

use crate::checkin::{session_columns, session_from_row};
use crate::error::json_err;
use crate::rows::{NamedRow, enrollment_from_row, event_from_row, thumbprint};
use crate::{SqliteStore, bad, from_micros, opt_micros, opt_parse, parse_id};

fn log_from_row(r: &NamedRow<'_>) -> StoreResult<IssuanceLogEntry> {
    Ok(IssuanceLogEntry {
        serial: CertSerial::new(r.text("serial")?),
        event: IssuanceEvent::parse(&r.text("event")?).ok_or_else(|| bad("certificate_log event"))?,
        thumbprint: r.opt_text("thumbprint")?.map(|t| thumbprint(&t)).transpose()?,
        subject: r.get("subject")?,
        device_id: r.opt_text("device_id")?.and_then(|s| DeviceId::parse(&s)),
        enrollment_id: opt_parse(r.opt_text("enrollment_id")?)?,
        not_before: opt_micros(r.opt_int("not_before")?)?,
        not_after: opt_micros(r.opt_int("not_after")?)?,
        reason: r.get("reason")?,
        at: from_micros(r.int("at")?)?,
    })
}

#[async_trait]
impl Inspect for SqliteStore {
    async fn list_enrollments(&self) -> StoreResult<Vec<Enrollment>> {
        self.read_all(
            "SELECT * FROM enrollments ORDER BY enrolled_at",
            (),
            enrollment_from_row,
        )
        .await
    }

    async fn issuance_log(&self) -> StoreResult<Vec<IssuanceLogEntry>> {
        self.read_all("SELECT * FROM certificate_log ORDER BY seq", (), log_from_row)
            .await
    }

    async fn command_result(&self, id: CommandId) -> StoreResult<Option<CommandResult>> {
        self.read_opt(
            "SELECT * FROM command_results WHERE command_id = ?1",
            (id.to_string(),),
            |r| {
                Ok(CommandResult {
                    command_id: parse_id(&r.text("command_id")?)?,
                    enrollment_id: parse_id(&r.text("enrollment_id")?)?,
                    status_code: r.int("status_code")? as u16,
                    results: serde_json::from_str(&r.text("results")?).map_err(json_err)?,
                    child_codes: serde_json::from_str(&r.text("child_codes")?).map_err(json_err)?,
                    received_at: from_micros(r.int("received_at")?)?,
                })
            },
        )
        .await
    }

    async fn device_messages(&self, id: EnrollmentId) -> StoreResult<Vec<(OffsetDateTime, String)>> {
        self.read_all(
            "SELECT received_at, body FROM device_messages WHERE enrollment_id = ?1 ORDER BY seq",
            (id.to_string(),),
            |r| Ok((from_micros(r.int("received_at")?)?, r.text("body")?)),
        )
        .await
    }

    async fn device_events_for(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceEvent>> {
        self.read_all(
            "SELECT * FROM device_events WHERE enrollment_id = ?1 ORDER BY seq",
            (id.to_string(),),
            event_from_row,
        )
        .await
    }

    async fn session_record(&self, id: EnrollmentId) -> StoreResult<Option<SessionRecord>> {
        self.read_opt(
            concat!(
                "SELECT ",
                session_columns!(),
                " FROM checkin_sessions s WHERE s.enrollment_id = ?1"
            ),
            (id.to_string(),),
            session_from_row,
        )
        .await
        .map(Option::flatten)
    }
}
