-- Incident operations. A person's interruption of a live run (`rotor rotate --emergency`,
-- `rotor cancel`): what was asked, read by whichever worker drives the run next.
ALTER TABLE runs ADD COLUMN interrupt TEXT;
-- A paused credential (`rotor pause`) is not scheduled until resumed or until `paused_until`.
ALTER TABLE credentials ADD COLUMN paused_at BIGINT;
ALTER TABLE credentials ADD COLUMN paused_until BIGINT;
ALTER TABLE credentials ADD COLUMN paused_by TEXT;
ALTER TABLE credentials ADD COLUMN paused_reason TEXT;
