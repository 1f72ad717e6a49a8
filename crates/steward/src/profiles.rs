//! Configuration profiles from the command line (docs/PROFILES.md): `steward apply -f FILE|DIR`,
//! `steward export`, `steward profiles list|show|status|delete`, `steward verify`, `steward catalog
//! assign`, `steward devices settings` — each one API call (or two) through the same client as
//! every other admin command. Profile files are YAML, parsed and written with serde-saphyr (the
//! workspace's YAML crate, which also serializes; panic-free on bad input).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use steward_api::types::{
    ApplyActionName, ApplyReportView, ApplyRequest, AssignBody, ProfileChangeView, ProfileDocumentBody,
};

use crate::client::ApiClient;
use crate::output::{Output, Table, or_dash, print_json, when};

/// The profile files `path` names: the file itself, or every `*.yaml` / `*.yml` directly in the
/// directory, sorted by name (so an apply of a directory is the same apply every time).
pub fn profile_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        let p = entry?.path();
        let yaml = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        if yaml && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("{} holds no *.yaml or *.yml file", path.display());
    }
    Ok(files)
}

/// Every profile document of one YAML text (documents separated by `---`); `origin` names the
/// file in errors.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<ProfileDocumentBody>> {
    let docs: Vec<ProfileDocumentBody> =
        serde_saphyr::from_multiple(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    if docs.is_empty() {
        bail!("{origin}: no profile document");
    }
    Ok(docs)
}

/// The documents of every file `path` names, in file order then document order.
pub fn load_documents(path: &Path) -> Result<Vec<ProfileDocumentBody>> {
    let mut out = Vec::new();
    for f in profile_files(path)? {
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        out.extend(parse_documents(&text, &f.display().to_string())?);
    }
    Ok(out)
}

/// One document as YAML.
pub fn to_yaml(doc: &ProfileDocumentBody) -> Result<String> {
    serde_saphyr::to_string(doc).map_err(|e| anyhow::anyhow!("writing profile {} as YAML: {e}", doc.name))
}

fn assign_text(a: &AssignBody) -> String {
    let mut parts = Vec::new();
    if a.all {
        parts.push("all devices".to_owned());
    }
    if !a.groups.is_empty() {
        parts.push(format!("groups {}", a.groups.join(", ")));
    }
    if !a.exclude_groups.is_empty() {
        parts.push(format!("except {}", a.exclude_groups.join(", ")));
    }
    if parts.is_empty() {
        "unassigned".into()
    } else {
        parts.join(" ")
    }
}

fn action_name(a: ApplyActionName) -> &'static str {
    match a {
        ApplyActionName::Created => "created",
        ApplyActionName::Updated => "updated",
        ApplyActionName::Unchanged => "unchanged",
    }
}

/// The human report of an apply: per profile what changes and the devices concerned.
pub fn render_report(r: &ApplyReportView) -> String {
    let mut out = String::new();
    let verb = |done: &'static str, would: &'static str| if r.dry_run { would } else { done };
    for p in &r.profiles {
        out.push_str(&render_change(p, r.dry_run));
    }
    if !r.changed {
        out.push_str("no changes\n");
    } else if r.dry_run {
        out.push_str("dry run: nothing was written\n");
    } else {
        let n = r
            .profiles
            .iter()
            .filter(|p| p.action != ApplyActionName::Unchanged)
            .count();
        out.push_str(&format!("{n} profile(s) {}\n", verb("written", "would be written")));
    }
    out
}

