//! The `users` table (and the roles each user holds, read alongside).

use chrono::{DateTime, Utc};
use postgres::{GenericClient, Row};
use uuid::Uuid;

use super::{Page, decode_cursor, is_unique_violation};
use crate::error::{Error, Result};

/// A user as the API and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub login: String,
    pub email: Option<String>,
    /// The owner of `email` followed a link mailed to it.
    pub email_verified: bool,
    /// "en" or "ru": the language of the account's mail.
    pub locale: Option<String>,
    pub roles: Vec<String>,
    pub is_admin: bool,
    /// A confirmed TOTP factor guards the account's logins.
    pub mfa_enabled: bool,
    pub created_at: DateTime<Utc>,
}

/// What a login needs to decide.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub id: Uuid,
    pub login: String,
    /// None: an account made by a provider that has no password yet.
    pub password_hash: Option<String>,
    pub is_admin: bool,
}

const USER_COLUMNS: &str =
    "u.id, u.login, u.email, u.email_verified, u.locale, u.is_admin, u.created_at,
    EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.id AND m.confirmed_at IS NOT NULL)
        AS mfa_enabled,
    COALESCE((SELECT array_agg(r.name ORDER BY r.name) FROM user_roles ur
              JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id), '{}') AS roles";

fn user_from_row(row: &Row) -> User {
    User {
        id: row.get("id"),
        login: row.get("login"),
        email: row.get("email"),
        email_verified: row.get("email_verified"),
        locale: row.get("locale"),
        roles: row.get("roles"),
        is_admin: row.get("is_admin"),
        mfa_enabled: row.get("mfa_enabled"),
        created_at: row.get("created_at"),
    }
}

/// What [`create`] inserts.
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    pub login: &'a str,
    pub email: Option<&'a str>,
    /// An address the creator vouches for (an administrator from the CLI).
    pub email_verified: bool,
    pub locale: Option<&'a str>,
    /// None: no password (an account made by an identity provider).
    pub password_hash: Option<&'a str>,
    pub is_admin: bool,
}

/// Inserts a user. A login taken case-insensitively gives `Conflict(login_taken)`.
pub fn create(client: &mut impl GenericClient, new: NewUser<'_>) -> Result<User> {
    let NewUser {
        login,
        email,
        email_verified,
        locale,
        password_hash,
        is_admin,
    } = new;
    let email_verified = email_verified && email.is_some();
    let id = Uuid::new_v4();
    let row = client
        .query_one(
            "INSERT INTO users (id, login, email, password_hash, is_admin, email_verified, locale)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING created_at",
            &[
                &id,
                &login,
                &email,
                &password_hash,
                &is_admin,
                &email_verified,
                &locale,
            ],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::Conflict {
                    code: "login_taken",
                    detail: format!("login '{login}' already exists"),
                }
            } else {
                e.into()
            }
        })?;
    Ok(User {
        id,
        login: login.to_string(),
        email: email.map(str::to_string),
        email_verified,
        locale: locale.map(str::to_string),
        roles: Vec::new(),
        is_admin,
        mfa_enabled: false,
        created_at: row.get(0),
    })
}

pub fn find_credentials(
    client: &mut impl GenericClient,
    login: &str,
) -> Result<Option<Credentials>> {
    let row = client.query_opt(
        "SELECT id, login, password_hash, is_admin
         FROM users WHERE lower(login) = lower($1)",
        &[&login],
    )?;
    Ok(row.map(|r| Credentials {
        id: r.get(0),
        login: r.get(1),
        password_hash: r.get(2),
        is_admin: r.get(3),
    }))
}

/// The stored hash (None: no password), whether the user is an
/// administrator, and the login.
pub fn password_hash(
    client: &mut impl GenericClient,
    id: Uuid,
) -> Result<Option<(Option<String>, bool, String)>> {
    let row = client.query_opt(
        "SELECT password_hash, is_admin, login FROM users WHERE id = $1",
        &[&id],
    )?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}

