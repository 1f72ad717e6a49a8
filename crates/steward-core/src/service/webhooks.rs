//! Webhook subscriptions as the admin surfaces manage them: validation of the target and the event
//! kinds, the signing secret generated and sealed under the data key (bound to the subscription),
//! pausing, the delivery log and test pings. Delivery itself is the server's dispatcher.

use std::net::IpAddr;
use std::sync::Arc;

use steward_pki::Kek;

use super::{Clock, ServiceError, ServiceResult};
use crate::access::Principal;
use crate::secret::SecretString;
use crate::store::{Store, StoreError};
use crate::webhooks::{
    NewWebhook, Webhook, WebhookDelivery, WebhookId, WebhookKinds, WebhookPing, generate_webhook_secret,
};

/// Longest target URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// A new subscription as the surfaces ask for it.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub name: String,
    pub url: String,
    /// Event kind names, or `["all"]`.
    pub events: Vec<String>,
    pub enabled: Option<bool>,
}

fn secret_label(id: WebhookId) -> String {
    // Bound to the subscription: a sealed secret copied to another row does not open.
    format!("webhook-secret:{id}")
}

/// Seals a subscription's signing secret for storage.
pub fn seal_secret(key: &Kek, id: WebhookId, secret: &SecretString) -> Result<String, steward_pki::PkiError> {
    key.seal(&secret_label(id), secret.expose().as_bytes())
}

/// Opens a stored signing secret.
pub fn open_secret(key: &Kek, w: &Webhook) -> Result<SecretString, steward_pki::PkiError> {
    let bytes = key.open(&secret_label(w.id), &w.sealed_secret)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| steward_pki::PkiError::Unseal)?;
    Ok(SecretString::new(text))
}

/// Checks a subscription's target URL. https anywhere; plain http only to a loopback address,
/// because the signature authenticates a delivery but does not encrypt it: device names, users and
/// command outcomes would cross the network in clear text. Loopback http is for a local relay or
/// agent on the same host.
pub fn validate_target_url(url: &str) -> Result<http::Uri, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("the URL is longer than {MAX_URL_LEN} characters"));
    }
    let uri: http::Uri = url.parse().map_err(|_| "not a valid absolute URL".to_owned())?;
    let authority = uri.authority().ok_or("the URL needs a host")?;
    if authority.as_str().contains('@') {
        return Err("credentials in the URL are not allowed; authenticate the signature instead".into());
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("the URL needs a host".into());
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") => {
            let loopback =
                host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(uri)
            } else {
                Err(
                    "plain http is allowed only to a loopback address (payloads are signed, not encrypted); use https"
                        .into(),
                )
            }
        }
        _ => Err("the URL must be https:// (or http:// to a loopback address)".into()),
    }
}

#[derive(Clone)]
pub struct Webhooks {
    store: Arc<dyn Store>,
    data_key: Arc<Kek>,
    clock: Arc<dyn Clock>,
}

impl Webhooks {
    pub fn new(store: Arc<dyn Store>, data_key: Arc<Kek>, clock: Arc<dyn Clock>) -> Self {
        Self { store, data_key, clock }
    }

