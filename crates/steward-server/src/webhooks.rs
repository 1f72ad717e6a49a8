//! Webhook delivery: one background dispatcher that POSTs device events to subscribed endpoints.
//!
//! The source is the device event outbox (`Store::device_events_after`), which the store writes in
//! the same transaction as the change, and each subscription keeps its cursor in the store. The
//! cursor moves only after an item was delivered (any 2xx) or given up, in the same transaction as
//! the delivery log row, so a crash or restart at any point resends at most the item in flight:
//! at-least-once, in order per subscription, nothing skipped. Receivers deduplicate on the payload
//! `id` (`Steward-Webhook-Id`).
//!
//! Each subscription is worked by its own short-lived task under the dispatcher, so a slow or failing
//! endpoint (10 s timeouts, hours of backoff) delays only its own subscription. The dispatcher aborts
//! them on shutdown; an aborted attempt is simply tried again after the restart.
//!
//! Signing: `Steward-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` (see
//! `steward_core::webhook_signature` and docs/OPERATIONS.md for verification). The secret is kept
//! sealed with the webhook key (`Pki::data_key`) and opened only to sign.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use steward_core::*;
use steward_pki::Kek;
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::WebhooksConfig;
use steward_core::service::webhooks::open_secret;

/// Items one worker delivers before handing back to the dispatcher (which then re-reads the list and
/// starts it again): keeps a big backlog from pinning one task forever.
const ITEMS_PER_ROUND: usize = 100;
/// Events read per query while looking for the next wanted one.
const EVENT_BATCH: u32 = 200;
/// Delivery log retention runs this often.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot seal or open the webhook secret: {0}")]
    Seal(#[from] steward_pki::PkiError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The dispatcher's timing, from [`WebhooksConfig`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub retry_schedule: Vec<Duration>,
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub log_retention: time::Duration,
    pub log_max_per_webhook: u32,
    pub ca_file: Option<PathBuf>,
}

impl From<&WebhooksConfig> for Settings {
    fn from(c: &WebhooksConfig) -> Self {
        Self {
            retry_schedule: c
                .retry_schedule_seconds
                .iter()
                .map(|s| Duration::from_secs_f64(s.clamp(0.001, 7.0 * 86400.0)))
                .collect(),
            timeout: Duration::from_secs(c.timeout_seconds),
            poll_interval: Duration::from_millis(c.poll_interval_ms),
            log_retention: time::Duration::days(i64::from(c.delivery_log_days)),
            log_max_per_webhook: c.delivery_log_max_per_webhook,
            ca_file: c.ca_file.clone(),
        }
    }
}

struct Ctx {
    store: Arc<dyn Store>,
    data_key: Arc<Kek>,
    settings: Settings,
    tls: Arc<ClientConfig>,
}

/// Starts the dispatcher; it stops when `shutdown` turns true (or its sender is dropped).
pub fn spawn(
    store: Arc<dyn Store>,
    data_key: Arc<Kek>,
    config: &WebhooksConfig,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let settings = Settings::from(config);
    tokio::spawn(async move {
        let ca_file = settings.ca_file.clone();
        let tls = match tokio::task::spawn_blocking(move || client_tls(ca_file)).await {
            Ok(tls) => tls,
            Err(e) => {
                tracing::error!(error = %e, "webhook TLS setup task failed; webhooks are not delivered");
                return;
            }
        };
        let ctx = Arc::new(Ctx {
            store,
            data_key,
            settings,
            tls,
        });
        run(ctx, shutdown).await;
    })
}

/// TLS for https targets: the system roots plus the operator's CA file. An unreadable CA file is
/// logged and skipped rather than fatal: deliveries to publicly trusted endpoints still work.
fn client_tls(ca_file: Option<PathBuf>) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "cannot load some system root certificates for webhooks");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        match std::fs::read(&path) {
            Ok(pem) => {
                let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                    .filter_map(Result::ok)
                    .collect();
                let (extra, _) = roots.add_parsable_certificates(certs);
                if extra == 0 {
                    tracing::error!(path = %path.display(), "webhooks.ca_file holds no usable certificate");
                }
            }
            Err(e) => tracing::error!(path = %path.display(), error = %e, "cannot read webhooks.ca_file"),
        }
    }
    if roots.is_empty() {
        tracing::warn!("no trusted roots for webhook https targets (system store empty, no webhooks.ca_file)");
    }
    tracing::debug!(system_roots = added, "webhook TLS roots loaded");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = match ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        Err(e) => {
            // Unreachable with the bundled provider; fall back to the process default rather than panic.
            tracing::error!(error = %e, "webhook TLS protocol setup failed; using defaults");
            ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    Arc::new(cfg)
}

