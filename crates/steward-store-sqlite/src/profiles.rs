//! [`ProfileStore`]: configuration profiles, their immutable versions and assignments, the
//! configuration epoch, and each device's stamp and setting rows (migration 0010).
//!
//! The check-in reads the device's stamp with its enrollment row (`checkin.rs` folds it into the
//! context's first statement) and calls [`load_configuration`] here only when
//! [`DeviceConfigState::needs_load`] says so; its commit writes [`write_configuration`] in the
//! check-in's own transaction (`writes::commit_checkin`). Every other write is a job for the writer
//! thread (`SqliteStore::write`), every other read runs on a read connection.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::{Connection, Transaction, params};
use steward_core::*;
use time::OffsetDateTime;

use crate::error::{from_rusqlite, is_unique_violation, json_err};
use crate::rows::{NamedRow, all, exec, first, one};
use crate::{SqliteStore, bad, from_micros, micros, opt_micros, parse_id, writes};

fn encode_err(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("encoding JSON: {e}"))
}

fn version_of(v: i64) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| bad("profile version"))
}

/// A `profiles` row, with the assignment read separately ([`assignments_of`]).
fn profile_from_row(r: &NamedRow<'_>, assignment: Assignment) -> StoreResult<Profile> {
    Ok(Profile {
        id: parse_id(&r.text("id")?)?,
        name: r.text("name")?,
        platform: Platform::parse(&r.text("platform")?).ok_or_else(|| bad("profile platform"))?,
        description: r.text("description")?,
        priority: i32::try_from(r.int("priority")?).map_err(|_| bad("profile priority"))?,
        remediation: Remediation::parse(&r.text("remediation")?).ok_or_else(|| bad("profile remediation"))?,
        current_version: version_of(r.int("current_version")?)?,
        assignment: Assignment {
            all: r.int("assign_all")? != 0,
            ..assignment
        },
        created_at: from_micros(r.int("created_at")?)?,
        updated_at: from_micros(r.int("updated_at")?)?,
    })
}

fn version_from_row(r: &NamedRow<'_>) -> StoreResult<ProfileVersion> {
    Ok(ProfileVersion {
        profile_id: parse_id(&r.text("profile_id")?)?,
        version: version_of(r.int("version")?)?,
        settings: serde_json::from_str(&r.text("settings")?).map_err(json_err)?,
        digest: r.text("digest")?,
        config_lock: r.int("config_lock")? != 0,
        created_at: from_micros(r.int("created_at")?)?,
    })
}

fn device_setting_from_row(r: &NamedRow<'_>) -> StoreResult<DeviceSetting> {
    let in_flight = match r.opt_text("in_flight_op")? {
        Some(op) => Some(InFlight {
            op: OpKind::parse(&op).ok_or_else(|| bad("in-flight operation"))?,
            session: r
                .opt_text("in_flight_session")?
                .ok_or_else(|| bad("in-flight session"))?,
            sent_at: from_micros(r.opt_int("in_flight_at")?.ok_or_else(|| bad("in-flight time"))?)?,
        }),
        None => None,
    };
    Ok(DeviceSetting {
        path: r.text("path")?,
        profile_id: parse_id(&r.text("profile_id")?)?,
        profile_version: version_of(r.int("profile_version")?)?,
        setting: serde_json::from_str(&r.text("setting")?).map_err(json_err)?,
        status: SettingStatus::parse(&r.text("status")?).ok_or_else(|| bad("setting status"))?,
        reason: r.text("reason")?,
        in_flight,
        applied_digest: r.opt_text("applied_digest")?,
        status_code: r
            .opt_int("status_code")?
            .map(|c| u16::try_from(c).map_err(|_| bad("setting status code")))
            .transpose()?,
        error: r.opt_text("error")?,
        observed: r.opt_text("observed")?,
        observed_at: opt_micros(r.opt_int("observed_at")?)?,
        verified_at: opt_micros(r.opt_int("verified_at")?)?,
        updated_at: from_micros(r.int("updated_at")?)?,
    })
}

/// Adds one `profile_assignments` row to its profile's assignment in `by_profile`.
fn add_assignment_row(r: &NamedRow<'_>, by_profile: &mut BTreeMap<String, Assignment>) -> StoreResult<()> {
    let group: GroupId = parse_id(&r.text("group_id")?)?;
    let a = by_profile.entry(r.text("profile_id")?).or_default();
    if r.int("exclude")? != 0 {
        a.exclude_groups.push(group);
    } else {
        a.groups.push(group);
    }
    Ok(())
}

