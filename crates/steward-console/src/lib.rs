//! The web console under `/console`: server-rendered HTML (maud templates, escaped by default), plain
//! forms with POST/redirect/GET, no JavaScript at all, so the Content-Security-Policy can forbid
//! scripts outright.
//!
//! The console is a second admin surface over the same services as the admin API
//! ([`steward_core::service::Core`]): its pages and buttons call them with a [`Principal`] built
//! from the console session. State-changing actions are authorised by the API's own permission
//! table ([`steward_api::ROUTES`]) and audited through the same function the API middleware uses
//! ([`steward_api::auth::record_audit`]), with the action name, target, details and HTTP status the
//! API call would have recorded. A console user can therefore never do more than an API token of
//! the same role, and every rule (wipe confirmation, command validation, scope) lives in one place.

mod activity;
mod admin;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_checks;
mod pages;
mod profiles;
mod session;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use http::{HeaderValue, StatusCode, header};
use maud::{DOCTYPE, Markup, html};
use steward_api::auth::record_audit;
use steward_api::{ApiError, ApiState, AuditNote, rule_for};
use steward_core::service::{Core, ServiceError};
use steward_core::{EnrollmentEndpoint, Permission, Principal, Role};

pub use session::COOKIE_NAME;

/// Where the console lives.
pub const CONSOLE_PATH: &str = "/console";

/// Largest form the console reads by default (its forms hold a few short fields);
/// `limits.console_form_bytes` sets [`ConsoleSettings::form_bytes`].
pub const FORM_BYTES: usize = 64 * 1024;

/// No scripts, no inline styles, no framing, forms only to ourselves.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("console.css");

/// What the console shows about the server it runs in, filled by the composition root (the rest
/// comes from the API's [`steward_api::ServerSettings`]).
#[derive(Debug, Clone, Default)]
pub struct ConsoleSettings {
    /// Every console user must give a TOTP code after the password (`console.require_totp`).
    pub require_totp: bool,
    /// The issuer authenticator apps show next to the code ([`ConsoleSettings::totp_issuer_for`]).
    pub totp_issuer: String,
    /// The running configuration the Settings page lists after what [`ServerSettings`] holds, in
    /// order: (what, value), e.g. device certificate lifetimes and trusted proxies.
    pub config_summary: Vec<(String, String)>,
    /// Where devices enroll (the platform adapters' `enrollment_endpoints`), for the enrollment page.
    pub enrollment_endpoints: Vec<EnrollmentEndpoint>,
    /// Largest form body a console POST may send (default [`FORM_BYTES`]); larger gets 413.
    pub form_bytes: usize,
}

impl ConsoleSettings {
    /// "Steward <host>", the host taken from the public URL (`localhost` without one).
    pub fn totp_issuer_for(public_url: Option<&str>) -> String {
        let host = public_url
            .and_then(|u| u.split("://").nth(1))
            .and_then(|rest| rest.split(['/', ':']).next())
            .filter(|h| !h.is_empty())
            .unwrap_or("localhost");
        format!("Steward {host}")
    }
}

/// What every console handler needs: the admin API's state (the services and the server settings
/// the API reports) and the console's own settings.
#[derive(Clone)]
pub struct ConsoleState {
    pub api: ApiState,
    pub settings: Arc<ConsoleSettings>,
}

impl ConsoleState {
    pub(crate) fn core(&self) -> &Core {
        &self.api.core
    }
}

