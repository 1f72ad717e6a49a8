//! [`WebhookStore`]: webhook subscriptions, queued pings and the delivery log (migration 0004).

use async_trait::async_trait;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::{from_rusqlite, is_unique_violation};
use crate::rows::{NamedRow, exec, first, one};
use crate::{SqliteStore, from_micros, micros, opt_micros, parse_id};

fn webhook_from_row(r: &NamedRow<'_>) -> StoreResult<Webhook> {
    let bad = |what: &str| StoreError::Backend(format!("bad {what} in webhooks"));
    let names: Vec<String> = serde_json::from_str(&r.text("kinds")?).map_err(|_| bad("kinds"))?;
    Ok(Webhook {
        id: parse_id(&r.text("id")?)?,
        name: r.get("name")?,
        url: r.get("url")?,
        kinds: WebhookKinds::parse(&names).map_err(|_| bad("kinds"))?,
        sealed_secret: r.get("secret_sealed")?,
        enabled: r.int("enabled")? != 0,
        created_by: r.get("created_by")?,
        created_at: from_micros(r.int("created_at")?)?,
        cursor: r.get("cursor")?,
        attempts: u32::try_from(r.int("attempts")?).map_err(|_| bad("attempts"))?,
        retry_item: r.get("retry_item")?,
        next_attempt_at: opt_micros(r.opt_int("next_attempt_at")?)?,
    })
}

fn ping_from_row(r: &NamedRow<'_>) -> StoreResult<WebhookPing> {
    Ok(WebhookPing {
        id: r.get("id")?,
        webhook_id: parse_id(&r.text("webhook_id")?)?,
        created_at: from_micros(r.int("created_at")?)?,
    })
}

