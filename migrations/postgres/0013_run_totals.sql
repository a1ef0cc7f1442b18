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

-- One function for both triggers: take the old row out of its total, add the new one.
CREATE FUNCTION run_totals_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t BIGINT;
    d BIGINT;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.state IN ('completed', 'rolled_back', 'stuck') AND COALESCE(OLD.drill, '') <> 'dry_run' THEN
        t := (OLD.state = 'completed' AND OLD.finished_at IS NOT NULL)::int;
        d := CASE WHEN t = 1 THEN OLD.finished_at - OLD.created_at ELSE 0 END;
        UPDATE run_totals SET
            runs = run_totals.runs - 1,
            timed = run_totals.timed - t,
            duration_ms = run_totals.duration_ms - d,
            le_1 = run_totals.le_1 - (t = 1 AND d <= 1000)::int,
            le_10 = run_totals.le_10 - (t = 1 AND d <= 10000)::int,
            le_60 = run_totals.le_60 - (t = 1 AND d <= 60000)::int,
            le_300 = run_totals.le_300 - (t = 1 AND d <= 300000)::int,
            le_1800 = run_totals.le_1800 - (t = 1 AND d <= 1800000)::int,
            le_3600 = run_totals.le_3600 - (t = 1 AND d <= 3600000)::int,
            le_21600 = run_totals.le_21600 - (t = 1 AND d <= 21600000)::int,
            le_86400 = run_totals.le_86400 - (t = 1 AND d <= 86400000)::int,
            le_259200 = run_totals.le_259200 - (t = 1 AND d <= 259200000)::int,
            le_604800 = run_totals.le_604800 - (t = 1 AND d <= 604800000)::int
        WHERE credential_id = OLD.credential_id AND state = OLD.state;
    END IF;
    IF NEW.state IN ('completed', 'rolled_back', 'stuck') AND COALESCE(NEW.drill, '') <> 'dry_run' THEN
        t := (NEW.state = 'completed' AND NEW.finished_at IS NOT NULL)::int;
        d := CASE WHEN t = 1 THEN NEW.finished_at - NEW.created_at ELSE 0 END;
        INSERT INTO run_totals (credential_id, state) VALUES (NEW.credential_id, NEW.state)
            ON CONFLICT DO NOTHING;
        UPDATE run_totals SET
            runs = run_totals.runs + 1,
            timed = run_totals.timed + t,
            duration_ms = run_totals.duration_ms + d,
            le_1 = run_totals.le_1 + (t = 1 AND d <= 1000)::int,
            le_10 = run_totals.le_10 + (t = 1 AND d <= 10000)::int,
            le_60 = run_totals.le_60 + (t = 1 AND d <= 60000)::int,
            le_300 = run_totals.le_300 + (t = 1 AND d <= 300000)::int,
            le_1800 = run_totals.le_1800 + (t = 1 AND d <= 1800000)::int,
            le_3600 = run_totals.le_3600 + (t = 1 AND d <= 3600000)::int,
            le_21600 = run_totals.le_21600 + (t = 1 AND d <= 21600000)::int,
            le_86400 = run_totals.le_86400 + (t = 1 AND d <= 86400000)::int,
            le_259200 = run_totals.le_259200 + (t = 1 AND d <= 259200000)::int,
            le_604800 = run_totals.le_604800 + (t = 1 AND d <= 604800000)::int
        WHERE credential_id = NEW.credential_id AND state = NEW.state;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_totals_insert AFTER INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION run_totals_count();
CREATE TRIGGER run_totals_update AFTER UPDATE OF state ON runs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION run_totals_count();
