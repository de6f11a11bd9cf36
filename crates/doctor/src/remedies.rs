//! Which server we talk to, and the exact settings that fix a problem on each: ferroftp,
//! vsftpd, ProFTPD and Pure-FTPd. When the greeting, SYST and FEAT do not identify the
//! server, the settings of all four are given.

use std::net::IpAddr;
use std::ops::RangeInclusive;

use crate::firewall::{self, FirewallKind, OpenPorts};

/// The passive range suggested when the server's own is unknown.
pub(crate) const SUGGESTED_PASSIVE_RANGE: RangeInclusive<u16> = 50000..=50100;

/// The server software, as far as its replies tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerKind {
    /// ferroftp.
    Ferroftp,
    /// vsftpd.
    Vsftpd,
    /// ProFTPD.
    Proftpd,
    /// Pure-FTPd.
    PureFtpd,
    /// Not identified.
    Unknown,
}

impl ServerKind {
    /// The identified servers.
    pub(crate) const KNOWN: [Self; 4] =
        [Self::Ferroftp, Self::Vsftpd, Self::Proftpd, Self::PureFtpd];

    /// The product name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ferroftp => "ferroftp",
            Self::Vsftpd => "vsftpd",
            Self::Proftpd => "ProFTPD",
            Self::PureFtpd => "Pure-FTPd",
            Self::Unknown => "unknown",
        }
    }

    /// Identifies the server from its greeting, SYST reply, FEAT lines and, for ferroftp,
    /// its PORT reply echo (`Active mode to …`). Default banners name the product; a
    /// customised banner leaves it `Unknown` unless FEAT gives it away.
    pub(crate) fn identify(greeting: &str, syst: &str, feat: &[String]) -> Self {
        let text = format!("{greeting}\n{syst}").to_ascii_lowercase();
        if text.contains("vsftpd") {
            Self::Vsftpd
        } else if text.contains("pure-ftpd") {
            Self::PureFtpd
        } else if text.contains("proftpd") {
            Self::Proftpd
        } else if text.contains("ferroftp") {
            Self::Ferroftp
        } else if feat.iter().any(|line| line.trim() == "PASV")
            && feat.iter().any(|line| line.trim() == "TVFS")
        {
            // vsftpd is the one server that lists PASV (and TVFS) in FEAT.
            Self::Vsftpd
        } else {
            Self::Unknown
        }
    }

    fn targets(self) -> Vec<Self> {
        match self {
            Self::Unknown => Self::KNOWN.to_vec(),
            known => vec![known],
        }
    }
}

/// Settings lines, one per server (all four when `kind` is unknown), for announcing
/// `public` in PASV replies.
pub(crate) fn advertise_settings(kind: ServerKind, public: IpAddr) -> Vec<String> {
    kind.targets()
        .into_iter()
        .map(|server| match server {
            ServerKind::Ferroftp => format!(
                "ferroftp: [passive] advertise = \"{public}\" in the config file \
                 (or serve --advertise {public})"
            ),
            ServerKind::Vsftpd => {
                format!("vsftpd: pasv_address={public} in /etc/vsftpd.conf, then restart vsftpd")
            }
            ServerKind::Proftpd => format!(
                "ProFTPD: MasqueradeAddress {public} in /etc/proftpd/proftpd.conf, then restart"
            ),
            ServerKind::PureFtpd => format!(
                "Pure-FTPd: ForcePassiveIP {public} (Debian: echo {public} > \
                 /etc/pure-ftpd/conf/ForcePassiveIP; command line -P {public}), then restart"
            ),
            ServerKind::Unknown => unreachable!("targets() never yields Unknown"),
        })
        .collect()
}

/// Settings lines that pin the passive range to `range` on each server.
pub(crate) fn passive_range_settings(kind: ServerKind, range: &RangeInclusive<u16>) -> Vec<String> {
    let (first, last) = (range.start(), range.end());
    kind.targets()
        .into_iter()
        .map(|server| match server {
            ServerKind::Ferroftp => format!(
                "ferroftp: [passive] ports = \"{first}-{last}\" (or serve --passive-ports \
                 {first}-{last})"
            ),
            ServerKind::Vsftpd => format!(
                "vsftpd: pasv_min_port={first} and pasv_max_port={last} in /etc/vsftpd.conf"
            ),
            ServerKind::Proftpd => {
                format!("ProFTPD: PassivePorts {first} {last} in /etc/proftpd/proftpd.conf")
            }
            ServerKind::PureFtpd => format!(
                "Pure-FTPd: PassivePortRange {first} {last} (Debian: echo \"{first} {last}\" > \
                 /etc/pure-ftpd/conf/PassivePortRange; command line -p {first}:{last})"
            ),
            ServerKind::Unknown => unreachable!("targets() never yields Unknown"),
        })
        .collect()
}

/// Settings lines that stop requiring TLS session reuse on data connections.
pub(crate) fn session_reuse_settings(kind: ServerKind) -> Vec<String> {
    kind.targets()
        .into_iter()
        .filter_map(|server| match server {
            ServerKind::Ferroftp => Some(
                "ferroftp: [tls] require_reuse = false, or exempt the clients that cannot \
                 resume: reuse_exempt_users = [\"name\"] / reuse_exempt_clients = [\"CIDR\"]"
                    .to_owned(),
            ),
            ServerKind::Vsftpd => {
                Some("vsftpd: require_ssl_reuse=NO in /etc/vsftpd.conf".to_owned())
            }
            ServerKind::Proftpd => {
                Some("ProFTPD: TLSOptions NoSessionReuseRequired in the mod_tls section".to_owned())
            }
            // Pure-FTPd does not require session reuse.
            ServerKind::PureFtpd => None,
            ServerKind::Unknown => unreachable!("targets() never yields Unknown"),
        })
        .collect()
}

