-- The token listings (the settings page, a member's page on Team, the JSON
-- list) read one owner's tokens in one of three orders, grouped working /
-- disabled or expired / revoked. One index per order, in that order, holding
-- the columns the group and the default filters read: a page is then a walk
-- along one index (no sort of every row), and the per-group counts a pass
-- over it. The search columns ride on the creation-order index, which also
-- serves every query the old api_tokens_owner did.
CREATE INDEX api_tokens_list_created ON api_tokens
    (organization_id, user_id, created_at, id, revoked_at, disabled_at, expires_at, label, display_prefix);
CREATE INDEX api_tokens_list_expiry ON api_tokens
    (organization_id, user_id, (expires_at IS NULL), expires_at, id DESC, revoked_at, disabled_at);
-- No index on last_used_at: "last used" rewrites busy tokens' rows every few
-- seconds, and those updates stay heap-only (HOT, 0002) only while none of
-- the columns they change is indexed. "Recently used" sorts in memory.
DROP INDEX api_tokens_owner;
