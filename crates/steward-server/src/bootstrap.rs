//! First-start and every-start preparation of the data directory: the key-encryption key, the root
//! CA, the device-identity issuing CA, the TLS server certificate, the federation signing key, the
//! webhook secret key, the audit chain and checkpoint keys, and the bootstrap admin token.
//!
//! The rule that matters most: an existing CA is never replaced. If its key cannot be decrypted
//! (wrong or missing KEK, tampered file) the server refuses to start, because a silently new CA
//! would orphan every enrolled device.
//!
//! File modes: every file the server creates in the data directory is 0600 and every directory
//! 0700 — the public CA certificates included, so that "nothing in here is readable by anyone
//! else" holds without exceptions to remember (copy `pki/root-ca.pem` out to hand it to devices).
//! Files earlier versions wrote 0644 are tightened at start. A KEK file that group or others can
//! read is refused rather than fixed: it may already have been copied, and only the operator can
//! decide whether to re-key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use steward_core::{
    AccessStore, ApiTokenId, AuditChainKey, AuditCheckpointSigner, NewBootstrapToken, SecretString, TokenHash,
    TokenKind,
};
use steward_pki::{CertifiedKey, Kek, KekId, KekRing, KeyAlgorithm, SealedBy};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::config::{Config, TlsKeyAlgorithm};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot decrypt {what} with the configured key-encryption key(s) {configured}{sealed_by}; refusing to start \
         rather than create a new CA. Restore the KEK (STEWARD_KEK, pki.kek_file or {kek_hint}) that sealed it, or, \
         during a rotation, list it in pki.previous_kek_files / pki.previous_keks (docs/OPERATIONS.md, \"Rotating the KEK\")"
    )]
    Unseal {
        what: String,
        kek_hint: String,
        /// The ids of the configured KEKs (public names, never the keys).
        configured: String,
        /// ", which names KEK <id>" for a v2 blob, else empty.
        sealed_by: String,
    },
    #[error("{0}")]
    Inconsistent(String),
    #[error("PKI: {0}")]
    Pki(#[from] steward_pki::PkiError),
    #[error("TLS material: {0}")]
    Tls(String),
    #[error("store: {0}")]
    Store(#[from] steward_core::StoreError),
    #[error(
        "the key-encryption key file {} can be read by group or others (mode {mode:04o}); refusing to start. \
         It unseals the CA keys: make it private to the server's user (chmod 600), and consider keeping it \
         outside the data directory (docs/OPERATIONS.md, \"Where to keep the KEK\")",
        path.display()
    )]
    KekExposed { path: PathBuf, mode: u32 },
}

/// The mode of every file the server creates (see the module docs).
const FILE_MODE: u32 = 0o600;
/// The mode of every directory it creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// The files Steward writes in the data directory (relative to it), tightened to [`FILE_MODE`] at
/// every start because earlier versions wrote some of them 0644. Not the KEK: see the module docs.
const OWNED_FILES: &[&str] = &[
    "federation.key.sealed",
    "webhook.key.sealed",
    "audit-chain.key.sealed",
    "audit-checkpoint.key.sealed",
    crate::audit::CHECKPOINT_FILE,
    "pki/root-ca.pem",
    "pki/root-ca.key.sealed",
    "pki/issuing-ca.pem",
    "pki/issuing-ca.key.sealed",
    "pki/server.pem",
    "pki/server.key.sealed",
    "pki/server.meta",
    KEYS_LOCK,
];

/// Every secret sealed under the KEK, as (path relative to the data directory, sealing label): the
/// one list that start-up opens, and that `steward kek rotate` re-seals and `steward kek status`
/// reports. The ACME files (`acme/*.sealed`) are sealed by the data key, not the KEK, and so are the
/// database's sealed columns (webhook secrets, TOTP seeds): a KEK rotation leaves them as they are.
pub const SEALED_FILES: &[(&str, &str)] = &[
    ("pki/root-ca.key.sealed", "root-ca.key"),
    ("pki/issuing-ca.key.sealed", "issuing-ca.key"),
    ("pki/server.key.sealed", "server.key"),
    ("federation.key.sealed", "federation.key"),
    ("webhook.key.sealed", "webhook.key"),
    ("audit-chain.key.sealed", "audit-chain.key"),
    ("audit-checkpoint.key.sealed", "audit-checkpoint.key"),
];

