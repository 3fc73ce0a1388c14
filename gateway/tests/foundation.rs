//! Foundation: migrations, the `authgw` binary's admin/db/config behaviour,
//! health and readiness, graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Migrations apply to an empty database, and applying them again changes nothing.
#[test]
fn migrations_apply_once_and_are_idempotent() {
    let db = TestDb::create();
    let first = db.with(|c| gateway::store::migrations::upgrade(c).unwrap());
    assert!(first.len() >= 3, "{first:?}");
    let second = db.with(|c| gateway::store::migrations::upgrade(c).unwrap());
    assert!(second.is_empty(), "second upgrade applied {second:?}");
    let tables = db.count(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN
         ('users','roles','user_roles','refresh_tokens','login_history','revocations','audit_log')",
    );
    assert_eq!(tables, 7);
    let pending = db.with(|c| gateway::store::migrations::pending(c).unwrap());
    assert!(pending.is_empty());
}

/// `authgw db upgrade` and `db status` through the real binary.
#[test]
fn cli_db_upgrade_and_status() {
    let db = TestDb::create();
    let status = authgw(&db.url, &["db", "status"], None);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    assert!(
        stdout(&status).contains("V1__users_and_roles\tpending"),
        "{}",
        stdout(&status)
    );
    let up = authgw(&db.url, &["db", "upgrade"], None);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    assert!(
        stdout(&up).contains("applied V1__users_and_roles"),
        "{}",
        stdout(&up)
    );
    let again = authgw(&db.url, &["db", "upgrade"], None);
    assert_eq!(stdout(&again).trim(), "schema is up to date");
    let status = authgw(&db.url, &["db", "status"], None);
    assert!(!stdout(&status).contains("pending"), "{}", stdout(&status));
    assert!(stdout(&status).contains("V3__audit_log\tapplied"));
}

/// `authgw db new NAME` writes the next numbered empty file and prints its path.
#[test]
fn cli_db_new_writes_next_migration() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("V1__a.sql"), "").unwrap();
    std::fs::write(dir.path().join("V7__b.sql"), "").unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let out = authgw(
        "postgresql://unused@127.0.0.1:1/x",
        &["db", "new", "add_index", "--dir", dir_arg],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let path = stdout(&out).trim().to_string();
    assert!(path.ends_with("V8__add_index.sql"), "{path}");
    assert!(std::fs::read_to_string(&path).unwrap().starts_with("--"));
    let bad = authgw(
        "postgresql://unused@127.0.0.1:1/x",
        &["db", "new", "Bad Name", "--dir", dir_arg],
        None,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).starts_with("error: "), "{}", stderr(&bad));
}

/// `admin create` makes an administrator whose password verifies with argon2id,
/// records the CLI actor in the audit log, and `admin list` shows it.
#[test]
fn cli_admin_create_makes_a_verifiable_admin() {
    let db = TestDb::migrated();
    let out = authgw(
        &db.url,
        &["admin", "create", "--login", "root", "--password-stdin"],
        Some("s3cret-passphrase\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = db.query("SELECT is_admin, password_hash FROM users WHERE login = 'root'");
    assert_eq!(rows.len(), 1);
    assert!(rows[0].get::<_, bool>(0));
    let hash: String = rows[0].get(1);
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(gateway::passwords::verify("s3cret-passphrase", &hash));
    assert!(!gateway::passwords::verify("s3cret-passphrasE", &hash));
    let audit = db.query("SELECT actor, action FROM audit_log");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].get::<_, String>(0), "cli:tester");
    assert_eq!(audit[0].get::<_, String>(1), "admin.create");
    let list = authgw(&db.url, &["admin", "list"], None);
    assert!(stdout(&list).starts_with("root\t"), "{}", stdout(&list));
}

/// A duplicate login (case-insensitively) exits 1 with one clear line.
#[test]
fn cli_admin_create_duplicate_login_fails_cleanly() {
    let db = TestDb::migrated();
    let ok = authgw(
        &db.url,
        &["admin", "create", "--login", "root", "--password-stdin"],
        Some("s3cret-passphrase\n"),
    );
    assert_eq!(ok.status.code(), Some(0));
    let dup = authgw(
        &db.url,
        &["admin", "create", "--login", "ROOT", "--password-stdin"],
        Some("another-passphrase\n"),
    );
    assert_eq!(dup.status.code(), Some(1));
    assert_eq!(stderr(&dup), "error: login 'ROOT' already exists\n");
    assert_eq!(db.count("SELECT count(*) FROM users"), 1);
}

