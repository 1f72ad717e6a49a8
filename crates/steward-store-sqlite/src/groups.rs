//! [`GroupStore`]: device groups and membership.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use steward_core::*;

use crate::error::from_sqlx;
use crate::{SqliteStore, from_micros, micros, parse_id};

fn group_from_row(r: &SqliteRow) -> StoreResult<Group> {
    Ok(Group {
        id: parse_id(&r.get::<String, _>("id"))?,
        name: r.get("name"),
        created_at: from_micros(r.get("created_at"))?,
    })
}

#[async_trait]
impl GroupStore for SqliteStore {
    async fn group_by_name(&self, name: &str) -> StoreResult<Option<Group>> {
        sqlx::query("SELECT id, name, created_at FROM groups WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.read)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(group_from_row)
            .transpose()
    }

    async fn list_groups(&self) -> StoreResult<Vec<Group>> {
        sqlx::query("SELECT id, name, created_at FROM groups ORDER BY name")
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(group_from_row)
            .collect()
    }

    async fn create_group(&self, g: &Group) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let res = sqlx::query("INSERT INTO groups (id, name, created_at) VALUES (?, ?, ?)")
            .bind(g.id.to_string())
            .bind(&g.name)
            .bind(micros(g.created_at))
            .execute(&mut *tx)
            .await;
        match res {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("group {}", g.name)));
            }
            other => {
                other.map_err(from_sqlx)?;
            }
        }
        tx.commit().await.map_err(from_sqlx)
    }

    async fn delete_group(&self, id: GroupId) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let in_use: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM enrollments WHERE group_id = ?1 AND state = 'active') \
             + (SELECT COUNT(*) FROM enrollment_tokens WHERE group_id = ?1 AND revoked = 0) \
             + (SELECT COUNT(*) FROM api_tokens WHERE group_id = ?1 AND revoked_at IS NULL) \
             + (SELECT COUNT(*) FROM users WHERE console_group_id = ?1)",
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
        // History rows (ended enrollments, revoked tokens) keep pointing at nothing rather than
        // blocking the delete: the group name is gone, the records stay.
        let n = Self::each_for_id(
            &mut tx,
            &[
                "UPDATE enrollments SET group_id = NULL WHERE group_id = ?",
                "UPDATE enrollment_tokens SET group_id = NULL WHERE group_id = ?",
                "UPDATE api_tokens SET group_id = NULL WHERE group_id = ?",
                "DELETE FROM groups WHERE id = ?",
            ],
            &id.to_string(),
        )
        .await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(n > 0)
    }

    async fn set_enrollment_group(&self, id: EnrollmentId, group: Option<GroupId>) -> StoreResult<bool> {
        let n = self
            .write_one("UPDATE enrollments SET group_id = ? WHERE id = ?", |q| {
                q.bind(group.map(|g| g.to_string())).bind(id.to_string())
            })
            .await?;
        Ok(n > 0)
    }
}
