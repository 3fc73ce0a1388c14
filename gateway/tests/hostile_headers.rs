//! Hostile headers and upgrades through the edge proxy (issue 13, sections
//! 2 and 3): spoofed identity and forwarding headers, plugins that touch
//! framing, h2c smuggling, upstreams that switch to something else, and
//! tunnels that outlive their token. Requests whose header names matter are
//! written on raw TCP, so they reach the gateway exactly as written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::upstream::{Echo, route};
use common::*;
use gateway::config::{AuthMode, RouteConfig};
use gateway::plugins::PluginSpec;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The echo upstream's JSON answer, from a raw exchange.
fn echoed(head: &str, body: &[u8]) -> Value {
    assert!(head.starts_with("http/1.1 200"), "{head}");
    serde_json::from_slice(body).unwrap()
}

/// The upstream's view of its request headers whose names, lower-cased
/// with `_` read as `-` (as CGI, WSGI and PHP read them), start with
/// `prefix`: (name as received, first value).
fn seen_like(echo: &Value, prefix: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = echo["headers"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| {
            name.to_ascii_lowercase()
                .replace('_', "-")
                .starts_with(prefix)
        })
        .map(|(name, values)| (name.clone(), values[0].as_str().unwrap().to_string()))
        .collect();
    found.sort();
    found
}

fn seen_header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name][0].as_str()
}

