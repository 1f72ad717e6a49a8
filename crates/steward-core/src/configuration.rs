//! Desired-state configuration, platform-neutral: profiles with immutable numbered versions, their
//! assignment to groups or every device, and the reconciliation rules that decide, per device and
//! setting, what a check-in sends and what the device's answer means.
//!
//! The model:
//! - A [`Profile`] is a named, platform-specific list of [`Setting`]s. Every change of its settings
//!   appends a new [`ProfileVersion`] (numbered 1, 2, …; never rewritten); the profile's
//!   `current_version` is the one devices get.
//! - An [`Assignment`] says which devices a profile applies to: every device, or the members of some
//!   groups, minus the members of others ([`Assignment::includes`]).
//! - Per device the store keeps one [`DeviceSetting`] row per node path: what was last decided for
//!   the device (the setting, its profile and version), what is in flight, what the device last
//!   acknowledged, what it was last seen to hold, and a status with its reason.
//! - A check-in loads the device's assigned profiles and rows only when something may have changed
//!   ([`DeviceConfigState::needs_load`]): the configuration epoch moved (any profile or assignment
//!   was written), something of the device is unsettled, or a verification is due. An idle
//!   check-in of a settled device reads one small row more than before and writes nothing more.
//! - [`plan`] turns what is assigned and what the device has into operations: apply a setting whose
//!   acknowledged value differs from the desired one, remove (by the setting's [`OnRemove`]) a
//!   setting no profile assigns any more, read back readable settings when a verification is due.
//!   The platform adapter renders each operation as its own command, on the wire under the
//!   operation's id ([`SettingOp::id`]), sends what fits, and hands the answers to [`absorb`],
//!   which decides the rows, the events (drift, failure) and the device's new state. The result
//!   ([`ConfigurationCommit`]) is written in the check-in's own transaction.
//!
//! Conflicts: when two assigned profiles set the same path to different values, the winner is the
//! profile with the lowest `priority` number; equal priorities go to the profile created first;
//! equal creation times to the name that sorts first ([`Desired`], [`Conflict`]). The loser's
//! setting is not sent; the conflict is reported on both profiles and on the device.
//!
//! Device-side lock: a profile version may ask for `config_lock`, the platform's own lock of the
//! device's configuration (Windows 11: DMClient ConfigLock, which reverts local changes within
//! seconds). Whether a device supports it, and which settings turn it on, is the platform's
//! decision from the device's facts ([`DeviceLock`], set on [`DeviceConfiguration::lock`] by the
//! platform adapter); [`add_device_lock`] adds those settings to the desired ones when some
//! assigned profile asks, owned by the highest-ranked one, so they are sent, verified and — when
//! no assigned profile asks any more — removed by their removal rule like any setting. A
//! profile's own setting on the same path wins over the lock's.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::catalog::OnRemove;
use crate::checkin::Outcome;
use crate::command::CommandId;
use crate::event::NewDeviceEvent;
use crate::group_rule::{DynamicGroup, EnrollmentFields, member_groups};
use crate::inventory::DeviceFact;
use crate::model::{EnrollmentId, GroupId, Platform, uuid_id};

uuid_id!(
    /// A configuration profile.
    ProfileId
);

/// What happens when a device is seen to hold another value than the one its profile sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Remediation {
    /// Send the desired value again at once (the default).
    #[default]
    Remediate,
    /// Record the drift (event, status) and leave the device's value.
    Report,
}

impl Remediation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Remediate => "remediate",
            Self::Report => "report",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "remediate" => Some(Self::Remediate),
            "report" => Some(Self::Report),
            _ => None,
        }
    }
}

impl Serialize for OnRemove {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OnRemove {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OnRemove::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown on_remove {s:?}")))
    }
}

/// One setting of a profile version, as the platform adapter validated it. The node path is the
/// setting's key: unique within a version, the key of conflicts and of the device's rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Setting {
    /// The node (Windows: the OMA-DM LocURI; for a raw SyncML group, the group's name as
    /// `syncml:<name>`).
    pub path: String,
    /// The node's format (Windows: int, chr, bool, b64, xml, null; `syncml` for a raw group).
    pub format: String,
    /// How the value is written: `replace` (the default), `add`, `exec`, or `syncml` (a raw group).
    #[serde(default = "default_verb")]
    pub verb: String,
    /// The value as sent (for a raw group, the SyncML commands).
    #[serde(default)]
    pub value: String,
    /// The platform's content type of the value (Windows `syncml:metinf` Type), if any.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<String>,
    /// Whether the device answers a read of the node with the value (verification reads it back).
    #[serde(default)]
    pub readable: bool,
    pub on_remove: OnRemove,
    /// The node removal deletes or replaces, when it is not `path` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_path: Option<String>,
}

fn default_verb() -> String {
    "replace".into()
}

impl Setting {
    /// A digest of what is written to the device (verb, format, type, value): two settings with the
    /// same digest put the same thing on the node, so a device that acknowledged one needs nothing
    /// for the other.
    pub fn digest(&self) -> String {
        let canonical = serde_json::json!([self.verb, self.format, self.type_, self.value]).to_string();
        hex::encode(&digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref()[..16])
    }

    /// Whether a value read back from the device is this setting's value. Numbers compare as
    /// numbers, booleans ignoring case, everything else exactly after trimming surrounding space
    /// (devices pad some values).
    pub fn holds(&self, observed: &str) -> bool {
        let (want, got) = (self.value.trim(), observed.trim());
        match self.format.as_str() {
            "int" => match (want.parse::<i64>(), got.parse::<i64>()) {
                (Ok(a), Ok(b)) => a == b,
                _ => want == got,
            },
            "bool" => want.eq_ignore_ascii_case(got),
            _ => want == got,
        }
    }
}

/// Which devices a profile applies to: every device (`all`) or the members of `groups`, in either
/// case minus the members of `exclude_groups` (an exclusion always wins).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Assignment {
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub groups: Vec<GroupId>,
    #[serde(default)]
    pub exclude_groups: Vec<GroupId>,
}

impl Assignment {
    /// Whether a device that is a member of `groups` is assigned.
    pub fn includes(&self, groups: &[GroupId]) -> bool {
        let excluded = groups.iter().any(|g| self.exclude_groups.contains(g));
        !excluded && (self.all || groups.iter().any(|g| self.groups.contains(g)))
    }

    /// Whether it assigns anything at all.
    pub fn is_empty(&self) -> bool {
        !self.all && self.groups.is_empty()
    }
}

/// A configuration profile (its current state; its settings are in its versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub id: ProfileId,
    /// Unique; 1-64 lower-case letters, digits, `-`, `_` or `.` (a file name and a URL segment).
    pub name: String,
    pub platform: Platform,
    pub description: String,
    /// Conflict rank: the lowest number wins (see the module documentation).
    pub priority: i32,
    pub remediation: Remediation,
    /// The version devices get; versions are numbered from 1.
    pub current_version: u32,
    pub assignment: Assignment,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The rule for profile names, shared by every surface.
pub fn valid_profile_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.')
}

/// One immutable version of a profile's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileVersion {
    pub profile_id: ProfileId,
    pub version: u32,
    pub settings: Vec<Setting>,
    /// Digest of the settings, in order, and of `config_lock` ([`ProfileVersion::digest_with`]):
    /// an apply whose digest equals the current version's changes nothing.
    pub digest: String,
    /// Whether the version asks the platform to lock the device's configuration where the device
    /// supports it (see the module documentation).
    pub config_lock: bool,
    pub created_at: OffsetDateTime,
}

impl ProfileVersion {
    /// The digest of a version without the device-side lock.
    pub fn digest_of(settings: &[Setting]) -> String {
        Self::digest_with(settings, false)
    }

    /// The digest of a version's settings and its `config_lock`. Without the lock it is the
    /// settings' digest alone, as versions written before the option existed have it, so they
    /// stay unchanged.
    pub fn digest_with(settings: &[Setting], config_lock: bool) -> String {
        let mut canonical = serde_json::to_string(settings).unwrap_or_default();
        if config_lock {
            canonical.push_str("\nconfig_lock");
        }
        hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    }
}

