-- One row `/readyz` rewrites on every check: readiness means the database
-- can store something (a full disk or a read-only standby fails this
-- write), not only answer a SELECT.
CREATE TABLE readiness_probe (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at BIGINT NOT NULL
);
