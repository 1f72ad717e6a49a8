//! The OMA-DM command model (what a queued Windows command's [`PlatformPayload`] holds), building the
//! commands remote actions become (MS-MDM CSPs: RemoteWipe, Reboot, RemoteLock; an inventory read),
//! and validating admins' arbitrary Get/Add/Replace/Delete/Exec/Atomic. Validation happens at queue
//! time so a bad command is refused with a clear error instead of failing on the device (Fleet's
//! profiles stuck "Pending" were unescaped XML in Data).

use serde::{Deserialize, Serialize};
use steward_core::{Action, PlatformPayload, WipeKind};
use steward_windows_proto::syncml::is_well_formed_fragment;

/// The OMA-DM verb of a command (MS-MDM §2.2.1 / OMA-DM RepPro §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verb {
    Get,
    Add,
    Replace,
    Delete,
    Exec,
    /// All-or-nothing group of Add/Replace/Delete/Exec children.
    Atomic,
    /// Children processed in order, each answered on its own (OMA-DM RepPro §6.6.14). Not taken
    /// from admins' commands: it carries a raw SyncML profile setting of several commands, so the
    /// device answers them under one CmdID (see `crate::profile`).
    Sequence,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "Get",
            Verb::Add => "Add",
            Verb::Replace => "Replace",
            Verb::Delete => "Delete",
            Verb::Exec => "Exec",
            Verb::Atomic => "Atomic",
            Verb::Sequence => "Sequence",
        }
    }
}

/// One item of a command: the node it targets and, for writes, the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandItem {
    pub target: String,
    /// `syncml:metinf` Format: chr, int, bool, b64, xml, node, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `syncml:metinf` Type, e.g. text/plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// What a Windows command does. Atomic carries children; the others carry items. Stored as the
/// command's [`PlatformPayload`] (JSON in this shape, which rows written before the platform split
/// share).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OmaDmCommand {
    pub verb: Verb,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<CommandItem>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<OmaDmCommand>,
}

