-- The evidence stage's ranked facts on each report (JSON), written while it is generating.
-- Applied once, when PRAGMA user_version is below 2.
ALTER TABLE reports ADD COLUMN evidence TEXT;
