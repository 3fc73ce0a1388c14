//! The canonical request target, end to end: hostile paths sent byte for
//! byte (over a raw socket: reqwest would resolve dot segments itself) to a
//! real gateway with the quickstart's cinema rules (role-rules plugin),
//! `/films` optional and `/vault` required, in front of a recording echo
//! upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream::{Echo, route};
use common::*;
use gateway::config::{AuthMode, Config, EscapedSlashes, RouteConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The quickstart's shape: `/films` (optional, cinema rules) and `/vault`
/// (required) on one upstream.
async fn cinema() -> (TestApp, Echo) {
    let echo = Echo::start("cinema").await;
    let url = echo.url();
    let app = spawn_app_with(|c: &mut Config| {
        c.plugins = vec![plugin("cinema", "role-rules", cinema_rules())];
        c.routes = vec![
            RouteConfig {
                plugins: vec!["cinema".into()],
                ..route("films", "/films", &url, AuthMode::Optional)
            },
            route("vault", "/vault", &url, AuthMode::Required),
        ];
    })
    .await;
    (app, echo)
}

/// A raw answer: status, content type and body (JSON when it parses).
#[derive(Debug)]
struct Raw {
    status: u16,
    content_type: Option<String>,
    body: Value,
}

impl Raw {
    fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.body["code"], code, "{self:?}");
    }
}

/// Sends `GET <target>` exactly as written, with `Host: <host>`.
async fn raw_get(app: &TestApp, target: &str, host: &str, token: Option<&str>) -> Raw {
    let mut sock = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let head = format!("GET {target} HTTP/1.1\r\nhost: {host}\r\n{auth}connection: close\r\n\r\n");
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    sock.read_to_end(&mut bytes).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let mut content_type = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = Some(value.trim().to_string()),
            "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let body = if chunked {
        String::from_utf8(dechunk(body.as_bytes())).unwrap()
    } else {
        body.to_string()
    };
    Raw {
        status: status.parse().unwrap(),
        content_type,
        body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
    }
}

async fn get(app: &TestApp, target: &str) -> Raw {
    raw_get(app, target, "localhost", None).await
}

/// Every attack of issue 13 §1 against the quickstart shape, anonymously:
/// the paths that resolve to premium, 18+ or vault content are judged on
/// that resolved path, so they get the cinema rules' 401 (or `/vault`'s
/// missing-token 401) and never reach the upstream. (The old code routed
/// and judged the raw path, so each answered 200 with the upstream's page.)
#[tokio::test]
async fn path_tricks_do_not_bypass_the_rules() {
    let (app, echo) = cinema().await;
    for target in [
        "/films/x/../premium/",
        "/films//premium/",
        "/films/%70remium/",
        "/films/./premium/",
        "/films/%2e%2e/films/18plus/",
        "/films/%2E%2e/films/18plus/",
        "/films/.%2E/films/premium/42",
        "/films///premium//42",
    ] {
        let r = get(&app, target).await;
        r.assert_problem(401, "policy_denied");
    }
    for target in [
        "/films/../vault/x",
        "/films/%2e%2e/vault/x",
        "/films//..//vault/x",
    ] {
        let r = get(&app, target).await;
        r.assert_problem(401, "invalid_token");
    }
    assert_eq!(echo.hits(), 0, "no trick reached the upstream");
    // The ordinary open path still works, and what reached the upstream is
    // the canonical path.
    let open = get(&app, "/films/./%6eew//releases").await;
    assert_eq!(open.status, 200, "{open:?}");
    assert_eq!(open.body["path"], "/films/new/releases");
}

/// The plugin decides on exactly the path the upstream receives: a rule
/// that allows only the literal path `/films/premium/` (everything else is
/// denied) lets a hostile spelling of it through, and the upstream records
/// that very string; the query reaches it byte for byte, not decoded.
#[tokio::test]
async fn the_upstream_gets_the_path_the_plugin_authorized() {
    let echo = Echo::start("exact").await;
    let url = echo.url();
    let app = spawn_app_with(|c: &mut Config| {
        c.plugins = vec![plugin(
            "exact",
            "role-rules",
            json!({"rules": [{"glob": "/films/premium/"}], "default": "deny"}),
        )];
        c.routes = vec![RouteConfig {
            plugins: vec!["exact".into()],
            ..route("films", "/films", &url, AuthMode::Optional)
        }];
    })
    .await;
    for target in [
        "/films/premium/",
        "/films/x/../premium/",
        "/films//%70remium//",
        "/films/./trial/%2e%2E/premium/",
    ] {
        let r = get(&app, &format!("{target}?a=%2e%2E&b=../x&c=%70")).await;
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert_eq!(r.body["path"], "/films/premium/", "{target}");
        assert_eq!(r.body["query"], "a=%2e%2E&b=../x&c=%70", "{target}");
    }
    get(&app, "/films/premium")
        .await
        .assert_problem(403, "policy_denied");
    assert_eq!(echo.hits(), 4);
}

