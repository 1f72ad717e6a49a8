//! [`GroupStore`]: device groups, membership, device tags, and what evaluating dynamic groups reads
//! (migration 0011: `groups.rule`; 0013: `device_tags`). Creating, changing or deleting a dynamic group moves the configuration
//! epoch in its transaction (`profiles::move_epoch`, whose row lock also orders it with profile
//! writes).

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use steward_core::group_rule;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::{from_sqlx, unique_violation};
use crate::rows::Col;
use crate::{PgStore, bad, from_micros, micros, parse_id};

/// A stored rule (written only after core validated it).
pub(crate) fn parse_rule(text: &str) -> StoreResult<GroupRule> {
    GroupRule::from_json(text).map_err(|e| bad(&format!("group rule ({e})")))
}

fn group_from_row(r: &PgRow) -> StoreResult<Group> {
    Ok(Group {
        id: parse_id(r.col("id")?)?,
        name: r.col("name")?,
        created_at: from_micros(r.col("created_at")?)?,
        rule: r
            .col::<Option<String>>("rule")?
            .as_deref()
            .map(parse_rule)
            .transpose()?,
    })
}

/// An enrollment's tags as facts named [`group_rule::TAGS`] (one per tag, by tag), in the caller's
/// snapshot.
pub(crate) async fn tag_facts(conn: &mut PgConnection, eid: &str) -> StoreResult<Vec<DeviceFact>> {
    sqlx::query("SELECT tag, created_at FROM device_tags WHERE enrollment_id = $1 ORDER BY tag")
        .bind(eid)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?
        .iter()
        .map(|r| {
            Ok(DeviceFact {
                name: group_rule::TAGS,
                value: r.col("tag")?,
                updated_at: from_micros(r.col("created_at")?)?,
            })
        })
        .collect()
}

/// Every active enrollment (of `platform` if given), oldest first, with its facts named in `names`
/// (one statement for the facts), in the caller's snapshot.
pub(crate) async fn rule_subjects(
    conn: &mut PgConnection,
    platform: Option<Platform>,
    names: &[FactName],
) -> StoreResult<Vec<RuleSubject>> {
    let platform = platform.map(|p| p.as_str().to_owned());
    let enrollments = sqlx::query(
        "SELECT * FROM enrollments WHERE state = 'active' AND ($1::text IS NULL OR platform = $1) \
         ORDER BY enrolled_at, id",
    )
    .bind(&platform)
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?
    .iter()
    .map(crate::rows::enrollment_from_row)
    .collect::<StoreResult<Vec<_>>>()?;
    let mut facts: HashMap<String, Vec<DeviceFact>> = HashMap::new();
    let wants_tags = names.contains(&group_rule::TAGS);
    let names: Vec<&FactName> = names.iter().filter(|n| **n != group_rule::TAGS).collect();
    if !names.is_empty() {
        let rows = sqlx::query(
            "SELECT f.enrollment_id, f.name, f.value, f.updated_at FROM device_facts f \
             JOIN enrollments e ON e.id = f.enrollment_id \
             WHERE f.name = ANY($1) AND e.state = 'active' AND ($2::text IS NULL OR e.platform = $2) \
             ORDER BY f.enrollment_id, f.name",
        )
        .bind(names.iter().map(|n| n.as_str().to_owned()).collect::<Vec<_>>())
        .bind(&platform)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
        for r in &rows {
            facts.entry(r.col("enrollment_id")?).or_default().push(DeviceFact {
                name: FactName::parse(r.col("name")?).ok_or_else(|| bad("fact name"))?,
                value: r.col("value")?,
                updated_at: from_micros(r.col("updated_at")?)?,
            });
        }
    }
    if wants_tags {
        // Tags are their own table: every active enrollment's, in one statement, after the facts
        // (each enrollment's list stays in name order: `tags` sorts after every inventory fact
        // name a rule reads).
        let rows = sqlx::query(
            "SELECT t.enrollment_id, t.tag, t.created_at FROM device_tags t \
             JOIN enrollments e ON e.id = t.enrollment_id \
             WHERE e.state = 'active' AND ($1::text IS NULL OR e.platform = $1) \
             ORDER BY t.enrollment_id, t.tag",
        )
        .bind(&platform)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
        for r in &rows {
            facts.entry(r.col("enrollment_id")?).or_default().push(DeviceFact {
                name: group_rule::TAGS,
                value: r.col("tag")?,
                updated_at: from_micros(r.col("created_at")?)?,
            });
        }
    }
    Ok(enrollments
        .into_iter()
        .map(|e| RuleSubject {
            facts: facts.remove(&e.id.to_string()).unwrap_or_default(),
            enrollment: e,
        })
        .collect())
}

