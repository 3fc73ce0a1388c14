//! The MFA tables: `mfa_totp` (one sealed TOTP secret per user),
//! `mfa_recovery_codes` (hashes of single-use codes) and `mfa_challenges`
//! (two-step logins waiting for their second factor). Callers that change a
//! factor or accept a code hold [`super::sessions::lock_user`] first.

use std::time::Duration;

use postgres::GenericClient;
use uuid::Uuid;

use super::sessions::ClientInfo;
use crate::error::{Error, Result};
use crate::mfa::seal::Sealed;

/// A user's TOTP factor as stored.
#[derive(Debug, Clone)]
pub struct Factor {
    pub sealed: Sealed,
    /// The first code was shown: the factor guards logins.
    pub confirmed: bool,
    /// The last time step accepted, if any.
    pub last_step: Option<u64>,
}

/// The user's factor, confirmed or pending.
pub fn factor(c: &mut impl GenericClient, user_id: Uuid) -> Result<Option<Factor>> {
    let row = c.query_opt(
        "SELECT secret_sealed, key_id, confirmed_at IS NOT NULL, last_step
         FROM mfa_totp WHERE user_id = $1",
        &[&user_id],
    )?;
    Ok(row.map(|r| Factor {
        sealed: Sealed {
            bytes: r.get(0),
            key_id: r.get(1),
        },
        confirmed: r.get(2),
        last_step: r
            .get::<_, Option<i64>>(3)
            .and_then(|s| u64::try_from(s).ok()),
    }))
}

/// Whether the user has a confirmed factor (logins need the second step).
pub fn enabled(c: &mut impl GenericClient, user_id: Uuid) -> Result<bool> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
        &[&user_id],
    )?
    .get(0))
}

/// Stores a pending factor, replacing an earlier pending one (an enrolment
/// started again). A confirmed factor is never replaced: 409
/// `mfa_already_enabled`.
pub fn start(c: &mut impl GenericClient, user_id: Uuid, sealed: &Sealed) -> Result<()> {
    let stored = c.query_opt(
        "INSERT INTO mfa_totp AS m (user_id, secret_sealed, key_id) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE
           SET secret_sealed = EXCLUDED.secret_sealed, key_id = EXCLUDED.key_id,
               last_step = NULL, created_at = now()
           WHERE m.confirmed_at IS NULL
         RETURNING user_id",
        &[&user_id, &sealed.bytes, &sealed.key_id],
    )?;
    stored.map(|_| ()).ok_or_else(already_enabled)
}

pub fn already_enabled() -> Error {
    Error::Conflict {
        code: "mfa_already_enabled",
        detail: "a TOTP factor is already enabled; disable it before enrolling another".into(),
    }
}

/// Confirms the pending factor with the step of its first code.
pub fn confirm(c: &mut impl GenericClient, user_id: Uuid, step: u64) -> Result<bool> {
    let step = i64::try_from(step).map_err(Error::internal)?;
    Ok(c.execute(
        "UPDATE mfa_totp SET confirmed_at = now(), last_step = $2
         WHERE user_id = $1 AND confirmed_at IS NULL",
        &[&user_id, &step],
    )? == 1)
}

/// Records `step` as the last one accepted; false (refuse the code) when a
/// step at or after it was accepted already: a replay, or a race lost to
/// the same code.
pub fn accept_step(c: &mut impl GenericClient, user_id: Uuid, step: u64) -> Result<bool> {
    let step = i64::try_from(step).map_err(Error::internal)?;
    Ok(c.execute(
        "UPDATE mfa_totp SET last_step = $2
         WHERE user_id = $1 AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < $2)",
        &[&user_id, &step],
    )? == 1)
}

/// Stores the factor's secret sealed again (under the newest server secret).
pub fn reseal(c: &mut impl GenericClient, user_id: Uuid, sealed: &Sealed) -> Result<()> {
    c.execute(
        "UPDATE mfa_totp SET secret_sealed = $2, key_id = $3 WHERE user_id = $1",
        &[&user_id, &sealed.bytes, &sealed.key_id],
    )?;
    Ok(())
}

/// Removes the user's factor, recovery codes and pending challenges;
/// whether there was a confirmed factor.
pub fn remove(c: &mut impl GenericClient, user_id: Uuid) -> Result<bool> {
    let confirmed = c
        .query_opt(
            "DELETE FROM mfa_totp WHERE user_id = $1 RETURNING confirmed_at IS NOT NULL",
            &[&user_id],
        )?
        .is_some_and(|r| r.get(0));
    c.execute(
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
        &[&user_id],
    )?;
    drop_challenges(c, user_id)?;
    Ok(confirmed)
}

