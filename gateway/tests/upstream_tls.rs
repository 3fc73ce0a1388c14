//! HTTPS to upstreams (issue 22): a real nginx (`nginx-light`, which
//! scripts/test.sh installs) serves TLS with certificates from
//! `common::certs`, and answers with what reached it (the identity header,
//! the protocol, the TLS version, the SNI name and the client certificate's
//! subject), so each test asserts what the upstream saw. Without nginx a
//! test fails under CI (`CI` set) and is skipped, loudly, elsewhere.
//!
//! The gateway's warnings are captured (one global subscriber for this test
//! binary) to check that the reason of a failed verification is logged,
//! while the 502 problem the client gets does not name it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::certs::{Ca, Issued};
use common::upstream::{Echo, route};
use common::*;
use gateway::config::{AuthMode, RouteConfig};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

// --- nginx ------------------------------------------------------------------

/// What nginx answers on `/`: who the gateway said the user is, and how
/// the request came (protocol, TLS version, SNI, client certificate).
const ANSWER: &str = "uid=$http_x_user_id proto=$server_protocol ssl=$ssl_protocol \
                      sni=$ssl_server_name client=$ssl_client_s_dn\\n";

/// One nginx process of a test (no master), with one `server` block per
/// [`Nginx::server`] call, each on its own port with its own access log;
/// killed (by its own pid) when dropped.
struct Nginx {
    bin: PathBuf,
    dir: tempfile::TempDir,
    blocks: Vec<String>,
    ports: Vec<u16>,
    child: Option<Child>,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Nginx {
    /// None (after saying so loudly) when nginx is not installed; under CI
    /// its absence fails the test.
    fn new() -> Option<Self> {
        let bin = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("nginx"))
            .find(|p| p.is_file());
        let Some(bin) = bin else {
            let why = "nginx is not installed: scripts/test.sh installs it (apt-get install -y nginx-light)";
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("\n!!!!!!!! SKIPPED: {why} !!!!!!!!\n");
            return None;
        };
        Some(Self {
            bin,
            dir: tempfile::tempdir().unwrap(),
            blocks: Vec::new(),
            ports: Vec::new(),
            child: None,
        })
    }

    /// A TLS server with `cert` (and `extra` directives: client
    /// verification, `location`s); `http2` adds h2 to its ALPN. Returns its port.
    fn server(&mut self, cert: &Issued, http2: bool, extra: &str) -> u16 {
        let port = free_port();
        let d = self.dir.path().display();
        self.blocks.push(format!(
            "server {{\n listen 127.0.0.1:{port} ssl{h2};\n access_log {d}/{port}.log;\n\
             ssl_certificate {cert};\n ssl_certificate_key {key};\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n {extra}\n\
             location / {{ default_type text/plain; return 200 \"{ANSWER}\"; }}\n}}\n",
            h2 = if http2 { " http2" } else { "" },
            cert = cert.cert.display(),
            key = cert.key.display(),
        ));
        self.ports.push(port);
        port
    }

