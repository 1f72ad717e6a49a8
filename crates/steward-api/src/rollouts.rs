//! Staged rollouts of a profile version (docs/ROLLOUTS.md): a profile's rollout with per-ring
//! progress, starting one for the profile's current version, and the admin's actions (advance,
//! pause, resume, rollback). The handlers call `Core::rollouts`; the service decides.

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use steward_core::service::rollouts::RolloutStatus;
use steward_core::*;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::AuditNote;
use crate::error::{ApiError, ApiJson, Problem};

/// One ring as a request names it: exactly one of `pilot` (a group name), `percent` (1-99, larger
/// than the ring before: a device's stable hash decides), `everyone` (the last ring; added when
/// missing).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RingBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pilot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub everyone: bool,
    /// This ring's minimum soak, instead of the rollout's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_seconds: Option<u32>,
    /// This ring's required success ratio, instead of the rollout's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_ratio: Option<f64>,
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

/// A rollout's rings and gates (a profile document's `rollout` section, or the start request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutBody {
    pub rings: Vec<RingBody>,
    /// Minimum time each ring is out before the next is released (default 3600).
    #[serde(default = "default_soak")]
    pub soak_seconds: u32,
    /// Devices acknowledged ÷ ring devices needed to advance (default 0.95).
    #[serde(default = "default_success")]
    pub success_ratio: f64,
    /// Devices failed ÷ ring devices above which the rollout halts (default 0.05).
    #[serde(default = "default_failure")]
    pub failure_threshold: f64,
    /// Advance by the gates without an admin (default true).
    #[serde(default = "default_true")]
    pub auto_advance: bool,
}

impl From<RolloutBody> for RolloutSpec {
    fn from(b: RolloutBody) -> Self {
        Self {
            rings: b
                .rings
                .into_iter()
                .map(|r| RingSpec {
                    pilot: r.pilot,
                    percent: r.percent,
                    everyone: r.everyone,
                    soak_seconds: r.soak_seconds,
                    success_ratio: r.success_ratio,
                })
                .collect(),
            soak_seconds: b.soak_seconds,
            success_ratio: b.success_ratio,
            failure_threshold: b.failure_threshold,
            auto_advance: b.auto_advance,
        }
    }
}

impl From<RolloutSpec> for RolloutBody {
    fn from(s: RolloutSpec) -> Self {
        Self {
            rings: s
                .rings
                .into_iter()
                .map(|r| RingBody {
                    pilot: r.pilot,
                    percent: r.percent,
                    everyone: r.everyone,
                    soak_seconds: r.soak_seconds,
                    success_ratio: r.success_ratio,
                })
                .collect(),
            soak_seconds: s.soak_seconds,
            success_ratio: s.success_ratio,
            failure_threshold: s.failure_threshold,
            auto_advance: s.auto_advance,
        }
    }
}

/// One ring's progress (cumulative: every device released up to and including this ring).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RingView {
    /// 1-based.
    pub ring: u32,
    /// pilot, percent or everyone.
    pub kind: String,
    /// "pilot group lab", "25 % of devices", "everyone".
    pub target: String,
    pub released: bool,
    pub devices: u64,
    /// Devices whose settings of the new version are all applied or verified.
    pub acknowledged: u64,
    /// Devices with a failed setting of the new version.
    pub failed: u64,
    pub soak_seconds: u32,
    pub success_ratio: f64,
}

