//! Browser frontends (issue 21) in a real browser: Debian's Chromium,
//! headless, driven by playwright-core (gateway/tests/browser/drive.mjs,
//! pinned by its package-lock.json). Three origins of one site, all
//! `http://localhost:<port>`: the gateway, the test app
//! (gateway/tests/browser/app/, allowed in `cors.allowed_origins`) and an
//! attacker's page (gateway/tests/browser/evil/, not allowed). Same site,
//! so `SameSite=Strict` cookies go along with the attacker's requests and
//! only the CSRF check (Origin + `X-Requested-With`) stops them.
//!
//! The cookies keep their secure default (`auth.cookie_secure = true`, the
//! `__Secure-`/`__Host-` names): Chromium treats `http://localhost` as a
//! secure context and stores and sends `Secure` cookies there.
//!
//! The script reports what the browser saw at checkpoints (`CHECKPOINT
//! <name> <json>` on its stdout), waits for `go` on its stdin while this
//! test asserts on it and on the database, and ends with `DONE <json>`.
//! scripts/test.sh installs Chromium and runs `npm ci`; without node,
//! Chromium or node_modules these tests fail (they never skip).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use common::upstream::{Echo, route};
use common::*;
use gateway::config::{AuthMode, RouteConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The cookie names with `auth.cookie_secure = true` (the default).
const REFRESH_COOKIE: &str = "__Secure-authgw_refresh";
const ACCESS_COOKIE: &str = "__Host-authgw_access";
const LOGIN: &str = "browser-alice";

/// The longest the script may take to reach its next line (checkpoint or
/// end); drive.mjs bounds each of its own waits at 15 s and itself at 150 s.
const LINE_TIMEOUT: Duration = Duration::from_secs(90);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The workspace's target directory (CARGO_TARGET_DIR if set).
fn target_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir), // an absolute path replaces root
        None => root.join("target"),
    }
}

/// node and Chromium, after checking that drive.mjs can run. Anything
/// missing fails the test, under CI and elsewhere, with how to get it.
fn tools() -> (PathBuf, PathBuf) {
    let node = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("node"))
        .find(|p| p.is_file());
    let chromium =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    let mut missing = Vec::new();
    if node.is_none() {
        missing.push("node (apt-get install nodejs npm)".to_string());
    }
    if !chromium.is_file() {
        missing.push(format!("{} (apt-get install chromium)", chromium.display()));
    }
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    if !playwright.is_file() {
        missing.push(format!(
            "{} (npm ci --no-audit --no-fund in gateway/tests/browser)",
            playwright.display()
        ));
    }
    assert!(
        missing.is_empty(),
        "\n!!!!!!!! the browser tests cannot run: missing {}; scripts/test.sh installs them{} !!!!!!!!\n",
        missing.join(", "),
        if std::env::var_os("CI").is_some() {
            " (CI is set)"
        } else {
            ""
        }
    );
    (node.unwrap(), chromium)
}

