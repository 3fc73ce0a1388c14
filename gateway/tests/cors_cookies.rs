//! Browser frontends (issue 21) at the HTTP level: CORS on the Auth API and
//! on `cors = true` routes, cookie sessions (the HttpOnly refresh cookie,
//! the optional access cookie) and the CSRF proof they owe, against a real
//! gateway on real PostgreSQL with an echo upstream. The same flows in a
//! real Chromium are in tests/browser.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream::{Echo, route};
use common::*;
use gateway::config::{AuthMode, Config};
use reqwest::Method;
use serde_json::json;

const APP: &str = "https://cinema.example";
const EVIL: &str = "https://evil.example";
const SIBLING: &str = "https://forum.cinema.example";
const REFRESH_COOKIE: &str = "__Secure-authgw_refresh";
const ACCESS_COOKIE: &str = "__Host-authgw_access";

/// A gateway whose app is [`APP`], with the access cookie on, and routes
/// to `echo`, all requiring a token: `/films` (cors), `/plain` (no cors),
/// `/fwd` (forward_authorization) and `/ws` (websocket).
async fn browser_app(echo: &Echo, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let url = echo.url();
    spawn_app_with(move |c: &mut Config| {
        c.cors.allowed_origins = vec![APP.into()];
        c.auth.access_cookie = true;
        c.routes = vec![
            gateway::config::RouteConfig {
                cors: true,
                ..route("films", "/films", &url, AuthMode::Required)
            },
            route("plain", "/plain", &url, AuthMode::Required),
            gateway::config::RouteConfig {
                forward_authorization: true,
                ..route("fwd", "/fwd", &url, AuthMode::Required)
            },
            gateway::config::RouteConfig {
                websocket: true,
                ..route("ws", "/ws", &url, AuthMode::Required)
            },
        ];
        tweak(c);
    })
    .await
}

/// A request as the app's page sends it: from [`APP`], with the custom header.
fn from_app(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("origin", APP)
        .header("x-requested-with", "authgw")
}

/// The value of cookie `name` set by `reply` (None when absent).
fn set_cookie<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
}

/// The value of cookie `name`, which `reply` must set.
fn set_value(reply: &Reply, name: &str) -> String {
    let line = set_cookie(reply, name).unwrap_or_else(|| panic!("no {name} set: {reply:?}"));
    cookie_value(line).to_string()
}

/// `name=value` of the refresh cookie `reply` sets, as a `Cookie` header.
fn refresh_cookie_of(reply: &Reply) -> String {
    format!("{REFRESH_COOKIE}={}", set_value(reply, REFRESH_COOKIE))
}

/// No `Access-Control-*` header at all (what an unlisted origin gets).
fn assert_no_cors(headers: &reqwest::header::HeaderMap, what: &str) {
    let cors: Vec<&str> = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "{what}: {cors:?}");
}

/// The value part of a `Set-Cookie` line.
fn cookie_value(line: &str) -> &str {
    line.split(';')
        .next()
        .and_then(|p| p.split_once('='))
        .map_or("", |(_, v)| v)
}

/// Signs `login` up and logs in in cookie mode from the app; returns the
/// answer.
async fn cookie_login(app: &TestApp, login: &str) -> Reply {
    app.signup(login, PASSWORD).await;
    let req = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"login": login, "password": PASSWORD, "cookie": true}));
    reply(from_app(req).send().await.unwrap()).await
}

