-- The absolute lifetime of a session (tokens.session_max_age): every token of a
-- session carries the instant the login started it, and rotation copies it
-- forward, so refreshing can extend a refresh token but never the session
-- past session_started_at + session_max_age.
ALTER TABLE refresh_tokens ADD COLUMN session_started_at timestamptz;

-- Existing sessions started with their oldest stored token. (Tokens purged
-- by housekeeping, a week after they expired, make a long session look
-- younger than it is; at worst it lives that much longer, once.)
UPDATE refresh_tokens t
SET session_started_at = s.started
FROM (SELECT session_id, min(issued_at) AS started FROM refresh_tokens GROUP BY session_id) s
WHERE t.session_id = s.session_id;

ALTER TABLE refresh_tokens ALTER COLUMN session_started_at SET NOT NULL;