    /// Starts nginx and waits until every server accepts connections.
    async fn run(&mut self) {
        let d = self.dir.path().display();
        let conf = self.dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
                 {}}}\n",
                self.blocks.concat()
            ),
        )
        .unwrap();
        let log = self.dir.path().join("error.log");
        let mut child = Command::new(&self.bin)
            .arg("-e")
            .arg(&log)
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in &self.ports {
            while tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .is_err()
            {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "nginx exited ({status}): {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                assert!(Instant::now() < deadline, "nginx never listened on {port}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.child = Some(child);
    }

    /// Requests the server on `port` answered (its access log lines).
    fn hits(&self, port: u16) -> usize {
        std::fs::read_to_string(self.dir.path().join(format!("{port}.log")))
            .map_or(0, |log| log.lines().count())
    }

    /// [`Nginx::hits`] once it reaches `want` (up to 5 s): nginx writes its
    /// access log line after the response, so a client can read the
    /// answer before the line is there.
    async fn hits_reaching(&self, port: u16, want: usize) -> usize {
        for _ in 0..100 {
            let n = self.hits(port);
            if n >= want {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.hits(port)
    }
}

// --- the gateway's log --------------------------------------------------------

/// Everything the gateway logged at warn or above in this test binary.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per test binary).
fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("gateway=warn"))
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

/// The captured log lines that mention `needle` (a route name, quoted as
/// the log line has it).
fn log_lines(needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&LOGS.lock().unwrap())
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

// --- helpers --------------------------------------------------------------------

/// A public route named `name` on `/{name}` to `upstream`, trusting `ca`.
fn tls_route(name: &str, upstream: &str, ca: Option<&Path>) -> RouteConfig {
    RouteConfig {
        tls_ca: ca.map(Path::to_path_buf),
        ..route(name, &format!("/{name}"), upstream, AuthMode::Public)
    }
}

/// `GET path` on the gateway: status and body text.
async fn get(app: &TestApp, path: &str) -> (StatusCode, String) {
    let r = app.http.get(app.url(path)).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// Asserts a 502 `bad_gateway` problem that says TLS failed and nothing of
/// why (no certificate, issuer, expiry or name details).
async fn assert_tls_502(app: &TestApp, path: &str) {
    let r = reply(app.http.get(app.url(path)).send().await.unwrap()).await;
    r.assert_problem(502, "bad_gateway");
    let detail = r.body["detail"].as_str().unwrap();
    assert_eq!(
        detail, "the TLS handshake with the upstream failed",
        "{path}: {}",
        r.body
    );
    let text = r.body.to_string().to_ascii_lowercase();
    for secret in ["issuer", "expired", "name", "certificate", "invalid"] {
        assert!(
            !text.contains(secret),
            "{path}: the body names {secret}: {text}"
        );
    }
}

/// Waits (at most 2 s) for a warning of route `name` that contains `reason`.
async fn assert_logged(name: &str, reason: &str) {
    let needle = format!("route=\"{name}\"");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let lines = log_lines(&needle);
        if lines
            .iter()
            .any(|l| l.contains("TLS with the upstream failed") && l.contains(reason))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no TLS warning with {reason:?} for route {name}: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- tests ------------------------------------------------------------------------

/// An `https://` upstream verified against the route's `tls_ca`: 200, the
/// identity headers reached nginx over TLS (HTTP/1.1, the URL's host as
/// SNI when it is a name, none for an IP address), and a plain `http://`
/// route of the same gateway still works as before.
#[tokio::test]
async fn https_upstream_with_the_route_ca() {
    capture_logs();
    let Some(mut nginx) = Nginx::new() else {
        return;
    };
    let ca = Ca::new("upstream ca");
    let port = nginx.server(&ca.server("srv", &["localhost", "127.0.0.1"]), false, "");
    nginx.run().await;
    let echo = Echo::start("plain").await;
    let app = gateway_with(
        vec![
            RouteConfig {
                auth: AuthMode::Required,
                ..tls_route(
                    "films",
                    &format!("https://127.0.0.1:{port}"),
                    Some(&ca.cert),
                )
            },
            tls_route(
                "named",
                &format!("https://localhost:{port}"),
                Some(&ca.cert),
            ),
            route("plain", "/plain", &echo.url(), AuthMode::Public),
        ],
        |_| {},
    )
    .await;
    let (id, access, _) = app.user("alice").await;
    let r = app
        .http
        .get(app.url("/films/1"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen = r.text().await.unwrap();
    assert!(seen.starts_with(&format!("uid={id} ")), "{seen}");
    assert!(seen.contains("proto=HTTP/1.1"), "{seen}");
    assert!(seen.contains("ssl=TLSv1.3"), "{seen}");
    assert!(seen.contains("sni= "), "no SNI for an IP address: {seen}");
    assert!(seen.trim_end().ends_with("client="), "{seen}");

    let (status, seen) = get(&app, "/named/x").await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert!(
        seen.contains("sni=localhost ") && seen.starts_with("uid= "),
        "{seen}"
    );
    assert_eq!(nginx.hits_reaching(port, 2).await, 2);

    let plain = app.get("/plain/x", None).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.body["upstream"], "plain");
    assert!(log_lines("route=\"films\"").is_empty());
}

/// A certificate from a CA the route does not trust (another `tls_ca`, or
/// the system roots when `tls_ca` is unset) is a 502 problem that does not
/// say why; nginx served nothing; the gateway's warning names the route,
/// the upstream and the reason (unknown issuer).
#[tokio::test]
async fn unknown_issuer_is_a_502_with_the_reason_in_the_log_only() {
    capture_logs();
    let Some(mut nginx) = Nginx::new() else {
        return;
    };
    let ca = Ca::new("upstream ca");
    let other = Ca::new("other ca");
    let port = nginx.server(&ca.server("srv", &["localhost", "127.0.0.1"]), false, "");
    nginx.run().await;
    let upstream = format!("https://127.0.0.1:{port}");
    let mut routes = vec![tls_route("wrongca", &upstream, Some(&other.cert))];
    // The system store (when this machine has one) does not know the test CA.
    let system = !rustls_native_certs::load_native_certs().certs.is_empty();
    if system {
        routes.push(tls_route("systemroots", &upstream, None));
    }
    let app = gateway_with(routes, |_| {}).await;

    assert_tls_502(&app, "/wrongca/x").await;
    assert_logged("wrongca", "UnknownIssuer").await;
    assert!(
        log_lines("route=\"wrongca\"")
            .iter()
            .any(|l| l.contains(&format!("upstream=127.0.0.1:{port}"))),
        "{:?}",
        log_lines("wrongca")
    );
    if system {
        assert_tls_502(&app, "/systemroots/x").await;
        assert_logged("systemroots", "UnknownIssuer").await;
    }
    assert_eq!(nginx.hits(port), 0, "nginx served a request");
}

/// An expired certificate and one for another name are 502s (reasons in
/// the log); with `tls_server_name` set to the name in the certificate,
/// the same upstream passes (200) and nginx saw that name as SNI.
#[tokio::test]
async fn expired_and_misnamed_certificates() {
    capture_logs();
    let Some(mut nginx) = Nginx::new() else {
        return;
    };
    let ca = Ca::new("upstream ca");
    let expired = nginx.server(
        &ca.expired_server("expired", &["localhost", "127.0.0.1"]),
        false,
        "",
    );
    let other = nginx.server(&ca.server("other", &["films.internal"]), false, "");
    nginx.run().await;
    let app = gateway_with(
        vec![
            tls_route(
                "expired",
                &format!("https://localhost:{expired}"),
                Some(&ca.cert),
            ),
            tls_route(
                "misnamed",
                &format!("https://127.0.0.1:{other}"),
                Some(&ca.cert),
            ),
            RouteConfig {
                tls_server_name: Some("films.internal".into()),
                ..tls_route(
                    "renamed",
                    &format!("https://127.0.0.1:{other}"),
                    Some(&ca.cert),
                )
            },
        ],
        |_| {},
    )
    .await;
    assert_tls_502(&app, "/expired/x").await;
    assert_logged("expired", "expired").await;
    assert_tls_502(&app, "/misnamed/x").await;
    assert_logged("misnamed", "not valid for name").await;
    assert_eq!(nginx.hits(expired) + nginx.hits(other), 0);

    let (status, seen) = get(&app, "/renamed/x").await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert!(seen.contains("sni=films.internal "), "{seen}");
    assert_eq!(nginx.hits_reaching(other, 1).await, 1);
}

/// Mutual TLS: nginx requires a client certificate of the test CA. With
/// `tls_client_cert`/`tls_client_key` the request passes and nginx saw the
/// gateway's subject; without them (or with a certificate of another CA)
/// nginx answers its own 400, which the gateway passes on: never the app's 200.
#[tokio::test]
async fn mutual_tls_with_the_upstream() {
    capture_logs();
    let Some(mut nginx) = Nginx::new() else {
        return;
    };
    let ca = Ca::new("upstream ca");
    let stranger = Ca::new("stranger ca");
    let port = nginx.server(
        &ca.server("srv", &["localhost", "127.0.0.1"]),
        false,
        &format!(
            "ssl_verify_client on;\n ssl_client_certificate {};",
            ca.cert.display()
        ),
    );
    nginx.run().await;
    let upstream = format!("https://127.0.0.1:{port}");
    let mine = ca.client("gateway", "authgw-gateway");
    let theirs = stranger.client("gateway", "intruder");
    let app = gateway_with(
        vec![
            RouteConfig {
                tls_client_cert: Some(mine.cert.clone()),
                tls_client_key: Some(mine.key.clone()),
                ..tls_route("mtls", &upstream, Some(&ca.cert))
            },
            tls_route("nocert", &upstream, Some(&ca.cert)),
            RouteConfig {
                tls_client_cert: Some(theirs.cert.clone()),
                tls_client_key: Some(theirs.key.clone()),
                ..tls_route("stranger", &upstream, Some(&ca.cert))
            },
        ],
        |_| {},
    )
    .await;
    let (status, seen) = get(&app, "/mtls/x").await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    // nginx prints the subject in RFC 2253 order (last RDN first).
    assert!(
        seen.contains("client=O=authgw tests,CN=authgw-gateway"),
        "{seen}"
    );
    for path in ["/nocert/x", "/stranger/x"] {
        let (status, seen) = get(&app, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {seen}");
        assert!(!seen.contains("uid="), "{path}: {seen}");
        assert!(
            seen.contains("SSL certificate"),
            "{path}: nginx's page: {seen}"
        );
    }
}

/// One nginx HTTPS server offering h2 (its own CA), and a gateway with two
/// routes to it: `/h2` with `upstream_http2 = true`, `/h1` without. The CA's
/// files live as long as the returned `Ca`.
async fn h2_and_h1_routes(nginx: &mut Nginx) -> (TestApp, Ca) {
    let ca = Ca::new("upstream ca");
    let port = nginx.server(&ca.server("srv", &["localhost", "127.0.0.1"]), true, "");
    nginx.run().await;
    let upstream = format!("https://127.0.0.1:{port}");
    let app = gateway_with(
        vec![
            RouteConfig {
                upstream_http2: true,
                ..tls_route("h2", &upstream, Some(&ca.cert))
            },
            tls_route("h1", &upstream, Some(&ca.cert)),
        ],
        |_| {},
    )
    .await;
    (app, ca)
}

/// `upstream_http2 = true` offers h2 and nginx saw HTTP/2.0; the same
/// server through a route without it saw HTTP/1.1.
#[tokio::test]
async fn upstream_http2_only_when_asked() {
    capture_logs();
    let Some(mut nginx) = Nginx::new() else {
        return;
    };
    let (app, _ca) = h2_and_h1_routes(&mut nginx).await;
    for _ in 0..3 {
        let (status, seen) = get(&app, "/h2/x").await;
        assert_eq!(status, StatusCode::OK, "{seen}");
        assert!(seen.contains("proto=HTTP/2.0"), "{seen}");
        let (status, seen) = get(&app, "/h1/x").await;
        assert_eq!(status, StatusCode::OK, "{seen}");
        assert!(seen.contains("proto=HTTP/1.1"), "{seen}");
    }
}

/// A `websocket = true` route over `https://`: nginx (TLS) passes the
/// upgrade on to the echo upstream, the gateway gets its 101 over
/// HTTP/1.1, and bytes flow both ways through the tunnel.
#[tokio::test]
async fn websocket_over_https() {
    capture_logs();
    let Some(mut nginx) = Nginx::new() else {
        return;
    };
    let echo = Echo::start("ws").await;
    let ca = Ca::new("upstream ca");
    let port = nginx.server(
        &ca.server("srv", &["localhost", "127.0.0.1"]),
        false,
        &format!(
            "location /ws {{ proxy_pass {}; proxy_http_version 1.1; \
             proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection upgrade; }}",
            echo.url()
        ),
    );
    nginx.run().await;
    let mut ws = route(
        "ws",
        "/ws",
        &format!("https://127.0.0.1:{port}"),
        AuthMode::Public,
    );
    ws.websocket = true;
    ws.tls_ca = Some(ca.cert.clone());
    let app = gateway_with(vec![ws], |_| {}).await;
    let (mut sock, head) = ws_handshake(app.addr, "/ws").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    sock.write_all(b"ping over tls").await.unwrap();
    assert_eq!(
        read_within(&mut sock, Duration::from_secs(5)).await,
        b"ping over tls"
    );
    assert_eq!(echo.hits(), 1);
}

/// Config errors at start: TLS keys on a plain `http://` route, a client
/// certificate without its key, an unreadable `tls_ca`: the gateway does
/// not start, and the error names the route, the key and the file.
#[tokio::test]
async fn config_errors_name_route_key_and_file() {
    let keys = keys_dir();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let ca = Ca::new("upstream ca");
    let cases = [
        (
            RouteConfig {
                tls_ca: Some(ca.cert.clone()),
                ..route("plain", "/p", "http://127.0.0.1:1", AuthMode::Public)
            },
            vec!["route 'plain'", "tls_ca applies to https:// upstreams only"],
        ),
        (
            RouteConfig {
                tls_client_cert: Some(ca.cert.clone()),
                ..tls_route("halfpair", "https://127.0.0.1:1", Some(&ca.cert))
            },
            vec!["route 'halfpair'", "tls_client_cert without tls_client_key"],
        ),
        (
            tls_route("noca", "https://127.0.0.1:1", Some(&missing)),
            vec!["route 'noca'", "tls_ca", "missing-ca.pem", "No such file"],
        ),
    ];
    for (r, wants) in cases {
        let mut config = test_config(&admin_url(), keys.path());
        config.routes = vec![r];
        let e = match gateway::server::Gateway::build(config) {
            Ok(_) => panic!("{wants:?}: the gateway started"),
            Err(e) => e.to_string(),
        };
        for want in wants {
            assert!(e.contains(want), "{want:?} not in {e}");
        }
    }
}

/// A reload whose route names a `tls_ca` that cannot be read is refused
/// (route, key, file and reason in the error) and the old route keeps
/// serving over TLS; a good reload then applies.
#[tokio::test]
async fn reload_with_a_bad_tls_ca_is_refused() {
    capture_logs();
    let Some(mut nginx) = Nginx::new() else {
        return;
    };
    let ca = Ca::new("upstream ca");
    let port = nginx.server(&ca.server("srv", &["localhost", "127.0.0.1"]), false, "");
    nginx.run().await;
    let good = tls_route(
        "films",
        &format!("https://127.0.0.1:{port}"),
        Some(&ca.cert),
    );
    let app = gateway_with(vec![good.clone()], |_| {}).await;
    assert_eq!(get(&app, "/films/1").await.0, StatusCode::OK);

    let garbage = ca.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    for (bad, reason) in [
        (ca.path().join("nope.pem"), "No such file"),
        (garbage, "no PEM certificate"),
    ] {
        let mut config = app.config.clone();
        config.routes = vec![RouteConfig {
            tls_ca: Some(bad.clone()),
            ..good.clone()
        }];
        let reloader = app.reloader.clone();
        let refused = tokio::task::spawn_blocking(move || reloader.apply(&config))
            .await
            .unwrap()
            .unwrap_err();
        for want in [
            "route 'films'",
            "tls_ca",
            &bad.display().to_string(),
            reason,
        ] {
            assert!(refused.contains(want), "{want:?} not in {refused}");
        }
        assert_eq!(get(&app, "/films/2").await.0, StatusCode::OK);
    }
    let mut config = app.config.clone();
    config.routes = vec![RouteConfig {
        prefix: "/moved".into(),
        ..good
    }];
    let reloader = app.reloader.clone();
    tokio::task::spawn_blocking(move || reloader.apply(&config))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(get(&app, "/moved/x").await.0, StatusCode::OK);
    assert_eq!(nginx.hits_reaching(port, 4).await, 4);
}

/// Not a test of behaviour: requests per second through the gateway to a
/// TLS upstream over HTTP/2 and over HTTP/1.1 (the same nginx, the same
/// run), printed with their ratio. `cargo test -p gateway --release --test
/// upstream_tls -- --ignored --nocapture h2_vs_h1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn h2_vs_h1_throughput() {
    let Some(mut nginx) = Nginx::new() else {
        return;
    };
    let (app, _ca) = h2_and_h1_routes(&mut nginx).await;
    const REQUESTS: usize = 4000;
    const CONCURRENCY: usize = 32;
    let run = |path: &'static str| {
        let http = app.http.clone();
        let url = app.url(path);
        async move {
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..CONCURRENCY {
                let http = http.clone();
                let url = url.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..REQUESTS / CONCURRENCY {
                        let r = http.get(&url).send().await.unwrap();
                        assert_eq!(r.status(), StatusCode::OK);
                        r.bytes().await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            REQUESTS as f64 / started.elapsed().as_secs_f64()
        }
    };
    // Warm both pools, then alternate, keeping each one's best.
    run("/h1/x").await;
    run("/h2/x").await;
    let (mut h1, mut h2) = (0f64, 0f64);
    for _ in 0..3 {
        h1 = h1.max(run("/h1/x").await);
        h2 = h2.max(run("/h2/x").await);
    }
    println!(
        "through the gateway to nginx over TLS, {REQUESTS} requests, {CONCURRENCY} at a time: \
         HTTP/1.1 {h1:.0} req/s, HTTP/2 {h2:.0} req/s, h2/h1 = {:.2}",
        h2 / h1
    );
}
