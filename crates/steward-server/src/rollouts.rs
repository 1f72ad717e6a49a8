//! The rollout evaluation loop: every `rollouts.evaluate_interval_seconds` (default 60) it asks
//! the Rollouts service to evaluate every active rollout at the clock's time
//! ([`steward_core::service::Rollouts::evaluate_all`]), which advances, halts or completes them by
//! their gates (docs/ROLLOUTS.md). Every replica runs it: a state change is a compare-and-set in
//! the store, so a ring is advanced once however many replicas evaluate at the same moment. A
//! failed round is logged and tried again at the next tick.

use std::time::Duration;

use steward_core::service::Rollouts;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::RolloutsConfig;

/// Starts the loop; it ends when `shutdown` turns true.
pub fn spawn(rollouts: Rollouts, config: &RolloutsConfig, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    let every = Duration::from_secs(config.evaluate_interval_seconds.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; evaluating right at start-up is fine (a restart does
        // not delay a due advance by a whole interval).
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                    continue;
                }
            }
            match rollouts.evaluate_all(rollouts.now()).await {
                Ok(done) => {
                    for e in done.iter().filter(|e| e.outcome != "stay") {
                        tracing::info!(profile = %e.profile, ring = e.ring + 1, outcome = e.outcome, detail = %e.detail, "rollout");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "rollout evaluation failed; retrying at the next tick"),
            }
        }
    })
}
