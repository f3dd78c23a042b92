-- The deployments registry (the design's Deployment model with its business fields), the
-- host index alert attribution reads, and each report version's deployment snapshot and
-- change evidence. Applied once, when PRAGMA user_version is below 5.
CREATE TABLE deployments (
    deployment_id TEXT PRIMARY KEY,
    body          TEXT NOT NULL,     -- the deployment as JSON
    deployed_at   INTEGER NOT NULL,  -- Unix milliseconds
    created_time  INTEGER NOT NULL,
    updated_time  INTEGER NOT NULL
);
CREATE INDEX deployments_created ON deployments (created_time DESC, deployment_id DESC);
CREATE TABLE deployment_hosts (
    host          TEXT NOT NULL,     -- lower case, no port
    deployment_id TEXT NOT NULL,
    deployed_at   INTEGER NOT NULL,
    PRIMARY KEY (host, deployment_id)
);
CREATE INDEX deployment_hosts_latest ON deployment_hosts (host, deployed_at DESC);
ALTER TABLE reports ADD COLUMN deployment TEXT;
ALTER TABLE reports ADD COLUMN changes TEXT;
