//! The client's IP address, one rule for the proxy and the Auth API (rate
//! limits, login history, session rows): the TCP peer, unless the peer is a
//! trusted proxy (`server.trusted_proxies`); then the right-most
//! `X-Forwarded-For` entry that is not a trusted proxy.
//!
//! Right-most, not left-most: each trusted proxy appends the address it saw,
//! so the entries right of the first untrusted one were written by proxies
//! we trust, and everything left of it may be the client's own invention.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The networks whose `X-Forwarded-For` is believed. Borrowed from the
/// config, so it costs nothing to pass around per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustedProxies<'a> {
    nets: &'a [IpNet],
    /// Every peer is trusted: the deprecated `trust_forwarded_for = true`.
    everyone: bool,
}

impl<'a> TrustedProxies<'a> {
    pub fn new(nets: &'a [IpNet]) -> Self {
        Self {
            nets,
            everyone: false,
        }
    }

    /// Every address is a trusted proxy (what `trust_forwarded_for = true`
    /// meant: the left-most `X-Forwarded-For` entry is the client).
    pub fn everyone() -> Self {
        Self {
            nets: &[],
            everyone: true,
        }
    }

    /// Whether no peer is trusted (forwarding headers are then the client's
    /// own and never believed).
    pub fn is_none(&self) -> bool {
        !self.everyone && self.nets.is_empty()
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address as its IPv4 form) is a
    /// trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.everyone || self.nets.iter().any(|net| net.contains(&ip))
    }
}

/// The client's IP for a request from `peer` carrying `headers`.
///
/// An untrusted peer is the client, whatever it says. From a trusted peer,
/// the `X-Forwarded-For` entries (every such header, in order) are walked
/// from the right; the first that is not a trusted proxy is the client. An
/// entry that is not an IP address ends the walk at the trusted hop right of
/// it (the garbage came from beyond what we trust). When every entry is
/// trusted, the left-most one is the client.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: TrustedProxies<'_>) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_entry(entry) else {
            return client;
        };
        client = ip;
        if !trusted.contains(ip) {
            return ip;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as some proxies write them.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(ip.to_canonical())
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("cidr")).collect()
    }

    /// With nothing trusted, the peer is the client whatever X-Forwarded-For says.
    #[test]
    fn untrusted_peer_is_the_client() {
        let h = xff(&["6.6.6.6"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, TrustedProxies::default()),
            ip("203.0.113.9")
        );
        let list = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, TrustedProxies::new(&list)),
            ip("203.0.113.9"),
            "a peer outside the trusted networks"
        );
    }

    /// From a trusted peer, the right-most untrusted entry wins: a forged
    /// left-most entry is ignored, trusted hops are skipped, and several
    /// headers are one list.
    #[test]
    fn right_most_untrusted_entry() {
        let list = nets(&["10.0.0.0/8", "fd00::/8"]);
        let t = TrustedProxies::new(&list);
        let peer = ip("10.0.0.2");
        assert_eq!(
            client_ip(peer, &xff(&["6.6.6.6, 198.51.100.7, 10.1.1.1"]), t),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(peer, &xff(&["6.6.6.6", "198.51.100.7:5555, 10.1.1.1"]), t),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(peer, &xff(&["[2001:db8::7]:443, fd00::1"]), t),
            ip("2001:db8::7")
        );
        assert_eq!(
            client_ip(peer, &xff(&["10.9.9.9, 10.1.1.1"]), t),
            ip("10.9.9.9"),
            "all trusted: the left-most"
        );
        assert_eq!(client_ip(peer, &HeaderMap::new(), t), peer, "no header");
        assert_eq!(
            client_ip(peer, &xff(&["198.51.100.7, garbage, 10.1.1.1"]), t),
            ip("10.1.1.1"),
            "garbage stops the walk at the trusted hop right of it"
        );
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), &xff(&["198.51.100.7"]), t),
            ip("198.51.100.7"),
            "an IPv4-mapped peer is its IPv4 address"
        );
    }

    /// Trusting everyone (the deprecated `trust_forwarded_for = true`) takes
    /// the left-most entry, as that key always did.
    #[test]
    fn everyone_trusted_is_the_old_left_most_rule() {
        let h = xff(&["198.51.100.7, 10.1.1.1"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, TrustedProxies::everyone()),
            ip("198.51.100.7")
        );
    }
}
