//! Device groups: static ones (devices are moved into them) and dynamic ones (a rule over device
//! facts decides their members; `steward_core::group_rule`).

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use steward_core::*;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::AuditNote;
use crate::devices::{DevicePage, DeviceSummary, PageQuery};
use crate::error::{ApiError, ApiJson, ApiQuery, Problem};
use crate::{check_limit, created, page_in_memory};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    pub id: uuid::Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Devices with an active enrollment in the group (a dynamic group: those its rule matches).
    pub active_devices: u64,
    /// A dynamic group's rule (absent for a static group): `{"all": [{"fact", "op", "value"}, …]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub rule: Option<serde_json::Value>,
}

impl GroupView {
    fn of(g: Group, active_devices: u64) -> Self {
        Self {
            id: g.id.0,
            active_devices,
            rule: g.rule.as_ref().map(GroupRule::to_value),
            name: g.name,
            created_at: g.created_at,
        }
    }
}

/// A rule from a request body, validated by core (422 with what is wrong).
fn rule_of(value: serde_json::Value) -> Result<GroupRule, ApiError> {
    GroupRule::from_value(value).map_err(|e| ApiError::Unprocessable(e.to_string()))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupPage {
    pub items: Vec<GroupView>,
    pub next_cursor: Option<String>,
}

/// List device groups (a group-scoped token sees only its own).
#[utoipa::path(
    get,
    path = "/api/v1/groups",
    tag = "access",
    params(PageQuery),
    responses((status = 200, description = "A page of groups", body = GroupPage))
)]
pub async fn list_groups(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<GroupPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let groups = state.core.directory.groups(&who).await?;
    let (page, next_cursor) = page_in_memory(groups, |(g, _)| g.id.to_string(), q.cursor.as_deref(), limit)?;
    Ok(axum::Json(GroupPage {
        items: page.into_iter().map(|(g, n)| GroupView::of(g, n)).collect(),
        next_cursor,
    }))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroupRequest {
    /// 1-64 characters: letters, digits, space, `-`, `_`, `.`.
    pub name: String,
    /// Makes the group dynamic: its members are the devices this rule matches, e.g.
    /// `{"all": [{"fact": "os.version", "op": ">=", "value": "10.0.22000"}]}` (docs/GROUPS.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub rule: Option<serde_json::Value>,
}

/// Create a device group.
#[utoipa::path(
    post,
    path = "/api/v1/groups",
    tag = "access",
    request_body = NewGroupRequest,
    responses(
        (status = 201, description = "Created", body = GroupView),
        (status = 409, description = "A group with this name exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or rule", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_group(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<NewGroupRequest>,
) -> Result<Response, ApiError> {
    let rule = body.rule.map(rule_of).transpose()?;
    let group = state.core.directory.create_group_with_rule(&body.name, rule).await?;
    // A new dynamic group's members are counted when the groups are listed.
    Ok(created(group.name.clone(), GroupView::of(group, 0)))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRuleRequest {
    /// The new rule (docs/GROUPS.md).
    #[schema(value_type = Object)]
    pub rule: serde_json::Value,
}

/// Replace a dynamic group's rule (every device evaluates it again at its next check-in).
#[utoipa::path(
    put,
    path = "/api/v1/groups/{id}/rule",
    tag = "access",
    params(("id" = String, Path, description = "Group id")),
    request_body = GroupRuleRequest,
    responses(
        (status = 204, description = "Replaced"),
        (status = 404, description = "No such group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The group is static", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid rule", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_group_rule(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GroupRuleRequest>,
) -> Result<Response, ApiError> {
    let rule = rule_of(body.rule)?;
    let id = state.core.directory.set_group_rule(&id, rule).await?;
    let note = AuditNote {
        target: Some(id.to_string()),
        details: None,
    };
    Ok((StatusCode::NO_CONTENT, Extension(note)).into_response())
}

/// List a group's members: the active devices in it, or for a dynamic group those its rule
/// matches now (evaluated over every active device's facts and paged in memory).
#[utoipa::path(
    get,
    path = "/api/v1/groups/{id}/members",
    tag = "access",
    params(("id" = String, Path, description = "Group id"), PageQuery),
    responses(
        (status = 200, description = "A page of the group's devices", body = DevicePage),
        (status = 404, description = "No such group", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn group_members(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<DevicePage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let (_, members) = state.core.directory.group_members(&who, &id).await?;
    let (page, next_cursor) = page_in_memory(members, |e| e.id.to_string(), q.cursor.as_deref(), limit)?;
    Ok(axum::Json(DevicePage {
        items: page.iter().map(DeviceSummary::from).collect(),
        next_cursor,
    }))
}

/// Delete an empty group (no active device, enrollment token or API token in it).
#[utoipa::path(
    delete,
    path = "/api/v1/groups/{id}",
    tag = "access",
    params(("id" = String, Path, description = "Group id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The group still has devices or tokens", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_group(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = state.core.directory.delete_group(&id).await?;
    let note = AuditNote {
        target: Some(id.to_string()),
        details: None,
    };
    Ok((StatusCode::NO_CONTENT, Extension(note)).into_response())
}
