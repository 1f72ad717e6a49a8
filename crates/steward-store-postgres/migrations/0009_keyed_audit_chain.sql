-- The audit chain becomes keyed (HMAC-SHA-256 under a key sealed by the KEK, never stored here; see
-- steward_core::admin). Rows already written keep their unkeyed SHA-256 links. This one-row table
-- records the first keyed seq; the store inserts it in the transaction of the first keyed append (under
-- the audit lock), so it is absent exactly as long as no row is keyed. Signed checkpoints (outside the
-- database) carry the same number, so changing it here is detected. Expand-only: older replicas never
-- read it.
CREATE TABLE audit_chain (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    keyed_from  BIGINT NOT NULL
);
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION steward_append_only();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION steward_append_only();
