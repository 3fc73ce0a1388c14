//! CORS for browser apps on other origins (`[cors]`, docs/browser.md):
//! tower-http's layer, built once from the config, on the Auth API (not the
//! forward-auth endpoints, whose callers are proxies: an `OPTIONS` there
//! is an original request to decide, never a preflight to answer) and on
//! proxied routes with `cors = true`.
//!
//! Where it applies, every `OPTIONS` is answered by authgw (a preflight
//! needs no token and never reaches an upstream), every answer carries
//! `Vary: origin, access-control-request-method,
//! access-control-request-headers`, and an origin not on the exact list gets
//! no CORS header at all ([`only_for_allowed`]), so the browser keeps the
//! answer from the page. On a proxied route the upstream's own `Access-Control-*`
//! headers are removed first: the gateway's list is the only one.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response};
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::CorsConfig;
use crate::proxy::Proxy;

/// The layer for `config`, or None when no origin is allowed (CORS off).
/// The config was validated ([`check_origin`], no wildcard with
/// credentials), so nothing here can make tower-http panic.
pub fn layer(config: &CorsConfig) -> Option<CorsLayer> {
    if config.allowed_origins.is_empty() {
        return None;
    }
    let origin = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    let methods: Vec<Method> = config
        .allowed_methods
        .iter()
        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
        .collect();
    let names = |list: &[String]| -> Vec<HeaderName> {
        list.iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect()
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_credentials(config.allow_credentials)
            .allow_methods(methods)
            .allow_headers(names(&config.allowed_headers))
            .expose_headers(names(&config.exposed_headers))
            .max_age(config.max_age),
    )
}

/// Checks that `origin` is an origin as a browser serializes it in the
/// `Origin` header: `http` or `https`, a host, an optional non-default
/// port, lower case, nothing else. Anything else could never match, so it
/// is a config error, not a silent no-op.
pub fn check_origin(origin: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{origin:?}: {why}"));
    if origin == "null" {
        return bad(
            "\"null\" is the origin of sandboxed frames and local files; it cannot be trusted",
        );
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return bad("expected scheme://host[:port], e.g. \"https://cinema.example\"");
    };
    if scheme != "http" && scheme != "https" {
        return bad("the scheme must be http or https");
    }
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ', '*']) {
        return bad(
            "an origin has a host and an optional port, no path (not even a trailing '/'), query or user",
        );
    }
    if origin.bytes().any(|b| b.is_ascii_uppercase()) {
        return bad("browsers send origins in lower case");
    }
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    if authority.ends_with(default_port) {
        return bad("browsers omit the default port");
    }
    match format!("{origin}/").parse::<axum::http::Uri>() {
        Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => bad("not a valid origin"),
    }
}

/// Proxies `req` (for a route with `cors = true`) under the CORS layer:
/// a preflight is answered here; anything else goes through the proxy, and
/// the upstream's own CORS headers are replaced by the gateway's.
pub async fn proxied(cors: &CorsLayer, proxy: Arc<Proxy>, req: Request<Body>) -> Response<Body> {
    let inner = tower::service_fn(move |req: Request<Body>| {
        let proxy = proxy.clone();
        async move {
            let mut response = proxy.handle(req).await;
            strip_access_control(response.headers_mut());
            Ok::<_, Infallible>(response)
        }
    });
    match cors.layer(inner).oneshot(req).await {
        Ok(response) => only_for_allowed(response),
        Err(never) => match never {},
    }
}

/// An answer to an origin that is not allowed carries no CORS header at
/// all: tower-http leaves out `Access-Control-Allow-Origin` but still says
/// `-Allow-Credentials`, `-Expose-Headers` (and, to a preflight, the
/// methods, headers and max-age) to everyone, which tells a stranger the
/// policy for nothing. `Vary` stays.
pub fn only_for_allowed(mut response: Response<Body>) -> Response<Body> {
    if !response
        .headers()
        .contains_key(axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        strip_access_control(response.headers_mut());
    }
    response
}

/// Removes every `Access-Control-*` response header.
fn strip_access_control(headers: &mut axum::http::HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only serialized http(s) origins are accepted.
    #[test]
    fn origins() {
        for good in [
            "https://cinema.example",
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "https://[::1]:8443",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "null",
            "cinema.example",
            "https://cinema.example/",
            "https://cinema.example/app",
            "https://Cinema.example",
            "https://cinema.example:443",
            "http://cinema.example:80",
            "ftp://cinema.example",
            "https://user@cinema.example",
            "https://*.cinema.example",
            "https://",
            "https://cinema.example?x",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    /// No origins, no layer.
    #[test]
    fn off_without_origins() {
        assert!(layer(&CorsConfig::default()).is_none());
        let c = CorsConfig {
            allowed_origins: vec!["https://cinema.example".into()],
            ..CorsConfig::default()
        };
        assert!(layer(&c).is_some());
    }
}
