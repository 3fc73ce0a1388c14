//! Revocation across processes: two gateways on one database, LISTEN/NOTIFY
//! and the full reload on start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::pgproxy::PgProxy;
use common::*;
use gateway::config::{Config, WhenStale};
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

/// `authgw_revocation_sync_age_seconds` as the admin listener exports it.
async fn sync_age(app: &TestApp) -> f64 {
    let metrics = app.metrics_text().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("authgw_revocation_sync_age_seconds "))
        .expect("the gauge is exported")
        .trim()
        .parse()
        .unwrap()
}

/// Polls `probe` every 100 ms until it yields a value, for at most `within`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    within: Duration,
    mut probe: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(v) = probe().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A second gateway on `app`'s database and keys whose connections all pass
/// through a relay the test can break; `tweak` adjusts its config.
async fn behind_relay(app: &TestApp, tweak: impl FnOnce(&mut Config)) -> (TestApp, PgProxy) {
    let relay = PgProxy::start(&app.db.url).await;
    let mut config = app.config.clone();
    config.database.url = relay.url(&app.db.url);
    tweak(&mut config);
    let relayed = start(app.db.clone(), app.keys.clone(), config).await;
    let r = relayed.get("/readyz", None).await;
    assert_eq!(
        r.status, 200,
        "the relayed gateway starts ready: {}",
        r.body
    );
    (relayed, relay)
}

/// A LISTEN connection that goes silent without closing (a hung server, a
/// route dropped without a reset) is noticed by its probe's deadline and
/// replaced: a logout made meanwhile on another process takes effect here
/// within 10 s. Without the probe deadline the listener waited forever.
#[tokio::test]
async fn a_silent_listen_connection_is_replaced_within_ten_seconds() {
    let direct = spawn_app().await;
    let (relayed, relay) = behind_relay(&direct, |_| {}).await;
    let (_, access, _) = direct.user("alice").await;
    assert_eq!(
        relayed
            .get("/api/v1/auth/check", Some(&access))
            .await
            .status,
        200
    );
    relay.freeze_existing();
    let r = direct
        .send(Method::POST, "/api/v1/auth/logout", Some(&access), None)
        .await;
    assert_eq!(r.status, 204);
    let took = rejected_within(&relayed, &access, Duration::from_secs(10)).await;
    assert!(
        took.is_some(),
        "the revocation never reached the relayed process"
    );
    eprintln!("silent connection replaced; token rejected after {took:?}");
}

/// With `when_stale = "unready"`, losing the database makes the sync-age
/// gauge grow past `max_staleness` and `/readyz` answer 503 saying the
/// revocation set is stale; when the database is back, it is ready again.
#[tokio::test]
async fn a_stale_set_makes_an_unready_instance_leave_and_come_back() {
    let direct = spawn_app().await;
    let (app, relay) = behind_relay(&direct, |c| {
        c.revocation.max_staleness = Duration::from_secs(1);
        c.revocation.when_stale = WhenStale::Unready;
    })
    .await;
    assert!(sync_age(&app).await < 1.0);
    relay.down();
    let stale = eventually(Duration::from_secs(10), || async {
        let r = app.get("/readyz", None).await;
        (r.status == 503).then_some(r)
    })
    .await
    .expect("still ready 10 s into the outage");
    stale.assert_problem(503, "not_ready");
    let detail = stale.body["detail"].as_str().unwrap();
    assert!(detail.starts_with("revocation set stale"), "{detail}");
    let first = sync_age(&app).await;
    assert!(first > 1.0, "gauge {first}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sync_age(&app).await > first,
        "the gauge grows while cut off"
    );
    relay.up();
    let back = eventually(Duration::from_secs(15), || async {
        (app.get("/readyz", None).await.status == 200).then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "not ready 15 s after the database came back"
    );
    assert!(sync_age(&app).await < 1.0);
}

/// With the default `when_stale = "serve"`, a database outage does not make
/// a loaded instance unready (in a real outage every instance would leave
/// the load balancer at once): `/readyz` stays 200 and lists the outage and
/// the stale set as warnings, and tokens are still checked from memory.
#[tokio::test]
async fn readiness_survives_a_database_outage_when_serving() {
    let direct = spawn_app().await;
    let (app, relay) = behind_relay(&direct, |c| {
        c.revocation.max_staleness = Duration::from_secs(1);
    })
    .await;
    assert_eq!(app.config.revocation.when_stale, WhenStale::Serve);
    let (_, access, _) = direct.user("alice").await;
    relay.down();
    let age = eventually(Duration::from_secs(10), || async {
        let age = sync_age(&app).await;
        (age > 1.5).then_some(age)
    })
    .await;
    assert!(age.is_some(), "the gauge did not grow past max_staleness");
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "ready");
    assert_schema(&r.body, "Health");
    let warnings = r.body["warnings"].to_string();
    assert!(warnings.contains("database unreachable"), "{warnings}");
    assert!(warnings.contains("revocation set stale"), "{warnings}");
    let check = app.get("/api/v1/auth/check", Some(&access)).await;
    assert_eq!(check.status, 200, "{}", check.body);
}
