//! Session scenarios: lines and outcomes in, actions out. No sockets, virtual time.

use std::time::{Duration, SystemTime};

use super::*;
use crate::address::Cidr;
use crate::error::StorageErrorKind;
use crate::metadata::{DirEntry, FileKind, FileMeta};

const PEER: &str = "192.0.2.10:40000";

struct Harness {
    session: Session,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(SessionConfig::default())
    }

    fn with_config(config: SessionConfig) -> Self {
        Self::with_transport(config, ControlTransport::Plain)
    }

    fn with_transport(config: SessionConfig, transport: ControlTransport) -> Self {
        let now = Instant::now();
        let mut harness = Self {
            session: Session::with_transport(
                Arc::new(config),
                PEER.parse().unwrap(),
                transport,
                now,
            ),
            now,
        };
        assert_eq!(harness.replies(), vec![(220, "ferroftp ready".to_owned())]);
        harness
    }

    fn line(&mut self, line: &str) -> Vec<Action> {
        self.session
            .handle_line(Ok(line.as_bytes().to_vec()), self.now);
        self.actions()
    }

    fn outcome(&mut self, outcome: Outcome) -> Vec<Action> {
        self.session.handle_outcome(outcome, self.now);
        self.actions()
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.session.poll_action()).collect()
    }

    fn replies(&mut self) -> Vec<(u16, String)> {
        replies(self.actions())
    }

    /// Sends a line and expects exactly one reply.
    fn expect(&mut self, line: &str, code: u16) -> String {
        let actions = self.line(line);
        let replies = replies(actions.clone());
        assert_eq!(replies.len(), 1, "{line:?} gave {actions:?}");
        assert_eq!(replies[0].0, code, "{line:?} gave {replies:?}");
        replies[0].1.clone()
    }

    fn login(&mut self, user: User) {
        self.expect("USER alice", 331);
        let actions = self.line("PASS secret");
        assert!(matches!(&actions[..], [Action::Authenticate(r)] if r.username == "alice"));
        let replies = replies(self.outcome(Outcome::Authenticated(Ok(user))));
        assert_eq!(replies[0].0, 230);
    }

    fn login_alice(&mut self) {
        self.login(alice());
    }
}

fn alice() -> User {
    User {
        name: "alice".into(),
        home: VirtualPath::root().resolve("/home/alice").unwrap(),
        read_only: false,
        policy: Default::default(),
    }
}

fn replies(actions: Vec<Action>) -> Vec<(u16, String)> {
    actions
        .into_iter()
        .filter_map(|action| match action {
            Action::Reply(reply) => Some((reply.code.0, reply.text())),
            _ => None,
        })
        .collect()
}

fn path(text: &str) -> VirtualPath {
    VirtualPath::root().resolve(text).unwrap()
}

fn file_meta(size: u64) -> FileMeta {
    FileMeta {
        kind: FileKind::File,
        size,
        modified: Some(SystemTime::UNIX_EPOCH),
        mode: 0o644,
    }
}

fn dir_meta() -> FileMeta {
    FileMeta {
        kind: FileKind::Directory,
        size: 0,
        modified: None,
        mode: 0o755,
    }
}

#[test]
fn commands_before_login_reply_530() {
    let mut h = Harness::new();
    for line in [
        "RETR a",
        "LIST",
        "PWD",
        "CWD /",
        "PASV",
        "PORT 1,2,3,4,5,6",
        "MKD x",
    ] {
        h.expect(line, 530);
    }
    h.expect("NOOP", 200);
    h.expect("SYST", 215);
}

#[test]
fn pass_without_user_replies_503() {
    let mut h = Harness::new();
    h.expect("PASS x", 503);
}

#[test]
fn failed_logins_are_counted_then_closed() {
    let mut h = Harness::new();
    for attempt in 1..=3 {
        h.expect("USER bob", 331);
        h.line("PASS wrong");
        let actions = h.outcome(Outcome::Authenticated(Err(LoginFailure::Rejected)));
        let codes: Vec<u16> = replies(actions.clone()).into_iter().map(|r| r.0).collect();
        if attempt < 3 {
            assert_eq!(codes, [530]);
        } else {
            assert_eq!(codes, [530, 421]);
            assert_eq!(actions.last(), Some(&Action::Close));
        }
    }
    assert!(h.session.is_closed());
}

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
fn read_only_users_cannot_write() {
    let mut h = Harness::new();
    h.login(User {
        read_only: true,
        ..alice()
    });
    for line in [
        "STOR a",
        "APPE a",
        "STOU",
        "DELE a",
        "MKD d",
        "RMD d",
        "RNFR a",
        "MFMT 20200101000000 a",
        "SITE CHMOD 644 a",
    ] {
        h.expect(line, 550);
    }
}

