-- Notifications to consumers: one row per run, event and hook, delivered from this durable
-- outbox until the hook succeeds. The unique key makes queueing idempotent: a step that runs
-- again after a crash queues nothing twice. Payloads name versions and fingerprints, never
-- a secret.
CREATE TABLE notify_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    credential_id TEXT NOT NULL,
    hook TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('promoted', 'retired')),
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at INTEGER,
    -- What the last attempt came to: `HTTP 200`, `exit 0`, `timed out after 30s`, `dropped`.
    last_outcome TEXT,
    last_error TEXT,
    UNIQUE (run_id, event, hook)
);

CREATE INDEX notify_outbox_due ON notify_outbox (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX notify_outbox_credential ON notify_outbox (credential_id, hook, id);
