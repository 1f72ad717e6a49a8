//! The architecture test: the crate graph runs one way, and platform knowledge stays in its
//! adapter. It reads every crate's manifest and every source line that names a crate, so a
//! dependency or a `use` that breaks a rule fails here instead of in a review.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every workspace crate's name and the workspace crates it depends on (normal, dev and build).
fn manifests() -> BTreeMap<String, (PathBuf, Vec<String>)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(workspace().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let doc: toml::Table = text.parse().unwrap();
        let name = doc["package"]["name"].as_str().unwrap().to_owned();
        let mut deps = Vec::new();
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if let Some(t) = doc.get(section).and_then(|v| v.as_table()) {
                deps.extend(t.keys().filter(|k| k.starts_with("steward")).cloned());
            }
        }
        out.insert(name, (dir, deps));
    }
    out
}

/// Each crate's layer: a crate may depend only on crates of a lower layer (dev-dependencies too,
/// except the test-only ones listed in `dev_exceptions`).
fn layer(name: &str) -> u8 {
    match name {
        "steward-windows-proto" | "steward-pki" | "steward-http" | "steward-acme" => 0,
        // The simulator plays a device: it sits beside core, on the codecs and the PKI only.
        "steward-core" | "steward-sim" => 1,
        "steward-store-sqlite" | "steward-store-postgres" | "steward-windows" | "steward-api" => 2,
        "steward-console" => 3,
        "steward-server" => 4,
        "steward" | "steward-bench" => 5,
        other => panic!("crate {other} has no layer in the architecture test: add it"),
    }
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                rs_files(&p, out);
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Source files of a crate (src/ and tests/) that mention `needle` as a path.
fn files_naming(dir: &Path, needle: &str) -> Vec<String> {
    let mut files = Vec::new();
    rs_files(dir, &mut files);
    files
        .into_iter()
        .filter(|f| {
            std::fs::read_to_string(f).unwrap().lines().any(|l| {
                let l = l.trim_start();
                !l.starts_with("//") && l.contains(needle)
            })
        })
        .map(|f| f.strip_prefix(dir).unwrap().display().to_string())
        .collect()
}

#[test]
fn the_crate_graph_runs_one_way() {
    let m = manifests();
    // Test-only dependencies that reach sideways on purpose: the device simulator drives the server.
    let dev_exceptions = [("steward-server", "steward-sim"), ("steward", "steward-sim")];
    for (name, (_, deps)) in &m {
        for d in deps {
            if dev_exceptions.contains(&(name.as_str(), d.as_str())) {
                continue;
            }
            assert!(
                layer(d) < layer(name),
                "{name} (layer {}) depends on {d} (layer {}): dependencies run downwards only",
                layer(name),
                layer(d)
            );
        }
    }
}

#[test]
fn platform_knowledge_stays_in_its_adapter() {
    let m = manifests();
    let windows = ["steward-windows", "steward-windows-proto"];
    // Who may depend on the Windows crates: the adapter, the composition root, and the tools that
    // play or measure a Windows device.
    let allowed = ["steward-windows", "steward-server", "steward-sim", "steward-bench"];
    for (name, (dir, deps)) in &m {
        if allowed.contains(&name.as_str()) {
            continue;
        }
        for w in windows {
            assert!(
                !deps.iter().any(|d| d == w),
                "{name} depends on {w}: only its adapter may"
            );
            let module = w.replace('-', "_");
            let naming = files_naming(dir, &format!("{module}::"));
            assert!(naming.is_empty(), "{name} names {module} in {naming:?}");
        }
    }
    // In the composition root, exactly one module wires the platform in.
    let (server_dir, _) = &m["steward-server"];
    let mut naming = files_naming(&server_dir.join("src"), "steward_windows::");
    naming.sort();
    assert_eq!(naming, ["compose.rs"], "only compose.rs may name the Windows adapter");
}

#[test]
fn core_has_no_http_and_no_sql() {
    let m = manifests();
    let (dir, _) = &m["steward-core"];
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let deps: Vec<&String> = doc["dependencies"].as_table().unwrap().keys().collect();
    for banned in ["axum", "hyper", "sqlx", "rusqlite", "tokio-postgres", "maud", "utoipa"] {
        assert!(!deps.iter().any(|d| *d == banned), "steward-core depends on {banned}");
    }
    for banned in ["axum::", "sqlx::", "rusqlite::", "hyper::"] {
        let naming = files_naming(&dir.join("src"), banned);
        assert!(naming.is_empty(), "steward-core names {banned} in {naming:?}");
    }
}
