//! Password guessing: counted per (account, client address) and per
//! account, claimed before verification, and the same for the password
//! checks behind an access token; introspection callers authenticate.
//! Clients at different addresses connect from different loopback
//! addresses (127.0.0.x), which the server sees as their peer address.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn send_from(
    app: &TestApp,
    client: &reqwest::Client,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> Reply {
    let r = client
        .request(method, app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    reply(r).await
}

fn assert_locked(r: &Reply) {
    r.assert_problem(429, "too_many_attempts");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
}

/// A flood of wrong passwords for alice from one address locks that
/// address out of alice (429 with Retry-After, even with the right
/// password), and only that address: alice logs in at once from another.
#[tokio::test]
async fn flood_from_one_address_does_not_lock_out_another() {
    let app = spawn_app_with(|c| {
        c.limits.lockout_threshold = 3;
        c.limits.lockout_base = Duration::from_secs(60);
    })
    .await;
    app.signup("alice", PASSWORD).await;
    let attacker = client_from("127.0.0.2");
    for i in 0..10 {
        let r = login_from(&app, &attacker, "alice", &format!("guess {i}")).await;
        if i < 3 {
            r.assert_problem(401, "invalid_credentials");
        } else {
            assert_locked(&r);
        }
    }
    assert_locked(&login_from(&app, &attacker, "alice", PASSWORD).await);
    let started = Instant::now();
    let ok = login_from(&app, &client_from("127.0.0.1"), "alice", PASSWORD).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The attacker's pair is still locked; alice's success cleared only hers.
    let rows = app
        .db
        .query("SELECT host(client), locked_until > now() FROM login_failures ORDER BY 1");
    let got: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![("127.0.0.2".to_string(), true)]);
    // The same holds for a login that does not exist: a lock says nothing
    // about which logins do.
    for i in 0..4 {
        let r = login_from(&app, &attacker, "nobody", &format!("guess {i}")).await;
        assert_eq!(r.status, if i < 3 { 401 } else { 429 }, "{}", r.body);
    }
}

/// Past the account-wide threshold (failures from all addresses together)
/// every check of the account is slowed, never refused: the right password
/// from a fresh address still gets in, after the delay.
#[tokio::test]
async fn account_wide_threshold_only_slows() {
    let delay = Duration::from_millis(1500);
    let app = spawn_app_with(|c| {
        c.limits.lockout_threshold = 2;
        c.limits.account_threshold = 4;
        c.limits.account_delay = delay;
    })
    .await;
    app.signup("alice", PASSWORD).await;
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let attacker = client_from(ip);
        for _ in 0..2 {
            login_from(&app, &attacker, "alice", "wrong password")
                .await
                .assert_problem(401, "invalid_credentials");
        }
    }
    assert_eq!(
        app.db
            .count("SELECT failures::bigint FROM account_failures WHERE login = 'alice'"),
        6
    );
    let started = Instant::now();
    let ok = login_from(&app, &client_from("127.0.0.5"), "alice", PASSWORD).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    // Success forgets the account-wide count (the attackers' pairs stay).
    assert_eq!(app.db.count("SELECT count(*) FROM account_failures"), 0);
    assert_eq!(app.db.count("SELECT count(*) FROM login_failures"), 3);
}

/// When a lock ends, parallel guesses are claimed one at a time: one is
/// verified (one argon2 verification, per the hasher's counter on
/// /metrics), the rest are refused without being verified.
#[tokio::test]
async fn parallel_guesses_at_an_unlock_verify_only_one() {
    let app = spawn_app_with(|c| {
        c.limits.lockout_threshold = 3;
        c.limits.lockout_base = Duration::from_secs(60);
    })
    .await;
    app.signup("alice", PASSWORD).await;
    let attacker = client_from("127.0.0.2");
    for _ in 0..3 {
        login_from(&app, &attacker, "alice", "wrong password").await;
    }
    app.db
        .query("UPDATE login_failures SET locked_until = now() - interval '1 second'");
    let before = app.metric("authgw_password_hashes_total").await;
    let guesses = (0..20).map(|i| {
        let (app, attacker) = (&app, &attacker);
        async move { login_from(app, attacker, "alice", &format!("guess {i}")).await }
    });
    let replies = futures::future::join_all(guesses).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        19,
        "{statuses:?}"
    );
    let after = app.metric("authgw_password_hashes_total").await;
    assert_eq!(after - before, 1.0);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM login_history WHERE outcome = 'bad_password'"),
        4
    );
}

