//! Inventory: which CSP nodes Steward reads (DevInfo, DevDetail, DeviceStatus, Defender, BitLocker,
//! DMClient CSPs) and the platform-neutral fact each becomes. The device's own Replace of DevInfo at
//! session start feeds the same map.

use steward_core::{FactName, FactUpdate, facts};

use crate::commands::{CommandItem, OmaDmCommand, Verb};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactKind {
    Text,
    Int,
    Bool,
}

const fn f(name: &'static str) -> FactName {
    FactName::from_static(name)
}

/// (LocURI, fact name, kind). LocURIs use the `./Vendor/MSFT` spelling for device-scope CSPs;
/// [`fact_for`] also accepts the `./Device/Vendor/MSFT` alias Windows treats as the same node.
pub const INVENTORY: &[(&str, FactName, FactKind)] = &[
    ("./DevInfo/Man", f("hardware.manufacturer"), FactKind::Text),
    ("./DevInfo/Mod", f("hardware.model"), FactKind::Text),
    ("./DevInfo/DmV", f("mdm.client_version"), FactKind::Text),
    ("./DevInfo/Lang", f("os.language"), FactKind::Text),
    ("./DevDetail/SwV", f("os.version"), FactKind::Text),
    ("./DevDetail/OEM", f("hardware.oem"), FactKind::Text),
    ("./DevDetail/FwV", f("hardware.firmware_version"), FactKind::Text),
    ("./DevDetail/HwV", f("hardware.version"), FactKind::Text),
    ("./DevDetail/DevTyp", f("hardware.type"), FactKind::Text),
    ("./DevDetail/Ext/Microsoft/OSPlatform", f("os.platform"), FactKind::Text),
    (
        "./DevDetail/Ext/Microsoft/ProcessorArchitecture",
        f("hardware.processor_architecture"),
        FactKind::Text,
    ),
    (
        "./DevDetail/Ext/Microsoft/TotalRAM",
        f("hardware.ram_mb"),
        FactKind::Int,
    ),
    (
        "./DevDetail/Ext/Microsoft/TotalStorage",
        f("hardware.storage_mb"),
        FactKind::Int,
    ),
    (
        "./DevDetail/Ext/Microsoft/SMBIOSSerialNumber",
        f("hardware.serial_number"),
        FactKind::Text,
    ),
    ("./DevDetail/Ext/Microsoft/DeviceName", f("device.name"), FactKind::Text),
    ("./Vendor/MSFT/DeviceStatus/OS/Edition", f("os.edition"), FactKind::Text),
    (
        "./Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance",
        f("security.encryption_compliance"),
        FactKind::Int,
    ),
    (
        "./Vendor/MSFT/BitLocker/Status/DeviceEncryptionStatus",
        f("security.bitlocker_status"),
        FactKind::Int,
    ),
    (
        "./Vendor/MSFT/DeviceStatus/TPM/SpecificationVersion",
        f("security.tpm_version"),
        FactKind::Text,
    ),
    (
        "./Vendor/MSFT/DeviceStatus/Antivirus/Status",
        f("security.antivirus_status"),
        FactKind::Int,
    ),
    (
        "./Vendor/MSFT/DeviceStatus/Antivirus/SignatureStatus",
        f("security.antivirus_signature_status"),
        FactKind::Int,
    ),
    (
        "./Vendor/MSFT/DeviceStatus/Firewall/Status",
        f("security.firewall_status"),
        FactKind::Int,
    ),
    (
        "./Vendor/MSFT/Defender/Health/RtpEnabled",
        f("security.defender_realtime"),
        FactKind::Bool,
    ),
    (
        "./Vendor/MSFT/Defender/Health/DefenderEnabled",
        f("security.defender_enabled"),
        FactKind::Bool,
    ),
    ("./Vendor/MSFT/DMClient/HWDevID", f("device.hw_dev_id"), FactKind::Text),
];

/// `./Device/Vendor/MSFT/X` and `./Vendor/MSFT/X` address the same device-scope node. The scope
/// prefix is matched ignoring ASCII case (`./device/vendor/…`; Learn "OMA DM protocol support"
/// writes scopes in lower case, interop review M-9).
pub fn normalize(loc_uri: &str) -> std::borrow::Cow<'_, str> {
    const DEVICE_VENDOR: &str = "./Device/Vendor/";
    const VENDOR: &str = "./Vendor/";
    match loc_uri.get(..DEVICE_VENDOR.len()) {
        Some(p) if p.eq_ignore_ascii_case(DEVICE_VENDOR) => {
            std::borrow::Cow::Owned(format!("{VENDOR}{}", &loc_uri[DEVICE_VENDOR.len()..]))
        }
        _ => match loc_uri.get(..VENDOR.len()) {
            Some(p) if p.eq_ignore_ascii_case(VENDOR) && p != VENDOR => {
                std::borrow::Cow::Owned(format!("{VENDOR}{}", &loc_uri[VENDOR.len()..]))
            }
            _ => std::borrow::Cow::Borrowed(loc_uri),
        },
    }
}