/// A profile change, written atomically by [`crate::store::ProfileStore::write_profile`]: the
/// profile row as given (created when `expected_version` is None), a new version if the settings
/// changed, its assignment replaced, and the configuration epoch moved so devices reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileWrite {
    pub profile: Profile,
    /// The new version (its number is `profile.current_version`), if the settings changed.
    pub new_version: Option<ProfileVersion>,
    /// The current version the change was decided against: None creates the profile (Conflict if
    /// the name or id exists); Some(v) updates it (Conflict unless the stored current version is
    /// still v, so two concurrent applies cannot both append the same version number).
    pub expected_version: Option<u32>,
}

/// An assigned profile as a check-in sees it: its rank and the settings of the version the device
/// gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedProfile {
    pub id: ProfileId,
    pub name: String,
    pub priority: i32,
    pub remediation: Remediation,
    pub created_at: OffsetDateTime,
    pub version: u32,
    pub assignment: Assignment,
    pub settings: Vec<Setting>,
    /// The version asks for the device-side lock ([`ProfileVersion::config_lock`]).
    pub config_lock: bool,
}

/// Where a device setting stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingStatus {
    /// Decided, not yet sent (the reason says what it waits for).
    Pending,
    /// Sent; the device's answer has not come.
    Sent,
    /// Acknowledged by the device; not readable, or not read back yet.
    Applied,
    /// Read back from the device with the desired value.
    Verified,
    /// The device refused it (status code and error kept).
    Failed,
    /// Read back with another value than the desired one.
    Drifted,
    /// No profile assigns it any more; its removal is under way.
    Removing,
}

impl SettingStatus {
    pub const ALL: [SettingStatus; 7] = [
        Self::Pending,
        Self::Sent,
        Self::Applied,
        Self::Verified,
        Self::Failed,
        Self::Drifted,
        Self::Removing,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Applied => "applied",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::Drifted => "drifted",
            Self::Removing => "removing",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// What an operation on a device setting does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Write the setting's value.
    Apply,
    /// Undo the setting by its [`OnRemove`] (Delete the node or Replace it with a value).
    Remove,
    /// Read the node back.
    Verify,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "apply",
            Self::Remove => "remove",
            Self::Verify => "verify",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "apply" => Some(Self::Apply),
            "remove" => Some(Self::Remove),
            "verify" => Some(Self::Verify),
            _ => None,
        }
    }
}

/// An operation sent and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub op: OpKind,
    /// The check-in session that sent it ([`crate::checkin::SessionRecord::key`]): not sent again
    /// within that session; sent again in a later one if its answer never came.
    pub session: String,
    pub sent_at: OffsetDateTime,
}

/// One device's state of one setting (a row per enrollment and path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSetting {
    pub path: String,
    /// The profile and version the setting was last decided from (kept after the profile is
    /// unassigned or deleted, so its removal rule can still be applied).
    pub profile_id: ProfileId,
    pub profile_version: u32,
    pub setting: Setting,
    pub status: SettingStatus,
    /// Why the status is what it is, for people ("waiting for a user to sign in", the device's
    /// error, …); empty when nothing needs saying.
    pub reason: String,
    pub in_flight: Option<InFlight>,
    /// The digest ([`Setting::digest`]) of what the device last acknowledged on this node.
    pub applied_digest: Option<String>,
    /// The device's last status code for this setting.
    pub status_code: Option<u16>,
    /// The device's own error text, if it gave one (Windows `msft:originalerror`).
    pub error: Option<String>,
    /// The value last read back, and when.
    pub observed: Option<String>,
    pub observed_at: Option<OffsetDateTime>,
    pub verified_at: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
}

impl DeviceSetting {
    /// Whether the device needs nothing more for this row until the next verification.
    pub fn settled(&self) -> bool {
        self.in_flight.is_none()
            && matches!(
                self.status,
                SettingStatus::Applied | SettingStatus::Verified | SettingStatus::Failed | SettingStatus::Drifted
            )
    }
}

/// The per-device stamp a check-in reads to decide whether to load the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceConfigState {
    /// The configuration epoch the device was last reconciled at (0: never).
    pub epoch_seen: i64,
    /// Rows not settled ([`DeviceSetting::settled`]) after the last reconciliation.
    pub unsettled: u32,
    /// When the next read-back of the device's readable settings is due (None: nothing to read).
    pub verify_at: Option<OffsetDateTime>,
}

impl DeviceConfigState {
    /// Whether a check-in must load the device's configuration: the epoch moved since it was last
    /// reconciled, something is unsettled, or a verification is due.
    pub fn needs_load(&self, epoch: i64, now: OffsetDateTime) -> bool {
        self.epoch_seen != epoch || self.unsettled > 0 || self.verify_at.is_some_and(|t| t <= now)
    }
}

/// The configuration part of a check-in context.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigurationContext {
    /// The server's configuration epoch (moved by every profile or assignment write).
    pub epoch: i64,
    pub state: DeviceConfigState,
    /// Loaded only when [`DeviceConfigState::needs_load`] said so.
    pub loaded: Option<DeviceConfiguration>,
}

/// What the store loads for a reconciliation, in the check-in's read snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceConfiguration {
    /// The device's static groups (the enrollment's group); the dynamic ones it is a member of are
    /// decided from `dynamic` ([`DeviceConfiguration::member_groups`]).
    pub groups: Vec<GroupId>,
    /// Every profile of the device's platform with a non-empty assignment, with the settings of its
    /// current version ([`plan`] decides which apply to the device).
    pub candidates: Vec<AssignedProfile>,
    /// The device's rows, by path.
    pub settings: Vec<DeviceSetting>,
    /// The active (or rolled-back) rollouts of candidate profiles ([`crate::rollout`]): resolved
    /// per device by [`crate::rollout::resolve_rollouts`] before the desired settings.
    pub rollouts: Vec<crate::rollout::CandidateRollout>,
    /// The dynamic groups the candidates' assignments name, with what their rules read (and, when
    /// some candidate asks for the device-side lock, the facts [`DEVICE_LOCK_FACTS`]).
    pub dynamic: DynamicMembership,
    /// What the platform can lock on this device, decided by the platform adapter from the
    /// device's facts when some candidate asks for it (the stores leave it None: not decided,
    /// nothing is sent for the lock).
    pub lock: Option<DeviceLock>,
}

impl DeviceConfiguration {
    /// Whether some candidate (or the version a rollout holds a device at) asks for the
    /// device-side lock.
    pub fn asks_lock(&self) -> bool {
        self.candidates.iter().any(|p| p.config_lock) || self.rollouts.iter().any(|r| r.from_config_lock)
    }
}

/// The facts a platform decides device-side lock support from (platform-neutral names): the stores
/// load them with the configuration when some candidate asks for the lock, and a change of one
/// resets the device's configuration stamp ([`fact_resets_configuration`]).
pub const DEVICE_LOCK_FACTS: [crate::inventory::FactName; 2] = [
    crate::inventory::FactName::from_static("os.version"),
    crate::inventory::facts::SECURED_CORE,
];

/// Whether a change of fact `name` can change what the device gets (a dynamic group's rule reads
/// it, or the device-side lock's support depends on it): the stores reset the device's
/// configuration stamp when one changes.
pub fn fact_resets_configuration(name: &crate::inventory::FactName) -> bool {
    crate::group_rule::RuleFact::is_rule_fact(name) || DEVICE_LOCK_FACTS.contains(name)
}

/// Whether a device can be locked by its platform, as the platform adapter decided it
/// ([`crate::PlatformAdapter::device_lock`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceLock {
    /// The device supports it: these settings turn it on (their removal rules turn it off).
    Supported(Vec<Setting>),
    /// It does not, and why (for people: shown on the device's settings view).
    Unsupported(String),
}

/// The device-side lock as a device's settings view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLockView {
    /// The assigned profiles that ask for it, highest-ranked first (the first owns its settings).
    pub requested_by: Vec<String>,
    /// Whether the device supports it; the settings themselves are rows of the settings view.
    pub supported: bool,
    /// The lock's node paths when supported; why not otherwise.
    pub paths: Vec<String>,
    pub reason: String,
}

