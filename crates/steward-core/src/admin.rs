//! Admin records: named API tokens with roles, the hash-chained audit log, and the query shapes the
//! admin surfaces page through (devices, audit events).
//!
//! The audit chain is computed here, not in a backend, so every backend (and `steward audit verify`)
//! agrees on it byte for byte. Each row links to the previous one over the canonical JSON of the row
//! ([`NewAuditEvent::canonical_json`]: fixed key order, times as unix microseconds):
//!
//! * keyed rows (every row from the store's `keyed_from` marker on):
//!   `hash = hex(HMAC-SHA-256(audit chain key, prev_hash || canonical JSON))`. The key is sealed by
//!   the KEK in the data directory and never stored in the database, so someone who can write the
//!   database but does not hold the key cannot edit a row and recompute the rest, nor append a row
//!   that verifies;
//! * rows written before the keyed chain existed (databases from earlier versions) keep their
//!   unkeyed `hash = hex(SHA-256(prev_hash || canonical JSON))`; the first keyed row covers the last
//!   of them through its `prev_hash`, so they cannot be rewritten either without the key.
//!
//! Deleting the newest rows leaves a shorter chain that still links: [`AuditCheckpoint`]s — the
//! count and head of the chain signed with a key that is not in the database, kept outside it —
//! make that visible (see docs/OPERATIONS.md, "The audit log").

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{self, KeyPair};
use aws_lc_rs::{digest, hmac};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{Enrollment, EnrollmentState, GroupId};
use crate::secret::TokenHash;
use crate::store::{AuditLog, StoreResult};

crate::model::uuid_id!(
    /// A named admin API token.
    ApiTokenId
);

/// What an admin credential may do. Stored by name; see the server's permission table for the
/// routes each role reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, settings, users and tokens included.
    Admin,
    /// Device actions (wipe included) and custom commands; no users, tokens or settings.
    Operator,
    /// Read, plus sync, lock and reboot; no wipe, no custom commands.
    Helpdesk,
    /// Read-only, the audit log included.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Helpdesk, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Helpdesk => "helpdesk",
            Role::Auditor => "auditor",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named API token (`stw_adm_…`). Only its SHA-256 is stored; the value is shown once at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: ApiTokenId,
    pub name: String,
    pub token_hash: TokenHash,
    pub role: Role,
    /// Limits the token to the devices of one group.
    pub group_id: Option<GroupId>,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    /// Who created it (an actor name as in the audit log).
    pub created_by: String,
}

