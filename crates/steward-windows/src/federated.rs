//! Federated enrollment (MS-MDE2 §3.1.4.1.3.2 AuthenticationServiceUrl): Windows opens our sign-in page
//! in a web view with `appru` (where to post the result) and `login_hint` (the e-mail typed). After the
//! user signs in against Steward's user store, the page posts a short-lived, single-use, HMAC-signed
//! token back to `appru` as `wresult`; Windows then presents it as the BinarySecurityToken
//! (ValueType DeviceEnrollmentUserToken) in GetPolicies and RequestSecurityToken.
//!
//! Token format: `stw_fed_` + base64url(JSON {sub, exp, jti}) + `.` + base64url(HMAC-SHA256). It is
//! checked (not consumed) at GetPolicies and consumed atomically with the enrollment commit.

use aws_lc_rs::hmac;
use axum::Form;
use axum::extract::{Extension, Query, State};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use steward_core::service::PasswordRefused;
use steward_core::{StoreError, TokenHash};
use steward_http::ConnInfo;
use steward_windows_proto::xml::escape;
use time::{Duration, OffsetDateTime};

use crate::WindowsState;

const PREFIX: &str = "stw_fed_";

#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub email: String,
    pub expires_at: OffsetDateTime,
    /// Hash of the token's unique id, recorded when the token is spent.
    pub nonce_hash: TokenHash,
}

#[derive(serde::Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    jti: String,
}

pub fn issue_token(key: &hmac::Key, email: &str, lifetime: Duration, now: OffsetDateTime) -> Option<String> {
    let jti = hex::encode(steward_pki::random_bytes::<16>().ok()?);
    let claims = Claims {
        sub: email.to_owned(),
        exp: (now + lifetime).unix_timestamp(),
        jti,
    };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).ok()?);
    let tag = hmac::sign(key, payload.as_bytes());
    Some(format!("{PREFIX}{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
}

/// How far the verifying server's clock may be from the issuing server's, either way: replicas
/// behind one load balancer share the federation key but not a clock (NTP keeps them within
/// seconds; two minutes is the usual leeway for signed tokens, cf. RFC 7519 §4.1.4 "some small
/// leeway"). A token is accepted until `exp + skew`, and refused if its `exp` lies further ahead
/// than a token issued now could carry (`now + lifetime + skew`): it was issued by a clock that is
/// ahead, or forged with a far expiry under a leaked key.
pub const CLOCK_SKEW: Duration = Duration::minutes(2);

/// Why a presented federated token is refused (each is an Authentication fault to the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error("the security token is malformed")]
    Malformed,
    #[error("the security token's signature is invalid")]
    BadSignature,
    #[error("the security token has expired")]
    Expired,
    #[error("the security token was issued in the future (the issuing clock is ahead of this server's)")]
    FromTheFuture,
}

/// Verifies signature and validity period (`lifetime`: what this server issues, so the latest
/// expiry a genuine token can carry). Windows may hand the token back as-is or base64-encoded (the
/// BinarySecurityToken's EncodingType is base64binary), so both forms are accepted.
pub fn verify_token(
    key: &hmac::Key,
    presented: &str,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<VerifiedToken, TokenRefused> {
    let presented = presented.trim();
    let decoded;
    let token = if presented.starts_with(PREFIX) {
        presented
    } else {
        decoded = STANDARD
            .decode(presented)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(TokenRefused::Malformed)?;
        decoded.trim()
    };
    let rest = token.strip_prefix(PREFIX).ok_or(TokenRefused::Malformed)?;
    let (payload, tag) = rest.split_once('.').ok_or(TokenRefused::Malformed)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| TokenRefused::Malformed)?;
    hmac::verify(key, payload.as_bytes(), &tag).map_err(|_| TokenRefused::BadSignature)?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or(TokenRefused::Malformed)?;
    let expires_at = OffsetDateTime::from_unix_timestamp(claims.exp).map_err(|_| TokenRefused::Malformed)?;
    if expires_at + CLOCK_SKEW <= now {
        return Err(TokenRefused::Expired);
    }
    if expires_at > now + lifetime + CLOCK_SKEW {
        return Err(TokenRefused::FromTheFuture);
    }
    Ok(VerifiedToken {
        email: claims.sub,
        expires_at,
        nonce_hash: TokenHash::of(&claims.jti),
    })
}

#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    appru: Option<String>,
    login_hint: Option<String>,
}

#[derive(Deserialize)]
pub struct SignInForm {
    appru: String,
    email: String,
    password: String,
}

/// `appru` must be the Windows app callback (`ms-app://…`): anything else would make this page an open
/// redirect that posts a valid token to an attacker's site.
fn valid_appru(appru: &str) -> bool {
    appru.starts_with("ms-app://") && appru.len() <= 512 && !appru.contains(['"', '<', '>'])
}

/// The longest `login_hint` echoed into the form (an e-mail address is at most 254 characters).
const MAX_LOGIN_HINT_CHARS: usize = 254;

