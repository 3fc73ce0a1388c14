//! Forward-auth: authgw as the decision point of another proxy (nginx
//! `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`, Envoy
//! `ext_authz`). Each endpoint reads the original request from the shape
//! its proxy sends, runs [`Proxy::decide`] on it (the proxy's own phases 1
//! to 3: route, token, plugins; memory only, no database) and answers in
//! the status contract its proxy understands. docs/forward-auth.md has the
//! configs.
//!
//! - The original request is read only from a peer in
//!   `server.trusted_proxies`; any other caller gets 403.
//! - Its path goes through the proxy's canonicalizer ([`path::canonicalize`]):
//!   what is judged is the canonical path, and what cannot be made
//!   canonical is refused.
//! - On allow: 200 with the identity headers (`X-User-*`, empty for an
//!   anonymous caller), the plugins' header sets and `X-Request-Id`.
//! - Plugins never get a client certificate here (`request.client-cert` is
//!   none): the original client's TLS ended at the calling proxy, and a
//!   certificate on the call itself is that proxy's, not the client's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use axum::http::{header, uri::PathAndQuery};
use axum::response::IntoResponse;

use crate::config::Config;
use crate::error::Error;
use crate::metrics::{Decision, Metrics};
use crate::proxy::headers::{self, X_REQUEST_ID};
use crate::proxy::{
    Access, Allowed, Proxy, Purpose, X_USER_ADMIN, X_USER_ID, X_USER_LOGIN, X_USER_ROLES, path,
};

/// The prefix Envoy's `path_prefix` names; the original path follows it.
pub const EXT_AUTHZ_PREFIX: &str = "/api/v1/authz/ext-authz";

const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// Which proxy asks, and so how the original request is read and how the
/// answer is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// nginx `auth_request`: `X-Original-URI`, `X-Original-Method`,
    /// `X-Forwarded-Host` or `Host`. Answers only 200, 401 or 403 (nginx
    /// turns any other status into a 500).
    AuthRequest,
    /// Traefik `forwardAuth`, Caddy `forward_auth`: `X-Forwarded-Method`,
    /// `-Proto`, `-Host`, `-Uri`. Denies with the decision's status and a
    /// problem, or a 302 to `authz.login_url` for a browser.
    ForwardAuth,
    /// Envoy `ext_authz` (HTTP service, `path_prefix`): the method, the path
    /// after [`EXT_AUTHZ_PREFIX`] and `Host`. Allows with 200 only.
    ExtAuthz,
}

impl Endpoint {
    /// Its label in `/metrics` and the log.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::AuthRequest => "auth-request",
            Endpoint::ForwardAuth => "forward-auth",
            Endpoint::ExtAuthz => "ext-authz",
        }
    }
}