impl ApiToken {
    /// Whether the token authenticates a request at `now`.
    pub fn usable_at(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// A bootstrap admin token: the one `admin_token` configures, or the one generated and printed at
/// the first start. Always an unscoped admin that never expires, so it must be revocable: a new
/// configured value revokes every earlier bootstrap token at start, and an admin can revoke one
/// through the API like any token. Its id shares the API tokens' id space (both are UUIDs), so one
/// revoke route serves both kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: ApiTokenId,
    /// `bootstrap (configured)` or `bootstrap (generated)` (`bootstrap` for tokens generated before
    /// the names said which).
    pub name: String,
    pub token_hash: TokenHash,
    pub created_at: OffsetDateTime,
    /// Recorded at most once a minute, like an API token's.
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

impl BootstrapToken {
    /// Whether the token authenticates a request (bootstrap tokens do not expire).
    pub fn usable(&self) -> bool {
        self.revoked_at.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBootstrapToken {
    pub id: ApiTokenId,
    pub name: String,
    pub token_hash: TokenHash,
    pub created_at: OffsetDateTime,
}

/// What installing a bootstrap token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapInstall {
    /// The token as stored: the new row, or the existing one with this hash (whose id, creation
    /// time and revocation are kept — a revoked value stays revoked).
    pub token: BootstrapToken,
    /// How many other, still active bootstrap tokens it revoked.
    pub revoked_others: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiToken {
    pub id: ApiTokenId,
    pub name: String,
    pub token_hash: TokenHash,
    pub role: Role,
    pub group_id: Option<GroupId>,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub created_by: String,
}

/// Cheap totals for the server overview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdminCounts {
    pub active_devices: u64,
    pub enrollments: u64,
    pub open_commands: u64,
    pub enrollment_tokens: u64,
    pub users: u64,
    pub groups: u64,
    pub api_tokens: u64,
    pub audit_events: u64,
}

// ---------------------------------------------------------------- device queries

/// How a device list is ordered. Ties are broken by enrollment id so pages never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSort {
    Name,
    LastSeen,
    #[default]
    EnrolledAt,
}

/// The value of the sort key at a page boundary. Missing names sort as "", never-seen devices as -1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SortKey {
    Text(String),
    /// Unix microseconds.
    Micros(i64),
}

impl DeviceSort {
    /// The sort key of an enrollment, as the backend compares it.
    pub fn key_of(self, e: &Enrollment) -> SortKey {
        match self {
            DeviceSort::Name => SortKey::Text(e.device_name.clone().unwrap_or_default()),
            DeviceSort::LastSeen => SortKey::Micros(e.last_seen_at.map_or(-1, unix_micros)),
            DeviceSort::EnrolledAt => SortKey::Micros(unix_micros(e.enrolled_at)),
        }
    }
}

/// Keyset position: the last item of the previous page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCursor {
    pub key: SortKey,
    pub id: crate::model::EnrollmentId,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceQuery {
    /// Case-insensitive substring of the device name.
    pub name_contains: Option<String>,
    /// Exact user e-mail (case-insensitive).
    pub user: Option<String>,
    /// OS version prefix (e.g. `10.0.26100`).
    pub os_version: Option<String>,
    pub state: Option<EnrollmentState>,
    /// Only devices of this group (group-scoped tokens).
    pub group_id: Option<GroupId>,
    pub last_seen_before: Option<OffsetDateTime>,
    pub last_seen_after: Option<OffsetDateTime>,
    pub sort: DeviceSort,
    pub descending: bool,
    pub after: Option<DeviceCursor>,
    pub limit: u32,
}

pub fn unix_micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

// ---------------------------------------------------------------- audit log

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    Success,
    Failure,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            _ => None,
        }
    }
}

/// One state-changing action to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub at: OffsetDateTime,
    /// Who: the token's name (or `cli (local)`).
    pub actor: String,
    /// The token's id, when it has one.
    pub actor_id: Option<String>,
    pub actor_role: Option<Role>,
    /// What: a dotted action name, e.g. `device.wipe`, `api_token.create`.
    pub action: String,
    /// On what: a device id, token id, e-mail…
    pub target: Option<String>,
    /// From where: the peer address, when the request came over the network.
    pub source_ip: Option<String>,
    pub outcome: AuditOutcome,
    /// HTTP status of the API call (None for CLI actions).
    pub status: Option<u16>,
    /// Free-form detail (wipe kind, command id…). Never a secret.
    pub details: Option<String>,
}

/// A recorded audit event: its position in the chain and its hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub actor_id: Option<String>,
    pub actor_role: Option<Role>,
    pub action: String,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    pub outcome: AuditOutcome,
    pub status: Option<u16>,
    pub details: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// `prev_hash` of the first event.
pub const AUDIT_GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hashed form of a row. Field order is fixed by this struct (alphabetical) and times are
/// integers, so the bytes never depend on a formatter or a backend. NEVER change it: every existing
/// chain would stop verifying.
#[derive(Serialize)]
struct CanonicalAuditRow<'a> {
    action: &'a str,
    actor: &'a str,
    actor_id: Option<&'a str>,
    actor_role: Option<&'a str>,
    at_us: i64,
    details: Option<&'a str>,
    outcome: &'a str,
    seq: i64,
    source_ip: Option<&'a str>,
    status: Option<u16>,
    target: Option<&'a str>,
}

/// The key of the keyed audit chain (HMAC-SHA-256). 32 random bytes generated at the first start
/// and sealed by the KEK in the data directory (`audit-chain.key.sealed`); never written to the
/// database, never printed (its Debug is redacted). Clone: a store may hand a copy to the thread that
/// runs its write transaction (the SQLite writer thread).
#[derive(Clone)]
pub struct AuditChainKey(hmac::Key);

impl AuditChainKey {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// A fresh random key (tests and the conformance stories; the server loads its sealed one).
    pub fn generate() -> Result<Self, aws_lc_rs::error::Unspecified> {
        Ok(Self::from_bytes(
            &steward_pki::random_bytes::<32>().map_err(|_| aws_lc_rs::error::Unspecified)?,
        ))
    }
}

