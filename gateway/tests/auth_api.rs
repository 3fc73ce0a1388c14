//! The Auth API's public contract: every endpoint's success and failure
//! paths, against a real server and a real database, with response bodies
//! checked against docs/auth-openapi.yaml.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

// ---------- signup ----------

/// Signup creates an ordinary user: 201 with the documented shape, and the
/// database holds an argon2id hash, never the password.
#[tokio::test]
async fn signup_creates_an_ordinary_user() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/auth/signup",
            None,
            json!({"login": "alice", "password": PASSWORD, "email": "a@example.org"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_schema(&r.body, "User");
    assert_eq!(r.body["login"], "alice");
    assert_eq!(r.body["email"], "a@example.org");
    assert_eq!(r.body["roles"], json!([]));
    assert_eq!(r.body["is_admin"], false);
    let rows = app
        .db
        .query("SELECT is_admin, password_hash, id::text FROM users");
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].get::<_, bool>(0));
    let hash: String = rows[0].get(1);
    assert!(hash.starts_with("$argon2id$") && !hash.contains(PASSWORD));
    assert_eq!(rows[0].get::<_, String>(2), s(&r.body["id"]));
}

/// A body carrying is_admin or roles is refused with 400 naming the field,
/// and nothing is created: the API only ever makes ordinary users.
#[tokio::test]
async fn signup_refuses_admin_and_roles_fields() {
    let app = spawn_app().await;
    for (field, value) in [("is_admin", json!(true)), ("roles", json!(["adult"]))] {
        let mut body = json!({"login": "mallory", "password": PASSWORD});
        body[field] = value;
        let r = app.post("/api/v1/auth/signup", None, body).await;
        r.assert_problem(400, "unknown_field");
        assert_eq!(r.body["field"], field);
        assert!(s(&r.body["detail"]).contains(field));
    }
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 0);
}

/// Field validation: 422 naming the field for missing, wrongly typed or
/// invalid values; 400 for malformed JSON; 415 for a non-JSON body.
#[tokio::test]
async fn signup_validation_errors_name_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"login": "ab", "password": PASSWORD}), "login"),
        (
            json!({"login": "bad login!", "password": PASSWORD}),
            "login",
        ),
        (
            json!({"login": "x".repeat(65), "password": PASSWORD}),
            "login",
        ),
        (json!({"login": "bob", "password": "short"}), "password"),
        (
            json!({"login": "bob", "password": "p".repeat(1025)}),
            "password",
        ),
        (
            json!({"login": "bobbybobby", "password": "BobbyBobby"}),
            "password",
        ),
        (json!({"login": "bob"}), "password"),
        (json!({"login": 5, "password": PASSWORD}), "login"),
        (
            json!({"login": "bob", "password": PASSWORD, "email": "nope"}),
            "email",
        ),
    ];
    for (body, field) in cases {
        let r = app.post("/api/v1/auth/signup", None, body.clone()).await;
        r.assert_problem(422, "invalid_field");
        assert_eq!(r.body["field"], field, "{body}: {}", r.body);
    }
    let malformed = app
        .http
        .post(app.url("/api/v1/auth/signup"))
        .header("content-type", "application/json")
        .body("{\"login\": ")
        .send()
        .await
        .unwrap();
    reply(malformed).await.assert_problem(400, "malformed_json");
    let not_object = app
        .post("/api/v1/auth/signup", None, json!(["alice"]))
        .await;
    not_object.assert_problem(400, "malformed_request");
    let form = app
        .http
        .post(app.url("/api/v1/auth/signup"))
        .form(&[("login", "bob"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    reply(form)
        .await
        .assert_problem(415, "unsupported_media_type");
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 0);
}

/// A login taken case-insensitively gives 409.
#[tokio::test]
async fn signup_duplicate_login_conflicts() {
    let app = spawn_app().await;
    assert_eq!(app.signup("Alice", PASSWORD).await.status, 201);
    let r = app.signup("aLICE", PASSWORD).await;
    r.assert_problem(409, "login_taken");
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 1);
}

/// A body over 64 KiB is refused with 413 before it is parsed.
#[tokio::test]
async fn oversized_body_is_413() {
    let app = spawn_app().await;
    let big = json!({"login": "alice", "password": PASSWORD, "email": "x".repeat(70 * 1024)});
    let r = app.post("/api/v1/auth/signup", None, big).await;
    r.assert_problem(413, "payload_too_large");
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 0);
}