fn delivery_from_row(r: &NamedRow<'_>) -> StoreResult<WebhookDelivery> {
    let bad = |what: &str| StoreError::Backend(format!("bad {what} in webhook_deliveries"));
    Ok(WebhookDelivery {
        id: r.get("id")?,
        webhook_id: parse_id(&r.text("webhook_id")?)?,
        delivery_id: r.get("delivery_id")?,
        event_type: r.get("event_type")?,
        event_seq: r.get("event_seq")?,
        attempt: u32::try_from(r.int("attempt")?).map_err(|_| bad("attempt"))?,
        status_code: r
            .opt_int("status_code")?
            .map(|c| u16::try_from(c).map_err(|_| bad("status_code")))
            .transpose()?,
        error: r.get("error")?,
        duration_ms: u64::try_from(r.int("duration_ms")?).map_err(|_| bad("duration_ms"))?,
        at: from_micros(r.int("at")?)?,
        outcome: DeliveryOutcome::parse(&r.text("outcome")?).ok_or_else(|| bad("outcome"))?,
    })
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(&self, w: &NewWebhook) -> StoreResult<Webhook> {
        let kinds = serde_json::to_string(&w.kinds.names()).map_err(|e| StoreError::Backend(e.to_string()))?;
        let w = w.clone();
        self.write(move |tx| {
            // The cursor is read in the write transaction: with SQLite's single writer no event can
            // commit between reading MAX(seq) and inserting, so the subscription misses nothing after it.
            let res = tx
                .prepare_cached(
                    "INSERT INTO webhooks (id, name, url, kinds, secret_sealed, enabled, created_by, created_at, cursor) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, (SELECT COALESCE(MAX(seq), 0) FROM device_events))",
                )
                .and_then(|mut s| {
                    s.execute((
                        w.id.to_string(),
                        &w.name,
                        &w.url,
                        kinds,
                        &w.sealed_secret,
                        i64::from(w.enabled),
                        &w.created_by,
                        micros(w.created_at),
                    ))
                });
            match res {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict(format!("webhook {}", w.id))),
                other => other.map_err(from_rusqlite)?,
            };
            one(
                tx,
                "SELECT * FROM webhooks WHERE id = ?1",
                (w.id.to_string(),),
                webhook_from_row,
            )
        })
        .await
    }

    async fn webhook(&self, id: WebhookId) -> StoreResult<Option<Webhook>> {
        self.read_opt(
            "SELECT * FROM webhooks WHERE id = ?1",
            (id.to_string(),),
            webhook_from_row,
        )
        .await
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<Webhook>> {
        self.read_all("SELECT * FROM webhooks ORDER BY created_at, id", (), webhook_from_row)
            .await
    }

    async fn delete_webhook(&self, id: WebhookId) -> StoreResult<bool> {
        self.write(move |tx| {
            // Explicit rather than relying on ON DELETE CASCADE alone: a connection opened without
            // foreign_keys (sqlite3 shell, an old tool) would otherwise leave orphans behind.
            let n = Self::each_for_id(
                tx,
                &[
                    "DELETE FROM webhook_pings WHERE webhook_id = ?1",
                    "DELETE FROM webhook_deliveries WHERE webhook_id = ?1",
                    "DELETE FROM webhooks WHERE id = ?1",
                ],
                &id.to_string(),
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_webhook_enabled(&self, id: WebhookId, enabled: bool) -> StoreResult<bool> {
        let n = self
            .write_one(
                "UPDATE webhooks SET enabled = ?1 WHERE id = ?2",
                (i64::from(enabled), id.to_string()),
            )
            .await?;
        Ok(n > 0)
    }

    async fn queue_webhook_ping(&self, id: WebhookId, now: OffsetDateTime) -> StoreResult<Option<WebhookPing>> {
        self.write(move |tx| {
            let id = id.to_string();
            let n = exec(tx, "UPDATE webhooks SET next_attempt_at = NULL WHERE id = ?1", (&id,))?;
            if n == 0 {
                return Ok(None);
            }
            one(
                tx,
                "INSERT INTO webhook_pings (webhook_id, created_at) VALUES (?1, ?2) RETURNING *",
                (&id, micros(now)),
                ping_from_row,
            )
            .map(Some)
        })
        .await
    }

    async fn next_webhook_ping(&self, id: WebhookId) -> StoreResult<Option<WebhookPing>> {
        self.read_opt(
            "SELECT * FROM webhook_pings WHERE webhook_id = ?1 ORDER BY id LIMIT 1",
            (id.to_string(),),
            ping_from_row,
        )
        .await
    }

    async fn advance_webhook_cursor(&self, id: WebhookId, seq: i64) -> StoreResult<()> {
        self.write_one(
            "UPDATE webhooks SET cursor = MAX(cursor, ?1) WHERE id = ?2",
            (seq, id.to_string()),
        )
        .await?;
        Ok(())
    }

    async fn record_webhook_attempt(&self, a: &WebhookAttempt) -> StoreResult<()> {
        let a = a.clone();
        self.write(move |tx| {
            let id = a.webhook_id.to_string();
            if first(tx, "SELECT 1 AS x FROM webhooks WHERE id = ?1", (&id,), |_| Ok(()))?.is_none() {
                return Ok(());
            }
            let event_seq = match a.item {
                DeliveryItem::Event(seq) => Some(seq),
                DeliveryItem::Ping(_) => None,
            };
            exec(
                tx,
                "INSERT INTO webhook_deliveries (webhook_id, delivery_id, event_type, event_seq, attempt, status_code, \
                 error, duration_ms, at, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                (
                    &id,
                    &a.delivery_id,
                    &a.event_type,
                    event_seq,
                    i64::from(a.attempt),
                    a.status_code.map(i64::from),
                    &a.error,
                    i64::try_from(a.duration_ms).unwrap_or(i64::MAX),
                    micros(a.at),
                    a.outcome.as_str(),
                ),
            )?;
            match a.outcome {
                DeliveryOutcome::Retrying => {
                    exec(
                        tx,
                        "UPDATE webhooks SET attempts = ?1, retry_item = ?2, next_attempt_at = ?3 WHERE id = ?4",
                        (i64::from(a.attempt), &a.delivery_id, a.next_attempt_at.map(micros), &id),
                    )?;
                }
                DeliveryOutcome::Delivered | DeliveryOutcome::Failed => {
                    match a.item {
                        DeliveryItem::Event(seq) => {
                            exec(
                                tx,
                                "UPDATE webhooks SET cursor = MAX(cursor, ?1) WHERE id = ?2",
                                (seq, &id),
                            )?;
                        }
                        DeliveryItem::Ping(ping) => {
                            exec(
                                tx,
                                "DELETE FROM webhook_pings WHERE id = ?1 AND webhook_id = ?2",
                                (ping, &id),
                            )?;
                        }
                    }
                    exec(
                        tx,
                        "UPDATE webhooks SET attempts = 0, retry_item = NULL, next_attempt_at = NULL WHERE id = ?1",
                        (&id,),
                    )?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn webhook_deliveries(
        &self,
        id: WebhookId,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        self.read_all(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
            (id.to_string(), before_id.unwrap_or(i64::MAX), i64::from(limit)),
            delivery_from_row,
        )
        .await
    }

    async fn prune_webhook_deliveries(&self, older_than: OffsetDateTime, keep_per_webhook: u32) -> StoreResult<u64> {
        self.write(move |tx| {
            let mut n = exec(
                tx,
                "DELETE FROM webhook_deliveries WHERE at < ?1",
                (micros(older_than),),
            )?;
            // Per subscription: everything below its keep_per_webhook-th newest row goes.
            n += exec(
                tx,
                "DELETE FROM webhook_deliveries WHERE id IN (\
                   SELECT id FROM (\
                     SELECT id, ROW_NUMBER() OVER (PARTITION BY webhook_id ORDER BY id DESC) AS rn \
                     FROM webhook_deliveries) WHERE rn > ?1)",
                (i64::from(keep_per_webhook),),
            )?;
            Ok(n as u64)
        })
        .await
    }
}
