//! Admin records: named API tokens with roles, the hash-chained audit log, and the query shapes the
//! admin surfaces page through (devices, audit events).
//!
//! The audit chain is computed here, not in a backend, so every backend (and `steward audit verify`)
//! agrees on it byte for byte: `hash = SHA-256(prev_hash || canonical JSON of the row)`, where the
//! canonical JSON is [`AuditEvent::canonical_json`] (fixed key order, times as unix microseconds).

use std::fmt;

use aws_lc_rs::digest;
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

    /// The recorded event this becomes at `seq` after `prev_hash`.
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

/// Walks the chain in order, one event at a time (so a caller can page through a large log).
#[derive(Debug, Clone)]
pub struct AuditChainVerifier {
    prev_hash: String,
    prev_seq: i64,
    count: u64,
}

impl Default for AuditChainVerifier {
    fn default() -> Self {
        Self {
            prev_hash: AUDIT_GENESIS_HASH.to_owned(),
            prev_seq: 0,
            count: 0,
        }
    }
}

impl AuditChainVerifier {
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
        if e.content().chain_hash(e.seq, &e.prev_hash) != e.hash {
            return Err(broken(
                "hash does not match the row's content (the row was edited)".into(),
            ));
        }
        self.prev_hash = e.hash.clone();
        self.prev_seq = e.seq;
        self.count += 1;
        Ok(())
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    /// The hash of the newest verified event (anchor it elsewhere to detect truncation).
    pub fn head(&self) -> &str {
        &self.prev_hash
    }
}

/// Verifies the whole audit log of a store, oldest first. `Ok(Err(..))` names the first broken row.
pub async fn verify_audit_log(store: &dyn AuditLog) -> StoreResult<Result<AuditChainVerifier, AuditChainBroken>> {
    let mut v = AuditChainVerifier::default();
    let mut after = None;
    loop {
        let page = store.audit_events(&AuditFilter::default(), after, 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for e in &page {
            if let Err(b) = v.check(e) {
                return Ok(Err(b));
            }
        }
    }
    Ok(Ok(v))
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

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
