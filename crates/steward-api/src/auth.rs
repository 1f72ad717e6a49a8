//! Who may call what. Every admin API route is listed once in [`ROUTES`] with the permission it
//! needs and the action name it is audited under; [`authorize`] runs in front of every route, looks
//! the matched route up there (a route missing from the table is refused, never let through),
//! authenticates the bearer token, checks the role, runs the handler, and appends the outcome of
//! every state-changing call to the audit log. A method the table does not list for a routed path
//! is 405 with `Allow` (HEAD is GET's rule), never an error page.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use steward_core::service::audit::AuditEntry;
use steward_core::*;
use steward_http::ConnInfo;
use time::OffsetDateTime;

use super::error::ApiError;
use crate::ApiState;

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
        "/api/v1/devices/{id}/actions/unenroll",
        P::DevicesWipe,
        "device.unenroll",
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
    rule("PUT", "/api/v1/groups/{id}/rule", P::GroupsWrite, "group.set_rule"),
    rule("GET", "/api/v1/groups/{id}/members", P::GroupsRead, "group.members"),
    rule("PUT", "/api/v1/devices/{id}/group", P::GroupsWrite, "device.set_group"),
    rule("PUT", "/api/v1/devices/{id}/tags", P::GroupsWrite, "device.set_tags"),
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
    rule("GET", "/api/v1/catalog", P::CatalogRead, "catalog.list"),
    rule("GET", "/api/v1/catalog/{name}", P::CatalogRead, "catalog.show"),
    rule(
        "POST",
        "/api/v1/catalog/{name}/assign",
        P::ProfilesWrite,
        "catalog.assign",
    ),
    rule("GET", "/api/v1/profiles", P::ProfilesRead, "profile.list"),
    rule("POST", "/api/v1/profiles/apply", P::ProfilesWrite, "profile.apply"),
    rule("GET", "/api/v1/profiles/export", P::ProfilesRead, "profile.export"),
    rule("GET", "/api/v1/profiles/{name}", P::ProfilesRead, "profile.show"),
    rule("DELETE", "/api/v1/profiles/{name}", P::ProfilesWrite, "profile.delete"),
    rule(
        "GET",
        "/api/v1/profiles/{name}/rollout",
        P::ProfilesRead,
        "rollout.show",
    ),
    rule(
        "POST",
        "/api/v1/profiles/{name}/rollout",
        P::ProfilesWrite,
        "rollout.start",
    ),
    rule(
        "POST",
        "/api/v1/profiles/{name}/rollout/actions/advance",
        P::ProfilesWrite,
        "rollout.advance",
    ),
    rule(
        "POST",
        "/api/v1/profiles/{name}/rollout/actions/pause",
        P::ProfilesWrite,
        "rollout.pause",
    ),
    rule(
        "POST",
        "/api/v1/profiles/{name}/rollout/actions/resume",
        P::ProfilesWrite,
        "rollout.resume",
    ),
    rule(
        "POST",
        "/api/v1/profiles/{name}/rollout/actions/rollback",
        P::ProfilesWrite,
        "rollout.rollback",
    ),
    rule(
        "GET",
        "/api/v1/devices/{id}/settings",
        P::DevicesRead,
        "device.settings",
    ),
    rule(
        "POST",
        "/api/v1/devices/{id}/actions/verify",
        P::DevicesAct,
        "device.verify",
    ),
    rule(
        "POST",
        "/api/v1/groups/{id}/actions/verify",
        P::DevicesAct,
        "group.verify",
    ),
    rule(
        "POST",
        "/api/v1/profiles/{name}/actions/verify",
        P::DevicesAct,
        "profile.verify",
    ),
];

pub fn rule_for(method: &str, path: &str) -> Option<&'static RouteRule> {
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

