//! Configuration profiles (docs/PROFILES.md): apply documents (validated whole, written atomically,
//! or only reported with `dry_run`), export them, list, show and delete profiles, a device's
//! settings table, on-demand verification of a device or a group, and assigning a built-in catalog
//! entry. The handlers call `Core::profiles`; the service decides.

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use steward_core::configuration::SettingView;
use steward_core::service::profiles::{ApplyAction, ApplyReport, ProfileChange};
use steward_core::*;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::AuditNote;
use crate::error::{ApiError, ApiJson, ApiQuery, Problem};

// ---------------------------------------------------------------- documents

/// What a profile does when a device is seen to hold another value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RemediationName {
    /// Send the desired value again (the default).
    #[default]
    Remediate,
    /// Record the drift and leave the device's value.
    Report,
}

impl From<RemediationName> for Remediation {
    fn from(r: RemediationName) -> Self {
        match r {
            RemediationName::Remediate => Remediation::Remediate,
            RemediationName::Report => Remediation::Report,
        }
    }
}

impl From<Remediation> for RemediationName {
    fn from(r: Remediation) -> Self {
        match r {
            Remediation::Remediate => RemediationName::Remediate,
            Remediation::Report => RemediationName::Report,
        }
    }
}

/// Which devices a profile applies to: every device (`all`) or the members of `groups`, minus the
/// members of `exclude_groups` (an exclusion always wins). Groups by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_groups: Vec<String>,
}

impl From<AssignBody> for AssignDocument {
    fn from(a: AssignBody) -> Self {
        Self {
            all: a.all,
            groups: a.groups,
            exclude_groups: a.exclude_groups,
        }
    }
}

impl From<AssignDocument> for AssignBody {
    fn from(a: AssignDocument) -> Self {
        Self {
            all: a.all,
            groups: a.groups,
            exclude_groups: a.exclude_groups,
        }
    }
}

fn default_priority() -> i32 {
    steward_core::configuration::DEFAULT_PRIORITY
}

/// A profile document: the shape of a `steward apply` YAML file, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileDocumentBody {
    /// Always `profile`.
    #[schema(example = "profile")]
    pub kind: String,
    /// 1-64 lower-case letters, digits, `-`, `_`, `.` (not `apply` or `export`).
    #[schema(example = "camera-off")]
    pub name: String,
    #[schema(example = "windows")]
    pub platform: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Conflict rank: the lowest number wins (default 100).
    #[serde(default = "default_priority")]
    pub priority: i32,
    #[serde(default)]
    pub remediation: RemediationName,
    /// The settings in the platform's shape (Windows: `loc_uri`, `format`, `value`, `on_remove`, …;
    /// docs/PROFILES.md).
    #[schema(value_type = Vec<Object>)]
    pub settings: Vec<serde_json::Value>,
    /// Also lock the settings on the device itself where it supports it (Windows 11 secured-core
    /// PCs: DMClient ConfigLock; docs/PROFILES.md). Part of the version: changing it appends one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub config_lock: bool,
    #[serde(default)]
    pub assign: AssignBody,
    /// A catalog entry's metadata: accepted, not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub catalog: Option<serde_json::Value>,
    /// Roll a new version of the settings out in rings (docs/ROLLOUTS.md) instead of to every
    /// device at once. Not stored with the profile, so export leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollouts::RolloutBody>,
}

impl From<ProfileDocumentBody> for ProfileDocument {
    fn from(d: ProfileDocumentBody) -> Self {
        Self {
            kind: d.kind,
            name: d.name,
            platform: d.platform,
            description: d.description,
            priority: d.priority,
            remediation: d.remediation.into(),
            settings: d.settings,
            config_lock: d.config_lock,
            assign: d.assign.into(),
            catalog: d.catalog,
            rollout: d.rollout.map(Into::into),
        }
    }
}

