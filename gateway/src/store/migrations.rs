//! Schema migrations: `migrations/V{n}__{name}.sql`, embedded in the binary
//! at build time and applied with refinery.

use std::path::{Path, PathBuf};

use postgres::Client;

use crate::error::{Error, Result};

mod embedded {
    refinery::embed_migrations!("../migrations");
}

const HISTORY_TABLE: &str = "refinery_schema_history";

/// A migration known to the binary and whether the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub version: i32,
    pub name: String,
    pub applied: bool,
}

/// Applies every pending migration, each in its own transaction. Returns the
/// versions applied (empty when the schema was already current).
pub fn upgrade(client: &mut Client) -> Result<Vec<MigrationStatus>> {
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run(client)
        .map_err(|e| Error::Internal(format!("migration failed: {e}")))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| MigrationStatus {
            version: m.version(),
            name: m.name().to_string(),
            applied: true,
        })
        .collect())
}

/// Every embedded migration with its state. Read-only: it does not create
/// the history table (so `/readyz` never writes).
pub fn status(client: &mut Client) -> Result<Vec<MigrationStatus>> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])?
        .get(0);
    let applied: Vec<i32> = if exists {
        client
            .query(&format!("SELECT version FROM {HISTORY_TABLE}"), &[])?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    let runner = embedded::migrations::runner();
    let mut all: Vec<MigrationStatus> = runner
        .get_migrations()
        .iter()
        .map(|m| MigrationStatus {
            version: m.version(),
            name: m.name().to_string(),
            applied: applied.contains(&(m.version())),
        })
        .collect();
    all.sort_by_key(|m| m.version);
    Ok(all)
}

/// Names of the migrations the database still lacks.
pub fn pending(client: &mut Client) -> Result<Vec<String>> {
    Ok(status(client)?
        .into_iter()
        .filter(|m| !m.applied)
        .map(|m| format!("V{}__{}", m.version, m.name))
        .collect())
}

/// Writes the next numbered, empty migration into `dir` and returns its path.
pub fn new_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(Error::invalid(
            "NAME",
            format!("migration name {name:?} must be 1-64 characters of [a-z0-9_]"),
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Internal(format!(
            "cannot read migrations directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut last = 0;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().to_string();
        if let Some(n) = file
            .strip_prefix('V')
            .and_then(|rest| rest.split_once("__"))
            .and_then(|(n, _)| n.parse::<u32>().ok())
        {
            last = last.max(n);
        }
    }
    let path = dir.join(format!("V{}__{name}.sql", last + 1));
    let body = format!(
        "-- V{} {name}: write the SQL by hand, review it, then run `authgw db upgrade`.\n",
        last + 1
    );
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, body.as_bytes()))
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}
