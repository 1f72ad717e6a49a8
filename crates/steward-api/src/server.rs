//! Server settings and totals.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::error::ApiError;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    pub active_devices: u64,
    pub enrollments: u64,
    pub open_commands: u64,
    pub enrollment_tokens: u64,
    pub users: u64,
    pub groups: u64,
    pub api_tokens: u64,
    pub audit_events: u64,
}

/// Non-secret settings and totals.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServerInfo {
    pub version: String,
    pub api_version: String,
    pub public_url: String,
    /// The URL devices enroll with (MS-MDE2 discovery).
    pub enrollment_url: String,
    /// onpremise or federated.
    pub auth_policy: String,
    pub server_name: String,
    pub poll_interval_minutes: u32,
    pub inventory_interval_hours: u32,
    pub md5_auth: bool,
    /// Console users must give a TOTP code after their password.
    pub console_require_totp: bool,
    /// Totals (for a group-scoped token: of the whole server; they reveal no device).
    pub counts: Counts,
}

/// Server settings (nothing secret) and totals.
#[utoipa::path(
    get,
    path = "/api/v1/server",
    tag = "server",
    responses((status = 200, description = "Settings and totals", body = ServerInfo))
)]
pub async fn server_info(State(state): State<ApiState>) -> Result<axum::Json<ServerInfo>, ApiError> {
    let c = state.core.store.admin_counts().await?;
    let cfg = &state.settings;
    Ok(axum::Json(ServerInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: "v1".into(),
        enrollment_url: cfg.enrollment_url.clone(),
        public_url: cfg.public_url.clone(),
        auth_policy: cfg.auth_policy.clone(),
        server_name: cfg.server_name.clone(),
        poll_interval_minutes: cfg.poll_interval_minutes,
        inventory_interval_hours: cfg.inventory_interval_hours,
        md5_auth: cfg.md5_auth,
        console_require_totp: cfg.console_require_totp,
        counts: Counts {
            active_devices: c.active_devices,
            enrollments: c.enrollments,
            open_commands: c.open_commands,
            enrollment_tokens: c.enrollment_tokens,
            users: c.users,
            groups: c.groups,
            api_tokens: c.api_tokens,
            audit_events: c.audit_events,
        },
    }))
}
