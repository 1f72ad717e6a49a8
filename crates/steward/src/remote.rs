//! The CLI as an API client: the device, command, action and token commands when a server is
//! configured (`steward login`, or `STEWARD_SERVER` + `STEWARD_TOKEN`).

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::client::{self, ApiClient, CommandView, Device, DeviceFilter, MAX_PAGE};
use crate::output::{Output, Table, or_dash, print_json, when};
use crate::{
    ApiTokenCommand, CommandCommand, DeviceCommand, DeviceListArgs, GroupCommand, RoleArg, TokenCommand, UserCommand,
};

/// Requests in flight at once during bulk operations (one connection each).
const BULK_CONCURRENCY: usize = 4;
/// Devices listed when neither --limit nor --all is given.
const DEFAULT_LIST: usize = 100;

/// The id of the group called `name` (groups are few; the list is read whole).
async fn group_id(c: &ApiClient, name: &str) -> Result<String> {
    let (groups, _) = client::collect_pages(None, |_| true, |cur| c.groups(cur)).await?;
    groups
        .data
        .items
        .into_iter()
        .find(|g| g.name == name)
        .map(|g| g.id)
        .with_context(|| format!("no group named {name:?}"))
}

/// Devices matching the filters (name, state, group: all applied by the API), following cursors up
/// to `max`.
async fn select_devices(
    c: &ApiClient,
    filter: &DeviceFilter,
    max: Option<usize>,
) -> Result<(client::Fetched<client::Page<Device>>, bool)> {
    let page_size = max.map_or(MAX_PAGE, |m| u32::try_from(m).unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE));
    Ok(client::collect_pages(max, |_: &Device| true, |cur| c.devices(filter, cur, page_size)).await?)
}

pub async fn groups(c: &ApiClient, out: Output, command: GroupCommand) -> Result<()> {
    match command {
        GroupCommand::List => {
            let (groups, _) = client::collect_pages(None, |_| true, |cur| c.groups(cur)).await?;
            match out {
                Output::Json => print_json(&groups.raw)?,
                Output::Table => {
                    let mut t = Table::new(&["NAME", "ACTIVE DEVICES", "ID"]);
                    for g in &groups.data.items {
                        t.row(vec![g.name.clone(), g.active_devices.to_string(), g.id.clone()]);
                    }
                    t.print()?;
                }
            }
        }
        GroupCommand::Create { name } => {
            let g = c.create_group(&name).await?;
            match out {
                Output::Json => print_json(&g.raw)?,
                Output::Table => println!("created group {} ({})", g.data.name, g.data.id),
            }
        }
        GroupCommand::Delete { name } => {
            let id = group_id(c, &name).await?;
            c.delete_group(&id).await?;
            match out {
                Output::Json => print_json(&json!({ "deleted": id }))?,
                Output::Table => println!("deleted group {name}"),
            }
        }
    }
    Ok(())
}

/// A user by e-mail (the list is read whole: users are few).
async fn find_user(c: &ApiClient, email: &str) -> Result<client::UserView> {
    let wanted = email.trim().to_lowercase();
    let (mut users, _) =
        client::collect_pages(None, |u: &client::UserView| u.email == wanted, |cur| c.users(cur)).await?;
    users.data.items.pop().with_context(|| format!("no user {email:?}"))
}

async fn set_disabled(c: &ApiClient, out: Output, email: &str, disabled: bool) -> Result<()> {
    let u = find_user(c, email).await?;
    let v = c.update_user(&u.id, json!({ "disabled": disabled })).await?;
    match out {
        Output::Json => print_json(&v.raw)?,
        Output::Table => println!("{} {}", if disabled { "disabled" } else { "enabled" }, v.data.email),
    }
    Ok(())
}

