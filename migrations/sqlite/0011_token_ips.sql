-- Where each token was used: its most recent distinct client addresses
-- (at most five are kept), with when each was first and last seen.
CREATE TABLE api_token_ips (
    token_id      INTEGER NOT NULL REFERENCES api_tokens(id),
    ip            TEXT    NOT NULL,
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    PRIMARY KEY (token_id, ip)
);

-- When the owner was last alerted about a new address (at most one alert
-- an hour per token, claimed by a conditional update on any instance).
ALTER TABLE api_tokens ADD COLUMN new_ip_alerted_at INTEGER;

-- Each member's choice: email me when a token is used from a new address.
ALTER TABLE users ADD COLUMN new_ip_alerts INTEGER NOT NULL DEFAULT 1 CHECK (new_ip_alerts IN (0, 1));