/// Adds the device-side lock's settings to `desired` when an assigned profile (of `candidates`,
/// resolved for the device; the device a member of `groups`) asks for it and `lock` says the device
/// supports it. Returns what the settings view shows: None when no assigned profile asks.
pub fn add_device_lock(
    desired: &mut BTreeMap<String, Desired>,
    candidates: &[AssignedProfile],
    groups: &[GroupId],
    lock: Option<&DeviceLock>,
) -> Option<DeviceLockView> {
    let mut asking: Vec<&AssignedProfile> = candidates
        .iter()
        .filter(|p| p.config_lock && p.assignment.includes(groups))
        .collect();
    if asking.is_empty() {
        return None;
    }
    asking.sort_by(|a, b| (a.priority, a.created_at, &a.name).cmp(&(b.priority, b.created_at, &b.name)));
    let owner = asking[0];
    let requested_by = asking.iter().map(|p| p.name.clone()).collect();
    match lock {
        Some(DeviceLock::Supported(settings)) => {
            for s in settings {
                // A profile's own setting on the lock's node wins over the lock.
                desired.entry(s.path.clone()).or_insert_with(|| Desired {
                    profile_id: owner.id,
                    profile_name: owner.name.clone(),
                    version: owner.version,
                    remediation: owner.remediation,
                    setting: s.clone(),
                });
            }
            Some(DeviceLockView {
                requested_by,
                supported: true,
                paths: settings.iter().map(|s| s.path.clone()).collect(),
                reason: String::new(),
            })
        }
        Some(DeviceLock::Unsupported(why)) => Some(DeviceLockView {
            requested_by,
            supported: false,
            paths: Vec::new(),
            reason: why.clone(),
        }),
        None => Some(DeviceLockView {
            requested_by,
            supported: false,
            paths: Vec::new(),
            reason: "the platform has not decided whether the device supports it".into(),
        }),
    }
}

/// What deciding a device's dynamic groups needs: the dynamic groups that matter (those some
/// candidate's assignment includes or excludes; the others cannot change what the device gets),
/// the device's facts their rules name, and its enrollment's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DynamicMembership {
    pub groups: Vec<DynamicGroup>,
    pub facts: Vec<DeviceFact>,
    pub enrollment: EnrollmentFields,
}

impl DynamicMembership {
    /// The dynamic groups of `all` that some candidate's assignment names.
    pub fn relevant(all: Vec<DynamicGroup>, candidates: &[AssignedProfile]) -> Vec<DynamicGroup> {
        all.into_iter()
            .filter(|g| {
                candidates
                    .iter()
                    .any(|p| p.assignment.groups.contains(&g.id) || p.assignment.exclude_groups.contains(&g.id))
            })
            .collect()
    }
}

impl DeviceConfiguration {
    /// The device's groups: its static groups and the dynamic groups whose rule it matches.
    pub fn member_groups(&self) -> Vec<GroupId> {
        let mut out = self.groups.clone();
        for g in member_groups(
            None,
            &self.dynamic.groups,
            &self.dynamic.facts,
            &self.dynamic.enrollment,
        ) {
            if !out.contains(&g) {
                out.push(g);
            }
        }
        out
    }
}

/// How often readable settings are read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyPolicy {
    pub interval: time::Duration,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            interval: time::Duration::hours(24),
        }
    }
}

/// The setting a device should hold on a path, and which profile it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub profile_id: ProfileId,
    pub profile_name: String,
    pub version: u32,
    pub remediation: Remediation,
    pub setting: Setting,
}

/// Two assigned profiles that set one path to different values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub path: String,
    pub winner: ProfileId,
    pub winner_name: String,
    pub loser: ProfileId,
    pub loser_name: String,
}

/// The device's desired settings from the profiles assigned to it, with the conflicts between
/// them (the conflict rule is the module documentation's).
pub fn desired_settings(
    candidates: &[AssignedProfile],
    groups: &[GroupId],
) -> (BTreeMap<String, Desired>, Vec<Conflict>) {
    let mut assigned: Vec<&AssignedProfile> = candidates.iter().filter(|p| p.assignment.includes(groups)).collect();
    assigned.sort_by(|a, b| (a.priority, a.created_at, &a.name).cmp(&(b.priority, b.created_at, &b.name)));
    let mut desired: BTreeMap<String, Desired> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for p in assigned {
        for s in &p.settings {
            match desired.get(&s.path) {
                Some(w) => {
                    if w.setting.digest() != s.digest() && w.profile_id != p.id {
                        conflicts.push(Conflict {
                            path: s.path.clone(),
                            winner: w.profile_id,
                            winner_name: w.profile_name.clone(),
                            loser: p.id,
                            loser_name: p.name.clone(),
                        });
                    }
                }
                None => {
                    desired.insert(
                        s.path.clone(),
                        Desired {
                            profile_id: p.id,
                            profile_name: p.name.clone(),
                            version: p.version,
                            remediation: p.remediation,
                            setting: s.clone(),
                        },
                    );
                }
            }
        }
    }
    (desired, conflicts)
}

/// Conflicts among a set of profiles whose assignments can meet on one device: both assign every
/// device, or they share a group (the admin surfaces show these on both profiles).
pub fn profile_conflicts(profiles: &[AssignedProfile]) -> Vec<Conflict> {
    let mut out = Vec::new();
    for (i, a) in profiles.iter().enumerate() {
        for b in &profiles[i + 1..] {
            let meet = (a.assignment.all && !b.assignment.is_empty())
                || (b.assignment.all && !a.assignment.is_empty())
                || a.assignment.groups.iter().any(|g| b.assignment.groups.contains(g));
            if !meet {
                continue;
            }
            // Evaluated as for a device both assignments include.
            let both: Vec<AssignedProfile> = [a, b]
                .into_iter()
                .map(|p| AssignedProfile {
                    assignment: Assignment {
                        all: true,
                        ..Default::default()
                    },
                    ..p.clone()
                })
                .collect();
            out.extend(desired_settings(&both, &[]).1);
        }
    }
    out
}

/// An operation a check-in sends for one device setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingOp {
    /// The id the operation goes on the wire with (Windows: the CmdID), derived from the
    /// enrollment, the path, the kind and the setting's digest, so the answer to an operation sent
    /// in an earlier message or session is recognised without storing a command row.
    pub id: CommandId,
    pub path: String,
    pub kind: OpKind,
    /// For Apply and Verify the desired setting; for Remove the setting being removed.
    pub setting: Setting,
    /// The session that already sent it, if it is in flight.
    pub last_session: Option<String>,
}

impl SettingOp {
    pub fn id_for(enrollment: EnrollmentId, path: &str, kind: OpKind, digest: &str) -> CommandId {
        let input = format!("{enrollment}\n{path}\n{}\n{digest}", kind.as_str());
        let d = digest::digest(&digest::SHA256, input.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&d.as_ref()[..16]);
        CommandId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }
}

/// What [`plan`] decided for one check-in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub enrollment: EnrollmentId,
    pub epoch: i64,
    pub desired: BTreeMap<String, Desired>,
    pub conflicts: Vec<Conflict>,
    /// The device's rows as loaded, by path.
    pub rows: BTreeMap<String, DeviceSetting>,
    /// The operations to offer the device, in path order (applies, removals, then reads).
    pub ops: Vec<SettingOp>,
    /// Whether this plan reads back the device's readable settings (a verification round).
    pub verifying: bool,
    /// The device's stamp as the check-in context read it.
    pub state_read: DeviceConfigState,
}

