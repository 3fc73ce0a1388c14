//! A real SMTP server for the email tests: gateway/tests/smtp/server.py
//! (aiosmtpd) in a child process on 127.0.0.1, a free port. Every message it
//! accepts arrives here as a [`Mail`], parsed with mailparse.
//!
//! The interpreter is `$AUTHGW_TEST_SMTP_PYTHON` (scripts/test.sh points it at
//! a venv with aiosmtpd==1.4.6), else `python3`. The child's stdin stays open
//! while the [`SmtpServer`] lives; it is killed when the value is dropped, and
//! exits on its own when the test process dies (its stdin closes).

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use mailparse::MailHeaderMap as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

/// How long [`SmtpServer::next`] waits for a message.
pub const MAIL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the server may take to print its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How server.py behaves (its command-line options).
#[derive(Clone, Debug, Default)]
pub struct SmtpOptions {
    /// Offer STARTTLS with this certificate chain and key (PEM files), and
    /// require it before AUTH and MAIL (`--starttls CERT KEY`).
    pub starttls: Option<(PathBuf, PathBuf)>,
    /// Require AUTH PLAIN/LOGIN with this user and password before MAIL;
    /// wrong credentials answer 535 (`--auth USER:PASSWORD`). With
    /// `starttls`, AUTH is offered only after STARTTLS.
    pub auth: Option<(String, String)>,
    /// Answer the first N DATA commands with `451 4.3.0 try again later`.
    pub fail_first: u32,
    /// Answer every RCPT with `550 5.1.1 no such user`.
    pub reject_all: bool,
}

/// One message the server accepted.
#[derive(Clone, Debug)]
pub struct Mail {
    /// The envelope sender (MAIL FROM), e.g. `no-reply@localhost`; the From:
    /// header is in `headers` ([`Mail::header`]).
    pub from: String,
    /// The envelope recipients (RCPT TO).
    pub to: Vec<String>,
    /// The Subject: header, RFC 2047-decoded.
    pub subject: String,
    /// The first text/plain part, transfer-decoded, as UTF-8, line ends `\n`
    /// (empty when there is none).
    pub text: String,
    /// The first text/html part, the same way (empty when there is none).
    pub html: String,
    /// The message as received after DATA (CRLF line ends).
    pub raw: Vec<u8>,
    /// Every header of the top-level message in order (name as sent, value
    /// decoded).
    pub headers: Vec<(String, String)>,
}

impl Mail {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The single envelope recipient (panics when there are several).
    pub fn recipient(&self) -> &str {
        assert_eq!(self.to.len(), 1, "one recipient expected: {self:?}");
        &self.to[0]
    }

    /// Parses a message as server.py reports it.
    pub fn parse(from: String, to: Vec<String>, raw: Vec<u8>) -> Result<Self, String> {
        let parsed = mailparse::parse_mail(&raw).map_err(|e| format!("mailparse: {e}"))?;
        let headers = parsed
            .headers
            .iter()
            .map(|h| (h.get_key(), h.get_value()))
            .collect();
        let subject = parsed
            .headers
            .get_first_value("Subject")
            .unwrap_or_default();
        let mut text = None;
        let mut html = None;
        for part in parsed.parts() {
            if !part.subparts.is_empty()
                || part.get_content_disposition().disposition
                    == mailparse::DispositionType::Attachment
            {
                continue;
            }
            let slot = match part.ctype.mimetype.to_ascii_lowercase().as_str() {
                "text/plain" => &mut text,
                "text/html" => &mut html,
                _ => continue,
            };
            if slot.is_none() {
                let body = part
                    .get_body()
                    .map_err(|e| format!("{} part: {e}", part.ctype.mimetype))?;
                *slot = Some(body.replace("\r\n", "\n"));
            }
        }
        Ok(Self {
            from,
            to,
            subject,
            text: text.unwrap_or_default(),
            html: html.unwrap_or_default(),
            raw,
            headers,
        })
    }
}

/// server.py, running.
pub struct SmtpServer {
    pub port: u16,
    pub opts: SmtpOptions,
    python: String,
    child: Child,
    stdin: Option<ChildStdin>,
    mails: mpsc::UnboundedReceiver<Result<Mail, String>>,
    stderr: Arc<Mutex<String>>,
}

