-- The durable outbox: a report's notifications (JSON), when the earliest pending one is
-- due, and until when a delivery holds them. Written in the same statement as the
-- finished report, so a notification is never lost between the two. Applied once, when
-- PRAGMA user_version is below 11.
ALTER TABLE reports ADD COLUMN notifications TEXT;
ALTER TABLE reports ADD COLUMN notify_due INTEGER;
ALTER TABLE reports ADD COLUMN notify_until INTEGER;
CREATE INDEX reports_outbox ON reports (notify_due) WHERE notify_due IS NOT NULL;
