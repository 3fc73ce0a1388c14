//! PostgreSQL over TLS: `database.url`'s libpq TLS parameters, and the one
//! connector every connection (the pool, the CLI, the revocation listener)
//! is made with.
//!
//! tokio-postgres knows only `sslmode=disable|prefer|require` (and never
//! checks a certificate itself) and rejects the other libpq keys, so
//! [`Target::parse`] takes `sslmode`, `sslrootcert`, `sslcert` and `sslkey`
//! out of the URL (`postgresql://…?…` or `key=value` form), hands the rest
//! to tokio-postgres, and decides:
//!
//! | `sslmode` | authgw |
//! | --- | --- |
//! | absent, `disable`, `allow`, `prefer` | plaintext, as before TLS support: no opportunistic, unverified TLS |
//! | `require` | TLS, never an unverified certificate: with `sslrootcert=<file>` as `verify-ca` (libpq does the same when a root file exists); without, as `verify-full` against the system roots |
//! | `verify-ca` | TLS, chain to `sslrootcert=<file>` checked, host name not |
//! | `verify-full` | TLS, chain to the roots (`sslrootcert=<file>`, else the system's) and the URL's host name checked |
//!
//! `sslrootcert=system` (the system roots, as in libpq 16) implies
//! `verify-full` and refuses any weaker mode, as libpq does: a public CA
//! signs certificates for anyone, so with the system roots only the host
//! name ties the certificate to the database. For the same reason
//! `verify-ca` needs a root file. `sslcert` + `sslkey` present a client
//! certificate. The files are read once, when the URL is parsed (at
//! start); an error names `database.url` and the reason and never contains
//! the URL, so never its password.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::{Host, SslMode as WireMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls::pem;

/// The connector type of every PostgreSQL connection. For a plaintext URL
/// the configuration says `sslmode=disable` to tokio-postgres, so this
/// connector is never asked for a handshake (and, with no roots, could not
/// complete one).
pub type Connector = MakeRustlsConnect;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    fn parse(value: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == value)
            .ok_or_else(|| {
                format!(
                    "database.url: unknown sslmode {value:?} (one of disable, allow, prefer, require, verify-ca, verify-full)"
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// What the server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's roots (rustls-native-certs).
    System,
    /// A PEM bundle (`sslrootcert=<file>`).
    File(PathBuf),
}

/// How a connection is protected, as the URL decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Plain,
    Tls {
        /// The `sslmode` written in the URL (or implied by `sslrootcert=system`).
        mode: SslMode,
        roots: Roots,
        /// Whether the certificate must name the URL's host (`verify-full`).
        check_name: bool,
        /// `sslcert` and `sslkey`.
        client_cert: Option<(PathBuf, PathBuf)>,
    },
}

impl Transport {
    /// A short description for errors and logs, with no secret in it:
    /// `TLS, sslmode=verify-full, roots /etc/authgw/pg-ca.pem`.
    pub fn summary(&self) -> String {
        match self {
            Transport::Plain => "plaintext".into(),
            Transport::Tls {
                mode,
                roots,
                check_name,
                ..
            } => {
                let roots = match roots {
                    Roots::System => "the system roots".to_owned(),
                    Roots::File(path) => format!("roots {}", path.display()),
                };
                let name = if *check_name {
                    "host name checked"
                } else {
                    "host name not checked"
                };
                format!("TLS, sslmode={}, {roots}, {name}", mode.as_str())
            }
        }
    }
}

/// `database.url`, ready to connect with.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    connector: Connector,
    transport: Transport,
}