/// Held (an exclusive advisory lock on `<data_dir>/keys.lock`) while start-up creates or re-creates
/// sealed files and while a rotation re-seals them, so a server starting during `steward kek rotate`
/// cannot have its freshly issued TLS key replaced by the rotation's copy of the old one.
pub(crate) const KEYS_LOCK: &str = "keys.lock";

/// The exclusive lock on the data directory's key files; released on drop.
pub(crate) struct KeysLock(#[allow(dead_code)] fs::File);

pub(crate) fn lock_keys(dir: &Path) -> Result<KeysLock, BootstrapError> {
    let path = dir.join(KEYS_LOCK);
    let mut opts = fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(FILE_MODE);
    }
    let file = opts.open(&path).map_err(io(&path))?;
    file.lock().map_err(io(&path))?;
    Ok(KeysLock(file))
}

/// The systemd credential holding the KEK (`LoadCredential=steward-kek:/etc/steward/kek`).
pub const KEK_CREDENTIAL: &str = "steward-kek";

/// Where the key-encryption key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSource {
    /// `pki.kek` (`STEWARD_KEK`).
    Config,
    /// A file: `pki.kek_file`, the systemd credential or the default `<data_dir>/kek`.
    /// `in_data_dir`: it sits in the data directory, next to the keys it seals.
    File { path: PathBuf, in_data_dir: bool },
}

impl KekSource {
    /// The KEK file, when it is in the data directory: then a copy of the directory (a backup, a
    /// snapshot, a stolen disk image) holds everything needed to unseal the CA keys.
    pub fn in_data_dir(&self) -> Option<&Path> {
        match self {
            Self::File {
                path,
                in_data_dir: true,
            } => Some(path),
            _ => None,
        }
    }
}

/// The key material the server runs with.
pub struct Pki {
    pub root: CertifiedKey,
    pub issuing: std::sync::Arc<CertifiedKey>,
    pub tls_chain: Vec<CertificateDer<'static>>,
    pub tls_key: PrivateKeyDer<'static>,
    /// HMAC-SHA256 key for federated sign-in tokens.
    pub federation_key: aws_lc_rs::hmac::Key,
    /// AES-256-GCM data key sealing the secrets the database must hold readable: webhook signing
    /// secrets and console users' TOTP seeds (each sealed with a label naming its owner, so a blob
    /// cannot be moved to another row). A key of its own (sealed by the KEK in `webhook.key.sealed`,
    /// the name it was first created under) rather than the KEK itself, because the KEK is used at
    /// start only and must not stay in memory for the life of the process.
    pub data_key: std::sync::Arc<Kek>,
    /// The audit chain and checkpoint keys ([`AuditKeys`]).
    pub audit: AuditKeys,
    /// Where the KEK came from (the start banner warns when it is in the data directory).
    pub kek_source: KekSource,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("root", &self.root.thumbprint())
            .field("issuing", &self.issuing.thumbprint())
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError + '_ {
    move |source| BootstrapError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates the data directory and `pki/` (0700) if needed, and tightens the files earlier versions
/// left readable (see [`OWNED_FILES`]).
pub fn prepare_data_dir(dir: &Path) -> Result<(), BootstrapError> {
    fs::create_dir_all(dir.join("pki")).map_err(io(dir))?;
    set_mode(dir, DIR_MODE)?;
    set_mode(&dir.join("pki"), DIR_MODE)?;
    for name in OWNED_FILES {
        tighten(&dir.join(name))?;
    }
    Ok(())
}

/// Prepares the SQLite database file before the store opens it: creates it empty with mode 0600
/// when missing (SQLite creates `-wal` and `-shm` with the database file's mode, so they follow),
/// and tightens an existing one and its `-wal`/`-shm` left readable by an earlier version.
pub fn prepare_database_file(path: &Path) -> Result<(), BootstrapError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(FILE_MODE);
    }
    match opts.open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(path)(e)),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        tighten(Path::new(&p))?;
    }
    Ok(())
}

#[cfg(unix)]
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), BootstrapError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io(path))
}

#[cfg(not(unix))]
pub(crate) fn set_mode(_path: &Path, _mode: u32) -> Result<(), BootstrapError> {
    Ok(())
}

/// The permission bits of `path`, or None if it does not exist (or the platform has none).
#[cfg(unix)]
fn mode_of(path: &Path) -> Result<Option<u32>, BootstrapError> {
    use std::os::unix::fs::PermissionsExt;
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.permissions().mode() & 0o7777)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(not(unix))]
fn mode_of(_path: &Path) -> Result<Option<u32>, BootstrapError> {
    Ok(None)
}

