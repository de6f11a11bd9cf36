//! Paths under the home and the file commands: CWD, MKD, RNFR/RNTO, SITE CHMOD, names a
//! listing could not show.

use super::*;

#[test]
fn paths_are_mapped_under_the_home() {
    let mut h = Harness::new();
    h.login_alice();
    let actions = h.line("CWD docs");
    assert_eq!(
        actions,
        [Action::Storage(StorageRequest::Metadata(path(
            "/home/alice/docs"
        )))]
    );
    assert_eq!(
        h.outcome(Outcome::Storage(Ok(StorageResult::Metadata(dir_meta()))))
            .len(),
        1
    );
    assert_eq!(h.expect("PWD", 257), "\"/docs\" is the current directory");
    let actions = h.line("DELE ../x");
    assert_eq!(
        actions,
        [Action::Storage(StorageRequest::RemoveFile(path(
            "/home/alice/x"
        )))]
    );
}

#[test]
fn climbing_above_the_home_replies_550_without_storage_access() {
    let mut h = Harness::new();
    h.login_alice();
    h.expect("RETR ../../etc/passwd", 550);
    h.expect("CWD /..", 550);
    h.expect("CDUP", 550);
    assert_eq!(h.expect("PWD", 257), "\"/\" is the current directory");
}

#[test]
fn cwd_to_a_file_replies_550() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("CWD a.txt");
    let replies = replies(h.outcome(Outcome::Storage(Ok(StorageResult::Metadata(file_meta(3))))));
    assert_eq!(replies[0].0, 550);
    assert_eq!(h.expect("PWD", 257), "\"/\" is the current directory");
}

#[test]
fn rnto_without_rnfr_replies_503() {
    let mut h = Harness::new();
    h.login_alice();
    h.expect("RNTO b", 503);
}

#[test]
fn rnfr_then_other_command_forgets_the_source() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("RNFR a");
    assert_eq!(
        replies(h.outcome(Outcome::Storage(Ok(StorageResult::Metadata(file_meta(1)))))),
        [(350, "Ready for RNTO".to_owned())]
    );
    h.expect("NOOP", 200);
    h.expect("RNTO b", 503);
}

#[test]
fn rnfr_says_when_the_storage_renames_by_copy() {
    let mut h = Harness::with_config(SessionConfig {
        atomic_rename: false,
        ..SessionConfig::default()
    });
    h.login_alice();
    h.line("RNFR a");
    assert_eq!(
        replies(h.outcome(Outcome::Storage(Ok(StorageResult::Metadata(file_meta(1)))))),
        [(
            350,
            "Ready for RNTO (this storage renames by copy and delete: not atomic)".to_owned()
        )]
    );
}

#[test]
fn rename_sequence_issues_one_rename() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("RNFR a");
    h.outcome(Outcome::Storage(Ok(StorageResult::Metadata(file_meta(1)))));
    let actions = h.line("RNTO sub/b");
    assert_eq!(
        actions,
        [Action::Storage(StorageRequest::Rename {
            from: path("/home/alice/a"),
            to: path("/home/alice/sub/b")
        })]
    );
    assert_eq!(
        replies(h.outcome(Outcome::Storage(Ok(StorageResult::Done))))[0].0,
        250
    );
}

#[test]
fn site_chmod_asks_the_storage_with_the_home_applied() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("CWD docs");
    h.outcome(Outcome::Storage(Ok(StorageResult::Metadata(dir_meta()))));
    assert_eq!(
        h.line("SITE CHMOD 0640 my file.txt"),
        [Action::Storage(StorageRequest::SetMode {
            path: path("/home/alice/docs/my file.txt"),
            mode: 0o640,
        })]
    );
    assert_eq!(
        replies(h.outcome(Outcome::Storage(Ok(StorageResult::Done)))),
        [(200, "SITE CHMOD command successful".to_owned())]
    );
    h.line("site chmod 755 /");
    assert_eq!(
        replies(h.outcome(Outcome::Storage(Err(StorageErrorKind::NotFound)))),
        [(550, "/: No such file or directory".to_owned())]
    );
}

#[test]
fn site_chmod_refuses_special_bits_bad_syntax_and_escapes() {
    let mut h = Harness::new();
    h.login_alice();
    for line in [
        "SITE CHMOD 4755 a",
        "SITE CHMOD 2755 d",
        "SITE CHMOD 1777 d",
    ] {
        assert_eq!(
            h.expect(line, 550),
            "Permission denied: setuid, setgid and sticky bits cannot be set"
        );
    }
    for line in [
        "SITE CHMOD",
        "SITE CHMOD 644",
        "SITE CHMOD 9 a",
        "SITE CHMOD +x a",
    ] {
        assert_eq!(
            h.expect(line, 501),
            "Syntax: SITE CHMOD <octal mode> <path>"
        );
    }
    h.expect("SITE CHMOD 644 ../../etc/passwd", 550);
    h.expect("SITE UMASK 022", 502);
}

#[test]
fn site_chmod_without_storage_modes_is_504() {
    let mut h = Harness::with_config(SessionConfig {
        allow_chmod: false,
        ..SessionConfig::default()
    });
    h.login_alice();
    assert_eq!(
        h.expect("SITE CHMOD 644 a", 504),
        "SITE CHMOD not supported by this storage"
    );
    let help = replies(h.line("SITE HELP"));
    assert_eq!(help[0].0, 214);
    assert!(!help[0].1.contains("CHMOD"), "{help:?}");
}

#[test]
fn mkd_quotes_the_created_path() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("MKD a\"b");
    let replies = replies(h.outcome(Outcome::Storage(Ok(StorageResult::Done))));
    assert_eq!(replies, [(257, "\"/a\"\"b\" created".to_owned())]);
}

#[test]
fn names_with_line_breaks_cannot_be_created() {
    let mut h = Harness::new();
    h.login_alice();
    for line in [
        "MKD a\rb",
        "MKD a\rb/",
        "STOR x\r-rw-r--r-- 1 ftp ftp 1 Jan  1  1970 fake",
        "APPE x\rb",
        "STOR d/x\rb",
    ] {
        assert_eq!(h.expect(line, 553), "File name not allowed (line break)");
    }
    h.expect("REST 5", 350);
    h.expect("STOR x\rb", 553);
    h.line("RNFR a");
    h.outcome(Outcome::Storage(Ok(StorageResult::Metadata(file_meta(1)))));
    h.expect("RNTO a\rb", 553);
    // The name without the line break is fine.
    assert!(matches!(
        &h.line("MKD ab")[..],
        [Action::Storage(StorageRequest::MakeDir(_))]
    ));
}
