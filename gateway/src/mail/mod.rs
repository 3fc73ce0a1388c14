//! Account mail: how a message leaves the process. The messages themselves
//! are written to the outbox (`store::outbox`) in the transaction of the
//! action that causes them; [`sender`] drains it through a [`Transport`]:
//! SMTP through lettre (STARTTLS or implicit TLS on rustls + aws-lc-rs,
//! optional AUTH), or, with no `email.smtp_url`, `.eml` files in a directory.

pub mod compose;
pub mod locale;
pub mod sender;
pub mod templates;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::EmailConfig;

pub use compose::{Composer, Link};
pub use locale::Locale;
pub use templates::{Kind, Rendered, Templates};

/// A transport that could not be built from `[email]`: which key, why.
#[derive(Debug)]
pub struct TransportError {
    pub key: &'static str,
    pub reason: String,
}

fn bad(key: &'static str, reason: impl Into<String>) -> TransportError {
    TransportError {
        key,
        reason: reason.into(),
    }
}

/// Where messages go.
pub enum Transport {
    Smtp {
        inner: Box<AsyncSmtpTransport<Tokio1Executor>>,
        /// `smtp://host:port (STARTTLS)`, with no user or password.
        describe: String,
    },
    Files {
        inner: AsyncFileTransport<Tokio1Executor>,
        dir: PathBuf,
    },
}

/// A delivery that did not happen: `permanent` when the server refused the
/// message for good (5xx), so retrying cannot help.
#[derive(Debug)]
pub struct SendError {
    pub permanent: bool,
    pub message: String,
}

/// How the server's security is set up for one SMTP URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    StartTls,
    Implicit,
    Plain,
}

