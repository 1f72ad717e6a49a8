//! `steward-sim`: simulated Windows devices on the command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use steward_sim::session::DeviceIdentity;
use steward_sim::{
    Credentials, DeviceProfile, EnrollOptions, HttpsClient, LoginStatus, ManagedDevice, SessionTrigger, enroll,
};

#[derive(Parser)]
#[command(name = "steward-sim", version, about = "Plays Windows devices against an MDM server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll one simulated device and save its identity.
    Enroll {
        /// Server base URL, e.g. https://localhost:8443
        #[arg(long, env = "STEWARD_SIM_SERVER")]
        server: String,
        /// PEM file of the CA that signed the server's TLS certificate (Steward: <data_dir>/pki/root-ca.pem).
        #[arg(long)]
        ca: PathBuf,
        /// E-mail the simulated user types.
        #[arg(long, default_value = "user@example.com")]
        email: String,
        /// Enrollment token (or the user's password) for OnPremise authentication.
        #[arg(long, env = "STEWARD_SIM_TOKEN", conflicts_with = "federated_password")]
        token: Option<String>,
        /// Sign in on the server's federated page with this password instead.
        #[arg(long)]
        federated_password: Option<String>,
        /// DeviceID to use (default: random, 32 hex digits like Windows).
        #[arg(long)]
        device_id: Option<String>,
        /// Device name reported at enrollment.
        #[arg(long, default_value = "DESKTOP-SIM0001")]
        device_name: String,
        /// Full (user + device) or Device.
        #[arg(long, default_value = "Full")]
        enrollment_type: String,
        /// Directory to write device.crt, device.key, device.txt and device.json into.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run one OMA-DM management session as a device enrolled with `enroll --out DIR`.
    Session {
        /// Server base URL; only used when DIR does not record a management URL.
        #[arg(long, env = "STEWARD_SIM_SERVER")]
        server: Option<String>,
        /// PEM file of the CA that signed the server's TLS certificate.
        #[arg(long)]
        ca: PathBuf,
        /// Directory written by `steward-sim enroll --out`.
        #[arg(long)]
        device_dir: PathBuf,
        /// LoginStatus reported in Alert 1224: user, others or none.
        #[arg(long, default_value = "user")]
        login_status: String,
        /// Start with Alert 1200 (after a push) instead of 1201.
        #[arg(long)]
        server_initiated: bool,
        /// Send the user-initiated unenroll alert (1226) in this session.
        #[arg(long)]
        unenroll: bool,
        /// TLS stack to play: windows11 (TLS 1.3 preferred) or windows10 (TLS 1.2 only, Schannel's
        /// ECDHE AES-GCM suites).
        #[arg(long, default_value = "windows11", value_parser = parse_tls_profile)]
        tls: steward_sim::TlsProfile,
    },
    /// Load test: enroll many devices at a paced rate, then run their check-ins, and report
    /// throughput, latency percentiles, errors by kind and the server's RSS and CPU.
    Load(LoadArgs),
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Server base URL, e.g. https://localhost:8443. The only host the test talks to.
    #[arg(long, env = "STEWARD_SIM_SERVER")]
    server: String,
    /// PEM file of the CA that signed the server's TLS certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Enrollment token with at least --devices uses left.
    #[arg(long, env = "STEWARD_SIM_TOKEN")]
    token: String,
    /// Devices to enroll.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Enrollments started per second (token bucket); 0 = as fast as --concurrency allows.
    #[arg(long, default_value_t = 20.0)]
    enroll_rate: f64,
    /// Enrollments or sessions in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds the check-in phase lasts at most (no session starts after it).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Sessions each device runs back to back (default 1 unless --time-scale is given).
    #[arg(long, conflicts_with = "time_scale")]
    checkins_per_device: Option<u32>,
    /// Follow each device's DMClient poll schedule instead, with time compressed by this factor
    /// (60 = one simulated minute per real second).
    #[arg(long)]
    time_scale: Option<f64>,
    /// Benchmark-only shortcut: generate one RSA key and load it into every device (each still
    /// gets its own certificate). Without it every device gets its own key, generated on all
    /// cores before the run (~50–100 ms of CPU per key).
    #[arg(long)]
    shared_key: bool,
    /// PID of the server process, to report its RSS and CPU (same machine only).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds one enrollment or session may take before it counts as a timeout.
    #[arg(long, default_value_t = 60)]
    op_timeout: u64,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

async fn run_load_command(a: LoadArgs) -> Result<()> {
    use std::io::IsTerminal;
    use std::time::Duration;
    use steward_sim::{CheckinMode, KeySource, LoadConfig, Phase, Progress};

    let roots = read_pem_certs(&a.ca)?;
    let mut cfg = LoadConfig::new(a.server, roots, a.token);
    cfg.devices = a.devices;
    cfg.enroll_rate = a.enroll_rate;
    cfg.concurrency = a.concurrency;
    cfg.duration = Duration::from_secs(a.duration);
    cfg.checkins = match (a.checkins_per_device, a.time_scale) {
        (_, Some(f)) => CheckinMode::Schedule { time_scale: f },
        (k, None) => CheckinMode::Sessions(k.unwrap_or(1)),
    };
    cfg.keys = if a.shared_key {
        KeySource::Shared
    } else {
        KeySource::Pool
    };
    cfg.server_pid = a.server_pid;
    cfg.op_timeout = Duration::from_secs(a.op_timeout);

    // Progress goes to stderr so stdout stays the report; hidden when stderr is not a terminal
    // (CI logs, pipes) where redraws would only add noise.
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let style =
        indicatif::ProgressStyle::with_template("{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")?;
    bar.set_style(style);
    let current = std::cell::Cell::new(None::<Phase>);
    let on_progress = |p: &Progress| {
        if current.get() != Some(p.phase) {
            current.set(Some(p.phase));
            bar.reset();
            bar.set_prefix(p.phase.as_str());
        }
        match p.total {
            Some(t) => {
                bar.set_length(t);
                bar.set_position(p.done);
            }
            // Schedule-driven check-ins have no count to reach: show time against the limit.
            None => {
                bar.set_length(p.limit.map_or(0, |l| l.as_secs()));
                bar.set_position(p.elapsed.as_secs());
            }
        }
        bar.set_message(format!("done {} failed {} in flight {}", p.done, p.failed, p.in_flight));
        if p.finished {
            bar.println(format!(
                "{:>8}: {} done, {} failed in {:.1} s",
                p.phase.as_str(),
                p.done,
                p.failed,
                p.elapsed.as_secs_f64()
            ));
        }
    };
    let report = steward_sim::run_load(cfg, on_progress).await?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

/// What `enroll --out` saves beyond the certificate and key, and `session` keeps up to date.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedDevice {
    management_url: String,
    profile: DeviceProfile,
    session_counter: u32,
    #[serde(default)]
    unenrolled: bool,
    /// The RemoteWipe node executed, once wiped: the device opens no more sessions.
    #[serde(default)]
    wiped: Option<String>,
    /// The management tree as the last session left it: settings the server wrote stay on the
    /// device between runs (without it every run starts from a fresh tree and a read-back of an
    /// applied policy finds nothing). Absent in files of earlier versions: a fresh tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tree: Option<steward_sim::csp::CspTree>,
}

fn read_pem_certs(path: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
        .map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))
}

