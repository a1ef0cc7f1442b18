-- Runs at rest (completed, rolled back, stuck; dry-run drills left out) per credential and
-- state, with the completed runs' durations as histogram buckets (column le_N: runs that took
-- at most N seconds, from creation to finish). Kept by triggers on `runs`, so every process
-- that ends a run (a replica, `rotor rotate`, `rotor cancel`) counts it in the same
-- transaction, and /metrics reads credentials x 3 rows however long the history grows.
-- A run that moves between states at rest (stuck, then resolved) moves between rows.
CREATE TABLE run_totals (
    credential_id TEXT NOT NULL,
    state         TEXT NOT NULL,
    runs          BIGINT NOT NULL DEFAULT 0,
    -- Of those, the completed ones with a finish time: the histogram's count and sum.
    timed         BIGINT NOT NULL DEFAULT 0,
    duration_ms   BIGINT NOT NULL DEFAULT 0,
    le_1          BIGINT NOT NULL DEFAULT 0,
    le_10         BIGINT NOT NULL DEFAULT 0,
    le_60         BIGINT NOT NULL DEFAULT 0,
    le_300        BIGINT NOT NULL DEFAULT 0,
    le_1800       BIGINT NOT NULL DEFAULT 0,
    le_3600       BIGINT NOT NULL DEFAULT 0,
    le_21600      BIGINT NOT NULL DEFAULT 0,
    le_86400      BIGINT NOT NULL DEFAULT 0,
    le_259200     BIGINT NOT NULL DEFAULT 0,
    le_604800     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (credential_id, state)
);

INSERT INTO run_totals (credential_id, state, runs, timed, duration_ms, le_1, le_10, le_60, le_300, le_1800, le_3600, le_21600, le_86400, le_259200, le_604800)
SELECT credential_id, state, COUNT(*),
    COUNT(*) FILTER (WHERE state = 'completed' AND finished_at IS NOT NULL),
    COALESCE(SUM(finished_at - created_at) FILTER (WHERE state = 'completed' AND finished_at IS NOT NULL), 0),
    COUNT(*) FILTER (WHERE state = 'completed' AND finished_at - created_at <= 1000),
    COUNT(*) FILTER (WHERE state = 'completed' AND finished_at - created_at <= 10000),
    COUNT(*) FILTER (WHERE state = 'completed' AND finished_at - created_at <= 60000),
    COUNT(*) FILTER (WHERE state = 'completed' AND finished_at - created_at <= 300000),
    COUNT(*) FILTER (WHERE state = 'completed' AND finished_at - created_at <= 1800000),
    COUNT(*) FILTER (WHERE state = 'completed' AND finished_at - created_at <= 3600000),
    COUNT(*) FILTER (WHERE state = 'completed' AND finished_at - created_at <= 21600000),
    COUNT(*) FILTER (WHERE state = 'completed' AND finished_at - created_at <= 86400000),
    COUNT(*) FILTER (WHERE state = 'completed' AND finished_at - created_at <= 259200000),
    COUNT(*) FILTER (WHERE state = 'completed' AND finished_at - created_at <= 604800000)
FROM runs
WHERE state IN ('completed', 'rolled_back', 'stuck') AND COALESCE(drill, '') <> 'dry_run'
GROUP BY credential_id, state;

-- A run inserted at rest (a record rotor writes already finished).
CREATE TRIGGER run_totals_insert AFTER INSERT ON runs
WHEN NEW.state IN ('completed', 'rolled_back', 'stuck') AND IFNULL(NEW.drill, '') <> 'dry_run'
BEGIN
    INSERT INTO run_totals (credential_id, state) VALUES (NEW.credential_id, NEW.state)
        ON CONFLICT DO NOTHING;
    UPDATE run_totals SET
        runs = runs + 1,
        timed = timed + (NEW.state = 'completed' AND NEW.finished_at IS NOT NULL),
        duration_ms = duration_ms + (CASE WHEN NEW.state = 'completed' AND NEW.finished_at IS NOT NULL THEN (NEW.finished_at - NEW.created_at) ELSE 0 END),
        le_1 = le_1 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 1000, 0),
        le_10 = le_10 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 10000, 0),
        le_60 = le_60 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 60000, 0),
        le_300 = le_300 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 300000, 0),
        le_1800 = le_1800 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 1800000, 0),
        le_3600 = le_3600 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 3600000, 0),
        le_21600 = le_21600 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 21600000, 0),
        le_86400 = le_86400 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 86400000, 0),
        le_259200 = le_259200 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 259200000, 0),
        le_604800 = le_604800 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 604800000, 0)
    WHERE credential_id = NEW.credential_id AND state = NEW.state;