fn render_change(p: &ProfileChangeView, dry_run: bool) -> String {
    let mut out = String::new();
    let action = if dry_run && p.action != ApplyActionName::Unchanged {
        format!("would be {}", action_name(p.action))
    } else {
        action_name(p.action).to_owned()
    };
    let version = match p.version_before {
        Some(b) if b != p.version_after => format!("version {b} -> {}", p.version_after),
        Some(b) => format!("version {b}"),
        None => format!("version {}", p.version_after),
    };
    out.push_str(&format!("{} ({}): {action}, {version}\n", p.name, p.platform));
    if p.action == ApplyActionName::Unchanged {
        return out;
    }
    for (sign, paths) in [
        ("+", &p.settings_added),
        ("~", &p.settings_changed),
        ("-", &p.settings_removed),
    ] {
        for path in paths {
            out.push_str(&format!("  {sign} {path}\n"));
        }
    }
    for f in &p.fields_changed {
        out.push_str(&format!("  ~ {f}\n"));
    }
    match &p.assignment_before {
        Some(before) if before != &p.assignment_after => out.push_str(&format!(
            "  assignment: {} ({} devices) -> {} ({} devices)\n",
            assign_text(before),
            p.devices_before,
            assign_text(&p.assignment_after),
            p.devices_after
        )),
        _ => out.push_str(&format!(
            "  assignment: {} ({} devices)\n",
            assign_text(&p.assignment_after),
            p.devices_after
        )),
    }
    out
}

/// `steward apply -f FILE|DIR [--dry-run]`.
pub async fn apply(c: &ApiClient, out: Output, path: &Path, dry_run: bool) -> Result<()> {
    let documents = load_documents(path)?;
    let report = c.apply_profiles(&ApplyRequest { documents, dry_run }).await?;
    match out {
        Output::Json => print_json(&report.raw)?,
        Output::Table => print!("{}", render_report(&report.data)),
    }
    Ok(())
}

/// `steward export [--dir DIR]`: every profile as YAML, on standard output (documents separated by
/// `---`) or one `<name>.yaml` file per profile in DIR.
pub async fn export(c: &ApiClient, out: Output, dir: Option<&Path>) -> Result<()> {
    let export = c.export_profiles().await?;
    if out == Output::Json && dir.is_none() {
        return print_json(&export.raw);
    }
    match dir {
        None => {
            let mut text = String::new();
            for (i, d) in export.data.documents.iter().enumerate() {
                if i > 0 {
                    text.push_str("---\n");
                }
                text.push_str(&to_yaml(d)?);
            }
            print!("{text}");
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for d in &export.data.documents {
                let file = dir.join(format!("{}.yaml", d.name));
                std::fs::write(&file, to_yaml(d)?).with_context(|| format!("writing {}", file.display()))?;
                println!("{}", file.display());
            }
        }
    }
    Ok(())
}

/// `steward profiles …`.
#[derive(clap::Subcommand)]
pub enum ProfileCommand {
    /// List profiles: platform, current version, priority, assignment, devices.
    List,
    /// Show one profile: its fields, assignment, versions, current settings and conflicts.
    Show { name: String },
    /// Where one profile stands on its devices: device settings per version and status.
    Status { name: String },
    /// Delete a profile: its settings are removed from the devices at their next check-ins.
    Delete { name: String },
}

