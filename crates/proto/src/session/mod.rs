//! The per-connection protocol state machine.
//!
//! A [`Session`] is fed received lines ([`Session::handle_line`]), the outcomes of the
//! actions it asked for ([`Session::handle_outcome`]) and the passing of time
//! ([`Session::handle_timeout`]); it answers with [`Action`]s taken from
//! [`Session::poll_action`]. At most one action that needs an outcome is in flight at a time;
//! lines that arrive meanwhile are queued (clients pipeline) except the few RFC 959 allows
//! during a transfer (ABOR, STAT).

mod action;
mod site;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use action::{
    Action, DataEndpoint, DataProtection, DataTlsFailure, LoginFailure, LoginRequest, Outcome,
    PassiveFailure, QuotaUsage, StorageRequest, StorageResult, TlsInfo, TransferFailure,
    TransferKind, TransferRequest, TransferSummary, UploadTarget, User, WriteMode,
};

use crate::address::{Cidr, is_private_address};
use crate::command::{Command, Verb};
use crate::error::StorageErrorKind;
use crate::framing::LineError;
use crate::host_port::{self, HostPortError};
use crate::listing::{self, ListFormat, MlstFacts};
use crate::path::{PathError, VirtualPath};
use crate::policy::{format_byte_rate, format_byte_size};
use crate::reply::{Reply, ReplyCode};
use crate::time::{format_time_val, parse_time_val};

/// Policy shared by every session of a server. Immutable while sessions run.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Text of the 220 greeting.
    pub greeting: String,
    /// Close a session idle this long with 421.
    pub idle_timeout: Duration,
    /// Close a session not logged in this long after it connected with 421, whatever it
    /// sends meanwhile (NOOP does not extend it): otherwise a few addresses that connect and
    /// keep talking without logging in could hold every session slot.
    pub login_timeout: Duration,
    /// After this many failed logins the connection is closed with 421.
    pub max_failed_logins: u32,
    /// PORT/EPRT allowed (RFC 2577 checks still apply).
    pub allow_active: bool,
    /// The storage supports APPE and REST+STOR.
    pub allow_resume_upload: bool,
    /// The storage has permission modes: SITE CHMOD is offered (otherwise 504).
    pub allow_chmod: bool,
    /// A PORT/EPRT naming a private address, from a client whose control connection comes
    /// from a public address (it sits behind NAT and does not know it), is redirected to
    /// that public address instead of being refused.
    pub active_nat_fallback: bool,
    /// FTPS rules (RFC 4217), for sessions of listeners with TLS.
    pub tls: TlsPolicy,
}

/// Who must use TLS (`tls.require`, `tls.require_data`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsRequirement {
    /// Nobody.
    #[default]
    None,
    /// Every account except the anonymous names (`anonymous`, `ftp`).
    Accounts,
    /// Everybody.
    All,
}

impl TlsRequirement {
    /// Whether the rule applies to the login name `user`.
    pub fn applies_to(self, user: &str) -> bool {
        match self {
            Self::None => false,
            Self::Accounts => !is_anonymous_name(user),
            Self::All => true,
        }
    }

    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Accounts => "accounts",
            Self::All => "all",
        }
    }
}

/// The names anonymous logins use (RFC 1635).
pub fn is_anonymous_name(user: &str) -> bool {
    user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp")
}

/// What a verified client certificate's common name means for the login.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CertificateUser {
    /// Nothing: the certificate only decides whether the connection is accepted.
    #[default]
    Off,
    /// The certificate binds the account: USER must be its CN (the password is still
    /// checked). Clients without a certificate log in as usual.
    CommonName,
}

/// The FTPS policy (RFC 4217) shared by every session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPolicy {
    /// Who must protect the control connection before USER (refused with 530 otherwise).
    pub require_control: TlsRequirement,
    /// Who must protect data connections (PROT C refused with 534, transfers with 521).
    pub require_data: TlsRequirement,
    /// CCC is accepted (otherwise 534).
    pub allow_ccc: bool,
    /// Protected data connections must resume the control connection's TLS session.
    pub require_reuse: bool,
    /// Users whose data connections need not resume (clients that cannot).
    pub reuse_exempt_users: Vec<String>,
    /// Client networks whose data connections need not resume.
    pub reuse_exempt_clients: Vec<Cidr>,
    /// Meaning of a client certificate's CN.
    pub certificate_user: CertificateUser,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        Self {
            require_control: TlsRequirement::None,
            require_data: TlsRequirement::None,
            allow_ccc: false,
            require_reuse: true,
            reuse_exempt_users: Vec::new(),
            reuse_exempt_clients: Vec::new(),
            certificate_user: CertificateUser::Off,
        }
    }
}

/// How the control connection of a new session is secured: the listener's `tls` setting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ControlTransport {
    /// Plain, and AUTH TLS is refused (`tls = "off"`).
    #[default]
    Plain,
    /// Plain until AUTH TLS (`tls = "explicit"`).
    Explicit,
    /// TLS from the first byte, the handshake already done (`tls = "implicit"`); data
    /// connections are protected unless the client sends PROT C.
    Implicit(TlsInfo),
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            greeting: "ferroftp ready".to_owned(),
            idle_timeout: Duration::from_secs(300),
            login_timeout: Duration::from_secs(30),
            max_failed_logins: 3,
            allow_active: true,
            allow_resume_upload: true,
            allow_chmod: true,
            active_nat_fallback: false,
            tls: TlsPolicy::default(),
        }
    }
}

const SHUTDOWN_TEXT: &str = "Service shutting down, closing control connection";
const REVOKED_TEXT: &str = "Account removed or its password changed, closing control connection";

/// Most lines queued while an operation is in flight; a client pipelining more is flooding.
const MAX_QUEUED_LINES: usize = 64;

