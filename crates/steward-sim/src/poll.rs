//! The DMClient poll schedule (Learn "DMClient CSP", `Provider/<ProviderID>/Poll/*`; MS-MDM
//! §3.1.5.1 refers to it for the device session's poll intervals).
//!
//! Windows polls in three sets: `IntervalForFirstSetOfRetries` minutes apart
//! `NumberOfFirstRetries` times, then `IntervalForSecondSetOfRetries` × `NumberOfSecondRetries`,
//! then `IntervalForRemainingScheduledRetries` × `NumberOfRemainingScheduledRetries`. The rules,
//! as MS-MDE2 §2.2.9.3 (DMClient Poll) states them:
//! - an interval of 0 disables its set;
//! - `NumberOfSecondRetries`: "If the value is set to 0 and IntervalForSecondSetOfRetries is not
//!   set to 0 AND the first set of retries is not set as infinite retries, then the schedule
//!   repeats an infinite number of times" (and likewise a first set with count 0 is infinite);
//! - `NumberOfRemainingScheduledRetries`: "if either or both of the first and second set of
//!   retries are set as infinite, then this schedule will be disabled" (its worked example "Invalid
//!   poll schedule: two infinite schedules", 15×5 then 1440×0 then 1440×0, has the third set
//!   disabled);
//! - "the server MUST NOT set all 6 polling parameters to 0 and MUST NOT set all 3 number of
//!   retries nodes to 0 because it will cause a configuration failure"; "The server MUST NOT set
//!   NumberOfFirstRetries to 0" ([`PollSchedule::configuration_error`]).
//!
//! The schedule starts with the session right after enrollment.
//!
//! The values live in the device's [`crate::CspTree`]: the provisioning document seeds them and a
//! server Replace of `./Vendor/MSFT/DMClient/Provider/<id>/Poll/*` changes them, so the schedule is
//! read from the tree every time rather than cached.

use std::time::Duration;

use crate::csp::CspTree;
use crate::session::ManagedDevice;

/// When a schedule has run out (every set finite and used up, or every interval 0), Windows stops
/// scheduled polling; a simulated fleet still has to wake its devices, so they fall back to the
/// Steward default steady-state interval. 60 minutes.
pub const FALLBACK_POLL_MINUTES: u64 = 60;

/// One set of the schedule: `count` polls `interval_minutes` apart; `count == 0` is forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollSet {
    pub interval_minutes: u64,
    pub count: u64,
}

/// The three sets of DMClient's poll schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollSchedule {
    pub first: PollSet,
    pub second: PollSet,
    pub remaining: PollSet,
}

