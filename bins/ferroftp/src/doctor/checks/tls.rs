//! `tls`: AUTH TLS offered, the certificate, a PROT P data connection, and TLS session
//! reuse on data connections.
//!
//! Two findings: the certificate (facts, and whether it verifies against the system's CA
//! store for the name in the URL), and the protected data channel. For the latter a LIST runs
//! twice over PROT P: once with a data connection that resumes the control connection's TLS
//! session (as curl, lftp and FileZilla do) and once with a full handshake (as Python's
//! ftplib and many libraries do). A server that refuses the second requires session reuse.
//! The first session also records the PASV reply seen under TLS, where no middlebox can
//! rewrite it, for `alg-rewrite`. The LIST goes over EPSV (PASV when EPSV is refused), so a
//! wrong PASV address does not hide what TLS does.

use std::net::{IpAddr, SocketAddr};

use ferroftp_client::{ClientError, ClientTls, TransferProbe, connect_timed, inspect_tls};
use x509_parser::extensions::GeneralName;

use super::passive::describe_failure;
use super::{Context, TlsPassive, doctor_tls, reply_line, transfer_evidence};
use crate::doctor::Finding;
use crate::doctor::remedies::{join, session_reuse_settings};

const CHECK: &str = "tls";

pub(super) async fn run(context: &mut Context) -> Vec<Finding> {
    let offered: Vec<String> = context
        .features
        .iter()
        .filter(|feature| feature.to_ascii_uppercase().starts_with("AUTH"))
        .cloned()
        .collect();
    if offered.is_empty() && context.session_tls.is_none() {
        return vec![
            Finding::warning(
                CHECK,
                "the server offers no AUTH TLS: passwords and files travel in clear text",
            )
            .evidence(vec!["FEAT lists no AUTH line".to_owned()]),
        ];
    }
    let host = context.target.host.clone();
    let mut findings = Vec::new();
    match inspect_tls(context.control, context.implicit, &host, context.timeout()).await {
        Ok(inspection) => {
            let mut finding = certificate_finding(&inspection, &host);
            finding.evidence.splice(
                0..0,
                offered.iter().map(|feature| format!("FEAT: {feature}")),
            );
            findings.push(finding);
        }
        Err(error) if error.starts_with("AUTH TLS → 5") => {
            return vec![
                Finding::warning(
                    CHECK,
                    "FEAT lists AUTH TLS but the server refuses it: TLS is not enabled, \
                     passwords and files travel in clear text",
                )
                .evidence(vec![error]),
            ];
        }
        Err(error) => {
            return vec![
                Finding::error(CHECK, "the TLS handshake fails")
                    .evidence(vec![error])
                    .remedy(
                        "check the server's certificate and key files and its TLS log; the \
                         server offers TLS but cannot complete a handshake",
                    ),
            ];
        }
    }
    findings.push(data_channel_finding(context, &host).await);
    findings
}

