//! The outbox and its sender against a real SMTP server (aiosmtpd, started
//! per test on a free port): retries with backoff, permanent refusals kept
//! as failed and requeued from the CLI, a server outage that loses
//! nothing, two gateways sharing one outbox without sending twice, the
//! metrics, and `authgw email test` over STARTTLS with AUTH.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::smtp::{SmtpOptions, SmtpServer};
use common::*;
use serde_json::json;

/// A server whose mail goes to `url`, retrying fast.
async fn app_mailing(url: String, tweak: impl FnOnce(&mut gateway::config::Config)) -> TestApp {
    spawn_app_with(|c| {
        c.email.smtp_url = url;
        c.email.poll_interval = Duration::from_millis(100);
        c.email.retry_base = Duration::from_millis(50);
        c.email.retry_max = Duration::from_millis(200);
        tweak(c);
    })
    .await
}

/// Signs up `login` with `login@example.com` (which queues its verification).
async fn signup_mailed(app: &TestApp, login: &str) {
    let r = app
        .post(
            "/api/v1/auth/signup",
            None,
            json!({"login": login, "password": PASSWORD, "email": format!("{login}@example.com")}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

/// Waits (up to 20 s) until `sql` returns a row; the sender works in the
/// background, and the database is where its outcome shows.
async fn until_row(app: &TestApp, sql: &str) -> postgres::Row {
    for _ in 0..400 {
        if let Some(row) = app.db.query(sql).into_iter().next() {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no row for {sql} within 20 s");
}

/// Waits until the metric `name` reads `want` (gauges follow the sender's passes).
async fn until_metric(app: &TestApp, name: &str, want: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..400 {
        let v = app.metric(name).await;
        if want(v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached the expected value");
}

/// Runs `authgw` with a config file holding `email_toml` (plus `env`).
fn authgw_with(
    db_url: &str,
    dir: &Path,
    email_toml: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let config = dir.join("gateway.toml");
    std::fs::write(&config, email_toml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_authgw"));
    cmd.arg("--config")
        .arg(&config)
        .args(args)
        .env("AUTHGW_DATABASE_URL", db_url)
        .env("USER", "tester")
        .env_remove("AUTHGW_SMTP_PASSWORD")
        .stdin(Stdio::null())
        .current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Two 451 answers, then acceptance: the message is delivered on the third
/// attempt, the row records three attempts, and the counters show two
/// send errors and one message sent.
#[tokio::test]
async fn transient_failures_are_retried_with_backoff_until_delivered() {
    let mut smtp = SmtpServer::start(SmtpOptions {
        fail_first: 2,
        ..Default::default()
    })
    .await;
    let app = app_mailing(smtp.url(), |_| {}).await;
    signup_mailed(&app, "retried").await;
    let mail = smtp.next().await;
    assert_eq!(mail.to, vec!["retried@example.com".to_string()]);
    let row = until_row(
        &app,
        "SELECT attempts, last_error, body_text FROM email_outbox WHERE status = 'sent'",
    )
    .await;
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(
        row.get::<_, Option<String>>(2),
        None,
        "the sent body (with its token) is dropped"
    );
    assert_eq!(app.metric("authgw_email_sent_total").await, 1.0);
    assert_eq!(app.metric("authgw_email_send_errors_total").await, 2.0);
    assert_eq!(app.metric("authgw_email_failed_total").await, 0.0);
}

/// A permanent refusal (550) fails the message at once and keeps it, with
/// the server's reason; the gauge and `authgw email outbox --failed` show
/// it; once the server accepts again, `authgw email retry --all-failed`
/// requeues it (audited) and it is delivered.
#[tokio::test]
async fn refused_messages_are_kept_as_failed_and_the_cli_requeues_them() {
    let mut smtp = SmtpServer::start(SmtpOptions {
        reject_all: true,
        ..Default::default()
    })
    .await;
    let port = smtp.port;
    let app = app_mailing(smtp.url(), |_| {}).await;
    signup_mailed(&app, "refused").await;
    let row = until_row(
        &app,
        "SELECT id, attempts, last_error FROM email_outbox WHERE status = 'failed'",
    )
    .await;
    let id: i64 = row.get(0);
    assert_eq!(
        row.get::<_, i32>(1),
        1,
        "a permanent refusal is not retried"
    );
    assert!(
        row.get::<_, String>(2).contains("550"),
        "{:?}",
        row.get::<_, String>(2)
    );
    until_metric(&app, "authgw_email_outbox_failed", |v| v == 1.0).await;
    assert_eq!(app.metric("authgw_email_failed_total").await, 1.0);

    let listed = authgw(&app.db.url, &["email", "outbox", "--failed"], None);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let out = stdout(&listed);
    assert!(
        out.lines().any(|l| l.starts_with(&format!(
            "{id}\tfailed\tverify_email\trefused@example.com\t1\t"
        ))),
        "{out}"
    );
    assert!(!out.contains("token"), "the listing shows no bodies: {out}");

    smtp.stop().await;
    let mut smtp = SmtpServer::start_on(port, SmtpOptions::default()).await;
    let retried = authgw(&app.db.url, &["email", "retry", "--all-failed"], None);
    assert!(retried.status.success(), "{}", stderr(&retried));
    assert_eq!(stdout(&retried).trim(), "requeued 1 message(s)");
    let mail = smtp.next().await;
    assert_eq!(mail.to, vec!["refused@example.com".to_string()]);
    until_row(
        &app,
        &format!("SELECT 1 FROM email_outbox WHERE id = {id} AND status = 'sent'"),
    )
    .await;
    assert_eq!(
        app.db.count(
            "SELECT count(*) FROM audit_log WHERE action = 'email.retry' AND actor = 'cli:tester'"
        ),
        1
    );

    let again = authgw(&app.db.url, &["email", "retry", &id.to_string()], None);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a sent message cannot be requeued"
    );
    assert!(
        stderr(&again).starts_with("error: ") && stderr(&again).contains("sent already"),
        "{}",
        stderr(&again)
    );
    let missing = authgw(&app.db.url, &["email", "retry", "999999"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );
}

/// Transient failures past `email.max_attempts` fail the message with the
/// attempts recorded; it is never dropped.
#[tokio::test]
async fn a_message_is_failed_after_max_attempts_never_dropped() {
    let _smtp = SmtpServer::start(SmtpOptions {
        fail_first: 1000,
        ..Default::default()
    })
    .await;
    let app = app_mailing(_smtp.url(), |c| c.email.max_attempts = 3).await;
    signup_mailed(&app, "stubborn").await;
    let row = until_row(
        &app,
        "SELECT attempts, last_error FROM email_outbox WHERE status = 'failed'",
    )
    .await;
    assert_eq!(row.get::<_, i32>(0), 3);
    assert!(
        row.get::<_, String>(1).contains("451"),
        "{}",
        row.get::<_, String>(1)
    );
    assert_eq!(app.db.count("SELECT count(*) FROM email_outbox"), 1);
    assert_eq!(app.metric("authgw_email_send_errors_total").await, 3.0);
    assert_eq!(app.metric("authgw_email_failed_total").await, 1.0);
}

/// With the SMTP server down the message waits, its attempts counted and
/// its age on `/metrics`; when the server comes back it is delivered.
#[tokio::test]
async fn a_server_outage_delays_mail_and_loses_none() {
    let mut smtp = SmtpServer::start(SmtpOptions::default()).await;
    let port = smtp.port;
    smtp.stop().await;
    let app = app_mailing(format!("smtp://127.0.0.1:{port}?tls=none"), |_| {}).await;
    signup_mailed(&app, "patient").await;
    until_row(
        &app,
        "SELECT 1 FROM email_outbox WHERE status = 'queued' AND attempts >= 2",
    )
    .await;
    until_metric(&app, "authgw_email_outbox_queued", |v| v == 1.0).await;
    until_metric(&app, "authgw_email_outbox_oldest_queued_seconds", |v| {
        v > 0.0
    })
    .await;
    // attempts counts claims; the error counter follows each failed send.
    until_metric(&app, "authgw_email_send_errors_total", |v| v >= 2.0).await;

    let mut smtp = SmtpServer::start_on(port, SmtpOptions::default()).await;
    let mail = smtp.next().await;
    assert_eq!(mail.to, vec!["patient@example.com".to_string()]);
    assert!(
        mail.text.contains("token="),
        "the verification link survived the outage"
    );
    until_metric(&app, "authgw_email_outbox_queued", |v| v == 0.0).await;
    assert_eq!(
        app.metric("authgw_email_outbox_oldest_queued_seconds")
            .await,
        0.0
    );
}

/// Two gateways on one database drain one outbox: 40 messages queued at
/// once are each delivered exactly once (claims skip rows the other
/// holds).
#[tokio::test]
async fn two_gateways_share_one_outbox_without_sending_twice() {
    let mut smtp = SmtpServer::start(SmtpOptions::default()).await;
    let db = std::sync::Arc::new(TestDb::migrated());
    let keys = keys_dir();
    let mut config = test_config(&db.url, keys.path());
    config.email.smtp_url = smtp.url();
    config.email.poll_interval = Duration::from_millis(50);
    let a = start(db.clone(), keys.clone(), config.clone()).await;
    let b = start(db.clone(), keys.clone(), config).await;
    db.query(
        "INSERT INTO email_outbox (kind, recipient, subject, body_text, body_html)
         SELECT 'test', 'r' || n || '@example.com', 'm' || n, 'text', '<p>html</p>'
         FROM generate_series(1, 40) n",
    );
    let mails = smtp.next_n(40).await;
    let recipients: HashSet<String> = mails.iter().map(|m| m.to[0].clone()).collect();
    assert_eq!(recipients.len(), 40, "each message once: {recipients:?}");
    smtp.none_within(Duration::from_millis(500)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM email_outbox WHERE status = 'sent' AND attempts = 1"),
        40
    );
    let by_a = a.metric("authgw_email_sent_total").await;
    let by_b = b.metric("authgw_email_sent_total").await;
    assert_eq!(by_a + by_b, 40.0);
}

/// `authgw email test` over STARTTLS with AUTH: the server's certificate
/// is checked against `email.smtp_ca`, the password comes from the
/// environment, and the server's answer is printed. A wrong password, a
/// CA that did not sign the server, and a plaintext URL to a server that
/// demands STARTTLS each fail with one `error:` line and exit 1; the
/// password is never printed.
#[tokio::test]
async fn cli_email_test_speaks_starttls_with_auth() {
    let ca = certs::Ca::new("smtp test CA");
    let server = ca.server("smtp", &["localhost"]);
    let mut smtp = SmtpServer::start(SmtpOptions {
        starttls: Some((server.cert.clone(), server.key.clone())),
        auth: Some(("mailer".into(), "s3cret-pw".into())),
        ..Default::default()
    })
    .await;
    let db = TestDb::migrated();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[email]\nsmtp_url = \"{}\"\nsmtp_ca = \"{}\"\nfrom = \"Cinema <no-reply@cinema.example>\"\nproduct = \"Cinema\"\n",
        smtp.starttls_url(),
        ca.cert.display()
    );
    let run = |password: &str| {
        let out = authgw_with(
            &db.url,
            dir.path(),
            &config,
            &["email", "test", "--to", "ops@cinema.example"],
            &[("AUTHGW_SMTP_PASSWORD", password)],
        );
        let both = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !both.contains("s3cret") && !both.contains("wrong-pw"),
            "{both}"
        );
        out
    };
    let ok = run("s3cret-pw");
    assert!(ok.status.success(), "{}", stderr(&ok));
    let said = stdout(&ok);
    assert!(
        said.starts_with("sent to ops@cinema.example via smtp://localhost:")
            && said.contains("(STARTTLS): 250"),
        "{said}"
    );
    let mail = smtp.next().await;
    assert_eq!(mail.to, vec!["ops@cinema.example".to_string()]);
    assert_eq!(
        mail.header("From"),
        Some("Cinema <no-reply@cinema.example>")
    );
    assert!(mail.subject.contains("Cinema"), "{}", mail.subject);

    let bad = run("wrong-pw");
    assert_eq!(bad.status.code(), Some(1));
    let e = stderr(&bad);
    assert!(
        e.starts_with("error: not sent to ops@cinema.example") && e.contains("535"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");

    let other = certs::Ca::new("another CA");
    let wrong_ca = config.replace(
        &ca.cert.display().to_string(),
        &other.cert.display().to_string(),
    );
    let out = authgw_with(
        &db.url,
        dir.path(),
        &wrong_ca,
        &["email", "test", "--to", "ops@cinema.example"],
        &[("AUTHGW_SMTP_PASSWORD", "s3cret-pw")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );

    let plain = format!(
        "[email]\nsmtp_url = \"smtp://127.0.0.1:{}?tls=none\"\n",
        smtp.port
    );
    let out = authgw_with(
        &db.url,
        dir.path(),
        &plain,
        &["email", "test", "--to", "ops@cinema.example"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    smtp.none_within(Duration::from_millis(300)).await;
}

/// With no `smtp_url`, `authgw email test` writes an `.eml` file into
/// `email.dir` and says where; bad `[email]` settings are refused naming
/// the file and the key, exit 2, with no secret echoed.
#[tokio::test]
async fn cli_file_transport_and_bad_settings() {
    let db = TestDb::migrated();
    let dir = tempfile::tempdir().unwrap();
    let out = authgw_with(
        &db.url,
        dir.path(),
        "[email]\ndir = \"outgoing\"\n",
        &["email", "test", "--to", "me@example.com"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    let path = said
        .trim()
        .strip_prefix("written to ")
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        path.starts_with(&dir.path().join("outgoing").display().to_string()),
        "{path}"
    );
    let eml = std::fs::read_to_string(path).unwrap();
    assert!(eml.contains("To: me@example.com"), "{eml}");

    for (toml, key) in [
        (
            "[email]\nsmtp_url = \"smtp://u:hunter2@mail.example.com\"\n",
            "email.smtp_url",
        ),
        (
            "[email]\nsmtp_url = \"smtp://mail.example.com?tls=none\"\n",
            "email.smtp_url",
        ),
        (
            "[email]\nsmtp_url = \"smtp://u@mail.example.com\"\n",
            "email.smtp_password_env",
        ),
        (
            "[email]\nreset_url = \"https://cinema.example/reset\"\n",
            "email.reset_url",
        ),
        ("[email]\nfrom = \"not a mailbox\"\n", "email.from"),
        (
            "[email]\ntemplates_dir = \"missing\"\n",
            "email.templates_dir",
        ),
        ("[email]\nmax_attempts = 0\n", "email.max_attempts"),
        ("[email]\nsmtp_urll = \"x\"\n", "email"),
    ] {
        let out = authgw_with(&db.url, dir.path(), toml, &["email", "outbox"], &[]);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{toml}: {e}");
        assert!(
            e.starts_with("error: ") && e.contains("gateway.toml") && e.contains(key),
            "{toml}: {e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }
}

/// The newest `.eml` file in `dir` (waiting up to 20 s for the `n`th),
/// parsed.
async fn nth_eml(dir: &Path, n: usize) -> common::smtp::Mail {
    for _ in 0..400 {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if files.len() >= n {
            files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).unwrap());
            let raw = std::fs::read(&files[n - 1]).unwrap();
            return common::smtp::Mail::parse(String::new(), Vec::new(), raw).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no message #{n} in {}", dir.display());
}

/// The real binary, logging JSON at debug level, through signup,
/// verification and a password reset: no log line carries a mailed token,
/// a link with one, or a password; the lines that say mail went out name
/// the kind and the recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_carries_a_token_a_link_or_a_password() {
    use std::io::{BufRead, BufReader};
    let db = TestDb::migrated();
    let keys = keys_dir();
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let config = dir.path().join("gateway.toml");
    let (port, admin_port) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [log]\nformat = \"json\"\nlevel = \"debug\"\n[database]\nurl = \"{}\"\n[tokens]\nkeys_dir = \"{}\"\n\
             [passwords]\nmemory_kib = 1024\niterations = 1\n[email]\npoll_interval = \"100ms\"\n",
            db.url,
            keys.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_authgw"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env_remove("AUTHGW_DATABASE_URL")
        .env_remove("AUTHGW_LISTEN")
        .env_remove("AUTHGW_KEYS_DIR")
        .env_remove("AUTHGW_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let collect = |stream: Box<dyn std::io::Read + Send>,
                   ready: Option<std::sync::mpsc::Sender<()>>| {
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if line.contains("authgw listening")
                    && let Some(tx) = &ready
                {
                    let _ = tx.send(());
                }
                lines.push(line);
            }
            lines
        })
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let out = collect(Box::new(child.stdout.take().unwrap()), Some(ready_tx));
    let err = collect(Box::new(child.stderr.take().unwrap()), None);
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no 'authgw listening' line");

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        let r = http.post(format!("{base}{path}")).json(&body).send();
        async move { r.await.unwrap().status().as_u16() }
    };
    let new_password = "a brand new passphrase 42";
    assert_eq!(
        post(
            "/api/v1/auth/signup",
            json!({"login": "quiet", "password": PASSWORD, "email": "quiet@example.com"})
        )
        .await,
        201
    );
    let verify = nth_eml(&mail_dir, 1).await;
    let verify_token = common::smtp::token_from(&verify.text, "http://localhost:3000/verify-email");
    assert_eq!(
        post("/api/v1/auth/verify-email", json!({"token": verify_token})).await,
        200
    );
    assert_eq!(
        post("/api/v1/auth/password-reset", json!({"login": "quiet"})).await,
        202
    );
    let reset = nth_eml(&mail_dir, 2).await;
    let reset_token = common::smtp::token_from(&reset.text, "http://localhost:3000/reset-password");
    assert_eq!(
        post(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": reset_token, "new_password": new_password})
        )
        .await,
        204
    );
    nth_eml(&mail_dir, 3).await; // the "password changed" notice
    assert_eq!(
        post(
            "/api/v1/auth/login",
            json!({"login": "quiet", "password": new_password})
        )
        .await,
        200
    );

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let lines: Vec<String> = out
        .join()
        .unwrap()
        .into_iter()
        .chain(err.join().unwrap())
        .collect();
    assert!(lines.len() > 10, "the server logged: {lines:?}");
    for line in &lines {
        for secret in [
            verify_token.as_str(),
            reset_token.as_str(),
            "token=",
            PASSWORD,
            new_password,
        ] {
            assert!(
                !line.contains(secret),
                "a log line carries {secret:?}: {line}"
            );
        }
    }
    let sent: Vec<&String> = lines.iter().filter(|l| l.contains("mail sent")).collect();
    assert_eq!(sent.len(), 3, "{lines:?}");
    assert!(
        sent.iter().all(|l| l.contains("quiet@example.com")),
        "{sent:?}"
    );
}
