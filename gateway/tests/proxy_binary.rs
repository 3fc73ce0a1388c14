//! The proxy as the real `authgw serve` binary: a 1 GiB upload streamed
//! through with flat memory, JSON access-log lines without tokens, and
//! `authgw reload` and SIGHUP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::upstream::Echo;
use common::*;
use serde_json::Value;

/// Peak resident memory of process `pid`, in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `authgw --config CONFIG serve` (under `taskset -c 0` when `one_cpu`),
/// its stdout collected line by line; returns once it logs that it listens.
fn serve(config: &std::path::Path, one_cpu: bool) -> Served {
    let bin = env!("CARGO_BIN_EXE_authgw");
    let mut command = if one_cpu {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", bin]);
        c
    } else {
        Command::new(bin)
    };
    let mut child = command
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env_remove("AUTHGW_DATABASE_URL")
        .env_remove("AUTHGW_LISTEN")
        .env_remove("AUTHGW_KEYS_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in stdout.lines() {
            let line = line.unwrap();
            if line.contains("authgw listening") {
                let _ = ready_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no 'authgw listening' line");
    Served { child, reader }
}

/// A running `authgw serve` and the reader of its stdout.
struct Served {
    child: std::process::Child,
    reader: std::thread::JoinHandle<Vec<String>>,
}

impl Served {
    /// Sends `signal` (`-HUP`, `-TERM`) to the server.
    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// SIGTERM; the server must exit 0. Its stdout's lines.
    fn stop(mut self) -> Vec<String> {
        self.signal("-TERM");
        assert_eq!(self.child.wait().unwrap().code(), Some(0));
        self.reader.join().unwrap()
    }
}

/// Signs `login` up and logs in: the access token.
async fn account(http: &reqwest::Client, base: &str, login: &str) -> String {
    let signup = http
        .post(format!("{base}/api/v1/auth/signup"))
        .json(&serde_json::json!({"login": login, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let login: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"login": login, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["access_token"].as_str().unwrap().to_string()
}

/// A 1 GiB request body streams through the proxy to the upstream, which
/// counts every byte, while the gateway's peak RSS stays far below the body
/// size; every proxied request logs one JSON access line with request id,
/// route, status, latency and user id, and no token; `authgw reload` and
/// SIGHUP swap the routes of the running server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_with_flat_memory() {
    let echo = Echo::start("big").await;
    let db = TestDb::migrated();
    let keys = keys_dir();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let (port, admin_port) = (free_port(), free_port());
    let write_config = |prefix: &str| {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
                 [log]\nformat = \"json\"\n[database]\nurl = \"{}\"\n[tokens]\nkeys_dir = \"{}\"\n\
                 [[routes]]\nname = \"upload\"\nprefix = \"{prefix}\"\nupstream = \"{}\"\n",
                db.url,
                keys.path().display(),
                echo.url()
            ),
        )
        .unwrap();
    };
    write_config("/upload");
    let served = serve(&config, false);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let access = account(&http, &base, "uploader").await;
    let before = peak_rss_kib(served.child.id());

    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024;
    let chunks = futures::stream::iter(
        (0..CHUNKS).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; CHUNK]))),
    );
    let started = Instant::now();
    let r = http
        .put(format!("{base}/upload/film.mkv"))
        .bearer_auth(&access)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["body_bytes"], (CHUNK * CHUNKS) as u64);
    let took = started.elapsed();
    let after = peak_rss_kib(served.child.id());
    eprintln!("1 GiB in {took:?}; gateway peak RSS {before} KiB before, {after} KiB after");
    assert!(
        after < before + 64 * 1024,
        "the gateway's peak RSS grew by {} KiB for a 1 GiB body",
        after - before
    );

    // `authgw reload`: the route moves to /files.
    write_config("/files");
    let out = Command::new(env!("CARGO_BIN_EXE_authgw"))
        .args(["--config", config.to_str().unwrap(), "reload"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "reloaded: 1 routes, 0 plugins, 1 keys"
    );
    let moved = http
        .get(format!("{base}/files/x"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let gone = http.get(format!("{base}/upload/x")).send().await.unwrap();
    assert_eq!(gone.status(), 404);

    // SIGHUP does the same: the route moves to /movies.
    write_config("/movies");
    served.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http
            .get(format!("{base}/movies/x"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the routes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken file is refused by the CLI before it asks the server: exit 2.
    std::fs::write(&config, "[[routes]]\nname = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_authgw"))
        .args(["--config", config.to_str().unwrap(), "reload"])
        .env("AUTHGW_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let lines = served.stop();
    let access_lines: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "proxied")
        .collect();
    assert!(access_lines.len() >= 4, "{lines:#?}");
    let upload = &access_lines[0];
    assert_eq!(upload["route"], "upload");
    assert_eq!(upload["status"], 200);
    assert_eq!(upload["method"], "PUT");
    assert_eq!(upload["path"], "/upload/film.mkv");
    assert_eq!(upload["request_id"].as_str().map(str::len), Some(32));
    assert!(upload["latency_ms"].is_string() || upload["latency_ms"].is_number());
    assert_eq!(upload["user"].as_str().map(str::len), Some(36), "{upload}");
    assert_eq!(access_lines[2]["status"], 404);
    assert_eq!(access_lines[2]["route"], "-");
    for line in &lines {
        assert!(!line.contains(&access), "a token reached the log: {line}");
    }
}

/// A films route to an echo upstream, served by the real binary with
/// `server.runtime = runtime` (None: the default), under `taskset -c 0`
/// when `one_cpu`; the upstream, the base URL and the server, and what must
/// outlive it (the database and the keys).
struct FilmsServer {
    echo: Echo,
    base: String,
    port: u16,
    served: Served,
    _kept: (TestDb, std::sync::Arc<tempfile::TempDir>, tempfile::TempDir),
}

async fn films_server(runtime: Option<&str>, one_cpu: bool) -> FilmsServer {
    let echo = Echo::start("films").await;
    let db = TestDb::migrated();
    let keys = keys_dir();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let port = free_port();
    let runtime = runtime.map_or(String::new(), |r| format!("runtime = \"{r}\"\n"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{runtime}[admin]\nenabled = false\n\
             [log]\nformat = \"json\"\n[database]\nurl = \"{}\"\n[tokens]\nkeys_dir = \"{}\"\n\
             [[routes]]\nname = \"films\"\nprefix = \"/films\"\nupstream = \"{}\"\n",
            db.url,
            keys.path().display(),
            echo.url()
        ),
    )
    .unwrap();
    let served = serve(&config, one_cpu);
    FilmsServer {
        echo,
        base: format!("http://127.0.0.1:{port}"),
        port,
        served,
        _kept: (db, keys, dir),
    }
}

/// A signup and a login, then `per_connection` proxied requests with the
/// token on each of `connections` connections: every one 200, at its own
/// path, with the caller's identity; the upstream saw them all.
async fn proxied_requests(films: &FilmsServer, connections: usize, per_connection: usize) {
    let access = account(&reqwest::Client::new(), &films.base, "viewer").await;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (http, base, access) = (reqwest::Client::new(), films.base.clone(), access.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per_connection {
                let r = http
                    .get(format!("{base}/films/{c}/{i}"))
                    .bearer_auth(&access)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let seen: Value = r.json().await.unwrap();
                assert_eq!(seen["path"], format!("/films/{c}/{i}"));
                assert_eq!(seen["headers"]["x-user-login"][0], "viewer", "{seen}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(films.echo.hits(), connections * per_connection);
}

/// The one "async runtime" line of a server's log.
fn runtime_line(lines: &[String]) -> Value {
    let runtime: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "async runtime")
        .collect();
    assert_eq!(runtime.len(), 1, "{lines:#?}");
    runtime[0].clone()
}

/// `authgw serve` confined to one CPU (`taskset -c 0`, as the benchmark
/// runs it) picks the current-thread scheduler by itself (`server.runtime
/// = "auto"`, the default) and says so in its log; on it, a signup, a login
/// (password hashing on its own threads) and 200 proxied requests with the
/// token on 8 connections all succeed and reach the upstream with the
/// caller's identity; SIGTERM still ends it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cpu_serves_on_the_current_thread_scheduler() {
    let films = films_server(None, true).await;
    proxied_requests(&films, 8, 25).await;
    let lines = films.served.stop();
    let runtime = runtime_line(&lines);
    assert_eq!(runtime["scheduler"], "current-thread", "{lines:#?}");
    assert_eq!(runtime["cpus"], 1, "{lines:#?}");
}

/// `server.runtime = "thread-per-core"` on this machine's CPUs: the log
/// says so; 16 connections of proxied requests (the kernel spreads them
/// among the workers' sockets) all succeed with the caller's identity; each
/// CPU beyond the first has a thread `authgw-worker-N` and a socket of its
/// own (`SO_REUSEPORT`: the kernel's count of listening sockets on the
/// port is one per CPU); and SIGTERM stops every worker cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_per_core_serves_on_every_worker() {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let films = films_server(Some("thread-per-core"), false).await;
    proxied_requests(&films, 16, 10).await;
    // The workers start once the listener is up; by now they have served.
    let pid = films.served.child.id();
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap())
        .map(|name| name.trim().to_string())
        .filter(|name| name.starts_with("authgw-worker"))
        .collect();
    assert_eq!(threads.len(), cpus - 1, "{threads:?}");
    assert_eq!(listening_sockets(films.port), cpus, "one socket per CPU");

    let lines = films.served.stop();
    let runtime = runtime_line(&lines);
    assert_eq!(runtime["scheduler"], "thread-per-core", "{lines:#?}");
    assert_eq!(runtime["cpus"], cpus, "{lines:#?}");
}

/// Listening TCP sockets on 127.0.0.1:`port`, from /proc/net/tcp (state 0A).
fn listening_sockets(port: u16) -> usize {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}