impl fmt::Debug for AuditChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditChainKey(<redacted>)")
    }
}

impl NewAuditEvent {
    /// The canonical JSON of this event at position `seq`.
    pub fn canonical_json(&self, seq: i64) -> String {
        let row = CanonicalAuditRow {
            action: &self.action,
            actor: &self.actor,
            actor_id: self.actor_id.as_deref(),
            actor_role: self.actor_role.map(Role::as_str),
            at_us: unix_micros(self.at),
            details: self.details.as_deref(),
            outcome: self.outcome.as_str(),
            seq,
            source_ip: self.source_ip.as_deref(),
            status: self.status,
            target: self.target.as_deref(),
        };
        // Serialising a struct of strings and integers cannot fail; an empty string would only
        // make the chain fail verification, never pass it wrongly.
        serde_json::to_string(&row).unwrap_or_default()
    }

    /// `hex(SHA-256(prev_hash || canonical JSON))`.
    pub fn chain_hash(&self, seq: i64, prev_hash: &str) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(prev_hash.as_bytes());
        ctx.update(self.canonical_json(seq).as_bytes());
        hex::encode(ctx.finish().as_ref())
    }

    /// `hex(HMAC-SHA-256(key, prev_hash || canonical JSON))`: the link of a keyed row.
    pub fn chain_mac(&self, key: &AuditChainKey, seq: i64, prev_hash: &str) -> String {
        let mut ctx = hmac::Context::with_key(&key.0);
        ctx.update(prev_hash.as_bytes());
        ctx.update(self.canonical_json(seq).as_bytes());
        hex::encode(ctx.sign().as_ref())
    }

    /// The recorded event this becomes at `seq` after `prev_hash`, linked with the key (a keyed
    /// row) or without (a row of the unkeyed chain earlier versions wrote).
    pub fn chained_with(&self, key: Option<&AuditChainKey>, seq: i64, prev_hash: &str) -> AuditEvent {
        let mut e = self.chained(seq, prev_hash);
        if let Some(key) = key {
            e.hash = self.chain_mac(key, seq, prev_hash);
        }
        e
    }

    /// The recorded event this becomes at `seq` after `prev_hash`, unkeyed (the chain of earlier
    /// versions).
    pub fn chained(&self, seq: i64, prev_hash: &str) -> AuditEvent {
        AuditEvent {
            seq,
            at: self.at,
            actor: self.actor.clone(),
            actor_id: self.actor_id.clone(),
            actor_role: self.actor_role,
            action: self.action.clone(),
            target: self.target.clone(),
            source_ip: self.source_ip.clone(),
            outcome: self.outcome,
            status: self.status,
            details: self.details.clone(),
            prev_hash: prev_hash.to_owned(),
            hash: self.chain_hash(seq, prev_hash),
        }
    }
}

impl AuditEvent {
    fn content(&self) -> NewAuditEvent {
        NewAuditEvent {
            at: self.at,
            actor: self.actor.clone(),
            actor_id: self.actor_id.clone(),
            actor_role: self.actor_role,
            action: self.action.clone(),
            target: self.target.clone(),
            source_ip: self.source_ip.clone(),
            outcome: self.outcome,
            status: self.status,
            details: self.details.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    /// Newest first (the API) or oldest first (export, verification).
    pub newest_first: bool,
}

/// Why the chain does not verify, at which row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit event #{seq}: {reason}")]
pub struct AuditChainBroken {
    pub seq: i64,
    pub reason: String,
}

// ---------------------------------------------------------------- checkpoints

/// Signs [`AuditCheckpoint`]s: an Ed25519 key of its own, derived from a 32-byte seed sealed by the
/// KEK in the data directory (`audit-checkpoint.key.sealed`). Not the CA or TLS keys: those sign
/// certificates and handshakes, and a key used for one message format only cannot be talked into
/// signing another. Ed25519 rather than an HMAC so that whoever receives the checkpoints (a SIEM, a
/// backup auditor) can check them with the public key alone.
pub struct AuditCheckpointSigner(signature::Ed25519KeyPair);

impl AuditCheckpointSigner {
    pub fn from_seed(seed: &[u8]) -> Result<Self, aws_lc_rs::error::KeyRejected> {
        signature::Ed25519KeyPair::from_seed_unchecked(seed).map(Self)
    }

    /// The raw 32-byte Ed25519 public key that verifies this signer's checkpoints.
    pub fn public_key(&self) -> Vec<u8> {
        self.0.public_key().as_ref().to_vec()
    }
}

impl fmt::Debug for AuditCheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditCheckpointSigner(public {})", hex::encode(self.public_key()))
    }
}

