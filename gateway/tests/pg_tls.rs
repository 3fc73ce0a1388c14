//! PostgreSQL over TLS (`database.url`'s `sslmode`, `sslrootcert`): the pool,
//! the CLI and the revocation LISTEN connection against a real PostgreSQL
//! with `ssl = on`, and the refusals (wrong root, wrong name, expired
//! certificate, a server without TLS).
//!
//! One private cluster serves the whole file ([`cluster`]): initdb'd once
//! into a temporary directory (as the `postgres` user when the tests run as
//! root, since PostgreSQL refuses to run as root), TLS with an rcgen
//! certificate for `localhost` and `127.0.0.1`, TCP on 127.0.0.1 at a free
//! port (trust, `hostssl` and `host`), its Unix socket in the temporary
//! directory (for the tests' own plaintext admin connection). Rust never
//! drops statics, so a watchdog (`sh`, reading a pipe whose write end only
//! this process holds) stops the cluster (`pg_ctl stop -m immediate`) and
//! removes the directory when the test process exits, however it exits.
//! Certificates the cluster cannot present (expired) and a server without
//! TLS are played by small in-test servers that answer PostgreSQL's
//! SSLRequest: the verdicts under test are all made by the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::certs::{Ca, Issued};
use common::*;
use gateway::error::Error;
use reqwest::Method;

/// The role that logs in with a client certificate only (`cert` in
/// pg_hba.conf, its name the certificate's CN).
const CERT_USER: &str = "authgw_cert";

/// The TLS-enabled cluster shared by every test of this file.
struct Cluster {
    port: u16,
    /// The CA that signed the server certificate (`localhost`, `127.0.0.1`).
    ca: Ca,
    /// The Unix socket directory (plaintext admin connections).
    socket_dir: PathBuf,
    _dir: tempfile::TempDir,
    /// Closed by the kernel when this process ends: the watchdog then stops
    /// the cluster.
    _watchdog: std::process::ChildStdin,
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

/// The newest PostgreSQL server bin directory, as scripts/lib/pg.sh finds it:
/// `initdb` on PATH (with `pg_ctl` beside it), else /usr/lib/postgresql/*/bin.
fn pg_bindir() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        && out.status.success()
    {
        let initdb = std::fs::canonicalize(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        let dir = initdb.parent().unwrap().to_path_buf();
        if dir.join("pg_ctl").exists() {
            return dir;
        }
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d).expect(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install the 'postgresql' package",
    )
}

/// PostgreSQL refuses to run as root: then everything runs as `postgres`
/// (or AUTHGW_PG_USER), created if missing, as scripts/lib/pg.sh does.
fn cluster_user() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    let user = std::env::var("AUTHGW_PG_USER").unwrap_or_else(|_| "postgres".into());
    if !Command::new("id")
        .arg("-u")
        .arg(&user)
        .output()
        .unwrap()
        .status
        .success()
    {
        let made = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home", "--shell"])
            .args(["/usr/sbin/nologin", &user])
            .status()
            .unwrap();
        assert!(
            made.success(),
            "cannot create the user {user} for PostgreSQL"
        );
    }
    Some(user)
}

/// `program args…` as `user` (runuser when root), or as ourselves.
fn as_user(user: Option<&str>, program: &Path, args: &[&str]) -> Command {
    match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program).args(args);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

