-- The fingerprint of each field of every candidate minted (`Fingerprint::of_value`, never a
-- value), so that `rotor identify` can tell which credential, run and version a value found in
-- the wild belongs to, long after it was retired. Kept as long as the audit log.
CREATE TABLE value_fingerprints (
    run_id TEXT NOT NULL,
    field TEXT NOT NULL,
    credential_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, field)
);
CREATE INDEX value_fingerprints_by_fingerprint ON value_fingerprints (fingerprint);
