//! Key-encryption-key rotation without downtime (docs/OPERATIONS.md, "Rotating the KEK"; plan item
//! D4): devices keep checking in over mutual TLS and keep enrolling (the issuing CA keeps signing)
//! while `steward kek rotate` re-seals the data directory; the server then restarts with the new KEK
//! alone, and a wrong or missing KEK still refuses to start with a clear error.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use steward_server::kek::{self, SealedState};
use steward_sim::session::SessionTrigger;

use crate::common::{TestServer, config_for};

async fn checks_in(t: &TestServer, device: &mut steward_sim::ManagedDevice) {
    let client = t.device_client(device);
    let report = device.run_session(&client, SessionTrigger::Scheduled).await.unwrap();
    assert!(report.ended, "the server ended the session");
}

#[tokio::test]
async fn the_kek_rotates_while_devices_are_served_and_the_server_restarts_with_the_new_one_alone() {
    let t = TestServer::start().await;
    let port = t.server.local_addr.port();
    let root = t.root_der.clone();
    let mut enrolled_before = t.managed_device(None).await;
    checks_in(&t, &mut enrolled_before).await;

    let keys = tempfile::tempdir().unwrap();
    let new_path = keys.path().join("kek.new");
    let new_id = kek::generate_file(&new_path).unwrap();
    let config = config_for(t.dir.path(), port);
    let old_id = kek::status(&config).unwrap().current;
    let old_kek_text = std::fs::read_to_string(t.dir.path().join("kek")).unwrap();

    // The load: check-ins of the device enrolled before, and new enrollments (each one a CSR the
    // issuing CA signs) with their first sessions, round after round until the rotation is done.
    let rounds = AtomicUsize::new(0);
    let rotated = AtomicBool::new(false);
    let load = async {
        let mut enrolled_during = Vec::new();
        while !rotated.load(Ordering::SeqCst) || rounds.load(Ordering::SeqCst) < 2 {
            checks_in(&t, &mut enrolled_before).await;
            let mut d = t.managed_device(None).await;
            checks_in(&t, &mut d).await;
            enrolled_during.push(d);
            rounds.fetch_add(1, Ordering::SeqCst);
        }
        enrolled_during
    };
    let rotation = async {
        // Start once the load is under way, so the rotation runs between its requests.
        while rounds.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let (config, new_path) = (config.clone(), new_path.clone());
        let r = tokio::task::spawn_blocking(move || {
            let new = steward_server::bootstrap::read_kek_file(&new_path).unwrap();
            kek::rotate(&config, Some(new))
        })
        .await
        .unwrap()
        .unwrap();
        rotated.store(true, Ordering::SeqCst);
        r
    };
    let (mut enrolled_during, r) = tokio::join!(load, rotation);
    assert_eq!(r.to, new_id);
    assert_eq!(r.resealed.len(), steward_server::bootstrap::SEALED_FILES.len());
    assert!(r.resealed.iter().all(|(_, from)| *from == old_id), "{r:?}");
    assert!(enrolled_during.len() >= 2);

    // Still serving after the rotation, before any restart.
    checks_in(&t, &mut enrolled_before).await;
    let mut enrolled_after = t.managed_device(None).await;
    checks_in(&t, &mut enrolled_after).await;

    // The configuration after it: the new KEK current, the old one previous and retirable.
    let mut after = config.clone();
    after.pki.kek_file = Some(new_path.clone());
    after.pki.previous_kek_files = vec![t.dir.path().join("kek")];
    let status = kek::status(&after).unwrap();
    assert!(status.complete(), "{status:?}");
    assert_eq!(status.retirable(), vec![old_id]);
    assert!(status.files.iter().all(|f| matches!(
        f.state,
        SealedState::Opens { kek, named: true } if kek == new_id
    ) || f.state == SealedState::Absent));

    // Retire the old KEK and restart with the new one alone: the same CA, every device served.
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;
    std::fs::remove_file(dir.path().join("kek")).unwrap();
    let np = new_path.clone();
    let t = TestServer::start_on(dir, port, move |c| c.pki.kek_file = Some(np)).await;
    assert!(!t.server.ca_created);
    assert_eq!(t.root_der, root, "the same CA after the rotation");
    checks_in(&t, &mut enrolled_before).await;
    for d in &mut enrolled_during {
        checks_in(&t, d).await;
    }
    checks_in(&t, &mut enrolled_after).await;
    let mut enrolled_after_restart = t.managed_device(None).await;
    checks_in(&t, &mut enrolled_after_restart).await;
    crate::invariants::check(&t).await;
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;

    // The old KEK alone: refused, naming the KEK the files need; nothing is rewritten.
    let sealed_root = std::fs::read_to_string(dir.path().join("pki/root-ca.key.sealed")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut wrong = config_for(dir.path(), listener.local_addr().unwrap().port());
    wrong.pki.kek = Some(steward_core::SecretString::new(old_kek_text.trim()));
    let err = match steward_server::start_with_listener(wrong, listener).await {
        Ok(_) => panic!("started with the retired KEK"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("refusing to start") && err.contains(&new_id.to_string()),
        "{err}"
    );
    assert!(
        !err.contains(old_kek_text.trim()),
        "the key itself is never in the message"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pki/root-ca.key.sealed")).unwrap(),
        sealed_root
    );

    // A previous KEK file that is missing is named, not skipped.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut missing = config_for(dir.path(), listener.local_addr().unwrap().port());
    missing.pki.kek_file = Some(new_path.clone());
    missing.pki.previous_kek_files = vec![keys.path().join("gone")];
    let err = match steward_server::start_with_listener(missing, listener).await {
        Ok(_) => panic!("started with a missing previous KEK file"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("gone"), "{err}");
}
