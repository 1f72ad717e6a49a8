//! Console sign-in: argon2 passwords of users with a console role, sessions in a `__Host-` cookie
//! (Secure, HttpOnly, SameSite=Strict; a random 256-bit id of which only the SHA-256 is stored),
//! idle and absolute expiry, a per-session CSRF token on every POST, and an in-memory login rate
//! limiter.

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
use steward_domain::*;
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
            group: None,
        },
        email: user.user.email.clone(),
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
        steward_domain::secret::hash_password(&hex::encode(pw)).unwrap_or_default()
    })
}

async fn audit_login(state: &AppState, email: &str, role: Option<Role>, peer: Option<String>, ok: bool) {
    let event = NewAuditEvent {
        at: OffsetDateTime::now_utc(),
        actor: format!("{email} (console)"),
        actor_id: None,
        actor_role: role,
        action: "console.login".into(),
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
        tokio::task::spawn_blocking(move || steward_domain::secret::verify_password(password.expose(), &phc))
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
    limiter.clear_user(&email);

    let mut raw = Zeroizing::new([0u8; 32]);
    if aws_lc_rs::rand::fill(raw.as_mut()).is_err() {
        return error_page(None, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    }
    let id = Zeroizing::new(URL_SAFE_NO_PAD.encode(raw.as_ref()));
    let now = OffsetDateTime::now_utc();
    let session = ConsoleSession {
        id_hash: TokenHash::of(&id),
        user_id: user.user.id,
        created_at: now,
        last_seen_at: now,
        expires_at: now + ABSOLUTE_TIMEOUT,
        source_ip: peer.clone(),
    };
    if let Err(e) = state.store.create_console_session(&session).await {
        tracing::error!(error = %e, "cannot create console session");
        return error_page(None, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    }
    audit_login(&state, &email, Some(user.role), peer, true).await;
    let mut r = see_other("/console");
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&id, ABSOLUTE_TIMEOUT.whole_seconds()));
    r
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
    let event = NewAuditEvent {
        at: OffsetDateTime::now_utc(),
        actor: ctx.principal.name.clone(),
        actor_id: None,
        actor_role: Some(ctx.role()),
        action: "console.logout".into(),
        target: Some(ctx.email.clone()),
        source_ip: ctx.peer.clone(),
        outcome: AuditOutcome::Success,
        status: Some(303),
        details: None,
    };
    if let Err(e) = state.store.append_audit_event(&event).await {
        tracing::error!(error = %e, "cannot append to the audit log");
    }
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