/// Underscore and mixed-case spellings of the identity headers
/// (`X_User_Id`, `X_USER_ADMIN`, ...) never reach the upstream: a
/// CGI-style application would read them as `X-User-*`. With a token, the
/// upstream sees exactly authgw's four identity headers, with the caller's
/// values; without one, none at all.
#[tokio::test]
async fn underscore_and_mixed_case_identity_headers_never_reach_the_upstream() {
    let echo = Echo::start("app").await;
    let app = gateway_with(
        vec![
            route("private", "/private", &echo.url(), AuthMode::Required),
            route("open", "/open", &echo.url(), AuthMode::Optional),
        ],
        |_| {},
    )
    .await;
    let (id, token, _) = app.user("alice").await;
    let forged = "X_User_Id: 00000000-0000-0000-0000-000000000000\r\n\
                  X_USER_ADMIN: true\r\n\
                  x-USER-roles: admin\r\n\
                  X-User_Login: root\r\n\
                  X_user-Session: forged\r\n";

    let (head, body) = raw(
        app.addr,
        &format!(
            "GET /private/a HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n{forged}Connection: close\r\n\r\n"
        ),
    )
    .await;
    let seen = seen_like(&echoed(&head, &body), "x-user-");
    let expected: Vec<(String, String)> = [
        ("x-user-admin", "false"),
        ("x-user-id", id.as_str()),
        ("x-user-login", "alice"),
        ("x-user-roles", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(seen, expected);

    let (head, body) = raw(
        app.addr,
        &format!("GET /open/a HTTP/1.1\r\nHost: t\r\n{forged}Connection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(seen_like(&echoed(&head, &body), "x-user-"), vec![]);
}

/// The forwarding headers a client may forge, in the spellings a
/// CGI-style upstream would read.
const FORGED_FORWARDING: [(&str, &str); 10] = [
    ("X-Forwarded-For", "6.6.6.6"),
    ("X_Forwarded_For", "7.7.7.7"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "admin.example"),
    ("X-Forwarded-Prefix", "/admin"),
    ("Forwarded", "for=6.6.6.6;proto=https"),
    ("X-Real-IP", "6.6.6.6"),
    ("X_Real_IP", "6.6.6.6"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
];

/// The client IP recorded by a login: (login_history.ip, refresh_tokens.ip).
async fn recorded_ips(app: &TestApp, login: &str, forwarded_for: &str) -> (String, String) {
    let r = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .header("X-Forwarded-For", forwarded_for)
        .json(&json!({"login": login, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let history = app.db.query(&format!(
        "SELECT host(ip) FROM login_history WHERE login = '{login}' ORDER BY id DESC LIMIT 1"
    ));
    let session = app.db.query(&format!(
        "SELECT host(ip) FROM refresh_tokens r JOIN users u ON u.id = r.user_id
         WHERE u.login = '{login}' ORDER BY r.id DESC LIMIT 1"
    ));
    (history[0].get(0), session[0].get(0))
}

/// From a peer outside `server.trusted_proxies`, every forwarding header
/// (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`, `X-Original-URL`,
/// `X-Rewrite-URL`, underscore spellings too) is dropped: the upstream sees
/// only authgw's own X-Forwarded-For/Proto/Host, and the Auth API records
/// the peer, not the forged address, in the login history and the session.
#[tokio::test]
async fn forwarding_headers_from_untrusted_peers_are_dropped() {
    let echo = Echo::start("app").await;
    let app = gateway_with(
        vec![route("open", "/open", &echo.url(), AuthMode::Public)],
        |c| c.server.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()],
    )
    .await;
    let mut req = app.http.get(app.url("/open/a"));
    for (name, value) in FORGED_FORWARDING {
        req = req.header(name, value);
    }
    let body: Value = req.send().await.unwrap().json().await.unwrap();
    let mut names: Vec<String> = seen_like(&body, "x-forwarded-")
        .into_iter()
        .chain(seen_like(&body, "forwarded"))
        .chain(seen_like(&body, "x-real-ip"))
        .chain(seen_like(&body, "x-original-url"))
        .chain(seen_like(&body, "x-rewrite-url"))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "x-forwarded-for=127.0.0.1",
            "x-forwarded-host=127.0.0.1",
            "x-forwarded-proto=http"
        ]
    );

    app.user("bob").await;
    let (history, session) = recorded_ips(&app, "bob", "198.51.100.7").await;
    assert_eq!(
        (history.as_str(), session.as_str()),
        ("127.0.0.1", "127.0.0.1")
    );
}

/// From a trusted proxy, forwarding headers are kept (the peer appended to
/// X-Forwarded-For), and the client is the right-most X-Forwarded-For entry
/// that is not a trusted proxy: a forged left-most entry is ignored, and
/// that address is what the login history and the session row record.
#[tokio::test]
async fn trusted_proxy_forwarding_headers_are_kept_and_name_the_client() {
    let echo = Echo::start("app").await;
    let app = gateway_with(
        vec![route("open", "/open", &echo.url(), AuthMode::Public)],
        |c| {
            c.server.trusted_proxies = vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ]
        },
    )
    .await;
    let chain = "6.6.6.6, 198.51.100.7, 10.1.2.3";
    let body: Value = app
        .http
        .get(app.url("/open/a"))
        .header("X-Forwarded-For", chain)
        .header("X-Forwarded-Proto", "https")
        .header("X-Real-IP", "198.51.100.7")
        .header("Forwarded", "for=198.51.100.7")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        seen_header(&body, "x-forwarded-for"),
        Some(format!("{chain}, 127.0.0.1").as_str())
    );
    assert_eq!(seen_header(&body, "x-forwarded-proto"), Some("https"));
    assert_eq!(seen_header(&body, "x-real-ip"), Some("198.51.100.7"));
    assert_eq!(seen_header(&body, "forwarded"), Some("for=198.51.100.7"));

    app.user("bob").await;
    let (history, session) = recorded_ips(&app, "bob", chain).await;
    assert_eq!(
        (history.as_str(), session.as_str()),
        ("198.51.100.7", "198.51.100.7")
    );
}

/// The deprecated `trust_forwarded_for = true` still works, as "every peer
/// is a trusted proxy": the left-most X-Forwarded-For entry is recorded,
/// as it always was.
#[tokio::test]
async fn deprecated_trust_forwarded_for_trusts_every_peer() {
    let app = spawn_app_with(|c| c.server.trust_forwarded_for = Some(true)).await;
    app.user("bob").await;
    let (history, session) = recorded_ips(&app, "bob", "198.51.100.7, 10.1.2.3").await;
    assert_eq!(
        (history.as_str(), session.as_str()),
        ("198.51.100.7", "198.51.100.7")
    );
}

/// A plugin that asks to set (or remove) a hop-by-hop or framing header
/// (`transfer-encoding`, `content-length`, `host`, `connection`, `te`)
/// fails closed: 503 `policy_failed`, nothing reaches the upstream, and the
/// failure is counted as a `bad_decision` in the metrics.
#[tokio::test]
async fn plugin_changing_framing_headers_fails_closed_and_is_counted() {
    let echo = Echo::start("app").await;
    let cases: [(&str, Value); 5] = [
        ("te", json!({"set": {"transfer-encoding": "chunked"}})),
        ("cl", json!({"set": {"content-length": "0"}})),
        ("host", json!({"set": {"host": "internal.example"}})),
        (
            "conn",
            json!({"set": {"Connection": "keep-alive, x-user-id"}}),
        ),
        ("rm", json!({"remove": ["TE"]})),
    ];
    let mut routes = Vec::new();
    let mut plugins = Vec::new();
    for (name, config) in &cases {
        let mut spec = PluginSpec::new(*name, dist("header-stamp"));
        spec.config = config.clone();
        plugins.push(spec);
        routes.push(RouteConfig {
            plugins: vec![name.to_string()],
            ..route(name, &format!("/{name}"), &echo.url(), AuthMode::Public)
        });
    }
    let app = gateway_with(routes, |c| c.plugins = plugins).await;
    for (name, _) in &cases {
        let r = reply(
            app.http
                .post(app.url(&format!("/{name}/a")))
                .body("payload")
                .send()
                .await
                .unwrap(),
        )
        .await;
        r.assert_problem(503, "policy_failed");
    }
    assert_eq!(echo.hits(), 0, "nothing reached the upstream");
    let metrics = app.metrics_text().await;
    for (name, _) in &cases {
        let line =
            format!("authgw_plugin_failures_total{{plugin=\"{name}\",kind=\"bad_decision\"}} 1");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

/// A WebSocket route to the echo upstream (which answers any `Upgrade`
/// with a 101 and echoes bytes), `auth` as given.
fn ws_route(echo: &Echo, auth: AuthMode, idle: Duration) -> RouteConfig {
    RouteConfig {
        websocket: true,
        idle_timeout: idle,
        ..route("ws", "/ws", &echo.url(), auth)
    }
}

/// `Upgrade: h2c` with `HTTP2-Settings` (h2c smuggling), or any upgrade
/// other than a lone `websocket`, is a 400 `upgrade_not_allowed` on any
/// route, and never reaches the upstream.
#[tokio::test]
async fn h2c_upgrade_is_refused_and_never_reaches_the_upstream() {
    let echo = Echo::start("app").await;
    let app = gateway_with(
        vec![
            ws_route(&echo, AuthMode::Public, Duration::from_secs(10)),
            route("plain", "/", &echo.url(), AuthMode::Public),
        ],
        |_| {},
    )
    .await;
    for (path, upgrade) in [
        ("/ws", "h2c"),
        ("/ws", "websocket, h2c"),
        ("/ws", "H2C"),
        ("/other", "h2c"),
    ] {
        let (head, body) = raw(
            app.addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            ),
        )
        .await;
        assert!(head.starts_with("http/1.1 400"), "{path} {upgrade}: {head}");
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "upgrade_not_allowed", "{problem}");
    }
    assert_eq!(echo.hits(), 0, "nothing reached the upstream");
}

/// A raw upstream that answers every request with a 101 carrying
/// `upgrade` (or no Upgrade header) and reports, when the proxy closes the
/// connection, how many bytes it got after its answer.
async fn switching_upstream(
    upgrade: Option<&'static str>,
) -> (String, tokio::sync::mpsc::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let extra = upgrade.map_or(String::new(), |u| format!("upgrade: {u}\r\n"));
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n{extra}\r\n"
                );
                if sock.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let mut after = 0;
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => after += n,
                    }
                }
                let _ = tx.send(after).await;
            });
        }
    });
    (format!("http://{addr}"), rx)
}