/// The original path (and query) of an ext-authz call whose raw path is
/// `path`: what follows [`EXT_AUTHZ_PREFIX`] (`/` when nothing does), or
/// None when `path` is not under the prefix. The front layer leaves such a
/// path as it came (api::canonical_target), so that the original path is
/// made canonical on its own: a `..` in it must not climb into the prefix.
pub fn ext_authz_target(path: &str) -> Option<&str> {
    match path.strip_prefix(EXT_AUTHZ_PREFIX)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// The original request as the calling proxy describes it.
struct Original {
    method: Method,
    /// Canonical path, then the query as it came.
    uri: Uri,
    escaped_slash: bool,
    /// As routes match it (canonical), and as it came (for the login URL).
    host: Option<String>,
    raw_host: Option<String>,
    proto: &'static str,
}

/// Why no decision was made.
enum Refusal {
    /// The caller is not a trusted proxy.
    Untrusted,
    /// The original request cannot be read (missing, duplicated or
    /// malformed headers, a path the canonicalizer refuses).
    Unreadable(Error),
}

/// Answers one forward-auth call. Never fails: every refusal is an answer
/// in the endpoint's contract, counted in `/metrics` and logged.
pub fn answer(
    proxy: &Proxy,
    config: &Config,
    metrics: &Metrics,
    endpoint: Endpoint,
    mut req: Request<Body>,
) -> Response<Body> {
    let started = Instant::now();
    let request_id = headers::request_id(req.headers());
    let mut access = Access::default();
    let read = read_original(config, endpoint, &req);
    let (outcome, mut response, target) = match read {
        Err(Refusal::Untrusted) => (
            "untrusted",
            Error::Forbidden(
                "the forward-auth endpoints answer only peers in server.trusted_proxies".into(),
            )
            .into_response(),
            None,
        ),
        Err(Refusal::Unreadable(e)) => ("invalid", e.into_response(), None),
        Ok(original) => {
            let runtime = proxy.runtime();
            *req.method_mut() = original.method.clone();
            *req.uri_mut() = original.uri.clone();
            // The calling proxy's certificate, if it presented one.
            req.extensions_mut().remove::<crate::tls::PeerCertificate>();
            let decided = proxy.decide(
                &runtime,
                &req,
                original.host.as_deref(),
                original.escaped_slash,
                Purpose::Decision,
                &mut access,
            );
            let (outcome, response) = match decided {
                Ok(allowed) => ("allow", allow(allowed)),
                Err(e) => {
                    let outcome = match e {
                        Error::PolicyFailed(_) => "failed",
                        Error::BadRequest { .. } => "invalid",
                        _ => "deny",
                    };
                    let to_login = is_unauthenticated(&e)
                        .then(|| login_redirect(config, endpoint, &req, &original))
                        .flatten();
                    (outcome, to_login.unwrap_or_else(|| e.into_response()))
                }
            };
            (outcome, response, Some(original))
        }
    };
    if endpoint == Endpoint::AuthRequest {
        response = for_nginx(response);
    }
    response
        .headers_mut()
        .insert(X_REQUEST_ID, request_id.clone());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let status = response.status();
    metrics
        .decisions
        .get_or_create(&Decision {
            endpoint: endpoint.label(),
            outcome,
            status: status.as_u16(),
        })
        .inc();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        target: "authgw::authz",
        request_id = request_id.to_str().unwrap_or("-"),
        endpoint = endpoint.label(),
        outcome,
        route = access.route.as_ref().map_or("-", |r| r.name()),
        method = target.as_ref().map_or("-", |o| o.method.as_str()),
        path = target.as_ref().map_or("-", |o| o.uri.path()),
        status = status.as_u16(),
        latency_ms = format_args!("{latency_ms:.3}"),
        user = access.user.map(|u| u.to_string()).unwrap_or_default(),
        "decided"
    );
    response
}

/// 200 with what the calling proxy copies onto the upstream request: the
/// identity headers and the plugins' header sets. For an anonymous caller
/// (an optional or public route) the identity headers are there and empty:
/// a proxy that copies them (Traefik, Caddy, Envoy) then overwrites what a
/// client sent under those names instead of letting it through, and nginx
/// sends none. A plugin's removals cannot be said in a response; they do
/// not apply.
fn allow(allowed: Allowed) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    let h = response.headers_mut();
    match &allowed.identity {
        Some(claims) => headers::set_identity(h, claims),
        None => {
            for name in [X_USER_ID, X_USER_LOGIN, X_USER_ROLES, X_USER_ADMIN] {
                h.insert(name, HeaderValue::from_static(""));
            }
        }
    }
    allowed.changes.apply(h);
    response
}

/// Whether `e` asks for a login: a missing or refused token, or a plugin's
/// 401 (an anonymous caller on a path that needs one).
fn is_unauthenticated(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidToken(_) | Error::Denied { status: 401, .. }
    )
}

/// nginx's `auth_request` knows 2xx, 401 and 403; anything else becomes a
/// 500 for the client. So every other refusal (404 no route, 400 a hostile
/// path, 503 a plugin failure, a plugin's 402, ...) is a 403 here.
fn for_nginx(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    if status == StatusCode::OK
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
    {
        return response;
    }
    crate::api::problem::respond(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "refused ({}): nginx auth_request passes only 401 and 403",
            status.as_u16()
        ),
    )
}

/// A 302 to `authz.login_url` with the original URL, for a browser
/// (`Accept: text/html`) on the forward-auth endpoint, when configured.
fn login_redirect(
    config: &Config,
    endpoint: Endpoint,
    req: &Request<Body>,
    original: &Original,
) -> Option<Response<Body>> {
    if endpoint != Endpoint::ForwardAuth {
        return None;
    }
    let login = config.authz.login_url.as_deref()?;
    let wants_html = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"));
    if !wants_html {
        return None;
    }
    let host = original.raw_host.as_deref()?;
    let url = format!("{}://{host}{}", original.proto, original.uri);
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair(&config.authz.redirect_param, &url)
        .finish();
    let sep = if login.contains('?') { '&' } else { '?' };
    let location = HeaderValue::from_str(&format!("{login}{sep}{query}")).ok()?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    response.headers_mut().insert(header::LOCATION, location);
    Some(response)
}

