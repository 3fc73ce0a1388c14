//! Revocation across processes: two gateways on one database, LISTEN/NOTIFY
//! and the full reload on start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;

/// Polls `check` on `app` until it answers 401, for at most `within`.
async fn rejected_within(app: &TestApp, token: &str, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() <= within {
        if app.get("/api/v1/auth/check", Some(token)).await.status == 401 {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// After logout-all on one process, the other rejects the token within 1 s.
#[tokio::test]
async fn logout_all_reaches_a_second_process_within_a_second() {
    let a = spawn_app().await;
    let b = start(a.db.clone(), a.keys.clone(), a.config.clone()).await;
    let (_, access, _) = a.user("alice").await;
    assert_eq!(b.get("/api/v1/auth/check", Some(&access)).await.status, 200);
    let r = a
        .send(Method::POST, "/api/v1/auth/logout-all", Some(&access), None)
        .await;
    assert_eq!(r.status, 204);
    let took = rejected_within(&b, &access, Duration::from_secs(1)).await;
    assert!(
        took.is_some(),
        "the second process still accepts the token after 1 s"
    );
}

/// Deleting a user on one process revokes its tokens on the other.
#[tokio::test]
async fn deletion_reaches_a_second_process() {
    let a = spawn_app().await;
    let b = start(a.db.clone(), a.keys.clone(), a.config.clone()).await;
    let (_, access, _) = a.user("alice").await;
    let r = a
        .send(
            Method::DELETE,
            "/api/v1/users/me",
            Some(&access),
            Some(serde_json::json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(
        rejected_within(&b, &access, Duration::from_secs(1))
            .await
            .is_some()
    );
}

/// A process started after the revocation loads it from the table.
#[tokio::test]
async fn a_new_process_loads_live_revocations() {
    let a = spawn_app().await;
    let (_, access, _) = a.user("alice").await;
    a.send(Method::POST, "/api/v1/auth/logout", Some(&access), None)
        .await;
    let c = start(a.db.clone(), a.keys.clone(), a.config.clone()).await;
    c.get("/api/v1/auth/check", Some(&access))
        .await
        .assert_problem(401, "invalid_token");
}

/// /check answers from memory: a gateway whose database is unreachable still
/// accepts a valid token (and /readyz says it is not ready).
#[tokio::test]
async fn check_never_touches_the_database() {
    let a = spawn_app().await;
    let (id, access, _) = a.user("alice").await;
    let mut config = a.config.clone();
    config.database.url = "postgresql://postgres@127.0.0.1:1/none".into();
    config.database.connect_timeout = Duration::from_millis(300);
    let offline = start(a.db.clone(), a.keys.clone(), config).await;
    offline
        .get("/readyz", None)
        .await
        .assert_problem(503, "not_ready");
    let r = offline.get("/api/v1/auth/check", Some(&access)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user_id"], id);
}

/// Housekeeping deletes expired revocations and long-expired refresh tokens,
/// and keeps live ones.
#[tokio::test]
async fn purges_remove_only_expired_rows() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("alice").await;
    app.send(Method::POST, "/api/v1/auth/logout", Some(&access), None)
        .await;
    app.tokens("alice").await;
    app.db.query(
        "INSERT INTO revocations (kind, subject, reason, expires_at)
         VALUES ('user', gen_random_uuid(), 'old', now() - interval '1 minute')",
    );
    app.db.query("UPDATE refresh_tokens SET expires_at = now() - interval '8 days' WHERE revoked_at IS NOT NULL");
    let (revocations, tokens) = app.db.with(|c| {
        (
            gateway::store::revocations::purge_expired(c).unwrap(),
            gateway::store::sessions::purge_expired(c, Duration::from_secs(7 * 86_400)).unwrap(),
        )
    });
    assert_eq!((revocations, tokens), (1, 1));
    assert_eq!(
        app.db.count("SELECT count(*) FROM revocations"),
        1,
        "the live logout revocation stays"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM refresh_tokens"),
        1,
        "the live session stays"
    );
}
