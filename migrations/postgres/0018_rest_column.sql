-- Whether a run is at rest, as a column of its own: 0 a worker drives it, 1 stuck (a person
-- must act), 2 finished. The partial indexes were on `state`, which every step changes, so no
-- update of a run could be HOT: each step wrote a new entry into all six of its indexes.
-- Partial on `rest`, which changes twice in a run's life at most, a step's update stays on its
-- page (with room kept there by the fill factor) and leaves the indexes alone. The state sets
-- are those of `RunState::is_terminal` and `is_at_rest` (store/sql.rs checks the text).
-- Adding a stored column rewrites the table once, under its lock: seconds a million runs.
ALTER TABLE runs SET (fillfactor = 70);
ALTER TABLE runs ADD COLUMN rest SMALLINT NOT NULL GENERATED ALWAYS AS (
    CASE WHEN state IN ('completed', 'rolled_back') THEN 2
         WHEN state IN ('completed', 'rolled_back', 'stuck') THEN 1
         ELSE 0 END) STORED;

DROP INDEX runs_one_live_per_credential;
CREATE UNIQUE INDEX runs_one_live_per_credential ON runs (credential_id) WHERE rest < 2;
DROP INDEX runs_claimable;
-- Without the runs a worker holds: a claim read past every one of them to find a free run
-- (with 10,000 leased, a claim of 16 read 443 buffers on PostgreSQL; 1 now). A run leaves
-- this index when it is claimed and comes back when a retry releases it.
CREATE INDEX runs_claimable ON runs (not_before) WHERE lease_owner IS NULL AND rest = 0;
DROP INDEX runs_leased;
CREATE INDEX runs_leased ON runs (lease_until) WHERE lease_owner IS NOT NULL AND rest = 0;

-- A step's end updates the row its start inserted: room on the page keeps that update HOT.
ALTER TABLE run_steps SET (fillfactor = 80);