/// The original request, from a trusted proxy only.
fn read_original(
    config: &Config,
    endpoint: Endpoint,
    req: &Request<Body>,
) -> Result<Original, Refusal> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    if !config.server.trusted().contains(peer) {
        return Err(Refusal::Untrusted);
    }
    let h = req.headers();
    let (method, target, raw_host) = match endpoint {
        Endpoint::AuthRequest => (
            required(h, &X_ORIGINAL_METHOD)?,
            required(h, &X_ORIGINAL_URI)?,
            match single(h, &headers::X_FORWARDED_HOST)? {
                Some(host) => Some(host),
                None => single(h, &header::HOST)?,
            },
        ),
        Endpoint::ForwardAuth => (
            required(h, &X_FORWARDED_METHOD)?,
            required(h, &X_FORWARDED_URI)?,
            Some(required(h, &headers::X_FORWARDED_HOST)?),
        ),
        Endpoint::ExtAuthz => {
            let target = ext_authz_target(req.uri().path()).ok_or_else(|| {
                unreadable(format!("the path must start with {EXT_AUTHZ_PREFIX}"))
            })?;
            let target = match req.uri().query() {
                Some(q) => format!("{target}?{q}"),
                None => target.to_string(),
            };
            // Also the `:authority` of an HTTP/2 call.
            let host = match single(h, &header::HOST)? {
                Some(host) => Some(host),
                None => req.uri().authority().map(|a| a.as_str()),
            };
            return original(req.method().as_str(), &target, host, "http");
        }
    };
    let proto = match single(h, &headers::X_FORWARDED_PROTO)? {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    original(method, target, raw_host, proto)
}

/// Builds the original request from its parts: the path canonical (or
/// refused, as the proxy refuses it), the host as routes match it.
fn original(
    method: &str,
    target: &str,
    raw_host: Option<&str>,
    proto: &'static str,
) -> Result<Original, Refusal> {
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| unreadable(format!("{method:?} is not an HTTP method")))?;
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let canonical = path::canonicalize(raw_path).map_err(|e| Refusal::Unreadable(e.into()))?;
    let uri = match query {
        Some(q) => format!("{}?{q}", canonical.path),
        None => canonical.path.to_string(),
    };
    let uri = PathAndQuery::try_from(uri)
        .map(Uri::from)
        .map_err(|_| unreadable("the original URI is not a valid request target".into()))?;
    let host = match raw_host {
        Some(raw) => Some(
            path::canonical_host(raw)
                .ok_or_else(|| unreadable("the original host is empty".into()))?,
        ),
        None => None,
    };
    Ok(Original {
        method,
        uri,
        escaped_slash: canonical.escaped_slash,
        host,
        raw_host: raw_host
            .filter(|h| {
                h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .map(str::to_string),
        proto,
    })
}

/// The one value of `name` (None when absent); a repeated or non-text
/// value makes the original request unreadable.
fn single<'a>(h: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, Refusal> {
    let mut values = h.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(unreadable(format!("{name} is repeated")));
    }
    first
        .to_str()
        .map(|v| Some(v.trim()))
        .map_err(|_| unreadable(format!("{name} is not text")))
}

fn required<'a>(h: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, Refusal> {
    single(h, name)?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| unreadable(format!("{name} is missing")))
}

fn unreadable(detail: String) -> Refusal {
    Refusal::Unreadable(Error::BadRequest {
        code: "invalid_original_request",
        field: None,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The original path of an ext-authz call is what follows the literal
    /// prefix; a path that only starts like it is not one.
    #[test]
    fn ext_authz_targets() {
        assert_eq!(ext_authz_target("/api/v1/authz/ext-authz"), Some("/"));
        assert_eq!(
            ext_authz_target("/api/v1/authz/ext-authz/films/../vault"),
            Some("/films/../vault")
        );
        assert_eq!(ext_authz_target("/api/v1/authz/ext-authzx/a"), None);
        assert_eq!(ext_authz_target("/api/v1/authz/other"), None);
    }
}
