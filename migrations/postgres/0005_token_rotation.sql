-- Token rotation: a token keeps its id, label, scopes and projects when its
-- secret is replaced (regenerated from the page or rotated by the token
-- itself). Keep in step with ../sqlite/0004_token_rotation.sql.

-- When the current secret was issued (NULL: at creation). A rotation gives
-- the token a new expiry of the same length as the last one, measured from
-- here.
ALTER TABLE api_tokens ADD COLUMN rotated_at BIGINT;
-- When the owner was last told that a replaced secret was used: at most one
-- such alert an hour per token, on every instance.
ALTER TABLE api_tokens ADD COLUMN reuse_alerted_at BIGINT;

-- Secrets a token no longer has: the digest (never the secret), until when
-- it still verifies (the grace period; equal to replaced_at for none), and
-- kept after that so a later use is recognised as the reuse of a replaced
-- secret rather than an unknown token.
CREATE TABLE api_token_replaced_secrets (
    token_hash  TEXT    NOT NULL PRIMARY KEY, -- hex SHA-256 of the replaced token
    token_id    BIGINT  NOT NULL REFERENCES api_tokens(id),
    replaced_at BIGINT  NOT NULL,
    grace_until BIGINT  NOT NULL
);
CREATE INDEX api_token_replaced_secrets_token ON api_token_replaced_secrets (token_id);
