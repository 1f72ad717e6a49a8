-- Steward SQLite schema, version 1. Forward-only: never edit an applied migration, add a new file.
-- Ids are UUID text; times are unix microseconds (UTC); booleans are 0/1.

CREATE TABLE groups (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE enrollment_tokens (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,          -- SHA-256 hex; the token itself is never stored
    description  TEXT,
    max_uses     INTEGER,                       -- NULL: unlimited until expiry
    uses         INTEGER NOT NULL DEFAULT 0,
    expires_at   INTEGER,
    group_id     TEXT REFERENCES groups(id),
    revoked      INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    CHECK (max_uses IS NULL OR uses <= max_uses)
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,        -- lower-cased
    display_name   TEXT,
    password_hash  TEXT NOT NULL,               -- Argon2id PHC string
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);

CREATE TABLE admin_tokens (
    token_hash    TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);

CREATE TABLE enrollments (
    id                   TEXT PRIMARY KEY,
    device_id            TEXT NOT NULL,
    hw_dev_id            TEXT,
    device_name          TEXT,
    os_version           TEXT,
    os_edition           TEXT,
    enrollment_type      TEXT NOT NULL,
    user_email           TEXT,
    auth_method          TEXT NOT NULL,
    enrollment_token_id  TEXT REFERENCES enrollment_tokens(id),
    group_id             TEXT REFERENCES groups(id),
    cert_serial          TEXT NOT NULL UNIQUE,
    cert_thumbprint      TEXT NOT NULL,
    cert_not_after       INTEGER NOT NULL,
    state                TEXT NOT NULL,
    enrolled_at          INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
-- At most one active enrollment per DeviceID; history rows (replaced, unenrolled, wiped) may repeat.
CREATE UNIQUE INDEX enrollments_active_device ON enrollments(device_id) WHERE state = 'active';
CREATE INDEX enrollments_device ON enrollments(device_id);
CREATE INDEX enrollments_thumbprint ON enrollments(cert_thumbprint);

-- Append-only log of every certificate event (issued, void, revoked). Triggers refuse edits.
CREATE TABLE certificate_log (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    serial         TEXT NOT NULL,
    event          TEXT NOT NULL,
    thumbprint     TEXT,
    subject        TEXT,
    device_id      TEXT,
    enrollment_id  TEXT,
    not_before     INTEGER,
    not_after      INTEGER,
    reason         TEXT,
    at             INTEGER NOT NULL
);
CREATE INDEX certificate_log_serial ON certificate_log(serial);
CREATE TRIGGER certificate_log_no_update BEFORE UPDATE ON certificate_log
BEGIN SELECT RAISE(ABORT, 'certificate_log is append-only'); END;
CREATE TRIGGER certificate_log_no_delete BEFORE DELETE ON certificate_log
BEGIN SELECT RAISE(ABORT, 'certificate_log is append-only'); END;

-- Single-use federated sign-in tokens that have been spent (kept until they would have expired anyway).
CREATE TABLE used_nonces (
    nonce_hash  TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
