//! The `audit_log` table: a row for every administrative action.

use chrono::{DateTime, Utc};
use postgres::GenericClient;

use super::{Page, decode_id_cursor};
use crate::error::Result;

pub fn record(
    client: &mut impl GenericClient,
    actor: &str,
    action: &str,
    target: &str,
    details: &serde_json::Value,
) -> Result<()> {
    client.execute(
        "INSERT INTO audit_log (actor, action, target, details) VALUES ($1, $2, $3, $4)",
        &[&actor, &action, &target, details],
    )?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub cursor: Option<String>,
    pub limit: usize,
}

/// Entries newest first.
pub fn page(client: &mut impl GenericClient, filter: &AuditFilter) -> Result<Page<AuditEntry>> {
    let before = filter.cursor.as_deref().map(decode_id_cursor).transpose()?;
    let rows = client.query(
        "SELECT id, actor, action, target, details, at FROM audit_log
         WHERE ($1::bigint IS NULL OR id < $1)
           AND ($2::text IS NULL OR actor = $2)
           AND ($3::text IS NULL OR action = $3)
         ORDER BY id DESC LIMIT $4",
        &[
            &before,
            &filter.actor,
            &filter.action,
            &((filter.limit + 1) as i64),
        ],
    )?;
    let entries = rows
        .iter()
        .map(|r| AuditEntry {
            id: r.get(0),
            actor: r.get(1),
            action: r.get(2),
            target: r.get(3),
            details: r.get(4),
            at: r.get(5),
        })
        .collect();
    Ok(Page::from_rows(entries, filter.limit, |e| e.id.to_string()))
}
