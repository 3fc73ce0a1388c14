//! The social-login tables: `user_identities` (accounts linked to provider
//! subjects), `oauth_flows` (flows between start and callback) and
//! `oauth_exchange_codes` (a finished flow's one-time code).

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::GenericClient;
use uuid::Uuid;

use super::sessions::ClientInfo;
use crate::error::{Error, Result};

/// A linked identity as the API shows it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

/// Serializes first logins of `(provider, subject)` until the transaction
/// ends: two tabs finishing the same new user's first login at once make
/// one account, not two (or a failed second).
pub fn lock_subject(c: &mut impl GenericClient, provider: &str, subject: &str) -> Result<()> {
    c.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('authgw.identity:' || $1 || ':' || $2, 0))",
        &[&provider, &subject],
    )?;
    Ok(())
}

/// Serializes the choice of a new account's login made from `base`: two
/// first logins both called "sam" get "sam" and "sam-xxxxxx", not a
/// uniqueness failure.
pub fn lock_new_login(c: &mut impl GenericClient, base: &str) -> Result<()> {
    c.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('authgw.new-login:' || lower($1), 0))",
        &[&base],
    )?;
    Ok(())
}

/// The user `(provider, subject)` is linked to.
pub fn owner(c: &mut impl GenericClient, provider: &str, subject: &str) -> Result<Option<Uuid>> {
    let row = c.query_opt(
        "SELECT user_id FROM user_identities WHERE provider = $1 AND subject = $2",
        &[&provider, &subject],
    )?;
    Ok(row.map(|r| r.get(0)))
}

/// Links `(provider, subject)` to `user_id`. An identity linked to anyone
/// already, or a second identity of the same provider for the user, is 409
/// `identity_already_linked`.
pub fn link(
    c: &mut impl GenericClient,
    user_id: Uuid,
    provider: &str,
    subject: &str,
    email: Option<&str>,
) -> Result<()> {
    let inserted = c.execute(
        "INSERT INTO user_identities (provider, subject, user_id, email) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        &[&provider, &subject, &user_id, &email],
    )?;
    if inserted == 1 {
        Ok(())
    } else {
        Err(Error::Conflict {
            code: "identity_already_linked",
            detail: format!(
                "this {provider} identity, or another {provider} identity of the account, is linked already"
            ),
        })
    }
}

/// Records a login through the identity (and the address it reported).
pub fn touch(
    c: &mut impl GenericClient,
    provider: &str,
    subject: &str,
    email: Option<&str>,
) -> Result<()> {
    c.execute(
        "UPDATE user_identities SET last_login_at = now(), email = coalesce($3, email)
         WHERE provider = $1 AND subject = $2",
        &[&provider, &subject, &email],
    )?;
    Ok(())
}

/// The user's identities, by provider.
pub fn list(c: &mut impl GenericClient, user_id: Uuid) -> Result<Vec<Identity>> {
    let rows = c.query(
        "SELECT provider, subject, email, created_at, last_login_at FROM user_identities
         WHERE user_id = $1 ORDER BY provider",
        &[&user_id],
    )?;
    Ok(rows
        .iter()
        .map(|r| Identity {
            provider: r.get(0),
            subject: r.get(1),
            email: r.get(2),
            created_at: r.get(3),
            last_login_at: r.get(4),
        })
        .collect())
}

/// Unlinks the user's identity at `provider`, unless it is the account's
/// last way in (no password, no other identity): 409 `last_login_method`.
/// 404 when not linked. Call it under the user's lock.
pub fn unlink(c: &mut impl GenericClient, user_id: Uuid, provider: &str) -> Result<Identity> {
    let row = c.query_one(
        "SELECT (SELECT password_hash IS NOT NULL FROM users WHERE id = $1),
                (SELECT count(*) FROM user_identities WHERE user_id = $1 AND provider <> $2)",
        &[&user_id, &provider],
    )?;
    let (has_password, others): (Option<bool>, i64) = (row.get(0), row.get(1));
    let Some(identity) = list(c, user_id)?
        .into_iter()
        .find(|i| i.provider == provider)
    else {
        return Err(Error::NotFound {
            what: "identity",
            name: provider.to_string(),
        });
    };
    if !has_password.unwrap_or(false) && others == 0 {
        return Err(Error::Conflict {
            code: "last_login_method",
            detail: format!(
                "{provider} is this account's only way to log in; set a password (password reset) or link another provider first"
            ),
        });
    }
    c.execute(
        "DELETE FROM user_identities WHERE user_id = $1 AND provider = $2",
        &[&user_id, &provider],
    )?;
    Ok(identity)
}

