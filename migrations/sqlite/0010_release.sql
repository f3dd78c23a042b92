-- The release verdict of the current version (JSON), and its verdict alone for the
-- `?verdict=` filter, newest first. Applied once, when PRAGMA user_version is below 10.
ALTER TABLE reports ADD COLUMN release TEXT;
ALTER TABLE reports ADD COLUMN release_verdict TEXT;
CREATE INDEX reports_release_verdict ON reports (release_verdict, created_time);
