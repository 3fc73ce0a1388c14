//! The unit abuse limits count by: one IPv4 address, or one IPv6 /64.
//!
//! A single IPv6 host usually holds a whole /64 (SLAAC, privacy addresses),
//! so keying by the full address would give one client 2^64 fresh budgets.
//! The per-IP rate limiter and the per-(account, address) login lockout
//! both key by [`client_key`].

use std::net::{IpAddr, Ipv6Addr};

/// `ip` itself for IPv4 (an IPv4-mapped IPv6 address counts as its IPv4
/// address); for IPv6, its /64 network (the interface id zeroed).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The key of a request whose client address is unknown (no peer address
/// recorded): all such requests share one budget.
pub const UNKNOWN: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// [`client_key`] of an optional address; [`UNKNOWN`] for none.
pub fn client_key_of(ip: Option<IpAddr>) -> IpAddr {
    ip.map_or(UNKNOWN, client_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> IpAddr {
        client_key(s.parse().unwrap_or(UNKNOWN))
    }

    /// Two addresses of one IPv6 /64 share a key; a different /64 does not;
    /// IPv4 addresses are their own keys, also when IPv4-mapped.
    #[test]
    fn ipv6_is_keyed_by_its_64() {
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(key("2001:db8:1:2:a:b:c:d").to_string(), "2001:db8:1:2::");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
    }
}