END;

-- A run that comes to rest, or moves between states at rest. Steps between live states do
-- not fire it.
CREATE TRIGGER run_totals_update AFTER UPDATE OF state ON runs
WHEN OLD.state <> NEW.state AND IFNULL(NEW.drill, '') <> 'dry_run'
    AND (OLD.state IN ('completed', 'rolled_back', 'stuck') OR NEW.state IN ('completed', 'rolled_back', 'stuck'))
BEGIN
    UPDATE run_totals SET
        runs = runs - 1,
        timed = timed - (OLD.state = 'completed' AND OLD.finished_at IS NOT NULL),
        duration_ms = duration_ms - (CASE WHEN OLD.state = 'completed' AND OLD.finished_at IS NOT NULL THEN (OLD.finished_at - OLD.created_at) ELSE 0 END),
        le_1 = le_1 - IFNULL(OLD.state = 'completed' AND OLD.finished_at IS NOT NULL AND (OLD.finished_at - OLD.created_at) <= 1000, 0),
        le_10 = le_10 - IFNULL(OLD.state = 'completed' AND OLD.finished_at IS NOT NULL AND (OLD.finished_at - OLD.created_at) <= 10000, 0),
        le_60 = le_60 - IFNULL(OLD.state = 'completed' AND OLD.finished_at IS NOT NULL AND (OLD.finished_at - OLD.created_at) <= 60000, 0),
        le_300 = le_300 - IFNULL(OLD.state = 'completed' AND OLD.finished_at IS NOT NULL AND (OLD.finished_at - OLD.created_at) <= 300000, 0),
        le_1800 = le_1800 - IFNULL(OLD.state = 'completed' AND OLD.finished_at IS NOT NULL AND (OLD.finished_at - OLD.created_at) <= 1800000, 0),
        le_3600 = le_3600 - IFNULL(OLD.state = 'completed' AND OLD.finished_at IS NOT NULL AND (OLD.finished_at - OLD.created_at) <= 3600000, 0),
        le_21600 = le_21600 - IFNULL(OLD.state = 'completed' AND OLD.finished_at IS NOT NULL AND (OLD.finished_at - OLD.created_at) <= 21600000, 0),
        le_86400 = le_86400 - IFNULL(OLD.state = 'completed' AND OLD.finished_at IS NOT NULL AND (OLD.finished_at - OLD.created_at) <= 86400000, 0),
        le_259200 = le_259200 - IFNULL(OLD.state = 'completed' AND OLD.finished_at IS NOT NULL AND (OLD.finished_at - OLD.created_at) <= 259200000, 0),
        le_604800 = le_604800 - IFNULL(OLD.state = 'completed' AND OLD.finished_at IS NOT NULL AND (OLD.finished_at - OLD.created_at) <= 604800000, 0)
    WHERE credential_id = OLD.credential_id AND state = OLD.state;
    INSERT INTO run_totals (credential_id, state)
        SELECT NEW.credential_id, NEW.state WHERE NEW.state IN ('completed', 'rolled_back', 'stuck')
        ON CONFLICT DO NOTHING;
    UPDATE run_totals SET
        runs = runs + 1,
        timed = timed + (NEW.state = 'completed' AND NEW.finished_at IS NOT NULL),
        duration_ms = duration_ms + (CASE WHEN NEW.state = 'completed' AND NEW.finished_at IS NOT NULL THEN (NEW.finished_at - NEW.created_at) ELSE 0 END),
        le_1 = le_1 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 1000, 0),
        le_10 = le_10 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 10000, 0),
        le_60 = le_60 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 60000, 0),
        le_300 = le_300 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 300000, 0),
        le_1800 = le_1800 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 1800000, 0),
        le_3600 = le_3600 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 3600000, 0),
        le_21600 = le_21600 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 21600000, 0),
        le_86400 = le_86400 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 86400000, 0),
        le_259200 = le_259200 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 259200000, 0),
        le_604800 = le_604800 + IFNULL(NEW.state = 'completed' AND NEW.finished_at IS NOT NULL AND (NEW.finished_at - NEW.created_at) <= 604800000, 0)
    WHERE credential_id = NEW.credential_id AND state = NEW.state;
END;
