//! A small HTTPS/1.1 client with connection reuse, one connection per client, as Windows' enrollment
//! and OMA-DM clients keep one connection for a session. Optional TLS client certificate (the device
//! identity) for management sessions.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("invalid URL {0:?}: only https://host[:port]/path is supported")]
    Url(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("TLS handshake with {host}: {source}")]
    Handshake { host: String, source: std::io::Error },
    #[error("HTTP: {0}")]
    Http(String),
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An error and its causes, outermost first: hyper's own message ("connection error") hides what
/// happened, such as the TLS alert a server sends after a TLS 1.3 handshake (a refused client
/// certificate arrives as the cause of the first request's failure).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

struct ParsedUrl {
    host: String,
    port: u16,
    path_and_query: String,
}

fn parse_url(url: &str) -> Result<ParsedUrl, HttpsError> {
    let bad = || HttpsError::Url(url.to_owned());
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = after.strip_prefix(':').map(str::parse).transpose().map_err(|_| bad())?;
        (h.to_owned(), port.unwrap_or(443))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
            None => (authority.to_owned(), 443),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(ParsedUrl {
        host,
        port,
        path_and_query: path.to_owned(),
    })
}

struct Conn {
    key: (String, u16),
    sender: SendRequest<Full<Bytes>>,
}

/// Which Windows TLS stack the client plays (Schannel's defaults per release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsProfile {
    /// Windows 10: Schannel has TLS 1.3 on by default only from Windows 11 / Server 2022 (Learn
    /// "Protocols in TLS/SSL (Schannel SSP)"), so TLS 1.2 only, with the ECDHE AES-GCM suites at
    /// the top of its default list (ECDHE_ECDSA and ECDHE_RSA with AES-256/128 GCM; Learn "TLS
    /// Cipher Suites in Windows 10") and the groups X25519, P-256, P-384.
    Windows10,
    /// Windows 11: TLS 1.3 preferred, TLS 1.2 allowed (rustls' safe defaults cover its suites).
    #[default]
    Windows11,
}

impl TlsProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsProfile::Windows10 => "windows10",
            TlsProfile::Windows11 => "windows11",
        }
    }

    /// `windows10` / `tls12` or `windows11` / `tls13`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "windows10" | "win10" | "tls12" | "tls1.2" | "1.2" => Some(TlsProfile::Windows10),
            "windows11" | "win11" | "tls13" | "tls1.3" | "1.3" => Some(TlsProfile::Windows11),
            _ => None,
        }
    }
}

/// An HTTPS client bound to one trust anchor set and optional client identity.
pub struct HttpsClient {
    tls: Arc<rustls::ClientConfig>,
    conn: Mutex<Option<Conn>>,
    /// Connections opened so far (tests assert reuse with it).
    pub connections_opened: std::sync::atomic::AtomicU64,
    /// Host names connected to at a fixed address instead of resolving them (as a hosts-file
    /// entry would), still sent in SNI and `Host`.
    addresses: Vec<(String, std::net::SocketAddr)>,
    /// The TLS version the last handshake agreed.
    negotiated: std::sync::Mutex<Option<rustls::ProtocolVersion>>,
}

impl HttpsClient {
    /// `roots`: DER certificates to trust (the server's CA). `identity`: client certificate chain and
    /// PKCS#8 key for mutual TLS.
    pub fn new(roots: &[Vec<u8>], identity: Option<(Vec<Vec<u8>>, Vec<u8>)>) -> Result<Self, HttpsError> {
        Ok(Self::with_config(Self::tls_config(roots, identity)?))
    }

