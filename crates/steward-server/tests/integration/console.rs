//! The web console: session cookie flags, CSRF, role enforcement and audit of console actions,
//! escaping of device-provided strings (in-process, fast), and one end-to-end run in headless
//! Chromium over real TLS with a simulated device (log in, search, sync, see it acknowledged).

use std::time::Duration;

use axum::body::Body;
use base64::Engine;
use http::{Request, StatusCode, header};
use serde_json::{Value, json};
use steward_core::*;
use steward_sim::session::SessionTrigger;
use steward_sim::{Credentials, ManagedDevice};
use time::OffsetDateTime;
use tower::ServiceExt;

use crate::common::{ADMIN_TOKEN, TestServer};

pub(crate) const PASSWORD: &str = "correct horse battery";

pub(crate) async fn console_user(t: &TestServer, email: &str, role: Role) {
    scoped_console_user(t, email, role, None).await;
}

async fn scoped_console_user(t: &TestServer, email: &str, role: Role, group: Option<GroupId>) {
    t.store()
        .create_console_user(
            &User {
                id: UserId::new(),
                email: email.into(),
                display_name: None,
                password_hash: steward_core::secret::hash_password(PASSWORD).unwrap(),
                disabled: false,
                created_at: OffsetDateTime::now_utc(),
            },
            role,
            group,
        )
        .await
        .unwrap();
}

/// Enrolls a simulated device that calls itself `name`.
async fn named_device(t: &TestServer, name: &str) -> ManagedDevice {
    let token = t.token(Some(1), ::time::Duration::hours(1), None).await;
    let mut opts = t.options(Credentials::Password(token));
    opts.device_name = name.to_owned();
    let enrolled = steward_sim::enroll::enroll(&t.client(), &opts).await.unwrap();
    let mut profile = steward_sim::csp::DeviceProfile::random(&enrolled.device_id);
    profile.device_name = name.to_owned();
    ManagedDevice::from_enrolled(enrolled, profile)
}

pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

impl Resp {
    pub(crate) fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The CSRF token the page's forms carry.
    pub(crate) fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a csrf field")
            + 19;
        self.body[at..].split('"').next().unwrap().to_owned()
    }
}

