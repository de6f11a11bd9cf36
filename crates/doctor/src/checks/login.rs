//! `login`: reach the control port, read the greeting, log in, ask SYST and FEAT.

use std::net::SocketAddr;

use ferroftp_client::{
    Client, ClientError, ClientOptions, ClientTls, ConnectFailure, Reply, connect_timed,
};

use super::{Context, Options, doctor_tls, reply_line};
use crate::remedies::{ServerKind, firewall_commands, join};
use crate::{Finding, Security, Target};

const CHECK: &str = "login";

/// Runs the check; the context for the others when the login worked.
pub(super) async fn run(target: &Target, options: Options) -> (Finding, Option<Context>) {
    let mut evidence = Vec::new();
    let addresses = match resolve(target, options).await {
        Ok(addresses) => addresses,
        Err(error) => {
            let finding = Finding::error(CHECK, format!("cannot resolve {}", target.host))
                .evidence(vec![error.to_string()])
                .remedy("check the host name (DNS) or use the server's IP address");
            return (finding, None);
        }
    };

    let (stream, control) = match connect(target, options, &addresses, &mut evidence).await {
        Ok(connected) => connected,
        Err((summary, remedy)) => {
            let finding = Finding::error(CHECK, summary)
                .evidence(evidence)
                .remedy(remedy);
            return (finding, None);
        }
    };

    let implicit = target.security == Security::Implicit;
    let mut session_tls = None;
    if implicit || options.explicit_tls {
        match doctor_tls(&target.host) {
            Ok(tls) => session_tls = Some(tls),
            Err(error) => {
                let finding =
                    Finding::error(CHECK, format!("cannot set up TLS: {error}")).evidence(evidence);
                return (finding, None);
            }
        }
    }
    let mut client = match login_session(
        stream,
        target,
        session_tls.clone(),
        implicit,
        options,
        &mut evidence,
    )
    .await
    {
        Ok(client) => client,
        Err((summary, remedy)) => {
            // A server that refuses plain logins may accept them over TLS: go on with TLS.
            let refused =
                summary.starts_with("login refused") || summary.starts_with("USER refused");
            let upgraded = if session_tls.is_none() && refused {
                upgrade_to_tls(target, control, options, &mut evidence).await
            } else {
                None
            };
            match upgraded {
                Some((client, tls)) => {
                    session_tls = Some(tls);
                    client
                }
                None => {
                    let finding = Finding::error(CHECK, summary)
                        .evidence(evidence)
                        .remedy(remedy);
                    return (finding, None);
                }
            }
        }
    };
    let greeting_text = evidence
        .iter()
        .find_map(|line| line.strip_prefix("greeting: "))
        .unwrap_or_default()
        .to_owned();

    let (syst, features) = system_and_features(&mut client, &mut evidence).await;
    let _ = client.quit().await;

    let server = ServerKind::identify(&greeting_text, &syst, &features);
    let tls = tls_in_use(implicit, session_tls.is_some(), &features);
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
        session_tls,
        implicit,
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

/// How the session used TLS, for the summary: implicit, after AUTH TLS (RFC 4217 §4), or
/// not at all, and then whether FEAT offered it.
fn tls_in_use(implicit: bool, auth_tls: bool, features: &[String]) -> &'static str {
    if implicit {
        "implicit TLS"
    } else if auth_tls {
        "over AUTH TLS"
    } else if features
        .iter()
        .any(|feature| feature.to_ascii_uppercase().starts_with("AUTH TLS"))
    {
        "offers AUTH TLS"
    } else {
        "no AUTH TLS"
    }
}

/// Connects to the control port at the first of `addresses` that answers; every attempt goes
/// to `evidence`. The error is a summary and a remedy, from the last failure.
async fn connect(
    target: &Target,
    options: Options,
    addresses: &[SocketAddr],
    evidence: &mut Vec<String>,
) -> Result<(tokio::net::TcpStream, SocketAddr), (String, String)> {
    let mut last_failure = None;
    for address in addresses {
        let attempt = connect_timed(*address, options.timeout).await;
        evidence.push(attempt.to_string());
        match attempt.result {
            Ok(stream) => return Ok((stream, *address)),
            Err(failure) => last_failure = Some(failure),
        }
    }
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
    Err((summary, remedy))
}

/// SYST's text and FEAT's features (RFC 2389 §3), empty when the server does not answer;
/// the replies go to `evidence`.
async fn system_and_features(
    client: &mut Client,
    evidence: &mut Vec<String>,
) -> (String, Vec<String>) {
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
    (syst, features)
}

