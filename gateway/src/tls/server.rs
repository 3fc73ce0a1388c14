//! The listener's TLS: the rustls `ServerConfig` built from `[server.tls]`
//! (certificates chosen by SNI, protocol versions, cipher suites, client
//! certificates, ALPN `h2` and `http/1.1`), swapped whole on reload.
//!
//! Reload keeps connections: the [`Acceptor`] holds the current config in
//! an `ArcSwap`; each handshake takes the config current at accept, so new
//! connections get the new certificates and open ones finish on theirs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use super::PeerCertificate;
use crate::config::{ClientAuth, TlsConfig, TlsVersion};

/// What was wrong, and under which key of `[server.tls]`.
#[derive(Debug)]
pub struct TlsError {
    /// Relative to `server.tls`: `cert`, `certs[1].key`, `cipher_suites`...
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server.tls.{}: {}", self.key, self.reason)
    }
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> TlsError {
    TlsError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The ALPN protocols offered, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Builds the listener's rustls config from `tls`; relative paths start at
/// `base`. Every file is read now: an error names its key and file.
pub fn build(tls: &TlsConfig, base: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(provider_with_suites(&tls.cipher_suites)?);
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let resolver = SniResolver::load(tls, base, &provider)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| {
            err(
                "cipher_suites",
                format!("no suite for the versions allowed: {e}"),
            )
        })?;
    let builder = match (&tls.client_ca, tls.client_auth) {
        (None, None) => builder.with_no_client_auth(),
        (None, Some(_)) => {
            return Err(err(
                "client_auth",
                "needs client_ca (the CAs to verify against)",
            ));
        }
        (Some(ca), mode) => {
            let roots = super::pem::roots(&base.join(ca)).map_err(|e| err("client_ca", e))?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match mode.unwrap_or(ClientAuth::Optional) {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| err("client_ca", format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// aws-lc-rs with only the cipher suites named (all of its defaults when
/// `names` is empty).
fn provider_with_suites(names: &[String]) -> Result<CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if names.is_empty() {
        return Ok(provider);
    }
    let known: Vec<String> = provider
        .cipher_suites
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    let mut chosen = Vec::new();
    for name in names {
        let Some(i) = known.iter().position(|k| k.eq_ignore_ascii_case(name)) else {
            return Err(err(
                "cipher_suites",
                format!("unknown suite {name:?}; known: {}", known.join(", ")),
            ));
        };
        chosen.push(provider.cipher_suites[i]);
    }
    provider.cipher_suites = chosen;
    Ok(provider)
}

/// Chooses the certificate by SNI: an exact host, then a `*.` wildcard for
/// the first label, then the default (`server.tls.cert`). No match and no
/// default: the handshake is refused.
#[derive(Debug)]
struct SniResolver {
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    fn load(tls: &TlsConfig, base: &Path, provider: &CryptoProvider) -> Result<Self, TlsError> {
        let default = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some(certified(base, cert, key, provider, "")?),
            (None, None) => None,
            (Some(_), None) => return Err(err("key", "cert needs its key")),
            (None, Some(_)) => return Err(err("cert", "key needs its cert")),
        };
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, entry) in tls.certs.iter().enumerate() {
            let at = format!("certs[{i}].");
            let ck = certified(base, &entry.cert, &entry.key, provider, &at)?;
            if entry.hosts.is_empty() {
                return Err(err(format!("{at}hosts"), "must name at least one host"));
            }
            for host in &entry.hosts {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                let (map, name) = match host.strip_prefix("*.") {
                    Some(suffix) => (&mut wildcard, suffix.to_string()),
                    None => (&mut exact, host.clone()),
                };
                if name.is_empty() || name.contains('*') || name.contains('/') || name.contains(':')
                {
                    return Err(err(
                        format!("{at}hosts"),
                        format!("{host:?} is not a host name"),
                    ));
                }
                if map.insert(name, ck.clone()).is_some() {
                    return Err(err(
                        format!("{at}hosts"),
                        format!("{host:?} is listed twice"),
                    ));
                }
            }
        }
        if default.is_none() && exact.is_empty() && wildcard.is_empty() {
            return Err(err(
                "cert",
                "no certificate: set cert and key, or [[server.tls.certs]]",
            ));
        }
        Ok(Self {
            default,
            exact,
            wildcard,
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls hands over the SNI name validated and lower-cased.
        if let Some(name) = hello.server_name() {
            if let Some(ck) = self.exact.get(name) {
                return Some(ck.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(ck) = self.wildcard.get(parent)
            {
                return Some(ck.clone());
            }
        }
        self.default.clone()
    }
}

/// A chain and its key, checked to belong together.
fn certified(
    base: &Path,
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
    at: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = super::pem::certs(&base.join(cert)).map_err(|e| err(format!("{at}cert"), e))?;
    let der = super::pem::key(&base.join(key)).map_err(|e| err(format!("{at}key"), e))?;
    let ck = CertifiedKey::from_der(chain, der, provider).map_err(|e| {
        err(
            format!("{at}key"),
            format!(
                "{}: {e} (is it the key of {}?)",
                key.display(),
                cert.display()
            ),
        )
    })?;
    Ok(Arc::new(ck))
}

/// The listener's side of TLS: the config new handshakes use, swapped on
/// reload, and the `Strict-Transport-Security` value for its answers.
#[derive(Debug)]
pub struct Acceptor {
    config: ArcSwap<rustls::ServerConfig>,
    hsts: ArcSwap<Option<axum::http::HeaderValue>>,
}

impl Acceptor {
    /// Built from `tls` (see [`build`]).
    pub fn new(tls: &TlsConfig, base: &Path) -> Result<Arc<Self>, TlsError> {
        let config = build(tls, base)?;
        Ok(Arc::new(Self {
            config: ArcSwap::new(config),
            hsts: ArcSwap::new(Arc::new(hsts(tls)?)),
        }))
    }

    /// Builds what [`Acceptor::install`] swaps in; nothing changes yet, so
    /// a reload can prepare everything before it changes anything.
    pub fn prepare(tls: &TlsConfig, base: &Path) -> Result<Prepared, TlsError> {
        Ok(Prepared {
            config: build(tls, base)?,
            hsts: hsts(tls)?,
        })
    }

    /// New handshakes use `prepared` from now on; open connections keep
    /// the config they began with.
    pub fn install(&self, prepared: Prepared) {
        self.config.store(prepared.config);
        self.hsts.store(Arc::new(prepared.hsts));
    }

    /// A handshake with the current config.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// The `Strict-Transport-Security` value, if any.
    pub fn hsts(&self) -> Option<axum::http::HeaderValue> {
        self.hsts.load().as_ref().clone()
    }
}

fn hsts(tls: &TlsConfig) -> Result<Option<axum::http::HeaderValue>, TlsError> {
    let value = tls.hsts.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let lower = value.to_ascii_lowercase();
    if !lower.split(';').any(|d| d.trim().starts_with("max-age=")) {
        return Err(err(
            "hsts",
            "needs max-age=SECONDS (RFC 6797), or \"\" for none",
        ));
    }
    axum::http::HeaderValue::from_str(value)
        .map(Some)
        .map_err(|_| err("hsts", "not a valid header value"))
}

/// A listener config built and checked, ready to install.
pub struct Prepared {
    config: Arc<rustls::ServerConfig>,
    hsts: Option<axum::http::HeaderValue>,
}

/// What one TLS connection negotiated, put into each of its requests'
/// extensions (with the [`PeerCertificate`], if one was verified).
#[derive(Clone, Debug)]
pub struct TlsConnection {
    /// `TLSv1_3`, `TLSv1_2`.
    pub version: &'static str,
    /// The SNI host the client asked for.
    pub server_name: Option<Arc<str>>,
}

/// Whether a request (its extensions) came over this gateway's TLS.
pub fn is_tls(extensions: &axum::http::Extensions) -> bool {
    extensions.get::<TlsConnection>().is_some()
}

/// Reads what a finished handshake negotiated.
pub fn negotiated(conn: &rustls::ServerConnection) -> (TlsConnection, Option<PeerCertificate>) {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1_3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1_2",
        _ => "unknown",
    };
    let peer = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| subject(leaf.as_ref()))
        .map(|subject| PeerCertificate {
            subject: subject.into(),
        });
    (
        TlsConnection {
            version,
            server_name: conn.server_name().map(Arc::from),
        },
        peer,
    )
}

/// The subject of a DER certificate in RFC 4514 form (the last RDN first,
/// `,` between RDNs, `+` inside one, special characters escaped), as
/// nginx's `$ssl_client_s_dn` prints it.
pub fn subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let name = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                        .map_or_else(|_| attr.attr_type().to_id_string(), str::to_string);
                    let value = match attr.as_str() {
                        Ok(s) => escape_rfc4514(s),
                        Err(_) => format!("#{}", hex(attr.attr_value().data)),
                    };
                    format!("{name}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

fn escape_rfc4514(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
            continue;
        }
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Special characters in a subject are escaped, so a crafted CN cannot
    /// pose as another RDN (`CN=a,O=admins` as one value).
    #[test]
    fn rfc4514_escaping() {
        assert_eq!(escape_rfc4514("ops"), "ops");
        assert_eq!(escape_rfc4514("a,O=admins"), "a\\,O\\=admins");
        assert_eq!(escape_rfc4514(" #x "), "\\ #x\\ ");
        assert_eq!(escape_rfc4514("#x"), "\\#x");
    }

    /// Unknown suites are refused naming the known ones; known ones are
    /// taken case-insensitively.
    #[test]
    fn cipher_suites_by_name() {
        let e = provider_with_suites(&["TLS_RSA_WITH_RC4_128_SHA".into()]).unwrap_err();
        assert_eq!(e.key, "cipher_suites");
        assert!(
            e.reason.contains("TLS13_AES_128_GCM_SHA256"),
            "{}",
            e.reason
        );
        let p = provider_with_suites(&["tls13_aes_256_gcm_sha384".into()]).unwrap();
        assert_eq!(p.cipher_suites.len(), 1);
    }

    /// `client_auth` without `client_ca`, a cert without its key, no
    /// certificate at all and a bad HSTS value are each refused by key.
    #[test]
    fn config_errors_name_the_key() {
        let base = Path::new(".");
        let mut tls = TlsConfig::default();
        assert_eq!(build(&tls, base).unwrap_err().key, "cert");
        tls.cert = Some("x.pem".into());
        assert_eq!(build(&tls, base).unwrap_err().key, "key");
        tls.key = Some("x.key".into());
        let e = build(&tls, base).unwrap_err();
        assert!(e.key == "cert" && e.reason.contains("x.pem"), "{e}");
        let tls = TlsConfig {
            hsts: "includeSubDomains".into(),
            ..TlsConfig::default()
        };
        assert_eq!(hsts(&tls).unwrap_err().key, "hsts");
        let tls = TlsConfig {
            client_auth: Some(ClientAuth::Required),
            cert: Some("x".into()),
            key: Some("y".into()),
            ..TlsConfig::default()
        };
        let e = build(&tls, base).unwrap_err();
        assert!(matches!(e.key.as_str(), "cert" | "client_auth"), "{e}");
    }
}
