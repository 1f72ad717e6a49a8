//! Wiring: the services over the store, the platform adapters, and the router of every surface.
//! This is the one module outside the platform crates that names a platform (the architecture test
//! in `tests/integration/architecture.rs` holds everything else to that); adding a platform means
//! adding its adapter here.

use std::sync::Arc;

use axum::Router;
use axum::response::{Redirect, Response};
use axum::routing::get;
use steward_core::service::identity::{Identity, IdentitySettings};
use steward_core::service::{Core, PasswordPolicy, SystemClock};
use steward_core::{AuditChainKey, Platforms, Store};
use steward_windows::{WindowsAdapter, WindowsPki, WindowsSettings, WindowsState};

use crate::Pki;
use crate::config::{AuthPolicy, Config, LimitsConfig};
use crate::listener::Rewrite;

/// The request rewrite the listener applies before routing: Windows device paths are matched
/// case-insensitively.
pub const REWRITE: Rewrite = steward_windows::normalize_path::<hyper::body::Incoming>;

/// What the Windows adapter needs from the configuration.
fn windows_settings(config: &Config) -> WindowsSettings {
    let e = &config.enrollment;
    let m = &config.management;
    WindowsSettings {
        public_url: config.public_url(),
        device_url: config.device_url(),
        auth_policy: match e.auth_policy {
            AuthPolicy::OnPremise => steward_windows::AuthPolicy::OnPremise,
            AuthPolicy::Federated => steward_windows::AuthPolicy::Federated,
        },
        provider_id: e.provider_id.clone(),
        server_name: e.server_name.clone(),
        poll_first_interval_minutes: e.poll_first_interval_minutes,
        poll_first_count: e.poll_first_count,
        poll_interval_minutes: e.poll_interval_minutes,
        federated_token_minutes: e.federated_token_minutes,
        inventory_interval_hours: e.inventory_interval_hours,
        verify_interval_hours: m.verify_interval_hours,
        enrollment_body_bytes: config.limits.enrollment_body_bytes,
        management_body_bytes: config.limits.management_body_bytes,
        device_commands_per_message: config.limits.device_commands_per_message,
        sessions_per_device: config.limits.sessions_per_device,
        discovery_per_minute: config.limits.discovery_per_minute_per_address,
        md5_auth: m.md5_auth,
        forwarded_cert: steward_http::ForwardedCertPolicy {
            trusted_proxies: m.trusted_proxies.clone(),
            header: m.client_cert_header.clone(),
        },
        min_rsa_bits: config.pki.min_rsa_bits,
        device_cert_validity_days: config.pki.device_cert_validity_days,
        renew_period_days: config.pki.renew_period_days,
        renew_retry_interval_days: config.pki.renew_retry_interval_days,
    }
}

/// The platforms this server manages; Windows under the DMClient provider id devices enroll with.
pub fn platforms(windows_provider_id: &str) -> Platforms {
    Platforms::new([Arc::new(WindowsAdapter::new(windows_provider_id)) as Arc<dyn steward_core::PlatformAdapter>])
}

/// Password hashing as `limits` configure it; what they leave open is sized from this machine.
pub fn password_policy_with(limits: &LimitsConfig) -> PasswordPolicy {
    let machine = password_policy();
    PasswordPolicy {
        max_concurrent_hashes: limits.password_hashes.unwrap_or(machine.max_concurrent_hashes),
        max_queued_hashes: limits.password_queue,
        ..machine
    }
}

/// Password hashing sized from this machine: two at once per core, at most an eighth of the memory
/// in Argon2 buffers.
pub fn password_policy() -> PasswordPolicy {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4 << 30, |kib| kib * 1024);
    PasswordPolicy {
        max_concurrent_hashes: PasswordPolicy::hashes_for(cores, memory),
        ..PasswordPolicy::default()
    }
}

/// The services over `store`, with the default configuration's limits and provider id.
pub fn core(store: Arc<dyn Store>, data_key: Arc<steward_pki::Kek>, audit_key: Arc<AuditChainKey>) -> Core {
    core_with_limits(
        store,
        data_key,
        audit_key,
        &LimitsConfig::default(),
        steward_windows::DEFAULT_PROVIDER_ID,
    )
}

/// The services over `store`, password hashing bounded as `limits` say, Windows devices under
/// the DMClient provider id `enrollment.provider_id`.
pub fn core_with_limits(
    store: Arc<dyn Store>,
    data_key: Arc<steward_pki::Kek>,
    audit_key: Arc<AuditChainKey>,
    limits: &LimitsConfig,
    windows_provider_id: &str,
) -> Core {
    Core::new(
        store,
        platforms(windows_provider_id),
        Arc::new(SystemClock),
        password_policy_with(limits),
        data_key,
        audit_key,
    )
}