/// `POST /api/v1/auth/<what>` with no body and `cookies`, shaped by `shape`.
async fn with_cookies(
    app: &TestApp,
    what: &str,
    cookies: &str,
    shape: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Reply {
    let req = app
        .http
        .post(app.url(&format!("/api/v1/auth/{what}")))
        .header("cookie", cookies);
    reply(shape(req).send().await.unwrap()).await
}

/// Login in cookie mode: the refresh token only in an HttpOnly, Secure,
/// SameSite=Strict cookie with the narrow Path and the `__Secure-` name; the
/// access token in the JSON and, with `auth.access_cookie`, in a `__Host-`
/// cookie for the proxy. Body mode is unchanged. No token answer may be
/// cached (`Cache-Control: no-store`, RFC 6749 §5.1).
#[tokio::test]
async fn cookie_login_keeps_the_refresh_token_out_of_the_json() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |_| {}).await;
    let r = cookie_login(&app, "alice").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("refresh_token").is_none(), "{}", r.body);
    assert!(r.body["access_token"].is_string());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let refresh = set_cookie(&r, REFRESH_COOKIE).expect("refresh cookie");
    let value = cookie_value(refresh);
    assert!(uuid::Uuid::parse_str(value).is_ok(), "{refresh}");
    assert_eq!(
        refresh,
        format!(
            "{REFRESH_COOKIE}={value}; Path=/api/v1/auth; Max-Age=2592000; HttpOnly; Secure; SameSite=Strict"
        )
    );
    let access = set_cookie(&r, ACCESS_COOKIE).expect("access cookie");
    assert_eq!(
        cookie_value(access),
        r.body["access_token"].as_str().unwrap()
    );
    assert!(
        access.ends_with("; Path=/; Max-Age=900; HttpOnly; Secure; SameSite=Strict"),
        "{access}"
    );
    // Body mode: both tokens in the JSON, no cookie.
    let r = app.login("alice", PASSWORD).await;
    assert!(r.body["refresh_token"].is_string());
    assert!(r.headers.get("set-cookie").is_none());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = app.refresh(r.body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

/// Cookie-mode login owes the CSRF proof, checked before the password: a
/// forged attempt (no custom header, another origin, a sibling subdomain,
/// `null`, no origin) gets 403 `csrf_rejected`, no cookie, and leaves no
/// trace in the login history or the failure counters.
#[tokio::test]
async fn cookie_login_without_the_proof_is_refused_before_the_password() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |_| {}).await;
    app.signup("bob", PASSWORD).await;
    let body = json!({"login": "bob", "password": "wrong password, really", "cookie": true});
    let shapes: Vec<Vec<(&str, &str)>> = vec![
        vec![("origin", APP)],
        vec![("origin", EVIL), ("x-requested-with", "authgw")],
        vec![("origin", SIBLING), ("x-requested-with", "authgw")],
        vec![("origin", "null"), ("x-requested-with", "authgw")],
        vec![("x-requested-with", "authgw")],
        vec![
            ("referer", "https://evil.example/x"),
            ("x-requested-with", "authgw"),
        ],
    ];
    for headers in shapes {
        let mut req = app.http.post(app.url("/api/v1/auth/login")).json(&body);
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let r = reply(req.send().await.unwrap()).await;
        r.assert_problem(403, "csrf_rejected");
        assert!(r.headers.get("set-cookie").is_none(), "{headers:?}");
    }
    assert_eq!(app.db.count("SELECT count(*) FROM login_history"), 0);
    assert_eq!(app.db.count("SELECT count(*) FROM login_failures"), 0);
    assert_eq!(app.db.count("SELECT count(*) FROM refresh_tokens"), 0);
}

/// A refresh with no body takes the refresh cookie, rotates it (a new
/// Set-Cookie, a fresh access token, no refresh token in the JSON) and the
/// idempotent grace holds as in body mode: the same cookie again within the
/// grace gets the same successor, with no second rotation.
#[tokio::test]
async fn cookie_refresh_rotates_the_cookie() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |_| {}).await;
    let login = cookie_login(&app, "carol").await;
    let first = set_value(&login, REFRESH_COOKIE);
    let cookie = format!("{REFRESH_COOKIE}={first}");
    let r = with_cookies(&app, "refresh", &cookie, from_app).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("refresh_token").is_none());
    let next = set_value(&r, REFRESH_COOKIE);
    assert_ne!(next, first);
    let check = app
        .get("/api/v1/auth/check", r.body["access_token"].as_str())
        .await;
    assert_eq!(check.body["login"], "carol");
    // A racing tab with the same cookie: the same successor.
    let again = with_cookies(&app, "refresh", &cookie, from_app).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(set_value(&again, REFRESH_COOKIE), next);
    assert_eq!(app.db.count("SELECT count(*) FROM refresh_tokens"), 2);
    // The successor rotates in turn.
    let r = with_cookies(
        &app,
        "refresh",
        &format!("{REFRESH_COOKIE}={next}"),
        from_app,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.db.count("SELECT count(*) FROM refresh_tokens"), 3);
}

