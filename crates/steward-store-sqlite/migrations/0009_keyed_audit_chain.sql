-- The audit chain becomes keyed (HMAC-SHA-256 under a key sealed by the KEK, never stored here; see
-- steward_core::admin). Rows already written keep their unkeyed SHA-256 links. This one-row table
-- records the first keyed seq; the store inserts it in the transaction of the first keyed append, so
-- it is absent exactly as long as no row is keyed. Signed checkpoints (outside the database) carry
-- the same number, so changing it here is detected.
CREATE TABLE audit_chain (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    keyed_from  INTEGER NOT NULL
);
CREATE TRIGGER audit_chain_no_update BEFORE UPDATE ON audit_chain
BEGIN SELECT RAISE(ABORT, 'audit_chain is append-only'); END;
CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain
BEGIN SELECT RAISE(ABORT, 'audit_chain is append-only'); END;
