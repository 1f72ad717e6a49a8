//! [`ProfileStore`]: configuration profiles, their versions and assignments, the configuration
//! epoch, and each device's setting rows and stamp (steward_core::configuration has the model).
//!
//! Many writers, at READ COMMITTED: every profile write first moves the epoch
//! (`UPDATE configuration_epoch SET epoch = epoch + 1`), so the epoch row's lock serialises profile
//! writes on every replica, and an update's `expected_version` is checked by the UPDATE itself
//! (`WHERE current_version = $expected`): of two applies decided against one version, the second
//! finds the first's and is a Conflict. The groups an assignment names are read `FOR KEY SHARE`, so
//! a `delete_group` (which locks its row `FOR UPDATE` and then counts the assignments naming it)
//! either commits first and the profile write finds the group gone, or waits and counts it.
//!
//! The device side is written by the check-in commit ([`write_configuration`], in the check-in's
//! transaction) and read by the check-in context ([`load_configuration`], in its snapshot).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::{from_sqlx, json_err, unique_violation};
use crate::rows::Col;
use crate::writes::exec;
use crate::{PgStore, bad, from_micros, micros, opt_micros, parse_id};

/// A profile row with its assignment: `assign_all` from the row, the included and the excluded
/// groups as two arrays (table alias `p`).
macro_rules! profile_columns {
    () => {
        "p.id, p.name, p.platform, p.description, p.priority, p.remediation, p.current_version, p.assign_all, \
         p.created_at, p.updated_at, \
         ARRAY(SELECT a.group_id FROM profile_assignments a WHERE a.profile_id = p.id AND NOT a.exclude \
         ORDER BY a.group_id) AS groups, \
         ARRAY(SELECT a.group_id FROM profile_assignments a WHERE a.profile_id = p.id AND a.exclude \
         ORDER BY a.group_id) AS exclude_groups"
    };
}

const PROFILE_BY_ID: &str = concat!("SELECT ", profile_columns!(), " FROM profiles p WHERE p.id = $1");
const PROFILE_BY_NAME: &str = concat!("SELECT ", profile_columns!(), " FROM profiles p WHERE p.name = $1");
const PROFILES: &str = concat!("SELECT ", profile_columns!(), " FROM profiles p ORDER BY p.name");

/// The candidates of a check-in (see [`DeviceConfiguration::candidates`]): the platform's profiles
/// with a non-empty assignment, each with its current version's settings.
const CANDIDATES: &str = concat!(
    "SELECT ",
    profile_columns!(),
    ", v.settings, v.config_lock FROM profiles p JOIN profile_versions v ON v.profile_id = p.id AND v.version = p.current_version \
     WHERE p.platform = $1 AND (p.assign_all OR EXISTS (SELECT 1 FROM profile_assignments a \
     WHERE a.profile_id = p.id AND NOT a.exclude)) ORDER BY p.name"
);

/// Active enrollments of platform $1 that an assignment includes: every device ($2) or a member of
/// the groups $3, and not a member of the groups $4 (an exclusion always wins; a device in no group
/// is never excluded).
const COUNT_ASSIGNED: &str = "SELECT COUNT(*) FROM enrollments WHERE platform = $1 AND state = 'active' \
     AND ($2 OR group_id = ANY($3)) AND (group_id IS NULL OR group_id <> ALL($4))";

fn version_u32(v: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| bad(what))
}

fn ids<T: std::str::FromStr>(v: Vec<String>) -> StoreResult<Vec<T>> {
    v.iter().map(|s| parse_id(s)).collect()
}

fn assignment_from_row(r: &PgRow) -> StoreResult<Assignment> {
    Ok(Assignment {
        all: r.col("assign_all")?,
        groups: ids(r.col("groups")?)?,
        exclude_groups: ids(r.col("exclude_groups")?)?,
    })
}

fn remediation(r: &PgRow) -> StoreResult<Remediation> {
    Remediation::parse(r.col("remediation")?).ok_or_else(|| bad("profile remediation"))
}

fn priority(r: &PgRow) -> StoreResult<i32> {
    i32::try_from(r.col::<i64>("priority")?).map_err(|_| bad("profile priority"))
}