#[test]
fn a_read_only_upload_refused_uses_up_the_rest_before_it() {
    let mut h = Harness::new();
    h.login(User {
        read_only: true,
        ..alice()
    });
    h.expect("REST 100", 350);
    h.expect("STOR a", 550);
    h.line("EPSV");
    h.outcome(Outcome::PassiveOpened(Ok("192.0.2.1:50001"
        .parse()
        .unwrap())));
    let request = match &h.line("RETR f")[..] {
        [Action::Transfer(request)] => request.clone(),
        other => panic!("expected a transfer, got {other:?}"),
    };
    assert!(matches!(
        request.kind,
        TransferKind::Retrieve { offset: 0, .. }
    ));
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
fn port_to_another_host_is_refused_before_connecting() {
    let mut h = Harness::new();
    h.login_alice();
    // 192.0.2.11 is not the client (192.0.2.10): RFC 2577 bounce.
    h.expect("PORT 192,0,2,11,200,10", 504);
    h.expect("EPRT |1|192.0.2.11|51210|", 504);
    h.expect("PORT 192,0,2,10,0,80", 504);
    h.expect("PORT 1,2,3", 501);
    h.expect("EPRT |3|x|1|", 522);
    // Nothing was set up: a transfer now has no endpoint.
    h.expect("RETR a", 425);
    assert_eq!(
        h.expect("PORT 192,0,2,10,200,10", 200),
        "Active mode to 192.0.2.10 port 51210"
    );
    // The three bounce attempts are counted for the driver's metrics; malformed arguments
    // and the accepted PORT are not.
    assert_eq!(h.session.refused_active_targets(), 3);
}

#[test]
fn active_mode_can_be_disabled() {
    let mut h = Harness::with_config(SessionConfig {
        allow_active: false,
        ..SessionConfig::default()
    });
    h.login_alice();
    h.expect("PORT 192,0,2,10,200,10", 502);
}

#[test]
fn pasv_reply_announces_the_driver_address_and_transfer_uses_it() {
    let mut h = Harness::new();
    h.login_alice();
    assert_eq!(h.line("PASV"), [Action::OpenPassive]);
    let replies = replies(h.outcome(Outcome::PassiveOpened(Ok(
        "203.0.113.7:50001".parse().unwrap(),
    ))));
    assert_eq!(
        replies,
        [(
            227,
            "Entering Passive Mode (203,0,113,7,195,81).".to_owned()
        )]
    );
    let actions = h.line("RETR f");
    assert_eq!(
        actions,
        [Action::Transfer(TransferRequest {
            kind: TransferKind::Retrieve {
                path: path("/home/alice/f"),
                offset: 0
            },
            endpoint: DataEndpoint::Passive,
            ascii: false,
            protection: DataProtection::Clear,
            allocated_size: None,
        })]
    );
}

#[test]
fn passive_exhaustion_replies_425() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("EPSV");
    let replies = replies(h.outcome(Outcome::PassiveOpened(Err(PassiveFailure::Exhausted))));
    assert_eq!(replies[0].0, 425);
}

#[test]
fn epsv_all_refuses_other_setup_commands() {
    let mut h = Harness::new();
    h.login_alice();
    h.expect("EPSV ALL", 200);
    h.expect("PASV", 503);
    h.expect("PORT 192,0,2,10,200,10", 503);
    assert_eq!(h.line("EPSV"), [Action::OpenPassive]);
    let replies = replies(h.outcome(Outcome::PassiveOpened(Ok("[::1]:50001".parse().unwrap()))));
    assert_eq!(
        replies,
        [(229, "Entering Extended Passive Mode (|||50001|)".to_owned())]
    );
}

#[test]
fn epsv_with_a_network_protocol_not_supported_gets_522_naming_the_supported_one() {
    let mut h = Harness::new();
    h.login_alice();
    // RFC 2428 §3: 522 with the supported protocols in parentheses; the control connection
    // is IPv4, so is the data connection.
    for argument in ["7", "2", "65536", "0"] {
        assert_eq!(
            h.expect(&format!("EPSV {argument}"), 522),
            "Network protocol not supported, use (1)",
            "EPSV {argument}"
        );
    }
    h.expect("EPSV x", 501);
    h.expect("EPSV -1", 501);
    assert_eq!(h.line("EPSV 1"), [Action::OpenPassive]);
}

#[test]
fn pasv_cannot_announce_ipv6() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("PASV");
    let actions = h.outcome(Outcome::PassiveOpened(Ok("[2001:db8::1]:50001"
        .parse()
        .unwrap())));
    assert!(actions.contains(&Action::ClosePassive));
    assert_eq!(replies(actions)[0].0, 425);
}

#[test]
fn rest_then_retr_and_stor_use_the_offset_once() {
    let mut h = Harness::new();
    h.login_alice();
    h.expect("REST 100", 350);
    h.expect("REST x", 501);
    h.line("EPSV");
    h.outcome(Outcome::PassiveOpened(Ok("127.0.0.1:50000"
        .parse()
        .unwrap())));
    let actions = h.line("STOR f");
    let Action::Transfer(request) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        request.kind,
        TransferKind::Store {
            target: UploadTarget::Path(path("/home/alice/f")),
            mode: WriteMode::ResumeAt(100)
        }
    );
    h.outcome(Outcome::TransferStarted {
        size: None,
        stored_as: None,
    });
    h.outcome(Outcome::TransferFinished(Ok(TransferSummary { bytes: 5 })));
    h.line("EPSV");
    h.outcome(Outcome::PassiveOpened(Ok("127.0.0.1:50000"
        .parse()
        .unwrap())));
    let actions = h.line("STOR f");
    let Action::Transfer(request) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert!(matches!(
        request.kind,
        TransferKind::Store {
            mode: WriteMode::Create,
            ..
        }
    ));
}

