//! TLS for every surface on one port, with the `ServerConfig` chosen per connection from its
//! ClientHello (rustls' `Acceptor` / tokio-rustls' `LazyConfigAcceptor`):
//!
//! - **ACME validation** (ALPN `acme-tls/1` only, RFC 8737): the challenge certificate, no client
//!   certificate request; the listener closes the connection after the handshake.
//! - **Device** connections: a client certificate is *requested* but not required (enrollment
//!   happens before a device has one; renewal and management present it). Certificates that are
//!   presented must chain to our device-identity issuing CA (never the system roots), and handlers
//!   that need a device identity reject requests without one.
//! - **Public** connections (discovery, policy, the sign-in page, console, API): no
//!   CertificateRequest at all, so browsers on enrolled PCs show no certificate picker (interop
//!   review E-3, C-6) and Windows' discovery client never sees one.
//!
//! The path is not known at ClientHello time, so the split is by host name (SNI): with
//! `tls.device_hostname` set, that name is the device host (the enrollment service and management
//! URLs devices are sent to) and every other name is public. Without it (the zero-config default,
//! one host for everything) only `EnterpriseEnrollment.*` — the discovery host Windows derives from
//! the user's e-mail domain — is public and the rest keeps requesting a certificate, as before.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::{ClientHello, WebPkiClientVerifier};
use rustls_pki_types::CertificateDer;
use steward_acme::{ACME_TLS_ALPN, CertResolver};

use crate::bootstrap::Pki;

#[derive(Debug, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsError(String);

/// Which configuration a connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// A TLS-ALPN-01 validation handshake: closed once complete.
    AcmeValidation,
    /// Client certificate requested (optional).
    Device,
    /// No client certificate request.
    Public,
}

/// The listener's TLS: the certificate (swappable: ACME renewals) and the configurations.
pub struct Tls {
    pub certs: Arc<CertResolver>,
    device: Arc<rustls::ServerConfig>,
    public: Arc<rustls::ServerConfig>,
    acme: Arc<rustls::ServerConfig>,
    /// Lower-case; `None`: the zero-config split (see the module documentation).
    device_hostname: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("device_hostname", &self.device_hostname)
            .finish_non_exhaustive()
    }
}

/// The Windows discovery host prefix (MS-MDE2 §3.1.4: `EnterpriseEnrollment.<domain>`).
const DISCOVERY_HOST_PREFIX: &str = "enterpriseenrollment.";

impl Tls {
    pub fn new(pki: &Pki, certs: Arc<CertResolver>, device_hostname: Option<&str>) -> Result<Self, TlsError> {
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
        let builder = || {
            rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| err(&e))
        };
        let mut device = builder()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(certs.clone());
        let mut public = builder()?.with_no_client_auth().with_cert_resolver(certs.clone());
        for cfg in [&mut device, &mut public] {
            // Windows' enrollment and OMA-DM clients speak HTTP/1.1 only.
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            // TLS resumption with stateless tickets. Windows opens a new connection for every
            // OMA-DM session and resumes its previous TLS session, which skips the certificate
            // exchange, our ECDSA signature and the client-certificate chain verification (most of
            // a check-in's CPU; see docs/BENCHMARKS.md). rustls' default is a stateful cache of 256
            // sessions, far fewer than a fleet; tickets carry the session (including the verified
            // client certificate, which rustls restores as the peer certificate) sealed under a key
            // rotated every 6 hours, so they cost no server memory. Each configuration has its own
            // ticket key, so a public session never resumes as a device one. Revocation still
            // holds: the management handler looks the enrollment up by certificate thumbprint on
            // every request and refuses inactive ones, so a resumed session of a revoked or wiped
            // device is refused. Expiry is not re-checked: a certificate that expires during a
            // ticket's lifetime (at most 6 hours) can still resume until the ticket lapses.
            cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| err(&e))?;
        }
        // RFC 8737 §3: the validation handshake negotiates `acme-tls/1` and nothing else; the
        // resolver answers it with the challenge certificate of the SNI name.
        let mut acme = builder()?.with_no_client_auth().with_cert_resolver(certs.clone());
        acme.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Ok(Self {
            certs,
            device: Arc::new(device),
            public: Arc::new(public),
            acme: Arc::new(acme),
            device_hostname: device_hostname.map(str::to_ascii_lowercase),
        })
    }

    /// The configuration for a ClientHello.
    pub fn select(&self, hello: &ClientHello<'_>) -> (Surface, Arc<rustls::ServerConfig>) {
        if CertResolver::is_validation(hello) {
            return (Surface::AcmeValidation, self.acme.clone());
        }
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let surface = surface_of(sni.as_deref(), self.device_hostname.as_deref());
        match surface {
            Surface::Device => (surface, self.device.clone()),
            _ => (surface, self.public.clone()),
        }
    }
}

