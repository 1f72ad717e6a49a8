//! The command queue's records, platform-neutral: a command's body is its platform's own
//! ([`PlatformPayload`], opaque here), everything around it — ids, origin, priority, state,
//! outcome — is common to every platform.
//!
//! Delivery is at-least-once and recording exactly-once: a command stays open until the device's
//! answer for it is stored; a command sent in a session whose reply never came is sent again in the
//! next session; the outcome is stored once per (enrollment, command) however often the device
//! repeats it.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::EnrollmentId;

/// A queued command. Its UUID is also the id the platform puts on the wire (Windows: the SyncML
/// CmdID, which MS-MDM allows to be any non-zero string), so the device's answer names the command
/// directly, across sessions and replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(pub Uuid);

impl CommandId {
    /// A new, time-ordered id (UUIDv7, RFC 9562 §5.7): a fleet-wide fan-out inserts in id order
    /// into the `commands` id index instead of at random places.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
    /// The id used on the wire for this command.
    pub fn wire_id(&self) -> String {
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

/// A command's body in its platform's own form (Windows: an OMA-DM command), as JSON text. Core
/// and the stores keep and move it without looking inside; the platform adapter that made it reads
/// it back, and describes it for people ([`CommandSummary`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlatformPayload(String);

impl PlatformPayload {
    /// Wraps JSON text the platform adapter produced.
    pub fn from_json(json: String) -> Self {
        Self(json)
    }
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

/// How a platform describes a command for lists and search: a verb or request type, and the nodes
/// or objects it targets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandSummary {
    pub kind: String,
    pub targets: Vec<String>,
}

/// A remote action that every platform offers in its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Wipe,
    Reboot,
    Lock,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Wipe => "wipe",
            ActionKind::Reboot => "reboot",
            ActionKind::Lock => "lock",
        }
    }
}

/// How thoroughly a wipe resets the device. Platforms offer what they can and refuse the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WipeKind {
    /// Factory reset: user data and provisioning removed (Windows `doWipe`).
    Wipe,
    /// A reset the user cannot interrupt by power-cycling (Windows `doWipeProtected`).
    Protected,
    /// Reset keeping user accounts and data (Windows `doWipePersistUserData`).
    PersistUserData,
    /// Reset keeping provisioning data, re-applied after the reset (Windows
    /// `doWipePersistProvisionedData`).
    PersistProvisionedData,
    /// Reset back to a ready-for-use state under management (Windows Autopilot Reset,
    /// `doAutomaticRedeployment`).
    AutomaticRedeployment,
}

/// A remote action an admin asks for; the device's platform turns it into its own command
/// ([`crate::platform::PlatformAdapter::action_command`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Wipe(WipeKind),
    Reboot,
    Lock,
    /// Refresh the device's inventory now.
    Sync,
}

impl Action {
    /// The origin its command is queued with.
    pub fn origin(self) -> CommandOrigin {
        match self {
            Action::Wipe(_) => CommandOrigin::Action(ActionKind::Wipe),
            Action::Reboot => CommandOrigin::Action(ActionKind::Reboot),
            Action::Lock => CommandOrigin::Action(ActionKind::Lock),
            Action::Sync => CommandOrigin::Inventory,
        }
    }
    /// Where its command goes in the queue: a wipe ahead of everything, other actions ahead of
    /// admins' own commands, an inventory refresh behind them (it only reads).
    pub fn priority(self) -> i32 {
        match self {
            Action::Wipe(_) => Priority::WIPE,
            Action::Reboot | Action::Lock => Priority::ACTION,
            Action::Sync => Priority::INVENTORY,
        }
    }
}

/// Queue priorities (higher goes first; ties in queue order), in one place.
pub struct Priority;

impl Priority {
    pub const WIPE: i32 = 100;
    pub const ACTION: i32 = 10;
    pub const ADMIN: i32 = 0;
    pub const INVENTORY: i32 = -10;
}

/// Why a command exists. Its acknowledgement may mean more than the command itself: an
/// acknowledged wipe ends the enrollment, an answered inventory read refreshes the inventory clock.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CommandOrigin {
    /// An admin's own command.
    Admin,
    /// Steward's inventory read (scheduled or asked for by a sync).
    Inventory,
    Action(ActionKind),
    /// An origin this version does not know (written by a newer replica); kept as written.
    Other(String),
}

impl CommandOrigin {
    pub fn as_str(&self) -> Cow<'_, str> {
        match self {
            CommandOrigin::Admin => "admin".into(),
            CommandOrigin::Inventory => "inventory".into(),
            CommandOrigin::Action(a) => format!("action:{}", a.as_str()).into(),
            CommandOrigin::Other(s) => s.as_str().into(),
        }
    }
    pub fn parse(s: &str) -> Self {
        match s {
            "admin" => Self::Admin,
            "inventory" => Self::Inventory,
            "action:wipe" => Self::Action(ActionKind::Wipe),
            "action:reboot" => Self::Action(ActionKind::Reboot),
            "action:lock" => Self::Action(ActionKind::Lock),
            other => Self::Other(other.to_owned()),
        }
    }
    pub fn is_wipe(&self) -> bool {
        *self == Self::Action(ActionKind::Wipe)
    }
}

