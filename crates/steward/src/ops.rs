//! The CLI's admin operations, each implemented once over the admin API: the device, command,
//! action, group, user and token commands. The client's transport decides where they run — a
//! server over HTTPS (`steward login`, or `STEWARD_SERVER` + `STEWARD_TOKEN`) or the API in this
//! process over the local data directory (`--local`, or no server configured) — not this module.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use serde_json::json;
use steward_api::types::{
    ApiTokenKind, CatalogCategoryName, CommandItemRequest, CommandRequest, CommandView, DeviceGroupRequest,
    DeviceSummary, DeviceTagsRequest, GroupRuleRequest, NewApiTokenRequest, NewEnrollmentTokenRequest, NewGroupRequest,
    NewUserRequest, RoleName, UpdateUserRequest, UserView, VerbName,
};

use crate::client::{self, ApiClient, DeviceAction, DeviceFilter, MAX_PAGE};
use crate::output::{Output, Table, or_dash, print_json, when};
use crate::{
    ApiTokenCommand, CatalogCommand, CommandCommand, DeviceCommand, DeviceListArgs, GroupCommand, RuleArgs, TagChange,
    TokenCommand, UserCommand, VerbArg,
};

/// Requests in flight at once during bulk operations (one connection each over HTTPS).
const BULK_CONCURRENCY: usize = 4;
/// Devices listed when neither --limit nor --all is given.
const DEFAULT_LIST: usize = 100;

/// The API's name of a role.
pub fn role_name(r: RoleName) -> &'static str {
    match r {
        RoleName::Admin => "admin",
        RoleName::Operator => "operator",
        RoleName::Helpdesk => "helpdesk",
        RoleName::Auditor => "auditor",
    }
}

/// `commands send`: the `--item` values as the API's command request. Add and Replace need
/// LocURI=VALUE; Exec sends empty data; Get and Delete name a LocURI.
pub fn command_request(verb: VerbArg, items: &[String], format: Option<String>) -> Result<CommandRequest> {
    let items = items
        .iter()
        .map(|i| {
            let (target, data) = match (verb, i.split_once('=')) {
                (VerbArg::Add | VerbArg::Replace, Some((t, v))) => (t, Some(v.to_owned())),
                (VerbArg::Add | VerbArg::Replace, None) => bail!("{i:?}: Add and Replace items are LocURI=VALUE"),
                (VerbArg::Exec, _) => (i.as_str(), Some(String::new())),
                (VerbArg::Get | VerbArg::Delete, _) => (i.as_str(), None),
            };
            Ok(CommandItemRequest {
                target: target.to_owned(),
                format: format.clone(),
                type_: None,
                data,
            })
        })
        .collect::<Result<_>>()?;
    let verb = match verb {
        VerbArg::Get => VerbName::Get,
        VerbArg::Add => VerbName::Add,
        VerbArg::Replace => VerbName::Replace,
        VerbArg::Delete => VerbName::Delete,
        VerbArg::Exec => VerbName::Exec,
    };
    Ok(CommandRequest { verb, items })
}

/// The id of the group called `name` (groups are few; the list is read whole).
async fn group_id(c: &ApiClient, name: &str) -> Result<String> {
    let (groups, _) = client::collect_pages(None, |_| true, |cur| c.groups(cur)).await?;
    groups
        .data
        .into_iter()
        .find(|g| g.name == name)
        .map(|g| g.id.to_string())
        .with_context(|| format!("no group named {name:?}"))
}

/// Devices matching the filters (name, state, group: all applied by the API), following cursors up
/// to `max`.
async fn select_devices(
    c: &ApiClient,
    filter: &DeviceFilter,
    max: Option<usize>,
) -> Result<(client::Fetched<Vec<DeviceSummary>>, bool)> {
    let page_size = max.map_or(MAX_PAGE, |m| u32::try_from(m).unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE));
    Ok(client::collect_pages(max, |_| true, |cur| c.devices(filter, cur, page_size)).await?)
}