/// `PATCH /users/me/password` and `DELETE /users/me` count wrong passwords
/// like login and lock the same (account, address) pair: a stolen access
/// token is no password oracle. The account is untouched, and its owner
/// still logs in from elsewhere.
#[tokio::test]
async fn password_checks_behind_a_token_lock_like_login() {
    let app = spawn_app_with(|c| {
        c.limits.lockout_threshold = 3;
        c.limits.lockout_base = Duration::from_secs(60);
    })
    .await;
    let (_, access, _) = app.user("alice").await;
    let thief = client_from("127.0.0.2");
    let change = |old: &str| json!({"old_password": old, "new_password": "a brand new password"});
    for i in 0..3 {
        let path = "/api/v1/users/me/password";
        send_from(
            &app,
            &thief,
            Method::PATCH,
            path,
            &access,
            change(&format!("guess {i}")),
        )
        .await
        .assert_problem(401, "invalid_credentials");
    }
    let r = send_from(
        &app,
        &thief,
        Method::PATCH,
        "/api/v1/users/me/password",
        &access,
        change(PASSWORD),
    )
    .await;
    assert_locked(&r);
    let r = send_from(
        &app,
        &thief,
        Method::DELETE,
        "/api/v1/users/me",
        &access,
        json!({"password": PASSWORD}),
    )
    .await;
    assert_locked(&r);
    // Login from the thief's address is locked too: one count per pair.
    assert_locked(&login_from(&app, &thief, "alice", PASSWORD).await);
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 1);
    assert_eq!(app.login("alice", PASSWORD).await.status, 200);
}

/// The password checks behind a token draw from the per-address token
/// bucket like login: over it, 429 `rate_limited` with Retry-After.
#[tokio::test]
async fn password_checks_behind_a_token_are_rate_limited() {
    let app = spawn_app_with(|c| {
        c.limits.auth_per_minute = 1;
        c.limits.auth_burst = 2;
    })
    .await;
    let owner = client_from("127.0.0.9");
    let signup = owner
        .post(app.url("/api/v1/auth/signup"))
        .json(&json!({"login": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let login = login_from(&app, &owner, "alice", PASSWORD).await;
    let access = login.body["access_token"].as_str().unwrap().to_string();
    let thief = client_from("127.0.0.2");
    let wrong = json!({"password": "wrong password"});
    for _ in 0..2 {
        send_from(
            &app,
            &thief,
            Method::DELETE,
            "/api/v1/users/me",
            &access,
            wrong.clone(),
        )
        .await
        .assert_problem(401, "invalid_credentials");
    }
    let r = send_from(
        &app,
        &thief,
        Method::DELETE,
        "/api/v1/users/me",
        &access,
        wrong,
    )
    .await;
    r.assert_problem(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
}

/// Introspection answers only configured clients (HTTP Basic, secret
/// checked against its stored SHA-256): none or a wrong secret is 401 with
/// a Basic challenge, the right one gets the token's state.
#[tokio::test]
async fn introspection_requires_a_client() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("alice").await;
    let url = app.url("/api/v1/auth/introspect");
    let body = json!({"token": access});
    let anonymous = reply(app.http.post(&url).json(&body).send().await.unwrap()).await;
    anonymous.assert_problem(401, "invalid_client");
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic "),
        "{:?}",
        anonymous.headers
    );
    let wrong = app
        .http
        .post(&url)
        .basic_auth(INTROSPECTION_CLIENT, Some("not the secret"))
        .json(&body)
        .send()
        .await
        .unwrap();
    reply(wrong).await.assert_problem(401, "invalid_client");
    let bearer = reply(
        app.http
            .post(&url)
            .bearer_auth(&access)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    bearer.assert_problem(401, "invalid_client");
    let ok = app.introspect(body).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["active"], true);
}

/// Introspection draws from the per-address token bucket, whether the
/// caller authenticates or not (so secrets cannot be guessed quickly).
#[tokio::test]
async fn introspection_is_rate_limited() {
    let app = spawn_app_with(|c| {
        c.limits.auth_per_minute = 1;
        c.limits.auth_burst = 2;
    })
    .await;
    let url = app.url("/api/v1/auth/introspect");
    for _ in 0..2 {
        let r = app
            .http
            .post(&url)
            .basic_auth(INTROSPECTION_CLIENT, Some("guess"))
            .json(&json!({"token": "x"}))
            .send()
            .await
            .unwrap();
        reply(r).await.assert_problem(401, "invalid_client");
    }
    let r = app.introspect(json!({"token": "x"})).await;
    r.assert_problem(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
}

/// `authgw introspection new-secret` prints a random secret and its
/// SHA-256 (what `secret_sha256` takes); `hash-secret` hashes the secret on
/// standard input the same way. No config or database needed.
#[test]
fn cli_makes_and_hashes_introspection_secrets() {
    let out = authgw(
        "postgresql://nobody@127.0.0.1:1/none",
        &["introspection", "new-secret"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2, "{printed}");
    assert_eq!(lines[0].len(), 43, "{printed}");
    assert_eq!(lines[1], gateway::introspection::hash_secret(lines[0]));
    let out = authgw(
        "postgresql://nobody@127.0.0.1:1/none",
        &["introspection", "hash-secret"],
        Some("abc\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
