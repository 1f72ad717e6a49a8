//! The management half of a simulated Windows device: the OMA-DM 1.2 client loop (MS-MDM §3.1
//! client details; Learn "OMA DM protocol support"), answering server commands from a [`CspTree`].
//!
//! One session, as Windows runs it:
//! 1. The device POSTs message 1 (MS-MDM §3.1.5.1): Alert 1201 (scheduled) or 1200 (after a push),
//!    Alert 1224 LoginStatus, pending device alerts (1226 generic, 1224 MSI completion), a Replace of `./DevInfo/*`, Final.
//!    CmdIDs start at 2 in message 1, exactly as the real capture does (fleet POC fixture 04/05).
//! 2. For each server message the device answers with a Status for the server's SyncHdr, a Status
//!    per server command (Results for Gets) and Final. Package rules (OMA-TS-DM_Protocol-V1_2
//!    §8.2 multiple messages in package):
//!    - a server message without Final (the server's package goes on) gets Alert 1222 "next
//!      message" and no Final: "The Final element MUST NOT be supplied by the client to close its
//!      package until the server has sent its Final element";
//!    - a Results item larger than [`ManagedDevice::upload_chunk_bytes`] goes in pieces, one per
//!      message, each but the last with MoreData and the first with Meta/Size (OMA large object
//!      handling); our message then has no Final, the server MUST answer the piece 213 with
//!      Alert 1222 (checked: a missing 213 is a protocol error), and our Final comes with the
//!      last piece.
//! 3. A server message that carries no command beyond Status/Results, with Final, ends the session
//!    and the device does not reply (MS-MDM §3.1.5.1: a message holding only a successful SyncHdr
//!    status MUST NOT be sent).
//!
//! Containers (OMA-TS-DM_RepPro §6.6.2 Atomic, §6.6.14 Sequence):
//! - Atomic: children run in order and stop at the first failure (status ≥ 300); the tree is then
//!   restored from a snapshot, the Atomic gets 507, children that had succeeded 216 (rolled back),
//!   the failed child its own code and children after it 215 (not executed). Exec side effects of a
//!   rolled-back Atomic are discarded.
//! - Sequence: children run in order, each with its own status; a failed child stops the rest,
//!   which get 215 (not executed), as OMA-DM requires that a Sequence's commands be processed in
//!   order and a later command may depend on an earlier one. The Sequence itself gets 200.
//!
//! Item statuses: one Status per command with every item's TargetRef when all items share a code;
//! otherwise one Status per item (OMA-TS-DM_RepPro §6.4: a Status may reference several items
//! only when they share the code).
//!
//! Large objects (OMA-TS-DM_Protocol-V1_2 §6.7): an Add/Replace item with `<MoreData/>` is
//! buffered and answered 213; the last chunk completes it, checked against the first chunk's
//! `Meta/Size` (424 on mismatch). A Final server message while a chunked item is unfinished gets
//! Alert 1225 (no end of data) and the buffer is discarded.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use steward_pki::DeviceKey;
use steward_windows_proto::syncml::{
    self, ALERT_CLIENT_EVENT, ALERT_CLIENT_INITIATED, ALERT_GENERIC, ALERT_NEXT_MESSAGE, ALERT_NO_END_OF_DATA,
    ALERT_SERVER_INITIATED, ALERT_SESSION_ABORT, Alert, Command, Container, Cred, Item, ItemCommand, ItemData,
    LocTarget, Meta, Results, STATUS_ATOMIC_FAILED, STATUS_ATOMIC_ROLLBACK_OK, STATUS_BAD_REQUEST,
    STATUS_CHUNKED_ITEM_ACCEPTED, STATUS_NOT_EXECUTED, STATUS_OK, STATUS_OPTIONAL_FEATURE_NOT_SUPPORTED,
    STATUS_SIZE_MISMATCH, Status, SyncHdr, SyncMl, SyncMlError, TYPE_LOGIN_STATUS, TYPE_UNENROLL_USER_REQUEST,
};

use crate::csp::{CspTree, DeviceProfile, ExecEffect};
use crate::enroll::EnrolledDevice;
use crate::https::{HttpsClient, HttpsError};

/// `Content-Type` / `Accept` of OMA-DM over HTTP in XML form (MS-MDM §2.1).
pub const SYNCML_CONTENT_TYPE: &str = "application/vnd.syncml.dm+xml";
/// The User-Agent of Windows' OMA-DM client (reference §2.4 request headers).
pub const USER_AGENT: &str = "MSFT OMA DM Client/1.2.0.1";
/// Generic alert type of an MSI install completion (Learn EnterpriseDesktopAppManagement CSP,
/// "Alert example").
pub const TYPE_MSI_INSTALL: &str = "Reversed-Domain-Name:com.microsoft.mdm.win32csp_install";
/// Results Data above this is sent in pieces: Windows' own MaxMsgSize default (512 KiB, the
/// figure Intune advertises too) less room for the rest of the message.
pub const DEFAULT_UPLOAD_CHUNK_BYTES: usize = 256 * 1024;
/// `syncml:auth-md5` (OMA-TS-DM_Security-V1_2 §5.3.2).
pub const AUTH_MD5: &str = "syncml:auth-md5";

/// What started the session (MS-MDM §2.2.7.2 alert codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTrigger {
    /// Poll schedule or user sync: Alert 1201.
    Scheduled,
    /// After a WNS push: Alert 1200.
    ServerInitiated,
}

impl SessionTrigger {
    pub fn alert_code(self) -> u16 {
        match self {
            SessionTrigger::Scheduled => ALERT_CLIENT_INITIATED,
            SessionTrigger::ServerInitiated => ALERT_SERVER_INITIATED,
        }
    }
}

/// The Alert 1224 `com.microsoft/MDM/LoginStatus` value (Learn oma-dm-protocol-support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LoginStatus {
    /// The enrolled user is signed in: `./User/…` commands work.
    User,
    /// Another user is signed in.
    Others,
    /// Nobody is signed in.
    None,
}

impl LoginStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginStatus::User => "user",
            LoginStatus::Others => "others",
            LoginStatus::None => "none",
        }
    }

    /// Parses `user` / `others` / `none`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(LoginStatus::User),
            "others" => Some(LoginStatus::Others),
            "none" => Some(LoginStatus::None),
            _ => None,
        }
    }
}