/// Serves gateway/tests/browser/<dir>/ on `listener`, plus `/config.js`
/// naming the gateway's origin. Files are read per request.
fn serve_site(listener: TcpListener, dir: &'static str, gateway_origin: String) {
    let config = format!("window.AUTHGW_URL = {};\n", Value::String(gateway_origin));
    let root = browser_dir().join(dir);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let config = config.clone();
        let root = root.clone();
        async move {
            let no_store = (header::CACHE_CONTROL, "no-store");
            let js = "text/javascript; charset=utf-8";
            let name = match uri.path() {
                "/config.js" => {
                    return ([(header::CONTENT_TYPE, js), no_store], config).into_response();
                }
                "/" => "index.html",
                path => path.trim_start_matches('/'),
            };
            let kind = match Path::new(name).extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => js,
                _ => return StatusCode::NOT_FOUND.into_response(),
            };
            if name.contains('/') || name.contains("..") {
                return StatusCode::NOT_FOUND.into_response();
            }
            match tokio::fs::read_to_string(root.join(name)).await {
                Ok(text) => ([(header::CONTENT_TYPE, kind), no_store], text).into_response(),
                Err(_) => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

/// The gateway (the app's origin allowed, the access cookie on, an echo
/// upstream under `/echo` with `cors = true`), the app and the attacker's
/// page, each on its own port of localhost, and a signed-up user.
struct World {
    gateway: TestApp,
    echo: Echo,
    user_id: String,
    env: Vec<(&'static str, String)>,
}

async fn world() -> World {
    tools(); // before anything starts: fail at once when they are missing
    let echo = Echo::start("browser-api").await;
    let app_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_origin = format!(
        "http://localhost:{}",
        app_listener.local_addr().unwrap().port()
    );
    let evil_origin = format!(
        "http://localhost:{}",
        evil_listener.local_addr().unwrap().port()
    );
    let allowed = app_origin.clone();
    let upstream = echo.url();
    let gateway = spawn_app_with(move |c| {
        c.cors.allowed_origins = vec![allowed];
        c.auth.access_cookie = true;
        c.routes = vec![RouteConfig {
            cors: true,
            ..route("echo", "/echo", &upstream, AuthMode::Required)
        }];
    })
    .await;
    assert!(
        gateway.config.auth.cookie_secure,
        "the secure default is what is tested"
    );
    let gateway_origin = format!("http://localhost:{}", gateway.addr.port());
    serve_site(app_listener, "app", gateway_origin.clone());
    serve_site(evil_listener, "evil", gateway_origin.clone());

    let signup = gateway.signup(LOGIN, PASSWORD).await;
    assert_eq!(signup.status, 201, "{}", signup.body);
    let user_id = signup.body["id"].as_str().unwrap().to_string();
    World {
        gateway,
        echo,
        user_id,
        env: vec![
            ("AUTHGW_URL", gateway_origin),
            ("APP_URL", app_origin),
            ("EVIL_URL", evil_origin),
            ("LOGIN", LOGIN.to_string()),
            ("PASSWORD", PASSWORD.to_string()),
        ],
    }
}

impl World {
    fn origin(&self, var: &str) -> &str {
        &self.env.iter().find(|(k, _)| *k == var).unwrap().1
    }

    /// The user's refresh tokens in issue order: (session id, token hash in
    /// hex, used, revoked).
    fn tokens(&self) -> Vec<(String, String, bool, bool)> {
        self.gateway
            .db
            .query(&format!(
                "SELECT session_id::text, encode(token_hash, 'hex'), used_at IS NOT NULL, revoked_at IS NOT NULL \
                 FROM refresh_tokens WHERE user_id = '{}' ORDER BY id",
                self.user_id
            ))
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// Every row of refresh_tokens and revocations, as text, to compare.
    fn snapshot(&self) -> Vec<String> {
        let db = &self.gateway.db;
        db.query("SELECT r::text FROM refresh_tokens r ORDER BY id")
            .iter()
            .chain(
                db.query("SELECT r::text FROM revocations r ORDER BY id")
                    .iter(),
            )
            .map(|r| r.get(0))
            .collect()
    }
}

/// The hex SHA-256 under which the gateway stores a refresh token.
fn stored_hash(token: &str) -> String {
    gateway::tokens::refresh_token_hash(token)
        .unwrap_or_else(|| panic!("{token:?} is not a refresh token"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The browser's cookie `name` (from the context's jar, HttpOnly included).
fn cookie<'a>(seen: &'a Value, name: &str) -> Option<&'a Value> {
    seen.as_array().unwrap().iter().find(|c| c["name"] == name)
}

fn cookie_value(jar: &Value, name: &str) -> String {
    cookie(jar, name).unwrap_or_else(|| panic!("no cookie {name} in {jar}"))["value"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The Set-Cookie line of a response for `name`.
fn set_cookie<'a>(response: &'a Value, name: &str) -> &'a str {
    response["set_cookie"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|l| l.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name} in {response}"))
}

/// The attributes of a Set-Cookie line, lower-cased, without the value.
fn attributes(line: &str) -> Vec<String> {
    line.split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

/// A cookie-mode token response: access token, no refresh token anywhere.
fn assert_cookie_mode_tokens(response: &Value, what: &str) {
    assert_eq!(response["status"], 200, "{what}: {response}");
    let body = response["body"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {response}"));
    assert!(body["access_token"].is_string(), "{what}: {response}");
    assert_eq!(body["token_type"], "Bearer", "{what}: {response}");
    assert!(body["expires_in"].is_u64(), "{what}: {response}");
    assert!(
        !body.contains_key("refresh_token"),
        "{what} has a refresh_token: {response}"
    );
}

/// drive.mjs running one scenario.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Driver {
    async fn start(scenario: &str, world: &World, extra: &[(&str, String)]) -> Self {
        let (node, chromium) = tools();
        let mut child = Command::new(node)
            .arg("drive.mjs")
            .arg(scenario)
            .current_dir(browser_dir())
            .envs(world.env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .env("CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            stdin: child.stdin.take().unwrap(),
            lines: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
            stderr,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next `<kind> <name>` line's JSON (other stdout lines are echoed).
    async fn next(&mut self, kind: &str, name: &str) -> Value {
        let want = if name.is_empty() {
            format!("{kind} ")
        } else {
            format!("{kind} {name} ")
        };
        loop {
            let line = match tokio::time::timeout(LINE_TIMEOUT, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(end) => {
                    let status =
                        tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
                    panic!(
                        "drive.mjs ended ({end:?}, exit {status:?}) before {want}\n--- its stderr:\n{}",
                        self.log()
                    );
                }
                Err(_) => panic!(
                    "drive.mjs printed no line in {LINE_TIMEOUT:?} while the test waited for {want}\n--- its stderr:\n{}",
                    self.log()
                ),
            };
            if let Some(json) = line.strip_prefix(&want) {
                return serde_json::from_str(json).unwrap();
            }
            assert!(
                !line.starts_with("CHECKPOINT ") && !line.starts_with("DONE "),
                "expected {want}, got {line}\n--- stderr:\n{}",
                self.log()
            );
            println!("drive.mjs: {line}");
        }
    }

    async fn checkpoint(&mut self, name: &str) -> Value {
        let seen = self.next("CHECKPOINT", name).await;
        println!("checkpoint {name}: {seen}");
        seen
    }

    /// Lets the script go on past its checkpoint.
    async fn go(&mut self) {
        self.stdin.write_all(b"go\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The `DONE` report, once the script exited successfully.
    async fn done(mut self) -> Value {
        let seen = self.next("DONE", "").await;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("drive.mjs exits after DONE")
            .unwrap();
        assert!(
            status.success(),
            "drive.mjs: {status}\n--- stderr:\n{}",
            self.log()
        );
        println!("done: {seen}");
        seen
    }
}

/// The app's whole cookie session in Chromium: a cookie-mode login whose
/// JSON has no refresh token and whose refresh cookie is HttpOnly (absent
/// from `document.cookie`) and is the session's current token in the
/// database; a reload restores the session by a silent cookie refresh
/// (rotating the token in the same session); the proxied `/echo` route
/// (access cookie, CORS) receives the user's identity (`X-User-Login`)
/// and never the cookies, and takes a POST from the app (the CSRF proof
/// passes for the allowed origin); a script injected into the app can make
/// the gateway refresh but never reads the refresh token (not in
/// `document.cookie`, not in the response body, Set-Cookie unreadable);
/// logout clears both cookies and revokes the session in the database,
/// and a reload then shows the app logged out. A screenshot of the app
/// after login goes to target/browser/app-after-login.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_cookie_session_in_chromium() {
    let world = world().await;
    let screenshot = target_dir().join("browser/app-after-login.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut run = Driver::start(
        "session",
        &world,
        &[("SCREENSHOT", screenshot.display().to_string())],
    )
    .await;

    // --- after login -------------------------------------------------------------
    let seen = run.checkpoint("logged_in").await;
    let first = &seen["first_refresh"];
    assert_eq!(first["status"], 401, "no cookie yet: {first}");
    assert_eq!(first["body"]["code"], "invalid_refresh_token", "{first}");

    let login = &seen["login"];
    assert_cookie_mode_tokens(login, "cookie-mode login");
    let refresh_line = attributes(set_cookie(login, REFRESH_COOKIE));
    for want in ["httponly", "secure", "samesite=strict", "path=/api/v1/auth"] {
        assert!(
            refresh_line.iter().any(|a| a == want),
            "{want} missing: {refresh_line:?}"
        );
    }
    let access_line = attributes(set_cookie(login, ACCESS_COOKIE));
    for want in ["httponly", "secure", "samesite=strict", "path=/"] {
        assert!(
            access_line.iter().any(|a| a == want),
            "{want} missing: {access_line:?}"
        );
    }

    let jar = &seen["cookies"];
    let refresh = cookie(jar, REFRESH_COOKIE)
        .unwrap_or_else(|| panic!("Chromium kept no refresh cookie: {jar}"));
    assert_eq!(refresh["http_only"], true, "{refresh}");
    assert_eq!(refresh["secure"], true, "{refresh}");
    assert_eq!(refresh["same_site"], "Strict", "{refresh}");
    assert_eq!(refresh["path"], "/api/v1/auth", "{refresh}");
    let access = cookie(jar, ACCESS_COOKIE)
        .unwrap_or_else(|| panic!("Chromium kept no access cookie: {jar}"));
    assert_eq!(access["http_only"], true, "{access}");
    assert_eq!(access["path"], "/", "{access}");
    let token = cookie_value(jar, REFRESH_COOKIE);

    let page_cookies = seen["document_cookie"].as_str().unwrap();
    assert!(
        !page_cookies.contains("authgw") && !page_cookies.contains(&token),
        "document.cookie shows a token: {page_cookies:?}"
    );

    let shown = &seen["shown"];
    assert_eq!(shown["state"], "logged-in", "{shown}");
    assert_eq!(shown["user_login"], LOGIN, "users/me: {shown}");
    assert_eq!(shown["user_id"], world.user_id.as_str(), "{shown}");
    assert_eq!(
        shown["upstream_login"], LOGIN,
        "X-User-Login at the upstream: {shown}"
    );
    assert!(
        !shown["upstream_cookie"]
            .as_str()
            .unwrap()
            .contains("authgw"),
        "the upstream received authgw's cookies: {shown}"
    );
    assert!(world.echo.hits() >= 1);

    let tokens = world.tokens();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let session = tokens[0].0.clone();
    assert_eq!(
        tokens[0].1,
        stored_hash(&token),
        "the cookie is the session's token"
    );
    assert!(!tokens[0].2 && !tokens[0].3, "{tokens:?}");
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
    run.go().await;

    // --- an injected script, then a reload ----------------------------------------
    let seen = run.checkpoint("reloaded").await;
    let xss = &seen["xss"];
    let before = cookie_value(&seen["cookies_before_xss"], REFRESH_COOKIE);
    let after = cookie_value(&seen["cookies_after_xss"], REFRESH_COOKIE);
    assert_eq!(before, token);
    assert_ne!(after, before, "the script's refresh rotated the cookie");
    for key in ["document_cookie", "document_cookie_after"] {
        let c = xss[key].as_str().unwrap();
        assert!(
            !c.contains("authgw") && !c.contains(&before) && !c.contains(&after),
            "{key} shows a token to the script: {c:?}"
        );
    }
    assert_eq!(xss["status"], 200, "{xss}");
    let text = xss["body_text"].as_str().unwrap();
    let body: Value = serde_json::from_str(text).unwrap();
    assert!(body.get("refresh_token").is_none(), "{text}");
    assert!(
        !text.contains(&before) && !text.contains(&after),
        "the refresh body holds the refresh token: {text}"
    );
    assert!(
        xss["set_cookie_header"].is_null(),
        "Set-Cookie readable: {xss}"
    );

    let reload = &seen["reload"];
    assert_cookie_mode_tokens(reload, "the silent refresh on reload");
    assert_eq!(seen["shown"]["state"], "logged-in", "{seen}");
    assert_eq!(seen["shown"]["user_login"], LOGIN, "{seen}");
    assert_eq!(seen["shown"]["upstream_login"], LOGIN, "{seen}");
    let current = cookie_value(&seen["cookies"], REFRESH_COOKIE);
    assert_ne!(current, after, "the reload's refresh rotated the cookie");
    let page_cookies = seen["document_cookie"].as_str().unwrap();
    assert!(!page_cookies.contains("authgw"), "{page_cookies:?}");

    let tokens = world.tokens();
    assert_eq!(
        tokens.len(),
        3,
        "login, the script's refresh, the reload's: {tokens:?}"
    );
    assert!(
        tokens.iter().all(|t| t.0 == session),
        "one session: {tokens:?}"
    );
    assert!(
        tokens[0].2 && tokens[1].2 && !tokens[2].2,
        "rotation: {tokens:?}"
    );
    assert!(tokens.iter().all(|t| !t.3), "{tokens:?}");
    assert_eq!(tokens[2].1, stored_hash(&current));
    run.go().await;

    // --- a POST through the proxy, then logout ------------------------------------
    let seen = run.checkpoint("logged_out").await;
    assert_eq!(seen["post"]["status"], "200", "{seen}");
    assert_eq!(
        seen["post"]["text"],
        format!("POST reached the upstream as {LOGIN}"),
        "{seen}"
    );
    let logout = &seen["logout"];
    assert_eq!(logout["status"], 204, "{logout}");
    for name in [REFRESH_COOKIE, ACCESS_COOKIE] {
        let line = attributes(set_cookie(logout, name));
        assert!(
            line.iter().any(|a| a == "max-age=0"),
            "{name} not cleared: {line:?}"
        );
    }
    assert!(
        cookie(&seen["cookies"], REFRESH_COOKIE).is_none()
            && cookie(&seen["cookies"], ACCESS_COOKIE).is_none(),
        "cookies left after logout: {}",
        seen["cookies"]
    );
    let tokens = world.tokens();
    assert!(
        tokens.iter().all(|t| t.3),
        "the session's tokens are revoked: {tokens:?}"
    );
    let revoked = world.gateway.db.count(&format!(
        "SELECT count(*) FROM revocations WHERE kind = 'session' AND subject = '{session}'"
    ));
    assert_eq!(revoked, 1, "a revocation of the session");
    run.go().await;

    // --- reload after logout ---------------------------------------------------------
    let done = run.done().await;
    let again = &done["reload_after_logout"];
    assert_eq!(again["status"], 401, "{again}");
    assert_eq!(again["body"]["code"], "invalid_refresh_token", "{again}");
    assert_eq!(done["shown"]["state"], "logged-out", "{done}");
}

/// A page on another origin of the same site (localhost, another port),
/// with the user logged in to the app in the same browser: its HTML form
/// POSTs to `logout-all`, to `refresh` (both carrying the SameSite=Strict
/// refresh cookie) and to a proxied POST route (carrying the access
/// cookie) are refused with 403 `csrf_rejected`, and change nothing: the
/// refresh_tokens and revocations rows are identical, the upstream is
/// never reached, the browser's cookies are unchanged. Its credentialed
/// `fetch`es (users/me, refresh with and without `X-Requested-With`,
/// logout-all) fail with a TypeError: no CORS for its origin. Back in the
/// app, the session is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_origin_cannot_use_the_cookie_session() {
    let world = world().await;
    let evil_origin = world.origin("EVIL_URL").to_string();
    let mut run = Driver::start("evil", &world, &[]).await;

    let seen = run.checkpoint("logged_in").await;
    assert_eq!(seen["shown"]["state"], "logged-in", "{seen}");
    let refresh = cookie_value(&seen["cookies"], REFRESH_COOKIE);
    let access = cookie_value(&seen["cookies"], ACCESS_COOKIE);
    let before = world.snapshot();
    assert_eq!(world.tokens().len(), 1, "{before:?}");
    let hits = world.echo.hits();
    run.go().await;

    let seen = run.checkpoint("after_evil").await;
    for (form, carried) in [
        ("logout-all", REFRESH_COOKIE),
        ("refresh", REFRESH_COOKIE),
        ("transfer", ACCESS_COOKIE),
    ] {
        let f = &seen["forms"][form];
        assert_eq!(f["sent"]["origin"], evil_origin.as_str(), "{form}: {f}");
        assert!(
            f["sent"]["cookie"]
                .as_str()
                .unwrap()
                .contains(&format!("{carried}=")),
            "{form}: the browser sent no {carried} (so this proves nothing about CSRF): {f}"
        );
        assert_eq!(f["status"], 403, "{form}: {f}");
        assert_eq!(f["content_type"], "application/problem+json", "{form}: {f}");
        assert_eq!(f["body"]["code"], "csrf_rejected", "{form}: {f}");
        let page: Value = serde_json::from_str(f["page_text"].as_str().unwrap())
            .unwrap_or_else(|_| panic!("{form}: the navigated page is not the problem: {f}"));
        assert_eq!(
            page["code"], "csrf_rejected",
            "{form}: the page shows {page}"
        );
        assert_eq!(f["page_url"], f["action"], "{form}: {f}");
    }
    for name in [
        "me",
        "refreshWithHeader",
        "refreshSimple",
        "logoutAllSimple",
    ] {
        let attempt = &seen["fetches"][name];
        assert_eq!(
            attempt["outcome"], "TypeError",
            "fetch {name} was not blocked: {attempt}"
        );
    }
    assert_eq!(cookie_value(&seen["cookies"], REFRESH_COOKIE), refresh);
    assert_eq!(cookie_value(&seen["cookies"], ACCESS_COOKIE), access);
    assert_eq!(
        world.snapshot(),
        before,
        "the other origin changed the database"
    );
    assert_eq!(
        world.gateway.db.count("SELECT count(*) FROM revocations"),
        0
    );
    assert_eq!(
        world.echo.hits(),
        hits,
        "the form POST reached the upstream"
    );
    run.go().await;

    let done = run.done().await;
    assert_cookie_mode_tokens(&done["refresh"], "the app's refresh after the attack");
    assert_eq!(done["shown"]["state"], "logged-in", "{done}");
    assert_eq!(done["shown"]["user_login"], LOGIN, "{done}");
    let tokens = world.tokens();
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert!(tokens[0].2 && !tokens[1].2 && !tokens[1].3, "{tokens:?}");
}
