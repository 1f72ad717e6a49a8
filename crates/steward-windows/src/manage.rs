//! `POST /ManagementServer/MDM.svc`: the OMA-DM endpoint (MS-MDM). The device is identified by its
//! TLS client certificate, issued by our CA and bound to its enrollment (or, when enabled, by
//! `syncml:auth-md5`); the SyncHdr Source must name the same DeviceID or the request is refused
//! before anything of any queue is read.
//!
//! One message is one read ([`steward_core::CheckinStore::checkin_context`]), one pure step
//! ([`session::process`]) and one write ([`steward_core::CheckinStore::commit_checkin`]).

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use steward_core::*;
use steward_http::{BodyError, ConnInfo, read_body};
use steward_windows_proto::syncml;
use time::OffsetDateTime;

use crate::session::{self, OmaDmSession};
use crate::{WindowsState, md5};

pub const SYNCML_CONTENT_TYPE: &str = "application/vnd.syncml.dm+xml";

/// Seconds a device is told to wait when the database is unavailable.
const RETRY_AFTER_SECONDS: u32 = 5;

/// The facts processing a message consults (inventory freshness, the poll interval the device
/// confirmed); the check-in context reads only these, not the whole inventory.
const CONTEXT_FACTS: &[FactName] = &[facts::INVENTORY_COLLECTED_AT, facts::POLL_INTERVAL_MINUTES];

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
    /// Retryable: the database cannot serve the request now.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Retryable: too many large messages are being parsed at once.
    #[error("{0}")]
    Busy(String),
    /// Retryable: this device already has as many requests in flight as it may
    /// (`limits.sessions_per_device`).
    #[error("device {0} already has {1} management request(s) in flight")]
    DeviceBusy(String, usize),
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
            Self::Unavailable(_) | Self::Busy(_) | Self::DeviceBusy(..) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let text = |body: String| {
            (
                status,
                [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                body,
            )
        };
        match &self {
            // The device's own excess: retryable, logged at warn (not an error of ours).
            Self::DeviceBusy(..) => {
                tracing::warn!(error = %self, "management request refused as retryable");
                let mut response =
                    text("this device already has a request in progress; try again shortly".into()).into_response();
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, http::HeaderValue::from(RETRY_AFTER_SECONDS));
                response
            }
            // Internal details stay in the log, under a trace id the device gets.
            Self::Unavailable(_) | Self::Busy(_) | Self::Internal(_) => {
                let trace_id = uuid::Uuid::new_v4().to_string();
                tracing::error!(trace_id, error = %self, "management request failed");
                let retryable = matches!(self, Self::Unavailable(_) | Self::Busy(_));
                let body = if retryable {
                    format!("service temporarily unavailable; try again shortly (trace id {trace_id})")
                } else {
                    format!("internal error (trace id {trace_id})")
                };
                let mut response = text(body).into_response();
                if retryable {
                    response
                        .headers_mut()
                        .insert(http::header::RETRY_AFTER, http::HeaderValue::from(RETRY_AFTER_SECONDS));
                }
                response
            }
            _ => {
                tracing::info!(error = %self, "management request refused");
                text(self.to_string()).into_response()
            }
        }
    }
}

fn store_error(e: StoreError) -> ManagementError {
    match e {
        StoreError::Unavailable(m) => ManagementError::Unavailable(m),
        other => ManagementError::Internal(other.to_string()),
    }
}

/// How the device proved who it is.
enum Authenticated {
    /// Its TLS client certificate (or the one a trusted proxy forwarded), with this thumbprint.
    Certificate(Thumbprint),
    /// `syncml:auth-md5` Cred against the nonce we gave it; the NextNonce for its next session
    /// when this message started a session with it.
    Md5 { next_nonce: Option<String> },
}

