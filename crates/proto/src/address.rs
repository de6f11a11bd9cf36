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

/// An IP network written `address/prefix` (`192.0.2.0/24`, `2001:db8::/32`). IPv4-mapped IPv6
/// addresses are compared as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `address` with `prefix` leading bits; `None` when the prefix is longer
    /// than the address (32 for IPv4, 128 for IPv6). Host bits are ignored.
    pub fn new(address: IpAddr, prefix: u8) -> Option<Self> {
        let network = address.to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then_some(Self { network, prefix })
    }

    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Reads `192.0.2.0/24`, `2001:db8::/32` or a bare address (a network of one).
impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address or network such as 192.0.2.0/24"))?;
        let full = if address.to_canonical().is_ipv4() {
            32
        } else {
            128
        };
        let prefix = match prefix {
            None => full,
            Some(prefix) => prefix
                .trim()
                .parse()
                .map_err(|_| format!("{text:?}: the prefix length is not a number"))?,
        };
        Self::new(address, prefix)
            .ok_or_else(|| format!("{text:?}: the prefix length is longer than the address"))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let net = |text: &str, prefix| Cidr::new(text.parse().unwrap(), prefix).unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(net("192.0.2.0", 24).contains(ip("192.0.2.255")));
        assert!(!net("192.0.2.0", 24).contains(ip("192.0.3.1")));
        assert!(net("192.0.2.0", 24).contains(ip("::ffff:192.0.2.9")));
        assert!(net("0.0.0.0", 0).contains(ip("203.0.113.1")));
        assert!(!net("0.0.0.0", 0).contains(ip("2001:db8::1")));
        assert!(net("127.0.0.1", 32).contains(ip("127.0.0.1")));
        assert!(!net("127.0.0.1", 32).contains(ip("127.0.0.2")));
        assert!(net("2001:db8::", 32).contains(ip("2001:db8:1::1")));
        assert!(!net("2001:db8::", 32).contains(ip("2001:db9::1")));
        assert!(Cidr::new(ip("10.0.0.0"), 33).is_none());
    }

    #[test]
    fn cidr_parses_and_displays() {
        let parsed: Cidr = "192.0.2.0/24".parse().unwrap();
        assert_eq!(parsed.to_string(), "192.0.2.0/24");
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!(
            "10.1.2.3".parse::<Cidr>().unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com/8".parse::<Cidr>().is_err());
    }

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
