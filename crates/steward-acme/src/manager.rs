//! Obtaining and renewing the certificate (RFC 8555 §7: account, order, authorizations, finalize,
//! download) and the renewal schedule.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, HttpClient, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{Mutex, Notify, watch};
use zeroize::Zeroizing;

use crate::client::Client;
use crate::resolver::CertResolver;
use crate::{AcmeError, AcmeSettings, AcmeStore, Challenge, StoredItem};

/// The certificate is renewed once this fraction of its lifetime has passed (two thirds: 60 of
/// Let's Encrypt's 90 days, leaving a month of retries before it expires, as Let's Encrypt
/// recommends).
pub const RENEW_AT: (i64, i64) = (2, 3);
/// How long the CA may take to validate the challenges and to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Backoff after a failed attempt: doubling from the first, up to the last. The CA limits failed
/// validations per name and hour, so retries must not be quicker than this.
const BACKOFF_FIRST: Duration = Duration::from_secs(60);
const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// The certificate being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// The leaf's serial number (hex) and DNS names.
    pub serial: String,
    pub names: Vec<String>,
    /// Counts installs in this process (1 for the first).
    pub generation: u64,
}

impl Installed {
    /// When renewal is due ([`RENEW_AT`] of the lifetime).
    pub fn renew_after(&self) -> i64 {
        let span = self.not_after.saturating_sub(self.not_before).max(0);
        self.not_before
            .saturating_add(span.saturating_mul(RENEW_AT.0) / RENEW_AT.1)
    }
}

/// Runs ACME for one set of names and keeps [`CertResolver`] serving a valid certificate.
pub struct AcmeManager {
    settings: AcmeSettings,
    store: Arc<dyn AcmeStore>,
    resolver: Arc<CertResolver>,
    provider: Arc<CryptoProvider>,
    /// The account once loaded; the lock also keeps two renewals from running at once.
    account: Mutex<Option<Account>>,
    installed: watch::Sender<Option<Installed>>,
    wake: Notify,
    /// HTTP-01 answers being served: token → key authorization.
    http01: RwLock<HashMap<String, String>>,
}

impl AcmeManager {
    /// Serves the stored certificate when it is still valid for the configured names, else
    /// `fallback` until the first one is obtained (the [`run`](Self::run) loop starts at once).
    pub fn new(
        settings: AcmeSettings,
        store: Arc<dyn AcmeStore>,
        fallback: Arc<CertifiedKey>,
    ) -> Result<Self, AcmeError> {
        if settings.domains.is_empty() {
            return Err(AcmeError::Settings("no domains".into()));
        }
        let manager = Self {
            settings,
            store,
            resolver: Arc::new(CertResolver::new(fallback)),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            account: Mutex::new(None),
            installed: watch::channel(None).0,
            wake: Notify::new(),
            http01: RwLock::default(),
        };
        if let Some(blob) = manager.store.load(StoredItem::Certificate)? {
            match manager.parse(&blob) {
                Ok((cert, info)) if info.not_after <= now() => {
                    tracing::warn!(not_after = info.not_after, "the stored ACME certificate has expired");
                    drop(cert);
                }
                Ok((cert, info)) if !manager.covers(&info) => {
                    tracing::info!(names = ?info.names, "the stored ACME certificate lacks a configured name");
                    drop(cert);
                }
                Ok((cert, info)) => manager.install(cert, info),
                Err(e) => tracing::warn!(error = %e, "the stored ACME certificate is unreadable; obtaining a new one"),
            }
        }
        Ok(manager)
    }

