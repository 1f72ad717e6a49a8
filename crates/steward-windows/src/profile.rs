//! Windows profile settings: the profile file's `settings` entries validated into core
//! [`Setting`]s ([`profile_settings`]), written back ([`setting_document`]), the built-in catalog's
//! entries as settings ([`catalog_settings`]), and the OMA-DM command each reconciliation operation
//! becomes on the wire ([`render`]).
//!
//! A setting is one node (MS-MDM §2.2.7 Add/Replace/Exec on a CSP LocURI):
//!
//! ```yaml
//! - loc_uri: ./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera
//!   format: int            # int, chr, bool, b64, xml, null (and node, an interior node)
//!   value: 0               # a YAML scalar: number, true/false or string
//!   verb: replace          # replace (default), add or exec
//!   type: text/plain       # the syncml:metinf Type, when the CSP wants one
//!   readable: true         # see below
//!   on_remove: delete      # delete (default), keep or replace:<value>
//!   remove_loc_uri: ./…    # the node removal acts on, when it is not loc_uri
//!   doc: https://…         # informational (the catalog's), accepted and not stored
//!   description: …         # informational, accepted and not stored
//! ```
//!
//! `readable` says whether verification reads the node back with a Get and compares the value.
//! When it is not given it defaults to **true for Policy CSP nodes** (`./Device/Vendor/MSFT/Policy/
//! Config/…`, its legacy spelling `./Vendor/MSFT/Policy/Config/…`, and `./User/Vendor/MSFT/Policy/
//! Config/…`) written with Replace or Add and a value, because the Policy CSP answers a Get of a
//! configured node with its value (Learn "Policy CSP": Get returns the configured value), and
//! **false everywhere else**: many other CSPs have write-only nodes (passwords, blobs, Exec
//! targets) or answer a Get with something else than what was written. An Exec, a Format null or
//! node setting is never readable (there is no value to compare) and saying so is refused.
//!
//! A raw SyncML group is the escape hatch for what one node cannot say:
//!
//! ```yaml
//! - name: vpn-profile
//!   syncml: "<Atomic><CmdID>1</CmdID><Add>…</Add><Replace>…</Replace></Atomic>"
//!   on_remove: keep        # keep (default) or delete (with remove_loc_uri)
//! ```
//!
//! It is stored as a setting on the path `syncml:<name>` (format and verb `syncml`, never read
//! back) and validated here: it must parse with the hardened reader, hold only Add, Replace,
//! Delete, Exec or Atomic (an Atomic's children only Add, Replace, Delete or Exec), every item's
//! Target LocURI valid and in a scope, every Data of its format. The CmdIDs the admin wrote are
//! only checked to be there: on the wire the group goes under the operation's id. One command
//! (an Atomic counts as one) goes as it is; several go wrapped in a Sequence (OMA-DM RepPro
//! §6.6.14), so the device answers them under one CmdID and in order, each with its own status;
//! the group then counts as applied only if every command succeeded ([`group_code`]). A Sequence
//! is not all-or-nothing: an admin who needs that writes an Atomic, and only then is it sent as
//! one.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use steward_core::configuration::{OpKind, Setting, SettingOp};
use steward_core::{OnRemove, SettingRejected};
use steward_windows_proto::syncml::{self, Command as Sc, NS_MSFT, NS_SYNCML, is_well_formed_fragment};

use crate::catalog;
use crate::commands::{self, CommandError, CommandItem, OmaDmCommand, Verb};

/// The path prefix of a raw SyncML group's setting.
pub const SYNCML_PREFIX: &str = "syncml:";
/// The format and verb of a raw SyncML group's setting.
pub const SYNCML_KIND: &str = "syncml";

/// The Policy CSP roots whose nodes default to readable (see the module documentation).
const READABLE_ROOTS: &[&str] = &[
    "./Device/Vendor/MSFT/Policy/Config/",
    "./Vendor/MSFT/Policy/Config/",
    "./User/Vendor/MSFT/Policy/Config/",
];

/// The commands a raw group may hold at its top level, and inside an Atomic.
const GROUP_COMMANDS: &[&str] = &["Add", "Replace", "Delete", "Exec", "Atomic"];
const ATOMIC_CHILDREN: &[&str] = &["Add", "Replace", "Delete", "Exec"];

/// One node setting as the profile file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSetting {
    loc_uri: String,
    format: String,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    verb: Option<String>,
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    readable: Option<bool>,
    #[serde(default)]
    on_remove: Option<String>,
    #[serde(default)]
    remove_loc_uri: Option<String>,
    /// Informational (the catalog's): accepted so a catalog entry applies as it is, not stored.
    #[serde(default, rename = "doc")]
    _doc: Option<String>,
    #[serde(default, rename = "description")]
    _description: Option<String>,
}

/// A raw SyncML group as the profile file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSetting {
    name: String,
    syncml: String,
    #[serde(default)]
    on_remove: Option<String>,
    #[serde(default)]
    remove_loc_uri: Option<String>,
    /// Informational (the catalog's): accepted so a catalog entry applies as it is, not stored.
    #[serde(default, rename = "doc")]
    _doc: Option<String>,
    #[serde(default, rename = "description")]
    _description: Option<String>,
}

