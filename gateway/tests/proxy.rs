//! The edge proxy end to end: a real gateway on port 0 in front of in-process
//! upstreams that report what reached them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::upstream::{self, Echo, route};
use common::*;
use gateway::config::{AuthMode, Config, OneOrMany};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// What the echo upstream saw: its JSON answer.
fn seen_header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name][0].as_str()
}

/// `auth = "required"`: no token or a bad token is a 401 problem with a
/// Bearer challenge and never reaches the upstream; a valid token passes with
/// the identity headers set from its claims.
#[tokio::test]
async fn required_auth_refuses_and_passes() {
    let echo = Echo::start("films").await;
    let app = gateway_with(
        vec![route("films", "/films", &echo.url(), AuthMode::Required)],
        |_| {},
    )
    .await;
    let (id, access, _) = app.user("alice").await;

    let none = app.get("/films/1", None).await;
    none.assert_problem(401, "invalid_token");
    assert!(
        none.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );
    let bad = app.get("/films/1", Some("not.a.token")).await;
    bad.assert_problem(401, "invalid_token");
    assert_eq!(
        echo.hits(),
        0,
        "refused requests must not reach the upstream"
    );

    let ok = app.get("/films/1?lang=en", Some(&access)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["path"], "/films/1");
    assert_eq!(ok.body["query"], "lang=en");
    assert_eq!(seen_header(&ok.body, "x-user-id"), Some(id.as_str()));
    assert_eq!(seen_header(&ok.body, "x-user-login"), Some("alice"));
    assert_eq!(seen_header(&ok.body, "x-user-roles"), Some(""));
    assert_eq!(seen_header(&ok.body, "x-user-admin"), Some("false"));
    assert_eq!(
        seen_header(&ok.body, "authorization"),
        None,
        "the token is not forwarded unless the route says so"
    );
}

/// `auth = "optional"` lets anonymous requests (and bad tokens) through
/// without identity; `auth = "public"` ignores tokens altogether.
#[tokio::test]
async fn optional_and_public_modes() {
    let echo = Echo::start("cat").await;
    let app = gateway_with(
        vec![
            route("catalog", "/catalog", &echo.url(), AuthMode::Optional),
            route("static", "/static", &echo.url(), AuthMode::Public),
        ],
        |_| {},
    )
    .await;
    let (_, access, _) = app.user("bob").await;

    let anon = app.get("/catalog", None).await;
    assert_eq!(anon.status, StatusCode::OK);
    assert_eq!(seen_header(&anon.body, "x-user-id"), None);
    let junk = app.get("/catalog", Some("junk")).await;
    assert_eq!(junk.status, StatusCode::OK);
    assert_eq!(seen_header(&junk.body, "x-user-id"), None);
    let known = app.get("/catalog", Some(&access)).await;
    assert_eq!(seen_header(&known.body, "x-user-login"), Some("bob"));

    let public = app.get("/static/a.css", Some(&access)).await;
    assert_eq!(public.status, StatusCode::OK);
    assert_eq!(seen_header(&public.body, "x-user-id"), None);
    assert_eq!(seen_header(&public.body, "authorization"), None);
}

