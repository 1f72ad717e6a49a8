//! Console pages for desired-state configuration (docs/PROFILES.md): the profiles with their
//! assignment and per-status device counts, one profile (settings of its current version, its
//! versions, conflicts with the rule that decided them, its staged rollout), one-click assignment
//! of catalog entries, and the device page's settings table and configuration events. Reads go
//! through `Core::profiles` / `Core::rollouts` as the signed-in user; every change is authorised
//! and audited as the admin API's route for it ([`ConsoleCtx::act`]).

use std::collections::BTreeMap;

use axum::extract::{Extension, Form, Path, Query, State};
use axum::response::Response;
use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;
use steward_api::{ApiError, AuditNote};
use steward_core::service::ServiceError;
use steward_core::service::profiles::{ApplyReport, ProfileDetail};
use steward_core::service::rollouts::RolloutStatus;
use steward_core::*;

use super::pages::{csrf_input, refuse, state_badge, urlencode, when};
use super::routes::{
    CATALOG_ASSIGN, DEVICE_VERIFY, PROFILE_DELETE, PROFILE_VERIFY, ROLLOUT_ADVANCE, ROLLOUT_PAUSE, ROLLOUT_RESUME,
    ROLLOUT_ROLLBACK,
};
use super::{ApiRoute, ConsoleCtx, ConsoleState, api_error_page, error_page, layout, note, page, see_other};

/// Characters of a `b64` value shown before it is cut (blobs run to kilobytes).
const B64_SHOWN: usize = 48;
/// Characters of any other value shown inline; a longer one (an XML document) folds into a
/// disclosure.
const VALUE_INLINE: usize = 160;
/// Configuration events the device page lists (newest first).
const DEVICE_EVENTS: u32 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    done: Option<String>,
}

fn profile_href(name: &str) -> String {
    format!("/console/profiles/{}", urlencode(name))
}

/// "all devices", "groups a, b", with " except c" for exclusions; "nothing" when unassigned.
fn assignment_text(a: &AssignDocument) -> String {
    let mut out = if a.all {
        "all devices".to_owned()
    } else if a.groups.is_empty() {
        "nothing (unassigned)".to_owned()
    } else {
        format!("groups {}", a.groups.join(", "))
    };
    if !a.exclude_groups.is_empty() {
        out.push_str(&format!(" except {}", a.exclude_groups.join(", ")));
    }
    out
}

/// A setting's value as shown: a `b64` blob cut after [`B64_SHOWN`] characters with its length,
/// anything longer than [`VALUE_INLINE`] folded into a disclosure. (Settings carry no secret
/// marking: a catalog kind's secret parameters are written into the value by the platform.)
fn value_cell(s: &Setting) -> Markup {
    let v = s.value.as_str();
    html! {
        @if s.format == "b64" && v.chars().count() > B64_SHOWN {
            span.mono title=(format!("{} characters", v.chars().count())) {
                (v.chars().take(B64_SHOWN).collect::<String>()) "…"
            }
            span.muted { " (" (v.chars().count()) " characters)" }
        } @else if v.chars().count() > VALUE_INLINE {
            details {
                summary { span.mono { (v.chars().take(40).collect::<String>()) "…" } }
                pre.mono { (v) }
            }
        } @else {
            span.mono { (v) }
        }
    }
}

/// Per version, per status, from the store's counts.
fn counts_by_version(c: &ProfileStatusCounts) -> BTreeMap<u32, BTreeMap<SettingStatus, u64>> {
    let mut out: BTreeMap<u32, BTreeMap<SettingStatus, u64>> = BTreeMap::new();
    for (version, status, n) in &c.settings {
        *out.entry(*version).or_default().entry(*status).or_default() += n;
    }
    out
}

/// The header cells of a status-count row.
fn status_headers() -> Markup {
    html! {
        @for s in SettingStatus::ALL {
            th.num scope="col" { (s.as_str()) }
        }
    }
}

