//! The doctor's report: readable text for a terminal, or JSON
//! (`{"verdict": ..., "summary": ..., "findings": [{"check", "severity", "summary",
//! "evidence", "remedy"}]}`).

use std::fmt::Write as _;

use serde_json::json;

use super::checks::Outcome;
use super::{Finding, Severity, Target};

/// The worst severity and the one-line verdict.
pub(crate) fn verdict(findings: &[Finding]) -> (Severity, String) {
    let errors: Vec<&Finding> = findings
        .iter()
        .filter(|finding| finding.severity == Severity::Error)
        .collect();
    let warnings: Vec<&Finding> = findings
        .iter()
        .filter(|finding| finding.severity == Severity::Warning)
        .collect();
    if let Some(first) = errors.first() {
        let more = match errors.len() - 1 {
            0 => String::new(),
            1 => " (and 1 more error)".to_owned(),
            more => format!(" (and {more} more errors)"),
        };
        return (
            Severity::Error,
            format!("ERROR in {}: {}{more}", first.check, first.summary),
        );
    }
    if let Some(first) = warnings.first() {
        let count = warnings.len();
        return (
            Severity::Warning,
            format!(
                "OK with {count} warning{}: {} ({})",
                if count == 1 { "" } else { "s" },
                first.summary,
                first.check
            ),
        );
    }
    (
        Severity::Ok,
        "OK: login, passive and active transfers work".to_owned(),
    )
}

/// The report as JSON.
pub(crate) fn json(target: &Target, outcome: &Outcome) -> String {
    let (severity, summary) = verdict(&outcome.findings);
    let value = json!({
        "target": target.display(),
        "server": outcome.server.name(),
        "control": outcome.control.map(|address| address.to_string()),
        "verdict": severity.as_str(),
        "summary": summary,
        "elapsed_seconds": (outcome.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "findings": outcome.findings,
    });
    serde_json::to_string_pretty(&value).unwrap_or_else(|error| {
        format!("{{\"verdict\": \"error\", \"summary\": \"cannot encode the report: {error}\"}}")
    })
}

/// The report as text: one block per finding (evidence and fix for problems), then the
/// verdict.
pub(crate) fn text(target: &Target, outcome: &Outcome) -> String {
    let mut out = String::new();
    let server = match outcome.server.name() {
        "unknown" => "server not identified".to_owned(),
        name => name.to_owned(),
    };
    let _ = writeln!(
        out,
        "ferroftp doctor {} — {server}, {:.1} s",
        target.display(),
        outcome.elapsed.as_secs_f64()
    );
    let _ = writeln!(out);
    for finding in &outcome.findings {
        let mark = match finding.severity {
            Severity::Ok => "ok     ",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR  ",
        };
        let _ = writeln!(out, "{mark} {:<21} {}", finding.check, finding.summary);
        if finding.severity == Severity::Ok {
            continue;
        }
        if !finding.evidence.is_empty() {
            let _ = writeln!(out, "        seen:");
            for line in &finding.evidence {
                let _ = writeln!(out, "          {line}");
            }
        }
        if let Some(remedy) = &finding.remedy {
            let _ = writeln!(out, "        fix:");
            for line in remedy.lines() {
                let _ = writeln!(out, "          {line}");
            }
        }
    }
    let (_, line) = verdict(&outcome.findings);
    let _ = writeln!(out);
    let _ = writeln!(out, "verdict: {line}");
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::remedies::ServerKind;

    fn outcome(findings: Vec<Finding>) -> Outcome {
        Outcome {
            findings,
            server: ServerKind::Vsftpd,
            control: Some("203.0.113.1:2121".parse().unwrap()),
            elapsed: Duration::from_millis(1234),
        }
    }

    fn target() -> Target {
        Target::parse("ftp://alice:pw@203.0.113.1:2121/").unwrap()
    }

    #[test]
    fn json_shape() {
        let findings = vec![
            Finding::ok("login", "logged in"),
            Finding::error("passive-address", "PASV announces 10.0.0.2")
                .evidence(vec![
                    "PASV → 227 Entering Passive Mode (10,0,0,2,195,80)".to_owned(),
                ])
                .remedy("vsftpd: pasv_address=203.0.113.1"),
        ];
        let value: serde_json::Value =
            serde_json::from_str(&json(&target(), &outcome(findings))).unwrap();
        assert_eq!(value["verdict"], "error");
        assert_eq!(value["server"], "vsftpd");
        assert_eq!(value["target"], "ftp://alice@203.0.113.1:2121/");
        assert!(
            !value.to_string().contains("pw"),
            "the password leaked: {value}"
        );
        let findings = value["findings"].as_array().unwrap();
        assert_eq!(findings.len(), 2);
        assert_eq!(
            findings[0],
            json!({"check": "login", "severity": "ok", "summary": "logged in",
                   "evidence": [], "remedy": null})
        );
        assert_eq!(findings[1]["check"], "passive-address");
        assert_eq!(findings[1]["severity"], "error");
        assert_eq!(
            findings[1]["evidence"][0],
            "PASV → 227 Entering Passive Mode (10,0,0,2,195,80)"
        );
        assert_eq!(findings[1]["remedy"], "vsftpd: pasv_address=203.0.113.1");
    }

    #[test]
    fn verdict_names_the_first_error_then_warnings() {
        let (severity, line) = verdict(&[
            Finding::ok("login", "fine"),
            Finding::warning("epsv", "meh"),
            Finding::error("passive-reachability", "dropped"),
            Finding::error("epsv", "dropped too"),
        ]);
        assert_eq!(severity, Severity::Error);
        assert_eq!(
            line,
            "ERROR in passive-reachability: dropped (and 1 more error)"
        );
        let (severity, line) = verdict(&[Finding::warning("tls", "no TLS")]);
        assert_eq!(severity, Severity::Warning);
        assert_eq!(line, "OK with 1 warning: no TLS (tls)");
        assert_eq!(verdict(&[Finding::ok("login", "fine")]).0, Severity::Ok);
    }

    #[test]
    fn text_shows_evidence_and_fix_for_problems_only() {
        let findings = vec![
            Finding::ok("login", "logged in").evidence(vec!["greeting: 220".to_owned()]),
            Finding::error("active", "refused")
                .evidence(vec![
                    "PORT 192,168,1,10,4,1 → 500 Illegal PORT command.".to_owned(),
                ])
                .remedy("use passive mode\nor the router's FTP helper"),
        ];
        let text = text(&target(), &outcome(findings));
        assert!(!text.contains("greeting: 220"), "{text}");
        assert!(text.contains("ERROR   active"), "{text}");
        assert!(text.contains("          PORT 192,168,1,10,4,1 → 500 Illegal PORT command."));
        assert!(text.contains("          or the router's FTP helper"));
        assert!(
            text.ends_with("verdict: ERROR in active: refused\n"),
            "{text}"
        );
    }
}
