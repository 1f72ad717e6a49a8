//! Typed configuration: built-in defaults, then a TOML file, then `STEWARD_*` environment variables,
//! validated as a whole before anything listens. The struct is passed down explicitly; there is no
//! global. Every key is listed in [`ENV_KEYS`] with the variable that overrides it, so
//! `steward config check` and `docs/OPERATIONS.md` describe the same set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use steward_core::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: &'static str, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// How devices authenticate at enrollment (MS-MDE2 §3.1.4.1 DiscoverResponse `AuthPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthPolicy {
    /// WS-Security UsernameToken: a user's e-mail + password, or any e-mail + an enrollment token.
    OnPremise,
    /// Our own sign-in page issues a security token (the AuthenticationServiceUrl flow).
    Federated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsKeyAlgorithm {
    /// The default: ~30x cheaper to sign handshakes with than RSA-2048.
    EcdsaP256,
    Rsa2048,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the database, keys and certificates live. Created with mode 0700 if missing.
    pub data_dir: PathBuf,
    /// Socket address to accept HTTPS on.
    pub listen: SocketAddr,
    /// The https URL devices use. Its host also names the TLS server certificate. Default:
    /// `https://<hostname>:<listen port>`.
    pub public_url: Option<String>,
    /// Use this admin token instead of generating one on first start.
    pub admin_token: Option<SecretString>,
    pub database: DatabaseConfig,
    pub tls: TlsConfig,
    pub pki: PkiConfig,
    pub enrollment: EnrollmentConfig,
    pub management: ManagementConfig,
    pub limits: LimitsConfig,
    pub webhooks: WebhooksConfig,
    pub rollouts: RolloutsConfig,
    pub console: ConsoleConfig,
    pub audit: AuditConfig,
    /// systemd's credentials directory (`$CREDENTIALS_DIRECTORY`, set for a unit with
    /// `LoadCredential=`/`SetCredentialEncrypted=`): a `steward-kek` file there is the KEK unless
    /// `pki.kek` or `pki.kek_file` names one. Not a configuration key: systemd sets it.
    #[serde(skip)]
    pub credentials_directory: Option<PathBuf>,
}

/// The environment variable systemd names its credentials directory in.
pub const CREDENTIALS_DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Where the data lives. One crate per backend; the URL's scheme chooses it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://<path>` (relative paths are under the working directory), `postgres://…` (or
    /// `postgresql://…`; TLS with `sslmode=require|verify-ca|verify-full` and `sslrootcert=<file>`),
    /// or absent for the embedded default, `<data_dir>/steward.db`.
    pub url: Option<SecretString>,
    /// SQLite: how long a write waits for a lock another process holds (the `steward` CLI, a
    /// backup) before the request fails as retryable: devices get 503 with Retry-After.
    pub busy_timeout_ms: u64,
    /// PostgreSQL: connections this process opens at most.
    pub max_connections: u32,
    /// PostgreSQL: `statement_timeout` of every connection; a longer statement is cancelled and the
    /// request fails as retryable.
    pub statement_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            busy_timeout_ms: 10_000,
            max_connections: 16,
            statement_timeout_ms: 30_000,
        }
    }
}

/// A parsed database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    /// The URL as given (it may hold a password: never log it).
    Postgres(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Every console user must give a TOTP code after the password; a user without one sets it up
    /// at the first sign-in, before reaching any page. When false, the second factor is optional
    /// (a user may still set it up, and is then always asked for it).
    pub require_totp: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self { require_totp: true }
    }
}

/// Signed checkpoints of the audit chain (docs/OPERATIONS.md, "The audit log"): one after this many
/// new events or this much time with new events, whichever comes first, plus one at every start and
/// shutdown. Only events after the newest checkpoint can be deleted unnoticed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub checkpoint_every_events: u32,
    pub checkpoint_interval_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_every_events: 100,
            checkpoint_interval_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Waits before each retry of a failed delivery, in seconds; when used up the event is given up
    /// (logged as failed) and the subscription moves on. Fractions allowed (tests use milliseconds).
    pub retry_schedule_seconds: Vec<f64>,
    /// Per-attempt deadline (connect, TLS, request and response head).
    pub timeout_seconds: u64,
    /// How often the dispatcher looks for new events and due retries, in milliseconds.
    pub poll_interval_ms: u64,
    /// Extra CA certificates (PEM) trusted for https targets, besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Delivery log retention: rows older than this many days are deleted…
    pub delivery_log_days: u32,
    /// …and at most this many rows are kept per subscription.
    pub delivery_log_max_per_webhook: u32,
}

/// Staged rollouts of profile versions (docs/ROLLOUTS.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutsConfig {
    /// How often active rollouts are evaluated (advanced, halted, completed by their gates), in
    /// seconds: the granularity of soak times and of halting on failures.
    pub evaluate_interval_seconds: u64,
}

