//! Information commands: FEAT, STAT, SITE HELP, SITE QUOTA.

use super::*;

#[test]
fn site_help_lists_chmod_and_help_site_shows_the_syntax() {
    let mut h = Harness::new();
    h.login_alice();
    let help = replies(h.line("SITE HELP"));
    assert_eq!(
        help,
        [(
            214,
            "SITE commands recognized:\nCHMOD <octal mode> <path>\nHELP\nQUOTA\nEnd".to_owned()
        )]
    );
    assert_eq!(
        h.expect("HELP SITE", 214),
        "Syntax: SITE <HELP | CHMOD <octal mode> <path>>"
    );
}

#[test]
fn feat_lists_extensions() {
    let mut h = Harness::new();
    let actions = h.line("FEAT");
    let Action::Reply(reply) = &actions[0] else {
        panic!()
    };
    assert_eq!(reply.code.0, 211);
    for feature in [
        "SIZE",
        "MDTM",
        "REST STREAM",
        "EPSV",
        "EPRT",
        "UTF8",
        "MFMT",
        "TVFS",
    ] {
        assert!(
            reply.lines.iter().any(|l| l == feature),
            "{feature} missing in {reply:?}"
        );
    }
    assert!(reply.lines.iter().any(|l| l.starts_with("MLST type*;")));
}

#[test]
fn feat_leaves_out_mfmt_when_the_storage_cannot_set_times() {
    let mut h = Harness::with_config(SessionConfig {
        allow_set_modified: false,
        ..SessionConfig::default()
    });
    let actions = h.line("FEAT");
    let Action::Reply(reply) = &actions[0] else {
        panic!()
    };
    assert!(!reply.lines.iter().any(|line| line == "MFMT"), "{reply:?}");
    assert!(reply.lines.iter().any(|line| line == "MDTM"), "{reply:?}");
}

#[test]
fn stat_path_lists_over_the_control_connection() {
    let mut h = Harness::new();
    h.login_alice();
    assert_eq!(
        h.line("STAT /"),
        [Action::Storage(StorageRequest::StatListing(path(
            "/home/alice"
        )))]
    );
    let entries = vec![DirEntry {
        name: "a".into(),
        meta: file_meta(1),
    }];
    let actions = h.outcome(Outcome::Storage(Ok(StorageResult::Entries {
        entries: entries.clone(),
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(400 * 86_400),
    })));
    let Action::Reply(reply) = &actions[0] else {
        panic!()
    };
    assert_eq!(reply.code.0, 213);
    assert!(reply.lines[1].ends_with(" a"));
    // The driver's clock decides the format: a year-old file shows its year, a recent one
    // the time of day.
    assert!(reply.lines[1].ends_with("Jan  1  1970 a"), "{reply:?}");
    h.line("STAT /");
    let actions = h.outcome(Outcome::Storage(Ok(StorageResult::Entries {
        entries,
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(60),
    })));
    let Action::Reply(reply) = &actions[0] else {
        panic!()
    };
    assert!(reply.lines[1].ends_with("Jan  1 00:00 a"), "{reply:?}");
}

#[test]
fn site_quota_reports_usage_and_stat_the_limits() {
    let mut h = Harness::new();
    h.login(alice_with(crate::policy::UserPolicy {
        quota_bytes: Some(10_000_000),
        download_rate: Some(1_000_000),
        ..Default::default()
    }));
    let actions = h.line("SITE QUOTA");
    assert_eq!(actions, vec![Action::Storage(StorageRequest::QuotaUsage)]);
    let got = replies(
        h.outcome(Outcome::Storage(Ok(StorageResult::QuotaUsage(Some(
            QuotaUsage {
                bytes: 1234,
                files: 2,
            },
        ))))),
    );
    assert_eq!(
        got,
        vec![(
            200,
            "Quota:\nBytes: 1234 of 10000000\nFiles: 2 (no limit)\n\
             Limits: download 1MB/s, upload unlimited, quota 10MB, unlimited files \
             (usage: SITE QUOTA)\nEnd"
                .to_owned()
        )]
    );
    h.line("SITE QUOTA");
    let got = replies(h.outcome(Outcome::Storage(Ok(StorageResult::QuotaUsage(None)))));
    assert!(got[0].1.contains("being counted"), "{got:?}");

    let status = replies(h.line("STAT"));
    assert!(
        status[0]
            .1
            .contains("Limits: download 1MB/s, upload unlimited, quota 10MB, unlimited files"),
        "{status:?}"
    );
}
