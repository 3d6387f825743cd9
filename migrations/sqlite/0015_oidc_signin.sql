-- OpenID Connect sign-in. One row per sign-in started at the provider: the
-- `state` sent there and the browser cookie that started it, both as SHA-256
-- hex (the nonce and PKCE verifier are derived from the cookie's secret, so
-- nothing here could finish a sign-in). Single use, expiring.
CREATE TABLE oidc_logins (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    state_hash   TEXT    NOT NULL UNIQUE,
    browser_hash TEXT    NOT NULL,
    redirect_to  TEXT,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER
);
CREATE INDEX oidc_logins_expires ON oidc_logins (expires_at);

-- Memberships made by just-in-time provisioning from the provider's claim:
-- only these are disabled again when the claim no longer names the
-- organization (a superuser's own invitations are never touched).
ALTER TABLE memberships ADD COLUMN oidc_managed INTEGER NOT NULL DEFAULT 0 CHECK (oidc_managed IN (0, 1));