/// The assignment rows (`profile_id`, `group_id`, `exclude`) a query returns, by profile.
fn assignments_of(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<BTreeMap<String, Assignment>> {
    let mut by_profile = BTreeMap::new();
    let mut stmt = conn.prepare_cached(sql).map_err(from_rusqlite)?;
    let mut rows = stmt.query(params).map_err(from_rusqlite)?;
    while let Some(r) = rows.next().map_err(from_rusqlite)? {
        add_assignment_row(&NamedRow::new(r)?, &mut by_profile)?;
    }
    Ok(by_profile)
}

/// The profiles one statement selects (`SELECT * FROM profiles …`, with `key` as its parameter if
/// given: one profile), each with its assignment, in the caller's snapshot.
pub(crate) fn profiles_in(tx: &Connection, sql: &str, key: Option<&str>) -> StoreResult<Vec<Profile>> {
    let rows: Vec<(String, Profile)> = all(tx, sql, rusqlite::params_from_iter(key), |r| {
        Ok((r.text("id")?, profile_from_row(r, Assignment::default())?))
    })?;
    let mut assignments = match (key, rows.as_slice()) {
        (_, []) => BTreeMap::new(),
        (Some(_), [(id, _)]) => assignments_of(
            tx,
            "SELECT profile_id, group_id, exclude FROM profile_assignments WHERE profile_id = ?1 ORDER BY group_id",
            (id,),
        )?,
        _ => assignments_of(
            tx,
            "SELECT profile_id, group_id, exclude FROM profile_assignments ORDER BY group_id",
            (),
        )?,
    };
    Ok(rows
        .into_iter()
        .map(|(id, p)| {
            let a = assignments.remove(&id).unwrap_or_default();
            Profile {
                assignment: Assignment {
                    all: p.assignment.all,
                    ..a
                },
                ..p
            }
        })
        .collect())
}

/// [`profiles_in`] in a read snapshot of its own (the profiles and their assignments agree).
fn read_profiles(conn: &Connection, sql: &str, key: Option<&str>) -> StoreResult<Vec<Profile>> {
    let tx = conn.unchecked_transaction().map_err(from_rusqlite)?;
    profiles_in(&tx, sql, key)
}

/// The current configuration epoch.
fn epoch(conn: &Connection) -> StoreResult<i64> {
    one(conn, "SELECT epoch FROM configuration_epoch WHERE id = 1", (), |r| {
        r.int("epoch")
    })
}

pub(crate) fn bump_epoch(tx: &Transaction<'_>) -> StoreResult<()> {
    exec(tx, "UPDATE configuration_epoch SET epoch = epoch + 1 WHERE id = 1", ())?;
    Ok(())
}

/// The assignment rows of one platform's profiles (`?1`).
pub(crate) const ASSIGNMENTS_OF_PLATFORM: &str = "SELECT a.profile_id, a.group_id, a.exclude FROM profile_assignments a \
     JOIN profiles p ON p.id = a.profile_id WHERE p.platform = ?1 ORDER BY a.group_id";

/// One platform's (`?1`) profiles with a non-empty assignment, with their current version.
pub(crate) const CANDIDATES: &str = "SELECT p.id, p.name, p.priority, p.remediation, p.created_at, p.assign_all, \
     v.version, v.settings, v.config_lock FROM profiles p \
     JOIN profile_versions v ON v.profile_id = p.id AND v.version = p.current_version \
     WHERE p.platform = ?1 AND (p.assign_all = 1 OR EXISTS \
     (SELECT 1 FROM profile_assignments a WHERE a.profile_id = p.id AND a.exclude = 0)) ORDER BY p.name";

/// One enrollment's (`?1`) setting rows, by path.
pub(crate) const DEVICE_SETTINGS: &str = "SELECT * FROM device_settings WHERE enrollment_id = ?1 ORDER BY path";

/// A group by id (`?1`) if it is dynamic: its rule.
pub(crate) const DYNAMIC_GROUP: &str = "SELECT rule FROM groups WHERE id = ?1 AND rule IS NOT NULL";

/// One fact (`?2`) of an enrollment (`?1`).
pub(crate) const FACT: &str = "SELECT value, updated_at FROM device_facts WHERE enrollment_id = ?1 AND name = ?2";

/// What deciding the dynamic groups of enrollment `eid` needs, in the caller's snapshot: the
/// dynamic groups among those `candidates` name (one lookup by id each: the others cannot change
/// what the device gets), the device's facts their rules read, and the enrollment's fields.
fn dynamic_membership(
    conn: &Connection,
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
    let mut groups = Vec::new();
    for id in named {
        if let Some(rule) = first(conn, DYNAMIC_GROUP, (id.to_string(),), |r| r.text("rule"))? {
            groups.push(DynamicGroup {
                id,
                rule: crate::groups::parse_rule(&rule)?,
            });
        }
    }
    let mut names = steward_core::group_rule::rule_fact_names(&groups);
    if wants_lock {
        // A candidate asks for the device-side lock: the platform decides support from these.
        names.extend(steward_core::configuration::DEVICE_LOCK_FACTS);
        names.sort();
        names.dedup();
    }
    let mut facts = Vec::new();
    for name in names {
        if name == steward_core::group_rule::TAGS {
            facts.extend(crate::groups::tag_facts(conn, eid)?);
            continue;
        }
        if let Some(f) = first(conn, FACT, (eid, name.as_str()), |r| {
            Ok(DeviceFact {
                name: name.clone(),
                value: r.text("value")?,
                updated_at: from_micros(r.int("updated_at")?)?,
            })
        })? {
            facts.push(f);
        }
    }
    Ok(DynamicMembership {
        groups,
        facts,
        enrollment,
    })
}

/// What a reconciliation of `enrollment` loads, inside the caller's read snapshot: the platform's
/// profiles with a non-empty assignment (with their current version's settings, by name), the
/// device's rows (by path), and what deciding its dynamic groups needs.
pub(crate) fn load_configuration(conn: &Connection, enrollment: &Enrollment) -> StoreResult<DeviceConfiguration> {
    let eid = enrollment.id.to_string();
    let platform = enrollment.platform;
    let mut assignments = assignments_of(conn, ASSIGNMENTS_OF_PLATFORM, (platform.as_str(),))?;
    let candidates: Vec<AssignedProfile> = all(conn, CANDIDATES, (platform.as_str(),), |r| {
        Ok((
            r.text("id")?,
            AssignedProfile {
                id: parse_id(&r.text("id")?)?,
                name: r.text("name")?,
                priority: i32::try_from(r.int("priority")?).map_err(|_| bad("profile priority"))?,
                remediation: Remediation::parse(&r.text("remediation")?).ok_or_else(|| bad("profile remediation"))?,
                created_at: from_micros(r.int("created_at")?)?,
                version: version_of(r.int("version")?)?,
                assignment: Assignment {
                    all: r.int("assign_all")? != 0,
                    ..Assignment::default()
                },
                settings: serde_json::from_str(&r.text("settings")?).map_err(json_err)?,
                config_lock: r.int("config_lock")? != 0,
            },
        ))
    })?
    .into_iter()
    .map(|(id, p)| {
        let a = assignments.remove(&id).unwrap_or_default();
        AssignedProfile {
            assignment: Assignment {
                all: p.assignment.all,
                ..a
            },
            ..p
        }
    })
    .collect();
    let settings = all(conn, DEVICE_SETTINGS, (&eid,), device_setting_from_row)?;
    let rollouts = crate::rollouts::load_candidate_rollouts(conn, &eid, platform)?;
    let wants_lock = candidates.iter().any(|p| p.config_lock) || rollouts.iter().any(|r| r.from_config_lock);
    let dynamic = dynamic_membership(conn, &eid, &candidates, EnrollmentFields::of(enrollment), wants_lock)?;
    Ok(DeviceConfiguration {
        groups: enrollment.group_id.into_iter().collect(),
        candidates,
        settings,
        rollouts,
        dynamic,
        lock: None,
    })
}

/// Writes a check-in's configuration part inside its transaction: rows upserted by path, paths
/// deleted, the stamp replaced, the events appended to the outbox.
pub(crate) fn write_configuration(
    tx: &Transaction<'_>,
    eid: &str,
    c: &ConfigurationCommit,
    now: OffsetDateTime,
) -> StoreResult<()> {
    if !c.upserts.is_empty() {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO device_settings (enrollment_id, path, profile_id, profile_version, setting, status, \
                 reason, in_flight_op, in_flight_session, in_flight_at, applied_digest, status_code, error, \
                 observed, observed_at, verified_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
                 ON CONFLICT (enrollment_id, path) DO UPDATE SET profile_id = excluded.profile_id, \
                 profile_version = excluded.profile_version, setting = excluded.setting, status = excluded.status, \
                 reason = excluded.reason, in_flight_op = excluded.in_flight_op, \
                 in_flight_session = excluded.in_flight_session, in_flight_at = excluded.in_flight_at, \
                 applied_digest = excluded.applied_digest, status_code = excluded.status_code, \
                 error = excluded.error, observed = excluded.observed, observed_at = excluded.observed_at, \
                 verified_at = excluded.verified_at, updated_at = excluded.updated_at",
            )
            .map_err(from_rusqlite)?;
        for r in &c.upserts {
            let f = r.in_flight.as_ref();
            upsert
                .execute(params![
                    eid,
                    r.path,
                    r.profile_id.to_string(),
                    i64::from(r.profile_version),
                    serde_json::to_string(&r.setting).map_err(encode_err)?,
                    r.status.as_str(),
                    r.reason,
                    f.map(|f| f.op.as_str()),
                    f.map(|f| f.session.as_str()),
                    f.map(|f| micros(f.sent_at)),
                    r.applied_digest,
                    r.status_code.map(i64::from),
                    r.error,
                    r.observed,
                    r.observed_at.map(micros),
                    r.verified_at.map(micros),
                    micros(r.updated_at),
                ])
                .map_err(from_rusqlite)?;
        }
    }
    for path in &c.deletes {
        exec(
            tx,
            "DELETE FROM device_settings WHERE enrollment_id = ?1 AND path = ?2",
            params![eid, path],
        )?;
    }
    let s = &c.state;
    // A stamp changed since the context read it (core's `expected_state`): keep its verify_at and
    // force a reconciliation at the next check-in (epoch_seen 0). The stored row is compared
    // null-safely (`IS`); no expectation (?5 NULL) writes the stamp as given.
    let expected = c.expected_state;
    exec(
        tx,
        "INSERT INTO device_config_state (enrollment_id, epoch_seen, unsettled, verify_at) \
         VALUES (?1, CASE WHEN ?5 IS NULL OR (?5 = 0 AND ?6 IS NULL) THEN ?2 ELSE 0 END, ?3, \
                 CASE WHEN ?5 IS NULL OR (?5 = 0 AND ?6 IS NULL) THEN ?4 ELSE NULL END) \
         ON CONFLICT (enrollment_id) DO UPDATE SET \
           epoch_seen = CASE WHEN ?5 IS NULL OR (device_config_state.epoch_seen = ?5 \
             AND device_config_state.verify_at IS ?6) THEN ?2 ELSE 0 END, \
           unsettled = excluded.unsettled, \
           verify_at = CASE WHEN ?5 IS NULL OR (device_config_state.epoch_seen = ?5 \
             AND device_config_state.verify_at IS ?6) THEN ?4 ELSE device_config_state.verify_at END",
        params![
            eid,
            s.epoch_seen,
            i64::from(s.unsettled),
            s.verify_at.map(micros),
            expected.map(|x| x.epoch_seen),
            expected.and_then(|x| x.verify_at).map(micros)
        ],
    )?;
    for e in &c.events {
        writes::insert_event(tx, eid, e, now)?;
    }
    Ok(())
}

/// Refuses a write whose version numbers do not describe a change of the profile as
/// [`ProfileWrite`] defines it (a caller's bug; nothing is written).
fn check_versions(w: &ProfileWrite) -> StoreResult<()> {
    let p = &w.profile;
    let wrong = |why: &str| Err(StoreError::Conflict(format!("profile {}: {why}", p.name)));
    if let Some(v) = &w.new_version {
        if v.profile_id != p.id {
            return wrong("the new version belongs to another profile");
        }
        if v.version != p.current_version {
            return wrong("the new version is not the profile's current version");
        }
    }
    match (w.expected_version, &w.new_version) {
        (None, Some(v)) if v.version == 1 => Ok(()),
        (None, _) => wrong("a new profile starts with its version 1"),
        (Some(e), Some(v)) if e.checked_add(1) == Some(v.version) => Ok(()),
        (Some(_), Some(_)) => wrong("the new version does not follow the expected one"),
        (Some(e), None) if e == p.current_version => Ok(()),
        (Some(_), None) => wrong("the current version changes without a new version"),
    }
}

pub(crate) fn write_one_profile(tx: &Transaction<'_>, w: &ProfileWrite) -> StoreResult<()> {
    check_versions(w)?;
    let p = &w.profile;
    let id = p.id.to_string();
    let taken = |e: &rusqlite::Error| {
        is_unique_violation(e).then(|| StoreError::Conflict(format!("profile {} (name or id) exists", p.name)))
    };
    let res = match w.expected_version {
        None => tx
            .prepare_cached(
                "INSERT INTO profiles (id, name, platform, description, priority, remediation, current_version, \
                 assign_all, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    p.name,
                    p.platform.as_str(),
                    p.description,
                    i64::from(p.priority),
                    p.remediation.as_str(),
                    i64::from(p.current_version),
                    p.assignment.all,
                    micros(p.created_at),
                    micros(p.updated_at),
                ])
            }),
        // Compare-and-set on the current version: two concurrent applies cannot both append it.
        Some(expected) => tx
            .prepare_cached(
                "UPDATE profiles SET name = ?1, platform = ?2, description = ?3, priority = ?4, remediation = ?5, \
                 current_version = ?6, assign_all = ?7, updated_at = ?8 WHERE id = ?9 AND current_version = ?10",
            )
            .and_then(|mut s| {
                s.execute(params![
                    p.name,
                    p.platform.as_str(),
                    p.description,
                    i64::from(p.priority),
                    p.remediation.as_str(),
                    i64::from(p.current_version),
                    p.assignment.all,
                    micros(p.updated_at),
                    id,
                    i64::from(expected),
                ])
            }),
    };
    match res {
        Ok(0) => {
            return Err(StoreError::Conflict(format!(
                "profile {}: not at version {} any more (or gone)",
                p.name,
                w.expected_version.unwrap_or_default()
            )));
        }
        Ok(_) => {}
        Err(e) => return Err(taken(&e).unwrap_or_else(|| from_rusqlite(e))),
    }
    if let Some(v) = &w.new_version {
        let res = tx
            .prepare_cached(
                "INSERT INTO profile_versions (profile_id, version, settings, digest, created_at, config_lock) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    i64::from(v.version),
                    serde_json::to_string(&v.settings)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                    v.digest,
                    micros(v.created_at),
                    v.config_lock,
                ])
            });
        match res {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "profile {}: version {} exists",
                    p.name, v.version
                )));
            }
            other => {
                other.map_err(from_rusqlite)?;
            }
        }
    }
    exec(tx, "DELETE FROM profile_assignments WHERE profile_id = ?1", (&id,))?;
    let named = p
        .assignment
        .groups
        .iter()
        .map(|g| (g, false))
        .chain(p.assignment.exclude_groups.iter().map(|g| (g, true)));
    for (group, exclude) in named {
        let g = group.to_string();
        let exists: bool = one(
            tx,
            "SELECT EXISTS (SELECT 1 FROM groups WHERE id = ?1) AS x",
            (&g,),
            |r| Ok(r.int("x")? != 0),
        )?;
        if !exists {
            return Err(StoreError::Conflict(format!(
                "profile {}: group {g} does not exist",
                p.name
            )));
        }
        let res = tx
            .prepare_cached("INSERT INTO profile_assignments (profile_id, group_id, exclude) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![id, g, exclude]));
        match res {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "profile {}: group {g} is named twice in the assignment",
                    p.name
                )));
            }
            other => {
                other.map_err(from_rusqlite)?;
            }
        }
    }
    Ok(())
}