impl SmtpServer {
    /// Starts a server on a free port.
    pub async fn start(opts: SmtpOptions) -> Self {
        Self::launch(0, opts).await
    }

    /// Starts a server on `port`: a stopped server back where the gateway
    /// expects it (the listening socket has SO_REUSEADDR).
    pub async fn start_on(port: u16, opts: SmtpOptions) -> Self {
        assert_ne!(port, 0, "start_on wants a port; start() picks a free one");
        Self::launch(port, opts).await
    }

    async fn launch(port: u16, opts: SmtpOptions) -> Self {
        let python = std::env::var("AUTHGW_TEST_SMTP_PYTHON")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".into());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/server.py");
        let mut cmd = Command::new(&python);
        cmd.arg(&script);
        if port != 0 {
            cmd.arg("--port").arg(port.to_string());
        }
        if let Some((cert, key)) = &opts.starttls {
            cmd.arg("--starttls").arg(cert).arg(key);
        }
        if let Some((user, password)) = &opts.auth {
            cmd.arg("--auth").arg(format!("{user}:{password}"));
        }
        if opts.fail_first > 0 {
            cmd.arg("--fail-first").arg(opts.fail_first.to_string());
        }
        if opts.reject_all {
            cmd.arg("--reject-all");
        }
        let mut child = match cmd
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONIOENCODING", "utf-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!("{} (spawning it: {e})", not_importable(&python)),
        };
        let stdin = child.stdin.take().expect("child stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        let mut stderr = child.stderr.take().expect("child stderr");

        let mut first = String::new();
        let read = tokio::time::timeout(START_TIMEOUT, stdout.read_line(&mut first)).await;
        let port = match (&read, first.trim_end().strip_prefix("PORT ")) {
            (Ok(Ok(_)), Some(n)) => n
                .parse::<u16>()
                .unwrap_or_else(|_| panic!("server.py printed a bad first line {first:?}")),
            _ => {
                let _ = child.start_kill();
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let mut err = String::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), stderr.read_to_string(&mut err))
                        .await;
                // server.py exits 3 when it cannot import aiosmtpd.
                if matches!(&status, Ok(Ok(s)) if s.code() == Some(3)) {
                    panic!("{}\n--- its stderr:\n{err}", not_importable(&python));
                }
                panic!(
                    "{python} {} printed no `PORT <n>` line (read: {read:?}, first line {first:?}, exit {status:?})\n--- its stderr:\n{err}",
                    script.display()
                );
            }
        };

        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr buffer")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, mails) = mpsc::unbounded_channel();
        tokio::spawn(read_mails(stdout, tx));

        Self {
            port,
            opts,
            python,
            child,
            stdin: Some(stdin),
            mails,
            stderr: log,
        }
    }

    /// `smtp://[user@]127.0.0.1:PORT?tls=none`: plaintext to the loopback
    /// relay (the user when `auth` is set; its password goes through
    /// `email.smtp_password_env`).
    pub fn url(&self) -> String {
        format!("smtp://{}127.0.0.1:{}?tls=none", self.userinfo(), self.port)
    }

    /// `smtp://[user@]localhost:PORT`: STARTTLS required. `localhost`, the
    /// name the test certificate (`starttls`) must carry; `email.smtp_ca`
    /// names its CA.
    pub fn starttls_url(&self) -> String {
        format!("smtp://{}localhost:{}", self.userinfo(), self.port)
    }

    fn userinfo(&self) -> String {
        match &self.opts.auth {
            Some((user, _)) => format!("{}@", percent_encode(user)),
            None => String::new(),
        }
    }

    /// The next accepted message; panics after [`MAIL_TIMEOUT`].
    pub async fn next(&mut self) -> Mail {
        match tokio::time::timeout(MAIL_TIMEOUT, self.mails.recv()).await {
            Ok(Some(Ok(mail))) => mail,
            Ok(Some(Err(e))) => panic!("the SMTP server on port {}: {e}", self.port),
            Ok(None) => panic!(
                "the SMTP server on port {} ended (exit {:?}) while the test waited for a message\n--- its stderr:\n{}",
                self.port,
                self.child.try_wait(),
                self.log()
            ),
            Err(_) => panic!(
                "no message reached the SMTP server on port {} within {MAIL_TIMEOUT:?}\n--- its stderr:\n{}",
                self.port,
                self.log()
            ),
        }
    }

    /// The next `n` messages, in the order they arrived.
    pub async fn next_n(&mut self, n: usize) -> Vec<Mail> {
        let mut all = Vec::with_capacity(n);
        for _ in 0..n {
            all.push(self.next().await);
        }
        all
    }

    /// A message that has already arrived, if any (no waiting).
    pub fn try_next(&mut self) -> Option<Mail> {
        match self.mails.try_recv() {
            Ok(Ok(mail)) => Some(mail),
            Ok(Err(e)) => panic!("the SMTP server on port {}: {e}", self.port),
            Err(_) => None,
        }
    }

    /// Asserts that no message arrives within `d`.
    pub async fn none_within(&mut self, d: Duration) {
        match tokio::time::timeout(d, self.mails.recv()).await {
            Err(_) => {}
            Ok(Some(Ok(mail))) => panic!(
                "unexpected message within {d:?}: to {:?}, subject {:?}\n{}",
                mail.to,
                mail.subject,
                String::from_utf8_lossy(&mail.raw)
            ),
            Ok(Some(Err(e))) => panic!("the SMTP server on port {}: {e}", self.port),
            Ok(None) => panic!(
                "the SMTP server on port {} ended (exit {:?})\n--- its stderr:\n{}",
                self.port,
                self.child.try_wait(),
                self.log()
            ),
        }
    }

    /// What server.py wrote on stderr so far (refused AUTH, 451 answers,
    /// aiosmtpd's warnings).
    pub fn log(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// Stops the server and waits until it has exited (its port is free):
    /// closes its stdin, then kills it if it is still there after 5 s.
    /// Messages it accepted before stay readable. For "the server is down".
    pub async fn stop(&mut self) -> ExitStatus {
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(status) => status.expect("wait for server.py"),
            Err(_) => {
                self.child.kill().await.expect("kill server.py");
                self.child.wait().await.expect("wait for server.py")
            }
        }
    }

    /// The interpreter that runs server.py.
    pub fn python(&self) -> &str {
        &self.python
    }
}

