-- Whether the audit chain is keyed with the installation's integrity key (HMAC-SHA-256, the
-- key kept outside the store). A store made before keys existed holds an unkeyed SHA-256
-- chain: the first rotor that opens it with a key rehashes every row under it once, and
-- records that it did in the chain itself.
ALTER TABLE audit_head ADD COLUMN keyed BIGINT NOT NULL DEFAULT 0;
