//! Row mappers shared by several modules: enrollments, users (and their console access), commands
//! and device events. A mapper for rows one module reads lives in that module.

use rusqlite::{Connection, Params};
use steward_core::*;

use crate::error::{from_rusqlite, json_err};
use crate::{bad, from_micros, opt_micros, opt_parse, parse_id};

/// Runs one cached statement that returns no rows; rows changed.
pub(crate) fn exec(conn: &Connection, sql: &str, params: impl Params) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .map_err(from_rusqlite)?
        .execute(params)
        .map_err(from_rusqlite)
}

/// Every row of a cached statement, mapped in the statement's order. The column names are read once
/// for all rows (per row they cost more than the mapping: a 100-row device page took 3.5 ms instead
/// of 1.6 ms, docs/BENCHMARKS.md "SQLite on one driver").
pub(crate) fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    map: impl Fn(&NamedRow<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(from_rusqlite)?;
    let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let mut rows = stmt.query(params).map_err(from_rusqlite)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(from_rusqlite)? {
        out.push(map(&NamedRow {
            row: r,
            names: Names::Shared(&names),
        })?);
    }
    Ok(out)
}

/// The first row of a cached statement, mapped, if there is one.
pub(crate) fn first<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    map: impl FnOnce(&NamedRow<'_>) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(from_rusqlite)?;
    let mut rows = stmt.query(params).map_err(from_rusqlite)?;
    match rows.next().map_err(from_rusqlite)? {
        Some(r) => map(&NamedRow::new(r)?).map(Some),
        None => Ok(None),
    }
}

/// The one row a statement always returns (an aggregate, `RETURNING`), mapped.
pub(crate) fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    map: impl FnOnce(&NamedRow<'_>) -> StoreResult<T>,
) -> StoreResult<T> {
    first(conn, sql, params, map)?.ok_or_else(|| StoreError::Backend(format!("no row from: {sql}")))
}

/// A rusqlite row with its column names read once, for access by name. rusqlite finds a column by
/// name by asking SQLite for every column's name again (and measuring it) on each lookup; the ~30
/// lookups of an enrollment and session row cost ~15 µs per management message that way.
pub(crate) struct NamedRow<'r> {
    row: &'r rusqlite::Row<'r>,
    names: Names<'r>,
}

/// The column names of a [`NamedRow`]: its own, or those of the statement shared by all its rows.
enum Names<'r> {
    Own(Vec<&'r str>),
    Shared(&'r [String]),
}

impl Names<'_> {
    fn position(&self, name: &str) -> Option<usize> {
        match self {
            Names::Own(v) => v.iter().position(|n| n.eq_ignore_ascii_case(name)),
            Names::Shared(v) => v.iter().position(|n| n.eq_ignore_ascii_case(name)),
        }
    }
}

impl<'r> NamedRow<'r> {
    pub(crate) fn new(row: &'r rusqlite::Row<'r>) -> StoreResult<Self> {
        let stmt = row.as_ref();
        let names = (0..stmt.column_count())
            .map(|i| stmt.column_name(i).map_err(from_rusqlite))
            .collect::<StoreResult<_>>()?;
        Ok(Self {
            row,
            names: Names::Own(names),
        })
    }

    pub(crate) fn get<T: rusqlite::types::FromSql>(&self, name: &str) -> StoreResult<T> {
        let i = self
            .names
            .position(name)
            .ok_or_else(|| StoreError::Backend(format!("no column {name}")))?;
        self.row.get(i).map_err(from_rusqlite)
    }

    pub(crate) fn text(&self, name: &str) -> StoreResult<String> {
        self.get(name)
    }
    pub(crate) fn opt_text(&self, name: &str) -> StoreResult<Option<String>> {
        self.get(name)
    }
    pub(crate) fn int(&self, name: &str) -> StoreResult<i64> {
        self.get(name)
    }
    pub(crate) fn opt_int(&self, name: &str) -> StoreResult<Option<i64>> {
        self.get(name)
    }
}

pub(crate) fn thumbprint(s: &str) -> StoreResult<Thumbprint> {
    Thumbprint::parse(s).ok_or_else(|| bad("certificate thumbprint"))
}

