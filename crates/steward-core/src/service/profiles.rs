//! Configuration profiles as the admin surfaces manage them: applying profile documents (the YAML
//! files of `steward apply`, the API's JSON) — validated whole before anything is written, then
//! written in one atomic store call — exporting them back, listing and showing them with their
//! per-status device counts and conflicts, deleting them, a device's settings table, on-demand
//! verification, and assigning a built-in catalog entry. The semantics (immutable versions,
//! assignment, the conflict rule) are [`crate::configuration`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use time::OffsetDateTime;

use super::{Clock, ServiceError, ServiceResult, require};
use crate::access::{Permission, Principal};
use crate::configuration::{
    AssignDocument, AssignedProfile, Assignment, Conflict, DEFAULT_PRIORITY, DeviceLockView, Profile, ProfileDocument,
    ProfileId, ProfileStatusCounts, ProfileVersion, ProfileWrite, Remediation, Setting, SettingView, device_view,
    profile_conflicts, valid_profile_name,
};
use crate::model::{Enrollment, Group, GroupId, Platform};
use crate::platform::Platforms;
use crate::rollout::RolloutSpec;
use crate::store::{Store, StoreError, VerifyTarget};

/// The `kind` every profile document carries.
pub const PROFILE_KIND: &str = "profile";

/// Names the API's own routes take under `/api/v1/profiles/…`: a profile so named could not be
/// shown or deleted by URL, so apply refuses them.
pub const RESERVED_NAMES: [&str; 2] = ["apply", "export"];

/// What an apply does to one profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyAction {
    /// A new profile (version 1).
    Created,
    /// Its settings (a new version), its fields or its assignment changed.
    Updated,
    /// Nothing to write.
    Unchanged,
}

impl ApplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
        }
    }
}

/// One profile's part of an [`ApplyReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileChange {
    pub name: String,
    pub platform: Platform,
    pub action: ApplyAction,
    /// The current version before the apply (None: the profile did not exist).
    pub version_before: Option<u32>,
    /// The current version after it (the same as before unless the settings changed).
    pub version_after: u32,
    /// Node paths set only by the new settings.
    pub settings_added: Vec<String>,
    /// Node paths whose setting differs.
    pub settings_changed: Vec<String>,
    /// Node paths the new settings no longer set (their removal rule applies on the devices).
    pub settings_removed: Vec<String>,
    /// Profile fields (not settings, not assignment) that change: `description`, `priority`,
    /// `remediation`.
    pub fields_changed: Vec<&'static str>,
    /// The assignment before (groups by name; None for a new profile) and after.
    pub assignment_before: Option<AssignDocument>,
    pub assignment_after: AssignDocument,
    /// Active enrollments of the platform the old and the new assignment include.
    pub devices_before: u64,
    pub devices_after: u64,
}

/// What an apply did, or would do (`dry_run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub dry_run: bool,
    /// Whether anything was written (never on a dry run; not when every profile is unchanged).
    pub written: bool,
    /// One entry per document, in document order.
    pub profiles: Vec<ProfileChange>,
}

impl ApplyReport {
    pub fn changed(&self) -> bool {
        self.profiles.iter().any(|p| p.action != ApplyAction::Unchanged)
    }
}

/// One profile with its versions, device counts and conflicts (`GET /profiles/{name}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileDetail {
    pub profile: Profile,
    /// The assignment with groups by name.
    pub assign: AssignDocument,
    /// Every version, oldest first.
    pub versions: Vec<ProfileVersion>,
    pub status: ProfileStatusCounts,
    /// Conflicts with other profiles whose assignments can meet this one's on a device.
    pub conflicts: Vec<Conflict>,
}

/// A device's settings table (`GET /devices/{id}/settings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSettings {
    pub enrollment: Enrollment,
    pub settings: Vec<SettingView>,
    pub conflicts: Vec<Conflict>,
}

