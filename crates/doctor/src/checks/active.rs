//! `active`: listen, send PORT (EPRT on IPv6), run LIST, and wait for the server to
//! connect back — or for its refusal.
//!
//! A refusal of our own address means the server sees us come from another one: we are
//! behind NAT (or a proxy), and its bounce protection (RFC 2577) refuses a third-party
//! address. An accepted PORT followed by no connection means something drops the server's
//! connection: our NAT, a firewall on our side, or the server's outbound firewall.

use std::net::{IpAddr, SocketAddr};

use ferroftp_client::TransferProbe;
use ferroftp_proto::is_private_address;

use super::{ActiveEcho, Context, command_refused, reply_line, transfer_evidence};
use crate::Finding;
use crate::remedies::join;

const CHECK: &str = "active";

pub(super) async fn run(context: &mut Context) -> Vec<Finding> {
    let mut client = match context.open_session().await {
        Ok(client) => client,
        Err(error) => {
            return vec![
                Finding::error(CHECK, "could not log in again to test active mode")
                    .evidence(vec![error.to_string()]),
            ];
        }
    };
    let extended = matches!(context.control.ip().to_canonical(), IpAddr::V6(_));
    let offer = match client.offer_active(extended).await {
        Ok(offer) => offer,
        Err(error) => {
            return vec![
                Finding::error(CHECK, "could not offer an active data connection")
                    .evidence(vec![error.to_string()]),
            ];
        }
    };
    let sent = offer.sent;
    let mut evidence = vec![
        format!("listening on {sent}"),
        format!("{} → {}", offer.command, reply_line(&offer.reply)),
    ];
    let reply_text = offer.reply.text();
    let seen_as = seen_address(&reply_text);
    if let Some(seen) = seen_as {
        evidence.push(format!(
            "the server sees our control connection come from {seen}"
        ));
    }
    let we_are_private = is_private_address(sent.ip());

    if offer.reply.code.0 == 502 {
        return vec![
            Finding::warning(
                CHECK,
                "active mode is disabled on the server (502); use passive",
            )
            .evidence(evidence),
        ];
    }
    if !offer.reply.code.is_positive_completion() {
        let cause = match seen_as {
            Some(seen) if seen != sent.ip() => format!(
                "the server sees us as {seen}, not {} (our address behind NAT), and its bounce \
                 protection refuses a third-party address",
                sent.ip()
            ),
            _ if we_are_private => format!(
                "our address {} is private: we are behind NAT, the server sees another \
                 address and its bounce protection refuses this one",
                sent.ip()
            ),
            _ => "the server's bounce protection refuses our address: it sees our control \
                  connection come from another address (a NAT, a proxy, or a middlebox that \
                  rewrote the PORT command)"
                .to_owned(),
        };
        let summary = format!("the server refuses {}: {cause}", command_verb(extended));
        return vec![
            Finding::error(CHECK, summary)
                .evidence(evidence)
                .remedy(nat_remedy(context.control.port())),
        ];
    }

    let echoed = echoed_address(&reply_text);
    let command = context.list_command();
    let probe = client
        .probe_active_transfer(
            &command,
            offer.listener,
            context.data_tls(),
            context.timeout(),
        )
        .await;
    evidence.extend(transfer_evidence(&probe));
    drop(client);
    if let Some(echoed) = echoed {
        // ferroftp replaces a private address by the client's own when nat_fallback is on,
        // and says so: that is not a middlebox.
        if !reply_text.contains("replaced") {
            context.active_echo = Some(ActiveEcho {
                sent,
                echoed,
                reply_line: reply_line(&offer.reply),
                transfer_worked: probe.succeeded(),
            });
        }
    }
    vec![finding_for(&probe, sent, we_are_private, context).evidence(evidence)]
}

