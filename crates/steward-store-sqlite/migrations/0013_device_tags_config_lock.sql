-- Device tags (steward_core::DeviceTags): labels an administrator gives an enrollment
-- (`PUT /api/v1/devices/{id}/tags`), read by dynamic-group rules as the `tags` fact. One row per
-- tag; `created_at` is when the tag was given (a tag kept across a replacement keeps it).
CREATE TABLE device_tags (
    enrollment_id TEXT NOT NULL REFERENCES enrollments(id),
    tag           TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (enrollment_id, tag)
);
-- Rules over tags read every active enrollment's tags with one tag value: by tag, then enrollment.
CREATE INDEX device_tags_by_tag ON device_tags (tag, enrollment_id);

-- A profile version may ask the platform to lock its settings on the device itself where the
-- device supports it (Windows: DMClient ConfigLock). Part of the version: it is in its digest.
ALTER TABLE profile_versions ADD COLUMN config_lock INTEGER NOT NULL DEFAULT 0;
