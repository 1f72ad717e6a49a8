//! The Windows interop review's enrollment findings, end to end over real TLS: the simulator plays
//! Windows' documented rules (certificate selection by SSLCLIENTCERTSEARCHCRITERIA, the APPAUTH
//! data the w7 CSP requires, the MS-MDE2 poll-schedule rules) against the real server.

use steward_sim::enroll::{check_provisioning_doc, select_client_certificate};
use steward_sim::{Credentials, ManagedDevice, SessionError, SessionTrigger};
use steward_windows_proto::{mde2, syncml};

use crate::common::TestServer;

const SOAP: &str = "application/soap+xml; charset=utf-8";
const SYNCML: &str = "application/vnd.syncml.dm+xml";

/// Replaces the value of the first parm at `path` (or appends it).
fn set_parm(doc: &mut mde2::ParsedProvisioningDoc, path: &str, value: &str) {
    match doc.parms.iter_mut().find(|(p, _)| p == path) {
        Some((_, v)) => value.clone_into(v),
        None => {
            doc.parms.push((path.to_owned(), value.to_owned()));
            doc.parm_owners.push(0);
        }
    }
}

/// M-1: the certificate the server issues is exactly what its SSLCLIENTCERTSEARCHCRITERIA names,
/// so the simulated DM client finds it and manages over mTLS; criteria naming the old
/// `CN, OU, O` subject (or another store) find nothing, and such a device gets 401.
#[tokio::test]
async fn client_certificate_is_selected_by_the_search_criteria() {
    let t = TestServer::start().await;
    let token = t.token(Some(2), ::time::Duration::hours(1), None).await;
    let enrolled = steward_sim::enroll::enroll(&t.client(), &t.options(Credentials::Password(token.clone())))
        .await
        .unwrap();
    let doc = &enrolled.provisioning_doc;
    let criteria = doc.get("APPLICATION/SSLCLIENTCERTSEARCHCRITERIA").unwrap();
    assert_eq!(
        criteria,
        format!("Subject=CN%3D{}&Stores=MY%5CUser", enrolled.device_id)
    );
    assert!(enrolled.client_cert_selected);
    // C-3: NotBefore is back-dated an hour, so a device whose clock is behind still holds a valid
    // certificate.
    let (_, cert) = x509_parser::parse_x509_certificate(&enrolled.cert_der).unwrap();
    let not_before = cert.validity().not_before.timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        now - not_before >= 3_590 && now - not_before <= 3_700,
        "{}",
        now - not_before
    );
    assert_eq!(
        select_client_certificate(doc).as_deref(),
        Some(enrolled.cert_der.as_slice())
    );

    // Criteria that do not describe the whole subject, or another store, select nothing.
    for wrong in [
        format!(
            "Subject=CN%3D{}%2COU%3Dx%2CO%3DSteward&Stores=MY%5CUser",
            enrolled.device_id
        ),
        format!("Subject=CN%3D{}&Stores=MY%5CSystem", enrolled.device_id),
        "Subject=CN%3DSOMEONE-ELSE&Stores=MY%5CUser".to_owned(),
    ] {
        let mut d = doc.clone();
        set_parm(&mut d, "APPLICATION/SSLCLIENTCERTSEARCHCRITERIA", &wrong);
        assert_eq!(select_client_certificate(&d), None, "{wrong}");
    }

    // The selected certificate manages the device over mTLS.
    let profile = steward_sim::csp::DeviceProfile::random(&enrolled.device_id);
    let mut device = ManagedDevice::from_enrolled(enrolled, profile);
    let client = t.device_client(&device);
    let report = device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.ended, "{report:?}");

    // A device whose criteria select nothing presents no certificate: 401 on every session.
    let mut other = steward_sim::enroll::enroll(&t.client(), &t.options(Credentials::Password(token)))
        .await
        .unwrap();
    let wrong = format!("Subject=CN%3D{}%2CO%3DSteward&Stores=MY%5CUser", other.device_id);
    set_parm(
        &mut other.provisioning_doc,
        "APPLICATION/SSLCLIENTCERTSEARCHCRITERIA",
        &wrong,
    );
    other.client_cert_selected = select_client_certificate(&other.provisioning_doc).is_some();
    assert!(!other.client_cert_selected);
    let profile = steward_sim::csp::DeviceProfile::random(&other.device_id);
    let mut other = ManagedDevice::from_enrolled(other, profile);
    assert!(other.identity.is_none());
    let client = t.device_client(&other);
    let err = other.run_session(&client, SessionTrigger::Scheduled).await.unwrap_err();
    assert!(matches!(err, SessionError::HttpStatus { status: 401, .. }), "{err:?}");
    t.server.shutdown().await;
}

