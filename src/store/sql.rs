//! The statements whose text differs between SQLite and PostgreSQL, or that are long enough
//! to deserve a name. Placeholders are `$N` in both dialects.

/// The states of a run that is over (`RunState::is_terminal`), as SQL. A credential has at
/// most one run outside them (the partial unique index of migration 0001).
macro_rules! finished_states {
    () => {
        "('completed', 'rolled_back')"
    };
}

/// The states no worker drives (`RunState::is_at_rest`): over, or stuck waiting for a person.
/// The claim indexes of migrations 0001 and 0008 are partial on exactly this text.
macro_rules! at_rest_states {
    () => {
        "('completed', 'rolled_back', 'stuck')"
    };
}

/// Claim ready runs: those a dead or paused worker left (an expired lease: a rotation half
/// done) first, oldest expiry first, then the oldest due. Each kind is read in the order of its
/// own index (`runs_leased`, `runs_claimable`), at most `$4` of each, so that a claim costs the
/// same with 20 or 20,000 runs waiting. PostgreSQL locks the candidate rows and skips those
/// another replica is claiming at the same moment; SQLite has a single writer, so the
/// sub-selects cannot race.
pub const CLAIM_POSTGRES: &str = concat!(
    "\
WITH expired AS (
    SELECT id, lease_until AS t FROM runs
    WHERE lease_owner IS NOT NULL AND state NOT IN ", at_rest_states!(), "
      AND lease_until < $3 AND not_before <= $3
    ORDER BY lease_until LIMIT $4
    FOR UPDATE SKIP LOCKED),
fresh AS (
    SELECT id, not_before AS t FROM runs
    WHERE lease_owner IS NULL AND state NOT IN ", at_rest_states!(), "
      AND not_before <= $3
    ORDER BY not_before LIMIT $4
    FOR UPDATE SKIP LOCKED)
UPDATE runs SET lease_owner = $1, lease_until = $2
WHERE id IN (
    SELECT id FROM (SELECT id, 0 AS k, t FROM expired UNION ALL SELECT id, 1 AS k, t FROM fresh) ready
    ORDER BY k, t LIMIT $4)
RETURNING *"
);

pub const CLAIM_SQLITE: &str = concat!(
    "\
UPDATE runs SET lease_owner = $1, lease_until = $2
WHERE id IN (
    SELECT id FROM (
        SELECT * FROM (
            SELECT id, 0 AS k, lease_until AS t FROM runs
            WHERE lease_owner IS NOT NULL AND state NOT IN ",
    at_rest_states!(),
    "
              AND lease_until < $3 AND not_before <= $3
            ORDER BY lease_until LIMIT $4)
        UNION ALL
        SELECT * FROM (
            SELECT id, 1 AS k, not_before AS t FROM runs
            WHERE lease_owner IS NULL AND state NOT IN ",
    at_rest_states!(),
    "
              AND not_before <= $3
            ORDER BY not_before LIMIT $4))
    ORDER BY k, t LIMIT $4)
RETURNING *"
);

/// Record that a step starts: the next `seq` of the run's history, outcome `running`.
pub const BEGIN_STEP: &str = "\
INSERT INTO run_steps (run_id, seq, step, attempt, worker, started_at, outcome)
SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, 'running' FROM run_steps WHERE run_id = $1
RETURNING seq";

/// Record a step that had nothing to do (see `Then::passed`) as started and finished at `$5`,
/// in the same commit as the save of the step before it.
pub const PASS_STEP: &str = "\
INSERT INTO run_steps (run_id, seq, step, attempt, worker, started_at, finished_at, outcome)
SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $5, 'ok' FROM run_steps WHERE run_id = $1";

/// Save a run, fenced: only if it is still in the state the worker read and still leased to it.
/// A lease the heartbeat extended is never shortened by the claim-time value the worker holds.
pub const SAVE_RUN: &str = "\
UPDATE runs SET state = $4, attempts = $5, not_before = $6, lease_owner = $7,
    lease_until = CASE WHEN $7 IS NULL THEN NULL WHEN lease_until > $8 THEN lease_until ELSE $8 END,
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

/// Take one token from a provider's bucket if it holds one after refilling ($2 tokens per
/// second up to $3); `$4` is now (ms). A clock behind the last writer's refills nothing.
pub const TAKE_TOKEN_POSTGRES: &str = "\
UPDATE provider_buckets
SET tokens = LEAST($3, tokens + GREATEST(0, $4 - updated_at) * $2 / 1000.0) - 1,
    updated_at = GREATEST(updated_at, $4)
WHERE provider = $1 AND LEAST($3, tokens + GREATEST(0, $4 - updated_at) * $2 / 1000.0) >= 1
RETURNING tokens";

