//! `steward-bench profiles`: the desired-state configuration figures of issue 12 (docs/BENCHMARKS.md,
//! "Desired-state configuration").
//!
//! 1. Assignment at scale: the built-in catalog's ready-to-assign profiles (the baseline areas and
//!    the update rings) applied through the `Profiles` service, assigned to every device of a store
//!    holding `store_devices` enrollments: the time of that one apply and the store bytes it adds.
//!    Assignment is set-based (a profile row, its version, its assignment, the epoch moved), so the
//!    per-device rows appear only as devices reconcile: that cost is measured apart, by reconciling
//!    `reconcile_devices` of them through the real check-in commit path (the store's
//!    `checkin_context`, core `plan`/`absorb`, `commit_checkin`), every operation acknowledged and
//!    every readable setting read back with its value, and extrapolated by arithmetic.
//! 2. Idle check-in with every setting verified against none: the same enrolled devices over the
//!    wire, before any profile exists and after every device reconciled the profiles (checked in the
//!    store: every row settled, every stamp at the current epoch with nothing unsettled).
//! 3. A new version of one assigned profile reaching every device: the time from the apply until
//!    every device acknowledged the new version (no rollout ring machinery: see the docs).
//!
//! As everywhere in this crate, nothing here is asserted against a threshold.

use std::collections::BTreeMap;

use steward_core::configuration::{
    self, AssignDocument, OpAnswers, OpKind, ProfileDocument, SettingStatus, VerifyPolicy,
};
use steward_core::service::ServiceError;
use steward_core::service::profiles::PROFILE_KIND;
use steward_windows::WindowsAdapter;

use super::*;

/// What `steward-bench profiles` measures, and how big.
#[derive(Debug, Clone)]
pub struct ProfilesOptions {
    /// Enrollments written through the store for the assignment figure (0 skips figure 1).
    pub store_devices: usize,
    /// Of those, devices reconciled through the check-in commit path for the per-device cost.
    pub reconcile_devices: usize,
    /// Devices enrolled over the wire for the idle check-in and new-version figures (0 skips them).
    pub devices: usize,
    /// Sessions per idle check-in measurement (whole rounds over `devices`).
    pub sessions: usize,
    pub concurrency: usize,
    pub mode: ConnMode,
    /// Run the wire figures on PostgreSQL (as `checkins --database-url`). The assignment figure
    /// always measures a SQLite file.
    pub database_url: Option<String>,
}

impl Default for ProfilesOptions {
    fn default() -> Self {
        Self {
            store_devices: 100_000,
            reconcile_devices: 2_000,
            devices: 200,
            sessions: 2_000,
            concurrency: 32,
            mode: ConnMode::Reused,
            database_url: None,
        }
    }
}

/// The catalog's entries that assign as they are (baseline areas and update rings; the kinds need
/// parameters), as profile documents assigned to every device, in catalog order.
pub fn catalog_documents() -> Result<Vec<ProfileDocument>> {
    let adapter = WindowsAdapter::default();
    let mut docs = Vec::new();
    for entry in steward_windows::catalog::builtin_core() {
        if entry.category == CatalogCategory::Kind {
            continue;
        }
        let settings = adapter
            .catalog_settings(&entry.name)
            .ok_or_else(|| BenchError::Setup(format!("catalog entry {} has no settings", entry.name)))?;
        docs.push(ProfileDocument {
            kind: PROFILE_KIND.into(),
            name: entry.name.clone(),
            platform: Platform::Windows.as_str().into(),
            description: entry.title.clone(),
            priority: configuration::DEFAULT_PRIORITY,
            remediation: configuration::Remediation::Remediate,
            settings: settings.iter().map(|s| adapter.setting_document(s)).collect(),
            config_lock: false,
            assign: AssignDocument {
                all: true,
                ..Default::default()
            },
            catalog: None,
            rollout: None,
        });
    }
    if docs.is_empty() {
        return Err(BenchError::Setup("the built-in catalog has no assignable entry".into()));
    }
    Ok(docs)
}

fn service(e: ServiceError) -> BenchError {
    BenchError::Setup(format!("profiles service: {e}"))
}

pub async fn profiles(opts: &ProfilesOptions) -> Result<Report> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut report = Report::default();
    let docs = catalog_documents()?;
    let settings: usize = docs.iter().map(|d| d.settings.len()).sum();
    eprintln!(
        "desired-state configuration: {} catalog profiles, {settings} settings",
        docs.len()
    );
    if opts.store_devices > 0 {
        assignment_at_scale(opts, &docs, &mut report).await?;
    }
    if opts.devices > 0 {
        over_the_wire(opts, &docs, &mut report).await?;
    }
    Ok(report)
}

