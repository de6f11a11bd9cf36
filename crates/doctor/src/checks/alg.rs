//! `alg-rewrite`: did a middlebox (a NAT router's FTP helper, an "ALG") rewrite PASV or
//! PORT?
//!
//! A helper reads the plain-text control connection and rewrites addresses in it; it cannot
//! read TLS. So the PASV address seen in plain text is compared with the one seen under TLS
//! (the `tls` check records it), and the address we sent in PORT with the one the server
//! echoes (ferroftp does: `Active mode to IP port N`). A rewrite that makes plain FTP work
//! breaks FTPS: the fix is to make the server right on its own.

use std::net::IpAddr;

use super::Context;
use crate::Finding;
use crate::address::{PassiveAddressClass, classify_passive_address};
use crate::remedies::{advertise_settings, join};

const CHECK: &str = "alg-rewrite";

pub(super) async fn run(context: &mut Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut evidence = Vec::new();
    let mut compared = Vec::new();

    let plain_passive = context
        .passive
        .as_ref()
        .filter(|observation| observation.plain);
    if let (Some(plain), Some(tls)) = (plain_passive, &context.tls_passive) {
        compared.push("PASV in plain text and under TLS");
        evidence.push(format!("plain text: PASV → {}", plain.reply_line));
        evidence.push(format!("under TLS:  PASV → {}", tls.reply_line));
        let plain_ip = IpAddr::V4(*plain.announced.ip());
        let tls_ip = IpAddr::V4(*tls.announced.ip());
        if plain_ip != tls_ip {
            let tls_class = classify_passive_address(tls_ip, context.control.ip());
            let summary = format!(
                "a middlebox rewrites the plain-text PASV reply: the server announces {tls_ip} \
                 (seen under TLS) but we received {plain_ip}; plain FTP depends on the \
                 rewrite, FTPS passive transfers {}",
                if tls_class == PassiveAddressClass::Same {
                    "still work"
                } else {
                    "hang"
                }
            );
            // The rewritten address is the router's public one: make the server announce it.
            let public = if plain_ip == context.control.ip().to_canonical() {
                plain_ip
            } else {
                context.control.ip()
            };
            let remedy = join(&[
                vec![format!(
                    "Make the server announce its public address {public} itself, so that no \
                     rewrite is needed (and FTPS works):"
                )],
                advertise_settings(context.server, public),
                vec![
                    "then the router's FTP helper can go (Linux: delete the `-j CT --helper \
                     ftp` rule; most routers: disable \"FTP ALG\")."
                        .to_owned(),
                ],
            ]);
            let finding = if tls_class == PassiveAddressClass::Same {
                Finding::warning(CHECK, summary)
            } else {
                Finding::error(CHECK, summary)
            };
            findings.push(finding.remedy(remedy));
        }
    }

    if let Some(echo) = &context.active_echo {
        compared.push("the PORT address we sent and the one the server echoes");
        evidence.push(format!("sent {} → {}", echo.sent, echo.reply_line));
        if echo.echoed != echo.sent {
            let summary = format!(
                "a middlebox on our side rewrote our PORT from {} to {}; active mode {} in \
                 plain FTP thanks to it, and fails under TLS, where it cannot rewrite",
                echo.sent,
                echo.echoed,
                if echo.transfer_worked {
                    "works"
                } else {
                    "still fails"
                }
            );
            let remedy = "use passive mode (it needs no rewrite); the rewrite comes from the FTP \
                          helper (ALG) of the NAT router on the client's side";
            let finding = if echo.transfer_worked {
                Finding::warning(CHECK, summary)
            } else {
                Finding::error(CHECK, summary)
            };
            findings.push(finding.remedy(remedy));
        }
    }

    if findings.is_empty() {
        let summary = if compared.is_empty() {
            "nothing to compare: the server offers no TLS (to see PASV unrewritten) and does \
             not echo PORT; no rewrite detected"
                .to_owned()
        } else {
            format!("no rewrite: compared {}", compared.join(", and "))
        };
        findings.push(Finding::ok(CHECK, summary));
    }
    for finding in &mut findings {
        finding.evidence = evidence.clone();
    }
    findings
}
