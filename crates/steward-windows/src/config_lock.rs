//! DMClient ConfigLock: the Windows 11 secured-core PC feature that watches the settings it locks
//! and reverts a local change within seconds (Learn "Secured-core PC configuration lock",
//! <https://learn.microsoft.com/windows/client-management/config-lock>). A profile with
//! `config_lock: true` asks for it; on a device that supports it the reconciliation also sets
//! the DMClient node below and tracks it like any setting (sent, verified by reading it back,
//! failed with the device's status, and — once no assigned profile asks — set back to 0).
//!
//! The nodes (Learn "DMClient CSP",
//! <https://learn.microsoft.com/windows/client-management/mdm/dmclient-csp>):
//! - `./Device/Vendor/MSFT/DMClient/Provider/{ProviderID}/ConfigLock/Lock`: int, 0 unlock
//!   (default), 1 lock; Add, Delete, Get, Replace. Learn's config-lock page turns the lock off by
//!   setting 0, which is this setting's removal rule.
//! - `…/ConfigLock/SecureCore`: bool, Get only: whether the device is a secured-core PC. Steward
//!   reads it with the inventory (fact `security.secured_core`).
//! - `…/ConfigLock/UnlockDuration` (1-480 minutes of temporary unlock) is not set: helpdesk
//!   unlocks are a device action, not a profile's.
//!
//! Support, per the CSP reference's applicability: Windows 11, version 21H2 (10.0.22000) and
//! later, Pro, Enterprise, Education, SE and IoT Enterprise editions; and the lock only applies on
//! a secured-core PC ("If the device isn't a Secured-core PC, then this feature won't work"). The
//! server knows the build from `./DevDetail/SwV` (fact `os.version`) and secured-core from the
//! SecureCore node; editions without the feature do not answer that node, so such a device stays
//! "has not reported" rather than being sent a lock it would ignore.

use steward_core::configuration::DeviceLock;
use steward_core::group_rule::DottedVersion;
use steward_core::{DeviceFact, OnRemove, Setting, facts};

/// The Learn page of the DMClient ConfigLock nodes.
pub const DOC: &str =
    "https://learn.microsoft.com/windows/client-management/mdm/dmclient-csp#deviceproviderprovideridconfiglock";
/// The first Windows build with DMClient ConfigLock (Windows 11, version 21H2).
pub const MIN_BUILD: &str = "10.0.22000";

/// The Lock node under our DMClient provider.
pub fn lock_path(provider_id: &str) -> String {
    format!("./Device/Vendor/MSFT/DMClient/Provider/{provider_id}/ConfigLock/Lock")
}

/// The SecureCore node under our DMClient provider (read with the inventory).
pub fn secure_core_path(provider_id: &str) -> String {
    format!("./Vendor/MSFT/DMClient/Provider/{provider_id}/ConfigLock/SecureCore")
}

/// Whether `loc_uri` (already in the `./Vendor/MSFT` spelling) is some provider's SecureCore node.
pub fn is_secure_core(loc_uri: &str) -> bool {
    loc_uri
        .strip_prefix("./Vendor/MSFT/DMClient/Provider/")
        .and_then(|rest| rest.strip_suffix("/ConfigLock/SecureCore"))
        .is_some_and(|provider| !provider.is_empty() && !provider.contains('/'))
}

/// The setting that turns the lock on: Lock = 1, read back to verify, set back to 0 when no
/// assigned profile asks for it any more.
pub fn lock_setting(provider_id: &str) -> Setting {
    Setting {
        path: lock_path(provider_id),
        format: "int".into(),
        verb: "replace".into(),
        value: "1".into(),
        type_: None,
        readable: true,
        on_remove: OnRemove::Replace("0".into()),
        remove_path: None,
    }
}

