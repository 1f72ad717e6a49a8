//! Start-up behaviour: the CA is created once, reused on restart, and never silently replaced.

use crate::common::{TestServer, config_for};
use steward_core::*;

#[tokio::test]
async fn restart_keeps_the_ca_and_wrong_kek_refuses_to_start() {
    let t = TestServer::start().await;
    let root = t.root_der.clone();
    let issuing = t.server.pki.issuing.cert_der().to_vec();
    assert!(t.server.ca_created);
    assert!(
        t.server.generated_admin_token.is_none(),
        "a configured admin token is not generated or printed"
    );
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("kek")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "generated KEK file is private");
        let mode = std::fs::metadata(dir.path().join("pki/root-ca.key.sealed"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let sealed = std::fs::read_to_string(dir.path().join("pki/root-ca.key.sealed")).unwrap();
    assert!(
        sealed.starts_with("steward-sealed-v2:"),
        "CA key is sealed at rest, naming its KEK"
    );

    // Same data directory: same CA.
    let t = TestServer::start_in(dir, |_| {}).await;
    assert!(!t.server.ca_created);
    assert_eq!(t.root_der, root);
    assert_eq!(t.server.pki.issuing.cert_der(), issuing.as_slice());
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;

    // A different KEK cannot open the CA: refuse to start, and leave the CA files untouched.
    let wrong = steward_pki::Kek::generate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = config_for(dir.path(), port);
    config.pki.kek = Some(steward_core::SecretString::new(wrong.to_base64().as_str()));
    let err = match steward_server::start_with_listener(config, listener).await {
        Ok(_) => panic!("started with the wrong KEK"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("refusing to start"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pki/root-ca.key.sealed")).unwrap(),
        sealed
    );

    // A missing KEK file with an existing CA also refuses (no new KEK, no new CA).
    std::fs::remove_file(dir.path().join("kek")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let err = match steward_server::start_with_listener(config_for(dir.path(), port), listener).await {
        Ok(_) => panic!("started without the KEK"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("refusing to start"), "{err}");
    assert!(!dir.path().join("kek").exists());
}

#[tokio::test]
async fn first_start_without_admin_token_generates_one_once() {
    let t = TestServer::start_with(|c| c.admin_token = None).await;
    let token = t
        .server
        .generated_admin_token
        .clone()
        .expect("generated on first start");
    assert!(token.expose().starts_with("stw_adm_"));
    let stored = t
        .store()
        .bootstrap_token_by_hash(&TokenHash::of(token.expose()))
        .await
        .unwrap()
        .expect("stored by hash");
    assert!(stored.usable());
    assert_eq!(stored.name, "bootstrap (generated)");
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;
    let t = TestServer::start_in(dir, |c| c.admin_token = None).await;
    assert!(
        t.server.generated_admin_token.is_none(),
        "printed only on the first start"
    );
    t.server.shutdown().await;
}
