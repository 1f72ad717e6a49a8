//! The HTTPS client `instant-acme` talks to the CA through: one HTTP/1.1 connection per request on
//! the hyper and tokio-rustls the server already uses. ACME exchanges are a handful of requests per
//! renewal, so connection reuse is not worth a pool; the roots are ours to choose (the system's,
//! or a test CA's such as Pebble's).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::AcmeError;

pub(crate) struct Client {
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    /// `roots` empty: the system's trust store.
    pub(crate) fn new(roots: &[CertificateDer<'static>]) -> Result<Self, AcmeError> {
        let mut store = RootCertStore::empty();
        if roots.is_empty() {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(AcmeError::Settings(
                    "no system root certificates found to verify the ACME directory".into(),
                ));
            }
        } else {
            for root in roots {
                store
                    .add(root.clone())
                    .map_err(|e| AcmeError::Settings(format!("directory CA certificate: {e}")))?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AcmeError::Settings(e.to_string()))?
            .with_root_certificates(store)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn other(e: impl Into<BoxError>) -> instant_acme::Error {
    instant_acme::Error::Other(e.into())
}

async fn send(
    tls: tokio_rustls::TlsConnector,
    req: http::Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, instant_acme::Error> {
    let uri = req.uri().clone();
    if uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
        return Err(other(format!("refusing a non-https ACME URL {uri}")));
    }
    let host = uri
        .host()
        .ok_or_else(|| other(format!("ACME URL without a host: {uri}")))?;
    let port = uri.port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((host, port)).await.map_err(other)?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.to_owned()).map_err(other)?;
    let stream = tls.connect(name, tcp).await.map_err(other)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(other)?;
    // The connection task outlives this function: the body is read after the response head.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // hyper's HTTP/1.1 client sends the URI as given; send origin-form with a Host header.
    let (mut parts, body) = req.into_parts();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = path.parse().map_err(other)?;
    let authority = uri.authority().map_or(host, |a| a.as_str());
    parts.headers.insert(
        http::header::HOST,
        http::HeaderValue::from_str(authority).map_err(other)?,
    );
    let response = sender
        .send_request(http::Request::from_parts(parts, body))
        .await
        .map_err(other)?;
    Ok(BytesResponse::from(response))
}

/// Connecting, the TLS handshake and the response head of one request: a CA that does not answer
/// fails the attempt (and the renewal loop retries later) instead of holding it forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl HttpClient for Client {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            tokio::time::timeout(REQUEST_TIMEOUT, send(tls, req))
                .await
                .map_err(|_| other(format!("no answer from the ACME server within {REQUEST_TIMEOUT:?}")))?
        })
    }
}