pub async fn users(c: &ApiClient, out: Output, command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Add {
            email,
            name,
            password,
            console_role,
            console_group,
        } => {
            let password = crate::read_password(&email, password)?;
            let body = json!({
                "email": email,
                "display_name": name,
                "password": password,
                "console_role": console_role.map(RoleArg::api_name),
                "console_group": console_group,
            });
            let u = c.create_user(body).await?;
            match out {
                Output::Json => print_json(&u.raw)?,
                Output::Table => println!("added user {} ({})", u.data.email, u.data.id),
            }
        }
        UserCommand::List => {
            let (users, _) = client::collect_pages(None, |_| true, |cur| c.users(cur)).await?;
            let (groups, _) = client::collect_pages(None, |_| true, |cur| c.groups(cur)).await?;
            match out {
                Output::Json => print_json(&users.raw)?,
                Output::Table => {
                    let mut t = Table::new(&["EMAIL", "CONSOLE ROLE", "GROUP", "2FA", "DISABLED"]);
                    for u in &users.data.items {
                        let group = u
                            .console_group_id
                            .as_ref()
                            .and_then(|g| groups.data.items.iter().find(|x| &x.id == g))
                            .map(|g| g.name.as_str());
                        t.row(vec![
                            u.email.clone(),
                            or_dash(u.console_role.as_deref()),
                            or_dash(group),
                            if u.second_factor { "on" } else { "-" }.to_owned(),
                            if u.disabled { "yes" } else { "-" }.to_owned(),
                        ]);
                    }
                    t.print()?;
                }
            }
        }
        UserCommand::Disable { email } => set_disabled(c, out, &email, true).await?,
        UserCommand::Enable { email } => set_disabled(c, out, &email, false).await?,
        UserCommand::SetRole { email, role, group } => {
            let u = find_user(c, &email).await?;
            let body = json!({ "console_role": role, "console_group": group.unwrap_or_default() });
            let v = c.update_user(&u.id, body).await?;
            match out {
                Output::Json => print_json(&v.raw)?,
                Output::Table => println!(
                    "{}: console role {}",
                    v.data.email,
                    v.data.console_role.as_deref().unwrap_or("none")
                ),
            }
        }
        UserCommand::ResetTotp { email } => {
            let u = find_user(c, &email).await?;
            c.reset_user_totp(&u.id).await?;
            match out {
                Output::Json => print_json(&json!({ "reset_totp": u.id }))?,
                Output::Table => println!(
                    "removed the second factor of {} and ended their console sessions",
                    u.email
                ),
            }
        }
    }
    Ok(())
}

pub async fn devices(c: &ApiClient, out: Output, command: DeviceCommand) -> Result<()> {
    match command {
        DeviceCommand::List(DeviceListArgs {
            search,
            state,
            group,
            limit,
            all,
        }) => {
            if limit == Some(0) {
                bail!("--limit must be at least 1");
            }
            let max = if all { None } else { Some(limit.unwrap_or(DEFAULT_LIST)) };
            let filter = DeviceFilter {
                search,
                state,
                user: None,
                group,
            };
            let (page, more) = select_devices(c, &filter, max).await?;
            match out {
                Output::Json => print_json(&page.raw)?,
                Output::Table => {
                    let mut t = Table::new(&["DEVICE ID", "NAME", "STATE", "OS", "USER", "LAST SEEN"]);
                    for d in &page.data.items {
                        t.row(vec![
                            d.device_id.clone(),
                            or_dash(d.name.as_deref()),
                            d.state.clone(),
                            or_dash(d.os_version.as_deref()),
                            or_dash(d.user_email.as_deref()),
                            when(d.last_seen_at.as_deref(), "never"),
                        ]);
                    }
                    t.print()?;
                }
            }
            if more && limit.is_none() {
                eprintln!("(more devices match: use --all, or --limit N)");
            }
        }
        DeviceCommand::Move { device, group, none: _ } => {
            let d = c.set_device_group(&device, group.as_deref()).await?;
            match out {
                Output::Json => print_json(&d.raw)?,
                Output::Table => println!(
                    "moved {} to group {}",
                    d.data.device_id,
                    group.as_deref().unwrap_or("(none)")
                ),
            }
        }
        DeviceCommand::Show { device } => {
            let detail = c.device(&device).await?;
            match out {
                Output::Json => print_json(&detail.raw)?,
                Output::Table => {
                    let d = &detail.data.device;
                    let cert = &detail.data.certificate;
                    println!("device {}  (enrollment {})", d.device_id, d.id);
                    println!(
                        "  name {}  state {}  OS {}  user {}",
                        or_dash(d.name.as_deref()),
                        d.state,
                        or_dash(d.os_version.as_deref()),
                        or_dash(d.user_email.as_deref())
                    );
                    println!(
                        "  certificate {}  expires {}",
                        cert.thumbprint,
                        when(Some(&cert.not_after), "-")
                    );
                    println!(
                        "  enrolled {}  last seen {}",
                        when(Some(&d.enrolled_at), "-"),
                        when(d.last_seen_at.as_deref(), "never")
                    );
                    println!("inventory:");
                    for f in &detail.data.facts {
                        println!("  {:<36} {}", f.name, f.value);
                    }
                    println!("commands:");
                    let (commands, _) =
                        client::collect_pages(None, |_| true, |cur| c.device_commands(&device, cur)).await?;
                    print_commands(&commands.data.items, "  ")?;
                }
            }
        }
    }
    Ok(())
}