/// A setting refused, before its position is known: the path (if it got that far) and why.
type Refusal = (Option<String>, String);

/// Validates a profile document's settings ([`steward_core::PlatformAdapter::profile_settings`]).
/// The first bad setting is named; a path set twice (a node, or a node a raw group also targets)
/// is refused.
pub fn profile_settings(values: &[Value]) -> Result<Vec<Setting>, SettingRejected> {
    let mut out = Vec::with_capacity(values.len());
    // Every node path a setting writes, with the index of the setting that writes it.
    let mut nodes: BTreeMap<String, usize> = BTreeMap::new();
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    for (index, v) in values.iter().enumerate() {
        let reject = |(path, message): Refusal| SettingRejected { index, path, message };
        let (setting, targets) = one(v).map_err(reject)?;
        if let Some(first) = paths.insert(setting.path.clone(), index) {
            return Err(SettingRejected {
                index,
                path: Some(setting.path),
                message: format!("the path is already set by setting {first}"),
            });
        }
        for t in targets {
            if let Some(first) = nodes.insert(t.clone(), index)
                && first != index
            {
                return Err(SettingRejected {
                    index,
                    path: Some(setting.path),
                    message: format!("{t} is already written by setting {first}"),
                });
            }
        }
        out.push(setting);
    }
    Ok(out)
}

/// One setting and the nodes it writes.
fn one(v: &Value) -> Result<(Setting, Vec<String>), Refusal> {
    let Some(obj) = v.as_object() else {
        return Err((
            None,
            "a setting is an object (loc_uri, format, value, … or syncml, name)".into(),
        ));
    };
    if obj.contains_key("syncml") {
        let g = GroupSetting::deserialize(v).map_err(|e| (None, e.to_string()))?;
        group(g)
    } else {
        let path = obj.get("loc_uri").and_then(Value::as_str).map(str::to_owned);
        let n = NodeSetting::deserialize(v).map_err(|e| (path.clone(), e.to_string()))?;
        node(n).map_err(|m| (path, m))
    }
}

/// A YAML scalar as the value's text: numbers and booleans as written, strings as they are.
fn scalar(uri: &str, v: Option<Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(format!("{uri}: value must be a number, true/false or a string")),
    }
}

fn default_readable(uri: &str, verb: Verb, format: &str) -> bool {
    READABLE_ROOTS.iter().any(|r| uri.starts_with(r)) && verb != Verb::Exec && !matches!(format, "null" | "node")
}

fn node(n: NodeSetting) -> Result<(Setting, Vec<String>), String> {
    let uri = n.loc_uri.as_str();
    catalog::check_scope(uri)?;
    commands::validate_loc_uri(uri).map_err(|e| e.to_string())?;
    let verb = catalog::parse_verb(uri, n.verb.as_deref())?;
    catalog::check_format(uri, &n.format)?;
    let value = match (n.format.as_str(), scalar(uri, n.value)?) {
        ("null" | "node", None) => String::new(),
        (f @ ("null" | "node"), Some(_)) => return Err(format!("{uri}: format {f} carries no value")),
        (_, None) => return Err(format!("{uri}: no value")),
        // One spelling per integer, so equal values have equal digests.
        ("int", Some(v)) => match v.trim().parse::<i64>() {
            Ok(i) => i.to_string(),
            Err(_) => return Err(format!("{uri}: {v:?} is not a valid int value")),
        },
        (_, Some(v)) => v,
    };
    catalog::check_value(uri, &n.format, &value)?;
    let on_remove = catalog::parse_on_remove(uri, n.on_remove.as_deref().unwrap_or("delete"), &n.format)?;
    let remove_path = match n.remove_loc_uri {
        Some(r) if r != n.loc_uri => {
            catalog::check_remove_loc_uri(uri, &r)?;
            Some(r)
        }
        _ => None,
    };
    if let Some(t) = &n.type_
        && (t.is_empty() || t.len() > 255 || t.chars().any(char::is_control))
    {
        return Err(format!("{uri}: type {t:?} is not a media type"));
    }
    let readable = match n.readable {
        Some(true) if verb == Verb::Exec || matches!(n.format.as_str(), "null" | "node") => {
            return Err(format!(
                "{uri}: an {} of format {} cannot be read back (readable: false)",
                catalog::verb_name(verb),
                n.format
            ));
        }
        Some(r) => r,
        None => default_readable(uri, verb, &n.format),
    };
    let setting = Setting {
        path: n.loc_uri.clone(),
        format: n.format,
        verb: catalog::verb_name(verb),
        value,
        type_: n.type_,
        readable,
        on_remove,
        remove_path,
    };
    // What goes on the wire must pass the queue-time check every command gets.
    for kind in [OpKind::Apply, OpKind::Remove, OpKind::Verify] {
        if kind == OpKind::Remove && setting.on_remove == OnRemove::Keep {
            continue;
        }
        let c = render_setting(kind, &setting).map_err(|e| format!("{uri}: {e}"))?;
        commands::validate(&c).map_err(|e| format!("{uri}: {e}"))?;
    }
    Ok((setting, vec![n.loc_uri]))
}