fn not_importable(python: &str) -> String {
    format!(
        "aiosmtpd not importable by {python}; scripts/test.sh installs it (pip install aiosmtpd==1.4.6) into a venv and sets AUTHGW_TEST_SMTP_PYTHON"
    )
}

/// Turns server.py's JSON lines into messages until its stdout closes.
async fn read_mails(
    stdout: BufReader<ChildStdout>,
    tx: mpsc::UnboundedSender<Result<Mail, String>>,
) {
    let mut lines = stdout.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send(mail_from_line(&line)).is_err() {
            return;
        }
    }
}

fn mail_from_line(line: &str) -> Result<Mail, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("bad line {line:?}: {e}"))?;
    let from = v["mail_from"].as_str().unwrap_or_default().to_string();
    let to = v["rcpt_tos"]
        .as_array()
        .ok_or_else(|| format!("no rcpt_tos in {line:?}"))?
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_string())
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["data_b64"].as_str().unwrap_or_default())
        .map_err(|e| format!("bad data_b64 in {line:?}: {e}"))?;
    Mail::parse(from, to, raw)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The first link in `text` that starts with `prefix` (up to whitespace or
/// `"`, `'`, `<`, `>`, `)`), with HTML's `&amp;` read as `&`.
pub fn link_from(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no link starting with {prefix:?} in:\n{text}"));
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || "\"'<>)".contains(c))
        .unwrap_or(rest.len());
    rest[..end].replace("&amp;", "&")
}

/// The `token=` query value of the first link in `link_text` that starts with
/// `prefix` (percent-decoded).
pub fn token_from(link_text: &str, prefix: &str) -> String {
    let link = link_from(link_text, prefix);
    let query = link
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or(""))
        .unwrap_or_else(|| panic!("the link {link:?} has no query"));
    let token = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .unwrap_or_else(|| panic!("the link {link:?} has no token= parameter"));
    assert!(!token.is_empty(), "the link {link:?} has an empty token");
    percent_decode(token)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|b| char::from(*b).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