/// A validated profile to write: a document after the platform validated its settings and its
/// groups were resolved, or a catalog entry's settings.
#[derive(Debug, Clone)]
struct Prepared {
    name: String,
    platform: Platform,
    description: String,
    priority: i32,
    remediation: Remediation,
    settings: Vec<Setting>,
    /// The device-side lock ([`ProfileVersion::config_lock`]).
    config_lock: bool,
    assignment: Assignment,
    assign: AssignDocument,
    /// The document's `rollout:` section: a new version goes out in rings ([`crate::rollout`]).
    rollout: Option<RolloutSpec>,
}

#[derive(Clone)]
pub struct Profiles {
    store: Arc<dyn Store>,
    platforms: Platforms,
    clock: Arc<dyn Clock>,
}

impl Profiles {
    pub fn new(store: Arc<dyn Store>, platforms: Platforms, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            platforms,
            clock,
        }
    }

    /// Validates every document, then decides per profile what changes and, unless `dry_run`,
    /// writes every change in one atomic store call. Any invalid document refuses the whole apply
    /// and nothing is written.
    pub async fn apply(
        &self,
        who: &Principal,
        documents: Vec<ProfileDocument>,
        dry_run: bool,
    ) -> ServiceResult<ApplyReport> {
        require(who, Permission::ProfilesWrite)?;
        if documents.is_empty() {
            return Err(ServiceError::Invalid("no profile documents given".into()));
        }
        let groups = GroupNames::load(self.store.as_ref()).await?;
        let mut seen = BTreeSet::new();
        let mut prepared = Vec::with_capacity(documents.len());
        for (i, doc) in documents.into_iter().enumerate() {
            let p = self.prepare(i, doc, &groups)?;
            if !seen.insert(p.name.clone()) {
                return Err(ServiceError::Invalid(format!(
                    "document {}: profile {:?} appears more than once in this apply",
                    i + 1,
                    p.name
                )));
            }
            prepared.push(p);
        }
        self.plan_and_write(prepared, &groups, dry_run).await
    }

    /// A document checked and turned into what would be stored (`index` is 0-based; messages
    /// count documents from 1, as people do).
    fn prepare(&self, index: usize, doc: ProfileDocument, groups: &GroupNames) -> ServiceResult<Prepared> {
        let n = index + 1;
        if doc.kind != PROFILE_KIND {
            return Err(ServiceError::Invalid(format!(
                "document {n}: kind must be {PROFILE_KIND:?}, not {:?}",
                doc.kind
            )));
        }
        if !valid_profile_name(&doc.name) {
            return Err(ServiceError::Invalid(format!(
                "document {n}: profile name {:?} is invalid (1-64 lower-case letters, digits, '-', '_' or '.', \
                 not starting with '.')",
                doc.name
            )));
        }
        if RESERVED_NAMES.contains(&doc.name.as_str()) {
            return Err(ServiceError::Invalid(format!(
                "document {n}: profile name {:?} is reserved",
                doc.name
            )));
        }
        let name = doc.name;
        let platform = Platform::parse(&doc.platform).ok_or_else(|| {
            ServiceError::Invalid(format!(
                "profile {name:?} (document {n}): unknown platform {:?}",
                doc.platform
            ))
        })?;
        let adapter = self
            .platforms
            .get(platform)
            .map_err(|e| ServiceError::Invalid(format!("profile {name:?} (document {n}): {e}")))?;
        let settings = adapter
            .profile_settings(&doc.settings)
            .map_err(|e| ServiceError::Invalid(format!("profile {name:?} (document {n}): {e}")))?;
        let mut paths = BTreeSet::new();
        for (i, s) in settings.iter().enumerate() {
            if !paths.insert(s.path.as_str()) {
                return Err(ServiceError::Invalid(format!(
                    "profile {name:?} (document {n}): setting {i} ({}): the path is set twice",
                    s.path
                )));
            }
        }
        let assignment = groups
            .resolve(&doc.assign)
            .map_err(|g| ServiceError::Invalid(format!("profile {name:?} (document {n}): no group named {g:?}")))?;
        // The rings are checked now (the versions are known only when writing), so a bad rollout
        // section refuses the apply before anything is written.
        if let Some(r) = &doc.rollout {
            r.build(
                ProfileId::new(),
                0,
                1,
                |g| groups.by_name.get(g).copied(),
                self.clock.now(),
            )
            .map_err(|e| ServiceError::Invalid(format!("profile {name:?} (document {n}): rollout: {e}")))?;
        }
        Ok(Prepared {
            rollout: doc.rollout,
            name,
            platform,
            description: doc.description,
            priority: doc.priority,
            remediation: doc.remediation,
            settings,
            config_lock: doc.config_lock,
            assign: groups.document(&assignment),
            assignment,
        })
    }

    /// Decides each profile's change against the store and writes them all at once.
    async fn plan_and_write(
        &self,
        prepared: Vec<Prepared>,
        groups: &GroupNames,
        dry_run: bool,
    ) -> ServiceResult<ApplyReport> {
        let now = self.clock.now();
        let mut writes = Vec::new();
        let mut rollouts = Vec::new();
        let mut changes = Vec::with_capacity(prepared.len());
        let group_id = |g: &str| groups.by_name.get(g).copied();
        let invalid = |name: &str, e: crate::rollout::RolloutInvalid| {
            ServiceError::Invalid(format!("profile {name:?}: rollout: {e}"))
        };
        for p in prepared {
            let existing = self.store.profile_by_name(&p.name).await?;
            let devices_after = self.store.count_assigned(p.platform, &p.assignment).await?;
            let digest = ProfileVersion::digest_with(&p.settings, p.config_lock);
            let Some(old) = existing else {
                let profile = Profile {
                    id: ProfileId::new(),
                    name: p.name.clone(),
                    platform: p.platform,
                    description: p.description.clone(),
                    priority: p.priority,
                    remediation: p.remediation,
                    current_version: 1,
                    assignment: p.assignment.clone(),
                    created_at: now,
                    updated_at: now,
                };
                changes.push(ProfileChange {
                    name: p.name.clone(),
                    platform: p.platform,
                    action: ApplyAction::Created,
                    version_before: None,
                    version_after: 1,
                    settings_added: p.settings.iter().map(|s| s.path.clone()).collect(),
                    settings_changed: vec![],
                    settings_removed: vec![],
                    fields_changed: vec![],
                    assignment_before: None,
                    assignment_after: p.assign.clone(),
                    devices_before: 0,
                    devices_after,
                });
                if let Some(r) = &p.rollout {
                    rollouts.push(
                        r.build(profile.id, 0, 1, group_id, now)
                            .map_err(|e| invalid(&p.name, e))?,
                    );
                }
                writes.push(ProfileWrite {
                    new_version: Some(ProfileVersion {
                        profile_id: profile.id,
                        version: 1,
                        settings: p.settings,
                        digest,
                        config_lock: p.config_lock,
                        created_at: now,
                    }),
                    profile,
                    expected_version: None,
                });
                continue;
            };
            if old.platform != p.platform {
                return Err(ServiceError::Invalid(format!(
                    "profile {:?} is a {} profile; its platform cannot change (delete it first)",
                    p.name, old.platform
                )));
            }
            let current = self
                .store
                .profile_version(old.id, old.current_version)
                .await?
                .ok_or_else(|| {
                    ServiceError::Internal(format!(
                        "profile {} has no version {} (its current one)",
                        old.name, old.current_version
                    ))
                })?;
            let (added, changed, removed) = setting_diff(&current.settings, &p.settings);
            let settings_changed = current.digest != digest;
            let mut fields_changed = Vec::new();
            if old.description != p.description {
                fields_changed.push("description");
            }
            if old.priority != p.priority {
                fields_changed.push("priority");
            }
            if old.remediation != p.remediation {
                fields_changed.push("remediation");
            }
            // Part of the version (its digest): a change appends a version like a settings change.
            if current.config_lock != p.config_lock {
                fields_changed.push("config_lock");
            }
            let assignment_changed = !same_assignment(&old.assignment, &p.assignment);
            let devices_before = self.store.count_assigned(old.platform, &old.assignment).await?;
            let action = if settings_changed || assignment_changed || !fields_changed.is_empty() {
                ApplyAction::Updated
            } else {
                ApplyAction::Unchanged
            };
            let version_after = if settings_changed {
                old.current_version + 1
            } else {
                old.current_version
            };
            changes.push(ProfileChange {
                name: p.name.clone(),
                platform: p.platform,
                action,
                version_before: Some(old.current_version),
                version_after,
                settings_added: added,
                settings_changed: changed,
                settings_removed: removed,
                fields_changed,
                assignment_before: Some(groups.document(&old.assignment)),
                assignment_after: p.assign.clone(),
                devices_before,
                devices_after,
            });
            if action == ApplyAction::Unchanged {
                continue;
            }
            let profile = Profile {
                description: p.description,
                priority: p.priority,
                remediation: p.remediation,
                current_version: version_after,
                assignment: p.assignment,
                updated_at: now,
                ..old.clone()
            };
            if let (Some(r), true) = (&p.rollout, settings_changed) {
                rollouts.push(
                    r.build(old.id, old.current_version, version_after, group_id, now)
                        .map_err(|e| invalid(&p.name, e))?,
                );
            }
            writes.push(ProfileWrite {
                new_version: settings_changed.then_some(ProfileVersion {
                    profile_id: old.id,
                    version: version_after,
                    settings: p.settings,
                    digest,
                    config_lock: p.config_lock,
                    created_at: now,
                }),
                profile,
                expected_version: Some(old.current_version),
            });
        }
        let written = !dry_run && !writes.is_empty();
        if written {
            let written = if rollouts.is_empty() {
                self.store.write_profiles(&writes).await
            } else {
                self.store.write_profiles_with_rollouts(&writes, &rollouts).await
            };
            written.map_err(|e| match e {
                // Someone else applied in between (or a group was deleted meanwhile): nothing of
                // this apply was written, and applying again decides against the new state.
                StoreError::Conflict(what) => ServiceError::Conflict(format!(
                    "the profiles changed while applying ({what}); nothing was written, apply again"
                )),
                other => other.into(),
            })?;
        }
        Ok(ApplyReport {
            dry_run,
            written,
            profiles: changes,
        })
    }

    /// Every profile as a document (its current version, its assignment by group name): applying
    /// the result changes nothing.
    pub async fn export(&self, who: &Principal) -> ServiceResult<Vec<ProfileDocument>> {
        require(who, Permission::ProfilesRead)?;
        let groups = GroupNames::load(self.store.as_ref()).await?;
        let mut out = Vec::new();
        for p in self.store.list_profiles().await? {
            let version = self.current(&p).await?;
            let adapter = self.platforms.get(p.platform)?;
            out.push(ProfileDocument {
                kind: PROFILE_KIND.into(),
                name: p.name.clone(),
                platform: p.platform.as_str().into(),
                description: p.description.clone(),
                priority: p.priority,
                remediation: p.remediation,
                settings: version.settings.iter().map(|s| adapter.setting_document(s)).collect(),
                config_lock: version.config_lock,
                assign: groups.document(&p.assignment),
                catalog: None,
                rollout: None,
            });
        }
        Ok(out)
    }

    /// Every profile, by name, with the active enrollments its assignment includes.
    pub async fn list(&self, who: &Principal) -> ServiceResult<Vec<(Profile, AssignDocument, u64)>> {
        require(who, Permission::ProfilesRead)?;
        let groups = GroupNames::load(self.store.as_ref()).await?;
        let mut out = Vec::new();
        for p in self.store.list_profiles().await? {
            let devices = self.store.count_assigned(p.platform, &p.assignment).await?;
            let assign = groups.document(&p.assignment);
            out.push((p, assign, devices));
        }
        Ok(out)
    }

    /// One profile with its versions, its devices' status counts and its conflicts.
    pub async fn show(&self, who: &Principal, name: &str) -> ServiceResult<ProfileDetail> {
        require(who, Permission::ProfilesRead)?;
        let profile = self.by_name(name).await?;
        let versions = self.store.profile_versions(profile.id).await?;
        let status = self.store.profile_status(profile.id).await?;
        let mut candidates = Vec::new();
        for p in self.store.list_profiles().await? {
            if p.platform != profile.platform || (p.assignment.is_empty() && p.id != profile.id) {
                continue;
            }
            let v = self.current(&p).await?;
            candidates.push(AssignedProfile {
                id: p.id,
                name: p.name.clone(),
                priority: p.priority,
                remediation: p.remediation,
                created_at: p.created_at,
                version: v.version,
                assignment: p.assignment.clone(),
                settings: v.settings,
                config_lock: v.config_lock,
            });
        }
        let conflicts = profile_conflicts(&candidates)
            .into_iter()
            .filter(|c| c.winner == profile.id || c.loser == profile.id)
            .collect();
        let groups = GroupNames::load(self.store.as_ref()).await?;
        Ok(ProfileDetail {
            assign: groups.document(&profile.assignment),
            profile,
            versions,
            status,
            conflicts,
        })
    }

    /// Deletes a profile: its settings are removed from the devices by their removal rules at
    /// their next check-ins. Returns it as it was.
    pub async fn delete(&self, who: &Principal, name: &str) -> ServiceResult<Profile> {
        require(who, Permission::ProfilesWrite)?;
        let profile = self.by_name(name).await?;
        if !self.store.delete_profile(profile.id).await? {
            return Err(ServiceError::NotFound("profile"));
        }
        Ok(profile)
    }

    /// A device's settings: every desired setting with its status and reason (pending when the
    /// device has not checked in since it was assigned), settings being removed, conflicts, and —
    /// when an assigned profile asks for it — the device-side lock (supported, or why not).
    pub async fn device_settings(
        &self,
        who: &Principal,
        device: &Enrollment,
    ) -> ServiceResult<(Vec<SettingView>, Vec<Conflict>, Option<DeviceLockView>)> {
        require(who, Permission::DevicesRead)?;
        if !who.sees(device) {
            return Err(ServiceError::NotFound("device"));
        }
        let mut config = self.store.device_configuration(device.id).await?;
        if config.asks_lock() {
            // Decided as the check-in decides it: by the platform, from the facts the store
            // loaded with the configuration.
            config.lock = Some(match self.platforms.get(device.platform) {
                Ok(adapter) => adapter.device_lock(&config.dynamic.facts),
                Err(e) => crate::configuration::DeviceLock::Unsupported(e.to_string()),
            });
        }
        Ok(device_view(&config, device.last_seen_at))
    }

    /// Makes a read-back of the target's readable settings due now (at each device's next
    /// check-in). A group-scoped caller may only target its own group (or a device in it). Returns
    /// how many active enrollments it covered.
    pub async fn verify(&self, who: &Principal, target: VerifyTarget) -> ServiceResult<u64> {
        require(who, Permission::DevicesAct)?;
        match target {
            VerifyTarget::All if who.group.is_some() => {
                return Err(ServiceError::Forbidden {
                    role: who.role_label(),
                    permission: Permission::DevicesAct,
                });
            }
            VerifyTarget::Group(g) if who.group.is_some_and(|own| own != g) => {
                return Err(ServiceError::NotFound("group"));
            }
            VerifyTarget::Enrollment(id) => {
                let e = self.store.enrollment_by_id(id).await?;
                if !e.as_ref().is_some_and(|e| who.sees(e)) {
                    return Err(ServiceError::NotFound("device"));
                }
            }
            _ => {}
        }
        Ok(self.store.request_verification(target, self.clock.now()).await?)
    }

    /// Makes a read-back due on the devices the profile's assignment covers: every device for an
    /// `all` assignment, else each assigned group's (an excluded group's members are read back too
    /// when they are also in an assigned group; a read-back changes nothing on a device). A
    /// group-scoped caller covers only its own group, and only if the profile is assigned to it.
    /// Returns the profile and how many active enrollments it covered.
    pub async fn verify_profile(&self, who: &Principal, name: &str) -> ServiceResult<(Profile, u64)> {
        require(who, Permission::DevicesAct)?;
        let profile = self.by_name(name).await?;
        let a = &profile.assignment;
        let targets: Vec<VerifyTarget> = match who.group {
            Some(own) if a.includes(&[own]) => vec![VerifyTarget::Group(own)],
            Some(_) => vec![],
            None if a.all => vec![VerifyTarget::All],
            None => a
                .groups
                .iter()
                .filter(|g| !a.exclude_groups.contains(g))
                .map(|g| VerifyTarget::Group(*g))
                .collect(),
        };
        let mut devices = 0;
        for t in targets {
            devices += self.store.request_verification(t, self.clock.now()).await?;
        }
        Ok((profile, devices))
    }

    /// A group by name (or id), for a verification target.
    pub async fn group(&self, key: &str) -> ServiceResult<Group> {
        if let Some(g) = self.store.group_by_name(key).await? {
            return Ok(g);
        }
        if let Ok(id) = key.parse::<GroupId>() {
            return self
                .store
                .list_groups()
                .await?
                .into_iter()
                .find(|g| g.id == id)
                .ok_or(ServiceError::NotFound("group"));
        }
        Err(ServiceError::NotFound("group"))
    }

    /// Assigns a built-in catalog entry: creates the profile named after the entry (its settings
    /// from the catalog, its title as description), or updates that profile's settings and
    /// assignment, keeping its priority and remediation.
    pub async fn assign_catalog(
        &self,
        who: &Principal,
        name: &str,
        assign: AssignDocument,
        dry_run: bool,
    ) -> ServiceResult<ApplyReport> {
        require(who, Permission::ProfilesWrite)?;
        let entry = self
            .platforms
            .catalog()
            .find(|p| p.name == name)
            .ok_or(ServiceError::NotFound("catalog entry"))?;
        let adapter = self.platforms.get(entry.platform)?;
        let settings = adapter.catalog_settings(name).ok_or_else(|| {
            ServiceError::Invalid(format!(
                "catalog entry {name:?} needs parameters ({}); write a profile document from it instead",
                entry
                    .parameters
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if !valid_profile_name(name) {
            return Err(ServiceError::Internal(format!(
                "catalog entry {name:?} is not a valid profile name"
            )));
        }
        let groups = GroupNames::load(self.store.as_ref()).await?;
        let assignment = groups
            .resolve(&assign)
            .map_err(|g| ServiceError::Invalid(format!("no group named {g:?}")))?;
        let existing = self.store.profile_by_name(name).await?;
        // Assigning a catalog entry again keeps the profile's device-side lock as it is.
        let config_lock = match &existing {
            Some(p) => self.current(p).await?.config_lock,
            None => false,
        };
        let prepared = Prepared {
            config_lock,
            name: name.to_owned(),
            platform: entry.platform,
            description: existing
                .as_ref()
                .map_or_else(|| entry.title.clone(), |p| p.description.clone()),
            priority: existing.as_ref().map_or(DEFAULT_PRIORITY, |p| p.priority),
            remediation: existing.as_ref().map_or(Remediation::default(), |p| p.remediation),
            settings,
            assign: groups.document(&assignment),
            assignment,
            rollout: None,
        };
        self.plan_and_write(vec![prepared], &groups, dry_run).await
    }

    async fn by_name(&self, name: &str) -> ServiceResult<Profile> {
        self.store
            .profile_by_name(name)
            .await?
            .ok_or(ServiceError::NotFound("profile"))
    }

    async fn current(&self, p: &Profile) -> ServiceResult<ProfileVersion> {
        self.store
            .profile_version(p.id, p.current_version)
            .await?
            .ok_or_else(|| {
                ServiceError::Internal(format!(
                    "profile {} has no version {} (its current one)",
                    p.name, p.current_version
                ))
            })
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}

/// The groups by name and by id, read once per call.
struct GroupNames {
    by_name: BTreeMap<String, GroupId>,
    by_id: BTreeMap<GroupId, String>,
}

impl GroupNames {
    async fn load(store: &dyn Store) -> ServiceResult<Self> {
        let groups = store.list_groups().await?;
        Ok(Self {
            by_name: groups.iter().map(|g| (g.name.clone(), g.id)).collect(),
            by_id: groups.into_iter().map(|g| (g.id, g.name)).collect(),
        })
    }

    /// The document's assignment with group ids; Err names the first unknown group.
    fn resolve(&self, a: &AssignDocument) -> Result<Assignment, String> {
        let ids = |names: &[String]| -> Result<Vec<GroupId>, String> {
            let mut out: Vec<GroupId> = Vec::new();
            for n in names {
                let id = *self.by_name.get(n.trim()).ok_or_else(|| n.clone())?;
                if !out.contains(&id) {
                    out.push(id);
                }
            }
            Ok(out)
        };
        Ok(Assignment {
            all: a.all,
            groups: ids(&a.groups)?,
            exclude_groups: ids(&a.exclude_groups)?,
        })
    }

    /// An assignment with groups by name, sorted (a group deleted meanwhile shows as its id).
    fn document(&self, a: &Assignment) -> AssignDocument {
        let names = |ids: &[GroupId]| -> Vec<String> {
            let mut v: Vec<String> = ids
                .iter()
                .map(|id| self.by_id.get(id).cloned().unwrap_or_else(|| id.to_string()))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        AssignDocument {
            all: a.all,
            groups: names(&a.groups),
            exclude_groups: names(&a.exclude_groups),
        }
    }
}

/// Assignments compare as sets: the order groups are listed in means nothing.
fn same_assignment(a: &Assignment, b: &Assignment) -> bool {
    let set = |v: &[GroupId]| v.iter().copied().collect::<BTreeSet<_>>();
    a.all == b.all && set(&a.groups) == set(&b.groups) && set(&a.exclude_groups) == set(&b.exclude_groups)
}

/// Paths added, changed and removed from `old` to `new`.
fn setting_diff(old: &[Setting], new: &[Setting]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let old: BTreeMap<&str, &Setting> = old.iter().map(|s| (s.path.as_str(), s)).collect();
    let new_map: BTreeMap<&str, &Setting> = new.iter().map(|s| (s.path.as_str(), s)).collect();
    let added = new
        .iter()
        .filter(|s| !old.contains_key(s.path.as_str()))
        .map(|s| s.path.clone())
        .collect();
    let changed = new
        .iter()
        .filter(|s| old.get(s.path.as_str()).is_some_and(|o| *o != *s))
        .map(|s| s.path.clone())
        .collect();
    let removed = old
        .keys()
        .filter(|p| !new_map.contains_key(*p))
        .map(|p| (*p).to_owned())
        .collect();
    (added, changed, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::OnRemove;

    fn s(path: &str, value: &str) -> Setting {
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

    #[test]
    fn diffs_name_added_changed_and_removed_paths() {
        let old = [s("./A", "1"), s("./B", "1"), s("./C", "1")];
        let new = [s("./B", "2"), s("./C", "1"), s("./D", "1")];
        let (added, changed, removed) = setting_diff(&old, &new);
        assert_eq!(added, ["./D"]);
        assert_eq!(changed, ["./B"]);
        assert_eq!(removed, ["./A"]);
        assert_eq!(setting_diff(&old, &old), (vec![], vec![], vec![]));
    }

    #[test]
    fn assignments_compare_as_sets() {
        let (g1, g2) = (GroupId::new(), GroupId::new());
        let a = Assignment {
            all: false,
            groups: vec![g1, g2],
            exclude_groups: vec![],
        };
        let b = Assignment {
            groups: vec![g2, g1, g1],
            ..a.clone()
        };
        assert!(same_assignment(&a, &b));
        let c = Assignment {
            exclude_groups: vec![g1],
            ..a.clone()
        };
        assert!(!same_assignment(&a, &c));
        assert!(!same_assignment(&a, &Assignment { all: true, ..a.clone() }));
    }

    #[test]
    fn group_names_resolve_and_name_the_unknown_one() {
        let (g1, g2) = (GroupId::new(), GroupId::new());
        let groups = GroupNames {
            by_name: [("pilot".to_owned(), g1), ("lab".to_owned(), g2)].into_iter().collect(),
            by_id: [(g1, "pilot".to_owned()), (g2, "lab".to_owned())].into_iter().collect(),
        };
        let doc = AssignDocument {
            all: false,
            groups: vec!["pilot".into(), "pilot".into()],
            exclude_groups: vec!["lab".into()],
        };
        let a = groups.resolve(&doc).unwrap();
        assert_eq!((a.groups.clone(), a.exclude_groups.clone()), (vec![g1], vec![g2]));
        assert_eq!(groups.document(&a).groups, ["pilot"]);
        let bad = AssignDocument {
            groups: vec!["nope".into()],
            ..Default::default()
        };
        assert_eq!(groups.resolve(&bad).unwrap_err(), "nope");
    }
}
