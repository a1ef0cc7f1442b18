//! The statements whose text differs between SQLite and PostgreSQL, or that are long enough
//! to deserve a name. Placeholders are `$N` in both dialects.

/// Claim ready runs. PostgreSQL locks the candidate rows and skips those another replica is
/// claiming at the same moment; SQLite has a single writer, so the sub-select cannot race.
pub const CLAIM_POSTGRES: &str = "\
UPDATE runs SET lease_owner = $1, lease_until = $2
WHERE id IN (
    SELECT id FROM runs
    WHERE state NOT IN ('completed', 'rolled_back', 'stuck') AND not_before <= $3
      AND (lease_owner IS NULL OR lease_until < $3)
    ORDER BY not_before
    LIMIT $4
    FOR UPDATE SKIP LOCKED)
RETURNING *";

pub const CLAIM_SQLITE: &str = "\
UPDATE runs SET lease_owner = $1, lease_until = $2
WHERE id IN (
    SELECT id FROM runs
    WHERE state NOT IN ('completed', 'rolled_back', 'stuck') AND not_before <= $3
      AND (lease_owner IS NULL OR lease_until < $3)
    ORDER BY not_before
    LIMIT $4)
RETURNING *";

/// Record that a step starts: the next `seq` of the run's history, outcome `running`.
pub const BEGIN_STEP: &str = "\
INSERT INTO run_steps (run_id, seq, step, attempt, worker, started_at, outcome)
SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, 'running' FROM run_steps WHERE run_id = $1
RETURNING seq";

/// Save a run, fenced: only if it is still in the state the worker read and still leased to it.
pub const SAVE_RUN: &str = "\
UPDATE runs SET state = $4, attempts = $5, not_before = $6, lease_owner = $7, lease_until = $8,
    pending_version = $9, pending_fingerprint = $10, replaced_version = $11, replaced_fingerprint = $12,
    grace_until = $13, last_error = $14, error_class = $15, stuck_from = $16, finished_at = $17, updated_at = $18
WHERE id = $1 AND state = $2 AND lease_owner = $3";

/// Update a credential from a run's save; `NULL` parameters leave a column as it is, except
/// where a flag says to set it (so that a value can be cleared).
pub const UPDATE_CREDENTIAL: &str = "\
UPDATE credentials SET
    current_version = COALESCE($2, current_version),
    current_fingerprint = COALESCE($3, current_fingerprint),
    current_since = COALESCE($4, current_since),
    last_success_at = COALESCE($5, last_success_at),
    last_error = CASE WHEN $6 = 1 THEN $7 ELSE last_error END,
    consecutive_failures = CASE WHEN $8 = 1 THEN consecutive_failures + 1 WHEN $8 = 0 THEN 0
                                ELSE consecutive_failures END,
    next_due_at = CASE WHEN $9 = 1 THEN $10 ELSE next_due_at END,
    due_reason = COALESCE($11, due_reason),
    updated_at = $12
WHERE id = $1";
