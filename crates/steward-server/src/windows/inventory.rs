//! Inventory: which CSP nodes Steward reads (DevInfo, DevDetail, DeviceStatus, Defender, BitLocker,
//! DMClient CSPs) and the typed fact each becomes. The device's own Replace of DevInfo at session
//! start feeds the same map.

use steward_core::{CommandItem, CommandPayload, Verb};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactKind {
    Text,
    Int,
    Bool,
}

/// (LocURI, fact name, kind). LocURIs use the `./Vendor/MSFT` spelling for device-scope CSPs;
/// [`fact_for`] also accepts the `./Device/Vendor/MSFT` alias Windows treats as the same node.
pub const INVENTORY: &[(&str, &str, FactKind)] = &[
    ("./DevInfo/Man", "hardware.manufacturer", FactKind::Text),
    ("./DevInfo/Mod", "hardware.model", FactKind::Text),
    ("./DevInfo/DmV", "mdm.client_version", FactKind::Text),
    ("./DevInfo/Lang", "os.language", FactKind::Text),
    ("./DevDetail/SwV", "os.version", FactKind::Text),
    ("./DevDetail/OEM", "hardware.oem", FactKind::Text),
    ("./DevDetail/FwV", "hardware.firmware_version", FactKind::Text),
    ("./DevDetail/HwV", "hardware.version", FactKind::Text),
    ("./DevDetail/DevTyp", "hardware.type", FactKind::Text),
    ("./DevDetail/Ext/Microsoft/OSPlatform", "os.platform", FactKind::Text),
    (
        "./DevDetail/Ext/Microsoft/ProcessorArchitecture",
        "hardware.processor_architecture",
        FactKind::Text,
    ),
    ("./DevDetail/Ext/Microsoft/TotalRAM", "hardware.ram_mb", FactKind::Int),
    (
        "./DevDetail/Ext/Microsoft/TotalStorage",
        "hardware.storage_mb",
        FactKind::Int,
    ),
    (
        "./DevDetail/Ext/Microsoft/SMBIOSSerialNumber",
        "hardware.serial_number",
        FactKind::Text,
    ),
    ("./DevDetail/Ext/Microsoft/DeviceName", "device.name", FactKind::Text),
    ("./Vendor/MSFT/DeviceStatus/OS/Edition", "os.edition", FactKind::Text),
    (
        "./Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance",
        "security.encryption_compliance",
        FactKind::Int,
    ),
    (
        "./Vendor/MSFT/BitLocker/Status/DeviceEncryptionStatus",
        "security.bitlocker_status",
        FactKind::Int,
    ),
    (
        "./Vendor/MSFT/DeviceStatus/TPM/SpecificationVersion",
        "security.tpm_version",
        FactKind::Text,
    ),
    (
        "./Vendor/MSFT/DeviceStatus/Antivirus/Status",
        "security.antivirus_status",
        FactKind::Int,
    ),
    (
        "./Vendor/MSFT/DeviceStatus/Antivirus/SignatureStatus",
        "security.antivirus_signature_status",
        FactKind::Int,
    ),
    (
        "./Vendor/MSFT/DeviceStatus/Firewall/Status",
        "security.firewall_status",
        FactKind::Int,
    ),
    (
        "./Vendor/MSFT/Defender/Health/RtpEnabled",
        "security.defender_realtime",
        FactKind::Bool,
    ),
    (
        "./Vendor/MSFT/Defender/Health/DefenderEnabled",
        "security.defender_enabled",
        FactKind::Bool,
    ),
    ("./Vendor/MSFT/DMClient/HWDevID", "device.hw_dev_id", FactKind::Text),
];

/// Fact recording when the last inventory arrived (drives the refresh schedule).
pub const COLLECTED_AT: &str = "inventory.collected_at";
pub const ORIGIN: &str = "inventory";

/// `./Device/Vendor/MSFT/X` and `./Vendor/MSFT/X` address the same device-scope node.
pub fn normalize(loc_uri: &str) -> std::borrow::Cow<'_, str> {
    match loc_uri.strip_prefix("./Device/Vendor/") {
        Some(rest) => std::borrow::Cow::Owned(format!("./Vendor/{rest}")),
        None => std::borrow::Cow::Borrowed(loc_uri),
    }
}

/// The fact a node's value becomes, normalised by kind; None for nodes we do not track or values that
/// do not fit the kind.
pub fn fact_for(loc_uri: &str, value: &str) -> Option<(String, String)> {
    let uri = normalize(loc_uri);
    let (_, name, kind) = INVENTORY.iter().find(|(u, _, _)| *u == uri.as_ref())?;
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
    Some(((*name).to_owned(), value))
}

/// One Get with every inventory node (Windows answers each item with its own Results item or a 404
/// for nodes its edition lacks).
pub fn inventory_command() -> CommandPayload {
    CommandPayload {
        verb: Verb::Get,
        items: INVENTORY
            .iter()
            .map(|(uri, _, _)| CommandItem {
                target: (*uri).into(),
                format: None,
                type_: None,
                data: None,
            })
            .collect(),
        children: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_kinds() {
        assert_eq!(
            normalize("./Device/Vendor/MSFT/DMClient/HWDevID"),
            "./Vendor/MSFT/DMClient/HWDevID"
        );
        assert_eq!(normalize("./DevInfo/Man"), "./DevInfo/Man");
        assert_eq!(
            fact_for("./Device/Vendor/MSFT/BitLocker/Status/DeviceEncryptionStatus", " 0 "),
            Some(("security.bitlocker_status".into(), "0".into()))
        );
        assert_eq!(fact_for("./DevDetail/Ext/Microsoft/TotalRAM", "lots"), None);
        assert_eq!(
            fact_for("./Vendor/MSFT/Defender/Health/RtpEnabled", "True"),
            Some(("security.defender_realtime".into(), "true".into()))
        );
        assert_eq!(fact_for("./Unknown/Node", "x"), None);
        assert_eq!(inventory_command().items.len(), INVENTORY.len());
    }
}