/// Sets an existing file of ours to [`FILE_MODE`] if group or others have any access to it.
fn tighten(path: &Path) -> Result<(), BootstrapError> {
    if let Some(mode) = mode_of(path)?
        && mode & 0o077 != 0
    {
        set_mode(path, FILE_MODE)?;
        tracing::info!(path = %path.display(), old_mode = format!("{mode:04o}"), "made a data file private (0600)");
    }
    Ok(())
}

/// Writes `data` to `path` atomically (temp file + rename), the temp file created 0600 before any
/// byte is written.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), BootstrapError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(FILE_MODE);
        }
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(data).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    // `mode` above applies only when the file is created: a temp file left by a crash keeps its own.
    set_mode(&tmp, FILE_MODE)?;
    fs::rename(&tmp, path).map_err(io(path))
}

fn pki_path(config: &Config, name: &str) -> PathBuf {
    config.data_dir.join("pki").join(name)
}

fn ca_exists(config: &Config) -> bool {
    pki_path(config, "root-ca.pem").exists() || pki_path(config, "root-ca.key.sealed").exists()
}

/// The KEK file to use: `pki.kek_file`, else the systemd credential `steward-kek` when systemd
/// provides one, else `<data_dir>/kek`.
fn kek_path(config: &Config) -> PathBuf {
    if let Some(p) = &config.pki.kek_file {
        return p.clone();
    }
    if let Some(dir) = &config.credentials_directory {
        let credential = dir.join(KEK_CREDENTIAL);
        if credential.exists() {
            return credential;
        }
    }
    config.data_dir.join("kek")
}

/// Whether `path` lies inside `dir` (both resolved when they exist, so symlinks do not hide it).
fn inside(dir: &Path, path: &Path) -> bool {
    let resolve = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    resolve(path).starts_with(resolve(dir))
}

/// The KEKs the server opens with: the current one ([`load_current_kek`]) and the previous ones
/// (`pki.previous_keks`, `pki.previous_kek_files`), which open what a rotation has not re-sealed yet.
pub fn load_kek(config: &Config) -> Result<(KekRing, KekSource), BootstrapError> {
    let (current, source) = load_current_kek(config)?;
    let mut previous = Vec::new();
    for k in &config.pki.previous_keks {
        previous.push(Kek::from_base64(k.expose())?);
    }
    for path in &config.pki.previous_kek_files {
        previous.push(read_kek_file(path)?);
    }
    Ok((KekRing::new(current, previous)?, source))
}

