//! Console pages for the fleet's organisation and the server: groups (create, delete, move
//! devices), settings (the running configuration, read-only, and webhook subscriptions, which can
//! be paused) and the signed-in user's account (two-step sign-in). Like the other pages, every
//! change goes through the admin API's handler with the user's role.

use axum::extract::{Extension, Form, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;
use steward_core::totp::TotpSecret;
use time::OffsetDateTime;

use super::pages::{csrf_input, problem_of, refuse, urlencode, when};
use super::session::{open_totp, totp_setup_block, totp_unreadable};
use super::{ConsoleCtx, api_error_page, error_page, layout, page, see_other};
use crate::AppState;
use crate::api::devices::{self, DeviceGroupRequest, PageQuery};
use crate::api::error::ApiJson;
use crate::api::resources::{self, NewGroupRequest};
use crate::api::webhooks::{self as api_webhooks, WebhookUpdate};

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    done: Option<String>,
}

/// A state-changing API call on behalf of the user, then back to `back` with a notice, or the
/// API's problem as an error page.
async fn act(
    state: &AppState,
    ctx: &ConsoleCtx,
    method: &str,
    api_path: &str,
    concrete: &str,
    back: &str,
    handler: impl Future<Output = Response>,
) -> Response {
    let resp = ctx.call_api(state, method, api_path, concrete, handler).await;
    if resp.status().is_success() {
        return see_other(back);
    }
    let (status, detail) = problem_of(resp).await;
    error_page(Some(ctx), status, &detail)
}

// ---------------------------------------------------------------- groups

