//! [`WebhookStore`]: webhook subscriptions, queued pings and the delivery log (migration 0004).

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::{from_sqlx, unique_violation};
use crate::rows::Col;
use crate::{LOCK_EVENTS, PgStore, from_micros, lock, micros, opt_micros, parse_id};

fn webhook_from_row(r: &PgRow) -> StoreResult<Webhook> {
    let bad = |what: &str| StoreError::Backend(format!("bad {what} in webhooks"));
    let names: Vec<String> = serde_json::from_str(r.col("kinds")?).map_err(|_| bad("kinds"))?;
    Ok(Webhook {
        id: parse_id(r.col("id")?)?,
        name: r.col("name")?,
        url: r.col("url")?,
        kinds: WebhookKinds::parse(&names).map_err(|_| bad("kinds"))?,
        sealed_secret: r.col("secret_sealed")?,
        enabled: r.col("enabled")?,
        created_by: r.col("created_by")?,
        created_at: from_micros(r.col("created_at")?)?,
        cursor: r.col("cursor")?,
        attempts: u32::try_from(r.col::<i64>("attempts")?).map_err(|_| bad("attempts"))?,
        retry_item: r.col("retry_item")?,
        next_attempt_at: opt_micros(r.col("next_attempt_at")?)?,
    })
}

fn ping_from_row(r: &PgRow) -> StoreResult<WebhookPing> {
    Ok(WebhookPing {
        id: r.col("id")?,
        webhook_id: parse_id(r.col("webhook_id")?)?,
        created_at: from_micros(r.col("created_at")?)?,
    })
}

