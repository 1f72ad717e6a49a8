-- Desired-state configuration (steward_core::configuration): profiles with immutable numbered
-- versions, their assignment to groups or every device, the configuration epoch, and per device a
-- reconciliation stamp and one row per setting path. Times are unix microseconds (UTC); booleans
-- are 0/1.

CREATE TABLE profiles (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    platform         TEXT NOT NULL,
    description      TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    remediation      TEXT NOT NULL,               -- remediate | report
    current_version  INTEGER NOT NULL,
    assign_all       INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
-- The check-in's candidates: the profiles of one platform.
CREATE INDEX profiles_platform ON profiles(platform);

-- Never updated: a change of settings appends a version.
CREATE TABLE profile_versions (
    profile_id  TEXT NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    settings    TEXT NOT NULL,                    -- JSON array of steward_core::Setting
    digest      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (profile_id, version)
);

-- A profile's assignment: the groups it includes (exclude = 0) and excludes (exclude = 1). A group
-- named here cannot be deleted (GroupStore::delete_group).
CREATE TABLE profile_assignments (
    profile_id  TEXT NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    group_id    TEXT NOT NULL REFERENCES groups(id),
    exclude     INTEGER NOT NULL,
    PRIMARY KEY (profile_id, group_id)
);
CREATE INDEX profile_assignments_group ON profile_assignments(group_id);

-- One row: moved by every profile or assignment write, so each device reconciles once.
CREATE TABLE configuration_epoch (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    epoch  INTEGER NOT NULL
);
INSERT INTO configuration_epoch (id, epoch) VALUES (1, 1);

-- The stamp a check-in reads to decide whether to load the configuration (absent: never
-- reconciled, epoch_seen 0).
CREATE TABLE device_config_state (
    enrollment_id  TEXT PRIMARY KEY REFERENCES enrollments(id),
    epoch_seen     INTEGER NOT NULL,
    unsettled      INTEGER NOT NULL,
    verify_at      INTEGER
);

-- One row per enrollment and node path. profile_id has no foreign key: a row outlives its deleted
-- profile so the setting's removal rule can still be applied.
CREATE TABLE device_settings (
    enrollment_id      TEXT NOT NULL REFERENCES enrollments(id),
    path               TEXT NOT NULL,
    profile_id         TEXT NOT NULL,
    profile_version    INTEGER NOT NULL,
    setting            TEXT NOT NULL,             -- JSON steward_core::Setting
    status             TEXT NOT NULL,
    reason             TEXT NOT NULL,
    in_flight_op       TEXT,                      -- apply | remove | verify; NULL: nothing in flight
    in_flight_session  TEXT,
    in_flight_at       INTEGER,
    applied_digest     TEXT,
    status_code        INTEGER,
    error              TEXT,
    observed           TEXT,
    observed_at        INTEGER,
    verified_at        INTEGER,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (enrollment_id, path)
);
-- A profile's status counts (ProfileStore::profile_status).
CREATE INDEX device_settings_profile ON device_settings(profile_id, profile_version, status);
