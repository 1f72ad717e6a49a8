//! Who may call what. Every admin API route is listed once in [`ROUTES`] with the permission it
//! needs and the action name it is audited under; [`authorize`] runs in front of every route, looks
//! the matched route up there (a route missing from the table is refused, never let through),
//! authenticates the bearer token, checks the role, runs the handler, and appends the outcome of
//! every state-changing call to the audit log.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use steward_core::*;
use time::OffsetDateTime;

use super::error::ApiError;
use crate::AppState;
use crate::listener::ConnInfo;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    DevicesRead,
    /// Sync, lock, reboot.
    DevicesAct,
    /// Custom OMA-DM commands and cancelling commands.
    DevicesCommand,
    DevicesWipe,
    EnrollmentTokensRead,
    EnrollmentTokensWrite,
    UsersRead,
    UsersWrite,
    GroupsRead,
    /// Create and delete groups, move devices between them.
    GroupsWrite,
    ApiTokensRead,
    ApiTokensWrite,
    AuditRead,
    ServerRead,
    /// List subscriptions and read their delivery logs.
    WebhooksRead,
    /// Create, delete and test subscriptions.
    WebhooksWrite,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DevicesRead => "devices.read",
            Self::DevicesAct => "devices.act",
            Self::DevicesCommand => "devices.command",
            Self::DevicesWipe => "devices.wipe",
            Self::EnrollmentTokensRead => "enrollment_tokens.read",
            Self::EnrollmentTokensWrite => "enrollment_tokens.write",
            Self::UsersRead => "users.read",
            Self::UsersWrite => "users.write",
            Self::GroupsRead => "groups.read",
            Self::GroupsWrite => "groups.write",
            Self::ApiTokensRead => "api_tokens.read",
            Self::ApiTokensWrite => "api_tokens.write",
            Self::AuditRead => "audit.read",
            Self::ServerRead => "server.read",
            Self::WebhooksRead => "webhooks.read",
            Self::WebhooksWrite => "webhooks.write",
        }
    }

    /// The role matrix (docs/OPERATIONS.md shows the same table).
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Self::DevicesRead | Self::EnrollmentTokensRead | Self::UsersRead | Self::GroupsRead | Self::ServerRead => {
                true
            }
            Self::DevicesAct => matches!(role, Admin | Operator | Helpdesk),
            Self::DevicesCommand | Self::DevicesWipe | Self::GroupsWrite => matches!(role, Admin | Operator),
            Self::AuditRead | Self::ApiTokensRead | Self::WebhooksRead => matches!(role, Admin | Auditor),
            Self::EnrollmentTokensWrite | Self::UsersWrite | Self::ApiTokensWrite | Self::WebhooksWrite => {
                role == Admin
            }
        }
    }

    /// Whether a group-scoped token may use it at all. Scoped tokens see their group's devices and
    /// nothing global: otherwise a team admin could mint an unscoped token or read the whole fleet's
    /// audit trail.
    pub fn available_to_scoped(self) -> bool {
        matches!(
            self,
            Self::DevicesRead
                | Self::DevicesAct
                | Self::DevicesCommand
                | Self::DevicesWipe
                | Self::GroupsRead
                | Self::ServerRead
        )
    }
}

/// One admin API route: method, path as routed (axum syntax), permission, audited action name.
#[derive(Debug, Clone, Copy)]
pub struct RouteRule {
    pub method: &'static str,
    pub path: &'static str,
    pub permission: Permission,
    pub action: &'static str,
}

const fn rule(method: &'static str, path: &'static str, permission: Permission, action: &'static str) -> RouteRule {
    RouteRule {
        method,
        path,
        permission,
        action,
    }
}

use Permission as P;