pub const TAKE_TOKEN_SQLITE: &str = "\
UPDATE provider_buckets
SET tokens = MIN($3, tokens + MAX(0, $4 - updated_at) * $2 / 1000.0) - 1,
    updated_at = MAX(updated_at, $4)
WHERE provider = $1 AND MIN($3, tokens + MAX(0, $4 - updated_at) * $2 / 1000.0) >= 1
RETURNING tokens";

/// Runs held by a live lease, per provider: what the concurrency limits count.
pub const IN_FLIGHT_BY_PROVIDER: &str = concat!(
    "\
SELECT c.provider, COUNT(*) FROM runs r JOIN credentials c ON c.id = r.credential_id
WHERE r.lease_owner IS NOT NULL AND r.lease_until >= $1
  AND r.state NOT IN ",
    at_rest_states!(),
    "
GROUP BY c.provider"
);

/// Ready runs with their provider: expired leases first, then the oldest due, each kind read
/// in its index's order (as in the claims above).
pub const READY_WITH_PROVIDER: &str = concat!(
    "\
SELECT id, provider FROM (
    SELECT * FROM (
        SELECT r.id, c.provider, 0 AS k, r.lease_until AS t FROM runs r JOIN credentials c ON c.id = r.credential_id
        WHERE r.lease_owner IS NOT NULL AND r.state NOT IN ", at_rest_states!(), "
          AND r.lease_until < $1 AND r.not_before <= $1
        ORDER BY r.lease_until LIMIT $2) expired
    UNION ALL
    SELECT * FROM (
        SELECT r.id, c.provider, 1 AS k, r.not_before AS t FROM runs r JOIN credentials c ON c.id = r.credential_id
        WHERE r.lease_owner IS NULL AND r.state NOT IN ", at_rest_states!(), "
          AND r.not_before <= $1
        ORDER BY r.not_before LIMIT $2) fresh) ready
ORDER BY k, t
LIMIT $2"
);

/// Append one audit row (its hash computed by rotor from the head's).
pub const INSERT_AUDIT: &str = "\
INSERT INTO audit (seq, at, actor, action, credential_id, run_id, detail, prev_hash, hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Record how a step ended.
pub const END_STEP: &str = "UPDATE run_steps SET finished_at = $3, outcome = $4, error = $5 WHERE run_id = $1 AND seq = $2";

/// Move the audit chain's head on by `$1` rows; returns the last one's `seq` and the hash the
/// first follows.
pub const ADVANCE_AUDIT_HEAD_BY: &str =
    "UPDATE audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, hash";

/// Audit rows inserted by one statement (9 parameters each). Both backends would take 500 at
/// once, but sqlx binds SQLite's parameters by name, and SQLite finds a parameter's name by a
/// walk of the statement's list: a statement's binding costs the square of its parameters
/// (two 500-row inserts per 1,000 runs planned: 3 % of rotor's CPU while it rotated).
pub const AUDIT_CHUNK: usize = 50;

/// Runs planned by one statement (8 parameters each), bounded as `AUDIT_CHUNK` is.
pub const RUN_CHUNK: usize = 50;

/// Inserts `rows` planned runs, their parameters numbered on row after row; a credential that
/// has a live run already is skipped. Returns the ids of the runs inserted.
pub fn insert_runs(rows: usize) -> String {
    let mut text = String::from(
        "INSERT INTO runs (id, credential_id, token, state, reason, emergency, grace_ms, attempts, \
         not_before, created_at, updated_at) VALUES ",
    );
    for row in 0..rows {
        let n = |k: usize| format!("${}", row * 8 + k);
        if row > 0 {
            text.push_str(", ");
        }
        text.push_str(&format!(
            "({}, {}, {}, 'planned', {}, {}, {}, 0, {}, {}, {})",
            n(1),
            n(2),
            n(3),
            n(4),
            n(5),
            n(6),
            n(7),
            n(8),
            n(8)
        ));
    }
    text.push_str(" ON CONFLICT DO NOTHING RETURNING id");
    text
}

/// Takes `rows` credentials (`$1`..) out of the due set.
pub fn clear_next_due(rows: usize) -> String {
    let list = (1..=rows)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("UPDATE credentials SET next_due_at = NULL WHERE id IN ({list})")
}

/// `INSERT_AUDIT` for `rows` rows, their parameters numbered on row after row.
pub fn insert_audit_rows(rows: usize) -> String {
    let (head, values) = INSERT_AUDIT
        .split_once("VALUES")
        .expect("INSERT_AUDIT has a VALUES list");
    let mut text = format!("{head}VALUES ");
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        text.push('(');
        text.push_str(
            &(1..=9)
                .map(|n| format!("${}", row * 9 + n))
                .collect::<Vec<_>>()
                .join(", "),
        );
        text.push(')');
    }
    debug_assert_eq!(values.trim(), "($1, $2, $3, $4, $5, $6, $7, $8, $9)");
    text
}

