-- Steward PostgreSQL schema, migration 1 (named as SQLite's 0001, creating what it creates).
-- Forward-only and expand/contract: a migration only adds (tables, nullable or defaulted columns,
-- indexes), so the previous release keeps working on a database a newer one has migrated while
-- both run side by side during an upgrade; anything removed is removed by a later release, once no
-- running version reads it.
--
-- Types follow the SQLite schema so both backends hold the same values: ids are UUID text, times
-- unix microseconds (UTC) in BIGINT, every integer BIGINT. Text is COLLATE "C" (byte order, as in
-- SQLite), so sorting and keyset pagination agree with steward-core's comparisons whatever the
-- database's locale is. Columns that SQLite renamed later (hw_dev_id, md5_credential) are created
-- under their current names: no PostgreSQL database ever had the old ones.

CREATE TABLE groups (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE enrollment_tokens (
    id           TEXT COLLATE "C" PRIMARY KEY,
    token_hash   TEXT COLLATE "C" NOT NULL UNIQUE,      -- SHA-256 hex; the token itself is never stored
    description  TEXT COLLATE "C",
    max_uses     BIGINT,                                -- NULL: unlimited until expiry
    uses         BIGINT NOT NULL DEFAULT 0,
    expires_at   BIGINT,
    group_id     TEXT COLLATE "C" REFERENCES groups(id),
    revoked      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT NOT NULL,
    CHECK (max_uses IS NULL OR uses <= max_uses)
);

CREATE TABLE users (
    id             TEXT COLLATE "C" PRIMARY KEY,
    email          TEXT COLLATE "C" NOT NULL UNIQUE,    -- lower-cased
    display_name   TEXT COLLATE "C",
    password_hash  TEXT COLLATE "C" NOT NULL,           -- Argon2id PHC string
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT NOT NULL
);

CREATE TABLE admin_tokens (
    token_hash    TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);

CREATE TABLE enrollments (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    device_id            TEXT COLLATE "C" NOT NULL,
    hardware_id          TEXT COLLATE "C",
    device_name          TEXT COLLATE "C",
    os_version           TEXT COLLATE "C",
    os_edition           TEXT COLLATE "C",
    enrollment_type      TEXT COLLATE "C" NOT NULL,
    user_email           TEXT COLLATE "C",
    auth_method          TEXT COLLATE "C" NOT NULL,
    enrollment_token_id  TEXT COLLATE "C" REFERENCES enrollment_tokens(id),
    group_id             TEXT COLLATE "C" REFERENCES groups(id),
    cert_serial          TEXT COLLATE "C" NOT NULL UNIQUE,
    cert_thumbprint      TEXT COLLATE "C" NOT NULL,
    cert_not_after       BIGINT NOT NULL,
    state                TEXT COLLATE "C" NOT NULL,
    enrolled_at          BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
-- At most one active enrollment per DeviceID; history rows (replaced, unenrolled, wiped) may repeat.
CREATE UNIQUE INDEX enrollments_active_device ON enrollments(device_id) WHERE state = 'active';
CREATE INDEX enrollments_device ON enrollments(device_id);
CREATE INDEX enrollments_thumbprint ON enrollments(cert_thumbprint);

-- Append-only log of every certificate event (issued, void, revoked). A trigger refuses edits.
CREATE TABLE certificate_log (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    serial         TEXT COLLATE "C" NOT NULL,
    event          TEXT COLLATE "C" NOT NULL,
    thumbprint     TEXT COLLATE "C",
    subject        TEXT COLLATE "C",
    device_id      TEXT COLLATE "C",
    enrollment_id  TEXT COLLATE "C",
    not_before     BIGINT,
    not_after      BIGINT,
    reason         TEXT COLLATE "C",
    at             BIGINT NOT NULL
);
CREATE INDEX certificate_log_serial ON certificate_log(serial);

-- Shared by every append-only table (certificate_log here, audit_events in 0003).
CREATE FUNCTION steward_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER certificate_log_append_only BEFORE UPDATE OR DELETE ON certificate_log
    FOR EACH ROW EXECUTE FUNCTION steward_append_only();
CREATE TRIGGER certificate_log_no_truncate BEFORE TRUNCATE ON certificate_log
    FOR EACH STATEMENT EXECUTE FUNCTION steward_append_only();

-- Single-use federated sign-in tokens that have been spent (kept until they would have expired anyway).
CREATE TABLE used_nonces (
    nonce_hash  TEXT COLLATE "C" PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX used_nonces_expires ON used_nonces(expires_at);
