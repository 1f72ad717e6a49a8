//! `steward doctor tls`: connect as a device would and report what it sees — the chain and whether
//! it verifies against the device's trust store (the system roots unless told otherwise), the names
//! (including `EnterpriseEnrollment.<domain>`, the discovery host Windows derives from the user's
//! e-mail address, MS-MDE2 §3.1.4), expiry, and whether the server sends a CertificateRequest
//! (interop review E-1, E-3).

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::OffsetDateTime;

/// A certificate closer to expiry than this is a problem (Let's Encrypt renews at 30 days left;
/// ACME here at a third of the lifetime).
pub const EXPIRY_PROBLEM_DAYS: i64 = 14;

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("{0}")]
    Url(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("TLS handshake with {host} failed: {message}")]
    Handshake { host: String, message: String },
}

/// One certificate of the chain the server sent.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    pub dns_names: Vec<String>,
    pub not_after: OffsetDateTime,
    pub self_signed: bool,
}

/// What one handshake showed.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The name sent in SNI and checked against the certificate.
    pub host: String,
    pub chain: Vec<CertSummary>,
    /// `Err`: why a device with these roots refuses the certificate.
    pub trusted: Result<(), String>,
    /// The server sent a CertificateRequest.
    pub client_cert_requested: bool,
}

