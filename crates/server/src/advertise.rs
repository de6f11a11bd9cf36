//! Which address a PASV reply announces, chosen per connection.
//!
//! Behind NAT the control connection's local address is private and useless to a client
//! outside, while clients inside the LAN need exactly that private address (split horizon).
//! Rules, first match wins:
//! 1. the client's network (`passive.advertise_by_client`),
//! 2. the listener the client connected to (`server.listeners[].advertise`),
//! 3. TLS-protected control connections (`passive.advertise_tls`: a NAT helper can rewrite a
//!    plain PASV reply but not an encrypted one),
//! 4. `passive.advertise`, an IP or a DNS name resolved in the background,
//! 5. the control connection's local address.
//!
//! A rule whose address is of the other family than the control connection is skipped: PASV
//! can only announce IPv4. DNS is never resolved while a reply is written: names are resolved
//! at start and refreshed by a background task.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use ferroftp_proto::is_private_address;
use ipnet::IpNet;
use tracing::{debug, info, warn};

/// The global advertised address as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdvertiseTarget {
    /// A fixed address.
    Address(IpAddr),
    /// A DNS name (a dynamic-DNS name of a home router, say), re-resolved periodically.
    Name(String),
}

/// Passive-address configuration.
#[derive(Clone, Debug, Default)]
pub struct AdvertiseOptions {
    /// Per client network: `(network, address)`, first match wins.
    pub by_client: Vec<(IpNet, IpAddr)>,
    /// For TLS-protected control connections.
    pub tls: Option<IpAddr>,
    /// The global address.
    pub global: Option<AdvertiseTarget>,
    /// How often a DNS name is resolved again.
    pub refresh: Duration,
}

/// The rule that chose an address, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AdvertiseRule {
    ClientNetwork(IpNet),
    Listener,
    Tls,
    Global,
    LocalAddress,
}

impl fmt::Display for AdvertiseRule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientNetwork(network) => {
                write!(formatter, "passive.advertise_by_client {network}")
            }
            Self::Listener => formatter.write_str("server.listeners.advertise"),
            Self::Tls => formatter.write_str("passive.advertise_tls"),
            Self::Global => formatter.write_str("passive.advertise"),
            Self::LocalAddress => formatter.write_str("control connection local address"),
        }
    }
}

/// Most clients remembered as already warned about a private announced address.
const MAX_WARNED_CLIENTS: usize = 10_000;

/// The passive-address rules of one server.
#[derive(Debug)]
pub(crate) struct PassiveAddressPolicy {
    by_client: Vec<(IpNet, IpAddr)>,
    listeners: Vec<Option<IpAddr>>,
    tls: Option<IpAddr>,
    global_name: Option<String>,
    /// The global address: fixed, or the last resolution of `global_name`.
    global: RwLock<Option<IpAddr>>,
    refresh: Duration,
    warned_clients: Mutex<HashSet<IpAddr>>,
}

impl PassiveAddressPolicy {
    /// `listeners` holds each listener's own advertised address, by listener index.
    pub(crate) fn new(options: AdvertiseOptions, listeners: Vec<Option<IpAddr>>) -> Self {
        let (global_name, global) = match options.global {
            Some(AdvertiseTarget::Address(address)) => (None, Some(address)),
            Some(AdvertiseTarget::Name(name)) => (Some(name), None),
            None => (None, None),
        };
        Self {
            by_client: options.by_client,
            listeners,
            tls: options.tls,
            global_name,
            global: RwLock::new(global),
            refresh: options.refresh,
            warned_clients: Mutex::new(HashSet::new()),
        }
    }

    /// The address to announce to `client`, connected to listener `listener` at `local`.
    pub(crate) fn choose(
        &self,
        client: IpAddr,
        listener: usize,
        is_tls: bool,
        local: IpAddr,
    ) -> (IpAddr, AdvertiseRule) {
        let client = client.to_canonical();
        let local = local.to_canonical();
        let same_family = |address: &IpAddr| address.is_ipv4() == local.is_ipv4();
        let by_client = self
            .by_client
            .iter()
            .find(|(network, address)| network.contains(&client) && same_family(address))
            .map(|(network, address)| (*address, AdvertiseRule::ClientNetwork(*network)));
        let listener = self
            .listeners
            .get(listener)
            .copied()
            .flatten()
            .filter(same_family)
            .map(|address| (address, AdvertiseRule::Listener));
        let tls = self
            .tls
            .filter(|address| is_tls && same_family(address))
            .map(|address| (address, AdvertiseRule::Tls));
        let global = self
            .global
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .filter(same_family)
            .map(|address| (address, AdvertiseRule::Global));
        let chosen = by_client
            .or(listener)
            .or(tls)
            .or(global)
            .unwrap_or((local, AdvertiseRule::LocalAddress));
        self.warn_if_private_to_public(client, chosen);
        chosen
    }