/// Mark a run as touched, only if it is still in the state the worker read and leased to it.
pub const TOUCH_LEASED_RUN: &str =
    "UPDATE runs SET updated_at = $4 WHERE id = $1 AND state = $2 AND lease_owner = $3";

/// Credentials due by `$1` without a live run, the soonest first.
pub const DUE_CREDENTIALS: &str = concat!(
    "\
SELECT c.id, COALESCE(c.due_reason, 'schedule'), c.next_due_at FROM credentials c
WHERE c.next_due_at <= $1 AND c.removed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.credential_id = c.id AND r.state NOT IN ",
    finished_states!(),
    ")
ORDER BY c.next_due_at LIMIT $2"
);

/// The first moment after `$1` when something may become ready: a credential due, a run's
/// timer, a lease that runs out.
pub const NEXT_WAKEUP: &str = concat!(
    "\
SELECT MIN(t) FROM (
    SELECT MIN(next_due_at) AS t FROM credentials WHERE removed_at IS NULL AND next_due_at > $1
    UNION ALL
    SELECT MIN(not_before) AS t FROM runs
    WHERE lease_owner IS NULL AND state NOT IN ",
    at_rest_states!(),
    " AND not_before > $1
    UNION ALL
    SELECT MIN(lease_until) AS t FROM runs
    WHERE lease_owner IS NOT NULL AND state NOT IN ",
    at_rest_states!(),
    " AND lease_until > $1) wake"
);

/// Claim one run by id: ready, and unleased or its lease run out.
pub const CLAIM_RUN: &str = concat!(
    "\
UPDATE runs SET lease_owner = $1, lease_until = $2 WHERE id = $3
  AND state NOT IN ",
    at_rest_states!(),
    " AND not_before <= $4
  AND (lease_owner IS NULL OR lease_until < $4) RETURNING *"
);

/// The live run of credential `$1`: stuck counts, it holds the credential's one live slot.
pub const LIVE_RUN: &str = concat!(
    "SELECT * FROM runs WHERE credential_id = $1 AND state NOT IN ",
    finished_states!()
);

/// Every live run, by credential.
pub const LIVE_RUNS: &str = concat!(
    "SELECT * FROM runs WHERE state NOT IN ",
    finished_states!(),
    " ORDER BY credential_id"
);

/// How the runs that came to rest ended, per credential (dry-run drills left out).
pub const RUN_OUTCOMES: &str = concat!(
    "\
SELECT credential_id, state, COUNT(*) FROM runs
WHERE state IN ",
    at_rest_states!(),
    " AND (drill IS NULL OR drill <> 'dry_run')
GROUP BY credential_id, state"
);

/// Runs a worker could drive by `$1`.
pub const RUNS_READY_BEFORE: &str = concat!(
    "SELECT COUNT(*) FROM runs WHERE state NOT IN ",
    at_rest_states!(),
    " AND not_before <= $1"
);

#[cfg(test)]
mod tests {
    use crate::model::state::RunState;

    #[test]
    fn audit_rows_inserted_together_number_their_parameters_on() {
        let text = super::insert_audit_rows(2);
        assert!(
            text.ends_with(
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9), ($10, $11, $12, $13, $14, $15, $16, $17, $18)"
            ),
            "{text}"
        );
    }

    fn sql_list(keep: impl Fn(RunState) -> bool) -> String {
        let names: Vec<String> = RunState::ALL
            .into_iter()
            .filter(|s| keep(*s))
            .map(|s| format!("'{s}'"))
            .collect();
        format!("({})", names.join(", "))
    }

    #[test]
    fn the_sql_state_sets_are_the_model_s() {
        assert_eq!(finished_states!(), sql_list(RunState::is_terminal));
        assert_eq!(at_rest_states!(), sql_list(RunState::is_at_rest));
    }

    #[test]
    fn the_partial_indexes_are_on_the_same_sets() {
        for backend in ["sqlite", "postgres"] {
            let init = std::fs::read_to_string(format!(
                "{}/migrations/{backend}/0001_init.sql",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            assert!(init.contains(concat!("WHERE state NOT IN ", finished_states!(), ";")));
            assert!(init.contains(concat!("WHERE state NOT IN ", at_rest_states!(), ";")));
            let claim = std::fs::read_to_string(format!(
                "{}/migrations/{backend}/0008_claim_index.sql",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            assert!(claim.contains(concat!("state NOT IN ", at_rest_states!(), ";")));
        }
    }
}
