//! One control connection: the loop that drives a [`Session`] with real I/O, and the
//! dispatch of the session's actions.
//!
//! The loop owns everything of its connection (session, sockets, passive listener, running
//! transfer); nothing is shared with other tasks and no lock is held across an await. A
//! transfer runs as futures polled by the same loop ([`Transfer`]), so the control
//! connection keeps being read (ABOR, STAT, the client going away) while bytes move, and an
//! idle session costs one task and no extra buffers. The work of the actions lives beside
//! this file by concern: `input.rs` (lines in), `login.rs`, `files.rs`, `data_channel.rs`
//! (passive listener, transfer start) and `ftps.rs` (AUTH TLS, CCC).

mod data_channel;
mod files;
mod ftps;
mod input;
mod login;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferroftp_backend::{AccountState, Storage};
use ferroftp_proto::Session;
use ferroftp_proto::framing::LineBuffer;
use ferroftp_proto::session::{Action, Outcome};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, warn};

use self::input::{CONTROL_READ, ControlInput};
use crate::drain::{Phase, ServerSignal, SessionGuard};
use crate::limits::SessionLimiter;
use crate::passive::PassiveListener;
use crate::proxy_protocol;
use crate::status::SessionHandle;
use crate::telemetry;
use crate::tls_lineage::ControlLineage;
use crate::transfer::Transfer;
use crate::user_policy::UserSession;
use crate::{DefenderEvent, ServerContext};

/// The target of a session's log events, wherever in `connection/` and `transfer/` they are
/// written: log targets are part of the interface (the fail2ban filter in
/// contrib/fail2ban/filter.d/ferroftp.conf and docs/operations.md match on it), so the files
/// this module was split into keep the target it had.
pub(crate) const LOG_TARGET: &str = "ferroftp_server::connection";

/// The control connection's stream: plain TCP, or TLS after AUTH TLS or on an implicit
/// listener.
type ControlStream = ferroftp_tls_stream::MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// Numbers sessions in the logs (`session{id=…}`) and transfer records, from 1.
static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// Serves a connection from a trusted proxy: the PROXY header first, then the session of
/// the client it names (whose session caps apply).
pub(crate) async fn serve_proxied(
    mut stream: TcpStream,
    proxy: SocketAddr,
    listener_index: usize,
    context: Arc<ServerContext>,
    limiter: Arc<SessionLimiter>,
) {
    let header_timeout = context.proxy_protocol.header_timeout;
    let client = match proxy_protocol::read_header(&mut stream, header_timeout).await {
        Ok(Some(client)) => client,
        // LOCAL / UNKNOWN: the proxy's own health check; serve it as itself.
        Ok(None) => proxy,
        Err(error) => {
            warn!(%proxy, %error, "connection from a trusted proxy without a valid PROXY header");
            telemetry::proxy_header_rejected(telemetry::ProxyHeaderRejection::Invalid);
            return;
        }
    };
    // The ban of the real client, known only now (see the accept loop).
    if context.defender.is_banned(client.ip()) {
        crate::refuse_banned(stream);
        return;
    }
    let permit = match limiter.try_acquire(client.ip()) {
        Ok(permit) => permit,
        Err(exceeded) => {
            crate::refuse(stream, client, exceeded).await;
            return;
        }
    };
    serve_session(stream, client, Some(proxy), listener_index, context).await;
    drop(permit);
}

/// Serves one accepted control connection until it closes.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener_index: usize,
    context: Arc<ServerContext>,
) {
    serve_session(stream, peer, None, listener_index, context).await;
}

