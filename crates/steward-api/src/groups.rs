//! Device groups.

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use steward_core::*;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::AuditNote;
use crate::devices::PageQuery;
use crate::error::{ApiError, ApiJson, ApiQuery, Problem};
use crate::{check_limit, created, page_in_memory};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    pub id: uuid::Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Devices with an active enrollment in the group.
    pub active_devices: u64,
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
        items: page
            .into_iter()
            .map(|(g, n)| GroupView {
                id: g.id.0,
                active_devices: n,
                name: g.name,
                created_at: g.created_at,
            })
            .collect(),
        next_cursor,
    }))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroupRequest {
    /// 1-64 characters: letters, digits, space, `-`, `_`, `.`.
    pub name: String,
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
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_group(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<NewGroupRequest>,
) -> Result<Response, ApiError> {
    let group = state.core.directory.create_group(&body.name).await?;
    Ok(created(
        group.name.clone(),
        GroupView {
            id: group.id.0,
            name: group.name,
            created_at: group.created_at,
            active_devices: 0,
        },
    ))
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
