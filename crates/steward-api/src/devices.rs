//! Devices, their inventory and command timeline, remote actions and custom commands.

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use steward_core::*;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use steward_core::service::commands::Queued;
use steward_core::service::devices::DeviceFilter;

use super::auth::AuditNote;
use super::error::{ApiError, ApiJson, ApiQuery, Problem};
use super::{check_limit, decode_cursor, encode_cursor, page_in_memory};
use crate::ApiState;

/// One enrollment of a device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceSummary {
    /// Enrollment id (a UUID; paths accept it or the DeviceID).
    pub id: uuid::Uuid,
    /// The platform the device enrolled from: windows.
    pub platform: String,
    /// The device's own identifier (MS-MDE2 DeviceID).
    pub device_id: String,
    pub name: Option<String>,
    pub user_email: Option<String>,
    pub os_version: Option<String>,
    pub os_edition: Option<String>,
    /// active, replaced, unenrolled or wiped.
    pub state: String,
    pub enrollment_type: String,
    pub auth_method: String,
    pub group_id: Option<uuid::Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
}

impl From<&Enrollment> for DeviceSummary {
    fn from(e: &Enrollment) -> Self {
        Self {
            id: e.id.0,
            platform: e.platform.as_str().into(),
            device_id: e.device_id.to_string(),
            name: e.device_name.clone(),
            user_email: e.user_email.clone(),
            os_version: e.os_version.clone(),
            os_edition: e.os_edition.clone(),
            state: e.state.as_str().into(),
            enrollment_type: e.enrollment_type.as_str().into(),
            auth_method: e.auth_method.as_str().into(),
            group_id: e.group_id.map(|g| g.0),
            enrolled_at: e.enrolled_at,
            last_seen_at: e.last_seen_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DevicePage {
    pub items: Vec<DeviceSummary>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Certificate {
    pub serial: String,
    /// SHA-1 thumbprint (hex).
    pub thumbprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Fact {
    /// e.g. `os.version`, `hardware.serial_number`.
    pub name: String,
    pub value: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FactChangeEntry {
    pub name: String,
    pub old_value: Option<String>,
    pub new_value: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceDetail {
    pub device: DeviceSummary,
    /// The name of the device's group, if any.
    pub group: Option<String>,
    pub certificate: Certificate,
    /// Current inventory facts.
    pub facts: Vec<Fact>,
    /// Every change of a fact's value, oldest first.
    pub fact_history: Vec<FactChangeEntry>,
    /// The device's admin-assigned tags, sorted (`PUT /api/v1/devices/{id}/tags`).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A queued command and where it stands.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandView {
    pub id: uuid::Uuid,
    pub enrollment_id: uuid::Uuid,
    /// Get, Add, Replace, Delete, Exec or Atomic.
    pub verb: String,
    /// The LocURIs it targets.
    pub targets: Vec<String>,
    /// Why it exists: admin, inventory, action:wipe…
    pub origin: String,
    pub priority: i32,
    /// pending, sent, accepted, succeeded, failed, cancelled or expired.
    pub state: String,
    /// The device's OMA-DM status code, once answered.
    pub status_code: Option<u16>,
    pub send_count: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_sent_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

impl CommandView {
    /// The view of a command, described by its platform.
    pub fn of(c: &Command, summary: CommandSummary) -> Self {
        Self {
            id: c.id.0,
            enrollment_id: c.enrollment_id.0,
            verb: summary.kind,
            targets: summary.targets,
            origin: c.origin.as_str().into_owned(),
            priority: c.priority,
            state: c.state.as_str().into(),
            status_code: c.status_code,
            send_count: c.send_count,
            created_at: c.created_at,
            last_sent_at: c.last_sent_at,
            completed_at: c.completed_at,
            expires_at: c.expires_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandPage {
    pub items: Vec<CommandView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortField {
    Name,
    LastSeen,
    EnrolledAt,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    Asc,
    Desc,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceListQuery {
    /// Case-insensitive substring of the device name.
    pub name: Option<String>,
    /// The enrolling user's e-mail (exact, case-insensitive).
    pub user: Option<String>,
    /// OS version prefix, e.g. `10.0.26100`.
    pub os_version: Option<String>,
    /// active, replaced, unenrolled or wiped.
    pub state: Option<String>,
    /// Only devices of this group (its name).
    pub group: Option<String>,
    /// Last check-in strictly before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen_before: Option<OffsetDateTime>,
    /// Last check-in strictly after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen_after: Option<OffsetDateTime>,
    /// Sort field (default enrolled_at).
    #[param(inline)]
    pub sort: Option<SortField>,
    /// Sort order (default asc).
    #[param(inline)]
    pub order: Option<SortOrder>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 100).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 100).
    pub limit: Option<u32>,
}

impl PageQuery {
    /// The first page at the largest size: the console shows its short lists (groups, enrollment
    /// tokens, webhooks, a device's commands) on one page.
    pub fn first_full_page() -> ApiQuery<Self> {
        ApiQuery(Self {
            cursor: None,
            limit: Some(super::MAX_LIMIT),
        })
    }
}

/// The device cursor remembers the ordering it was made for, so it cannot be replayed against
/// another one.
#[derive(Serialize, Deserialize)]
struct DevicePageCursor {
    sort: DeviceSort,
    desc: bool,
    at: DeviceCursor,
}

/// List devices (enrollments in any state), filtered and sorted.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "devices",
    params(DeviceListQuery),
    responses(
        (status = 200, description = "A page of devices", body = DevicePage),
        (status = 400, description = "Bad filter, cursor or limit", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_devices(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiQuery(q): ApiQuery<DeviceListQuery>,
) -> Result<axum::Json<DevicePage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let sort = match q.sort {
        Some(SortField::Name) => DeviceSort::Name,
        Some(SortField::LastSeen) => DeviceSort::LastSeen,
        Some(SortField::EnrolledAt) | None => DeviceSort::EnrolledAt,
    };
    let desc = matches!(q.order, Some(SortOrder::Desc));
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => {
            let c: DevicePageCursor = decode_cursor(c)?;
            if c.sort != sort || c.desc != desc {
                return Err(ApiError::BadRequest("the cursor belongs to another sort order".into()));
            }
            Some(c.at)
        }
    };
    let state_filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(EnrollmentState::parse(s).ok_or_else(|| ApiError::BadRequest(format!("unknown state {s:?}")))?),
    };
    let filter = DeviceFilter {
        name_contains: q.name,
        user: q.user,
        os_version: q.os_version,
        state: state_filter,
        group: q.group,
        last_seen_before: q.last_seen_before,
        last_seen_after: q.last_seen_after,
        sort,
        descending: desc,
        after,
        limit,
    };
    let page = state.core.devices.list(&who, filter).await?;
    let next_cursor = match (page.more, page.items.last()) {
        (true, Some(last)) => Some(encode_cursor(&DevicePageCursor {
            sort,
            desc,
            at: DeviceCursor {
                key: sort.key_of(last),
                id: last.id,
            },
        })),
        _ => None,
    };
    Ok(axum::Json(DevicePage {
        items: page.items.iter().map(DeviceSummary::from).collect(),
        next_cursor,
    }))
}

/// One device: enrollment, certificate, inventory facts and their history.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}",
    tag = "devices",
    params(("id" = String, Path, description = "Enrollment id or DeviceID")),
    responses(
        (status = 200, description = "The device", body = DeviceDetail),
        (status = 404, description = "No such device (or outside the token's group)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_device(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<axum::Json<DeviceDetail>, ApiError> {
    let d = state.core.devices.detail(&who, &id).await?;
    let e = &d.enrollment;
    Ok(axum::Json(DeviceDetail {
        group: d.group,
        device: DeviceSummary::from(e),
        certificate: Certificate {
            serial: e.cert_serial.to_string(),
            thumbprint: e.cert_thumbprint.to_string(),
            not_after: e.cert_not_after,
        },
        facts: d
            .facts
            .into_iter()
            .map(|f| Fact {
                name: f.name.to_string(),
                value: f.value,
                updated_at: f.updated_at,
            })
            .collect(),
        tags: d.tags.into_vec(),
        fact_history: d
            .fact_history
            .into_iter()
            .map(|h| FactChangeEntry {
                name: h.name.to_string(),
                old_value: h.old_value,
                new_value: h.new_value,
                at: h.at,
            })
            .collect(),
    }))
}

/// A device's command timeline, oldest first, with states and status codes.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/commands",
    tag = "devices",
    params(("id" = String, Path, description = "Enrollment id or DeviceID"), PageQuery),
    responses(
        (status = 200, description = "A page of commands", body = CommandPage),
        (status = 400, description = "Bad cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such device", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_device_commands(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<CommandPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let (e, commands) = state.core.commands.for_device(&who, &id).await?;
    let (page, next_cursor) = page_in_memory(commands, |c| c.id.to_string(), q.cursor.as_deref(), limit)?;
    Ok(axum::Json(CommandPage {
        items: page
            .iter()
            .map(|c| CommandView::of(c, state.core.commands.describe(&e, c)))
            .collect(),
        next_cursor,
    }))
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerbName {
    Get,
    Add,
    Replace,
    Delete,
    Exec,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandItemRequest {
    /// The LocURI, e.g. `./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera`.
    pub target: String,
    /// syncml:metinf Format: chr, int, bool, b64, xml, node…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// syncml:metinf Type, e.g. text/plain.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The value (Add, Replace; Exec optionally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// A custom OMA-DM command.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    pub verb: VerbName,
    pub items: Vec<CommandItemRequest>,
}

fn accepted(q: Queued, state: &ApiState) -> Response {
    let note = AuditNote {
        target: Some(q.enrollment.device_id.to_string()),
        details: Some(format!("command {}", q.command.id)),
    };
    let view = CommandView::of(&q.command, state.core.commands.describe(&q.enrollment, &q.command));
    (StatusCode::ACCEPTED, Extension(note), axum::Json(view)).into_response()
}

/// Queue a custom command (validated before it is queued: LocURIs, formats, well-formed XML data).
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/commands",
    tag = "devices",
    params(("id" = String, Path, description = "Enrollment id or DeviceID of an active enrollment")),
    request_body = CommandRequest,
    responses(
        (status = 202, description = "Queued; the device runs it at its next check-in", body = CommandView),
        (status = 404, description = "No active enrollment", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid command", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn queue_device_command(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CommandRequest>,
) -> Result<Response, ApiError> {
    let request = serde_json::to_value(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
    let q = state.core.commands.queue_admin_command(&who, &id, &request).await?;
    Ok(accepted(q, &state))
}

async fn run_action(state: &ApiState, who: &Principal, id: &str, action: Action) -> Result<Response, ApiError> {
    let q = state.core.commands.queue_action(who, id, action).await?;
    Ok(accepted(q, state))
}

/// The wipe variants of the RemoteWipe CSP (plus AutomaticRedeployment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = WipeKind)]
pub enum WipeKindName {
    /// `doWipe`: reset; user data and provisioning removed.
    Wipe,
    /// `doWipeProtected`: like doWipe but keeps the device from booting until reset completes, so a
    /// user cannot interrupt it by power-cycling.
    Protected,
    /// `doWipePersistUserData`: reset keeping user accounts and data.
    PersistUserData,
    /// `doWipePersistProvisionedData`: reset keeping provisioning data (re-applied after reset).
    PersistProvisionedData,
    /// AutomaticRedeployment CSP `doAutomaticRedeployment` (Autopilot Reset).
    AutomaticRedeployment,
}

impl From<WipeKindName> for WipeKind {
    fn from(k: WipeKindName) -> Self {
        match k {
            WipeKindName::Wipe => WipeKind::Wipe,
            WipeKindName::Protected => WipeKind::Protected,
            WipeKindName::PersistUserData => WipeKind::PersistUserData,
            WipeKindName::PersistProvisionedData => WipeKind::PersistProvisionedData,
            WipeKindName::AutomaticRedeployment => WipeKind::AutomaticRedeployment,
        }
    }
}

/// Wipe confirmation: wiping erases the device, so the request must say so explicitly.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WipeRequest {
    /// Which RemoteWipe variant (default protected).
    #[serde(default)]
    pub kind: Option<WipeKindName>,
    /// Must be `true`.
    #[serde(default)]
    pub confirm: bool,
}

/// Queue a remote wipe. The device's certificate is revoked once it acknowledges.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/actions/wipe",
    operation_id = "wipe_device",
    tag = "devices",
    params(("id" = String, Path, description = "Enrollment id or DeviceID of an active enrollment")),
    request_body = WipeRequest,
    responses(
        (status = 202, description = "Wipe queued (ahead of other commands)", body = CommandView),
        (status = 404, description = "No active enrollment", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing `\"confirm\": true` or unknown kind", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn wipe(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WipeRequest>,
) -> Result<Response, ApiError> {
    if !body.confirm {
        return Err(ApiError::Unprocessable(
            "wiping erases the device: send \"confirm\": true".into(),
        ));
    }
    let kind = body.kind.map_or(WipeKind::Protected, WipeKind::from);
    run_action(&state, &who, &id, Action::Wipe(kind)).await
}
/// Queue a reboot.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/actions/reboot",
    operation_id = "reboot_device",
    tag = "devices",
    params(("id" = String, Path, description = "Enrollment id or DeviceID of an active enrollment")),
    responses(
        (status = 202, description = "Queued", body = CommandView),
        (status = 404, description = "No active enrollment", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reboot(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    run_action(&state, &who, &id, Action::Reboot).await
}

/// Queue a remote lock (RemoteLock CSP; desktop editions may refuse it, the status is recorded).
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/actions/lock",
    operation_id = "lock_device",
    tag = "devices",
    params(("id" = String, Path, description = "Enrollment id or DeviceID of an active enrollment")),
    responses(
        (status = 202, description = "Queued", body = CommandView),
        (status = 404, description = "No active enrollment", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn lock(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    run_action(&state, &who, &id, Action::Lock).await
}

/// Queue an inventory refresh for the device's next check-in.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/actions/sync",
    operation_id = "sync_device",
    tag = "devices",
    params(("id" = String, Path, description = "Enrollment id or DeviceID of an active enrollment")),
    responses(
        (status = 202, description = "Queued", body = CommandView),
        (status = 404, description = "No active enrollment", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn sync(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    run_action(&state, &who, &id, Action::Sync).await
}

/// End the device's enrollment: its certificate is revoked, its open commands are cancelled and
/// its next check-in is refused. Nothing is sent to the device. This also releases the DeviceID: a
/// reinstalled device whose new enrollment has no link to the old one (another user or token) may
/// then enroll again.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/actions/unenroll",
    operation_id = "unenroll_device",
    tag = "devices",
    params(("id" = String, Path, description = "Enrollment id or DeviceID of an active enrollment")),
    responses(
        (status = 200, description = "The enrollment, ended", body = DeviceSummary),
        (status = 404, description = "No active enrollment", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn unenroll(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ended = state
        .core
        .devices
        .unenroll(&who, &id, reasons::ADMIN_UNENROLLED)
        .await?;
    let now = state.core.devices.find(&who, &ended.id.to_string()).await?;
    let note = AuditNote {
        target: Some(ended.device_id.to_string()),
        details: Some(format!("enrollment {}", ended.id)),
    };
    Ok((Extension(note), axum::Json(DeviceSummary::from(&now))).into_response())
}

/// Cancel a command the device has not answered yet.
#[utoipa::path(
    post,
    path = "/api/v1/commands/{id}/cancel",
    tag = "commands",
    params(("id" = String, Path, description = "Command id")),
    responses(
        (status = 200, description = "Cancelled", body = CommandView),
        (status = 404, description = "No such command (or outside the token's group)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already answered, cancelled or expired", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_command(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let q = state.core.commands.cancel(&who, &id).await?;
    let note = AuditNote {
        target: Some(q.command.id.to_string()),
        details: Some(format!("device {}", q.enrollment.device_id)),
    };
    let view = CommandView::of(&q.command, state.core.commands.describe(&q.enrollment, &q.command));
    Ok((Extension(note), axum::Json(view)).into_response())
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceGroupRequest {
    /// The group's name; null takes the device out of every group.
    pub group: Option<String>,
}

/// Move a device into a group (or out of every group). Applies to its active enrollment and to
/// whatever the group is used for from now on (scoped tokens, bulk actions).
#[utoipa::path(
    put,
    path = "/api/v1/devices/{id}/group",
    tag = "devices",
    params(("id" = String, Path, description = "Enrollment id or DeviceID")),
    request_body = DeviceGroupRequest,
    responses(
        (status = 200, description = "The device, moved", body = DeviceSummary),
        (status = 404, description = "No such active device", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No such group", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_device_group(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DeviceGroupRequest>,
) -> Result<Response, ApiError> {
    let (e, group) = state.core.devices.set_group(&who, &id, body.group.as_deref()).await?;
    let note = AuditNote {
        target: Some(e.device_id.to_string()),
        details: Some(format!(
            "group: {}",
            group.as_ref().map_or("(none)", |g| g.name.as_str())
        )),
    };
    Ok((Extension(note), axum::Json(DeviceSummary::from(&e))).into_response())
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceTagsRequest {
    /// The device's tags from now on (the whole set: an empty list removes every tag). Each is
    /// trimmed and lower-cased, then 1-64 characters of a-z, 0-9, '-', '_', '.' or ':' starting
    /// with a letter or digit; at most 32; duplicates merge.
    pub tags: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceTagsResponse {
    pub device_id: String,
    pub enrollment_id: uuid::Uuid,
    /// The device's tags as stored: normalised and sorted.
    pub tags: Vec<String>,
}

/// Replace a device's tags. Dynamic groups whose rule reads `tags` (`{"fact": "tags", "op": "==",
/// "value": "kiosk"}`) pick the change up at the device's next check-in, as after a fact change,
/// and what their profiles set follows (delivered, or removed by its removal rule).
#[utoipa::path(
    put,
    path = "/api/v1/devices/{id}/tags",
    tag = "devices",
    params(("id" = String, Path, description = "Enrollment id or DeviceID")),
    request_body = DeviceTagsRequest,
    responses(
        (status = 200, description = "The device's tags as stored", body = DeviceTagsResponse),
        (status = 404, description = "No such active device", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A tag is not valid (the message names it), or more than 32", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_device_tags(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DeviceTagsRequest>,
) -> Result<Response, ApiError> {
    let (e, before, after) = state.core.devices.set_tags(&who, &id, &body.tags).await?;
    let list = |t: &steward_core::DeviceTags| {
        if t.is_empty() {
            "(none)".to_owned()
        } else {
            t.as_slice().join(", ")
        }
    };
    let note = AuditNote {
        target: Some(e.device_id.to_string()),
        details: Some(format!("tags: {} -> {}", list(&before), list(&after))),
    };
    let out = DeviceTagsResponse {
        device_id: e.device_id.to_string(),
        enrollment_id: e.id.0,
        tags: after.into_vec(),
    };
    Ok((Extension(note), axum::Json(out)).into_response())
}
