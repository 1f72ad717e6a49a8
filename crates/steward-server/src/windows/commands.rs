//! Building and validating the commands admins (and Steward itself) queue for Windows devices:
//! remote actions (MS-MDM CSPs: RemoteWipe, Reboot, RemoteLock) and arbitrary Get/Add/Replace/
//! Delete/Exec/Atomic. Validation happens at queue time so a bad command is refused with a clear error
//! instead of failing on the device (Fleet's profiles stuck "Pending" were unescaped XML in Data).

use steward_core::{CommandItem, CommandPayload, Verb};
use steward_windows_proto::syncml::is_well_formed_fragment;

/// The wipe variants of the RemoteWipe CSP (plus AutomaticRedeployment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WipeKind {
    /// `doWipe`: reset; user data and provisioning removed.
    Wipe,
    /// `doWipeProtected`: like doWipe but keeps the device from booting until reset completes, so a
    /// user cannot interrupt it by power-cycling.
    Protected,
    /// `doWipePersistUserData`: reset keeping user accounts and data.
    PersistUserData,
    /// `doWipePersistProvisionedData`: reset keeping provisioning data (re-applied after reset).
    PersistProvisionedData,
    /// AutomaticRedeployment CSP `doAutomaticRedeployment` (Autopilot Reset).
    AutomaticRedeployment,
}

impl WipeKind {
    pub fn loc_uri(self) -> &'static str {
        match self {
            Self::Wipe => "./Device/Vendor/MSFT/RemoteWipe/doWipe",
            Self::Protected => "./Device/Vendor/MSFT/RemoteWipe/doWipeProtected",
            Self::PersistUserData => "./Device/Vendor/MSFT/RemoteWipe/doWipePersistUserData",
            Self::PersistProvisionedData => "./Device/Vendor/MSFT/RemoteWipe/doWipePersistProvisionedData",
            Self::AutomaticRedeployment => "./Device/Vendor/MSFT/AutomaticRedeployment/doAutomaticRedeployment",
        }
    }
}

/// A remote action and the command it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Wipe(WipeKind),
    Reboot,
    /// RemoteLock CSP `Lock`. Windows desktop editions may refuse it (the CSP targets mobile); the
    /// device's status is recorded either way.
    Lock,
}

impl Action {
    /// Origin label stored with the command; `action:wipe` acknowledgements end the enrollment.
    pub fn origin(&self) -> &'static str {
        match self {
            Action::Wipe(_) => ORIGIN_WIPE,
            Action::Reboot => "action:reboot",
            Action::Lock => "action:lock",
        }
    }

    pub fn payload(&self) -> CommandPayload {
        let target = match self {
            Action::Wipe(k) => k.loc_uri(),
            Action::Reboot => "./Device/Vendor/MSFT/Reboot/RebootNow",
            Action::Lock => "./Vendor/MSFT/RemoteLock/Lock",
        };
        CommandPayload::single(
            Verb::Exec,
            CommandItem {
                target: target.into(),
                format: Some("chr".into()),
                type_: None,
                data: Some(String::new()),
            },
        )
    }
}

pub const ORIGIN_WIPE: &str = "action:wipe";

/// Formats a command may carry (`syncml:metinf` Format, OMA-DM DevInf / MS-MDM).
const FORMATS: &[&str] = &[
    "chr", "int", "bool", "b64", "bin", "xml", "node", "float", "date", "time", "null",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("a command needs at least one item")]
    NoItems,
    #[error("invalid LocURI {0:?}: {1}")]
    LocUri(String, &'static str),
    #[error("unknown Format {0:?}")]
    Format(String),
    #[error("item for {0} has Format xml but its Data is not well-formed XML")]
    XmlData(String),
    #[error("{0} must not carry Data")]
    UnexpectedData(String),
    #[error("{0} needs Data")]
    MissingData(String),
    #[error("Atomic holds Add, Replace, Delete or Exec children only (no nesting, no Get)")]
    AtomicChild,
    #[error("command too large ({0} bytes; at most {MAX_DATA_BYTES})")]
    TooLarge(usize),
}

/// Largest Data a queued command may carry. Bigger payloads need large-object chunking.
pub const MAX_DATA_BYTES: usize = 256 * 1024;

/// MS-MDM LocURI rules: relative (`./`), no empty or dot segments, printable, bounded.
pub fn validate_loc_uri(uri: &str) -> Result<(), CommandError> {
    let bad = |why| Err(CommandError::LocUri(uri.to_owned(), why));
    if !uri.starts_with("./") {
        return bad("must start with ./");
    }
    if uri.len() > 1024 {
        return bad("longer than 1024 characters");
    }
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("contains whitespace or control characters");
    }
    if uri[2..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return bad("has an empty, . or .. segment");
    }
    Ok(())
}

