//! [`Inspect`]: the readers only tests and offline checks use (crate feature `inspect`).

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use steward_core::*;
use time::OffsetDateTime;

use crate::checkin::{session_columns, session_from_row};
use crate::error::{from_sqlx, json_err};
use crate::rows::{Col, enrollment_from_row, event_from_row, thumbprint};
use crate::{PgStore, bad, from_micros, opt_micros, opt_parse, parse_id};

fn log_from_row(r: &PgRow) -> StoreResult<IssuanceLogEntry> {
    Ok(IssuanceLogEntry {
        serial: CertSerial::new(r.col::<String>("serial")?),
        event: IssuanceEvent::parse(r.col("event")?).ok_or_else(|| bad("certificate_log event"))?,
        thumbprint: r.col::<Option<&str>>("thumbprint")?.map(thumbprint).transpose()?,
        subject: r.col("subject")?,
        device_id: r.col::<Option<&str>>("device_id")?.and_then(DeviceId::parse),
        enrollment_id: opt_parse(r.col("enrollment_id")?)?,
        not_before: opt_micros(r.col("not_before")?)?,
        not_after: opt_micros(r.col("not_after")?)?,
        reason: r.col("reason")?,
        at: from_micros(r.col("at")?)?,
    })
}

#[async_trait]
impl Inspect for PgStore {
    async fn list_enrollments(&self) -> StoreResult<Vec<Enrollment>> {
        sqlx::query("SELECT * FROM enrollments ORDER BY enrolled_at")
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(enrollment_from_row)
            .collect()
    }

    async fn issuance_log(&self) -> StoreResult<Vec<IssuanceLogEntry>> {
        sqlx::query("SELECT * FROM certificate_log ORDER BY seq")
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(log_from_row)
            .collect()
    }

    async fn command_result(&self, id: CommandId) -> StoreResult<Option<CommandResult>> {
        let Some(r) = sqlx::query("SELECT * FROM command_results WHERE command_id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
        else {
            return Ok(None);
        };
        Ok(Some(CommandResult {
            command_id: parse_id(r.col("command_id")?)?,
            enrollment_id: parse_id(r.col("enrollment_id")?)?,
            status_code: r.col::<i64>("status_code")? as u16,
            results: serde_json::from_str(r.col("results")?).map_err(json_err)?,
            child_codes: serde_json::from_str(r.col("child_codes")?).map_err(json_err)?,
            received_at: from_micros(r.col("received_at")?)?,
        }))
    }

    async fn device_messages(&self, id: EnrollmentId) -> StoreResult<Vec<(OffsetDateTime, String)>> {
        sqlx::query("SELECT received_at, body FROM device_messages WHERE enrollment_id = $1 ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(|r| Ok((from_micros(r.col("received_at")?)?, r.col("body")?)))
            .collect()
    }

    async fn device_events_for(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceEvent>> {
        sqlx::query("SELECT * FROM device_events WHERE enrollment_id = $1 ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.pool)
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
            " FROM checkin_sessions s WHERE s.enrollment_id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(from_sqlx)?;
        match r {
            Some(r) => session_from_row(&r),
            None => Ok(None),
        }
    }
}
