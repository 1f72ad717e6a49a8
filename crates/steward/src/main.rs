//! The `steward` binary: `serve` runs the server; every admin command (devices, commands, actions,
//! groups, users, tokens) is a client of the admin API (`client.rs`, `ops.rs`), implemented once.
//! `steward login` points it at a server over HTTPS; without a configured server, or with
//! `--local`, the same client calls the API in this process over the local data directory
//! (`steward_server::local::LocalApi`, as the local administrator `cli (local)`; SQLite allows
//! that while the server runs), so an operator can create an enrollment token on a fresh install
//! before any API token exists, and recover offline. What has no API route stays here: `serve`,
//! `config check`, `login`/`logout`, `completions`, `audit verify`/`export` and `kek
//! status`/`rotate`/`generate` (local).

mod cli_config;
mod client;
mod duration;
mod ops;
mod output;
mod profiles;
mod rollouts;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use steward_api::types::{RoleName, WipeKindName, WipeRequest};
use steward_core::AuditFilter;
use steward_server::Config;
use steward_server::local::LocalApi;

use client::{ApiClient, ApiError, DeviceAction, Target};
use output::Output;

/// mimalloc instead of glibc's allocator: the server allocates per request (TLS buffers, the SyncML
/// tree, the answer) across threads, and glibc's malloc was ~20 % of its CPU in an idle check-in;
/// with mimalloc the server's CPU per session fell ~6 % (docs/BENCHMARKS.md, third pass).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "steward",
    version,
    about = "Steward: device management for Windows, Apple and Android",
    after_help = "Device, command, group, user and token commands go through the admin API: of the server \
                  configured (`steward login`, or STEWARD_SERVER and STEWARD_TOKEN), or otherwise (and with \
                  --local) the same API in this process, on the local data directory."
)]
struct Cli {
    /// TOML config file of the server (defaults are used for anything it does not set; STEWARD_*
    /// variables override it). Used by `serve`, `config check` and the --local commands.
    #[arg(long, short, global = true, env = "STEWARD_CONFIG")]
    config: Option<PathBuf>,
    /// Work on the local data directory even when a server is configured (offline recovery, or
    /// before any API token exists): the API in this process, as the local administrator.
    #[arg(long, global = true)]
    local: bool,
    /// Output format: tables for people, the API's JSON for scripts (through a server).
    #[arg(long, short, global = true, value_enum, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Start the server (creates the data directory, CA and TLS certificate on first start).
    Serve,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Check an API token against a server and store the server, CA and token for the other
    /// commands (in $XDG_CONFIG_HOME/steward/cli.toml, mode 0600).
    Login {
        /// e.g. https://mdm.example.com:8443 (default: STEWARD_SERVER).
        #[arg(long)]
        server: Option<String>,
        /// PEM file of the CA to trust, e.g. steward-data/pki/root-ca.pem (default: STEWARD_CA, else
        /// the system's trusted roots).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Read the token from standard input (one line) instead of STEWARD_TOKEN or a prompt.
        #[arg(long)]
        token_stdin: bool,
    },
    /// Forget the stored server and token (the token itself stays valid; revoke it with
    /// `steward tokens revoke`).
    Logout,
    /// Enrollment tokens: the password a device presents to enroll.
    #[command(name = "enroll-tokens", visible_alias = "enroll-token")]
    EnrollTokens {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// API tokens: named tokens with a role, and the bootstrap admin tokens (through the API only).
    Tokens {
        #[command(subcommand)]
        command: ApiTokenCommand,
    },
    /// Device groups (through the API when logged in, else on the local data directory).
    #[command(visible_alias = "group")]
    Groups {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Users of Steward's own user store: console users, federated sign-in, e-mail + password
    /// enrollment (through the API when logged in, else on the local data directory).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Enrolled devices.
    #[command(visible_alias = "device")]
    Devices {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// The built-in configuration catalog: security baseline areas, update rings, profile kinds.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Apply configuration profiles from YAML: one file (documents separated by `---`) or every
    /// *.yaml / *.yml file of a directory, in name order. Everything is validated first; nothing
    /// is written if anything is invalid. Prints per profile what changes and how many devices.
    Apply {
        /// A profile file or a directory of them.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Show what would change and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Export every profile as YAML (applying the export changes nothing): to standard output, or
    /// one <name>.yaml per profile into a directory (`-o` is taken by the global --output).
    Export {
        /// Write <name>.yaml files into this directory (created if missing).
        #[arg(short = 'd', long = "dir")]
        dir: Option<PathBuf>,
    },
    /// Configuration profiles: list, show, status on the devices, delete.
    #[command(visible_alias = "profile")]
    Profiles {
        #[command(subcommand)]
        command: profiles::ProfileCommand,
    },
    /// A profile's staged rollout in rings: status (per-ring progress), advance, pause, resume,
    /// rollback (docs/ROLLOUTS.md).
    Rollout {
        #[command(subcommand)]
        command: rollouts::RolloutCommand,
    },
    /// Read back a device's (or a group's devices') readable settings at their next check-in.
    Verify {
        /// DeviceID or enrollment id.
        #[arg(required_unless_present = "group", conflicts_with = "group")]
        device: Option<String>,
        /// Every active device of this group (name or id).
        #[arg(long)]
        group: Option<String>,
    },
    /// Queue, list and cancel device commands (OMA-DM Get/Add/Replace/Delete/Exec).
    #[command(visible_alias = "command")]
    Commands {
        #[command(subcommand)]
        command: CommandCommand,
    },
    /// Remotely wipe a device (RemoteWipe CSP). Its certificate is revoked once the device acknowledges.
    Wipe {
        /// DeviceID or enrollment id.
        device: String,
        #[arg(long, value_enum, default_value = "protected")]
        kind: WipeArg,
        /// Required: wiping erases the device.
        #[arg(long)]
        yes: bool,
    },
    /// Reboot a device at its next check-in.
    Reboot { device: String },
    /// Lock a device at its next check-in (RemoteLock CSP; desktop editions may refuse it).
    Lock { device: String },
    /// Refresh inventory at the next check-in: of one device, or of every active device of a group
    /// or whose name matches (with a progress bar and a summary).
    Sync {
        /// DeviceID or enrollment id.
        #[arg(required_unless_present_any = ["group", "search"], conflicts_with_all = ["group", "search"])]
        device: Option<String>,
        /// Every active device of this group.
        #[arg(long)]
        group: Option<String>,
        /// Every active device whose name contains this (case-insensitive); with --group, both.
        #[arg(long)]
        search: Option<String>,
    },
    /// The keyed, checkpointed audit log of admin actions (local data directory).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The key-encryption key (local data directory): status, rotation without downtime, a new
    /// key file (docs/OPERATIONS.md, "Rotating the KEK").
    Kek {
        #[command(subcommand)]
        command: KekCommand,
    },
    /// Diagnose the server as a device sees it.
    Doctor {
        #[command(subcommand)]
        command: DoctorCommand,
    },
    /// Print a shell completion script, e.g. `steward completions bash > /etc/bash_completion.d/steward`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the keyed chain and check the signed checkpoints; exit code 1 and the first broken
    /// event if a row was edited, forged, inserted or removed (see docs/OPERATIONS.md).
    Verify,
    /// Print every event, oldest first, as JSON lines.
    Export,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WipeArg {
    Wipe,
    Protected,
    PersistUserData,
    PersistProvisionedData,
    AutomaticRedeployment,
}

impl WipeArg {
    fn kind(self) -> WipeKindName {
        match self {
            WipeArg::Wipe => WipeKindName::Wipe,
            WipeArg::Protected => WipeKindName::Protected,
            WipeArg::PersistUserData => WipeKindName::PersistUserData,
            WipeArg::PersistProvisionedData => WipeKindName::PersistProvisionedData,
            WipeArg::AutomaticRedeployment => WipeKindName::AutomaticRedeployment,
        }
    }
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// List devices (enrollments in any state).
    List(DeviceListArgs),
    /// Show one device: enrollment, inventory facts, commands.
    Show { device: String },
    /// A device's configuration settings: status and reason per setting, conflicts.
    Settings { device: String },
    /// Move a device into a group (or out of every group with --none).
    Move {
        device: String,
        #[arg(long, required_unless_present = "none")]
        group: Option<String>,
        #[arg(long, conflicts_with = "group")]
        none: bool,
    },
    /// Change a device's tags (labels that dynamic-group rules read: `{"fact": "tags", ...}`).
    Tag {
        device: String,
        #[command(subcommand)]
        change: TagChange,
    },
}

#[derive(Subcommand)]
pub(crate) enum TagChange {
    /// Add tags to those the device has.
    Add {
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Remove tags from the device (a tag it does not have is ignored).
    Remove {
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Replace every tag of the device with these (none: remove them all).
    Set { tags: Vec<String> },
    /// Print the device's tags.
    List,
}

#[derive(Subcommand)]
pub(crate) enum CatalogCommand {
    /// List the catalog: name, category, area, number of settings.
    List,
    /// Show one entry: each setting's node, format, recommended value, whether it reads back, and
    /// its documentation; the parameters a kind needs.
    Show { name: String },
    /// Assign an entry that needs no parameters: creates (or updates) the profile named after it.
    Assign {
        name: String,
        /// Assign to the devices of this group (repeatable).
        #[arg(long = "group", required_unless_present = "all")]
        groups: Vec<String>,
        /// Assign to every device.
        #[arg(long)]
        all: bool,
        /// Leave out the devices of this group (repeatable; an exclusion always wins).
        #[arg(long = "exclude")]
        exclude: Vec<String>,
        /// Show what would change and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum GroupCommand {
    /// List groups with their active device counts.
    List,
    /// Create a group; with a rule, a dynamic one (its members are the devices the rule matches;
    /// docs/GROUPS.md).
    Create {
        name: String,
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Replace a dynamic group's rule.
    SetRule {
        name: String,
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// List a group's devices (a dynamic group: those its rule matches now).
    Members { name: String },
    /// Delete an empty group (no active device, enrollment token or API token in it).
    Delete { name: String },
}

/// A dynamic group's rule, as JSON: `{"all": [{"fact": "os.version", "op": ">=", "value": "10.0.22000"}]}`.
#[derive(clap::Args)]
pub(crate) struct RuleArgs {
    /// The rule as JSON text.
    #[arg(long, conflicts_with = "rule_file")]
    pub rule: Option<String>,
    /// A file holding the rule as JSON.
    #[arg(long, value_name = "FILE")]
    pub rule_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DeviceListArgs {
    /// Only devices whose name contains this (case-insensitive).
    #[arg(long)]
    search: Option<String>,
    /// Only devices in this state: active, replaced, unenrolled or wiped.
    #[arg(long)]
    state: Option<String>,
    /// Only devices of this group.
    #[arg(long)]
    group: Option<String>,
    /// At most this many devices (default: the first 100).
    #[arg(long, conflicts_with = "all")]
    limit: Option<usize>,
    /// Every matching device (follows the API's pagination cursors).
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
enum CommandCommand {
    /// Queue one command. Targets are LocURIs (./Device/Vendor/MSFT/...); values as URI=VALUE.
    Send {
        device: String,
        #[arg(long, value_enum)]
        verb: VerbArg,
        /// Target LocURI (Get/Delete/Exec) or LocURI=VALUE (Add/Replace). Repeatable.
        #[arg(long = "item", required = true)]
        items: Vec<String>,
        /// syncml:metinf Format of the values (chr, int, bool, b64, xml, …).
        #[arg(long)]
        format: Option<String>,
    },
    /// List a device's commands with their state and status code.
    List { device: String },
    /// Cancel a command that has not been answered yet.
    Cancel { id: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum VerbArg {
    Get,
    Add,
    Replace,
    Delete,
    Exec,
}

/// A duration in whole `unit`s, rounded up (the API takes hours or days).
fn ceil_units(d: time::Duration, unit: time::Duration) -> Result<i64> {
    if d <= time::Duration::ZERO {
        bail!("durations must be positive");
    }
    let whole = d.whole_seconds();
    let per = unit.whole_seconds().max(1);
    Ok((whole + per - 1) / per)
}

#[derive(Subcommand)]
enum DoctorCommand {
    /// Connect like a fresh device and check the TLS certificate: the chain and whether the
    /// system's roots (what a device trusts before enrollment) verify it, the names including
    /// EnterpriseEnrollment.<domain>, expiry, and whether a client certificate is requested. Exits
    /// non-zero on problems.
    Tls {
        /// The URL devices use (default: the configuration's public_url).
        #[arg(long)]
        url: Option<String>,
        /// Trust this PEM CA instead of the system's roots (e.g. a test CA).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// E-mail domain whose users enroll: the certificate must name EnterpriseEnrollment.<domain>
        /// (repeatable; default: the public host's parent domain, reported but not required).
        #[arg(long = "email-domain")]
        email_domains: Vec<String>,
        /// The device host (default: the configuration's tls.device_hostname).
        #[arg(long)]
        device_host: Option<String>,
        /// Connect to this host:port instead of resolving the URL's host.
        #[arg(long)]
        connect: Option<String>,
    },
}

#[derive(Subcommand)]
enum KekCommand {
    /// Which KEK seals each file of the data directory, and which previous KEKs nothing references
    /// any more (safe to remove from the configuration). Exit code 1 while a file does not open or
    /// is not yet under the current KEK.
    Status,
    /// Re-seal every file the KEK seals under a new KEK (or, without --new-kek-file, under the
    /// configured current one), opening them with the configured current and previous KEKs. Safe
    /// while the server runs and to run again after an interruption.
    Rotate {
        /// File holding the new KEK (base64, mode 0600; `steward kek generate` writes one).
        #[arg(long)]
        new_kek_file: Option<PathBuf>,
    },
    /// Write a new random KEK to a file (mode 0600; never over an existing file) and print its id.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration without starting anything; print the effective settings.
    Check,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (it is shown only this once; Steward stores a hash).
    Create {
        /// How many devices may enroll with it (default: unlimited until it expires).
        #[arg(long)]
        uses: Option<u32>,
        /// Lifetime, e.g. 30m, 24h, 7d, 2w (default 7d; rounded up to whole hours).
        #[arg(long, default_value = "7d", value_parser = duration::parse)]
        expires: time::Duration,
        /// Put devices enrolled with this token into this group (created if missing).
        #[arg(long)]
        group: Option<String>,
        /// A note for other admins.
        #[arg(long)]
        description: Option<String>,
    },
    /// List tokens (never their values).
    List,
    /// Revoke a token: no further device can enroll with it.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum ApiTokenCommand {
    /// List API tokens, named and bootstrap, with role, scope, creation, last use and state (never
    /// their values).
    List,
    /// Create a named token and print it (shown only this once).
    Create {
        /// What it is for, e.g. ci-inventory-export.
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Limit it to the devices of this group.
        #[arg(long)]
        group: Option<String>,
        /// Lifetime, e.g. 90d or 12w, rounded up to days (default: no expiry).
        #[arg(long, value_parser = duration::parse)]
        expires: Option<time::Duration>,
    },
    /// Revoke a token, named or bootstrap: it stops authenticating at once.
    Revoke { id: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum RoleArg {
    /// Everything.
    Admin,
    /// Device actions and commands, no settings, tokens or users.
    Operator,
    /// Read, sync, lock and reboot; no wipe.
    Helpdesk,
    /// Read-only, including the audit log.
    Auditor,
}

impl RoleArg {
    fn role(self) -> RoleName {
        match self {
            RoleArg::Admin => RoleName::Admin,
            RoleArg::Operator => RoleName::Operator,
            RoleArg::Helpdesk => RoleName::Helpdesk,
            RoleArg::Auditor => RoleName::Auditor,
        }
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user. The password is read from standard input (one line) unless --password is given.
    Add {
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// Password on the command line (visible in process listings; prefer standard input).
        #[arg(long)]
        password: Option<String>,
        /// Let the user sign in to the web console with this role.
        #[arg(long, value_enum)]
        console_role: Option<RoleArg>,
        /// With --console-role: only this group's devices exist for the user.
        #[arg(long, requires = "console_role")]
        console_group: Option<String>,
    },
    /// Remove a console user's second factor (lost authenticator) and end their console sessions.
    ResetTotp { email: String },
    /// List users with their console role, group and second factor.
    List,
    /// Disable a user: no console sign-in, no device enrollment; their console sessions end.
    Disable { email: String },
    /// Re-enable a disabled user.
    Enable { email: String },
    /// Change a user's console role (`none` removes console access) and group scope.
    SetRole {
        email: String,
        /// admin, operator, helpdesk, auditor or none.
        role: String,
        /// Limit the user to this group's devices (default: the whole fleet).
        #[arg(long)]
        group: Option<String>,
    },
}

/// Exit codes: 0 success, 1 error, 2 usage (clap), 3 authentication or permission refused (HTTP
/// 401/403), 4 not found (404).
fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ApiError>().and_then(ApiError::status) {
        Some(401 | 403) => 3,
        Some(404) => 4,
        _ => 1,
    }
}

/// `steward devices list | head` closes standard output early. Rust ignores SIGPIPE, so the next
/// `println!` panics with "failed printing to stdout: … (os error 32)". Shell tools end quietly there:
/// exit with 141 (128 + SIGPIPE, what the shell reports for them) instead of printing a panic.
/// (Restoring SIGPIPE's default action would need an unsafe libc call.)
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("os error 32") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STEWARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The global options.
struct Ctx {
    config: Option<PathBuf>,
    local: bool,
    output: Output,
}

/// Where the admin API is: a server, or this process over the local data directory.
enum Mode {
    Remote(Target),
    Local(Box<Config>),
}

fn mode(cli: &Ctx) -> Result<Mode> {
    if !cli.local {
        let stored = match cli_config::path() {
            Some(p) => cli_config::load(&p)?,
            None => None,
        };
        if let Some(target) = cli_config::resolve_from(&|k| std::env::var(k).ok(), stored)? {
            return Ok(Mode::Remote(target));
        }
    }
    Ok(Mode::Local(Box::new(local_config(cli)?)))
}

/// The API client of this invocation: over HTTPS to the configured server, else in process.
async fn api(cli: &Ctx) -> Result<ApiClient> {
    match mode(cli)? {
        Mode::Remote(target) => ApiClient::new(&target),
        Mode::Local(config) => {
            no_json_locally(cli.output)?;
            let api = LocalApi::open(&config)
                .await
                .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
            Ok(ApiClient::local(api))
        }
    }
}

fn local_config(cli: &Ctx) -> Result<Config> {
    Config::load(cli.config.as_deref()).context("configuration")
}

/// The local form prints tables only (the JSON documents are the server's promise to scripts).
fn no_json_locally(out: Output) -> Result<()> {
    if out == Output::Json {
        bail!(
            "--output json needs the API: log in (`steward login`) or set STEWARD_SERVER; the local form prints tables"
        );
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let Cli {
        config,
        local,
        output: out,
        command,
    } = cli;
    let cli = Ctx {
        config,
        local,
        output: out,
    };
    // Commands that never need the server configuration or a runtime.
    let command = match command {
        Task::Kek { command } => return kek(&cli, command),
        other => other,
    };
    match &command {
        Task::Completions { shell } => {
            // Generated into memory: clap_complete panics on a failed write (e.g. a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "steward", &mut script);
            let mut stdout = std::io::stdout().lock();
            std::io::Write::write_all(&mut stdout, &script)
                .and_then(|()| std::io::Write::flush(&mut stdout))
                .context("writing the completion script")?;
            return Ok(());
        }
        Task::Logout => return logout(),
        Task::Config {
            command: ConfigCommand::Check,
        } => return config_check(&local_config(&cli)?),
        Task::Wipe { device, yes: false, .. } => bail!("wiping erases {device}; repeat with --yes to confirm"),
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match command {
            Task::Completions { .. } | Task::Logout | Task::Config { .. } | Task::Kek { .. } => Ok(()),
            Task::Login {
                server,
                ca,
                token_stdin,
            } => login(server, ca, token_stdin).await,
            Task::Serve => serve(local_config(&cli)?).await,
            Task::Doctor {
                command:
                    DoctorCommand::Tls {
                        url,
                        ca,
                        email_domains,
                        device_host,
                        connect,
                    },
            } => {
                let config = if url.is_none() || device_host.is_none() {
                    Some(local_config(&cli)?)
                } else {
                    None
                };
                let url = match url {
                    Some(u) => u,
                    None => config.as_ref().map(Config::public_url).unwrap_or_default(),
                };
                let device_host = device_host.or_else(|| config.as_ref().and_then(|c| c.tls.device_hostname.clone()));
                doctor_tls(url, ca, email_domains, device_host, connect).await
            }
            Task::Audit { command } => audit_log(local_config(&cli)?, command).await,
            Task::Tokens { command } => match mode(&cli)? {
                Mode::Remote(target) => ops::api_tokens(&ApiClient::new(&target)?, out, command).await,
                Mode::Local(_) => bail!(
                    "API tokens are managed through the API: log in first (`steward login`, with the admin \
                     token `steward serve` printed or STEWARD_ADMIN_TOKEN)"
                ),
            },
            Task::User { command } => ops::users(&api(&cli).await?, out, command).await,
            Task::Groups { command } => ops::groups(&api(&cli).await?, out, command).await,
            Task::EnrollTokens { command } => ops::enrollment_tokens(&api(&cli).await?, out, command).await,
            Task::Devices { command } => ops::devices(&api(&cli).await?, out, command).await,
            Task::Commands { command } => ops::commands(&api(&cli).await?, out, command).await,
            Task::Catalog { command } => ops::catalog(&api(&cli).await?, out, command).await,
            Task::Apply { file, dry_run } => profiles::apply(&api(&cli).await?, out, &file, dry_run).await,
            Task::Export { dir } => profiles::export(&api(&cli).await?, out, dir.as_deref()).await,
            Task::Profiles { command } => profiles::profiles(&api(&cli).await?, out, command).await,
            Task::Rollout { command } => rollouts::rollout(&api(&cli).await?, out, command).await,
            Task::Verify { device, group } => {
                profiles::verify(&api(&cli).await?, out, device.as_deref(), group.as_deref()).await
            }
            Task::Wipe { device, kind, yes: _ } => {
                let wipe = WipeRequest {
                    kind: Some(kind.kind()),
                    confirm: true,
                };
                ops::action(&api(&cli).await?, out, &device, DeviceAction::Wipe(wipe)).await
            }
            Task::Reboot { device } => ops::action(&api(&cli).await?, out, &device, DeviceAction::Reboot).await,
            Task::Lock { device } => ops::action(&api(&cli).await?, out, &device, DeviceAction::Lock).await,
            Task::Sync { device, group, search } => {
                let c = api(&cli).await?;
                match device {
                    Some(d) => ops::action(&c, out, &d, DeviceAction::Sync).await,
                    None => ops::bulk_sync(&c, out, group.as_deref(), search).await,
                }
            }
        }
    })
}

/// Reads one line from standard input; on a terminal, prompts on stderr with echo switched off.
fn read_secret_line(prompt: &str) -> Result<String> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut echo_off = false;
    if tty {
        eprint!("{prompt}");
        echo_off = cfg!(unix) && stty("-echo");
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if echo_off {
        stty("echo");
        eprintln!();
    }
    read.context("reading the token from standard input")?;
    Ok(line.trim().to_owned())
}

async fn login(server: Option<String>, ca: Option<PathBuf>, token_stdin: bool) -> Result<()> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let server = server
        .or_else(|| env(cli_config::ENV_SERVER))
        .context("which server? pass --server https://host:8443 (or set STEWARD_SERVER)")?;
    let server = client::normalize_server(&server)?;
    let ca = match ca.or_else(|| env(cli_config::ENV_CA).map(PathBuf::from)) {
        Some(p) => Some(std::fs::canonicalize(&p).with_context(|| format!("the CA file {}", p.display()))?),
        None => None,
    };
    let token = if token_stdin {
        read_secret_line("")?
    } else if let Some(t) = env(cli_config::ENV_TOKEN) {
        t.trim().to_owned()
    } else if std::io::stdin().is_terminal() {
        read_secret_line(&format!("API token for {server}: "))?
    } else {
        bail!("no token: pass --token-stdin and write it to standard input, or set STEWARD_TOKEN");
    };
    if token.is_empty() {
        bail!("the token is empty");
    }
    let path = cli_config::path()
        .context("cannot store the login: set HOME or XDG_CONFIG_HOME (or use STEWARD_SERVER and STEWARD_TOKEN)")?;
    let target = Target {
        server: server.clone(),
        token: token.clone(),
        ca: ca.clone(),
    };
    let info = ApiClient::new(&target)?
        .server_info()
        .await
        .with_context(|| format!("login to {server} failed"))?;
    cli_config::save(
        &path,
        &cli_config::CliConfig {
            server: Some(server.clone()),
            ca,
            token: Some(token),
        },
    )?;
    println!(
        "Logged in to {server} (Steward {}, {} active devices); saved in {}",
        info.data.version,
        info.data.counts.active_devices,
        path.display()
    );
    Ok(())
}

fn logout() -> Result<()> {
    match cli_config::path() {
        Some(p) if cli_config::remove(&p)? => println!("logged out: removed {}", p.display()),
        _ => println!("not logged in"),
    }
    if std::env::var_os(cli_config::ENV_SERVER).is_some() {
        eprintln!("note: STEWARD_SERVER is still set in the environment");
    }
    Ok(())
}

async fn serve(config: Config) -> Result<()> {
    let data_dir = config.data_dir.clone();
    // Every connection holds a file descriptor, and the soft limit is often 1024: raise it to the
    // hard limit (the connection cap is then fitted to it, see limits.max_connections).
    match steward_server::listener::raise_descriptor_limit() {
        Ok(Some(l)) => tracing::info!(
            soft = ?l.soft,
            hard = ?l.hard,
            raised_from = ?l.raised_from,
            "file-descriptor limit"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(
            error = %e,
            limit = ?steward_server::listener::descriptor_limit(),
            "cannot raise the file-descriptor limit"
        ),
    }
    let server = steward_server::start(config).await.context("starting the server")?;
    let url = &server.public_url;
    let endpoints: Vec<_> = server
        .core
        .platforms
        .iter()
        .flat_map(|p| p.enrollment_endpoints(url))
        .collect();
    let root = data_dir.join("pki").join("root-ca.pem");
    println!();
    println!("Steward is running on {} (public URL {url})", server.local_addr);
    if server.ca_created {
        println!("  Created a new CA in {}", data_dir.join("pki").display());
    }
    println!("  Root CA certificate: {}", root.display());
    for e in &endpoints {
        println!("  Enrollment URL ({}): {}", e.name, e.url);
    }
    if let Some(token) = &server.generated_admin_token {
        println!();
        println!("  Admin token (shown once, store it now): {}", token.expose());
    }
    if let Some(why) = steward_server::tls::untrusted_reason(&server.config, &server.pki) {
        // Interop review E-1: said once, at start, where the operator looks.
        println!();
        println!("  Warning: devices will not trust this server's TLS certificate: {why}.");
        println!("  A fresh Windows device checks it before enrollment (discovery fails otherwise). Configure");
        println!("  [tls.acme] (Let's Encrypt) or a certificate from a public CA (tls.cert_file); until then only");
        println!("  devices that already trust the root CA above can enroll. Check with `steward doctor tls`.");
        tracing::warn!(reason = %why, "devices will not trust the TLS certificate (see `steward doctor tls`)");
    }
    if let Some(acme) = &server.acme {
        match acme.installed() {
            Some(i) => println!(
                "  TLS certificate by ACME for {} (renewed automatically)",
                i.names.join(", ")
            ),
            None => println!(
                "  Obtaining the TLS certificate by ACME for {} (the self-issued one is served until then)",
                server.config.acme_domains().join(", ")
            ),
        }
    }
    if let Some(kek) = server.pki.kek_source.in_data_dir() {
        println!();
        println!(
            "  Warning: the key-encryption key {} is in the data directory, next to the keys it seals:",
            kek.display()
        );
        println!("  a copy of the directory unseals the CA. Keep it elsewhere: STEWARD_KEK, pki.kek_file, or the");
        println!("  systemd credential steward-kek (docs/OPERATIONS.md, \"Where to keep the KEK\").");
    }
    println!();
    if let Some(discovery) = endpoints.iter().find(|e| e.name.starts_with("Windows")).map(|e| &e.url) {
        println!("To enroll a Windows 10/11 device:");
        println!("  1. Create an enrollment token:  steward enroll-token create --uses 1");
        println!("  2. Make the device trust the server: import the root CA above into the device's");
        println!("     Trusted Root Certification Authorities (or configure a publicly trusted TLS certificate).");
        println!("  3. On the device: Settings > Accounts > Access work or school > Enroll only in device management.");
        println!("     E-mail: any address (e.g. user@example.com); server: {discovery}; password: the token.");
        println!("     Or open this link on the device:");
        println!("     ms-device-enrollment:?mode=mdm&username=user@example.com&servername={discovery}");
        println!();
    }
    server.run_until_signal().await;
    Ok(())
}

async fn doctor_tls(
    url: String,
    ca: Option<PathBuf>,
    email_domains: Vec<String>,
    device_host: Option<String>,
    connect: Option<String>,
) -> Result<()> {
    use steward_server::doctor;
    let roots = match &ca {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("the CA file {}", path.display()))?;
            let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<_, _>>()
                .with_context(|| format!("the CA file {}", path.display()))?;
            if certs.is_empty() {
                bail!("{} holds no certificate", path.display());
            }
            Some(certs)
        }
        None => None,
    };
    let (host, _) = doctor::host_port(&url)?;
    // Without --email-domain: the public host's parent domain, reported only.
    let implied: Vec<String> = if email_domains.is_empty() {
        host.split_once('.')
            .map(|(_, parent)| parent.to_owned())
            .filter(|p| p.contains('.'))
            .into_iter()
            .collect()
    } else {
        Vec::new()
    };
    let report = doctor::check(&doctor::Check {
        url: url.clone(),
        connect_to: connect,
        roots,
        email_domains,
        device_host,
    })
    .await?;
    let trust = if ca.is_some() {
        "the given CA"
    } else {
        "the system's roots"
    };
    for hs in &report.handshakes {
        println!("{} (as a device trusting {trust}):", hs.host);
        for (i, c) in hs.chain.iter().enumerate() {
            println!("  [{i}] subject {}", c.subject);
            println!(
                "      issuer  {}{}",
                c.issuer,
                if c.self_signed { " (self-signed)" } else { "" }
            );
            println!("      expires {}", c.not_after);
            if i == 0 {
                println!("      names   {}", c.dns_names.join(", "));
            }
        }
        match &hs.trusted {
            Ok(()) => println!("  trusted: yes"),
            Err(why) => println!("  trusted: NO ({why})"),
        }
        println!(
            "  client certificate requested: {}",
            if hs.client_cert_requested { "yes" } else { "no" }
        );
    }
    let names: Vec<String> = report
        .handshakes
        .first()
        .and_then(|h| h.chain.first())
        .map(|l| l.dns_names.clone())
        .unwrap_or_default();
    for domain in &implied {
        let discovery = format!("EnterpriseEnrollment.{domain}");
        let covered = names.iter().any(|n| {
            n.eq_ignore_ascii_case(&discovery) || n.strip_prefix("*.").is_some_and(|s| s.eq_ignore_ascii_case(domain))
        });
        println!(
            "{discovery}: {} (Windows discovery for @{domain} addresses; check with --email-domain {domain})",
            if covered {
                "named by the certificate"
            } else {
                "not named by the certificate"
            }
        );
    }
    if report.problems.is_empty() {
        println!("no problems found");
        return Ok(());
    }
    println!("problems:");
    for p in &report.problems {
        println!("  - {p}");
    }
    bail!("{} problem(s) with the TLS certificate of {url}", report.problems.len())
}

/// `steward kek …`: works on the local data directory (no server, no runtime).
fn kek(cli: &Ctx, command: KekCommand) -> Result<()> {
    use steward_server::kek::SealedState;
    match command {
        KekCommand::Generate { out } => {
            let id = steward_server::kek::generate_file(&out)?;
            println!("wrote a new key-encryption key {id} to {} (mode 0600)", out.display());
            Ok(())
        }
        KekCommand::Rotate { new_kek_file } => {
            let config = local_config(cli)?;
            let new = match &new_kek_file {
                Some(path) => Some(
                    steward_server::bootstrap::read_kek_file(path)
                        .with_context(|| format!("the new KEK {}", path.display()))?,
                ),
                None => None,
            };
            let r = steward_server::kek::rotate(&config, new)?;
            for (name, from) in &r.resealed {
                println!("re-sealed {name}: {from} -> {}", r.to);
            }
            for name in &r.unchanged {
                println!("already under {}: {name}", r.to);
            }
            println!("every sealed file is under the key-encryption key {}", r.to);
            if let Some(path) = new_kek_file {
                println!(
                    "next: make {} the KEK (pki.kek_file or STEWARD_KEK_FILE) before the next start; keep the old                      one in pki.previous_kek_files until every replica's data directory is re-sealed                      (`steward kek status`)",
                    path.display()
                );
            }
            Ok(())
        }
        KekCommand::Status => {
            let config = local_config(cli)?;
            let s = steward_server::kek::status(&config)?;
            println!("current KEK  {}", s.current);
            for id in &s.previous {
                let files = s.files_under(*id);
                if files.is_empty() {
                    println!("previous KEK {id}: seals nothing; remove it from the configuration");
                } else {
                    println!(
                        "previous KEK {id}: still seals {} file(s); run `steward kek rotate`",
                        files.len()
                    );
                }
            }
            for f in &s.files {
                match &f.state {
                    SealedState::Absent => println!("  {:<30} absent", f.name),
                    SealedState::Opens { kek, named: true } => println!("  {:<30} {kek}", f.name),
                    SealedState::Opens { kek, named: false } => {
                        println!(
                            "  {:<30} {kek} (earlier format, names no KEK: rotate to name it)",
                            f.name
                        )
                    }
                    SealedState::Fails(why) => println!("  {:<30} DOES NOT OPEN: {why}", f.name),
                }
            }
            for p in &s.unlisted {
                println!("  {} is sealed but not Steward's to rotate", p.display());
            }
            if !s.complete() {
                bail!("the rotation is not complete");
            }
            println!("every sealed file is under the current KEK");
            Ok(())
        }
    }
}

fn config_check(config: &Config) -> Result<()> {
    println!("configuration is valid");
    println!("  data_dir     = {}", config.data_dir.display());
    println!("  listen       = {}", config.listen);
    println!("  public_url   = {}", config.public_url());
    println!("  tls names    = {}", config.tls_hostnames().join(", "));
    println!("  tls key      = {:?}", config.tls.key_algorithm);
    if let Some(device) = &config.tls.device_hostname {
        println!("  device host  = {device} (the only name that requests a client certificate)");
    }
    match &config.tls.acme {
        Some(acme) => println!(
            "  tls source   = ACME {:?} from {} for {}",
            acme.challenge,
            acme.directory_url,
            config.acme_domains().join(", ")
        ),
        None if config.tls.cert_file.is_some() => println!("  tls source   = tls.cert_file"),
        None => println!("  tls source   = own CA (devices will not trust it before enrollment)"),
    }
    println!("  auth_policy  = {:?}", config.enrollment.auth_policy);
    println!(
        "  admin_token  = {}",
        if config.admin_token.is_some() {
            "set"
        } else {
            "generated on first start"
        }
    );
    println!("environment variables read:");
    for (var, key) in steward_server::config::ENV_KEYS {
        println!("  {var:<36} -> {key}");
    }
    Ok(())
}

/// The password from --password, else one line of standard input; at least 8 characters.
pub(crate) fn read_password(email: &str, given: Option<String>) -> Result<String> {
    let password = match given {
        Some(p) => p,
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("Password for {email}: ");
            }
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.chars().count() < steward_core::MIN_PASSWORD_CHARS {
        return Err(steward_core::NewUserError::ShortPassword.into());
    }
    Ok(password)
}

/// The audit log of the local data directory: verifying the chain and exporting it have no API
/// route (the API lists events newest first, for people), so they read the services directly.
async fn audit_log(config: Config, command: AuditCommand) -> Result<()> {
    let api = LocalApi::open(&config)
        .await
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let core = api.core();
    match command {
        AuditCommand::Verify => match steward_server::audit::verify(&config.data_dir, core, api.audit_keys()).await {
            Ok(Ok(v)) => {
                print!("{v}");
                Ok(())
            }
            Ok(Err(broken)) => bail!("audit log BROKEN at event #{}: {}", broken.seq, broken.reason),
            Err(steward_server::audit::CheckpointError::Bad { path, line, reason }) => {
                bail!("audit checkpoints BROKEN: {} line {line}: {reason}", path.display())
            }
            Err(e) => Err(e.into()),
        },
        AuditCommand::Export => {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut after = None;
            loop {
                let page = core.store.audit_events(&AuditFilter::default(), after, 500).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.seq);
                for e in &page {
                    serde_json::to_writer(&mut out, e)?;
                    out.write_all(b"\n")?;
                }
            }
            out.flush()?;
            Ok(())
        }
    }
}
