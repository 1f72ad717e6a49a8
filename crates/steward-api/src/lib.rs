//! The admin REST API under `/api/v1`: JSON in and out, RFC 9457 problem documents for errors,
//! opaque cursors for pagination, bearer tokens with roles ([`auth`]). The OpenAPI document is
//! generated from the handlers' annotations by the same router that serves them (utoipa-axum), so
//! the two cannot drift, and is served at `/api/v1/openapi.json`.

pub mod api_tokens;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod devices;
pub mod enrollment_tokens;
pub mod error;
pub mod groups;
pub mod profiles;
pub mod rollouts;
pub mod server;
pub mod types;
pub mod users;
pub mod webhooks;

use axum::Router;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{AuditNote, ROUTES, RouteRule, TrustedPrincipal, rule_for};
pub use error::{ApiError, Problem};
pub use steward_core::{Permission, Principal};

/// What the admin API reports about the server it runs in (`GET /api/v1/server`), filled by the
/// composition root from its configuration and platforms.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub public_url: String,
    /// The URL devices enroll with.
    pub enrollment_url: String,
    /// onpremise or federated.
    pub auth_policy: String,
    pub server_name: String,
    pub poll_interval_minutes: u32,
    pub inventory_interval_hours: u32,
    pub md5_auth: bool,
    pub console_require_totp: bool,
    /// Largest request body the API reads (`limits.api_body_bytes`, default [`API_BODY_BYTES`]).
    pub api_body_bytes: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            public_url: String::new(),
            enrollment_url: String::new(),
            auth_policy: String::new(),
            server_name: String::new(),
            poll_interval_minutes: 0,
            inventory_interval_hours: 0,
            md5_auth: false,
            console_require_totp: false,
            api_body_bytes: API_BODY_BYTES,
        }
    }
}

/// The body limit in force, for the 413 problem document ([`error::ApiJson`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub(crate) usize);

/// What every handler needs, shared by reference.
#[derive(Clone)]
pub struct ApiState {
    pub core: steward_core::service::Core,
    pub settings: std::sync::Arc<ServerSettings>,
}

pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// Largest request body the API reads by default (the largest legitimate one is an admin command, whose data
/// is capped at 256 KiB before JSON escaping). Bodies are read only after the bearer token was
/// checked; serde_json also refuses JSON nested deeper than 128 levels.
pub const API_BODY_BYTES: usize = 1024 * 1024;

/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 500;
pub const DEFAULT_LIMIT: u32 = 100;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Steward admin API",
        version = "1.0.0",
        description = "Manage Steward's devices, commands, tokens, users and audit log. Authenticate with \
                       `Authorization: Bearer <token>` (the bootstrap admin token or a named API token). \
                       Errors are RFC 9457 problem documents; lists are paged with an opaque `cursor`."
    ),
    components(schemas(Problem)),
    tags(
        (name = "devices", description = "Enrolled devices, their inventory and commands"),
        (name = "commands", description = "Queued device commands"),
        (name = "enrollment", description = "Enrollment tokens"),
        (name = "access", description = "API tokens, users and groups"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "server", description = "Server settings and totals"),
        (name = "webhooks", description = "Signed HTTP callbacks for device events"),
        (name = "catalog", description = "The built-in configuration catalog: security baseline areas, update rings, profile kinds"),
        (name = "profiles", description = "Configuration profiles: apply, export, versions, status, conflicts (docs/PROFILES.md)"),
    )
)]
struct ApiDoc;

/// The admin API routes (authorization and audit middleware applied) and their OpenAPI document.
pub fn routes(state: ApiState) -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    let (router, doc) = unprotected_routes();
    let router = router.route_layer(axum::middleware::from_fn_with_state(state, auth::authorize));
    (router, doc)
}

/// The OpenAPI document as served.
pub fn openapi() -> utoipa::openapi::OpenApi {
    unprotected_routes().1
}

