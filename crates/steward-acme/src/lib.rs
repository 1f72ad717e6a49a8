//! Publicly trusted TLS by ACME (RFC 8555): the server obtains its certificate from a CA such as
//! Let's Encrypt, keeps it in storage the server seals, renews it well before expiry and swaps it
//! into running TLS without a restart.
//!
//! - [`AcmeManager`] runs the protocol (account, order, challenge, finalize) through
//!   `instant-acme`, renews at [`RENEW_AT`] of the certificate's lifetime and backs off on failure.
//! - [`CertResolver`] is the rustls `ResolvesServerCert` of the listener: it answers with the
//!   current certificate (swapped under a lock, so new handshakes get the new one while open
//!   connections keep theirs) and answers TLS-ALPN-01 validation handshakes (RFC 8737) with the
//!   challenge certificate.
//! - [`AcmeStore`] is where the account key and the certificate with its key live; the server
//!   implements it in its data directory, sealed under its key.
//!
//! Two challenges: TLS-ALPN-01 (RFC 8737), answered on the server's own TLS port (the CA connects
//! to port 443 of each name), and HTTP-01 (RFC 8555 §8.3), whose answers
//! ([`AcmeManager::http01_key_authorization`]) the server serves on a plain-HTTP listener at
//! `/.well-known/acme-challenge/<token>` (the CA connects to port 80), for servers behind a
//! TLS-terminating proxy that cannot pass `acme-tls/1` through.

mod client;
mod manager;
mod resolver;

pub use manager::{AcmeManager, Installed, RENEW_AT};
pub use resolver::{ACME_TLS_ALPN, CertResolver};

use rustls_pki_types::CertificateDer;
use zeroize::Zeroizing;

/// What the manager needs to know (`[tls.acme]` of the server's configuration).
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The names on the certificate (the first is its subject's name).
    pub domains: Vec<String>,
    /// Account contacts, e.g. `mailto:admin@example.com`.
    pub contact: Vec<String>,
    /// The CA's directory URL (Let's Encrypt: `https://acme-v02.api.letsencrypt.org/directory`).
    pub directory_url: String,
    /// The roots that the directory's own TLS certificate must chain to; empty: the system's.
    pub directory_roots: Vec<CertificateDer<'static>>,
    pub challenge: Challenge,
}

/// How the CA validates control of the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// RFC 8737: a TLS handshake with ALPN `acme-tls/1` to port 443.
    TlsAlpn01,
    /// RFC 8555 §8.3: `GET http://<name>/.well-known/acme-challenge/<token>` on port 80.
    Http01,
}

/// The path prefix of HTTP-01 answers (RFC 8555 §8.3).
pub const HTTP01_PATH_PREFIX: &str = "/.well-known/acme-challenge/";

/// A blob the manager keeps across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredItem {
    /// The ACME account: its key and URL (JSON of `instant_acme::AccountCredentials`).
    Account,
    /// The current certificate chain and its private key (PEM, chain first).
    Certificate,
}

impl StoredItem {
    pub fn name(self) -> &'static str {
        match self {
            StoredItem::Account => "account",
            StoredItem::Certificate => "certificate",
        }
    }
}

/// Storage for the account and the certificate. Both hold private keys: implementations seal them.
pub trait AcmeStore: Send + Sync + 'static {
    fn load(&self, item: StoredItem) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
    fn save(&self, item: StoredItem, data: &[u8]) -> Result<(), StoreError>;
}

#[derive(Debug, thiserror::Error)]
#[error("ACME storage: {0}")]
pub struct StoreError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("ACME order for {domains}: {message}")]
    Order { domains: String, message: String },
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("ACME settings: {0}")]
    Settings(String),
}
