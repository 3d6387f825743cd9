-- SCIM 2.0 provisioning. Keep in step with ../postgres/0017_scim.sql.

-- Per-organization bearer secrets for the identity provider, made on the
-- Team page. Only the SHA-256 of the secret is stored; a revoked row stays.
CREATE TABLE scim_tokens (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id    INTEGER NOT NULL REFERENCES organizations(id),
    label              TEXT    NOT NULL,
    secret_hash        TEXT    NOT NULL UNIQUE, -- hex SHA-256 of the secret
    display_prefix     TEXT    NOT NULL,
    created_at         INTEGER NOT NULL,
    created_by_user_id INTEGER REFERENCES users(id),
    revoked_at         INTEGER,
    last_used_at       INTEGER
);
CREATE INDEX scim_tokens_org ON scim_tokens (organization_id, created_at);

-- What the identity provider calls a member: its userName (NULL: the email)
-- and externalId, per organization; when SCIM last changed the member.
ALTER TABLE memberships ADD COLUMN scim_user_name TEXT;
ALTER TABLE memberships ADD COLUMN scim_external_id TEXT;
ALTER TABLE memberships ADD COLUMN scim_modified_at INTEGER;
CREATE UNIQUE INDEX memberships_scim_user_name
    ON memberships (organization_id, lower(scim_user_name)) WHERE scim_user_name IS NOT NULL;
