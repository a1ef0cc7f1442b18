//! The statements whose text differs between SQLite and PostgreSQL, or that are long enough
//! to deserve a name. Placeholders are `$N` in both dialects.

/// A run that is not over: it holds its credential's one live slot (the partial unique index
/// `runs_one_live_per_credential` is on this text).
macro_rules! unfinished {
    () => {
        "rest < 2"
    };
}

/// A run a worker drives: not over, not stuck (the claim indexes `runs_claimable` and
/// `runs_leased` are partial on this text). A condition on `rest`, never on `state`, so that
/// PostgreSQL sees the query within the index.
macro_rules! driven {
    () => {
        "rest = 0"
    };
}

/// The states before promotion, where an interruption rolls the run back
/// (`RunState::on_failure` is `RollingBack` for exactly these).
macro_rules! before_promotion_states {
    () => {
        "('planned', 'pending_stored', 'applied', 'verified')"
    };
}

/// The columns a requested run is written with, `REQUEST_RUN`'s and
/// `REQUEST_RUN_IF_CONFIGURED`'s (their values in the same order).
macro_rules! request_run {
    () => {
        "INSERT INTO runs (id, credential_id, token, state, reason, emergency, grace_ms, attempts, \
        not_before, created_at, updated_at, drill)"
    };
}