fn print_commands(commands: &[CommandView], indent: &str) -> Result<()> {
    let mut t = Table::new(&["ID", "STATE", "VERB", "STATUS", "ORIGIN", "CREATED", "TARGET"]);
    for c in commands {
        t.row(vec![
            c.id.clone(),
            c.state.clone(),
            c.verb.clone(),
            c.status_code.map_or("-".to_owned(), |s| s.to_string()),
            c.origin.clone(),
            when(Some(&c.created_at), "-"),
            c.targets.first().cloned().unwrap_or_default(),
        ]);
    }
    for line in t.render().lines() {
        println!("{indent}{line}");
    }
    Ok(())
}

pub async fn commands(c: &ApiClient, out: Output, command: CommandCommand) -> Result<()> {
    match command {
        CommandCommand::Send {
            device,
            verb,
            items,
            format,
        } => {
            let items: Vec<serde_json::Value> = crate::parse_items(verb, &items)?
                .into_iter()
                .map(|(target, data)| json!({ "target": target, "format": format, "data": data }))
                .collect();
            let body = json!({ "verb": verb.api_name(), "items": items });
            let queued = c.queue_command(&device, body).await?;
            match out {
                Output::Json => print_json(&queued.raw)?,
                Output::Table => println!("{}", queued.data.id),
            }
        }
        CommandCommand::List { device } => {
            let (commands, _) = client::collect_pages(None, |_| true, |cur| c.device_commands(&device, cur)).await?;
            match out {
                Output::Json => print_json(&commands.raw)?,
                Output::Table => print_commands(&commands.data.items, "")?,
            }
        }
        CommandCommand::Cancel { id } => {
            let cancelled = c.cancel_command(&id).await?;
            match out {
                Output::Json => print_json(&cancelled.raw)?,
                Output::Table => println!("cancelled {}", cancelled.data.id),
            }
        }
    }
    Ok(())
}

/// One remote action (`wipe`, `reboot`, `lock`, `sync`) on one device.
pub async fn action(
    c: &ApiClient,
    out: Output,
    device: &str,
    action: &str,
    body: Option<serde_json::Value>,
) -> Result<()> {
    let queued = c.action(device, action, body).await?;
    match out {
        Output::Json => print_json(&queued.raw)?,
        Output::Table => println!(
            "queued {} ({}) for {device}; it runs at the device's next check-in",
            queued.data.origin, queued.data.id
        ),
    }
    Ok(())
}

/// The outcome of a bulk action, device by device.
#[derive(Default)]
pub struct BulkReport {
    pub queued: Vec<(String, String, serde_json::Value)>,
    pub failed: Vec<(String, String)>,
}

impl BulkReport {
    /// Prints the summary (stdout) and the failures (stderr); an error when anything failed.
    pub fn finish(self, out: Output, what: &str, total: usize) -> Result<()> {
        match out {
            Output::Json => print_json(&json!({
                "queued": self.queued.iter().map(|(_, _, raw)| raw).collect::<Vec<_>>(),
                "failed": self
                    .failed
                    .iter()
                    .map(|(device, error)| json!({ "device_id": device, "error": error }))
                    .collect::<Vec<_>>(),
            }))?,
            Output::Table => println!("queued {what} on {} of {total} devices", self.queued.len()),
        }
        for (device, error) in self.failed.iter().take(20) {
            eprintln!("  {device}: {error}");
        }
        if self.failed.len() > 20 {
            eprintln!("  … and {} more", self.failed.len() - 20);
        }
        if self.failed.is_empty() {
            Ok(())
        } else {
            bail!("{} of {total} devices failed", self.failed.len())
        }
    }
}

pub fn progress_bar(total: usize) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} devices  {elapsed}  {msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// `steward sync --group G | --search S`: an inventory refresh on every matching active device.
pub async fn bulk_sync(c: &ApiClient, out: Output, group: Option<&str>, search: Option<String>) -> Result<()> {
    let filter = DeviceFilter {
        search,
        state: Some("active".into()),
        user: None,
        group: group.map(str::to_owned),
    };
    let (selected, _) = select_devices(c, &filter, None).await?;
    let devices = selected.data.items;
    let total = devices.len();
    if total == 0 {
        eprintln!("no active device matches; nothing queued");
        return BulkReport::default().finish(out, "an inventory refresh", 0);
    }
    let pb = progress_bar(total);
    let queue = Arc::new(Mutex::new(devices));
    let report = Arc::new(Mutex::new(BulkReport::default()));
    let mut workers = Vec::new();
    for _ in 0..BULK_CONCURRENCY.min(total) {
        let (c, queue, report, pb) = (c.fork(), queue.clone(), report.clone(), pb.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().map_or(None, |mut q| q.pop());
                let Some(d) = next else { break };
                let result = c.action(&d.device_id, "sync", None).await;
                if let Ok(mut r) = report.lock() {
                    match result {
                        Ok(q) => r.queued.push((d.device_id.clone(), q.data.id, q.raw)),
                        Err(e) => r.failed.push((d.device_id.clone(), e.to_string())),
                    }
                }
                pb.inc(1);
            }
        }));
    }
    for w in workers {
        w.await.context("a bulk worker failed")?;
    }
    pb.finish_and_clear();
    let report = std::mem::take(&mut *report.lock().map_err(|_| anyhow::anyhow!("bulk report poisoned"))?);
    report.finish(out, "an inventory refresh", total)
}

