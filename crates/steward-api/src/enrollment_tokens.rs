//! Enrollment tokens: the credentials devices enroll with.

use axum::extract::{Path, State};
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
use steward_core::service::directory::EnrollmentTokenRequest;

/// An enrollment token (never its value).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentTokenView {
    pub id: uuid::Uuid,
    pub description: Option<String>,
    /// Absent: unlimited until expiry.
    pub max_uses: Option<u32>,
    pub uses: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Group enrolled devices join.
    pub group: Option<String>,
    pub revoked: bool,
    /// usable, revoked, expired or exhausted.
    pub state: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

pub fn enrollment_token_view(
    t: &EnrollmentToken,
    groups: &HashMap<GroupId, String>,
    now: OffsetDateTime,
) -> EnrollmentTokenView {
    let state = match t.usable_at(now) {
        Ok(()) => "usable",
        Err(TokenUnusable::Revoked) => "revoked",
        Err(TokenUnusable::Expired) => "expired",
        Err(TokenUnusable::Exhausted) => "exhausted",
    };
    EnrollmentTokenView {
        id: t.id.0,
        description: t.description.clone(),
        max_uses: t.max_uses,
        uses: t.uses,
        expires_at: t.expires_at,
        group: t.group_id.and_then(|g| groups.get(&g).cloned()),
        revoked: t.revoked,
        state: state.into(),
        created_at: t.created_at,
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentTokenPage {
    pub items: Vec<EnrollmentTokenView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentTokenRequest {
    pub description: Option<String>,
    /// How many devices may enroll with it (default unlimited until expiry).
    pub max_uses: Option<u32>,
    /// Lifetime in hours, 1-8760 (default 168 = 7 days).
    pub expires_in_hours: Option<u32>,
    /// Group for the devices it enrolls (created if missing).
    pub group: Option<String>,
}

/// The new token: `token` is shown only in this response; Steward keeps its SHA-256.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    pub token: String,
    #[serde(flatten)]
    pub info: EnrollmentTokenView,
}

/// List enrollment tokens (never their values).
#[utoipa::path(
    get,
    path = "/api/v1/enrollment-tokens",
    tag = "enrollment",
    params(PageQuery),
    responses((status = 200, description = "A page of enrollment tokens", body = EnrollmentTokenPage))
)]
pub async fn list_enrollment_tokens(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<EnrollmentTokenPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let groups = state.core.directory.group_names().await?;
    let tokens = state.core.directory.enrollment_tokens().await?;
    let (page, next_cursor) = page_in_memory(tokens, |t| t.id.to_string(), q.cursor.as_deref(), limit)?;
    let now = state.core.now();
    Ok(axum::Json(EnrollmentTokenPage {
        items: page.iter().map(|t| enrollment_token_view(t, &groups, now)).collect(),
        next_cursor,
    }))
}

/// Create an enrollment token. The value is in this response only.
#[utoipa::path(
    post,
    path = "/api/v1/enrollment-tokens",
    tag = "enrollment",
    request_body = NewEnrollmentTokenRequest,
    responses(
        (status = 201, description = "Created; store the token now", body = CreatedEnrollmentToken),
        (status = 422, description = "Invalid request", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_enrollment_token(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<NewEnrollmentTokenRequest>,
) -> Result<Response, ApiError> {
    let (t, secret) = state
        .core
        .directory
        .create_enrollment_token(EnrollmentTokenRequest {
            description: body.description,
            max_uses: body.max_uses,
            expires_in_hours: body.expires_in_hours,
            group: body.group,
        })
        .await?;
    let groups = state.core.directory.group_names().await?;
    Ok(created(
        t.id.to_string(),
        CreatedEnrollmentToken {
            token: secret.expose().to_owned(),
            info: enrollment_token_view(&t, &groups, state.core.now()),
        },
    ))
}

/// Revoke an enrollment token: no further device can enroll with it.
#[utoipa::path(
    delete,
    path = "/api/v1/enrollment-tokens/{id}",
    tag = "enrollment",
    params(("id" = String, Path, description = "Enrollment token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token, or already revoked", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_enrollment_token(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = state.core.directory.revoke_enrollment_token(&id).await?;
    Ok(no_content(id.to_string()))
}
