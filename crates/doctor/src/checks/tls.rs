//! `tls`: AUTH TLS offered, the certificate, PROT P data connections, and TLS session
//! reuse on data connections.
//!
//! Two findings: the certificate (facts, and whether it verifies against the system's CA
//! store for the name in the URL), and the protected data channel. For the latter, sessions
//! run LISTs over PROT P as real clients do:
//!
//! - resuming TLS sessions on the data connections (as curl, lftp, FileZilla and rclone do),
//!   once negotiating TLS 1.3 and once TLS 1.2 (still what most FTPS clients in the field
//!   negotiate), two LISTs in each session: the second resumes the newest session, which the
//!   first data connection issued (curl and rclone keep only the newest);
//! - with a full handshake on the data connection (as Python's ftplib and many libraries
//!   do). A server that refuses it requires session reuse: a deliberate defence against data
//!   connection theft, a warning (the clients that resume work), unless clients that resume
//!   fail too.
//!
//! The first session also records the PASV reply seen under TLS, where no middlebox can
//! rewrite it, for `alg-rewrite`. The LISTs go over EPSV (PASV when EPSV is refused), so a
//! wrong PASV address does not hide what TLS does.

use std::net::{IpAddr, SocketAddr};

use ferroftp_client::{
    ClientError, ClientTls, ServerVerification, TlsInspectionError, TlsVersion, TransferProbe,
    connect_timed, inspect_tls,
};
use x509_parser::extensions::GeneralName;

