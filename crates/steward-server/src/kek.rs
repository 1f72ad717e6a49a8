//! Key-encryption-key rotation without downtime (`steward kek rotate`, `steward kek status`,
//! `steward kek generate`).
//!
//! What the KEK seals is a short, fixed list of files in the data directory
//! ([`bootstrap::SEALED_FILES`]): the CA keys, the TLS server key, the federation key, the data key
//! and the audit keys. Nothing in the database is sealed by the KEK (the database's sealed columns
//! are under the data key, which a KEK rotation re-seals but does not change), so a rotation writes
//! no row and replicas sharing a PostgreSQL database are not affected by it.
//!
//! Why a running server keeps working: the KEK is read at start only; the keys it unseals stay in
//! memory, so re-sealing the files under it changes nothing for a running process. Why a restart
//! during or after a rotation works: every blob written since names its KEK (`steward-sealed-v2`,
//! [`steward_pki::KekRing`]) and the server opens with the current KEK and `pki.previous_keks` /
//! `pki.previous_kek_files`, so any mixture of old and new blobs (a rotation interrupted between two
//! renames, a replica whose copy of the data directory is not re-sealed yet) opens.
//!
//! How a rotation is safe to interrupt: every file is opened and re-sealed in memory first (any
//! failure aborts before a byte is written), then written beside its original (`*.rotating`,
//! 0600, fsynced), then renamed over it. A crash leaves each file either old or new, both readable
//! by a ring holding both KEKs; running the rotation again finishes it.

use std::fs;
use std::path::{Path, PathBuf};

use steward_pki::{Kek, KekId, KekRing, SealedBy};
use zeroize::Zeroizing;

use crate::bootstrap::{self, BootstrapError, SEALED_FILES};
use crate::config::Config;

/// What one sealed file holds, as far as the configured KEKs tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedState {
    /// Not created (yet): e.g. `pki/server.key.sealed` with an operator-provided TLS certificate.
    Absent,
    /// Opens with this configured KEK. `named`: the blob names it (v2); a v1 blob was found by trying.
    Opens { kek: KekId, named: bool },
    /// Does not open with any configured KEK (why, without key material).
    Fails(String),
}

/// One sealed file of the data directory.
#[derive(Debug, Clone)]
pub struct SealedFile {
    /// Relative to the data directory, e.g. `pki/root-ca.key.sealed`.
    pub name: &'static str,
    pub state: SealedState,
}

/// What `steward kek status` reports.
#[derive(Debug, Clone)]
pub struct KekStatus {
    pub current: KekId,
    pub previous: Vec<KekId>,
    pub files: Vec<SealedFile>,
    /// `*.sealed` files in the data directory (top level and `pki/`) that are not on the list of
    /// what the KEK seals: a rotation refuses to run while there are any, because it could not tell
    /// whether they need re-sealing.
    pub unlisted: Vec<PathBuf>,
}