/// A cookie refresh without the proof is refused and consumes nothing: the
/// cookie still works afterwards from the app. Sent from the app's origin
/// but without the custom header (a form), from another origin, from a
/// sibling subdomain (the same site: SameSite would not stop it).
#[tokio::test]
async fn cookie_refresh_without_the_proof_changes_nothing() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |_| {}).await;
    let login = cookie_login(&app, "dave").await;
    let cookie = refresh_cookie_of(&login);
    for origin in [APP, EVIL, SIBLING] {
        let r = with_cookies(&app, "refresh", &cookie, |req| {
            let req = req
                .header("origin", origin)
                .header("content-type", "application/x-www-form-urlencoded");
            if origin == APP {
                req
            } else {
                req.header("x-requested-with", "authgw")
            }
        })
        .await;
        r.assert_problem(403, "csrf_rejected");
        assert!(r.headers.get("set-cookie").is_none());
    }
    assert_eq!(
        app.db.count(
            "SELECT count(*) FROM refresh_tokens WHERE used_at IS NULL AND revoked_at IS NULL"
        ),
        1
    );
    let r = with_cookies(&app, "refresh", &cookie, from_app).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// No body and no cookie is a 401 (nothing to refresh); a refresh cookie
/// sent twice (one tossed by a sibling subdomain) is refused, rotates
/// neither and is not cleared (which would leave only the tossed one); a dead cookie (after logout) gets 401 and is
/// cleared.
#[tokio::test]
async fn cookie_refresh_refuses_missing_doubled_and_dead_cookies() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |_| {}).await;
    let r = with_cookies(&app, "refresh", "other=1", from_app).await;
    r.assert_problem(401, "invalid_refresh_token");
    let login = cookie_login(&app, "erin").await;
    let value = set_value(&login, REFRESH_COOKIE);
    let tossed = format!(
        "{REFRESH_COOKIE}={}; {REFRESH_COOKIE}={value}",
        uuid::Uuid::new_v4()
    );
    let r = with_cookies(&app, "refresh", &tossed, from_app).await;
    r.assert_problem(401, "invalid_refresh_token");
    // Not cleared: that would drop only ours and leave the tossed one.
    assert!(set_cookie(&r, REFRESH_COOKIE).is_none());
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM refresh_tokens WHERE used_at IS NULL"),
        1
    );
    let cookie = format!("{REFRESH_COOKIE}={value}");
    let out = with_cookies(&app, "logout", &cookie, from_app).await;
    assert_eq!(out.status, 204, "{}", out.body);
    let r = with_cookies(&app, "refresh", &cookie, from_app).await;
    r.assert_problem(401, "invalid_refresh_token");
    assert!(set_cookie(&r, REFRESH_COOKIE).is_some_and(|c| c.contains("Max-Age=0")));
}

/// Logout and logout-all by the refresh cookie (no access token at hand,
/// as after a reload): with the proof they end the session(s), revoke its
/// access tokens and clear both cookies; without it, 403 and the session
/// lives on.
#[tokio::test]
async fn logout_by_cookie_needs_the_proof_and_clears_the_cookies() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |_| {}).await;
    let login = cookie_login(&app, "frank").await;
    let access = login.body["access_token"].as_str().unwrap().to_string();
    let cookie = refresh_cookie_of(&login);
    let (_, other_refresh) = app.tokens("frank").await;
    for what in ["logout", "logout-all"] {
        let r = with_cookies(&app, what, &cookie, |req| req.header("origin", EVIL)).await;
        r.assert_problem(403, "csrf_rejected");
    }
    assert_eq!(app.db.count("SELECT count(*) FROM revocations"), 0);
    assert_eq!(
        app.get("/api/v1/auth/check", Some(&access)).await.status,
        200
    );

    let r = with_cookies(&app, "logout-all", &cookie, from_app).await;
    assert_eq!(r.status, 204, "{}", r.body);
    for name in [REFRESH_COOKIE, ACCESS_COOKIE] {
        let line = set_cookie(&r, name).unwrap_or_else(|| panic!("{name} cleared"));
        assert!(
            line.starts_with(&format!("{name}=; ")) && line.contains("Max-Age=0"),
            "{line}"
        );
    }
    app.get("/api/v1/auth/check", Some(&access))
        .await
        .assert_problem(401, "invalid_token");
    // logout-all ended the body-mode session too.
    app.refresh(&other_refresh)
        .await
        .assert_problem(401, "invalid_refresh_token");
}

/// A bearer logout (the page still holds its access token) clears the
/// cookies too, and owes no proof.
#[tokio::test]
async fn bearer_logout_clears_the_cookies_without_proof() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |_| {}).await;
    let login = cookie_login(&app, "grace").await;
    let access = login.body["access_token"].as_str().unwrap();
    let r = reply(
        app.http
            .post(app.url("/api/v1/auth/logout"))
            .bearer_auth(access)
            .header("origin", EVIL)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(set_cookie(&r, REFRESH_COOKIE).is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NOT NULL"),
        1
    );
}