/// A signed statement "the audit chain had `count` events and its newest link was `head`, keyed from
/// event `keyed_from`, at `at`". Written outside the database (a JSON line per checkpoint in
/// `<data_dir>/audit-checkpoints.jsonl`, and the log), so someone who can only rewrite the database
/// cannot remove rows below it unnoticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    /// Events in the chain (= the seq of the newest one; seqs have no gaps).
    pub count: i64,
    /// The `hash` of event #`count` (the genesis hash when `count` is 0).
    pub head: String,
    /// The first keyed event, as the store's marker said when this was signed.
    pub keyed_from: Option<i64>,
    /// When it was signed (whole seconds: the signed bytes carry the unix time).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `hex(Ed25519(signed_bytes))`.
    pub sig: String,
}

impl AuditCheckpoint {
    /// The bytes signed: a fixed label (so the signature means nothing in any other format) and the
    /// fields, one per line.
    fn signed_bytes(count: i64, head: &str, keyed_from: Option<i64>, at: OffsetDateTime) -> Vec<u8> {
        let keyed = keyed_from.map_or_else(|| "-".to_owned(), |k| k.to_string());
        format!(
            "steward-audit-checkpoint/v1\n{count}\n{head}\n{keyed}\n{}",
            at.unix_timestamp()
        )
        .into_bytes()
    }

    /// Signs the chain's state at `at` (truncated to whole seconds).
    pub fn sign(
        signer: &AuditCheckpointSigner,
        count: i64,
        head: &str,
        keyed_from: Option<i64>,
        at: OffsetDateTime,
    ) -> Self {
        let at = at.replace_nanosecond(0).unwrap_or(at);
        let sig = signer.0.sign(&Self::signed_bytes(count, head, keyed_from, at));
        Self {
            count,
            head: head.to_owned(),
            keyed_from,
            at,
            sig: hex::encode(sig.as_ref()),
        }
    }

    /// Whether the signature is good under the raw Ed25519 `public_key`.
    pub fn verify(&self, public_key: &[u8]) -> bool {
        let Ok(sig) = hex::decode(&self.sig) else {
            return false;
        };
        signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
            .verify(
                &Self::signed_bytes(self.count, &self.head, self.keyed_from, self.at),
                &sig,
            )
            .is_ok()
    }
}

// ---------------------------------------------------------------- verification

/// Walks the chain in order, one event at a time (so a caller can page through a large log), checking
/// each link (keyed from `keyed_from` on) and that the chain passes through every checkpoint given.
/// Call [`AuditChainVerifier::finish`] after the last row: a checkpoint beyond the end is truncation.
#[derive(Debug, Clone)]
pub struct AuditChainVerifier {
    key: Option<Arc<AuditChainKey>>,
    keyed_from: Option<i64>,
    /// Signature-checked checkpoints, by count.
    checkpoints: Vec<AuditCheckpoint>,
    /// The next checkpoint the chain has to reach.
    next_checkpoint: usize,
    prev_hash: String,
    prev_seq: i64,
    count: u64,
}

impl Default for AuditChainVerifier {
    /// The unkeyed chain of earlier versions, no checkpoints.
    fn default() -> Self {
        Self {
            key: None,
            keyed_from: None,
            checkpoints: Vec::new(),
            next_checkpoint: 0,
            prev_hash: AUDIT_GENESIS_HASH.to_owned(),
            prev_seq: 0,
            count: 0,
        }
    }
}

