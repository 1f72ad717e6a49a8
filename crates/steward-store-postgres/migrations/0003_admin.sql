-- Admin surface: named API tokens with roles and the hash-chained, append-only audit log.

CREATE TABLE api_tokens (
    id            TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL,
    token_hash    TEXT COLLATE "C" NOT NULL UNIQUE,             -- SHA-256 hex; never the token
    role          TEXT COLLATE "C" NOT NULL,                    -- admin, operator, helpdesk, auditor
    group_id      TEXT COLLATE "C" REFERENCES groups(id),       -- NULL: every device; else this group's
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    revoked_at    BIGINT,
    created_by    TEXT COLLATE "C" NOT NULL
);

-- seq is assigned by the store (previous + 1) under the audit lock (src/audit.rs), so the chain has
-- no gaps. hash = SHA-256(prev_hash || canonical JSON of the row); see steward_core::admin.
CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT COLLATE "C" NOT NULL,
    actor_id    TEXT COLLATE "C",
    actor_role  TEXT COLLATE "C",
    action      TEXT COLLATE "C" NOT NULL,
    target      TEXT COLLATE "C",
    source_ip   TEXT COLLATE "C",
    outcome     TEXT COLLATE "C" NOT NULL,
    status      BIGINT,
    details     TEXT COLLATE "C",
    prev_hash   TEXT COLLATE "C" NOT NULL,
    hash        TEXT COLLATE "C" NOT NULL
);
CREATE INDEX audit_events_actor ON audit_events(actor);
CREATE INDEX audit_events_action ON audit_events(action);
CREATE INDEX audit_events_target ON audit_events(target);
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION steward_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION steward_append_only();

-- Device list filters and sorts.
CREATE INDEX enrollments_enrolled_at ON enrollments(enrolled_at, id);
CREATE INDEX enrollments_last_seen ON enrollments(last_seen_at, id);
CREATE INDEX enrollments_group ON enrollments(group_id);