impl Default for RolloutsConfig {
    fn default() -> Self {
        Self {
            evaluate_interval_seconds: 60,
        }
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            retry_schedule_seconds: vec![10.0, 60.0, 300.0, 1800.0, 7200.0, 21600.0],
            timeout_seconds: 10,
            poll_interval_ms: 1000,
            ca_file: None,
            delivery_log_days: 30,
            delivery_log_max_per_webhook: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    /// Addresses of TLS-terminating proxies allowed to pass the device's client certificate in
    /// `client_cert_header`. The proxy must itself require and verify client certificates against
    /// Steward's issuing CA (`<data_dir>/pki/issuing-ca.pem`). Empty: the header is never trusted.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Header carrying the client certificate: URL-encoded PEM (nginx `$ssl_client_escaped_cert`) or
    /// base64 DER.
    pub client_cert_header: String,
    /// Provision `syncml:auth-md5` credentials at enrollment and accept sessions authenticated by them
    /// (OMA-DM Cred + challenge) when no client certificate reaches us: for proxies that strip
    /// certificates. MD5 digest is weak; prefer mTLS or the trusted proxy header.
    pub md5_auth: bool,
    /// Hours between read-backs of each device's readable profile settings (drift detection).
    pub verify_interval_hours: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Operator-provided certificate chain (PEM). With `key_file`; otherwise our CA issues one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub key_algorithm: TlsKeyAlgorithm,
    /// More names for the generated server certificate besides the public URL's host.
    pub extra_hostnames: Vec<String>,
    /// The host name devices are sent to for enrollment (Enrollment.svc, also WSTEP renewal) and
    /// management: the only name whose handshakes request a client certificate. Every other name
    /// (discovery, policy, sign-in page, console, API) gets none (interop review E-3, C-6). Unset:
    /// one host for everything, where only `EnterpriseEnrollment.*` is spared the request.
    pub device_hostname: Option<String>,
    /// Obtain and renew a publicly trusted certificate by ACME (RFC 8555) instead.
    pub acme: Option<AcmeConfig>,
}

/// `[tls.acme]`: the certificate comes from an ACME CA (Let's Encrypt by default), is stored sealed
/// in the data directory and renewed at two thirds of its lifetime without a restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The names on the certificate. Default: the public URL's host plus `tls.extra_hostnames`
    /// (add `EnterpriseEnrollment.<domain>` for each e-mail domain whose users enroll).
    pub domains: Vec<String>,
    /// Account contact addresses (`mailto:` added when missing).
    pub contact: Vec<String>,
    pub directory_url: String,
    /// `tls-alpn-01`, answered on the server's own port: the CA connects to port 443 of every name,
    /// so `listen` (or a port forward) must be reachable there. Or `http-01`, answered on a plain
    /// HTTP listener (`http_listen`) that the CA reaches on port 80 (behind a TLS-terminating proxy
    /// that cannot pass `acme-tls/1` through).
    pub challenge: AcmeChallenge,
    /// The plain-HTTP listener of `http-01` (it serves `/.well-known/acme-challenge/` only).
    pub http_listen: SocketAddr,
    /// A PEM CA certificate the directory's TLS certificate chains to, instead of the system's
    /// roots (test CAs such as Pebble).
    pub directory_ca_file: Option<PathBuf>,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            domains: Vec::new(),
            contact: Vec::new(),
            directory_url: LETS_ENCRYPT_DIRECTORY.into(),
            challenge: AcmeChallenge::TlsAlpn01,
            http_listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            directory_ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AcmeChallenge {
    /// RFC 8737.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3.
    #[serde(rename = "http-01")]
    Http01,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PkiConfig {
    /// Key-encryption key (base64 of 32 bytes) that seals private keys at rest.
    pub kek: Option<SecretString>,
    /// File holding the base64 KEK. Default: the systemd credential `steward-kek` when systemd
    /// provides it, else `<data_dir>/kek`, generated with mode 0600 on first start (and warned
    /// about: it sits next to the keys it seals). Refused if group or others can read it.
    pub kek_file: Option<PathBuf>,
    /// Previous KEKs (base64 each), which only open: a blob sealed under one of them still opens
    /// while `steward kek rotate` has not re-sealed it (docs/OPERATIONS.md, "Rotating the KEK").
    pub previous_keks: Vec<SecretString>,
    /// Files holding previous KEKs, as [`PkiConfig::previous_keks`]; each refused if group or
    /// others can read it.
    pub previous_kek_files: Vec<PathBuf>,
    /// Organisation name written into our CA certificates (device certificates carry only
    /// `CN=<DeviceID>`, see docs/PROTOCOLS.md).
    pub organization: String,
    /// Lifetime of device identity certificates.
    pub device_cert_validity_days: u32,
    /// Days before expiry when Windows starts WSTEP renewal (CertificateStore/My/WSTEP/Renew/RenewPeriod).
    pub renew_period_days: u32,
    /// Days between renewal retries (…/Renew/RetryInterval).
    pub renew_retry_interval_days: u32,
    /// Smallest RSA modulus accepted in a device CSR.
    pub min_rsa_bits: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentConfig {
    pub auth_policy: AuthPolicy,
    /// MS-MDE2 provider id: DMClient/Provider/<id> and the w7 PROVIDER-ID.
    pub provider_id: String,
    /// Shown to the user as the management server's name (w7 NAME).
    pub server_name: String,
    /// Minutes between check-ins in the first poll phase, and how many (DMClient Poll).
    pub poll_first_interval_minutes: u32,
    pub poll_first_count: u32,
    /// Steady-state minutes between check-ins (IntervalForRemainingScheduledRetries; count infinite).
    pub poll_interval_minutes: u32,
    /// How long a federated sign-in token stays valid.
    pub federated_token_minutes: u32,
    /// Hours between inventory refreshes (asked at the start of a session once this has passed).
    pub inventory_interval_hours: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest enrollment (SOAP) request body accepted; larger gets 413 before it is read.
    pub enrollment_body_bytes: usize,
    /// Largest management (SyncML) message accepted.
    pub management_body_bytes: usize,
    /// Largest admin API request body (JSON); larger gets a 413 problem document.
    pub api_body_bytes: usize,
    /// Largest console form body; larger gets 413.
    pub console_form_bytes: usize,
    /// Commands owed a Status that one device message may carry; more and the whole message is
    /// refused (SyncHdr Status 413) and nothing in it is processed.
    pub device_commands_per_message: usize,
    /// Management requests one enrollment may have in flight at once (per process); more are
    /// answered 503 with `Retry-After`. 2 lets a retry overlap the request it repeats.
    pub sessions_per_device: usize,
    /// Discover requests per minute from one peer address (a token bucket with that burst; the
    /// trusted proxies are exempt); more are answered with a retryable SOAP fault (503,
    /// `Retry-After`). 0 turns it off.
    pub discovery_per_minute_per_address: u32,
    /// TLS handshake deadline.
    pub handshake_timeout_seconds: u64,
    /// A request's head (request line and headers) must arrive within this many seconds of its
    /// first byte; otherwise the connection is closed.
    pub header_timeout_seconds: u64,
    /// A request's whole body must arrive within this many seconds of its head; otherwise the
    /// request is answered 408 and the connection closed. Applies to every surface.
    pub body_timeout_seconds: u64,
    /// After `body_min_rate_grace_seconds`, a body must keep arriving at this average rate
    /// (bytes per second since its head): a body of N bytes may take grace + N / rate seconds, at
    /// most `body_timeout_seconds`. 0 turns the rate check off.
    pub body_min_rate_bytes_per_second: u64,
    pub body_min_rate_grace_seconds: u64,
    /// A kept-alive connection with no request for this many seconds is closed.
    pub idle_timeout_seconds: u64,
    /// Connections open at once; more are answered 503 with `Retry-After`. Lowered at start to fit
    /// the process's file-descriptor limit.
    pub max_connections: usize,
    /// Connections open at once from one peer address (the trusted proxies are exempt); more are
    /// answered 503 with `Retry-After`.
    pub max_connections_per_address: usize,
    /// Password hashes (Argon2id, 19 MiB each) computed at once. Absent: from the machine, two per
    /// core and at most an eighth of the memory.
    pub password_hashes: Option<usize>,
    /// Password checks that may wait (up to 2 s) for a hashing slot; more are refused at once as
    /// retryable (503 with `Retry-After`).
    pub password_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("steward-data"),
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            public_url: None,
            admin_token: None,
            database: DatabaseConfig::default(),
            tls: TlsConfig::default(),
            pki: PkiConfig::default(),
            enrollment: EnrollmentConfig::default(),
            management: ManagementConfig::default(),
            limits: LimitsConfig::default(),
            webhooks: WebhooksConfig::default(),
            rollouts: RolloutsConfig::default(),
            console: ConsoleConfig::default(),
            audit: AuditConfig::default(),
            credentials_directory: None,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            key_algorithm: TlsKeyAlgorithm::EcdsaP256,
            extra_hostnames: Vec::new(),
            device_hostname: None,
            acme: None,
        }
    }
}

impl Default for PkiConfig {
    fn default() -> Self {
        Self {
            kek: None,
            kek_file: None,
            previous_keks: Vec::new(),
            previous_kek_files: Vec::new(),
            organization: "Steward".into(),
            device_cert_validity_days: 365,
            renew_period_days: 60,
            renew_retry_interval_days: 4,
            min_rsa_bits: 2048,
        }
    }
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        Self {
            auth_policy: AuthPolicy::OnPremise,
            provider_id: "Steward".into(),
            server_name: "Steward".into(),
            poll_first_interval_minutes: 3,
            poll_first_count: 5,
            poll_interval_minutes: 60,
            federated_token_minutes: 15,
            inventory_interval_hours: 24,
        }
    }
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            client_cert_header: "x-client-cert".into(),
            md5_auth: false,
            verify_interval_hours: 24,
        }
    }
}

