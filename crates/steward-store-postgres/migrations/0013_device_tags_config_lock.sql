-- Device tags (steward_core::DeviceTags): labels an administrator gives an enrollment
-- (`PUT /api/v1/devices/{id}/tags`), read by dynamic-group rules as the `tags` fact. One row per
-- tag; `created_at` is when the tag was given (a tag kept across a replacement keeps it).
-- Expand only: a new table and a defaulted column, so a replica of the previous release keeps
-- working beside this one.
CREATE TABLE device_tags (
    enrollment_id TEXT COLLATE "C" NOT NULL REFERENCES enrollments(id),
    tag           TEXT COLLATE "C" NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (enrollment_id, tag)
);
CREATE INDEX device_tags_by_tag ON device_tags (tag, enrollment_id);

-- A profile version may ask the platform to lock its settings on the device itself where the
-- device supports it (Windows: DMClient ConfigLock). Part of the version: it is in its digest.
ALTER TABLE profile_versions ADD COLUMN config_lock BOOLEAN NOT NULL DEFAULT FALSE;
