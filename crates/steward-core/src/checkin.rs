//! The check-in hot path, platform-neutral: what processing one device message reads
//! ([`CheckinContext`], one snapshot) and everything it writes ([`CheckinCommit`], one transaction).
//! A platform adapter's pure session step turns its protocol into these values; what a device's
//! answer means (the command's new state, the event, whether the enrollment ends) is decided by the
//! constructors here, so every platform and every backend applies the same rules. The backend only
//! writes rows.

use time::OffsetDateTime;

use crate::command::{Command, CommandId, CommandOrigin, CommandState, NewCommand, PlatformPayload, ResultItem};
use crate::event::NewDeviceEvent;
use crate::inventory::{DeviceFact, FactUpdate};
use crate::model::{DeviceId, Enrollment, EnrollmentState, Thumbprint};

/// How a device message names its enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentKey<'a> {
    /// The thumbprint of the device's client certificate: its current one, or the one a renewal
    /// replaced while that is still accepted. The enrollment may be in any state.
    Certificate(&'a Thumbprint),
    /// The enrollment itself (any state).
    Id(crate::model::EnrollmentId),
    /// The active enrollment of a DeviceID (protocol-level authentication without a certificate,
    /// e.g. Windows `syncml:auth-md5`).
    ActiveDevice(&'a DeviceId),
}

/// Server-side state of the device's current check-in session, kept in the store so any replica
/// can continue it and a repeated message gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionRecord {
    /// Our id for this session (random per session): a command sent in it is not sent again within
    /// it ([`Command::last_session`]).
    pub key: String,
    /// The platform's own session state (Windows: MsgIDs, LoginStatus, the MD5 nonce, a large
    /// object being chunked), serialised by its adapter; opaque here.
    pub state: String,
    /// SHA-256 (hex) of the last device message, to recognise an exact repeat; empty: never replay.
    pub last_request_hash: String,
    /// Our answer to that message, replayed verbatim for an exact repeat.
    pub last_response: String,
    pub updated_at: Option<OffsetDateTime>,
}

/// What the commit requires of the device's session record, which the message's context read:
/// optimistic concurrency between two messages of one device processed at once (on two replicas,
/// or a retry racing the original). Without it both could pass the exact-repeat check, because
/// each read the record before the other committed, and both be answered as new (docs/SECURITY.md
/// "Findings"). A commit whose precondition no longer holds is refused with
/// [`crate::StoreError::Stale`] and writes nothing; the adapter re-reads the context and processes
/// the message again, and then sees the other commit (an exact repeat is then replayed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SessionPrecondition {
    /// No check: writers that do not continue a session from a context they read (the
    /// authentication challenge, benches, store tests).
    #[default]
    Unchecked,
    /// The device had no session record.
    Absent,
    /// The record still has this key, platform state and last request hash (every commit of a
    /// session message changes at least the state, which carries the message ids).
    Unchanged {
        key: String,
        state: String,
        last_request_hash: String,
    },
}

impl SessionPrecondition {
    /// The precondition for a commit planned on `read`, the context's session record.
    pub fn of(read: Option<&SessionRecord>) -> Self {
        match read {
            None => Self::Absent,
            Some(r) => Self::Unchanged {
                key: r.key.clone(),
                state: r.state.clone(),
                last_request_hash: r.last_request_hash.clone(),
            },
        }
    }

    /// Whether the record now stored (`current`) still satisfies the precondition. Backends
    /// evaluate this on the row they lock in the commit's transaction.
    pub fn holds(&self, current: Option<(&str, &str, &str)>) -> bool {
        match (self, current) {
            (Self::Unchecked, _) | (Self::Absent, None) => true,
            (Self::Absent, Some(_)) | (Self::Unchanged { .. }, None) => false,
            (
                Self::Unchanged {
                    key,
                    state,
                    last_request_hash,
                },
                Some((k, st, h)),
            ) => key == k && state == st && last_request_hash == h,
        }
    }
}

/// Everything processing one device message reads, fetched by
/// [`crate::store::CheckinStore::checkin_context`] in one read snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckinContext {
    /// The enrollment, in any state (the caller decides whether the state allows a session).
    pub enrollment: Enrollment,
    /// The protocol-level session credential provisioned at enrollment, if any.
    pub session_credential: Option<String>,
    pub session: Option<SessionRecord>,
    /// The facts asked for by name (not the whole inventory), in name order.
    pub facts: Vec<DeviceFact>,
    /// Open, unexpired commands in delivery order: priority, then queue order.
    pub open: Vec<Command>,
    /// Commands the device accepted for asynchronous processing, newest first: their outcome may
    /// arrive in this message ([`Completion`]).
    pub awaiting: Vec<Command>,
    /// Some open command is past its deadline: the commit should mark it expired
    /// ([`CheckinCommit::expire_overdue`]).
    pub overdue: bool,
    /// The device's configuration stamp, and its assigned profiles and rows when a reconciliation
    /// is needed ([`crate::configuration::DeviceConfigState::needs_load`]).
    pub configuration: crate::configuration::ConfigurationContext,
}

/// The device's answer to one command, as recorded (at most once per command: a repeat is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub command_id: CommandId,
    /// The top-level status code (Windows Atomic: the Atomic's own, e.g. 507).
    pub status_code: u16,
    /// What the code means for the command ([`CommandState::after_status`]).
    pub state: CommandState,
    /// Result items (Windows: for a Get).
    pub results: Vec<ResultItem>,
    /// Per-child status codes of a group command, in child order (Windows Atomic: 216 rolled back…).
    pub child_codes: Vec<u16>,
    /// Recorded with the outcome (and only if the outcome is: a repeat records nothing).
    pub event: NewDeviceEvent,
}

