-- The hosts a version's evidence left out (past Evidence.MaxHosts), as JSON. Applied once,
-- when PRAGMA user_version is below 12.
ALTER TABLE reports ADD COLUMN evidence_unmeasured TEXT;
