-- A person's feedback on a report version (JSON: score, rootCauseCorrect, comment, time);
-- history keeps each version's. Applied once, when PRAGMA user_version is below 4.
ALTER TABLE reports ADD COLUMN feedback TEXT;
ALTER TABLE report_history ADD COLUMN feedback TEXT;
