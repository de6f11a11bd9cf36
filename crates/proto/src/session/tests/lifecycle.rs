//! A session's life: bad input, timeouts, QUIT, shutdown, a flood of queued lines.

use super::*;

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
fn quit_closes_after_221() {
    let mut h = Harness::new();
    let actions = h.line("QUIT");
    assert_eq!(replies(actions.clone()), [(221, "Goodbye".to_owned())]);
    assert_eq!(actions.last(), Some(&Action::Close));
    assert!(h.line("NOOP").is_empty());
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
