//! [`RolloutStore`]: staged rollouts of profile versions (migration 0012). The check-in loads its
//! candidates' rollouts with the rest of the configuration ([`load_candidate_rollouts`], called by
//! `profiles::load_configuration`); state changes are compare-and-set on (state, current_ring).

use async_trait::async_trait;
use rusqlite::{Connection, Transaction, params};
use steward_core::*;

use crate::error::{from_rusqlite, is_unique_violation, json_err};
use crate::profiles::{bump_epoch, profiles_in, write_one_profile};
use crate::rows::{NamedRow, all, exec, first};
use crate::{SqliteStore, bad, from_micros, micros, opt_parse, parse_id};

fn version_of(v: i64) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| bad("rollout version"))
}

fn rollout_from_row(r: &NamedRow<'_>) -> StoreResult<Rollout> {
    Ok(Rollout {
        id: parse_id(&r.text("id")?)?,
        profile_id: parse_id(&r.text("profile_id")?)?,
        from_version: version_of(r.int("from_version")?)?,
        to_version: version_of(r.int("to_version")?)?,
        rings: serde_json::from_str(&r.text("rings")?).map_err(json_err)?,
        current_ring: version_of(r.int("current_ring")?)?,
        state: RolloutState::parse(&r.text("state")?).ok_or_else(|| bad("rollout state"))?,
        reason: r.text("reason")?,
        ring_started_at: from_micros(r.int("ring_started_at")?)?,
        soak_seconds: version_of(r.int("soak_seconds")?)?,
        success_ratio: r.get("success_ratio")?,
        failure_threshold: r.get("failure_threshold")?,
        auto_advance: r.int("auto_advance")? != 0,
        created_at: from_micros(r.int("created_at")?)?,
        updated_at: from_micros(r.int("updated_at")?)?,
    })
}

fn insert_rollout(tx: &Transaction<'_>, r: &Rollout) -> StoreResult<()> {
    let rings = serde_json::to_string(&r.rings).map_err(|e| StoreError::Backend(format!("encoding rings: {e}")))?;
    let res = tx
        .prepare_cached(
            "INSERT INTO rollouts (id, profile_id, from_version, to_version, rings, current_ring, state, reason, \
             ring_started_at, soak_seconds, success_ratio, failure_threshold, auto_advance, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )
        .and_then(|mut s| {
            s.execute(params![
                r.id.to_string(),
                r.profile_id.to_string(),
                i64::from(r.from_version),
                i64::from(r.to_version),
                rings,
                i64::from(r.current_ring),
                r.state.as_str(),
                r.reason,
                micros(r.ring_started_at),
                i64::from(r.soak_seconds),
                r.success_ratio,
                r.failure_threshold,
                r.auto_advance,
                micros(r.created_at),
                micros(r.updated_at),
            ])
        });
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
            "profile {} already has an active rollout",
            r.profile_id
        ))),
        Err(e) => match from_rusqlite(e) {
            // The profile does not exist (foreign key).
            StoreError::Backend(m) if m.contains("FOREIGN KEY") => Err(StoreError::NotFound),
            other => Err(other),
        },
    }
}

/// The newest rollout of each of one platform's (`?1`) profiles, when it targets the profile's
/// current version and is not completed, with the `from` version's settings.
const CANDIDATE_ROLLOUTS: &str = "SELECT r.*, v.settings AS from_settings, v.config_lock AS from_config_lock FROM rollouts r \
     JOIN profiles p ON p.id = r.profile_id AND p.current_version = r.to_version \
     LEFT JOIN profile_versions v ON v.profile_id = r.profile_id AND v.version = r.from_version \
     WHERE p.platform = ?1 AND r.state <> 'completed' \
     AND r.created_at = (SELECT MAX(r2.created_at) FROM rollouts r2 WHERE r2.profile_id = r.profile_id)";

/// The candidates' rollouts for enrollment `eid`, in the caller's read snapshot (only when the
/// configuration is loaded: the idle check-in never reads this).
pub(crate) fn load_candidate_rollouts(
    conn: &Connection,
    eid: &str,
    platform: Platform,
) -> StoreResult<Vec<CandidateRollout>> {
    let enrollment: EnrollmentId = parse_id(eid)?;
    all(conn, CANDIDATE_ROLLOUTS, (platform.as_str(),), |r| {
        let rollout = rollout_from_row(r)?;
        let from_settings = match r.opt_text("from_settings")? {
            Some(s) => serde_json::from_str(&s).map_err(json_err)?,
            None => Vec::new(),
        };
        Ok(CandidateRollout {
            bucket: rollout_bucket(rollout.profile_id, enrollment),
            rollout,
            from_settings,
            from_config_lock: r.opt_int("from_config_lock")?.is_some_and(|v| v != 0),
        })
    })
}

fn rollouts_where(conn: &Connection, sql: &str, key: &str) -> StoreResult<Vec<Rollout>> {
    all(conn, sql, (key,), rollout_from_row)
}

#[async_trait]
impl RolloutStore for SqliteStore {
    async fn write_profiles_with_rollouts(&self, writes: &[ProfileWrite], rollouts: &[Rollout]) -> StoreResult<()> {
        let (writes, rollouts) = (writes.to_vec(), rollouts.to_vec());
        self.write(move |tx| {
            for w in &writes {
                write_one_profile(tx, w)?;
            }
            for r in &rollouts {
                insert_rollout(tx, r)?;
            }
            // Devices outside the first ring keep (or go back to) the from version: they reconcile.
            bump_epoch(tx)
        })
        .await
    }

