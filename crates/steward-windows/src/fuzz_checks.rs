//! The properties the profile-setting fuzz targets check (`fuzz/` at the repository root): the
//! validation an admin's profile document goes through ([`crate::profile::profile_settings`],
//! what `WindowsAdapter::profile_settings` runs) and, inside it, the raw SyncML group reader.
//! They panic when a property fails, which is how libFuzzer learns of a finding; the unit tests
//! below replay the committed corpus on stable Rust.
//!
//! Built only for tests and with the `fuzzing` feature (which the fuzz crate enables).

use serde_json::{Value, json};
use steward_core::{CommandId, OnRemove, OpKind, Setting, SettingOp};

use crate::profile::{self, RenderError};

/// Target `profile_settings`: the input as JSON. A document that is not an array is tried as the
/// single setting of a profile. Properties: no panic; a refusal names a setting that exists;
/// accepted settings read back unchanged from their documents (what the API shows and an admin
/// edits and saves again), have distinct paths, and every operation on them renders to a valid
/// OMA-DM command (a profile the API accepted can always be sent; Verify only for
/// readable settings, the only ones it is planned for).
pub fn profile_settings(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let values = match value {
        Value::Array(v) => v,
        other => vec![other],
    };
    check(&values);
}

/// Target `syncml_group`: the input as the SyncML text of one raw group setting, with each of
/// the removal choices. Same properties as [`profile_settings`].
pub fn syncml_group(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(&[json!({"name": "fuzz", "syncml": text})]);
    check(&[json!({"name": "fuzz", "syncml": text, "on_remove": "delete",
                   "remove_loc_uri": "./Device/Vendor/MSFT/Policy/Config/Fuzz/Node"})]);
}

fn check(values: &[Value]) {
    let settings = match profile::profile_settings(values) {
        Ok(s) => s,
        Err(e) => {
            assert!(
                e.index < values.len(),
                "refusal names setting {} of {}",
                e.index,
                values.len()
            );
            assert!(!e.message.is_empty(), "a refusal says why");
            return;
        }
    };
    assert_eq!(settings.len(), values.len(), "one setting per document entry");
    let mut paths: Vec<&str> = settings.iter().map(|s| s.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), settings.len(), "two settings on one path");

    let documents: Vec<Value> = settings.iter().map(profile::setting_document).collect();
    match profile::profile_settings(&documents) {
        Ok(again) => assert_eq!(again, settings, "settings change through their documents"),
        Err(e) => panic!("the document of an accepted setting is refused: {e:?} ({documents:?})"),
    }
    for s in &settings {
        for kind in [OpKind::Apply, OpKind::Verify, OpKind::Remove] {
            // Verification reads a node back, so it is planned only for readable settings (a raw
            // group never is).
            if kind == OpKind::Verify && !s.readable {
                continue;
            }
            match profile::render(&op(kind, s)) {
                Ok(_) => {}
                Err(RenderError::Kept) if kind == OpKind::Remove && s.on_remove == OnRemove::Keep => {}
                Err(e) => panic!("{kind:?} of accepted setting {s:?} does not render: {e}"),
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(target: &str, check: fn(&[u8])) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let mut seen = 0;
        for dir in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for path in entries.flatten().map(|e| e.path()).filter(|p| p.is_file()) {
                let bytes = std::fs::read(&path).unwrap();
                if std::panic::catch_unwind(|| check(&bytes)).is_err() {
                    panic!("fuzz input {} fails its target's check", path.display());
                }
                seen += usize::from(dir == "corpus");
            }
        }
        assert!(seen > 0, "no committed corpus for {target}");
    }

    /// Every committed seed (and any finding still in `fuzz/artifacts/`) passes the property.
    #[test]
    fn replay_fuzz_corpus() {
        replay("profile_settings", profile_settings);
        replay("syncml_group", syncml_group);
    }
}
