//! The `refresh_tokens` table. A session is the family of refresh tokens a
//! login starts; each refresh consumes one token and issues the next.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::GenericClient;
use uuid::Uuid;

use crate::error::Result;

/// Client details recorded with a session and in the login history.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// Serializes everything that issues or revokes refresh tokens of `user_id`
/// until the transaction ends: a refresh and a logout, logout-all, password
/// change, reuse detection or deletion of the same user run one after the
/// other, never interleaved. Take it first in the transaction, before any row
/// lock, so the order is the same everywhere (no deadlock). Re-entrant.
pub fn lock_user(client: &mut impl GenericClient, user_id: Uuid) -> Result<()> {
    client.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('authgw.user:' || $1::uuid::text, 0))",
        &[&user_id],
    )?;
    Ok(())
}

/// The session's absolute limits: a refresh token never outlives
/// `started_at + max_age`, whatever its own ttl.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    /// Each refresh token's own lifetime (`tokens.refresh_ttl`).
    pub ttl: Duration,
    /// The session's, from its login (`tokens.session_max_age`).
    pub max_age: Duration,
}

/// How a session's user authenticated: at its login, by which methods
/// (RFC 8176 `amr`). Every token of the session carries it unchanged;
/// `started_at` is the tokens' `auth_time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub started_at: DateTime<Utc>,
    pub amr: Vec<String>,
}

/// What [`issue`] stores a token for: a session starting now with these
/// methods, or the next token of a session that started earlier.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    New { amr: &'a [String] },
    Continue(&'a Origin),
}

/// Stores a new refresh token (its SHA-256 only) in `session_id`, and
/// returns the session's origin: the login instant and methods, carried
/// through rotations.
pub fn issue(
    client: &mut impl GenericClient,
    user_id: Uuid,
    session_id: Uuid,
    token_hash: &[u8],
    lifetime: Lifetime,
    start: Start<'_>,
    info: &ClientInfo,
) -> Result<Origin> {
    let (started_at, amr) = match start {
        Start::New { amr } => (None, amr),
        Start::Continue(origin) => (Some(origin.started_at), origin.amr.as_slice()),
    };
    let row = client.query_one(
        "INSERT INTO refresh_tokens
             (user_id, session_id, token_hash, session_started_at, session_amr, expires_at,
              user_agent, ip)
         SELECT $1, $2, $3, s.started, $9,
                least(now() + make_interval(secs => $4), s.started + make_interval(secs => $5)),
                $6, $7
         FROM (SELECT coalesce($8::timestamptz, now()) AS started) s
         RETURNING session_started_at, session_amr",
        &[
            &user_id,
            &session_id,
            &token_hash,
            &lifetime.ttl.as_secs_f64(),
            &lifetime.max_age.as_secs_f64(),
            &info.user_agent,
            &info.ip,
            &started_at,
            &amr,
        ],
    )?;
    Ok(Origin {
        started_at: row.get(0),
        amr: row.get(1),
    })
}

/// The user a refresh token belongs to, if any (no lock: the caller takes
/// [`lock_user`] with it, then [`consume`]s).
pub fn token_owner(client: &mut impl GenericClient, token_hash: &[u8]) -> Result<Option<Uuid>> {
    let row = client.query_opt(
        "SELECT user_id FROM refresh_tokens WHERE token_hash = $1",
        &[&token_hash],
    )?;
    Ok(row.map(|r| r.get(0)))
}

