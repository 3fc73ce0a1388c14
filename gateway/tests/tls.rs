//! The listener terminating TLS (`[server.tls]`), tested with clients
//! nobody here wrote: curl (TLS 1.2, 1.3, h2 by ALPN), `openssl s_client`
//! (negotiated and refused versions, SNI), h2load (a certificate swapped
//! under load), and reqwest with rustls; certificates made per test by
//! rcgen (`common::certs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::certs::{Ca, Issued};
use common::upstream::{Echo, route};
use common::{TestDb, keys_dir, reply, start_with, test_config};
use gateway::config::{AuthMode, ClientAuth, Config, TlsCertConfig, TlsConfig, TlsVersion};
use reqwest::StatusCode;

/// A TLS config serving `server`'s certificate by default.
fn tls_with(server: &Issued) -> TlsConfig {
    TlsConfig {
        cert: Some(server.cert.clone()),
        key: Some(server.key.clone()),
        ..TlsConfig::default()
    }
}

/// A client that trusts only `ca`, and tells which certificate it got.
fn client_trusting(ca: &Ca) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent("authgw-tests/1")
        .tls_backend_rustls()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .tls_info(true)
}

/// A client trusting `ca` that presents `id`'s certificate, if any.
fn client_presenting(ca: &Ca, id: Option<&Issued>) -> reqwest::Client {
    let mut b = client_trusting(ca);
    if let Some(id) = id {
        let pem = format!("{}{}", id.key_pem, id.cert_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// A gateway over TLS with `tweak` applied, its client trusting `ca`.
async fn tls_app(
    ca: &Ca,
    tls: TlsConfig,
    tweak: impl FnOnce(&mut Config),
    plain: bool,
) -> common::TestApp {
    let db = Arc::new(TestDb::migrated());
    let keys = keys_dir();
    let mut config = test_config(&db.url, keys.path());
    config.server.tls = Some(tls);
    tweak(&mut config);
    let plain = if plain {
        Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    } else {
        None
    };
    start_with(
        db,
        keys,
        config,
        client_trusting(ca).build().unwrap(),
        plain,
    )
    .await
}

/// The subject of the certificate a response came with.
fn served_subject(r: &reqwest::Response) -> String {
    let info = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info");
    gateway::tls::server::subject(info.peer_certificate().expect("peer certificate")).unwrap()
}

/// Runs `program` with `args`; (exit ok, stdout, stderr).
fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is needed for this test (scripts/test.sh installs it): {e}")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `openssl s_client` against `addr` with `args` (a version flag,
/// `-servername`...); its whole output.
async fn s_client(addr: SocketAddr, ca: &Ca, args: &[&str]) -> String {
    let connect = addr.to_string();
    let cafile = ca.cert.to_str().unwrap().to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut all = vec![
            "s_client".to_string(),
            "-connect".into(),
            connect,
            "-CAfile".into(),
            cafile,
            "-brief".into(),
        ];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let (_, out, err) = run("openssl", &refs);
        format!("{out}{err}")
    })
    .await
    .unwrap()
}

/// curl over TLS 1.2 and 1.3 and h2 by ALPN, each checking the chain
/// against the test CA: the Auth API answers, and curl says which version
/// and protocol it spoke.
#[tokio::test]
async fn curl_speaks_tls12_tls13_and_h2() {
    let ca = Ca::new("curl");
    let server = ca.server("server", &["localhost", "127.0.0.1"]);
    let app = tls_app(&ca, tls_with(&server), |_| {}, false).await;
    let url = app.url("/healthz");
    let cacert = ca.cert.to_str().unwrap().to_string();
    let curl = |extra: &'static [&'static str]| {
        let (url, cacert) = (url.clone(), cacert.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "-sS",
                "-v",
                "--cacert",
                &cacert,
                "-w",
                "%{http_code} %{http_version}",
            ];
            args.extend_from_slice(extra);
            args.push(&url);
            run("curl", &args)
        })
    };
    let (ok, out, err) = curl(&["--tlsv1.2", "--tls-max", "1.2", "--http1.1"])
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(out.ends_with("200 1.1"), "{out}");
    assert!(
        err.contains("TLSv1.2"),
        "curl did not speak TLS 1.2:\n{err}"
    );
    let (ok, out, err) = curl(&["--tlsv1.3", "--http1.1"]).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.ends_with("200 1.1"), "{out}");
    assert!(
        err.contains("TLSv1.3"),
        "curl did not speak TLS 1.3:\n{err}"
    );
    let (ok, out, err) = curl(&["--http2"]).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.ends_with("200 2"), "ALPN h2 expected: {out}\n{err}");
    // And the client certificate of another CA gets no further than curl's
    // own check: a wrong --cacert fails the handshake.
    let other = Ca::new("other");
    let (ok, _, err) = tokio::task::spawn_blocking({
        let (url, other) = (url.clone(), other.cert.to_str().unwrap().to_string());
        move || run("curl", &["-sS", "--cacert", &other, &url])
    })
    .await
    .unwrap();
    assert!(
        !ok,
        "a client trusting another CA must refuse the server: {err}"
    );
}