    /// Creates a subscription; returns it with its signing secret (shown once).
    pub async fn create(&self, who: &Principal, r: WebhookRequest) -> ServiceResult<(Webhook, SecretString)> {
        let name = r.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(ServiceError::Invalid("name must be 1-64 printable characters".into()));
        }
        let url = r.url.trim().to_owned();
        validate_target_url(&url).map_err(|m| ServiceError::Invalid(format!("url: {m}")))?;
        let kinds = WebhookKinds::parse(&r.events).map_err(|bad| {
            ServiceError::Invalid(if bad.is_empty() {
                "events must name at least one event kind, or \"all\"".into()
            } else {
                format!("unknown event kind {bad:?}")
            })
        })?;
        let secret =
            generate_webhook_secret().map_err(|_| ServiceError::Internal("system random generator failed".into()))?;
        let id = WebhookId::new();
        let sealed_secret = seal_secret(&self.data_key, id, &secret)
            .map_err(|e| ServiceError::Internal(format!("sealing the webhook secret: {e}")))?;
        let w = self
            .store
            .create_webhook(&NewWebhook {
                id,
                name,
                url,
                kinds,
                sealed_secret,
                enabled: r.enabled.unwrap_or(true),
                created_by: who.name.clone(),
                created_at: self.clock.now(),
            })
            .await?;
        Ok((w, secret))
    }

    pub async fn list(&self) -> ServiceResult<Vec<Webhook>> {
        Ok(self.store.list_webhooks().await?)
    }

    pub async fn get(&self, id: &str) -> ServiceResult<Webhook> {
        let id: WebhookId = id.parse().map_err(|_| ServiceError::NotFound("webhook"))?;
        self.store.webhook(id).await?.ok_or(ServiceError::NotFound("webhook"))
    }

    pub async fn delete(&self, id: &str) -> ServiceResult<WebhookId> {
        let id: WebhookId = id.parse().map_err(|_| ServiceError::NotFound("webhook"))?;
        if !self.store.delete_webhook(id).await? {
            return Err(ServiceError::NotFound("webhook"));
        }
        Ok(id)
    }

    /// Pauses or resumes a subscription; returns it as changed.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> ServiceResult<Webhook> {
        let w = self.get(id).await?;
        if !self.store.set_webhook_enabled(w.id, enabled).await? {
            return Err(ServiceError::NotFound("webhook"));
        }
        self.get(id).await
    }

    /// A page of the delivery log, newest first, below `before`; `more` when another page follows.
    pub async fn deliveries(
        &self,
        id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> ServiceResult<(Webhook, Vec<WebhookDelivery>, bool)> {
        let w = self.get(id).await?;
        let mut rows = self.store.webhook_deliveries(w.id, before, limit + 1).await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Ok((w, rows, more))
    }

    /// Queues a test ping.
    pub async fn ping(&self, id: &str) -> ServiceResult<(Webhook, WebhookPing)> {
        let w = self.get(id).await?;
        let ping = self
            .store
            .queue_webhook_ping(w.id, self.clock.now())
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ServiceError::NotFound("webhook"),
                other => other.into(),
            })?
            .ok_or(ServiceError::NotFound("webhook"))?;
        Ok((w, ping))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::webhooks::WebhookKinds;
    use time::OffsetDateTime;

    #[test]
    fn target_urls() {
        assert!(validate_target_url("https://hooks.example.com/steward?x=1").is_ok());
        assert!(validate_target_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(validate_target_url("http://[::1]:9000/hook").is_ok());
        assert!(validate_target_url("http://localhost/hook").is_ok());
        for bad in [
            "http://hooks.example.com/steward",
            "http://10.0.0.1/hook",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "/relative",
            "not a url",
        ] {
            assert!(validate_target_url(bad).is_err(), "{bad}");
        }
        assert!(validate_target_url(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn secrets_are_sealed_per_subscription() {
        let key = Kek::generate().unwrap();
        let secret = generate_webhook_secret().unwrap();
        let id = WebhookId::new();
        let sealed = seal_secret(&key, id, &secret).unwrap();
        assert!(!sealed.contains(secret.expose()));
        let mut w = Webhook {
            id,
            name: "n".into(),
            url: "https://example.com".into(),
            kinds: WebhookKinds::All,
            sealed_secret: sealed,
            enabled: true,
            created_by: "t".into(),
            created_at: OffsetDateTime::now_utc(),
            cursor: 0,
            attempts: 0,
            retry_item: None,
            next_attempt_at: None,
        };
        assert_eq!(open_secret(&key, &w).unwrap(), secret);
        assert!(!format!("{w:?}").contains("sealed"));
        w.id = WebhookId::new();
        assert!(open_secret(&key, &w).is_err(), "bound to its subscription");
    }
}