fn profile_from_row(r: &PgRow) -> StoreResult<Profile> {
    Ok(Profile {
        id: parse_id(r.col("id")?)?,
        name: r.col("name")?,
        platform: Platform::parse(r.col("platform")?).ok_or_else(|| bad("profile platform"))?,
        description: r.col("description")?,
        priority: priority(r)?,
        remediation: remediation(r)?,
        current_version: version_u32(r.col("current_version")?, "profile current_version")?,
        assignment: assignment_from_row(r)?,
        created_at: from_micros(r.col("created_at")?)?,
        updated_at: from_micros(r.col("updated_at")?)?,
    })
}

fn settings_from_json(s: &str) -> StoreResult<Vec<Setting>> {
    serde_json::from_str(s).map_err(json_err)
}

fn candidate_from_row(r: &PgRow) -> StoreResult<AssignedProfile> {
    Ok(AssignedProfile {
        id: parse_id(r.col("id")?)?,
        name: r.col("name")?,
        priority: priority(r)?,
        remediation: remediation(r)?,
        created_at: from_micros(r.col("created_at")?)?,
        version: version_u32(r.col("current_version")?, "profile current_version")?,
        assignment: assignment_from_row(r)?,
        settings: settings_from_json(r.col("settings")?)?,
        config_lock: r.col("config_lock")?,
    })
}

fn version_from_row(r: &PgRow) -> StoreResult<ProfileVersion> {
    Ok(ProfileVersion {
        profile_id: parse_id(r.col("profile_id")?)?,
        version: version_u32(r.col("version")?, "profile version")?,
        settings: settings_from_json(r.col("settings")?)?,
        digest: r.col("digest")?,
        config_lock: r.col("config_lock")?,
        created_at: from_micros(r.col("created_at")?)?,
    })
}

fn device_setting_from_row(r: &PgRow) -> StoreResult<DeviceSetting> {
    let in_flight = match r.col::<Option<&str>>("in_flight_op")? {
        None => None,
        Some(op) => Some(InFlight {
            op: OpKind::parse(op).ok_or_else(|| bad("device setting in_flight_op"))?,
            session: r
                .col::<Option<String>>("in_flight_session")?
                .ok_or_else(|| bad("device setting in_flight_session"))?,
            sent_at: from_micros(
                r.col::<Option<i64>>("in_flight_at")?
                    .ok_or_else(|| bad("device setting in_flight_at"))?,
            )?,
        }),
    };
    Ok(DeviceSetting {
        path: r.col("path")?,
        profile_id: parse_id(r.col("profile_id")?)?,
        profile_version: version_u32(r.col("profile_version")?, "device setting profile_version")?,
        setting: serde_json::from_str(r.col("setting")?).map_err(json_err)?,
        status: SettingStatus::parse(r.col("status")?).ok_or_else(|| bad("device setting status"))?,
        reason: r.col("reason")?,
        in_flight,
        applied_digest: r.col("applied_digest")?,
        status_code: r
            .col::<Option<i64>>("status_code")?
            .map(|c| u16::try_from(c).map_err(|_| bad("device setting status_code")))
            .transpose()?,
        error: r.col("error")?,
        observed: r.col("observed")?,
        observed_at: opt_micros(r.col("observed_at")?)?,
        verified_at: opt_micros(r.col("verified_at")?)?,
        updated_at: from_micros(r.col("updated_at")?)?,
    })
}

/// The device's stamp as the check-in context's statement reads it (`c_*`, LEFT JOIN: the default
/// stamp when the device was never reconciled).
pub(crate) fn stamp_from_row(r: &PgRow) -> StoreResult<DeviceConfigState> {
    let Some(epoch_seen) = r.col::<Option<i64>>("c_epoch_seen")? else {
        return Ok(DeviceConfigState::default());
    };
    Ok(DeviceConfigState {
        epoch_seen,
        unsettled: u32::try_from(r.col::<i64>("c_unsettled")?).map_err(|_| bad("device unsettled"))?,
        verify_at: opt_micros(r.col("c_verify_at")?)?,
    })
}

