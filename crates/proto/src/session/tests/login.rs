//! Logins (RFC 959 §4.1.1) and what an account may do: failed logins, refusals by policy, the
//! defender's ban, read-only accounts, revocation.

use super::*;

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
