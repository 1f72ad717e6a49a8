//! Bad input: every case gets the right SOAP fault (or HTTP status) and leaves no device row and no
//! issued certificate behind.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use steward_core::*;
use steward_pki::{CsrSignatureAlgorithm, DeviceKey};
use steward_sim::{Credentials, HttpsClient, Response, enroll::enroll};
use steward_windows_proto::mde2::{self, Credential, DiscoverRequest};
use x509_parser::prelude::*;

use crate::common::{TestServer, sqlite};

pub(crate) const SOAP: &str = "application/soap+xml; charset=utf-8";
const DEVICE_ID: &str = "AABBCCDDEEFF00112233445566778899";

pub(crate) fn cred(token: &str) -> Credential {
    Credential::UsernameToken {
        username: "eve@example.com".into(),
        password: token.into(),
    }
}

pub(crate) fn context() -> Vec<(String, String)> {
    vec![
        ("DeviceID".into(), DEVICE_ID.into()),
        ("EnrollmentType".into(), "Full".into()),
        ("DeviceName".into(), "BAD-INPUT".into()),
    ]
}

pub(crate) async fn post_rst(t: &TestServer, client: &HttpsClient, cred: &Credential, csr: &[u8]) -> Response {
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

pub(crate) fn fault_of(resp: &Response) -> (String, String) {
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

pub(crate) fn good_csr() -> Vec<u8> {
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
    assert_eq!(resp.status, 500, "SOAP faults go out as HTTP 500 (interop review C-1)");
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
    crate::invariants::check(&t).await;
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
    crate::invariants::check(&t).await;
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
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn failed_commit_voids_the_certificate() {
    let t = TestServer::start_with(sqlite).await;
    // Make the real database refuse the enrollment insert, as a full disk or I/O error would: the
    // commit transaction fails half-way and must roll back everything.
    let db = rusqlite::Connection::open(t.dir.path().join("steward.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER inject_commit_failure BEFORE INSERT ON enrollments \
         BEGIN SELECT RAISE(ABORT, 'disk I/O error (injected)'); END",
    )
    .unwrap();
    drop(db);
    let token = t.token(Some(1), ::time::Duration::hours(1), None).await;
    let err = enroll(&t.client(), &t.options(Credentials::Password(token.clone())))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("InternalServiceFault"), "{err}");
    // The device learns that it failed and the trace id, not the database's words.
    let err = err.to_string();
    assert!(!err.contains("injected") && !err.contains("database"), "{err}");
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
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

/// Percent-encodes a form (application/x-www-form-urlencoded).
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn user_token(token: &str) -> Credential {
    Credential::BinarySecurityToken {
        value_type: mde2::VALUE_TYPE_USER_TOKEN.into(),
        encoding_type: Some(mde2::ENCODING_TYPE_BASE64.into()),
        token: STANDARD.encode(token.as_bytes()),
    }
}

/// The federated token (plan A1/A3 for Steward's own STS, crates/steward-windows/src/federated.rs):
/// forged tokens — no signature, a payload altered under a genuine signature, a signature by
/// another key, another user's claims — are refused with nothing written; the genuine token
/// enrolls once and its replay is refused.
#[tokio::test]
async fn federated_tokens_are_checked_and_single_use() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let t = TestServer::start_with(crate::common::federated).await;
    t.user("carol@example.com", "federated password").await;
    let client = t.client();
    let signed_in = client
        .post(
            &t.url("/EnrollmentServer/Auth"),
            "application/x-www-form-urlencoded",
            form(&[
                ("appru", "ms-app://windows.immersivecontrolpanel"),
                ("email", "carol@example.com"),
                ("password", "federated password"),
            ]),
        )
        .await
        .unwrap();
    let html = signed_in.text();
    let marker = "name=\"wresult\" value=\"";
    let start = html.find(marker).unwrap_or_else(|| panic!("no token: {html}")) + marker.len();
    let token = html[start..start + html[start..].find('"').unwrap()].replace("&amp;", "&");
    let body = token.strip_prefix("stw_fed_").expect("the token format");
    let (claims, signature) = body.split_once('.').expect("claims.signature");
    let json = String::from_utf8(URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    let altered = URL_SAFE_NO_PAD.encode(json.replace("carol@example.com", "admin@example.com"));
    let forged = [
        ("no signature", format!("stw_fed_{claims}.")),
        ("no signature part", format!("stw_fed_{claims}")),
        ("altered payload", format!("stw_fed_{altered}.{signature}")),
        (
            "another key",
            format!("stw_fed_{claims}.{}", URL_SAFE_NO_PAD.encode([7u8; 32])),
        ),
        ("not base64", "stw_fed_%%%.%%%".to_owned()),
    ];
    let before = crate::invariants::check(&t).await;
    for (what, bad) in &forged {
        let resp = post_rst(&t, &client, &user_token(bad), &good_csr()).await;
        assert!(fault_of(&resp).0.contains("Authentication"), "{what}: {}", resp.text());
    }
    let after = crate::invariants::check(&t).await;
    before.assert_unchanged(&after, "forged federated tokens");
    assert_nothing_written(&t).await;

    let resp = post_rst(&t, &client, &user_token(&token), &good_csr()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let once = crate::invariants::check(&t).await;
    let replay = post_rst(&t, &client, &user_token(&token), &good_csr()).await;
    let (code, reason) = fault_of(&replay);
    assert!(code.contains("Authentication"), "{}", replay.text());
    assert!(reason.contains("already used"), "{}", replay.text());
    // A sequential replay is refused before the CA signs (the token's nonce is already spent,
    // docs/SECURITY.md "Findings"): no certificate, so no Void row, and nothing else written.
    let replayed = crate::invariants::check(&t).await;
    once.assert_unchanged(&replayed, "a replayed federated token");
    assert_eq!((t.enrollment_count().await, t.issued_count().await), (1, 1));
    t.server.shutdown().await;
}
