-- Web console: which users may sign in (and with what role), and their sessions.

-- NULL: the user exists for device enrollment only and cannot sign in to the console.
ALTER TABLE users ADD COLUMN console_role TEXT COLLATE "C";

CREATE TABLE console_sessions (
    id_hash       TEXT COLLATE "C" PRIMARY KEY,     -- SHA-256 hex of the cookie value; never the value
    user_id       TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,                  -- idle expiry counts from here
    expires_at    BIGINT NOT NULL,                  -- absolute expiry
    source_ip     TEXT COLLATE "C"
);
CREATE INDEX console_sessions_user ON console_sessions(user_id);
CREATE INDEX console_sessions_expires ON console_sessions(expires_at);

-- Dashboard aggregates (OS versions and freshness of active devices).
CREATE INDEX enrollments_state_os ON enrollments(state, os_version);
CREATE INDEX enrollments_state_seen ON enrollments(state, last_seen_at);
