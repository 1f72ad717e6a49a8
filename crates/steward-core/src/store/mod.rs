//! The storage seam, split by concern. Every backend (SQLite now, PostgreSQL for scale-out)
//! implements each trait directly and passes the same conformance stories; [`Store`] is their
//! composition, and services take the narrowest trait they need. Methods are coarse on purpose:
//! each write is a unit of work the backend commits atomically, so no caller can leave half a write
//! behind. Rules live in core: a backend writes the rows the values it is given describe.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::admin::*;
use crate::checkin::{CheckinCommit, CheckinContext, EnrollmentEnd, EnrollmentKey};
#[cfg(feature = "inspect")]
use crate::command::CommandResult;
use crate::command::{Command, CommandId, NewCommand};
use crate::configuration::{
    Assignment, DeviceConfiguration, Profile, ProfileId, ProfileStatusCounts, ProfileVersion, ProfileWrite,
};
use crate::console::*;
use crate::event::{DeviceEvent, EventKind, NewDeviceEvent};

use crate::group_rule::{GroupRule, RuleSubject};
use crate::identity::RenewalCommit;
use crate::inventory::{DeviceFact, FactChange, FactName};
use crate::model::*;
use crate::rollout::{Rollout, RolloutDeviceStat, RolloutId, RolloutTransition};
use crate::secret::TokenHash;
use crate::webhooks::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("enrollment token cannot be used: {0}")]
    TokenUnusable(#[from] TokenUnusable),
    #[error("single-use token was already used")]
    NonceReused,
    /// The database cannot serve the request now (locked, unreachable, overloaded); retrying later
    /// may succeed. Devices get a retryable answer for it.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Backend(String),
    /// What the write was planned on changed before it committed (a check-in's session record or
    /// a command it was about to send; [`crate::checkin::CheckinCommit`]); nothing was written.
    /// The caller re-reads and plans again.
    #[error("changed since it was read: {0}")]
    Stale(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Enrollment tokens, enrollments and their certificates (the issuance log).
#[async_trait]
pub trait EnrollmentStore: Send + Sync {
    async fn create_enrollment_token(&self, t: &NewEnrollmentToken) -> StoreResult<EnrollmentToken>;
    async fn enrollment_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<EnrollmentToken>>;
    async fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentToken>>;
    /// Revokes an enrollment token. Returns false if it does not exist or already was revoked.
    async fn revoke_enrollment_token(&self, id: EnrollmentTokenId) -> StoreResult<bool>;

    /// The active enrollment of a device, if any.
    async fn active_enrollment_by_device_id(&self, device_id: &DeviceId) -> StoreResult<Option<Enrollment>>;
    /// The newest enrollment of a DeviceID in any state (history included).
    async fn latest_enrollment_by_device_id(&self, device_id: &DeviceId) -> StoreResult<Option<Enrollment>>;
    async fn enrollment_by_id(&self, id: EnrollmentId) -> StoreResult<Option<Enrollment>>;
    /// The enrollment whose current (or still-accepted previous) certificate has this thumbprint,
    /// in any state (the caller decides whether the state allows what it does).
    async fn enrollment_by_certificate(&self, thumbprint: &Thumbprint) -> StoreResult<Option<Enrollment>>;

    /// Whether a federated token's nonce was already consumed by a committed enrollment (and its
    /// record not yet purged after the token's expiry). Read before the CA signs, so that a
    /// sequential replay costs no signature; the commit still refuses a reused nonce
    /// ([`StoreError::NonceReused`]), which is what settles two concurrent first uses.
    async fn nonce_spent(&self, nonce: &TokenHash) -> StoreResult<bool>;
    /// Commits an enrollment atomically (see [`EnrollmentCommit`]). On any error nothing was written.
    async fn commit_enrollment(&self, c: &EnrollmentCommit) -> StoreResult<()>;
    /// Applies a renewal (see [`RenewalCommit`]) atomically. NotFound unless the enrollment is
    /// active and its current certificate is still `expected_current`.
    async fn commit_renewal(&self, r: &RenewalCommit) -> StoreResult<()>;
    /// Ends an active enrollment (admin action): revokes its certificates (logged), cancels its open
    /// commands and records the event, atomically. Returns false if it was not active.
    async fn end_enrollment(&self, id: EnrollmentId, end: &EnrollmentEnd, now: OffsetDateTime) -> StoreResult<bool>;
    /// Appends a log entry outside any enrollment commit (a certificate signed for an enrollment
    /// that failed to commit is recorded as void).
    async fn append_issuance_log(&self, e: &IssuanceLogEntry) -> StoreResult<()>;
}

/// The command queue.
#[async_trait]
pub trait CommandQueue: Send + Sync {
    /// Queues commands in the given order. A small call is one transaction. A fleet-wide fan-out
    /// may commit in batches (the SQLite store: 10,000 commands each) so that device sessions are
    /// not held up behind it; if a batch fails, the batches before it stay queued and the error
    /// says how many commands were.
    async fn enqueue_commands(&self, commands: &[NewCommand]) -> StoreResult<()>;
    async fn command(&self, id: CommandId) -> StoreResult<Option<Command>>;
    /// All commands of an enrollment, oldest first.
    async fn commands_for_enrollment(&self, id: EnrollmentId) -> StoreResult<Vec<Command>>;
    /// Open (pending or sent), unexpired commands in delivery order: priority, then queue order.
    async fn deliverable_commands(&self, id: EnrollmentId, now: OffsetDateTime) -> StoreResult<Vec<Command>>;
    /// Cancels an open command. Returns false if it was no longer open.
    async fn cancel_command(&self, id: CommandId, now: OffsetDateTime) -> StoreResult<bool>;
}

/// The per-message hot path: one snapshot read, one write transaction.
#[async_trait]
pub trait CheckinStore: Send + Sync {
    /// What processing one device message reads (see [`CheckinContext`]), in one read snapshot: the
    /// enrollment named by `key` with its session, the facts named in `facts`, its deliverable and
    /// awaiting commands at `now`. None if no enrollment matches.
    async fn checkin_context(
        &self,
        key: EnrollmentKey<'_>,
        facts: &[FactName],
        now: OffsetDateTime,
    ) -> StoreResult<Option<CheckinContext>>;
    /// Commits everything one device message produced (see [`CheckinCommit`]) atomically.
    async fn commit_checkin(&self, id: EnrollmentId, commit: &CheckinCommit, now: OffsetDateTime) -> StoreResult<()>;
}

/// Inventory facts and their history.
#[async_trait]
pub trait InventoryStore: Send + Sync {
    async fn device_facts(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceFact>>;
    async fn fact_history(&self, id: EnrollmentId) -> StoreResult<Vec<FactChange>>;
}

/// People: users (enrollment and console), their console access and second factor.
#[async_trait]
pub trait UserStore: Send + Sync {
    async fn create_user(&self, u: &User) -> StoreResult<()>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    /// Disables (or re-enables) a user: a disabled user can neither enroll devices nor sign in.
    /// False if no such user.
    async fn set_user_disabled(&self, user: UserId, disabled: bool) -> StoreResult<bool>;

    /// Creates a user who may sign in to the console with `role`, limited to `group`'s devices if
    /// given (one transaction). Conflict if the e-mail exists.
    async fn create_console_user(&self, u: &User, role: Role, group: Option<GroupId>) -> StoreResult<()>;
    /// A user with a console role, by e-mail (case-insensitive); None for unknown users and users
    /// without console access.
    async fn console_user_by_email(&self, email: &str) -> StoreResult<Option<ConsoleUser>>;
    /// A console user by id (None for unknown users and users without console access).
    async fn console_user(&self, id: UserId) -> StoreResult<Option<ConsoleUser>>;
    /// Every user with console access, oldest first.
    async fn list_console_users(&self) -> StoreResult<Vec<ConsoleUser>>;
    /// Gives the user console access with `role`, limited to `group` if given, or with None removes
    /// console access (and the group). False if no such user.
    async fn set_console_access(&self, user: UserId, role: Option<Role>, group: Option<GroupId>) -> StoreResult<bool>;

    /// Stores a new, unconfirmed TOTP seed for the user (replacing any, confirmed or not, and
    /// forgetting the last used step), or with None removes the second factor. False if no such user.
    async fn set_user_totp(&self, user: UserId, sealed_secret: Option<&str>) -> StoreResult<bool>;
    /// Marks the user's seed confirmed and consumes `step`, in one statement. False if the user has
    /// no seed or `step` is not after the last used one.
    async fn confirm_user_totp(&self, user: UserId, step: i64, at: OffsetDateTime) -> StoreResult<bool>;
    /// Consumes a time step atomically: true only if `step` is after the last used one (two sign-ins
    /// racing with the same code, even on two replicas, cannot both win).
    async fn use_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool>;
}

/// Which active enrollments an on-demand verification covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyTarget {
    Enrollment(EnrollmentId),
    Group(GroupId),
    All,
}

/// Configuration profiles: their immutable versions and assignments, the configuration epoch, and
/// each device's setting rows and stamp (written by [`CheckinStore::commit_checkin`] from the
/// check-in's [`crate::configuration::ConfigurationCommit`]; read here for the admin surfaces).
/// Every profile or assignment write moves the epoch in the same transaction, so each device
/// reconciles once at its next check-in; moving a device to another group resets that device's
/// stamp ([`GroupStore::set_enrollment_group`]), and so does a check-in commit that changes one of
/// the facts a dynamic group's rule can read ([`crate::group_rule::RuleFact::is_rule_fact`]), so
/// its membership is evaluated again. Set-based: no write here touches a row per device.
#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// Writes the profile changes atomically, in order (see [`ProfileWrite`]): all or none. Conflict
    /// if a name or id to create exists, or an update's expected version is no longer current; a
    /// group in an assignment that does not exist is a Conflict too.
    async fn write_profiles(&self, writes: &[ProfileWrite]) -> StoreResult<()>;
    async fn profile(&self, id: ProfileId) -> StoreResult<Option<Profile>>;
    async fn profile_by_name(&self, name: &str) -> StoreResult<Option<Profile>>;
    /// Every profile, by name.
    async fn list_profiles(&self) -> StoreResult<Vec<Profile>>;
    async fn profile_version(&self, id: ProfileId, version: u32) -> StoreResult<Option<ProfileVersion>>;
    /// Every version of a profile, oldest first.
    async fn profile_versions(&self, id: ProfileId) -> StoreResult<Vec<ProfileVersion>>;
    /// Deletes a profile with its versions and assignment and moves the epoch; the devices' rows
    /// stay, so their next reconciliation applies each setting's removal rule. False if none.
    async fn delete_profile(&self, id: ProfileId) -> StoreResult<bool>;
    /// The current configuration epoch.
    async fn configuration_epoch(&self) -> StoreResult<i64>;
    /// What a check-in of the enrollment would load ([`DeviceConfiguration`]), for the admin
    /// surfaces. NotFound if the enrollment does not exist.
    async fn device_configuration(&self, id: EnrollmentId) -> StoreResult<DeviceConfiguration>;
    /// Active enrollments of `platform` that `assignment` includes, counted in one statement when
    /// it names only static groups; when it names a dynamic group, by evaluating the rules in core
    /// over the platform's active enrollments ([`crate::group_rule::count_included`]).
    async fn count_assigned(&self, platform: Platform, assignment: &Assignment) -> StoreResult<u64>;
    /// The device-setting rows of the profile on active enrollments (an ended enrollment's rows are
    /// history, not status), counted per version and status, and the active enrollments its
    /// assignment includes.
    async fn profile_status(&self, id: ProfileId) -> StoreResult<ProfileStatusCounts>;
    /// Makes a read-back due now for the target's active enrollments (one statement); returns how
    /// many enrollments it covered.
    async fn request_verification(&self, target: VerifyTarget, now: OffsetDateTime) -> StoreResult<u64>;
}

/// Staged rollouts of profile versions ([`crate::rollout`]). At most one active rollout (running,
/// paused, halted) per profile. A check-in loads the rollouts of its candidates with the rest of
/// the configuration ([`crate::configuration::DeviceConfiguration::rollouts`]), so the idle path
/// reads nothing more.
#[async_trait]
pub trait RolloutStore: Send + Sync {
    /// Writes the profile changes (as [`ProfileStore::write_profiles`]) and creates the rollouts in
    /// one transaction, so no device sees a new version before its rollout exists. Conflict if a
    /// profile already has an active rollout (nothing is written).
    async fn write_profiles_with_rollouts(&self, writes: &[ProfileWrite], rollouts: &[Rollout]) -> StoreResult<()>;
    async fn rollout(&self, id: RolloutId) -> StoreResult<Option<Rollout>>;
    /// The profile's newest rollout, in any state.
    async fn latest_rollout(&self, profile: ProfileId) -> StoreResult<Option<Rollout>>;
    /// Every active rollout, oldest first (the evaluation loop's work).
    async fn active_rollouts(&self) -> StoreResult<Vec<Rollout>>;
    /// Every rollout of a profile, newest first.
    async fn list_rollouts(&self, profile: ProfileId) -> StoreResult<Vec<Rollout>>;
    /// Writes the transition if the rollout is still in its expected state and ring (compare and
    /// set), moving the configuration epoch when it says so. False if someone else moved it first.
    async fn transition_rollout(&self, t: &RolloutTransition) -> StoreResult<bool>;
    /// Per assigned active enrollment of the rollout's profile (its platform and assignment), its
    /// group and its rows of the profile at the rollout's `to` version counted by status: one
    /// set-based statement, one small row per assigned device (ring membership by hash is computed
    /// in core, [`Rollout::ring_stats`]).
    async fn rollout_device_stats(&self, rollout: &Rollout) -> StoreResult<Vec<RolloutDeviceStat>>;
}

/// Device groups and membership.
#[async_trait]
pub trait GroupStore: Send + Sync {
    async fn group_by_name(&self, name: &str) -> StoreResult<Option<Group>>;
    async fn list_groups(&self) -> StoreResult<Vec<Group>>;
    /// Creates a device group (a dynamic one moves the configuration epoch). Conflict if the name
    /// is taken (names compare case-sensitively).
    async fn create_group(&self, g: &Group) -> StoreResult<()>;
    /// Deletes an empty group. Conflict while an active enrollment, an unrevoked enrollment token,
    /// an unrevoked API token, a console user or a profile assignment (included or excluded) still
    /// refers to it (moving, revoking or reassigning them first is a decision for a person, not a
    /// side effect). Deleting a dynamic group moves the configuration epoch. Returns false if it
    /// did not exist.
    async fn delete_group(&self, id: GroupId) -> StoreResult<bool>;
    /// Moves an enrollment into a group (or out of every group with None). Returns false if the
    /// enrollment does not exist; an unknown group, or a dynamic one, is the caller's check.
    async fn set_enrollment_group(&self, id: EnrollmentId, group: Option<GroupId>) -> StoreResult<bool>;
    /// Replaces a dynamic group's rule and moves the configuration epoch (every device
    /// re-evaluates its membership once). Conflict if the group is static (it has members by
    /// assignment, not by rule); false if it does not exist.
    async fn set_group_rule(&self, id: GroupId, rule: &GroupRule) -> StoreResult<bool>;
    /// An enrollment's tags, sorted (empty for an unknown enrollment).
    async fn device_tags(&self, id: EnrollmentId) -> StoreResult<DeviceTags>;
    /// Replaces an active enrollment's tags with `tags` (validated by core) and, when they changed,
    /// resets the device's configuration stamp in the same transaction, so its dynamic groups are
    /// re-evaluated at its next check-in exactly as after a fact change. Returns false (writing
    /// nothing) if the enrollment does not exist or is not active.
    async fn set_device_tags(&self, id: EnrollmentId, tags: &DeviceTags, now: OffsetDateTime) -> StoreResult<bool>;
    /// Every active enrollment (of `platform`, if given) with those of its facts named in `facts`,
    /// oldest first: what evaluating a dynamic group's rule in core reads (the members list, the
    /// profile counts). Whole-fleet, in memory. The name [`crate::group_rule::TAGS`] asks for the
    /// enrollment's tags, one fact per tag.
    async fn active_enrollments_with_facts(
        &self,
        platform: Option<Platform>,
        facts: &[FactName],
    ) -> StoreResult<Vec<RuleSubject>>;
}

/// Credentials for the admin surfaces: API tokens, the bootstrap token, console sessions.
#[async_trait]
pub trait AccessStore: Send + Sync {
    async fn create_api_token(&self, t: &NewApiToken) -> StoreResult<ApiToken>;
    async fn api_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<ApiToken>>;
    async fn list_api_tokens(&self) -> StoreResult<Vec<ApiToken>>;
    /// Revokes an API token. Returns false if it does not exist or already was revoked.
    async fn revoke_api_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<bool>;
    /// Records that the token was used.
    async fn touch_api_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<()>;

    /// Installs a bootstrap admin token and, in the same transaction, revokes (at `t.created_at`)
    /// every other bootstrap token still active: at most one is active at a time, the newest
    /// installed. Installing a hash that is already stored inserts nothing and keeps that row as it
    /// is (a revoked value stays revoked) but still revokes the others.
    async fn install_bootstrap_token(&self, t: &NewBootstrapToken) -> StoreResult<BootstrapInstall>;
    /// The bootstrap token with this hash, revoked or not.
    async fn bootstrap_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<BootstrapToken>>;
    /// Every bootstrap token, revoked ones included, oldest first.
    async fn list_bootstrap_tokens(&self) -> StoreResult<Vec<BootstrapToken>>;
    /// Revokes a bootstrap token. Returns false if it does not exist or already was revoked.
    async fn revoke_bootstrap_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<bool>;
    /// Records that the bootstrap token was used.
    async fn touch_bootstrap_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<()>;
    /// How many bootstrap tokens were ever stored, revoked ones included (none: the first start).
    async fn count_admin_tokens(&self) -> StoreResult<u64>;

    async fn create_console_session(&self, s: &ConsoleSession) -> StoreResult<()>;
    /// The session and its user (with the user's current role, so a role change applies at once).
    async fn console_session(&self, id_hash: &TokenHash) -> StoreResult<Option<(ConsoleSession, ConsoleUser)>>;
    async fn touch_console_session(&self, id_hash: &TokenHash, now: OffsetDateTime) -> StoreResult<()>;
    /// Deletes the session (logout) and every expired one. Returns false if it did not exist.
    async fn delete_console_session(&self, id_hash: &TokenHash, now: OffsetDateTime) -> StoreResult<bool>;
    /// Ends every console session of the user (second factor reset, user disabled).
    async fn delete_console_sessions_of(&self, user: UserId) -> StoreResult<u64>;
}

/// The hash-chained audit log.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends to the keyed audit chain (see [`crate::admin`]): the backend assigns the next seq and
    /// links the row to the previous one with `key` atomically, recording the first keyed seq (the
    /// `keyed_from` marker) in the same transaction when there is none yet. Rows are never updated
    /// or deleted.
    async fn append_audit_event(&self, e: &NewAuditEvent, key: &AuditChainKey) -> StoreResult<AuditEvent>;
    /// The first keyed event (rows before it are the unkeyed chain of earlier versions); None while
    /// nothing was appended with a key.
    async fn audit_keyed_from(&self) -> StoreResult<Option<i64>>;
    /// A page of audit events matching `filter`, continuing after `after_seq` in the filter's order.
    async fn audit_events(
        &self,
        filter: &AuditFilter,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>>;
}

/// The device event outbox.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Device events with `seq > after`, oldest first, at most `limit`.
    async fn device_events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<DeviceEvent>>;
    /// One enrollment's events of `kinds` (every kind when empty), newest first, at most `limit`:
    /// the device pages' event list (drift and refused settings), read through the
    /// (enrollment_id, seq) index.
    async fn device_events_of(
        &self,
        id: EnrollmentId,
        kinds: &[EventKind],
        limit: u32,
    ) -> StoreResult<Vec<DeviceEvent>>;
    /// Records an event that goes with no other write (a refused re-enrollment) on enrollment `id`,
    /// with the enrollment's DeviceID. Returns false if the enrollment does not exist.
    async fn append_device_event(&self, id: EnrollmentId, e: &NewDeviceEvent, at: OffsetDateTime) -> StoreResult<bool>;
}