impl Target {
    /// Parses `url` and builds its connector (reading the certificate
    /// files). Errors start with `database.url:` and never quote the URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (mut config, transport) = plan(url)?;
        config.ssl_mode(match transport {
            Transport::Plain => WireMode::Disable,
            Transport::Tls { .. } => WireMode::Require,
        });
        let connector = connector(&transport)?;
        Ok(Self {
            config,
            connector,
            transport,
        })
    }

    /// The tokio-postgres configuration (without the TLS keys).
    pub fn tokio_config(&self) -> tokio_postgres::Config {
        self.config.clone()
    }

    /// The same, for the synchronous `postgres` client.
    pub fn sync_config(&self) -> postgres::Config {
        postgres::Config::from(self.config.clone())
    }

    pub fn connector(&self) -> Connector {
        self.connector.clone()
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// "cannot connect to the database[ over TLS (…)]: <error and its causes>".
    pub fn connect_error(&self, e: &dyn std::error::Error) -> String {
        match self.transport {
            Transport::Plain => format!("cannot connect to the database: {}", describe(e)),
            Transport::Tls { .. } => format!(
                "cannot connect to the database over TLS ({}): {}",
                self.transport.summary(),
                describe(e)
            ),
        }
    }
}

/// An error with its causes: tokio-postgres says only "error performing TLS
/// handshake", the cause says which certificate problem.
pub use crate::error::with_causes as describe;

/// The libpq TLS keys authgw handles itself.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
}

const KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl TlsParams {
    /// The slot for `key`, if it is one of ours; the last value wins (libpq).
    fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        match key {
            "sslmode" => Some(&mut self.sslmode),
            "sslrootcert" => Some(&mut self.sslrootcert),
            "sslcert" => Some(&mut self.sslcert),
            "sslkey" => Some(&mut self.sslkey),
            _ => None,
        }
    }
}

/// The URL without our keys (for tokio-postgres), and our keys' values.
fn split(url: &str) -> Result<(String, TlsParams), String> {
    let (rest, params) = match ["postgresql://", "postgres://"]
        .iter()
        .find(|prefix| url.starts_with(*prefix))
    {
        Some(prefix) => split_url(url, prefix.len())?,
        None => split_key_value(url),
    };
    // A key left behind means the URL was not split where tokio-postgres
    // splits it (an unencoded `@` or `?`); never let an sslmode be ignored.
    if let Some(key) = KEYS.iter().find(|k| rest.contains(&format!("{k}="))) {
        return Err(format!(
            "database.url: `{key}=` is not where a parameter can be (percent-encode `@`, `?` and `&` in the user name, password and values)"
        ));
    }
    Ok((rest, params))
}

/// The URL form. Splits exactly where tokio-postgres does: the query starts
/// at the first `?` after the first `@`; pairs are `key=value` up to `&`.
fn split_url(url: &str, prefix: usize) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    let after = &url[prefix..];
    let creds_end = after.find('@').map_or(0, |i| i + 1);
    let Some(q) = after[creds_end..].find('?') else {
        return Ok((url.to_owned(), params));
    };
    let q = prefix + creds_end + q;
    let (head, mut query) = (&url[..q], &url[q + 1..]);
    let mut kept: Vec<&str> = Vec::new();
    while !query.is_empty() {
        let Some(eq) = query.find('=') else {
            // tokio-postgres reports it ("unterminated parameter").
            kept.push(query);
            break;
        };
        let value_end = query[eq + 1..]
            .find('&')
            .map_or(query.len(), |i| eq + 1 + i);
        let pair = &query[..value_end];
        let key = percent_decode(&query[..eq], "a parameter name")?;
        match params.slot(&key) {
            Some(slot) => *slot = Some(percent_decode(&query[eq + 1..value_end], &key)?),
            None => kept.push(pair),
        }
        query = query.get(value_end + 1..).unwrap_or("");
    }
    let rest = if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

/// `%XX` decoding as tokio-postgres does it (a stray `%` stays as it is),
/// then UTF-8.
fn percent_decode(s: &str, what: &str) -> Result<String, String> {
    let hex = |b: Option<&u8>| {
        b.and_then(|b| (*b as char).to_digit(16))
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let (Some(h), Some(l)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2)))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| format!("database.url: {what} is not UTF-8 once percent-decoded"))
}

