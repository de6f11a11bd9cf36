//! `passive-address` and `passive-reachability`: what PASV announces, and whether its data
//! port answers.
//!
//! One session: PASV, a timed connect to the announced address (or, when the server
//! announces 0.0.0.0, to the control address as clients do), and when that fails while the
//! announced address is not the control address, a second connect to the control address
//! with the same port — what clients that ignore the PASV address do. Then a LIST over the
//! connection that worked, to see the data flow.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use ferroftp_client::{ClientError, ConnectAttempt, ConnectFailure, TransferProbe, connect_timed};
use tokio::net::TcpStream;

use super::{Context, PassiveObservation, command_refused, reply_line, transfer_evidence};
use crate::Finding;
use crate::address::{PassiveAddressClass, classify_passive_address};
use crate::remedies::{
    ServerKind, advertise_settings, firewall_commands, forwarding_commands, join,
    passive_range_settings, range_for,
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
    let address_evidence = vec![
        format!("PASV → {}", reply_line(&reply)),
        format!(
            "announced {announced}; our control connection goes to {control} ({})",
            class.describe()
        ),
    ];

    let mut reach_evidence = Vec::new();
    let (mut observed, stream) =
        connect_like_clients(context, announced, class, &mut reach_evidence).await;
    observed.transfer = match stream {
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
    let works = observed
        .transfer
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
    let address_finding = address_verdict(&observed, server).evidence(address_evidence);
    let reach_finding = reachability_verdict(observed, server).evidence(reach_evidence);
    vec![address_finding, reach_finding]
}

/// Connects to the data port like a client that trusts the PASV address (0.0.0.0 means the
/// control one) and, when that fails and the announced address is another, like a client
/// that ignores it; the attempts go to `evidence`. Returns what was seen, without a transfer
/// yet, and the connection that opened with where it went.
async fn connect_like_clients(
    context: &Context,
    announced: SocketAddrV4,
    class: PassiveAddressClass,
    evidence: &mut Vec<String>,
) -> (Observed, Option<(SocketAddr, TcpStream)>) {
    let control = context.control;
    let first_target = if announced.ip().is_unspecified() {
        SocketAddr::new(control.ip(), announced.port())
    } else {
        SocketAddr::V4(announced)
    };
    let first = connect_timed(first_target, context.timeout()).await;
    evidence.push(first.to_string());
    let mut fallback_failure = None;
    let mut stream = None;
    let first_failure = describe_failure(&first);
    match first.result {
        Ok(connected) => stream = Some((first_target, connected)),
        Err(_) if first_target.ip() != control.ip() => {
            let second_target = SocketAddr::new(control.ip(), announced.port());
            let second = connect_timed(second_target, context.timeout()).await;
            evidence.push(format!(
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
    let observed = Observed {
        announced,
        control,
        class,
        first_target,
        first_failure,
        fallback_failure,
        transfer: None,
    };
    (observed, stream)
}

/// What the PASV session showed, for the two verdicts.
struct Observed {
    /// The address and port in the PASV reply (RFC 959 §4.1.2).
    announced: SocketAddrV4,
    /// The control connection's server address.
    control: SocketAddr,
    class: PassiveAddressClass,
    /// Where the first connect went: the announced address, or the control one when the
    /// server announced 0.0.0.0.
    first_target: SocketAddr,
    first_failure: Option<String>,
    /// Why the second connect, to the control address with the announced port, failed.
    fallback_failure: Option<String>,
    /// The LIST over the connection that opened, and where that connection went.
    transfer: Option<(SocketAddr, TransferProbe)>,
}

impl Observed {
    /// A transfer through the announced address completed.
    fn announced_works(&self) -> bool {
        self.transfer
            .as_ref()
            .is_some_and(|(via, probe)| *via == self.first_target && probe.succeeded())
    }
}

/// `passive-address`: whether clients that use the announced address reach the server.
fn address_verdict(observed: &Observed, server: ServerKind) -> Finding {
    let Observed {
        announced,
        control,
        class,
        ..
    } = *observed;
    let announced_ip = IpAddr::V4(*announced.ip());
    match observed.class {
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
        _ if observed.announced_works() => Finding::ok(
            ADDRESS,
            format!(
                "PASV announces {announced_ip} ({}), and it is reachable from here",
                class.describe()
            ),
        ),
        PassiveAddressClass::PrivateBehindNat | PassiveAddressClass::Unroutable => {
            unreachable_address(observed, server)
        }
        PassiveAddressClass::PublicFromInside if observed.transfer.is_some() => Finding::error(
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
        PassiveAddressClass::Different if observed.transfer.is_some() => Finding::error(
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
}

/// `passive-address` for a private address behind NAT, or one no client can reach.
fn unreachable_address(observed: &Observed, server: ServerKind) -> Finding {
    let Observed {
        announced,
        control,
        class,
        ..
    } = *observed;
    let announced_ip = IpAddr::V4(*announced.ip());
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
    if observed.transfer.is_none() {
        let (range, _) = range_for(Some(announced.port()));
        parts.push(vec![
            "and forward the control port and the passive range to the server:".to_owned(),
        ]);
        parts.push(forwarding_commands(announced_ip, control.port(), &range));
    }
    parts.push(vec![
        "Meanwhile EPSV, or clients that ignore the PASV address (curl's default, \
         FileZilla), avoid the problem."
            .to_owned(),
    ]);
    Finding::error(ADDRESS, summary).remedy(join(&parts))
}

/// `passive-reachability`: whether the data port answers and a transfer completes.
fn reachability_verdict(observed: Observed, server: ServerKind) -> Finding {
    let Observed {
        announced,
        control,
        first_target,
        ..
    } = observed;
    let control_port = control.port();
    let (range, range_note) = range_for(Some(announced.port()));
    let refused = observed
        .transfer
        .as_ref()
        .and_then(|(_, probe)| command_refused(REACHABILITY, probe));
    match (&observed.transfer, refused) {
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
            let failure = observed
                .fallback_failure
                .or(observed.first_failure)
                .unwrap_or_default();
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