#[test]
fn transfer_replies_150_then_226_and_queues_pipelined_lines() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("PASV");
    h.outcome(Outcome::PassiveOpened(Ok("127.0.0.1:50000"
        .parse()
        .unwrap())));
    h.line("RETR f");
    // Pipelined while the transfer is being set up: answered only after it ends.
    assert!(h.line("PWD").is_empty());
    let replies = replies(h.outcome(Outcome::TransferStarted {
        size: Some(5),
        stored_as: None,
    }));
    assert_eq!(
        replies,
        [(
            150,
            "Opening BINARY mode data connection for /f (5 bytes)".to_owned()
        )]
    );
    let codes: Vec<u16> = super::tests::replies(
        h.outcome(Outcome::TransferFinished(Ok(TransferSummary { bytes: 5 }))),
    )
    .into_iter()
    .map(|r| r.0)
    .collect();
    assert_eq!(codes, [226, 257]);
}

#[test]
fn abor_during_transfer_gives_426_then_226() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("PASV");
    h.outcome(Outcome::PassiveOpened(Ok("127.0.0.1:50000"
        .parse()
        .unwrap())));
    h.line("RETR big");
    h.outcome(Outcome::TransferStarted {
        size: Some(1 << 30),
        stored_as: None,
    });
    assert_eq!(h.line("ABOR"), [Action::AbortTransfer]);
    assert_eq!(h.line("ABOR"), []);
    let codes: Vec<u16> =
        replies(h.outcome(Outcome::TransferFinished(Err(TransferFailure::Aborted))))
            .into_iter()
            .map(|r| r.0)
            .collect();
    assert_eq!(codes, [426, 226]);
    h.expect("NOOP", 200);
}

#[test]
fn abor_without_transfer_closes_passive() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("PASV");
    h.outcome(Outcome::PassiveOpened(Ok("127.0.0.1:50000"
        .parse()
        .unwrap())));
    let actions = h.line("ABOR");
    assert_eq!(actions[0], Action::ClosePassive);
    assert_eq!(replies(actions)[0].0, 226);
}

#[test]
fn storage_failure_before_the_transfer_is_550() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("PASV");
    h.outcome(Outcome::PassiveOpened(Ok("127.0.0.1:50000"
        .parse()
        .unwrap())));
    h.line("RETR missing");
    let replies = replies(
        h.outcome(Outcome::TransferFinished(Err(TransferFailure::Storage(
            StorageErrorKind::NotFound,
        )))),
    );
    assert_eq!(replies[0].0, 550);
}

#[test]
fn bad_input_gets_an_error_and_the_session_continues() {
    let mut h = Harness::new();
    h.session.handle_line(Err(LineError::TooLong), h.now);
    assert_eq!(h.replies()[0].0, 500);
    h.session.handle_line(Ok(b"USER a\0b".to_vec()), h.now);
    assert_eq!(h.replies()[0].0, 501);
    h.session.handle_line(Ok(b"USER \xff\xfe".to_vec()), h.now);
    assert_eq!(h.replies()[0].0, 501);
    h.expect("XYZZY", 500);
    h.expect("NOOP", 200);
}

#[test]
fn idle_session_is_closed_with_421() {
    let mut h = Harness::with_config(SessionConfig {
        idle_timeout: Duration::from_secs(10),
        ..SessionConfig::default()
    });
    let deadline = h.session.poll_timeout().unwrap();
    h.session.handle_timeout(deadline - Duration::from_secs(1));
    assert!(h.actions().is_empty());
    h.session.handle_timeout(deadline);
    let actions = h.actions();
    assert_eq!(replies(actions.clone())[0].0, 421);
    assert_eq!(actions.last(), Some(&Action::Close));
}

#[test]
fn a_session_not_logged_in_in_time_is_closed_whatever_it_sends() {
    let mut h = Harness::with_config(SessionConfig {
        idle_timeout: Duration::from_secs(300),
        login_timeout: Duration::from_secs(30),
        ..SessionConfig::default()
    });
    let login_deadline = h.now + Duration::from_secs(30);
    assert_eq!(h.session.poll_timeout(), Some(login_deadline));
    // NOOP, a wrong password and USER move the idle deadline, not the login deadline.
    h.now += Duration::from_secs(20);
    h.expect("NOOP", 200);
    h.expect("USER alice", 331);
    h.line("PASS wrong");
    assert_eq!(
        replies(h.outcome(Outcome::Authenticated(Err(LoginFailure::Rejected))))[0].0,
        530
    );
    assert_eq!(h.session.poll_timeout(), Some(login_deadline));
    h.session
        .handle_timeout(login_deadline - Duration::from_millis(1));
    assert!(h.actions().is_empty());
    h.session.handle_timeout(login_deadline);
    let actions = h.actions();
    assert_eq!(
        replies(actions.clone()),
        [(421, "Login timeout, closing connection".to_owned())]
    );
    assert_eq!(actions.last(), Some(&Action::Close));
}

#[test]
fn a_logged_in_session_has_no_login_deadline_until_rein() {
    let mut h = Harness::with_config(SessionConfig {
        idle_timeout: Duration::from_secs(300),
        login_timeout: Duration::from_secs(30),
        ..SessionConfig::default()
    });
    h.login_alice();
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(300))
    );
    h.session.handle_timeout(h.now + Duration::from_secs(31));
    assert!(h.actions().is_empty());
    h.now += Duration::from_secs(100);
    h.expect("REIN", 220);
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(30))
    );
}

#[test]
fn an_account_made_read_only_cannot_write_from_its_next_command() {
    let mut h = Harness::new();
    h.login_alice();
    h.session.handle_account_read_only(true);
    h.expect("MKD d", 550);
    h.expect("DELE f", 550);
    assert!(matches!(&h.line("SIZE f")[..], [Action::Storage(_)]));
}

