//! What a failed run's error kinds mean, in words: the tally says `greeting:421 ×37`, the
//! user needs to hear that the server's session limit was hit and what to change.

use std::collections::BTreeMap;

use crate::plan::TestId;

/// The flag that sets how many sessions `test` opens at once, if it is a sessions test.
fn sessions_flag(test: TestId) -> Option<&'static str> {
    match test {
        TestId::Connrate => Some("--conn-concurrency"),
        TestId::Burst => Some("--burst-sessions"),
        TestId::SmallPutSessions => Some("--small-put-sessions"),
        TestId::Idle => Some("--idle-sessions"),
        _ => None,
    }
}

/// Whether the kinds show sessions refused at the greeting with 421 (RFC 959 §4.2: service
/// not available, closing): how servers answer a connection over a session limit.
pub(crate) fn sessions_refused(kinds: &BTreeMap<String, u64>) -> bool {
    kinds.keys().any(|kind| kind == "greeting:421")
}

/// Explanations for the error kinds of one run of `test`, one sentence each; `refusal` is
/// the server's first refusing greeting (code and text), `upload_dir` where uploads go.
pub(crate) fn explain(
    test: TestId,
    kinds: &BTreeMap<String, u64>,
    refusal: Option<&str>,
    upload_dir: &str,
) -> Vec<String> {
    let mut hints = Vec::new();
    if sessions_refused(kinds) {
        let said = refusal.unwrap_or("421");
        let fewer = match sessions_flag(test) {
            Some(flag) => format!("or use fewer sessions ({flag} N)"),
            None => "or run this test alone (--only)".to_owned(),
        };
        hints.push(format!(
            "the server refused sessions: {said} — a limit on sessions at once, per client \
             address or in all: raise it (ferroftp: server.max_sessions_per_ip, default 50, \
             and server.max_sessions, default 1000, or serve --max-sessions-per-ip N; \
             vsftpd: max_per_ip, max_clients; ProFTPD: MaxClientsPerHost, MaxClients) {fewer}"
        ));
    }
    let write_refused = kinds.keys().any(|kind| {
        matches!(
            kind.as_str(),
            "STOR:550" | "MKD:550" | "STOR:553" | "MKD:553"
        )
    });
    if write_refused {
        hints.push(format!(
            "the server refused to write in {upload_dir} (550): the account needs write access \
             to the URL's directory (ftp://user@host/DIR/; default: the login directory)"
        ));
    }
    hints
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
        list.iter()
            .map(|(kind, count)| ((*kind).to_owned(), *count))
            .collect()
    }

    #[test]
    fn a_refused_greeting_names_the_limit_and_the_flag() {
        let hints = explain(
            TestId::Burst,
            &kinds(&[("greeting:421", 37), ("RETR:550", 1)]),
            Some("421 Too many sessions from your address"),
            "bench_upload",
        );
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(
            hints[0].starts_with(
                "the server refused sessions: 421 Too many sessions from your address — "
            ),
            "{}",
            hints[0]
        );
        assert!(hints[0].contains("server.max_sessions_per_ip"));
        assert!(hints[0].ends_with("or use fewer sessions (--burst-sessions N)"));
        let connrate = explain(TestId::Connrate, &kinds(&[("greeting:421", 1)]), None, "u");
        assert!(
            connrate[0].ends_with("(--conn-concurrency N)"),
            "{connrate:?}"
        );
        let uploads = explain(
            TestId::SmallPutSessions,
            &kinds(&[("greeting:421", 2)]),
            None,
            "u",
        );
        assert!(
            uploads[0].ends_with("(--small-put-sessions N)"),
            "{uploads:?}"
        );
    }

    #[test]
    fn a_refused_upload_names_the_directory() {
        let hints = explain(
            TestId::SmallPut,
            &kinds(&[("MKD:550", 1)]),
            None,
            "/pub/bench_upload",
        );
        assert_eq!(hints.len(), 1);
        assert!(hints[0].contains("/pub/bench_upload"), "{hints:?}");
        assert!(explain(TestId::SmallGet, &kinds(&[("RETR:550", 3)]), None, "u").is_empty());
    }
}
