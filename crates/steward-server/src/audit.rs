//! Signed checkpoints of the audit chain, kept outside the database, and the verification
//! `steward audit verify` runs.
//!
//! The chain itself is keyed (see `steward_core::admin`): without the chain key nobody can edit a row
//! and recompute the rest, nor append a row that verifies. What a key cannot show is a *shorter*
//! chain: deleting the newest rows leaves a prefix that still links. So the server signs, with the
//! checkpoint key (Ed25519, sealed by the KEK), the chain's (count, head, keyed-from marker, time)
//! at every start, after `audit.checkpoint_every_events` new events or `checkpoint_interval_seconds`
//! with new events, whichever comes first, and at shutdown; it appends each one as a JSON line to
//! `<data_dir>/audit-checkpoints.jsonl` (0600, in the data directory's backup set, not in the
//! database) and logs it (target `steward::audit`, for a log shipper or SIEM). Before signing, it
//! verifies the rows since the previous checkpoint with the chain key, so a checkpoint never vouches
//! for a chain that was already tampered with; if they do not verify it logs an error and signs no
//! more checkpoints until restarted.
//!
//! Verification recomputes every link with the chain key, checks each checkpoint's signature, and
//! that the chain passes through each checkpoint's head at its count — so an edit, a forged append
//! and a truncation below the newest checkpoint are each reported with the first bad seq. Rows after
//! the newest checkpoint are protected by the keyed MAC only: deleting them is not detectable.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use steward_core::service::{AuditTrail, Core};
use steward_core::{
    AuditChainBroken, AuditChainKey, AuditChainVerifier, AuditCheckpoint, AuditCheckpointSigner, AuditFilter, Store,
    StoreError,
};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bootstrap::AuditKeys;
use crate::config::AuditConfig;

/// The checkpoint file, relative to the data directory.
pub const CHECKPOINT_FILE: &str = "audit-checkpoints.jsonl";

/// Rows read per query while verifying.
const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A line that does not parse or whose signature does not verify: the file was edited.
    #[error("{} line {line}: {reason}", path.display())]
    Bad { path: PathBuf, line: usize, reason: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// `<data_dir>/audit-checkpoints.jsonl`.
pub fn checkpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CHECKPOINT_FILE)
}

/// Every checkpoint in `path`, each signature checked with `public_key` (a missing file holds none).
pub fn read_checkpoints(path: &Path, public_key: &[u8]) -> Result<Vec<AuditCheckpoint>, CheckpointError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let bad = |line: usize, reason: String| CheckpointError::Bad {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cp: AuditCheckpoint =
            serde_json::from_str(line).map_err(|e| bad(i + 1, format!("not a checkpoint: {e}")))?;
        if !cp.verify(public_key) {
            return Err(bad(
                i + 1,
                "the signature does not verify with this data directory's checkpoint key (the line was edited)".into(),
            ));
        }
        out.push(cp);
    }
    Ok(out)
}

/// Appends one line (file created 0600) and flushes it to disk before returning.
fn append_checkpoint(path: &Path, cp: &AuditCheckpoint) -> Result<String, CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    };
    let line = serde_json::to_string(cp).map_err(|e| io(std::io::Error::other(e)))?;
    let mut opts = fs::OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)?;
    Ok(line)
}

