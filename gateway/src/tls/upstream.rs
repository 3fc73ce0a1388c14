//! TLS towards a route's `https://` upstreams: the rustls client config of
//! one route, built once when the routes are (at start and on reload), so
//! that every bad file or name is a config error naming the route, the key,
//! the file and the reason, and never a surprise at request time.
//!
//! - roots: `tls_ca` (a PEM bundle), else the system trust store, read once
//!   per process through rustls-native-certs (an empty or unreadable store
//!   is an error for a route that needs it, never "trust nothing");
//! - the name sent in SNI and verified in the certificate: the upstream
//!   URL's host, else `tls_server_name`;
//! - `tls_client_cert` + `tls_client_key`: mutual TLS, both or neither;
//! - ALPN: `http/1.1`, or `h2` first with `upstream_http2` (not with
//!   `websocket`, as upgrades need HTTP/1.1, nor with `preserve_host`, as
//!   the client's Host would contradict the upstream's `:authority`).
//!
//! There is deliberately no way to skip verification.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;

use crate::config::RouteConfig;

/// What a route's `https://` upstreams are reached with.
#[derive(Debug)]
pub struct UpstreamTls {
    /// Roots, client certificate and ALPN (`http/1.1`, or `h2` and
    /// `http/1.1` when `http2`).
    pub config: ClientConfig,
    /// `tls_server_name`: sent and verified instead of the URL's host.
    pub server_name: Option<ServerName<'static>>,
    /// Whether `h2` is offered (`upstream_http2`).
    pub http2: bool,
}

/// ALPN of a route without `upstream_http2`: HTTP/1.1 only.
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];
/// ALPN with `upstream_http2`: HTTP/2 preferred, HTTP/1.1 accepted.
pub const ALPN_H2: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The TLS settings of `route`, whose `https://` upstreams have the hosts
/// `https_hosts` (as in the URL; IPv6 in brackets). None when it has no
/// `https://` upstream: then any `tls_*` key or `upstream_http2` is an
/// error (it would be ignored). Relative paths start at `base_dir`.
pub fn for_route(
    route: &RouteConfig,
    https_hosts: &[&str],
    base_dir: &Path,
) -> Result<Option<UpstreamTls>, String> {
    let name = &route.name;
    if https_hosts.is_empty() {
        return match tls_keys_set(route).first() {
            Some(key) => Err(format!(
                "route '{name}': {key} applies to https:// upstreams only, and this route has none \
                 (it would be ignored)"
            )),
            None => Ok(None),
        };
    }
    if route.upstream_http2 && route.websocket {
        return Err(format!(
            "route '{name}': upstream_http2 cannot be combined with websocket = true: WebSocket \
             upgrades need HTTP/1.1 to the upstream"
        ));
    }
    if route.upstream_http2 && route.preserve_host {
        // Over h2 the upstream's authority goes in `:authority`; the
        // client's Host next to it is a contradiction servers refuse
        // (nginx: 400).
        return Err(format!(
            "route '{name}': upstream_http2 cannot be combined with preserve_host = true: over \
             HTTP/2 the client's Host would contradict the upstream's :authority"
        ));
    }
    let server_name = match &route.tls_server_name {
        Some(raw) => Some(
            server_name(raw)
                .map_err(|e| format!("route '{name}': tls_server_name {raw:?}: {e}"))?,
        ),
        None => {
            for host in https_hosts {
                server_name(host).map_err(|e| {
                    format!(
                        "route '{name}': upstream host {host:?} cannot be verified in a certificate \
                         ({e}); set tls_server_name"
                    )
                })?;
            }
            None
        }
    };
    let roots = match &route.tls_ca {
        Some(ca) => Arc::new(
            crate::tls::pem::roots(&resolve(base_dir, ca))
                .map_err(|e| format!("route '{name}': tls_ca: {e}"))?,
        ),
        None => system_roots().map_err(|e| {
            format!("route '{name}': no tls_ca, and the system trust store is unusable: {e}")
        })?,
    };
    let builder = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("route '{name}': TLS: {e}"))?
        .with_root_certificates(roots);
    let mut config = match (&route.tls_client_cert, &route.tls_client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = crate::tls::pem::certs(&resolve(base_dir, cert))
                .map_err(|e| format!("route '{name}': tls_client_cert: {e}"))?;
            let key_path = resolve(base_dir, key);
            let key_der = crate::tls::pem::key(&key_path)
                .map_err(|e| format!("route '{name}': tls_client_key: {e}"))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "route '{name}': tls_client_cert {} with tls_client_key {}: {e}",
                    resolve(base_dir, cert).display(),
                    key_path.display()
                )
            })?
        }
        (Some(_), None) => {
            return Err(format!(
                "route '{name}': tls_client_cert without tls_client_key: set both or neither"
            ));
        }
        (None, Some(_)) => {
            return Err(format!(
                "route '{name}': tls_client_key without tls_client_cert: set both or neither"
            ));
        }
    };
    let alpn = if route.upstream_http2 {
        ALPN_H2
    } else {
        ALPN_HTTP1
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Some(UpstreamTls {
        config,
        server_name,
        http2: route.upstream_http2,
    }))
}

