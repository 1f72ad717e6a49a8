//! SQLite backend for Steward's [`Store`]: the embedded default. One file in the data directory, WAL
//! mode so readers never block the writer, and a single-connection write pool so writes queue in
//! the process instead of fighting over SQLite's one write lock. Write transactions start with
//! `BEGIN IMMEDIATE` so a concurrent writer in another process (the `steward` CLI) waits on
//! `busy_timeout` instead of failing half-way with SQLITE_BUSY.

mod admin;
mod console;
mod management;
mod migrate;
mod reads;
mod webhooks;
mod writer;
mod writes;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use steward_core::*;
use time::OffsetDateTime;

pub use migrate::MIGRATIONS;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) read: SqlitePool,
    pub(crate) write: SqlitePool,
    /// The hot write paths (see `writer.rs`); the rest use `write` directly.
    writer: writer::Writer,
    /// The hot read (see `reads.rs`); the rest use `read`.
    pub(crate) readers: std::sync::Arc<reads::Readers>,
}

/// A statement being bound.
pub(crate) type SqlxQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

pub(crate) fn from_micros(v: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000)
        .map_err(|e| StoreError::Backend(format!("bad timestamp {v}: {e}")))
}

pub(crate) fn opt_micros(v: Option<i64>) -> StoreResult<Option<OffsetDateTime>> {
    v.map(from_micros).transpose()
}

pub(crate) fn parse_id<T: FromStr>(s: &str) -> StoreResult<T> {
    s.parse()
        .map_err(|_| StoreError::Backend(format!("bad id in database: {s}")))
}

fn opt_parse<T: FromStr>(s: Option<String>) -> StoreResult<Option<T>> {
    s.map(|s| parse_id(&s)).transpose()
}

/// Column access by name, so one row mapper serves a sqlx row and a rusqlite one (the context read,
/// `management::read_context`).
pub(crate) trait Cols {
    fn text(&self, name: &str) -> StoreResult<String>;
    fn opt_text(&self, name: &str) -> StoreResult<Option<String>>;
    fn int(&self, name: &str) -> StoreResult<i64>;
    fn opt_int(&self, name: &str) -> StoreResult<Option<i64>>;
}

impl Cols for SqliteRow {
    fn text(&self, name: &str) -> StoreResult<String> {
        self.try_get(name).map_err(backend)
    }
    fn opt_text(&self, name: &str) -> StoreResult<Option<String>> {
        self.try_get(name).map_err(backend)
    }
    fn int(&self, name: &str) -> StoreResult<i64> {
        self.try_get(name).map_err(backend)
    }
    fn opt_int(&self, name: &str) -> StoreResult<Option<i64>> {
        self.try_get(name).map_err(backend)
    }
}

/// A rusqlite row with its column names read once. rusqlite finds a column by name by asking SQLite
/// for every column's name again (and measuring it) on each lookup; the ~30 lookups of an enrollment
/// and session row cost ~15 µs per management message that way.
pub(crate) struct NamedRow<'r> {
    row: &'r rusqlite::Row<'r>,
    names: Vec<&'r str>,
}

impl<'r> NamedRow<'r> {
    pub(crate) fn new(row: &'r rusqlite::Row<'r>) -> StoreResult<Self> {
        let stmt = row.as_ref();
        let names = (0..stmt.column_count())
            .map(|i| stmt.column_name(i).map_err(writes::db))
            .collect::<StoreResult<_>>()?;
        Ok(Self { row, names })
    }

    fn get<T: rusqlite::types::FromSql>(&self, name: &str) -> StoreResult<T> {
        let i = self
            .names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .ok_or_else(|| StoreError::Backend(format!("no column {name}")))?;
        self.row.get(i).map_err(writes::db)
    }
}

