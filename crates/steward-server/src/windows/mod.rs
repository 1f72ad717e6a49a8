//! Windows device surfaces: MS-MDE2 enrollment (discovery, MS-XCEP policy, MS-WSTEP enrollment) and
//! the federated sign-in page. Device paths are matched case-insensitively (clients upper-case them)
//! and query strings are ignored, by normalising the path before routing.

pub mod commands;
mod enroll;
mod fault;
pub mod federated;
pub mod inventory;
mod manage;
mod md5;
mod renew;
pub mod session;

use axum::Router;
use axum::routing::get;

use crate::AppState;
use crate::listener::ConnInfo;

/// Canonical (lower-case) device paths. Requests whose path matches one of these ignoring ASCII case
/// are rewritten to it before routing.
pub const DISCOVERY_PATH: &str = "/enrollmentserver/discovery.svc";
pub const POLICY_PATH: &str = "/enrollmentserver/policy.svc";
pub const ENROLLMENT_PATH: &str = "/enrollmentserver/enrollment.svc";
pub const AUTH_PATH: &str = "/enrollmentserver/auth";
pub const MANAGEMENT_PATH: &str = "/managementserver/mdm.svc";

/// The spelling we advertise to devices (Windows' conventional casing).
pub const DISCOVERY_URL_PATH: &str = "/EnrollmentServer/Discovery.svc";
pub const POLICY_URL_PATH: &str = "/EnrollmentServer/Policy.svc";
pub const ENROLLMENT_URL_PATH: &str = "/EnrollmentServer/Enrollment.svc";
pub const AUTH_URL_PATH: &str = "/EnrollmentServer/Auth";
pub const MANAGEMENT_URL_PATH: &str = "/ManagementServer/MDM.svc";

const DEVICE_PATHS: &[&str] = &[DISCOVERY_PATH, POLICY_PATH, ENROLLMENT_PATH, AUTH_PATH, MANAGEMENT_PATH];

/// Rewrites a device path to its canonical lower-case form, dropping the query string's influence on
/// routing (handlers never read it).
pub fn normalize_path<B>(mut req: http::Request<B>) -> http::Request<B> {
    let path = req.uri().path();
    if let Some(canonical) = DEVICE_PATHS.iter().find(|p| p.eq_ignore_ascii_case(path))
        && *canonical != path
    {
        let mut parts = req.uri().clone().into_parts();
        let pq = match req.uri().query() {
            Some(q) => format!("{canonical}?{q}"),
            None => (*canonical).to_owned(),
        };
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

/// The device's client certificate (DER): the one our TLS layer verified, or, only for requests from a
/// configured trusted proxy, the one the proxy forwarded in `management.client_cert_header`.
pub fn client_certificate(state: &AppState, conn: Option<&ConnInfo>, headers: &http::HeaderMap) -> Option<Vec<u8>> {
    let conn = conn?;
    if let Some(c) = &conn.client_cert {
        return Some(c.as_ref().to_vec());
    }
    let m = &state.config.management;
    if !m.trusted_proxies.contains(&conn.peer.ip()) {
        return None;
    }
    let value = headers.get(m.client_cert_header.as_str())?.to_str().ok()?;
    decode_forwarded_cert(value)
}

/// URL-encoded PEM (nginx `$ssl_client_escaped_cert`, Envoy) or bare base64 DER.
fn decode_forwarded_cert(value: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let value = value.trim();
    if value.contains("BEGIN") {
        let decoded = percent_decode(value);
        let mut reader = decoded.as_bytes();
        match rustls_pemfile::read_one(&mut reader) {
            Ok(Some(rustls_pemfile::Item::X509Certificate(der))) => Some(der.to_vec()),
            _ => None,
        }
    } else {
        base64::engine::general_purpose::STANDARD.decode(value).ok()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(DISCOVERY_PATH, get(enroll::discovery_probe).post(enroll::discovery))
        .route(POLICY_PATH, axum::routing::post(enroll::policy))
        .route(ENROLLMENT_PATH, axum::routing::post(enroll::enrollment))
        .route(AUTH_PATH, get(federated::sign_in_page).post(federated::sign_in))
        .route(MANAGEMENT_PATH, axum::routing::post(manage::management))
        .route("/healthz", get(|| async { "ok" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_keeps_query() {
        let req = http::Request::builder()
            .uri("/ENROLLMENTSERVER/Discovery.SVC?x=1")
            .body(())
            .unwrap();
        assert_eq!(normalize_path(req).uri(), "/enrollmentserver/discovery.svc?x=1");
        let other = http::Request::builder().uri("/api/v1/Devices").body(()).unwrap();
        assert_eq!(normalize_path(other).uri(), "/api/v1/Devices");
    }

    #[test]
    fn forwarded_certificate_forms() {
        use base64::Engine;
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        assert_eq!(decode_forwarded_cert(&b64), Some(der.clone()));
        let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        let escaped = pem.replace('\n', "%0A").replace(' ', "%20");
        assert_eq!(decode_forwarded_cert(&escaped), Some(der));
        assert_eq!(decode_forwarded_cert("%%%"), None);
    }
}
