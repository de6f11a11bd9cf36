//! Firewall rules that open exactly an FTP server's control port(s) and passive range, for
//! the remedies of `ferroftp doctor` and `ferroftp check-config FILE --firewall KIND` (which
//! fills [`OpenPorts`] from the config).
//!
//! The rules are shell command lines (comments start with `#`), so they can be read, copied
//! or piped to `sh`. Only inbound TCP is opened: replies and active-mode connections the
//! server makes are outbound, which these firewalls allow by default.

use std::ops::RangeInclusive;

/// A firewall front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FirewallKind {
    /// nftables (`nft`), the rules go into the `inet filter` table's input chain.
    Nftables,
    /// iptables (and ip6tables when a listener is IPv6).
    Iptables,
    /// Ubuntu's ufw.
    Ufw,
    /// firewalld (`firewall-cmd`, Fedora, RHEL).
    Firewalld,
}

impl FirewallKind {
    /// Every kind, in the order the doctor prints them.
    pub const ALL: [Self; 4] = [Self::Nftables, Self::Iptables, Self::Ufw, Self::Firewalld];
}

/// The inbound TCP ports an FTP server needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPorts {
    /// Control ports, each once.
    pub control: Vec<u16>,
    /// The passive data range, when passive mode is used.
    pub passive: Option<RangeInclusive<u16>>,
    /// Whether a listener is on IPv6 (iptables then needs ip6tables rules too).
    pub ipv6: bool,
}

impl OpenPorts {
    /// The ports of `control` (duplicates dropped, order kept) and `passive`.
    pub fn new(
        control: impl IntoIterator<Item = u16>,
        passive: Option<RangeInclusive<u16>>,
    ) -> Self {
        let mut ports = Vec::new();
        for port in control {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        Self {
            control: ports,
            passive,
            ipv6: false,
        }
    }
}

/// The command lines that open `ports` with `kind`.
pub fn rules(kind: FirewallKind, ports: &OpenPorts) -> Vec<String> {
    // (port spec in the tool's syntax, what it is for)
    let specs = |range_separator: &str| {
        let mut specs: Vec<(String, &'static str)> = ports
            .control
            .iter()
            .map(|port| (port.to_string(), "control"))
            .collect();
        if let Some(range) = &ports.passive {
            let spec = if range.start() == range.end() {
                range.start().to_string()
            } else {
                format!("{}{range_separator}{}", range.start(), range.end())
            };
            specs.push((spec, "passive data"));
        }
        specs
    };
    let mut lines = Vec::new();
    match kind {
        FirewallKind::Nftables => {
            lines.push(
                "# nftables: into the input chain of table inet filter (Debian's \
                 /etc/nftables.conf); created when missing"
                    .to_owned(),
            );
            lines.push("nft add table inet filter".to_owned());
            lines.push(
                "nft 'add chain inet filter input { type filter hook input priority filter; }'"
                    .to_owned(),
            );
            for (spec, purpose) in specs("-") {
                lines.push(format!(
                    "nft add rule inet filter input tcp dport {spec} accept comment \
                     '\"ferroftp {purpose}\"'"
                ));
            }
        }
        FirewallKind::Iptables => {
            lines.push("# iptables: inserted at the top of the INPUT chain".to_owned());
            let tools: &[&str] = if ports.ipv6 {
                &["iptables", "ip6tables"]
            } else {
                &["iptables"]
            };
            for tool in tools {
                for (spec, purpose) in specs(":") {
                    lines.push(format!(
                        "{tool} -I INPUT -p tcp --dport {spec} -m comment --comment \
                         \"ferroftp {purpose}\" -j ACCEPT"
                    ));
                }
            }
        }
        FirewallKind::Ufw => {
            lines.push("# ufw".to_owned());
            for (spec, purpose) in specs(":") {
                lines.push(format!("ufw allow {spec}/tcp comment 'ferroftp {purpose}'"));
            }
        }
        FirewallKind::Firewalld => {
            lines.push("# firewalld: permanent, then reloaded".to_owned());
            for (spec, _purpose) in specs("-") {
                lines.push(format!("firewall-cmd --permanent --add-port={spec}/tcp"));
            }
            lines.push("firewall-cmd --reload".to_owned());
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> OpenPorts {
        OpenPorts::new([2121, 2121, 990], Some(50000..=50100))
    }

    #[test]
    fn iptables_opens_each_control_port_and_the_range() {
        assert_eq!(
            rules(FirewallKind::Iptables, &sample())[1..],
            [
                "iptables -I INPUT -p tcp --dport 2121 -m comment --comment \"ferroftp control\" -j ACCEPT",
                "iptables -I INPUT -p tcp --dport 990 -m comment --comment \"ferroftp control\" -j ACCEPT",
                "iptables -I INPUT -p tcp --dport 50000:50100 -m comment --comment \"ferroftp passive data\" -j ACCEPT",
            ]
        );
    }

    #[test]
    fn iptables_adds_ip6tables_for_ipv6_listeners() {
        let mut ports = OpenPorts::new([21], Some(40000..=40000));
        ports.ipv6 = true;
        let lines = rules(FirewallKind::Iptables, &ports);
        assert!(lines.contains(
            &"ip6tables -I INPUT -p tcp --dport 40000 -m comment --comment \"ferroftp passive data\" -j ACCEPT"
                .to_owned()
        ));
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn nftables_ufw_and_firewalld_syntax() {
        let nft = rules(FirewallKind::Nftables, &sample());
        assert!(nft.contains(
            &"nft add rule inet filter input tcp dport 50000-50100 accept comment '\"ferroftp passive data\"'"
                .to_owned()
        ));
        assert_eq!(
            rules(FirewallKind::Ufw, &sample())[1..],
            [
                "ufw allow 2121/tcp comment 'ferroftp control'",
                "ufw allow 990/tcp comment 'ferroftp control'",
                "ufw allow 50000:50100/tcp comment 'ferroftp passive data'",
            ]
        );
        assert_eq!(
            rules(FirewallKind::Firewalld, &sample())[1..],
            [
                "firewall-cmd --permanent --add-port=2121/tcp",
                "firewall-cmd --permanent --add-port=990/tcp",
                "firewall-cmd --permanent --add-port=50000-50100/tcp",
                "firewall-cmd --reload",
            ]
        );
    }

    #[test]
    fn without_passive_range_only_control_ports() {
        let ports = OpenPorts::new([21], None);
        assert_eq!(
            rules(FirewallKind::Ufw, &ports)[1..],
            ["ufw allow 21/tcp comment 'ferroftp control'"]
        );
    }
}
