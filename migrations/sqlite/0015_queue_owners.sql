-- Who holds an evidence lease and an outbox lease, as the diagnosis lease's `lease_owner`
-- says for a diagnosis: a holder renews or gives back only its own. Applied once, when
-- PRAGMA user_version is below 15.
ALTER TABLE reports ADD COLUMN evidence_owner TEXT;
ALTER TABLE reports ADD COLUMN notify_owner TEXT;
