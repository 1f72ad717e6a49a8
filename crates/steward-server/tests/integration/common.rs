//! Test harness: a server in a temporary data directory, plus helpers to create tokens and users
//! exactly as the CLI does.

use std::sync::Arc;

use steward_core::store::Inspect;
use steward_core::*;
use steward_server::config::AuthPolicy;
use steward_server::{Config, RunningServer};
use steward_sim::{Credentials, EnrollOptions, HttpsClient};
use time::OffsetDateTime;

pub const ADMIN_TOKEN: &str = "stw_adm_integration-test-admin-token";

/// The backend the suite runs on: SQLite in each test's data directory, or, when this variable
/// names a PostgreSQL database (scripts/test runs the suite a second time so), a schema of that
/// database per data directory.
pub const TEST_DATABASE_ENV: &str = "STEWARD_TEST_DATABASE_URL";

/// What the tests read from the server's store: every trait, and the readers no handler uses.
pub trait TestStore: Store + Inspect {}
impl<T: Store + Inspect> TestStore for T {}

pub struct TestServer {
    pub server: RunningServer,
    /// The server's store, with the readers no handler uses ([`Inspect`]).
    pub backend: Arc<dyn TestStore>,
    pub url: String,
    pub root_der: Vec<u8>,
    pub dir: tempfile::TempDir,
}

/// The PostgreSQL test database, when the suite runs on PostgreSQL.
pub fn test_database() -> Option<String> {
    std::env::var(TEST_DATABASE_ENV).ok().filter(|u| !u.trim().is_empty())
}

/// The PostgreSQL database of the tests that always use one (the schema comparison):
/// `STEWARD_TEST_POSTGRES_URL` (scripts/test sets it to the run's database), else the local server.
pub fn postgres_database() -> String {
    std::env::var("STEWARD_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The schema that holds the data of the data directory `dir`: a server started again on the same
/// directory (a restart) finds its data, as it would in the SQLite file there.
fn schema_of(dir: &std::path::Path) -> String {
    let name = dir
        .file_name()
        .map(|n| n.as_encoded_bytes().to_vec())
        .unwrap_or_default();
    format!("t_{}", hex::encode(name))
}

pub fn config_for(dir: &std::path::Path, port: u16) -> Config {
    let database = steward_server::config::DatabaseConfig {
        url: test_database().map(|url| {
            let sep = if url.contains('?') { '&' } else { '?' };
            SecretString::new(format!("{url}{sep}options=-c%20search_path%3D{}", schema_of(dir)))
        }),
        ..Default::default()
    };
    Config {
        data_dir: dir.to_owned(),
        listen: ([127, 0, 0, 1], port).into(),
        public_url: Some(format!("https://localhost:{port}")),
        admin_token: Some(SecretString::new(ADMIN_TOKEN)),
        database,
        ..Config::default()
    }
}

/// A tweak for the tests of what only the SQLite backend has (its file, its write lock): they run
/// on SQLite in every pass.
pub fn sqlite(c: &mut Config) {
    c.database.url = None;
}

/// Opens the store `config` names, first creating its test schema when that is on PostgreSQL.
pub async fn open_test_store(config: &Config) -> Arc<dyn TestStore> {
    match config.database_url().unwrap() {
        steward_server::config::DatabaseUrl::Sqlite(_) => steward_server::open_sqlite(config).await.unwrap(),
        steward_server::config::DatabaseUrl::Postgres(_) => {
            let admin = test_database().expect("a PostgreSQL URL comes from the test database");
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {admin} ({TEST_DATABASE_ENV}): {e}"));
            let schema = schema_of(&config.data_dir);
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {schema}")))
                .execute(&mut c)
                .await
                .unwrap();
            steward_server::open_postgres(config).await.unwrap()
        }
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, tweak).await
    }

    pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(dir, 0, tweak).await
    }

    /// Stops the server and starts it again on the same port and data directory (a restart).
    pub async fn restart(self) -> Self {
        let port: u16 = self.server.local_addr.port();
        let TestServer { server, dir, .. } = self;
        server.shutdown().await;
        Self::start_on(dir, port, |_| {}).await
    }

    pub async fn start_on(dir: tempfile::TempDir, port: u16, tweak: impl FnOnce(&mut Config)) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut bound = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        let listener = bound.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let mut config = config_for(dir.path(), port);
        tweak(&mut config);
        let backend = open_test_store(&config).await;
        let server = steward_server::start_with_store(config, listener, backend.clone())
            .await
            .unwrap();
        let root_der = server.pki.root.cert_der().to_vec();
        Self {
            backend,
            url: format!("https://localhost:{port}"),
            server,
            root_der,
            dir,
        }
    }

    pub fn store(&self) -> &dyn TestStore {
        self.backend.as_ref()
    }

    pub fn client(&self) -> HttpsClient {
        HttpsClient::new(std::slice::from_ref(&self.root_der), None).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn token(&self, max_uses: Option<u32>, expires_in: time::Duration, group: Option<&str>) -> String {
        let secret = TokenKind::Enrollment.generate().unwrap();
        let now = OffsetDateTime::now_utc();
        self.store()
            .create_enrollment_token(&NewEnrollmentToken {
                id: EnrollmentTokenId::new(),
                token_hash: TokenHash::of(secret.expose()),
                description: Some("test".into()),
                max_uses,
                expires_at: Some(now + expires_in),
                group: group.map(str::to_owned),
                created_at: now,
            })
            .await
            .unwrap();
        secret.expose().to_owned()
    }

    pub async fn user(&self, email: &str, password: &str) {
        self.store()
            .create_user(&User {
                id: UserId::new(),
                email: email.into(),
                display_name: None,
                password_hash: steward_core::secret::hash_password(password).unwrap(),
                disabled: false,
                created_at: OffsetDateTime::now_utc(),
            })
            .await
            .unwrap();
    }

    pub fn options(&self, credentials: Credentials) -> EnrollOptions {
        EnrollOptions::new(self.url.clone(), "alice@example.com", credentials)
    }

    pub async fn issued_count(&self) -> usize {
        self.store()
            .issuance_log()
            .await
            .unwrap()
            .iter()
            .filter(|e| e.event == IssuanceEvent::Issued)
            .count()
    }

    pub async fn enrollment_count(&self) -> usize {
        self.store().list_enrollments().await.unwrap().len()
    }
}

