-- Bootstrap admin tokens become listable and revocable: an id (in the API tokens' id space, so one
-- revoke route serves both kinds) and a revocation time. A newly configured admin_token revokes the
-- earlier ones at start (AccessStore::install_bootstrap_token).

ALTER TABLE admin_tokens ADD COLUMN id TEXT COLLATE "C";
ALTER TABLE admin_tokens ADD COLUMN revoked_at BIGINT;

-- Rows stored before this migration get a random (version 4) UUID.
UPDATE admin_tokens SET id = gen_random_uuid()::text WHERE id IS NULL;

CREATE UNIQUE INDEX admin_tokens_id ON admin_tokens (id);
