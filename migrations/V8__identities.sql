-- Social login (issue 17): accounts linked to identities at OpenID Connect /
-- OAuth 2.0 providers, the flows in progress, and the one-time codes that
-- hand a finished flow's session to the frontend.

-- An account created by a provider has no password until the owner sets
-- one through the password-reset flow.
ALTER TABLE users ALTER COLUMN password_hash DROP NOT NULL;

-- Who an identity is: (provider, subject), never the email. One identity
-- per provider per user.
CREATE TABLE user_identities (
    provider      text        NOT NULL,
    subject       text        NOT NULL,
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,
    PRIMARY KEY (provider, subject),
    UNIQUE (user_id, provider)
);

-- A flow between /start and /callback: only the SHA-256 of its state and of
-- the browser binding (a cookie) is stored. The PKCE verifier and the nonce
-- are derived from the state under a server secret, so they are stored
-- nowhere. Single-use (deleted by the callback), expiring.
CREATE TABLE oauth_flows (
    state_hash   bytea       PRIMARY KEY CHECK (octet_length(state_hash) = 32),
    binding_hash bytea       NOT NULL CHECK (octet_length(binding_hash) = 32),
    provider     text        NOT NULL,
    redirect_uri text        NOT NULL,
    client_state text,
    -- NULL: a login; else the account the identity is to be linked to.
    link_user_id uuid        REFERENCES users (id) ON DELETE CASCADE,
    -- The server secret the verifier and the nonce were derived under.
    key_id       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX oauth_flows_expires_at_idx ON oauth_flows (expires_at);

-- The one-time code the callback hands the frontend in its redirect:
-- exchanged once, within a minute, for the session (POST /auth/oauth/exchange).
CREATE TABLE oauth_exchange_codes (
    code_hash  bytea       PRIMARY KEY CHECK (octet_length(code_hash) = 32),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider   text        NOT NULL,
    amr        text[]      NOT NULL,
    ip         inet,
    user_agent text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX oauth_exchange_codes_expires_at_idx ON oauth_exchange_codes (expires_at);

-- The history says which provider a login came through.
ALTER TABLE login_history ADD COLUMN provider text;

-- A login's second step keeps how its first step authenticated.
ALTER TABLE mfa_challenges ADD COLUMN amr text[] NOT NULL DEFAULT '{pwd}';
ALTER TABLE mfa_challenges ADD COLUMN provider text;