/// Reads a KEK file that must exist, refusing one that group or others can access.
pub fn read_kek_file(path: &Path) -> Result<Kek, BootstrapError> {
    if let Some(mode) = mode_of(path)?
        && mode & 0o077 != 0
    {
        return Err(BootstrapError::KekExposed {
            path: path.to_owned(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io(path))?);
    Ok(Kek::from_base64(text.trim())?)
}

/// Finds the current KEK: `pki.kek` (STEWARD_KEK), else the file [`kek_path`] names, generating
/// `<data_dir>/kek` (or the configured `kek_file`) only when no CA exists yet. A KEK file that group
/// or others can access is refused.
pub fn load_current_kek(config: &Config) -> Result<(Kek, KekSource), BootstrapError> {
    if let Some(k) = &config.pki.kek {
        return Ok((Kek::from_base64(k.expose())?, KekSource::Config));
    }
    let path = kek_path(config);
    let source = |path: &Path| KekSource::File {
        path: path.to_owned(),
        in_data_dir: inside(&config.data_dir, path),
    };
    if let Some(mode) = mode_of(&path)?
        && mode & 0o077 != 0
    {
        return Err(BootstrapError::KekExposed { path, mode });
    }
    match fs::read_to_string(&path).map(Zeroizing::new) {
        Ok(text) => Ok((Kek::from_base64(text.trim())?, source(&path))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if ca_exists(config) {
                return Err(BootstrapError::Inconsistent(format!(
                    "the CA in {} exists but its key-encryption key {} is missing; refusing to start rather than create a new CA",
                    config.data_dir.join("pki").display(),
                    path.display()
                )));
            }
            let kek = Kek::generate()?;
            write_atomic(&path, kek.to_base64().as_bytes())?;
            Ok((kek, source(&path)))
        }
        Err(e) => Err(io(&path)(e)),
    }
}

/// Opens a sealed file's content with the ring; a failure names the file, the configured KEK ids
/// and the KEK the blob says sealed it.
pub(crate) fn unseal(
    config: &Config,
    ring: &KekRing,
    label: &str,
    path: &Path,
    sealed: &str,
) -> Result<(Zeroizing<Vec<u8>>, KekId), BootstrapError> {
    ring.open(label, sealed.trim()).map_err(|_| BootstrapError::Unseal {
        what: path.display().to_string(),
        kek_hint: config.data_dir.join("kek").display().to_string(),
        configured: ring
            .ids()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        sealed_by: match steward_pki::sealed_by(sealed) {
            Ok(SealedBy::Kek(id)) => format!(", but it was sealed under KEK {id}"),
            _ => String::new(),
        },
    })
}

fn pem_to_der(pem: &str, what: &str) -> Result<Vec<u8>, BootstrapError> {
    let mut reader = pem.as_bytes();
    match rustls_pemfile::read_one(&mut reader) {
        Ok(Some(rustls_pemfile::Item::X509Certificate(der))) => Ok(der.to_vec()),
        _ => Err(BootstrapError::Inconsistent(format!("{what} is not a PEM certificate"))),
    }
}

/// Loads `<name>.pem` + `<name>.key.sealed`, or creates them with `generate` when neither exists.
fn load_or_create(
    config: &Config,
    kek: &KekRing,
    name: &str,
    generate: impl FnOnce() -> Result<CertifiedKey, BootstrapError>,
) -> Result<(CertifiedKey, bool), BootstrapError> {
    let cert_path = pki_path(config, &format!("{name}.pem"));
    let key_path = pki_path(config, &format!("{name}.key.sealed"));
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let sealed = fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let (key, _) = unseal(config, kek, &format!("{name}.key"), &key_path, &sealed)?;
            let der = pem_to_der(&pem, &cert_path.display().to_string())?;
            Ok((CertifiedKey::from_der(der, &key)?, false))
        }
        (false, false) => {
            let ck = generate()?;
            let sealed = kek.seal(&format!("{name}.key"), &ck.key_pkcs8_der())?;
            write_atomic(&key_path, sealed.as_bytes())?;
            write_atomic(&cert_path, ck.cert_pem().as_bytes())?;
            Ok((ck, true))
        }
        _ => Err(BootstrapError::Inconsistent(format!(
            "{} and {} must both exist or both be absent; refusing to start",
            cert_path.display(),
            key_path.display()
        ))),
    }
}

/// Loads `<data_dir>/<label>.sealed` (a 32-byte secret sealed under the KEK with `label`), or
/// creates it when absent.
fn load_or_create_secret(config: &Config, kek: &KekRing, label: &str) -> Result<Zeroizing<Vec<u8>>, BootstrapError> {
    let path = config.data_dir.join(format!("{label}.sealed"));
    if path.exists() {
        let sealed = fs::read_to_string(&path).map_err(io(&path))?;
        return unseal(config, kek, label, &path, &sealed).map(|(plain, _)| plain);
    }
    let k = steward_pki::random_bytes::<32>()?;
    write_atomic(&path, kek.seal(label, &k)?.as_bytes())?;
    Ok(Zeroizing::new(k.to_vec()))
}

/// The keys of the audit log, each 32 random bytes sealed by the KEK in the data directory (so in
/// its backups, useless without the KEK) and never in the database: someone who can write the
/// database but not read these cannot extend or rewrite the chain, nor sign a checkpoint.
#[derive(Debug, Clone)]
pub struct AuditKeys {
    /// Links the chain (`audit-chain.key.sealed`).
    pub chain: std::sync::Arc<AuditChainKey>,
    /// Signs checkpoints (`audit-checkpoint.key.sealed`, an Ed25519 seed).
    pub checkpoints: std::sync::Arc<AuditCheckpointSigner>,
}

fn load_audit_keys(config: &Config, kek: &KekRing) -> Result<AuditKeys, BootstrapError> {
    let chain = AuditChainKey::from_bytes(&load_or_create_secret(config, kek, "audit-chain.key")?);
    let seed = load_or_create_secret(config, kek, "audit-checkpoint.key")?;
    let checkpoints = AuditCheckpointSigner::from_seed(&seed)
        .map_err(|e| BootstrapError::Inconsistent(format!("audit-checkpoint.key.sealed: {e}")))?;
    Ok(AuditKeys {
        chain: std::sync::Arc::new(chain),
        checkpoints: std::sync::Arc::new(checkpoints),
    })
}