/// The fact a node's value becomes, normalised by kind; None for nodes we do not track or values that
/// do not fit the kind.
pub fn fact_for(loc_uri: &str, value: &str) -> Option<FactUpdate> {
    let uri = normalize(loc_uri);
    let secured_core = (facts::SECURED_CORE, FactKind::Bool);
    let (name, kind) = if crate::config_lock::is_secure_core(&uri) {
        (&secured_core.0, &secured_core.1)
    } else {
        INVENTORY
            .iter()
            .find(|(u, _, _)| *u == uri.as_ref())
            .map(|(_, n, k)| (n, k))?
    };
    let value = value.trim();
    let value = match kind {
        FactKind::Text => value.chars().take(512).collect(),
        FactKind::Int => value.parse::<i64>().ok()?.to_string(),
        FactKind::Bool => match value.to_ascii_lowercase().as_str() {
            "true" | "1" => "true".to_owned(),
            "false" | "0" => "false".to_owned(),
            _ => return None,
        },
    };
    Some(FactUpdate::new(name.clone(), value))
}

/// One Get with every inventory node, and our DMClient provider's ConfigLock `SecureCore` (fact
/// `security.secured_core`: whether ConfigLock can work, [`crate::config_lock`]). Windows answers
/// each item with its own Results item or a 404 for nodes its edition or build lacks.
pub fn inventory_command(provider_id: &str) -> OmaDmCommand {
    let item = |target: String| CommandItem {
        target,
        format: None,
        type_: None,
        data: None,
    };
    OmaDmCommand {
        verb: Verb::Get,
        items: INVENTORY
            .iter()
            .map(|(uri, _, _)| item((*uri).into()))
            .chain([item(crate::config_lock::secure_core_path(provider_id))])
            .collect(),
        children: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(name: &'static str, value: &str) -> FactUpdate {
        FactUpdate::new(FactName::from_static(name), value)
    }

    #[test]
    fn aliases_and_kinds() {
        assert_eq!(
            normalize("./Device/Vendor/MSFT/DMClient/HWDevID"),
            "./Vendor/MSFT/DMClient/HWDevID"
        );
        assert_eq!(normalize("./DevInfo/Man"), "./DevInfo/Man");
        assert_eq!(
            normalize("./device/vendor/MSFT/DMClient/HWDevID"),
            "./Vendor/MSFT/DMClient/HWDevID"
        );
        assert_eq!(
            normalize("./vendor/MSFT/DMClient/HWDevID"),
            "./Vendor/MSFT/DMClient/HWDevID"
        );
        assert_eq!(
            fact_for("./Device/Vendor/MSFT/BitLocker/Status/DeviceEncryptionStatus", " 0 "),
            Some(fact("security.bitlocker_status", "0"))
        );
        assert_eq!(fact_for("./DevDetail/Ext/Microsoft/TotalRAM", "lots"), None);
        assert_eq!(
            fact_for("./Vendor/MSFT/Defender/Health/RtpEnabled", "True"),
            Some(fact("security.defender_realtime", "true"))
        );
        assert_eq!(fact_for("./Unknown/Node", "x"), None);
        assert_eq!(inventory_command("Steward").items.len(), INVENTORY.len() + 1);
        assert_eq!(
            fact_for(
                "./Device/Vendor/MSFT/DMClient/Provider/Steward/ConfigLock/SecureCore",
                "True"
            ),
            Some(FactUpdate::new(facts::SECURED_CORE, "true"))
        );
        assert_eq!(
            fact_for("./Vendor/MSFT/DMClient/Provider/Steward/ConfigLock/SecureCore", "maybe"),
            None
        );
    }

    #[test]
    fn fact_names_are_valid_and_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for (uri, name, _) in INVENTORY {
            assert_eq!(FactName::parse(name.as_str()).as_ref(), Some(name), "{uri}");
            assert!(seen.insert(name.as_str()), "{name} twice");
        }
    }
}
