-- Staged rollouts of profile versions (steward_core::rollout, docs/ROLLOUTS.md). Times are unix
-- microseconds (UTC); booleans are 0/1; ratios are 0..1.

CREATE TABLE rollouts (
    id                 TEXT PRIMARY KEY,
    profile_id         TEXT NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    from_version       INTEGER NOT NULL,             -- 0: the profile was not applied before
    to_version         INTEGER NOT NULL,
    rings              TEXT NOT NULL,                -- JSON array of steward_core::Ring
    current_ring       INTEGER NOT NULL,             -- 0-based; every ring up to it is released
    state              TEXT NOT NULL,                -- running | paused | halted | completed | rolled_back
    reason             TEXT NOT NULL,
    ring_started_at    INTEGER NOT NULL,
    soak_seconds       INTEGER NOT NULL,
    success_ratio      REAL NOT NULL,
    failure_threshold  REAL NOT NULL,
    auto_advance       INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
-- One active rollout per profile: a second start is a unique violation (a Conflict).
CREATE UNIQUE INDEX rollouts_one_active ON rollouts(profile_id) WHERE state IN ('running', 'paused', 'halted');
-- A profile's newest rollout (the check-in's candidates, status), and the evaluation loop's list.
CREATE INDEX rollouts_profile ON rollouts(profile_id, created_at);
CREATE INDEX rollouts_state ON rollouts(state);
