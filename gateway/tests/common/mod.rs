//! Test harness: every test gets its own freshly created PostgreSQL database
//! (dropped afterwards) and a real server on 127.0.0.1:0, started in-process
//! with a shutdown trigger.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub mod certs;
pub mod fake_idp;
pub mod oidc;
pub mod pgproxy;
pub mod smtp;
pub mod upstream;

use gateway::config::Config;
use gateway::server::Gateway;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Runs blocking (sync postgres) code from async tests on a plain thread.
pub fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("blocking thread panicked"))
}

/// The server used to create and drop test databases.
pub fn admin_url() -> String {
    std::env::var("AUTHGW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database name replaced by `name`.
pub fn url_with_db(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = match base.rsplit_once('/') {
        Some((p, _)) if p.contains("://") && p.len() > p.find("://").unwrap() + 2 => p.to_string(),
        _ => base.trim_end_matches('/').to_string(),
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// A database of its own for one test; dropped (forcibly) with the value.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Creates an empty database.
    pub fn create() -> Self {
        let name = format!("authgw_test_{}", Uuid::new_v4().simple());
        blocking(|| {
            let mut c = postgres::Client::connect(&admin_url(), postgres::NoTls)
                .expect("connect to AUTHGW_TEST_DATABASE_URL");
            c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        });
        let url = url_with_db(&admin_url(), &name);
        Self { name, url }
    }

    /// Creates a database with every migration applied.
    pub fn migrated() -> Self {
        let db = Self::create();
        db.with(|c| {
            gateway::store::migrations::upgrade(c).unwrap();
        });
        db
    }

    /// Runs `f` with a fresh connection to this database.
    pub fn with<T: Send>(&self, f: impl FnOnce(&mut postgres::Client) -> T + Send) -> T {
        let url = self.url.clone();
        blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            f(&mut c)
        })
    }

    /// Runs one query and returns its rows.
    pub fn query(&self, sql: &str) -> Vec<postgres::Row> {
        let sql = sql.to_string();
        self.with(move |c| c.query(sql.as_str(), &[]).unwrap())
    }

    /// The single value of a one-row, one-column query, as i64.
    pub fn count(&self, sql: &str) -> i64 {
        self.query(sql)[0].get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&admin_url(), postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// A keys directory with one EdDSA key, shared by the servers of a test.
pub fn keys_dir() -> Arc<tempfile::TempDir> {
    gateway::tokens::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    gateway::tokens::generate_key(dir.path(), gateway::config::SigningAlgorithm::EdDsa).unwrap();
    Arc::new(dir)
}

/// The configuration tests start from: generous rate limits (tests come from
/// one IP), real argon2id with the OWASP parameters.
pub fn test_config(db_url: &str, keys: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.database.url = db_url.to_string();
    c.database.pool_size = 4;
    c.database.connect_timeout = Duration::from_secs(2);
    c.tokens.keys_dir = keys.to_path_buf();
    c.limits.auth_per_minute = 100_000;
    c.limits.auth_burst = 100_000;
    c.server.shutdown_timeout = Duration::from_secs(5);
    // Mail goes to files (no smtp_url) under the system's temp directory,
    // never into the source tree; the email tests point it at a real server.
    c.email.dir = std::env::temp_dir().join("authgw-test-mail");
    c.introspection
        .clients
        .push(gateway::config::IntrospectionClient {
            id: INTROSPECTION_CLIENT.into(),
            secret_sha256: gateway::introspection::hash_secret(INTROSPECTION_SECRET),
        });
    c
}

/// The introspection client every test server knows.
pub const INTROSPECTION_CLIENT: &str = "test-service";
pub const INTROSPECTION_SECRET: &str = "hNq2g0cKk0mWZ8f3xY7uT1pV5sR9aL4eD6bJ0iO2wQ8";

/// Logs in through `client` (one from [`client_from`]: another loopback
/// address, so another client to the abuse limits).
pub async fn login_from(
    app: &TestApp,
    client: &reqwest::Client,
    login: &str,
    password: &str,
) -> Reply {
    let r = client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"login": login, "password": password}))
        .send()
        .await
        .unwrap();
    reply(r).await
}