pub async fn api_tokens(c: &ApiClient, out: Output, command: ApiTokenCommand) -> Result<()> {
    match command {
        ApiTokenCommand::List => {
            let (tokens, _) = client::collect_pages(None, |_| true, |cur| c.api_tokens(cur)).await?;
            match out {
                Output::Json => print_json(&tokens.raw)?,
                Output::Table => {
                    let mut t = Table::new(&[
                        "ID",
                        "NAME",
                        "ROLE",
                        "GROUP",
                        "STATE",
                        "LAST USED",
                        "EXPIRES",
                        "CREATED BY",
                    ]);
                    for k in &tokens.data.items {
                        let state = if k.revoked_at.is_some() {
                            "revoked"
                        } else if k.active {
                            "active"
                        } else {
                            "expired"
                        };
                        t.row(vec![
                            k.id.clone(),
                            k.name.clone(),
                            k.role.clone(),
                            or_dash(k.group.as_deref()),
                            state.into(),
                            when(k.last_used_at.as_deref(), "never"),
                            when(k.expires_at.as_deref(), "never"),
                            k.created_by.clone(),
                        ]);
                    }
                    t.print()?;
                }
            }
        }
        ApiTokenCommand::Create {
            name,
            role,
            group,
            expires,
        } => {
            let days = expires.map(|d| crate::ceil_units(d, time::Duration::DAY)).transpose()?;
            let body = json!({
                "name": name,
                "role": role.api_name(),
                "group": group,
                "expires_in_days": days,
            });
            let created = c.create_api_token(body).await?;
            match out {
                Output::Json => print_json(&created.raw)?,
                Output::Table => {
                    eprintln!(
                        "Created API token {} ({}, role {}). It is shown only once:",
                        created.data.info.id, created.data.info.name, created.data.info.role
                    );
                    println!("{}", created.data.token);
                }
            }
        }
        ApiTokenCommand::Revoke { id } => {
            c.revoke_api_token(&id).await?;
            if out == Output::Table {
                println!("revoked API token {id}");
            } else {
                print_json(&json!({ "revoked": id }))?;
            }
        }
    }
    Ok(())
}

pub async fn enrollment_tokens(c: &ApiClient, out: Output, command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::List => {
            let (tokens, _) = client::collect_pages(None, |_| true, |cur| c.enrollment_tokens(cur)).await?;
            match out {
                Output::Json => print_json(&tokens.raw)?,
                Output::Table => {
                    let mut t = Table::new(&["ID", "USES", "EXPIRES", "STATE", "GROUP", "DESCRIPTION"]);
                    for k in &tokens.data.items {
                        t.row(vec![
                            k.id.clone(),
                            match k.max_uses {
                                Some(m) => format!("{}/{m}", k.uses),
                                None => k.uses.to_string(),
                            },
                            when(k.expires_at.as_deref(), "never"),
                            k.state.clone(),
                            or_dash(k.group.as_deref()),
                            k.description.clone().unwrap_or_default(),
                        ]);
                    }
                    t.print()?;
                }
            }
        }
        TokenCommand::Create {
            uses,
            expires,
            group,
            description,
        } => {
            if uses == Some(0) {
                bail!("--uses must be at least 1");
            }
            let hours = crate::ceil_units(expires, time::Duration::HOUR)?;
            let body = json!({
                "description": description,
                "max_uses": uses,
                "expires_in_hours": hours,
                "group": group,
            });
            let created = c.create_enrollment_token(body).await?;
            match out {
                Output::Json => print_json(&created.raw)?,
                Output::Table => {
                    let info = &created.data.info;
                    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                        eprintln!(
                            "Created enrollment token {} (uses: {}, expires {}). It is shown only once:",
                            info.id,
                            info.max_uses.map_or("unlimited".to_owned(), |u| u.to_string()),
                            when(info.expires_at.as_deref(), "never")
                        );
                    }
                    println!("{}", created.data.token);
                }
            }
        }
        TokenCommand::Revoke { id } => {
            c.revoke_enrollment_token(&id).await?;
            if out == Output::Table {
                println!("revoked enrollment token {id}");
            } else {
                print_json(&json!({ "revoked": id }))?;
            }
        }
    }
    Ok(())
}
