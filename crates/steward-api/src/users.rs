//! Users of Steward's user store and their console access.

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use steward_core::*;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::ApiState;
use crate::api_tokens::RoleName;
use crate::auth::AuditNote;
use crate::devices::PageQuery;
use crate::error::{ApiError, ApiJson, ApiQuery, Problem};
use crate::{check_limit, created, page_in_memory};
use steward_core::service::directory::{UserChange, UserRequest};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    pub fn of(u: &User, console: Option<&ConsoleUser>) -> Self {
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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
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

/// Clients (the CLI) send the password, so this one request serialises its secret — explicitly,
/// here, rather than by making every `SecretString` serialisable.
impl Serialize for NewUserRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("NewUserRequest", 5)?;
        st.serialize_field("email", &self.email)?;
        st.serialize_field("display_name", &self.display_name)?;
        st.serialize_field("password", self.password.expose())?;
        st.serialize_field("console_role", &self.console_role)?;
        st.serialize_field("console_group", &self.console_group)?;
        st.end()
    }
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
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<UserPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let users = state.core.directory.users().await?;
    let (page, next_cursor) = page_in_memory(users, |u| u.user.id.to_string(), q.cursor.as_deref(), limit)?;
    Ok(axum::Json(UserPage {
        items: page.iter().map(|u| UserView::of(&u.user, u.console.as_ref())).collect(),
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
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<NewUserRequest>,
) -> Result<Response, ApiError> {
    let console_role = body.console_role;
    let (user, group) = state
        .core
        .directory
        .create_user(UserRequest {
            email: body.email,
            display_name: body.display_name,
            password: body.password,
            console_role: console_role.map(Role::from),
            console_group: body.console_group,
        })
        .await?;
    let view = UserView {
        console_role,
        console_group_id: group.map(|g| g.0),
        ..UserView::from(&user)
    };
    Ok(created(user.email.clone(), view))
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
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
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> Result<Response, ApiError> {
    if id.parse::<UserId>().is_err() {
        return Err(ApiError::NotFound("user"));
    }
    let (entry, changes) = state
        .core
        .directory
        .update_user(
            &id,
            UserChange {
                disabled: body.disabled,
                console_role: body.console_role,
                console_group: body.console_group,
            },
        )
        .await?;
    let view = UserView::of(&entry.user, entry.console.as_ref());
    let note = AuditNote {
        target: Some(entry.user.email.clone()),
        details: Some(changes),
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
pub async fn reset_user_totp(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if id.parse::<UserId>().is_err() {
        return Err(ApiError::NotFound("user"));
    }
    let user = state.core.directory.reset_totp(&id).await?;
    let note = AuditNote {
        target: Some(user.email),
        details: None,
    };
    Ok((StatusCode::NO_CONTENT, Extension(note)).into_response())
}
