//! The built-in Windows configuration catalog: one YAML file per security-baseline area, update
//! ring or profile kind under `crates/steward-windows/catalog/`, embedded at build time, parsed and
//! validated here, rendered into OMA-DM commands ([`render`]) and handed to the platform-neutral
//! surfaces as [`steward_core::CatalogProfile`]s (through [`crate::WindowsAdapter`]).
//!
//! Each file is a profile document in the shape `steward apply` reads (`kind: profile`, `name`,
//! `platform`, `settings` of `loc_uri`/`format`/`value`), plus catalog keys: `catalog` (category,
//! area, title, description, source), per setting `readable`, `doc`, `on_remove`, `description`
//! and optionally `verb` (add/replace/exec), `type` (the `syncml:metinf` Type) and
//! `remove_loc_uri` (the node removal deletes, when it is not the setting's own), and `parameters`
//! for kinds that need the admin's values (`{{name}}` placeholders in LocURIs and values; a secret
//! parameter is marked `secret`). Built-in entries carry no `assign`: assigning is the admin's.
//!
//! No LocURI is guessed: each was found in Microsoft's CSP documentation (each setting's `doc`).
//! The tests below check the files' rules, not the devices' behaviour. docs/CATALOG.md says how to
//! add a setting.
//!
//! YAML crate: serde-saphyr. serde_yaml is unmaintained; serde-saphyr is maintained, deserialises
//! straight into serde types, and is panic-free on malformed input (the catalog is our own data, but
//! the same parser will read admins' profile files).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use base64::Engine;
use serde::Deserialize;
use steward_core::{CatalogCategory, CatalogParameter, CatalogProfile, CatalogSetting, OnRemove, Platform};
use steward_windows_proto::syncml::is_well_formed_fragment;

use crate::commands::{self, CommandError, CommandItem, OmaDmCommand, Verb};

/// The catalog files, in listing order (baseline areas, update rings, kinds).
const FILES: &[(&str, &str)] = &[
    (
        "baseline-bitlocker.yaml",
        include_str!("../catalog/baseline-bitlocker.yaml"),
    ),
    (
        "baseline-defender-antivirus.yaml",
        include_str!("../catalog/baseline-defender-antivirus.yaml"),
    ),
    (
        "baseline-smartscreen.yaml",
        include_str!("../catalog/baseline-smartscreen.yaml"),
    ),
    (
        "baseline-firewall.yaml",
        include_str!("../catalog/baseline-firewall.yaml"),
    ),
    (
        "baseline-vbs-exploit-protection.yaml",
        include_str!("../catalog/baseline-vbs-exploit-protection.yaml"),
    ),
    (
        "baseline-device-lock.yaml",
        include_str!("../catalog/baseline-device-lock.yaml"),
    ),
    (
        "baseline-remote-access.yaml",
        include_str!("../catalog/baseline-remote-access.yaml"),
    ),
    (
        "baseline-legacy-technology.yaml",
        include_str!("../catalog/baseline-legacy-technology.yaml"),
    ),
    (
        "update-ring-pilot.yaml",
        include_str!("../catalog/update-ring-pilot.yaml"),
    ),
    (
        "update-ring-broad.yaml",
        include_str!("../catalog/update-ring-broad.yaml"),
    ),
    ("kind-wifi.yaml", include_str!("../catalog/kind-wifi.yaml")),
    ("kind-vpnv2.yaml", include_str!("../catalog/kind-vpnv2.yaml")),
    (
        "kind-root-certificate.yaml",
        include_str!("../catalog/kind-root-certificate.yaml"),
    ),
    (
        "kind-client-certificate-pfx.yaml",
        include_str!("../catalog/kind-client-certificate-pfx.yaml"),
    ),
    (
        "kind-client-certificate-scep.yaml",
        include_str!("../catalog/kind-client-certificate-scep.yaml"),
    ),
    ("kind-msi-app.yaml", include_str!("../catalog/kind-msi-app.yaml")),
];

/// Where every setting's documentation must be: Microsoft's CSP reference.
pub const DOC_PREFIX: &str = "https://learn.microsoft.com/";