/// Whether the device whose facts these are supports ConfigLock, and if so the settings that turn
/// it on; otherwise why not, for the device's settings view.
pub fn device_lock(provider_id: &str, device_facts: &[DeviceFact]) -> DeviceLock {
    let fact = |name: &steward_core::FactName| {
        device_facts
            .iter()
            .find(|f| f.name == *name)
            .map(|f| f.value.trim().to_owned())
    };
    let os = steward_core::FactName::from_static("os.version");
    let min = DottedVersion::parse(MIN_BUILD);
    match fact(&os) {
        None => {
            return DeviceLock::Unsupported(format!(
                "DMClient ConfigLock needs Windows 11 ({MIN_BUILD} or later); the device has not reported its build yet"
            ));
        }
        Some(v) => {
            let new_enough = match (DottedVersion::parse(&v), min) {
                (Some(have), Some(min)) => have.compare(&min).is_ge(),
                _ => false,
            };
            if !new_enough {
                return DeviceLock::Unsupported(format!(
                    "DMClient ConfigLock needs Windows 11 ({MIN_BUILD} or later); the device runs {v}"
                ));
            }
        }
    }
    match fact(&facts::SECURED_CORE).as_deref() {
        Some("true") => DeviceLock::Supported(vec![lock_setting(provider_id)]),
        Some(_) => DeviceLock::Unsupported(
            "the device is not a secured-core PC (DMClient ConfigLock/SecureCore is false): Windows applies ConfigLock only there"
                .into(),
        ),
        None => DeviceLock::Unsupported(
            "the device has not reported whether it is a secured-core PC (DMClient ConfigLock/SecureCore, read with the inventory); editions without ConfigLock never do"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn fact(name: &'static str, value: &str) -> DeviceFact {
        DeviceFact {
            name: steward_core::FactName::from_static(name),
            value: value.into(),
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn reason(l: DeviceLock) -> String {
        match l {
            DeviceLock::Unsupported(r) => r,
            DeviceLock::Supported(s) => panic!("supported: {s:?}"),
        }
    }

    #[test]
    fn supported_only_on_windows_11_secured_core_pcs() {
        let win11 = fact("os.version", "10.0.22631.2861");
        let yes = fact("security.secured_core", "true");
        assert_eq!(
            device_lock("Steward", &[win11.clone(), yes.clone()]),
            DeviceLock::Supported(vec![lock_setting("Steward")])
        );
        let s = lock_setting("Steward");
        assert_eq!(s.path, "./Device/Vendor/MSFT/DMClient/Provider/Steward/ConfigLock/Lock");
        assert_eq!((s.value.as_str(), s.readable), ("1", true));
        assert_eq!(s.on_remove, OnRemove::Replace("0".into()));
        let op = steward_core::SettingOp {
            id: steward_core::SettingOp::id_for(
                steward_core::EnrollmentId::new(),
                &s.path,
                steward_core::OpKind::Apply,
                &s.digest(),
            ),
            path: s.path.clone(),
            kind: steward_core::OpKind::Apply,
            setting: s.clone(),
            last_session: None,
        };
        assert!(crate::profile::render(&op).is_ok(), "the lock renders as a command");

        assert!(
            reason(device_lock(
                "Steward",
                &[fact("os.version", "10.0.19045.3803"), yes.clone()]
            ))
            .contains("runs 10.0.19045.3803")
        );
        assert!(reason(device_lock("Steward", std::slice::from_ref(&yes))).contains("not reported its build"));
        assert!(reason(device_lock("Steward", &[fact("os.version", "ten"), yes])).contains("runs ten"));
        assert!(
            reason(device_lock(
                "Steward",
                &[win11.clone(), fact("security.secured_core", "false")]
            ))
            .contains("not a secured-core PC")
        );
        assert!(reason(device_lock("Steward", &[win11])).contains("has not reported whether"));
    }

    #[test]
    fn secure_core_nodes_of_any_provider() {
        assert!(is_secure_core(&secure_core_path("Steward")));
        assert!(is_secure_core(
            "./Vendor/MSFT/DMClient/Provider/MS DM Server/ConfigLock/SecureCore"
        ));
        assert!(!is_secure_core(
            "./Vendor/MSFT/DMClient/Provider//ConfigLock/SecureCore"
        ));
        assert!(!is_secure_core(
            "./Vendor/MSFT/DMClient/Provider/A/B/ConfigLock/SecureCore"
        ));
        assert!(!is_secure_core("./Vendor/MSFT/DMClient/Provider/A/ConfigLock/Lock"));
    }
}
