//! Forward-auth with the real proxies (issue 14): nginx (`nginx-light`)
//! and Caddy (`caddy`) from Debian, each started on a free port with the
//! config of docs/forward-auth/ (nginx.conf, Caddyfile), in front of an
//! echo upstream, with a real gateway (cinema rules) as the auth service.
//! scripts/test.sh installs both when missing. Without the binary a test
//! fails under CI (`CI` set) and is skipped, loudly, elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::upstream::{Echo, route};
use common::*;
use gateway::config::{AuthMode, Config, OneOrMany, RouteConfig};
use serde_json::Value;

/// A proxy process of this test, killed (by its own pid) when dropped.
struct Running {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary `name` (PATH, then /usr/sbin), or None after saying loudly
/// why the test does not run; under CI its absence fails the test.
fn binary(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        let why = format!(
            "{name} is not installed: scripts/test.sh installs it (apt-get install -y {})",
            if name == "nginx" { "nginx-light" } else { name }
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("\n!!!!!!!! SKIPPED: {why} !!!!!!!!\n");
    }
    found
}

/// docs/forward-auth/<file> with its placeholders filled.
fn example(file: &str, listen: SocketAddr, authgw: SocketAddr, app: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/forward-auth")
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap()
        .replace("@LISTEN@", &listen.to_string())
        .replace("@PORT@", &listen.port().to_string())
        .replace("@AUTHGW@", &authgw.to_string())
        .replace("@APP@", &app.to_string())
}

/// Starts `command` (its stderr to `log`) and waits until it listens on `addr`.
async fn start(
    mut command: Command,
    addr: SocketAddr,
    log: PathBuf,
    dir: tempfile::TempDir,
) -> Running {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    accepting(addr, &mut child, &log).await;
    Running {
        child,
        addr,
        _dir: dir,
    }
}

/// Waits until `addr` accepts connections (10 s at most).
async fn accepting(addr: SocketAddr, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the proxy exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the proxy never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// nginx with docs/forward-auth/nginx.conf, in one process (no master).
async fn nginx(authgw: SocketAddr, app: SocketAddr) -> Option<Running> {
    let bin = binary("nginx")?;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(
        dir.path().join("site.conf"),
        example("nginx.conf", addr, authgw, app),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             include {d}/site.conf;\n}}\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("error.log");
    let mut nginx = Command::new(bin);
    nginx
        .arg("-e")
        .arg(&log)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"));
    Some(start(nginx, addr, log, dir).await)
}

/// Caddy with docs/forward-auth/Caddyfile, its state under a temp dir.
async fn caddy(authgw: SocketAddr, app: SocketAddr) -> Option<Running> {
    let bin = binary("caddy")?;
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let file = dir.path().join("Caddyfile");
    std::fs::write(&file, example("Caddyfile", addr, authgw, app)).unwrap();
    let log = dir.path().join("caddy.log");
    let mut caddy = Command::new(bin);
    caddy
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path());
    Some(start(caddy, addr, log, dir).await)
}

/// Client-sent identity headers: the four authgw sets, and `_` for `-`.
/// Neither proxy removes headers by pattern; any other `X-User-*` name an
/// app reads must be cleared by name (docs/forward-auth.md).
const SPOOF: &str = "X-User-Id: 00000000-0000-0000-0000-000000000001\r\nX-User-Login: root\r\n\
                     X-User-Admin: true\r\nX-User-Roles: admin\r\nX_User_Admin: true\r\n";

/// The gateway as auth service only: the cinema rules on `/films`
/// (optional), `/vault` required; both decision-only (the proxy in front
/// forwards to the app). 127.0.0.1 (the proxy) is trusted.
async fn auth_service() -> TestApp {
    spawn_app_with(|c: &mut Config| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.plugins = vec![plugin("cinema", "role-rules", cinema_rules())];
        c.routes = vec![
            RouteConfig {
                upstream: OneOrMany::default(),
                plugins: vec!["cinema".into()],
                ..route("films", "/films", "http://127.0.0.1:1", AuthMode::Optional)
            },
            RouteConfig {
                upstream: OneOrMany::default(),
                ..route("vault", "/vault", "http://127.0.0.1:1", AuthMode::Required)
            },
        ];
    })
    .await
}

/// `GET <target>` written as is to the proxy, with extra header lines.
async fn get(proxy: &Running, target: &str, token: Option<&str>, extra: &str) -> (u16, Value) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let (head, body) = raw(
        proxy.addr,
        &format!(
            "GET {target} HTTP/1.1\r\nHost: cinema.example\r\n{auth}{extra}Connection: close\r\n\r\n"
        ),
    )
    .await;
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    (status, body)
}