/// Firewall command lines, for each firewall front end, opening `control_port` and `range`
/// on the server's host.
pub(crate) fn firewall_commands(
    control_port: u16,
    range: Option<RangeInclusive<u16>>,
) -> Vec<String> {
    let ports = OpenPorts::new([control_port], range);
    FirewallKind::ALL
        .into_iter()
        .flat_map(|kind| firewall::rules(kind, &ports))
        .collect()
}

/// The router's port forwarding (DNAT) of the control port and `range` to `server`, for
/// a Linux router; home routers call it "port forwarding" or "virtual server".
pub(crate) fn forwarding_commands(
    server: IpAddr,
    control_port: u16,
    range: &RangeInclusive<u16>,
) -> Vec<String> {
    vec![
        "# on the NAT router (Linux; replace WAN by the public interface)".to_owned(),
        format!(
            "iptables -t nat -A PREROUTING -i WAN -p tcp --dport {control_port} -j DNAT \
             --to-destination {server}"
        ),
        format!(
            "iptables -t nat -A PREROUTING -i WAN -p tcp --dport {}:{} -j DNAT \
             --to-destination {server}",
            range.start(),
            range.end()
        ),
    ]
}

/// The range to pin and open when the data port `seen` was refused or dropped: the
/// suggested range, which contains the port ferroftp's default range would give.
pub(crate) fn range_for(seen: Option<u16>) -> (RangeInclusive<u16>, String) {
    let range = SUGGESTED_PASSIVE_RANGE;
    let note = match seen {
        Some(port) if range.contains(&port) => format!(
            "the server announced port {port}; this is the range {}-{} (if yours differs, use \
             yours)",
            range.start(),
            range.end()
        ),
        Some(port) => format!(
            "the server announced port {port}; if it already uses a fixed range containing it, \
             open that range instead"
        ),
        None => "if the server already uses a fixed range, open that range instead".to_owned(),
    };
    (range, note)
}

/// Joins remedy parts into one text: sections separated by blank lines are kept.
pub(crate) fn join(parts: &[Vec<String>]) -> String {
    parts
        .iter()
        .filter(|part| !part.is_empty())
        .map(|part| part.join("\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_servers_by_banner_and_feat() {
        assert_eq!(
            ServerKind::identify("(vsFTPd 3.0.3)", "UNIX Type: L8", &[]),
            ServerKind::Vsftpd
        );
        assert_eq!(
            ServerKind::identify(
                "--------- Welcome to Pure-FTPd [privsep] [TLS] ----------",
                "UNIX Type: L8",
                &[]
            ),
            ServerKind::PureFtpd
        );
        assert_eq!(
            ServerKind::identify("ProFTPD Server (Debian) [10.0.0.2]", "UNIX Type: L8", &[]),
            ServerKind::Proftpd
        );
        assert_eq!(
            ServerKind::identify("ferroftp ready", "UNIX Type: L8", &[]),
            ServerKind::Ferroftp
        );
        let vsftpd_feat = [
            "EPRT",
            "EPSV",
            "MDTM",
            "PASV",
            "REST STREAM",
            "SIZE",
            "TVFS",
        ]
        .map(str::to_owned);
        assert_eq!(
            ServerKind::identify("Welcome", "UNIX Type: L8", &vsftpd_feat),
            ServerKind::Vsftpd
        );
        assert_eq!(
            ServerKind::identify("Welcome", "UNIX Type: L8", &[]),
            ServerKind::Unknown
        );
    }

    #[test]
    fn settings_for_one_known_server() {
        let public: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(
            advertise_settings(ServerKind::Vsftpd, public),
            ["vsftpd: pasv_address=203.0.113.1 in /etc/vsftpd.conf, then restart vsftpd"]
        );
        let pure = advertise_settings(ServerKind::PureFtpd, public).join("\n");
        assert!(pure.contains("ForcePassiveIP 203.0.113.1"), "{pure}");
        let proftpd = advertise_settings(ServerKind::Proftpd, public).join("\n");
        assert!(
            proftpd.contains("MasqueradeAddress 203.0.113.1"),
            "{proftpd}"
        );
        let ours = advertise_settings(ServerKind::Ferroftp, public).join("\n");
        assert!(ours.contains("advertise = \"203.0.113.1\""), "{ours}");
    }

    #[test]
    fn unknown_server_gets_all_four() {
        let lines = passive_range_settings(ServerKind::Unknown, &(50000..=50100));
        assert_eq!(lines.len(), 4);
        let text = lines.join("\n");
        for needle in [
            "ports = \"50000-50100\"",
            "pasv_min_port=50000",
            "pasv_max_port=50100",
            "PassivePorts 50000 50100",
            "PassivePortRange 50000 50100",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        let reuse = session_reuse_settings(ServerKind::Unknown).join("\n");
        assert!(reuse.contains("require_ssl_reuse=NO"), "{reuse}");
        assert!(reuse.contains("require_reuse = false"), "{reuse}");
        assert!(reuse.contains("NoSessionReuseRequired"), "{reuse}");
        assert!(session_reuse_settings(ServerKind::PureFtpd).is_empty());
    }

    #[test]
    fn firewall_commands_cover_every_front_end() {
        let text = firewall_commands(2121, Some(50000..=50100)).join("\n");
        for needle in [
            "nft add rule inet filter input tcp dport 50000-50100 accept",
            "iptables -I INPUT -p tcp --dport 50000:50100",
            "ufw allow 50000:50100/tcp",
            "firewall-cmd --permanent --add-port=50000-50100/tcp",
            "--dport 2121",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
