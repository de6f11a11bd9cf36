//! `tls`: AUTH TLS offered, the certificate, a PROT P data channel, and TLS session reuse
//! on data connections.
//!
//! The client crate has no TLS yet, so this check reports what FEAT says and that the rest
//! could not be checked.

use super::Context;
use crate::doctor::Finding;

const CHECK: &str = "tls";

pub(super) async fn run(context: &mut Context) -> Vec<Finding> {
    let offered: Vec<&String> = context
        .features
        .iter()
        .filter(|feature| feature.to_ascii_uppercase().starts_with("AUTH"))
        .collect();
    if offered.is_empty() {
        return vec![
            Finding::warning(
                CHECK,
                "the server offers no AUTH TLS: passwords and files travel in clear text",
            )
            .evidence(vec!["FEAT lists no AUTH line".to_owned()]),
        ];
    }
    vec![
        Finding::warning(
            CHECK,
            "the server offers TLS, but this build of the doctor has no TLS client to check \
             the certificate, PROT P and session reuse",
        )
        .evidence(
            offered
                .iter()
                .map(|feature| format!("FEAT: {feature}"))
                .collect(),
        ),
    ]
}