/// A profile's rollout with per-ring progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RolloutView {
    pub id: uuid::Uuid,
    pub profile: String,
    /// running, paused, halted, completed or rolled_back.
    pub state: String,
    /// Why the state is what it is (a halt's failure ratio, who paused), if anything.
    pub reason: String,
    /// The version devices outside the released rings keep (0: none).
    pub from_version: u32,
    pub to_version: u32,
    /// The released ring furthest along, 1-based.
    pub current_ring: u32,
    pub auto_advance: bool,
    pub failure_threshold: f64,
    /// What the gates say now, for an active rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    pub rings: Vec<RingView>,
    #[serde(with = "time::serde::rfc3339")]
    pub ring_started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn view(s: RolloutStatus) -> RolloutView {
    let r = &s.rollout;
    let rings = r
        .rings
        .iter()
        .zip(&s.rings)
        .enumerate()
        .map(|(i, (ring, st))| RingView {
            ring: i as u32 + 1,
            kind: match ring.target {
                RingTarget::Pilot { .. } => "pilot",
                RingTarget::Percent { .. } => "percent",
                RingTarget::Everyone => "everyone",
            }
            .into(),
            target: ring.describe(),
            released: r.state == RolloutState::Completed
                || (r.state != RolloutState::RolledBack && i as u32 <= r.current_ring),
            devices: st.devices,
            acknowledged: st.acknowledged,
            failed: st.failed,
            soak_seconds: ring.soak_seconds.unwrap_or(r.soak_seconds),
            success_ratio: ring.success_ratio.unwrap_or(r.success_ratio),
        })
        .collect();
    RolloutView {
        id: r.id.0,
        profile: s.profile.name.clone(),
        state: r.state.as_str().into(),
        reason: r.reason.clone(),
        from_version: r.from_version,
        to_version: r.to_version,
        current_ring: r.current_ring + 1,
        auto_advance: r.auto_advance,
        failure_threshold: r.failure_threshold,
        gate: s.gate.clone(),
        rings,
        ring_started_at: r.ring_started_at,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// The profile's newest rollout, with each ring's devices, acknowledgements and failures.
#[utoipa::path(
    get,
    path = "/api/v1/profiles/{name}/rollout",
    tag = "profiles",
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 404, description = "No such profile, or it has no rollout", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_rollout(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<axum::Json<RolloutView>, ApiError> {
    Ok(axum::Json(view(state.core.rollouts.status(&who, &name).await?)))
}

/// Start rolling the profile's current version out in rings, from the version before it:
/// devices outside the released rings keep (or go back to) that version. To roll a new version
/// out, prefer applying its document with a `rollout` section (the version and its rollout are
/// written together).
#[utoipa::path(
    post,
    path = "/api/v1/profiles/{name}/rollout",
    tag = "profiles",
    params(("name" = String, Path, description = "Profile name")),
    request_body = RolloutBody,
    responses(
        (status = 201, description = "Started", body = RolloutView),
        (status = 404, description = "No such profile", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The profile has an active rollout", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid rings or gates", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start_rollout(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<RolloutBody>,
) -> Result<Response, ApiError> {
    let r = state.core.rollouts.start(&who, &name, &body.into()).await?;
    let status = state.core.rollouts.status(&who, &name).await?;
    let note = AuditNote {
        target: Some(name),
        details: Some(format!(
            "version {} -> {} in {} rings",
            r.from_version,
            r.to_version,
            r.rings.len()
        )),
    };
    Ok((StatusCode::CREATED, Extension(note), axum::Json(view(status))).into_response())
}

async fn act(state: ApiState, who: Principal, name: String, action: RolloutAction) -> Result<Response, ApiError> {
    let r = state.core.rollouts.act(&who, &name, action).await?;
    let status = state.core.rollouts.status(&who, &name).await?;
    let note = AuditNote {
        target: Some(name),
        details: Some(format!("ring {}, {}", r.current_ring + 1, r.state)),
    };
    Ok((StatusCode::OK, Extension(note), axum::Json(view(status))).into_response())
}

/// Release the next ring now, whatever its gates say (past the last ring: complete). Running or
/// paused rollouts only.
#[utoipa::path(
    post,
    path = "/api/v1/profiles/{name}/rollout/actions/advance",
    tag = "profiles",
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 200, description = "Advanced", body = RolloutView),
        (status = 404, description = "No such profile or rollout", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not possible in the rollout's state", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn advance_rollout(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    act(state, who, name, RolloutAction::Advance).await
}

/// Stop releasing rings (devices keep what they have) until resumed.
#[utoipa::path(
    post,
    path = "/api/v1/profiles/{name}/rollout/actions/pause",
    tag = "profiles",
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 200, description = "Paused", body = RolloutView),
        (status = 404, description = "No such profile or rollout", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not running", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn pause_rollout(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    act(state, who, name, RolloutAction::Pause).await
}

/// Resume a paused or halted rollout; the current ring's soak starts again.
#[utoipa::path(
    post,
    path = "/api/v1/profiles/{name}/rollout/actions/resume",
    tag = "profiles",
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 200, description = "Resumed", body = RolloutView),
        (status = 404, description = "No such profile or rollout", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not paused or halted", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resume_rollout(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    act(state, who, name, RolloutAction::Resume).await
}

/// Roll back: every device gets the previous version's values again (a profile new with this
/// version is removed by its settings' removal rules).
#[utoipa::path(
    post,
    path = "/api/v1/profiles/{name}/rollout/actions/rollback",
    tag = "profiles",
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 200, description = "Rolled back", body = RolloutView),
        (status = 404, description = "No such profile or rollout", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The rollout is not active", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn rollback_rollout(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    act(state, who, name, RolloutAction::Rollback).await
}