/// The user and session of a refresh token that could still refresh:
/// not revoked, not expired, and unused or used within `grace` (a tab that
/// raced a sibling's rotation). A consumed, expired or revoked token names
/// nothing: one that leaked long ago (a log, an old backup) must not be
/// able to end the user's sessions.
pub fn live_session_of_token(
    client: &mut impl GenericClient,
    token_hash: &[u8],
    grace: Duration,
) -> Result<Option<(Uuid, Uuid)>> {
    let row = client.query_opt(
        "SELECT user_id, session_id FROM refresh_tokens
         WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()
           AND (used_at IS NULL OR used_at > now() - make_interval(secs => $2))",
        &[&token_hash, &grace.as_secs_f64()],
    )?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// What presenting a refresh token amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    /// This call consumed the token: issue the next one in the same session,
    /// which started with `origin`.
    Rotated {
        user_id: Uuid,
        session_id: Uuid,
        origin: Origin,
    },
    /// Already consumed, within the grace period: a concurrent tab won, or
    /// the answer to the call that consumed it was lost. Its successor may
    /// be handed out again ([`successor`]).
    AlreadyRotated { session_id: Uuid },
    /// Already consumed, after the grace period: reuse, the session must die.
    Reused { user_id: Uuid, session_id: Uuid },
    /// Unknown, expired, revoked, past the session's `max_age`, or of a
    /// session with any revoked token.
    Invalid,
}

/// Consumes the token with `token_hash`. Exactly one of any number of
/// concurrent callers gets `Rotated`: the conditional UPDATE takes the row
/// lock, and the losers re-check `used_at IS NULL` after the winner commits.
/// A session with any revoked token is dead: none of its tokens rotates,
/// even one a revocation raced past. So is a session older than `max_age`.
/// Call it after [`lock_user`] of the token's user.
pub fn consume(
    client: &mut impl GenericClient,
    token_hash: &[u8],
    grace: Duration,
    max_age: Duration,
) -> Result<Consumed> {
    if let Some(row) = client.query_opt(
        "UPDATE refresh_tokens t SET used_at = now()
         WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.revoked_at IS NULL
           AND t.expires_at > now()
           AND t.session_started_at + make_interval(secs => $2) > now()
           AND NOT EXISTS (SELECT 1 FROM refresh_tokens r
                           WHERE r.session_id = t.session_id AND r.revoked_at IS NOT NULL)
         RETURNING t.user_id, t.session_id, t.session_started_at, t.session_amr",
        &[&token_hash, &max_age.as_secs_f64()],
    )? {
        return Ok(Consumed::Rotated {
            user_id: row.get(0),
            session_id: row.get(1),
            origin: Origin {
                started_at: row.get(2),
                amr: row.get(3),
            },
        });
    }
    let Some(row) = client.query_opt(
        "SELECT user_id, session_id, revoked_at IS NOT NULL, used_at IS NOT NULL,
                now() - used_at <= make_interval(secs => $2)
         FROM refresh_tokens WHERE token_hash = $1",
        &[&token_hash, &grace.as_secs_f64()],
    )?
    else {
        return Ok(Consumed::Invalid);
    };
    let (revoked, used, in_grace): (bool, bool, Option<bool>) =
        (row.get(2), row.get(3), row.get(4));
    Ok(match (revoked, used, in_grace) {
        (true, _, _) | (false, false, _) => Consumed::Invalid,
        (false, true, Some(true)) => Consumed::AlreadyRotated {
            session_id: row.get(1),
        },
        (false, true, _) => Consumed::Reused {
            user_id: row.get(0),
            session_id: row.get(1),
        },
    })
}

/// The state of a consumed token's successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Successor {
    /// `candidates[index]` is the successor and is still unused: the same
    /// token may be handed out again, in a session that started with `origin`.
    Live {
        index: usize,
        user_id: Uuid,
        origin: Origin,
    },
    /// The successor was itself rotated (the winning tab moved on), or none
    /// of the candidates is in the session (derived under a secret no longer
    /// in the keys directory, or issued before successors were derived).
    Gone,
    /// The successor is revoked or expired, or its session is dead.
    Dead,
}