/// Every route is registered here, once: utoipa-axum records its path and method in the document
/// as it adds it to the router.
fn unprotected_routes() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(devices::list_devices))
        .routes(routes!(devices::get_device))
        .routes(routes!(devices::list_device_commands, devices::queue_device_command))
        .routes(routes!(devices::wipe))
        .routes(routes!(devices::reboot))
        .routes(routes!(devices::lock))
        .routes(routes!(devices::sync))
        .routes(routes!(devices::unenroll))
        .routes(routes!(devices::set_device_group))
        .routes(routes!(devices::set_device_tags))
        .routes(routes!(devices::cancel_command))
        .routes(routes!(
            enrollment_tokens::list_enrollment_tokens,
            enrollment_tokens::create_enrollment_token
        ))
        .routes(routes!(enrollment_tokens::revoke_enrollment_token))
        .routes(routes!(api_tokens::list_api_tokens, api_tokens::create_api_token))
        .routes(routes!(api_tokens::revoke_api_token))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(groups::list_groups, groups::create_group))
        .routes(routes!(groups::delete_group))
        .routes(routes!(groups::set_group_rule))
        .routes(routes!(groups::group_members))
        .routes(routes!(users::reset_user_totp))
        .routes(routes!(users::update_user))
        .routes(routes!(audit::list_audit_events))
        .routes(routes!(server::server_info))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::delete_webhook,
            webhooks::update_webhook
        ))
        .routes(routes!(webhooks::list_webhook_deliveries))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(catalog::list_catalog))
        .routes(routes!(catalog::get_catalog_entry))
        .routes(routes!(profiles::assign_catalog_entry))
        .routes(routes!(profiles::list_profiles))
        .routes(routes!(profiles::apply_profiles))
        .routes(routes!(profiles::export_profiles))
        .routes(routes!(profiles::get_profile, profiles::delete_profile))
        .routes(routes!(rollouts::get_rollout, rollouts::start_rollout))
        .routes(routes!(rollouts::advance_rollout))
        .routes(routes!(rollouts::pause_rollout))
        .routes(routes!(rollouts::resume_rollout))
        .routes(routes!(rollouts::rollback_rollout))
        .routes(routes!(profiles::device_settings))
        .routes(routes!(profiles::verify_device))
        .routes(routes!(profiles::verify_group))
        .routes(routes!(profiles::verify_profile))
        .split_for_parts();
    finish_document(&mut doc);
    (router, doc)
}

/// What every operation shares, added in one place instead of on each handler: the bearer security
/// requirement and the 401/403/500 problem responses the middleware can produce.
fn finish_document(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("The bootstrap admin token or a named API token (stw_adm_…)"))
                .build(),
        ),
    );
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            op.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
            let r = &mut op.responses.responses;
            r.entry("401".into())
                .or_insert_with(|| problem("Missing, unknown, expired or revoked token").into());
            r.entry("403".into())
                .or_insert_with(|| problem("The token's role (or group scope) does not allow this").into());
            r.entry("500".into())
                .or_insert_with(|| problem("Internal error (details are in the server log)").into());
        }
    }
}

/// The router for `/api/v1`: the API plus its OpenAPI document (readable without a token: it holds
/// nothing secret, and clients need it to learn how to authenticate).
pub fn router(state: ApiState) -> Router<ApiState> {
    let limit = state.settings.api_body_bytes;
    let (api, doc) = routes(state);
    let api = api
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::Extension(BodyLimit(limit)));
    let json = std::sync::Arc::new(doc.to_pretty_json().unwrap_or_default());
    api.route(
        OPENAPI_PATH,
        axum::routing::get(move || {
            let json = json.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "application/json")],
                    json.as_ref().clone(),
                )
                    .into_response()
            }
        }),
    )
}

// ---------------------------------------------------------------- pagination

/// Cursors are base64url JSON: opaque to clients, and a client cannot forge anything with them that
/// the query parameters would not allow anyway.
pub fn encode_cursor<T: Serialize>(c: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

pub fn decode_cursor<T: DeserializeOwned>(s: &str) -> Result<T, ApiError> {
    let bad = || ApiError::BadRequest("invalid cursor".into());
    let bytes = URL_SAFE_NO_PAD.decode(s.trim()).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

pub fn check_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        l @ 1..=MAX_LIMIT => Ok(l),
        l => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {l}"
        ))),
    }
}

#[derive(Serialize, serde::Deserialize)]
struct AfterId {
    after: String,
}

/// Pages a short, fully loaded list (tokens, users, groups, one device's commands) by the id of the
/// last item returned. The big lists (devices, audit events) page in the database instead.
pub(crate) fn page_in_memory<T>(
    items: Vec<T>,
    id_of: impl Fn(&T) -> String,
    cursor: Option<&str>,
    limit: u32,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start = match cursor {
        None => 0,
        Some(c) => {
            let after: AfterId = decode_cursor(c)?;
            items
                .iter()
                .position(|i| id_of(i) == after.after)
                .map(|p| p + 1)
                .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))?
        }
    };
    let limit = limit as usize;
    let more = items.len() > start + limit;
    let page: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    let next = match (more, page.last()) {
        (true, Some(last)) => Some(encode_cursor(&AfterId { after: id_of(last) })),
        _ => None,
    };
    Ok((page, next))
}

/// A 201 answer naming what was created for the audit log.
pub(crate) fn created<T: Serialize>(target: String, body: T) -> axum::response::Response {
    let note = AuditNote {
        target: Some(target),
        details: None,
    };
    (http::StatusCode::CREATED, axum::Extension(note), axum::Json(body)).into_response()
}

/// A 204 answer naming what was removed for the audit log.
pub(crate) fn no_content(target: String) -> axum::response::Response {
    let note = AuditNote {
        target: Some(target),
        details: None,
    };
    (http::StatusCode::NO_CONTENT, axum::Extension(note)).into_response()
}
