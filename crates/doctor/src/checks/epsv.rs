//! `epsv`: EPSV (RFC 2428) announces only a port, on the control address. Compared with
//! PASV, it tells a wrong announced address (EPSV works, PASV not) from a blocked port
//! range (both fail), and finds port mappings that only PASV survives.

use std::net::SocketAddr;

use ferroftp_client::{ClientError, connect_timed};

use super::passive::describe_failure;
use super::{Context, command_refused, reply_line, transfer_evidence};
use crate::Finding;
use crate::remedies::{firewall_commands, join, passive_range_settings, range_for};

const CHECK: &str = "epsv";

pub(super) async fn run(context: &mut Context) -> Vec<Finding> {
    let pasv_works = context
        .passive
        .as_ref()
        .map(|observation| observation.works);
    let mut client = match context.open_session().await {
        Ok(client) => client,
        Err(error) => {
            return vec![
                Finding::error(CHECK, "could not log in again to test EPSV")
                    .evidence(vec![error.to_string()]),
            ];
        }
    };
    let (reply, port) = match client.request_extended_passive().await {
        Ok(answer) => answer,
        Err(ClientError::UnexpectedReply(reply)) => {
            let evidence = vec![format!("EPSV → {}", reply_line(&reply))];
            let finding = if pasv_works == Some(true) {
                Finding::warning(
                    CHECK,
                    "the server refuses EPSV; clients fall back to PASV, which works",
                )
            } else {
                Finding::warning(CHECK, "the server refuses EPSV")
            };
            return vec![finding.evidence(evidence)];
        }
        Err(error) => {
            return vec![
                Finding::error(CHECK, "EPSV gets no usable reply")
                    .evidence(vec![format!("EPSV → {error}")]),
            ];
        }
    };
    let mut evidence = vec![format!("EPSV → {}", reply_line(&reply))];
    let target = SocketAddr::new(context.control.ip(), port);
    let attempt = connect_timed(target, context.timeout()).await;
    evidence.push(attempt.to_string());
    let failure = describe_failure(&attempt);
    let mut refused = None;
    let works = match attempt.result {
        Ok(stream) => {
            let command = context.list_command();
            let probe = client
                .probe_transfer(&command, stream, context.data_tls(), context.timeout() * 2)
                .await;
            evidence.extend(transfer_evidence(&probe));
            refused = command_refused(CHECK, &probe);
            probe.succeeded()
        }
        Err(_) => false,
    };
    drop(client);
    if let Some(finding) = refused {
        return vec![finding.evidence(evidence)];
    }

    let finding = verdict(context, port, works, pasv_works, failure.as_deref());
    vec![finding.evidence(evidence)]
}

/// What EPSV's transfer on `port` says, read against PASV's (`pasv_works`, `None` when the
/// passive check did not get that far); `failure` describes a connection that did not open.
fn verdict(
    context: &Context,
    port: u16,
    works: bool,
    pasv_works: Option<bool>,
    failure: Option<&str>,
) -> Finding {
    match (works, pasv_works) {
        (true, Some(false)) => Finding::warning(
            CHECK,
            format!(
                "EPSV works (port {port}) where PASV does not: clients that use EPSV (curl, \
                 lftp) work, PASV-only clients hang"
            ),
        )
        .remedy("fix PASV (see passive-address and passive-reachability)"),
        (true, _) => Finding::ok(CHECK, format!("EPSV works (port {port})")),
        (false, Some(true)) => Finding::error(
            CHECK,
            format!(
                "EPSV's data port {port} {} while PASV works: clients that try EPSV first \
                 (curl, lftp) hang",
                failure.unwrap_or("does not complete a transfer")
            ),
        )
        .remedy(join(&[vec![
            "Something between here and the server maps the passive ports (a load balancer, \
             a NAT with port translation) and only PASV's announced port is mapped: forward \
             the passive range 1:1 (same port numbers) or, with ferroftp, set \
             [passive] advertise_ports to the mapped range; until then: curl --disable-epsv, \
             lftp: set ftp:prefer-epsv no"
                .to_owned(),
        ]])),
        (false, _) => {
            let (range, note) = range_for(Some(port));
            Finding::error(
                CHECK,
                format!(
                    "EPSV's data port {port} {} too: the passive range is blocked",
                    failure.unwrap_or("does not complete a transfer")
                ),
            )
            .remedy(join(&[
                vec![format!(
                    "Open the passive range in the server's firewall and pin it ({note}):"
                )],
                passive_range_settings(context.server, &range),
                firewall_commands(context.control.port(), Some(range.clone())),
            ]))
        }
    }
}
