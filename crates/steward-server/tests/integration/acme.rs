//! ACME (RFC 8555) against a real ACME server: Pebble, Let's Encrypt's test CA (Debian package
//! `pebble`, installed by scripts/test). Pebble runs on 127.0.0.1 with random ports and validates
//! for real: its validation authority connects to the server's own port (`tlsPort`) with ALPN
//! `acme-tls/1` (TLS-ALPN-01, RFC 8737), and no `PEBBLE_VA_ALWAYS_VALID`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use steward_sim::HttpsClient;
use steward_windows_proto::mde2;

use crate::common::TestServer;

/// A running Pebble; killed on drop.
pub struct Pebble {
    child: Child,
    pub directory_url: String,
    /// The management interface (`/roots/0`: the root of the certificates it issues).
    pub management_url: String,
    /// The CA of Pebble's own HTTPS certificate (what `directory_ca_file` names).
    pub ca_file: PathBuf,
    pub ca_der: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl Pebble {
    /// Starts Pebble validating TLS-ALPN-01 on `tls_port` (the server's port) and HTTP-01 on
    /// `http_port`.
    pub async fn start(tls_port: u16, http_port: u16) -> Pebble {
        let binary = ["/usr/bin/pebble", "/usr/local/bin/pebble"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("pebble is not installed: run scripts/test (it installs the Debian package pebble)");
        let dir = tempfile::tempdir().unwrap();
        // Pebble's own HTTPS certificate, from a CA of the test's.
        let ca = steward_pki::generate_root_ca("Pebble test CA", "Steward tests", ::time::Duration::days(2)).unwrap();
        let leaf = steward_pki::generate_tls_server_cert(
            &ca,
            &["localhost".to_owned(), "127.0.0.1".to_owned()],
            steward_pki::KeyAlgorithm::EcdsaP256,
            ::time::Duration::days(2),
        )
        .unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.cert_pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), pem("PRIVATE KEY", &leaf.key_pkcs8_der())).unwrap();
        let (wfe, management) = (free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{wfe}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_file = dir.path().join("pebble-config.json");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let child = Command::new(binary)
            .arg("-config")
            .arg(&config_file)
            .args(["-strict=false"])
            // Validate at once instead of after a random 0-15 s sleep; reject no nonces at random
            // (instant-acme retries badNonce, but a deterministic test is easier to read).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble");
        let pebble = Pebble {
            child,
            directory_url: format!("https://localhost:{wfe}/dir"),
            management_url: format!("https://localhost:{management}"),
            ca_der: ca.cert_der().to_vec(),
            ca_file,
            _dir: dir,
        };
        // Ready when both interfaces accept connections (bounded: a Pebble that never comes up
        // fails the test here).
        for port in [wfe, management] {
            let mut up = false;
            for _ in 0..300 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(up, "pebble did not listen on {port}");
        }
        pebble
    }

    /// The root Pebble issues under (regenerated at every start), as DER.
    pub async fn issuing_root(&self) -> Vec<u8> {
        let client = HttpsClient::new(std::slice::from_ref(&self.ca_der), None).unwrap();
        let resp = client.get(&format!("{}/roots/0", self.management_url)).await.unwrap();
        assert!(resp.status.is_success(), "roots/0: {}", resp.status);
        let text = resp.text();
        let mut reader = text.as_bytes();
        rustls_pemfile::certs(&mut reader).next().unwrap().unwrap().to_vec()
    }
}

/// Starts a server on `port` with `[tls.acme]` pointing at Pebble.
pub async fn acme_server(dir: tempfile::TempDir, port: u16, pebble: &Pebble) -> TestServer {
    let directory_url = pebble.directory_url.clone();
    let ca_file = pebble.ca_file.clone();
    TestServer::start_on(dir, port, move |c| {
        c.tls.acme = Some(steward_server::config::AcmeConfig {
            domains: vec!["localhost".into()],
            contact: vec!["admin@example.com".into()],
            directory_url,
            directory_ca_file: Some(ca_file),
            ..Default::default()
        });
    })
    .await
}

/// Waits (bounded) until the manager has installed a certificate of generation `n` or later.
pub async fn installed(t: &TestServer, n: u64) -> steward_acme::Installed {
    let acme = t.server.acme.as_ref().expect("ACME configured");
    let mut rx = acme.subscribe();
    let got = tokio::time::timeout(
        Duration::from_secs(120),
        rx.wait_for(|i| i.as_ref().is_some_and(|i| i.generation >= n)),
    )
    .await
    .expect("no ACME certificate within 120 s")
    .unwrap()
    .clone();
    got.unwrap()
}

async fn discover(client: &HttpsClient, base: &str) -> mde2::DiscoverResponse {
    let url = format!("{base}/EnrollmentServer/Discovery.svc");
    let probe = client.get(&url).await.unwrap();
    assert!(probe.status.is_success(), "probe: {}", probe.status);
    let request = mde2::DiscoverRequest {
        email_address: Some("alice@example.com".into()),
        request_version: Some("4.0".into()),
        device_type: Some("CIMClient_Windows".into()),
        application_version: Some("10.0.26100.1".into()),
        os_edition: Some("72".into()),
        auth_policies: vec!["OnPremise".into()],
    };
    let resp = client
        .post(
            &url,
            "application/soap+xml; charset=utf-8",
            mde2::write_discover_request(&format!("urn:uuid:{}", uuid::Uuid::new_v4()), &url, &request),
        )
        .await
        .unwrap();
    assert!(resp.status.is_success(), "discover: {} {}", resp.status, resp.text());
    mde2::parse_discover_response(&resp.text()).unwrap()
}

/// The leaf certificate a new connection to `port` gets, verified against `root` only.
pub async fn served_leaf(port: u16, root: &[u8]) -> Vec<u8> {
    let tls = HttpsClient::tls_config(&[root.to_vec()], None).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn serial_of(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial_as_string()
}

fn sealed_file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("acme").join(format!("{name}.sealed"))).unwrap()
}

