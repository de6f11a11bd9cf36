//! Transfers and their parameters: REST, TYPE/MODE/STRU, ALLO, 150/226, ABOR, listings, STOU,
//! quotas.

use super::*;

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
