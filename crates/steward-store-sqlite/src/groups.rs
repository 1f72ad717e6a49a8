//! [`GroupStore`]: device groups and membership.

use async_trait::async_trait;
use steward_core::*;

use crate::error::{from_rusqlite, is_unique_violation};
use crate::rows::{self, NamedRow};
use crate::{SqliteStore, from_micros, micros, parse_id};

fn group_from_row(r: &NamedRow<'_>) -> StoreResult<Group> {
    Ok(Group {
        id: parse_id(&r.text("id")?)?,
        name: r.text("name")?,
        created_at: from_micros(r.int("created_at")?)?,
    })
}

#[async_trait]
impl GroupStore for SqliteStore {
    async fn group_by_name(&self, name: &str) -> StoreResult<Option<Group>> {
        self.read_opt(
            "SELECT id, name, created_at FROM groups WHERE name = ?1",
            (name.to_owned(),),
            group_from_row,
        )
        .await
    }

    async fn list_groups(&self) -> StoreResult<Vec<Group>> {
        self.read_all(
            "SELECT id, name, created_at FROM groups ORDER BY name",
            (),
            group_from_row,
        )
        .await
    }

    async fn create_group(&self, g: &Group) -> StoreResult<()> {
        let g = g.clone();
        self.write(move |tx| {
            let res = tx
                .prepare_cached("INSERT INTO groups (id, name, created_at) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute((g.id.to_string(), &g.name, micros(g.created_at))));
            match res {
                Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!("group {}", g.name))),
                other => other.map(drop).map_err(from_rusqlite),
            }
        })
        .await
    }

    async fn delete_group(&self, id: GroupId) -> StoreResult<bool> {
        self.write(move |tx| {
            let id = id.to_string();
            let in_use: i64 = crate::rows::one(
                tx,
                "SELECT (SELECT COUNT(*) FROM enrollments WHERE group_id = ?1 AND state = 'active') \
                 + (SELECT COUNT(*) FROM enrollment_tokens WHERE group_id = ?1 AND revoked = 0) \
                 + (SELECT COUNT(*) FROM api_tokens WHERE group_id = ?1 AND revoked_at IS NULL) \
                 + (SELECT COUNT(*) FROM users WHERE console_group_id = ?1) \
                 + (SELECT COUNT(*) FROM profile_assignments WHERE group_id = ?1) AS n",
                (&id,),
                |r| r.int("n"),
            )?;
            if in_use > 0 {
                return Err(StoreError::Conflict(format!(
                    "group {id} still has active devices, enrollment tokens, API tokens, console users or profile assignments"
                )));
            }
            // History rows (ended enrollments, revoked tokens) keep pointing at nothing rather than
            // blocking the delete: the group name is gone, the records stay.
            let n = Self::each_for_id(
                tx,
                &[
                    "UPDATE enrollments SET group_id = NULL WHERE group_id = ?1",
                    "UPDATE enrollment_tokens SET group_id = NULL WHERE group_id = ?1",
                    "UPDATE api_tokens SET group_id = NULL WHERE group_id = ?1",
                    "DELETE FROM groups WHERE id = ?1",
                ],
                &id,
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_enrollment_group(&self, id: EnrollmentId, group: Option<GroupId>) -> StoreResult<bool> {
        self.write(move |tx| {
            let eid = id.to_string();
            let n = rows::exec(
                tx,
                "UPDATE enrollments SET group_id = ?1 WHERE id = ?2",
                (group.map(|g| g.to_string()), &eid),
            )?;
            // Other groups may assign other profiles: the device reconciles at its next check-in.
            rows::exec(
                tx,
                "UPDATE device_config_state SET epoch_seen = 0 WHERE enrollment_id = ?1",
                (&eid,),
            )?;
            Ok(n > 0)
        })
        .await
    }
}
