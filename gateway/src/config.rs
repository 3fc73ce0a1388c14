//! Configuration: `gateway.toml` parsed into typed structs, then environment
//! overrides for deploy-specific values and secrets.
//!
//! Every section rejects unknown keys, and every error names the file, the key
//! and the reason, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::plugins::{HostConfig, PluginSpec};

mod email;
mod federation;
mod mfa;
pub use email::{ENV_SMTP_PASSWORD, EmailConfig};
pub use federation::{
    ClaimMapping, IdentityProviderConfig, ProviderKind, TokenAuth, is_safe_endpoint,
};
pub use mfa::MfaConfig;

/// Environment variables that override the file (deploy-specific values and secrets).
pub const ENV_DATABASE_URL: &str = "AUTHGW_DATABASE_URL";
pub const ENV_LISTEN: &str = "AUTHGW_LISTEN";
pub const ENV_KEYS_DIR: &str = "AUTHGW_KEYS_DIR";
pub const ENV_LOG: &str = "AUTHGW_LOG";
pub const ENV_ADMIN_LISTEN: &str = "AUTHGW_ADMIN_LISTEN";

/// A configuration error: which file, which key, why.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {key}: {reason}")]
pub struct ConfigError {
    pub origin: String,
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub tokens: TokenConfig,
    pub passwords: PasswordConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    /// The forward-auth endpoints (`/api/v1/authz/*`): see `forward_auth`.
    pub authz: AuthzConfig,
    /// Who may call token introspection.
    pub introspection: IntrospectionConfig,
    pub revocation: RevocationConfig,
    /// Browsers on other origins (`cors`); see [`CorsConfig`].
    pub cors: CorsConfig,
    /// Cookie sessions for browser apps; see [`AuthConfig`].
    pub auth: AuthConfig,
    /// Account mail: verification, password reset, notices ([`EmailConfig`]).
    pub email: EmailConfig,
    /// Second factors: TOTP and recovery codes ([`MfaConfig`]).
    pub mfa: MfaConfig,
    /// Sign-in with OpenID Connect / OAuth 2.0 providers.
    pub identity_providers: Vec<IdentityProviderConfig>,
    /// The edge proxy's routes; see [`RouteConfig`].
    pub routes: Vec<RouteConfig>,
    /// Policy plugins routes may name.
    pub plugins: Vec<PluginSpec>,
    /// Settings of the WebAssembly runtime shared by every plugin.
    pub plugin_host: HostConfig,
    /// The file this config came from (relative plugin paths start at its
    /// directory; reload reads it again). Not a config key.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Also take the access token from this cookie when there is no
    /// `Authorization: Bearer` header.
    pub token_cookie: Option<String>,
    /// Memory for verified tokens (token text plus claims), in bytes. A token
    /// seen again costs a lookup instead of a signature check until its `exp`.
    pub token_cache_bytes: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            token_cookie: None,
            token_cache_bytes: 16 * 1024 * 1024,
        }
    }
}

/// CORS for browser apps on other origins (docs/browser.md): on the Auth
/// API and on proxied routes with `cors = true`. Empty `allowed_origins`:
/// no CORS headers at all (same-origin only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins (`scheme://host[:port]`, as browsers send them). `"*"`
    /// only while `allow_credentials = false`; `"null"` never. Also the
    /// origins the CSRF check accepts besides the gateway's own.
    pub allowed_origins: Vec<String>,
    /// `Access-Control-Allow-Credentials: true`: the browser sends cookies
    /// and `Authorization` cross-origin.
    pub allow_credentials: bool,
    pub allowed_methods: Vec<String>,
    /// Request headers a page may send (`Access-Control-Allow-Headers`).
    pub allowed_headers: Vec<String>,
    /// Response headers a page may read (`Access-Control-Expose-Headers`).
    pub exposed_headers: Vec<String>,
    /// How long a browser may cache a preflight's answer.
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self {
            allowed_origins: Vec::new(),
            allow_credentials: true,
            allowed_methods: names(&["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
            allowed_headers: names(&[
                "authorization",
                "content-type",
                "x-requested-with",
                "x-request-id",
            ]),
            exposed_headers: names(&["x-request-id", "retry-after", "www-authenticate"]),
            max_age: Duration::from_secs(600),
        }
    }
}

/// Cookie sessions (docs/browser.md): a client that logs in with `"cookie":
/// true` gets its refresh token as an HttpOnly cookie instead of in the JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The cookies' `Secure` attribute (and their `__Secure-`/`__Host-`
    /// names). `false` only while `server.listen` is a loopback address:
    /// development on `http://localhost`.
    pub cookie_secure: bool,
    pub cookie_same_site: SameSite,
    /// Also set the access token as an HttpOnly cookie (`Path=/`), which the
    /// edge proxy reads as `proxy.token_cookie`, for server-rendered pages.
    pub access_cookie: bool,
    /// Refuse logins (403 `email_not_verified`) until the account's address
    /// is verified; administrators are exempt, and signup needs an email.
    pub require_verified_email: bool,
    /// Refuse administrators' tokens on the admin API (401 `mfa_required`)
    /// unless their session passed a second factor.
    pub require_mfa_for_admins: bool,
    /// The frontend URLs a social-login flow may return to (exact match).
    pub allowed_redirects: Vec<String>,
    /// This gateway's external base URL (`https://auth.example.com`), for
    /// the callback URL providers send the browser back to. Unset: the
    /// request's own scheme and `Host`.
    pub public_url: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            cookie_secure: true,
            cookie_same_site: SameSite::Strict,
            access_cookie: false,
            require_verified_email: false,
            require_mfa_for_admins: false,
            allowed_redirects: Vec::new(),
            public_url: None,
        }
    }
}

/// The cookies' `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    #[default]
    Strict,
    Lax,
    /// Sent cross-site too (needs `cookie_secure`); the CSRF check still applies.
    None,
}