impl PollSchedule {
    /// Reads `./Vendor/MSFT/DMClient/Provider/<provider_id>/Poll/*`; a missing or non-numeric node
    /// counts as 0 (for an interval: that set is disabled).
    pub fn from_tree(tree: &CspTree, provider_id: &str) -> Self {
        let base = format!("./Vendor/MSFT/DMClient/Provider/{provider_id}/Poll");
        let num = |name: &str| -> u64 {
            tree.value(&format!("{base}/{name}"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Self {
            first: PollSet {
                interval_minutes: num("IntervalForFirstSetOfRetries"),
                count: num("NumberOfFirstRetries"),
            },
            second: PollSet {
                interval_minutes: num("IntervalForSecondSetOfRetries"),
                count: num("NumberOfSecondRetries"),
            },
            remaining: PollSet {
                interval_minutes: num("IntervalForRemainingScheduledRetries"),
                count: num("NumberOfRemainingScheduledRetries"),
            },
        }
    }

    /// Why Windows would refuse this schedule as a configuration failure (MS-MDE2 §2.2.9.3), if
    /// it would.
    pub fn configuration_error(&self) -> Option<&'static str> {
        let sets = [self.first, self.second, self.remaining];
        if sets.iter().all(|s| s.interval_minutes == 0 && s.count == 0) {
            return Some("all 6 polling parameters are 0");
        }
        if sets.iter().all(|s| s.count == 0) {
            return Some("all 3 number-of-retries nodes are 0");
        }
        if self.first.count == 0 {
            return Some("NumberOfFirstRetries is 0");
        }
        None
    }

    /// The wait (simulated time) before the next scheduled poll when `polls_done` scheduled
    /// sessions have run since enrollment; `None` when the schedule has run out.
    ///
    /// `polls_done == 0`: the device has just enrolled and polls at once. After the first
    /// session, retry `i = polls_done - 1` falls into the first set while `i < first.count`, and
    /// so on.
    pub fn delay_after(&self, polls_done: u64) -> Option<Duration> {
        if polls_done == 0 {
            return Some(Duration::ZERO);
        }
        let mut i = polls_done - 1;
        // MS-MDE2 §2.2.9.3: a set with interval 0 is skipped; a set with count 0 (and a non-zero
        // interval) is infinite, so no later set is ever reached (the remaining set "will be
        // disabled" behind an infinite first or second set).
        for set in [self.first, self.second, self.remaining] {
            if set.interval_minutes == 0 {
                continue;
            }
            if set.count == 0 || i < set.count {
                return Some(minutes(set.interval_minutes));
            }
            i -= set.count;
        }
        None
    }
}

fn minutes(m: u64) -> Duration {
    Duration::from_secs(m.saturating_mul(60))
}

/// Compresses simulated time for load tests: `time_scale` 60 makes one simulated minute one real
/// second. Scales ≤ 0 or non-finite are treated as 1 (real time) rather than dividing by zero.
pub fn scale_delay(delay: Duration, time_scale: f64) -> Duration {
    if !time_scale.is_finite() || time_scale <= 0.0 {
        return delay;
    }
    Duration::try_from_secs_f64(delay.as_secs_f64() / time_scale).unwrap_or(Duration::MAX)
}

impl ManagedDevice {
    /// The device's current poll schedule, from its DMClient nodes.
    pub fn poll_schedule(&self) -> PollSchedule {
        PollSchedule::from_tree(&self.tree, &self.profile.provider_id)
    }

    /// How long (simulated time) until the next scheduled session, following Windows' DMClient
    /// schedule from the current position ([`ManagedDevice::scheduled_polls`]). Zero right after
    /// enrollment; [`FALLBACK_POLL_MINUTES`] once the schedule has run out.
    pub fn next_poll_delay(&self) -> std::time::Duration {
        self.poll_schedule()
            .delay_after(u64::from(self.scheduled_polls()))
            .unwrap_or(minutes(FALLBACK_POLL_MINUTES))
    }

    /// [`ManagedDevice::next_poll_delay`] compressed by `time_scale` (see [`scale_delay`]).
    pub fn next_poll_delay_scaled(&self, time_scale: f64) -> Duration {
        scale_delay(self.next_poll_delay(), time_scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csp::{DeviceProfile, Format};

    fn sched(i1: u64, n1: u64, i2: u64, n2: u64, i3: u64, n3: u64) -> PollSchedule {
        PollSchedule {
            first: PollSet {
                interval_minutes: i1,
                count: n1,
            },
            second: PollSet {
                interval_minutes: i2,
                count: n2,
            },
            remaining: PollSet {
                interval_minutes: i3,
                count: n3,
            },
        }
    }

    fn mins(m: u64) -> Option<Duration> {
        Some(Duration::from_secs(m * 60))
    }

    #[test]
    fn phases_in_order() {
        let s = sched(3, 5, 15, 8, 480, 0);
        assert_eq!(s.delay_after(0), Some(Duration::ZERO), "polls at once after enrollment");
        for n in 1..=5 {
            assert_eq!(s.delay_after(n), mins(3), "first set, poll {n}");
        }
        for n in 6..=13 {
            assert_eq!(s.delay_after(n), mins(15), "second set, poll {n}");
        }
        for n in [14, 15, 1000, u64::MAX] {
            assert_eq!(s.delay_after(n), mins(480), "remaining, poll {n}");
        }
    }

    #[test]
    fn count_zero_is_forever_and_hides_later_sets() {
        let s = sched(3, 0, 15, 8, 480, 0);
        assert_eq!(s.delay_after(1), mins(3));
        assert_eq!(s.delay_after(10_000), mins(3));
        let s = sched(3, 2, 15, 0, 480, 0);
        assert_eq!(s.delay_after(2), mins(3));
        assert_eq!(s.delay_after(3), mins(15));
        assert_eq!(s.delay_after(500), mins(15));
    }

    /// MS-MDE2 §2.2.9.3's worked example "Invalid poll schedule: two infinite schedules": 15×5,
    /// 1440×0, 1440×0 → the third schedule is disabled, so a change of its interval does nothing.
    /// Steward's schedule before interop review M-2 had exactly that shape.
    #[test]
    fn two_infinite_schedules_disable_the_third() {
        let s = sched(15, 5, 1440, 0, 1440, 0);
        assert_eq!(s.configuration_error(), None);
        assert_eq!(s.delay_after(6), mins(1440));
        let changed = sched(15, 5, 1440, 0, 3, 0);
        assert_eq!(changed.delay_after(1000), mins(1440), "remaining interval ignored");
        // Steward's schedule since: second set off, remaining infinite and in effect.
        let fixed = sched(3, 5, 0, 0, 3, 0);
        assert_eq!(fixed.delay_after(6), mins(3));
        assert_eq!(
            sched(0, 0, 0, 0, 0, 0).configuration_error(),
            Some("all 6 polling parameters are 0")
        );
        assert_eq!(
            sched(3, 0, 0, 0, 60, 0).configuration_error(),
            Some("all 3 number-of-retries nodes are 0")
        );
        assert_eq!(
            sched(3, 0, 15, 2, 60, 0).configuration_error(),
            Some("NumberOfFirstRetries is 0")
        );
    }

    #[test]
    fn zero_interval_disables_a_set_and_finite_schedules_end() {
        // Steward's own provisioning doc: no second set.
        let s = sched(3, 5, 0, 0, 60, 0);
        assert_eq!(s.delay_after(5), mins(3));
        assert_eq!(s.delay_after(6), mins(60));
        let s = sched(3, 1, 0, 0, 60, 2);
        assert_eq!(s.delay_after(3), mins(60));
        assert_eq!(s.delay_after(4), None, "all sets used up");
        assert_eq!(sched(0, 0, 0, 0, 0, 0).delay_after(1), None);
    }

    #[test]
    fn device_reads_its_tree_and_follows_replaces() {
        let mut d = ManagedDevice::new(DeviceProfile::random("ABCD"), "https://x/");
        // windows_11 seeds 3×5, 15×8, 480×∞.
        assert_eq!(d.next_poll_delay(), Duration::ZERO);
        d.set_scheduled_polls(1);
        assert_eq!(d.next_poll_delay(), Duration::from_secs(180));
        d.set_scheduled_polls(6);
        assert_eq!(d.next_poll_delay(), Duration::from_secs(15 * 60));
        // The server Replaces the second interval mid-life.
        let node = "./Vendor/MSFT/DMClient/Provider/Steward/Poll/IntervalForSecondSetOfRetries";
        assert_eq!(d.tree.replace(node, Some("int"), None, Some("20")), Ok(200));
        assert_eq!(d.next_poll_delay(), Duration::from_secs(20 * 60));
        d.set_scheduled_polls(14);
        assert_eq!(d.next_poll_delay(), Duration::from_secs(480 * 60));
        // A schedule that ran out falls back rather than never polling again.
        let rem = "./Vendor/MSFT/DMClient/Provider/Steward/Poll/NumberOfRemainingScheduledRetries";
        d.tree.seed(rem, Format::Int, crate::csp::Access::GET_REPLACE, "1");
        d.set_scheduled_polls(15);
        assert_eq!(d.next_poll_delay(), Duration::from_secs(FALLBACK_POLL_MINUTES * 60));
    }

    #[test]
    fn starting_a_scheduled_session_advances_the_schedule_and_a_push_does_not() {
        let mut d = ManagedDevice::new(DeviceProfile::random("ABCD"), "https://x/");
        d.start_session(crate::SessionTrigger::Scheduled).unwrap();
        d.end_session();
        assert_eq!(d.scheduled_polls(), 1);
        d.start_session(crate::SessionTrigger::ServerInitiated).unwrap();
        d.end_session();
        assert_eq!(d.scheduled_polls(), 1);
        assert_eq!(d.session_counter(), 2);
    }

    #[test]
    fn time_scale_compresses() {
        let d = Duration::from_secs(180);
        assert_eq!(scale_delay(d, 60.0), Duration::from_secs(3));
        assert_eq!(scale_delay(d, 1.0), d);
        assert_eq!(scale_delay(d, 0.0), d, "0 means real time, not a division by zero");
        assert_eq!(scale_delay(d, f64::NAN), d);
        assert_eq!(scale_delay(d, 0.5), Duration::from_secs(360));
        let mut m = ManagedDevice::new(DeviceProfile::random("ABCD"), "https://x/");
        m.set_scheduled_polls(1);
        assert_eq!(m.next_poll_delay_scaled(60.0), Duration::from_secs(3));
    }
}
