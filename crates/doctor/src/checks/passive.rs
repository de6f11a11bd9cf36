//! `passive-address` and `passive-reachability`: what PASV announces, and whether its data
//! port answers.
//!
//! One session: PASV, a timed connect to the announced address (or, when the server
//! announces 0.0.0.0, to the control address as clients do), and when that fails while the
//! announced address is not the control address, a second connect to the control address
//! with the same port — what clients that ignore the PASV address do. Then a LIST over the
//! connection that worked, to see the data flow.

use std::net::{IpAddr, SocketAddr};

use ferroftp_client::{ClientError, ConnectAttempt, ConnectFailure, TransferProbe, connect_timed};

use super::{Context, PassiveObservation, command_refused, reply_line, transfer_evidence};
use crate::Finding;
use crate::address::{PassiveAddressClass, classify_passive_address};
use crate::remedies::{
    advertise_settings, firewall_commands, forwarding_commands, join, passive_range_settings,
    range_for,
};

const ADDRESS: &str = "passive-address";
const REACHABILITY: &str = "passive-reachability";

pub(super) async fn run(context: &mut Context) -> Vec<Finding> {
    let control = context.control;
    if matches!(control.ip().to_canonical(), IpAddr::V6(_)) {
        let note = "the control connection is IPv6: PASV is IPv4-only, clients use EPSV";
        return vec![
            Finding::ok(ADDRESS, note),
            Finding::ok(REACHABILITY, format!("{note} (see epsv)")),
        ];
    }
    let mut client = match context.open_session().await {
        Ok(client) => client,
        Err(error) => {
            return vec![
                Finding::error(ADDRESS, "could not log in again to test PASV")
                    .evidence(vec![error.to_string()]),
            ];
        }
    };
    let (reply, announced) = match client.request_passive().await {
        Ok(answer) => answer,
        Err(ClientError::UnexpectedReply(reply)) => {
            let evidence = vec![format!("PASV → {}", reply_line(&reply))];
            return vec![
                Finding::warning(ADDRESS, "the server refuses PASV; clients must use EPSV")
                    .evidence(evidence.clone()),
                Finding::warning(REACHABILITY, "not tested: PASV is refused (see epsv)")
                    .evidence(evidence),
            ];
        }
        Err(error) => {
            let evidence = vec![format!("PASV → {error}")];
            return vec![
                Finding::error(ADDRESS, "PASV gets no usable reply").evidence(evidence.clone()),
                Finding::error(REACHABILITY, "not tested: PASV gets no usable reply")
                    .evidence(evidence),
            ];
        }
    };
    let announced_ip = IpAddr::V4(*announced.ip());
    let class = classify_passive_address(announced_ip, control.ip());
    let mut address_evidence = vec![
        format!("PASV → {}", reply_line(&reply)),
        format!(
            "announced {announced}; our control connection goes to {control} ({})",
            class.describe()
        ),
    ];

    // Connect like a client that trusts the PASV address (0.0.0.0 means the control one).
    let first_target = if announced.ip().is_unspecified() {
        SocketAddr::new(control.ip(), announced.port())
    } else {
        SocketAddr::V4(announced)
    };
    let first = connect_timed(first_target, context.timeout()).await;
    let mut reach_evidence = vec![first.to_string()];
    let mut fallback_failure = None;
    let mut stream = None;
    let first_failure = describe_failure(&first);
    match first.result {
        Ok(connected) => stream = Some((first_target, connected)),
        Err(_) if first_target.ip() != control.ip() => {
            let second_target = SocketAddr::new(control.ip(), announced.port());
            let second = connect_timed(second_target, context.timeout()).await;
            reach_evidence.push(format!(
                "{second} (the control address with the announced port, as clients that \
                 ignore the PASV address do)"
            ));
            fallback_failure = describe_failure(&second);
            if let Ok(connected) = second.result {
                stream = Some((second_target, connected));
            }
        }
        Err(_) => {}
    }

    let transfer: Option<(SocketAddr, TransferProbe)> = match stream {
        Some((via, connected)) => {
            let command = context.list_command();
            let probe = client
                .probe_transfer(
                    &command,
                    connected,
                    context.data_tls(),
                    context.timeout() * 2,
                )
                .await;
            reach_evidence.extend(transfer_evidence(&probe));
            Some((via, probe))
        }
        None => None,
    };
    let announced_works = transfer
        .as_ref()
        .is_some_and(|(via, probe)| *via == first_target && probe.succeeded());
    let works = transfer
        .as_ref()
        .is_some_and(|(_, probe)| probe.succeeded());
    context.passive = Some(PassiveObservation {
        announced,
        plain: context.session_tls.is_none(),
        reply_line: reply_line(&reply),
        works,
    });
    drop(client);

    let server = context.server;
    let control_port = control.port();
    let (range, range_note) = range_for(Some(announced.port()));

    // passive-address
    let address_finding = match class {
        PassiveAddressClass::Same => Finding::ok(
            ADDRESS,
            format!("PASV announces {announced_ip}, the address we connected to"),
        ),
        PassiveAddressClass::Unspecified => Finding::warning(
            ADDRESS,
            "PASV announces 0.0.0.0: clients that use the PASV address fail; most use the \
             control address instead",
        )
        .remedy(join(&[
            vec!["Announce the address clients connect to:".to_owned()],
            advertise_settings(server, control.ip()),
        ])),
        _ if announced_works => Finding::ok(
            ADDRESS,
            format!(
                "PASV announces {announced_ip} ({}), and it is reachable from here",
                class.describe()
            ),
        ),
        PassiveAddressClass::PrivateBehindNat | PassiveAddressClass::Unroutable => {
            let summary = match class {
                PassiveAddressClass::PrivateBehindNat => format!(
                    "PASV announces the private address {announced_ip} while we connected to \
                     {}: the server is behind NAT and does not announce its public address",
                    control.ip()
                ),
                _ => format!(
                    "PASV announces {announced_ip}, an address no client can reach (we \
                     connected to {})",
                    control.ip()
                ),
            };
            let mut parts = vec![
                vec![format!(
                    "Announce the public address {} in PASV replies:",
                    control.ip()
                )],
                advertise_settings(server, control.ip()),
            ];
            if transfer.is_none() {
                parts.push(vec![
                    "and forward the control port and the passive range to the server:".to_owned(),
                ]);
                parts.push(forwarding_commands(announced_ip, control_port, &range));
            }
            parts.push(vec![
                "Meanwhile EPSV, or clients that ignore the PASV address (curl's default, \
                 FileZilla), avoid the problem."
                    .to_owned(),
            ]);
            Finding::error(ADDRESS, summary).remedy(join(&parts))
        }
        PassiveAddressClass::PublicFromInside if transfer.is_some() => Finding::error(
            ADDRESS,
            format!(
                "PASV announces the public address {announced_ip}, unreachable from inside \
                 the server's network ({}) where we are",
                control.ip()
            ),
        )
        .remedy(join(&[vec![
            "Let the router loop connections to its public address back in (hairpin \
                 NAT), or announce the inside address to inside clients:"
                .to_owned(),
            format!(
                "ferroftp: [[passive.advertise_by_client]] cidr = \"<your LAN>\" address = \
                     \"{}\"",
                control.ip()
            ),
            "other servers: use EPSV inside the LAN".to_owned(),
        ]])),
        PassiveAddressClass::Different if transfer.is_some() => Finding::error(
            ADDRESS,
            format!(
                "PASV announces {announced_ip}, unreachable from here, while the data port \
                 answers at {}, the address we connected to",
                control.ip()
            ),
        )
        .remedy(join(&[
            vec![format!("Announce {} in PASV replies:", control.ip())],
            advertise_settings(server, control.ip()),
        ])),
        _ => Finding::warning(
            ADDRESS,
            format!(
                "PASV announces {announced_ip} ({}); its data port does not answer there \
                 either (see passive-reachability)",
                class.describe()
            ),
        ),
    }
    .evidence(address_evidence.split_off(0));

    // passive-reachability
    let refused = transfer
        .as_ref()
        .and_then(|(_, probe)| command_refused(REACHABILITY, probe));
    let reach_finding = match (&transfer, refused) {
        (_, Some(refused)) => refused,
        (Some((via, probe)), None) if probe.succeeded() => {
            let where_ = if *via == first_target {
                "at the announced address".to_owned()
            } else {
                format!(
                    "only at the control address {} (not at the announced one)",
                    via.ip()
                )
            };
            let severity_ok = *via == first_target;
            let summary = format!(
                "the data port {} answers {where_}; {} worked",
                announced.port(),
                probe.command
            );
            if severity_ok {
                Finding::ok(REACHABILITY, summary)
            } else {
                Finding::warning(REACHABILITY, summary)
                    .remedy("fix the announced address (see passive-address)")
            }
        }
        (Some((via, probe)), None) => Finding::error(
            REACHABILITY,
            format!(
                "connected to the data port {via}, but {} did not complete",
                probe.command
            ),
        )
        .remedy(
            "the data connection opens but the transfer stalls: a middlebox that lets the SYN \
             through but not the data (MTU, a TLS-inspecting proxy), or a server that refuses \
             data connections from this address; check the server's log for this transfer",
        ),
        (None, None) => {
            let failure = fallback_failure.or(first_failure).unwrap_or_default();
            let summary = format!(
                "the data port {} {failure}: transfers (LIST, RETR) hang here",
                announced.port()
            );
            Finding::error(REACHABILITY, summary).remedy(join(&[
                vec![format!(
                    "Open the passive range in the server's firewall, and pin it in the \
                     server ({range_note}):"
                )],
                passive_range_settings(server, &range),
                firewall_commands(control_port, Some(range.clone())),
                vec![
                    "If the server is behind NAT, forward the same range on the router.".to_owned(),
                ],
            ]))
        }
    }
    .evidence(reach_evidence);

    vec![address_finding, reach_finding]
}

/// `is refused (nothing listens, or a firewall rejects it)`, …; `None` when connected.
pub(super) fn describe_failure(attempt: &ConnectAttempt) -> Option<String> {
    let seconds = attempt.elapsed.as_secs_f64();
    attempt.failure().map(|failure| match failure {
        ConnectFailure::Refused => format!(
            "is refused at {} (reset after {seconds:.3} s: nothing listens, or a firewall \
             rejects it)",
            attempt.target
        ),
        ConnectFailure::TimedOut => format!(
            "is dropped at {} (no answer in {seconds:.1} s: a firewall drops the passive \
             range, or the router does not forward it)",
            attempt.target
        ),
        ConnectFailure::Unreachable(error) => {
            format!("is unreachable at {} ({error})", attempt.target)
        }
        ConnectFailure::Other(error) => format!("fails at {} ({error})", attempt.target),
    })
}