impl Outcome {
    pub fn new(command_id: CommandId, status_code: u16, results: Vec<ResultItem>, child_codes: Vec<u16>) -> Self {
        let state = CommandState::after_status(status_code);
        Self {
            command_id,
            status_code,
            state,
            results,
            child_codes,
            event: NewDeviceEvent::command_answered(command_id, status_code, state),
        }
    }

    /// Whether this answer, to a command of `origin`, ends the enrollment: an acknowledged wipe
    /// (accepted counts: the device is resetting).
    pub fn enrollment_end(&self, origin: &CommandOrigin) -> Option<EnrollmentEnd> {
        (origin.is_wipe() && matches!(self.state, CommandState::Succeeded | CommandState::Accepted))
            .then(|| EnrollmentEnd::new(EnrollmentState::Wiped, reasons::WIPE_ACKNOWLEDGED))
    }
}

/// The asynchronous outcome of an accepted command (Windows: the 1226 alert of an MSI install).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub command_id: CommandId,
    pub status_code: u16,
    pub state: CommandState,
    pub event: NewDeviceEvent,
}

impl Completion {
    pub fn new(command_id: CommandId, status_code: u16) -> Self {
        let state = CommandState::after_completion(status_code);
        Self {
            command_id,
            status_code,
            state,
            event: NewDeviceEvent::command_completed(command_id, status_code, state),
        }
    }
}

/// An open command to send again with a changed body (Windows: an Add the device refused with 418
/// goes again as a Replace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeue {
    pub command_id: CommandId,
    pub payload: PlatformPayload,
}

/// An enrollment leaving `active`, with the reason logged with its certificate's revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentEnd {
    pub state: EnrollmentState,
    pub reason: String,
}

impl EnrollmentEnd {
    pub fn new(state: EnrollmentState, reason: &str) -> Self {
        Self {
            state,
            reason: reason.to_owned(),
        }
    }
}

/// The reasons Steward records when it revokes a certificate or ends an enrollment.
pub mod reasons {
    pub const WIPE_ACKNOWLEDGED: &str = "wipe acknowledged by the device";
    pub const DEVICE_UNENROLLED: &str = "device requested unenrollment";
    pub const ADMIN_UNENROLLED: &str = "unenrolled by an administrator";
    pub const SUPERSEDED_BY_REENROLLMENT: &str = "superseded by re-enrollment";
    pub const RENEWED_CERTIFICATE_IN_USE: &str = "device uses its renewed certificate";
    pub const SUPERSEDED_BY_SECOND_RENEWAL: &str = "superseded by a second renewal";
    pub const RENEWAL_ANSWER_NOT_USED: &str = "renewal answer not used";
}

/// Everything one processed device message writes, committed atomically by
/// [`crate::store::CheckinStore::commit_checkin`], in this order: commands queued, outcomes recorded
/// (once each, with their events), async completions, re-queues, commands marked sent, facts, the
/// enrollment ended, the raw message kept, the session saved, `last_seen_at` set, the replaced
/// certificate retired. Refused as a whole with [`crate::StoreError::Stale`] when
/// [`CheckinCommit::session_read`] no longer holds or a command in [`CheckinCommit::sent`] is no
/// longer open (cancelled, expired or answered since the context was read): the answer that
/// carries it must not go out.
#[derive(Debug, Clone, Default)]
pub struct CheckinCommit {
    /// Commands queued by the session itself (the inventory read due at session start); they may
    /// also be in [`CheckinCommit::sent`].
    pub enqueue: Vec<NewCommand>,
    pub outcomes: Vec<Outcome>,
    pub completions: Vec<Completion>,
    pub requeue: Vec<Requeue>,
    /// Commands included in our answer.
    pub sent: Vec<CommandId>,
    pub facts: Vec<FactUpdate>,
    pub end_enrollment: Option<EnrollmentEnd>,
    pub raw_message: Option<String>,
    pub session: SessionRecord,
    /// What the session record must still be for this commit to apply ([`SessionPrecondition`]).
    pub session_read: SessionPrecondition,
    /// The device authenticated with its current certificate: one a renewal replaced is no longer
    /// needed and is revoked.
    pub retire_previous_certificate: bool,
    /// Mark the enrollment's open commands whose deadline has passed as expired. Set when the
    /// [`CheckinContext`] reported `overdue`; skipping the sweep otherwise saves a statement on every
    /// message (delivery never depends on it: overdue commands are not deliverable).
    pub expire_overdue: bool,
    /// The device's configuration rows, events and stamp, when the message reconciled it
    /// ([`crate::configuration::absorb`]); None writes nothing of the configuration.
    pub configuration: Option<crate::configuration::ConfigurationCommit>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ActionKind;

    #[test]
    fn an_acknowledged_wipe_ends_the_enrollment() {
        let id = CommandId::new();
        let wipe = CommandOrigin::Action(ActionKind::Wipe);
        for code in [200, 202] {
            assert_eq!(
                Outcome::new(id, code, vec![], vec![]).enrollment_end(&wipe),
                Some(EnrollmentEnd::new(EnrollmentState::Wiped, reasons::WIPE_ACKNOWLEDGED))
            );
        }
        assert_eq!(Outcome::new(id, 500, vec![], vec![]).enrollment_end(&wipe), None);
        assert_eq!(
            Outcome::new(id, 200, vec![], vec![]).enrollment_end(&CommandOrigin::Admin),
            None
        );
        let failed = Outcome::new(id, 405, vec![], vec![]);
        assert_eq!(failed.state, CommandState::Failed);
        assert_eq!(failed.event.kind, crate::event::EventKind::CommandFailed);
        let done = Completion::new(id, 200);
        assert_eq!(done.state, CommandState::Succeeded);
        assert_eq!(done.event.data["completion"], "async");
    }
}