/// `device.txt`'s `key=value` lines.
fn read_device_txt(dir: &std::path::Path) -> Result<std::collections::HashMap<String, String>> {
    let path = dir.join("device.txt");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

fn parse_tls_profile(s: &str) -> std::result::Result<steward_sim::TlsProfile, String> {
    steward_sim::TlsProfile::parse(s)
        .ok_or_else(|| format!("{s:?}: expected windows10 (TLS 1.2) or windows11 (TLS 1.3)"))
}

async fn run_session_command(
    server: Option<String>,
    ca: PathBuf,
    dir: PathBuf,
    login_status: String,
    server_initiated: bool,
    unenroll: bool,
    tls: steward_sim::TlsProfile,
) -> Result<()> {
    let roots = read_pem_certs(&ca)?;
    let json_path = dir.join("device.json");
    let saved: Option<SavedDevice> = match std::fs::read(&json_path) {
        Ok(b) => Some(serde_json::from_slice(&b).with_context(|| format!("parsing {}", json_path.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", json_path.display())),
    };
    let (url, profile, counter, unenrolled, wiped, tree) = match saved {
        Some(s) => (
            s.management_url,
            s.profile,
            s.session_counter,
            s.unenrolled,
            s.wiped,
            s.tree,
        ),
        None => {
            let txt = read_device_txt(&dir)?;
            let device_id = txt.get("device_id").context("device.txt has no device_id")?.clone();
            let url = match (txt.get("management_url"), &server) {
                (Some(u), _) => u.clone(),
                (None, Some(s)) => format!("{}/ManagementServer/MDM.svc", s.trim_end_matches('/')),
                (None, None) => anyhow::bail!("no management URL in {} and no --server", dir.display()),
            };
            (url, DeviceProfile::random(&device_id), 0, false, None, None)
        }
    };
    let certs = read_pem_certs(&dir.join("device.crt"))?;
    let (cert_der, chain_der) = certs.split_first().context("device.crt holds no certificate")?;
    let key_pem = std::fs::read(dir.join("device.key")).context("reading device.key")?;
    let key_der: rustls_pki_types::PrivatePkcs8KeyDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(&key_pem)
            .map_err(|e| anyhow::anyhow!("device.key is not a PKCS#8 PEM key: {e}"))?;
    let key = steward_pki::DeviceKey::from_pkcs8(key_der.secret_pkcs8_der())?;

    let mut device = ManagedDevice::new(profile, url);
    if let Some(tree) = tree {
        device.tree = tree;
    }
    device.identity = Some(DeviceIdentity {
        cert_der: cert_der.clone(),
        chain_der: chain_der.to_vec(),
        key,
    });
    device.set_session_counter(counter);
    device.unenrolled = unenrolled;
    device.wiped = wiped.map(|w| (w, std::time::SystemTime::now()));
    device.login_status = LoginStatus::parse(&login_status)
        .with_context(|| format!("--login-status {login_status:?}: use user, others or none"))?;
    if unenroll {
        device.request_unenroll();
    }
    let trigger = if server_initiated {
        SessionTrigger::ServerInitiated
    } else {
        SessionTrigger::Scheduled
    };
    let client = steward_sim::HttpsClient::with_profile(&roots, device.tls_identity(), tls)?;
    let result = device.run_session(&client, trigger).await;
    // The SessionID counter advances even when the session fails, like on Windows.
    let saved = SavedDevice {
        management_url: device.management_url.clone(),
        profile: device.profile.clone(),
        session_counter: device.session_counter(),
        unenrolled: device.unenrolled,
        wiped: device.wiped.as_ref().map(|w| w.0.clone()),
        tree: Some(device.tree.clone()),
    };
    std::fs::write(&json_path, serde_json::to_vec_pretty(&saved)?)?;
    let report = result?;
    println!(
        "session {} with {}: {} message(s) sent, {}",
        report.session_id,
        device.management_url,
        report.messages,
        if report.ended {
            "ended by the server"
        } else {
            "not ended"
        }
    );
    for c in &report.received {
        println!(
            "  {:<8} {:<38} {:<70} -> {}",
            c.name,
            c.cmd_id,
            c.target.as_deref().unwrap_or("-"),
            c.status
        );
    }
    if report.received.is_empty() {
        println!("  (no commands)");
    }
    if device.wiped.is_some() {
        println!("  the device was wiped");
    }
    if device.unenrolled {
        println!("  the device is now unenrolled");
    }
    Ok(())
}

fn pem(label: &str, der: &[u8]) -> String {
    steward_pki::pem_encode(label, der)
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match Cli::parse().command {
        Command::Enroll {
            server,
            ca,
            email,
            token,
            federated_password,
            device_id,
            device_name,
            enrollment_type,
            out,
        } => {
            let roots = read_pem_certs(&ca)?;
            let credentials = match (token, federated_password) {
                (Some(t), _) => Credentials::Password(t),
                (None, Some(p)) => Credentials::Federated(p),
                (None, None) => anyhow::bail!("give --token (OnPremise) or --federated-password"),
            };
            let mut opts = EnrollOptions::new(server, email, credentials);
            opts.device_id = device_id;
            opts.device_name = device_name.clone();
            opts.enrollment_type = enrollment_type;
            let client = HttpsClient::new(&roots, None)?;
            let device = enroll::enroll(&client, &opts).await?;
            println!("enrolled device {}", device.device_id);
            println!("  management URL: {}", device.management_url);
            println!(
                "  certificate thumbprint: {}",
                steward_pki::sha1_thumbprint(&device.cert_der)
            );
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                // device.crt: the leaf, then the issuing CA when the server sent one.
                let mut crt = pem("CERTIFICATE", &device.cert_der);
                if let Some(ca) = &device.intermediate_der {
                    crt.push_str(&pem("CERTIFICATE", ca));
                }
                std::fs::write(dir.join("device.crt"), crt)?;
                std::fs::write(dir.join("device.key"), pem("PRIVATE KEY", &device.key.pkcs8_der()))?;
                std::fs::write(
                    dir.join("device.txt"),
                    format!(
                        "device_id={}\nmanagement_url={}\n",
                        device.device_id, device.management_url
                    ),
                )?;
                let mut profile = DeviceProfile::random(&device.device_id);
                profile.device_name = device_name;
                let managed = ManagedDevice::from_enrolled(device, profile);
                let saved = SavedDevice {
                    management_url: managed.management_url.clone(),
                    profile: managed.profile.clone(),
                    session_counter: 0,
                    unenrolled: false,
                    wiped: None,
                    // The first session starts from the Windows 11 tree the profile describes.
                    tree: None,
                };
                std::fs::write(dir.join("device.json"), serde_json::to_vec_pretty(&saved)?)?;
                println!("  saved to {}", dir.display());
            }
        }
        Command::Session {
            server,
            ca,
            device_dir,
            login_status,
            server_initiated,
            unenroll,
            tls,
        } => run_session_command(server, ca, device_dir, login_status, server_initiated, unenroll, tls).await?,
        Command::Load(args) => run_load_command(args).await?,
    }
    Ok(())
}
