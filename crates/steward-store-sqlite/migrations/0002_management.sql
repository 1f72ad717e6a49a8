-- Management: command queue with exactly-once outcomes, inventory facts with history, raw device
-- messages (bounded), and OMA-DM session state.

ALTER TABLE enrollments ADD COLUMN last_seen_at INTEGER;

CREATE TABLE commands (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,  -- queue order
    id            TEXT NOT NULL UNIQUE,               -- UUID, also the SyncML CmdID
    enrollment_id TEXT NOT NULL REFERENCES enrollments(id),
    payload       TEXT NOT NULL,                      -- JSON CommandPayload
    priority      INTEGER NOT NULL,
    origin        TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    send_count    INTEGER NOT NULL DEFAULT 0,
    last_sent_at  INTEGER,
    last_session  TEXT,
    status_code   INTEGER,
    completed_at  INTEGER
);
CREATE INDEX commands_open ON commands(enrollment_id, state, priority);

-- One row per command at most: the device's outcome, recorded once however often it is repeated.
CREATE TABLE command_results (
    command_id    TEXT PRIMARY KEY REFERENCES commands(id),
    enrollment_id TEXT NOT NULL REFERENCES enrollments(id),
    status_code   INTEGER NOT NULL,
    results       TEXT NOT NULL,                      -- JSON [ResultItem]
    child_codes   TEXT NOT NULL,                      -- JSON [u16]
    received_at   INTEGER NOT NULL
);

CREATE TABLE device_facts (
    enrollment_id TEXT NOT NULL REFERENCES enrollments(id),
    name          TEXT NOT NULL,
    value         TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (enrollment_id, name)
);

CREATE TABLE device_fact_history (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    enrollment_id TEXT NOT NULL,
    name          TEXT NOT NULL,
    old_value     TEXT,
    new_value     TEXT NOT NULL,
    at            INTEGER NOT NULL
);
CREATE INDEX device_fact_history_enrollment ON device_fact_history(enrollment_id, seq);

CREATE TABLE device_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    enrollment_id TEXT NOT NULL,
    received_at   INTEGER NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX device_messages_enrollment ON device_messages(enrollment_id, seq);

CREATE TABLE mdm_sessions (
    enrollment_id     TEXT PRIMARY KEY REFERENCES enrollments(id),
    session_key       TEXT NOT NULL,
    session_id        TEXT NOT NULL,
    client_msg_id     INTEGER NOT NULL,
    server_msg_id     INTEGER NOT NULL,
    last_request_hash TEXT NOT NULL,
    last_response     TEXT NOT NULL,
    login_status      TEXT,
    md5_nonce         TEXT,
    chunk_command     TEXT,                -- large object being sent in chunks (MoreData)
    chunk_offset      INTEGER,             -- bytes of its Data already sent
    updated_at        INTEGER NOT NULL
);

-- Certificate renewal: the replaced certificate keeps working until the device first uses the new
-- one (the renewal answer may have been lost), then it is revoked.
ALTER TABLE enrollments ADD COLUMN previous_cert_serial TEXT;
ALTER TABLE enrollments ADD COLUMN previous_cert_thumbprint TEXT;
CREATE INDEX enrollments_previous_thumbprint ON enrollments(previous_cert_thumbprint);

-- syncml:auth-md5 digest key b64(md5(name:secret)) provisioned at enrollment (only when enabled).
ALTER TABLE enrollments ADD COLUMN md5_credential TEXT;

-- Device events, written in the same transaction as the change they describe (an outbox): webhook
-- delivery and device history read from here, so a crash cannot lose an event that happened.
CREATE TABLE device_events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,
    enrollment_id TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    data          TEXT NOT NULL,                -- JSON
    at            INTEGER NOT NULL
);
CREATE INDEX device_events_enrollment ON device_events(enrollment_id, seq);
