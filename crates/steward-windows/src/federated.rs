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
use http::StatusCode;
use serde::Deserialize;
use steward_core::TokenHash;
use steward_core::service::PasswordRefused;
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

/// Verifies signature and expiry. Windows may hand the token back as-is or base64-encoded (the
/// BinarySecurityToken's EncodingType is base64binary), so both forms are accepted.
pub fn verify_token(key: &hmac::Key, presented: &str, now: OffsetDateTime) -> Option<VerifiedToken> {
    let presented = presented.trim();
    let decoded;
    let token = if presented.starts_with(PREFIX) {
        presented
    } else {
        decoded = String::from_utf8(STANDARD.decode(presented).ok()?).ok()?;
        decoded.trim()
    };
    let rest = token.strip_prefix(PREFIX)?;
    let (payload, tag) = rest.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    hmac::verify(key, payload.as_bytes(), &tag).ok()?;
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let expires_at = OffsetDateTime::from_unix_timestamp(claims.exp).ok()?;
    if expires_at <= now {
        return None;
    }
    Some(VerifiedToken {
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

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>body{{font-family:Segoe UI,system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem}}\
         label{{display:block;margin:.8rem 0 .2rem}}input{{width:100%;padding:.4rem;font-size:1rem}}button{{margin-top:1rem;padding:.5rem 1.2rem;font-size:1rem}}\
         .error{{color:#a4262c}}</style></head><body>{body}</body></html>",
        title = escape(title),
    )
}

fn form(appru: &str, email: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(
        "Sign in to enroll",
        &format!(
            "<h1>Sign in to enroll this device</h1>{error}<form method=\"post\">\
             <input type=\"hidden\" name=\"appru\" value=\"{appru}\">\
             <label for=\"email\">E-mail</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required value=\"{email}\">\
             <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\">Sign in</button></form>",
            appru = escape(appru),
            email = escape(email),
        ),
    )
}

pub async fn sign_in_page(Query(q): Query<SignInQuery>) -> Response {
    let appru = q.appru.unwrap_or_default();
    if !valid_appru(&appru) {
        return (
            StatusCode::BAD_REQUEST,
            Html(page(
                "Invalid request",
                "<p>This page must be opened by the Windows enrollment client.</p>",
            )),
        )
            .into_response();
    }
    Html(form(&appru, q.login_hint.as_deref().unwrap_or(""), None)).into_response()
}

pub async fn sign_in(
    State(state): State<WindowsState>,
    conn: Option<Extension<ConnInfo>>,
    Form(f): Form<SignInForm>,
) -> Response {
    if !valid_appru(&f.appru) {
        return (
            StatusCode::BAD_REQUEST,
            Html(page("Invalid request", "<p>Invalid callback address.</p>")),
        )
            .into_response();
    }
    let peer = steward_http::peer_ip(conn.as_ref().map(|Extension(c)| c));
    let user = match state.core.passwords.check_user(&f.email, &f.password, peer).await {
        Ok(u) => u,
        Err(PasswordRefused::Wrong | PasswordRefused::Disabled) => {
            return (
                StatusCode::UNAUTHORIZED,
                Html(form(&f.appru, &f.email, Some("E-mail or password is incorrect."))),
            )
                .into_response();
        }
        Err(e @ PasswordRefused::Throttled { retry_after }) => {
            let message = format!("{}.", capitalized(&e.to_string()));
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(http::header::RETRY_AFTER, retry_after.as_secs().max(1).to_string())],
                Html(form(&f.appru, &f.email, Some(&message))),
            )
                .into_response();
        }
        Err(PasswordRefused::Busy) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(http::header::RETRY_AFTER, crate::fault::RETRY_AFTER_SECONDS.to_string())],
                Html(form(
                    &f.appru,
                    &f.email,
                    Some("Too many sign-ins at once; try again shortly."),
                )),
            )
                .into_response();
        }
        Err(PasswordRefused::Store(e)) => {
            tracing::error!(error = %e, "user lookup failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html(page("Error", "<p>Sign-in is unavailable.</p>")),
            )
                .into_response();
        }
    };
    let lifetime = Duration::minutes(i64::from(state.settings.federated_token_minutes));
    let Some(token) = issue_token(&state.pki.federation_key, &user.email, lifetime, state.core.now()) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(page("Error", "<p>Sign-in is unavailable.</p>")),
        )
            .into_response();
    };
    tracing::info!(user = %user.email, "federated sign-in");
    // MS-MDE2: the page finishes by POSTing `wresult` to `appru`; the web view intercepts it.
    let body = format!(
        "<p>Signed in. Returning to Windows…</p><form method=\"post\" action=\"{appru}\">\
         <input type=\"hidden\" name=\"wresult\" value=\"{token}\"><noscript><button type=\"submit\">Continue</button></noscript></form>\
         <script>document.forms[0].submit();</script>",
        appru = escape(&f.appru),
        token = escape(&token),
    );
    Html(page("Signed in", &body)).into_response()
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

    #[test]
    fn token_round_trip_and_forms() {
        let now = OffsetDateTime::now_utc();
        let t = issue_token(&key(), "a@example.com", Duration::minutes(5), now).unwrap();
        let v = verify_token(&key(), &t, now).unwrap();
        assert_eq!(v.email, "a@example.com");
        let b64 = STANDARD.encode(t.as_bytes());
        assert_eq!(verify_token(&key(), &b64, now).unwrap().nonce_hash, v.nonce_hash);
    }

    #[test]
    fn token_rejections() {
        let now = OffsetDateTime::now_utc();
        let t = issue_token(&key(), "a@example.com", Duration::minutes(5), now).unwrap();
        assert!(verify_token(&key(), &t, now + Duration::minutes(6)).is_none());
        let other = hmac::Key::new(hmac::HMAC_SHA256, &[8u8; 32]);
        assert!(verify_token(&other, &t, now).is_none());
        let mut tampered = t.clone();
        tampered.insert(PREFIX.len() + 3, 'x');
        assert!(verify_token(&key(), &tampered, now).is_none());
        assert!(verify_token(&key(), "garbage", now).is_none());
    }

    #[test]
    fn appru_must_be_windows_callback() {
        assert!(valid_appru("ms-app://windows.immersivecontrolpanel"));
        assert!(!valid_appru("https://evil.example.com"));
        assert!(!valid_appru("ms-app://x\"><script>"));
    }
}