/// Notification deliveries that reached their hook and attempts that failed, per credential
/// and hook: `HOOK_COUNTS` without its grouping, so that a page of it can add a range.
macro_rules! hook_counts {
    () => {
        "SELECT credential_id, target AS hook, \
        CAST(SUM(CASE WHEN delivered_at IS NOT NULL AND last_outcome NOT IN ('dropped', 'superseded') \
        THEN 1 ELSE 0 END) AS BIGINT) AS succeeded, \
        CAST(SUM(failures) AS BIGINT) AS failed \
        FROM outbox WHERE channel = 'notify'"
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
    WHERE lease_owner IS NOT NULL AND ", driven!(), "
      AND lease_until < $3 AND not_before <= $3
    ORDER BY lease_until LIMIT $4
    FOR UPDATE SKIP LOCKED),
fresh AS (
    SELECT id, not_before AS t FROM runs
    WHERE lease_owner IS NULL AND ", driven!(), "
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
            WHERE lease_owner IS NOT NULL AND ",
    driven!(),
    "
              AND lease_until < $3 AND not_before <= $3
            ORDER BY lease_until LIMIT $4)
        UNION ALL
        SELECT * FROM (
            SELECT id, 1 AS k, not_before AS t FROM runs
            WHERE lease_owner IS NULL AND ",
    driven!(),
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

/// A credential's pause, read by the write that begins one of its run's steps.
pub const CREDENTIAL_PAUSE: &str = "SELECT paused_at, paused_until FROM credentials WHERE id = $1";

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
    grace_until = $13, last_error = $14, error_class = $15, stuck_from = $16, finished_at = $17, updated_at = $18,
    previous_usage = $19
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
  AND r.",
    driven!(),
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
        WHERE r.lease_owner IS NOT NULL AND r.", driven!(), "
          AND r.lease_until < $1 AND r.not_before <= $1
        ORDER BY r.lease_until LIMIT $2) expired
    UNION ALL
    SELECT * FROM (
        SELECT r.id, c.provider, 1 AS k, r.not_before AS t FROM runs r JOIN credentials c ON c.id = r.credential_id
        WHERE r.lease_owner IS NULL AND r.", driven!(), "
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
  AND (c.paused_at IS NULL OR c.paused_until <= $1)
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.credential_id = c.id AND r.",
    unfinished!(),
    ")
ORDER BY c.next_due_at LIMIT $2"
);

/// The first moment after `$1` when something may become ready: a credential due, a pause
/// that ends, a run's timer, a lease that runs out.
pub const NEXT_WAKEUP: &str = concat!(
    "\
SELECT MIN(t) FROM (
    SELECT MIN(next_due_at) AS t FROM credentials WHERE removed_at IS NULL AND next_due_at > $1
    UNION ALL
    SELECT MIN(paused_until) AS t FROM credentials WHERE paused_until > $1
    UNION ALL
    SELECT MIN(not_before) AS t FROM runs
    WHERE lease_owner IS NULL AND ",
    driven!(),
    " AND not_before > $1
    UNION ALL
    SELECT MIN(lease_until) AS t FROM runs
    WHERE lease_owner IS NOT NULL AND ",
    driven!(),
    " AND lease_until > $1) wake"
);

/// `NEXT_WAKEUP` on PostgreSQL: a function of migration 0019 whose body is that statement,
/// planned once a connection.
pub const NEXT_WAKEUP_POSTGRES: &str = "SELECT next_wakeup($1)";

/// Claim one run by id: ready, and unleased or its lease run out.
pub const CLAIM_RUN: &str = concat!(
    "\
UPDATE runs SET lease_owner = $1, lease_until = $2 WHERE id = $3
  AND ",
    driven!(),
    " AND not_before <= $4
  AND (lease_owner IS NULL OR lease_until < $4) RETURNING *"
);

/// The live run of credential `$1`: stuck counts, it holds the credential's one live slot.
pub const LIVE_RUN: &str = concat!(
    "SELECT * FROM runs WHERE credential_id = $1 AND ",
    unfinished!(),
);

/// Every live run, by credential.
pub const LIVE_RUNS: &str = concat!(
    "SELECT * FROM runs WHERE ",
    unfinished!(),
    " ORDER BY credential_id"
);

/// Run by `Store::run_totals`: the triggers' totals (migration 0013).
pub const RUN_TOTALS: &str = "SELECT * FROM run_totals";

/// Run by `run_totals_in` in `store/totals.rs`: the totals of one page of credentials, the ids
/// in (`$1`, `$2`] (`Store::credential_pages`; the primary key's order).
pub const RUN_TOTALS_IN: &str =
    "SELECT * FROM run_totals WHERE credential_id > $1 AND credential_id <= $2";

/// Runs a worker could drive by `$1`.
pub const RUNS_READY_BEFORE: &str = concat!(
    "SELECT COUNT(*) FROM runs WHERE ",
    driven!(),
    " AND not_before <= $1"
);

// The rest of the store's statements, named after what they do.

/// PostgreSQL: serialises replicas for the rest of the transaction (`Store::reconcile`, the
/// limits' claim in `store/limits.rs`).
pub const ADVISORY_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";

/// Run by `Store::reconcile`.
pub const RECONCILE_KNOWN: &str =
    "SELECT id, schedule_hash, current_since, removed_at FROM credentials";

/// Run by `Store::reconcile`.
pub const RESTORE_CREDENTIAL: &str =
    "UPDATE credentials SET removed_at = NULL, updated_at = $2 WHERE id = $1";

/// Run by `Store::reconcile`.
pub const RESCHEDULE_CREDENTIAL: &str = "UPDATE credentials SET schedule_hash = $2, next_due_at = $3, due_reason = $4, \
    provider = $5, vault = $6, vault_path = $7, updated_at = $8 WHERE id = $1";

/// Run by `Store::reconcile`.
pub const REMOVE_CREDENTIAL: &str =
    "UPDATE credentials SET removed_at = $2, updated_at = $2 WHERE id = $1";

/// Run by `Store::lease_held`.
pub const LEASE_HELD: &str =
    "SELECT COUNT(*) FROM runs WHERE id = $1 AND lease_owner = $2 AND lease_until >= $3";

/// Run by `Store::heartbeat`.
pub const HEARTBEAT: &str = "UPDATE runs SET lease_until = $3 WHERE id = $1 AND lease_owner = $2";

/// Run by `Store::release`.
pub const RELEASE: &str =
    "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2";

/// Run by `Store::request_rotation`.
pub const CREDENTIAL_EXISTS: &str =
    "SELECT id FROM credentials WHERE id = $1 AND removed_at IS NULL";

/// Run by `Store::request_rotation`.
pub const RESUME_STUCK_RUN: &str = "UPDATE runs SET state = stuck_from, stuck_from = NULL, attempts = 0, not_before = $2, lease_owner = NULL, lease_until = NULL, \
    updated_at = $2 WHERE credential_id = $1 AND state = 'stuck' AND stuck_from IS NOT NULL";

/// Run by `Store::request_rotation`.
pub const REQUEST_RUN: &str = concat!(
    request_run!(),
    " VALUES ($1, $2, $3, 'planned', $4, $5, $6, 0, $7, $7, $7, $8) ON CONFLICT DO NOTHING"
);

/// Run by `start_emergencies` in `store/incident.rs`: `REQUEST_RUN` for a configured
/// credential, nothing for one the store does not have (where `REQUEST_RUN` would break the
/// transaction it shares with other credentials' requests on the foreign key).
pub const REQUEST_RUN_IF_CONFIGURED: &str = concat!(
    request_run!(),
    " SELECT $1, $2, $3, 'planned', $4, $5, $6, 0, $7, $7, $7, $8",
    " WHERE EXISTS (SELECT 1 FROM credentials WHERE id = $2 AND removed_at IS NULL)",
    " ON CONFLICT DO NOTHING"
);

/// Run by `Store::request_rotation`.
pub const CLEAR_NEXT_DUE: &str = "UPDATE credentials SET next_due_at = NULL WHERE id = $1";

/// Run by `Store::announce_work`.
pub const ANNOUNCE_WORK: &str = "SELECT pg_notify($1, '')";

/// Run by `Store::credentials`.
pub const CREDENTIALS: &str = "SELECT * FROM credentials ORDER BY id";

/// Run by `Store::credentials_after`.
pub const CREDENTIALS_AFTER: &str = "SELECT * FROM credentials WHERE id > $1 ORDER BY id LIMIT $2";

/// Run by `Store::credential`.
pub const CREDENTIAL: &str = "SELECT * FROM credentials WHERE id = $1";

/// Run by `Store::current_recorded`.
pub const CURRENT_RECORDED: &str =
    "SELECT current_version, current_fingerprint FROM credentials WHERE id = $1";

/// Run by `Store::run`.
pub const RUN: &str = "SELECT * FROM runs WHERE id = $1";

/// Run by `Store::runs`.
pub const RUNS: &str = "SELECT * FROM runs WHERE ($1 IS NULL OR credential_id = $1) ORDER BY created_at DESC, id DESC LIMIT $2";

/// Run by `Store::confirm_manual`.
pub const CONFIRM_MANUAL: &str = "UPDATE credentials SET current_since = $2, last_success_at = $2, expires_at = $3, \
    current_version = CAST($2 AS TEXT), current_fingerprint = NULL, last_error = NULL, \
    consecutive_failures = 0, updated_at = $2 WHERE id = $1 AND removed_at IS NULL";

/// Run by `Store::ping`.
pub const PING: &str = "SELECT 1";

/// Run by `Store::steps`.
pub const STEPS: &str = "SELECT * FROM run_steps WHERE run_id = $1 ORDER BY seq";

/// Run by `Store::verify_audit`.
pub const AUDIT_ROWS: &str = "SELECT * FROM audit ORDER BY seq";

/// Run by `Store::verify_audit`.
pub const AUDIT_HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";

/// Whether the chain is keyed (see `Store::key_the_chain`).
pub const AUDIT_KEYED: &str = "SELECT keyed FROM audit_head WHERE id = 1";

/// The same, taking the head's row lock on PostgreSQL (SQLite's `BEGIN IMMEDIATE` holds the
/// whole database), so that replicas opening an unkeyed store together key it once.
pub const LOCK_AUDIT_KEYED: &str =
    "UPDATE audit_head SET keyed = keyed WHERE id = 1 RETURNING keyed";

/// Whether the store's fingerprints are keyed (see `Store::key_the_fingerprints`).
pub const FINGERPRINTS_KEYED: &str = "SELECT fingerprints_keyed FROM audit_head WHERE id = 1";

/// The same, under the head's row lock, as `LOCK_AUDIT_KEYED`.
pub const LOCK_FINGERPRINTS_KEYED: &str = "UPDATE audit_head SET fingerprints_keyed = fingerprints_keyed \
    WHERE id = 1 RETURNING fingerprints_keyed";

pub const SET_FINGERPRINTS_KEYED: &str =
    "UPDATE audit_head SET fingerprints_keyed = 1 WHERE id = 1";

/// Every notification payload, to key the fingerprints it names.
pub const NOTIFY_PAYLOADS: &str =
    "SELECT id, payload FROM outbox WHERE channel = 'notify' ORDER BY id";

pub const SET_NOTIFY_PAYLOAD: &str = "UPDATE outbox SET payload = $1 WHERE id = $2";

/// Rehashes one row under the key.
pub const REHASH_AUDIT_ROW: &str = "UPDATE audit SET prev_hash = $1, hash = $2 WHERE seq = $3";

/// The head after the chain was rehashed.
pub const KEYED_AUDIT_HEAD: &str = "UPDATE audit_head SET hash = $1, keyed = 1 WHERE id = 1";

/// Run by `queue_notifications` in `store/notify.rs`.
pub const SUPERSEDE_NOTIFICATIONS: &str = "UPDATE outbox SET delivered_at = $4, last_outcome = $5 \
    WHERE channel = 'notify' AND credential_id = $1 AND target = $2 AND run_id <> $3 AND delivered_at IS NULL";

/// Run by `queue_notifications` in `store/notify.rs`.
pub const QUEUE_NOTIFICATION: &str = "INSERT INTO outbox (channel, run_id, credential_id, target, event, payload, created_at, next_attempt_at) \
    VALUES ('notify', $1, $2, $3, $4, $5, $6, $6) ON CONFLICT (run_id, event, target) WHERE channel = 'notify' DO NOTHING";

/// Run by `due_messages` in `store/outbox.rs`: due rows of one channel (of one credential
/// unless `$4` is ''), each only when no older row of the same channel, credential, target
/// and condition still waits.
pub const DUE_MESSAGES: &str = "SELECT id, channel, credential_id, target, condition, run_id, event, payload, \
    attempts, failures, next_attempt_at FROM outbox o \
    WHERE o.channel = $1 AND o.delivered_at IS NULL AND o.next_attempt_at <= $2 \
    AND ($4 = '' OR o.credential_id = $4) \
    AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.credential_id = o.credential_id \
    AND e.target = o.target AND e.id < o.id AND e.channel = o.channel \
    AND e.condition = o.condition AND e.delivered_at IS NULL) \
    ORDER BY o.id LIMIT $3";

/// Run by `claim_message` in `store/outbox.rs`.
pub const CLAIM_MESSAGE: &str = "UPDATE outbox SET next_attempt_at = $3 \
    WHERE id = $1 AND next_attempt_at = $2 AND delivered_at IS NULL";

/// Run by `message_delivered` in `store/outbox.rs`.
pub const MESSAGE_DELIVERED: &str = "UPDATE outbox SET delivered_at = $2, attempts = attempts + 1, \
    last_outcome = $3, last_error = NULL WHERE id = $1";

/// Run by `message_delivered` in `store/outbox.rs`.
pub const WAKE_NOTIFIED_RUN: &str = "UPDATE runs SET not_before = $2 WHERE id = $1 AND state = 'promoted' \
    AND lease_owner IS NULL AND not_before > $2 AND NOT EXISTS \
    (SELECT 1 FROM outbox WHERE channel = 'notify' AND run_id = $1 AND event = 'promoted' AND delivered_at IS NULL)";

/// Run by `message_failed` in `store/outbox.rs`.
pub const MESSAGE_FAILED: &str = "UPDATE outbox SET attempts = attempts + 1, failures = failures + 1, \
    next_attempt_at = $2, last_outcome = $3, last_error = $4 WHERE id = $1";

/// Run by `next_message_at` in `store/outbox.rs`.
pub const NEXT_MESSAGE_AT: &str =
    "SELECT MIN(next_attempt_at) FROM outbox WHERE channel = $1 AND delivered_at IS NULL";

/// Run by `notifications_settled` in `store/notify.rs`.
pub const NOTIFICATIONS_SETTLED: &str = "SELECT COUNT(*) FROM outbox \
    WHERE channel = 'notify' AND run_id = $1 AND event = $2 AND delivered_at IS NULL";

/// Run by `wake_promoted_run` in `store/notify.rs`.
pub const WAKE_PROMOTED_RUN: &str = "UPDATE runs SET not_before = $2 WHERE id = $1 AND state = 'promoted' \
    AND lease_owner IS NULL AND not_before > $2";

/// Run by `notifications_failing` in `store/notify.rs`.
pub const NOTIFICATIONS_FAILING: &str = "SELECT COUNT(*) FROM outbox \
    WHERE channel = 'notify' AND credential_id = $1 AND delivered_at IS NULL AND failures > 0";

/// Run by `hook_states` in `store/notify.rs`.
pub const HOOK_STATES: &str = "SELECT o.credential_id, o.target AS hook, o.event, o.run_id, o.attempts, o.delivered_at, \
    o.next_attempt_at, o.last_outcome, o.last_error, \
    (SELECT COUNT(*) FROM outbox w WHERE w.channel = 'notify' AND w.credential_id = o.credential_id \
    AND w.target = o.target AND w.delivered_at IS NULL) AS undelivered \
    FROM outbox o WHERE o.id = (SELECT MAX(l.id) FROM outbox l \
    WHERE l.channel = 'notify' AND l.credential_id = o.credential_id AND l.target = o.target) \
    ORDER BY o.credential_id, o.target";

/// Run by `hook_counts` in `store/notify.rs`.
pub const HOOK_COUNTS: &str = concat!(
    hook_counts!(),
    " GROUP BY credential_id, target ORDER BY credential_id, target"
);

/// Run by `hook_counts_in` in `store/notify.rs`: `HOOK_COUNTS` of one page of credentials.
pub const HOOK_COUNTS_IN: &str = concat!(
    hook_counts!(),
    " AND credential_id > $1 AND credential_id <= $2",
    " GROUP BY credential_id, target ORDER BY credential_id, target"
);

/// Run by `raise_alert` and `resolve_alerts` in `store/alerts.rs`.
pub const QUEUE_ALERT: &str = "INSERT INTO outbox (channel, target, credential_id, condition, event, payload, created_at, next_attempt_at) \
    VALUES ('alert', $1, $2, $3, $4, $5, $6, $6)";

/// Run by `raise_alert` in `store/alerts.rs`.
pub const ALERT_ACTIVE: &str =
    "SELECT active FROM alert_state WHERE credential_id = $1 AND condition = $2";

/// Run by `raise_alert` in `store/alerts.rs`.
pub const RAISE_ALERT: &str = "INSERT INTO alert_state (credential_id, condition, active, raised_at, resolved_at, payload) \
    VALUES ($1, $2, 1, $3, NULL, $4) \
    ON CONFLICT (credential_id, condition) DO UPDATE SET active = 1, raised_at = $3, resolved_at = NULL, payload = $4";

/// Run by `resolve_alerts` in `store/alerts.rs`.
pub const ACTIVE_ALERT_COUNT: &str =
    "SELECT COUNT(*) FROM alert_state WHERE credential_id = $1 AND active = 1";

/// Run by `resolve_alerts` in `store/alerts.rs`.
pub const CREDENTIAL_ACTIVE_ALERTS: &str = "SELECT condition, payload FROM alert_state WHERE credential_id = $1 AND active = 1 ORDER BY condition";

/// Run by `resolve_alerts` in `store/alerts.rs`.
pub const RESOLVE_ALERT: &str = "UPDATE alert_state SET active = 0, resolved_at = $3 WHERE credential_id = $1 AND condition = $2";

/// Run by `active_alerts` in `store/alerts.rs`.
pub const ACTIVE_ALERTS: &str = "SELECT credential_id, condition, raised_at, payload FROM alert_state WHERE active = 1 \
    ORDER BY credential_id, condition";

/// Run by `active_alerts_in` in `store/alerts.rs`: `ACTIVE_ALERTS` of the ids in (`$1`, `$2`].
pub const ACTIVE_ALERTS_IN: &str = "SELECT credential_id, condition, raised_at, payload FROM alert_state \
    WHERE active = 1 AND credential_id > $1 AND credential_id <= $2 ORDER BY credential_id, condition";

/// Run by `start_drill` in `store/drill.rs`.
pub const START_DRILL: &str =
    "INSERT INTO drills (id, actor, started_at, options) VALUES ($1, $2, $3, $4)";

/// Run by `finish_drill` in `store/drill.rs`.
pub const FINISH_DRILL: &str =
    "UPDATE drills SET finished_at = $2, outcome = $3, report = $4 WHERE id = $1";

/// Run by `finish_drill` in `store/drill.rs`.
pub const RECORD_DRILL_OUTCOME: &str = "UPDATE credentials SET last_drill_outcome = $2, \
    last_drill_at = CASE WHEN $2 = 'passed' THEN $3 ELSE last_drill_at END, updated_at = $3 \
    WHERE id = $1";

/// Run by `last_drill` in `store/drill.rs`.
pub const LAST_DRILL: &str = "SELECT * FROM drills ORDER BY started_at DESC, id DESC LIMIT 1";

/// Run by `deliveries_since` in `store/drill.rs`.
pub const DELIVERIES_SINCE: &str = "SELECT target AS sink, condition, event, attempts, delivered_at, last_error FROM outbox \
    WHERE channel = 'alert' AND credential_id = $1 AND created_at >= $2 ORDER BY id";

/// Run by `claim_within` in `store/limits.rs`.
pub const CLAIM_WITHIN: &str = "UPDATE runs SET lease_owner = $1, lease_until = $2 WHERE id = $3 \
    AND (lease_owner IS NULL OR lease_until < $4) RETURNING *";

/// Run by `take_token` in `store/limits.rs`.
pub const UPSERT_BUCKET: &str = "INSERT INTO provider_buckets (provider, tokens, updated_at) VALUES ($1, $2, $3) \
    ON CONFLICT (provider) DO NOTHING";

/// Run by `take_token` in `store/limits.rs`.
pub const BUCKET: &str = "SELECT tokens, updated_at FROM provider_buckets WHERE provider = $1";

/// Run by `current_recorded` in `store/reader.rs`.
pub const READ_CURRENT_RECORDED: &str =
    "SELECT current_version, current_fingerprint FROM credentials WHERE id = ?1";

/// Run by `credentials_after` in `store/reader.rs`: `CREDENTIALS_AFTER`, `COLUMNS` taking the
/// place of `*`.
pub const READ_CREDENTIALS_AFTER: &str =
    "SELECT COLUMNS FROM credentials WHERE id > ?1 ORDER BY id LIMIT ?2";

/// Run by `any_active_alert` in `store/reader.rs`.
pub const ANY_ACTIVE_ALERT: &str =
    "SELECT EXISTS (SELECT 1 FROM alert_state WHERE credential_id = ?1 AND active = 1)";

/// `reconcile`: new credentials, many to a statement; the rows' placeholders follow.
pub const INSERT_CREDENTIALS_VALUES: &str = "INSERT INTO credentials (id, provider, vault, \
    vault_path, schedule_hash, next_due_at, due_reason, created_at, updated_at) VALUES ";

/// Run by `Store::interrupt_live_run` (store/incident.rs), `$2` an `Interrupt`. A run before
/// promotion turns to rolling back; a stuck run resumes from where it stopped; an emergency
/// marks the run so that its retire happens at once; anything but a cancel ends the grace now.
/// The lease, if any, is renamed: its worker's next save, heartbeat and fence check fail, and
/// the run can be claimed once the lease it was granted runs out. A cancel leaves a promoted
/// run alone (nothing is updated).
pub const INTERRUPT_LIVE_RUN: &str = concat!(
    "\
UPDATE runs SET interrupt = $2,
    state = CASE WHEN state = 'stuck' AND stuck_from IS NOT NULL THEN stuck_from
                 WHEN state IN ",
    before_promotion_states!(),
    " THEN 'rolling_back'
                 ELSE state END,
    stuck_from = CASE WHEN state = 'stuck' AND stuck_from IS NOT NULL THEN NULL ELSE stuck_from END,
    emergency = CASE WHEN $2 = 'emergency' THEN 1 ELSE emergency END,
    grace_until = CASE WHEN $2 <> 'cancel' AND grace_until > $3 THEN $3 ELSE grace_until END,
    attempts = 0, not_before = $3, last_error = NULL, error_class = NULL,
    lease_owner = CASE WHEN lease_owner IS NULL THEN NULL ELSE lease_owner || ' (interrupted)' END,
    updated_at = $3
WHERE credential_id = $1 AND ",
    unfinished!(),
    "
  AND ($2 <> 'cancel' OR state IN ",
    before_promotion_states!(),
    " OR state = 'rolling_back'
       OR (state = 'stuck' AND stuck_from = 'rolling_back'))
RETURNING *"
);

/// Run by `Store::close_by_hand` (store/incident.rs): a stuck run, or one that keeps retrying
/// after promotion (or in a rollback) on a transient cause. A worker retrying it loses its save.
pub const CLOSE_BY_HAND: &str = "\
UPDATE runs SET state = CASE WHEN stuck_from = 'rolling_back' OR state = 'rolling_back' THEN 'rolled_back' ELSE 'completed' END,
    interrupt = 'resolved_by_hand', stuck_from = NULL, lease_owner = NULL, lease_until = NULL,
    finished_at = $2, updated_at = $2
WHERE id = $1 AND (state = 'stuck'
    OR (state IN ('promoted', 'retiring', 'rolling_back') AND error_class = 'transient' AND attempts > 0))
RETURNING *";

/// Run by `Store::close_by_hand`: the credential as the vault holds it after the repair.
pub const RECORD_REPAIRED_CREDENTIAL: &str = "\
UPDATE credentials SET current_version = COALESCE($2, current_version),
    current_fingerprint = COALESCE($3, current_fingerprint), last_error = NULL,
    consecutive_failures = 0, updated_at = $4
WHERE id = $1";

/// Run by `Store::pause`: pauses a credential, or pauses it again with a new end and reason.
pub const PAUSE_CREDENTIAL: &str = "\
UPDATE credentials SET paused_at = $2, paused_until = $3, paused_by = $4, paused_reason = $5, updated_at = $2
WHERE id = $1 AND removed_at IS NULL";

/// Run by `Store::resume`.
pub const RESUME_CREDENTIAL: &str = "\
UPDATE credentials SET paused_at = NULL, paused_until = NULL, paused_by = NULL, paused_reason = NULL, updated_at = $2
WHERE id = $1 AND paused_at IS NOT NULL";

/// Run by `Store::resume`: the live run a pause held back is ready now (a grace not over yet
/// is waited out again by whoever claims it).
pub const WAKE_RESUMED_RUN: &str = concat!(
    "UPDATE runs SET not_before = $2, updated_at = $2 WHERE credential_id = $1 AND lease_owner IS NULL AND not_before > $2 AND ",
    driven!()
);

/// Run by `Store::record_minted` (store/seen.rs).
pub const RECORD_MINTED: &str = "INSERT INTO value_fingerprints (run_id, field, credential_id, fingerprint, recorded_at) \
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (run_id, field) DO NOTHING";

/// Run by `Store::minted` (store/seen.rs).
pub const MINTED: &str = "SELECT credential_id, run_id, field, recorded_at FROM value_fingerprints \
    WHERE fingerprint = $1 ORDER BY recorded_at DESC";

/// Run by `Store::run_replacing` (store/seen.rs).
pub const RUN_REPLACING: &str = "SELECT * FROM runs WHERE credential_id = $1 AND replaced_version = $2 \
    ORDER BY created_at DESC LIMIT 1";

/// PostgreSQL's clock in ms since the epoch (the time of the statement, not of a transaction).
pub const DATABASE_NOW_MS: &str = "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

// PostgreSQL's group commit (store/group_commit/postgres.rs): each statement writes a whole
// group's rows, bound as arrays of one element a write and read back by `unnest`. A run is in
// a group at most once (its worker awaits each write before the next), so no row is matched
// by two elements. Each mirrors the statement of one write above it names.

/// `SAVE_RUN` for a group, its compare-and-swap per row: fewer rows changed than elements
/// means a lease was lost.
pub const SAVE_RUNS_POSTGRES: &str = "\
UPDATE runs SET state = v.state, attempts = v.attempts, not_before = v.not_before,
    lease_owner = v.lease_owner,
    lease_until = CASE WHEN v.lease_owner IS NULL THEN NULL
                       WHEN runs.lease_until > v.lease_until THEN runs.lease_until ELSE v.lease_until END,
    pending_version = v.pending_version, pending_fingerprint = v.pending_fingerprint,
    replaced_version = v.replaced_version, replaced_fingerprint = v.replaced_fingerprint,
    grace_until = v.grace_until, last_error = v.last_error, error_class = v.error_class,
    stuck_from = v.stuck_from, finished_at = v.finished_at, updated_at = v.now,
    previous_usage = v.previous_usage
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[],
            $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::text[],
            $15::text[], $16::text[], $17::bigint[], $18::bigint[], $19::text[])
    AS v(id, expected, worker, state, attempts, not_before, lease_owner, lease_until, pending_version,
         pending_fingerprint, replaced_version, replaced_fingerprint, grace_until, last_error,
         error_class, stuck_from, finished_at, now, previous_usage)