/// Webhook subscriptions, their queue and delivery log.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Creates a subscription whose cursor is the newest device event (it receives what happens next).
    async fn create_webhook(&self, w: &NewWebhook) -> StoreResult<Webhook>;
    async fn webhook(&self, id: WebhookId) -> StoreResult<Option<Webhook>>;
    /// All subscriptions, oldest first.
    async fn list_webhooks(&self) -> StoreResult<Vec<Webhook>>;
    /// Deletes a subscription with its queued pings and delivery log. Returns false if it did not exist.
    async fn delete_webhook(&self, id: WebhookId) -> StoreResult<bool>;
    /// Pauses or resumes a subscription. A paused one keeps its cursor, so on resume it delivers what
    /// happened meanwhile. Returns false if it does not exist.
    async fn set_webhook_enabled(&self, id: WebhookId, enabled: bool) -> StoreResult<bool>;
    /// Queues a ping and makes the subscription due now (a test also cuts a retry backoff short).
    /// Returns None if the subscription does not exist.
    async fn queue_webhook_ping(&self, id: WebhookId, now: OffsetDateTime) -> StoreResult<Option<WebhookPing>>;
    /// The oldest queued ping of a subscription.
    async fn next_webhook_ping(&self, id: WebhookId) -> StoreResult<Option<WebhookPing>>;
    /// Moves the cursor forward over events the subscription does not want (never backwards).
    async fn advance_webhook_cursor(&self, id: WebhookId, seq: i64) -> StoreResult<()>;
    /// Appends the attempt to the delivery log and, atomically, updates the subscription: delivered or
    /// failed moves past the item (cursor or ping), retrying records the attempt count and next time.
    /// A subscription deleted meanwhile is not an error (nothing is written).
    async fn record_webhook_attempt(&self, a: &WebhookAttempt) -> StoreResult<()>;
    /// A page of one subscription's delivery log, newest first, continuing below `before_id`.
    async fn webhook_deliveries(
        &self,
        id: WebhookId,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<WebhookDelivery>>;
    /// Retention: deletes log rows older than `older_than` and all but the newest
    /// `keep_per_webhook` rows of each subscription. Returns how many were deleted.
    async fn prune_webhook_deliveries(&self, older_than: OffsetDateTime, keep_per_webhook: u32) -> StoreResult<u64>;
}

