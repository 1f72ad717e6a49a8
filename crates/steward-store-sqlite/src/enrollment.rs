//! [`EnrollmentStore`]: enrollment tokens (sqlx), enrollments and their certificates. The commits
//! (enrollment, renewal, end, issuance log) are jobs for the writer thread (`writes.rs`).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::from_sqlx;
use crate::rows::enrollment_from_row;
use crate::{SqliteStore, bad, from_micros, micros, opt_micros, opt_parse, parse_id, writes};

fn token_from_row(r: &SqliteRow) -> StoreResult<EnrollmentToken> {
    Ok(EnrollmentToken {
        id: parse_id(&r.get::<String, _>("id"))?,
        token_hash: TokenHash::from_hex(&r.get::<String, _>("token_hash")).ok_or_else(|| bad("token hash"))?,
        description: r.get("description"),
        max_uses: r.get::<Option<i64>, _>("max_uses").map(|v| v as u32),
        uses: r.get::<i64, _>("uses") as u32,
        expires_at: opt_micros(r.get("expires_at"))?,
        group_id: opt_parse(r.get("group_id"))?,
        revoked: r.get::<i64, _>("revoked") != 0,
        created_at: from_micros(r.get("created_at"))?,
    })
}

/// The id of the group named `name`, created if it does not exist yet.
async fn ensure_group(tx: &mut sqlx::SqliteConnection, name: &str, now: OffsetDateTime) -> StoreResult<GroupId> {
    if let Some(row) = sqlx::query("SELECT id FROM groups WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(from_sqlx)?
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
        .map_err(from_sqlx)?;
    Ok(id)
}

impl SqliteStore {
    /// The enrollment a query with one text parameter finds, if any.
    async fn enrollment_where(&self, sql: &'static str, param: String) -> StoreResult<Option<Enrollment>> {
        sqlx::query(sql)
            .bind(param)
            .fetch_optional(&self.read)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(enrollment_from_row)
            .transpose()
    }
}

#[async_trait]
impl EnrollmentStore for SqliteStore {
    async fn create_enrollment_token(&self, t: &NewEnrollmentToken) -> StoreResult<EnrollmentToken> {
        let mut tx = self.begin_write().await?;
        let group_id = match &t.group {
            Some(name) => Some(ensure_group(&mut tx, name, t.created_at).await?),
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
        .map_err(from_sqlx)?;
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
        sqlx::query("SELECT * FROM enrollment_tokens WHERE token_hash = ?")
            .bind(hash.to_hex())
            .fetch_optional(&self.read)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    async fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentToken>> {
        sqlx::query("SELECT * FROM enrollment_tokens ORDER BY created_at")
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(token_from_row)
            .collect()
    }

    async fn revoke_enrollment_token(&self, id: EnrollmentTokenId) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE enrollment_tokens SET revoked = 1 WHERE id = ? AND revoked = 0",
                |q| q.bind(id.to_string()),
            )
            .await?;
        Ok(n == 1)
    }

    async fn active_enrollment_by_device_id(&self, device_id: &DeviceId) -> StoreResult<Option<Enrollment>> {
        self.enrollment_where(
            "SELECT * FROM enrollments WHERE device_id = ? AND state = 'active'",
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
        self.enrollment_where("SELECT * FROM enrollments WHERE id = ?", id.to_string())
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

    async fn append_issuance_log(&self, e: &IssuanceLogEntry) -> StoreResult<()> {
        let e = e.clone();
        self.writer.run(move |conn| writes::append_issuance_log(conn, &e)).await
    }
}
