//! Console sign-in: argon2 passwords of users with a console role, sessions in a `__Host-` cookie
//! (Secure, HttpOnly, SameSite=Strict; a random 256-bit id of which only the SHA-256 is stored),
//! idle and absolute expiry, a per-session CSRF token on every POST, an in-memory login rate
//! limiter, and the TOTP second factor (RFC 6238).
//!
//! Sign-in is staged: a right password gives a *pending* session (5 minutes, reaching only the
//! second-factor page) whenever the user has a confirmed TOTP seed or the configuration requires
//! one; the right code replaces it with a full session under a new id, so nothing learned about
//! the pending cookie carries over. Users without a seed set it up on that page at their first
//! sign-in (`console.require_totp`, the default).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Extension, Form, FromRequest, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use maud::html;
use serde::Deserialize;
use steward_core::totp::TotpSecret;
use steward_core::*;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{ConsoleCtx, error_page, layout, page, see_other};
use crate::AppState;
use crate::api::Principal;
use crate::listener::ConnInfo;

/// `__Host-`: the browser only accepts it with Secure, Path=/ and no Domain, so no sibling host or
/// plain-HTTP page can plant or overwrite it.
pub const COOKIE_NAME: &str = "__Host-steward_session";
/// A session ends after this long without a request…
pub const IDLE_TIMEOUT: time::Duration = time::Duration::minutes(30);
/// …and after this long in any case.
pub const ABSOLUTE_TIMEOUT: time::Duration = time::Duration::hours(12);
/// `last_seen_at` is written at most this often per session: every page view would otherwise be
/// a write on SQLite's single writer.
const TOUCH_INTERVAL: time::Duration = time::Duration::seconds(60);
/// How long the second-factor step may take after the password.
const PENDING_TIMEOUT: time::Duration = time::Duration::minutes(5);
/// Largest form body a console POST may send.
const MAX_FORM_BYTES: usize = 64 * 1024;

// ---------------------------------------------------------------- rate limiting

/// Failed sign-ins counted per source IP and per e-mail in fixed windows, in memory: restarting
/// the server resets it, and several server processes would each count on their own (documented
/// in docs/OPERATIONS.md). Enough to make online password guessing slow.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

const LIMIT_WINDOW: Duration = Duration::from_secs(15 * 60);
const MAX_FAILURES_PER_USER: u32 = 5;
const MAX_FAILURES_PER_IP: u32 = 20;
/// Bound on tracked keys: past it, expired entries are dropped, then the oldest.
const MAX_TRACKED: usize = 10_000;

impl LoginLimiter {
    fn limit_of(key: &str) -> u32 {
        if key.starts_with("user:") {
            MAX_FAILURES_PER_USER
        } else {
            MAX_FAILURES_PER_IP
        }
    }

    /// Whether any of the keys has used up its failures in the current window.
    pub fn blocked(&self, keys: &[String]) -> bool {
        let Ok(map) = self.failures.lock() else { return true };
        keys.iter().any(|k| {
            map.get(k)
                .is_some_and(|(n, since)| since.elapsed() < LIMIT_WINDOW && *n >= Self::limit_of(k))
        })
    }

    pub fn record_failure(&self, keys: &[String]) {
        let Ok(mut map) = self.failures.lock() else { return };
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, since)| since.elapsed() < LIMIT_WINDOW);
            while map.len() >= MAX_TRACKED {
                let Some(oldest) = map.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| k.clone()) else {
                    break;
                };
                map.remove(&oldest);
            }
        }
        for k in keys {
            let e = map.entry(k.clone()).or_insert((0, Instant::now()));
            if e.1.elapsed() >= LIMIT_WINDOW {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        }
    }

    pub fn clear_user(&self, email: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&format!("user:{email}"));
        }
    }
}

// ---------------------------------------------------------------- cookies and CSRF

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The CSRF token of a session: derived from the session id (which only the browser's HttpOnly
/// cookie holds), so nothing more is stored and another site can neither read nor compute it.
pub(crate) fn csrf_for(session_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("steward-console-csrf\0{session_id}").as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

fn csrf_matches(expected: &str, given: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), given.as_bytes()).is_ok()
}