fn valid_group_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn group(g: GroupSetting) -> Result<(Setting, Vec<String>), Refusal> {
    let path = format!("{SYNCML_PREFIX}{}", g.name);
    let fail = |m: String| (Some(path.clone()), m);
    if !valid_group_name(&g.name) {
        return Err((
            None,
            format!("group name {:?}: 1-64 letters, digits, '-', '_' or '.'", g.name),
        ));
    }
    let xml = g.syncml.trim().to_owned();
    let parsed = parse_group(&xml).map_err(fail)?;
    let on_remove = match g.on_remove.as_deref().unwrap_or("keep") {
        "keep" => OnRemove::Keep,
        "delete" => OnRemove::Delete,
        other => {
            return Err(fail(format!(
                "on_remove {other:?}: a raw SyncML group is kept (keep) or has a node deleted (delete, with remove_loc_uri)"
            )));
        }
    };
    let remove_path = match (&on_remove, g.remove_loc_uri) {
        (OnRemove::Delete, None) => {
            return Err(fail("on_remove delete needs remove_loc_uri: the node to delete".into()));
        }
        (_, Some(r)) => {
            catalog::check_scope(&r).map_err(&fail)?;
            commands::validate_loc_uri(&r).map_err(|e| fail(e.to_string()))?;
            Some(r)
        }
        (_, None) => None,
    };
    let wire = group_command(parsed.commands);
    commands::validate(&wire).map_err(|e| fail(e.to_string()))?;
    let setting = Setting {
        path: path.clone(),
        format: SYNCML_KIND.into(),
        verb: SYNCML_KIND.into(),
        value: xml,
        type_: None,
        readable: false,
        on_remove,
        remove_path,
    };
    Ok((setting, parsed.targets))
}

/// A raw group's commands and the nodes they target.
struct ParsedGroup {
    commands: Vec<OmaDmCommand>,
    targets: Vec<String>,
}

/// The group's commands on the wire: one as it is, several in a Sequence (module documentation).
fn group_command(mut commands: Vec<OmaDmCommand>) -> OmaDmCommand {
    if commands.len() == 1
        && let Some(c) = commands.pop()
    {
        return c;
    }
    OmaDmCommand {
        verb: Verb::Sequence,
        items: Vec::new(),
        children: commands,
    }
}

/// The SyncML body a raw group is read in: the group is the SyncBody's content, with the `msft`
/// prefix declared as Windows' own messages do (MS-MDM §2.2.4.3).
fn wrap(xml: &str) -> String {
    format!(
        "<SyncML xmlns=\"{NS_SYNCML}\"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>\
         <SessionID>1</SessionID><MsgID>1</MsgID></SyncHdr><SyncBody xmlns:msft=\"{NS_MSFT}\">{xml}</SyncBody></SyncML>"
    )
}

/// Parses and checks a raw group (module documentation).
fn parse_group(xml: &str) -> Result<ParsedGroup, String> {
    if xml.is_empty() {
        return Err("syncml is empty".into());
    }
    // Balanced on its own, so nothing in it can close the SyncBody it is read in.
    if !is_well_formed_fragment(xml) {
        return Err("syncml is not well-formed XML".into());
    }
    let wrapped = wrap(xml);
    // The structure first, on the hardened reader's tree, so every element is accounted for (the
    // SyncML reader skips what it cannot answer, which here must be an error).
    let doc = steward_windows_proto::xml::parse(&wrapped).map_err(|e| format!("syncml: {e}"))?;
    let body = doc
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .find(|n| n.tag_name().name() == "SyncBody")
        .ok_or("syncml: no body")?;
    for n in body.children() {
        if n.is_text() && n.text().is_some_and(|t| !t.trim().is_empty()) {
            return Err("syncml holds text outside any command".into());
        }
    }
    let mut count = 0;
    for el in body.children().filter(|n| n.is_element()) {
        count += 1;
        let name = el.tag_name().name();
        let ns_ok = el
            .tag_name()
            .namespace()
            .is_some_and(|ns| ns.eq_ignore_ascii_case(NS_SYNCML));
        if !ns_ok || !GROUP_COMMANDS.contains(&name) {
            return Err(format!(
                "<{name}> is not allowed: a raw SyncML group holds Add, Replace, Delete, Exec or Atomic"
            ));
        }
        let has_id = |e: &roxmltree::Node<'_, '_>| {
            e.children().any(|c| {
                c.is_element() && c.tag_name().name() == "CmdID" && c.text().is_some_and(|t| !t.trim().is_empty())
            })
        };
        if !has_id(&el) {
            return Err(format!("<{name}> (command {count}) has no CmdID"));
        }
        if name == "Atomic" {
            for child in el.children().filter(|n| n.is_element()) {
                let cn = child.tag_name().name();
                if matches!(cn, "CmdID" | "Meta") {
                    continue;
                }
                if !ATOMIC_CHILDREN.contains(&cn) {
                    return Err(format!(
                        "<{cn}> inside Atomic: an Atomic holds Add, Replace, Delete or Exec"
                    ));
                }
                if !has_id(&child) {
                    return Err(format!("<{cn}> inside Atomic (command {count}) has no CmdID"));
                }
            }
        }
    }
    if count == 0 {
        return Err("syncml holds no command".into());
    }
    let msg = syncml::parse(&wrapped).map_err(|e| format!("syncml: {e}"))?;
    if msg.body.commands.len() != count {
        return Err("syncml: a command could not be read".into());
    }
    let mut targets = Vec::new();
    let mut out = Vec::with_capacity(count);
    for (i, c) in msg.body.commands.iter().enumerate() {
        out.push(from_syncml(c, &mut targets).map_err(|e| format!("command {}: {e}", i + 1))?);
    }
    Ok(ParsedGroup { commands: out, targets })
}

