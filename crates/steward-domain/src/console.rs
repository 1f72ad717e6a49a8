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