pub async fn profiles(c: &ApiClient, out: Output, command: ProfileCommand) -> Result<()> {
    match command {
        ProfileCommand::List => {
            let list = c.profiles().await?;
            match out {
                Output::Json => print_json(&list.raw)?,
                Output::Table => {
                    let mut t = Table::new(&["NAME", "PLATFORM", "VERSION", "PRIORITY", "DEVICES", "ASSIGNED TO"]);
                    for p in &list.data.items {
                        t.row(vec![
                            p.name.clone(),
                            p.platform.clone(),
                            p.current_version.to_string(),
                            p.priority.to_string(),
                            p.devices.to_string(),
                            assign_text(&p.assign),
                        ]);
                    }
                    t.print()?;
                }
            }
        }
        ProfileCommand::Show { name } => {
            let d = c.profile(&name).await?;
            match out {
                Output::Json => print_json(&d.raw)?,
                Output::Table => {
                    let p = &d.data.profile;
                    println!(
                        "{} ({})  version {}  priority {}",
                        p.name, p.platform, p.current_version, p.priority
                    );
                    if !p.description.is_empty() {
                        println!("  {}", p.description);
                    }
                    println!(
                        "  remediation {}  assigned to {} ({} devices)",
                        serde_json::to_value(p.remediation)?.as_str().unwrap_or("-"),
                        assign_text(&p.assign),
                        p.devices
                    );
                    println!(
                        "  created {}  updated {}",
                        when(Some(p.created_at), "-"),
                        when(Some(p.updated_at), "-")
                    );
                    println!("versions:");
                    for v in &d.data.versions {
                        println!(
                            "  {:>4}  {}  {} settings{}  {}",
                            v.version,
                            when(Some(v.created_at), "-"),
                            v.settings.len(),
                            if v.config_lock { " + config lock" } else { "" },
                            &v.digest[..v.digest.len().min(16)]
                        );
                    }
                    if let Some(v) = d.data.versions.iter().find(|v| v.version == p.current_version) {
                        println!("settings (version {}):", v.version);
                        for s in &v.settings {
                            println!("  {}", serde_json::to_string(s)?);
                        }
                    }
                    if !d.data.conflicts.is_empty() {
                        println!("conflicts:");
                        for c in &d.data.conflicts {
                            println!("  {}: {} wins over {}", c.path, c.winner, c.loser);
                        }
                    }
                }
            }
        }
        ProfileCommand::Status { name } => {
            let d = c.profile(&name).await?;
            match out {
                Output::Json => print_json(&d.raw["status"])?,
                Output::Table => {
                    println!(
                        "{}: version {}, assigned to {} active devices",
                        d.data.profile.name, d.data.profile.current_version, d.data.profile.devices
                    );
                    let mut t = Table::new(&["VERSION", "STATUS", "SETTINGS"]);
                    for s in &d.data.status {
                        t.row(vec![s.version.to_string(), s.status.clone(), s.count.to_string()]);
                    }
                    t.print()?;
                    if !d.data.conflicts.is_empty() {
                        println!(
                            "{} conflict(s): `steward profiles show {}`",
                            d.data.conflicts.len(),
                            name
                        );
                    }
                }
            }
        }
        ProfileCommand::Delete { name } => {
            c.delete_profile(&name).await?;
            if out == Output::Json {
                print_json(&serde_json::json!({ "deleted": name }))?;
            } else {
                println!("deleted profile {name}; its settings are removed at each device's next check-in");
            }
        }
    }
    Ok(())
}

/// `steward verify ID|--group G`.
pub async fn verify(c: &ApiClient, out: Output, device: Option<&str>, group: Option<&str>) -> Result<()> {
    let r = match (device, group) {
        (Some(d), _) => c.verify_device(d).await?,
        (None, Some(g)) => c.verify_group(g).await?,
        (None, None) => bail!("name a device or --group"),
    };
    match out {
        Output::Json => print_json(&r.raw)?,
        Output::Table => println!(
            "verification requested for {} device(s): their readable settings are read back at the next check-in",
            r.data.devices
        ),
    }
    Ok(())
}

/// `steward catalog assign NAME --group G… | --all [--exclude G…] [--dry-run]`.
pub async fn catalog_assign(c: &ApiClient, out: Output, name: &str, assign: AssignBody, dry_run: bool) -> Result<()> {
    let r = c.assign_catalog(name, &assign, dry_run).await?;
    match out {
        Output::Json => print_json(&r.raw)?,
        Output::Table => print!("{}", render_report(&r.data)),
    }
    Ok(())
}

