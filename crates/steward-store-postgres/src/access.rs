//! [`AccessStore`]: the admin surfaces' credentials: named API tokens, bootstrap admin tokens and
//! console sessions.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::{from_sqlx, unique_violation};
use crate::rows::{Col, console_user_from_row};
use crate::{LOCK_BOOTSTRAP, PgStore, bad, from_micros, lock, micros, opt_micros, opt_parse, parse_id};

fn api_token_from_row(r: &PgRow) -> StoreResult<ApiToken> {
    Ok(ApiToken {
        id: parse_id(r.col("id")?)?,
        name: r.col("name")?,
        token_hash: TokenHash::from_hex(r.col("token_hash")?).ok_or_else(|| bad("api token hash"))?,
        role: Role::parse(r.col("role")?).ok_or_else(|| bad("api token role"))?,
        group_id: opt_parse(r.col("group_id")?)?,
        created_at: from_micros(r.col("created_at")?)?,
        expires_at: opt_micros(r.col("expires_at")?)?,
        last_used_at: opt_micros(r.col("last_used_at")?)?,
        revoked_at: opt_micros(r.col("revoked_at")?)?,
        created_by: r.col("created_by")?,
    })
}

fn bootstrap_token_from_row(r: &PgRow) -> StoreResult<BootstrapToken> {
    let id: Option<&str> = r.col("id")?;
    Ok(BootstrapToken {
        id: parse_id(id.ok_or_else(|| bad("bootstrap token id"))?)?,
        name: r.col("name")?,
        token_hash: TokenHash::from_hex(r.col("token_hash")?).ok_or_else(|| bad("bootstrap token hash"))?,
        created_at: from_micros(r.col("created_at")?)?,
        last_used_at: opt_micros(r.col("last_used_at")?)?,
        revoked_at: opt_micros(r.col("revoked_at")?)?,
    })
}