const WS_HANDSHAKE: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// An upstream whose 101 does not say `Upgrade: websocket` (another
/// protocol, or none) gets no tunnel: the client gets a 502 `bad_gateway`
/// and the upstream connection is closed without a byte passed on.
#[tokio::test]
async fn upstream_101_without_websocket_opens_no_tunnel() {
    for upgrade in [Some("h2c"), None] {
        let (upstream, mut closed) = switching_upstream(upgrade).await;
        let app = gateway_with(
            vec![RouteConfig {
                websocket: true,
                ..route("ws", "/ws", &upstream, AuthMode::Public)
            }],
            |_| {},
        )
        .await;
        let mut sock = TcpStream::connect(app.addr).await.unwrap();
        sock.write_all(format!("GET /ws HTTP/1.1\r\nHost: t\r\n{WS_HANDSHAKE}\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 502"), "{upgrade:?}: {head}");
        assert!(head.contains("bad_gateway"), "{head}");
        let _ = sock.write_all(b"smuggled bytes").await;
        let after = tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the proxy closes the upstream connection")
            .unwrap();
        assert_eq!(after, 0, "{upgrade:?}: bytes reached the upstream");
    }
}

/// Opens a WebSocket tunnel through the gateway and checks bytes echo.
async fn open_tunnel(app: &TestApp, token: Option<&str>) -> TcpStream {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let mut sock = TcpStream::connect(app.addr).await.unwrap();
    sock.write_all(format!("GET /ws HTTP/1.1\r\nHost: t\r\n{auth}{WS_HANDSHAKE}\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    echo_once(&mut sock).await;
    sock
}

/// One message through the tunnel and back.
async fn echo_once(sock: &mut TcpStream) {
    sock.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), sock.read_exact(&mut buf))
        .await
        .expect("the echo answers")
        .unwrap();
    assert_eq!(&buf, b"ping");
}

