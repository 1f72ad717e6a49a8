//! The built-in configuration catalog, as the platform-neutral surfaces see it: ready profiles (one
//! per security-baseline area, update rings) and parameterised profile kinds (Wi-Fi, VPN,
//! certificates, app install), each a list of settings with the node path, its format, the
//! recommended value, whether the device can read it back, its documentation and what to do with it
//! when the profile is removed. Each platform adapter owns its catalog's data and validation
//! ([`crate::PlatformAdapter::catalog`]); the admin API, the console and the CLI only list it.
//!
//! The shape is the profile file's (`kind: profile`, `settings`), so the profile model that assigns
//! profiles to groups can take a catalog entry as it is.

use crate::model::Platform;

/// What a catalog entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CatalogCategory {
    /// One area of the platform's security baseline, ready to assign.
    Baseline,
    /// An update ring (deferrals, deadlines), ready to assign.
    UpdateRing,
    /// A profile kind that needs parameters (an SSID, a server, a certificate, a package) first.
    Kind,
}

impl CatalogCategory {
    pub const ALL: [CatalogCategory; 3] = [Self::Baseline, Self::UpdateRing, Self::Kind];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::UpdateRing => "update-ring",
            Self::Kind => "kind",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What to do with a setting when its profile is removed from a device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OnRemove {
    /// Delete the node (the platform's default applies again).
    Delete,
    /// Write this value instead.
    Replace(String),
    /// Leave the node as it is (e.g. removing a certificate trust or an app is a decision of its own).
    Keep,
}

impl OnRemove {
    /// `delete`, `keep` or `replace:<value>` (the catalog files' spelling).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "delete" => Some(Self::Delete),
            "keep" => Some(Self::Keep),
            _ => s.strip_prefix("replace:").map(|v| Self::Replace(v.to_owned())),
        }
    }
}

impl std::fmt::Display for OnRemove {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Delete => f.write_str("delete"),
            Self::Keep => f.write_str("keep"),
            Self::Replace(v) => write!(f, "replace:{v}"),
        }
    }
}

/// One setting of a catalog profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSetting {
    /// The node (for Windows an OMA-DM LocURI); may hold `{{parameter}}` placeholders.
    pub path: String,
    /// The node's format (for Windows the `syncml:metinf` Format: int, chr, bool, b64, xml, null).
    pub format: String,
    /// How the value is written: `replace` (the default), `add` (nodes that must be created) or
    /// `exec`.
    pub verb: String,
    /// The recommended value, as sent; may hold placeholders. Empty for Format null.
    pub value: String,
    /// Whether the device answers a read of the node with the value (some nodes are write-only:
    /// passwords, blobs, Exec targets).
    pub readable: bool,
    /// The platform's documentation of the node.
    pub doc: String,
    pub on_remove: OnRemove,
    pub description: String,
}

/// A value the admin supplies before a profile kind can be assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogParameter {
    pub name: String,
    pub description: String,
    /// A secret (a Wi-Fi key, a PFX password): never shown back, never logged.
    pub secret: bool,
    /// An example value (used to check the rendered profile; never a real secret).
    pub example: String,
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogProfile {
    /// Unique within the platform's catalog, e.g. `baseline-bitlocker`.
    pub name: String,
    pub platform: Platform,
    pub category: CatalogCategory,
    /// The area it covers, e.g. `bitlocker`, `defender-antivirus`, `wifi`.
    pub area: String,
    pub title: String,
    pub description: String,
    /// The documentation the settings were taken from.
    pub source: String,
    pub settings: Vec<CatalogSetting>,
    pub parameters: Vec<CatalogParameter>,
}

/// Finds a catalog entry by name in a platform's catalog.
pub fn find<'a>(catalog: &'a [CatalogProfile], name: &str) -> Option<&'a CatalogProfile> {
    catalog.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_remove_round_trips() {
        for s in ["delete", "keep", "replace:0", "replace:"] {
            assert_eq!(OnRemove::parse(s).map(|r| r.to_string()).as_deref(), Some(s));
        }
        assert_eq!(
            OnRemove::parse("replace:<disabled/>"),
            Some(OnRemove::Replace("<disabled/>".into()))
        );
        assert_eq!(OnRemove::parse("remove"), None);
        for c in CatalogCategory::ALL {
            assert_eq!(CatalogCategory::parse(c.as_str()), Some(c));
        }
    }
}
