-- Account recovery (issue 15): verified addresses, single-use tokens mailed
-- to users, and the outbox the mail sender drains.

-- An address is verified once its owner followed a verification link (or a
-- password-reset link sent to it). A user's locale picks the mail templates.
ALTER TABLE users
    ADD COLUMN email_verified boolean NOT NULL DEFAULT false,
    ADD COLUMN locale         text CHECK (locale IN ('en', 'ru'));

-- Single-use tokens mailed to a user: 256 random bits, only their SHA-256
-- stored. A verification token names the address it confirms (a changed
-- address stays here until confirmed); a reset token, the address it went to.
CREATE TABLE email_tokens (
    token_hash  bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     text        NOT NULL CHECK (purpose IN ('verify', 'reset')),
    email       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
-- A user's newest token of a purpose (superseding, the resend interval).
CREATE INDEX email_tokens_user_idx ON email_tokens (user_id, purpose, created_at DESC);
-- Housekeeping.
CREATE INDEX email_tokens_expires_at_idx ON email_tokens (expires_at);

-- Messages to send, written in the transaction of the action that causes
-- them. Senders claim due rows with FOR UPDATE SKIP LOCKED and a lease
-- (next_attempt_at moved forward), so several processes share one outbox and
-- a crashed sender's rows come back. A message is sent or, after
-- email.max_attempts (or a permanent refusal), failed: never dropped. The
-- bodies may hold a link with a token: they are cleared once sent.
CREATE TABLE email_outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text        NOT NULL,
    recipient       text        NOT NULL,
    subject         text        NOT NULL,
    body_text       text,
    body_html       text,
    status          text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX email_outbox_due_idx ON email_outbox (next_attempt_at) WHERE status = 'queued';
CREATE INDEX email_outbox_failed_idx ON email_outbox (id) WHERE status = 'failed';
CREATE INDEX email_outbox_sent_at_idx ON email_outbox (sent_at) WHERE status = 'sent';

-- Login history records resets and logins refused for an unverified address.
ALTER TABLE login_history DROP CONSTRAINT login_history_outcome_check;
ALTER TABLE login_history ADD CONSTRAINT login_history_outcome_check
    CHECK (outcome IN ('success', 'bad_password', 'unknown_login', 'locked',
                       'password_reset', 'email_not_verified'));

-- Password reset by address: no sequential scan per request.
CREATE INDEX users_email_lower_idx ON users (lower(email));
