-- rotor's durable state. Times are milliseconds since the Unix epoch (UTC). No column ever
-- holds secret material: only vault version ids and SHA-256 fingerprints.

-- One row per configured credential; a removed credential is marked, never deleted.
CREATE TABLE credentials (
    id                   TEXT PRIMARY KEY,
    provider             TEXT NOT NULL,
    vault                TEXT NOT NULL,
    vault_path           TEXT NOT NULL,
    schedule_hash        TEXT NOT NULL,
    next_due_at          BIGINT,
    due_reason           TEXT,
    current_version      TEXT,
    current_fingerprint  TEXT,
    current_since        BIGINT,
    last_success_at      BIGINT,
    last_error           TEXT,
    last_drill_at        BIGINT,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    removed_at           BIGINT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX credentials_due ON credentials (next_due_at) WHERE removed_at IS NULL;

-- One row per attempt to rotate a credential, driven through the engine's state machine.
CREATE TABLE runs (
    id                   TEXT PRIMARY KEY,
    credential_id        TEXT NOT NULL REFERENCES credentials (id),
    token                TEXT NOT NULL UNIQUE,
    state                TEXT NOT NULL,
    reason               TEXT NOT NULL,
    emergency            BIGINT NOT NULL DEFAULT 0,
    grace_ms             BIGINT NOT NULL,
    attempts             BIGINT NOT NULL DEFAULT 0,
    not_before           BIGINT NOT NULL,
    lease_owner          TEXT,
    lease_until          BIGINT,
    pending_version      TEXT,
    pending_fingerprint  TEXT,
    replaced_version     TEXT,
    replaced_fingerprint TEXT,
    grace_until          BIGINT,
    last_error           TEXT,
    error_class          TEXT,
    stuck_from           TEXT,
    created_at           BIGINT NOT NULL,
    finished_at          BIGINT,
    updated_at           BIGINT NOT NULL
);
-- One live run per credential: a stuck run blocks the next until an operator resolves it.
CREATE UNIQUE INDEX runs_one_live_per_credential ON runs (credential_id)
    WHERE state NOT IN ('completed', 'rolled_back');
CREATE INDEX runs_claimable ON runs (not_before)
    WHERE state NOT IN ('completed', 'rolled_back', 'stuck');
CREATE INDEX runs_by_credential ON runs (credential_id, created_at);

-- Every step of every run, kept: history is never overwritten.
CREATE TABLE run_steps (
    run_id      TEXT NOT NULL REFERENCES runs (id),
    seq         BIGINT NOT NULL,
    step        TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    worker      TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    outcome     TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (run_id, seq)
);

-- Append-only, hash-chained log of every step, claim, alert and CLI action.
CREATE TABLE audit (
    seq           BIGINT PRIMARY KEY,
    at            BIGINT NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    credential_id TEXT,
    run_id        TEXT,
    detail        TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL
);
-- The head of the chain: updating it serialises appends and reveals a deleted last row.
CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE TRIGGER audit_head_follows AFTER INSERT ON audit
BEGIN
    UPDATE audit_head SET hash = NEW.hash WHERE id = 1;
END;
