//! The use cases every surface calls: the admin API, the web console and the CLI (which drives the
//! API, in process with `--local`), and the platform adapters for what is not protocol. A service
//! holds the narrowest store traits it needs; [`Core`] wires them once.

pub mod audit;
pub mod commands;
pub mod devices;
pub mod directory;
pub mod identity;
pub mod passwords;
pub mod profiles;
pub mod rollouts;
pub mod second_factor;
pub mod webhooks;

use std::sync::Arc;

use time::OffsetDateTime;

use crate::access::Permission;
use crate::platform::{CommandRejected, Platforms};
use crate::store::{Store, StoreError};

pub use audit::AuditTrail;
pub use commands::Commands;
pub use devices::Devices;
pub use directory::Directory;
pub use identity::Identity;
pub use passwords::{PasswordPolicy, PasswordRefused, Passwords};
pub use profiles::Profiles;
pub use rollouts::Rollouts;
pub use second_factor::SecondFactor;
pub use webhooks::Webhooks;

/// Why a service refused or failed. Each surface renders it its own way (problem+json, an error
/// page, a CLI message); the texts are for people.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the {role} role may not {}", permission.as_str())]
    Forbidden { role: String, permission: Permission },
    /// A well-formed request that asks for something invalid (422 in the API).
    #[error("{0}")]
    Invalid(String),
    /// A malformed request (400 in the API).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    /// Retryable: the database is unavailable or a bounded resource is exhausted.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("resource"),
            StoreError::Conflict(what) => Self::Conflict(format!("already exists: {what}")),
            StoreError::TokenUnusable(t) => Self::Conflict(t.to_string()),
            StoreError::NonceReused => Self::Conflict(e.to_string()),
            StoreError::Stale(_) => Self::Conflict(e.to_string()),
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Backend(m) => Self::Internal(m),
        }
    }
}

impl From<CommandRejected> for ServiceError {
    fn from(e: CommandRejected) -> Self {
        Self::Invalid(e.to_string())
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// Where services get the time: the system clock when serving, a fixed or stepped one in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// The services of one running Steward, over one store and the platforms it manages.
#[derive(Clone)]
pub struct Core {
    pub store: Arc<dyn Store>,
    pub platforms: Platforms,
    pub clock: Arc<dyn Clock>,
    pub devices: Devices,
    pub commands: Commands,
    pub directory: Directory,
    pub audit: AuditTrail,
    pub passwords: Passwords,
    pub second_factor: SecondFactor,
    pub webhooks: Webhooks,
    pub profiles: Profiles,
    pub rollouts: Rollouts,
}

impl Core {
    /// The services over `store`; `data_key` seals the secrets the database must hold readable
    /// (webhook signing secrets, TOTP seeds); `audit_key` links the audit chain.
    pub fn new(
        store: Arc<dyn Store>,
        platforms: Platforms,
        clock: Arc<dyn Clock>,
        passwords: PasswordPolicy,
        data_key: Arc<steward_pki::Kek>,
        audit_key: Arc<crate::admin::AuditChainKey>,
    ) -> Self {
        let devices = Devices::new(store.clone(), clock.clone());
        Self {
            second_factor: SecondFactor::new(store.clone(), data_key.clone(), clock.clone()),
            webhooks: Webhooks::new(store.clone(), data_key, clock.clone()),
            profiles: Profiles::new(store.clone(), platforms.clone(), clock.clone()),
            rollouts: Rollouts::new(store.clone(), clock.clone()),
            commands: Commands::new(store.clone(), devices.clone(), platforms.clone(), clock.clone()),
            directory: Directory::new(store.clone(), clock.clone()),
            audit: AuditTrail::new(store.clone(), audit_key),
            passwords: Passwords::new(store.clone(), passwords),
            devices,
            store,
            platforms,
            clock,
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}

/// Refuses unless `who` may do `p`.
pub fn require(who: &crate::access::Principal, p: Permission) -> ServiceResult<()> {
    if who.permits(p) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden {
            role: who.role_label(),
            permission: p,
        })
    }
}
