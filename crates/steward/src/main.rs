//! The `steward` binary: `serve` runs the server; the other subcommands work on the local data
//! directory directly (SQLite allows that while the server runs), so an operator can create an
//! enrollment token on a fresh install before any admin API client exists.

mod duration;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use steward_domain::{
    AuditFilter, AuditOutcome, CommandId, CommandItem, CommandPayload, EnrollmentId, EnrollmentTokenId, NewAuditEvent,
    NewEnrollmentToken, Role, Store, TokenHash, TokenKind, User, UserId, Verb,
};
use steward_server::Config;
use steward_server::admin;
use steward_server::windows::commands::{Action, WipeKind};
use time::OffsetDateTime;

#[derive(Parser)]
#[command(
    name = "steward",
    version,
    about = "Steward: device management for Windows, Apple and Android"
)]
struct Cli {
    /// TOML config file (defaults are used for anything it does not set; STEWARD_* variables override it).
    #[arg(long, short, global = true, env = "STEWARD_CONFIG")]
    config: Option<PathBuf>,
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
    /// Enrollment tokens: the password a device presents to enroll.
    #[command(name = "enroll-token")]
    EnrollToken {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Users of Steward's own user store (federated sign-in, e-mail + password enrollment).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Enrolled devices.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Queue, list and cancel device commands (OMA-DM Get/Add/Replace/Delete/Exec).
    Command {
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
    /// Refresh a device's inventory at its next check-in.
    Sync { device: String },
    /// The hash-chained audit log of admin actions.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
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

#[derive(Subcommand)]
enum DeviceCommand {
    /// List enrollments.
    List,
    /// Show one device: enrollment, inventory facts, commands.
    Show { device: String },
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
        /// Lifetime, e.g. 30m, 24h, 7d, 2w (default 7d).
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
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STEWARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = Config::load(cli.config.as_deref()).context("configuration")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Task::Serve => serve(config).await,
            Task::Config {
                command: ConfigCommand::Check,
            } => config_check(&config),
            Task::EnrollToken { command } => token(config, command).await,
            Task::User { command } => user(config, command).await,
            Task::Device { command } => devices(config, command).await,
            Task::Command { command } => device_commands(config, command).await,
            Task::Wipe { device, kind, yes } => {
                if !yes {
                    bail!("wiping erases {device}; repeat with --yes to confirm");
                }
                let kind = match kind {
                    WipeArg::Wipe => WipeKind::Wipe,
                    WipeArg::Protected => WipeKind::Protected,
                    WipeArg::PersistUserData => WipeKind::PersistUserData,
                    WipeArg::PersistProvisionedData => WipeKind::PersistProvisionedData,
                    WipeArg::AutomaticRedeployment => WipeKind::AutomaticRedeployment,
                };
                action(config, &device, Action::Wipe(kind)).await
            }
            Task::Reboot { device } => action(config, &device, Action::Reboot).await,
            Task::Audit { command } => audit_log(config, command).await,
            Task::Sync { device } => {
                let store = steward_server::open_store(&config).await?;
                let e = admin::find_device(store.as_ref(), &device).await?;
                let id = admin::queue_command(
                    store.as_ref(),
                    &e,
                    steward_server::windows::inventory::inventory_command(),
                    steward_server::windows::inventory::ORIGIN,
                    -10,
                    None,
                )
                .await?;
                audit(
                    store.as_ref(),
                    "device.sync",
                    e.device_id.to_string(),
                    format!("command {id}"),
                )
                .await?;
                println!(
                    "queued inventory refresh {id} for {}; it runs at the device's next check-in",
                    e.device_id
                );
                Ok(())
            }
        }
    })
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
        UserCommand::Add { email, name, password } => {
            let email = email.trim().to_lowercase();
            if !email.contains('@') || email.len() > 254 {
                bail!("{email:?} is not an e-mail address");
            }
            let password = match password {
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
            if password.chars().count() < 8 {
                bail!("the password must have at least 8 characters");
            }
            let hash = tokio::task::spawn_blocking(move || steward_domain::secret::hash_password(&password))
                .await?
                .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
            store
                .create_user(&User {
                    id: UserId::new(),
                    email: email.clone(),
                    display_name: name,
                    password_hash: hash,
                    disabled: false,
                    created_at: OffsetDateTime::now_utc(),
                })
                .await?;
            audit(store.as_ref(), "user.create", email.clone(), String::new()).await?;
            println!("added user {email}");
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
        DeviceCommand::List => {
            println!(
                "{:<34}  {:<20}  {:<10}  {:<20}  {:<25}  LAST SEEN",
                "DEVICE ID", "NAME", "STATE", "OS", "USER"
            );
            for e in store.list_enrollments().await? {
                println!(
                    "{:<34}  {:<20}  {:<10}  {:<20}  {:<25}  {}",
                    e.device_id.as_str(),
                    e.device_name.as_deref().unwrap_or("-"),
                    e.state.as_str(),
                    e.os_version.as_deref().unwrap_or("-"),
                    e.user_email.as_deref().unwrap_or("-"),
                    e.last_seen_at.map_or("never".to_owned(), |t| t.to_string())
                );
            }
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
            let verb = match verb {
                VerbArg::Get => Verb::Get,
                VerbArg::Add => Verb::Add,
                VerbArg::Replace => Verb::Replace,
                VerbArg::Delete => Verb::Delete,
                VerbArg::Exec => Verb::Exec,
            };
            let items = items
                .iter()
                .map(|i| {
                    let (target, data) = match (verb, i.split_once('=')) {
                        (Verb::Add | Verb::Replace, Some((t, v))) => (t, Some(v.to_owned())),
                        (Verb::Add | Verb::Replace, None) => bail!("{i:?}: Add and Replace items are LocURI=VALUE"),
                        (Verb::Exec, _) => (i.as_str(), Some(String::new())),
                        _ => (i.as_str(), None),
                    };
                    Ok(CommandItem {
                        target: target.to_owned(),
                        format: format.clone(),
                        type_: None,
                        data,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
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
        AuditCommand::Verify => match steward_domain::verify_audit_log(store.as_ref()).await? {
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