/// The methods the table lists for a routed path, HEAD wherever GET is (axum answers HEAD with the
/// GET handler, without the body), as an `Allow` header value (RFC 9110 §10.2.1). Empty if the
/// table has no entry for the path.
pub fn allowed_methods(path: &str) -> String {
    let mut methods: Vec<&str> = ROUTES.iter().filter(|r| r.path == path).map(|r| r.method).collect();
    if methods.contains(&"GET") {
        methods.push("HEAD");
    }
    methods.sort_unstable();
    methods.dedup();
    methods.join(", ")
}

/// A caller the transport vouches for without a token: the CLI's in-process transport (`--local`,
/// working on the data directory) puts it in the request extensions. Nothing from the network can:
/// extensions are set by code in this process only, and the server's accept loop never sets this one.
#[derive(Debug, Clone)]
pub struct TrustedPrincipal(pub Principal);

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

async fn authenticate(state: &ApiState, headers: &http::HeaderMap) -> Result<Principal, ApiError> {
    let store = &state.core.store;
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthenticated)?;
    let hash = TokenHash::of(token);
    let now = OffsetDateTime::now_utc();
    if let Some(t) = store.api_token_by_hash(&hash).await? {
        if !t.usable_at(now) {
            tracing::debug!(token = %t.id, "revoked or expired API token presented");
            return Err(ApiError::Unauthenticated);
        }
        if t.last_used_at
            .is_none_or(|u| now - u > time::Duration::seconds(TOUCH_INTERVAL_SECONDS))
        {
            store.touch_api_token(t.id, now).await?;
        }
        return Ok(Principal {
            name: t.name,
            token_id: Some(t.id),
            role: t.role,
            group: t.group_id,
        });
    }
    if let Some(t) = store.bootstrap_token_by_hash(&hash).await? {
        if !t.usable() {
            tracing::debug!(token = %t.id, "revoked bootstrap token presented");
            return Err(ApiError::Unauthenticated);
        }
        if t.last_used_at
            .is_none_or(|u| now - u > time::Duration::seconds(TOUCH_INTERVAL_SECONDS))
        {
            store.touch_bootstrap_token(t.id, now).await?;
        }
        return Ok(Principal {
            name: "bootstrap admin token".into(),
            // The audit log's actor id tells one bootstrap token from another.
            token_id: Some(t.id),
            role: Role::Admin,
            group: None,
        });
    }
    Err(ApiError::Unauthenticated)
}

/// The middleware in front of every admin API route (see the module docs).
pub async fn authorize(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    // HEAD is GET without the body: the same rule (and never audited, like GET).
    let lookup = if req.method() == http::Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let Some(rule) = matched.as_deref().and_then(|p| rule_for(lookup, p)) else {
        // This middleware also wraps the route's fallback, so a method the path does not take
        // (OPTIONS, TRACE, PROPFIND, …) arrives here: 405 with the methods it does take.
        let path = matched.unwrap_or_default();
        let allow = allowed_methods(&path);
        if allow.is_empty() {
            // Fail closed: a route someone forgot to put in the table is unusable, not open.
            return ApiError::Internal(format!("no permission rule for {method} {path}")).into_response();
        }
        return ApiError::MethodNotAllowed {
            method,
            path: req.uri().path().to_owned(),
            allow,
        }
        .into_response();
    };
    let trusted = req.extensions().get::<TrustedPrincipal>().map(|t| t.0.clone());
    let principal = match trusted {
        Some(p) => p,
        None => match authenticate(&state, req.headers()).await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        },
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
            role: principal.role_label(),
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

/// Appends the outcome of a state-changing call to the audit log through the one audit writer.
/// Shared by the API middleware and the web console, so both record the same action names,
/// targets and outcomes.
pub async fn record_audit(
    state: &ApiState,
    principal: &Principal,
    rule: &RouteRule,
    path: &str,
    peer: Option<String>,
    status: http::StatusCode,
    note: AuditNote,
) {
    let entry = AuditEntry {
        action: rule.action.to_owned(),
        target: note
            .target
            .or_else(|| Some(path.strip_prefix("/api/v1").unwrap_or(path).to_owned())),
        details: note.details,
        source_ip: peer,
        status: Some(status.as_u16()),
    };
    state.core.audit.record(principal, status.is_success(), entry).await;
}