impl From<ProfileDocument> for ProfileDocumentBody {
    fn from(d: ProfileDocument) -> Self {
        Self {
            kind: d.kind,
            name: d.name,
            platform: d.platform,
            description: d.description,
            priority: d.priority,
            remediation: d.remediation.into(),
            settings: d.settings,
            config_lock: d.config_lock,
            assign: d.assign.into(),
            catalog: None,
            rollout: d.rollout.map(Into::into),
        }
    }
}

// ---------------------------------------------------------------- apply

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub documents: Vec<ProfileDocumentBody>,
    /// Report what would change and write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApplyActionName {
    Created,
    Updated,
    Unchanged,
}

impl From<ApplyAction> for ApplyActionName {
    fn from(a: ApplyAction) -> Self {
        match a {
            ApplyAction::Created => Self::Created,
            ApplyAction::Updated => Self::Updated,
            ApplyAction::Unchanged => Self::Unchanged,
        }
    }
}

/// What an apply does to one profile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileChangeView {
    pub name: String,
    pub platform: String,
    pub action: ApplyActionName,
    /// The current version before (null: a new profile).
    pub version_before: Option<u32>,
    pub version_after: u32,
    pub settings_added: Vec<String>,
    pub settings_changed: Vec<String>,
    pub settings_removed: Vec<String>,
    /// `description`, `priority`, `remediation`, `config_lock` when they change.
    pub fields_changed: Vec<String>,
    pub assignment_before: Option<AssignBody>,
    pub assignment_after: AssignBody,
    /// Active enrollments the old and the new assignment include.
    pub devices_before: u64,
    pub devices_after: u64,
}

/// What an apply did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplyReportView {
    pub dry_run: bool,
    /// Whether anything was written.
    pub written: bool,
    /// Whether any profile is created or updated.
    pub changed: bool,
    pub profiles: Vec<ProfileChangeView>,
}

fn change_view(c: ProfileChange) -> ProfileChangeView {
    ProfileChangeView {
        name: c.name,
        platform: c.platform.as_str().into(),
        action: c.action.into(),
        version_before: c.version_before,
        version_after: c.version_after,
        settings_added: c.settings_added,
        settings_changed: c.settings_changed,
        settings_removed: c.settings_removed,
        fields_changed: c.fields_changed.into_iter().map(str::to_owned).collect(),
        assignment_before: c.assignment_before.map(Into::into),
        assignment_after: c.assignment_after.into(),
        devices_before: c.devices_before,
        devices_after: c.devices_after,
    }
}

fn report_response(r: ApplyReport) -> Response {
    let summary: Vec<String> = r
        .profiles
        .iter()
        .map(|p| format!("{} {}", p.name, p.action.as_str()))
        .collect();
    let note = AuditNote {
        target: Some(r.profiles.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(",")),
        details: Some(format!(
            "{}{}",
            if r.dry_run { "dry run: " } else { "" },
            summary.join(", ")
        )),
    };
    let view = ApplyReportView {
        dry_run: r.dry_run,
        written: r.written,
        changed: r.changed(),
        profiles: r.profiles.into_iter().map(change_view).collect(),
    };
    (StatusCode::OK, Extension(note), axum::Json(view)).into_response()
}

