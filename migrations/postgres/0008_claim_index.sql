-- Runs whose lease expired are claimed first, oldest expiry first: this index finds them
-- without sorting every live run (a catch-up of 20,000 due runs sorted them all at each claim).
CREATE INDEX runs_leased ON runs (lease_until)
    WHERE lease_owner IS NOT NULL AND state NOT IN ('completed', 'rolled_back', 'stuck');
