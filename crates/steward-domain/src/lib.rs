//! Steward's domain: the records the MDM keeps, the secrets it handles, and the [`Store`] trait every
//! database backend implements. Nothing here does I/O; the server and the CLI drive a `dyn Store`.

pub mod admin;
pub mod console;
pub mod model;
pub mod secret;
pub mod store;
pub mod totp;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use admin::*;
pub use console::*;
pub use model::*;
pub use secret::{SecretString, TokenHash, TokenKind};
pub use store::{Store, StoreError, StoreResult};
pub mod management;
pub use management::*;
pub mod webhooks;
pub use webhooks::*;