pub(crate) fn enrollment_from_row(r: &NamedRow<'_>) -> StoreResult<Enrollment> {
    let previous_cert = match (
        r.opt_text("previous_cert_serial")?,
        r.opt_text("previous_cert_thumbprint")?,
    ) {
        (Some(serial), Some(t)) => Some(CertRef {
            serial: CertSerial::new(serial),
            thumbprint: thumbprint(&t)?,
        }),
        (None, _) => None,
        (Some(_), None) => return Err(bad("previous certificate")),
    };
    Ok(Enrollment {
        id: parse_id(&r.text("id")?)?,
        platform: Platform::parse(&r.text("platform")?).ok_or_else(|| bad("platform"))?,
        device_id: DeviceId::parse(&r.text("device_id")?).ok_or_else(|| bad("device_id"))?,
        hardware_id: r.opt_text("hardware_id")?,
        device_name: r.opt_text("device_name")?,
        os_version: r.opt_text("os_version")?,
        os_edition: r.opt_text("os_edition")?,
        enrollment_type: EnrollmentType::parse(&r.text("enrollment_type")?).ok_or_else(|| bad("enrollment_type"))?,
        user_email: r.opt_text("user_email")?,
        auth_method: AuthMethod::parse(&r.text("auth_method")?).ok_or_else(|| bad("auth_method"))?,
        enrollment_token_id: opt_parse(r.opt_text("enrollment_token_id")?)?,
        group_id: opt_parse(r.opt_text("group_id")?)?,
        cert_serial: CertSerial::new(r.text("cert_serial")?),
        cert_thumbprint: thumbprint(&r.text("cert_thumbprint")?)?,
        cert_not_after: from_micros(r.int("cert_not_after")?)?,
        previous_cert,
        state: EnrollmentState::parse(&r.text("state")?).ok_or_else(|| bad("state"))?,
        enrolled_at: from_micros(r.int("enrolled_at")?)?,
        updated_at: from_micros(r.int("updated_at")?)?,
        last_seen_at: opt_micros(r.opt_int("last_seen_at")?)?,
    })
}

pub(crate) fn command_from_row(r: &NamedRow<'_>) -> StoreResult<Command> {
    Ok(Command {
        id: parse_id(&r.text("id")?)?,
        enrollment_id: parse_id(&r.text("enrollment_id")?)?,
        payload: PlatformPayload::from_json(r.text("payload")?),
        priority: r.int("priority")? as i32,
        origin: CommandOrigin::parse(&r.text("origin")?),
        state: CommandState::parse(&r.text("state")?).ok_or_else(|| bad("command state"))?,
        created_at: from_micros(r.int("created_at")?)?,
        expires_at: opt_micros(r.opt_int("expires_at")?)?,
        send_count: r.int("send_count")? as u32,
        last_sent_at: opt_micros(r.opt_int("last_sent_at")?)?,
        last_session: r.opt_text("last_session")?,
        status_code: r.opt_int("status_code")?.map(|c| c as u16),
        completed_at: opt_micros(r.opt_int("completed_at")?)?,
    })
}

pub(crate) fn user_from_row(r: &NamedRow<'_>) -> StoreResult<User> {
    Ok(User {
        id: parse_id(&r.text("id")?)?,
        email: r.get("email")?,
        display_name: r.get("display_name")?,
        password_hash: r.get("password_hash")?,
        disabled: r.int("disabled")? != 0,
        created_at: from_micros(r.int("created_at")?)?,
    })
}

/// A `users` row as a console user; None for a user without console access.
pub(crate) fn console_user_from_row(r: &NamedRow<'_>) -> StoreResult<Option<ConsoleUser>> {
    let Some(role) = r.opt_text("console_role")? else {
        return Ok(None);
    };
    let role = Role::parse(&role).ok_or_else(|| bad("console_role"))?;
    let totp = match r.opt_text("totp_secret")? {
        Some(sealed_secret) => Some(UserTotp {
            sealed_secret,
            confirmed_at: opt_micros(r.opt_int("totp_confirmed_at")?)?,
            last_step: r.get("totp_last_step")?,
        }),
        None => None,
    };
    Ok(Some(ConsoleUser {
        user: user_from_row(r)?,
        role,
        group: opt_parse(r.opt_text("console_group_id")?)?,
        totp,
    }))
}

pub(crate) fn event_from_row(r: &NamedRow<'_>) -> StoreResult<DeviceEvent> {
    Ok(DeviceEvent {
        seq: r.int("seq")?,
        kind: EventKind::parse(&r.text("kind")?).ok_or_else(|| bad("event kind"))?,
        enrollment_id: parse_id(&r.text("enrollment_id")?)?,
        device_id: r.get("device_id")?,
        data: serde_json::from_str(&r.text("data")?).map_err(json_err)?,
        at: from_micros(r.int("at")?)?,
    })
}

/// A statement put together from parts (the filters of a list), with its parameters in order.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    text: String,
    params: Vec<rusqlite::types::Value>,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            params: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// A `?` in the text, bound to `value`.
    pub(crate) fn bind(&mut self, value: impl Into<rusqlite::types::Value>) -> &mut Self {
        self.text.push('?');
        self.params.push(value.into());
        self
    }

    /// Every row, mapped.
    pub(crate) fn all<T>(
        self,
        conn: &Connection,
        map: impl Fn(&NamedRow<'_>) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        all(conn, &self.text, rusqlite::params_from_iter(self.params), map)
    }
}