/// THE permission table. A test walks the router and requires an entry here for every route (and a
/// route for every entry), then checks every route against every role.
pub const ROUTES: &[RouteRule] = &[
    rule("GET", "/api/v1/devices", P::DevicesRead, "device.list"),
    rule("GET", "/api/v1/devices/{id}", P::DevicesRead, "device.show"),
    rule(
        "GET",
        "/api/v1/devices/{id}/commands",
        P::DevicesRead,
        "device.commands",
    ),
    rule(
        "POST",
        "/api/v1/devices/{id}/commands",
        P::DevicesCommand,
        "device.command",
    ),
    rule(
        "POST",
        "/api/v1/devices/{id}/actions/wipe",
        P::DevicesWipe,
        "device.wipe",
    ),
    rule(
        "POST",
        "/api/v1/devices/{id}/actions/reboot",
        P::DevicesAct,
        "device.reboot",
    ),
    rule(
        "POST",
        "/api/v1/devices/{id}/actions/lock",
        P::DevicesAct,
        "device.lock",
    ),
    rule(
        "POST",
        "/api/v1/devices/{id}/actions/sync",
        P::DevicesAct,
        "device.sync",
    ),
    rule(
        "POST",
        "/api/v1/commands/{id}/cancel",
        P::DevicesCommand,
        "command.cancel",
    ),
    rule(
        "GET",
        "/api/v1/enrollment-tokens",
        P::EnrollmentTokensRead,
        "enrollment_token.list",
    ),
    rule(
        "POST",
        "/api/v1/enrollment-tokens",
        P::EnrollmentTokensWrite,
        "enrollment_token.create",
    ),
    rule(
        "DELETE",
        "/api/v1/enrollment-tokens/{id}",
        P::EnrollmentTokensWrite,
        "enrollment_token.revoke",
    ),
    rule("GET", "/api/v1/api-tokens", P::ApiTokensRead, "api_token.list"),
    rule("POST", "/api/v1/api-tokens", P::ApiTokensWrite, "api_token.create"),
    rule(
        "DELETE",
        "/api/v1/api-tokens/{id}",
        P::ApiTokensWrite,
        "api_token.revoke",
    ),
    rule("GET", "/api/v1/users", P::UsersRead, "user.list"),
    rule("POST", "/api/v1/users", P::UsersWrite, "user.create"),
    rule("GET", "/api/v1/groups", P::GroupsRead, "group.list"),
    rule("POST", "/api/v1/groups", P::GroupsWrite, "group.create"),
    rule("DELETE", "/api/v1/groups/{id}", P::GroupsWrite, "group.delete"),
    rule("PUT", "/api/v1/devices/{id}/group", P::GroupsWrite, "device.set_group"),
    rule("DELETE", "/api/v1/users/{id}/totp", P::UsersWrite, "user.reset_totp"),
    rule("PATCH", "/api/v1/users/{id}", P::UsersWrite, "user.update"),
    rule("GET", "/api/v1/audit-events", P::AuditRead, "audit.list"),
    rule("GET", "/api/v1/server", P::ServerRead, "server.show"),
    rule("GET", "/api/v1/webhooks", P::WebhooksRead, "webhook.list"),
    rule("POST", "/api/v1/webhooks", P::WebhooksWrite, "webhook.create"),
    rule("GET", "/api/v1/webhooks/{id}", P::WebhooksRead, "webhook.show"),
    rule("DELETE", "/api/v1/webhooks/{id}", P::WebhooksWrite, "webhook.delete"),
    rule("PATCH", "/api/v1/webhooks/{id}", P::WebhooksWrite, "webhook.update"),
    rule(
        "GET",
        "/api/v1/webhooks/{id}/deliveries",
        P::WebhooksRead,
        "webhook.deliveries",
    ),
    rule("POST", "/api/v1/webhooks/{id}/test", P::WebhooksWrite, "webhook.test"),
];

pub fn rule_for(method: &str, path: &str) -> Option<&'static RouteRule> {
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

/// The authenticated caller, put in the request extensions for handlers.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's name (audit "who").
    pub name: String,
    /// The API token's id; None for the bootstrap token.
    pub token_id: Option<ApiTokenId>,
    pub role: Role,
    /// Group scope: only this group's devices exist for this caller.
    pub group: Option<GroupId>,
}

impl Principal {
    /// Whether the enrollment is visible to this caller (out-of-scope devices are reported as not
    /// found, so a scoped token cannot even learn that they exist).
    pub fn sees(&self, e: &Enrollment) -> bool {
        self.group.is_none() || self.group == e.group_id
    }