fn finding_for(
    probe: &TransferProbe,
    sent: SocketAddr,
    we_are_private: bool,
    context: &Context,
) -> Finding {
    if let Some(finding) = command_refused(CHECK, probe) {
        return finding;
    }
    if probe.succeeded() {
        let from = probe
            .accepted
            .map(|(source, after)| format!(" from {source} after {:.3} s", after.as_secs_f64()))
            .unwrap_or_default();
        return Finding::ok(
            CHECK,
            format!(
                "the server connected back to {sent}{from}; {} worked",
                probe.command
            ),
        );
    }
    if probe.accepted.is_some() {
        return Finding::error(
            CHECK,
            format!(
                "the server connected back to {sent}, but {} did not complete",
                probe.command
            ),
        )
        .remedy("check the server's log for this transfer");
    }
    let waited = match probe.final_reply() {
        Some(reply) => format!("it answered {}", reply_line(reply)),
        None => format!(
            "no connection within {:.1} s",
            context.timeout().as_secs_f64()
        ),
    };
    if we_are_private {
        Finding::error(
            CHECK,
            format!(
                "the server cannot connect back to {sent} ({waited}): we are behind NAT, our \
                 private address is not reachable from the server"
            ),
        )
        .remedy(nat_remedy(context.control.port()))
    } else {
        Finding::error(
            CHECK,
            format!(
                "the server cannot connect back to {sent} ({waited}): a firewall drops \
                 inbound connections on our side, or the server's outbound connections are \
                 blocked"
            ),
        )
        .remedy(join(&[vec![
            "Use passive mode (it needs no inbound connection here), or".to_owned(),
            format!(
                "allow inbound TCP from the server to this host: iptables -I INPUT -p tcp -s {} \
                 -j ACCEPT (nft add rule inet filter input ip saddr {} tcp dport 1024-65535 \
                 accept)",
                context.control.ip(),
                context.control.ip()
            ),
            "and on the server allow outbound TCP to clients' ports ≥ 1024".to_owned(),
        ]]))
    }
}

fn command_verb(extended: bool) -> &'static str {
    if extended { "EPRT" } else { "PORT" }
}

/// What to do when active mode fails because we are behind NAT.
fn nat_remedy(control_port: u16) -> String {
    join(&[vec![
        "Use passive mode from this network: curl uses it by default (drop -P/--ftp-port), \
         lftp: set ftp:passive-mode on, Python ftplib: ftp.set_pasv(True), FileZilla: \
         Transfer mode Passive."
            .to_owned(),
        "Active mode through a NAT needs the router's FTP helper to rewrite PORT and forward \
         the server's connection (it cannot see PORT inside TLS), on a Linux router:"
            .to_owned(),
        format!(
            "iptables -t raw -A PREROUTING -p tcp --dport {control_port} -j CT --helper ftp \
             (with nf_nat_ftp for the rewrite)"
        ),
    ]])
}

/// ferroftp's PORT reply echoes the target: `Active mode to 192.0.2.10 port 51000`.
pub(super) fn echoed_address(text: &str) -> Option<SocketAddr> {
    let rest = text.split("Active mode to ").nth(1)?;
    let mut words = rest.split_whitespace();
    let ip: IpAddr = words.next()?.parse().ok()?;
    if words.next()? != "port" {
        return None;
    }
    let port: u16 = words
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, port))
}

/// The client address a server names when it refuses PORT: ferroftp's `only your own
/// address 198.51.100.1 is allowed`, Pure-FTPd's `(only to 198.51.100.1)`.
fn seen_address(text: &str) -> Option<IpAddr> {
    for marker in ["only your own address ", "only to "] {
        if let Some(rest) = text.split(marker).nth(1) {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':'))
                .collect();
            if let Ok(ip) = word.parse() {
                return Some(ip);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ferroftp_echo() {
        assert_eq!(
            echoed_address("Active mode to 192.0.2.10 port 51000"),
            Some("192.0.2.10:51000".parse().unwrap())
        );
        assert_eq!(
            echoed_address(
                "Active mode to 198.51.100.1 port 40000 (your private address replaced by the \
                 one you connect from)"
            ),
            Some("198.51.100.1:40000".parse().unwrap())
        );
        assert_eq!(
            echoed_address("PORT command successful. Consider using PASV."),
            None
        );
    }

    #[test]
    fn parses_the_address_a_server_sees() {
        assert_eq!(
            seen_address(
                "Refusing to connect to 192.168.1.10: only your own address 198.51.100.1 is \
                 allowed"
            ),
            Some("198.51.100.1".parse().unwrap())
        );
        assert_eq!(
            seen_address("I won't open a connection to 192.168.1.10 (only to 198.51.100.1)"),
            Some("198.51.100.1".parse().unwrap())
        );
        assert_eq!(seen_address("Illegal PORT command."), None);
    }
}
