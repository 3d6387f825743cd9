-- Keysmith schema, SQLite dialect. Keep in step with ../postgres/0001_initial.sql:
-- the same tables, columns and indexes; only the DDL spelling differs.
-- Times are integer unix seconds (UTC). Flags are nullable times ("disabled_at")
-- or 0/1 integers, so one set of runtime queries reads both backends.

CREATE TABLE organizations (
    id                        INTEGER PRIMARY KEY AUTOINCREMENT,
    name                      TEXT    NOT NULL UNIQUE,
    created_at                INTEGER NOT NULL,
    -- Policy; NULL means "use the deployment's default".
    reads_per_minute          INTEGER,
    writes_per_minute         INTEGER,
    max_token_lifetime_days   INTEGER,
    allowed_scopes            TEXT
);

CREATE TABLE users (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    email        TEXT    NOT NULL UNIQUE, -- stored lower-cased
    display_name TEXT,
    created_at   INTEGER NOT NULL
);

CREATE TABLE memberships (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id   INTEGER NOT NULL REFERENCES organizations(id),
    user_id           INTEGER NOT NULL REFERENCES users(id),
    role              TEXT    NOT NULL CHECK (role IN ('superuser', 'member')),
    can_manage_tokens INTEGER NOT NULL DEFAULT 0 CHECK (can_manage_tokens IN (0, 1)),
    disabled_at       INTEGER,
    invited_at        INTEGER,
    joined_at         INTEGER,
    created_at        INTEGER NOT NULL,
    UNIQUE (organization_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE projects (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id INTEGER NOT NULL REFERENCES organizations(id),
    name            TEXT    NOT NULL,
    archived_at     INTEGER,
    created_at      INTEGER NOT NULL,
    UNIQUE (organization_id, name)
);

CREATE TABLE api_tokens (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id            INTEGER NOT NULL REFERENCES users(id),
    organization_id    INTEGER NOT NULL REFERENCES organizations(id),
    label              TEXT    NOT NULL,
    display_prefix     TEXT    NOT NULL,
    token_hash         TEXT    NOT NULL UNIQUE, -- hex SHA-256 of the token; never the token
    scopes             TEXT    NOT NULL,        -- granted scope names, space separated
    created_at         INTEGER NOT NULL,
    created_ip         TEXT,
    created_user_agent TEXT,
    expires_at         INTEGER,
    disabled_at        INTEGER,
    revoked_at         INTEGER,
    revoked_by_user_id INTEGER REFERENCES users(id),
    revoked_reason     TEXT,
    last_used_at       INTEGER,
    last_used_method   TEXT,
    last_used_path     TEXT,
    last_used_ip       TEXT
);
-- A label is unique per owner and organization among live (unrevoked) tokens.
CREATE UNIQUE INDEX api_tokens_live_label
    ON api_tokens (user_id, organization_id, lower(label)) WHERE revoked_at IS NULL;
CREATE INDEX api_tokens_owner ON api_tokens (organization_id, user_id, created_at);

CREATE TABLE api_token_projects (
    token_id   INTEGER NOT NULL REFERENCES api_tokens(id),
    project_id INTEGER NOT NULL REFERENCES projects(id),
    PRIMARY KEY (token_id, project_id)
);

-- One row per reminder sent, so a reminder goes out once per token and kind,
-- across restarts and instances.
CREATE TABLE token_notices (
    token_id   INTEGER NOT NULL REFERENCES api_tokens(id),
    notice     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (token_id, notice)
);

CREATE TABLE audit_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id INTEGER REFERENCES organizations(id),
    actor_user_id   INTEGER REFERENCES users(id),
    actor_token_id  INTEGER REFERENCES api_tokens(id),
    subject_user_id INTEGER REFERENCES users(id),
    token_id        INTEGER REFERENCES api_tokens(id),
    action          TEXT    NOT NULL,
    detail          TEXT,
    ip              TEXT,
    user_agent      TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX audit_events_org_time ON audit_events (organization_id, created_at);

CREATE TABLE sessions (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    id_hash                 TEXT    NOT NULL UNIQUE, -- hex SHA-256 of the cookie value
    user_id                 INTEGER NOT NULL REFERENCES users(id),
    current_organization_id INTEGER REFERENCES organizations(id),
    created_at              INTEGER NOT NULL,
    last_seen_at            INTEGER NOT NULL,
    expires_at              INTEGER NOT NULL,
    ip                      TEXT,
    user_agent              TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Sign-in, revoke-from-email, invitation and first-run setup links.
CREATE TABLE one_time_links (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT    NOT NULL CHECK (kind IN ('signin', 'revoke', 'invite', 'setup')),
    secret_hash     TEXT    NOT NULL UNIQUE, -- hex SHA-256 of the link secret
    user_id         INTEGER REFERENCES users(id),
    organization_id INTEGER REFERENCES organizations(id),
    token_id        INTEGER REFERENCES api_tokens(id),
    email           TEXT,
    redirect_to     TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER
);
CREATE INDEX one_time_links_user ON one_time_links (kind, user_id);

-- Transactional outbox: written in the transaction of the change it reports,
-- delivered by a background worker.
CREATE TABLE mail_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    template        TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    payload         TEXT    NOT NULL, -- JSON the template renders from
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    locked_until    INTEGER,
    sent_at         INTEGER,
    failed_at       INTEGER,
    last_error      TEXT,
    message_id      TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (sent_at, failed_at, next_attempt_at);
