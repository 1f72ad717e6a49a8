//! Client certificates are requested only where they are used (interop review E-3, C-6), the
//! device-host split end to end, and `doctor tls` (E-1) against the zero-config and the ACME
//! server.

use steward_server::doctor::{self, Check};
use steward_sim::session::SessionTrigger;
use steward_sim::{Credentials, HttpsClient, ManagedDevice};

use crate::acme::{Pebble, acme_server, free_port, installed};
use crate::common::TestServer;

const DEVICE_HOST: &str = "device.localhost";

async fn requested(t: &TestServer, sni: &str) -> bool {
    let addr = t.server.local_addr.to_string();
    doctor::handshake(&addr, sni, &[t.root_der.clone().into()])
        .await
        .unwrap()
        .client_cert_requested
}

#[tokio::test]
async fn zero_config_spares_the_discovery_host_and_keeps_one_host_working() {
    let t = TestServer::start().await;
    // One host for everything: the request stays where management needs it ...
    assert!(requested(&t, "localhost").await);
    // ... but the discovery host Windows derives from the e-mail domain gets none.
    assert!(!requested(&t, "EnterpriseEnrollment.localhost").await);
}

#[tokio::test]
async fn with_a_device_host_only_it_requests_a_client_certificate() {
    let t = TestServer::start_with(|c| c.tls.device_hostname = Some(DEVICE_HOST.into())).await;
    let port = t.server.local_addr.port();
    assert!(requested(&t, DEVICE_HOST).await);
    for public in ["localhost", "EnterpriseEnrollment.localhost"] {
        assert!(!requested(&t, public).await, "{public} requested a certificate");
    }
    // The generated certificate names the device host too.
    let hs = doctor::handshake(
        &t.server.local_addr.to_string(),
        DEVICE_HOST,
        &[t.root_der.clone().into()],
    )
    .await
    .unwrap();
    assert_eq!(hs.trusted, Ok(()));

    // A whole enrollment and a management session: discovery, policy on the public host, the
    // enrollment service and management on the device host, as the server advertises them.
    let token = t.token(Some(1), ::time::Duration::hours(1), None).await;
    let client = t.client().connect_via(DEVICE_HOST, t.server.local_addr);
    let enrolled = steward_sim::enroll::enroll(&client, &t.options(Credentials::Password(token)))
        .await
        .unwrap();
    assert_eq!(
        enrolled.management_url,
        format!("https://{DEVICE_HOST}:{port}/ManagementServer/MDM.svc")
    );
    let profile = steward_sim::csp::DeviceProfile::random(&enrolled.device_id);
    let mut device = ManagedDevice::from_enrolled(enrolled, profile);
    let device_client = HttpsClient::new(std::slice::from_ref(&t.root_der), device.tls_identity())
        .unwrap()
        .connect_via(DEVICE_HOST, t.server.local_addr);
    let report = device
        .run_session(&device_client, SessionTrigger::Scheduled)
        .await
        .unwrap();
    assert!(report.ended, "the server ended the session");
    assert!(
        report.received.iter().any(|c| c.name == "Get" && c.status == 200),
        "{:?}",
        report.received
    );
    assert_eq!(t.enrollment_count().await, 1);

    // ROBO renewal over mTLS with the current certificate, on the device host the discovery
    // response named as the enrollment service.
    let identity = device.identity.as_ref().unwrap();
    let new_key = steward_pki::DeviceKey::generate_rsa(2048).unwrap();
    let pkcs7 = steward_pki::build_renewal_request(
        &new_key,
        &format!("X!{}\0", device.profile.device_id),
        &device.profile.device_id,
        &identity.cert_der,
        &identity.key,
        true,
    )
    .unwrap();
    let device_url = format!("https://{DEVICE_HOST}:{port}/EnrollmentServer/Enrollment.svc");
    let rst = {
        use base64::Engine;
        steward_windows_proto::mde2::write_rst_renew_request(
            "urn:uuid:renew-1",
            &device_url,
            None,
            &base64::engine::general_purpose::STANDARD.encode(&pkcs7),
            &[],
        )
    };
    let renewed = device_client
        .post(&device_url, "application/soap+xml; charset=utf-8", rst)
        .await
        .unwrap();
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    let doc = steward_windows_proto::mde2::parse_provisioning_doc(
        &steward_windows_proto::mde2::parse_rstr(&renewed.text()).unwrap(),
    )
    .unwrap();
    assert!(
        doc.client_certificate_der().is_some(),
        "renewal carries the new certificate"
    );
    // The console is on the public host and asks for no certificate (C-6).
    let console = t.client().get(&t.url("/console/login")).await.unwrap();
    assert!(console.status.is_success(), "console: {}", console.status);
}

#[tokio::test]
async fn doctor_reports_what_a_fresh_device_would_see() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Zero-config: our own CA, which a fresh device does not trust, and a client-certificate
    // request on the one host.
    let t = TestServer::start().await;
    let report = doctor::check(&Check {
        url: t.url.clone(),
        connect_to: None,
        roots: None,
        email_domains: vec!["example.com".into()],
        device_host: None,
    })
    .await
    .unwrap();
    let problems = report.problems.join("\n");
    assert!(problems.contains("devices will not trust"), "{problems}");
    assert!(problems.contains("requests a client certificate"), "{problems}");
    assert!(problems.contains("EnterpriseEnrollment.example.com"), "{problems}");
    let leaf = &report.handshakes[0].chain[0];
    assert!(leaf.dns_names.contains(&"localhost".to_owned()));
    t.server.shutdown().await;

    // ACME from Pebble with a device host: trusted by a device that trusts Pebble's root, no
    // request on the public host, a request on the device host.
    let port = free_port();
    let pebble = Pebble::start(port, free_port()).await;
    let t = acme_server(tempfile::tempdir().unwrap(), port, &pebble).await;
    installed(&t, 1).await;
    let root = pebble.issuing_root().await;
    let report = doctor::check(&Check {
        url: t.url.clone(),
        connect_to: None,
        roots: Some(vec![root.into()]),
        email_domains: vec![],
        device_host: None,
    })
    .await
    .unwrap();
    let hs = &report.handshakes[0];
    assert_eq!(hs.trusted, Ok(()));
    // leaf + Pebble's intermediate
    assert_eq!(hs.chain.len(), 2, "{:?}", hs.chain);
    assert!(!hs.chain[0].self_signed);
    // The zero-config split still asks on the public host (no device host configured here).
    assert!(hs.client_cert_requested);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    t.server.shutdown().await;
}