/// Decides what a check-in sends for the device's configuration (see the module documentation).
/// `verify_requested` forces a read-back round whatever the schedule says.
pub fn plan(enrollment: EnrollmentId, ctx: &ConfigurationContext, now: OffsetDateTime) -> Option<Plan> {
    let loaded = ctx.loaded.as_ref()?;
    let (candidates, _) = crate::rollout::resolve_rollouts(loaded);
    let groups = loaded.member_groups();
    let (mut desired, conflicts) = desired_settings(&candidates, &groups);
    add_device_lock(&mut desired, &candidates, &groups, loaded.lock.as_ref());
    let rows: BTreeMap<String, DeviceSetting> = loaded.settings.iter().map(|r| (r.path.clone(), r.clone())).collect();
    let verifying = ctx.state.verify_at.is_some_and(|t| t <= now);
    let mut ops = Vec::new();
    let op = |path: &str, kind: OpKind, setting: &Setting, row: Option<&DeviceSetting>| SettingOp {
        id: SettingOp::id_for(enrollment, path, kind, &setting.digest()),
        path: path.to_owned(),
        kind,
        setting: setting.clone(),
        last_session: row
            .and_then(|r| r.in_flight.as_ref())
            .filter(|f| f.op == kind)
            .map(|f| f.session.clone()),
    };
    for (path, d) in &desired {
        let row = rows.get(path);
        let digest = d.setting.digest();
        let acknowledged = row.is_some_and(|r| r.applied_digest.as_deref() == Some(digest.as_str()));
        let failed_same = row.is_some_and(|r| {
            r.status == SettingStatus::Failed && r.in_flight.is_none() && r.setting.digest() == digest
        });
        // A read-back already in flight stays offered until it is answered: its answer may come in
        // a later message, after `verify_at` moved on, and only offered ops take answers.
        let verify_in_flight = row.is_some_and(|r| r.in_flight.as_ref().is_some_and(|f| f.op == OpKind::Verify));
        if !acknowledged && (!failed_same || verifying) {
            ops.push(op(path, OpKind::Apply, &d.setting, row));
        } else if acknowledged && (verifying || verify_in_flight) && d.setting.readable {
            ops.push(op(path, OpKind::Verify, &d.setting, row));
        }
    }
    for (path, r) in &rows {
        if desired.contains_key(path) {
            continue;
        }
        let failed = r.status == SettingStatus::Failed && r.in_flight.is_none();
        if r.applied_digest.is_some() && r.setting.on_remove != OnRemove::Keep && (!failed || verifying) {
            ops.push(op(path, OpKind::Remove, &r.setting, Some(r)));
        }
    }
    Some(Plan {
        enrollment,
        epoch: ctx.epoch,
        desired,
        conflicts,
        rows,
        ops,
        verifying,
        state_read: ctx.state,
    })
}

/// The device's answers as the platform adapter read them, for [`absorb`].
#[derive(Debug, Clone, Default)]
pub struct OpAnswers<'a> {
    /// The session the message belongs to.
    pub session: &'a str,
    /// Operations included in our answer.
    pub sent: &'a [CommandId],
    /// The device's answers to operations (sent in this or an earlier message).
    pub outcomes: &'a [Outcome],
    /// Operations offered but not sent, with why (a user-scoped setting before sign-in, no room
    /// left in the message).
    pub held: &'a [(CommandId, String)],
    /// The device's own error text per answered operation (Windows `msft:originalerror`), if any.
    pub errors: &'a [(CommandId, String)],
}

/// What a check-in writes for the device's configuration, in its own transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigurationCommit {
    /// Rows to insert or replace (by path).
    pub upserts: Vec<DeviceSetting>,
    /// Paths whose rows are deleted (removed from the device, or never sent and no longer wanted).
    pub deletes: Vec<String>,
    pub state: DeviceConfigState,
    /// The stamp the decision was made from (the check-in context's). When given, the store writes
    /// `state` only if the stored stamp is still this one; if it changed meanwhile (the device was
    /// moved to another group, a verification was requested while the message was processed), the
    /// store keeps the stored `verify_at` and writes `epoch_seen = 0`, so the next check-in
    /// reconciles again instead of the newer request being overwritten. None: written as given.
    pub expected_state: Option<DeviceConfigState>,
    pub events: Vec<NewDeviceEvent>,
}

/// Reasons recorded on device settings.
pub mod reasons {
    pub const NOT_SENT_YET: &str = "waiting for the device's next check-in";
    pub const AWAITING_ANSWER: &str = "sent; waiting for the device's answer";
    pub const REMOVING: &str = "no assigned profile sets it; being removed";
    pub const DRIFT_REPORTED: &str = "the device holds another value (report only)";
    pub const DRIFT_REMEDIATING: &str = "the device held another value; sending the desired one again";
    pub const NOT_READ_BACK: &str = "acknowledged; the node cannot be read back";
    pub const AWAITING_VERIFICATION: &str = "acknowledged; not read back yet";
}

fn fresh_row(plan: &Plan, d: &Desired, now: OffsetDateTime) -> DeviceSetting {
    let _ = plan;
    DeviceSetting {
        path: d.setting.path.clone(),
        profile_id: d.profile_id,
        profile_version: d.version,
        setting: d.setting.clone(),
        status: SettingStatus::Pending,
        reason: reasons::NOT_SENT_YET.into(),
        in_flight: None,
        applied_digest: None,
        status_code: None,
        error: None,
        observed: None,
        observed_at: None,
        verified_at: None,
        updated_at: now,
    }
}

fn success(code: u16) -> bool {
    (200..300).contains(&code)
}