pub async fn management(
    State(state): State<WindowsState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ManagementError> {
    let settings = &state.settings;
    let cert =
        steward_http::client_certificate(&settings.forwarded_cert, conn.as_ref().map(|Extension(c)| c), &headers);
    let now = state.core.now();
    // With a certificate the enrollment is known (and refused if unknown) before the body is read;
    // the same single read brings everything else processing the message needs.
    let by_cert = match &cert {
        Some(der) => {
            let thumbprint = Thumbprint::of_der(der);
            let ctx = state
                .core
                .store
                .checkin_context(EnrollmentKey::Certificate(&thumbprint), CONTEXT_FACTS, now)
                .await
                .map_err(store_error)?
                .ok_or(ManagementError::UnknownCertificate)?;
            if ctx.enrollment.state != EnrollmentState::Active {
                return Err(ManagementError::NotActive(ctx.enrollment.state.as_str()));
            }
            Some((ctx, thumbprint))
        }
        None if settings.md5_auth => None,
        None => return Err(ManagementError::NoCertificate),
    };
    // Known by its certificate: admitted (or not) before its body is read, so a device flooding
    // its own endpoint holds at most `sessions_per_device` bodies and parses.
    let enter = |e: &Enrollment| {
        state
            .device_sessions
            .try_enter(e.id)
            .ok_or_else(|| ManagementError::DeviceBusy(e.device_id.to_string(), settings.sessions_per_device))
    };
    let mut slot = match &by_cert {
        Some((ctx, _)) => Some(enter(&ctx.enrollment)?),
        None => None,
    };

    let bytes = read_body(&headers, body, settings.management_body_bytes)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(n) => ManagementError::TooLarge(n),
            BodyError::Read(m) => ManagementError::BadMessage(m),
        })?;
    // Large messages are parsed off the async workers (crate::parse).
    let body = bytes.clone();
    let msg = crate::parse::off_workers(&state.parsers.management, bytes.len(), move || {
        syncml::parse_bytes(&body)
    })
    .await
    .map_err(|e| match e {
        crate::parse::ParseRefused::Busy => ManagementError::Busy(e.to_string()),
        other => ManagementError::Internal(other.to_string()),
    })?
    .map_err(|e| ManagementError::BadMessage(e.to_string()))?;
    let claimed = msg
        .header
        .source
        .as_ref()
        .map(|s| s.loc_uri.as_str())
        .unwrap_or_default();
    let management_url = state.management_url();

    let (ctx, auth) = match by_cert {
        Some((ctx, thumbprint)) => (ctx, Authenticated::Certificate(thumbprint)),
        None => match md5_authenticate(&state, &msg, claimed, &management_url, now).await? {
            Md5Outcome::Authenticated(ctx, next_nonce) => (*ctx, Authenticated::Md5 { next_nonce }),
            Md5Outcome::Challenged(answer) => return Ok(syncml_ok(answer)),
        },
    };
    if slot.is_none() {
        slot = Some(enter(&ctx.enrollment)?);
    }
    let _slot = slot;
    // Two messages of one device processed at once (a retry racing the original, or two
    // replicas), or a cancel committing while the answer was built, make the commit stale: it is
    // refused whole and the message is processed again on a fresh context, which then sees what
    // the other commit did (an exact repeat is replayed). A few rounds settle any real race; more
    // means something keeps changing, and the device is told to retry.
    let mut ctx = ctx;
    for _ in 0..STALE_RETRIES {
        let enrollment_id = ctx.enrollment.id;
        match answer(&state, &msg, &bytes, claimed, &management_url, ctx, &auth, now).await? {
            Attempt::Answered(response) => return Ok(response),
            Attempt::Stale(what) => {
                tracing::debug!(enrollment.id = %enrollment_id, what, "check-in commit was stale; processing the message again");
                ctx = state
                    .core
                    .store
                    .checkin_context(EnrollmentKey::Id(enrollment_id), CONTEXT_FACTS, now)
                    .await
                    .map_err(store_error)?
                    .ok_or(ManagementError::UnknownCertificate)?;
                if ctx.enrollment.state != EnrollmentState::Active {
                    return Err(ManagementError::NotActive(ctx.enrollment.state.as_str()));
                }
            }
        }
    }
    Err(ManagementError::Unavailable(
        "the device's session kept changing while this message was processed".into(),
    ))
}

/// How many times one message is processed again after a stale commit before the device is told
/// to retry later.
const STALE_RETRIES: usize = 4;

/// What one processing round of a message came to.
enum Attempt {
    /// The answer, committed.
    Answered(Response),
    /// The commit was refused as stale ([`StoreError::Stale`]): nothing was written.
    Stale(String),
}

