//! The property the `console_headers` fuzz target checks (`fuzz/` at the repository root): the
//! console's reading of the request headers a browser — or anyone — sends before any session
//! exists: the session cookie out of `Cookie` headers and the cross-site check on `Origin`/`Host`.
//! It panics when the property fails, which is how libFuzzer learns of a finding; the unit test
//! below replays the committed corpus on stable Rust.
//!
//! Built only for tests and with the `fuzzing` feature (which the fuzz crate enables).

use axum::http::{HeaderMap, HeaderValue, header};

use crate::session::{COOKIE_NAME, foreign_origin, session_cookie};

/// Target `console_headers`. The input is split at line feeds: the first line is the `Host`, the
/// second the `Origin`, every further line one `Cookie` header (lines that are not valid header
/// values are dropped, as hyper would refuse them). Properties: no panic; a session id read is
/// non-empty, at most 128 bytes, holds no `;`, and appears as `name=value` in one of the Cookie
/// headers; an Origin of exactly `https://<Host>` is never foreign, and a missing Origin never is.
pub fn console_headers(data: &[u8]) {
    let mut lines = data.split(|b| *b == b'\n');
    let host = lines.next().and_then(|l| HeaderValue::from_bytes(l).ok());
    let origin = lines.next().and_then(|l| HeaderValue::from_bytes(l).ok());
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(header::COOKIE, v);
        }
    }
    if let Some(id) = session_cookie(&headers) {
        assert!(!id.is_empty() && id.len() <= 128, "session id of {} bytes", id.len());
        assert!(!id.contains(';'), "a session id spans cookies: {id:?}");
        let pair = format!("{COOKIE_NAME}={id}");
        assert!(
            headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains(&pair)),
            "session id {id:?} is in no Cookie header"
        );
    }

    // Without an Origin the check has nothing to compare (the CSRF token still applies).
    if let Some(h) = &host {
        headers.insert(header::HOST, h.clone());
    }
    assert!(!foreign_origin(&headers), "no Origin header, yet foreign");
    if let Some(o) = origin {
        headers.insert(header::ORIGIN, o);
        foreign_origin(&headers);
    }
    // The browser's own origin for this host is never refused.
    if let Some(same) = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .and_then(|h| HeaderValue::from_str(&format!("https://{h}")).ok())
    {
        headers.insert(header::ORIGIN, same);
        assert!(!foreign_origin(&headers), "the host's own https origin is foreign");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed seed (and any finding still in `fuzz/artifacts/`) passes the property.
    #[test]
    fn replay_fuzz_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let mut seen = 0;
        for dir in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join("console_headers")) else {
                continue;
            };
            for path in entries.flatten().map(|e| e.path()).filter(|p| p.is_file()) {
                let bytes = std::fs::read(&path).unwrap();
                if std::panic::catch_unwind(|| console_headers(&bytes)).is_err() {
                    panic!("fuzz input {} fails its target's check", path.display());
                }
                seen += usize::from(dir == "corpus");
            }
        }
        assert!(seen > 0, "no committed corpus for console_headers");
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_bounded() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-steward_session=abc ; b=2"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        let long = format!("{COOKIE_NAME}={}", "x".repeat(129));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_str(&long).unwrap());
        assert_eq!(session_cookie(&h), None);
        console_headers(b"mdm.example.com\nhttps://evil.example\n__Host-steward_session=abc");
    }
}
