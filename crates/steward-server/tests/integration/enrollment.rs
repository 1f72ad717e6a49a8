//! Happy paths: the simulator enrolls like Windows over real TLS, with each authentication method.

use std::sync::atomic::Ordering;

use steward_core::*;
use steward_sim::{Credentials, enroll::enroll};
use x509_parser::prelude::*;

use crate::common::{TestServer, federated};

#[tokio::test]
async fn simulator_enrolls_with_an_enrollment_token() {
    let t = TestServer::start().await;
    let token = t.token(Some(1), ::time::Duration::hours(1), Some("pilot")).await;
    let client = t.client();
    let device = enroll(&client, &t.options(Credentials::Password(token.clone())))
        .await
        .unwrap();

    // One TLS connection for the whole exchange, as Windows keeps it alive.
    assert_eq!(client.connections_opened.load(Ordering::Relaxed), 1);
    assert_eq!(device.management_url, t.url("/ManagementServer/MDM.svc"));

    // The device is recorded with what it told us, in the token's group.
    let e = t
        .store()
        .active_enrollment_by_device_id(&DeviceId::parse(&device.device_id).unwrap())
        .await
        .unwrap()
        .expect("enrollment recorded");
    assert_eq!(e.device_name.as_deref(), Some("DESKTOP-SIM0001"));
    assert_eq!(e.enrollment_type, EnrollmentType::Full);
    assert_eq!(e.auth_method, AuthMethod::EnrollmentToken);
    assert_eq!(e.user_email.as_deref(), Some("alice@example.com"));
    assert_eq!(e.os_version.as_deref(), Some("10.0.26100.2605"));
    assert!(e.hardware_id.is_some());
    let group = t.store().group_by_name("pilot").await.unwrap().unwrap();
    assert_eq!(e.group_id, Some(group.id));
    assert_eq!(
        e.cert_thumbprint.as_str(),
        steward_pki::sha1_thumbprint(&device.cert_der)
    );

    // The certificate: our fields, the device's public key, clientAuth, not a CA, chained to our CA.
    let (_, cert) = X509Certificate::from_der(&device.cert_der).unwrap();
    assert_eq!(cert.public_key().raw, device.key.spki_der().as_slice());
    let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap();
    assert_eq!(cn, device.device_id);
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let issuing = t.server.pki.issuing.cert_der().to_vec();
    let (_, issuer) = X509Certificate::from_der(&issuing).unwrap();
    assert_eq!(cert.issuer(), issuer.subject());
    cert.verify_signature(Some(issuer.public_key())).unwrap();
    assert_eq!(device.root_der.as_deref(), Some(t.root_der.as_slice()));
    assert_eq!(device.intermediate_der.as_deref(), Some(issuing.as_slice()));

    // Certificate logged; the single use consumed.
    let log = t.store().issuance_log().await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].event, IssuanceEvent::Issued);
    assert_eq!(log[0].serial, e.cert_serial);
    let tok = t
        .store()
        .enrollment_token_by_hash(&TokenHash::of(&token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tok.uses, 1);

    // Provisioning document carries the renewal and poll settings Windows needs later.
    let doc = &device.provisioning_doc;
    assert_eq!(doc.get("CertificateStore/My/WSTEP/Renew/ROBOSupport"), Some("true"));
    assert_eq!(doc.get("CertificateStore/My/WSTEP/Renew/RenewPeriod"), Some("60"));
    assert!(device.provisioning_doc_xml.contains("DMClient"));
    assert!(
        device.provisioning_doc_xml.contains(&e.id.to_string()),
        "EntDMID is the enrollment id"
    );
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn device_enrollment_type_and_user_password() {
    let t = TestServer::start().await;
    t.user("bob@example.com", "correct horse battery").await;
    let client = t.client();
    let mut opts = t.options(Credentials::Password("correct horse battery".into()));
    opts.email = "Bob@Example.com".into();
    opts.enrollment_type = "Device".into();
    let device = enroll(&client, &opts).await.unwrap();
    assert!(
        device
            .provisioning_doc
            .get(&format!(
                "CertificateStore/My/System/{}/EncodedCertificate",
                steward_pki::sha1_thumbprint(&device.cert_der)
            ))
            .is_some()
    );
    let e = t.store().list_enrollments().await.unwrap().remove(0);
    assert_eq!(e.auth_method, AuthMethod::UserPassword);
    assert_eq!(e.enrollment_type, EnrollmentType::Device);
    assert_eq!(e.user_email.as_deref(), Some("bob@example.com"));

    // A wrong password is an Authentication fault and leaves nothing behind.
    let mut bad = t.options(Credentials::Password("wrong password".into()));
    bad.email = "bob@example.com".into();
    let err = enroll(&client, &bad).await.unwrap_err().to_string();
    assert!(err.contains("Authentication"), "{err}");
    assert_eq!(t.enrollment_count().await, 1);
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn federated_sign_in_then_enroll() {
    let t = TestServer::start_with(federated).await;
    t.user("carol@example.com", "federated password").await;
    let client = t.client();
    let mut opts = t.options(Credentials::Federated("federated password".into()));
    opts.email = "carol@example.com".into();
    let device = enroll(&client, &opts).await.unwrap();
    let e = t.store().list_enrollments().await.unwrap().remove(0);
    assert_eq!(e.auth_method, AuthMethod::Federated);
    assert_eq!(e.user_email.as_deref(), Some("carol@example.com"));
    assert_eq!(e.device_id.as_str(), device.device_id);

    // Wrong password on the sign-in page: no token, no enrollment.
    let mut bad = t.options(Credentials::Federated("nope".into()));
    bad.email = "carol@example.com".into();
    assert!(enroll(&client, &bad).await.is_err());
    assert_eq!(t.enrollment_count().await, 1);

    // The sign-in page refuses a callback that is not the Windows app.
    let resp = client
        .get(&t.url("/EnrollmentServer/Auth?appru=https://evil.example.com&login_hint=x"))
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn re_enrollment_replaces_and_revokes() {
    let t = TestServer::start().await;
    let token = t.token(None, ::time::Duration::hours(1), None).await;
    let client = t.client();
    let mut opts = t.options(Credentials::Password(token.clone()));
    opts.device_id = Some("0123456789ABCDEF0123456789ABCDEF".into());
    let first = enroll(&client, &opts).await.unwrap();
    let second = enroll(&client, &opts).await.unwrap();
    assert_ne!(first.cert_der, second.cert_der);

    let all = t.store().list_enrollments().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].state, EnrollmentState::Replaced);
    assert_eq!(all[1].state, EnrollmentState::Active);
    let log = t.store().issuance_log().await.unwrap();
    let revoked: Vec<_> = log.iter().filter(|e| e.event == IssuanceEvent::Revoked).collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].serial, all[0].cert_serial);

    // Re-enrolling an existing DeviceID must authenticate too.
    opts.credentials = Credentials::Password("stw_enr_not-a-real-token".into());
    assert!(enroll(&client, &opts).await.is_err());
    assert_eq!(t.enrollment_count().await, 2);
    crate::invariants::check(&t).await;
    t.server.shutdown().await;
}