use super::passive::describe_failure;
use super::{Context, TlsPassive, doctor_tls, reply_line, transfer_evidence};
use crate::Finding;
use crate::remedies::{ServerKind, join, session_reuse_settings};

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
        Err(error @ TlsInspectionError::AuthTlsRefused { code, .. }) if code.0 >= 500 => {
            return vec![
                Finding::warning(
                    CHECK,
                    "FEAT lists AUTH TLS but the server refuses it: TLS is not enabled, \
                     passwords and files travel in clear text",
                )
                .evidence(vec![error.to_string()]),
            ];
        }
        Err(error) => {
            return vec![
                Finding::error(CHECK, "the TLS handshake fails")
                    .evidence(vec![error.to_string()])
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

/// What one session's protected LISTs did.
struct ProtectedList {
    evidence: Vec<String>,
    /// The first data connection was established (a TLS problem, not a reachability one).
    connected: bool,
    /// The control connection's TLS handshake worked (a server may refuse a TLS version).
    handshake: bool,
    probes: Vec<TransferProbe>,
    /// How many LISTs the session was to run.
    wanted: usize,
}

impl ProtectedList {
    fn succeeded(&self) -> bool {
        self.probes.len() == self.wanted && self.probes.iter().all(TransferProbe::succeeded)
    }

    /// The final reply's text of the first LIST that failed, for the reasons servers give
    /// (`session reuse required`).
    fn final_text(&self) -> String {
        self.probes
            .iter()
            .find(|probe| !probe.succeeded())
            .and_then(TransferProbe::final_reply)
            .map(reply_line)
            .unwrap_or_default()
    }
}

/// The TLS versions the doctor tries data connections with, as clients negotiate them.
const VERSIONS: [(&str, TlsVersion); 2] = [
    ("TLS 1.3", TlsVersion::Tls13),
    ("TLS 1.2", TlsVersion::Tls12),
];

/// LISTs per resuming session: the second resumes a session issued on a data connection.
const RESUMING_LISTS: usize = 2;

async fn data_channel_finding(context: &mut Context, host: &str) -> Finding {
    let mut evidence = Vec::new();
    let mut resumed: Vec<(&str, ProtectedList)> = Vec::new();
    for (index, (name, version)) in VERSIONS.into_iter().enumerate() {
        let tls =
            match ClientTls::with_versions(ServerVerification::AcceptAny, host, None, &[version]) {
                Ok(tls) => tls,
                Err(error) => return Finding::error(CHECK, format!("cannot set up TLS: {error}")),
            };
        let list = protected_list(context, tls, index == 0, RESUMING_LISTS).await;
        evidence.push(format!(
            "{name}, a resumed session on each data connection, {RESUMING_LISTS} LISTs:"
        ));
        evidence.extend(list.evidence.iter().map(|line| format!("  {line}")));
        resumed.push((name, list));
    }
    // Versions the server does not speak at all are not a data-connection problem.
    resumed.retain(|(_, list)| list.handshake);
    if resumed.iter().all(|(_, list)| !list.connected) {
        return Finding::warning(
            CHECK,
            "PROT P not tested: the data connection could not be opened (see epsv and \
             passive-reachability)",
        )
        .evidence(evidence);
    }
    let fresh_tls = match doctor_tls(host) {
        Ok(tls) => tls.without_data_resumption(),
        Err(error) => return Finding::error(CHECK, format!("cannot set up TLS: {error}")),
    };
    let fresh = protected_list(context, fresh_tls, false, 1).await;
    evidence.push("a full TLS handshake on the data connection:".to_owned());
    evidence.extend(fresh.evidence.iter().map(|line| format!("  {line}")));

    data_channel_verdict(context.server, &resumed, &fresh, evidence)
}

/// What the protected LISTs say: `resumed` are those that resumed the control connection's
/// session, per TLS version the server speaks; `fresh` did a full handshake.
fn data_channel_verdict(
    server: ServerKind,
    resumed: &[(&str, ProtectedList)],
    fresh: &ProtectedList,
    evidence: Vec<String>,
) -> Finding {
    let reuse_settings = || {
        join(&[
            vec![
                "Only if such clients must be served: TLS session reuse protects against data \
                 connection theft, so exempt only what needs it where you can:"
                    .to_owned(),
            ],
            session_reuse_settings(server),
            vec![
                "or use clients that resume the session (curl, lftp, FileZilla, rclone)."
                    .to_owned(),
            ],
        ])
    };
    let working: Vec<&str> = resumed
        .iter()
        .filter(|(_, list)| list.succeeded())
        .map(|(name, _)| *name)
        .collect();
    let failing: Vec<(&str, String)> = resumed
        .iter()
        .filter(|(_, list)| !list.succeeded())
        .map(|(name, list)| (*name, list.final_text()))
        .collect();
    if failing.is_empty() {
        let versions = working.join(" and ");
        if fresh.succeeded() {
            return Finding::ok(
                CHECK,
                format!(
                    "PROT P data connections work ({versions}), with or without TLS session \
                     reuse"
                ),
            )
            .evidence(evidence);
        }
        let reply = fresh.final_text();
        return Finding::warning(
            CHECK,
            format!(
                "the server requires TLS session reuse on data connections: clients that resume \
                 the session (curl, lftp, FileZilla, rclone) transfer ({versions}, several \
                 transfers per session); clients that do not (Python's stock ftplib, some \
                 libraries) are refused{}",
                if reply.is_empty() {
                    String::new()
                } else {
                    format!(" with {reply}")
                }
            ),
        )
        .evidence(evidence)
        .remedy(reuse_settings());
    }
    let texts: Vec<String> = failing
        .iter()
        .map(|(name, reply)| {
            if reply.is_empty() {
                (*name).to_owned()
            } else {
                format!("{name}: {reply}")
            }
        })
        .collect();
    let mentions_reuse = texts
        .iter()
        .chain(std::iter::once(&fresh.final_text()))
        .any(|text| text.to_ascii_lowercase().contains("reuse"));
    let who = if working.is_empty() {
        String::new()
    } else {
        format!(" (with {} they work)", working.join(" and "))
    };
    let summary = if mentions_reuse {
        format!(
            "the server requires TLS session reuse and refuses resumed sessions: PROT P \
             transfers of clients that resume fail{who} ({})",
            texts.join("; ")
        )
    } else {
        format!("PROT P transfers fail{who} ({})", texts.join("; "))
    };
    let finding = Finding::error(CHECK, summary).evidence(evidence);
    if mentions_reuse {
        finding.remedy(join(&[
            vec![
                "The server does not recognise the sessions clients resume (a server that \
                 recognises only TLS 1.3 resumption, or only the control connection's own \
                 session, refuses curl and lftp): update it, or stop requiring reuse:"
                    .to_owned(),
            ],
            session_reuse_settings(server),
        ]))
    } else {
        finding.remedy(
            "check the server's TLS log for the data connection; a server that needs its \
             certificate on data connections too, or a TLS-inspecting middlebox, breaks PROT P",
        )
    }
}

/// One TLS session: login, PBSZ/PROT P, PASV (recorded under TLS when `record_passive`), then
/// `lists` LISTs over EPSV (PASV when EPSV is refused), each with a protected data
/// connection; stops at the first that fails.
async fn protected_list(
    context: &mut Context,
    tls: ClientTls,
    record_passive: bool,
    lists: usize,
) -> ProtectedList {
    let mut evidence = Vec::new();
    let mut result = ProtectedList {
        evidence: Vec::new(),
        connected: false,
        handshake: false,
        probes: Vec::new(),
        wanted: lists,
    };
    let mut client = match context
        .open_session_with(Some(tls.clone()), &mut evidence)
        .await
    {
        Ok(client) => client,
        Err(error) => {
            evidence.push(error.to_string());
            result.evidence = evidence;
            return result;
        }
    };
    result.handshake = true;
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
    for round in 0..lists {
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
        let Some(target) = target else {
            break;
        };
        let attempt = connect_timed(target, context.timeout()).await;
        evidence.push(attempt.to_string());
        if let Some(failure) = describe_failure(&attempt) {
            evidence.push(format!("the data port {failure}"));
        }
        let Ok(stream) = attempt.result else {
            break;
        };
        if round == 0 {
            result.connected = true;
        }
        let command = context.list_command();
        let probe = client
            .probe_transfer(&command, stream, Some(&tls), context.timeout() * 2)
            .await;
        evidence.extend(transfer_evidence(&probe));
        if let Some(session) = &probe.data_tls {
            evidence.push(format!("data connection TLS: {session}"));
        }
        let succeeded = probe.succeeded();
        result.probes.push(probe);
        if !succeeded {
            break;
        }
    }
    result.evidence = evidence;
    result
}