/// The Auth API's preflight from the app is answered (origin, credentials,
/// methods, the custom header, max-age, Vary); from an unlisted origin it
/// carries no CORS header at all; real answers carry them only for the
/// app, and Vary for everyone.
#[tokio::test]
async fn auth_api_cors() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |_| {}).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(Method::OPTIONS, app.url("/api/v1/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-requested-with",
            )
            .send()
    };
    let ok = reply(preflight(APP).await.unwrap()).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), Some(APP));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert!(
        ok.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        ok.header("access-control-allow-headers")
            .unwrap()
            .contains("x-requested-with")
    );
    assert_eq!(ok.header("access-control-max-age"), Some("600"));
    assert!(ok.header("vary").unwrap().contains("origin"));
    for origin in [EVIL, SIBLING, "null", "https://cinema.example.evil.example"] {
        let r = reply(preflight(origin).await.unwrap()).await;
        assert!(
            r.headers.get("access-control-allow-origin").is_none(),
            "{origin}"
        );
        assert_no_cors(&r.headers, origin);
    }
    let get = |origin: &'static str| {
        app.http
            .get(app.url("/.well-known/jwks.json"))
            .header("origin", origin)
            .send()
    };
    let r = get(APP).await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    let r = get(EVIL).await.unwrap();
    assert_no_cors(r.headers(), EVIL);
    assert!(r.headers()["vary"].to_str().unwrap().contains("origin"));
    // Without [cors], no CORS headers at all.
    let plain = spawn_app().await;
    let r = plain
        .http
        .request(Method::OPTIONS, plain.url("/api/v1/auth/login"))
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_eq!(r.status(), 405);
}

/// On a `cors = true` route a preflight is answered by authgw without a
/// token and never reaches the upstream; the upstream's own permissive
/// `Access-Control-*` headers are replaced by the gateway's. A route
/// without `cors` is not answered by the CORS layer (the OPTIONS is an
/// ordinary request: 401 without a token).
#[tokio::test]
async fn proxied_cors_routes() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |_| {}).await;
    let preflight = |path: &str, origin: &'static str| {
        app.http
            .request(Method::OPTIONS, app.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "DELETE")
            .send()
    };
    let r = reply(preflight("/films/1", APP).await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    let r = reply(preflight("/films/1", EVIL).await.unwrap()).await;
    assert_no_cors(&r.headers, EVIL);
    assert!(r.header("vary").unwrap().contains("origin"));
    assert_eq!(echo.hits(), 0, "a preflight reached the upstream");
    let r = reply(preflight("/plain/1", APP).await.unwrap()).await;
    r.assert_problem(401, "invalid_token");
    assert!(r.headers.get("access-control-allow-origin").is_none());

    let (_, access, _) = app.user("hank").await;
    let send = |origin: &'static str| {
        app.http
            .get(app.url("/films/acao"))
            .bearer_auth(&access)
            .header("origin", origin)
            .send()
    };
    let r = reply(send(APP).await.unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert!(r.headers.get("access-control-allow-methods").is_none());
    let r = reply(send(EVIL).await.unwrap()).await;
    assert_eq!(r.status, 200);
    assert_no_cors(&r.headers, "upstream's * kept");
    assert_eq!(echo.hits(), 2);
}

/// With a `[cors]` layer, `/check` stays with the router (the shortcut
/// answers it only without one): an allowed origin's call gets its CORS
/// headers, and its preflight is the layer's answer, not a 405.
#[tokio::test]
async fn check_keeps_its_cors_answers() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |_| {}).await;
    let (_, access, _) = app.user("kim").await;
    let r = app
        .http
        .get(app.url("/api/v1/auth/check"))
        .bearer_auth(&access)
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some(APP)
    );
    let preflight = app
        .http
        .request(Method::OPTIONS, app.url("/api/v1/auth/check"))
        .header("origin", APP)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some(APP)
    );
    assert_eq!(echo.hits(), 0);
}

