-- A deployment's rollback policy secret, kept out of `body`: a report copies `body` as its
-- deployment snapshot, and a secret never goes into a report. Applied once, when PRAGMA
-- user_version is below 14.
ALTER TABLE deployments ADD COLUMN rollback_secret TEXT NOT NULL DEFAULT '';
