//! The per-connection protocol state machine.
//!
//! A [`Session`] is fed received lines ([`Session::handle_line`]), the outcomes of the
//! actions it asked for ([`Session::handle_outcome`]) and the passing of time
//! ([`Session::handle_timeout`]); it answers with [`Action`]s taken from
//! [`Session::poll_action`]. At most one action that needs an outcome is in flight at a time;
//! lines that arrive meanwhile are queued (clients pipeline) except the few RFC 959 allows
//! during a transfer (ABOR, STAT).
//!
//! This file holds the type, the driver-facing API and the dispatch of a parsed command to
//! its handler. The handlers live in one file of `impl Session` per concern: `login`
//! (USER, PASS, REIN), `info` (FEAT, OPTS, STAT, SITE, HELP), `files` (PWD, CWD, CDUP, paths
//! and the storage requests of file commands), `data_channel` (PASV, EPSV, PORT, EPRT),
//! `transfer` (TYPE, MODE, STRU, REST, ALLO, the transfer commands and ABOR), `ftps`
//! (RFC 4217), with the shared policy in `config`, the driver's vocabulary in `action` and the
//! SITE grammar in `site`.

mod action;
mod config;
mod data_channel;
mod files;
mod ftps;
mod info;
mod login;
mod site;
#[cfg(test)]
mod tests;
mod transfer;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use action::{
    Action, DataEndpoint, DataProtection, DataTlsFailure, LoginFailure, LoginRequest, Outcome,
    PassiveFailure, QuotaUsage, StorageRequest, StorageResult, TlsInfo, TransferFailure,
    TransferKind, TransferRequest, TransferSummary, UploadTarget, User, WriteMode,
};

use crate::command::{Command, Verb};
use crate::framing::LineError;
use crate::host_port;
use crate::listing::{ListFormat, MlstFacts};
use crate::path::VirtualPath;
use crate::reply::{Reply, ReplyCode};
use ftps::TlsState;
use info::help;
use login::Login;
use transfer::{TransferType, file_structure, transfer_mode};

pub use config::{
    CertificateUser, ControlTransport, SessionConfig, SettingNames, TlsPolicy, TlsRequirement,
    is_anonymous_name,
};

const SHUTDOWN_TEXT: &str = "Service shutting down, closing control connection";
const REVOKED_TEXT: &str = "Account removed or its password changed, closing control connection";

/// Most lines queued while an operation is in flight; a client pipelining more is flooding.
const MAX_QUEUED_LINES: usize = 64;

/// The operation whose outcome the session waits for.
#[derive(Debug)]
enum InFlight {
    Login,
    /// A storage operation whose success is answered by a fixed reply.
    Simple {
        client_path: String,
        success: Reply,
    },
    ChangeDirectory {
        client_path: String,
        target: VirtualPath,
    },
    RenameFrom {
        client_path: String,
        storage_path: VirtualPath,
    },
    Size {
        client_path: String,
    },
    ModificationTime {
        client_path: String,
    },
    MachineListSingle {
        client_path: String,
    },
    StatListing {
        client_path: String,
    },
    /// SITE QUOTA.
    QuotaReport,
    Passive {
        extended: bool,
    },
    Transfer {
        client_path: String,
        started: bool,
        abort_requested: bool,
        verb: Verb,
    },
    /// AUTH TLS accepted, handshake under way: received lines are discarded.
    TlsHandshake,
}

