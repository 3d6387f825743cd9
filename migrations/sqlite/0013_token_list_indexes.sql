-- The token listings (the settings page, a member's page on Team, the JSON
-- list) read one owner's tokens in one of three orders, grouped working /
-- disabled or expired / revoked. One index per order, in that order, holding
-- the columns the group and the default filters read: a page is then a walk
-- along one index (no sort of every row), and the per-group counts a pass
-- over it that reads no row. The search columns ride on the creation-order
-- index, which also serves every query the old api_tokens_owner did.
CREATE INDEX api_tokens_list_created ON api_tokens
    (organization_id, user_id, created_at, id, revoked_at, disabled_at, expires_at, label, display_prefix);
CREATE INDEX api_tokens_list_expiry ON api_tokens
    (organization_id, user_id, (expires_at IS NULL), expires_at, id DESC, revoked_at, disabled_at);
-- SQLite has no heap-only updates to protect (see the PostgreSQL migration),
-- so "Recently used" gets its index here too.
CREATE INDEX api_tokens_list_used ON api_tokens
    (organization_id, user_id, (last_used_at IS NULL), last_used_at DESC, id DESC, revoked_at, disabled_at, expires_at);
DROP INDEX api_tokens_owner;