/// The console routes, with their state. Everything but the login pages and the stylesheet needs
/// a session.
pub fn router(state: ConsoleState) -> Router {
    let activity = Arc::new(activity::ActivityCache::default());
    // The session check wraps each route's handlers, not the route as a whole: a method no handler
    // takes (OPTIONS, TRACE, PUT…) reaches axum's fallback and gets 405 with `Allow`, signed in
    // or not, instead of a redirect to the sign-in page. (`Router::route_layer` would wrap the
    // fallback too.)
    let guard = axum::middleware::from_fn_with_state(state.clone(), session::require_session);
    let signed_in = |m: MethodRouter<ConsoleState>| m.route_layer(guard.clone());
    let protected = Router::new()
        .route("/console", signed_in(get(pages::dashboard)))
        .route("/console/devices", signed_in(get(pages::devices)))
        .route("/console/devices/{id}", signed_in(get(pages::device)))
        .route(
            "/console/devices/{id}/actions/{action}",
            signed_in(post(pages::device_action)),
        )
        .route(
            "/console/devices/{id}/wipe",
            signed_in(get(pages::wipe_confirm).post(pages::wipe)),
        )
        .route(
            "/console/enrollment",
            signed_in(get(pages::enrollment).post(pages::create_enrollment_token)),
        )
        .route("/console/audit", signed_in(get(pages::audit)))
        .route(
            "/console/groups",
            signed_in(get(admin::groups).post(admin::create_group)),
        )
        .route("/console/groups/{id}/delete", signed_in(post(admin::delete_group)))
        .route("/console/devices/{id}/group", signed_in(post(admin::move_device)))
        .route("/console/devices/{id}/tags", signed_in(post(admin::set_device_tags)))
        .route("/console/settings", signed_in(get(admin::settings)))
        .route("/console/catalog", signed_in(get(admin::catalog)))
        .route(
            "/console/catalog/{name}/assign",
            signed_in(post(profiles::assign_catalog)),
        )
        .route("/console/profiles", signed_in(get(profiles::profiles)))
        .route("/console/profiles/{name}", signed_in(get(profiles::profile)))
        .route("/console/profiles/{name}/verify", signed_in(post(profiles::verify)))
        .route(
            "/console/profiles/{name}/delete",
            signed_in(get(profiles::delete_confirm).post(profiles::delete)),
        )
        .route(
            "/console/profiles/{name}/rollout/{action}",
            signed_in(post(profiles::rollout_action)),
        )
        .route(
            "/console/settings/webhooks/{id}/{verb}",
            signed_in(post(admin::toggle_webhook)),
        )
        .route("/console/account", signed_in(get(admin::account)))
        .route("/console/account/totp", signed_in(post(admin::start_totp)))
        .route("/console/account/totp/confirm", signed_in(post(admin::confirm_totp)))
        .route("/console/logout", signed_in(post(session::logout)));
    Router::new()
        .route("/console/login", get(session::login_page).post(session::login))
        .route(
            session::SECOND_FACTOR_PATH,
            get(session::second_factor_page).post(session::second_factor),
        )
        .route("/console/login/cancel", post(session::cancel_second_factor))
        .route("/console/static/console.css", get(stylesheet))
        .merge(protected)
        .layer(axum::Extension(activity))
        .layer(axum::extract::DefaultBodyLimit::max(state.settings.form_bytes))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
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

/// An admin API route a console action stands for: its method and routed path name the entry of
/// the API's permission table ([`steward_api::ROUTES`]) that authorises the action and names it
/// in the audit log. `permission` is what the pages check before offering the action; a unit test
/// holds it equal to the table's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApiRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub permission: Permission,
}

/// The API routes behind the console's actions.
pub(crate) mod routes {
    use super::ApiRoute;
    use steward_core::Permission as P;

    const fn r(method: &'static str, path: &'static str, permission: P) -> ApiRoute {
        ApiRoute {
            method,
            path,
            permission,
        }
    }

    pub const DEVICE_SYNC: ApiRoute = r("POST", "/api/v1/devices/{id}/actions/sync", P::DevicesAct);
    pub const DEVICE_REBOOT: ApiRoute = r("POST", "/api/v1/devices/{id}/actions/reboot", P::DevicesAct);
    pub const DEVICE_LOCK: ApiRoute = r("POST", "/api/v1/devices/{id}/actions/lock", P::DevicesAct);
    pub const DEVICE_WIPE: ApiRoute = r("POST", "/api/v1/devices/{id}/actions/wipe", P::DevicesWipe);
    pub const DEVICE_SET_GROUP: ApiRoute = r("PUT", "/api/v1/devices/{id}/group", P::GroupsWrite);
    pub const DEVICE_SET_TAGS: ApiRoute = r("PUT", "/api/v1/devices/{id}/tags", P::GroupsWrite);
    pub const ENROLLMENT_TOKEN_CREATE: ApiRoute = r("POST", "/api/v1/enrollment-tokens", P::EnrollmentTokensWrite);
    pub const GROUP_CREATE: ApiRoute = r("POST", "/api/v1/groups", P::GroupsWrite);
    pub const GROUP_DELETE: ApiRoute = r("DELETE", "/api/v1/groups/{id}", P::GroupsWrite);
    pub const WEBHOOK_UPDATE: ApiRoute = r("PATCH", "/api/v1/webhooks/{id}", P::WebhooksWrite);
    pub const DEVICE_VERIFY: ApiRoute = r("POST", "/api/v1/devices/{id}/actions/verify", P::DevicesAct);
    pub const CATALOG_ASSIGN: ApiRoute = r("POST", "/api/v1/catalog/{name}/assign", P::ProfilesWrite);
    pub const PROFILE_DELETE: ApiRoute = r("DELETE", "/api/v1/profiles/{name}", P::ProfilesWrite);
    pub const PROFILE_VERIFY: ApiRoute = r("POST", "/api/v1/profiles/{name}/actions/verify", P::DevicesAct);
    pub const ROLLOUT_ADVANCE: ApiRoute = r(
        "POST",
        "/api/v1/profiles/{name}/rollout/actions/advance",
        P::ProfilesWrite,
    );
    pub const ROLLOUT_PAUSE: ApiRoute = r(
        "POST",
        "/api/v1/profiles/{name}/rollout/actions/pause",
        P::ProfilesWrite,
    );
    pub const ROLLOUT_RESUME: ApiRoute = r(
        "POST",
        "/api/v1/profiles/{name}/rollout/actions/resume",
        P::ProfilesWrite,
    );
    pub const ROLLOUT_ROLLBACK: ApiRoute = r(
        "POST",
        "/api/v1/profiles/{name}/rollout/actions/rollback",
        P::ProfilesWrite,
    );

