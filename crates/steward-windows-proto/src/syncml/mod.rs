//! OMA-DM 1.2 SyncML as Windows speaks it (MS-MDM): a namespace-aware parser and a compact,
//! deterministic writer for the management-session messages exchanged after enrollment.
//!
//! Coverage, by specification section:
//! - MS-MDM §2.2 message syntax: §2.2.3 common elements (CmdID, Final, LocURI, MsgID, SessionID,
//!   Source, Target, VerDTD, VerProto, …), §2.2.4.1 SyncML, §2.2.4.2 SyncHdr, §2.2.4.3 SyncBody
//!   (including the `xmlns:msft` extension namespace), §2.2.5 data description (Data, Item, Meta
//!   §2.2.5.3 and its MetInf children), §2.2.6.1 Status, §2.2.7 commands (Add §2.2.7.1, Alert
//!   §2.2.7.2, Atomic §2.2.7.3, Delete §2.2.7.4, Exec §2.2.7.5, Get §2.2.7.6, Replace §2.2.7.7,
//!   Results §2.2.7.8). Sequence follows Learn "OMA DM protocol support" (oma-dm-protocol-support).
//! - OMA-TS-DM_RepPro-V1_2 (SyncML DM Representation Protocol): §5 (DTD element order, which
//!   MS-MDM §2.2 says MUST be respected), §6.1 common use elements, §6.2 message container
//!   elements, §6.3 data description elements (Data, Item, Meta), §6.4 Status, §6.5 protocol
//!   commands; MetInf per OMA-TS-SyncML_MetaInfo-V1_2.
//! - OMA-TS-DM_Protocol-V1_2: large objects (MoreData, Meta Size, statuses 213/424, alert 1225),
//!   alert codes and response status codes.
//!
//! Parsing goes through [`crate::xml::parse`], so DTDs are refused and node count and depth are
//! capped before any SyncML logic runs. Elements are matched by namespace URI and local name; the
//! SyncML namespace `SYNCML:SYNCML1.2` is compared ignoring ASCII case, and MetInf children are
//! accepted in `syncml:metinf`, in the SyncML namespace, or in no namespace, because clients differ.
//!
//! Size limits: this module does not bound the size of a single value (a 10 MB `<Data>` parses).
//! The HTTP layer MUST apply a request body limit before calling [`parse`] / [`parse_bytes`]; the
//! only bounds here are the caps of [`crate::xml::XmlLimits`] (elements, depth, attributes, names,
//! namespace declarations, total text), checked before any tree is built.

mod parse;
#[cfg(test)]
mod tests;
mod write;

pub use parse::{MAX_SESSION_ID_LEN, is_well_formed_fragment, parse, parse_bytes, parse_bytes_with, parse_with};
pub use write::{estimated_size, write, write_into};

use crate::xml::XmlError;
use thiserror::Error;

// ---- Namespaces (MS-MDM §2.2.4.1 SyncML, §2.2.4.3 SyncBody, §2.2.5.3 Meta) ----

/// SyncML 1.2 namespace as Windows writes it (the URI is compared ignoring ASCII case on input).
pub const NS_SYNCML: &str = "SYNCML:SYNCML1.2";
/// SyncML Meta Information namespace (OMA-TS-SyncML_MetaInfo-V1_2 §5) used by `Meta` children.
pub const NS_METINF: &str = "syncml:metinf";
/// Microsoft extension namespace declared as `xmlns:msft` on SyncBody (MS-MDM §2.2.4.3).
pub const NS_MSFT: &str = "http://schemas.microsoft.com/MobileDevice/MDM";

/// `VerDTD` value for SyncML 1.2 (MS-MDM §2.2.3.13).
pub const VER_DTD: &str = "1.2";
/// `VerProto` value for OMA-DM 1.2 (MS-MDM §2.2.3.14).
pub const VER_PROTO: &str = "DM/1.2";