    fn warn_if_private_to_public(&self, client: IpAddr, (address, rule): (IpAddr, AdvertiseRule)) {
        if !is_private_address(address) || is_private_address(client) {
            return;
        }
        let mut warned = self
            .warned_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if warned.len() >= MAX_WARNED_CLIENTS {
            warned.clear();
        }
        if warned.insert(client) {
            warn!(
                %client,
                %address,
                %rule,
                "announcing a private passive address to a client on a public address: PASV \
                 transfers will hang unless passive.advertise is set to the public address"
            );
        }
    }

    /// Resolves the global name once (at start, before any session).
    pub(crate) async fn resolve_now(&self) {
        let Some(name) = &self.global_name else {
            return;
        };
        match resolve(name).await {
            Some(address) => {
                let mut global = self.global.write().unwrap_or_else(|p| p.into_inner());
                if *global != Some(address) {
                    info!(%name, %address, "passive.advertise resolved");
                }
                *global = Some(address);
            }
            None => warn!(
                %name,
                "passive.advertise does not resolve; announcing the last known address or the local one"
            ),
        }
    }

    /// Re-resolves the global name forever, every `refresh` (run as a background task).
    pub(crate) async fn keep_resolving(&self) {
        if self.global_name.is_none() || self.refresh.is_zero() {
            return;
        }
        loop {
            tokio::time::sleep(self.refresh).await;
            self.resolve_now().await;
        }
    }
}

/// The first IPv4 address of `name`, else its first address.
async fn resolve(name: &str) -> Option<IpAddr> {
    match tokio::net::lookup_host((name, 0)).await {
        Ok(addresses) => {
            let addresses: Vec<IpAddr> = addresses.map(|a| a.ip()).collect();
            addresses
                .iter()
                .copied()
                .find(IpAddr::is_ipv4)
                .or(addresses.first().copied())
        }
        Err(error) => {
            debug!(%name, %error, "resolving passive.advertise failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn policy() -> PassiveAddressPolicy {
        PassiveAddressPolicy::new(
            AdvertiseOptions {
                by_client: vec![("192.168.0.0/16".parse().unwrap(), ip("192.168.1.10"))],
                tls: Some(ip("203.0.113.8")),
                global: Some(AdvertiseTarget::Address(ip("203.0.113.7"))),
                refresh: Duration::from_secs(60),
            },
            vec![None, Some(ip("198.51.100.1"))],
        )
    }

    #[test]
    fn rules_apply_in_order() {
        let policy = policy();
        let local = ip("10.0.0.2");
        assert_eq!(
            policy.choose(ip("192.168.5.5"), 1, true, local),
            (
                ip("192.168.1.10"),
                AdvertiseRule::ClientNetwork("192.168.0.0/16".parse().unwrap())
            )
        );
        assert_eq!(
            policy.choose(ip("192.0.2.1"), 1, true, local),
            (ip("198.51.100.1"), AdvertiseRule::Listener)
        );
        assert_eq!(
            policy.choose(ip("192.0.2.1"), 0, true, local),
            (ip("203.0.113.8"), AdvertiseRule::Tls)
        );
        assert_eq!(
            policy.choose(ip("192.0.2.1"), 0, false, local),
            (ip("203.0.113.7"), AdvertiseRule::Global)
        );
        let bare = PassiveAddressPolicy::new(AdvertiseOptions::default(), vec![None]);
        assert_eq!(
            bare.choose(ip("192.0.2.1"), 0, false, local),
            (local, AdvertiseRule::LocalAddress)
        );
    }

    #[test]
    fn other_family_addresses_are_skipped() {
        let policy = policy();
        let (address, rule) = policy.choose(ip("2001:db8::5"), 0, false, ip("2001:db8::1"));
        assert_eq!(
            (address, rule),
            (ip("2001:db8::1"), AdvertiseRule::LocalAddress)
        );
    }

    #[tokio::test]
    async fn names_are_resolved_outside_replies() {
        let policy = PassiveAddressPolicy::new(
            AdvertiseOptions {
                global: Some(AdvertiseTarget::Name("localhost".to_owned())),
                ..AdvertiseOptions::default()
            },
            vec![None],
        );
        let local = ip("10.0.0.2");
        // Not resolved yet: the local address, no DNS during the reply.
        assert_eq!(
            policy.choose(ip("10.0.0.9"), 0, false, local).1,
            AdvertiseRule::LocalAddress
        );
        policy.resolve_now().await;
        assert_eq!(
            policy.choose(ip("10.0.0.9"), 0, false, local),
            (ip("127.0.0.1"), AdvertiseRule::Global)
        );
    }
}
