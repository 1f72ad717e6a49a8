-- Staged rollouts of profile versions (steward_core::rollout, docs/ROLLOUTS.md). Named as SQLite's
-- 0012 and creating the same table and columns. Expand-only: a new table; an older replica never
-- reads it. Times are unix microseconds (UTC); ratios are 0..1.

CREATE TABLE rollouts (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    profile_id         TEXT COLLATE "C" NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    from_version       BIGINT NOT NULL,              -- 0: the profile was not applied before
    to_version         BIGINT NOT NULL,
    rings              TEXT COLLATE "C" NOT NULL,    -- JSON array of steward_core::Ring
    current_ring       BIGINT NOT NULL,              -- 0-based; every ring up to it is released
    state              TEXT COLLATE "C" NOT NULL,    -- running | paused | halted | completed | rolled_back
    reason             TEXT COLLATE "C" NOT NULL DEFAULT '',
    ring_started_at    BIGINT NOT NULL,
    soak_seconds       BIGINT NOT NULL,
    success_ratio      DOUBLE PRECISION NOT NULL,
    failure_threshold  DOUBLE PRECISION NOT NULL,
    auto_advance       BOOLEAN NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
-- One active rollout per profile: a second start (on any replica) is a unique violation.
CREATE UNIQUE INDEX rollouts_one_active ON rollouts(profile_id) WHERE state IN ('running', 'paused', 'halted');
-- A profile's newest rollout (the check-in's candidates, status), and the evaluation loop's list.
CREATE INDEX rollouts_profile ON rollouts(profile_id, created_at);
CREATE INDEX rollouts_state ON rollouts(state);