/// Checks a payload before it is queued.
pub fn validate(payload: &CommandPayload) -> Result<(), CommandError> {
    validate_at(payload, false)
}

fn validate_at(p: &CommandPayload, in_atomic: bool) -> Result<(), CommandError> {
    if p.verb == Verb::Atomic {
        if in_atomic || p.children.is_empty() || !p.items.is_empty() {
            return Err(CommandError::AtomicChild);
        }
        for c in &p.children {
            if matches!(c.verb, Verb::Get | Verb::Atomic) {
                return Err(CommandError::AtomicChild);
            }
            validate_at(c, true)?;
        }
        return Ok(());
    }
    if p.items.is_empty() {
        return Err(CommandError::NoItems);
    }
    if !p.children.is_empty() {
        return Err(CommandError::AtomicChild);
    }
    let mut total = 0;
    for item in &p.items {
        validate_loc_uri(&item.target)?;
        if let Some(f) = &item.format
            && !FORMATS.contains(&f.as_str())
        {
            return Err(CommandError::Format(f.clone()));
        }
        match (p.verb, &item.data) {
            (Verb::Get | Verb::Delete, Some(d)) if !d.is_empty() => {
                return Err(CommandError::UnexpectedData(item.target.clone()));
            }
            (Verb::Add | Verb::Replace, None) if item.format.as_deref() != Some("node") => {
                return Err(CommandError::MissingData(item.target.clone()));
            }
            _ => {}
        }
        if let Some(d) = &item.data {
            total += d.len();
            if item.format.as_deref() == Some("xml") && !is_well_formed_fragment(d) {
                return Err(CommandError::XmlData(item.target.clone()));
            }
        }
    }
    if total > MAX_DATA_BYTES {
        return Err(CommandError::TooLarge(total));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(target: &str, format: Option<&str>, data: Option<&str>) -> CommandItem {
        CommandItem {
            target: target.into(),
            format: format.map(Into::into),
            type_: None,
            data: data.map(Into::into),
        }
    }

    #[test]
    fn loc_uri_rules() {
        assert!(validate_loc_uri("./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera").is_ok());
        for bad in ["/Device/X", "Device/X", "./a//b", "./a/../b", "./a b", "./a/\u{7}"] {
            assert!(validate_loc_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payload_rules() {
        let ok = CommandPayload::single(Verb::Replace, item("./Vendor/MSFT/X", Some("int"), Some("1")));
        assert_eq!(validate(&ok), Ok(()));
        let get_with_data = CommandPayload::single(Verb::Get, item("./DevDetail/SwV", None, Some("x")));
        assert!(matches!(validate(&get_with_data), Err(CommandError::UnexpectedData(_))));
        let bad_xml = CommandPayload::single(Verb::Replace, item("./Vendor/MSFT/X", Some("xml"), Some("<a><b></a>")));
        assert!(matches!(validate(&bad_xml), Err(CommandError::XmlData(_))));
        let good_xml = CommandPayload::single(
            Verb::Add,
            item("./Vendor/MSFT/X", Some("xml"), Some("<a x=\"1\">&amp;</a>")),
        );
        assert_eq!(validate(&good_xml), Ok(()));
        let nested = CommandPayload {
            verb: Verb::Atomic,
            items: vec![],
            children: vec![CommandPayload {
                verb: Verb::Atomic,
                items: vec![],
                children: vec![ok.clone()],
            }],
        };
        assert_eq!(validate(&nested), Err(CommandError::AtomicChild));
        let atomic = CommandPayload {
            verb: Verb::Atomic,
            items: vec![],
            children: vec![ok.clone(), ok],
        };
        assert_eq!(validate(&atomic), Ok(()));
        assert!(matches!(
            validate(&CommandPayload::single(
                Verb::Replace,
                item("./X", Some("weird"), Some("1"))
            )),
            Err(CommandError::Format(_))
        ));
    }

    #[test]
    fn actions_target_the_right_csp() {
        assert_eq!(
            Action::Wipe(WipeKind::Protected).payload().items[0].target,
            "./Device/Vendor/MSFT/RemoteWipe/doWipeProtected"
        );
        assert_eq!(Action::Reboot.payload().verb, Verb::Exec);
        for a in [Action::Wipe(WipeKind::Wipe), Action::Reboot, Action::Lock] {
            assert_eq!(validate(&a.payload()), Ok(()));
        }
    }
}
