-- One outbox for everything rotor tells the outside world: alerts to sinks (`alert`) and
-- change events to consumer hooks (`notify`). One claim, one delivery order and one backoff
-- for both. A row is delivered in order behind older undelivered rows of the same channel,
-- credential, target and condition: a sink hears an alert's resolve after its trigger, and a
-- hook hears `retired` after `promoted`.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    channel TEXT NOT NULL CHECK (channel IN ('alert', 'notify')),
    credential_id TEXT NOT NULL,
    -- The alert sink or the notify hook.
    target TEXT NOT NULL,
    -- The alert's condition; '' for notifications.
    condition TEXT NOT NULL DEFAULT '',
    -- The run a notification tells of ('' for alerts, whose run is in the payload).
    run_id TEXT NOT NULL DEFAULT '',
    event TEXT NOT NULL CHECK (event IN ('trigger', 'resolve', 'promoted', 'retired')),
    -- JSON that names versions and fingerprints, never a secret.
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    -- When the row may next be tried; a claim moves it past the attempt (compare-and-swap).
    next_attempt_at BIGINT NOT NULL,
    delivered_at BIGINT,
    -- What the last attempt came to: `HTTP 200`, `exit 0`, `timed out after 30s`, `dropped`.
    last_outcome TEXT,
    last_error TEXT
);

-- Queueing a notification is idempotent: a step repeated after a crash queues nothing twice.
CREATE UNIQUE INDEX outbox_notify_once ON outbox (run_id, event, target) WHERE channel = 'notify';
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX outbox_order ON outbox (credential_id, target, id);

-- Notifications keep their ids (their order per hook); alerts follow them, in their order.
INSERT INTO outbox (id, channel, credential_id, target, run_id, event, payload, created_at,
    attempts, failures, next_attempt_at, delivered_at, last_outcome, last_error)
SELECT id, 'notify', credential_id, hook, run_id, event, payload, created_at,
    attempts, failures, next_attempt_at, delivered_at, last_outcome, last_error
FROM notify_outbox ORDER BY id;

INSERT INTO outbox (id, channel, credential_id, target, condition, event, payload, created_at,
    attempts, failures, next_attempt_at, delivered_at, last_outcome, last_error)
SELECT id + (SELECT COALESCE(MAX(id), 0) FROM notify_outbox), 'alert', credential_id, sink,
    condition, event, payload, created_at, attempts,
    -- Every attempt of an undelivered alert failed; a delivered one failed all but its last.
    CASE WHEN delivered_at IS NULL THEN attempts ELSE GREATEST(attempts - 1, 0) END,
    next_attempt_at, delivered_at, CASE WHEN delivered_at IS NULL THEN NULL ELSE 'delivered' END,
    last_error
FROM alert_outbox ORDER BY id;

DROP TABLE notify_outbox;
DROP TABLE alert_outbox;

-- The ids were copied: the sequence continues after the last of them.
SELECT setval(pg_get_serial_sequence('outbox', 'id'), COALESCE((SELECT MAX(id) FROM outbox), 0) + 1, false);
