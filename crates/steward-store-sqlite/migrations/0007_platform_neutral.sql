-- Platform-neutral enrollments and check-in sessions: an enrollment says which platform it belongs
-- to, its Windows-named columns get neutral names, and the OMA-DM session table becomes one row of
-- opaque platform state per enrollment (the platform adapter serialises it; see
-- steward_core::checkin::SessionRecord).

-- Every enrollment so far is a Windows one.
ALTER TABLE enrollments ADD COLUMN platform TEXT NOT NULL DEFAULT 'windows';
-- No index, trigger or view refers to these columns (RENAME COLUMN would rewrite them if one did).
ALTER TABLE enrollments RENAME COLUMN hw_dev_id TO hardware_id;
ALTER TABLE enrollments RENAME COLUMN md5_credential TO session_credential;

CREATE TABLE checkin_sessions (
    enrollment_id     TEXT PRIMARY KEY REFERENCES enrollments(id),
    session_key       TEXT NOT NULL,
    state             TEXT NOT NULL,              -- JSON, the platform's own session state
    last_request_hash TEXT NOT NULL,
    last_response     TEXT NOT NULL,
    updated_at        INTEGER NOT NULL
);

-- The Windows session state in the shape the Windows adapter reads, keys in this order:
-- {"session_id", "client_msg_id", "server_msg_id", "login_status", "md5_nonce",
--  "chunk": null or {"command", "offset"}}. json() keeps the nested object an object whatever
-- CASE does to json_object's JSON subtype.
INSERT INTO checkin_sessions (enrollment_id, session_key, state, last_request_hash, last_response, updated_at)
SELECT enrollment_id, session_key,
       json_object(
           'session_id', session_id,
           'client_msg_id', client_msg_id,
           'server_msg_id', server_msg_id,
           'login_status', login_status,
           'md5_nonce', md5_nonce,
           'chunk', json(CASE WHEN chunk_command IS NOT NULL AND chunk_offset IS NOT NULL
                              THEN json_object('command', chunk_command, 'offset', chunk_offset) END)
       ),
       last_request_hash, last_response, updated_at
FROM mdm_sessions;

DROP TABLE mdm_sessions;
