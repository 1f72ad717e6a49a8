//! The OMA-DM session engine (MS-MDM §3.1.5; OMA-DM 1.2 RepPro §6–8) as a pure function: given the
//! device's parsed message, the stored session, the enrollment's open and awaiting commands, the
//! time and the policies, produce our answer and everything to commit. No I/O and no clock here, so
//! every rule is unit-tested.
//!
//! Rules implemented:
//! - Our answer starts with the Status for the device's SyncHdr (CmdRef 0), then one Status per device
//!   command other than Status and Results (responses are not commands), then queued commands.
//! - A command's outcome is taken from the device's Status (CmdRef = the command's UUID, which is its
//!   CmdID) and Results; only this enrollment's open commands can take an outcome, and the store keeps
//!   the first one. What the code means (the command's state, the event, whether the enrollment ends)
//!   is core's rule ([`Outcome`]). A command sent in this session is never sent again within it; an
//!   unanswered one goes again next session (at-least-once delivery).
//! - 418 (Already exists) on an Add re-queues it as a Replace.
//! - Device message without Final: the device has more to send; we answer its statuses plus Alert 1222
//!   and hold our commands until its package is complete.
//! - Our answer never exceeds the device's MaxMsgSize (default 512 KiB, read as at least 1 KiB).
//!   Statuses come first; those that do not fit wait in the session for our next message (OMA-DM
//!   Protocol §8, multiple messages per package: we omit Final, the device asks for more with Alert
//!   1222) and our commands wait until every status is out. Commands are then packed under the same
//!   limit; if more remain we omit Final and continue after the device's next message. A message
//!   with more than [`SessionInput::max_device_commands`] (default [`MAX_DEVICE_COMMANDS`]) commands
//!   owed a Status is refused whole (SyncHdr 413).
//! - An answer holding only the SyncHdr Status (and Final) ends the session.
//! - Alerts: 1201/1200 start, 1224 LoginStatus (`./User/` commands wait for "user"), 1226 generic
//!   (unenrollment ends the enrollment; MSI install completion finishes the accepted Exec that
//!   targeted the node, newest first), 1222 next message, 1223 abort.
//! - At the start of a session, an inventory read is queued (and sent in it) when the last one is
//!   older than the interval and none is waiting.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use steward_core::{
    CheckinCommit, Command, CommandId, CommandOrigin, CommandState, Completion, Enrollment, EnrollmentEnd,
    EnrollmentState, FactUpdate, NewCommand, Outcome, Priority, Requeue, ResultItem, SessionRecord, facts, reasons,
    status_is_success,
};
use steward_windows_proto::syncml::{
    self, ALERT_CLIENT_EVENT, ALERT_GENERIC, ALERT_NEXT_MESSAGE, ALERT_SESSION_ABORT, Alert, Container, Item,
    ItemCommand, ItemData, LocTarget, Meta, SyncBody, SyncHdr, SyncMl,
};
use time::OffsetDateTime;

use crate::commands::{CommandItem, OmaDmCommand, Verb};
use crate::inventory;

/// Windows' MaxMsgSize when the device does not say (Intune advertises the same).
pub const DEFAULT_MAX_MSG_SIZE: usize = 512 * 1024;
/// Smallest MaxMsgSize honoured: a smaller one is read as this (the SyncHdr and its Status alone
/// take ~500 bytes, so no answer could respect less).
pub const MIN_MAX_MSG_SIZE: usize = 1024;
/// Largest MaxMsgSize honoured.
pub const MAX_MAX_MSG_SIZE: usize = 16 * 1024 * 1024;
/// Commands owed a Status (everything but Status and Results) one device message may carry. A
/// device answers our commands with Statuses and Results, which are not counted; what it sends of
/// its own is a handful (alerts, the DevInfo Replace). Past this the message is refused whole with
/// a SyncHdr Status 413 (OMA-DM RepPro: Request entity too large) and nothing in it is processed.
/// The default of `limits.device_commands_per_message`.
pub const MAX_DEVICE_COMMANDS: usize = 5_000;
/// Most a device may have buffered in pieces of Results (OMA-DM large object) in one session: past
/// this the object is dropped and the Results answered 413 (Request entity too large). The pieces
/// live in the stored session until the last one arrives.
pub const MAX_INCOMING_OBJECT: usize = 4 * 1024 * 1024;
/// Raw device messages are kept for audit up to this size each.
const RAW_MESSAGE_KEEP: usize = 16 * 1024;

pub const TYPE_MSI_INSTALL: &str = "Reversed-Domain-Name:com.microsoft.mdm.win32csp_install";

/// The Windows part of a check-in session, kept between messages as the JSON text of
/// [`SessionRecord::state`] (exactly this shape; the store's migration converted older rows to it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OmaDmSession {
    /// The device's SessionID (SyncHdr).
    pub session_id: String,
    /// Highest device MsgID processed in this session.
    pub client_msg_id: u32,
    /// Our last MsgID in this session.
    pub server_msg_id: u32,
    /// `com.microsoft/MDM/LoginStatus` from Alert 1224: user, others, none.
    pub login_status: Option<String>,
    /// The `syncml:auth-md5` nonce we last gave the device (base64), for the digest it must send next.
    pub md5_nonce: Option<String>,
    /// A command whose Data is being sent in pieces (OMA-DM large object, MoreData).
    pub chunk: Option<Chunk>,
    /// Statuses we owe the device that did not fit in our last message (sent first in the next).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_statuses: Vec<OwedStatus>,
    /// Our last message left our package open (no Final): the device's next message answers it,
    /// and its own lack of Final then only follows OMA-DM's rule that a client does not close its
    /// package before the server closes its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub package_open: bool,
    /// Large Results from the device being reassembled (OMA-DM large object, device to server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incoming: Vec<IncomingObject>,
    /// Outcomes that wait for the rest of a large Results item before they are recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldOutcome>,
}

/// A Results item the device is sending in pieces (`<MoreData/>`), keyed by the Results' CmdRef
/// (our command) and the item's Source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingObject {
    pub cmd_ref: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `Meta/Size` of the first piece: the whole object's byte length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub data: String,
}

/// What the device said about one of our commands while a large Results item for it is still
/// arriving: its Status codes and the complete result items so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldOutcome {
    pub command: CommandId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ResultItem>,
}

/// A Status we owe the device for one of its commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwedStatus {
    /// The device's MsgID and CmdID the status answers, and the command's name.
    pub msg_ref: u32,
    pub cmd_ref: String,
    pub cmd: String,
    pub code: u16,
}

/// A large object being sent: the command and how many bytes of its Data have gone out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub command: CommandId,
    pub offset: usize,
}

impl OmaDmSession {
    /// The Windows session state of a stored session; None if it holds none this version can read
    /// (the next message then starts a new session).
    pub fn from_record(record: &SessionRecord) -> Option<Self> {
        serde_json::from_str(&record.state).ok()
    }

    /// The JSON text stored as [`SessionRecord::state`].
    pub fn to_state(&self) -> String {
        // Strings, numbers and options only: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Our earlier answer when `msg` is exactly the last message of the stored session again (a retry
/// after a lost answer): it is answered as before and nothing is recorded twice. A record without a
/// request hash (after a challenge) is never replayed.
pub fn replay<'r>(previous: Option<&'r SessionRecord>, msg: &SyncMl, request_hash: &str) -> Option<&'r str> {
    let record = previous?;
    let state = OmaDmSession::from_record(record)?;
    (!record.last_request_hash.is_empty()
        && state.session_id == msg.header.session_id
        && state.client_msg_id == msg.header.msg_id
        && record.last_request_hash == request_hash)
        .then_some(record.last_response.as_str())
}

/// The stored session after a `syncml:auth-md5` challenge carrying `nonce`: otherwise unchanged, and
/// never replayed as a duplicate answer.
pub fn challenged(previous: Option<&SessionRecord>, nonce: String) -> SessionRecord {
    let mut record = previous.cloned().unwrap_or_default();
    let mut state = OmaDmSession::from_record(&record).unwrap_or_default();
    state.md5_nonce = Some(nonce);
    record.state = state.to_state();
    record.last_request_hash = String::new();
    record
}

pub struct SessionInput<'a> {
    pub msg: &'a SyncMl,
    pub raw: &'a str,
    pub request_hash: String,
    pub enrollment: &'a Enrollment,
    pub management_url: &'a str,
    pub previous: Option<&'a SessionRecord>,
    /// The enrollment's open commands (pending or sent), in delivery order.
    pub open_commands: &'a [Command],
    /// The enrollment's commands accepted for asynchronous processing, newest first.
    pub awaiting: &'a [Command],
    /// A fresh random key, used if this message starts a new session.
    pub new_key: String,
    /// Status for the device's SyncHdr: 200 (authenticated by TLS), 212 (authenticated by
    /// `syncml:auth-md5` Cred).
    pub header_code: u16,
    /// A new `syncml:auth-md5` NextNonce to hand the device in the SyncHdr Status Chal.
    pub next_nonce: Option<String>,
    pub poll: PollPolicy,
    pub inventory: InventoryPolicy,
    pub now: OffsetDateTime,
    /// The device authenticated with its current certificate while a replaced one is still
    /// accepted: the commit retires the replaced one.
    pub retire_previous_certificate: bool,
    /// Some open command is past its deadline: the commit expires it.
    pub expire_overdue: bool,
    /// Commands owed a Status that one device message may carry (`limits.device_commands_per_message`,
    /// default [`MAX_DEVICE_COMMANDS`]); more and the message is refused whole.
    pub max_device_commands: usize,
}

/// DMClient poll schedule management (DMClient CSP `Provider/<id>/Poll`): poll every `fast_minutes`
/// while the device has work waiting that only a later session can deliver (user-scoped commands
/// before sign-in, commands whose status never came), every `steady_minutes` otherwise.
#[derive(Debug, Clone)]
pub struct PollPolicy {
    pub provider_id: String,
    pub steady_minutes: u32,
    pub fast_minutes: u32,
    /// The interval last confirmed by the device (fact [`facts::POLL_INTERVAL_MINUTES`]); None = the
    /// enrollment-time steady interval.
    pub current_minutes: Option<u32>,
}

/// When a session starts with a stale inventory, an inventory read is queued and sent in it.
#[derive(Debug, Clone)]
pub struct InventoryPolicy {
    /// How old the last inventory may be.
    pub interval: time::Duration,
    /// When the last inventory arrived (the fact [`facts::INVENTORY_COLLECTED_AT`] was last set);
    /// None if it never did.
    pub collected_at: Option<OffsetDateTime>,
    /// The id the read gets if one is queued.
    pub command_id: CommandId,
}

/// CmdID prefix of our poll-interval Replace (`poll-<minutes>`): not a queued command, its Status
/// updates [`facts::POLL_INTERVAL_MINUTES`].
const POLL_CMD_PREFIX: &str = "poll-";

pub struct SessionOutput {
    pub response: SyncMl,
    pub commit: CheckinCommit,
    /// True when our answer ends the session.
    pub ends_session: bool,
}

struct Counter(u32);

impl Counter {
    fn next(&mut self) -> String {
        self.0 += 1;
        self.0.to_string()
    }
}

fn status(ids: &mut Counter, msg_ref: u32, cmd_ref: &str, cmd: &str, code: u16) -> syncml::Command {
    syncml::Command::Status(syncml::Status {
        cmd_id: ids.next(),
        msg_ref: msg_ref.to_string(),
        cmd_ref: cmd_ref.to_owned(),
        cmd: cmd.to_owned(),
        data: code.to_string(),
        ..Default::default()
    })
}

