//! TLS: the rustls pieces shared by the listener (terminating TLS at the
//! edge), the upstream clients (`https://` routes) and PostgreSQL.
//!
//! - [`pem`]: reading certificate chains, keys and CA bundles from PEM
//!   files, with errors that name the file and the reason;
//! - [`server`]: the listener's config (SNI certificates, versions, suites,
//!   client certificates, ALPN) and the [`server::Acceptor`] reload swaps;
//! - [`provider`]: the one crypto provider (aws-lc-rs), as the JWTs use.

pub mod pem;
pub mod server;
pub mod upstream;

use std::sync::Arc;

/// The crypto provider every TLS config is built with: aws-lc-rs, the
/// library the JWT signatures already use.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client certificate the listener verified (`server.tls.client_ca`),
/// put into the request's extensions; the plugins may read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject's distinguished name, RFC 4514 form (`CN=ops,O=cinema`).
    pub subject: Arc<str>,
}