/// The TLS keys set on `route`, by name.
fn tls_keys_set(route: &RouteConfig) -> Vec<&'static str> {
    [
        ("tls_ca", route.tls_ca.is_some()),
        ("tls_server_name", route.tls_server_name.is_some()),
        ("tls_client_cert", route.tls_client_cert.is_some()),
        ("tls_client_key", route.tls_client_key.is_some()),
        ("upstream_http2", route.upstream_http2),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect()
}

/// A name a certificate can be verified for: a DNS name or an IP address
/// (IPv6 with or without brackets).
fn server_name(raw: &str) -> Result<ServerName<'static>, String> {
    let bare = raw
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(raw);
    ServerName::try_from(bare.to_string()).map_err(|e| e.to_string())
}

/// `path`, from `base_dir` when relative (as plugin paths are).
fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// The system trust store, read once per process (it is slow to read):
/// only a usable store is kept, so a failure is reported again by the
/// next reload instead of being remembered.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static SYSTEM: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    if let Some(store) = SYSTEM.get() {
        return Ok(store.clone());
    }
    let loaded = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(loaded.certs);
    let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    if added == 0 {
        return Err(if errors.is_empty() {
            format!(
                "no usable CA certificate found ({ignored} unparsable); install the system CA \
                 bundle (ca-certificates) or set tls_ca"
            )
        } else {
            format!("{} (set tls_ca instead)", errors.join("; "))
        });
    }
    if ignored > 0 || !errors.is_empty() {
        tracing::warn!(
            added,
            ignored,
            errors = errors.join("; "),
            "some system CA certificates could not be used for https:// upstreams"
        );
    }
    Ok(SYSTEM.get_or_init(|| Arc::new(store)).clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn route(extra: &str) -> RouteConfig {
        let toml = format!(
            "[[routes]]\nname = \"films\"\nprefix = \"/films\"\nupstream = \"http://127.0.0.1:1\"\n{extra}\n"
        );
        Config::parse(&toml, "t.toml")
            .expect("test config parses")
            .routes
            .remove(0)
    }

    /// A self-signed CA certificate (PEM) and a client certificate + key
    /// it signed, written into `dir`.
    fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let client = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let ca = dir.join("ca.pem");
        let cert = dir.join("client.pem");
        let key_path = dir.join("client.key");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        std::fs::write(&cert, client.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (ca, cert, key_path)
    }

    /// Each TLS key (and upstream_http2) on a route without an https://
    /// upstream is an error naming the route and the key.
    #[test]
    fn tls_keys_on_plain_http_routes_are_refused() {
        for (extra, key) in [
            (r#"tls_ca = "ca.pem""#, "tls_ca"),
            (r#"tls_server_name = "films.internal""#, "tls_server_name"),
            (r#"tls_client_cert = "c.pem""#, "tls_client_cert"),
            (r#"tls_client_key = "c.key""#, "tls_client_key"),
            ("upstream_http2 = true", "upstream_http2"),
        ] {
            let e = for_route(&route(extra), &[], Path::new(".")).unwrap_err();
            assert!(
                e.contains("route 'films'") && e.contains(key) && e.contains("https://"),
                "{extra}: {e}"
            );
        }
        assert!(
            for_route(&route(""), &[], Path::new("."))
                .unwrap()
                .is_none()
        );
    }

    /// A client certificate without its key (or the reverse) is an error
    /// naming both keys; a missing or unreadable file names the key and
    /// the file; relative paths start at the config's directory.
    #[test]
    fn files_and_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pki(dir.path());
        let e = for_route(
            &route(r#"tls_ca = "ca.pem""#),
            &["127.0.0.1"],
            Path::new("/nonexistent"),
        )
        .unwrap_err();
        assert!(
            e.contains("route 'films': tls_ca: /nonexistent/ca.pem:"),
            "{e}"
        );
        // Relative to the base dir, it loads.
        let ok = for_route(&route(r#"tls_ca = "ca.pem""#), &["127.0.0.1"], dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(ok.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(ok.server_name.is_none() && !ok.http2);

        let only_cert = format!("tls_ca = {ca:?}\ntls_client_cert = {cert:?}");
        let e = for_route(&route(&only_cert), &["h"], dir.path()).unwrap_err();
        assert!(
            e.contains("route 'films'")
                && e.contains("tls_client_cert without tls_client_key")
                && e.contains("both or neither"),
            "{e}"
        );
        let only_key = format!("tls_ca = {ca:?}\ntls_client_key = {key:?}");
        let e = for_route(&route(&only_key), &["h"], dir.path()).unwrap_err();
        assert!(e.contains("tls_client_key without tls_client_cert"), "{e}");

        // A CA bundle that is not PEM names the key and the file.
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let e =
            for_route(&route(&format!("tls_ca = {garbage:?}")), &["h"], dir.path()).unwrap_err();
        assert!(
            e.contains("tls_ca") && e.contains("garbage.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        // The key is not the certificate's: named, with both files.
        let other = rcgen::KeyPair::generate().unwrap();
        let wrong_key = dir.path().join("wrong.key");
        std::fs::write(&wrong_key, other.serialize_pem()).unwrap();
        let mismatch =
            format!("tls_ca = {ca:?}\ntls_client_cert = {cert:?}\ntls_client_key = {wrong_key:?}");
        let e = for_route(&route(&mismatch), &["h"], dir.path()).unwrap_err();
        assert!(
            e.contains("tls_client_cert") && e.contains("wrong.key") && e.contains("client.pem"),
            "{e}"
        );
        // A key file without a key.
        let nokey =
            format!("tls_ca = {ca:?}\ntls_client_cert = {cert:?}\ntls_client_key = {garbage:?}");
        let e = for_route(&route(&nokey), &["h"], dir.path()).unwrap_err();
        assert!(
            e.contains("tls_client_key: ") && e.contains("garbage.pem"),
            "{e}"
        );
        // Both, relative: mutual TLS configured.
        let both = "tls_ca = \"ca.pem\"\ntls_client_cert = \"client.pem\"\ntls_client_key = \"client.key\"";
        let tls = for_route(&route(both), &["h"], dir.path())
            .unwrap()
            .unwrap();
        assert!(tls.config.client_auth_cert_resolver.has_certs());
    }

    /// `tls_server_name` must be a DNS name or an IP address; upstream_http2
    /// offers h2 first, and is refused on a WebSocket route and with
    /// preserve_host.
    #[test]
    fn server_names_and_alpn() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _, _) = pki(dir.path());
        let e = for_route(
            &route(&format!(
                "tls_ca = {ca:?}\ntls_server_name = \"not a name!\""
            )),
            &["h"],
            dir.path(),
        )
        .unwrap_err();
        assert!(
            e.contains("route 'films': tls_server_name \"not a name!\""),
            "{e}"
        );
        let tls = for_route(
            &route(&format!(
                "tls_ca = {ca:?}\ntls_server_name = \"films.internal\"\nupstream_http2 = true"
            )),
            &["[::1]"],
            dir.path(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            tls.server_name,
            Some(ServerName::try_from("films.internal").unwrap())
        );
        assert_eq!(
            tls.config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(tls.http2);
        let e = for_route(
            &route(&format!(
                "tls_ca = {ca:?}\nupstream_http2 = true\nwebsocket = true"
            )),
            &["h"],
            dir.path(),
        )
        .unwrap_err();
        assert!(
            e.contains("route 'films': upstream_http2") && e.contains("websocket"),
            "{e}"
        );
        let e = for_route(
            &route(&format!(
                "tls_ca = {ca:?}\nupstream_http2 = true\npreserve_host = true"
            )),
            &["h"],
            dir.path(),
        )
        .unwrap_err();
        assert!(
            e.contains("route 'films': upstream_http2") && e.contains("preserve_host"),
            "{e}"
        );
        assert!(server_name("[::1]").is_ok() && server_name("127.0.0.1").is_ok());
    }

    /// Without `tls_ca` the system store is used: it loads (this machine
    /// has one) or the error says why and what to do; loaded once.
    #[test]
    fn system_roots_load_once_or_say_why() {
        match system_roots() {
            Ok(first) => {
                assert!(!first.is_empty());
                assert!(Arc::ptr_eq(&first, &system_roots().unwrap()));
            }
            Err(e) => assert!(e.contains("tls_ca"), "{e}"),
        }
    }
}
