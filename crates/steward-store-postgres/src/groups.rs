//! [`GroupStore`]: device groups and membership.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use steward_core::*;

use crate::error::{from_sqlx, unique_violation};
use crate::rows::Col;
use crate::{PgStore, from_micros, micros, parse_id};

fn group_from_row(r: &PgRow) -> StoreResult<Group> {
    Ok(Group {
        id: parse_id(r.col("id")?)?,
        name: r.col("name")?,
        created_at: from_micros(r.col("created_at")?)?,
    })
}

#[async_trait]
impl GroupStore for PgStore {
    async fn group_by_name(&self, name: &str) -> StoreResult<Option<Group>> {
        sqlx::query("SELECT id, name, created_at FROM groups WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(group_from_row)
            .transpose()
    }

    async fn list_groups(&self) -> StoreResult<Vec<Group>> {
        sqlx::query("SELECT id, name, created_at FROM groups ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(group_from_row)
            .collect()
    }

    async fn create_group(&self, g: &Group) -> StoreResult<()> {
        sqlx::query("INSERT INTO groups (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(g.id.to_string())
            .bind(&g.name)
            .bind(micros(g.created_at))
            .execute(&self.pool)
            .await
            .map_err(|e| match unique_violation(&e) {
                Some(_) => StoreError::Conflict(format!("group {}", g.name)),
                None => from_sqlx(e),
            })?;
        Ok(())
    }

    async fn delete_group(&self, id: GroupId) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        // The group row locked first: a token or user being created in it meanwhile (their foreign
        // key takes a share lock on it) either committed before and is counted, or waits and then
        // fails on the missing group.
        let exists = sqlx::query("SELECT 1 FROM groups WHERE id = $1 FOR UPDATE")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .is_some();
        if !exists {
            return Ok(false);
        }
        let (in_use, profiles): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM enrollments WHERE group_id = $1 AND state = 'active') \
             + (SELECT COUNT(*) FROM enrollment_tokens WHERE group_id = $1 AND NOT revoked) \
             + (SELECT COUNT(*) FROM api_tokens WHERE group_id = $1 AND revoked_at IS NULL) \
             + (SELECT COUNT(*) FROM users WHERE console_group_id = $1), \
             (SELECT COUNT(*) FROM profile_assignments WHERE group_id = $1)",
        )
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        if in_use > 0 {
            return Err(StoreError::Conflict(format!(
                "group {id} still has active devices, enrollment tokens, API tokens or console users"
            )));
        }
        // An assignment naming the group (included or excluded): removing it from the profile is
        // a change of what devices get, for a person to decide. A profile write naming the group
        // holds its row FOR KEY SHARE, so it either committed before the lock above or waits.
        if profiles > 0 {
            return Err(StoreError::Conflict(format!(
                "group {id} is named by the assignment of {profiles} configuration profile(s)"
            )));
        }
        // History rows (ended enrollments, revoked tokens) keep pointing at nothing rather than
        // blocking the delete: the group name is gone, the records stay.
        let n = Self::each_for_id(
            &mut tx,
            &[
                "UPDATE enrollments SET group_id = NULL WHERE group_id = $1",
                "UPDATE enrollment_tokens SET group_id = NULL WHERE group_id = $1",
                "UPDATE api_tokens SET group_id = NULL WHERE group_id = $1",
                "DELETE FROM groups WHERE id = $1",
            ],
            &id.to_string(),
        )
        .await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(n > 0)
    }

    async fn set_enrollment_group(&self, id: EnrollmentId, group: Option<GroupId>) -> StoreResult<bool> {
        // One statement, so atomic: the move and the reset of the device's configuration stamp
        // (epoch_seen 0), so its next check-in reconciles against the new group's profiles.
        let n: i64 = sqlx::query_scalar(
            "WITH e AS (UPDATE enrollments SET group_id = $1 WHERE id = $2 RETURNING id), \
             s AS (UPDATE device_config_state SET epoch_seen = 0 WHERE enrollment_id IN (SELECT id FROM e)) \
             SELECT COUNT(*) FROM e",
        )
        .bind(group.map(|g| g.to_string()))
        .bind(id.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(n > 0)
    }
}
