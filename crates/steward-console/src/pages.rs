//! The console pages. Each one reads through the core services with the signed-in user's
//! [`steward_core::Principal`] (so filters, scope and validation are the services', the same the
//! admin API applies) and renders with maud, which escapes every spliced value: device names,
//! users and inventory come from devices and are never trusted as markup.

use axum::extract::{Extension, Form, Path, Query, State};
use axum::response::Response;
use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;
use steward_api::enrollment_tokens::enrollment_token_view;
use steward_api::types::{CommandView, DeviceSummary};
use steward_api::{ApiError, MAX_LIMIT, decode_cursor, encode_cursor};
use steward_core::service::devices::DeviceFilter;
use steward_core::service::directory::EnrollmentTokenRequest;
use steward_core::*;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::routes::{DEVICE_LOCK, DEVICE_REBOOT, DEVICE_SYNC, DEVICE_WIPE, ENROLLMENT_TOKEN_CREATE};
use super::{ApiRoute, ConsoleCtx, ConsoleState, api_error_page, error_page, layout, note, page, see_other};

/// Devices per list page: the store pages in SQL, so the size of the fleet does not matter.
const PAGE_SIZE: u32 = 50;

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// "5 min ago", with the exact time for assistive technology and hover.
pub(super) fn when(t: Option<OffsetDateTime>) -> Markup {
    let Some(t) = t else {
        return html! { span.muted { "never" } };
    };
    let secs = (OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    let text = match secs {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    };
    html! { time datetime=(rfc3339(t)) title=(rfc3339(t)) { (text) } }
}

pub(super) fn state_badge(s: &str) -> Markup {
    html! { span class=(format!("state state-{s}")) { (s) } }
}

pub(super) fn csrf_input(ctx: &ConsoleCtx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

/// The refusal for a page the user's role may not use (the same answer the API would give).
pub(super) fn refuse(ctx: &ConsoleCtx, needs: Permission) -> Option<Response> {
    if ctx.may(needs) {
        None
    } else {
        Some(error_page(
            Some(ctx),
            StatusCode::FORBIDDEN,
            &format!("the {} role may not use this page", ctx.role()),
        ))
    }
}

// ---------------------------------------------------------------- dashboard

pub async fn dashboard(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Extension(cache): Extension<std::sync::Arc<super::activity::ActivityCache>>,
) -> Response {
    if let Some(r) = refuse(&ctx, Permission::ServerRead) {
        return r;
    }
    let store = &state.core().store;
    let stats = match store.device_stats(OffsetDateTime::now_utc()).await {
        Ok(s) => s,
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    let active = stats.seen_last_hour + stats.seen_last_day + stats.seen_older + stats.never_seen;
    let now = OffsetDateTime::now_utc();
    let activity = match cache.series(store.as_ref(), active, CHART_DAYS, now).await {
        Ok(series) => series,
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    // (label, count, the device list showing them, where one filter can)
    let buckets = [
        ("Less than 1 hour ago", stats.seen_last_hour, None),
        ("1 to 24 hours ago", stats.seen_last_day, None),
        (
            "More than 24 hours ago",
            stats.seen_older,
            Some("/console/devices?state=active&seen=1d"),
        ),
        ("Never", stats.never_seen, None),
    ];
    let body = html! {
        div.cards {
            section.card aria-labelledby="h-enrolled" {
                h2 #h-enrolled { "Enrolled devices" }
                p.big { (active) }
                table {
                    caption.muted { "Enrollments by state" }
                    thead { tr { th scope="col" { "State" } th.num scope="col" { "Count" } } }
                    tbody {
                        @for (s, n) in &stats.by_state {
                            tr {
                                td { a href=(format!("/console/devices?state={s}")) { (state_badge(s)) } }
                                td.num { (n) }
                            }
                        }
                    }
                }
            }
            section.card aria-labelledby="h-fresh" {
                h2 #h-fresh { "Last check-in" }
                table {
                    caption.muted { "Active devices by time since their last session" }
                    thead { tr { th scope="col" { "When" } th.num scope="col" { "Devices" } th scope="col" { span.muted { "Share" } } } }
                    tbody {
                        @for (label, n, link) in buckets {
                            tr {
                                td { @if let Some(href) = link { a href=(href) { (label) } } @else { (label) } }
                                td.num { (n) }
                                td { meter min="0" max=(active.max(1)) value=(n) aria-label=(format!("{label}: {n} of {active}")) {} }
                            }
                        }
                    }
                }
            }
            section.card aria-labelledby="h-os" {
                h2 #h-os { "OS versions" }
                table {
                    thead { tr { th scope="col" { "Version" } th.num scope="col" { "Devices" } } }
                    tbody {
                        @for (v, n) in &stats.os_versions {
                            tr {
                                td.mono { a href=(format!("/console/devices?state=active&os={}", urlencode(v))) { (v) } }
                                td.num { (n) }
                            }
                        }
                    }
                }
            }
            section.card aria-labelledby="h-cmd" {
                h2 #h-cmd { "Pending commands" }
                p.big { (stats.open_commands) }
                p.muted { "Queued or sent, waiting for the devices' next check-in." }
            }
        }
        div.cards.charts {
            section.card aria-labelledby="h-chart-active" {
                h2 #h-chart-active { "Enrolled devices, last " (CHART_DAYS) " days" }
                (bar_chart(
                    "chart-active",
                    &activity.iter().map(|d| (d.activity.day, vec![d.active_at_end])).collect::<Vec<_>>(),
                    &["Active devices at the end of the day"],
                ))
            }
            section.card aria-labelledby="h-chart-commands" {
                h2 #h-chart-commands { "Command outcomes per day" }
                (bar_chart(
                    "chart-commands",
                    &activity
                        .iter()
                        .map(|d| (d.activity.day, vec![d.activity.commands_acknowledged, d.activity.commands_failed]))
                        .collect::<Vec<_>>(),
                    &["Acknowledged", "Failed"],
                ))
            }
            section.card aria-labelledby="h-chart-enroll" {
                h2 #h-chart-enroll { "Enrollments per day" }
                (bar_chart(
                    "chart-enroll",
                    &activity
                        .iter()
                        .map(|d| (d.activity.day, vec![d.activity.enrolled, d.activity.reenrolled, d.activity.removed]))
                        .collect::<Vec<_>>(),
                    &["New", "Re-enrolled", "Unenrolled or wiped"],
                ))
            }
        }
    };
    page(StatusCode::OK, layout(Some(&ctx), "Dashboard", "/console", body))
}

/// Days the dashboard charts cover.
const CHART_DAYS: u32 = 30;

/// The non-empty segments of one stacked bar, bottom up: (series index, value, top y, height).
fn stack(values: &[u64], scale: impl Fn(u64) -> f64, base: f64) -> Vec<(usize, u64, f64, f64)> {
    let mut top = base;
    let mut out = Vec::with_capacity(values.len());
    for (k, &v) in values.iter().enumerate() {
        let h = scale(v);
        top -= h;
        if v > 0 {
            out.push((k, v, top, h));
        }
    }
    out
}

/// A stacked bar chart as inline SVG (no script, no inline style: the CSP forbids both), one bar per
/// day, one stacked segment per series, with the same figures as a table for screen readers and
/// for copying.
fn bar_chart(id: &str, days: &[(OffsetDateTime, Vec<u64>)], series: &[&str]) -> Markup {
    const W: f64 = 600.0;
    const H: f64 = 140.0;
    let max = days
        .iter()
        .map(|(_, v)| v.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = W / days.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let scale = |n: u64| n as f64 / max as f64 * (H - 4.0);
    let day_label = |t: &OffsetDateTime| format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
    let summary = format!(
        "{} from {} to {}; highest day {max}",
        series.join(", "),
        days.first().map(|d| day_label(&d.0)).unwrap_or_default(),
        days.last().map(|d| day_label(&d.0)).unwrap_or_default(),
    );
    html! {
        figure.chart #(id) {
            svg viewBox=(format!("0 0 {W} {}", H + 16.0)) role="img" aria-label=(summary) {
                line.axis x1="0" y1=(H) x2=(W) y2=(H) {}
                @for (i, (day, values)) in days.iter().enumerate() {
                    @let x = i as f64 * slot + (slot - bar) / 2.0;
                    @for (k, v, top, h) in stack(values, scale, H) {
                        rect class=(format!("s{k}")) x=(format!("{x:.1}")) y=(format!("{top:.1}")) width=(format!("{bar:.1}")) height=(format!("{h:.1}")) {
                            title { (day_label(day)) ": " (series.get(k).copied().unwrap_or("")) " " (v) }
                        }
                    }
                }
                text.tick x="0" y=(H + 13.0) { (days.first().map(|d| day_label(&d.0)).unwrap_or_default()) }
                text.tick x=(W) y=(H + 13.0) text-anchor="end" { (days.last().map(|d| day_label(&d.0)).unwrap_or_default()) }
            }
            figcaption {
                @for (k, name) in series.iter().enumerate() {
                    span.key { span class=(format!("swatch s{k}")) aria-hidden="true" {} (name) }
                }
                span.muted { " · max " (max) }
            }
            details {
                summary { "Figures" }
                table {
                    thead { tr { th scope="col" { "Day (UTC)" } @for name in series { th.num scope="col" { (name) } } } }
                    tbody {
                        @for (day, values) in days.iter().rev() {
                            tr { td { (day_label(day)) } @for v in values { td.num { (v) } } }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- devices

#[derive(Debug, Default, Deserialize)]
pub struct DeviceSearch {
    /// A device name fragment, or a user's e-mail (anything with an @).
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    group: String,
    /// OS version prefix, e.g. `10.0.19045` (Windows 10 22H2).
    #[serde(default)]
    os: String,
    /// Check-in freshness: one of [`SEEN`]'s keys.
    #[serde(default)]
    seen: String,
    cursor: Option<String>,
}

const STATES: &[&str] = &["active", "replaced", "unenrolled", "wiped"];

/// The check-in filters: (key, label, last check-in after now − h hours, before now − h hours).
/// Devices that never checked in match none of them.
const SEEN: &[(&str, &str, Option<i64>, Option<i64>)] = &[
    ("24h", "Within 24 hours", Some(24), None),
    ("1d", "Not for more than a day", None, Some(24)),
    ("7d", "Not for more than 7 days", None, Some(24 * 7)),
    ("30d", "Not for more than 30 days", None, Some(24 * 30)),
];

pub async fn devices(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Query(search): Query<DeviceSearch>,
) -> Response {
    if let Some(r) = refuse(&ctx, Permission::DevicesRead) {
        return r;
    }
    let q = search.q.trim().to_owned();
    let (name, user) = if q.contains('@') {
        (None, Some(q.clone()))
    } else {
        (Some(q.clone()).filter(|s| !s.is_empty()), None)
    };
    let now = OffsetDateTime::now_utc();
    let hours_ago = |h: Option<i64>| h.map(|h| now - time::Duration::hours(h));
    let seen = SEEN.iter().find(|(k, ..)| *k == search.seen);
    let state_filter = match search.state.as_str() {
        "" => None,
        s => match EnrollmentState::parse(s) {
            Some(s) => Some(s),
            None => return api_error_page(&ctx, ApiError::BadRequest(format!("unknown state {s:?}"))),
        },
    };
    let after = match search.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match decode_cursor::<DeviceCursor>(c) {
            Ok(c) => Some(c),
            Err(e) => return api_error_page(&ctx, e),
        },
    };
    let filter = DeviceFilter {
        name_contains: name,
        user,
        os_version: Some(search.os.trim().to_owned()).filter(|s| !s.is_empty()),
        state: state_filter,
        group: Some(search.group.clone()).filter(|s| !s.is_empty()),
        last_seen_before: seen.and_then(|s| hours_ago(s.3)),
        last_seen_after: seen.and_then(|s| hours_ago(s.2)),
        sort: DeviceSort::Name,
        descending: false,
        after,
        limit: PAGE_SIZE,
    };
    let groups = super::admin::group_names(&state, &ctx).await;
    let page_of = match state.core().devices.list(&ctx.principal, filter).await {
        Ok(p) => p,
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    let next_cursor = match (page_of.more, page_of.items.last()) {
        (true, Some(last)) => Some(encode_cursor(&DeviceCursor {
            key: DeviceSort::Name.key_of(last),
            id: last.id,
        })),
        _ => None,
    };
    let items: Vec<DeviceSummary> = page_of.items.iter().map(DeviceSummary::from).collect();
    let body = html! {
        form.search method="get" action="/console/devices" role="search" {
            div {
                label for="q" { "Search" }
                br;
                input #q type="search" name="q" value=(q) placeholder="Device name or user e-mail";
            }
            div {
                label for="state" { "State" }
                br;
                select #state name="state" {
                    option value="" selected[search.state.is_empty()] { "Any" }
                    @for s in STATES {
                        option value=(s) selected[search.state == *s] { (s) }
                    }
                }
            }
            div {
                label for="seen" { "Last check-in" }
                br;
                select #seen name="seen" {
                    option value="" selected[search.seen.is_empty()] { "Any" }
                    @for (key, label, ..) in SEEN {
                        option value=(key) selected[search.seen == *key] { (label) }
                    }
                }
            }
            div {
                label for="os" { "OS version" }
                br;
                input #os type="search" name="os" value=(search.os) placeholder="e.g. 10.0.19045" size="14";
            }
            @if !groups.is_empty() {
                div {
                    label for="group" { "Group" }
                    br;
                    select #group name="group" {
                        option value="" selected[search.group.is_empty()] { "Any" }
                        @for g in &groups {
                            option value=(g) selected[search.group == *g] { (g) }
                        }
                    }
                }
            }
            button type="submit" { "Search" }
        }
        @if items.is_empty() {
            p { "No devices match." }
        } @else {
            table {
                caption.muted { "Devices, by name" }
                thead {
                    tr {
                        th scope="col" { "Name" }
                        th scope="col" { "User" }
                        th scope="col" { "OS version" }
                        th scope="col" { "State" }
                        th scope="col" { "Last check-in" }
                    }
                }
                tbody {
                    @for d in &items {
                        tr {
                            td { a href=(format!("/console/devices/{}", d.id)) { (d.name.as_deref().unwrap_or(&d.device_id)) } }
                            td { (d.user_email.as_deref().unwrap_or("")) }
                            td.mono { (d.os_version.as_deref().unwrap_or("")) }
                            td { (state_badge(&d.state)) }
                            td { (when(d.last_seen_at)) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = &next_cursor {
            p {
                a rel="next" href=(format!("/console/devices?q={}&state={}&group={}&os={}&seen={}&cursor={}", urlencode(&q), urlencode(&search.state), urlencode(&search.group), urlencode(&search.os), urlencode(&search.seen), next)) { "Next page →" }
            }
        }
    };
    page(StatusCode::OK, layout(Some(&ctx), "Devices", "/console/devices", body))
}

/// Percent-encodes a query value (everything but unreserved characters).
pub(super) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Default, Deserialize)]
pub struct DeviceNotice {
    done: Option<String>,
}

/// How many commands the timeline shows (newest first).
const TIMELINE_LEN: usize = 100;

pub async fn device(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(id): Path<String>,
    Query(notice): Query<DeviceNotice>,
) -> Response {
    if let Some(r) = refuse(&ctx, Permission::DevicesRead) {
        return r;
    }
    let core = state.core();
    let detail = match core.devices.detail(&ctx.principal, &id).await {
        Ok(d) => d,
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    let groups = super::admin::group_names(&state, &ctx).await;
    let (enrollment, commands) = match core.commands.for_device(&ctx.principal, &id).await {
        Ok(c) => c,
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    let timeline: Vec<CommandView> = commands
        .iter()
        .rev()
        .take(TIMELINE_LEN)
        .map(|c| CommandView::of(c, core.commands.describe(&enrollment, c)))
        .collect();
    let e = &detail.enrollment;
    let config = super::profiles::device_sections(&state, &ctx, e).await;
    let d = &DeviceSummary::from(e);
    let name = d.name.clone().unwrap_or_else(|| d.device_id.clone());
    let active = d.state == "active";
    let done = notice.done.as_deref().and_then(|a| match a {
        "sync" => Some("Sync queued: the device refreshes its inventory at its next check-in."),
        "reboot" => Some("Reboot queued."),
        "lock" => Some("Lock queued."),
        "wipe" => Some("Wipe queued ahead of every other command."),
        "group" => Some("Group changed."),
        "tags" => Some("Tags saved: dynamic groups that read tags pick the change up at the device's next check-in."),
        "verify" => Some("Read-back requested: the device reports its settings' values at its next check-in."),
        _ => None,
    });
    let body = html! {
        @if let Some(msg) = done {
            p.notice role="status" { (msg) }
        }
        @if active {
            section aria-labelledby="h-actions" {
                h2 #h-actions { "Actions" }
                div.actions {
                    @for (action, label, route) in [
                        ("sync", "Sync now", DEVICE_SYNC),
                        ("reboot", "Reboot", DEVICE_REBOOT),
                        ("lock", "Lock", DEVICE_LOCK),
                    ] {
                        @if ctx.may(route.permission) {
                            form.inline method="post" action=(format!("/console/devices/{}/actions/{action}", d.id)) {
                                (csrf_input(&ctx))
                                button type="submit" #(format!("action-{action}")) { (label) }
                            }
                        }
                    }
                    @if ctx.may(super::routes::DEVICE_VERIFY.permission) {
                        form.inline method="post" action=(format!("/console/devices/{}/actions/verify", d.id)) {
                            (csrf_input(&ctx))
                            button type="submit" #action-verify { "Verify now" }
                        }
                    }
                    @if ctx.may(DEVICE_WIPE.permission) {
                        a.danger href=(format!("/console/devices/{}/wipe", d.id)) { "Wipe…" }
                    }
                }
            }
        }
        section aria-labelledby="h-enrollment" {
            h2 #h-enrollment { "Enrollment" }
            dl.facts {
                dt { "Name" } dd #device-name { (name) }
                dt { "State" } dd { (state_badge(&d.state)) }
                dt { "DeviceID" } dd.mono { (d.device_id) }
                dt { "Enrollment id" } dd.mono { (d.id) }
                dt { "User" } dd { (d.user_email.as_deref().unwrap_or("")) }
                dt { "Platform" } dd #device-platform { (d.platform) }
                dt { "OS version" } dd.mono { (d.os_version.as_deref().unwrap_or("")) }
                dt { "Enrollment type" } dd { (d.enrollment_type) }
                dt { "Authenticated by" } dd { (d.auth_method) }
                dt { "Enrolled" } dd { (when(Some(d.enrolled_at))) }
                dt { "Last check-in" } dd { (when(d.last_seen_at)) }
                dt { "Certificate" } dd.mono { (e.cert_thumbprint) " (expires " (rfc3339(e.cert_not_after)) ")" }
                dt { "Group" } dd #device-group { (detail.group.as_deref().unwrap_or("none")) }
                dt { "Tags" } dd #device-tags {
                    @if detail.tags.is_empty() { "none" } @else { (detail.tags.as_slice().join(" ")) }
                }
            }
            @if active && ctx.may(super::routes::DEVICE_SET_TAGS.permission) {
                form.search method="post" action=(format!("/console/devices/{}/tags", d.id)) {
                    (csrf_input(&ctx))
                    div {
                        label for="device-tags-input" { "Tags (separated by spaces; dynamic groups can select on them)" }
                        br;
                        input #device-tags-input type="text" name="tags" maxlength="2200"
                            value=(detail.tags.as_slice().join(" "));
                    }
                    button type="submit" { "Save tags" }
                }
            }
            @if active && ctx.may(super::routes::DEVICE_SET_GROUP.permission) && !groups.is_empty() {
                form.search method="post" action=(format!("/console/devices/{}/group", d.id)) {
                    (csrf_input(&ctx))
                    div {
                        label for="move-group" { "Move to group" }
                        br;
                        select #move-group name="group" {
                            option value="" selected[detail.group.is_none()] { "(no group)" }
                            @for g in &groups {
                                option value=(g) selected[detail.group.as_deref() == Some(g.as_str())] { (g) }
                            }
                        }
                    }
                    button type="submit" { "Move" }
                }
            }
        }
        section aria-labelledby="h-inventory" {
            h2 #h-inventory { "Inventory" }
            @if detail.facts.is_empty() {
                p.muted { "No inventory yet: it arrives with the device's first session." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Fact" } th scope="col" { "Value" } th scope="col" { "Updated" } } }
                    tbody {
                        @for f in &detail.facts {
                            tr { td.mono { (f.name.to_string()) } td { (f.value) } td { (when(Some(f.updated_at))) } }
                        }
                    }
                }
            }
        }
        (config)
        section aria-labelledby="h-commands" {
            h2 #h-commands { "Command timeline" }
            @if timeline.is_empty() {
                p.muted { "No commands yet." }
            } @else {
                table #commands {
                    caption.muted { "Newest first" }
                    thead {
                        tr {
                            th scope="col" { "Queued" }
                            th scope="col" { "Origin" }
                            th scope="col" { "Command" }
                            th scope="col" { "State" }
                            th.num scope="col" { "Status" }
                            th scope="col" { "Completed" }
                        }
                    }
                    tbody {
                        @for c in &timeline {
                            tr {
                                td { (when(Some(c.created_at))) }
                                td { (c.origin) }
                                td { (c.verb) " " span.mono { (c.targets.first().map(String::as_str).unwrap_or("")) }
                                     @if c.targets.len() > 1 { span.muted { " +" (c.targets.len() - 1) " more" } } }
                                td { (state_badge(&c.state)) }
                                td.num { (c.status_code.map(|s| s.to_string()).unwrap_or_default()) }
                                td { (when(c.completed_at)) }
                            }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, layout(Some(&ctx), &name, "/console/devices", body))
}

/// What a queued action's audit note says (as the API's: the device and the command).
fn queued_note(q: &steward_core::service::commands::Queued) -> steward_api::AuditNote {
    note(&q.enrollment.device_id, Some(format!("command {}", q.command.id)))
}

/// Queues a remote action as this user, audited as the API's action route.
async fn run_action(
    state: &ConsoleState,
    ctx: &ConsoleCtx,
    route: ApiRoute,
    id: &str,
    action: Action,
) -> Result<(), ApiError> {
    ctx.act(state, route, id, StatusCode::ACCEPTED, async {
        let q = state.core().commands.queue_action(&ctx.principal, id, action).await?;
        Ok(((), queued_note(&q)))
    })
    .await
}

pub async fn device_action(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    if action == "verify" {
        return match super::profiles::verify_device(&state, &ctx, &id).await {
            Ok(()) => see_other(&format!("/console/devices/{}?done=verify", urlencode(&id))),
            Err(e) => api_error_page(&ctx, e),
        };
    }
    let (route, act) = match action.as_str() {
        "sync" => (DEVICE_SYNC, Action::Sync),
        "reboot" => (DEVICE_REBOOT, Action::Reboot),
        "lock" => (DEVICE_LOCK, Action::Lock),
        _ => return error_page(Some(&ctx), StatusCode::NOT_FOUND, "no such action"),
    };
    match run_action(&state, &ctx, route, &id, act).await {
        Ok(()) => see_other(&format!("/console/devices/{}?done={action}", urlencode(&id))),
        Err(e) => api_error_page(&ctx, e),
    }
}

fn wipe_form(ctx: &ConsoleCtx, id: &str, name: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error {
            p.error role="alert" { (e) }
        }
        p {
            "Wiping erases " strong { (name) } ": Windows resets and the device leaves management once it "
            "acknowledges. This cannot be undone."
        }
        form.stack method="post" action=(format!("/console/devices/{}/wipe", urlencode(id))) {
            (csrf_input(ctx))
            label for="kind" { "Kind of wipe" }
            select #kind name="kind" {
                option value="protected" selected { "Protected (doWipeProtected, recommended)" }
                option value="wipe" { "Wipe (doWipe)" }
                option value="persist_user_data" { "Keep user data (doWipePersistUserData)" }
                option value="persist_provisioned_data" { "Keep provisioning data (doWipePersistProvisionedData)" }
            }
            label for="confirm_name" { "Type the device name " code { (name) } " to confirm" }
            input #confirm_name type="text" name="confirm_name" autocomplete="off" required;
            button.danger type="submit" { "Wipe this device" }
        }
        p { a href=(format!("/console/devices/{}", urlencode(id))) { "Cancel" } }
    }
}

async fn device_name(state: &ConsoleState, ctx: &ConsoleCtx, id: &str) -> Result<String, Response> {
    match state.core().devices.find(&ctx.principal, id).await {
        Ok(e) => Ok(e.device_name.unwrap_or_else(|| e.device_id.to_string())),
        Err(e) => Err(api_error_page(ctx, e.into())),
    }
}

pub async fn wipe_confirm(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refuse(&ctx, DEVICE_WIPE.permission) {
        return r;
    }
    let name = match device_name(&state, &ctx, &id).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    page(
        StatusCode::OK,
        layout(
            Some(&ctx),
            &format!("Wipe {name}?"),
            "/console/devices",
            wipe_form(&ctx, &id, &name, None),
        ),
    )
}

#[derive(Debug, Deserialize)]
pub struct WipeForm {
    #[serde(default)]
    confirm_name: String,
    kind: Option<WipeKind>,
}

pub async fn wipe(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(id): Path<String>,
    Form(form): Form<WipeForm>,
) -> Response {
    // The role check comes first (and is audited as the API would audit it); the name is only
    // looked up for someone who may wipe.
    let name = if ctx.may(DEVICE_WIPE.permission) {
        match device_name(&state, &ctx, &id).await {
            Ok(n) => Some(n),
            Err(r) => return r,
        }
    } else {
        None
    };
    let confirmed = name.as_deref().is_some_and(|n| form.confirm_name.trim() == n);
    let kind = form.kind.unwrap_or(WipeKind::Protected);
    let done = ctx
        .act(&state, DEVICE_WIPE, &id, StatusCode::ACCEPTED, async {
            if !confirmed {
                // The API's answer to a wipe without `"confirm": true`.
                return Err(steward_core::service::ServiceError::Invalid(
                    "wiping erases the device: send \"confirm\": true".into(),
                ));
            }
            let q = state
                .core()
                .commands
                .queue_action(&ctx.principal, &id, Action::Wipe(kind))
                .await?;
            Ok(((), queued_note(&q)))
        })
        .await;
    match (done, name) {
        (Ok(()), _) => see_other(&format!("/console/devices/{}?done=wipe", urlencode(&id))),
        (Err(e), Some(name)) if !confirmed => page(
            e.status(),
            layout(
                Some(&ctx),
                &format!("Wipe {name}?"),
                "/console/devices",
                wipe_form(
                    &ctx,
                    &id,
                    &name,
                    Some("The name you typed does not match the device's name."),
                ),
            ),
        ),
        (Err(e), _) => api_error_page(&ctx, e),
    }
}

// ---------------------------------------------------------------- enrollment

/// The endpoint the Windows how-to below is written for (the Windows adapter's name for it).
const WINDOWS_DISCOVERY: &str = "Windows discovery";

/// How to enroll a device, for each endpoint the server's platforms offer.
fn enrollment_instructions(state: &ConsoleState, token: Option<&str>) -> Markup {
    html! {
        @for endpoint in &state.settings.enrollment_endpoints {
            @if endpoint.name == WINDOWS_DISCOVERY {
                (windows_instructions(&endpoint.url, token))
            } @else {
                section {
                    h2 { (endpoint.name) }
                    p { "Enroll devices with " code { (endpoint.url) } " and " @if token.is_some() { "the token above" } @else { "an enrollment token" } "." }
                }
            }
        }
    }
}

fn windows_instructions(discovery: &str, token: Option<&str>) -> Markup {
    let link = format!("ms-device-enrollment:?mode=mdm&username=user@example.com&servername={discovery}");
    html! {
        section aria-labelledby="h-howto" {
            h2 #h-howto { "Enroll a Windows 10/11 device" }
            ol {
                li { "Unless Steward has a publicly trusted certificate, install its root CA (" code { "steward-data/pki/root-ca.pem" } ") in the device's Trusted Root Certification Authorities." }
                li { "Open " strong { "Settings › Accounts › Access work or school › Enroll only in device management" } "." }
                li { "Enter any e-mail address and, when asked, the server " code { (discovery) } "." }
                li { "Use " @if token.is_some() { "the token above" } @else { "an enrollment token" } " as the password." }
            }
            p { "Or open this link on the device: " a #enroll-link href=(link) { code { (link) } } }
            // A phone camera or a QR reader on the device opens the same link.
            @if let Some(svg) = super::session::qr_svg(&link) {
                figure.qr #enroll-qr role="img" aria-label="QR code of the enrollment link" { (svg) }
            }
        }
    }
}

pub async fn enrollment(State(state): State<ConsoleState>, Extension(ctx): Extension<ConsoleCtx>) -> Response {
    if let Some(r) = refuse(&ctx, Permission::EnrollmentTokensRead) {
        return r;
    }
    let directory = &state.core().directory;
    let (tokens, groups) = match (directory.enrollment_tokens().await, directory.group_names().await) {
        (Ok(t), Ok(g)) => (t, g),
        (Err(e), _) | (_, Err(e)) => return api_error_page(&ctx, e.into()),
    };
    let now = state.core().now();
    // Newest first, as many as the API's largest page.
    let tokens: Vec<_> = tokens
        .iter()
        .rev()
        .take(MAX_LIMIT as usize)
        .map(|t| enrollment_token_view(t, &groups, now))
        .collect();
    let body = html! {
        @if ctx.may(ENROLLMENT_TOKEN_CREATE.permission) {
            section aria-labelledby="h-new" {
                h2 #h-new { "New enrollment token" }
                form.stack method="post" action="/console/enrollment" {
                    (csrf_input(&ctx))
                    label for="description" { "Description" }
                    input #description type="text" name="description" maxlength="200";
                    label for="max_uses" { "Devices it may enroll (empty: unlimited)" }
                    input #max_uses type="number" name="max_uses" min="1";
                    label for="expires_in_hours" { "Valid for (hours)" }
                    input #expires_in_hours type="number" name="expires_in_hours" min="1" max="8760" value="168";
                    label for="group" { "Group (optional)" }
                    input #group type="text" name="group" maxlength="128";
                    button type="submit" { "Create token" }
                }
            }
        }
        (enrollment_instructions(&state, None))
        section aria-labelledby="h-tokens" {
            h2 #h-tokens { "Tokens" }
            table {
                thead { tr {
                    th scope="col" { "Description" } th scope="col" { "State" } th.num scope="col" { "Uses" }
                    th scope="col" { "Group" } th scope="col" { "Expires" }
                } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { (t.description.as_deref().unwrap_or("")) }
                            td { (state_badge(&t.state)) }
                            td.num { (t.uses) @if let Some(m) = t.max_uses { " / " (m) } }
                            td { (t.group.as_deref().unwrap_or("")) }
                            td { (t.expires_at.map(rfc3339).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    };
    page(
        StatusCode::OK,
        layout(Some(&ctx), "Enrollment", "/console/enrollment", body),
    )
}

#[derive(Deserialize)]
pub struct NewTokenForm {
    #[serde(default)]
    description: String,
    #[serde(default)]
    max_uses: String,
    #[serde(default)]
    expires_in_hours: String,
    #[serde(default)]
    group: String,
}

pub async fn create_enrollment_token(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Form(form): Form<NewTokenForm>,
) -> Response {
    let number = |s: &str| -> Result<Option<u32>, ()> {
        let s = s.trim();
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some).map_err(|_| ())
        }
    };
    let (Ok(max_uses), Ok(hours)) = (number(&form.max_uses), number(&form.expires_in_hours)) else {
        return error_page(
            Some(&ctx),
            StatusCode::UNPROCESSABLE_ENTITY,
            "uses and hours must be whole numbers",
        );
    };
    let request = EnrollmentTokenRequest {
        description: Some(form.description.trim().to_owned()).filter(|s| !s.is_empty()),
        max_uses,
        expires_in_hours: hours,
        group: Some(form.group.trim().to_owned()).filter(|s| !s.is_empty()),
    };
    let created = ctx
        .act(&state, ENROLLMENT_TOKEN_CREATE, "", StatusCode::CREATED, async {
            let (t, secret) = state.core().directory.create_enrollment_token(request).await?;
            Ok((secret, note(t.id, None)))
        })
        .await;
    let secret = match created {
        Ok(s) => s,
        Err(e) => return api_error_page(&ctx, e),
    };
    let token = secret.expose();
    // Shown once, in this response only (no redirect: the token must not be in a URL or stored).
    let body = html! {
        div.secret role="status" {
            p { strong { "Copy this token now. " } "Steward keeps only its hash; it will not be shown again." }
            p { code #new-token { (token) } }
        }
        (enrollment_instructions(&state, Some(token)))
        p { a href="/console/enrollment" { "Back to enrollment tokens" } }
    };
    page(
        StatusCode::CREATED,
        layout(Some(&ctx), "Enrollment token created", "/console/enrollment", body),
    )
}

// ---------------------------------------------------------------- audit

#[derive(Debug, Default, Deserialize)]
pub struct AuditPage {
    cursor: Option<String>,
}

/// Where the audit log's next page starts.
#[derive(serde::Serialize, Deserialize)]
struct AuditCursor {
    before: i64,
}

pub async fn audit(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Query(q): Query<AuditPage>,
) -> Response {
    if let Some(r) = refuse(&ctx, Permission::AuditRead) {
        return r;
    }
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match decode_cursor::<AuditCursor>(c) {
            Ok(c) => Some(c.before),
            Err(e) => return api_error_page(&ctx, e),
        },
    };
    let filter = AuditFilter {
        newest_first: true,
        ..AuditFilter::default()
    };
    let mut events = match state.core().store.audit_events(&filter, after, PAGE_SIZE + 1).await {
        Ok(rows) => rows,
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    let next_cursor = if events.len() > PAGE_SIZE as usize {
        events.truncate(PAGE_SIZE as usize);
        events
            .last()
            .map(|last| encode_cursor(&AuditCursor { before: last.seq }))
    } else {
        None
    };
    let body = html! {
        p.muted { "Every state-changing action, newest first. The log is hash-chained: " code { "steward audit verify" } " detects an edited row." }
        table {
            thead { tr {
                th.num scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Role" }
                th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "From" } th scope="col" { "Outcome" }
            } }
            tbody {
                @for e in &events {
                    tr {
                        td.num { (e.seq) }
                        td { (when(Some(e.at))) }
                        td { (e.actor) }
                        td { (e.actor_role.map(|r| r.as_str()).unwrap_or_default()) }
                        td.mono { (e.action) }
                        td.mono { (e.target.as_deref().unwrap_or("")) }
                        td.mono { (e.source_ip.as_deref().unwrap_or("")) }
                        td { (state_badge(if e.outcome == AuditOutcome::Success { "succeeded" } else { "failed" })) " " (e.status.map(|s| s.to_string()).unwrap_or_default()) }
                    }
                }
            }
        }
        @if let Some(next) = &next_cursor {
            p { a rel="next" href=(format!("/console/audit?cursor={next}")) { "Older events →" } }
        }
    };
    page(StatusCode::OK, layout(Some(&ctx), "Audit log", "/console/audit", body))
}