/// Default of `limits.device_commands_per_message`: the Windows adapter's own cap, kept equal to
/// it by a test in compose.rs, the one module that names the adapter.
pub const DEFAULT_DEVICE_COMMANDS_PER_MESSAGE: usize = 5_000;

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            enrollment_body_bytes: 256 * 1024,
            management_body_bytes: 4 * 1024 * 1024,
            api_body_bytes: steward_api::API_BODY_BYTES,
            console_form_bytes: steward_console::FORM_BYTES,
            device_commands_per_message: DEFAULT_DEVICE_COMMANDS_PER_MESSAGE,
            sessions_per_device: 2,
            discovery_per_minute_per_address: 600,
            handshake_timeout_seconds: 10,
            header_timeout_seconds: 10,
            body_timeout_seconds: 30,
            body_min_rate_bytes_per_second: 1024,
            body_min_rate_grace_seconds: 10,
            idle_timeout_seconds: 60,
            max_connections: 4096,
            max_connections_per_address: 256,
            password_hashes: None,
            password_queue: 16,
        }
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("limits.{m}")));
        for (name, value, max) in [
            ("handshake_timeout_seconds", self.handshake_timeout_seconds, 300),
            ("header_timeout_seconds", self.header_timeout_seconds, 300),
            ("body_timeout_seconds", self.body_timeout_seconds, 3600),
            ("idle_timeout_seconds", self.idle_timeout_seconds, 3600),
        ] {
            if !(1..=max).contains(&value) {
                return Err(ConfigError::Invalid(format!(
                    "limits.{name} must be between 1 and {max}"
                )));
            }
        }
        if self.body_min_rate_bytes_per_second > 64 * 1024 * 1024 {
            return invalid("body_min_rate_bytes_per_second must be at most 64 MiB/s (0 turns it off)");
        }
        if self.body_min_rate_grace_seconds > self.body_timeout_seconds {
            return invalid("body_min_rate_grace_seconds must not exceed body_timeout_seconds");
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return invalid("max_connections must be between 1 and 1000000");
        }
        if !(1..=self.max_connections).contains(&self.max_connections_per_address) {
            return invalid("max_connections_per_address must be between 1 and max_connections");
        }
        if self.password_hashes.is_some_and(|n| !(1..=1024).contains(&n)) {
            return invalid("password_hashes must be between 1 and 1024 (or absent: from the machine)");
        }
        if !(64 * 1024..=64 * 1024 * 1024).contains(&self.api_body_bytes) {
            return invalid("api_body_bytes must be between 64 KiB and 64 MiB");
        }
        if !(4 * 1024..=1024 * 1024).contains(&self.console_form_bytes) {
            return invalid("console_form_bytes must be between 4 KiB and 1 MiB");
        }
        if !(100..=100_000).contains(&self.device_commands_per_message) {
            return invalid("device_commands_per_message must be between 100 and 100000");
        }
        if !(1..=64).contains(&self.sessions_per_device) {
            return invalid("sessions_per_device must be between 1 and 64");
        }
        if self.discovery_per_minute_per_address > 100_000 {
            return invalid("discovery_per_minute_per_address must be at most 100000 (0 turns it off)");
        }
        if self.password_queue > 10_000 {
            return invalid("password_queue must be at most 10000");
        }
        Ok(())
    }
}

