-- What the provider told of the replaced credential's use during grace (`retire_when =
-- "unused"`), as JSON: when it was last seen in use and by whom, when rotor last asked. Kept
-- on the run so that a restart mid-grace remembers what was seen. Never a secret.
ALTER TABLE runs ADD COLUMN previous_usage TEXT;