/// The forward-auth endpoints stay outside CORS: an ext-authz call for an
/// original `OPTIONS` shaped like a preflight is decided (401 on a route
/// that requires a token), not answered 200 by the CORS layer, which Envoy
/// would take for an allow.
#[tokio::test]
async fn forward_auth_is_not_answered_by_cors() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let r = app
        .http
        .request(Method::OPTIONS, app.url("/api/v1/authz/ext-authz/films/1"))
        .header("origin", APP)
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// The proxy on the access cookie: a safe method needs no proof; a state
/// change needs the origin and the custom header (403 and never the
/// upstream otherwise); a bearer request owes nothing; the upstream never
/// sees the access or the refresh cookie, even with forward_authorization
/// the refresh cookie stays behind.
#[tokio::test]
async fn proxy_on_the_access_cookie_owes_the_proof_for_state_changes() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |_| {}).await;
    let login = cookie_login(&app, "ivy").await;
    let access = set_value(&login, ACCESS_COOKIE);
    let refresh = set_value(&login, REFRESH_COOKIE);
    let cookies = format!("{ACCESS_COOKIE}={access}; {REFRESH_COOKIE}={refresh}; theme=dark");
    let send = |method: Method, path: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let mut req = app
            .http
            .request(method, app.url(path))
            .header("cookie", cookies.clone());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { reply(req.send().await.unwrap()).await }
    };
    let r = send(Method::GET, "/films/1", vec![]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["headers"]["x-user-login"][0], "ivy");
    assert_eq!(r.body["headers"]["cookie"][0], "theme=dark");
    let before = echo.hits();
    for (method, headers) in [
        (Method::POST, vec![]),
        (Method::POST, vec![("origin", APP)]),
        (
            Method::DELETE,
            vec![("origin", EVIL), ("x-requested-with", "1")],
        ),
        (
            Method::PUT,
            vec![("origin", SIBLING), ("x-requested-with", "1")],
        ),
        (Method::PATCH, vec![("x-requested-with", "1")]),
    ] {
        let r = send(method.clone(), "/films/1", headers.clone()).await;
        r.assert_problem(403, "csrf_rejected");
        let r = send(method, "/plain/1", headers).await;
        r.assert_problem(403, "csrf_rejected");
    }
    assert_eq!(echo.hits(), before, "a forged request reached the upstream");
    let r = send(
        Method::POST,
        "/films/1",
        vec![("origin", APP), ("x-requested-with", "authgw")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["headers"]["x-user-login"][0], "ivy");
    let r = send(
        Method::POST,
        "/fwd/1",
        vec![("origin", APP), ("x-requested-with", "authgw")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let forwarded = r.body["headers"]["cookie"][0].as_str().unwrap();
    assert!(
        forwarded.contains(ACCESS_COOKIE) && !forwarded.contains(REFRESH_COOKIE),
        "{forwarded}"
    );
    // Bearer: no proof owed, from anywhere.
    let (_, bearer, _) = app.user("jack").await;
    let r = reply(
        app.http
            .delete(app.url("/plain/1"))
            .bearer_auth(&bearer)
            .header("origin", EVIL)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A WebSocket handshake on the access cookie (cross-site WebSocket
/// hijacking: a browser attaches the cookie and cannot add headers) needs
/// an allowed Origin: another origin gets 403 and no tunnel.
#[tokio::test]
async fn websocket_on_the_cookie_needs_an_allowed_origin() {
    let echo = Echo::start("ws").await;
    let app = browser_app(&echo, |_| {}).await;
    let login = cookie_login(&app, "kate").await;
    let access = set_value(&login, ACCESS_COOKIE);
    let handshake = |origin: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Origin: {origin}\r\nCookie: {ACCESS_COOKIE}={access}\r\n\r\n",
            app.addr
        )
    };
    for origin in [EVIL, SIBLING, "null"] {
        let head = first_answer(app.addr, &handshake(origin)).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{origin}: {head}");
        assert!(head.contains("csrf_rejected"), "{origin}: {head}");
    }
    assert_eq!(echo.hits(), 0);
    let head = first_answer(app.addr, &handshake(APP)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(echo.hits(), 1);
}

/// Writes `request` on a fresh connection and returns the answer's head
/// and, when it declares a length, its body (a handshake's connection stays
/// open, so no read to the end).
async fn first_answer(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut got: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        if n == 0 {
            return String::from_utf8_lossy(&got).into_owned();
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// Rotation rules are the body mode's: within the grace, a cookie whose
/// successor was rotated further gets 409 and the cookies are left alone
/// (the jar holds the newer one); after the grace, the old cookie is reuse:
/// 401 `refresh_token_reused`, the session revoked, the cookies cleared.
#[tokio::test]
async fn cookie_mode_keeps_the_rotation_rules() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |_| {}).await;
    let login = cookie_login(&app, "lena").await;
    let first = refresh_cookie_of(&login);
    let r = with_cookies(&app, "refresh", &first, from_app).await;
    let second = refresh_cookie_of(&r);
    let r = with_cookies(&app, "refresh", &second, from_app).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = with_cookies(&app, "refresh", &first, from_app).await;
    r.assert_problem(409, "refresh_token_already_rotated");
    assert!(r.headers.get("set-cookie").is_none());

    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |c| {
        c.tokens.refresh_reuse_grace = std::time::Duration::ZERO;
    })
    .await;
    let login = cookie_login(&app, "mia").await;
    let access = login.body["access_token"].as_str().unwrap().to_string();
    let first = refresh_cookie_of(&login);
    assert_eq!(
        with_cookies(&app, "refresh", &first, from_app).await.status,
        200
    );
    let r = with_cookies(&app, "refresh", &first, from_app).await;
    r.assert_problem(401, "refresh_token_reused");
    assert!(set_cookie(&r, REFRESH_COOKIE).is_some_and(|c| c.contains("Max-Age=0")));
    assert!(set_cookie(&r, ACCESS_COOKIE).is_some_and(|c| c.contains("Max-Age=0")));
    app.get("/api/v1/auth/check", Some(&access))
        .await
        .assert_problem(401, "invalid_token");
}

/// A forward-auth decision runs the same proof: nginx asking about a POST
/// on the access cookie gets 403 for a forged original and 200 for the
/// app's; the original's own origin comes from the trusted proxy's
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
#[tokio::test]
async fn forward_auth_decisions_owe_the_proof_too() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.cors
            .allowed_origins
            .push("https://other-app.example".into());
    })
    .await;
    let login = cookie_login(&app, "nora").await;
    let cookie = format!("{ACCESS_COOKIE}={}", set_value(&login, ACCESS_COOKIE));
    let ask = |headers: Vec<(&'static str, &'static str)>| {
        let mut req = app
            .http
            .get(app.url("/api/v1/authz/auth-request"))
            .header("x-original-uri", "/films/1")
            .header("x-original-method", "POST")
            .header("x-forwarded-host", "films.example")
            .header("x-forwarded-proto", "https")
            .header("cookie", cookie.clone());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { req.send().await.unwrap().status() }
    };
    for forged in [
        vec![("origin", EVIL), ("x-requested-with", "1")],
        vec![("origin", SIBLING), ("x-requested-with", "1")],
        vec![("origin", APP)],
        vec![
            ("origin", "http://cinema.example"),
            ("x-requested-with", "1"),
        ],
    ] {
        assert_eq!(ask(forged.clone()).await, 403, "{forged:?}");
    }
    assert_eq!(
        ask(vec![("origin", APP), ("x-requested-with", "1")]).await,
        200
    );
    let listed = vec![
        ("origin", "https://other-app.example"),
        ("x-requested-with", "1"),
    ];
    assert_eq!(ask(listed).await, 200);
    assert_eq!(echo.hits(), 0);
}