/// One control connection's protocol state. Holds no sockets, no clock and no locks.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    peer: SocketAddr,
    login: Login,
    /// The working directory as the user sees it (inside their home).
    cwd: VirtualPath,
    transfer_type: TransferType,
    restart_offset: u64,
    /// The size announced by ALLO, for the next upload only.
    allocated_size: Option<u64>,
    rename_from: Option<VirtualPath>,
    data_endpoint: Option<DataEndpoint>,
    extended_passive_only: bool,
    mlst_facts: MlstFacts,
    in_flight: Option<InFlight>,
    queued: VecDeque<Result<Vec<u8>, LineError>>,
    actions: VecDeque<Action>,
    failed_logins: u32,
    idle_deadline: Instant,
    /// When a session that is not logged in is closed: set at connect (and again after
    /// REIN), cleared by a successful login, never moved by other commands.
    login_deadline: Option<Instant>,
    closed: bool,
    /// FTPS (RFC 4217): whether the control connection is protected, PBSZ and PROT.
    tls: TlsState,
    /// Lines dropped because they arrived between AUTH TLS and the end of the handshake.
    discarded_lines: u64,
    /// Set when the client queued more than [`MAX_QUEUED_LINES`] lines (the session closed).
    flooded: bool,
    /// PORT/EPRT targets refused by the RFC 2577 checks (bounce attempts).
    refused_active_targets: u64,
    /// The server is shutting down: no new command runs, and the session closes with 421
    /// as soon as nothing is in flight.
    shutting_down: bool,
    /// The text of the 421 that ends a shutdown: the server's, or the account's revocation.
    closing_text: &'static str,
    /// The shutdown's grace period is over: the running transfer was aborted by the server,
    /// not by the client (426 without ABOR's 226).
    stopping: bool,
}

impl Session {
    /// A new session for a client at `peer` on a plain listener (AUTH TLS refused); queues
    /// the 220 greeting.
    pub fn new(config: Arc<SessionConfig>, peer: SocketAddr, now: Instant) -> Self {
        Self::with_transport(config, peer, ControlTransport::Plain, now)
    }