/// RFC 2577 §3: active-mode targets below this port are refused (no bounce into services).
const LOWEST_ACTIVE_PORT: u16 = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Login {
    AwaitingUser,
    /// USER was refused because the control connection is not protected: PASS is refused
    /// with the same reason.
    RefusedWithoutTls {
        text: String,
    },
    AwaitingPassword {
        username: String,
    },
    LoggedIn(User),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TransferType {
    Ascii,
    Binary,
}

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
    /// AUTH TLS is possible on this listener (explicit or implicit).
    tls_available: bool,
    /// The control connection is protected now.
    control_tls: bool,
    /// PBSZ was accepted (RFC 4217 §8: PROT needs it).
    pbsz_done: bool,
    /// PROT P in effect.
    protect_data: bool,
    /// The verified client certificate's CN.
    tls_client_name: Option<String>,
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
        let (tls_available, implicit) = match transport {
            ControlTransport::Plain => (false, None),
            ControlTransport::Explicit => (true, None),
            ControlTransport::Implicit(info) => (true, Some(info)),
        };
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
            tls_available,
            control_tls: implicit.is_some(),
            pbsz_done: implicit.is_some(),
            protect_data: implicit.is_some(),
            tls_client_name: implicit.and_then(|info| info.client_name),
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
        self.control_tls
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
                self.control_tls = true;
                self.tls_client_name = info.client_name;
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
        if verb.spec().needs_login && !matches!(self.login, Login::LoggedIn(_)) {
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
            Verb::Pwd => self.reply(Reply::new(
                ReplyCode::PATH_CREATED,
                format!("{} is the current directory", quote_path(self.cwd.as_str())),
            )),
            Verb::Cwd => self.change_directory(&argument),
            // CDUP at the top of the home is refused like `CWD ..`: `..` never climbs out.
            Verb::Cdup if self.cwd.is_root() => self.reply(PathError::EscapesRoot.reply()),
            Verb::Cdup => {
                self.cwd = self.cwd.parent();
                self.reply(Reply::new(ReplyCode::FILE_ACTION_OK, "Directory changed"));
            }
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
            Verb::Mode => self.reply(match argument.to_ascii_uppercase().as_str() {
                "S" => Reply::new(ReplyCode::OK, "Mode set to S"),
                "B" | "C" | "Z" => Reply::new(
                    ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                    "Only MODE S is supported",
                ),
                _ => Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Unknown mode"),
            }),
            Verb::Stru => self.reply(match argument.to_ascii_uppercase().as_str() {
                "F" => Reply::new(ReplyCode::OK, "Structure set to F"),
                "R" | "P" => Reply::new(
                    ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                    "Only STRU F is supported",
                ),
                _ => Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Unknown structure"),
            }),
            // RFC 959 §4.1.3: ALLO "should be treated as a NOOP" where storage needs no
            // reservation; 202 says exactly that. An account with a quota gets the size
            // checked at the next upload instead (200).
            Verb::Allo => self.allocate(&argument),
            Verb::Rest => self.restart(&argument),
            Verb::Retr => self.retrieve(&argument),
            Verb::Stor => self.store(&argument, Verb::Stor),
            Verb::Appe => self.store(&argument, Verb::Appe),
            Verb::Stou => self.store_unique(),
            Verb::List => self.list(&argument, ListFormat::Long, Verb::List),
            Verb::Nlst => self.list(&argument, ListFormat::NamesOnly, Verb::Nlst),
            Verb::Mlsd => self.list(&argument, ListFormat::Machine, Verb::Mlsd),
            Verb::Mlst => {
                let target = if argument.is_empty() { "." } else { &argument };
                self.lookup(target, StorageRequest::Metadata, |c| {
                    InFlight::MachineListSingle { client_path: c }
                })
            }
            Verb::Pasv => self.passive(false),
            Verb::Epsv => self.extended_passive(&argument),
            Verb::Port => {
                self.active(host_port::parse_port_argument(&argument).map(SocketAddr::V4))
            }
            Verb::Eprt => self.active(host_port::parse_eprt_argument(&argument)),
            Verb::Abor => {
                // No transfer runs (ABOR during one is handled by handle_during_transfer).
                self.close_passive();
                self.reply(Reply::new(ReplyCode::CLOSING_DATA, "No transfer to abort"));
            }
            Verb::Smnt => self.reply(Reply::new(ReplyCode::NOT_IMPLEMENTED, "SMNT not supported")),
            Verb::Auth | Verb::Pbsz | Verb::Prot | Verb::Ccc if !self.tls_available => {
                self.reply(Reply::new(
                    ReplyCode::NOT_IMPLEMENTED,
                    "TLS is not configured on this listener",
                ))
            }
            Verb::Auth => self.auth(&argument),
            Verb::Pbsz => self.protection_buffer_size(&argument),
            Verb::Prot => self.protection_level(&argument),
            Verb::Ccc => self.clear_command_channel(),
        }
    }

    fn handle_during_transfer(&mut self, command: Command) {
        match command.verb {
            Verb::Abor => {
                if let Some(InFlight::Transfer {
                    abort_requested, ..
                }) = &mut self.in_flight
                    && !*abort_requested
                {
                    *abort_requested = true;
                    self.actions.push_back(Action::AbortTransfer);
                }
            }
            Verb::Stat => self.reply(Reply::multiline(
                ReplyCode::SYSTEM_STATUS,
                [
                    "Transfer in progress".to_owned(),
                    "End of status".to_owned(),
                ],
            )),
            _ => {}
        }
    }

    // ---- access control (RFC 959 §4.1.1) ----

    fn user(&mut self, username: String) {
        self.cwd = VirtualPath::root();
        let require = self.config.tls.require_control;
        // The requirements bind listeners that offer TLS; on a plain listener nobody could
        // satisfy them.
        if self.tls_available && !self.control_tls && require.applies_to(&username) {
            let who = match require {
                TlsRequirement::All => "every login",
                _ => "this account",
            };
            let text = format!(
                "TLS required for {who}: send AUTH TLS first (tls.require = {})",
                require.as_str()
            );
            self.reply(Reply::new(ReplyCode::NOT_LOGGED_IN, text.clone()));
            self.login = Login::RefusedWithoutTls { text };
            return;
        }
        if self.config.tls.certificate_user == CertificateUser::CommonName
            && let Some(name) = &self.tls_client_name
            && *name != username
        {
            let text = format!("Your client certificate is for user {name}");
            self.login = Login::AwaitingUser;
            self.reply(Reply::new(ReplyCode::NOT_LOGGED_IN, text));
            return;
        }
        self.login = Login::AwaitingPassword { username };
        self.reply(Reply::new(ReplyCode::NEED_PASSWORD, "Password required"));
    }

    fn pass(&mut self, password: String) {
        if let Login::RefusedWithoutTls { text } = &self.login {
            let reply = Reply::new(ReplyCode::NOT_LOGGED_IN, text.clone());
            self.reply(reply);
            return;
        }
        let Login::AwaitingPassword { username } = &self.login else {
            let text = match self.login {
                Login::LoggedIn(_) => "Already logged in",
                _ => "Login with USER first",
            };
            self.reply(Reply::new(ReplyCode::BAD_SEQUENCE, text));
            return;
        };
        let request = LoginRequest {
            username: username.clone(),
            password,
        };
        self.start(InFlight::Login, Action::Authenticate(request));
    }

    fn finish_login(&mut self, result: Result<User, LoginFailure>) {
        match result {
            Ok(user) if !user.policy.allows_address(self.peer.ip()) => {
                // The password was right, so this is not a failed login; the account is
                // simply not usable from here (`allow_from`).
                self.login = Login::AwaitingUser;
                self.reply(Reply::new(
                    ReplyCode::NOT_LOGGED_IN,
                    format!(
                        "Login as {} not allowed from {}",
                        user.name,
                        self.peer.ip().to_canonical()
                    ),
                ));
            }
            Ok(user) => {
                self.failed_logins = 0;
                self.login_deadline = None;
                self.cwd = VirtualPath::root();
                let text = if user.read_only {
                    format!("User {} logged in (read-only)", user.name)
                } else {
                    format!("User {} logged in", user.name)
                };
                self.login = Login::LoggedIn(user);
                self.reply(Reply::new(ReplyCode::LOGGED_IN, text));
            }
            Err(LoginFailure::Rejected) => {
                self.login = Login::AwaitingUser;
                self.failed_logins += 1;
                if self.failed_logins >= self.config.max_failed_logins {
                    self.reply(Reply::new(ReplyCode::NOT_LOGGED_IN, "Login incorrect"));
                    self.reply(Reply::new(
                        ReplyCode::SERVICE_UNAVAILABLE,
                        "Too many failed logins, closing connection",
                    ));
                    self.close();
                } else {
                    self.reply(Reply::new(ReplyCode::NOT_LOGGED_IN, "Login incorrect"));
                }
            }
            Err(LoginFailure::SessionLimit) => {
                self.login = Login::AwaitingUser;
                self.reply(Reply::new(
                    ReplyCode::NOT_LOGGED_IN,
                    "Too many sessions for this account (max_sessions), try later",
                ));
            }
            Err(LoginFailure::Unavailable) => {
                self.reply(Reply::new(
                    ReplyCode::SERVICE_UNAVAILABLE,
                    "Authentication service unavailable, try later",
                ));
                self.close();
            }
            // RFC 959 §4.2: 421 is the reply of a service closing the control connection.
            Err(LoginFailure::Banned) => {
                self.reply(Reply::new(
                    ReplyCode::SERVICE_UNAVAILABLE,
                    "Too many failures from your address, closing connection",
                ));
                self.close();
            }
        }
    }

    fn reinitialize(&mut self) {
        self.login = Login::AwaitingUser;
        self.cwd = VirtualPath::root();
        self.transfer_type = TransferType::Binary;
        self.restart_offset = 0;
        self.allocated_size = None;
        self.extended_passive_only = false;
        self.mlst_facts = MlstFacts::default();
        self.close_passive();
        self.reply(Reply::new(
            ReplyCode::SERVICE_READY,
            "Reinitialized, login with USER",
        ));
    }

    fn user_account(&self) -> Option<&User> {
        match &self.login {
            Login::LoggedIn(user) => Some(user),
            _ => None,
        }
    }

    fn is_read_only(&self) -> bool {
        self.user_account().is_none_or(|user| user.read_only)
    }

    /// Resolves a client path against the working directory and maps it into the storage
    /// namespace under the user's home. Returns (the path the client sees, the storage path).
    fn resolve(&self, argument: &str) -> Result<(VirtualPath, VirtualPath), Reply> {
        let client = self.cwd.resolve(argument).map_err(|error| error.reply())?;
        let home = self
            .user_account()
            .map_or_else(VirtualPath::root, |user| user.home.clone());
        let storage = home.join(&client);
        Ok((client, storage))
    }

    /// [`resolve`](Self::resolve) for a command that creates the name (STOR, APPE, MKD,
    /// RNTO): a name holding CR or LF is refused with 553 (RFC 959 §4.2.1, "File name not
    /// allowed"), since a listing could not show it without breaking its line into forged
    /// entries (see [`listing::is_listable_name`]).
    fn resolve_new_name(&self, argument: &str) -> Result<(VirtualPath, VirtualPath), Reply> {
        let (client, storage) = self.resolve(argument)?;
        if !client.file_name().is_none_or(listing::is_listable_name) {
            return Err(Reply::new(
                ReplyCode::NAME_NOT_ALLOWED,
                "File name not allowed (line break)",
            ));
        }
        Ok((client, storage))
    }

    fn refuse_if_read_only(&mut self) -> bool {
        if self.is_read_only() {
            self.reply(Reply::new(
                ReplyCode::FILE_UNAVAILABLE,
                "Permission denied (read-only)",
            ));
            return true;
        }
        false
    }

    // ---- information (RFC 959 §4.1.3, RFC 2389) ----

    fn features(&self) -> Reply {
        let mut lines = vec!["Extensions supported:".to_owned()];
        for verb in Verb::ALL {
            if let Some(feature) = verb.spec().feature {
                lines.push(feature.to_owned());
            }
        }
        lines.push(self.mlst_facts.feature_line());
        if self.tls_available {
            // RFC 4217 §6.
            lines.push("AUTH TLS".to_owned());
            lines.push("PBSZ".to_owned());
            lines.push("PROT".to_owned());
            if self.config.tls.allow_ccc {
                lines.push("CCC".to_owned());
            }
        }
        lines.push("TVFS".to_owned());
        lines.push("UTF8".to_owned());
        lines.push("End".to_owned());
        Reply::multiline(ReplyCode::SYSTEM_STATUS, lines)
    }

    fn options(&mut self, argument: &str) {
        let (option, value) = argument.split_once(' ').unwrap_or((argument, ""));
        let reply = match option.to_ascii_uppercase().as_str() {
            // RFC 2640 §3.1: paths are UTF-8 always; accept the switch.
            "UTF8" | "UTF-8" => Reply::new(ReplyCode::OK, "UTF8 mode is always on"),
            "MLST" => {
                let (facts, echoed) = MlstFacts::select(value.trim());
                self.mlst_facts = facts;
                Reply::new(ReplyCode::OK, format!("MLST OPTS {echoed}"))
            }
            _ => Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Option not understood"),
        };
        self.reply(reply);
    }

    fn status(&mut self, argument: &str) {
        if argument.is_empty() {
            let user = self
                .user_name()
                .map_or("(not logged in)".to_owned(), str::to_owned);
            let data = match self.data_endpoint {
                None => "No data connection".to_owned(),
                Some(DataEndpoint::Passive) => "Passive listener open".to_owned(),
                Some(DataEndpoint::Active(target)) => format!("Active mode to {target}"),
            };
            let lines = [
                "ferroftp status:".to_owned(),
                format!("Connected from {}", self.peer.ip()),
                format!("Logged in as {user}"),
                format!(
                    "TYPE: {}, STRUcture: File, MODE: Stream",
                    match self.transfer_type {
                        TransferType::Ascii => "ASCII",
                        TransferType::Binary => "BINARY",
                    }
                ),
                data,
                self.limits_line(),
                match (self.control_tls, self.protect_data) {
                    (false, false) if !self.tls_available => "TLS: not available".to_owned(),
                    (control, data) => format!(
                        "TLS: control {}, data {}",
                        if control { "protected" } else { "clear" },
                        if data {
                            "protected (PROT P)"
                        } else {
                            "clear (PROT C)"
                        }
                    ),
                },
                "End of status".to_owned(),
            ];
            self.reply(Reply::multiline(ReplyCode::SYSTEM_STATUS, lines));
            return;
        }
        if !matches!(self.login, Login::LoggedIn(_)) {
            self.reply(Reply::new(
                ReplyCode::NOT_LOGGED_IN,
                "Please login with USER and PASS",
            ));
            return;
        }
        let argument = strip_list_options(argument);
        match self.resolve(argument) {
            Ok((client, storage)) => self.start(
                InFlight::StatListing {
                    client_path: client.to_string(),
                },
                Action::Storage(StorageRequest::StatListing(storage)),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    fn site(&mut self, argument: &str) {
        match site::parse(argument) {
            Ok(site::SiteCommand::Help) => {
                let mut lines = vec!["SITE commands recognized:".to_owned()];
                if self.config.allow_chmod {
                    lines.push(site::CHMOD_SYNTAX.to_owned());
                }
                lines.push("HELP".to_owned());
                lines.push("QUOTA".to_owned());
                lines.push("End".to_owned());
                self.reply(Reply::multiline(ReplyCode::HELP, lines));
            }
            Ok(site::SiteCommand::Chmod { mode, path }) => self.change_mode(mode, path),
            Ok(site::SiteCommand::Quota) => {
                self.start(
                    InFlight::QuotaReport,
                    Action::Storage(StorageRequest::QuotaUsage),
                );
            }
            Err(reply) => self.reply(reply),
        }
    }

    /// ALLO (RFC 959 §4.1.3): `ALLO n [R m]`. The size is kept for the next upload, whose
    /// quota check uses it before any byte arrives.
    fn allocate(&mut self, argument: &str) {
        let size = argument
            .split_whitespace()
            .next()
            .and_then(|size| size.parse::<u64>().ok());
        let Some(size) = size else {
            self.reply(Reply::new(
                ReplyCode::SYNTAX_ERROR_ARGS,
                "Syntax: ALLO <size in bytes> [R <record size>]",
            ));
            return;
        };
        let has_quota = self
            .user_account()
            .is_some_and(|user| user.policy.quota_bytes.is_some());
        if has_quota {
            self.allocated_size = Some(size);
            self.reply(Reply::new(
                ReplyCode::OK,
                format!("ALLO {size} bytes noted for the next upload"),
            ));
        } else {
            self.reply(Reply::new(ReplyCode::SUPERFLUOUS, "ALLO not needed"));
        }
    }

    /// The STAT line that tells the user their limits (usage: SITE QUOTA).
    fn limits_line(&self) -> String {
        let Some(user) = self.user_account() else {
            return "Limits: none until login".to_owned();
        };
        let policy = &user.policy;
        let rate = |rate: Option<u64>| rate.map_or("unlimited".to_owned(), format_byte_rate);
        let quota = match (policy.quota_bytes, policy.quota_files) {
            (None, None) => "none".to_owned(),
            (bytes, files) => format!(
                "{}, {} files (usage: SITE QUOTA)",
                bytes.map_or("unlimited bytes".to_owned(), format_byte_size),
                files.map_or("unlimited".to_owned(), |files| files.to_string()),
            ),
        };
        format!(
            "Limits: download {}, upload {}, quota {quota}",
            rate(policy.download_rate),
            rate(policy.upload_rate),
        )
    }

    /// The SITE QUOTA reply.
    fn quota_report(&self, usage: Option<QuotaUsage>) -> Reply {
        let policy = self
            .user_account()
            .map(|user| user.policy.clone())
            .unwrap_or_default();
        let of = |used: u64, limit: Option<u64>, format: fn(u64) -> String| match limit {
            Some(limit) => format!("{} of {}", format(used), format(limit)),
            None => format!("{} (no limit)", format(used)),
        };
        let mut lines = vec!["Quota:".to_owned()];
        match usage {
            Some(usage) => {
                lines.push(format!(
                    "Bytes: {}",
                    of(usage.bytes, policy.quota_bytes, |bytes| format!("{bytes}"))
                ));
                lines.push(format!(
                    "Files: {}",
                    of(usage.files, policy.quota_files, |files| format!("{files}"))
                ));
            }
            None => lines.push("Usage: being counted, ask again shortly".to_owned()),
        }
        lines.push(self.limits_line());
        lines.push("End".to_owned());
        Reply::multiline(ReplyCode::OK, lines)
    }

    /// SITE CHMOD: the storage narrows the mode to its mask; what is refused here is what
    /// no mask could make acceptable.
    fn change_mode(&mut self, mode: u32, argument: &str) {
        if !self.config.allow_chmod {
            // RFC 959 §4.2: 504, command not implemented for that parameter.
            self.reply(Reply::new(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "SITE CHMOD not supported by this storage",
            ));
            return;
        }
        if self.refuse_if_read_only() {
            return;
        }
        if mode & site::SPECIAL_MODE_BITS != 0 {
            self.reply(Reply::new(
                ReplyCode::FILE_UNAVAILABLE,
                "Permission denied: setuid, setgid and sticky bits cannot be set",
            ));
            return;
        }
        match self.resolve(argument) {
            Ok((client, storage)) => self.start(
                InFlight::Simple {
                    client_path: client.to_string(),
                    success: Reply::new(ReplyCode::OK, "SITE CHMOD command successful"),
                },
                Action::Storage(StorageRequest::SetMode {
                    path: storage,
                    mode,
                }),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    // ---- navigation and file actions ----

    fn change_directory(&mut self, argument: &str) {
        match self.resolve(argument) {
            Ok((client, storage)) => self.start(
                InFlight::ChangeDirectory {
                    client_path: client.to_string(),
                    target: client,
                },
                Action::Storage(StorageRequest::Metadata(storage)),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    fn make_directory(&mut self, argument: &str) {
        if self.refuse_if_read_only() {
            return;
        }
        match self.resolve_new_name(argument) {
            Ok((client, storage)) => {
                let success = Reply::new(
                    ReplyCode::PATH_CREATED,
                    format!("{} created", quote_path(client.as_str())),
                );
                self.start(
                    InFlight::Simple {
                        client_path: client.to_string(),
                        success,
                    },
                    Action::Storage(StorageRequest::MakeDir(storage)),
                );
            }
            Err(reply) => self.reply(reply),
        }
    }

    /// A write operation on one path answered 250 on success.
    fn modify(
        &mut self,
        argument: &str,
        request: fn(VirtualPath) -> StorageRequest,
        success_text: &str,
    ) {
        if self.refuse_if_read_only() {
            return;
        }
        match self.resolve(argument) {
            Ok((client, storage)) => self.start(
                InFlight::Simple {
                    client_path: client.to_string(),
                    success: Reply::new(ReplyCode::FILE_ACTION_OK, success_text),
                },
                Action::Storage(request(storage)),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    /// A read-only storage query on one path.
    fn lookup(
        &mut self,
        argument: &str,
        request: impl FnOnce(VirtualPath) -> StorageRequest,
        in_flight: impl FnOnce(String) -> InFlight,
    ) {
        match self.resolve(argument) {
            Ok((client, storage)) => self.start(
                in_flight(client.to_string()),
                Action::Storage(request(storage)),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    fn rename_from(&mut self, argument: &str) {
        if self.refuse_if_read_only() {
            return;
        }
        match self.resolve(argument) {
            Ok((client, storage)) => self.start(
                InFlight::RenameFrom {
                    client_path: client.to_string(),
                    storage_path: storage.clone(),
                },
                Action::Storage(StorageRequest::Metadata(storage)),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    fn rename_to(&mut self, argument: &str) {
        let Some(from) = self.rename_from.take() else {
            self.reply(Reply::new(ReplyCode::BAD_SEQUENCE, "RNFR required first"));
            return;
        };
        match self.resolve_new_name(argument) {
            Ok((client, to)) => self.start(
                InFlight::Simple {
                    client_path: client.to_string(),
                    success: Reply::new(ReplyCode::FILE_ACTION_OK, "Rename successful"),
                },
                Action::Storage(StorageRequest::Rename { from, to }),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    fn set_modification_time(&mut self, argument: &str) {
        if self.refuse_if_read_only() {
            return;
        }
        // RFC draft-somers-ftp-mfxx: MFMT <time-val> <path>.
        let Some((time_text, path)) = argument.split_once(' ') else {
            self.reply(Reply::new(
                ReplyCode::SYNTAX_ERROR_ARGS,
                "Syntax: MFMT YYYYMMDDHHMMSS path",
            ));
            return;
        };
        let Some(time) = parse_time_val(time_text) else {
            self.reply(Reply::new(
                ReplyCode::SYNTAX_ERROR_ARGS,
                "Invalid time value",
            ));
            return;
        };
        match self.resolve(path) {
            Ok((client, storage)) => {
                let success = Reply::new(
                    ReplyCode::FILE_STATUS,
                    format!("Modify={}; {}", format_time_val(time), client),
                );
                self.start(
                    InFlight::Simple {
                        client_path: client.to_string(),
                        success,
                    },
                    Action::Storage(StorageRequest::SetModified {
                        path: storage,
                        time,
                    }),
                );
            }
            Err(reply) => self.reply(reply),
        }
    }

    fn finish_storage(
        &mut self,
        in_flight: InFlight,
        result: Result<StorageResult, StorageErrorKind>,
    ) {
        let result = match result {
            Ok(result) => result,
            Err(kind) => {
                let client_path = match &in_flight {
                    InFlight::Simple { client_path, .. }
                    | InFlight::ChangeDirectory { client_path, .. }
                    | InFlight::RenameFrom { client_path, .. }
                    | InFlight::Size { client_path }
                    | InFlight::ModificationTime { client_path }
                    | InFlight::MachineListSingle { client_path }
                    | InFlight::StatListing { client_path } => client_path.clone(),
                    _ => String::new(),
                };
                self.reply(kind.reply(&client_path));
                return;
            }
        };
        let reply = match (in_flight, result) {
            (InFlight::Simple { success, .. }, _) => success,
            (
                InFlight::ChangeDirectory {
                    client_path,
                    target,
                },
                StorageResult::Metadata(meta),
            ) => {
                if meta.is_dir() {
                    self.cwd = target;
                    Reply::new(ReplyCode::FILE_ACTION_OK, "Directory changed")
                } else {
                    StorageErrorKind::NotADirectory.reply(&client_path)
                }
            }
            (InFlight::RenameFrom { storage_path, .. }, StorageResult::Metadata(_)) => {
                self.rename_from = Some(storage_path);
                Reply::new(ReplyCode::PENDING_FURTHER_INFO, "Ready for RNTO")
            }
            (InFlight::QuotaReport, StorageResult::QuotaUsage(usage)) => self.quota_report(usage),
            (InFlight::Size { .. }, StorageResult::Size(size)) => {
                Reply::new(ReplyCode::FILE_STATUS, size.to_string())
            }
            (InFlight::ModificationTime { client_path }, StorageResult::Metadata(meta)) => {
                match meta.modified {
                    Some(time) if !meta.is_dir() => {
                        Reply::new(ReplyCode::FILE_STATUS, format_time_val(time))
                    }
                    Some(_) => StorageErrorKind::IsADirectory.reply(&client_path),
                    None => Reply::new(ReplyCode::FILE_UNAVAILABLE, "Time not available"),
                }
            }
            (InFlight::MachineListSingle { client_path }, StorageResult::Metadata(meta)) => {
                // RFC 3659 §7.2: the facts line is indented by one space inside a 250 reply.
                let mut line = String::new();
                listing::format_facts(&meta, self.mlst_facts, !self.is_read_only(), &mut line);
                line.push_str(&client_path);
                Reply::multiline(
                    ReplyCode::FILE_ACTION_OK,
                    [format!("Listing {client_path}"), line, "End".to_owned()],
                )
            }
            (InFlight::StatListing { client_path }, StorageResult::Entries(entries)) => {
                let mut out = Vec::new();
                let now = SystemTime::now();
                for entry in &entries {
                    listing::format_long(entry, now, &mut out);
                }
                let text = String::from_utf8_lossy(&out);
                let mut lines = vec![format!("Status of {client_path}:")];
                lines.extend(
                    text.split("\r\n")
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned),
                );
                lines.push("End of status".to_owned());
                Reply::multiline(ReplyCode::FILE_STATUS, lines)
            }
            (in_flight, result) => {
                debug_assert!(
                    false,
                    "storage result {result:?} does not match {in_flight:?}"
                );
                Reply::new(ReplyCode::LOCAL_ERROR, "Internal error")
            }
        };
        self.reply(reply);
    }

    // ---- transfer parameters ----

    fn set_type(&mut self, argument: &str) {
        let upper = argument.to_ascii_uppercase();
        let mut words = upper.split_whitespace();
        let reply = match (words.next(), words.next()) {
            (Some("A"), None | Some("N")) => {
                self.transfer_type = TransferType::Ascii;
                Reply::new(ReplyCode::OK, "Type set to A")
            }
            (Some("I"), None) | (Some("L"), Some("8")) => {
                self.transfer_type = TransferType::Binary;
                Reply::new(ReplyCode::OK, "Type set to I")
            }
            (Some("A" | "E"), Some(_)) | (Some("E"), None) | (Some("L"), _) => Reply::new(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Type not supported",
            ),
            _ => Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Unknown type"),
        };
        self.reply(reply);
    }

    fn restart(&mut self, argument: &str) {
        match argument.trim().parse::<u64>() {
            Ok(offset) => {
                self.restart_offset = offset;
                self.reply(Reply::new(
                    ReplyCode::PENDING_FURTHER_INFO,
                    format!("Restarting at {offset}. Send STOR or RETR"),
                ));
            }
            Err(_) => self.reply(Reply::new(
                ReplyCode::SYNTAX_ERROR_ARGS,
                "Invalid restart offset",
            )),
        }
    }

    fn passive(&mut self, extended: bool) {
        if self.extended_passive_only && !extended {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "EPSV ALL in effect, use EPSV",
            ));
            return;
        }
        self.start(InFlight::Passive { extended }, Action::OpenPassive);
    }

    fn extended_passive(&mut self, argument: &str) {
        match argument.trim().to_ascii_uppercase().as_str() {
            "" => self.passive(true),
            // RFC 2428 §4: after EPSV ALL only EPSV may set up data connections.
            "ALL" => {
                self.extended_passive_only = true;
                self.reply(Reply::new(ReplyCode::OK, "EPSV ALL accepted"));
            }
            // RFC 2428 §3: a network protocol number (as in RFC 2428 §2, 1: IPv4, 2: IPv6)
            // the server does not support for this connection gets 522 naming those it does.
            // The data connection uses the control connection's address family.
            family if !family.is_empty() && family.bytes().all(|b| b.is_ascii_digit()) => {
                let peer_is_v6 = self.peer.ip().to_canonical().is_ipv6();
                let supported = if peer_is_v6 { "2" } else { "1" };
                if family.trim_start_matches('0') == supported {
                    self.passive(true);
                } else {
                    self.reply(Reply::new(
                        ReplyCode::PROTOCOL_NOT_SUPPORTED,
                        format!("Network protocol not supported, use ({supported})"),
                    ));
                }
            }
            _ => self.reply(Reply::new(
                ReplyCode::SYNTAX_ERROR_ARGS,
                "Unknown EPSV argument",
            )),
        }
    }

    fn finish_passive(&mut self, extended: bool, result: Result<SocketAddr, PassiveFailure>) {
        let announced = match result {
            Ok(address) => address,
            Err(PassiveFailure::Exhausted) => {
                self.data_endpoint = None;
                self.reply(Reply::new(
                    ReplyCode::CANT_OPEN_DATA,
                    "No passive port free in the configured range, try again later",
                ));
                return;
            }
            Err(PassiveFailure::Other(text)) => {
                self.data_endpoint = None;
                self.reply(Reply::new(ReplyCode::CANT_OPEN_DATA, text));
                return;
            }
        };
        let reply = if extended {
            Reply::new(
                ReplyCode::ENTERING_EXTENDED_PASSIVE,
                host_port::format_epsv_text(announced.port()),
            )
        } else {
            match announced {
                SocketAddr::V4(v4) => {
                    Reply::new(ReplyCode::ENTERING_PASSIVE, host_port::format_pasv_text(v4))
                }
                SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                    Some(v4) => Reply::new(
                        ReplyCode::ENTERING_PASSIVE,
                        host_port::format_pasv_text(std::net::SocketAddrV4::new(v4, v6.port())),
                    ),
                    None => {
                        self.actions.push_back(Action::ClosePassive);
                        self.data_endpoint = None;
                        self.reply(Reply::new(
                            ReplyCode::CANT_OPEN_DATA,
                            "PASV cannot announce an IPv6 address; use EPSV",
                        ));
                        return;
                    }
                },
            }
        };
        self.data_endpoint = Some(DataEndpoint::Passive);
        self.reply(reply);
    }

    /// PORT and EPRT (RFC 959 §4.1.2, RFC 2428 §2), validated before any connection attempt
    /// (RFC 2577 §3): the target must be the client's own address and an unprivileged port.
    fn active(&mut self, target: Result<SocketAddr, HostPortError>) {
        if self.extended_passive_only {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "EPSV ALL in effect, use EPSV",
            ));
            return;
        }
        if !self.config.allow_active {
            self.reply(Reply::new(
                ReplyCode::NOT_IMPLEMENTED,
                "Active mode is disabled, use PASV",
            ));
            return;
        }
        let target = match target {
            Ok(target) => target,
            Err(error) => {
                self.reply(error.reply());
                return;
            }
        };
        let peer_ip = self.peer.ip().to_canonical();
        let mut target_ip = target.ip().to_canonical();
        let mut note = "";
        if target_ip != peer_ip {
            if self.config.active_nat_fallback
                && is_private_address(target_ip)
                && !is_private_address(peer_ip)
                && target_ip.is_ipv4() == peer_ip.is_ipv4()
            {
                // The client announced its private address from behind a NAT; the only
                // address that can reach it is the one its connection comes from.
                target_ip = peer_ip;
                note = " (your private address replaced by the one you connect from)";
            } else {
                self.refused_active_targets += 1;
                self.reply(Reply::new(
                    ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                    format!(
                        "Refusing to connect to {target_ip}: only your own address {peer_ip} is allowed"
                    ),
                ));
                return;
            }
        }
        if target.port() < LOWEST_ACTIVE_PORT {
            self.refused_active_targets += 1;
            self.reply(Reply::new(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                format!("Refusing privileged port {}", target.port()),
            ));
            return;
        }
        self.close_passive();
        self.data_endpoint = Some(DataEndpoint::Active(SocketAddr::new(
            target_ip,
            target.port(),
        )));
        // Echo the target so a client can see whether a middlebox rewrote its command.
        self.reply(Reply::new(
            ReplyCode::OK,
            format!("Active mode to {} port {}{note}", target_ip, target.port()),
        ));
    }

    fn close_passive(&mut self) {
        if self.data_endpoint == Some(DataEndpoint::Passive) {
            self.actions.push_back(Action::ClosePassive);
        }
        self.data_endpoint = None;
    }

    // ---- transfers ----

    fn take_endpoint(&mut self) -> Option<DataEndpoint> {
        let endpoint = self.data_endpoint.take();
        if endpoint.is_none() {
            self.reply(Reply::new(
                ReplyCode::CANT_OPEN_DATA,
                "Use PORT, EPRT, PASV or EPSV first",
            ));
        }
        endpoint
    }

    fn start_transfer(&mut self, kind: TransferKind, client_path: String, verb: Verb) {
        let protection = if self.protect_data {
            DataProtection::Private {
                require_resumption: self.data_resumption_required(),
            }
        } else if self.data_tls_required() {
            // RFC 4217 §9; the data endpoint stays, so PROT P and the command again work.
            self.reply(Reply::new(
                ReplyCode::PROT_REFUSED,
                format!(
                    "Data connections must be protected: send PBSZ 0 and PROT P (tls.require_data = {})",
                    self.config.tls.require_data.as_str()
                ),
            ));
            return;
        } else {
            DataProtection::Clear
        };
        let Some(endpoint) = self.take_endpoint() else {
            return;
        };
        // ALLO announces the size of the next upload only.
        let allocated_size = self.allocated_size.take();
        let request = TransferRequest {
            allocated_size: allocated_size.filter(|_| matches!(kind, TransferKind::Store { .. })),
            kind,
            endpoint,
            ascii: self.transfer_type == TransferType::Ascii,
            protection,
        };
        self.start(
            InFlight::Transfer {
                client_path,
                started: false,
                abort_requested: false,
                verb,
            },
            Action::Transfer(request),
        );
    }

    fn retrieve(&mut self, argument: &str) {
        let offset = std::mem::take(&mut self.restart_offset);
        match self.resolve(argument) {
            Ok((client, path)) => self.start_transfer(
                TransferKind::Retrieve { path, offset },
                client.to_string(),
                Verb::Retr,
            ),
            Err(reply) => self.reply(reply),
        }
    }

    fn store(&mut self, argument: &str, verb: Verb) {
        let offset = std::mem::take(&mut self.restart_offset);
        if self.refuse_if_read_only() {
            return;
        }
        let mode = match (verb, offset) {
            (Verb::Appe, _) => WriteMode::Append,
            (_, 0) => WriteMode::Create,
            (_, offset) => WriteMode::ResumeAt(offset),
        };
        if mode != WriteMode::Create && !self.config.allow_resume_upload {
            self.reply(Reply::new(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "This storage cannot append or resume uploads",
            ));
            return;
        }
        match self.resolve_new_name(argument) {
            Ok((client, path)) => self.start_transfer(
                TransferKind::Store {
                    target: UploadTarget::Path(path),
                    mode,
                },
                client.to_string(),
                verb,
            ),
            Err(reply) => self.reply(reply),
        }
    }

    fn store_unique(&mut self) {
        self.restart_offset = 0;
        if self.refuse_if_read_only() {
            return;
        }
        match self.resolve(".") {
            Ok((client, directory)) => self.start_transfer(
                TransferKind::Store {
                    target: UploadTarget::UniqueIn(directory),
                    mode: WriteMode::Create,
                },
                client.to_string(),
                Verb::Stou,
            ),
            Err(reply) => self.reply(reply),
        }
    }

    fn list(&mut self, argument: &str, format: ListFormat, verb: Verb) {
        self.restart_offset = 0;
        let argument = if format == ListFormat::Machine {
            argument
        } else {
            strip_list_options(argument)
        };
        let argument = if argument.is_empty() { "." } else { argument };
        let writable = !self.is_read_only();
        match self.resolve(argument) {
            Ok((client, path)) => self.start_transfer(
                TransferKind::List {
                    path,
                    format,
                    facts: self.mlst_facts,
                    writable,
                },
                client.to_string(),
                verb,
            ),
            Err(reply) => self.reply(reply),
        }
    }

    fn opening_reply(
        &self,
        verb: Verb,
        client_path: &str,
        size: Option<u64>,
        stored_as: Option<VirtualPath>,
    ) -> Reply {
        let mode = match self.transfer_type {
            TransferType::Ascii => "ASCII",
            TransferType::Binary => "BINARY",
        };
        let text = match (verb, size, stored_as) {
            // RFC 1123 §4.1.2.9: STOU's preliminary reply names the file.
            (Verb::Stou, _, Some(stored)) => {
                let home = self
                    .user_account()
                    .map_or_else(VirtualPath::root, |u| u.home.clone());
                let shown = stored.strip_base(&home).unwrap_or(stored);
                format!("FILE: {}", shown.file_name().unwrap_or(shown.as_str()))
            }
            (Verb::List | Verb::Nlst | Verb::Mlsd, _, _) => {
                "Here comes the directory listing".to_owned()
            }
            (_, Some(size), _) => {
                format!("Opening {mode} mode data connection for {client_path} ({size} bytes)")
            }
            _ => format!("Opening {mode} mode data connection for {client_path}"),
        };
        Reply::new(ReplyCode::OPENING_DATA, text)
    }

    fn finish_transfer(
        &mut self,
        started: bool,
        abort_requested: bool,
        result: Result<TransferSummary, TransferFailure>,
    ) {
        match result {
            Ok(_) if abort_requested && !self.stopping => {
                // RFC 959 §4.1.3 ABOR: the transfer had completed; just 226.
                self.reply(Reply::new(
                    ReplyCode::CLOSING_DATA,
                    "Transfer complete, ABOR ignored",
                ));
            }
            Ok(_) => self.reply(Reply::new(ReplyCode::CLOSING_DATA, "Transfer complete")),
            Err(TransferFailure::Aborted) if self.stopping => {
                // The server aborted it at the end of the shutdown grace period; no ABOR to
                // answer. The 421 follows (drain_queue).
                self.reply(Reply::new(
                    ReplyCode::TRANSFER_ABORTED,
                    "Transfer aborted: the server is shutting down",
                ));
            }
            Err(TransferFailure::Aborted) => {
                // RFC 959 §4.1.3 ABOR: 426 for the aborted command, then 226 for ABOR.
                self.reply(Reply::new(ReplyCode::TRANSFER_ABORTED, "Transfer aborted"));
                self.reply(Reply::new(ReplyCode::CLOSING_DATA, "ABOR successful"));
            }
            Err(TransferFailure::DataConnection(text)) => {
                self.reply(Reply::new(
                    ReplyCode::CANT_OPEN_DATA,
                    format!("Can't open data connection: {text}"),
                ));
            }
            Err(TransferFailure::DataTls(DataTlsFailure::NotResumed)) => {
                self.reply(Reply::new(
                    ReplyCode::PROTOCOL_NOT_SUPPORTED,
                    "TLS session reuse required: the data connection did not resume a TLS \
                     session of this login (tls.require_reuse; a client that cannot resume \
                     needs tls.reuse_exempt_users or tls.reuse_exempt_clients)",
                ));
            }
            Err(TransferFailure::DataTls(DataTlsFailure::Handshake(text))) => {
                self.reply(Reply::new(
                    ReplyCode::CANT_OPEN_DATA,
                    format!("TLS handshake on the data connection failed: {text}"),
                ));
            }
            Err(TransferFailure::ConnectionLost(text)) => {
                self.reply(Reply::new(
                    ReplyCode::TRANSFER_ABORTED,
                    format!("Data connection lost: {text}"),
                ));
            }
            Err(TransferFailure::Storage(kind)) if started => {
                let code = match kind {
                    StorageErrorKind::InsufficientSpace | StorageErrorKind::QuotaExceeded => {
                        ReplyCode::EXCEEDED_STORAGE
                    }
                    _ => ReplyCode::LOCAL_ERROR,
                };
                self.reply(Reply::new(
                    code,
                    format!("Transfer failed: {}", kind.describe()),
                ));
            }
            Err(TransferFailure::Storage(kind)) => {
                let reply = kind.reply("");
                let text = kind.describe();
                self.reply(Reply::new(reply.code, text));
            }
        }
    }
}

impl Session {
    // ---- FTPS (RFC 4217) ----

    /// AUTH TLS (and AUTH SSL, its historical alias).
    fn auth(&mut self, argument: &str) {
        let mechanism = argument.trim().to_ascii_uppercase();
        if !matches!(mechanism.as_str(), "TLS" | "SSL" | "TLS-C") {
            self.reply(Reply::new(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Unknown security mechanism, use AUTH TLS",
            ));
            return;
        }
        if self.control_tls {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "The control connection is already protected",
            ));
            return;
        }
        if matches!(self.login, Login::LoggedIn(_)) {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "AUTH TLS must come before login",
            ));
            return;
        }
        // A USER sent in plain text is forgotten: the login starts again under TLS.
        self.login = Login::AwaitingUser;
        self.queued.clear();
        self.reply(Reply::new(
            ReplyCode::AUTH_OK,
            format!("AUTH {mechanism} ok, proceed with the TLS handshake"),
        ));
        self.start(InFlight::TlsHandshake, Action::UpgradeToTls);
    }

    /// PBSZ (RFC 4217 §8): only 0 makes sense for TLS; any number is answered PBSZ=0.
    fn protection_buffer_size(&mut self, argument: &str) {
        if !self.control_tls {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "PBSZ needs a TLS connection: send AUTH TLS first",
            ));
            return;
        }
        if argument.trim().parse::<u64>().is_err() {
            self.reply(Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Syntax: PBSZ 0"));
            return;
        }
        self.pbsz_done = true;
        self.reply(Reply::new(ReplyCode::OK, "PBSZ=0"));
    }

    /// PROT (RFC 4217 §9): C and P; S and E do not exist for TLS.
    fn protection_level(&mut self, argument: &str) {
        if !self.control_tls {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "PROT needs a TLS connection: send AUTH TLS first",
            ));
            return;
        }
        if !self.pbsz_done {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "Send PBSZ 0 before PROT",
            ));
            return;
        }
        let reply = match argument.trim().to_ascii_uppercase().as_str() {
            "P" => {
                self.protect_data = true;
                Reply::new(ReplyCode::OK, "Protection level set to Private")
            }
            "C" if self.data_tls_required() => Reply::new(
                ReplyCode::POLICY_DENIED,
                format!(
                    "PROT C refused: data connections must be protected (tls.require_data = {})",
                    self.config.tls.require_data.as_str()
                ),
            ),
            "C" => {
                self.protect_data = false;
                Reply::new(ReplyCode::OK, "Protection level set to Clear")
            }
            "S" | "E" => Reply::new(
                ReplyCode::PROT_NOT_SUPPORTED,
                "Only PROT C and PROT P are supported",
            ),
            _ => Reply::new(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Unknown PROT level",
            ),
        };
        self.reply(reply);
    }

    /// CCC (RFC 4217 §12.3): back to a plain control connection, when allowed.
    fn clear_command_channel(&mut self) {
        if !self.control_tls {
            self.reply(Reply::new(
                ReplyCode::PROTECTION_DENIED,
                "The control connection is not protected",
            ));
            return;
        }
        if !self.config.tls.allow_ccc {
            self.reply(Reply::new(
                ReplyCode::POLICY_DENIED,
                "CCC refused: the control connection stays protected (tls.allow_ccc = false)",
            ));
            return;
        }
        self.reply(Reply::new(
            ReplyCode::OK,
            "Control connection in clear text from now on; data protection unchanged",
        ));
        self.control_tls = false;
        self.actions.push_back(Action::ClearControlTls);
    }

    /// The name the data rules apply to: the logged-in user, or the one USER named.
    fn login_name(&self) -> Option<&str> {
        match &self.login {
            Login::LoggedIn(user) => Some(&user.name),
            Login::AwaitingPassword { username } => Some(username),
            _ => None,
        }
    }

    /// `tls.require_data` applies to this session (before USER only `all` is known to).
    fn data_tls_required(&self) -> bool {
        if !self.tls_available {
            return false;
        }
        let require = self.config.tls.require_data;
        match self.login_name() {
            Some(name) => require.applies_to(name),
            None => require == TlsRequirement::All,
        }
    }

    fn data_resumption_required(&self) -> bool {
        let policy = &self.config.tls;
        if !policy.require_reuse {
            return false;
        }
        let exempt_user = self
            .login_name()
            .is_some_and(|name| policy.reuse_exempt_users.iter().any(|u| u == name));
        let peer = self.peer.ip();
        let exempt_client = policy
            .reuse_exempt_clients
            .iter()
            .any(|net| net.contains(peer));
        !exempt_user && !exempt_client
    }
}

/// RFC 959 Appendix II: a quote inside a quoted path is doubled.
fn quote_path(path: &str) -> String {
    format!("\"{}\"", path.replace('"', "\"\""))
}

/// Clients send `ls` options with LIST (`LIST -la`, `LIST -al dir`); they select nothing
/// here, so they are dropped. A lone `-` or a name after them is kept.
fn strip_list_options(argument: &str) -> &str {
    let mut rest = argument;
    while rest.starts_with('-') && rest.len() > 1 {
        match rest.split_once(' ') {
            Some((_, after)) => rest = after.trim_start(),
            None => return "",
        }
    }
    rest
}

fn help(argument: &str) -> Reply {
    if !argument.is_empty() {
        return match Verb::from_name(argument.trim()) {
            Some(verb) => Reply::new(ReplyCode::HELP, format!("Syntax: {}", verb.spec().syntax)),
            None => Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Unknown command"),
        };
    }
    let mut lines = vec!["The following commands are recognized:".to_owned()];
    for chunk in Verb::ALL.chunks(8) {
        let names: Vec<&str> = chunk.iter().map(|verb| verb.name()).collect();
        lines.push(names.join(" "));
    }
    lines.push("Help OK".to_owned());
    Reply::multiline(ReplyCode::HELP, lines)
}
