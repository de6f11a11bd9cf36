//! Setting up the data connection (RFC 959 §4.1.2, RFC 2428, RFC 2577): PASV, EPSV, PORT,
//! EPRT.

use std::net::SocketAddr;

use super::{Action, DataEndpoint, InFlight, PassiveFailure, Session};
use crate::address::is_private_address;
use crate::host_port::{self, HostPortError};
use crate::reply::{Reply, ReplyCode};

/// RFC 2577 §3: active-mode targets below this port are refused (no bounce into services).
const LOWEST_ACTIVE_PORT: u16 = 1024;

impl Session {
    pub(super) fn passive(&mut self, extended: bool) {
        if self.extended_passive_only && !extended {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "EPSV ALL in effect, use EPSV",
            ));
            return;
        }
        self.start(InFlight::Passive { extended }, Action::OpenPassive);
    }

    pub(super) fn extended_passive(&mut self, argument: &str) {
        match argument.trim().to_ascii_uppercase().as_str() {
            "" => self.passive(true),
            // RFC 2428 §4: after EPSV ALL only EPSV may set up data connections.
            "ALL" => {
                self.extended_passive_only = true;
                self.reply(Reply::new(ReplyCode::OK, "EPSV ALL accepted"));
            }
            // RFC 2428 §3: a network protocol number (as in RFC 2428 §2, 1: IPv4, 2: IPv6)
            // the server does not support for this connection gets 522 naming those it does.
            // The data connection uses the control connection's address family.
            family if !family.is_empty() && family.bytes().all(|b| b.is_ascii_digit()) => {
                let peer_is_v6 = self.peer.ip().to_canonical().is_ipv6();
                let supported = if peer_is_v6 { "2" } else { "1" };
                if family.trim_start_matches('0') == supported {
                    self.passive(true);
                } else {
                    self.reply(Reply::new(
                        ReplyCode::PROTOCOL_NOT_SUPPORTED,
                        format!("Network protocol not supported, use ({supported})"),
                    ));
                }
            }
            _ => self.reply(Reply::new(
                ReplyCode::SYNTAX_ERROR_ARGS,
                "Unknown EPSV argument",
            )),
        }
    }

    pub(super) fn finish_passive(
        &mut self,
        extended: bool,
        result: Result<SocketAddr, PassiveFailure>,
    ) {
        let announced = match result {
            Ok(address) => address,
            Err(PassiveFailure::Exhausted) => {
                self.data_endpoint = None;
                self.reply(Reply::new(
                    ReplyCode::CANT_OPEN_DATA,
                    "No passive port free in the configured range, try again later",
                ));
                return;
            }
            Err(PassiveFailure::Other(text)) => {
                self.data_endpoint = None;
                self.reply(Reply::new(ReplyCode::CANT_OPEN_DATA, text));
                return;
            }
        };
        let reply = if extended {
            Reply::new(
                ReplyCode::ENTERING_EXTENDED_PASSIVE,
                host_port::format_epsv_text(announced.port()),
            )
        } else {
            match announced {
                SocketAddr::V4(v4) => {
                    Reply::new(ReplyCode::ENTERING_PASSIVE, host_port::format_pasv_text(v4))
                }
                SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                    Some(v4) => Reply::new(
                        ReplyCode::ENTERING_PASSIVE,
                        host_port::format_pasv_text(std::net::SocketAddrV4::new(v4, v6.port())),
                    ),
                    None => {
                        self.actions.push_back(Action::ClosePassive);
                        self.data_endpoint = None;
                        self.reply(Reply::new(
                            ReplyCode::CANT_OPEN_DATA,
                            "PASV cannot announce an IPv6 address; use EPSV",
                        ));
                        return;
                    }
                },
            }
        };
        self.data_endpoint = Some(DataEndpoint::Passive);
        self.reply(reply);
    }

    /// PORT and EPRT (RFC 959 §4.1.2, RFC 2428 §2), validated before any connection attempt
    /// (RFC 2577 §3): the target must be the client's own address and an unprivileged port.
    pub(super) fn active(&mut self, target: Result<SocketAddr, HostPortError>) {
        if self.extended_passive_only {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "EPSV ALL in effect, use EPSV",
            ));
            return;
        }
        if !self.config.allow_active {
            self.reply(Reply::new(
                ReplyCode::NOT_IMPLEMENTED,
                "Active mode is disabled, use PASV",
            ));
            return;
        }
        let target = match target {
            Ok(target) => target,
            Err(error) => {
                self.reply(error.reply());
                return;
            }
        };
        let peer_ip = self.peer.ip().to_canonical();
        let mut target_ip = target.ip().to_canonical();
        let mut note = "";
        if target_ip != peer_ip {
            if self.config.active_nat_fallback
                && is_private_address(target_ip)
                && !is_private_address(peer_ip)
                && target_ip.is_ipv4() == peer_ip.is_ipv4()
            {
                // The client announced its private address from behind a NAT; the only
                // address that can reach it is the one its connection comes from.
                target_ip = peer_ip;
                note = " (your private address replaced by the one you connect from)";
            } else {
                self.refused_active_targets += 1;
                self.reply(Reply::new(
                    ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                    format!(
                        "Refusing to connect to {target_ip}: only your own address {peer_ip} is allowed"
                    ),
                ));
                return;
            }
        }
        if target.port() < LOWEST_ACTIVE_PORT {
            self.refused_active_targets += 1;
            self.reply(Reply::new(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                format!("Refusing privileged port {}", target.port()),
            ));
            return;
        }
        self.close_passive();
        self.data_endpoint = Some(DataEndpoint::Active(SocketAddr::new(
            target_ip,
            target.port(),
        )));
        // Echo the target so a client can see whether a middlebox rewrote its command.
        self.reply(Reply::new(
            ReplyCode::OK,
            format!("Active mode to {} port {}{note}", target_ip, target.port()),
        ));
    }

    pub(super) fn close_passive(&mut self) {
        if self.data_endpoint == Some(DataEndpoint::Passive) {
            self.actions.push_back(Action::ClosePassive);
        }
        self.data_endpoint = None;
    }
}