    /// A new session whose control connection is secured as `transport` says; queues the
    /// 220 greeting (sent under TLS for [`ControlTransport::Implicit`]).
    pub fn with_transport(
        config: Arc<SessionConfig>,
        peer: SocketAddr,
        transport: ControlTransport,
        now: Instant,
    ) -> Self {
        let greeting = Reply::new(ReplyCode::SERVICE_READY, config.greeting.clone());
        let idle_deadline = now + config.idle_timeout;
        let login_deadline = Some(now + config.login_timeout);
        let mut session = Self {
            config,
            peer,
            login: Login::AwaitingUser,
            cwd: VirtualPath::root(),
            transfer_type: TransferType::Binary,
            restart_offset: 0,
            allocated_size: None,
            rename_from: None,
            data_endpoint: None,
            extended_passive_only: false,
            mlst_facts: MlstFacts::default(),
            in_flight: None,
            queued: VecDeque::new(),
            actions: VecDeque::new(),
            failed_logins: 0,
            idle_deadline,
            login_deadline,
            closed: false,
            tls: TlsState::at_connect(transport),
            discarded_lines: 0,
            flooded: false,
            refused_active_targets: 0,
            shutting_down: false,
            closing_text: SHUTDOWN_TEXT,
            stopping: false,
        };
        session.reply(greeting);
        session
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next: the idle
    /// deadline or, before login, the login deadline if sooner; `None` while an operation is
    /// in flight (transfers have their own limits in the driver) or once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.in_flight.is_none() && !self.closed).then(|| {
            self.login_deadline
                .map_or(self.idle_deadline, |login| login.min(self.idle_deadline))
        })
    }

    /// `true` once the session asked to close; it ignores further input.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the control connection is protected by TLS now.
    pub fn control_protected(&self) -> bool {
        self.tls.control_protected()
    }

    /// Lines received between AUTH TLS and the end of its handshake, discarded unexecuted.
    pub fn discarded_lines(&self) -> u64 {
        self.discarded_lines
    }

    /// Whether the session closed because the client queued too many lines (a protocol
    /// error the driver's defender counts).
    pub fn flooded(&self) -> bool {
        self.flooded
    }

    /// PORT/EPRT targets refused so far because they named a third party or a privileged port
    /// (RFC 2577 §3: bounce attempts), for the driver's metrics.
    pub fn refused_active_targets(&self) -> u64 {
        self.refused_active_targets
    }

    /// The logged-in user's name, for logs.
    pub fn user_name(&self) -> Option<&str> {
        match &self.login {
            Login::LoggedIn(user) => Some(&user.name),
            _ => None,
        }
    }

    /// Time passed: closes an idle session with 421 (RFC 959 §4.2: service closing).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed || self.in_flight.is_some() {
            return;
        }
        if self.login_deadline.is_some_and(|deadline| now >= deadline) {
            self.reply(Reply::new(
                ReplyCode::SERVICE_UNAVAILABLE,
                "Login timeout, closing connection",
            ));
            self.close();
            return;
        }
        if now < self.idle_deadline {
            return;
        }
        self.reply(Reply::new(
            ReplyCode::SERVICE_UNAVAILABLE,
            "Idle timeout, closing connection",
        ));
        self.close();
    }

    /// The server is shutting down (SIGTERM): an idle session is closed at once with 421
    /// (RFC 959 §5.4: 421 may answer any command when the service is shutting down); one
    /// with an operation in flight (a transfer) finishes it, gets its reply, and then the
    /// 421. Lines that arrive meanwhile are not run.
    pub fn handle_shutdown(&mut self) {
        if self.closed || self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.queued.clear();
        if self.in_flight.is_none() {
            self.close_for_shutdown();
        }
    }

    /// The shutdown's grace period is over: a running transfer is aborted (the driver
    /// answers with [`Outcome::TransferFinished`], the client gets 426 and then 421); a
    /// session with nothing running closes with 421 now.
    pub fn handle_shutdown_deadline(&mut self) {
        self.handle_shutdown();
        if self.closed || self.stopping {
            return;
        }
        self.stopping = true;
        if let Some(InFlight::Transfer {
            abort_requested, ..
        }) = &mut self.in_flight
            && !*abort_requested
        {
            *abort_requested = true;
            self.actions.push_back(Action::AbortTransfer);
        }
    }

    /// Whether a shutdown was asked for and the session has not closed yet.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down && !self.closed
    }

    fn close_for_shutdown(&mut self) {
        self.reply(Reply::new(
            ReplyCode::SERVICE_UNAVAILABLE,
            self.closing_text,
        ));
        self.close();
    }

    /// The logged-in account was deleted or its password changed since the login: the
    /// session ends as in a shutdown (RFC 959 §5.4: 421 may answer any command), the running
    /// transfer, if any, first, and no further command runs.
    pub fn handle_account_revoked(&mut self) {
        if self.closed || self.shutting_down || !matches!(self.login, Login::LoggedIn(_)) {
            return;
        }
        self.closing_text = REVOKED_TEXT;
        self.handle_shutdown();
    }

    /// The logged-in account is read-only now (or writable again): commands from now on are
    /// judged with the new right; a transfer already running is not cut.
    pub fn handle_account_read_only(&mut self, read_only: bool) {
        if let Login::LoggedIn(user) = &mut self.login {
            user.read_only = read_only;
        }
    }

    /// One framed line (or a framing error) arrived.
    pub fn handle_line(&mut self, line: Result<Vec<u8>, LineError>, now: Instant) {
        if self.closed {
            return;
        }
        if self.shutting_down {
            // ABOR and STAT still answer during the transfer that is finishing; anything
            // else waits for the 421 that follows it.
            if matches!(self.in_flight, Some(InFlight::Transfer { .. }))
                && let Ok(bytes) = &line
                && let Ok(command) = Command::parse(bytes)
                && command.verb.spec().during_transfer
            {
                self.handle_during_transfer(command);
            }
            return;
        }
        self.idle_deadline = now + self.config.idle_timeout;
        if let Some(in_flight) = &self.in_flight {
            if matches!(in_flight, InFlight::TlsHandshake) {
                // RFC 4217 §10 / CVE-2011-0411: what a client pipelined after AUTH TLS was
                // sent in plain text and must not run as if it had been protected.
                self.discarded_lines += 1;
                return;
            }
            let is_transfer = matches!(in_flight, InFlight::Transfer { .. });
            if is_transfer
                && let Ok(bytes) = &line
                && let Ok(command) = Command::parse(bytes)
                && command.verb.spec().during_transfer
            {
                self.handle_during_transfer(command);
                return;
            }
            if self.queued.len() >= MAX_QUEUED_LINES {
                self.reply(Reply::new(
                    ReplyCode::SERVICE_UNAVAILABLE,
                    "Too many queued commands",
                ));
                self.flooded = true;
                self.close();
                return;
            }
            self.queued.push_back(line);
            return;
        }
        self.process_line(line);
        self.arm_login_deadline(now);
    }

    /// A session back in the pre-login state (REIN) gets a new login deadline.
    fn arm_login_deadline(&mut self, now: Instant) {
        if self.login_deadline.is_none() && !matches!(self.login, Login::LoggedIn(_)) {
            self.login_deadline = Some(now + self.config.login_timeout);
        }
    }

    /// The driver finished an action.
    pub fn handle_outcome(&mut self, outcome: Outcome, now: Instant) {
        self.idle_deadline = now + self.config.idle_timeout;
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        match (in_flight, outcome) {
            (InFlight::Login, Outcome::Authenticated(result)) => self.finish_login(result),
            (in_flight, Outcome::Storage(result)) => self.finish_storage(in_flight, result),
            (InFlight::Passive { extended }, Outcome::PassiveOpened(result)) => {
                self.finish_passive(extended, result)
            }
            (
                InFlight::Transfer {
                    client_path,
                    abort_requested,
                    verb,
                    ..
                },
                Outcome::TransferStarted { size, stored_as },
            ) => {
                self.reply(self.opening_reply(verb, &client_path, size, stored_as));
                self.in_flight = Some(InFlight::Transfer {
                    client_path,
                    started: true,
                    abort_requested,
                    verb,
                });
            }
            (
                InFlight::Transfer {
                    started,
                    abort_requested,
                    ..
                },
                Outcome::TransferFinished(result),
            ) => self.finish_transfer(started, abort_requested, result),
            (InFlight::TlsHandshake, Outcome::TlsEstablished(Ok(info))) => {
                self.finish_tls_handshake(info);
            }
            (InFlight::TlsHandshake, Outcome::TlsEstablished(Err(_))) => self.close(),
            (in_flight, outcome) => {
                // A driver bug: answer the client and keep the session usable.
                debug_assert!(false, "outcome {outcome:?} does not match {in_flight:?}");
                self.reply(Reply::new(ReplyCode::LOCAL_ERROR, "Internal error"));
            }
        }
        self.drain_queue();
        self.arm_login_deadline(now);
    }

    fn drain_queue(&mut self) {
        if self.shutting_down && self.in_flight.is_none() && !self.closed {
            self.close_for_shutdown();
            return;
        }
        while self.in_flight.is_none() && !self.closed {
            let Some(line) = self.queued.pop_front() else {
                break;
            };
            self.process_line(line);
        }
    }

    fn reply(&mut self, reply: Reply) {
        self.actions.push_back(Action::Reply(reply));
    }

    fn close(&mut self) {
        self.closed = true;
        self.queued.clear();
        self.actions.push_back(Action::Close);
    }

    fn start(&mut self, in_flight: InFlight, action: Action) {
        self.in_flight = Some(in_flight);
        self.actions.push_back(action);
    }

    fn process_line(&mut self, line: Result<Vec<u8>, LineError>) {
        let command = match line {
            Ok(bytes) => Command::parse(&bytes),
            Err(LineError::TooLong) => {
                self.reply(Reply::new(ReplyCode::SYNTAX_ERROR, "Command line too long"));
                return;
            }
        };
        let command = match command {
            Ok(command) => command,
            Err(error) => {
                self.reply(error.reply());
                return;
            }
        };
        let verb = command.verb;
        let spec = verb.spec();
        if spec.needs_login && !matches!(self.login, Login::LoggedIn(_)) {
            self.reply(Reply::new(
                ReplyCode::NOT_LOGGED_IN,
                "Please login with USER and PASS",
            ));
            return;
        }
        // RFC 959 §4.1.3: RNTO must immediately follow RNFR.
        if verb != Verb::Rnto {
            self.rename_from = None;
        }
        if spec.modifies_storage && self.refuse_if_read_only() {
            // A refused RNTO ends its RNFR sequence like any other command.
            self.rename_from = None;
            // An upload refused here uses up the REST before it as one that ran would:
            // REST applies to the command right after it (RFC 959 §4.1.3).
            if matches!(verb, Verb::Stor | Verb::Appe | Verb::Stou) {
                self.restart_offset = 0;
            }
            return;
        }
        let argument = command.argument.unwrap_or_default();
        self.dispatch(verb, argument);
    }

    fn dispatch(&mut self, verb: Verb, argument: String) {
        match verb {
            Verb::User => self.user(argument),
            Verb::Pass => self.pass(argument),
            Verb::Acct => self.reply(Reply::new(ReplyCode::NOT_IMPLEMENTED, "ACCT not needed")),
            Verb::Quit => {
                self.reply(Reply::new(ReplyCode::CLOSING, "Goodbye"));
                self.close();
            }
            Verb::Rein => self.reinitialize(),
            Verb::Noop => self.reply(Reply::new(ReplyCode::OK, "NOOP ok")),
            Verb::Syst => self.reply(Reply::new(ReplyCode::SYSTEM_TYPE, "UNIX Type: L8")),
            Verb::Feat => self.reply(self.features()),
            Verb::Opts => self.options(&argument),
            Verb::Help => self.reply(help(&argument)),
            Verb::Stat => self.status(&argument),
            Verb::Site => self.site(&argument),
            Verb::Clnt => self.reply(Reply::new(ReplyCode::OK, "Noted")),
            Verb::Pwd => self.print_working_directory(),
            Verb::Cwd => self.change_directory(&argument),
            Verb::Cdup => self.change_to_parent(),
            Verb::Mkd => self.make_directory(&argument),
            Verb::Rmd => self.modify(&argument, StorageRequest::RemoveDir, "Directory removed"),
            Verb::Dele => self.modify(&argument, StorageRequest::RemoveFile, "File deleted"),
            Verb::Rnfr => self.rename_from(&argument),
            Verb::Rnto => self.rename_to(&argument),
            Verb::Size => self.lookup(&argument, StorageRequest::ResumableSize, |c| {
                InFlight::Size { client_path: c }
            }),
            Verb::Mdtm => self.lookup(&argument, StorageRequest::Metadata, |c| {
                InFlight::ModificationTime { client_path: c }
            }),
            Verb::Mfmt => self.set_modification_time(&argument),
            Verb::Type => self.set_type(&argument),
            Verb::Mode => self.reply(transfer_mode(&argument)),
            Verb::Stru => self.reply(file_structure(&argument)),
            Verb::Allo => self.allocate(&argument),
            Verb::Rest => self.restart(&argument),
            Verb::Retr => self.retrieve(&argument),
            Verb::Stor => self.store(&argument, Verb::Stor),
            Verb::Appe => self.store(&argument, Verb::Appe),
            Verb::Stou => self.store_unique(),
            Verb::List => self.list(&argument, ListFormat::Long, Verb::List),
            Verb::Nlst => self.list(&argument, ListFormat::NamesOnly, Verb::Nlst),
            Verb::Mlsd => self.list(&argument, ListFormat::Machine, Verb::Mlsd),
            Verb::Mlst => self.list_single(&argument),
            Verb::Pasv => self.passive(false),
            Verb::Epsv => self.extended_passive(&argument),
            Verb::Port => {
                self.active(host_port::parse_port_argument(&argument).map(SocketAddr::V4))
            }
            Verb::Eprt => self.active(host_port::parse_eprt_argument(&argument)),
            Verb::Abor => self.abort_without_transfer(),
            Verb::Smnt => self.reply(Reply::new(ReplyCode::NOT_IMPLEMENTED, "SMNT not supported")),
            Verb::Auth | Verb::Pbsz | Verb::Prot | Verb::Ccc if !self.tls.is_available() => self
                .reply(Reply::new(
                    ReplyCode::NOT_IMPLEMENTED,
                    "TLS is not configured on this listener",
                )),
            Verb::Auth => self.auth(&argument),
            Verb::Pbsz => self.protection_buffer_size(&argument),
            Verb::Prot => self.protection_level(&argument),
            Verb::Ccc => self.clear_command_channel(),
        }
    }
}