/// A logout by cookie needs a token that could still refresh: one consumed
/// after the grace (leaked from a log, an old backup) names no session, so
/// it ends nothing (401, the cookies cleared) and the live successor goes
/// on; a doubled cookie is refused and left alone.
#[tokio::test]
async fn logout_by_cookie_needs_a_live_token() {
    let echo = Echo::start("films").await;
    let app = browser_app(&echo, |c| {
        c.tokens.refresh_reuse_grace = std::time::Duration::ZERO;
    })
    .await;
    let login = cookie_login(&app, "olga").await;
    let old = refresh_cookie_of(&login);
    let r = with_cookies(&app, "refresh", &old, from_app).await;
    let live = refresh_cookie_of(&r);
    for what in ["logout", "logout-all"] {
        let r = with_cookies(&app, what, &old, from_app).await;
        r.assert_problem(401, "invalid_refresh_token");
        assert!(set_cookie(&r, REFRESH_COOKIE).is_some_and(|c| c.contains("Max-Age=0")));
    }
    assert_eq!(app.db.count("SELECT count(*) FROM revocations"), 0);
    let doubled = format!("{old}; {live}");
    let r = with_cookies(&app, "logout-all", &doubled, from_app).await;
    r.assert_problem(401, "invalid_refresh_token");
    assert!(set_cookie(&r, REFRESH_COOKIE).is_none());
    assert_eq!(app.db.count("SELECT count(*) FROM revocations"), 0);
    let r = with_cookies(&app, "refresh", &live, from_app).await;
    assert_eq!(r.status, 200, "{}", r.body);
}
