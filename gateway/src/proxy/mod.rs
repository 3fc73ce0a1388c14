//! The edge proxy: every request that is not the Auth API's goes through
//! [`Proxy::handle`], whose pipeline reads in phases (as pingora's does):
//!
//! 0. **target**: the path made canonical ([`path`]), or 400; every later
//!    phase, the access log and the upstream URI read that one path (a
//!    request reaches [`Proxy::handle`] from the router's fallback, or,
//!    when its canonical path can be no API endpoint, straight from the
//!    listener: [`crate::api::proxy_shortcut`]);
//! 1. **route**: the longest-prefix `[[routes]]` entry, else 404; an encoded
//!    slash where the route's `escaped_slashes` is "reject", 400;
//! 2. **request filter**: the bearer token verified as `/check` does
//!    (signature or the verified-token cache, claims, revocation set; never
//!    the database), per the route's `auth` mode;
//! 3. **policy**: the route's plugins, in order (first deny wins);
//!
//!    phases 1 to 3 are [`Proxy::decide`], the one decision the
//!    forward-auth endpoints ([`crate::forward_auth`]) run too;
//! 4. **pick upstream**: round-robin (a decision-only route has none: 404);
//! 5. **upstream request filter**: identity, forwarding and request-id
//!    headers; spoofed `X-User-*` (or `X_User_*`) and hop-by-hop headers
//!    removed, and forwarding headers too unless the peer is a trusted
//!    proxy; an `Upgrade` other than `websocket` was refused (400) after
//!    phase 2;
//! 6. **send**: streamed both ways, with timeouts and one safe retry; a 101
//!    opens a tunnel only if it switches to `websocket` (else 502);
//! 7. **response filter**: hop-by-hop headers removed, request id echoed;
//! 8. **logging**: one access line and the metrics.

pub(crate) mod headers;
pub mod path;
pub mod policy;
mod pool;
mod routes;
mod upgrade;
mod upstream;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use axum::response::IntoResponse;

use crate::auth::Auth;
use crate::config::{AuthMode, Config};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, Reason, RouteMetrics};
use crate::plugins::{Plugin, PluginHost, PluginSet, PluginStats};
use crate::tokens::Claims;

pub use headers::{X_REQUEST_ID, X_USER_ADMIN, X_USER_ID, X_USER_LOGIN, X_USER_ROLES};
pub use routes::{Lookup, Route, RouteTable};
pub use upstream::IdleTimeout;

/// What a reload replaces at once: routes with their clients and plugins,
/// and the token cookie name.
pub struct Runtime {
    pub routes: RouteTable,
    pub plugins: PluginSet,
    /// The cookie the token may come in ([`crate::cookies::token_cookie`]).
    pub token_cookie: Option<String>,
    /// Whether any route has `cors = true` (else no request is looked up for it).
    pub any_cors: bool,
}

impl Runtime {
    /// Builds routes (and their plugin chains) from `config`. Fails, naming the
    /// route or plugin, without touching what is serving now.
    pub fn build(
        config: &Config,
        host: &PluginHost,
        base_dir: &std::path::Path,
    ) -> Result<Self, String> {
        let loaded = host
            .load(&config.plugins, base_dir)
            .map_err(|e| e.to_string())?;
        // An upstream connection pool per thread-per-core worker (routes.rs).
        let pools = crate::cores::extra_workers(config.server.runtime) + 1;
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let mut chain: Vec<Arc<Plugin>> = Vec::with_capacity(r.plugins.len());
            for name in &r.plugins {
                let plugin = loaded.get(name).ok_or_else(|| {
                    format!(
                        "routes[{i}].plugins: route '{}' names plugin '{name}', which no [[plugins]] entry defines",
                        r.name
                    )
                })?;
                chain.push(plugin);
            }
            routes.push(Route::new(r.clone(), chain, base_dir, pools)?);
        }
        Ok(Self {
            any_cors: config.routes.iter().any(|r| r.cors),
            routes: RouteTable::new(routes),
            plugins: loaded,
            token_cookie: crate::cookies::token_cookie(config),
        })
    }
}

/// The proxy: shared auth state, the swappable runtime and the metrics.
pub struct Proxy {
    auth: Arc<Auth>,
    runtime: ArcSwap<Runtime>,
    metrics: Arc<Metrics>,
    /// The metrics of requests no route took (route label `-`).
    unrouted: RouteMetrics,
}

/// What the access log line and the metrics need from the pipeline (and
/// from a forward-auth decision), filled as far as it got.
#[derive(Default)]
pub struct Access {
    pub route: Option<Arc<Route>>,
    pub user: Option<uuid::Uuid>,
    /// The client's IP ([`crate::client_ip`]), once the pipeline reached phase 5.
    pub client: Option<IpAddr>,
}