/// One request to the server's router in-process (the console needs no TLS to be tested).
pub(crate) async fn send(t: &TestServer, method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> Resp {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, format!("__Host-steward_session={c}"));
    }
    let req = match form {
        Some(f) => req
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(f.to_owned()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let resp = t.server.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
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

pub(crate) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Signs in and returns the session cookie's value.
async fn login(t: &TestServer, email: &str) -> String {
    let r = send(
        t,
        "POST",
        "/console/login",
        None,
        Some(&format!("email={}&password={}", enc(email), enc(PASSWORD))),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let cookie = r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_owned();
    cookie
        .strip_prefix("__Host-steward_session=")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

async fn audit_rows(t: &TestServer, action: &str) -> Vec<AuditEvent> {
    let filter = AuditFilter {
        action: Some(action.into()),
        newest_first: true,
        ..Default::default()
    };
    t.store().audit_events(&filter, None, 100).await.unwrap()
}

/// A server whose console does not require a second factor (tests about everything else).
async fn without_required_totp() -> TestServer {
    TestServer::start_with(|c| c.console.require_totp = false).await
}

/// The value of the element with `id` in a page (the text between its tags).
pub(crate) fn element_text(body: &str, id: &str) -> String {
    let at = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {body}"));
    let rest = &body[at..];
    let start = rest.find('>').unwrap() + 1;
    rest[start..start + rest[start..].find('<').unwrap()].to_owned()
}

pub(crate) fn session_of(r: &Resp) -> String {
    let cookie = r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    cookie
        .strip_prefix("__Host-steward_session=")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn sessions_csrf_roles_and_escaping() {
    let t = without_required_totp().await;
    console_user(&t, "admin@example.com", Role::Admin).await;
    console_user(&t, "help@example.com", Role::Helpdesk).await;
    let evil = "<script>alert(1)</script>";
    let device = named_device(&t, evil).await;
    let e = t.enrollment_of(&device).await;

    // Anonymous: every page but the login page sends you to sign in; the login page has labels.
    let r = send(&t, "GET", "/console", None, None).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/console/login"));
    let r = send(&t, "GET", "/console/login", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("<label for=\"email\">") && r.body.contains("<label for=\"password\">"));
    let csp = r
        .headers
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    // Not framable (clickjacking), not sniffed, and HTTPS only from the first visit on.
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    for (name, value) in [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::STRICT_TRANSPORT_SECURITY,
            steward_http::STRICT_TRANSPORT_SECURITY,
        ),
    ] {
        assert_eq!(
            r.headers.get(&name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name}"
        );
    }

    // A wrong password is refused (and audited), a wrong e-mail looks the same.
    for (email, pw) in [
        ("admin@example.com", "wrong password"),
        ("nobody@example.com", PASSWORD),
    ] {
        let r = send(
            &t,
            "POST",
            "/console/login",
            None,
            Some(&format!("email={}&password={}", enc(email), enc(pw))),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.headers.get(header::SET_COOKIE).is_none());
        assert!(r.body.contains("Wrong e-mail or password."));
    }
    assert_eq!(audit_rows(&t, "console.login").await.len(), 2);

    // The session cookie: __Host- prefix, Secure, HttpOnly, SameSite=Strict, Path=/, no Domain.
    let r = send(
        &t,
        "POST",
        "/console/login",
        None,
        Some(&format!("email=admin%40example.com&password={}", enc(PASSWORD))),
    )
    .await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/console"));
    let set = r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_owned();
    for flag in [
        "__Host-steward_session=",
        "; Secure",
        "; HttpOnly",
        "; SameSite=Strict",
        "; Path=/",
    ] {
        assert!(set.contains(flag), "{flag} missing from {set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let admin = login(&t, "admin@example.com").await;
    // 256 random bits, base64url: 43 characters; only its hash is stored.
    assert_eq!(admin.len(), 43);

    // Every page escapes what devices report: the name never becomes markup.
    let device_page = format!("/console/devices/{}", e.id);
    for path in [
        "/console".to_owned(),
        format!("/console/devices?q={}", enc(evil)),
        device_page.clone(),
        format!("/console/devices/{}/wipe", e.id),
        "/console/enrollment".to_owned(),
        "/console/audit".to_owned(),
    ] {
        let r = send(&t, "GET", &path, Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert!(!r.body.contains("<script"), "{path} contains markup from the device");
    }
    let r = send(
        &t,
        "GET",
        &format!("/console/devices?q={}", enc(evil)),
        Some(&admin),
        None,
    )
    .await;
    assert!(r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", r.body);

    // CSRF: a POST without the session's token (or with another) changes nothing.
    let page = send(&t, "GET", &device_page, Some(&admin), None).await;
    let csrf = page.csrf();
    let sync = format!("/console/devices/{}/actions/sync", e.id);
    let open_before = t.store().commands_for_enrollment(e.id).await.unwrap().len();
    for form in ["", "csrf=forged"] {
        let r = send(&t, "POST", &sync, Some(&admin), Some(form)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{form:?}");
    }
    assert_eq!(
        t.store().commands_for_enrollment(e.id).await.unwrap().len(),
        open_before
    );
    let r = send(&t, "POST", &sync, Some(&admin), Some(&format!("csrf={csrf}"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), format!("{device_page}?done=sync"));
    assert_eq!(
        t.store().commands_for_enrollment(e.id).await.unwrap().len(),
        open_before + 1
    );
    let synced = audit_rows(&t, "device.sync").await;
    assert_eq!(synced[0].actor, "admin@example.com (console)");
    assert_eq!(synced[0].target.as_deref(), Some(e.device_id.as_str()));
    assert_eq!(synced[0].outcome, AuditOutcome::Success);

    // Help desk: may sync, may not wipe, even with the right name and a valid token; the refusal
    // is audited like the API's. The page does not offer the wipe either.
    let help = login(&t, "help@example.com").await;
    let page = send(&t, "GET", &device_page, Some(&help), None).await;
    assert!(page.body.contains("action-sync") && !page.body.contains("/wipe\""));
    let hcsrf = page.csrf();
    let wipe = format!("/console/devices/{}/wipe", e.id);
    let r = send(
        &t,
        "POST",
        &wipe,
        Some(&help),
        Some(&format!("csrf={hcsrf}&confirm_name={}", enc(evil))),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let wipes = audit_rows(&t, "device.wipe").await;
    assert_eq!(wipes.len(), 1);
    assert_eq!((wipes[0].outcome, wipes[0].status), (AuditOutcome::Failure, Some(403)));
    assert_eq!(
        send(&t, "GET", "/console/audit", Some(&help), None).await.status,
        StatusCode::FORBIDDEN
    );
    let r = send(&t, "POST", &sync, Some(&help), Some(&format!("csrf={hcsrf}"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    // Admin wipe: a mistyped name is refused (422, audited), the exact name queues it.
    let r = send(
        &t,
        "POST",
        &wipe,
        Some(&admin),
        Some(&format!("csrf={csrf}&confirm_name=nope")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = send(
        &t,
        "POST",
        &wipe,
        Some(&admin),
        Some(&format!("csrf={csrf}&kind=protected&confirm_name={}", enc(evil))),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let wipes = audit_rows(&t, "device.wipe").await;
    assert_eq!(wipes.len(), 3);
    assert_eq!((wipes[0].outcome, wipes[0].status), (AuditOutcome::Success, Some(202)));
    assert_eq!(wipes[1].status, Some(422));

    // Logout: needs the token, ends the session server-side and clears the cookie.
    let r = send(&t, "POST", "/console/logout", Some(&admin), Some("csrf=forged")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &t,
        "POST",
        "/console/logout",
        Some(&admin),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/console/login"));
    assert!(
        r.headers
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = send(&t, "GET", "/console", Some(&admin), None).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/console/login"));
    assert_eq!(
        send(&t, "GET", "/console", Some(&help), None).await.status,
        StatusCode::OK
    );

    // Bootstrap over the API: a user created with a console role can sign in.
    let client = t.client();
    let resp = client
        .request(
            http::Method::POST,
            &t.url("/api/v1/users"),
            &[
                ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
                ("content-type", "application/json"),
            ],
            bytes::Bytes::from(
                json!({"email": "ops@example.com", "password": PASSWORD, "console_role": "operator"}).to_string(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    let ops = login(&t, "ops@example.com").await;
    let r = send(&t, "GET", "/console", Some(&ops), None).await;
    assert!(r.body.contains("ops@example.com</a> (operator)"), "{}", r.body);
}

#[tokio::test]
async fn second_factor_is_set_up_then_required_once_per_code_and_reset_by_an_admin() {
    use steward_core::totp::{TotpSecret, step_of};
    let t = TestServer::start().await; // require_totp is the default
    console_user(&t, "admin@example.com", Role::Admin).await;
    let password_form = format!("email=admin%40example.com&password={}", enc(PASSWORD));

    // The right password gives only a short pending session that reaches the second-factor page.
    let r = send(&t, "POST", "/console/login", None, Some(&password_form)).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/console/login/second-factor")
    );
    assert!(r.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=300"));
    let pending = session_of(&r);
    for path in ["/console", "/console/devices", "/console/settings"] {
        let r = send(&t, "GET", path, Some(&pending), None).await;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::SEE_OTHER, "/console/login/second-factor"),
            "{path}"
        );
    }
    assert!(audit_rows(&t, "console.login").await.is_empty(), "not signed in yet");

    // First sign-in: the set-up page shows the key (and its QR code); a reload shows the same key.
    let page = send(&t, "GET", "/console/login/second-factor", Some(&pending), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<svg") && page.body.contains("Set up two-step sign-in"));
    let key = element_text(&page.body, "totp-secret");
    let again = send(&t, "GET", "/console/login/second-factor", Some(&pending), None).await;
    assert_eq!(element_text(&again.body, "totp-secret"), key);
    let secret = TotpSecret::from_base32(&key).unwrap();
    let csrf = page.csrf();

    // A wrong code (or a missing CSRF token) is refused and signs nobody in.
    let now = OffsetDateTime::now_utc();
    let right = secret.code_at(now);
    let wrong = if right == "000000" { "111111" } else { "000000" };
    let r = send(
        &t,
        "POST",
        "/console/login/second-factor",
        Some(&pending),
        Some(&format!("csrf={csrf}&code={wrong}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("not valid"));
    let r = send(
        &t,
        "POST",
        "/console/login/second-factor",
        Some(&pending),
        Some(&format!("csrf=forged&code={right}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The right code: a full session under a new id; the pending one is gone.
    let r = send(
        &t,
        "POST",
        "/console/login/second-factor",
        Some(&pending),
        Some(&format!("csrf={csrf}&code={right}")),
    )
    .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/console"),
        "{}",
        r.body
    );
    let full = session_of(&r);
    assert_ne!(full, pending);
    assert_eq!(
        send(&t, "GET", "/console", Some(&full), None).await.status,
        StatusCode::OK
    );
    let r = send(&t, "GET", "/console/login/second-factor", Some(&pending), None).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/console/login"));
    assert_eq!(audit_rows(&t, "console.totp_enroll").await.len(), 1);
    assert_eq!(
        audit_rows(&t, "console.second_factor").await[0].outcome,
        AuditOutcome::Failure
    );
    let account = send(&t, "GET", "/console/account", Some(&full), None).await;
    assert!(
        element_text(&account.body, "totp-state").starts_with("on"),
        "{}",
        account.body
    );

    // Second sign-in: no key shown any more; the code already used is refused (replay), the next
    // step's code is accepted.
    let r = send(&t, "POST", "/console/login", None, Some(&password_form)).await;
    let pending2 = session_of(&r);
    let page = send(&t, "GET", "/console/login/second-factor", Some(&pending2), None).await;
    assert!(!page.body.contains("totp-secret") && !page.body.contains("<svg"));
    let csrf2 = page.csrf();
    let r = send(
        &t,
        "POST",
        "/console/login/second-factor",
        Some(&pending2),
        Some(&format!("csrf={csrf2}&code={right}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a code is accepted once");
    let next = secret.code_at_step(step_of(now) + 1);
    let r = send(
        &t,
        "POST",
        "/console/login/second-factor",
        Some(&pending2),
        Some(&format!("csrf={csrf2}&code={next}")),
    )
    .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/console"),
        "{}",
        r.body
    );
    let full2 = session_of(&r);

    // Lost phone: an admin removes the factor over the API; the user's sessions end and the next
    // sign-in sets up a new key.
    let user = t
        .store()
        .console_user_by_email("admin@example.com")
        .await
        .unwrap()
        .unwrap();
    let resp = t
        .client()
        .request(
            http::Method::DELETE,
            &t.url(&format!("/api/v1/users/{}/totp", user.user.id)),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 204, "{}", resp.text());
    for s in [&full, &full2] {
        let r = send(&t, "GET", "/console", Some(s), None).await;
        assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/console/login"));
    }
    assert_eq!(audit_rows(&t, "user.reset_totp").await.len(), 1);
    let r = send(&t, "POST", "/console/login", None, Some(&password_form)).await;
    let page = send(&t, "GET", "/console/login/second-factor", Some(&session_of(&r)), None).await;
    assert_ne!(element_text(&page.body, "totp-secret"), key, "a new key");
}

#[tokio::test]
async fn optional_second_factor_set_up_from_the_account_page_is_then_asked_for() {
    use steward_core::totp::TotpSecret;
    let t = without_required_totp().await;
    console_user(&t, "alice@example.com", Role::Auditor).await;
    let cookie = login(&t, "alice@example.com").await;
    let account = send(&t, "GET", "/console/account", Some(&cookie), None).await;
    assert_eq!(element_text(&account.body, "totp-state"), "off");
    let csrf = account.csrf();
    let setup = send(
        &t,
        "POST",
        "/console/account/totp",
        Some(&cookie),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(setup.status, StatusCode::OK, "{}", setup.body);
    let secret = TotpSecret::from_base32(&element_text(&setup.body, "totp-secret")).unwrap();
    let r = send(
        &t,
        "POST",
        "/console/account/totp/confirm",
        Some(&cookie),
        Some(&format!("csrf={csrf}&code=12345x")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = send(
        &t,
        "POST",
        "/console/account/totp/confirm",
        Some(&cookie),
        Some(&format!(
            "csrf={csrf}&code={}",
            secret.code_at(OffsetDateTime::now_utc())
        )),
    )
    .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/console/account?done=totp")
    );
    // From now on the password alone is not enough, even though the server does not require it.
    let r = send(
        &t,
        "POST",
        "/console/login",
        None,
        Some(&format!("email=alice%40example.com&password={}", enc(PASSWORD))),
    )
    .await;
    assert_eq!(r.location(), "/console/login/second-factor");
}

#[tokio::test]
async fn groups_settings_and_charts_pages() {
    let t = without_required_totp().await;
    console_user(&t, "admin@example.com", Role::Admin).await;
    console_user(&t, "help@example.com", Role::Helpdesk).await;
    let device = named_device(&t, "PC-GROUPED").await;
    let e = t.enrollment_of(&device).await;
    let admin = login(&t, "admin@example.com").await;
    let help = login(&t, "help@example.com").await;

    // The dashboard charts: inline SVG with the figures as a table.
    let dash = send(&t, "GET", "/console", Some(&admin), None).await;
    for id in ["chart-active", "chart-commands", "chart-enroll"] {
        assert!(dash.body.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(dash.body.contains("<svg") && dash.body.contains("Active devices at the end of the day"));

    // The catalog, for any role: every entry with its settings and their documentation, escaped.
    let catalog = send(&t, "GET", "/console/catalog", Some(&help), None).await;
    assert_eq!(catalog.status, StatusCode::OK);
    assert!(catalog.body.contains("href=\"/console/catalog\""), "in the menu");
    for name in [
        "baseline-bitlocker",
        "baseline-legacy-technology",
        "update-ring-pilot",
        "kind-msi-app",
    ] {
        assert!(catalog.body.contains(&format!("id=\"h-{name}\"")), "{name}");
    }
    assert!(
        catalog
            .body
            .contains("./Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption")
    );
    assert!(catalog.body.contains("&lt;enabled/&gt;") && !catalog.body.contains("<enabled/>"));

    // Groups: create (help desk may not), move the device in, filter the list by it.
    let page = send(&t, "GET", "/console/groups", Some(&admin), None).await;
    let csrf = page.csrf();
    let r = send(
        &t,
        "POST",
        "/console/groups",
        Some(&admin),
        Some(&format!("csrf={csrf}&name=Finance")),
    )
    .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/console/groups?done=created"),
        "{}",
        r.body
    );
    let r = send(
        &t,
        "POST",
        "/console/groups",
        Some(&admin),
        Some(&format!("csrf={csrf}&name=Finance")),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let hpage = send(&t, "GET", "/console/groups", Some(&help), None).await;
    assert!(hpage.body.contains("Finance") && !hpage.body.contains("Create group"));
    let r = send(
        &t,
        "POST",
        "/console/groups",
        Some(&help),
        Some(&format!("csrf={}&name=Ops", hpage.csrf())),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let device_page = format!("/console/devices/{}", e.id);
    let r = send(
        &t,
        "POST",
        &format!("{device_page}/group"),
        Some(&admin),
        Some(&format!("csrf={csrf}&group=Finance")),
    )
    .await;
    assert_eq!(r.location(), format!("{device_page}?done=group"), "{}", r.body);
    let page = send(&t, "GET", &device_page, Some(&admin), None).await;
    assert_eq!(element_text(&page.body, "device-group"), "Finance");
    let list = send(&t, "GET", "/console/devices?group=Finance", Some(&admin), None).await;
    assert!(list.body.contains("PC-GROUPED"));
    // OS version prefix and check-in filters (this device never checked in: no freshness matches).
    for (query, expected) in [
        ("os=10.0", true),
        ("os=6.1", false),
        ("seen=24h", false),
        ("seen=7d", false),
    ] {
        let list = send(&t, "GET", &format!("/console/devices?{query}"), Some(&admin), None).await;
        assert_eq!(list.body.contains("PC-GROUPED"), expected, "{query}");
    }
    let resp = t
        .client()
        .request(
            http::Method::GET,
            &t.url("/api/v1/devices?group=Finance"),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        audit_rows(&t, "device.set_group").await[0].details.as_deref(),
        Some("group: Finance")
    );
    // A group in use cannot be deleted; emptied, it can.
    let g = t.store().group_by_name("Finance").await.unwrap().unwrap();
    let del = format!("/console/groups/{}/delete", g.id);
    let r = send(&t, "POST", &del, Some(&admin), Some(&format!("csrf={csrf}"))).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    send(
        &t,
        "POST",
        &format!("{device_page}/group"),
        Some(&admin),
        Some(&format!("csrf={csrf}&group=")),
    )
    .await;
    let r = send(&t, "POST", &del, Some(&admin), Some(&format!("csrf={csrf}"))).await;
    assert_eq!(r.location(), "/console/groups?done=deleted", "{}", r.body);
    assert!(t.store().group_by_name("Finance").await.unwrap().is_none());

    // Settings: the running configuration, and webhooks paused and resumed (admin only).
    let hook = t
        .client()
        .request(
            http::Method::POST,
            &t.url("/api/v1/webhooks"),
            &[
                ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
                ("content-type", "application/json"),
            ],
            bytes::Bytes::from(
                json!({"name": "siem", "url": "https://siem.example.com/hook", "events": ["all"]}).to_string(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(hook.status, 201, "{}", hook.text());
    let hook: Value = serde_json::from_slice(&hook.body).unwrap();
    let hook_id = hook["webhook"]["id"]
        .as_str()
        .or(hook["id"].as_str())
        .unwrap()
        .to_owned();
    let settings = send(&t, "GET", "/console/settings", Some(&admin), None).await;
    assert!(settings.body.contains("server-settings") && settings.body.contains("siem.example.com"));
    assert!(settings.body.contains("optional"), "require_totp is off here");
    let pause = format!("/console/settings/webhooks/{hook_id}/disable");
    let r = send(&t, "POST", &pause, Some(&admin), Some(&format!("csrf={csrf}"))).await;
    assert_eq!(r.location(), "/console/settings?done=disabled", "{}", r.body);
    let id: WebhookId = hook_id.parse().unwrap();
    assert!(!t.store().webhook(id).await.unwrap().unwrap().enabled);
    let hs = send(&t, "GET", "/console/settings", Some(&help), None).await;
    assert!(
        hs.status == StatusCode::OK && !hs.body.contains("siem.example.com"),
        "help desk sees no webhooks"
    );
    let r = send(
        &t,
        "POST",
        &pause.replace("disable", "enable"),
        Some(&help),
        Some(&format!("csrf={}", hs.csrf())),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &t,
        "POST",
        &pause.replace("disable", "enable"),
        Some(&admin),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.location(), "/console/settings?done=enabled");
    assert!(t.store().webhook(id).await.unwrap().unwrap().enabled);
    assert_eq!(audit_rows(&t, "webhook.update").await.len(), 3);
}

// ---------------------------------------------------------------- browser

/// A minimal W3C WebDriver client (JSON over HTTP/1.1 to a local chromedriver): the handful of
/// commands this test needs, without pulling a WebDriver crate's dependency tree into the build.
struct Browser {
    base: String,
    session: String,
}

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

async fn wd(method: http::Method, url: &str, body: Option<Value>) -> Value {
    let uri: http::Uri = url.parse().unwrap();
    let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(uri.path())
        .header(header::HOST, uri.authority().unwrap().as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(status.is_success(), "WebDriver {url}: {status} {v}");
    v["value"].clone()
}

impl Browser {
    async fn start(base: String) -> Self {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                    "--window-size=1280,1000",
                    // The test server's certificate comes from its own throw-away CA.
                    "--ignore-certificate-errors",
                ],
            },
        }}});
        let v = wd(http::Method::POST, &format!("{base}/session"), Some(caps)).await;
        let session = v["sessionId"].as_str().unwrap().to_owned();
        let b = Self { base, session };
        // A click returns before the navigation it starts has committed: element lookups wait for
        // the next page's elements (implicit wait) and content checks poll (`wait_for`).
        wd(
            http::Method::POST,
            &b.url("/timeouts"),
            Some(json!({"implicit": 10_000})),
        )
        .await;
        b
    }
    /// Polls the page source until `done` holds (10 s), so assertions never read the previous page.
    async fn wait_for(&self, done: impl Fn(&str) -> bool) -> String {
        let mut page = String::new();
        for _ in 0..100 {
            page = self.source().await;
            if done(&page) {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("page never reached the expected state:\n{page}");
    }
    fn url(&self, tail: &str) -> String {
        format!("{}/session/{}{tail}", self.base, self.session)
    }
    async fn goto(&self, url: &str) {
        wd(http::Method::POST, &self.url("/url"), Some(json!({ "url": url }))).await;
    }
    async fn find(&self, css: &str) -> String {
        let v = wd(
            http::Method::POST,
            &self.url("/element"),
            Some(json!({"using": "css selector", "value": css})),
        )
        .await;
        v[ELEMENT_KEY].as_str().unwrap().to_owned()
    }
    async fn find_link(&self, text: &str) -> String {
        let v = wd(
            http::Method::POST,
            &self.url("/element"),
            Some(json!({"using": "link text", "value": text})),
        )
        .await;
        v[ELEMENT_KEY].as_str().unwrap().to_owned()
    }
    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        wd(
            http::Method::POST,
            &self.url(&format!("/element/{el}/value")),
            Some(json!({ "text": text })),
        )
        .await;
    }
    async fn click(&self, el: &str) {
        wd(
            http::Method::POST,
            &self.url(&format!("/element/{el}/click")),
            Some(json!({})),
        )
        .await;
    }
    async fn source(&self) -> String {
        wd(http::Method::GET, &self.url("/source"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }
    async fn current_url(&self) -> String {
        wd(http::Method::GET, &self.url("/url"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }
    async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        wd(http::Method::GET, &self.url(&format!("/element/{el}/text")), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }
    async fn refresh(&self) {
        wd(http::Method::POST, &self.url("/refresh"), Some(json!({}))).await;
    }
    async fn screenshot(&self, name: &str) {
        let v = wd(http::Method::GET, &self.url("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
    async fn quit(self) {
        wd(http::Method::DELETE, &self.url(""), None).await;
    }
}

fn artifacts_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("test-artifacts/console")
}

fn find_program(candidates: &[&str]) -> Option<String> {
    candidates.iter().find_map(|c| {
        if c.contains('/') {
            std::path::Path::new(c).exists().then(|| c.to_string())
        } else {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(c))
                    .find(|f| f.exists())
                    .map(|f| f.to_string_lossy().into_owned())
            })
        }
    })
}

fn chromium_binary() -> String {
    std::env::var("STEWARD_CHROMIUM")
        .ok()
        .or_else(|| find_program(&["/usr/bin/chromium", "chromium", "chromium-browser"]))
        .expect("Chromium is not installed: the console browser test needs it (./scripts/test installs the Debian packages chromium and chromium-driver)")
}

/// Starts chromedriver on a free port; it is killed when the guard drops.
struct Driver(std::process::Child, String);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_chromedriver() -> Driver {
    let bin = std::env::var("STEWARD_CHROMEDRIVER")
        .ok()
        .or_else(|| find_program(&["/usr/bin/chromedriver", "chromedriver"]))
        .expect("chromedriver is not installed: the console browser test needs it (./scripts/test installs the Debian packages chromium and chromium-driver)");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Reaped by Driver's Drop (kill + wait).
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromedriver");
    // Owned by the guard from here, so a failed start still kills it.
    let driver = Driver(child, format!("http://127.0.0.1:{port}"));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start listening on {port}");
}

#[tokio::test]
async fn browser_login_search_sync_and_see_it_acknowledged() {
    let driver = start_chromedriver().await;
    let t = TestServer::start().await;
    console_user(&t, "admin@example.com", Role::Admin).await;
    let mut device = named_device(&t, "DESKTOP-BROWSER1").await;
    let _other = named_device(&t, "LAPTOP-OTHER").await;
    let client = t.device_client(&device);
    // The first session delivers the enrollment-time inventory, so the next sync stands alone.
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();

    let b = Browser::start(driver.1.clone()).await;
    b.goto(&t.url("/console")).await;
    assert!(b.current_url().await.ends_with("/console/login"));
    b.type_into("#email", "admin@example.com").await;
    b.type_into("#password", PASSWORD).await;
    b.screenshot("01-login").await;
    b.click(&b.find("form.login button").await).await;
    // First sign-in: the server requires a second factor and shows the key to set up.
    b.wait_for(|p| p.contains("Set up two-step sign-in")).await;
    let key = b.text("#totp-secret").await;
    b.screenshot("01b-second-factor-setup").await;
    let secret = steward_core::totp::TotpSecret::from_base32(&key).unwrap();
    b.type_into("#code", &secret.code_at(OffsetDateTime::now_utc())).await;
    b.click(&b.find("form.login button").await).await;
    b.wait_for(|p| p.contains("Enrolled devices")).await;
    assert!(b.current_url().await.ends_with("/console"), "{}", b.source().await);
    b.screenshot("02-dashboard").await;

    b.click(&b.find_link("Devices").await).await;
    b.type_into("#q", "browser").await;
    b.click(&b.find("form.search button").await).await;
    let list = b
        .wait_for(|p| p.contains("DESKTOP-BROWSER1") && !p.contains("LAPTOP-OTHER"))
        .await;
    assert!(
        list.contains("DESKTOP-BROWSER1") && !list.contains("LAPTOP-OTHER"),
        "{list}"
    );
    b.screenshot("03-devices-search").await;

    b.click(&b.find_link("DESKTOP-BROWSER1").await).await;
    b.click(&b.find("#action-sync").await).await;
    let page = b.wait_for(|p| p.contains("Sync queued")).await;
    assert!(page.contains("Sync queued"), "{page}");
    assert!(page.contains("state-pending"), "{page}");
    b.screenshot("04-device-sync-queued").await;

    // The device checks in and answers the inventory Get.
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    b.refresh().await;
    // The newest row of the command timeline: the sync, acknowledged with 200.
    let newest_row = |page: &str| -> Option<String> {
        let timeline = &page[page.find("id=\"commands\"")?..];
        let rows = &timeline[timeline.find("<tbody>")?..];
        Some(rows[..rows.find("</tr>")?].to_owned())
    };
    let page = b
        .wait_for(|p| newest_row(p).is_some_and(|r| r.contains("state-succeeded") && r.contains(">200<")))
        .await;
    assert!(newest_row(&page).is_some());
    b.screenshot("05-device-sync-acknowledged").await;

    let device_url = b.current_url().await;
    b.click(&b.find_link("Enrollment").await).await;
    b.type_into("#description", "pilot laptops").await;
    b.click(&b.find("form.stack button").await).await;
    let page = b.wait_for(|p| p.contains("stw_enr_")).await;
    assert!(
        page.contains("stw_enr_")
            && page.contains("ms-device-enrollment:?mode=mdm")
            && page.contains("id=\"enroll-qr\"")
    );
    b.screenshot("06-enrollment-token").await;

    // Groups: create one and move the device into it.
    b.click(&b.find_link("Groups").await).await;
    b.type_into("#group-name", "Pilot").await;
    b.click(&b.find("form.stack button").await).await;
    b.wait_for(|p| p.contains("Group created")).await;
    b.goto(&device_url).await;
    b.click(&b.find("#move-group option[value=\"Pilot\"]").await).await;
    b.click(&b.find("form[action$=\"/group\"] button").await).await;
    b.wait_for(|p| p.contains("Group changed")).await;
    assert_eq!(b.text("#device-group").await, "Pilot");
    b.click(&b.find_link("Groups").await).await;
    b.wait_for(|p| p.contains("Pilot")).await;
    b.screenshot("07-groups").await;
    b.click(&b.find_link("Settings").await).await;
    b.wait_for(|p| p.contains("server-settings")).await;
    b.screenshot("08-settings").await;

    // Wipe from the console: confirm by typing the name; the device acknowledges at its next
    // session and leaves management.
    b.goto(&device_url).await;
    b.click(&b.find_link("Wipe…").await).await;
    b.wait_for(|p| p.contains("Wipe DESKTOP-BROWSER1?")).await;
    b.type_into("#confirm_name", "DESKTOP-BROWSER1").await;
    b.screenshot("09-wipe-confirm").await;
    b.click(&b.find("button.danger").await).await;
    b.wait_for(|p| p.contains("Wipe queued")).await;
    device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    b.refresh().await;
    b.wait_for(|p| p.contains("state-wiped")).await;
    b.screenshot("10-wiped").await;

    b.goto(&t.url("/console")).await;
    b.wait_for(|p| p.contains("chart-commands")).await;
    b.screenshot("11-dashboard-charts").await;
    b.click(&b.find_link("Audit log").await).await;
    b.wait_for(|p| p.contains("device.wipe") && p.contains("device.set_group"))
        .await;
    b.screenshot("12-audit").await;
    b.quit().await;
    drop(driver);
    t.server.shutdown().await;
}

#[tokio::test]
async fn a_group_scoped_console_user_sees_only_its_group() {
    let t = without_required_totp().await;
    let inside = named_device(&t, "PC-TEAM").await;
    let outside = named_device(&t, "PC-ELSEWHERE").await;
    let (inside, outside) = (t.enrollment_of(&inside).await, t.enrollment_of(&outside).await);
    let team = Group {
        id: GroupId::new(),
        name: "team".into(),
        created_at: OffsetDateTime::now_utc(),
        rule: None,
    };
    t.store().create_group(&team).await.unwrap();
    t.store().set_enrollment_group(inside.id, Some(team.id)).await.unwrap();
    scoped_console_user(&t, "lead@example.com", Role::Operator, Some(team.id)).await;
    let lead = login(&t, "lead@example.com").await;

    let list = send(&t, "GET", "/console/devices", Some(&lead), None).await;
    assert!(
        list.body.contains("PC-TEAM") && !list.body.contains("PC-ELSEWHERE"),
        "{}",
        list.body
    );
    let r = send(
        &t,
        "GET",
        &format!("/console/devices/{}", outside.id),
        Some(&lead),
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "another group's device does not exist for it"
    );
    let page = send(&t, "GET", &format!("/console/devices/{}", inside.id), Some(&lead), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("action-sync") && !page.body.contains("move-group"));
    let csrf = page.csrf();
    // Acting on its own devices works; on others' it is refused without revealing them.
    let r = send(
        &t,
        "POST",
        &format!("/console/devices/{}/actions/sync", inside.id),
        Some(&lead),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let r = send(
        &t,
        "POST",
        &format!("/console/devices/{}/actions/sync", outside.id),
        Some(&lead),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Nothing global: no audit log, no group management, no moving devices; only its group listed.
    let nav = send(&t, "GET", "/console", Some(&lead), None).await;
    assert!(!nav.body.contains("href=\"/console/audit\"") && !nav.body.contains("href=\"/console/enrollment\""));
    assert_eq!(
        send(&t, "GET", "/console/audit", Some(&lead), None).await.status,
        StatusCode::FORBIDDEN
    );
    let groups = send(&t, "GET", "/console/groups", Some(&lead), None).await;
    assert!(groups.body.contains(">team<") && !groups.body.contains("Create group"));
    let r = send(
        &t,
        "POST",
        "/console/groups",
        Some(&lead),
        Some(&format!("csrf={csrf}&name=x")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &t,
        "POST",
        &format!("/console/devices/{}/group", inside.id),
        Some(&lead),
        Some(&format!("csrf={csrf}&group=")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let refused = audit_rows(&t, "group.create").await;
    assert_eq!(refused[0].actor_role, Some(Role::Operator));
    assert_eq!(refused[0].outcome, AuditOutcome::Failure);
}

#[tokio::test]
async fn disabling_a_user_or_removing_console_access_ends_their_sessions() {
    let t = without_required_totp().await;
    console_user(&t, "ops@example.com", Role::Operator).await;
    let cookie = login(&t, "ops@example.com").await;
    let id = t
        .store()
        .console_user_by_email("ops@example.com")
        .await
        .unwrap()
        .unwrap()
        .user
        .id;
    let patch = |body: Value| {
        let t = &t;
        async move {
            t.client()
                .request(
                    http::Method::PATCH,
                    &t.url(&format!("/api/v1/users/{id}")),
                    &[
                        ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
                        ("content-type", "application/json"),
                    ],
                    bytes::Bytes::from(body.to_string()),
                )
                .await
                .unwrap()
        }
    };
    // A role change applies at once (the session re-reads the role; sessions are ended anyway).
    let r = patch(json!({"console_role": "auditor"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["console_role"], "auditor");
    let r = send(&t, "GET", "/console", Some(&cookie), None).await;
    assert_eq!(r.location(), "/console/login", "sessions ended by the change");
    let cookie = login(&t, "ops@example.com").await;
    assert!(
        send(&t, "GET", "/console", Some(&cookie), None)
            .await
            .body
            .contains("(auditor)")
    );

    // Disabled: sessions end, the password no longer signs in.
    let r = patch(json!({"disabled": true})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(&t, "GET", "/console", Some(&cookie), None).await;
    assert_eq!(r.location(), "/console/login");
    let form = format!("email=ops%40example.com&password={}", enc(PASSWORD));
    assert_eq!(
        send(&t, "POST", "/console/login", None, Some(&form)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(patch(json!({"disabled": false})).await.status, 200);
    assert_eq!(
        send(&t, "POST", "/console/login", None, Some(&form)).await.status,
        StatusCode::SEE_OTHER
    );

    // Console access removed: the user stays (for enrollment) but cannot sign in; bad input is refused.
    assert_eq!(patch(json!({"console_role": "none"})).await.status, 200);
    assert_eq!(
        send(&t, "POST", "/console/login", None, Some(&form)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(patch(json!({"console_role": "root"})).await.status, 422);
    assert_eq!(patch(json!({"console_group": "no-such-group"})).await.status, 422);
    assert_eq!(patch(json!({"nickname": "x"})).await.status, 422);
    let updates = audit_rows(&t, "user.update").await;
    assert!(
        updates.iter().any(|e| e.details.as_deref() == Some("disabled")),
        "{updates:?}"
    );
}

// ---------------------------------------------------------------- configuration

/// An admin API call with the bootstrap token (for what the console does not do itself).
async fn api_call(t: &TestServer, method: http::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let body = body.map_or_else(bytes::Bytes::new, |b| bytes::Bytes::from(b.to_string()));
    let resp = t.client().request(method, &t.url(path), &headers, body).await.unwrap();
    (resp.status, serde_json::from_slice(&resp.body).unwrap_or(Value::Null))
}

async fn device_sync(t: &TestServer, d: &mut ManagedDevice) {
    let client = t.device_client(d);
    let report = d.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.ended, "the server ends the session");
}

/// The configuration pages over a simulated device: a catalog entry assigned in one click (CSRF
/// checked, audited as `catalog.assign`, refused for a read-only role), the profile list and page
/// with per-status counts, the device's settings table, a drift found by "Verify now" in the
/// device's configuration events, the rollout's rings, "Verify all devices" and the delete
/// confirmation, each audited under the API's action name; the auditor sees every page and no form.
#[tokio::test]
async fn profile_pages_catalog_assign_device_settings_and_drift() {
    const ENTRY: &str = "baseline-defender-antivirus";
    let t = without_required_totp().await;
    console_user(&t, "admin@example.com", Role::Admin).await;
    console_user(&t, "audit@example.com", Role::Auditor).await;
    let mut device = t.managed_device(None).await;
    let e = t.enrollment_of(&device).await;
    let admin = login(&t, "admin@example.com").await;
    let auditor = login(&t, "audit@example.com").await;

    // The catalog offers the one-click assignment to those who may write profiles only.
    let assign = format!("/console/catalog/{ENTRY}/assign");
    let catalog = send(&t, "GET", "/console/catalog", Some(&admin), None).await;
    assert!(
        catalog.body.contains(&format!("action=\"{assign}\"")),
        "{}",
        catalog.body
    );
    assert!(
        !catalog.body.contains("action=\"/console/catalog/kind-msi-app/assign\""),
        "entries that need parameters are not assignable"
    );
    let acatalog = send(&t, "GET", "/console/catalog", Some(&auditor), None).await;
    assert_eq!(acatalog.status, StatusCode::OK);
    assert!(
        !acatalog.body.contains("/assign\""),
        "the auditor gets no assignment form"
    );
    assert!(
        acatalog.body.contains("href=\"/console/profiles\""),
        "Profiles in the menu"
    );
    let csrf = catalog.csrf();
    for form in ["to=all", "csrf=forged&to=all"] {
        let r = send(&t, "POST", &assign, Some(&admin), Some(form)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{form}");
    }
    assert!(t.store().profile_by_name(ENTRY).await.unwrap().is_none());
    let r = send(
        &t,
        "POST",
        &assign,
        Some(&auditor),
        Some(&format!("csrf={}&to=all", acatalog.csrf())),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(t.store().profile_by_name(ENTRY).await.unwrap().is_none());
    let r = send(&t, "POST", &assign, Some(&admin), Some(&format!("csrf={csrf}&to=all"))).await;
    let profile_page = format!("/console/profiles/{ENTRY}");
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, format!("{profile_page}?done=assigned").as_str()),
        "{}",
        r.body
    );
    let assigned = audit_rows(&t, "catalog.assign").await;
    assert_eq!(assigned.len(), 2, "the refusal and the assignment");
    assert_eq!(
        (
            assigned[0].actor.as_str(),
            assigned[0].target.as_deref(),
            assigned[0].details.as_deref(),
            assigned[0].status
        ),
        (
            "admin@example.com (console)",
            Some(ENTRY),
            Some(format!("{ENTRY} created").as_str()),
            Some(200)
        )
    );
    assert_eq!(
        (assigned[1].outcome, assigned[1].status),
        (AuditOutcome::Failure, Some(403))
    );

    // Before the device checks in: assigned, one device, its settings pending with the reason.
    let list = send(&t, "GET", "/console/profiles", Some(&auditor), None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        list.body.contains(&format!("data-profile=\"{ENTRY}\"")),
        "{}",
        list.body
    );
    assert!(list.body.contains("all devices"));
    let device_page = format!("/console/devices/{}", e.id);
    let page = send(&t, "GET", &device_page, Some(&admin), None).await;
    assert!(page.body.contains("id=\"device-settings\"") && page.body.contains("has not checked in since"));

    // Delivered and read back: every setting verified on the device page and in the counts.
    for _ in 0..3 {
        device_sync(&t, &mut device).await;
    }
    let rows = t.store().device_configuration(e.id).await.unwrap().settings;
    assert!(!rows.is_empty());
    let readable = rows
        .iter()
        .find(|r| r.setting.readable && r.setting.format == "int" && r.status == SettingStatus::Verified)
        .unwrap_or_else(|| panic!("a verified int setting in {rows:?}"))
        .clone();
    let page = send(&t, "GET", &device_page, Some(&admin), None).await;
    assert!(page.body.contains(&format!("data-path=\"{}\"", readable.path)));
    assert!(page.body.contains("state-verified") && page.body.contains("id=\"action-verify\""));
    let shown = send(&t, "GET", &profile_page, Some(&admin), None).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(shown.body.contains("id=\"profile-settings\"") && shown.body.contains(&readable.path));
    assert_eq!(element_text(&shown.body, "profile-devices"), "1");
    let verified_cell = format!("data-status=\"verified\">{}<", rows.len());
    assert!(shown.body.contains(&verified_cell), "{verified_cell} in {}", shown.body);
    assert!(shown.body.contains("id=\"action-verify-profile\"") && shown.body.contains("Delete profile"));
    let ashown = send(&t, "GET", &profile_page, Some(&auditor), None).await;
    assert_eq!(ashown.status, StatusCode::OK);
    assert!(
        !ashown.body.contains("method=\"post\" action=\"/console/profiles"),
        "{}",
        ashown.body
    );
    assert!(!ashown.body.contains("Delete profile"));
    let adevice = send(&t, "GET", &device_page, Some(&auditor), None).await;
    assert!(adevice.body.contains("id=\"device-settings\"") && !adevice.body.contains("action-verify"));

    // A local change, found by "Verify now" (CSRF-checked, audited as device.verify): drift in the
    // device's configuration events, and the value sent again.
    device.set_local(&readable.path, "999").unwrap();
    let verify = format!("{device_page}/actions/verify");
    let r = send(&t, "POST", &verify, Some(&admin), Some("csrf=forged")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &t,
        "POST",
        &verify,
        Some(&auditor),
        Some(&format!("csrf={}", adevice.csrf())),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(&t, "POST", &verify, Some(&admin), Some(&format!("csrf={csrf}"))).await;
    assert_eq!(r.location(), format!("{device_page}?done=verify"), "{}", r.body);
    let verified = audit_rows(&t, "device.verify").await;
    assert_eq!(verified.len(), 2);
    assert_eq!(
        (
            verified[0].target.as_deref(),
            verified[0].details.as_deref(),
            verified[0].status
        ),
        (Some(e.id.to_string().as_str()), Some("1 devices"), Some(202))
    );
    assert_eq!(verified[1].status, Some(403));
    device_sync(&t, &mut device).await;
    let page = send(&t, "GET", &device_page, Some(&admin), None).await;
    assert!(
        page.body.contains("id=\"device-events\"") && page.body.contains("setting_drifted"),
        "{}",
        page.body
    );
    assert!(page.body.contains("found 999; sent again"), "{}", page.body);

    // "Verify all devices" on the profile: audited as profile.verify with the devices it covered.
    let pverify = format!("{profile_page}/verify");
    let r = send(&t, "POST", &pverify, Some(&admin), Some("")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(&t, "POST", &pverify, Some(&admin), Some(&format!("csrf={csrf}"))).await;
    assert_eq!(r.location(), format!("{profile_page}?done=verify"), "{}", r.body);
    let pv = audit_rows(&t, "profile.verify").await;
    assert_eq!(
        (pv.len(), pv[0].target.as_deref(), pv[0].details.as_deref()),
        (1, Some(ENTRY), Some("1 devices"))
    );

    // A rollout started over the API shows its rings; pausing it from the page is rollout.pause.
    let (status, body) = api_call(
        &t,
        http::Method::POST,
        &format!("/api/v1/profiles/{ENTRY}/rollout"),
        Some(json!({"rings": [{"percent": 50}, {"everyone": true}], "auto_advance": false})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let shown = send(&t, "GET", &profile_page, Some(&admin), None).await;
    assert!(shown.body.contains("id=\"rollout-rings\"") && shown.body.contains("50 % of devices"));
    let r = send(
        &t,
        "POST",
        &format!("{profile_page}/rollout/pause"),
        Some(&admin),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(audit_rows(&t, "rollout.pause").await[0].outcome, AuditOutcome::Success);
    let shown = send(&t, "GET", &profile_page, Some(&admin), None).await;
    assert!(shown.body.contains("state-paused"), "{}", shown.body);

    // Delete: a confirmation page; a wrong name is refused (422), the auditor too (403), both
    // audited as profile.delete; the exact name deletes.
    let delete = format!("{profile_page}/delete");
    let confirm = send(&t, "GET", &delete, Some(&admin), None).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("id=\"confirm_name\""));
    assert_eq!(
        send(&t, "GET", &delete, Some(&auditor), None).await.status,
        StatusCode::FORBIDDEN
    );
    let r = send(
        &t,
        "POST",
        &delete,
        Some(&admin),
        Some(&format!("csrf={csrf}&confirm_name=nope")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("does not match"));
    let r = send(
        &t,
        "POST",
        &delete,
        Some(&auditor),
        Some(&format!("csrf={}&confirm_name={ENTRY}", adevice.csrf())),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(t.store().profile_by_name(ENTRY).await.unwrap().is_some());
    let r = send(
        &t,
        "POST",
        &delete,
        Some(&admin),
        Some(&format!("csrf={csrf}&confirm_name={ENTRY}")),
    )
    .await;
    assert_eq!(r.location(), "/console/profiles?done=deleted", "{}", r.body);
    assert!(t.store().profile_by_name(ENTRY).await.unwrap().is_none());
    let deleted = audit_rows(&t, "profile.delete").await;
    assert_eq!(
        deleted.iter().map(|a| a.status).collect::<Vec<_>>(),
        [Some(204), Some(403), Some(422)]
    );
    assert_eq!(deleted[0].target.as_deref(), Some(ENTRY));
}
