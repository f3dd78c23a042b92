-- Counting the waiting reports (Worker.MaxQueue, the queue-depth gauge) reads this index
-- alone instead of every generating row. Applied once, when PRAGMA user_version is below 7.
CREATE INDEX reports_waiting ON reports (status, lease_until);
