//! The admin REST API: the route × role authorization matrix (generated from the router), the
//! OpenAPI document (snapshot + structure), device search and pagination, token and user handling,
//! group scope, the audit trail, and one end-to-end wipe over real TLS with a simulated device.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use steward_api::{self as api, ROUTES};
use steward_core::*;
use steward_server::{bootstrap, compose};
use time::{Duration, OffsetDateTime};
use tower::ServiceExt;

use crate::common::{ADMIN_TOKEN, TestServer, TestStore, config_for, open_test_store};

/// The server's router in-process (no TLS): fast enough to run every route × every role.
struct App {
    router: axum::Router,
    store: Arc<dyn TestStore>,
    audit_key: Arc<AuditChainKey>,
    _dir: tempfile::TempDir,
}

impl App {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(dir.path(), 8443);
        let store = open_test_store(&config).await;
        let pki_config = config.clone();
        let (pki, _) = tokio::task::spawn_blocking(move || bootstrap::load_pki(&pki_config))
            .await
            .unwrap()
            .unwrap();
        bootstrap::ensure_admin_token(&config, store.as_ref()).await.unwrap();
        let pki = Arc::new(pki);
        let core = compose::core(store.clone(), pki.data_key.clone(), pki.audit.chain.clone());
        let router = compose::router(&config, &core, &pki);
        Self {
            router,
            store,
            audit_key: pki.audit.chain.clone(),
            _dir: dir,
        }
    }

    fn store(&self) -> &dyn TestStore {
        self.store.as_ref()
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, v) = self.call_full(method, path, token, body).await;
        (status, v)
    }

    async fn call_full(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, headers, v)
    }

    /// A named API token with this role (and optional group scope), straight into the store.
    async fn token(&self, role: Role, group: Option<GroupId>, expires_in: Option<Duration>) -> (ApiTokenId, String) {
        let secret = TokenKind::Admin.generate().unwrap();
        let now = OffsetDateTime::now_utc();
        let t = self
            .store()
            .create_api_token(&NewApiToken {
                id: ApiTokenId::new(),
                name: format!("{role}-{}", uuid::Uuid::new_v4()),
                token_hash: TokenHash::of(secret.expose()),
                role,
                group_id: group,
                created_at: now,
                expires_at: expires_in.map(|d| now + d),
                created_by: "test".into(),
            })
            .await
            .unwrap();
        (t.id, secret.expose().to_owned())
    }

    async fn group(&self, name: &str) -> GroupId {
        let now = OffsetDateTime::now_utc();
        self.store()
            .create_enrollment_token(&NewEnrollmentToken {
                id: EnrollmentTokenId::new(),
                token_hash: TokenHash::of(&format!("stw_enr_{name}")),
                description: None,
                max_uses: None,
                expires_at: Some(now + Duration::hours(1)),
                group: Some(name.into()),
                created_at: now,
            })
            .await
            .unwrap();
        self.store().group_by_name(name).await.unwrap().unwrap().id
    }

    /// An active enrollment committed straight into the store (no simulator needed).
    async fn device(
        &self,
        device_id: &str,
        name: &str,
        group: Option<GroupId>,
        enrolled_at: OffsetDateTime,
    ) -> Enrollment {
        let e = Enrollment {
            id: EnrollmentId::new(),
            platform: Platform::Windows,
            device_id: DeviceId::parse(device_id).unwrap(),
            hardware_id: None,
            device_name: Some(name.into()),
            os_version: Some("10.0.26100.2".into()),
            os_edition: Some("72".into()),
            enrollment_type: EnrollmentType::Full,
            user_email: Some(format!("{}@example.com", name.to_lowercase())),
            auth_method: AuthMethod::UserPassword,
            enrollment_token_id: None,
            group_id: group,
            cert_serial: CertSerial::new(format!("SERIAL{device_id}")),
            cert_thumbprint: Thumbprint::of_der(format!("THUMB{device_id}").as_bytes()),
            cert_not_after: enrolled_at + Duration::days(365),
            previous_cert: None,
            state: EnrollmentState::Active,
            enrolled_at,
            updated_at: enrolled_at,
            last_seen_at: None,
        };
        self.store()
            .commit_enrollment(&EnrollmentCommit {
                subject: format!("CN={device_id}"),
                not_before: enrolled_at,
                enrollment: e.clone(),
                consume_token: None,
                consume_nonce: None,
                session_credential: None,
                replaces: None,
            })
            .await
            .unwrap();
        e
    }
}

