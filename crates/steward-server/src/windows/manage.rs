//! `POST /ManagementServer/MDM.svc`: the OMA-DM endpoint (MS-MDM). The device is identified only by
//! its TLS client certificate, issued by our CA and bound to its enrollment; the SyncHdr Source must
//! name the same DeviceID or the request is refused before anything of any queue is read.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use steward_core::*;
use steward_windows_proto::syncml;
use time::OffsetDateTime;

use super::{inventory, session};
use crate::AppState;
use crate::http_util::{BodyError, read_body};
use crate::listener::ConnInfo;

pub const SYNCML_CONTENT_TYPE: &str = "application/vnd.syncml.dm+xml";

/// The facts processing a message consults (inventory freshness, the poll interval the device
/// confirmed); the management context reads only these, not the whole inventory.
const CONTEXT_FACTS: &[&str] = &[inventory::COLLECTED_AT, session::POLL_FACT];

/// The one error type of the management surface. These are transport-level refusals (no SyncML
/// answer can be trusted or addressed); each is logged once here.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    #[error("a client certificate issued by this server is required")]
    NoCertificate,
    #[error("the client certificate does not belong to any enrollment")]
    UnknownCertificate,
    #[error("the enrollment is {0}")]
    NotActive(&'static str),
    #[error("SyncHdr Source {claimed:?} does not match the certificate's device")]
    SourceMismatch { claimed: String },
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("malformed SyncML: {0}")]
    BadMessage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ManagementError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::NoCertificate => StatusCode::UNAUTHORIZED,
            Self::UnknownCertificate | Self::NotActive(_) | Self::SourceMismatch { .. } => StatusCode::FORBIDDEN,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadMessage(_) => StatusCode::BAD_REQUEST,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "management request failed");
        } else {
            tracing::info!(error = %self, "management request refused");
        }
        (
            status,
            [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.to_string(),
        )
            .into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ManagementError {
    ManagementError::Internal(e.to_string())
}

pub async fn management(
    State(state): State<AppState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ManagementError> {
    let cert = super::client_certificate(&state, conn.as_ref().map(|Extension(c)| c), &headers);
    let now = OffsetDateTime::now_utc();
    // With a certificate the enrollment is known (and refused if unknown) before the body is read;
    // the same single read brings everything else processing the message needs.
    let by_cert = match &cert {
        Some(der) => {
            let thumbprint = steward_pki::sha1_thumbprint(der);
            let ctx = state
                .store
                .management_context(EnrollmentKey::Certificate(&thumbprint), CONTEXT_FACTS, now)
                .await
                .map_err(internal)?
                .ok_or(ManagementError::UnknownCertificate)?;
            if ctx.enrollment.state != EnrollmentState::Active {
                return Err(ManagementError::NotActive(ctx.enrollment.state.as_str()));
            }
            Some((ctx, thumbprint))
        }
        None if state.config.management.md5_auth => None,
        None => return Err(ManagementError::NoCertificate),
    };

    let bytes = read_body(&headers, body, state.config.limits.management_body_bytes)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(n) => ManagementError::TooLarge(n),
            BodyError::Read(m) => ManagementError::BadMessage(m),
        })?;
    let msg = syncml::parse_bytes(&bytes).map_err(|e| ManagementError::BadMessage(e.to_string()))?;
    let claimed = msg
        .header
        .source
        .as_ref()
        .map(|s| s.loc_uri.as_str())
        .unwrap_or_default();
    let management_url = format!("{}{}", state.config.public_url(), super::MANAGEMENT_URL_PATH);

    let (ctx, thumbprint) = match by_cert {
        Some(found) => found,
        None => match md5_authenticate(&state, &msg, claimed, &management_url).await? {
            Md5Outcome::Authenticated(e) => {
                let ctx = state
                    .store
                    .management_context(EnrollmentKey::Id(e.id), CONTEXT_FACTS, now)
                    .await
                    .map_err(internal)?
                    .ok_or(ManagementError::NoCertificate)?;
                (ctx, String::new())
            }
            Md5Outcome::Challenged(answer) => return Ok(syncml_ok(answer)),
        },
    };
    let ManagementContext {
        enrollment,
        previous_certificate,
        session: previous,
        facts,
        open,
        overdue,
    } = ctx;
    if !claimed.eq_ignore_ascii_case(enrollment.device_id.as_str()) {
        tracing::warn!(device.id = %enrollment.device_id, claimed, "device presented another device's LocURI");
        return Err(ManagementError::SourceMismatch {
            claimed: claimed.to_owned(),
        });
    }
    let raw = String::from_utf8_lossy(&bytes);
    let request_hash = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes));

    if let Some(p) = &previous
        && p.session_id == msg.header.session_id
        && p.client_msg_id == msg.header.msg_id
        && p.last_request_hash == request_hash
    {
        // The same message again (a retry after a lost answer): answer exactly as before, record nothing twice.
        tracing::debug!(device.id = %enrollment.device_id, "replaying answer to a repeated message");
        return Ok(syncml_ok(p.last_response.clone()));
    }

    let new_session = previous
        .as_ref()
        .is_none_or(|p| p.session_id != msg.header.session_id || msg.header.msg_id == 1);
    let open = if new_session && schedule_inventory(&state, &enrollment, &facts, &open, now).await? {
        // The inventory Get was just queued: read the queue again so it goes out in this session.
        state
            .store
            .deliverable_commands(enrollment.id, now)
            .await
            .map_err(internal)?
    } else {
        open
    };
    let e = &state.config.enrollment;
    let poll = session::PollPolicy {
        provider_id: e.provider_id.clone(),
        steady_minutes: e.poll_interval_minutes,
        fast_minutes: e.poll_first_interval_minutes,
        current_minutes: facts
            .iter()
            .find(|f| f.name == session::POLL_FACT)
            .and_then(|f| f.value.parse().ok()),
    };
    let by_md5 = thumbprint.is_empty();
    let mut out = session::process(session::SessionInput {
        msg: &msg,
        raw: &raw,
        request_hash,
        enrollment: &enrollment,
        management_url: &management_url,
        previous: previous.as_ref(),
        open_commands: &open,
        new_key: uuid::Uuid::new_v4().to_string(),
        // OMA-DM: 212 = authenticated by Cred; the nonce rotates on every MD5-authenticated message.
        header_code: if by_md5 { 212 } else { 200 },
        next_nonce: if by_md5 { super::md5::new_nonce() } else { None },
        poll,
    });
    out.commit.retire_previous_certificate =
        previous_certificate && !by_md5 && thumbprint == enrollment.cert_thumbprint;
    out.commit.expire_overdue = overdue;
    // Durable before the device sees it: if this fails the device gets an error and nothing was
    // marked sent or recorded, so the same work happens again on its retry.
    state
        .store
        .commit_session_message(enrollment.id, &out.commit, now)
        .await
        .map_err(internal)?;
    if let Some((new_state, reason)) = &out.commit.new_state {
        tracing::info!(device.id = %enrollment.device_id, state = new_state.as_str(), reason, "enrollment ended");
    }
    tracing::debug!(
        device.id = %enrollment.device_id,
        session = %msg.header.session_id,
        msg = msg.header.msg_id,
        outcomes = out.commit.outcomes.len(),
        sent = out.commit.sent.len(),
        ends = out.ends_session,
        "management message"
    );
    Ok(syncml_ok(out.commit.session.last_response))
}

