//! Webhook subscriptions: create (the signing secret is shown once), list, show, delete, the
//! delivery log, and a test ping. Delivery itself is `crate::webhooks`.

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use steward_core::*;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::auth::AuditNote;
use super::devices::PageQuery;
use super::error::{ApiError, ApiJson, ApiQuery, Problem};
use super::{check_limit, decode_cursor, encode_cursor, page_in_memory};
use crate::ApiState;
use steward_core::service::webhooks::WebhookRequest;

/// A webhook subscription (never its secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    pub id: uuid::Uuid,
    pub name: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Event kinds delivered: `["all"]` or some of enrolled, unenrolled, wiped, certificate_renewed,
    /// command_acknowledged, command_failed, reenrollment_refused.
    pub events: Vec<String>,
    pub enabled: bool,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Device events up to this sequence number are done for this subscription.
    pub cursor: i64,
    /// Failed attempts so far on the item being retried (0: none).
    pub failing_attempts: u32,
    /// When the item being retried is tried next.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> Self {
        Self {
            id: w.id.0,
            name: w.name.clone(),
            url: w.url.clone(),
            events: w.kinds.names(),
            enabled: w.enabled,
            created_by: w.created_by.clone(),
            created_at: w.created_at,
            cursor: w.cursor,
            failing_attempts: w.attempts,
            next_attempt_at: w.next_attempt_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookPage {
    pub items: Vec<WebhookView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookRequest {
    /// What it is for (1-64 printable characters).
    pub name: String,
    /// https:// URL; http:// only to a loopback address (deliveries are signed, not encrypted).
    pub url: String,
    /// Event kinds to deliver, or `["all"]` (also future kinds).
    pub events: Vec<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// The new subscription: `secret` (`stw_whs_…`) is shown only in this response. It keys the
/// `Steward-Signature` HMAC.
#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    pub secret: String,
    #[serde(flatten)]
    pub info: WebhookView,
}

/// One delivery attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookDeliveryView {
    pub id: i64,
    /// The payload's `id` (also the `Steward-Webhook-Id` header); the same for every attempt.
    pub delivery_id: String,
    /// `ping` or the event kind.
    pub event: String,
    pub event_seq: Option<i64>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// Why no answer came (connection refused, timeout, TLS…).
    pub error: Option<String>,
    pub duration_ms: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// delivered, retrying or failed (retries used up; the event was given up).
    pub outcome: String,
}

impl From<WebhookDelivery> for WebhookDeliveryView {
    fn from(d: WebhookDelivery) -> Self {
        Self {
            id: d.id,
            delivery_id: d.delivery_id,
            event: d.event_type,
            event_seq: d.event_seq,
            attempt: d.attempt,
            status_code: d.status_code,
            error: d.error,
            duration_ms: d.duration_ms,
            at: d.at,
            outcome: d.outcome.as_str().into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookDeliveryPage {
    pub items: Vec<WebhookDeliveryView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueuedPing {
    /// The ping's delivery id; watch for it in the delivery log.
    pub delivery_id: String,
}

#[derive(Serialize, Deserialize)]
struct DeliveryCursor {
    before: i64,
}

/// List webhook subscriptions.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    params(PageQuery),
    responses((status = 200, description = "A page of subscriptions", body = WebhookPage))
)]
pub async fn list_webhooks(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<WebhookPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let hooks = state.core.webhooks.list().await?;
    let (page, next_cursor) = page_in_memory(hooks, |w| w.id.to_string(), q.cursor.as_deref(), limit)?;
    Ok(axum::Json(WebhookPage {
        items: page.iter().map(WebhookView::from).collect(),
        next_cursor,
    }))
}

/// Subscribe an endpoint to device events. It receives events from now on; the signing secret is
/// in this response only.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    request_body = NewWebhookRequest,
    responses(
        (status = 201, description = "Created; store the secret now", body = CreatedWebhook),
        (status = 422, description = "Invalid name, URL or event kinds", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_webhook(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<NewWebhookRequest>,
) -> Result<Response, ApiError> {
    let (w, secret) = state
        .core
        .webhooks
        .create(
            &who,
            WebhookRequest {
                name: body.name,
                url: body.url,
                events: body.events,
                enabled: body.enabled,
            },
        )
        .await?;
    let note = AuditNote {
        target: Some(w.id.to_string()),
        details: Some(format!("{} {}", w.url, w.kinds.names().join(","))),
    };
    let body = CreatedWebhook {
        secret: secret.expose().to_owned(),
        info: WebhookView::from(&w),
    };
    Ok((StatusCode::CREATED, Extension(note), axum::Json(body)).into_response())
}

/// One subscription and its delivery state.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The subscription", body = WebhookView),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_webhook(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookView>, ApiError> {
    Ok(axum::Json(WebhookView::from(&state.core.webhooks.get(&id).await?)))
}

/// Delete a subscription with its delivery log; nothing more is sent to it.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_webhook(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = state.core.webhooks.delete(&id).await?;
    let note = AuditNote {
        target: Some(id.to_string()),
        details: None,
    };
    Ok((StatusCode::NO_CONTENT, Extension(note)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookUpdate {
    /// false pauses deliveries; events keep accumulating and are delivered, in order, on resume.
    pub enabled: bool,
}

/// Pause or resume a subscription.
#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    request_body = WebhookUpdate,
    responses(
        (status = 200, description = "The subscription", body = WebhookView),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_webhook(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WebhookUpdate>,
) -> Result<Response, ApiError> {
    let w = state.core.webhooks.set_enabled(&id, body.enabled).await?;
    let note = AuditNote {
        target: Some(w.id.to_string()),
        details: Some(if body.enabled { "enabled" } else { "disabled" }.into()),
    };
    Ok((Extension(note), axum::Json(WebhookView::from(&w))).into_response())
}

/// A subscription's delivery log (every attempt), newest first.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id"), PageQuery),
    responses(
        (status = 200, description = "A page of delivery attempts", body = WebhookDeliveryPage),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_webhook_deliveries(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<WebhookDeliveryPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    let before = match q.cursor.as_deref() {
        Some(c) => Some(decode_cursor::<DeliveryCursor>(c)?.before),
        None => None,
    };
    let (_, rows, more) = state.core.webhooks.deliveries(&id, before, limit).await?;
    let next_cursor = match (more, rows.last()) {
        (true, Some(last)) => Some(encode_cursor(&DeliveryCursor { before: last.id })),
        _ => None,
    };
    Ok(axum::Json(WebhookDeliveryPage {
        items: rows.into_iter().map(WebhookDeliveryView::from).collect(),
        next_cursor,
    }))
}

/// Queue a `ping` to the endpoint. It goes out before the next event, and at once even if an event
/// is waiting for a retry (which follows right after).
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/test",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 202, description = "Ping queued", body = QueuedPing),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn test_webhook(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (w, ping) = state.core.webhooks.ping(&id).await?;
    let note = AuditNote {
        target: Some(w.id.to_string()),
        details: None,
    };
    let body = QueuedPing {
        delivery_id: format!("{}-ping-{}", w.id, ping.id),
    };
    Ok((StatusCode::ACCEPTED, Extension(note), axum::Json(body)).into_response())
}
