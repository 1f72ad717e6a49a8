//! The console over real services and a real (temporary) store, in process: sign-in with its
//! throttling and second factor, and a state-changing action authorised, refused and audited as the
//! admin API would. The server's integration tests cover the rest (devices, browser).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode, header};
use steward_api::{ApiState, ServerSettings};
use steward_console::{ConsoleSettings, ConsoleState};
use steward_core::service::{Core, PasswordPolicy, SystemClock};
use steward_core::*;
use steward_http::ConnInfo;
use time::OffsetDateTime;
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery";

/// No platform is needed for these flows; one is registered so the services are complete.
struct NoCommands;

impl PlatformAdapter for NoCommands {
    fn platform(&self) -> Platform {
        Platform::Windows
    }
    fn action_command(&self, _: Action) -> Result<PlatformPayload, CommandRejected> {
        Ok(PlatformPayload::from_json("{}".into()))
    }
    fn admin_command(&self, _: &serde_json::Value) -> Result<PlatformPayload, CommandRejected> {
        Err(CommandRejected::Invalid("no commands here".into()))
    }
    fn describe(&self, _: &PlatformPayload) -> CommandSummary {
        CommandSummary::default()
    }
    fn enrollment_endpoints(&self, _: &str) -> Vec<EnrollmentEndpoint> {
        Vec::new()
    }
}

struct Console {
    state: ConsoleState,
    _dir: tempfile::TempDir,
}

struct Resp {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Resp {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn cookie(&self) -> String {
        let c = self.headers[header::SET_COOKIE].to_str().unwrap();
        c.strip_prefix("__Host-steward_session=")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    }
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a form") + 19;
        self.body[at..].split('"').next().unwrap().to_owned()
    }
    fn element_text(&self, id: &str) -> String {
        let at = self
            .body
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id}"));
        let rest = &self.body[at..];
        let start = rest.find('>').unwrap() + 1;
        rest[start..start + rest[start..].find('<').unwrap()].to_owned()
    }
}

impl Console {
    async fn start(require_totp: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = steward_store_sqlite::SqliteStore::open(&dir.path().join("steward.db"))
            .await
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let core = Core::new(
            store,
            Platforms::new([Arc::new(NoCommands) as Arc<dyn PlatformAdapter>]),
            Arc::new(SystemClock),
            PasswordPolicy::default(),
            Arc::new(steward_pki::Kek::generate().unwrap()),
            Arc::new(AuditChainKey::generate().unwrap()),
        );
        let server = ServerSettings {
            public_url: "https://mdm.example.com".into(),
            console_require_totp: require_totp,
            ..ServerSettings::default()
        };
        let settings = ConsoleSettings {
            require_totp,
            totp_issuer: ConsoleSettings::totp_issuer_for(Some(&server.public_url)),
            config_summary: vec![("Trusted proxies".into(), "none".into())],
            enrollment_endpoints: Vec::new(),
            form_bytes: steward_console::FORM_BYTES,
        };
        let state = ConsoleState {
            api: ApiState {
                core,
                settings: Arc::new(server),
            },
            settings: Arc::new(settings),
        };
        Self { state, _dir: dir }
    }

    fn store(&self) -> &dyn Store {
        self.state.api.core.store.as_ref()
    }

    async fn user(&self, email: &str, role: Role) {
        let user = User {
            id: UserId::new(),
            email: email.into(),
            display_name: None,
            password_hash: steward_core::secret::hash_password(PASSWORD).unwrap(),
            disabled: false,
            created_at: OffsetDateTime::now_utc(),
        };
        self.store().create_console_user(&user, role, None).await.unwrap();
    }

    async fn send(&self, method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> Resp {
        let peer: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        let mut req = Request::builder().method(method).uri(path).extension(ConnInfo {
            peer,
            client_cert: None,
        });
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, format!("__Host-steward_session={c}"));
        }
        let req = match form {
            Some(f) => req
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(f.to_owned())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = steward_console::router(self.state.clone()).oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn login(&self, email: &str, password: &str) -> Resp {
        let form = format!(
            "email={}&password={}",
            email.replace('@', "%40"),
            password.replace(' ', "+")
        );
        self.send("POST", "/console/login", None, Some(&form)).await
    }

    async fn audit(&self, action: &str) -> Vec<AuditEvent> {
        let filter = AuditFilter {
            action: Some(action.into()),
            newest_first: true,
            ..AuditFilter::default()
        };
        self.store().audit_events(&filter, None, 100).await.unwrap()
    }
}

#[tokio::test]
async fn wrong_passwords_are_refused_audited_and_throttled() {
    let c = Console::start(false).await;
    c.user("ada@example.com", Role::Admin).await;
    for _ in 0..5 {
        let r = c.login("ada@example.com", "wrong password").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.body.contains("Wrong e-mail or password."));
        assert!(r.headers.get(header::SET_COOKIE).is_none());
    }
    let failed = c.audit("console.login").await;
    assert_eq!(failed.len(), 5);
    assert_eq!(
        (failed[0].actor.as_str(), failed[0].outcome, failed[0].status),
        ("ada@example.com (console)", AuditOutcome::Failure, Some(401))
    );
    assert_eq!(failed[0].source_ip.as_deref(), Some("192.0.2.7"));
    // Even the right password is refused now, from this address, without being checked.
    let r = c.login("ada@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.body
            .contains("Too many failed sign-ins. Wait 15 minutes and try again."),
        "{}",
        r.body
    );
    assert_eq!(c.audit("console.login").await.len(), 5);
}