/// Lists and aggregates for the admin surfaces, computed in the database.
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// One page of enrollments (any state) matching the query, in its order (keyset pagination).
    async fn list_devices(&self, q: &DeviceQuery) -> StoreResult<Vec<Enrollment>>;
    /// Active devices per group (groups without devices are absent).
    async fn group_device_counts(&self) -> StoreResult<Vec<(GroupId, u64)>>;
    async fn admin_counts(&self) -> StoreResult<AdminCounts>;
    /// Dashboard totals; `now` anchors the check-in freshness buckets.
    async fn device_stats(&self, now: OffsetDateTime) -> StoreResult<DeviceStats>;
    /// Per UTC day from the day of `since` up to (not including) the day of `until` (None: up to now),
    /// what the device event log records (aggregated in the database).
    async fn daily_activity(
        &self,
        since: OffsetDateTime,
        until: Option<OffsetDateTime>,
    ) -> StoreResult<Vec<DailyActivity>>;
}

/// The schema versions `/readyz` compares: what the database records as applied and what this
/// binary carries (its embedded migration list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaVersions {
    /// The migrations the database records as applied, in version order.
    pub applied: Vec<i64>,
    /// The migrations this binary carries, in version order.
    pub known: Vec<i64>,
}

/// Whether a database's schema is the one this binary was built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    Current,
    /// Migrations this binary carries that the database has not applied (it was never migrated by
    /// this release, or a migration failed half-way through a deployment).
    Behind {
        missing: Vec<i64>,
    },
    /// Migrations the database has applied that this binary does not know: a newer Steward
    /// migrated it. Startup refuses such a database, and a running server is not ready on it.
    Newer {
        unknown: Vec<i64>,
    },
}

