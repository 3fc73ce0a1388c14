//! Administrative actions, shared by the admin HTTP API and the CLI. Each
//! runs in one transaction with its `audit_log` row, so an action and its
//! audit record land together or not at all. Synchronous: the server calls
//! these through `Db::run`, the CLI directly.

use std::time::Duration;

use postgres::{Client, GenericClient};
use serde_json::json;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::revocations::{self, Kind, Revocation};
use crate::store::roles::{self, Role};
use crate::store::users::{self, User};
use crate::store::{audit, sessions};

fn user_not_found(id: impl ToString) -> Error {
    Error::NotFound {
        what: "user",
        name: id.to_string(),
    }
}

/// The user with `id`, or a 404 naming it.
pub fn require_user(client: &mut impl GenericClient, id: Uuid) -> Result<User> {
    users::get(client, id)?.ok_or_else(|| user_not_found(id))
}

/// The user with `login`, or a 404 naming it.
pub fn require_login(client: &mut impl GenericClient, login: &str) -> Result<User> {
    users::get_by_login(client, login)?.ok_or_else(|| user_not_found(login))
}

pub fn create_role(
    client: &mut Client,
    actor: &str,
    name: &str,
    description: &str,
) -> Result<Role> {
    let mut tx = client.transaction()?;
    let role = roles::create(&mut tx, name, description)?;
    audit::record(
        &mut tx,
        actor,
        "role.create",
        name,
        &json!({ "description": description }),
    )?;
    tx.commit()?;
    Ok(role)
}

pub fn update_role(
    client: &mut Client,
    actor: &str,
    name: &str,
    description: &str,
) -> Result<Role> {
    let mut tx = client.transaction()?;
    let role = roles::update_description(&mut tx, name, description)?;
    audit::record(
        &mut tx,
        actor,
        "role.update",
        name,
        &json!({ "description": description }),
    )?;
    tx.commit()?;
    Ok(role)
}

pub fn delete_role(client: &mut Client, actor: &str, name: &str) -> Result<()> {
    let mut tx = client.transaction()?;
    let holders = roles::delete(&mut tx, name)?;
    audit::record(
        &mut tx,
        actor,
        "role.delete",
        name,
        &json!({ "removed_from_users": holders }),
    )?;
    tx.commit()?;
    Ok(())
}

/// Grants or revokes `role` for `user`; idempotent either way.
pub fn set_role(
    client: &mut Client,
    actor: &str,
    user: &User,
    role: &str,
    grant: bool,
) -> Result<()> {
    let mut tx = client.transaction()?;
    let changed = if grant {
        roles::grant(&mut tx, user.id, role)?
    } else {
        roles::revoke(&mut tx, user.id, role)?
    };
    let action = if grant {
        "user.role.grant"
    } else {
        "user.role.revoke"
    };
    audit::record(
        &mut tx,
        actor,
        action,
        &user.id.to_string(),
        &json!({ "login": user.login, "role": role, "changed": changed }),
    )?;
    tx.commit()?;
    Ok(())
}

/// Deletes an ordinary user (an administrator gives 403) and revokes its tokens.
pub fn delete_user(
    client: &mut Client,
    actor: &str,
    id: Uuid,
    lifetime: Duration,
) -> Result<Vec<Revocation>> {
    let user = require_user(client, id)?;
    if user.is_admin {
        return Err(Error::Forbidden(
            "administrators can only be removed from the command line".into(),
        ));
    }
    let mut tx = client.transaction()?;
    let revoked = delete_user_in(&mut tx, id, "deleted by an administrator", lifetime)?;
    audit::record(
        &mut tx,
        actor,
        "user.delete",
        &id.to_string(),
        &json!({ "login": user.login }),
    )?;
    tx.commit()?;
    Ok(revoked)
}

/// Revokes every token of `id`, then deletes it (roles, sessions and history
/// cascade), in one transaction.
pub fn delete_user_tx(
    client: &mut Client,
    id: Uuid,
    reason: &str,
    lifetime: Duration,
) -> Result<Vec<Revocation>> {
    let mut tx = client.transaction()?;
    let revoked = delete_user_in(&mut tx, id, reason, lifetime)?;
    tx.commit()?;
    Ok(revoked)
}

fn delete_user_in(
    tx: &mut impl GenericClient,
    id: Uuid,
    reason: &str,
    lifetime: Duration,
) -> Result<Vec<Revocation>> {
    sessions::lock_user(tx, id)?;
    let revoked = revocations::revoke(tx, Kind::User, &[id], reason, lifetime)?;
    if !users::delete(tx, id)? {
        return Err(user_not_found(id));
    }
    Ok(revoked)
}

