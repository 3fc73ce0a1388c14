//! Forward-auth (issue 14) at the HTTP level: the three `/api/v1/authz/*`
//! endpoints of a real gateway (real PostgreSQL, real role-rules and
//! header-stamp plugins from plugins/dist), called the way nginx, Traefik,
//! Caddy and Envoy call them, with hostile originals. The real nginx and
//! Caddy are in tests/forward_auth_proxies.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use Shape::{Nginx, Traefik};
use common::upstream::{Echo, route};
use common::*;
use gateway::config::{AuthMode, Config, OneOrMany, RouteConfig};
use reqwest::StatusCode;
use serde_json::json;

const AUTH_REQUEST: &str = "/api/v1/authz/auth-request";
const FORWARD_AUTH: &str = "/api/v1/authz/forward-auth";
const EXT_AUTHZ: &str = "/api/v1/authz/ext-authz";

/// The cinema shape for decisions, with 127.0.0.1 the only trusted proxy:
/// `/films` (optional; cinema rules, then header-stamp) on the echo
/// upstream, `/vault` (required) and `/spin` (public, a plugin that never
/// returns) decision-only (no upstream).
async fn cinema(echo: &Echo, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let url = echo.url();
    spawn_app_with(move |c: &mut Config| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.plugins = vec![
            plugin("cinema", "role-rules", cinema_rules()),
            plugin(
                "stamp",
                "header-stamp",
                json!({"set": {"x-authgw-plan": "{login}"}, "remove": ["x-debug"]}),
            ),
            plugin("spin", "spin", json!({})),
        ];
        c.routes = vec![
            RouteConfig {
                plugins: vec!["cinema".into(), "stamp".into()],
                ..route("films", "/films", &url, AuthMode::Optional)
            },
            RouteConfig {
                upstream: OneOrMany::default(),
                ..route("vault", "/vault", &url, AuthMode::Required)
            },
            RouteConfig {
                upstream: OneOrMany::default(),
                plugins: vec!["spin".into()],
                ..route("spin", "/spin", &url, AuthMode::Public)
            },
        ];
        tweak(c);
    })
    .await
}

/// A subscriber's token and a trial user's token.
async fn viewers(app: &TestApp) -> (String, String) {
    let admin = app.admin("root").await;
    let sub = user_with_roles(app, &admin, "sub", &["subscriber"]).await;
    let trial = user_with_roles(app, &admin, "tri", &["trial"]).await;
    (sub, trial)
}

/// Which proxy's request shape a call has.
#[derive(Clone, Copy)]
enum Shape {
    /// nginx's subrequest: `auth_request /_authgw;` with the location of
    /// docs/forward-auth/nginx.conf (`proxy_set_header X-Original-URI
    /// $request_uri; X-Original-Method $request_method; X-Forwarded-Host
    /// $host`), which keeps the client's other headers (nginx
    /// ngx_http_auth_request_module: the subrequest is a copy of the
    /// request's headers, without its body).
    Nginx,
    /// Traefik's forwardAuth request (traefik/traefik
    /// pkg/middlewares/auth/forward.go and docs/content/middlewares/http/
    /// forwardauth.md: a GET to `address` with the client's headers and
    /// X-Forwarded-For, -Method, -Proto, -Host, -Uri; a 2xx is an allow,
    /// any other answer goes to the client as it is). Caddy's
    /// `forward_auth` (caddyserver/caddy
    /// modules/caddyhttp/reverseproxy/forwardauth) sends the same headers
    /// on a GET.
    Traefik,
}

