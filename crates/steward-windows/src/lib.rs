//! The Windows platform adapter.
//!
//! - Device surfaces ([`router`]): MS-MDE2 enrollment (discovery, MS-XCEP policy, MS-WSTEP
//!   enrollment and renewal), the federated sign-in page, and the OMA-DM management endpoint
//!   (MS-MDM). Device paths are matched case-insensitively (clients upper-case them) and query
//!   strings are ignored, by normalising the path before routing ([`normalize_path`], which the
//!   server's listener applies).
//! - The OMA-DM command model ([`OmaDmCommand`]) with its validation, the commands remote actions
//!   become, and the inventory map ([`inventory`]).
//! - The pure OMA-DM session engine ([`session`]).
//! - [`WindowsAdapter`], the [`steward_core::platform::PlatformAdapter`] the services use.
//!
//! The composition root builds a [`WindowsState`] from its configuration and mounts [`router`].

mod adapter;
pub mod catalog;
pub mod commands;
pub mod config_lock;
mod enroll;
mod fault;
pub mod federated;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_checks;
pub mod inventory;
mod manage;
mod md5;
pub mod parse;
pub mod profile;
pub mod reconcile;
mod renew;
pub mod session;
pub mod throttle;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use steward_core::service::{Core, Identity};
use steward_http::ForwardedCertPolicy;

pub use adapter::WindowsAdapter;

/// The DMClient provider id when `enrollment.provider_id` is not configured.
pub const DEFAULT_PROVIDER_ID: &str = "Steward";
pub use commands::{CommandError, CommandItem, OmaDmCommand, PayloadError, Verb};

/// Canonical (lower-case) device paths. Requests whose path matches one of these ignoring ASCII case
/// are rewritten to it before routing.
pub const DISCOVERY_PATH: &str = "/enrollmentserver/discovery.svc";
pub const POLICY_PATH: &str = "/enrollmentserver/policy.svc";
pub const ENROLLMENT_PATH: &str = "/enrollmentserver/enrollment.svc";
pub const AUTH_PATH: &str = "/enrollmentserver/auth";
pub const MANAGEMENT_PATH: &str = "/managementserver/mdm.svc";

/// The spelling we advertise to devices (Windows' conventional casing).
pub const DISCOVERY_URL_PATH: &str = "/EnrollmentServer/Discovery.svc";
pub const POLICY_URL_PATH: &str = "/EnrollmentServer/Policy.svc";
pub const ENROLLMENT_URL_PATH: &str = "/EnrollmentServer/Enrollment.svc";
pub const AUTH_URL_PATH: &str = "/EnrollmentServer/Auth";
pub const MANAGEMENT_URL_PATH: &str = "/ManagementServer/MDM.svc";

const DEVICE_PATHS: &[&str] = &[DISCOVERY_PATH, POLICY_PATH, ENROLLMENT_PATH, AUTH_PATH, MANAGEMENT_PATH];

/// How devices authenticate at enrollment (MS-MDE2 §3.1.4.1 DiscoverResponse `AuthPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPolicy {
    /// WS-Security UsernameToken: a user's e-mail + password, or any e-mail + an enrollment token.
    OnPremise,
    /// Our own sign-in page issues a security token (the AuthenticationServiceUrl flow).
    Federated,
}

/// What the Windows surfaces need from the server's configuration; the composition root fills it.
#[derive(Debug, Clone)]
pub struct WindowsSettings {
    /// The server's public base URL (`https://mdm.example.com`; a trailing `/` is ignored).
    pub public_url: String,
    /// The base URL of the device host, where the enrollment service (also WSTEP renewal, which
    /// presents the device certificate) and management live: the only host whose TLS handshakes
    /// request a client certificate (interop review E-3). `None`: `public_url`.
    pub device_url: Option<String>,
    pub auth_policy: AuthPolicy,
    /// MS-MDE2 provider id: DMClient/Provider/<id> and the w7 PROVIDER-ID.
    pub provider_id: String,
    /// Shown to the user as the management server's name (w7 NAME).
    pub server_name: String,
    /// Minutes between check-ins in the first poll phase, and how many (DMClient Poll).
    pub poll_first_interval_minutes: u32,
    pub poll_first_count: u32,
    /// Steady-state minutes between check-ins.
    pub poll_interval_minutes: u32,
    /// How long a federated sign-in token stays valid.
    pub federated_token_minutes: u32,
    /// Hours between inventory refreshes (asked at the start of a session once this has passed).
    pub inventory_interval_hours: u32,
    /// Hours between read-backs of a device's readable profile settings
    /// ([`steward_core::configuration::VerifyPolicy`]).
    pub verify_interval_hours: u32,
    /// Largest enrollment (SOAP) request body accepted.
    pub enrollment_body_bytes: usize,
    /// Largest management (SyncML) message accepted.
    pub management_body_bytes: usize,
    /// Commands owed a Status in one device message; more and the message is refused whole
    /// (SyncHdr 413, [`session::MAX_DEVICE_COMMANDS`] is the default).
    pub device_commands_per_message: usize,
    /// Management requests one enrollment may have in flight at once ([`throttle::DeviceSessions`]).
    pub sessions_per_device: usize,
    /// Discover requests per minute per peer address ([`throttle::AddressRate`]; 0: no limit).
    pub discovery_per_minute: u32,
    /// Provision `syncml:auth-md5` credentials at enrollment and accept sessions authenticated by
    /// them when no client certificate reaches us.
    pub md5_auth: bool,
    /// Which proxies may forward the device's client certificate, and in which header.
    pub forwarded_cert: ForwardedCertPolicy,
    /// Smallest RSA modulus accepted in a device CSR.
    pub min_rsa_bits: usize,
    /// Lifetime of device identity certificates (advertised in the MS-XCEP policy; the issuing
    /// itself is [`Identity`]'s).
    pub device_cert_validity_days: u32,
    /// Days before expiry when Windows starts WSTEP renewal.
    pub renew_period_days: u32,
    /// Days between renewal retries.
    pub renew_retry_interval_days: u32,
}