fn run(mut command: Command, what: &str) {
    let out = command.current_dir("/").output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    fn start() -> Self {
        let bin = pg_bindir();
        let user = cluster_user();
        let user = user.as_deref();
        let dir = tempfile::Builder::new()
            .prefix("authgw-pgtls-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("run");
        std::fs::create_dir(&socket_dir).unwrap();
        // The server's certificate and key, readable by the server only.
        let ca = Ca::new("authgw pg tls test CA");
        let server = ca.server("pg-server", &["localhost", "127.0.0.1"]);
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        std::fs::copy(&server.cert, &cert).unwrap();
        std::fs::copy(&server.key, &key).unwrap();
        // The CA client certificates must chain to (for the `cert` user).
        let client_ca = dir.path().join("client-ca.pem");
        std::fs::copy(&ca.cert, &client_ca).unwrap();
        if let Some(user) = user {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("-R").arg(format!("{user}:")).arg(dir.path());
                    c
                },
                "chown",
            );
        }
        run(
            as_user(
                user,
                &bin.join("initdb"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
            ),
            "initdb",
        );
        let port = free_port();
        let quote = |p: &Path| format!("'{}'", p.display());
        let conf = format!(
            "\n# pg_tls.rs\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = {}\n\
             ssl = on\nssl_cert_file = {}\nssl_key_file = {}\nssl_ca_file = {}\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 100\n",
            quote(&socket_dir),
            quote(&cert),
            quote(&key),
            quote(&client_ca),
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all all trust\nhostssl all {CERT_USER} 127.0.0.1/32 cert\nhost all {CERT_USER} 127.0.0.1/32 reject\n\
             hostssl all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 trust\n")
        )
        .unwrap();
        // The watchdog first, so that a failed start is cleaned up too.
        let pg_ctl = bin.join("pg_ctl");
        let stop = as_user(
            user,
            &pg_ctl,
            &[
                "-D",
                data.to_str().unwrap(),
                "-s",
                "-m",
                "immediate",
                "stop",
            ],
        );
        let stop = format!(
            "{:?} {}",
            stop.get_program(),
            stop.get_args()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cat >/dev/null; cd /; {stop} >/dev/null 2>&1; rm -rf {:?}",
                dir.path()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
            .stdin
            .take()
            .unwrap();
        let log = dir.path().join("pg.log");
        let started = as_user(
            user,
            &pg_ctl,
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "-s",
                "start",
            ],
        )
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
        assert!(
            started.success(),
            "the TLS test cluster did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let cluster = Self {
            port,
            ca,
            socket_dir,
            _dir: dir,
            _watchdog: watchdog,
        };
        cluster
            .admin("postgres")
            .batch_execute(&format!("CREATE ROLE {CERT_USER} LOGIN"))
            .unwrap();
        cluster
    }

    /// A plaintext superuser connection over the Unix socket, for setup.
    fn admin(&self, db: &str) -> postgres::Client {
        postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .connect(postgres::NoTls)
            .unwrap()
    }

    /// A fresh database; its name.
    fn database(&self) -> String {
        let name = format!("pgtls_{}", uuid::Uuid::new_v4().simple());
        self.admin("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        name
    }

    /// `postgresql://postgres@{host}:{port}/{db}?{query}`.
    fn url(&self, host: &str, db: &str, query: &str) -> String {
        format!("postgresql://postgres@{host}:{}/{db}?{query}", self.port)
    }

    /// verify-full to `localhost`, trusting the cluster's CA.
    fn verify_full(&self, db: &str) -> String {
        self.url(
            "localhost",
            db,
            &format!("sslmode=verify-full&sslrootcert={}", self.ca.cert.display()),
        )
    }
}

/// Connects with `store::connect` (the CLI's connection) and runs `f` on
/// the client, on a plain thread (the sync client must not run, nor be
/// dropped, on a tokio worker); or the error's text.
fn with_connection<T: Send>(
    url: &str,
    f: impl FnOnce(&mut postgres::Client) -> T + Send,
) -> Result<T, String> {
    blocking(|| {
        let mut client =
            gateway::store::connect(url, Duration::from_secs(5)).map_err(|e| match e {
                Error::Unavailable(d) | Error::Internal(d) => d,
                other => other.to_string(),
            })?;
        Ok(f(&mut client))
    })
}

/// Connects; whether the server says this very connection is encrypted.
fn connect(url: &str) -> Result<bool, String> {
    with_connection(url, encrypted)
}

fn encrypted(client: &mut postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
}

/// A fresh database with the schema, migrated over `url` (TLS) by the
/// store, as `authgw db upgrade` does.
fn migrated(cluster: &Cluster) -> (String, String) {
    let db = cluster.database();
    let url = cluster.verify_full(&db);
    with_connection(&url, |c| {
        assert!(encrypted(c), "the CLI connection is plaintext");
        gateway::store::migrations::upgrade(c).unwrap();
    })
    .unwrap();
    (db, url)
}

/// A gateway on `url` (its pool and its revocation listener).
async fn gateway(db: &str, url: &str, keys: Arc<tempfile::TempDir>) -> TestApp {
    let config = test_config(url, keys.path());
    let test_db = Arc::new(TestDb {
        name: db.to_owned(),
        url: url.to_owned(),
    });
    start(test_db, keys, config).await
}

/// The backends connected to `db` with `application_name` (any if None):
/// whether each is encrypted, by the server's own account.
fn backends_tls(cluster: &Cluster, db: &str, application_name: Option<&str>) -> Vec<bool> {
    blocking(|| {
        cluster
            .admin("postgres")
            .query(
                "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.datname = $1 AND a.backend_type = 'client backend' \
                 AND ($2::text IS NULL OR a.application_name = $2)",
                &[&db, &application_name],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    })
}

/// verify-full to `localhost` with the right CA: migrations through the
/// store, then a gateway whose pool and revocation listener use that URL
/// (sign-up, login, token check), and every connection it holds is
/// encrypted according to the server itself (`pg_stat_ssl`).
#[tokio::test]
async fn verify_full_runs_the_gateway_over_tls() {
    let cluster = blocking(cluster);
    let (db, url) = blocking(|| migrated(cluster));
    let pool = gateway::store::Db::new(&url, 2, Duration::from_secs(5)).unwrap();
    assert!(pool.run(|c| Ok(encrypted(c))).await.unwrap());
    let app = gateway(&db, &url, keys_dir()).await;
    assert_eq!(app.get("/readyz", None).await.status, 200);
    let (_, access, _) = app.user("alice").await;
    assert_eq!(
        app.get("/api/v1/auth/check", Some(&access)).await.status,
        200
    );
    let connections = backends_tls(cluster, &db, None);
    assert!(
        connections.len() >= 3,
        "expected our pool's, the gateway's pool's and LISTEN connections: {connections:?}"
    );
    assert!(connections.iter().all(|&tls| tls), "{connections:?}");
}

/// A root certificate from another CA: `authgw db upgrade` refuses with one
/// `error:` line naming the certificate problem and exits 1; the pool never
/// hands out a connection either, and says why.
#[tokio::test]
async fn a_wrong_root_is_refused() {
    let cluster = blocking(cluster);
    let db = blocking(|| cluster.database());
    let other = Ca::new("some other CA");
    let url = cluster.url(
        "localhost",
        &db,
        &format!("sslmode=verify-full&sslrootcert={}", other.cert.display()),
    );
    let out = blocking(|| authgw(&url, &["db", "upgrade"], None));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot connect to the database over TLS")
            && err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    let pool = gateway::store::Db::new(&url, 1, Duration::from_millis(500)).unwrap();
    let refused = pool.run(|_| Ok(())).await.unwrap_err().to_string();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
}

/// verify-full checks the name: the cluster's certificate names
/// `localhost` and `127.0.0.1`, not `db.wrong.example` (reached through
/// `hostaddr=127.0.0.1`), so it is refused; verify-ca (and require with a
/// root file) with the same URL check the chain only and connect, encrypted.
#[test]
fn verify_full_checks_the_name_verify_ca_does_not() {
    let cluster = cluster();
    let db = cluster.database();
    let url = |mode: &str| {
        cluster.url(
            "db.wrong.example",
            &db,
            &format!(
                "hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
                cluster.ca.cert.display()
            ),
        )
    };
    let e = connect(&url("verify-full")).expect_err("verify-full accepted a wrong name");
    assert!(
        e.contains("certificate not valid for name") && e.contains("db.wrong.example"),
        "{e}"
    );
    assert_eq!(connect(&url("verify-ca")), Ok(true));
    assert_eq!(connect(&url("require")), Ok(true));
    // 127.0.0.1 itself is in the certificate: verify-full passes.
    let by_ip = cluster.url(
        "127.0.0.1",
        &db,
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            cluster.ca.cert.display()
        ),
    );
    assert_eq!(connect(&by_ip), Ok(true));
}

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];

