//! Row mappers shared by several modules: enrollments, users (and their console access), commands
//! and device events. A mapper for rows one module reads lives in that module. Columns are read
//! with `try_get`: a column this version cannot decode is an error, never a panic.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row};
use steward_core::*;

use crate::error::{from_sqlx, json_err};
use crate::{bad, from_micros, opt_micros, opt_parse, parse_id};

/// Typed column access by name.
pub(crate) trait Col {
    fn col<'r, T>(&'r self, name: &str) -> StoreResult<T>
    where
        T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>;
}

impl Col for PgRow {
    fn col<'r, T>(&'r self, name: &str) -> StoreResult<T>
    where
        T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    {
        self.try_get(name).map_err(from_sqlx)
    }
}

pub(crate) fn thumbprint(s: &str) -> StoreResult<Thumbprint> {
    Thumbprint::parse(s).ok_or_else(|| bad("certificate thumbprint"))
}

pub(crate) fn enrollment_from_row(r: &PgRow) -> StoreResult<Enrollment> {
    let previous_cert = match (
        r.col::<Option<String>>("previous_cert_serial")?,
        r.col::<Option<String>>("previous_cert_thumbprint")?,
    ) {
        (Some(serial), Some(t)) => Some(CertRef {
            serial: CertSerial::new(serial),
            thumbprint: thumbprint(&t)?,
        }),
        (None, _) => None,
        (Some(_), None) => return Err(bad("previous certificate")),
    };
    Ok(Enrollment {
        id: parse_id(r.col::<&str>("id")?)?,
        platform: Platform::parse(r.col("platform")?).ok_or_else(|| bad("platform"))?,
        device_id: DeviceId::parse(r.col("device_id")?).ok_or_else(|| bad("device_id"))?,
        hardware_id: r.col("hardware_id")?,
        device_name: r.col("device_name")?,
        os_version: r.col("os_version")?,
        os_edition: r.col("os_edition")?,
        enrollment_type: EnrollmentType::parse(r.col("enrollment_type")?).ok_or_else(|| bad("enrollment_type"))?,
        user_email: r.col("user_email")?,
        auth_method: AuthMethod::parse(r.col("auth_method")?).ok_or_else(|| bad("auth_method"))?,
        enrollment_token_id: opt_parse(r.col("enrollment_token_id")?)?,
        group_id: opt_parse(r.col("group_id")?)?,
        cert_serial: CertSerial::new(r.col::<String>("cert_serial")?),
        cert_thumbprint: thumbprint(r.col("cert_thumbprint")?)?,
        cert_not_after: from_micros(r.col("cert_not_after")?)?,
        previous_cert,
        state: EnrollmentState::parse(r.col("state")?).ok_or_else(|| bad("state"))?,
        enrolled_at: from_micros(r.col("enrolled_at")?)?,
        updated_at: from_micros(r.col("updated_at")?)?,
        last_seen_at: opt_micros(r.col("last_seen_at")?)?,
    })
}

pub(crate) fn command_from_row(r: &PgRow) -> StoreResult<Command> {
    Ok(Command {
        id: parse_id(r.col("id")?)?,
        enrollment_id: parse_id(r.col("enrollment_id")?)?,
        payload: PlatformPayload::from_json(r.col::<String>("payload")?),
        priority: i32::try_from(r.col::<i64>("priority")?).map_err(|_| bad("command priority"))?,
        origin: CommandOrigin::parse(r.col("origin")?),
        state: CommandState::parse(r.col("state")?).ok_or_else(|| bad("command state"))?,
        created_at: from_micros(r.col("created_at")?)?,
        expires_at: opt_micros(r.col("expires_at")?)?,
        send_count: u32::try_from(r.col::<i64>("send_count")?).map_err(|_| bad("send_count"))?,
        last_sent_at: opt_micros(r.col("last_sent_at")?)?,
        last_session: r.col("last_session")?,
        status_code: r
            .col::<Option<i64>>("status_code")?
            .map(|c| u16::try_from(c).map_err(|_| bad("command status_code")))
            .transpose()?,
        completed_at: opt_micros(r.col("completed_at")?)?,
    })
}

pub(crate) fn user_from_row(r: &PgRow) -> StoreResult<User> {
    Ok(User {
        id: parse_id(r.col("id")?)?,
        email: r.col("email")?,
        display_name: r.col("display_name")?,
        password_hash: r.col("password_hash")?,
        disabled: r.col("disabled")?,
        created_at: from_micros(r.col("created_at")?)?,
    })
}

/// A `users` row as a console user; None for a user without console access.
pub(crate) fn console_user_from_row(r: &PgRow) -> StoreResult<Option<ConsoleUser>> {
    let Some(role) = r.col::<Option<&str>>("console_role")? else {
        return Ok(None);
    };
    let role = Role::parse(role).ok_or_else(|| bad("console_role"))?;
    let totp = match r.col::<Option<String>>("totp_secret")? {
        Some(sealed_secret) => Some(UserTotp {
            sealed_secret,
            confirmed_at: opt_micros(r.col("totp_confirmed_at")?)?,
            last_step: r.col("totp_last_step")?,
        }),
        None => None,
    };
    Ok(Some(ConsoleUser {
        user: user_from_row(r)?,
        role,
        group: opt_parse(r.col("console_group_id")?)?,
        totp,
    }))
}

pub(crate) fn event_from_row(r: &PgRow) -> StoreResult<DeviceEvent> {
    Ok(DeviceEvent {
        seq: r.col("seq")?,
        kind: EventKind::parse(r.col("kind")?).ok_or_else(|| bad("event kind"))?,
        enrollment_id: parse_id(r.col("enrollment_id")?)?,
        device_id: r.col("device_id")?,
        data: serde_json::from_str(r.col("data")?).map_err(json_err)?,
        at: from_micros(r.col("at")?)?,
    })
}
