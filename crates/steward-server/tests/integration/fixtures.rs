//! Replays the real Windows 10 19043 enrollment captures (../shared/fixtures/windows/
//! win10-19043-fleet-poc, from fleetdm/fleet's POC dump) with our credentials substituted.

use base64::Engine;
use steward_windows_proto::mde2;
use x509_parser::prelude::*;

use crate::common::TestServer;

const SOAP: &str = "application/soap+xml; charset=utf-8";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../../shared/fixtures/windows/win10-19043-fleet-poc/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn with_credentials(xml: &str, token: &str) -> String {
    xml.replace(
        "<wsse:Username>demio</wsse:Username>",
        "<wsse:Username>demo@example.com</wsse:Username>",
    )
    .replace(">demo</wsse:Password>", &format!(">{token}</wsse:Password>"))
}

#[tokio::test]
async fn real_windows_requests_replay() {
    let t = TestServer::start().await;
    let client = t.client();
    let token = t.token(Some(1), ::time::Duration::hours(1), None).await;

    // The bodyless probe, on the upper-case path with a query string.
    let probe = client
        .get(&t.url("/ENROLLMENTSERVER/DISCOVERY.SVC?mode=probe"))
        .await
        .unwrap();
    assert_eq!(probe.status, 200);
    assert!(probe.body.is_empty());

    let resp = client
        .post(
            &t.url("/EnrollmentServer/Discovery.svc"),
            SOAP,
            fixture("01-discovery.request.xml"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let text = resp.text();
    assert!(text.contains("<a:RelatesTo>urn:uuid:748132ec-a575-4329-b01b-6171a9cf8478</a:RelatesTo>"));
    let d = mde2::parse_discover_response(&text).unwrap();
    assert_eq!(d.auth_policy, mde2::AuthPolicy::OnPremise);
    assert_eq!(d.enrollment_version, "4.0");
    assert_eq!(d.enrollment_service_url, t.url("/EnrollmentServer/Enrollment.svc"));

    let resp = client
        .post(
            &t.url("/EnrollmentServer/Policy.svc"),
            SOAP,
            with_credentials(&fixture("02-policy.request.xml"), &token),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let text = resp.text();
    assert!(text.contains("GetPoliciesResponse") && text.contains("<minimalKeyLength>2048</minimalKeyLength>"));
    assert!(text.contains("urn:uuid:72048B64-0F19-448F-8C2E-B4C661860AA0"));

    // The original capture's password must not work.
    let resp = client
        .post(
            &t.url("/EnrollmentServer/Policy.svc"),
            SOAP,
            fixture("02-policy.request.xml"),
        )
        .await
        .unwrap();
    assert!(mde2::parse_fault(&resp.text()).unwrap().0.contains("Authentication"));

    let rst = with_credentials(&fixture("03-enrollment.request.xml"), &token);
    let resp = client
        .post(&t.url("/EnrollmentServer/Enrollment.svc"), SOAP, rst.clone())
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let text = resp.text();
    assert!(text.contains("urn:uuid:0d5a1441-5891-453b-becf-a2e5f6ea3749"));
    let doc = mde2::parse_provisioning_doc(&mde2::parse_rstr(&text).unwrap()).unwrap();
    assert_eq!(doc.management_url(), Some(t.url("/ManagementServer/MDM.svc").as_str()));
    let cert_der = doc.client_certificate_der().unwrap();

    // The certificate's public key is exactly the CSR's, and openssl verifies the chain.
    let csr_b64 = rst.split("base64binary\">").nth(1).unwrap().split('<').next().unwrap();
    let csr_der = base64::engine::general_purpose::STANDARD.decode(csr_b64).unwrap();
    let csr = steward_pki::verify_csr(&csr_der, 2048).unwrap();
    let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
    assert_eq!(cert.public_key().raw, csr.spki_der.as_slice());
    assert_eq!(
        cert.subject().iter_common_name().next().unwrap().as_str().unwrap(),
        "B5B954E81FBCB94EB79BD08BE625F4EE"
    );

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, der: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, steward_pki::pem_encode("CERTIFICATE", der)).unwrap();
        p
    };
    let root = write("root.pem", &t.root_der);
    let issuing = write("issuing.pem", t.server.pki.issuing.cert_der());
    let leaf = write("leaf.pem", &cert_der);
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&issuing)
        .arg(&leaf)
        .output()
        .expect("openssl is installed (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The enrollment is recorded with the capture's AdditionalContext.
    let e = t.store().list_enrollments().await.unwrap().remove(0);
    assert_eq!(e.device_id.as_str(), "B5B954E81FBCB94EB79BD08BE625F4EE");
    assert_eq!(e.device_name.as_deref(), Some("DESKTOP-28FGAI6"));
    assert_eq!(
        e.hardware_id.as_deref(),
        Some("3B3ED6D0EA88CBFCF37D36F90F22FE61172348C0162FC3840D6703149870CE76")
    );
    assert_eq!(e.os_version.as_deref(), Some("10.0.19043.2364"));
    assert_eq!(e.os_edition.as_deref(), Some("72"));

    // Replaying the same RST with the now-spent single-use token is refused.
    let resp = client
        .post(&t.url("/EnrollmentServer/Enrollment.svc"), SOAP, rst)
        .await
        .unwrap();
    assert!(mde2::parse_fault(&resp.text()).unwrap().0.contains("Authentication"));
    assert_eq!(t.enrollment_count().await, 1);
    t.server.shutdown().await;
}
