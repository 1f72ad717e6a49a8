//! The listener's certificate: swapped in place on renewal, and the TLS-ALPN-01 answers.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Answers each handshake with the current certificate, or, for a validation handshake (ALPN
/// `acme-tls/1`, RFC 8737 §3), with the challenge certificate of the name it asks for. A handshake
/// only reads the certificate, so swapping it changes what *new* connections get and leaves open
/// ones alone.
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl CertResolver {
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(initial),
            challenges: RwLock::default(),
        }
    }

    /// Serves `cert` from the next handshake on.
    pub fn install(&self, cert: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = cert;
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn add_challenge(&self, name: &str, cert: Arc<CertifiedKey>) {
        self.challenges
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_ascii_lowercase(), cert);
    }

    pub(crate) fn remove_challenge(&self, name: &str) {
        self.challenges
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&name.to_ascii_lowercase());
    }

    /// Whether a ClientHello is a TLS-ALPN-01 validation (the listener closes such connections
    /// after the handshake: RFC 8737 §3 "the ACME server MUST NOT send application data").
    pub fn is_validation(hello: &ClientHello<'_>) -> bool {
        hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if Self::is_validation(&hello) {
            // RFC 8737 §3: the validation carries the name in SNI; without a challenge for it the
            // handshake fails rather than showing the normal certificate.
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&name)
                .cloned();
        }
        Some(self.current())
    }
}