// ---- Alert codes (MS-MDM §2.2.7.2 Alert; OMA-TS-DM_Protocol-V1_2 alert types) ----

/// Server-initiated management session (after a WNS push).
pub const ALERT_SERVER_INITIATED: u16 = 1200;
/// Client-initiated management session.
pub const ALERT_CLIENT_INITIATED: u16 = 1201;
/// Next message: asks the peer for the next message of a multi-message package.
pub const ALERT_NEXT_MESSAGE: u16 = 1222;
/// Session abort.
pub const ALERT_SESSION_ABORT: u16 = 1223;
/// Client event (Windows: LoginStatus, AADUserToken).
pub const ALERT_CLIENT_EVENT: u16 = 1224;
/// No end of data: the last chunk of a large object never arrived.
pub const ALERT_NO_END_OF_DATA: u16 = 1225;
/// Generic alert (Windows: unenroll request, asynchronous CSP completion).
pub const ALERT_GENERIC: u16 = 1226;

// ---- Status codes (MS-MDM §2.2.6.1 Status; OMA-TS-DM_Protocol-V1_2 response status codes) ----

/// OK.
pub const STATUS_OK: u16 = 200;
/// Accepted for processing (asynchronous, e.g. Personalization or MSI installs).
pub const STATUS_ACCEPTED: u16 = 202;
/// Authentication accepted (SyncHdr status).
pub const STATUS_AUTHENTICATION_ACCEPTED: u16 = 212;
/// Chunked item accepted and buffered (large objects, OMA-TS-DM_Protocol-V1_2 large object handling).
pub const STATUS_CHUNKED_ITEM_ACCEPTED: u16 = 213;
/// Operation cancelled.
pub const STATUS_OPERATION_CANCELLED: u16 = 214;
/// Not executed (user declined, or an earlier command of the Atomic failed).
pub const STATUS_NOT_EXECUTED: u16 = 215;
/// Atomic roll back OK.
pub const STATUS_ATOMIC_ROLLBACK_OK: u16 = 216;
/// Bad request.
pub const STATUS_BAD_REQUEST: u16 = 400;
/// Invalid credentials.
pub const STATUS_INVALID_CREDENTIALS: u16 = 401;
/// Forbidden.
pub const STATUS_FORBIDDEN: u16 = 403;
/// Not found.
pub const STATUS_NOT_FOUND: u16 = 404;
/// Command not allowed.
pub const STATUS_COMMAND_NOT_ALLOWED: u16 = 405;
/// Optional feature not supported.
pub const STATUS_OPTIONAL_FEATURE_NOT_SUPPORTED: u16 = 406;
/// Missing credentials.
pub const STATUS_MISSING_CREDENTIALS: u16 = 407;
/// Unsupported media type or format.
pub const STATUS_UNSUPPORTED_MEDIA_TYPE: u16 = 415;
/// Already exists.
pub const STATUS_ALREADY_EXISTS: u16 = 418;
/// Size mismatch (large object total differs from the announced `Meta/Size`).
pub const STATUS_SIZE_MISMATCH: u16 = 424;
/// Permission denied.
pub const STATUS_PERMISSION_DENIED: u16 = 425;
/// Command failed.
pub const STATUS_COMMAND_FAILED: u16 = 500;
/// Atomic failed (MS-MDM also returns it for a nested Atomic).
pub const STATUS_ATOMIC_FAILED: u16 = 507;
/// Atomic roll back failed.
pub const STATUS_ATOMIC_ROLLBACK_FAILED: u16 = 516;

// ---- Meta Type URNs used by Windows in Alert items (MS-MDM §2.2.7.2, Learn oma-dm-protocol-support) ----