/// A command of a raw group in the OMA-DM command model.
fn from_syncml(c: &Sc, targets: &mut Vec<String>) -> Result<OmaDmCommand, String> {
    let (verb, ic) = match c {
        Sc::Add(ic) => (Verb::Add, ic),
        Sc::Replace(ic) => (Verb::Replace, ic),
        Sc::Delete(ic) => (Verb::Delete, ic),
        Sc::Exec(ic) => (Verb::Exec, ic),
        Sc::Atomic(container) => {
            let mut children = Vec::with_capacity(container.commands.len());
            for child in &container.commands {
                if matches!(child, Sc::Atomic(_)) {
                    return Err("Atomic inside Atomic".into());
                }
                children.push(from_syncml(child, targets)?);
            }
            return Ok(OmaDmCommand {
                verb: Verb::Atomic,
                items: Vec::new(),
                children,
            });
        }
        Sc::Refused(r) => return Err(format!("<{}> cannot be read: {}", r.name, r.reason)),
        other => return Err(format!("<{}> is not allowed in a raw SyncML group", other.name())),
    };
    if ic.items.is_empty() {
        return Err(format!("<{}> has no Item", verb.as_str()));
    }
    let mut items = Vec::with_capacity(ic.items.len());
    for item in &ic.items {
        let target = item
            .target_uri()
            .ok_or_else(|| format!("an item of <{}> has no Target LocURI", verb.as_str()))?;
        catalog::check_scope(target)?;
        commands::validate_loc_uri(target).map_err(|e| e.to_string())?;
        if item.more_data {
            return Err(format!(
                "{target}: MoreData is not allowed (the server splits large values itself)"
            ));
        }
        let meta = item.meta.as_ref().or(ic.meta.as_ref());
        let format = meta.and_then(|m| m.format.clone());
        let data = item.data.as_ref().map(|d| d.as_str().to_owned());
        if let (Some(f), Some(d)) = (&format, &data)
            && matches!(f.as_str(), "int" | "bool" | "b64" | "xml")
        {
            catalog::check_value(target, f, d)?;
        }
        targets.push(target.to_owned());
        items.push(CommandItem {
            target: target.to_owned(),
            format,
            type_: meta.and_then(|m| m.type_.clone()),
            data,
        });
    }
    Ok(OmaDmCommand {
        verb,
        items,
        children: Vec::new(),
    })
}

/// The profile file's shape of a setting ([`steward_core::PlatformAdapter::setting_document`]).
pub fn setting_document(s: &Setting) -> Value {
    let mut m = serde_json::Map::new();
    if s.verb == SYNCML_KIND {
        m.insert(
            "name".into(),
            s.path.strip_prefix(SYNCML_PREFIX).unwrap_or(&s.path).into(),
        );
        m.insert("syncml".into(), s.value.clone().into());
        m.insert("on_remove".into(), s.on_remove.to_string().into());
        if let Some(r) = &s.remove_path {
            m.insert("remove_loc_uri".into(), r.clone().into());
        }
        return Value::Object(m);
    }
    m.insert("loc_uri".into(), s.path.clone().into());
    m.insert("format".into(), s.format.clone().into());
    match s.format.as_str() {
        "null" | "node" => {}
        "int" => {
            let v = s
                .value
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| s.value.clone().into());
            m.insert("value".into(), v);
        }
        "bool" => {
            let v = s
                .value
                .parse::<bool>()
                .map(Value::from)
                .unwrap_or_else(|_| s.value.clone().into());
            m.insert("value".into(), v);
        }
        _ => {
            m.insert("value".into(), s.value.clone().into());
        }
    }
    if s.verb != "replace" {
        m.insert("verb".into(), s.verb.clone().into());
    }
    if let Some(t) = &s.type_ {
        m.insert("type".into(), t.clone().into());
    }
    m.insert("readable".into(), s.readable.into());
    m.insert("on_remove".into(), s.on_remove.to_string().into());
    if let Some(r) = &s.remove_path {
        m.insert("remove_loc_uri".into(), r.clone().into());
    }
    Value::Object(m)
}

/// A built-in catalog entry's settings ([`steward_core::PlatformAdapter::catalog_settings`]): None
/// for an unknown name or a kind that needs parameters first.
pub fn catalog_settings(name: &str) -> Option<Vec<Setting>> {
    let entry = catalog::builtin().ok()?.iter().find(|p| p.name == name)?;
    if !entry.parameters.is_empty() {
        return None;
    }
    Some(
        entry
            .settings
            .iter()
            .map(|s| Setting {
                path: s.loc_uri.clone(),
                format: s.format.clone(),
                verb: catalog::verb_name(s.verb),
                value: s.value.clone(),
                type_: s.type_.clone(),
                readable: s.readable,
                on_remove: s.on_remove.clone(),
                remove_path: (s.remove_loc_uri != s.loc_uri).then(|| s.remove_loc_uri.clone()),
            })
            .collect(),
    )
}

