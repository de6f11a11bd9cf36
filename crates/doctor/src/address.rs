//! How an address a server announces (PASV) relates to the address we reached it at.

use std::net::IpAddr;

use ferroftp_proto::is_private_address;

/// The relation between the PASV address and the control connection's peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PassiveAddressClass {
    /// The address we connected to: right.
    Same,
    /// 0.0.0.0: no address at all; most clients then use the control address.
    Unspecified,
    /// A private address while we came in over a public one: the server sits behind NAT
    /// and does not know its public address.
    PrivateBehindNat,
    /// An address nobody can connect to from here: loopback (we are not on the server's
    /// host), multicast, broadcast, reserved.
    Unroutable,
    /// A public address while we came in over a private one: we are inside the server's
    /// network and the data connection must loop back through the router (hairpin NAT).
    PublicFromInside,
    /// Another address of the same kind: a multi-homed server, or a wrong setting.
    Different,
}

impl PassiveAddressClass {
    /// A short phrase for reports.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Same => "the address we connected to",
            Self::Unspecified => "no address (0.0.0.0)",
            Self::PrivateBehindNat => "a private address, while we came in over a public one",
            Self::Unroutable => "an address no client can reach",
            Self::PublicFromInside => "a public address, while we came in over a private one",
            Self::Different => "another address than the one we connected to",
        }
    }
}

/// Classifies `announced` (from PASV) against `control_peer` (the address our control
/// connection went to).
pub(crate) fn classify_passive_address(
    announced: IpAddr,
    control_peer: IpAddr,
) -> PassiveAddressClass {
    let announced = announced.to_canonical();
    let control_peer = control_peer.to_canonical();
    if announced == control_peer {
        return PassiveAddressClass::Same;
    }
    if announced.is_unspecified() {
        return PassiveAddressClass::Unspecified;
    }
    if is_unusable(announced) || (announced.is_loopback() && !control_peer.is_loopback()) {
        return PassiveAddressClass::Unroutable;
    }
    match (
        is_private_address(announced),
        is_private_address(control_peer),
    ) {
        (true, false) => PassiveAddressClass::PrivateBehindNat,
        (false, true) => PassiveAddressClass::PublicFromInside,
        _ => PassiveAddressClass::Different,
    }
}

/// `true` for an address no client can connect to: multicast, broadcast, reserved
/// (240.0.0.0/4), unspecified.
pub(crate) fn is_unusable(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || v4.octets()[0] >= 240
        }
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(announced: &str, peer: &str) -> PassiveAddressClass {
        classify_passive_address(announced.parse().unwrap(), peer.parse().unwrap())
    }

    #[test]
    fn classification() {
        use PassiveAddressClass::*;
        assert_eq!(class("203.0.113.1", "203.0.113.1"), Same);
        assert_eq!(class("203.0.113.1", "::ffff:203.0.113.1"), Same);
        assert_eq!(class("10.0.0.2", "203.0.113.1"), PrivateBehindNat);
        assert_eq!(class("192.168.1.5", "198.51.100.9"), PrivateBehindNat);
        assert_eq!(class("100.64.3.4", "198.51.100.9"), PrivateBehindNat);
        assert_eq!(class("0.0.0.0", "203.0.113.1"), Unspecified);
        assert_eq!(class("127.0.0.1", "203.0.113.1"), Unroutable);
        assert_eq!(class("127.0.1.1", "10.0.0.2"), Unroutable);
        assert_eq!(class("224.0.0.1", "203.0.113.1"), Unroutable);
        assert_eq!(class("255.255.255.255", "203.0.113.1"), Unroutable);
        assert_eq!(class("240.0.0.1", "203.0.113.1"), Unroutable);
        assert_eq!(class("203.0.113.1", "10.0.0.2"), PublicFromInside);
        assert_eq!(class("198.51.100.2", "203.0.113.1"), Different);
        assert_eq!(class("10.0.0.3", "10.0.0.2"), Different);
        // On the server's own host a loopback PASV is fine only if we came over loopback.
        assert_eq!(class("127.0.0.2", "127.0.0.1"), Different);
    }
}