impl Transport {
    /// Builds the transport `[email]` describes, reading the CA file and the
    /// password variable (through `env`); nothing connects yet.
    pub fn from_config(
        config: &EmailConfig,
        base_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TransportError> {
        if config.smtp_url.is_empty() {
            let dir = base_dir.join(&config.dir);
            return Ok(Self::Files {
                inner: AsyncFileTransport::new(&dir),
                dir,
            });
        }
        let key = "email.smtp_url";
        let url = url::Url::parse(&config.smtp_url)
            .map_err(|e| bad(key, format!("not a URL ({e}); write smtp://host:587")))?;
        let security = match url.scheme() {
            "smtp" => match url.query_pairs().find(|(k, _)| k == "tls") {
                None => Security::StartTls,
                Some((_, v)) if v == "required" => Security::StartTls,
                Some((_, v)) if v == "none" => Security::Plain,
                Some((_, v)) => {
                    return Err(bad(
                        key,
                        format!("tls={v:?}: write tls=none or leave it out"),
                    ));
                }
            },
            "smtps" => Security::Implicit,
            other => {
                return Err(bad(
                    key,
                    format!(
                        "scheme {other:?}: write smtp:// (STARTTLS) or smtps:// (implicit TLS)"
                    ),
                ));
            }
        };
        if url.query_pairs().any(|(k, _)| k != "tls") {
            return Err(bad(key, "the only query parameter is tls=none"));
        }
        if url.password().is_some() {
            return Err(bad(
                key,
                format!(
                    "a password in the URL would sit in the file; put it in the environment variable named by email.smtp_password_env ({})",
                    config.smtp_password_env
                ),
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad(key, "no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if security == Security::Plain && !is_loopback(&host) {
            return Err(bad(
                key,
                format!(
                    "tls=none sends reset links in clear text; it is accepted only for a loopback relay, not {host:?}"
                ),
            ));
        }
        let port = url.port().unwrap_or(match security {
            Security::Implicit => 465,
            Security::StartTls => 587,
            Security::Plain => 25,
        });
        let tls = match security {
            Security::Plain => Tls::None,
            _ => {
                let params = tls_parameters(config, base_dir, &host)?;
                if security == Security::Implicit {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(config.smtp_timeout));
        let user = percent_decode(url.username());
        if !user.is_empty() {
            let password = env(&config.smtp_password_env).ok_or_else(|| {
                bad(
                    "email.smtp_password_env",
                    format!(
                        "the URL names user {user:?}, but the environment variable {} is not set",
                        config.smtp_password_env
                    ),
                )
            })?;
            builder = builder.credentials(Credentials::new(user, password));
        }
        let describe = format!(
            "smtp{}://{host}:{port}{}",
            if security == Security::Implicit {
                "s"
            } else {
                ""
            },
            match security {
                Security::StartTls => " (STARTTLS)",
                Security::Implicit => " (TLS)",
                Security::Plain => " (plain, loopback)",
            }
        );
        Ok(Self::Smtp {
            inner: Box::new(builder.build()),
            describe,
        })
    }

    /// Where messages go, for logs and the CLI (no credentials).
    pub fn describe(&self) -> String {
        match self {
            Self::Smtp { describe, .. } => describe.clone(),
            Self::Files { dir, .. } => format!("files in {}", dir.display()),
        }
    }

    /// Sends `message`. Returns what the server answered (`250 ...`) or
    /// where the file went.
    pub async fn send(&self, message: &Message) -> Result<String, SendError> {
        match self {
            Self::Smtp { inner, describe } => match inner.send(message.clone()).await {
                Ok(response) => Ok(format!(
                    "via {describe}: {} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                )),
                Err(e) => Err(SendError {
                    permanent: e.is_permanent(),
                    message: one_line(&crate::error::with_causes(&e)),
                }),
            },
            Self::Files { inner, dir } => {
                if let Err(e) = tokio::fs::create_dir_all(dir).await {
                    return Err(SendError {
                        permanent: false,
                        message: format!("cannot create {}: {e}", dir.display()),
                    });
                }
                match inner.send(message.clone()).await {
                    Ok(id) => Ok(format!(
                        "written to {}",
                        dir.join(format!("{id}.eml")).display()
                    )),
                    Err(e) => Err(SendError {
                        permanent: false,
                        message: one_line(&crate::error::with_causes(&e)),
                    }),
                }
            }
        }
    }
}

/// The server's certificate is checked against `email.smtp_ca` or the
/// system roots, for the URL's host name.
fn tls_parameters(
    config: &EmailConfig,
    base_dir: &Path,
    host: &str,
) -> Result<TlsParameters, TransportError> {
    let mut builder = TlsParameters::builder(host.to_string());
    if let Some(ca) = &config.smtp_ca {
        let path = base_dir.join(ca);
        let pem = std::fs::read(&path).map_err(|e| {
            bad(
                "email.smtp_ca",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let cert = Certificate::from_pem(&pem).map_err(|e| {
            bad(
                "email.smtp_ca",
                format!("{}: not a PEM certificate bundle ({e})", path.display()),
            )
        })?;
        builder = builder
            .certificate_store(CertificateStore::None)
            .add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| bad("email.smtp_url", format!("TLS setup: {e}")))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `s` on one line, at most 500 characters (an SMTP error for a log line
/// and the outbox's `last_error`).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect()
}

/// A message ready for the transport: multipart/alternative, plain text
/// then HTML, UTF-8.
pub fn build_message(
    from: &str,
    to: &str,
    subject: &str,
    text: &str,
    html: &str,
) -> Result<Message, String> {
    let from: Mailbox = from.parse().map_err(|e| format!("from {from:?}: {e}"))?;
    let to: Mailbox = to.parse().map_err(|e| format!("recipient: {e}"))?;
    Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .multipart(MultiPart::alternative_plain_html(
            text.to_string(),
            html.to_string(),
        ))
        .map_err(|e| e.to_string())
}

/// An address a message can be sent to (the same rule the API applies to
/// `email`).
pub fn is_deliverable(address: &str) -> bool {
    address.parse::<lettre::Address>().is_ok()
}

/// How long the sender holds a claimed message before another process may
/// try it: longer than one delivery can take (connecting, and each of
/// EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT, DATA and the message's end, each
/// bounded by `smtp_timeout`).
pub fn lease(config: &EmailConfig) -> Duration {
    config.smtp_timeout * 12 + Duration::from_secs(30)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> EmailConfig {
        EmailConfig {
            smtp_url: url.into(),
            ..EmailConfig::default()
        }
    }

    fn refused(config: &EmailConfig, env: Option<&str>) -> TransportError {
        match Transport::from_config(config, Path::new("/"), |_| env.map(str::to_string)) {
            Ok(t) => panic!("{:?} accepted as {}", config.smtp_url, t.describe()),
            Err(e) => e,
        }
    }

    /// Every SMTP URL that would leak mail or a secret is refused at load
    /// naming its key: a password in the file, plaintext to another host,
    /// an unknown scheme or parameter, a user without its password.
    #[tokio::test]
    async fn unsafe_smtp_settings_are_refused_naming_the_key() {
        let e = refused(&with_url("smtp://user:secret@mail.example.com"), None);
        assert_eq!(e.key, "email.smtp_url");
        assert!(
            e.reason.contains("AUTHGW_SMTP_PASSWORD") && !e.reason.contains("secret"),
            "{}",
            e.reason
        );
        for url in [
            "smtp://mail.example.com:25?tls=none",
            "smtp://10.0.0.5?tls=none",
            "smtp://[2001:db8::1]?tls=none",
        ] {
            let e = refused(&with_url(url), None);
            assert!(e.reason.contains("loopback"), "{url}: {}", e.reason);
        }
        for url in [
            "http://mail.example.com",
            "smtp://mail.example.com?tls=maybe",
            "smtp://mail.example.com?x=1",
            "smtp://",
            "not a url",
        ] {
            assert_eq!(refused(&with_url(url), None).key, "email.smtp_url", "{url}");
        }
        let e = refused(&with_url("smtp://mailer@mail.example.com"), None);
        assert_eq!(e.key, "email.smtp_password_env");
        let bad_ca = EmailConfig {
            smtp_ca: Some("/nonexistent/ca.pem".into()),
            ..with_url("smtps://mail.example.com")
        };
        assert_eq!(refused(&bad_ca, None).key, "email.smtp_ca");
    }

    /// The accepted forms: STARTTLS on 587 by default, implicit TLS on
    /// 465, plaintext to loopback, a user with the password from the
    /// environment, and files with no URL. The description never carries
    /// the user or the password.
    #[tokio::test]
    async fn accepted_smtp_settings_describe_themselves_without_secrets() {
        let ok = |url: &str| {
            Transport::from_config(&with_url(url), Path::new("/srv"), |_| Some("pw".into()))
                .map(|t| t.describe())
                .unwrap_or_else(|e| panic!("{url}: {} {}", e.key, e.reason))
        };
        assert_eq!(
            ok("smtp://mail.example.com"),
            "smtp://mail.example.com:587 (STARTTLS)"
        );
        assert_eq!(
            ok("smtps://mailer@mail.example.com"),
            "smtps://mail.example.com:465 (TLS)"
        );
        assert_eq!(
            ok("smtp://127.0.0.1:2525?tls=none"),
            "smtp://127.0.0.1:2525 (plain, loopback)"
        );
        assert_eq!(
            ok("smtp://localhost:25?tls=none"),
            "smtp://localhost:25 (plain, loopback)"
        );
        assert_eq!(ok(""), "files in /srv/mail");
    }
}
