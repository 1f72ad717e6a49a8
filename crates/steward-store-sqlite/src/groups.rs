//! [`GroupStore`]: device groups, membership, device tags, and what evaluating dynamic groups reads
//! (migration 0011: `groups.rule`; 0013: `device_tags`).

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::Connection;
use steward_core::group_rule;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::{from_rusqlite, is_unique_violation};
use crate::rows::{self, NamedRow};
use crate::{SqliteStore, bad, from_micros, micros, parse_id};

/// A stored rule (written only after core validated it).
pub(crate) fn parse_rule(text: &str) -> StoreResult<GroupRule> {
    GroupRule::from_json(text).map_err(|e| bad(&format!("group rule ({e})")))
}

fn group_from_row(r: &NamedRow<'_>) -> StoreResult<Group> {
    Ok(Group {
        id: parse_id(&r.text("id")?)?,
        name: r.text("name")?,
        created_at: from_micros(r.int("created_at")?)?,
        rule: r.opt_text("rule")?.as_deref().map(parse_rule).transpose()?,
    })
}

/// One enrollment's (`?1`) tags as the `tags` facts rules read (one per tag, by tag).
pub(crate) const TAG_FACTS: &str = "SELECT tag, created_at FROM device_tags WHERE enrollment_id = ?1 ORDER BY tag";

/// An enrollment's tags as facts named [`group_rule::TAGS`], in the caller's snapshot.
pub(crate) fn tag_facts(conn: &Connection, eid: &str) -> StoreResult<Vec<DeviceFact>> {
    rows::all(conn, TAG_FACTS, (eid,), |r| {
        Ok(DeviceFact {
            name: group_rule::TAGS,
            value: r.text("tag")?,
            updated_at: from_micros(r.int("created_at")?)?,
        })
    })
}

/// The dynamic groups an assignment names (included or excluded), by id.
pub(crate) fn dynamic_groups_named(conn: &Connection, a: &Assignment) -> StoreResult<Vec<DynamicGroup>> {
    let mut out = Vec::new();
    for &id in a.groups.iter().chain(&a.exclude_groups) {
        if out.iter().any(|g: &DynamicGroup| g.id == id) {
            continue;
        }
        if let Some(rule) = rows::first(conn, crate::profiles::DYNAMIC_GROUP, (id.to_string(),), |r| {
            r.text("rule")
        })? {
            out.push(DynamicGroup {
                id,
                rule: parse_rule(&rule)?,
            });
        }
    }
    Ok(out)
}