pub fn get(client: &mut impl GenericClient, id: Uuid) -> Result<Option<User>> {
    let row = client.query_opt(
        &format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"),
        &[&id],
    )?;
    Ok(row.as_ref().map(user_from_row))
}

pub fn get_by_login(client: &mut impl GenericClient, login: &str) -> Result<Option<User>> {
    let row = client.query_opt(
        &format!("SELECT {USER_COLUMNS} FROM users u WHERE lower(u.login) = lower($1)"),
        &[&login],
    )?;
    Ok(row.as_ref().map(user_from_row))
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub login_prefix: Option<String>,
    pub role: Option<String>,
    pub admins_only: bool,
    pub cursor: Option<String>,
    pub limit: usize,
}

/// Users ordered by lower(login), keyset-paginated on it.
pub fn list(client: &mut impl GenericClient, filter: &UserFilter) -> Result<Page<User>> {
    let after = filter.cursor.as_deref().map(decode_cursor).transpose()?;
    let prefix = filter.login_prefix.as_deref().map(|p| {
        format!(
            "{}%",
            p.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let limit = (filter.limit + 1) as i64;
    let rows = client.query(
        &format!(
            "SELECT {USER_COLUMNS} FROM users u
             WHERE ($1::text IS NULL OR lower(u.login) > $1)
               AND ($2::text IS NULL OR lower(u.login) LIKE $2)
               AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM user_roles ur JOIN roles r ON r.id = ur.role_id
                                                WHERE ur.user_id = u.id AND r.name = $3))
               AND (NOT $4 OR u.is_admin)
             ORDER BY lower(u.login) LIMIT $5"
        ),
        &[&after, &prefix, &filter.role, &filter.admins_only, &limit],
    )?;
    let users = rows.iter().map(user_from_row).collect();
    Ok(Page::from_rows(users, filter.limit, |u| {
        u.login.to_lowercase()
    }))
}

/// Sets the password hash. Every outstanding password-reset link of the
/// user dies with the old password, whichever route changed it, and so
/// does a pending address change (whoever started it may have known only
/// the old password).
pub fn set_password(
    client: &mut impl GenericClient,
    id: Uuid,
    password_hash: &str,
) -> Result<bool> {
    let n = client.execute(
        "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1",
        &[&id, &password_hash],
    )?;
    super::email_tokens::revoke_all(client, id, super::email_tokens::Purpose::Reset)?;
    super::email_tokens::revoke_pending_changes(client, id)?;
    // A login's second step waits on the old password's check.
    super::mfa::drop_challenges(client, id)?;
    Ok(n == 1)
}

/// Makes `email` the user's address, verified (a verification link was
/// followed, or a reset link sent to it).
pub fn set_verified_email(client: &mut impl GenericClient, id: Uuid, email: &str) -> Result<bool> {
    let n = client.execute(
        "UPDATE users SET email = $2, email_verified = true, updated_at = now() WHERE id = $1",
        &[&id, &email],
    )?;
    Ok(n == 1)
}

pub fn set_locale(client: &mut impl GenericClient, id: Uuid, locale: &str) -> Result<bool> {
    let n = client.execute(
        "UPDATE users SET locale = $2, updated_at = now() WHERE id = $1",
        &[&id, &locale],
    )?;
    Ok(n == 1)
}

/// Users whose address is `email` (case-insensitively), at most `limit`.
pub fn find_by_email(
    client: &mut impl GenericClient,
    email: &str,
    limit: i64,
) -> Result<Vec<User>> {
    let rows = client.query(
        &format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE lower(u.email) = lower($1)
             ORDER BY u.created_at LIMIT $2"
        ),
        &[&email, &limit],
    )?;
    Ok(rows.iter().map(user_from_row).collect())
}

/// Deletes the user; roles, refresh tokens and history go with it (cascade).
pub fn delete(client: &mut impl GenericClient, id: Uuid) -> Result<bool> {
    Ok(client.execute("DELETE FROM users WHERE id = $1", &[&id])? == 1)
}