/// Greeting, TLS as asked (implicit handshake first, or AUTH TLS after the greeting),
/// login and, with TLS, PBSZ 0 and PROT P. The error is a summary and a remedy.
async fn login_session(
    stream: tokio::net::TcpStream,
    target: &Target,
    tls: Option<ClientTls>,
    implicit: bool,
    options: Options,
    evidence: &mut Vec<String>,
) -> Result<Client, (String, String)> {
    let client_options = ClientOptions {
        timeout: options.timeout,
    };
    let mut client = Client::from_stream(stream, client_options)
        .map_err(|error| (format!("control connection failed: {error}"), String::new()))?;
    if let (Some(tls), true) = (&tls, implicit) {
        client.upgrade_to_tls(tls.clone()).await.map_err(|error| {
            evidence.push(format!("implicit TLS handshake: {error}"));
            (
                "the implicit TLS handshake fails".to_owned(),
                "check that the port speaks implicit FTPS (traditionally 990); for explicit \
                 FTPS use ftp:// with --explicit-tls"
                    .to_owned(),
            )
        })?;
        evidence.push("implicit TLS handshake: done".to_owned());
    }
    let greeting = match client.read_reply().await {
        Ok(greeting) => greeting,
        Err(error) => {
            evidence.push(format!("greeting: {error}"));
            return Err((
                "the server sends no greeting".to_owned(),
                "the port answers but does not speak FTP: check the port, or whether it \
                 expects implicit TLS (ftps://)"
                    .to_owned(),
            ));
        }
    };
    evidence.push(format!("greeting: {}", reply_line(&greeting)));
    if greeting.code.0 != 220 {
        return Err((
            format!("the server is not ready: {}", reply_line(&greeting)),
            "a 421 greeting means the server is full or refuses this client address: check \
             its session limits"
                .to_owned(),
        ));
    }
    if let (Some(tls), false) = (&tls, implicit) {
        match client.auth_tls(tls.clone()).await {
            Ok(reply) => evidence.push(format!("AUTH TLS → {}", reply_line(&reply))),
            Err(error) => {
                evidence.push(format!("AUTH TLS → {error}"));
                return Err((
                    "AUTH TLS fails".to_owned(),
                    "the server does not offer explicit FTPS here: enable TLS on the server, or \
                     check without --explicit-tls"
                        .to_owned(),
                ));
            }
        }
    }
    let password = target.password.as_deref().unwrap_or_default();
    login(&mut client, &target.user, password, evidence)
        .await
        .map_err(|error| {
            (
                error.to_string(),
                "check the user name and password (URL, FERROFTP_PASSWORD or the prompt); a \
                 server that requires TLS refuses plain logins: use --explicit-tls or ftps://"
                    .to_owned(),
            )
        })?;
    if tls.is_some() {
        for command in ["PBSZ 0", "PROT P"] {
            match client.command(command).await {
                Ok(reply) => evidence.push(format!("{command} → {}", reply_line(&reply))),
                Err(error) => evidence.push(format!("{command} → {error}")),
            }
        }
        // Without a 200 to PROT P the transfers show it; the tls check says why.
        let _ = client.set_data_protection(true);
    }
    Ok(client)
}

/// After a refused plain login: the same login over AUTH TLS, when the server takes it.
async fn upgrade_to_tls(
    target: &Target,
    control: SocketAddr,
    options: Options,
    evidence: &mut Vec<String>,
) -> Option<(Client, ClientTls)> {
    let tls = doctor_tls(&target.host).ok()?;
    let attempt = connect_timed(control, options.timeout).await;
    let stream = attempt.result.ok()?;
    let mut retry = Vec::new();
    match login_session(
        stream,
        target,
        Some(tls.clone()),
        false,
        options,
        &mut retry,
    )
    .await
    {
        Ok(client) => {
            evidence.push(
                "the plain login was refused; over AUTH TLS it works: the server requires TLS, \
                 the checks go on over TLS"
                    .to_owned(),
            );
            evidence.extend(
                retry
                    .into_iter()
                    .filter(|line| !line.starts_with("greeting")),
            );
            Some((client, tls))
        }
        Err(_) => None,
    }
}

/// Why the server's name gave no address to connect to.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error("{host} has no address")]
    NoAddress { host: String },
    #[error("resolving {host}: {error}")]
    Failed { host: String, error: std::io::Error },
    #[error("resolving {host}: no answer within {:.1} s", .waited.as_secs_f64())]
    TimedOut {
        host: String,
        waited: std::time::Duration,
    },
}

async fn resolve(target: &Target, options: Options) -> Result<Vec<SocketAddr>, ResolveError> {
    let host = || target.host.clone();
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    match tokio::time::timeout(options.timeout, lookup).await {
        Ok(Ok(addresses)) => {
            let addresses: Vec<SocketAddr> = addresses.collect();
            if addresses.is_empty() {
                Err(ResolveError::NoAddress { host: host() })
            } else {
                Ok(addresses)
            }
        }
        Ok(Err(error)) => Err(ResolveError::Failed {
            host: host(),
            error,
        }),
        Err(_elapsed) => Err(ResolveError::TimedOut {
            host: host(),
            waited: options.timeout,
        }),
    }
}

/// Why USER/PASS did not log in; the summary of the `login` finding.
#[derive(Debug, thiserror::Error)]
enum LoginError {
    /// USER or PASS got no reply.
    #[error("no reply to {command}: {error}")]
    NoReply {
        command: &'static str,
        error: ClientError,
    },
    /// USER was answered with neither 230 nor 331 (RFC 959 §5.4).
    #[error("USER refused: {}", reply_line(.0))]
    UserRefused(Reply),
    /// PASS was answered with neither 230 nor 202.
    #[error("login refused: {}", reply_line(.0))]
    Refused(Reply),
}

/// USER, then PASS when asked; each reply goes to `evidence` (the password never does).
async fn login(
    client: &mut Client,
    user: &str,
    password: &str,
    evidence: &mut Vec<String>,
) -> Result<(), LoginError> {
    let reply = client
        .command(&format!("USER {user}"))
        .await
        .map_err(|error| LoginError::NoReply {
            command: "USER",
            error,
        })?;
    evidence.push(format!("USER {user} → {}", reply_line(&reply)));
    match reply.code.0 {
        230 => return Ok(()),
        331 => {}
        _ => return Err(LoginError::UserRefused(reply)),
    }
    let reply = client
        .command(&format!("PASS {password}"))
        .await
        .map_err(|error| LoginError::NoReply {
            command: "PASS",
            error,
        })?;
    evidence.push(format!("PASS **** → {}", reply_line(&reply)));
    match reply.code.0 {
        230 | 202 => Ok(()),
        _ => Err(LoginError::Refused(reply)),
    }
}