/// Applies the device's answers and what was sent to the plan's rows (see the module
/// documentation) and decides the device's new [`DeviceConfigState`].
pub fn absorb(plan: &Plan, answers: &OpAnswers<'_>, policy: &VerifyPolicy, now: OffsetDateTime) -> ConfigurationCommit {
    let mut rows = plan.rows.clone();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let mut deletes: Vec<String> = Vec::new();
    let mut events = Vec::new();
    let mut verify_now = false;

    // Every desired setting has a row carrying the desired setting (a new version or a conflict's
    // winner replaces the row's setting; what was applied stays in `applied_digest`).
    for (path, d) in &plan.desired {
        match rows.get_mut(path) {
            None => {
                rows.insert(path.clone(), fresh_row(plan, d, now));
                changed.insert(path.clone());
            }
            Some(r) => {
                if r.setting != d.setting || r.profile_id != d.profile_id || r.profile_version != d.version {
                    r.setting = d.setting.clone();
                    r.profile_id = d.profile_id;
                    r.profile_version = d.version;
                    if r.applied_digest.as_deref() != Some(d.setting.digest().as_str()) {
                        r.status = SettingStatus::Pending;
                        r.reason = reasons::NOT_SENT_YET.into();
                    } else if r.in_flight.is_none() && r.status == SettingStatus::Failed {
                        // Back to the value the device acknowledged (a rollout rolled back after
                        // the device refused the newer one): it holds it, nothing failed.
                        r.status = SettingStatus::Applied;
                        r.error = None;
                        r.reason = if d.setting.readable {
                            reasons::AWAITING_VERIFICATION
                        } else {
                            reasons::NOT_READ_BACK
                        }
                        .into();
                    }
                    r.updated_at = now;
                    changed.insert(path.clone());
                }
            }
        }
    }
    // Rows no profile wants: removed once acknowledged, or at once when nothing was ever applied or
    // the rule is to leave the node.
    for (path, r) in rows.iter_mut() {
        if plan.desired.contains_key(path) {
            continue;
        }
        if r.applied_digest.is_none() || r.setting.on_remove == OnRemove::Keep {
            if r.in_flight.is_none() || r.setting.on_remove == OnRemove::Keep {
                deletes.push(path.clone());
            }
        } else if r.status != SettingStatus::Removing && r.status != SettingStatus::Failed {
            r.status = SettingStatus::Removing;
            r.reason = reasons::REMOVING.into();
            r.updated_at = now;
            changed.insert(path.clone());
        }
    }

    // Answers. An op is recognised by its id: the plan's ops, plus the in-flight ops of the rows
    // (an answer may come for an op this plan no longer offers).
    let mut by_id: BTreeMap<CommandId, (String, OpKind, Setting)> = BTreeMap::new();
    for r in rows.values() {
        if let Some(f) = &r.in_flight {
            by_id.insert(
                SettingOp::id_for(plan.enrollment, &r.path, f.op, &r.setting.digest()),
                (r.path.clone(), f.op, r.setting.clone()),
            );
        }
    }
    for op in &plan.ops {
        by_id.insert(op.id, (op.path.clone(), op.kind, op.setting.clone()));
    }
    for o in answers.outcomes {
        let Some((path, kind, setting)) = by_id.get(&o.command_id) else {
            continue;
        };
        let error = answers
            .errors
            .iter()
            .find(|(id, _)| *id == o.command_id)
            .map(|(_, e)| e.clone());
        let Some(r) = rows.get_mut(path) else {
            continue;
        };
        r.in_flight = None;
        r.status_code = Some(o.status_code);
        r.updated_at = now;
        changed.insert(path.clone());
        let desired = plan.desired.get(path);
        match kind {
            OpKind::Apply => {
                if success(o.status_code) {
                    r.applied_digest = Some(setting.digest());
                    r.error = None;
                    if setting.readable {
                        r.status = SettingStatus::Applied;
                        r.reason = reasons::AWAITING_VERIFICATION.into();
                        verify_now = true;
                    } else {
                        r.status = SettingStatus::Applied;
                        r.reason = reasons::NOT_READ_BACK.into();
                    }
                } else {
                    r.status = SettingStatus::Failed;
                    r.error = error.clone();
                    r.reason = format!("the device answered {}", o.status_code);
                    events.push(NewDeviceEvent::setting_failed(path, o.status_code, error.as_deref()));
                }
            }
            OpKind::Remove => {
                // 404: the node is already gone, which is what a removal wants.
                if success(o.status_code) || o.status_code == 404 {
                    deletes.push(path.clone());
                } else {
                    r.status = SettingStatus::Failed;
                    r.error = error.clone();
                    r.reason = format!("removal refused: the device answered {}", o.status_code);
                    events.push(NewDeviceEvent::setting_failed(path, o.status_code, error.as_deref()));
                }
            }
            OpKind::Verify => {
                let observed = o.results.iter().find_map(|i| i.data.clone());
                r.observed = observed.clone();
                r.observed_at = Some(now);
                let holds = success(o.status_code) && observed.as_deref().is_some_and(|v| setting.holds(v));
                if holds {
                    r.status = SettingStatus::Verified;
                    r.reason.clear();
                    r.verified_at = Some(now);
                } else if !success(o.status_code) && o.status_code != 404 {
                    // The read itself failed (not a missing node): the value is unknown, not drifted.
                    r.status = SettingStatus::Failed;
                    r.error = error.clone();
                    r.reason = format!("read-back refused: the device answered {}", o.status_code);
                } else {
                    let remediation = desired.map(|d| d.remediation).unwrap_or(Remediation::Report);
                    events.push(NewDeviceEvent::setting_drifted(
                        path,
                        &setting.value,
                        observed.as_deref(),
                        remediation,
                    ));
                    r.status = SettingStatus::Drifted;
                    if remediation == Remediation::Remediate {
                        // Forget the acknowledgement: the next plan applies the value again.
                        r.applied_digest = None;
                        r.reason = reasons::DRIFT_REMEDIATING.into();
                    } else {
                        r.reason = reasons::DRIFT_REPORTED.into();
                    }
                }
            }
        }
    }

    // What went out in this message is in flight; what was offered and held says why.
    let op_by_id: BTreeMap<CommandId, &SettingOp> = plan.ops.iter().map(|o| (o.id, o)).collect();
    let answered: BTreeSet<CommandId> = answers.outcomes.iter().map(|o| o.command_id).collect();
    for id in answers.sent {
        if answered.contains(id) {
            continue;
        }
        let Some(op) = op_by_id.get(id) else { continue };
        let Some(r) = rows.get_mut(&op.path) else { continue };
        r.in_flight = Some(InFlight {
            op: op.kind,
            session: answers.session.to_owned(),
            sent_at: now,
        });
        if op.kind != OpKind::Verify {
            r.status = if op.kind == OpKind::Remove {
                SettingStatus::Removing
            } else {
                SettingStatus::Sent
            };
            r.reason = reasons::AWAITING_ANSWER.into();
        }
        r.updated_at = now;
        changed.insert(op.path.clone());
    }
    for (id, why) in answers.held {
        let Some(op) = op_by_id.get(id) else { continue };
        let Some(r) = rows.get_mut(&op.path) else { continue };
        if r.in_flight.is_none() && op.kind != OpKind::Verify && r.reason != *why {
            r.reason = why.clone();
            r.updated_at = now;
            changed.insert(op.path.clone());
        }
    }

    deletes.sort();
    deletes.dedup();
    let upserts: Vec<DeviceSetting> = changed
        .iter()
        .filter(|p| !deletes.contains(p))
        .filter_map(|p| rows.get(p).cloned())
        .collect();
    let remaining = rows.values().filter(|r| !deletes.contains(&r.path));
    let mut unsettled = 0u32;
    let mut any_readable = false;
    for r in remaining {
        if !r.settled() || (r.status == SettingStatus::Drifted && r.applied_digest.is_none()) {
            unsettled += 1;
        }
        if r.setting.readable && r.applied_digest.is_some() {
            any_readable = true;
        }
    }
    let verify_at = if verify_now {
        Some(now)
    } else if plan.verifying {
        any_readable.then(|| now + policy.interval)
    } else {
        plan_verify_at(plan, any_readable, now, policy)
    };
    ConfigurationCommit {
        upserts,
        deletes,
        state: DeviceConfigState {
            epoch_seen: plan.epoch,
            unsettled,
            verify_at,
        },
        expected_state: Some(plan.state_read),
        events,
    }
}

fn plan_verify_at(
    plan: &Plan,
    any_readable: bool,
    now: OffsetDateTime,
    policy: &VerifyPolicy,
) -> Option<OffsetDateTime> {
    if !any_readable {
        return None;
    }
    // Keep the schedule the rows imply: the oldest read-back plus the interval.
    let oldest = plan
        .rows
        .values()
        .filter(|r| r.setting.readable && r.applied_digest.is_some())
        .map(|r| r.verified_at.or(r.observed_at).unwrap_or(now))
        .min()
        .unwrap_or(now);
    Some(oldest + policy.interval)
}

/// A profile as a file holds it (`steward apply -f`, `steward export`; the API's apply body is the
/// same shape as JSON). Settings stay JSON here: their shape is the platform's
/// ([`crate::PlatformAdapter::profile_settings`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDocument {
    /// Always `profile`.
    pub kind: String,
    pub name: String,
    /// `windows`, …
    pub platform: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Conflict rank: the lowest number wins (default 100).
    #[serde(default = "default_priority")]
    pub priority: i32,
    /// `remediate` (default) or `report`.
    #[serde(default)]
    pub remediation: Remediation,
    pub settings: Vec<serde_json::Value>,
    /// Also lock the settings on the device itself where the platform and the device support it
    /// (Windows 11 secured-core PCs: DMClient ConfigLock). Part of the version (in its digest).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub config_lock: bool,
    #[serde(default)]
    pub assign: AssignDocument,
    /// A built-in catalog entry's metadata (category, area, …): accepted so a catalog file applies
    /// as it is, and not stored.
    #[serde(default, skip_serializing)]
    pub catalog: Option<serde_json::Value>,
    /// Roll a new version of the settings out in rings ([`crate::rollout`]) instead of to every
    /// device at once. Not stored with the profile (the rollout is), so export leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::RolloutSpec>,
}

pub const DEFAULT_PRIORITY: i32 = 100;

fn default_priority() -> i32 {
    DEFAULT_PRIORITY
}

/// An assignment as a file names it: groups by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignDocument {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_groups: Vec<String>,
}

/// One setting as a device's settings table shows it: the desired state and the device's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingView {
    pub path: String,
    pub profile_id: ProfileId,
    pub profile_name: Option<String>,
    pub version: u32,
    pub desired: Option<Setting>,
    pub status: SettingStatus,
    pub reason: String,
    pub row: Option<DeviceSetting>,
}

