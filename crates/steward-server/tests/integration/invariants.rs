//! The invariant checker the adversarial tests run after every hostile input and fault (issue 17;
//! the research brief's §5 ledgers L1–L4 and invariants I1–I5, docs/SECURITY.md).
//!
//! [`check`] reads the four ledgers (issued certificates, enrollments, commands with their results,
//! the device and audit events) plus the configuration rows, and fails with every violation found:
//!
//! - **I1** every certificate the CA issued belongs to a committed enrollment; one that is not that
//!   enrollment's live certificate (current, or previous while a renewal settles) is revoked; no
//!   voided serial is any enrollment's certificate; no active enrollment's certificate is revoked.
//! - **I2** every command and every recorded result belongs to the enrollment that holds it, and
//!   every answer event names the command's own enrollment.
//! - **I3** no command is lost or recorded twice: a result exists for exactly the answered
//!   commands, each with exactly one answer event; a sent or answered command was sent.
//! - **I4** each enrollment has exactly one `enrolled` event; the keyed audit chain verifies and
//!   covers every audit row.
//! - **Configuration** no device setting row of an enrollment that does not exist; every row's
//!   profile version exists, or the row is being removed.
//!
//! [`unauthenticated_routes_refused`] is **I5**: every route of the API's permission table and the
//! console's router, probed without credentials over real TLS, answers non-2xx unless it is one of
//! the public device endpoints or the sign-in pages.
//!
//! [`Ledgers`] is also a snapshot: a refused input must leave it [`Ledgers::assert_unchanged`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use steward_core::*;
use steward_server::config::DatabaseUrl;

use crate::common::{TestServer, test_database};

/// One device setting row as the database holds it (read with SQL: an orphan row is exactly what
/// the store's per-enrollment readers cannot see).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingRow {
    pub enrollment_id: String,
    pub path: String,
    pub profile_id: String,
    pub profile_version: i64,
    pub status: String,
    /// Whether `profile_versions` holds (profile_id, profile_version).
    pub version_exists: bool,
    /// Whether `enrollments` holds enrollment_id.
    pub enrollment_exists: bool,
}

/// What the ledgers held when read.
#[derive(Debug, Clone)]
pub struct Ledgers {
    pub enrollments: Vec<Enrollment>,
    pub issuance: Vec<IssuanceLogEntry>,
    pub commands: Vec<(Command, Option<CommandResult>)>,
    pub events: Vec<DeviceEvent>,
    pub audit_rows: u64,
    pub settings: Vec<SettingRow>,
}

impl Ledgers {
    /// Fails unless `after` holds exactly what `self` held: a refused request changed nothing in
    /// L1–L3, the device events or the configuration rows. (Audit rows may grow: a refusal can be
    /// audited.)
    pub fn assert_unchanged(&self, after: &Ledgers, what: &str) {
        let pairs = [
            (
                "enrollments",
                format!("{:?}", self.enrollments),
                format!("{:?}", after.enrollments),
            ),
            (
                "issuance log",
                format!("{:?}", self.issuance),
                format!("{:?}", after.issuance),
            ),
            (
                "commands",
                format!("{:?}", self.commands),
                format!("{:?}", after.commands),
            ),
            (
                "device events",
                format!("{:?}", self.events),
                format!("{:?}", after.events),
            ),
            (
                "device settings",
                format!("{:?}", self.settings),
                format!("{:?}", after.settings),
            ),
        ];
        for (ledger, before, now) in pairs {
            assert_eq!(before, now, "{what} changed the {ledger}");
        }
    }
}

/// Reads the ledgers and asserts I1–I4 and the configuration invariants; returns the snapshot.
pub async fn check(t: &TestServer) -> Ledgers {
    let ledgers = read(t).await;
    let mut violations = violations(&ledgers);
    audit_chain(t, ledgers.audit_rows, &mut violations).await;
    assert!(violations.is_empty(), "invariants violated:\n{}", violations.join("\n"));
    ledgers
}

/// [`check`] and then I5 ([`unauthenticated_routes_refused`]): what every adversarial test ends
/// with.
pub async fn check_all(t: &TestServer) -> Ledgers {
    let ledgers = check(t).await;
    unauthenticated_routes_refused(t).await;
    ledgers
}