/// The forward-auth endpoints (`/api/v1/authz/*`, docs/forward-auth.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthzConfig {
    /// Where `/api/v1/authz/forward-auth` sends a browser (`Accept:
    /// text/html`) that is not logged in: a 302 to this URL with the original
    /// URL in the `redirect_param` query parameter. Unset: a 401 problem.
    pub login_url: Option<String>,
    /// The query parameter of `login_url` that carries the original URL.
    pub redirect_param: String,
}

impl Default for AuthzConfig {
    fn default() -> Self {
        Self {
            login_url: None,
            redirect_param: "rd".into(),
        }
    }
}

/// Callers of `POST /api/v1/auth/introspect` (RFC 7662 §2.1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntrospectionConfig {
    /// The clients allowed to introspect; none: every call gets 401.
    pub clients: Vec<IntrospectionClient>,
}

/// One caller of introspection, authenticated by HTTP Basic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionClient {
    /// The Basic user name: non-empty, no ':'.
    pub id: String,
    /// SHA-256 of the secret, 64 hex digits (`authgw introspection new-secret`).
    pub secret_sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The admin listener (`/metrics`, `POST /reload`). Keep it private.
    pub listen: SocketAddr,
    /// Serve the admin listener at all.
    pub enabled: bool,
    /// Terminate TLS on the admin listener too, with `[server.tls]`'s
    /// certificates and client-certificate rules.
    pub tls: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            enabled: true,
            tls: false,
        }
    }
}

/// How a route treats the access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// A valid token is needed: 401 without one.
    #[default]
    Required,
    /// A valid token adds identity headers; without one (or with a bad one)
    /// the request goes on as anonymous.
    Optional,
    /// No token is looked at; no identity headers.
    Public,
}

/// What a route does with an encoded slash or backslash (`%2F`, `%5C`) in
/// the request path (see `proxy::path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashes {
    /// 400 `invalid_path`: the upstream might decode it into a separator.
    #[default]
    Reject,
    /// Passed through unchanged (upper-cased), for upstreams that need them
    /// and do not decode them before routing.
    Keep,
}

/// One or several values: `upstream = "http://a"` or `upstream = ["http://a", "http://b"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// No upstream: a decision-only route (forward-auth).
impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name: in metrics, logs and the plugins' request record.
    pub name: String,
    /// Path prefix; the longest matching prefix wins.
    pub prefix: String,
    /// Only requests for this host (the Host header, without port).
    #[serde(default)]
    pub host: Option<String>,
    /// Only these methods (others fall through to shorter prefixes).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// `http(s)://host:port[/base]`, one or several (round-robin; https
    /// verified, see the `tls_*` keys). None: the
    /// route only answers forward-auth decisions (`/api/v1/authz/*`), and a
    /// proxied request that lands on it gets a 404 problem.
    #[serde(default)]
    pub upstream: OneOrMany,
    #[serde(default)]
    pub auth: AuthMode,
    /// Remove `prefix` from the path before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Pass the client's `Authorization` header (or token cookie) upstream.
    #[serde(default)]
    pub forward_authorization: bool,
    /// Keep the client's Host header instead of the upstream's.
    #[serde(default)]
    pub preserve_host: bool,
    /// Let `Upgrade: websocket` requests through (no other upgrade ever passes).
    #[serde(default)]
    pub websocket: bool,
    /// `%2F` / `%5C` in the path: "reject" (400) or "keep" (passed unchanged).
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
    /// CORS from `[cors]` on this route: preflights are answered by authgw
    /// (never forwarded), the upstream's own `Access-Control-*` removed.
    #[serde(default)]
    pub cors: bool,
    /// Policy plugins run in order; the first deny wins.
    #[serde(default)]
    pub plugins: Vec<String>,
    /// `https://` upstreams: a PEM bundle of the CAs that may sign the
    /// upstream's certificate, instead of the system roots (relative to the
    /// config file's directory).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// `https://` upstreams: the name sent in SNI and verified in the
    /// certificate, instead of the upstream URL's host.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// `https://` upstreams: a client certificate chain (PEM) for mutual
    /// TLS with the service, with `tls_client_key`.
    #[serde(default)]
    pub tls_client_cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, SEC1 or PKCS#1) of `tls_client_cert`.
    #[serde(default)]
    pub tls_client_key: Option<PathBuf>,
    /// `https://` upstreams: offer HTTP/2 in ALPN (HTTP/1.1 otherwise).
    #[serde(default)]
    pub upstream_http2: bool,
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Time from sending the request to the upstream's response headers.
    #[serde(default = "default_response_timeout", deserialize_with = "duration")]
    pub response_timeout: Duration,
    /// Longest pause between two chunks of the upstream's response body, and
    /// longest a WebSocket tunnel stays open without a byte either way.
    #[serde(default = "default_idle_timeout", deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// How long an idle pooled upstream connection is kept; keep it below
    /// the upstream's own keep-alive timeout.
    #[serde(default = "default_pool_idle_timeout", deserialize_with = "duration")]
    pub pool_idle_timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_response_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(4)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    /// How long a client may take to send a request's headers.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Networks (CIDRs) of the proxies in front of authgw. From such a peer
    /// the client is the right-most `X-Forwarded-For` entry that is not a
    /// trusted proxy, and its forwarding headers are kept; from any other
    /// peer they are dropped. Empty: no peer is trusted. A bare address is
    /// one host (`/32`, `/128`).
    #[serde(deserialize_with = "cidrs")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Deprecated alias: `true` trusts every peer (0.0.0.0/0 and ::/0, the
    /// old behaviour), `false` none. Use `trusted_proxies`.
    pub trust_forwarded_for: Option<bool>,
    /// Client connections open at once on the main listener; past it a new
    /// connection is closed at accept and counted. 0: no bound.
    pub max_connections: usize,
    /// How long an Auth API request body may take to arrive in full; past
    /// it, 408.
    #[serde(deserialize_with = "duration")]
    pub body_read_timeout: Duration,
    /// HTTP/2: PING a client silent for this long...
    #[serde(deserialize_with = "duration")]
    pub http2_keepalive_interval: Duration,
    /// ...and close the connection when the PING is not answered in this long.
    #[serde(deserialize_with = "duration")]
    pub http2_keepalive_timeout: Duration,
    /// HTTP/2: close a connection with no request in flight for this long.
    #[serde(deserialize_with = "duration")]
    pub http2_idle_timeout: Duration,
    /// Terminate TLS on `listen` (absent: plain HTTP); see [`TlsConfig`].
    pub tls: Option<TlsConfig>,
    /// The async runtime `authgw serve` runs on ([`RuntimeFlavor`]).
    pub runtime: RuntimeFlavor,
}

