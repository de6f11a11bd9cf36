//! Setting up data connections: PASV, EPSV, PORT, EPRT and the RFC 2577 checks.

use super::*;

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
