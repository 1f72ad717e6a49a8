//! Webhook subscriptions and their delivery log.
//!
//! Delivery reads the device event outbox (`device_events`, written in the same transaction as the
//! change it describes) after a cursor kept per subscription in the store, so a restart resumes where
//! delivery stopped: nothing is lost and nothing is skipped (at-least-once). Each subscription has
//! one head item at a time (a queued ping, else the next matching event); it is retried with backoff
//! until it is delivered or given up, and only then does the cursor move. That keeps events in order
//! per subscription, while a failing endpoint delays nobody else.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::event::EventKind;
use crate::model::uuid_id;
use crate::secret::SecretString;

uuid_id!(
    /// A webhook subscription.
    WebhookId
);

/// Prefix of webhook signing secrets, so a leaked one is recognisable (secret scanners). Never change
/// it: receivers compare against secrets already handed out.
pub const WEBHOOK_SECRET_PREFIX: &str = "stw_whs_";

/// A new signing secret: the prefix and 32 random bytes, base64url. Unlike bearer tokens it is
/// stored recoverably (sealed), because Steward needs it to sign every delivery.
pub fn generate_webhook_secret() -> Result<SecretString, aws_lc_rs::error::Unspecified> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut())?;
    Ok(SecretString::new(format!(
        "{WEBHOOK_SECRET_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(bytes.as_ref())
    )))
}

/// `Steward-Signature` value: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. The key
/// is the secret string exactly as shown at creation (prefix included). The timestamp is signed with
/// the body so a captured delivery cannot be replayed later with a fresh time.
pub fn webhook_signature(secret: &SecretString, unix_time: i64, body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(unix_time.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={unix_time},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Which event kinds a subscription wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookKinds {
    /// Every kind, including kinds added in later versions.
    All,
    Only(BTreeSet<EventKindOrd>),
}

/// [`EventKind`] ordered by its name, so kind sets have a stable order in storage and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKindOrd(pub EventKind);

impl PartialOrd for EventKindOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for EventKindOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_str().cmp(other.0.as_str())
    }
}

impl WebhookKinds {
    pub fn only(kinds: impl IntoIterator<Item = EventKind>) -> Self {
        Self::Only(kinds.into_iter().map(EventKindOrd).collect())
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(&EventKindOrd(kind)),
        }
    }

    /// Storage and API form: `["all"]` or the kind names.
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::All => vec!["all".into()],
            Self::Only(set) => set.iter().map(|k| k.0.as_str().to_owned()).collect(),
        }
    }

    /// Parses [`WebhookKinds::names`]; `"all"` anywhere means all. Unknown names and an empty list are
    /// errors (the offending name is returned).
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        if names.is_empty() {
            return Err(String::new());
        }
        let mut set = BTreeSet::new();
        for n in names {
            let n = n.as_ref();
            if n == "all" {
                return Ok(Self::All);
            }
            set.insert(EventKindOrd(EventKind::parse(n).ok_or_else(|| n.to_owned())?));
        }
        Ok(Self::Only(set))
    }
}

/// A subscription as created.
#[derive(Clone)]
pub struct NewWebhook {
    pub id: WebhookId,
    pub name: String,
    pub url: String,
    pub kinds: WebhookKinds,
    /// The signing secret sealed by the server (AES-256-GCM); the store keeps it opaque.
    pub sealed_secret: String,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: OffsetDateTime,
}

impl fmt::Debug for NewWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewWebhook")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A stored subscription with its delivery state.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: WebhookId,
    pub name: String,
    pub url: String,
    pub kinds: WebhookKinds,
    pub sealed_secret: String,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    /// Every device event with `seq <= cursor` is done (delivered, given up, or not wanted). A new
    /// subscription starts at the newest event: it gets what happens from then on.
    pub cursor: i64,
    /// Attempts made so far on the head item (`retry_item`); 0 when nothing is being retried.
    pub attempts: u32,
    /// Delivery id of the item being retried; when the head changes the count starts over.
    pub retry_item: Option<String>,
    /// When the head item may be tried next; None: now.
    pub next_attempt_at: Option<OffsetDateTime>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("url", &self.url)
            .field("kinds", &self.kinds)
            .field("enabled", &self.enabled)
            .field("cursor", &self.cursor)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A queued `ping` (`POST /webhooks/{id}/test`), delivered before the next event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookPing {
    pub id: i64,
    pub webhook_id: WebhookId,
    pub created_at: OffsetDateTime,
}

/// The item an attempt was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryItem {
    /// A device event (its `seq`).
    Event(i64),
    /// A queued ping (its id).
    Ping(i64),
}

/// What an attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// 2xx: the item is done and the subscription moves on.
    Delivered,
    /// Failed; tried again at `next_attempt_at`.
    Retrying,
    /// Failed and the retry schedule is used up: the item is given up and the subscription moves on.
    Failed,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "delivered" => Self::Delivered,
            "retrying" => Self::Retrying,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// One delivery attempt, recorded by [`crate::Store::record_webhook_attempt`] together with the
/// subscription's new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    pub webhook_id: WebhookId,
    pub item: DeliveryItem,
    /// The payload's `id` (`<subscription>-<seq>`, or `<subscription>-ping-<n>`).
    pub delivery_id: String,
    /// `ping` or the event kind.
    pub event_type: String,
    /// 1 for the first attempt of an item.
    pub attempt: u32,
    pub status_code: Option<u16>,
    /// Why it failed (connection refused, timeout, TLS…), None on an HTTP answer.
    pub error: Option<String>,
    pub duration_ms: u64,
    pub at: OffsetDateTime,
    pub outcome: DeliveryOutcome,
    /// With [`DeliveryOutcome::Retrying`]: when to try again.
    pub next_attempt_at: Option<OffsetDateTime>,
}

/// A row of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// Increasing; the log pages by it (newest first).
    pub id: i64,
    pub webhook_id: WebhookId,
    pub delivery_id: String,
    pub event_type: String,
    pub event_seq: Option<i64>,
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub at: OffsetDateTime,
    pub outcome: DeliveryOutcome,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kinds_parse_and_filter() {
        assert_eq!(WebhookKinds::parse(&["all"]).unwrap(), WebhookKinds::All);
        let k = WebhookKinds::parse(&["wiped", "enrolled", "wiped"]).unwrap();
        assert_eq!(k.names(), vec!["enrolled", "wiped"]);
        assert!(k.wants(EventKind::Wiped) && !k.wants(EventKind::CommandFailed));
        assert_eq!(WebhookKinds::parse(&["nope"]).unwrap_err(), "nope");
        assert!(WebhookKinds::parse::<&str>(&[]).is_err());
    }

    #[test]
    fn secret_and_signature() {
        let s = generate_webhook_secret().unwrap();
        assert!(s.expose().starts_with(WEBHOOK_SECRET_PREFIX));
        assert_eq!(s.expose().len(), WEBHOOK_SECRET_PREFIX.len() + 43);
        // Known answer, computed with Python's hmac module as in docs/OPERATIONS.md.
        let sig = webhook_signature(&SecretString::new("stw_whs_test"), 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "t=1700000000,v1=95c8154e40f59e4e0026ca90e30d31afcdd2d16453c9e9ce9b521c3a132ed65e"
        );
        assert_ne!(
            sig,
            webhook_signature(&SecretString::new("stw_whs_test"), 1_700_000_001, b"{}")
        );
    }
}