/// A parm of the w7 APPAUTH block whose AAUTHLEVEL is APPSRV.
pub fn appsrv(doc: &steward_windows_proto::mde2::ParsedProvisioningDoc, name: &str) -> Option<String> {
    doc.instances("APPLICATION/APPAUTH")
        .into_iter()
        .find(|b| b.contains(&("AAUTHLEVEL", "APPSRV")))?
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// The device's syncml:auth-md5 credential (APPSRV AAUTHNAME and AAUTHSECRET).
pub fn md5_credentials(
    doc: &steward_windows_proto::mde2::ParsedProvisioningDoc,
) -> Option<steward_sim::session::Md5Credentials> {
    appsrv(doc, "AAUTHNAME")
        .zip(appsrv(doc, "AAUTHSECRET"))
        .map(|(name, secret)| steward_sim::session::Md5Credentials { name, secret })
}

pub fn federated(c: &mut Config) {
    c.enrollment.auth_policy = AuthPolicy::Federated;
}

impl TestServer {
    /// Enrolls a simulated device (with this DeviceID, or a random one) and returns it ready to manage.
    pub async fn managed_device(&self, device_id: Option<&str>) -> steward_sim::ManagedDevice {
        let token = self.token(Some(1), ::time::Duration::hours(1), None).await;
        let mut opts = self.options(Credentials::Password(token));
        opts.device_id = device_id.map(str::to_owned);
        let enrolled = steward_sim::enroll::enroll(&self.client(), &opts).await.unwrap();
        // The device's syncml:auth-md5 credential: the w7 APPAUTH APPSRV block (interop review
        // M-3). Every document carries one (E-2); without md5_auth the server never checks it.
        let md5 = md5_credentials(&enrolled.provisioning_doc);
        let profile = steward_sim::csp::DeviceProfile::random(&enrolled.device_id);
        let mut device = steward_sim::ManagedDevice::from_enrolled(enrolled, profile);
        device.md5 = md5;
        device
    }

    /// Like [`TestServer::managed_device`], but the device also starts from the first nonce the
    /// server provisioned (APPSRV AAUTHDATA), as Windows does.
    pub async fn managed_device_with_initial_nonce(&self) -> steward_sim::ManagedDevice {
        let token = self.token(Some(1), ::time::Duration::hours(1), None).await;
        let opts = self.options(Credentials::Password(token));
        let enrolled = steward_sim::enroll::enroll(&self.client(), &opts).await.unwrap();
        let md5 = md5_credentials(&enrolled.provisioning_doc);
        let nonce = appsrv(&enrolled.provisioning_doc, "AAUTHDATA");
        let profile = steward_sim::csp::DeviceProfile::random(&enrolled.device_id);
        let mut device = steward_sim::ManagedDevice::from_enrolled(enrolled, profile);
        device.md5 = md5;
        device.next_nonce = nonce;
        device
    }

    /// An mTLS client presenting the device's identity.
    pub fn device_client(&self, d: &steward_sim::ManagedDevice) -> HttpsClient {
        d.https_client(std::slice::from_ref(&self.root_der)).unwrap()
    }

    pub async fn enrollment_of(&self, d: &steward_sim::ManagedDevice) -> Enrollment {
        self.store()
            .list_enrollments()
            .await
            .unwrap()
            .into_iter()
            .rev()
            .find(|e| e.device_id.as_str() == d.profile.device_id)
            .expect("enrollment")
    }
}

/// Queueing commands for a device straight into the store, as the admin services do (validated,
/// with the same origins and priorities), for tests that drive the queue without the API.
pub mod admin {
    use steward_core::*;
    use steward_windows::OmaDmCommand;

    use super::TestStore;

    pub async fn queue_command(
        store: &dyn TestStore,
        e: &Enrollment,
        command: OmaDmCommand,
        origin: &str,
        priority: i32,
        expires_in: Option<time::Duration>,
    ) -> Result<CommandId, String> {
        steward_windows::commands::validate(&command).map_err(|e| e.to_string())?;
        enqueue(store, e, command, CommandOrigin::parse(origin), priority, expires_in).await
    }

    pub async fn queue_action(store: &dyn TestStore, e: &Enrollment, action: &Action) -> Result<CommandId, String> {
        let command = steward_windows::commands::action_command(*action, steward_windows::DEFAULT_PROVIDER_ID);
        enqueue(store, e, command, action.origin(), action.priority(), None).await
    }

    async fn enqueue(
        store: &dyn TestStore,
        e: &Enrollment,
        command: OmaDmCommand,
        origin: CommandOrigin,
        priority: i32,
        expires_in: Option<time::Duration>,
    ) -> Result<CommandId, String> {
        let now = time::OffsetDateTime::now_utc();
        let id = CommandId::new();
        store
            .enqueue_commands(&[NewCommand {
                id,
                enrollment_id: e.id,
                payload: command.to_payload(),
                priority,
                origin,
                created_at: now,
                expires_at: expires_in.map(|d| now + d),
            }])
            .await
            .map_err(|e| e.to_string())?;
        Ok(id)
    }
}

/// One admin API call with the admin token, in-process on the server's router: the status and
/// the JSON body (Null when there is none).
pub async fn admin_api(
    t: &TestServer,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (http::StatusCode, serde_json::Value) {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"));
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(axum::body::Body::from(b.to_string()))
            .unwrap(),
        None => req
            .header("content-length", "0")
            .body(axum::body::Body::empty())
            .unwrap(),
    };
    let resp = t.server.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// One scheduled management session of `d`, which the server must end.
pub async fn sync(t: &TestServer, d: &mut steward_sim::ManagedDevice) {
    let client = t.device_client(d);
    let report = d
        .run_session(&client, steward_sim::session::SessionTrigger::Scheduled)
        .await
        .unwrap();
    assert!(report.ended, "the server ends the session");
}
