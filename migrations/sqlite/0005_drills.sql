-- Rotation drills. A run started by `rotor drill` says so (`dry_run`: discarded after verify;
-- `live`: a real rotation), so that a drill's failure neither counts as the credential's nor
-- reschedules it. Each drill is kept with its report; each credential its last drill outcome.
ALTER TABLE runs ADD COLUMN drill TEXT CHECK (drill IN ('dry_run', 'live'));
ALTER TABLE credentials ADD COLUMN last_drill_outcome TEXT;

CREATE TABLE drills (
    id TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    options TEXT NOT NULL,
    outcome TEXT,
    report TEXT
);