/// An empty or too short password from stdin is refused and creates nothing.
#[test]
fn cli_admin_create_refuses_bad_passwords() {
    let db = TestDb::migrated();
    for input in ["\n", "", "short\n"] {
        let out = authgw(
            &db.url,
            &["admin", "create", "--login", "root", "--password-stdin"],
            Some(input),
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "input {input:?}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(
            err.starts_with("error: ") && err.lines().count() == 1,
            "{err}"
        );
    }
    let same = authgw(
        &db.url,
        &["admin", "create", "--login", "rootroot", "--password-stdin"],
        Some("rootroot\n"),
    );
    assert_eq!(same.status.code(), Some(2));
    assert_eq!(db.count("SELECT count(*) FROM users"), 0);
}

/// Without a terminal and without --password-stdin, the CLI refuses rather than hang.
#[test]
fn cli_admin_create_without_terminal_asks_for_stdin_flag() {
    let db = TestDb::migrated();
    let out = authgw(&db.url, &["admin", "create", "--login", "root"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--password-stdin"),
        "{}",
        stderr(&out)
    );
}

/// `admin set-password` changes the password of an administrator only.
#[test]
fn cli_admin_set_password() {
    let db = TestDb::migrated();
    authgw(
        &db.url,
        &["admin", "create", "--login", "root", "--password-stdin"],
        Some("first-passphrase\n"),
    );
    let out = authgw(
        &db.url,
        &[
            "admin",
            "set-password",
            "--login",
            "root",
            "--password-stdin",
        ],
        Some("second-passphrase\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let hash: String = db.query("SELECT password_hash FROM users WHERE login = 'root'")[0].get(0);
    assert!(gateway::passwords::verify("second-passphrase", &hash));
    let missing = authgw(
        &db.url,
        &[
            "admin",
            "set-password",
            "--login",
            "nobody",
            "--password-stdin",
        ],
        Some("second-passphrase\n"),
    );
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stderr(&missing), "error: user 'nobody' not found\n");
}

/// `keys generate` writes a private (0600) key and prints its kid, plus a
/// secret the first time; `keys list` shows every key with the newest as the
/// signer and every secret with the newest deriving; `--kind secret` rotates
/// the secret.
#[test]
fn cli_keys_generate_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_authgw"))
            .args(args)
            .env("AUTHGW_KEYS_DIR", &keys)
            .env_remove("AUTHGW_CONFIG")
            .current_dir(dir.path())
            .output()
            .unwrap();
        (o.status.code(), stdout(&o), stderr(&o))
    };
    assert_eq!(
        run(&["keys", "list"]),
        (Some(0), String::new(), String::new())
    );
    let (code, first, err) = run(&["keys", "generate"]);
    assert_eq!(code, Some(0), "{err}");
    let printed: Vec<&str> = first.lines().collect();
    assert_eq!(printed.len(), 2, "{first}");
    let path = printed[0].split('\t').nth(1).unwrap().to_string();
    assert!(path.ends_with("-eddsa.pem"), "{path}");
    let secret = printed[1].split('\t').nth(1).unwrap().to_string();
    assert!(secret.ends_with(".secret"), "{secret}");
    use std::os::unix::fs::PermissionsExt;
    for file in [&path, &secret] {
        assert_eq!(
            std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let (code, second, _) = run(&["keys", "generate", "--alg", "RS256"]);
    assert_eq!(code, Some(0));
    assert_eq!(second.lines().count(), 1, "a secret exists: no second one");
    let (_, list, _) = run(&["keys", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines[2].ends_with("\tderiving") && lines[2].contains("\tHMAC-SHA256\t"),
        "{list}"
    );
    let (code, rotated, err) = run(&["keys", "generate", "--kind", "secret"]);
    assert_eq!(code, Some(0), "{err}");
    let (_, list, _) = run(&["keys", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    assert!(lines[2].ends_with("\tre-derive"), "{list}");
    assert!(
        lines[3].ends_with("\tderiving")
            && lines[3].starts_with(rotated.split('\t').next().unwrap()),
        "{list}"
    );
    let (code, _, err) = run(&["keys", "generate", "--kind", "secret", "--alg", "ES256"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        "error: --alg applies to signing keys, not to --kind secret\n"
    );
    assert!(
        lines[0].ends_with("verify-only") && lines[0].contains("\tEdDSA\t"),
        "{list}"
    );
    assert!(
        lines[1].ends_with("signing") && lines[1].starts_with(second.split('\t').next().unwrap()),
        "{list}"
    );
    let (code, _, err) = run(&["keys", "generate", "--alg", "HS256"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("HS256"), "{err}");
}

/// A bad config file exits 2 naming the file, the key and the reason.
#[test]
fn bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[tokens]\naccess_ttl = \"fifteen\"\n").unwrap();
    let out = authgw(
        "postgresql://unused@127.0.0.1:1/x",
        &["--config", file.to_str().unwrap(), "db", "status"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: {}: tokens.access_ttl: invalid duration",
            file.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);

    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:8080\"\nport = 9\n").unwrap();
    let out = authgw(
        "postgresql://unused@127.0.0.1:1/x",
        &["--config", file.to_str().unwrap(), "serve"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("bad.toml: server.port: unknown field `port`"),
        "{}",
        stderr(&out)
    );

    let missing = authgw(
        "x",
        &["--config", "/nonexistent/gw.toml", "db", "status"],
        None,
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).starts_with("error: /nonexistent/gw.toml"),
        "{}",
        stderr(&missing)
    );
}

/// An unreachable database is a runtime error: exit 1, one line, no panic.
#[test]
fn unreachable_database_exits_1() {
    let out = authgw(
        "postgresql://postgres@127.0.0.1:1/none",
        &["db", "status"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: cannot connect to the database"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

/// /healthz answers 200; /readyz answers 200 on a migrated database.
#[tokio::test]
async fn health_and_ready() {
    let app = spawn_app().await;
    let h = app.get("/healthz", None).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body, json!({"status": "ok"}));
    assert_schema(&h.body, "Health");
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"status": "ready"}));
}

/// With the database unreachable the server still starts: /healthz 200, /readyz 503.
#[tokio::test]
async fn readyz_503_when_database_down() {
    let keys = keys_dir();
    let db = std::sync::Arc::new(TestDb::create());
    let mut config = test_config("postgresql://postgres@127.0.0.1:1/nowhere", keys.path());
    config.database.connect_timeout = Duration::from_millis(500);
    let app = start(db, keys, config).await;
    assert_eq!(app.get("/healthz", None).await.status, 200);
    let r = app.get("/readyz", None).await;
    r.assert_problem(503, "not_ready");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("database unreachable"),
        "{}",
        r.body
    );
}

/// Pending migrations make /readyz 503 naming them.
#[tokio::test]
async fn readyz_503_when_migrations_pending() {
    let keys = keys_dir();
    let db = std::sync::Arc::new(TestDb::create());
    let config = test_config(&db.url, keys.path());
    let app = start(db, keys, config).await;
    let r = app.get("/readyz", None).await;
    r.assert_problem(503, "not_ready");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("migrations pending: V1__users_and_roles"),
        "{detail}"
    );
}

/// The server recovers by itself when the database comes back: /readyz goes
/// from 503 to 200 without a restart.
#[tokio::test]
async fn readyz_recovers_when_database_appears() {
    let keys = keys_dir();
    let name = format!("authgw_test_{}", uuid::Uuid::new_v4().simple());
    let url = url_with_db(&admin_url(), &name);
    let mut config = test_config(&url, keys.path());
    config.database.connect_timeout = Duration::from_millis(500);
    // The database does not exist yet.
    let placeholder = std::sync::Arc::new(TestDb::create());
    let app = start(placeholder, keys, config).await;
    app.get("/readyz", None)
        .await
        .assert_problem(503, "not_ready");
    // Now it comes into being, migrated.
    let created = TestDb {
        name: name.clone(),
        url: url.clone(),
    };
    blocking(|| {
        let mut c = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    });
    created.with(|c| gateway::store::migrations::upgrade(c).unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = app.get("/readyz", None).await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Graceful shutdown: a request in flight when shutdown starts still gets its
/// answer, new connections are refused, and `serve` returns Ok.
#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_request() {
    // A slow argon2 makes login take a while, so it is surely in flight.
    let mut app = spawn_app_with(|c| c.passwords.iterations = 40).await;
    let signup = app.signup("slowpoke", PASSWORD).await;
    assert_eq!(signup.status, 201);
    let http = app.http.clone();
    let url = app.url("/api/v1/auth/login");
    let in_flight = tokio::spawn(async move {
        http.post(url)
            .json(&json!({"login": "slowpoke", "password": PASSWORD}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.trigger_shutdown();
    let response = in_flight.await.unwrap().expect("in-flight request was cut");
    assert_eq!(response.status(), 200);
    let served = app.handle.take().unwrap().await.unwrap();
    assert!(served.is_ok());
    assert!(
        reqwest::Client::new()
            .get(app.url("/healthz"))
            .send()
            .await
            .is_err()
    );
}

/// A client that never finishes its headers is disconnected after
/// `server.header_read_timeout` instead of holding a connection forever.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.server.header_read_timeout = Duration::from_millis(500)).await;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed too early: {:?}",
        started.elapsed()
    );
    // A well-behaved client is unaffected.
    assert_eq!(app.get("/healthz", None).await.status, 200);
}

/// The real binary: `authgw serve` answers, logs (even at debug level) carry
/// neither passwords nor tokens, and SIGTERM makes it exit 0.
#[test]
fn serve_binary_exits_0_on_sigterm_and_logs_no_secrets() {
    let db = TestDb::migrated();
    let keys = keys_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_authgw"))
        .args(["serve"])
        .env("AUTHGW_DATABASE_URL", &db.url)
        .env("AUTHGW_LISTEN", "127.0.0.1:0")
        .env("AUTHGW_ADMIN_LISTEN", "127.0.0.1:0")
        .env("AUTHGW_KEYS_DIR", keys.path())
        .env("AUTHGW_LOG", "debug")
        .env("NO_COLOR", "1")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(rest) = line.split("listen=").nth(1) {
                let _ = addr_tx.send(rest.split_whitespace().next().unwrap().to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no 'authgw listening' line");
    let secrets = reqwest::blocking_flow(&format!("http://{addr}"));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "authgw did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let logs = reader.join().unwrap();
    assert!(
        logs.contains("/api/v1/auth/login"),
        "debug logs should show requests: {logs}"
    );
    for secret in secrets {
        assert!(!logs.contains(&secret), "a secret reached the logs");
    }
}

mod reqwest {
    pub use ::reqwest::*;

    /// Against a running server, from a plain thread with its own runtime:
    /// checks /healthz, signs up, logs in and refreshes; returns the secrets
    /// that went over the wire (password, tokens).
    pub fn blocking_flow(base: &str) -> Vec<String> {
        let base = base.to_string();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let http = ::reqwest::Client::new();
                let health = http.get(format!("{base}/healthz")).send().await.unwrap();
                assert_eq!(health.status(), 200);
                let password = "log-canary-passphrase-1234";
                let creds = serde_json::json!({"login": "canary", "password": password});
                let s = http
                    .post(format!("{base}/api/v1/auth/signup"))
                    .json(&creds)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(s.status(), 201);
                let pair: serde_json::Value = http
                    .post(format!("{base}/api/v1/auth/login"))
                    .json(&creds)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let access = pair["access_token"].as_str().unwrap().to_string();
                let refresh = pair["refresh_token"].as_str().unwrap().to_string();
                let next: serde_json::Value = http
                    .post(format!("{base}/api/v1/auth/refresh"))
                    .json(&serde_json::json!({"refresh_token": refresh}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let check = http
                    .get(format!("{base}/api/v1/auth/check"))
                    .bearer_auth(&access)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(check.status(), 200);
                vec![
                    password.to_string(),
                    access,
                    refresh,
                    next["access_token"].as_str().unwrap().to_string(),
                    next["refresh_token"].as_str().unwrap().to_string(),
                ]
            })
        })
        .join()
        .unwrap()
    }
}
