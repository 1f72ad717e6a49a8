//! The storage seam. Every backend (SQLite now, PostgreSQL for scale-out) implements [`Store`] and
//! passes the same conformance story. Methods are coarse on purpose: each one is a unit of work the
//! backend commits atomically, so no caller can leave half a write behind.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::admin::*;
use crate::console::*;
use crate::management::*;
use crate::model::*;
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
    #[error("database error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- enrollment tokens and groups ----
    async fn create_enrollment_token(&self, t: &NewEnrollmentToken) -> StoreResult<EnrollmentToken>;
    async fn enrollment_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<EnrollmentToken>>;
    async fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentToken>>;
    async fn group_by_name(&self, name: &str) -> StoreResult<Option<Group>>;

    // ---- users ----
    async fn create_user(&self, u: &User) -> StoreResult<()>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>>;

    // ---- admin tokens ----
    /// Records an admin API token hash (the bootstrap token, for one). Idempotent for the same hash.
    async fn put_admin_token(&self, name: &str, hash: &TokenHash, created_at: OffsetDateTime) -> StoreResult<()>;
    async fn admin_token_exists(&self, hash: &TokenHash) -> StoreResult<bool>;
    async fn count_admin_tokens(&self) -> StoreResult<u64>;

    // ---- enrollments ----
    /// The active enrollment of a device, if any.
    async fn active_enrollment_by_device_id(&self, device_id: &DeviceId) -> StoreResult<Option<Enrollment>>;
    async fn enrollment_by_id(&self, id: EnrollmentId) -> StoreResult<Option<Enrollment>>;
    async fn list_enrollments(&self) -> StoreResult<Vec<Enrollment>>;
    /// Commits an enrollment atomically (see [`EnrollmentCommit`]). On any error nothing was written.
    async fn commit_enrollment(&self, c: &EnrollmentCommit) -> StoreResult<()>;

    // ---- certificate issuance log (append-only) ----
    /// Appends a log entry outside any enrollment (e.g. a certificate signed for an enrollment that
    /// failed to commit is recorded as void).
    async fn append_issuance_log(&self, e: &IssuanceLogEntry) -> StoreResult<()>;
    async fn issuance_log(&self) -> StoreResult<Vec<IssuanceLogEntry>>;

    // ---- management ----
    /// The enrollment whose current identity certificate has this SHA-1 thumbprint (any state; the
    /// caller decides whether the state allows a session).
    async fn enrollment_by_certificate(&self, thumbprint: &str) -> StoreResult<Option<Enrollment>>;
    /// Replaces the enrollment's identity certificate. The one used to authenticate stays valid until
    /// the device first uses the new one. Fails with NotFound unless `old_thumbprint` is the current or
    /// the previous certificate of an active enrollment.
    async fn renew_certificate(&self, r: &CertificateRenewal) -> StoreResult<()>;
    /// The `syncml:auth-md5` digest key provisioned at enrollment, if any.
    async fn md5_credential(&self, id: EnrollmentId) -> StoreResult<Option<String>>;
    /// Device events with `seq > after`, oldest first, at most `limit`.
    async fn device_events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<DeviceEvent>>;
    /// One enrollment's events, oldest first.
    async fn device_events_for(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceEvent>>;
    /// Changes an enrollment's state (admin or device action). Leaving `active` revokes the
    /// certificate (logged) and cancels the open commands. Returns false if it was not active.
    async fn end_enrollment(
        &self,
        id: EnrollmentId,
        state: EnrollmentState,
        reason: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
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
    async fn command_result(&self, id: CommandId) -> StoreResult<Option<CommandResult>>;
    async fn session_state(&self, id: EnrollmentId) -> StoreResult<Option<SessionState>>;
    /// What processing one management message reads (see [`ManagementContext`]), in one call: the
    /// enrollment named by `key` with its session state, the facts named in `facts`, its deliverable
    /// commands at `now` and whether an open command is overdue. None if no enrollment matches.
    async fn management_context(
        &self,
        key: EnrollmentKey<'_>,
        facts: &[&str],
        now: OffsetDateTime,
    ) -> StoreResult<Option<ManagementContext>>;
    /// Commits everything one device message produced (see [`SessionCommit`]) atomically.
    async fn commit_session_message(
        &self,
        id: EnrollmentId,
        commit: &SessionCommit,
        now: OffsetDateTime,
    ) -> StoreResult<()>;
    async fn device_facts(&self, id: EnrollmentId) -> StoreResult<Vec<DeviceFact>>;
    async fn fact_history(&self, id: EnrollmentId) -> StoreResult<Vec<FactChange>>;
    /// Raw device messages kept for audit, oldest first (bounded per enrollment).
    async fn device_messages(&self, id: EnrollmentId) -> StoreResult<Vec<(OffsetDateTime, String)>>;

    // ---- admin surface ----
    /// One page of enrollments (any state) matching the query, in its order (keyset pagination).
    async fn list_devices(&self, q: &DeviceQuery) -> StoreResult<Vec<Enrollment>>;
    /// The newest enrollment of a DeviceID in any state (history included).
    async fn latest_enrollment_by_device_id(&self, device_id: &DeviceId) -> StoreResult<Option<Enrollment>>;
    /// Revokes an enrollment token. Returns false if it does not exist or already was revoked.
    async fn revoke_enrollment_token(&self, id: EnrollmentTokenId) -> StoreResult<bool>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    async fn list_groups(&self) -> StoreResult<Vec<Group>>;
    /// Creates a device group. Conflict if the name is taken (names compare case-sensitively).
    async fn create_group(&self, g: &Group) -> StoreResult<()>;
    /// Deletes an empty group. Conflict while an active enrollment, an unrevoked enrollment token,
    /// an unrevoked API token or a console user still refers to it (moving or revoking them first is a decision for a
    /// person, not a side effect). Returns false if it did not exist.
    async fn delete_group(&self, id: GroupId) -> StoreResult<bool>;
    /// Moves an enrollment into a group (or out of every group with None). Returns false if the
    /// enrollment does not exist; NotFound-free for an unknown group is the caller's check.
    async fn set_enrollment_group(&self, id: EnrollmentId, group: Option<GroupId>) -> StoreResult<bool>;
    /// Active devices per group (groups without devices are absent).
    async fn group_device_counts(&self) -> StoreResult<Vec<(GroupId, u64)>>;
    async fn create_api_token(&self, t: &NewApiToken) -> StoreResult<ApiToken>;
    async fn api_token_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<ApiToken>>;
    async fn list_api_tokens(&self) -> StoreResult<Vec<ApiToken>>;
    /// Revokes an API token. Returns false if it does not exist or already was revoked.
    async fn revoke_api_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<bool>;
    /// Records that the token was used.
    async fn touch_api_token(&self, id: ApiTokenId, now: OffsetDateTime) -> StoreResult<()>;
    async fn admin_counts(&self) -> StoreResult<AdminCounts>;
    /// Appends to the hash-chained audit log (see [`crate::admin`]): the backend assigns the next seq
    /// and links the row to the previous one atomically. Rows are never updated or deleted.
    async fn append_audit_event(&self, e: &NewAuditEvent) -> StoreResult<AuditEvent>;
    /// A page of audit events matching `filter`, continuing after `after_seq` in the filter's order.
    async fn audit_events(
        &self,
        filter: &AuditFilter,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>>;

    // ---- webhooks ----
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

    // ---- web console ----
    /// Creates a user who may sign in to the console with `role`, limited to `group`'s devices if
    /// given (one transaction). Conflict if the e-mail exists.
    async fn create_console_user(&self, u: &User, role: Role, group: Option<GroupId>) -> StoreResult<()>;
    /// A user with a console role, by e-mail (case-insensitive); None for unknown users and users
    /// without console access.
    async fn console_user_by_email(&self, email: &str) -> StoreResult<Option<ConsoleUser>>;
    async fn create_console_session(&self, s: &ConsoleSession) -> StoreResult<()>;
    /// The session and its user (with the user's current role, so a role change applies at once).
    async fn console_session(&self, id_hash: &TokenHash) -> StoreResult<Option<(ConsoleSession, ConsoleUser)>>;
    async fn touch_console_session(&self, id_hash: &TokenHash, now: OffsetDateTime) -> StoreResult<()>;
    /// Deletes the session (logout) and every expired one. Returns false if it did not exist.
    async fn delete_console_session(&self, id_hash: &TokenHash, now: OffsetDateTime) -> StoreResult<bool>;
    /// Dashboard totals; `now` anchors the check-in freshness buckets.
    async fn device_stats(&self, now: OffsetDateTime) -> StoreResult<DeviceStats>;
    /// Per UTC day from the day of `since` up to (not including) the day of `until` (None: up to now),
    /// what the device event log records (aggregated in the database).
    async fn daily_activity(
        &self,
        since: OffsetDateTime,
        until: Option<OffsetDateTime>,
    ) -> StoreResult<Vec<DailyActivity>>;
    /// Stores a new, unconfirmed TOTP seed for the user (replacing any, confirmed or not, and
    /// forgetting the last used step), or with None removes the second factor. False if no such user.
    async fn set_user_totp(&self, user: UserId, sealed_secret: Option<&str>) -> StoreResult<bool>;
    /// Marks the user's seed confirmed and consumes `step`, in one statement. False if the user has
    /// no seed or `step` is not after the last used one.
    async fn confirm_user_totp(&self, user: UserId, step: i64, at: OffsetDateTime) -> StoreResult<bool>;
    /// Consumes a time step atomically: true only if `step` is after the last used one (two sign-ins
    /// racing with the same code, even on two replicas, cannot both win).
    async fn use_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool>;
    /// Ends every console session of the user (second factor reset, user disabled).
    async fn delete_console_sessions_of(&self, user: UserId) -> StoreResult<u64>;
    /// A console user by id (None for unknown users and users without console access).
    async fn console_user(&self, id: UserId) -> StoreResult<Option<ConsoleUser>>;
    /// Every user with console access, oldest first.
    async fn list_console_users(&self) -> StoreResult<Vec<ConsoleUser>>;
    /// Disables (or re-enables) a user: a disabled user can neither enroll devices nor sign in.
    /// False if no such user.
    async fn set_user_disabled(&self, user: UserId, disabled: bool) -> StoreResult<bool>;
    /// Gives the user console access with `role`, limited to `group` if given, or with None removes
    /// console access (and the group). False if no such user.
    async fn set_console_access(&self, user: UserId, role: Option<Role>, group: Option<GroupId>) -> StoreResult<bool>;
}