/// The host-name rule (see the module documentation). Without SNI (an IP address in the URL) the
/// connection is treated as the device host would be when no device host is configured.
fn surface_of(sni: Option<&str>, device_hostname: Option<&str>) -> Surface {
    match (device_hostname, sni) {
        (Some(device), Some(sni)) if sni == device => Surface::Device,
        (Some(_), _) => Surface::Public,
        (None, Some(sni)) if sni.starts_with(DISCOVERY_HOST_PREFIX) => Surface::Public,
        (None, _) => Surface::Device,
    }
}

/// The device configuration alone (client certificate requested) on the server's own certificate:
/// the benchmarks' bare TLS server.
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let tls = Tls::new(pki, Arc::new(CertResolver::new(certified_key(pki)?)), None)?;
    Ok(tls.device.clone())
}

/// The rustls certificate of the certificate the server starts with (its own CA's, or the
/// operator's files).
pub fn certified_key(pki: &Pki) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = provider
        .key_provider
        .load_private_key(pki.tls_key.clone_key())
        .map_err(|e| TlsError(e.to_string()))?;
    let ck = rustls::sign::CertifiedKey::new(pki.tls_chain.clone(), key);
    ck.keys_match().map_err(|e| TlsError(e.to_string()))?;
    Ok(Arc::new(ck))
}

/// Why a fresh device will not trust the certificate the server starts with, if it will not
/// (interop review E-1: Windows validates the discovery endpoint's certificate against its public
/// roots, and our root reaches the device only at the end of enrollment). `None` with `[tls.acme]`
/// (publicly trusted once obtained) and for an operator's certificate that the system's roots
/// verify for every configured name.
pub fn untrusted_reason(config: &crate::Config, pki: &Pki) -> Option<String> {
    if config.tls.acme.is_some() {
        return None;
    }
    if config.tls.cert_file.is_none() {
        return Some(
            "the TLS certificate is issued by Steward's own CA, which devices do not trust before enrollment".into(),
        );
    }
    let mut roots = RootCertStore::empty();
    let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if roots.is_empty() {
        return Some("this machine has no trusted root certificates to check tls.cert_file against".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = match rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()
    {
        Ok(v) => v,
        Err(e) => return Some(e.to_string()),
    };
    let (leaf, intermediates) = pki.tls_chain.split_first()?;
    let now = rustls_pki_types::UnixTime::now();
    for name in config.tls_hostnames() {
        let Ok(server_name) = rustls_pki_types::ServerName::try_from(name.clone()) else {
            continue;
        };
        if let Err(e) = rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            leaf,
            intermediates,
            &server_name,
            &[],
            now,
        ) {
            return Some(format!(
                "tls.cert_file does not verify for {name} against the system's roots: {e}"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificates_are_requested_on_the_device_host_only() {
        let dev = Some("manage.example.com");
        assert_eq!(surface_of(Some("manage.example.com"), dev), Surface::Device);
        assert_eq!(surface_of(Some("mdm.example.com"), dev), Surface::Public);
        assert_eq!(
            surface_of(Some("enterpriseenrollment.example.com"), dev),
            Surface::Public
        );
        assert_eq!(surface_of(None, dev), Surface::Public);
        // Zero-config: one host for everything; only the discovery host is spared.
        assert_eq!(surface_of(Some("mdm.example.com"), None), Surface::Device);
        assert_eq!(
            surface_of(Some("enterpriseenrollment.example.com"), None),
            Surface::Public
        );
        assert_eq!(surface_of(None, None), Surface::Device);
    }
}