/// Replaces the user's recovery codes with `hashes`.
pub fn replace_recovery_codes(
    c: &mut impl GenericClient,
    user_id: Uuid,
    hashes: &[Vec<u8>],
) -> Result<()> {
    c.execute(
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
        &[&user_id],
    )?;
    c.execute(
        "INSERT INTO mfa_recovery_codes (user_id, code_hash) SELECT $1, unnest($2::bytea[])",
        &[&user_id, &hashes],
    )?;
    Ok(())
}

/// Uses the code with `hash` once; false when unknown or used.
pub fn use_recovery_code(c: &mut impl GenericClient, user_id: Uuid, hash: &[u8]) -> Result<bool> {
    Ok(c.execute(
        "UPDATE mfa_recovery_codes SET used_at = now()
         WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
        &[&user_id, &hash],
    )? == 1)
}

/// Unused recovery codes of the user.
pub fn recovery_codes_left(c: &mut impl GenericClient, user_id: Uuid) -> Result<i64> {
    Ok(c.query_one(
        "SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        &[&user_id],
    )?
    .get(0))
}

/// How a login's first step authenticated: its `amr`, and the identity
/// provider it came through (None: a password).
#[derive(Debug, Clone, Copy)]
pub struct FirstStep<'a> {
    pub amr: &'a [String],
    pub provider: Option<&'a str>,
}

/// Stores a login's challenge (its hash), valid for `ttl`.
pub fn create_challenge(
    c: &mut impl GenericClient,
    token_hash: &[u8],
    user_id: Uuid,
    login: &str,
    info: &ClientInfo,
    ttl: Duration,
    first: FirstStep<'_>,
) -> Result<()> {
    c.execute(
        "INSERT INTO mfa_challenges (token_hash, user_id, login, ip, user_agent, expires_at, amr, provider)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7, $8)",
        &[
            &token_hash,
            &user_id,
            &login,
            &info.ip,
            &info.user_agent,
            &ttl.as_secs_f64(),
            &first.amr,
            &first.provider,
        ],
    )?;
    Ok(())
}

/// A challenge that took one more attempt.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub user_id: Uuid,
    pub login: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// The first step's `amr` and provider.
    pub amr: Vec<String>,
    pub provider: Option<String>,
}

/// Counts one attempt at the challenge with `token_hash`: None when it is
/// unknown, expired, or has had `max_attempts` already. The count is taken
/// by one UPDATE, so parallel attempts cannot exceed it.
pub fn attempt_challenge(
    c: &mut impl GenericClient,
    token_hash: &[u8],
    max_attempts: u32,
) -> Result<Option<Challenge>> {
    let max = i32::try_from(max_attempts).unwrap_or(i32::MAX);
    let row = c.query_opt(
        "UPDATE mfa_challenges SET attempts = attempts + 1
         WHERE token_hash = $1 AND expires_at > now() AND attempts < $2
         RETURNING user_id, login, attempts, amr, provider",
        &[&token_hash, &max],
    )?;
    Ok(row.map(|r| Challenge {
        user_id: r.get(0),
        login: r.get(1),
        attempts: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
        amr: r.get(3),
        provider: r.get(4),
    }))
}

/// Whether the challenge is still there (under the user's lock: a racing
/// attempt that won deleted it).
pub fn challenge_exists(c: &mut impl GenericClient, token_hash: &[u8]) -> Result<bool> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM mfa_challenges WHERE token_hash = $1 AND expires_at > now())",
        &[&token_hash],
    )?
    .get(0))
}

/// Ends one challenge (used, or out of attempts).
pub fn end_challenge(c: &mut impl GenericClient, token_hash: &[u8]) -> Result<()> {
    c.execute(
        "DELETE FROM mfa_challenges WHERE token_hash = $1",
        &[&token_hash],
    )?;
    Ok(())
}

/// Ends every pending challenge of the user (its password changed, its
/// factor was removed).
pub fn drop_challenges(c: &mut impl GenericClient, user_id: Uuid) -> Result<()> {
    c.execute("DELETE FROM mfa_challenges WHERE user_id = $1", &[&user_id])?;
    Ok(())
}

/// Deletes expired challenges (housekeeping).
pub fn purge_expired(c: &mut impl GenericClient) -> Result<u64> {
    Ok(c.execute("DELETE FROM mfa_challenges WHERE expires_at < now()", &[])?)
}