impl AuditChainVerifier {
    /// A verifier for a chain keyed from `keyed_from` (the store's marker; None: no row is keyed)
    /// with `key`, passing through `checkpoints` (whose signatures the caller checked). A checkpoint
    /// that disagrees with the marker means the marker was changed: refused, naming the earlier of
    /// the two seqs.
    pub fn new(
        key: Option<Arc<AuditChainKey>>,
        keyed_from: Option<i64>,
        mut checkpoints: Vec<AuditCheckpoint>,
    ) -> Result<Self, AuditChainBroken> {
        checkpoints.retain(|c| c.count > 0);
        checkpoints.sort_by_key(|c| c.count);
        if let Some(c) = checkpoints
            .iter()
            .find(|c| c.keyed_from.is_some() && c.keyed_from != keyed_from)
        {
            let signed = c.keyed_from.unwrap_or(1);
            return Err(AuditChainBroken {
                seq: keyed_from.map_or(signed, |k| k.min(signed)).max(1),
                reason: format!(
                    "the database says the chain is keyed from {}, the signed checkpoint of {} says from #{signed}: \
                     the keyed-chain marker was changed",
                    keyed_from.map_or_else(|| "nowhere".to_owned(), |k| format!("#{k}")),
                    c.at
                ),
            });
        }
        Ok(Self {
            key,
            keyed_from,
            checkpoints,
            ..Self::default()
        })
    }

    /// Continues after event #`seq` whose hash is `head` (already verified, e.g. at a checkpoint).
    pub fn resume_after(mut self, seq: i64, head: &str, count: u64) -> Self {
        self.prev_seq = seq;
        self.prev_hash = head.to_owned();
        self.count = count;
        self.next_checkpoint = self.checkpoints.iter().take_while(|c| c.count <= seq).count();
        self
    }

    /// Takes up the store's marker as it is now (a long-running verifier: the first keyed append
    /// after it started sets the marker). Only "none yet" may become "from a row not yet verified";
    /// any other change is refused.
    pub fn adopt_keyed_from(&mut self, keyed_from: Option<i64>) -> Result<(), AuditChainBroken> {
        match (self.keyed_from, keyed_from) {
            (a, b) if a == b => Ok(()),
            (None, Some(k)) if k > self.prev_seq => {
                self.keyed_from = Some(k);
                Ok(())
            }
            (_, b) => Err(AuditChainBroken {
                seq: b.unwrap_or(self.prev_seq + 1).max(1),
                reason: format!(
                    "the keyed-chain marker changed from {:?} to {b:?} under a running verifier",
                    self.keyed_from
                ),
            }),
        }
    }

    pub fn check(&mut self, e: &AuditEvent) -> Result<(), AuditChainBroken> {
        let broken = |reason: String| AuditChainBroken { seq: e.seq, reason };
        if e.seq != self.prev_seq + 1 {
            return Err(broken(format!(
                "expected event #{} next: a row is missing or was inserted",
                self.prev_seq + 1
            )));
        }
        if e.prev_hash != self.prev_hash {
            return Err(broken("prev_hash does not match the previous event's hash".into()));
        }
        if self.keyed_from.is_some_and(|k| e.seq >= k) {
            let Some(key) = &self.key else {
                return Err(broken(
                    "the row is keyed and no audit chain key was given to check it".into(),
                ));
            };
            if e.content().chain_mac(key, e.seq, &e.prev_hash) != e.hash {
                return Err(broken(
                    "the keyed MAC does not match the row (the row was edited, or written without the audit chain key)"
                        .into(),
                ));
            }
        } else if e.content().chain_hash(e.seq, &e.prev_hash) != e.hash {
            return Err(broken(
                "hash does not match the row's content (the row was edited)".into(),
            ));
        }
        while let Some(c) = self.checkpoints.get(self.next_checkpoint)
            && c.count == e.seq
        {
            if c.head != e.hash {
                return Err(broken(format!(
                    "differs from the signed checkpoint of {} (head of {} events): the chain was rewritten",
                    c.at, c.count
                )));
            }
            self.next_checkpoint += 1;
        }
        self.prev_hash = e.hash.clone();
        self.prev_seq = e.seq;
        self.count += 1;
        Ok(())
    }

