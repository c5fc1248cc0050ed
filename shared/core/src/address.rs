//! Which network addresses a destination may be. Destinations are public HTTPS APIs;
//! one that reaches the function's own network (the VPC, the cloud's metadata service,
//! the machine itself) would make delivery a tool for reading what only the function
//! can reach, its answers returned in `last_error`. The check runs on the URL when a
//! source is saved and on every address a name resolves to, at every connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is not a public address a destination may be, or `None` when it is.
/// Loopback is allowed only when `allow_loopback` (local tests, a receiver on the same
/// machine), and is refused otherwise.
pub fn refused_address(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4, allow_loopback),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            // An IPv4 address written as IPv6 (mapped, compatible, NAT64, 6to4) goes
            // where the IPv4 address does.
            Some(v4) => refused_v4(v4, allow_loopback),
            None => refused_v6(v6, allow_loopback),
        },
    }
}

fn refused_v4(ip: Ipv4Addr, allow_loopback: bool) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (127, _, _) if allow_loopback => return None,
        (127, _, _) => "a loopback address",
        (169, 254, 169) if ip.octets()[3] == 254 => "the cloud metadata service",
        (169, 254, _) => "a link-local address",
        (0, _, _) => "the unspecified address (0.0.0.0/8)",
        (10, _, _) | (192, 168, _) => "a private address",
        (172, 16..=31, _) => "a private address",
        (100, 64..=127, _) => "a carrier-grade NAT address (100.64.0.0/10)",
        (192, 0, 0) => "an IETF protocol address (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address (198.18.0.0/15)",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr, allow_loopback: bool) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match ip {
        ip if ip == Ipv6Addr::LOCALHOST && allow_loopback => return None,
        ip if ip == Ipv6Addr::LOCALHOST => "a loopback address",
        ip if ip == Ipv6Addr::UNSPECIFIED => "the unspecified address (::)",
        ip if ip.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] => "the cloud metadata service",
        _ if first & 0xfe00 == 0xfc00 => "a private address (fc00::/7)",
        _ if first & 0xffc0 == 0xfe80 => "a link-local address",
        _ if first & 0xffc0 == 0xfec0 => "a site-local address",
        _ if first & 0xff00 == 0xff00 => "a multicast address",
        _ if first == 0x2001 && ip.segments()[1] == 0x0db8 => "a documentation address",
        _ if ip.segments()[..4] == [0x100, 0, 0, 0] => "a discard address (100::/64)",
        // Teredo tunnels to an IPv4 address its client chooses.
        _ if first == 0x2001 && ip.segments()[1] == 0 => "a Teredo address (2001::/32)",
        _ => return None,
    })
}

/// The IPv4 address inside an IPv6 one that only wraps it: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4
/// (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // `::` and `::1` are IPv6's own; every other `::a.b.c.d` is an IPv4 address.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str, allow_loopback: bool) -> Option<&'static str> {
        refused_address(text.parse().unwrap(), allow_loopback)
    }

    #[test]
    fn private_local_and_metadata_addresses_are_refused_in_every_form() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.10.10",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "127.0.0.1",
            "127.9.9.9",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.0.192",
            "::",
            "::1",
            "fd00:ec2::254",
            "fd12::1",
            "fe80::1",
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(refused(ip, false).is_some(), "{ip} must be refused");
        }
        assert_eq!(refused("169.254.169.254", true), Some("the cloud metadata service"));
        assert_eq!(refused("fd00:ec2::254", true), Some("the cloud metadata service"));
        assert_eq!(
            refused("::ffff:169.254.169.254", false),
            Some("the cloud metadata service")
        );
        assert_eq!(refused("10.0.0.1", true), Some("a private address"));
    }

    #[test]
    fn public_addresses_pass_and_loopback_only_when_allowed() {
        for ip in [
            "8.8.8.8",
            "52.94.236.248",
            "172.32.0.1",
            "100.128.0.1",
            "2600:1f18::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(refused(ip, false), None, "{ip}");
        }
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(refused(ip, true), None, "{ip}");
            assert_eq!(refused(ip, false), Some("a loopback address"), "{ip}");
        }
    }
}
