//! The admin API in this process, for the CLI working on the data directory (`steward --local`, or
//! no server configured): the same router, handlers, validation and audit as over HTTPS, reached
//! without a network and without a token — the caller is the local administrator
//! ([`steward_core::Principal::local_cli`]), vouched for by [`steward_api::TrustedPrincipal`]. So
//! the CLI has one implementation of every operation, with two transports.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use steward_api::TrustedPrincipal;
use steward_core::Principal;
use steward_core::service::Core;
use tower::ServiceExt;

use crate::{Config, ServeError, bootstrap, compose};

/// The admin API over one data directory.
#[derive(Clone)]
pub struct LocalApi {
    router: Router,
    core: Core,
    audit_keys: bootstrap::AuditKeys,
}

impl LocalApi {
    /// Opens the configured store and the data key (the CAs are not needed) and builds the API.
    pub async fn open(config: &Config) -> Result<Self, ServeError> {
        let store = crate::open_store(config).await?;
        let (data_key, audit_keys) = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || bootstrap::load_data_key(&config))
                .await
                .map_err(|e| bootstrap::BootstrapError::Inconsistent(format!("key setup task failed: {e}")))??
        };
        let core = compose::core_with_limits(
            store,
            Arc::new(data_key),
            audit_keys.chain.clone(),
            &crate::config::LimitsConfig::default(),
            &config.enrollment.provider_id,
        );
        let state = steward_api::ApiState {
            core: core.clone(),
            settings: Arc::new(compose::server_settings(config, &core)),
        };
        let router = steward_api::router(state.clone()).with_state(state);
        Ok(Self {
            router,
            core,
            audit_keys,
        })
    }

    /// The services under the API (what has no API route: verifying the audit chain).
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The audit keys of the data directory (`steward audit verify` checks checkpoints with them).
    pub fn audit_keys(&self) -> &bootstrap::AuditKeys {
        &self.audit_keys
    }

    /// One API call: `path` with its query, a JSON body for writes. Returns the status and body.
    pub async fn call(&self, method: Method, path: &str, json: Option<Vec<u8>>) -> (StatusCode, Bytes) {
        let mut builder = Request::builder().method(method).uri(path);
        if json.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        let Ok(mut req) = builder.body(json.map_or_else(Body::empty, Body::from)) else {
            return (StatusCode::BAD_REQUEST, Bytes::from_static(b"invalid request"));
        };
        req.extensions_mut().insert(TrustedPrincipal(Principal::local_cli()));
        let resp = match self.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (status, body)
    }
}
