-- Credentials rotated by hand: the expiry a person recorded with `rotor confirm --expires-at`.
ALTER TABLE credentials ADD COLUMN expires_at INTEGER;
