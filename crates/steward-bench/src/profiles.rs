//! `steward-bench profiles`: the desired-state configuration figures of issue 12 (docs/BENCHMARKS.md,
//! "Desired-state configuration"). Every count it prints (profiles, settings, rows per device) is
//! what the built-in catalog holds at the time of the run.
//!
//! 1. Assignment at scale: the built-in catalog's ready-to-assign profiles (the baseline areas and
//!    the update rings) applied through the `Profiles` service, assigned to every device of a store
//!    holding `store_devices` enrollments: the time of that one apply and the store bytes it adds.
//!    Assignment is set-based (a profile row, its version, its assignment, the epoch moved), so the
//!    per-device rows appear only as devices reconcile: that cost is measured apart, by reconciling
//!    `reconcile_devices` of them through the real check-in commit path (the store's
//!    `checkin_context`, core `plan`/`absorb`, `commit_checkin`), every operation acknowledged and
//!    every readable setting read back with its value, and extrapolated by arithmetic.
//! 2. Idle check-in with every setting settled against none: the devices enrolled over the wire,
//!    half of them in a group the profiles are assigned to, measured alternately (bare,
//!    configured, configured, bare) after every device settled (checked in the store: every row
//!    settled, every stamp at the current epoch with nothing unsettled). On PostgreSQL each
//!    measurement also prints the database's own counters per session (`pgstats.rs`).
//! 3. A new version of one assigned profile rolled out through a pilot ring of the configured
//!    devices: the time from the apply until the rollout's numbers show the ring 100 %
//!    acknowledged, over the wire.
//! 4. The same through a pilot ring of `ring_devices` devices (10,000 by default), through the
//!    store's check-in path: the time to 100 % acknowledged and the check-in rate.
//!
//! As everywhere in this crate, nothing here is asserted against a threshold.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use steward_core::configuration::{
    self, AssignDocument, OpAnswers, OpKind, ProfileDocument, SettingStatus, VerifyPolicy,
};
use steward_core::rollout::{self, RingSpec, RingStats, RolloutSpec};
use steward_core::service::ServiceError;
use steward_core::service::profiles::PROFILE_KIND;

use super::*;
use crate::pgstats::PgCounters;

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
    /// Run the wire and ring figures on PostgreSQL (as `checkins --database-url`). The
    /// assignment figure always measures a SQLite file.
    pub database_url: Option<String>,
    /// Devices in the pilot ring of the store-path rollout figure (0 skips it).
    pub ring_devices: usize,
    /// The ring figure's devices get only the rolled-out profile instead of the whole catalog.
    pub ring_one_profile: bool,
    /// On PostgreSQL, `VACUUM (ANALYZE)` the run's database before every idle measurement (what
    /// autovacuum does on a server that has it on; the CI cluster here has it off).
    pub vacuum: bool,
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
            ring_devices: 10_000,
            ring_one_profile: false,
            vacuum: false,
        }
    }
}

/// The platform adapters as the server composes them (compose.rs wires the Windows adapter in,
/// with the default provider id): the bench reads and writes profile settings through the same
/// `PlatformAdapter` the server uses, without naming the Windows adapter itself.
fn windows_platforms() -> steward_core::Platforms {
    steward_server::compose::platforms(&steward_server::Config::default().enrollment.provider_id)
}

fn windows_of(platforms: &steward_core::Platforms) -> Result<&dyn steward_core::PlatformAdapter> {
    platforms
        .get(steward_core::Platform::Windows)
        .map_err(|e| BenchError::Setup(e.to_string()))
}

/// The catalog's entries that assign as they are (baseline areas and update rings; the kinds need
/// parameters), as profile documents assigned to every device, in catalog order.
pub fn catalog_documents() -> Result<Vec<ProfileDocument>> {
    let platforms = windows_platforms();
    let adapter = windows_of(&platforms)?;
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
    if opts.ring_devices > 0 {
        ring_at_scale(opts, &docs, &mut report).await?;
    }
    Ok(report)
}

