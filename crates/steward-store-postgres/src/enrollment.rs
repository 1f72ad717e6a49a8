//! [`EnrollmentStore`]: enrollment tokens, enrollments and their certificates. The commits
//! (enrollment, renewal, end, issuance log) are in `writes.rs`.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::{from_sqlx, unique_violation};
use crate::rows::{Col, enrollment_from_row};
use crate::{PgStore, bad, from_micros, micros, opt_micros, opt_parse, parse_id};

fn token_from_row(r: &PgRow) -> StoreResult<EnrollmentToken> {
    Ok(EnrollmentToken {
        id: parse_id(r.col("id")?)?,
        token_hash: TokenHash::from_hex(r.col("token_hash")?).ok_or_else(|| bad("token hash"))?,
        description: r.col("description")?,
        max_uses: r.col::<Option<i64>>("max_uses")?.map(|v| v as u32),
        uses: r.col::<i64>("uses")? as u32,
        expires_at: opt_micros(r.col("expires_at")?)?,
        group_id: opt_parse(r.col("group_id")?)?,
        revoked: r.col("revoked")?,
        created_at: from_micros(r.col("created_at")?)?,
    })
}

/// The id of the group named `name`, created if it does not exist yet. Two transactions creating
/// the same group at once: the second waits on the name's unique index and then finds the first's.
async fn ensure_group(tx: &mut sqlx::PgConnection, name: &str, now: OffsetDateTime) -> StoreResult<GroupId> {
    let id = GroupId::new();
    sqlx::query("INSERT INTO groups (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
        .bind(id.to_string())
        .bind(name)
        .bind(micros(now))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
    let existing: String = sqlx::query_scalar("SELECT id FROM groups WHERE name = $1")
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(from_sqlx)?;
    parse_id(&existing)
}

impl PgStore {
    /// The enrollment a query with one text parameter finds, if any.
    async fn enrollment_where(&self, sql: &'static str, param: String) -> StoreResult<Option<Enrollment>> {
        sqlx::query(sql)
            .bind(param)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(enrollment_from_row)
            .transpose()
    }
}

#[async_trait]
impl EnrollmentStore for PgStore {
    async fn create_enrollment_token(&self, t: &NewEnrollmentToken) -> StoreResult<EnrollmentToken> {
        let mut tx = self.begin().await?;
        let group_id = match &t.group {
            Some(name) => Some(ensure_group(&mut tx, name, t.created_at).await?),
            None => None,
        };
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, token_hash, description, max_uses, uses, expires_at, \
             group_id, revoked, created_at) VALUES ($1, $2, $3, $4, 0, $5, $6, FALSE, $7)",
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
        .map_err(|e| match unique_violation(&e) {
            Some(_) => StoreError::Conflict("enrollment token".into()),
            None => from_sqlx(e),
        })?;
        tx.commit().await.map_err(from_sqlx)?;
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
        sqlx::query("SELECT * FROM enrollment_tokens WHERE token_hash = $1")
            .bind(hash.to_hex())
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    async fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentToken>> {
        sqlx::query("SELECT * FROM enrollment_tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(token_from_row)
            .collect()
    }

    async fn revoke_enrollment_token(&self, id: EnrollmentTokenId) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE enrollment_tokens SET revoked = TRUE WHERE id = $1 AND NOT revoked",
                |q| q.bind(id.to_string()),
            )
            .await?;
        Ok(n == 1)
    }

    async fn active_enrollment_by_device_id(&self, device_id: &DeviceId) -> StoreResult<Option<Enrollment>> {
        self.enrollment_where(
            "SELECT * FROM enrollments WHERE device_id = $1 AND state = 'active'",
            device_id.as_str().to_owned(),
        )
        .await
    }

    async fn latest_enrollment_by_device_id(&self, device_id: &DeviceId) -> StoreResult<Option<Enrollment>> {
        self.enrollment_where(
            "SELECT * FROM enrollments WHERE device_id = $1 ORDER BY state = 'active' DESC, enrolled_at DESC LIMIT 1",
            device_id.as_str().to_owned(),
        )
        .await
    }

    async fn enrollment_by_id(&self, id: EnrollmentId) -> StoreResult<Option<Enrollment>> {
        self.enrollment_where("SELECT * FROM enrollments WHERE id = $1", id.to_string())
            .await
    }

    async fn enrollment_by_certificate(&self, thumbprint: &Thumbprint) -> StoreResult<Option<Enrollment>> {
        self.enrollment_where(
            "SELECT * FROM enrollments WHERE cert_thumbprint = $1 OR previous_cert_thumbprint = $1",
            thumbprint.as_str().to_owned(),
        )
        .await
    }

    async fn commit_enrollment(&self, c: &EnrollmentCommit) -> StoreResult<()> {
        self.write_enrollment(c).await
    }

    async fn commit_renewal(&self, r: &RenewalCommit) -> StoreResult<()> {
        self.write_renewal(r).await
    }

    async fn end_enrollment(&self, id: EnrollmentId, end: &EnrollmentEnd, now: OffsetDateTime) -> StoreResult<bool> {
        self.write_end_enrollment(id, end, now).await
    }

    async fn nonce_spent(&self, nonce: &TokenHash) -> StoreResult<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM used_nonces WHERE nonce_hash = $1)")
            .bind(nonce.to_hex())
            .fetch_one(&self.pool)
            .await
            .map_err(from_sqlx)
    }

    async fn append_issuance_log(&self, e: &IssuanceLogEntry) -> StoreResult<()> {
        self.write_issuance_log(e).await
    }
}