    /// A client on an existing rustls configuration. The configuration holds the TLS session
    /// cache, so clients built from one configuration resume each other's sessions, as Windows
    /// does across its per-session connections (benchmarks use this to measure resumption).
    pub fn with_config(tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            tls,
            conn: Mutex::new(None),
            connections_opened: Default::default(),
            addresses: Vec::new(),
            negotiated: std::sync::Mutex::new(None),
        }
    }

    /// Connects to `addr` for `host` (tests: a second host name on a loopback server).
    pub fn connect_via(mut self, host: &str, addr: std::net::SocketAddr) -> Self {
        self.addresses.push((host.to_ascii_lowercase(), addr));
        self
    }

    /// [`HttpsClient::new`] playing the TLS stack of `profile`.
    pub fn with_profile(
        roots: &[Vec<u8>],
        identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
        profile: TlsProfile,
    ) -> Result<Self, HttpsError> {
        Ok(Self::with_config(Self::tls_config_for(roots, identity, profile)?))
    }

    /// The TLS version the last handshake agreed (None before the first connection).
    pub fn negotiated_version(&self) -> Option<rustls::ProtocolVersion> {
        *self
            .negotiated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The rustls configuration [`HttpsClient::new`] uses (Windows 11's TLS stack).
    pub fn tls_config(
        roots: &[Vec<u8>],
        identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    ) -> Result<Arc<rustls::ClientConfig>, HttpsError> {
        Self::tls_config_for(roots, identity, TlsProfile::Windows11)
    }

    /// The rustls configuration of a client playing `profile`'s TLS stack.
    pub fn tls_config_for(
        roots: &[Vec<u8>],
        identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
        profile: TlsProfile,
    ) -> Result<Arc<rustls::ClientConfig>, HttpsError> {
        use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider, kx_group};
        let mut provider = default_provider();
        let versions: &[&'static rustls::SupportedProtocolVersion] = match profile {
            TlsProfile::Windows10 => {
                provider.cipher_suites = vec![
                    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                ];
                provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
                &[&rustls::version::TLS12]
            }
            TlsProfile::Windows11 => rustls::DEFAULT_VERSIONS,
        };
        let mut store = RootCertStore::empty();
        for der in roots {
            store
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| HttpsError::Tls(e.to_string()))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .map_err(|e| HttpsError::Tls(e.to_string()))?
            .with_root_certificates(store);
        let mut cfg = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(
                    chain.into_iter().map(CertificateDer::from).collect(),
                    PrivateKeyDer::Pkcs8(key.into()),
                )
                .map_err(|e| HttpsError::Tls(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    async fn connect(&self, host: &str, port: u16) -> Result<SendRequest<Full<Bytes>>, HttpsError> {
        let addr = format!("{host}:{port}");
        let fixed = self
            .addresses
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(host))
            .map(|(_, a)| *a);
        let tcp = match fixed {
            Some(a) => TcpStream::connect(a).await,
            None => TcpStream::connect(&addr).await,
        }
        .map_err(|source| HttpsError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_owned()).map_err(|e| HttpsError::Tls(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| HttpsError::Handshake {
                host: host.to_owned(),
                source,
            })?;
        *self
            .negotiated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tls.get_ref().1.protocol_version();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| HttpsError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.connections_opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(sender)
    }

    /// Sends one request, reusing the open connection when it is still usable.
    pub async fn request(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, HttpsError> {
        let u = parse_url(url)?;
        let key = (u.host.clone(), u.port);
        let mut guard = self.conn.lock().await;
        let reusable = matches!(&*guard, Some(c) if c.key == key && !c.sender.is_closed());
        if !reusable {
            *guard = Some(Conn {
                key: key.clone(),
                sender: self.connect(&u.host, u.port).await?,
            });
        }
        let Some(conn) = guard.as_mut() else {
            return Err(HttpsError::Http("no connection".into()));
        };
        if conn.sender.ready().await.is_err() {
            conn.sender = self.connect(&u.host, u.port).await?;
        }
        let host_header = if u.port == 443 {
            u.host.clone()
        } else {
            format!("{}:{}", u.host, u.port)
        };
        let mut builder = http::Request::builder()
            .method(method)
            .uri(&u.path_and_query)
            .header(http::header::HOST, host_header);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let req = builder
            .body(Full::new(body))
            .map_err(|e| HttpsError::Http(e.to_string()))?;
        let resp = conn
            .sender
            .send_request(req)
            .await
            .map_err(|e| HttpsError::Http(with_causes(&e)))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| HttpsError::Http(with_causes(&e)))?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&self, url: &str) -> Result<Response, HttpsError> {
        self.request(http::Method::GET, url, &[], Bytes::new()).await
    }

    pub async fn post(&self, url: &str, content_type: &str, body: impl Into<Bytes>) -> Result<Response, HttpsError> {
        self.request(http::Method::POST, url, &[("content-type", content_type)], body.into())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        let u = parse_url("https://localhost:8443/EnrollmentServer/Discovery.svc?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("localhost", 8443, "/EnrollmentServer/Discovery.svc?x=1")
        );
        let u = parse_url("https://[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 443));
        assert!(parse_url("http://x/").is_err());
        assert!(parse_url("https://:1/").is_err());
    }
}
