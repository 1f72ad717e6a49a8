-- Bootstrap admin tokens become listable and revocable: an id (in the API tokens' id space, so one
-- revoke route serves both kinds) and a revocation time. A newly configured admin_token revokes the
-- earlier ones at start (AccessStore::install_bootstrap_token).

ALTER TABLE admin_tokens ADD COLUMN id TEXT;
ALTER TABLE admin_tokens ADD COLUMN revoked_at INTEGER;

-- Rows stored before this migration get a random UUID in the version-4 layout. randomblob() is
-- evaluated for each row, so no two rows share an id.
UPDATE admin_tokens SET id = lower(
    hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-8'
    || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))
);

CREATE UNIQUE INDEX admin_tokens_id ON admin_tokens (id);
