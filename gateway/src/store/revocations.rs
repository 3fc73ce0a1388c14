//! The `revocations` table and its NOTIFY channel: what makes access tokens
//! die before their `exp`. Every process mirrors the live rows in memory.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use postgres::GenericClient;
use uuid::Uuid;

use crate::error::Result;

/// The channel every authgw process LISTENs on.
pub const CHANNEL: &str = "authgw_revocations";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Every access token of one session (`sid`).
    Session,
    /// Every access token of one user (`sub`).
    User,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::User => "user",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "session" => Some(Kind::Session),
            "user" => Some(Kind::User),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub kind: Kind,
    pub subject: Uuid,
    pub expires_at: DateTime<Utc>,
}

impl Revocation {
    /// The NOTIFY payload: `kind:subject:expires_at_unix`.
    pub fn to_payload(&self) -> String {
        format!(
            "{}:{}:{}",
            self.kind.as_str(),
            self.subject,
            self.expires_at.timestamp()
        )
    }

    pub fn from_payload(payload: &str) -> Option<Self> {
        let mut parts = payload.splitn(3, ':');
        let kind = Kind::parse(parts.next()?)?;
        let subject = parts.next()?.parse().ok()?;
        let expires_at = Utc.timestamp_opt(parts.next()?.parse().ok()?, 0).single()?;
        Some(Self {
            kind,
            subject,
            expires_at,
        })
    }
}

/// Records revocations of `subjects` (kept for `lifetime`) and notifies every
/// process. Inside a transaction the notification goes out at commit.
///
/// The expiry is reckoned on this process's clock, the one that stamps the
/// access tokens' `exp` and that every set compares against, never the
/// database's: a database clock behind ours would otherwise let a revocation
/// lapse while the tokens it names still verify.
pub fn revoke(
    client: &mut impl GenericClient,
    kind: Kind,
    subjects: &[Uuid],
    reason: &str,
    lifetime: Duration,
) -> Result<Vec<Revocation>> {
    let mut out = Vec::with_capacity(subjects.len());
    let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX);
    let expires_at = Utc::now()
        .checked_add_signed(lifetime)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    for subject in subjects {
        client.execute(
            "INSERT INTO revocations (kind, subject, reason, expires_at) VALUES ($1, $2, $3, $4)",
            &[&kind.as_str(), subject, &reason, &expires_at],
        )?;
        let revocation = Revocation {
            kind,
            subject: *subject,
            expires_at,
        };
        client.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &revocation.to_payload()],
        )?;
        out.push(revocation);
    }
    Ok(out)
}

/// Every revocation still in force at `now` (this process's clock, see
/// [`revoke`]); the parameter is `$1`.
pub const LIVE_SQL: &str =
    "SELECT kind, subject, expires_at FROM revocations WHERE expires_at > $1";

/// A row of [`LIVE_SQL`]; `None` for an unknown kind.
pub fn from_row(r: &postgres::Row) -> Option<Revocation> {
    Some(Revocation {
        kind: Kind::parse(r.get(0))?,
        subject: r.get(1),
        expires_at: r.get(2),
    })
}

/// Every revocation still in force.
pub fn live(client: &mut impl GenericClient) -> Result<Vec<Revocation>> {
    let rows = client.query(LIVE_SQL, &[&Utc::now()])?;
    Ok(rows.iter().filter_map(from_row).collect())
}

/// Deletes rows past their expiry (housekeeping), on this process's clock.
pub fn purge_expired(client: &mut impl GenericClient) -> Result<u64> {
    Ok(client.execute(
        "DELETE FROM revocations WHERE expires_at <= $1",
        &[&Utc::now()],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload survives the round trip, and garbage is ignored, not a panic.
    #[test]
    fn payload_round_trip() {
        let r = Revocation {
            kind: Kind::Session,
            subject: Uuid::new_v4(),
            expires_at: Utc
                .timestamp_opt(1_900_000_000, 0)
                .single()
                .unwrap_or_default(),
        };
        assert_eq!(Revocation::from_payload(&r.to_payload()), Some(r));
        assert_eq!(Revocation::from_payload("nonsense"), None);
        assert_eq!(Revocation::from_payload("user:not-a-uuid:1"), None);
    }
}