WHERE runs.id = v.id AND runs.state = v.expected AND runs.lease_owner = v.worker";

/// `END_STEP` for a group.
pub const END_STEPS_POSTGRES: &str = "\
UPDATE run_steps SET finished_at = v.finished_at, outcome = v.outcome, error = v.error
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[])
    AS v(run_id, seq, finished_at, outcome, error)
WHERE run_steps.run_id = v.run_id AND run_steps.seq = v.seq";

/// `UPDATE_CREDENTIAL` for a group.
pub const UPDATE_CREDENTIALS_POSTGRES: &str = "\
UPDATE credentials SET
    current_version = COALESCE(v.current_version, credentials.current_version),
    current_fingerprint = COALESCE(v.current_fingerprint, credentials.current_fingerprint),
    current_since = COALESCE(v.current_since, credentials.current_since),
    last_success_at = COALESCE(v.last_success_at, credentials.last_success_at),
    last_error = CASE WHEN v.set_last_error = 1 THEN v.last_error ELSE credentials.last_error END,
    consecutive_failures = CASE WHEN v.failure = 1 THEN credentials.consecutive_failures + 1
                                WHEN v.failure = 0 THEN 0 ELSE credentials.consecutive_failures END,
    next_due_at = CASE WHEN v.set_next_due = 1 THEN v.next_due_at ELSE credentials.next_due_at END,
    due_reason = COALESCE(v.due_reason, credentials.due_reason),
    updated_at = v.now
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[],
            $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::bigint[])
    AS v(id, current_version, current_fingerprint, current_since, last_success_at, set_last_error,
         last_error, failure, set_next_due, next_due_at, due_reason, now)