/// Waits (at most `limit`) until the gateway closes the tunnel (EOF or
/// reset); returns when it did.
async fn closed_within(sock: &mut TcpStream, limit: Duration) -> Instant {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the gateway closes the tunnel in time")
}

/// A tunnel opened with an access token is closed when that token expires,
/// not before (here a 2 s token on a route whose idle timeout is a minute).
#[tokio::test]
async fn tunnel_closes_when_its_token_expires() {
    let echo = Echo::start("app").await;
    let app = gateway_with(
        vec![ws_route(&echo, AuthMode::Required, Duration::from_secs(60))],
        |c| c.tokens.access_ttl = Duration::from_secs(2),
    )
    .await;
    let (_, token, _) = app.user("alice").await;
    let exp_ms = claims(&token)["exp"].as_i64().unwrap() * 1000;
    let mut sock = open_tunnel(&app, Some(&token)).await;
    closed_within(&mut sock, Duration::from_secs(10)).await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    assert!(
        now_ms >= exp_ms - 50,
        "closed {} ms before exp",
        exp_ms - now_ms
    );
    assert!(
        now_ms <= exp_ms + 1500,
        "closed {} ms after exp",
        now_ms - exp_ms
    );
}

/// Opens a tunnel as a fresh user, revokes its token with `revoke` (an API
/// call that must answer 204), and returns how long after that answer the
/// gateway closed the tunnel.
async fn closed_after_revocation(
    path: &str,
    body: Option<Value>,
    method: reqwest::Method,
) -> Duration {
    let echo = Echo::start("app").await;
    let app = gateway_with(
        vec![ws_route(&echo, AuthMode::Required, Duration::from_secs(60))],
        |_| {},
    )
    .await;
    let (_, token, _) = app.user("alice").await;
    let mut sock = open_tunnel(&app, Some(&token)).await;
    let r = app.send(method, path, Some(&token), body).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let revoked = Instant::now();
    let closed = closed_within(&mut sock, Duration::from_secs(5)).await;
    eprintln!(
        "{path}: tunnel closed {:?} after the revocation",
        closed - revoked
    );
    closed - revoked
}

/// A tunnel is closed within a second of its session's revocation
/// (logout-all), without waiting for the token to expire.
#[tokio::test]
async fn tunnel_closes_within_a_second_of_logout_all() {
    let took =
        closed_after_revocation("/api/v1/auth/logout-all", None, reqwest::Method::POST).await;
    assert!(
        took < Duration::from_secs(1),
        "closed {took:?} after logout-all"
    );
}

/// A tunnel is closed within a second of its user deleting the account.
#[tokio::test]
async fn tunnel_closes_within_a_second_of_account_deletion() {
    let took = closed_after_revocation(
        "/api/v1/users/me",
        Some(json!({"password": PASSWORD})),
        reqwest::Method::DELETE,
    )
    .await;
    assert!(
        took < Duration::from_secs(1),
        "closed {took:?} after deletion"
    );
}

/// A tunnel with no traffic either way for the route's `idle_timeout` is
/// closed; traffic keeps it open past that.
#[tokio::test]
async fn tunnel_closes_after_idle_timeout() {
    let echo = Echo::start("app").await;
    let idle = Duration::from_secs(1);
    let app = gateway_with(vec![ws_route(&echo, AuthMode::Public, idle)], |_| {}).await;
    let mut sock = open_tunnel(&app, None).await;
    let opened = Instant::now();
    while opened.elapsed() < idle * 2 {
        tokio::time::sleep(idle / 4).await;
        echo_once(&mut sock).await;
    }
    let quiet = Instant::now();
    let closed = closed_within(&mut sock, Duration::from_secs(5)).await;
    let took = closed - quiet;
    assert!(
        took >= idle - Duration::from_millis(50) && took < idle * 2,
        "closed {took:?} after the last byte (idle_timeout {idle:?})"
    );
}