/// The result of [`check`]: the handshakes and the problems found in them.
#[derive(Debug, Clone)]
pub struct Report {
    pub handshakes: Vec<Handshake>,
    pub problems: Vec<String>,
    /// Worth knowing, not failing for.
    pub notes: Vec<String>,
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Check {
    /// `https://host[:port]` as devices reach it.
    pub url: String,
    /// Connect here instead of resolving the URL's host (tests; a server behind a different name).
    pub connect_to: Option<String>,
    /// The roots a device trusts: `None`, the system's.
    pub roots: Option<Vec<CertificateDer<'static>>>,
    /// E-mail domains whose `EnterpriseEnrollment.<domain>` the certificate must cover.
    pub email_domains: Vec<String>,
    /// The device host (`tls.device_hostname`), where a client certificate request is expected.
    pub device_host: Option<String>,
}

/// Host and port of an `https://` URL.
pub fn host_port(url: &str) -> Result<(String, u16), DoctorError> {
    let bad = || DoctorError::Url(format!("{url:?} is not an https://host[:port] URL"));
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let authority = rest.split(['/', '?', '#']).next().ok_or_else(bad)?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h.to_owned(), p.parse::<u16>().map_err(|_| bad())?),
        _ => (authority.to_owned(), 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// Runs the checks: the URL's host, the device host if any, and each discovery host.
pub async fn check(c: &Check) -> Result<Report, DoctorError> {
    let (host, port) = host_port(&c.url)?;
    let addr = c.connect_to.clone().unwrap_or_else(|| format!("{host}:{port}"));
    let roots = match &c.roots {
        Some(r) => r.clone(),
        None => rustls_native_certs::load_native_certs().certs,
    };
    let mut report = Report {
        handshakes: Vec::new(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let main = handshake(&addr, &host, &roots).await?;
    let now = OffsetDateTime::now_utc();
    if let Err(why) = &main.trusted {
        report.problems.push(format!(
            "devices will not trust the certificate of {host}: {why}. A device must trust it before \
             enrollment (use [tls.acme] or a certificate from a public CA; docs/OPERATIONS.md)"
        ));
    }
    if let Some(leaf) = main.chain.first() {
        let days = (leaf.not_after - now).whole_days();
        if leaf.not_after <= now {
            report.problems.push(format!(
                "the certificate of {host} expired on {}",
                leaf.not_after.date()
            ));
        } else if days < EXPIRY_PROBLEM_DAYS {
            report
                .problems
                .push(format!("the certificate of {host} expires in {days} days"));
        }
    }
    if main.client_cert_requested && c.device_host.as_deref() != Some(host.as_str()) {
        report.problems.push(format!(
            "{host} requests a client certificate: browsers on enrolled PCs show a certificate picker \
             and discovery sees a CertificateRequest (set tls.device_hostname; docs/OPERATIONS.md)"
        ));
    }
    let leaf_names: Vec<String> = main.chain.first().map(|l| l.dns_names.clone()).unwrap_or_default();
    for domain in &c.email_domains {
        let discovery = format!("EnterpriseEnrollment.{domain}");
        if !leaf_names.iter().any(|n| name_matches(n, &discovery)) {
            report.problems.push(format!(
                "the certificate does not name {discovery}: Windows discovery for {domain} addresses \
                 will fail (add it to tls.acme.domains or the certificate)"
            ));
        }
    }
    report.handshakes.push(main);
    if let Some(device) = &c.device_host
        && device != &host
    {
        let dev = handshake(&addr, device, &roots).await?;
        if let Err(why) = &dev.trusted {
            report
                .problems
                .push(format!("devices will not trust the certificate of {device}: {why}"));
        }
        if !dev.client_cert_requested {
            report.problems.push(format!(
                "the device host {device} does not request a client certificate: management and \
                 renewal cannot authenticate devices"
            ));
        }
        report.handshakes.push(dev);
    }
    Ok(report)
}

/// Whether certificate name `pattern` (possibly `*.example.com`) covers `host`.
fn name_matches(pattern: &str, host: &str) -> bool {
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    match (pattern.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((_, rest))) => suffix.eq_ignore_ascii_case(rest),
        _ => false,
    }
}

/// One handshake to `addr` with SNI `host`, recording the chain, its verdict under `roots` and
/// whether a client certificate was requested. Nothing is sent after the handshake.
pub async fn handshake(addr: &str, host: &str, roots: &[CertificateDer<'static>]) -> Result<Handshake, DoctorError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut store = RootCertStore::empty();
    let _ = store.add_parsable_certificates(roots.iter().cloned());
    let verifier = Arc::new(Recording::new(store, provider.clone()));
    let asked = Arc::new(AskedForCert::default());
    let hs_err = |message: String| DoctorError::Handshake {
        host: host.to_owned(),
        message,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| hs_err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_cert_resolver(asked.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| DoctorError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| hs_err(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| hs_err(e.to_string()))?;
    drop(stream);
    let chain = verifier.chain().iter().map(|c| summary(c)).collect();
    Ok(Handshake {
        host: host.to_owned(),
        chain,
        trusted: verifier.verdict(),
        client_cert_requested: asked.asked(),
    })
}

fn summary(der: &CertificateDer<'_>) -> CertSummary {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => CertSummary {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            dns_names: c
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .filter_map(|n| match n {
                            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            not_after: c.validity().not_after.to_datetime(),
            self_signed: c.subject() == c.issuer(),
        },
        Err(e) => CertSummary {
            subject: format!("(unparsable: {e})"),
            issuer: String::new(),
            dns_names: Vec::new(),
            not_after: OffsetDateTime::UNIX_EPOCH,
            self_signed: false,
        },
    }
}

/// Verifies as a device would (webpki against the given roots) but lets the handshake finish
/// either way, so that the report can show the chain of an untrusted server.
#[derive(Debug)]
struct Recording {
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    seen: Mutex<(Vec<CertificateDer<'static>>, Result<(), String>)>,
}

impl Recording {
    fn new(roots: RootCertStore, provider: Arc<CryptoProvider>) -> Self {
        let inner = if roots.is_empty() {
            None
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .ok()
        };
        Self {
            inner,
            provider,
            seen: Mutex::new((Vec::new(), Err("no certificate".into()))),
        }
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).0.clone()
    }

    fn verdict(&self) -> Result<(), String> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).1.clone()
    }
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.inner {
            None => Err("no trusted roots".to_owned()),
            Some(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = (chain, verdict);
        // A diagnosis, not a connection: the handshake completes and nothing is sent over it.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A client certificate "resolver" that has none and records whether the server asked: rustls
/// calls it only on a CertificateRequest.
#[derive(Debug, Default)]
struct AskedForCert(Mutex<bool>);

impl AskedForCert {
    fn asked(&self) -> bool {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResolvesClientCert for AskedForCert {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_names() {
        assert_eq!(
            host_port("https://mdm.example.com").unwrap(),
            ("mdm.example.com".into(), 443)
        );
        assert_eq!(
            host_port("https://localhost:8443/x").unwrap(),
            ("localhost".into(), 8443)
        );
        assert!(host_port("http://mdm.example.com").is_err());
        assert!(name_matches("*.example.com", "EnterpriseEnrollment.example.com"));
        assert!(name_matches(
            "enterpriseenrollment.example.com",
            "EnterpriseEnrollment.example.com"
        ));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
    }
}