/// The rule of `--rule` or `--rule-file` as JSON (the server validates what it says).
fn rule_json(args: &RuleArgs) -> Result<Option<serde_json::Value>> {
    let (text, from) = match (&args.rule, &args.rule_file) {
        (Some(text), _) => (text.clone(), "--rule".to_owned()),
        (None, Some(path)) => (
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            path.display().to_string(),
        ),
        (None, None) => return Ok(None),
    };
    let value = serde_json::from_str(&text).with_context(|| format!("{from} is not JSON"))?;
    Ok(Some(value))
}

pub async fn groups(c: &ApiClient, out: Output, command: GroupCommand) -> Result<()> {
    match command {
        GroupCommand::List => {
            let (groups, _) = client::collect_pages(None, |_| true, |cur| c.groups(cur)).await?;
            match out {
                Output::Json => print_json(&groups.raw)?,
                Output::Table => {
                    let mut t = Table::new(&["NAME", "ACTIVE DEVICES", "ID"]);
                    for g in &groups.data {
                        t.row(vec![g.name.clone(), g.active_devices.to_string(), g.id.to_string()]);
                    }
                    t.print()?;
                }
            }
        }
        GroupCommand::Create { name, rule } => {
            let rule = rule_json(&rule)?;
            let dynamic = rule.is_some();
            let g = c.create_group(&NewGroupRequest { name, rule }).await?;
            match out {
                Output::Json => print_json(&g.raw)?,
                Output::Table if dynamic => println!("created dynamic group {} ({})", g.data.name, g.data.id),
                Output::Table => println!("created group {} ({})", g.data.name, g.data.id),
            }
        }
        GroupCommand::SetRule { name, rule } => {
            let rule = rule_json(&rule)?.context("give the rule with --rule JSON or --rule-file FILE")?;
            let id = group_id(c, &name).await?;
            c.set_group_rule(&id, &GroupRuleRequest { rule }).await?;
            match out {
                Output::Json => print_json(&json!({ "updated": id }))?,
                Output::Table => println!("replaced the rule of group {name}"),
            }
        }
        GroupCommand::Members { name } => {
            let id = group_id(c, &name).await?;
            let (page, _) = client::collect_pages(None, |_| true, |cur| c.group_members(&id, cur)).await?;
            match out {
                Output::Json => print_json(&page.raw)?,
                Output::Table => {
                    let mut t = Table::new(&["DEVICE ID", "NAME", "OS", "USER", "LAST SEEN"]);
                    for d in &page.data {
                        t.row(vec![
                            d.device_id.clone(),
                            or_dash(d.name.as_deref()),
                            or_dash(d.os_version.as_deref()),
                            or_dash(d.user_email.as_deref()),
                            when(d.last_seen_at, "never"),
                        ]);
                    }
                    t.print()?;
                }
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

pub async fn catalog(c: &ApiClient, out: Output, command: CatalogCommand) -> Result<()> {
    match command {
        CatalogCommand::List => {
            let list = c.catalog().await?;
            match out {
                Output::Json => print_json(&list.raw)?,
                Output::Table => {
                    let mut t = Table::new(&["NAME", "CATEGORY", "AREA", "SETTINGS", "TITLE"]);
                    for e in &list.data.items {
                        t.row(vec![
                            e.name.clone(),
                            category_name(e.category).to_owned(),
                            e.area.clone(),
                            e.settings.to_string(),
                            e.title.clone(),
                        ]);
                    }
                    t.print()?;
                }
            }
        }
        CatalogCommand::Assign {
            name,
            groups,
            all,
            exclude,
            dry_run,
        } => {
            let assign = steward_api::types::AssignBody {
                all,
                groups,
                exclude_groups: exclude,
            };
            crate::profiles::catalog_assign(c, out, &name, assign, dry_run).await?;
        }
        CatalogCommand::Show { name } => {
            let e = c.catalog_entry(&name).await?;
            match out {
                Output::Json => print_json(&e.raw)?,
                Output::Table => {
                    let d = &e.data;
                    println!("{} ({}, {}): {}", d.name, category_name(d.category), d.area, d.title);
                    println!("{}", d.description);
                    println!("source: {}", d.source);
                    if !d.parameters.is_empty() {
                        println!();
                        let mut t = Table::new(&["PARAMETER", "SECRET", "EXAMPLE", "DESCRIPTION"]);
                        for p in &d.parameters {
                            t.row(vec![
                                format!("{{{{{}}}}}", p.name),
                                if p.secret { "yes" } else { "-" }.to_owned(),
                                if p.secret { "-".to_owned() } else { p.example.clone() },
                                p.description.clone(),
                            ]);
                        }
                        t.print()?;
                    }
                    println!();
                    let mut t = Table::new(&["LOCURI", "VERB", "FORMAT", "VALUE", "READABLE", "ON REMOVE", "DOC"]);
                    for s in &d.settings {
                        t.row(vec![
                            s.path.clone(),
                            s.verb.clone(),
                            s.format.clone(),
                            or_dash(Some(s.value.as_str()).filter(|v| !v.is_empty())),
                            if s.readable { "yes" } else { "no" }.to_owned(),
                            s.on_remove.clone(),
                            s.doc.clone(),
                        ]);
                    }
                    t.print()?;
                }
            }
        }
    }
    Ok(())
}

fn category_name(c: CatalogCategoryName) -> &'static str {
    match c {
        CatalogCategoryName::Baseline => "baseline",
        CatalogCategoryName::UpdateRing => "update-ring",
        CatalogCategoryName::Kind => "kind",
    }
}

/// A user by e-mail (the list is read whole: users are few).
async fn find_user(c: &ApiClient, email: &str) -> Result<UserView> {
    let wanted = email.trim().to_lowercase();
    let (mut users, _) = client::collect_pages(None, |u: &UserView| u.email == wanted, |cur| c.users(cur)).await?;
    users.data.pop().with_context(|| format!("no user {email:?}"))
}

async fn set_disabled(c: &ApiClient, out: Output, email: &str, disabled: bool) -> Result<()> {
    let u = find_user(c, email).await?;
    let change = UpdateUserRequest {
        disabled: Some(disabled),
        ..UpdateUserRequest::default()
    };
    let v = c.update_user(&u.id.to_string(), &change).await?;
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
            // Checked before asking for the password; the API checks it again.
            let email = steward_core::User::normalize_email(&email)?;
            let password = crate::read_password(&email, password)?;
            let body = NewUserRequest {
                email,
                display_name: name,
                password: steward_core::SecretString::new(password),
                console_role: console_role.map(crate::RoleArg::role),
                console_group,
            };
            let u = c.create_user(&body).await?;
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
                    for u in &users.data {
                        let group = u
                            .console_group_id
                            .and_then(|g| groups.data.iter().find(|x| x.id == g))
                            .map(|g| g.name.as_str());
                        t.row(vec![
                            u.email.clone(),
                            or_dash(u.console_role.map(role_name)),
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
            // No --group: the whole fleet (an empty group name clears the scope).
            let change = UpdateUserRequest {
                disabled: None,
                console_role: Some(role),
                console_group: Some(group.unwrap_or_default()),
            };
            let v = c.update_user(&u.id.to_string(), &change).await?;
            match out {
                Output::Json => print_json(&v.raw)?,
                Output::Table => println!(
                    "{}: console role {}",
                    v.data.email,
                    v.data.console_role.map_or("none", role_name)
                ),
            }
        }
        UserCommand::ResetTotp { email } => {
            let u = find_user(c, &email).await?;
            c.reset_user_totp(&u.id.to_string()).await?;
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
                    for d in &page.data {
                        t.row(vec![
                            d.device_id.clone(),
                            or_dash(d.name.as_deref()),
                            d.state.clone(),
                            or_dash(d.os_version.as_deref()),
                            or_dash(d.user_email.as_deref()),
                            when(d.last_seen_at, "never"),
                        ]);
                    }
                    t.print()?;
                }
            }
            if more && limit.is_none() {
                eprintln!("(more devices match: use --all, or --limit N)");
            }
        }
        DeviceCommand::Settings { device } => crate::profiles::device_settings(c, out, &device).await?,
        DeviceCommand::Move { device, group, none: _ } => {
            let d = c
                .set_device_group(&device, &DeviceGroupRequest { group: group.clone() })
                .await?;
            match out {
                Output::Json => print_json(&d.raw)?,
                Output::Table => println!(
                    "moved {} to group {}",
                    d.data.device_id,
                    group.as_deref().unwrap_or("(none)")
                ),
            }
        }
        DeviceCommand::Tag { device, change } => {
            let current = || async { c.device(&device).await.map(|d| d.data.tags) };
            // add/remove read the device's tags and write the new set: two admins changing one
            // device's tags at the same moment, the last write wins (`set` says the whole set).
            let tags: Vec<String> = match change {
                TagChange::List => {
                    let tags = current().await?;
                    match out {
                        Output::Json => print_json(&json!({ "tags": tags }))?,
                        Output::Table => println!(
                            "{}",
                            if tags.is_empty() {
                                "(no tags)".to_owned()
                            } else {
                                tags.join(" ")
                            }
                        ),
                    }
                    return Ok(());
                }
                TagChange::Set { tags } => tags,
                TagChange::Add { tags } => {
                    let mut all = current().await?;
                    all.extend(tags);
                    all
                }
                TagChange::Remove { tags } => {
                    let gone: Vec<String> = tags.iter().map(|t| t.trim().to_lowercase()).collect();
                    current().await?.into_iter().filter(|t| !gone.contains(t)).collect()
                }
            };
            let d = c.set_device_tags(&device, &DeviceTagsRequest { tags }).await?;
            match out {
                Output::Json => print_json(&d.raw)?,
                Output::Table => println!(
                    "{}: tags {}",
                    d.data.device_id,
                    if d.data.tags.is_empty() {
                        "(none)".to_owned()
                    } else {
                        d.data.tags.join(" ")
                    }
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
                        "  group {}  type {}  auth {}",
                        or_dash(detail.data.group.as_deref()),
                        d.enrollment_type,
                        d.auth_method
                    );
                    if !detail.data.tags.is_empty() {
                        println!("  tags {}", detail.data.tags.join(" "));
                    }
                    println!(
                        "  certificate {}  expires {}",
                        cert.thumbprint,
                        when(Some(cert.not_after), "-")
                    );
                    println!(
                        "  enrolled {}  last seen {}",
                        when(Some(d.enrolled_at), "-"),
                        when(d.last_seen_at, "never")
                    );
                    println!("inventory:");
                    for f in &detail.data.facts {
                        println!("  {:<36} {}", f.name, f.value);
                    }
                    println!("commands:");
                    let (commands, _) =
                        client::collect_pages(None, |_| true, |cur| c.device_commands(&device, cur)).await?;
                    print_commands(&commands.data, "  ")?;
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
            c.id.to_string(),
            c.state.clone(),
            c.verb.clone(),
            c.status_code.map_or("-".to_owned(), |s| s.to_string()),
            c.origin.clone(),
            when(Some(c.created_at), "-"),
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
            let request = command_request(verb, &items, format)?;
            let queued = c.queue_command(&device, &request).await?;
            match out {
                Output::Json => print_json(&queued.raw)?,
                Output::Table => println!("{}", queued.data.id),
            }
        }
        CommandCommand::List { device } => {
            let (commands, _) = client::collect_pages(None, |_| true, |cur| c.device_commands(&device, cur)).await?;
            match out {
                Output::Json => print_json(&commands.raw)?,
                Output::Table => print_commands(&commands.data, "")?,
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

/// One remote action (wipe, reboot, lock, sync) on one device.
pub async fn action(c: &ApiClient, out: Output, device: &str, action: DeviceAction) -> Result<()> {
    let queued = c.action(device, &action).await?;
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
struct BulkReport {
    queued: Vec<serde_json::Value>,
    failed: Vec<(String, String)>,
}

impl BulkReport {
    /// Prints the summary (stdout) and the failures (stderr); an error when anything failed.
    fn finish(self, out: Output, what: &str, total: usize) -> Result<()> {
        match out {
            Output::Json => print_json(&json!({
                "queued": self.queued,
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

fn progress_bar(total: usize) -> indicatif::ProgressBar {
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
    let devices = selected.data;
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
                let result = c.action(&d.device_id, &DeviceAction::Sync).await;
                if let Ok(mut r) = report.lock() {
                    match result {
                        Ok(q) => r.queued.push(q.raw),
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
                        "KIND",
                        "NAME",
                        "ROLE",
                        "GROUP",
                        "STATE",
                        "CREATED",
                        "LAST USED",
                        "EXPIRES",
                        "CREATED BY",
                    ]);
                    for k in &tokens.data {
                        let state = if k.revoked_at.is_some() {
                            "revoked"
                        } else if k.active {
                            "active"
                        } else {
                            "expired"
                        };
                        let kind = match k.kind {
                            ApiTokenKind::Named => "named",
                            ApiTokenKind::Bootstrap => "bootstrap",
                        };
                        t.row(vec![
                            k.id.to_string(),
                            kind.into(),
                            k.name.clone(),
                            role_name(k.role).to_owned(),
                            or_dash(k.group.as_deref()),
                            state.into(),
                            when(Some(k.created_at), "-"),
                            when(k.last_used_at, "never"),
                            when(k.expires_at, "never"),
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
            let days = expires
                .map(|d| crate::ceil_units(d, time::Duration::DAY))
                .transpose()?
                .map(|d| u32::try_from(d).unwrap_or(u32::MAX));
            let body = NewApiTokenRequest {
                name,
                role: role.role(),
                group,
                expires_in_days: days,
            };
            let created = c.create_api_token(&body).await?;
            match out {
                Output::Json => print_json(&created.raw)?,
                Output::Table => {
                    let info = &created.data.info;
                    eprintln!(
                        "Created API token {} ({}, role {}). It is shown only once:",
                        info.id,
                        info.name,
                        role_name(info.role)
                    );
                    println!("{}", created.data.token);
                }
            }
        }
        ApiTokenCommand::Revoke { id } => {
            c.revoke_api_token(&id).await?;
            match out {
                Output::Table => println!("revoked API token {id}"),
                Output::Json => print_json(&json!({ "revoked": id }))?,
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
                    for k in &tokens.data {
                        t.row(vec![
                            k.id.to_string(),
                            match k.max_uses {
                                Some(m) => format!("{}/{m}", k.uses),
                                None => k.uses.to_string(),
                            },
                            when(k.expires_at, "never"),
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
            let body = NewEnrollmentTokenRequest {
                description,
                max_uses: uses,
                expires_in_hours: Some(u32::try_from(hours).unwrap_or(u32::MAX)),
                group,
            };
            let created = c.create_enrollment_token(&body).await?;
            match out {
                Output::Json => print_json(&created.raw)?,
                Output::Table => {
                    let info = &created.data.info;
                    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                        eprintln!(
                            "Created enrollment token {} (uses: {}, expires {}). It is shown only once:",
                            info.id,
                            info.max_uses.map_or("unlimited".to_owned(), |u| u.to_string()),
                            when(info.expires_at, "never")
                        );
                    }
                    println!("{}", created.data.token);
                }
            }
        }
        TokenCommand::Revoke { id } => {
            c.revoke_enrollment_token(&id).await?;
            match out {
                Output::Table => println!("revoked enrollment token {id}"),
                Output::Json => print_json(&json!({ "revoked": id }))?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_items_follow_the_verb() {
        let items = ["./Vendor/MSFT/A=1".to_owned()];
        let r = command_request(VerbArg::Replace, &items, Some("int".into())).ok();
        let json = r.map(|r| serde_json::to_value(&r).ok());
        assert_eq!(
            json.flatten(),
            Some(
                json!({ "verb": "replace", "items": [{ "target": "./Vendor/MSFT/A", "format": "int", "data": "1" }] })
            )
        );
        assert!(command_request(VerbArg::Add, &["./Vendor/MSFT/A".to_owned()], None).is_err());
        let exec = command_request(VerbArg::Exec, &["./Vendor/MSFT/R".to_owned()], None).ok();
        assert_eq!(
            exec.and_then(|r| r.items.into_iter().next()).and_then(|i| i.data),
            Some(String::new())
        );
        let get = command_request(VerbArg::Get, &["./Vendor/MSFT/A=b".to_owned()], None).ok();
        assert!(
            get.and_then(|r| r.items.into_iter().next())
                .is_some_and(|i| i.target == "./Vendor/MSFT/A=b" && i.data.is_none())
        );
    }
}