/// The `key=value` form, tokenized as tokio-postgres does (whitespace
/// between pairs, optional whitespace around `=`, single-quoted values,
/// backslash escapes). Anything it cannot read is passed on unchanged for
/// tokio-postgres to report.
fn split_key_value(s: &str) -> (String, TlsParams) {
    let mut params = TlsParams::default();
    let mut kept: Vec<&str> = Vec::new();
    let mut it = s.char_indices().peekable();
    let pos = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        it.peek().map_or(s.len(), |&(i, _)| i)
    };
    loop {
        while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        let start = pos(&mut it);
        while it
            .next_if(|&(_, c)| !c.is_whitespace() && c != '=')
            .is_some()
        {}
        let key = &s[start..pos(&mut it)];
        if key.is_empty() {
            if start < s.len() {
                kept.push(&s[start..]);
            }
            break;
        }
        while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        if it.next_if(|&(_, c)| c == '=').is_none() {
            kept.push(&s[start..]);
            break;
        }
        while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        let complete = if it.next_if(|&(_, c)| c == '\'').is_some() {
            loop {
                match it.next() {
                    Some((_, '\'')) => break true,
                    Some((_, '\\')) => value.extend(it.next().map(|(_, c)| c)),
                    Some((_, c)) => value.push(c),
                    None => break false,
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|&(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(it.next().map(|(_, c)| c));
                } else {
                    value.push(c);
                }
            }
            !value.is_empty()
        };
        if !complete {
            kept.push(&s[start..]);
            break;
        }
        match params.slot(key) {
            Some(slot) => *slot = Some(value),
            None => kept.push(&s[start..pos(&mut it)]),
        }
    }
    (kept.join(" "), params)
}

/// The tokio-postgres configuration and the transport the URL asks for.
fn plan(url: &str) -> Result<(tokio_postgres::Config, Transport), String> {
    let (rest, params) = split(url)?;
    let config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("database.url: {}", describe(&e)))?;
    let written = params.sslmode.as_deref().map(SslMode::parse).transpose()?;
    let system = params.sslrootcert.as_deref() == Some("system");
    let mode = match (written, system) {
        (None, true) => SslMode::VerifyFull,
        (Some(m), true) if m != SslMode::VerifyFull => {
            return Err(format!(
                "database.url: sslmode={} may not be used with sslrootcert=system (use verify-full: with the system's roots only the host name ties the certificate to the database)",
                m.as_str()
            ));
        }
        (m, _) => m.unwrap_or(SslMode::Prefer),
    };
    if matches!(mode, SslMode::Disable | SslMode::Allow | SslMode::Prefer) {
        if let Some(key) = [
            ("sslrootcert", &params.sslrootcert),
            ("sslcert", &params.sslcert),
            ("sslkey", &params.sslkey),
        ]
        .iter()
        .find_map(|(k, v)| v.as_ref().map(|_| k))
        {
            let said = match written {
                Some(m) => format!("sslmode={}", m.as_str()),
                None => "no sslmode".to_owned(),
            };
            return Err(format!(
                "database.url: {key} is set but {said} means plaintext in authgw (no opportunistic TLS); use sslmode=verify-full, verify-ca or require"
            ));
        }
        return Ok((config, Transport::Plain));
    }
    let roots = match params.sslrootcert.as_deref() {
        None | Some("system") => Roots::System,
        Some("") => return Err("database.url: sslrootcert is empty".into()),
        Some(path) => Roots::File(PathBuf::from(path)),
    };
    let check_name = match (mode, &roots) {
        (SslMode::VerifyFull, _) | (SslMode::Require, Roots::System) => true,
        (SslMode::VerifyCa, Roots::System) => {
            return Err(
                "database.url: sslmode=verify-ca needs sslrootcert=<file> (with the system's roots any publicly trusted certificate would pass; use verify-full)"
                    .into(),
            );
        }
        _ => false,
    };
    let client_cert = match (params.sslcert, params.sslkey) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        _ => return Err("database.url: sslcert and sslkey go together".into()),
    };
    let hosts = config.get_hosts();
    if hosts.is_empty() {
        return Err(format!(
            "database.url: sslmode={} needs a host name (the server certificate is checked against it)",
            mode.as_str()
        ));
    }
    #[cfg(unix)]
    if let Some(Host::Unix(path)) = hosts.iter().find(|h| matches!(h, Host::Unix(_))) {
        return Err(format!(
            "database.url: sslmode={} needs a TCP host, but host {} is a Unix socket (PostgreSQL does not use TLS there)",
            mode.as_str(),
            path.display()
        ));
    }
    Ok((
        config,
        Transport::Tls {
            mode,
            roots,
            check_name,
            client_cert,
        },
    ))
}