/// One cell per status; zero is muted so the numbers that matter stand out.
fn status_cells(counts: Option<&BTreeMap<SettingStatus, u64>>) -> Markup {
    html! {
        @for s in SettingStatus::ALL {
            @let n = counts.and_then(|c| c.get(&s)).copied().unwrap_or(0);
            td.num data-status=(s.as_str()) {
                @if n == 0 { span.muted { "0" } } @else { (n) }
            }
        }
    }
}

// ---------------------------------------------------------------- list

pub async fn profiles(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Query(notice): Query<Notice>,
) -> Response {
    if let Some(r) = refuse(&ctx, Permission::ProfilesRead) {
        return r;
    }
    let core = state.core();
    let list = match core.profiles.list(&ctx.principal).await {
        Ok(l) => l,
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    // Counts and current versions straight from the store: the list is already authorised, and
    // `show` per profile would recompute every profile's conflicts once per row.
    let mut rows = Vec::with_capacity(list.len());
    let mut candidates = Vec::new();
    for (p, assign, devices) in list {
        let counts = match core.store.profile_status(p.id).await {
            Ok(c) => c,
            Err(e) => return api_error_page(&ctx, e.into()),
        };
        let current = match core.store.profile_version(p.id, p.current_version).await {
            Ok(v) => v,
            Err(e) => return api_error_page(&ctx, e.into()),
        };
        if let Some(v) = current {
            candidates.push(AssignedProfile {
                id: p.id,
                name: p.name.clone(),
                priority: p.priority,
                remediation: p.remediation,
                created_at: p.created_at,
                version: v.version,
                assignment: p.assignment.clone(),
                settings: v.settings,
                config_lock: v.config_lock,
            });
        }
        rows.push((p, assign, devices, counts_by_version(&counts)));
    }
    // Conflicts only arise within a platform.
    let mut conflicted: BTreeMap<ProfileId, usize> = BTreeMap::new();
    for platform in rows
        .iter()
        .map(|r| r.0.platform)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let same: Vec<AssignedProfile> = candidates
            .iter()
            .filter(|c| rows.iter().any(|r| r.0.id == c.id && r.0.platform == platform))
            .filter(|c| !c.assignment.is_empty())
            .cloned()
            .collect();
        for c in steward_core::configuration::profile_conflicts(&same) {
            *conflicted.entry(c.winner).or_default() += 1;
            *conflicted.entry(c.loser).or_default() += 1;
        }
    }
    let done = match notice.done.as_deref() {
        Some("deleted") => Some("Profile deleted: its settings are removed from the devices at their next check-ins."),
        _ => None,
    };
    let body = html! {
        @if let Some(msg) = done {
            p.notice role="status" { (msg) }
        }
        p.muted {
            "Desired-state configuration: each profile's current version is kept on the devices its assignment "
            "covers; a device's answers and read-backs give every setting a status. Profiles are written with "
            code { "steward apply -f FILE" } " or assigned from the " a href="/console/catalog" { "catalog" } "."
        }
        @if rows.is_empty() {
            p { "No profiles yet." }
        } @else {
            table #profiles {
                caption.muted { "Device settings of each profile's current version, by status" }
                thead {
                    tr {
                        th scope="col" { "Profile" }
                        th scope="col" { "Platform" }
                        th.num scope="col" { "Version" }
                        th scope="col" { "Assigned to" }
                        th.num scope="col" { "Devices" }
                        (status_headers())
                        th scope="col" { "Conflicts" }
                    }
                }
                tbody {
                    @for (p, assign, devices, counts) in &rows {
                        tr data-profile=(p.name) {
                            td { a href=(profile_href(&p.name)) { (p.name) } }
                            td { (p.platform) }
                            td.num { (p.current_version) }
                            td { (assignment_text(assign)) }
                            td.num { (devices) }
                            (status_cells(counts.get(&p.current_version)))
                            td {
                                @if let Some(n) = conflicted.get(&p.id) {
                                    span.state.state-failed { (n) " conflict" @if *n > 1 { "s" } }
                                } @else {
                                    span.muted { "none" }
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
        layout(Some(&ctx), "Profiles", "/console/profiles", body),
    )
}

// ---------------------------------------------------------------- one profile

/// Why the winner of a conflict wins (the rule of `steward_core::configuration`: lowest priority,
/// then the profile created first, then the name that sorts first).
fn conflict_rule(winner: Option<&Profile>, loser: Option<&Profile>) -> String {
    match (winner, loser) {
        (Some(w), Some(l)) if w.priority != l.priority => {
            format!("lower priority number ({} < {})", w.priority, l.priority)
        }
        (Some(w), Some(l)) if w.created_at != l.created_at => {
            format!("equal priority {}; created first ({})", w.priority, w.created_at.date())
        }
        (Some(w), Some(_)) => format!("equal priority {} and creation time; name sorts first", w.priority),
        _ => "lowest priority number, then the oldest profile, then the name".into(),
    }
}

fn rollout_section(ctx: &ConsoleCtx, name: &str, s: &RolloutStatus) -> Markup {
    let r = &s.rollout;
    let may = ctx.may(ROLLOUT_PAUSE.permission);
    let actions: &[(&str, &str)] = match r.state {
        RolloutState::Running => &[
            ("advance", "Release the next ring"),
            ("pause", "Pause"),
            ("rollback", "Roll back"),
        ],
        RolloutState::Paused => &[
            ("resume", "Resume"),
            ("advance", "Release the next ring"),
            ("rollback", "Roll back"),
        ],
        RolloutState::Halted => &[("resume", "Resume"), ("rollback", "Roll back")],
        RolloutState::Completed | RolloutState::RolledBack => &[],
    };
    html! {
        section aria-labelledby="h-rollout" #rollout {
            h2 #h-rollout { "Rollout" }
            dl.facts {
                dt { "State" } dd #rollout-state { (state_badge(r.state.as_str())) @if !r.reason.is_empty() { " " span.muted { (r.reason) } } }
                dt { "Versions" } dd { (r.from_version) " → " (r.to_version) @if r.from_version == 0 { span.muted { " (new profile: devices outside the released rings get nothing)" } } }
                dt { "Current ring" } dd { (r.current_ring + 1) " of " (r.rings.len()) }
                dt { "Gates" } dd { "failure threshold " (format!("{:.0} %", r.failure_threshold * 100.0)) "; " (if r.auto_advance { "advances by itself" } else { "advanced by an admin" }) }
                @if let Some(g) = &s.gate {
                    dt { "Now" } dd { (g) }
                }
            }
            table #rollout-rings {
                caption.muted { "Devices per ring, cumulative" }
                thead {
                    tr {
                        th.num scope="col" { "Ring" }
                        th scope="col" { "Devices it adds" }
                        th scope="col" { "Released" }
                        th.num scope="col" { "Devices" }
                        th.num scope="col" { "Acknowledged" }
                        th.num scope="col" { "Failed" }
                        th scope="col" { "Progress" }
                        th scope="col" { "Soak, success needed" }
                    }
                }
                tbody {
                    @for (i, (ring, st)) in r.rings.iter().zip(&s.rings).enumerate() {
                        @let released = r.state == RolloutState::Completed
                            || (r.state != RolloutState::RolledBack && i as u32 <= r.current_ring);
                        tr {
                            td.num { (i + 1) }
                            td { (ring.describe()) }
                            td { (if released { "yes" } else { "no" }) }
                            td.num { (st.devices) }
                            td.num { (st.acknowledged) }
                            td.num { (st.failed) }
                            td { meter min="0" max=(st.devices.max(1)) value=(st.acknowledged)
                                   aria-label=(format!("ring {}: {} of {} acknowledged", i + 1, st.acknowledged, st.devices)) {} }
                            td { (ring.soak_seconds.unwrap_or(r.soak_seconds) / 60) " min, "
                                 (format!("{:.0} %", ring.success_ratio.unwrap_or(r.success_ratio) * 100.0)) }
                        }
                    }
                }
            }
            @if may && !actions.is_empty() {
                div.actions {
                    @for (action, label) in actions {
                        form.inline method="post" action=(format!("{}/rollout/{action}", profile_href(name))) {
                            (csrf_input(ctx))
                            @if *action == "rollback" {
                                button.danger type="submit" #(format!("rollout-{action}")) { (label) }
                            } @else {
                                button type="submit" #(format!("rollout-{action}")) { (label) }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn profile(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(name): Path<String>,
    Query(notice): Query<Notice>,
) -> Response {
    if let Some(r) = refuse(&ctx, Permission::ProfilesRead) {
        return r;
    }
    let core = state.core();
    let d: ProfileDetail = match core.profiles.show(&ctx.principal, &name).await {
        Ok(d) => d,
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    let rollout = match core.rollouts.status(&ctx.principal, &name).await {
        Ok(s) => Some(s),
        Err(ServiceError::NotFound(_)) => None,
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    // The other side of each conflict, for the rule that decided it.
    let mut others: BTreeMap<String, Profile> = BTreeMap::new();
    for c in &d.conflicts {
        for n in [&c.winner_name, &c.loser_name] {
            if *n != d.profile.name && !others.contains_key(n) {
                match core.store.profile_by_name(n).await {
                    Ok(Some(p)) => {
                        others.insert(n.clone(), p);
                    }
                    Ok(None) => {}
                    Err(e) => return api_error_page(&ctx, e.into()),
                }
            }
        }
    }
    let find = |n: &str| {
        if n == d.profile.name {
            Some(&d.profile)
        } else {
            others.get(n)
        }
    };
    let p = &d.profile;
    let counts = counts_by_version(&d.status);
    let current = d.versions.iter().find(|v| v.version == p.current_version);
    let done = match notice.done.as_deref() {
        Some("verify") => {
            Some("Read-back requested: the covered devices report their values at their next check-ins.".to_owned())
        }
        Some("assigned") => Some("Catalog entry assigned.".to_owned()),
        Some(a) if ["advance", "pause", "resume", "rollback"].contains(&a) => Some(format!("Rollout: {a} done.")),
        _ => None,
    };
    let may_verify = ctx.may(PROFILE_VERIFY.permission);
    let may_delete = ctx.may(PROFILE_DELETE.permission);
    let body = html! {
        @if let Some(msg) = &done {
            p.notice role="status" { (msg) }
        }
        @if may_verify || may_delete {
            section aria-labelledby="h-actions" {
                h2 #h-actions { "Actions" }
                div.actions {
                    @if may_verify {
                        form.inline method="post" action=(format!("{}/verify", profile_href(&p.name))) {
                            (csrf_input(&ctx))
                            button type="submit" #action-verify-profile { "Verify all devices" }
                        }
                    }
                    @if may_delete {
                        a.danger href=(format!("{}/delete", profile_href(&p.name))) { "Delete profile…" }
                    }
                }
            }
        }
        section aria-labelledby="h-profile" {
            h2 #h-profile { "Profile" }
            dl.facts {
                dt { "Platform" } dd { (p.platform) }
                @if !p.description.is_empty() { dt { "Description" } dd { (p.description) } }
                dt { "Current version" } dd #profile-version { (p.current_version) }
                dt { "Assigned to" } dd #profile-assignment { (assignment_text(&d.assign)) }
                dt { "Devices assigned" } dd #profile-devices { (d.status.devices) }
                dt { "Priority" } dd { (p.priority) span.muted { " (the lowest number wins a conflict)" } }
                dt { "When a device drifts" } dd { (match p.remediation { Remediation::Remediate => "send the value again", Remediation::Report => "report only" }) }
                dt { "Updated" } dd { (when(Some(p.updated_at))) }
            }
        }
        section aria-labelledby="h-settings" {
            h2 #h-settings { "Settings of version " (p.current_version) }
            @match current {
                None => p.muted { "The current version is missing." },
                Some(v) => table #profile-settings {
                    thead { tr { th scope="col" { "Path" } th scope="col" { "Format" } th scope="col" { "Value" } th scope="col" { "Read back" } th scope="col" { "On removal" } } }
                    tbody {
                        @for s in &v.settings {
                            tr {
                                td.mono { (s.path) }
                                td { (s.format) }
                                td { (value_cell(s)) }
                                td { (if s.readable { "yes" } else { "no" }) }
                                td { (s.on_remove.to_string()) }
                            }
                        }
                    }
                },
            }
        }
        section aria-labelledby="h-versions" {
            h2 #h-versions { "Versions" }
            table #profile-versions {
                caption.muted { "Device settings per version and status" }
                thead { tr { th.num scope="col" { "Version" } th scope="col" { "Created" } th.num scope="col" { "Settings" } th scope="col" { "Digest" } (status_headers()) } }
                tbody {
                    @for v in d.versions.iter().rev() {
                        tr data-version=(v.version) {
                            td.num { (v.version) @if v.version == p.current_version { " (current)" } }
                            td { (when(Some(v.created_at))) }
                            td.num { (v.settings.len()) }
                            td.mono title=(v.digest) { (v.digest.chars().take(12).collect::<String>()) }
                            (status_cells(counts.get(&v.version)))
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-conflicts" {
            h2 #h-conflicts { "Conflicts" }
            @if d.conflicts.is_empty() {
                p.muted #no-conflicts { "No other assigned profile sets one of these paths to another value." }
            } @else {
                table #profile-conflicts {
                    caption.muted { "Paths another profile sets to another value on devices both cover; only the winner's value is sent" }
                    thead { tr { th scope="col" { "Path" } th scope="col" { "Wins" } th scope="col" { "Loses" } th scope="col" { "Why" } } }
                    tbody {
                        @for c in &d.conflicts {
                            tr {
                                td.mono { (c.path) }
                                td { a href=(profile_href(&c.winner_name)) { (c.winner_name) } }
                                td { a href=(profile_href(&c.loser_name)) { (c.loser_name) } }
                                td { (conflict_rule(find(&c.winner_name), find(&c.loser_name))) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(s) = &rollout {
            (rollout_section(&ctx, &p.name, s))
        }
    };
    page(StatusCode::OK, layout(Some(&ctx), &p.name, "/console/profiles", body))
}

/// The audit note of a verification, as the API's (`verify_response`): target, "N devices".
fn verified_note(target: impl ToString, devices: u64) -> AuditNote {
    note(target, Some(format!("{devices} devices")))
}

pub async fn verify(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(name): Path<String>,
) -> Response {
    let done = ctx
        .act(&state, PROFILE_VERIFY, &name, StatusCode::ACCEPTED, async {
            let (p, n) = state.core().profiles.verify_profile(&ctx.principal, &name).await?;
            Ok(((), verified_note(p.name, n)))
        })
        .await;
    match done {
        Ok(()) => see_other(&format!("{}?done=verify", profile_href(&name))),
        Err(e) => api_error_page(&ctx, e),
    }
}

fn delete_form(ctx: &ConsoleCtx, name: &str, devices: u64, error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error {
            p.error role="alert" { (e) }
        }
        p {
            "Deleting " strong { (name) } " removes its settings from the " (devices) " devices it is assigned to, "
            "each by its removal rule, at their next check-ins. Its versions are deleted with it."
        }
        form.stack method="post" action=(format!("{}/delete", profile_href(name))) {
            (csrf_input(ctx))
            label for="confirm_name" { "Type the profile name " code { (name) } " to confirm" }
            input #confirm_name type="text" name="confirm_name" autocomplete="off" required;
            button.danger type="submit" { "Delete this profile" }
        }
        p { a href=(profile_href(name)) { "Cancel" } }
    }
}

pub async fn delete_confirm(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = refuse(&ctx, PROFILE_DELETE.permission) {
        return r;
    }
    let d = match state.core().profiles.show(&ctx.principal, &name).await {
        Ok(d) => d,
        Err(e) => return api_error_page(&ctx, e.into()),
    };
    page(
        StatusCode::OK,
        layout(
            Some(&ctx),
            &format!("Delete {}?", d.profile.name),
            "/console/profiles",
            delete_form(&ctx, &d.profile.name, d.status.devices, None),
        ),
    )
}

#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    confirm_name: String,
}

pub async fn delete(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(name): Path<String>,
    Form(form): Form<DeleteForm>,
) -> Response {
    let confirmed = form.confirm_name.trim() == name;
    let done = ctx
        .act(&state, PROFILE_DELETE, &name, StatusCode::NO_CONTENT, async {
            if !confirmed {
                return Err(ServiceError::Invalid(
                    "deleting removes the profile's settings from its devices: type its name to confirm".into(),
                ));
            }
            let p = state.core().profiles.delete(&ctx.principal, &name).await?;
            // As the API's `no_content(name)`: the target is the profile's name.
            Ok(((), note(p.name, None)))
        })
        .await;
    match done {
        Ok(()) => see_other("/console/profiles?done=deleted"),
        Err(e) if !confirmed && ctx.may(PROFILE_DELETE.permission) => {
            let devices = match state.core().profiles.show(&ctx.principal, &name).await {
                Ok(d) => d.status.devices,
                Err(e) => return api_error_page(&ctx, e.into()),
            };
            page(
                e.status(),
                layout(
                    Some(&ctx),
                    &format!("Delete {name}?"),
                    "/console/profiles",
                    delete_form(
                        &ctx,
                        &name,
                        devices,
                        Some("The name you typed does not match the profile's name."),
                    ),
                ),
            )
        }
        Err(e) => api_error_page(&ctx, e),
    }
}

pub async fn rollout_action(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let (route, act): (ApiRoute, RolloutAction) = match action.as_str() {
        "advance" => (ROLLOUT_ADVANCE, RolloutAction::Advance),
        "pause" => (ROLLOUT_PAUSE, RolloutAction::Pause),
        "resume" => (ROLLOUT_RESUME, RolloutAction::Resume),
        "rollback" => (ROLLOUT_ROLLBACK, RolloutAction::Rollback),
        _ => return error_page(Some(&ctx), StatusCode::NOT_FOUND, "no such action"),
    };
    let done = ctx
        .act(&state, route, &name, StatusCode::OK, async {
            let r = state.core().rollouts.act(&ctx.principal, &name, act).await?;
            // As the API's: the profile, "ring N, state".
            Ok((
                (),
                note(&name, Some(format!("ring {}, {}", r.current_ring + 1, r.state))),
            ))
        })
        .await;
    match done {
        Ok(()) => see_other(&format!("{}?done={action}#rollout", profile_href(&name))),
        Err(e) => api_error_page(&ctx, e),
    }
}

// ---------------------------------------------------------------- catalog

/// Whether a catalog entry can be assigned as it is (it needs no parameters: the baseline areas
/// and update rings).
pub(super) fn assignable(e: &CatalogProfile) -> bool {
    e.parameters.is_empty()
}

/// The one-click assignment form of a catalog entry: every device or one group.
pub(super) fn assign_form(ctx: &ConsoleCtx, entry: &CatalogProfile, groups: &[String]) -> Markup {
    let id = format!("assign-{}", entry.name);
    html! {
        form.search method="post" action=(format!("/console/catalog/{}/assign", urlencode(&entry.name))) {
            (csrf_input(ctx))
            div {
                label for=(id) { "Assign " span.mono { (entry.name) } " to" }
                br;
                select id=(id) name="to" {
                    option value="all" { "All devices" }
                    @for g in groups {
                        option value=(format!("group:{g}")) { "Group " (g) }
                    }
                }
            }
            button type="submit" { "Assign" }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct AssignForm {
    #[serde(default)]
    to: String,
}

/// The audit note of an apply report, as the API's (`report_response`): the profiles' names, and
/// what happened to each.
fn report_note(r: &ApplyReport) -> AuditNote {
    let summary: Vec<String> = r
        .profiles
        .iter()
        .map(|p| format!("{} {}", p.name, p.action.as_str()))
        .collect();
    AuditNote {
        target: Some(r.profiles.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(",")),
        details: Some(format!(
            "{}{}",
            if r.dry_run { "dry run: " } else { "" },
            summary.join(", ")
        )),
    }
}

pub async fn assign_catalog(
    State(state): State<ConsoleState>,
    Extension(ctx): Extension<ConsoleCtx>,
    Path(name): Path<String>,
    Form(form): Form<AssignForm>,
) -> Response {
    let assign = match form.to.as_str() {
        "all" => Ok(AssignDocument {
            all: true,
            ..Default::default()
        }),
        to => match to.strip_prefix("group:").map(str::trim).filter(|g| !g.is_empty()) {
            Some(g) => Ok(AssignDocument {
                groups: vec![g.to_owned()],
                ..Default::default()
            }),
            None => Err(ServiceError::Invalid(
                "choose all devices or a group to assign the entry to".into(),
            )),
        },
    };
    let done = ctx
        .act(&state, CATALOG_ASSIGN, &name, StatusCode::OK, async {
            let report = state
                .core()
                .profiles
                .assign_catalog(&ctx.principal, &name, assign?, false)
                .await?;
            let note = report_note(&report);
            Ok((report, note))
        })
        .await;
    match done {
        Ok(report) => {
            let profile = report.profiles.first().map_or(name.as_str(), |p| p.name.as_str());
            see_other(&format!("{}?done=assigned", profile_href(profile)))
        }
        Err(e) => api_error_page(&ctx, e),
    }
}

// ---------------------------------------------------------------- device page

/// What the device page shows about the device's configuration: its settings table, conflicts
/// and configuration events. Errors become a note in the section (the rest of the page stands).
pub(super) async fn device_sections(state: &ConsoleState, ctx: &ConsoleCtx, e: &Enrollment) -> Markup {
    let core = state.core();
    let settings = core
        .profiles
        .device_settings(&ctx.principal, e)
        .await
        .map_err(ApiError::from);
    let events = core
        .store
        .device_events_of(
            e.id,
            &[EventKind::SettingDrifted, EventKind::SettingFailed],
            DEVICE_EVENTS,
        )
        .await
        .map_err(ApiError::from);
    html! {
        section aria-labelledby="h-settings" {
            h2 #h-settings { "Settings" }
            @match &settings {
                Err(err) => p.error { "The settings cannot be read: " (err) },
                Ok((views, _, None)) if views.is_empty() => p.muted #no-settings { "No profile is assigned to this device." },
                Ok((views, conflicts, lock)) => {
                    @if let Some(l) = lock {
                        p #device-config-lock {
                            "ConfigLock (asked for by " (l.requested_by.join(", ")) "): "
                            @if l.supported {
                                "set on this device; its node is a row of the table below."
                            } @else {
                                strong { "not applied" } ": " (l.reason)
                            }
                        }
                    }
                    table #device-settings {
                        thead {
                            tr {
                                th scope="col" { "Path" }
                                th scope="col" { "Profile" }
                                th scope="col" { "Status" }
                                th scope="col" { "Reason" }
                                th scope="col" { "Observed" }
                                th.num scope="col" { "Device status" }
                                th scope="col" { "Device error" }
                            }
                        }
                        tbody {
                            @for v in views {
                                @let row = v.row.as_ref();
                                tr data-path=(v.path) {
                                    td.mono { (v.path) }
                                    td {
                                        @if let Some(n) = &v.profile_name {
                                            a href=(profile_href(n)) { (n) } " v" (v.version)
                                        } @else {
                                            span.muted { "(no profile) v" (v.version) }
                                        }
                                    }
                                    td { (state_badge(v.status.as_str())) }
                                    td { (v.reason) }
                                    td {
                                        @if let Some(o) = row.and_then(|r| r.observed.as_deref()) {
                                            span.mono { (o) } " " (when(row.and_then(|r| r.observed_at)))
                                        } @else {
                                            span.muted { "not read back" }
                                        }
                                    }
                                    td.num { (row.and_then(|r| r.status_code).map(|c| c.to_string()).unwrap_or_default()) }
                                    td.mono { (row.and_then(|r| r.error.as_deref()).unwrap_or("")) }
                                }
                            }
                        }
                    }
                    @if !conflicts.is_empty() {
                        table #device-conflicts {
                            caption.muted { "Assigned profiles that set one path to different values: the winner's is sent" }
                            thead { tr { th scope="col" { "Path" } th scope="col" { "Wins" } th scope="col" { "Loses" } } }
                            tbody {
                                @for c in conflicts {
                                    tr {
                                        td.mono { (c.path) }
                                        td { a href=(profile_href(&c.winner_name)) { (c.winner_name) } }
                                        td { a href=(profile_href(&c.loser_name)) { (c.loser_name) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-config-events" {
            h2 #h-config-events { "Configuration events" }
            @match &events {
                Err(err) => p.error { "The events cannot be read: " (err) },
                Ok(list) if list.is_empty() => p.muted { "No drift and no refused setting recorded." },
                Ok(list) => table #device-events {
                    caption.muted { "Drift and refused settings, newest first" }
                    thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "Path" } th scope="col" { "Details" } } }
                    tbody {
                        @for ev in list {
                            tr {
                                td { (when(Some(ev.at))) }
                                td { (state_badge(if ev.kind == EventKind::SettingDrifted { "drifted" } else { "failed" })) " " span.mono { (ev.kind.as_str()) } }
                                td.mono { (ev.data["path"].as_str().unwrap_or("")) }
                                td { (event_details(ev)) }
                            }
                        }
                    }
                },
            }
        }
    }
}

/// A configuration event's details for people.
fn event_details(ev: &DeviceEvent) -> String {
    let d = &ev.data;
    let text = |k: &str| d[k].as_str().map(str::to_owned);
    match ev.kind {
        EventKind::SettingDrifted => format!(
            "wanted {}, found {}; {}",
            text("desired").unwrap_or_default(),
            text("observed").unwrap_or_else(|| "nothing".into()),
            if text("remediation").as_deref() == Some("report") {
                "reported only"
            } else {
                "sent again"
            }
        ),
        _ => {
            let code = d["status_code"].as_u64().map(|c| c.to_string()).unwrap_or_default();
            match text("error") {
                Some(err) => format!("the device answered {code} ({err})"),
                None => format!("the device answered {code}"),
            }
        }
    }
}

/// The device page's "Verify now": a read-back of the device's readable settings at its next
/// check-in, as the API's `device.verify`.
pub(super) async fn verify_device(state: &ConsoleState, ctx: &ConsoleCtx, id: &str) -> Result<(), ApiError> {
    ctx.act(state, DEVICE_VERIFY, id, StatusCode::ACCEPTED, async {
        let e = state.core().devices.find_active(&ctx.principal, id).await?;
        let n = state
            .core()
            .profiles
            .verify(&ctx.principal, VerifyTarget::Enrollment(e.id))
            .await?;
        Ok(((), verified_note(e.id, n)))
    })
    .await
}
