//! The `email_tokens` table: single-use tokens mailed to a user (address
//! verification, password reset). Only the SHA-256 of a token is stored; a
//! token dies when used, when it expires, or when a newer one of the same
//! purpose is issued to its user.

use std::time::Duration;

use postgres::GenericClient;
use uuid::Uuid;

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Verify,
    Reset,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Verify => "verify",
            Purpose::Reset => "reset",
        }
    }
}

/// A live token's user and the address it went to.
#[derive(Debug, Clone)]
pub struct Holder {
    pub user_id: Uuid,
    pub email: String,
}

/// Stores a new token for `user_id`; every older live token of the same
/// purpose dies.
pub fn issue(
    c: &mut impl GenericClient,
    user_id: Uuid,
    purpose: Purpose,
    email: &str,
    hash: &[u8],
    ttl: Duration,
) -> Result<()> {
    revoke_all(c, user_id, purpose)?;
    c.execute(
        "INSERT INTO email_tokens (token_hash, user_id, purpose, email, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5::float8))",
        &[
            &hash,
            &user_id,
            &purpose.as_str(),
            &email,
            &ttl.as_secs_f64(),
        ],
    )?;
    Ok(())
}

/// The live token with this hash, without using it up.
pub fn peek(c: &mut impl GenericClient, purpose: Purpose, hash: &[u8]) -> Result<Option<Holder>> {
    let row = c.query_opt(
        "SELECT user_id, email FROM email_tokens
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()",
        &[&hash, &purpose.as_str()],
    )?;
    Ok(row.map(|r| Holder {
        user_id: r.get(0),
        email: r.get(1),
    }))
}

/// Uses up the live token with this hash: one caller wins a race, the
/// others get None.
pub fn consume(
    c: &mut impl GenericClient,
    purpose: Purpose,
    hash: &[u8],
) -> Result<Option<Holder>> {
    let row = c.query_opt(
        "UPDATE email_tokens SET used_at = now()
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
         RETURNING user_id, email",
        &[&hash, &purpose.as_str()],
    )?;
    Ok(row.map(|r| Holder {
        user_id: r.get(0),
        email: r.get(1),
    }))
}

/// Kills every live token of `purpose` of the user (a newer token, a
/// password change, a changed address).
pub fn revoke_all(c: &mut impl GenericClient, user_id: Uuid, purpose: Purpose) -> Result<u64> {
    Ok(c.execute(
        "UPDATE email_tokens SET used_at = now()
         WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
        &[&user_id, &purpose.as_str()],
    )?)
}

/// Kills every verification link that would change the account's address
/// (a pending change): a password change or reset cancels it, so someone
/// who knew the old password cannot finish an address change after the
/// owner took the account back.
pub fn revoke_pending_changes(c: &mut impl GenericClient, user_id: Uuid) -> Result<u64> {
    Ok(c.execute(
        "UPDATE email_tokens t SET used_at = now() FROM users u
         WHERE t.user_id = $1 AND u.id = t.user_id AND t.purpose = 'verify'
           AND t.used_at IS NULL AND t.email IS DISTINCT FROM u.email",
        &[&user_id],
    )?)
}

/// How long ago the user's newest token of `purpose` was issued, by the
/// database's clock (the one that stamped it).
pub fn since_last_issued(
    c: &mut impl GenericClient,
    user_id: Uuid,
    purpose: Purpose,
) -> Result<Option<Duration>> {
    let row = c.query_one(
        "SELECT EXTRACT(EPOCH FROM now() - max(created_at))::float8
         FROM email_tokens WHERE user_id = $1 AND purpose = $2",
        &[&user_id, &purpose.as_str()],
    )?;
    Ok(row
        .get::<_, Option<f64>>(0)
        .map(|secs| Duration::from_secs_f64(secs.max(0.0))))
}

/// The address a live verification token would confirm when it is not the
/// account's current one: a change waiting for its confirmation.
pub fn pending_email(c: &mut impl GenericClient, user_id: Uuid) -> Result<Option<String>> {
    let row = c.query_opt(
        "SELECT t.email FROM email_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.user_id = $1 AND t.purpose = 'verify' AND t.used_at IS NULL
           AND t.expires_at > now() AND t.email IS DISTINCT FROM u.email
         ORDER BY t.created_at DESC LIMIT 1",
        &[&user_id],
    )?;
    Ok(row.map(|r| r.get(0)))
}

/// Forgets tokens a day after they died.
pub fn purge(c: &mut impl GenericClient) -> Result<u64> {
    Ok(c.execute(
        "DELETE FROM email_tokens
         WHERE expires_at < now() - interval '1 day' OR used_at < now() - interval '1 day'",
        &[],
    )?)
}
