//! [`UserStore`]: users, their console access (a role and an optional group on the `users` row)
//! and their TOTP second factor.

use async_trait::async_trait;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::{from_rusqlite, is_unique_violation};
use crate::rows::{console_user_from_row, user_from_row};
use crate::{SqliteStore, micros};

impl SqliteStore {
    /// Inserts a user, with a console role or without; Conflict if the e-mail exists.
    async fn insert_user(&self, u: &User, role: Option<Role>, group: Option<GroupId>) -> StoreResult<()> {
        let u = u.clone();
        self.write(move |tx| {
            let res = tx
                .prepare_cached(
                    "INSERT INTO users (id, email, display_name, password_hash, disabled, created_at, console_role, \
                     console_group_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .and_then(|mut s| {
                    s.execute((
                        u.id.to_string(),
                        u.email.to_lowercase(),
                        &u.display_name,
                        &u.password_hash,
                        i64::from(u.disabled),
                        micros(u.created_at),
                        role.map(Role::as_str),
                        group.map(|g| g.to_string()),
                    ))
                });
            match res {
                Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!("user {}", u.email))),
                other => other.map(drop).map_err(from_rusqlite),
            }
        })
        .await
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, u: &User) -> StoreResult<()> {
        self.insert_user(u, None, None).await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        self.read_opt(
            "SELECT * FROM users WHERE email = ?1",
            (email.trim().to_lowercase(),),
            user_from_row,
        )
        .await
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        self.read_opt("SELECT * FROM users WHERE id = ?1", (id.to_string(),), user_from_row)
            .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.read_all("SELECT * FROM users ORDER BY created_at, id", (), user_from_row)
            .await
    }

    async fn set_user_disabled(&self, user: UserId, disabled: bool) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE users SET disabled = ?1 WHERE id = ?2",
                (i64::from(disabled), user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }

    async fn create_console_user(&self, u: &User, role: Role, group: Option<GroupId>) -> StoreResult<()> {
        self.insert_user(u, Some(role), group).await
    }

    async fn console_user_by_email(&self, email: &str) -> StoreResult<Option<ConsoleUser>> {
        self.read_opt(
            "SELECT * FROM users WHERE email = ?1",
            (email.trim().to_lowercase(),),
            console_user_from_row,
        )
        .await
        .map(Option::flatten)
    }

    async fn console_user(&self, id: UserId) -> StoreResult<Option<ConsoleUser>> {
        self.read_opt(
            "SELECT * FROM users WHERE id = ?1",
            (id.to_string(),),
            console_user_from_row,
        )
        .await
        .map(Option::flatten)
    }

    async fn list_console_users(&self) -> StoreResult<Vec<ConsoleUser>> {
        let users = self
            .read_all(
                "SELECT * FROM users WHERE console_role IS NOT NULL ORDER BY created_at, id",
                (),
                console_user_from_row,
            )
            .await?;
        Ok(users.into_iter().flatten().collect())
    }

    async fn set_console_access(&self, user: UserId, role: Option<Role>, group: Option<GroupId>) -> StoreResult<bool> {
        let group = role.and(group).map(|g| g.to_string());
        let n = self
            .write_one(
                "UPDATE users SET console_role = ?, console_group_id = ? WHERE id = ?",
                (role.map(Role::as_str), group, user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }

    async fn set_user_totp(&self, user: UserId, sealed_secret: Option<&str>) -> StoreResult<bool> {
        let sealed = sealed_secret.map(str::to_owned);
        let n = self
            .write_one(
                "UPDATE users SET totp_secret = ?, totp_confirmed_at = NULL, totp_last_step = NULL WHERE id = ?",
                (sealed, user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }

    async fn confirm_user_totp(&self, user: UserId, step: i64, at: OffsetDateTime) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE users SET totp_confirmed_at = ?1, totp_last_step = ?2 WHERE id = ?3 \
                 AND totp_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < ?2)",
                (micros(at), step, user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }

    async fn use_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
        // The condition and the write are one statement: two sign-ins with the same code serialise
        // on the write lock and the second finds the step used.
        let n = self
            .write_one(
                "UPDATE users SET totp_last_step = ?1 WHERE id = ?2 AND totp_confirmed_at IS NOT NULL \
                 AND (totp_last_step IS NULL OR totp_last_step < ?1)",
                (step, user.to_string()),
            )
            .await?;
        Ok(n > 0)
    }
}