/// What a verification that found nothing wrong covered.
#[derive(Debug, Clone)]
pub struct Verified {
    pub count: u64,
    pub head: String,
    /// The first keyed event (rows before it carry the unkeyed links of an earlier version).
    pub keyed_from: Option<i64>,
    /// The checkpoints the chain passed through.
    pub checkpoints: usize,
    /// The newest of them.
    pub newest: Option<AuditCheckpoint>,
    /// Hex of the Ed25519 key that verifies the checkpoints.
    pub public_key: String,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "audit log intact: {} events, head hash {}", self.count, self.head)?;
        let last = self.count as i64;
        match self.keyed_from {
            Some(k) if k > 1 => {
                writeln!(
                    f,
                    "  events #1-#{}: unkeyed SHA-256 links (written before the keyed chain); the keyed event #{k} covers them",
                    k - 1
                )?;
                writeln!(
                    f,
                    "  events #{k}-#{last}: keyed HMAC-SHA-256 links, verified with the audit chain key"
                )?;
            }
            Some(_) => writeln!(
                f,
                "  events #1-#{last}: keyed HMAC-SHA-256 links, verified with the audit chain key"
            )?,
            None if last > 0 => writeln!(
                f,
                "  events #1-#{last}: unkeyed SHA-256 links only (no keyed event yet): they show accidental damage, not tampering"
            )?,
            None => {}
        }
        match &self.newest {
            Some(c) => {
                writeln!(
                    f,
                    "  {} signed checkpoint(s) verified (key {}); the newest, of {}, covers events #1-#{}",
                    self.checkpoints, self.public_key, c.at, c.count
                )?;
                if c.count < last {
                    writeln!(
                        f,
                        "  events #{}-#{last} are newer than the newest checkpoint: the keyed links protect them against edits and \
                         forgeries, but their deletion would not be detected",
                        c.count + 1
                    )?;
                }
            }
            None => writeln!(
                f,
                "  no signed checkpoint yet (key {}): deleting the newest events would not be detected",
                self.public_key
            )?,
        }
        Ok(())
    }
}

/// Verifies the audit log of a data directory: every link with the chain key, through every
/// checkpoint in `<data_dir>/audit-checkpoints.jsonl`. `Ok(Err(..))` names the first broken event;
/// `Err(CheckpointError::Bad)` a checkpoint line that was edited.
pub async fn verify(
    data_dir: &Path,
    core: &Core,
    keys: &AuditKeys,
) -> Result<Result<Verified, AuditChainBroken>, CheckpointError> {
    let public_key = keys.checkpoints.public_key();
    let checkpoints = {
        let path = checkpoint_path(data_dir);
        let pk = public_key.clone();
        tokio::task::spawn_blocking(move || read_checkpoints(&path, &pk))
            .await
            .map_err(|e| CheckpointError::Io {
                path: checkpoint_path(data_dir),
                source: std::io::Error::other(e),
            })??
    };
    Ok(core.audit.verify(checkpoints).await?.map(|v| Verified {
        count: v.count(),
        head: v.head().to_owned(),
        keyed_from: v.keyed_from(),
        checkpoints: v.checkpoints().len(),
        newest: v.checkpoints().last().cloned(),
        public_key: hex::encode(&public_key),
    }))
}

