//! Management records: the per-enrollment command queue, device responses, inventory facts and
//! OMA-DM session state.
//!
//! Delivery is at-least-once and recording exactly-once: a command stays pending until the device's
//! Status for it is stored; a command sent in a session whose reply never came is sent again in the
//! next session; the outcome is stored once per (enrollment, command) however often the device repeats
//! it.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{Enrollment, EnrollmentId};

/// A queued command. Its UUID is also the SyncML CmdID we send (MS-MDM allows any non-zero string),
/// so the device's Status/Results CmdRef names the command directly, across sessions and replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(pub Uuid);

impl CommandId {
    /// A new, time-ordered id (UUIDv7, RFC 9562 §5.7): a fleet-wide fan-out inserts in id order
    /// into the `commands` id index instead of at random places (docs/BENCHMARKS.md, third pass).
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
    /// The CmdID used on the wire for this command.
    pub fn cmd_id(&self) -> String {
        self.0.to_string()
    }
}

impl Default for CommandId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for CommandId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// The OMA-DM verb of a command (MS-MDM §2.2.1 / OMA-DM RepPro §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verb {
    Get,
    Add,
    Replace,
    Delete,
    Exec,
    /// All-or-nothing group of Add/Replace/Delete/Exec children.
    Atomic,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "Get",
            Verb::Add => "Add",
            Verb::Replace => "Replace",
            Verb::Delete => "Delete",
            Verb::Exec => "Exec",
            Verb::Atomic => "Atomic",
        }
    }
}

/// One item of a command: the node it targets and, for writes, the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandItem {
    pub target: String,
    /// `syncml:metinf` Format: chr, int, bool, b64, xml, node, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `syncml:metinf` Type, e.g. text/plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// What a command does. Atomic carries children; the others carry items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandPayload {
    pub verb: Verb,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<CommandItem>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<CommandPayload>,
}

impl CommandPayload {
    pub fn single(verb: Verb, item: CommandItem) -> Self {
        Self {
            verb,
            items: vec![item],
            children: Vec::new(),
        }
    }

    /// Whether any target is in the user scope (`./User/…`), which only works while a user is signed
    /// in (MS-MDM; Fleet's user-scoped profiles failed with 500/507 before a user session existed).
    pub fn is_user_scoped(&self) -> bool {
        self.items.iter().any(|i| i.target.starts_with("./User/")) || self.children.iter().any(Self::is_user_scoped)
    }

    /// All targets, depth first (for display and search).
    pub fn targets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.items.iter().map(|i| i.target.as_str()).collect();
        for c in &self.children {
            out.extend(c.targets());
        }
        out
    }
}

/// Lifecycle of a queued command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandState {
    /// Waiting to be sent (again).
    Pending,
    /// Sent in a session; awaiting the device's Status. Sent again in the next session if none comes.
    Sent,
    /// The device answered 202: accepted for asynchronous processing (e.g. MSI install); the final
    /// outcome arrives later as a 1226 generic alert.
    Accepted,
    /// The device answered 2xx.
    Succeeded,
    /// The device answered an error code.
    Failed,
    Cancelled,
    Expired,
}

impl CommandState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Accepted => "accepted",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "sent" => Self::Sent,
            "accepted" => Self::Accepted,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
    /// Still to be delivered.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Sent)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    pub id: CommandId,
    pub enrollment_id: EnrollmentId,
    pub payload: CommandPayload,
    /// Higher first; ties in queue order.
    pub priority: i32,
    /// Why it exists: "admin", "inventory", "action:wipe", "poll", …
    pub origin: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: CommandId,
    pub enrollment_id: EnrollmentId,
    pub payload: CommandPayload,
    pub priority: i32,
    pub origin: String,
    pub state: CommandState,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub send_count: u32,
    pub last_sent_at: Option<OffsetDateTime>,
    /// SyncML SessionID of the last send.
    pub last_session: Option<String>,
    pub status_code: Option<u16>,
    pub completed_at: Option<OffsetDateTime>,
}

/// One Results item returned by the device for a Get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultItem {
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// The device's answer to one command, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub command_id: CommandId,
    /// The top-level Status code (for Atomic: the Atomic's own, e.g. 507).
    pub status_code: u16,
    /// Results items, for Get.
    pub results: Vec<ResultItem>,
    /// Per-child status codes of an Atomic, in child order (e.g. 216 rolled back, 500 failed).
    pub child_codes: Vec<u16>,
}

/// A recorded outcome (the row exists at most once per command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    pub command_id: CommandId,
    pub enrollment_id: EnrollmentId,
    pub status_code: u16,
    pub results: Vec<ResultItem>,
    pub child_codes: Vec<u16>,
    pub received_at: OffsetDateTime,
}

/// A typed inventory value with its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFact {
    /// Stable key, e.g. `os.version`, `hardware.serial_number`.
    pub name: String,
    pub value: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One change of a fact's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactChange {
    pub name: String,
    pub old_value: Option<String>,
    pub new_value: String,
    pub at: OffsetDateTime,
}