async fn read(t: &TestServer) -> Ledgers {
    let store = t.store();
    let enrollments = store.list_enrollments().await.unwrap();
    let issuance = store.issuance_log().await.unwrap();
    let mut commands = Vec::new();
    let mut events = Vec::new();
    for e in &enrollments {
        for c in store.commands_for_enrollment(e.id).await.unwrap() {
            let result = store.command_result(c.id).await.unwrap();
            commands.push((c, result));
        }
        events.extend(store.device_events_for(e.id).await.unwrap());
    }
    let mut audit_rows = 0u64;
    let mut after = None;
    loop {
        let page = store.audit_events(&AuditFilter::default(), after, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        audit_rows += page.len() as u64;
    }
    let settings = setting_rows(t).await;
    Ledgers {
        enrollments,
        issuance,
        commands,
        events,
        audit_rows,
        settings,
    }
}

const SETTING_ROWS: &str = "SELECT CAST(s.enrollment_id AS TEXT), s.path, CAST(s.profile_id AS TEXT), \
     CAST(s.profile_version AS BIGINT), s.status, \
     EXISTS (SELECT 1 FROM profile_versions v WHERE v.profile_id = s.profile_id AND v.version = s.profile_version), \
     EXISTS (SELECT 1 FROM enrollments e WHERE e.id = s.enrollment_id) \
     FROM device_settings s ORDER BY s.enrollment_id, s.path";

async fn setting_rows(t: &TestServer) -> Vec<SettingRow> {
    match t.server.config.database_url().unwrap() {
        DatabaseUrl::Sqlite(path) => tokio::task::spawn_blocking(move || {
            let db = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            let mut q = db.prepare(SETTING_ROWS).unwrap();
            q.query_map([], |r| {
                Ok(SettingRow {
                    enrollment_id: r.get(0)?,
                    path: r.get(1)?,
                    profile_id: r.get(2)?,
                    profile_version: r.get(3)?,
                    status: r.get(4)?,
                    version_exists: r.get(5)?,
                    enrollment_exists: r.get(6)?,
                })
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
        })
        .await
        .unwrap(),
        DatabaseUrl::Postgres(url) => {
            // The server's own URL (its search_path names the test's schema).
            assert!(
                test_database().is_some(),
                "a PostgreSQL store outside the test database"
            );
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
            let rows: Vec<(String, String, String, i64, String, bool, bool)> =
                sqlx::query_as(SETTING_ROWS).fetch_all(&mut c).await.unwrap();
            rows.into_iter()
                .map(
                    |(enrollment_id, path, profile_id, profile_version, status, version_exists, enrollment_exists)| {
                        SettingRow {
                            enrollment_id,
                            path,
                            profile_id,
                            profile_version,
                            status,
                            version_exists,
                            enrollment_exists,
                        }
                    },
                )
                .collect()
        }
    }
}

/// I1–I4 (less the chain) and the configuration invariants, over a snapshot.
pub fn violations(l: &Ledgers) -> Vec<String> {
    let mut v = Vec::new();
    let by_id: BTreeMap<EnrollmentId, &Enrollment> = l.enrollments.iter().map(|e| (e.id, e)).collect();
    let mut revoked: BTreeSet<&CertSerial> = BTreeSet::new();
    let mut voided: BTreeSet<&CertSerial> = BTreeSet::new();
    let mut issued: BTreeMap<&CertSerial, &IssuanceLogEntry> = BTreeMap::new();
    for entry in &l.issuance {
        match entry.event {
            IssuanceEvent::Issued => {
                if issued.insert(&entry.serial, entry).is_some() {
                    v.push(format!("I1: serial {} issued twice", entry.serial));
                }
            }
            IssuanceEvent::Void => {
                voided.insert(&entry.serial);
            }
            IssuanceEvent::Revoked => {
                revoked.insert(&entry.serial);
            }
        }
    }
    // I1: no live certificate without its enrollment.
    for (serial, entry) in &issued {
        let Some(e) = entry.enrollment_id.and_then(|id| by_id.get(&id)) else {
            if !revoked.contains(serial) {
                v.push(format!(
                    "I1: certificate {serial} is live without a committed enrollment"
                ));
            }
            continue;
        };
        let live = e.state == EnrollmentState::Active
            && (&e.cert_serial == *serial || e.previous_cert.as_ref().is_some_and(|p| &p.serial == *serial));
        if !live && !revoked.contains(serial) {
            v.push(format!(
                "I1: certificate {serial} of {} ({:?}) is neither its live certificate nor revoked",
                e.id, e.state
            ));
        }
        if voided.contains(serial) {
            v.push(format!("I1: certificate {serial} is both issued and void"));
        }
    }
    for e in &l.enrollments {
        match issued.get(&e.cert_serial) {
            None => v.push(format!(
                "I1: enrollment {} holds certificate {} the CA never issued",
                e.id, e.cert_serial
            )),
            Some(entry) => {
                if entry.enrollment_id != Some(e.id) {
                    v.push(format!(
                        "I1: certificate {} was issued to another enrollment than {}",
                        e.cert_serial, e.id
                    ));
                }
                if entry.thumbprint.as_ref() != Some(&e.cert_thumbprint) {
                    v.push(format!(
                        "I1: enrollment {} thumbprint differs from the issuance log",
                        e.id
                    ));
                }
            }
        }
        // No revoked certificate accepted: an active enrollment's certificate is never revoked.
        if e.state == EnrollmentState::Active && revoked.contains(&e.cert_serial) {
            v.push(format!(
                "I1: active enrollment {} holds revoked certificate {}",
                e.id, e.cert_serial
            ));
        }
        if voided.contains(&e.cert_serial) {
            v.push(format!(
                "I1: enrollment {} holds voided certificate {}",
                e.id, e.cert_serial
            ));
        }
    }
    // Active enrollments per DeviceID: at most one.
    let mut active: BTreeMap<&str, u32> = BTreeMap::new();
    for e in l.enrollments.iter().filter(|e| e.state == EnrollmentState::Active) {
        *active.entry(e.device_id.as_str()).or_default() += 1;
    }
    for (device, n) in active.into_iter().filter(|(_, n)| *n > 1) {
        v.push(format!("I1: device {device} has {n} active enrollments"));
    }

    // I2 / I3: commands ↔ results ↔ answer events.
    let mut answers: BTreeMap<String, Vec<&DeviceEvent>> = BTreeMap::new();
    let mut completions: BTreeMap<String, u32> = BTreeMap::new();
    for ev in &l.events {
        if !matches!(ev.kind, EventKind::CommandAcknowledged | EventKind::CommandFailed) {
            continue;
        }
        let Some(id) = ev.data.get("command_id").and_then(|c| c.as_str()) else {
            v.push(format!("I3: answer event #{} names no command", ev.seq));
            continue;
        };
        if ev.data.get("completion").is_some() {
            *completions.entry(id.to_owned()).or_default() += 1;
        } else {
            answers.entry(id.to_owned()).or_default().push(ev);
        }
    }
    let mut seen = BTreeSet::new();
    for (c, result) in &l.commands {
        let id = c.id.to_string();
        if !seen.insert(c.id) {
            v.push(format!("I3: command {id} listed twice"));
        }
        if !by_id.contains_key(&c.enrollment_id) {
            v.push(format!("I2: command {id} belongs to no enrollment"));
        }
        let answered = answers.get(&id).map(Vec::as_slice).unwrap_or_default();
        match result {
            Some(r) => {
                if r.enrollment_id != c.enrollment_id {
                    v.push(format!(
                        "I2: the result of {id} was recorded for enrollment {}",
                        r.enrollment_id
                    ));
                }
                if !matches!(
                    c.state,
                    CommandState::Accepted | CommandState::Succeeded | CommandState::Failed
                ) {
                    v.push(format!("I3: command {id} has a result but is {:?}", c.state));
                }
                if answered.len() != 1 {
                    v.push(format!(
                        "I3/I4: command {id} was answered {} times in the events",
                        answered.len()
                    ));
                }
            }
            None => {
                if matches!(
                    c.state,
                    CommandState::Succeeded | CommandState::Failed | CommandState::Accepted
                ) {
                    v.push(format!("I3: command {id} is {:?} without a recorded result", c.state));
                }
                if !answered.is_empty() {
                    v.push(format!("I3: command {id} has answer events but no result"));
                }
            }
        }
        for ev in answered {
            if ev.enrollment_id != c.enrollment_id {
                v.push(format!(
                    "I2: the answer to {id} was recorded on enrollment {}",
                    ev.enrollment_id
                ));
            }
        }
        if completions.get(&id).copied().unwrap_or(0) > 1 {
            v.push(format!("I3: command {id} completed more than once"));
        }
        let sent = c.send_count > 0;
        if matches!(
            c.state,
            CommandState::Sent | CommandState::Accepted | CommandState::Succeeded | CommandState::Failed
        ) && !sent
        {
            v.push(format!("I3: command {id} is {:?} but was never sent", c.state));
        }
    }
    for id in answers.keys() {
        if !l.commands.iter().any(|(c, _)| &c.id.to_string() == id) {
            v.push(format!("I3: an answer to {id}, a command no enrollment holds"));
        }
    }

    // I4: one `enrolled` event per enrollment.
    for e in &l.enrollments {
        let n = l
            .events
            .iter()
            .filter(|ev| ev.enrollment_id == e.id && ev.kind == EventKind::Enrolled)
            .count();
        if n != 1 {
            v.push(format!("I4: enrollment {} has {n} enrolled events", e.id));
        }
    }

    // Configuration rows.
    for s in &l.settings {
        if !s.enrollment_exists {
            v.push(format!(
                "config: setting {} of enrollment {} that does not exist",
                s.path, s.enrollment_id
            ));
        }
        if !s.version_exists && s.status != SettingStatus::Removing.as_str() {
            v.push(format!(
                "config: setting {} of {} names version {} of profile {} that does not exist (status {})",
                s.path, s.enrollment_id, s.profile_version, s.profile_id, s.status
            ));
        }
    }
    v
}

/// I4's second half: the keyed chain verifies and covers every row.
async fn audit_chain(t: &TestServer, rows: u64, v: &mut Vec<String>) {
    match t.server.core.audit.verify(Vec::new()).await.unwrap() {
        Ok(verified) => {
            if verified.count() < rows {
                v.push(format!(
                    "I4: the chain covers {} of {rows} audit rows",
                    verified.count()
                ));
            }
        }
        Err(broken) => v.push(format!("I4: audit chain broken: {broken}")),
    }
}

/// The routes that may answer without credentials: the device endpoints (discovery is anonymous by
/// design, policy and enrollment authenticate in the SOAP body, management by certificate or
/// syncml:auth-md5 inside the session), health, the OpenAPI document, the sign-in pages and the
/// stylesheet. Everything else must refuse (rule 6; Ivanti CVE-2023-35078).
pub fn public_route(method: &str, path: &str) -> bool {
    let public_paths = [
        "/",
        "/healthz",
        "/readyz",
        steward_api::OPENAPI_PATH,
        "/EnrollmentServer/Discovery.svc",
        "/EnrollmentServer/Policy.svc",
        "/EnrollmentServer/Enrollment.svc",
        "/EnrollmentServer/Auth",
        "/ManagementServer/MDM.svc",
        "/console/login",
        "/console/login/cancel",
        "/console/static/console.css",
    ];
    let _ = method;
    public_paths.contains(&path) || path == "/console/login/second-factor"
}

/// The console's router (crates/steward-console/src/lib.rs `router`), route by route with the
/// methods it serves. axum cannot list a router's routes, so this table is kept next to it; the
/// API's routes come from its permission table ([`steward_api::ROUTES`]), which its router is
/// checked against.
pub const CONSOLE_ROUTES: &[(&str, &str)] = &[
    ("GET", "/console"),
    ("GET", "/console/devices"),
    ("GET", "/console/devices/{id}"),
    ("POST", "/console/devices/{id}/actions/{action}"),
    ("GET", "/console/devices/{id}/wipe"),
    ("POST", "/console/devices/{id}/wipe"),
    ("GET", "/console/enrollment"),
    ("POST", "/console/enrollment"),
    ("GET", "/console/audit"),
    ("GET", "/console/groups"),
    ("POST", "/console/groups"),
    ("POST", "/console/groups/{id}/delete"),
    ("POST", "/console/devices/{id}/group"),
    ("GET", "/console/settings"),
    ("GET", "/console/catalog"),
    ("POST", "/console/settings/webhooks/{id}/{verb}"),
    ("GET", "/console/account"),
    ("POST", "/console/account/totp"),
    ("POST", "/console/account/totp/confirm"),
    ("POST", "/console/logout"),
];

/// Every protected route (method, concrete path) the probe sends: the API's table and the console.
pub fn protected_routes(existing_device: Option<EnrollmentId>) -> Vec<(String, String)> {
    // An id that exists (a device's enrollment) finds more code than a random one: the
    // authentication check must come before the lookup.
    let id = existing_device.map_or_else(|| uuid::Uuid::new_v4().to_string(), |e| e.to_string());
    let concrete = |p: &str| {
        p.replace("{id}", &id)
            .replace("{action}", "reboot")
            .replace("{verb}", "disable")
            .replace("{name}", "x")
    };
    let mut out: Vec<(String, String)> = steward_api::ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), concrete(r.path)))
        .chain(CONSOLE_ROUTES.iter().map(|(m, p)| ((*m).to_owned(), concrete(p))))
        .filter(|(m, p)| !public_route(m, p))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// I5: every protected route, sent without credentials (no bearer token, no session cookie, no
/// client certificate) over real TLS, answers something other than 2xx; and the answer carries no
/// device data (no DeviceID of any enrollment).
pub async fn unauthenticated_routes_refused(t: &TestServer) {
    let enrollments = t.store().list_enrollments().await.unwrap();
    let client = t.client();
    let mut failures = String::new();
    for (method, path) in protected_routes(enrollments.first().map(|e| e.id)) {
        let url = t.url(&path);
        let m = http::Method::from_bytes(method.as_bytes()).unwrap();
        let headers = [("content-type", "application/json")];
        let resp = client
            .request(m, &url, &headers, bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status;
        let body = resp.text();
        if status.is_success() {
            let _ = writeln!(failures, "{method} {path} answered {status} without authentication");
        }
        for e in &enrollments {
            if body.contains(e.device_id.as_str()) {
                let _ = writeln!(failures, "{method} {path} leaked DeviceID {}", e.device_id);
            }
        }
    }
    assert!(failures.is_empty(), "I5 violated:\n{failures}");
}

/// The checker is not hollow: a real, consistent snapshot passes, and each kind of corruption the
/// invariants name is reported under its own invariant.
#[tokio::test]
async fn the_checker_reports_each_corruption() {
    use steward_sim::session::SessionTrigger;
    let t = TestServer::start().await;
    let mut d = t.managed_device(None).await;
    let e = t.enrollment_of(&d).await;
    let get = steward_windows::OmaDmCommand::single(
        steward_windows::Verb::Get,
        steward_windows::CommandItem {
            target: "./DevDetail/SwV".into(),
            format: None,
            type_: None,
            data: None,
        },
    );
    crate::common::admin::queue_command(t.store(), &e, get, "admin", 0, None)
        .await
        .unwrap();
    d.run_session(&t.device_client(&d), SessionTrigger::Scheduled)
        .await
        .unwrap();
    let good = check(&t).await;
    assert!(
        good.commands.iter().any(|(_, r)| r.is_some()),
        "a recorded result to corrupt"
    );
    let reports = |mutate: &dyn Fn(&mut Ledgers), tag: &str| {
        let mut l = good.clone();
        mutate(&mut l);
        let v = violations(&l);
        assert!(v.iter().any(|m| m.starts_with(tag)), "{tag} not reported: {v:?}");
    };
    // I1: the active enrollment's certificate revoked; a certificate issued to no enrollment.
    reports(
        &|l| {
            let mut revoked = l.issuance[0].clone();
            revoked.event = IssuanceEvent::Revoked;
            revoked.serial = l.enrollments[0].cert_serial.clone();
            l.issuance.push(revoked);
        },
        "I1",
    );
    reports(
        &|l| {
            let mut orphan = l.issuance[0].clone();
            orphan.serial = CertSerial::new("09".repeat(16));
            orphan.enrollment_id = Some(EnrollmentId::new());
            l.issuance.push(orphan);
        },
        "I1",
    );
    // I2: a result recorded for another enrollment.
    reports(
        &|l| {
            let (_, r) = l.commands.iter_mut().find(|(_, r)| r.is_some()).unwrap();
            r.as_mut().unwrap().enrollment_id = EnrollmentId::new();
        },
        "I2",
    );
    // I3: an answer recorded twice; a result lost.
    reports(
        &|l| {
            let ev = l
                .events
                .iter()
                .find(|ev| ev.kind == EventKind::CommandAcknowledged)
                .unwrap()
                .clone();
            l.events.push(ev);
        },
        "I3",
    );
    reports(
        &|l| {
            let (_, r) = l.commands.iter_mut().find(|(_, r)| r.is_some()).unwrap();
            *r = None;
        },
        "I3",
    );
    // I4: the enrolled event missing.
    reports(&|l| l.events.retain(|ev| ev.kind != EventKind::Enrolled), "I4");
    // Configuration: a row of an enrollment that does not exist; a row of a missing version.
    let row = SettingRow {
        enrollment_id: e.id.to_string(),
        path: "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera".into(),
        profile_id: uuid::Uuid::new_v4().to_string(),
        profile_version: 1,
        status: SettingStatus::Applied.as_str().into(),
        version_exists: true,
        enrollment_exists: false,
    };
    reports(&|l| l.settings.push(row.clone()), "config");
    let missing_version = SettingRow {
        enrollment_exists: true,
        version_exists: false,
        ..row.clone()
    };
    reports(&|l| l.settings.push(missing_version.clone()), "config");
    // ... which is allowed while the row is being removed.
    let mut l = good.clone();
    l.settings.push(SettingRow {
        status: SettingStatus::Removing.as_str().into(),
        ..missing_version.clone()
    });
    assert!(violations(&l).is_empty(), "{:?}", violations(&l));
    t.server.shutdown().await;
}
