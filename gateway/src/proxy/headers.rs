//! Header rewriting for the proxy: hop-by-hop removal, identity headers,
//! forwarding headers and the request id.

use std::net::IpAddr;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::tokens::Claims;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
pub const X_USER_LOGIN: HeaderName = HeaderName::from_static("x-user-login");
pub const X_USER_ROLES: HeaderName = HeaderName::from_static("x-user-roles");
pub const X_USER_ADMIN: HeaderName = HeaderName::from_static("x-user-admin");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// How many [`HOP_BY_HOP`] names there are.
const HOPS: usize = 10;

/// Headers that describe one connection, not the message (RFC 9110 7.6.1),
/// and `HTTP2-Settings`, which only means something with `Upgrade: h2c`.
/// `HeaderName`s, not strings: removing by a string parses it first, on
/// every request, twice (request and response).
const HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Headers a plugin may neither set nor remove: they frame the message or
/// describe the connection, which is the proxy's business alone.
const NOT_FOR_PLUGINS: [&str; 10] = [
    "connection",
    "transfer-encoding",
    "content-length",
    "host",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "http2-settings",
];

/// Forwarding headers other than `X-Forwarded-*`: believed only from a
/// trusted proxy. `X-Original-URI` and `-Method` are what nginx's
/// `auth_request` passes to an auth service; an upstream must not take them
/// from a client either.
const FORWARDING: [&str; 6] = [
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-original-method",
];

/// Whether `name`, normalized as CGI, WSGI, PHP and some Node servers do
/// (lower case, `_` read as `-`), starts with `prefix` (lower case, dashes).
/// `X_User_Id` reaches such an application as `X-User-Id` would.
fn normalized_starts_with(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(n, p)| normalize(n) == p)
}

/// Whether `name`, normalized (lower case, `_` read as `-`), is `target`.
fn normalized_eq(name: &str, target: &str) -> bool {
    name.len() == target.len() && normalized_starts_with(name, target)
}