impl SchemaVersions {
    /// Decided once here so both backends report the same thing for the same history.
    pub fn state(&self) -> SchemaState {
        let unknown: Vec<i64> = self
            .applied
            .iter()
            .filter(|v| !self.known.contains(v))
            .copied()
            .collect();
        if !unknown.is_empty() {
            return SchemaState::Newer { unknown };
        }
        let missing: Vec<i64> = self
            .known
            .iter()
            .filter(|v| !self.applied.contains(v))
            .copied()
            .collect();
        if missing.is_empty() {
            SchemaState::Current
        } else {
            SchemaState::Behind { missing }
        }
    }
}

/// What a load balancer's readiness check asks of the database.
#[async_trait]
pub trait HealthStore: Send + Sync {
    /// One cheap read of the applied-migration list, through the same pool requests use: it
    /// fails ([`StoreError::Unavailable`] or [`StoreError::Backend`]) when the database does not
    /// answer. The caller bounds the wait.
    async fn schema_versions(&self) -> StoreResult<SchemaVersions>;
}

/// Everything a running server needs from its database.
pub trait Store:
    EnrollmentStore
    + CommandQueue
    + CheckinStore
    + InventoryStore
    + UserStore
    + GroupStore
    + ProfileStore
    + RolloutStore
    + AccessStore
    + AuditLog
    + EventLog
    + WebhookStore
    + ReportStore
    + HealthStore
    + 'static
{
}

