-- Management: command queue with exactly-once outcomes, inventory facts with history, raw device
-- messages (bounded), device events (the outbox) and certificate renewal. SQLite's 0002 also
-- created mdm_sessions, which its 0007 replaced by checkin_sessions; here 0007 creates that
-- directly, and the session credential column has its current name.

ALTER TABLE enrollments ADD COLUMN last_seen_at BIGINT;

CREATE TABLE commands (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- queue order
    id            TEXT COLLATE "C" NOT NULL UNIQUE,                 -- UUID, also the SyncML CmdID
    enrollment_id TEXT COLLATE "C" NOT NULL REFERENCES enrollments(id),
    payload       TEXT COLLATE "C" NOT NULL,                        -- JSON CommandPayload
    priority      BIGINT NOT NULL,
    origin        TEXT COLLATE "C" NOT NULL,
    state         TEXT COLLATE "C" NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    send_count    BIGINT NOT NULL DEFAULT 0,
    last_sent_at  BIGINT,
    last_session  TEXT COLLATE "C",
    status_code   BIGINT,
    completed_at  BIGINT
);
CREATE INDEX commands_open ON commands(enrollment_id, state, priority);

-- One row per command at most: the device's outcome, recorded once however often it is repeated.
CREATE TABLE command_results (
    command_id    TEXT COLLATE "C" PRIMARY KEY REFERENCES commands(id),
    enrollment_id TEXT COLLATE "C" NOT NULL REFERENCES enrollments(id),
    status_code   BIGINT NOT NULL,
    results       TEXT COLLATE "C" NOT NULL,                        -- JSON [ResultItem]
    child_codes   TEXT COLLATE "C" NOT NULL,                        -- JSON [u16]
    received_at   BIGINT NOT NULL
);

CREATE TABLE device_facts (
    enrollment_id TEXT COLLATE "C" NOT NULL REFERENCES enrollments(id),
    name          TEXT COLLATE "C" NOT NULL,
    value         TEXT COLLATE "C" NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (enrollment_id, name)
);

CREATE TABLE device_fact_history (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    enrollment_id TEXT COLLATE "C" NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    old_value     TEXT COLLATE "C",
    new_value     TEXT COLLATE "C" NOT NULL,
    at            BIGINT NOT NULL
);
CREATE INDEX device_fact_history_enrollment ON device_fact_history(enrollment_id, seq);

CREATE TABLE device_messages (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    enrollment_id TEXT COLLATE "C" NOT NULL,
    received_at   BIGINT NOT NULL,
    body          TEXT COLLATE "C" NOT NULL
);
CREATE INDEX device_messages_enrollment ON device_messages(enrollment_id, seq);

-- Certificate renewal: the replaced certificate keeps working until the device first uses the new
-- one (the renewal answer may have been lost), then it is revoked.
ALTER TABLE enrollments ADD COLUMN previous_cert_serial TEXT COLLATE "C";
ALTER TABLE enrollments ADD COLUMN previous_cert_thumbprint TEXT COLLATE "C";
CREATE INDEX enrollments_previous_thumbprint ON enrollments(previous_cert_thumbprint);

-- Session credential (syncml:auth-md5 digest key) provisioned at enrollment (only when enabled).
ALTER TABLE enrollments ADD COLUMN session_credential TEXT COLLATE "C";

-- Device events, written in the same transaction as the change they describe (an outbox): webhook
-- delivery and device history read from here, so a crash cannot lose an event that happened.
-- Writers take the events lock (see src/lib.rs) before inserting, so seq order is commit order.
CREATE TABLE device_events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          TEXT COLLATE "C" NOT NULL,
    enrollment_id TEXT COLLATE "C" NOT NULL,
    device_id     TEXT COLLATE "C" NOT NULL,
    data          TEXT COLLATE "C" NOT NULL,                        -- JSON
    at            BIGINT NOT NULL
);
CREATE INDEX device_events_enrollment ON device_events(enrollment_id, seq);
