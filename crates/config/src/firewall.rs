//! The sentence that tells the operator which ports to open, built here only: `serve`
//! prints it with the ports it bound, `check-config` with the ports of the file.

use std::fmt;

use crate::{Config, PortRange};

/// What a firewall in front of the server must let in. Displayed as
/// `open TCP ports 2121 (control) and 50000-50100 (passive data)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallSummary {
    /// Control ports, each once, in the listeners' order.
    control: Vec<u16>,
    /// The passive data range.
    passive: PortRange,
    /// Also say how many transfers the range allows at once (the running server's view).
    with_capacity: bool,
}

impl FirewallSummary {
    /// The ports of the file: every listener's port and `passive.ports` (the ports the
    /// server listens on; `passive.advertise_ports` belong to the device in front).
    pub fn of_config(config: &Config) -> Self {
        Self::new(config.control_ports(), config.passive.ports, false)
    }

    /// The ports a started server bound (port 0 in the file is a real port here), with the
    /// number of transfers the passive range allows at once.
    pub fn of_bound(control: impl IntoIterator<Item = u16>, passive: PortRange) -> Self {
        Self::new(control, passive, true)
    }

    fn new(
        control: impl IntoIterator<Item = u16>,
        passive: PortRange,
        with_capacity: bool,
    ) -> Self {
        let mut ports: Vec<u16> = Vec::new();
        for port in control {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        Self {
            control: ports,
            passive,
            with_capacity,
        }
    }
}

impl Config {
    /// The listeners' ports, each once, in their order.
    pub fn control_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = Vec::new();
        for listener in &self.server.listeners {
            let port = listener.listen.port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        ports
    }

    /// Whether a listener is on IPv6 (iptables then needs ip6tables rules too).
    pub fn listens_on_ipv6(&self) -> bool {
        self.server
            .listeners
            .iter()
            .any(|listener| listener.listen.is_ipv6())
    }
}

impl fmt::Display for FirewallSummary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let control = self
            .control
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        write!(
            formatter,
            "open TCP ports {control} (control) and {} (passive data",
            self.passive
        )?;
        if self.with_capacity {
            write!(formatter, ": {} transfers at once", self.passive.len())?;
        }
        formatter.write_str(")")
    }
}
