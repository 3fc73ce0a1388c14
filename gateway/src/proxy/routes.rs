//! The route table: which `[[routes]]` entry a request belongs to, and the
//! upstreams (with their pooled clients) it goes to.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderValue, Method, Uri};
use hyper_rustls::{
    DefaultServerNameResolver, FixedServerNameResolver, HttpsConnector, ResolveServerName,
};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::pool::Pool;
use crate::config::{AuthMode, EscapedSlashes, RouteConfig};
use crate::metrics::RouteMetrics;
use crate::plugins::{Needs, Plugin, chain_needs};

/// One route's pooled client: `http://` upstreams in the clear, `https://`
/// ones over rustls ([`crate::tls::upstream`]).
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A route ready to serve: its config, parsed upstreams and one pooled
/// client (the connect timeout, pool idle timeout and TLS settings are per
/// route).
pub struct Route {
    pub config: RouteConfig,
    pub methods: Option<Vec<Method>>,
    pub upstreams: Vec<Upstream>,
    /// The policy chain, in order.
    pub plugins: Vec<Arc<Plugin>>,
    /// What the chain reads of a request (the union of its plugins' needs).
    pub needs: Needs,
    /// One pooled client per thread-per-core worker ([`Route::client`]).
    clients: Vec<UpstreamClient>,
    /// Its metrics, resolved once ([`RouteMetrics`]).
    pub metrics: RouteMetrics,
    next: AtomicUsize,
}

/// One upstream base: scheme and authority, plus a base path prepended to
/// every forwarded path (no trailing slash; empty for `/`).
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    pub base_path: String,
    /// The `Host` a request to this upstream carries when the route does
    /// not preserve the client's: the value hyper-util's client would write
    /// (the host, and the port unless it is the scheme's default), made once
    /// at load rather than formatted per request (issue 18). `None` with
    /// `upstream_http2`, where `:authority` says it and the client writes none.
    pub host: Option<HeaderValue>,
    /// An `http://` upstream's connection pools ([`super::pool`]), one per
    /// thread-per-core worker ([`Upstream::pool`]); `None` for `https://`,
    /// which hyper-util's client ([`Route::client`]) connects.
    pools: Option<Arc<[Arc<Pool>]>>,
}

impl Upstream {
    /// The connection pool of the worker this runs on (the first one
    /// outside thread-per-core workers), for an `http://` upstream.
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        let pools = self.pools.as_deref()?;
        pools.get(crate::cores::worker() % pools.len().max(1))
    }
}