/// Who asks for a decision: the proxy itself, for a request it will
/// forward, or a forward-auth endpoint, for another proxy
/// ([`crate::forward_auth`]). Only a decision may land on a decision-only
/// route (one without `upstream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Proxy,
    Decision,
}

/// An allowed request: its route, the caller (none when anonymous) and
/// the header changes its plugins asked for.
pub struct Allowed {
    pub route: Arc<Route>,
    pub identity: Option<Arc<Claims>>,
    pub changes: policy::HeaderChanges,
}

impl Proxy {
    pub fn new(auth: Arc<Auth>, runtime: Runtime, metrics: Arc<Metrics>) -> Self {
        if let Some(trust) = auth.config.server.trust_forwarded_for {
            tracing::warn!(
                "server.trust_forwarded_for is deprecated; use server.trusted_proxies (trust_forwarded_for = {trust} now means {})",
                if trust {
                    "every peer is a trusted proxy: 0.0.0.0/0 and ::/0"
                } else {
                    "no peer is trusted: trusted_proxies = []"
                }
            );
        }
        Self {
            auth,
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            unrouted: RouteMetrics::new("-"),
        }
    }

    /// Swaps in a new runtime. Requests in flight finish with the one they
    /// started with.
    pub fn replace(&self, runtime: Runtime) {
        self.runtime.store(Arc::new(runtime));
    }

    pub fn routes(&self) -> usize {
        self.runtime.load().routes.len()
    }

    /// Counters of the plugins loaded now, for `/metrics`.
    pub fn plugin_stats(&self) -> Vec<(String, PluginStats)> {
        self.runtime
            .load()
            .plugins
            .iter()
            .map(|p| (p.name().to_string(), p.stats()))
            .collect()
    }

    /// Proxies one request through every phase; never fails: errors become
    /// problem responses.
    pub async fn handle(&self, mut req: Request<Body>) -> Response<Body> {
        let started = Instant::now();
        let runtime = self.runtime.load_full();
        let request_id = headers::request_id(req.headers());
        let method = req.method().clone();
        // 0. target: from here on, req.uri().path() is the canonical path
        // (made so by the front layer in api::router, or here).
        let target = path::rewrite_once(&mut req);
        // For the access log (a clone shares the request's bytes).
        let uri = req.uri().clone();
        let mut access = Access::default();
        let outcome = match target {
            Ok(escaped_slash) => {
                self.pipeline(
                    &runtime,
                    req,
                    escaped_slash,
                    request_id.clone(),
                    &mut access,
                )
                .await
            }
            Err(e) => Err(e.into()),
        };
        let response = match outcome {
            Ok(response) => response,
            Err(e) => {
                self.count_refused_token(&e);
                e.into_response()
            }
        };
        let response = response_filter(response, request_id.clone());
        self.log(
            &access,
            &request_id,
            &method,
            uri.path(),
            response.status(),
            started,
        );
        response
    }

