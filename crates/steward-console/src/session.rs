//! Console sign-in: argon2 passwords of users with a console role, sessions in a `__Host-` cookie
//! (Secure, HttpOnly, SameSite=Strict; a random 256-bit id of which only the SHA-256 is stored),
//! idle and absolute expiry, a per-session CSRF token on every POST, and the TOTP second factor
//! (RFC 6238). Passwords are checked, and failures throttled, by the one password check
//! ([`steward_core::service::Passwords`]); seeds are sealed and codes checked by
//! [`steward_core::service::SecondFactor`].
//!
//! Sign-in is staged: a right password gives a *pending* session (5 minutes, reaching only the
//! second-factor page) whenever the user has a confirmed TOTP seed or the configuration requires
//! one; the right code replaces it with a full session under a new id, so nothing learned about
//! the pending cookie carries over. Users without a seed set it up on that page at their first
//! sign-in (`console.require_totp`, the default).

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Form, FromRequest, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use maud::html;
use serde::Deserialize;
use steward_core::service::PasswordRefused;
use steward_core::service::audit::AuditEntry;
use steward_core::service::second_factor::CodeCheck;
use steward_core::totp::TotpSecret;
use steward_core::*;
use steward_http::ConnInfo;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{ConsoleCtx, ConsoleState, error_page, layout, page, see_other};

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

// ---------------------------------------------------------------- cookies and CSRF

pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
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

fn peer_of(req: &Request) -> Option<IpAddr> {
    req.extensions().get::<ConnInfo>().map(|c| c.peer.ip())
}

