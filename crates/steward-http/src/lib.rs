//! What the transport knows about a request, and the small HTTP helpers every surface shares:
//! the peer and its verified client certificate ([`ConnInfo`], put in the request extensions by the
//! server's accept loop), a client certificate forwarded by a trusted TLS-terminating proxy, and
//! reading a body under a limit. No platform knowledge here.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use http::HeaderMap;
use http_body_util::BodyExt;
use rustls_pki_types::CertificateDer;

/// `Strict-Transport-Security` for the surfaces people open in a browser (the console, the admin
/// API, the federated sign-in page): a year, this host only — Steward cannot speak for sibling
/// names under the same domain, so no `includeSubDomains`. Browsers ignore it on a connection whose
/// certificate they do not trust, so it cannot lock anyone out of a server with a private CA.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// What the transport knows about a request's connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The client certificate the TLS layer verified against our issuing CA, if one was presented.
    pub client_cert: Option<Arc<CertificateDer<'static>>>,
}

/// Proxies allowed to forward a client certificate, and the header they use.
#[derive(Debug, Clone, Default)]
pub struct ForwardedCertPolicy {
    /// Addresses of TLS-terminating proxies whose header is believed. Empty: never.
    pub trusted_proxies: Vec<IpAddr>,
    /// Header carrying the certificate: URL-encoded PEM (nginx `$ssl_client_escaped_cert`) or
    /// base64 DER.
    pub header: String,
}

/// The device's client certificate (DER): the one our TLS layer verified, or, only for requests
/// from a configured trusted proxy, the one the proxy forwarded.
pub fn client_certificate(
    policy: &ForwardedCertPolicy,
    conn: Option<&ConnInfo>,
    headers: &HeaderMap,
) -> Option<Vec<u8>> {
    let conn = conn?;
    if let Some(c) = &conn.client_cert {
        return Some(c.as_ref().to_vec());
    }
    if !policy.trusted_proxies.contains(&conn.peer.ip()) {
        return None;
    }
    let value = headers.get(policy.header.as_str())?.to_str().ok()?;
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

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("cannot read request body: {0}")]
    Read(String),
}

/// Reads a request body of at most `limit` bytes.
///
/// A body over the limit is refused, but first up to `limit` more bytes are read and discarded
/// (never kept): a client that sends its whole request before reading the answer — most do —
/// then gets the 413 instead of a connection closed under it mid-body, and the connection stays
/// usable. Past twice the limit (declared by Content-Length or counted while reading a chunked
/// body) nothing more is read: the answer is sent and hyper closes the connection.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let drain_to = limit.saturating_mul(2) as u64;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = body;
    if let Some(len) = declared
        && len > limit as u64
    {
        if len <= drain_to {
            drain(&mut body, 0, drain_to).await;
        }
        return Err(BodyError::TooLarge(limit));
    }
    let mut out: Vec<u8> = Vec::with_capacity(declared.map_or(0, |l| l as usize));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if out.len() + data.len() > limit {
            drain(&mut body, (out.len() + data.len()) as u64, drain_to).await;
            return Err(BodyError::TooLarge(limit));
        }
        out.extend_from_slice(&data);
    }
    Ok(Bytes::from(out))
}

/// Reads and discards the rest of `body` while the total read stays within `until` bytes.
async fn drain(body: &mut Body, mut read: u64, until: u64) {
    while read <= until {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read += data.len() as u64;
                }
            }
            Some(Err(_)) | None => return,
        }
    }
}

/// The peer's IP address, when the transport recorded one.
pub fn peer_ip(conn: Option<&ConnInfo>) -> Option<IpAddr> {
    conn.map(|c| c.peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

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