/// A stored setting that cannot be rendered (one written by another version, or edited in the
/// database): the operation is not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("unknown verb {0:?}")]
    Verb(String),
    #[error("the raw SyncML group no longer reads: {0}")]
    Group(String),
    #[error("nothing to remove: the setting is kept on the device")]
    Kept,
    #[error("{0}")]
    Command(#[from] CommandError),
}

/// The OMA-DM command an operation becomes (docs/PROTOCOLS.md, "Profile settings on the wire"):
/// an Apply is the setting's verb with its Format, Type and Data (Format null: neither Format nor
/// Data), a raw group's commands; a Remove is a Delete of the removal node (OnRemove::Delete) or a
/// Replace of it with the value (OnRemove::Replace); a Verify is a Get of the node. The command
/// goes under the operation's id as its CmdID.
pub fn render(op: &SettingOp) -> Result<OmaDmCommand, RenderError> {
    let c = render_setting(op.kind, &op.setting)?;
    commands::validate(&c)?;
    Ok(c)
}

fn render_setting(kind: OpKind, s: &Setting) -> Result<OmaDmCommand, RenderError> {
    let remove_target = || s.remove_path.clone().unwrap_or_else(|| s.path.clone());
    match kind {
        OpKind::Apply if s.verb == SYNCML_KIND => {
            let parsed = parse_group(&s.value).map_err(RenderError::Group)?;
            Ok(group_command(parsed.commands))
        }
        OpKind::Apply => {
            let verb = catalog::parse_verb(&s.path, Some(&s.verb)).map_err(|_| RenderError::Verb(s.verb.clone()))?;
            Ok(OmaDmCommand::single(verb, value_item(s.path.clone(), s, &s.value)))
        }
        OpKind::Remove => match &s.on_remove {
            OnRemove::Delete => Ok(OmaDmCommand::single(
                Verb::Delete,
                CommandItem {
                    target: remove_target(),
                    format: None,
                    type_: None,
                    data: None,
                },
            )),
            OnRemove::Replace(v) => Ok(OmaDmCommand::single(Verb::Replace, value_item(remove_target(), s, v))),
            OnRemove::Keep => Err(RenderError::Kept),
        },
        OpKind::Verify => Ok(OmaDmCommand::single(
            Verb::Get,
            CommandItem {
                target: s.path.clone(),
                format: None,
                type_: None,
                data: None,
            },
        )),
    }
}

/// The item writing `value` to `target` in the setting's format: Format null carries neither
/// Format nor Data, Format node no Data.
fn value_item(target: String, s: &Setting, value: &str) -> CommandItem {
    match s.format.as_str() {
        "null" => CommandItem {
            target,
            format: None,
            type_: s.type_.clone(),
            data: None,
        },
        "node" => CommandItem {
            target,
            format: Some("node".into()),
            type_: s.type_.clone(),
            data: None,
        },
        f => CommandItem {
            target,
            format: Some(f.to_owned()),
            type_: s.type_.clone(),
            data: Some(value.to_owned()),
        },
    }
}

