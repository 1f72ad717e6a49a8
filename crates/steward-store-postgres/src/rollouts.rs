//! [`RolloutStore`]: staged rollouts of profile versions (migration 0012, as SQLite's). Creation
//! goes with the profile writes under the configuration epoch's row lock (as every profile write);
//! one active rollout per profile is the partial unique index `rollouts_one_active`, so two
//! replicas starting at once cannot both succeed; state changes are compare-and-set on
//! (state, current_ring), re-checked by READ COMMITTED after a concurrent update's commit.

use async_trait::async_trait;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use steward_core::*;

use crate::error::{from_sqlx, json_err, unique_violation};
use crate::profiles::{check_write, move_epoch, write_profile};
use crate::rows::Col;
use crate::{PgStore, bad, from_micros, micros, opt_parse, parse_id};

fn u32_of(v: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| bad(what))
}

fn rollout_from_row(r: &PgRow) -> StoreResult<Rollout> {
    Ok(Rollout {
        id: parse_id(r.col("id")?)?,
        profile_id: parse_id(r.col("profile_id")?)?,
        from_version: u32_of(r.col("from_version")?, "rollout from_version")?,
        to_version: u32_of(r.col("to_version")?, "rollout to_version")?,
        rings: serde_json::from_str(r.col("rings")?).map_err(json_err)?,
        current_ring: u32_of(r.col("current_ring")?, "rollout current_ring")?,
        state: RolloutState::parse(r.col("state")?).ok_or_else(|| bad("rollout state"))?,
        reason: r.col("reason")?,
        ring_started_at: from_micros(r.col("ring_started_at")?)?,
        soak_seconds: u32_of(r.col("soak_seconds")?, "rollout soak_seconds")?,
        success_ratio: r.col("success_ratio")?,
        failure_threshold: r.col("failure_threshold")?,
        auto_advance: r.col("auto_advance")?,
        created_at: from_micros(r.col("created_at")?)?,
        updated_at: from_micros(r.col("updated_at")?)?,
    })
}