/// E-2, E-4, E-5: the server's document passes the rules Windows applies; the same document with
/// a required piece taken away is refused by the simulator.
#[tokio::test]
async fn provisioning_document_passes_windows_rules() {
    let t = TestServer::start().await;
    let token = t.token(Some(1), ::time::Duration::hours(1), None).await;
    let mut opts = t.options(Credentials::Password(token));
    // E-5: a device that sends no DeviceName gets no empty EntDeviceName.
    opts.device_name = String::new();
    let enrolled = steward_sim::enroll::enroll(&t.client(), &opts).await.unwrap();
    let doc = &enrolled.provisioning_doc;
    check_provisioning_doc(doc).unwrap();
    assert!(
        !doc.parms.iter().any(|(p, _)| p.ends_with("/EntDeviceName")),
        "{:?}",
        doc.parms
    );
    assert!(doc.get("DMClient/Provider/Steward/EntDMID").is_some());

    // E-2: without a secret in either APPAUTH block, the document is refused.
    for level in ["CLIENT", "APPSRV"] {
        let mut d = doc.clone();
        let owner = d
            .characteristics
            .iter()
            .map(|(_, id)| *id)
            .find(|id| {
                d.parms
                    .iter()
                    .zip(&d.parm_owners)
                    .any(|((p, v), o)| o == id && p.ends_with("/AAUTHLEVEL") && v == level)
            })
            .unwrap();
        let keep: Vec<bool> = d
            .parms
            .iter()
            .zip(&d.parm_owners)
            .map(|((p, _), o)| !(*o == owner && p.ends_with("/AAUTHSECRET")))
            .collect();
        let mut i = 0;
        d.parms.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        let mut j = 0;
        d.parm_owners.retain(|_| {
            j += 1;
            keep[j - 1]
        });
        let err = check_provisioning_doc(&d).unwrap_err();
        assert!(err.contains(level) && err.contains("AAUTHSECRET"), "{err}");
    }

    // E-4: NumberOfFirstRetries 0 is a configuration failure.
    let mut d = doc.clone();
    set_parm(&mut d, "DMClient/Provider/Steward/Poll/NumberOfFirstRetries", "0");
    assert!(check_provisioning_doc(&d).unwrap_err().contains("NumberOfFirstRetries"));
    // …and the server refuses to start with a configuration that would write one.
    let mut c = steward_server::Config::default();
    c.enrollment.poll_first_count = 0;
    assert!(c.validate().unwrap_err().to_string().contains("poll_first_count"));
    t.server.shutdown().await;
}

/// C-1: a refused enrollment is an HTTP 500 SOAP fault with the MS-MDE2 subcode and no ErrorType
/// outside MS-MDE2's list; the trace id is in the ActivityId header.
#[tokio::test]
async fn faults_are_http_500_with_the_subcode() {
    let t = TestServer::start().await;
    let client = t.client();
    let url = t.url("/EnrollmentServer/Policy.svc");
    let cred = mde2::Credential::UsernameToken {
        username: "nobody@example.com".into(),
        password: "wrong".into(),
    };
    let resp = client
        .post(&url, SOAP, mde2::write_get_policies_request("urn:uuid:c1", &url, &cred))
        .await
        .unwrap();
    assert_eq!(resp.status, 500);
    let text = resp.text();
    let (subcode, reason) = mde2::parse_fault(&text).unwrap();
    assert_eq!(subcode, "s:Authentication");
    assert!(reason.contains("incorrect"), "{reason}");
    assert!(!text.contains("ErrorType"), "{text}");
    assert!(text.contains("<ActivityId CorrelationId="), "{text}");
    assert!(text.contains("<a:RelatesTo>urn:uuid:c1</a:RelatesTo>"));
    t.server.shutdown().await;
}

/// M-3: syncml:auth-md5 as MS-MDM and DMAcc specify. The device's credential is in APPSRV with a
/// first nonce (AAUTHDATA), so its first message is accepted without a challenge; the answer is
/// 200 (not 212), and a later message of the session repeating the same Cred is accepted
/// (OMADM-LRN), while a Cred from a wrong secret is not.
#[tokio::test]
async fn md5_credentials_in_appsrv_with_an_initial_nonce() {
    let t = TestServer::start_with(|c| c.management.md5_auth = true).await;
    let mut device = t.managed_device_with_initial_nonce().await;
    assert!(device.md5.is_some() && device.next_nonce.is_some());
    let no_cert = t.client();

    // Message 1 carries Cred from the provisioned nonce: accepted at once, SyncHdr 200.
    let msg1 = device.start_session(SessionTrigger::Scheduled).unwrap();
    let cred1 = msg1.header.cred.clone().expect("Cred from AAUTHDATA");
    let resp = no_cert
        .post(&device.session_url(), SYNCML, syncml::write(&msg1))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let answer = syncml::parse(&resp.text()).unwrap();
    let syncml::Command::Status(hdr) = &answer.body.commands[0] else {
        panic!("SyncHdr status first")
    };
    assert_eq!(hdr.data, "200", "authenticated by Cred: 200, not 212 (M-3)");
    assert!(
        hdr.chal.as_ref().and_then(|c| c.next_nonce.as_ref()).is_some(),
        "a nonce for the next session"
    );
    assert!(answer.body.commands.len() > 1, "commands (the inventory) follow");

    // Message 2 repeats message 1's Cred, as OMADM-LRN says a device does after a 200.
    let mut msg2 = device
        .respond(&answer)
        .unwrap()
        .expect("statuses for the server's commands");
    msg2.header.cred = Some(cred1.clone());
    let resp = no_cert
        .post(&device.session_url(), SYNCML, syncml::write(&msg2))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let answer = syncml::parse(&resp.text()).unwrap();
    let syncml::Command::Status(hdr) = &answer.body.commands[0] else {
        panic!("SyncHdr status first")
    };
    assert_eq!(hdr.data, "200", "the session's Cred stays valid for its later messages");
    let _ = device.end_session();

    // A later session with the NextNonce (the simulator's default behaviour) works throughout.
    let report = device.run_session(&no_cert, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.ended, "{report:?}");

    // The old session's Cred does not open a new session.
    let mut stale = device.start_session(SessionTrigger::Scheduled).unwrap();
    let _ = device.end_session();
    stale.header.cred = Some(cred1);
    let resp = no_cert
        .post(&device.session_url(), SYNCML, syncml::write(&stale))
        .await
        .unwrap();
    let answer = syncml::parse(&resp.text()).unwrap();
    let syncml::Command::Status(hdr) = &answer.body.commands[0] else {
        panic!("SyncHdr status first")
    };
    assert_eq!(hdr.data, "401");
    t.server.shutdown().await;
}