async fn serve_session(
    stream: TcpStream,
    peer: SocketAddr,
    via_proxy: Option<SocketAddr>,
    listener_index: usize,
    context: Arc<ServerContext>,
) {
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(error) => {
            debug!(%peer, %error, "connection gone before it was served");
            return;
        }
    };
    let socket = socket2::SockRef::from(&stream);
    let _ = socket.set_tcp_nodelay(true);
    // Clients send ABOR's Telnet Synch as urgent data (ftplib sends the whole "ABOR\r\n"
    // with MSG_OOB); without OOBINLINE the kernel would drop that byte from the stream.
    let _ = socket.set_out_of_band_inline(true);
    let id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
    let span = match via_proxy {
        Some(proxy) => {
            tracing::info_span!("session", %peer, id, %proxy, user = tracing::field::Empty)
        }
        None => tracing::info_span!("session", %peer, id, user = tracing::field::Empty),
    };
    // In the registry from the start, so the status page also shows sessions that are still
    // in their TLS handshake or have not logged in.
    let registration = context.status.register(id, peer, listener_index, now());
    if let Some(listener) = context.status.listeners().get(listener_index) {
        telemetry::session_accepted(listener);
    }
    // The lineage of the TLS sessions this connection and its data connections issue.
    let mut lineage = context.tls.as_ref().map(|tls| tls.register(peer.ip()));
    let opened = ftps::open_control_stream(stream, peer, listener_index, &context, &mut lineage)
        .instrument(span.clone())
        .await;
    let Some((stream, transport)) = opened else {
        return;
    };
    let session = Session::with_transport(Arc::clone(&context.session), peer, transport, now());
    let mut connection = ControlConnection {
        shutdown: context.drain.session(),
        lines: LineBuffer::new(context.max_line),
        // A PROXY header is expected only from trusted proxies, and was consumed already;
        // on an implicit TLS listener it would have failed the handshake.
        check_for_proxy_header: via_proxy.is_none()
            && context.proxy_protocol.is_enabled()
            && !stream.is_tls(),
        storage: Arc::clone(&context.storage),
        context,
        stream,
        lineage,
        session,
        out: Vec::new(),
        passive: None,
        transfer: Transfer::default(),
        id,
        user: String::new(),
        account_at_login: AccountState::Unchecked,
        peer,
        local,
        listener_index,
        span: span.clone(),
        registration,
        refused_active_targets: 0,
        user_session: None,
        unused_passives: 0,
        flood_scored: false,
        ended_by: EndedBy::Server,
    };
    async move {
        debug!("connected");
        match connection.run().await {
            Ok(()) => debug!(ended_by = connection.ended_by.as_str(), "closed"),
            // The control connection broke under us: the client's side went away.
            Err(error) => debug!(ended_by = "client", %error, "control connection ended"),
        }
        connection
            .transfer
            .connection_ended(&connection.registration);
    }
    .instrument(span)
    .await;
}

struct ControlConnection {
    context: Arc<ServerContext>,
    /// The storage as the logged-in user sees it: confined to their home by the storage
    /// itself (`Storage::scoped`), not only by the session's mapping of paths. Until a login,
    /// the server's storage (no command reaches it before one).
    storage: Arc<dyn Storage>,
    /// Counts this session as open and tells it when the server shuts down.
    shutdown: SessionGuard,
    stream: ControlStream,
    /// Tagged onto every TLS session this connection and its data connections issue; a
    /// protected data connection must resume a session of this lineage (see `tls_lineage.rs`).
    /// `None` when the server has no TLS.
    lineage: Option<ControlLineage>,
    session: Session,
    lines: LineBuffer,
    out: Vec<u8>,
    passive: Option<PassiveListener>,
    /// The running transfer, and what waits for its final reply.
    transfer: Transfer,
    /// The session's number in the logs.
    id: u64,
    /// The logged-in user, for transfer records.
    user: String,
    /// The account as the authenticator described it at login, to tell a later deletion,
    /// password change or loss of write access (checked before each batch of commands).
    account_at_login: AccountState,
    peer: SocketAddr,
    local: SocketAddr,
    listener_index: usize,
    /// Set until the first bytes arrived, when PROXY headers are trusted from some sources
    /// but not from this one.
    check_for_proxy_header: bool,
    span: tracing::Span,
    /// This session in the server's status (removed when dropped).
    registration: SessionHandle,
    /// The session's count of refused PORT/EPRT targets when last looked at.
    refused_active_targets: u64,
    /// The logged-in account's session count, buckets and quota usage.
    user_session: Option<UserSession>,
    /// Passive listeners replaced by a new PASV/EPSV before any transfer used them.
    unused_passives: u32,
    /// Whether the session's flood of queued lines was scored already.
    flood_scored: bool,
    /// Who ended the session, for its last log line.
    ended_by: EndedBy,
}