// ---------- login ----------

/// Login returns a token pair; the access token carries the documented
/// header and claims; only the SHA-256 of the refresh token is stored.
#[tokio::test]
async fn login_issues_a_token_pair() {
    let app = spawn_app().await;
    app.signup("alice", PASSWORD).await;
    let r = app.login("ALICE", PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_schema(&r.body, "TokenPair");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 900);
    let access = s(&r.body["access_token"]);
    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert!(header.kid.is_some());
    let c = claims(access);
    for claim in [
        "iss", "aud", "sub", "login", "roles", "adm", "sid", "jti", "iat", "nbf", "exp",
    ] {
        assert!(c.get(claim).is_some(), "missing claim {claim}: {c}");
    }
    assert_eq!(c["iss"], "authgw");
    assert_eq!(c["aud"], "cinema");
    assert_eq!(c["login"], "alice");
    assert_eq!(c["adm"], false);
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
    let refresh = s(&r.body["refresh_token"]);
    assert_eq!(uuid::Uuid::parse_str(refresh).unwrap().get_version_num(), 4);
    use sha2::Digest;
    let digest = sha2::Sha256::digest(refresh.as_bytes()).to_vec();
    let stored = app.db.with(move |c| {
        c.query_one(
            "SELECT count(*) FROM refresh_tokens WHERE token_hash = $1",
            &[&digest],
        )
        .unwrap()
        .get::<_, i64>(0)
    });
    assert_eq!(stored, 1);
    let session: String = app.db.query("SELECT session_id::text FROM refresh_tokens")[0].get(0);
    assert_eq!(c["sid"], session);
}

/// An unknown login and a wrong password get the same 401 body, and every
/// attempt lands in login_history with ip, user agent and outcome.
#[tokio::test]
async fn login_failures_are_uniform_and_recorded() {
    let app = spawn_app().await;
    app.signup("alice", PASSWORD).await;
    let wrong = app.login("alice", "not the password").await;
    let unknown = app.login("nobody", "not the password").await;
    wrong.assert_problem(401, "invalid_credentials");
    unknown.assert_problem(401, "invalid_credentials");
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(app.login("alice", PASSWORD).await.status, 200);
    let rows = app.db.query("SELECT login, outcome, host(ip), user_agent, user_id IS NULL FROM login_history ORDER BY id");
    let got: Vec<(String, String, String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "alice".into(),
                "bad_password".into(),
                "127.0.0.1".into(),
                "authgw-tests/1".into(),
                false
            ),
            (
                "nobody".into(),
                "unknown_login".into(),
                "127.0.0.1".into(),
                "authgw-tests/1".into(),
                true
            ),
            (
                "alice".into(),
                "success".into(),
                "127.0.0.1".into(),
                "authgw-tests/1".into(),
                false
            ),
        ]
    );
}

/// After N failures the (account, client address) pair locks (stored in
/// the database): even the right password gets 429 with Retry-After, and
/// nothing is verified, until the lock passes; success resets the count.
/// (Other addresses are unaffected: tests/brute_force.rs.)
#[tokio::test]
async fn lockout_after_repeated_failures() {
    let app = spawn_app_with(|c| {
        c.limits.lockout_threshold = 3;
        c.limits.lockout_base = Duration::from_secs(60);
    })
    .await;
    app.signup("alice", PASSWORD).await;
    app.signup("bob", PASSWORD).await;
    for _ in 0..3 {
        app.login("alice", "wrong password")
            .await
            .assert_problem(401, "invalid_credentials");
    }
    let locked = app.login("alice", PASSWORD).await;
    locked.assert_problem(429, "too_many_attempts");
    let retry: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    assert!((50..=60).contains(&retry), "{retry}");
    let rows = app.db.query(
        "SELECT failures, locked_until > now() + interval '50 seconds', host(client)
         FROM login_failures WHERE login = 'alice'",
    );
    assert_eq!(rows[0].get::<_, i32>(0), 3);
    assert!(rows[0].get::<_, bool>(1));
    assert_eq!(rows[0].get::<_, String>(2), "127.0.0.1");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM login_history WHERE outcome = 'locked'"),
        1
    );
    // Two failures below the threshold, then success: the counter resets.
    app.login("bob", "wrong password").await;
    app.login("bob", "wrong password").await;
    assert_eq!(app.login("bob", PASSWORD).await.status, 200);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM login_failures WHERE login = 'bob'"),
        0
    );
    // Lifting the lock (time passing) lets the right password in again.
    app.db.query(
        "UPDATE login_failures SET locked_until = now() - interval '1 second' WHERE login = 'alice'",
    );
    assert_eq!(app.login("alice", PASSWORD).await.status, 200);
}