/// A device alert (1226 generic, or the 1224 an MSI completion uses) waiting to be sent in the
/// next session's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericAlert {
    /// The Alert code: 1226 for generic alerts, 1224 for an MSI install completion.
    pub code: u16,
    /// `Item/Source/LocURI` (the CSP node the alert is about), if any.
    pub source: Option<String>,
    /// `Meta/Type`.
    pub type_: String,
    pub format: Option<String>,
    pub mark: Option<String>,
    pub data: String,
}

impl GenericAlert {
    /// The user-requested unenrollment (fleet POC fixture 05: Type
    /// `com.microsoft:mdm.unenrollment.userrequest`, Format int, Data 1).
    pub fn unenroll() -> Self {
        Self {
            code: ALERT_GENERIC,
            source: None,
            type_: TYPE_UNENROLL_USER_REQUEST.to_owned(),
            format: Some("int".to_owned()),
            mark: None,
            data: "1".to_owned(),
        }
    }

    /// MSI install completion as Windows sends it (Learn EnterpriseDesktopAppManagement CSP
    /// "Alert example": `<Alert><Data>1224</Data>`, not 1226; Source = the DownloadInstall node,
    /// Format int, Mark informational, Data = the install result, 0 = S_OK; the node's `Status`
    /// reads 70 = installed). Interop review M-4.
    pub fn msi_install(loc_uri: &str) -> Self {
        Self {
            code: ALERT_CLIENT_EVENT,
            source: Some(loc_uri.to_owned()),
            type_: TYPE_MSI_INSTALL.to_owned(),
            format: Some("int".to_owned()),
            mark: Some("informational".to_owned()),
            data: "0".to_owned(),
        }
    }

    fn to_alert(&self, cmd_id: String) -> Alert {
        Alert {
            cmd_id,
            data: self.code.to_string(),
            items: vec![Item {
                source: self.source.as_deref().map(LocTarget::new),
                target: None,
                meta: Some(Meta {
                    format: self.format.clone(),
                    type_: Some(self.type_.clone()),
                    mark: self.mark.clone(),
                    ..Meta::default()
                }),
                data: Some(ItemData::Text(self.data.clone())),
                more_data: false,
            }],
        }
    }

    fn is_unenroll(&self) -> bool {
        self.type_ == TYPE_UNENROLL_USER_REQUEST
    }
}

/// `syncml:auth-md5` application credentials (DMAcc AppAuth CLCRED).
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Credentials {
    pub name: String,
    pub secret: String,
}

impl std::fmt::Debug for Md5Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Md5Credentials")
            .field("name", &self.name)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// The `syncml:auth-md5` digest (OMA-TS-DM_Security-V1_2 §5.3.2, as Fleet verifies it):
/// `b64(md5(b64(md5(name ":" secret)) ":" nonce))`, where `nonce` is the server's NextNonce
/// base64-decoded to bytes (a NextNonce that is not base64 is used as is).
pub fn md5_digest(name: &str, secret: &str, next_nonce_b64: &str) -> String {
    let inner = STANDARD.encode(Md5::digest(format!("{name}:{secret}").as_bytes()));
    let nonce = STANDARD
        .decode(next_nonce_b64.trim())
        .unwrap_or_else(|_| next_nonce_b64.as_bytes().to_vec());
    let mut h = Md5::new();
    h.update(inner.as_bytes());
    h.update(b":");
    h.update(&nonce);
    STANDARD.encode(h.finalize())
}

/// Test hooks for the server's at-least-once and idempotency tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// After POSTing our message number N (1-based), throw the server's answer away and stop, as if
    /// the connection dropped: the server has our statuses, we never see its reply.
    pub drop_response_after_send: Option<u32>,
    /// POST our message number N twice with the identical body; the first answer is discarded.
    pub duplicate_post: Option<u32>,
    /// Upper bound on messages we send in one session.
    pub max_messages: u32,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            drop_response_after_send: None,
            duplicate_post: None,
            max_messages: 64,
        }
    }
}

/// One server command as the device saw it, with the status it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedCommand {
    /// Element name: `Get`, `Replace`, `Atomic`, `Alert`, …
    pub name: String,
    pub cmd_id: String,
    /// The item's Target LocURI (item commands; one entry per item).
    pub target: Option<String>,
    pub status: u16,
}

/// A Status the server returned for one of our commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    pub msg_ref: String,
    pub cmd_ref: String,
    pub cmd: String,
    pub code: String,
}