async fn run(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let mut workers: JoinSet<()> = JoinSet::new();
    // Which subscription each running worker serves, by task id, so a finished (or panicked)
    // worker always frees its subscription.
    let mut running: HashMap<tokio::task::Id, WebhookId> = HashMap::new();
    let mut busy: HashSet<WebhookId> = HashSet::new();
    let mut last_prune: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        while let Some(done) = workers.try_join_next_with_id() {
            let task = match done {
                Ok((task, ())) => task,
                Err(e) => {
                    tracing::error!(error = %e, "webhook worker ended abnormally");
                    e.id()
                }
            };
            if let Some(id) = running.remove(&task) {
                busy.remove(&id);
            }
        }
        let now = OffsetDateTime::now_utc();
        match ctx.store.list_webhooks().await {
            Ok(list) => {
                for w in list {
                    let due = w.next_attempt_at.is_none_or(|t| t <= now);
                    if w.enabled && due && !busy.contains(&w.id) {
                        busy.insert(w.id);
                        let handle = workers.spawn(worker(ctx.clone(), w.id));
                        running.insert(handle.id(), w.id);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list webhook subscriptions"),
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            let s = &ctx.settings;
            match ctx
                .store
                .prune_webhook_deliveries(now - s.log_retention, s.log_max_per_webhook)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned the webhook delivery log"),
                Err(e) => tracing::warn!(error = %e, "cannot prune the webhook delivery log"),
            }
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep(ctx.settings.poll_interval) => {}
        }
    }
    // In-flight attempts are abandoned: their items were not marked done, so they go out again after
    // the restart (at-least-once).
    workers.shutdown().await;
}

async fn worker(ctx: Arc<Ctx>, id: WebhookId) {
    if let Err(e) = deliver_due(&ctx, id).await {
        tracing::warn!(webhook = %id, error = %e, "webhook delivery round failed");
    }
}

/// The item at the head of a subscription's queue.
struct Item {
    kind: DeliveryItem,
    delivery_id: String,
    event_type: String,
    body: Bytes,
}

fn event_item(w: &Webhook, e: &DeviceEvent) -> Item {
    let delivery_id = format!("{}-{}", w.id, e.seq);
    let body = serde_json::json!({
        "id": delivery_id,
        "type": e.kind.as_str(),
        "occurred_at": rfc3339(e.at),
        "device": {
            "enrollment_id": e.enrollment_id.to_string(),
            "device_id": e.device_id,
        },
        "data": e.data,
    });
    Item {
        kind: DeliveryItem::Event(e.seq),
        delivery_id,
        event_type: e.kind.as_str().to_owned(),
        body: Bytes::from(body.to_string()),
    }
}

fn ping_item(w: &Webhook, p: &WebhookPing) -> Item {
    let delivery_id = format!("{}-ping-{}", w.id, p.id);
    let body = serde_json::json!({
        "id": delivery_id,
        "type": "ping",
        "occurred_at": rfc3339(p.created_at),
        "device": null,
        "data": { "webhook_id": w.id.to_string(), "name": w.name },
    });
    Item {
        kind: DeliveryItem::Ping(p.id),
        delivery_id,
        event_type: "ping".into(),
        body: Bytes::from(body.to_string()),
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The next item: a queued ping first (it is a connectivity test the admin is waiting on), else the
/// oldest wanted event after the cursor. Unwanted events are stepped over by moving the cursor.
async fn next_item(store: &dyn Store, w: &Webhook) -> Result<Option<Item>, StoreError> {
    if let Some(p) = store.next_webhook_ping(w.id).await? {
        return Ok(Some(ping_item(w, &p)));
    }
    let mut cursor = w.cursor;
    loop {
        let batch = store.device_events_after(cursor, EVENT_BATCH).await?;
        let Some(last) = batch.last().map(|e| e.seq) else {
            return Ok(None);
        };
        if let Some(pos) = batch.iter().position(|e| w.kinds.wants(e.kind)) {
            if pos > 0 {
                store.advance_webhook_cursor(w.id, batch[pos - 1].seq).await?;
            }
            return Ok(Some(event_item(w, &batch[pos])));
        }
        store.advance_webhook_cursor(w.id, last).await?;
        cursor = last;
        if batch.len() < EVENT_BATCH as usize {
            return Ok(None);
        }
    }
}

/// Delivers a subscription's due items in order until it is caught up, an attempt fails (the item
/// then waits for its backoff) or the round's budget is spent.
async fn deliver_due(ctx: &Ctx, id: WebhookId) -> Result<(), WebhookError> {
    for _ in 0..ITEMS_PER_ROUND {
        // Re-read every time: the subscription may have been deleted, disabled or tested meanwhile.
        let Some(w) = ctx.store.webhook(id).await? else {
            return Ok(());
        };
        let now = OffsetDateTime::now_utc();
        if !w.enabled || w.next_attempt_at.is_some_and(|t| t > now) {
            return Ok(());
        }
        let Some(item) = next_item(ctx.store.as_ref(), &w).await? else {
            return Ok(());
        };
        let secret = open_secret(&ctx.data_key, &w)?;
        let attempt = if w.retry_item.as_deref() == Some(item.delivery_id.as_str()) {
            w.attempts.saturating_add(1)
        } else {
            1
        };
        let at = OffsetDateTime::now_utc();
        let signature = webhook_signature(&secret, at.unix_timestamp(), &item.body);
        drop(secret);
        let headers = [
            ("steward-webhook-id", item.delivery_id.clone()),
            ("steward-event", item.event_type.clone()),
            ("steward-delivery-attempt", attempt.to_string()),
            ("steward-signature", signature),
        ];
        let started = Instant::now();
        let result = match w.url.parse::<Uri>() {
            Ok(uri) => {
                match tokio::time::timeout(ctx.settings.timeout, post(&ctx.tls, &uri, &headers, item.body.clone()))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!("timed out after {} s", ctx.settings.timeout.as_secs())),
                }
            }
            Err(_) => Err("invalid target URL".into()),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status_code, error) = match result {
            Ok(code) => (Some(code), None),
            Err(e) => (None, Some(e)),
        };
        let delivered = status_code.is_some_and(|c| (200..300).contains(&c));
        let schedule = &ctx.settings.retry_schedule;
        let (outcome, next_attempt_at) = if delivered {
            (DeliveryOutcome::Delivered, None)
        } else if let Some(wait) = schedule.get(attempt as usize - 1) {
            let wait = time::Duration::try_from(*wait).unwrap_or(time::Duration::HOUR);
            (DeliveryOutcome::Retrying, Some(OffsetDateTime::now_utc() + wait))
        } else {
            (DeliveryOutcome::Failed, None)
        };
        match outcome {
            DeliveryOutcome::Delivered => {
                tracing::debug!(webhook = %id, delivery = %item.delivery_id, attempt, "webhook delivered")
            }
            DeliveryOutcome::Retrying => tracing::info!(
                webhook = %id, delivery = %item.delivery_id, attempt, status = ?status_code, error = ?error,
                "webhook delivery failed; will retry"
            ),
            DeliveryOutcome::Failed => tracing::warn!(
                webhook = %id, delivery = %item.delivery_id, attempt, status = ?status_code, error = ?error,
                "webhook delivery failed; retries used up, giving up on this event"
            ),
        }
        ctx.store
            .record_webhook_attempt(&WebhookAttempt {
                webhook_id: id,
                item: item.kind,
                delivery_id: item.delivery_id,
                event_type: item.event_type,
                attempt,
                status_code,
                error,
                duration_ms,
                at,
                outcome,
                next_attempt_at,
            })
            .await?;
        if outcome == DeliveryOutcome::Retrying {
            return Ok(());
        }
    }
    Ok(())
}

/// One POST; returns the response status. Redirects are not followed (a 3xx is a failed attempt):
/// following them would let a receiver bounce signed device data to a host nobody subscribed.
async fn post(tls: &Arc<ClientConfig>, uri: &Uri, headers: &[(&str, String)], body: Bytes) -> Result<u16, String> {
    let https = uri.scheme_str() == Some("https");
    let authority = uri.authority().ok_or("the URL has no host")?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let mut req = http::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("Steward-Webhooks/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if https {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| format!("invalid TLS server name {host:?}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(stream), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<I>(io: I, req: http::Request<Full<Bytes>>) -> Result<u16, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await;
    // Only the status matters; the body is not read, and the connection is not reused.
    conn.abort();
    Ok(resp.map_err(|e| format!("HTTP: {e}"))?.status().as_u16())
}
