//! [`WebhookStore`]: webhook subscriptions, queued pings and the delivery log (migration 0004).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use steward_core::*;
use time::OffsetDateTime;

use crate::error::from_sqlx;
use crate::{SqliteStore, from_micros, micros, opt_micros, parse_id};

fn webhook_from_row(r: &SqliteRow) -> StoreResult<Webhook> {
    let bad = |what: &str| StoreError::Backend(format!("bad {what} in webhooks"));
    let names: Vec<String> = serde_json::from_str(&r.get::<String, _>("kinds")).map_err(|_| bad("kinds"))?;
    Ok(Webhook {
        id: parse_id(&r.get::<String, _>("id"))?,
        name: r.get("name"),
        url: r.get("url"),
        kinds: WebhookKinds::parse(&names).map_err(|_| bad("kinds"))?,
        sealed_secret: r.get("secret_sealed"),
        enabled: r.get::<i64, _>("enabled") != 0,
        created_by: r.get("created_by"),
        created_at: from_micros(r.get("created_at"))?,
        cursor: r.get("cursor"),
        attempts: u32::try_from(r.get::<i64, _>("attempts")).map_err(|_| bad("attempts"))?,
        retry_item: r.get("retry_item"),
        next_attempt_at: opt_micros(r.get("next_attempt_at"))?,
    })
}

fn ping_from_row(r: &SqliteRow) -> StoreResult<WebhookPing> {
    Ok(WebhookPing {
        id: r.get("id"),
        webhook_id: parse_id(&r.get::<String, _>("webhook_id"))?,
        created_at: from_micros(r.get("created_at"))?,
    })
}

fn delivery_from_row(r: &SqliteRow) -> StoreResult<WebhookDelivery> {
    let bad = |what: &str| StoreError::Backend(format!("bad {what} in webhook_deliveries"));
    Ok(WebhookDelivery {
        id: r.get("id"),
        webhook_id: parse_id(&r.get::<String, _>("webhook_id"))?,
        delivery_id: r.get("delivery_id"),
        event_type: r.get("event_type"),
        event_seq: r.get("event_seq"),
        attempt: u32::try_from(r.get::<i64, _>("attempt")).map_err(|_| bad("attempt"))?,
        status_code: r
            .get::<Option<i64>, _>("status_code")
            .map(|c| u16::try_from(c).map_err(|_| bad("status_code")))
            .transpose()?,
        error: r.get("error"),
        duration_ms: u64::try_from(r.get::<i64, _>("duration_ms")).map_err(|_| bad("duration_ms"))?,
        at: from_micros(r.get("at"))?,
        outcome: DeliveryOutcome::parse(&r.get::<String, _>("outcome")).ok_or_else(|| bad("outcome"))?,
    })
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(&self, w: &NewWebhook) -> StoreResult<Webhook> {
        let kinds = serde_json::to_string(&w.kinds.names()).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut tx = self.begin_write().await?;
        // The cursor is read in the write transaction: with SQLite's single writer no event can
        // commit between reading MAX(seq) and inserting, so the subscription misses nothing after it.
        sqlx::query(
            "INSERT INTO webhooks (id, name, url, kinds, secret_sealed, enabled, created_by, created_at, cursor) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) FROM device_events))",
        )
        .bind(w.id.to_string())
        .bind(&w.name)
        .bind(&w.url)
        .bind(kinds)
        .bind(&w.sealed_secret)
        .bind(i64::from(w.enabled))
        .bind(&w.created_by)
        .bind(micros(w.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(format!("webhook {}", w.id)),
            _ => from_sqlx(e),
        })?;
        let row = sqlx::query("SELECT * FROM webhooks WHERE id = ?")
            .bind(w.id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let created = webhook_from_row(&row)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(created)
    }

    async fn webhook(&self, id: WebhookId) -> StoreResult<Option<Webhook>> {
        sqlx::query("SELECT * FROM webhooks WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(webhook_from_row)
            .transpose()
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<Webhook>> {
        sqlx::query("SELECT * FROM webhooks ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(webhook_from_row)
            .collect()
    }

    async fn delete_webhook(&self, id: WebhookId) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        // Explicit rather than relying on ON DELETE CASCADE alone: a connection opened without
        // foreign_keys (sqlite3 shell, an old tool) would otherwise leave orphans behind.
        let n = Self::each_for_id(
            &mut tx,
            &[
                "DELETE FROM webhook_pings WHERE webhook_id = ?",
                "DELETE FROM webhook_deliveries WHERE webhook_id = ?",
                "DELETE FROM webhooks WHERE id = ?",
            ],
            &id.to_string(),
        )
        .await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(n > 0)
    }

    async fn set_webhook_enabled(&self, id: WebhookId, enabled: bool) -> StoreResult<bool> {
        let n = self
            .write_one("UPDATE webhooks SET enabled = ? WHERE id = ?", |q| {
                q.bind(i64::from(enabled)).bind(id.to_string())
            })
            .await?;
        Ok(n > 0)
    }

    async fn queue_webhook_ping(&self, id: WebhookId, now: OffsetDateTime) -> StoreResult<Option<WebhookPing>> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE webhooks SET next_attempt_at = NULL WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        let row = sqlx::query("INSERT INTO webhook_pings (webhook_id, created_at) VALUES (?, ?) RETURNING *")
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
        sqlx::query("SELECT * FROM webhook_pings WHERE webhook_id = ? ORDER BY id LIMIT 1")
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(from_sqlx)?
            .as_ref()
            .map(ping_from_row)
            .transpose()
    }

    async fn advance_webhook_cursor(&self, id: WebhookId, seq: i64) -> StoreResult<()> {
        self.write_one("UPDATE webhooks SET cursor = MAX(cursor, ?) WHERE id = ?", |q| {
            q.bind(seq).bind(id.to_string())
        })
        .await?;
        Ok(())
    }

    async fn record_webhook_attempt(&self, a: &WebhookAttempt) -> StoreResult<()> {
        let id = a.webhook_id.to_string();
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM webhooks WHERE id = ?")
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
             error, duration_ms, at, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                sqlx::query("UPDATE webhooks SET attempts = ?, retry_item = ?, next_attempt_at = ? WHERE id = ?")
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
                        sqlx::query("UPDATE webhooks SET cursor = MAX(cursor, ?) WHERE id = ?")
                            .bind(seq)
                            .bind(&id)
                            .execute(&mut *tx)
                            .await
                            .map_err(from_sqlx)?;
                    }
                    DeliveryItem::Ping(ping) => {
                        sqlx::query("DELETE FROM webhook_pings WHERE id = ? AND webhook_id = ?")
                            .bind(ping)
                            .bind(&id)
                            .execute(&mut *tx)
                            .await
                            .map_err(from_sqlx)?;
                    }
                }
                sqlx::query("UPDATE webhooks SET attempts = 0, retry_item = NULL, next_attempt_at = NULL WHERE id = ?")
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
        sqlx::query("SELECT * FROM webhook_deliveries WHERE webhook_id = ? AND id < ? ORDER BY id DESC LIMIT ?")
            .bind(id.to_string())
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(from_sqlx)?
            .iter()
            .map(delivery_from_row)
            .collect()
    }

    async fn prune_webhook_deliveries(&self, older_than: OffsetDateTime, keep_per_webhook: u32) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let mut n = sqlx::query("DELETE FROM webhook_deliveries WHERE at < ?")
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
                 FROM webhook_deliveries) WHERE rn > ?)",
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