fn delivery_from_row(r: &PgRow) -> StoreResult<WebhookDelivery> {
    let bad = |what: &str| StoreError::Backend(format!("bad {what} in webhook_deliveries"));
    Ok(WebhookDelivery {
        id: r.col("id")?,
        webhook_id: parse_id(r.col("webhook_id")?)?,
        delivery_id: r.col("delivery_id")?,
        event_type: r.col("event_type")?,
        event_seq: r.col("event_seq")?,
        attempt: u32::try_from(r.col::<i64>("attempt")?).map_err(|_| bad("attempt"))?,
        status_code: r
            .col::<Option<i64>>("status_code")?
            .map(|c| u16::try_from(c).map_err(|_| bad("status_code")))
            .transpose()?,
        error: r.col("error")?,
        duration_ms: u64::try_from(r.col::<i64>("duration_ms")?).map_err(|_| bad("duration_ms"))?,
        at: from_micros(r.col("at")?)?,
        outcome: DeliveryOutcome::parse(r.col("outcome")?).ok_or_else(|| bad("outcome"))?,
    })
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_webhook(&self, w: &NewWebhook) -> StoreResult<Webhook> {
        let kinds = serde_json::to_string(&w.kinds.names()).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut tx = self.begin().await?;
        // The events lock: every transaction that drew an event seq has committed, and none can draw
        // one until this one commits, so the cursor is exactly "everything before now".
        lock(&mut tx, LOCK_EVENTS).await?;
        let row = sqlx::query(
            "INSERT INTO webhooks (id, name, url, kinds, secret_sealed, enabled, created_by, created_at, cursor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, (SELECT COALESCE(MAX(seq), 0) FROM device_events)) RETURNING *",
        )
        .bind(w.id.to_string())
        .bind(&w.name)
        .bind(&w.url)
        .bind(kinds)
        .bind(&w.sealed_secret)
        .bind(w.enabled)
        .bind(&w.created_by)
        .bind(micros(w.created_at))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match unique_violation(&e) {
            Some(_) => StoreError::Conflict(format!("webhook {}", w.id)),
            None => from_sqlx(e),
        })?;
        let created = webhook_from_row(&row)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(created)
    }

    async fn webhook(&self, id: WebhookId) -> StoreResult<Option<Webhook>> {
        sqlx::query("SELECT * FROM webhooks WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(webhook_from_row)
            .transpose()
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<Webhook>> {
        sqlx::query("SELECT * FROM webhooks ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(webhook_from_row)
            .collect()
    }

    async fn delete_webhook(&self, id: WebhookId) -> StoreResult<bool> {
        // ON DELETE CASCADE removes its pings and delivery log in the same statement.
        let n = self
            .write_one("DELETE FROM webhooks WHERE id = $1", |q| q.bind(id.to_string()))
            .await?;
        Ok(n > 0)
    }

    async fn set_webhook_enabled(&self, id: WebhookId, enabled: bool) -> StoreResult<bool> {
        let n = self
            .write_one("UPDATE webhooks SET enabled = $1 WHERE id = $2", |q| {
                q.bind(enabled).bind(id.to_string())
            })
            .await?;
        Ok(n > 0)
    }

    async fn queue_webhook_ping(&self, id: WebhookId, now: OffsetDateTime) -> StoreResult<Option<WebhookPing>> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("UPDATE webhooks SET next_attempt_at = NULL WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        let row = sqlx::query("INSERT INTO webhook_pings (webhook_id, created_at) VALUES ($1, $2) RETURNING *")
            .bind(id.to_string())
            .bind(micros(now))
            .fetch_one(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let ping = ping_from_row(&row)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(Some(ping))
    }

    async fn next_webhook_ping(&self, id: WebhookId) -> StoreResult<Option<WebhookPing>> {
        sqlx::query("SELECT * FROM webhook_pings WHERE webhook_id = $1 ORDER BY id LIMIT 1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(ping_from_row)
            .transpose()
    }

    async fn advance_webhook_cursor(&self, id: WebhookId, seq: i64) -> StoreResult<()> {
        self.write_one("UPDATE webhooks SET cursor = GREATEST(cursor, $1) WHERE id = $2", |q| {
            q.bind(seq).bind(id.to_string())
        })
        .await?;
        Ok(())
    }

    async fn record_webhook_attempt(&self, a: &WebhookAttempt) -> StoreResult<()> {
        let id = a.webhook_id.to_string();
        let mut tx = self.begin().await?;
        // Locked: a delete waits for the attempt to be recorded (or the attempt finds it gone).
        let exists = sqlx::query("SELECT 1 FROM webhooks WHERE id = $1 FOR UPDATE")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .is_some();
        if !exists {
            return Ok(());
        }
        let event_seq = match a.item {
            DeliveryItem::Event(seq) => Some(seq),
            DeliveryItem::Ping(_) => None,
        };
        sqlx::query(
            "INSERT INTO webhook_deliveries (webhook_id, delivery_id, event_type, event_seq, attempt, status_code, \
             error, duration_ms, at, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&id)
        .bind(&a.delivery_id)
        .bind(&a.event_type)
        .bind(event_seq)
        .bind(i64::from(a.attempt))
        .bind(a.status_code.map(i64::from))
        .bind(&a.error)
        .bind(i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
        .bind(micros(a.at))
        .bind(a.outcome.as_str())
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        match a.outcome {
            DeliveryOutcome::Retrying => {
                sqlx::query("UPDATE webhooks SET attempts = $1, retry_item = $2, next_attempt_at = $3 WHERE id = $4")
                    .bind(i64::from(a.attempt))
                    .bind(&a.delivery_id)
                    .bind(a.next_attempt_at.map(micros))
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            }
            DeliveryOutcome::Delivered | DeliveryOutcome::Failed => {
                match a.item {
                    DeliveryItem::Event(seq) => {
                        sqlx::query("UPDATE webhooks SET cursor = GREATEST(cursor, $1) WHERE id = $2")
                            .bind(seq)
                            .bind(&id)
                            .execute(&mut *tx)
                            .await
                            .map_err(from_sqlx)?;
                    }
                    DeliveryItem::Ping(ping) => {
                        sqlx::query("DELETE FROM webhook_pings WHERE id = $1 AND webhook_id = $2")
                            .bind(ping)
                            .bind(&id)
                            .execute(&mut *tx)
                            .await
                            .map_err(from_sqlx)?;
                    }
                }
                sqlx::query(
                    "UPDATE webhooks SET attempts = 0, retry_item = NULL, next_attempt_at = NULL WHERE id = $1",
                )
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            }
        }
        tx.commit().await.map_err(from_sqlx)
    }

    async fn webhook_deliveries(
        &self,
        id: WebhookId,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        sqlx::query("SELECT * FROM webhook_deliveries WHERE webhook_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3")
            .bind(id.to_string())
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(delivery_from_row)
            .collect()
    }

    async fn prune_webhook_deliveries(&self, older_than: OffsetDateTime, keep_per_webhook: u32) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let mut n = sqlx::query("DELETE FROM webhook_deliveries WHERE at < $1")
            .bind(micros(older_than))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
        // Per subscription: everything below its keep_per_webhook-th newest row goes.
        n += sqlx::query(
            "DELETE FROM webhook_deliveries WHERE id IN (\
               SELECT id FROM (\
                 SELECT id, ROW_NUMBER() OVER (PARTITION BY webhook_id ORDER BY id DESC) AS rn \
                 FROM webhook_deliveries) ranked WHERE rn > $1)",
        )
        .bind(i64::from(keep_per_webhook))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?
        .rows_affected();
        tx.commit().await.map_err(from_sqlx)?;
        Ok(n)
    }
}