/// An HTTP client whose connections come from `ip`: on Linux any address
/// of 127.0.0.0/8 works, so tests can be several clients.
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent("authgw-tests/1")
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`, `POST /reload`).
    pub admin_addr: SocketAddr,
    /// The plain-HTTP listener beside TLS, when started with one.
    pub plain_addr: Option<SocketAddr>,
    pub reloader: Arc<gateway::server::Reloader>,
    pub base: String,
    pub db: Arc<TestDb>,
    pub keys: Arc<tempfile::TempDir>,
    pub http: reqwest::Client,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A server on a fresh, migrated database with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with `tweak` applied to the configuration.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let db = Arc::new(TestDb::migrated());
    let keys = keys_dir();
    let mut config = test_config(&db.url, keys.path());
    tweak(&mut config);
    start(db, keys, config).await
}

/// Starts a server for `config` over an existing database and keys.
pub async fn start(db: Arc<TestDb>, keys: Arc<tempfile::TempDir>, config: Config) -> TestApp {
    let http = reqwest::Client::builder()
        .user_agent("authgw-tests/1")
        .build()
        .unwrap();
    start_with(db, keys, config, http, None).await
}

/// [`start`] with the client the tests use (`http`: one that trusts the
/// test CA for a TLS listener, whose base URL is then `https://`) and,
/// optionally, the plain-HTTP listener beside TLS.
pub async fn start_with(
    db: Arc<TestDb>,
    keys: Arc<tempfile::TempDir>,
    config: Config,
    http: reqwest::Client,
    plain: Option<tokio::net::TcpListener>,
) -> TestApp {
    let gateway = Gateway::build(config.clone()).expect("build gateway");
    let reloader = gateway.reloader();
    let listener = gateway::listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let plain_addr = plain.as_ref().map(|l| l.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let listeners = gateway::server::Listeners {
        main: listener,
        admin: Some(admin),
        plain,
    };
    let handle = tokio::spawn(gateway.serve_listeners(listeners, async move {
        let _ = rx.await;
    }));
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let app = TestApp {
        addr,
        admin_addr,
        plain_addr,
        reloader,
        base: format!("{scheme}://{addr}"),
        db,
        keys,
        http,
        config,
        shutdown: Some(tx),
        handle: Some(handle),
    };
    app.wait_synced().await;
    app
}

/// A JSON response: status, headers and body (Null when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an `application/problem+json` body with `status` and `code`.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.body
        );
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert_eq!(self.body["type"], format!("urn:authgw:problem:{code}"));
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        assert_schema(&self.body, "Problem");
    }
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits (at most 3 s) until the server is ready: database reachable,
    /// schema current, revocation set loaded. Servers meant to stay unready
    /// (tests of /readyz) just use up the wait.
    pub async fn wait_synced(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        reply(req.send().await.unwrap()).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        reply(req.send().await.unwrap()).await
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.admin_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of an unlabelled metric on the admin listener's `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// `POST /api/v1/auth/introspect` with `body`, as the test's
    /// introspection client (HTTP Basic).
    pub async fn introspect(&self, body: Value) -> Reply {
        let req = self
            .http
            .post(self.url("/api/v1/auth/introspect"))
            .basic_auth(INTROSPECTION_CLIENT, Some(INTROSPECTION_SECRET))
            .json(&body);
        reply(req.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn signup(&self, login: &str, password: &str) -> Reply {
        self.post(
            "/api/v1/auth/signup",
            None,
            json!({"login": login, "password": password}),
        )
        .await
    }

    pub async fn login(&self, login: &str, password: &str) -> Reply {
        self.post(
            "/api/v1/auth/login",
            None,
            json!({"login": login, "password": password}),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh_token}),
        )
        .await
    }

    /// Signs up and logs in a user; returns (user id, access token, refresh token).
    pub async fn user(&self, login: &str) -> (String, String, String) {
        let s = self.signup(login, PASSWORD).await;
        assert_eq!(s.status, StatusCode::CREATED, "{}", s.body);
        let (access, refresh) = self.tokens(login).await;
        (s.body["id"].as_str().unwrap().to_string(), access, refresh)
    }

    /// Logs in; returns (access token, refresh token).
    pub async fn tokens(&self, login: &str) -> (String, String) {
        let l = self.login(login, PASSWORD).await;
        assert_eq!(l.status, StatusCode::OK, "{}", l.body);
        (
            l.body["access_token"].as_str().unwrap().to_string(),
            l.body["refresh_token"].as_str().unwrap().to_string(),
        )
    }

    /// Creates an administrator the way the CLI does and logs it in; returns its access token.
    pub async fn admin(&self, login: &str) -> String {
        let hash = gateway::passwords::hash(&self.config.passwords, PASSWORD).unwrap();
        let login_owned = login.to_string();
        self.db.with(move |c| {
            gateway::admin::create_admin(c, "cli:test", &login_owned, None, &hash).unwrap();
        });
        self.tokens(login).await.0
    }

    /// `POST /api/v1/auth/logout` with `token`, which must succeed.
    pub async fn logout(&self, token: &str) {
        let out = self
            .send(
                reqwest::Method::POST,
                "/api/v1/auth/logout",
                Some(token),
                None,
            )
            .await;
        assert!(out.status.is_success(), "{:?}", out.body);
    }

    /// Triggers graceful shutdown and waits for the server to finish.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.unwrap(),
            None => Ok(()),
        }
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// Runs the real `authgw` binary against `db_url` (as OS user `tester`, no
/// config file), feeding `stdin` if given.
pub fn authgw(db_url: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_authgw"));
    cmd.args(args)
        .env("AUTHGW_DATABASE_URL", db_url)
        .env_remove("AUTHGW_CONFIG")
        .env_remove("AUTHGW_LISTEN")
        .env("USER", "tester")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd.current_dir(std::env::temp_dir());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub const PASSWORD: &str = "correct horse battery staple";

fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/auth-openapi.yaml");
        let raw = std::fs::read_to_string(path).unwrap();
        serde_norway::from_str(&raw).unwrap()
    })
}