/// Every environment variable Steward reads, with the config key it overrides (dotted TOML path).
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("STEWARD_DATA_DIR", "data_dir"),
    ("STEWARD_LISTEN", "listen"),
    ("STEWARD_DATABASE_URL", "database.url"),
    ("STEWARD_DATABASE_MAX_CONNECTIONS", "database.max_connections"),
    ("STEWARD_DATABASE_STATEMENT_TIMEOUT_MS", "database.statement_timeout_ms"),
    ("STEWARD_PUBLIC_URL", "public_url"),
    ("STEWARD_ADMIN_TOKEN", "admin_token"),
    ("STEWARD_TLS_CERT_FILE", "tls.cert_file"),
    ("STEWARD_TLS_KEY_FILE", "tls.key_file"),
    ("STEWARD_TLS_KEY_ALGORITHM", "tls.key_algorithm"),
    ("STEWARD_TLS_EXTRA_HOSTNAMES", "tls.extra_hostnames"),
    ("STEWARD_TLS_DEVICE_HOSTNAME", "tls.device_hostname"),
    ("STEWARD_ACME_DOMAINS", "tls.acme.domains"),
    ("STEWARD_ACME_CONTACT", "tls.acme.contact"),
    ("STEWARD_ACME_DIRECTORY_URL", "tls.acme.directory_url"),
    ("STEWARD_ACME_CHALLENGE", "tls.acme.challenge"),
    ("STEWARD_ACME_DIRECTORY_CA_FILE", "tls.acme.directory_ca_file"),
    ("STEWARD_ACME_HTTP_LISTEN", "tls.acme.http_listen"),
    ("STEWARD_KEK", "pki.kek"),
    ("STEWARD_KEK_FILE", "pki.kek_file"),
    ("STEWARD_PREVIOUS_KEKS", "pki.previous_keks"),
    ("STEWARD_PREVIOUS_KEK_FILES", "pki.previous_kek_files"),
    ("STEWARD_PKI_ORGANIZATION", "pki.organization"),
    ("STEWARD_DEVICE_CERT_VALIDITY_DAYS", "pki.device_cert_validity_days"),
    ("STEWARD_RENEW_PERIOD_DAYS", "pki.renew_period_days"),
    ("STEWARD_AUTH_POLICY", "enrollment.auth_policy"),
    ("STEWARD_PROVIDER_ID", "enrollment.provider_id"),
    ("STEWARD_SERVER_NAME", "enrollment.server_name"),
    ("STEWARD_POLL_INTERVAL_MINUTES", "enrollment.poll_interval_minutes"),
    ("STEWARD_ENROLLMENT_BODY_BYTES", "limits.enrollment_body_bytes"),
    ("STEWARD_MANAGEMENT_BODY_BYTES", "limits.management_body_bytes"),
    ("STEWARD_API_BODY_BYTES", "limits.api_body_bytes"),
    ("STEWARD_CONSOLE_FORM_BYTES", "limits.console_form_bytes"),
    (
        "STEWARD_DEVICE_COMMANDS_PER_MESSAGE",
        "limits.device_commands_per_message",
    ),
    ("STEWARD_SESSIONS_PER_DEVICE", "limits.sessions_per_device"),
    (
        "STEWARD_DISCOVERY_PER_MINUTE_PER_ADDRESS",
        "limits.discovery_per_minute_per_address",
    ),
    ("STEWARD_HANDSHAKE_TIMEOUT_SECONDS", "limits.handshake_timeout_seconds"),
    ("STEWARD_HEADER_TIMEOUT_SECONDS", "limits.header_timeout_seconds"),
    ("STEWARD_BODY_TIMEOUT_SECONDS", "limits.body_timeout_seconds"),
    ("STEWARD_BODY_MIN_RATE", "limits.body_min_rate_bytes_per_second"),
    (
        "STEWARD_BODY_MIN_RATE_GRACE_SECONDS",
        "limits.body_min_rate_grace_seconds",
    ),
    ("STEWARD_IDLE_TIMEOUT_SECONDS", "limits.idle_timeout_seconds"),
    ("STEWARD_MAX_CONNECTIONS", "limits.max_connections"),
    (
        "STEWARD_MAX_CONNECTIONS_PER_ADDRESS",
        "limits.max_connections_per_address",
    ),
    ("STEWARD_PASSWORD_HASHES", "limits.password_hashes"),
    ("STEWARD_PASSWORD_QUEUE", "limits.password_queue"),
    (
        "STEWARD_INVENTORY_INTERVAL_HOURS",
        "enrollment.inventory_interval_hours",
    ),
    ("STEWARD_VERIFY_INTERVAL_HOURS", "management.verify_interval_hours"),
    (
        "STEWARD_ROLLOUT_EVALUATE_INTERVAL_SECONDS",
        "rollouts.evaluate_interval_seconds",
    ),
    ("STEWARD_CONSOLE_REQUIRE_TOTP", "console.require_totp"),
    ("STEWARD_AUDIT_CHECKPOINT_EVERY_EVENTS", "audit.checkpoint_every_events"),
    (
        "STEWARD_AUDIT_CHECKPOINT_INTERVAL_SECONDS",
        "audit.checkpoint_interval_seconds",
    ),
];