#[tokio::test]
async fn the_certificate_comes_from_pebble_and_renewal_swaps_it_under_open_connections() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let port = free_port();
    let pebble = Pebble::start(port, free_port()).await;
    let t = acme_server(tempfile::tempdir().unwrap(), port, &pebble).await;
    let first = installed(&t, 1).await;
    assert_eq!(first.names, vec!["localhost".to_owned()]);
    let root = pebble.issuing_root().await;

    // A device that trusts only Pebble's root (as a fresh Windows device trusts only the public
    // roots) completes discovery: the server's own CA is nowhere in its trust store.
    let device = HttpsClient::new(std::slice::from_ref(&root), None).unwrap();
    let discovered = discover(&device, &t.url).await;
    assert_eq!(
        discovered.enrollment_service_url,
        format!("{}/EnrollmentServer/Enrollment.svc", t.url)
    );
    assert_eq!(device.connections_opened.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(serial_of(&served_leaf(port, &root).await), first.serial);
    // ... and a client trusting only the server's own root no longer gets through.
    assert!(t.client().get(&t.url("/EnrollmentServer/Discovery.svc")).await.is_err());

    // The key and account are stored sealed, never as PEM.
    for item in ["certificate", "account"] {
        let sealed = sealed_file(t.dir.path(), item);
        assert!(
            !sealed.contains("PRIVATE KEY") && !sealed.contains("BEGIN"),
            "{item} stored in the clear"
        );
    }

    // Renewal (forced): a new certificate from a new order, swapped in without a restart.
    let acme = t.server.acme.clone().unwrap();
    let second = acme.renew().await.unwrap();
    assert_ne!(second.serial, first.serial);
    assert_eq!(second.generation, first.generation + 1);
    // The open keep-alive connection keeps working on the certificate it was made with ...
    let again = discover(&device, &t.url).await;
    assert_eq!(again.enrollment_service_url, discovered.enrollment_service_url);
    assert_eq!(device.connections_opened.load(std::sync::atomic::Ordering::Relaxed), 1);
    // ... and new connections get the new certificate.
    assert_eq!(serial_of(&served_leaf(port, &root).await), second.serial);
    let fresh = HttpsClient::new(std::slice::from_ref(&root), None).unwrap();
    discover(&fresh, &t.url).await;

    // A restart serves the stored certificate at once, without a new order.
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;
    let t = acme_server(dir, port, &pebble).await;
    let restored = t.server.acme.as_ref().unwrap().installed().unwrap();
    assert_eq!(restored.serial, second.serial);
    assert_eq!(restored.generation, 1);
    assert_eq!(serial_of(&served_leaf(port, &root).await), second.serial);
    t.server.shutdown().await;
    drop(pebble);
}

#[tokio::test]
async fn http_01_is_answered_on_the_plain_listener() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (port, http_port) = (free_port(), free_port());
    // Pebble's TLS-ALPN-01 port is one nobody listens on: only HTTP-01 can succeed.
    let pebble = Pebble::start(free_port(), http_port).await;
    let directory_url = pebble.directory_url.clone();
    let ca_file = pebble.ca_file.clone();
    let t = TestServer::start_on(tempfile::tempdir().unwrap(), port, move |c| {
        c.tls.acme = Some(steward_server::config::AcmeConfig {
            domains: vec!["localhost".into()],
            directory_url,
            directory_ca_file: Some(ca_file),
            challenge: steward_server::config::AcmeChallenge::Http01,
            http_listen: ([127, 0, 0, 1], http_port).into(),
            ..Default::default()
        });
    })
    .await;
    let first = installed(&t, 1).await;
    let root = pebble.issuing_root().await;
    assert_eq!(serial_of(&served_leaf(port, &root).await), first.serial);
    let device = HttpsClient::new(std::slice::from_ref(&root), None).unwrap();
    discover(&device, &t.url).await;
    // The plain listener serves challenge answers only, and none once the order is done.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /EnrollmentServer/Discovery.svc HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    t.server.shutdown().await;
}
