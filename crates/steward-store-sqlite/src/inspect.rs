//! [`Inspect`]: the readers only tests and offline checks use (crate feature `inspect`).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use steward_core::*;
use time::OffsetDateTime;

use crate::checkin::{session_columns, session_from_row};
use crate::error::{from_sqlx, json_err};
use crate::rows::{enrollment_from_row, event_from_row, thumbprint};
use crate::{SqliteStore, bad, from_micros, opt_micros, opt_parse, parse_id};

fn log_from_row(r: &SqliteRow) -> StoreResult<IssuanceLogEntry> {
    Ok(IssuanceLogEntry {
        serial: CertSerial::new(r.get::<String, _>("serial")),
        event: IssuanceEvent::parse(&r.get::<String, _>("event")).ok_or_else(|| bad("certificate_log event"))?,
        thumbprint: r
            .get::<Option<String>, _>("thumbprint")
            .map(|t| thumbprint(&t))
            .transpose()?,
        subject: r.get("subject"),
        device_id: r
            .get::<Option<String>, _>("device_id")
            .and_then(|s| DeviceId::parse(&s)),
        enrollment_id: opt_parse(r.get("enrollment_id"))?,
        not_before: opt_micros(r.get("not_before"))?,
        not_after: opt_micros(r.get("not_after"))?,
        reason: r.get("reason"),
        at: from_micros(r.get("at"))?,
    })
}

#[async_trait]
impl Inspect for SqliteStore {
    async fn list_enrollments(&self) -> StoreResult<Vec<Enrollment>> {
        sqlx::query("SELECT * FROM enrollments ORDER BY enrolled_at")
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(enrollment_from_row)
            .collect()
    }

    async fn issuance_log(&self) -> StoreResult<Vec<IssuanceLogEntry>> {
        sqlx::query("SELECT * FROM certificate_log ORDER BY seq")
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(log_from_row)
            .collect()
    }

    async fn command_result(&self, id: CommandId) -> StoreResult<Option<CommandResult>> {
        let Some(r) = sqlx::query("SELECT * FROM command_results WHERE command_id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(from_sqlx)?
        else {
            return Ok(None);
        };
        Ok(Some(CommandResult {
            command_id: parse_id(&r.get::<String, _>("command_id"))?,
            enrollment_id: parse_id(&r.get::<String, _>("enrollment_id"))?,
            status_code: r.get::<i64, _>("status_code") as u16,
            results: serde_json::from_str(&r.get::<String, _>("results")).map_err(json_err)?,
            child_codes: serde_json::from_str(&r.get::<String, _>("child_codes")).map_err(json_err)?,
            received_at: from_micros(r.get("received_at"))?,
        }))
    }

    async fn device_messages(&self, id: EnrollmentId) -> StoreResult<Vec<(OffsetDateTime, String)>> {
        sqlx::query("SELECT received_at, body FROM device_messages WHERE enrollment_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(|r| Ok((from_micros(r.get("received_at"))?, r.get("body"))))
            .collect()
    }

    async fn device_events_for(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceEvent>> {
        sqlx::query("SELECT * FROM device_events WHERE enrollment_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(event_from_row)
            .collect()
    }

    async fn session_record(&self, id: EnrollmentId) -> StoreResult<Option<SessionRecord>> {
        let r = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM checkin_sessions s WHERE s.enrollment_id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.read)
        .await
        .map_err(from_sqlx)?;
        match r {
            Some(r) => session_from_row(&r),
            None => Ok(None),
        }
    }
}