/// `steward devices settings ID`.
pub async fn device_settings(c: &ApiClient, out: Output, device: &str) -> Result<()> {
    let s = c.device_settings(device).await?;
    match out {
        Output::Json => print_json(&s.raw)?,
        Output::Table => {
            let mut t = Table::new(&["PATH", "PROFILE", "VERSION", "STATUS", "REASON"]);
            for i in &s.data.items {
                t.row(vec![
                    i.path.clone(),
                    or_dash(i.profile.as_deref()),
                    i.version.to_string(),
                    i.status.clone(),
                    i.reason.clone(),
                ]);
            }
            t.print()?;
            for c in &s.data.conflicts {
                println!("conflict on {}: {} wins over {}", c.path, c.winner, c.loser);
            }
            if let Some(l) = &s.data.config_lock {
                let by = l.requested_by.join(", ");
                if l.status == "applied" {
                    println!("config lock (asked for by {by}): set with {}", l.paths.join(", "));
                } else {
                    println!("config lock (asked for by {by}): not applied: {}", l.reason);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAMERA: &str = "kind: profile
name: camera-off
platform: windows
settings:
  - loc_uri: ./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera
    format: int
    value: 0
assign:
  groups: [pilot]
";

    #[test]
    fn documents_parse_and_round_trip_through_yaml() {
        let two =
            format!("{CAMERA}---\nkind: profile\nname: b\nplatform: windows\nsettings: []\nassign:\n  all: true\n");
        let docs = parse_documents(&two, "t.yaml").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].name, "camera-off");
        assert_eq!(docs[0].assign.groups, ["pilot"]);
        assert_eq!(docs[0].priority, 100);
        assert_eq!(
            docs[0].settings[0]["loc_uri"],
            "./Device/Vendor/MSFT/Policy/Config/Camera/AllowCamera"
        );
        assert_eq!(docs[0].settings[0]["value"], 0);
        assert!(docs[1].assign.all);
        for d in &docs {
            let again = parse_documents(&to_yaml(d).unwrap(), "again").unwrap();
            assert_eq!(&again[0], d);
        }
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let e = parse_documents(
            "kind: profile\nname: x\nplatform: windows\nsettings: []\ncolour: red\n",
            "x.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x.yaml: "), "{e}");
        assert!(e.contains("colour"), "{e}");
        assert!(parse_documents("", "empty.yaml").is_err());
    }

    #[test]
    fn a_directory_is_its_yaml_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yml"), CAMERA.replace("camera-off", "b")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), CAMERA.replace("camera-off", "a")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a profile").unwrap();
        let docs = load_documents(dir.path()).unwrap();
        assert_eq!(docs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(load_documents(empty.path()).is_err());
    }

    #[test]
    fn reports_say_no_changes_when_idempotent() {
        let unchanged = ApplyReportView {
            dry_run: false,
            written: false,
            changed: false,
            profiles: vec![ProfileChangeView {
                name: "camera-off".into(),
                platform: "windows".into(),
                action: ApplyActionName::Unchanged,
                version_before: Some(1),
                version_after: 1,
                settings_added: vec![],
                settings_changed: vec![],
                settings_removed: vec![],
                fields_changed: vec![],
                assignment_before: Some(AssignBody::default()),
                assignment_after: AssignBody::default(),
                devices_before: 0,
                devices_after: 0,
            }],
        };
        let text = render_report(&unchanged);
        assert!(text.contains("camera-off (windows): unchanged, version 1"), "{text}");
        assert!(text.ends_with("no changes\n"), "{text}");
        let mut updated = unchanged.clone();
        updated.changed = true;
        updated.dry_run = true;
        let p = &mut updated.profiles[0];
        p.action = ApplyActionName::Updated;
        p.version_after = 2;
        p.settings_changed = vec!["./X".into()];
        p.assignment_after.groups = vec!["pilot".into()];
        p.devices_after = 3;
        let text = render_report(&updated);
        assert!(text.contains("would be updated, version 1 -> 2"), "{text}");
        assert!(text.contains("  ~ ./X\n"), "{text}");
        assert!(
            text.contains("unassigned (0 devices) -> groups pilot (3 devices)"),
            "{text}"
        );
        assert!(text.ends_with("dry run: nothing was written\n"), "{text}");
    }
}