/// The device's settings table: every desired setting (pending with its reason when the device
/// has no row for it yet) and every row being removed.
pub fn device_view(
    config: &DeviceConfiguration,
    last_seen: Option<OffsetDateTime>,
) -> (Vec<SettingView>, Vec<Conflict>, Option<DeviceLockView>) {
    let (candidates, holds) = crate::rollout::resolve_rollouts(config);
    let groups = config.member_groups();
    let (mut desired, conflicts) = desired_settings(&candidates, &groups);
    let lock = add_device_lock(&mut desired, &candidates, &groups, config.lock.as_ref());
    let rows: BTreeMap<&str, &DeviceSetting> = config.settings.iter().map(|r| (r.path.as_str(), r)).collect();
    let mut out = Vec::new();
    // Settings of a rolled-out version the device does not get yet: pending, saying which ring it
    // waits in (unless another profile wins the path).
    let mut held = BTreeSet::new();
    for h in &holds {
        if desired
            .get(&h.setting.path)
            .is_some_and(|d| d.profile_id != h.profile_id)
        {
            continue;
        }
        held.insert(h.setting.path.clone());
        out.push(SettingView {
            path: h.setting.path.clone(),
            profile_id: h.profile_id,
            profile_name: candidates
                .iter()
                .chain(&config.candidates)
                .find(|p| p.id == h.profile_id)
                .map(|p| p.name.clone()),
            version: h.version,
            desired: Some(h.setting.clone()),
            status: SettingStatus::Pending,
            reason: h.reason.clone(),
            row: rows.get(h.setting.path.as_str()).map(|r| (*r).clone()),
        });
    }
    for (path, d) in &desired {
        if held.contains(path) {
            continue;
        }
        let row = rows.get(path.as_str()).copied();
        let current = row.filter(|r| r.setting.digest() == d.setting.digest() || r.in_flight.is_some());
        let (status, reason) = match current {
            Some(r) => (r.status, r.reason.clone()),
            None => (
                SettingStatus::Pending,
                match last_seen {
                    Some(t) => format!("the device has not checked in since it was assigned (last seen {t})"),
                    None => "the device has not checked in since it was assigned".into(),
                },
            ),
        };
        out.push(SettingView {
            path: path.clone(),
            profile_id: d.profile_id,
            profile_name: Some(d.profile_name.clone()),
            version: d.version,
            desired: Some(d.setting.clone()),
            status,
            reason,
            row: row.cloned(),
        });
    }
    for r in &config.settings {
        if !desired.contains_key(&r.path) && !held.contains(&r.path) {
            out.push(SettingView {
                path: r.path.clone(),
                profile_id: r.profile_id,
                profile_name: None,
                version: r.profile_version,
                desired: None,
                status: if r.status == SettingStatus::Failed {
                    SettingStatus::Failed
                } else {
                    SettingStatus::Removing
                },
                reason: if r.reason.is_empty() {
                    reasons::REMOVING.into()
                } else {
                    r.reason.clone()
                },
                row: Some(r.clone()),
            });
        }
    }
    (out, conflicts, lock)
}