/// The largest sign-in form accepted: the callback (at most 512 bytes), an e-mail and a password,
/// URL-encoded, with room to spare. Anything larger is refused before it is read.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// The pages' one stylesheet, inline and allowed by its hash: no other style applies.
const STYLE: &str = "body{font-family:Segoe UI,system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem}\
label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;font-size:1rem}\
button{margin-top:1rem;padding:.5rem 1.2rem;font-size:1rem}.error{color:#a4262c}";

/// The one script any page runs: the signed-in page posts the token back to Windows at once. The
/// Continue button does the same where scripts do not run.
const AUTO_SUBMIT: &str = "document.forms[0].submit();";

/// A CSP source allowing exactly `text` as an inline element (CSP3 hash-source).
fn hash_source(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    format!("'sha256-{}'", STANDARD.encode(digest.as_ref()))
}

/// Which page is answered: the policies differ only in what the page must do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PageKind {
    /// The form and the error pages: no script at all, forms post only to this page.
    Form,
    /// The signed-in page: its one hashed script, and a form that posts to the `ms-app://`
    /// callback. No `form-action` there: the callback is validated before it gets on the page, and a
    /// scheme-source for `ms-app:` is not something we can check every Windows web view honours.
    SignedIn,
}

fn content_security_policy(kind: PageKind) -> String {
    let style = hash_source(STYLE);
    match kind {
        PageKind::Form => format!(
            "default-src 'none'; style-src {style}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        PageKind::SignedIn => format!(
            "default-src 'none'; style-src {style}; script-src {}; frame-ancestors 'none'; base-uri 'none'",
            hash_source(AUTO_SUBMIT)
        ),
    }
}

/// The page with the headers the console's pages carry: the CSP, no framing, no sniffing, no
/// caching (the signed-in page holds a token), HSTS, and no referrer (the URL names the user).
fn html(status: StatusCode, kind: PageKind, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        title = escape(title),
    );
    let mut resp = (status, Html(page)).into_response();
    let h = resp.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(kind)) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(steward_http::STRICT_TRANSPORT_SECURITY),
    );
    resp
}

fn form(status: StatusCode, appru: &str, email: &str, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let email: String = email.chars().take(MAX_LOGIN_HINT_CHARS).collect();
    html(
        status,
        PageKind::Form,
        "Sign in to enroll",
        &format!(
            "<h1>Sign in to enroll this device</h1>{error}<form method=\"post\">\
             <input type=\"hidden\" name=\"appru\" value=\"{appru}\">\
             <label for=\"email\">E-mail</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required value=\"{email}\">\
             <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\">Sign in</button></form>",
            appru = escape(appru),
            email = escape(&email),
        ),
    )
}

/// A page that says only that sign-in cannot happen now, with the trace id of the log line that
/// says why.
fn unavailable(status: StatusCode, detail: &str) -> Response {
    let trace_id = uuid::Uuid::new_v4().to_string();
    tracing::error!(trace_id, detail, "federated sign-in failed");
    let mut resp = html(
        status,
        PageKind::Form,
        "Sign-in unavailable",
        &format!(
            "<p>Sign-in is unavailable; try again shortly.</p><p>Trace id: {}</p>",
            escape(&trace_id)
        ),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::fault::RETRY_AFTER_SECONDS),
        );
    }
    resp
}

pub async fn sign_in_page(Query(q): Query<SignInQuery>) -> Response {
    let appru = q.appru.unwrap_or_default();
    if !valid_appru(&appru) {
        return html(
            StatusCode::BAD_REQUEST,
            PageKind::Form,
            "Invalid request",
            "<p>This page must be opened by the Windows enrollment client.</p>",
        );
    }
    form(StatusCode::OK, &appru, q.login_hint.as_deref().unwrap_or(""), None)
}