pub async fn groups(
    State(state): State<AppState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Query(notice): Query<Notice>,
) -> Response {
    if let Some(r) = refuse(&ctx, "GET", "/api/v1/groups") {
        return r;
    }
    let list = match resources::list_groups(
        State(state),
        Extension(ctx.principal.clone()),
        PageQuery::first_full_page(),
    )
    .await
    {
        Ok(axum::Json(p)) => p.items,
        Err(e) => return api_error_page(&ctx, e),
    };
    let done = match notice.done.as_deref() {
        Some("created") => Some("Group created."),
        Some("deleted") => Some("Group deleted."),
        _ => None,
    };
    let may_delete = ctx.may("DELETE", "/api/v1/groups/{id}");
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
                    @for g in &list {
                        tr {
                            td { a href=(format!("/console/devices?group={}", urlencode(&g.name))) { (g.name) } }
                            td.num { (g.active_devices) }
                            td { (when(Some(g.created_at))) }
                            @if may_delete {
                                td {
                                    @if g.active_devices == 0 {
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
        @if ctx.may("POST", "/api/v1/groups") {
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
    State(state): State<AppState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Form(form): Form<GroupForm>,
) -> Response {
    let st = State(state.clone());
    let req = NewGroupRequest { name: form.name };
    act(
        &state,
        &ctx,
        "POST",
        "/api/v1/groups",
        "/api/v1/groups",
        "/console/groups?done=created",
        async move { resources::create_group(st, ApiJson(req)).await.into_response() },
    )
    .await
}

pub async fn delete_group(
    State(state): State<AppState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(id): Path<String>,
) -> Response {
    let st = State(state.clone());
    let concrete = format!("/api/v1/groups/{id}");
    act(
        &state,
        &ctx,
        "DELETE",
        "/api/v1/groups/{id}",
        &concrete,
        "/console/groups?done=deleted",
        async move { resources::delete_group(st, Path(id)).await.into_response() },
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct MoveForm {
    /// Empty: out of every group.
    #[serde(default)]
    group: String,
}

pub async fn move_device(
    State(state): State<AppState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(id): Path<String>,
    Form(form): Form<MoveForm>,
) -> Response {
    let req = DeviceGroupRequest {
        group: Some(form.group.trim().to_owned()).filter(|g| !g.is_empty()),
    };
    let (st, who, p) = (State(state.clone()), Extension(ctx.principal.clone()), Path(id.clone()));
    let concrete = format!("/api/v1/devices/{id}/group");
    act(
        &state,
        &ctx,
        "PUT",
        "/api/v1/devices/{id}/group",
        &concrete,
        &format!("/console/devices/{}?done=group", urlencode(&id)),
        async move {
            devices::set_device_group(st, who, p, ApiJson(req))
                .await
                .into_response()
        },
    )
    .await
}

/// The group names a device can be moved to (for the device page's form).
pub(super) async fn group_names(state: &AppState, ctx: &ConsoleCtx) -> Vec<String> {
    resources::list_groups(
        State(state.clone()),
        Extension(ctx.principal.clone()),
        PageQuery::first_full_page(),
    )
    .await
    .map(|axum::Json(p)| p.items.into_iter().map(|g| g.name).collect())
    .unwrap_or_default()
}

// ---------------------------------------------------------------- settings

pub async fn settings(
    State(state): State<AppState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Query(notice): Query<Notice>,
) -> Response {
    if let Some(r) = refuse(&ctx, "GET", "/api/v1/server") {
        return r;
    }
    let info = match resources::server_info(State(state.clone())).await {
        Ok(axum::Json(i)) => i,
        Err(e) => return api_error_page(&ctx, e),
    };
    let hooks = if ctx.may("GET", "/api/v1/webhooks") {
        match api_webhooks::list_webhooks(State(state.clone()), PageQuery::first_full_page()).await {
            Ok(axum::Json(p)) => Some(p.items),
            Err(e) => return api_error_page(&ctx, e),
        }
    } else {
        None
    };
    let cfg = &state.config;
    let may_toggle = ctx.may("PATCH", "/api/v1/webhooks/{id}");
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
                dt { "Version" } dd { (info.version) }
                dt { "Public URL" } dd.mono { (info.public_url) }
                dt { "Enrollment (discovery) URL" } dd.mono { (info.enrollment_url) }
                dt { "Enrollment authentication" } dd { (info.auth_policy) }
                dt { "Server name shown on devices" } dd { (info.server_name) }
                dt { "Device check-in interval" } dd { (info.poll_interval_minutes) " min" }
                dt { "Inventory refresh" } dd { "every " (info.inventory_interval_hours) " h" }
                dt { "Device certificates valid for" } dd { (cfg.pki.device_cert_validity_days) " days (renewed in the last " (cfg.pki.renew_period_days) ")" }
                dt { "OMA-DM MD5 authentication" } dd { (if info.md5_auth { "on" } else { "off" }) }
                dt { "Console two-step sign-in" } dd { (if info.console_require_totp { "required for every user" } else { "optional" }) }
                dt { "Trusted proxies" } dd { (if cfg.management.trusted_proxies.is_empty() { "none".to_owned() } else { cfg.management.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") }) }
            }
        }
        section aria-labelledby="h-totals" {
            h2 #h-totals { "Totals" }
            dl.facts {
                dt { "Active devices" } dd { (info.counts.active_devices) }
                dt { "Enrollments (all states)" } dd { (info.counts.enrollments) }
                dt { "Open commands" } dd { (info.counts.open_commands) }
                dt { "Users" } dd { (info.counts.users) }
                dt { "Groups" } dd { (info.counts.groups) }
                dt { "API tokens" } dd { (info.counts.api_tokens) }
                dt { "Audit events" } dd { (info.counts.audit_events) }
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
                                    td { (w.events.join(", ")) }
                                    td {
                                        @if !w.enabled { span.state.state-wiped { "paused" } }
                                        @else if w.failing_attempts > 0 { span.state.state-replaced { "retrying (" (w.failing_attempts) ")" } }
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

pub async fn toggle_webhook(
    State(state): State<AppState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path((id, verb)): Path<(String, String)>,
) -> Response {
    let enabled = match verb.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return error_page(Some(&ctx), StatusCode::NOT_FOUND, "no such action"),
    };
    let st = State(state.clone());
    let concrete = format!("/api/v1/webhooks/{id}");
    act(
        &state,
        &ctx,
        "PATCH",
        "/api/v1/webhooks/{id}",
        &concrete,
        &format!("/console/settings?done={verb}d"),
        async move {
            api_webhooks::update_webhook(st, Path(id), ApiJson(WebhookUpdate { enabled }))
                .await
                .into_response()
        },
    )
    .await
}

// ---------------------------------------------------------------- account

fn account_body(state: &AppState, ctx: &ConsoleCtx, notice: Option<&str>) -> Markup {
    let required = state.config.console.require_totp;
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
    State(state): State<AppState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Query(notice): Query<Notice>,
) -> Response {
    let msg = match notice.done.as_deref() {
        Some("totp") => Some("Two-step sign-in is on: you will be asked for a code at every sign-in."),
        _ => None,
    };
    page(
        StatusCode::OK,
        layout(Some(&ctx), "Your account", "", account_body(&state, &ctx, msg)),
    )
}

fn setup_page(state: &AppState, ctx: &ConsoleCtx, secret: &TotpSecret, error: Option<&str>) -> Markup {
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
pub async fn start_totp(State(state): State<AppState>, Extension(ctx): Extension<ConsoleCtx>) -> Response {
    if ctx.totp_confirmed {
        return see_other("/console/account");
    }
    let user = match state.store.console_user(ctx.user_id).await {
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
    State(state): State<AppState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Form(form): Form<ConfirmForm>,
) -> Response {
    let user = match state.store.console_user(ctx.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return see_other("/console/login"),
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    let Some(totp) = user.totp.as_ref().filter(|t| !t.confirmed()) else {
        return see_other("/console/account");
    };
    let Some(secret) = open_totp(&state, ctx.user_id, totp) else {
        return totp_unreadable(Some(&ctx));
    };
    let now = OffsetDateTime::now_utc();
    let ok = match secret.verify(&form.code, now, totp.last_step) {
        Some(step) => match state.store.confirm_user_totp(ctx.user_id, step, now).await {
            Ok(ok) => ok,
            Err(e) => return api_error_page(&ctx, e.into()),
        },
        None => false,
    };
    if !ok {
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
    super::session::audit_event(
        &state,
        &ctx.email,
        Some(ctx.role()),
        ctx.peer.clone(),
        "console.totp_enroll",
        true,
    )
    .await;
    see_other("/console/account?done=totp")
}
