//! The CSRF proof: a request authenticated by a cookie that changes state
//! must show it came from the app, not from a page on another origin that
//! the browser happily attaches the cookie for. `SameSite` alone is not
//! relied on: sibling subdomains are the same site, and older browsers
//! ignore it. The proof is both of:
//!
//! 1. **the origin**: `Origin` (or, absent, the origin of `Referer`) is one
//!    of `cors.allowed_origins` or the gateway's own origin (the scheme and
//!    `Host` the client addressed; from a trusted proxy, its
//!    `X-Forwarded-Proto` and `X-Forwarded-Host`). `Origin: null`, several
//!    `Origin`s, or neither header: refused;
//! 2. **a custom header**, `X-Requested-With` (any non-empty value), which
//!    an HTML form cannot send and a cross-origin `fetch` cannot send
//!    without a preflight that CORS refuses.
//!
//! Who calls it: the cookie modes of the Auth API (`api::auth`: login,
//! refresh, logout, logout-all) and the edge proxy for a request whose token
//! came from the access cookie (unsafe methods: both parts; a WebSocket
//! handshake, which a browser cannot add headers to: the origin only).

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, Method, header};

use crate::config::Config;
use crate::error::{Error, Result};

/// The custom header of the proof.
pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-requested-with");

use crate::proxy::headers::{X_FORWARDED_HOST, X_FORWARDED_PROTO};

/// How much proof a request owes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    /// The origin and the custom header.
    Full,
    /// The origin only (a WebSocket handshake).
    OriginOnly,
}

/// Whether a request with this method changes state (RFC 9110 §9.2.1: all
/// but the safe methods).
pub fn changes_state(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Checks the proof of a request with `headers` from `peer`; 403
/// `csrf_rejected` naming what is missing otherwise.
pub fn verify(
    config: &Config,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    tls: bool,
    proof: Proof,
) -> Result<()> {
    let origin = request_origin(headers)?;
    let allowed = config.cors.allowed_origins.contains(&origin)
        || own_origin(config, headers, peer, tls).is_some_and(|own| own == origin);
    if !allowed {
        return Err(Error::CsrfRejected(format!(
            "the request comes from origin {origin}, which is neither this gateway's nor in cors.allowed_origins"
        )));
    }
    let has_header = headers
        .get(CSRF_HEADER)
        .is_some_and(|v| !v.as_bytes().trim_ascii().is_empty());
    if proof == Proof::Full && !has_header {
        return Err(Error::CsrfRejected(
            "a request authenticated by a cookie must carry the X-Requested-With header".into(),
        ));
    }
    Ok(())
}

/// The origin the request says it comes from, lower-cased: `Origin`, else
/// `Referer`'s scheme and authority.
fn request_origin(headers: &HeaderMap) -> Result<String> {
    let refuse = |why: &str| Err(Error::CsrfRejected(why.into()));
    let mut origins = headers.get_all(header::ORIGIN).iter();
    if let Some(value) = origins.next() {
        if origins.next().is_some() {
            return refuse("the request carries several Origin headers");
        }
        return match value.to_str().ok().and_then(parse_origin) {
            Some(o) => Ok(o),
            None => refuse("the request's Origin is opaque (null) or malformed"),
        };
    }
    let mut referers = headers.get_all(header::REFERER).iter();
    match (referers.next(), referers.next()) {
        (Some(value), None) => match value.to_str().ok().and_then(parse_origin) {
            Some(o) => Ok(o),
            None => refuse("the request's Referer is not an http(s) URL"),
        },
        (Some(_), Some(_)) => refuse("the request carries several Referer headers"),
        (None, _) => refuse("a request authenticated by a cookie must say its Origin"),
    }
}

/// `scheme://host[:port]` of an http(s) origin or URL, lower-cased, the
/// default port dropped (as browsers serialize origins). None for `null`,
/// another scheme, user info, or no host.
fn parse_origin(raw: &str) -> Option<String> {
    let (scheme, rest) = raw.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if authority.is_empty() || authority.contains(['@', ' ', '\\']) {
        return None;
    }
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}"))
}