/// A client cannot spoof an identity: every incoming `X-User-*` header is
/// removed, on every auth mode, before authgw sets its own.
#[tokio::test]
async fn spoofed_identity_headers_are_stripped() {
    let echo = Echo::start("films").await;
    let app = gateway_with(
        vec![
            route("films", "/films", &echo.url(), AuthMode::Required),
            route("open", "/open", &echo.url(), AuthMode::Public),
        ],
        |_| {},
    )
    .await;
    let (_, access, _) = app.user("carol").await;
    for (path, token) in [("/films/x", Some(access.as_str())), ("/open/x", None)] {
        let mut req = app
            .http
            .get(app.url(path))
            .header("X-User-Roles", "admin,adult")
            .header("X-User-Admin", "true")
            .header("x-user-anything", "1");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = reply(req.send().await.unwrap()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let seen = r.body["headers"].as_object().unwrap();
        assert!(!seen.contains_key("x-user-anything"), "{seen:?}");
        match token {
            Some(_) => {
                assert_eq!(seen["x-user-roles"], serde_json::json!([""]));
                assert_eq!(seen["x-user-admin"], serde_json::json!(["false"]));
            }
            None => {
                assert!(!seen.contains_key("x-user-roles"), "{seen:?}");
                assert!(!seen.contains_key("x-user-admin"), "{seen:?}");
            }
        }
    }
}

/// Hop-by-hop headers (and those `Connection` names) are removed in both
/// directions; end-to-end headers pass.
#[tokio::test]
async fn hop_by_hop_headers_removed_both_ways() {
    let echo = Echo::start("e").await;
    let app = gateway_with(vec![route("e", "/", &echo.url(), AuthMode::Public)], |_| {}).await;
    let r = app
        .http
        .get(app.url("/x"))
        .header("Connection", "x-client-hop")
        .header("x-client-hop", "secret")
        .header("TE", "trailers")
        .header("Proxy-Authorization", "Basic Zm9vOmJhcg==")
        .header("x-end-to-end", "yes")
        .send()
        .await
        .unwrap();
    let r = reply(r).await;
    let seen = r.body["headers"].as_object().unwrap();
    for hop in ["x-client-hop", "te", "proxy-authorization"] {
        assert!(
            !seen.contains_key(hop),
            "{hop} reached the upstream: {seen:?}"
        );
    }
    assert_eq!(seen["x-end-to-end"], serde_json::json!(["yes"]));

    let down = app.http.get(app.url("/hop")).send().await.unwrap();
    assert_eq!(down.status(), StatusCode::OK);
    assert!(
        down.headers().get("x-up-hop").is_none(),
        "{:?}",
        down.headers()
    );
    assert!(
        down.headers().get("keep-alive").is_none(),
        "{:?}",
        down.headers()
    );
    assert_eq!(down.headers()["x-end-to-end"], "kept");
}

/// X-Request-Id is generated (or the client's kept) and reaches both the
/// upstream and the client; X-Forwarded-For/Proto/Host describe the client.
#[tokio::test]
async fn request_id_and_forwarding_headers() {
    let echo = Echo::start("e").await;
    let app = gateway_with(vec![route("e", "/", &echo.url(), AuthMode::Public)], |_| {}).await;
    let r = app.http.get(app.url("/a")).send().await.unwrap();
    let echoed = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(seen_header(&body, "x-request-id"), Some(echoed.as_str()));
    assert_eq!(echoed.len(), 32, "a fresh UUID: {echoed}");
    assert_eq!(seen_header(&body, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen_header(&body, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen_header(&body, "x-forwarded-host"),
        Some("127.0.0.1"),
        "the host the client asked for, without port"
    );
    assert_eq!(
        seen_header(&body, "host"),
        Some(echo.addr.to_string().as_str()),
        "the upstream's own host unless preserve_host"
    );

    let r = app
        .http
        .get(app.url("/b"))
        .header("X-Request-Id", "trace-42")
        .header("X-Forwarded-For", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42");
    let body: Value = r.json().await.unwrap();
    assert_eq!(seen_header(&body, "x-request-id"), Some("trace-42"));
    assert_eq!(
        seen_header(&body, "x-forwarded-for"),
        Some("127.0.0.1"),
        "an untrusted client's X-Forwarded-For is replaced"
    );
}

/// Routing: longest prefix wins, strip_prefix rewrites the path, an
/// unmatched path is a 404 problem, a method the route refuses is a 405, and
/// the Auth API's own paths are never proxied.
#[tokio::test]
async fn routing_prefix_strip_and_not_found() {
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let mut premium = route("premium", "/films/premium", &b.url(), AuthMode::Public);
    premium.strip_prefix = true;
    premium.methods = Some(vec!["GET".into()]);
    let app = gateway_with(
        vec![
            route("films", "/films", &a.url(), AuthMode::Public),
            premium,
            route("everything", "/", &a.url(), AuthMode::Public),
        ],
        |_| {},
    )
    .await;
    let r = app.get("/films/premium/7", None).await;
    assert_eq!(
        (r.body["upstream"].as_str(), r.body["path"].as_str()),
        (Some("b"), Some("/7"))
    );
    let r = app.get("/films/7", None).await;
    assert_eq!(r.body["upstream"], "a");
    let r = app
        .send(reqwest::Method::DELETE, "/films/premium/7", None, None)
        .await;
    assert_eq!(
        r.body["upstream"], "a",
        "methods restrict a route; a shorter prefix takes it"
    );
    let r = app.get("/api/v1/auth/check", None).await;
    r.assert_problem(401, "invalid_token");
    assert_eq!(
        a.hits() + b.hits(),
        3,
        "the Auth API is served by authgw itself"
    );

    let lone = Echo::start("lone").await;
    let mut only_get = route("ro", "/ro", &lone.url(), AuthMode::Public);
    only_get.methods = Some(vec!["GET".into()]);
    let app = gateway_with(vec![only_get], |_| {}).await;
    app.get("/nowhere", None)
        .await
        .assert_problem(404, "not_found");
    app.send(reqwest::Method::POST, "/ro/x", None, None)
        .await
        .assert_problem(405, "method_not_allowed");
    assert_eq!(lone.hits(), 0);
}

/// Several upstreams are used in turn.
#[tokio::test]
async fn round_robin_over_upstreams() {
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let mut r = route("rr", "/", &a.url(), AuthMode::Public);
    r.upstream = OneOrMany::Many(vec![a.url(), b.url()]);
    let app = gateway_with(vec![r], |_| {}).await;
    for _ in 0..4 {
        assert_eq!(app.get("/x", None).await.status, StatusCode::OK);
    }
    assert_eq!((a.hits(), b.hits()), (2, 2));
}

/// An upstream that refuses the connection is a 502 problem; one that does
/// not answer within the route's response_timeout is a 504 problem.
#[tokio::test]
async fn bad_gateway_and_gateway_timeout() {
    let refused = upstream::refused_addr().await;
    let (silent, _closed) = upstream::silent_upstream().await;
    let mut slow = route(
        "slow",
        "/slow",
        &format!("http://{silent}"),
        AuthMode::Public,
    );
    slow.response_timeout = Duration::from_millis(300);
    let app = gateway_with(
        vec![
            route(
                "down",
                "/down",
                &format!("http://{refused}"),
                AuthMode::Public,
            ),
            slow,
        ],
        |_| {},
    )
    .await;
    app.get("/down", None)
        .await
        .assert_problem(502, "bad_gateway");
    let started = Instant::now();
    app.get("/slow", None)
        .await
        .assert_problem(504, "gateway_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A client that goes away cancels its upstream request: the upstream's
/// connection is closed.
#[tokio::test]
async fn client_disconnect_cancels_upstream() {
    let (silent, mut closed) = upstream::silent_upstream().await;
    let app = gateway_with(
        vec![route(
            "s",
            "/",
            &format!("http://{silent}"),
            AuthMode::Public,
        )],
        |_| {},
    )
    .await;
    let mut client = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    client
        .write_all(b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);
    let seen = tokio::time::timeout(Duration::from_secs(5), closed.recv()).await;
    assert!(
        matches!(seen, Ok(Some(()))),
        "the upstream connection stayed open"
    );
}

/// A pooled connection the upstream closed is retried once for an idempotent
/// request without a body, and never for a POST.
#[tokio::test]
async fn stale_pooled_connection_retry() {
    let stale = upstream::stale_upstream().await;
    let app = gateway_with(
        vec![route(
            "s",
            "/",
            &format!("http://{stale}"),
            AuthMode::Public,
        )],
        |_| {},
    )
    .await;
    for _ in 0..3 {
        let r = app.get("/x", None).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "GET on a stale connection: {}",
            r.body
        );
    }
    // The pool now holds a connection the upstream will drop: a POST on it
    // is not sent again, so the client sees the failure...
    let on_stale = app.post("/y", None, serde_json::json!({})).await;
    on_stale.assert_problem(502, "bad_gateway");
    // ...and the next POST, on a fresh connection, goes through.
    let fresh = app.post("/y", None, serde_json::json!({})).await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
}

/// Bodies stream through in both directions: a slow upstream's chunks reach
/// the client as they come, and a response body that stalls past the idle
/// timeout ends the response.
#[tokio::test]
async fn response_streams_and_idle_timeout() {
    let echo = Echo::start("s").await;
    let mut idle = route("idle", "/stream/3/800", &echo.url(), AuthMode::Public);
    idle.idle_timeout = Duration::from_millis(300);
    let app = gateway_with(
        vec![route("s", "/", &echo.url(), AuthMode::Public), idle],
        |_| {},
    )
    .await;
    let started = Instant::now();
    let mut r = app.http.get(app.url("/stream/5/200")).send().await.unwrap();
    let first = r.chunk().await.unwrap().unwrap();
    assert_eq!(first.len(), 1024);
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "the first chunk was held back"
    );
    let mut total = first.len();
    while let Some(c) = r.chunk().await.unwrap() {
        total += c.len();
    }
    assert_eq!(total, 5 * 1024);

    let mut r = app.http.get(app.url("/stream/3/800")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut got = 0;
    let mut failed = false;
    loop {
        match r.chunk().await {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed && got < 3 * 1024,
        "the stalled body was not cut: {got} bytes"
    );
}

/// A WebSocket upgrade passes through on a route with `websocket = true`, and
/// bytes flow both ways over the tunnel; on other routes the Upgrade header
/// is dropped like any hop-by-hop header.
#[tokio::test]
async fn websocket_upgrade_passes_on_allowed_routes() {
    let echo = Echo::start("ws").await;
    let mut ws = route("ws", "/ws", &echo.url(), AuthMode::Public);
    ws.websocket = true;
    let app = gateway_with(
        vec![ws, route("plain", "/", &echo.url(), AuthMode::Public)],
        |_| {},
    )
    .await;
    let (mut sock, head) = ws_handshake(app.addr, "/ws").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    sock.write_all(b"ping over the tunnel").await.unwrap();
    assert_eq!(
        read_within(&mut sock, Duration::from_secs(5)).await,
        b"ping over the tunnel"
    );

    let r = app
        .http
        .get(app.url("/other"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(seen_header(&body, "upgrade"), None);
}

/// HTTP/2 clients are served (h2c, prior knowledge) and proxied to an
/// HTTP/1.1 upstream, with a `Host`: the upstream's, or with
/// `preserve_host` the client's (its `:authority`, as HTTP/2 sends no
/// `Host`).
#[tokio::test]
async fn http2_clients() {
    let echo = Echo::start("e").await;
    let mut kept = route("kept", "/kept", &echo.url(), AuthMode::Public);
    kept.preserve_host = true;
    let app = gateway_with(
        vec![route("e", "/", &echo.url(), AuthMode::Public), kept],
        |_| {},
    )
    .await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(app.url("/h2?x=1")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["path"], "/h2");
    assert_eq!(seen_header(&body, "x-forwarded-host"), Some("127.0.0.1"));
    assert_eq!(
        seen_header(&body, "host"),
        Some(echo.addr.to_string().as_str())
    );
    let r = h2.get(app.url("/kept/1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        seen_header(&body, "host"),
        Some(app.addr.to_string().as_str()),
        "the client's authority"
    );
}

/// The token may come from the configured cookie; the cookie is not passed
/// upstream unless the route forwards credentials, and other cookies are.
#[tokio::test]
async fn token_from_cookie_and_forward_authorization() {
    let echo = Echo::start("e").await;
    let mut fwd = route("fwd", "/fwd", &echo.url(), AuthMode::Required);
    fwd.forward_authorization = true;
    let app = gateway_with(
        vec![route("c", "/c", &echo.url(), AuthMode::Required), fwd],
        |c| c.proxy.token_cookie = Some("access_token".into()),
    )
    .await;
    let (_, access, _) = app.user("dave").await;
    let r = app
        .http
        .get(app.url("/c"))
        .header("Cookie", format!("theme=dark; access_token={access}"))
        .send()
        .await
        .unwrap();
    let r = reply(r).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(seen_header(&r.body, "x-user-login"), Some("dave"));
    assert_eq!(seen_header(&r.body, "cookie"), Some("theme=dark"));

    let r = app.get("/fwd", Some(&access)).await;
    assert_eq!(
        seen_header(&r.body, "authorization"),
        Some(format!("Bearer {access}").as_str())
    );
}

/// Logout-all on one gateway is refused at another gateway's proxy within a
/// second, although that proxy had the token in its verified-token cache.
#[tokio::test]
async fn revoked_token_refused_at_the_proxy_within_a_second() {
    let echo = Echo::start("e").await;
    let api = gateway_with(Vec::new(), |_| {}).await;
    let mut config = api.config.clone();
    config.routes = vec![route("e", "/", &echo.url(), AuthMode::Required)];
    let edge = start(api.db.clone(), api.keys.clone(), config).await;
    let (_, access, _) = api.user("erin").await;
    assert_eq!(
        edge.get("/films", Some(&access)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        edge.get("/films", Some(&access)).await.status,
        StatusCode::OK
    );

    let out = api
        .post("/api/v1/auth/logout-all", Some(&access), Value::Null)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.body);
    let started = Instant::now();
    loop {
        let r = edge.get("/films", Some(&access)).await;
        if r.status == StatusCode::UNAUTHORIZED {
            r.assert_problem(401, "invalid_token");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still accepted after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With PostgreSQL unreachable, the proxy keeps serving valid tokens (no
/// database on the hot path) while the Auth API's login answers 503.
#[tokio::test]
async fn database_unreachable_proxy_keeps_serving() {
    let echo = Echo::start("e").await;
    let api = gateway_with(Vec::new(), |_| {}).await;
    let (_, access, _) = api.user("frank").await;
    let mut config = api.config.clone();
    config.database.url = format!(
        "postgresql://postgres@{}/nope",
        upstream::refused_addr().await
    );
    config.database.connect_timeout = Duration::from_millis(500);
    config.routes = vec![route("e", "/", &echo.url(), AuthMode::Required)];
    let edge = start(api.db.clone(), api.keys.clone(), config).await;
    for _ in 0..3 {
        let r = edge.get("/films", Some(&access)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(seen_header(&r.body, "x-user-login"), Some("frank"));
    }
    let login = edge
        .post(
            "/api/v1/auth/login",
            None,
            serde_json::json!({"login": "frank", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status.as_u16(), 503, "{}", login.body);
}

/// SIGHUP-style reload swaps routes while a request is in flight: the
/// in-flight request finishes on the old route, new requests take the new
/// one, and an invalid config is refused while the old one keeps serving.
#[tokio::test]
async fn reload_swaps_routes_without_failing_in_flight() {
    let old = Echo::start("old").await;
    let new = Echo::start("new").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let write = |upstream: &str, extra: &str| {
        std::fs::write(
            &file,
            format!(
                "[[routes]]\nname = \"films\"\nprefix = \"/\"\nupstream = \"{upstream}\"\nauth = \"public\"\n{extra}"
            ),
        )
        .unwrap();
    };
    write(&old.url(), "");
    let app = spawn_app_with(|c| {
        let mut loaded = Config::load(&file, true).unwrap();
        loaded.database = c.database.clone();
        loaded.tokens = c.tokens.clone();
        loaded.limits = c.limits.clone();
        *c = loaded;
    })
    .await;
    assert_eq!(app.get("/x", None).await.body["upstream"], "old");

    let in_flight = {
        let http = app.http.clone();
        let url = app.url("/slow/700");
        tokio::spawn(async move { reply(http.get(url).send().await.unwrap()).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    write(&new.url(), "");
    let keys = app.keys.path().display().to_string();
    let reloaded = app.reloader.clone();
    let summary = tokio::task::spawn_blocking(move || {
        // Keys come from the file too: point it at the test's keys.
        let mut config = Config::load(&file, true).unwrap();
        config.tokens.keys_dir = keys.into();
        reloaded.apply(&config)
    })
    .await
    .unwrap();
    assert_eq!(
        summary.as_deref(),
        Ok("reloaded: 1 routes, 0 plugins, 1 keys")
    );
    assert_eq!(app.get("/x", None).await.body["upstream"], "new");
    let finished = in_flight.await.unwrap();
    assert_eq!(finished.status, StatusCode::OK);
    assert_eq!(finished.body["upstream"], "old");

    // An invalid file is refused through the admin listener; "new" keeps serving.
    std::fs::write(dir.path().join("gateway.toml"), "[[routes]]\nname = 1\n").unwrap();
    let refused = app
        .http
        .post(format!("http://{}/reload", app.admin_addr))
        .send()
        .await
        .unwrap();
    let refused = reply(refused).await;
    refused.assert_problem(422, "reload_refused");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("gateway.toml: routes[0].name"),
        "{}",
        refused.body
    );
    assert_eq!(app.get("/x", None).await.body["upstream"], "new");
}

/// `/metrics` on the admin listener counts requests by route and status,
/// auth failures by reason, upstream latency, and reads the revocation set,
/// pool and hashing gauges, and the open and parked connections.
#[tokio::test]
async fn metrics_on_the_admin_listener() {
    let echo = Echo::start("e").await;
    let app = gateway_with(
        vec![route("films", "/films", &echo.url(), AuthMode::Required)],
        |_| {},
    )
    .await;
    let (_, access, _) = app.user("gina").await;
    app.get("/films", Some(&access)).await;
    app.get("/films", None).await;
    let r = app
        .http
        .get(format!("http://{}/metrics", app.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    for line in [
        "authgw_proxy_requests_total{route=\"films\",status=\"200\"} 1",
        "authgw_proxy_requests_total{route=\"films\",status=\"401\"} 1",
        "authgw_proxy_auth_failures_total{reason=\"missing\"} 1",
        "authgw_upstream_response_seconds_count{route=\"films\"} 1",
        "authgw_revocation_set_entries 0",
        "authgw_db_pool_in_use 0",
        "authgw_password_hash_queue 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The test client keeps its keep-alive connection to the main listener.
    let gauge = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("missing {name} in:\n{text}"))
    };
    assert!(gauge("authgw_connections_open") >= 1);
    assert!(gauge("authgw_connections_parked") <= gauge("authgw_connections_open"));
    let main = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(
        main.status(),
        StatusCode::NOT_FOUND,
        "metrics only on the admin listener"
    );
}

/// Graceful shutdown lets an in-flight proxied request finish.
#[tokio::test]
async fn shutdown_drains_in_flight_proxied_requests() {
    let echo = Echo::start("e").await;
    let mut app = gateway_with(vec![route("e", "/", &echo.url(), AuthMode::Public)], |_| {}).await;
    let in_flight = {
        let http = app.http.clone();
        let url = app.url("/slow/500");
        tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.stop().await.unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap(), StatusCode::OK);
}