/// A flow as stored at its start.
#[derive(Debug, Clone)]
pub struct Flow {
    pub binding_hash: Vec<u8>,
    pub provider: String,
    pub redirect_uri: String,
    pub client_state: Option<String>,
    pub link_user_id: Option<Uuid>,
    /// The server secret the flow's verifier and nonce were derived under.
    pub key_id: String,
}

/// Stores a flow, valid for `ttl`.
pub fn start_flow(
    c: &mut impl GenericClient,
    state_hash: &[u8],
    flow: &Flow,
    ttl: Duration,
) -> Result<()> {
    c.execute(
        "INSERT INTO oauth_flows
             (state_hash, binding_hash, provider, redirect_uri, client_state, link_user_id, key_id, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))",
        &[
            &state_hash,
            &flow.binding_hash,
            &flow.provider,
            &flow.redirect_uri,
            &flow.client_state,
            &flow.link_user_id,
            &flow.key_id,
            &ttl.as_secs_f64(),
        ],
    )?;
    Ok(())
}

/// Takes the live flow with `state_hash` at `provider` started by the
/// browser whose binding cookie hashes to `binding_hash` (it can be taken
/// once: the row is deleted; a callback without the right cookie leaves it
/// for its own browser).
pub fn take_flow(
    c: &mut impl GenericClient,
    state_hash: &[u8],
    provider: &str,
    binding_hash: &[u8],
) -> Result<Option<Flow>> {
    let row = c.query_opt(
        "DELETE FROM oauth_flows
         WHERE state_hash = $1 AND provider = $2 AND binding_hash = $3 AND expires_at > now()
         RETURNING binding_hash, provider, redirect_uri, client_state, link_user_id, key_id",
        &[&state_hash, &provider, &binding_hash],
    )?;
    Ok(row.map(|r| Flow {
        binding_hash: r.get(0),
        provider: r.get(1),
        redirect_uri: r.get(2),
        client_state: r.get(3),
        link_user_id: r.get(4),
        key_id: r.get(5),
    }))
}

/// Stores a one-time exchange code for `user_id`, valid for `ttl`.
pub fn issue_code(
    c: &mut impl GenericClient,
    code_hash: &[u8],
    user_id: Uuid,
    provider: &str,
    amr: &[String],
    info: &ClientInfo,
    ttl: Duration,
) -> Result<()> {
    c.execute(
        "INSERT INTO oauth_exchange_codes (code_hash, user_id, provider, amr, ip, user_agent, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
        &[&code_hash, &user_id, &provider, &amr, &info.ip, &info.user_agent, &ttl.as_secs_f64()],
    )?;
    Ok(())
}

/// A redeemed exchange code.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub user_id: Uuid,
    pub provider: String,
    pub amr: Vec<String>,
}

/// Redeems the live code with `code_hash` (once: the row is deleted).
pub fn redeem_code(c: &mut impl GenericClient, code_hash: &[u8]) -> Result<Option<Redeemed>> {
    let row = c.query_opt(
        "DELETE FROM oauth_exchange_codes WHERE code_hash = $1 AND expires_at > now()
         RETURNING user_id, provider, amr",
        &[&code_hash],
    )?;
    Ok(row.map(|r| Redeemed {
        user_id: r.get(0),
        provider: r.get(1),
        amr: r.get(2),
    }))
}

/// The oldest account whose verified address is `email`
/// (case-insensitive), and whether it is an administrator.
pub fn verified_account_with_email(
    c: &mut impl GenericClient,
    email: &str,
) -> Result<Option<(Uuid, bool)>> {
    let row = c.query_opt(
        "SELECT id, is_admin FROM users WHERE lower(email) = lower($1) AND email_verified
         ORDER BY created_at LIMIT 1",
        &[&email],
    )?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Deletes expired flows and codes (housekeeping).
pub fn purge_expired(c: &mut impl GenericClient) -> Result<u64> {
    let flows = c.execute("DELETE FROM oauth_flows WHERE expires_at < now()", &[])?;
    let codes = c.execute(
        "DELETE FROM oauth_exchange_codes WHERE expires_at < now()",
        &[],
    )?;
    Ok(flows + codes)
}
