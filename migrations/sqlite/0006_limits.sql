-- Provider rate limits that hold across replicas: one token bucket per provider kind, refilled
-- by elapsed time and taken from by every replica before a step that calls the provider.
CREATE TABLE provider_buckets (
    provider TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated_at INTEGER NOT NULL
);
