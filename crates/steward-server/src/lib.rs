//! The Steward server's composition root: configuration, the data directory and its keys, the
//! store chosen by `database.url`, TLS, our own accept loop, the webhook dispatcher, and the router
//! assembled from the surfaces — each platform's device endpoints (wired in [`compose`], the one
//! module that names a platform), the admin REST API (`steward-api`) and the web console
//! (`steward-console`), and the audit checkpoint writer ([`audit`]). [`start`] prepares everything
//! and serves until [`RunningServer::shutdown`].

pub mod acme;
pub mod audit;
pub mod bootstrap;
pub mod compose;
pub mod config;
pub mod doctor;
pub mod kek;
pub mod listener;
pub mod local;
pub mod readyz;
pub mod rollouts;
pub mod tls;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use steward_core::service::Core;
use steward_core::{SecretString, Store};
use steward_store_postgres::{PgOptions, PgStore};
use steward_store_sqlite::{SqliteOptions, SqliteStore};
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
    #[error(transparent)]
    Acme(#[from] steward_acme::AcmeError),
    #[error("store: {0}")]
    Store(#[from] steward_core::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Opens the store `database.url` names (default: SQLite in the data directory), applying its
/// migrations.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    match config.database_url()? {
        config::DatabaseUrl::Sqlite(_) => Ok(open_sqlite(config).await?),
        config::DatabaseUrl::Postgres(_) => Ok(open_postgres(config).await?),
    }
}

/// The SQLite store of this configuration, as its concrete type (tests read it through
/// `steward_core::store::Inspect`). The database file is created 0600 before SQLite opens it, so
/// its `-wal` and `-shm` files are private too.
pub async fn open_sqlite(config: &Config) -> Result<Arc<SqliteStore>, ServeError> {
    bootstrap::prepare_data_dir(&config.data_dir)?;
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(config.database.busy_timeout_ms),
    };
    match config.database_url()? {
        config::DatabaseUrl::Sqlite(path) => {
            bootstrap::prepare_database_file(&path)?;
            Ok(Arc::new(SqliteStore::open_with(&path, options).await?))
        }
        config::DatabaseUrl::Postgres(_) => Err(ServeError::Store(steward_core::StoreError::Backend(
            "database.url names PostgreSQL, not a SQLite file".into(),
        ))),
    }
}

/// The PostgreSQL store of this configuration (`database.url = "postgres://…"`), as its concrete
/// type. The data directory still holds the keys and certificates.
pub async fn open_postgres(config: &Config) -> Result<Arc<PgStore>, ServeError> {
    bootstrap::prepare_data_dir(&config.data_dir)?;
    let options = PgOptions {
        max_connections: config.database.max_connections,
        statement_timeout: Duration::from_millis(config.database.statement_timeout_ms),
        ..PgOptions::default()
    };
    match config.database_url()? {
        config::DatabaseUrl::Postgres(url) => Ok(Arc::new(PgStore::connect(&url, options).await?)),
        config::DatabaseUrl::Sqlite(_) => Err(ServeError::Store(steward_core::StoreError::Backend(
            "database.url names a SQLite file, not PostgreSQL".into(),
        ))),
    }
}

pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub public_url: String,
    pub root_ca_pem: String,
    /// Set on the first start only, when Steward generated the admin token: print it once.
    pub generated_admin_token: Option<SecretString>,
    pub ca_created: bool,
    /// The services the server runs (tests drive them directly).
    pub core: Core,
    pub config: Arc<Config>,
    pub pki: Arc<Pki>,
    /// The router the listener serves (tests call it in-process).
    pub router: axum::Router,
    /// The TLS server certificate being served (swapped by ACME renewals).
    pub tls_certs: Arc<steward_acme::CertResolver>,
    /// The ACME manager, with `[tls.acme]`.
    pub acme: Option<Arc<steward_acme::AcmeManager>>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The webhook dispatcher ([`webhooks`]); it watches the same shutdown channel.
    webhook_task: JoinHandle<()>,
    /// The rollout evaluation loop ([`rollouts`]); it watches the same shutdown channel.
    rollout_task: JoinHandle<()>,
    /// The ACME renewal loop; it watches the same shutdown channel.
    acme_task: Option<JoinHandle<()>>,
    /// The plain-HTTP listener of ACME `http-01`.
    http01_task: Option<JoinHandle<()>>,
    /// The audit checkpoint writer ([`audit`]), stopped after the listener drained so its last
    /// checkpoint covers the last request.
    audit_stop: watch::Sender<bool>,
    audit_task: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (bounded), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let _ = self.webhook_task.await;
        let _ = self.rollout_task.await;
        for t in [self.acme_task, self.http01_task].into_iter().flatten() {
            let _ = t.await;
        }
        let _ = self.audit_stop.send(true);
        let _ = self.audit_task.await;
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

/// Starts serving with an already opened store.
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
    let initial = tls::certified_key(&pki)?;
    let acme = match acme::settings(&config)? {
        Some(settings) => {
            let store = Arc::new(acme::SealedStore::new(&config.data_dir, pki.data_key.clone())?);
            Some(Arc::new(steward_acme::AcmeManager::new(
                settings,
                store,
                initial.clone(),
            )?))
        }
        None => None,
    };
    let certs = match &acme {
        Some(m) => m.resolver(),
        None => Arc::new(steward_acme::CertResolver::new(initial)),
    };
    let tls = Arc::new(tls::Tls::new(
        &pki,
        certs.clone(),
        config.tls.device_hostname.as_deref(),
    )?);
    // Bound before anything is spawned, so that a taken port fails the start cleanly.
    let http01_listener = match (&acme, &config.tls.acme) {
        (Some(m), Some(a)) if m.challenge() == steward_acme::Challenge::Http01 => {
            let listener = TcpListener::bind(a.http_listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: a.http_listen,
                    source,
                })?;
            Some((listener, m.clone()))
        }
        _ => None,
    };
    let local_addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;
    let root_ca_pem = pki.root.cert_pem();
    let public_url = config.public_url();
    let transport_limits = listener::TransportLimits::from_config(&config);
    let config = Arc::new(config);
    let pki = Arc::new(pki);
    let data_key = pki.data_key.clone();
    let core = compose::core_with_limits(
        store.clone(),
        data_key.clone(),
        pki.audit.chain.clone(),
        &config.limits,
        &config.enrollment.provider_id,
    );
    core.passwords.warm_up();
    let app = compose::router(&config, &core, &pki);
    let (shutdown, rx) = watch::channel(false);
    let (audit_stop, audit_rx) = watch::channel(false);
    let audit_task = audit::spawn(
        store.clone(),
        &core.audit,
        &pki.audit,
        &config.data_dir,
        &config.audit,
        audit_rx,
    );
    let webhook_task = webhooks::spawn(store, data_key, &config.webhooks, rx.clone());
    let rollout_task = rollouts::spawn(core.rollouts.clone(), &config.rollouts, rx.clone());
    let acme_task = acme.clone().map(|m| tokio::spawn(m.run(rx.clone())));
    let http01_task = http01_listener.map(|(l, m)| tokio::spawn(acme::serve_http01(l, m, rx.clone())));
    let task = tokio::spawn(listener::serve(
        listener,
        tls,
        app.clone(),
        compose::REWRITE,
        transport_limits,
        rx,
    ));
    tracing::info!(%local_addr, %public_url, "listening");
    Ok(RunningServer {
        local_addr,
        public_url,
        root_ca_pem,
        generated_admin_token,
        ca_created,
        core,
        config,
        pki,
        router: app,
        tls_certs: certs,
        acme,
        shutdown,
        task,
        webhook_task,
        rollout_task,
        acme_task,
        http01_task,
        audit_stop,
        audit_task,
    })
}
