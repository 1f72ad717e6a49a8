//! [`UserStore`]: users, their console access (a role and an optional group on the `users` row)
//! and their TOTP second factor.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::{from_sqlx, unique_violation};
use crate::rows::{console_user_from_row, user_from_row};
use crate::{PgStore, micros};

impl PgStore {
    /// Inserts a user, with a console role or without; Conflict if the e-mail exists.
    async fn insert_user(&self, u: &User, role: Option<Role>, group: Option<GroupId>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, disabled, created_at, console_role, \
             console_group_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(u.id.to_string())
        .bind(u.email.to_lowercase())
        .bind(&u.display_name)
        .bind(&u.password_hash)
        .bind(u.disabled)
        .bind(micros(u.created_at))
        .bind(role.map(Role::as_str))
        .bind(group.map(|g| g.to_string()))
        .execute(&self.pool)
        .await
        .map_err(|e| match unique_violation(&e) {
            Some(_) => StoreError::Conflict(format!("user {}", u.email)),
            None => from_sqlx(e),
        })?;
        Ok(())
    }

    /// The row of one user found by a query with one parameter.
    async fn user_row(&self, sql: &'static str, param: String) -> StoreResult<Option<PgRow>> {
        sqlx::query(sql)
            .bind(param)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)
    }
}

#[async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, u: &User) -> StoreResult<()> {
        self.insert_user(u, None, None).await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        self.user_row("SELECT * FROM users WHERE email = $1", email.trim().to_lowercase())
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        self.user_row("SELECT * FROM users WHERE id = $1", id.to_string())
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        sqlx::query("SELECT * FROM users ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn set_user_disabled(&self, user: UserId, disabled: bool) -> StoreResult<bool> {
        let n = self
            .write_one("UPDATE users SET disabled = $1 WHERE id = $2", |q| {
                q.bind(disabled).bind(user.to_string())
            })
            .await?;
        Ok(n > 0)
    }

    async fn create_console_user(&self, u: &User, role: Role, group: Option<GroupId>) -> StoreResult<()> {
        self.insert_user(u, Some(role), group).await
    }

    async fn console_user_by_email(&self, email: &str) -> StoreResult<Option<ConsoleUser>> {
        match self
            .user_row("SELECT * FROM users WHERE email = $1", email.trim().to_lowercase())
            .await?
        {
            Some(r) => console_user_from_row(&r),
            None => Ok(None),
        }
    }

    async fn console_user(&self, id: UserId) -> StoreResult<Option<ConsoleUser>> {
        match self
            .user_row("SELECT * FROM users WHERE id = $1", id.to_string())
            .await?
        {
            Some(r) => console_user_from_row(&r),
            None => Ok(None),
        }
    }

    async fn list_console_users(&self) -> StoreResult<Vec<ConsoleUser>> {
        let rows = sqlx::query("SELECT * FROM users WHERE console_role IS NOT NULL ORDER BY created_at, id")
            .fetch_all(&self.pool)
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
                "UPDATE users SET console_role = $1, console_group_id = $2 WHERE id = $3",
                |q| q.bind(role.map(Role::as_str)).bind(group).bind(user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }

    async fn set_user_totp(&self, user: UserId, sealed_secret: Option<&str>) -> StoreResult<bool> {
        let sealed = sealed_secret.map(str::to_owned);
        let n = self
            .write_one(
                "UPDATE users SET totp_secret = $1, totp_confirmed_at = NULL, totp_last_step = NULL WHERE id = $2",
                |q| q.bind(sealed).bind(user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }

    async fn confirm_user_totp(&self, user: UserId, step: i64, at: OffsetDateTime) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE users SET totp_confirmed_at = $1, totp_last_step = $2 WHERE id = $3 \
                 AND totp_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < $2)",
                |q| q.bind(micros(at)).bind(step).bind(user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }

    async fn use_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
        // The condition and the write are one statement: of two sign-ins with the same code (on any
        // replica), the second waits for the first's row lock, re-checks the condition on the row
        // the first wrote and finds the step used.
        let n = self
            .write_one(
                "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_confirmed_at IS NOT NULL \
                 AND (totp_last_step IS NULL OR totp_last_step < $1)",
                |q| q.bind(step).bind(user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }
}