impl Cols for NamedRow<'_> {
    fn text(&self, name: &str) -> StoreResult<String> {
        self.get(name)
    }
    fn opt_text(&self, name: &str) -> StoreResult<Option<String>> {
        self.get(name)
    }
    fn int(&self, name: &str) -> StoreResult<i64> {
        self.get(name)
    }
    fn opt_int(&self, name: &str) -> StoreResult<Option<i64>> {
        self.get(name)
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        Self::with_options(opts, 8).await
    }

    async fn with_options(opts: SqliteConnectOptions, readers: u32) -> StoreResult<Self> {
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await
            .map_err(backend)?;
        migrate::run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(readers)
            .test_before_acquire(false)
            .connect_with(opts.clone().read_only(true))
            .await
            .map_err(backend)?;
        Ok(Self {
            read,
            writer: writer::Writer::start(write.clone(), opts.get_filename())?,
            readers: std::sync::Arc::new(reads::Readers::new(opts.get_filename().to_owned())),
            write,
        })
    }

    pub(crate) async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.write.begin_with("BEGIN IMMEDIATE").await.map_err(backend)
    }

    /// One statement in its own write transaction (the small admin edits); rows it changed.
    pub(crate) async fn write_one(
        &self,
        sql: &'static str,
        bind: impl FnOnce(SqlxQuery<'static>) -> SqlxQuery<'static>,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let n = bind(sqlx::query(sql))
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(n)
    }

    /// Runs `statements` in order inside `tx`, each with `id` as its one parameter (a delete and the
    /// clean-up before it); rows changed by the last.
    pub(crate) async fn each_for_id(
        tx: &mut sqlx::SqliteConnection,
        statements: &[&'static str],
        id: &str,
    ) -> StoreResult<u64> {
        let mut n = 0;
        for &sql in statements {
            n = sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        }
        Ok(n)
    }

    async fn ensure_group(tx: &mut sqlx::SqliteConnection, name: &str, now: OffsetDateTime) -> StoreResult<GroupId> {
        if let Some(row) = sqlx::query("SELECT id FROM groups WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
        {
            return parse_id(&row.get::<String, _>(0));
        }
        let id = GroupId::new();
        sqlx::query("INSERT INTO groups (id, name, created_at) VALUES (?, ?, ?)")
            .bind(id.to_string())
            .bind(name)
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        Ok(id)
    }
}

fn token_from_row(r: &SqliteRow) -> StoreResult<EnrollmentToken> {
    Ok(EnrollmentToken {
        id: parse_id(&r.get::<String, _>("id"))?,
        token_hash: TokenHash::from_hex(&r.get::<String, _>("token_hash"))
            .ok_or_else(|| StoreError::Backend("bad token hash".into()))?,
        description: r.get("description"),
        max_uses: r.get::<Option<i64>, _>("max_uses").map(|v| v as u32),
        uses: r.get::<i64, _>("uses") as u32,
        expires_at: opt_micros(r.get("expires_at"))?,
        group_id: r
            .get::<Option<String>, _>("group_id")
            .map(|s| parse_id(&s))
            .transpose()?,
        revoked: r.get::<i64, _>("revoked") != 0,
        created_at: from_micros(r.get("created_at"))?,
    })
}

pub(crate) fn user_from_row(r: &SqliteRow) -> StoreResult<User> {
    Ok(User {
        id: parse_id(&r.get::<String, _>("id"))?,
        email: r.get("email"),
        display_name: r.get("display_name"),
        password_hash: r.get("password_hash"),
        disabled: r.get::<i64, _>("disabled") != 0,
        created_at: from_micros(r.get("created_at"))?,
    })
}

pub(crate) fn enrollment_from_row(r: &impl Cols) -> StoreResult<Enrollment> {
    let bad = |what: &str| StoreError::Backend(format!("bad {what} in database"));
    Ok(Enrollment {
        id: parse_id(&r.text("id")?)?,
        device_id: DeviceId::parse(&r.text("device_id")?).ok_or_else(|| bad("device_id"))?,
        hw_dev_id: r.opt_text("hw_dev_id")?,
        device_name: r.opt_text("device_name")?,
        os_version: r.opt_text("os_version")?,
        os_edition: r.opt_text("os_edition")?,
        enrollment_type: EnrollmentType::parse(&r.text("enrollment_type")?).ok_or_else(|| bad("enrollment_type"))?,
        user_email: r.opt_text("user_email")?,
        auth_method: AuthMethod::parse(&r.text("auth_method")?).ok_or_else(|| bad("auth_method"))?,
        enrollment_token_id: opt_parse(r.opt_text("enrollment_token_id")?)?,
        group_id: opt_parse(r.opt_text("group_id")?)?,
        cert_serial: r.text("cert_serial")?,
        cert_thumbprint: r.text("cert_thumbprint")?,
        cert_not_after: from_micros(r.int("cert_not_after")?)?,
        state: EnrollmentState::parse(&r.text("state")?).ok_or_else(|| bad("state"))?,
        enrolled_at: from_micros(r.int("enrolled_at")?)?,
        updated_at: from_micros(r.int("updated_at")?)?,
        last_seen_at: opt_micros(r.opt_int("last_seen_at")?)?,
    })
}

fn log_from_row(r: &SqliteRow) -> StoreResult<IssuanceLogEntry> {
    Ok(IssuanceLogEntry {
        serial: r.get("serial"),
        event: IssuanceEvent::parse(&r.get::<String, _>("event"))
            .ok_or_else(|| StoreError::Backend("bad certificate_log event".into()))?,
        thumbprint: r.get("thumbprint"),
        subject: r.get("subject"),
        device_id: r
            .get::<Option<String>, _>("device_id")
            .and_then(|s| DeviceId::parse(&s)),
        enrollment_id: r
            .get::<Option<String>, _>("enrollment_id")
            .map(|s| parse_id(&s))
            .transpose()?,
        not_before: opt_micros(r.get("not_before"))?,
        not_after: opt_micros(r.get("not_after"))?,
        reason: r.get("reason"),
        at: from_micros(r.get("at"))?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_console_user(&self, u: &User, role: Role, group: Option<GroupId>) -> StoreResult<()> {
        self.create_console_user_impl(u, role, group).await
    }
    async fn console_user_by_email(&self, email: &str) -> StoreResult<Option<ConsoleUser>> {
        self.console_user_by_email_impl(email).await
    }
    async fn create_console_session(&self, s: &ConsoleSession) -> StoreResult<()> {
        self.create_console_session_impl(s).await
    }
    async fn console_session(&self, id_hash: &TokenHash) -> StoreResult<Option<(ConsoleSession, ConsoleUser)>> {
        self.console_session_impl(id_hash).await
    }
    async fn touch_console_session(&self, id_hash: &TokenHash, now: OffsetDateTime) -> StoreResult<()> {
        self.touch_console_session_impl(id_hash, now).await
    }
    async fn delete_console_session(&self, id_hash: &TokenHash, now: OffsetDateTime) -> StoreResult<bool> {
        self.delete_console_session_impl(id_hash, now).await
    }
    async fn device_stats(&self, now: OffsetDateTime) -> StoreResult<DeviceStats> {
        self.device_stats_impl(now).await
    }
    async fn daily_activity(
        &self,
        since: OffsetDateTime,
        until: Option<OffsetDateTime>,
    ) -> StoreResult<Vec<DailyActivity>> {
        self.daily_activity_impl(since, until).await
    }
    async fn set_user_totp(&self, user: UserId, sealed_secret: Option<&str>) -> StoreResult<bool> {
        self.set_user_totp_impl(user, sealed_secret).await
    }
    async fn confirm_user_totp(&self, user: UserId, step: i64, at: OffsetDateTime) -> StoreResult<bool> {
        self.confirm_user_totp_impl(user, step, at).await
    }
    async fn use_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
        self.use_totp_step_impl(user, step).await
    }
    async fn delete_console_sessions_of(&self, user: UserId) -> StoreResult<u64> {
        self.delete_console_sessions_of_impl(user).await
    }
    async fn console_user(&self, id: UserId) -> StoreResult<Option<ConsoleUser>> {
        self.console_user_impl(id).await
    }
    async fn list_console_users(&self) -> StoreResult<Vec<ConsoleUser>> {
        self.list_console_users_impl().await
    }
    async fn set_user_disabled(&self, user: UserId, disabled: bool) -> StoreResult<bool> {
        self.set_user_disabled_impl(user, disabled).await
    }
    async fn set_console_access(&self, user: UserId, role: Option<Role>, group: Option<GroupId>) -> StoreResult<bool> {
        self.set_console_access_impl(user, role, group).await
    }
    async fn create_enrollment_token(&self, t: &NewEnrollmentToken) -> StoreResult<EnrollmentToken> {
        let mut tx = self.begin_write().await?;
        let group_id = match &t.group {
            Some(name) => Some(Self::ensure_group(&mut tx, name, t.created_at).await?),
            None => None,
        };
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, token_hash, description, max_uses, uses, expires_at, \
             group_id, revoked, created_at) VALUES (?, ?, ?, ?, 0, ?, ?, 0, ?)",
        )
        .bind(t.id.to_string())
        .bind(t.token_hash.to_hex())
        .bind(&t.description)
        .bind(t.max_uses.map(i64::from))
        .bind(t.expires_at.map(micros))
        .bind(group_id.map(|g| g.to_string()))
        .bind(micros(t.created_at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(EnrollmentToken {
            id: t.id,
            token_hash: t.token_hash,
            description: t.description.clone(),
            max_uses: t.max_uses,
            uses: 0,
            expires_at: t.expires_at,
            group_id,
            revoked: false,
            created_at: t.created_at,
        })
    }

    async fn enrollment_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<EnrollmentToken>> {
        sqlx::query("SELECT * FROM enrollment_tokens WHERE token_hash = ?")
            .bind(hash.to_hex())
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    async fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentToken>> {
        sqlx::query("SELECT * FROM enrollment_tokens ORDER BY created_at")
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(token_from_row)
            .collect()
    }

    async fn group_by_name(&self, name: &str) -> StoreResult<Option<Group>> {
        let Some(r) = sqlx::query("SELECT id, name, created_at FROM groups WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        Ok(Some(Group {
            id: parse_id(&r.get::<String, _>("id"))?,
            name: r.get("name"),
            created_at: from_micros(r.get("created_at"))?,
        }))
    }

    async fn create_user(&self, u: &User) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let res = sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, disabled, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(u.id.to_string())
        .bind(u.email.to_lowercase())
        .bind(&u.display_name)
        .bind(&u.password_hash)
        .bind(i64::from(u.disabled))
        .bind(micros(u.created_at))
        .execute(&mut *tx)
        .await;
        match res {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("user {}", u.email)));
            }
            other => {
                other.map_err(backend)?;
            }
        }
        tx.commit().await.map_err(backend)
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        sqlx::query("SELECT * FROM users WHERE email = ?")
            .bind(email.trim().to_lowercase())
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn put_admin_token(&self, name: &str, hash: &TokenHash, created_at: OffsetDateTime) -> StoreResult<()> {
        self.write_one(
            "INSERT INTO admin_tokens (token_hash, name, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (token_hash) DO NOTHING",
            |q| q.bind(hash.to_hex()).bind(name.to_owned()).bind(micros(created_at)),
        )
        .await?;
        Ok(())
    }

    async fn admin_token_exists(&self, hash: &TokenHash) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT 1 FROM admin_tokens WHERE token_hash = ?")
            .bind(hash.to_hex())
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
            .is_some())
    }

    async fn count_admin_tokens(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_tokens")
            .fetch_one(&self.read)
            .await
            .map_err(backend)?;
        Ok(n as u64)
    }

    async fn active_enrollment_by_device_id(&self, device_id: &DeviceId) -> StoreResult<Option<Enrollment>> {
        sqlx::query("SELECT * FROM enrollments WHERE device_id = ? AND state = 'active'")
            .bind(device_id.as_str())
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
            .as_ref()
            .map(enrollment_from_row)
            .transpose()
    }

    async fn enrollment_by_id(&self, id: EnrollmentId) -> StoreResult<Option<Enrollment>> {
        sqlx::query("SELECT * FROM enrollments WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
            .as_ref()
            .map(enrollment_from_row)
            .transpose()
    }

    async fn list_enrollments(&self) -> StoreResult<Vec<Enrollment>> {
        sqlx::query("SELECT * FROM enrollments ORDER BY enrolled_at")
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(enrollment_from_row)
            .collect()
    }

    async fn commit_enrollment(&self, c: &EnrollmentCommit) -> StoreResult<()> {
        let c = c.clone();
        self.writer.run(move |conn| writes::commit_enrollment(conn, &c)).await
    }

    async fn append_issuance_log(&self, e: &IssuanceLogEntry) -> StoreResult<()> {
        let e = e.clone();
        self.writer.run(move |conn| writes::append_issuance_log(conn, &e)).await
    }

    async fn issuance_log(&self) -> StoreResult<Vec<IssuanceLogEntry>> {
        sqlx::query("SELECT * FROM certificate_log ORDER BY seq")
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(log_from_row)
            .collect()
    }

    async fn enrollment_by_certificate(&self, thumbprint: &str) -> StoreResult<Option<Enrollment>> {
        self.enrollment_by_certificate_impl(thumbprint).await
    }
    async fn renew_certificate(&self, r: &CertificateRenewal) -> StoreResult<()> {
        let r = r.clone();
        self.writer.run(move |conn| writes::renew_certificate(conn, &r)).await
    }
    async fn device_events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<DeviceEvent>> {
        self.device_events_after_impl(after, limit).await
    }
    async fn device_events_for(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceEvent>> {
        self.device_events_for_impl(id).await
    }
    async fn md5_credential(&self, id: EnrollmentId) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar::<_, Option<String>>("SELECT md5_credential FROM enrollments WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.read)
                .await
                .map_err(backend)?
                .flatten(),
        )
    }
    async fn end_enrollment(
        &self,
        id: EnrollmentId,
        state: EnrollmentState,
        reason: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let reason = reason.to_owned();
        self.writer
            .run(move |conn| writes::end_enrollment(conn, id, state, &reason, now))
            .await
    }
    async fn enqueue_commands(&self, commands: &[NewCommand]) -> StoreResult<()> {
        // A fleet-wide fan-out commits in batches, each its own job, so device sessions queued
        // behind it commit in between instead of waiting for all of it (1,000,000 rows held the
        // write lock 36 s as one transaction).
        let mut queued = 0;
        for batch in commands.chunks(writes::ENQUEUE_BATCH) {
            let batch = batch.to_vec();
            let n = batch.len();
            self.writer
                .run(move |conn| writes::enqueue_commands(conn, &batch))
                .await
                .map_err(|e| match e {
                    StoreError::Backend(m) if queued > 0 => {
                        StoreError::Backend(format!("{m} (the first {queued} commands were queued)"))
                    }
                    other => other,
                })?;
            queued += n;
        }
        Ok(())
    }
    async fn command(&self, id: CommandId) -> StoreResult<Option<Command>> {
        self.command_impl(id).await
    }
    async fn commands_for_enrollment(&self, id: EnrollmentId) -> StoreResult<Vec<Command>> {
        self.commands_for_enrollment_impl(id).await
    }
    async fn deliverable_commands(&self, id: EnrollmentId, now: OffsetDateTime) -> StoreResult<Vec<Command>> {
        self.deliverable_commands_impl(id, now).await
    }
    async fn cancel_command(&self, id: CommandId, now: OffsetDateTime) -> StoreResult<bool> {
        self.cancel_command_impl(id, now).await
    }
    async fn command_result(&self, id: CommandId) -> StoreResult<Option<CommandResult>> {
        self.command_result_impl(id).await
    }
    async fn session_state(&self, id: EnrollmentId) -> StoreResult<Option<SessionState>> {
        self.session_state_impl(id).await
    }
    async fn management_context(
        &self,
        key: EnrollmentKey<'_>,
        facts: &[&str],
        now: OffsetDateTime,
    ) -> StoreResult<Option<ManagementContext>> {
        self.management_context_impl(key, facts, now).await
    }
    async fn commit_session_message(
        &self,
        id: EnrollmentId,
        commit: &SessionCommit,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let commit = commit.clone();
        self.writer
            .run(move |conn| writes::commit_session_message(conn, id, &commit, now))
            .await
    }
    async fn device_facts(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceFact>> {
        self.device_facts_impl(id).await
    }
    async fn fact_history(&self, id: EnrollmentId) -> StoreResult<Vec<FactChange>> {
        self.fact_history_impl(id).await
    }
    async fn device_messages(&self, id: EnrollmentId) -> StoreResult<Vec<(OffsetDateTime, String)>> {
        self.device_messages_impl(id).await
    }

    async fn list_devices(&self, q: &DeviceQuery) -> StoreResult<Vec<Enrollment>> {
        self.list_devices_impl(q).await
    }
    async fn latest_enrollment_by_device_id(&self, device_id: &DeviceId) -> StoreResult<Option<Enrollment>> {
        self.latest_enrollment_by_device_id_impl(device_id).await
    }
    async fn revoke_enrollment_token(&self, id: EnrollmentTokenId) -> StoreResult<bool> {
        self.revoke_enrollment_token_impl(id).await
    }
    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.list_users_impl().await
    }
    async fn list_groups(&self) -> StoreResult<Vec<Group>> {
        self.list_groups_impl().await
    }
    async fn create_group(&self, g: &Group) -> StoreResult<()> {
        self.create_group_impl(g).await
    }
    async fn delete_group(&self, id: GroupId) -> StoreResult<bool> {
        self.delete_group_impl(id).await
    }
    async fn set_enrollment_group(&self, id: EnrollmentId, group: Option<GroupId>) -> StoreResult<bool> {
        self.set_enrollment_group_impl(id, group).await
    }
    async fn group_device_counts(&self) -> StoreResult<Vec<(GroupId, u64)>> {
        self.group_device_counts_impl().await
    }
    async fn create_api_token(&self, t: &NewApiToken) -> StoreResult<ApiToken> {
        self.create_api_token_impl(t).await
    }
    async fn api_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<ApiToken>> {
        self.api_token_by_hash_impl(hash).await
    }
    async fn list_api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        self.list_api_tokens_impl().await
    }
    async fn revoke_api_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<bool> {
        self.revoke_api_token_impl(id, now).await
    }
    async fn touch_api_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<()> {
        self.touch_api_token_impl(id, now).await
    }
    async fn admin_counts(&self) -> StoreResult<AdminCounts> {
        self.admin_counts_impl().await
    }
    async fn append_audit_event(&self, e: &NewAuditEvent) -> StoreResult<AuditEvent> {
        self.append_audit_event_impl(e).await
    }
    async fn audit_events(
        &self,
        filter: &AuditFilter,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        self.audit_events_impl(filter, after_seq, limit).await
    }

    async fn create_webhook(&self, w: &NewWebhook) -> StoreResult<Webhook> {
        self.create_webhook_impl(w).await
    }
    async fn webhook(&self, id: WebhookId) -> StoreResult<Option<Webhook>> {
        self.webhook_impl(id).await
    }
    async fn list_webhooks(&self) -> StoreResult<Vec<Webhook>> {
        self.list_webhooks_impl().await
    }
    async fn delete_webhook(&self, id: WebhookId) -> StoreResult<bool> {
        self.delete_webhook_impl(id).await
    }
    async fn set_webhook_enabled(&self, id: WebhookId, enabled: bool) -> StoreResult<bool> {
        self.set_webhook_enabled_impl(id, enabled).await
    }
    async fn queue_webhook_ping(&self, id: WebhookId, now: OffsetDateTime) -> StoreResult<Option<WebhookPing>> {
        self.queue_webhook_ping_impl(id, now).await
    }
    async fn next_webhook_ping(&self, id: WebhookId) -> StoreResult<Option<WebhookPing>> {
        self.next_webhook_ping_impl(id).await
    }
    async fn advance_webhook_cursor(&self, id: WebhookId, seq: i64) -> StoreResult<()> {
        self.advance_webhook_cursor_impl(id, seq).await
    }
    async fn record_webhook_attempt(&self, a: &WebhookAttempt) -> StoreResult<()> {
        self.record_webhook_attempt_impl(a).await
    }
    async fn webhook_deliveries(
        &self,
        id: WebhookId,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        self.webhook_deliveries_impl(id, before_id, limit).await
    }
    async fn prune_webhook_deliveries(&self, older_than: OffsetDateTime, keep_per_webhook: u32) -> StoreResult<u64> {
        self.prune_webhook_deliveries_impl(older_than, keep_per_webhook).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a fresh file: the writer thread and the hot read open the file by path.
    async fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn conformance_story() {
        let (_dir, store) = temp_store().await;
        steward_core::conformance::run(&store).await;
    }

    #[tokio::test]
    async fn conformance_console_and_groups() {
        let (_dir, store) = temp_store().await;
        steward_core::conformance::console_and_groups(&store).await;
    }

    #[tokio::test]
    async fn conformance_command_queue() {
        let (_dir, store) = temp_store().await;
        steward_core::conformance::command_queue(&store).await;
    }

    #[tokio::test]
    async fn conformance_facts_and_renewal() {
        let (_dir, store) = temp_store().await;
        steward_core::conformance::facts_and_renewal(&store).await;
    }

    #[tokio::test]
    async fn raw_messages_are_bounded_and_keep_the_newest() {
        let (_dir, store) = temp_store().await;
        steward_core::conformance::run(&store).await;
        let e = store.list_enrollments().await.unwrap().remove(0);
        let t0 = OffsetDateTime::now_utc();
        let kept = management::DEVICE_MESSAGES_KEPT as usize;
        let mut counts = Vec::new();
        for i in 0..5 * kept {
            let commit = SessionCommit {
                raw_message: Some(format!("message {i}")),
                ..SessionCommit::default()
            };
            store
                .commit_session_message(e.id, &commit, t0 + time::Duration::seconds(i as i64))
                .await
                .unwrap();
            let messages = store.device_messages(e.id).await.unwrap();
            assert_eq!(messages.last().unwrap().1, format!("message {i}"), "the newest is kept");
            let bodies: Vec<&str> = messages.iter().map(|(_, b)| b.as_str()).collect();
            let expected: Vec<String> = (i + 1 - messages.len()..=i).map(|j| format!("message {j}")).collect();
            assert_eq!(bodies, expected, "the newest ones, oldest first");
            counts.push(messages.len());
        }
        assert!(
            counts.iter().skip(kept).all(|n| (kept..2 * kept).contains(n)),
            "{counts:?}"
        );
        assert_eq!(counts.iter().max(), Some(&(2 * kept - 1)), "{counts:?}");
    }

    #[tokio::test]
    async fn a_large_enqueue_commits_in_batches_and_reports_a_partial_failure() {
        let (_dir, store) = temp_store().await;
        steward_core::conformance::run(&store).await;
        let e = store.list_enrollments().await.unwrap().remove(0);
        let t0 = OffsetDateTime::now_utc();
        let cmd = |i: usize| NewCommand {
            id: CommandId::new(),
            enrollment_id: e.id,
            payload: CommandPayload::single(
                Verb::Get,
                CommandItem {
                    target: format!("./Vendor/Bench/{i}"),
                    format: None,
                    type_: None,
                    data: None,
                },
            ),
            priority: 0,
            origin: "fan-out".into(),
            created_at: t0,
            expires_at: None,
        };
        let before = store.commands_for_enrollment(e.id).await.unwrap().len();
        let batch = writes::ENQUEUE_BATCH;
        let all: Vec<NewCommand> = (0..2 * batch + 3).map(cmd).collect();
        store.enqueue_commands(&all).await.unwrap();
        let queued = store.commands_for_enrollment(e.id).await.unwrap();
        assert_eq!(queued.len(), before + all.len());
        let ids: Vec<CommandId> = queued[before..].iter().map(|c| c.id).collect();
        let expected: Vec<CommandId> = all.iter().map(|c| c.id).collect();
        assert_eq!(ids, expected, "queue order is the call's order across batches");

        // The third batch repeats an id: the first two batches stay, the third is rolled back whole.
        let mut again: Vec<NewCommand> = (0..2 * batch + 3).map(cmd).collect();
        again[2 * batch + 1].id = all[0].id;
        let err = store.enqueue_commands(&again).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("the first {} commands were queued", 2 * batch)),
            "{err}"
        );
        let queued = store.commands_for_enrollment(e.id).await.unwrap();
        assert_eq!(queued.len(), before + all.len() + 2 * batch);
    }

    #[tokio::test]
    async fn a_panicking_write_job_fails_alone_and_the_writer_goes_on() {
        let (_dir, store) = temp_store().await;
        let insert = |tx: &rusqlite::Transaction<'_>, name: &str| {
            tx.execute(
                "INSERT INTO groups (id, name, created_at) VALUES (?1, ?2, 0)",
                rusqlite::params![GroupId::new().to_string(), name],
            )
            .map_err(writes::db)
        };
        let failed = store
            .writer
            .run(move |conn| -> StoreResult<()> {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(writes::db)?;
                insert(&tx, "half-written")?;
                panic!("a bug in a write job");
            })
            .await;
        assert!(failed.is_err());
        store
            .writer
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(writes::db)?;
                insert(&tx, "kept")?;
                tx.commit().map_err(writes::db)
            })
            .await
            .expect("the writer goes on after a panicked job");
        let names: Vec<String> = store.list_groups().await.unwrap().into_iter().map(|g| g.name).collect();
        assert!(names.contains(&"kept".to_owned()), "{names:?}");
        assert!(!names.contains(&"half-written".to_owned()), "rolled back: {names:?}");
    }

    #[tokio::test]
    async fn conformance_story_on_disk_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).await.unwrap();
        steward_core::conformance::run(&store).await;
        drop(store);
        // Migrations are not re-applied; data survives.
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.list_enrollments().await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn certificate_log_is_append_only() {
        let (_dir, store) = temp_store().await;
        steward_core::conformance::run(&store).await;
        let upd = sqlx::query("UPDATE certificate_log SET event = 'issued'")
            .execute(&store.write)
            .await;
        assert!(upd.unwrap_err().to_string().contains("append-only"));
        let del = sqlx::query("DELETE FROM certificate_log").execute(&store.write).await;
        assert!(del.unwrap_err().to_string().contains("append-only"));
    }

    #[tokio::test]
    async fn audit_log_is_append_only_and_verify_finds_an_edited_row() {
        let (_dir, store) = temp_store().await;
        steward_core::conformance::run(&store).await;
        let upd = sqlx::query("UPDATE audit_events SET actor = 'mallory'")
            .execute(&store.write)
            .await;
        assert!(upd.unwrap_err().to_string().contains("append-only"));
        let del = sqlx::query("DELETE FROM audit_events").execute(&store.write).await;
        assert!(del.unwrap_err().to_string().contains("append-only"));

        // Someone with raw access to the file drops the trigger and edits a row: the chain breaks
        // at exactly that row.
        sqlx::query("DROP TRIGGER audit_events_no_update")
            .execute(&store.write)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_events SET target = 'someone-else' WHERE seq = 2")
            .execute(&store.write)
            .await
            .unwrap();
        let broken = steward_core::verify_audit_log(&store).await.unwrap().unwrap_err();
        assert_eq!(broken.seq, 2, "{broken}");
    }

    #[tokio::test]
    async fn refuses_a_database_from_a_newer_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).await.unwrap();
        sqlx::query("INSERT INTO _steward_migrations (version, name, applied_at) VALUES (999, 'future', 0)")
            .execute(&store.write)
            .await
            .unwrap();
        drop(store);
        let err = SqliteStore::open(&path).await.unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
    }
}