/// What happened in one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    pub session_id: String,
    /// Messages the device sent (a re-POST of the same message is not counted twice).
    pub messages: u32,
    pub received: Vec<ReceivedCommand>,
    pub server_statuses: Vec<ServerStatus>,
    /// The server ended the session normally (MS-MDM end of session).
    pub ended: bool,
    /// The session stopped because [`SessionOptions::drop_response_after_send`] discarded a reply.
    pub response_lost: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the device has been wiped; it no longer opens management sessions")]
    DeviceWiped,
    #[error("the device is unenrolled")]
    Unenrolled,
    #[error("no management session is open")]
    NoSession,
    #[error(transparent)]
    Https(#[from] HttpsError),
    #[error("server answered HTTP {status}: {body}")]
    HttpStatus { status: u16, body: String },
    #[error("server message is not valid SyncML: {0}")]
    Parse(#[from] SyncMlError),
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    #[error("server demands credentials (SyncHdr status {code}) and the device has none")]
    AuthRequired { code: u16 },
    #[error("server refused our credentials again after a challenge (SyncHdr status {code})")]
    AuthFailed { code: u16 },
    #[error("server did not end the session within {0} messages")]
    TooManyMessages(u32),
}

/// The device's TLS identity (MS-WSTEP certificate and its key).
pub struct DeviceIdentity {
    pub cert_der: Vec<u8>,
    /// Intermediate certificates sent after the leaf.
    pub chain_der: Vec<Vec<u8>>,
    pub key: DeviceKey,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("thumbprint", &steward_pki::sha1_thumbprint(&self.cert_der))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct PendingLo {
    target: String,
    size: Option<u64>,
    data: String,
}

/// Per-session state.
#[derive(Debug)]
struct SessionState {
    session_id: String,
    next_msg_id: u32,
    /// Our last message, resent with credentials after a 401/407 challenge.
    last_sent: SyncMl,
    challenged: bool,
    /// Generic alerts carried in message 1.
    sent_alerts: Vec<GenericAlert>,
    received: Vec<ReceivedCommand>,
    server_statuses: Vec<ServerStatus>,
    pending_lo: Option<PendingLo>,
    /// Alerts raised during this session (MSI completions): sent in the next session.
    new_alerts: Vec<GenericAlert>,
    ended: bool,
    /// What our package still has to send (with the server MsgID each answers): the pieces of a
    /// large Results after the one just sent, and everything after them.
    outbox: Vec<(String, Emit)>,
    /// Our last message left our package open (no Final) because the outbox was not empty.
    package_open: bool,
    /// CmdID of the Results piece we last sent: the server MUST answer it 213 (OMA-DM large
    /// object handling).
    awaiting_213: Option<String>,
}

/// What processing a command produces before CmdIDs are assigned.
#[derive(Debug, Clone)]
enum Emit {
    Status {
        cmd_ref: String,
        cmd: &'static str,
        targets: Vec<String>,
        code: u16,
    },
    Results {
        cmd_ref: String,
        items: Vec<Item>,
    },
}

/// A simulated, enrolled Windows device that runs OMA-DM sessions.
#[derive(Debug)]
pub struct ManagedDevice {
    pub profile: DeviceProfile,
    pub tree: CspTree,
    pub identity: Option<DeviceIdentity>,
    /// The w7 ADDR (without the query string Windows appends).
    pub management_url: String,
    pub login_status: LoginStatus,
    /// Explicit `syncml:auth-md5` credentials; when None, CLCRED provisioned in the tree's DMAcc
    /// is used.
    pub md5: Option<Md5Credentials>,
    /// The server's last NextNonce (b64), used for the next Cred.
    pub next_nonce: Option<String>,
    /// `(RemoteWipe node name, when)` once a wipe was executed.
    pub wiped: Option<(String, SystemTime)>,
    pub reboot_count: u32,
    pub lock_count: u32,
    pub unenrolled: bool,
    /// Results Data longer than this many bytes goes to the server in pieces (OMA-DM large object
    /// handling; Learn "OMA DM protocol support": "In Windows 10, client support for uploading
    /// large objects to the server was added"). Defaults to [`DEFAULT_UPLOAD_CHUNK_BYTES`].
    pub upload_chunk_bytes: usize,
    /// MaxMsgSize advertised in our SyncHdr Meta (OMA-TS-SyncML_MetaInfo: the largest message we
    /// accept). Windows omits it ("Meta XML tag in SyncHdr is ignored by the device", Learn "OMA
    /// DM protocol support"), so None by default; tests set it to make the server chunk.
    pub max_msg_size: Option<u64>,
    session_counter: u32,
    /// Scheduled (Alert 1201) sessions started since enrollment: the position in the DMClient poll
    /// schedule. Kept apart from `session_counter` because pushes (1200) do not move the schedule.
    scheduled_polls: u32,
    pending_alerts: Vec<GenericAlert>,
    session: Option<SessionState>,
}

impl ManagedDevice {
    /// A local administrator sets a node's value on the device ([`CspTree::set_local`]): what a
    /// profile's verification then reads back as drift.
    pub fn set_local(&mut self, loc_uri: &str, value: &str) -> Result<(), crate::csp::CspError> {
        self.tree.set_local(loc_uri, value)
    }

    /// A local administrator deletes a node on the device ([`CspTree::remove_local`]).
    pub fn delete_local(&mut self, loc_uri: &str) -> bool {
        self.tree.remove_local(loc_uri)
    }

    /// A device with a fresh Windows 11 tree and no TLS identity (unit tests, custom setups).
    pub fn new(profile: DeviceProfile, management_url: impl Into<String>) -> Self {
        Self {
            tree: CspTree::windows_11(&profile),
            profile,
            identity: None,
            management_url: management_url.into(),
            login_status: LoginStatus::User,
            md5: None,
            next_nonce: None,
            wiped: None,
            reboot_count: 0,
            lock_count: 0,
            unenrolled: false,
            upload_chunk_bytes: DEFAULT_UPLOAD_CHUNK_BYTES,
            max_msg_size: None,
            session_counter: 0,
            scheduled_polls: 0,
            pending_alerts: Vec::new(),
            session: None,
        }
    }

    /// The device an enrollment produced: its identity, the management URL and the DMClient values
    /// of the provisioning document (ProviderID, EntDMID, EntDeviceName, Poll schedule).
    pub fn from_enrolled(enrolled: EnrolledDevice, mut profile: DeviceProfile) -> Self {
        let doc = &enrolled.provisioning_doc;
        profile.device_id.clone_from(&enrolled.device_id);
        if let Some(p) = doc.get("APPLICATION/PROVIDER-ID") {
            p.clone_into(&mut profile.provider_id);
        }
        let prov = format!("DMClient/Provider/{}", profile.provider_id);
        if let Some(id) = doc.get(&format!("{prov}/EntDMID")) {
            profile.ent_dm_id = Some(id.to_owned());
        }
        let mut device = Self::new(profile, enrolled.management_url.clone());
        let tree_prov = format!("./Vendor/MSFT/DMClient/Provider/{}", device.profile.provider_id);
        for (path, value) in &doc.parms {
            if let Some(rest) = path.strip_prefix(&format!("{prov}/")) {
                // Values the provisioning doc set are what the DMClient CSP then reports.
                let uri = format!("{tree_prov}/{rest}");
                if let Some(node) = device.tree.node(&uri) {
                    let (format, access) = (node.format, node.access);
                    device.tree.seed(&uri, format, access, value);
                }
            }
        }
        // Only a certificate the provisioned SSLCLIENTCERTSEARCHCRITERIA selects is presented
        // (crate::enroll::select_client_certificate).
        if enrolled.client_cert_selected {
            device.identity = Some(DeviceIdentity {
                cert_der: enrolled.cert_der,
                chain_der: enrolled.intermediate_der.into_iter().collect(),
                key: enrolled.key,
            });
        }
        device
    }

    /// `(certificate chain, PKCS#8 key)` for [`HttpsClient::new`].
    pub fn tls_identity(&self) -> Option<(Vec<Vec<u8>>, Vec<u8>)> {
        let id = self.identity.as_ref()?;
        let mut chain = vec![id.cert_der.clone()];
        chain.extend(id.chain_der.iter().cloned());
        Some((chain, id.key.pkcs8_der().to_vec()))
    }

    /// An mTLS client presenting this device's certificate.
    pub fn https_client(&self, roots: &[Vec<u8>]) -> Result<HttpsClient, SessionError> {
        Ok(HttpsClient::new(roots, self.tls_identity())?)
    }

    /// The last SessionID used (0 before the first session).
    pub fn session_counter(&self) -> u32 {
        self.session_counter
    }

    /// Restores the SessionID counter (a device keeps it across restarts).
    pub fn set_session_counter(&mut self, counter: u32) {
        self.session_counter = counter;
    }

    /// Scheduled sessions started since enrollment (see [`ManagedDevice::next_poll_delay`]).
    pub fn scheduled_polls(&self) -> u32 {
        self.scheduled_polls
    }

    /// Restores the poll-schedule position (a device keeps it across restarts).
    pub fn set_scheduled_polls(&mut self, polls: u32) {
        self.scheduled_polls = polls;
    }

    /// Generic alerts waiting for the next session.
    pub fn pending_alerts(&self) -> &[GenericAlert] {
        &self.pending_alerts
    }

    /// Queues a generic alert for the next session.
    pub fn queue_alert(&mut self, alert: GenericAlert) {
        self.pending_alerts.push(alert);
    }

    /// The user chose "Disconnect" in Settings: the next session carries the 1226 unenroll alert,
    /// after which the device is unenrolled.
    pub fn request_unenroll(&mut self) {
        if !self.pending_alerts.iter().any(GenericAlert::is_unenroll) {
            self.pending_alerts.push(GenericAlert::unenroll());
        }
    }

    /// DMClient `EntDMID`, sent as `client-request-id`.
    pub fn ent_dm_id(&self) -> Option<String> {
        let uri = format!("./Vendor/MSFT/DMClient/Provider/{}/EntDMID", self.profile.provider_id);
        self.tree.value(&uri).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    fn credentials(&self) -> Option<Md5Credentials> {
        self.md5.clone().or_else(|| {
            self.tree
                .client_credentials()
                .map(|(name, secret)| Md5Credentials { name, secret })
        })
    }

    /// The URL Windows POSTs to: the w7 ADDR plus `mode=Maintenance&Platform=WoA`.
    pub fn session_url(&self) -> String {
        let sep = if self.management_url.contains('?') { '&' } else { '?' };
        format!("{}{sep}mode=Maintenance&Platform=WoA", self.management_url)
    }

    fn header(&self, st: &mut SessionState) -> SyncHdr {
        let mut h = SyncHdr::new(
            st.session_id.clone(),
            st.next_msg_id,
            &self.management_url,
            &self.profile.device_id,
        );
        st.next_msg_id += 1;
        if let Some(max) = self.max_msg_size {
            h.meta = Some(Meta {
                max_msg_size: Some(max),
                ..Meta::default()
            });
        }
        if let Some(c) = self.credentials() {
            // Source/LocName carries the AAuthName when application credentials are set
            // (reference §2.4 message 1).
            if let Some(src) = h.source.as_mut() {
                src.loc_name = Some(c.name.clone());
            }
            if let Some(nonce) = &self.next_nonce {
                h.cred = Some(cred(&c, nonce));
            }
        }
        h
    }

    /// Opens a session and returns message 1 (MS-MDM §3.1.5.1). Any unfinished session is closed
    /// first as interrupted.
    pub fn start_session(&mut self, trigger: SessionTrigger) -> Result<SyncMl, SessionError> {
        if self.wiped.is_some() {
            return Err(SessionError::DeviceWiped);
        }
        if self.unenrolled {
            return Err(SessionError::Unenrolled);
        }
        if self.session.is_some() {
            self.end_session();
        }
        // SessionID: a 32-bit counter, new each session, written in decimal: Learn "OMA DM protocol
        // support" says "the client returns the SessionID in integer in decimal format", so it
        // reaches 10 digits (4294967295) where MS-MDM §2.2.3.8's hex would stop at 8.
        self.session_counter = match self.session_counter {
            u32::MAX => 1,
            n => n + 1,
        };
        if trigger == SessionTrigger::Scheduled {
            self.scheduled_polls = self.scheduled_polls.saturating_add(1);
        }
        self.tree.set_user_session(self.login_status == LoginStatus::User);
        let mut st = SessionState {
            session_id: self.session_counter.to_string(),
            next_msg_id: 1,
            last_sent: SyncMl::default(),
            challenged: false,
            sent_alerts: self.pending_alerts.clone(),
            received: Vec::new(),
            server_statuses: Vec::new(),
            pending_lo: None,
            new_alerts: Vec::new(),
            ended: false,
            outbox: Vec::new(),
            package_open: false,
            awaiting_213: None,
        };
        let header = self.header(&mut st);
        // CmdIDs start at 2 in message 1, as in every Windows capture we have (fixtures 04, 05).
        let mut ids = 2u32..;
        let mut next = || ids.next().unwrap_or_default().to_string();
        let mut commands = vec![
            Command::Alert(Alert {
                cmd_id: next(),
                data: trigger.alert_code().to_string(),
                items: Vec::new(),
            }),
            Command::Alert(Alert {
                cmd_id: next(),
                data: ALERT_CLIENT_EVENT.to_string(),
                items: vec![Item {
                    meta: Some(Meta {
                        type_: Some(TYPE_LOGIN_STATUS.to_owned()),
                        ..Meta::default()
                    }),
                    data: Some(ItemData::Text(self.login_status.as_str().to_owned())),
                    ..Item::default()
                }],
            }),
        ];
        for a in &st.sent_alerts {
            commands.push(Command::Alert(a.to_alert(next())));
        }
        let items = ["DevId", "Man", "Mod", "DmV", "Lang"]
            .iter()
            .map(|n| {
                let uri = format!("./DevInfo/{n}");
                Item {
                    source: Some(LocTarget::new(uri.clone())),
                    data: Some(ItemData::Text(self.tree.value(&uri).unwrap_or_default().to_owned())),
                    ..Item::default()
                }
            })
            .collect();
        commands.push(Command::Replace(ItemCommand {
            cmd_id: next(),
            meta: None,
            items,
        }));
        let msg = SyncMl {
            header,
            body: syncml::SyncBody { commands, final_: true },
        };
        st.last_sent = msg.clone();
        self.session = Some(st);
        Ok(msg)
    }

    /// Processes one server message and returns the device's reply, or `None` when the server
    /// ended the session (the device sends nothing more). Errors leave the session open; call
    /// [`ManagedDevice::end_session`] to close it.
    pub fn respond(&mut self, server_msg: &SyncMl) -> Result<Option<SyncMl>, SessionError> {
        let mut st = self.session.take().ok_or(SessionError::NoSession)?;
        let r = self.respond_in(&mut st, server_msg);
        self.session = Some(st);
        r
    }

    fn respond_in(&mut self, st: &mut SessionState, msg: &SyncMl) -> Result<Option<SyncMl>, SessionError> {
        if st.ended {
            return Err(SessionError::NoSession);
        }
        if msg.header.session_id != st.session_id {
            return Err(SessionError::Protocol(format!(
                "SessionID {:?} does not match ours ({:?})",
                msg.header.session_id, st.session_id
            )));
        }
        // MS-MDM §3.2.5.1: the first command of every server message is the Status for our SyncHdr.
        let Some(Command::Status(hdr)) = msg.body.commands.first() else {
            return Err(SessionError::Protocol("first command is not the SyncHdr Status".into()));
        };
        if hdr.cmd_ref != "0" || !hdr.cmd.eq_ignore_ascii_case("SyncHdr") {
            return Err(SessionError::Protocol(format!(
                "first Status answers CmdRef {} ({}), not the SyncHdr",
                hdr.cmd_ref, hdr.cmd
            )));
        }
        if let Some(n) = hdr.chal.as_ref().and_then(|c| c.next_nonce.clone()) {
            self.next_nonce = Some(n);
        }
        let code = hdr.code().unwrap_or_default();
        match code {
            200 | 212 => st.challenged = false,
            401 | 407 => {
                // OMA-TS-DM_Security §5.3: answer a challenge once by resending the message with
                // Cred built from the new nonce; a second refusal is final.
                let creds = self.credentials();
                return match (creds, &self.next_nonce, st.challenged) {
                    (Some(_), Some(_), false) => {
                        st.challenged = true;
                        let mut again = st.last_sent.clone();
                        again.header = self.header(st);
                        st.last_sent = again.clone();
                        Ok(Some(again))
                    }
                    (Some(_), _, true) => Err(SessionError::AuthFailed { code }),
                    _ => Err(SessionError::AuthRequired { code }),
                };
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "server refused our SyncHdr with status {other}"
                )));
            }
        }
        if let Some(piece) = st.awaiting_213.take()
            && !msg.body.commands.iter().any(|c| {
                matches!(c, Command::Status(s) if s.cmd_ref == piece && s.code() == Some(STATUS_CHUNKED_ITEM_ACCEPTED))
            })
        {
            return Err(SessionError::Protocol(format!(
                "no Status 213 for our Results piece (CmdID {piece}); OMA-DM large object handling requires it"
            )));
        }
        // The server's message answers our open package ("Next Message" response) or continues
        // its own package; only in the second case does its missing Final keep ours open.
        let answers_our_package = st.package_open;
        let msg_ref = msg.header.msg_id.to_string();
        let mut emits = Vec::new();
        let mut management = false;
        for cmd in &msg.body.commands[1..] {
            match cmd {
                Command::Status(s) => st.server_statuses.push(ServerStatus {
                    msg_ref: s.msg_ref.clone(),
                    cmd_ref: s.cmd_ref.clone(),
                    cmd: s.cmd.clone(),
                    code: s.data.clone(),
                }),
                Command::Results(_) => {}
                Command::Alert(a) if a.code() == Some(ALERT_SESSION_ABORT) => {
                    // Either side may abort (OMA-TS-DM_Protocol §8.3); the device stops at once.
                    st.received.push(received("Alert", &a.cmd_id, None, STATUS_OK));
                    st.ended = true;
                    return Ok(None);
                }
                Command::Alert(a) => {
                    management = true;
                    // 1222 asks us for our next message (we never split ours, so it is just
                    // acknowledged); other server alerts (1100 display, …) are UI features this
                    // simulator does not have.
                    let code = if a.code() == Some(ALERT_NEXT_MESSAGE) {
                        STATUS_OK
                    } else {
                        STATUS_OPTIONAL_FEATURE_NOT_SUPPORTED
                    };
                    emits.push(Emit::Status {
                        cmd_ref: a.cmd_id.clone(),
                        cmd: "Alert",
                        targets: Vec::new(),
                        code,
                    });
                }
                other => {
                    management = true;
                    let mut effects = Vec::new();
                    self.run_command(st, other, &mut effects, &mut emits);
                    self.apply(st, effects);
                }
            }
        }
        let unfinished_lo = if msg.body.final_ { st.pending_lo.take() } else { None };
        if !management && msg.body.final_ && unfinished_lo.is_none() && st.outbox.is_empty() {
            st.ended = true;
            return Ok(None);
        }
        for e in &emits {
            if let Emit::Status {
                cmd_ref,
                cmd,
                targets,
                code,
            } = e
            {
                if targets.is_empty() {
                    st.received.push(received(cmd, cmd_ref, None, *code));
                }
                for t in targets {
                    st.received.push(received(cmd, cmd_ref, Some(t.clone()), *code));
                }
            }
        }
        let header = self.header(st);
        let mut ids = 1u32..;
        let mut next = || ids.next().unwrap_or_default().to_string();
        let mut commands = vec![Command::Status(Status {
            cmd_id: next(),
            msg_ref: msg_ref.clone(),
            cmd_ref: "0".into(),
            cmd: "SyncHdr".into(),
            data: STATUS_OK.to_string(),
            ..Status::default()
        })];
        // What our package owes, oldest first; a message ends after a Results piece with MoreData.
        let mut queue: Vec<(String, Emit)> = std::mem::take(&mut st.outbox);
        queue.extend(
            chunk_results(emits, self.upload_chunk_bytes.max(1))
                .into_iter()
                .map(|e| (msg_ref.clone(), e)),
        );
        let mut queue = queue.into_iter();
        let mut this_message = Vec::new();
        for (m, e) in queue.by_ref() {
            let piece = matches!(&e, Emit::Results { items, .. } if items.iter().any(|i| i.more_data));
            this_message.push((m, e));
            if piece {
                break;
            }
        }
        st.outbox = queue.collect();
        for (msg_ref, e) in this_message {
            commands.push(match e {
                Emit::Status {
                    cmd_ref,
                    cmd,
                    targets,
                    code,
                } => Command::Status(Status {
                    cmd_id: next(),
                    msg_ref: msg_ref.clone(),
                    cmd_ref,
                    cmd: cmd.to_owned(),
                    target_ref: targets,
                    data: code.to_string(),
                    ..Status::default()
                }),
                Emit::Results { cmd_ref, items } => {
                    let cmd_id = next();
                    if items.iter().any(|i| i.more_data) {
                        st.awaiting_213 = Some(cmd_id.clone());
                    }
                    Command::Results(Results {
                        cmd_id,
                        msg_ref: Some(msg_ref.clone()),
                        cmd_ref,
                        meta: None,
                        items,
                    })
                }
            });
        }
        if let Some(lo) = unfinished_lo {
            commands.push(Command::Alert(Alert {
                cmd_id: next(),
                data: ALERT_NO_END_OF_DATA.to_string(),
                items: vec![Item::target(lo.target)],
            }));
        }
        // OMA-TS-DM_Protocol-V1_2 §8.2: the server's package goes on (its message has no Final
        // and is not the "Next Message" response to our open package): ask for its next message
        // and do not close ours.
        let server_package_open = !msg.body.final_ && !answers_our_package;
        if server_package_open {
            commands.push(Command::Alert(Alert {
                cmd_id: next(),
                data: ALERT_NEXT_MESSAGE.to_string(),
                items: Vec::new(),
            }));
        }
        st.package_open = !st.outbox.is_empty() || st.awaiting_213.is_some();
        let final_ = !st.package_open && !server_package_open;
        let reply = SyncMl {
            header,
            body: syncml::SyncBody { commands, final_ },
        };
        st.last_sent = reply.clone();
        Ok(Some(reply))
    }

    fn apply(&mut self, st: &mut SessionState, effects: Vec<ExecEffect>) {
        for e in effects {
            match e {
                ExecEffect::None => {}
                ExecEffect::Wipe(variant) => self.wiped = Some((variant, SystemTime::now())),
                ExecEffect::Reboot => self.reboot_count += 1,
                ExecEffect::Lock => self.lock_count += 1,
                ExecEffect::MsiInstall { loc_uri } => st.new_alerts.push(GenericAlert::msi_install(&loc_uri)),
            }
        }
    }

    /// Runs one command; returns whether it succeeded (every status < 300).
    fn run_command(
        &mut self,
        st: &mut SessionState,
        cmd: &Command,
        effects: &mut Vec<ExecEffect>,
        emits: &mut Vec<Emit>,
    ) -> bool {
        match cmd {
            Command::Get(c) => self.item_command(st, Kind::Get, c, effects, emits),
            Command::Add(c) => self.item_command(st, Kind::Add, c, effects, emits),
            Command::Replace(c) => self.item_command(st, Kind::Replace, c, effects, emits),
            Command::Delete(c) => self.item_command(st, Kind::Delete, c, effects, emits),
            Command::Exec(c) => self.item_command(st, Kind::Exec, c, effects, emits),
            Command::Atomic(c) => self.atomic(st, c, effects, emits),
            Command::Sequence(c) => self.sequence(st, c, effects, emits),
            Command::Alert(a) => {
                emits.push(Emit::Status {
                    cmd_ref: a.cmd_id.clone(),
                    cmd: "Alert",
                    targets: Vec::new(),
                    code: STATUS_OPTIONAL_FEATURE_NOT_SUPPORTED,
                });
                false
            }
            // What the reader could not take gets its own Status, as Windows answers a bad
            // element "with status code 400… for that element" (Learn "OMA DM protocol support").
            Command::Refused(r) => {
                emits.push(Emit::Status {
                    cmd_ref: r.cmd_id.clone(),
                    cmd: r.name,
                    targets: Vec::new(),
                    code: r.code,
                });
                false
            }
            // Status/Results inside a container are meaningless from a server; ignore them.
            Command::Status(_) | Command::Results(_) => true,
        }
    }

    fn atomic(
        &mut self,
        st: &mut SessionState,
        c: &Container,
        effects: &mut Vec<ExecEffect>,
        emits: &mut Vec<Emit>,
    ) -> bool {
        let snapshot = self.tree.snapshot();
        let mut child_emits = Vec::new();
        let mut child_effects = Vec::new();
        let mut failed_at = None;
        for (i, child) in c.commands.iter().enumerate() {
            let mut e = Vec::new();
            let ok = self.run_command(st, child, &mut child_effects, &mut e);
            child_emits.push(e);
            if !ok {
                failed_at = Some(i);
                break;
            }
        }
        match failed_at {
            None => {
                emits.push(container_status(c, "Atomic", STATUS_OK));
                emits.extend(child_emits.into_iter().flatten());
                effects.extend(child_effects);
                true
            }
            Some(i) => {
                self.tree.restore(snapshot);
                emits.push(container_status(c, "Atomic", STATUS_ATOMIC_FAILED));
                for (j, e) in child_emits.into_iter().enumerate() {
                    for em in e {
                        if let Emit::Status {
                            cmd_ref,
                            cmd,
                            targets,
                            code,
                        } = em
                        {
                            let code = if j < i || code < 300 {
                                STATUS_ATOMIC_ROLLBACK_OK
                            } else {
                                code
                            };
                            emits.push(Emit::Status {
                                cmd_ref,
                                cmd,
                                targets,
                                code,
                            });
                        }
                    }
                }
                not_executed(&c.commands[i + 1..], emits);
                false
            }
        }
    }

    fn sequence(
        &mut self,
        st: &mut SessionState,
        c: &Container,
        effects: &mut Vec<ExecEffect>,
        emits: &mut Vec<Emit>,
    ) -> bool {
        emits.push(container_status(c, "Sequence", STATUS_OK));
        for (i, child) in c.commands.iter().enumerate() {
            if !self.run_command(st, child, effects, emits) {
                not_executed(&c.commands[i + 1..], emits);
                return false;
            }
        }
        true
    }

    fn item_command(
        &mut self,
        st: &mut SessionState,
        kind: Kind,
        c: &ItemCommand,
        effects: &mut Vec<ExecEffect>,
        emits: &mut Vec<Emit>,
    ) -> bool {
        let mut per_item: Vec<(String, u16)> = Vec::new();
        let mut results = Vec::new();
        for item in &c.items {
            let Some(target) = item.target_uri().map(str::to_owned) else {
                per_item.push((String::new(), STATUS_BAD_REQUEST));
                continue;
            };
            let meta = item.meta.as_ref();
            let cmd_meta = c.meta.as_ref();
            let format = meta
                .and_then(|m| m.format.clone())
                .or_else(|| cmd_meta.and_then(|m| m.format.clone()));
            let mime = meta
                .and_then(|m| m.type_.clone())
                .or_else(|| cmd_meta.and_then(|m| m.type_.clone()));
            let mut data = item.data.as_ref().map(|d| d.as_str().to_owned());
            if matches!(kind, Kind::Add | Kind::Replace) {
                let size = meta.and_then(|m| m.size).or_else(|| cmd_meta.and_then(|m| m.size));
                if item.more_data {
                    let chunk = data.unwrap_or_default();
                    match st.pending_lo.as_mut().filter(|lo| lo.target == target) {
                        Some(lo) => lo.data.push_str(&chunk),
                        None => {
                            st.pending_lo = Some(PendingLo {
                                target: target.clone(),
                                size,
                                data: chunk,
                            });
                        }
                    }
                    per_item.push((target, STATUS_CHUNKED_ITEM_ACCEPTED));
                    continue;
                }
                if let Some(lo) = st.pending_lo.take_if(|lo| lo.target == target) {
                    let full = lo.data + data.as_deref().unwrap_or_default();
                    if lo.size.is_some_and(|s| s != full.len() as u64) {
                        per_item.push((target, STATUS_SIZE_MISMATCH));
                        continue;
                    }
                    data = Some(full);
                }
            }
            let (format, mime, data) = (format.as_deref(), mime.as_deref(), data.as_deref());
            let code = match kind {
                Kind::Get => match self.tree.get(&target) {
                    Ok(r) => {
                        results.push(Item {
                            source: Some(LocTarget::new(target.clone())),
                            meta: Some(Meta {
                                format: Some(r.format.as_str().to_owned()),
                                type_: r.mime,
                                ..Meta::default()
                            }),
                            data: Some(ItemData::Text(r.data)),
                            ..Item::default()
                        });
                        STATUS_OK
                    }
                    Err(e) => e.status(),
                },
                Kind::Add => self
                    .tree
                    .add(&target, format, mime, data)
                    .unwrap_or_else(|e| e.status()),
                Kind::Replace => self
                    .tree
                    .replace(&target, format, mime, data)
                    .unwrap_or_else(|e| e.status()),
                Kind::Delete => self.tree.delete(&target).unwrap_or_else(|e| e.status()),
                Kind::Exec => match self.tree.exec(&target, format, data) {
                    Ok(o) => {
                        effects.push(o.effect);
                        o.status
                    }
                    Err(e) => e.status(),
                },
            };
            per_item.push((target, code));
        }
        let name = kind.name();
        let ok = per_item.iter().all(|(_, c)| *c < 300);
        let same = per_item.windows(2).all(|w| w[0].1 == w[1].1);
        if same {
            let code = per_item.first().map_or(STATUS_BAD_REQUEST, |(_, c)| *c);
            emits.push(Emit::Status {
                cmd_ref: c.cmd_id.clone(),
                cmd: name,
                targets: per_item.into_iter().map(|(t, _)| t).filter(|t| !t.is_empty()).collect(),
                code,
            });
        } else {
            for (t, code) in per_item {
                emits.push(Emit::Status {
                    cmd_ref: c.cmd_id.clone(),
                    cmd: name,
                    targets: if t.is_empty() { Vec::new() } else { vec![t] },
                    code,
                });
            }
        }
        if !results.is_empty() {
            emits.push(Emit::Results {
                cmd_ref: c.cmd_id.clone(),
                items: results,
            });
        }
        ok && !c.items.is_empty()
    }

    /// Closes the session and reports it. Generic alerts carried by a session the server ended
    /// normally are done; otherwise they are sent again next time. Alerts raised during the session
    /// (MSI completions) wait for the next one. A completed session that carried the unenroll
    /// alert leaves the device unenrolled.
    pub fn end_session(&mut self) -> SessionReport {
        let Some(st) = self.session.take() else {
            return SessionReport {
                session_id: String::new(),
                messages: 0,
                received: Vec::new(),
                server_statuses: Vec::new(),
                ended: false,
                response_lost: false,
            };
        };
        if st.ended {
            self.pending_alerts.retain(|a| !st.sent_alerts.contains(a));
            if st.sent_alerts.iter().any(GenericAlert::is_unenroll) {
                self.unenrolled = true;
            }
        }
        self.pending_alerts.extend(st.new_alerts);
        SessionReport {
            session_id: st.session_id,
            messages: st.next_msg_id.saturating_sub(1),
            received: st.received,
            server_statuses: st.server_statuses,
            ended: st.ended,
            response_lost: false,
        }
    }

    /// Runs one management session over HTTPS (client-initiated, like the DMClient poll).
    pub async fn run_session(
        &mut self,
        client: &HttpsClient,
        trigger: SessionTrigger,
    ) -> Result<SessionReport, SessionError> {
        self.run_session_with(client, trigger, &SessionOptions::default()).await
    }

    /// [`ManagedDevice::run_session`] with test hooks.
    pub async fn run_session_with(
        &mut self,
        client: &HttpsClient,
        trigger: SessionTrigger,
        opts: &SessionOptions,
    ) -> Result<SessionReport, SessionError> {
        let mut msg = self.start_session(trigger)?;
        let r = self.drive(client, &mut msg, opts).await;
        let mut report = self.end_session();
        match r {
            Ok(lost) => {
                report.response_lost = lost;
                Ok(report)
            }
            Err(e) => Err(e),
        }
    }

    /// The POST loop; `Ok(true)` when a reply was deliberately dropped.
    async fn drive(
        &mut self,
        client: &HttpsClient,
        msg: &mut SyncMl,
        opts: &SessionOptions,
    ) -> Result<bool, SessionError> {
        let url = self.session_url();
        let ent_dm_id = self.ent_dm_id();
        let cv = STANDARD.encode(&uuid::Uuid::new_v4().as_bytes()[..12]);
        let mut sent = 0u32;
        loop {
            sent += 1;
            if sent > opts.max_messages {
                return Err(SessionError::TooManyMessages(opts.max_messages));
            }
            let body = bytes::Bytes::from(syncml::write(msg));
            // MS-CV: a correlation vector "<base>.<n>" (reference §2.4 request headers).
            let ms_cv = format!("{cv}.{sent}");
            let mut headers = vec![
                ("content-type", SYNCML_CONTENT_TYPE),
                ("accept", SYNCML_CONTENT_TYPE),
                ("user-agent", USER_AGENT),
                ("ms-cv", ms_cv.as_str()),
            ];
            if let Some(id) = &ent_dm_id {
                headers.push(("client-request-id", id.as_str()));
            }
            let posts = if opts.duplicate_post == Some(sent) { 2 } else { 1 };
            let mut resp = None;
            for _ in 0..posts {
                resp = Some(client.request(http::Method::POST, &url, &headers, body.clone()).await?);
            }
            let Some(resp) = resp else {
                return Err(SessionError::Protocol("no response".into()));
            };
            if opts.drop_response_after_send == Some(sent) {
                return Ok(true);
            }
            if !resp.status.is_success() {
                return Err(SessionError::HttpStatus {
                    status: resp.status.as_u16(),
                    body: resp.text().chars().take(500).collect(),
                });
            }
            let server = syncml::parse_bytes(&resp.body)?;
            match self.respond(&server)? {
                Some(next) => *msg = next,
                None => return Ok(false),
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Get,
    Add,
    Replace,
    Delete,
    Exec,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Get => "Get",
            Kind::Add => "Add",
            Kind::Replace => "Replace",
            Kind::Delete => "Delete",
            Kind::Exec => "Exec",
        }
    }
}

/// Results whose item Data is longer than `limit` bytes, split into pieces of at most `limit`
/// bytes (at character boundaries), one item per Results: the first piece carries Meta/Size (the
/// whole Data's byte length), every piece but the last MoreData (OMA-TS-DM_Protocol-V1_2 large
/// object handling). Other emits pass through.
fn chunk_results(emits: Vec<Emit>, limit: usize) -> Vec<Emit> {
    let mut out = Vec::with_capacity(emits.len());
    for e in emits {
        let Emit::Results { cmd_ref, items } = e else {
            out.push(e);
            continue;
        };
        let len = |i: &Item| i.data.as_ref().map_or(0, |d| d.as_str().len());
        if items.iter().all(|i| len(i) <= limit) {
            out.push(Emit::Results { cmd_ref, items });
            continue;
        }
        let mut small = Vec::new();
        for item in items {
            if len(&item) <= limit {
                small.push(item);
                continue;
            }
            if !small.is_empty() {
                out.push(Emit::Results {
                    cmd_ref: cmd_ref.clone(),
                    items: std::mem::take(&mut small),
                });
            }
            let data = item.data.as_ref().map(|d| d.as_str().to_owned()).unwrap_or_default();
            let mut pieces = Vec::new();
            let mut rest = data.as_str();
            while !rest.is_empty() {
                let mut end = limit.min(rest.len());
                while !rest.is_char_boundary(end) {
                    end -= 1;
                }
                if end == 0 {
                    end = rest.chars().next().map_or(rest.len(), char::len_utf8);
                }
                let (piece, tail) = rest.split_at(end);
                pieces.push(piece);
                rest = tail;
            }
            let n = pieces.len();
            for (k, piece) in pieces.into_iter().enumerate() {
                let mut meta = item.meta.clone().unwrap_or_default();
                meta.size = (k == 0).then_some(data.len() as u64);
                out.push(Emit::Results {
                    cmd_ref: cmd_ref.clone(),
                    items: vec![Item {
                        meta: Some(meta),
                        data: Some(ItemData::Text(piece.to_owned())),
                        more_data: k + 1 < n,
                        ..item.clone()
                    }],
                });
            }
        }
        if !small.is_empty() {
            out.push(Emit::Results { cmd_ref, items: small });
        }
    }
    out
}

fn cred(c: &Md5Credentials, nonce: &str) -> Cred {
    Cred {
        meta: Some(Meta {
            format: Some("b64".to_owned()),
            type_: Some(AUTH_MD5.to_owned()),
            ..Meta::default()
        }),
        data: md5_digest(&c.name, &c.secret, nonce),
    }
}

fn received(name: &str, cmd_id: &str, target: Option<String>, status: u16) -> ReceivedCommand {
    ReceivedCommand {
        name: name.to_owned(),
        cmd_id: cmd_id.to_owned(),
        target,
        status,
    }
}

fn container_status(c: &Container, name: &'static str, code: u16) -> Emit {
    Emit::Status {
        cmd_ref: c.cmd_id.clone(),
        cmd: name,
        targets: Vec::new(),
        code,
    }
}

/// 215 for commands skipped after a failure (and, recursively, their items' targets).
fn not_executed(cmds: &[Command], emits: &mut Vec<Emit>) {
    for cmd in cmds {
        let targets = match cmd {
            Command::Get(c) | Command::Add(c) | Command::Replace(c) | Command::Delete(c) | Command::Exec(c) => c
                .items
                .iter()
                .filter_map(|i| i.target_uri().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if matches!(cmd, Command::Status(_) | Command::Results(_)) {
            continue;
        }
        emits.push(Emit::Status {
            cmd_ref: cmd.cmd_id().to_owned(),
            cmd: cmd.name(),
            targets,
            code: STATUS_NOT_EXECUTED,
        });
    }
}

#[cfg(test)]
mod tests;