    #[cfg(test)]
    pub const ALL: &[ApiRoute] = &[
        DEVICE_SYNC,
        DEVICE_REBOOT,
        DEVICE_LOCK,
        DEVICE_WIPE,
        DEVICE_SET_GROUP,
        ENROLLMENT_TOKEN_CREATE,
        GROUP_CREATE,
        GROUP_DELETE,
        WEBHOOK_UPDATE,
        DEVICE_VERIFY,
        CATALOG_ASSIGN,
        PROFILE_DELETE,
        PROFILE_VERIFY,
        ROLLOUT_ADVANCE,
        ROLLOUT_PAUSE,
        ROLLOUT_RESUME,
        ROLLOUT_ROLLBACK,
    ];
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
    /// The client's address.
    pub peer: Option<std::net::IpAddr>,
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

    /// Whether this user's role (and group scope) allows `p`: the same check as an API token's.
    pub fn may(&self, p: Permission) -> bool {
        self.principal.permits(p)
    }

    /// Runs a state-changing service call as this user, as the admin API would run it: refused
    /// with the API's own 403 unless the API's permission table allows `route`, then audited
    /// exactly as the API middleware audits the call: the table's action name, the concrete API
    /// path (with `id`), the target and details of `run`'s [`AuditNote`] (else the path), and
    /// the status the API would have answered: `success` or the error's.
    pub(crate) async fn act<T>(
        &self,
        state: &ConsoleState,
        route: ApiRoute,
        id: &str,
        success: StatusCode,
        run: impl Future<Output = Result<(T, AuditNote), ServiceError>>,
    ) -> Result<T, ApiError> {
        let Some(rule) = rule_for(route.method, route.path) else {
            return Err(ApiError::Internal(format!(
                "no permission rule for {} {}",
                route.method, route.path
            )));
        };
        // The routes name their one path parameter `{id}` or, for profiles and catalog entries,
        // `{name}`.
        let concrete = route.path.replace("{id}", id).replace("{name}", id);
        let (outcome, status, note) = if self.principal.permits(rule.permission) {
            match run.await {
                Ok((value, note)) => (Ok(value), success, note),
                Err(e) => {
                    let e = ApiError::from(e);
                    let status = e.status();
                    (Err(e), status, AuditNote::default())
                }
            }
        } else {
            let e = ApiError::Forbidden {
                role: self.principal.role_label(),
                permission: rule.permission.as_str(),
            };
            (Err(e), StatusCode::FORBIDDEN, AuditNote::default())
        };
        record_audit(
            &state.api,
            &self.principal,
            rule,
            &concrete,
            self.peer.map(|p| p.to_string()),
            status,
            note,
        )
        .await;
        outcome
    }
}

/// The audit note naming what a call acted on.
pub(crate) fn note(target: impl ToString, details: Option<String>) -> AuditNote {
    AuditNote {
        target: Some(target.to_string()),
        details,
    }
}

/// The navigation entries: (href, label, permission the page needs).
const NAV: &[(&str, &str, Permission)] = &[
    ("/console", "Dashboard", Permission::ServerRead),
    ("/console/devices", "Devices", Permission::DevicesRead),
    ("/console/enrollment", "Enrollment", Permission::EnrollmentTokensRead),
    ("/console/groups", "Groups", Permission::GroupsRead),
    ("/console/profiles", "Profiles", Permission::ProfilesRead),
    ("/console/catalog", "Catalog", Permission::CatalogRead),
    ("/console/audit", "Audit log", Permission::AuditRead),
    ("/console/settings", "Settings", Permission::ServerRead),
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
                                @for (href, label, permission) in NAV {
                                    @if ctx.may(*permission) {
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

/// A failed call shown as a console page (the detail is safe to show: [`ApiError`]'s texts keep
/// internals out).
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

pub(crate) fn service_error_page(ctx: &ConsoleCtx, e: ServiceError) -> Response {
    api_error_page(ctx, e.into())
}

pub(crate) fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_actions_are_the_api_tables_routes_with_its_permissions() {
        for r in routes::ALL {
            let rule = rule_for(r.method, r.path).unwrap_or_else(|| panic!("{} {} is not in ROUTES", r.method, r.path));
            assert_eq!(rule.permission, r.permission, "{} {}", r.method, r.path);
        }
    }

    #[test]
    fn totp_issuer_names_the_public_host() {
        assert_eq!(
            ConsoleSettings::totp_issuer_for(Some("https://mdm.example.com:8443/x")),
            "Steward mdm.example.com"
        );
        assert_eq!(ConsoleSettings::totp_issuer_for(None), "Steward localhost");
        assert_eq!(ConsoleSettings::totp_issuer_for(Some("nonsense")), "Steward localhost");
    }
}