    async fn pipeline(
        &self,
        runtime: &Runtime,
        mut req: Request<Body>,
        escaped_slash: bool,
        request_id: HeaderValue,
        access: &mut Access,
    ) -> Result<Response<Body>> {
        // 1 to 3: route, request filter, policy
        let host = request_host(&req);
        let Allowed {
            route,
            identity,
            changes,
        } = self.decide(
            runtime,
            &req,
            host.as_deref(),
            escaped_slash,
            Purpose::Proxy,
            access,
        )?;
        let asks_upgrade = upgrade::requested(req.headers())?;
        let cookie = runtime.token_cookie.as_deref();

        // 4. pick upstream (decide found none on a decision-only route)
        let upstream = route
            .pick_upstream()
            .ok_or_else(|| not_found(req.uri().path()))?;

        // 5. upstream request filter
        let wants_upgrade = route.config.websocket && asks_upgrade;
        let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let trusted = self.auth.config.server.trusted();
        let peer_trusted = trusted.contains(peer);
        access.client = Some(crate::client_ip::client_ip(peer, req.headers(), trusted));
        let (mut parts, body) = req.into_parts();
        let target = route.upstream_target(upstream, parts.uri.path(), parts.uri.query());
        let unforwardable = |e: &dyn std::fmt::Display| Error::BadRequest {
            code: "malformed_request",
            field: None,
            detail: format!("the request path cannot be forwarded: {e}"),
        };
        // Origin-form: the upstream is `upstream`, which upstream::send connects.
        let uri = Uri::from(
            axum::http::uri::PathAndQuery::try_from(target).map_err(|e| unforwardable(&e))?,
        );
        let h = &mut parts.headers;
        headers::strip_hop_by_hop(h, wants_upgrade);
        headers::strip_identity(h);
        // The refresh cookie never leaves the gateway; the access
        // credentials only with forward_authorization.
        let [secure, dev] = crate::cookies::REFRESH_NAMES;
        if route.config.forward_authorization {
            headers::strip_cookies(h, &[secure, dev]);
        } else {
            headers::strip_credentials(h, &[cookie.unwrap_or(secure), secure, dev]);
        }
        if let Some(claims) = &identity {
            headers::set_identity(h, claims);
        }
        let tls = crate::tls::server::is_tls(&parts.extensions);
        let h = &mut parts.headers;
        headers::set_forwarded(h, peer, host.as_deref(), peer_trusted, tls);
        h.insert(X_REQUEST_ID, request_id);
        if !route.config.preserve_host {
            match &upstream.host {
                Some(host) => h.insert(header::HOST, host.clone()),
                None => h.remove(header::HOST),
            };
        } else if !h.contains_key(header::HOST) {
            // The client's host, which an HTTP/2 client gives as the
            // authority alone; else (HTTP/1.0 without one) the upstream's.
            let client =
                (parts.uri.authority()).and_then(|a| HeaderValue::from_str(a.as_str()).ok());
            if let Some(host) = client.or_else(|| upstream.host.clone()) {
                h.insert(header::HOST, host);
            }
        }
        changes.apply(h);
        let mut out = Request::from_parts(parts, body);
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;

        // 6. send
        let sent = Instant::now();
        let mut response = upstream::send(&route, upstream, out).await?;
        route
            .metrics
            .observe_upstream(&self.metrics, sent.elapsed().as_secs_f64());
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // Dropping a refused 101 closes that upstream connection: no tunnel.
            let Some(client) = client_upgrade else {
                return Err(Error::BadGateway(
                    "the upstream switched protocols unasked".into(),
                ));
            };
            if !upgrade::accepted(response.headers()) {
                return Err(Error::BadGateway(
                    "the upstream's 101 does not switch to websocket".into(),
                ));
            }
            let upstream_side = hyper::upgrade::on(&mut response);
            let lifetime = upgrade::Lifetime {
                route: route.name().to_string(),
                idle: route.config.idle_timeout,
                token: identity
                    .as_deref()
                    .map(|c| upgrade::TokenWatch::new(c, self.auth.revocations.clone())),
            };
            upgrade::tunnel(client, upstream_side, lifetime);
            let (parts, _) = response.into_parts();
            return Ok(Response::from_parts(parts, Body::empty()));
        }
        let idle = route.config.idle_timeout;
        Ok(response.map(|b| Body::new(IdleTimeout::new(b, idle))))
    }

    /// Phases 1 to 3, the whole decision, in memory: the route for (host,
    /// canonical path, method), else 404 (405 when only the method is
    /// wrong; an encoded slash the route refuses, 400); the token of
    /// `Authorization` or the token cookie per the route's `auth` mode; then
    /// the route's plugins. The proxy runs it on the client's request before
    /// forwarding, and the forward-auth endpoints on the original request
    /// another proxy describes ([`crate::forward_auth`]): one decision for
    /// both. A proxied request that lands on a decision-only route is a 404.
    pub fn decide<B>(
        &self,
        runtime: &Runtime,
        req: &Request<B>,
        host: Option<&str>,
        escaped_slash: bool,
        purpose: Purpose,
        access: &mut Access,
    ) -> Result<Allowed> {
        // 1. route
        let lookup = runtime.routes.find(host, req.uri().path(), req.method());
        path::check_escaped_slashes(escaped_slash, lookup.escaped_slashes())?;
        let route = match lookup {
            Lookup::Found(route) => route.clone(),
            Lookup::MethodNotAllowed => {
                return Err(Error::MethodNotAllowed(
                    "this route does not accept the method".into(),
                ));
            }
            Lookup::NotFound => return Err(not_found(req.uri().path())),
        };
        if purpose == Purpose::Proxy && route.upstreams.is_empty() {
            return Err(not_found(req.uri().path()));
        }
        access.route = Some(route.clone());

        // 2. request filter: who is calling (a state change on the
        // strength of the token cookie owes the CSRF proof)
        let cookie = runtime.token_cookie.as_deref();
        let identity = self.request_filter(&route, req, cookie)?;
        access.user = identity.as_ref().map(|c| c.sub);

        // 3. policy
        let changes = policy::decide(&route, req, host, identity.as_deref())?;
        Ok(Allowed {
            route,
            identity,
            changes,
        })
    }

    /// The runtime serving now (routes, plugins, token cookie).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Counts a refused token under its reason (`proxy_auth_failures`).
    fn count_refused_token(&self, e: &Error) {
        if let Error::InvalidToken(why) = e {
            self.metrics
                .auth_failures
                .get_or_create(&Reason {
                    reason: failure_reason(why),
                })
                .inc();
        }
    }

    /// Phase 2: verifies the token per the route's `auth` mode. A token
    /// from the cookie on a request that changes state needs the CSRF
    /// proof ([`crate::csrf`]; a WebSocket handshake, the origin only),
    /// checked before the token so a forged request learns nothing.
    fn request_filter<B>(
        &self,
        route: &Route,
        req: &Request<B>,
        cookie: Option<&str>,
    ) -> Result<Option<Arc<Claims>>> {
        let mode = route.auth();
        if mode == AuthMode::Public {
            return Ok(None);
        }
        let found = headers::token_with_source(req.headers(), cookie);
        if let Some((_, headers::TokenSource::Cookie)) = found {
            let proof = if crate::csrf::changes_state(req.method()) {
                Some(crate::csrf::Proof::Full)
            } else if upgrade::requested(req.headers()).unwrap_or(true) {
                Some(crate::csrf::Proof::OriginOnly)
            } else {
                None
            };
            if let Some(proof) = proof {
                let peer = req
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip());
                let tls = crate::tls::server::is_tls(req.extensions());
                crate::csrf::verify(&self.auth.config, req.headers(), peer, tls, proof)?;
            }
        }
        match mode {
            AuthMode::Public => Ok(None),
            AuthMode::Optional => {
                Ok(found.and_then(|(t, _)| self.auth.authenticate_shared(t).ok()))
            }
            AuthMode::Required => {
                let (token, _) =
                    found.ok_or_else(|| Error::InvalidToken("missing bearer token".into()))?;
                self.auth.authenticate_shared(token).map(Some)
            }
        }
    }

    /// Whether the request is for a proxied route with `cors = true` (a
    /// preflight: for the method it announces), so that the `[cors]` layer
    /// answers it ([`crate::cors`]). The path is canonical already.
    pub fn wants_cors<B>(&self, req: &Request<B>) -> bool {
        let runtime = self.runtime.load();
        if !runtime.any_cors {
            return false;
        }
        let announced = (req.method() == axum::http::Method::OPTIONS)
            .then(|| req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD))
            .flatten()
            .and_then(|m| axum::http::Method::from_bytes(m.as_bytes()).ok());
        let method = announced.as_ref().unwrap_or(req.method());
        let host = request_host(req);
        match runtime
            .routes
            .find(host.as_deref(), req.uri().path(), method)
        {
            Lookup::Found(route) => route.config.cors,
            _ => false,
        }
    }

    /// Phase 8: one structured line per request (with the client IP of
    /// [`crate::client_ip`]), and the request counter.
    fn log(
        &self,
        access: &Access,
        request_id: &HeaderValue,
        method: &axum::http::Method,
        path: &str,
        status: StatusCode,
        started: Instant,
    ) {
        let route = access.route.as_ref().map_or("-", |r| r.name());
        access
            .route
            .as_ref()
            .map_or(&self.unrouted, |r| &r.metrics)
            .count(&self.metrics, status.as_u16());
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "authgw::access",
            request_id = request_id.to_str().unwrap_or("-"),
            route,
            %method,
            path,
            status = status.as_u16(),
            latency_ms = format_args!("{latency_ms:.3}"),
            user = access.user.map(|u| u.to_string()).unwrap_or_default(),
            client = access.client.map(|ip| ip.to_string()).unwrap_or_default(),
            "proxied"
        );
    }
}

/// Phase 7: hop-by-hop headers removed (kept on a 101 handshake), request id echoed.
fn response_filter(mut response: Response<Body>, request_id: HeaderValue) -> Response<Body> {
    let upgrading = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(response.headers_mut(), upgrading);
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    response
}

/// No route for `path` (or, for a proxied request, a decision-only one).
fn not_found(path: &str) -> Error {
    Error::NotFound {
        what: "route",
        name: path.to_string(),
    }
}

/// The host the client asked for, as routes match it ([`path::canonical_host`]:
/// lower-case, no port, no trailing dot): `Host`, else the URI's authority (HTTP/2).
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    path::canonical_host(raw)
}

/// A bounded label for a refused token.
fn failure_reason(why: &str) -> &'static str {
    match why {
        "missing bearer token" => "missing",
        "token expired" => "expired",
        "token revoked" => "revoked",
        _ => "invalid",
    }
}
