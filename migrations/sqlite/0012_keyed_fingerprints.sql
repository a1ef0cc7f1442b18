-- Whether the fingerprints the store holds (credentials' current, runs' pending and
-- replaced, value_fingerprints, notification payloads) are keyed: HMAC-SHA-256 of the value's
-- SHA-256 digest under a key derived from the installation's integrity key. A store made
-- before holds the digests themselves; the first rotor that opens it with a key rewrites each
-- one as its keyed form, once, and records that it did in the audit log.
ALTER TABLE audit_head ADD COLUMN fingerprints_keyed INTEGER NOT NULL DEFAULT 0;
