//! Inventory: typed facts a device reports, by stable name, with their history.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A fact's stable name: lower-case dotted words (`os.version`, `hardware.serial_number`). Names are
/// platform-neutral, so a rule over facts (a dynamic group, a compliance check) reads the same on
/// every platform; each platform adapter maps its own sources onto them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FactName(Cow<'static, str>);

impl FactName {
    /// A name known at compile time (the platforms' inventory tables). Not checked: those tables
    /// are tested instead.
    pub const fn from_static(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }
    /// A name from outside (the database, an API filter): 1-128 of `a-z`, `0-9`, `_` and `.`.
    pub fn parse(name: &str) -> Option<Self> {
        let ok = (1..=128).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.'));
        ok.then(|| Self(Cow::Owned(name.to_owned())))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for FactName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl Serialize for FactName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FactName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self(Cow::Owned(s)))
    }
}

/// Facts every platform's check-in maintains.
pub mod facts {
    use super::FactName;

    /// When the device last answered a full inventory read (RFC 3339).
    pub const INVENTORY_COLLECTED_AT: FactName = FactName::from_static("inventory.collected_at");
    /// The check-in interval the device last confirmed, in minutes.
    pub const POLL_INTERVAL_MINUTES: FactName = FactName::from_static("mdm.poll_interval_minutes");
    /// Whether the device is a secured-core PC (`true`/`false`; Windows: DMClient
    /// `Provider/{ProviderID}/ConfigLock/SecureCore`): the device-side configuration lock works
    /// only there ([`crate::configuration::DeviceLock`]).
    pub const SECURED_CORE: FactName = FactName::from_static("security.secured_core");
}

/// A typed inventory value with its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFact {
    /// Stable key, e.g. `os.version`, `hardware.serial_number`.
    pub name: FactName,
    pub value: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A fact value reported in a check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactUpdate {
    pub name: FactName,
    pub value: String,
}

impl FactUpdate {
    pub fn new(name: FactName, value: impl Into<String>) -> Self {
        Self {
            name,
            value: value.into(),
        }
    }
}

/// One change of a fact's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactChange {
    pub name: FactName,
    pub old_value: Option<String>,
    pub new_value: String,
    pub at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fact_names() {
        assert!(FactName::parse("os.version").is_some());
        assert!(FactName::parse("hardware.ram_mb").is_some());
        for bad in ["", "OS.version", "os version", "os/version", &"a".repeat(129)] {
            assert!(FactName::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(FactName::parse("os.version"), Some(FactName::from_static("os.version")));
    }
}