/// Apply profile documents: every document is validated first (kind, name, platform, each setting
/// through the platform, groups); one invalid document refuses the whole request with 422 naming
/// the document and the setting, and nothing is written. Otherwise every change is written at once.
/// Applying the same documents again reports every profile `unchanged` and writes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/profiles/apply",
    tag = "profiles",
    request_body = ApplyRequest,
    responses(
        (status = 200, description = "What changed (or would change)", body = ApplyReportView),
        (status = 409, description = "The profiles changed meanwhile; nothing was written", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid document or setting (named); nothing was written", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn apply_profiles(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<ApplyRequest>,
) -> Result<Response, ApiError> {
    let documents = body.documents.into_iter().map(Into::into).collect();
    let report = state.core.profiles.apply(&who, documents, body.dry_run).await?;
    Ok(report_response(report))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DryRunQuery {
    /// Report what would change and write nothing.
    pub dry_run: Option<bool>,
}

/// Assign a built-in catalog entry: creates (or updates) the profile named after the entry with the
/// entry's settings and this assignment. Kinds that need parameters are refused (422).
#[utoipa::path(
    post,
    path = "/api/v1/catalog/{name}/assign",
    tag = "catalog",
    params(("name" = String, Path, description = "The entry's name, e.g. baseline-bitlocker"), DryRunQuery),
    request_body = AssignBody,
    responses(
        (status = 200, description = "What changed", body = ApplyReportView),
        (status = 404, description = "No such entry", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown group, or the entry needs parameters", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn assign_catalog_entry(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<DryRunQuery>,
    ApiJson(body): ApiJson<AssignBody>,
) -> Result<Response, ApiError> {
    let report = state
        .core
        .profiles
        .assign_catalog(&who, &name, body.into(), q.dry_run.unwrap_or(false))
        .await?;
    Ok(report_response(report))
}

// ---------------------------------------------------------------- reading

/// A profile in lists.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileSummary {
    pub id: uuid::Uuid,
    pub name: String,
    pub platform: String,
    pub description: String,
    pub priority: i32,
    pub remediation: RemediationName,
    /// The version devices get.
    pub current_version: u32,
    pub assign: AssignBody,
    /// Active enrollments the assignment includes.
    pub devices: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Every profile, by name (profiles are few, so the list is not paged).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileList {
    pub items: Vec<ProfileSummary>,
}

fn summary(p: Profile, assign: AssignDocument, devices: u64) -> ProfileSummary {
    ProfileSummary {
        id: p.id.0,
        name: p.name,
        platform: p.platform.as_str().into(),
        description: p.description,
        priority: p.priority,
        remediation: p.remediation.into(),
        current_version: p.current_version,
        assign: assign.into(),
        devices,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

/// List the configuration profiles.
#[utoipa::path(
    get,
    path = "/api/v1/profiles",
    tag = "profiles",
    responses((status = 200, description = "Every profile", body = ProfileList))
)]
pub async fn list_profiles(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
) -> Result<axum::Json<ProfileList>, ApiError> {
    let items = state.core.profiles.list(&who).await?;
    Ok(axum::Json(ProfileList {
        items: items.into_iter().map(|(p, a, n)| summary(p, a, n)).collect(),
    }))
}

/// Every profile as documents: applying the export changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileExport {
    pub documents: Vec<ProfileDocumentBody>,
}

/// Export every profile as documents (the current version, groups by name).
#[utoipa::path(
    get,
    path = "/api/v1/profiles/export",
    tag = "profiles",
    responses((status = 200, description = "Every profile as a document", body = ProfileExport))
)]
pub async fn export_profiles(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
) -> Result<axum::Json<ProfileExport>, ApiError> {
    let documents = state.core.profiles.export(&who).await?;
    Ok(axum::Json(ProfileExport {
        documents: documents.into_iter().map(Into::into).collect(),
    }))
}

/// One immutable version of a profile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileVersionView {
    pub version: u32,
    /// SHA-256 of the settings: equal digests, equal settings.
    pub digest: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The settings in the platform's document shape.
    #[schema(value_type = Vec<Object>)]
    pub settings: Vec<serde_json::Value>,
    /// Whether the version asks for the device-side lock (`config_lock`).
    #[serde(default)]
    pub config_lock: bool,
}

/// Device settings of one version in one status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusCount {
    pub version: u32,
    /// pending, sent, applied, verified, failed, drifted or removing.
    pub status: String,
    pub count: u64,
}

/// Two profiles that set one path to different values; the winner's value is sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConflictView {
    pub path: String,
    pub winner: String,
    pub loser: String,
}

