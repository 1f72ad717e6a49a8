-- Webhooks: subscriptions to device events, queued test pings, and the delivery log.

-- cursor: every device_events row with seq <= cursor is done for this subscription (delivered, given
-- up or not wanted). attempts/retry_item/next_attempt_at describe the head item while it is retried.
CREATE TABLE webhooks (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    url             TEXT NOT NULL,
    kinds           TEXT NOT NULL,               -- JSON array: ["all"] or event kind names
    secret_sealed   TEXT NOT NULL,               -- AES-256-GCM under webhook.key (see bootstrap.rs)
    enabled         INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    cursor          INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    retry_item      TEXT,
    next_attempt_at INTEGER
);

CREATE TABLE webhook_pings (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id  TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);
CREATE INDEX webhook_pings_webhook ON webhook_pings(webhook_id, id);

-- One row per attempt; bounded by retention (age and rows per subscription).
CREATE TABLE webhook_deliveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id   TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    delivery_id  TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    event_seq    INTEGER,                        -- NULL for a ping
    attempt      INTEGER NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    duration_ms  INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    outcome      TEXT NOT NULL                   -- delivered, retrying, failed
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, id);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries(at);