/// A decision call in `shape` for the original `method` and `uri`, with the
/// caller's token and extra client headers. Redirects are answers under
/// test, never followed.
async fn asks(
    app: &TestApp,
    shape: Shape,
    method: &str,
    uri: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Reply {
    let (endpoint, described): (&str, Vec<(&str, &str)>) = match shape {
        Shape::Nginx => (
            AUTH_REQUEST,
            vec![
                ("x-original-uri", uri),
                ("x-original-method", method),
                ("x-forwarded-host", "cinema.example"),
            ],
        ),
        Shape::Traefik => (
            FORWARD_AUTH,
            vec![
                ("x-forwarded-method", method),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "cinema.example"),
                ("x-forwarded-uri", uri),
                ("x-forwarded-for", "203.0.113.7"),
            ],
        ),
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client.get(app.url(endpoint));
    for (k, v) in described.iter().chain(extra) {
        req = req.header(*k, *v);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    reply(req.send().await.unwrap()).await
}

/// Envoy's ext_authz HTTP service call (envoyproxy/envoy
/// source/extensions/filters/common/ext_authz/ext_authz_http_impl.cc): the
/// original method, `path_prefix` + the original path and query, the
/// original `Host`, and the allowed headers (`Authorization` by default);
/// only a 200 allows, any other status is a deny passed to the client.
/// Written on raw TCP: the original path goes as it came.
async fn envoy_asks(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (String, Vec<u8>) {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    raw(
        app.addr,
        &format!(
            "{method} {EXT_AUTHZ}{path} HTTP/1.1\r\nhost: cinema.example\r\n{auth}x-envoy-expected-rq-timeout-ms: 200\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ),
    )
    .await
}

fn status_of(head: &str) -> u16 {
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

/// nginx's contract: 200 on allow with the identity headers, the plugins'
/// header sets and X-Request-Id; otherwise only 401 (with
/// `WWW-Authenticate` for a missing or bad token) or 403, whatever the
/// decision said: a plugin's 402, no route, a hostile path, a missing
/// header, a method the rules refuse. Each is judged on the canonical path.
#[tokio::test]
async fn auth_request_answers_only_200_401_403() {
    let echo = Echo::start("films").await;
    let app = cinema(&echo, |_| {}).await;
    let (sub, trial) = viewers(&app).await;

    let ok = asks(&app, Nginx, "GET", "/films/premium/42?x=1", Some(&sub), &[]).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert_eq!(ok.header("x-user-login"), Some("sub"));
    assert_eq!(ok.header("x-user-roles"), Some("subscriber"));
    assert_eq!(ok.header("x-user-admin"), Some("false"));
    assert!(ok.header("x-user-id").is_some());
    assert_eq!(ok.header("x-authgw-plan"), Some("sub"));
    assert!(ok.header("x-request-id").is_some());

    let anonymous = asks(&app, Nginx, "GET", "/vault/x", None, &[]).await;
    anonymous.assert_problem(401, "invalid_token");
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer")),
        "{:?}",
        anonymous.headers
    );
    // The cinema rules' own 401 (an anonymous caller on a member path).
    assert_eq!(
        asks(&app, Nginx, "GET", "/films/trial/1", None, &[])
            .await
            .status,
        401
    );
    for (method, uri, token) in [
        ("GET", "/films/premium/42", Some(&trial)), // the rules' 402
        ("DELETE", "/films/1", Some(&sub)),         // /films allows GET, HEAD
        ("GET", "/nowhere", Some(&sub)),            // no route: 404
        ("GET", "/films/..;/vault/x", Some(&sub)),  // path parameter: 400
        ("GET", "/films/%2e%2e%2fvault", Some(&sub)), // encoded slash: 400
        ("GET", "/films/a\\..\\..\\vault", Some(&sub)), // backslash: 400
        ("GET", "/../films/1", Some(&sub)),         // above the root: 400
    ] {
        let r = asks(&app, Nginx, method, uri, token.map(|t| t.as_str()), &[]).await;
        assert_eq!(r.status, 403, "{method} {uri}: {:?}", r.body);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    // Judged on the canonical path: these are /films/premium and /vault.
    for uri in [
        "/films/x/../premium/",
        "/films//premium/",
        "/films/%70remium/",
    ] {
        let r = asks(&app, Nginx, "GET", uri, Some(&trial), &[]).await;
        assert_eq!(r.status, 403, "{uri}: {:?}", r.body);
    }
    for uri in ["/films/../vault/x", "/films/%2e%2e/vault/x"] {
        let r = asks(&app, Nginx, "GET", uri, None, &[]).await;
        assert_eq!(r.status, 401, "{uri}: {:?}", r.body);
    }
    // An original request nginx did not describe is not guessed at.
    let bare = reply(
        app.http
            .get(app.url(AUTH_REQUEST))
            .bearer_auth(&sub)
            .send()
            .await
            .unwrap(),
    )
    .await;
    bare.assert_problem(403, "forbidden");
    let twice = asks(
        &app,
        Nginx,
        "GET",
        "/films/1",
        Some(&sub),
        &[("x-original-uri", "/vault/x")],
    )
    .await;
    twice.assert_problem(403, "forbidden");
    assert_eq!(echo.hits(), 0, "a decision never calls the upstream");
}

/// The decision is the proxy's: client-sent identity headers never come
/// back as the caller's identity (an anonymous allow carries them empty,
/// so that a proxy copying them overwrites the client's; a token's allow
/// carries the token's), and plugins never see them.
#[tokio::test]
async fn spoofed_identity_headers_are_not_echoed() {
    let echo = Echo::start("films").await;
    let app = cinema(&echo, |_| {}).await;
    let (sub, _) = viewers(&app).await;
    let spoof = [
        ("x-user-id", "00000000-0000-0000-0000-000000000001"),
        ("x-user-login", "root"),
        ("x-user-admin", "true"),
    ];
    let anonymous = asks(&app, Nginx, "GET", "/films", None, &spoof).await;
    assert_eq!(anonymous.status, 200, "{:?}", anonymous.body);
    for name in ["x-user-id", "x-user-login", "x-user-roles", "x-user-admin"] {
        assert_eq!(
            anonymous.header(name),
            Some(""),
            "{name}: empty, to overwrite"
        );
    }
    // header-stamp's {login} is empty for an anonymous caller, never "root".
    assert_ne!(anonymous.header("x-authgw-plan"), Some("root"));
    let member = asks(&app, Traefik, "GET", "/films", Some(&sub), &spoof).await;
    assert_eq!(member.status, 200, "{:?}", member.body);
    assert_eq!(member.header("x-user-login"), Some("sub"));
    assert_eq!(member.header("x-user-admin"), Some("false"));
    assert_ne!(
        member.header("x-user-id"),
        Some("00000000-0000-0000-0000-000000000001")
    );
}

/// Traefik's and Caddy's contract: 200 on allow with the headers to copy;
/// a deny carries the decision's own status and problem (the plugin's 402,
/// 401 with its challenge); an unreadable original is a 400 problem; and a
/// browser that is not logged in is sent to `authz.login_url` with the
/// original URL (only for a 401, and only with `Accept: text/html`).
#[tokio::test]
async fn forward_auth_statuses_and_login_redirect() {
    let echo = Echo::start("films").await;
    let app = cinema(&echo, |c| {
        c.authz.login_url = Some("https://login.example/signin?app=cinema".into());
    })
    .await;
    let (sub, trial) = viewers(&app).await;

    let ok = asks(&app, Traefik, "GET", "/films/premium/42", Some(&sub), &[]).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.header("x-user-login"), Some("sub"));
    assert_eq!(ok.header("x-authgw-plan"), Some("sub"));

    let paid = asks(&app, Traefik, "GET", "/films/premium/42", Some(&trial), &[]).await;
    paid.assert_problem(402, "policy_denied");
    assert_eq!(paid.body["detail"], "requires one of the roles: subscriber");
    let missing = asks(&app, Traefik, "GET", "/vault/x", None, &[]).await;
    missing.assert_problem(401, "invalid_token");
    assert!(missing.header("www-authenticate").is_some());
    asks(&app, Traefik, "GET", "/nowhere", Some(&sub), &[])
        .await
        .assert_problem(404, "not_found");
    asks(&app, Traefik, "POST", "/films/1", Some(&sub), &[])
        .await
        .assert_problem(403, "policy_denied");
    for uri in [
        "/films/..;/vault",
        "/films/%2e%2e%2fvault",
        "films/1",
        "/a%00",
    ] {
        let r = asks(&app, Traefik, "GET", uri, Some(&sub), &[]).await;
        assert_eq!(r.status, 400, "{uri}: {:?}", r.body);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let no_uri = reply(
        app.http
            .get(app.url(FORWARD_AUTH))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-host", "cinema.example")
            .send()
            .await
            .unwrap(),
    )
    .await;
    no_uri.assert_problem(400, "invalid_original_request");
    let bad_method = asks(&app, Traefik, "G(ET", "/films", None, &[]).await;
    bad_method.assert_problem(400, "invalid_original_request");

    // A browser that is not logged in goes to the login page.
    let browser = [("accept", "text/html,application/xhtml+xml;q=0.9")];
    let to_login = asks(&app, Traefik, "GET", "/vault/a%20b?q=1", None, &browser).await;
    assert_eq!(to_login.status, 302, "{:?}", to_login.body);
    assert_eq!(
        to_login.header("location"),
        Some(
            "https://login.example/signin?app=cinema&rd=https%3A%2F%2Fcinema.example%2Fvault%2Fa%2520b%3Fq%3D1"
        )
    );
    // A logged-in browser refused by a rule is not sent to log in again,
    // and an API client gets its 401.
    assert_eq!(
        asks(
            &app,
            Traefik,
            "GET",
            "/films/premium/1",
            Some(&trial),
            &browser
        )
        .await
        .status,
        402
    );
    assert_eq!(
        asks(&app, Traefik, "GET", "/vault/x", None, &[])
            .await
            .status,
        401
    );
    // Envoy's endpoint never redirects.
    let (head, _) = envoy_asks(&app, "GET", "/vault/x", None).await;
    assert_eq!(status_of(&head), 401, "{head}");
}

/// Envoy's contract: 200 only on allow (with the headers for
/// `allowed_upstream_headers`); a deny is its status with a problem. The
/// original path after the prefix is made canonical on its own, so a `..`
/// cannot climb out of it into the prefix and reach another endpoint
/// (`/api/v1/auth/check` would answer 200 for any valid token, allowing
/// a path the rules refuse).
#[tokio::test]
async fn ext_authz_allows_only_with_200_and_keeps_the_original_path_apart() {
    let echo = Echo::start("films").await;
    let app = cinema(&echo, |_| {}).await;
    let (sub, trial) = viewers(&app).await;

    let (head, body) = envoy_asks(&app, "GET", "/films/premium/42?x=1", Some(&sub)).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nx-user-login: sub\r\n"), "{head}");
    assert!(head.contains("\r\nx-authgw-plan: sub\r\n"), "{head}");
    assert!(body.is_empty());
    let (head, body) = envoy_asks(&app, "GET", "/films/premium/42", Some(&trial)).await;
    assert_eq!(status_of(&head), 402, "{head}");
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "policy_denied");
    let (head, _) = envoy_asks(&app, "DELETE", "/films/1", Some(&sub)).await;
    assert_eq!(status_of(&head), 403, "{head}");
    // The root of the original site: the prefix alone.
    let (head, _) = envoy_asks(&app, "GET", "", Some(&sub)).await;
    assert_eq!(status_of(&head), 404, "{head}");

    for path in [
        "/../../auth/check",
        "/films/../../../auth/check",
        // Up out of the prefix to a proxied path: not proxied either.
        "/../../../../films/premium/42",
        "/%2e%2e/%2e%2e/auth/check",
        "/..",
    ] {
        let (head, _) = envoy_asks(&app, "GET", path, Some(&sub)).await;
        assert_eq!(status_of(&head), 400, "{path}: {head}");
    }
    // Dot segments inside the original path resolve inside it.
    let (head, _) = envoy_asks(&app, "GET", "/films/x/../premium/1", Some(&trial)).await;
    assert_eq!(status_of(&head), 402, "{head}");
    let (head, _) = envoy_asks(&app, "GET", "/films/../vault/x", None).await;
    assert_eq!(status_of(&head), 401, "{head}");
    assert_eq!(echo.hits(), 0);
}

/// Envoy's calls answered past the router (issue 18) answer as its routes
/// do: the original site's root with the prefix alone or with a slash
/// (the router's catch-all takes no empty path, so it has its own route),
/// the original method decided, HEAD (left to the router) without a body,
/// a method no route takes the router's 405 problem.
#[tokio::test]
async fn ext_authz_past_the_router_answers_as_its_routes_do() {
    let echo = Echo::start("films").await;
    let url = echo.url();
    let app = cinema(&echo, move |c| {
        c.routes.push(RouteConfig {
            upstream: OneOrMany::default(),
            ..route("root", "/", &url, AuthMode::Public)
        });
    })
    .await;
    let (sub, trial) = viewers(&app).await;
    for root in ["", "/", "/?x=1"] {
        // HEAD is the router's: its routes take the root with a slash too.
        for method in ["GET", "HEAD"] {
            let (head, _) = envoy_asks(&app, method, root, None).await;
            assert_eq!(status_of(&head), 200, "{method} {root:?}: {head}");
        }
    }
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"] {
        let (head, _) = envoy_asks(&app, method, "/anything", None).await;
        assert_eq!(status_of(&head), 200, "{method}: {head}");
    }
    let (head, body) = envoy_asks(&app, "HEAD", "/films/premium/1", Some(&sub)).await;
    assert_eq!(status_of(&head), 200, "{head}");
    assert!(head.contains("\r\nx-user-login: sub\r\n"), "{head}");
    assert!(body.is_empty(), "{body:?}");
    let (head, _) = envoy_asks(&app, "HEAD", "/films/premium/1", Some(&trial)).await;
    assert_eq!(status_of(&head), 402, "{head}");
    let (head, body) = envoy_asks(&app, "PURGE", "/films/1", Some(&sub)).await;
    assert_eq!(status_of(&head), 405, "{head}");
    assert!(String::from_utf8_lossy(&body).contains("method_not_allowed"));
    assert_eq!(echo.hits(), 0, "a decision never reaches the upstream");
}

/// Only a trusted proxy may describe an original request: any other peer
/// gets 403 from every endpoint, even with a valid token for an open path.
#[tokio::test]
async fn untrusted_peers_get_403_everywhere() {
    let echo = Echo::start("films").await;
    let app = cinema(&echo, |_| {}).await;
    let (sub, _) = viewers(&app).await;
    let outsider = client_from("127.0.0.2");
    let send = |client: &reqwest::Client, path: &str| {
        client
            .get(app.url(path))
            .bearer_auth(&sub)
            .header("x-original-uri", "/films")
            .header("x-original-method", "GET")
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/films")
            .header("x-forwarded-host", "cinema.example")
            .send()
    };
    for path in [AUTH_REQUEST, FORWARD_AUTH, "/api/v1/authz/ext-authz/films"] {
        let r = reply(send(&outsider, path).await.unwrap()).await;
        r.assert_problem(403, "forbidden");
        assert!(r.header("x-user-id").is_none());
        // The same call from the trusted proxy is allowed.
        let r = reply(send(&app.http, path).await.unwrap()).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
    }
}

/// A route without `upstream` only decides: the decision allows a token
/// on it, and a proxied request that lands on it gets a 404 problem (it
/// is not passed to a shorter route either).
#[tokio::test]
async fn decision_only_routes_are_not_proxied() {
    let echo = Echo::start("films").await;
    let app = cinema(&echo, |_| {}).await;
    let (sub, _) = viewers(&app).await;
    assert_eq!(
        asks(&app, Nginx, "GET", "/vault/x", Some(&sub), &[])
            .await
            .status,
        200
    );
    app.get("/vault/x", Some(&sub))
        .await
        .assert_problem(404, "not_found");
    assert_eq!(app.get("/films", None).await.status, 200, "proxied films");
    assert_eq!(echo.hits(), 1);
}

/// A plugin that never returns fails closed: 503 (and `Retry-After`) for
/// Traefik and Envoy, 403 for nginx; each answer is counted under its
/// endpoint in /metrics, next to the allows, denies and untrusted calls.
#[tokio::test]
async fn plugin_failures_fail_closed_and_every_answer_is_counted() {
    let echo = Echo::start("films").await;
    let app = cinema(&echo, |_| {}).await;
    let started = Instant::now();
    let failed = asks(&app, Traefik, "GET", "/spin/x", None, &[]).await;
    failed.assert_problem(503, "policy_failed");
    assert!(failed.header("retry-after").is_some());
    asks(&app, Nginx, "GET", "/spin/x", None, &[])
        .await
        .assert_problem(403, "forbidden");
    let (head, _) = envoy_asks(&app, "GET", "/spin/x", None).await;
    assert_eq!(status_of(&head), 503, "{head}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        asks(&app, Nginx, "GET", "/films", None, &[]).await.status,
        200
    );
    asks(&app, Nginx, "GET", "/films/..;/x", None, &[]).await;
    reply(
        client_from("127.0.0.3")
            .get(app.url(FORWARD_AUTH))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let metrics = app.metrics_text().await;
    for line in [
        r#"authgw_authz_decisions_total{endpoint="forward-auth",outcome="failed",status="503"} 1"#,
        r#"authgw_authz_decisions_total{endpoint="auth-request",outcome="failed",status="403"} 1"#,
        r#"authgw_authz_decisions_total{endpoint="ext-authz",outcome="failed",status="503"} 1"#,
        r#"authgw_authz_decisions_total{endpoint="auth-request",outcome="allow",status="200"} 1"#,
        r#"authgw_authz_decisions_total{endpoint="auth-request",outcome="invalid",status="403"} 1"#,
        r#"authgw_authz_decisions_total{endpoint="forward-auth",outcome="untrusted",status="403"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

/// A revoked token is refused by the decision within a second of the
/// logout (the revocation set, no database on the path).
#[tokio::test]
async fn a_revoked_token_is_refused_within_a_second() {
    let echo = Echo::start("films").await;
    let app = cinema(&echo, |_| {}).await;
    let (_, token, _) = app.user("leaver").await;
    assert_eq!(
        asks(&app, Nginx, "GET", "/vault/x", Some(&token), &[])
            .await
            .status,
        200
    );
    app.logout(&token).await;
    refused_within_a_second(|| async {
        asks(&app, Nginx, "GET", "/vault/x", Some(&token), &[])
            .await
            .status
            == 401
    })
    .await;
}

/// The listener answers nginx's and Traefik's calls past the router (issue
/// 18) exactly as the router's routes do: the endpoint's path is made
/// canonical first (`/api/v1/authz/x/../auth-request` is a decision; a
/// near miss is not one), a method the route does not take is the router's
/// 405 problem, and HEAD (left to the router) is its answer without a body.
#[tokio::test]
async fn forward_auth_past_the_router_answers_as_the_routes_do() {
    let echo = Echo::start("films").await;
    let app = cinema(&echo, |_| {}).await;
    let (sub, trial) = viewers(&app).await;
    let call = |method: &str, path: &str, token: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nhost: cinema.example\r\nauthorization: Bearer {token}\r\nx-original-uri: /films/premium/1\r\nx-original-method: GET\r\nx-forwarded-host: cinema.example\r\nx-forwarded-method: GET\r\nx-forwarded-uri: /films/premium/1\r\nx-forwarded-proto: https\r\nconnection: close\r\n\r\n"
        )
    };
    // Raw TCP: reqwest would resolve the `..` before sending.
    for path in [
        "/api/v1/authz/x/../auth-request",
        "/api/v1/authz/./forward-auth",
        "/api//v1/authz/auth-request",
    ] {
        let (head, _) = raw(app.addr, &call("GET", path, &sub)).await;
        assert_eq!(status_of(&head), 200, "{path}: {head}");
        assert!(head.contains("x-user-roles: subscriber"), "{path}: {head}");
        // The same call with a token the rules refuse is denied.
        let (head, _) = raw(app.addr, &call("GET", path, &trial)).await;
        assert!(matches!(status_of(&head), 402 | 403), "{path}: {head}");
    }
    // Not an endpoint: proxied, and no route takes it.
    let (head, _) = raw(app.addr, &call("GET", "/api/v1/authz/auth-request/", &sub)).await;
    assert_eq!(status_of(&head), 404, "{head}");
    // The routes' methods: forward-auth takes GET (and HEAD) only.
    for method in ["POST", "PUT", "DELETE"] {
        let (head, body) = raw(app.addr, &call(method, FORWARD_AUTH, &sub)).await;
        assert_eq!(status_of(&head), 405, "{method}: {head}");
        assert!(
            String::from_utf8_lossy(&body).contains("method_not_allowed"),
            "{method}"
        );
    }
    for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"] {
        let (head, _) = raw(app.addr, &call(method, AUTH_REQUEST, &sub)).await;
        assert_eq!(status_of(&head), 200, "{method}: {head}");
    }
    for endpoint in [AUTH_REQUEST, FORWARD_AUTH] {
        let (head, body) = raw(app.addr, &call("HEAD", endpoint, &sub)).await;
        assert_eq!(status_of(&head), 200, "HEAD {endpoint}: {head}");
        assert!(head.contains("x-user-roles: subscriber"), "{head}");
        assert!(body.is_empty(), "HEAD {endpoint}: {body:?}");
    }
    assert_eq!(echo.hits(), 0, "a decision never reaches the upstream");
}