// ---- 1. Assignment at scale ----

/// Writes `n` synthetic enrollments (their enrollment commit, as the server writes it), members
/// of `group` if given, 64 in flight so the store's writer stays busy; returns their ids.
async fn populate(store: Arc<dyn BenchStore>, n: usize, group: Option<GroupId>) -> Result<Vec<EnrollmentId>> {
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
                let mut e = synthetic_enrollment(i, now)?;
                e.group_id = group;
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
/// read-back due, and (when `expect_rows`) it has rows, all settled; and its rows by status.
async fn device_settled(
    store: &dyn BenchStore,
    id: EnrollmentId,
    now: OffsetDateTime,
    expect_rows: bool,
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
    Ok((
        stamp_settled && rows_settled && rows.is_empty() != expect_rows,
        by_status,
    ))
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
    let ids = populate(server.store.clone(), n, None).await?;
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
        let (ok, by_status) = device_settled(server.store(), *id, now, true).await?;
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

/// The static group whose devices get the profiles in the wire figures; the other devices get none.
const CONFIGURED_GROUP: &str = "bench-configured";

/// `docs` assigned to the members of the group `group` instead of to every device.
fn assigned_to(docs: &[ProfileDocument], group: &str) -> Vec<ProfileDocument> {
    docs.iter()
        .cloned()
        .map(|mut d| {
            d.assign = AssignDocument {
                groups: vec![group.to_owned()],
                ..Default::default()
            };
            d
        })
        .collect()
}

/// A static group named `name`, written through the store.
async fn create_group(store: &dyn BenchStore, name: &str) -> Result<Group> {
    let g =
        Group::named(name, OffsetDateTime::now_utc()).map_err(|e| BenchError::Setup(format!("group {name}: {e}")))?;
    store.create_group(&g).await?;
    Ok(g)
}

/// Check-in rounds (one session per device, `mode`) until every device is settled in the store
/// (those of `configured` with rows, the others with their stamp alone); returns the rounds run and
/// the rows by status. At most `max_rounds`.
async fn settle(
    server: &BenchServer,
    mut devs: Vec<Dev>,
    configured: &HashSet<EnrollmentId>,
    concurrency: usize,
    max_rounds: usize,
) -> Result<(Vec<Dev>, usize, usize, BTreeMap<SettingStatus, usize>)> {
    let mut rounds = 0;
    loop {
        let now = OffsetDateTime::now_utc();
        let mut all = BTreeMap::new();
        let mut settled = 0;
        for d in &devs {
            let expect_rows = configured.contains(&d.enrollment);
            let (ok, by_status) = device_settled(server.store(), d.enrollment, now, expect_rows).await?;
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

/// One idle-check-in measurement of `devs`, with PostgreSQL's counters of the run's database
/// around it when the server runs on PostgreSQL (what the sessions did in the database, per
/// session: see `pgstats.rs`).
async fn measure_idle(
    server: &BenchServer,
    devs: Vec<Dev>,
    mode: ConnMode,
    size: Size,
    vacuum: bool,
) -> Result<(Vec<Dev>, Measured, Option<String>)> {
    let url = server.pg.as_ref().map(|p| p.url.clone());
    if vacuum && let Some(u) = &url {
        crate::pgstats::vacuum_analyze(u).await?;
    }
    let before = match &url {
        Some(u) => Some(PgCounters::read(u).await?),
        None => None,
    };
    let (devs, m) = measure(devs, mode, &Work::Steward, 0, server.store(), size, &server.roots).await?;
    let stats = match (&url, before) {
        (Some(u), Some(b)) => Some(PgCounters::read(u).await?.per_session_since(&b, m.sessions)),
        _ => None,
    };
    Ok((devs, m, stats))
}

/// Which half of the devices an idle measurement runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Configured,
    Bare,
}

/// Per-session averages over several measurements, weighted by their sessions.
#[derive(Debug, Default, Clone, Copy)]
struct Pooled {
    sessions: usize,
    server_us: f64,
    db_us: f64,
    wall_s: f64,
}

impl Pooled {
    fn add(&mut self, m: &Measured) {
        let n = m.sessions as f64;
        self.sessions += m.sessions;
        self.server_us += m.server_cpu_us_per_session * n;
        self.db_us += m.db_cpu_us_per_session * n;
        if m.rate > 0.0 {
            self.wall_s += n / m.rate;
        }
    }
    fn server_per_session(&self) -> f64 {
        self.server_us / self.sessions.max(1) as f64
    }
    fn db_per_session(&self) -> f64 {
        self.db_us / self.sessions.max(1) as f64
    }
    fn rate(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.sessions as f64 / self.wall_s
        } else {
            0.0
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
    let n = opts.devices.max(2);
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

    eprintln!("idle check-in, no profile exists yet ({backend})");
    let (devs, before, stats) = measure_idle(&server, devs, opts.mode, size, opts.vacuum).await?;
    add_measured(
        report,
        format!(
            "profiles: idle check-in, no profile exists, {} ({backend})",
            opts.mode.label()
        ),
        &before,
        None,
    );
    if let Some(s) = stats {
        eprintln!("  PostgreSQL {s}");
    }

    // Half the devices (the first ⌈n/2⌉) get every profile through a group and the others none, so
    // that both halves are measured in the same run at the same time, against the same tables: on
    // PostgreSQL without autovacuum (this machine's cluster) every idle check-in leaves dead row
    // versions behind, so a measurement made later costs more whatever it measures.
    let group = create_group(server.store(), CONFIGURED_GROUP).await?;
    let half = n.div_ceil(2);
    let mut configured_ids = HashSet::new();
    for d in devs.iter().take(half) {
        server
            .store()
            .set_enrollment_group(d.enrollment, Some(group.id))
            .await?;
        configured_ids.insert(d.enrollment);
    }
    let docs = assigned_to(docs, CONFIGURED_GROUP);
    eprintln!(
        "applying {} profiles ({settings} settings) to the {half} devices of {CONFIGURED_GROUP}, then check-ins until \
         every device is settled",
        docs.len()
    );
    let who = Principal::local_cli();
    server
        .server
        .core
        .profiles
        .apply(&who, docs.clone(), false)
        .await
        .map_err(service)?;
    let t = Instant::now();
    let (devs, rounds, settled, by_status) = settle(&server, devs, &configured_ids, opts.concurrency, 10).await?;
    let settle_s = t.elapsed().as_secs_f64();
    let enrolled = devs.len();
    // Which settings the simulated device refused (a node the simulator does not model), so the
    // figure says what "settled" covers.
    let mut refused = BTreeSet::new();
    let mut rows_per_device = 0;
    if let Some(d) = devs.iter().find(|d| configured_ids.contains(&d.enrollment)) {
        let rows = server.store().device_configuration(d.enrollment).await?.settings;
        rows_per_device = rows.len();
        for r in rows {
            if r.status == SettingStatus::Failed {
                refused.insert((r.path, r.status_code.unwrap_or(0)));
            }
        }
    }
    if !refused.is_empty() {
        eprintln!(
            "  settings one device refused: {}",
            refused
                .iter()
                .map(|(p, c)| format!("{p} ({c})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    report.add(
        format!("profiles: {half} of {enrolled} devices reconcile {settings} settings ({backend})"),
        settle_s,
        "s",
        format!(
            "{rounds} check-in rounds (new connection, TLS resumption) until {settled} of {enrolled} devices were \
             settled in the store (stamp at the epoch, nothing unsettled, no read-back due); {rows_per_device} rows \
             per configured device; rows: {}; {} settings per device refused by the simulator",
            status_summary(&by_status),
            refused.len()
        ),
    );
    if settled != enrolled {
        eprintln!("  {} devices not settled after {rounds} rounds", enrolled - settled);
    }

    // Both halves, in the order bare, configured, configured, bare (a drift over the run weighs
    // on both alike), each measurement half the sessions.
    let (mut configured, mut bare): (Vec<Dev>, Vec<Dev>) =
        devs.into_iter().partition(|d| configured_ids.contains(&d.enrollment));
    let half_size = Size {
        sessions: (opts.sessions / 2).max(1),
        concurrency: opts.concurrency,
    };
    let (mut pooled_configured, mut pooled_bare) = (Pooled::default(), Pooled::default());
    let mut cpu_in_order = Vec::new();
    for (i, which) in [Half::Bare, Half::Configured, Half::Configured, Half::Bare]
        .into_iter()
        .enumerate()
    {
        let devs = match which {
            Half::Configured => std::mem::take(&mut configured),
            Half::Bare => std::mem::take(&mut bare),
        };
        let label = match which {
            Half::Configured => format!("{rows_per_device} settings settled"),
            Half::Bare => "no setting".to_owned(),
        };
        eprintln!("idle check-in ({}), {label} ({backend})", i + 1);
        let (back, m, stats) = measure_idle(&server, devs, opts.mode, half_size, opts.vacuum).await?;
        add_measured(
            report,
            format!(
                "profiles: idle check-in ({}), {label}, {} ({backend})",
                i + 1,
                opts.mode.label()
            ),
            &m,
            None,
        );
        if let Some(s) = stats {
            eprintln!("  PostgreSQL {s}");
        }
        match which {
            Half::Configured => {
                pooled_configured.add(&m);
                configured = back;
            }
            Half::Bare => {
                pooled_bare.add(&m);
                bare = back;
            }
        }
        cpu_in_order.push(m.server_cpu_us_per_session);
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    report.add(
        format!("profiles: idle check-in server CPU, {rows_per_device} settings settled / none ({backend})"),
        ratio(pooled_configured.server_per_session(), pooled_bare.server_per_session()),
        "ratio",
        format!(
            "server CPU {:.0} vs {:.0} µs/session (measurements in order: {}); rate {:.1} vs {:.1} sessions/s; \
             before any profile existed {:.0} µs/session{}",
            pooled_configured.server_per_session(),
            pooled_bare.server_per_session(),
            cpu_in_order
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            pooled_configured.rate(),
            pooled_bare.rate(),
            before.server_cpu_us_per_session,
            if PG_DATABASE.get().is_some() {
                format!(
                    "; PostgreSQL backends {:.0} vs {:.0} µs/session (ratio {:.2})",
                    pooled_configured.db_per_session(),
                    pooled_bare.db_per_session(),
                    ratio(pooled_configured.db_per_session(), pooled_bare.db_per_session())
                )
            } else {
                String::new()
            }
        ),
    );

    let refused_paths: BTreeSet<String> = refused.into_iter().map(|(p, _)| p).collect();
    let rolled = rolled_document(&docs, &refused_paths)?;
    new_version_in_ring(
        &server,
        configured,
        rolled,
        CONFIGURED_GROUP,
        opts.concurrency,
        backend,
        report,
    )
    .await?;
    server.finish().await?;
    Ok(())
}

/// The profile a new version rolls out of: the last of `docs` with an int setting that no other
/// document sets (so the new value is the device's desired value, not lost to the conflict rule)
/// and none of whose nodes the device refused (so a device can acknowledge all of it).
fn rolled_document<'a>(docs: &'a [ProfileDocument], refused: &BTreeSet<String>) -> Result<&'a ProfileDocument> {
    let platforms = windows_platforms();
    let adapter = windows_of(&platforms)?;
    let paths: Vec<BTreeSet<String>> = docs
        .iter()
        .map(|d| {
            adapter
                .profile_settings(&d.settings)
                .map(|s| s.into_iter().map(|s| s.path).collect())
                .map_err(|e| BenchError::Setup(format!("{}: {e}", d.name)))
        })
        .collect::<Result<_>>()?;
    for (i, d) in docs.iter().enumerate().rev() {
        let own = &paths[i];
        let shared = paths
            .iter()
            .enumerate()
            .any(|(j, other)| j != i && !other.is_disjoint(own));
        let has_int = adapter
            .profile_settings(&d.settings)
            .map_err(|e| BenchError::Setup(format!("{}: {e}", d.name)))?
            .iter()
            .any(|s| s.format == "int" && s.value.parse::<i64>().is_ok());
        if !shared && has_int && own.is_disjoint(refused) {
            return Ok(d);
        }
    }
    Err(BenchError::Setup(
        "no catalog profile has an int setting of its own that the device accepts".into(),
    ))
}

/// `doc`'s next version: its first int setting's value moved by one. Returns the document with
/// its rollout through a pilot ring of `group` (held at that ring: the soak is an hour and nothing
/// advances it), and the changed setting's path.
fn next_version_in_ring(doc: &ProfileDocument, group: &str) -> Result<(ProfileDocument, String)> {
    let platforms = windows_platforms();
    let adapter = windows_of(&platforms)?;
    let mut settings = adapter
        .profile_settings(&doc.settings)
        .map_err(|e| BenchError::Setup(format!("{}: {e}", doc.name)))?;
    let changed = settings
        .iter_mut()
        .find(|s| s.format == "int" && s.value.parse::<i64>().is_ok())
        .ok_or_else(|| BenchError::Setup(format!("{} has no int setting to change", doc.name)))?;
    let value: i64 = changed
        .value
        .parse()
        .map_err(|_| BenchError::Setup(format!("{}: {} is not an int", doc.name, changed.value)))?;
    changed.value = (value + 1).to_string();
    let path = changed.path.clone();
    let mut v2 = doc.clone();
    v2.settings = settings.iter().map(|s| adapter.setting_document(s)).collect();
    v2.rollout = Some(RolloutSpec {
        rings: vec![RingSpec {
            pilot: Some(group.to_owned()),
            ..Default::default()
        }],
        soak_seconds: rollout::DEFAULT_SOAK_SECONDS,
        success_ratio: rollout::DEFAULT_SUCCESS_RATIO,
        failure_threshold: rollout::DEFAULT_FAILURE_THRESHOLD,
        auto_advance: false,
    });
    Ok((v2, path))
}

/// The first ring's numbers of the profile's rollout, as `steward rollout status` shows them.
async fn ring_progress(server: &BenchServer, profile: &str) -> Result<(u32, RingStats)> {
    let status = server
        .server
        .core
        .rollouts
        .status(&Principal::local_cli(), profile)
        .await
        .map_err(service)?;
    let first = status
        .rings
        .first()
        .copied()
        .ok_or_else(|| BenchError::Setup(format!("the rollout of {profile} has no ring")))?;
    Ok((status.rollout.to_version, first))
}

/// A new version of `doc` rolled out through a pilot ring of the group `group` (whose members are
/// `devs`), then every device checks in once as fast as `concurrency` allows, again while the ring
/// is not 100 % acknowledged: the time from the apply until the rollout's own numbers
/// (`Rollouts::status`) show every device of the ring acknowledged.
async fn new_version_in_ring(
    server: &BenchServer,
    devs: Vec<Dev>,
    doc: &ProfileDocument,
    group: &str,
    concurrency: usize,
    backend: &str,
    report: &mut Report,
) -> Result<()> {
    let (v2, path) = next_version_in_ring(doc, group)?;
    let n = devs.len();
    let who = Principal::local_cli();
    let t0 = Instant::now();
    server
        .server
        .core
        .profiles
        .apply(&who, vec![v2], false)
        .await
        .map_err(service)?;
    let assign = t0.elapsed();
    let (mut devs, samples, mut errors) = storm_round(devs, t0, Duration::ZERO, concurrency, &server.roots).await?;
    let mut per_device: Vec<Duration> = samples.iter().map(|s| s.end.saturating_sub(s.start)).collect();
    let mut checkins = samples.len();
    let mut rounds = 1;
    let (mut version, mut ring) = ring_progress(server, &doc.name).await?;
    let mut last = t0.elapsed();
    while ring.acknowledged < ring.devices && rounds < 5 {
        let (back, s, e) = storm_round(devs, Instant::now(), Duration::ZERO, concurrency, &server.roots).await?;
        devs = back;
        checkins += s.len();
        errors.extend(e);
        rounds += 1;
        (version, ring) = ring_progress(server, &doc.name).await?;
        last = t0.elapsed();
    }
    drop(devs);
    if let Some(e) = errors.first() {
        eprintln!("  new-version check-in errors ({}): {e}", errors.len());
    }
    let l = latency(&mut per_device);
    report.add(
        format!(
            "profiles: rollout of {} through a pilot ring of {n} devices, apply to 100 % acknowledged ({backend})",
            doc.name
        ),
        last.as_secs_f64(),
        "s",
        format!(
            "version {version} changes {path}; apply {:.0} ms, then every device checks in (new connection, TLS \
             resumption, {concurrency} in flight): ring 1 {} of {} acknowledged, {} failed after {rounds} round(s), \
             {checkins} check-ins ({:.1}/s), {} check-in errors; per device check-in p50 {:.1} ms, p99 {:.1} ms",
            assign.as_secs_f64() * 1e3,
            ring.acknowledged,
            ring.devices,
            ring.failed,
            checkins as f64 / last.as_secs_f64(),
            errors.len(),
            l.p50_ms,
            l.p99_ms
        ),
    );
    Ok(())
}

// ---- 4. A rollout ring of many devices, through the store's check-in path ----

/// The static group of the ring figure's devices.
const RING_GROUP: &str = "bench-ring";

/// One check-in per device of `ids` through the store's check-in path (`reconcile_once`),
/// `concurrency` at a time; returns the check-ins made and the operations answered.
async fn checkin_pass(store: Arc<dyn BenchStore>, ids: &[EnrollmentId], concurrency: usize) -> Result<(usize, usize)> {
    let queue = Arc::new(Mutex::new(ids.to_vec()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, ids.len().max(1)) {
        let (queue, store) = (queue.clone(), store.clone());
        set.spawn(async move {
            let (mut checkins, mut ops) = (0usize, 0usize);
            loop {
                let next = queue.lock().map(|mut q| q.pop()).unwrap_or(None);
                let Some(id) = next else { break };
                ops += reconcile_once(store.as_ref(), id).await?;
                checkins += 1;
            }
            Ok::<_, BenchError>((checkins, ops))
        });
    }
    let (mut checkins, mut ops) = (0, 0);
    while let Some(res) = set.join_next().await {
        let (c, o) = res??;
        checkins += c;
        ops += o;
    }
    Ok((checkins, ops))
}

/// `ring_devices` enrollments, all in one static group, get the catalog's profiles (or only the
/// rolled-out one) and reconcile them through the store's check-in path; then a new version of one
/// profile rolls out through a pilot ring of that group, and every device checks in (store path,
/// `concurrency` at a time) until the rollout's numbers show the ring 100 % acknowledged. Over the
/// wire this many devices would first have to enroll and warm up over TLS, which takes longer than
/// the figure on this machine; what the store path leaves out is the SyncML parsing and rendering
/// and the TLS, which the wire figure (3) covers for its devices.
async fn ring_at_scale(opts: &ProfilesOptions, docs: &[ProfileDocument], report: &mut Report) -> Result<()> {
    let n = opts.ring_devices;
    let server = BenchServer::start_on(opts.database_url.as_deref()).await?;
    let backend = if opts.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let group = create_group(server.store(), RING_GROUP).await?;
    eprintln!("rollout ring: writing {n} enrollments in group {RING_GROUP} through the store ({backend})");
    let t = Instant::now();
    let ids = populate(server.store.clone(), n, Some(group.id)).await?;
    let populate_s = t.elapsed().as_secs_f64();
    let rolled = rolled_document(docs, &BTreeSet::new())?.clone();
    let assigned: Vec<ProfileDocument> = if opts.ring_one_profile {
        vec![rolled.clone()]
    } else {
        docs.to_vec()
    };
    let settings: usize = assigned.iter().map(|d| d.settings.len()).sum();
    let who = Principal::local_cli();
    server
        .server
        .core
        .profiles
        .apply(&who, assigned.clone(), false)
        .await
        .map_err(service)?;
    // Version 1 everywhere: applied (first check-in), then read back (second).
    eprintln!(
        "rollout ring: {n} devices reconcile {} profiles ({settings} settings) through the store's check-in path",
        assigned.len()
    );
    let t = Instant::now();
    let mut setup_checkins = 0;
    for _ in 0..2 {
        setup_checkins += checkin_pass(server.store.clone(), &ids, opts.concurrency).await?.0;
    }
    let setup_s = t.elapsed().as_secs_f64();
    let first = *ids
        .first()
        .ok_or_else(|| BenchError::Setup("the ring has no device".into()))?;
    let rows = server.store().device_configuration(first).await?.settings.len();

    let (v2, path) = next_version_in_ring(&rolled, RING_GROUP)?;
    eprintln!(
        "rollout ring: version 2 of {} through a pilot ring of {n} devices",
        rolled.name
    );
    let t0 = Instant::now();
    server
        .server
        .core
        .profiles
        .apply(&who, vec![v2], false)
        .await
        .map_err(service)?;
    let apply = t0.elapsed();
    let (mut passes, mut checkins, mut ops) = (0, 0, 0);
    let mut checking = Duration::ZERO;
    let mut status_time = Duration::ZERO;
    let mut progress = Vec::new();
    let (version, ring) = loop {
        let t = Instant::now();
        let (c, o) = checkin_pass(server.store.clone(), &ids, opts.concurrency).await?;
        checking += t.elapsed();
        passes += 1;
        checkins += c;
        ops += o;
        let t = Instant::now();
        let (version, ring) = ring_progress(&server, &rolled.name).await?;
        status_time += t.elapsed();
        progress.push(format!(
            "{} of {} at {:.1} s",
            ring.acknowledged,
            ring.devices,
            t0.elapsed().as_secs_f64()
        ));
        if ring.acknowledged >= ring.devices || passes == 5 {
            break (version, ring);
        }
    };
    let took = t0.elapsed();
    report.add(
        format!(
            "profiles: rollout of {} through a pilot ring of {n} devices, apply to 100 % acknowledged (store path, \
             {backend})",
            rolled.name
        ),
        took.as_secs_f64(),
        "s",
        format!(
            "version {version} changes {path}; {rows} rows per device ({} profiles, {settings} settings assigned); \
             apply {:.0} ms; ring 1: {} of {} acknowledged, {} failed after {passes} pass(es) of one check-in per \
             device ({}; {} in flight); rollout status {:.0} ms in all; the {n} enrollments were written at {:.0}/s \
             and reconciled version 1 in {setup_checkins} check-ins at {:.0}/s",
            assigned.len(),
            apply.as_secs_f64() * 1e3,
            ring.acknowledged,
            ring.devices,
            ring.failed,
            progress.join(", "),
            opts.concurrency,
            status_time.as_secs_f64() * 1e3,
            n as f64 / populate_s,
            setup_checkins as f64 / setup_s,
        ),
    );
    report.add(
        format!("profiles: rollout ring check-in rate (store path, {backend})"),
        checkins as f64 / checking.as_secs_f64(),
        "check-ins/s",
        format!(
            "{checkins} check-ins through checkin_context, plan, absorb and commit_checkin in {:.1} s, {ops} \
             operations answered",
            checking.as_secs_f64()
        ),
    );
    server.finish().await?;
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
            let settings = windows_of(&windows_platforms())
                .unwrap()
                .profile_settings(&d.settings)
                .unwrap();
            assert_eq!(settings.len(), d.settings.len(), "{}", d.name);
        }
    }
}