/// What `GET /api/v1/server` reports.
pub fn server_settings(config: &Config, core: &Core) -> steward_api::ServerSettings {
    let public_url = config.public_url();
    let enrollment_url = core
        .platforms
        .iter()
        .flat_map(|p| p.enrollment_endpoints(&public_url))
        .map(|e| e.url)
        .next()
        .unwrap_or_default();
    steward_api::ServerSettings {
        enrollment_url,
        auth_policy: match config.enrollment.auth_policy {
            AuthPolicy::OnPremise => "onpremise".into(),
            AuthPolicy::Federated => "federated".into(),
        },
        server_name: config.enrollment.server_name.clone(),
        poll_interval_minutes: config.enrollment.poll_interval_minutes,
        inventory_interval_hours: config.enrollment.inventory_interval_hours,
        md5_auth: config.management.md5_auth,
        console_require_totp: config.console.require_totp,
        api_body_bytes: config.limits.api_body_bytes,
        public_url,
    }
}

/// The console's settings: its own options and the running configuration it shows.
fn console_settings(config: &Config, core: &Core) -> steward_console::ConsoleSettings {
    let public_url = config.public_url();
    let host = public_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost");
    let proxies = &config.management.trusted_proxies;
    steward_console::ConsoleSettings {
        form_bytes: config.limits.console_form_bytes,
        require_totp: config.console.require_totp,
        totp_issuer: format!("Steward {host}"),
        enrollment_endpoints: core
            .platforms
            .iter()
            .flat_map(|p| p.enrollment_endpoints(&public_url))
            .collect(),
        config_summary: vec![
            (
                "Device certificates valid for".into(),
                format!(
                    "{} days (renewed in the last {})",
                    config.pki.device_cert_validity_days, config.pki.renew_period_days
                ),
            ),
            (
                "Trusted proxies".into(),
                if proxies.is_empty() {
                    "none".into()
                } else {
                    proxies.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                },
            ),
        ],
    }
}

/// Every surface's routes on one router.
pub fn router(config: &Config, core: &Core, pki: &Arc<Pki>) -> Router {
    let identity = Identity::new(
        core.store.clone(),
        core.store.clone(),
        core.audit.clone(),
        pki.issuing.clone(),
        IdentitySettings {
            validity: time::Duration::days(i64::from(config.pki.device_cert_validity_days)),
        },
        core.clock.clone(),
    );
    let windows = steward_windows::router(WindowsState {
        core: core.clone(),
        identity,
        settings: Arc::new(windows_settings(config)),
        pki: Arc::new(WindowsPki::new(&pki.root, &pki.issuing, pki.federation_key.clone())),
        parsers: steward_windows::parse::Parsers::for_this_machine(),
        device_sessions: steward_windows::throttle::DeviceSessions::new(config.limits.sessions_per_device),
        discovery_rate: steward_windows::throttle::AddressRate::new(
            config.limits.discovery_per_minute_per_address,
            config.management.trusted_proxies.clone(),
        ),
    });
    let api_state = steward_api::ApiState {
        core: core.clone(),
        settings: Arc::new(server_settings(config, core)),
    };
    let console = steward_console::router(steward_console::ConsoleState {
        api: api_state.clone(),
        settings: Arc::new(console_settings(config, core)),
    });
    // What people open in a browser (or script against like one) carries HSTS. The device
    // endpoints do not: the Windows MDM client is no browser and ignores it, and it would only add
    // bytes to every check-in; the federated sign-in page, which Windows shows in a web view, sets
    // it with its own headers.
    let browser = Router::new()
        // A newcomer's first click on the server's address lands in the console.
        .route("/", get(|| async { Redirect::to(steward_console::CONSOLE_PATH) }))
        .merge(steward_api::router(api_state.clone()).with_state(api_state))
        .merge(console)
        .layer(axum::middleware::map_response(strict_transport_security));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(crate::readyz::readyz).with_state(core.store.clone() as Arc<dyn steward_core::HealthStore>),
        )
        .merge(windows)
        .merge(browser)
}

async fn strict_transport_security(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        http::header::STRICT_TRANSPORT_SECURITY,
        http::HeaderValue::from_static(steward_http::STRICT_TRANSPORT_SECURITY),
    );
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_configured_command_cap_defaults_to_the_adapters_own() {
        assert_eq!(
            crate::config::DEFAULT_DEVICE_COMMANDS_PER_MESSAGE,
            steward_windows::session::MAX_DEVICE_COMMANDS
        );
    }
}
