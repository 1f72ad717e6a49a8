//! [`UserStore`]: users, their console access (a role and an optional group on the `users` row)
//! and their TOTP second factor.

use async_trait::async_trait;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::from_sqlx;
use crate::rows::{console_user_from_row, user_from_row};
use crate::{SqliteStore, micros};

impl SqliteStore {
    /// Inserts a user, with a console role or without; Conflict if the e-mail exists.
    async fn insert_user(&self, u: &User, role: Option<Role>, group: Option<GroupId>) -> StoreResult<()> {
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
        .bind(role.map(Role::as_str))
        .bind(group.map(|g| g.to_string()))
        .execute(&mut *tx)
        .await;
        match res {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("user {}", u.email)));
            }
            other => {
                other.map_err(from_sqlx)?;
            }
        }
        tx.commit().await.map_err(from_sqlx)
    }

    /// The row of one user found by a query with one parameter.
    async fn user_row(&self, sql: &'static str, param: String) -> StoreResult<Option<sqlx::sqlite::SqliteRow>> {
        sqlx::query(sql)
            .bind(param)
            .fetch_optional(&self.read)
            .await
            .map_err(from_sqlx)
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, u: &User) -> StoreResult<()> {
        self.insert_user(u, None, None).await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        self.user_row("SELECT * FROM users WHERE email = ?", email.trim().to_lowercase())
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        self.user_row("SELECT * FROM users WHERE id = ?", id.to_string())
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        sqlx::query("SELECT * FROM users ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn set_user_disabled(&self, user: UserId, disabled: bool) -> StoreResult<bool> {
        let n = self
            .write_one("UPDATE users SET disabled = ? WHERE id = ?", |q| {
                q.bind(i64::from(disabled)).bind(user.to_string())
            })
            .await?;
        Ok(n > 0)
    }

    async fn create_console_user(&self, u: &User, role: Role, group: Option<GroupId>) -> StoreResult<()> {
        self.insert_user(u, Some(role), group).await
    }

    async fn console_user_by_email(&self, email: &str) -> StoreResult<Option<ConsoleUser>> {
        match self
            .user_row("SELECT * FROM users WHERE email = ?", email.trim().to_lowercase())
            .await?
        {
            Some(r) => console_user_from_row(&r),
            None => Ok(None),
        }
    }

    async fn console_user(&self, id: UserId) -> StoreResult<Option<ConsoleUser>> {
        match self
            .user_row("SELECT * FROM users WHERE id = ?", id.to_string())
            .await?
        {
            Some(r) => console_user_from_row(&r),
            None => Ok(None),
        }
    }

    async fn list_console_users(&self) -> StoreResult<Vec<ConsoleUser>> {
        let rows = sqlx::query("SELECT * FROM users WHERE console_role IS NOT NULL ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(u) = console_user_from_row(r)? {
                out.push(u);
            }
        }
        Ok(out)
    }

    async fn set_console_access(&self, user: UserId, role: Option<Role>, group: Option<GroupId>) -> StoreResult<bool> {
        let group = role.and(group).map(|g| g.to_string());
        let n = self
            .write_one(
                "UPDATE users SET console_role = ?, console_group_id = ? WHERE id = ?",
                |q| q.bind(role.map(Role::as_str)).bind(group).bind(user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }

    async fn set_user_totp(&self, user: UserId, sealed_secret: Option<&str>) -> StoreResult<bool> {
        let sealed = sealed_secret.map(str::to_owned);
        let n = self
            .write_one(
                "UPDATE users SET totp_secret = ?, totp_confirmed_at = NULL, totp_last_step = NULL WHERE id = ?",
                |q| q.bind(sealed).bind(user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }

    async fn confirm_user_totp(&self, user: UserId, step: i64, at: OffsetDateTime) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE users SET totp_confirmed_at = ?, totp_last_step = ? WHERE id = ? \
                 AND totp_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < ?)",
                |q| q.bind(micros(at)).bind(step).bind(user.to_string()).bind(step),
            )
            .await?;
        Ok(n > 0)
    }

    async fn use_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
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
}