/// Server-side state of the device's current OMA-DM session, kept in the store so any replica can
/// continue it and a repeated POST gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionState {
    /// Our id for this session (random per session): commands sent in it are not sent again within it,
    /// even if the device reuses a SessionID later.
    pub key: String,
    /// The device's SessionID (SyncHdr).
    pub session_id: String,
    /// Highest device MsgID processed in this session.
    pub client_msg_id: u32,
    /// Our last MsgID in this session.
    pub server_msg_id: u32,
    /// SHA-256 (hex) of the last device message body, to recognise an exact repeat.
    pub last_request_hash: String,
    /// Our answer to that message, replayed verbatim for an exact repeat.
    pub last_response: String,
    /// `com.microsoft/MDM/LoginStatus` from Alert 1224: user, others, none.
    pub login_status: Option<String>,
    /// The `syncml:auth-md5` nonce we last gave the device (base64), for the digest it must send next.
    pub md5_nonce: Option<String>,
    /// A command whose Data is being sent in chunks (OMA-DM large object, MoreData) and how many bytes
    /// of it have gone out.
    pub chunk: Option<(CommandId, usize)>,
    pub updated_at: Option<OffsetDateTime>,
}

/// How a management request names its enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentKey<'a> {
    /// SHA-1 thumbprint (hex, any case) of the device's client certificate: its current one, or the
    /// one a renewal replaced while that is still accepted.
    Certificate(&'a str),
    Id(EnrollmentId),
}

/// Everything processing one device message reads, fetched by [`crate::Store::management_context`]
/// in one call: each separate read cost a round trip to the database on the hot path of every
/// check-in (docs/BENCHMARKS.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementContext {
    /// The enrollment, in any state (the caller decides whether the state allows a session).
    pub enrollment: Enrollment,
    /// Whether the enrollment still accepts a certificate that a renewal replaced (it is revoked once
    /// the device uses its new one: [`SessionCommit::retire_previous_certificate`]).
    pub previous_certificate: bool,
    pub session: Option<SessionState>,
    /// The facts asked for by name (not the whole inventory), in name order.
    pub facts: Vec<DeviceFact>,
    /// Open, unexpired commands in delivery order, as [`crate::Store::deliverable_commands`].
    pub open: Vec<Command>,
    /// Some open command is past its deadline: the commit should mark it expired
    /// ([`SessionCommit::expire_overdue`]).
    pub overdue: bool,
}

/// Everything one processed device message writes, committed atomically by
/// [`crate::Store::commit_session_message`]: outcomes are recorded (once), commands marked sent, facts
/// updated, the enrollment's state changed if the device asked (unenroll) or a wipe was acknowledged,
/// the raw message kept for audit, and the session state (with our answer) saved.
#[derive(Debug, Clone, Default)]
pub struct SessionCommit {
    pub outcomes: Vec<CommandOutcome>,
    /// Commands the device refused with 418 on Add: re-queued with this payload (the Add turned into a
    /// Replace; MS-MDM: Add of an existing node fails, Replace sets it).
    pub requeue: Vec<(CommandId, CommandPayload)>,
    /// Commands included in our answer.
    pub sent: Vec<CommandId>,
    pub facts: Vec<(String, String)>,
    /// New enrollment state, with the reason logged with the certificate revocation.
    pub new_state: Option<(crate::model::EnrollmentState, String)>,
    /// Async completions (1226 alerts) matched to an accepted command: (target LocURI, final code).
    pub async_completions: Vec<(String, u16)>,
    pub raw_message: Option<String>,
    pub session: SessionState,
    /// The device authenticated with its current certificate: a certificate replaced by renewal is no
    /// longer needed and is revoked.
    pub retire_previous_certificate: bool,
    /// Mark the enrollment's open commands whose deadline has passed as expired. Set when the
    /// [`ManagementContext`] reported `overdue`; skipping the sweep otherwise saves a statement on every
    /// message (delivery never depends on it: overdue commands are not deliverable).
    pub expire_overdue: bool,
}

/// A renewed identity certificate (MS-WSTEP Renew), committed by [`crate::Store::renew_certificate`].
#[derive(Debug, Clone)]
pub struct CertificateRenewal {
    pub enrollment_id: EnrollmentId,
    /// The certificate the device authenticated the renewal with.
    pub old_thumbprint: String,
    pub new_serial: String,
    pub new_thumbprint: String,
    pub subject: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub at: OffsetDateTime,
}

/// What happened to a device, recorded by the store in the same transaction as the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Enrolled,
    Unenrolled,
    /// A wipe was acknowledged by the device.
    Wiped,
    CertificateRenewed,
    /// The device answered a command with 2xx (202 included: accepted for async processing).
    CommandAcknowledged,
    /// The device answered a command with an error code.
    CommandFailed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enrolled => "enrolled",
            Self::Unenrolled => "unenrolled",
            Self::Wiped => "wiped",
            Self::CertificateRenewed => "certificate_renewed",
            Self::CommandAcknowledged => "command_acknowledged",
            Self::CommandFailed => "command_failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "enrolled" => Self::Enrolled,
            "unenrolled" => Self::Unenrolled,
            "wiped" => Self::Wiped,
            "certificate_renewed" => Self::CertificateRenewed,
            "command_acknowledged" => Self::CommandAcknowledged,
            "command_failed" => Self::CommandFailed,
            _ => return None,
        })
    }
}

/// One recorded device event. `seq` increases strictly: consumers (webhook delivery) keep a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEvent {
    pub seq: i64,
    pub kind: EventKind,
    pub enrollment_id: EnrollmentId,
    pub device_id: String,
    /// Kind-specific details (command id and status code, reason, certificate serial, …).
    pub data: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}
