//! SQLite implementation of the web console's part of the store: console users (a role on the
//! `users` row), sessions, and the dashboard aggregates.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use steward_core::*;
use time::OffsetDateTime;

use crate::{SqliteStore, backend, from_micros, micros, parse_id, user_from_row};

fn console_user_from_row(r: &SqliteRow) -> StoreResult<Option<ConsoleUser>> {
    let Some(role) = r.get::<Option<String>, _>("console_role") else {
        return Ok(None);
    };
    let role = Role::parse(&role).ok_or_else(|| StoreError::Backend("bad console_role in users".into()))?;
    let totp = match r.get::<Option<String>, _>("totp_secret") {
        Some(sealed_secret) => Some(UserTotp {
            sealed_secret,
            confirmed_at: r
                .get::<Option<i64>, _>("totp_confirmed_at")
                .map(from_micros)
                .transpose()?,
            last_step: r.get("totp_last_step"),
        }),
        None => None,
    };
    Ok(Some(ConsoleUser {
        user: user_from_row(r)?,
        role,
        group: r
            .get::<Option<String>, _>("console_group_id")
            .map(|g| parse_id(&g))
            .transpose()?,
        totp,
    }))
}

impl SqliteStore {
    pub(crate) async fn create_console_user_impl(
        &self,
        u: &User,
        role: Role,
        group: Option<GroupId>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let res = sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, disabled, created_at, console_role, \
             console_group_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(u.id.to_string())
        .bind(u.email.to_lowercase())
        .bind(&u.display_name)
        .bind(&u.password_hash)
        .bind(i64::from(u.disabled))
        .bind(micros(u.created_at))
        .bind(role.as_str())
        .bind(group.map(|g| g.to_string()))
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

    pub(crate) async fn console_user_by_email_impl(&self, email: &str) -> StoreResult<Option<ConsoleUser>> {
        let row = sqlx::query("SELECT * FROM users WHERE email = ?")
            .bind(email.trim().to_lowercase())
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?;
        match row {
            Some(r) => console_user_from_row(&r),
            None => Ok(None),
        }
    }

    pub(crate) async fn console_user_impl(&self, id: UserId) -> StoreResult<Option<ConsoleUser>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?;
        match row {
            Some(r) => console_user_from_row(&r),
            None => Ok(None),
        }
    }

    pub(crate) async fn list_console_users_impl(&self) -> StoreResult<Vec<ConsoleUser>> {
        let rows = sqlx::query("SELECT * FROM users WHERE console_role IS NOT NULL ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await
            .map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(u) = console_user_from_row(r)? {
                out.push(u);
            }
        }
        Ok(out)
    }