// ---- 1. Assignment at scale ----

/// Writes `n` synthetic enrollments (their enrollment commit, as the server writes it), 64 in
/// flight so the store's writer stays busy; returns their ids.
async fn populate(store: Arc<dyn BenchStore>, n: usize) -> Result<Vec<EnrollmentId>> {
    const TASKS: usize = 64;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..TASKS.min(n) {
        let (store, next) = (store.clone(), next.clone());
        set.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, BenchError>(ids);
                }
                let now = OffsetDateTime::now_utc();
                let e = synthetic_enrollment(i, now)?;
                ids.push(e.id);
                store
                    .commit_enrollment(&EnrollmentCommit {
                        subject: format!("CN={}", e.device_id),
                        enrollment: e,
                        not_before: now,
                        consume_token: None,
                        consume_nonce: None,
                        session_credential: None,
                        replaces: None,
                    })
                    .await?;
            }
        });
    }
    let mut ids = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        ids.extend(r??);
    }
    ids.sort_unstable_by_key(|id| id.to_string());
    Ok(ids)
}

/// The SQLite file's bytes after folding the WAL into it (the WAL is bounded by the
/// autocheckpoint, whatever the data's size).
async fn settled_bytes(dir: &Path) -> Result<u64> {
    checkpoint(&dir.join("steward.db")).await?;
    let (db, wal) = db_bytes(dir);
    Ok(db + wal)
}

/// One check-in's configuration work for `id` through the store's check-in path, the device
/// answering as a compliant Windows device would: every Apply and Remove acknowledged (200), every
/// read-back answered with the desired value. Returns the operations answered.
async fn reconcile_once(store: &dyn BenchStore, id: EnrollmentId) -> Result<usize> {
    let now = OffsetDateTime::now_utc();
    let ctx = store
        .checkin_context(EnrollmentKey::Id(id), &[], now)
        .await?
        .ok_or_else(|| BenchError::Setup(format!("enrollment {id} not in the store")))?;
    let Some(plan) = configuration::plan(id, &ctx.configuration, now) else {
        return Ok(0);
    };
    let sent: Vec<CommandId> = plan.ops.iter().map(|o| o.id).collect();
    let outcomes: Vec<Outcome> = plan
        .ops
        .iter()
        .map(|o| {
            let results = if o.kind == OpKind::Verify {
                vec![ResultItem {
                    source: o.path.clone(),
                    format: Some(o.setting.format.clone()),
                    data: Some(o.setting.value.clone()),
                }]
            } else {
                vec![]
            };
            Outcome::new(o.id, 200, results, vec![])
        })
        .collect();
    let session = uuid::Uuid::new_v4().to_string();
    let commit = configuration::absorb(
        &plan,
        &OpAnswers {
            session: &session,
            sent: &sent,
            outcomes: &outcomes,
            held: &[],
            errors: &[],
        },
        &VerifyPolicy::default(),
        now,
    );
    store
        .commit_checkin(
            id,
            &CheckinCommit {
                session: SessionRecord {
                    key: session,
                    updated_at: Some(now),
                    ..Default::default()
                },
                configuration: Some(commit),
                ..Default::default()
            },
            now,
        )
        .await?;
    Ok(outcomes.len())
}

/// Whether the device needs nothing more: its stamp is at `epoch`, nothing unsettled, no
/// read-back due; and its rows by status.
async fn device_settled(
    store: &dyn BenchStore,
    id: EnrollmentId,
    now: OffsetDateTime,
) -> Result<(bool, BTreeMap<SettingStatus, usize>)> {
    let ctx = store
        .checkin_context(EnrollmentKey::Id(id), &[], now)
        .await?
        .ok_or_else(|| BenchError::Setup(format!("enrollment {id} not in the store")))?;
    let c = &ctx.configuration;
    let stamp_settled = !c.state.needs_load(c.epoch, now);
    let mut by_status = BTreeMap::new();
    let rows = store.device_configuration(id).await?.settings;
    let rows_settled = rows.iter().all(|r| r.settled());
    for r in &rows {
        *by_status.entry(r.status).or_insert(0) += 1;
    }
    Ok((stamp_settled && rows_settled && !rows.is_empty(), by_status))
}