impl fmt::Display for CommandOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl Serialize for CommandOrigin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for CommandOrigin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}

/// Lifecycle of a queued command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandState {
    /// Waiting to be sent (again).
    Pending,
    /// Sent in a session; awaiting the device's answer. Sent again in the next session if none comes.
    Sent,
    /// The device accepted it for asynchronous processing (e.g. an MSI install); the final outcome
    /// arrives later ([`crate::checkin::Completion`]).
    Accepted,
    /// The device reported success.
    Succeeded,
    /// The device reported an error.
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

    /// THE rule for what a device's status code means for its command. Every platform reports
    /// with HTTP-style codes (OMA-DM status codes are; an adapter maps other reports onto them):
    /// 202 is accepted for asynchronous processing, any other 2xx is done, anything else failed.
    pub fn after_status(code: u16) -> Self {
        match code {
            202 => Self::Accepted,
            200..=299 => Self::Succeeded,
            _ => Self::Failed,
        }
    }

    /// The final state of an accepted command whose asynchronous outcome arrived with `code`.
    pub fn after_completion(code: u16) -> Self {
        if status_is_success(code) {
            Self::Succeeded
        } else {
            Self::Failed
        }
    }
}

/// Whether a device's status code reports success (2xx), for a command or anything else it answers.
pub fn status_is_success(code: u16) -> bool {
    (200..300).contains(&code)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    pub id: CommandId,
    pub enrollment_id: EnrollmentId,
    pub payload: PlatformPayload,
    /// Higher first; ties in queue order ([`Priority`]).
    pub priority: i32,
    pub origin: CommandOrigin,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: CommandId,
    pub enrollment_id: EnrollmentId,
    pub payload: PlatformPayload,
    pub priority: i32,
    pub origin: CommandOrigin,
    pub state: CommandState,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub send_count: u32,
    pub last_sent_at: Option<OffsetDateTime>,
    /// Key of the check-in session that last sent it ([`crate::checkin::SessionRecord::key`]).
    pub last_session: Option<String>,
    pub status_code: Option<u16>,
    pub completed_at: Option<OffsetDateTime>,
}

impl Command {
    /// The pending command a [`NewCommand`] becomes once queued (the engine may send a command
    /// queued in the same commit).
    pub fn queued(c: &NewCommand) -> Self {
        Self {
            id: c.id,
            enrollment_id: c.enrollment_id,
            payload: c.payload.clone(),
            priority: c.priority,
            origin: c.origin.clone(),
            state: CommandState::Pending,
            created_at: c.created_at,
            expires_at: c.expires_at,
            send_count: 0,
            last_sent_at: None,
            last_session: None,
            status_code: None,
            completed_at: None,
        }
    }
}

/// One result item returned by the device (Windows: a Results item for a Get).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultItem {
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_decide_the_state_in_one_place() {
        assert_eq!(CommandState::after_status(200), CommandState::Succeeded);
        assert_eq!(CommandState::after_status(204), CommandState::Succeeded);
        assert_eq!(CommandState::after_status(202), CommandState::Accepted);
        assert_eq!(CommandState::after_status(404), CommandState::Failed);
        assert_eq!(CommandState::after_status(507), CommandState::Failed);
        assert_eq!(CommandState::after_completion(200), CommandState::Succeeded);
        assert_eq!(CommandState::after_completion(202), CommandState::Succeeded);
        assert_eq!(CommandState::after_completion(500), CommandState::Failed);
    }

    #[test]
    fn origins_round_trip_and_keep_unknown_ones() {
        for o in [
            CommandOrigin::Admin,
            CommandOrigin::Inventory,
            CommandOrigin::Action(ActionKind::Wipe),
            CommandOrigin::Action(ActionKind::Reboot),
            CommandOrigin::Action(ActionKind::Lock),
            CommandOrigin::Other("profile:x".into()),
        ] {
            assert_eq!(CommandOrigin::parse(&o.as_str()), o);
        }
        assert_eq!(Action::Wipe(WipeKind::Wipe).origin().as_str(), "action:wipe");
        assert!(Action::Wipe(WipeKind::Protected).origin().is_wipe());
        assert_eq!(Action::Sync.origin(), CommandOrigin::Inventory);
        assert!(Action::Wipe(WipeKind::Wipe).priority() > Action::Lock.priority());
        assert!(Action::Sync.priority() < Priority::ADMIN);
    }
}
