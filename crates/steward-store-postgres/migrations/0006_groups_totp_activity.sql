-- Console second factor (TOTP), group-scoped console users, staged sign-in sessions, and the index
-- the activity charts read.

-- The TOTP seed sealed under the server's data key (never the seed itself); confirmed once the user
-- entered a first code; the last accepted RFC 6238 time step, so every code is accepted once.
ALTER TABLE users ADD COLUMN totp_secret TEXT COLLATE "C";
ALTER TABLE users ADD COLUMN totp_confirmed_at BIGINT;
ALTER TABLE users ADD COLUMN totp_last_step BIGINT;

-- A team's console user: sees only this group's devices, like a group-scoped API token.
ALTER TABLE users ADD COLUMN console_group_id TEXT COLLATE "C" REFERENCES groups(id);

-- TRUE: password given, second factor still due; such a session reaches only the second-factor pages.
ALTER TABLE console_sessions ADD COLUMN second_factor_pending BOOLEAN NOT NULL DEFAULT FALSE;

-- Active devices per group (groups page, device list filter) without reading every enrollment.
CREATE INDEX enrollments_group_state ON enrollments(group_id, state);

-- Dashboard charts aggregate the device event log by day.
CREATE INDEX device_events_at ON device_events(at, kind);
