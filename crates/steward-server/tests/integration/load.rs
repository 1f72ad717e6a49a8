//! The load harness end to end against the real server (small, so it stays a test and not a
//! benchmark; `steward-sim load` runs the big ones — see docs/BENCHMARKS.md).

use std::time::Duration;

use steward_sim::{CheckinMode, KeySource, LoadConfig, Phase, run_load};

use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fleet_enrolls_and_checks_in() {
    let t = TestServer::start().await;
    let token = t.token(Some(20), ::time::Duration::hours(1), None).await;
    let mut cfg = LoadConfig::new(t.url.clone(), vec![t.root_der.clone()], token);
    cfg.devices = 20;
    cfg.enroll_rate = 0.0;
    cfg.concurrency = 8;
    cfg.checkins = CheckinMode::Sessions(2);
    cfg.keys = KeySource::Shared;
    cfg.duration = Duration::from_secs(60);
    cfg.server_pid = Some(std::process::id());
    let report = run_load(cfg, |_| {}).await.unwrap();
    assert_eq!(report.devices_enrolled, 20);
    let phase = |p: Phase| report.phases.iter().find(|r| r.phase == p).unwrap();
    let enroll = phase(Phase::Enroll);
    assert_eq!((enroll.ok, enroll.failed), (20, 0), "{:?}", enroll.errors);
    let checkin = phase(Phase::Checkin);
    assert_eq!((checkin.ok, checkin.failed), (40, 0), "{:?}", checkin.errors);
    assert!(checkin.commands > 0, "first sessions carry inventory");
    assert!(checkin.latency.p99_ms >= checkin.latency.p50_ms);
    assert!(report.server.as_ref().is_some_and(|s| s.rss_max_bytes > 0));
    assert_eq!(t.store().list_enrollments().await.unwrap().len(), 20);
    t.server.shutdown().await;
}
