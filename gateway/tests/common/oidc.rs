//! A real OpenID Connect provider for the social-login tests:
//! `oidc-provider-mock` (PyPI, pinned by scripts/test.sh) in a child process
//! on 127.0.0.1, a free port, with `--require-nonce`.
//!
//! The interpreter is `$AUTHGW_TEST_OIDC_PYTHON` (scripts/test.sh points it
//! at a venv with oidc-provider-mock==0.3.4), else `python3`. It runs the
//! package's own `__main__` (as `python -m oidc_provider_mock` does) under a
//! small wrapper that also exits when its stdin closes, so a test process
//! that dies does not leave providers behind; the child is killed when the
//! [`OidcProvider`] is dropped.
//!
//! What the mock does (0.3.4): discovery at `/.well-known/openid-configuration`
//! (issuer = the URL it was reached at), RS256 ID tokens signed with a key it
//! generates per process (its JWKS has a `kid`; its ID tokens carry none),
//! any client id and secret accepted (basic or post), an authorization form
//! that a POST of `sub=...` answers with the redirect back, users' claims set
//! by `PUT /users/{sub}`, userinfo. It does not check PKCE (the Rust
//! [`super::fake_idp`] does).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long the provider may take to answer its discovery document.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The wrapper: run `oidc_provider_mock`'s `__main__` with our argv, and exit
/// as soon as stdin closes (the test process is gone). Exit 3 when the
/// package cannot be imported.
const WRAPPER: &str = r#"
import os, runpy, sys, threading
try:
    import oidc_provider_mock  # noqa: F401
except ImportError as e:
    print(f"cannot import oidc_provider_mock: {e}", file=sys.stderr)
    sys.exit(3)
def _watch():
    try:
        sys.stdin.read()
    finally:
        os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
sys.argv[0] = "oidc_provider_mock"
runpy.run_module("oidc_provider_mock", run_name="__main__", alter_sys=True)
"#;

/// oidc-provider-mock, running.
pub struct OidcProvider {
    pub port: u16,
    python: String,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl OidcProvider {
    /// Starts a provider on a free port of 127.0.0.1 and waits until its
    /// discovery document answers.
    pub async fn start() -> Self {
        Self::launch_on(None).await
    }

    /// Starts a provider on `port` (e.g. where a gateway already expects
    /// one that was not there yet).
    pub async fn start_on(port: u16) -> Self {
        Self::launch_on(Some(port)).await
    }

    async fn launch_on(port: Option<u16>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for the provider's log");
        let log = dir.path().join("oidc-provider-mock.log");
        let python = std::env::var("AUTHGW_TEST_OIDC_PYTHON")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".into());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("authgw-tests/1")
            .build()
            .unwrap();
        let mut provider = Self {
            port: 0,
            python,
            child: None,
            log,
            _dir: dir,
            http,
        };
        if let Some(port) = port {
            provider.port = port;
            provider.launch().await.unwrap_or_else(|e| panic!("{e}"));
            return provider;
        }
        // A free port may be taken between the probe and the bind: retry.
        for attempt in 0.. {
            provider.port = super::free_port();
            match provider.launch().await {
                Ok(()) => return provider,
                Err(e) if attempt < 3 && e.contains("address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    /// `http://127.0.0.1:PORT`, the issuer (the mock names itself by the URL
    /// it is reached at).
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `PUT /users/{sub}`: the claims (besides `sub`) of the user `sub`, in
    /// its ID tokens and userinfo (standard claims only for their scopes:
    /// `email`, `email_verified` with "email", `preferred_username`, `name`
    /// with "profile"). Unknown subjects get `{"email": sub}`.
    pub async fn set_user(&self, sub: &str, claims: Value) {
        let r = self
            .http
            .put(format!("{}/users/{}", self.issuer(), path_segment(sub)))
            .json(&claims)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 204, "PUT /users/{sub}: {body}\n{}", self.log());
    }

    /// Logs `sub` in at the authorization endpoint: POSTs the form
    /// (`sub=...`) to `location` (the URL the gateway's `/start` redirected
    /// to, with all its parameters) and returns where the provider sends
    /// the browser (the gateway's callback with `code` and `state`).
    pub async fn authorize(&self, location: &str, sub: &str) -> String {
        self.submit(location, &[("sub", sub)]).await
    }

    /// The user presses "Deny": returns the redirect back (with
    /// `error=access_denied` and the state).
    pub async fn deny(&self, location: &str) -> String {
        self.submit(location, &[("action", "deny")]).await
    }

    async fn submit(&self, location: &str, form: &[(&str, &str)]) -> String {
        assert!(
            location.starts_with(&self.issuer()),
            "{location} is not at the provider {}",
            self.issuer()
        );
        let r = self.http.post(location).form(form).send().await.unwrap();
        let status = r.status();
        let to = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = r.text().await.unwrap_or_default();
        match to {
            Some(to) if status.is_redirection() => to,
            _ => panic!(
                "the provider answered POST {location} with {status}, no redirect:\n{body}\n--- its log:\n{}",
                self.log()
            ),
        }
    }

    /// Stops the provider and starts it again on the same port: a new
    /// process, so a new signing key (and no users: set them again; the
    /// subjects are the same people).
    pub async fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch().await {
                Ok(()) => return,
                // The old socket may linger for a moment.
                Err(e) if e.contains("address already in use") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The provider's current public signing keys (`/jwks`).
    pub async fn jwks(&self) -> Value {
        self.http
            .get(format!("{}/jwks", self.issuer()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// What the provider logged so far (uvicorn's access log, authlib's
    /// warnings: a refused token request says why here).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Spawns the process on `self.port` and polls discovery until it
    /// answers; Err (with the log) when the process exits first.
    async fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the provider's log file");
        let spawned = Command::new(&self.python)
            .arg("-c")
            .arg(WRAPPER)
            .args(["--port", &self.port.to_string(), "--require-nonce"])
            .env("PYTHONUNBUFFERED", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => panic!("{} (spawning it: {e})", not_importable(&self.python)),
        };
        self.child = Some(child);
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        let deadline = Instant::now() + START_TIMEOUT;
        let mut wait = Duration::from_millis(20);
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status() == 200
                && let Ok(doc) = r.json::<Value>().await
                && doc["issuer"] == self.issuer()
            {
                return Ok(());
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            if let Some(status) = exited {
                self.child = None;
                let log = self.log();
                if status.code() == Some(3) {
                    panic!("{}\n--- its output:\n{log}", not_importable(&self.python));
                }
                let msg = format!(
                    "oidc-provider-mock on port {} exited ({status}) before answering discovery\n--- its output:\n{log}",
                    self.port
                );
                return Err(if log.contains("address already in use") {
                    format!("address already in use: {msg}")
                } else {
                    msg
                });
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "oidc-provider-mock on port {} did not answer {url} within {START_TIMEOUT:?}\n--- its output:\n{}",
                    self.port,
                    self.log()
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(200));
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

fn not_importable(python: &str) -> String {
    format!(
        "oidc_provider_mock not importable by {python}; scripts/test.sh installs it (pip install oidc-provider-mock==0.3.4) into a venv and sets AUTHGW_TEST_OIDC_PYTHON"
    )
}

/// `s` percent-encoded for one path segment.
fn path_segment(s: &str) -> String {
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
