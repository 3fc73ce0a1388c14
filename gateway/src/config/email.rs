//! `[email]`: how account mail (verification, password reset, notices) is
//! delivered (docs/email.md). With no `smtp_url`, messages are written as
//! `.eml` files into `dir`, so a new install runs every flow with no server.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// The default environment variable holding the SMTP password.
pub const ENV_SMTP_PASSWORD: &str = "AUTHGW_SMTP_PASSWORD";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// `smtp://[user@]host[:port]` (STARTTLS required), `smtps://...`
    /// (implicit TLS) or `smtp://loopback:port?tls=none`; empty: files.
    pub smtp_url: String,
    /// The environment variable holding the SMTP password (when the URL
    /// names a user). Never in the file, never logged.
    pub smtp_password_env: String,
    /// A PEM CA bundle for the SMTP server's certificate (default: the
    /// system roots).
    pub smtp_ca: Option<PathBuf>,
    /// Connecting, and each SMTP command.
    #[serde(deserialize_with = "duration")]
    pub smtp_timeout: Duration,
    /// The file transport's directory (relative to the config file's).
    pub dir: PathBuf,
    /// The `From:` mailbox.
    pub from: String,
    /// The product name the templates show.
    pub product: String,
    /// The frontend's verification page; `{token}` is replaced.
    pub verify_url: String,
    /// The frontend's password-reset page; `{token}` is replaced.
    pub reset_url: String,
    #[serde(deserialize_with = "duration")]
    pub verify_ttl: Duration,
    #[serde(deserialize_with = "duration")]
    pub reset_ttl: Duration,
    /// Per account: at most one verification and one reset message per interval.
    #[serde(deserialize_with = "duration")]
    pub resend_interval: Duration,
    /// Delivery attempts before a message is marked failed.
    pub max_attempts: u32,
    /// The first retry's delay; it doubles with each attempt.
    #[serde(deserialize_with = "duration")]
    pub retry_base: Duration,
    #[serde(deserialize_with = "duration")]
    pub retry_max: Duration,
    /// How often the sender looks for due messages queued elsewhere (or
    /// due for a retry); this process's own are sent at once.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// Template overrides: `{dir}/{locale}/{kind}.txt` and `.html`.
    pub templates_dir: Option<PathBuf>,
    /// Password-reset requests pending at once, queued or being looked up
    /// (one at a time, after each one's 202); past it, further requests are
    /// answered the same and dropped, so a flood cannot pile up work
    /// without bound.
    pub max_pending_resets: usize,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_url: String::new(),
            smtp_password_env: ENV_SMTP_PASSWORD.into(),
            smtp_ca: None,
            smtp_timeout: Duration::from_secs(10),
            dir: PathBuf::from("mail"),
            from: "authgw <no-reply@localhost>".into(),
            product: "authgw".into(),
            verify_url: "http://localhost:3000/verify-email?token={token}".into(),
            reset_url: "http://localhost:3000/reset-password?token={token}".into(),
            verify_ttl: Duration::from_secs(24 * 3600),
            reset_ttl: Duration::from_secs(30 * 60),
            resend_interval: Duration::from_secs(60),
            max_attempts: 8,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(5),
            templates_dir: None,
            max_pending_resets: 256,
        }
    }
}

impl EmailConfig {
    /// Checks the keys that need no I/O; `(key, reason)` on failure. The
    /// transport and the templates are built (files read) by
    /// [`crate::mail`] at load.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, url) in [
            ("email.verify_url", &self.verify_url),
            ("email.reset_url", &self.reset_url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://"))
                || !url.contains("{token}")
            {
                return Err((
                    key,
                    format!("{url:?} must be an http(s) URL containing {{token}}"),
                ));
            }
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err((
                "email.from",
                format!(
                    "{:?} is not a mailbox (write \"Name <addr@example.com>\")",
                    self.from
                ),
            ));
        }
        if self.max_pending_resets == 0 {
            return Err(("email.max_pending_resets", "must be at least 1".into()));
        }
        if self.max_attempts == 0 {
            return Err(("email.max_attempts", "must be at least 1".into()));
        }
        for (key, d) in [
            ("email.smtp_timeout", self.smtp_timeout),
            ("email.verify_ttl", self.verify_ttl),
            ("email.reset_ttl", self.reset_ttl),
            ("email.retry_base", self.retry_base),
            ("email.poll_interval", self.poll_interval),
        ] {
            if d.is_zero() {
                return Err((key, "must be above 0".into()));
            }
        }
        if self.retry_max < self.retry_base {
            return Err((
                "email.retry_max",
                "must be at least email.retry_base".into(),
            ));
        }
        if self.product.is_empty() || self.product.len() > 100 {
            return Err(("email.product", "must be 1-100 characters".into()));
        }
        Ok(())
    }
}