/// The verification request over the active enrollments `$filter` selects (`?1` is the time, `?2`
/// the target's id): a stamp with the read-back due now, created for a device never reconciled.
/// The WHERE is also what SQLite needs to parse an upsert after `INSERT … SELECT`.
macro_rules! verify_sql {
    ($filter:literal) => {
        concat!(
            "INSERT INTO device_config_state (enrollment_id, epoch_seen, unsettled, verify_at) ",
            "SELECT id, 0, 0, ?1 FROM enrollments WHERE state = 'active'",
            $filter,
            " ON CONFLICT (enrollment_id) DO UPDATE SET verify_at = excluded.verify_at"
        )
    };
}

/// Active enrollments of `platform` that `assignment` includes: in one statement when it names
/// only static groups; when it names a dynamic group, core evaluates the rules over every active
/// enrollment of the platform with the facts they read (`groups::rule_subjects`), in memory.
fn count_assigned_in(conn: &Connection, platform: Platform, a: &Assignment) -> StoreResult<u64> {
    if a.is_empty() {
        return Ok(0);
    }
    let dynamic = crate::groups::dynamic_groups_named(conn, a)?;
    if !dynamic.is_empty() {
        let names = steward_core::group_rule::rule_fact_names(&dynamic);
        let subjects = crate::groups::rule_subjects(conn, Some(platform), &names)?;
        return Ok(steward_core::group_rule::count_included(a, &dynamic, &subjects));
    }
    let ids =
        |v: &[GroupId]| serde_json::to_string(&v.iter().map(|g| g.to_string()).collect::<Vec<_>>()).map_err(encode_err);
    let n = one(
        conn,
        "SELECT COUNT(*) AS n FROM enrollments e WHERE e.state = 'active' AND e.platform = ?1 \
         AND (?2 = 1 OR e.group_id IN (SELECT value FROM json_each(?3))) \
         AND (e.group_id IS NULL OR e.group_id NOT IN (SELECT value FROM json_each(?4)))",
        params![platform.as_str(), a.all, ids(&a.groups)?, ids(&a.exclude_groups)?],
        |r| r.int("n"),
    )?;
    Ok(n as u64)
}