WHERE credentials.id = v.id";

/// `TOUCH_LEASED_RUN` for a group: fewer rows changed than elements means a lease was lost.
pub const TOUCH_LEASED_RUNS_POSTGRES: &str = "\
UPDATE runs SET updated_at = v.now
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS v(id, state, worker, now)
WHERE runs.id = v.id AND runs.state = v.state AND runs.lease_owner = v.worker";

/// `PASS_STEP` for a group.
pub const PASS_STEPS_POSTGRES: &str = "\
INSERT INTO run_steps (run_id, seq, step, attempt, worker, started_at, finished_at, outcome)
SELECT v.run_id, COALESCE((SELECT MAX(s.seq) FROM run_steps s WHERE s.run_id = v.run_id), 0) + 1,
       v.step, v.attempt, v.worker, v.now, v.now, 'ok'
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[])
    AS v(run_id, step, attempt, worker, now)";

/// `BEGIN_STEP` for a group: each run's new `seq`, with its credential's pause
/// (`CREDENTIAL_PAUSE`) read in the same statement.
pub const BEGIN_STEPS_POSTGRES: &str = "\
WITH begun AS (
    INSERT INTO run_steps (run_id, seq, step, attempt, worker, started_at, outcome)
    SELECT v.run_id, COALESCE((SELECT MAX(s.seq) FROM run_steps s WHERE s.run_id = v.run_id), 0) + 1,
           v.step, v.attempt, v.worker, v.now, 'running'
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[])
        AS v(run_id, step, attempt, worker, now)
    RETURNING run_id, seq)
