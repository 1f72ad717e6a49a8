//! The Steward HTTP server: one HTTPS port carrying the Windows enrollment (MS-MDE2) and management
//! (OMA-DM) surfaces, the admin REST API (`/api/v1`) and the web console (`/console`). [`start`] prepares the data directory and key
//! material, opens the store and serves until [`RunningServer::shutdown`].

pub mod admin;
pub mod api;
pub mod bootstrap;
pub mod config;
pub mod console;
mod http_util;
pub mod listener;
pub mod tls;
pub mod webhooks;
pub mod windows;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use steward_core::{SecretString, Store};
use steward_store_sqlite::SqliteStore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use bootstrap::Pki;
pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("store: {0}")]
    Store(#[from] steward_core::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Everything a request handler needs, shared by reference.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub pki: Arc<Pki>,
}

/// Path of the SQLite database inside the data directory.
pub fn database_path(config: &Config) -> std::path::PathBuf {
    config.data_dir.join("steward.db")
}

/// Opens the configured store (SQLite in the data directory), applying migrations.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    bootstrap::prepare_data_dir(&config.data_dir)?;
    Ok(Arc::new(SqliteStore::open(&database_path(config)).await?))
}

/// The router for all surfaces, before the transport. Exposed so tests can drive it in-process.
pub fn router(state: AppState) -> Router {
    windows::routes()
        .merge(api::router(state.clone()))
        .merge(console::router(state.clone()))
        .with_state(state)
}

pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub public_url: String,
    pub root_ca_pem: String,
    /// Set on the first start only, when Steward generated the admin token: print it once.
    pub generated_admin_token: Option<SecretString>,
    pub ca_created: bool,
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The webhook dispatcher ([`webhooks`]); it watches the same shutdown channel.
    webhook_task: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (bounded), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let _ = self.webhook_task.await;
    }

    /// Serves until the process receives Ctrl-C / SIGTERM.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds `config.listen` and starts serving.
pub async fn start(config: Config) -> Result<RunningServer, ServeError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    start_with_listener(config, listener).await
}

/// Starts serving on an already-bound listener (tests bind `127.0.0.1:0` first so the public URL can
/// carry the real port).
pub async fn start_with_listener(config: Config, listener: TcpListener) -> Result<RunningServer, ServeError> {
    let store = open_store(&config).await?;
    start_with_store(config, listener, store).await
}

/// Starts serving with an already opened store: the seam where another backend (PostgreSQL) plugs in.
pub async fn start_with_store(
    config: Config,
    listener: TcpListener,
    store: Arc<dyn Store>,
) -> Result<RunningServer, ServeError> {
    config.validate()?;
    let (pki, ca_created) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || bootstrap::load_pki(&config))
            .await
            .map_err(|e| bootstrap::BootstrapError::Inconsistent(format!("key setup task failed: {e}")))??
    };
    let generated_admin_token = bootstrap::ensure_admin_token(&config, store.as_ref()).await?;
    let tls = tls::server_config(&pki)?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;
    let root_ca_pem = pki.root.cert_pem();
    let public_url = config.public_url();
    let handshake_timeout = Duration::from_secs(config.limits.handshake_timeout_seconds);
    let state = AppState {
        config: Arc::new(config),
        store,
        pki: Arc::new(pki),
    };
    let app = router(state.clone());
    let (shutdown, rx) = watch::channel(false);
    let webhook_task = webhooks::spawn(&state, rx.clone());
    let task = tokio::spawn(listener::serve(listener, tls, app, handshake_timeout, rx));
    tracing::info!(%local_addr, %public_url, "listening");
    Ok(RunningServer {
        local_addr,
        public_url,
        root_ca_pem,
        generated_admin_token,
        ca_created,
        state,
        shutdown,
        task,
        webhook_task,
    })
}