/// Over the per-IP budget, signup/login/refresh get 429 with Retry-After.
#[tokio::test]
async fn rate_limit_per_ip() {
    let app = spawn_app_with(|c| {
        c.limits.auth_per_minute = 1;
        c.limits.auth_burst = 2;
    })
    .await;
    assert_eq!(app.signup("alice", PASSWORD).await.status, 201);
    assert_eq!(app.login("alice", PASSWORD).await.status, 200);
    let r = app.refresh(&uuid::Uuid::new_v4().to_string()).await;
    r.assert_problem(429, "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Endpoints outside the limit are unaffected.
    assert_eq!(app.get("/healthz", None).await.status, 200);
}

/// Beyond the hashing slots and queue, login answers 503 with Retry-After
/// instead of piling up work.
#[tokio::test]
async fn hashing_queue_full_is_503() {
    let app = spawn_app_with(|c| {
        c.passwords.max_concurrent = 1;
        c.passwords.max_queue = 0;
        c.passwords.iterations = 20;
    })
    .await;
    app.signup("alice", PASSWORD).await;
    let logins = (0..4).map(|_| app.login("alice", PASSWORD));
    let replies = futures::future::join_all(logins).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let busy: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(ok >= 1, "{replies:?}");
    assert!(!busy.is_empty(), "{replies:?}");
    for r in busy {
        r.assert_problem(503, "busy");
        assert!(r.header("retry-after").is_some());
    }
}

// ---------- refresh ----------

/// Refresh consumes the token and issues a new pair in the same session.
#[tokio::test]
async fn refresh_rotates_within_the_session() {
    let app = spawn_app().await;
    let (_, access, refresh) = app.user("alice").await;
    let r = app.refresh(&refresh).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_schema(&r.body, "TokenPair");
    let next = s(&r.body["refresh_token"]);
    assert_ne!(next, refresh);
    assert_eq!(
        claims(s(&r.body["access_token"]))["sid"],
        claims(&access)["sid"]
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM refresh_tokens WHERE used_at IS NOT NULL"),
        1
    );
    assert_eq!(
        app.db
            .count("SELECT count(DISTINCT session_id) FROM refresh_tokens"),
        1
    );
    assert_eq!(app.refresh(next).await.status, 200);
}

/// A role granted in the database shows in the next access token after refresh.
#[tokio::test]
async fn refresh_carries_current_roles() {
    let app = spawn_app().await;
    let (id, access, refresh) = app.user("alice").await;
    assert_eq!(claims(&access)["roles"], json!([]));
    app.db.with(move |c| {
        c.batch_execute("INSERT INTO roles (name) VALUES ('subscriber'), ('adult')")
            .unwrap();
        let uid: uuid::Uuid = id.parse().unwrap();
        c.execute(
            "INSERT INTO user_roles (user_id, role_id) SELECT $1, id FROM roles",
            &[&uid],
        )
        .unwrap();
    });
    let r = app.refresh(&refresh).await;
    let fresh = s(&r.body["access_token"]);
    assert_eq!(claims(fresh)["roles"], json!(["adult", "subscriber"]));
    let check = app.get("/api/v1/auth/check", Some(fresh)).await;
    assert_eq!(check.body["roles"], json!(["adult", "subscriber"]));
}

/// A consumed token presented after the grace revokes the whole session:
/// 401, and both the session's refresh and access tokens die at once.
#[tokio::test]
async fn reuse_after_grace_revokes_the_session() {
    let app = spawn_app_with(|c| c.tokens.refresh_reuse_grace = Duration::ZERO).await;
    let (_, _, refresh) = app.user("alice").await;
    let (other_access, _) = app.tokens("alice").await;
    let first = app.refresh(&refresh).await;
    assert_eq!(first.status, 200);
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.refresh(&refresh)
        .await
        .assert_problem(401, "refresh_token_reused");
    let access = s(&first.body["access_token"]);
    let check = app.get("/api/v1/auth/check", Some(access)).await;
    check.assert_problem(401, "invalid_token");
    app.refresh(s(&first.body["refresh_token"]))
        .await
        .assert_problem(401, "invalid_refresh_token");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM revocations WHERE kind = 'session'"),
        1
    );
    // Another session of the same user is untouched.
    assert_eq!(
        app.get("/api/v1/auth/check", Some(&other_access))
            .await
            .status,
        200
    );
}