    pub fn resolver(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    pub fn installed(&self) -> Option<Installed> {
        self.installed.borrow().clone()
    }

    /// Changes on every install.
    pub fn subscribe(&self) -> watch::Receiver<Option<Installed>> {
        self.installed.subscribe()
    }

    /// The body to answer `GET /.well-known/acme-challenge/<token>` with, while that challenge is
    /// pending (RFC 8555 §8.3: the key authorization, `token.thumbprint`).
    pub fn http01_key_authorization(&self, token: &str) -> Option<String> {
        self.http01
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    /// Which challenge this manager answers.
    pub fn challenge(&self) -> Challenge {
        self.settings.challenge
    }

    /// Makes the [`run`](Self::run) loop renew now.
    pub fn renew_soon(&self) {
        self.wake.notify_one();
    }

    /// Renews until `shutdown`: at once without a valid certificate, else at [`RENEW_AT`] of its
    /// lifetime; after a failure with a backoff from [`BACKOFF_FIRST`] up to [`BACKOFF_MAX`].
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        let mut installs = self.installed.subscribe();
        loop {
            // A renewal from elsewhere (`renew` called directly) moves the schedule.
            installs.borrow_and_update();
            let wait = if failures > 0 {
                backoff(failures)
            } else {
                match self.installed() {
                    None => Duration::ZERO,
                    Some(i) => Duration::from_secs(u64::try_from(i.renew_after().saturating_sub(now())).unwrap_or(0)),
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                changed = installs.changed() => {
                    if changed.is_ok() {
                        failures = 0;
                        continue;
                    }
                }
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                renewed = self.renew() => match renewed {
                    Ok(_) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %e, failures, "ACME certificate renewal failed; retrying later");
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Obtains a new certificate for the configured names, stores it and serves it from the next
    /// handshake on.
    pub async fn renew(&self) -> Result<Installed, AcmeError> {
        let mut slot = self.account.lock().await;
        let account = match &*slot {
            Some(a) => a.clone(),
            None => {
                let a = self.account_from_store_or_new().await?;
                *slot = Some(a.clone());
                a
            }
        };
        let blob = self.order(&account).await?;
        let (cert, mut info) = self.parse(&blob)?;
        self.store.save(StoredItem::Certificate, &blob)?;
        info.generation = self.installed().map_or(0, |i| i.generation) + 1;
        tracing::info!(names = ?info.names, serial = %info.serial, not_after = info.not_after, "ACME certificate installed");
        self.install(cert, info.clone());
        Ok(info)
    }

    fn install(&self, cert: Arc<CertifiedKey>, mut info: Installed) {
        if info.generation == 0 {
            info.generation = self.installed().map_or(0, |i| i.generation) + 1;
        }
        self.resolver.install(cert);
        self.installed.send_replace(Some(info));
    }

    fn http(&self) -> Result<Box<dyn HttpClient>, AcmeError> {
        Ok(Box::new(Client::new(&self.settings.directory_roots)?))
    }

    /// The stored account when it belongs to the configured directory, else a new one.
    async fn account_from_store_or_new(&self) -> Result<Account, AcmeError> {
        if let Some(blob) = self.store.load(StoredItem::Account)? {
            let directory = serde_json::from_slice::<serde_json::Value>(&blob)
                .ok()
                .and_then(|v| v.get("directory").and_then(|d| d.as_str()).map(str::to_owned));
            if directory.as_deref() == Some(self.settings.directory_url.as_str()) {
                let credentials: AccountCredentials = serde_json::from_slice(&blob)
                    .map_err(|e| AcmeError::Settings(format!("stored ACME account: {e}")))?;
                return Ok(Account::builder_with_http(self.http()?)
                    .from_credentials(credentials)
                    .await?);
            }
            tracing::info!("the stored ACME account is for another directory; creating one");
        }
        let contact: Vec<&str> = self.settings.contact.iter().map(String::as_str).collect();
        let (account, credentials) = Account::builder_with_http(self.http()?)
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory_url.clone(),
                None,
            )
            .await?;
        let json = Zeroizing::new(
            serde_json::to_vec(&credentials).map_err(|e| AcmeError::Settings(format!("ACME account: {e}")))?,
        );
        self.store.save(StoredItem::Account, &json)?;
        tracing::info!(account = account.id(), "ACME account created");
        Ok(account)
    }

    /// One order (RFC 8555 §7.4): answer each pending authorization's challenge, wait
    /// for the order to be ready, finalize with a CSR of a fresh key, download the chain. Returns
    /// the chain and key as PEM.
    async fn order(&self, account: &Account) -> Result<Zeroizing<Vec<u8>>, AcmeError> {
        let domains = self.settings.domains.join(", ");
        let fail = |message: String| AcmeError::Order {
            domains: domains.clone(),
            message,
        };
        let identifiers: Vec<Identifier> = self.settings.domains.iter().cloned().map(Identifier::Dns).collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut answering = Answering {
            resolver: &self.resolver,
            http01: &self.http01,
            names: Vec::new(),
            tokens: Vec::new(),
        };
        let kind = match self.settings.challenge {
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Http01 => ChallengeType::Http01,
        };
        {
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let mut authorization = authorization?;
                match authorization.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    status => return Err(fail(format!("an authorization is {status:?}"))),
                }
                let mut challenge = authorization
                    .challenge(kind.clone())
                    .ok_or_else(|| fail(format!("the CA offers no {kind:?} challenge")))?;
                let key_authorization = challenge.key_authorization();
                match self.settings.challenge {
                    Challenge::TlsAlpn01 => {
                        let name = challenge.identifier().to_string();
                        let cert = challenge_cert(&name, key_authorization.digest().as_ref(), &self.provider)?;
                        self.resolver.add_challenge(&name, cert);
                        answering.names.push(name);
                    }
                    Challenge::Http01 => {
                        let token = challenge.token.clone();
                        self.http01
                            .write()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(token.clone(), key_authorization.as_str().to_owned());
                        answering.tokens.push(token);
                    }
                }
                challenge.set_ready().await?;
            }
        }
        let retries = RetryPolicy::new().timeout(VALIDATION_TIMEOUT);
        let status = order.poll_ready(&retries).await?;
        drop(answering);
        if status != OrderStatus::Ready {
            let problem = order
                .state()
                .error
                .as_ref()
                .map_or_else(String::new, |p| format!(": {p}"));
            return Err(fail(format!("the order is {status:?}{problem}")));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Certificate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(self.settings.domains.clone())
            .map_err(|e| AcmeError::Certificate(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| AcmeError::Certificate(e.to_string()))?;
        order.finalize_csr(csr.der()).await?;
        let chain = order.poll_certificate(&retries).await?;
        let mut blob = Zeroizing::new(chain.into_bytes());
        blob.push(b'\n');
        blob.extend_from_slice(key.serialize_pem().as_bytes());
        Ok(blob)
    }

    /// A stored or downloaded PEM blob (chain, then the PKCS#8 key) as a rustls certificate and
    /// what its leaf says.
    fn parse(&self, blob: &[u8]) -> Result<(Arc<CertifiedKey>, Installed), AcmeError> {
        let bad = |m: &str| AcmeError::Certificate(m.to_owned());
        let mut chain: Vec<CertificateDer<'static>> = Vec::new();
        let mut key: Option<PrivateKeyDer<'static>> = None;
        let mut reader = blob;
        for item in rustls_pemfile::read_all(&mut reader) {
            match item.map_err(|e| AcmeError::Certificate(e.to_string()))? {
                rustls_pemfile::Item::X509Certificate(der) => chain.push(der),
                rustls_pemfile::Item::Pkcs8Key(k) => key = Some(PrivateKeyDer::Pkcs8(k)),
                _ => {}
            }
        }
        let key = key.ok_or_else(|| bad("no private key"))?;
        let leaf = chain.first().ok_or_else(|| bad("no certificate"))?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(leaf).map_err(|e| AcmeError::Certificate(e.to_string()))?;
        let names = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let info = Installed {
            not_before: parsed.validity().not_before.timestamp(),
            not_after: parsed.validity().not_after.timestamp(),
            serial: parsed.raw_serial_as_string(),
            names,
            generation: 0,
        };
        let signing = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| AcmeError::Certificate(e.to_string()))?;
        let cert = CertifiedKey::new(chain, signing);
        cert.keys_match()
            .map_err(|e| AcmeError::Certificate(format!("the key does not match the certificate: {e}")))?;
        Ok((Arc::new(cert), info))
    }

    fn covers(&self, info: &Installed) -> bool {
        self.settings
            .domains
            .iter()
            .all(|d| info.names.iter().any(|n| n.eq_ignore_ascii_case(d)))
    }
}

/// The challenge answers being served for one order; removed when the order is done or fails.
struct Answering<'a> {
    resolver: &'a CertResolver,
    http01: &'a RwLock<HashMap<String, String>>,
    names: Vec<String>,
    tokens: Vec<String>,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            self.resolver.remove_challenge(name);
        }
        let mut http01 = self.http01.write().unwrap_or_else(PoisonError::into_inner);
        for token in &self.tokens {
            http01.remove(token);
        }
    }
}