/// The SyncML form of a queued command. The command UUID is the CmdID; Atomic and Sequence
/// children get `<uuid>.<n>` so their Statuses map back to the parent.
pub fn to_syncml(cmd_id: &str, p: &OmaDmCommand) -> syncml::Command {
    if matches!(p.verb, Verb::Atomic | Verb::Sequence) {
        let container = Container {
            cmd_id: cmd_id.to_owned(),
            meta: None,
            commands: p
                .children
                .iter()
                .enumerate()
                .map(|(i, c)| to_syncml(&format!("{cmd_id}.{}", i + 1), c))
                .collect(),
        };
        return if p.verb == Verb::Atomic {
            syncml::Command::Atomic(container)
        } else {
            syncml::Command::Sequence(container)
        };
    }
    let items = p
        .items
        .iter()
        .map(|i| Item {
            target: Some(LocTarget::new(i.target.clone())),
            meta: (i.format.is_some() || i.type_.is_some()).then(|| Meta {
                format: i.format.clone(),
                type_: i.type_.clone(),
                ..Default::default()
            }),
            // Text is escaped by the writer; Format xml goes verbatim (validated at queue time).
            data: i.data.as_ref().map(|d| {
                if i.format.as_deref() == Some("xml") {
                    ItemData::Xml(d.clone())
                } else {
                    ItemData::Text(d.clone())
                }
            }),
            ..Default::default()
        })
        .collect();
    let ic = ItemCommand {
        cmd_id: cmd_id.to_owned(),
        meta: None,
        items,
    };
    match p.verb {
        Verb::Get => syncml::Command::Get(ic),
        Verb::Add => syncml::Command::Add(ic),
        Verb::Replace => syncml::Command::Replace(ic),
        Verb::Delete => syncml::Command::Delete(ic),
        Verb::Exec | Verb::Atomic | Verb::Sequence => syncml::Command::Exec(ic),
    }
}

/// Splits a CmdRef into our command id and, for Atomic children, the 1-based child index.
fn parse_cmd_ref(cmd_ref: &str) -> Option<(CommandId, Option<usize>)> {
    match cmd_ref.split_once('.') {
        Some((id, child)) => Some((id.parse().ok()?, Some(child.parse().ok()?))),
        None => Some((cmd_ref.parse().ok()?, None)),
    }
}

#[derive(Default)]
struct Collected {
    /// Every Status code the command got: Windows answers item by item when the items' codes
    /// differ (interop review M-11).
    codes: Vec<u16>,
    results: Vec<ResultItem>,
    children: BTreeMap<usize, u16>,
    /// A large Results item for it failed to reassemble (424 size mismatch, 413 too large).
    object_error: Option<u16>,
}

impl Collected {
    /// The command's code, None while nothing decides it. Several Statuses (one per item): a Get
    /// that brought Results succeeded if any item did, since nodes missing on some editions and
    /// VMs answer 404 while the rest land (interop review M-11); otherwise the first failure
    /// decides.
    fn code(&self) -> Option<u16> {
        if let Some(e) = self.object_error {
            return Some(e);
        }
        let first_ok = self.codes.iter().copied().find(|c| status_is_success(*c));
        let first_bad = self.codes.iter().copied().find(|c| !status_is_success(*c));
        match (first_ok, first_bad) {
            (None, None) => (!self.results.is_empty()).then_some(200),
            (Some(ok), None) => Some(ok),
            (Some(ok), Some(_)) if !self.results.is_empty() => Some(ok),
            (_, Some(bad)) => Some(bad),
        }
    }
}