    /// After the last row: a checkpoint the chain never reached means its newest rows were deleted.
    pub fn finish(self) -> Result<Self, AuditChainBroken> {
        // The marker is written with the first keyed row, so that row must still be there.
        if let Some(k) = self.keyed_from
            && k > self.prev_seq
        {
            return Err(AuditChainBroken {
                seq: self.prev_seq + 1,
                reason: format!(
                    "missing: the chain is keyed from event #{k} but the log ends at event #{} (the newest rows were deleted)",
                    self.prev_seq
                ),
            });
        }
        if let Some(c) = self.checkpoints.get(self.next_checkpoint) {
            return Err(AuditChainBroken {
                seq: self.prev_seq + 1,
                reason: format!(
                    "missing: the log ends at event #{} but the signed checkpoint of {} covers {} events \
                     (the newest rows were deleted)",
                    self.prev_seq, c.at, c.count
                ),
            });
        }
        Ok(self)
    }

    pub fn count(&self) -> u64 {
        self.count
    }
    /// The hash of the newest verified event.
    pub fn head(&self) -> &str {
        &self.prev_hash
    }
    /// The seq of the newest verified event (0: none).
    pub fn last_seq(&self) -> i64 {
        self.prev_seq
    }
    /// The first keyed event, per the store's marker.
    pub fn keyed_from(&self) -> Option<i64> {
        self.keyed_from
    }
    /// The checkpoints the chain passed through, oldest first.
    pub fn checkpoints(&self) -> &[AuditCheckpoint] {
        &self.checkpoints[..self.next_checkpoint]
    }
}