fn whole_micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000).unwrap()
}

/// Who may call each route, written out by hand so that changing the permission table needs a
/// matching change here. Letters: A admin, O operator, H helpdesk, U auditor; `scoped` says whether a
/// group-scoped token of an allowed role may use it.
const EXPECTED: &[(&str, &str, &str, bool)] = &[
    ("GET", "/api/v1/devices", "AOHU", true),
    ("GET", "/api/v1/devices/{id}", "AOHU", true),
    ("GET", "/api/v1/devices/{id}/commands", "AOHU", true),
    ("POST", "/api/v1/devices/{id}/commands", "AO", true),
    ("POST", "/api/v1/devices/{id}/actions/wipe", "AO", true),
    ("POST", "/api/v1/devices/{id}/actions/reboot", "AOH", true),
    ("POST", "/api/v1/devices/{id}/actions/lock", "AOH", true),
    ("POST", "/api/v1/devices/{id}/actions/sync", "AOH", true),
    ("POST", "/api/v1/devices/{id}/actions/unenroll", "AO", true),
    ("PUT", "/api/v1/devices/{id}/group", "AO", false),
    ("PUT", "/api/v1/devices/{id}/tags", "AO", false),
    ("POST", "/api/v1/commands/{id}/cancel", "AO", true),
    ("GET", "/api/v1/enrollment-tokens", "AOHU", false),
    ("POST", "/api/v1/enrollment-tokens", "A", false),
    ("DELETE", "/api/v1/enrollment-tokens/{id}", "A", false),
    ("GET", "/api/v1/api-tokens", "AU", false),
    ("POST", "/api/v1/api-tokens", "A", false),
    ("DELETE", "/api/v1/api-tokens/{id}", "A", false),
    ("GET", "/api/v1/users", "AOHU", false),
    ("POST", "/api/v1/users", "A", false),
    ("DELETE", "/api/v1/users/{id}/totp", "A", false),
    ("PATCH", "/api/v1/users/{id}", "A", false),
    ("GET", "/api/v1/groups", "AOHU", true),
    ("POST", "/api/v1/groups", "AO", false),
    ("DELETE", "/api/v1/groups/{id}", "AO", false),
    ("PUT", "/api/v1/groups/{id}/rule", "AO", false),
    ("GET", "/api/v1/groups/{id}/members", "AOHU", true),
    ("GET", "/api/v1/audit-events", "AU", false),
    ("GET", "/api/v1/server", "AOHU", true),
    ("GET", "/api/v1/catalog", "AOHU", true),
    ("GET", "/api/v1/catalog/{name}", "AOHU", true),
    ("POST", "/api/v1/catalog/{name}/assign", "AO", false),
    ("GET", "/api/v1/profiles", "AOHU", false),
    ("POST", "/api/v1/profiles/apply", "AO", false),
    ("GET", "/api/v1/profiles/export", "AOHU", false),
    ("GET", "/api/v1/profiles/{name}", "AOHU", false),
    ("DELETE", "/api/v1/profiles/{name}", "AO", false),
    ("GET", "/api/v1/profiles/{name}/rollout", "AOHU", false),
    ("POST", "/api/v1/profiles/{name}/rollout", "AO", false),
    ("POST", "/api/v1/profiles/{name}/rollout/actions/advance", "AO", false),
    ("POST", "/api/v1/profiles/{name}/rollout/actions/pause", "AO", false),
    ("POST", "/api/v1/profiles/{name}/rollout/actions/resume", "AO", false),
    ("POST", "/api/v1/profiles/{name}/rollout/actions/rollback", "AO", false),
    ("GET", "/api/v1/devices/{id}/settings", "AOHU", true),
    ("POST", "/api/v1/devices/{id}/actions/verify", "AOH", true),
    ("POST", "/api/v1/groups/{id}/actions/verify", "AOH", true),
    ("POST", "/api/v1/profiles/{name}/actions/verify", "AOH", true),
    ("GET", "/api/v1/profiles/{name}/rollout", "AOHU", false),
    ("POST", "/api/v1/profiles/{name}/rollout", "AO", false),
    ("POST", "/api/v1/profiles/{name}/rollout/actions/advance", "AO", false),
    ("POST", "/api/v1/profiles/{name}/rollout/actions/pause", "AO", false),
    ("POST", "/api/v1/profiles/{name}/rollout/actions/resume", "AO", false),
    ("POST", "/api/v1/profiles/{name}/rollout/actions/rollback", "AO", false),
    ("GET", "/api/v1/webhooks", "AU", false),
    ("POST", "/api/v1/webhooks", "A", false),
    ("GET", "/api/v1/webhooks/{id}", "AU", false),
    ("DELETE", "/api/v1/webhooks/{id}", "A", false),
    ("PATCH", "/api/v1/webhooks/{id}", "A", false),
    ("GET", "/api/v1/webhooks/{id}/deliveries", "AU", false),
    ("POST", "/api/v1/webhooks/{id}/test", "A", false),
];