SELECT begun.run_id, begun.seq, c.paused_at, c.paused_until
FROM begun JOIN runs r ON r.id = begun.run_id JOIN credentials c ON c.id = r.credential_id";

/// `RECORD_MINTED` for a group.
pub const RECORD_MINTED_POSTGRES: &str = "\
INSERT INTO value_fingerprints (run_id, field, credential_id, fingerprint, recorded_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
ON CONFLICT (run_id, field) DO NOTHING";

/// `INSERT_AUDIT` for a group, in `seq` order (the chain's). The trigger that moves the head's
/// hash along fires once a statement, to the hash of its highest `seq`.
pub const INSERT_AUDITS_POSTGRES: &str = "\
INSERT INTO audit (seq, at, actor, action, credential_id, run_id, detail, prev_hash, hash)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[])
    AS v(seq, at, actor, action, credential_id, run_id, detail, prev_hash, hash)
ORDER BY v.seq";

#[cfg(test)]
mod tests {
    use crate::model::state::RunState;

    /// The states of a run that is over (`RunState::is_terminal`), as SQL: migration 0018's
    /// column `rest` is 2 for exactly these.
    macro_rules! finished_states {
        () => {
            "('completed', 'rolled_back')"
        };
    }

    /// The states no worker drives (`RunState::is_at_rest`): over, or stuck waiting for a
    /// person. Migration 0018's column `rest` is 1 or 2 for exactly these.
    macro_rules! at_rest_states {
        () => {
            "('completed', 'rolled_back', 'stuck')"
        };
    }

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
        assert_eq!(
            before_promotion_states!(),
            sql_list(|s| s.on_failure() == RunState::RollingBack && s != RunState::RollingBack)
        );
    }

    #[test]
    fn postgres_next_wakeup_function_runs_the_statement() {
        let function = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/postgres/0019_next_wakeup_function.sql"
        ))
        .unwrap();
        assert!(function.contains(super::NEXT_WAKEUP), "{function}");
    }

    #[test]
    fn the_rest_column_and_the_partial_indexes_are_on_the_same_sets() {
        for backend in ["sqlite", "postgres"] {
            let rest = std::fs::read_to_string(format!(
                "{}/migrations/{backend}/0018_rest_column.sql",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            for text in [
                concat!("WHEN state IN ", finished_states!(), " THEN 2"),
                concat!("WHEN state IN ", at_rest_states!(), " THEN 1"),
                concat!("(credential_id) WHERE ", unfinished!(), ";"),
                concat!(
                    "(not_before) WHERE lease_owner IS NULL AND ",
                    driven!(),
                    ";"
                ),
                concat!(
                    "(lease_until) WHERE lease_owner IS NOT NULL AND ",
                    driven!(),
                    ";"
                ),
            ] {
                assert!(rest.contains(text), "{backend}: {text}");
            }
        }
    }
}