// Racing and repeated refreshes within the grace: tests/idempotent_refresh.rs.

/// Unknown, malformed, expired and revoked refresh tokens get 401.
#[tokio::test]
async fn invalid_refresh_tokens_are_401() {
    let app = spawn_app().await;
    let (_, access, refresh) = app.user("alice").await;
    app.refresh(&uuid::Uuid::new_v4().to_string())
        .await
        .assert_problem(401, "invalid_refresh_token");
    app.refresh("not-a-uuid")
        .await
        .assert_problem(401, "invalid_refresh_token");
    app.refresh("")
        .await
        .assert_problem(401, "invalid_refresh_token");
    app.db
        .query("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'");
    app.refresh(&refresh)
        .await
        .assert_problem(401, "invalid_refresh_token");
    let (_, refresh2) = app.tokens("alice").await;
    let out = app
        .send(Method::POST, "/api/v1/auth/logout", Some(&access), None)
        .await;
    assert_eq!(out.status, 204);
    assert_eq!(
        app.refresh(&refresh2).await.status,
        200,
        "logout ends only its own session"
    );
    let (access3, refresh3) = app.tokens("alice").await;
    app.send(Method::POST, "/api/v1/auth/logout", Some(&access3), None)
        .await;
    app.refresh(&refresh3)
        .await
        .assert_problem(401, "invalid_refresh_token");
}

// ---------- logout, logout-all, check ----------

/// Logout ends this session only: its access token fails at once; another
/// session of the user keeps working.
#[tokio::test]
async fn logout_revokes_this_session_at_once() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("alice").await;
    let (other, _) = app.tokens("alice").await;
    assert_eq!(
        app.get("/api/v1/auth/check", Some(&access)).await.status,
        200
    );
    let r = app
        .send(Method::POST, "/api/v1/auth/logout", Some(&access), None)
        .await;
    assert_eq!(r.status, 204);
    app.get("/api/v1/auth/check", Some(&access))
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(
        app.get("/api/v1/auth/check", Some(&other)).await.status,
        200
    );
}

/// Logout-all ends every session of the user with the same immediacy, and
/// leaves other users alone.
#[tokio::test]
async fn logout_all_revokes_every_session() {
    let app = spawn_app().await;
    let (_, a1, r1) = app.user("alice").await;
    let (a2, r2) = app.tokens("alice").await;
    let (_, b, _) = app.user("bob").await;
    let r = app
        .send(Method::POST, "/api/v1/auth/logout-all", Some(&a1), None)
        .await;
    assert_eq!(r.status, 204);
    for t in [&a1, &a2] {
        app.get("/api/v1/auth/check", Some(t))
            .await
            .assert_problem(401, "invalid_token");
    }
    for t in [&r1, &r2] {
        app.refresh(t)
            .await
            .assert_problem(401, "invalid_refresh_token");
    }
    assert_eq!(app.get("/api/v1/auth/check", Some(&b)).await.status, 200);
    // A new login after logout-all works.
    let (fresh, _) = app.tokens("alice").await;
    assert_eq!(
        app.get("/api/v1/auth/check", Some(&fresh)).await.status,
        200
    );
}