#[async_trait]
impl ProfileStore for SqliteStore {
    async fn write_profiles(&self, writes: &[ProfileWrite]) -> StoreResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let writes = writes.to_vec();
        self.write(move |tx| {
            for w in &writes {
                write_one_profile(tx, w)?;
            }
            bump_epoch(tx)
        })
        .await
    }

    async fn profile(&self, id: ProfileId) -> StoreResult<Option<Profile>> {
        let id = id.to_string();
        self.read(move |conn| {
            Ok(read_profiles(conn, "SELECT * FROM profiles WHERE id = ?1", Some(&id))?
                .into_iter()
                .next())
        })
        .await
    }

    async fn profile_by_name(&self, name: &str) -> StoreResult<Option<Profile>> {
        let name = name.to_owned();
        self.read(move |conn| {
            Ok(
                read_profiles(conn, "SELECT * FROM profiles WHERE name = ?1", Some(&name))?
                    .into_iter()
                    .next(),
            )
        })
        .await
    }

    async fn list_profiles(&self) -> StoreResult<Vec<Profile>> {
        self.read(|conn| read_profiles(conn, "SELECT * FROM profiles ORDER BY name", None))
            .await
    }

    async fn profile_version(&self, id: ProfileId, version: u32) -> StoreResult<Option<ProfileVersion>> {
        self.read_opt(
            "SELECT * FROM profile_versions WHERE profile_id = ?1 AND version = ?2",
            (id.to_string(), i64::from(version)),
            version_from_row,
        )
        .await
    }

    async fn profile_versions(&self, id: ProfileId) -> StoreResult<Vec<ProfileVersion>> {
        self.read_all(
            "SELECT * FROM profile_versions WHERE profile_id = ?1 ORDER BY version",
            (id.to_string(),),
            version_from_row,
        )
        .await
    }

    async fn delete_profile(&self, id: ProfileId) -> StoreResult<bool> {
        self.write(move |tx| {
            // The devices' rows stay: their next reconciliation applies each removal rule.
            let n = Self::each_for_id(
                tx,
                &[
                    "DELETE FROM profile_assignments WHERE profile_id = ?1",
                    "DELETE FROM profile_versions WHERE profile_id = ?1",
                    "DELETE FROM profiles WHERE id = ?1",
                ],
                &id.to_string(),
            )?;
            if n > 0 {
                bump_epoch(tx)?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn configuration_epoch(&self) -> StoreResult<i64> {
        self.read(epoch).await
    }

    async fn device_configuration(&self, id: EnrollmentId) -> StoreResult<DeviceConfiguration> {
        let eid = id.to_string();
        self.read(move |conn| {
            let tx = conn.unchecked_transaction().map_err(from_rusqlite)?;
            let enrollment = first(&tx, "SELECT * FROM enrollments WHERE id = ?1", (&eid,), |r| {
                crate::rows::enrollment_from_row(r)
            })?
            .ok_or(StoreError::NotFound)?;
            load_configuration(&tx, &enrollment)
        })
        .await
    }

    async fn count_assigned(&self, platform: Platform, assignment: &Assignment) -> StoreResult<u64> {
        let a = assignment.clone();
        self.read(move |conn| {
            // The groups and the facts in one snapshot.
            let tx = conn.unchecked_transaction().map_err(from_rusqlite)?;
            count_assigned_in(&tx, platform, &a)
        })
        .await
    }

    async fn profile_status(&self, id: ProfileId) -> StoreResult<ProfileStatusCounts> {
        let id = id.to_string();
        self.read(move |conn| {
            let tx = conn.unchecked_transaction().map_err(from_rusqlite)?;
            let profile = profiles_in(&tx, "SELECT * FROM profiles WHERE id = ?1", Some(&id))?
                .into_iter()
                .next()
                .ok_or(StoreError::NotFound)?;
            let mut settings = all(
                &tx,
                "SELECT s.profile_version, s.status, COUNT(*) AS n FROM device_settings s \
                 JOIN enrollments e ON e.id = s.enrollment_id \
                 WHERE s.profile_id = ?1 AND e.state = 'active' \
                 GROUP BY s.profile_version, s.status",
                (&id,),
                |r| {
                    Ok((
                        version_of(r.int("profile_version")?)?,
                        SettingStatus::parse(&r.text("status")?).ok_or_else(|| bad("setting status"))?,
                        r.int("n")? as u64,
                    ))
                },
            )?;
            settings.sort();
            Ok(ProfileStatusCounts {
                devices: count_assigned_in(&tx, profile.platform, &profile.assignment)?,
                settings,
            })
        })
        .await
    }

    async fn request_verification(&self, target: VerifyTarget, now: OffsetDateTime) -> StoreResult<u64> {
        let at = micros(now);
        match target {
            VerifyTarget::Enrollment(id) => self.write_one(verify_sql!(" AND id = ?2"), (at, id.to_string())).await,
            VerifyTarget::Group(g) => {
                self.write_one(verify_sql!(" AND group_id = ?2"), (at, g.to_string()))
                    .await
            }
            VerifyTarget::All => self.write_one(verify_sql!(""), (at,)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(expected: Option<u32>, current: u32, new: Option<u32>) -> ProfileWrite {
        let id = ProfileId::new();
        let at = OffsetDateTime::UNIX_EPOCH;
        ProfileWrite {
            profile: Profile {
                id,
                name: "p".into(),
                platform: Platform::Windows,
                description: String::new(),
                priority: 0,
                remediation: Remediation::Remediate,
                current_version: current,
                assignment: Assignment::default(),
                created_at: at,
                updated_at: at,
            },
            new_version: new.map(|version| ProfileVersion {
                profile_id: id,
                version,
                settings: vec![],
                digest: ProfileVersion::digest_of(&[]),
                config_lock: false,
                created_at: at,
            }),
            expected_version: expected,
        }
    }

    #[test]
    fn version_numbers_must_describe_a_create_or_the_next_version() {
        for ok in [
            write(None, 1, Some(1)),
            write(Some(1), 2, Some(2)),
            write(Some(3), 3, None),
        ] {
            assert!(check_versions(&ok).is_ok(), "{ok:?}");
        }
        let mut other_profile = write(None, 1, Some(1));
        other_profile.new_version.as_mut().unwrap().profile_id = ProfileId::new();
        for bad in [
            write(None, 1, None),
            write(None, 2, Some(2)),
            write(Some(1), 3, Some(3)),
            write(Some(1), 2, Some(1)),
            write(Some(1), 2, None),
            write(Some(u32::MAX), 0, Some(0)),
            other_profile,
        ] {
            assert!(matches!(check_versions(&bad), Err(StoreError::Conflict(_))), "{bad:?}");
        }
    }
}
