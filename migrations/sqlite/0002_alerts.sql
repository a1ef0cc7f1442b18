-- Alerts: one row per credential and condition that is (or was) raised, for deduplication and
-- resolution, and a durable outbox of deliveries per sink, retried until each sink took it.
CREATE TABLE alert_state (
    credential_id TEXT NOT NULL,
    condition TEXT NOT NULL,
    active INTEGER NOT NULL,
    raised_at INTEGER NOT NULL,
    resolved_at INTEGER,
    payload TEXT NOT NULL,
    PRIMARY KEY (credential_id, condition)
);

CREATE TABLE alert_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    credential_id TEXT NOT NULL,
    condition TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('trigger', 'resolve')),
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at INTEGER,
    last_error TEXT
);

CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at) WHERE delivered_at IS NULL;
