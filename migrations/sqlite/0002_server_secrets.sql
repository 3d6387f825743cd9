-- Secrets the server makes for itself at first start (the key CSRF tokens
-- are derived with), shared by every instance on this database.
CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