/// The TLS-ALPN-01 certificate of `name` (RFC 8737 §3): self-signed, the name as its only SAN, and
/// the critical `id-pe-acmeIdentifier` extension holding SHA-256 of the key authorization.
fn challenge_cert(name: &str, digest: &[u8], provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, AcmeError> {
    let err = |e: rcgen::Error| AcmeError::Certificate(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(err)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(err)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)))
}

/// The wait after `failures` failed attempts in a row (at least one).
fn backoff(failures: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(BACKOFF_MAX)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        let i = Installed {
            not_before: 1_000,
            not_after: 1_000 + 90 * 86_400,
            serial: String::new(),
            names: vec![],
            generation: 1,
        };
        assert_eq!(i.renew_after(), 1_000 + 60 * 86_400);
    }

    #[test]
    fn failures_back_off_from_a_minute_doubling_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(120));
        assert_eq!(backoff(6), Duration::from_secs(1920));
        assert_eq!(backoff(7), Duration::from_secs(3600));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn the_challenge_certificate_carries_the_acme_identifier() {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let digest = [7u8; 32];
        let cert = challenge_cert("mdm.example.com", &digest, &provider).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert.cert[0]).unwrap();
        let ext = parsed
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("id-pe-acmeIdentifier");
        assert!(ext.critical);
        // An OCTET STRING of the 32-byte digest.
        assert_eq!(ext.value, [&[0x04, 0x20][..], &digest].concat());
    }
}