/// The `Host` hyper-util's client writes for `uri` (its `set_host`): the
/// host, with `:port` unless the port is the scheme's default.
fn host_value(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let secure = matches!(uri.scheme_str(), Some("https" | "wss"));
    let text = match uri.port_u16() {
        Some(443) if secure => host.to_string(),
        Some(80) if !secure => host.to_string(),
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    HeaderValue::try_from(text).ok()
}

impl Route {
    /// Parses the upstreams and builds the route's clients: `pools`
    /// upstream connection pools, one per thread-per-core worker
    /// (`cores::extra_workers + 1`), else one. TLS files (`tls_ca`,
    /// `tls_client_cert`, `tls_client_key`) are read now, relative to
    /// `base_dir` (the config file's directory); any problem is an error
    /// naming the route, the key, the file and the reason.
    pub fn new(
        config: RouteConfig,
        plugins: Vec<Arc<Plugin>>,
        base_dir: &Path,
        pools: usize,
    ) -> Result<Self, String> {
        let mut upstreams = Vec::new();
        let mut https_hosts = Vec::new();
        let connector = plain_connector(&config);
        for raw in config.upstream.to_vec() {
            let uri: Uri = raw
                .parse()
                .map_err(|e| format!("route '{}': upstream {raw:?}: {e}", config.name))?;
            let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
                return Err(format!(
                    "route '{}': upstream {raw:?} needs http://host[:port]",
                    config.name
                ));
            };
            if scheme.as_str() != "http" && scheme.as_str() != "https" {
                return Err(format!(
                    "route '{}': upstream {raw:?}: only http:// and https:// upstreams are supported",
                    config.name
                ));
            }
            let worker_pools = if scheme.as_str() == "https" {
                https_hosts.push(authority.host().to_string());
                None
            } else {
                Some(
                    (0..pools.max(1))
                        .map(|_| {
                            Pool::new(connector.clone(), uri.clone(), config.pool_idle_timeout)
                        })
                        .collect(),
                )
            };
            upstreams.push(Upstream {
                pools: worker_pools,
                scheme: scheme.clone(),
                authority: authority.clone(),
                base_path: uri.path().trim_end_matches('/').to_string(),
                host: if config.upstream_http2 {
                    None
                } else {
                    host_value(&uri)
                },
            });
        }
        let methods = config.methods.as_ref().map(|ms| {
            ms.iter()
                .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                .collect()
        });
        let https_hosts: Vec<&str> = https_hosts.iter().map(String::as_str).collect();
        let tls = crate::tls::upstream::for_route(&config, &https_hosts, base_dir)?;
        let clients = clients(&config, tls, pools)?;
        Ok(Self {
            metrics: RouteMetrics::new(&config.name),
            config,
            methods,
            upstreams,
            needs: chain_needs(&plugins),
            plugins,
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// The pooled client of the worker this runs on (the first one outside
    /// thread-per-core workers).
    pub fn client(&self) -> &UpstreamClient {
        &self.clients[crate::cores::worker() % self.clients.len()]
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn auth(&self) -> AuthMode {
        self.config.auth
    }

    /// Round-robin over the route's upstreams; none for a decision-only
    /// route (no `upstream`).
    pub fn pick_upstream(&self) -> Option<&Upstream> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.upstreams.len().max(1);
        self.upstreams.get(i)
    }

    /// Whether `path` is under this route's prefix, on a segment boundary:
    /// `/films` matches `/films` and `/films/1`, not `/filmsx`.
    fn covers(&self, path: &str) -> bool {
        let prefix = self.config.prefix.as_str();
        match path.strip_prefix(prefix) {
            Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    fn serves_host(&self, host: Option<&str>) -> bool {
        match (&self.config.host, host) {
            (None, _) => true,
            // `got` is canonical (lower-case, no port, no trailing dot).
            (Some(want), Some(got)) => want
                .strip_suffix('.')
                .unwrap_or(want)
                .eq_ignore_ascii_case(got),
            (Some(_), None) => false,
        }
    }

    fn allows(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|ms| ms.contains(method))
    }

    /// The path and query to send upstream: the prefix removed when
    /// `strip_prefix`, then the upstream's base path in front, and `?query`
    /// when there is one, in one allocation. `path` is the canonical path
    /// the route was found (and the request authorized) for, so the
    /// upstream gets exactly that path, less the prefix.
    pub fn upstream_target(&self, upstream: &Upstream, path: &str, query: Option<&str>) -> String {
        let rest = if self.config.strip_prefix {
            path.strip_prefix(self.config.prefix.trim_end_matches('/'))
                .unwrap_or(path)
        } else {
            path
        };
        let query_len = query.map_or(0, |q| q.len() + 1);
        let mut target =
            String::with_capacity(upstream.base_path.len() + 1 + rest.len() + query_len);
        target.push_str(&upstream.base_path);
        if !rest.starts_with('/') {
            target.push('/');
        }
        target.push_str(rest);
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        target
    }
}

/// The route's pooled clients, `pools` of them (at least one) on one
/// connector: a pool per thread-per-core worker, since a pooled
/// connection's task runs on the worker that opened it and a request from
/// another worker would cross threads to it and back (`crate::cores`).
/// Plain `http://` upstreams are connected exactly as before (the connector
/// passes them through); `https://` ones get the route's TLS settings. A
/// route with no `https://` upstream never makes a TLS connection, so its
/// (unused) config trusts nothing and needs no system trust store.
fn clients(
    config: &RouteConfig,
    tls: Option<crate::tls::upstream::UpstreamTls>,
    pools: usize,
) -> Result<Vec<UpstreamClient>, String> {
    let mut http = plain_connector(config);
    // The scheme is the HTTPS connector's business: let https:// through.
    http.enforce_http(false);
    let (tls_config, server_name) = match tls {
        Some(t) => (t.config, t.server_name),
        None => (unused_tls_config(&config.name)?, None),
    };
    // The ALPN list is the TLS config's own (`http/1.1`, or `h2` first with
    // upstream_http2): the connector is built directly, as hyper-rustls'
    // builder insists on writing ALPN itself. hyper-util speaks h2 on a
    // connection that negotiated it.
    let resolver: Arc<dyn ResolveServerName + Send + Sync> = match server_name {
        Some(name) => Arc::new(FixedServerNameResolver::new(name)),
        None => Arc::new(DefaultServerNameResolver::default()),
    };
    let connector = HttpsConnector::new(http, tls_config, false, resolver);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_timer(TokioTimer::new());
    Ok((0..pools.max(1))
        .map(|_| builder.build(connector.clone()))
        .collect())
}

/// The route's TCP connector: its connect timeout, no Nagle delay.
fn plain_connector(config: &RouteConfig) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_nodelay(true);
    http
}

/// The TLS config of a route without `https://` upstreams: never used,
/// and trusting no one were it ever.
fn unused_tls_config(route: &str) -> Result<rustls::ClientConfig, String> {
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("route '{route}': TLS: {e}"))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    )
}

/// What looking a request up in the table found.
pub enum Lookup<'a> {
    Found(&'a Arc<Route>),
    /// A route covers the path, but not for this method.
    MethodNotAllowed,
    NotFound,
}

impl Lookup<'_> {
    /// What an encoded slash in the path meets: the found route's
    /// `escaped_slashes`, else the default (reject).
    pub fn escaped_slashes(&self) -> EscapedSlashes {
        match self {
            Lookup::Found(route) => route.config.escaped_slashes,
            _ => EscapedSlashes::default(),
        }
    }
}

