//! The hash-chained audit log.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use steward_core::*;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::api_tokens::RoleName;
use crate::error::{ApiError, ApiQuery, Problem};
use crate::{check_limit, decode_cursor, encode_cursor};

/// One audit event with its place in the hash chain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    State(state): State<ApiState>,
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
    let mut rows = state.core.store.audit_events(&filter, after, limit + 1).await?;
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