/// Every active enrollment (of `platform` if given), oldest first, with its facts named in `names`,
/// in the caller's snapshot.
pub(crate) fn rule_subjects(
    conn: &Connection,
    platform: Option<Platform>,
    names: &[FactName],
) -> StoreResult<Vec<RuleSubject>> {
    let platform = platform.map(Platform::as_str);
    let enrollments = rows::all(
        conn,
        "SELECT * FROM enrollments WHERE state = 'active' AND (?1 IS NULL OR platform = ?1) \
         ORDER BY enrolled_at, id",
        (platform,),
        rows::enrollment_from_row,
    )?;
    let mut facts: HashMap<String, Vec<DeviceFact>> = HashMap::new();
    for name in names {
        if *name == group_rule::TAGS {
            // Tags are their own table: every active enrollment's, in one pass.
            let found = rows::all(
                conn,
                "SELECT t.enrollment_id, t.tag, t.created_at FROM device_tags t \
                 JOIN enrollments e ON e.id = t.enrollment_id \
                 WHERE e.state = 'active' AND (?1 IS NULL OR e.platform = ?1) ORDER BY t.enrollment_id, t.tag",
                (platform,),
                |r| {
                    Ok((
                        r.text("enrollment_id")?,
                        DeviceFact {
                            name: group_rule::TAGS,
                            value: r.text("tag")?,
                            updated_at: from_micros(r.int("created_at")?)?,
                        },
                    ))
                },
            )?;
            for (eid, f) in found {
                facts.entry(eid).or_default().push(f);
            }
            continue;
        }
        // One pass over the fact per name (device_facts' key is (enrollment_id, name)).
        let found = rows::all(
            conn,
            "SELECT f.enrollment_id, f.value, f.updated_at FROM device_facts f \
             JOIN enrollments e ON e.id = f.enrollment_id \
             WHERE f.name = ?1 AND e.state = 'active' AND (?2 IS NULL OR e.platform = ?2)",
            (name.as_str(), platform),
            |r| {
                Ok((
                    r.text("enrollment_id")?,
                    DeviceFact {
                        name: name.clone(),
                        value: r.text("value")?,
                        updated_at: from_micros(r.int("updated_at")?)?,
                    },
                ))
            },
        )?;
        for (eid, f) in found {
            facts.entry(eid).or_default().push(f);
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
impl GroupStore for SqliteStore {
    async fn group_by_name(&self, name: &str) -> StoreResult<Option<Group>> {
        self.read_opt(
            "SELECT id, name, created_at, rule FROM groups WHERE name = ?1",
            (name.to_owned(),),
            group_from_row,
        )
        .await
    }

    async fn list_groups(&self) -> StoreResult<Vec<Group>> {
        self.read_all(
            "SELECT id, name, created_at, rule FROM groups ORDER BY name",
            (),
            group_from_row,
        )
        .await
    }

    async fn create_group(&self, g: &Group) -> StoreResult<()> {
        let g = g.clone();
        self.write(move |tx| {
            let res = tx
                .prepare_cached("INSERT INTO groups (id, name, created_at, rule) VALUES (?1, ?2, ?3, ?4)")
                .and_then(|mut s| {
                    s.execute((
                        g.id.to_string(),
                        &g.name,
                        micros(g.created_at),
                        g.rule.as_ref().map(GroupRule::to_json),
                    ))
                });
            match res {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict(format!("group {}", g.name))),
                other => other.map(drop).map_err(from_rusqlite)?,
            }
            // A new dynamic group may already be assigned by the time devices check in again.
            if g.is_dynamic() {
                crate::profiles::bump_epoch(tx)?;
            }
            Ok(())
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
            let dynamic = rows::first(tx, crate::profiles::DYNAMIC_GROUP, (&id,), |r| r.text("rule"))?.is_some();
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
            if n > 0 && dynamic {
                crate::profiles::bump_epoch(tx)?;
            }
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

    async fn set_group_rule(&self, id: GroupId, rule: &GroupRule) -> StoreResult<bool> {
        let rule = rule.to_json();
        self.write(move |tx| {
            let gid = id.to_string();
            let current = rows::first(tx, "SELECT rule FROM groups WHERE id = ?1", (&gid,), |r| {
                r.opt_text("rule")
            })?;
            match current {
                None => Ok(false),
                Some(None) => Err(StoreError::Conflict(format!(
                    "group {gid} is static: its members are moved into it, not chosen by a rule"
                ))),
                Some(Some(_)) => {
                    rows::exec(tx, "UPDATE groups SET rule = ?1 WHERE id = ?2", (&rule, &gid))?;
                    crate::profiles::bump_epoch(tx)?;
                    Ok(true)
                }
            }
        })
        .await
    }

    async fn device_tags(&self, id: EnrollmentId) -> StoreResult<DeviceTags> {
        let tags = self
            .read_all(
                "SELECT tag FROM device_tags WHERE enrollment_id = ?1 ORDER BY tag",
                (id.to_string(),),
                |r| r.text("tag"),
            )
            .await?;
        Ok(DeviceTags::from_stored(tags))
    }

    async fn set_device_tags(&self, id: EnrollmentId, tags: &DeviceTags, now: OffsetDateTime) -> StoreResult<bool> {
        let wanted = tags.as_slice().to_vec();
        self.write(move |tx| {
            let eid = id.to_string();
            let active = rows::first(
                tx,
                "SELECT 1 AS x FROM enrollments WHERE id = ?1 AND state = 'active'",
                (&eid,),
                |r| r.int("x"),
            )?;
            if active.is_none() {
                return Ok(false);
            }
            let current = rows::all(
                tx,
                "SELECT tag FROM device_tags WHERE enrollment_id = ?1 ORDER BY tag",
                (&eid,),
                |r| r.text("tag"),
            )?;
            if current == wanted {
                return Ok(true);
            }
            for gone in current.iter().filter(|t| !wanted.contains(t)) {
                rows::exec(
                    tx,
                    "DELETE FROM device_tags WHERE enrollment_id = ?1 AND tag = ?2",
                    (&eid, gone),
                )?;
            }
            for new in wanted.iter().filter(|t| !current.contains(t)) {
                rows::exec(
                    tx,
                    "INSERT INTO device_tags (enrollment_id, tag, created_at) VALUES (?1, ?2, ?3)",
                    (&eid, new, micros(now)),
                )?;
            }
            // Rules may read tags: the device re-evaluates its dynamic groups at its next check-in,
            // as after a fact change.
            rows::exec(
                tx,
                "UPDATE device_config_state SET epoch_seen = 0 WHERE enrollment_id = ?1",
                (&eid,),
            )?;
            Ok(true)
        })
        .await
    }

    async fn active_enrollments_with_facts(
        &self,
        platform: Option<Platform>,
        facts: &[FactName],
    ) -> StoreResult<Vec<RuleSubject>> {
        let names = facts.to_vec();
        self.read(move |conn| {
            let tx = conn.unchecked_transaction().map_err(from_rusqlite)?;
            rule_subjects(&tx, platform, &names)
        })
        .await
    }
}