/// Alert 1224 item type carrying the login status (`user`, `others`, `none`).
pub const TYPE_LOGIN_STATUS: &str = "com.microsoft/MDM/LoginStatus";
/// Alert 1226 item type of a user-initiated unenrollment.
pub const TYPE_UNENROLL_USER_REQUEST: &str = "com.microsoft:mdm.unenrollment.userrequest";
/// Alert 1224 item type carrying an Entra (AAD) user token.
pub const TYPE_AAD_USER_TOKEN: &str = "com.microsoft/MDM/AADUserToken";

// ---- Types (OMA-TS-DM_RepPro §5–6) ----

/// One SyncML message: `<SyncML><SyncHdr/><SyncBody/></SyncML>` (MS-MDM §2.2.4.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncMl {
    pub header: SyncHdr,
    pub body: SyncBody,
}

/// Message header (MS-MDM §2.2.4.2, OMA-TS-DM_RepPro §6.2 SyncHdr).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncHdr {
    /// `VerDTD`, `1.2` for everything Windows sends ([`VER_DTD`]).
    pub ver_dtd: String,
    /// `VerProto`, `DM/1.2` ([`VER_PROTO`]).
    pub ver_proto: String,
    /// Client-chosen session id, opaque: 1–16 decimal or hex digits (Windows writes a decimal
    /// counter per Learn "OMA DM protocol support"; MS-MDM §2.2.3.8 shows hex).
    pub session_id: String,
    /// Message id, monotonically increasing per sender from 1.
    pub msg_id: u32,
    pub target: Option<LocTarget>,
    pub source: Option<LocTarget>,
    pub cred: Option<Cred>,
    pub meta: Option<Meta>,
}

impl SyncHdr {
    /// A header with `VerDTD 1.2`, `VerProto DM/1.2`, the given session and message ids, and the
    /// target/source LocURIs (MS-MDM §2.2.4.2: Target and Source are mandatory in SyncHdr).
    pub fn new(session_id: impl Into<String>, msg_id: u32, target: &str, source: &str) -> Self {
        Self {
            ver_dtd: VER_DTD.to_owned(),
            ver_proto: VER_PROTO.to_owned(),
            session_id: session_id.into(),
            msg_id,
            target: Some(LocTarget::new(target)),
            source: Some(LocTarget::new(source)),
            cred: None,
            meta: None,
        }
    }
}

/// `Target` or `Source`: `LocURI` plus optional `LocName` (MS-MDM §2.2.3.9/§2.2.3.11, OMA-TS-DM_RepPro §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocTarget {
    pub loc_uri: String,
    pub loc_name: Option<String>,
}

impl LocTarget {
    pub fn new(loc_uri: impl Into<String>) -> Self {
        Self {
            loc_uri: loc_uri.into(),
            loc_name: None,
        }
    }
}

/// Credentials in SyncHdr (OMA-TS-DM_RepPro §6.1 Cred): Meta carries the scheme (`syncml:auth-md5`, …).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cred {
    pub meta: Option<Meta>,
    pub data: String,
}

/// MetInf values (MS-MDM §2.2.5.3 Meta; OMA-TS-SyncML_MetaInfo-V1_2). Unknown MetInf children
/// (EMI, Mem, Version, …) are ignored on input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// `Format`: `int`, `chr`, `bool`, `b64`, `xml`, `node`, `bin`, …
    pub format: Option<String>,
    /// `Type`: a MIME type or a Windows URN such as [`TYPE_LOGIN_STATUS`].
    pub type_: Option<String>,
    pub max_msg_size: Option<u64>,
    pub max_obj_size: Option<u64>,
    /// Total size of a large object, on its first chunk (OMA-TS-DM_Protocol-V1_2 large object handling).
    pub size: Option<u64>,
    pub next_nonce: Option<String>,
    /// `Mark`, e.g. `informational` / `critical` on generic alerts.
    pub mark: Option<String>,
}

impl Meta {
    /// A Meta with only `Format`.
    pub fn format(format: impl Into<String>) -> Self {
        Self {
            format: Some(format.into()),
            ..Self::default()
        }
    }
}

