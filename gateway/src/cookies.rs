//! Cookie sessions for browser apps (docs/browser.md): the refresh token as
//! an HttpOnly cookie that page scripts cannot read, and optionally the
//! access token as another, for the edge proxy.
//!
//! | cookie | name (`auth.cookie_secure`) | name (development) | Path |
//! | --- | --- | --- | --- |
//! | refresh | `__Secure-authgw_refresh` | `authgw_refresh` | `/api/v1/auth` |
//! | access (`auth.access_cookie`) | `proxy.token_cookie`, else `__Host-authgw_access` | `proxy.token_cookie`, else `authgw_access` | `/` |
//!
//! Both are `HttpOnly`, `Secure` unless in development, and carry
//! `auth.cookie_same_site`. The refresh cookie's Path reaches refresh and
//! logout (and the rest of `/api/v1/auth`), never a proxied route; the
//! proxy strips both before forwarding anyway ([`crate::proxy`]).

use axum::http::{HeaderMap, HeaderValue, header};

use crate::config::{AuthConfig, Config, SameSite};

/// Where the refresh cookie is sent: the refresh and logout endpoints.
pub const REFRESH_PATH: &str = "/api/v1/auth";

/// The refresh cookie's two names, secure and development: the proxy
/// strips both before forwarding.
pub const REFRESH_NAMES: [&str; 2] = ["__Secure-authgw_refresh", "authgw_refresh"];

/// The refresh cookie's name: `__Secure-` needs `Secure`, and `__Host-`
/// would need `Path=/`, which is not narrow.
pub fn refresh_name(auth: &AuthConfig) -> &'static str {
    let [secure, dev] = REFRESH_NAMES;
    if auth.cookie_secure { secure } else { dev }
}

/// The cookie the edge proxy reads the access token from: `proxy.token_cookie`;
/// with `auth.access_cookie` and none named, the default access cookie.
pub fn token_cookie(config: &Config) -> Option<String> {
    match &config.proxy.token_cookie {
        Some(name) => Some(name.clone()),
        None if config.auth.access_cookie => Some(
            if config.auth.cookie_secure {
                "__Host-authgw_access"
            } else {
                "authgw_access"
            }
            .into(),
        ),
        None => None,
    }
}

/// Cookie `name` of a request: absent, once, or several times. Several is
/// what a sibling subdomain's `Domain=` cookie of the same name (cookie
/// tossing: `__Secure-` allows `Domain`) looks like beside ours; which is
/// which cannot be told, so the caller refuses both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a> {
    Absent,
    Once(&'a str),
    Several,
}

/// Looks cookie `name` up in every `Cookie` header (empty values ignored).
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Found<'a> {
    let mut values = pairs(headers).filter(|(k, v)| *k == name && !v.is_empty());
    match (values.next(), values.next()) {
        (None, _) => Found::Absent,
        (Some((_, v)), None) => Found::Once(v),
        (Some(_), Some(_)) => Found::Several,
    }
}

/// Every `name=value` pair of the request's `Cookie` headers, trimmed.
pub fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
}

/// A `Set-Cookie` value: `name=value` for `max_age` seconds at `path`, with
/// the session cookies' attributes. `max_age` 0 with an empty value clears it.
pub fn set(auth: &AuthConfig, name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
    let same_site = match auth.cookie_same_site {
        SameSite::Strict => "Strict",
        SameSite::Lax => "Lax",
        SameSite::None => "None",
    };
    let secure = if auth.cookie_secure { "; Secure" } else { "" };
    let raw = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly{secure}; SameSite={same_site}"
    );
    // Names are validated and values are UUIDs or JWTs (base64url and
    // dots): always a valid header value.
    HeaderValue::from_str(&raw).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The `Set-Cookie` values that end a cookie session: the refresh cookie,
/// and the access cookie when the proxy reads one.
pub fn clear(config: &Config, token_cookie: Option<&str>) -> Vec<HeaderValue> {
    let mut out = vec![set(
        &config.auth,
        refresh_name(&config.auth),
        "",
        REFRESH_PATH,
        0,
    )];
    if let Some(name) = token_cookie.filter(|_| config.auth.access_cookie) {
        out.push(set(&config.auth, name, "", "/", 0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The production attributes: HttpOnly, Secure, SameSite=Strict, the
    /// narrow Path, the `__Secure-` name.
    #[test]
    fn refresh_cookie_attributes() {
        let auth = AuthConfig::default();
        let v = set(&auth, refresh_name(&auth), "t", REFRESH_PATH, 60);
        assert_eq!(
            v.to_str().unwrap_or_default(),
            "__Secure-authgw_refresh=t; Path=/api/v1/auth; Max-Age=60; HttpOnly; Secure; SameSite=Strict"
        );
        let dev = AuthConfig {
            cookie_secure: false,
            cookie_same_site: SameSite::Lax,
            access_cookie: false,
            ..AuthConfig::default()
        };
        let v = set(&dev, refresh_name(&dev), "t", REFRESH_PATH, 60);
        assert_eq!(
            v.to_str().unwrap_or_default(),
            "authgw_refresh=t; Path=/api/v1/auth; Max-Age=60; HttpOnly; SameSite=Lax"
        );
    }

    /// The access cookie is `proxy.token_cookie`, or a `__Host-` default
    /// only when `auth.access_cookie` asks for one.
    #[test]
    fn token_cookie_name() {
        let mut c = Config::default();
        assert_eq!(token_cookie(&c), None);
        c.auth.access_cookie = true;
        assert_eq!(token_cookie(&c).as_deref(), Some("__Host-authgw_access"));
        c.proxy.token_cookie = Some("at".into());
        assert_eq!(token_cookie(&c).as_deref(), Some("at"));
        assert_eq!(clear(&c, Some("at")).len(), 2);
        c.auth.access_cookie = false;
        assert_eq!(clear(&c, Some("at")).len(), 1);
    }

    /// The named cookie over several headers; a second value (a tossed
    /// cookie) is reported, not silently ignored.
    #[test]
    fn finds_the_cookie_once() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; authgw_refresh="),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("authgw_refresh=x; b=2"),
        );
        assert_eq!(find(&h, "authgw_refresh"), Found::Once("x"));
        assert_eq!(find(&h, "c"), Found::Absent);
        h.append(header::COOKIE, HeaderValue::from_static("authgw_refresh=y"));
        assert_eq!(find(&h, "authgw_refresh"), Found::Several);
    }
}