/// Validates `body` against `#/components/schemas/{name}` of docs/auth-openapi.yaml.
pub fn assert_schema(body: &Value, name: &str) {
    let mut root = openapi().clone();
    assert!(
        root["components"]["schemas"].get(name).is_some(),
        "no schema {name} in the OpenAPI document"
    );
    root["$ref"] = json!(format!("#/components/schemas/{name}"));
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name} schema violations: {errors:?}\nbody: {body}"
    );
}

/// Decodes the claims of a JWT without verifying it (to inspect what was issued).
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// `plugins/dist/<name>.wasm`, which scripts/build-plugins.sh builds.
pub fn dist(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

/// A `[[plugins]]` entry named `name` for `plugins/dist/<file>.wasm` with
/// `config`, two warm instances.
pub fn plugin(name: &str, file: &str, config: Value) -> gateway::plugins::PluginSpec {
    let mut spec = gateway::plugins::PluginSpec::new(name, dist(file));
    spec.config = config;
    spec.instances = 2;
    spec
}

/// A gateway whose routes are `routes`, with `tweak` applied after.
pub async fn gateway_with(
    routes: Vec<gateway::config::RouteConfig>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    spawn_app_with(move |c| {
        c.routes = routes;
        tweak(c);
    })
    .await
}

/// The body of a `Transfer-Encoding: chunked` response, chunk extensions
/// ignored.
pub fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(
            std::str::from_utf8(&raw[..line_end])
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Writes `request` on a fresh connection and reads the whole answer (the
/// request must say `Connection: close`): the head, lower-cased, and the
/// body, de-chunked.
pub async fn raw(addr: SocketAddr, request: &str) -> (String, Vec<u8>) {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut sock, request.as_bytes())
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut sock, &mut all),
    )
    .await
    .expect("the gateway answers and closes")
    .unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
    let mut body = all[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (head, body)
}

/// The quickstart's cinema rules (plugins/role-rules/examples/cinema.json).
pub fn cinema_rules() -> Value {
    let raw = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/role-rules/examples/cinema.json"),
    )
    .unwrap();
    serde_json::from_str(&raw).unwrap()
}

/// A user with `roles` (created and granted through the admin API); returns
/// a fresh access token that carries them.
pub async fn user_with_roles(app: &TestApp, admin: &str, login: &str, roles: &[&str]) -> String {
    let (id, _, _) = app.user(login).await;
    for role in roles {
        let created = app
            .post("/api/v1/roles", Some(admin), json!({"name": role}))
            .await;
        assert!(
            created.status == 201 || created.status == 409,
            "{}",
            created.body
        );
        let granted = app
            .send(
                reqwest::Method::PUT,
                &format!("/api/v1/users/{id}/roles/{role}"),
                Some(admin),
                None,
            )
            .await;
        assert!(granted.status.is_success(), "{}", granted.body);
    }
    app.tokens(login).await.0
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `refused` until it says true; fails if that takes a second or more
/// (a revoked token must be refused within a second).
pub async fn refused_within_a_second<F, Fut>(mut refused: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !refused().await {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still allowed after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a raw connection to `addr` and sends a WebSocket handshake for
/// `path`; returns the socket and the answer's head, lower-cased (it must
/// arrive within 5 s).
pub async fn ws_handshake(addr: SocketAddr, path: &str) -> (tokio::net::TcpStream, String) {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut sock, request.as_bytes())
        .await
        .unwrap();
    let head = read_within(&mut sock, Duration::from_secs(5)).await;
    (sock, String::from_utf8_lossy(&head).to_ascii_lowercase())
}

/// What one read of `sock` returns within `limit` (panics on timeout).
pub async fn read_within(sock: &mut tokio::net::TcpStream, limit: Duration) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(limit, tokio::io::AsyncReadExt::read(sock, &mut buf))
        .await
        .expect("nothing to read in time")
        .unwrap();
    buf.truncate(n);
    buf
}