fn conflict_view(c: Conflict) -> ConflictView {
    ConflictView {
        path: c.path,
        winner: c.winner_name,
        loser: c.loser_name,
    }
}

/// A profile with its versions, its devices' status counts and its conflicts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileDetailView {
    pub profile: ProfileSummary,
    pub versions: Vec<ProfileVersionView>,
    /// Per version and status, the number of device settings.
    pub status: Vec<StatusCount>,
    /// With other profiles whose assignments can meet this one's on a device.
    pub conflicts: Vec<ConflictView>,
}

/// One profile: versions, per-status device setting counts, conflicts.
#[utoipa::path(
    get,
    path = "/api/v1/profiles/{name}",
    tag = "profiles",
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 200, description = "The profile", body = ProfileDetailView),
        (status = 404, description = "No such profile", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_profile(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<axum::Json<ProfileDetailView>, ApiError> {
    let d = state.core.profiles.show(&who, &name).await?;
    let adapter = state.core.platforms.get(d.profile.platform).ok();
    let doc = |s: &Setting| match adapter {
        Some(a) => a.setting_document(s),
        None => serde_json::to_value(s).unwrap_or_default(),
    };
    let versions = d
        .versions
        .iter()
        .map(|v| ProfileVersionView {
            version: v.version,
            digest: v.digest.clone(),
            created_at: v.created_at,
            settings: v.settings.iter().map(doc).collect(),
            config_lock: v.config_lock,
        })
        .collect();
    Ok(axum::Json(ProfileDetailView {
        profile: summary(d.profile, d.assign, d.status.devices),
        versions,
        status: d
            .status
            .settings
            .into_iter()
            .map(|(version, status, count)| StatusCount {
                version,
                status: status.as_str().into(),
                count,
            })
            .collect(),
        conflicts: d.conflicts.into_iter().map(conflict_view).collect(),
    }))
}

/// Delete a profile: its settings are removed from the devices (by each setting's removal rule)
/// at their next check-ins.
#[utoipa::path(
    delete,
    path = "/api/v1/profiles/{name}",
    tag = "profiles",
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such profile", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_profile(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let p = state.core.profiles.delete(&who, &name).await?;
    Ok(crate::no_content(p.name))
}

// ---------------------------------------------------------------- devices

/// One setting of a device: what it should hold and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceSettingView {
    pub path: String,
    /// The profile it comes from (null: no profile sets it any more; it is being removed).
    pub profile: Option<String>,
    pub version: u32,
    /// pending, sent, applied, verified, failed, drifted or removing.
    pub status: String,
    /// Why, for people ("the device has not checked in since it was assigned", the device's error…).
    pub reason: String,
    /// The desired setting in the platform's document shape (null when being removed).
    #[schema(value_type = Option<Object>)]
    pub desired: Option<serde_json::Value>,
    /// The device's last status code for it.
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// The value last read back.
    pub observed: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub observed_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
}

/// A device's settings table.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceSettingsView {
    /// The enrollment id.
    pub device: uuid::Uuid,
    pub items: Vec<DeviceSettingView>,
    /// Assigned profiles that set one path to different values.
    pub conflicts: Vec<ConflictView>,
    /// The device-side configuration lock (Windows: DMClient ConfigLock), when an assigned profile
    /// asks for it (`config_lock: true`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_lock: Option<ConfigLockView>,
}

/// Whether the device-side lock a profile asks for applies to the device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConfigLockView {
    /// The assigned profiles asking for it, highest-ranked first (the first owns its settings).
    pub requested_by: Vec<String>,
    /// `applied`: the device supports it, and its nodes are rows of `items` (with their own status);
    /// `unsupported`: it does not, `reason` says why.
    pub status: String,
    /// The lock's node paths (rows of `items`) when supported.
    pub paths: Vec<String>,
    /// Why the device does not support it (empty when supported).
    pub reason: String,
}