#[tokio::test]
async fn actions_are_authorised_and_audited_as_the_api_would() {
    let c = Console::start(false).await;
    c.user("ada@example.com", Role::Admin).await;
    c.user("hal@example.com", Role::Helpdesk).await;
    let r = c.login("ada@example.com", PASSWORD).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/console"),
        "{}",
        r.body
    );
    let admin = r.cookie();
    let help = c.login("hal@example.com", PASSWORD).await.cookie();
    assert_eq!(c.audit("console.login").await[0].status, Some(303));

    let page = c.send("GET", "/console/groups", Some(&admin), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Create group"));
    let csrf = page.csrf();
    let create = format!("csrf={csrf}&name=Finance");
    let r = c.send("POST", "/console/groups", Some(&admin), Some(&create)).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/console/groups?done=created")
    );
    let r = c.send("POST", "/console/groups", Some(&admin), Some(&create)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("a group Finance exists"), "{}", r.body);

    let hpage = c.send("GET", "/console/groups", Some(&help), None).await;
    assert!(hpage.body.contains("Finance") && !hpage.body.contains("Create group"));
    let r = c
        .send(
            "POST",
            "/console/groups",
            Some(&help),
            Some(&format!("csrf={}&name=Ops", hpage.csrf())),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("the helpdesk role may not groups.write"), "{}", r.body);

    let rows = c.audit("group.create").await;
    let seen: Vec<_> = rows
        .iter()
        .map(|e| (e.actor.as_str(), e.outcome, e.status, e.target.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "hal@example.com (console)",
                AuditOutcome::Failure,
                Some(403),
                Some("/groups")
            ),
            (
                "ada@example.com (console)",
                AuditOutcome::Failure,
                Some(409),
                Some("/groups")
            ),
            (
                "ada@example.com (console)",
                AuditOutcome::Success,
                Some(201),
                Some("Finance")
            ),
        ]
    );
    assert_eq!(rows[2].actor_role, Some(Role::Admin));

    let g = c.store().group_by_name("Finance").await.unwrap().unwrap();
    let r = c
        .send(
            "POST",
            &format!("/console/groups/{}/delete", g.id),
            Some(&admin),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.location(), "/console/groups?done=deleted", "{}", r.body);
    let deleted = c.audit("group.delete").await;
    assert_eq!(
        (deleted[0].status, deleted[0].target.clone()),
        (Some(204), Some(g.id.to_string()))
    );

    // Pages a role may not use are refused with the API's word; the settings show the configuration.
    assert_eq!(
        c.send("GET", "/console/audit", Some(&help), None).await.status,
        StatusCode::FORBIDDEN
    );
    let audit = c.send("GET", "/console/audit", Some(&admin), None).await;
    assert!(audit.status == StatusCode::OK && audit.body.contains("group.delete"));
    let settings = c.send("GET", "/console/settings", Some(&admin), None).await;
    for shown in [
        "https://mdm.example.com",
        "optional",
        "<dt>Trusted proxies</dt><dd>none</dd>",
    ] {
        assert!(settings.body.contains(shown), "{shown}: {}", settings.body);
    }
}

#[tokio::test]
async fn the_second_factor_is_set_up_at_the_first_sign_in_and_then_asked_for() {
    use steward_core::totp::{TotpSecret, step_of};
    let c = Console::start(true).await;
    c.user("ada@example.com", Role::Auditor).await;
    let r = c.login("ada@example.com", PASSWORD).await;
    assert_eq!(r.location(), "/console/login/second-factor");
    let pending = r.cookie();
    assert!(c.audit("console.login").await.is_empty(), "not signed in yet");
    let page = c
        .send("GET", "/console/login/second-factor", Some(&pending), None)
        .await;
    assert!(page.body.contains("Set up two-step sign-in") && page.body.contains("<svg"));
    let secret = TotpSecret::from_base32(&page.element_text("totp-secret")).unwrap();
    let csrf = page.csrf();
    let now = OffsetDateTime::now_utc();
    let right = secret.code_at(now);
    let wrong = if right == "000000" { "111111" } else { "000000" };
    let code = |code: &str| format!("csrf={csrf}&code={code}");
    let r = c
        .send(
            "POST",
            "/console/login/second-factor",
            Some(&pending),
            Some(&code(wrong)),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("not valid"));
    let r = c
        .send(
            "POST",
            "/console/login/second-factor",
            Some(&pending),
            Some(&code(&right)),
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/console"),
        "{}",
        r.body
    );
    let full = r.cookie();
    let account = c.send("GET", "/console/account", Some(&full), None).await;
    assert!(account.element_text("totp-state").starts_with("on"), "{}", account.body);
    assert_eq!(c.audit("console.totp_enroll").await.len(), 1);
    assert_eq!(c.audit("console.second_factor").await[0].outcome, AuditOutcome::Failure);
    assert_eq!(c.audit("console.login").await[0].outcome, AuditOutcome::Success);

    // The next sign-in asks for a code (no key shown); a used code is refused.
    let pending = c.login("ada@example.com", PASSWORD).await.cookie();
    let page = c
        .send("GET", "/console/login/second-factor", Some(&pending), None)
        .await;
    assert!(!page.body.contains("totp-secret"));
    let csrf = page.csrf();
    let r = c
        .send(
            "POST",
            "/console/login/second-factor",
            Some(&pending),
            Some(&format!("csrf={csrf}&code={right}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a code is accepted once");
    let next = secret.code_at_step(step_of(now) + 1);
    let r = c
        .send(
            "POST",
            "/console/login/second-factor",
            Some(&pending),
            Some(&format!("csrf={csrf}&code={next}")),
        )
        .await;
    assert_eq!(r.location(), "/console");
}
