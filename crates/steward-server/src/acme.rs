//! `[tls.acme]` wired to `steward-acme`: the settings from the configuration, the plain-HTTP
//! listener of `http-01`, and the storage —
//! `<data_dir>/acme/<item>.sealed`, sealed with the data key (AES-256-GCM, a label per item). The
//! data key rather than the KEK: renewals run for the life of the process, and the KEK must not stay
//! in memory after start (see [`Pki::data_key`](crate::Pki)).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use steward_acme::{
    AcmeError, AcmeManager, AcmeSettings, AcmeStore, Challenge, HTTP01_PATH_PREFIX, StoreError, StoredItem,
};
use steward_pki::Kek;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use zeroize::Zeroizing;

use crate::bootstrap::{self, BootstrapError};
use crate::config::{AcmeChallenge, Config};

/// HTTP-01 connections served at once; more are closed (the CA makes a few, nobody else needs any).
const HTTP01_CONNECTIONS: usize = 64;
/// A plain-HTTP connection's whole life: one request, one small answer.
const HTTP01_CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// The plain-HTTP listener of `http-01`: answers `GET /.well-known/acme-challenge/<token>` with the
/// key authorization while that challenge is pending (RFC 8555 §8.3), 404 for anything else. One
/// request per connection, bounded in number and time.
pub async fn serve_http01(listener: TcpListener, manager: Arc<AcmeManager>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(HTTP01_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((tcp, _peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let manager = manager.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let answer = http01_answer(&manager, &req);
                async move { Ok::<_, Infallible>(answer) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HTTP01_CONNECTION_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), svc);
            let _ = tokio::time::timeout(HTTP01_CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

fn http01_answer<B>(manager: &AcmeManager, req: &http::Request<B>) -> http::Response<Full<Bytes>> {
    let found = (req.method() == http::Method::GET || req.method() == http::Method::HEAD)
        .then(|| req.uri().path().strip_prefix(HTTP01_PATH_PREFIX))
        .flatten()
        .and_then(|token| manager.http01_key_authorization(token));
    let (status, body) = match found {
        Some(key_authorization) => (http::StatusCode::OK, key_authorization),
        None => (http::StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The manager's settings, when `[tls.acme]` is configured.
pub fn settings(config: &Config) -> Result<Option<AcmeSettings>, AcmeError> {
    let Some(acme) = &config.tls.acme else {
        return Ok(None);
    };
    let directory_roots = match &acme.directory_ca_file {
        None => Vec::new(),
        Some(path) => {
            let pem = fs::read(path).map_err(|e| AcmeError::Settings(format!("{}: {e}", path.display())))?;
            let roots = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| AcmeError::Settings(format!("{}: {e}", path.display())))?;
            if roots.is_empty() {
                return Err(AcmeError::Settings(format!("{} holds no certificate", path.display())));
            }
            roots
        }
    };
    let contact = acme
        .contact
        .iter()
        .map(|c| {
            if c.contains(':') {
                c.clone()
            } else {
                format!("mailto:{c}")
            }
        })
        .collect();
    Ok(Some(AcmeSettings {
        domains: config.acme_domains(),
        contact,
        directory_url: acme.directory_url.clone(),
        directory_roots,
        challenge: match acme.challenge {
            AcmeChallenge::TlsAlpn01 => Challenge::TlsAlpn01,
            AcmeChallenge::Http01 => Challenge::Http01,
        },
    }))
}

/// [`AcmeStore`] in the data directory, every item sealed.
pub struct SealedStore {
    dir: PathBuf,
    key: Arc<Kek>,
}

impl SealedStore {
    pub fn new(data_dir: &Path, key: Arc<Kek>) -> Result<Self, BootstrapError> {
        let dir = data_dir.join("acme");
        fs::create_dir_all(&dir).map_err(|source| BootstrapError::Io {
            path: dir.clone(),
            source,
        })?;
        bootstrap::set_mode(&dir, bootstrap::DIR_MODE)?;
        Ok(Self { dir, key })
    }

    fn path(&self, item: StoredItem) -> PathBuf {
        self.dir.join(format!("{}.sealed", item.name()))
    }

    fn label(item: StoredItem) -> String {
        format!("acme-{}", item.name())
    }
}

impl AcmeStore for SealedStore {
    fn load(&self, item: StoredItem) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let path = self.path(item);
        let sealed = match fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError(format!("{}: {e}", path.display()))),
        };
        self.key
            .open(&Self::label(item), sealed.trim())
            .map(Some)
            .map_err(|e| StoreError(format!("{}: {e}", path.display())))
    }

    fn save(&self, item: StoredItem, data: &[u8]) -> Result<(), StoreError> {
        let path = self.path(item);
        let sealed = self
            .key
            .seal(&Self::label(item), data)
            .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        bootstrap::write_atomic(&path, sealed.as_bytes()).map_err(|e| StoreError(e.to_string()))
    }
}