/// `openssl s_client`: TLS 1.2 and 1.3 are negotiated; TLS 1.1 and 1.0
/// are refused by the server (the client offers them at security level
/// 0); with `min_version = "1.3"` TLS 1.2 is refused too.
#[tokio::test]
async fn openssl_sees_the_versions_allowed_and_refused() {
    let ca = Ca::new("versions");
    let server = ca.server("server", &["localhost", "127.0.0.1"]);
    let app = tls_app(&ca, tls_with(&server), |_| {}, false).await;
    let out = s_client(app.addr, &ca, &["-tls1_2"]).await;
    assert!(out.contains("Protocol version: TLSv1.2"), "{out}");
    assert!(out.contains("Verification: OK"), "{out}");
    let out = s_client(app.addr, &ca, &["-tls1_3"]).await;
    assert!(out.contains("Protocol version: TLSv1.3"), "{out}");
    for old in ["-tls1_1", "-tls1"] {
        let out = s_client(app.addr, &ca, &[old, "-cipher", "DEFAULT:@SECLEVEL=0"]).await;
        assert!(
            !out.contains("Protocol version"),
            "{old} must be refused:\n{out}"
        );
        assert!(
            out.to_lowercase().contains("alert") || out.contains("error"),
            "{old}: {out}"
        );
    }
    let strict = TlsConfig {
        min_version: TlsVersion::V1_3,
        ..tls_with(&server)
    };
    let app13 = tls_app(&ca, strict, |_| {}, false).await;
    let out = s_client(app13.addr, &ca, &["-tls1_2"]).await;
    assert!(
        !out.contains("Protocol version"),
        "TLS 1.2 must be refused:\n{out}"
    );
    let out = s_client(app13.addr, &ca, &["-tls1_3"]).await;
    assert!(out.contains("Protocol version: TLSv1.3"), "{out}");
    // Each refused handshake is counted.
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("authgw_tls_handshake_failures_total 2"),
        "{metrics}"
    );
}

