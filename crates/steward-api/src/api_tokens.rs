//! API tokens: named tokens with roles, and the bootstrap admin tokens (the configured
//! `admin_token` or the one generated at the first start), listed and revoked through the same
//! routes with `kind` telling them apart.

use axum::extract::{Extension, Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use steward_core::*;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::ApiState;
use crate::devices::PageQuery;
use crate::error::{ApiError, ApiJson, ApiQuery, Problem};
use crate::{check_limit, created, no_content, page_in_memory};
use std::collections::HashMap;
use steward_core::service::directory::ApiTokenRequest;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Admin,
    Operator,
    Helpdesk,
    Auditor,
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Self {
        match r {
            RoleName::Admin => Role::Admin,
            RoleName::Operator => Role::Operator,
            RoleName::Helpdesk => Role::Helpdesk,
            RoleName::Auditor => Role::Auditor,
        }
    }
}

impl From<Role> for RoleName {
    fn from(r: Role) -> Self {
        match r {
            Role::Admin => RoleName::Admin,
            Role::Operator => RoleName::Operator,
            Role::Helpdesk => RoleName::Helpdesk,
            Role::Auditor => RoleName::Auditor,
        }
    }
}

/// Which kind of token a listing entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApiTokenKind {
    /// Created through `POST /api/v1/api-tokens`.
    #[default]
    Named,
    /// The configured `admin_token` or the token generated at the first start: an unscoped admin
    /// without expiry. Configuring a new one revokes the earlier ones at the next start.
    Bootstrap,
}

/// An API token (never its value): a named one, or a bootstrap admin token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiTokenView {
    pub id: uuid::Uuid,
    /// `named` or `bootstrap`.
    #[serde(default)]
    pub kind: ApiTokenKind,
    pub name: String,
    pub role: RoleName,
    /// Group scope: the token sees only this group's devices.
    pub group: Option<String>,
    /// Whether it authenticates now (not revoked, not expired).
    pub active: bool,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Recorded at most once a minute.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Who the listing names as a bootstrap token's creator: the server itself, at start.
const BOOTSTRAP_CREATED_BY: &str = "steward serve";

pub fn api_token_view(t: &ApiToken, groups: &HashMap<GroupId, String>, now: OffsetDateTime) -> ApiTokenView {
    ApiTokenView {
        id: t.id.0,
        kind: ApiTokenKind::Named,
        name: t.name.clone(),
        role: t.role.into(),
        group: t.group_id.and_then(|g| groups.get(&g).cloned()),
        active: t.usable_at(now),
        created_by: t.created_by.clone(),
        created_at: t.created_at,
        expires_at: t.expires_at,
        last_used_at: t.last_used_at,
        revoked_at: t.revoked_at,
    }
}

pub fn bootstrap_token_view(t: &BootstrapToken) -> ApiTokenView {
    ApiTokenView {
        id: t.id.0,
        kind: ApiTokenKind::Bootstrap,
        name: t.name.clone(),
        role: RoleName::Admin,
        group: None,
        active: t.usable(),
        created_by: BOOTSTRAP_CREATED_BY.into(),
        created_at: t.created_at,
        expires_at: None,
        last_used_at: t.last_used_at,
        revoked_at: t.revoked_at,
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiTokenPage {
    pub items: Vec<ApiTokenView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiTokenRequest {
    /// What it is for, e.g. `ci-inventory-export` (1-64 characters).
    pub name: String,
    pub role: RoleName,
    /// Limit it to the devices of this existing group.
    pub group: Option<String>,
    /// Lifetime in days, 1-3650 (default: no expiry).
    pub expires_in_days: Option<u32>,
}

/// The new token: `token` is shown only in this response; Steward keeps its SHA-256.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiToken {
    pub token: String,
    #[serde(flatten)]
    pub info: ApiTokenView,
}

/// List API tokens, named and bootstrap (never their values).
///
/// Oldest first, revoked ones included; `kind` tells the bootstrap tokens (the configured
/// `admin_token`, the one generated at the first start) from the named ones.
#[utoipa::path(
    get,
    path = "/api/v1/api-tokens",
    tag = "access",
    params(PageQuery),
    responses((status = 200, description = "A page of API tokens", body = ApiTokenPage))
)]
pub async fn list_api_tokens(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<ApiTokenPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let groups = state.core.directory.group_names().await?;
    let now = state.core.now();
    let mut views: Vec<ApiTokenView> = state
        .core
        .directory
        .bootstrap_tokens()
        .await?
        .iter()
        .map(bootstrap_token_view)
        .collect();
    views.extend(
        state
            .core
            .directory
            .api_tokens()
            .await?
            .iter()
            .map(|t| api_token_view(t, &groups, now)),
    );
    // One order for both kinds, stable across pages (the cursor is the last item's id).
    views.sort_by_key(|t| (t.created_at, t.id));
    let (items, next_cursor) = page_in_memory(views, |t| t.id.to_string(), q.cursor.as_deref(), limit)?;
    Ok(axum::Json(ApiTokenPage { items, next_cursor }))
}

/// Create a named API token with a role. The value (`stw_adm_…`) is in this response only.
#[utoipa::path(
    post,
    path = "/api/v1/api-tokens",
    tag = "access",
    request_body = NewApiTokenRequest,
    responses(
        (status = 201, description = "Created; store the token now", body = CreatedApiToken),
        (status = 422, description = "Invalid name, role, group or lifetime", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_api_token(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<NewApiTokenRequest>,
) -> Result<Response, ApiError> {
    let (t, secret) = state
        .core
        .directory
        .create_api_token(
            &who,
            ApiTokenRequest {
                name: body.name,
                role: body.role.into(),
                group: body.group,
                expires_in_days: body.expires_in_days,
            },
        )
        .await?;
    let groups = state.core.directory.group_names().await?;
    Ok(created(
        t.id.to_string(),
        CreatedApiToken {
            token: secret.expose().to_owned(),
            info: api_token_view(&t, &groups, state.core.now()),
        },
    ))
}

/// Revoke an API token, named or bootstrap: it stops authenticating at once.
#[utoipa::path(
    delete,
    path = "/api/v1/api-tokens/{id}",
    tag = "access",
    params(("id" = String, Path, description = "API token id (named or bootstrap)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token, or already revoked", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_api_token(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = state.core.directory.revoke_api_token(&id).await?;
    Ok(no_content(id.to_string()))
}
