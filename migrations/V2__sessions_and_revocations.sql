-- Refresh tokens. A login starts a session (session_id); every refresh consumes
-- the current token (used_at) and issues the next one in the same session.
-- Only the SHA-256 of the token is stored, never the token itself.
CREATE TABLE refresh_tokens (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id  uuid        NOT NULL,
    token_hash  bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    user_agent  text,
    ip          inet
);
-- Revoking or listing a session, and every session of a user.
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id, issued_at);
-- Purging expired tokens.
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);

-- What makes access tokens die before their exp: a whole session or a whole user.
-- Rows are kept until expires_at (the longest access-token lifetime after the
-- revocation); every authgw process mirrors the live rows in memory (LISTEN/NOTIFY).
CREATE TABLE revocations (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('session', 'user')),
    subject     uuid        NOT NULL,
    reason      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX revocations_expires_at_idx ON revocations (expires_at);

-- Every login attempt, successful or not. user_id is NULL for an unknown login.
CREATE TABLE login_history (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid        REFERENCES users (id) ON DELETE CASCADE,
    login       text        NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    ip          inet,
    user_agent  text,
    outcome     text        NOT NULL CHECK (outcome IN ('success', 'bad_password', 'unknown_login', 'locked'))
);
-- A user's history, newest first, keyset-paginated on id.
CREATE INDEX login_history_user_id_idx ON login_history (user_id, id DESC);