/// The LocURI roots of the three scopes (MS-MDM: device nodes under `./Device/Vendor/MSFT` or, the
/// older spelling, `./Vendor/MSFT`; user nodes under `./User/Vendor/MSFT`).
pub const SCOPES: &[&str] = &["./Device/Vendor/MSFT/", "./Vendor/MSFT/", "./User/Vendor/MSFT/"];

/// Formats a catalog setting may have: the profile shape's (int, chr, bool, b64, xml, null) and node,
/// for an interior node a later setting writes under.
pub const FORMATS: &[&str] = &["int", "chr", "bool", "b64", "xml", "null", "node"];

/// A catalog file that breaks the rules, or a profile that cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("parameter {0:?} has no value")]
    MissingParameter(String),
    /// A filled-in value that is not of its setting's format (not repeated: it may be a secret).
    #[error("{target}: a parameter value does not fit the setting's format {format}")]
    Value { target: String, format: String },
    #[error("{0}")]
    Command(#[from] CommandError),
}

// ---------------------------------------------------------------- the file shape

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    kind: String,
    name: String,
    platform: String,
    catalog: MetaFile,
    #[serde(default)]
    parameters: Vec<ParameterFile>,
    settings: Vec<SettingFile>,
    /// The profile shape's assignment; built-in entries must not have one.
    #[serde(default)]
    assign: Option<AssignFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaFile {
    category: String,
    area: String,
    title: String,
    description: String,
    source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParameterFile {
    name: String,
    description: String,
    #[serde(default)]
    secret: bool,
    example: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read only to refuse it in built-in entries; `steward apply` will use it.
struct AssignFile {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    exclude_groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingFile {
    loc_uri: String,
    format: String,
    #[serde(default)]
    verb: Option<String>,
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    value: Option<ValueFile>,
    readable: bool,
    on_remove: String,
    #[serde(default)]
    remove_loc_uri: Option<String>,
    doc: String,
    description: String,
}

/// A YAML scalar as written: `1`, `true` or a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ValueFile {
    Bool(bool),
    Int(i64),
    Text(String),
}

// ---------------------------------------------------------------- the parsed catalog

/// One setting of a Windows catalog profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub loc_uri: String,
    pub verb: Verb,
    /// `syncml:metinf` Format; `null` sends neither Format nor Data, `node` no Data.
    pub format: String,
    /// `syncml:metinf` Type, when the CSP wants one (`text/plain` for an MSI job).
    pub type_: Option<String>,
    /// The value as sent (`1`, `true`, a string); empty for Format null.
    pub value: String,
    pub readable: bool,
    pub on_remove: OnRemove,
    /// The node removing the profile acts on (the setting's own unless the file says otherwise).
    pub remove_loc_uri: String,
    pub doc: String,
    pub description: String,
}

/// One Windows catalog profile, as parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub file: &'static str,
    pub name: String,
    pub category: CatalogCategory,
    pub area: String,
    pub title: String,
    pub description: String,
    pub source: String,
    pub parameters: Vec<CatalogParameter>,
    pub settings: Vec<Setting>,
}

impl Profile {
    /// The platform-neutral view the admin surfaces list.
    pub fn to_core(&self) -> CatalogProfile {
        CatalogProfile {
            name: self.name.clone(),
            platform: Platform::Windows,
            category: self.category,
            area: self.area.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            source: self.source.clone(),
            settings: self
                .settings
                .iter()
                .map(|s| CatalogSetting {
                    path: s.loc_uri.clone(),
                    format: s.format.clone(),
                    verb: s.verb.as_str().to_lowercase(),
                    value: s.value.clone(),
                    readable: s.readable,
                    doc: s.doc.clone(),
                    on_remove: s.on_remove.clone(),
                    description: s.description.clone(),
                })
                .collect(),
            parameters: self.parameters.clone(),
        }
    }

    /// The parameters' example values (what the tests render with).
    pub fn example_parameters(&self) -> BTreeMap<String, String> {
        self.parameters
            .iter()
            .map(|p| (p.name.clone(), p.example.clone()))
            .collect()
    }
}

static BUILTIN: LazyLock<Result<Vec<Profile>, CatalogError>> = LazyLock::new(|| parse_all(FILES));