fn normalize(b: u8) -> u8 {
    match b {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

/// Removes hop-by-hop headers, including any that `Connection` names. With
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay (a WebSocket
/// handshake being passed through).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // What peers list is almost always hop-by-hop already (`keep-alive`,
    // `upgrade`), removed below: a list of other names is made only when
    // there is one.
    if connection_options(headers).any(|name| !is_hop_by_hop(name)) {
        let named: Vec<HeaderName> = connection_options(headers)
            .filter(|name| !is_hop_by_hop(name))
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    // Only the names present are removed: removing an absent name still
    // hashes it and probes the map, ten times a message (issue 18). One
    // pass over the names the message has (a handful) finds them instead.
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, found)| *found) {
        if keep_upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The names `Connection` lists, trimmed (a value that is not text lists none).
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Whether `name` (any case) is one of [`HOP_BY_HOP`].
fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_str().eq_ignore_ascii_case(name))
}

/// Whether `name` is one of authgw's identity headers: `X-User-*` in any
/// case, with `_` for any `-` (`X_USER_ADMIN`). Only authgw sets them, so
/// they are stripped from clients, never shown to a plugin
/// (plugins/needs.rs) and never set or removed by one.
pub fn is_identity_header(name: &str) -> bool {
    normalized_starts_with(name, "x-user-")
}

/// Whether `name` is a forwarding header (`Forwarded`, `X-Forwarded-*`,
/// `X-Real-IP`, `X-Original-URL`, `X-Rewrite-URL`; any case, `_` for `-`):
/// what it says is believed only from a trusted proxy.
pub fn is_forwarding_header(name: &str) -> bool {
    normalized_starts_with(name, "x-forwarded-")
        || FORWARDING.iter().any(|f| normalized_eq(name, f))
}

/// Whether a plugin may not set or remove `name`: hop-by-hop and framing
/// headers (`Connection`, `Transfer-Encoding`, `Content-Length`, `Host`,
/// `Upgrade`, `TE`, `Trailer`, ...; any case, `_` for `-`).
pub fn is_not_for_plugins(name: &str) -> bool {
    NOT_FOR_PLUGINS.iter().any(|f| normalized_eq(name, f))
}

fn strip_where(headers: &mut HeaderMap, matches: impl Fn(&str) -> bool) {
    let found: Vec<HeaderName> = headers
        .keys()
        .filter(|k| matches(k.as_str()))
        .cloned()
        .collect();
    for name in found {
        headers.remove(name);
    }
}

/// Removes every identity header ([`is_identity_header`]): only authgw sets them.
pub fn strip_identity(headers: &mut HeaderMap) {
    strip_where(headers, is_identity_header);
}

/// Sets the identity headers from verified claims.
pub fn set_identity(headers: &mut HeaderMap, claims: &Claims) {
    // Made once per verified token and kept with its cached claims.
    let values = claims.header_values.0.get_or_init(|| {
        // Logins and role names are validated ASCII, so this never skips in
        // practice; a value that cannot be a header is left out, never mangled.
        let value = |v: &str| HeaderValue::from_str(v).ok();
        [
            value(&claims.sub.to_string()),
            value(&claims.login),
            value(&claims.roles.join(",")),
            Some(HeaderValue::from_static(if claims.adm {
                "true"
            } else {
                "false"
            })),
        ]
    });
    for (name, value) in [X_USER_ID, X_USER_LOGIN, X_USER_ROLES, X_USER_ADMIN]
        .into_iter()
        .zip(values)
    {
        if let Some(v) = value {
            headers.insert(name, v.clone());
        }
    }
}

/// `X-Forwarded-For`, `-Proto` and `-Host`. From a trusted proxy
/// (`peer_trusted`) the incoming forwarding headers stay, the peer is
/// appended to `X-Forwarded-For` and `-Proto`/`-Host` are set only when
/// missing. From any other peer every forwarding header
/// ([`is_forwarding_header`]) is dropped first: `X-Forwarded-For` is the
/// peer, `-Proto` is `https` when the client spoke TLS to this gateway
/// (`tls`), else `http`, and `-Host` the host the client asked for.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    original_host: Option<&str>,
    peer_trusted: bool,
    tls: bool,
) {
    if !peer_trusted {
        strip_where(headers, is_forwarding_header);
    }
    let prior: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let peer = peer.to_canonical();
    let xff = if prior.is_empty() {
        ip_text(peer)
    } else {
        format!("{}, {peer}", prior.join(", "))
    };
    // The String's buffer becomes the value's, without a copy.
    if let Ok(v) = HeaderValue::try_from(xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(v) = original_host.and_then(|h| HeaderValue::from_str(h).ok())
    {
        headers.insert(X_FORWARDED_HOST, v);
    }
}

/// `ip` as text, as its `Display` writes it. An IPv4 address is written
/// digit by digit: `Display` goes through the formatting machinery (with
/// padding support), about a thousand instructions per proxied request for
/// `X-Forwarded-For` (issue 18).
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// The client's request id if it is a sane one (1-128 visible ASCII
/// characters), else a fresh one ([`fresh_request_id`]).
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&X_REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(fresh_request_id)
}

/// A new request id: 32 lower-case hex digits, the keyed SipHash of a
/// process-wide counter (two 64-bit halves). The key is drawn from the OS
/// once per process, so ids are unique within a process, do not repeat
/// across restarts, and reveal neither the counter (how many requests were
/// served) nor each other; no syscall per request, where a UUID v4 drew 16
/// bytes from `getrandom` every time (issue 18). An id is a label for logs,
/// never a secret or a credential.
pub fn fresh_request_id() -> HeaderValue {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEY: LazyLock<std::hash::RandomState> = LazyLock::new(std::hash::RandomState::new);
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let half = |salt: u8| {
        let mut h = KEY.build_hasher();
        h.write_u64(n);
        h.write_u8(salt);
        h.finish()
    };
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (i, word) in [half(0), half(1)].into_iter().enumerate() {
        for (j, digit) in id[i * 16..(i + 1) * 16].iter_mut().enumerate() {
            *digit = HEX[((word >> (60 - 4 * j)) & 0xf) as usize];
        }
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("-"))
}

/// Where the request's token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer`: sent by the app's own code, so no CSRF proof.
    Header,
    /// The token cookie, which a browser attaches to any request: a state
    /// change owes the CSRF proof ([`crate::csrf`]).
    Cookie,
}

/// The bearer token: `Authorization: Bearer <t>`, else the named cookie.
pub fn token<'a>(headers: &'a HeaderMap, cookie: Option<&str>) -> Option<&'a str> {
    token_with_source(headers, cookie).map(|(t, _)| t)
}

