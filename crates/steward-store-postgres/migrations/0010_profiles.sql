-- Desired-state configuration (steward_core::configuration): profiles with immutable numbered
-- versions, their assignment to groups or every device, the configuration epoch, and per device a
-- stamp and one row per setting node. Named as SQLite's 0010 and creating the same tables and
-- columns. Expand-only: new tables; an older replica never reads them.

CREATE TABLE profiles (
    id               TEXT COLLATE "C" PRIMARY KEY,
    name             TEXT COLLATE "C" NOT NULL UNIQUE,
    platform         TEXT COLLATE "C" NOT NULL,
    description      TEXT COLLATE "C" NOT NULL DEFAULT '',
    priority         BIGINT NOT NULL,
    remediation      TEXT COLLATE "C" NOT NULL,
    current_version  BIGINT NOT NULL,
    assign_all       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
-- The check-in's candidates: the profiles of one platform.
CREATE INDEX profiles_platform ON profiles(platform);

-- Never updated: a change of a profile's settings appends the next version.
CREATE TABLE profile_versions (
    profile_id  TEXT COLLATE "C" NOT NULL REFERENCES profiles(id),
    version     BIGINT NOT NULL,
    settings    TEXT COLLATE "C" NOT NULL,    -- JSON, the list of steward_core::Setting
    digest      TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (profile_id, version)
);

-- A profile's groups: included (exclude FALSE) or excluded (TRUE); `assign_all` on the profile.
CREATE TABLE profile_assignments (
    profile_id  TEXT COLLATE "C" NOT NULL REFERENCES profiles(id),
    group_id    TEXT COLLATE "C" NOT NULL REFERENCES groups(id),
    exclude     BOOLEAN NOT NULL,
    PRIMARY KEY (profile_id, group_id)
);
-- delete_group's check: is the group named by any assignment.
CREATE INDEX profile_assignments_group ON profile_assignments(group_id);

-- One row: moved by every profile or assignment write (its row lock also serialises those writes).
CREATE TABLE configuration_epoch (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    epoch  BIGINT NOT NULL
);
INSERT INTO configuration_epoch (id, epoch) VALUES (1, 1);

-- The stamp a check-in reads to decide whether to load the configuration (absent: never
-- reconciled, epoch_seen 0).
CREATE TABLE device_config_state (
    enrollment_id  TEXT COLLATE "C" PRIMARY KEY REFERENCES enrollments(id),
    epoch_seen     BIGINT NOT NULL,
    unsettled      BIGINT NOT NULL,
    verify_at      BIGINT
);

-- One device's state of one setting node. profile_id has no foreign key on purpose: the row
-- outlives its profile, so the setting's removal rule can still be applied.
CREATE TABLE device_settings (
    enrollment_id      TEXT COLLATE "C" NOT NULL REFERENCES enrollments(id),
    path               TEXT COLLATE "C" NOT NULL,
    profile_id         TEXT COLLATE "C" NOT NULL,
    profile_version    BIGINT NOT NULL,
    setting            TEXT COLLATE "C" NOT NULL,    -- JSON, one steward_core::Setting
    status             TEXT COLLATE "C" NOT NULL,
    reason             TEXT COLLATE "C" NOT NULL DEFAULT '',
    in_flight_op       TEXT COLLATE "C",
    in_flight_session  TEXT COLLATE "C",
    in_flight_at       BIGINT,
    applied_digest     TEXT COLLATE "C",
    status_code        BIGINT,
    error              TEXT COLLATE "C",
    observed           TEXT COLLATE "C",
    observed_at        BIGINT,
    verified_at        BIGINT,
    updated_at         BIGINT NOT NULL,
    PRIMARY KEY (enrollment_id, path)
);
-- A profile's numbers (profile_status) without reading every device's rows.
CREATE INDEX device_settings_profile ON device_settings(profile_id, profile_version, status);