/// With `strip_prefix`, the upstream gets the canonical path less the
/// prefix; a path that resolves outside the prefix is not the route's.
#[tokio::test]
async fn strip_prefix_strips_the_canonical_path() {
    let echo = Echo::start("api").await;
    let url = echo.url();
    let app = spawn_app_with(|c: &mut Config| {
        c.routes = vec![RouteConfig {
            strip_prefix: true,
            ..route("v2", "/v2", &format!("{url}/base/"), AuthMode::Public)
        }];
    })
    .await;
    let r = get(&app, "/v2/a/../b//c/%2e/%64").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["path"], "/base/b/c/d");
    get(&app, "/v2/../v3/x")
        .await
        .assert_problem(404, "not_found");
    assert_eq!(echo.hits(), 1);
}

/// Paths that cannot be made canonical without guessing are refused with a
/// 400 `invalid_path` problem before any route, plugin or upstream sees
/// them: encoded slashes and backslashes (by default), a raw backslash,
/// NUL and control characters, path parameters, dot segments above the
/// root, dot segments hidden behind encoded slashes, malformed encodings.
#[tokio::test]
async fn unguessable_paths_get_400() {
    let (app, echo) = cinema().await;
    for target in [
        "/films/premium%2F42",
        "/films%2Fpremium/",
        "/films/%2e%2e%2fvault/x",
        "/films/premium%5c42",
        "/films\\..\\vault/x",
        "/films/%00/x",
        "/films/a%0d%0aX-Injected:%201",
        "/films;jsessionid=1/premium/",
        "/films/..;/vault/x",
        "/../vault/x",
        "/films/../../vault/x",
        "/films/%2e%2e/%2e%2e/vault/x",
        "/films/%zz",
    ] {
        let r = get(&app, target).await;
        r.assert_problem(400, "invalid_path");
    }
    assert_eq!(echo.hits(), 0);
}

/// `escaped_slashes = "keep"` passes an encoded slash to the upstream
/// unchanged (upper-cased), for upstreams that need them; dot segments
/// hidden behind one are still refused. The default route refuses it.
#[tokio::test]
async fn escaped_slashes_keep_passes_them_through() {
    let echo = Echo::start("files").await;
    let url = echo.url();
    let app = spawn_app_with(|c: &mut Config| {
        c.routes = vec![
            RouteConfig {
                escaped_slashes: EscapedSlashes::Keep,
                ..route("files", "/files", &url, AuthMode::Public)
            },
            route("other", "/other", &url, AuthMode::Public),
        ];
    })
    .await;
    let r = get(&app, "/files/a%2fb%5Cc").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["path"], "/files/a%2Fb%5Cc");
    get(&app, "/files/a%2F..%2F..%2Fother")
        .await
        .assert_problem(400, "invalid_path");
    get(&app, "/other/a%2Fb")
        .await
        .assert_problem(400, "invalid_path");
    assert_eq!(echo.hits(), 1);
}

/// The Auth API and the proxy are told apart on the canonical path:
/// `/films/../api/v1/auth/check` is the API's `/check` (never forwarded to
/// the films upstream), and `/api/../films/premium/` is a proxied request
/// judged by the cinema rules. Encoded unreserved characters reach the API
/// decoded; a path above the root is refused there too.
#[tokio::test]
async fn api_and_proxy_dispatch_on_the_canonical_path() {
    let (app, echo) = cinema().await;
    let (_, _, _) = app.user("alice").await;
    let token = app.tokens("alice").await.0;
    for target in [
        "/films/../api/v1/auth/check",
        "/films/%2e%2e/api/v1/auth/%63heck",
        "/api//v1/./auth/check",
    ] {
        let r = raw_get(&app, target, "localhost", Some(&token)).await;
        assert_eq!(r.status, 200, "{target}: {r:?}");
        let anonymous = get(&app, target).await;
        anonymous.assert_problem(401, "invalid_token");
    }
    get(&app, "/api/../films/premium/")
        .await
        .assert_problem(401, "policy_denied");
    get(&app, "/api/v1/../../../etc/passwd")
        .await
        .assert_problem(400, "invalid_path");
    assert_eq!(echo.hits(), 0, "nothing reached the films upstream");
}

/// Route hosts match the Host header's name case-insensitively, without a
/// trailing dot, whatever the port (the port is not matched, by design).
#[tokio::test]
async fn hosts_match_by_name() {
    let echo = Echo::start("host").await;
    let url = echo.url();
    let app = spawn_app_with(|c: &mut Config| {
        c.routes = vec![RouteConfig {
            host: Some("cinema.example".into()),
            ..route("cinema", "/", &url, AuthMode::Public)
        }];
    })
    .await;
    for host in [
        "cinema.example",
        "CINEMA.Example",
        "cinema.example.",
        "cinema.example.:8443",
        "cinema.example:1",
    ] {
        let r = raw_get(&app, "/x", host, None).await;
        assert_eq!(r.status, 200, "{host}: {r:?}");
    }
    raw_get(&app, "/x", "other.example", None)
        .await
        .assert_problem(404, "not_found");
    assert_eq!(echo.hits(), 5);
}
