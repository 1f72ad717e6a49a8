//! Staged rollout of a profile version in rings (docs/ROLLOUTS.md), pure: every decision takes the
//! time as an input.
//!
//! A [`Rollout`] moves one profile from version `from` (0: the profile was not applied before) to
//! version `to` through [`Ring`]s in order: pilot groups, then growing percentages of the assigned
//! devices, then everyone. A device is in a percentage ring when its stable bucket
//! ([`rollout_bucket`]: the first eight bytes of SHA-256(profile id ‖ enrollment id) mod 10,000) is
//! below percent × 100, so a device released at 10 % stays released at 25 %. Rings are cumulative:
//! ring N's devices are every assigned device any ring up to N releases.
//!
//! Gates: a ring passes when its soak time has elapsed since it was released and its success ratio
//! (devices whose rows of the profile at version `to` are all applied or verified ÷ ring devices)
//! reaches the required one. The rollout halts as soon as its failure ratio (ring devices with a
//! failed row at version `to` ÷ ring devices) passes the threshold, soak or not. [`Rollout::evaluate`]
//! decides; [`Rollout::transition`] writes the decision as a [`RolloutTransition`] the store applies
//! only if the rollout is still in the state it was decided against.
//!
//! Reconciliation: [`resolve_rollouts`] runs before [`crate::configuration::desired_settings`] and
//! gives each device either version `to` (released) or `from` (waiting; nothing when from is 0).

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::configuration::{AssignedProfile, DeviceConfiguration, ProfileId, Setting};
use crate::model::{EnrollmentId, GroupId, uuid_id};

uuid_id!(
    /// One staged rollout of a profile version.
    RolloutId
);

/// Buckets of the per-device hash: a percentage ring of p % releases buckets below p × 100.
pub const BUCKETS: u64 = 10_000;

/// The device's stable bucket for a profile's rollouts, in 0..[`BUCKETS`]: the first eight bytes
/// (big-endian) of SHA-256 over the profile id's and the enrollment id's 16 bytes, mod 10,000. The
/// profile id is in the input so that the same devices are not always the first ones.
pub fn rollout_bucket(profile: ProfileId, enrollment: EnrollmentId) -> u16 {
    let mut input = [0u8; 32];
    input[..16].copy_from_slice(profile.0.as_bytes());
    input[16..].copy_from_slice(enrollment.0.as_bytes());
    let d = digest::digest(&digest::SHA256, &input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    // Below 10,000, so it fits.
    (u64::from_be_bytes(first) % BUCKETS) as u16
}

/// Which devices a ring adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RingTarget {
    /// The members of one group (the group's name is kept for people).
    Pilot {
        group: GroupId,
        #[serde(default)]
        group_name: String,
    },
    /// Devices whose bucket is below percent × 100 (1-99).
    Percent { percent: u8 },
    /// Every assigned device.
    Everyone,
}

/// One ring: its devices and, optionally, gates of its own (else the rollout's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ring {
    #[serde(flatten)]
    pub target: RingTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_ratio: Option<f64>,
}

impl Ring {
    /// Whether this ring includes a device in `groups` with bucket `bucket`.
    pub fn includes(&self, groups: &[GroupId], bucket: u16) -> bool {
        match &self.target {
            RingTarget::Pilot { group, .. } => groups.contains(group),
            RingTarget::Percent { percent } => u64::from(bucket) < u64::from(*percent) * 100,
            RingTarget::Everyone => true,
        }
    }

    /// For people: "pilot group ring-0", "25 % of devices", "everyone".
    pub fn describe(&self) -> String {
        match &self.target {
            RingTarget::Pilot { group, group_name } if group_name.is_empty() => format!("pilot group {group}"),
            RingTarget::Pilot { group_name, .. } => format!("pilot group {group_name}"),
            RingTarget::Percent { percent } => format!("{percent} % of devices"),
            RingTarget::Everyone => "everyone".into(),
        }
    }
}

// Ratios are checked to lie in 0..=1 when a rollout is built ([`RolloutSpec::build`]) and are
// never NaN, so equality is an equivalence and the check-in context (which derives Eq) can hold
// rollouts.
impl Eq for Ring {}
impl Eq for Rollout {}
impl Eq for CandidateRollout {}

/// Where a rollout stands. Running, paused and halted are active (one per profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    Paused,
    Halted,
    Completed,
    RolledBack,
}

