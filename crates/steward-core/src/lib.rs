//! Steward's core: the platform-neutral domain (devices and their enrollments, commands, facts,
//! users, groups, tokens, the audit log), the store traits every database backend implements (by
//! concern, [`store`]), the seam every platform adapter implements ([`platform`]), and the services
//! every surface calls ([`service`]). No HTTP, no SQL, no platform protocol here.

pub mod access;
pub mod admin;
pub mod catalog;
pub mod checkin;
pub mod command;
pub mod configuration;
pub mod console;
pub mod event;
pub mod group_rule;
pub mod identity;
pub mod inventory;
pub mod model;
pub mod platform;
pub mod rollout;
pub mod secret;
pub mod service;
pub mod store;
pub mod totp;
pub mod webhooks;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use access::{Permission, Principal};
pub use admin::*;
pub use catalog::{CatalogCategory, CatalogParameter, CatalogProfile, CatalogSetting, OnRemove};
pub use checkin::*;
pub use command::*;
pub use configuration::{
    AssignDocument, AssignedProfile, Assignment, ConfigurationCommit, ConfigurationContext, Conflict,
    DeviceConfigState, DeviceConfiguration, DeviceSetting, DynamicMembership, InFlight, OpKind, Profile,
    ProfileDocument, ProfileId, ProfileStatusCounts, ProfileVersion, ProfileWrite, Remediation, Setting, SettingOp,
    SettingStatus, VerifyPolicy,
};
pub use console::*;
pub use event::*;
pub use group_rule::{DynamicGroup, EnrollmentFields, GroupRule, RuleError, RuleFact, RuleSubject};
pub use identity::*;
pub use inventory::*;
pub use model::*;
pub use platform::*;
pub use rollout::*;
pub use secret::{SecretString, TokenHash, TokenKind};
pub use store::*;
pub use webhooks::*;