/// One `Item` (MS-MDM §2.2.5, OMA-TS-DM_RepPro §6.3 Item): Target, Source, Meta, Data, MoreData.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Item {
    pub source: Option<LocTarget>,
    pub target: Option<LocTarget>,
    pub meta: Option<Meta>,
    pub data: Option<ItemData>,
    /// `<MoreData/>`: this item is a non-final chunk of a large object (OMA-TS-DM_Protocol-V1_2 large object handling).
    pub more_data: bool,
}

impl Item {
    /// An item addressing `loc_uri` as its Target (what the server sends in Get/Add/Replace/…).
    pub fn target(loc_uri: impl Into<String>) -> Self {
        Self {
            target: Some(LocTarget::new(loc_uri)),
            ..Self::default()
        }
    }

    /// The Target LocURI, if any.
    pub fn target_uri(&self) -> Option<&str> {
        self.target.as_ref().map(|t| t.loc_uri.as_str())
    }

    /// The Source LocURI, if any.
    pub fn source_uri(&self) -> Option<&str> {
        self.source.as_ref().map(|t| t.loc_uri.as_str())
    }
}

/// Contents of `Item/Data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemData {
    /// Character data. Always escaped on write, so a profile body here can never break the
    /// message structure (Fleet's "stuck Pending" profiles were unescaped XML in `<Data>`).
    Text(String),
    /// A raw XML fragment written verbatim inside `<Data>` (only meaningful with `Format xml`).
    /// On input, a `<Data>` with element children is captured as its inner XML text (trimmed of
    /// surrounding XML whitespace), byte for byte as the peer sent it. The writer does not check
    /// it: callers MUST validate it with [`is_well_formed_fragment`] first.
    Xml(String),
}

impl ItemData {
    /// The text or the raw fragment.
    pub fn as_str(&self) -> &str {
        match self {
            ItemData::Text(s) | ItemData::Xml(s) => s,
        }
    }
}

/// `Status` (MS-MDM §2.2.6.1, OMA-TS-DM_RepPro §6.4 Status).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub cmd_id: String,
    /// MsgID of the message holding the command this status answers.
    pub msg_ref: String,
    /// CmdID of the answered command; `0` for the SyncHdr.
    pub cmd_ref: String,
    /// Element name of the answered command (`SyncHdr`, `Replace`, …).
    pub cmd: String,
    pub target_ref: Vec<String>,
    pub source_ref: Vec<String>,
    /// `Chal/Meta`: authentication challenge on a 401/407 SyncHdr status.
    pub chal: Option<Meta>,
    /// The status code, e.g. `200`.
    pub data: String,
    pub items: Vec<Item>,
}

impl Status {
    /// The status code as a number, if `data` is one.
    pub fn code(&self) -> Option<u16> {
        self.data.parse().ok()
    }
}

/// `Results` answering a Get (MS-MDM §2.2.7.8, OMA-TS-DM_RepPro §6.5 Results).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Results {
    pub cmd_id: String,
    pub msg_ref: Option<String>,
    /// CmdID of the Get.
    pub cmd_ref: String,
    pub meta: Option<Meta>,
    pub items: Vec<Item>,
}

/// `Alert` (MS-MDM §2.2.7.2, OMA-TS-DM_RepPro §6.5 Alert).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Alert {
    pub cmd_id: String,
    /// The alert code, e.g. `1201`.
    pub data: String,
    pub items: Vec<Item>,
}

impl Alert {
    /// The alert code as a number, if `data` is one.
    pub fn code(&self) -> Option<u16> {
        self.data.parse().ok()
    }
}

/// Get, Add, Replace, Delete or Exec: CmdID, optional Meta, one or more Items
/// (MS-MDM §2.2.7.1/.4/.5/.6/.7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ItemCommand {
    pub cmd_id: String,
    pub meta: Option<Meta>,
    pub items: Vec<Item>,
}

