-- Whether a run is at rest, as a column of its own: 0 a worker drives it, 1 stuck (a person
-- must act), 2 finished. PostgreSQL's indexes moved onto it so that a step's update of a run
-- leaves them alone (its migration 0018); the statements that read runs are shared, so
-- SQLite's indexes say the same. Virtual: SQLite computes it when read (it cannot add a
-- stored column to a table). The state sets are those of `RunState::is_terminal` and
-- `is_at_rest` (store/sql.rs checks the text).
ALTER TABLE runs ADD COLUMN rest INTEGER NOT NULL GENERATED ALWAYS AS (
    CASE WHEN state IN ('completed', 'rolled_back') THEN 2
         WHEN state IN ('completed', 'rolled_back', 'stuck') THEN 1
         ELSE 0 END) VIRTUAL;

DROP INDEX runs_one_live_per_credential;
CREATE UNIQUE INDEX runs_one_live_per_credential ON runs (credential_id) WHERE rest < 2;
DROP INDEX runs_claimable;
-- Without the runs a worker holds: a claim read past every one of them to find a free run
-- (with 10,000 leased, a claim of 16 read 443 buffers on PostgreSQL; 1 now). A run leaves
-- this index when it is claimed and comes back when a retry releases it.
CREATE INDEX runs_claimable ON runs (not_before) WHERE lease_owner IS NULL AND rest = 0;
DROP INDEX runs_leased;
CREATE INDEX runs_leased ON runs (lease_until) WHERE lease_owner IS NOT NULL AND rest = 0;