/// A stand-in server for one connection: answers the SSLRequest with `S`,
/// then does the TLS handshake with `cert`. Joining it says whether the
/// handshake completed.
fn tls_server(cert: &Issued) -> (u16, std::thread::JoinHandle<bool>) {
    let chain = gateway::tls::pem::certs(&cert.cert).unwrap();
    let key = gateway::tls::pem::key(&cert.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 8];
        stream.read_exact(&mut request).unwrap();
        assert_eq!(request, SSL_REQUEST, "not an SSLRequest");
        stream.write_all(b"S").unwrap();
        let mut tls = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        while tls.is_handshaking() {
            if tls.complete_io(&mut stream).is_err() {
                return false;
            }
        }
        true
    });
    (port, server)
}

/// An expired server certificate from the trusted CA is refused under
/// `require` and `verify-ca`, not only under `verify-full`; the same stand-in
/// server with a valid certificate completes the handshake, so the expiry
/// is the reason.
#[test]
fn an_expired_certificate_is_refused_even_under_require() {
    let ca = &cluster().ca;
    let expired = ca.expired_server("pg-expired", &["localhost", "127.0.0.1"]);
    let url = |port: u16, mode: &str| {
        format!(
            "postgresql://postgres@localhost:{port}/x?sslmode={mode}&sslrootcert={}",
            ca.cert.display()
        )
    };
    for mode in ["require", "verify-ca", "verify-full"] {
        let (port, server) = tls_server(&expired);
        let e = connect(&url(port, mode)).expect_err("an expired certificate was accepted");
        assert!(
            e.contains("invalid peer certificate") && e.contains("expired"),
            "{mode}: {e}"
        );
        assert!(!server.join().unwrap(), "{mode}: the handshake completed");
    }
    let valid = ca.server("pg-valid", &["localhost"]);
    let (port, server) = tls_server(&valid);
    let e = connect(&url(port, "require")).expect_err("the stand-in is not a database");
    assert!(!e.contains("certificate"), "{e}");
    assert!(
        server.join().unwrap(),
        "the valid certificate's handshake failed"
    );
}