#[async_trait]
impl GroupStore for PgStore {
    async fn group_by_name(&self, name: &str) -> StoreResult<Option<Group>> {
        sqlx::query("SELECT id, name, created_at, rule FROM groups WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(group_from_row)
            .transpose()
    }

    async fn list_groups(&self) -> StoreResult<Vec<Group>> {
        sqlx::query("SELECT id, name, created_at, rule FROM groups ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(group_from_row)
            .collect()
    }

    async fn create_group(&self, g: &Group) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO groups (id, name, created_at, rule) VALUES ($1, $2, $3, $4)")
            .bind(g.id.to_string())
            .bind(&g.name)
            .bind(micros(g.created_at))
            .bind(g.rule.as_ref().map(GroupRule::to_json))
            .execute(&mut *tx)
            .await
            .map_err(|e| match unique_violation(&e) {
                Some(_) => StoreError::Conflict(format!("group {}", g.name)),
                None => from_sqlx(e),
            })?;
        if g.is_dynamic() {
            crate::profiles::move_epoch(&mut tx).await?;
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(())
    }

    async fn delete_group(&self, id: GroupId) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        // The group row locked first: a token or user being created in it meanwhile (their foreign
        // key takes a share lock on it) either committed before and is counted, or waits and then
        // fails on the missing group.
        let Some(dynamic) =
            sqlx::query_scalar::<_, bool>("SELECT rule IS NOT NULL FROM groups WHERE id = $1 FOR UPDATE")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?
        else {
            return Ok(false);
        };
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
        if n > 0 && dynamic {
            crate::profiles::move_epoch(&mut tx).await?;
        }
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

    async fn set_group_rule(&self, id: GroupId, rule: &GroupRule) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let current: Option<Option<String>> = sqlx::query_scalar("SELECT rule FROM groups WHERE id = $1 FOR UPDATE")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        match current {
            None => return Ok(false),
            Some(None) => {
                return Err(StoreError::Conflict(format!(
                    "group {id} is static: its members are moved into it, not chosen by a rule"
                )));
            }
            Some(Some(_)) => {}
        }
        sqlx::query("UPDATE groups SET rule = $1 WHERE id = $2")
            .bind(rule.to_json())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        crate::profiles::move_epoch(&mut tx).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(true)
    }

    async fn device_tags(&self, id: EnrollmentId) -> StoreResult<DeviceTags> {
        let tags: Vec<String> = sqlx::query_scalar("SELECT tag FROM device_tags WHERE enrollment_id = $1 ORDER BY tag")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(DeviceTags::from_stored(tags))
    }

    async fn set_device_tags(&self, id: EnrollmentId, tags: &DeviceTags, now: OffsetDateTime) -> StoreResult<bool> {
        let eid = id.to_string();
        let mut tx = self.begin().await?;
        // The enrollment row FOR UPDATE: two replacements of one device's tags run one after the
        // other, and an enrollment ending meanwhile waits (or is seen ended).
        let active: Option<String> = sqlx::query_scalar("SELECT state FROM enrollments WHERE id = $1 FOR UPDATE")
            .bind(&eid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        if active.as_deref() != Some("active") {
            return Ok(false);
        }
        let current: Vec<String> =
            sqlx::query_scalar("SELECT tag FROM device_tags WHERE enrollment_id = $1 ORDER BY tag")
                .bind(&eid)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        let wanted: Vec<String> = tags.as_slice().to_vec();
        if current == wanted {
            return Ok(true);
        }
        sqlx::query("DELETE FROM device_tags WHERE enrollment_id = $1 AND NOT (tag = ANY($2))")
            .bind(&eid)
            .bind(&wanted)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        sqlx::query(
            "INSERT INTO device_tags (enrollment_id, tag, created_at) SELECT $1, t, $3 FROM UNNEST($2::text[]) AS t \
             ON CONFLICT (enrollment_id, tag) DO NOTHING",
        )
        .bind(&eid)
        .bind(&wanted)
        .bind(micros(now))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        // Rules may read tags: the device re-evaluates its dynamic groups at its next check-in, as
        // after a fact change.
        sqlx::query("UPDATE device_config_state SET epoch_seen = 0 WHERE enrollment_id = $1")
            .bind(&eid)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(true)
    }

    async fn active_enrollments_with_facts(
        &self,
        platform: Option<Platform>,
        facts: &[FactName],
    ) -> StoreResult<Vec<RuleSubject>> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(from_sqlx)?;
        let subjects = rule_subjects(&mut tx, platform, facts).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(subjects)
    }
}