/// Routes, longest prefix first.
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> Self {
        // Longest prefix first; among equals, host-specific routes first.
        routes.sort_by(|a, b| {
            b.config
                .prefix
                .len()
                .cmp(&a.config.prefix.len())
                .then(b.config.host.is_some().cmp(&a.config.host.is_some()))
        });
        Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn empty() -> Self {
        Self { routes: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The longest-prefix route for `host` (without port) and `path` that
    /// accepts `method`.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Lookup<'_> {
        let mut path_matched = false;
        for route in &self.routes {
            if route.serves_host(host) && route.covers(path) {
                if route.allows(method) {
                    return Lookup::Found(route);
                }
                path_matched = true;
            }
        }
        if path_matched {
            Lookup::MethodNotAllowed
        } else {
            Lookup::NotFound
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table(toml: &str) -> RouteTable {
        let config = Config::parse(toml, "t.toml").expect("test config parses");
        RouteTable::new(
            config
                .routes
                .into_iter()
                .map(|r| Route::new(r, Vec::new(), Path::new("."), 1).expect("route builds"))
                .collect(),
        )
    }

    fn found<'a>(t: &'a RouteTable, host: Option<&str>, path: &str, m: Method) -> Option<&'a str> {
        match t.find(host, path, &m) {
            Lookup::Found(r) => Some(r.name()),
            _ => None,
        }
    }

    /// Each thread-per-core worker sends through pools of its own (a
    /// pooled connection's task runs on the worker that opened it): the
    /// `http://` upstream's pool and hyper-util's client (`https://`); the
    /// first thread, and any thread that is not a worker, through the first;
    /// a route built for one pool (multi-thread, current-thread) has one.
    #[test]
    fn each_worker_has_its_own_upstream_pool() {
        let config = Config::parse(
            "[[routes]]\nname = \"a\"\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\n",
            "t.toml",
        )
        .expect("test config parses");
        let route = |pools| {
            Route::new(config.routes[0].clone(), Vec::new(), Path::new("."), pools)
                .expect("route builds")
        };
        let on = |route: &Route| {
            let pool = route.upstreams[0]
                .pool()
                .expect("an http:// upstream has pools");
            (
                std::ptr::from_ref(route.client()) as usize,
                Arc::as_ptr(pool) as usize,
            )
        };
        let pool_on = |route: &Route, worker: usize| {
            std::thread::scope(|s| {
                s.spawn(|| {
                    crate::cores::set_worker(worker);
                    on(route)
                })
                .join()
                .expect("thread")
            })
        };
        let three = route(3);
        let first = on(&three);
        assert_eq!(pool_on(&three, 0), first, "not a worker: the first pools");
        let pools: std::collections::HashSet<(usize, usize)> =
            (0..3).map(|w| pool_on(&three, w)).collect();
        assert_eq!(pools.len(), 3, "pools per worker");
        let clients: std::collections::HashSet<usize> = pools.iter().map(|p| p.0).collect();
        let upstream: std::collections::HashSet<usize> = pools.iter().map(|p| p.1).collect();
        assert_eq!(
            (clients.len(), upstream.len()),
            (3, 3),
            "one of each per worker"
        );
        let one = route(1);
        let only = on(&one);
        for worker in 0..3 {
            assert_eq!(pool_on(&one, worker), only, "worker {worker}");
        }
    }

    /// The upstream's `Host` is hyper-util's: the port only when it is not
    /// the scheme's default, IPv6 in brackets.
    #[test]
    fn upstream_host_values() {
        for (uri, host) in [
            ("http://127.0.0.1:8080/base", "127.0.0.1:8080"),
            ("http://films.internal", "films.internal"),
            ("http://films.internal:80", "films.internal"),
            ("https://films.internal:443", "films.internal"),
            ("https://films.internal:80", "films.internal:80"),
            ("http://films.internal:443", "films.internal:443"),
            ("http://[::1]:9000", "[::1]:9000"),
        ] {
            let uri: Uri = uri.parse().expect("uri");
            assert_eq!(host_value(&uri).expect("a value"), host, "{uri}");
        }
    }

    /// The longest prefix wins, matching is on segment boundaries, host and
    /// method restrictions apply, and a method mismatch is told apart from no route.
    #[test]
    fn longest_prefix_host_and_methods() {
        let t = table(
            r#"
            [[routes]]
            name = "root"
            prefix = "/"
            upstream = "http://127.0.0.1:1"
            [[routes]]
            name = "films"
            prefix = "/films"
            upstream = "http://127.0.0.1:1"
            [[routes]]
            name = "premium"
            prefix = "/films/premium"
            methods = ["GET"]
            upstream = "http://127.0.0.1:1"
            [[routes]]
            name = "films-b"
            prefix = "/films"
            host = "b.example"
            upstream = "http://127.0.0.1:1"
            "#,
        );
        assert_eq!(
            found(&t, None, "/films/premium/1", Method::GET),
            Some("premium")
        );
        assert_eq!(
            found(&t, None, "/films/premium/1", Method::POST),
            Some("films")
        );
        assert_eq!(found(&t, None, "/filmsx", Method::GET), Some("root"));
        assert_eq!(found(&t, None, "/films", Method::GET), Some("films"));
        assert_eq!(
            found(&t, Some("b.example"), "/films/1", Method::GET),
            Some("films-b")
        );
        let only = table(
            r#"
            [[routes]]
            name = "ro"
            prefix = "/ro"
            methods = ["GET"]
            upstream = "http://127.0.0.1:1"
            "#,
        );
        assert!(matches!(
            only.find(None, "/ro/x", &Method::DELETE),
            Lookup::MethodNotAllowed
        ));
        assert!(matches!(
            only.find(None, "/other", &Method::GET),
            Lookup::NotFound
        ));
    }

    /// A prefix that is not a canonical path (no request could match it)
    /// and a host that names a port (never matched) are config errors
    /// naming the key; a trailing dot on a route's host is ignored.
    #[test]
    fn prefixes_are_canonical_and_hosts_name_no_port() {
        let route = |key: &str| {
            format!("[[routes]]\nname = \"r\"\nupstream = \"http://127.0.0.1:1\"\n{key}\n")
        };
        for (key, field) in [
            (r#"prefix = "/films/../vault""#, "routes[0].prefix"),
            (r#"prefix = "/films//premium""#, "routes[0].prefix"),
            (r#"prefix = "/%70remium""#, "routes[0].prefix"),
            (
                "prefix = \"/a\"\nhost = \"cinema.example:8080\"",
                "routes[0].host",
            ),
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            let file = dir.path().join("gateway.toml");
            std::fs::write(&file, route(key)).expect("config written");
            let err = Config::load(&file, true).expect_err(key);
            assert_eq!(err.key, field, "{key}: {err}");
        }
        let t = table(&route("prefix = \"/a\"\nhost = \"Cinema.Example.\""));
        assert_eq!(
            found(&t, Some("cinema.example"), "/a", Method::GET),
            Some("r")
        );
        assert_eq!(found(&t, Some("other.example"), "/a", Method::GET), None);
    }

    /// strip_prefix removes the prefix and the upstream's base path is prepended.
    #[test]
    fn upstream_paths() {
        let t = table(
            r#"
            [[routes]]
            name = "a"
            prefix = "/api/films"
            strip_prefix = true
            upstream = "http://127.0.0.1:1/v2/"
            [[routes]]
            name = "b"
            prefix = "/b"
            upstream = "http://127.0.0.1:1"
            "#,
        );
        let Lookup::Found(a) = t.find(None, "/api/films/7", &Method::GET) else {
            panic!("route a expected");
        };
        let up = a.pick_upstream().expect("an upstream").clone();
        assert_eq!(a.upstream_target(&up, "/api/films/7", None), "/v2/7");
        assert_eq!(a.upstream_target(&up, "/api/films", None), "/v2/");
        let Lookup::Found(b) = t.find(None, "/b/x", &Method::GET) else {
            panic!("route b expected");
        };
        let up = b.pick_upstream().expect("an upstream").clone();
        assert_eq!(b.upstream_target(&up, "/b/x", None), "/b/x");
    }
}