/// Inside a transaction: revokes every session of `user_id` except `keep`
/// (refresh tokens and, through `revocations`, access tokens).
pub fn end_user_sessions(
    tx: &mut impl GenericClient,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
    lifetime: Duration,
) -> Result<Vec<Revocation>> {
    sessions::lock_user(tx, user_id)?;
    let sids = sessions::revoke_user_sessions(tx, user_id, keep, lifetime)?;
    revocations::revoke(tx, Kind::Session, &sids, reason, lifetime)
}

/// Ends every session of `id` (refresh and access tokens).
pub fn logout_user(
    client: &mut Client,
    actor: &str,
    id: Uuid,
    lifetime: Duration,
) -> Result<Vec<Revocation>> {
    let user = require_user(client, id)?;
    let mut tx = client.transaction()?;
    let revoked = end_user_sessions(
        &mut tx,
        id,
        None,
        "logout-all by an administrator",
        lifetime,
    )?;
    audit::record(
        &mut tx,
        actor,
        "user.logout_all",
        &id.to_string(),
        &json!({ "login": user.login, "sessions": revoked.len() }),
    )?;
    tx.commit()?;
    Ok(revoked)
}

/// Creates an administrator. Only the CLI calls this: no HTTP endpoint can.
/// The operator vouches for its address: it starts verified.
pub fn create_admin(
    client: &mut Client,
    actor: &str,
    login: &str,
    email: Option<&str>,
    hash: &str,
) -> Result<User> {
    let mut tx = client.transaction()?;
    let user = users::create(
        &mut tx,
        users::NewUser {
            login,
            email,
            email_verified: true,
            locale: None,
            password_hash: Some(hash),
            is_admin: true,
        },
    )?;
    audit::record(
        &mut tx,
        actor,
        "admin.create",
        &user.id.to_string(),
        &json!({ "login": login }),
    )?;
    tx.commit()?;
    Ok(user)
}

/// Sets an administrator's password and ends its sessions.
pub fn set_admin_password(
    client: &mut Client,
    actor: &str,
    login: &str,
    hash: &str,
    lifetime: Duration,
) -> Result<()> {
    let user = require_login(client, login)?;
    if !user.is_admin {
        return Err(Error::invalid(
            "login",
            format!("'{login}' is not an administrator"),
        ));
    }
    let mut tx = client.transaction()?;
    sessions::lock_user(&mut tx, user.id)?;
    users::set_password(&mut tx, user.id, hash)?;
    end_user_sessions(
        &mut tx,
        user.id,
        None,
        "password set from the CLI",
        lifetime,
    )?;
    audit::record(
        &mut tx,
        actor,
        "admin.set_password",
        &user.id.to_string(),
        &json!({ "login": login }),
    )?;
    tx.commit()?;
    Ok(())
}

/// Removes the TOTP factor (confirmed or pending), the recovery codes and
/// the pending login challenges of `id`: a user who lost the authenticator
/// and the recovery codes logs in with the password alone again. 404 when
/// the user has no factor. With `mail`, the user's address is told.
pub fn reset_mfa(
    client: &mut Client,
    actor: &str,
    id: Uuid,
    mail: Option<&crate::mail::Composer>,
) -> Result<User> {
    let user = require_user(client, id)?;
    let mut tx = client.transaction()?;
    sessions::lock_user(&mut tx, id)?;
    if crate::store::mfa::factor(&mut tx, id)?.is_none() {
        return Err(Error::NotFound {
            what: "TOTP factor of user",
            name: user.login,
        });
    }
    let confirmed = crate::store::mfa::remove(&mut tx, id)?;
    audit::record(
        &mut tx,
        actor,
        "user.mfa_reset",
        &id.to_string(),
        &json!({ "login": user.login, "was_confirmed": confirmed }),
    )?;
    if let Some(mail) = mail {
        crate::recovery::queue_notice(mail, &mut tx, &user, crate::mail::Kind::MfaDisabled, &[])?;
    }
    tx.commit()?;
    Ok(User {
        mfa_enabled: false,
        ..user
    })
}

/// Unlinks `id`'s identity at `provider` (audited), unless it is the
/// account's last way in (409 `last_login_method`).
pub fn unlink_identity(client: &mut Client, actor: &str, id: Uuid, provider: &str) -> Result<()> {
    let user = require_user(client, id)?;
    let mut tx = client.transaction()?;
    sessions::lock_user(&mut tx, id)?;
    let identity = crate::store::identities::unlink(&mut tx, id, provider)?;
    audit::record(
        &mut tx,
        actor,
        "user.identity_unlink",
        &id.to_string(),
        &json!({ "login": user.login, "provider": provider, "subject": identity.subject }),
    )?;
    tx.commit()?;
    Ok(())
}
