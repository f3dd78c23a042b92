-- The alert lifecycle: further alerts of a deployment recorded on its report (JSON array,
-- newest last) and when a resolved alert came. Applied once, when PRAGMA user_version is
-- below 6.
ALTER TABLE reports ADD COLUMN related_alerts TEXT;
ALTER TABLE reports ADD COLUMN resolved_at INTEGER;
