//! The `email_outbox` table. A message is inserted in the transaction of the
//! action that causes it; senders claim due rows with `FOR UPDATE SKIP
//! LOCKED` and a lease, so several processes share the outbox and a crashed
//! sender's rows come back when the lease ends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::GenericClient;

use crate::error::Result;

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub kind: &'a str,
    pub recipient: &'a str,
    pub subject: &'a str,
    pub text: &'a str,
    pub html: &'a str,
}

pub fn enqueue(c: &mut impl GenericClient, m: &NewMessage<'_>) -> Result<i64> {
    let row = c.query_one(
        "INSERT INTO email_outbox (kind, recipient, subject, body_text, body_html)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
        &[&m.kind, &m.recipient, &m.subject, &m.text, &m.html],
    )?;
    Ok(row.get(0))
}

/// A message claimed for one delivery attempt (`attempts` counts it).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub attempts: i32,
}

/// Claims up to `limit` due messages, oldest first: each attempt is
/// counted and the row leased (not due) for `lease`.
pub fn claim(c: &mut impl GenericClient, limit: i64, lease: Duration) -> Result<Vec<Claimed>> {
    let rows = c.query(
        "UPDATE email_outbox o
         SET attempts = o.attempts + 1,
             next_attempt_at = now() + make_interval(secs => $2::float8)
         WHERE o.id IN (SELECT id FROM email_outbox
                        WHERE status = 'queued' AND next_attempt_at <= now()
                        ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING o.id, o.kind, o.recipient, o.subject,
                   COALESCE(o.body_text, ''), COALESCE(o.body_html, ''), o.attempts",
        &[&limit, &lease.as_secs_f64()],
    )?;
    let mut claimed: Vec<Claimed> = rows
        .iter()
        .map(|r| Claimed {
            id: r.get(0),
            kind: r.get(1),
            recipient: r.get(2),
            subject: r.get(3),
            text: r.get(4),
            html: r.get(5),
            attempts: r.get(6),
        })
        .collect();
    claimed.sort_by_key(|m| m.id);
    Ok(claimed)
}

/// The message went out: its bodies (which may hold a token) are dropped.
pub fn mark_sent(c: &mut impl GenericClient, id: i64) -> Result<()> {
    c.execute(
        "UPDATE email_outbox SET status = 'sent', sent_at = now(), last_error = NULL,
                body_text = NULL, body_html = NULL
         WHERE id = $1 AND status = 'queued'",
        &[&id],
    )?;
    Ok(())
}

/// An attempt failed: the message is due again after `retry_in`, or, with
/// None, failed for good (kept for `authgw email retry`).
pub fn mark_attempt_failed(
    c: &mut impl GenericClient,
    id: i64,
    error: &str,
    retry_in: Option<Duration>,
) -> Result<()> {
    match retry_in {
        Some(d) => c.execute(
            "UPDATE email_outbox SET last_error = $2,
                    next_attempt_at = now() + make_interval(secs => $3::float8)
             WHERE id = $1 AND status = 'queued'",
            &[&id, &error, &d.as_secs_f64()],
        )?,
        None => c.execute(
            "UPDATE email_outbox SET last_error = $2, status = 'failed'
             WHERE id = $1 AND status = 'queued'",
            &[&id, &error],
        )?,
    };
    Ok(())
}

/// A row as `authgw email outbox` lists it (no bodies).
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: i64,
    pub status: String,
    pub kind: String,
    pub recipient: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// The newest `limit` messages (only failed ones with `failed_only`).
pub fn list(c: &mut impl GenericClient, failed_only: bool, limit: i64) -> Result<Vec<Entry>> {
    let rows = c.query(
        "SELECT id, status, kind, recipient, attempts, last_error, created_at, next_attempt_at, sent_at
         FROM email_outbox WHERE (NOT $1 OR status = 'failed') ORDER BY id DESC LIMIT $2",
        &[&failed_only, &limit],
    )?;
    Ok(rows
        .iter()
        .map(|r| Entry {
            id: r.get(0),
            status: r.get(1),
            kind: r.get(2),
            recipient: r.get(3),
            attempts: r.get(4),
            last_error: r.get(5),
            created_at: r.get(6),
            next_attempt_at: r.get(7),
            sent_at: r.get(8),
        })
        .collect())
}

/// Queues failed (or queued) messages again, due now with fresh attempts:
/// message `id`, or every failed one. A sent message stays sent (its body
/// is gone). Returns how many were requeued.
pub fn requeue(c: &mut impl GenericClient, id: Option<i64>) -> Result<u64> {
    Ok(match id {
        Some(id) => c.execute(
            "UPDATE email_outbox SET status = 'queued', attempts = 0, next_attempt_at = now()
             WHERE id = $1 AND status IN ('failed', 'queued')",
            &[&id],
        )?,
        None => c.execute(
            "UPDATE email_outbox SET status = 'queued', attempts = 0, next_attempt_at = now()
             WHERE status = 'failed'",
            &[],
        )?,
    })
}

/// Whether message `id` exists (and its status).
pub fn status(c: &mut impl GenericClient, id: i64) -> Result<Option<String>> {
    Ok(
        c.query_opt("SELECT status FROM email_outbox WHERE id = $1", &[&id])?
            .map(|r| r.get(0)),
    )
}

/// What `/metrics` shows of the outbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub queued: i64,
    pub failed: i64,
    /// Age of the oldest queued message, seconds (0 when none).
    pub oldest_queued_secs: f64,
}

pub fn stats(c: &mut impl GenericClient) -> Result<Stats> {
    let row = c.query_one(
        "SELECT count(*) FILTER (WHERE status = 'queued'),
                count(*) FILTER (WHERE status = 'failed'),
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE status = 'queued')), 0)::float8
         FROM email_outbox WHERE status IN ('queued', 'failed')",
        &[],
    )?;
    Ok(Stats {
        queued: row.get(0),
        failed: row.get(1),
        oldest_queued_secs: row.get(2),
    })
}

/// Forgets sent messages after `age`.
pub fn purge_sent(c: &mut impl GenericClient, age: Duration) -> Result<u64> {
    Ok(c.execute(
        "DELETE FROM email_outbox
         WHERE status = 'sent' AND sent_at < now() - make_interval(secs => $1::float8)",
        &[&age.as_secs_f64()],
    )?)
}