impl RolloutState {
    pub const ACTIVE: [RolloutState; 3] = [Self::Running, Self::Paused, Self::Halted];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Halted => "halted",
            Self::Completed => "completed",
            Self::RolledBack => "rolled_back",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Paused,
            Self::Halted,
            Self::Completed,
            Self::RolledBack,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Gates used when a document or request names none.
pub const DEFAULT_SOAK_SECONDS: u32 = 3600;
pub const DEFAULT_SUCCESS_RATIO: f64 = 0.95;
pub const DEFAULT_FAILURE_THRESHOLD: f64 = 0.05;

/// A rollout as the admin asks for it (a profile document's `rollout:` section, the API's start
/// body): rings and gates; [`RolloutSpec::build`] validates it into a [`Rollout`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub rings: Vec<RingSpec>,
    #[serde(default = "default_soak")]
    pub soak_seconds: u32,
    #[serde(default = "default_success")]
    pub success_ratio: f64,
    #[serde(default = "default_failure")]
    pub failure_threshold: f64,
    #[serde(default = "default_true")]
    pub auto_advance: bool,
}

fn default_soak() -> u32 {
    DEFAULT_SOAK_SECONDS
}
fn default_success() -> f64 {
    DEFAULT_SUCCESS_RATIO
}
fn default_failure() -> f64 {
    DEFAULT_FAILURE_THRESHOLD
}
fn default_true() -> bool {
    true
}

/// One ring as a document names it: exactly one of `pilot` (a group name), `percent`, `everyone`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pilot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub everyone: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_ratio: Option<f64>,
}

/// Why a rollout request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutInvalid {
    #[error("a rollout needs at least one ring")]
    NoRings,
    #[error("ring {0}: name exactly one of pilot, percent, everyone")]
    RingKind(usize),
    #[error("ring {0}: unknown group {1:?}")]
    UnknownGroup(usize, String),
    #[error("ring {0}: a percentage is 1-99 and larger than the ring before")]
    Percent(usize),
    #[error("ring {0}: pilot rings come first")]
    PilotOrder(usize),
    #[error("ring {0}: everyone is the last ring")]
    EveryoneOrder(usize),
    #[error("{0} must be between 0 and 1")]
    Ratio(&'static str),
    #[error("the rollout goes from version {from} to {to}: {to} must be a later version")]
    Versions { from: u32, to: u32 },
}

fn check_ratio(name: &'static str, r: f64) -> Result<(), RolloutInvalid> {
    if (0.0..=1.0).contains(&r) {
        Ok(())
    } else {
        Err(RolloutInvalid::Ratio(name))
    }
}

impl RolloutSpec {
    /// The rollout of `profile` from `from` to `to`, started at `now`: rings checked (pilots first,
    /// percentages increasing, everyone last and appended when missing, so every rollout ends with
    /// the whole assignment), pilot group names resolved by `group`.
    pub fn build(
        &self,
        profile: ProfileId,
        from: u32,
        to: u32,
        group: impl Fn(&str) -> Option<GroupId>,
        now: OffsetDateTime,
    ) -> Result<Rollout, RolloutInvalid> {
        if to <= from {
            return Err(RolloutInvalid::Versions { from, to });
        }
        if self.rings.is_empty() {
            return Err(RolloutInvalid::NoRings);
        }
        check_ratio("success_ratio", self.success_ratio)?;
        check_ratio("failure_threshold", self.failure_threshold)?;
        let mut rings = Vec::with_capacity(self.rings.len() + 1);
        let mut last_percent = 0u8;
        for (i, r) in self.rings.iter().enumerate() {
            let n = i + 1;
            if let Some(s) = r.success_ratio {
                check_ratio("a ring's success_ratio", s)?;
            }
            let target = match (&r.pilot, r.percent, r.everyone) {
                (Some(name), None, false) => {
                    if last_percent > 0 {
                        return Err(RolloutInvalid::PilotOrder(n));
                    }
                    let g = group(name).ok_or_else(|| RolloutInvalid::UnknownGroup(n, name.clone()))?;
                    RingTarget::Pilot {
                        group: g,
                        group_name: name.clone(),
                    }
                }
                (None, Some(p), false) => {
                    if !(1..=99).contains(&p) || p <= last_percent {
                        return Err(RolloutInvalid::Percent(n));
                    }
                    last_percent = p;
                    RingTarget::Percent { percent: p }
                }
                (None, None, true) => {
                    if n != self.rings.len() {
                        return Err(RolloutInvalid::EveryoneOrder(n));
                    }
                    RingTarget::Everyone
                }
                _ => return Err(RolloutInvalid::RingKind(n)),
            };
            rings.push(Ring {
                target,
                soak_seconds: r.soak_seconds,
                success_ratio: r.success_ratio,
            });
        }
        if rings.last().is_some_and(|r| r.target != RingTarget::Everyone) {
            rings.push(Ring {
                target: RingTarget::Everyone,
                soak_seconds: None,
                success_ratio: None,
            });
        }
        Ok(Rollout {
            id: RolloutId::new(),
            profile_id: profile,
            from_version: from,
            to_version: to,
            rings,
            current_ring: 0,
            state: RolloutState::Running,
            reason: String::new(),
            ring_started_at: now,
            soak_seconds: self.soak_seconds,
            success_ratio: self.success_ratio,
            failure_threshold: self.failure_threshold,
            auto_advance: self.auto_advance,
            created_at: now,
            updated_at: now,
        })
    }
}