#[test]
fn an_account_made_read_only_between_rnfr_and_rnto_does_not_rename() {
    let mut h = Harness::new();
    h.login_alice();
    assert!(matches!(&h.line("RNFR a")[..], [Action::Storage(_)]));
    h.outcome(Outcome::Storage(Ok(StorageResult::Metadata(file_meta(1)))));
    h.session.handle_account_read_only(true);
    h.expect("RNTO b", 550);
    h.session.handle_account_read_only(false);
    h.expect("RNTO b", 503);
}

#[test]
fn a_revoked_account_gets_421_at_once_or_after_its_transfer() {
    let mut h = Harness::new();
    // Before login there is no account to revoke.
    h.session.handle_account_revoked();
    assert!(h.actions().is_empty());
    h.login_alice();
    h.session.handle_account_revoked();
    let actions = h.actions();
    assert_eq!(
        replies(actions.clone()),
        [(
            421,
            "Account removed or its password changed, closing control connection".to_owned()
        )]
    );
    assert_eq!(actions.last(), Some(&Action::Close));

    let mut h = Harness::new();
    h.login_alice();
    h.line("EPSV");
    h.outcome(Outcome::PassiveOpened(Ok("192.0.2.1:50000"
        .parse()
        .unwrap())));
    assert!(matches!(&h.line("RETR f")[..], [Action::Transfer(_)]));
    h.session.handle_account_revoked();
    assert!(h.actions().is_empty());
    h.line("NOOP");
    h.outcome(Outcome::TransferStarted {
        size: Some(1),
        stored_as: None,
    });
    let replies = replies(h.outcome(Outcome::TransferFinished(Ok(TransferSummary { bytes: 1 }))));
    assert_eq!(
        replies.iter().map(|reply| reply.0).collect::<Vec<_>>(),
        [226, 421]
    );
}

#[test]
fn no_idle_timeout_while_an_operation_is_in_flight() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("SIZE f");
    assert_eq!(h.session.poll_timeout(), None);
    assert_eq!(
        replies(h.outcome(Outcome::Storage(Ok(StorageResult::Size(12))))),
        [(213, "12".to_owned())]
    );
    assert!(h.session.poll_timeout().is_some());
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
fn type_mode_stru_table() {
    let mut h = Harness::new();
    h.login_alice();
    for (line, code) in [
        ("TYPE A", 200),
        ("TYPE I", 200),
        ("TYPE L 8", 200),
        ("TYPE A N", 200),
        ("TYPE E", 504),
        ("TYPE X", 501),
        ("MODE S", 200),
        ("MODE B", 504),
        ("STRU F", 200),
        ("STRU R", 504),
        ("ALLO 100", 202),
        ("ACCT x", 502),
    ] {
        h.expect(line, code);
    }
}

#[test]
fn list_options_are_ignored_and_mlst_formats_facts() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("PASV");
    h.outcome(Outcome::PassiveOpened(Ok("127.0.0.1:50000"
        .parse()
        .unwrap())));
    let actions = h.line("LIST -la sub");
    let Action::Transfer(request) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert!(
        matches!(&request.kind, TransferKind::List { path: p, .. } if *p == path("/home/alice/sub"))
    );
    h.outcome(Outcome::TransferFinished(Ok(TransferSummary { bytes: 0 })));
    h.line("MLST f");
    let actions = h.outcome(Outcome::Storage(Ok(StorageResult::Metadata(file_meta(3)))));
    let Action::Reply(reply) = &actions[0] else {
        panic!()
    };
    assert_eq!(reply.code.0, 250);
    assert_eq!(
        reply.lines[1],
        "type=file;size=3;modify=19700101000000;perm=radfw;UNIX.mode=0644; /f"
    );
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
fn stou_names_the_file_relative_to_the_home() {
    let mut h = Harness::new();
    h.login_alice();
    h.line("PASV");
    h.outcome(Outcome::PassiveOpened(Ok("127.0.0.1:50000"
        .parse()
        .unwrap())));
    h.line("STOU");
    let replies = replies(h.outcome(Outcome::TransferStarted {
        size: None,
        stored_as: Some(path("/home/alice/stou.1")),
    }));
    assert_eq!(replies, [(150, "FILE: stou.1".to_owned())]);
}

