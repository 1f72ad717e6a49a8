//! Bad input: every case gets the right SOAP fault (or HTTP status) and leaves no device row and no
//! issued certificate behind.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use steward_domain::*;
use steward_pki::{CsrSignatureAlgorithm, DeviceKey};
use steward_sim::{Credentials, HttpsClient, Response, enroll::enroll};
use steward_windows_proto::mde2::{self, Credential, DiscoverRequest};
use x509_parser::prelude::*;

use crate::common::TestServer;

const SOAP: &str = "application/soap+xml; charset=utf-8";
const DEVICE_ID: &str = "AABBCCDDEEFF00112233445566778899";

fn cred(token: &str) -> Credential {
    Credential::UsernameToken {
        username: "eve@example.com".into(),
        password: token.into(),
    }
}

fn context() -> Vec<(String, String)> {
    vec![
        ("DeviceID".into(), DEVICE_ID.into()),
        ("EnrollmentType".into(), "Full".into()),
        ("DeviceName".into(), "BAD-INPUT".into()),
    ]
}

async fn post_rst(t: &TestServer, client: &HttpsClient, cred: &Credential, csr: &[u8]) -> Response {
    let url = t.url("/EnrollmentServer/Enrollment.svc");
    let body = mde2::write_rst_request(
        "urn:uuid:11111111-2222-3333-4444-555555555555",
        &url,
        cred,
        &STANDARD.encode(csr),
        &context(),
    );
    client.post(&url, SOAP, body).await.unwrap()
}

fn fault_of(resp: &Response) -> (String, String) {
    mde2::parse_fault(&resp.text())
        .unwrap_or_else(|| panic!("expected a SOAP fault, got {}: {}", resp.status, resp.text()))
}

async fn assert_nothing_written(t: &TestServer) {
    assert_eq!(t.enrollment_count().await, 0, "no enrollment row");
    assert_eq!(t.issued_count().await, 0, "no issued certificate");
}

fn key() -> &'static DeviceKey {
    static KEY: std::sync::OnceLock<DeviceKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| DeviceKey::generate_rsa(2048).unwrap())
}

fn good_csr() -> Vec<u8> {
    steward_pki::build_windows_csr(
        key(),
        &format!("ABC!{DEVICE_ID}\0"),
        DEVICE_ID,
        CsrSignatureAlgorithm::Sha1RsaOiw,
    )
    .unwrap()
}

