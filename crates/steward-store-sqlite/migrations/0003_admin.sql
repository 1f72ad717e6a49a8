-- Admin surface: named API tokens with roles and the hash-chained, append-only audit log.

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,          -- SHA-256 hex; the token itself is never stored
    role          TEXT NOT NULL,                 -- admin, operator, helpdesk, auditor
    group_id      TEXT REFERENCES groups(id),    -- NULL: every device; else only this group's
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    revoked_at    INTEGER,
    created_by    TEXT NOT NULL
);

-- seq is assigned by the store (previous + 1) inside the write transaction, so the chain has no gaps.
-- hash = SHA-256(prev_hash || canonical JSON of the row); see steward_domain::admin.
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    actor_id    TEXT,
    actor_role  TEXT,
    action      TEXT NOT NULL,
    target      TEXT,
    source_ip   TEXT,
    outcome     TEXT NOT NULL,
    status      INTEGER,
    details     TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_events_actor ON audit_events(actor);
CREATE INDEX audit_events_action ON audit_events(action);
CREATE INDEX audit_events_target ON audit_events(target);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

-- Device list filters and sorts.
CREATE INDEX enrollments_enrolled_at ON enrollments(enrolled_at, id);
CREATE INDEX enrollments_last_seen ON enrollments(last_seen_at, id);
CREATE INDEX enrollments_group ON enrollments(group_id);
