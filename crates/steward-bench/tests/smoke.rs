//! The bench at toy size: it must run end to end and produce figures. No figure is checked
//! against a threshold (timings on CI machines are noise).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produces_figures() {
    let opts = steward_bench::BenchOptions {
        cpu_seconds: 0.05,
        fixtures: Some(std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/windows/win10-19043-fleet-poc"
        ))),
        large_items: 20,
        enroll_devices: 4,
        devices: 4,
        sessions: 4,
        concurrency: 2,
        store_devices: 5,
        child_exe: None,
        child_active_devices: 0,
    };
    let report = steward_bench::run(&opts).await.unwrap();
    for name in [
        "CA signing, 1 thread(s)",
        "enrollment end to end (probe, Discover, Policy, RST, stored)",
        "idle check-in, new connection per session, TLS resumption",
        "bare hyper+rustls baseline, connection reused across sessions",
        "10-Replace session, new connection per session, full handshake",
        "fan-out: enqueue 10 commands to 5 devices",
        "admin reads: list 5 devices in pages of 100",
        "admin reads: dashboard aggregates over 5 devices",
    ] {
        let f = report.get(name).unwrap_or_else(|| panic!("missing figure {name}"));
        assert!(f.value.is_finite() && f.value > 0.0, "{name}: {}", f.value);
    }
    assert!(
        report
            .figures
            .iter()
            .any(|f| f.name.starts_with("SyncML parse, generated"))
    );
    assert!(report.figures.iter().any(|f| f.name.starts_with("store bytes per")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_storm_produces_figures_and_every_ack_is_recorded() {
    for spread_seconds in [0.0, 0.2] {
        let opts = steward_bench::StormOptions {
            devices: 3,
            commands: 2,
            concurrency: 2,
            spread_seconds,
        };
        let report = steward_bench::storm(&opts).await.unwrap();
        let last = report
            .get("policy storm: 3 devices, time from assignment to the last acknowledgement")
            .expect("storm figure");
        assert!(last.value.is_finite() && last.value > 0.0, "{}", last.value);
        assert!(
            last.note
                .contains("3 sessions ok, 0 failed; 6 acknowledgements and 0 failures recorded"),
            "{}",
            last.note
        );
        assert!(
            report
                .get("policy storm: per device, check-in start to acknowledgement recorded, p99")
                .is_some_and(|f| f.value > 0.0)
        );
    }
}

/// `checkins --database-url`: the same run on a fresh PostgreSQL database of the test server
/// (`STEWARD_TEST_POSTGRES_URL`, as scripts/test sets it, else the local one), dropped after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkins_run_on_postgresql() {
    let url = std::env::var("STEWARD_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let opts = steward_bench::CheckinOptions {
        devices: 3,
        sessions: 3,
        concurrency: 2,
        mode: steward_bench::ConnMode::Resumed,
        bare: false,
        callgrind: false,
        tls12: false,
        database_url: Some(url),
    };
    let report = steward_bench::checkins(&opts).await.unwrap();
    let enrolled = report
        .get("enrollment end to end (probe, Discover, Policy, RST, stored)")
        .expect("enrollment figure");
    assert!(enrolled.note.starts_with("3 ok, 0 failed"), "{}", enrolled.note);
    let idle = report
        .get("idle check-in, new connection per session, TLS resumption")
        .expect("idle check-in figure");
    assert!(idle.value.is_finite() && idle.value > 0.0, "{}", idle.value);
    assert!(idle.note.starts_with("3 sessions, 0 failed"), "{}", idle.note);
    assert!(idle.note.contains("PostgreSQL backends CPU"), "{}", idle.note);
}

/// `profiles` at toy size: the assignment, the reconciliation through the commit path (every device
/// settled, every row verified), the idle check-ins of configured and bare devices, the rollout
/// through a pilot ring of the configured devices over the wire, and the store-path ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_produce_figures_and_every_device_settles() {
    let opts = steward_bench::ProfilesOptions {
        store_devices: 20,
        reconcile_devices: 4,
        devices: 3,
        sessions: 3,
        concurrency: 2,
        ring_devices: 6,
        ..Default::default()
    };
    let report = steward_bench::profiles(&opts).await.unwrap();
    let find = |prefix: &str| {
        report
            .figures
            .iter()
            .find(|f| f.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no figure {prefix}"))
    };
    let reconciled = find("profiles: reconcile 4 devices");
    assert!(
        reconciled.note.contains("4 of 4 devices settled"),
        "{}",
        reconciled.note
    );
    assert!(!reconciled.note.contains("failed"), "{}", reconciled.note);
    // Two of the three devices are in the configured group; the third has no profile.
    let settled = find("profiles: 2 of 3 devices reconcile");
    assert!(
        settled.note.contains("until 3 of 3 devices were settled"),
        "{}",
        settled.note
    );
    let wire_ring = report
        .figures
        .iter()
        .find(|f| f.name.contains("through a pilot ring of 2 devices"))
        .expect("wire ring figure");
    assert!(
        wire_ring.note.contains("ring 1 2 of 2 acknowledged, 0 failed"),
        "{}",
        wire_ring.note
    );
    let ring = report
        .figures
        .iter()
        .find(|f| f.name.contains("through a pilot ring of 6 devices"))
        .expect("store-path ring figure");
    assert!(
        ring.note.contains("ring 1: 6 of 6 acknowledged, 0 failed"),
        "{}",
        ring.note
    );
    assert!(find("profiles: rollout ring check-in rate").value > 0.0);
    assert!(find("profiles: idle check-in server CPU").value.is_finite());
}