/// Per-status counts of one profile's device settings (the profile page's numbers).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileStatusCounts {
    /// Active enrollments the assignment includes.
    pub devices: u64,
    /// Per version and status, the number of device settings.
    pub settings: Vec<(u32, SettingStatus, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ResultItem;

    fn setting(path: &str, value: &str) -> Setting {
        Setting {
            path: path.into(),
            format: "int".into(),
            verb: "replace".into(),
            value: value.into(),
            type_: None,
            readable: true,
            on_remove: OnRemove::Delete,
            remove_path: None,
        }
    }

    fn profile(name: &str, priority: i32, settings: Vec<Setting>, assignment: Assignment) -> AssignedProfile {
        AssignedProfile {
            id: ProfileId::new(),
            name: name.into(),
            priority,
            remediation: Remediation::Remediate,
            created_at: OffsetDateTime::UNIX_EPOCH,
            version: 1,
            assignment,
            settings,
            config_lock: false,
        }
    }

    fn all() -> Assignment {
        Assignment {
            all: true,
            ..Default::default()
        }
    }

    fn ctx(
        candidates: Vec<AssignedProfile>,
        settings: Vec<DeviceSetting>,
        verify_at: Option<OffsetDateTime>,
    ) -> ConfigurationContext {
        ConfigurationContext {
            epoch: 2,
            state: DeviceConfigState {
                epoch_seen: 1,
                unsettled: 0,
                verify_at,
            },
            loaded: Some(DeviceConfiguration {
                groups: vec![],
                candidates,
                settings,
                rollouts: vec![],
                dynamic: DynamicMembership::default(),
                lock: None,
            }),
        }
    }

    fn answer(id: CommandId, code: u16, data: Option<&str>) -> Outcome {
        Outcome::new(
            id,
            code,
            data.map(|d| ResultItem {
                source: String::new(),
                format: None,
                data: Some(d.into()),
            })
            .into_iter()
            .collect(),
            vec![],
        )
    }

    fn apply_rows(c: &ConfigurationCommit) -> Vec<DeviceSetting> {
        c.upserts.clone()
    }

    const NOW: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    #[test]
    fn the_device_lock_is_a_setting_where_supported_and_a_reason_elsewhere() {
        let lock = Setting {
            on_remove: OnRemove::Replace("0".into()),
            ..setting("./Lock", "1")
        };
        let mut locked = profile("locked", 50, vec![setting("./X", "1")], all());
        locked.config_lock = true;
        let mut second = profile("second", 60, vec![], all());
        second.config_lock = true;
        let plain = profile("plain", 10, vec![setting("./Y", "1")], all());
        let with = |lock_state: Option<DeviceLock>, candidates: Vec<AssignedProfile>, rows| {
            let mut c = ctx(candidates, rows, None);
            c.loaded.as_mut().unwrap().lock = lock_state;
            c
        };
        let e = EnrollmentId::new();

        // Supported: the lock is one more desired setting, owned by the highest-ranked asker.
        let c = with(
            Some(DeviceLock::Supported(vec![lock.clone()])),
            vec![second.clone(), locked.clone(), plain.clone()],
            vec![],
        );
        let p = plan(e, &c, NOW).unwrap();
        assert_eq!(p.desired["./Lock"].profile_id, locked.id);
        assert!(p.ops.iter().any(|o| o.path == "./Lock" && o.kind == OpKind::Apply));
        let (views, _, view) = device_view(c.loaded.as_ref().unwrap(), None);
        assert!(views.iter().any(|v| v.path == "./Lock"));
        let view = view.unwrap();
        assert!(view.supported);
        assert_eq!(view.requested_by, ["locked", "second"]);
        assert_eq!(view.paths, ["./Lock"]);

        // Unsupported: nothing sent for it, and the view says why.
        let c = with(
            Some(DeviceLock::Unsupported("not a secured-core PC".into())),
            vec![locked.clone()],
            vec![],
        );
        let p = plan(e, &c, NOW).unwrap();
        assert!(!p.desired.contains_key("./Lock"));
        let (_, _, view) = device_view(c.loaded.as_ref().unwrap(), None);
        let view = view.unwrap();
        assert!(!view.supported);
        assert_eq!(view.reason, "not a secured-core PC");
        // Undecided by the platform: nothing sent either.
        let c = with(None, vec![locked.clone()], vec![]);
        assert!(!plan(e, &c, NOW).unwrap().desired.contains_key("./Lock"));

        // Nobody asks: no view; a lock the device holds is removed by its rule (Replace 0).
        let held = DeviceSetting {
            path: "./Lock".into(),
            profile_id: locked.id,
            profile_version: 1,
            setting: lock.clone(),
            status: SettingStatus::Verified,
            reason: String::new(),
            in_flight: None,
            applied_digest: Some(lock.digest()),
            status_code: Some(200),
            error: None,
            observed: Some("1".into()),
            observed_at: Some(NOW),
            verified_at: Some(NOW),
            updated_at: NOW,
        };
        let c = with(
            Some(DeviceLock::Supported(vec![lock.clone()])),
            vec![plain.clone()],
            vec![held],
        );
        let p = plan(e, &c, NOW).unwrap();
        let remove = p.ops.iter().find(|o| o.path == "./Lock").unwrap();
        assert_eq!(remove.kind, OpKind::Remove);
        assert_eq!(remove.setting.on_remove, OnRemove::Replace("0".into()));
        assert!(device_view(c.loaded.as_ref().unwrap(), None).2.is_none());

        // A profile's own setting on the lock's node wins over the lock.
        let mut own = profile("own", 90, vec![setting("./Lock", "0")], all());
        own.config_lock = true;
        let c = with(Some(DeviceLock::Supported(vec![lock])), vec![own.clone()], vec![]);
        let p = plan(e, &c, NOW).unwrap();
        assert_eq!(p.desired["./Lock"].setting.value, "0");
    }

    #[test]
    fn digests_without_the_lock_are_the_settings_alone() {
        let s = vec![setting("./X", "1")];
        assert_eq!(ProfileVersion::digest_with(&s, false), ProfileVersion::digest_of(&s));
        assert_ne!(ProfileVersion::digest_with(&s, true), ProfileVersion::digest_of(&s));
        assert!(fact_resets_configuration(&crate::inventory::facts::SECURED_CORE));
        assert!(fact_resets_configuration(&crate::inventory::FactName::from_static(
            "os.version"
        )));
        assert!(!fact_resets_configuration(&crate::inventory::FactName::from_static(
            "hardware.ram_mb"
        )));
    }

    #[test]
    fn assignment_rules() {
        let (g1, g2) = (GroupId::new(), GroupId::new());
        let a = Assignment {
            all: false,
            groups: vec![g1],
            exclude_groups: vec![g2],
        };
        assert!(a.includes(&[g1]));
        assert!(!a.includes(&[g1, g2]));
        assert!(!a.includes(&[]));
        let b = Assignment {
            all: true,
            groups: vec![],
            exclude_groups: vec![g2],
        };
        assert!(b.includes(&[]));
        assert!(!b.includes(&[g2]));
        assert!(valid_profile_name("camera-off"));
        assert!(!valid_profile_name("Camera"));
        assert!(!valid_profile_name(""));
        assert!(!valid_profile_name(".x"));
    }

    #[test]
    fn conflicts_go_to_the_lowest_priority_then_the_oldest() {
        let a = profile("a", 10, vec![setting("./X", "1")], all());
        let mut b = profile("b", 5, vec![setting("./X", "2"), setting("./Y", "3")], all());
        b.created_at = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(5);
        let (d, c) = desired_settings(&[a.clone(), b.clone()], &[]);
        assert_eq!(d["./X"].profile_id, b.id);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].winner, c[0].loser), (b.id, a.id));
        // Equal priority: the older profile wins.
        let mut b2 = b.clone();
        b2.priority = 10;
        let (d, _) = desired_settings(&[b2.clone(), a.clone()], &[]);
        assert_eq!(d["./X"].profile_id, a.id);
        // Same value: no conflict.
        let c2 = profile("c", 1, vec![setting("./X", "1")], all());
        assert!(desired_settings(&[a.clone(), c2], &[]).1.is_empty());
        assert_eq!(profile_conflicts(&[a, b]).len(), 1);
    }

    #[test]
    fn apply_ack_verify_drift_and_remediate() {
        let e = EnrollmentId::new();
        let p = profile("p", 0, vec![setting("./X", "1")], all());
        let policy = VerifyPolicy::default();
        // 1. Nothing on the device: one Apply, sent.
        let plan1 = plan(e, &ctx(vec![p.clone()], vec![], None), NOW).unwrap();
        assert_eq!(plan1.ops.len(), 1);
        assert_eq!(plan1.ops[0].kind, OpKind::Apply);
        let sent = [plan1.ops[0].id];
        let c1 = absorb(
            &plan1,
            &OpAnswers {
                session: "s1",
                sent: &sent,
                ..Default::default()
            },
            &policy,
            NOW,
        );
        assert_eq!(c1.upserts[0].status, SettingStatus::Sent);
        assert_eq!(c1.state.unsettled, 1);
        assert_eq!(c1.state.epoch_seen, 2);
        // 2. Next message: the same op is in flight (not sent again in s1), then acknowledged.
        let rows = apply_rows(&c1);
        let plan2 = plan(e, &ctx(vec![p.clone()], rows, None), NOW).unwrap();
        assert_eq!(plan2.ops[0].id, sent[0]);
        assert_eq!(plan2.ops[0].last_session.as_deref(), Some("s1"));
        let acks = [answer(sent[0], 200, None)];
        let c2 = absorb(
            &plan2,
            &OpAnswers {
                session: "s1",
                outcomes: &acks,
                ..Default::default()
            },
            &policy,
            NOW,
        );
        assert_eq!(c2.upserts[0].status, SettingStatus::Applied);
        assert_eq!(c2.state.unsettled, 0);
        assert_eq!(c2.state.verify_at, Some(NOW), "read back after an apply");
        // 3. Verification round: a Get; the device holds another value -> drift, remediate.
        let rows = apply_rows(&c2);
        let mut cx = ctx(vec![p.clone()], rows, Some(NOW));
        cx.state.epoch_seen = 2;
        let plan3 = plan(e, &cx, NOW).unwrap();
        assert_eq!(plan3.ops[0].kind, OpKind::Verify);
        let got = [answer(plan3.ops[0].id, 200, Some("0"))];
        let c3 = absorb(
            &plan3,
            &OpAnswers {
                session: "s2",
                outcomes: &got,
                ..Default::default()
            },
            &policy,
            NOW,
        );
        assert_eq!(c3.upserts[0].status, SettingStatus::Drifted);
        assert_eq!(c3.events.len(), 1);
        assert_eq!(c3.events[0].kind, crate::event::EventKind::SettingDrifted);
        assert_eq!(c3.state.unsettled, 1, "remediation pending");
        // 4. The next plan applies again.
        let plan4 = plan(e, &ctx(vec![p.clone()], apply_rows(&c3), None), NOW).unwrap();
        assert_eq!(plan4.ops[0].kind, OpKind::Apply);
        // A read-back that holds verifies.
        let ok = [answer(plan3.ops[0].id, 200, Some(" 1 "))];
        let c5 = absorb(
            &plan3,
            &OpAnswers {
                session: "s2",
                outcomes: &ok,
                ..Default::default()
            },
            &policy,
            NOW,
        );
        assert_eq!(c5.upserts[0].status, SettingStatus::Verified);
        assert_eq!(c5.state.verify_at, Some(NOW + policy.interval));
        assert_eq!(c5.state.unsettled, 0);
    }

    #[test]
    fn a_read_back_in_flight_stays_offered_after_the_schedule_moved() {
        let e = EnrollmentId::new();
        let p = profile("p", 0, vec![setting("./X", "1")], all());
        let policy = VerifyPolicy::default();
        let plan1 = plan(e, &ctx(vec![p.clone()], vec![], None), NOW).unwrap();
        let acked = absorb(
            &plan1,
            &OpAnswers {
                session: "s1",
                outcomes: &[answer(plan1.ops[0].id, 200, None)],
                ..Default::default()
            },
            &policy,
            NOW,
        );
        let verify = plan(e, &ctx(vec![p.clone()], acked.upserts.clone(), Some(NOW)), NOW).unwrap();
        assert_eq!(verify.ops[0].kind, OpKind::Verify);
        let sent = absorb(
            &verify,
            &OpAnswers {
                session: "s2",
                sent: &[verify.ops[0].id],
                ..Default::default()
            },
            &policy,
            NOW,
        );
        // The round moved verify_at on; the Get is still unanswered, so the next message offers it
        // again (not re-sent in s2) and takes its Results.
        assert!(sent.state.verify_at.is_some_and(|t| t > NOW));
        let mut cx = ctx(vec![p], sent.upserts.clone(), sent.state.verify_at);
        cx.state = sent.state;
        let next = plan(e, &cx, NOW).unwrap();
        assert_eq!(next.ops.len(), 1);
        assert_eq!(
            (next.ops[0].kind, next.ops[0].last_session.as_deref()),
            (OpKind::Verify, Some("s2"))
        );
        let done = absorb(
            &next,
            &OpAnswers {
                session: "s2",
                outcomes: &[answer(next.ops[0].id, 200, Some("1"))],
                ..Default::default()
            },
            &policy,
            NOW,
        );
        assert_eq!(done.upserts[0].status, SettingStatus::Verified);
    }

    #[test]
    fn unassigned_settings_are_removed_by_their_rule_and_failures_wait() {
        let e = EnrollmentId::new();
        let p = profile("p", 0, vec![setting("./X", "1")], all());
        let plan1 = plan(e, &ctx(vec![p.clone()], vec![], None), NOW).unwrap();
        let id = plan1.ops[0].id;
        let c1 = absorb(
            &plan1,
            &OpAnswers {
                session: "s",
                sent: &[id],
                outcomes: &[],
                ..Default::default()
            },
            &VerifyPolicy::default(),
            NOW,
        );
        let c2 = absorb(
            &plan(e, &ctx(vec![p.clone()], c1.upserts.clone(), None), NOW).unwrap(),
            &OpAnswers {
                session: "s",
                outcomes: &[answer(id, 200, None)],
                ..Default::default()
            },
            &VerifyPolicy::default(),
            NOW,
        );
        // Unassigned: a Remove op; its 404 or 200 deletes the row.
        let plan3 = plan(e, &ctx(vec![], c2.upserts.clone(), None), NOW).unwrap();
        assert_eq!(plan3.ops.len(), 1);
        assert_eq!(plan3.ops[0].kind, OpKind::Remove);
        let c3 = absorb(
            &plan3,
            &OpAnswers {
                session: "s2",
                outcomes: &[answer(plan3.ops[0].id, 404, None)],
                ..Default::default()
            },
            &VerifyPolicy::default(),
            NOW,
        );
        assert_eq!(c3.deletes, vec!["./X".to_owned()]);
        assert_eq!(c3.state.unsettled, 0);
        assert_eq!(c3.state.verify_at, None);
        // A refused apply fails with the device's error and is not retried until a verification.
        let plan4 = plan(e, &ctx(vec![p.clone()], vec![], None), NOW).unwrap();
        let id4 = plan4.ops[0].id;
        let c4 = absorb(
            &plan4,
            &OpAnswers {
                session: "s3",
                sent: &[id4],
                outcomes: &[answer(id4, 405, None)],
                errors: &[(id4, "0x86000011".into())],
                ..Default::default()
            },
            &VerifyPolicy::default(),
            NOW,
        );
        let row = &c4.upserts[0];
        assert_eq!(row.status, SettingStatus::Failed);
        assert_eq!(row.error.as_deref(), Some("0x86000011"));
        assert_eq!(c4.events[0].kind, crate::event::EventKind::SettingFailed);
        let plan5 = plan(e, &ctx(vec![p], c4.upserts.clone(), None), NOW).unwrap();
        assert!(plan5.ops.is_empty());
    }

    #[test]
    fn dynamic_groups_decide_what_a_device_gets() {
        let e = EnrollmentId::new();
        let (dynamic, other) = (GroupId::new(), GroupId::new());
        let rule = crate::group_rule::GroupRule::from_json(
            r#"{"all": [{"fact": "os.version", "op": ">=", "value": "10.0.22000"}]}"#,
        )
        .unwrap();
        let p = profile(
            "p",
            0,
            vec![setting("./X", "1")],
            Assignment {
                groups: vec![dynamic],
                ..Default::default()
            },
        );
        let groups = vec![
            DynamicGroup {
                id: dynamic,
                rule: rule.clone(),
            },
            DynamicGroup { id: other, rule },
        ];
        // Only the dynamic groups an assignment names are kept.
        let relevant = DynamicMembership::relevant(groups, std::slice::from_ref(&p));
        assert_eq!(relevant.len(), 1);
        let with_version = |v: &str| {
            let mut c = ctx(vec![p.clone()], vec![], None);
            c.loaded.as_mut().unwrap().dynamic = DynamicMembership {
                groups: relevant.clone(),
                facts: vec![DeviceFact {
                    name: crate::inventory::FactName::from_static("os.version"),
                    value: v.into(),
                    updated_at: NOW,
                }],
                enrollment: EnrollmentFields::default(),
            };
            c
        };
        let old = with_version("10.0.19045.3803");
        assert_eq!(old.loaded.as_ref().unwrap().member_groups(), Vec::<GroupId>::new());
        assert!(plan(e, &old, NOW).unwrap().ops.is_empty());
        let new = with_version("10.0.22631.2861");
        assert_eq!(new.loaded.as_ref().unwrap().member_groups(), vec![dynamic]);
        let ops = plan(e, &new, NOW).unwrap().ops;
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].kind, OpKind::Apply);
    }

    #[test]
    fn a_settled_device_needs_no_load() {
        let s = DeviceConfigState {
            epoch_seen: 3,
            unsettled: 0,
            verify_at: Some(NOW + time::Duration::hours(1)),
        };
        assert!(!s.needs_load(3, NOW));
        assert!(s.needs_load(4, NOW));
        assert!(s.needs_load(3, NOW + time::Duration::hours(2)));
        let digest = setting("./X", "1").digest();
        assert_eq!(digest.len(), 32);
        assert_ne!(digest, setting("./X", "2").digest());
        let e = EnrollmentId::new();
        assert_ne!(
            SettingOp::id_for(e, "./X", OpKind::Apply, &digest),
            SettingOp::id_for(e, "./X", OpKind::Verify, &digest)
        );
    }
}