/// /check returns who the token belongs to; a missing or garbage token gets
/// 401 with the Bearer challenge.
#[tokio::test]
async fn check_reports_identity_or_challenges() {
    let app = spawn_app().await;
    let (id, access, _) = app.user("alice").await;
    let r = app.get("/api/v1/auth/check", Some(&access)).await;
    assert_eq!(r.status, 200);
    assert_schema(&r.body, "Check");
    assert_eq!(r.body["user_id"], id);
    assert_eq!(r.body["login"], "alice");
    assert_eq!(r.body["is_admin"], false);
    assert_eq!(r.body["session_id"], claims(&access)["sid"]);
    for token in [None, Some("garbage"), Some("a.b.c")] {
        let r = app.get("/api/v1/auth/check", token).await;
        r.assert_problem(401, "invalid_token");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .starts_with("Bearer error=\"invalid_token\"")
        );
    }
    let basic = app
        .http
        .get(app.url("/api/v1/auth/check"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    reply(basic).await.assert_problem(401, "invalid_token");
}

/// `GET /check` answered past the router (issue 18) answers as its route
/// does: on the canonical path, 200 with the caller's claims, 401 problems
/// for a missing or bad token; HEAD (the router's) without a body; another
/// method the router's 405 problem; a near miss is no endpoint (proxied,
/// no route: 404).
#[tokio::test]
async fn check_past_the_router_answers_as_its_route_does() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("alice").await;
    let ask = |method: &str, path: &str, token: Option<&str>| {
        let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        format!(
            "{method} {path} HTTP/1.1\r\nhost: cinema.example\r\n{auth}connection: close\r\n\r\n"
        )
    };
    let status = |head: &str| head.split(' ').nth(1).unwrap().parse::<u16>().unwrap();
    // Raw TCP: reqwest would resolve the `..` before sending.
    for path in [
        "/api/v1/auth/check",
        "/api/v1/auth/x/../check",
        "/api//v1/auth/./check",
    ] {
        let (head, body) = raw(app.addr, &ask("GET", path, Some(&access))).await;
        assert_eq!(status(&head), 200, "{path}: {head}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["login"], "alice", "{path}");
        assert_schema(&body, "Check");
        let (head, body) = raw(app.addr, &ask("GET", path, None)).await;
        assert_eq!(status(&head), 401, "{path}: {head}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "invalid_token", "{path}");
        let (head, _) = raw(app.addr, &ask("GET", path, Some("not.a.token"))).await;
        assert_eq!(status(&head), 401, "{path}: {head}");
    }
    let (head, body) = raw(app.addr, &ask("HEAD", "/api/v1/auth/check", Some(&access))).await;
    assert_eq!(status(&head), 200, "{head}");
    assert!(body.is_empty(), "{body:?}");
    for method in ["POST", "DELETE"] {
        let (head, body) = raw(app.addr, &ask(method, "/api/v1/auth/check", Some(&access))).await;
        assert_eq!(status(&head), 405, "{method}: {head}");
        assert!(String::from_utf8_lossy(&body).contains("method_not_allowed"));
    }
    let (head, _) = raw(app.addr, &ask("GET", "/api/v1/auth/check/", Some(&access))).await;
    assert_eq!(status(&head), 404, "{head}");
}

// ---------- introspect, jwks, openapi ----------

/// RFC 7662: an active token (as JSON or form) gets its claims; a bad or
/// revoked one gets only {active: false}.
#[tokio::test]
async fn introspect_active_and_inactive() {
    let app = spawn_app().await;
    let (id, access, _) = app.user("alice").await;
    let r = app.introspect(json!({"token": access})).await;
    assert_eq!(r.status, 200);
    assert_schema(&r.body, "Introspection");
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["sub"], id);
    assert_eq!(r.body["username"], "alice");
    let form = app
        .http
        .post(app.url("/api/v1/auth/introspect"))
        .basic_auth(INTROSPECTION_CLIENT, Some(INTROSPECTION_SECRET))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    let form = reply(form).await;
    assert_eq!(form.body["active"], true);
    let bad = app.introspect(json!({"token": "garbage"})).await;
    assert_eq!(bad.body, json!({"active": false}));
    assert_schema(&bad.body, "Introspection");
    app.send(Method::POST, "/api/v1/auth/logout", Some(&access), None)
        .await;
    let revoked = app.introspect(json!({"token": access})).await;
    assert_eq!(revoked.body, json!({"active": false}));
    let missing = app.introspect(json!({})).await;
    missing.assert_problem(422, "invalid_field");
}

/// The JWKS lists the signing key with kid, alg and use, and the kid matches
/// the tokens' header.
#[tokio::test]
async fn jwks_publishes_the_keys() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("alice").await;
    let r = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(r.status, 200);
    assert_schema(&r.body, "Jwks");
    let keys = r.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["use"], "sig");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["kty"], "OKP");
    assert!(keys[0].get("d").is_none(), "private part leaked");
    let kid = jsonwebtoken::decode_header(&access).unwrap().kid.unwrap();
    assert_eq!(keys[0]["kid"], kid);
}

