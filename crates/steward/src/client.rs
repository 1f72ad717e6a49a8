//! The CLI's client of Steward's admin API (`/api/v1`), over one of two transports:
//!
//! * HTTPS to a server (`steward login`, or `STEWARD_SERVER` + `STEWARD_TOKEN`): HTTP/1.1 over
//!   rustls with one keep-alive connection and a bearer token;
//! * in process ([`LocalApi`]: `--local`, or no server configured): the same router, handlers,
//!   validation and audit over the local data directory, as the local administrator `cli (local)`.
//!
//! Either way the CLI has one implementation of every admin operation (`ops.rs`), reading and
//! writing the API's own types (`steward_api::types`). RFC 9457 problem documents become
//! [`ApiError`]. Every call returns the typed value and the JSON exactly as the API produced it
//! ([`Fetched`]), so `--output json` prints the API's own document and tables read typed fields.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use steward_api::types::{
    ApiTokenPage, ApiTokenView, CatalogDetail, CatalogList, CommandPage, CommandRequest, CommandView, CreatedApiToken,
    CreatedEnrollmentToken, DeviceDetail, DeviceGroupRequest, DevicePage, DeviceSummary, DeviceTagsRequest,
    DeviceTagsResponse, EnrollmentTokenPage, EnrollmentTokenView, GroupPage, GroupRuleRequest, GroupView,
    NewApiTokenRequest, NewEnrollmentTokenRequest, NewGroupRequest, NewUserRequest, Problem, ServerInfo,
    UpdateUserRequest, UserPage, UserView, WipeRequest,
};
use steward_api::types::{
    ApplyReportView, ApplyRequest, AssignBody, DeviceSettingsView, ProfileDetailView, ProfileExport, ProfileList,
    RolloutView, VerificationRequested,
};
use steward_server::local::LocalApi;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest page the API serves.
pub const MAX_PAGE: u32 = steward_api::MAX_LIMIT;

/// A failed API call: the API's problem document, or a transport failure before there was one.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API answered with an error status (and usually a problem document).
    #[error("{detail} ({title})")]
    Problem {
        status: u16,
        /// "404 Not Found"-style status line text.
        title: String,
        detail: String,
    },
    #[error("{0}")]
    Transport(String),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Problem { status, .. } => Some(*status),
            ApiError::Transport(_) => None,
        }
    }
}

/// The error of a non-2xx answer: its problem document when it has one (a proxy in front of the
/// server may answer with anything, so a partial or missing document falls back to the status).
fn problem(status: http::StatusCode, body: &[u8]) -> ApiError {
    let reason = status.canonical_reason().unwrap_or("Error");
    let (title, detail) = match serde_json::from_slice::<Problem>(body) {
        Ok(p) => (p.title, p.detail),
        Err(_) => {
            let doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let field = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            (
                field("title").unwrap_or_else(|| reason.to_owned()),
                field("detail").unwrap_or_else(|| reason.to_lowercase()),
            )
        }
    };
    // A 401 detail says what is needed; make it actionable for a CLI user.
    let detail = if status == http::StatusCode::UNAUTHORIZED {
        format!("{detail}: the token is unknown, expired or revoked (run `steward login` or set STEWARD_TOKEN)")
    } else {
        detail
    };
    ApiError::Problem {
        status: status.as_u16(),
        title: format!("{} {title}", status.as_u16()),
        detail,
    }
}

/// A typed response and the JSON document it came from.
pub struct Fetched<T> {
    pub data: T,
    pub raw: serde_json::Value,
}

/// Where the server is and how to trust it. The token never prints through `Debug`.
#[derive(Clone)]
pub struct Target {
    /// `https://host[:port][/prefix]`, without a trailing slash.
    pub server: String,
    pub token: String,
    /// PEM file with the CA(s) to trust instead of the system roots (Steward's own root CA).
    pub ca: Option<std::path::PathBuf>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .field("ca", &self.ca)
            .finish()
    }
}

struct Endpoint {
    host: String,
    port: u16,
    /// Path prefix before `/api/v1` (a reverse proxy's), without a trailing slash.
    prefix: String,
}
/// Normalises and checks a server URL: https only, host required, no query or fragment.
pub fn normalize_server(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    parse_endpoint(url)?;
    Ok(url.to_owned())
}