/// Several certificates by SNI: an exact host, a wildcard, and the default
/// for anything else (and for no SNI at all).
#[tokio::test]
async fn sni_chooses_the_certificate() {
    let ca = Ca::new("sni");
    let default = ca.server("default", &["localhost", "127.0.0.1"]);
    let films = ca.server("films", &["films.test"]);
    let wild = ca.server("wild", &["*.cinema.test"]);
    let tls = TlsConfig {
        certs: vec![
            TlsCertConfig {
                hosts: vec!["films.test".into()],
                cert: films.cert.clone(),
                key: films.key.clone(),
            },
            TlsCertConfig {
                hosts: vec!["*.cinema.test".into()],
                cert: wild.cert.clone(),
                key: wild.key.clone(),
            },
        ],
        ..tls_with(&default)
    };
    let app = tls_app(&ca, tls, |_| {}, false).await;
    let port = app.addr.port();
    let client = client_trusting(&ca)
        .resolve("films.test", app.addr)
        .resolve("api.cinema.test", app.addr)
        .resolve("deep.api.cinema.test", app.addr)
        .build()
        .unwrap();
    for (host, cn) in [
        ("films.test", "CN=films.test"),
        ("api.cinema.test", "CN=*.cinema.test"),
    ] {
        let r = client
            .get(format!("https://{host}:{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            served_subject(&r).contains(cn),
            "{host}: {}",
            served_subject(&r)
        );
    }
    // A wildcard covers one label: a deeper name gets the default
    // certificate, which does not name it, so the client refuses it.
    let e = client
        .get(format!("https://deep.api.cinema.test:{port}/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("NotValidForName"), "{e:?}");
    // No SNI (an IP address): the default certificate.
    let out = s_client(app.addr, &ca, &[]).await;
    assert!(
        out.contains("CN = localhost") || out.contains("CN=localhost"),
        "{out}"
    );
    let out = s_client(app.addr, &ca, &["-servername", "films.test"]).await;
    assert!(out.contains("films.test"), "{out}");
}

/// `client_auth = "required"`: no certificate, one from another CA, or an
/// expired one fails the handshake; a valid one is served.
#[tokio::test]
async fn required_client_certificates() {
    let ca = Ca::new("mtls");
    let server = ca.server("server", &["localhost", "127.0.0.1"]);
    let good = ca.client("ops", "ops");
    let stranger = Ca::new("stranger").client("intruder", "intruder");
    let tls = TlsConfig {
        client_ca: Some(ca.cert.clone()),
        client_auth: Some(ClientAuth::Required),
        ..tls_with(&server)
    };
    let app = tls_app(&ca, tls, |_| {}, false).await;
    let url = app.url("/healthz");
    let with = |id: Option<&Issued>| client_presenting(&ca, id);
    assert!(
        with(None).get(&url).send().await.is_err(),
        "no certificate must be refused"
    );
    assert!(
        with(Some(&stranger)).get(&url).send().await.is_err(),
        "another CA must be refused"
    );
    let r = with(Some(&good)).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // curl too, with the files.
    let (ok, out, err) = tokio::task::spawn_blocking({
        let (cacert, cert, key, url) = (
            ca.cert.to_str().unwrap().to_string(),
            good.cert.to_str().unwrap().to_string(),
            good.key.to_str().unwrap().to_string(),
            url.clone(),
        );
        move || {
            run(
                "curl",
                &[
                    "-sS",
                    "--cacert",
                    &cacert,
                    "--cert",
                    &cert,
                    "--key",
                    &key,
                    "-w",
                    "%{http_code}",
                    "-o",
                    "/dev/null",
                    &url,
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok && out == "200", "{out} {err}");
    let (ok, _, _) = tokio::task::spawn_blocking({
        let (cacert, url) = (ca.cert.to_str().unwrap().to_string(), url.clone());
        move || {
            run(
                "curl",
                &["-sS", "--cacert", &cacert, "-o", "/dev/null", &url],
            )
        }
    })
    .await
    .unwrap();
    assert!(!ok, "curl without a client certificate must fail");
}

/// `client_auth = "optional"`: a client without a certificate is served;
/// one with a certificate the CA did not sign is refused (never served as
/// anonymous).
#[tokio::test]
async fn optional_client_certificates() {
    let ca = Ca::new("optional");
    let server = ca.server("server", &["localhost", "127.0.0.1"]);
    let stranger = Ca::new("stranger").client("intruder", "intruder");
    let tls = TlsConfig {
        client_ca: Some(ca.cert.clone()),
        ..tls_with(&server)
    };
    let app = tls_app(&ca, tls, |_| {}, false).await;
    let url = app.url("/healthz");
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 200);
    let client = client_presenting(&ca, Some(&stranger));
    assert!(client.get(&url).send().await.is_err());
}

/// Over TLS every answer (the API's, a proxied one, an error) carries
/// `Strict-Transport-Security`, replacing an upstream's own, and the
/// upstream is told `X-Forwarded-Proto: https` even when the client forged
/// `http`.
#[tokio::test]
async fn hsts_and_forwarded_proto() {
    let ca = Ca::new("hsts");
    let server = ca.server("server", &["localhost", "127.0.0.1"]);
    let echo = Echo::start("films").await;
    let tls = TlsConfig {
        hsts: "max-age=63072000; includeSubDomains".into(),
        ..tls_with(&server)
    };
    let echo_url = echo.url();
    let app = tls_app(
        &ca,
        tls,
        move |c| c.routes = vec![route("films", "/films", &echo_url, AuthMode::Public)],
        false,
    )
    .await;
    for path in ["/healthz", "/films/1", "/api/v1/auth/check"] {
        let r = app
            .http
            .get(app.url(path))
            .header("x-forwarded-proto", "http")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["strict-transport-security"],
            "max-age=63072000; includeSubDomains",
            "{path}"
        );
        if path == "/films/1" {
            let body = reply(r).await.body;
            assert_eq!(body["headers"]["x-forwarded-proto"][0], "https", "{body}");
        }
    }
}

/// The plain listener beside TLS answers health checks, redirects
/// everything else to https (308, same path and query, the TLS port), never
/// echoes a hostile Host, sends no HSTS; with `http_redirect = false` it
/// refuses with `https_required`.
#[tokio::test]
async fn plain_listener_redirects_and_answers_health() {
    let ca = Ca::new("plain");
    let server = ca.server("server", &["localhost", "127.0.0.1"]);
    let app = tls_app(&ca, tls_with(&server), |_| {}, true).await;
    let plain = app.plain_addr.unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/healthz", "/readyz"] {
        let r = http
            .get(format!("http://{plain}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers().get("strict-transport-security").is_none());
    }
    let r = http
        .post(format!("http://{plain}/api/v1/auth/login?x=1"))
        .header("host", "Auth.Cinema.Example:80")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.headers()["location"],
        format!(
            "https://auth.cinema.example:{}/api/v1/auth/login?x=1",
            app.addr.port()
        )
    );
    // Hostile Host headers are not reflected into the Location.
    for host in ["evil.example/x", "user@evil.example", "a b"] {
        let (head, _) = common::raw(
            plain,
            &format!("GET /films HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(
            !head.contains("evil.example/x") && !head.contains("user@"),
            "{head}"
        );
        assert!(!head.starts_with("HTTP/1.1 308"), "{host}: {head}");
    }
    let tls = TlsConfig {
        http_redirect: false,
        ..tls_with(&server)
    };
    let strict = tls_app(&ca, tls, |_| {}, true).await;
    let r = reply(
        http.get(format!("http://{}/films", strict.plain_addr.unwrap()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.assert_problem(403, "https_required");
}

/// A reload swaps the certificate: new connections get the new one, a
/// connection opened before keeps working on the old one; a reload with a
/// bad file is refused naming it, and the last good certificate serves on.
#[tokio::test]
async fn reload_swaps_the_certificate_and_keeps_connections() {
    let ca = Ca::new("reload");
    let first = ca.server("first", &["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("gw.pem"), dir.path().join("gw.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let tls = TlsConfig {
        cert: Some(cert.clone()),
        key: Some(key.clone()),
        ..TlsConfig::default()
    };
    let app = tls_app(&ca, tls, |_| {}, false).await;
    // One kept-alive connection, opened on the first certificate.
    let old = client_trusting(&ca)
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let r = old.get(app.url("/healthz")).send().await.unwrap();
    assert!(served_subject(&r).contains("CN=localhost"));
    let old_serial = serial(&r);
    // The files change (a renewal), then the reload.
    let second = ca.server("second", &["127.0.0.1", "renewed.test"]);
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    let summary = app.reloader.apply(&app.config).unwrap();
    assert!(summary.contains("TLS certificates"), "{summary}");
    let fresh = client_trusting(&ca).build().unwrap();
    let r = fresh.get(app.url("/healthz")).send().await.unwrap();
    assert!(
        served_subject(&r).contains("CN=127.0.0.1"),
        "{}",
        served_subject(&r)
    );
    // The old connection was not dropped: it still answers, on the old
    // certificate (the same TLS session).
    let r = old.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        serial(&r),
        old_serial,
        "the kept connection keeps its certificate"
    );
    // A broken file: refused, naming it; the second certificate serves on.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let e = app.reloader.apply(&app.config).unwrap_err();
    assert!(e.contains("server.tls.cert") && e.contains("gw.pem"), "{e}");
    let r = client_trusting(&ca)
        .build()
        .unwrap()
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert!(served_subject(&r).contains("CN=127.0.0.1"));
    // A key that is not the certificate's: refused, naming the key.
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let e = app.reloader.apply(&app.config).unwrap_err();
    assert!(e.contains("server.tls.key"), "{e}");
}

/// The DER of the certificate a response came with (to tell two
/// certificates with the same subject apart).
fn serial(r: &reqwest::Response) -> Vec<u8> {
    let info = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    info.peer_certificate().unwrap().to_vec()
}

/// The real `authgw serve` with `[server.tls]`: h2load over TLS (h2, then
/// HTTP/1.1 keep-alive), 60 connections opened throughout, while the
/// certificate files change and SIGHUP reloads them every 100 ms: not one
/// request fails; afterwards a new connection gets the new certificate. A
/// broken file then SIGHUP: refused, the last good certificate serves on.
/// And a config with a missing key file does not start: one `error:` line
/// naming the key and the file, exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_under_load_and_loses_nothing() {
    use std::io::{BufRead, BufReader};
    let ca = Ca::new("load");
    let a = ca.server("a", &["localhost", "127.0.0.1"]);
    let b = ca.server("b", &["127.0.0.1", "b.test"]);
    let db = TestDb::migrated();
    let keys = keys_dir();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("gw.pem"), dir.path().join("gw.key"));
    let install = |c: &Issued| {
        std::fs::copy(&c.cert, &cert).unwrap();
        std::fs::copy(&c.key, &key).unwrap();
    };
    install(&a);
    let config = dir.path().join("gateway.toml");
    let (port, admin_port) = (common::free_port(), common::free_port());
    let write_config = |key_file: &str| {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[server.tls]\ncert = \"gw.pem\"\nkey = \"{key_file}\"\n\
                 [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[database]\nurl = \"{}\"\n\
                 [tokens]\nkeys_dir = \"{}\"\n",
                db.url,
                keys.path().display(),
            ),
        )
        .unwrap();
    };
    // A missing key file: refused at start, naming it.
    write_config("missing.key");
    let out = Command::new(env!("CARGO_BIN_EXE_authgw"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env_remove("AUTHGW_DATABASE_URL")
        .env_remove("AUTHGW_LISTEN")
        .env_remove("AUTHGW_KEYS_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("server.tls.key") && errors[0].contains("missing.key"),
        "{stderr}"
    );
    write_config("gw.key");
    let mut child = Command::new(env!("CARGO_BIN_EXE_authgw"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env_remove("AUTHGW_DATABASE_URL")
        .env_remove("AUTHGW_LISTEN")
        .env_remove("AUTHGW_KEYS_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |what: &str| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no log line with {what:?}"));
        if line.contains(what) {
            return line;
        }
    };
    wait_for("authgw listening");
    let url = format!("https://127.0.0.1:{port}/healthz");
    let r = client_trusting(&ca)
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let hup = || {
        let ok = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for h1 in [false, true] {
        let url = url.clone();
        let load = tokio::task::spawn_blocking(move || {
            // 60 connections opened 6 per 100 ms (-r), so that handshakes
            // happen throughout the swaps while earlier ones carry requests.
            let mut args = vec![
                "-n",
                "3000",
                "-c",
                "60",
                "-r",
                "6",
                "--rate-period",
                "100ms",
                "-m",
                "4",
                "-t",
                "1",
            ];
            if h1 {
                args.push("--h1");
            }
            args.push(&url);
            run("h2load", &args)
        });
        let mut swaps = 0;
        while !load.is_finished() {
            install(if swaps % 2 == 0 { &b } else { &a });
            hup();
            wait_for("reloaded:");
            swaps += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (ok, out, err) = load.await.unwrap();
        assert!(ok, "{out}{err}");
        assert!(
            out.contains("3000 succeeded, 0 failed, 0 errored"),
            "h1={h1}:\n{out}"
        );
        assert!(swaps >= 2, "the load ended before two swaps ({swaps})");
    }
    install(&b);
    hup();
    wait_for("reloaded:");
    let out = s_client(addr, &ca, &[]).await;
    assert!(
        out.contains("b.test") || out.contains("CN = 127.0.0.1"),
        "{out}"
    );
    // A broken certificate file: the reload is refused, b serves on.
    std::fs::write(&cert, "garbage\n").unwrap();
    hup();
    let refused = wait_for("reload refused");
    assert!(refused.contains("gw.pem"), "{refused}");
    let r = client_trusting(&ca)
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(served_subject(&r).contains("CN=127.0.0.1"));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// A client that opens a connection and never finishes the handshake (sends
/// nothing, or half a ClientHello) is cut at `server.header_read_timeout`.
#[tokio::test]
async fn stalled_handshakes_are_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("slow");
    let server = ca.server("server", &["localhost", "127.0.0.1"]);
    let app = tls_app(
        &ca,
        tls_with(&server),
        |c| c.server.header_read_timeout = Duration::from_millis(500),
        false,
    )
    .await;
    for partial in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        s.write_all(partial).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a stalled handshake must be closed: {read:?}"
        );
    }
}

/// `admin.tls`: the admin listener speaks TLS with the same certificate
/// (metrics over https; plain HTTP gets no answer).
#[tokio::test]
async fn admin_listener_over_tls() {
    let ca = Ca::new("admin");
    let server = ca.server("server", &["localhost", "127.0.0.1"]);
    let app = tls_app(&ca, tls_with(&server), |c| c.admin.tls = true, false).await;
    let r = app
        .http
        .get(format!("https://{}/metrics", app.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("authgw_connections_open"));
    assert!(
        reqwest::get(format!("http://{}/metrics", app.admin_addr))
            .await
            .is_err(),
        "plain HTTP must get no answer from a TLS admin listener"
    );
}

/// Bad `[server.tls]` in a config file: each error names the file, the key
/// and the PEM file or reason.
#[test]
fn config_errors_name_file_key_and_reason() {
    let ca = Ca::new("config");
    let server = ca.server("server", &["localhost"]);
    let other = ca.server("other", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!(
                "[server.tls]\ncert = \"{}\"\nkey = \"missing.key\"\n",
                server.cert.display()
            ),
            "server.tls.key",
            "missing.key",
        ),
        (
            format!(
                "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                server.cert.display(),
                other.key.display()
            ),
            "server.tls.key",
            "is it the key of",
        ),
        (
            format!(
                "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\nmin_version = \"1.1\"\n",
                server.cert.display(),
                server.key.display()
            ),
            "min_version",
            "1.1",
        ),
        (
            format!(
                "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\ncipher_suites = [\"TLS_RSA_WITH_RC4_128_SHA\"]\n",
                server.cert.display(),
                server.key.display()
            ),
            "server.tls.cipher_suites",
            "unknown suite",
        ),
        (
            "[admin]\ntls = true\n".to_string(),
            "admin.tls",
            "needs [server.tls]",
        ),
    ];
    for (i, (toml, key, reason)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("gw{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let e = Config::load(&path, true).unwrap_err().to_string();
        assert!(
            e.contains(&format!("gw{i}.toml")) && e.contains(key) && e.contains(reason),
            "case {i}: {e}"
        );
    }
}

/// An idle keep-alive TLS connection is parked (its HTTP buffers freed,
/// its TLS session kept) and serves its next request on the same TLS
/// stream; HTTP/2 over TLS reaches the Auth API.
#[tokio::test]
async fn idle_tls_connections_park_and_resume() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("park");
    let server = ca.server("server", &["localhost", "127.0.0.1"]);
    let app = tls_app(&ca, tls_with(&server), |_| {}, false).await;
    let roots = gateway::tls::pem::roots(&ca.cert).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    async fn one_answer(
        tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("\"ok\"}") {
            let n = tls.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into()
    }
    tls.write_all(request).await.unwrap();
    assert!(one_answer(&mut tls).await.starts_with("HTTP/1.1 200"));
    let gauge = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    // Parking is a matter of idle time (listener::PARK_AFTER, 100 ms):
    // poll the gauge rather than sleep a fixed time.
    let mut parked = 0.0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        parked = gauge(&app.metrics_text().await, "authgw_connections_parked");
        if parked >= 1.0 {
            break;
        }
    }
    assert!(parked >= 1.0, "the idle TLS connection was not parked");
    // The same TLS stream: a second request is served.
    tls.write_all(request).await.unwrap();
    assert!(one_answer(&mut tls).await.starts_with("HTTP/1.1 200"));
    // HTTP/2 over TLS reaches the Auth API.
    let h2 = client_trusting(&ca).build().unwrap();
    let r = h2
        .post(app.url("/api/v1/auth/signup"))
        .json(&serde_json::json!({"login": "tls-user", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 201);
}

/// The verified client certificate reaches the plugins (issue 22): on a
/// TLS listener with `client_ca`, the admin-mtls example of role-rules lets
/// an administrator into `/admin` only with the certificate `CN=ops,O=cinema`;
/// without a certificate, or with another subject of the same CA, 403 and
/// the upstream never sees the request; a client-sent header claiming a
/// certificate changes nothing.
#[tokio::test]
async fn the_client_certificate_reaches_the_plugins() {
    let ca = Ca::new("plugins");
    let server = ca.server("server", &["localhost", "127.0.0.1"]);
    let ops = ca.client_in("ops", "cinema", "ops");
    let intern = ca.client_in("intern", "cinema", "intern");
    let echo = Echo::start("admin").await;
    let tls = TlsConfig {
        client_ca: Some(ca.cert.clone()),
        ..tls_with(&server)
    };
    let rules: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../plugins/role-rules/examples/admin-mtls.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let echo_url = echo.url();
    let app = tls_app(
        &ca,
        tls,
        move |c| {
            c.plugins = vec![common::plugin("admin-mtls", "role-rules", rules)];
            c.routes = vec![gateway::config::RouteConfig {
                plugins: vec!["admin-mtls".into()],
                ..route("admin", "/admin", &echo_url, AuthMode::Required)
            }];
        },
        false,
    )
    .await;
    let admin = app.admin("root").await;
    let with = |id: Option<&Issued>| client_presenting(&ca, id);
    let get = |client: reqwest::Client| {
        let (url, admin) = (app.url("/admin/users"), admin.clone());
        async move {
            reply(
                client
                    .get(url)
                    .bearer_auth(admin)
                    .header("x-client-cert-subject", "CN=ops,O=cinema")
                    .header("ssl-client-s-dn", "CN=ops,O=cinema")
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    get(with(None)).await.assert_problem(403, "policy_denied");
    get(with(Some(&intern)))
        .await
        .assert_problem(403, "policy_denied");
    assert_eq!(echo.hits(), 0, "a denied request reached the upstream");
    let r = get(with(Some(&ops))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["path"], "/admin/users");
    assert_eq!(echo.hits(), 1);
}
