//! [`WindowsAdapter`]: what the platform-neutral services ask of Windows (the command a remote action
//! becomes, admins' own commands validated, commands described for lists, where devices enroll).

use serde::Deserialize;
use steward_core::configuration::DeviceLock;
use steward_core::{
    Action, CatalogProfile, CommandRejected, CommandSummary, DeviceFact, EnrollmentEndpoint, Platform, PlatformAdapter,
    PlatformPayload, Setting, SettingRejected,
};

use crate::commands::{self, CommandItem, OmaDmCommand, Verb};

/// The Windows [`PlatformAdapter`], for the DMClient provider id the server enrolls devices with
/// (`enrollment.provider_id`: the inventory and ConfigLock nodes live under it).
#[derive(Debug, Clone)]
pub struct WindowsAdapter {
    provider_id: String,
}

impl WindowsAdapter {
    pub fn new(provider_id: impl Into<String>) -> Self {
        Self {
            provider_id: provider_id.into(),
        }
    }

    pub fn provider_id(&self) -> &str {
        &self.provider_id
    }
}

impl Default for WindowsAdapter {
    /// The default provider id (`enrollment.provider_id`'s default).
    fn default() -> Self {
        Self::new(crate::DEFAULT_PROVIDER_ID)
    }
}

/// The admin API's request for a custom OMA-DM command.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandRequest {
    verb: VerbName,
    items: Vec<ItemRequest>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum VerbName {
    Get,
    Add,
    Replace,
    Delete,
    Exec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemRequest {
    target: String,
    format: Option<String>,
    #[serde(rename = "type")]
    type_: Option<String>,
    data: Option<String>,
}

impl PlatformAdapter for WindowsAdapter {
    fn platform(&self) -> Platform {
        Platform::Windows
    }

    fn action_command(&self, action: Action) -> Result<PlatformPayload, CommandRejected> {
        Ok(commands::action_command(action, &self.provider_id).to_payload())
    }

    fn admin_command(&self, request: &serde_json::Value) -> Result<PlatformPayload, CommandRejected> {
        let req = CommandRequest::deserialize(request)
            .map_err(|e| CommandRejected::Invalid(format!("invalid command: {e}")))?;
        let verb = match req.verb {
            VerbName::Get => Verb::Get,
            VerbName::Add => Verb::Add,
            VerbName::Replace => Verb::Replace,
            VerbName::Delete => Verb::Delete,
            VerbName::Exec => Verb::Exec,
        };
        let command = OmaDmCommand {
            verb,
            items: req
                .items
                .into_iter()
                .map(|i| CommandItem {
                    target: i.target,
                    format: i.format,
                    type_: i.type_,
                    data: i.data,
                })
                .collect(),
            children: Vec::new(),
        };
        commands::validate(&command).map_err(|e| CommandRejected::Invalid(e.to_string()))?;
        Ok(command.to_payload())
    }

    fn describe(&self, payload: &PlatformPayload) -> CommandSummary {
        match OmaDmCommand::from_payload(payload) {
            Ok(c) => CommandSummary {
                kind: c.verb.as_str().to_owned(),
                targets: c.targets().into_iter().map(str::to_owned).collect(),
            },
            Err(_) => CommandSummary {
                kind: "unreadable".to_owned(),
                targets: Vec::new(),
            },
        }
    }

    fn enrollment_endpoints(&self, public_url: &str) -> Vec<EnrollmentEndpoint> {
        vec![EnrollmentEndpoint {
            name: "Windows discovery".to_owned(),
            url: format!("{}{}", public_url.trim_end_matches('/'), crate::DISCOVERY_URL_PATH),
        }]
    }

    fn catalog(&self) -> &[CatalogProfile] {
        crate::catalog::builtin_core()
    }

    fn profile_settings(&self, settings: &[serde_json::Value]) -> Result<Vec<Setting>, SettingRejected> {
        crate::profile::profile_settings(settings)
    }

    fn setting_document(&self, setting: &Setting) -> serde_json::Value {
        crate::profile::setting_document(setting)
    }

    fn catalog_settings(&self, name: &str) -> Option<Vec<Setting>> {
        crate::profile::catalog_settings(name)
    }

    fn device_lock(&self, facts: &[DeviceFact]) -> DeviceLock {
        crate::config_lock::device_lock(&self.provider_id, facts)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use steward_core::WipeKind;

    use super::*;

    #[test]
    fn admin_commands_are_validated() {
        let a = WindowsAdapter::default();
        let ok = a
            .admin_command(&json!({
                "verb": "replace",
                "items": [{"target": "./Vendor/MSFT/Policy/Config/Camera/AllowCamera", "format": "int", "data": "0"}]
            }))
            .unwrap();
        let c = OmaDmCommand::from_payload(&ok).unwrap();
        assert_eq!(c.verb, Verb::Replace);
        assert_eq!(c.items[0].format.as_deref(), Some("int"));
        let typed = a
            .admin_command(&json!({"verb": "exec", "items": [{"target": "./Vendor/MSFT/X", "type": "text/plain"}]}))
            .unwrap();
        assert_eq!(
            OmaDmCommand::from_payload(&typed).unwrap().items[0].type_.as_deref(),
            Some("text/plain")
        );
        assert_eq!(
            a.admin_command(&json!({"verb": "get", "items": []})),
            Err(CommandRejected::Invalid("a command needs at least one item".into()))
        );
        assert_eq!(
            a.admin_command(&json!({"verb": "get", "items": [{"target": "/bad"}]})),
            Err(CommandRejected::Invalid(
                "invalid LocURI \"/bad\": must start with ./".into()
            ))
        );
        for bad in [
            json!({"verb": "atomic", "items": []}),
            json!({"verb": "get", "items": [], "extra": 1}),
            json!({"verb": "get", "items": [{"target": "./X", "value": "1"}]}),
            json!({"items": []}),
        ] {
            assert!(
                matches!(a.admin_command(&bad), Err(CommandRejected::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn actions_describe_and_endpoints() {
        let a = WindowsAdapter::default();
        let wipe = a.action_command(Action::Wipe(WipeKind::Wipe)).unwrap();
        assert_eq!(
            a.describe(&wipe),
            CommandSummary {
                kind: "Exec".into(),
                targets: vec!["./Device/Vendor/MSFT/RemoteWipe/doWipe".into()],
            }
        );
        let sync = a.action_command(Action::Sync).unwrap();
        assert_eq!(a.describe(&sync).kind, "Get");
        assert_eq!(a.describe(&PlatformPayload::from_json("[]".into())).kind, "unreadable");
        assert_eq!(
            a.enrollment_endpoints("https://mdm.example.com/"),
            vec![EnrollmentEndpoint {
                name: "Windows discovery".into(),
                url: "https://mdm.example.com/EnrollmentServer/Discovery.svc".into(),
            }]
        );
    }
}
