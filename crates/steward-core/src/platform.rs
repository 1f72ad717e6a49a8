//! The seam between platform-neutral Steward and each platform's protocol. A platform adapter
//! (`steward-windows` for Windows) implements [`PlatformAdapter`]; services reach it through
//! [`Platforms`] by the enrollment's [`Platform`], so the admin API, the console and the CLI never
//! name a platform's types.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalog::CatalogProfile;
use crate::command::{Action, CommandSummary, PlatformPayload};
use crate::configuration::{DeviceLock, Setting};
use crate::inventory::DeviceFact;
use crate::model::Platform;

/// A platform's command for a remote action, or a reason it cannot do it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandRejected {
    /// The platform has no such action (or not this variant of it).
    #[error("{platform} devices do not support {what}")]
    Unsupported { platform: Platform, what: String },
    /// The admin's command is malformed for the platform; the message names what is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// Where and how devices of a platform enroll, for the admin surfaces to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentEndpoint {
    /// What it is, e.g. "Windows discovery".
    pub name: String,
    pub url: String,
}

/// A profile setting the platform refuses: which one (its position in the document and its path,
/// if it had one) and why. Nothing of the document is saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {index}{}: {message}", path.as_deref().map(|p| format!(" ({p})")).unwrap_or_default())]
pub struct SettingRejected {
    /// 0-based position in the document's `settings`.
    pub index: usize,
    pub path: Option<String>,
    pub message: String,
}

/// A platform adapter, as the services use it.
pub trait PlatformAdapter: Send + Sync {
    fn platform(&self) -> Platform;

    /// The command a remote action becomes on this platform.
    fn action_command(&self, action: Action) -> Result<PlatformPayload, CommandRejected>;

    /// Validates an admin's own command, given as JSON in the admin API's shape for this platform,
    /// and returns it as a payload to queue.
    fn admin_command(&self, request: &serde_json::Value) -> Result<PlatformPayload, CommandRejected>;

    /// How a queued command reads in lists (an unreadable payload is described as such, never an
    /// error: lists must render whatever is stored).
    fn describe(&self, payload: &PlatformPayload) -> CommandSummary;

    /// The URLs devices of this platform enroll with, under the server's public URL.
    fn enrollment_endpoints(&self, public_url: &str) -> Vec<EnrollmentEndpoint>;

    /// The platform's built-in configuration catalog ([`crate::catalog`]), validated by the adapter.
    /// A platform without one has an empty catalog.
    fn catalog(&self) -> &[CatalogProfile] {
        &[]
    }

    /// Validates a profile document's settings, each a JSON object in the platform's shape (the
    /// profile file's `settings` entries: for Windows `loc_uri`, `format`, `value`, `on_remove`, …,
    /// or a raw `syncml` group), and returns them as [`Setting`]s. The first bad setting is named.
    fn profile_settings(&self, settings: &[serde_json::Value]) -> Result<Vec<Setting>, SettingRejected> {
        let _ = settings;
        Err(SettingRejected {
            index: 0,
            path: None,
            message: format!("{} profiles are not supported", self.platform().as_str()),
        })
    }

    /// A setting back in the profile document's shape (`steward export`): passed to
    /// [`PlatformAdapter::profile_settings`] it gives the same setting.
    fn setting_document(&self, setting: &Setting) -> serde_json::Value {
        serde_json::to_value(setting).unwrap_or_default()
    }

    /// A catalog entry's settings, ready to be a profile's (None if there is no such entry, or it
    /// is a kind that needs parameters first).
    fn catalog_settings(&self, name: &str) -> Option<Vec<Setting>> {
        let _ = name;
        None
    }

    /// Whether a device with these facts (at least [`crate::configuration::DEVICE_LOCK_FACTS`])
    /// supports the platform's own lock of its configuration, which a profile's `config_lock`
    /// asks for, and the settings that turn it on; or why not.
    fn device_lock(&self, facts: &[DeviceFact]) -> DeviceLock {
        let _ = facts;
        DeviceLock::Unsupported(format!(
            "{} devices have no device-side configuration lock",
            self.platform().as_str()
        ))
    }
}

/// The platform adapters this server runs, by platform.
#[derive(Clone, Default)]
pub struct Platforms(BTreeMap<Platform, Arc<dyn PlatformAdapter>>);

impl Platforms {
    pub fn new(adapters: impl IntoIterator<Item = Arc<dyn PlatformAdapter>>) -> Self {
        Self(adapters.into_iter().map(|a| (a.platform(), a)).collect())
    }

    /// The adapter of `platform`.
    pub fn get(&self, platform: Platform) -> Result<&dyn PlatformAdapter, CommandRejected> {
        self.0
            .get(&platform)
            .map(|a| a.as_ref())
            .ok_or_else(|| CommandRejected::Unsupported {
                platform,
                what: "management on this server".into(),
            })
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn PlatformAdapter> {
        self.0.values().map(|a| a.as_ref())
    }

    /// Every platform's built-in catalog, platform by platform.
    pub fn catalog(&self) -> impl Iterator<Item = &CatalogProfile> {
        self.iter().flat_map(|a| a.catalog())
    }

    /// How a command of `platform` reads in lists.
    pub fn describe(&self, platform: Platform, payload: &PlatformPayload) -> CommandSummary {
        match self.get(platform) {
            Ok(a) => a.describe(payload),
            Err(_) => CommandSummary::default(),
        }
    }
}

impl std::fmt::Debug for Platforms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}