/// `server.runtime`: tokio's scheduler for `authgw serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeFlavor {
    /// current-thread when the process may use one CPU (its affinity, a
    /// container's quota), else thread-per-core.
    #[default]
    Auto,
    /// One worker thread per CPU, tasks stolen between them.
    MultiThread,
    /// Every task on one thread (the blocking pool beside it, as always).
    CurrentThread,
    /// One current-thread runtime per CPU, each accepting on its own
    /// `SO_REUSEPORT` socket of the main listener ([`crate::cores`]).
    ThreadPerCore,
}

/// `[server.tls]`: the listener speaks HTTPS (HTTP/1.1 and, by ALPN, h2).
/// Files are PEM, relative to the config file's directory; SIGHUP and
/// `authgw reload` read them again (new handshakes get the new
/// certificates, open connections keep theirs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The default certificate chain (leaf first), served when no
    /// `[[server.tls.certs]]` entry names the SNI host (or there is no SNI).
    pub cert: Option<PathBuf>,
    /// Its private key: PKCS#8, SEC1 (EC) or PKCS#1 (RSA).
    pub key: Option<PathBuf>,
    /// More certificates, chosen by SNI: exact hosts or `*.example.org`.
    pub certs: Vec<TlsCertConfig>,
    /// Oldest protocol version accepted: "1.2" or "1.3".
    pub min_version: TlsVersion,
    /// Cipher suites allowed, by their IANA names
    /// (`TLS13_AES_128_GCM_SHA256`, `TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384`...).
    /// Empty: rustls's defaults (AEAD with forward secrecy only).
    pub cipher_suites: Vec<String>,
    /// CAs (PEM bundle) that sign client certificates. Set: clients may
    /// present one, and a verified subject is given to the plugins.
    pub client_ca: Option<PathBuf>,
    /// "optional" (default with `client_ca`) or "required" (the handshake
    /// fails without a valid client certificate).
    pub client_auth: Option<ClientAuth>,
    /// `Strict-Transport-Security` on every answer over TLS; "" sends none.
    pub hsts: String,
    /// A plain-HTTP listener beside the TLS one: `/healthz` and `/readyz`
    /// answered, everything else redirected (or refused: `http_redirect`).
    pub http_listen: Option<SocketAddr>,
    /// On `http_listen`: 308 to the `https://` URL (true), or a 403
    /// `https_required` problem (false; an API client that sent a token in
    /// clear learns of it instead of silently following).
    pub http_redirect: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            certs: Vec::new(),
            min_version: TlsVersion::V1_2,
            cipher_suites: Vec::new(),
            client_ca: None,
            client_auth: None,
            hsts: "max-age=31536000".into(),
            http_listen: None,
            http_redirect: true,
        }
    }
}

/// `[[server.tls.certs]]`: a certificate for the SNI names in `hosts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertConfig {
    /// Host names (lower case; `*.example.org` covers one label).
    pub hosts: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The oldest TLS version the listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

/// Whether the listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Asked for; a connection without one is served, one with an invalid
    /// one fails the handshake.
    Optional,
    /// The handshake fails without a valid client certificate.
    Required,
}

