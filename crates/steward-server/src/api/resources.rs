//! Enrollment tokens, API tokens, users, groups, the audit log and the server overview.

use std::collections::HashMap;

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use steward_core::*;
use time::{Duration, OffsetDateTime};
use utoipa::{IntoParams, ToSchema};

use super::auth::{AuditNote, Principal};
use super::devices::PageQuery;
use super::error::{ApiError, ApiJson, ApiQuery, Problem};
use super::{check_limit, decode_cursor, encode_cursor, page_in_memory};
use crate::AppState;
use crate::config::AuthPolicy;

async fn group_names(state: &AppState) -> Result<HashMap<GroupId, String>, ApiError> {
    Ok(state
        .store
        .list_groups()
        .await?
        .into_iter()
        .map(|g| (g.id, g.name))
        .collect())
}

fn created<T: Serialize>(target: String, body: T) -> Response {
    let note = AuditNote {
        target: Some(target),
        details: None,
    };
    (StatusCode::CREATED, Extension(note), axum::Json(body)).into_response()
}

fn revoked(target: String) -> Response {
    let note = AuditNote {
        target: Some(target),
        details: None,
    };
    (StatusCode::NO_CONTENT, Extension(note)).into_response()
}

fn random_token(kind: TokenKind) -> Result<SecretString, ApiError> {
    kind.generate()
        .map_err(|_| ApiError::Internal("system random generator failed".into()))
}

// ---------------------------------------------------------------- enrollment tokens

/// An enrollment token (never its value).
#[derive(Debug, Serialize, ToSchema)]
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