/// One processing round: the exact-repeat check, the session step and the commit, on `ctx`.
#[allow(clippy::too_many_arguments)]
async fn answer(
    state: &WindowsState,
    msg: &syncml::SyncMl,
    bytes: &[u8],
    claimed: &str,
    management_url: &str,
    ctx: CheckinContext,
    auth: &Authenticated,
    now: OffsetDateTime,
) -> Result<Attempt, ManagementError> {
    let settings = &state.settings;
    let CheckinContext {
        enrollment,
        session_credential: _,
        session: previous,
        facts,
        open,
        awaiting,
        overdue,
        configuration,
    } = ctx;
    if !claimed.eq_ignore_ascii_case(enrollment.device_id.as_str()) {
        tracing::warn!(device.id = %enrollment.device_id, claimed, "device presented another device's LocURI");
        return Err(ManagementError::SourceMismatch {
            claimed: claimed.to_owned(),
        });
    }
    let raw = String::from_utf8_lossy(bytes);
    let request_hash = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes));

    if let Some(answer) = session::replay(previous.as_ref(), msg, &request_hash) {
        // The same message again (a retry after a lost answer): answer exactly as before, record nothing twice.
        tracing::debug!(device.id = %enrollment.device_id, "replaying answer to a repeated message");
        return Ok(Attempt::Answered(syncml_ok(answer.to_owned())));
    }

    let fact = |name: &FactName| facts.iter().find(|f| f.name == *name);
    let poll = session::PollPolicy {
        provider_id: settings.provider_id.clone(),
        steady_minutes: settings.poll_interval_minutes,
        fast_minutes: settings.poll_first_interval_minutes,
        current_minutes: fact(&facts::POLL_INTERVAL_MINUTES).and_then(|f| f.value.parse().ok()),
    };
    let inventory = session::InventoryPolicy {
        interval: time::Duration::hours(i64::from(settings.inventory_interval_hours)),
        collected_at: fact(&facts::INVENTORY_COLLECTED_AT).map(|f| f.updated_at),
        command_id: CommandId::new(),
    };
    let md5_next_nonce = match auth {
        Authenticated::Md5 { next_nonce } => Some(next_nonce.clone()),
        Authenticated::Certificate(_) => None,
    };
    // The device's configuration, when the context loaded it (a settled device costs nothing
    // here): its operations go to the engine as open commands and come back out of the commit.
    let mut open = open;
    let mut configuration = configuration;
    if let Some(loaded) = configuration.loaded.as_mut()
        && loaded.asks_lock()
    {
        // A profile asks for ConfigLock: whether this device supports it, from the facts the
        // store loaded with the configuration (DEVICE_LOCK_FACTS).
        loaded.lock = Some(crate::config_lock::device_lock(
            &settings.provider_id,
            &loaded.dynamic.facts,
        ));
    }
    let reconciliation = crate::reconcile::Reconciliation::prepare(&enrollment, &configuration, now).map(|mut r| {
        open.extend(r.take_commands());
        r
    });
    let retire_previous_certificate = enrollment.previous_cert.is_some()
        && matches!(auth, Authenticated::Certificate(t) if *t == enrollment.cert_thumbprint);
    let mut out = session::process(session::SessionInput {
        msg,
        raw: &raw,
        request_hash,
        enrollment: &enrollment,
        management_url,
        previous: previous.as_ref(),
        open_commands: &open,
        awaiting: &awaiting,
        new_key: uuid::Uuid::new_v4().to_string(),
        // syncml:auth-md5 (interop review M-3): 200, not 212 — after a 212 Windows sends no Cred for
        // the rest of the session (OMADM-LRN), which we would have to trust on the SessionID alone;
        // after a 200 it "must" send the same credential again, which we verify. A new nonce
        // (for the next session) goes out only when the message was verified against the current
        // one; see md5_authenticate.
        header_code: 200,
        next_nonce: md5_next_nonce.flatten(),
        poll,
        inventory,
        now,
        retire_previous_certificate,
        expire_overdue: overdue,
        max_device_commands: settings.device_commands_per_message,
    });
    if let Some(r) = reconciliation {
        let policy = VerifyPolicy {
            interval: time::Duration::hours(i64::from(settings.verify_interval_hours)),
        };
        r.finish(msg, &mut out.commit, &policy, now);
    }
    // The commit applies only over the session record this round read.
    out.commit.session_read = SessionPrecondition::of(previous.as_ref());
    // Durable before the device sees it: if this fails the device gets an error and nothing was
    // marked sent or recorded, so the same work happens again on its retry.
    match state.core.store.commit_checkin(enrollment.id, &out.commit, now).await {
        Ok(()) => {}
        Err(StoreError::Stale(what)) => return Ok(Attempt::Stale(what)),
        Err(e) => return Err(store_error(e)),
    }
    if let Some(end) = &out.commit.end_enrollment {
        tracing::info!(device.id = %enrollment.device_id, state = end.state.as_str(), reason = %end.reason, "enrollment ended");
    }
    tracing::debug!(
        device.id = %enrollment.device_id,
        session = %msg.header.session_id,
        msg = msg.header.msg_id,
        outcomes = out.commit.outcomes.len(),
        sent = out.commit.sent.len(),
        queued = out.commit.enqueue.len(),
        ends = out.ends_session,
        "management message"
    );
    Ok(Attempt::Answered(syncml_ok(out.commit.session.last_response)))
}