/// What a reconciliation of enrollment `eid` loads ([`DeviceConfiguration`]), on the caller's
/// connection (the check-in's read snapshot): two statements, the candidates and the device's rows.
pub(crate) async fn load_configuration(
    conn: &mut PgConnection,
    enrollment: &Enrollment,
) -> StoreResult<DeviceConfiguration> {
    let eid = enrollment.id.to_string();
    let candidates = sqlx::query(CANDIDATES)
        .bind(enrollment.platform.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?
        .iter()
        .map(candidate_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    let settings = sqlx::query("SELECT * FROM device_settings WHERE enrollment_id = $1 ORDER BY path")
        .bind(&eid)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?
        .iter()
        .map(device_setting_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    let rollouts = crate::rollouts::load_candidate_rollouts(conn, &eid, enrollment.platform).await?;
    let wants_lock = candidates.iter().any(|p| p.config_lock) || rollouts.iter().any(|r| r.from_config_lock);
    let dynamic = dynamic_membership(conn, &eid, &candidates, EnrollmentFields::of(enrollment), wants_lock).await?;
    Ok(DeviceConfiguration {
        groups: enrollment.group_id.into_iter().collect(),
        candidates,
        settings,
        rollouts,
        dynamic,
        lock: None,
    })
}

/// The dynamic groups among `ids` (one statement by primary key).
pub(crate) async fn dynamic_groups_among(conn: &mut PgConnection, ids: &[GroupId]) -> StoreResult<Vec<DynamicGroup>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query("SELECT id, rule FROM groups WHERE id = ANY($1) AND rule IS NOT NULL ORDER BY id")
        .bind(ids.iter().map(ToString::to_string).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?
        .iter()
        .map(|r| {
            Ok(DynamicGroup {
                id: parse_id(r.col("id")?)?,
                rule: crate::groups::parse_rule(r.col("rule")?)?,
            })
        })
        .collect()
}

/// What deciding the dynamic groups of enrollment `eid` needs, in the caller's snapshot: the
/// dynamic groups among those `candidates` name (the others cannot change what the device gets),
/// the device's facts their rules read (one statement each, none without dynamic groups), and the
/// enrollment's fields.
async fn dynamic_membership(
    conn: &mut PgConnection,
    eid: &str,
    candidates: &[AssignedProfile],
    enrollment: EnrollmentFields,
    wants_lock: bool,
) -> StoreResult<DynamicMembership> {
    let mut named: Vec<GroupId> = candidates
        .iter()
        .flat_map(|p| p.assignment.groups.iter().chain(&p.assignment.exclude_groups))
        .copied()
        .collect();
    named.sort();
    named.dedup();
    let groups = dynamic_groups_among(conn, &named).await?;
    let mut fact_names = steward_core::group_rule::rule_fact_names(&groups);
    if wants_lock {
        // A candidate asks for the device-side lock: the platform decides support from these.
        fact_names.extend(steward_core::configuration::DEVICE_LOCK_FACTS);
        fact_names.sort();
        fact_names.dedup();
    }
    let wants_tags = fact_names.contains(&steward_core::group_rule::TAGS);
    let names: Vec<String> = fact_names
        .iter()
        .filter(|n| **n != steward_core::group_rule::TAGS)
        .map(|n| n.as_str().to_owned())
        .collect();
    let mut facts = if names.is_empty() {
        Vec::new()
    } else {
        sqlx::query(
            "SELECT name, value, updated_at FROM device_facts WHERE enrollment_id = $1 AND name = ANY($2) \
             ORDER BY name",
        )
        .bind(eid)
        .bind(names)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?
        .iter()
        .map(|r| {
            Ok(DeviceFact {
                name: FactName::parse(r.col("name")?).ok_or_else(|| bad("fact name"))?,
                value: r.col("value")?,
                updated_at: from_micros(r.col("updated_at")?)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?
    };
    if wants_tags {
        // Tags are their own table; in name order with the facts, as SQLite gives them.
        facts.extend(crate::groups::tag_facts(conn, eid).await?);
        facts.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(DynamicMembership {
        groups,
        facts,
        enrollment,
    })
}

/// Writes what a check-in decided for the device's configuration ([`ConfigurationCommit`]) in the
/// check-in's transaction: deleted paths, upserted rows (one statement over arrays), the stamp, and
/// the events through the outbox as every other event (its advisory lock held to commit).
pub(crate) async fn write_configuration(
    tx: &mut PgConnection,
    eid: &str,
    c: &ConfigurationCommit,
    now: OffsetDateTime,
) -> StoreResult<()> {
    if !c.deletes.is_empty() {
        exec(
            tx,
            sqlx::query("DELETE FROM device_settings WHERE enrollment_id = $1 AND path = ANY($2)")
                .bind(eid)
                .bind(c.deletes.clone()),
        )
        .await?;
    }
    if !c.upserts.is_empty() {
        // One row per path, the last given winning, as one upsert after another would leave it
        // (a statement's ON CONFLICT may not touch a row twice).
        let rows: BTreeMap<&str, &DeviceSetting> = c.upserts.iter().map(|r| (r.path.as_str(), r)).collect();
        let rows: Vec<&DeviceSetting> = rows.into_values().collect();
        let settings = rows
            .iter()
            .map(|r| serde_json::to_string(&r.setting))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Backend(format!("device setting: {e}")))?;
        exec(
            tx,
            sqlx::query(
                "INSERT INTO device_settings (enrollment_id, path, profile_id, profile_version, setting, status, \
                 reason, in_flight_op, in_flight_session, in_flight_at, applied_digest, status_code, error, \
                 observed, observed_at, verified_at, updated_at) \
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], \
                 $8::text[], $9::text[], $10::bigint[], $11::text[], $12::bigint[], $13::text[], $14::text[], \
                 $15::bigint[], $16::bigint[], $17::bigint[]) \
                 ON CONFLICT (enrollment_id, path) DO UPDATE SET profile_id = excluded.profile_id, \
                 profile_version = excluded.profile_version, setting = excluded.setting, status = excluded.status, \
                 reason = excluded.reason, in_flight_op = excluded.in_flight_op, \
                 in_flight_session = excluded.in_flight_session, in_flight_at = excluded.in_flight_at, \
                 applied_digest = excluded.applied_digest, status_code = excluded.status_code, \
                 error = excluded.error, observed = excluded.observed, observed_at = excluded.observed_at, \
                 verified_at = excluded.verified_at, updated_at = excluded.updated_at",
            )
            .bind(eid)
            .bind(rows.iter().map(|r| r.path.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.profile_id.to_string()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| i64::from(r.profile_version)).collect::<Vec<_>>())
            .bind(settings)
            .bind(rows.iter().map(|r| r.status.as_str().to_owned()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.in_flight.as_ref().map(|f| f.op.as_str().to_owned()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| r.in_flight.as_ref().map(|f| f.session.clone()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| r.in_flight.as_ref().map(|f| micros(f.sent_at)))
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.applied_digest.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.status_code.map(i64::from)).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.error.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.observed.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.observed_at.map(micros)).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.verified_at.map(micros)).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| micros(r.updated_at)).collect::<Vec<_>>()),
        )
        .await?;
    }
    let s = &c.state;
    // A stamp changed since the context read it (core's `expected_state`): keep its verify_at and
    // force a reconciliation at the next check-in (epoch_seen 0). No expectation ($5 NULL) writes
    // the stamp as given. The row lock of ON CONFLICT makes the comparison and the write one step.
    let expected = c.expected_state;
    exec(
        tx,
        sqlx::query(
            "INSERT INTO device_config_state (enrollment_id, epoch_seen, unsettled, verify_at) \
             VALUES ($1, CASE WHEN $5::BIGINT IS NULL OR ($5 = 0 AND $6::BIGINT IS NULL) THEN $2 ELSE 0 END, $3, \
                     CASE WHEN $5::BIGINT IS NULL OR ($5 = 0 AND $6::BIGINT IS NULL) THEN $4::BIGINT ELSE NULL END) \
             ON CONFLICT (enrollment_id) DO UPDATE SET \
               epoch_seen = CASE WHEN $5::BIGINT IS NULL OR (device_config_state.epoch_seen = $5 \
                 AND device_config_state.verify_at IS NOT DISTINCT FROM $6::BIGINT) THEN $2 ELSE 0 END, \
               unsettled = excluded.unsettled, \
               verify_at = CASE WHEN $5::BIGINT IS NULL OR (device_config_state.epoch_seen = $5 \
                 AND device_config_state.verify_at IS NOT DISTINCT FROM $6::BIGINT) THEN $4::BIGINT \
                 ELSE device_config_state.verify_at END",
        )
        .bind(eid)
        .bind(s.epoch_seen)
        .bind(i64::from(s.unsettled))
        .bind(s.verify_at.map(micros))
        .bind(expected.map(|x| x.epoch_seen))
        .bind(expected.and_then(|x| x.verify_at).map(micros)),
    )
    .await?;
    for e in &c.events {
        crate::writes::insert_event(tx, eid, e, now).await?;
    }
    Ok(())
}

/// Refuses a write that contradicts itself before anything is written, as the SQLite store does
/// (a caller's bug, a Conflict): version numbers that do not describe a change as [`ProfileWrite`]
/// defines it (a new profile starts at version 1; an update's new version follows the expected
/// one; without a new version the current one stays), or a group named twice in the assignment
/// (in particular both included and excluded).
pub(crate) fn check_write(w: &ProfileWrite) -> StoreResult<()> {
    let p = &w.profile;
    let wrong = |why: String| Err(StoreError::Conflict(format!("profile {}: {why}", p.name)));
    if let Some(v) = &w.new_version {
        if v.profile_id != p.id {
            return wrong("the new version belongs to another profile".into());
        }
        if v.version != p.current_version {
            return wrong("the new version is not the profile's current version".into());
        }
    }
    match (w.expected_version, &w.new_version) {
        (None, Some(v)) if v.version == 1 => {}
        (None, _) => return wrong("a new profile starts with its version 1".into()),
        (Some(e), Some(v)) if e.checked_add(1) == Some(v.version) => {}
        (Some(_), Some(_)) => return wrong("the new version does not follow the expected one".into()),
        (Some(e), None) if e == p.current_version => {}
        (Some(_), None) => return wrong("the current version changes without a new version".into()),
    }
    let mut seen = BTreeSet::new();
    for g in p.assignment.groups.iter().chain(&p.assignment.exclude_groups) {
        if !seen.insert(g) {
            return wrong(format!("group {g} is named twice in the assignment"));
        }
    }
    Ok(())
}

/// Moves the configuration epoch (every device reconciles at its next check-in). Its row lock,
/// held to commit, also serialises every profile write on every replica.
pub(crate) async fn move_epoch(tx: &mut PgConnection) -> StoreResult<()> {
    exec(tx, sqlx::query("UPDATE configuration_epoch SET epoch = epoch + 1")).await?;
    Ok(())
}

fn name_taken(e: sqlx::Error, name: &str) -> StoreError {
    match unique_violation(&e) {
        Some(_) => StoreError::Conflict(format!("profile {name}")),
        None => from_sqlx(e),
    }
}

pub(crate) async fn write_profile(tx: &mut PgConnection, w: &ProfileWrite) -> StoreResult<()> {
    let p = &w.profile;
    let pid = p.id.to_string();

    // The named groups must exist, and stay until this commits (FOR KEY SHARE waits for, and holds
    // off, a delete_group's FOR UPDATE).
    let wanted: BTreeSet<String> = p
        .assignment
        .groups
        .iter()
        .chain(&p.assignment.exclude_groups)
        .map(ToString::to_string)
        .collect();
    if !wanted.is_empty() {
        let found: BTreeSet<String> =
            sqlx::query_scalar::<_, String>("SELECT id FROM groups WHERE id = ANY($1) FOR KEY SHARE")
                .bind(wanted.iter().cloned().collect::<Vec<_>>())
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?
                .into_iter()
                .collect();
        if let Some(missing) = wanted.difference(&found).next() {
            return Err(StoreError::Conflict(format!("group {missing} does not exist")));
        }
    }

    match w.expected_version {
        None => {
            sqlx::query(
                "INSERT INTO profiles (id, name, platform, description, priority, remediation, current_version, \
                 assign_all, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&pid)
            .bind(&p.name)
            .bind(p.platform.as_str())
            .bind(&p.description)
            .bind(i64::from(p.priority))
            .bind(p.remediation.as_str())
            .bind(i64::from(p.current_version))
            .bind(p.assignment.all)
            .bind(micros(p.created_at))
            .bind(micros(p.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| name_taken(e, &p.name))?;
        }
        Some(expected) => {
            // The version check and the write are one statement: under the epoch lock no other
            // profile write runs meanwhile, and a stale apply finds the version moved on.
            let n = sqlx::query(
                "UPDATE profiles SET name = $1, platform = $2, description = $3, priority = $4, remediation = $5, \
                 current_version = $6, assign_all = $7, updated_at = $8 WHERE id = $9 AND current_version = $10",
            )
            .bind(&p.name)
            .bind(p.platform.as_str())
            .bind(&p.description)
            .bind(i64::from(p.priority))
            .bind(p.remediation.as_str())
            .bind(i64::from(p.current_version))
            .bind(p.assignment.all)
            .bind(micros(p.updated_at))
            .bind(&pid)
            .bind(i64::from(expected))
            .execute(&mut *tx)
            .await
            .map_err(|e| name_taken(e, &p.name))?
            .rows_affected();
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "profile {} is no longer at version {expected}",
                    p.name
                )));
            }
            exec(
                tx,
                sqlx::query("DELETE FROM profile_assignments WHERE profile_id = $1").bind(&pid),
            )
            .await?;
        }
    }

    if let Some(v) = &w.new_version {
        let settings = serde_json::to_string(&v.settings)
            .map_err(|e| StoreError::Backend(format!("profile {}: settings: {e}", p.name)))?;
        sqlx::query(
            "INSERT INTO profile_versions (profile_id, version, settings, digest, created_at, config_lock) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&pid)
        .bind(i64::from(v.version))
        .bind(settings)
        .bind(&v.digest)
        .bind(micros(v.created_at))
        .bind(v.config_lock)
        .execute(&mut *tx)
        .await
        .map_err(|e| match unique_violation(&e) {
            Some(_) => StoreError::Conflict(format!("profile {} version {}", p.name, v.version)),
            None => from_sqlx(e),
        })?;
    }

    let a = &p.assignment;
    if !a.groups.is_empty() || !a.exclude_groups.is_empty() {
        // Each group once ([`check_write`]): included, then excluded.
        let (group_ids, exclude): (Vec<String>, Vec<bool>) = a
            .groups
            .iter()
            .map(|g| (g.to_string(), false))
            .chain(a.exclude_groups.iter().map(|g| (g.to_string(), true)))
            .unzip();
        exec(
            tx,
            sqlx::query(
                "INSERT INTO profile_assignments (profile_id, group_id, exclude) \
                 SELECT $1, g, x FROM unnest($2::text[], $3::boolean[]) AS u(g, x)",
            )
            .bind(&pid)
            .bind(group_ids)
            .bind(exclude),
        )
        .await?;
    }
    Ok(())
}

impl PgStore {
    /// In one statement when the assignment names only static groups; when it names a dynamic
    /// group, core evaluates the rules over every active enrollment of the platform with the facts
    /// they read (`groups::rule_subjects`), in memory.
    async fn count_assigned_in(conn: &mut PgConnection, platform: Platform, a: &Assignment) -> StoreResult<u64> {
        if a.is_empty() {
            return Ok(0);
        }
        let named: Vec<GroupId> = a.groups.iter().chain(&a.exclude_groups).copied().collect();
        let dynamic = dynamic_groups_among(conn, &named).await?;
        if !dynamic.is_empty() {
            let names = steward_core::group_rule::rule_fact_names(&dynamic);
            let subjects = crate::groups::rule_subjects(conn, Some(platform), &names).await?;
            return Ok(steward_core::group_rule::count_included(a, &dynamic, &subjects));
        }
        let n: i64 = sqlx::query_scalar(COUNT_ASSIGNED)
            .bind(platform.as_str())
            .bind(a.all)
            .bind(a.groups.iter().map(ToString::to_string).collect::<Vec<_>>())
            .bind(a.exclude_groups.iter().map(ToString::to_string).collect::<Vec<_>>())
            .fetch_one(&mut *conn)
            .await
            .map_err(from_sqlx)?;
        u64::try_from(n).map_err(|_| bad("count"))
    }

    async fn profile_where(&self, sql: &'static str, key: String) -> StoreResult<Option<Profile>> {
        sqlx::query(sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(profile_from_row)
            .transpose()
    }
}

#[async_trait]
impl ProfileStore for PgStore {
    async fn write_profiles(&self, writes: &[ProfileWrite]) -> StoreResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        for w in writes {
            check_write(w)?;
        }
        let mut tx = self.begin().await?;
        move_epoch(&mut tx).await?;
        for w in writes {
            write_profile(&mut tx, w).await?;
        }
        tx.commit().await.map_err(from_sqlx)
    }

    async fn profile(&self, id: ProfileId) -> StoreResult<Option<Profile>> {
        self.profile_where(PROFILE_BY_ID, id.to_string()).await
    }

    async fn profile_by_name(&self, name: &str) -> StoreResult<Option<Profile>> {
        self.profile_where(PROFILE_BY_NAME, name.to_owned()).await
    }

    async fn list_profiles(&self) -> StoreResult<Vec<Profile>> {
        sqlx::query(PROFILES)
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(profile_from_row)
            .collect()
    }

    async fn profile_version(&self, id: ProfileId, version: u32) -> StoreResult<Option<ProfileVersion>> {
        sqlx::query("SELECT * FROM profile_versions WHERE profile_id = $1 AND version = $2")
            .bind(id.to_string())
            .bind(i64::from(version))
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(version_from_row)
            .transpose()
    }

    async fn profile_versions(&self, id: ProfileId) -> StoreResult<Vec<ProfileVersion>> {
        sqlx::query("SELECT * FROM profile_versions WHERE profile_id = $1 ORDER BY version")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(version_from_row)
            .collect()
    }

    async fn delete_profile(&self, id: ProfileId) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        move_epoch(&mut tx).await?;
        let n = Self::each_for_id(
            &mut tx,
            &[
                "DELETE FROM profile_assignments WHERE profile_id = $1",
                "DELETE FROM profile_versions WHERE profile_id = $1",
                "DELETE FROM profiles WHERE id = $1",
            ],
            &id.to_string(),
        )
        .await?;
        if n == 0 {
            // Nothing deleted: the epoch stays where it was (the transaction rolls back).
            return Ok(false);
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(true)
    }

    async fn configuration_epoch(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT epoch FROM configuration_epoch")
            .fetch_one(&self.pool)
            .await
            .map_err(from_sqlx)
    }

    async fn device_configuration(&self, id: EnrollmentId) -> StoreResult<DeviceConfiguration> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(from_sqlx)?;
        let row = sqlx::query("SELECT * FROM enrollments WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .ok_or(StoreError::NotFound)?;
        let enrollment = crate::rows::enrollment_from_row(&row)?;
        let loaded = load_configuration(&mut tx, &enrollment).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(loaded)
    }

    async fn count_assigned(&self, platform: Platform, assignment: &Assignment) -> StoreResult<u64> {
        // The groups and the facts in one snapshot.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(from_sqlx)?;
        let n = Self::count_assigned_in(&mut tx, platform, assignment).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(n)
    }

    async fn profile_status(&self, id: ProfileId) -> StoreResult<ProfileStatusCounts> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(from_sqlx)?;
        let profile = sqlx::query(PROFILE_BY_ID)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(profile_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)?;
        let devices = Self::count_assigned_in(&mut tx, profile.platform, &profile.assignment).await?;
        let rows = sqlx::query(
            "SELECT s.profile_version, s.status, COUNT(*) AS n FROM device_settings s \
             JOIN enrollments e ON e.id = s.enrollment_id \
             WHERE s.profile_id = $1 AND e.state = 'active' \
             GROUP BY s.profile_version, s.status",
        )
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        let mut settings = rows
            .iter()
            .map(|r| {
                Ok((
                    version_u32(r.col("profile_version")?, "device setting profile_version")?,
                    SettingStatus::parse(r.col("status")?).ok_or_else(|| bad("device setting status"))?,
                    u64::try_from(r.col::<i64>("n")?).map_err(|_| bad("count"))?,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        settings.sort_unstable();
        Ok(ProfileStatusCounts { devices, settings })
    }

    async fn request_verification(&self, target: VerifyTarget, now: OffsetDateTime) -> StoreResult<u64> {
        // A device never reconciled gets its stamp here (epoch_seen 0: it loads at its next
        // check-in anyway); every other keeps its stamp with the read-back due now. In id order,
        // so two requests over overlapping devices lock their stamps in one order (no deadlock);
        // a check-in commit locks only its own.
        macro_rules! verify_sql {
            ($filter:literal) => {
                concat!(
                    "INSERT INTO device_config_state (enrollment_id, epoch_seen, unsettled, verify_at) \
                     SELECT id, 0, 0, $1 FROM enrollments WHERE state = 'active' AND ",
                    $filter,
                    " ORDER BY id ON CONFLICT (enrollment_id) DO UPDATE SET verify_at = excluded.verify_at"
                )
            };
        }
        let q = match target {
            VerifyTarget::Enrollment(id) => sqlx::query(verify_sql!("id = $2"))
                .bind(micros(now))
                .bind(id.to_string()),
            VerifyTarget::Group(g) => sqlx::query(verify_sql!("group_id = $2"))
                .bind(micros(now))
                .bind(g.to_string()),
            VerifyTarget::All => sqlx::query(verify_sql!("TRUE")).bind(micros(now)),
        };
        Ok(q.execute(&self.pool).await.map_err(from_sqlx)?.rows_affected())
    }
}
