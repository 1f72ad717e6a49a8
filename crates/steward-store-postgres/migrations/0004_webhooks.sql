-- Webhooks: subscriptions to device events, queued test pings, and the delivery log.

-- cursor: every device_events row with seq <= cursor is done for this subscription (delivered, given
-- up or not wanted). attempts/retry_item/next_attempt_at describe the head item while it is retried.
CREATE TABLE webhooks (
    id              TEXT COLLATE "C" PRIMARY KEY,
    name            TEXT COLLATE "C" NOT NULL,
    url             TEXT COLLATE "C" NOT NULL,
    kinds           TEXT COLLATE "C" NOT NULL,       -- JSON array: ["all"] or event kind names
    secret_sealed   TEXT COLLATE "C" NOT NULL,       -- AES-256-GCM under webhook.key
    enabled         BOOLEAN NOT NULL,
    created_by      TEXT COLLATE "C" NOT NULL,
    created_at      BIGINT NOT NULL,
    cursor          BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    retry_item      TEXT COLLATE "C",
    next_attempt_at BIGINT
);

CREATE TABLE webhook_pings (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id  TEXT COLLATE "C" NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX webhook_pings_webhook ON webhook_pings(webhook_id, id);

-- One row per attempt; bounded by retention (age and rows per subscription).
CREATE TABLE webhook_deliveries (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id   TEXT COLLATE "C" NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    delivery_id  TEXT COLLATE "C" NOT NULL,
    event_type   TEXT COLLATE "C" NOT NULL,
    event_seq    BIGINT,                            -- NULL for a ping
    attempt      BIGINT NOT NULL,
    status_code  BIGINT,
    error        TEXT COLLATE "C",
    duration_ms  BIGINT NOT NULL,
    at           BIGINT NOT NULL,
    outcome      TEXT COLLATE "C" NOT NULL          -- delivered, retrying, failed
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, id);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries(at);
