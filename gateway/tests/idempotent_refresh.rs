//! Idempotent refresh (issue 19): a refresh token's successor is derived
//! from it under a server secret, so racing tabs and a retry after a lost
//! answer get the same successor within `tokens.refresh_reuse_grace`, with no
//! second rotation in the table; after the grace a second use is theft.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Rotations in the table: consumed tokens.
fn rotations(app: &TestApp) -> i64 {
    app.db
        .count("SELECT count(*) FROM refresh_tokens WHERE used_at IS NOT NULL")
}

/// The hashes of the table's unused, unrevoked tokens.
fn live_hashes(app: &TestApp) -> Vec<String> {
    app.db
        .query(
            "SELECT encode(token_hash, 'hex') FROM refresh_tokens
             WHERE used_at IS NULL AND revoked_at IS NULL",
        )
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Waits (up to 10 s) until `sql` counts at least `n`.
async fn until_count(app: &TestApp, sql: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.db.count(sql) < n {
        assert!(Instant::now() < deadline, "timed out waiting for: {sql}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sixteen concurrent refreshes with one token all answer 200 with the same
/// refresh token; the table holds one rotation; every access token is fresh,
/// valid and of the same session. (Before: one 200 and fifteen 409s.)
#[tokio::test]
async fn sixteen_concurrent_refreshes_get_one_successor() {
    let app = spawn_app().await;
    let (_, access, refresh) = app.user("alice").await;
    let replies = futures::future::join_all((0..16).map(|_| app.refresh(&refresh))).await;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let successors: HashSet<&str> = replies
        .iter()
        .map(|r| s(&r.body["refresh_token"]))
        .collect();
    assert_eq!(successors.len(), 1, "{successors:?}");
    let successor = successors.into_iter().next().unwrap();
    assert_ne!(successor, refresh);
    assert_eq!(rotations(&app), 1);
    assert_eq!(app.db.count("SELECT count(*) FROM refresh_tokens"), 2);
    assert_eq!(live_hashes(&app), vec![sha256_hex(successor)]);
    let sid = claims(&access)["sid"].clone();
    for r in &replies {
        let fresh = s(&r.body["access_token"]);
        assert_eq!(claims(fresh)["sid"], sid);
        assert_eq!(app.get("/api/v1/auth/check", Some(fresh)).await.status, 200);
    }
    // The successor rotates on as usual.
    assert_eq!(app.refresh(successor).await.status, 200);
    assert_eq!(rotations(&app), 2);
}

/// A refresh whose answer never reached the client (the client closed the
/// connection while the rotation was committing) is retried with the same
/// token: 200 with the successor the table holds, an access token carrying
/// the roles granted in between, and still one rotation.
#[tokio::test]
async fn a_retry_after_a_lost_answer_gets_the_same_successor() {
    let app = spawn_app().await;
    let (id, _, refresh) = app.user("alice").await;
    let uid: uuid::Uuid = id.parse().unwrap();
    // Hold the user's lock so the refresh waits inside its transaction.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let url = app.db.url.clone();
    let holder = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.execute(
            "SELECT pg_advisory_lock(hashtextextended('authgw.user:' || $1::uuid::text, 0))",
            &[&uid],
        )
        .unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    locked_rx.recv().unwrap();
    let body = format!("{{\"refresh_token\":\"{refresh}\"}}");
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "POST /api/v1/auth/refresh HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        app.addr,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    until_count(
        &app,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        1,
    )
    .await;
    // The client gives up before any answer: the answer is lost.
    drop(stream);
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    until_count(
        &app,
        "SELECT count(*) FROM refresh_tokens WHERE used_at IS NOT NULL",
        1,
    )
    .await;
    app.db.with(move |c| {
        c.batch_execute("INSERT INTO roles (name) VALUES ('subscriber')")
            .unwrap();
        c.execute(
            "INSERT INTO user_roles (user_id, role_id) SELECT $1, id FROM roles",
            &[&uid],
        )
        .unwrap();
    });
    let retry = app.refresh(&refresh).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    let successor = s(&retry.body["refresh_token"]);
    assert_eq!(live_hashes(&app), vec![sha256_hex(successor)]);
    assert_eq!(rotations(&app), 1);
    assert_eq!(
        claims(s(&retry.body["access_token"]))["roles"],
        serde_json::json!(["subscriber"])
    );
    assert_eq!(app.refresh(successor).await.status, 200);
}

/// When the successor was itself rotated (the winning tab moved on), the
/// first token within the grace gets 409 and revokes nothing; the successor
/// presented again still gets its own successor back.
#[tokio::test]
async fn a_token_whose_successor_rotated_further_gets_409() {
    let app = spawn_app().await;
    let (_, _, t0) = app.user("alice").await;
    let first = app.refresh(&t0).await;
    let t1 = s(&first.body["refresh_token"]).to_string();
    let second = app.refresh(&t1).await;
    assert_eq!(second.status, 200);
    let t2 = s(&second.body["refresh_token"]).to_string();
    app.refresh(&t0)
        .await
        .assert_problem(409, "refresh_token_already_rotated");
    let again = app.refresh(&t1).await;
    assert_eq!(again.status, 200);
    assert_eq!(s(&again.body["refresh_token"]), t2);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NOT NULL"),
        0
    );
    assert_eq!(rotations(&app), 2);
    assert_eq!(app.refresh(&t2).await.status, 200);
}

/// After the grace, presenting a consumed token again is theft even though
/// its successor is unused: 401 and the whole session dies, successor
/// included, instead of handing the successor out again.
#[tokio::test]
async fn reuse_after_the_grace_revokes_instead_of_replaying() {
    let app = spawn_app_with(|c| c.tokens.refresh_reuse_grace = Duration::from_millis(200)).await;
    let (_, _, t0) = app.user("alice").await;
    let first = app.refresh(&t0).await;
    let t1 = s(&first.body["refresh_token"]).to_string();
    // Within the grace: the same successor.
    let within = app.refresh(&t0).await;
    assert_eq!(s(&within.body["refresh_token"]), t1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.refresh(&t0)
        .await
        .assert_problem(401, "refresh_token_reused");
    app.refresh(&t1)
        .await
        .assert_problem(401, "invalid_refresh_token");
    let check = app
        .get("/api/v1/auth/check", Some(s(&first.body["access_token"])))
        .await;
    check.assert_problem(401, "invalid_token");
}

/// A session ended by logout is not resurrected by presenting its consumed
/// token within the grace: 401, no successor handed out.
#[tokio::test]
async fn a_logged_out_session_is_not_replayed() {
    let app = spawn_app().await;
    let (_, _, t0) = app.user("alice").await;
    let first = app.refresh(&t0).await;
    let access = s(&first.body["access_token"]).to_string();
    let out = app
        .send(
            reqwest::Method::POST,
            "/api/v1/auth/logout",
            Some(&access),
            None,
        )
        .await;
    assert_eq!(out.status, 204, "{}", out.body);
    app.refresh(&t0)
        .await
        .assert_problem(401, "invalid_refresh_token");
    assert!(live_hashes(&app).is_empty());
}

/// Successors depend on the server secret: a second secret in the keys
/// directory (a rotation) derives a different successor for the next
/// refresh, while a token rotated under the old secret still gets its old
/// successor back within the grace.
#[tokio::test]
async fn a_new_secret_derives_new_successors_and_the_old_one_still_replays() {
    let app = spawn_app().await;
    let (_, _, t0) = app.user("alice").await;
    let (_, u0) = app.tokens("alice").await;
    let first = app.refresh(&t0).await;
    let t1 = s(&first.body["refresh_token"]).to_string();
    gateway::secrets::generate(app.keys.path()).unwrap();
    let summary = app.reloader.apply(&app.config);
    assert!(summary.is_ok(), "{summary:?}");
    // Replay across the rotation: the old secret's successor.
    let replay = app.refresh(&t0).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(s(&replay.body["refresh_token"]), t1);
    // A fresh rotation under the new secret: not what the old one gives.
    let ring = gateway::secrets::SecretRing::load(app.keys.path()).unwrap();
    let old = gateway::tokens::RefreshToken::parse(&u0)
        .unwrap()
        .successor(&ring.all()[0]);
    let new = gateway::tokens::RefreshToken::parse(&u0)
        .unwrap()
        .successor(ring.current());
    assert_ne!(old.token, new.token);
    let next = app.refresh(&u0).await;
    assert_eq!(next.status, 200);
    assert_eq!(s(&next.body["refresh_token"]), new.token);
}

/// A keys directory with no secret is refused at start with the fix named,
/// instead of deriving from nothing.
#[test]
fn a_keys_directory_without_a_secret_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    gateway::tokens::generate_key(keys.path(), gateway::config::SigningAlgorithm::EdDsa).unwrap();
    for entry in std::fs::read_dir(keys.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "secret") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let config = test_config("postgresql://127.0.0.1:1/none", keys.path());
    let err = gateway::server::Gateway::build(config)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("authgw keys generate --kind secret"), "{err}");
}
