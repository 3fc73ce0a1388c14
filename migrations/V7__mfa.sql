-- Multi-factor authentication (issue 16): TOTP factors, recovery codes,
-- the challenges of two-step logins, and how each session authenticated.

-- One TOTP factor per user. secret_sealed is AES-256-GCM (nonce ||
-- ciphertext || tag) under a key derived from the server secret key_id
-- names (keys directory); the plaintext secret is never stored. A row with
-- confirmed_at NULL is an enrolment waiting for its first code. last_step is
-- the last RFC 6238 time step accepted: a code is never accepted twice.
CREATE TABLE mfa_totp (
    user_id       uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_sealed bytea       NOT NULL CHECK (octet_length(secret_sealed) > 28),
    key_id        text        NOT NULL,
    confirmed_at  timestamptz,
    last_step     bigint,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Single-use recovery codes: the SHA-256 of each (80 random bits), never the code.
CREATE TABLE mfa_recovery_codes (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea       NOT NULL CHECK (octet_length(code_hash) = 32),
    used_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, code_hash)
);

-- A login whose password was right, waiting for the second factor. Only the
-- SHA-256 of the challenge token is stored; it is single-use, expires, and
-- dies after its last allowed attempt. login and the client are the
-- attempt's, for the failure counters and the history.
CREATE TABLE mfa_challenges (
    token_hash  bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    login       text        NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ip          inet,
    user_agent  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX mfa_challenges_user_id_idx ON mfa_challenges (user_id);
CREATE INDEX mfa_challenges_expires_at_idx ON mfa_challenges (expires_at);

-- How the session's user authenticated (RFC 8176 amr), carried by every
-- token of the session like session_started_at (whose instant is auth_time).
ALTER TABLE refresh_tokens ADD COLUMN session_amr text[] NOT NULL DEFAULT '{pwd}';

-- The history says how a login authenticated, and the second step's outcomes.
ALTER TABLE login_history ADD COLUMN amr text[];
ALTER TABLE login_history DROP CONSTRAINT login_history_outcome_check;
ALTER TABLE login_history ADD CONSTRAINT login_history_outcome_check
    CHECK (outcome IN ('success', 'bad_password', 'unknown_login', 'locked',
                       'password_reset', 'email_not_verified',
                       'mfa_required', 'bad_mfa_code'));