/// The certificate's facts and whether clients that verify it will accept it.
fn certificate_finding(inspection: &ferroftp_client::TlsInspection, host: &str) -> Finding {
    let mut evidence = vec![format!("TLS session: {}", inspection.session)];
    let mut expired = false;
    let mut self_signed = false;
    match inspection.certificates.first() {
        Some(der) => match x509_parser::parse_x509_certificate(der) {
            Ok((_, certificate)) => {
                let subject = certificate.subject().to_string();
                let issuer = certificate.issuer().to_string();
                self_signed = subject == issuer;
                let validity = certificate.validity();
                expired = !validity.is_valid();
                evidence.push(format!("certificate subject: {subject}"));
                evidence.push(format!(
                    "issuer: {issuer}{}",
                    if self_signed { " (self-signed)" } else { "" }
                ));
                evidence.push(format!(
                    "valid from {} until {}{}",
                    validity.not_before,
                    validity.not_after,
                    if expired { " (NOT valid now)" } else { "" }
                ));
                let names = subject_alternative_names(&certificate);
                if !names.is_empty() {
                    evidence.push(format!("names: {}", names.join(", ")));
                }
                evidence.push(format!(
                    "chain: {} certificate(s)",
                    inspection.certificates.len()
                ));
            }
            Err(error) => evidence.push(format!("certificate unparseable: {error}")),
        },
        None => evidence.push("no certificate received".to_owned()),
    }
    match &inspection.verification {
        Ok(()) => {
            evidence.push(format!("verifies for {host} against the system's CA store"));
            Finding::ok(
                CHECK,
                format!(
                    "TLS works ({}); the certificate verifies for {host}",
                    inspection.session
                ),
            )
            .evidence(evidence)
        }
        Err(reason) => {
            evidence.push(format!(
                "does not verify for {host} against the system's CA store: {reason}"
            ));
            let summary = if expired {
                "the server's certificate has expired (or is not yet valid): clients refuse it"
                    .to_owned()
            } else {
                format!(
                    "the certificate does not verify for {host} ({}): clients that verify \
                     (curl, lftp) refuse it unless told to trust it",
                    if self_signed {
                        "self-signed"
                    } else {
                        "untrusted issuer or wrong name"
                    }
                )
            };
            let finding = if expired {
                Finding::error(CHECK, summary)
            } else {
                Finding::warning(CHECK, summary)
            };
            finding.evidence(evidence).remedy(
                "use a certificate from a CA the clients trust, for the name they connect to \
                 (e.g. Let's Encrypt), or give clients the certificate to trust (curl --cacert, \
                 lftp set ssl:ca-file)",
            )
        }
    }
}

