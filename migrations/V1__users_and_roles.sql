-- Users, roles and the grants between them.
-- Logins are unique case-insensitively: 'Alice' and 'alice' are the same account.
CREATE TABLE users (
    id             uuid        PRIMARY KEY,
    login          text        NOT NULL CHECK (login ~ '^[A-Za-z0-9._-]{3,64}$'),
    email          text,
    password_hash  text        NOT NULL,
    is_admin       boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    failed_logins  integer     NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until   timestamptz
);
-- Login lookup (login, signup uniqueness) and ordered listing / prefix search.
CREATE UNIQUE INDEX users_login_lower_key ON users (lower(login) text_pattern_ops);

CREATE TABLE roles (
    id          integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9_-]{1,64}$'),
    description text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_roles (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id    integer     NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, role_id)
);
-- "users holding role X" and the cascade when a role is deleted.
CREATE INDEX user_roles_role_id_idx ON user_roles (role_id);
