-- Embedded store (SQLite): the design's Reports collection as a table, plus history.
-- Times are milliseconds since the Unix epoch (UTC). Applied by `deploy-diagnosis migrate`
-- and at startup; every statement is idempotent.

CREATE TABLE IF NOT EXISTS reports (
    id            TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('generating', 'completed', 'failed')),
    content       TEXT NOT NULL DEFAULT '',
    error         TEXT,
    raw_output    TEXT,
    alert         TEXT NOT NULL,
    runner        TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    version       INTEGER NOT NULL DEFAULT 1,
    created_time  INTEGER NOT NULL,
    updated_time  INTEGER NOT NULL,
    started_time  INTEGER,
    duration_ms   INTEGER,
    usage         TEXT,   -- JSON: tokens, steps, tool calls of the last finished diagnosis
    lease_owner   TEXT,
    lease_until   INTEGER
);

-- One report per deployment.
CREATE UNIQUE INDEX IF NOT EXISTS reports_deployment_id ON reports (deployment_id);
CREATE INDEX IF NOT EXISTS reports_created_time ON reports (created_time DESC);
-- For the worker: generating reports by age, and for listing by status.
CREATE INDEX IF NOT EXISTS reports_status_updated_time ON reports (status, updated_time DESC);

-- Previous versions of a report, kept by re-diagnosis.
CREATE TABLE IF NOT EXISTS report_history (
    deployment_id TEXT NOT NULL,
    version       INTEGER NOT NULL,
    status        TEXT NOT NULL,
    content       TEXT NOT NULL,
    error         TEXT,
    runner        TEXT,
    attempts      INTEGER NOT NULL,
    created_time  INTEGER NOT NULL,
    updated_time  INTEGER NOT NULL,
    duration_ms   INTEGER,
    PRIMARY KEY (deployment_id, version)
);
