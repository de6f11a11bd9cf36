//! FTPS (RFC 4217): AUTH TLS, PBSZ, PROT, CCC, the TLS requirements and data protection.

use super::*;

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