/// The inventory read to queue at the start of a session: when the last inventory is older than
/// the interval (or never came) and none is already waiting in `open`.
fn due_inventory(input: &SessionInput<'_>) -> Option<NewCommand> {
    let p = &input.inventory;
    if p.collected_at.is_some_and(|t| input.now - t < p.interval) {
        return None;
    }
    if input.open_commands.iter().any(|c| c.origin == CommandOrigin::Inventory) {
        return None;
    }
    Some(NewCommand {
        id: p.command_id,
        enrollment_id: input.enrollment.id,
        payload: inventory::inventory_command(&input.poll.provider_id).to_payload(),
        priority: Priority::INVENTORY,
        origin: CommandOrigin::Inventory,
        created_at: input.now,
        expires_at: Some(input.now + p.interval),
    })
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn process(input: SessionInput<'_>) -> SessionOutput {
    let msg = input.msg;
    let hdr = &msg.header;
    let prev: Option<(&SessionRecord, OmaDmSession)> =
        input.previous.and_then(|r| Some((r, OmaDmSession::from_record(r)?)));
    let prev_state = prev.as_ref().map(|(_, s)| s);
    let new_session = prev_state.is_none_or(|p| p.session_id != hdr.session_id || hdr.msg_id == 1);
    let key = match &prev {
        Some((r, _)) if !new_session => r.key.clone(),
        _ => input.new_key.clone(),
    };
    let mut login_status = if new_session {
        None
    } else {
        prev_state.and_then(|p| p.login_status.clone())
    };
    let server_msg_id = match prev_state {
        Some(p) if !new_session => p.server_msg_id + 1,
        _ => 1,
    };
    let header = SyncHdr::new(
        hdr.session_id.clone(),
        server_msg_id,
        input.enrollment.device_id.as_str(),
        input.management_url,
    );
    let owed_count = msg
        .body
        .commands
        .iter()
        .filter(|c| !matches!(c, syncml::Command::Status(_) | syncml::Command::Results(_)))
        .count();
    if owed_count > input.max_device_commands {
        tracing::warn!(
            device.id = %input.enrollment.device_id,
            commands = owed_count,
            "device message refused: too many commands"
        );
        return refuse_message(&input, header, prev_state, new_session, key, login_status, 413);
    }
    let mut commit = CheckinCommit::default();

    // Delivery order: the open commands, with a newly queued inventory read where the queue would
    // put it (priority, then queue order: after every command of its priority or higher).
    let scheduled = if new_session { due_inventory(&input) } else { None };
    let queued = scheduled.as_ref().map(Command::queued);
    let mut open_list: Vec<&Command> = input.open_commands.iter().collect();
    if let Some(c) = &queued {
        let at = open_list
            .iter()
            .position(|o| o.priority < c.priority)
            .unwrap_or(open_list.len());
        open_list.insert(at, c);
    }
    commit.enqueue.extend(scheduled);
    let bodies: HashMap<CommandId, OmaDmCommand> = open_list
        .iter()
        .filter_map(|c| match OmaDmCommand::from_payload(&c.payload) {
            Ok(b) => Some((c.id, b)),
            Err(e) => {
                tracing::warn!(command = %c.id, error = %e, "queued command cannot be read; not sent");
                None
            }
        })
        .collect();
    let open: HashMap<CommandId, &Command> = open_list.iter().map(|c| (c.id, *c)).collect();

    let mut ids = Counter(0);
    let mut header_status = status(&mut ids, hdr.msg_id, "0", "SyncHdr", input.header_code);
    if let (syncml::Command::Status(s), Some(nonce)) = (&mut header_status, &input.next_nonce) {
        s.chal = Some(md5_chal(nonce));
    }
    let mut out: Vec<syncml::Command> = vec![header_status];
    // The Statuses this message's commands are owed, in order; packed under MaxMsgSize below.
    let mut replies: Vec<OwedStatus> = Vec::new();
    let mut owe = |cmd_ref: &str, cmd: &str, code: u16| {
        replies.push(OwedStatus {
            msg_ref: hdr.msg_id,
            cmd_ref: cmd_ref.to_owned(),
            cmd: cmd.to_owned(),
            code,
        })
    };
    let mut collected: BTreeMap<CommandId, Collected> = BTreeMap::new();
    let mut requeued: Vec<(CommandId, OmaDmCommand)> = Vec::new();
    let mut completions: Vec<(String, u16)> = Vec::new();
    let mut aborted = false;
    let mut poll_current = input.poll.current_minutes.unwrap_or(input.poll.steady_minutes);
    let mut poll_refused = false;
    let mut poll_confirmed: Option<u32> = None;
    let continuing = prev_state.filter(|_| !new_session);
    let mut incoming: Vec<IncomingObject> = continuing.map(|p| p.incoming.clone()).unwrap_or_default();
    for h in continuing.map(|p| p.held.as_slice()).unwrap_or_default() {
        if open.contains_key(&h.command) {
            let c = collected.entry(h.command).or_default();
            c.codes.extend(&h.codes);
            c.results.extend(h.results.iter().cloned());
        }
    }

    for cmd in &msg.body.commands {
        match cmd {
            syncml::Command::Status(s) => {
                if s.cmd_ref == "0" || s.cmd.eq_ignore_ascii_case("SyncHdr") {
                    continue;
                }
                if let Some(minutes) = s
                    .cmd_ref
                    .strip_prefix(POLL_CMD_PREFIX)
                    .and_then(|m| m.parse::<u32>().ok())
                {
                    // The Replace has two items; the device may answer each on its own. The
                    // interval counts only when no item was refused.
                    if s.code().is_some_and(status_is_success) {
                        poll_confirmed = Some(minutes);
                    } else {
                        poll_refused = true;
                    }
                    continue;
                }
                let Some((id, child)) = parse_cmd_ref(&s.cmd_ref) else {
                    continue;
                };
                if !open.contains_key(&id) {
                    continue;
                }
                let code = s.code().unwrap_or(500);
                match child {
                    Some(n) => {
                        collected.entry(id).or_default().children.insert(n, code);
                    }
                    None if code == 418 && bodies.get(&id).is_some_and(|b| b.verb == Verb::Add) => {
                        if let Some(body) = bodies.get(&id) {
                            let mut replace = body.clone();
                            replace.verb = Verb::Replace;
                            commit.requeue.push(Requeue {
                                command_id: id,
                                payload: replace.to_payload(),
                            });
                            requeued.push((id, replace));
                        }
                    }
                    // 213: a chunk of a large object was buffered; the outcome comes with the last chunk.
                    None if code == 213 => {}
                    None => collected.entry(id).or_default().codes.push(code),
                }
            }
            syncml::Command::Results(r) => {
                // OMA-DM large objects, device to server (interop review M-6): an item with
                // MoreData is a piece, buffered per (CmdRef, Source) and answered 213 (the one
                // Status a Results gets); the piece without MoreData completes it, checked against
                // the first piece's Meta/Size (424 on mismatch).
                let ours = parse_cmd_ref(&r.cmd_ref)
                    .and_then(|(id, child)| child.is_none().then_some(id))
                    .filter(|id| open.contains_key(id));
                let mut piece_code: Option<u16> = None;
                let mut complete_items: Vec<ResultItem> = Vec::new();
                for item in &r.items {
                    let source = item.source_uri().unwrap_or_default().to_owned();
                    let meta = item.meta.as_ref();
                    let data = item.data.as_ref().map(|d| d.as_str());
                    let at = incoming
                        .iter()
                        .position(|o| o.cmd_ref == r.cmd_ref && o.source == source);
                    if item.more_data && ours.is_none() {
                        // A piece of Results for no open command of ours: nothing to assemble it
                        // for; acknowledged so the device's package moves on, not kept.
                        piece_code = piece_code.or(Some(213));
                        continue;
                    }
                    if item.more_data {
                        let o = match at {
                            Some(i) => &mut incoming[i],
                            None => {
                                incoming.push(IncomingObject {
                                    cmd_ref: r.cmd_ref.clone(),
                                    source,
                                    format: meta.and_then(|m| m.format.clone()),
                                    size: meta.and_then(|m| m.size),
                                    data: String::new(),
                                });
                                let last = incoming.len() - 1;
                                &mut incoming[last]
                            }
                        };
                        o.data.push_str(data.unwrap_or_default());
                        // The cap is on everything buffered in the session, not per object.
                        if incoming.iter().map(|o| o.data.len()).sum::<usize>() > MAX_INCOMING_OBJECT {
                            let o = incoming.remove(at.unwrap_or(incoming.len() - 1));
                            tracing::warn!(source = %o.source, "device's large object too large; dropped");
                            piece_code = Some(413);
                            if let Some(id) = ours {
                                collected.entry(id).or_default().object_error = Some(413);
                            }
                        } else {
                            piece_code = piece_code.or(Some(213));
                        }
                        continue;
                    }
                    let (format, data) = match at {
                        Some(i) => {
                            let o = incoming.remove(i);
                            let full = o.data + data.unwrap_or_default();
                            if o.size.is_some_and(|s| s != full.len() as u64) {
                                piece_code = Some(424);
                                if let Some(id) = ours {
                                    collected.entry(id).or_default().object_error = Some(424);
                                }
                                continue;
                            }
                            (o.format.or_else(|| meta.and_then(|m| m.format.clone())), Some(full))
                        }
                        None => (meta.and_then(|m| m.format.clone()), data.map(str::to_owned)),
                    };
                    if let Some(fact) = data.as_deref().and_then(|d| inventory::fact_for(&source, d)) {
                        commit.facts.push(fact);
                    }
                    complete_items.push(ResultItem { source, format, data });
                }
                if let Some(code) = piece_code {
                    owe(&r.cmd_id, "Results", code);
                }
                if let Some(id) = ours {
                    collected.entry(id).or_default().results.extend(complete_items);
                }
            }
            syncml::Command::Alert(a) => {
                owe(&a.cmd_id, "Alert", 200);
                match a.code() {
                    Some(ALERT_CLIENT_EVENT) => {
                        for item in &a.items {
                            let ty = item.meta.as_ref().and_then(|m| m.type_.as_deref());
                            if ty == Some(syncml::TYPE_LOGIN_STATUS) {
                                login_status = item.data.as_ref().map(|d| d.as_str().trim().to_owned());
                            } else if let Some(done) = msi_completion(item) {
                                // The EnterpriseDesktopAppManagement CSP "Alert example" sends the
                                // MSI completion as 1224 (interop review M-4).
                                completions.push(done);
                            }
                        }
                    }
                    Some(ALERT_GENERIC) => {
                        for item in &a.items {
                            let ty = item.meta.as_ref().and_then(|m| m.type_.as_deref()).unwrap_or_default();
                            if ty == syncml::TYPE_UNENROLL_USER_REQUEST {
                                commit.end_enrollment = Some(EnrollmentEnd::new(
                                    EnrollmentState::Unenrolled,
                                    reasons::DEVICE_UNENROLLED,
                                ));
                            } else if let Some(done) = msi_completion(item) {
                                // Learn "OMA DM protocol support": 1226 is used "when a CSP finishes
                                // some asynchronous actions", so it is accepted too.
                                completions.push(done);
                            }
                        }
                    }
                    Some(ALERT_SESSION_ABORT) => aborted = true,
                    _ => {}
                }
            }
            syncml::Command::Replace(c) | syncml::Command::Add(c) => {
                for item in &c.items {
                    if let (Some(src), Some(data)) = (item.source_uri().or(item.target_uri()), &item.data)
                        && let Some(fact) = inventory::fact_for(src, data.as_str())
                    {
                        commit.facts.push(fact);
                    }
                }
                owe(&c.cmd_id, cmd.name(), 200);
            }
            // Unknown or malformed: answered on its own, the rest of the message is processed
            // (interop review M-10).
            syncml::Command::Refused(r) => {
                tracing::info!(
                    device.id = %input.enrollment.device_id,
                    command = r.name,
                    code = r.code,
                    reason = %r.reason,
                    "device command refused"
                );
                owe(&r.cmd_id, r.name, r.code);
            }
            // A server does not take management commands from a device.
            other => owe(other.cmd_id(), other.name(), 406),
        }
    }

    if let (Some(minutes), false) = (poll_confirmed, poll_refused) {
        poll_current = minutes;
        commit
            .facts
            .push(FactUpdate::new(facts::POLL_INTERVAL_MINUTES, minutes.to_string()));
    }

    let mut held: Vec<HeldOutcome> = Vec::new();
    for (id, c) in collected {
        let wire = id.wire_id();
        if c.object_error.is_none() && incoming.iter().any(|o| o.cmd_ref == wire) {
            // The rest of a large Results item is still to come: recorded with the last piece.
            held.push(HeldOutcome {
                command: id,
                codes: c.codes,
                results: c.results,
            });
            continue;
        }
        let Some(mut code) = c.code() else {
            continue;
        };
        // The inventory read collects what the device has: if Results came, it was collected,
        // even when Windows answers the whole Get with one error for nodes this edition or VM lacks
        // (interop review M-11: "Windows answers per item (or per command)").
        if !status_is_success(code)
            && c.object_error.is_none()
            && !c.results.is_empty()
            && open.get(&id).is_some_and(|cmd| cmd.origin == CommandOrigin::Inventory)
        {
            code = 200;
        }
        let outcome = Outcome::new(id, code, c.results, c.children.into_values().collect());
        if let Some(command) = open.get(&id) {
            if let Some(end) = outcome.enrollment_end(&command.origin) {
                commit.end_enrollment = Some(end);
            }
            if command.origin == CommandOrigin::Inventory {
                commit
                    .facts
                    .push(FactUpdate::new(facts::INVENTORY_COLLECTED_AT, rfc3339(input.now)));
            }
        }
        commit.outcomes.push(outcome);
    }

    if !completions.is_empty() {
        commit.completions = complete(&completions, input.awaiting, &commit.outcomes, &open);
    }

    // What our message may hold, and what it holds already (exact: the writer's own byte count).
    let max = max_msg_size(hdr);
    let mut used = message_overhead(&header) + out.iter().map(syncml::estimated_size).sum::<usize>();
    // OMA-DM Protocol §8.2 (multiple messages in package): a device message without Final while
    // our package is closed means the device's package continues (e.g. a large Results). It gets
    // the "Next Message" response: statuses, Alert 1222, no other command and no Final. While our
    // package is open the device may not send Final ("The Final element MUST NOT be supplied by
    // the client to close its package until the server has sent its Final element"), so there its
    // missing Final is no such request: we go on with our package. Keep room for the alert.
    let our_package_open = continuing.is_some_and(|p| p.package_open);
    let next_alert = (!msg.body.final_ && !our_package_open).then(|| {
        syncml::Command::Alert(Alert {
            cmd_id: String::new(),
            data: ALERT_NEXT_MESSAGE.to_string(),
            items: vec![],
        })
    });
    used += next_alert.as_ref().map_or(0, |a| syncml::estimated_size(a) + 10);
    // Statuses: those owed from our last message first, then this message's, while they fit (at
    // least one per message, so the package always progresses); the rest wait for the next one.
    let mut owed: Vec<OwedStatus> = match prev_state {
        Some(p) if !new_session => p.pending_statuses.clone(),
        _ => Vec::new(),
    };
    let carried = owed.len();
    owed.extend(replies);
    let mut packed = 0;
    for r in &owed {
        let st = status(&mut ids, r.msg_ref, &r.cmd_ref, &r.cmd, r.code);
        let size = syncml::estimated_size(&st);
        if packed > 0 && used + size > max {
            ids.0 -= 1;
            break;
        }
        used += size;
        out.push(st);
        packed += 1;
    }
    let pending_statuses = owed.split_off(packed);
    // Statuses of earlier messages share this one: a command too large to split waits for a
    // message of its own rather than push this one over MaxMsgSize.
    let shares_earlier = packed.min(carried) > 0;

    let prev_chunk = if new_session {
        None
    } else {
        prev_state.and_then(|p| p.chunk)
    };
    // Final closes our package. It is left out only while the package must go on in our next
    // message: statuses still owed, a large object part-way, or a message that could carry none
    // of our waiting commands (OMA-DM Protocol §8.2: a server package spans messages only for
    // what cannot go in one; complete commands never wait behind a missing Final, they go after
    // the device's statuses). Interop review M-5.
    let mut final_ = pending_statuses.is_empty();
    // Complete commands left for our next package because this message is full.
    let mut held_back = false;
    // A large object being sent continues where it was unless this message sends commands.
    let mut next_chunk = prev_chunk;
    let answers_device_package = next_alert.is_some();
    if let Some(syncml::Command::Alert(mut a)) = next_alert {
        // The device's package continues: ask for the next message, hold our commands, no Final
        // (OMA-DM Protocol §8.2: "no other commands, and no Final flag").
        a.cmd_id = ids.next();
        out.push(syncml::Command::Alert(a));
        final_ = false;
    } else if pending_statuses.is_empty() && !aborted && commit.end_enrollment.is_none() {
        next_chunk = None;
        let answered: Vec<CommandId> = commit.outcomes.iter().map(|o| o.command_id).collect();
        let requeued: HashMap<CommandId, &OmaDmCommand> = requeued.iter().map(|(i, p)| (*i, p)).collect();
        let user_scoped = |c: &Command| bodies.get(&c.id).is_some_and(OmaDmCommand::is_user_scoped);
        let mut chunk_done = false;
        for c in open_list.iter().copied() {
            let Some(body) = bodies.get(&c.id) else {
                continue; // unreadable: nothing to send
            };
            let requeue = requeued.get(&c.id);
            if answered.contains(&c.id) {
                continue;
            }
            let offset = prev_chunk.filter(|ch| ch.command == c.id).map(|ch| ch.offset);
            if requeue.is_none() && c.state == CommandState::Sent && c.last_session.as_deref() == Some(key.as_str()) {
                continue; // sent in this session already; goes again next session if unanswered
            }
            if body.is_user_scoped() && login_status.as_deref() != Some("user") {
                continue; // user-scoped: waits until a user is signed in
            }
            let payload = requeue.copied().unwrap_or(body);
            let sc = to_syncml(&c.id.wire_id(), payload);
            let size = syncml::estimated_size(&sc);
            if offset.is_none() && used + size <= max {
                used += size;
                out.push(sc);
                commit.sent.push(c.id);
                continue;
            }
            if offset.is_none() && (!commit.sent.is_empty() || chunk_done) {
                held_back = true; // after the device's statuses for this message
                break;
            }
            // Too big for any message (or already being chunked): OMA-DM large object, one per message.
            // Alone in a message, a piece is taken however small the room (so that a tiny
            // MaxMsgSize still makes progress).
            let alone = !shares_earlier;
            match piece(
                &c.id.wire_id(),
                payload,
                offset.unwrap_or(0),
                max.saturating_sub(used),
                if alone { 1 } else { MIN_CHUNK },
            ) {
                Piece::Part {
                    command,
                    next_offset,
                    last,
                } => {
                    used += syncml::estimated_size(&command);
                    out.push(*command);
                    chunk_done = true;
                    if last {
                        commit.sent.push(c.id);
                    } else {
                        next_chunk = Some(Chunk {
                            command: c.id,
                            offset: next_offset,
                        });
                        final_ = false;
                        break;
                    }
                }
                Piece::NoRoom if !alone || offset.is_some() => {
                    next_chunk = offset.map(|o| Chunk {
                        command: c.id,
                        offset: o,
                    });
                    // A large object part-way keeps our package open; a command not begun waits,
                    // and keeps it open only when this message carries none of ours.
                    held_back = offset.is_none();
                    if offset.is_some() || (commit.sent.is_empty() && !chunk_done) {
                        final_ = false;
                    }
                    break;
                }
                Piece::Unsplittable if shares_earlier => {
                    held_back = true; // next message, on its own
                    if commit.sent.is_empty() && !chunk_done {
                        final_ = false;
                    }
                    break;
                }
                Piece::NoRoom | Piece::Unsplittable => {
                    // Several items or no Data, or a LocURI too long for any piece: it cannot be
                    // chunked; send it whole, alone, and let the device judge.
                    tracing::warn!(command = %c.id, size, max, "command larger than the device's MaxMsgSize");
                    used += size;
                    out.push(sc);
                    commit.sent.push(c.id);
                }
            }
        }
        // Work that only a later session can deliver: poll fast until it is gone.
        let waiting = open_list.iter().any(|c| {
            !answered.contains(&c.id)
                && !commit.sent.contains(&c.id)
                && !held.iter().any(|h| h.command == c.id)
                && ((user_scoped(c) && login_status.as_deref() != Some("user"))
                    || (c.state == CommandState::Sent && c.last_session.as_deref() == Some(key.as_str())))
        });
        let want = if waiting {
            input.poll.fast_minutes
        } else {
            input.poll.steady_minutes
        };
        if want != poll_current && !poll_refused && final_ && !held_back {
            let node = |name: &str, value: u32| CommandItem {
                target: format!("./Vendor/MSFT/DMClient/Provider/{}/Poll/{name}", input.poll.provider_id),
                format: Some("int".into()),
                type_: None,
                data: Some(value.to_string()),
            };
            // MS-MDE2 §2.2.9.3: the remaining set only runs while neither the first nor the second
            // set is infinite. Enrollments provisioned before interop review M-2 have an infinite
            // second set (count 0, interval 60), which made this Replace a no-op; disabling the
            // second set (interval 0) in the same command makes the interval take effect for them
            // too, and is a no-op for those provisioned since.
            let change = to_syncml(
                &format!("{POLL_CMD_PREFIX}{want}"),
                &OmaDmCommand {
                    verb: Verb::Replace,
                    items: vec![
                        node("IntervalForSecondSetOfRetries", 0),
                        node("IntervalForRemainingScheduledRetries", want),
                    ],
                    children: Vec::new(),
                },
            );
            // Within MaxMsgSize or not now: the change then comes with a later answer.
            if used + syncml::estimated_size(&change) <= max {
                out.push(change);
            }
        }
    }
    // The device answers unless our message holds nothing for it and closes our package.
    let sending = !final_ || !commit.sent.is_empty() || out.iter().any(|c| c.cmd_id().starts_with(POLL_CMD_PREFIX));
    let ends_session = !sending && out.len() == 1;

    let response = SyncMl {
        header,
        body: SyncBody { commands: out, final_ },
    };
    let raw: String = input.raw.chars().take(RAW_MESSAGE_KEEP).collect();
    commit.raw_message = Some(raw);
    let state = OmaDmSession {
        session_id: hdr.session_id.clone(),
        client_msg_id: hdr.msg_id,
        server_msg_id,
        login_status,
        md5_nonce: input
            .next_nonce
            .clone()
            .or_else(|| prev_state.and_then(|p| p.md5_nonce.clone())),
        chunk: next_chunk,
        pending_statuses,
        // A "Next Message" response opens nothing of ours: the device's package is the open one.
        package_open: !final_ && !answers_device_package,
        incoming,
        held,
    };
    commit.session = SessionRecord {
        key,
        state: state.to_state(),
        last_request_hash: input.request_hash,
        last_response: syncml::write(&response),
        updated_at: None,
    };
    commit.retire_previous_certificate = input.retire_previous_certificate;
    commit.expire_overdue = input.expire_overdue;
    SessionOutput {
        response,
        commit,
        ends_session,
    }
}

/// The device's MaxMsgSize (SyncHdr Meta), within what we honour.
fn max_msg_size(hdr: &SyncHdr) -> usize {
    hdr.meta
        .as_ref()
        .and_then(|m| m.max_msg_size)
        .map_or(DEFAULT_MAX_MSG_SIZE, |m| usize::try_from(m).unwrap_or(MAX_MAX_MSG_SIZE))
        .clamp(MIN_MAX_MSG_SIZE, MAX_MAX_MSG_SIZE)
}

/// Bytes our message takes with `header` and no command but `<Final/>`.
fn message_overhead(header: &SyncHdr) -> usize {
    syncml::write(&SyncMl {
        header: header.clone(),
        body: SyncBody {
            commands: Vec::new(),
            final_: true,
        },
    })
    .len()
}

/// The answer to a message refused whole: only the SyncHdr Status `code`, Final. Nothing in the
/// message is processed; the session moves on a message (so the device's next one is answered in
/// sequence) and keeps what it had owed and was sending.
fn refuse_message(
    input: &SessionInput<'_>,
    header: SyncHdr,
    prev_state: Option<&OmaDmSession>,
    new_session: bool,
    key: String,
    login_status: Option<String>,
    code: u16,
) -> SessionOutput {
    let hdr = &input.msg.header;
    let mut ids = Counter(0);
    let mut st = status(&mut ids, hdr.msg_id, "0", "SyncHdr", code);
    if let (syncml::Command::Status(s), Some(nonce)) = (&mut st, &input.next_nonce) {
        s.chal = Some(md5_chal(nonce));
    }
    let response = SyncMl {
        header,
        body: SyncBody {
            commands: vec![st],
            final_: true,
        },
    };
    let kept = prev_state.filter(|_| !new_session);
    let state = OmaDmSession {
        session_id: hdr.session_id.clone(),
        client_msg_id: hdr.msg_id,
        server_msg_id: response.header.msg_id,
        login_status,
        md5_nonce: input
            .next_nonce
            .clone()
            .or_else(|| prev_state.and_then(|p| p.md5_nonce.clone())),
        chunk: kept.and_then(|p| p.chunk),
        pending_statuses: kept.map(|p| p.pending_statuses.clone()).unwrap_or_default(),
        package_open: false,
        incoming: kept.map(|p| p.incoming.clone()).unwrap_or_default(),
        held: kept.map(|p| p.held.clone()).unwrap_or_default(),
    };
    let commit = CheckinCommit {
        raw_message: Some(input.raw.chars().take(RAW_MESSAGE_KEEP).collect()),
        session: SessionRecord {
            key,
            state: state.to_state(),
            last_request_hash: input.request_hash.clone(),
            last_response: syncml::write(&response),
            updated_at: None,
        },
        ..CheckinCommit::default()
    };
    SessionOutput {
        response,
        commit,
        ends_session: true,
    }
}

/// An MSI install completion in an alert item: the DownloadInstall LocURI and the code it gives
/// the command. The alert Data is the install HRESULT (0 = success; EnterpriseDesktopAppManagement
/// CSP alert example); an MsiInstallJob status of 70 also means installed.
fn msi_completion(item: &Item) -> Option<(String, u16)> {
    let ty = item.meta.as_ref().and_then(|m| m.type_.as_deref())?;
    if ty.trim() != TYPE_MSI_INSTALL {
        return None;
    }
    let src = item.source_uri()?;
    let data = item.data.as_ref().map(|d| d.as_str().trim()).unwrap_or_default();
    let ok = data == "0" || data.contains("<Status>70</Status>");
    Some((src.to_owned(), if ok { 200 } else { 500 }))
}

/// The form two LocURIs of the same CSP node share, for matching a completion alert to the command
/// that targeted the node (interop review M-4): `./Device/Vendor/…` is `./Vendor/…`, percent
/// escapes are decoded (`%7B…%7D` is `{…}`), and ASCII case is ignored (a GUID may come back in
/// either case).
fn node_key(loc_uri: &str) -> String {
    let decoded = percent_decode(loc_uri.trim());
    inventory::normalize(&decoded).to_ascii_uppercase()
}

/// `%XX` escapes decoded; a malformed escape, or one that does not decode to UTF-8, is kept as is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// Matches MSI-install completions (target LocURI, final code) to the accepted commands that
/// targeted the node, newest first, each command at most once: those accepted earlier
/// (`awaiting`, newest first) and those this message's outcomes accept.
fn complete(
    completions: &[(String, u16)],
    awaiting: &[Command],
    outcomes: &[Outcome],
    open: &HashMap<CommandId, &Command>,
) -> Vec<Completion> {
    let mut candidates: Vec<&Command> = awaiting.iter().collect();
    for o in outcomes.iter().filter(|o| o.state == CommandState::Accepted) {
        if let Some(c) = open.get(&o.command_id) {
            let at = candidates.iter().position(|a| a.id < c.id).unwrap_or(candidates.len());
            candidates.insert(at, c);
        }
    }
    let targets: Vec<Vec<String>> = candidates
        .iter()
        .map(|c| {
            OmaDmCommand::from_payload(&c.payload)
                .map(|b| b.targets().into_iter().map(node_key).collect())
                .unwrap_or_default()
        })
        .collect();
    let mut used: HashSet<CommandId> = HashSet::new();
    let mut out = Vec::new();
    for (target, code) in completions {
        let target = &node_key(target);
        let found = candidates
            .iter()
            .zip(&targets)
            .find(|(c, t)| !used.contains(&c.id) && t.iter().any(|t| t == target));
        if let Some((c, _)) = found {
            used.insert(c.id);
            out.push(Completion::new(c.id, *code));
        }
    }
    out
}

enum Piece {
    Part {
        command: Box<syncml::Command>,
        next_offset: usize,
        last: bool,
    },
    /// Fits, but not in the room left in this message.
    NoRoom,
    /// Not a single-item command with Data.
    Unsplittable,
}

/// Smallest piece worth a message of its own.
const MIN_CHUNK: usize = 1024;

/// The next piece of a large object (OMA-DM RepPro §7, Large Object handling): the item's Data from
/// `offset`, as much as fits in `room` bytes once escaped; the first piece carries Meta Size (the
/// whole Data's byte length), every piece but the last carries MoreData. Pieces are always written as
/// escaped text (a piece of an XML value is not itself well-formed XML); the device reassembles the
/// bytes.
fn piece(cmd_id: &str, p: &OmaDmCommand, offset: usize, room: usize, min_chunk: usize) -> Piece {
    let ([item], Verb::Add | Verb::Replace | Verb::Exec) = (p.items.as_slice(), p.verb) else {
        return Piece::Unsplittable;
    };
    let Some(data) = &item.data else {
        return Piece::Unsplittable;
    };
    let empty = OmaDmCommand::single(
        p.verb,
        CommandItem {
            data: Some(String::new()),
            ..item.clone()
        },
    );
    let overhead = syncml::estimated_size(&to_syncml(cmd_id, &empty)) + 96; // + Meta Size, MoreData
    let avail = room.saturating_sub(overhead);
    if avail < min_chunk.max(1) {
        return Piece::NoRoom;
    }
    let rest = data.get(offset..).unwrap_or_default();
    let mut end = 0;
    let mut written = 0;
    for (i, ch) in rest.char_indices() {
        let cost = match ch {
            '<' | '>' => 4,
            '&' => 5,
            '"' | '\'' => 6,
            c => c.len_utf8(),
        };
        if written + cost > avail {
            break;
        }
        written += cost;
        end = i + ch.len_utf8();
    }
    let last = offset + end >= data.len();
    let mut command = to_syncml(cmd_id, &empty);
    if let syncml::Command::Add(ic) | syncml::Command::Replace(ic) | syncml::Command::Exec(ic) = &mut command
        && let Some(it) = ic.items.first_mut()
    {
        let mut meta = it.meta.clone().unwrap_or_default();
        if offset == 0 {
            meta.size = Some(data.len() as u64);
        }
        it.meta = Some(meta);
        it.data = Some(ItemData::Text(rest[..end].to_owned()));
        it.more_data = !last;
    }
    Piece::Part {
        command: Box::new(command),
        next_offset: offset + end,
        last,
    }
}

/// OMA-DM Chal for `syncml:auth-md5` with the next nonce (OMA-DM RepPro §6.1, Security §5.3).
pub fn md5_chal(nonce: &str) -> Meta {
    Meta {
        format: Some("b64".into()),
        type_: Some(crate::md5::AUTH_MD5.into()),
        next_nonce: Some(nonce.to_owned()),
        ..Default::default()
    }
}

/// The answer to an unauthenticated (or wrongly authenticated) message: only a SyncHdr Status 401
/// (bad Cred) or 407 (no Cred) with a challenge carrying a fresh nonce.
pub fn challenge(msg: &SyncMl, device_id: &str, management_url: &str, code: u16, nonce: &str) -> SyncMl {
    let mut ids = Counter(0);
    let mut st = status(&mut ids, msg.header.msg_id, "0", "SyncHdr", code);
    if let syncml::Command::Status(s) = &mut st {
        s.chal = Some(md5_chal(nonce));
    }
    SyncMl {
        header: SyncHdr::new(msg.header.session_id.clone(), 1, device_id, management_url),
        body: SyncBody {
            commands: vec![st],
            final_: true,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::commands::action_command;
    use steward_core::{
        Action, AuthMethod, CertSerial, DeviceId, EnrollmentId, EnrollmentType, FactName, Platform, Thumbprint,
        WipeKind,
    };
    use syncml::{Command as Sc, Results, Status};

    pub(crate) const DEVICE: &str = "B5B954E81FBCB94EB79BD08BE625F4EE";
    pub(crate) const URL: &str = "https://mdm.example.com/ManagementServer/MDM.svc";

    /// An active Windows enrollment of [`DEVICE`] (the reconciliation tests use it too).
    pub(crate) fn enrollment() -> Enrollment {
        let now = OffsetDateTime::now_utc();
        Enrollment {
            id: EnrollmentId::new(),
            platform: Platform::Windows,
            device_id: DeviceId::parse(DEVICE).unwrap(),
            hardware_id: None,
            device_name: None,
            os_version: None,
            os_edition: None,
            enrollment_type: EnrollmentType::Full,
            user_email: None,
            auth_method: AuthMethod::EnrollmentToken,
            enrollment_token_id: None,
            group_id: None,
            cert_serial: CertSerial::new("01"),
            cert_thumbprint: Thumbprint::of_der(b"certificate"),
            cert_not_after: now,
            previous_cert: None,
            state: EnrollmentState::Active,
            enrolled_at: now,
            updated_at: now,
            last_seen_at: None,
        }
    }

    fn command(e: &Enrollment, payload: OmaDmCommand, origin: &str) -> Command {
        Command {
            id: CommandId::new(),
            enrollment_id: e.id,
            payload: payload.to_payload(),
            priority: 0,
            origin: CommandOrigin::parse(origin),
            state: CommandState::Pending,
            created_at: OffsetDateTime::now_utc(),
            expires_at: None,
            send_count: 0,
            last_sent_at: None,
            last_session: None,
            status_code: None,
            completed_at: None,
        }
    }

    fn replace(target: &str, value: &str) -> OmaDmCommand {
        OmaDmCommand::single(
            Verb::Replace,
            CommandItem {
                target: target.into(),
                format: Some("int".into()),
                type_: None,
                data: Some(value.into()),
            },
        )
    }

    fn fixture(name: &str) -> SyncMl {
        let path = format!(
            "{}/../../../shared/fixtures/windows/win10-19043-fleet-poc/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        syncml::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn run<'a>(
        msg: &'a SyncMl,
        e: &'a Enrollment,
        prev: Option<&'a SessionRecord>,
        open: &'a [Command],
    ) -> SessionOutput {
        process(SessionInput {
            msg,
            raw: "<SyncML/>",
            request_hash: "h".into(),
            enrollment: e,
            management_url: URL,
            previous: prev,
            open_commands: open,
            awaiting: &[],
            new_key: "key-1".into(),
            header_code: 200,
            next_nonce: None,
            poll: PollPolicy {
                provider_id: "Steward".into(),
                steady_minutes: 60,
                fast_minutes: 3,
                current_minutes: None,
            },
            inventory: fresh_inventory(),
            now: OffsetDateTime::now_utc(),
            retire_previous_certificate: false,
            expire_overdue: false,
            max_device_commands: MAX_DEVICE_COMMANDS,
        })
    }

    /// An inventory that just arrived: no read is due.
    fn fresh_inventory() -> InventoryPolicy {
        InventoryPolicy {
            interval: time::Duration::hours(24),
            collected_at: Some(OffsetDateTime::now_utc()),
            command_id: CommandId::new(),
        }
    }

    /// The Windows session state a commit stores.
    fn session_of(out: &SessionOutput) -> OmaDmSession {
        OmaDmSession::from_record(&out.commit.session).unwrap()
    }

    fn fact(name: &'static str, value: &str) -> FactUpdate {
        FactUpdate::new(FactName::from_static(name), value)
    }

    /// A device reply in session `session_id`, message `msg_id`, with the given commands.
    fn reply(session_id: &str, msg_id: u32, commands: Vec<Sc>, final_: bool) -> SyncMl {
        let mut all = vec![Sc::Status(Status {
            cmd_id: "1".into(),
            msg_ref: "1".into(),
            cmd_ref: "0".into(),
            cmd: "SyncHdr".into(),
            data: "200".into(),
            ..Default::default()
        })];
        all.extend(commands);
        SyncMl {
            header: SyncHdr::new(session_id, msg_id, URL, DEVICE),
            body: SyncBody { commands: all, final_ },
        }
    }

    fn st(cmd_id: &str, cmd_ref: &str, cmd: &str, code: u16) -> Sc {
        Sc::Status(Status {
            cmd_id: cmd_id.into(),
            msg_ref: "1".into(),
            cmd_ref: cmd_ref.into(),
            cmd: cmd.into(),
            data: code.to_string(),
            ..Default::default()
        })
    }

    fn names(m: &SyncMl) -> Vec<&'static str> {
        m.body.commands.iter().map(|c| c.name()).collect()
    }

    #[test]
    fn first_real_session_is_answered_status_first() {
        let e = enrollment();
        let msg = fixture("04-session1-msg1.request.xml");
        let out = run(&msg, &e, None, &[]);
        let cmds = &out.response.body.commands;
        let Sc::Status(first) = &cmds[0] else {
            panic!("status first")
        };
        assert_eq!(
            (
                first.cmd_ref.as_str(),
                first.msg_ref.as_str(),
                first.cmd.as_str(),
                first.data.as_str()
            ),
            ("0", "1", "SyncHdr", "200")
        );
        let refs: Vec<(String, String)> = cmds[1..]
            .iter()
            .map(|c| match c {
                Sc::Status(s) => (s.cmd_ref.clone(), s.cmd.clone()),
                other => panic!("unexpected {}", other.name()),
            })
            .collect();
        assert_eq!(
            refs,
            vec![
                ("2".into(), "Alert".into()),
                ("3".into(), "Alert".into()),
                ("4".into(), "Replace".into())
            ]
        );
        assert!(out.response.body.final_);
        assert_eq!(out.response.header.session_id, "1");
        assert_eq!(out.response.header.target.as_ref().unwrap().loc_uri, DEVICE);
        assert_eq!(out.response.header.source.as_ref().unwrap().loc_uri, URL);
        assert_eq!(session_of(&out).login_status.as_deref(), Some("user"));
        assert!(
            out.commit
                .facts
                .contains(&fact("hardware.manufacturer", "VMware, Inc."))
        );
        assert!(out.commit.facts.contains(&fact("hardware.model", "VMware7,1")));
        assert!(out.commit.end_enrollment.is_none());
    }

    #[test]
    fn unenroll_alert_ends_the_enrollment_and_sends_nothing() {
        let e = enrollment();
        let queued = [command(&e, replace("./Vendor/MSFT/X", "1"), "admin")];
        let msg = fixture("05-session2-unenroll.request.xml");
        let out = run(&msg, &e, None, &queued);
        assert_eq!(
            out.commit.end_enrollment.as_ref().map(|s| s.state),
            Some(EnrollmentState::Unenrolled)
        );
        assert!(out.commit.sent.is_empty());
        assert!(!names(&out.response).contains(&"Replace"));
    }

    #[test]
    fn queued_commands_go_out_and_outcomes_come_back_once() {
        let e = enrollment();
        let get = command(&e, crate::inventory::inventory_command("Steward"), "inventory");
        let set = command(
            &e,
            replace("./Vendor/MSFT/Policy/Config/Camera/AllowCamera", "0"),
            "admin",
        );
        let msg = fixture("04-session1-msg1.request.xml");
        let out = run(&msg, &e, None, &[get.clone(), set.clone()]);
        assert_eq!(out.commit.sent, vec![get.id, set.id]);
        let sent_ids: Vec<&str> = out.response.body.commands.iter().map(|c| c.cmd_id()).collect();
        assert!(
            sent_ids.contains(&get.id.wire_id().as_str()),
            "CmdID is the command UUID"
        );
        let written = syncml::write(&out.response);
        assert!(written.contains("./Vendor/MSFT/Policy/Config/Camera/AllowCamera"));

        // The device answers both; Results for the Get feed the facts.
        let sent_state = |c: &Command| Command {
            state: CommandState::Sent,
            last_session: Some("key-1".into()),
            ..c.clone()
        };
        let open = [sent_state(&get), sent_state(&set)];
        let results = Sc::Results(Results {
            cmd_id: "4".into(),
            msg_ref: Some("1".into()),
            cmd_ref: get.id.wire_id(),
            meta: None,
            items: vec![Item {
                source: Some(LocTarget::new("./DevDetail/SwV")),
                data: Some(ItemData::Text("10.0.19043.2364".into())),
                ..Default::default()
            }],
        });
        let msg2 = reply(
            "1",
            2,
            vec![
                st("2", &get.id.wire_id(), "Get", 200),
                results,
                st("3", &set.id.wire_id(), "Replace", 200),
            ],
            true,
        );
        let prev = out.commit.session.clone();
        let out2 = run(&msg2, &e, Some(&prev), &open);
        assert_eq!(out2.commit.outcomes.len(), 2);
        let g = out2.commit.outcomes.iter().find(|o| o.command_id == get.id).unwrap();
        assert_eq!(g.status_code, 200);
        assert_eq!(g.results[0].data.as_deref(), Some("10.0.19043.2364"));
        assert!(out2.commit.facts.contains(&fact("os.version", "10.0.19043.2364")));
        assert!(
            out2.commit
                .facts
                .iter()
                .any(|f| f.name == facts::INVENTORY_COLLECTED_AT)
        );
        // Nothing more to send and nothing to acknowledge: a bare SyncHdr status ends the session.
        assert_eq!(out2.response.body.commands.len(), 1);
        assert!(out2.ends_session);
        assert_eq!(out2.response.header.msg_id, 2);
        assert!(out2.commit.sent.is_empty(), "not re-sent within the session");
    }

    #[test]
    fn foreign_and_unknown_cmd_refs_are_ignored() {
        let e = enrollment();
        let other_device_command = CommandId::new();
        let msg = reply(
            "1",
            2,
            vec![
                st("2", &other_device_command.wire_id(), "Replace", 200),
                st("3", "not-a-uuid", "Get", 200),
            ],
            true,
        );
        let out = run(&msg, &e, None, &[]);
        assert!(out.commit.outcomes.is_empty());
    }

    #[test]
    fn add_418_is_retried_as_replace_in_the_same_session() {
        let e = enrollment();
        let mut body = replace("./Vendor/MSFT/X", "1");
        body.verb = Verb::Add;
        let mut add = command(&e, body, "admin");
        add.state = CommandState::Sent;
        add.last_session = Some("key-1".into());
        let prev = SessionRecord {
            key: "key-1".into(),
            state: OmaDmSession {
                session_id: "1".into(),
                client_msg_id: 1,
                server_msg_id: 1,
                ..Default::default()
            }
            .to_state(),
            ..Default::default()
        };
        let msg = reply("1", 2, vec![st("2", &add.id.wire_id(), "Add", 418)], true);
        let out = run(&msg, &e, Some(&prev), std::slice::from_ref(&add));
        assert!(out.commit.outcomes.is_empty());
        assert_eq!(out.commit.requeue.len(), 1);
        assert_eq!(
            OmaDmCommand::from_payload(&out.commit.requeue[0].payload).unwrap().verb,
            Verb::Replace
        );
        assert_eq!(out.commit.sent, vec![add.id]);
        assert!(names(&out.response).contains(&"Replace"));
    }

    #[test]
    fn atomic_children_and_wipe_acknowledgement() {
        let e = enrollment();
        let atomic = command(
            &e,
            OmaDmCommand {
                verb: Verb::Atomic,
                items: vec![],
                children: vec![replace("./Vendor/MSFT/A", "1"), replace("./Vendor/MSFT/B", "x")],
            },
            "admin",
        );
        let sc = to_syncml(
            &atomic.id.wire_id(),
            &OmaDmCommand::from_payload(&atomic.payload).unwrap(),
        );
        let Sc::Atomic(c) = &sc else { panic!("atomic") };
        assert_eq!(c.commands[1].cmd_id(), format!("{}.2", atomic.id));
        let wipe = command(
            &e,
            action_command(Action::Wipe(WipeKind::Protected), "Steward"),
            &Action::Wipe(WipeKind::Protected).origin().as_str(),
        );
        let msg = reply(
            "1",
            2,
            vec![
                st("2", &atomic.id.wire_id(), "Atomic", 507),
                st("3", &format!("{}.1", atomic.id), "Replace", 216),
                st("4", &format!("{}.2", atomic.id), "Replace", 500),
                st("5", &wipe.id.wire_id(), "Exec", 200),
            ],
            true,
        );
        let out = run(&msg, &e, None, &[atomic.clone(), wipe]);
        let a = out.commit.outcomes.iter().find(|o| o.command_id == atomic.id).unwrap();
        assert_eq!((a.status_code, a.child_codes.clone()), (507, vec![216, 500]));
        assert_eq!(
            out.commit.end_enrollment.as_ref().map(|s| s.state),
            Some(EnrollmentState::Wiped)
        );
    }

    #[test]
    fn device_package_without_final_gets_alert_1222_and_no_commands() {
        let e = enrollment();
        let queued = [command(&e, replace("./Vendor/MSFT/X", "1"), "admin")];
        let mut msg = fixture("04-session1-msg1.request.xml");
        msg.body.final_ = false;
        let out = run(&msg, &e, None, &queued);
        assert!(out.commit.sent.is_empty());
        let last = out.response.body.commands.last().unwrap();
        let Sc::Alert(a) = last else { panic!("alert 1222 last") };
        assert_eq!(a.data, "1222");
        // OMA-DM Protocol §8.2: the "Next Message" response carries no Final (interop review M-5).
        assert!(!out.response.body.final_);
        assert!(!out.ends_session);
    }

    #[test]
    fn packs_under_max_msg_size_and_holds_user_scope() {
        let e = enrollment();
        let big = "x".repeat(3000);
        let queued: Vec<Command> = (0..5)
            .map(|i| command(&e, replace(&format!("./Vendor/MSFT/N{i}"), &big), "admin"))
            .collect();
        let user = command(&e, replace("./User/Vendor/MSFT/Policy/Config/X", "1"), "admin");
        // Learn's own spelling of the user scope (interop review M-9).
        let lower = command(&e, replace("./user/vendor/MSFT/Policy/Config/Y", "1"), "admin");
        let mut all = queued.clone();
        all.push(user.clone());
        all.push(lower.clone());
        let mut msg = fixture("04-session1-msg1.request.xml");
        msg.header.meta = Some(Meta {
            max_msg_size: Some(10_000),
            ..Default::default()
        });
        // LoginStatus "none": the user-scoped command waits.
        if let Sc::Alert(a) = &mut msg.body.commands[1] {
            a.items[0].data = Some(ItemData::Text("none".into()));
        }
        let out = run(&msg, &e, None, &all);
        assert!(
            !out.commit.sent.is_empty() && out.commit.sent.len() < 5,
            "{}",
            out.commit.sent.len()
        );
        // Complete commands only: our package closes, the rest goes after the device's statuses
        // (OMA-DM Protocol §8.2; interop review M-5).
        assert!(out.response.body.final_, "complete commands close the package");
        assert!(syncml::write(&out.response).len() <= 10_000);
        assert!(!out.commit.sent.contains(&user.id));
        assert!(!out.commit.sent.contains(&lower.id));
        let session = session_of(&out);
        assert!(!session.package_open);

        // The device answers with its statuses and Final; the rest goes out.
        let first: Vec<CommandId> = out.commit.sent.clone();
        let statuses = first
            .iter()
            .enumerate()
            .map(|(i, id)| st(&(i + 2).to_string(), &id.wire_id(), "Replace", 200))
            .collect();
        let mut answer = reply(&msg.header.session_id, 2, statuses, true);
        answer.header.meta = msg.header.meta.clone();
        let mut after: Vec<Command> = all.clone();
        for c in &mut after {
            if first.contains(&c.id) {
                c.state = CommandState::Sent;
                c.last_session = Some(out.commit.session.key.clone());
            }
        }
        let next = run(&answer, &e, Some(&out.commit.session), &after);
        assert_eq!(next.commit.outcomes.len(), first.len());
        assert!(!next.commit.sent.is_empty());
        assert!(next.commit.sent.iter().all(|id| !first.contains(id)));
    }

    #[test]
    fn polls_fast_while_work_waits_and_back_to_steady() {
        let e = enrollment();
        let user = command(&e, replace("./User/Vendor/MSFT/Policy/Config/X", "1"), "admin");
        let mut msg = fixture("04-session1-msg1.request.xml");
        if let Sc::Alert(a) = &mut msg.body.commands[1] {
            a.items[0].data = Some(ItemData::Text("none".into()));
        }
        let out = run(&msg, &e, None, std::slice::from_ref(&user));
        let poll = out
            .response
            .body
            .commands
            .iter()
            .find(|c| c.cmd_id().starts_with("poll-"))
            .expect("poll change");
        assert_eq!(poll.cmd_id(), "poll-3");
        let text = syncml::write(&out.response);
        assert!(text.contains("./Vendor/MSFT/DMClient/Provider/Steward/Poll/IntervalForRemainingScheduledRetries"));
        // MS-MDE2 §2.2.9.3: the remaining set runs only while the second is not infinite, so the
        // same command disables the second set of older enrollments (interop review M-2).
        assert!(text.contains(
            "<LocURI>./Vendor/MSFT/DMClient/Provider/Steward/Poll/IntervalForSecondSetOfRetries</LocURI>\
             </Target><Meta><Format xmlns=\"syncml:metinf\">int</Format></Meta><Data>0</Data>"
        ));
        assert!(!out.ends_session);

        // One item refused: the interval is not recorded as taken.
        let prev = out.commit.session.clone();
        let half = reply(
            "1",
            2,
            vec![st("2", "poll-3", "Replace", 200), st("3", "poll-3", "Replace", 500)],
            true,
        );
        let refused = run(&half, &e, Some(&prev), std::slice::from_ref(&user));
        assert!(
            !refused
                .commit
                .facts
                .iter()
                .any(|f| f.name == facts::POLL_INTERVAL_MINUTES)
        );

        // The device accepts: the fact records it and nothing more is sent.
        let ack = reply("1", 2, vec![st("2", "poll-3", "Replace", 200)], true);
        let out2 = run(&ack, &e, Some(&prev), std::slice::from_ref(&user));
        assert!(
            out2.commit
                .facts
                .contains(&FactUpdate::new(facts::POLL_INTERVAL_MINUTES, "3"))
        );
        assert!(out2.ends_session, "{:?}", names(&out2.response));

        // Later, with nothing waiting and the device on the fast interval, back to steady.
        let mut input_msg = fixture("04-session1-msg1.request.xml");
        input_msg.header.session_id = "2".into();
        let out3 = process(SessionInput {
            msg: &input_msg,
            raw: "",
            request_hash: "h2".into(),
            enrollment: &e,
            management_url: URL,
            previous: None,
            open_commands: &[],
            awaiting: &[],
            new_key: "key-2".into(),
            header_code: 200,
            next_nonce: None,
            poll: PollPolicy {
                provider_id: "Steward".into(),
                steady_minutes: 60,
                fast_minutes: 3,
                current_minutes: Some(3),
            },
            inventory: fresh_inventory(),
            now: OffsetDateTime::now_utc(),
            retire_previous_certificate: false,
            expire_overdue: false,
            max_device_commands: MAX_DEVICE_COMMANDS,
        });
        assert!(out3.response.body.commands.iter().any(|c| c.cmd_id() == "poll-60"));
        // A refused change is not retried within the session.
        let refuse = reply("2", 2, vec![st("2", "poll-60", "Replace", 405)], true);
        let out4 = process(SessionInput {
            msg: &refuse,
            raw: "",
            request_hash: "h3".into(),
            enrollment: &e,
            management_url: URL,
            previous: Some(&out3.commit.session),
            open_commands: &[],
            awaiting: &[],
            new_key: "key-3".into(),
            header_code: 200,
            next_nonce: None,
            poll: PollPolicy {
                provider_id: "Steward".into(),
                steady_minutes: 60,
                fast_minutes: 3,
                current_minutes: Some(3),
            },
            inventory: fresh_inventory(),
            now: OffsetDateTime::now_utc(),
            retire_previous_certificate: false,
            expire_overdue: false,
            max_device_commands: MAX_DEVICE_COMMANDS,
        });
        assert!(out4.ends_session);
    }

    #[test]
    fn large_objects_are_chunked_and_reassembled_by_the_device() {
        use steward_sim::csp::DeviceProfile;
        use steward_sim::session::SessionTrigger;
        const MAX: u64 = 8192;
        let e = enrollment();
        let mut device = steward_sim::ManagedDevice::new(DeviceProfile::random(DEVICE), URL);
        let value: String = (0..20_000u32)
            .map(|i| {
                if i % 97 == 0 {
                    '<'
                } else {
                    char::from(b'a' + (i % 26) as u8)
                }
            })
            .collect();
        let target = "./Device/Vendor/MSFT/Policy/Config/Big/Value";
        let big = command(
            &e,
            OmaDmCommand::single(
                Verb::Replace,
                CommandItem {
                    target: target.into(),
                    format: Some("chr".into()),
                    type_: None,
                    data: Some(value.clone()),
                },
            ),
            "admin",
        );
        let small = command(
            &e,
            replace("./Device/Vendor/MSFT/Policy/Config/Small/Value", "1"),
            "admin",
        );
        let mut open = vec![small, big.clone()];
        let mut prev: Option<SessionRecord> = None;
        let mut msg = device.start_session(SessionTrigger::Scheduled).unwrap();
        let mut outcomes = Vec::new();
        let mut messages = 0;
        let mut device_without_final = 0;
        loop {
            messages += 1;
            assert!(messages < 30, "session does not converge");
            msg.header.meta = Some(Meta {
                max_msg_size: Some(MAX),
                ..Default::default()
            });
            let out = run(&msg, &e, prev.as_ref(), &open);
            assert!(
                syncml::write(&out.response).len() as u64 <= MAX,
                "message {messages} over MaxMsgSize"
            );
            // What the store would do with the commit.
            for c in &mut open {
                if out.commit.sent.contains(&c.id) {
                    c.state = CommandState::Sent;
                    c.last_session = Some(out.commit.session.key.clone());
                }
            }
            for o in &out.commit.outcomes {
                open.retain(|c| c.id != o.command_id);
                outcomes.push(o.clone());
            }
            prev = Some(out.commit.session.clone());
            match device.respond(&out.response).unwrap() {
                Some(next) => {
                    device_without_final += usize::from(!next.body.final_);
                    msg = next
                }
                None => break,
            }
        }
        assert!(messages >= 4, "{messages} messages");
        // The device answered each piece without Final, as OMA-DM requires while our package is
        // open, and the pieces still went on (interop review M-5).
        assert!(device_without_final >= 2, "{device_without_final}");
        assert_eq!(device.tree.value(target), Some(value.as_str()), "reassembled exactly");
        let o = outcomes
            .iter()
            .find(|o| o.command_id == big.id)
            .expect("outcome for the large object");
        assert_eq!(
            o.status_code, 200,
            "213 for pieces is not an outcome; the last piece's status is"
        );
        assert_eq!(outcomes.len(), 2);
        assert!(OmaDmSession::from_record(&prev.unwrap()).unwrap().chunk.is_none());
    }

    /// Device to server (interop review M-6): the device's large Results arrive in pieces; each
    /// is answered 213 with the "Next Message" response (no Final) and the outcome is recorded
    /// once, whole, with the last piece.
    #[test]
    fn large_results_from_the_device_are_reassembled() {
        use steward_sim::csp::{Access, DeviceProfile, Format};
        use steward_sim::session::SessionTrigger;
        let e = enrollment();
        let mut device = steward_sim::ManagedDevice::new(DeviceProfile::random(DEVICE), URL);
        let node = "./Device/Vendor/MSFT/Policy/Config/Big/Value";
        let value: String = (0..5_000u32)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect::<String>()
            + "<&>";
        device.tree.seed(node, Format::Chr, Access::GET_REPLACE, &value);
        device.upload_chunk_bytes = 1_000;
        let get = command(
            &e,
            OmaDmCommand::single(
                Verb::Get,
                CommandItem {
                    target: node.into(),
                    format: None,
                    type_: None,
                    data: None,
                },
            ),
            "admin",
        );
        let mut open = vec![get.clone()];
        let mut prev: Option<SessionRecord> = None;
        let mut msg = device.start_session(SessionTrigger::Scheduled).unwrap();
        let mut outcomes = Vec::new();
        let mut next_message_answers = 0;
        for _ in 0..30 {
            let out = run(&msg, &e, prev.as_ref(), &open);
            if !msg.body.final_ {
                // Our answer to a piece: statuses with a 213, Alert 1222, nothing else, no Final.
                assert!(!out.response.body.final_);
                assert!(out.response.body.commands.iter().any(|c| matches!(c,
                    Sc::Status(s) if s.cmd == "Results" && s.data == "213")));
                assert!(out.commit.outcomes.is_empty(), "not before the last piece");
                next_message_answers += 1;
            }
            for c in &mut open {
                if out.commit.sent.contains(&c.id) {
                    c.state = CommandState::Sent;
                    c.last_session = Some(out.commit.session.key.clone());
                }
            }
            for o in &out.commit.outcomes {
                open.retain(|c| c.id != o.command_id);
                outcomes.push(o.clone());
            }
            prev = Some(out.commit.session.clone());
            match device.respond(&out.response).unwrap() {
                Some(next) => msg = next,
                None => break,
            }
        }
        assert!(next_message_answers >= 4, "{next_message_answers}");
        assert_eq!(outcomes.len(), 1, "{outcomes:?}");
        let o = &outcomes[0];
        assert_eq!((o.command_id, o.status_code), (get.id, 200));
        assert_eq!(o.results.len(), 1);
        assert_eq!(
            o.results[0].data.as_deref(),
            Some(value.as_str()),
            "whole, not the first piece"
        );
        let state = OmaDmSession::from_record(&prev.unwrap()).unwrap();
        assert!(state.incoming.is_empty() && state.held.is_empty());
    }

    #[test]
    fn pieces_past_the_session_cap_are_dropped_with_413() {
        let e = enrollment();
        let mut get = command(&e, replace("./Vendor/MSFT/X", "1"), "admin");
        get.state = CommandState::Sent;
        let piece = |cmd_ref: String, source: &str, data: String| {
            Sc::Results(syncml::Results {
                cmd_id: "3".into(),
                msg_ref: Some("1".into()),
                cmd_ref,
                meta: None,
                items: vec![Item {
                    source: Some(LocTarget::new(source)),
                    data: Some(ItemData::Text(data)),
                    more_data: true,
                    ..Default::default()
                }],
            })
        };
        let half = "a".repeat(MAX_INCOMING_OBJECT / 2 + 1);
        // Pieces for no open command are acknowledged but not kept.
        let foreign = reply(
            "1",
            2,
            vec![piece(
                "0190a3d2-7b1c-7cc0-8000-00000000abcd".into(),
                "./A",
                half.clone(),
            )],
            false,
        );
        let out = run(&foreign, &e, None, std::slice::from_ref(&get));
        assert!(session_of(&out).incoming.is_empty());
        // Two objects of ours that together pass the cap: the second is dropped, the command fails.
        let first = reply("1", 2, vec![piece(get.id.wire_id(), "./A", half.clone())], false);
        let out = run(&first, &e, None, std::slice::from_ref(&get));
        assert_eq!(session_of(&out).incoming.len(), 1);
        let second = reply("1", 3, vec![piece(get.id.wire_id(), "./B", half)], false);
        let out = run(&second, &e, Some(&out.commit.session), std::slice::from_ref(&get));
        assert!(
            out.response
                .body
                .commands
                .iter()
                .any(|c| matches!(c, Sc::Status(s) if s.cmd == "Results" && s.data == "413"))
        );
        assert_eq!(
            session_of(&out).incoming.len(),
            1,
            "only the first object stays buffered"
        );
    }

    #[test]
    fn a_large_result_of_the_wrong_size_fails_the_command() {
        let e = enrollment();
        let mut get = command(&e, replace("./Vendor/MSFT/X", "1"), "admin");
        get.state = CommandState::Sent;
        let piece = |data: &str, size: Option<u64>, more: bool| {
            Sc::Results(syncml::Results {
                cmd_id: "3".into(),
                msg_ref: Some("1".into()),
                cmd_ref: get.id.wire_id(),
                meta: None,
                items: vec![Item {
                    source: Some(LocTarget::new("./Vendor/MSFT/X")),
                    meta: Some(Meta {
                        size,
                        ..Default::default()
                    }),
                    data: Some(ItemData::Text(data.into())),
                    more_data: more,
                    ..Default::default()
                }],
            })
        };
        let first = reply(
            "1",
            2,
            vec![st("2", &get.id.wire_id(), "Get", 200), piece("abc", Some(10), true)],
            false,
        );
        let out = run(&first, &e, None, std::slice::from_ref(&get));
        assert!(out.commit.outcomes.is_empty());
        assert_eq!(session_of(&out).held.len(), 1);
        let last = reply("1", 3, vec![piece("de", None, false)], true);
        let out = run(&last, &e, Some(&out.commit.session), std::slice::from_ref(&get));
        assert_eq!(out.commit.outcomes.len(), 1);
        assert_eq!(out.commit.outcomes[0].status_code, 424, "Meta/Size 10, 5 bytes came");
        assert!(out.response.body.commands.iter().any(|c| matches!(c,
                Sc::Status(s) if s.cmd == "Results" && s.data == "424")));
    }

    /// Interop review M-10: a bad or unknown command is answered on its own; the rest of the
    /// message (here the Status for our command) is still processed.
    #[test]
    fn unknown_and_malformed_device_commands_are_answered_one_by_one() {
        let e = enrollment();
        let mut sent = command(&e, replace("./Vendor/MSFT/X", "1"), "admin");
        sent.state = CommandState::Sent;
        let xml = format!(
            r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>
<SessionID>4294967295</SessionID><MsgID>2</MsgID><Target><LocURI>{URL}</LocURI></Target><Source><LocURI>{DEVICE}</LocURI></Source></SyncHdr>
<SyncBody><Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>
<Sync><CmdID>2</CmdID></Sync>
<Replace><CmdID>3</CmdID><Item><Source><LocURI></LocURI></Source><Data>x</Data></Item></Replace>
<Get><CmdID>4</CmdID></Get>
<Status><CmdID>5</CmdID><MsgRef>1</MsgRef><CmdRef>{}</CmdRef><Cmd>Replace</Cmd><Data>200</Data></Status>
<Final/></SyncBody></SyncML>"#,
            sent.id.wire_id()
        );
        let msg = syncml::parse(&xml).expect("one bad command does not fail the message");
        let out = run(&msg, &e, None, std::slice::from_ref(&sent));
        assert_eq!(
            out.response.header.session_id, "4294967295",
            "decimal SessionID echoed (M-8)"
        );
        let codes: Vec<(String, String, String)> = out
            .response
            .body
            .commands
            .iter()
            .filter_map(|c| match c {
                Sc::Status(s) if s.cmd_ref != "0" => Some((s.cmd_ref.clone(), s.cmd.clone(), s.data.clone())),
                _ => None,
            })
            .collect();
        let own = |r: &str, c: &str, d: &str| (r.to_owned(), c.to_owned(), d.to_owned());
        assert_eq!(
            codes,
            vec![
                own("2", "Sync", "406"),
                own("3", "Replace", "200"),
                own("4", "Get", "400")
            ]
        );
        assert_eq!(out.commit.outcomes.len(), 1);
        assert_eq!(out.commit.outcomes[0].command_id, sent.id);
    }

    /// Interop review M-11: a Get answered item by item, with 404 for nodes the edition lacks,
    /// succeeded when Results came; a multi-item Replace with a failed item did not.
    #[test]
    fn per_item_statuses_decide_the_outcome_together() {
        let e = enrollment();
        let mut get = command(&e, replace("./Vendor/MSFT/A", "1"), "admin");
        get.state = CommandState::Sent;
        let mut rep = command(&e, replace("./Vendor/MSFT/B", "1"), "admin");
        rep.state = CommandState::Sent;
        let results = Sc::Results(syncml::Results {
            cmd_id: "5".into(),
            msg_ref: Some("1".into()),
            cmd_ref: get.id.wire_id(),
            meta: None,
            items: vec![Item {
                source: Some(LocTarget::new("./DevDetail/SwV")),
                data: Some(ItemData::Text("10.0".into())),
                ..Default::default()
            }],
        });
        let msg = reply(
            "1",
            2,
            vec![
                st("2", &get.id.wire_id(), "Get", 200),
                st("3", &get.id.wire_id(), "Get", 404),
                results,
                st("6", &rep.id.wire_id(), "Replace", 200),
                st("7", &rep.id.wire_id(), "Replace", 500),
            ],
            true,
        );
        let out = run(&msg, &e, None, &[get.clone(), rep.clone()]);
        let code = |id: CommandId| {
            out.commit
                .outcomes
                .iter()
                .find(|o| o.command_id == id)
                .map(|o| o.status_code)
        };
        assert_eq!(code(get.id), Some(200));
        assert_eq!(code(rep.id), Some(500));

        // The inventory read answered with one error for the whole Get, but with Results: collected.
        let mut inv = command(&e, inventory::inventory_command("Steward"), "inventory");
        inv.origin = CommandOrigin::Inventory;
        inv.state = CommandState::Sent;
        let results = Sc::Results(syncml::Results {
            cmd_id: "3".into(),
            msg_ref: Some("1".into()),
            cmd_ref: inv.id.wire_id(),
            meta: None,
            items: vec![Item {
                source: Some(LocTarget::new("./DevDetail/SwV")),
                data: Some(ItemData::Text("10.0.26100".into())),
                ..Default::default()
            }],
        });
        let msg = reply("1", 2, vec![st("2", &inv.id.wire_id(), "Get", 404), results], true);
        let out = run(&msg, &e, None, std::slice::from_ref(&inv));
        assert_eq!(out.commit.outcomes[0].status_code, 200);
        assert!(out.commit.facts.iter().any(|f| f.name == facts::INVENTORY_COLLECTED_AT));
        assert!(out.commit.facts.iter().any(|f| f.value == "10.0.26100"));
    }

    fn input<'a>(
        msg: &'a SyncMl,
        e: &'a Enrollment,
        prev: Option<&'a SessionRecord>,
        open: &'a [Command],
        awaiting: &'a [Command],
        inventory: InventoryPolicy,
        now: OffsetDateTime,
    ) -> SessionInput<'a> {
        SessionInput {
            msg,
            raw: "<SyncML/>",
            request_hash: "h".into(),
            enrollment: e,
            management_url: URL,
            previous: prev,
            open_commands: open,
            awaiting,
            new_key: "key-1".into(),
            header_code: 200,
            next_nonce: None,
            poll: PollPolicy {
                provider_id: "Steward".into(),
                steady_minutes: 60,
                fast_minutes: 3,
                current_minutes: None,
            },
            inventory,
            now,
            retire_previous_certificate: false,
            expire_overdue: false,
            max_device_commands: MAX_DEVICE_COMMANDS,
        }
    }

    #[test]
    fn a_stale_inventory_is_queued_and_sent_at_session_start() {
        let e = enrollment();
        let now = OffsetDateTime::now_utc();
        let stale = |collected_at| InventoryPolicy {
            interval: time::Duration::hours(24),
            collected_at,
            command_id: CommandId::new(),
        };
        let mut urgent = command(&e, replace("./Vendor/MSFT/A", "1"), "admin");
        urgent.priority = Priority::ACTION;
        let mut late = command(&e, replace("./Vendor/MSFT/B", "1"), "admin");
        late.priority = Priority::INVENTORY - 1;
        let open = [urgent.clone(), late.clone()];
        let msg = fixture("04-session1-msg1.request.xml");
        for collected_at in [None, Some(now - time::Duration::hours(25))] {
            let policy = stale(collected_at);
            let id = policy.command_id;
            let out = process(input(&msg, &e, None, &open, &[], policy, now));
            assert_eq!(out.commit.enqueue.len(), 1);
            let queued = &out.commit.enqueue[0];
            assert_eq!(
                (queued.id, &queued.origin, queued.priority, queued.expires_at),
                (
                    id,
                    &CommandOrigin::Inventory,
                    Priority::INVENTORY,
                    Some(now + time::Duration::hours(24))
                )
            );
            assert_eq!(
                OmaDmCommand::from_payload(&queued.payload).unwrap(),
                inventory::inventory_command("Steward")
            );
            // Sent in this very message, in queue order (after higher priorities, before lower).
            assert_eq!(out.commit.sent, vec![urgent.id, id, late.id]);
            assert!(names(&out.response).contains(&"Get"));
        }
        // Fresh, already waiting, or not the start of a session: nothing queued.
        let fresh = process(input(
            &msg,
            &e,
            None,
            &open,
            &[],
            stale(Some(now - time::Duration::hours(1))),
            now,
        ));
        assert!(fresh.commit.enqueue.is_empty());
        let waiting = [command(&e, inventory::inventory_command("Steward"), "inventory")];
        let out = process(input(&msg, &e, None, &waiting, &[], stale(None), now));
        assert!(out.commit.enqueue.is_empty());
        assert_eq!(out.commit.sent, vec![waiting[0].id]);
        let first = run(&msg, &e, None, &[]);
        let second = reply("1", 2, vec![], true);
        let out = process(input(
            &second,
            &e,
            Some(&first.commit.session),
            &[],
            &[],
            stale(None),
            now,
        ));
        assert!(out.commit.enqueue.is_empty());
    }

    #[test]
    fn an_answered_inventory_sets_the_inventory_clock_to_now() {
        let e = enrollment();
        let now = OffsetDateTime::now_utc() - time::Duration::minutes(3);
        let get = command(&e, inventory::inventory_command("Steward"), "inventory");
        let msg = reply("1", 2, vec![st("2", &get.id.wire_id(), "Get", 200)], true);
        let out = process(input(
            &msg,
            &e,
            None,
            std::slice::from_ref(&get),
            &[],
            fresh_inventory(),
            now,
        ));
        let clock = out
            .commit
            .facts
            .iter()
            .find(|f| f.name == facts::INVENTORY_COLLECTED_AT)
            .unwrap();
        assert_eq!(clock.value, rfc3339(now));
        assert_eq!(out.commit.outcomes[0].state, CommandState::Succeeded);
    }

    fn msi_alert(cmd_id: &str, source: &str, result: &str) -> Sc {
        msi_alert_as(ALERT_GENERIC, cmd_id, source, result)
    }

    fn msi_alert_as(code: u16, cmd_id: &str, source: &str, result: &str) -> Sc {
        Sc::Alert(Alert {
            cmd_id: cmd_id.into(),
            data: code.to_string(),
            items: vec![Item {
                source: Some(LocTarget::new(source)),
                meta: Some(Meta {
                    type_: Some(TYPE_MSI_INSTALL.into()),
                    format: Some("int".into()),
                    ..Default::default()
                }),
                data: Some(ItemData::Text(result.into())),
                ..Default::default()
            }],
        })
    }

    #[test]
    fn msi_completions_finish_the_newest_accepted_command_for_the_node() {
        let e = enrollment();
        let node = "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7BX%7D/DownloadInstall";
        let exec = |target: &str| {
            let mut c = command(
                &e,
                OmaDmCommand::single(
                    Verb::Exec,
                    CommandItem {
                        target: target.into(),
                        format: Some("xml".into()),
                        type_: None,
                        data: Some("<MsiInstallJob/>".into()),
                    },
                ),
                "admin",
            );
            c.state = CommandState::Accepted;
            c
        };
        let older = exec(node);
        let other = exec("./Device/Vendor/MSFT/Other");
        let newer = exec(node);
        // Newest first, as the store gives them.
        let awaiting = [newer.clone(), other.clone(), older.clone()];
        let msg = reply(
            "1",
            2,
            vec![
                msi_alert("2", node, "0"),
                msi_alert("3", node, "0x80070005"),
                msi_alert("4", "./Nope", "0"),
            ],
            true,
        );
        let out = process(input(
            &msg,
            &e,
            None,
            &[],
            &awaiting,
            fresh_inventory(),
            OffsetDateTime::now_utc(),
        ));
        assert_eq!(
            out.commit.completions,
            vec![Completion::new(newer.id, 200), Completion::new(older.id, 500)]
        );
        assert_eq!(out.commit.completions[1].state, CommandState::Failed);

        // Accepted and completed in the same message.
        let mut sent = exec(node);
        sent.state = CommandState::Sent;
        let msg = reply(
            "1",
            2,
            vec![st("2", &sent.id.wire_id(), "Exec", 202), msi_alert("3", node, "0")],
            true,
        );
        let out = process(input(
            &msg,
            &e,
            None,
            std::slice::from_ref(&sent),
            std::slice::from_ref(&older),
            fresh_inventory(),
            OffsetDateTime::now_utc(),
        ));
        assert_eq!(out.commit.outcomes[0].state, CommandState::Accepted);
        assert_eq!(out.commit.completions, vec![Completion::new(sent.id, 200)]);
    }

    #[test]
    fn msi_completion_comes_as_1224_and_matches_any_spelling_of_the_node() {
        let e = enrollment();
        let queued = "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7Baaaa-bbbb%7D/DownloadInstall";
        let mut c = command(
            &e,
            OmaDmCommand::single(
                Verb::Exec,
                CommandItem {
                    target: queued.into(),
                    format: Some("xml".into()),
                    type_: None,
                    data: Some("<MsiInstallJob/>".into()),
                },
            ),
            "admin",
        );
        c.state = CommandState::Accepted;
        // The alert Windows sends (EnterpriseDesktopAppManagement CSP "Alert example"): 1224,
        // `./Vendor` spelling, decoded braces, upper-case GUID.
        for source in [
            "./Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/{AAAA-BBBB}/DownloadInstall",
            "./device/vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7BAAAA-BBBB%7D/DownloadInstall",
        ] {
            let msg = reply("1", 2, vec![msi_alert_as(ALERT_CLIENT_EVENT, "2", source, "0")], true);
            let out = process(input(
                &msg,
                &e,
                None,
                &[],
                std::slice::from_ref(&c),
                fresh_inventory(),
                OffsetDateTime::now_utc(),
            ));
            assert_eq!(out.commit.completions, vec![Completion::new(c.id, 200)], "{source}");
        }
        assert_eq!(percent_decode("%7Ba%7d%zz%4"), "{a}%zz%4");
    }

    fn device_gets(n: usize) -> Vec<Sc> {
        (0..n)
            .map(|i| {
                Sc::Get(ItemCommand {
                    cmd_id: format!("g{i}"),
                    meta: None,
                    items: vec![Item::target("./DevDetail/SwV")],
                })
            })
            .collect()
    }

    fn next_message(session_id: &str, msg_id: u32, max: u64) -> SyncMl {
        let alert = Sc::Alert(Alert {
            cmd_id: "2".into(),
            data: ALERT_NEXT_MESSAGE.to_string(),
            items: vec![],
        });
        let mut m = reply(session_id, msg_id, vec![alert], true);
        m.header.meta = Some(Meta {
            max_msg_size: Some(max),
            ..Default::default()
        });
        m
    }

    #[test]
    fn statuses_that_do_not_fit_wait_for_the_next_message_and_commands_after_them() {
        let e = enrollment();
        let queued = vec![command(&e, replace("./Vendor/MSFT/Policy/Config/A/B", "1"), "admin")];
        let mut msg = fixture("04-session1-msg1.request.xml");
        msg.header.meta = Some(Meta {
            max_msg_size: Some(1024),
            ..Default::default()
        });
        msg.body.commands.extend(device_gets(40));
        let first_ids: Vec<String> = msg
            .body
            .commands
            .iter()
            .filter(|c| !matches!(c, Sc::Status(_) | Sc::Results(_)))
            .map(|c| c.cmd_id().to_owned())
            .collect();
        let session = msg.header.session_id.clone();
        let (mut prev, mut cur) = (None, msg);
        let mut seen: Vec<String> = Vec::new();
        for n in 1u32.. {
            assert!(n < 60, "no progress");
            let out = run(&cur, &e, prev.as_ref(), &queued);
            let text = syncml::write(&out.response);
            assert!(text.len() <= 1024, "message {n}: {} bytes", text.len());
            for c in &out.response.body.commands {
                if let Sc::Status(s) = c
                    && s.msg_ref == "1"
                    && s.cmd_ref != "0"
                {
                    seen.push(s.cmd_ref.clone());
                }
            }
            let owed = OmaDmSession::from_record(&out.commit.session).unwrap().pending_statuses;
            if !out.commit.sent.is_empty() {
                assert!(owed.is_empty(), "commands only once every status is out");
                break;
            }
            assert_eq!(out.response.body.final_, owed.is_empty());
            prev = Some(out.commit.session.clone());
            cur = next_message(&session, n + 1, 1024);
        }
        assert_eq!(seen, first_ids, "every status once, in order");
    }

    #[test]
    fn a_message_with_too_many_commands_is_refused_whole() {
        let e = enrollment();
        let queued = vec![command(&e, replace("./Vendor/MSFT/Policy/Config/A/B", "1"), "admin")];
        let mut msg = fixture("04-session1-msg1.request.xml");
        msg.body.commands.extend(device_gets(MAX_DEVICE_COMMANDS));
        let out = run(&msg, &e, None, &queued);
        let codes: Vec<(&str, Option<u16>)> = out
            .response
            .body
            .commands
            .iter()
            .map(|c| match c {
                Sc::Status(s) => (s.cmd_ref.as_str(), s.code()),
                other => (other.name(), None),
            })
            .collect();
        assert_eq!(codes, [("0", Some(413))]);
        assert!(out.response.body.final_ && out.ends_session);
        let c = &out.commit;
        assert!(c.sent.is_empty() && c.outcomes.is_empty() && c.facts.is_empty() && c.enqueue.is_empty());
        assert_eq!(c.session.last_response, syncml::write(&out.response));
        // Below the cap the same message is processed.
        msg.body.commands.truncate(msg.body.commands.len() - 10);
        let out = run(&msg, &e, None, &queued);
        assert!(out.response.body.commands.len() > 1);
    }

    #[test]
    fn a_configured_command_cap_is_the_one_enforced() {
        let e = enrollment();
        let mut msg = fixture("04-session1-msg1.request.xml");
        let own = msg
            .body
            .commands
            .iter()
            .filter(|c| !matches!(c, syncml::Command::Status(_) | syncml::Command::Results(_)))
            .count();
        msg.body.commands.extend(device_gets(100 - own));
        let inventory = InventoryPolicy {
            interval: time::Duration::hours(24),
            collected_at: None,
            command_id: CommandId::new(),
        };
        let now = OffsetDateTime::now_utc();
        let mut at_cap = input(&msg, &e, None, &[], &[], inventory.clone(), now);
        at_cap.max_device_commands = 100;
        assert!(
            process(at_cap).response.body.commands.len() > 1,
            "100 commands under a cap of 100 are processed"
        );
        msg.body.commands.push(Sc::Get(ItemCommand {
            cmd_id: "one-more".into(),
            meta: None,
            items: vec![Item::target("./DevDetail/SwV")],
        }));
        let mut over = input(&msg, &e, None, &[], &[], inventory, now);
        over.max_device_commands = 100;
        let out = process(over);
        assert!(
            matches!(out.response.body.commands.as_slice(), [Sc::Status(s)] if s.cmd_ref == "0" && s.code() == Some(413)),
            "{:?}",
            out.response.body.commands
        );
    }

    #[test]
    fn session_state_has_the_stored_shape() {
        let id: CommandId = "0190a3d2-7b1c-7cc0-8000-000000000001".parse().unwrap();
        let s = OmaDmSession {
            session_id: "7".into(),
            client_msg_id: 2,
            server_msg_id: 3,
            login_status: Some("user".into()),
            md5_nonce: None,
            chunk: Some(Chunk {
                command: id,
                offset: 8192,
            }),
            pending_statuses: Vec::new(),
            package_open: false,
            incoming: Vec::new(),
            held: Vec::new(),
        };
        // Nothing owed: the field is left out, so the stored shape is what it always was.
        let json: serde_json::Value = serde_json::from_str(&s.to_state()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "session_id": "7", "client_msg_id": 2, "server_msg_id": 3, "login_status": "user",
                "md5_nonce": null, "chunk": {"command": "0190a3d2-7b1c-7cc0-8000-000000000001", "offset": 8192}
            })
        );
        let record = SessionRecord {
            state: s.to_state(),
            ..Default::default()
        };
        assert_eq!(OmaDmSession::from_record(&record), Some(s));
        assert_eq!(OmaDmSession::from_record(&SessionRecord::default()), None);
    }

    #[test]
    fn repeats_are_replayed_and_challenges_never_are() {
        let e = enrollment();
        let msg = fixture("04-session1-msg1.request.xml");
        let out = run(&msg, &e, None, &[]);
        let record = out.commit.session.clone();
        assert_eq!(replay(Some(&record), &msg, "h"), Some(record.last_response.as_str()));
        assert_eq!(replay(Some(&record), &msg, "other"), None);
        assert_eq!(replay(Some(&record), &reply("1", 2, vec![], true), "h"), None);
        assert_eq!(replay(None, &msg, "h"), None);

        let challenged = challenged(Some(&record), "bm9uY2U=".into());
        assert_eq!(challenged.last_request_hash, "");
        assert_eq!(challenged.key, record.key);
        let state = OmaDmSession::from_record(&challenged).unwrap();
        assert_eq!(state.md5_nonce.as_deref(), Some("bm9uY2U="));
        assert_eq!(state.login_status.as_deref(), Some("user"));
        assert_eq!(replay(Some(&challenged), &msg, ""), None);
        let fresh = OmaDmSession::from_record(&super::challenged(None, "x".into())).unwrap();
        assert_eq!(fresh.md5_nonce.as_deref(), Some("x"));
    }

    #[test]
    fn certificate_and_expiry_sweeps_pass_through() {
        let e = enrollment();
        let msg = fixture("04-session1-msg1.request.xml");
        let mut i = input(&msg, &e, None, &[], &[], fresh_inventory(), OffsetDateTime::now_utc());
        i.retire_previous_certificate = true;
        i.expire_overdue = true;
        let out = process(i);
        assert!(out.commit.retire_previous_certificate && out.commit.expire_overdue);
        assert!(!run(&msg, &e, None, &[]).commit.retire_previous_certificate);
    }
}
