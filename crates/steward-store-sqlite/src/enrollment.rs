//! [`EnrollmentStore`]: enrollment tokens, enrollments and their certificates. The commits
//! (enrollment, renewal, end, issuance log) are jobs for the writer thread (`writes.rs`).

use async_trait::async_trait;
use rusqlite::Transaction;
use steward_core::*;
use time::OffsetDateTime;

use crate::rows::{NamedRow, enrollment_from_row, exec, first};
use crate::{SqliteStore, bad, from_micros, micros, opt_micros, opt_parse, parse_id, writes};

fn token_from_row(r: &NamedRow<'_>) -> StoreResult<EnrollmentToken> {
    Ok(EnrollmentToken {
        id: parse_id(&r.text("id")?)?,
        token_hash: TokenHash::from_hex(&r.text("token_hash")?).ok_or_else(|| bad("token hash"))?,
        description: r.get("description")?,
        max_uses: r.opt_int("max_uses")?.map(|v| v as u32),
        uses: r.int("uses")? as u32,
        expires_at: opt_micros(r.opt_int("expires_at")?)?,
        group_id: opt_parse(r.opt_text("group_id")?)?,
        revoked: r.int("revoked")? != 0,
        created_at: from_micros(r.int("created_at")?)?,
    })
}

/// The id of the group named `name`, created if it does not exist yet.
fn ensure_group(tx: &Transaction<'_>, name: &str, now: OffsetDateTime) -> StoreResult<GroupId> {
    if let Some(id) = first(tx, "SELECT id FROM groups WHERE name = ?1", (name,), |r| r.text("id"))? {
        return parse_id(&id);
    }
    let id = GroupId::new();
    exec(
        tx,
        "INSERT INTO groups (id, name, created_at) VALUES (?1, ?2, ?3)",
        (id.to_string(), name, micros(now)),
    )?;
    Ok(id)
}

impl SqliteStore {
    /// The enrollment a query with one text parameter finds, if any.
    async fn enrollment_where(&self, sql: &'static str, param: String) -> StoreResult<Option<Enrollment>> {
        self.read_opt(sql, (param,), enrollment_from_row).await
    }
}

#[async_trait]
impl EnrollmentStore for SqliteStore {
    async fn create_enrollment_token(&self, t: &NewEnrollmentToken) -> StoreResult<EnrollmentToken> {
        let t = t.clone();
        self.write(move |tx| {
            let group_id = match &t.group {
                Some(name) => Some(ensure_group(tx, name, t.created_at)?),
                None => None,
            };
            exec(
                tx,
                "INSERT INTO enrollment_tokens (id, token_hash, description, max_uses, uses, expires_at, \
                 group_id, revoked, created_at) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, 0, ?7)",
                (
                    t.id.to_string(),
                    t.token_hash.to_hex(),
                    &t.description,
                    t.max_uses.map(i64::from),
                    t.expires_at.map(micros),
                    group_id.map(|g| g.to_string()),
                    micros(t.created_at),
                ),
            )?;
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
        })
        .await
    }

    async fn enrollment_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<EnrollmentToken>> {
        self.read_opt(
            "SELECT * FROM enrollment_tokens WHERE token_hash = ?1",
            (hash.to_hex(),),
            token_from_row,
        )
        .await
    }

    async fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentToken>> {
        self.read_all(
            "SELECT * FROM enrollment_tokens ORDER BY created_at",
            (),
            token_from_row,
        )
        .await
    }

    async fn revoke_enrollment_token(&self, id: EnrollmentTokenId) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE enrollment_tokens SET revoked = 1 WHERE id = ?1 AND revoked = 0",
                (id.to_string(),),
            )
            .await?;
        Ok(n == 1)
    }

    async fn active_enrollment_by_device_id(&self, device_id: &DeviceId) -> StoreResult<Option<Enrollment>> {
        self.enrollment_where(
            "SELECT * FROM enrollments WHERE device_id = ?1 AND state = 'active'",
            device_id.as_str().to_owned(),
        )
        .await
    }

    async fn latest_enrollment_by_device_id(&self, device_id: &DeviceId) -> StoreResult<Option<Enrollment>> {
        self.enrollment_where(
            "SELECT * FROM enrollments WHERE device_id = ? ORDER BY state = 'active' DESC, enrolled_at DESC LIMIT 1",
            device_id.as_str().to_owned(),
        )
        .await
    }

    async fn enrollment_by_id(&self, id: EnrollmentId) -> StoreResult<Option<Enrollment>> {
        self.enrollment_where("SELECT * FROM enrollments WHERE id = ?1", id.to_string())
            .await
    }

    async fn enrollment_by_certificate(&self, thumbprint: &Thumbprint) -> StoreResult<Option<Enrollment>> {
        self.enrollment_where(
            "SELECT * FROM enrollments WHERE cert_thumbprint = ?1 OR previous_cert_thumbprint = ?1",
            thumbprint.as_str().to_owned(),
        )
        .await
    }

    async fn commit_enrollment(&self, c: &EnrollmentCommit) -> StoreResult<()> {
        let c = c.clone();
        self.writer.run(move |conn| writes::commit_enrollment(conn, &c)).await
    }

    async fn commit_renewal(&self, r: &RenewalCommit) -> StoreResult<()> {
        let r = r.clone();
        self.writer.run(move |conn| writes::commit_renewal(conn, &r)).await
    }

    async fn end_enrollment(&self, id: EnrollmentId, end: &EnrollmentEnd, now: OffsetDateTime) -> StoreResult<bool> {
        let end = end.clone();
        self.writer
            .run(move |conn| writes::end_enrollment(conn, id, &end, now))
            .await
    }

    async fn nonce_spent(&self, nonce: &TokenHash) -> StoreResult<bool> {
        let found = self
            .read_opt(
                "SELECT 1 AS spent FROM used_nonces WHERE nonce_hash = ?1",
                (nonce.to_hex(),),
                |r| r.int("spent"),
            )
            .await?;
        Ok(found.is_some())
    }

    async fn append_issuance_log(&self, e: &IssuanceLogEntry) -> StoreResult<()> {
        let e = e.clone();
        self.writer.run(move |conn| writes::append_issuance_log(conn, &e)).await
    }
}