pub async fn sign_in(
    State(state): State<WindowsState>,
    conn: Option<Extension<ConnInfo>>,
    Form(f): Form<SignInForm>,
) -> Response {
    if !valid_appru(&f.appru) {
        return html(
            StatusCode::BAD_REQUEST,
            PageKind::Form,
            "Invalid request",
            "<p>Invalid callback address.</p>",
        );
    }
    let peer = steward_http::peer_ip(conn.as_ref().map(|Extension(c)| c));
    let user = match state.core.passwords.check_user(&f.email, &f.password, peer).await {
        Ok(u) => u,
        Err(PasswordRefused::Wrong | PasswordRefused::Disabled) => {
            return form(
                StatusCode::UNAUTHORIZED,
                &f.appru,
                &f.email,
                Some("E-mail or password is incorrect."),
            );
        }
        Err(e @ PasswordRefused::Throttled { retry_after }) => {
            let message = format!("{}.", capitalized(&e.to_string()));
            let mut resp = form(StatusCode::TOO_MANY_REQUESTS, &f.appru, &f.email, Some(&message));
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
            return resp;
        }
        Err(PasswordRefused::Busy) => {
            let mut resp = form(
                StatusCode::SERVICE_UNAVAILABLE,
                &f.appru,
                &f.email,
                Some("Too many sign-ins at once; try again shortly."),
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::fault::RETRY_AFTER_SECONDS),
            );
            return resp;
        }
        Err(PasswordRefused::Store(e)) => {
            let status = match e {
                StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return unavailable(status, &format!("user lookup: {e}"));
        }
    };
    let lifetime = Duration::minutes(i64::from(state.settings.federated_token_minutes));
    let Some(token) = issue_token(&state.pki.federation_key, &user.email, lifetime, state.core.now()) else {
        return unavailable(StatusCode::INTERNAL_SERVER_ERROR, "issuing the federated token");
    };
    tracing::info!(user = %user.email, "federated sign-in");
    // MS-MDE2: the page finishes by POSTing `wresult` to `appru`; the web view intercepts it.
    let body = format!(
        "<p>Signed in. Returning to Windows…</p><form method=\"post\" action=\"{appru}\">\
         <input type=\"hidden\" name=\"wresult\" value=\"{token}\"><button type=\"submit\">Continue</button></form>\
         <script>{AUTO_SUBMIT}</script>",
        appru = escape(&f.appru),
        token = escape(&token),
    );
    html(StatusCode::OK, PageKind::SignedIn, "Signed in", &body)
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32])
    }

    const LIFETIME: Duration = Duration::minutes(5);

    #[test]
    fn token_round_trip_and_forms() {
        let now = OffsetDateTime::now_utc();
        let t = issue_token(&key(), "a@example.com", LIFETIME, now).unwrap();
        let v = verify_token(&key(), &t, now, LIFETIME).unwrap();
        assert_eq!(v.email, "a@example.com");
        let b64 = STANDARD.encode(t.as_bytes());
        assert_eq!(
            verify_token(&key(), &b64, now, LIFETIME).unwrap().nonce_hash,
            v.nonce_hash
        );
    }

    #[test]
    fn token_rejections() {
        let now = OffsetDateTime::now_utc();
        let t = issue_token(&key(), "a@example.com", LIFETIME, now).unwrap();
        let at = |when| verify_token(&key(), &t, when, LIFETIME).map(|_| ());
        assert_eq!(at(now + LIFETIME + CLOCK_SKEW), Err(TokenRefused::Expired));
        let other = hmac::Key::new(hmac::HMAC_SHA256, &[8u8; 32]);
        assert_eq!(
            verify_token(&other, &t, now, LIFETIME).map(|_| ()),
            Err(TokenRefused::BadSignature)
        );
        let mut tampered = t.clone();
        tampered.insert(PREFIX.len() + 3, 'x');
        assert!(verify_token(&key(), &tampered, now, LIFETIME).is_err());
        assert_eq!(
            verify_token(&key(), "garbage", now, LIFETIME).map(|_| ()),
            Err(TokenRefused::Malformed)
        );
    }

    /// The verifier's clock against the issuer's: within [`CLOCK_SKEW`] either way the token is
    /// good; beyond it, expired (verifier ahead) or from the future (issuer ahead).
    #[test]
    fn clock_skew_is_allowed_up_to_its_bound() {
        let now = OffsetDateTime::now_utc();
        let second = Duration::seconds(1);
        let issued_at = |offset: Duration| issue_token(&key(), "a@example.com", LIFETIME, now + offset).unwrap();
        let verify = |t: &str| verify_token(&key(), t, now, LIFETIME).map(|_| ());
        // The issuer's clock ahead of ours.
        assert_eq!(verify(&issued_at(CLOCK_SKEW - second)), Ok(()));
        assert_eq!(
            verify(&issued_at(CLOCK_SKEW + second)),
            Err(TokenRefused::FromTheFuture)
        );
        // The issuer's clock behind ours (or the token used late): expired beyond the skew.
        let late = -(LIFETIME + CLOCK_SKEW);
        assert_eq!(verify(&issued_at(late + second)), Ok(()));
        assert_eq!(verify(&issued_at(late - second)), Err(TokenRefused::Expired));
    }

    #[test]
    fn pages_allow_only_their_own_style_and_script() {
        let form = content_security_policy(PageKind::Form);
        assert!(
            !form.contains("script-src") && form.contains("default-src 'none'"),
            "{form}"
        );
        assert!(form.contains(&hash_source(STYLE)) && form.contains("frame-ancestors 'none'"));
        let signed_in = content_security_policy(PageKind::SignedIn);
        assert!(signed_in.contains(&format!("script-src {}", hash_source(AUTO_SUBMIT))));
        assert!(!signed_in.contains("unsafe-inline"));
        // The encoding CSP expects: the CSP3 specification's own example hash.
        assert_eq!(
            hash_source("alert('Hello, world.');"),
            "'sha256-qznLcsROx4GACP2dm0UCKCzCG+HiZ1guq6ZZDob/Tng='"
        );
    }

    #[test]
    fn appru_must_be_windows_callback() {
        assert!(valid_appru("ms-app://windows.immersivecontrolpanel"));
        assert!(!valid_appru("https://evil.example.com"));
        assert!(!valid_appru("ms-app://x\"><script>"));
    }
}