/// The data key and the audit keys (the CLI working on the data directory needs them, not the CAs).
pub fn load_data_key(config: &Config) -> Result<(Kek, AuditKeys), BootstrapError> {
    prepare_data_dir(&config.data_dir)?;
    let _lock = lock_keys(&config.data_dir)?;
    let (kek, _) = load_kek(config)?;
    let data_key = Kek::from_bytes(&load_or_create_secret(config, &kek, "webhook.key")?)?;
    Ok((data_key, load_audit_keys(config, &kek)?))
}

/// Loads or creates all key material. Returns it plus whether the CA was created now.
pub fn load_pki(config: &Config) -> Result<(Pki, bool), BootstrapError> {
    prepare_data_dir(&config.data_dir)?;
    let lock = lock_keys(&config.data_dir)?;
    let (kek, kek_source) = load_kek(config)?;
    if let Some(path) = kek_source.in_data_dir() {
        tracing::warn!(
            kek = %path.display(),
            "the key-encryption key is in the data directory, next to the keys it seals: a copy of the \
             directory unseals the CA. Keep it elsewhere (STEWARD_KEK, pki.kek_file or the systemd \
             credential steward-kek; docs/OPERATIONS.md)"
        );
    }
    let org = config.pki.organization.clone();
    let (root, created) = load_or_create(config, &kek, "root-ca", || {
        Ok(steward_pki::generate_root_ca(
            &format!("{org} Root CA"),
            &org,
            Duration::days(3650 * 2),
        )?)
    })?;
    if !created && !pki_path(config, "issuing-ca.pem").exists() {
        return Err(BootstrapError::Inconsistent(
            "the root CA exists but the device issuing CA is missing; refusing to start".into(),
        ));
    }
    let (issuing, _) = load_or_create(config, &kek, "issuing-ca", || {
        Ok(steward_pki::generate_issuing_ca(
            &root,
            &format!("{org} Device Identity CA"),
            &org,
            Duration::days(3650),
        )?)
    })?;

    let federation_key = {
        let bytes = load_or_create_secret(config, &kek, "federation.key")?;
        aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes)
    };
    // Named `webhook.key` after what it first sealed; it now seals TOTP seeds too.
    let data_key = std::sync::Arc::new(Kek::from_bytes(&load_or_create_secret(config, &kek, "webhook.key")?)?);
    let audit = load_audit_keys(config, &kek)?;

    let (tls_chain, tls_key) = load_tls(config, &kek, &root)?;
    drop(lock);
    warn_about_previous_keks(config, &kek);
    Ok((
        Pki {
            root,
            issuing: std::sync::Arc::new(issuing),
            tls_chain,
            tls_key,
            federation_key,
            data_key,
            audit,
            kek_source,
        },
        created,
    ))
}

/// The operator's certificate if configured; otherwise ours, regenerated when the names or key
/// algorithm changed or it expires within 30 days.
fn load_tls(
    config: &Config,
    kek: &KekRing,
    root: &CertifiedKey,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), BootstrapError> {
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        let chain_pem = fs::read(cert).map_err(io(cert))?;
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut chain_pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| BootstrapError::Tls(format!("{}: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(BootstrapError::Tls(format!("{} holds no certificate", cert.display())));
        }
        let key_pem = Zeroizing::new(fs::read(key).map_err(io(key))?);
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| BootstrapError::Tls(format!("{}: {e}", key.display())))?
            .ok_or_else(|| BootstrapError::Tls(format!("{} holds no private key", key.display())))?;
        return Ok((chain, key));
    }

    let alg = match config.tls.key_algorithm {
        TlsKeyAlgorithm::EcdsaP256 => KeyAlgorithm::EcdsaP256,
        TlsKeyAlgorithm::Rsa2048 => KeyAlgorithm::Rsa2048,
    };
    let names = config.tls_hostnames();
    let meta = format!("{:?} {}\n", config.tls.key_algorithm, names.join(","));
    let meta_path = pki_path(config, "server.meta");
    let cert_path = pki_path(config, "server.pem");
    let key_path = pki_path(config, "server.key.sealed");
    let reusable = fs::read_to_string(&meta_path).is_ok_and(|m| m == meta);
    let existing = if reusable && cert_path.exists() && key_path.exists() {
        let pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let sealed = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        match kek.open("server.key", sealed.trim()) {
            Ok((key, _)) => {
                let ck = CertifiedKey::from_der(pem_to_der(&pem, "server.pem")?, &key)?;
                (ck.not_after() > OffsetDateTime::now_utc() + Duration::days(30)).then_some(ck)
            }
            // The server key is ours to replace (unlike the CA): make a new one.
            Err(_) => None,
        }
    } else {
        None
    };
    let ck = match existing {
        Some(ck) => ck,
        None => {
            let ck = steward_pki::generate_tls_server_cert(root, &names, alg, Duration::days(397))?;
            write_atomic(&key_path, kek.seal("server.key", &ck.key_pkcs8_der())?.as_bytes())?;
            write_atomic(&cert_path, ck.cert_pem().as_bytes())?;
            write_atomic(&meta_path, meta.as_bytes())?;
            ck
        }
    };
    let key = PrivateKeyDer::Pkcs8(ck.key_pkcs8_der().to_vec().into());
    // Send the root too: clients that were not given our CA can still build the chain once they trust it.
    let chain = vec![
        CertificateDer::from(ck.cert_der().to_vec()),
        CertificateDer::from(root.cert_der().to_vec()),
    ];
    Ok((chain, key))
}

