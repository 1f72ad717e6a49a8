//! The `steward` binary: `serve` runs the server; `login` makes the other commands API clients of a
//! server (`client.rs`, `remote.rs`). Without a configured server, or with `--local`, the device,
//! command and token commands work on the local data directory directly (SQLite allows that while
//! the server runs), so an operator can create an enrollment token on a fresh install before any
//! admin API client exists, and recover offline.

mod cli_config;
mod client;
mod duration;
mod output;
mod remote;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use steward_core::{
    AuditFilter, AuditOutcome, CommandId, CommandItem, CommandPayload, DeviceCursor, DeviceQuery, DeviceSort,
    EnrollmentId, EnrollmentState, EnrollmentTokenId, NewAuditEvent, NewEnrollmentToken, Role, Store, TokenHash,
    TokenKind, User, Verb,
};
use steward_server::Config;
use steward_server::admin;
use steward_server::windows::commands::{Action, WipeKind};
use time::OffsetDateTime;

use client::{ApiClient, ApiError, Target};
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
    after_help = "Device, command and token commands go through the admin API when a server is configured \
                  (`steward login`, or STEWARD_SERVER and STEWARD_TOKEN); otherwise, or with --local, they \
                  work on the local data directory."
)]
struct Cli {
    /// TOML config file of the server (defaults are used for anything it does not set; STEWARD_*
    /// variables override it). Used by `serve`, `config check` and the --local commands.
    #[arg(long, short, global = true, env = "STEWARD_CONFIG")]
    config: Option<PathBuf>,
    /// Work on the local data directory even when a server is configured (offline recovery, or
    /// before any API token exists).
    #[arg(long, global = true)]
    local: bool,
    /// Output format: tables for people, the API's JSON for scripts.
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
    /// Named API tokens with a role (through the API only).
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
    /// The hash-chained audit log of admin actions (local data directory).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print a shell completion script, e.g. `steward completions bash > /etc/bash_completion.d/steward`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; exit code 1 and the first broken event if a row was edited,
    /// inserted or removed.
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
    fn kind(self) -> WipeKind {
        match self {
            WipeArg::Wipe => WipeKind::Wipe,
            WipeArg::Protected => WipeKind::Protected,
            WipeArg::PersistUserData => WipeKind::PersistUserData,
            WipeArg::PersistProvisionedData => WipeKind::PersistProvisionedData,
            WipeArg::AutomaticRedeployment => WipeKind::AutomaticRedeployment,
        }
    }
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// List devices (enrollments in any state).
    List(DeviceListArgs),
    /// Show one device: enrollment, inventory facts, commands.
    Show { device: String },
    /// Move a device into a group (or out of every group with --none).
    Move {
        device: String,
        #[arg(long, required_unless_present = "none")]
        group: Option<String>,
        #[arg(long, conflicts_with = "group")]
        none: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum GroupCommand {
    /// List groups with their active device counts.
    List,
    /// Create a group.
    Create { name: String },
    /// Delete an empty group (no active device, enrollment token or API token in it).
    Delete { name: String },
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
    /// At most this many devices (default through the API: the first 100; locally: all).
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
enum VerbArg {
    Get,
    Add,
    Replace,
    Delete,
    Exec,
}

impl VerbArg {
    fn verb(self) -> Verb {
        match self {
            VerbArg::Get => Verb::Get,
            VerbArg::Add => Verb::Add,
            VerbArg::Replace => Verb::Replace,
            VerbArg::Delete => Verb::Delete,
            VerbArg::Exec => Verb::Exec,
        }
    }

    fn api_name(self) -> &'static str {
        match self {
            VerbArg::Get => "get",
            VerbArg::Add => "add",
            VerbArg::Replace => "replace",
            VerbArg::Delete => "delete",
            VerbArg::Exec => "exec",
        }
    }
}

/// `--item` values as (LocURI, data): Add and Replace need LocURI=VALUE, Exec sends empty data.
fn parse_items(verb: VerbArg, items: &[String]) -> Result<Vec<(String, Option<String>)>> {
    items
        .iter()
        .map(|i| {
            let (target, data) = match (verb.verb(), i.split_once('=')) {
                (Verb::Add | Verb::Replace, Some((t, v))) => (t, Some(v.to_owned())),
                (Verb::Add | Verb::Replace, None) => bail!("{i:?}: Add and Replace items are LocURI=VALUE"),
                (Verb::Exec, _) => (i.as_str(), Some(String::new())),
                _ => (i.as_str(), None),
            };
            Ok((target.to_owned(), data))
        })
        .collect()
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
        /// Lifetime, e.g. 30m, 24h, 7d, 2w (default 7d; through the API, rounded up to hours).
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
    /// List API tokens with role, scope, last use and state (never their values).
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
    /// Revoke a token: it stops authenticating at once.
    Revoke { id: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
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
    fn role(self) -> Role {
        match self {
            RoleArg::Admin => Role::Admin,
            RoleArg::Operator => Role::Operator,
            RoleArg::Helpdesk => Role::Helpdesk,
            RoleArg::Auditor => Role::Auditor,
        }
    }

    fn api_name(self) -> &'static str {
        match self {
            RoleArg::Admin => "admin",
            RoleArg::Operator => "operator",
            RoleArg::Helpdesk => "helpdesk",
            RoleArg::Auditor => "auditor",
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

/// Where a command that has both forms runs.
enum Mode {
    Local(Box<Config>),
    Remote(ApiClient),
}

fn mode(cli: &Ctx) -> Result<Mode> {
    if !cli.local {
        let stored = match cli_config::path() {
            Some(p) => cli_config::load(&p)?,
            None => None,
        };
        if let Some(target) = cli_config::resolve_from(&|k| std::env::var(k).ok(), stored)? {
            return Ok(Mode::Remote(ApiClient::new(&target)?));
        }
    }
    Ok(Mode::Local(Box::new(local_config(cli)?)))
}

fn local_config(cli: &Ctx) -> Result<Config> {
    Config::load(cli.config.as_deref()).context("configuration")
}

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
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match command {
            Task::Completions { .. } | Task::Logout | Task::Config { .. } => Ok(()),
            Task::Login {
                server,
                ca,
                token_stdin,
            } => login(server, ca, token_stdin).await,
            Task::Serve => serve(local_config(&cli)?).await,
            Task::User { command } => match mode(&cli)? {
                Mode::Remote(c) => remote::users(&c, out, command).await,
                Mode::Local(config) => {
                    no_json_locally(out)?;
                    user(*config, command).await
                }
            },
            Task::Groups { command } => match mode(&cli)? {
                Mode::Remote(c) => remote::groups(&c, out, command).await,
                Mode::Local(config) => {
                    no_json_locally(out)?;
                    groups(*config, command).await
                }
            },
            Task::Audit { command } => audit_log(local_config(&cli)?, command).await,
            Task::Tokens { command } => match mode(&cli)? {
                Mode::Remote(c) => remote::api_tokens(&c, out, command).await,
                Mode::Local(_) => bail!(
                    "API tokens are managed through the API: log in first (`steward login`, with the admin \
                     token `steward serve` printed or STEWARD_ADMIN_TOKEN)"
                ),
            },
            Task::EnrollTokens { command } => match mode(&cli)? {
                Mode::Remote(c) => remote::enrollment_tokens(&c, out, command).await,
                Mode::Local(config) => {
                    no_json_locally(out)?;
                    token(*config, command).await
                }
            },
            Task::Devices { command } => match mode(&cli)? {
                Mode::Remote(c) => remote::devices(&c, out, command).await,
                Mode::Local(config) => {
                    no_json_locally(out)?;
                    devices(*config, command).await
                }
            },
            Task::Commands { command } => match mode(&cli)? {
                Mode::Remote(c) => remote::commands(&c, out, command).await,
                Mode::Local(config) => {
                    no_json_locally(out)?;
                    device_commands(*config, command).await
                }
            },
            Task::Wipe { device, kind, yes } => {
                if !yes {
                    bail!("wiping erases {device}; repeat with --yes to confirm");
                }
                match mode(&cli)? {
                    Mode::Remote(c) => {
                        let body = serde_json::json!({ "kind": kind.kind(), "confirm": true });
                        remote::action(&c, out, &device, "wipe", Some(body)).await
                    }
                    Mode::Local(config) => {
                        no_json_locally(out)?;
                        action(*config, &device, Action::Wipe(kind.kind())).await
                    }
                }
            }
            Task::Reboot { device } => simple_action(&cli, &device, "reboot", Action::Reboot).await,
            Task::Lock { device } => simple_action(&cli, &device, "lock", Action::Lock).await,
            Task::Sync { device, group, search } => match (mode(&cli)?, device) {
                (Mode::Remote(c), Some(d)) => remote::action(&c, out, &d, "sync", None).await,
                (Mode::Remote(c), None) => remote::bulk_sync(&c, out, group.as_deref(), search).await,
                (Mode::Local(config), device) => {
                    no_json_locally(out)?;
                    local_sync(*config, device.as_deref(), group.as_deref(), search).await
                }
            },
        }
    })
}

async fn simple_action(cli: &Ctx, device: &str, name: &str, local: Action) -> Result<()> {
    match mode(cli)? {
        Mode::Remote(c) => remote::action(&c, cli.output, device, name, None).await,
        Mode::Local(config) => {
            no_json_locally(cli.output)?;
            action(*config, device, local).await
        }
    }
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
    let server = steward_server::start(config).await.context("starting the server")?;
    let url = &server.public_url;
    let discovery = format!("{url}{}", steward_server::windows::DISCOVERY_URL_PATH);
    let root = data_dir.join("pki").join("root-ca.pem");
    println!();
    println!("Steward is running on {} (public URL {url})", server.local_addr);
    if server.ca_created {
        println!("  Created a new CA in {}", data_dir.join("pki").display());
    }
    println!("  Root CA certificate: {}", root.display());
    println!("  Enrollment (discovery) URL: {discovery}");
    if let Some(token) = &server.generated_admin_token {
        println!();
        println!("  Admin token (shown once, store it now): {}", token.expose());
    }
    println!();
    println!("To enroll a Windows 10/11 device:");
    println!("  1. Create an enrollment token:  steward enroll-token create --uses 1");
    println!("  2. Make the device trust the server: import the root CA above into the device's");
    println!("     Trusted Root Certification Authorities (or configure a publicly trusted TLS certificate).");
    println!("  3. On the device: Settings > Accounts > Access work or school > Enroll only in device management.");
    println!("     E-mail: any address (e.g. user@example.com); server: {discovery}; password: the token.");
    println!("     Or open this link on the device:");
    println!("     ms-device-enrollment:?mode=mdm&username=user@example.com&servername={discovery}");
    println!();
    server.run_until_signal().await;
    Ok(())
}

fn config_check(config: &Config) -> Result<()> {
    println!("configuration is valid");
    println!("  data_dir     = {}", config.data_dir.display());
    println!("  listen       = {}", config.listen);
    println!("  public_url   = {}", config.public_url());
    println!("  tls names    = {}", config.tls_hostnames().join(", "));
    println!("  tls key      = {:?}", config.tls.key_algorithm);
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

async fn token(config: Config, command: TokenCommand) -> Result<()> {
    let store = steward_server::open_store(&config).await?;
    match command {
        TokenCommand::Create {
            uses,
            expires,
            group,
            description,
        } => {
            if uses == Some(0) {
                bail!("--uses must be at least 1");
            }
            if expires <= time::Duration::ZERO {
                bail!("--expires must be positive");
            }
            let secret = TokenKind::Enrollment
                .generate()
                .map_err(|_| anyhow::anyhow!("random generator failed"))?;
            let now = OffsetDateTime::now_utc();
            let t = store
                .create_enrollment_token(&NewEnrollmentToken {
                    id: EnrollmentTokenId::new(),
                    token_hash: TokenHash::of(secret.expose()),
                    description,
                    max_uses: uses,
                    expires_at: Some(now + expires),
                    group,
                    created_at: now,
                })
                .await?;
            audit(
                store.as_ref(),
                "enrollment_token.create",
                t.id.to_string(),
                uses.map_or("unlimited uses".to_owned(), |u| format!("{u} uses")),
            )
            .await?;
            if std::io::stdout().is_terminal() {
                eprintln!(
                    "Created enrollment token {} (uses: {}, expires {}). It is shown only once:",
                    t.id,
                    uses.map_or("unlimited".to_owned(), |u| u.to_string()),
                    t.expires_at.map_or("never".to_owned(), |e| e.to_string())
                );
            }
            println!("{}", secret.expose());
        }
        TokenCommand::Revoke { id } => {
            let id: EnrollmentTokenId = id.parse().context("enrollment token id")?;
            if !store.revoke_enrollment_token(id).await? {
                bail!("no enrollment token {id} (or it is already revoked)");
            }
            audit(store.as_ref(), "enrollment_token.revoke", id.to_string(), String::new()).await?;
            println!("revoked enrollment token {id}");
        }
        TokenCommand::List => {
            println!(
                "{:<36}  {:>9}  {:<25}  {:<8}  DESCRIPTION",
                "ID", "USES", "EXPIRES", "STATE"
            );
            let now = OffsetDateTime::now_utc();
            for t in store.list_enrollment_tokens().await? {
                let uses = match t.max_uses {
                    Some(m) => format!("{}/{m}", t.uses),
                    None => format!("{}", t.uses),
                };
                let state = match t.usable_at(now) {
                    Ok(()) => "usable".to_owned(),
                    Err(e) => format!("{e:?}").to_lowercase(),
                };
                let expires = t
                    .expires_at
                    .map_or("never".into(), |e| e.date().to_string() + " " + &e.time().to_string());
                println!(
                    "{:<36}  {uses:>9}  {expires:<25}  {state:<8}  {}",
                    t.id,
                    t.description.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

async fn user(config: Config, command: UserCommand) -> Result<()> {
    let store = steward_server::open_store(&config).await?;
    match command {
        UserCommand::Add {
            email,
            name,
            password,
            console_role,
            console_group,
        } => {
            let group = match console_group.as_deref() {
                Some(g) => Some(local_group(store.as_ref(), g).await?.id),
                None => None,
            };
            // Checked before asking for the password; User::create checks it again.
            let email = User::normalize_email(&email)?;
            let password = read_password(&email, password)?;
            let user = {
                let email = email.clone();
                tokio::task::spawn_blocking(move || User::create(&email, name, &password, OffsetDateTime::now_utc()))
                    .await??
            };
            match console_role {
                Some(r) => store.create_console_user(&user, r.role(), group).await?,
                None => store.create_user(&user).await?,
            }
            audit(store.as_ref(), "user.create", email.clone(), String::new()).await?;
            println!("added user {email}");
        }
        UserCommand::List => {
            let console = store.list_console_users().await?;
            let groups = store.list_groups().await?;
            let mut t = output::Table::new(&["EMAIL", "CONSOLE ROLE", "GROUP", "2FA", "DISABLED"]);
            for u in store.list_users().await? {
                let c = console.iter().find(|c| c.user.id == u.id);
                let group = c
                    .and_then(|c| c.group)
                    .and_then(|g| groups.iter().find(|x| x.id == g))
                    .map(|g| g.name.clone());
                t.row(vec![
                    u.email.clone(),
                    c.map_or("-".to_owned(), |c| c.role.to_string()),
                    output::or_dash(group.as_deref()),
                    if c.and_then(|c| c.totp.as_ref())
                        .is_some_and(steward_core::UserTotp::confirmed)
                    {
                        "on"
                    } else {
                        "-"
                    }
                    .to_owned(),
                    if u.disabled { "yes" } else { "-" }.to_owned(),
                ]);
            }
            t.print()?;
        }
        UserCommand::Disable { email } => set_disabled(store.as_ref(), &email, true).await?,
        UserCommand::Enable { email } => set_disabled(store.as_ref(), &email, false).await?,
        UserCommand::SetRole { email, role, group } => {
            let u = store
                .user_by_email(&email)
                .await?
                .with_context(|| format!("no user {email:?}"))?;
            let role = match role.as_str() {
                "none" => None,
                r => Some(
                    Role::parse(r)
                        .with_context(|| format!("unknown role {r:?} (admin, operator, helpdesk, auditor or none)"))?,
                ),
            };
            let group = match group.as_deref() {
                Some(g) => {
                    if role.is_none() {
                        bail!("--group needs a console role");
                    }
                    Some(local_group(store.as_ref(), g).await?.id)
                }
                None => None,
            };
            store.set_console_access(u.id, role, group).await?;
            store.delete_console_sessions_of(u.id).await?;
            let what = role.map_or("none".to_owned(), |r| r.to_string());
            audit(
                store.as_ref(),
                "user.update",
                u.email.clone(),
                format!("console: {what}"),
            )
            .await?;
            println!("{}: console role {what}", u.email);
        }
        UserCommand::ResetTotp { email } => {
            let u = store
                .console_user_by_email(&email)
                .await?
                .with_context(|| format!("no console user {email:?}"))?;
            store.set_user_totp(u.user.id, None).await?;
            let ended = store.delete_console_sessions_of(u.user.id).await?;
            audit(store.as_ref(), "user.reset_totp", u.user.email.clone(), String::new()).await?;
            println!(
                "removed the second factor of {} and ended {ended} console session(s)",
                u.user.email
            );
        }
    }
    Ok(())
}

/// The group called `name`, or an error saying there is none.
async fn local_group(store: &dyn Store, name: &str) -> Result<steward_core::Group> {
    store
        .group_by_name(name)
        .await?
        .with_context(|| format!("no group named {name:?}"))
}

async fn set_disabled(store: &dyn Store, email: &str, disabled: bool) -> Result<()> {
    let u = store
        .user_by_email(email)
        .await?
        .with_context(|| format!("no user {email:?}"))?;
    store.set_user_disabled(u.id, disabled).await?;
    store.delete_console_sessions_of(u.id).await?;
    let what = if disabled { "disabled" } else { "enabled" };
    audit(store, "user.update", u.email.clone(), what.to_owned()).await?;
    println!("{what} {}", u.email);
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

async fn groups(config: Config, command: GroupCommand) -> Result<()> {
    let store = steward_server::open_store(&config).await?;
    match command {
        GroupCommand::List => {
            let counts: std::collections::HashMap<_, _> = store.group_device_counts().await?.into_iter().collect();
            let mut t = output::Table::new(&["NAME", "ACTIVE DEVICES", "ID"]);
            for g in store.list_groups().await? {
                t.row(vec![
                    g.name.clone(),
                    counts.get(&g.id).copied().unwrap_or(0).to_string(),
                    g.id.to_string(),
                ]);
            }
            t.print()?;
        }
        GroupCommand::Create { name } => {
            let g = steward_core::Group::named(&name, OffsetDateTime::now_utc())?;
            store.create_group(&g).await?;
            audit(store.as_ref(), "group.create", g.name.clone(), String::new()).await?;
            println!("created group {}", g.name);
        }
        GroupCommand::Delete { name } => {
            let g = local_group(store.as_ref(), &name).await?;
            match store.delete_group(g.id).await {
                Ok(_) => {}
                Err(steward_core::StoreError::Conflict(_)) => bail!(
                    "group {name:?} still has active devices, enrollment tokens or API tokens: move or revoke them first"
                ),
                Err(e) => return Err(e.into()),
            }
            audit(store.as_ref(), "group.delete", g.id.to_string(), String::new()).await?;
            println!("deleted group {name}");
        }
    }
    Ok(())
}

async fn action(config: Config, device: &str, action: Action) -> Result<()> {
    let store = steward_server::open_store(&config).await?;
    let e = admin::find_device(store.as_ref(), device).await?;
    let id = admin::queue_action(store.as_ref(), &e, &action).await?;
    let name = action.origin().replace("action:", "device.");
    let details = match &action {
        Action::Wipe(kind) => format!("command {id}, kind {kind:?}"),
        _ => format!("command {id}"),
    };
    audit(store.as_ref(), &name, e.device_id.to_string(), details).await?;
    println!(
        "queued {} ({id}) for {}; it runs at the device's next check-in",
        action.origin(),
        e.device_id
    );
    Ok(())
}

async fn devices(config: Config, command: DeviceCommand) -> Result<()> {
    let store = steward_server::open_store(&config).await?;
    match command {
        DeviceCommand::List(DeviceListArgs {
            search,
            state,
            group,
            limit,
            all: _,
        }) => {
            if limit == Some(0) {
                bail!("--limit must be at least 1");
            }
            let state = match state.as_deref() {
                Some(s) => Some(EnrollmentState::parse(s).with_context(|| format!("unknown state {s:?}"))?),
                None => None,
            };
            let rows = select_local(store.as_ref(), search, state, group.as_deref(), limit).await?;
            let mut t = output::Table::new(&["DEVICE ID", "NAME", "STATE", "OS", "USER", "LAST SEEN"]);
            for e in rows {
                t.row(vec![
                    e.device_id.to_string(),
                    output::or_dash(e.device_name.as_deref()),
                    e.state.as_str().to_owned(),
                    output::or_dash(e.os_version.as_deref()),
                    output::or_dash(e.user_email.as_deref()),
                    e.last_seen_at.map_or("never".to_owned(), |t| t.to_string()),
                ]);
            }
            t.print()?;
        }
        DeviceCommand::Move { device, group, none: _ } => {
            let e = admin::find_device(store.as_ref(), &device).await?;
            let g = match group.as_deref() {
                Some(name) => Some(local_group(store.as_ref(), name).await?),
                None => None,
            };
            store.set_enrollment_group(e.id, g.as_ref().map(|g| g.id)).await?;
            let label = g.as_ref().map_or("(none)".to_owned(), |g| g.name.clone());
            audit(
                store.as_ref(),
                "device.set_group",
                e.device_id.to_string(),
                format!("group: {label}"),
            )
            .await?;
            println!("moved {} to group {label}", e.device_id);
        }
        DeviceCommand::Show { device } => {
            let e = admin::find_device(store.as_ref(), &device).await?;
            println!("device {}  (enrollment {})", e.device_id, e.id);
            println!(
                "  name {}  type {}  auth {}",
                e.device_name.as_deref().unwrap_or("-"),
                e.enrollment_type.as_str(),
                e.auth_method.as_str()
            );
            println!("  certificate {}  expires {}", e.cert_thumbprint, e.cert_not_after);
            println!(
                "  enrolled {}  last seen {}",
                e.enrolled_at,
                e.last_seen_at.map_or("never".to_owned(), |t| t.to_string())
            );
            println!("inventory:");
            for f in store.device_facts(e.id).await? {
                println!("  {:<36} {}", f.name, f.value);
            }
            print_commands(store.as_ref(), e.id).await?;
        }
    }
    Ok(())
}

/// Devices of the local store matching the filters, in enrollment order, paging through the store.
async fn select_local(
    store: &dyn Store,
    search: Option<String>,
    state: Option<EnrollmentState>,
    group: Option<&str>,
    max: Option<usize>,
) -> Result<Vec<steward_core::Enrollment>> {
    let group_id = match group {
        Some(g) => Some(local_group(store, g.trim()).await?.id),
        None => None,
    };
    let mut query = DeviceQuery {
        name_contains: search.filter(|s| !s.is_empty()),
        state,
        group_id,
        limit: 500,
        ..DeviceQuery::default()
    };
    let mut rows = Vec::new();
    loop {
        let page = store.list_devices(&query).await?;
        let Some(last) = page.last() else { break };
        query.after = Some(DeviceCursor {
            key: DeviceSort::EnrolledAt.key_of(last),
            id: last.id,
        });
        let full = page.len() == query.limit as usize;
        rows.extend(page);
        if max.is_some_and(|m| rows.len() >= m) || !full {
            break;
        }
    }
    if let Some(m) = max {
        rows.truncate(m);
    }
    Ok(rows)
}

/// `steward sync` on the local data directory: one device, or every active device selected by
/// group and/or name, with a progress bar and a summary.
async fn local_sync(config: Config, device: Option<&str>, group: Option<&str>, search: Option<String>) -> Result<()> {
    let store = steward_server::open_store(&config).await?;
    let targets = match device {
        Some(d) => vec![admin::find_device(store.as_ref(), d).await?],
        None => select_local(store.as_ref(), search, Some(EnrollmentState::Active), group, None).await?,
    };
    let total = targets.len();
    let pb = (device.is_none()).then(|| remote::progress_bar(total));
    let mut report = remote::BulkReport::default();
    for e in targets {
        let queued = admin::queue_command(
            store.as_ref(),
            &e,
            steward_server::windows::inventory::inventory_command(),
            steward_server::windows::inventory::ORIGIN,
            -10,
            None,
        )
        .await;
        match queued {
            Ok(id) => {
                audit(
                    store.as_ref(),
                    "device.sync",
                    e.device_id.to_string(),
                    format!("command {id}"),
                )
                .await?;
                if device.is_some() {
                    println!(
                        "queued inventory refresh {id} for {}; it runs at the device's next check-in",
                        e.device_id
                    );
                }
                report
                    .queued
                    .push((e.device_id.to_string(), id.to_string(), serde_json::Value::Null));
            }
            Err(err) if device.is_some() => return Err(err.into()),
            Err(err) => report.failed.push((e.device_id.to_string(), err.to_string())),
        }
        if let Some(pb) = &pb {
            pb.inc(1);
        }
    }
    match pb {
        Some(pb) => {
            pb.finish_and_clear();
            if total == 0 {
                eprintln!("no active device matches; nothing queued");
            }
            report.finish(Output::Table, "an inventory refresh", total)
        }
        None => Ok(()),
    }
}

async fn print_commands(store: &dyn Store, id: EnrollmentId) -> Result<()> {
    println!("commands:");
    for c in store.commands_for_enrollment(id).await? {
        println!(
            "  {}  {:<9}  {:<8} {:>4}  {:<16} {}",
            c.id,
            c.state.as_str(),
            c.payload.verb.as_str(),
            c.status_code.map_or("-".to_owned(), |s| s.to_string()),
            c.origin,
            c.payload.targets().first().copied().unwrap_or("")
        );
    }
    Ok(())
}

async fn device_commands(config: Config, command: CommandCommand) -> Result<()> {
    let store = steward_server::open_store(&config).await?;
    match command {
        CommandCommand::Send {
            device,
            verb,
            items,
            format,
        } => {
            let e = admin::find_device(store.as_ref(), &device).await?;
            let items = parse_items(verb, &items)?
                .into_iter()
                .map(|(target, data)| CommandItem {
                    target,
                    format: format.clone(),
                    type_: None,
                    data,
                })
                .collect();
            let verb = verb.verb();
            let payload = CommandPayload {
                verb,
                items,
                children: Vec::new(),
            };
            let id = admin::queue_command(store.as_ref(), &e, payload, "admin", 0, None).await?;
            audit(
                store.as_ref(),
                "device.command",
                e.device_id.to_string(),
                format!("command {id}"),
            )
            .await?;
            println!("{id}");
        }
        CommandCommand::List { device } => {
            let e = admin::find_device(store.as_ref(), &device).await?;
            print_commands(store.as_ref(), e.id).await?;
        }
        CommandCommand::Cancel { id } => {
            let id: CommandId = id.parse().context("command id")?;
            if store.cancel_command(id, OffsetDateTime::now_utc()).await? {
                audit(store.as_ref(), "command.cancel", id.to_string(), String::new()).await?;
                println!("cancelled {id}");
            } else {
                bail!("command {id} is not pending (already answered, cancelled or unknown)");
            }
        }
    }
    Ok(())
}

/// Records a successful local admin action in the audit log. The CLI works on the data directory
/// directly, so whoever runs it can write the database anyway: it acts as an admin.
async fn audit(store: &dyn Store, action: &str, target: String, details: String) -> Result<()> {
    store
        .append_audit_event(&NewAuditEvent {
            at: OffsetDateTime::now_utc(),
            actor: "cli (local)".into(),
            actor_id: None,
            actor_role: Some(Role::Admin),
            action: action.to_owned(),
            target: Some(target),
            source_ip: None,
            outcome: AuditOutcome::Success,
            status: None,
            details: (!details.is_empty()).then_some(details),
        })
        .await
        .context("the action was done, but appending it to the audit log failed")?;
    Ok(())
}

async fn audit_log(config: Config, command: AuditCommand) -> Result<()> {
    let store = steward_server::open_store(&config).await?;
    match command {
        AuditCommand::Verify => match steward_core::verify_audit_log(store.as_ref()).await? {
            Ok(v) => {
                println!("audit log intact: {} events, head hash {}", v.count(), v.head());
                Ok(())
            }
            Err(broken) => bail!("audit log BROKEN at event #{}: {}", broken.seq, broken.reason),
        },
        AuditCommand::Export => {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut after = None;
            loop {
                let page = store.audit_events(&AuditFilter::default(), after, 500).await?;
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
