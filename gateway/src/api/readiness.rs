//! `/readyz`: whether a load balancer should send this process traffic.
//!
//! Not ready until the revocation set has been loaded once (a process that
//! never heard of any revocation must not serve), nor while migrations are
//! pending. After that, a database outage alone does not make it unready:
//! when PostgreSQL is down, it is down for every instance, and failing
//! readiness would take all of them out of the load balancer at once, where
//! the proxy could go on serving from memory. A stale revocation set makes
//! it unready only with `revocation.when_stale = "unready"`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, problem};
use crate::config::WhenStale;
use crate::error::Error;
use crate::store::migrations;

/// The longest `/readyz` waits for the database: probes of load balancers
/// time out after about a second, and a slow answer counts as a failure.
const DB_CHECK_TIMEOUT: Duration = Duration::from_millis(750);

/// What the database said about the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbCheck {
    Current,
    Pending(Vec<String>),
    /// Unreachable, or no answer in time.
    Down(String),
    Failed(String),
}

/// What the revocation set looks like.
#[derive(Debug, Clone, Copy)]
pub struct SetState {
    pub loaded: bool,
    pub age: Duration,
    pub max_staleness: Duration,
    pub when_stale: WhenStale,
}

/// Ready (with warnings to show) or not (with the reason).
pub fn decide(db: &DbCheck, set: SetState) -> Result<Vec<String>, String> {
    let stale = set.age > set.max_staleness;
    let mut warnings = Vec::new();
    match db {
        DbCheck::Pending(names) => {
            return Err(format!(
                "migrations pending: {}; run `authgw db upgrade`",
                names.join(", ")
            ));
        }
        DbCheck::Failed(why) => return Err(format!("database check failed: {why}")),
        DbCheck::Down(why) if !set.loaded => return Err(format!("database unreachable: {why}")),
        DbCheck::Down(why) => {
            warnings.push(format!("database unreachable ({why}); serving from memory"))
        }
        DbCheck::Current => {}
    }
    if !set.loaded {
        return Err("revocation set not loaded yet".into());
    }
    if stale {
        let what = format!(
            "revocation set stale: last known current {:.1}s ago (revocation.max_staleness {:?})",
            set.age.as_secs_f64(),
            set.max_staleness
        );
        if set.when_stale == WhenStale::Unready {
            return Err(what);
        }
        warnings.push(what);
    }
    Ok(warnings)
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let check = state.auth.db.run(migrations::pending);
    let db = match tokio::time::timeout(DB_CHECK_TIMEOUT, check).await {
        Err(_) => DbCheck::Down(format!("no answer within {DB_CHECK_TIMEOUT:?}")),
        Ok(Err(Error::Unavailable(why))) => DbCheck::Down(why),
        Ok(Err(e)) => DbCheck::Failed(e.to_string()),
        Ok(Ok(pending)) if !pending.is_empty() => DbCheck::Pending(pending),
        Ok(Ok(_)) => DbCheck::Current,
    };
    let set = &state.auth.revocations;
    let revocation = &state.auth.config.revocation;
    let verdict = decide(
        &db,
        SetState {
            loaded: set.has_loaded(),
            age: set.sync_age(),
            max_staleness: revocation.max_staleness,
            when_stale: revocation.when_stale,
        },
    );
    match verdict {
        Ok(warnings) if warnings.is_empty() => {
            axum::Json(json!({ "status": "ready" })).into_response()
        }
        Ok(warnings) => {
            axum::Json(json!({ "status": "ready", "warnings": warnings })).into_response()
        }
        Err(reason) => problem::respond(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(loaded: bool, age: u64, when_stale: WhenStale) -> SetState {
        SetState {
            loaded,
            age: Duration::from_secs(age),
            max_staleness: Duration::from_secs(5),
            when_stale,
        }
    }

    /// A database outage alone leaves a loaded process ready with "serve";
    /// a process that never loaded the set is not ready.
    #[test]
    fn outage_alone_keeps_a_loaded_process_ready() {
        let down = DbCheck::Down("refused".into());
        let ok = decide(&down, set(true, 1, WhenStale::Serve));
        assert!(ok.as_ref().is_ok_and(|w| w.len() == 1), "{ok:?}");
        let stale = decide(&down, set(true, 60, WhenStale::Serve));
        assert!(stale.as_ref().is_ok_and(|w| w.len() == 2), "{stale:?}");
        let never = decide(&down, set(false, 60, WhenStale::Serve));
        assert!(never.is_err_and(|r| r.starts_with("database unreachable")));
    }

    /// With "unready", staleness alone is a 503; pending migrations always are.
    #[test]
    fn unready_when_stale_and_when_migrations_pend() {
        let stale = decide(&DbCheck::Current, set(true, 6, WhenStale::Unready));
        assert!(stale.is_err_and(|r| r.starts_with("revocation set stale")));
        let fresh = decide(&DbCheck::Current, set(true, 1, WhenStale::Unready));
        assert_eq!(fresh, Ok(vec![]));
        let pending = decide(
            &DbCheck::Pending(vec!["V4__x".into()]),
            set(true, 0, WhenStale::Serve),
        );
        assert!(pending.is_err_and(|r| r.contains("V4__x")));
    }
}
