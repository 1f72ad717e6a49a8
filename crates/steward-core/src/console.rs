//! Web console records: which users may sign in to the console (and with what role), their
//! sessions, and the fleet totals the dashboard shows. The session id itself is a bearer secret like
//! an API token: only its SHA-256 is stored.

use time::OffsetDateTime;

use crate::admin::Role;
use crate::model::{User, UserId};
use crate::secret::TokenHash;

/// A user allowed to sign in to the console. Users without a console role exist only for device
/// enrollment (UsernameToken, federated sign-in) and cannot reach the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleUser {
    pub user: User,
    pub role: Role,
    /// Group scope: the user sees only this group's devices (None: the whole fleet the role allows).
    pub group: Option<crate::model::GroupId>,
    /// The second factor, once the user started setting it up.
    pub totp: Option<UserTotp>,
}

/// A user's TOTP second factor as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct UserTotp {
    /// The seed sealed under the server's data key (label `totp:<user id>`); never the seed itself.
    pub sealed_secret: String,
    /// When the user proved the authenticator works by entering a code; until then the seed is only
    /// being set up and sign-in does not ask for it.
    pub confirmed_at: Option<OffsetDateTime>,
    /// The last time step accepted (RFC 6238 T): a code is accepted once.
    pub last_step: Option<i64>,
}

impl UserTotp {
    pub fn confirmed(&self) -> bool {
        self.confirmed_at.is_some()
    }
}

impl std::fmt::Debug for UserTotp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserTotp")
            .field("confirmed_at", &self.confirmed_at)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// A console session as stored. `id_hash` is SHA-256 of the cookie value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub id_hash: TokenHash,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    /// Last request seen (idle expiry counts from here; written at most once a minute).
    pub last_seen_at: OffsetDateTime,
    /// Absolute expiry, whatever the activity.
    pub expires_at: OffsetDateTime,
    pub source_ip: Option<String>,
    /// The password was right but the second factor is still due (or being set up): such a session
    /// reaches only the second-factor pages, and is replaced by a new one (new id) once it is given.
    pub second_factor_pending: bool,
}

/// Fleet totals for the console dashboard, computed with aggregate queries (never by loading the
/// devices).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceStats {
    /// (state name, count), every state that has enrollments.
    pub by_state: Vec<(String, u64)>,
    /// Active devices by last check-in: within the hour, within the day, older, never.
    pub seen_last_hour: u64,
    pub seen_last_day: u64,
    pub seen_older: u64,
    pub never_seen: u64,
    /// (OS version, count) of active devices, most common first, at most 20 ("unknown" for none).
    pub os_versions: Vec<(String, u64)>,
    /// Commands pending or sent.
    pub open_commands: u64,
}

/// One UTC day of fleet activity, from the device event log. Days without events are absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyActivity {
    /// Midnight UTC starting the day.
    pub day: OffsetDateTime,
    /// Enrollments of devices that had no active enrollment.
    pub enrolled: u64,
    /// Re-enrollments (a new enrollment replacing the device's previous one).
    pub reenrolled: u64,
    /// Enrollments ended by unenrollment or an acknowledged wipe.
    pub removed: u64,
    pub commands_acknowledged: u64,
    pub commands_failed: u64,
}

impl Default for DailyActivity {
    fn default() -> Self {
        Self {
            day: OffsetDateTime::UNIX_EPOCH,
            enrolled: 0,
            reenrolled: 0,
            removed: 0,
            commands_acknowledged: 0,
            commands_failed: 0,
        }
    }
}

/// A day of the dashboard's charts: the activity plus the active devices at the end of the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityDay {
    pub activity: DailyActivity,
    pub active_at_end: u64,
}

/// Midnight UTC of the day holding `t`.
pub fn utc_midnight(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_time(time::Time::MIDNIGHT)
}

/// The last `days` days (today included) with every day present, and the active-device count at the
/// end of each, walked back from `active_now`: a day's end count is the next day's minus what
/// that next day added (new enrollments) plus what it removed.
pub fn activity_series(active_now: u64, rows: &[DailyActivity], days: u32, now: OffsetDateTime) -> Vec<ActivityDay> {
    let today = utc_midnight(now);
    let mut out = Vec::with_capacity(days as usize);
    let mut active = active_now as i64;
    for back in 0..i64::from(days) {
        let day = today - time::Duration::days(back);
        let activity = rows.iter().find(|r| r.day == day).cloned().unwrap_or(DailyActivity {
            day,
            ..Default::default()
        });
        let added = activity.enrolled as i64 - activity.removed as i64;
        out.push(ActivityDay {
            activity,
            active_at_end: active.max(0) as u64,
        });
        active -= added;
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_walks_back_from_now_and_fills_gaps() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(); // 2023-11-14 22:13 UTC
        let today = utc_midnight(now);
        assert_eq!(today.unix_timestamp() % 86_400, 0);
        let d = |back: i64| today - time::Duration::days(back);
        let rows = [
            DailyActivity {
                day: d(2),
                enrolled: 5,
                ..Default::default()
            },
            DailyActivity {
                day: d(0),
                enrolled: 2,
                removed: 1,
                reenrolled: 3,
                ..Default::default()
            },
        ];
        let s = activity_series(6, &rows, 4, now);
        assert_eq!(s.len(), 4);
        assert_eq!(
            s.iter().map(|a| a.activity.day).collect::<Vec<_>>(),
            vec![d(3), d(2), d(1), d(0)]
        );
        assert_eq!(s.iter().map(|a| a.active_at_end).collect::<Vec<_>>(), vec![0, 5, 5, 6]);
    }
}
