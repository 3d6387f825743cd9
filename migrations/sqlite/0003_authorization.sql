-- Who disabled a token: a superuser's disable (from the Team page) holds
-- until a superuser lifts it; the owner lifts only their own.
ALTER TABLE api_tokens ADD COLUMN disabled_by_user_id INTEGER REFERENCES users(id);

-- Tokens disabled before this column existed: the audit log knows who.
UPDATE api_tokens SET disabled_by_user_id = (
    SELECT e.actor_user_id FROM audit_events e
    WHERE e.token_id = api_tokens.id AND e.action = 'token.disabled'
    ORDER BY e.created_at DESC, e.id DESC LIMIT 1
) WHERE disabled_at IS NOT NULL;