fn status_summary(by_status: &BTreeMap<SettingStatus, usize>) -> String {
    by_status
        .iter()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn assignment_at_scale(opts: &ProfilesOptions, docs: &[ProfileDocument], report: &mut Report) -> Result<()> {
    let n = opts.store_devices;
    let settings: usize = docs.iter().map(|d| d.settings.len()).sum();
    let server = BenchServer::start().await?;
    let dir = server._dir.path().to_owned();
    eprintln!("assignment at scale: writing {n} enrollments through the store");
    let t = Instant::now();
    let ids = populate(server.store.clone(), n).await?;
    let populate_s = t.elapsed().as_secs_f64();
    let before = settled_bytes(&dir).await?;

    let who = Principal::local_cli();
    let t = Instant::now();
    let applied = server
        .server
        .core
        .profiles
        .apply(&who, docs.to_vec(), false)
        .await
        .map_err(service)?;
    let apply = t.elapsed();
    if !applied.written {
        return Err(BenchError::Setup("the apply wrote nothing".into()));
    }
    let after = settled_bytes(&dir).await?;
    let assigned: u64 = applied.profiles.iter().map(|p| p.devices_after).max().unwrap_or(0);
    report.add(
        format!(
            "profiles: apply {} profiles ({settings} settings) assigned to all {n} devices",
            docs.len()
        ),
        apply.as_secs_f64(),
        "s",
        format!(
            "one Profiles::apply (validation, per-profile device counts, one store transaction); {assigned} \
             devices assigned per profile; the {n} enrollments were written first at {:.0}/s",
            n as f64 / populate_s
        ),
    );
    report.add(
        format!("profiles: store bytes the assignment adds ({n} devices)"),
        after.saturating_sub(before) as f64,
        "bytes",
        format!(
            "SQLite file after a checkpoint, {before} → {after} bytes: assignment is set-based, no row per \
             device until it reconciles"
        ),
    );

    // Per device, through the check-in commit path: the first check-in applies every setting (all
    // acknowledged), the second reads back the readable ones (all verified).
    let r = opts.reconcile_devices.min(ids.len());
    if r == 0 {
        server.finish().await?;
        return Ok(());
    }
    eprintln!("assignment at scale: reconciling {r} devices through the check-in commit path");
    let before = settled_bytes(&dir).await?;
    let queue = Arc::new(Mutex::new(ids[..r].to_vec()));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency.clamp(1, r) {
        let (queue, store) = (queue.clone(), server.store.clone());
        set.spawn(async move {
            let (mut ops, mut checkins) = (0usize, 0usize);
            loop {
                let next = queue.lock().map(|mut q| q.pop()).unwrap_or(None);
                let Some(id) = next else { break };
                // Apply, then read back; a third pass only if something was left (it is not).
                for _ in 0..3 {
                    let answered = reconcile_once(store.as_ref(), id).await?;
                    if answered == 0 {
                        break;
                    }
                    ops += answered;
                    checkins += 1;
                }
            }
            Ok::<_, BenchError>((ops, checkins))
        });
    }
    let (mut ops, mut checkins) = (0, 0);
    while let Some(res) = set.join_next().await {
        let (o, c) = res??;
        ops += o;
        checkins += c;
    }
    let took = t.elapsed();
    let after = settled_bytes(&dir).await?;
    let mut all = BTreeMap::new();
    let mut settled = 0;
    let now = OffsetDateTime::now_utc();
    for id in &ids[..r] {
        let (ok, by_status) = device_settled(server.store(), *id, now).await?;
        settled += usize::from(ok);
        for (s, k) in by_status {
            *all.entry(s).or_insert(0) += k;
        }
    }
    let per_device = after.saturating_sub(before) as f64 / r as f64;
    report.add(
        format!("profiles: reconcile {r} devices through the check-in commit path"),
        r as f64 / took.as_secs_f64(),
        "devices/s",
        format!(
            "{checkins} check-ins, {ops} operations answered ({:.1} ms per device, {} in flight); {settled} of \
             {r} devices settled, rows: {}",
            took.as_secs_f64() * 1e3 / r as f64,
            opts.concurrency.clamp(1, r),
            status_summary(&all)
        ),
    );
    report.add(
        format!(
            "profiles: store bytes per reconciled device ({} rows each)",
            all.values().sum::<usize>() / r
        ),
        per_device,
        "bytes",
        format!("SQLite file after a checkpoint, {before} → {after} bytes over {r} devices"),
    );
    report.add(
        format!("profiles: store bytes for {n} reconciled devices (arithmetic)"),
        per_device * n as f64 / 1e6,
        "MB",
        format!("{per_device:.0} bytes × {n}: extrapolated, not measured"),
    );
    server.finish().await?;
    Ok(())
}

// ---- 2 and 3. Over the wire ----

/// Check-in rounds (one session per device, `mode`) until every device is settled in the store;
/// returns the rounds run and the rows by status. At most `max_rounds`.
async fn settle(
    server: &BenchServer,
    mut devs: Vec<Dev>,
    concurrency: usize,
    max_rounds: usize,
) -> Result<(Vec<Dev>, usize, usize, BTreeMap<SettingStatus, usize>)> {
    let mut rounds = 0;
    loop {
        let now = OffsetDateTime::now_utc();
        let mut all = BTreeMap::new();
        let mut settled = 0;
        for d in &devs {
            let (ok, by_status) = device_settled(server.store(), d.enrollment, now).await?;
            settled += usize::from(ok);
            for (s, k) in by_status {
                *all.entry(s).or_insert(0) += k;
            }
        }
        if settled == devs.len() || rounds == max_rounds {
            return Ok((devs, rounds, settled, all));
        }
        let (back, res, _) = round(devs, ConnMode::Resumed, &Work::Steward, concurrency, &server.roots).await?;
        devs = back;
        rounds += 1;
        if let Some(e) = res.errors.first() {
            eprintln!("  settle round {rounds}: {} errors, first: {e}", res.errors.len());
        }
    }
}

async fn over_the_wire(opts: &ProfilesOptions, docs: &[ProfileDocument], report: &mut Report) -> Result<()> {
    let server = BenchServer::start_on(opts.database_url.as_deref()).await?;
    let backend = if opts.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let n = opts.devices.max(1);
    let devices = enroll_and_report(
        &server,
        n,
        opts.concurrency,
        &format!("profiles: enroll {n} devices ({backend})"),
        report,
    )
    .await?;
    let devs = prepare_devs(&server, devices, n, opts.concurrency).await?;
    let size = Size {
        sessions: opts.sessions,
        concurrency: opts.concurrency,
    };
    let settings: usize = docs.iter().map(|d| d.settings.len()).sum();

    eprintln!("idle check-in, no profile ({backend})");
    let (devs, none) = measure(devs, opts.mode, &Work::Steward, 0, server.store(), size, &server.roots).await?;
    add_measured(
        report,
        format!("profiles: idle check-in, no profile, {} ({backend})", opts.mode.label()),
        &none,
        None,
    );

    eprintln!(
        "applying {} profiles to all, then check-ins until every device is settled",
        docs.len()
    );
    let who = Principal::local_cli();
    server
        .server
        .core
        .profiles
        .apply(&who, docs.to_vec(), false)
        .await
        .map_err(service)?;
    let t = Instant::now();
    let (devs, rounds, settled, by_status) = settle(&server, devs, opts.concurrency, 10).await?;
    let settle_s = t.elapsed().as_secs_f64();
    let enrolled = devs.len();
    // Which settings the simulated device refused (a node the simulator does not model), so the
    // figure says what "settled" covers.
    let mut refused = std::collections::BTreeSet::new();
    if let Some(d) = devs.first() {
        for r in server.store().device_configuration(d.enrollment).await?.settings {
            if r.status == SettingStatus::Failed {
                refused.insert(format!("{} ({})", r.path, r.status_code.unwrap_or(0)));
            }
        }
    }
    if !refused.is_empty() {
        eprintln!(
            "  settings one device refused: {}",
            refused.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    report.add(
        format!("profiles: {enrolled} devices reconcile {settings} settings ({backend})"),
        settle_s,
        "s",
        format!(
            "{rounds} check-in rounds (new connection, TLS resumption) until {settled} of {enrolled} devices were \
             settled in the store (stamp at the epoch, nothing unsettled, no read-back due); rows: {}; {} \
             settings per device refused by the simulator",
            status_summary(&by_status),
            refused.len()
        ),
    );
    if settled != enrolled {
        eprintln!("  {} devices not settled after {rounds} rounds", enrolled - settled);
    }

    eprintln!("idle check-in, every setting settled ({backend})");
    let (devs, all) = measure(devs, opts.mode, &Work::Steward, 0, server.store(), size, &server.roots).await?;
    add_measured(
        report,
        format!(
            "profiles: idle check-in, {settings} settings settled, {} ({backend})",
            opts.mode.label()
        ),
        &all,
        None,
    );
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    report.add(
        format!("profiles: idle check-in server CPU, {settings} settings settled / none ({backend})"),
        ratio(all.server_cpu_us_per_session, none.server_cpu_us_per_session),
        "ratio",
        format!(
            "server CPU {:.0} vs {:.0} µs/session; rate {:.1} vs {:.1} sessions/s (ratio {:.2}); {:.1} vs {:.1} \
             cmds/session{}",
            all.server_cpu_us_per_session,
            none.server_cpu_us_per_session,
            all.rate,
            none.rate,
            ratio(all.rate, none.rate),
            all.commands_per_session,
            none.commands_per_session,
            if PG_DATABASE.get().is_some() {
                format!(
                    "; PostgreSQL backends {:.0} vs {:.0} µs/session",
                    all.db_cpu_us_per_session, none.db_cpu_us_per_session
                )
            } else {
                String::new()
            }
        ),
    );

    new_version(&server, devs, docs, opts.concurrency, backend, report).await?;
    server.finish().await?;
    Ok(())
}

/// A new version of one assigned profile (one setting's value changed), then every device checks
/// in once as fast as `concurrency` allows: the time from the apply until every device's row of
/// that setting holds an acknowledgement of the new version.
async fn new_version(
    server: &BenchServer,
    devs: Vec<Dev>,
    docs: &[ProfileDocument],
    concurrency: usize,
    backend: &str,
    report: &mut Report,
) -> Result<()> {
    let adapter = WindowsAdapter::default();
    // The last document (an update ring in catalog order): its first int setting moves by one.
    let doc = docs
        .last()
        .ok_or_else(|| BenchError::Setup("no profile document".into()))?;
    let mut settings = adapter
        .profile_settings(&doc.settings)
        .map_err(|e| BenchError::Setup(format!("{}: {e}", doc.name)))?;
    let changed = settings
        .iter_mut()
        .find(|s| s.format == "int")
        .ok_or_else(|| BenchError::Setup(format!("{} has no int setting to change", doc.name)))?;
    let value: i64 = changed
        .value
        .parse()
        .map_err(|_| BenchError::Setup(format!("{}: {} is not an int", doc.name, changed.value)))?;
    changed.value = (value + 1).to_string();
    let (path, digest) = (changed.path.clone(), changed.digest());
    let mut v2 = doc.clone();
    v2.settings = settings.iter().map(|s| adapter.setting_document(s)).collect();

    let n = devs.len();
    let who = Principal::local_cli();
    let t0 = Instant::now();
    let applied = server
        .server
        .core
        .profiles
        .apply(&who, vec![v2], false)
        .await
        .map_err(service)?;
    let assign = t0.elapsed();
    let version = applied.profiles.first().map_or(0, |p| p.version_after);
    let (mut devs, samples, mut errors) = storm_round(devs, t0, Duration::ZERO, concurrency, &server.roots).await?;
    let first_round = samples.iter().map(|s| s.end).max().unwrap_or_default();
    let mut per_device: Vec<Duration> = samples.iter().map(|s| s.end.saturating_sub(s.start)).collect();
    let mut rounds = 1;
    let acked = |devs: &[Dev]| {
        let ids: Vec<EnrollmentId> = devs.iter().map(|d| d.enrollment).collect();
        let path = path.clone();
        let digest = digest.clone();
        async move {
            let mut k = 0;
            for id in ids {
                let rows = server.store().device_configuration(id).await?.settings;
                k += usize::from(rows.iter().any(|r| {
                    r.path == path && r.profile_version == version && r.applied_digest.as_deref() == Some(&digest)
                }));
            }
            Ok::<_, BenchError>(k)
        }
    };
    let mut done = acked(&devs).await?;
    let mut last = first_round;
    while done < n && rounds < 5 {
        let (back, _, e) = storm_round(devs, Instant::now(), Duration::ZERO, concurrency, &server.roots).await?;
        devs = back;
        last = t0.elapsed();
        errors.extend(e);
        rounds += 1;
        done = acked(&devs).await?;
    }
    if let Some(e) = errors.first() {
        eprintln!("  new-version check-in errors ({}): {e}", errors.len());
    }
    let l = latency(&mut per_device);
    report.add(
        format!(
            "profiles: new version of {} on {n} devices, apply to 100 % acknowledged ({backend})",
            doc.name
        ),
        last.as_secs_f64(),
        "s",
        format!(
            "version {version} changes {path}; apply {:.0} ms, then every device checks in once (new connection, \
             TLS resumption, {concurrency} in flight): {done} of {n} acknowledged after {rounds} round(s), {} \
             check-in errors; per device check-in p50 {:.1} ms, p99 {:.1} ms; no rollout ring",
            assign.as_secs_f64() * 1e3,
            errors.len(),
            l.p50_ms,
            l.p99_ms
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_documents_validate_and_assign_everyone() {
        let docs = catalog_documents().unwrap();
        assert!(docs.len() >= 2);
        for d in &docs {
            assert!(d.assign.all);
            let settings = WindowsAdapter::default().profile_settings(&d.settings).unwrap();
            assert_eq!(settings.len(), d.settings.len(), "{}", d.name);
        }
    }
}
