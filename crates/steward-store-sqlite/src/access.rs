//! [`AccessStore`]: the admin surfaces' credentials: named API tokens, bootstrap admin tokens and
//! console sessions.

use async_trait::async_trait;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::{from_rusqlite, is_unique_violation};
use crate::rows::{NamedRow, console_user_from_row, exec, one};
use crate::{SqliteStore, bad, from_micros, micros, opt_micros, opt_parse, parse_id};

fn api_token_from_row(r: &NamedRow<'_>) -> StoreResult<ApiToken> {
    Ok(ApiToken {
        id: parse_id(&r.text("id")?)?,
        name: r.text("name")?,
        token_hash: TokenHash::from_hex(&r.text("token_hash")?).ok_or_else(|| bad("api token hash"))?,
        role: Role::parse(&r.text("role")?).ok_or_else(|| bad("api token role"))?,
        group_id: opt_parse(r.opt_text("group_id")?)?,
        created_at: from_micros(r.int("created_at")?)?,
        expires_at: opt_micros(r.opt_int("expires_at")?)?,
        last_used_at: opt_micros(r.opt_int("last_used_at")?)?,
        revoked_at: opt_micros(r.opt_int("revoked_at")?)?,
        created_by: r.get("created_by")?,
    })
}

fn bootstrap_token_from_row(r: &NamedRow<'_>) -> StoreResult<BootstrapToken> {
    let id: Option<String> = r.opt_text("id")?;
    Ok(BootstrapToken {
        id: parse_id(&id.ok_or_else(|| bad("bootstrap token id"))?)?,
        name: r.get("name")?,
        token_hash: TokenHash::from_hex(&r.text("token_hash")?).ok_or_else(|| bad("bootstrap token hash"))?,
        created_at: from_micros(r.int("created_at")?)?,
        last_used_at: opt_micros(r.opt_int("last_used_at")?)?,
        revoked_at: opt_micros(r.opt_int("revoked_at")?)?,
    })
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn create_api_token(&self, t: &NewApiToken) -> StoreResult<ApiToken> {
        let t = t.clone();
        self.write(move |tx| {
            let res = tx
                .prepare_cached(
                    "INSERT INTO api_tokens (id, name, token_hash, role, group_id, created_at, expires_at, created_by) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .and_then(|mut s| {
                    s.execute((
                        t.id.to_string(),
                        &t.name,
                        t.token_hash.to_hex(),
                        t.role.as_str(),
                        t.group_id.map(|g| g.to_string()),
                        micros(t.created_at),
                        t.expires_at.map(micros),
                        &t.created_by,
                    ))
                });
            match res {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict("api token".into())),
                other => other.map_err(from_rusqlite)?,
            };
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
        })
        .await
    }

    async fn api_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<ApiToken>> {
        self.read_opt(
            "SELECT * FROM api_tokens WHERE token_hash = ?1",
            (hash.to_hex(),),
            api_token_from_row,
        )
        .await
    }

    async fn list_api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        self.read_all(
            "SELECT * FROM api_tokens ORDER BY created_at, id",
            (),
            api_token_from_row,
        )
        .await
    }

    async fn revoke_api_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE api_tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                (micros(now), id.to_string()),
            )
            .await?;
        Ok(n == 1)
    }

    async fn touch_api_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<()> {
        self.write_one(
            "UPDATE api_tokens SET last_used_at = ?1 WHERE id = ?2",
            (micros(now), id.to_string()),
        )
        .await?;
        Ok(())
    }

    async fn install_bootstrap_token(&self, t: &NewBootstrapToken) -> StoreResult<BootstrapInstall> {
        let t = t.clone();
        self.write(move |tx| {
            let hash = t.token_hash.to_hex();
            exec(
                tx,
                "INSERT INTO admin_tokens (id, token_hash, name, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (token_hash) DO NOTHING",
                (t.id.to_string(), &hash, &t.name, micros(t.created_at)),
            )?;
            let revoked_others = exec(
                tx,
                "UPDATE admin_tokens SET revoked_at = ?1 WHERE token_hash <> ?2 AND revoked_at IS NULL",
                (micros(t.created_at), &hash),
            )? as u64;
            let token = one(
                tx,
                "SELECT * FROM admin_tokens WHERE token_hash = ?1",
                (&hash,),
                bootstrap_token_from_row,
            )?;
            Ok(BootstrapInstall { token, revoked_others })
        })
        .await
    }

    async fn bootstrap_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<BootstrapToken>> {
        self.read_opt(
            "SELECT * FROM admin_tokens WHERE token_hash = ?1",
            (hash.to_hex(),),
            bootstrap_token_from_row,
        )
        .await
    }

    async fn list_bootstrap_tokens(&self) -> StoreResult<Vec<BootstrapToken>> {
        self.read_all(
            "SELECT * FROM admin_tokens ORDER BY created_at, id",
            (),
            bootstrap_token_from_row,
        )
        .await
    }

    async fn revoke_bootstrap_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE admin_tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                (micros(now), id.to_string()),
            )
            .await?;
        Ok(n == 1)
    }

    async fn touch_bootstrap_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<()> {
        self.write_one(
            "UPDATE admin_tokens SET last_used_at = ?1 WHERE id = ?2",
            (micros(now), id.to_string()),
        )
        .await?;
        Ok(())
    }

    async fn count_admin_tokens(&self) -> StoreResult<u64> {
        let n = self
            .read(|conn| one(conn, "SELECT COUNT(*) AS n FROM admin_tokens", (), |r| r.int("n")))
            .await?;
        Ok(n as u64)
    }

    async fn create_console_session(&self, s: &ConsoleSession) -> StoreResult<()> {
        self.write_one(
            "INSERT INTO console_sessions (id_hash, user_id, created_at, last_seen_at, expires_at, source_ip, \
             second_factor_pending) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            (
                s.id_hash.to_hex(),
                s.user_id.to_string(),
                micros(s.created_at),
                micros(s.last_seen_at),
                micros(s.expires_at),
                s.source_ip.clone(),
                i64::from(s.second_factor_pending),
            ),
        )
        .await?;
        Ok(())
    }

    async fn console_session(&self, id_hash: &TokenHash) -> StoreResult<Option<(ConsoleSession, ConsoleUser)>> {
        let id_hash = *id_hash;
        let found = self
            .read_opt(
                "SELECT u.*, s.created_at AS s_created_at, s.last_seen_at AS s_last_seen_at, \
                 s.expires_at AS s_expires_at, s.source_ip AS s_source_ip, \
                 s.second_factor_pending AS s_pending \
                 FROM console_sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?1",
                (id_hash.to_hex(),),
                move |r| {
                    let Some(user) = console_user_from_row(r)? else {
                        // The user lost console access: the session is dead.
                        return Ok(None);
                    };
                    let session = ConsoleSession {
                        id_hash,
                        user_id: parse_id(&r.text("id")?)?,
                        created_at: from_micros(r.int("s_created_at")?)?,
                        last_seen_at: from_micros(r.int("s_last_seen_at")?)?,
                        expires_at: from_micros(r.int("s_expires_at")?)?,
                        source_ip: r.get("s_source_ip")?,
                        second_factor_pending: r.int("s_pending")? != 0,
                    };
                    Ok(Some((session, user)))
                },
            )
            .await?;
        Ok(found.flatten())
    }

    async fn touch_console_session(&self, id_hash: &TokenHash, now: OffsetDateTime) -> StoreResult<()> {
        self.write_one(
            "UPDATE console_sessions SET last_seen_at = ?1 WHERE id_hash = ?2",
            (micros(now), id_hash.to_hex()),
        )
        .await?;
        Ok(())
    }

    async fn delete_console_session(&self, id_hash: &TokenHash, now: OffsetDateTime) -> StoreResult<bool> {
        let hash = id_hash.to_hex();
        self.write(move |tx| {
            let n = exec(tx, "DELETE FROM console_sessions WHERE id_hash = ?1", (&hash,))?;
            // Housekeeping rides along with logouts: sessions past their absolute expiry are useless.
            exec(tx, "DELETE FROM console_sessions WHERE expires_at < ?1", (micros(now),))?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_console_sessions_of(&self, user: UserId) -> StoreResult<u64> {
        self.write_one("DELETE FROM console_sessions WHERE user_id = ?1", (user.to_string(),))
            .await
    }
}