/// Which of `candidates` (hashes of the successors a consumed token has under
/// each known secret) is its successor in `session_id`, and in what state.
/// Call it after [`lock_user`], with [`consume`]'s `AlreadyRotated`.
pub fn successor(
    client: &mut impl GenericClient,
    session_id: Uuid,
    candidates: &[Vec<u8>],
) -> Result<Successor> {
    let Some(row) = client.query_opt(
        "SELECT t.token_hash, t.user_id, t.used_at IS NOT NULL,
                t.revoked_at IS NULL AND t.expires_at > now()
                AND NOT EXISTS (SELECT 1 FROM refresh_tokens r
                                WHERE r.session_id = t.session_id AND r.revoked_at IS NOT NULL),
                t.session_started_at, t.session_amr
         FROM refresh_tokens t
         WHERE t.session_id = $1 AND t.token_hash = ANY($2)
         LIMIT 1",
        &[&session_id, &candidates],
    )?
    else {
        return Ok(Successor::Gone);
    };
    let (hash, user_id, used, alive): (Vec<u8>, Uuid, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    Ok(match candidates.iter().position(|c| *c == hash) {
        Some(_) if !alive => Successor::Dead,
        Some(_) if used => Successor::Gone,
        Some(index) => Successor::Live {
            index,
            user_id,
            origin: Origin {
                started_at: row.get(4),
                amr: row.get(5),
            },
        },
        None => Successor::Gone,
    })
}

/// Revokes every refresh token of the session.
pub fn revoke_session(client: &mut impl GenericClient, session_id: Uuid) -> Result<()> {
    client.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE session_id = $1 AND revoked_at IS NULL",
        &[&session_id],
    )?;
    Ok(())
}

/// The user a session belongs to, if it exists.
pub fn owner(client: &mut impl GenericClient, session_id: Uuid) -> Result<Option<Uuid>> {
    let row = client.query_opt(
        "SELECT user_id FROM refresh_tokens WHERE session_id = $1 LIMIT 1",
        &[&session_id],
    )?;
    Ok(row.map(|r| r.get(0)))
}

/// Revokes every session of `user_id` except `keep`, and returns the ids of
/// those that may still have live access tokens (a usable refresh token, or
/// a token issued within `access_window`), which the caller must revoke too.
pub fn revoke_user_sessions(
    client: &mut impl GenericClient,
    user_id: Uuid,
    keep: Option<Uuid>,
    access_window: Duration,
) -> Result<Vec<Uuid>> {
    let rows = client.query(
        "SELECT DISTINCT session_id FROM refresh_tokens
         WHERE user_id = $1 AND session_id IS DISTINCT FROM $2
           AND ((revoked_at IS NULL AND used_at IS NULL AND expires_at > now())
                OR issued_at > now() - make_interval(secs => $3))",
        &[&user_id, &keep, &access_window.as_secs_f64()],
    )?;
    client.execute(
        "UPDATE refresh_tokens SET revoked_at = now()
         WHERE user_id = $1 AND session_id IS DISTINCT FROM $2 AND revoked_at IS NULL",
        &[&user_id, &keep],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// An active session as the user sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// Sessions of `user_id` that still hold a usable refresh token, most recently used first.
pub fn active(client: &mut impl GenericClient, user_id: Uuid) -> Result<Vec<SessionInfo>> {
    let rows = client.query(
        "SELECT t.session_id, min(t.issued_at), max(t.issued_at),
                (array_agg(t.ip ORDER BY t.issued_at DESC, t.id DESC))[1],
                (array_agg(t.user_agent ORDER BY t.issued_at DESC, t.id DESC))[1]
         FROM refresh_tokens t
         WHERE t.user_id = $1 AND t.session_id IN (
             SELECT session_id FROM refresh_tokens
             WHERE user_id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now())
         GROUP BY t.session_id
         ORDER BY max(t.issued_at) DESC",
        &[&user_id],
    )?;
    Ok(rows
        .iter()
        .map(|r| SessionInfo {
            id: r.get(0),
            created_at: r.get(1),
            last_used_at: r.get(2),
            ip: r.get(3),
            user_agent: r.get(4),
        })
        .collect())
}

/// Deletes refresh tokens that expired more than `keep` ago (housekeeping).
pub fn purge_expired(client: &mut impl GenericClient, keep: Duration) -> Result<u64> {
    Ok(client.execute(
        "DELETE FROM refresh_tokens WHERE expires_at < now() - make_interval(secs => $1)",
        &[&keep.as_secs_f64()],
    )?)
}