    async fn rollout(&self, id: RolloutId) -> StoreResult<Option<Rollout>> {
        let id = id.to_string();
        self.read(move |conn| first(conn, "SELECT * FROM rollouts WHERE id = ?1", (&id,), rollout_from_row))
            .await
    }

    async fn latest_rollout(&self, profile: ProfileId) -> StoreResult<Option<Rollout>> {
        let id = profile.to_string();
        self.read(move |conn| {
            first(
                conn,
                "SELECT * FROM rollouts WHERE profile_id = ?1 ORDER BY created_at DESC, id DESC LIMIT 1",
                (&id,),
                rollout_from_row,
            )
        })
        .await
    }

    async fn active_rollouts(&self) -> StoreResult<Vec<Rollout>> {
        self.read(move |conn| {
            all(
                conn,
                "SELECT * FROM rollouts WHERE state IN ('running', 'paused', 'halted') ORDER BY created_at, id",
                (),
                rollout_from_row,
            )
        })
        .await
    }

    async fn list_rollouts(&self, profile: ProfileId) -> StoreResult<Vec<Rollout>> {
        let id = profile.to_string();
        self.read(move |conn| {
            rollouts_where(
                conn,
                "SELECT * FROM rollouts WHERE profile_id = ?1 ORDER BY created_at DESC, id DESC",
                &id,
            )
        })
        .await
    }

    async fn transition_rollout(&self, t: &RolloutTransition) -> StoreResult<bool> {
        let t = t.clone();
        self.write(move |tx| {
            let r = &t.rollout;
            let n = exec(
                tx,
                "UPDATE rollouts SET current_ring = ?1, state = ?2, reason = ?3, ring_started_at = ?4, updated_at = ?5 \
                 WHERE id = ?6 AND state = ?7 AND current_ring = ?8",
                params![
                    i64::from(r.current_ring),
                    r.state.as_str(),
                    r.reason,
                    micros(r.ring_started_at),
                    micros(r.updated_at),
                    r.id.to_string(),
                    t.expected_state.as_str(),
                    i64::from(t.expected_ring),
                ],
            )?;
            if n == 1 && t.moves_epoch {
                bump_epoch(tx)?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn rollout_device_stats(&self, rollout: &Rollout) -> StoreResult<Vec<RolloutDeviceStat>> {
        let (pid, to) = (rollout.profile_id.to_string(), i64::from(rollout.to_version));
        self.read(move |conn| {
            let tx = conn.unchecked_transaction().map_err(from_rusqlite)?;
            let Some(p) = profiles_in(&tx, "SELECT * FROM profiles WHERE id = ?1", Some(&pid))?
                .into_iter()
                .next()
            else {
                return Ok(Vec::new());
            };
            if p.assignment.is_empty() {
                return Ok(Vec::new());
            }
            let ids = |v: &[GroupId]| {
                serde_json::to_string(&v.iter().map(|g| g.to_string()).collect::<Vec<_>>())
                    .map_err(|e| StoreError::Backend(format!("encoding JSON: {e}")))
            };
            // One row per assigned active enrollment; the LEFT JOIN walks the device's rows by
            // the primary key (enrollment_id, path). The unary `+` keeps the planner off
            // `device_settings_profile` (profile_id, profile_version, status), which it prefers for
            // its two equality terms: with it, every enrollment scanned all of the profile's rows
            // at that version, O(devices × rows); a 10,000-device ring of one 5-setting profile
            // did not finish in 20 minutes (docs/BENCHMARKS.md, "Desired-state configuration", 4).
            all(
                &tx,
                "SELECT e.id, e.group_id, COUNT(s.path) AS total, \
                 COALESCE(SUM(s.status IN ('applied', 'verified')), 0) AS ok, \
                 COALESCE(SUM(s.status = 'failed'), 0) AS failed \
                 FROM enrollments e LEFT JOIN device_settings s ON s.enrollment_id = e.id \
                 AND +s.profile_id = ?1 AND +s.profile_version = ?2 \
                 WHERE e.state = 'active' AND e.platform = ?3 \
                 AND (?4 = 1 OR e.group_id IN (SELECT value FROM json_each(?5))) \
                 AND (e.group_id IS NULL OR e.group_id NOT IN (SELECT value FROM json_each(?6))) \
                 GROUP BY e.id, e.group_id ORDER BY e.id",
                params![
                    pid,
                    to,
                    p.platform.as_str(),
                    p.assignment.all,
                    ids(&p.assignment.groups)?,
                    ids(&p.assignment.exclude_groups)?
                ],
                |r| {
                    let count = |c: &str| -> StoreResult<u32> { u32::try_from(r.int(c)?).map_err(|_| bad("count")) };
                    Ok(RolloutDeviceStat {
                        enrollment: parse_id(&r.text("id")?)?,
                        group: opt_parse(r.opt_text("group_id")?)?,
                        rows: count("total")?,
                        acknowledged: count("ok")?,
                        failed: count("failed")?,
                    })
                },
            )
        })
        .await
    }
}
