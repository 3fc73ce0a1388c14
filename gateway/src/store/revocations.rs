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
pub fn revoke(
    client: &mut impl GenericClient,
    kind: Kind,
    subjects: &[Uuid],
    reason: &str,
    lifetime: Duration,
) -> Result<Vec<Revocation>> {
    let mut out = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let row = client.query_one(
            "INSERT INTO revocations (kind, subject, reason, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at",
            &[&kind.as_str(), subject, &reason, &lifetime.as_secs_f64()],
        )?;
        let revocation = Revocation {
            kind,
            subject: *subject,
            expires_at: row.get(0),
        };
        client.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &revocation.to_payload()],
        )?;
        out.push(revocation);
    }
    Ok(out)
}

/// Every revocation still in force.
pub fn live(client: &mut impl GenericClient) -> Result<Vec<Revocation>> {
    let rows = client.query(
        "SELECT kind, subject, expires_at FROM revocations WHERE expires_at > now()",
        &[],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(Revocation {
                kind: Kind::parse(r.get(0))?,
                subject: r.get(1),
                expires_at: r.get(2),
            })
        })
        .collect())
}

/// Deletes rows past their expiry (housekeeping).
pub fn purge_expired(client: &mut impl GenericClient) -> Result<u64> {
    Ok(client.execute("DELETE FROM revocations WHERE expires_at <= now()", &[])?)
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