/// Says at start which sealed files a previous KEK still opens (a rotation not run or not finished)
/// and which previous KEKs nothing references any more (they can be removed from the configuration).
fn warn_about_previous_keks(config: &Config, ring: &KekRing) {
    let ids = ring.ids();
    let Some((current, previous)) = ids.split_first() else {
        return;
    };
    tracing::info!(kek.current = %current, kek.previous = previous.len(), "key-encryption keys loaded");
    if previous.is_empty() {
        return;
    }
    let status = crate::kek::status_with(config, ring);
    for id in previous {
        let files = status.files_under(*id);
        if files.is_empty() {
            tracing::info!(kek.id = %id, "a previous key-encryption key seals nothing any more: remove it from the configuration");
        } else {
            tracing::warn!(
                kek.id = %id,
                files = files.join(", "),
                "sealed files are still under a previous key-encryption key: run `steward kek rotate`"
            );
        }
    }
}

/// The name a configured bootstrap token is listed under.
pub const CONFIGURED_TOKEN_NAME: &str = "bootstrap (configured)";
/// The name the token generated at the first start is listed under.
pub const GENERATED_TOKEN_NAME: &str = "bootstrap (generated)";

/// Makes sure a bootstrap admin token exists. With `admin_token` configured it is installed
/// (idempotent) and every other bootstrap token is revoked — the configured value replaces earlier
/// ones, so changing it rotates the credential — and nothing is printed. Otherwise, the first start
/// generates one and returns it so the caller prints it once; later starts return None (also when
/// every bootstrap token was revoked: a restart never mints a new one, configure `admin_token` to
/// recover).
pub async fn ensure_admin_token(
    config: &Config,
    store: &dyn AccessStore,
) -> Result<Option<SecretString>, BootstrapError> {
    let now = OffsetDateTime::now_utc();
    if let Some(token) = &config.admin_token {
        let installed = store
            .install_bootstrap_token(&NewBootstrapToken {
                id: ApiTokenId::new(),
                name: CONFIGURED_TOKEN_NAME.into(),
                token_hash: TokenHash::of(token.expose()),
                created_at: now,
            })
            .await?;
        if installed.revoked_others > 0 {
            tracing::info!(
                revoked = installed.revoked_others,
                "the configured admin_token replaced the earlier bootstrap token(s); they no longer authenticate"
            );
        }
        if !installed.token.usable() {
            tracing::warn!(
                token.id = %installed.token.id,
                "the configured admin_token was revoked and does not authenticate; configure a new value"
            );
        }
        return Ok(None);
    }
    if store.count_admin_tokens().await? > 0 {
        return Ok(None);
    }
    let token = TokenKind::Admin
        .generate()
        .map_err(|_| BootstrapError::Inconsistent("system random generator failed".into()))?;
    store
        .install_bootstrap_token(&NewBootstrapToken {
            id: ApiTokenId::new(),
            name: GENERATED_TOKEN_NAME.into(),
            token_hash: TokenHash::of(token.expose()),
            created_at: now,
        })
        .await?;
    Ok(Some(token))
}