#[tokio::test]
async fn malformed_hostile_and_misrouted_messages() {
    let t = TestServer::start().await;
    let client = t.client();
    let url = t.url("/EnrollmentServer/Enrollment.svc");

    // Not XML at all.
    let resp = client.post(&url, SOAP, "this is not xml <").await.unwrap();
    assert_eq!(resp.status, 400);
    assert!(fault_of(&resp).0.contains("MessageFormat"));

    // A DTD with an entity: rejected, never expanded.
    let evil = r#"<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x "xxxxxxxxxxxxxxxx">]><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&x;</s:Body></s:Envelope>"#;
    let resp = client.post(&url, SOAP, evil).await.unwrap();
    assert!(fault_of(&resp).0.contains("MessageFormat"));
    assert!(!resp.text().contains("xxxxxxxxxxxxxxxx"));

    // Oversized: refused with 413 from the declared length, before the body is read.
    let big = vec![b'a'; 300 * 1024];
    let resp = client.post(&url, SOAP, big).await.unwrap();
    assert_eq!(resp.status, 413);

    // Wrong SOAP action: a GetPolicies body posted to the enrollment service, and an RST whose
    // action says GetPolicies.
    let token = t.token(Some(1), ::time::Duration::hours(1), None).await;
    let policies = mde2::write_get_policies_request("urn:uuid:1", &url, &cred(&token));
    let resp = client.post(&url, SOAP, policies).await.unwrap();
    let (code, _) = fault_of(&resp);
    assert!(code.contains("MessageFormat"));
    assert!(resp.text().contains("urn:uuid:1"), "RelatesTo echoes the MessageID");
    let rst = mde2::write_rst_request(
        "urn:uuid:2",
        &url,
        &cred(&token),
        &STANDARD.encode(good_csr()),
        &context(),
    )
    .replace(mde2::ACTION_RST, mde2::ACTION_GET_POLICIES);
    let resp = client.post(&url, SOAP, rst).await.unwrap();
    assert!(fault_of(&resp).0.contains("MessageFormat"));

    // Discover with a version older than 4.0 is refused; 9.0 (Windows 11 25H2) is accepted.
    let disc_url = t.url("/EnrollmentServer/Discovery.svc");
    let mut d = DiscoverRequest {
        request_version: Some("3.0".into()),
        ..Default::default()
    };
    let resp = client
        .post(
            &disc_url,
            SOAP,
            mde2::write_discover_request("urn:uuid:3", &disc_url, &d),
        )
        .await
        .unwrap();
    assert!(fault_of(&resp).0.contains("MessageFormat"));
    d.request_version = Some("9.0".into());
    let resp = client
        .post(
            &disc_url,
            SOAP,
            mde2::write_discover_request("urn:uuid:4", &disc_url, &d),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        resp.headers.contains_key(http::header::CONTENT_LENGTH),
        "explicit Content-Length"
    );
    assert!(!resp.headers.contains_key(http::header::TRANSFER_ENCODING));

    assert_nothing_written(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn credentials_are_required_and_checked() {
    let t = TestServer::start().await;
    let client = t.client();
    let url = t.url("/EnrollmentServer/Policy.svc");

    // No credentials at all, on policy and on enrollment.
    let body = mde2::write_get_policies_request("urn:uuid:5", &url, &cred("x"));
    let no_security = strip_security(&body);
    let resp = client.post(&url, SOAP, no_security).await.unwrap();
    assert!(fault_of(&resp).0.contains("Authentication"));
    let rst = mde2::write_rst_request("urn:uuid:6", &url, &cred("x"), &STANDARD.encode(good_csr()), &context());
    let resp = client
        .post(&t.url("/EnrollmentServer/Enrollment.svc"), SOAP, strip_security(&rst))
        .await
        .unwrap();
    assert!(fault_of(&resp).0.contains("Authentication"));

    // An unknown token, an expired token, a wrong user password.
    let resp = post_rst(&t, &client, &cred("stw_enr_unknown"), &good_csr()).await;
    assert!(fault_of(&resp).0.contains("Authentication"));
    let expired = t.token(None, ::time::Duration::seconds(1), None).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let resp = post_rst(&t, &client, &cred(&expired), &good_csr()).await;
    let (code, reason) = fault_of(&resp);
    assert!(
        code.contains("Authentication") && reason.contains("expired"),
        "{code} {reason}"
    );
    let resp = post_rst(&t, &client, &cred("not-a-user-password"), &good_csr()).await;
    assert!(fault_of(&resp).0.contains("Authentication"));
    assert_nothing_written(&t).await;

    // A single-use token works once, then is refused.
    let once = t.token(Some(1), ::time::Duration::hours(1), None).await;
    let resp = post_rst(&t, &client, &cred(&once), &good_csr()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = post_rst(&t, &client, &cred(&once), &good_csr()).await;
    let (code, reason) = fault_of(&resp);
    assert!(
        code.contains("Authentication") && reason.contains("no uses left"),
        "{code} {reason}"
    );
    assert_eq!(t.enrollment_count().await, 1);
    assert_eq!(t.issued_count().await, 1);
    t.server.shutdown().await;
}

fn strip_security(xml: &str) -> String {
    let start = xml.find("<wsse:Security").unwrap();
    let end = xml.find("</wsse:Security>").unwrap() + "</wsse:Security>".len();
    format!("{}{}", &xml[..start], &xml[end..])
}

#[tokio::test]
async fn bad_certificate_requests() {
    let t = TestServer::start().await;
    let client = t.client();
    let token = t.token(None, ::time::Duration::hours(1), None).await;

    // Signature does not verify.
    let mut tampered = good_csr();
    let n = tampered.len();
    tampered[n - 10] ^= 0x55;
    let resp = post_rst(&t, &client, &cred(&token), &tampered).await;
    assert!(fault_of(&resp).0.contains("CertificateRequest"));

    // Not DER at all.
    let resp = post_rst(&t, &client, &cred(&token), b"definitely not a CSR").await;
    assert!(fault_of(&resp).0.contains("CertificateRequest"));

    // RSA-1024 is below the minimum.
    // (aws-lc-rs refuses to make such a key, so openssl makes the whole request.)
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-subj",
            "/CN=small",
            "-outform",
            "DER",
            "-keyout",
        ])
        .arg(dir.path().join("k.pem"))
        .arg("-out")
        .arg(dir.path().join("csr.der"))
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csr = std::fs::read(dir.path().join("csr.der")).unwrap();
    let resp = post_rst(&t, &client, &cred(&token), &csr).await;
    let (code, reason) = fault_of(&resp);
    assert!(
        code.contains("CertificateRequest") && reason.contains("1024"),
        "{code} {reason}"
    );
    assert_nothing_written(&t).await;

    // A CSR asking for CA:true and extra SANs: enrolled, but the request's extensions are ignored.
    let basic_constraints_ca = steward_pki::extension_der(&[2, 5, 29, 19], true, &[0x30, 0x03, 0x01, 0x01, 0xff]);
    // SAN with dNSName "evil.example.com".
    let mut san_value = vec![0x30, 18, 0x82, 16];
    san_value.extend_from_slice(b"evil.example.com");
    let san = steward_pki::extension_der(&[2, 5, 29, 17], false, &san_value);
    let csr = steward_pki::build_csr_with_extensions(
        key(),
        &format!("ABC!{DEVICE_ID}\0"),
        &[basic_constraints_ca, san],
        CsrSignatureAlgorithm::Sha256Rsa,
    )
    .unwrap();
    let resp = post_rst(&t, &client, &cred(&token), &csr).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let doc = mde2::parse_provisioning_doc(&mde2::parse_rstr(&resp.text()).unwrap()).unwrap();
    let der = doc.client_certificate_der().unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert!(!cert.is_ca());
    let bc = cert.basic_constraints().unwrap().map(|b| b.value.ca);
    assert_eq!(bc, Some(false), "explicit CA:false");
    assert!(
        cert.subject_alternative_name().unwrap().is_none(),
        "no SAN copied from the request"
    );
    t.server.shutdown().await;
}

/// Wraps the real store so the enrollment commit fails: the device must get a fault, and the signed
/// certificate must be accounted for as void with nothing else written.
struct FailingCommit(Arc<dyn Store>);

#[async_trait::async_trait]
impl Store for FailingCommit {
    async fn create_console_user(&self, u: &User, role: Role) -> StoreResult<()> {
        self.0.create_console_user(u, role).await
    }
    async fn console_user_by_email(&self, email: &str) -> StoreResult<Option<ConsoleUser>> {
        self.0.console_user_by_email(email).await
    }
    async fn create_console_session(&self, s: &ConsoleSession) -> StoreResult<()> {
        self.0.create_console_session(s).await
    }
    async fn console_session(&self, h: &TokenHash) -> StoreResult<Option<(ConsoleSession, ConsoleUser)>> {
        self.0.console_session(h).await
    }
    async fn touch_console_session(&self, h: &TokenHash, now: ::time::OffsetDateTime) -> StoreResult<()> {
        self.0.touch_console_session(h, now).await
    }
    async fn delete_console_session(&self, h: &TokenHash, now: ::time::OffsetDateTime) -> StoreResult<bool> {
        self.0.delete_console_session(h, now).await
    }
    async fn device_stats(&self, now: ::time::OffsetDateTime) -> StoreResult<DeviceStats> {
        self.0.device_stats(now).await
    }
    async fn create_enrollment_token(&self, t: &NewEnrollmentToken) -> StoreResult<EnrollmentToken> {
        self.0.create_enrollment_token(t).await
    }
    async fn enrollment_token_by_hash(&self, h: &TokenHash) -> StoreResult<Option<EnrollmentToken>> {
        self.0.enrollment_token_by_hash(h).await
    }
    async fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentToken>> {
        self.0.list_enrollment_tokens().await
    }
    async fn group_by_name(&self, n: &str) -> StoreResult<Option<Group>> {
        self.0.group_by_name(n).await
    }
    async fn create_user(&self, u: &User) -> StoreResult<()> {
        self.0.create_user(u).await
    }
    async fn user_by_email(&self, e: &str) -> StoreResult<Option<User>> {
        self.0.user_by_email(e).await
    }
    async fn put_admin_token(&self, n: &str, h: &TokenHash, at: ::time::OffsetDateTime) -> StoreResult<()> {
        self.0.put_admin_token(n, h, at).await
    }
    async fn admin_token_exists(&self, h: &TokenHash) -> StoreResult<bool> {
        self.0.admin_token_exists(h).await
    }
    async fn count_admin_tokens(&self) -> StoreResult<u64> {
        self.0.count_admin_tokens().await
    }
    async fn active_enrollment_by_device_id(&self, d: &DeviceId) -> StoreResult<Option<Enrollment>> {
        self.0.active_enrollment_by_device_id(d).await
    }
    async fn enrollment_by_id(&self, id: EnrollmentId) -> StoreResult<Option<Enrollment>> {
        self.0.enrollment_by_id(id).await
    }
    async fn list_enrollments(&self) -> StoreResult<Vec<Enrollment>> {
        self.0.list_enrollments().await
    }
    async fn commit_enrollment(&self, _c: &EnrollmentCommit) -> StoreResult<()> {
        Err(StoreError::Backend("disk I/O error (injected)".into()))
    }
    async fn append_issuance_log(&self, e: &IssuanceLogEntry) -> StoreResult<()> {
        self.0.append_issuance_log(e).await
    }
    async fn issuance_log(&self) -> StoreResult<Vec<IssuanceLogEntry>> {
        self.0.issuance_log().await
    }
    async fn enrollment_by_certificate(&self, t: &str) -> StoreResult<Option<Enrollment>> {
        self.0.enrollment_by_certificate(t).await
    }
    async fn renew_certificate(&self, r: &CertificateRenewal) -> StoreResult<()> {
        self.0.renew_certificate(r).await
    }
    async fn md5_credential(&self, id: EnrollmentId) -> StoreResult<Option<String>> {
        self.0.md5_credential(id).await
    }
    async fn device_events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<DeviceEvent>> {
        self.0.device_events_after(after, limit).await
    }
    async fn device_events_for(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceEvent>> {
        self.0.device_events_for(id).await
    }
    async fn end_enrollment(
        &self,
        id: EnrollmentId,
        s: EnrollmentState,
        reason: &str,
        now: ::time::OffsetDateTime,
    ) -> StoreResult<bool> {
        self.0.end_enrollment(id, s, reason, now).await
    }
    async fn enqueue_commands(&self, c: &[NewCommand]) -> StoreResult<()> {
        self.0.enqueue_commands(c).await
    }
    async fn command(&self, id: CommandId) -> StoreResult<Option<Command>> {
        self.0.command(id).await
    }
    async fn commands_for_enrollment(&self, id: EnrollmentId) -> StoreResult<Vec<Command>> {
        self.0.commands_for_enrollment(id).await
    }
    async fn deliverable_commands(&self, id: EnrollmentId, now: ::time::OffsetDateTime) -> StoreResult<Vec<Command>> {
        self.0.deliverable_commands(id, now).await
    }
    async fn cancel_command(&self, id: CommandId, now: ::time::OffsetDateTime) -> StoreResult<bool> {
        self.0.cancel_command(id, now).await
    }
    async fn command_result(&self, id: CommandId) -> StoreResult<Option<CommandResult>> {
        self.0.command_result(id).await
    }
    async fn session_state(&self, id: EnrollmentId) -> StoreResult<Option<SessionState>> {
        self.0.session_state(id).await
    }
    async fn commit_session_message(
        &self,
        id: EnrollmentId,
        c: &SessionCommit,
        now: ::time::OffsetDateTime,
    ) -> StoreResult<()> {
        self.0.commit_session_message(id, c, now).await
    }
    async fn device_facts(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceFact>> {
        self.0.device_facts(id).await
    }
    async fn fact_history(&self, id: EnrollmentId) -> StoreResult<Vec<FactChange>> {
        self.0.fact_history(id).await
    }
    async fn device_messages(&self, id: EnrollmentId) -> StoreResult<Vec<(::time::OffsetDateTime, String)>> {
        self.0.device_messages(id).await
    }
    async fn list_devices(&self, q: &DeviceQuery) -> StoreResult<Vec<Enrollment>> {
        self.0.list_devices(q).await
    }
    async fn latest_enrollment_by_device_id(&self, d: &DeviceId) -> StoreResult<Option<Enrollment>> {
        self.0.latest_enrollment_by_device_id(d).await
    }
    async fn revoke_enrollment_token(&self, id: EnrollmentTokenId) -> StoreResult<bool> {
        self.0.revoke_enrollment_token(id).await
    }
    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.0.list_users().await
    }
    async fn list_groups(&self) -> StoreResult<Vec<Group>> {
        self.0.list_groups().await
    }
    async fn create_api_token(&self, t: &NewApiToken) -> StoreResult<ApiToken> {
        self.0.create_api_token(t).await
    }
    async fn api_token_by_hash(&self, h: &TokenHash) -> StoreResult<Option<ApiToken>> {
        self.0.api_token_by_hash(h).await
    }
    async fn list_api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        self.0.list_api_tokens().await
    }
    async fn revoke_api_token(&self, id: ApiTokenId, now: ::time::OffsetDateTime) -> StoreResult<bool> {
        self.0.revoke_api_token(id, now).await
    }
    async fn touch_api_token(&self, id: ApiTokenId, now: ::time::OffsetDateTime) -> StoreResult<()> {
        self.0.touch_api_token(id, now).await
    }
    async fn admin_counts(&self) -> StoreResult<AdminCounts> {
        self.0.admin_counts().await
    }
    async fn append_audit_event(&self, e: &NewAuditEvent) -> StoreResult<AuditEvent> {
        self.0.append_audit_event(e).await
    }
    async fn audit_events(&self, f: &AuditFilter, after: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        self.0.audit_events(f, after, limit).await
    }
    async fn create_webhook(&self, w: &NewWebhook) -> StoreResult<Webhook> {
        self.0.create_webhook(w).await
    }
    async fn webhook(&self, id: WebhookId) -> StoreResult<Option<Webhook>> {
        self.0.webhook(id).await
    }
    async fn list_webhooks(&self) -> StoreResult<Vec<Webhook>> {
        self.0.list_webhooks().await
    }
    async fn delete_webhook(&self, id: WebhookId) -> StoreResult<bool> {
        self.0.delete_webhook(id).await
    }
    async fn queue_webhook_ping(&self, id: WebhookId, now: ::time::OffsetDateTime) -> StoreResult<Option<WebhookPing>> {
        self.0.queue_webhook_ping(id, now).await
    }
    async fn next_webhook_ping(&self, id: WebhookId) -> StoreResult<Option<WebhookPing>> {
        self.0.next_webhook_ping(id).await
    }
    async fn advance_webhook_cursor(&self, id: WebhookId, seq: i64) -> StoreResult<()> {
        self.0.advance_webhook_cursor(id, seq).await
    }
    async fn record_webhook_attempt(&self, a: &WebhookAttempt) -> StoreResult<()> {
        self.0.record_webhook_attempt(a).await
    }
    async fn webhook_deliveries(
        &self,
        id: WebhookId,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        self.0.webhook_deliveries(id, before_id, limit).await
    }
    async fn prune_webhook_deliveries(
        &self,
        older_than: ::time::OffsetDateTime,
        keep_per_webhook: u32,
    ) -> StoreResult<u64> {
        self.0.prune_webhook_deliveries(older_than, keep_per_webhook).await
    }
}

#[tokio::test]
async fn failed_commit_voids_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start_in(
        dir,
        |_| {},
        Some(Box::new(|s| Arc::new(FailingCommit(s)) as Arc<dyn Store>)),
    )
    .await;
    let token = t.token(Some(1), ::time::Duration::hours(1), None).await;
    let err = enroll(&t.client(), &t.options(Credentials::Password(token.clone())))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("InternalServiceFault"), "{err}");
    assert_nothing_written(&t).await;
    let log = t.store().issuance_log().await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].event, IssuanceEvent::Void);
    // The token's use was not consumed.
    let tok = t
        .store()
        .enrollment_token_by_hash(&TokenHash::of(&token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tok.uses, 0);
    t.server.shutdown().await;
}
