//! The `roles` and `user_roles` tables.

use chrono::{DateTime, Utc};
use postgres::{GenericClient, Row};
use uuid::Uuid;

use super::is_unique_violation;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

fn role_from_row(r: &Row) -> Role {
    Role {
        name: r.get("name"),
        description: r.get("description"),
        created_at: r.get("created_at"),
    }
}

fn not_found(name: &str) -> Error {
    Error::NotFound {
        what: "role",
        name: name.to_string(),
    }
}

/// Checks a role name: lowercase `[a-z0-9_-]`, 1 to 64 characters.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!("role name {name:?} must be 1-64 characters of [a-z0-9_-]"),
        ))
    }
}

/// A name that is not a valid role name names no role: answer 404 without
/// asking the database (which refuses some such text, NUL for one, with an
/// error rather than an empty result).
fn existing(name: &str) -> Result<()> {
    validate_name(name).map_err(|_| not_found(name))
}

pub fn list(client: &mut impl GenericClient) -> Result<Vec<Role>> {
    let rows = client.query(
        "SELECT name, description, created_at FROM roles ORDER BY name",
        &[],
    )?;
    Ok(rows.iter().map(role_from_row).collect())
}

pub fn get(client: &mut impl GenericClient, name: &str) -> Result<Role> {
    existing(name)?;
    let row = client.query_opt(
        "SELECT name, description, created_at FROM roles WHERE name = $1",
        &[&name],
    )?;
    row.as_ref()
        .map(role_from_row)
        .ok_or_else(|| not_found(name))
}

pub fn create(client: &mut impl GenericClient, name: &str, description: &str) -> Result<Role> {
    validate_name(name)?;
    let row = client
        .query_one(
            "INSERT INTO roles (name, description) VALUES ($1, $2) RETURNING name, description, created_at",
            &[&name, &description],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::Conflict {
                    code: "role_exists",
                    detail: format!("role '{name}' already exists"),
                }
            } else {
                e.into()
            }
        })?;
    Ok(role_from_row(&row))
}

pub fn update_description(
    client: &mut impl GenericClient,
    name: &str,
    description: &str,
) -> Result<Role> {
    existing(name)?;
    let row = client.query_opt(
        "UPDATE roles SET description = $2 WHERE name = $1 RETURNING name, description, created_at",
        &[&name, &description],
    )?;
    row.as_ref()
        .map(role_from_row)
        .ok_or_else(|| not_found(name))
}

/// Deletes the role; it is removed from every user (cascade). Returns how many users held it.
pub fn delete(client: &mut impl GenericClient, name: &str) -> Result<i64> {
    existing(name)?;
    let row = client.query_opt(
        "WITH r AS (SELECT id FROM roles WHERE name = $1),
              held AS (SELECT count(*) AS n FROM user_roles WHERE role_id IN (SELECT id FROM r)),
              d AS (DELETE FROM roles WHERE id IN (SELECT id FROM r) RETURNING id)
         SELECT (SELECT n FROM held) FROM d",
        &[&name],
    )?;
    row.map(|r| r.get(0)).ok_or_else(|| not_found(name))
}

/// Grants `role` to `user_id`; granting a role already held changes nothing.
/// Returns whether the grant is new.
pub fn grant(client: &mut impl GenericClient, user_id: Uuid, role: &str) -> Result<bool> {
    let role_id = role_id(client, role)?;
    let n = client.execute(
        "INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&user_id, &role_id],
    )?;
    Ok(n == 1)
}

/// Takes `role` from `user_id`. Returns whether the user held it.
pub fn revoke(client: &mut impl GenericClient, user_id: Uuid, role: &str) -> Result<bool> {
    let role_id = role_id(client, role)?;
    let n = client.execute(
        "DELETE FROM user_roles WHERE user_id = $1 AND role_id = $2",
        &[&user_id, &role_id],
    )?;
    Ok(n == 1)
}

fn role_id(client: &mut impl GenericClient, name: &str) -> Result<i32> {
    existing(name)?;
    client
        .query_opt("SELECT id FROM roles WHERE name = $1", &[&name])?
        .map(|r| r.get(0))
        .ok_or_else(|| not_found(name))
}

#[derive(Debug, Clone)]
pub struct UserRole {
    pub name: String,
    pub description: String,
    pub granted_at: DateTime<Utc>,
}

pub fn of_user(client: &mut impl GenericClient, user_id: Uuid) -> Result<Vec<UserRole>> {
    let rows = client.query(
        "SELECT r.name, r.description, ur.granted_at FROM user_roles ur
         JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1 ORDER BY r.name",
        &[&user_id],
    )?;
    Ok(rows
        .iter()
        .map(|r| UserRole {
            name: r.get(0),
            description: r.get(1),
            granted_at: r.get(2),
        })
        .collect())
}