/// A staged rollout (a row of the store's `rollouts` table).
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub id: RolloutId,
    pub profile_id: ProfileId,
    /// The version devices outside the released rings keep (0: none, the profile is new to them).
    pub from_version: u32,
    pub to_version: u32,
    /// In order; the last is [`RingTarget::Everyone`].
    pub rings: Vec<Ring>,
    /// The released ring furthest along (0-based): every ring up to it is released.
    pub current_ring: u32,
    pub state: RolloutState,
    /// Why the state is what it is (a halt's ratio, who paused), for people.
    pub reason: String,
    /// When the current ring was released (or the rollout resumed): its soak counts from here.
    pub ring_started_at: OffsetDateTime,
    pub soak_seconds: u32,
    pub success_ratio: f64,
    pub failure_threshold: f64,
    pub auto_advance: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// One assigned device's rows of the rollout's profile at version `to`, as the store counts them
/// ([`crate::store::RolloutStore::rollout_device_stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutDeviceStat {
    pub enrollment: EnrollmentId,
    pub group: Option<GroupId>,
    /// Rows of the profile at version `to`.
    pub rows: u32,
    /// Of them, applied or verified.
    pub acknowledged: u32,
    /// Of them, failed.
    pub failed: u32,
}

/// A ring's numbers (cumulative: every device released up to and including the ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RingStats {
    /// 0-based ring index.
    pub ring: u32,
    pub devices: u64,
    /// Devices whose rows at version `to` are all applied or verified.
    pub acknowledged: u64,
    /// Devices with a failed row at version `to`.
    pub failed: u64,
}

impl RingStats {
    /// Acknowledged ÷ devices; a ring without devices has nothing to wait for (1).
    pub fn success_ratio(&self) -> f64 {
        if self.devices == 0 {
            1.0
        } else {
            self.acknowledged as f64 / self.devices as f64
        }
    }
    pub fn failure_ratio(&self) -> f64 {
        if self.devices == 0 {
            0.0
        } else {
            self.failed as f64 / self.devices as f64
        }
    }
}

/// What [`Rollout::evaluate`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to do yet (why, for people).
    Stay(String),
    /// Release the next ring.
    Advance,
    /// Stop releasing: the failure ratio passed the threshold (why).
    Halt(String),
    /// The last ring passed its gates.
    Complete,
}

/// A state change decided in core, written by the store only while the rollout is still in
/// `expected_state` at `expected_ring` (two replicas evaluating at once cannot both advance).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutTransition {
    pub expected_state: RolloutState,
    pub expected_ring: u32,
    /// The rollout after the change.
    pub rollout: Rollout,
    /// Whether what devices get changed (a ring released, a rollback): the store moves the
    /// configuration epoch in the same transaction, so devices reconcile.
    pub moves_epoch: bool,
}

/// An admin's request on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutAction {
    Advance,
    Pause,
    Resume,
    Rollback,
}

impl RolloutAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Advance => "advance",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Rollback => "rollback",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Advance, Self::Pause, Self::Resume, Self::Rollback]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// Why an action does not apply to the rollout's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a rollout that is {state}")]
pub struct ActionRefused {
    pub action: &'static str,
    pub state: RolloutState,
}

impl Rollout {
    /// Whether the rings released so far include the device.
    pub fn releases(&self, groups: &[GroupId], bucket: u16) -> bool {
        match self.state {
            RolloutState::RolledBack => false,
            RolloutState::Completed => true,
            _ => self
                .rings
                .iter()
                .take(self.current_ring as usize + 1)
                .any(|r| r.includes(groups, bucket)),
        }
    }

    /// The first ring (0-based) that includes the device.
    pub fn ring_of(&self, groups: &[GroupId], bucket: u16) -> Option<usize> {
        self.rings.iter().position(|r| r.includes(groups, bucket))
    }

    pub fn ring(&self) -> Option<&Ring> {
        self.rings.get(self.current_ring as usize)
    }

    fn is_last_ring(&self) -> bool {
        self.current_ring as usize + 1 >= self.rings.len()
    }

    /// Each ring's numbers from the assigned devices' stats (membership computed here, so the
    /// store needs no hashing).
    pub fn ring_stats(&self, devices: &[RolloutDeviceStat]) -> Vec<RingStats> {
        let mut out: Vec<RingStats> = (0..self.rings.len() as u32)
            .map(|ring| RingStats {
                ring,
                ..Default::default()
            })
            .collect();
        for d in devices {
            let groups: Vec<GroupId> = d.group.into_iter().collect();
            let Some(first) = self.ring_of(&groups, rollout_bucket(self.profile_id, d.enrollment)) else {
                continue;
            };
            let acked = d.rows > 0 && d.acknowledged == d.rows;
            for s in &mut out[first..] {
                s.devices += 1;
                s.acknowledged += u64::from(acked);
                s.failed += u64::from(d.failed > 0);
            }
        }
        out
    }

