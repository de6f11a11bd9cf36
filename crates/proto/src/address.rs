//! Address classes that decide NAT behaviour: which addresses can only be reached inside a
//! private network.

use std::net::IpAddr;

/// `true` for addresses that are not routable on the public Internet: RFC 1918 and RFC 6598
/// (carrier-grade NAT) IPv4, loopback, link-local, and IPv6 unique-local (RFC 4193). A
/// client that announces one of these in PORT, or a server that announces one in PASV to a
/// public client, is talking across a NAT.
pub fn is_private_address(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_public_addresses() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "fd00::1",
            "fe80::1",
            "::1",
            "::ffff:192.168.0.1",
        ] {
            assert!(is_private_address(private.parse().unwrap()), "{private}");
        }
        for public in [
            "203.0.113.7",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_private_address(public.parse().unwrap()), "{public}");
        }
    }
}