/// A stored payload that is not an OMA-DM command.
#[derive(Debug, thiserror::Error)]
#[error("not an OMA-DM command: {0}")]
pub struct PayloadError(#[from] serde_json::Error);

impl OmaDmCommand {
    pub fn single(verb: Verb, item: CommandItem) -> Self {
        Self {
            verb,
            items: vec![item],
            children: Vec::new(),
        }
    }

    /// The payload to queue.
    pub fn to_payload(&self) -> PlatformPayload {
        // Strings, enums and vectors only: serialising cannot fail.
        PlatformPayload::from_json(serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads a queued Windows command back.
    pub fn from_payload(p: &PlatformPayload) -> Result<Self, PayloadError> {
        Ok(serde_json::from_str(p.as_json())?)
    }

    /// Whether any target is in the user scope (`./User/…`), which only works while a user is signed
    /// in (MS-MDM; Fleet's user-scoped profiles failed with 500/507 before a user session existed).
    /// The scope is matched ignoring ASCII case: Learn "OMA DM protocol support" writes its own
    /// per-user example as `./user/vendor/MSFT/…` (interop review M-9).
    pub fn is_user_scoped(&self) -> bool {
        self.items.iter().any(|i| is_user_scope(&i.target)) || self.children.iter().any(Self::is_user_scoped)
    }

    /// All targets, depth first (for display, search and matching asynchronous completions).
    pub fn targets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.items.iter().map(|i| i.target.as_str()).collect();
        for c in &self.children {
            out.extend(c.targets());
        }
        out
    }
}

/// Whether `loc_uri` is in the per-user scope: `./User` or below it, in any ASCII case.
pub fn is_user_scope(loc_uri: &str) -> bool {
    let b = loc_uri.as_bytes();
    b.len() >= 6 && b[..6].eq_ignore_ascii_case(b"./user") && (b.len() == 6 || b[6] == b'/')
}

/// The RemoteWipe CSP node (or AutomaticRedeployment's) of a wipe kind.
pub fn wipe_loc_uri(kind: WipeKind) -> &'static str {
    match kind {
        WipeKind::Wipe => "./Device/Vendor/MSFT/RemoteWipe/doWipe",
        WipeKind::Protected => "./Device/Vendor/MSFT/RemoteWipe/doWipeProtected",
        WipeKind::PersistUserData => "./Device/Vendor/MSFT/RemoteWipe/doWipePersistUserData",
        WipeKind::PersistProvisionedData => "./Device/Vendor/MSFT/RemoteWipe/doWipePersistProvisionedData",
        WipeKind::AutomaticRedeployment => "./Device/Vendor/MSFT/AutomaticRedeployment/doAutomaticRedeployment",
    }
}

/// The command a remote action becomes. RemoteLock `Lock`: Windows desktop editions may refuse it
/// (the CSP targets mobile); the device's status is recorded either way. A sync is the inventory
/// read ([`crate::inventory::inventory_command`]) of the nodes under our DMClient `provider_id`.
pub fn action_command(action: Action, provider_id: &str) -> OmaDmCommand {
    let target = match action {
        Action::Wipe(k) => wipe_loc_uri(k),
        Action::Reboot => "./Device/Vendor/MSFT/Reboot/RebootNow",
        Action::Lock => "./Vendor/MSFT/RemoteLock/Lock",
        Action::Sync => return crate::inventory::inventory_command(provider_id),
    };
    OmaDmCommand::single(
        Verb::Exec,
        CommandItem {
            target: target.into(),
            format: Some("chr".into()),
            type_: None,
            data: Some(String::new()),
        },
    )
}

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
    #[error("Sequence holds Add, Replace, Delete, Exec or Atomic children only (no nesting, no Get)")]
    SequenceChild,
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

/// Checks a command before it is queued.
pub fn validate(command: &OmaDmCommand) -> Result<(), CommandError> {
    validate_at(command, false)
}

fn validate_at(p: &OmaDmCommand, in_atomic: bool) -> Result<(), CommandError> {
    if p.verb == Verb::Sequence {
        if in_atomic || p.children.is_empty() || !p.items.is_empty() {
            return Err(CommandError::SequenceChild);
        }
        for c in &p.children {
            if matches!(c.verb, Verb::Get | Verb::Sequence) {
                return Err(CommandError::SequenceChild);
            }
            validate_at(c, false)?;
        }
        return Ok(());
    }
    if p.verb == Verb::Atomic {
        if in_atomic || p.children.is_empty() || !p.items.is_empty() {
            return Err(CommandError::AtomicChild);
        }
        for c in &p.children {
            if matches!(c.verb, Verb::Get | Verb::Atomic | Verb::Sequence) {
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
            // An Add without Data creates an interior node (Format node, or none at all, as
            // Microsoft's EnterpriseDesktopAppManagement example adds DownloadInstall).
            (Verb::Add, None) if !matches!(item.format.as_deref(), None | Some("node")) => {
                return Err(CommandError::MissingData(item.target.clone()));
            }
            (Verb::Replace, None) if item.format.as_deref() != Some("node") => {
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
    fn user_scope_ignores_ascii_case() {
        for user in [
            "./User/Vendor/MSFT/Policy/Config/X",
            "./user/vendor/MSFT/X",
            "./USER",
            "./uSeR/x",
        ] {
            assert!(is_user_scope(user), "{user}");
            assert!(OmaDmCommand::single(Verb::Replace, item(user, None, Some("1"))).is_user_scoped());
        }
        for device in [
            "./Device/Vendor/MSFT/X",
            "./Vendor/MSFT/X",
            "./Users/X",
            "./Userx",
            "./Us",
        ] {
            assert!(!is_user_scope(device), "{device}");
        }
    }

    #[test]
    fn payload_rules() {
        let ok = OmaDmCommand::single(Verb::Replace, item("./Vendor/MSFT/X", Some("int"), Some("1")));
        assert_eq!(validate(&ok), Ok(()));
        let get_with_data = OmaDmCommand::single(Verb::Get, item("./DevDetail/SwV", None, Some("x")));
        assert!(matches!(validate(&get_with_data), Err(CommandError::UnexpectedData(_))));
        // An interior node: Add without Data (no Format, or node); Replace always needs Data.
        let node = OmaDmCommand::single(Verb::Add, item("./Vendor/MSFT/X/Y", None, None));
        assert_eq!(validate(&node), Ok(()));
        let typed_without_data = OmaDmCommand::single(Verb::Add, item("./Vendor/MSFT/X", Some("int"), None));
        assert!(matches!(
            validate(&typed_without_data),
            Err(CommandError::MissingData(_))
        ));
        let replace_without_data = OmaDmCommand::single(Verb::Replace, item("./Vendor/MSFT/X", None, None));
        assert!(matches!(
            validate(&replace_without_data),
            Err(CommandError::MissingData(_))
        ));
        let bad_xml = OmaDmCommand::single(Verb::Replace, item("./Vendor/MSFT/X", Some("xml"), Some("<a><b></a>")));
        assert!(matches!(validate(&bad_xml), Err(CommandError::XmlData(_))));
        let good_xml = OmaDmCommand::single(
            Verb::Add,
            item("./Vendor/MSFT/X", Some("xml"), Some("<a x=\"1\">&amp;</a>")),
        );
        assert_eq!(validate(&good_xml), Ok(()));
        let nested = OmaDmCommand {
            verb: Verb::Atomic,
            items: vec![],
            children: vec![OmaDmCommand {
                verb: Verb::Atomic,
                items: vec![],
                children: vec![ok.clone()],
            }],
        };
        assert_eq!(validate(&nested), Err(CommandError::AtomicChild));
        let atomic = OmaDmCommand {
            verb: Verb::Atomic,
            items: vec![],
            children: vec![ok.clone(), ok],
        };
        assert_eq!(validate(&atomic), Ok(()));
        assert!(matches!(
            validate(&OmaDmCommand::single(
                Verb::Replace,
                item("./X", Some("weird"), Some("1"))
            )),
            Err(CommandError::Format(_))
        ));
    }

    #[test]
    fn actions_target_the_right_csp() {
        assert_eq!(
            action_command(Action::Wipe(WipeKind::Protected), "Steward").items[0].target,
            "./Device/Vendor/MSFT/RemoteWipe/doWipeProtected"
        );
        assert_eq!(action_command(Action::Reboot, "Steward").verb, Verb::Exec);
        for a in [Action::Wipe(WipeKind::Wipe), Action::Reboot, Action::Lock, Action::Sync] {
            assert_eq!(validate(&action_command(a, "Steward")), Ok(()));
        }
        assert_eq!(
            action_command(Action::Sync, "Steward"),
            crate::inventory::inventory_command("Steward")
        );
    }

    #[test]
    fn stored_rows_read_back() {
        // The JSON rows written before the platform split (steward_domain::CommandPayload).
        let stored = r#"{"verb":"Atomic","children":[{"verb":"Replace","items":[{"target":"./Vendor/MSFT/A","format":"int","data":"1"}]},{"verb":"Exec","items":[{"target":"./Vendor/MSFT/B","type_":"text/plain"}]}]}"#;
        let c = OmaDmCommand::from_payload(&PlatformPayload::from_json(stored.into())).unwrap();
        assert_eq!(c.verb, Verb::Atomic);
        assert_eq!(c.children[1].items[0].type_.as_deref(), Some("text/plain"));
        assert_eq!(c.to_payload().as_json(), stored);
        assert!(OmaDmCommand::from_payload(&PlatformPayload::from_json("{\"verb\":\"Sing\"}".into())).is_err());
    }
}