    /// The gates of the current ring (see the module documentation), for a running rollout.
    pub fn evaluate(&self, stats: &RingStats, now: OffsetDateTime) -> Decision {
        if self.state != RolloutState::Running {
            return Decision::Stay(format!("the rollout is {}", self.state));
        }
        let Some(ring) = self.ring() else {
            return Decision::Complete;
        };
        let n = self.current_ring + 1;
        if stats.failure_ratio() > self.failure_threshold {
            return Decision::Halt(format!(
                "ring {n} ({}): {} of {} devices failed ({:.1} % > {:.1} %)",
                ring.describe(),
                stats.failed,
                stats.devices,
                stats.failure_ratio() * 100.0,
                self.failure_threshold * 100.0
            ));
        }
        let soak = time::Duration::seconds(i64::from(ring.soak_seconds.unwrap_or(self.soak_seconds)));
        if now < self.ring_started_at + soak {
            return Decision::Stay(format!("ring {n} soaking until {}", self.ring_started_at + soak));
        }
        let need = ring.success_ratio.unwrap_or(self.success_ratio);
        if stats.success_ratio() < need {
            return Decision::Stay(format!(
                "ring {n}: {} of {} devices acknowledged, {:.0} % needed",
                stats.acknowledged,
                stats.devices,
                need * 100.0
            ));
        }
        if self.is_last_ring() {
            Decision::Complete
        } else if self.auto_advance {
            Decision::Advance
        } else {
            Decision::Stay(format!("ring {n} passed its gates; waiting for an admin to advance"))
        }
    }

    /// The transition a decision asks for, if any.
    pub fn apply_decision(&self, d: &Decision, now: OffsetDateTime) -> Option<RolloutTransition> {
        match d {
            Decision::Stay(_) => None,
            Decision::Advance => Some(self.advanced(now, String::new())),
            Decision::Halt(why) => Some(self.moved(RolloutState::Halted, why.clone(), now, false)),
            Decision::Complete => Some(self.moved(RolloutState::Completed, String::new(), now, false)),
        }
    }

    fn moved(&self, state: RolloutState, reason: String, now: OffsetDateTime, moves_epoch: bool) -> RolloutTransition {
        RolloutTransition {
            expected_state: self.state,
            expected_ring: self.current_ring,
            rollout: Rollout {
                state,
                reason,
                updated_at: now,
                ..self.clone()
            },
            moves_epoch,
        }
    }

    /// The next ring released (or, past the last, completed).
    fn advanced(&self, now: OffsetDateTime, reason: String) -> RolloutTransition {
        if self.is_last_ring() {
            return self.moved(RolloutState::Completed, reason, now, false);
        }
        let mut t = self.moved(RolloutState::Running, reason, now, true);
        t.rollout.current_ring += 1;
        t.rollout.ring_started_at = now;
        t
    }

    /// An admin's action: advance (running or paused; the gates are the admin's call), pause
    /// (running), resume (paused or halted; the ring's soak starts again), rollback (any active
    /// state).
    pub fn action(
        &self,
        action: RolloutAction,
        reason: String,
        now: OffsetDateTime,
    ) -> Result<RolloutTransition, ActionRefused> {
        use RolloutState::*;
        let refused = Err(ActionRefused {
            action: action.as_str(),
            state: self.state,
        });
        match (action, self.state) {
            (RolloutAction::Advance, Running | Paused) => Ok(self.advanced(now, reason)),
            (RolloutAction::Pause, Running) => Ok(self.moved(Paused, reason, now, false)),
            (RolloutAction::Resume, Paused | Halted) => {
                let mut t = self.moved(Running, reason, now, false);
                t.rollout.ring_started_at = now;
                Ok(t)
            }
            (RolloutAction::Rollback, Running | Paused | Halted) => Ok(self.moved(RolledBack, reason, now, true)),
            _ => refused,
        }
    }
}

/// A candidate profile's rollout, as the check-in loads it: the profile's latest rollout when it
/// targets the profile's current version and is active or rolled back (a completed one changes
/// nothing), with the `from` version's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateRollout {
    pub rollout: Rollout,
    /// The settings of version `from` (empty when from is 0).
    pub from_settings: Vec<Setting>,
    /// Whether version `from` asks for the device-side lock.
    pub from_config_lock: bool,
    /// This device's [`rollout_bucket`] for the profile, computed by the loader (which knows the
    /// enrollment).
    pub bucket: u16,
}