/// `sslmode=require` against a server without TLS (which answers the
/// SSLRequest with `N`, as PostgreSQL with `ssl = off` does) is refused, and
/// nothing is sent in plaintext after the refusal. The plain test server
/// (127.0.0.1:5432) is refused too, whatever its `ssl` setting: off, it has
/// no TLS; on (Debian's snakeoil certificate), the certificate is refused
/// (under `require` without `sslrootcert` the system roots are used and the
/// name is checked: the snakeoil certificate may sit in /etc/ssl/certs, but
/// it does not name 127.0.0.1). `sslmode=disable` and no sslmode still
/// reach it in plaintext, as before.
#[test]
fn require_never_falls_back_to_plaintext() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 8];
        stream.read_exact(&mut request).unwrap();
        assert_eq!(request, SSL_REQUEST, "not an SSLRequest");
        stream.write_all(b"N").unwrap();
        let mut after = Vec::new();
        let _ = stream.read_to_end(&mut after);
        after
    });
    let e = connect(&format!(
        "postgresql://postgres@127.0.0.1:{port}/x?sslmode=require&sslrootcert={}",
        cluster().ca.cert.display()
    ))
    .expect_err("require accepted a server without TLS");
    assert!(e.contains("server does not support TLS"), "{e}");
    let after = server.join().unwrap();
    assert!(
        after.is_empty(),
        "sent in plaintext after the refusal: {after:?}"
    );

    let plain = admin_url();
    if plain != "postgresql://postgres@127.0.0.1:5432/postgres" {
        return; // AUTHGW_TEST_DATABASE_URL points elsewhere.
    }
    let ssl: String = blocking(|| {
        postgres::Client::connect(&plain, postgres::NoTls)
            .unwrap()
            .query_one("SHOW ssl", &[])
            .unwrap()
            .get(0)
    });
    let e = connect(&format!("{plain}?sslmode=require")).expect_err(&format!(
        "require accepted the plain test server (ssl = {ssl})"
    ));
    if ssl == "off" {
        assert!(e.contains("server does not support TLS"), "{e}");
    } else {
        assert!(e.contains("invalid peer certificate"), "ssl = {ssl}: {e}");
    }
    assert_eq!(connect(&format!("{plain}?sslmode=disable")), Ok(false));
    assert_eq!(connect(&plain), Ok(false));
}