/// Boolean keys: their environment value is true/false, 1/0, yes/no or on/off.
/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "tls.extra_hostnames",
    "management.trusted_proxies",
    "tls.acme.domains",
    "tls.acme.contact",
    "pki.previous_keks",
    "pki.previous_kek_files",
];

const BOOL_KEYS: &[&str] = &["management.md5_auth", "console.require_totp"];

/// Keys whose TOML type is not a string: their environment value is parsed as that type.
const NUMERIC_KEYS: &[&str] = &[
    "database.max_connections",
    "database.statement_timeout_ms",
    "pki.device_cert_validity_days",
    "pki.renew_period_days",
    "enrollment.poll_interval_minutes",
    "limits.enrollment_body_bytes",
    "limits.management_body_bytes",
    "limits.api_body_bytes",
    "limits.console_form_bytes",
    "limits.device_commands_per_message",
    "limits.sessions_per_device",
    "limits.discovery_per_minute_per_address",
    "limits.handshake_timeout_seconds",
    "limits.header_timeout_seconds",
    "limits.body_timeout_seconds",
    "limits.body_min_rate_bytes_per_second",
    "limits.body_min_rate_grace_seconds",
    "limits.idle_timeout_seconds",
    "limits.max_connections",
    "limits.max_connections_per_address",
    "limits.password_hashes",
    "limits.password_queue",
    "enrollment.inventory_interval_hours",
    "management.verify_interval_hours",
    "rollouts.evaluate_interval_seconds",
    "audit.checkpoint_every_events",
    "audit.checkpoint_interval_seconds",
];