enum Md5Outcome {
    /// The check-in context of the device's active enrollment, and the NextNonce to hand out.
    Authenticated(Box<CheckinContext>, Option<String>),
    /// Our SyncML answer: a SyncHdr Status 401/407 with a fresh nonce.
    Challenged(String),
}

/// `syncml:auth-md5` for sessions without a client certificate (`md5_auth`): the SyncHdr Source
/// names the device, whose Cred must prove the secret provisioned at enrollment against the last
/// nonce we gave it. Otherwise the device is challenged (OMA-DM Security §5.3). The one check-in
/// context read serves both the check and the message.
async fn md5_authenticate(
    state: &WindowsState,
    msg: &syncml::SyncMl,
    claimed: &str,
    management_url: &str,
    now: OffsetDateTime,
) -> Result<Md5Outcome, ManagementError> {
    let device_id = DeviceId::parse(claimed).ok_or(ManagementError::NoCertificate)?;
    let ctx = state
        .core
        .store
        .checkin_context(EnrollmentKey::ActiveDevice(&device_id), CONTEXT_FACTS, now)
        .await
        .map_err(store_error)?
        .filter(|c| c.enrollment.state == EnrollmentState::Active)
        .ok_or(ManagementError::NoCertificate)?;
    let (key, initial_nonce) = md5::split_credential(
        ctx.session_credential
            .as_deref()
            .ok_or(ManagementError::NoCertificate)?,
    );
    let cred = msg.header.cred.as_ref().filter(|c| {
        c.meta
            .as_ref()
            .and_then(|m| m.type_.as_deref())
            .is_none_or(|t| t == md5::AUTH_MD5)
    });
    let session_state = ctx.session.as_ref().and_then(OmaDmSession::from_record);
    // The nonce we last gave the device, or before any, the one provisioned as APPSRV AAUTHDATA.
    let stored = session_state.as_ref().and_then(|s| s.md5_nonce.clone());
    let nonce = stored.clone().or_else(|| initial_nonce.map(str::to_owned));
    if let Some(c) = cred {
        // A Cred built from the current nonce (a session's first message, or a device that
        // switched to the NextNonce at once): accepted, and the next session gets a fresh nonce.
        if let Some(n) = &nonce
            && md5::verify(key, n, &c.data)
        {
            let next = md5::next_session_nonce(key, n);
            return Ok(Md5Outcome::Authenticated(Box::new(ctx), next));
        }
        // A later message of the same session repeating the Cred it started with (OMADM-LRN: after
        // a 200 "the same credential must be sent within the next request"), or a retry of the
        // last one (then answered as before by the replay check).
        let continues = session_state
            .as_ref()
            .is_some_and(|s| s.session_id == msg.header.session_id && msg.header.msg_id >= s.client_msg_id);
        if continues && stored.as_deref().is_some_and(|n| md5::verify_session_cred(n, &c.data)) {
            return Ok(Md5Outcome::Authenticated(Box::new(ctx), None));
        }
    }
    let next = md5::new_nonce().ok_or_else(|| ManagementError::Internal("random generator failed".into()))?;
    let code = if cred.is_some() { 401 } else { 407 };
    let answer = syncml::write(&session::challenge(
        msg,
        ctx.enrollment.device_id.as_str(),
        management_url,
        code,
        &next,
    ));
    let commit = CheckinCommit {
        session: session::challenged(ctx.session.as_ref(), next),
        ..Default::default()
    };
    state
        .core
        .store
        .commit_checkin(ctx.enrollment.id, &commit, now)
        .await
        .map_err(store_error)?;
    tracing::info!(device.id = %ctx.enrollment.device_id, code, "syncml:auth-md5 challenge");
    Ok(Md5Outcome::Challenged(answer))
}

fn syncml_ok(body: String) -> Response {
    ([(http::header::CONTENT_TYPE, SYNCML_CONTENT_TYPE)], body).into_response()
}