/// The device's settings: every setting its assigned profiles give it, with status and reason, and
/// settings being removed.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/settings",
    operation_id = "device_settings",
    tag = "devices",
    params(("id" = String, Path, description = "Enrollment id or DeviceID")),
    responses(
        (status = 200, description = "The device's settings", body = DeviceSettingsView),
        (status = 404, description = "No such device", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn device_settings(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<axum::Json<DeviceSettingsView>, ApiError> {
    let e = state.core.devices.find(&who, &id).await?;
    let (views, conflicts, lock) = state.core.profiles.device_settings(&who, &e).await?;
    let adapter = state.core.platforms.get(e.platform).ok();
    let items = views
        .into_iter()
        .map(|v: SettingView| {
            let row = v.row.as_ref();
            DeviceSettingView {
                desired: v.desired.as_ref().map(|s| match adapter {
                    Some(a) => a.setting_document(s),
                    None => serde_json::to_value(s).unwrap_or_default(),
                }),
                path: v.path,
                profile: v.profile_name,
                version: v.version,
                status: v.status.as_str().into(),
                reason: v.reason,
                status_code: row.and_then(|r| r.status_code),
                error: row.and_then(|r| r.error.clone()),
                observed: row.and_then(|r| r.observed.clone()),
                observed_at: row.and_then(|r| r.observed_at),
                verified_at: row.and_then(|r| r.verified_at),
            }
        })
        .collect();
    Ok(axum::Json(DeviceSettingsView {
        device: e.id.0,
        items,
        conflicts: conflicts.into_iter().map(conflict_view).collect(),
        config_lock: lock.map(|l| ConfigLockView {
            requested_by: l.requested_by,
            status: if l.supported { "applied" } else { "unsupported" }.into(),
            paths: l.paths,
            reason: l.reason,
        }),
    }))
}

/// How many active enrollments a verification covers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerificationRequested {
    pub devices: u64,
}

fn verify_response(target: String, devices: u64) -> Response {
    let note = AuditNote {
        target: Some(target),
        details: Some(format!("{devices} devices")),
    };
    (
        StatusCode::ACCEPTED,
        Extension(note),
        axum::Json(VerificationRequested { devices }),
    )
        .into_response()
}

/// Read the device's readable settings back at its next check-in (drift shows as `drifted`).
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/actions/verify",
    operation_id = "verify_device",
    tag = "devices",
    params(("id" = String, Path, description = "Enrollment id or DeviceID of an active enrollment")),
    responses(
        (status = 202, description = "Verification due at the next check-in", body = VerificationRequested),
        (status = 404, description = "No active enrollment", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn verify_device(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let e = state.core.devices.find_active(&who, &id).await?;
    let n = state.core.profiles.verify(&who, VerifyTarget::Enrollment(e.id)).await?;
    Ok(verify_response(e.id.to_string(), n))
}

/// Read back the readable settings of every active device of the group at their next check-ins.
#[utoipa::path(
    post,
    path = "/api/v1/groups/{id}/actions/verify",
    operation_id = "verify_group",
    tag = "access",
    params(("id" = String, Path, description = "Group name or id")),
    responses(
        (status = 202, description = "Verification due at the devices' next check-ins", body = VerificationRequested),
        (status = 404, description = "No such group", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn verify_group(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let g = state.core.profiles.group(&id).await?;
    let n = state.core.profiles.verify(&who, VerifyTarget::Group(g.id)).await?;
    Ok(verify_response(g.name, n))
}

/// Read back the readable settings of every active device the profile's assignment covers (all
/// devices, or its groups' members) at their next check-ins.
#[utoipa::path(
    post,
    path = "/api/v1/profiles/{name}/actions/verify",
    operation_id = "verify_profile",
    tag = "profiles",
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 202, description = "Verification due at the devices' next check-ins", body = VerificationRequested),
        (status = 404, description = "No such profile", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn verify_profile(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (p, n) = state.core.profiles.verify_profile(&who, &name).await?;
    Ok(verify_response(p.name, n))
}
