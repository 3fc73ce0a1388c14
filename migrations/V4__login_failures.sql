-- Failed password checks, counted per (account, client) and per account.
-- An account is named by lower(login), whether it exists or not, so a lock
-- says nothing about which logins exist. A client is an IPv4 address or an
-- IPv6 /64 (stored as its network address), '::' when unknown.
-- Each check is counted here before the password is verified and the row is
-- deleted when it succeeds, so parallel guesses cannot outrun a lock.
CREATE TABLE login_failures (
    login          text        NOT NULL,
    client         inet        NOT NULL,
    failures       integer     NOT NULL CHECK (failures >= 0),
    locked_until   timestamptz,
    last_failed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (login, client)
);
-- Housekeeping forgets counters a day after their last failure.
CREATE INDEX login_failures_last_failed_at_idx ON login_failures (last_failed_at);

-- The same checks for one account from every client together: past a
-- threshold each check is slowed, never refused.
CREATE TABLE account_failures (
    login          text        PRIMARY KEY,
    failures       integer     NOT NULL CHECK (failures >= 0),
    last_failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_failures_last_failed_at_idx ON account_failures (last_failed_at);

-- The account-wide lock these replace: anyone could lock anyone out with it.
ALTER TABLE users DROP COLUMN failed_logins, DROP COLUMN locked_until;