/// Property tests of what is stored and compared across versions: a setting and its removal rule
/// read back from their stored JSON unchanged, and the digests stored with profile versions and
/// device rows depend on exactly what they document, in a form that never changes.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn on_remove() -> impl Strategy<Value = OnRemove> {
        prop_oneof![
            Just(OnRemove::Delete),
            Just(OnRemove::Keep),
            any::<String>().prop_map(OnRemove::Replace),
        ]
    }

    fn setting() -> impl Strategy<Value = Setting> {
        (
            (any::<String>(), any::<String>(), any::<String>(), any::<String>()),
            proptest::option::of(any::<String>()),
            any::<bool>(),
            on_remove(),
            proptest::option::of(any::<String>()),
        )
            .prop_map(
                |((path, format, verb, value), type_, readable, on_remove, remove_path)| Setting {
                    path,
                    format,
                    verb,
                    value,
                    type_,
                    readable,
                    on_remove,
                    remove_path,
                },
            )
    }

    proptest! {
        #[test]
        fn on_remove_reads_back_from_its_text_and_json(r in on_remove()) {
            prop_assert_eq!(OnRemove::parse(&r.to_string()), Some(r.clone()));
            let json = serde_json::to_string(&r).unwrap();
            prop_assert_eq!(serde_json::from_str::<OnRemove>(&json).unwrap(), r);
        }

        #[test]
        fn settings_read_back_from_stored_json_with_the_same_digests(s in proptest::collection::vec(setting(), 0..4)) {
            let json = serde_json::to_string(&s).unwrap();
            let back: Vec<Setting> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &s);
            prop_assert_eq!(ProfileVersion::digest_of(&back), ProfileVersion::digest_of(&s));
            for (a, b) in s.iter().zip(&back) {
                prop_assert_eq!(a.digest(), b.digest());
                prop_assert_eq!(a.digest().len(), 32);
            }
        }

        /// The setting digest covers what is written to the node and nothing else: the path, the
        /// readability and the removal rule do not change it; the value does.
        #[test]
        fn setting_digest_covers_what_is_written(s in setting(), other in any::<String>(), readable in any::<bool>()) {
            let moved = Setting { path: other.clone(), readable, on_remove: OnRemove::Keep, remove_path: None, ..s.clone() };
            prop_assert_eq!(moved.digest(), s.digest());
            if other != s.value {
                let changed = Setting { value: other, ..s.clone() };
                prop_assert_ne!(changed.digest(), s.digest());
            }
        }

        /// A version digest is over the settings in order: any change to one of them changes it.
        #[test]
        fn version_digest_changes_with_any_setting(s in proptest::collection::vec(setting(), 1..4), readable in any::<bool>()) {
            let mut changed = s.clone();
            changed[0].readable = readable;
            prop_assert_eq!(ProfileVersion::digest_of(&changed) == ProfileVersion::digest_of(&s), readable == s[0].readable);
        }
    }

    /// Digests are stored (profile versions, device rows, operation ids), so their canonical form
    /// is fixed. Expected values computed independently: SHA-256 of the compact JSON in Python
    /// (`json.dumps(..., separators=(',', ':'))`), the setting digest truncated to 16 bytes.
    #[test]
    fn digests_are_stable_across_releases() {
        let s = Setting {
            path: "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera".into(),
            format: "int".into(),
            verb: "replace".into(),
            value: "0".into(),
            type_: None,
            readable: true,
            on_remove: OnRemove::Delete,
            remove_path: None,
        };
        assert_eq!(
            ProfileVersion::digest_of(std::slice::from_ref(&s)),
            "32ef98c3eb3739f42c00c9fc20e16faa77f1f0bbe592525b3f4819bcb98abaa7"
        );
        let one = Setting { value: "1".into(), ..s };
        assert_eq!(one.digest(), "aaf877cfa926a0fef526b2c66cbbb14a");
    }
}