fn subject_alternative_names(
    certificate: &x509_parser::certificate::X509Certificate,
) -> Vec<String> {
    let Ok(Some(extension)) = certificate.subject_alternative_name() else {
        return Vec::new();
    };
    extension
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|octets| IpAddr::from(octets).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|octets| IpAddr::from(octets).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// What one protected LIST did.
struct ProtectedList {
    evidence: Vec<String>,
    /// The data connection was established (a TLS problem, not a reachability one).
    connected: bool,
    probe: Option<TransferProbe>,
}

impl ProtectedList {
    fn succeeded(&self) -> bool {
        self.probe.as_ref().is_some_and(TransferProbe::succeeded)
    }

    /// The final reply's text, for the reasons servers give (`session reuse required`).
    fn final_text(&self) -> String {
        self.probe
            .as_ref()
            .and_then(TransferProbe::final_reply)
            .map(reply_line)
            .unwrap_or_default()
    }
}

async fn data_channel_finding(context: &mut Context, host: &str) -> Finding {
    let resuming = match doctor_tls(host) {
        Ok(tls) => tls,
        Err(error) => return Finding::error(CHECK, format!("cannot set up TLS: {error}")),
    };
    let with_reuse = protected_list(context, resuming.clone(), true).await;
    let mut evidence = vec!["with a resumed TLS session on the data connection:".to_owned()];
    evidence.extend(with_reuse.evidence.iter().map(|line| format!("  {line}")));
    if !with_reuse.connected {
        return Finding::warning(
            CHECK,
            "PROT P not tested: the data connection could not be opened (see epsv and \
             passive-reachability)",
        )
        .evidence(evidence);
    }
    let fresh = protected_list(context, resuming.without_data_resumption(), false).await;
    evidence.push("with a full TLS handshake on the data connection:".to_owned());
    evidence.extend(fresh.evidence.iter().map(|line| format!("  {line}")));

    let reuse_remedy = || {
        join(&[
            vec![
                "Stop requiring TLS session reuse on data connections (it protects against \
                  data connection theft, so exempt only what needs it where you can):"
                    .to_owned(),
            ],
            session_reuse_settings(context.server),
            vec!["or use clients that resume the session (curl, lftp, FileZilla).".to_owned()],
        ])
    };
    match (with_reuse.succeeded(), fresh.succeeded()) {
        (true, true) => Finding::ok(
            CHECK,
            "PROT P data connections work, with or without TLS session reuse",
        )
        .evidence(evidence),
        (true, false) => {
            let reply = fresh.final_text();
            Finding::error(
                CHECK,
                format!(
                    "the server requires TLS session reuse on data connections: we resume the \
                     control connection's session and can transfer, but clients that do not \
                     (Python ftplib, many libraries) fail{}",
                    if reply.is_empty() {
                        String::new()
                    } else {
                        format!(" with {reply}")
                    }
                ),
            )
            .evidence(evidence)
            .remedy(reuse_remedy())
        }
        (false, _) => {
            let reply = with_reuse.final_text();
            let mentions_reuse = format!("{reply} {}", fresh.final_text())
                .to_ascii_lowercase()
                .contains("reuse");
            let summary = if mentions_reuse {
                format!(
                    "the server requires TLS session reuse and refuses even our resumed \
                     session: PROT P transfers fail ({reply})"
                )
            } else {
                format!(
                    "PROT P transfers fail{}",
                    if reply.is_empty() {
                        String::new()
                    } else {
                        format!(": {reply}")
                    }
                )
            };
            let finding = Finding::error(CHECK, summary).evidence(evidence);
            if mentions_reuse {
                finding.remedy(reuse_remedy())
            } else {
                finding.remedy(
                    "check the server's TLS log for the data connection; a server that needs \
                     its certificate on data connections too, or a TLS-inspecting middlebox, \
                     breaks PROT P",
                )
            }
        }
    }
}

/// One TLS session: login, PBSZ/PROT P, PASV (recorded under TLS when `record_passive`), then
/// LIST over EPSV (PASV when EPSV is refused) with a protected data connection.
async fn protected_list(
    context: &mut Context,
    tls: ClientTls,
    record_passive: bool,
) -> ProtectedList {
    let mut evidence = Vec::new();
    let mut result = ProtectedList {
        evidence: Vec::new(),
        connected: false,
        probe: None,
    };
    let mut client = match context
        .open_session_with(Some(tls.clone()), &mut evidence)
        .await
    {
        Ok(client) => client,
        Err(error) => {
            evidence.push(error);
            result.evidence = evidence;
            return result;
        }
    };
    let control = context.control;
    let mut pasv_target = None;
    if control.is_ipv4() {
        match client.request_passive().await {
            Ok((reply, announced)) => {
                evidence.push(format!("PASV → {}", reply_line(&reply)));
                if record_passive {
                    context.tls_passive = Some(TlsPassive {
                        announced,
                        reply_line: reply_line(&reply),
                    });
                }
                pasv_target = Some(if announced.ip().is_unspecified() {
                    SocketAddr::new(control.ip(), announced.port())
                } else {
                    SocketAddr::V4(announced)
                });
            }
            Err(ClientError::UnexpectedReply(reply)) => {
                evidence.push(format!("PASV → {}", reply_line(&reply)));
            }
            Err(error) => evidence.push(format!("PASV → {error}")),
        }
    }
    let target = match client.request_extended_passive().await {
        Ok((reply, port)) => {
            evidence.push(format!("EPSV → {}", reply_line(&reply)));
            Some(SocketAddr::new(control.ip(), port))
        }
        Err(error) => {
            evidence.push(format!("EPSV → {error}"));
            // The PASV listener was replaced by nothing: ask again and use it.
            match client.request_passive().await {
                Ok((reply, announced)) => {
                    evidence.push(format!("PASV → {}", reply_line(&reply)));
                    Some(SocketAddr::V4(announced))
                }
                Err(_) => pasv_target,
            }
        }
    };
    if let Some(target) = target {
        let attempt = connect_timed(target, context.timeout()).await;
        evidence.push(attempt.to_string());
        if let Some(failure) = describe_failure(&attempt) {
            evidence.push(format!("the data port {failure}"));
        }
        if let Ok(stream) = attempt.result {
            result.connected = true;
            let command = context.list_command();
            let probe = client
                .probe_transfer(&command, stream, Some(&tls), context.timeout() * 2)
                .await;
            evidence.extend(transfer_evidence(&probe));
            if let Some(session) = &probe.data_tls {
                evidence.push(format!("data connection TLS: {session}"));
            }
            result.probe = Some(probe);
        }
    }
    result.evidence = evidence;
    result
}
