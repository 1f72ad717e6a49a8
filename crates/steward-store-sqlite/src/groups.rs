//! [`GroupStore`]: device groups, membership, and what evaluating dynamic groups reads (migration
//! 0011: `groups.rule`).

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::Connection;
use steward_core::*;

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