async fn insert_rollout(tx: &mut PgConnection, r: &Rollout) -> StoreResult<()> {
    let rings = serde_json::to_string(&r.rings).map_err(|e| StoreError::Backend(format!("encoding rings: {e}")))?;
    sqlx::query(
        "INSERT INTO rollouts (id, profile_id, from_version, to_version, rings, current_ring, state, reason, \
         ring_started_at, soak_seconds, success_ratio, failure_threshold, auto_advance, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(r.id.to_string())
    .bind(r.profile_id.to_string())
    .bind(i64::from(r.from_version))
    .bind(i64::from(r.to_version))
    .bind(rings)
    .bind(i64::from(r.current_ring))
    .bind(r.state.as_str())
    .bind(&r.reason)
    .bind(micros(r.ring_started_at))
    .bind(i64::from(r.soak_seconds))
    .bind(r.success_ratio)
    .bind(r.failure_threshold)
    .bind(r.auto_advance)
    .bind(micros(r.created_at))
    .bind(micros(r.updated_at))
    .execute(&mut *tx)
    .await
    .map_err(|e| match unique_violation(&e) {
        Some(_) => StoreError::Conflict(format!("profile {} already has an active rollout", r.profile_id)),
        None => from_sqlx(e),
    })?;
    Ok(())
}

/// The newest rollout of each of one platform's ($1) profiles, when it targets the profile's
/// current version and is not completed, with the `from` version's settings.
const CANDIDATE_ROLLOUTS: &str = "SELECT r.*, v.settings AS from_settings, v.config_lock AS from_config_lock FROM rollouts r \
     JOIN profiles p ON p.id = r.profile_id AND p.current_version = r.to_version \
     LEFT JOIN profile_versions v ON v.profile_id = r.profile_id AND v.version = r.from_version \
     WHERE p.platform = $1 AND r.state <> 'completed' \
     AND r.created_at = (SELECT MAX(r2.created_at) FROM rollouts r2 WHERE r2.profile_id = r.profile_id)";

/// The candidates' rollouts for enrollment `eid`, on the check-in's connection (only when the
/// configuration is loaded: the idle check-in never reads this).
pub(crate) async fn load_candidate_rollouts(
    conn: &mut PgConnection,
    eid: &str,
    platform: Platform,
) -> StoreResult<Vec<CandidateRollout>> {
    let enrollment: EnrollmentId = parse_id(eid)?;
    sqlx::query(CANDIDATE_ROLLOUTS)
        .bind(platform.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?
        .iter()
        .map(|r| {
            let rollout = rollout_from_row(r)?;
            let from_settings = match r.col::<Option<&str>>("from_settings")? {
                Some(s) => serde_json::from_str(s).map_err(json_err)?,
                None => Vec::new(),
            };
            Ok(CandidateRollout {
                bucket: rollout_bucket(rollout.profile_id, enrollment),
                rollout,
                from_settings,
                from_config_lock: r.col::<Option<bool>>("from_config_lock")?.unwrap_or(false),
            })
        })
        .collect()
}

impl PgStore {
    async fn rollouts_where(&self, sql: &'static str, key: Option<String>) -> StoreResult<Vec<Rollout>> {
        let mut q = sqlx::query(sql);
        if let Some(k) = key {
            q = q.bind(k);
        }
        q.fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(rollout_from_row)
            .collect()
    }
}

#[async_trait]
impl RolloutStore for PgStore {
    async fn write_profiles_with_rollouts(&self, writes: &[ProfileWrite], rollouts: &[Rollout]) -> StoreResult<()> {
        for w in writes {
            check_write(w)?;
        }
        let mut tx = self.begin().await?;
        // First, as every profile write: the epoch row's lock serialises them on every replica.
        move_epoch(&mut tx).await?;
        for w in writes {
            write_profile(&mut tx, w).await?;
        }
        for r in rollouts {
            insert_rollout(&mut tx, r).await?;
        }
        tx.commit().await.map_err(from_sqlx)
    }

    async fn rollout(&self, id: RolloutId) -> StoreResult<Option<Rollout>> {
        Ok(self
            .rollouts_where("SELECT * FROM rollouts WHERE id = $1", Some(id.to_string()))
            .await?
            .into_iter()
            .next())
    }

    async fn latest_rollout(&self, profile: ProfileId) -> StoreResult<Option<Rollout>> {
        Ok(self
            .rollouts_where(
                "SELECT * FROM rollouts WHERE profile_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
                Some(profile.to_string()),
            )
            .await?
            .into_iter()
            .next())
    }

    async fn active_rollouts(&self) -> StoreResult<Vec<Rollout>> {
        self.rollouts_where(
            "SELECT * FROM rollouts WHERE state IN ('running', 'paused', 'halted') ORDER BY created_at, id",
            None,
        )
        .await
    }

    async fn list_rollouts(&self, profile: ProfileId) -> StoreResult<Vec<Rollout>> {
        self.rollouts_where(
            "SELECT * FROM rollouts WHERE profile_id = $1 ORDER BY created_at DESC, id DESC",
            Some(profile.to_string()),
        )
        .await
    }

    async fn transition_rollout(&self, t: &RolloutTransition) -> StoreResult<bool> {
        let r = &t.rollout;
        let mut tx = self.begin().await?;
        if t.moves_epoch {
            // Taken first, as every profile write does (one lock order, no deadlock).
            move_epoch(&mut tx).await?;
        }
        let n = sqlx::query(
            "UPDATE rollouts SET current_ring = $1, state = $2, reason = $3, ring_started_at = $4, updated_at = $5 \
             WHERE id = $6 AND state = $7 AND current_ring = $8",
        )
        .bind(i64::from(r.current_ring))
        .bind(r.state.as_str())
        .bind(&r.reason)
        .bind(micros(r.ring_started_at))
        .bind(micros(r.updated_at))
        .bind(r.id.to_string())
        .bind(t.expected_state.as_str())
        .bind(i64::from(t.expected_ring))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?
        .rows_affected();
        if n == 1 {
            tx.commit().await.map_err(from_sqlx)?;
            Ok(true)
        } else {
            // Someone else moved it: nothing (not even the epoch) is written.
            tx.rollback().await.map_err(from_sqlx)?;
            Ok(false)
        }
    }

    async fn rollout_device_stats(&self, rollout: &Rollout) -> StoreResult<Vec<RolloutDeviceStat>> {
        let Some(p) = ProfileStore::profile(self, rollout.profile_id).await? else {
            return Ok(Vec::new());
        };
        if p.assignment.is_empty() {
            return Ok(Vec::new());
        }
        let ids = |v: &[GroupId]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        // One row per assigned active enrollment; the LEFT JOIN walks the device's rows by the
        // primary key (enrollment_id, path).
        sqlx::query(
            "SELECT e.id, e.group_id, COUNT(s.path) AS total, \
             COUNT(*) FILTER (WHERE s.status IN ('applied', 'verified')) AS ok, \
             COUNT(*) FILTER (WHERE s.status = 'failed') AS failed \
             FROM enrollments e LEFT JOIN device_settings s ON s.enrollment_id = e.id \
             AND s.profile_id = $1 AND s.profile_version = $2 \
             WHERE e.state = 'active' AND e.platform = $3 AND ($4 OR e.group_id = ANY($5)) \
             AND (e.group_id IS NULL OR e.group_id <> ALL($6)) \
             GROUP BY e.id, e.group_id ORDER BY e.id",
        )
        .bind(p.id.to_string())
        .bind(i64::from(rollout.to_version))
        .bind(p.platform.as_str())
        .bind(p.assignment.all)
        .bind(ids(&p.assignment.groups))
        .bind(ids(&p.assignment.exclude_groups))
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?
        .iter()
        .map(|r| {
            let count = |c: &str| -> StoreResult<u32> { u32_of(r.col(c)?, "count") };
            Ok(RolloutDeviceStat {
                enrollment: parse_id(r.col("id")?)?,
                group: opt_parse(r.col::<Option<String>>("group_id")?)?,
                rows: count("total")?,
                acknowledged: count("ok")?,
                failed: count("failed")?,
            })
        })
        .collect()
    }
}
