-- Provider rate limits that hold across replicas: one token bucket per provider kind, refilled
-- by elapsed time and taken from by every replica before a step that calls the provider.
CREATE TABLE provider_buckets (
    provider TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);
