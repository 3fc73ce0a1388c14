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
    pub roles: Vec<String>,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

/// What a login needs to decide.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub id: Uuid,
    pub login: String,
    pub password_hash: String,
    pub is_admin: bool,
}

const USER_COLUMNS: &str = "u.id, u.login, u.email, u.is_admin, u.created_at,
    COALESCE((SELECT array_agg(r.name ORDER BY r.name) FROM user_roles ur
              JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id), '{}') AS roles";

fn user_from_row(row: &Row) -> User {
    User {
        id: row.get("id"),
        login: row.get("login"),
        email: row.get("email"),
        roles: row.get("roles"),
        is_admin: row.get("is_admin"),
        created_at: row.get("created_at"),
    }
}

/// Inserts a user. A login taken case-insensitively gives `Conflict(login_taken)`.
pub fn create(
    client: &mut impl GenericClient,
    login: &str,
    email: Option<&str>,
    password_hash: &str,
    is_admin: bool,
) -> Result<User> {
    let id = Uuid::new_v4();
    let row = client
        .query_one(
            "INSERT INTO users (id, login, email, password_hash, is_admin)
             VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
            &[&id, &login, &email, &password_hash, &is_admin],
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
        roles: Vec::new(),
        is_admin,
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

/// The stored hash, whether the user is an administrator, and the login.
pub fn password_hash(
    client: &mut impl GenericClient,
    id: Uuid,
) -> Result<Option<(String, bool, String)>> {
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

pub fn set_password(
    client: &mut impl GenericClient,
    id: Uuid,
    password_hash: &str,
) -> Result<bool> {
    let n = client.execute(
        "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1",
        &[&id, &password_hash],
    )?;
    Ok(n == 1)
}

/// Deletes the user; roles, refresh tokens and history go with it (cascade).
pub fn delete(client: &mut impl GenericClient, id: Uuid) -> Result<bool> {
    Ok(client.execute("DELETE FROM users WHERE id = $1", &[&id])? == 1)
}
