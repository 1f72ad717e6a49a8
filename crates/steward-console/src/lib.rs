//! The web console under `/console`: server-rendered HTML (maud templates, escaped by default), plain
//! forms with POST/redirect/GET, no JavaScript at all, so the Content-Security-Policy can forbid
//! scripts outright.
//!
//! The console is a second client of the admin API, in-process: its pages and buttons call the
//! API's own handlers with a [`Principal`] built from the console session, authorised by the API's
//! permission table ([`crate::api::ROUTES`]) and audited by the same function the API middleware
//! uses. A console user can therefore never do more than an API token of the same role, and every
//! rule (wipe confirmation, command validation, scope) lives in one place.

mod activity;
mod admin;
mod pages;
mod session;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use maud::{DOCTYPE, Markup, html};
use steward_core::Role;

use crate::AppState;
use crate::api::auth::{AuditNote, Principal, record_audit, rule_for};
use crate::api::{ApiError, Permission};

pub use session::{COOKIE_NAME, LoginLimiter};

/// Where the console lives.
pub const CONSOLE_PATH: &str = "/console";

/// No scripts, no inline styles, no framing, forms only to ourselves.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("console.css");

/// The console routes. Everything but the login page and the stylesheet needs a session.
pub fn router(state: AppState) -> Router<AppState> {
    let limiter = Arc::new(LoginLimiter::default());
    let activity = Arc::new(activity::ActivityCache::default());
    let protected = Router::new()
        .route("/console", get(pages::dashboard))
        .route("/console/devices", get(pages::devices))
        .route("/console/devices/{id}", get(pages::device))
        .route("/console/devices/{id}/actions/{action}", post(pages::device_action))
        .route("/console/devices/{id}/wipe", get(pages::wipe_confirm).post(pages::wipe))
        .route(
            "/console/enrollment",
            get(pages::enrollment).post(pages::create_enrollment_token),
        )
        .route("/console/audit", get(pages::audit))
        .route("/console/groups", get(admin::groups).post(admin::create_group))
        .route("/console/groups/{id}/delete", post(admin::delete_group))
        .route("/console/devices/{id}/group", post(admin::move_device))
        .route("/console/settings", get(admin::settings))
        .route("/console/settings/webhooks/{id}/{verb}", post(admin::toggle_webhook))
        .route("/console/account", get(admin::account))
        .route("/console/account/totp", post(admin::start_totp))
        .route("/console/account/totp/confirm", post(admin::confirm_totp))
        .route("/console/logout", post(session::logout))
        .route_layer(axum::middleware::from_fn_with_state(state, session::require_session));
    Router::new()
        .route("/console/login", get(session::login_page).post(session::login))
        .route(
            session::SECOND_FACTOR_PATH,
            get(session::second_factor_page).post(session::second_factor),
        )
        .route("/console/login/cancel", post(session::cancel_second_factor))
        .route("/console/static/console.css", get(stylesheet))
        .merge(protected)
        .layer(axum::Extension(limiter))
        .layer(axum::Extension(activity))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

/// Headers every console response carries: the CSP, no sniffing, no referrer to other sites (URLs
/// carry device ids; `same-origin` rather than `no-referrer` because the latter makes browsers send
/// `Origin: null` on our own form posts, which the origin check refuses), no caching (pages show
/// device data and one-time tokens).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The signed-in console user, put in the request extensions by [`session::require_session`].
#[derive(Clone)]
pub struct ConsoleCtx {
    pub principal: Principal,
    pub email: String,
    pub user_id: steward_core::UserId,
    /// Whether the user has a confirmed second factor.
    pub totp_confirmed: bool,
    /// The per-session CSRF token every form carries.
    pub csrf: String,
    pub peer: Option<String>,
}

impl std::fmt::Debug for ConsoleCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleCtx")
            .field("email", &self.email)
            .field("role", &self.principal.role)
            .finish_non_exhaustive()
    }
}

impl ConsoleCtx {
    pub fn role(&self) -> Role {
        self.principal.role
    }

    /// Whether the API route (method, routed path) is allowed for this user's role: the console
    /// asks the API's permission table, never a table of its own.
    pub fn may(&self, method: &str, api_path: &str) -> bool {
        rule_for(method, api_path).is_some_and(|r| self.principal.permits(r.permission))
    }

    /// Runs an API handler as this user: refused with the API's own 403 unless the permission
    /// table allows it; state-changing calls are audited exactly as the API middleware audits them.
    pub async fn call_api(
        &self,
        state: &AppState,
        method: &str,
        api_path: &str,
        concrete_path: &str,
        handler: impl Future<Output = Response>,
    ) -> Response {
        let Some(rule) = rule_for(method, api_path) else {
            return ApiError::Internal(format!("no permission rule for {method} {api_path}")).into_response();
        };
        let resp = if self.principal.permits(rule.permission) {
            handler.await
        } else {
            forbidden(&self.principal, rule.permission).into_response()
        };
        if method != "GET" {
            let note = resp.extensions().get::<AuditNote>().cloned().unwrap_or_default();
            record_audit(
                state,
                &self.principal,
                rule,
                concrete_path,
                self.peer.clone(),
                resp.status(),
                note,
            )
            .await;
        }
        resp
    }
}

fn forbidden(who: &Principal, permission: Permission) -> ApiError {
    ApiError::Forbidden {
        role: if who.group.is_some() {
            format!("group-scoped {}", who.role)
        } else {
            who.role.to_string()
        },
        permission: permission.as_str(),
    }
}

/// The navigation entries: (href, label, API route that must be readable).
const NAV: &[(&str, &str, &str)] = &[
    ("/console", "Dashboard", "/api/v1/server"),
    ("/console/devices", "Devices", "/api/v1/devices"),
    ("/console/enrollment", "Enrollment", "/api/v1/enrollment-tokens"),
    ("/console/groups", "Groups", "/api/v1/groups"),
    ("/console/audit", "Audit log", "/api/v1/audit-events"),
    ("/console/settings", "Settings", "/api/v1/server"),
];

/// The page frame: skip link, navigation, the signed-in user and the logout button.
pub(crate) fn layout(ctx: Option<&ConsoleCtx>, title: &str, current: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Steward" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "Steward" }
                    @if let Some(ctx) = ctx {
                        nav aria-label="Main" {
                            ul {
                                @for (href, label, api) in NAV {
                                    @if ctx.may("GET", api) {
                                        li {
                                            @if *href == current {
                                                a href=(href) aria-current="page" { (label) }
                                            } @else {
                                                a href=(href) { (label) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        div.who {
                            a href="/console/account" { (ctx.email) } " (" (ctx.role()) ")"
                            form method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(ctx.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An HTML page with a status.
pub(crate) fn page(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// A failed API call shown as a console page (the problem's detail is safe to show: the API
/// already keeps internals out of it).
pub(crate) fn error_page(ctx: Option<&ConsoleCtx>, status: StatusCode, detail: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    page(
        status,
        layout(
            ctx,
            title,
            "",
            html! {
                p.error role="alert" { (detail) }
                p { a href="/console" { "Back to the dashboard" } }
            },
        ),
    )
}

pub(crate) fn api_error_page(ctx: &ConsoleCtx, e: ApiError) -> Response {
    let status = e.status();
    if let ApiError::Internal(detail) = &e {
        tracing::error!(error = %detail, "console request failed");
    }
    error_page(Some(ctx), status, &e.to_string())
}

pub(crate) fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
