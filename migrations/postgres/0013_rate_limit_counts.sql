-- Cluster-wide rate limits (PostgreSQL only; SQLite has one instance).
-- Each instance beats its heartbeat here every 200 ms; only instances with a
-- recent heartbeat count.
CREATE TABLE rate_limit_instances (
    instance_id  TEXT PRIMARY KEY,
    heartbeat_ms BIGINT NOT NULL
);

-- Per instance, per token and class (0 reads, 1 writes), per minute-aligned
-- window: what the instance accepted and what it may accept in total. One
-- row per busy token and instance is rewritten now and then, never one per
-- request. Ended windows are deleted by whichever instance gets there.
CREATE TABLE rate_limit_counts (
    window_start_ms BIGINT  NOT NULL,
    token_id        BIGINT  NOT NULL,
    class           INTEGER NOT NULL CHECK (class IN (0, 1)),
    instance_id     TEXT    NOT NULL,
    used            BIGINT  NOT NULL,
    reserved        BIGINT  NOT NULL,
    PRIMARY KEY (window_start_ms, token_id, class, instance_id)
);
