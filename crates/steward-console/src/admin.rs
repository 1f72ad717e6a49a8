//! Console pages for the fleet's organisation and the server: groups (create, delete, move
//! devices), settings (the running configuration, read-only, and webhook subscriptions, which can
//! be paused) and the signed-in user's account (two-step sign-in). Like the other pages, every
//! change goes through the core services as the user, authorised and audited as the admin API's
//! route for it ([`ConsoleCtx::act`]).

use axum::extract::{Extension, Form, Path, Query, State};
use axum::response::Response;
use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;
use steward_api::MAX_LIMIT;
use steward_core::service::second_factor::CodeCheck;
use steward_core::totp::TotpSecret;
use steward_core::*;

use super::pages::{csrf_input, refuse, urlencode, when};
use super::routes::{CATALOG_ASSIGN, DEVICE_SET_GROUP, DEVICE_SET_TAGS, GROUP_CREATE, GROUP_DELETE, WEBHOOK_UPDATE};
use super::session::{audit_account, totp_setup_block, totp_unreadable};
use super::{
    ConsoleCtx, ConsoleSettings, ConsoleState, api_error_page, error_page, layout, note, page, see_other,
    service_error_page,
};

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    done: Option<String>,
}

/// The outcome of a state-changing action: back to `back` with a notice, or the API's problem as
/// an error page.
fn back_or_error(ctx: &ConsoleCtx, done: Result<(), steward_api::ApiError>, back: &str) -> Response {
    match done {
        Ok(()) => see_other(back),
        Err(e) => api_error_page(ctx, e),
    }
}

// ---------------------------------------------------------------- groups