/// The OpenAPI document is served; unknown routes and methods get problems.
#[tokio::test]
async fn openapi_and_fallbacks() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(app.url("/api/openapi.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with("openapi: 3.1"));
    app.get("/api/v1/nope", None)
        .await
        .assert_problem(404, "not_found");
    app.send(Method::DELETE, "/api/v1/auth/login", None, None)
        .await
        .assert_problem(405, "method_not_allowed");
}

// ---------- me ----------

/// The profile shows the user with roles; it needs a valid token.
#[tokio::test]
async fn profile_shows_the_user() {
    let app = spawn_app().await;
    let (id, access, _) = app.user("alice").await;
    let r = app.get("/api/v1/users/me", Some(&access)).await;
    assert_eq!(r.status, 200);
    assert_schema(&r.body, "User");
    assert_eq!(r.body["id"], id);
    app.get("/api/v1/users/me", None)
        .await
        .assert_problem(401, "invalid_token");
}

/// Password change: the old password is checked, the new one validated;
/// afterwards every other session ends at once, this one stays, and only
/// the new password logs in.
#[tokio::test]
async fn password_change_ends_other_sessions() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("alice").await;
    let (other, other_refresh) = app.tokens("alice").await;
    let path = "/api/v1/users/me/password";
    let wrong = app
        .send(
            Method::PATCH,
            path,
            Some(&access),
            Some(json!({"old_password": "nope nope", "new_password": "brand new password"})),
        )
        .await;
    wrong.assert_problem(401, "invalid_credentials");
    let short = app
        .send(
            Method::PATCH,
            path,
            Some(&access),
            Some(json!({"old_password": PASSWORD, "new_password": "short"})),
        )
        .await;
    short.assert_problem(422, "invalid_field");
    assert_eq!(short.body["field"], "new_password");
    let ok = app
        .send(
            Method::PATCH,
            path,
            Some(&access),
            Some(json!({"old_password": PASSWORD, "new_password": "brand new password"})),
        )
        .await;
    assert_eq!(ok.status, 204, "{}", ok.body);
    assert_eq!(
        app.get("/api/v1/auth/check", Some(&access)).await.status,
        200
    );
    app.get("/api/v1/auth/check", Some(&other))
        .await
        .assert_problem(401, "invalid_token");
    app.refresh(&other_refresh)
        .await
        .assert_problem(401, "invalid_refresh_token");
    app.login("alice", PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(app.login("alice", "brand new password").await.status, 200);
}

/// Self-deletion needs the password; it removes the account, its roles and
/// sessions, and its access tokens stop working at once.
#[tokio::test]
async fn delete_me_removes_everything() {
    let app = spawn_app().await;
    let (id, access, refresh) = app.user("alice").await;
    app.user("bob").await;
    app.db.query("INSERT INTO roles (name) VALUES ('trial')");
    let uid: uuid::Uuid = id.parse().unwrap();
    app.db.with(move |c| {
        c.execute(
            "INSERT INTO user_roles (user_id, role_id) SELECT $1, id FROM roles",
            &[&uid],
        )
        .unwrap();
    });
    let wrong = app
        .send(
            Method::DELETE,
            "/api/v1/users/me",
            Some(&access),
            Some(json!({"password": "nope nope"})),
        )
        .await;
    wrong.assert_problem(401, "invalid_credentials");
    let ok = app
        .send(
            Method::DELETE,
            "/api/v1/users/me",
            Some(&access),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(ok.status, 204, "{}", ok.body);
    app.get("/api/v1/auth/check", Some(&access))
        .await
        .assert_problem(401, "invalid_token");
    app.refresh(&refresh)
        .await
        .assert_problem(401, "invalid_refresh_token");
    let uid: uuid::Uuid = id.parse().unwrap();
    let left = app.db.with(move |c| {
        let mut q = |sql: &str| c.query_one(sql, &[&uid]).unwrap().get::<_, i64>(0);
        (
            q("SELECT count(*) FROM users WHERE id = $1"),
            q("SELECT count(*) FROM user_roles WHERE user_id = $1"),
            q("SELECT count(*) FROM refresh_tokens WHERE user_id = $1"),
            q("SELECT count(*) FROM login_history WHERE user_id = $1"),
        )
    });
    assert_eq!(left, (0, 0, 0, 0));
    assert_eq!(app.db.count("SELECT count(*) FROM users"), 1, "bob stays");
}

/// An administrator cannot delete itself through the API.
#[tokio::test]
async fn admin_cannot_delete_itself() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let r = app
        .send(
            Method::DELETE,
            "/api/v1/users/me",
            Some(&admin),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    r.assert_problem(403, "forbidden");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM users WHERE login = 'root'"),
        1
    );
}

/// Login history: newest first, cursor pagination, limit bounded to 100.
#[tokio::test]
async fn history_is_paginated_newest_first() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("alice").await;
    app.login("alice", "wrong password").await;
    app.login("alice", PASSWORD).await;
    let all = app.get("/api/v1/users/me/history", Some(&access)).await;
    assert_eq!(all.status, 200);
    assert_schema(&all.body, "HistoryPage");
    let outcomes: Vec<&str> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(&e["outcome"]))
        .collect();
    assert_eq!(outcomes, ["success", "bad_password", "success"]);
    assert_eq!(all.body["next_cursor"], Value::Null);
    let p1 = app
        .get("/api/v1/users/me/history?limit=2", Some(&access))
        .await;
    assert_eq!(p1.body["items"].as_array().unwrap().len(), 2);
    let cursor = s(&p1.body["next_cursor"]).to_string();
    let p2 = app
        .get(
            &format!("/api/v1/users/me/history?limit=2&cursor={cursor}"),
            Some(&access),
        )
        .await;
    let rest: Vec<&str> = p2.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(&e["outcome"]))
        .collect();
    assert_eq!(rest, ["success"]);
    assert_eq!(p2.body["next_cursor"], Value::Null);
    app.get("/api/v1/users/me/history?limit=101", Some(&access))
        .await
        .assert_problem(422, "invalid_field");
    app.get("/api/v1/users/me/history?cursor=%%%", Some(&access))
        .await
        .assert_problem(422, "invalid_field");
}

