//! Staged rollouts from the command line (docs/ROLLOUTS.md): `steward rollout status NAME` shows
//! each ring's progress as a plain-text bar (`[#####-----] 50 %` of the ring's devices
//! acknowledged), and `advance`, `pause`, `resume`, `rollback NAME` act on the profile's active
//! rollout. A rollout is started by applying a profile document with a `rollout:` section.

use anyhow::Result;
use steward_api::types::RolloutView;

use crate::client::ApiClient;
use crate::output::{Output, Table, print_json, when};

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// The profile's rollout: state, gates, and per ring its devices, acknowledgements, failures.
    Status { name: String },
    /// Release the next ring now, whatever its gates say.
    Advance { name: String },
    /// Stop releasing rings until resumed.
    Pause { name: String },
    /// Resume a paused or halted rollout (the ring's soak starts again).
    Resume { name: String },
    /// Send every device the previous version's values again.
    Rollback { name: String },
}

/// `[#####-----] 50 %`: `done` of `total` in `width` cells (an empty ring shows as complete, as
/// its gate treats it).
pub fn progress_bar(done: u64, total: u64, width: usize) -> String {
    let ratio = if total == 0 {
        1.0
    } else {
        done.min(total) as f64 / total as f64
    };
    let filled = (ratio * width as f64).round() as usize;
    format!(
        "[{}{}] {:>3} %",
        "#".repeat(filled),
        "-".repeat(width - filled),
        (ratio * 100.0).floor() as u64
    )
}

fn print_rollout(r: &RolloutView) -> Result<()> {
    println!(
        "{}: version {} -> {}  {}  ring {} of {}{}",
        r.profile,
        r.from_version,
        r.to_version,
        r.state,
        r.current_ring,
        r.rings.len(),
        if r.auto_advance { "" } else { "  (advanced by an admin)" }
    );
    if !r.reason.is_empty() {
        println!("  {}", r.reason);
    }
    if let Some(g) = &r.gate {
        println!("  gate: {g}");
    }
    println!(
        "  ring released {}  halts above {:.1} % failed",
        when(Some(r.ring_started_at), "-"),
        r.failure_threshold * 100.0
    );
    let mut t = Table::new(&[
        "RING", "TARGET", "RELEASED", "PROGRESS", "ACKED", "FAILED", "DEVICES", "GATE",
    ]);
    for ring in &r.rings {
        t.row(vec![
            ring.ring.to_string(),
            ring.target.clone(),
            if ring.released { "yes" } else { "no" }.into(),
            progress_bar(ring.acknowledged, ring.devices, 10),
            ring.acknowledged.to_string(),
            ring.failed.to_string(),
            ring.devices.to_string(),
            format!("{}s, {:.0} %", ring.soak_seconds, ring.success_ratio * 100.0),
        ]);
    }
    t.print()?;
    Ok(())
}

pub async fn rollout(c: &ApiClient, out: Output, command: RolloutCommand) -> Result<()> {
    let fetched = match &command {
        RolloutCommand::Status { name } => c.rollout(name).await?,
        RolloutCommand::Advance { name } => c.rollout_action(name, "advance").await?,
        RolloutCommand::Pause { name } => c.rollout_action(name, "pause").await?,
        RolloutCommand::Resume { name } => c.rollout_action(name, "resume").await?,
        RolloutCommand::Rollback { name } => c.rollout_action(name, "rollback").await?,
    };
    match out {
        Output::Json => print_json(&fetched.raw)?,
        Output::Table => print_rollout(&fetched.data)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bars() {
        assert_eq!(progress_bar(5, 10, 10), "[#####-----]  50 %");
        assert_eq!(progress_bar(0, 4, 10), "[----------]   0 %");
        assert_eq!(progress_bar(4, 4, 10), "[##########] 100 %");
        assert_eq!(progress_bar(0, 0, 10), "[##########] 100 %");
        assert_eq!(progress_bar(1, 3, 10), "[###-------]  33 %");
    }
}