/// The code a group operation's answer counts as: a Sequence is answered 200 whatever its
/// children did, so the group succeeded only if every child did; the first failing child's code
/// decides otherwise. Other commands keep their own code.
pub fn group_code(setting: &Setting, code: u16, child_codes: &[u16]) -> u16 {
    if setting.verb != SYNCML_KIND || !steward_core::status_is_success(code) {
        return code;
    }
    child_codes
        .iter()
        .copied()
        .find(|c| !steward_core::status_is_success(*c))
        .unwrap_or(code)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use steward_core::CommandId;

    use super::*;

    const CAMERA: &str = "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera";

    fn ok(values: Vec<Value>) -> Vec<Setting> {
        match profile_settings(&values) {
            Ok(s) => s,
            Err(e) => panic!("refused: {e}"),
        }
    }

    fn refused(values: Vec<Value>) -> SettingRejected {
        match profile_settings(&values) {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => e,
        }
    }

    fn op(kind: OpKind, setting: &Setting) -> SettingOp {
        SettingOp {
            id: CommandId::new(),
            path: setting.path.clone(),
            kind,
            setting: setting.clone(),
            last_session: None,
        }
    }

    #[test]
    fn node_settings_and_their_defaults() {
        let s = ok(vec![
            json!({"loc_uri": CAMERA, "format": "int", "value": 0, "doc": "https://learn.microsoft.com/x", "description": "d"}),
            json!({"loc_uri": "./Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption", "format": "int", "value": "01"}),
            json!({"loc_uri": "./User/Vendor/MSFT/Policy/Config/Start/HideSleep", "format": "int", "value": 1,
                   "on_remove": "replace:0", "remove_loc_uri": "./User/Vendor/MSFT/Policy/Config/Start/HideSleep"}),
            json!({"loc_uri": "./Device/Vendor/MSFT/Reboot/RebootNow", "format": "null", "verb": "exec"}),
            json!({"loc_uri": "./Vendor/MSFT/Policy/Config/Browser/Home", "format": "chr", "value": true, "readable": false}),
        ]);
        assert_eq!(
            s[0],
            Setting {
                path: CAMERA.into(),
                format: "int".into(),
                verb: "replace".into(),
                value: "0".into(),
                type_: None,
                readable: true,
                on_remove: OnRemove::Delete,
                remove_path: None,
            }
        );
        // Outside the Policy CSP nothing is read back unless the admin says so; one int spelling.
        assert!(!s[1].readable);
        assert_eq!(s[1].value, "1");
        // The removal node equal to the setting's own is not kept twice.
        assert_eq!(
            (s[2].readable, &s[2].on_remove, &s[2].remove_path),
            (true, &OnRemove::Replace("0".into()), &None)
        );
        assert_eq!(
            (s[3].verb.as_str(), s[3].value.as_str(), s[3].readable),
            ("exec", "", false)
        );
        assert_eq!((s[4].value.as_str(), s[4].readable), ("true", false));
    }

    #[test]
    fn bad_settings_are_named() {
        let good = json!({"loc_uri": CAMERA, "format": "int", "value": 0});
        let with = |k: &str, v: Value| {
            let mut g = good.clone();
            g[k] = v;
            g
        };
        for (bad, why) in [
            (with("loc_uri", json!("./Devices/Vendor/MSFT/X")), "not under"),
            (with("loc_uri", json!("./Device/Vendor/MSFT//X")), "empty"),
            (with("format", json!("float")), "format \"float\""),
            (with("value", json!("yes")), "not a valid int value"),
            (with("value", json!(1.5)), "not a valid int value"),
            (with("value", json!([1])), "a number, true/false or a string"),
            (with("verb", json!("delete")), "verb \"delete\""),
            (with("on_remove", json!("forget")), "on_remove \"forget\""),
            (with("on_remove", json!("replace:x")), "not a valid int value"),
            (with("remove_loc_uri", json!("./User/Vendor/MSFT/X")), "another scope"),
            (with("colour", json!("red")), "unknown field `colour`"),
            (
                json!({"loc_uri": "./Device/Vendor/MSFT/Reboot/RebootNow", "format": "null", "verb": "exec", "readable": true}),
                "cannot be read back",
            ),
            (json!({"loc_uri": CAMERA, "format": "null"}), "needs Data"),
            (
                json!({"loc_uri": CAMERA, "format": "xml", "value": "<a><b></a>"}),
                "not a valid xml value",
            ),
            (json!({"loc_uri": CAMERA, "format": "int"}), "no value"),
            (
                json!({"loc_uri": CAMERA, "format": "null", "verb": "exec", "value": "1"}),
                "carries no value",
            ),
        ] {
            let e = refused(vec![
                json!({"loc_uri": "./Vendor/MSFT/Policy/Config/A/B", "format": "int", "value": 1}),
                bad.clone(),
            ]);
            assert_eq!(e.index, 1, "{bad}");
            assert!(e.message.contains(why), "{bad}: {e}");
        }
        let e = refused(vec![good.clone(), json!(3)]);
        assert_eq!((e.index, e.path), (1, None));
        // The same node twice, even with another value.
        let e = refused(vec![good.clone(), with("value", json!(1))]);
        assert_eq!((e.index, e.path.as_deref()), (1, Some(CAMERA)));
        assert!(e.message.contains("setting 0"), "{e}");
        assert_eq!(
            e.to_string(),
            format!("setting 1 ({CAMERA}): the path is already set by setting 0")
        );
    }

    const GROUP: &str = "<Replace><CmdID>1</CmdID><Item><Target><LocURI>./Device/Vendor/MSFT/Policy/Config/A/B</LocURI></Target>\
        <Meta><Format xmlns=\"syncml:metinf\">int</Format></Meta><Data>1</Data></Item></Replace>\
        <Add><CmdID>2</CmdID><Item><Target><LocURI>./Device/Vendor/MSFT/Policy/Config/A/C</LocURI></Target>\
        <Meta><Format xmlns=\"syncml:metinf\">chr</Format></Meta><Data><![CDATA[<enabled/>]]></Data></Item></Add>";

    #[test]
    fn raw_groups_are_parsed_and_sent_as_one_op() {
        let s = ok(vec![json!({"name": "two", "syncml": GROUP, "description": "d"})]);
        assert_eq!(
            (
                s[0].path.as_str(),
                s[0].format.as_str(),
                s[0].verb.as_str(),
                s[0].readable,
                &s[0].on_remove
            ),
            ("syncml:two", "syncml", "syncml", false, &OnRemove::Keep)
        );
        let apply = op(OpKind::Apply, &s[0]);
        let c = render(&apply).unwrap();
        assert_eq!(c.verb, Verb::Sequence);
        assert_eq!(
            c.children.iter().map(|c| c.verb).collect::<Vec<_>>(),
            [Verb::Replace, Verb::Add]
        );
        assert_eq!(c.children[1].items[0].data.as_deref(), Some("<enabled/>"));
        // On the wire: the op's id is the CmdID, the commands are its children.
        let wire = syncml::write(&syncml::SyncMl {
            header: syncml::SyncHdr::new("1", 1, "dev", "srv"),
            body: syncml::SyncBody {
                commands: vec![crate::session::to_syncml(&apply.id.wire_id(), &c)],
                final_: true,
            },
        });
        assert!(
            wire.contains(&format!("<Sequence><CmdID>{}</CmdID>", apply.id.wire_id())),
            "{wire}"
        );
        assert!(
            wire.contains(&format!("<CmdID>{}.2</CmdID>", apply.id.wire_id())),
            "{wire}"
        );
        // An Atomic the admin wrote goes as it is.
        let atomic = format!("<Atomic><CmdID>9</CmdID>{GROUP}</Atomic>");
        let s = ok(vec![json!({"name": "atomic", "syncml": atomic, "on_remove": "delete",
                                "remove_loc_uri": "./Device/Vendor/MSFT/Policy/Config/A/B"})]);
        assert_eq!(render(&op(OpKind::Apply, &s[0])).unwrap().verb, Verb::Atomic);
        let remove = render(&op(OpKind::Remove, &s[0])).unwrap();
        assert_eq!(
            (remove.verb, remove.items[0].target.as_str()),
            (Verb::Delete, "./Device/Vendor/MSFT/Policy/Config/A/B")
        );
        // One command goes alone.
        let one = GROUP.split("<Add>").next().unwrap();
        assert_eq!(
            render(&op(OpKind::Apply, &ok(vec![json!({"name": "one", "syncml": one})])[0]))
                .unwrap()
                .verb,
            Verb::Replace
        );
    }

    #[test]
    fn bad_raw_groups_say_what_is_wrong() {
        let item = "<Item><Target><LocURI>./Device/Vendor/MSFT/Policy/Config/A/B</LocURI></Target></Item>";
        for (xml, why) in [
            (format!("<Get><CmdID>1</CmdID>{item}</Get>"), "<Get> is not allowed"),
            (format!("<Sequence><CmdID>1</CmdID><Delete><CmdID>2</CmdID>{item}</Delete></Sequence>"), "<Sequence> is not allowed"),
            (format!("<Atomic><CmdID>1</CmdID><Get><CmdID>2</CmdID>{item}</Get></Atomic>"), "<Get> inside Atomic"),
            ("<Atomic><CmdID>1</CmdID><Atomic><CmdID>2</CmdID></Atomic></Atomic>".to_owned(), "<Atomic> inside Atomic"),
            (format!("<Delete>{item}</Delete>"), "has no CmdID"),
            (format!("<Delete><CmdID>1</CmdID>{item}</Delete>hello"), "text outside"),
            ("<Delete><CmdID>1</CmdID><Item>".to_owned(), "not well-formed"),
            ("".to_owned(), "empty"),
            ("<Delete><CmdID>1</CmdID><Item><Target><LocURI>./Devices/X</LocURI></Target></Item></Delete>".to_owned(), "not under"),
            ("<Delete><CmdID>1</CmdID></Delete>".to_owned(), "Item is missing"),
            (
                "<Replace><CmdID>1</CmdID><Item><Target><LocURI>./Vendor/MSFT/A</LocURI></Target><Meta><Format xmlns=\"syncml:metinf\">int</Format></Meta><Data>x</Data></Item></Replace>".to_owned(),
                "not a valid int value",
            ),
            (
                "<Replace><CmdID>1</CmdID><Item><Target><LocURI>./Vendor/MSFT/A</LocURI></Target><Meta><Format xmlns=\"syncml:metinf\">xml</Format></Meta><Data>&lt;a&gt;</Data></Item></Replace>".to_owned(),
                "not a valid xml value",
            ),
        ] {
            let e = refused(vec![json!({"name": "g", "syncml": xml})]);
            assert_eq!((e.index, e.path.as_deref()), (0, Some("syncml:g")), "{xml}");
            assert!(e.message.contains(why), "{xml}: {e}");
        }
        let e = refused(vec![json!({"name": "g", "syncml": GROUP, "on_remove": "delete"})]);
        assert!(e.message.contains("needs remove_loc_uri"), "{e}");
        let e = refused(vec![json!({"name": "g", "syncml": GROUP, "on_remove": "replace:1"})]);
        assert!(e.message.contains("on_remove"), "{e}");
        let e = refused(vec![json!({"name": "no spaces", "syncml": GROUP})]);
        assert!(e.message.contains("group name"), "{e}");
        // A node a group writes cannot also be a setting of its own.
        let e = refused(vec![
            json!({"loc_uri": "./Device/Vendor/MSFT/Policy/Config/A/C", "format": "int", "value": 1}),
            json!({"name": "g", "syncml": GROUP}),
        ]);
        assert_eq!(e.index, 1);
        assert!(e.message.contains("already written by setting 0"), "{e}");
    }

    #[test]
    fn documents_round_trip() {
        let settings = ok(vec![
            json!({"loc_uri": CAMERA, "format": "int", "value": 0}),
            json!({"loc_uri": "./Device/Vendor/MSFT/Policy/Config/A/Bool", "format": "bool", "value": true, "readable": false, "on_remove": "keep"}),
            json!({"loc_uri": "./Vendor/MSFT/X/Y", "format": "b64", "value": "AAEC", "verb": "add", "type": "application/octet-stream",
                   "on_remove": "delete", "remove_loc_uri": "./Vendor/MSFT/X"}),
            json!({"loc_uri": "./Device/Vendor/MSFT/Reboot/RebootNow", "format": "null", "verb": "exec"}),
            json!({"loc_uri": "./Device/Vendor/MSFT/Policy/Config/A/Xml", "format": "xml", "value": "<a x=\"1\">&amp;</a>"}),
            json!({"name": "group", "syncml": GROUP}),
            json!({"name": "atomic", "syncml": format!("<Atomic><CmdID>1</CmdID>{}</Atomic>", GROUP.replace("/A/", "/D/")),
                   "on_remove": "delete", "remove_loc_uri": "./Vendor/MSFT/Z"}),
        ]);
        let docs: Vec<Value> = settings.iter().map(setting_document).collect();
        assert_eq!(
            docs[0],
            json!({"loc_uri": CAMERA, "format": "int", "value": 0, "readable": true, "on_remove": "delete"})
        );
        assert_eq!(ok(docs), settings);
    }

    #[test]
    fn catalog_entries_become_settings() {
        let mut ready = 0;
        for entry in catalog::builtin().unwrap() {
            match catalog_settings(&entry.name) {
                Some(settings) => {
                    ready += 1;
                    assert!(entry.parameters.is_empty(), "{}", entry.name);
                    assert_eq!(settings.len(), entry.settings.len());
                    // What the catalog gives is what its file would give as a profile.
                    let docs: Vec<Value> = settings.iter().map(setting_document).collect();
                    assert_eq!(ok(docs), settings, "{}", entry.name);
                }
                None => assert!(!entry.parameters.is_empty(), "{}", entry.name),
            }
        }
        assert!(ready >= 10, "{ready}");
        assert_eq!(catalog_settings("no-such-entry"), None);
        assert_eq!(catalog_settings("kind-wifi"), None);
    }

    #[test]
    fn ops_render_to_their_commands() {
        let s = ok(vec![
            json!({"loc_uri": CAMERA, "format": "int", "value": 0, "on_remove": "replace:1"}),
            json!({"loc_uri": "./Device/Vendor/MSFT/Reboot/RebootNow", "format": "null", "verb": "exec"}),
            json!({"loc_uri": "./Vendor/MSFT/X/Y", "format": "chr", "value": "v", "verb": "add", "type": "text/plain",
                   "remove_loc_uri": "./Vendor/MSFT/X"}),
        ]);
        let apply = render(&op(OpKind::Apply, &s[0])).unwrap();
        assert_eq!(
            apply,
            OmaDmCommand::single(
                Verb::Replace,
                CommandItem {
                    target: CAMERA.into(),
                    format: Some("int".into()),
                    type_: None,
                    data: Some("0".into())
                }
            )
        );
        let remove = render(&op(OpKind::Remove, &s[0])).unwrap();
        assert_eq!(
            (remove.verb, remove.items[0].data.as_deref()),
            (Verb::Replace, Some("1"))
        );
        let verify = render(&op(OpKind::Verify, &s[0])).unwrap();
        assert_eq!(
            (verify.verb, verify.items[0].target.as_str(), &verify.items[0].data),
            (Verb::Get, CAMERA, &None)
        );
        let exec = render(&op(OpKind::Apply, &s[1])).unwrap();
        assert_eq!(
            (exec.verb, &exec.items[0].format, &exec.items[0].data),
            (Verb::Exec, &None, &None)
        );
        let add = render(&op(OpKind::Apply, &s[2])).unwrap();
        assert_eq!(
            (add.verb, add.items[0].type_.as_deref()),
            (Verb::Add, Some("text/plain"))
        );
        let delete = render(&op(OpKind::Remove, &s[2])).unwrap();
        assert_eq!(
            (delete.verb, delete.items[0].target.as_str()),
            (Verb::Delete, "./Vendor/MSFT/X")
        );
        let mut kept = s[1].clone();
        kept.on_remove = OnRemove::Keep;
        assert_eq!(render(&op(OpKind::Remove, &kept)), Err(RenderError::Kept));
        let mut odd = s[0].clone();
        odd.verb = "sing".into();
        assert_eq!(render(&op(OpKind::Apply, &odd)), Err(RenderError::Verb("sing".into())));
    }

    #[test]
    fn a_group_succeeds_only_if_every_command_did() {
        let g = ok(vec![json!({"name": "g", "syncml": GROUP})]).remove(0);
        assert_eq!(group_code(&g, 200, &[200, 404]), 404);
        assert_eq!(group_code(&g, 200, &[200, 200]), 200);
        assert_eq!(group_code(&g, 507, &[216, 500]), 507);
        let n = ok(vec![json!({"loc_uri": CAMERA, "format": "int", "value": 0})]).remove(0);
        assert_eq!(group_code(&n, 200, &[404]), 200);
    }
}