impl Config {
    /// Loads defaults, then `file` (if given), then the environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, |k| std::env::var(k).ok())
    }

    /// As [`Config::load`] with an injectable environment (tests).
    pub fn load_from(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        for (var, key) in ENV_KEYS {
            let Some(raw) = env(var) else { continue };
            let value = if NUMERIC_KEYS.contains(key) {
                toml::Value::Integer(raw.trim().parse().map_err(|_| ConfigError::Env {
                    var,
                    message: format!("expected a whole number, got {raw:?}"),
                })?)
            } else if BOOL_KEYS.contains(key) {
                toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => true,
                    "0" | "false" | "no" | "off" => false,
                    _ => {
                        return Err(ConfigError::Env {
                            var,
                            message: format!("expected true or false, got {raw:?}"),
                        });
                    }
                })
            } else if LIST_KEYS.contains(key) {
                toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_owned()))
                        .collect(),
                )
            } else {
                toml::Value::String(raw)
            };
            set_path(&mut table, key, value);
        }
        let source = file.map_or_else(|| PathBuf::from("<environment>"), Path::to_owned);
        let mut config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: source,
                    message: e.to_string(),
                })?;
        config.credentials_directory = env(CREDENTIALS_DIRECTORY_ENV)
            .filter(|d| !d.trim().is_empty())
            .map(PathBuf::from);
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that can be checked without touching the network or the data directory.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let url = self.public_url();
        let Some(host) = public_host(&url) else {
            return invalid(format!("public_url {url:?} must be an https:// URL with a host name"));
        };
        if host.is_empty() {
            return invalid("public_url has an empty host".into());
        }
        self.database_url()?;
        if !(1..=600_000).contains(&self.database.busy_timeout_ms) {
            return invalid("database.busy_timeout_ms must be between 1 and 600000".into());
        }
        if !(1..=10_000).contains(&self.database.max_connections) {
            return invalid("database.max_connections must be between 1 and 10000".into());
        }
        if !(1..=3_600_000).contains(&self.database.statement_timeout_ms) {
            return invalid("database.statement_timeout_ms must be between 1 and 3600000".into());
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid("tls.cert_file and tls.key_file must be given together".into());
        }
        if let Some(d) = &self.tls.device_hostname
            && !is_dns_name(d)
        {
            return invalid(format!(
                "tls.device_hostname {d:?} must be a DNS name (TLS carries no name for an address, so the host could not be told apart)"
            ));
        }
        if let Some(acme) = &self.tls.acme {
            if self.tls.cert_file.is_some() {
                return invalid(
                    "tls.acme and tls.cert_file exclude each other: choose one source of the certificate".into(),
                );
            }
            if !acme.directory_url.starts_with("https://") {
                return invalid(format!(
                    "tls.acme.directory_url {:?} must be an https:// URL",
                    acme.directory_url
                ));
            }
            for d in self.acme_domains() {
                if !is_dns_name(&d) {
                    return invalid(format!(
                        "tls.acme.domains: {d:?} is not a DNS name (ACME certifies names, not addresses)"
                    ));
                }
            }
            if acme.challenge == AcmeChallenge::Http01 && acme.http_listen == self.listen {
                return invalid("tls.acme.http_listen must differ from listen (plain HTTP beside HTTPS)".into());
            }
            if let Some(f) = &acme.directory_ca_file
                && !f.is_file()
            {
                return invalid(format!("tls.acme.directory_ca_file {} does not exist", f.display()));
            }
        }
        let p = &self.pki;
        if !(1..=3650).contains(&p.device_cert_validity_days) {
            return invalid("pki.device_cert_validity_days must be between 1 and 3650".into());
        }
        if p.renew_period_days == 0 || p.renew_period_days >= p.device_cert_validity_days {
            return invalid("pki.renew_period_days must be at least 1 and less than device_cert_validity_days".into());
        }
        if p.min_rsa_bits < 2048 {
            return invalid("pki.min_rsa_bits below 2048 is not allowed".into());
        }
        if let Some(kek) = &p.kek
            && steward_pki::Kek::from_base64(kek.expose()).is_err()
        {
            return invalid("pki.kek must be the base64 of exactly 32 bytes".into());
        }
        if p.previous_keks
            .iter()
            .any(|k| steward_pki::Kek::from_base64(k.expose()).is_err())
        {
            return invalid("pki.previous_keks: each must be the base64 of exactly 32 bytes".into());
        }
        let e = &self.enrollment;
        let id_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !id_ok(&e.provider_id) {
            return invalid(
                "enrollment.provider_id must be 1-64 characters of letters, digits, '-', '_' or '.'".into(),
            );
        }
        if e.poll_interval_minutes == 0 || e.poll_first_interval_minutes == 0 {
            return invalid("poll intervals must be at least one minute".into());
        }
        // MS-MDE2 §2.2.9.3: "The server MUST NOT set NumberOfFirstRetries to 0", and all three
        // NumberOf*Retries at 0 "will cause a configuration failure" (interop review E-4).
        if e.poll_first_count == 0 {
            return invalid(
                "enrollment.poll_first_count must be at least 1 (MS-MDE2 §2.2.9.3: NumberOfFirstRetries must not be 0)"
                    .into(),
            );
        }
        if !(1..=120).contains(&e.federated_token_minutes) {
            return invalid("enrollment.federated_token_minutes must be between 1 and 120".into());
        }
        if http::HeaderName::from_bytes(self.management.client_cert_header.as_bytes()).is_err() {
            return invalid("management.client_cert_header is not a valid HTTP header name".into());
        }
        if !(1..=24 * 30).contains(&e.inventory_interval_hours) {
            return invalid("enrollment.inventory_interval_hours must be between 1 and 720".into());
        }
        if !(1..=86_400).contains(&self.rollouts.evaluate_interval_seconds) {
            return invalid("rollouts.evaluate_interval_seconds must be between 1 and 86400".into());
        }
        if !(1..=24 * 30).contains(&self.management.verify_interval_hours) {
            return invalid("management.verify_interval_hours must be between 1 and 720".into());
        }
        if !(64 * 1024..=64 * 1024 * 1024).contains(&self.limits.management_body_bytes) {
            return invalid("limits.management_body_bytes must be between 64 KiB and 64 MiB".into());
        }
        if !(4096..=64 * 1024 * 1024).contains(&self.limits.enrollment_body_bytes) {
            return invalid("limits.enrollment_body_bytes must be between 4 KiB and 64 MiB".into());
        }
        self.limits.validate()?;
        let w = &self.webhooks;
        if w.retry_schedule_seconds.len() > 20
            || w.retry_schedule_seconds
                .iter()
                .any(|s| !s.is_finite() || *s <= 0.0 || *s > 7.0 * 86400.0)
        {
            return invalid(
                "webhooks.retry_schedule_seconds: at most 20 waits, each above 0 and at most 7 days".into(),
            );
        }
        if !(1..=60).contains(&w.timeout_seconds) {
            return invalid("webhooks.timeout_seconds must be between 1 and 60".into());
        }
        if !(10..=60_000).contains(&w.poll_interval_ms) {
            return invalid("webhooks.poll_interval_ms must be between 10 and 60000".into());
        }
        if w.delivery_log_days == 0 || w.delivery_log_max_per_webhook == 0 {
            return invalid("webhooks.delivery_log_days and delivery_log_max_per_webhook must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.audit.checkpoint_every_events) {
            return invalid("audit.checkpoint_every_events must be between 1 and 1000000".into());
        }
        if !(1..=86_400).contains(&self.audit.checkpoint_interval_seconds) {
            return invalid("audit.checkpoint_interval_seconds must be between 1 and 86400".into());
        }
        if let Some(t) = &self.admin_token
            && t.expose().len() < 16
        {
            return invalid("admin_token must be at least 16 characters".into());
        }
        Ok(())
    }

    /// The database to open: `database.url`, or the embedded SQLite file in the data directory.
    pub fn database_url(&self) -> Result<DatabaseUrl, ConfigError> {
        let Some(url) = &self.database.url else {
            return Ok(DatabaseUrl::Sqlite(self.data_dir.join("steward.db")));
        };
        let url = url.expose().trim();
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err(ConfigError::Invalid("database.url: sqlite:// needs a file path".into()));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        if matches!(scheme, "postgres" | "postgresql") {
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        Err(ConfigError::Invalid(format!(
            "database.url: unsupported database {scheme:?} (this version supports sqlite:// and postgres://)"
        )))
    }

    /// The public URL without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let host = std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "localhost".into());
                format!("https://{host}:{}", self.listen.port())
            }
        }
    }

    /// The device host's base URL (`tls.device_hostname` with the public URL's scheme and port),
    /// or `None` when devices use the public URL for everything.
    pub fn device_url(&self) -> Option<String> {
        let device = self.tls.device_hostname.as_deref()?;
        let url = self.public_url();
        let rest = url.strip_prefix("https://")?;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        // The public URL's port, if any (not the colons of an IPv6 literal).
        let port = authority
            .rsplit_once(':')
            .filter(|(h, p)| {
                !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (!h.starts_with('[') || h.ends_with(']'))
            })
            .map(|(_, p)| format!(":{p}"))
            .unwrap_or_default();
        Some(format!("https://{device}{port}{tail}"))
    }

    /// The names of the ACME certificate: `tls.acme.domains`, or the public host and
    /// `tls.extra_hostnames` (empty without `[tls.acme]`).
    pub fn acme_domains(&self) -> Vec<String> {
        match &self.tls.acme {
            None => Vec::new(),
            Some(a) if !a.domains.is_empty() => a.domains.clone(),
            Some(_) => self.tls_hostnames(),
        }
    }

    /// Host names (or IPs) the TLS server certificate must cover.
    pub fn tls_hostnames(&self) -> Vec<String> {
        let mut names: Vec<String> = public_host(&self.public_url()).into_iter().collect();
        for n in self.tls.device_hostname.iter().chain(&self.tls.extra_hostnames) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }
}