    /// Whether the role allows the permission and, for a group-scoped caller, whether the
    /// permission is open to scoped callers at all.
    pub fn permits(&self, p: Permission) -> bool {
        p.allows(self.role) && (self.group.is_none() || p.available_to_scoped())
    }
}

/// Extra audit information a handler attaches to its response (the created token's id, the queued
/// command…). Without it the request path is the target.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub target: Option<String>,
    pub details: Option<String>,
}

/// Seconds between `last_used_at` writes for one token: recording every request would turn each
/// read into a write on SQLite's single writer.
const TOUCH_INTERVAL_SECONDS: i64 = 60;

async fn authenticate(state: &AppState, headers: &http::HeaderMap) -> Result<Principal, ApiError> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthenticated)?;
    let hash = TokenHash::of(token);
    let now = OffsetDateTime::now_utc();
    if let Some(t) = state.store.api_token_by_hash(&hash).await? {
        if !t.usable_at(now) {
            tracing::debug!(token = %t.id, "revoked or expired API token presented");
            return Err(ApiError::Unauthenticated);
        }
        if t.last_used_at
            .is_none_or(|u| now - u > time::Duration::seconds(TOUCH_INTERVAL_SECONDS))
        {
            state.store.touch_api_token(t.id, now).await?;
        }
        return Ok(Principal {
            name: t.name,
            token_id: Some(t.id),
            role: t.role,
            group: t.group_id,
        });
    }
    if state.store.admin_token_exists(&hash).await? {
        return Ok(Principal {
            name: "bootstrap admin token".into(),
            token_id: None,
            role: Role::Admin,
            group: None,
        });
    }
    Err(ApiError::Unauthenticated)
}

/// The middleware in front of every admin API route (see the module docs).
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let Some(rule) = matched.as_deref().and_then(|p| rule_for(&method, p)) else {
        // Fail closed: a route someone forgot to put in the table is unusable, not open.
        return ApiError::Internal(format!("no permission rule for {method} {matched:?}")).into_response();
    };
    let principal = match authenticate(&state, req.headers()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let peer = req.extensions().get::<ConnInfo>().map(|c| c.peer.ip().to_string());
    let path = req.uri().path().to_owned();
    let mutating = !matches!(req.method(), &http::Method::GET | &http::Method::HEAD);

    let allowed = principal.permits(rule.permission);
    let resp = if allowed {
        req.extensions_mut().insert(principal.clone());
        next.run(req).await
    } else {
        ApiError::Forbidden {
            role: if principal.group.is_some() {
                format!("group-scoped {}", principal.role)
            } else {
                principal.role.to_string()
            },
            permission: rule.permission.as_str(),
        }
        .into_response()
    };

    if mutating {
        let note = resp.extensions().get::<AuditNote>().cloned().unwrap_or_default();
        record_audit(&state, &principal, rule, &path, peer, resp.status(), note).await;
    }
    resp
}

/// Appends the outcome of a state-changing call to the audit log. Shared by the API middleware and
/// the web console, so both record the same action names, targets and outcomes.
pub(crate) async fn record_audit(
    state: &AppState,
    principal: &Principal,
    rule: &RouteRule,
    path: &str,
    peer: Option<String>,
    status: http::StatusCode,
    note: AuditNote,
) {
    let event = NewAuditEvent {
        at: OffsetDateTime::now_utc(),
        actor: principal.name.clone(),
        actor_id: principal.token_id.map(|i| i.to_string()),
        actor_role: Some(principal.role),
        action: rule.action.to_owned(),
        target: note
            .target
            .or_else(|| Some(path.strip_prefix("/api/v1").unwrap_or(path).to_owned())),
        source_ip: peer,
        outcome: if status.is_success() {
            AuditOutcome::Success
        } else {
            AuditOutcome::Failure
        },
        status: Some(status.as_u16()),
        details: note.details,
    };
    // The action already happened (or was refused); failing the response now would make the
    // caller retry something that succeeded. The failure is logged loudly instead.
    if let Err(e) = state.store.append_audit_event(&event).await {
        tracing::error!(error = %e, action = rule.action, "cannot append to the audit log");
    }
}
