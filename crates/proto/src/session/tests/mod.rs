//! Session scenarios: lines and outcomes in, actions out. No sockets, virtual time.

use std::time::{Duration, SystemTime};

use super::*;
use crate::address::Cidr;
use crate::error::StorageErrorKind;
use crate::metadata::{DirEntry, FileKind, FileMeta};

mod data_channel;
mod files;
mod ftps;
mod info;
mod lifecycle;
mod login;
mod transfer;

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

fn alice_with(policy: crate::policy::UserPolicy) -> User {
    User { policy, ..alice() }
}