enum Md5Outcome {
    Authenticated(Box<Enrollment>),
    /// Our SyncML answer: a SyncHdr Status 401/407 with a fresh nonce.
    Challenged(String),
}

/// `syncml:auth-md5` for sessions without a client certificate (`management.md5_auth`): the SyncHdr
/// Source names the device, whose Cred must prove the secret provisioned at enrollment against the
/// last nonce we gave it. Otherwise the device is challenged (OMA-DM Security §5.3).
async fn md5_authenticate(
    state: &AppState,
    msg: &syncml::SyncMl,
    claimed: &str,
    management_url: &str,
) -> Result<Md5Outcome, ManagementError> {
    let device_id = DeviceId::parse(claimed).ok_or(ManagementError::NoCertificate)?;
    let e = state
        .store
        .active_enrollment_by_device_id(&device_id)
        .await
        .map_err(internal)?
        .ok_or(ManagementError::NoCertificate)?;
    let key = state
        .store
        .md5_credential(e.id)
        .await
        .map_err(internal)?
        .ok_or(ManagementError::NoCertificate)?;
    let previous = state.store.session_state(e.id).await.map_err(internal)?;
    let cred = msg.header.cred.as_ref().filter(|c| {
        c.meta
            .as_ref()
            .and_then(|m| m.type_.as_deref())
            .is_none_or(|t| t == super::md5::AUTH_MD5)
    });
    let nonce = previous.as_ref().and_then(|p| p.md5_nonce.as_deref());
    if let (Some(c), Some(n)) = (cred, nonce)
        && super::md5::verify(&key, n, &c.data)
    {
        return Ok(Md5Outcome::Authenticated(Box::new(e)));
    }
    let next = super::md5::new_nonce().ok_or_else(|| internal("random generator failed"))?;
    let code = if cred.is_some() { 401 } else { 407 };
    let answer = syncml::write(&session::challenge(
        msg,
        e.device_id.as_str(),
        management_url,
        code,
        &next,
    ));
    let mut session = previous.unwrap_or_default();
    session.md5_nonce = Some(next);
    // A challenge is never replayed as a duplicate answer.
    session.last_request_hash = String::new();
    let commit = SessionCommit {
        session,
        ..Default::default()
    };
    state
        .store
        .commit_session_message(e.id, &commit, OffsetDateTime::now_utc())
        .await
        .map_err(internal)?;
    tracing::info!(device.id = %e.device_id, code, "syncml:auth-md5 challenge");
    Ok(Md5Outcome::Challenged(answer))
}

fn syncml_ok(body: String) -> Response {
    ([(http::header::CONTENT_TYPE, SYNCML_CONTENT_TYPE)], body).into_response()
}

/// Queues an inventory Get at the start of a session when the last one is older than the configured
/// interval (or never came) and none is already waiting in `open` (the deliverable queue). Returns
/// whether it queued one.
async fn schedule_inventory(
    state: &AppState,
    e: &Enrollment,
    facts: &[DeviceFact],
    open: &[Command],
    now: OffsetDateTime,
) -> Result<bool, ManagementError> {
    let interval = time::Duration::hours(i64::from(state.config.enrollment.inventory_interval_hours));
    let fresh = facts
        .iter()
        .any(|f| f.name == inventory::COLLECTED_AT && now - f.updated_at < interval);
    if fresh {
        return Ok(false);
    }
    if open.iter().any(|c| c.origin == inventory::ORIGIN) {
        return Ok(false);
    }
    state
        .store
        .enqueue_commands(&[NewCommand {
            id: CommandId::new(),
            enrollment_id: e.id,
            payload: inventory::inventory_command(),
            priority: -10,
            origin: inventory::ORIGIN.to_owned(),
            created_at: now,
            expires_at: Some(now + interval),
        }])
        .await
        .map_err(internal)?;
    Ok(true)
}