/// The key material the Windows surfaces hand out or check: the CA certificates the provisioning
/// document installs, and the key federated sign-in tokens are signed with.
pub struct WindowsPki {
    pub root_ca_der: Vec<u8>,
    /// Upper-case hex SHA-1 of `root_ca_der`.
    pub root_ca_thumbprint: String,
    pub issuing_ca_der: Vec<u8>,
    pub issuing_ca_thumbprint: String,
    /// HMAC-SHA256 key for federated sign-in tokens.
    pub federation_key: aws_lc_rs::hmac::Key,
}

impl WindowsPki {
    pub fn new(
        root: &steward_pki::CertifiedKey,
        issuing: &steward_pki::CertifiedKey,
        federation_key: aws_lc_rs::hmac::Key,
    ) -> Self {
        Self {
            root_ca_der: root.cert_der().to_vec(),
            root_ca_thumbprint: root.thumbprint(),
            issuing_ca_der: issuing.cert_der().to_vec(),
            issuing_ca_thumbprint: issuing.thumbprint(),
            federation_key,
        }
    }
}

impl std::fmt::Debug for WindowsPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowsPki")
            .field("root_ca_thumbprint", &self.root_ca_thumbprint)
            .field("issuing_ca_thumbprint", &self.issuing_ca_thumbprint)
            .finish_non_exhaustive()
    }
}

/// Everything the Windows handlers need, shared by reference.
#[derive(Clone)]
pub struct WindowsState {
    pub core: Core,
    pub identity: Identity,
    pub settings: Arc<WindowsSettings>,
    pub pki: Arc<WindowsPki>,
    /// Where large request bodies are parsed ([`parse`]: off the async workers, a few at once).
    pub parsers: parse::Parsers,
    /// Management requests in flight per enrollment (`settings.sessions_per_device`).
    pub device_sessions: Arc<throttle::DeviceSessions>,
    /// Discover requests per peer address (`settings.discovery_per_minute`).
    pub discovery_rate: Arc<throttle::AddressRate>,
}

impl WindowsState {
    /// The public base URL, without a trailing `/`.
    fn base_url(&self) -> &str {
        self.settings.public_url.trim_end_matches('/')
    }
    /// The device host's base URL, without a trailing `/`.
    fn device_base_url(&self) -> &str {
        self.settings
            .device_url
            .as_deref()
            .unwrap_or(&self.settings.public_url)
            .trim_end_matches('/')
    }
    fn management_url(&self) -> String {
        format!("{}{MANAGEMENT_URL_PATH}", self.device_base_url())
    }
}

/// Rewrites a device path to its canonical lower-case form, dropping the query string's influence on
/// routing (handlers never read it).
pub fn normalize_path<B>(mut req: http::Request<B>) -> http::Request<B> {
    let path = req.uri().path();
    if let Some(canonical) = DEVICE_PATHS.iter().find(|p| p.eq_ignore_ascii_case(path))
        && *canonical != path
    {
        let mut parts = req.uri().clone().into_parts();
        let pq = match req.uri().query() {
            Some(q) => format!("{canonical}?{q}"),
            None => (*canonical).to_owned(),
        };
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

/// The Windows device routes (at their canonical paths: apply [`normalize_path`] before routing),
/// with their state applied.
pub fn router(state: WindowsState) -> Router {
    let mut router = Router::new()
        .route(DISCOVERY_PATH, get(enroll::discovery_probe).post(enroll::discovery))
        .route(POLICY_PATH, post(enroll::policy))
        .route(ENROLLMENT_PATH, post(enroll::enrollment))
        .route(MANAGEMENT_PATH, post(manage::management));
    // The sign-in page exists only under the Federated policy: otherwise no device is sent there,
    // and a password form nobody uses is only something to phish with or guess against.
    if state.settings.auth_policy == AuthPolicy::Federated {
        router = router.route(
            AUTH_PATH,
            get(federated::sign_in_page)
                .post(federated::sign_in)
                .layer(DefaultBodyLimit::max(federated::MAX_FORM_BYTES)),
        );
    }
    router.with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_keeps_query() {
        let req = http::Request::builder()
            .uri("/ENROLLMENTSERVER/Discovery.SVC?x=1")
            .body(())
            .unwrap();
        assert_eq!(normalize_path(req).uri(), "/enrollmentserver/discovery.svc?x=1");
        let other = http::Request::builder().uri("/api/v1/Devices").body(()).unwrap();
        assert_eq!(normalize_path(other).uri(), "/api/v1/Devices");
    }
}
