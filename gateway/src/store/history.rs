//! The `login_history` table: every login attempt with its outcome.

use chrono::{DateTime, Utc};
use postgres::GenericClient;
use std::net::IpAddr;
use uuid::Uuid;

use super::sessions::ClientInfo;
use super::{Page, decode_id_cursor};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    BadPassword,
    UnknownLogin,
    Locked,
    /// The password was set through a reset link.
    PasswordReset,
    /// A correct password, refused until the address is verified.
    EmailNotVerified,
    /// A correct password; the login waits for its second factor.
    MfaRequired,
    /// A wrong, malformed or replayed second-factor code.
    BadMfaCode,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::BadPassword => "bad_password",
            Outcome::UnknownLogin => "unknown_login",
            Outcome::Locked => "locked",
            Outcome::PasswordReset => "password_reset",
            Outcome::EmailNotVerified => "email_not_verified",
            Outcome::MfaRequired => "mfa_required",
            Outcome::BadMfaCode => "bad_mfa_code",
        }
    }
}

pub fn record(
    client: &mut impl GenericClient,
    user_id: Option<Uuid>,
    login: &str,
    info: &ClientInfo,
    outcome: Outcome,
) -> Result<()> {
    client.execute(
        "INSERT INTO login_history (user_id, login, ip, user_agent, outcome) VALUES ($1, $2, $3, $4, $5)",
        &[&user_id, &login, &info.ip, &info.user_agent, &outcome.as_str()],
    )?;
    Ok(())
}

/// A successful login, with the methods it authenticated by (RFC 8176)
/// and the identity provider it came through (None: a password).
pub fn record_success(
    client: &mut impl GenericClient,
    user_id: Uuid,
    login: &str,
    info: &ClientInfo,
    amr: &[String],
    provider: Option<&str>,
) -> Result<()> {
    client.execute(
        "INSERT INTO login_history (user_id, login, ip, user_agent, outcome, amr, provider)
         VALUES ($1, $2, $3, $4, 'success', $5, $6)",
        &[
            &user_id,
            &login,
            &info.ip,
            &info.user_agent,
            &amr,
            &provider,
        ],
    )?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct LoginEvent {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub outcome: String,
    /// How a successful login authenticated (absent before MFA existed).
    pub amr: Option<Vec<String>>,
    /// The identity provider a login came through.
    pub provider: Option<String>,
}

/// The user's attempts, newest first.
pub fn page(
    client: &mut impl GenericClient,
    user_id: Uuid,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page<LoginEvent>> {
    let before = cursor.map(decode_id_cursor).transpose()?;
    let rows = client.query(
        "SELECT id, occurred_at, ip, user_agent, outcome, amr, provider FROM login_history
         WHERE user_id = $1 AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
        &[&user_id, &before, &((limit + 1) as i64)],
    )?;
    let events = rows
        .iter()
        .map(|r| LoginEvent {
            id: r.get(0),
            occurred_at: r.get(1),
            ip: r.get(2),
            user_agent: r.get(3),
            outcome: r.get(4),
            amr: r.get(5),
            provider: r.get(6),
        })
        .collect();
    Ok(Page::from_rows(events, limit, |e| e.id.to_string()))
}