fn peer_of(req: &Request) -> Option<String> {
    req.extensions().get::<ConnInfo>().map(|c| c.peer.ip().to_string())
}

/// A cross-site POST carries an Origin of another site; refuse it even before the CSRF token
/// (defence in depth, and the only check the login form has).
fn foreign_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin != format!("https://{host}")
}

fn set_cookie(value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("__Host-steward_session=; Path=/; Secure; HttpOnly; Max-Age=0"))
}

fn to_login() -> Response {
    let mut r = see_other("/console/login");
    r.headers_mut().insert(header::SET_COOKIE, set_cookie("", 0));
    r
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// In front of every console route but the login page: resolves the session (expired or unknown →
/// back to the login page), and on POST checks the CSRF token in the form before any handler runs.
pub async fn require_session(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(id) = session_cookie(req.headers()) else {
        return to_login();
    };
    let id = Zeroizing::new(id);
    let hash = TokenHash::of(&id);
    let now = OffsetDateTime::now_utc();
    let (session, user) = match state.store.console_session(&hash).await {
        Ok(Some(s)) => s,
        Ok(None) => return to_login(),
        Err(e) => {
            tracing::error!(error = %e, "console session lookup failed");
            return error_page(None, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    if user.user.disabled || session.expires_at <= now || now - session.last_seen_at > IDLE_TIMEOUT {
        let _ = state.store.delete_console_session(&hash, now).await;
        return to_login();
    }
    if session.second_factor_pending {
        return see_other(SECOND_FACTOR_PATH);
    }
    if now - session.last_seen_at > TOUCH_INTERVAL
        && let Err(e) = state.store.touch_console_session(&hash, now).await
    {
        tracing::warn!(error = %e, "cannot record console session activity");
    }
    let ctx = ConsoleCtx {
        principal: Principal {
            name: format!("{} (console)", user.user.email),
            token_id: None,
            role: user.role,
            group: user.group,
        },
        email: user.user.email.clone(),
        user_id: user.user.id,
        totp_confirmed: user.totp.as_ref().is_some_and(UserTotp::confirmed),
        csrf: csrf_for(&id),
        peer: peer_of(&req),
    };

    let mut req = req;
    if req.method() == http::Method::POST {
        if foreign_origin(req.headers()) {
            return error_page(Some(&ctx), StatusCode::FORBIDDEN, "cross-site request refused");
        }
        // Buffer the form, check its token, and hand the same bytes on to the handler.
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => return error_page(Some(&ctx), StatusCode::PAYLOAD_TOO_LARGE, "form too large"),
        };
        let probe = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
        let given = Form::<CsrfField>::from_request(probe, &())
            .await
            .map(|f| f.0.csrf)
            .unwrap_or_default();
        if !csrf_matches(&ctx.csrf, &given) {
            return error_page(
                Some(&ctx),
                StatusCode::FORBIDDEN,
                "the form's security token is missing or stale: reload the page and try again",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(ctx);
    next.run(req).await
}

// ---------------------------------------------------------------- login and logout

fn login_form(error: Option<&str>, email: &str) -> maud::Markup {
    layout(
        None,
        "Sign in",
        "",
        html! {
            @if let Some(e) = error {
                p.error role="alert" #login-error { (e) }
            }
            form.login method="post" action="/console/login" {
                label for="email" { "E-mail" }
                input #email type="email" name="email" autocomplete="username" required value=(email);
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub async fn login_page() -> Response {
    page(StatusCode::OK, login_form(None, ""))
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: SecretString,
}

/// A valid Argon2 hash of nothing anyone knows, verified when the e-mail is unknown so that a
/// wrong e-mail takes as long as a wrong password (no user enumeration by timing).
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut pw = [0u8; 24];
        let _ = aws_lc_rs::rand::fill(&mut pw);
        steward_core::secret::hash_password(&hex::encode(pw)).unwrap_or_default()
    })
}

async fn audit_login(state: &AppState, email: &str, role: Option<Role>, peer: Option<String>, ok: bool) {
    audit_event(state, email, role, peer, "console.login", ok).await;
}

pub async fn login(
    State(state): State<AppState>,
    Extension(limiter): Extension<std::sync::Arc<LoginLimiter>>,
    req: Request,
) -> Response {
    let peer = peer_of(&req);
    if foreign_origin(req.headers()) {
        return error_page(None, StatusCode::FORBIDDEN, "cross-site request refused");
    }
    let Ok(Form(form)) = Form::<LoginForm>::from_request(req, &()).await else {
        return page(
            StatusCode::BAD_REQUEST,
            login_form(Some("Enter an e-mail address and a password."), ""),
        );
    };
    let email = form.email.trim().to_lowercase();
    let keys = [
        format!("ip:{}", peer.as_deref().unwrap_or("unknown")),
        format!("user:{email}"),
    ];
    if limiter.blocked(&keys) {
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            login_form(Some("Too many failed sign-ins. Wait 15 minutes and try again."), &email),
        );
    }
    let user = match state.store.console_user_by_email(&email).await {
        Ok(u) => u.filter(|u| !u.user.disabled),
        Err(e) => {
            tracing::error!(error = %e, "console user lookup failed");
            return error_page(None, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let phc = user
        .as_ref()
        .map_or_else(|| dummy_hash().to_owned(), |u| u.user.password_hash.clone());
    let password = form.password;
    // Argon2 is slow on purpose: keep it off the async workers.
    let verified =
        tokio::task::spawn_blocking(move || steward_core::secret::verify_password(password.expose(), &phc))
            .await
            .unwrap_or(false);
    let Some(user) = user.filter(|_| verified) else {
        limiter.record_failure(&keys);
        audit_login(&state, &email, None, peer, false).await;
        return page(
            StatusCode::UNAUTHORIZED,
            login_form(Some("Wrong e-mail or password."), &email),
        );
    };
    let second_factor_due = state.config.console.require_totp || user.totp.as_ref().is_some_and(UserTotp::confirmed);
    if second_factor_due {
        // The per-user failure count stays until the code is right too: password guesses and
        // code guesses share one budget.
        return start_session(&state, user.user.id, peer, true).await;
    }
    limiter.clear_user(&email);
    audit_login(&state, &email, Some(user.role), peer.clone(), true).await;
    start_session(&state, user.user.id, peer, false).await
}

/// Creates a session (pending the second factor, or full) and answers with its cookie and a
/// redirect to where it may go.
async fn start_session(state: &AppState, user: UserId, peer: Option<String>, pending: bool) -> Response {
    let mut raw = Zeroizing::new([0u8; 32]);
    if aws_lc_rs::rand::fill(raw.as_mut()).is_err() {
        return error_page(None, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    }
    let id = Zeroizing::new(URL_SAFE_NO_PAD.encode(raw.as_ref()));
    let now = OffsetDateTime::now_utc();
    let lifetime = if pending { PENDING_TIMEOUT } else { ABSOLUTE_TIMEOUT };
    let session = ConsoleSession {
        id_hash: TokenHash::of(&id),
        user_id: user,
        created_at: now,
        last_seen_at: now,
        expires_at: now + lifetime,
        source_ip: peer,
        second_factor_pending: pending,
    };
    if let Err(e) = state.store.create_console_session(&session).await {
        tracing::error!(error = %e, "cannot create console session");
        return error_page(None, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    }
    let mut r = see_other(if pending { SECOND_FACTOR_PATH } else { "/console" });
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&id, lifetime.whole_seconds()));
    r
}

// ---------------------------------------------------------------- second factor

pub const SECOND_FACTOR_PATH: &str = "/console/login/second-factor";

/// The AES-GCM label binding a sealed seed to its user: a sealed blob copied to another user's
/// row does not open.
fn totp_label(user: UserId) -> String {
    format!("totp:{user}")
}

pub(crate) fn seal_totp(state: &AppState, user: UserId, secret: &TotpSecret) -> Option<String> {
    state
        .pki
        .data_key
        .seal(&totp_label(user), secret.as_bytes())
        .map_err(|e| tracing::error!(error = %e, "cannot seal a TOTP seed"))
        .ok()
}

/// Opens a stored seed; None (logged) if it cannot be opened: wrong data key after a restore, or
/// a row edited by hand.
pub(crate) fn open_totp(state: &AppState, user: UserId, t: &UserTotp) -> Option<TotpSecret> {
    let bytes = state
        .pki
        .data_key
        .open(&totp_label(user), &t.sealed_secret)
        .map_err(|e| tracing::error!(%user, error = %e, "cannot open the TOTP seed"))
        .ok()?;
    TotpSecret::from_bytes(&bytes)
        .map_err(|e| tracing::error!(%user, error = %e, "the stored TOTP seed is unusable"))
        .ok()
}

/// The answer when a seed cannot be opened.
pub(crate) fn totp_unreadable(ctx: Option<&ConsoleCtx>) -> Response {
    error_page(
        ctx,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the second factor cannot be checked: ask an administrator to reset it (steward user reset-totp)",
    )
}

/// The issuer authenticator apps show next to the code: the server's name and host.
fn totp_issuer(state: &AppState) -> String {
    let host = state
        .config
        .public_url
        .as_deref()
        .and_then(|u| u.split("://").nth(1))
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or("localhost");
    format!("Steward {host}")
}

/// The QR code of an `otpauth://` URI as inline SVG (generated here, not user input).
pub(crate) fn qr_svg(data: &str) -> Option<maud::PreEscaped<String>> {
    let code = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    // Drop the XML declaration: the SVG is embedded in HTML.
    let svg = match svg.find("<svg") {
        Some(i) => svg[i..].to_owned(),
        None => svg,
    };
    Some(maud::PreEscaped(svg))
}

/// The set-up block: the seed as QR code and as text, for the authenticator app.
pub(crate) fn totp_setup_block(state: &AppState, email: &str, secret: &TotpSecret) -> maud::Markup {
    let uri = secret.otpauth_uri(&totp_issuer(state), email);
    let b32 = secret.to_base32();
    html! {
        p { "Scan this code with an authenticator app (Microsoft Authenticator, Google Authenticator, 1Password, FreeOTP…), or type the key in:" }
        @if let Some(svg) = qr_svg(&uri) {
            figure.qr role="img" aria-label="QR code of the authenticator key" { (svg) }
        }
        p { "Key: " code #totp-secret { (b32.as_str()) } }
        p.muted { "Time-based, 6 digits, every 30 seconds (SHA-1)." }
    }
}

fn second_factor_form(ctx_csrf: &str, setup: Option<maud::Markup>, error: Option<&str>) -> maud::Markup {
    let title = if setup.is_some() {
        "Set up two-step sign-in"
    } else {
        "Two-step sign-in"
    };
    layout(
        None,
        title,
        "",
        html! {
            @if let Some(e) = error {
                p.error role="alert" #login-error { (e) }
            }
            @if let Some(setup) = setup {
                p { "This server requires a second factor for the console. Set it up now; you will be asked for a code at every sign-in." }
                (setup)
            }
            form.login method="post" action=(SECOND_FACTOR_PATH) {
                input type="hidden" name="csrf" value=(ctx_csrf);
                label for="code" { "Code from your authenticator app" }
                input #code type="text" name="code" inputmode="numeric" pattern="[0-9 ]{6,7}" autocomplete="one-time-code" required autofocus;
                button type="submit" { "Verify" }
            }
            form method="post" action="/console/login/cancel" {
                input type="hidden" name="csrf" value=(ctx_csrf);
                button.link type="submit" { "Cancel and sign in again" }
            }
        },
    )
}

/// The pending session of the request, if it is still usable.
async fn pending_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Zeroizing<String>, ConsoleSession, ConsoleUser), Response> {
    let Some(id) = session_cookie(headers) else {
        return Err(to_login());
    };
    let id = Zeroizing::new(id);
    let hash = TokenHash::of(&id);
    let now = OffsetDateTime::now_utc();
    match state.store.console_session(&hash).await {
        Ok(Some((s, u))) if s.second_factor_pending && s.expires_at > now && !u.user.disabled => Ok((id, s, u)),
        Ok(Some((s, _))) if !s.second_factor_pending => Err(see_other("/console")),
        Ok(_) => {
            let _ = state.store.delete_console_session(&hash, now).await;
            Err(to_login())
        }
        Err(e) => {
            tracing::error!(error = %e, "console session lookup failed");
            Err(error_page(None, StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
        }
    }
}

/// The seed to set up: the unconfirmed one stored earlier (a reload shows the same QR code), or a
/// new one stored now. Used by the first sign-in and by the account page; `ctx` frames the error
/// page (None before the sign-in is complete).
pub(crate) async fn setup_secret(
    state: &AppState,
    user: &ConsoleUser,
    ctx: Option<&ConsoleCtx>,
) -> Result<TotpSecret, Response> {
    if let Some(t) = user.totp.as_ref().filter(|t| !t.confirmed()) {
        return open_totp(state, user.user.id, t).ok_or_else(|| totp_unreadable(ctx));
    }
    let internal = || error_page(ctx, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    let secret = TotpSecret::generate().map_err(|_| internal())?;
    let sealed = seal_totp(state, user.user.id, &secret).ok_or_else(internal)?;
    match state.store.set_user_totp(user.user.id, Some(&sealed)).await {
        Ok(_) => Ok(secret),
        Err(e) => {
            tracing::error!(error = %e, "cannot store a TOTP seed");
            Err(internal())
        }
    }
}

pub async fn second_factor_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (id, _, user) = match pending_session(&state, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let setup = if user.totp.as_ref().is_some_and(UserTotp::confirmed) {
        None
    } else {
        match setup_secret(&state, &user, None).await {
            Ok(secret) => Some(totp_setup_block(&state, &user.user.email, &secret)),
            Err(r) => return r,
        }
    };
    page(StatusCode::OK, second_factor_form(&csrf_for(&id), setup, None))
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

pub async fn second_factor(
    State(state): State<AppState>,
    Extension(limiter): Extension<std::sync::Arc<LoginLimiter>>,
    req: Request,
) -> Response {
    let peer = peer_of(&req);
    if foreign_origin(req.headers()) {
        return error_page(None, StatusCode::FORBIDDEN, "cross-site request refused");
    }
    let (id, session, user) = match pending_session(&state, req.headers()).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let csrf = csrf_for(&id);
    let Ok(Form(form)) = Form::<CodeForm>::from_request(req, &()).await else {
        return error_page(None, StatusCode::BAD_REQUEST, "enter the code");
    };
    if !csrf_matches(&csrf, &form.csrf) {
        return error_page(
            None,
            StatusCode::FORBIDDEN,
            "the form's security token is missing or stale",
        );
    }
    let email = user.user.email.clone();
    let keys = [
        format!("ip:{}", peer.as_deref().unwrap_or("unknown")),
        format!("user:{email}"),
    ];
    let now = OffsetDateTime::now_utc();
    let setting_up = !user.totp.as_ref().is_some_and(UserTotp::confirmed);
    let again = |error: &str, status: StatusCode, secret: Option<&TotpSecret>| {
        let setup = secret.map(|s| totp_setup_block(&state, &email, s));
        page(status, second_factor_form(&csrf, setup, Some(error)))
    };
    let Some(totp) = user.totp.as_ref() else {
        // The seed was reset meanwhile: show the set-up page again.
        return see_other(SECOND_FACTOR_PATH);
    };
    let Some(secret) = open_totp(&state, user.user.id, totp) else {
        return totp_unreadable(None);
    };
    let shown = setting_up.then_some(&secret);
    if limiter.blocked(&keys) {
        return again(
            "Too many failed attempts. Wait 15 minutes and try again.",
            StatusCode::TOO_MANY_REQUESTS,
            shown,
        );
    }
    let accepted = match secret.verify(&form.code, now, totp.last_step) {
        None => Ok(false),
        Some(step) if setting_up => state.store.confirm_user_totp(user.user.id, step, now).await,
        Some(step) => state.store.use_totp_step(user.user.id, step).await,
    };
    match accepted {
        Ok(true) => {}
        Ok(false) => {
            limiter.record_failure(&keys);
            audit_second_factor(&state, &email, user.role, peer, false).await;
            return again(
                "That code is not valid (or was already used). Enter the current code.",
                StatusCode::UNAUTHORIZED,
                shown,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record the TOTP step");
            return error_page(None, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    }
    limiter.clear_user(&email);
    // The pending session is spent; the full one gets a fresh id.
    if let Err(e) = state.store.delete_console_session(&session.id_hash, now).await {
        tracing::warn!(error = %e, "cannot delete the pending console session");
    }
    if setting_up {
        audit_event(
            &state,
            &email,
            Some(user.role),
            peer.clone(),
            "console.totp_enroll",
            true,
        )
        .await;
    }
    audit_login(&state, &email, Some(user.role), peer.clone(), true).await;
    start_session(&state, user.user.id, peer, false).await
}

/// Abandons a pending sign-in.
pub async fn cancel_second_factor(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        let id = Zeroizing::new(id);
        let _ = state
            .store
            .delete_console_session(&TokenHash::of(&id), OffsetDateTime::now_utc())
            .await;
    }
    to_login()
}

async fn audit_second_factor(state: &AppState, email: &str, role: Role, peer: Option<String>, ok: bool) {
    audit_event(state, email, Some(role), peer, "console.second_factor", ok).await;
}

/// A console sign-in step in the audit log (success answers 303, failure 401).
pub(crate) async fn audit_event(
    state: &AppState,
    email: &str,
    role: Option<Role>,
    peer: Option<String>,
    action: &str,
    ok: bool,
) {
    let event = NewAuditEvent {
        at: OffsetDateTime::now_utc(),
        actor: format!("{email} (console)"),
        actor_id: None,
        actor_role: role,
        action: action.into(),
        target: Some(email.to_owned()),
        source_ip: peer,
        outcome: if ok {
            AuditOutcome::Success
        } else {
            AuditOutcome::Failure
        },
        status: Some(if ok { 303 } else { 401 }),
        details: None,
    };
    if let Err(e) = state.store.append_audit_event(&event).await {
        tracing::error!(error = %e, "cannot append to the audit log");
    }
}

pub async fn logout(State(state): State<AppState>, Extension(ctx): Extension<ConsoleCtx>, req: Request) -> Response {
    if let Some(id) = session_cookie(req.headers()) {
        let id = Zeroizing::new(id);
        if let Err(e) = state
            .store
            .delete_console_session(&TokenHash::of(&id), OffsetDateTime::now_utc())
            .await
        {
            tracing::error!(error = %e, "cannot delete console session");
        }
    }
    audit_event(
        &state,
        &ctx.email,
        Some(ctx.role()),
        ctx.peer.clone(),
        "console.logout",
        true,
    )
    .await;
    to_login()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_blocks_after_the_limit_and_clears_on_success() {
        let l = LoginLimiter::default();
        let keys = ["ip:1.2.3.4".to_owned(), "user:a@example.com".to_owned()];
        for _ in 0..MAX_FAILURES_PER_USER {
            assert!(!l.blocked(&keys));
            l.record_failure(&keys);
        }
        assert!(l.blocked(&keys));
        l.clear_user("a@example.com");
        assert!(!l.blocked(&keys));
        // The IP keeps its count: a different user from the same address is limited at 20.
        let other = ["ip:1.2.3.4".to_owned(), "user:b@example.com".to_owned()];
        for _ in MAX_FAILURES_PER_USER..MAX_FAILURES_PER_IP {
            l.record_failure(&other[..1]);
        }
        assert!(l.blocked(&other));
    }

    #[test]
    fn csrf_is_derived_and_compared_exactly() {
        let t = csrf_for("abc");
        assert_eq!(t, csrf_for("abc"));
        assert_ne!(t, csrf_for("abd"));
        assert!(csrf_matches(&t, &t));
        assert!(!csrf_matches(&t, ""));
        assert!(!csrf_matches(&t, &t[1..]));
    }

    #[test]
    fn cookie_is_host_prefixed_secure_httponly_strict() {
        let c = set_cookie("x", 60);
        let c = c.to_str().unwrap();
        for part in [
            "__Host-steward_session=x",
            "Path=/",
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!c.contains("Domain"));
    }
}