    pub(crate) async fn set_user_disabled_impl(&self, user: UserId, disabled: bool) -> StoreResult<bool> {
        let n = self
            .write_one("UPDATE users SET disabled = ? WHERE id = ?", |q| {
                q.bind(i64::from(disabled)).bind(user.to_string())
            })
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn set_console_access_impl(
        &self,
        user: UserId,
        role: Option<Role>,
        group: Option<GroupId>,
    ) -> StoreResult<bool> {
        let group = role.and(group).map(|g| g.to_string());
        let n = self
            .write_one(
                "UPDATE users SET console_role = ?, console_group_id = ? WHERE id = ?",
                |q| q.bind(role.map(Role::as_str)).bind(group).bind(user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn set_user_totp_impl(&self, user: UserId, sealed: Option<&str>) -> StoreResult<bool> {
        let sealed = sealed.map(str::to_owned);
        let n = self
            .write_one(
                "UPDATE users SET totp_secret = ?, totp_confirmed_at = NULL, totp_last_step = NULL WHERE id = ?",
                |q| q.bind(sealed).bind(user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn confirm_user_totp_impl(
        &self,
        user: UserId,
        step: i64,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE users SET totp_confirmed_at = ?, totp_last_step = ? WHERE id = ? \
                 AND totp_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < ?)",
                |q| q.bind(micros(at)).bind(step).bind(user.to_string()).bind(step),
            )
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn use_totp_step_impl(&self, user: UserId, step: i64) -> StoreResult<bool> {
        // The condition and the write are one statement: two sign-ins with the same code serialise
        // on the write lock and the second finds the step used.
        let n = self
            .write_one(
                "UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_confirmed_at IS NOT NULL \
                 AND (totp_last_step IS NULL OR totp_last_step < ?)",
                |q| q.bind(step).bind(user.to_string()).bind(step),
            )
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn delete_console_sessions_of_impl(&self, user: UserId) -> StoreResult<u64> {
        self.write_one("DELETE FROM console_sessions WHERE user_id = ?", |q| {
            q.bind(user.to_string())
        })
        .await
    }

    pub(crate) async fn daily_activity_impl(
        &self,
        since: OffsetDateTime,
        until: Option<OffsetDateTime>,
    ) -> StoreResult<Vec<DailyActivity>> {
        const DAY_MICROS: i64 = 86_400_000_000;
        let since = micros(utc_midnight(since));
        let until = until.map_or(i64::MAX, |u| micros(utc_midnight(u)));
        // Integer division of microseconds since the epoch gives the UTC day (no time zones in SQL).
        let rows = sqlx::query(
            "SELECT at / ?1 AS day, kind, COUNT(*) AS n, \
             COALESCE(SUM(kind = 'enrolled' AND json_extract(data, '$.replaced') = 1), 0) AS replaced \
             FROM device_events WHERE at >= ?2 AND at < ?3 \
             AND kind IN ('enrolled', 'unenrolled', 'wiped', 'command_acknowledged', 'command_failed') \
             GROUP BY day, kind ORDER BY day",
        )
        .bind(DAY_MICROS)
        .bind(since)
        .bind(until)
        .fetch_all(&self.read)
        .await
        .map_err(backend)?;
        let mut out: Vec<DailyActivity> = Vec::new();
        for r in &rows {
            let day = from_micros(r.get::<i64, _>("day") * DAY_MICROS)?;
            if out.last().is_none_or(|d| d.day != day) {
                out.push(DailyActivity {
                    day,
                    ..Default::default()
                });
            }
            let Some(d) = out.last_mut() else { continue };
            let n = r.get::<i64, _>("n") as u64;
            match r.get::<String, _>("kind").as_str() {
                "enrolled" => {
                    let replaced = r.get::<i64, _>("replaced") as u64;
                    d.reenrolled += replaced;
                    d.enrolled += n - replaced.min(n);
                }
                "unenrolled" | "wiped" => d.removed += n,
                "command_acknowledged" => d.commands_acknowledged += n,
                "command_failed" => d.commands_failed += n,
                _ => {}
            }
        }
        Ok(out)
    }

    pub(crate) async fn create_console_session_impl(&self, s: &ConsoleSession) -> StoreResult<()> {
        self.write_one(
            "INSERT INTO console_sessions (id_hash, user_id, created_at, last_seen_at, expires_at, source_ip, \
             second_factor_pending) VALUES (?, ?, ?, ?, ?, ?, ?)",
            |q| {
                q.bind(s.id_hash.to_hex())
                    .bind(s.user_id.to_string())
                    .bind(micros(s.created_at))
                    .bind(micros(s.last_seen_at))
                    .bind(micros(s.expires_at))
                    .bind(s.source_ip.clone())
                    .bind(i64::from(s.second_factor_pending))
            },
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn console_session_impl(
        &self,
        id_hash: &TokenHash,
    ) -> StoreResult<Option<(ConsoleSession, ConsoleUser)>> {
        let row = sqlx::query(
            "SELECT u.*, s.id_hash AS s_id_hash, s.created_at AS s_created_at, s.last_seen_at AS s_last_seen_at, \
             s.expires_at AS s_expires_at, s.source_ip AS s_source_ip, \
             s.second_factor_pending AS s_pending \
             FROM console_sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?",
        )
        .bind(id_hash.to_hex())
        .fetch_optional(&self.read)
        .await
        .map_err(backend)?;
        let Some(r) = row else { return Ok(None) };
        let Some(user) = console_user_from_row(&r)? else {
            // The user lost console access: the session is dead.
            return Ok(None);
        };
        let session = ConsoleSession {
            id_hash: *id_hash,
            user_id: parse_id(&r.get::<String, _>("id"))?,
            created_at: from_micros(r.get("s_created_at"))?,
            last_seen_at: from_micros(r.get("s_last_seen_at"))?,
            expires_at: from_micros(r.get("s_expires_at"))?,
            source_ip: r.get("s_source_ip"),
            second_factor_pending: r.get::<i64, _>("s_pending") != 0,
        };
        Ok(Some((session, user)))
    }

    pub(crate) async fn touch_console_session_impl(&self, id_hash: &TokenHash, now: OffsetDateTime) -> StoreResult<()> {
        self.write_one("UPDATE console_sessions SET last_seen_at = ? WHERE id_hash = ?", |q| {
            q.bind(micros(now)).bind(id_hash.to_hex())
        })
        .await?;
        Ok(())
    }

    pub(crate) async fn delete_console_session_impl(
        &self,
        id_hash: &TokenHash,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM console_sessions WHERE id_hash = ?")
            .bind(id_hash.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        // Housekeeping rides along with logouts: sessions past their absolute expiry are useless.
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < ?")
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(n > 0)
    }

    pub(crate) async fn device_stats_impl(&self, now: OffsetDateTime) -> StoreResult<DeviceStats> {
        let by_state = sqlx::query("SELECT state, COUNT(*) AS n FROM enrollments GROUP BY state ORDER BY state")
            .fetch_all(&self.read)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| (r.get::<String, _>("state"), r.get::<i64, _>("n") as u64))
            .collect();
        let hour = micros(now - time::Duration::hours(1));
        let day = micros(now - time::Duration::days(1));
        let f = sqlx::query(
            "SELECT \
             COALESCE(SUM(last_seen_at >= ?), 0) AS h, \
             COALESCE(SUM(last_seen_at < ? AND last_seen_at >= ?), 0) AS d, \
             COALESCE(SUM(last_seen_at < ?), 0) AS o, \
             COALESCE(SUM(last_seen_at IS NULL), 0) AS never, \
             (SELECT COUNT(*) FROM commands WHERE state IN ('pending', 'sent')) AS open_commands \
             FROM enrollments WHERE state = 'active'",
        )
        .bind(hour)
        .bind(hour)
        .bind(day)
        .bind(day)
        .fetch_one(&self.read)
        .await
        .map_err(backend)?;
        let os_versions = sqlx::query(
            "SELECT COALESCE(os_version, 'unknown') AS v, COUNT(*) AS n FROM enrollments \
             WHERE state = 'active' GROUP BY v ORDER BY n DESC, v LIMIT 20",
        )
        .fetch_all(&self.read)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| (r.get::<String, _>("v"), r.get::<i64, _>("n") as u64))
        .collect();
        let n = |c: &str| f.get::<i64, _>(c) as u64;
        Ok(DeviceStats {
            by_state,
            seen_last_hour: n("h"),
            seen_last_day: n("d"),
            seen_older: n("o"),
            never_seen: n("never"),
            os_versions,
            open_commands: n("open_commands"),
        })
    }
}
