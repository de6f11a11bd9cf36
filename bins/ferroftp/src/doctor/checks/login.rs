//! `login`: reach the control port, read the greeting, log in, ask SYST and FEAT.

use std::net::SocketAddr;

use ferroftp_client::{Client, ClientError, ClientOptions, ConnectFailure, connect_timed};

use super::{Context, Options, reply_line};
use crate::doctor::remedies::{ServerKind, firewall_commands, join};
use crate::doctor::{Finding, Security, Target};

const CHECK: &str = "login";

/// Runs the check; the context for the others when the login worked.
pub(super) async fn run(target: &Target, options: Options) -> (Finding, Option<Context>) {
    let mut evidence = Vec::new();
    if target.security == Security::Implicit || options.explicit_tls {
        let finding = Finding::error(
            CHECK,
            "this build of the doctor has no TLS client yet: implicit (ftps://) and explicit \
             (--explicit-tls) FTPS cannot be checked",
        )
        .remedy("check the server in plain FTP (ftp://) if it allows it");
        return (finding, None);
    }

    let addresses = match resolve(target, options).await {
        Ok(addresses) => addresses,
        Err(error) => {
            let finding = Finding::error(CHECK, format!("cannot resolve {}", target.host))
                .evidence(vec![error])
                .remedy("check the host name (DNS) or use the server's IP address");
            return (finding, None);
        }
    };

    let mut connected = None;
    let mut last_failure = None;
    for address in &addresses {
        let attempt = connect_timed(*address, options.timeout).await;
        evidence.push(attempt.to_string());
        match attempt.result {
            Ok(stream) => {
                connected = Some((stream, *address));
                break;
            }
            Err(failure) => last_failure = Some(failure),
        }
    }
    let Some((stream, control)) = connected else {
        let (summary, cause) = match last_failure {
            Some(ConnectFailure::Refused) => (
                format!("the control port {} refuses connections", target.port),
                "nothing listens there (is the server running, on this port?) or a firewall \
                 rejects it",
            ),
            Some(ConnectFailure::TimedOut) => (
                format!(
                    "no answer on the control port {} within {:.1} s",
                    target.port,
                    options.timeout.as_secs_f64()
                ),
                "a firewall drops the control port, or the host is down or not forwarded",
            ),
            _ => (
                format!("cannot connect to the control port {}", target.port),
                "there is no route to the server from here",
            ),
        };
        let remedy = join(&[
            vec![format!(
                "{cause}. Start the server and open the control port {} on its host:",
                target.port
            )],
            firewall_commands(target.port, None),
        ]);
        let finding = Finding::error(CHECK, summary)
            .evidence(evidence)
            .remedy(remedy);
        return (finding, None);
    };

    let client_options = ClientOptions {
        timeout: options.timeout,
    };
    let mut client = match Client::from_stream(stream, client_options) {
        Ok(client) => client,
        Err(error) => {
            let finding = Finding::error(CHECK, format!("control connection failed: {error}"))
                .evidence(evidence);
            return (finding, None);
        }
    };
    let greeting = match client.read_reply().await {
        Ok(greeting) => greeting,
        Err(error) => {
            evidence.push(format!("greeting: {error}"));
            let finding = Finding::error(CHECK, "the server sends no greeting")
                .evidence(evidence)
                .remedy(
                    "the port answers but does not speak FTP: check the port, or whether it \
                     expects implicit TLS (ftps://)",
                );
            return (finding, None);
        }
    };
    evidence.push(format!("greeting: {}", reply_line(&greeting)));
    if greeting.code.0 != 220 {
        let finding = Finding::error(CHECK, format!("the server is not ready: {}", reply_line(&greeting)))
            .evidence(evidence)
            .remedy("a 421 greeting means the server is full or refuses this client address: check its session limits");
        return (finding, None);
    }

    let password = target.password.as_deref().unwrap_or_default();
    match login(&mut client, &target.user, password, &mut evidence).await {
        Ok(()) => {}
        Err(summary) => {
            let finding = Finding::error(CHECK, summary).evidence(evidence).remedy(
                "check the user name and password (URL, FERROFTP_PASSWORD or the prompt); a \
                 server that requires TLS refuses plain logins: use --explicit-tls or ftps://",
            );
            return (finding, None);
        }
    }

    let syst = match client.command("SYST").await {
        Ok(reply) => {
            evidence.push(format!("SYST → {}", reply_line(&reply)));
            reply.text()
        }
        Err(error) => {
            evidence.push(format!("SYST → {error}"));
            String::new()
        }
    };
    let mut features = Vec::new();
    match client.command("FEAT").await {
        Ok(reply) if reply.code.0 == 211 => {
            let lines = reply.lines.clone();
            // The first and last lines are "Features:" / "End"; the rest are features.
            if lines.len() > 2 {
                features = lines[1..lines.len() - 1]
                    .iter()
                    .map(|line| line.trim().to_owned())
                    .collect();
            }
            evidence.push(format!("FEAT → 211: {}", features.join(", ")));
        }
        Ok(reply) => evidence.push(format!("FEAT → {}", reply_line(&reply))),
        Err(error) => evidence.push(format!("FEAT → {error}")),
    }
    let _ = client.quit().await;

    let server = ServerKind::identify(&greeting.text(), &syst, &features);
    let tls = if features
        .iter()
        .any(|feature| feature.to_ascii_uppercase().starts_with("AUTH TLS"))
    {
        "offers AUTH TLS"
    } else {
        "no AUTH TLS"
    };
    let summary = format!(
        "logged in as {} at {control}; server: {}; {tls}",
        target.user,
        match server {
            ServerKind::Unknown => "not identified (remedies name all four servers)",
            known => known.name(),
        }
    );
    let context = Context {
        target: target.clone(),
        options,
        control,
        server,
        features,
        passive: None,
        active_echo: None,
        tls_passive: None,
    };
    (
        Finding::ok(CHECK, summary).evidence(evidence),
        Some(context),
    )
}

async fn resolve(target: &Target, options: Options) -> Result<Vec<SocketAddr>, String> {
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    match tokio::time::timeout(options.timeout, lookup).await {
        Ok(Ok(addresses)) => {
            let addresses: Vec<SocketAddr> = addresses.collect();
            if addresses.is_empty() {
                Err(format!("{} has no address", target.host))
            } else {
                Ok(addresses)
            }
        }
        Ok(Err(error)) => Err(format!("resolving {}: {error}", target.host)),
        Err(_elapsed) => Err(format!(
            "resolving {}: no answer within {:.1} s",
            target.host,
            options.timeout.as_secs_f64()
        )),
    }
}

/// USER, then PASS when asked; each reply goes to `evidence` (the password never does).
async fn login(
    client: &mut Client,
    user: &str,
    password: &str,
    evidence: &mut Vec<String>,
) -> Result<(), String> {
    let reply = client
        .command(&format!("USER {user}"))
        .await
        .map_err(|error| describe_failure("USER", &error))?;
    evidence.push(format!("USER {user} → {}", reply_line(&reply)));
    match reply.code.0 {
        230 => return Ok(()),
        331 => {}
        _ => return Err(format!("USER refused: {}", reply_line(&reply))),
    }
    let reply = client
        .command(&format!("PASS {password}"))
        .await
        .map_err(|error| describe_failure("PASS", &error))?;
    evidence.push(format!("PASS **** → {}", reply_line(&reply)));
    match reply.code.0 {
        230 | 202 => Ok(()),
        _ => Err(format!("login refused: {}", reply_line(&reply))),
    }
}

fn describe_failure(command: &str, error: &ClientError) -> String {
    format!("no reply to {command}: {error}")
}
