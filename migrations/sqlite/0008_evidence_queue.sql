-- Evidence on its own durable queue: a gathering takes a version's evidence lease
-- (evidence_until) apart from the diagnosis lease, and a failed gathering is recorded
-- (evidence_error) so the version is not gathered again and again. The index holds only
-- the versions still waiting for evidence, oldest first. Applied once, when PRAGMA
-- user_version is below 8.
ALTER TABLE reports ADD COLUMN evidence_error TEXT;
ALTER TABLE reports ADD COLUMN evidence_until INTEGER;
CREATE INDEX reports_evidence_queue ON reports (created_time)
    WHERE status = 'generating' AND evidence IS NULL AND evidence_error IS NULL;