impl<T> Store for T where
    T: EnrollmentStore
        + CommandQueue
        + CheckinStore
        + InventoryStore
        + UserStore
        + GroupStore
        + ProfileStore
        + RolloutStore
        + AccessStore
        + AuditLog
        + EventLog
        + WebhookStore
        + ReportStore
        + HealthStore
        + 'static
{
}

/// Readers no request handler needs: whole-table and per-row views for the conformance stories,
/// the integration tests and offline checks. Not part of [`Store`], so a backend's serving surface
/// stays what the server uses.
#[cfg(feature = "inspect")]
#[async_trait]
pub trait Inspect: Send + Sync {
    async fn list_enrollments(&self) -> StoreResult<Vec<Enrollment>>;
    async fn issuance_log(&self) -> StoreResult<Vec<IssuanceLogEntry>>;
    async fn command_result(&self, id: CommandId) -> StoreResult<Option<CommandResult>>;
    /// Raw device messages kept for audit, oldest first (bounded per enrollment).
    async fn device_messages(&self, id: EnrollmentId) -> StoreResult<Vec<(OffsetDateTime, String)>>;
    /// One enrollment's events, oldest first.
    async fn device_events_for(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceEvent>>;
    /// The stored check-in session of an enrollment.
    async fn session_record(&self, id: EnrollmentId) -> StoreResult<Option<crate::checkin::SessionRecord>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(applied: &[i64], known: &[i64]) -> SchemaVersions {
        SchemaVersions {
            applied: applied.to_vec(),
            known: known.to_vec(),
        }
    }

    #[test]
    fn schema_state_compares_the_applied_list_with_the_known_one() {
        assert_eq!(versions(&[1, 2, 3], &[1, 2, 3]).state(), SchemaState::Current);
        assert_eq!(
            versions(&[1, 2], &[1, 2, 3]).state(),
            SchemaState::Behind { missing: vec![3] }
        );
        assert_eq!(versions(&[], &[1]).state(), SchemaState::Behind { missing: vec![1] });
        // A version this binary does not know wins over anything missing: an older binary must not
        // serve a database a newer one migrated.
        assert_eq!(
            versions(&[1, 2, 4], &[1, 2, 3]).state(),
            SchemaState::Newer { unknown: vec![4] }
        );
    }
}