/// A cross-site POST carries an Origin of another site; refuse it even before the CSRF token
/// (defence in depth, and the only check the login form has).
pub(crate) fn foreign_origin(headers: &HeaderMap) -> bool {
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
pub async fn require_session(State(state): State<ConsoleState>, req: Request, next: Next) -> Response {
    let Some(id) = session_cookie(req.headers()) else {
        return to_login();
    };
    let id = Zeroizing::new(id);
    let hash = TokenHash::of(&id);
    let now = OffsetDateTime::now_utc();
    let store = &state.core().store;
    let (session, user) = match store.console_session(&hash).await {
        Ok(Some(s)) => s,
        Ok(None) => return to_login(),
        Err(e) => {
            tracing::error!(error = %e, "console session lookup failed");
            return error_page(None, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    if user.user.disabled || session.expires_at <= now || now - session.last_seen_at > IDLE_TIMEOUT {
        let _ = store.delete_console_session(&hash, now).await;
        return to_login();
    }
    if session.second_factor_pending {
        return see_other(SECOND_FACTOR_PATH);
    }
    if now - session.last_seen_at > TOUCH_INTERVAL
        && let Err(e) = store.touch_console_session(&hash, now).await
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
        let bytes = match axum::body::to_bytes(body, state.settings.form_bytes).await {
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

/// How long to wait, for a person: "15 minutes", "10 seconds".
fn wait_text(d: Duration) -> String {
    let secs = d.as_secs().max(1);
    if secs >= 60 {
        let minutes = secs.div_ceil(60);
        format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
    } else {
        format!("{secs} second{}", if secs == 1 { "" } else { "s" })
    }
}

/// A console sign-in step in the audit log (success answers 303, failure 401).
async fn audit_sign_in(
    state: &ConsoleState,
    email: &str,
    role: Option<Role>,
    peer: Option<IpAddr>,
    action: &str,
    ok: bool,
) {
    let entry = AuditEntry {
        action: action.to_owned(),
        target: Some(email.to_owned()),
        details: None,
        source_ip: peer.map(|p| p.to_string()),
        status: Some(if ok { 303 } else { 401 }),
    };
    state
        .core()
        .audit
        .record_as(&format!("{email} (console)"), None, role, ok, entry)
        .await;
}

pub async fn login(State(state): State<ConsoleState>, req: Request) -> Response {
    let peer = peer_of(&req);
    if foreign_origin(req.headers()) {
        return error_page(None, StatusCode::FORBIDDEN, "cross-site request refused");
    }
    let form = match Form::<LoginForm>::from_request(req, &()).await {
        Ok(Form(form)) => form,
        // Over `limits.console_form_bytes`: said as such, like every other console form.
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_page(None, StatusCode::PAYLOAD_TOO_LARGE, "form too large");
        }
        Err(_) => {
            return page(
                StatusCode::BAD_REQUEST,
                login_form(Some("Enter an e-mail address and a password."), ""),
            );
        }
    };
    let email = form.email.trim().to_lowercase();
    let passwords = &state.core().passwords;
    let user = match passwords.check_console_user(&email, form.password.expose(), peer).await {
        Ok(user) => user,
        Err(PasswordRefused::Throttled { retry_after }) => {
            let text = format!(
                "Too many failed sign-ins. Wait {} and try again.",
                wait_text(retry_after)
            );
            return page(StatusCode::TOO_MANY_REQUESTS, login_form(Some(&text), &email));
        }
        Err(PasswordRefused::Busy) => {
            let mut r = page(
                StatusCode::SERVICE_UNAVAILABLE,
                login_form(Some("Too many sign-ins at once. Try again in a few seconds."), &email),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
        Err(PasswordRefused::Store(e)) => {
            tracing::error!(error = %e, "console user lookup failed");
            return error_page(None, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
        Err(PasswordRefused::Wrong | PasswordRefused::Disabled) => {
            audit_sign_in(&state, &email, None, peer, "console.login", false).await;
            return page(
                StatusCode::UNAUTHORIZED,
                login_form(Some("Wrong e-mail or password."), &email),
            );
        }
    };
    let second_factor_due = state.settings.require_totp || user.totp.as_ref().is_some_and(UserTotp::confirmed);
    if second_factor_due {
        // The attempt stays counted until the code is right too: password guesses and code
        // guesses share one budget.
        return start_session(&state, user.user.id, peer, true).await;
    }
    passwords.signed_in(&email, peer);
    audit_sign_in(&state, &email, Some(user.role), peer, "console.login", true).await;
    start_session(&state, user.user.id, peer, false).await
}

/// Creates a session (pending the second factor, or full) and answers with its cookie and a
/// redirect to where it may go.
async fn start_session(state: &ConsoleState, user: UserId, peer: Option<IpAddr>, pending: bool) -> Response {
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
        source_ip: peer.map(|p| p.to_string()),
        second_factor_pending: pending,
    };
    if let Err(e) = state.core().store.create_console_session(&session).await {
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

/// The answer when a seed cannot be opened.
pub(crate) fn totp_unreadable(ctx: Option<&ConsoleCtx>) -> Response {
    error_page(
        ctx,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the second factor cannot be checked: ask an administrator to reset it (steward user reset-totp)",
    )
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
pub(crate) fn totp_setup_block(state: &ConsoleState, email: &str, secret: &TotpSecret) -> maud::Markup {
    let uri = secret.otpauth_uri(&state.settings.totp_issuer, email);
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
    state: &ConsoleState,
    headers: &HeaderMap,
) -> Result<(Zeroizing<String>, ConsoleSession, ConsoleUser), Response> {
    let Some(id) = session_cookie(headers) else {
        return Err(to_login());
    };
    let id = Zeroizing::new(id);
    let hash = TokenHash::of(&id);
    let now = OffsetDateTime::now_utc();
    let store = &state.core().store;
    match store.console_session(&hash).await {
        Ok(Some((s, u))) if s.second_factor_pending && s.expires_at > now && !u.user.disabled => Ok((id, s, u)),
        Ok(Some((s, _))) if !s.second_factor_pending => Err(see_other("/console")),
        Ok(_) => {
            let _ = store.delete_console_session(&hash, now).await;
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
    state: &ConsoleState,
    user: &ConsoleUser,
    ctx: Option<&ConsoleCtx>,
) -> Result<TotpSecret, Response> {
    let resuming = user.totp.as_ref().is_some_and(|t| !t.confirmed());
    state.core().second_factor.setup_secret(user).await.map_err(|e| {
        if resuming {
            totp_unreadable(ctx)
        } else {
            tracing::error!(error = %e, "cannot store a TOTP seed");
            error_page(ctx, StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    })
}

pub async fn second_factor_page(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
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

pub async fn second_factor(State(state): State<ConsoleState>, req: Request) -> Response {
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
    let core = state.core();
    let email = user.user.email.clone();
    let setting_up = !user.totp.as_ref().is_some_and(UserTotp::confirmed);
    let again = |error: &str, status: StatusCode, secret: Option<&TotpSecret>| {
        let setup = secret.map(|s| totp_setup_block(&state, &email, s));
        page(status, second_factor_form(&csrf, setup, Some(error)))
    };
    let Some(totp) = user.totp.as_ref() else {
        // The seed was reset meanwhile: show the set-up page again.
        return see_other(SECOND_FACTOR_PATH);
    };
    let Ok(secret) = core.second_factor.open(user.user.id, totp) else {
        return totp_unreadable(None);
    };
    let shown = setting_up.then_some(&secret);
    if let Some(wait) = core.passwords.throttled(&email, peer) {
        return again(
            &format!("Too many failed attempts. Wait {} and try again.", wait_text(wait)),
            StatusCode::TOO_MANY_REQUESTS,
            shown,
        );
    }
    match core
        .second_factor
        .check_with(user.user.id, totp, &secret, &form.code)
        .await
    {
        Ok(CodeCheck::Accepted) => {}
        Ok(CodeCheck::Refused) => {
            core.passwords.second_factor_failed(&email, peer);
            audit_sign_in(&state, &email, Some(user.role), peer, "console.second_factor", false).await;
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
    core.passwords.signed_in(&email, peer);
    // The pending session is spent; the full one gets a fresh id.
    if let Err(e) = core.store.delete_console_session(&session.id_hash, core.now()).await {
        tracing::warn!(error = %e, "cannot delete the pending console session");
    }
    if setting_up {
        audit_sign_in(&state, &email, Some(user.role), peer, "console.totp_enroll", true).await;
    }
    audit_sign_in(&state, &email, Some(user.role), peer, "console.login", true).await;
    start_session(&state, user.user.id, peer, false).await
}

/// Abandons a pending sign-in.
pub async fn cancel_second_factor(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        let id = Zeroizing::new(id);
        let _ = state
            .core()
            .store
            .delete_console_session(&TokenHash::of(&id), OffsetDateTime::now_utc())
            .await;
    }
    to_login()
}

/// A signed-in user's own account step in the audit log (logout, setting up the second factor
/// from the account page).
pub(crate) async fn audit_account(state: &ConsoleState, ctx: &ConsoleCtx, action: &str) {
    audit_sign_in(state, &ctx.email, Some(ctx.role()), ctx.peer, action, true).await;
}

pub async fn logout(
    State(state): State<ConsoleState>,
    axum::extract::Extension(ctx): axum::extract::Extension<ConsoleCtx>,
    req: Request,
) -> Response {
    if let Some(id) = session_cookie(req.headers()) {
        let id = Zeroizing::new(id);
        if let Err(e) = state
            .core()
            .store
            .delete_console_session(&TokenHash::of(&id), OffsetDateTime::now_utc())
            .await
        {
            tracing::error!(error = %e, "cannot delete console session");
        }
    }
    audit_account(&state, &ctx, "console.logout").await;
    to_login()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_in_minutes_or_seconds() {
        assert_eq!(wait_text(Duration::from_secs(15 * 60)), "15 minutes");
        assert_eq!(wait_text(Duration::from_secs(61)), "2 minutes");
        assert_eq!(wait_text(Duration::from_secs(60)), "1 minute");
        assert_eq!(wait_text(Duration::from_secs(10)), "10 seconds");
        assert_eq!(wait_text(Duration::ZERO), "1 second");
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