fn enrollment_token_view(t: &EnrollmentToken, groups: &HashMap<GroupId, String>) -> EnrollmentTokenView {
    let state = match t.usable_at(OffsetDateTime::now_utc()) {
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

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentTokenPage {
    pub items: Vec<EnrollmentTokenView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
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
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<EnrollmentTokenPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let groups = group_names(&state).await?;
    let tokens = state.store.list_enrollment_tokens().await?;
    let (page, next_cursor) = page_in_memory(tokens, |t| t.id.to_string(), q.cursor.as_deref(), limit)?;
    Ok(axum::Json(EnrollmentTokenPage {
        items: page.iter().map(|t| enrollment_token_view(t, &groups)).collect(),
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
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewEnrollmentTokenRequest>,
) -> Result<Response, ApiError> {
    if body.max_uses == Some(0) {
        return Err(ApiError::Unprocessable("max_uses must be at least 1".into()));
    }
    let hours = body.expires_in_hours.unwrap_or(168);
    if !(1..=8760).contains(&hours) {
        return Err(ApiError::Unprocessable(
            "expires_in_hours must be between 1 and 8760".into(),
        ));
    }
    let group = body.group.map(|g| g.trim().to_owned()).filter(|g| !g.is_empty());
    if group.as_ref().is_some_and(|g| g.len() > 128) {
        return Err(ApiError::Unprocessable("group names are at most 128 characters".into()));
    }
    let secret = random_token(TokenKind::Enrollment)?;
    let now = OffsetDateTime::now_utc();
    let t = state
        .store
        .create_enrollment_token(&NewEnrollmentToken {
            id: EnrollmentTokenId::new(),
            token_hash: TokenHash::of(secret.expose()),
            description: body.description,
            max_uses: body.max_uses,
            expires_at: Some(now + Duration::hours(i64::from(hours))),
            group,
            created_at: now,
        })
        .await?;
    let groups = group_names(&state).await?;
    Ok(created(
        t.id.to_string(),
        CreatedEnrollmentToken {
            token: secret.expose().to_owned(),
            info: enrollment_token_view(&t, &groups),
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
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: EnrollmentTokenId = id.parse().map_err(|_| ApiError::NotFound("enrollment token"))?;
    if !state.store.revoke_enrollment_token(id).await? {
        return Err(ApiError::NotFound("enrollment token"));
    }
    Ok(revoked(id.to_string()))
}

// ---------------------------------------------------------------- API tokens

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

/// A named API token (never its value).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiTokenView {
    pub id: uuid::Uuid,
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

fn api_token_view(t: &ApiToken, groups: &HashMap<GroupId, String>) -> ApiTokenView {
    ApiTokenView {
        id: t.id.0,
        name: t.name.clone(),
        role: t.role.into(),
        group: t.group_id.and_then(|g| groups.get(&g).cloned()),
        active: t.usable_at(OffsetDateTime::now_utc()),
        created_by: t.created_by.clone(),
        created_at: t.created_at,
        expires_at: t.expires_at,
        last_used_at: t.last_used_at,
        revoked_at: t.revoked_at,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiTokenPage {
    pub items: Vec<ApiTokenView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiToken {
    pub token: String,
    #[serde(flatten)]
    pub info: ApiTokenView,
}

/// List API tokens (never their values).
#[utoipa::path(
    get,
    path = "/api/v1/api-tokens",
    tag = "access",
    params(PageQuery),
    responses((status = 200, description = "A page of API tokens", body = ApiTokenPage))
)]
pub async fn list_api_tokens(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<ApiTokenPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let groups = group_names(&state).await?;
    let tokens = state.store.list_api_tokens().await?;
    let (page, next_cursor) = page_in_memory(tokens, |t| t.id.to_string(), q.cursor.as_deref(), limit)?;
    Ok(axum::Json(ApiTokenPage {
        items: page.iter().map(|t| api_token_view(t, &groups)).collect(),
        next_cursor,
    }))
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
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<NewApiTokenRequest>,
) -> Result<Response, ApiError> {
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable("name must be 1-64 printable characters".into()));
    }
    if body.expires_in_days.is_some_and(|d| !(1..=3650).contains(&d)) {
        return Err(ApiError::Unprocessable(
            "expires_in_days must be between 1 and 3650".into(),
        ));
    }
    let group_id = match body.group.as_deref() {
        None => None,
        Some(g) => Some(super::named_group(&state, g.trim()).await?.id),
    };
    let secret = random_token(TokenKind::Admin)?;
    let now = OffsetDateTime::now_utc();
    let t = state
        .store
        .create_api_token(&NewApiToken {
            id: ApiTokenId::new(),
            name,
            token_hash: TokenHash::of(secret.expose()),
            role: body.role.into(),
            group_id,
            created_at: now,
            expires_at: body.expires_in_days.map(|d| now + Duration::days(i64::from(d))),
            created_by: who.name.clone(),
        })
        .await?;
    let groups = group_names(&state).await?;
    Ok(created(
        t.id.to_string(),
        CreatedApiToken {
            token: secret.expose().to_owned(),
            info: api_token_view(&t, &groups),
        },
    ))
}

/// Revoke an API token: it stops authenticating at once.
#[utoipa::path(
    delete,
    path = "/api/v1/api-tokens/{id}",
    tag = "access",
    params(("id" = String, Path, description = "API token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token, or already revoked", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_api_token(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: ApiTokenId = id.parse().map_err(|_| ApiError::NotFound("API token"))?;
    if !state.store.revoke_api_token(id, OffsetDateTime::now_utc()).await? {
        return Err(ApiError::NotFound("API token"));
    }
    Ok(revoked(id.to_string()))
}

// ---------------------------------------------------------------- users and groups

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: uuid::Uuid,
    pub email: String,
    pub display_name: Option<String>,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The console role; absent for users who exist only for device enrollment.
    pub console_role: Option<RoleName>,
    /// The group a console user is limited to.
    pub console_group_id: Option<uuid::Uuid>,
    /// Whether the console user has a confirmed TOTP second factor.
    pub second_factor: bool,
}

impl UserView {
    fn of(u: &User, console: Option<&ConsoleUser>) -> Self {
        Self {
            console_role: console.map(|c| c.role.into()),
            console_group_id: console.and_then(|c| c.group).map(|g| g.0),
            second_factor: console.and_then(|c| c.totp.as_ref()).is_some_and(UserTotp::confirmed),
            ..Self::from(u)
        }
    }
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.0,
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            disabled: u.disabled,
            created_at: u.created_at,
            console_role: None,
            console_group_id: None,
            second_factor: false,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserView>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    pub email: String,
    pub display_name: Option<String>,
    /// At least 8 characters; stored as Argon2id.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// Lets the user sign in to the web console with this role (absent: enrollment only).
    pub console_role: Option<RoleName>,
    /// With a console role: limit the user to this group's devices (the group's name), like a
    /// group-scoped API token.
    pub console_group: Option<String>,
}

/// List users of Steward's user store.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "access",
    params(PageQuery),
    responses((status = 200, description = "A page of users", body = UserPage))
)]
pub async fn list_users(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<UserPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let users = state.store.list_users().await?;
    let console = state.store.list_console_users().await?;
    let (page, next_cursor) = page_in_memory(users, |u| u.id.to_string(), q.cursor.as_deref(), limit)?;
    Ok(axum::Json(UserPage {
        items: page
            .iter()
            .map(|u| UserView::of(u, console.iter().find(|c| c.user.id == u.id)))
            .collect(),
        next_cursor,
    }))
}

/// Add a user (e-mail + password enrollment, federated sign-in).
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "access",
    request_body = NewUserRequest,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 409, description = "A user with this e-mail exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid e-mail or password too short", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_user(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewUserRequest>,
) -> Result<Response, ApiError> {
    let (email, display_name, password) = (body.email, body.display_name, body.password);
    // Argon2 is slow on purpose: keep it off the async workers.
    let user = tokio::task::spawn_blocking(move || {
        User::create(&email, display_name, password.expose(), OffsetDateTime::now_utc())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("password hashing task: {e}")))?
    .map_err(|e| match e {
        NewUserError::Hash(_) => ApiError::Internal(e.to_string()),
        invalid => ApiError::Unprocessable(invalid.to_string()),
    })?;
    let group = match (&body.console_role, body.console_group.as_deref()) {
        (_, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::Unprocessable("console_group needs a console_role".into()));
        }
        (Some(_), Some(name)) => Some(super::named_group(&state, name).await?.id),
    };
    let stored = match body.console_role {
        Some(role) => state.store.create_console_user(&user, role.into(), group).await,
        None => state.store.create_user(&user).await,
    };
    stored.map_err(|e| match e {
        StoreError::Conflict(_) => ApiError::Conflict(format!("a user {} exists", user.email)),
        other => other.into(),
    })?;
    let view = UserView {
        console_role: body.console_role,
        console_group_id: group.map(|g| g.0),
        ..UserView::from(&user)
    };
    Ok(created(user.email.clone(), view))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    pub id: uuid::Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Devices with an active enrollment in the group.
    pub active_devices: u64,
}

#[derive(Debug, Serialize, ToSchema)]
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
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<GroupPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let groups: Vec<Group> = state
        .store
        .list_groups()
        .await?
        .into_iter()
        .filter(|g| who.group.is_none_or(|s| s == g.id))
        .collect();
    let (page, next_cursor) = page_in_memory(groups, |g| g.id.to_string(), q.cursor.as_deref(), limit)?;
    let counts: std::collections::HashMap<GroupId, u64> =
        state.store.group_device_counts().await?.into_iter().collect();
    Ok(axum::Json(GroupPage {
        items: page
            .into_iter()
            .map(|g| GroupView {
                id: g.id.0,
                active_devices: counts.get(&g.id).copied().unwrap_or(0),
                name: g.name,
                created_at: g.created_at,
            })
            .collect(),
        next_cursor,
    }))
}

#[derive(Deserialize, ToSchema)]
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
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewGroupRequest>,
) -> Result<Response, ApiError> {
    let group =
        Group::named(&body.name, OffsetDateTime::now_utc()).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    state.store.create_group(&group).await.map_err(|e| match e {
        StoreError::Conflict(_) => ApiError::Conflict(format!("a group {} exists", group.name)),
        other => other.into(),
    })?;
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
pub async fn delete_group(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: GroupId = id.parse().map_err(|_| ApiError::NotFound("group"))?;
    match state.store.delete_group(id).await {
        Ok(true) => {}
        Ok(false) => return Err(ApiError::NotFound("group")),
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::Conflict(
                "the group still has active devices, enrollment tokens or API tokens: move or revoke them first".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let note = AuditNote {
        target: Some(id.to_string()),
        details: None,
    };
    Ok((StatusCode::NO_CONTENT, Extension(note)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// true: the user can neither sign in to the console nor enroll devices; their console sessions end.
    pub disabled: Option<bool>,
    /// admin, operator, helpdesk or auditor; `none` removes console access.
    pub console_role: Option<String>,
    /// Limit the console user to this group (its name); `""` for the whole fleet. Without
    /// console_role the user's current role is kept.
    pub console_group: Option<String>,
}

/// Disable or re-enable a user, change or remove their console role and group. Any change ends the
/// user's console sessions, so it applies at once.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{id}",
    tag = "access",
    params(("id" = String, Path, description = "User id")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "The user as changed", body = UserView),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown role or group, or a group without a console role", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> Result<Response, ApiError> {
    let id: UserId = id.parse().map_err(|_| ApiError::NotFound("user"))?;
    let Some(user) = state.store.user_by_id(id).await? else {
        return Err(ApiError::NotFound("user"));
    };
    let current = state.store.console_user(id).await?;
    // Validate everything before changing anything.
    let role = match body.console_role.as_deref() {
        None => current.as_ref().map(|c| c.role),
        Some("none") => None,
        Some(r) => Some(Role::parse(r).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "unknown console role {r:?} (admin, operator, helpdesk, auditor or none)"
            ))
        })?),
    };
    let group = match body.console_group.as_deref() {
        None if body.console_role.is_some() && role.is_none() => None,
        None => current.as_ref().and_then(|c| c.group),
        Some("") => None,
        Some(name) => Some(super::named_group(&state, name).await?.id),
    };
    if group.is_some() && role.is_none() {
        return Err(ApiError::Unprocessable("console_group needs a console role".into()));
    }
    let mut changes = Vec::new();
    if body.console_role.is_some() || body.console_group.is_some() {
        state.store.set_console_access(id, role, group).await?;
        changes.push(format!(
            "console: {}{}",
            role.map_or("none".to_owned(), |r| r.to_string()),
            group.map(|g| format!(" in group {g}")).unwrap_or_default()
        ));
    }
    if let Some(d) = body.disabled {
        state.store.set_user_disabled(id, d).await?;
        changes.push(if d { "disabled" } else { "enabled" }.to_owned());
    }
    state.store.delete_console_sessions_of(id).await?;
    let updated = state.store.console_user(id).await?;
    let mut view = UserView::of(&user, updated.as_ref());
    view.disabled = body.disabled.unwrap_or(user.disabled);
    let note = AuditNote {
        target: Some(user.email.clone()),
        details: Some(changes.join(", ")),
    };
    Ok((Extension(note), axum::Json(view)).into_response())
}

/// Remove a console user's second factor (lost phone). Their console sessions end; at the next
/// sign-in they set up a new one (or sign in with the password alone where TOTP is optional).
#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}/totp",
    tag = "access",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 204, description = "Removed; the user's sessions ended"),
        (status = 404, description = "No such console user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reset_user_totp(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: UserId = id.parse().map_err(|_| ApiError::NotFound("user"))?;
    let Some(user) = state.store.console_user(id).await? else {
        return Err(ApiError::NotFound("user"));
    };
    state.store.set_user_totp(id, None).await?;
    state.store.delete_console_sessions_of(id).await?;
    let note = AuditNote {
        target: Some(user.user.email),
        details: None,
    };
    Ok((StatusCode::NO_CONTENT, Extension(note)).into_response())
}

// ---------------------------------------------------------------- audit log

/// One audit event with its place in the hash chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub actor_id: Option<String>,
    pub actor_role: Option<RoleName>,
    /// e.g. device.wipe, api_token.create.
    pub action: String,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    /// success or failure.
    pub outcome: String,
    pub status: Option<u16>,
    pub details: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            seq: e.seq,
            at: e.at,
            actor: e.actor,
            actor_id: e.actor_id,
            actor_role: e.actor_role.map(RoleName::from),
            action: e.action,
            target: e.target,
            source_ip: e.source_ip,
            outcome: e.outcome.as_str().into(),
            status: e.status,
            details: e.details,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventPage {
    pub items: Vec<AuditEventView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Exact actor (token name).
    pub actor: Option<String>,
    /// Exact action, e.g. device.wipe.
    pub action: Option<String>,
    /// Exact target, e.g. a DeviceID.
    pub target: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 100).
    pub limit: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct AuditCursor {
    before: i64,
}

/// The audit log, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit-events",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit events", body = AuditEventPage),
        (status = 400, description = "Bad cursor or limit", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_audit_events(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<axum::Json<AuditEventPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let after = match q.cursor.as_deref() {
        Some(c) => Some(decode_cursor::<AuditCursor>(c)?.before),
        None => None,
    };
    let filter = AuditFilter {
        actor: q.actor,
        action: q.action,
        target: q.target,
        newest_first: true,
    };
    let mut rows = state.store.audit_events(&filter, after, limit + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = match (more, rows.last()) {
        (true, Some(last)) => Some(encode_cursor(&AuditCursor { before: last.seq })),
        _ => None,
    };
    Ok(axum::Json(AuditEventPage {
        items: rows.into_iter().map(AuditEventView::from).collect(),
        next_cursor,
    }))
}

// ---------------------------------------------------------------- server

#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
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
pub async fn server_info(State(state): State<AppState>) -> Result<axum::Json<ServerInfo>, ApiError> {
    let c = state.store.admin_counts().await?;
    let cfg = &state.config;
    let url = cfg.public_url();
    Ok(axum::Json(ServerInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: "v1".into(),
        enrollment_url: format!("{url}{}", crate::windows::DISCOVERY_URL_PATH),
        public_url: url,
        auth_policy: match cfg.enrollment.auth_policy {
            AuthPolicy::OnPremise => "onpremise".into(),
            AuthPolicy::Federated => "federated".into(),
        },
        server_name: cfg.enrollment.server_name.clone(),
        poll_interval_minutes: cfg.enrollment.poll_interval_minutes,
        inventory_interval_hours: cfg.enrollment.inventory_interval_hours,
        md5_auth: cfg.management.md5_auth,
        console_require_totp: cfg.console.require_totp,
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