/// Verifies the whole audit log of a store, oldest first, with `key` and through `checkpoints`
/// (signatures already checked). `Ok(Err(..))` names the first broken row.
pub async fn verify_audit_log(
    store: &dyn AuditLog,
    key: Option<Arc<AuditChainKey>>,
    checkpoints: Vec<AuditCheckpoint>,
) -> StoreResult<Result<AuditChainVerifier, AuditChainBroken>> {
    let keyed_from = store.audit_keyed_from().await?;
    let mut v = match AuditChainVerifier::new(key, keyed_from, checkpoints) {
        Ok(v) => v,
        Err(b) => return Ok(Err(b)),
    };
    let mut after = None;
    loop {
        let page = store.audit_events(&AuditFilter::default(), after, 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        // The server may append while this runs: a keyed row just read has its marker committed
        // with it, so re-read the marker after the rows (only "none yet" may change).
        if let Err(b) = v.adopt_keyed_from(store.audit_keyed_from().await?) {
            return Ok(Err(b));
        }
        for e in &page {
            if let Err(b) = v.check(e) {
                return Ok(Err(b));
            }
        }
    }
    Ok(v.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> NewAuditEvent {
        NewAuditEvent {
            at: OffsetDateTime::from_unix_timestamp(1_700_000_000 + n).unwrap(),
            actor: "bootstrap".into(),
            actor_id: None,
            actor_role: Some(Role::Admin),
            action: "device.wipe".into(),
            target: Some(format!("DEV{n}")),
            source_ip: Some("127.0.0.1".into()),
            outcome: AuditOutcome::Success,
            status: Some(202),
            details: None,
        }
    }

    #[test]
    fn canonical_json_is_stable() {
        assert_eq!(
            event(1).canonical_json(1),
            r#"{"action":"device.wipe","actor":"bootstrap","actor_id":null,"actor_role":"admin","at_us":1700000001000000,"details":null,"outcome":"success","seq":1,"source_ip":"127.0.0.1","status":202,"target":"DEV1"}"#
        );
    }

    #[test]
    fn chain_verifies_and_detects_edits() {
        let mut chain = Vec::new();
        let mut prev = AUDIT_GENESIS_HASH.to_owned();
        for n in 1..=3 {
            let e = event(n).chained(n, &prev);
            prev = e.hash.clone();
            chain.push(e);
        }
        let mut v = AuditChainVerifier::default();
        for e in &chain {
            v.check(e).unwrap();
        }
        assert_eq!(v.count(), 3);
        assert_eq!(v.head(), prev);

        let mut edited = chain.clone();
        edited[1].target = Some("OTHER".into());
        let mut v = AuditChainVerifier::default();
        v.check(&edited[0]).unwrap();
        assert_eq!(v.check(&edited[1]).unwrap_err().seq, 2);

        let mut v = AuditChainVerifier::default();
        v.check(&chain[0]).unwrap();
        assert!(v.check(&chain[2]).unwrap_err().reason.contains("missing"));
    }

    fn keyed_chain(key: &AuditChainKey, keyed_from: i64, n: i64) -> Vec<AuditEvent> {
        let mut prev = AUDIT_GENESIS_HASH.to_owned();
        (1..=n)
            .map(|i| {
                let e = event(i).chained_with((i >= keyed_from).then_some(key), i, &prev);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn run(v: &mut AuditChainVerifier, chain: &[AuditEvent]) -> Result<(), AuditChainBroken> {
        chain.iter().try_for_each(|e| v.check(e))
    }

    #[test]
    fn keyed_rows_need_the_key_and_unkeyed_forgeries_fail() {
        let key = Arc::new(AuditChainKey::generate().unwrap());
        let chain = keyed_chain(&key, 3, 4);
        let mut v = AuditChainVerifier::new(Some(key.clone()), Some(3), Vec::new()).unwrap();
        run(&mut v, &chain).unwrap();
        assert_eq!((v.count(), v.keyed_from()), (4, Some(3)));

        // A fifth row appended with a correct unkeyed hash.
        let forged = event(5).chained(5, &chain[3].hash);
        let mut v = AuditChainVerifier::new(Some(key.clone()), Some(3), Vec::new()).unwrap();
        run(&mut v, &chain).unwrap();
        let broken = v.check(&forged).unwrap_err();
        assert_eq!(broken.seq, 5);
        assert!(broken.reason.contains("keyed MAC"), "{broken}");

        // Without the key, keyed rows cannot be checked (never reported intact).
        let mut v = AuditChainVerifier::new(None, Some(3), Vec::new()).unwrap();
        assert_eq!(run(&mut v, &chain).unwrap_err().seq, 3);
        assert!(format!("{:?}", key).contains("redacted"));
    }

    #[test]
    fn checkpoints_are_signed_and_catch_truncation_and_rewrites() {
        let key = Arc::new(AuditChainKey::generate().unwrap());
        let signer = AuditCheckpointSigner::from_seed(&[7u8; 32]).unwrap();
        let chain = keyed_chain(&key, 1, 5);
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_100).unwrap();
        let cp = AuditCheckpoint::sign(&signer, 4, &chain[3].hash, Some(1), at);
        assert!(cp.verify(&signer.public_key()));
        let line = serde_json::to_string(&cp).unwrap();
        let back: AuditCheckpoint = serde_json::from_str(&line).unwrap();
        assert!(back.verify(&signer.public_key()), "survives the file");
        let mut edited = cp.clone();
        edited.count = 3;
        assert!(!edited.verify(&signer.public_key()));
        let other = AuditCheckpointSigner::from_seed(&[8u8; 32]).unwrap();
        assert!(!cp.verify(&other.public_key()));

        let verifier = || AuditChainVerifier::new(Some(key.clone()), Some(1), vec![cp.clone()]).unwrap();
        let mut v = verifier();
        run(&mut v, &chain).unwrap();
        let v = v.finish().unwrap();
        assert_eq!(v.checkpoints().len(), 1);

        // The newest two rows deleted: the chain links, but ends below the checkpoint.
        let mut v = verifier();
        run(&mut v, &chain[..3]).unwrap();
        let broken = v.finish().unwrap_err();
        assert_eq!(broken.seq, 4);
        assert!(broken.reason.contains("deleted"), "{broken}");

        // Every keyed row deleted: the marker still names the first one.
        let mut v = AuditChainVerifier::new(Some(key.clone()), Some(3), Vec::new()).unwrap();
        run(&mut v, &keyed_chain(&key, 3, 4)[..2]).unwrap();
        assert_eq!(v.finish().unwrap_err().seq, 3);

        // The marker moved (to pass rows off as unkeyed): refused before any row.
        let broken = AuditChainVerifier::new(Some(key.clone()), Some(3), vec![cp.clone()]).unwrap_err();
        assert_eq!(broken.seq, 1);

        // Resuming at the checkpoint checks only what follows.
        let mut v = verifier().resume_after(4, &chain[3].hash, 4);
        v.check(&chain[4]).unwrap();
        assert_eq!(v.finish().unwrap().count(), 5);
    }

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
