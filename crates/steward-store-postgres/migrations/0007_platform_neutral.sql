-- Platform-neutral enrollments and check-in sessions: an enrollment says which platform it belongs
-- to, and the check-in session is one row of opaque platform state per enrollment (the platform
-- adapter serialises it; see steward_core::checkin::SessionRecord). SQLite's 0007 also renamed two
-- columns and converted its mdm_sessions rows; this schema never had either.

-- A defaulted column: a release that does not know it keeps inserting, and gets Windows.
ALTER TABLE enrollments ADD COLUMN platform TEXT COLLATE "C" NOT NULL DEFAULT 'windows';

CREATE TABLE checkin_sessions (
    enrollment_id     TEXT COLLATE "C" PRIMARY KEY REFERENCES enrollments(id),
    session_key       TEXT COLLATE "C" NOT NULL,
    state             TEXT COLLATE "C" NOT NULL,    -- JSON, the platform's own session state
    last_request_hash TEXT COLLATE "C" NOT NULL,
    last_response     TEXT COLLATE "C" NOT NULL,
    updated_at        BIGINT NOT NULL
);