/// [`token`] and where it came from. A token cookie present several times
/// (a tossed cookie beside ours) counts as no token.
pub fn token_with_source<'a>(
    headers: &'a HeaderMap,
    cookie: Option<&str>,
) -> Option<(&'a str, TokenSource)> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty());
    if let Some(t) = from_header {
        return Some((t, TokenSource::Header));
    }
    match crate::cookies::find(headers, cookie?) {
        crate::cookies::Found::Once(t) => Some((t, TokenSource::Cookie)),
        _ => None,
    }
}

/// Removes the credentials: `Authorization` and the named cookies (the
/// token cookie, the refresh cookie); other cookies stay.
pub fn strip_credentials(headers: &mut HeaderMap, names: &[&str]) {
    headers.remove(header::AUTHORIZATION);
    strip_cookies(headers, names);
}

/// Removes the named cookies; other cookies stay.
pub fn strip_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let credential = |k: &str| names.contains(&k);
    if !cookies(headers).any(|(k, _)| credential(k)) {
        return;
    }
    let kept: Vec<String> = cookies(headers)
        .filter(|(k, _)| !credential(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
}

use crate::cookies::pairs as cookies;

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    /// Every `X-User-*` name is an identity header, in any case; names that
    /// only resemble one (no dash, a longer word, too short) are not.
    #[test]
    fn identity_header_names() {
        for name in ["x-user-id", "X-User-Roles", "X-USER-", "x-user-anything"] {
            assert!(is_identity_header(name), "{name}");
        }
        for name in [
            "x-user",
            "x-users-id",
            "x-userid",
            "user-id",
            "",
            "x-request-id",
        ] {
            assert!(!is_identity_header(name), "{name}");
        }
    }

    /// `_` counts as `-` (CGI, WSGI and PHP read `X_User_Id` as `X-User-Id`),
    /// in identity, forwarding and plugin-forbidden names alike.
    #[test]
    fn underscores_count_as_dashes() {
        for name in ["x_user_id", "X_USER_ADMIN", "x-user_roles", "X_User-Login"] {
            assert!(is_identity_header(name), "{name}");
        }
        for name in [
            "x_forwarded_for",
            "X-Forwarded-Proto",
            "forwarded",
            "X_Real_IP",
            "x-original-url",
            "X_REWRITE_URL",
            "X-Original-URI",
            "x_original_method",
        ] {
            assert!(is_forwarding_header(name), "{name}");
        }
        assert!(!is_forwarding_header("x-forwarded"));
        assert!(!is_forwarding_header("forwarded-for"));
        for name in [
            "Transfer_Encoding",
            "content-length",
            "HOST",
            "te",
            "trailer",
        ] {
            assert!(is_not_for_plugins(name), "{name}");
        }
        assert!(!is_not_for_plugins("x-te"));
        assert!(!is_not_for_plugins("hostname"));
    }

    /// An untrusted peer's forwarding headers all go and X-Forwarded-For is
    /// the peer; a trusted peer's stay, with the peer appended.
    #[test]
    fn forwarding_headers_by_trust() {
        let incoming = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x_forwarded_for", "7.7.7.7"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-original-url", "/admin"),
            ("accept", "*/*"),
        ];
        let peer: IpAddr = "10.0.0.2".parse().expect("ip");
        let mut h = map(&incoming);
        set_forwarded(&mut h, peer, Some("example.org"), false, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto"
            ]
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.org");

        let mut h = map(&incoming);
        h.append("x-forwarded-for", HeaderValue::from_static("8.8.8.8"));
        set_forwarded(&mut h, peer, Some("example.org"), true, false);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 8.8.8.8, 10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-real-ip"], "6.6.6.6");
        assert_eq!(h["forwarded"], "for=6.6.6.6");
    }

    /// Hop-by-hop headers go, including those `Connection` lists; end-to-end stay.
    #[test]
    fn hop_by_hop_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));

        // A listed name in another case, after hop-by-hop ones, in a second
        // Connection header; the WebSocket pair kept for a handshake.
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("connection", "KEEP-ALIVE , X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("proxy-connection", "keep-alive"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 3, "{h:?}");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(h.contains_key("accept"));
    }

    /// Each hop-by-hop name goes whether it comes alone, twice (two values)
    /// or with all the others, in a request or a response; what else the
    /// message has stays. With `keep_upgrade` only the WebSocket pair stays.
    #[test]
    fn every_hop_by_hop_name_removed() {
        for name in &HOP_BY_HOP {
            let mut h = map(&[
                ("accept", "*/*"),
                (name.as_str(), "1"),
                (name.as_str(), "2"),
            ]);
            strip_hop_by_hop(&mut h, false);
            assert!(!h.contains_key(name), "{name}: {h:?}");
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
        let hops = HOP_BY_HOP;
        let all: Vec<(&str, &str)> = hops
            .iter()
            .map(|n| (n.as_str(), "upgrade"))
            .chain([("accept", "*/*"), ("server", "nginx")])
            .collect();
        let left = |keep_upgrade: bool| {
            let mut h = map(&all);
            strip_hop_by_hop(&mut h, keep_upgrade);
            let mut names: Vec<String> = h.keys().map(ToString::to_string).collect();
            names.sort_unstable();
            names
        };
        assert_eq!(left(false), ["accept", "server"]);
        assert_eq!(left(true), ["accept", "connection", "server", "upgrade"]);
    }

    /// `ip_text` writes what `Display` writes: every octet value in every
    /// position of an IPv4 address, and IPv6 addresses.
    #[test]
    fn ip_text_is_display() {
        for o in 0..=255u8 {
            for octets in [[o, 0, 0, 0], [1, o, 2, 3], [10, 0, o, 9], [255, 99, 100, o]] {
                let ip = IpAddr::from(octets);
                assert_eq!(ip_text(ip), ip.to_string());
            }
        }
        for raw in ["::1", "2001:db8::7", "fe80::1:2:3:4", "::"] {
            let ip: IpAddr = raw.parse().expect("ip");
            assert_eq!(ip_text(ip), raw);
        }
    }

    /// The token cookie is found, and removed without touching other cookies.
    #[test]
    fn token_cookie() {
        let mut h = map(&[("cookie", "a=1; at=tok; b=2")]);
        assert_eq!(token(&h, Some("at")), Some("tok"));
        assert_eq!(token(&h, None), None);
        assert_eq!(
            token_with_source(&h, Some("at")),
            Some(("tok", TokenSource::Cookie))
        );
        strip_credentials(&mut h, &["at"]);
        assert_eq!(
            h.get("cookie").and_then(|v| v.to_str().ok()),
            Some("a=1; b=2")
        );
    }

    /// A token cookie sent twice (one tossed by a sibling subdomain) is no
    /// token; the header wins over the cookie; the refresh cookie is
    /// stripped with the token cookie.
    #[test]
    fn token_cookie_twice_is_none() {
        let mut h = map(&[("cookie", "at=mine; at=tossed; authgw_refresh=r; c=3")]);
        assert_eq!(token(&h, Some("at")), None);
        h.insert("authorization", HeaderValue::from_static("Bearer hdr"));
        assert_eq!(
            token_with_source(&h, Some("at")),
            Some(("hdr", TokenSource::Header))
        );
        strip_credentials(&mut h, &["at", "authgw_refresh"]);
        assert_eq!(h.get("cookie").and_then(|v| v.to_str().ok()), Some("c=3"));
        assert!(h.get("authorization").is_none());
    }

    /// A client's sane request id is kept; junk is replaced.
    #[test]
    fn request_ids() {
        assert_eq!(request_id(&map(&[("x-request-id", "abc-1")])), "abc-1");
        assert_ne!(request_id(&map(&[("x-request-id", "a b")])), "a b");
    }

    /// Fresh ids are 32 hex digits, all distinct, and not a visible count:
    /// consecutive ids share no common prefix the way counters do.
    #[test]
    fn fresh_request_ids_are_distinct_hex() {
        let ids: Vec<String> = (0..10_000)
            .map(|_| fresh_request_id().to_str().expect("ascii").to_string())
            .collect();
        assert!(ids.iter().all(|id| {
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }));
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        let shared_prefix = ids.windows(2).filter(|w| w[0][..8] == w[1][..8]).count();
        assert!(
            shared_prefix < 5,
            "{shared_prefix} neighbours share 8 leading digits"
        );
    }
}
