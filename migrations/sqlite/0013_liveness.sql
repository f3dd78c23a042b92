-- One row that readiness writes through the group commit, so that `/readyz` proves the
-- store can write (a full disk fails it), not only that it can be read. Applied once, when
-- PRAGMA user_version is below 13.
CREATE TABLE liveness (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);