impl ServerConfig {
    /// The trusted proxies in effect (the deprecated alias included).
    pub fn trusted(&self) -> crate::client_ip::TrustedProxies<'_> {
        if self.trust_forwarded_for == Some(true) {
            crate::client_ip::TrustedProxies::everyone()
        } else {
            crate::client_ip::TrustedProxies::new(&self.trusted_proxies)
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
            trust_forwarded_for: None,
            max_connections: 10_000,
            body_read_timeout: Duration::from_secs(10),
            http2_keepalive_interval: Duration::from_secs(20),
            http2_keepalive_timeout: Duration::from_secs(10),
            http2_idle_timeout: Duration::from_secs(60),
            tls: None,
            runtime: RuntimeFlavor::Auto,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
    /// Connections in the pool; also the number of queries in flight at once.
    pub pool_size: u32,
    /// How long a query waits for a connection before failing with 503.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgresql://postgres@127.0.0.1:5432/authgw".into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Signing algorithms the gateway issues tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum SigningAlgorithm {
    #[serde(rename = "EdDSA")]
    #[value(name = "EdDSA")]
    EdDsa,
    #[serde(rename = "ES256")]
    #[value(name = "ES256")]
    Es256,
    #[serde(rename = "RS256")]
    #[value(name = "RS256")]
    Rs256,
}

impl SigningAlgorithm {
    /// The JOSE name: "EdDSA", "ES256", "RS256".
    pub fn name(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDsa => "EdDSA",
            SigningAlgorithm::Es256 => "ES256",
            SigningAlgorithm::Rs256 => "RS256",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    pub issuer: String,
    pub audience: String,
    /// Algorithm of keys made by `authgw keys generate`.
    pub algorithm: SigningAlgorithm,
    pub keys_dir: PathBuf,
    #[serde(deserialize_with = "duration")]
    pub access_ttl: Duration,
    #[serde(deserialize_with = "duration")]
    pub refresh_ttl: Duration,
    /// A consumed refresh token presented again within this window gets its
    /// successor again (racing tabs, a retry after a lost answer; 409 if the
    /// successor was rotated further); after it, the session is revoked.
    #[serde(deserialize_with = "duration")]
    pub refresh_reuse_grace: Duration,
    /// Tolerated clock difference when checking `exp` and `nbf`.
    #[serde(deserialize_with = "duration")]
    pub clock_skew: Duration,
    /// A session's absolute lifetime from its login: rotation extends the
    /// refresh token, never the session beyond this.
    #[serde(deserialize_with = "duration")]
    pub session_max_age: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            issuer: "authgw".into(),
            audience: "cinema".into(),
            algorithm: SigningAlgorithm::EdDsa,
            keys_dir: PathBuf::from("keys"),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_reuse_grace: Duration::from_secs(30),
            clock_skew: Duration::from_secs(30),
            session_max_age: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// How fresh the in-memory revocation set must be, and what happens when it
/// is not (see the README, "Revocation staleness").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// The set is stale when the LISTEN connection last proved itself (a
    /// probe answered, or the full load on connect) longer ago than this.
    #[serde(deserialize_with = "duration")]
    pub max_staleness: Duration,
    /// What a stale set does to `/readyz`.
    pub when_stale: WhenStale,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self {
            max_staleness: Duration::from_secs(5),
            when_stale: WhenStale::Serve,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WhenStale {
    /// Keep serving; the gauge `authgw_revocation_sync_age_seconds` and a
    /// warning say so. A missed revocation lasts at most one access-token
    /// lifetime. Readiness survives a database outage.
    #[default]
    Serve,
    /// `/readyz` answers 503 while stale, so the load balancer routes around
    /// this instance; in a database outage every instance goes unready.
    Unready,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// argon2id memory cost in KiB (OWASP: 19456).
    pub memory_kib: u32,
    /// argon2id iterations (OWASP: 2).
    pub iterations: u32,
    /// argon2id lanes (OWASP: 1).
    pub parallelism: u32,
    /// Hashes computed at once; 0 means the number of CPUs.
    pub max_concurrent: usize,
    /// Hash requests allowed to wait for a slot; beyond it, 503 with Retry-After.
    pub max_queue: usize,
    /// How the hashing threads share a CPU with the threads serving requests.
    pub priority: HashingPriority,
}

/// `passwords.priority`: the CPU scheduling of the hashing threads (Linux;
/// elsewhere every value behaves as `normal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HashingPriority {
    /// `SCHED_IDLE`: a hash runs on CPU time no request-serving thread
    /// wants, so a login flood cannot slow the proxy down. While the CPUs
    /// are saturated by other work, logins wait (up to the queue bound).
    #[default]
    Idle,
    /// `SCHED_BATCH` at nice 19: hashes get a small share of a busy CPU.
    Low,
    /// The same priority as every other thread of the process.
    Normal,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 0,
            max_queue: 64,
            priority: HashingPriority::Idle,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Sustained requests per minute per client IP on signup, login and refresh.
    pub auth_per_minute: u32,
    /// Requests a client IP may make in a burst before the rate applies.
    pub auth_burst: u32,
    /// Failed password checks for one account from one client (an IPv4
    /// address or an IPv6 /64) before that pair is locked.
    pub lockout_threshold: u32,
    /// First lock of a pair; it doubles with each further failure.
    #[serde(deserialize_with = "duration")]
    pub lockout_base: Duration,
    /// Longest lock.
    #[serde(deserialize_with = "duration")]
    pub lockout_max: Duration,
    /// Failed password checks for one account from all clients together
    /// before every check of it is slowed by `account_delay`. Never locks.
    pub account_threshold: u32,
    /// The wait added to each password check of an account past
    /// `account_threshold`.
    #[serde(deserialize_with = "duration")]
    pub account_delay: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            auth_per_minute: 60,
            auth_burst: 20,
            lockout_threshold: 5,
            lockout_base: Duration::from_secs(30),
            lockout_max: Duration::from_secs(15 * 60),
            account_threshold: 100,
            account_delay: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. "info" or "gateway=debug,info".
    pub level: String,
    /// "text" or "json" (one JSON object per line).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(d)?;
    parse_duration(&raw).map_err(serde::de::Error::custom)
}

/// Parses "15m", "30d", "10s", "1h 30m".
/// CIDRs (`10.0.0.0/8`, `fd00::/8`) or bare addresses (one host each).
fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "invalid network {s:?}: expected a CIDR such as \"10.0.0.0/8\" or an address"
                    ))
                })
        })
        .collect()
}

pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|e| {
        format!("invalid duration {raw:?} ({e}); write e.g. \"10s\", \"15m\", \"30d\"")
    })
}