/// The rustls client configuration for `transport`, on aws-lc-rs.
fn connector(transport: &Transport) -> Result<Connector, String> {
    let provider = crate::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("database.url: TLS: {e}"))?;
    let Transport::Tls {
        roots,
        check_name,
        client_cert,
        ..
    } = transport
    else {
        return Ok(MakeRustlsConnect::new(
            builder
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        ));
    };
    let roots = match roots {
        Roots::System => system_roots()?,
        Roots::File(path) => {
            pem::roots(path).map_err(|e| format!("database.url: sslrootcert {e}"))?
        }
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("database.url: sslrootcert: {e}"))?;
    let builder = if *check_name {
        builder.with_webpki_verifier(verifier)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NameNotChecked(verifier)))
    };
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = pem::certs(cert).map_err(|e| format!("database.url: sslcert {e}"))?;
            let key = pem::key(key).map_err(|e| format!("database.url: sslkey {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("database.url: sslcert/sslkey: {e}"))?
        }
    };
    // What libpq 17 sends; PostgreSQL 17 requires it with sslnegotiation=direct.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(MakeRustlsConnect::new(config))
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "database.url: no system root certificates could be loaded{why}; set sslrootcert=<file>"
        ));
    }
    Ok(store)
}

/// `verify-ca`: the full WebPKI check (chain to the roots, validity dates,
/// signatures, key usage), except that a certificate which does not name
/// the host is accepted. rustls checks the name only after the chain has
/// verified, so a `NotValidForName` error means everything else passed.
#[derive(Debug)]
struct NameNotChecked(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for NameNotChecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const PASSWORD: &str = "s3cr3t-Pw";

    fn tls(url: &str) -> (tokio_postgres::Config, SslMode, Roots, bool) {
        match plan(url).unwrap() {
            (
                config,
                Transport::Tls {
                    mode,
                    roots,
                    check_name,
                    ..
                },
            ) => (config, mode, roots, check_name),
            (_, Transport::Plain) => panic!("plaintext for {url}"),
        }
    }

    fn error(url: &str) -> String {
        let e = match Target::parse(url) {
            Ok(_) => panic!("accepted {url}"),
            Err(e) => e,
        };
        assert!(e.starts_with("database.url: "), "{e}");
        assert!(!e.contains(PASSWORD), "the password leaked: {e}");
        e
    }

    /// Absent, disable, allow and prefer stay plaintext (tokio-postgres is
    /// told `disable`), with the rest of the URL intact.
    #[test]
    fn weak_modes_are_plaintext() {
        for query in ["", "?sslmode=disable", "?sslmode=allow", "?sslmode=prefer"] {
            let url = format!("postgresql://app:{PASSWORD}@db.example:5433/auth{query}");
            let target = Target::parse(&url).unwrap();
            assert_eq!(target.transport(), &Transport::Plain, "{url}");
            let config = target.tokio_config();
            assert_eq!(config.get_ssl_mode(), WireMode::Disable);
            assert_eq!(config.get_hosts(), [Host::Tcp("db.example".into())]);
            assert_eq!(config.get_ports(), [5433]);
            assert_eq!(config.get_user(), Some("app"));
            assert_eq!(config.get_password(), Some(PASSWORD.as_bytes()));
            assert_eq!(config.get_dbname(), Some("auth"));
        }
    }

    /// Each TLS mode: which roots, whether the host name is checked.
    #[test]
    fn tls_modes() {
        let base =
            "postgresql://app@db.example/auth?application_name=x&sslrootcert=%2Fetc%2Fca.pem";
        let file = Roots::File("/etc/ca.pem".into());
        let (config, mode, roots, name) = tls(&format!("{base}&sslmode=verify-full"));
        assert_eq!((mode, &roots, name), (SslMode::VerifyFull, &file, true));
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(config.get_hosts(), [Host::Tcp("db.example".into())]);
        let (_, mode, roots, name) = tls(&format!("{base}&sslmode=verify-ca"));
        assert_eq!((mode, &roots, name), (SslMode::VerifyCa, &file, false));
        // require with a root file: verify-ca (as libpq with a root file).
        let (_, mode, roots, name) = tls(&format!("{base}&sslmode=require"));
        assert_eq!((mode, &roots, name), (SslMode::Require, &file, false));
        // require without: the system roots, so the name is checked too.
        let (_, mode, roots, name) = tls("postgresql://app@db.example/auth?sslmode=require");
        assert_eq!((mode, roots, name), (SslMode::Require, Roots::System, true));
        let (_, mode, roots, name) = tls("postgresql://app@db.example/auth?sslmode=verify-full");
        assert_eq!(
            (mode, roots, name),
            (SslMode::VerifyFull, Roots::System, true)
        );
        // sslrootcert=system implies verify-full.
        let (_, mode, roots, name) = tls("postgresql://app@db.example/auth?sslrootcert=system");
        assert_eq!(
            (mode, roots, name),
            (SslMode::VerifyFull, Roots::System, true)
        );
        // The last sslmode wins, as in libpq.
        let (_, mode, ..) = tls(&format!("{base}&sslmode=disable&sslmode=verify-full"));
        assert_eq!(mode, SslMode::VerifyFull);
    }

    /// The key=value form, quoting and escapes included.
    #[test]
    fn key_value_form() {
        let url = format!(
            "host=db.example port=5433 user=app password='{PASSWORD} x' dbname = auth sslmode=verify-ca sslrootcert='/etc/my ca.pem' application_name=a\\ b"
        );
        let (config, mode, roots, name) = tls(&url);
        assert_eq!(
            (mode, roots, name),
            (
                SslMode::VerifyCa,
                Roots::File("/etc/my ca.pem".into()),
                false
            )
        );
        assert_eq!(
            config.get_password(),
            Some(format!("{PASSWORD} x").as_bytes())
        );
        assert_eq!(config.get_dbname(), Some("auth"));
        assert_eq!(config.get_application_name(), Some("a b"));
        assert_eq!(config.get_ports(), [5433]);
        let (config, plain) = plan("host=db.example user=app").unwrap();
        assert_eq!(plain, Transport::Plain);
        assert_eq!(config.get_user(), Some("app"));
    }

    /// A `?` in the (unencoded) password is the password's, as for
    /// tokio-postgres; the query starts after the `@`.
    #[test]
    fn query_starts_after_the_credentials() {
        let (config, mode, ..) =
            tls("postgresql://app:pa?ss@db.example/auth?sslmode=verify-full&connect_timeout=3");
        assert_eq!(mode, SslMode::VerifyFull);
        assert_eq!(config.get_password(), Some(&b"pa?ss"[..]));
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
    }

    /// Bad values: each error names database.url and the reason, and never
    /// the password.
    #[test]
    fn errors_name_the_reason_never_the_password() {
        let url = |q: &str| format!("postgresql://app:{PASSWORD}@db.example/auth?{q}");
        assert!(error(&url("sslmode=verify_full")).contains("unknown sslmode \"verify_full\""));
        assert!(error(&url("sslmode=Require")).contains("unknown sslmode"));
        let e = error(&format!(
            "postgresql://app:{PASSWORD}@/auth?host=/run/postgresql&sslmode=verify-full"
        ));
        assert!(
            e.contains("Unix socket") && e.contains("/run/postgresql"),
            "{e}"
        );
        let e = error(&format!(
            "host=/tmp user=app password={PASSWORD} sslmode=require"
        ));
        assert!(e.contains("Unix socket"), "{e}");
        let e = error(&format!(
            "postgresql://app:{PASSWORD}@/auth?sslmode=verify-full"
        ));
        assert!(e.contains("needs a host name"), "{e}");
        let e = error(&url("sslmode=verify-full&sslcert=/c.pem"));
        assert!(e.contains("sslcert and sslkey go together"), "{e}");
        let e = error(&url("sslrootcert=/ca.pem"));
        assert!(
            e.contains("sslrootcert is set") && e.contains("plaintext"),
            "{e}"
        );
        let e = error(&url("sslmode=prefer&sslrootcert=/ca.pem"));
        assert!(e.contains("sslmode=prefer means plaintext"), "{e}");
        let e = error(&url("sslmode=require&sslrootcert=system"));
        assert!(
            e.contains("sslmode=require may not be used with sslrootcert=system"),
            "{e}"
        );
        let e = error(&url("sslmode=verify-ca"));
        assert!(e.contains("verify-ca needs sslrootcert"), "{e}");
        // An unencoded `@` in the query: tokio-postgres would take
        // everything before it as credentials and never see the sslmode.
        let e = error(&format!(
            "postgresql://db.example/auth?sslmode=verify-full&password={PASSWORD}@x"
        ));
        assert!(
            e.contains("`sslmode=` is not where a parameter can be"),
            "{e}"
        );
        // tokio-postgres' own errors keep the password out too.
        let e = error(&format!(
            "postgresql://app:{PASSWORD}@db.example:port/auth?sslmode=verify-full"
        ));
        assert!(e.contains("invalid"), "{e}");
        let e = error(&url("sslmode=verify-full&nonsense=1"));
        assert!(e.contains("unknown option `nonsense`"), "{e}");
    }

    /// The certificate files are read at parse time; a missing or broken
    /// one is named.
    #[test]
    fn certificate_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-ca.pem");
        let url = |root: &Path| {
            format!(
                "postgresql://app:{PASSWORD}@localhost/auth?sslmode=verify-full&sslrootcert={}",
                root.display()
            )
        };
        let e = error(&url(&missing));
        assert!(
            e.contains("sslrootcert") && e.contains("missing-ca.pem"),
            "{e}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let e = error(&url(&garbage));
        assert!(
            e.contains("garbage.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let (ca, _) = ca("db tests");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let target = Target::parse(&url(&ca_file)).unwrap();
        assert_eq!(target.tokio_config().get_ssl_mode(), WireMode::Require);
        assert!(target.transport().summary().contains("ca.pem"));
        let e = error(&format!(
            "{}&sslcert={}&sslkey={}",
            url(&ca_file),
            ca_file.display(),
            missing.display()
        ));
        assert!(e.contains("sslkey") && e.contains("missing-ca.pem"), "{e}");
    }

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use std::path::Path;

    fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert, Issuer::new(params, key))
    }

    fn leaf(issuer: &Issuer<'_, KeyPair>, name: &str, expired: bool) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, issuer).unwrap().der().clone()
    }

    fn verifier(ca: &rcgen::Certificate) -> Arc<WebPkiServerVerifier> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::tls::provider())
            .build()
            .unwrap()
    }

    fn check(
        v: &dyn ServerCertVerifier,
        cert: &CertificateDer<'_>,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    /// verify-ca tolerates a certificate for another name, and nothing
    /// else: an unknown issuer and an expired certificate still fail, with
    /// or without the right name.
    #[test]
    fn verify_ca_forgives_only_the_name() {
        let (ca_cert, issuer) = ca("right");
        let (_, other) = ca("other");
        let full = verifier(&ca_cert);
        let ca_only = NameNotChecked(full.clone());
        let good = leaf(&issuer, "db.example", false);
        assert!(check(&*full, &good, "db.example").is_ok());
        assert!(check(&ca_only, &good, "db.example").is_ok());
        let e = check(&*full, &good, "elsewhere.example").unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{e:?}"
        );
        assert!(check(&ca_only, &good, "elsewhere.example").is_ok());
        let foreign = leaf(&other, "db.example", false);
        for name in ["db.example", "elsewhere.example"] {
            let e = check(&ca_only, &foreign, name).unwrap_err();
            assert_eq!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "{name}"
            );
        }
        let expired = leaf(&issuer, "db.example", true);
        for name in ["db.example", "elsewhere.example"] {
            let e = check(&ca_only, &expired, name).unwrap_err();
            assert!(
                matches!(
                    e,
                    rustls::Error::InvalidCertificate(
                        CertificateError::Expired | CertificateError::ExpiredContext { .. }
                    )
                ),
                "{name}: {e:?}"
            );
        }
    }
}