/// Starts the checkpoint writer; it signs one last checkpoint and ends when `stop` turns true (or
/// its sender is dropped). Send it only after the listener drained, so the last checkpoint covers
/// the last request's event.
pub fn spawn(
    store: Arc<dyn Store>,
    trail: &AuditTrail,
    keys: &AuditKeys,
    data_dir: &Path,
    config: &AuditConfig,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let appended = trail.appended();
    let mut writer = Writer {
        store,
        key: trail.key().clone(),
        signer: keys.checkpoints.clone(),
        path: checkpoint_path(data_dir),
        verifier: None,
        last_signed: 0,
    };
    let every_events = i64::from(config.checkpoint_every_events);
    let interval = Duration::from_secs(config.checkpoint_interval_seconds);
    tokio::spawn(async move {
        writer.start().await;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => writer.checkpoint().await,
                _ = appended.notified() => {
                    if writer.head_seq().await - writer.last_signed >= every_events {
                        writer.checkpoint().await;
                        ticker.reset();
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        writer.checkpoint().await;
    })
}

struct Writer {
    store: Arc<dyn Store>,
    key: Arc<AuditChainKey>,
    signer: Arc<AuditCheckpointSigner>,
    path: PathBuf,
    /// Verified up to the newest row seen; None once something did not verify (no more signing).
    verifier: Option<AuditChainVerifier>,
    /// The count of the newest checkpoint written (0: none).
    last_signed: i64,
}

impl Writer {
    /// Picks up after the newest checkpoint in the file (checking that the chain still has its head
    /// there), then signs one for whatever was appended since (the CLI writes events while no server
    /// runs).
    async fn start(&mut self) {
        match self.resume().await {
            Ok(v) => self.verifier = Some(v),
            Err(reason) => {
                tracing::error!(
                    target: "steward::audit",
                    %reason,
                    "the audit log or its checkpoints do not verify; no checkpoints are signed until this is investigated \
                     (steward audit verify)"
                );
                return;
            }
        }
        self.checkpoint().await;
    }

    async fn resume(&mut self) -> Result<AuditChainVerifier, String> {
        let path = self.path.clone();
        let pk = self.signer.public_key();
        let checkpoints = tokio::task::spawn_blocking(move || read_checkpoints(&path, &pk))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let keyed_from = self.store.audit_keyed_from().await.map_err(|e| e.to_string())?;
        let newest = checkpoints.iter().max_by_key(|c| c.count).cloned();
        let v = AuditChainVerifier::new(Some(self.key.clone()), keyed_from, checkpoints).map_err(|b| b.to_string())?;
        let Some(c) = newest else { return Ok(v) };
        let row = self
            .store
            .audit_events(&AuditFilter::default(), Some(c.count - 1), 1)
            .await
            .map_err(|e| e.to_string())?;
        match row.first() {
            Some(e) if e.seq == c.count && e.hash == c.head => {
                self.last_signed = c.count;
                Ok(v.resume_after(c.count, &c.head, c.count as u64))
            }
            Some(e) if e.seq == c.count => Err(format!(
                "audit event #{}: differs from the signed checkpoint of {}",
                c.count, c.at
            )),
            _ => Err(format!(
                "audit event #{}: missing, but the signed checkpoint of {} covers it (rows were deleted)",
                c.count, c.at
            )),
        }
    }

    /// The seq of the newest row (0 when empty or unreadable).
    async fn head_seq(&self) -> i64 {
        let newest = AuditFilter {
            newest_first: true,
            ..AuditFilter::default()
        };
        match self.store.audit_events(&newest, None, 1).await {
            Ok(rows) => rows.first().map_or(0, |e| e.seq),
            Err(_) => 0,
        }
    }

    /// Verifies the rows since the last pass and, if there are new ones, signs and writes their head.
    async fn checkpoint(&mut self) {
        let store = self.store.clone();
        let Some(v) = self.verifier.as_mut() else { return };
        let verified = async {
            loop {
                let page = store
                    .audit_events(&AuditFilter::default(), Some(v.last_seq()), PAGE)
                    .await
                    .map_err(|e| e.to_string())?;
                // The marker after the rows: it commits with the first keyed row, so any keyed row
                // just read has its marker visible now (read before, it could still be missing).
                let marker = store.audit_keyed_from().await.map_err(|e| e.to_string())?;
                v.adopt_keyed_from(marker).map_err(|b| b.to_string())?;
                for e in &page {
                    v.check(e).map_err(|b| b.to_string())?;
                }
                if page.len() < PAGE as usize {
                    return Ok::<_, String>(());
                }
            }
        }
        .await;
        if let Err(reason) = verified {
            tracing::error!(
                target: "steward::audit",
                %reason,
                "the audit log does not verify; no more checkpoints are signed until this is investigated (steward audit verify)"
            );
            self.verifier = None;
            return;
        }
        if v.last_seq() == self.last_signed || v.last_seq() == 0 {
            return;
        }
        let cp = AuditCheckpoint::sign(
            &self.signer,
            v.last_seq(),
            v.head(),
            v.keyed_from(),
            OffsetDateTime::now_utc(),
        );
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || append_checkpoint(&path, &cp)).await {
            Ok(Ok(line)) => {
                self.last_signed = v.last_seq();
                tracing::info!(target: "steward::audit", checkpoint = %line, "audit checkpoint");
            }
            Ok(Err(e)) => tracing::error!(target: "steward::audit", error = %e, "cannot write the audit checkpoint"),
            Err(e) => tracing::error!(target: "steward::audit", error = %e, "the audit checkpoint task failed"),
        }
    }
}
