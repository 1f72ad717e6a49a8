//! Staged rollouts as the admin surfaces and the evaluation loop drive them (docs/ROLLOUTS.md):
//! start one for a profile's current version, show its rings' progress, advance, pause, resume or
//! roll it back, and [`Rollouts::evaluate_all`], which the server calls every few seconds to
//! advance, halt or complete running rollouts by their gates. The rules are
//! [`crate::rollout`]'s; every state change is a compare-and-set in the store, so replicas
//! evaluating at once cannot both advance a ring.

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use super::{Clock, ServiceError, ServiceResult, require};
use crate::access::{Permission, Principal};
use crate::configuration::Profile;
use crate::rollout::{Decision, RingStats, Rollout, RolloutAction, RolloutSpec, RolloutState, RolloutTransition};
use crate::store::{Store, StoreError};

/// A profile's rollout with its rings' numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutStatus {
    pub profile: Profile,
    pub rollout: Rollout,
    /// Per ring, cumulative (every device released up to and including the ring).
    pub rings: Vec<RingStats>,
    /// What the gates say now, for people ("ring 2 soaking until …"), for an active rollout.
    pub gate: Option<String>,
}

/// What one evaluation did to one rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluated {
    pub profile: String,
    pub ring: u32,
    /// `stay`, `advance`, `halt`, `complete`, `superseded`, or `raced` (another replica moved it).
    pub outcome: &'static str,
    pub detail: String,
}

#[derive(Clone)]
pub struct Rollouts {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

fn conflict(e: StoreError) -> ServiceError {
    match e {
        StoreError::Conflict(what) => ServiceError::Conflict(what),
        other => other.into(),
    }
}

impl Rollouts {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    async fn profile(&self, name: &str) -> ServiceResult<Profile> {
        self.store
            .profile_by_name(name)
            .await?
            .ok_or(ServiceError::NotFound("profile"))
    }

    async fn latest(&self, profile: &Profile) -> ServiceResult<Rollout> {
        self.store
            .latest_rollout(profile.id)
            .await?
            .ok_or(ServiceError::NotFound("rollout"))
    }

    /// Starts rolling the profile's current version out in rings, from the version before it (0
    /// for a profile's first version): devices outside the released rings go back to (or stay on)
    /// that version. Conflict if the profile has an active rollout. Applying a document with a
    /// `rollout:` section does the same atomically with the new version
    /// ([`super::Profiles::apply`]).
    pub async fn start(&self, who: &Principal, name: &str, spec: &RolloutSpec) -> ServiceResult<Rollout> {
        require(who, Permission::ProfilesWrite)?;
        let profile = self.profile(name).await?;
        let groups = self.store.list_groups().await?;
        let to = profile.current_version;
        let rollout = spec
            .build(
                profile.id,
                to.saturating_sub(1),
                to,
                |g| groups.iter().find(|x| x.name == g).map(|x| x.id),
                self.clock.now(),
            )
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        self.store
            .write_profiles_with_rollouts(&[], std::slice::from_ref(&rollout))
            .await
            .map_err(conflict)?;
        Ok(rollout)
    }

    /// The profile's newest rollout with its rings' numbers.
    pub async fn status(&self, who: &Principal, name: &str) -> ServiceResult<RolloutStatus> {
        require(who, Permission::ProfilesRead)?;
        let profile = self.profile(name).await?;
        let rollout = self.latest(&profile).await?;
        let devices = self.store.rollout_device_stats(&rollout).await?;
        let rings = rollout.ring_stats(&devices);
        let gate = rollout.state.is_active().then(|| {
            let current = rings.get(rollout.current_ring as usize).copied().unwrap_or_default();
            match rollout.evaluate(&current, self.clock.now()) {
                Decision::Stay(why) | Decision::Halt(why) => why,
                Decision::Advance => "the ring passed its gates; it advances at the next evaluation".into(),
                Decision::Complete => "the last ring passed its gates; it completes at the next evaluation".into(),
            }
        });
        Ok(RolloutStatus {
            profile,
            rollout,
            rings,
            gate,
        })
    }

    /// An admin's action on the profile's active rollout. Conflict when the action does not apply
    /// to its state, or when the rollout moved meanwhile.
    pub async fn act(&self, who: &Principal, name: &str, action: RolloutAction) -> ServiceResult<Rollout> {
        require(who, Permission::ProfilesWrite)?;
        let profile = self.profile(name).await?;
        let rollout = self.latest(&profile).await?;
        let reason = format!("{} by {}", action.as_str(), who.role_label());
        let t = rollout
            .action(action, reason, self.clock.now())
            .map_err(|e| ServiceError::Conflict(e.to_string()))?;
        if !self.store.transition_rollout(&t).await.map_err(conflict)? {
            return Err(ServiceError::Conflict(
                "the rollout changed meanwhile; look at its status and try again".into(),
            ));
        }
        Ok(t.rollout)
    }

    /// Evaluates every active rollout at `now` and writes what the gates decide (the server's
    /// loop calls it; see docs/ROLLOUTS.md). A rollout whose profile has since moved to another
    /// version without it (applied without a `rollout:` section) is completed as superseded.
    pub async fn evaluate_all(&self, now: OffsetDateTime) -> ServiceResult<Vec<Evaluated>> {
        let mut out = Vec::new();
        for r in self.store.active_rollouts().await? {
            let profile = self.store.profile(r.profile_id).await?;
            let (outcome, detail, t) = match profile.as_ref() {
                Some(p) if p.current_version == r.to_version => {
                    if r.state != RolloutState::Running {
                        continue;
                    }
                    let devices = self.store.rollout_device_stats(&r).await?;
                    let stats = r.ring_stats(&devices);
                    let current = stats.get(r.current_ring as usize).copied().unwrap_or_default();
                    let d = r.evaluate(&current, now);
                    let t = r.apply_decision(&d, now);
                    match d {
                        Decision::Stay(why) => ("stay", why, t),
                        Decision::Advance => ("advance", format!("ring {} released", r.current_ring + 2), t),
                        Decision::Halt(why) => ("halt", why, t),
                        Decision::Complete => ("complete", String::new(), t),
                    }
                }
                other => {
                    let why = match other {
                        Some(p) => format!("superseded by version {}", p.current_version),
                        None => "the profile was deleted".into(),
                    };
                    let t = RolloutTransition {
                        expected_state: r.state,
                        expected_ring: r.current_ring,
                        rollout: Rollout {
                            state: RolloutState::Completed,
                            reason: why.clone(),
                            updated_at: now,
                            ..r.clone()
                        },
                        moves_epoch: false,
                    };
                    ("superseded", why, Some(t))
                }
            };
            let outcome = match &t {
                Some(t) if !self.store.transition_rollout(t).await? => "raced",
                _ => outcome,
            };
            if outcome != "stay" {
                tracing::info!(profile = %r.profile_id, rollout = %r.id, outcome, %detail, "rollout evaluated");
            }
            out.push(Evaluated {
                profile: profile.map(|p| p.name).unwrap_or_default(),
                ring: r.current_ring,
                outcome,
                detail,
            });
        }
        Ok(out)
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}