/// A setting of version `to` a device does not get yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutHold {
    pub profile_id: ProfileId,
    pub version: u32,
    pub setting: Setting,
    /// "waiting in rollout ring N (…)".
    pub reason: String,
}

/// The candidates with each rolled-out profile resolved to the version this device gets: `to` when
/// a released ring includes the device, else `from` (dropped when from is 0), with what waits.
pub fn resolve_rollouts(config: &DeviceConfiguration) -> (Vec<AssignedProfile>, Vec<RolloutHold>) {
    if config.rollouts.is_empty() {
        return (config.candidates.clone(), Vec::new());
    }
    // Static and dynamic memberships both count for a pilot ring and for the assignment.
    let groups = config.member_groups();
    let by_profile: BTreeMap<ProfileId, &CandidateRollout> =
        config.rollouts.iter().map(|c| (c.rollout.profile_id, c)).collect();
    let mut out = Vec::with_capacity(config.candidates.len());
    let mut holds = Vec::new();
    for p in &config.candidates {
        let Some(c) = by_profile.get(&p.id).filter(|c| c.rollout.to_version == p.version) else {
            out.push(p.clone());
            continue;
        };
        let r = &c.rollout;
        if r.releases(&groups, c.bucket) {
            out.push(p.clone());
            continue;
        }
        if r.state != RolloutState::RolledBack && p.assignment.includes(&groups) {
            let reason = match r.ring_of(&groups, c.bucket) {
                Some(i) => {
                    let mut s = format!("waiting in rollout ring {} ({})", i + 1, r.rings[i].describe());
                    if r.state != RolloutState::Running {
                        s.push_str(&format!("; the rollout is {}", r.state));
                    }
                    s
                }
                None => "waiting for the rollout".into(),
            };
            for s in &p.settings {
                let same = c
                    .from_settings
                    .iter()
                    .any(|f| f.path == s.path && f.digest() == s.digest());
                if !same {
                    holds.push(RolloutHold {
                        profile_id: p.id,
                        version: p.version,
                        setting: s.clone(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        if r.from_version > 0 {
            out.push(AssignedProfile {
                version: r.from_version,
                settings: c.from_settings.clone(),
                config_lock: c.from_config_lock,
                ..p.clone()
            });
        }
    }
    (out, holds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::OnRemove;
    use crate::configuration::{Assignment, Remediation};

    const T0: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    fn secs(n: i64) -> OffsetDateTime {
        T0 + time::Duration::seconds(n)
    }

    fn spec(rings: Vec<RingSpec>) -> RolloutSpec {
        RolloutSpec {
            rings,
            soak_seconds: 60,
            success_ratio: 0.9,
            failure_threshold: 0.2,
            auto_advance: true,
        }
    }

    fn pilot(name: &str) -> RingSpec {
        RingSpec {
            pilot: Some(name.into()),
            ..Default::default()
        }
    }

    fn pct(p: u8) -> RingSpec {
        RingSpec {
            percent: Some(p),
            ..Default::default()
        }
    }

    fn stats(devices: u64, acknowledged: u64, failed: u64) -> RingStats {
        RingStats {
            ring: 0,
            devices,
            acknowledged,
            failed,
        }
    }

    fn rollout(pilot_group: GroupId) -> Rollout {
        spec(vec![pilot("pilots"), pct(10), pct(50)])
            .build(ProfileId::new(), 1, 2, |n| (n == "pilots").then_some(pilot_group), T0)
            .unwrap()
    }

    #[test]
    fn buckets_are_stable_and_percentage_rings_nest() {
        let p = ProfileId::new();
        let e = EnrollmentId::new();
        assert_eq!(rollout_bucket(p, e), rollout_bucket(p, e));
        assert!(u64::from(rollout_bucket(p, e)) < BUCKETS);
        let ten = Ring {
            target: RingTarget::Percent { percent: 10 },
            soak_seconds: None,
            success_ratio: None,
        };
        let quarter = Ring {
            target: RingTarget::Percent { percent: 25 },
            ..ten.clone()
        };
        let mut in_ten = 0;
        for _ in 0..2000 {
            let b = rollout_bucket(p, EnrollmentId::new());
            if ten.includes(&[], b) {
                in_ten += 1;
                assert!(
                    quarter.includes(&[], b),
                    "a device in the 10 % ring stays in the 25 % ring"
                );
            }
        }
        // 10 % of 2000 = 200; a fair hash lands well within 120..280.
        assert!((120..280).contains(&in_ten), "{in_ten}");
    }

    #[test]
    fn specs_are_validated() {
        let g = GroupId::new();
        let lookup = |n: &str| (n == "pilots").then_some(g);
        let r = spec(vec![pilot("pilots"), pct(25)])
            .build(ProfileId::new(), 0, 1, lookup, T0)
            .unwrap();
        assert_eq!(r.rings.len(), 3, "everyone is appended");
        assert_eq!(r.rings[2].target, RingTarget::Everyone);
        assert_eq!(r.state, RolloutState::Running);
        let bad = |rings: Vec<RingSpec>| spec(rings).build(ProfileId::new(), 0, 1, lookup, T0).unwrap_err();
        assert_eq!(bad(vec![]), RolloutInvalid::NoRings);
        assert_eq!(bad(vec![pct(25), pct(10)]), RolloutInvalid::Percent(2));
        assert_eq!(bad(vec![pct(0)]), RolloutInvalid::Percent(1));
        assert_eq!(bad(vec![pct(10), pilot("pilots")]), RolloutInvalid::PilotOrder(2));
        assert_eq!(
            bad(vec![pilot("nobody")]),
            RolloutInvalid::UnknownGroup(1, "nobody".into())
        );
        let everyone = RingSpec {
            everyone: true,
            ..Default::default()
        };
        assert_eq!(bad(vec![everyone.clone(), pct(10)]), RolloutInvalid::EveryoneOrder(1));
        let both = RingSpec {
            percent: Some(5),
            everyone: true,
            ..Default::default()
        };
        assert_eq!(bad(vec![both]), RolloutInvalid::RingKind(1));
        let mut s = spec(vec![pct(5)]);
        s.failure_threshold = 1.5;
        assert_eq!(
            s.build(ProfileId::new(), 0, 1, lookup, T0).unwrap_err(),
            RolloutInvalid::Ratio("failure_threshold")
        );
        assert_eq!(
            spec(vec![pct(5)])
                .build(ProfileId::new(), 2, 2, lookup, T0)
                .unwrap_err(),
            RolloutInvalid::Versions { from: 2, to: 2 }
        );
    }

    #[test]
    fn evaluate_soaks_then_advances_then_completes() {
        let r = rollout(GroupId::new());
        // Soaking: 60 s from T0.
        assert!(matches!(r.evaluate(&stats(4, 4, 0), secs(59)), Decision::Stay(s) if s.contains("soaking")));
        // Soaked but too few acknowledgements (3/4 < 90 %).
        assert!(matches!(r.evaluate(&stats(4, 3, 0), secs(60)), Decision::Stay(s) if s.contains("3 of 4")));
        assert_eq!(r.evaluate(&stats(4, 4, 0), secs(60)), Decision::Advance);
        let t = r.apply_decision(&Decision::Advance, secs(60)).unwrap();
        assert_eq!((t.expected_state, t.expected_ring), (RolloutState::Running, 0));
        assert!(t.moves_epoch);
        let r2 = t.rollout;
        assert_eq!(r2.current_ring, 1);
        assert_eq!(r2.ring_started_at, secs(60));
        // The next ring soaks from its own release.
        assert!(matches!(r2.evaluate(&stats(10, 10, 0), secs(100)), Decision::Stay(_)));
        // The last ring passing completes.
        let last = Rollout {
            current_ring: 3,
            ..r2.clone()
        };
        assert_eq!(last.evaluate(&stats(10, 10, 0), secs(200)), Decision::Complete);
        let done = last.apply_decision(&Decision::Complete, secs(200)).unwrap();
        assert_eq!(done.rollout.state, RolloutState::Completed);
        assert!(!done.moves_epoch);
        // Without auto-advance the rollout waits for an admin.
        let manual = Rollout {
            auto_advance: false,
            ..r.clone()
        };
        assert!(matches!(manual.evaluate(&stats(4, 4, 0), secs(60)), Decision::Stay(s) if s.contains("admin")));
        // An empty ring has nothing to wait for.
        assert_eq!(r.evaluate(&stats(0, 0, 0), secs(60)), Decision::Advance);
    }

    #[test]
    fn evaluate_halts_on_failures_even_while_soaking() {
        let r = rollout(GroupId::new());
        // 1 of 4 failed = 25 % > 20 %.
        let d = r.evaluate(&stats(4, 2, 1), secs(1));
        assert!(matches!(&d, Decision::Halt(s) if s.contains("1 of 4")), "{d:?}");
        let t = r.apply_decision(&d, secs(1)).unwrap();
        assert_eq!(t.rollout.state, RolloutState::Halted);
        assert!(!t.moves_epoch, "a halt keeps what devices have");
        // At the threshold it does not halt.
        assert!(matches!(r.evaluate(&stats(5, 4, 1), secs(1)), Decision::Stay(_)));
        // Halted, paused: evaluation does nothing.
        assert!(matches!(
            t.rollout.evaluate(&stats(4, 4, 0), secs(999)),
            Decision::Stay(_)
        ));
    }

    #[test]
    fn actions_follow_the_state_machine() {
        let r = rollout(GroupId::new());
        let paused = r.action(RolloutAction::Pause, "admin".into(), secs(5)).unwrap().rollout;
        assert_eq!(paused.state, RolloutState::Paused);
        assert!(paused.action(RolloutAction::Pause, String::new(), secs(6)).is_err());
        assert!(matches!(paused.evaluate(&stats(1, 1, 0), secs(999)), Decision::Stay(_)));
        let resumed = paused
            .action(RolloutAction::Resume, String::new(), secs(10))
            .unwrap()
            .rollout;
        assert_eq!(resumed.state, RolloutState::Running);
        assert_eq!(resumed.ring_started_at, secs(10), "the soak starts again");
        let adv = resumed.action(RolloutAction::Advance, String::new(), secs(11)).unwrap();
        assert_eq!(adv.rollout.current_ring, 1);
        let halted = Rollout {
            state: RolloutState::Halted,
            ..r.clone()
        };
        assert_eq!(
            halted
                .action(RolloutAction::Advance, String::new(), secs(1))
                .unwrap_err(),
            ActionRefused {
                action: "advance",
                state: RolloutState::Halted
            }
        );
        let back = halted.action(RolloutAction::Rollback, String::new(), secs(2)).unwrap();
        assert_eq!(back.rollout.state, RolloutState::RolledBack);
        assert!(back.moves_epoch);
        assert!(
            back.rollout
                .action(RolloutAction::Resume, String::new(), secs(3))
                .is_err()
        );
        // Advancing past the last ring completes.
        let last = Rollout { current_ring: 3, ..r };
        let t = last.action(RolloutAction::Advance, String::new(), secs(4)).unwrap();
        assert_eq!(t.rollout.state, RolloutState::Completed);
    }

    fn setting(path: &str, value: &str) -> Setting {
        Setting {
            path: path.into(),
            format: "int".into(),
            verb: "replace".into(),
            value: value.into(),
            type_: None,
            readable: false,
            on_remove: OnRemove::Delete,
            remove_path: None,
        }
    }

    fn config(r: &Rollout, groups: Vec<GroupId>, bucket: u16, from: Vec<Setting>) -> DeviceConfiguration {
        DeviceConfiguration {
            groups,
            candidates: vec![AssignedProfile {
                id: r.profile_id,
                name: "p".into(),
                priority: 0,
                remediation: Remediation::Remediate,
                created_at: T0,
                version: r.to_version,
                assignment: Assignment {
                    all: true,
                    ..Default::default()
                },
                settings: vec![setting("./X", "2"), setting("./Y", "1")],
                config_lock: false,
            }],
            settings: vec![],
            rollouts: vec![CandidateRollout {
                rollout: r.clone(),
                from_settings: from,
                from_config_lock: false,
                bucket,
            }],
            dynamic: Default::default(),
            lock: None,
        }
    }

    #[test]
    fn devices_resolve_to_their_ring_version() {
        let g = GroupId::new();
        let r = rollout(g);
        let from = vec![setting("./X", "1"), setting("./Y", "1")];
        // A pilot member gets version 2.
        let (c, holds) = resolve_rollouts(&config(&r, vec![g], 9999, from.clone()));
        assert_eq!(c[0].version, 2);
        assert!(holds.is_empty());
        // Another device keeps version 1 and waits for ring 2 (10 %) for ./X only (./Y is unchanged).
        let (c, holds) = resolve_rollouts(&config(&r, vec![], 5, from.clone()));
        assert_eq!((c[0].version, c[0].settings.clone()), (1, from.clone()));
        assert_eq!(holds.len(), 1);
        assert_eq!(holds[0].setting.path, "./X");
        assert_eq!(holds[0].reason, "waiting in rollout ring 2 (10 % of devices)");
        // Released once ring 2 is.
        let r2 = Rollout {
            current_ring: 1,
            ..r.clone()
        };
        assert_eq!(resolve_rollouts(&config(&r2, vec![], 5, from.clone())).0[0].version, 2);
        // A bucket of 7000 waits for everyone (ring 4).
        let (_, holds) = resolve_rollouts(&config(&r2, vec![], 7000, from.clone()));
        assert_eq!(holds[0].reason, "waiting in rollout ring 4 (everyone)");
        // from = 0: the profile is not applied at all to a waiting device.
        let new = Rollout {
            from_version: 0,
            ..r.clone()
        };
        let (c, holds) = resolve_rollouts(&config(&new, vec![], 5, vec![]));
        assert!(c.is_empty());
        assert_eq!(holds.len(), 2);
        // Rolled back: everyone gets version 1 again, nothing waits.
        let back = Rollout {
            state: RolloutState::RolledBack,
            ..r.clone()
        };
        let (c, holds) = resolve_rollouts(&config(&back, vec![g], 5, from.clone()));
        assert_eq!(c[0].version, 1);
        assert!(holds.is_empty());
        // A paused rollout says so.
        let paused = Rollout {
            state: RolloutState::Paused,
            ..r.clone()
        };
        let (_, holds) = resolve_rollouts(&config(&paused, vec![], 5, from));
        assert!(holds[0].reason.ends_with("; the rollout is paused"));
    }

    /// Through core's plan/absorb: the pilot refuses version 2 (failed), the ring's failure ratio
    /// halts the rollout, the device outside the pilot never gets an apply of version 2, and the
    /// rollback brings the pilot's row back to version 1 as applied.
    #[test]
    fn a_refused_pilot_halts_and_rolls_back_through_plan_and_absorb() {
        use crate::checkin::Outcome;
        use crate::configuration::{ConfigurationContext, DeviceConfigState, OpAnswers, VerifyPolicy, absorb, plan};
        let g = GroupId::new();
        let r = rollout(g);
        let from = vec![setting("./X", "1"), setting("./Y", "1")];
        let (pilot, other) = (EnrollmentId::new(), EnrollmentId::new());
        let policy = VerifyPolicy::default();
        let ctx = |r: &Rollout, groups: Vec<GroupId>, rows| ConfigurationContext {
            epoch: 2,
            state: DeviceConfigState::default(),
            loaded: Some(DeviceConfiguration {
                settings: rows,
                ..config(r, groups, 9000, from.clone())
            }),
        };
        let answer = |e: EnrollmentId, c: &ConfigurationContext, code: u16| {
            let p = plan(e, c, T0).unwrap();
            let out: Vec<Outcome> = p.ops.iter().map(|o| Outcome::new(o.id, code, vec![], vec![])).collect();
            let commit = absorb(
                &p,
                &OpAnswers {
                    session: "s",
                    outcomes: &out,
                    ..Default::default()
                },
                &policy,
                T0,
            );
            (p, commit)
        };
        // Both devices hold version 1 (rolled back state = everyone on from).
        let v1 = Rollout {
            state: RolloutState::RolledBack,
            ..r.clone()
        };
        let (_, c) = answer(pilot, &ctx(&v1, vec![g], vec![]), 200);
        let pilot_rows = c.upserts;
        let (_, c) = answer(other, &ctx(&v1, vec![], vec![]), 200);
        let other_rows = c.upserts;
        // Running, pilot ring released: the pilot is offered ./X = 2 and refuses it.
        let (p, c) = answer(pilot, &ctx(&r, vec![g], pilot_rows.clone()), 500);
        assert_eq!(p.ops.len(), 1);
        assert_eq!(p.ops[0].setting.value, "2");
        let failed = c.upserts.clone();
        assert_eq!(failed[0].status, crate::configuration::SettingStatus::Failed);
        assert_eq!(failed[0].profile_version, 2);
        // The other device is offered nothing: it keeps version 1.
        let (p, _) = answer(other, &ctx(&r, vec![], other_rows), 200);
        assert!(p.ops.is_empty(), "{:?}", p.ops);
        // The ring's stats halt the rollout.
        let stats = r.ring_stats(&[RolloutDeviceStat {
            enrollment: pilot,
            group: Some(g),
            rows: 2,
            acknowledged: 1,
            failed: 1,
        }]);
        let d = r.evaluate(&stats[0], secs(3600));
        assert!(matches!(d, Decision::Halt(_)), "{d:?}");
        // Rolled back: the pilot's row is version 1 again, applied (the device holds it).
        let mut rows = pilot_rows.clone();
        rows.retain(|x| x.path != "./X");
        rows.extend(failed);
        let (p, c) = answer(pilot, &ctx(&v1, vec![g], rows), 200);
        assert!(p.ops.is_empty(), "nothing to send: the device still holds version 1");
        let x = c.upserts.iter().find(|x| x.path == "./X").unwrap();
        assert_eq!(
            (x.profile_version, x.status),
            (1, crate::configuration::SettingStatus::Applied)
        );
        assert_eq!(x.setting.value, "1");
    }

    #[test]
    fn ring_stats_are_cumulative() {
        let g = GroupId::new();
        let r = rollout(g);
        let pilot_dev = RolloutDeviceStat {
            enrollment: EnrollmentId::new(),
            group: Some(g),
            rows: 2,
            acknowledged: 2,
            failed: 0,
        };
        let other = RolloutDeviceStat {
            enrollment: EnrollmentId::new(),
            group: None,
            rows: 2,
            acknowledged: 1,
            failed: 1,
        };
        let s = r.ring_stats(&[pilot_dev, other.clone()]);
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].devices, s[0].acknowledged, s[0].failed), (1, 1, 0));
        assert_eq!((s[3].devices, s[3].acknowledged, s[3].failed), (2, 1, 1));
        assert_eq!(s[3].success_ratio(), 0.5);
    }
}