/// A DNS host name: dot-separated labels of letters, digits and hyphens, not an IP address.
fn is_dns_name(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.parse::<std::net::IpAddr>().is_err()
        && d.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        && !d.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// Host part of an https URL (brackets stripped from IPv6 literals), or None if not https.
pub fn public_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?.to_owned()
    } else {
        authority.split(':').next()?.to_owned()
    };
    Some(host)
}

fn set_path(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts = dotted.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_owned(), value);
            return;
        }
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else { return };
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn poll_first_count_zero_is_refused() {
        // MS-MDE2 §2.2.9.3 (interop review E-4).
        let mut c = Config::default();
        c.enrollment.poll_first_count = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("poll_first_count"), "{e}");
        c.enrollment.poll_first_count = 1;
        c.validate().unwrap();
    }

    #[test]
    fn defaults_validate() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.listen.port(), 8443);
        assert_eq!(c.enrollment.auth_policy, AuthPolicy::OnPremise);
        assert_eq!(c.database.busy_timeout_ms, 10_000);
        assert_eq!(c.credentials_directory, None);
        let c = Config::load_from(
            None,
            env(&[("CREDENTIALS_DIRECTORY", "/run/credentials/steward.service")]),
        )
        .unwrap();
        assert_eq!(
            c.credentials_directory.as_deref(),
            Some(Path::new("/run/credentials/steward.service"))
        );
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steward.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\npublic_url = \"https://mdm.example.com\"\n[enrollment]\nauth_policy = \"federated\"\n[pki]\nrenew_period_days = 30\n",
        )
        .unwrap();
        let c = Config::load_from(
            Some(&path),
            env(&[
                ("STEWARD_LISTEN", "127.0.0.1:9100"),
                ("STEWARD_RENEW_PERIOD_DAYS", "45"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(c.public_url(), "https://mdm.example.com");
        assert_eq!(c.enrollment.auth_policy, AuthPolicy::Federated);
        assert_eq!(c.pki.renew_period_days, 45);
        assert_eq!(c.tls_hostnames(), vec!["mdm.example.com".to_owned()]);
    }

    #[test]
    fn acme_from_the_file_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steward.toml");
        std::fs::write(
            &path,
            "public_url = \"https://mdm.example.com:8443\"\n[tls]\ndevice_hostname = \"manage.example.com\"\n[tls.acme]\ncontact = [\"admin@example.com\"]\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&path), env(&[])).unwrap();
        let acme = c.tls.acme.as_ref().unwrap();
        assert_eq!(acme.directory_url, LETS_ENCRYPT_DIRECTORY);
        assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
        // Default names: the public host and the device host.
        assert_eq!(c.acme_domains(), vec!["mdm.example.com", "manage.example.com"]);
        assert_eq!(c.device_url().as_deref(), Some("https://manage.example.com:8443"));

        let c = Config::load_from(
            None,
            env(&[
                ("STEWARD_PUBLIC_URL", "https://mdm.example.com"),
                (
                    "STEWARD_ACME_DOMAINS",
                    "mdm.example.com, EnterpriseEnrollment.example.com",
                ),
                (
                    "STEWARD_ACME_DIRECTORY_URL",
                    "https://acme-staging-v02.api.letsencrypt.org/directory",
                ),
                ("STEWARD_ACME_CHALLENGE", "tls-alpn-01"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.acme_domains(),
            vec!["mdm.example.com", "EnterpriseEnrollment.example.com"]
        );
        assert_eq!(c.device_url(), None);

        for bad in [
            &[("STEWARD_ACME_DOMAINS", "192.0.2.1")][..],
            &[("STEWARD_ACME_DOMAINS", "bad_name.example.com")],
            &[("STEWARD_ACME_DIRECTORY_URL", "http://acme.example.com/dir")],
            &[("STEWARD_ACME_CHALLENGE", "dns-01")],
            &[("STEWARD_ACME_CHALLENGE", "http-01"), ("STEWARD_LISTEN", "0.0.0.0:80")],
            &[("STEWARD_ACME_DIRECTORY_CA_FILE", "/nonexistent/ca.pem")],
            &[("STEWARD_TLS_DEVICE_HOSTNAME", "10.0.0.1")],
            &[
                ("STEWARD_ACME_DOMAINS", "mdm.example.com"),
                ("STEWARD_TLS_CERT_FILE", "/etc/ssl/c.pem"),
                ("STEWARD_TLS_KEY_FILE", "/etc/ssl/k.pem"),
            ],
        ] {
            let pairs: Vec<(&'static str, &'static str)> = bad.to_vec();
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(pairs.into_boxed_slice());
            assert!(Config::load_from(None, env(pairs)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Config::load_from(None, env(&[("STEWARD_PUBLIC_URL", "http://plain.example.com")])).is_err());
        assert!(Config::load_from(None, env(&[("STEWARD_LISTEN", "not an address")])).is_err());
        assert!(Config::load_from(None, env(&[("STEWARD_RENEW_PERIOD_DAYS", "many")])).is_err());
        assert!(Config::load_from(None, env(&[("STEWARD_ADMIN_TOKEN", "short")])).is_err());
        assert!(Config::load_from(None, env(&[("STEWARD_KEK", "bm90IDMyIGJ5dGVz")])).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        assert!(matches!(
            Config::load_from(Some(&path), env(&[])),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn database_url_chooses_the_backend_and_pool_settings_are_checked() {
        const URL: &str = "postgres://steward:pw@db.internal:5432/steward?sslmode=verify-full";
        let c = Config::load_from(
            None,
            env(&[
                ("STEWARD_DATABASE_URL", URL),
                ("STEWARD_DATABASE_MAX_CONNECTIONS", "40"),
                ("STEWARD_DATABASE_STATEMENT_TIMEOUT_MS", "5000"),
            ]),
        )
        .unwrap();
        assert_eq!(c.database_url().unwrap(), DatabaseUrl::Postgres(URL.into()));
        assert_eq!(
            (c.database.max_connections, c.database.statement_timeout_ms),
            (40, 5000)
        );
        let c = Config::load_from(None, env(&[("STEWARD_DATABASE_URL", "postgresql://localhost/steward")])).unwrap();
        assert!(matches!(c.database_url().unwrap(), DatabaseUrl::Postgres(_)));
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(
            (c.database.max_connections, c.database.statement_timeout_ms),
            (16, 30_000)
        );
        assert!(matches!(c.database_url().unwrap(), DatabaseUrl::Sqlite(_)));
        for bad in [
            &[("STEWARD_DATABASE_URL", "mysql://localhost/steward")][..],
            &[("STEWARD_DATABASE_MAX_CONNECTIONS", "0")][..],
            &[("STEWARD_DATABASE_STATEMENT_TIMEOUT_MS", "0")][..],
        ] {
            let err = Config::load_from(None, env(bad)).unwrap_err().to_string();
            assert!(err.contains("database."), "{bad:?}: {err}");
        }
    }

    #[test]
    fn limits_from_the_environment_and_their_checks() {
        let c = Config::load_from(
            None,
            env(&[
                ("STEWARD_BODY_TIMEOUT_SECONDS", "5"),
                ("STEWARD_BODY_MIN_RATE_GRACE_SECONDS", "2"),
                ("STEWARD_MAX_CONNECTIONS_PER_ADDRESS", "8"),
                ("STEWARD_PASSWORD_HASHES", "3"),
                ("STEWARD_PASSWORD_QUEUE", "0"),
                ("STEWARD_API_BODY_BYTES", "2097152"),
                ("STEWARD_SESSIONS_PER_DEVICE", "1"),
                ("STEWARD_DISCOVERY_PER_MINUTE_PER_ADDRESS", "0"),
                (
                    "STEWARD_PREVIOUS_KEK_FILES",
                    "/etc/steward/kek.old, /etc/steward/kek.older",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.limits.body_timeout_seconds, 5);
        assert_eq!(c.limits.max_connections_per_address, 8);
        assert_eq!(c.limits.password_hashes, Some(3));
        assert_eq!(c.limits.password_queue, 0);
        assert_eq!(c.limits.api_body_bytes, 2 * 1024 * 1024);
        assert_eq!(c.limits.sessions_per_device, 1);
        assert_eq!(c.limits.discovery_per_minute_per_address, 0);
        assert_eq!(
            c.pki.previous_kek_files,
            vec![
                PathBuf::from("/etc/steward/kek.old"),
                PathBuf::from("/etc/steward/kek.older")
            ]
        );
        let d = Config::default().limits;
        assert_eq!(
            (d.api_body_bytes, d.console_form_bytes, d.device_commands_per_message),
            (1024 * 1024, 64 * 1024, 5_000),
            "the same defaults as the constants they replace"
        );
        assert_eq!((d.sessions_per_device, d.discovery_per_minute_per_address), (2, 600));
        assert_eq!(Config::default().limits.password_hashes, None, "sized from the machine");
        for bad in [
            &[("STEWARD_HEADER_TIMEOUT_SECONDS", "0")][..],
            &[("STEWARD_BODY_MIN_RATE_GRACE_SECONDS", "31")],
            &[
                ("STEWARD_MAX_CONNECTIONS", "10"),
                ("STEWARD_MAX_CONNECTIONS_PER_ADDRESS", "11"),
            ],
            &[("STEWARD_PASSWORD_HASHES", "0")],
            &[("STEWARD_API_BODY_BYTES", "1024")],
            &[("STEWARD_CONSOLE_FORM_BYTES", "10")],
            &[("STEWARD_DEVICE_COMMANDS_PER_MESSAGE", "0")],
            &[("STEWARD_SESSIONS_PER_DEVICE", "0")],
            &[("STEWARD_PREVIOUS_KEKS", "bm90IDMyIGJ5dGVz")],
            &[("STEWARD_IDLE_TIMEOUT_SECONDS", "soon")],
        ] {
            let pairs: Vec<(String, String)> = bad.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            let lookup = move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            assert!(Config::load_from(None, lookup).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let c = Config::load_from(None, env(&[("STEWARD_ADMIN_TOKEN", "stw_adm_supersecretvalue123")])).unwrap();
        assert!(!format!("{c:?}").contains("supersecret"));
    }

    #[test]
    fn host_extraction() {
        assert_eq!(public_host("https://a.b:8443/x").as_deref(), Some("a.b"));
        assert_eq!(public_host("https://[::1]:8443").as_deref(), Some("::1"));
        assert_eq!(public_host("http://a.b"), None);
    }
}
