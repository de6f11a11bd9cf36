//! The sans-IO session fed arbitrary lines and arbitrary (but type-correct) outcomes for
//! the actions it asks for: it never panics, and every reply it produces is well-formed: a
//! three-digit code from 100 to 599, CRLF-terminated lines, no bare CR or LF inside a line
//! (nothing a client sends can inject a reply line).
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ferroftp_proto::session::{
    Action, LoginFailure, Outcome, PassiveFailure, QuotaUsage, StorageRequest, StorageResult,
    TransferFailure, TransferSummary, User,
};
use ferroftp_proto::{FileKind, FileMeta, Session, SessionConfig, StorageErrorKind, VirtualPath};
use libfuzzer_sys::fuzz_target;

/// Reads the fuzzer's bytes as a script.
struct Script<'a> {
    bytes: &'a [u8],
}

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    /// Up to the next LF (or the end): one line as a client would send it, any bytes.
    fn line(&mut self) -> Vec<u8> {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(self.bytes.len());
        let (line, rest) = self.bytes.split_at(end);
        self.bytes = rest.get(1..).unwrap_or(&[]);
        line.to_vec()
    }
}

fn check_reply(encoded: &[u8]) {
    assert!(encoded.ends_with(b"\r\n"), "{encoded:?} does not end with CRLF");
    let text = &encoded[..encoded.len() - 2];
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(!line.contains(&b'\r'), "bare CR in reply line {line:?}");
    }
    let code = &encoded[..3];
    assert!(code.iter().all(u8::is_ascii_digit), "no code in {encoded:?}");
    let code: u16 = std::str::from_utf8(code).unwrap().parse().unwrap();
    assert!((100..600).contains(&code), "code {code} out of range");
}

fuzz_target!(|data: &[u8]| {
    let mut script = Script { bytes: data };
    let mut now = Instant::now();
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let mut session = Session::new(Arc::new(SessionConfig::default()), peer, now);
    // The action that waits for an outcome, and what kind of outcome it wants.
    let mut waiting: Option<Action> = None;
    let mut transfer_started = false;
    for _ in 0..256 {
        while let Some(action) = session.poll_action() {
            match action {
                Action::Reply(reply) => {
                    let mut encoded = Vec::new();
                    reply.encode_into(&mut encoded);
                    check_reply(&encoded);
                }
                Action::Close => return,
                Action::ClosePassive | Action::ClearControlTls | Action::AbortTransfer => {}
                other => waiting = Some(other),
            }
        }
        let Some(choice) = script.byte() else {
            return;
        };
        match choice % 4 {
            0 | 1 => session.handle_line(Ok(script.line()), now),
            2 => {
                now += Duration::from_secs(u64::from(script.byte().unwrap_or(0)) * 10);
                session.handle_timeout(now);
            }
            _ => {
                let Some(action) = waiting.take() else {
                    continue;
                };
                let pick = script.byte().unwrap_or(0);
                let outcome = match &action {
                    // Every way a login ends: accepted (read-only or not), a wrong password,
                    // the account's session cap, the client's address banned, the
                    // authenticator unavailable.
                    Action::Authenticate(request) => Outcome::Authenticated(match pick % 10 {
                        0 | 2 | 4 | 6 | 8 => Ok(User {
                            name: request.username.clone(),
                            home: VirtualPath::root(),
                            read_only: pick % 4 == 2,
                            policy: Default::default(),
                        }),
                        1 | 3 => Err(LoginFailure::Rejected),
                        5 => Err(LoginFailure::SessionLimit),
                        7 => Err(LoginFailure::Banned),
                        _ => Err(LoginFailure::Unavailable),
                    }),
                    // Success of the kind the request asks for (the session asserts that, as
                    // a driver bug), or one of the errors a storage can give.
                    Action::Storage(request) => Outcome::Storage(match (pick % 4, request) {
                        (0, _) => Err(StorageErrorKind::NotFound),
                        (1, _) => Err(StorageErrorKind::PermissionDenied),
                        (_, StorageRequest::Metadata(_)) => Ok(StorageResult::Metadata(FileMeta {
                            kind: if pick % 8 < 4 { FileKind::File } else { FileKind::Directory },
                            size: u64::from(pick) << 20,
                            modified: None,
                            mode: 0o644,
                        })),
                        (_, StorageRequest::ResumableSize(_)) => {
                            Ok(StorageResult::Size(u64::from(pick)))
                        }
                        (_, StorageRequest::StatListing(_)) => Ok(StorageResult::Entries {
                            entries: Vec::new(),
                            now: SystemTime::UNIX_EPOCH,
                        }),
                        (_, StorageRequest::QuotaUsage) => {
                            Ok(StorageResult::QuotaUsage((pick % 8 < 4).then_some(QuotaUsage {
                                bytes: u64::from(pick) << 20,
                                files: u64::from(pick),
                            })))
                        }
                        _ => Ok(StorageResult::Done),
                    }),
                    Action::OpenPassive => Outcome::PassiveOpened(if pick % 3 == 0 {
                        Err(PassiveFailure::Exhausted)
                    } else {
                        Ok("127.0.0.1:50000".parse().unwrap())
                    }),
                    Action::Transfer(_) if !transfer_started && pick % 3 != 0 => {
                        transfer_started = true;
                        waiting = Some(action);
                        session.handle_outcome(
                            Outcome::TransferStarted {
                                size: Some(u64::from(pick)),
                                stored_as: None,
                            },
                            now,
                        );
                        continue;
                    }
                    Action::Transfer(_) => {
                        transfer_started = false;
                        Outcome::TransferFinished(match pick % 3 {
                            0 => Ok(TransferSummary { bytes: 10 }),
                            1 => Err(TransferFailure::Aborted),
                            _ => Err(TransferFailure::ConnectionLost("reset".to_owned())),
                        })
                    }
                    Action::UpgradeToTls => Outcome::TlsEstablished(Err("handshake".to_owned())),
                    _ => continue,
                };
                session.handle_outcome(outcome, now);
            }
        }
    }
});
