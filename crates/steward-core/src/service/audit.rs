//! The one audit writer: every surface records state changes through [`AuditTrail::record`], so
//! actor, action names, targets and outcomes read the same whoever made the change. Every row it
//! writes is linked with the audit chain key (see [`crate::admin`]).

use std::sync::Arc;

use tokio::sync::Notify;

use time::OffsetDateTime;

use crate::access::Principal;
use crate::admin::{
    AuditChainBroken, AuditChainKey, AuditChainVerifier, AuditCheckpoint, AuditOutcome, NewAuditEvent, Role,
    verify_audit_log,
};
use crate::store::{Store, StoreResult};

/// One entry to record.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    /// Dotted action name, e.g. `device.wipe` (the admin API's route table names them).
    pub action: String,
    pub target: Option<String>,
    pub details: Option<String>,
    pub source_ip: Option<String>,
    /// HTTP status of the call, when it came over HTTP.
    pub status: Option<u16>,
}

#[derive(Clone)]
pub struct AuditTrail {
    store: Arc<dyn Store>,
    key: Arc<AuditChainKey>,
    /// Woken after each append, for the checkpoint writer (it counts events, not wake-ups).
    appended: Arc<Notify>,
}

impl AuditTrail {
    pub fn new(store: Arc<dyn Store>, key: Arc<AuditChainKey>) -> Self {
        Self {
            store,
            key,
            appended: Arc::new(Notify::new()),
        }
    }

    /// The chain key (the checkpoint writer verifies new rows with it before signing their head).
    pub fn key(&self) -> &Arc<AuditChainKey> {
        &self.key
    }

    /// Notified after every append (at most one stored wake-up: a waiter re-reads the head).
    pub fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    /// Records what `who` did and whether it succeeded. The action already happened (or was
    /// refused); failing the caller now would make it retry something that succeeded, so a failure
    /// to write is logged loudly instead.
    pub async fn record(&self, who: &Principal, ok: bool, e: AuditEntry) {
        self.record_as(&who.name, who.token_id.map(|i| i.to_string()), Some(who.role), ok, e)
            .await;
    }

    /// Records an event for an actor that is not (yet) a principal: a console sign-in attempt.
    pub async fn record_as(&self, actor: &str, actor_id: Option<String>, role: Option<Role>, ok: bool, e: AuditEntry) {
        let event = NewAuditEvent {
            at: OffsetDateTime::now_utc(),
            actor: actor.to_owned(),
            actor_id,
            actor_role: role,
            action: e.action,
            target: e.target,
            source_ip: e.source_ip,
            outcome: if ok {
                AuditOutcome::Success
            } else {
                AuditOutcome::Failure
            },
            status: e.status,
            details: e.details,
        };
        match self.store.append_audit_event(&event, &self.key).await {
            Ok(_) => self.appended.notify_one(),
            Err(err) => tracing::error!(error = %err, action = event.action, "cannot append to the audit log"),
        }
    }

    /// Verifies the whole chain, oldest first, with the chain key and through `checkpoints` (whose
    /// signatures the caller checked).
    pub async fn verify(
        &self,
        checkpoints: Vec<AuditCheckpoint>,
    ) -> StoreResult<Result<AuditChainVerifier, AuditChainBroken>> {
        verify_audit_log(
            self.store.as_ref() as &dyn crate::store::AuditLog,
            Some(self.key.clone()),
            checkpoints,
        )
        .await
    }
}