static BUILTIN_CORE: LazyLock<Vec<CatalogProfile>> = LazyLock::new(|| match builtin() {
    Ok(profiles) => profiles.iter().map(Profile::to_core).collect(),
    Err(e) => {
        // The unit tests parse every file, so this is a build that skipped them.
        tracing::error!(error = %e, "the built-in configuration catalog is invalid; serving none");
        Vec::new()
    }
});

/// The built-in catalog, parsed once.
pub fn builtin() -> Result<&'static [Profile], &'static CatalogError> {
    BUILTIN.as_deref()
}

/// The built-in catalog in the platform-neutral form (empty, and logged, if it does not parse).
pub fn builtin_core() -> &'static [CatalogProfile] {
    &BUILTIN_CORE
}

fn parse_all(files: &[(&'static str, &'static str)]) -> Result<Vec<Profile>, CatalogError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (file, text) in files {
        let p = parse(file, text)?;
        if !names.insert(p.name.clone()) {
            return Err(invalid(file, format!("name {:?} is used twice", p.name)));
        }
        out.push(p);
    }
    Ok(out)
}

fn invalid(file: &str, message: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        file: file.to_owned(),
        message: message.into(),
    }
}

/// Parses and validates one catalog file.
pub fn parse(file: &'static str, text: &str) -> Result<Profile, CatalogError> {
    let f: ProfileFile = serde_saphyr::from_str(text).map_err(|e| invalid(file, e.to_string()))?;
    let bad = |m: String| invalid(file, m);
    if f.kind != "profile" {
        return Err(bad(format!("kind must be profile, not {:?}", f.kind)));
    }
    if f.platform != Platform::Windows.as_str() {
        return Err(bad(format!("platform must be windows, not {:?}", f.platform)));
    }
    if !valid_name(&f.name) {
        return Err(bad(format!("name {:?}: lower-case letters, digits and -", f.name)));
    }
    if f.assign.is_some() {
        return Err(bad("a built-in entry has no assign: assigning is the admin's".into()));
    }
    let category = CatalogCategory::parse(&f.catalog.category)
        .ok_or_else(|| bad(format!("unknown category {:?}", f.catalog.category)))?;
    if !f.catalog.source.starts_with(DOC_PREFIX) {
        return Err(bad(format!("source {:?} is not on {DOC_PREFIX}", f.catalog.source)));
    }
    for (what, v) in [
        ("area", &f.catalog.area),
        ("title", &f.catalog.title),
        ("description", &f.catalog.description),
    ] {
        if v.trim().is_empty() {
            return Err(bad(format!("catalog {what} is empty")));
        }
    }
    if f.settings.is_empty() {
        return Err(bad("no settings".into()));
    }

    let mut parameters = Vec::with_capacity(f.parameters.len());
    let mut declared = BTreeSet::new();
    for p in f.parameters {
        if !valid_parameter(&p.name) || !declared.insert(p.name.clone()) {
            return Err(bad(format!("parameter name {:?} is invalid or repeated", p.name)));
        }
        if p.example.is_empty() || p.description.trim().is_empty() {
            return Err(bad(format!(
                "parameter {:?} needs a description and an example",
                p.name
            )));
        }
        parameters.push(CatalogParameter {
            name: p.name,
            description: p.description,
            secret: p.secret,
            example: p.example,
        });
    }

    let mut used = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut settings = Vec::with_capacity(f.settings.len());
    for s in f.settings {
        let setting = setting(s).map_err(&bad)?;
        if !seen.insert((setting.verb.as_str(), setting.loc_uri.clone())) {
            return Err(bad(format!("{} is set twice", setting.loc_uri)));
        }
        for text in [&setting.loc_uri, &setting.value, &setting.remove_loc_uri] {
            used.extend(placeholders(text).map_err(&bad)?);
        }
        settings.push(setting);
    }
    if let Some(p) = used.difference(&declared).next() {
        return Err(bad(format!("{{{{{p}}}}} is used but not declared in parameters")));
    }
    if let Some(p) = declared.difference(&used).next() {
        return Err(bad(format!("parameter {p:?} is declared but never used")));
    }
    let profile = Profile {
        file,
        name: f.name,
        category,
        area: f.catalog.area,
        title: f.catalog.title,
        description: f.catalog.description,
        source: f.catalog.source,
        parameters,
        settings,
    };
    // With the examples filled in, every command must pass the queue-time validation.
    render(&profile, &profile.example_parameters()).map_err(|e| bad(e.to_string()))?;
    Ok(profile)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn valid_parameter(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The `{{name}}` placeholders of a text.
fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed {{{{ in {text:?}"))?;
        let name = &after[..end];
        if !valid_parameter(name) {
            return Err(format!(
                "placeholder {{{{{name}}}}} in {text:?} is not a parameter name"
            ));
        }
        out.push(name.to_owned());
        rest = &after[end + 2..];
    }
    Ok(out)
}

fn setting(s: SettingFile) -> Result<Setting, String> {
    let uri = &s.loc_uri;
    check_scope(uri)?;
    if !s.doc.starts_with(DOC_PREFIX) {
        return Err(format!("{uri}: doc {:?} is not on {DOC_PREFIX}", s.doc));
    }
    if s.description.trim().is_empty() {
        return Err(format!("{uri}: no description"));
    }
    let verb = parse_verb(uri, s.verb.as_deref())?;
    check_format(uri, &s.format)?;
    let value = match (s.format.as_str(), s.value) {
        ("null" | "node", None) => String::new(),
        (f @ ("null" | "node"), Some(_)) => return Err(format!("{uri}: format {f} carries no value")),
        (_, None) => return Err(format!("{uri}: no value")),
        ("int", Some(ValueFile::Int(i))) => i.to_string(),
        ("bool", Some(ValueFile::Bool(b))) => b.to_string(),
        // A placeholder stands for the whole value (checked once filled in, by the examples).
        ("int" | "bool", Some(ValueFile::Text(t))) if t.starts_with("{{") && t.ends_with("}}") => t,
        ("chr" | "b64" | "xml", Some(ValueFile::Text(t))) => t,
        (f, Some(v)) => return Err(format!("{uri}: value {v:?} does not match format {f}")),
    };
    let on_remove = parse_on_remove(uri, &s.on_remove, &s.format)?;
    let remove_loc_uri = s.remove_loc_uri.unwrap_or_else(|| s.loc_uri.clone());
    check_remove_loc_uri(uri, &remove_loc_uri)?;
    Ok(Setting {
        loc_uri: s.loc_uri,
        verb,
        format: s.format,
        type_: s.type_,
        value,
        readable: s.readable,
        on_remove,
        remove_loc_uri,
        doc: s.doc,
        description: s.description,
    })
}

// ------------------------------------------------- rules shared with profile settings (crate::profile)

/// The scope root `uri` is under ([`SCOPES`]), if any.
pub(crate) fn scope_of(uri: &str) -> Option<&'static str> {
    SCOPES.iter().find(|scope| uri.starts_with(*scope)).copied()
}

/// A setting's LocURI must be under one of the [`SCOPES`].
pub(crate) fn check_scope(uri: &str) -> Result<&'static str, String> {
    scope_of(uri).ok_or_else(|| format!("{uri} is not under {}", SCOPES.join(", ")))
}

/// A setting's verb: `replace` (the default), `add` or `exec`.
pub(crate) fn parse_verb(uri: &str, verb: Option<&str>) -> Result<Verb, String> {
    match verb.unwrap_or("replace") {
        "replace" => Ok(Verb::Replace),
        "add" => Ok(Verb::Add),
        "exec" => Ok(Verb::Exec),
        other => Err(format!("{uri}: verb {other:?} is not replace, add or exec")),
    }
}

/// The lower-case name a verb is written with in settings (`replace`, `add`, `exec`).
pub(crate) fn verb_name(verb: Verb) -> String {
    verb.as_str().to_ascii_lowercase()
}

/// A setting's format must be one of [`FORMATS`].
pub(crate) fn check_format(uri: &str, format: &str) -> Result<(), String> {
    if FORMATS.contains(&format) {
        Ok(())
    } else {
        Err(format!("{uri}: format {format:?} is not one of {}", FORMATS.join(", ")))
    }
}

/// `delete`, `keep` or `replace:<value>`, the value of the setting's format.
pub(crate) fn parse_on_remove(uri: &str, on_remove: &str, format: &str) -> Result<OnRemove, String> {
    let parsed = OnRemove::parse(on_remove)
        .ok_or_else(|| format!("{uri}: on_remove {on_remove:?} is not delete, keep or replace:<value>"))?;
    if let OnRemove::Replace(v) = &parsed {
        check_value(uri, format, v)?;
    }
    Ok(parsed)
}

/// The node a removal acts on: a valid LocURI in the setting's own scope.
pub(crate) fn check_remove_loc_uri(uri: &str, remove_loc_uri: &str) -> Result<(), String> {
    let scope = scope_of(uri).unwrap_or_default();
    if !remove_loc_uri.starts_with(scope) || commands::validate_loc_uri(remove_loc_uri).is_err() {
        return Err(format!(
            "{uri}: remove_loc_uri {remove_loc_uri} is invalid or in another scope"
        ));
    }
    Ok(())
}

/// Whether a (filled-in) value is one of its format: an integer, true/false, base64, well-formed
/// XML (and a `chr` value that is markup, like an ADMX policy's `<enabled/>`, well-formed too).
pub(crate) fn check_value(uri: &str, format: &str, value: &str) -> Result<(), String> {
    let ok = match format {
        "int" => value.parse::<i64>().is_ok(),
        "bool" => matches!(value, "true" | "false"),
        "b64" => base64::engine::general_purpose::STANDARD.decode(value).is_ok(),
        "xml" => is_well_formed_fragment(value),
        "chr" => !value.trim_start().starts_with('<') || is_well_formed_fragment(value),
        "null" | "node" => value.is_empty(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{uri}: {value:?} is not a valid {format} value"))
    }
}

// ---------------------------------------------------------------- rendering

/// A parameter's value inside a LocURI: one path segment, percent-encoded (RFC 3986 unreserved
/// characters stay), so an SSID with a space or an MSI ProductCode's braces (`%7B…%7D`, as the
/// EnterpriseDesktopAppManagement examples write them) cannot change the path.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A parameter's value inside markup: XML-escaped, so it stays text.
fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn fill(
    text: &str,
    params: &BTreeMap<String, String>,
    encode: impl Fn(&str) -> String,
) -> Result<String, CatalogError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let name = &after[..end];
        let value = params
            .get(name)
            .ok_or_else(|| CatalogError::MissingParameter(name.to_owned()))?;
        out.push_str(&encode(value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The OMA-DM commands a profile becomes with these parameter values, one per setting, in the
/// file's order (the order matters: PFXCertBlob last, the MSI's Add before its Exec). Each passes
/// [`commands::validate`], the check every queued command gets.
pub fn render(profile: &Profile, params: &BTreeMap<String, String>) -> Result<Vec<OmaDmCommand>, CatalogError> {
    profile
        .settings
        .iter()
        .map(|s| {
            let target = fill(&s.loc_uri, params, encode_segment)?;
            let markup = s.format == "xml" || (s.format == "chr" && s.value.trim_start().starts_with('<'));
            let value = if markup {
                fill(&s.value, params, escape_xml)?
            } else {
                fill(&s.value, params, str::to_owned)?
            };
            if check_value(&target, &s.format, &value).is_err() {
                return Err(CatalogError::Value {
                    target,
                    format: s.format.clone(),
                });
            }
            let item = if s.format == "null" || s.format == "node" {
                CommandItem {
                    target,
                    format: (s.format == "node").then(|| s.format.clone()),
                    type_: s.type_.clone(),
                    data: None,
                }
            } else {
                CommandItem {
                    target,
                    format: Some(s.format.clone()),
                    type_: s.type_.clone(),
                    data: Some(value),
                }
            };
            let command = OmaDmCommand::single(s.verb, item);
            commands::validate(&command)?;
            Ok(command)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use steward_windows_proto::syncml::{self, SyncBody, SyncHdr, SyncMl};

    use super::*;
    use crate::session::to_syncml;

    fn all() -> &'static [Profile] {
        match builtin() {
            Ok(p) => p,
            Err(e) => panic!("the catalog does not parse: {e}"),
        }
    }

    #[test]
    fn every_file_parses_and_names_are_unique() {
        let profiles = all();
        assert_eq!(profiles.len(), FILES.len());
        let names: BTreeSet<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), profiles.len());
        for p in profiles {
            // The file is named after its profile.
            assert_eq!(p.file, format!("{}.yaml", p.name));
        }
        // Every file in the directory is embedded.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(f, _)| (*f).to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn the_baseline_areas_and_rings_are_all_there() {
        let areas: BTreeSet<&str> = all()
            .iter()
            .filter(|p| p.category == CatalogCategory::Baseline)
            .map(|p| p.area.as_str())
            .collect();
        for area in [
            "bitlocker",
            "defender-antivirus",
            "smartscreen",
            "firewall",
            "exploit-protection-vbs",
            "device-lock",
            "remote-access",
            "legacy-technology",
        ] {
            assert!(areas.contains(area), "{area}");
        }
        let rings = all()
            .iter()
            .filter(|p| p.category == CatalogCategory::UpdateRing)
            .count();
        assert!(rings >= 2);
        for kind in ["wifi", "vpn", "root-certificate", "client-certificate", "msi-app"] {
            assert!(
                all()
                    .iter()
                    .any(|p| p.category == CatalogCategory::Kind && p.area == kind),
                "{kind}"
            );
        }
    }

    /// The update rings set the same nodes, so a device assigned to two rings has a conflict on
    /// every node where their values differ (the conflict rule then picks one ring's value), never a
    /// mix of one ring's settings and the other's defaults.
    #[test]
    fn the_update_rings_set_the_same_nodes() {
        let rings: Vec<(&str, BTreeSet<&str>)> = all()
            .iter()
            .filter(|p| p.category == CatalogCategory::UpdateRing)
            .map(|p| (p.name.as_str(), p.settings.iter().map(|s| s.loc_uri.as_str()).collect()))
            .collect();
        let (first, nodes) = &rings[0];
        for (name, other) in &rings[1..] {
            assert_eq!(other, nodes, "{name} and {first} set different nodes");
        }
        // And they are rings, not copies: some values differ.
        let values = |name: &str| -> Vec<String> {
            let p = all().iter().find(|p| p.name == name).unwrap();
            p.settings.iter().map(|s| s.value.clone()).collect()
        };
        assert_ne!(values("update-ring-pilot"), values("update-ring-broad"));
    }

    /// A baseline area or ring sets each node once, and the baseline areas split the baseline
    /// between them: a node set by two areas would make assigning both areas a conflict with itself.
    /// (Kinds are command sequences: an MSI's node is added, then executed.)
    #[test]
    fn no_node_is_set_twice_in_a_profile_or_by_two_baseline_areas() {
        let mut area_of: BTreeMap<&str, &str> = BTreeMap::new();
        for p in all().iter().filter(|p| p.category != CatalogCategory::Kind) {
            let mut seen = BTreeSet::new();
            for s in &p.settings {
                assert!(seen.insert(s.loc_uri.as_str()), "{} sets {} twice", p.name, s.loc_uri);
                if p.category == CatalogCategory::Baseline
                    && let Some(other) = area_of.insert(s.loc_uri.as_str(), p.name.as_str())
                {
                    panic!("{} is set by {} and {}", s.loc_uri, other, p.name);
                }
            }
        }
    }

    #[test]
    fn every_setting_is_in_a_scope_has_a_doc_and_a_matching_value() {
        for p in all() {
            for s in &p.settings {
                assert!(SCOPES.iter().any(|sc| s.loc_uri.starts_with(sc)), "{}", s.loc_uri);
                assert!(s.doc.starts_with("https://learn.microsoft.com/"), "{}", s.doc);
                assert!(commands::validate_loc_uri(&s.loc_uri).is_ok(), "{}", s.loc_uri);
                if p.parameters.is_empty() {
                    assert_eq!(check_value(&s.loc_uri, &s.format, &s.value), Ok(()));
                }
            }
            // Baseline areas and rings are ready to assign: no parameters.
            assert_eq!(
                p.parameters.is_empty(),
                p.category != CatalogCategory::Kind,
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn secrets_are_marked_and_not_readable() {
        let secret = |name: &str, param: &str| {
            all()
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.parameters.iter().find(|x| x.name == param))
                .map(|x| x.secret)
        };
        assert_eq!(secret("kind-wifi", "passphrase"), Some(true));
        assert_eq!(secret("kind-wifi", "ssid"), Some(false));
        assert_eq!(secret("kind-client-certificate-pfx", "pfx_password"), Some(true));
        assert_eq!(secret("kind-client-certificate-scep", "challenge"), Some(true));
        let scep = all().iter().find(|p| p.name == "kind-client-certificate-scep").unwrap();
        let last = scep.settings.last().unwrap();
        // Enroll is run once every Install value is written.
        assert!(last.loc_uri.ends_with("/Install/Enroll") && last.verb == Verb::Exec);
        let pfx = all().iter().find(|p| p.name == "kind-client-certificate-pfx").unwrap();
        let password = pfx
            .settings
            .iter()
            .find(|s| s.loc_uri.ends_with("/PFXCertPassword"))
            .unwrap();
        assert!(!password.readable);
        // The blob goes last: adding it starts the installation.
        assert!(pfx.settings.last().unwrap().loc_uri.ends_with("/PFXCertBlob"));
    }

    /// Every profile, rendered with its examples, as one SyncML message through the codec, parses
    /// back with the same commands.
    #[test]
    fn every_profile_renders_to_well_formed_syncml() {
        for p in all() {
            let commands = render(p, &p.example_parameters()).unwrap();
            assert_eq!(commands.len(), p.settings.len());
            let msg = message(&commands);
            let xml = syncml::write(&msg);
            let back = syncml::parse(&xml).unwrap_or_else(|e| panic!("{}: {e}\n{xml}", p.name));
            assert_eq!(back.body.commands.len(), commands.len(), "{}", p.name);
            for (sent, got) in commands.iter().zip(&back.body.commands) {
                assert_eq!(got.name(), sent.verb.as_str());
            }
        }
    }

    fn message(commands: &[OmaDmCommand]) -> SyncMl {
        SyncMl {
            header: SyncHdr::new(
                "1",
                2,
                "urn:uuid:device",
                "https://mdm.example.com/ManagementServer/MDM.svc",
            ),
            body: SyncBody {
                commands: commands
                    .iter()
                    .enumerate()
                    .map(|(i, c)| to_syncml(&(i + 2).to_string(), c))
                    .collect(),
                final_: true,
            },
        }
    }

    #[test]
    fn bitlocker_syncml_snapshot() {
        let p = all().iter().find(|p| p.name == "baseline-bitlocker").unwrap();
        let xml = syncml::write(&message(&render(p, &BTreeMap::new()).unwrap()));
        insta::assert_snapshot!(xml);
    }

    #[test]
    fn parameters_are_encoded_where_they_land() {
        let wifi = all().iter().find(|p| p.name == "kind-wifi").unwrap();
        let params = BTreeMap::from([
            ("ssid".to_owned(), "Guest <5G> & Co".to_owned()),
            ("passphrase".to_owned(), "p\"w'd&<x>".to_owned()),
        ]);
        let c = render(wifi, &params).unwrap();
        let item = &c[0].items[0];
        assert_eq!(
            item.target,
            "./Device/Vendor/MSFT/WiFi/Profile/Guest%20%3C5G%3E%20%26%20Co/WlanXml"
        );
        let data = item.data.as_deref().unwrap();
        assert!(data.contains("<name>Guest &lt;5G&gt; &amp; Co</name>"), "{data}");
        assert!(
            data.contains("<keyMaterial>p&quot;w&apos;d&amp;&lt;x&gt;</keyMaterial>"),
            "{data}"
        );
        assert!(is_well_formed_fragment(data));

        let msi = all().iter().find(|p| p.name == "kind-msi-app").unwrap();
        let c = render(msi, &msi.example_parameters()).unwrap();
        // The braces of the ProductCode are percent-encoded, as Microsoft's examples write them,
        // and the Exec is the node the 1226 completion alert names.
        assert_eq!(
            c[2].items[0].target,
            "./Device/Vendor/MSFT/EnterpriseDesktopAppManagement/MSI/%7B23170F69-40C1-2702-1900-000001000000%7D/DownloadInstall"
        );
        assert_eq!(
            c.iter().map(|c| c.verb).collect::<Vec<_>>(),
            [Verb::Add, Verb::Add, Verb::Exec]
        );
        assert_eq!(c[0].items[0].format.as_deref(), Some("node"));
        assert_eq!(
            (c[1].items[0].format.as_deref(), c[1].items[0].data.as_deref()),
            (None, None)
        );
        assert_eq!(c[2].items[0].type_.as_deref(), Some("text/plain"));

        assert_eq!(
            render(wifi, &BTreeMap::new()),
            Err(CatalogError::MissingParameter("ssid".into()))
        );
        // A value that does not fit its format is refused without repeating it.
        let root = all().iter().find(|p| p.name == "kind-root-certificate").unwrap();
        let mut params = root.example_parameters();
        params.insert("certificate".into(), "not base64!".into());
        let err = render(root, &params).unwrap_err().to_string();
        assert!(!err.contains("not base64!"), "{err}");
    }

    fn parse_one(text: &str) -> Result<Profile, CatalogError> {
        parse("test.yaml", text)
    }

    const HEAD: &str = "kind: profile\nname: t\nplatform: windows\ncatalog: {category: baseline, area: a, title: T, description: D, source: https://learn.microsoft.com/x}\n";

    fn with_setting(setting: &str) -> String {
        format!("{HEAD}settings:\n  - {setting}\n")
    }

    #[test]
    fn broken_files_are_refused() {
        let good = "{loc_uri: ./Device/Vendor/MSFT/Policy/Config/A/B, format: int, value: 1, readable: true, on_remove: delete, doc: https://learn.microsoft.com/y, description: d}";
        assert!(parse_one(&with_setting(good)).is_ok());
        for (bad, why) in [
            (good.replace("./Device/Vendor", "./Devices/Vendor"), "scope"),
            (
                good.replace("./Device/Vendor/MSFT/Policy/Config/A/B", "./Device/Vendor/MSFT//B"),
                "empty segment",
            ),
            (good.replace("value: 1", "value: yes please"), "int value"),
            (good.replace("format: int", "format: bool"), "bool value"),
            (good.replace("format: int", "format: float"), "format"),
            (
                good.replace("https://learn.microsoft.com/y", "https://example.com/y"),
                "doc",
            ),
            (good.replace("on_remove: delete", "on_remove: forget"), "on_remove"),
            (
                good.replace("on_remove: delete", "on_remove: \"replace:x\""),
                "replace value",
            ),
            (good.replace("value: 1", "value: \"{{p}}\""), "undeclared parameter"),
            (good.replace("readable: true, ", ""), "readable missing"),
            (
                good.replace("description: d", "description: d, colour: red"),
                "unknown key",
            ),
            (
                good.replace("format: int, value: 1", "format: chr, value: <enabled>"),
                "markup",
            ),
            (
                good.replace("format: int, value: 1", "format: b64, value: \"@@@\""),
                "b64",
            ),
        ] {
            assert!(parse_one(&with_setting(&bad)).is_err(), "{why}: {bad}");
        }
        assert!(parse_one(&format!("{}assign: {{all: true}}\n", with_setting(good))).is_err());
        assert!(parse_one(&HEAD.replace("platform: windows", "platform: macos")).is_err());
        assert!(parse_one("kind: profile\nname: [").is_err());
        let twice = format!("{HEAD}settings:\n  - {good}\n  - {good}\n");
        assert!(parse_one(&twice).is_err());
        let unused = format!(
            "{}parameters:\n  - {{name: p, description: d, example: e}}\n",
            with_setting(good)
        );
        assert!(parse_one(&unused).is_err());
        let one = with_setting(good);
        let leaked: &'static str = Box::leak(one.into_boxed_str());
        assert!(matches!(
            parse_all(&[("t.yaml", leaked), ("u.yaml", leaked)]),
            Err(CatalogError::Invalid { message, .. }) if message.contains("used twice")
        ));
    }

    #[test]
    fn core_view_keeps_every_field() {
        let p = all().iter().find(|p| p.name == "kind-wifi").unwrap().to_core();
        assert_eq!(p.platform, Platform::Windows);
        assert_eq!(p.category, CatalogCategory::Kind);
        assert_eq!(p.settings[0].verb, "add");
        assert_eq!(p.settings[0].on_remove, OnRemove::Delete);
        assert_eq!(p.parameters.len(), 2);
        assert_eq!(builtin_core().len(), all().len());
    }
}