/// The revocation LISTEN connection runs over TLS: with two gateways on a
/// verify-full URL, /readyz is 200 (the set loaded through it), both LISTEN
/// connections are encrypted (pg_stat_ssl, by their application_name), and
/// a logout-all on one gateway is enforced by the other within a second.
#[tokio::test]
async fn revocations_arrive_over_tls() {
    let cluster = blocking(cluster);
    let (db, url) = blocking(|| migrated(cluster));
    let keys = keys_dir();
    let a = gateway(&db, &url, keys.clone()).await;
    let b = gateway(&db, &url, keys).await;
    assert_eq!(a.get("/readyz", None).await.status, 200);
    assert_eq!(b.get("/readyz", None).await.status, 200);
    let listeners = backends_tls(
        cluster,
        &db,
        Some(gateway::revocation::LISTENER_APPLICATION_NAME),
    );
    assert_eq!(listeners, [true, true], "the LISTEN connections");
    let (_, access, _) = a.user("alice").await;
    assert_eq!(b.get("/api/v1/auth/check", Some(&access)).await.status, 200);
    let r = a
        .send(Method::POST, "/api/v1/auth/logout-all", Some(&access), None)
        .await;
    assert_eq!(r.status, 204);
    refused_within_a_second(|| async {
        b.get("/api/v1/auth/check", Some(&access)).await.status == 401
    })
    .await;
}

/// A client certificate (`sslcert`/`sslkey`) is presented: the role that
/// may only log in with a certificate (`cert` in pg_hba.conf) gets in with
/// one, and the server saw its subject; without one it is refused; a key
/// file that holds no key is named.
#[test]
fn client_certificates_are_presented() {
    let cluster = cluster();
    let db = cluster.database();
    let client = cluster.ca.client("pg-client", CERT_USER);
    let base = cluster
        .verify_full(&db)
        .replacen("postgres@", &format!("{CERT_USER}@"), 1);
    let with_cert = format!(
        "{base}&sslcert={}&sslkey={}",
        client.cert.display(),
        client.key.display()
    );
    let dn: Option<String> = with_connection(&with_cert, |c| {
        c.query_one(
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
    })
    .unwrap();
    assert!(dn.unwrap_or_default().contains(CERT_USER));
    let e = connect(&base).expect_err("the certificate-only role got in without one");
    assert!(e.contains("certificate"), "{e}");
    let bad = format!(
        "{base}&sslcert={}&sslkey={}",
        client.cert.display(),
        cluster.ca.cert.display()
    );
    let e = connect(&bad).expect_err("a certificate taken for a key");
    assert!(
        e.starts_with("database.url: sslkey") && e.contains("private key"),
        "{e}"
    );
}