/// What the issue asks of each proxy, through it: 401 without a token; 200
/// with one, the identity headers at the app; the rules' deny (`denied`:
/// nginx turns the 402 into 403); client-sent `X-User-*` never at the app;
/// the hostile paths of issue 13 refused, never at the app; a revoked token
/// refused within a second.
async fn the_contract(app: &TestApp, echo: &Echo, proxy: &Running, denied: u16) {
    let admin = app.admin("root").await;
    let sub = user_with_roles(app, &admin, "sub", &["subscriber"]).await;
    let trial = user_with_roles(app, &admin, "tri", &["trial"]).await;

    let (status, body) = get(proxy, "/vault/x", None, "").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(echo.hits(), 0);

    let (status, body) = get(proxy, "/vault/x?y=1", Some(&sub), "").await;
    assert_eq!(status, 200, "{body}");
    let seen = &body["headers"];
    assert_eq!(seen["x-user-login"], serde_json::json!(["sub"]), "{body}");
    assert_eq!(seen["x-user-roles"], serde_json::json!(["subscriber"]));
    assert_eq!(seen["x-user-admin"], serde_json::json!(["false"]));
    assert!(seen["x-user-id"][0].is_string(), "{body}");
    assert!(
        seen.get("authorization").is_none(),
        "the token reached the app"
    );
    assert_eq!(body["path"], "/vault/x");

    let hits = echo.hits();
    let (status, body) = get(proxy, "/films/premium/1", Some(&trial), "").await;
    assert_eq!(status, denied, "{body}");
    assert_eq!(echo.hits(), hits, "a deny reached the app");

    // Spoofed identity: anonymous on an open path, and with a token.
    for token in [None, Some(sub.as_str())] {
        let (status, body) = get(proxy, "/films", token, SPOOF).await;
        assert_eq!(status, 200, "{body}");
        let headers = body["headers"].as_object().unwrap();
        for (name, values) in headers {
            let n = name.to_ascii_lowercase().replace('_', "-");
            if n.starts_with("x-user-") {
                if token.is_none() {
                    // Nothing, or authgw's empty answer: never the client's.
                    assert_eq!(values, &serde_json::json!([""]), "anonymous: {name}");
                }
                let v = values.to_string();
                assert!(
                    [
                        "root",
                        "admin",
                        "true",
                        "00000000-0000-0000-0000-000000000001"
                    ]
                    .iter()
                    .all(|spoofed| !v.contains(spoofed)),
                    "a client-sent {name} reached the app: {v}"
                );
            }
        }
    }

    // Hostile paths: judged on their canonical path, or refused.
    let hits = echo.hits();
    for (target, token) in [
        ("/films/x/../premium/1", Some(&trial)),
        ("/films/%2e%2e/films/premium/1", Some(&trial)),
        ("/films//premium/1", Some(&trial)),
        ("/films/%70remium/1", Some(&trial)),
        ("/films/..;/vault/x", None),
        ("/films/%2e%2e%2fvault/x", None),
        ("/films/..%5cvault/x", None),
        ("/films/%2e%2e/vault/x", None),
        ("/films/x%00/1", None),
    ] {
        let (status, body) = get(proxy, target, token.map(|t| t.as_str()), "").await;
        assert!((400..500).contains(&status), "{target}: {status} {body}");
    }
    assert_eq!(echo.hits(), hits, "a hostile path reached the app");

    // Revocation: refused within a second of the logout.
    let (_, leaver, _) = app.user("leaver").await;
    assert_eq!(get(proxy, "/vault/x", Some(&leaver), "").await.0, 200);
    app.logout(&leaver).await;
    refused_within_a_second(|| async { get(proxy, "/vault/x", Some(&leaver), "").await.0 == 401 })
        .await;
}

/// Starts the app and the auth service, then the proxy `start` makes in
/// front of them (None: not installed, skipped), and checks the contract.
async fn through<F, Fut>(start: F, denied: u16)
where
    F: FnOnce(SocketAddr, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Option<Running>>,
{
    let echo = Echo::start("app").await;
    let app = auth_service().await;
    if let Some(proxy) = start(app.addr, echo.addr).await {
        the_contract(&app, &echo, &proxy, denied).await;
    }
}

/// nginx `auth_request` with docs/forward-auth/nginx.conf holds the
/// contract (a plugin's 402 reaches the client as 403).
#[tokio::test]
async fn nginx_auth_request_in_front_of_an_app() {
    through(nginx, 403).await;
}

/// Caddy `forward_auth` with docs/forward-auth/Caddyfile holds the
/// contract (a plugin's 402 reaches the client as it is).
#[tokio::test]
async fn caddy_forward_auth_in_front_of_an_app() {
    through(caddy, 402).await;
}
