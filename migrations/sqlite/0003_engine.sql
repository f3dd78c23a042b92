-- Which engine wrote a completed report (ai | evidence), and why the AI did not, when it
-- did not. Applied once, when PRAGMA user_version is below 3.
ALTER TABLE reports ADD COLUMN engine TEXT;
ALTER TABLE reports ADD COLUMN ai_error TEXT;