/// Atomic or Sequence (MS-MDM §2.2.7.3; OMA-TS-DM_RepPro §6.5 Atomic/Sequence): CmdID, optional Meta, nested commands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    pub cmd_id: String,
    pub meta: Option<Meta>,
    pub commands: Vec<Command>,
}

/// A SyncBody command the reader could not take, kept so that it is answered on its own with a
/// Status instead of failing the whole message (interop review M-10; Learn "OMA DM protocol
/// support": Windows itself answers a bad element with "status code 400… for that element").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub cmd_id: String,
    /// The element name as used in `Status/Cmd`: one of the SyncML 1.2 commands
    /// (OMA-TS-DM_RepPro §6.5), or `Unknown` for an element that is none of them.
    pub name: &'static str,
    /// The Status it gets: 406 (optional feature not supported) for a command the management
    /// session does not implement, 400 (bad request) for a malformed one.
    pub code: u16,
    /// Why, for the log.
    pub reason: String,
}

/// Every command element of SyncML 1.2 (OMA-TS-DM_RepPro §6.5 and the SyncML DTD).
pub const SYNCML_COMMANDS: [&str; 15] = [
    "Add", "Alert", "Atomic", "Copy", "Delete", "Exec", "Get", "Map", "Put", "Replace", "Results", "Search",
    "Sequence", "Status", "Sync",
];

/// One SyncBody command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status(Status),
    Results(Results),
    Alert(Alert),
    Get(ItemCommand),
    Add(ItemCommand),
    Replace(ItemCommand),
    Delete(ItemCommand),
    Exec(ItemCommand),
    Atomic(Container),
    Sequence(Container),
    /// Unknown or malformed, answered with its own Status ([`Refused`]). Only the reader makes
    /// these; the writer writes it as an element holding just its CmdID.
    Refused(Refused),
}

impl Command {
    /// The element name, as used in `Status/Cmd`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status(_) => "Status",
            Command::Results(_) => "Results",
            Command::Alert(_) => "Alert",
            Command::Get(_) => "Get",
            Command::Add(_) => "Add",
            Command::Replace(_) => "Replace",
            Command::Delete(_) => "Delete",
            Command::Exec(_) => "Exec",
            Command::Atomic(_) => "Atomic",
            Command::Sequence(_) => "Sequence",
            Command::Refused(r) => r.name,
        }
    }

    /// The command's CmdID.
    pub fn cmd_id(&self) -> &str {
        match self {
            Command::Status(s) => &s.cmd_id,
            Command::Results(r) => &r.cmd_id,
            Command::Alert(a) => &a.cmd_id,
            Command::Get(c) | Command::Add(c) | Command::Replace(c) | Command::Delete(c) | Command::Exec(c) => {
                &c.cmd_id
            }
            Command::Atomic(c) | Command::Sequence(c) => &c.cmd_id,
            Command::Refused(r) => &r.cmd_id,
        }
    }
}

/// Message body (MS-MDM §2.2.4.3): commands in order, then `<Final/>` when this is the last
/// message of the package (OMA-TS-DM_Protocol-V1_2 large object handling: omitted when more messages follow).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncBody {
    pub commands: Vec<Command>,
    pub final_: bool,
}

/// Why a message was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SyncMlError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("message is not valid UTF-8 (first invalid byte at offset {0})")]
    NotUtf8(usize),
    #[error("root element is not SyncML in the SYNCML:SYNCML1.2 namespace")]
    NotSyncMl,
    #[error("required element {0} is missing or empty")]
    Missing(&'static str),
    #[error("invalid SyncML: {0}")]
    Invalid(String),
    #[error("Atomic nested inside Atomic is not allowed (MS-MDM §2.2.7.3)")]
    NestedAtomic,
    #[error("unknown or unsupported SyncBody command <{0}>")]
    UnknownCommand(String),
}