pub async fn groups(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Query(notice): Query<Notice>,
) -> Response {
    if let Some(r) = refuse(&ctx, Permission::GroupsRead) {
        return r;
    }
    let list: Vec<(Group, u64)> = match state.core().directory.groups(&ctx.principal).await {
        Ok(g) => g.into_iter().take(MAX_LIMIT as usize).collect(),
        Err(e) => return service_error_page(&ctx, e),
    };
    let done = match notice.done.as_deref() {
        Some("created") => Some("Group created."),
        Some("deleted") => Some("Group deleted."),
        _ => None,
    };
    let may_delete = ctx.may(GROUP_DELETE.permission);
    let body = html! {
        @if let Some(msg) = done {
            p.notice role="status" { (msg) }
        }
        p.muted {
            "A device belongs to at most one group: the group of the enrollment token it enrolled with, or "
            "the one it was moved to on its page. Group-scoped API tokens see only their group's devices."
        }
        @if list.is_empty() {
            p { "No groups yet." }
        } @else {
            table #groups {
                thead {
                    tr {
                        th scope="col" { "Group" }
                        th.num scope="col" { "Active devices" }
                        th scope="col" { "Created" }
                        @if may_delete { th scope="col" { span.muted { "Actions" } } }
                    }
                }
                tbody {
                    @for (g, active_devices) in &list {
                        tr {
                            td { a href=(format!("/console/devices?group={}", urlencode(&g.name))) { (g.name) } }
                            td.num { (active_devices) }
                            td { (when(Some(g.created_at))) }
                            @if may_delete {
                                td {
                                    @if *active_devices == 0 {
                                        form.inline method="post" action=(format!("/console/groups/{}/delete", g.id)) {
                                            (csrf_input(&ctx))
                                            button type="submit" aria-label=(format!("Delete group {}", g.name)) { "Delete" }
                                        }
                                    } @else {
                                        span.muted { "in use" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if ctx.may(GROUP_CREATE.permission) {
            section aria-labelledby="h-new-group" {
                h2 #h-new-group { "New group" }
                form.stack method="post" action="/console/groups" {
                    (csrf_input(&ctx))
                    label for="group-name" { "Name" }
                    input #group-name type="text" name="name" maxlength="64" required;
                    button type="submit" { "Create group" }
                }
            }
        }
    };
    page(StatusCode::OK, layout(Some(&ctx), "Groups", "/console/groups", body))
}

#[derive(Debug, Deserialize)]
pub struct GroupForm {
    #[serde(default)]
    name: String,
}

pub async fn create_group(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Form(form): Form<GroupForm>,
) -> Response {
    let done = ctx
        .act(&state, GROUP_CREATE, "", StatusCode::CREATED, async {
            let g = state.core().directory.create_group(&form.name).await?;
            Ok(((), note(&g.name, None)))
        })
        .await;
    back_or_error(&ctx, done, "/console/groups?done=created")
}

pub async fn delete_group(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(id): Path<String>,
) -> Response {
    let done = ctx
        .act(&state, GROUP_DELETE, &id, StatusCode::NO_CONTENT, async {
            let deleted = state.core().directory.delete_group(&id).await?;
            Ok(((), note(deleted, None)))
        })
        .await;
    back_or_error(&ctx, done, "/console/groups?done=deleted")
}

#[derive(Debug, Deserialize)]
pub struct MoveForm {
    /// Empty: out of every group.
    #[serde(default)]
    group: String,
}

pub async fn move_device(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(id): Path<String>,
    Form(form): Form<MoveForm>,
) -> Response {
    let group = Some(form.group.trim().to_owned()).filter(|g| !g.is_empty());
    let done = ctx
        .act(&state, DEVICE_SET_GROUP, &id, StatusCode::OK, async {
            let (e, group) = state
                .core()
                .devices
                .set_group(&ctx.principal, &id, group.as_deref())
                .await?;
            let details = format!("group: {}", group.as_ref().map_or("(none)", |g| g.name.as_str()));
            Ok(((), note(&e.device_id, Some(details))))
        })
        .await;
    back_or_error(&ctx, done, &format!("/console/devices/{}?done=group", urlencode(&id)))
}

#[derive(Debug, Deserialize)]
pub struct TagsForm {
    /// The device's tags from now on, separated by spaces or commas (empty: none).
    #[serde(default)]
    tags: String,
}

/// Replaces a device's tags (the API's `PUT /devices/{id}/tags`, audited under its name).
pub async fn set_device_tags(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(id): Path<String>,
    Form(form): Form<TagsForm>,
) -> Response {
    let tags: Vec<&str> = form
        .tags
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    let done = ctx
        .act(&state, DEVICE_SET_TAGS, &id, StatusCode::OK, async {
            let (e, before, after) = state.core().devices.set_tags(&ctx.principal, &id, &tags).await?;
            let list = |t: &steward_core::DeviceTags| {
                if t.is_empty() {
                    "(none)".to_owned()
                } else {
                    t.as_slice().join(", ")
                }
            };
            let details = format!("tags: {} -> {}", list(&before), list(&after));
            Ok(((), note(&e.device_id, Some(details))))
        })
        .await;
    back_or_error(&ctx, done, &format!("/console/devices/{}?done=tags", urlencode(&id)))
}

/// The group names a device can be moved to (for the device pages' forms).
pub(super) async fn group_names(state: &ConsoleState, ctx: &ConsoleCtx) -> Vec<String> {
    match state.core().directory.groups(&ctx.principal).await {
        Ok(groups) => groups
            .into_iter()
            .take(MAX_LIMIT as usize)
            .map(|(g, _)| g.name)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list groups for the console");
            Vec::new()
        }
    }
}

// ---------------------------------------------------------------- settings

pub async fn settings(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Query(notice): Query<Notice>,
) -> Response {
    if let Some(r) = refuse(&ctx, Permission::ServerRead) {
        return r;
    }
    let counts = match state.core().store.admin_counts().await {
        Ok(c) => c,
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    let hooks = if ctx.may(Permission::WebhooksRead) {
        match state.core().webhooks.list().await {
            Ok(w) => Some(w.into_iter().take(MAX_LIMIT as usize).collect::<Vec<_>>()),
            Err(e) => return service_error_page(&ctx, e),
        }
    } else {
        None
    };
    let may_toggle = ctx.may(WEBHOOK_UPDATE.permission);
    let info = &state.api.settings;
    let done = match notice.done.as_deref() {
        Some("enabled") => Some("Webhook resumed: it delivers what happened while it was paused, in order."),
        Some("disabled") => Some("Webhook paused: events are kept for it until it is resumed."),
        _ => None,
    };
    let body = html! {
        @if let Some(msg) = done {
            p.notice role="status" { (msg) }
        }
        section aria-labelledby="h-config" {
            h2 #h-config { "Server" }
            p.muted {
                "Settings come from the configuration file and STEWARD_* environment variables and apply at the next "
                "start (see docs/OPERATIONS.md); `steward config check` validates a change before a restart."
            }
            dl.facts #server-settings {
                dt { "Version" } dd { (env!("CARGO_PKG_VERSION")) }
                dt { "Public URL" } dd.mono { (info.public_url) }
                dt { "Enrollment (discovery) URL" } dd.mono { (info.enrollment_url) }
                dt { "Enrollment authentication" } dd { (info.auth_policy) }
                dt { "Server name shown on devices" } dd { (info.server_name) }
                dt { "Device check-in interval" } dd { (info.poll_interval_minutes) " min" }
                dt { "Inventory refresh" } dd { "every " (info.inventory_interval_hours) " h" }
                dt { "OMA-DM MD5 authentication" } dd { (if info.md5_auth { "on" } else { "off" }) }
                dt { "Console two-step sign-in" } dd { (if info.console_require_totp { "required for every user" } else { "optional" }) }
                @for (what, value) in &state.settings.config_summary {
                    dt { (what) } dd { (value) }
                }
            }
        }
        section aria-labelledby="h-totals" {
            h2 #h-totals { "Totals" }
            dl.facts {
                dt { "Active devices" } dd { (counts.active_devices) }
                dt { "Enrollments (all states)" } dd { (counts.enrollments) }
                dt { "Open commands" } dd { (counts.open_commands) }
                dt { "Users" } dd { (counts.users) }
                dt { "Groups" } dd { (counts.groups) }
                dt { "API tokens" } dd { (counts.api_tokens) }
                dt { "Audit events" } dd { (counts.audit_events) }
            }
        }
        @if let Some(hooks) = hooks {
            section aria-labelledby="h-webhooks" {
                h2 #h-webhooks { "Webhooks" }
                @if hooks.is_empty() {
                    p.muted { "No subscriptions. Create them with the API (POST /api/v1/webhooks)." }
                } @else {
                    table #webhooks {
                        thead {
                            tr {
                                th scope="col" { "Name" }
                                th scope="col" { "URL" }
                                th scope="col" { "Events" }
                                th scope="col" { "State" }
                                @if may_toggle { th scope="col" { span.muted { "Actions" } } }
                            }
                        }
                        tbody {
                            @for w in &hooks {
                                tr {
                                    td { (w.name) }
                                    td.mono { (w.url) }
                                    td { (w.kinds.names().join(", ")) }
                                    td {
                                        @if !w.enabled { span.state.state-wiped { "paused" } }
                                        @else if w.attempts > 0 { span.state.state-replaced { "retrying (" (w.attempts) ")" } }
                                        @else { span.state.state-active { "delivering" } }
                                    }
                                    @if may_toggle {
                                        td {
                                            @let (verb, label) = if w.enabled { ("disable", "Pause") } else { ("enable", "Resume") };
                                            form.inline method="post" action=(format!("/console/settings/webhooks/{}/{verb}", w.id)) {
                                                (csrf_input(&ctx))
                                                button type="submit" aria-label=(format!("{label} {}", w.name)) { (label) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(
        StatusCode::OK,
        layout(Some(&ctx), "Settings", "/console/settings", body),
    )
}

// ---------------------------------------------------------------- catalog

/// The built-in configuration catalog, one entry per section with its settings in a disclosure
/// (`details`: no script needed), and for those who may write profiles a form assigning each entry
/// that needs no parameters to every device or a group ([`super::profiles::assign_catalog`]).
pub async fn catalog(State(state): State<ConsoleState>, Extension(ctx): Extension<ConsoleCtx>) -> Response {
    if let Some(r) = refuse(&ctx, Permission::CatalogRead) {
        return r;
    }
    let entries: Vec<&CatalogProfile> = state.core().platforms.catalog().collect();
    let may_assign = ctx.may(CATALOG_ASSIGN.permission);
    let groups = if may_assign {
        group_names(&state, &ctx).await
    } else {
        Vec::new()
    };
    let body = html! {
        p.muted {
            "Ready profiles for each area of the MDM security baseline and the Windows Update rings, and "
            "profile kinds that need your values first. Every setting names its node and its Microsoft "
            "documentation. An entry without parameters is assigned here in one step (it becomes the "
            "profile of the same name; "
            code { "steward catalog assign NAME --all" } " does the same); "
            code { "steward catalog show NAME" } " prints an entry."
        }
        table #catalog {
            thead {
                tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Category" }
                    th scope="col" { "Area" }
                    th scope="col" { "Settings" }
                }
            }
            tbody {
                @for e in &entries {
                    tr {
                        td.mono { (e.name) }
                        td { (e.category.as_str()) }
                        td { (e.area) }
                        td { (e.settings.len()) }
                    }
                }
            }
        }
        @for e in &entries {
            section aria-labelledby=(format!("h-{}", e.name)) {
                h2 id=(format!("h-{}", e.name)) { (e.title) }
                p { (e.description) " " a href=(e.source) { "Source" } }
                @if !e.parameters.is_empty() {
                    p.muted {
                        "Parameters: "
                        @for (i, p) in e.parameters.iter().enumerate() {
                            @if i > 0 { ", " }
                            span.mono { (p.name) } @if p.secret { " (secret)" }
                        }
                    }
                }
                @if may_assign && super::profiles::assignable(e) {
                    (super::profiles::assign_form(&ctx, e, &groups))
                }
                details {
                    summary { (e.settings.len()) " settings" }
                    table {
                        thead {
                            tr {
                                th scope="col" { "LocURI" }
                                th scope="col" { "Format" }
                                th scope="col" { "Value" }
                                th scope="col" { "Readable" }
                                th scope="col" { "On removal" }
                            }
                        }
                        tbody {
                            @for s in &e.settings {
                                tr {
                                    td.mono { a href=(s.doc) { (s.path) } }
                                    td { (s.format) }
                                    td.mono { (s.value) }
                                    td { (if s.readable { "yes" } else { "no" }) }
                                    td { (s.on_remove.to_string()) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, layout(Some(&ctx), "Catalog", "/console/catalog", body))
}

pub async fn toggle_webhook(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path((id, verb)): Path<(String, String)>,
) -> Response {
    let enabled = match verb.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return error_page(Some(&ctx), StatusCode::NOT_FOUND, "no such action"),
    };
    let done = ctx
        .act(&state, WEBHOOK_UPDATE, &id, StatusCode::OK, async {
            let w = state.core().webhooks.set_enabled(&id, enabled).await?;
            let details = if enabled { "enabled" } else { "disabled" };
            Ok(((), note(w.id, Some(details.to_owned()))))
        })
        .await;
    back_or_error(&ctx, done, &format!("/console/settings?done={verb}d"))
}

// ---------------------------------------------------------------- account

fn account_body(settings: &ConsoleSettings, ctx: &ConsoleCtx, notice: Option<&str>) -> Markup {
    let required = settings.require_totp;
    html! {
        @if let Some(msg) = notice {
            p.notice role="status" { (msg) }
        }
        dl.facts {
            dt { "E-mail" } dd { (ctx.email) }
            dt { "Role" } dd { (ctx.role()) }
            dt { "Two-step sign-in" } dd #totp-state {
                (if ctx.totp_confirmed { "on (authenticator app)" } else { "off" })
                @if required { " · required by this server" }
            }
        }
        @if !ctx.totp_confirmed {
            form.stack method="post" action="/console/account/totp" {
                (csrf_input(ctx))
                button type="submit" { "Set up two-step sign-in" }
            }
        }
        p.muted {
            "Lost the authenticator? An administrator removes the second factor with "
            code { "steward user reset-totp <e-mail>" } " or DELETE /api/v1/users/{id}/totp; you then set up a new one."
        }
    }
}

pub async fn account(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Query(notice): Query<Notice>,
) -> Response {
    let msg = match notice.done.as_deref() {
        Some("totp") => Some("Two-step sign-in is on: you will be asked for a code at every sign-in."),
        _ => None,
    };
    page(
        StatusCode::OK,
        layout(Some(&ctx), "Your account", "", account_body(&state.settings, &ctx, msg)),
    )
}

fn setup_page(state: &ConsoleState, ctx: &ConsoleCtx, secret: &TotpSecret, error: Option<&str>) -> Markup {
    layout(
        Some(ctx),
        "Set up two-step sign-in",
        "",
        html! {
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            (totp_setup_block(state, &ctx.email, secret))
            form.login method="post" action="/console/account/totp/confirm" {
                (csrf_input(ctx))
                label for="code" { "Code from your authenticator app" }
                input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required;
                button type="submit" { "Turn on" }
            }
        },
    )
}

/// Starts (or resumes) setting up the signed-in user's second factor.
pub async fn start_totp(State(state): State<ConsoleState>, Extension(ctx): Extension<ConsoleCtx>) -> Response {
    if ctx.totp_confirmed {
        return see_other("/console/account");
    }
    let user = match state.core().store.console_user(ctx.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return see_other("/console/login"),
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    let secret = match super::session::setup_secret(&state, &user, Some(&ctx)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    page(StatusCode::OK, setup_page(&state, &ctx, &secret, None))
}

#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    code: String,
}

pub async fn confirm_totp(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Form(form): Form<ConfirmForm>,
) -> Response {
    let core = state.core();
    let user = match core.store.console_user(ctx.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return see_other("/console/login"),
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    let Some(totp) = user.totp.as_ref().filter(|t| !t.confirmed()) else {
        return see_other("/console/account");
    };
    let Ok(secret) = core.second_factor.open(ctx.user_id, totp) else {
        return totp_unreadable(Some(&ctx));
    };
    match core
        .second_factor
        .check_with(ctx.user_id, totp, &secret, &form.code)
        .await
    {
        Ok(CodeCheck::Accepted) => {}
        Ok(CodeCheck::Refused) => {
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                setup_page(
                    &state,
                    &ctx,
                    &secret,
                    Some("That code is not valid. Enter the code the app shows now."),
                ),
            );
        }
        Err(e) => return service_error_page(&ctx, e),
    }
    audit_account(&state, &ctx, "console.totp_enroll").await;
    see_other("/console/account?done=totp")
}