/// The origin the client addressed: `https://` over this gateway's TLS
/// (`tls`), else `http://`, and `Host` (the URI's authority for HTTP/2),
/// or what a trusted proxy says it was.
pub(crate) fn own_origin(
    config: &Config,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    tls: bool,
) -> Option<String> {
    let single = |name: &HeaderName| {
        let mut all = headers.get_all(name).iter();
        match (all.next(), all.next()) {
            (Some(v), None) => v.to_str().ok(),
            _ => None,
        }
    };
    let trusted = peer.is_some_and(|ip| config.server.trusted().contains(ip));
    let proto = trusted
        .then(|| single(&X_FORWARDED_PROTO))
        .flatten()
        .unwrap_or(if tls { "https" } else { "http" });
    let host = trusted
        .then(|| single(&X_FORWARDED_HOST))
        .flatten()
        .or_else(|| single(&header::HOST))?;
    parse_origin(&format!("{}://{}", proto.trim(), host.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn config(allowed: &[&str]) -> Config {
        let mut c = Config::default();
        c.cors.allowed_origins = allowed.iter().map(|s| s.to_string()).collect();
        c
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap_or(header::WARNING),
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("x")),
            );
        }
        h
    }

    fn check(c: &Config, pairs: &[(&str, &str)]) -> std::result::Result<(), String> {
        verify(
            c,
            &headers(pairs),
            Some([127, 0, 0, 1].into()),
            false,
            Proof::Full,
        )
        .map_err(|e| e.to_string())
    }

    /// Over this gateway's TLS its own origin is `https://host`: the
    /// `http://` origin of the same host is another origin and refused.
    #[test]
    fn own_origin_over_tls_is_https() {
        let c = config(&[]);
        let peer = Some([127, 0, 0, 1].into());
        let with = |origin: &str| {
            headers(&[
                ("origin", origin),
                ("x-requested-with", "authgw"),
                ("host", "auth.cinema.example"),
            ])
        };
        let https = with("https://auth.cinema.example");
        let http = with("http://auth.cinema.example");
        assert!(verify(&c, &https, peer, true, Proof::Full).is_ok());
        assert!(verify(&c, &http, peer, true, Proof::Full).is_err());
        assert!(verify(&c, &https, peer, false, Proof::Full).is_err());
    }

    /// A listed origin or the gateway's own, with the header, passes;
    /// every hostile variant is refused.
    #[test]
    fn origin_and_header_are_both_needed() {
        let c = config(&["https://cinema.example"]);
        let xrw = ("x-requested-with", "authgw");
        let host = ("host", "auth.cinema.example");
        assert_eq!(
            check(&c, &[("origin", "https://cinema.example"), xrw, host]),
            Ok(())
        );
        assert_eq!(
            check(&c, &[("origin", "http://auth.cinema.example"), xrw, host]),
            Ok(())
        );
        assert_eq!(
            check(
                &c,
                &[("referer", "https://cinema.example/films?x=1"), xrw, host]
            ),
            Ok(())
        );
        for bad in [
            vec![("origin", "https://cinema.example"), host],
            vec![
                ("origin", "https://cinema.example"),
                ("x-requested-with", " "),
                host,
            ],
            vec![("origin", "https://evil.example"), xrw, host],
            vec![("origin", "https://cinema.example.evil.example"), xrw, host],
            vec![("origin", "https://sub.cinema.example"), xrw, host],
            vec![("origin", "http://cinema.example"), xrw, host],
            vec![("origin", "https://cinema.example:8443"), xrw, host],
            vec![("origin", "null"), xrw, host],
            vec![
                ("origin", "https://cinema.example"),
                ("origin", "https://evil.example"),
                xrw,
                host,
            ],
            vec![("origin", "https://user@cinema.example"), xrw, host],
            vec![("referer", "https://evil.example/"), xrw, host],
            vec![("referer", "javascript:alert(1)"), xrw, host],
            vec![xrw, host],
            vec![("origin", "https://auth.cinema.example"), xrw, host],
            vec![("origin", "http://auth.cinema.example"), xrw],
        ] {
            assert!(check(&c, &bad).is_err(), "{bad:?}");
        }
    }

    /// The default port and letter case do not matter; another port does.
    #[test]
    fn origins_compare_as_browsers_serialize_them() {
        assert_eq!(
            parse_origin("HTTPS://Cinema.Example:443").as_deref(),
            Some("https://cinema.example")
        );
        assert_eq!(
            parse_origin("http://localhost:3000/a").as_deref(),
            Some("http://localhost:3000")
        );
        assert_eq!(parse_origin("null"), None);
        assert_eq!(parse_origin("file:///etc/passwd"), None);
        assert_eq!(parse_origin("https://"), None);
    }

    /// The forwarded scheme and host count only from a trusted proxy.
    #[test]
    fn forwarded_origin_only_from_trusted_proxies() {
        let mut c = config(&[]);
        let h = headers(&[
            ("origin", "https://auth.example"),
            ("x-requested-with", "1"),
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "auth.example"),
        ]);
        let peer = Some([10, 0, 0, 9].into());
        assert!(verify(&c, &h, peer, false, Proof::Full).is_err());
        c.server.trusted_proxies = vec![
            "10.0.0.0/8"
                .parse()
                .unwrap_or_else(|_| ipnet::IpNet::default()),
        ];
        assert!(verify(&c, &h, peer, false, Proof::Full).is_ok());
        assert!(verify(&c, &h, Some([192, 0, 2, 1].into()), false, Proof::Full).is_err());
    }

    /// A WebSocket handshake owes the origin, not the header.
    #[test]
    fn websocket_needs_the_origin_only() {
        let c = config(&["https://cinema.example"]);
        let ok = headers(&[("origin", "https://cinema.example")]);
        let peer = Some([127, 0, 0, 1].into());
        assert!(verify(&c, &ok, peer, false, Proof::OriginOnly).is_ok());
        let evil = headers(&[("origin", "https://evil.example")]);
        assert!(verify(&c, &evil, peer, false, Proof::OriginOnly).is_err());
        assert!(changes_state(&Method::POST) && changes_state(&Method::DELETE));
        assert!(!changes_state(&Method::GET) && !changes_state(&Method::HEAD));
    }
}
