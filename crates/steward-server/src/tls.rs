//! TLS for every surface on one port. Client certificates are *requested* but not required: discovery
//! and enrollment happen before a device has one. Certificates that are presented must chain to our
//! device-identity issuing CA (never the system roots), and handlers that need a device identity
//! reject requests without one.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;

use crate::bootstrap::Pki;

#[derive(Debug, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsError(String);

pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let err = |e: &dyn std::fmt::Display| TlsError(e.to_string());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.issuing.cert_der().to_vec()))
        .map_err(|e| err(&e))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| err(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.tls_chain.clone(), pki.tls_key.clone_key())
        .map_err(|e| err(&e))?;
    // Windows' enrollment and OMA-DM clients speak HTTP/1.1 only.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // TLS resumption with stateless tickets. Windows opens a new connection for every OMA-DM
    // session and resumes its previous TLS session, which skips the certificate exchange, our
    // ECDSA signature and the client-certificate chain verification (most of a check-in's CPU;
    // see docs/BENCHMARKS.md). rustls' default is a stateful cache of 256 sessions, far fewer than
    // a fleet; tickets carry the session (including the verified client certificate, which
    // rustls restores as the peer certificate) sealed under a key rotated every 6 hours, so they
    // cost no server memory. Revocation still holds: the management handler looks the enrollment
    // up by certificate thumbprint on every request and refuses inactive ones, so a resumed session
    // of a revoked or wiped device is refused. Expiry is not re-checked: a certificate that expires
    // during a ticket's lifetime (at most 6 hours) can still resume until the ticket lapses.
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| err(&e))?;
    Ok(Arc::new(cfg))
}