#[async_trait]
impl AccessStore for PgStore {
    async fn create_api_token(&self, t: &NewApiToken) -> StoreResult<ApiToken> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, token_hash, role, group_id, created_at, expires_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(t.id.to_string())
        .bind(&t.name)
        .bind(t.token_hash.to_hex())
        .bind(t.role.as_str())
        .bind(t.group_id.map(|g| g.to_string()))
        .bind(micros(t.created_at))
        .bind(t.expires_at.map(micros))
        .bind(&t.created_by)
        .execute(&self.pool)
        .await
        .map_err(|e| match unique_violation(&e) {
            Some(_) => StoreError::Conflict("api token".into()),
            None => from_sqlx(e),
        })?;
        Ok(ApiToken {
            id: t.id,
            name: t.name.clone(),
            token_hash: t.token_hash,
            role: t.role,
            group_id: t.group_id,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: None,
            revoked_at: None,
            created_by: t.created_by.clone(),
        })
    }

    async fn api_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<ApiToken>> {
        sqlx::query("SELECT * FROM api_tokens WHERE token_hash = $1")
            .bind(hash.to_hex())
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(api_token_from_row)
            .transpose()
    }

    async fn list_api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        sqlx::query("SELECT * FROM api_tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(api_token_from_row)
            .collect()
    }

    async fn revoke_api_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                |q| q.bind(micros(now)).bind(id.to_string()),
            )
            .await?;
        Ok(n == 1)
    }

    async fn touch_api_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<()> {
        self.write_one("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2", |q| {
            q.bind(micros(now)).bind(id.to_string())
        })
        .await?;
        Ok(())
    }

    async fn install_bootstrap_token(&self, t: &NewBootstrapToken) -> StoreResult<BootstrapInstall> {
        // Replicas starting together with different admin_token values take turns: the last to
        // install wins, and at most one token is active whatever the interleaving.
        let mut tx = self.begin().await?;
        lock(&mut tx, LOCK_BOOTSTRAP).await?;
        sqlx::query(
            "INSERT INTO admin_tokens (id, token_hash, name, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(t.id.to_string())
        .bind(t.token_hash.to_hex())
        .bind(&t.name)
        .bind(micros(t.created_at))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let revoked_others =
            sqlx::query("UPDATE admin_tokens SET revoked_at = $1 WHERE token_hash <> $2 AND revoked_at IS NULL")
                .bind(micros(t.created_at))
                .bind(t.token_hash.to_hex())
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?
                .rows_affected();
        let row = sqlx::query("SELECT * FROM admin_tokens WHERE token_hash = $1")
            .bind(t.token_hash.to_hex())
            .fetch_one(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let token = bootstrap_token_from_row(&row)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(BootstrapInstall { token, revoked_others })
    }

    async fn bootstrap_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<BootstrapToken>> {
        sqlx::query("SELECT * FROM admin_tokens WHERE token_hash = $1")
            .bind(hash.to_hex())
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(bootstrap_token_from_row)
            .transpose()
    }

    async fn list_bootstrap_tokens(&self) -> StoreResult<Vec<BootstrapToken>> {
        sqlx::query("SELECT * FROM admin_tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(bootstrap_token_from_row)
            .collect()
    }

    async fn revoke_bootstrap_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                |q| q.bind(micros(now)).bind(id.to_string()),
            )
            .await?;
        Ok(n == 1)
    }

    async fn touch_bootstrap_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<()> {
        self.write_one("UPDATE admin_tokens SET last_used_at = $1 WHERE id = $2", |q| {
            q.bind(micros(now)).bind(id.to_string())
        })
        .await?;
        Ok(())
    }

    async fn count_admin_tokens(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_tokens")
            .fetch_one(&self.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(n as u64)
    }

    async fn create_console_session(&self, s: &ConsoleSession) -> StoreResult<()> {
        self.write_one(
            "INSERT INTO console_sessions (id_hash, user_id, created_at, last_seen_at, expires_at, source_ip, \
             second_factor_pending) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            |q| {
                q.bind(s.id_hash.to_hex())
                    .bind(s.user_id.to_string())
                    .bind(micros(s.created_at))
                    .bind(micros(s.last_seen_at))
                    .bind(micros(s.expires_at))
                    .bind(s.source_ip.clone())
                    .bind(s.second_factor_pending)
            },
        )
        .await?;
        Ok(())
    }

    async fn console_session(&self, id_hash: &TokenHash) -> StoreResult<Option<(ConsoleSession, ConsoleUser)>> {
        let row = sqlx::query(
            "SELECT u.*, s.created_at AS s_created_at, s.last_seen_at AS s_last_seen_at, \
             s.expires_at AS s_expires_at, s.source_ip AS s_source_ip, \
             s.second_factor_pending AS s_pending \
             FROM console_sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1",
        )
        .bind(id_hash.to_hex())
        .fetch_optional(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let Some(r) = row else { return Ok(None) };
        let Some(user) = console_user_from_row(&r)? else {
            // The user lost console access: the session is dead.
            return Ok(None);
        };
        let session = ConsoleSession {
            id_hash: *id_hash,
            user_id: parse_id(r.col("id")?)?,
            created_at: from_micros(r.col("s_created_at")?)?,
            last_seen_at: from_micros(r.col("s_last_seen_at")?)?,
            expires_at: from_micros(r.col("s_expires_at")?)?,
            source_ip: r.col("s_source_ip")?,
            second_factor_pending: r.col("s_pending")?,
        };
        Ok(Some((session, user)))
    }

    async fn touch_console_session(&self, id_hash: &TokenHash, now: OffsetDateTime) -> StoreResult<()> {
        self.write_one(
            "UPDATE console_sessions SET last_seen_at = $1 WHERE id_hash = $2",
            |q| q.bind(micros(now)).bind(id_hash.to_hex()),
        )
        .await?;
        Ok(())
    }

    async fn delete_console_session(&self, id_hash: &TokenHash, now: OffsetDateTime) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
        // Housekeeping rides along with logouts: sessions past their absolute expiry are useless.
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < $1")
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(n > 0)
    }

    async fn delete_console_sessions_of(&self, user: UserId) -> StoreResult<u64> {
        self.write_one("DELETE FROM console_sessions WHERE user_id = $1", |q| {
            q.bind(user.to_string())
        })
        .await
    }
}