#[test]
fn quit_closes_after_221() {
    let mut h = Harness::new();
    let actions = h.line("QUIT");
    assert_eq!(replies(actions.clone()), [(221, "Goodbye".to_owned())]);
    assert_eq!(actions.last(), Some(&Action::Close));
    assert!(h.line("NOOP").is_empty());
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
fn nat_fallback_replaces_a_private_port_address_from_a_public_client() {
    let config = SessionConfig {
        active_nat_fallback: true,
        ..SessionConfig::default()
    };
    let mut h = Harness::with_config(config);
    h.login_alice();
    // The client 192.0.2.10 (public) says it is 10.0.0.5 (private): redirected.
    assert_eq!(
        h.expect("PORT 10,0,0,5,200,10", 200),
        "Active mode to 192.0.2.10 port 51210 (your private address replaced by the one you connect from)"
    );
    // A public third party is still refused.
    h.expect("PORT 198,51,100,1,200,10", 504);
}

#[test]
fn without_nat_fallback_a_private_port_address_is_refused() {
    let mut h = Harness::new();
    h.login_alice();
    h.expect("PORT 10,0,0,5,200,10", 504);
}

// ---- FTPS (RFC 4217) ----

fn tls_config(policy: TlsPolicy) -> SessionConfig {
    SessionConfig {
        tls: policy,
        ..SessionConfig::default()
    }
}

fn explicit(policy: TlsPolicy) -> Harness {
    Harness::with_transport(tls_config(policy), ControlTransport::Explicit)
}

/// AUTH TLS accepted and the handshake reported done.
fn upgrade(h: &mut Harness, client_name: Option<&str>) {
    let actions = h.line("AUTH TLS");
    assert_eq!(replies(actions.clone())[0].0, 234, "{actions:?}");
    assert_eq!(actions.last(), Some(&Action::UpgradeToTls));
    let after = h.outcome(Outcome::TlsEstablished(Ok(TlsInfo {
        client_name: client_name.map(str::to_owned),
    })));
    assert!(after.is_empty(), "{after:?}");
    assert!(h.session.control_protected());
}

fn transfer_request(actions: &[Action]) -> TransferRequest {
    match actions {
        [Action::Transfer(request)] => request.clone(),
        other => panic!("expected one transfer, got {other:?}"),
    }
}

fn open_passive(h: &mut Harness) {
    assert_eq!(h.line("EPSV"), [Action::OpenPassive]);
    h.outcome(Outcome::PassiveOpened(Ok("192.0.2.1:50001"
        .parse()
        .unwrap())));
}

#[test]
fn auth_on_a_plain_listener_is_not_implemented() {
    let mut h = Harness::new();
    for line in ["AUTH TLS", "PBSZ 0", "PROT P", "CCC"] {
        h.expect(line, 502);
    }
    let feat = h.line("FEAT");
    let Action::Reply(reply) = &feat[0] else {
        panic!()
    };
    assert!(
        !reply.lines.iter().any(|l| l.starts_with("AUTH")),
        "{reply:?}"
    );
}

#[test]
fn feat_announces_auth_tls_pbsz_prot_on_tls_listeners() {
    let mut h = explicit(TlsPolicy::default());
    let feat = h.line("FEAT");
    let Action::Reply(reply) = &feat[0] else {
        panic!()
    };
    for feature in ["AUTH TLS", "PBSZ", "PROT"] {
        assert!(
            reply.lines.iter().any(|l| l == feature),
            "{feature}: {reply:?}"
        );
    }
    assert!(!reply.lines.iter().any(|l| l == "CCC"));
}

#[test]
fn auth_tls_and_ssl_upgrade_other_mechanisms_are_refused() {
    let mut h = explicit(TlsPolicy::default());
    h.expect("AUTH KERBEROS_V4", 504);
    h.expect("PBSZ 0", 503);
    h.expect("PROT P", 503);
    h.expect("CCC", 533);
    upgrade(&mut h, None);
    h.expect("AUTH TLS", 503);

    let mut h = explicit(TlsPolicy::default());
    let actions = h.line("auth ssl");
    assert_eq!(replies(actions.clone())[0].0, 234);
    assert_eq!(actions.last(), Some(&Action::UpgradeToTls));
}

#[test]
fn lines_pipelined_after_auth_tls_are_discarded() {
    let mut h = explicit(TlsPolicy::default());
    h.expect("USER mallory", 331);
    // One read carrying AUTH TLS and a command injected behind it (CVE-2011-0411).
    let actions = h.line("AUTH TLS");
    assert_eq!(actions.last(), Some(&Action::UpgradeToTls));
    assert!(h.line("USER alice").is_empty());
    assert!(h.line("PASS secret").is_empty());
    assert!(h.line("DELE x").is_empty());
    assert_eq!(h.session.discarded_lines(), 3);
    let after = h.outcome(Outcome::TlsEstablished(Ok(TlsInfo::default())));
    assert!(after.is_empty(), "nothing pipelined ran: {after:?}");
    // The plain-text USER was forgotten too.
    h.expect("PASS secret", 503);
}

#[test]
fn auth_tls_from_the_queue_drops_what_was_queued_behind_it() {
    let mut h = explicit(TlsPolicy::default());
    h.expect("USER alice", 331);
    assert!(matches!(
        &h.line("PASS secret")[..],
        [Action::Authenticate(_)]
    ));
    // Pipelined while the login is checked: queued.
    assert!(h.line("AUTH TLS").is_empty());
    assert!(h.line("DELE x").is_empty());
    let actions = h.outcome(Outcome::Authenticated(Err(LoginFailure::Rejected)));
    let codes: Vec<u16> = replies(actions.clone()).iter().map(|r| r.0).collect();
    assert_eq!(codes, [530, 234]);
    assert_eq!(actions.last(), Some(&Action::UpgradeToTls));
    assert!(
        h.outcome(Outcome::TlsEstablished(Ok(TlsInfo::default())))
            .is_empty()
    );
}

#[test]
fn a_failed_handshake_closes_without_a_reply() {
    let mut h = explicit(TlsPolicy::default());
    h.line("AUTH TLS");
    let actions = h.outcome(Outcome::TlsEstablished(Err("bad record".into())));
    assert_eq!(actions, [Action::Close]);
    assert!(h.session.is_closed());
}

#[test]
fn auth_after_login_is_refused() {
    let mut h = explicit(TlsPolicy::default());
    h.login_alice();
    h.expect("AUTH TLS", 503);
}

#[test]
fn pbsz_then_prot_sequence() {
    let mut h = explicit(TlsPolicy::default());
    upgrade(&mut h, None);
    h.expect("PROT P", 503);
    h.expect("PBSZ x", 501);
    assert_eq!(h.expect("PBSZ 1024", 200), "PBSZ=0");
    h.expect("PROT S", 536);
    h.expect("PROT E", 536);
    h.expect("PROT Q", 504);
    h.expect("PROT P", 200);
    h.login_alice();
    open_passive(&mut h);
    let request = transfer_request(&h.line("RETR f"));
    assert_eq!(
        request.protection,
        DataProtection::Private {
            require_resumption: true
        }
    );
    h.outcome(Outcome::TransferFinished(Ok(TransferSummary { bytes: 0 })));
    h.expect("PROT C", 200);
    open_passive(&mut h);
    let request = transfer_request(&h.line("RETR f"));
    assert_eq!(request.protection, DataProtection::Clear);
}

#[test]
fn user_before_tls_is_refused_when_tls_is_required_for_accounts() {
    let mut h = explicit(TlsPolicy {
        require_control: TlsRequirement::Accounts,
        ..TlsPolicy::default()
    });
    let text = h.expect("USER alice", 530);
    assert_eq!(
        text,
        "TLS required for this account: send AUTH TLS first (tls.require = accounts)"
    );
    // A client that pipelined PASS gets the same refusal; no password is checked.
    assert_eq!(h.expect("PASS secret", 530), text);
    // Anonymous logins are not accounts.
    h.expect("USER anonymous", 331);
    upgrade(&mut h, None);
    h.login_alice();
}

#[test]
fn user_before_tls_is_refused_for_everyone_with_require_all() {
    let mut h = explicit(TlsPolicy {
        require_control: TlsRequirement::All,
        ..TlsPolicy::default()
    });
    assert!(h.expect("USER ftp", 530).contains("every login"));
    h.expect("PASS x", 530);
}

#[test]
fn implicit_sessions_are_protected_from_the_start() {
    let mut h = Harness::with_transport(
        tls_config(TlsPolicy {
            require_control: TlsRequirement::All,
            ..TlsPolicy::default()
        }),
        ControlTransport::Implicit(TlsInfo::default()),
    );
    assert!(h.session.control_protected());
    h.expect("AUTH TLS", 503);
    h.login_alice();
    open_passive(&mut h);
    let request = transfer_request(&h.line("STOR f"));
    assert!(matches!(request.protection, DataProtection::Private { .. }));
}

#[test]
fn require_data_refuses_prot_c_and_clear_transfers() {
    let mut h = explicit(TlsPolicy {
        require_data: TlsRequirement::Accounts,
        ..TlsPolicy::default()
    });
    upgrade(&mut h, None);
    h.login_alice();
    h.expect("PBSZ 0", 200);
    assert_eq!(
        h.expect("PROT C", 534),
        "PROT C refused: data connections must be protected (tls.require_data = accounts)"
    );
    open_passive(&mut h);
    assert_eq!(
        h.expect("LIST", 521),
        "Data connections must be protected: send PBSZ 0 and PROT P (tls.require_data = accounts)"
    );
    // The passive listener is kept for the retry.
    h.expect("PROT P", 200);
    assert!(matches!(
        transfer_request(&h.line("LIST")).protection,
        DataProtection::Private { .. }
    ));
}

#[test]
fn reuse_exemptions_by_user_and_client_network() {
    let policy = TlsPolicy {
        reuse_exempt_users: vec!["alice".into()],
        ..TlsPolicy::default()
    };
    let mut h = explicit(policy);
    upgrade(&mut h, None);
    h.login_alice();
    h.expect("PBSZ 0", 200);
    h.expect("PROT P", 200);
    open_passive(&mut h);
    assert_eq!(
        transfer_request(&h.line("RETR f")).protection,
        DataProtection::Private {
            require_resumption: false
        }
    );

    let policy = TlsPolicy {
        reuse_exempt_clients: vec![Cidr::new("192.0.2.0".parse().unwrap(), 24).unwrap()],
        ..TlsPolicy::default()
    };
    let mut h = Harness::with_transport(
        tls_config(policy),
        ControlTransport::Implicit(TlsInfo::default()),
    );
    h.login_alice();
    open_passive(&mut h);
    assert_eq!(
        transfer_request(&h.line("RETR f")).protection,
        DataProtection::Private {
            require_resumption: false
        }
    );
}

#[test]
fn data_tls_failures_have_their_replies() {
    let mut h = Harness::with_transport(
        tls_config(TlsPolicy::default()),
        ControlTransport::Implicit(TlsInfo::default()),
    );
    h.login_alice();
    open_passive(&mut h);
    transfer_request(&h.line("RETR f"));
    h.outcome(Outcome::TransferStarted {
        size: Some(1),
        stored_as: None,
    });
    let refused = replies(
        h.outcome(Outcome::TransferFinished(Err(TransferFailure::DataTls(
            DataTlsFailure::NotResumed,
        )))),
    );
    assert_eq!(refused[0].0, 522);
    assert!(refused[0].1.contains("tls.require_reuse"), "{refused:?}");
    open_passive(&mut h);
    transfer_request(&h.line("RETR f"));
    let failed = replies(
        h.outcome(Outcome::TransferFinished(Err(TransferFailure::DataTls(
            DataTlsFailure::Handshake("bad certificate".into()),
        )))),
    );
    assert_eq!(failed[0].0, 425);
}

#[test]
fn ccc_is_refused_unless_allowed() {
    let mut h = explicit(TlsPolicy::default());
    upgrade(&mut h, None);
    h.login_alice();
    assert!(h.expect("CCC", 534).contains("tls.allow_ccc"));

    let mut h = explicit(TlsPolicy {
        allow_ccc: true,
        ..TlsPolicy::default()
    });
    upgrade(&mut h, None);
    h.login_alice();
    let actions = h.line("CCC");
    assert_eq!(replies(actions.clone())[0].0, 200);
    assert_eq!(actions.last(), Some(&Action::ClearControlTls));
    assert!(!h.session.control_protected());
    h.expect("CCC", 533);
}

#[test]
fn after_ccc_data_protection_holds_and_pbsz_prot_need_tls_again() {
    let mut h = explicit(TlsPolicy {
        allow_ccc: true,
        ..TlsPolicy::default()
    });
    upgrade(&mut h, None);
    h.expect("PBSZ 0", 200);
    h.expect("PROT P", 200);
    h.login_alice();
    h.expect("CCC", 200);
    let status = h.line("STAT");
    assert!(
        replies(status)[0]
            .1
            .contains("TLS: control clear, data protected (PROT P)")
    );
    h.expect("PBSZ 0", 503);
    h.expect("PROT C", 503);
    open_passive(&mut h);
    let request = transfer_request(&h.line("RETR f"));
    assert!(matches!(request.protection, DataProtection::Private { .. }));
}

#[test]
fn replies_name_settings_as_the_driver_spells_them() {
    // The default names give the texts of before, byte for byte.
    let mut h = explicit(TlsPolicy::default());
    upgrade(&mut h, None);
    h.login_alice();
    assert_eq!(
        h.expect("CCC", 534),
        "CCC refused: the control connection stays protected (tls.allow_ccc = false)"
    );

    let mut h = Harness::with_transport(
        SessionConfig {
            setting_names: SettingNames {
                tls_allow_ccc: "ftps.allow-ccc",
                ..SettingNames::default()
            },
            ..SessionConfig::default()
        },
        ControlTransport::Explicit,
    );
    upgrade(&mut h, None);
    h.login_alice();
    assert_eq!(
        h.expect("CCC", 534),
        "CCC refused: the control connection stays protected (ftps.allow-ccc = false)"
    );
}

#[test]
fn certificate_common_name_binds_the_account() {
    let mut h = explicit(TlsPolicy {
        certificate_user: CertificateUser::CommonName,
        ..TlsPolicy::default()
    });
    upgrade(&mut h, Some("alice"));
    assert_eq!(
        h.expect("USER bob", 530),
        "Your client certificate is for user alice"
    );
    h.login_alice();
}

#[test]
fn requirements_do_not_bind_a_listener_without_tls() {
    // The default policy requires TLS for accounts; a plain listener cannot offer it, so
    // its clients log in and transfer in clear rather than being locked out.
    let policy = TlsPolicy {
        require_control: TlsRequirement::Accounts,
        require_data: TlsRequirement::Accounts,
        ..TlsPolicy::default()
    };
    let mut h = Harness::with_transport(tls_config(policy), ControlTransport::Plain);
    h.login_alice();
    open_passive(&mut h);
    let request = transfer_request(&h.line("RETR f"));
    assert_eq!(request.protection, DataProtection::Clear);
}

fn codes(actions: Vec<Action>) -> Vec<u16> {
    replies(actions).into_iter().map(|reply| reply.0).collect()
}

fn start_big_download(h: &mut Harness) {
    h.line("PASV");
    h.outcome(Outcome::PassiveOpened(Ok("127.0.0.1:50000"
        .parse()
        .unwrap())));
    h.line("RETR big");
    h.outcome(Outcome::TransferStarted {
        size: Some(1 << 30),
        stored_as: None,
    });
}

#[test]
fn shutdown_closes_an_idle_session_with_421() {
    let mut h = Harness::new();
    h.login_alice();
    h.session.handle_shutdown();
    let actions = h.actions();
    assert_eq!(codes(actions.clone()), [421]);
    assert_eq!(actions.last(), Some(&Action::Close));
    assert!(h.session.is_closed());
}

#[test]
fn shutdown_lets_a_running_transfer_finish_then_sends_421() {
    let mut h = Harness::new();
    h.login_alice();
    start_big_download(&mut h);
    h.session.handle_shutdown();
    assert_eq!(h.actions(), []);
    assert!(h.session.is_shutting_down());
    // New commands are not run while it finishes; ABOR and STAT still are.
    assert_eq!(h.line("DELE x"), []);
    assert_eq!(codes(h.line("STAT")), [211]);
    let actions = h.outcome(Outcome::TransferFinished(Ok(TransferSummary {
        bytes: 1 << 30,
    })));
    assert_eq!(codes(actions.clone()), [226, 421]);
    assert_eq!(actions.last(), Some(&Action::Close));
}

#[test]
fn shutdown_deadline_aborts_the_transfer_with_426_then_421() {
    let mut h = Harness::new();
    h.login_alice();
    start_big_download(&mut h);
    h.session.handle_shutdown();
    h.session.handle_shutdown_deadline();
    assert_eq!(h.actions(), [Action::AbortTransfer]);
    let actions = h.outcome(Outcome::TransferFinished(Err(TransferFailure::Aborted)));
    let replies = replies(actions.clone());
    assert_eq!(
        replies.iter().map(|r| r.0).collect::<Vec<_>>(),
        [426, 421],
        "{replies:?}"
    );
    assert!(replies[0].1.contains("shutting down"));
    assert_eq!(actions.last(), Some(&Action::Close));
}

#[test]
fn shutdown_deadline_closes_an_idle_session_at_once() {
    let mut h = Harness::new();
    h.session.handle_shutdown_deadline();
    assert_eq!(codes(h.actions()), [421]);
    assert!(h.session.is_closed());
}

fn alice_with(policy: crate::policy::UserPolicy) -> User {
    User { policy, ..alice() }
}

#[test]
fn allow_from_refuses_a_login_from_elsewhere_with_530_without_counting_a_failure() {
    let mut h = Harness::new();
    let outside = alice_with(crate::policy::UserPolicy {
        allow_from: vec!["198.51.100.0/24".parse().unwrap()],
        ..Default::default()
    });
    for _ in 0..SessionConfig::default().max_failed_logins + 1 {
        h.expect("USER alice", 331);
        h.line("PASS secret");
        let got = replies(h.outcome(Outcome::Authenticated(Ok(outside.clone()))));
        assert_eq!(
            got,
            vec![(530, "Login as alice not allowed from 192.0.2.10".to_owned())]
        );
    }
    // Still not logged in, and the connection stays open.
    h.expect("PWD", 530);
    let inside = alice_with(crate::policy::UserPolicy {
        allow_from: vec!["192.0.2.0/24".parse().unwrap()],
        ..Default::default()
    });
    h.login(inside);
    h.expect("PWD", 257);
}

#[test]
fn a_session_limit_is_530_and_the_user_may_try_again() {
    let mut h = Harness::new();
    h.expect("USER alice", 331);
    h.line("PASS secret");
    let got = replies(h.outcome(Outcome::Authenticated(Err(LoginFailure::SessionLimit))));
    assert_eq!(got[0].0, 530);
    assert!(got[0].1.contains("max_sessions"), "{got:?}");
    h.login_alice();
}

#[test]
fn allo_is_kept_for_the_next_upload_only_when_a_quota_applies() {
    let mut h = Harness::new();
    h.login_alice();
    assert_eq!(h.expect("ALLO 100", 202), "ALLO not needed");
    open_passive(&mut h);
    let actions = h.line("STOR a");
    assert_eq!(transfer_request(&actions).allocated_size, None);

    let mut h = Harness::new();
    h.login(alice_with(crate::policy::UserPolicy {
        quota_bytes: Some(1000),
        ..Default::default()
    }));
    h.expect("ALLO", 501);
    h.expect("ALLO x", 501);
    assert_eq!(
        h.expect("ALLO 5000 R 80", 200),
        "ALLO 5000 bytes noted for the next upload"
    );
    open_passive(&mut h);
    let actions = h.line("STOR a");
    assert_eq!(transfer_request(&actions).allocated_size, Some(5000));
    h.outcome(Outcome::TransferFinished(Err(TransferFailure::Storage(
        StorageErrorKind::QuotaExceeded,
    ))));
    // The next upload has no size announced.
    open_passive(&mut h);
    let actions = h.line("STOR b");
    assert_eq!(transfer_request(&actions).allocated_size, None);
}

#[test]
fn quota_exceeded_is_552_before_and_during_the_transfer() {
    let mut h = Harness::new();
    h.login_alice();
    open_passive(&mut h);
    h.line("STOR a");
    let got = replies(
        h.outcome(Outcome::TransferFinished(Err(TransferFailure::Storage(
            StorageErrorKind::QuotaExceeded,
        )))),
    );
    assert_eq!(got, vec![(552, "Quota exceeded".to_owned())]);

    open_passive(&mut h);
    h.line("STOR a");
    h.outcome(Outcome::TransferStarted {
        size: None,
        stored_as: None,
    });
    let got = replies(
        h.outcome(Outcome::TransferFinished(Err(TransferFailure::Storage(
            StorageErrorKind::QuotaExceeded,
        )))),
    );
    assert_eq!(
        got,
        vec![(552, "Transfer failed: Quota exceeded".to_owned())]
    );
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

#[test]
fn a_login_from_a_banned_address_gets_421_and_the_session_closes() {
    let mut h = Harness::new();
    h.expect("USER alice", 331);
    let actions = h.line("PASS secret");
    assert!(matches!(&actions[..], [Action::Authenticate(_)]));
    let actions = h.outcome(Outcome::Authenticated(Err(LoginFailure::Banned)));
    assert_eq!(
        replies(actions.clone()),
        vec![(
            421,
            "Too many failures from your address, closing connection".to_owned()
        )]
    );
    assert!(matches!(actions.last(), Some(Action::Close)));
    assert!(h.session.is_closed());
}

#[test]
fn a_flood_of_queued_lines_is_reported_to_the_driver() {
    let mut h = Harness::new();
    h.expect("USER alice", 331);
    let _ = h.line("PASS secret");
    assert!(!h.session.flooded());
    for _ in 0..=MAX_QUEUED_LINES {
        h.session.handle_line(Ok(b"NOOP".to_vec()), h.now);
    }
    assert_eq!(
        h.replies(),
        vec![(421, "Too many queued commands".to_owned())]
    );
    assert!(h.session.flooded());
}