/// Sessions: each active session is listed with `current`; ending another
/// one revokes its tokens at once; unknown or foreign sessions are 404.
#[tokio::test]
async fn sessions_list_and_end() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("alice").await;
    let (other, _) = app.tokens("alice").await;
    let (_, bob, _) = app.user("bob").await;
    let r = app.get("/api/v1/users/me/sessions", Some(&access)).await;
    assert_eq!(r.status, 200);
    assert_schema(&r.body, "SessionList");
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let mine = claims(&access)["sid"].clone();
    let theirs = claims(&other)["sid"].clone();
    for item in items {
        assert_eq!(item["current"], item["id"] == mine);
        assert_eq!(item["ip"], "127.0.0.1");
    }
    let bob_sid = s(&claims(&bob)["sid"]).to_string();
    let foreign = app
        .send(
            Method::DELETE,
            &format!("/api/v1/users/me/sessions/{bob_sid}"),
            Some(&access),
            None,
        )
        .await;
    foreign.assert_problem(404, "not_found");
    assert_eq!(app.get("/api/v1/auth/check", Some(&bob)).await.status, 200);
    let unknown = uuid::Uuid::new_v4();
    app.send(
        Method::DELETE,
        &format!("/api/v1/users/me/sessions/{unknown}"),
        Some(&access),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    let ok = app
        .send(
            Method::DELETE,
            &format!("/api/v1/users/me/sessions/{}", s(&theirs)),
            Some(&access),
            None,
        )
        .await;
    assert_eq!(ok.status, 204);
    app.get("/api/v1/auth/check", Some(&other))
        .await
        .assert_problem(401, "invalid_token");
    let after = app.get("/api/v1/users/me/sessions", Some(&access)).await;
    assert_eq!(after.body["items"].as_array().unwrap().len(), 1);
}