impl Config {
    /// Loads the file at `path` if it exists (a missing file is an error only when
    /// `required`), then applies environment overrides, then validates.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let mut config = match std::fs::read_to_string(path) {
            Ok(raw) => Self::parse(&raw, &origin)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Self::default(),
            Err(e) => {
                return Err(ConfigError {
                    origin,
                    key: "(file)".into(),
                    reason: format!("cannot read: {e}"),
                });
            }
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        // Before validation: relative TLS files start at the file's directory.
        config.source = Some(path.to_path_buf());
        config.validate(&origin)?;
        Ok(config)
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(raw: &str, origin: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(raw).map_err(|e| ConfigError {
            origin: origin.into(),
            key: "(syntax)".into(),
            reason: one_line(e.message()),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError {
                origin: origin.into(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                reason: one_line(e.inner().message()),
            }
        })
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(url) = get(ENV_DATABASE_URL) {
            self.database.url = url;
        }
        if let Some(listen) = get(ENV_LISTEN) {
            self.server.listen = listen.parse().map_err(|e| ConfigError {
                origin: ENV_LISTEN.into(),
                key: "server.listen".into(),
                reason: format!("invalid socket address {listen:?}: {e}"),
            })?;
        }
        if let Some(listen) = get(ENV_ADMIN_LISTEN) {
            self.admin.listen = listen.parse().map_err(|e| ConfigError {
                origin: ENV_ADMIN_LISTEN.into(),
                key: "admin.listen".into(),
                reason: format!("invalid socket address {listen:?}: {e}"),
            })?;
        }
        if let Some(dir) = get(ENV_KEYS_DIR) {
            self.tokens.keys_dir = PathBuf::from(dir);
        }
        if let Some(level) = get(ENV_LOG) {
            self.log.level = level;
        }
        Ok(())
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |key: &str, reason: &str| ConfigError {
            origin: origin.into(),
            key: key.into(),
            reason: reason.into(),
        };
        if self.database.pool_size == 0 {
            return Err(fail("database.pool_size", "must be at least 1"));
        }
        if self.tokens.access_ttl < Duration::from_secs(10) {
            return Err(fail("tokens.access_ttl", "must be at least 10s"));
        }
        if self.tokens.refresh_ttl <= self.tokens.access_ttl {
            return Err(fail(
                "tokens.refresh_ttl",
                "must be longer than tokens.access_ttl",
            ));
        }
        if self.tokens.session_max_age < self.tokens.access_ttl {
            return Err(fail(
                "tokens.session_max_age",
                "must be at least tokens.access_ttl",
            ));
        }
        if self.revocation.max_staleness < Duration::from_millis(100) {
            return Err(fail("revocation.max_staleness", "must be at least 100ms"));
        }
        if self.tokens.issuer.is_empty() {
            return Err(fail("tokens.issuer", "must not be empty"));
        }
        if self.tokens.audience.is_empty() {
            return Err(fail("tokens.audience", "must not be empty"));
        }
        if self.passwords.memory_kib < 8 * self.passwords.parallelism.max(1) {
            return Err(fail("passwords.memory_kib", "too small for argon2"));
        }
        if self.passwords.iterations == 0 || self.passwords.parallelism == 0 {
            return Err(fail(
                "passwords.iterations",
                "iterations and parallelism must be at least 1",
            ));
        }
        if self.limits.auth_per_minute == 0 || self.limits.auth_burst == 0 {
            return Err(fail(
                "limits.auth_per_minute",
                "auth_per_minute and auth_burst must be at least 1",
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(fail("server.max_body_bytes", "must be at least 1024"));
        }
        if self.server.trust_forwarded_for.is_some() && !self.server.trusted_proxies.is_empty() {
            return Err(fail(
                "server.trust_forwarded_for",
                "deprecated alias of server.trusted_proxies; set only trusted_proxies",
            ));
        }
        for (key, d) in [
            ("server.body_read_timeout", self.server.body_read_timeout),
            (
                "server.http2_keepalive_interval",
                self.server.http2_keepalive_interval,
            ),
            (
                "server.http2_keepalive_timeout",
                self.server.http2_keepalive_timeout,
            ),
            ("server.http2_idle_timeout", self.server.http2_idle_timeout),
            ("limits.lockout_base", self.limits.lockout_base),
        ] {
            if d.is_zero() {
                return Err(fail(key, "must be above 0"));
            }
        }
        if self.limits.lockout_threshold == 0 {
            return Err(fail("limits.lockout_threshold", "must be at least 1"));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, c) in self.introspection.clients.iter().enumerate() {
            let key = format!("introspection.clients[{i}]");
            if c.id.is_empty() || c.id.contains(':') || !ids.insert(c.id.as_str()) {
                return Err(fail(
                    &format!("{key}.id"),
                    "must be non-empty, unique and without ':'",
                ));
            }
            if !crate::introspection::is_secret_hash(&c.secret_sha256) {
                return Err(fail(
                    &format!("{key}.secret_sha256"),
                    "must be 64 hex digits: the SHA-256 of the secret \
                     (authgw introspection new-secret)",
                ));
            }
        }
        self.validate_federation(origin)?;
        self.validate_browser(origin)?;
        self.validate_tls(origin)?;
        self.validate_email(origin)?;
        self.validate_routes(origin)
    }

    /// `[[identity_providers]]` and the redirect targets: names unique,
    /// endpoints https (or loopback http), the client secret readable.
    fn validate_federation(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |key: String, reason: String| ConfigError {
            origin: origin.into(),
            key,
            reason,
        };
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.identity_providers.iter().enumerate() {
            let key = |k: &str| format!("identity_providers[{i}].{k}");
            p.check().map_err(|(k, why)| fail(key(k), why))?;
            if !names.insert(p.name.as_str()) {
                return Err(fail(key("name"), format!("{:?} is used twice", p.name)));
            }
            p.client_secret(&self.base_dir())
                .map_err(|(k, why)| fail(key(k), why))?;
        }
        for (i, r) in self.auth.allowed_redirects.iter().enumerate() {
            let ok = url::Url::parse(r).is_ok_and(|u| {
                matches!(u.scheme(), "https" | "http")
                    && u.host().is_some()
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && u.password().is_none()
            });
            if !ok {
                return Err(fail(
                    format!("auth.allowed_redirects[{i}]"),
                    format!(
                        "{r:?} must be an absolute http(s) URL without credentials or fragment"
                    ),
                ));
            }
        }
        if let Some(u) = &self.auth.public_url {
            let ok = url::Url::parse(u).is_ok_and(|p| {
                matches!(p.scheme(), "https" | "http")
                    && p.host().is_some()
                    && p.query().is_none()
                    && p.fragment().is_none()
            });
            if !ok {
                return Err(fail(
                    "auth.public_url".into(),
                    format!(
                        "{u:?} must be an absolute http(s) URL (scheme, host, optional port and path)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `[email]`: the keys, then the transport (URL, password variable, CA
    /// file) and the templates (overrides read and checked), so a bad one is
    /// refused at load naming its key.
    fn validate_email(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |key: &str, reason: String| ConfigError {
            origin: origin.into(),
            key: key.into(),
            reason,
        };
        self.email.check().map_err(|(key, why)| fail(key, why))?;
        self.mfa.check().map_err(|(key, why)| fail(key, why))?;
        crate::mail::Transport::from_config(&self.email, &self.base_dir(), |k| {
            std::env::var(k).ok()
        })
        .map_err(|e| fail(e.key, e.reason))?;
        crate::mail::templates::Templates::load(&self.email, &self.base_dir())
            .map_err(|e| fail("email.templates_dir", e))?;
        Ok(())
    }

    /// The directory relative paths (plugins, TLS files) start from: the
    /// config file's.
    pub fn base_dir(&self) -> PathBuf {
        self.source
            .as_deref()
            .and_then(|p| p.parent())
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
    }

    /// `[server.tls]`: every file read and the rustls config built, so a
    /// bad certificate is refused at load (and at reload) naming its key.
    fn validate_tls(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |key: String, reason: String| ConfigError {
            origin: origin.into(),
            key,
            reason,
        };
        if self.admin.tls && self.server.tls.is_none() {
            return Err(fail(
                "admin.tls".into(),
                "needs [server.tls] (its certificates)".into(),
            ));
        }
        let Some(tls) = &self.server.tls else {
            return Ok(());
        };
        crate::tls::server::build(tls, &self.base_dir())
            .map(|_| ())
            .map_err(|e| fail(format!("server.tls.{}", e.key), e.reason))?;
        Ok(())
    }

    /// `[cors]` and the cookie keys of `[auth]`: nothing a browser would
    /// refuse, and no combination tower-http's CORS layer rejects.
    fn validate_browser(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |key: &str, reason: String| ConfigError {
            origin: origin.into(),
            key: key.into(),
            reason,
        };
        let cors = &self.cors;
        for o in &cors.allowed_origins {
            if o == "*" {
                if cors.allow_credentials {
                    return Err(fail(
                        "cors.allowed_origins",
                        "\"*\" cannot be combined with allow_credentials = true; list the origins"
                            .into(),
                    ));
                }
                if cors.allowed_origins.len() > 1 {
                    return Err(fail(
                        "cors.allowed_origins",
                        "\"*\" stands alone or not at all".into(),
                    ));
                }
                continue;
            }
            crate::cors::check_origin(o).map_err(|why| fail("cors.allowed_origins", why))?;
        }
        for m in &cors.allowed_methods {
            if m == "*" || axum::http::Method::from_bytes(m.as_bytes()).is_err() {
                return Err(fail(
                    "cors.allowed_methods",
                    format!("{m:?} is not an HTTP method (no wildcard)"),
                ));
            }
        }
        for (key, list) in [
            ("cors.allowed_headers", &cors.allowed_headers),
            ("cors.exposed_headers", &cors.exposed_headers),
        ] {
            for h in list {
                if h == "*" || axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(fail(
                        key,
                        format!("{h:?} is not a header name (no wildcard)"),
                    ));
                }
            }
        }
        let auth = &self.auth;
        if !auth.cookie_secure && !self.server.listen.ip().is_loopback() {
            return Err(fail(
                "auth.cookie_secure",
                format!(
                    "false is only for development on localhost, and server.listen is {}",
                    self.server.listen
                ),
            ));
        }
        if auth.cookie_same_site == SameSite::None && !auth.cookie_secure {
            return Err(fail(
                "auth.cookie_same_site",
                "\"none\" needs cookie_secure = true (browsers refuse it otherwise)".into(),
            ));
        }
        if let Some(name) = &self.proxy.token_cookie
            && auth.access_cookie
            && !auth.cookie_secure
            && (name.starts_with("__Host-") || name.starts_with("__Secure-"))
        {
            return Err(fail(
                "proxy.token_cookie",
                format!("{name:?}: a __Host-/__Secure- cookie needs auth.cookie_secure = true"),
            ));
        }
        Ok(())
    }

    /// Route names unique, prefixes absolute, upstreams plain `http://` URLs
    /// with a host, methods known. The route table itself is built in `proxy`.
    fn validate_routes(&self, origin: &str) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let fail = |key: &str, reason: String| ConfigError {
                origin: origin.into(),
                key: format!("routes[{i}].{key}"),
                reason: format!("route '{}': {reason}", r.name),
            };
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                return Err(fail("name", "must be non-empty and unique".into()));
            }
            if !r.prefix.starts_with('/') {
                return Err(fail("prefix", "must start with '/'".into()));
            }
            match crate::proxy::path::canonicalize(&r.prefix) {
                Ok(c) if c.path == r.prefix.as_str() => {}
                Ok(c) => {
                    return Err(fail(
                        "prefix",
                        format!(
                            "{:?} is not a canonical path (it would be {:?}), so no request could match it",
                            r.prefix, c.path
                        ),
                    ));
                }
                Err(e) => return Err(fail("prefix", format!("{:?}: {e}", r.prefix))),
            }
            if let Some(host) = &r.host
                && (host.is_empty() || (host.contains(':') && !host.starts_with('[')))
            {
                return Err(fail(
                    "host",
                    format!("{host:?}: name the host only; the port is not matched"),
                ));
            }
            let upstreams = r.upstream.to_vec();
            for u in &upstreams {
                let uri: axum::http::Uri = u
                    .parse()
                    .map_err(|e| fail("upstream", format!("{u:?} is not a URL: {e}")))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(fail(
                        "upstream",
                        format!("{u:?}: expected http(s)://host[:port][/base]"),
                    ));
                }
                if uri.query().is_some() {
                    return Err(fail("upstream", format!("{u:?}: no query string allowed")));
                }
            }
            for m in r.methods.iter().flatten() {
                if axum::http::Method::from_bytes(m.as_bytes()).is_err() || m.is_empty() {
                    return Err(fail("methods", format!("{m:?} is not an HTTP method")));
                }
            }
            if r.connect_timeout.is_zero()
                || r.response_timeout.is_zero()
                || r.idle_timeout.is_zero()
            {
                return Err(fail("response_timeout", "timeouts must be above 0".into()));
            }
        }
        let mut plugin_names = std::collections::HashSet::new();
        for (i, p) in self.plugins.iter().enumerate() {
            let fail = |reason: String| ConfigError {
                origin: origin.into(),
                key: format!("plugins[{i}]"),
                reason: format!("plugin '{}': {reason}", p.name),
            };
            p.validate(&self.plugin_host).map_err(fail)?;
            if !plugin_names.insert(p.name.as_str()) {
                return Err(fail("name: defined twice".into()));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(missing) = r
                .plugins
                .iter()
                .find(|p| !plugin_names.contains(p.as_str()))
            {
                return Err(ConfigError {
                    origin: origin.into(),
                    key: format!("routes[{i}].plugins"),
                    reason: format!(
                        "route '{}' names plugin '{missing}', which no [[plugins]] entry defines",
                        r.name
                    ),
                });
            }
        }
        if let Some(url) = &self.authz.login_url {
            let uri = url.parse::<axum::http::Uri>().ok();
            let absolute = uri.as_ref().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !(absolute || (url.starts_with('/') && !url.starts_with("//") && uri.is_some())) {
                return Err(ConfigError {
                    origin: origin.into(),
                    key: "authz.login_url".into(),
                    reason: format!("{url:?}: must be an http(s) URL or a path starting with '/'"),
                });
            }
        }
        if self.authz.redirect_param.is_empty()
            || !self
                .authz
                .redirect_param
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ConfigError {
                origin: origin.into(),
                key: "authz.redirect_param".into(),
                reason: "must be a non-empty name of letters, digits, '-', '_' or '.'".into(),
            });
        }
        if let Some(cookie) = &self.proxy.token_cookie
            && (cookie.is_empty() || cookie.contains([';', '=', ' ', ',']))
        {
            return Err(ConfigError {
                origin: origin.into(),
                key: "proxy.token_cookie".into(),
                reason: format!("{cookie:?} is not a cookie name"),
            });
        }
        Ok(())
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped gateway.toml parses and equals the built-in defaults where it
    /// does not override them, so the documented defaults are the real ones.
    #[test]
    fn shipped_file_parses() {
        let raw = include_str!("../../gateway.toml");
        let parsed = Config::parse(raw, "gateway.toml");
        assert!(parsed.is_ok(), "{:?}", parsed.err());
        let Ok(c) = parsed else { return };
        let d = Config::default();
        assert_eq!(c.tokens.access_ttl, d.tokens.access_ttl);
        assert_eq!(c.tokens.refresh_ttl, d.tokens.refresh_ttl);
        assert_eq!(c.tokens.session_max_age, d.tokens.session_max_age);
        assert_eq!(c.revocation.max_staleness, d.revocation.max_staleness);
        assert_eq!(c.revocation.when_stale, d.revocation.when_stale);
        assert_eq!(c.passwords.memory_kib, 19_456);
        assert_eq!(c.server.max_body_bytes, 65_536);
        assert_eq!(c.cors.allowed_headers, d.cors.allowed_headers);
        assert_eq!(c.cors.exposed_headers, d.cors.exposed_headers);
        assert_eq!(c.cors.allowed_methods, d.cors.allowed_methods);
        assert_eq!(c.cors.max_age, d.cors.max_age);
        assert_eq!(c.auth.cookie_same_site, d.auth.cookie_same_site);
        assert!(c.auth.cookie_secure && !c.auth.access_cookie && c.cors.allow_credentials);
        assert_eq!(c.server.runtime, d.server.runtime);
    }

    /// `server.runtime` takes its four names; anything else is an error
    /// naming the key.
    #[test]
    fn runtime_flavors() {
        for (raw, want) in [
            ("auto", RuntimeFlavor::Auto),
            ("multi-thread", RuntimeFlavor::MultiThread),
            ("current-thread", RuntimeFlavor::CurrentThread),
            ("thread-per-core", RuntimeFlavor::ThreadPerCore),
        ] {
            let c = Config::parse(&format!("[server]\nruntime = \"{raw}\"\n"), "g.toml");
            assert_eq!(c.map(|c| c.server.runtime).ok(), Some(want), "{raw}");
        }
        let e = Config::parse("[server]\nruntime = \"threaded\"\n", "g.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("server.runtime"), "{e}");
    }

    /// `passwords.priority` takes its three names; anything else is an
    /// error naming the key.
    #[test]
    fn hashing_priorities() {
        for (raw, want) in [
            ("idle", HashingPriority::Idle),
            ("low", HashingPriority::Low),
            ("normal", HashingPriority::Normal),
        ] {
            let c = Config::parse(&format!("[passwords]\npriority = \"{raw}\"\n"), "g.toml");
            assert_eq!(c.map(|c| c.passwords.priority).ok(), Some(want), "{raw}");
        }
        let e = Config::parse("[passwords]\npriority = \"lowest\"\n", "g.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("passwords.priority"), "{e}");
        assert_eq!(Config::default().passwords.priority, HashingPriority::Idle);
    }

    /// `authz.login_url` is an http(s) URL or a path, `authz.redirect_param`
    /// a plain name, and a route may omit `upstream` (decision-only).
    #[test]
    fn authz_keys_and_decision_only_routes() {
        let check = |raw: &str| {
            Config::parse(raw, "g.toml")
                .and_then(|c| c.validate("g.toml").map(|()| c))
                .map_err(|e| e.to_string())
        };
        for good in [
            "https://login.example/in?app=x",
            "http://127.0.0.1:3000/login",
            "/login",
        ] {
            let c = check(&format!("[authz]\nlogin_url = {good:?}\n"));
            assert!(c.is_ok(), "{good}: {:?}", c.err());
        }
        for bad in [
            "javascript:alert(1)",
            "//evil.example/",
            "login",
            "ftp://x/",
        ] {
            let err = check(&format!("[authz]\nlogin_url = {bad:?}\n"))
                .err()
                .unwrap_or_default();
            assert!(err.starts_with("g.toml: authz.login_url"), "{bad}: {err}");
        }
        let err = check("[authz]\nredirect_param = \"a&b\"\n")
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("g.toml: authz.redirect_param"), "{err}");
        let c = check("[[routes]]\nname = \"v\"\nprefix = \"/v\"\n");
        assert!(c.is_ok_and(|c| c.routes[0].upstream.to_vec().is_empty()));
    }

    /// `[cors]` and `[auth]`: nothing a browser would ignore or tower-http
    /// would panic on; insecure cookies only on loopback.
    #[test]
    fn browser_keys() {
        let check = |raw: &str| {
            Config::parse(raw, "g.toml")
                .and_then(|c| c.validate("g.toml").map(|()| c))
                .map_err(|e| e.to_string())
        };
        let c = check(
            "[cors]\nallowed_origins = [\"https://cinema.example\", \"http://localhost:3000\"]\n",
        );
        assert!(c.is_ok(), "{:?}", c.err());
        assert!(check("[cors]\nallowed_origins = [\"*\"]\nallow_credentials = false\n").is_ok());
        for (raw, key) in [
            (
                "[cors]\nallowed_origins = [\"*\"]\n",
                "cors.allowed_origins",
            ),
            (
                "[cors]\nallowed_origins = [\"*\", \"https://a.example\"]\nallow_credentials = false\n",
                "cors.allowed_origins",
            ),
            (
                "[cors]\nallowed_origins = [\"null\"]\n",
                "cors.allowed_origins",
            ),
            (
                "[cors]\nallowed_origins = [\"https://cinema.example/\"]\n",
                "cors.allowed_origins",
            ),
            (
                "[cors]\nallowed_headers = [\"*\"]\n",
                "cors.allowed_headers",
            ),
            (
                "[cors]\nallowed_methods = [\"*\"]\n",
                "cors.allowed_methods",
            ),
            (
                "[cors]\nexposed_headers = [\"bad header\"]\n",
                "cors.exposed_headers",
            ),
            (
                "[server]\nlisten = \"0.0.0.0:8080\"\n[auth]\ncookie_secure = false\n",
                "auth.cookie_secure",
            ),
            (
                "[auth]\ncookie_same_site = \"none\"\ncookie_secure = false\n",
                "auth.cookie_same_site",
            ),
            (
                "[auth]\ncookie_secure = false\naccess_cookie = true\n[proxy]\ntoken_cookie = \"__Host-at\"\n",
                "proxy.token_cookie",
            ),
        ] {
            let err = check(raw).err().unwrap_or_default();
            assert!(err.starts_with(&format!("g.toml: {key}")), "{raw}: {err}");
        }
        let c = check("[server]\nlisten = \"127.0.0.1:8080\"\n[auth]\ncookie_secure = false\n");
        assert!(c.is_ok(), "{:?}", c.err());
        let c = check("[[routes]]\nname = \"v\"\nprefix = \"/v\"\ncors = true\n");
        assert!(c.is_ok_and(|c| c.routes[0].cors));
    }

    /// An unknown key is refused with its dotted path.
    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[server]\nlisten_addr = \"x\"\n", "g.toml").err();
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("g.toml: server"), "{err}");
        assert!(err.contains("listen_addr"), "{err}");
    }

    /// A bad duration names the key and shows the accepted forms.
    #[test]
    fn bad_duration_is_named() {
        let err = Config::parse("[tokens]\naccess_ttl = \"15 parsecs\"\n", "g.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("g.toml: tokens.access_ttl: invalid duration"),
            "{err}"
        );
    }

    /// "30d" and "15m" are understood.
    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
    }

    /// A route's upstreams are http:// or https:// (verified; issue 22);
    /// any other scheme is refused naming the key.
    #[test]
    fn https_upstreams_are_accepted_other_schemes_refused() {
        let route = |upstream: &str| {
            format!("[[routes]]\nname = \"r\"\nprefix = \"/r\"\nupstream = \"{upstream}\"\n")
        };
        for ok in [
            "https://billing.internal:8443",
            "http://127.0.0.1:8000/base",
        ] {
            let c = Config::parse(&route(ok), "g.toml").map_err(|e| e.to_string());
            let checked = c.and_then(|c| c.validate("g.toml").map_err(|e| e.to_string()));
            assert!(checked.is_ok(), "{ok}: {checked:?}");
        }
        for bad in ["ftp://x", "ws://x", "//x"] {
            let err = Config::parse(&route(bad), "g.toml")
                .and_then(|c| c.validate("g.toml"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("routes[0].upstream"), "{bad}: {err}");
        }
    }

    /// `server.trusted_proxies` takes CIDRs and bare addresses; a bad entry
    /// is refused naming the key.
    #[test]
    fn trusted_proxies_parse() {
        let parsed = Config::parse(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.1\"]\n",
            "g.toml",
        );
        assert!(parsed.is_ok(), "{:?}", parsed.err());
        let Ok(c) = parsed else { return };
        let t = c.server.trusted();
        for ip in ["10.1.2.3", "fd00::1", "192.0.2.1", "::ffff:10.0.0.1"] {
            let ip: std::net::IpAddr = ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
            assert!(t.contains(ip), "{ip}");
        }
        assert!(!t.contains(std::net::Ipv4Addr::new(192, 0, 2, 2).into()));
        let err = Config::parse("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", "g.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("g.toml: server.trusted_proxies"), "{err}");
        assert!(err.contains("10.0.0.0/33"), "{err}");
    }

    /// The deprecated `trust_forwarded_for = true` trusts every peer; it
    /// cannot be combined with `trusted_proxies`.
    #[test]
    fn trust_forwarded_for_is_a_deprecated_alias() {
        let parsed = Config::parse("[server]\ntrust_forwarded_for = true\n", "g.toml");
        assert!(parsed.is_ok(), "{:?}", parsed.err());
        let Ok(mut c) = parsed else { return };
        assert!(
            c.server
                .trusted()
                .contains(std::net::Ipv4Addr::new(203, 0, 113, 9).into())
        );
        assert!(
            c.server
                .trusted()
                .contains(std::net::Ipv6Addr::LOCALHOST.into())
        );
        c.server.trust_forwarded_for = Some(false);
        assert!(c.server.trusted().is_none());
        c.server.trusted_proxies = vec![ipnet::IpNet::from(std::net::IpAddr::from(
            std::net::Ipv4Addr::LOCALHOST,
        ))];
        let err = c
            .validate("g.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("g.toml: server.trust_forwarded_for"),
            "{err}"
        );
    }

    /// Environment overrides win over the file.
    #[test]
    fn env_overrides() {
        let mut c = Config::default();
        let env = |k: &str| match k {
            ENV_DATABASE_URL => Some("postgresql://x@y/z".to_string()),
            ENV_LISTEN => Some("0.0.0.0:9999".to_string()),
            _ => None,
        };
        assert!(c.apply_env(env).is_ok());
        assert_eq!(c.database.url, "postgresql://x@y/z");
        assert_eq!(c.server.listen.port(), 9999);
        let bad = |k: &str| (k == ENV_LISTEN).then(|| "nope".to_string());
        let err = c
            .apply_env(bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("AUTHGW_LISTEN: server.listen"), "{err}");
    }
}