fn parse_endpoint(url: &str) -> Result<Endpoint> {
    let bad = |why: &str| anyhow!("server URL {url:?}: {why} (expected https://host[:port])");
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        if url.starts_with("http://") {
            bad("plain http would send the token in clear; use https")
        } else {
            bad("must start with https://")
        }
    })?;
    if rest.contains(['?', '#', '@']) {
        return Err(bad("no query, fragment or user info"));
    }
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if after.is_empty() => 443,
            None => return Err(bad("bad authority")),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
            None => (authority.to_owned(), 443),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(Endpoint {
        host,
        port,
        prefix: prefix.to_owned(),
    })
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved characters stay).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds `?k=v&…` from the pairs whose value is set.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn tls_config(ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading the CA file {}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.with_context(|| format!("{}: not a PEM certificate file", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("{}: unusable CA certificate", path.display()))?;
            }
            if roots.is_empty() {
                bail!("{}: no certificate in the file", path.display());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // Some system stores hold certificates rustls cannot use; skip them.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                bail!("no system CA certificates found; pass --ca (or STEWARD_CA) with the server's root CA");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// An HTTPS connection to a server: one keep-alive connection, a bearer token.
struct Https {
    endpoint: Arc<Endpoint>,
    authorization: String,
    tls: Arc<rustls::ClientConfig>,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl Https {
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ApiError> {
        let Endpoint { host, port, .. } = &*self.endpoint;
        let addr = format!("{host}:{port}");
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| ApiError::Transport(format!("connecting to {addr} timed out")))?
            .map_err(|e| ApiError::Transport(format!("cannot connect to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.clone())
            .map_err(|e| ApiError::Transport(format!("{host:?} is not a valid server name: {e}")))?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| ApiError::Transport(format!("TLS handshake with {addr} timed out")))?
        .map_err(|e| {
            let hint = if e.to_string().contains("UnknownIssuer") {
                " (the server's certificate is not trusted: pass --ca with Steward's root CA, e.g. steward-data/pki/root-ca.pem)"
            } else {
                ""
            };
            ApiError::Transport(format!("TLS handshake with {addr} failed: {e}{hint}"))
        })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ApiError::Transport(format!("HTTP handshake with {addr}: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// One request over the connection (reconnecting if the server closed it).
    async fn send(
        &self,
        server: &str,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(http::StatusCode, Bytes), ApiError> {
        let mut guard = self.conn.lock().await;
        let usable = matches!(&*guard, Some(s) if !s.is_closed());
        if !usable {
            *guard = Some(self.connect().await?);
        }
        let Some(sender) = guard.as_mut() else {
            return Err(ApiError::Transport("no connection".into()));
        };
        if sender.ready().await.is_err() {
            *sender = self.connect().await?;
        }
        let Endpoint { host, port, prefix } = &*self.endpoint;
        let host_header = if *port == 443 {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{prefix}{path}"))
            .header(http::header::HOST, host_header)
            .header(http::header::AUTHORIZATION, &self.authorization)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("steward-cli/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ApiError::Transport(format!("building the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ApiError::Transport(format!("request to {server} failed: {e}")))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| ApiError::Transport(format!("reading the answer of {server}: {e}")))?
            .to_bytes();
        Ok((parts.status, body))
    }
}

/// How requests reach the API.
enum Transport {
    Https(Https),
    /// The API router in this process, over the local data directory.
    Local(Box<LocalApi>),
}

/// The admin API client. Over HTTPS it keeps one keep-alive connection; [`ApiClient::fork`] makes
/// another that shares the TLS configuration (for concurrent bulk operations).
pub struct ApiClient {
    /// Who answers, for messages: the server's URL, or the local data directory.
    server: String,
    transport: Transport,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of the server `target` names, over HTTPS.
    pub fn new(target: &Target) -> Result<Self> {
        let endpoint = parse_endpoint(&target.server)?;
        if target.token.trim().is_empty() {
            bail!("the API token is empty");
        }
        if target.token.chars().any(|c| c.is_control() || c == ' ') {
            bail!("the API token contains spaces or control characters");
        }
        Ok(Self {
            server: target.server.clone(),
            transport: Transport::Https(Https {
                endpoint: Arc::new(endpoint),
                authorization: format!("Bearer {}", target.token.trim()),
                tls: tls_config(target.ca.as_deref())?,
                conn: Mutex::new(None),
            }),
        })
    }

    /// A client of the API in this process, over the data directory `api` opened (the caller is
    /// the local administrator, audited as `cli (local)`).
    pub fn local(api: LocalApi) -> Self {
        Self {
            server: "the local data directory".into(),
            transport: Transport::Local(Box::new(api)),
        }
    }

    /// Another client for the same API (over HTTPS: the same server and token, its own connection).
    pub fn fork(&self) -> Self {
        let transport = match &self.transport {
            Transport::Https(h) => Transport::Https(Https {
                endpoint: h.endpoint.clone(),
                authorization: h.authorization.clone(),
                tls: h.tls.clone(),
                conn: Mutex::new(None),
            }),
            Transport::Local(api) => Transport::Local(api.clone()),
        };
        Self {
            server: self.server.clone(),
            transport,
        }
    }

    /// One request; the body is JSON when given. Returns the body of a 2xx answer, the problem
    /// otherwise.
    async fn send(&self, method: http::Method, path: &str, body: Option<Vec<u8>>) -> Result<Bytes, ApiError> {
        let (status, body) = match &self.transport {
            Transport::Https(h) => tokio::time::timeout(REQUEST_TIMEOUT, h.send(&self.server, method, path, body))
                .await
                .map_err(|_| ApiError::Transport(format!("{} did not answer in time", self.server)))??,
            Transport::Local(api) => api.call(method, path, body).await,
        };
        if status.is_success() {
            Ok(body)
        } else {
            Err(problem(status, &body))
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Fetched<T>, ApiError> {
        let bytes = self.send(method, path, body).await?;
        let raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::Transport(format!(
                "{} answered {path} with something that is not JSON ({e}); is it a Steward server?",
                self.server
            ))
        })?;
        let data = serde_json::from_value(raw.clone())
            .map_err(|e| ApiError::Transport(format!("unexpected answer to {path}: {e}")))?;
        Ok(Fetched { data, raw })
    }

    // ------------------------------------------------------------ typed calls

    pub async fn server_info(&self) -> Result<Fetched<ServerInfo>, ApiError> {
        self.json(http::Method::GET, "/api/v1/server", None).await
    }

    pub async fn catalog(&self) -> Result<Fetched<CatalogList>, ApiError> {
        self.json(http::Method::GET, "/api/v1/catalog", None).await
    }

    pub async fn catalog_entry(&self, name: &str) -> Result<Fetched<CatalogDetail>, ApiError> {
        self.json(http::Method::GET, &format!("/api/v1/catalog/{}", encode(name)), None)
            .await
    }

    pub async fn devices(
        &self,
        f: &DeviceFilter,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<Fetched<DevicePage>, ApiError> {
        let q = query(&[
            ("name", f.search.clone()),
            ("state", f.state.clone()),
            ("user", f.user.clone()),
            ("group", f.group.clone()),
            ("cursor", cursor),
            ("limit", Some(limit.to_string())),
        ]);
        self.json(http::Method::GET, &format!("/api/v1/devices{q}"), None).await
    }

    pub async fn device(&self, id: &str) -> Result<Fetched<DeviceDetail>, ApiError> {
        self.json(http::Method::GET, &format!("/api/v1/devices/{}", encode(id)), None)
            .await
    }

    pub async fn device_commands(&self, id: &str, cursor: Option<String>) -> Result<Fetched<CommandPage>, ApiError> {
        let q = query(&[("cursor", cursor), ("limit", Some(MAX_PAGE.to_string()))]);
        self.json(
            http::Method::GET,
            &format!("/api/v1/devices/{}/commands{q}", encode(id)),
            None,
        )
        .await
    }

    pub async fn queue_command(&self, id: &str, body: &CommandRequest) -> Result<Fetched<CommandView>, ApiError> {
        self.json(
            http::Method::POST,
            &format!("/api/v1/devices/{}/commands", encode(id)),
            Some(to_json(body)?),
        )
        .await
    }

    pub async fn action(&self, id: &str, action: &DeviceAction) -> Result<Fetched<CommandView>, ApiError> {
        let body = match action {
            DeviceAction::Wipe(w) => Some(to_json(w)?),
            DeviceAction::Reboot | DeviceAction::Lock | DeviceAction::Sync => None,
        };
        self.json(
            http::Method::POST,
            &format!("/api/v1/devices/{}/actions/{}", encode(id), action.name()),
            body,
        )
        .await
    }

    pub async fn cancel_command(&self, id: &str) -> Result<Fetched<CommandView>, ApiError> {
        self.json(
            http::Method::POST,
            &format!("/api/v1/commands/{}/cancel", encode(id)),
            None,
        )
        .await
    }

    pub async fn groups(&self, cursor: Option<String>) -> Result<Fetched<GroupPage>, ApiError> {
        let q = query(&[("cursor", cursor), ("limit", Some(MAX_PAGE.to_string()))]);
        self.json(http::Method::GET, &format!("/api/v1/groups{q}"), None).await
    }

    pub async fn create_group(&self, body: &NewGroupRequest) -> Result<Fetched<GroupView>, ApiError> {
        self.json(http::Method::POST, "/api/v1/groups", Some(to_json(body)?))
            .await
    }

    pub async fn set_group_rule(&self, id: &str, body: &GroupRuleRequest) -> Result<(), ApiError> {
        self.send(
            http::Method::PUT,
            &format!("/api/v1/groups/{}/rule", encode(id)),
            Some(to_json(body)?),
        )
        .await
        .map(drop)
    }

    pub async fn group_members(&self, id: &str, cursor: Option<String>) -> Result<Fetched<DevicePage>, ApiError> {
        let q = query(&[("cursor", cursor), ("limit", Some(MAX_PAGE.to_string()))]);
        self.json(
            http::Method::GET,
            &format!("/api/v1/groups/{}/members{q}", encode(id)),
            None,
        )
        .await
    }

    pub async fn delete_group(&self, id: &str) -> Result<(), ApiError> {
        self.send(http::Method::DELETE, &format!("/api/v1/groups/{}", encode(id)), None)
            .await
            .map(drop)
    }

    pub async fn set_device_group(
        &self,
        device: &str,
        body: &DeviceGroupRequest,
    ) -> Result<Fetched<DeviceSummary>, ApiError> {
        self.json(
            http::Method::PUT,
            &format!("/api/v1/devices/{}/group", encode(device)),
            Some(to_json(body)?),
        )
        .await
    }

    pub async fn set_device_tags(
        &self,
        device: &str,
        body: &DeviceTagsRequest,
    ) -> Result<Fetched<DeviceTagsResponse>, ApiError> {
        self.json(
            http::Method::PUT,
            &format!("/api/v1/devices/{}/tags", encode(device)),
            Some(to_json(body)?),
        )
        .await
    }

    pub async fn users(&self, cursor: Option<String>) -> Result<Fetched<UserPage>, ApiError> {
        let q = query(&[("cursor", cursor), ("limit", Some(MAX_PAGE.to_string()))]);
        self.json(http::Method::GET, &format!("/api/v1/users{q}"), None).await
    }

    pub async fn create_user(&self, body: &NewUserRequest) -> Result<Fetched<UserView>, ApiError> {
        self.json(http::Method::POST, "/api/v1/users", Some(to_json(body)?))
            .await
    }

    pub async fn update_user(&self, id: &str, body: &UpdateUserRequest) -> Result<Fetched<UserView>, ApiError> {
        self.json(
            http::Method::PATCH,
            &format!("/api/v1/users/{}", encode(id)),
            Some(to_json(body)?),
        )
        .await
    }

    pub async fn reset_user_totp(&self, id: &str) -> Result<(), ApiError> {
        self.send(
            http::Method::DELETE,
            &format!("/api/v1/users/{}/totp", encode(id)),
            None,
        )
        .await
        .map(drop)
    }

    pub async fn api_tokens(&self, cursor: Option<String>) -> Result<Fetched<ApiTokenPage>, ApiError> {
        let q = query(&[("cursor", cursor), ("limit", Some(MAX_PAGE.to_string()))]);
        self.json(http::Method::GET, &format!("/api/v1/api-tokens{q}"), None)
            .await
    }

    pub async fn create_api_token(&self, body: &NewApiTokenRequest) -> Result<Fetched<CreatedApiToken>, ApiError> {
        self.json(http::Method::POST, "/api/v1/api-tokens", Some(to_json(body)?))
            .await
    }

    pub async fn revoke_api_token(&self, id: &str) -> Result<(), ApiError> {
        self.send(
            http::Method::DELETE,
            &format!("/api/v1/api-tokens/{}", encode(id)),
            None,
        )
        .await
        .map(drop)
    }

    pub async fn enrollment_tokens(&self, cursor: Option<String>) -> Result<Fetched<EnrollmentTokenPage>, ApiError> {
        let q = query(&[("cursor", cursor), ("limit", Some(MAX_PAGE.to_string()))]);
        self.json(http::Method::GET, &format!("/api/v1/enrollment-tokens{q}"), None)
            .await
    }

    pub async fn create_enrollment_token(
        &self,
        body: &NewEnrollmentTokenRequest,
    ) -> Result<Fetched<CreatedEnrollmentToken>, ApiError> {
        self.json(http::Method::POST, "/api/v1/enrollment-tokens", Some(to_json(body)?))
            .await
    }

    pub async fn profiles(&self) -> Result<Fetched<ProfileList>, ApiError> {
        self.json(http::Method::GET, "/api/v1/profiles", None).await
    }

    pub async fn profile(&self, name: &str) -> Result<Fetched<ProfileDetailView>, ApiError> {
        self.json(http::Method::GET, &format!("/api/v1/profiles/{}", encode(name)), None)
            .await
    }

    pub async fn delete_profile(&self, name: &str) -> Result<(), ApiError> {
        self.send(
            http::Method::DELETE,
            &format!("/api/v1/profiles/{}", encode(name)),
            None,
        )
        .await
        .map(drop)
    }

    pub async fn rollout(&self, name: &str) -> Result<Fetched<RolloutView>, ApiError> {
        self.json(
            http::Method::GET,
            &format!("/api/v1/profiles/{}/rollout", encode(name)),
            None,
        )
        .await
    }

    /// `action`: advance, pause, resume or rollback.
    pub async fn rollout_action(&self, name: &str, action: &str) -> Result<Fetched<RolloutView>, ApiError> {
        self.json(
            http::Method::POST,
            &format!("/api/v1/profiles/{}/rollout/actions/{}", encode(name), encode(action)),
            None,
        )
        .await
    }

    pub async fn apply_profiles(&self, body: &ApplyRequest) -> Result<Fetched<ApplyReportView>, ApiError> {
        self.json(http::Method::POST, "/api/v1/profiles/apply", Some(to_json(body)?))
            .await
    }

    pub async fn export_profiles(&self) -> Result<Fetched<ProfileExport>, ApiError> {
        self.json(http::Method::GET, "/api/v1/profiles/export", None).await
    }

    pub async fn device_settings(&self, id: &str) -> Result<Fetched<DeviceSettingsView>, ApiError> {
        self.json(
            http::Method::GET,
            &format!("/api/v1/devices/{}/settings", encode(id)),
            None,
        )
        .await
    }

    pub async fn verify_device(&self, id: &str) -> Result<Fetched<VerificationRequested>, ApiError> {
        self.json(
            http::Method::POST,
            &format!("/api/v1/devices/{}/actions/verify", encode(id)),
            None,
        )
        .await
    }

    pub async fn verify_group(&self, group: &str) -> Result<Fetched<VerificationRequested>, ApiError> {
        self.json(
            http::Method::POST,
            &format!("/api/v1/groups/{}/actions/verify", encode(group)),
            None,
        )
        .await
    }

    pub async fn assign_catalog(
        &self,
        name: &str,
        body: &AssignBody,
        dry_run: bool,
    ) -> Result<Fetched<ApplyReportView>, ApiError> {
        let q = if dry_run { "?dry_run=true" } else { "" };
        self.json(
            http::Method::POST,
            &format!("/api/v1/catalog/{}/assign{q}", encode(name)),
            Some(to_json(body)?),
        )
        .await
    }

    pub async fn revoke_enrollment_token(&self, id: &str) -> Result<(), ApiError> {
        self.send(
            http::Method::DELETE,
            &format!("/api/v1/enrollment-tokens/{}", encode(id)),
            None,
        )
        .await
        .map(drop)
    }
}

fn to_json<B: Serialize>(body: &B) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(body).map_err(|e| ApiError::Transport(format!("encoding the request: {e}")))
}

/// A remote action on one device (`POST /api/v1/devices/{id}/actions/{name}`).
pub enum DeviceAction {
    Wipe(WipeRequest),
    Reboot,
    Lock,
    Sync,
}

impl DeviceAction {
    fn name(&self) -> &'static str {
        match self {
            DeviceAction::Wipe(_) => "wipe",
            DeviceAction::Reboot => "reboot",
            DeviceAction::Lock => "lock",
            DeviceAction::Sync => "sync",
        }
    }
}

/// The filters of `GET /api/v1/devices` the CLI uses (its query parameters).
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// Substring of the device name.
    pub search: Option<String>,
    pub state: Option<String>,
    pub user: Option<String>,
    /// Group name.
    pub group: Option<String>,
}

/// One of the API's page documents: items and the cursor of the next page.
pub trait Paged: DeserializeOwned {
    type Item;
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

macro_rules! paged {
    ($($page:ty => $item:ty),* $(,)?) => {
        $(impl Paged for $page {
            type Item = $item;
            fn into_parts(self) -> (Vec<$item>, Option<String>) {
                (self.items, self.next_cursor)
            }
        })*
    };
}

paged!(
    DevicePage => DeviceSummary,
    CommandPage => CommandView,
    GroupPage => GroupView,
    UserPage => UserView,
    ApiTokenPage => ApiTokenView,
    EnrollmentTokenPage => EnrollmentTokenView,
);

/// Follows `next_cursor` until the last page (or `max` kept items), keeping the items `keep`
/// accepts, merged into one document of the API's page shape: `{"items": [...], "next_cursor": null}`.
/// The flag says whether more items were left out.
pub async fn collect_pages<P, F, Fut>(
    max: Option<usize>,
    keep: impl Fn(&P::Item) -> bool,
    mut fetch: F,
) -> Result<(Fetched<Vec<P::Item>>, bool), ApiError>
where
    P: Paged,
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Fetched<P>, ApiError>>,
{
    let mut items = Vec::new();
    let mut raw_items = Vec::new();
    let mut cursor = None;
    loop {
        let page = fetch(cursor.take()).await?;
        let raw_page = match page.raw.get("items") {
            Some(serde_json::Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        let (page_items, next_cursor) = page.data.into_parts();
        if raw_page.len() != page_items.len() {
            return Err(ApiError::Transport("malformed page".into()));
        }
        for (item, raw) in page_items.into_iter().zip(raw_page) {
            if keep(&item) {
                items.push(item);
                raw_items.push(raw);
            }
        }
        if let Some(max) = max
            && items.len() >= max
        {
            let more = items.len() > max || next_cursor.is_some();
            items.truncate(max);
            raw_items.truncate(max);
            return Ok(merged(items, raw_items, more));
        }
        match next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(merged(items, raw_items, false)),
        }
    }
}

/// The merged document has no cursor to give back (a filtered page's cursor would skip items);
/// `more` tells the caller that the list was cut short.
fn merged<T>(items: Vec<T>, raw_items: Vec<serde_json::Value>, more: bool) -> (Fetched<Vec<T>>, bool) {
    let raw = serde_json::json!({ "items": raw_items, "next_cursor": null });
    (Fetched { data: items, raw }, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(
            normalize_server("https://mdm.example.com:8443/").ok().as_deref(),
            Some("https://mdm.example.com:8443")
        );
        let e = parse_endpoint("https://[::1]:9443/steward").ok();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.host == "::1" && e.port == 9443 && e.prefix == "/steward")
        );
        let e = parse_endpoint("https://mdm.example.com").ok();
        assert!(e.is_some_and(|e| e.port == 443 && e.prefix.is_empty()));
        for bad in [
            "http://mdm.example.com",
            "mdm.example.com",
            "https://",
            "https://h:x",
            "https://h/?a=1",
            "https://u@h",
        ] {
            assert!(normalize_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_queries() {
        assert_eq!(encode("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(
            query(&[
                ("name", Some("lab pc".into())),
                ("state", None),
                ("limit", Some("5".into()))
            ]),
            "?name=lab%20pc&limit=5"
        );
        assert_eq!(query(&[("state", None)]), "");
    }

    #[test]
    fn problems_become_one_line() {
        let e = problem(
            http::StatusCode::NOT_FOUND,
            br#"{"type":"about:blank","title":"Not Found","status":404,"detail":"device not found","code":"not_found"}"#,
        );
        assert_eq!(e.to_string(), "device not found (404 Not Found)");
        assert_eq!(e.status(), Some(404));
        let e = problem(http::StatusCode::BAD_GATEWAY, b"<html>proxy</html>");
        assert_eq!(e.to_string(), "bad gateway (502 Bad Gateway)");
        let e = problem(
            http::StatusCode::UNAUTHORIZED,
            br#"{"detail":"a valid bearer token is required"}"#,
        );
        assert!(e.to_string().contains("steward login"));
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn target_debug_hides_the_token() {
        let t = Target {
            server: "https://h".into(),
            token: "stw_adm_secret".into(),
            ca: None,
        };
        assert!(!format!("{t:?}").contains("secret"));
    }
}
