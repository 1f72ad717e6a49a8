//! `[tls.acme]` wired to `steward-acme`: the settings from the configuration, and the storage —
//! `<data_dir>/acme/<item>.sealed`, sealed with the data key (AES-256-GCM, a label per item). The
//! data key rather than the KEK: renewals run for the life of the process, and the KEK must not stay
//! in memory after start (see [`Pki::data_key`](crate::Pki)).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use steward_acme::{AcmeError, AcmeSettings, AcmeStore, StoreError, StoredItem};
use steward_pki::Kek;
use zeroize::Zeroizing;

use crate::bootstrap::{self, BootstrapError};
use crate::config::Config;

/// The manager's settings, when `[tls.acme]` is configured.
pub fn settings(config: &Config) -> Result<Option<AcmeSettings>, AcmeError> {
    let Some(acme) = &config.tls.acme else {
        return Ok(None);
    };
    let directory_roots = match &acme.directory_ca_file {
        None => Vec::new(),
        Some(path) => {
            let pem = fs::read(path).map_err(|e| AcmeError::Settings(format!("{}: {e}", path.display())))?;
            let roots = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| AcmeError::Settings(format!("{}: {e}", path.display())))?;
            if roots.is_empty() {
                return Err(AcmeError::Settings(format!("{} holds no certificate", path.display())));
            }
            roots
        }
    };
    let contact = acme
        .contact
        .iter()
        .map(|c| {
            if c.contains(':') {
                c.clone()
            } else {
                format!("mailto:{c}")
            }
        })
        .collect();
    Ok(Some(AcmeSettings {
        domains: config.acme_domains(),
        contact,
        directory_url: acme.directory_url.clone(),
        directory_roots,
    }))
}

/// [`AcmeStore`] in the data directory, every item sealed.
pub struct SealedStore {
    dir: PathBuf,
    key: Arc<Kek>,
}

impl SealedStore {
    pub fn new(data_dir: &Path, key: Arc<Kek>) -> Result<Self, BootstrapError> {
        let dir = data_dir.join("acme");
        fs::create_dir_all(&dir).map_err(|source| BootstrapError::Io {
            path: dir.clone(),
            source,
        })?;
        bootstrap::set_mode(&dir, bootstrap::DIR_MODE)?;
        Ok(Self { dir, key })
    }

    fn path(&self, item: StoredItem) -> PathBuf {
        self.dir.join(format!("{}.sealed", item.name()))
    }

    fn label(item: StoredItem) -> String {
        format!("acme-{}", item.name())
    }
}

impl AcmeStore for SealedStore {
    fn load(&self, item: StoredItem) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let path = self.path(item);
        let sealed = match fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError(format!("{}: {e}", path.display()))),
        };
        self.key
            .open(&Self::label(item), sealed.trim())
            .map(Some)
            .map_err(|e| StoreError(format!("{}: {e}", path.display())))
    }

    fn save(&self, item: StoredItem, data: &[u8]) -> Result<(), StoreError> {
        let path = self.path(item);
        let sealed = self
            .key
            .seal(&Self::label(item), data)
            .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        bootstrap::write_atomic(&path, sealed.as_bytes()).map_err(|e| StoreError(e.to_string()))
    }
}
