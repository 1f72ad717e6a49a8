//! The CLI's own settings: which server to talk to, which CA to trust and the API token, kept in
//! `$XDG_CONFIG_HOME/steward/cli.toml` (or `~/.config/steward/cli.toml`), mode 0600, written by
//! `steward login`. `STEWARD_SERVER`, `STEWARD_TOKEN` and `STEWARD_CA` override it for scripts.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::client::{Target, normalize_server};

pub const ENV_SERVER: &str = "STEWARD_SERVER";
pub const ENV_TOKEN: &str = "STEWARD_TOKEN";
pub const ENV_CA: &str = "STEWARD_CA";

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    pub server: Option<String>,
    /// PEM file of the CA to trust (absent: the system's roots).
    pub ca: Option<PathBuf>,
    pub token: Option<String>,
}

/// `$XDG_CONFIG_HOME/steward/cli.toml`, else `$HOME/.config/steward/cli.toml`; None when neither
/// variable is set (then there is no stored login).
pub fn path_from(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let absolute = |v: Option<String>| {
        v.filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base = absolute(env("XDG_CONFIG_HOME")).or_else(|| absolute(env("HOME")).map(|h| h.join(".config")))?;
    Some(base.join("steward").join("cli.toml"))
}

pub fn path() -> Option<PathBuf> {
    path_from(&|k| std::env::var(k).ok())
}

pub fn load(path: &Path) -> Result<Option<CliConfig>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: {} holds an API token but others can read it; run chmod 600 on it",
                path.display()
            );
        }
    }
    let c = toml::from_str(&text).with_context(|| format!("{} is not a valid CLI configuration", path.display()))?;
    Ok(Some(c))
}

/// Writes the file atomically (temporary file, then rename), mode 0600 in a 0700 directory.
pub fn save(path: &Path, config: &CliConfig) -> Result<()> {
    let dir = path.parent().context("the configuration path has no directory")?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let text = toml::to_string(config).context("encoding the CLI configuration")?;
    let tmp = dir.join(".cli.toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(b"# Written by `steward login`. Holds an API token: keep it private (mode 0600).\n")?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Removes the stored login; false when there was none.
pub fn remove(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// The server the CLI talks to, from the environment over the stored login; None when neither names
/// one (then device commands work on the local data directory). The stored token and CA are only
/// used for the stored server, so `STEWARD_SERVER=https://elsewhere` never receives them.
pub fn resolve_from(env: &dyn Fn(&str) -> Option<String>, stored: Option<CliConfig>) -> Result<Option<Target>> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let stored = stored.unwrap_or_default();
    let stored_server = stored.server.as_deref().map(normalize_server).transpose()?;
    let server = match env(ENV_SERVER) {
        Some(s) => normalize_server(&s).context(ENV_SERVER)?,
        None => match &stored_server {
            Some(s) => s.clone(),
            None => return Ok(None),
        },
    };
    let same = stored_server.as_deref() == Some(server.as_str());
    let token = match env(ENV_TOKEN) {
        Some(t) => t,
        None => match stored.token.filter(|_| same) {
            Some(t) => t,
            None => bail!("no API token for {server}: run `steward login --server {server}` or set {ENV_TOKEN}"),
        },
    };
    let ca = env(ENV_CA).map(PathBuf::from).or(stored.ca.filter(|_| same));
    Ok(Some(Target {
        server,
        token: token.trim().to_owned(),
        ca,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    fn stored() -> CliConfig {
        CliConfig {
            server: Some("https://mdm.example.com:8443".into()),
            ca: Some("/etc/steward/root-ca.pem".into()),
            token: Some("stw_adm_stored".into()),
        }
    }

    #[test]
    fn config_path() {
        let p = path_from(&env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/home/a")]));
        assert_eq!(p, Some(PathBuf::from("/x/steward/cli.toml")));
        let p = path_from(&env(&[("XDG_CONFIG_HOME", ""), ("HOME", "/home/a")]));
        assert_eq!(p, Some(PathBuf::from("/home/a/.config/steward/cli.toml")));
        assert_eq!(path_from(&env(&[("XDG_CONFIG_HOME", "relative")])), None);
        assert_eq!(path_from(&env(&[])), None);
    }

    #[test]
    fn environment_overrides_the_stored_login() {
        assert!(
            resolve_from(&env(&[]), None).unwrap().is_none(),
            "nothing configured: local"
        );
        let t = resolve_from(&env(&[]), Some(stored())).unwrap().unwrap();
        assert_eq!(t.server, "https://mdm.example.com:8443");
        assert_eq!(t.token, "stw_adm_stored");
        let t = resolve_from(
            &env(&[("STEWARD_TOKEN", "stw_adm_env"), ("STEWARD_CA", "/ca.pem")]),
            Some(stored()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (t.token.as_str(), t.ca.as_deref()),
            ("stw_adm_env", Some(Path::new("/ca.pem")))
        );
        // The stored token never goes to another server.
        let err = resolve_from(&env(&[("STEWARD_SERVER", "https://other.example.com")]), Some(stored())).unwrap_err();
        assert!(
            err.to_string().contains("no API token for https://other.example.com"),
            "{err}"
        );
        let t = resolve_from(
            &env(&[
                ("STEWARD_SERVER", "https://other.example.com/"),
                ("STEWARD_TOKEN", "stw_adm_x"),
            ]),
            Some(stored()),
        )
        .unwrap()
        .unwrap();
        assert_eq!((t.server.as_str(), t.ca), ("https://other.example.com", None));
        assert!(resolve_from(&env(&[("STEWARD_SERVER", "http://plain")]), None).is_err());
    }

    #[test]
    fn saved_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("conf/steward/cli.toml");
        save(&p, &stored()).unwrap();
        save(&p, &stored()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(
                std::fs::metadata(p.parent().unwrap()).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        let c = load(&p).unwrap().unwrap();
        assert_eq!(c.token.as_deref(), Some("stw_adm_stored"));
        assert!(remove(&p).unwrap());
        assert!(!remove(&p).unwrap());
        assert!(load(&p).unwrap().is_none());
    }
}