fn letter(role: Role) -> char {
    match role {
        Role::Admin => 'A',
        Role::Operator => 'O',
        Role::Helpdesk => 'H',
        Role::Auditor => 'U',
    }
}

/// (method, path) of every operation in the document the router generated.
fn document_routes() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(&api::openapi().to_json().unwrap()).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test]
async fn every_route_times_every_role() {
    let app = App::new().await;
    let routed = document_routes();
    let table: BTreeSet<(String, String)> = ROUTES.iter().map(|r| (r.method.into(), r.path.into())).collect();
    let expected: BTreeSet<(String, String)> = EXPECTED.iter().map(|(m, p, _, _)| ((*m).into(), (*p).into())).collect();
    assert_eq!(routed, table, "router and permission table disagree");
    assert_eq!(routed, expected, "router and this test's matrix disagree");

    let group = app.group("scoped-team").await;
    // (who, bearer token, Some((role, group-scoped)) or None for credentials that must not work)
    type Caller = (String, String, Option<(Role, bool)>);
    let mut callers: Vec<Caller> = vec![
        ("bootstrap".into(), ADMIN_TOKEN.into(), Some((Role::Admin, false))),
        ("unknown token".into(), "stw_adm_not-a-real-token".into(), None),
        ("empty token".into(), String::new(), None),
    ];
    for role in Role::ALL {
        callers.push((
            role.to_string(),
            app.token(role, None, None).await.1,
            Some((role, false)),
        ));
        callers.push((
            format!("scoped {role}"),
            app.token(role, Some(group), None).await.1,
            Some((role, true)),
        ));
    }
    let (revoked_id, revoked) = app.token(Role::Admin, None, None).await;
    app.store()
        .revoke_api_token(revoked_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    callers.push(("revoked admin".into(), revoked, None));
    let (_, expired) = app.token(Role::Admin, None, Some(Duration::seconds(1))).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    callers.push(("expired admin".into(), expired, None));

    for (method, path, roles, scoped_ok) in EXPECTED {
        let concrete = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{name}", "baseline-bitlocker");
        let method: Method = method.parse().unwrap();
        let body = (method == Method::POST).then(|| json!({}));

        let (status, headers, problem) = app.call_full(method.clone(), &concrete, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "anonymous {method} {path}");
        assert!(headers.contains_key("www-authenticate"));
        assert_eq!(headers["content-type"], "application/problem+json", "{method} {path}");
        assert_eq!(problem["status"], 401);

        for (who, token, role) in &callers {
            let (status, _) = app.call(method.clone(), &concrete, Some(token), body.clone()).await;
            match role {
                None => assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}: {method} {path}"),
                Some((role, scoped)) => {
                    let allowed = roles.contains(letter(*role)) && (!scoped || *scoped_ok);
                    if allowed {
                        assert!(
                            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                            "{who} should reach {method} {path}, got {status}"
                        );
                        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is routed");
                    } else {
                        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {method} {path}");
                    }
                }
            }
        }
    }

    // The document is the only thing readable without a token; unknown API paths reveal nothing.
    let (status, doc) = app.call(Method::GET, api::OPENAPI_PATH, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["info"]["title"], "Steward admin API");
    let (status, _) = app.call(Method::GET, "/api/v1/nothing-here", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Refused state-changing calls are audited too (as failures); anonymous ones are not.
    let denied = app
        .store()
        .audit_events(
            &AuditFilter {
                action: Some("device.wipe".into()),
                ..AuditFilter::default()
            },
            None,
            500,
        )
        .await
        .unwrap();
    assert!(
        denied
            .iter()
            .any(|e| e.status == Some(403) && e.outcome == AuditOutcome::Failure)
    );
    assert!(denied.iter().all(|e| e.status != Some(401)));
    assert!(
        verify_audit_log(app.store(), Some(app.audit_key.clone()), Vec::new())
            .await
            .unwrap()
            .is_ok()
    );
}

/// The catalog as the composed server serves it: the Windows adapter's entries, whole, to any role,
/// a scoped token included; an unknown name is a problem document.
#[tokio::test]
async fn catalog_lists_and_shows_the_windows_entries() {
    let app = App::new().await;
    let group = app.group("catalog-team").await;
    let (_, scoped_helpdesk) = app.token(Role::Helpdesk, Some(group), None).await;
    let (status, list) = app
        .call(Method::GET, "/api/v1/catalog", Some(&scoped_helpdesk), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let items = list["items"].as_array().unwrap();
    let areas: BTreeSet<&str> = items
        .iter()
        .filter(|i| i["category"] == "baseline")
        .map(|i| i["area"].as_str().unwrap())
        .collect();
    assert_eq!(
        areas,
        BTreeSet::from([
            "bitlocker",
            "defender-antivirus",
            "device-lock",
            "exploit-protection-vbs",
            "firewall",
            "legacy-technology",
            "remote-access",
            "smartscreen",
        ])
    );
    assert!(items.iter().all(|i| i["platform"] == "windows"));

    let (status, ring) = app
        .call(
            Method::GET,
            "/api/v1/catalog/update-ring-broad",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ring["category"], "update-ring");
    let defer = ring["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "./Device/Vendor/MSFT/Policy/Config/Update/DeferQualityUpdatesPeriodInDays")
        .unwrap();
    assert_eq!(
        (
            defer["format"].as_str(),
            defer["value"].as_str(),
            defer["readable"].as_bool()
        ),
        (Some("int"), Some("7"), Some(true))
    );
    assert_eq!(defer["on_remove"], "delete");
    assert!(
        defer["doc"]
            .as_str()
            .unwrap()
            .starts_with("https://learn.microsoft.com/")
    );

    let (status, problem) = app
        .call(Method::GET, "/api/v1/catalog/no-such-entry", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["detail"], "catalog entry not found");
}

#[tokio::test]
async fn openapi_document_snapshot_and_structure() {
    let text = api::openapi().to_pretty_json().unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for rule in ROUTES {
        let op = &paths
            .get(rule.path)
            .unwrap_or_else(|| panic!("{} is missing from the document", rule.path))[rule.method.to_lowercase()];
        assert!(op.is_object(), "{} {} is missing", rule.method, rule.path);
        operations += 1;
        assert_eq!(
            op["security"],
            json!([{ "bearer": [] }]),
            "{} {}",
            rule.method,
            rule.path
        );
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|k| k.starts_with('2')),
            "{} {} documents a success",
            rule.method,
            rule.path
        );
        for code in ["401", "403"] {
            assert!(
                responses.contains_key(code),
                "{} {} documents {code}",
                rule.method,
                rule.path
            );
        }
        assert!(op["operationId"].is_string());
        // Every schema reference resolves.
        for r in refs(op) {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(
                schemas.contains_key(name),
                "{} {}: dangling {r}",
                rule.method,
                rule.path
            );
        }
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, operations, "no undocumented extra operations");
    assert!(!text.contains(ADMIN_TOKEN));
    insta::assert_json_snapshot!("openapi", doc);
}

fn refs(v: &Value) -> Vec<String> {
    match v {
        Value::Object(m) => m
            .iter()
            .flat_map(|(k, v)| {
                if k == "$ref" {
                    v.as_str().map(|s| vec![s.to_owned()]).unwrap_or_default()
                } else {
                    refs(v)
                }
            })
            .collect(),
        Value::Array(a) => a.iter().flat_map(refs).collect(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn device_search_pagination_and_scope() {
    let app = App::new().await;
    let pilot = app.group("pilot").await;
    let t0 = whole_micros(OffsetDateTime::now_utc()) - Duration::hours(1);
    let names = ["Delta", "alpha", "Charlie", "bravo", "Echo"];
    let mut devices = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let group = (i % 2 == 0).then_some(pilot);
        let id = format!("{:032X}", i + 1);
        devices.push(app.device(&id, name, group, t0 + Duration::seconds(i as i64)).await);
    }

    // Page through in twos: every device once, in enrollment order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("/api/v1/devices?limit=2&cursor={c}"),
            None => "/api/v1/devices?limit=2".into(),
        };
        let (status, page) = app.call(Method::GET, &url, Some(ADMIN_TOKEN), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for d in page["items"].as_array().unwrap() {
            seen.push(d["name"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, names);

    // Sorted by name, descending (byte order: upper case first).
    let (_, page) = app
        .call(
            Method::GET,
            "/api/v1/devices?sort=name&order=desc",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let sorted: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(sorted, ["bravo", "alpha", "Echo", "Delta", "Charlie"]);

    // Filters.
    let count = |q: &'static str| {
        let app = &app;
        async move {
            let (status, page) = app
                .call(Method::GET, &format!("/api/v1/devices?{q}"), Some(ADMIN_TOKEN), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{q}: {page}");
            page["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("name=HARL").await, 1);
    assert_eq!(count("user=ALPHA@example.com").await, 1);
    assert_eq!(count("os_version=10.0.26100").await, 5);
    assert_eq!(count("os_version=11").await, 0);
    assert_eq!(count("state=active").await, 5);
    assert_eq!(count("state=wiped").await, 0);
    assert_eq!(count("last_seen_after=2000-01-01T00:00:00Z").await, 0);

    // Bad input is a 400 problem.
    for q in [
        "limit=0",
        "limit=501",
        "cursor=garbage",
        "state=sideways",
        "sort=colour",
        "last_seen_before=yesterday",
    ] {
        let (status, headers, problem) = app
            .call_full(Method::GET, &format!("/api/v1/devices?{q}"), Some(ADMIN_TOKEN), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(problem["status"], 400);
    }
    // A cursor made for one order is refused for another.
    let (_, page) = app
        .call(Method::GET, "/api/v1/devices?limit=1", Some(ADMIN_TOKEN), None)
        .await;
    let c = page["next_cursor"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/devices?limit=1&sort=name&cursor={c}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Detail by DeviceID and by enrollment id.
    let (status, d) = app
        .call(
            Method::GET,
            &format!("/api/v1/devices/{}", devices[1].device_id),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d["device"]["name"], "alpha");
    assert_eq!(d["certificate"]["serial"], devices[1].cert_serial.as_str());
    let (status, d) = app
        .call(
            Method::GET,
            &format!("/api/v1/devices/{}", devices[1].id),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (status, d["device"]["device_id"].as_str()),
        (StatusCode::OK, Some(devices[1].device_id.as_str()))
    );

    // A group-scoped operator sees and acts on its group's devices only; the rest do not exist.
    let (_, scoped) = app.token(Role::Operator, Some(pilot), None).await;
    let (_, page) = app.call(Method::GET, "/api/v1/devices", Some(&scoped), None).await;
    let visible: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(visible, ["Delta", "Charlie", "Echo"]);
    let outside = devices[1].device_id.to_string();
    let (status, _) = app
        .call(Method::GET, &format!("/api/v1/devices/{outside}"), Some(&scoped), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/devices/{outside}/actions/reboot"),
            Some(&scoped),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let inside = devices[0].device_id.to_string();
    let (status, cmd) = app
        .call(
            Method::POST,
            &format!("/api/v1/devices/{inside}/actions/reboot"),
            Some(&scoped),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{cmd}");
    let (_, groups) = app.call(Method::GET, "/api/v1/groups", Some(&scoped), None).await;
    assert_eq!(groups["items"].as_array().unwrap().len(), 1);

    // A command on an outside device cannot be cancelled by the scoped token either.
    let (_, outside_cmd) = app
        .call(
            Method::POST,
            &format!("/api/v1/devices/{outside}/actions/lock"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let outside_cmd = outside_cmd["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/commands/{outside_cmd}/cancel"),
            Some(&scoped),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let inside_cmd = cmd["id"].as_str().unwrap();
    let (status, c) = app
        .call(
            Method::POST,
            &format!("/api/v1/commands/{inside_cmd}/cancel"),
            Some(&scoped),
            None,
        )
        .await;
    assert_eq!((status, c["state"].as_str()), (StatusCode::OK, Some("cancelled")));
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/commands/{inside_cmd}/cancel"),
            Some(&scoped),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn commands_and_wipe_confirmation() {
    let app = App::new().await;
    let t0 = whole_micros(OffsetDateTime::now_utc());
    let d = app.device("0123456789ABCDEF0123456789ABCDEF", "PC-1", None, t0).await;
    let base = format!("/api/v1/devices/{}", d.device_id);

    // Custom commands are validated before they are queued.
    let (status, problem) = app
        .call(
            Method::POST,
            &format!("{base}/commands"),
            Some(ADMIN_TOKEN),
            Some(json!({"verb": "replace", "items": [{"target": "/not/relative", "data": "1"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("LocURI"));
    let (status, _) = app
        .call(
            Method::POST,
            &format!("{base}/commands"),
            Some(ADMIN_TOKEN),
            Some(json!({"verb": "launch", "items": []})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .call(Method::POST, &format!("{base}/commands"), Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no JSON body");
    let (status, cmd) = app
        .call(
            Method::POST,
            &format!("{base}/commands"),
            Some(ADMIN_TOKEN),
            Some(json!({"verb": "replace", "items": [{
                "target": "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera",
                "format": "int",
                "data": "0"
            }]})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{cmd}");
    assert_eq!(cmd["state"], "pending");
    assert_eq!(cmd["verb"], "Replace");

    // A wipe needs an explicit confirmation.
    let wipe = format!("{base}/actions/wipe");
    let (status, problem) = app
        .call(
            Method::POST,
            &wipe,
            Some(ADMIN_TOKEN),
            Some(json!({"kind": "protected"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["detail"].as_str().unwrap().contains("confirm"));
    let (status, _) = app
        .call(
            Method::POST,
            &wipe,
            Some(ADMIN_TOKEN),
            Some(json!({"kind": "everything", "confirm": true})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, helpdesk) = app.token(Role::Helpdesk, None, None).await;
    let (status, _) = app
        .call(Method::POST, &wipe, Some(&helpdesk), Some(json!({"confirm": true})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "help desk cannot wipe");
    let (status, w) = app
        .call(
            Method::POST,
            &wipe,
            Some(ADMIN_TOKEN),
            Some(json!({"kind": "persist_user_data", "confirm": true})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{w}");
    assert_eq!(w["targets"][0], "./Device/Vendor/MSFT/RemoteWipe/doWipePersistUserData");
    assert_eq!(w["priority"], 100);

    // Help desk may sync; the timeline shows everything, oldest first.
    let (status, _) = app
        .call(Method::POST, &format!("{base}/actions/sync"), Some(&helpdesk), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, timeline) = app
        .call(Method::GET, &format!("{base}/commands"), Some(&helpdesk), None)
        .await;
    let origins: Vec<&str> = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["origin"].as_str().unwrap())
        .collect();
    assert_eq!(origins, ["admin", "action:wipe", "inventory"]);

    // The audit trail names who did what to which device, including the refusals.
    let (status, audit) = app
        .call(
            Method::GET,
            "/api/v1/audit-events?action=device.wipe",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let outcomes: Vec<(String, u64)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["outcome"].as_str().unwrap().to_owned(), e["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("success".to_owned(), 202),
            ("failure".to_owned(), 403),
            ("failure".to_owned(), 422),
            ("failure".to_owned(), 422),
        ],
        "newest first"
    );
    let success = &audit["items"][0];
    assert_eq!(success["target"], d.device_id.as_str());
    assert_eq!(success["actor"], "bootstrap admin token");
    assert_eq!(success["actor_role"], "admin");
    assert!(success["details"].as_str().unwrap().starts_with("command "));
    // Reads are not audited.
    let (_, reads) = app
        .call(
            Method::GET,
            "/api/v1/audit-events?action=device.list",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert!(reads["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn tokens_users_groups_and_server() {
    let app = App::new().await;

    // Enrollment tokens: the value once, never in a list; revocation once.
    let (status, created) = app
        .call(
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(ADMIN_TOKEN),
            Some(json!({"description": "lab", "max_uses": 3, "expires_in_hours": 24, "group": "lab"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let value = created["token"].as_str().unwrap();
    assert!(value.starts_with("stw_enr_"));
    assert_eq!(created["group"], "lab");
    assert_eq!(created["state"], "usable");
    let stored = app
        .store()
        .enrollment_token_by_hash(&TokenHash::of(value))
        .await
        .unwrap()
        .expect("stored by hash");
    let (_, list) = app
        .call(Method::GET, "/api/v1/enrollment-tokens", Some(ADMIN_TOKEN), None)
        .await;
    assert!(!list.to_string().contains(value), "never listed");
    assert!(list["items"][0].get("token").is_none());
    let url = format!("/api/v1/enrollment-tokens/{}", stored.id);
    assert_eq!(
        app.call(Method::DELETE, &url, Some(ADMIN_TOKEN), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(Method::DELETE, &url, Some(ADMIN_TOKEN), None).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, list) = app
        .call(Method::GET, "/api/v1/enrollment-tokens", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(list["items"][0]["state"], "revoked");

    // One rule per field, decided in core for every surface: the CLI prints these same words
    // (steward/tests/cli.rs), and a refused token leaves nothing behind (no group either).
    for (body, detail) in [
        (
            json!({"group": "../../x"}),
            "a group name has 1-64 letters, digits, spaces, '-', '_' or '.'",
        ),
        (
            json!({"description": "d".repeat(257)}),
            "description must be at most 256 printable characters",
        ),
        (
            json!({"description": "two\nlines"}),
            "description must be at most 256 printable characters",
        ),
    ] {
        let (status, problem) = app
            .call(Method::POST, "/api/v1/enrollment-tokens", Some(ADMIN_TOKEN), Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["detail"], detail);
    }
    assert!(app.store().group_by_name("../../x").await.unwrap().is_none());
    let (_, list) = app
        .call(Method::GET, "/api/v1/enrollment-tokens", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "nothing created: {list}");
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(ADMIN_TOKEN),
            Some(json!({"description": "d".repeat(256)})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "256 characters are allowed");

    // API tokens: role, scope, expiry; the value once; stored as SHA-256; last use recorded.
    let (status, problem) = app
        .call(
            Method::POST,
            "/api/v1/api-tokens",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "team", "role": "operator", "group": "no-such-group"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/api-tokens",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "x", "role": "superuser"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, created) = app
        .call(
            Method::POST,
            "/api/v1/api-tokens",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "lab team", "role": "operator", "group": "lab", "expires_in_days": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let operator = created["token"].as_str().unwrap().to_owned();
    assert!(operator.starts_with("stw_adm_"));
    assert_eq!(created["group"], "lab");
    assert_eq!(created["created_by"], "bootstrap admin token");
    assert!(created["last_used_at"].is_null());
    let token = app
        .store()
        .api_token_by_hash(&TokenHash::of(&operator))
        .await
        .unwrap()
        .expect("stored by hash");
    assert_eq!(token.role, Role::Operator);
    let (status, _) = app.call(Method::GET, "/api/v1/devices", Some(&operator), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = app
        .call(Method::GET, "/api/v1/api-tokens", Some(ADMIN_TOKEN), None)
        .await;
    assert!(!list.to_string().contains(&operator));
    let items = list["items"].as_array().unwrap();
    let named = items.iter().find(|t| t["kind"] == "named").expect("the named token");
    assert!(named["last_used_at"].is_string(), "{list}");
    assert_eq!(named["active"], true);
    // The bootstrap token is listed too, oldest first, as the unscoped admin it is.
    let bootstrap = &items[0];
    assert_eq!(bootstrap["kind"], "bootstrap", "{list}");
    assert_eq!(bootstrap["name"], "bootstrap (configured)");
    assert_eq!(
        (bootstrap["role"].as_str(), bootstrap["active"].as_bool()),
        (Some("admin"), Some(true))
    );
    assert_eq!(bootstrap["created_by"], "steward serve");
    assert!(bootstrap["created_at"].is_string() && bootstrap["last_used_at"].is_string());
    assert!(!list.to_string().contains(ADMIN_TOKEN));
    let url = format!("/api/v1/api-tokens/{}", token.id);
    assert_eq!(
        app.call(Method::DELETE, &url, Some(ADMIN_TOKEN), None).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, _) = app.call(Method::GET, "/api/v1/devices", Some(&operator), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked at once");

    // Users: Argon2id, duplicates and weak passwords refused, hashes never shown.
    let (status, user) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(ADMIN_TOKEN),
            Some(json!({"email": "Bob@Example.com", "display_name": "Bob", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["email"], "bob@example.com");
    let stored = app.store().user_by_email("bob@example.com").await.unwrap().unwrap();
    assert!(steward_core::secret::verify_password(
        "correct horse",
        &stored.password_hash
    ));
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(ADMIN_TOKEN),
            Some(json!({"email": "bob@example.com", "password": "another one"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(ADMIN_TOKEN),
            Some(json!({"email": "carol@example.com", "password": "short"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, users) = app.call(Method::GET, "/api/v1/users", Some(ADMIN_TOKEN), None).await;
    assert_eq!(users["items"].as_array().unwrap().len(), 1);
    assert!(!users.to_string().contains("argon2"));

    // Groups and the server overview.
    let (_, groups) = app.call(Method::GET, "/api/v1/groups", Some(ADMIN_TOKEN), None).await;
    assert_eq!(groups["items"][0]["name"], "lab");
    let (status, server) = app.call(Method::GET, "/api/v1/server", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server["auth_policy"], "onpremise");
    assert_eq!(server["public_url"], "https://localhost:8443");
    assert_eq!(server["counts"]["users"], 1);
    assert_eq!(server["counts"]["api_tokens"], 1);
    assert!(!server.to_string().contains(ADMIN_TOKEN));

    // Small lists page too.
    for _ in 0..3 {
        app.token(Role::Auditor, None, None).await;
    }
    let (_, first) = app
        .call(Method::GET, "/api/v1/api-tokens?limit=3", Some(ADMIN_TOKEN), None)
        .await;
    let c = first["next_cursor"].as_str().expect("a second page");
    let (_, second) = app
        .call(
            Method::GET,
            &format!("/api/v1/api-tokens?limit=3&cursor={c}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    // Five in all: the bootstrap token, the revoked operator token and three auditors.
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert!(second["next_cursor"].is_null());

    // Every state change above is in the chain, and the chain verifies.
    let actions: BTreeSet<String> = app
        .store()
        .audit_events(&AuditFilter::default(), None, 500)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for a in [
        "enrollment_token.create",
        "enrollment_token.revoke",
        "api_token.create",
        "api_token.revoke",
        "user.create",
    ] {
        assert!(actions.contains(a), "{a} audited: {actions:?}");
    }
    let v = verify_audit_log(app.store(), Some(app.audit_key.clone()), Vec::new())
        .await
        .unwrap()
        .unwrap();
    assert!(v.count() >= 9);
}

/// The real server over TLS: a simulated device enrolls, an admin finds it through the API, queues a
/// wipe, the device acknowledges it at its next check-in, and the API shows the outcome.
#[tokio::test]
async fn wipe_a_simulated_device_over_tls() {
    let t = TestServer::start().await;
    let mut device = t.managed_device(None).await;
    let device_client = t.device_client(&device);
    let api = t.client();
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let call = |method: Method, path: String, body: Option<Value>| {
        let api = &api;
        let auth = auth.clone();
        let url = t.url(&path);
        async move {
            let body = body.map(|b| b.to_string()).unwrap_or_default();
            let resp = api
                .request(
                    method,
                    &url,
                    &[("authorization", auth.as_str()), ("content-type", "application/json")],
                    body.into(),
                )
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
            (resp.status, v)
        }
    };

    let (status, page) = call(Method::GET, "/api/v1/devices?state=active".into(), None).await;
    assert_eq!(status, 200);
    let id = page["items"][0]["device_id"].as_str().unwrap().to_owned();
    assert_eq!(id, device.profile.device_id);

    let (status, queued) = call(
        Method::POST,
        format!("/api/v1/devices/{id}/actions/wipe"),
        Some(json!({"kind": "protected", "confirm": true})),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    device
        .run_session(&device_client, steward_sim::session::SessionTrigger::Scheduled)
        .await
        .unwrap();
    assert!(device.wiped.is_some(), "the device received the wipe");

    // The enrollment is history now, still visible by DeviceID; the timeline shows the answer.
    let (status, detail) = call(Method::GET, format!("/api/v1/devices/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(detail["device"]["state"], "wiped");
    assert!(
        !detail["facts"].as_array().unwrap().is_empty(),
        "inventory arrived in the same session"
    );
    let (_, timeline) = call(Method::GET, format!("/api/v1/devices/{id}/commands"), None).await;
    let wipe = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == queued["id"])
        .unwrap();
    assert_eq!(
        (wipe["state"].as_str(), wipe["status_code"].as_u64()),
        (Some("succeeded"), Some(200))
    );
    // Actions need an active enrollment.
    let (status, _) = call(Method::POST, format!("/api/v1/devices/{id}/actions/reboot"), None).await;
    assert_eq!(status, 404);

    // The audit event carries the peer address from the TLS connection.
    let (_, audit) = call(Method::GET, "/api/v1/audit-events?action=device.wipe".into(), None).await;
    let e = &audit["items"][0];
    assert_eq!(
        (e["target"].as_str(), e["source_ip"].as_str()),
        (Some(id.as_str()), Some("127.0.0.1"))
    );
    assert!(t.server.core.audit.verify(Vec::new()).await.unwrap().is_ok());
    t.server.shutdown().await;
}