/// Who ended a session: the client (QUIT, a close, a reset), the backend (the account
/// removed or its password changed) or the server (timeouts, shutdown, a refused header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndedBy {
    Client,
    Backend,
    Server,
}

impl EndedBy {
    fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Backend => "backend",
            Self::Server => "server",
        }
    }
}

/// The monotonic clock the session is driven with.
fn now() -> Instant {
    Instant::now()
}

impl ControlConnection {
    async fn run(&mut self) -> io::Result<()> {
        let mut read_buffer = [0u8; CONTROL_READ];
        let mut timeout = SessionTimeout::new();
        loop {
            if !self.perform_actions().await? {
                return Ok(());
            }
            self.count_misbehaviour();
            self.flush().await?;
            timeout.set(self.session.poll_timeout());
            tokio::select! {
                read = self.stream.read(&mut read_buffer) => {
                    let read = read?;
                    if read == 0 {
                        self.client_gone().await;
                        return Ok(());
                    }
                    if std::mem::take(&mut self.check_for_proxy_header)
                        && proxy_protocol::looks_like_header(&read_buffer[..read])
                    {
                        // Anyone could claim any address with a header: only trusted proxies
                        // may send one.
                        warn!("PROXY protocol header from an untrusted address refused");
                        telemetry::proxy_header_rejected(
                            telemetry::ProxyHeaderRejection::Untrusted,
                        );
                        self.stream
                            .write_all(b"421 PROXY protocol header from an untrusted address\r\n")
                            .await?;
                        return Ok(());
                    }
                    // Before the session runs the commands just received.
                    self.check_account().await;
                    let mut input = self.input();
                    input.receive(&read_buffer[..read]);
                    if !input.read_past_urgent_mark()? {
                        self.client_gone().await;
                        return Ok(());
                    }
                    self.lines.shrink_when_empty();
                }
                event = self.transfer.next_event() => {
                    if !self.advance_transfer(event) || !self.advance_while_ready() {
                        self.ended_by = EndedBy::Client;
                        return Ok(());
                    }
                }
                () = timeout.elapsed(), if timeout.is_armed() => {
                    timeout.fired();
                    self.session.handle_timeout(now());
                }
                signal = self.shutdown.next_signal() => match signal {
                    ServerSignal::Phase(Phase::Serving) => {}
                    ServerSignal::Phase(Phase::Draining) => self.session.handle_shutdown(),
                    ServerSignal::Phase(Phase::Stopping) => {
                        self.session.handle_shutdown_deadline()
                    }
                    // An idle session whose account went away hears of it now.
                    ServerSignal::Reloaded => self.check_account().await,
                },
            }
        }
    }