impl KekStatus {
    /// The files that `kek` opens.
    pub fn files_under(&self, kek: KekId) -> Vec<&'static str> {
        self.files
            .iter()
            .filter(|f| matches!(f.state, SealedState::Opens { kek: k, .. } if k == kek))
            .map(|f| f.name)
            .collect()
    }

    /// The previous KEKs nothing references any more: safe to remove from the configuration.
    pub fn retirable(&self) -> Vec<KekId> {
        self.previous
            .iter()
            .copied()
            .filter(|id| self.files_under(*id).is_empty())
            .collect()
    }

    /// Every present file opens, is named by its KEK, and is under the current one, and nothing
    /// unlisted is sealed in the data directory: the rotation is complete.
    pub fn complete(&self) -> bool {
        self.unlisted.is_empty()
            && self.files.iter().all(|f| match &f.state {
                SealedState::Absent => true,
                SealedState::Opens { kek, named } => *kek == self.current && *named,
                SealedState::Fails(_) => false,
            })
    }

    /// Files that open with no configured KEK.
    pub fn failing(&self) -> Vec<(&'static str, &str)> {
        self.files
            .iter()
            .filter_map(|f| match &f.state {
                SealedState::Fails(why) => Some((f.name, why.as_str())),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error(
        "{name} does not open with any configured key-encryption key ({why}); nothing was re-sealed. \
         Add the KEK that sealed it to pki.previous_kek_files (or pki.previous_keks) and run the rotation again"
    )]
    DoesNotOpen { name: &'static str, why: String },
    #[error(
        "{} is sealed but not on the list of what the KEK seals; nothing was re-sealed (move it out of the data directory if it is not Steward's)",
        .0.display()
    )]
    Unlisted(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} already exists; refusing to overwrite a key", .0.display())]
    Exists(PathBuf),
    #[error("PKI: {0}")]
    Pki(#[from] steward_pki::PkiError),
    #[error(
        "after the rotation, {name} does not open with the new key-encryption key; restore the data directory from its backup"
    )]
    VerifyFailed { name: &'static str },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KekError + '_ {
    move |source| KekError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The status of every sealed file under the configured KEKs.
pub fn status(config: &Config) -> Result<KekStatus, KekError> {
    let (ring, _) = bootstrap::load_kek(config)?;
    Ok(status_with(config, &ring))
}

/// [`status`] with the ring already loaded.
pub fn status_with(config: &Config, ring: &KekRing) -> KekStatus {
    let ids = ring.ids();
    let files = SEALED_FILES
        .iter()
        .map(|(name, label)| {
            let path = config.data_dir.join(name);
            let state = match fs::read_to_string(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => SealedState::Absent,
                Err(e) => SealedState::Fails(format!("unreadable: {e}")),
                Ok(sealed) => match ring.open(label, &sealed) {
                    Ok((_, kek)) => SealedState::Opens {
                        kek,
                        named: matches!(steward_pki::sealed_by(&sealed), Ok(SealedBy::Kek(_))),
                    },
                    Err(e) => SealedState::Fails(e.to_string()),
                },
            };
            SealedFile { name, state }
        })
        .collect();
    KekStatus {
        current: ids[0],
        previous: ids[1..].to_vec(),
        files,
        unlisted: unlisted_sealed_files(&config.data_dir),
    }
}

/// `*.sealed` files in the data directory and `pki/` that [`SEALED_FILES`] does not name.
fn unlisted_sealed_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["", "pki"] {
        let Ok(entries) = fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.ends_with(".sealed") {
                continue;
            }
            let relative = if sub.is_empty() {
                name.to_string()
            } else {
                format!("{sub}/{name}")
            };
            if !SEALED_FILES.iter().any(|(n, _)| *n == relative) {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The KEK everything is sealed under now.
    pub to: KekId,
    /// Each re-sealed file and the KEK that had sealed it.
    pub resealed: Vec<(&'static str, KekId)>,
    /// Files already sealed under `to` in the v2 format (left as they are: a second run is a no-op).
    pub unchanged: Vec<&'static str>,
}

/// Re-seals every sealed file of the data directory under `new` (or, without it, under the
/// configured current KEK), opening each with the configured KEKs (current and previous) and `new`.
/// All or nothing per file, and nothing at all written unless every file opened (module docs).
pub fn rotate(config: &Config, new: Option<Kek>) -> Result<Rotation, KekError> {
    bootstrap::prepare_data_dir(&config.data_dir)?;
    let _lock = bootstrap::lock_keys(&config.data_dir)?;
    let (ring, _) = bootstrap::load_kek(config)?;
    let ring = match new {
        Some(new) => ring.rotated_to(new),
        None => ring,
    };
    let to = ring.current().id();
    if let Some(path) = unlisted_sealed_files(&config.data_dir).into_iter().next() {
        return Err(KekError::Unlisted(path));
    }

    // 1. Open and re-seal everything in memory; any failure leaves the directory untouched.
    let mut staged: Vec<(&'static str, PathBuf, String, KekId)> = Vec::new();
    let mut unchanged = Vec::new();
    for (name, label) in SEALED_FILES {
        let path = config.data_dir.join(name);
        let sealed = match fs::read_to_string(&path) {
            Ok(s) => Zeroizing::new(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        let (plain, from) = ring.open(label, &sealed).map_err(|e| KekError::DoesNotOpen {
            name,
            why: e.to_string(),
        })?;
        if from == to && matches!(steward_pki::sealed_by(&sealed), Ok(SealedBy::Kek(_))) {
            unchanged.push(*name);
            continue;
        }
        staged.push((name, path, ring.seal(label, &plain)?, from));
    }

    // 2. Write each beside its original, durably, before any original is replaced.
    let mut written = Vec::with_capacity(staged.len());
    for (_, path, sealed, _) in &staged {
        let tmp = path.with_extension("rotating");
        write_new_file(&tmp, sealed.as_bytes())?;
        written.push(tmp);
    }
    // 3. Rename each over its original (atomic per file), then make the renames durable.
    for ((_, path, _, _), tmp) in staged.iter().zip(&written) {
        fs::rename(tmp, path).map_err(io(path))?;
    }
    for dir in [config.data_dir.clone(), config.data_dir.join("pki")] {
        sync_dir(&dir)?;
    }

    // 4. Check that what is on disk now opens with the target KEK alone.
    let target_only = KekRing::new(Kek::from_base64(&ring.current().to_base64())?, Vec::new())?;
    for (name, label) in SEALED_FILES {
        let path = config.data_dir.join(name);
        let Ok(sealed) = fs::read_to_string(&path) else {
            continue;
        };
        if target_only.open(label, &sealed).is_err() {
            return Err(KekError::VerifyFailed { name });
        }
    }
    Ok(Rotation {
        to,
        resealed: staged.into_iter().map(|(name, _, _, from)| (name, from)).collect(),
        unchanged,
    })
}

/// Writes `data` to `path` (0600, fsynced), replacing a leftover of an interrupted rotation.
fn write_new_file(path: &Path, data: &[u8]) -> Result<(), KekError> {
    use std::io::Write;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    bootstrap::set_mode(path, 0o600)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), KekError> {
    #[cfg(unix)]
    {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes a new random KEK to `path` (base64, mode 0600, never over an existing file) and returns
/// its id.
pub fn generate_file(path: &Path) -> Result<KekId, KekError> {
    use std::io::Write;
    let kek = Kek::generate()?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(KekError::Exists(path.to_owned())),
        Err(e) => return Err(io(path)(e)),
    };
    f.write_all(kek.to_base64().as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(kek.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        }
    }

    /// Every sealed file start-up owns is on the rotation's list: a new `*.key.sealed` added to
    /// [`bootstrap`] without it would fail here rather than be left under the old KEK.
    #[test]
    fn the_rotation_list_covers_every_sealed_file_the_server_owns() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let (pki, _) = bootstrap::load_pki(&c).unwrap();
        drop(pki);
        let s = status(&c).unwrap();
        assert!(s.unlisted.is_empty(), "{:?}", s.unlisted);
        assert!(
            s.files
                .iter()
                .all(|f| matches!(f.state, SealedState::Opens { named: true, .. })),
            "{s:?}"
        );
        assert!(s.complete());
    }

    #[test]
    fn rotate_reseals_everything_and_the_old_kek_can_be_retired() {
        let dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let (pki, _) = bootstrap::load_pki(&c).unwrap();
        let root = pki.root.cert_der().to_vec();
        let old = status(&c).unwrap().current;

        let new_path = keys.path().join("kek.new");
        let new_id = generate_file(&new_path).unwrap();
        assert!(
            matches!(generate_file(&new_path), Err(KekError::Exists(_))),
            "never overwrites"
        );
        let new = bootstrap::read_kek_file(&new_path).unwrap();
        let r = rotate(&c, Some(new)).unwrap();
        assert_eq!(r.to, new_id);
        assert_eq!(r.resealed.len(), SEALED_FILES.len());
        assert!(r.resealed.iter().all(|(_, from)| *from == old));

        // The configuration after the rotation: the new KEK current, the old one previous.
        let mut after = c.clone();
        after.pki.kek_file = Some(new_path.clone());
        after.pki.previous_kek_files = vec![dir.path().join("kek")];
        let s = status(&after).unwrap();
        assert!(s.complete(), "{s:?}");
        assert_eq!(s.retirable(), vec![old]);
        // A second run changes nothing.
        let again = rotate(&after, None).unwrap();
        assert!(again.resealed.is_empty() && again.unchanged.len() == SEALED_FILES.len());

        // Only the new KEK: the same CA opens. Only the old one: refused, naming the KEK needed.
        after.pki.previous_kek_files.clear();
        let (pki, created) = bootstrap::load_pki(&after).unwrap();
        assert!(!created);
        assert_eq!(pki.root.cert_der(), root.as_slice());
        let err = bootstrap::load_pki(&c).unwrap_err().to_string();
        assert!(
            err.contains("refusing to start") && err.contains(&new_id.to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_file_no_kek_opens_aborts_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        bootstrap::load_pki(&c).unwrap();
        let before: Vec<String> = SEALED_FILES
            .iter()
            .map(|(n, _)| fs::read_to_string(dir.path().join(n)).unwrap())
            .collect();
        // The audit-chain key sealed under a KEK nobody configured.
        let stranger = Kek::generate().unwrap();
        let foreign = stranger.seal_v2("audit-chain.key", &[7; 32]).unwrap();
        fs::write(dir.path().join("audit-chain.key.sealed"), &foreign).unwrap();
        let err = rotate(&c, Some(Kek::generate().unwrap())).unwrap_err();
        assert!(
            matches!(
                err,
                KekError::DoesNotOpen {
                    name: "audit-chain.key.sealed",
                    ..
                }
            ),
            "{err}"
        );
        for ((n, _), was) in SEALED_FILES.iter().zip(&before) {
            let now = fs::read_to_string(dir.path().join(n)).unwrap();
            if *n == "audit-chain.key.sealed" {
                assert_eq!(now, foreign);
            } else {
                assert_eq!(&now, was, "{n} untouched");
            }
        }
        let s = status(&c).unwrap();
        assert_eq!(s.failing().len(), 1);
        assert!(!s.complete());

        // An unknown sealed file stops a rotation too.
        fs::write(dir.path().join("audit-chain.key.sealed"), &before[5]).unwrap();
        fs::write(dir.path().join("mystery.sealed"), "steward-sealed-v1:AAAA").unwrap();
        assert!(matches!(rotate(&c, None), Err(KekError::Unlisted(_))));
    }

    #[test]
    fn v1_files_of_an_earlier_release_are_rotated_to_v2() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        bootstrap::load_pki(&c).unwrap();
        let kek = bootstrap::read_kek_file(&dir.path().join("kek")).unwrap();
        // Rewrite the audit-chain key as an earlier release did: v1, no KEK id.
        let path = dir.path().join("audit-chain.key.sealed");
        let (ring, _) = bootstrap::load_kek(&c).unwrap();
        let (plain, _) = ring
            .open("audit-chain.key", &fs::read_to_string(&path).unwrap())
            .unwrap();
        fs::write(&path, kek.seal("audit-chain.key", &plain).unwrap()).unwrap();
        let s = status(&c).unwrap();
        assert!(!s.complete(), "a v1 blob names no KEK: not complete yet");
        let r = rotate(&c, None).unwrap();
        assert_eq!(r.resealed, vec![("audit-chain.key.sealed", kek.id())]);
        assert!(status(&c).unwrap().complete());
        assert_eq!(
            ring.open("audit-chain.key", &fs::read_to_string(&path).unwrap())
                .unwrap()
                .0,
            plain
        );
    }
}