    /// Performs queued actions; `false` once the session asked to close.
    async fn perform_actions(&mut self) -> io::Result<bool> {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Reply(reply) => {
                    telemetry::reply(reply.code.0);
                    // 221 answers QUIT only: the session closes next because the client asked.
                    if reply.code.0 == 221 {
                        self.ended_by = EndedBy::Client;
                    }
                    reply.encode_into(&mut self.out);
                }
                Action::Close => {
                    self.flush().await?;
                    let _ = self.stream.shutdown().await;
                    return Ok(false);
                }
                Action::Authenticate(request) => {
                    self.flush().await?;
                    let outcome = self.authenticate(request).await;
                    self.session.handle_outcome(outcome, now());
                }
                Action::Storage(request) => self.perform_storage(request).await,
                Action::OpenPassive => {
                    let outcome = Outcome::PassiveOpened(self.open_passive());
                    self.session.handle_outcome(outcome, now());
                }
                Action::ClosePassive => self.passive = None,
                Action::Transfer(request) => {
                    self.start_transfer(request);
                    if !self.advance_while_ready() {
                        self.ended_by = EndedBy::Client;
                        return Ok(false);
                    }
                }
                Action::AbortTransfer => self.abort_transfer(),
                Action::UpgradeToTls => {
                    self.flush().await?;
                    let outcome = Outcome::TlsEstablished(self.upgrade_to_tls().await);
                    self.session.handle_outcome(outcome, now());
                }
                Action::ClearControlTls => {
                    self.flush().await?;
                    self.clear_control_tls().await?;
                }
            }
        }
        // REIN logged the account out: its session slot is free again.
        if self.user_session.is_some() && self.session.user_name().is_none() {
            self.user_session = None;
        }
        Ok(true)
    }

    async fn flush(&mut self) -> io::Result<()> {
        let written = self.write_out().await;
        self.transfer.after_reply_written();
        written
    }

    async fn write_out(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
            if self.out.capacity() > 4096 {
                self.out = Vec::new();
            }
        }
        Ok(())
    }

    /// The control connection's input side, for a read's bytes to reach the session.
    fn input(&mut self) -> ControlInput<'_> {
        ControlInput {
            stream: &mut self.stream,
            lines: &mut self.lines,
            session: &mut self.session,
            registration: &self.registration,
            defender: &self.context.defender,
            peer: self.peer,
        }
    }

    /// The client closed the control connection.
    async fn client_gone(&mut self) {
        self.ended_by = EndedBy::Client;
        self.transfer.client_gone(&self.registration).await;
    }

    /// PORT/EPRT targets the session refused since the last look (RFC 2577 bounce attempts),
    /// and a flood of queued lines: counted in the metrics and scored by the defender.
    fn count_misbehaviour(&mut self) {
        let refused = self.session.refused_active_targets();
        if refused > self.refused_active_targets {
            telemetry::data_connection_refused(
                telemetry::RefusedDataConnection::Bounce,
                refused - self.refused_active_targets,
            );
            for _ in self.refused_active_targets..refused {
                self.context
                    .defender
                    .record(self.peer.ip(), DefenderEvent::Bounce);
            }
            self.refused_active_targets = refused;
        }
        if self.session.flooded() && !std::mem::replace(&mut self.flood_scored, true) {
            self.context
                .defender
                .record(self.peer.ip(), DefenderEvent::ProtocolError);
        }
    }
}

/// The session's next deadline (login, idle), as one timer kept for the whole session.
///
/// A new `Sleep` per loop turn was registered afresh with tokio's timer wheel; after a
/// transfer, when the session had no deadline, that registration was earlier than the time
/// driver's next wake-up, so tokio woke its own thread through the driver's eventfd: one
/// `write` and one extra `epoll_wait` per upload. Moving one timer's deadline later only
/// updates it in place (tokio re-files it when the old moment comes), which is what almost
/// every command does to the idle deadline.
struct SessionTimeout {
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed_for: Option<Instant>,
}

impl SessionTimeout {
    fn new() -> Self {
        // Not polled until armed: the branch is disabled while no deadline is set.
        Self {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed_for: None,
        }
    }

    /// Arms the timer for `deadline`, or disarms it with `None` (a transfer in flight has
    /// its own timeouts).
    fn set(&mut self, deadline: Option<Instant>) {
        if deadline != self.armed_for {
            if let Some(deadline) = deadline {
                self.sleep
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(deadline));
            }
            self.armed_for = deadline;
        }
    }

    fn is_armed(&self) -> bool {
        self.armed_for.is_some()
    }

    /// Once the deadline has passed: the session sets its next one.
    fn fired(&mut self) {
        self.armed_for = None;
    }

    async fn elapsed(&mut self) {
        self.sleep.as_mut().await;
    }
}
