//! One control connection: the loop that drives a [`Session`] with real I/O.
//!
//! The loop owns everything of its connection (session, sockets, passive listener, running
//! transfer); nothing is shared with other tasks and no lock is held across an await. A
//! transfer runs as a future polled by the same loop, so the control connection keeps being
//! read (ABOR, STAT, the client going away) while bytes move, and an idle session costs one
//! task and no extra buffers.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant as StdInstant;

use ferroftp_backend::{
    AccountState, AuthError, LoginAttempt, Password, Storage, StorageError, Upload,
};
use ferroftp_proto::framing::{LineBuffer, LineError};
use ferroftp_proto::listing::ListFormat;
use ferroftp_proto::session::{
    Action, ControlTransport, DataEndpoint, DataProtection, LoginFailure, LoginRequest, Outcome,
    PassiveFailure, StorageRequest, StorageResult, TransferFailure, TransferKind, TransferRequest,
    TransferSummary, UploadTarget, WriteMode,
};
use ferroftp_proto::{DirEntry, Escaped, Session, StorageErrorKind, VirtualPath};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::{Instrument, debug, info, warn};

use crate::data::{
    self, DataSource, DataTls, Leftovers, Moved, Prepared, Progress, TransferPolicy,
};
use crate::drain::{Phase, ServerSignal, SessionGuard};
use crate::home;
use crate::limits::SessionLimiter;
use crate::passive::{PassiveError, PassiveListener};
use crate::proxy_protocol;
use crate::quota::UploadQuota;
use crate::status::SessionHandle;
use crate::telemetry::{self, LoginResult, TransferResult};
use crate::tls;
use crate::tls_lineage::ControlLineage;
use crate::user_policy::UserSession;
use crate::{
    ActiveSourcePort, DefenderEvent, DefenderVerdict, ListenerTls, ServerContext,
    TransferCompletion, TransferDirection, TransferObserver, TransferRecord,
};

/// Most entries `STAT path` sends over the control connection; larger directories are
/// listed with LIST over a data connection.
const MAX_STAT_ENTRIES: usize = 10_000;

/// Bytes read from the control connection at once.
const CONTROL_READ: usize = 2048;

/// How long after an upload's data connection ended its control connection must still be
/// open for the upload to be published. A client killed mid-upload closes both connections,
/// the data connection first (an orderly FIN, which stream mode takes for end-of-file), its
/// control connection about 100 us later; without this wait an upload whose storage does not
/// fsync (`storage.fsync_uploads = false`) was checked before that close arrived and a
/// truncated file replaced the previous version (5 of 40 killed clients). With fsync, the
/// fsync usually takes longer than this already and nothing is added. docs/uploads.md.
const CLIENT_GONE_GRACE: std::time::Duration = std::time::Duration::from_millis(1);

/// Numbers sessions in the logs (`session{id=…}`) and transfer records, from 1.
static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// Every this many passive listeners replaced unused (PASV after PASV with no transfer), one
/// passive flood is scored: a client that lost a data connection retries a few times, one
/// that cycles the port range to map it or to starve others does not stop.
const PASSIVE_FLOOD_UNUSED: u32 = 10;

/// Direct reads after a read that ended inside a line (see `read_past_urgent_mark`).
const URGENT_MARK_READS: usize = 4;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The stage of the running transfer, if any.
enum TransferStage {
    Idle,
    Preparing(BoxFuture<Result<Prepared, TransferFailure>>),
    Moving(BoxFuture<Result<Moved, TransferFailure>>),
    /// An upload's data is all in: making it durable before deciding to publish it.
    Securing(BoxFuture<Result<Box<dyn Upload>, StorageError>>),
    Committing(BoxFuture<Result<u64, StorageError>>),
}

enum StageEvent {
    Prepared(Result<Prepared, TransferFailure>),
    Moved(Result<Moved, TransferFailure>),
    Secured(Result<Box<dyn Upload>, StorageError>),
    Committed(Result<u64, StorageError>),
}

/// The running transfer as the status and the metrics see it (its bytes are the
/// connection's `progress`).
struct RunningTransfer {
    direction: TransferDirection,
    started: StdInstant,
    /// When an upload's last byte arrived (the commit latency is measured from there).
    data_complete: Option<StdInstant>,
}

/// What is logged, and told to the transfer observer, when a transfer ends.
struct TransferLog {
    command: &'static str,
    direction: TransferDirection,
    path: VirtualPath,
    ascii: bool,
    protected: bool,
    started: StdInstant,
    /// Bytes moved so far: what a transfer that ends early reports.
    progress: Progress,
    session: u64,
    client: SocketAddr,
    user: String,
    observer: Option<Arc<dyn TransferObserver>>,
}

/// How a transfer ended, for its log.
enum TransferEnd {
    /// All of it, with this many bytes.
    Complete(u64),
    /// ABOR.
    Aborted,
    /// Anything else that ended it early, for people.
    Failed(String),
}

impl TransferLog {
    /// The command that names the transfer in logs: APPE and STOU are not STOR.
    fn command(kind: &TransferKind) -> &'static str {
        match kind {
            TransferKind::Retrieve { .. } => "RETR",
            TransferKind::Store {
                target: UploadTarget::UniqueIn(_),
                ..
            } => "STOU",
            TransferKind::Store {
                mode: WriteMode::Append,
                ..
            } => "APPE",
            TransferKind::Store { .. } => "STOR",
            TransferKind::List { format, .. } => match format {
                ListFormat::Long => "LIST",
                ListFormat::NamesOnly => "NLST",
                ListFormat::Machine => "MLSD",
            },
        }
    }

    fn write(self, end: TransferEnd, duration: std::time::Duration) {
        let (bytes, reply, status, completion) = match end {
            TransferEnd::Complete(bytes) => (
                bytes,
                Some(226),
                "ok".to_owned(),
                TransferCompletion::Complete,
            ),
            TransferEnd::Aborted => (
                self.progress.bytes(),
                Some(426),
                "aborted".to_owned(),
                TransferCompletion::Incomplete {
                    reason: "aborted".to_owned(),
                },
            ),
            TransferEnd::Failed(reason) => (
                self.progress.bytes(),
                None,
                reason.clone(),
                TransferCompletion::Incomplete { reason },
            ),
        };
        info!(
            command = self.command,
            path = ?Escaped(&self.path),
            bytes,
            duration_ms = duration.as_millis() as u64,
            reply,
            status,
            "transfer"
        );
        if let Some(observer) = &self.observer {
            observer.transfer_finished(&TransferRecord {
                finished: std::time::SystemTime::now(),
                duration,
                session: self.session,
                client: self.client,
                user: self.user,
                command: self.command,
                direction: self.direction,
                path: self.path,
                bytes,
                ascii: self.ascii,
                protected: self.protected,
                completion,
            });
        }
    }
}

/// Work that waits until the replies queued so far are written: a finished download's log
/// line and the closing of its data connection and file. The client has its 226 first.
#[derive(Default)]
struct AfterReply {
    /// The log, the bytes and the duration of a download that completed.
    log: Option<(TransferLog, u64, std::time::Duration)>,
    leftovers: Leftovers,
}

impl AfterReply {
    fn run(self) {
        drop(self.leftovers);
        if let Some((log, bytes, duration)) = self.log {
            log.write(TransferEnd::Complete(bytes), duration);
        }
    }
}

async fn next_stage_event(stage: &mut TransferStage) -> StageEvent {
    match stage {
        TransferStage::Idle => std::future::pending().await,
        TransferStage::Preparing(future) => StageEvent::Prepared(future.await),
        TransferStage::Moving(future) => StageEvent::Moved(future.await),
        TransferStage::Securing(future) => StageEvent::Secured(future.await),
        TransferStage::Committing(future) => StageEvent::Committed(future.await),
    }
}

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

/// The control connection's stream: plain TCP, or TLS after AUTH TLS or on an implicit
/// listener.
enum ControlStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// After a failed upgrade: nothing to read or write.
    Closed,
}

impl ControlStream {
    /// Whether the client has closed (or reset) the TCP connection, asked of the kernel
    /// (`recv` with `MSG_PEEK | MSG_DONTWAIT`) rather than of the event loop's readiness,
    /// which is only as fresh as its last turn: a FIN that arrived since is seen here.
    /// Bytes waiting (a command) mean the client is there; nothing is consumed.
    fn closed_by_peer(&self) -> bool {
        let tcp = match self {
            Self::Plain(stream) => stream,
            Self::Tls(stream) => stream.get_ref().0,
            Self::Closed => return true,
        };
        let mut probe = [0u8; 1];
        match rustix::net::recv(
            tcp,
            &mut probe,
            rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
        ) {
            Ok(0) => true,
            Ok(_) => false,
            Err(errno) => errno != rustix::io::Errno::AGAIN && errno != rustix::io::Errno::INTR,
        }
    }

    fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "control connection closed")
}

impl AsyncRead for ControlStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(context, buffer),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(context, buffer),
            Self::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for ControlStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(context, buffer),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, buffer),
            Self::Closed => Poll::Ready(Err(closed_error())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(context),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(context),
            Self::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(context),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(context),
            Self::Closed => Poll::Ready(Ok(())),
        }
    }
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
    let _ = socket.set_nodelay(true);
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
    let listener_tls = context
        .listener_tls
        .get(listener_index)
        .copied()
        .unwrap_or_default();
    let (stream, transport) = match (listener_tls, &context.tls, &mut lineage) {
        (ListenerTls::Implicit, Some(tls), Some(lineage)) => {
            match tls.accept(stream, lineage).instrument(span.clone()).await {
                Ok(stream) => {
                    telemetry::tls_handshake(telemetry::TlsConnection::Control, true);
                    let info = tls::tls_info(stream.get_ref().1);
                    (
                        ControlStream::Tls(Box::new(stream)),
                        ControlTransport::Implicit(info),
                    )
                }
                Err(error) => {
                    debug!(%peer, error = %Escaped(&error), "implicit TLS handshake failed");
                    telemetry::tls_handshake(telemetry::TlsConnection::Control, false);
                    context
                        .defender
                        .record(peer.ip(), DefenderEvent::TlsHandshakeFailure);
                    return;
                }
            }
        }
        (ListenerTls::Explicit, Some(_), _) => {
            (ControlStream::Plain(stream), ControlTransport::Explicit)
        }
        _ => (ControlStream::Plain(stream), ControlTransport::Plain),
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
        stage: TransferStage::Idle,
        transfer_log: None,
        after_reply: AfterReply::default(),
        transfer_bytes: 0,
        progress: Progress::default(),
        id,
        user: String::new(),
        account_at_login: AccountState::Unchecked,
        peer,
        local,
        listener_index,
        span: span.clone(),
        registration,
        transfer: None,
        refused_active_targets: 0,
        user_session: None,
        upload_quota: None,
        unused_passives: 0,
        flood_scored: false,
    };
    async move {
        debug!("connected");
        match connection.run().await {
            Ok(()) => debug!("closed"),
            Err(error) => debug!(%error, "control connection ended"),
        }
        std::mem::take(&mut connection.after_reply).run();
        // A transfer cut by the connection's own end (a failed write) is over too.
        connection.end_transfer(TransferResult::Failed, None);
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
    stage: TransferStage,
    transfer_log: Option<TransferLog>,
    after_reply: AfterReply,
    /// Bytes received by the running upload, for its log line.
    transfer_bytes: u64,
    /// Bytes the running transfer moved so far.
    progress: Progress,
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
    transfer: Option<RunningTransfer>,
    /// The session's count of refused PORT/EPRT targets when last looked at.
    refused_active_targets: u64,
    /// The logged-in account's session count, buckets and quota usage.
    user_session: Option<UserSession>,
    /// The running upload's quota, charged when it is published.
    upload_quota: Option<Box<UploadQuota>>,
    /// Passive listeners replaced by a new PASV/EPSV before any transfer used them.
    unused_passives: u32,
    /// Whether the session's flood of queued lines was scored already.
    flood_scored: bool,
}

fn now() -> StdInstant {
    StdInstant::now()
}

impl ControlConnection {
    async fn run(&mut self) -> io::Result<()> {
        let mut read_buffer = [0u8; CONTROL_READ];
        loop {
            if !self.perform_actions().await? {
                return Ok(());
            }
            self.count_misbehaviour();
            self.flush().await?;
            let deadline = self
                .session
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
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
                    self.lines.push(&read_buffer[..read]);
                    self.check_account().await;
                    while let Some(line) = self.lines.next_line() {
                        self.handle_line(line);
                    }
                    if !self.read_past_urgent_mark()? {
                        self.client_gone().await;
                        return Ok(());
                    }
                    self.lines.shrink_when_empty();
                }
                event = next_stage_event(&mut self.stage) => {
                    if !self.advance_transfer(event)? || !self.advance_while_ready()? {
                        return Ok(());
                    }
                }
                () = sleep_until(deadline) => self.session.handle_timeout(now()),
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
                Action::Storage(StorageRequest::QuotaUsage) => {
                    let usage = self
                        .user_session
                        .as_ref()
                        .and_then(|account| account.usage().current());
                    let outcome = Outcome::Storage(Ok(StorageResult::QuotaUsage(usage)));
                    self.session.handle_outcome(outcome, now());
                }
                Action::Storage(request) => {
                    let counter = self
                        .user_session
                        .as_ref()
                        .and_then(UserSession::quota)
                        .map(|(counter, _)| counter);
                    let storage = Arc::clone(&self.storage);
                    let change = usage_change(counter, &*storage, &request).await;
                    let result = storage_operation(&storage, request).await;
                    if result.is_ok()
                        && let Some((counter, bytes, files)) = change
                    {
                        counter.apply(bytes, files);
                    }
                    let outcome = Outcome::Storage(result);
                    self.session.handle_outcome(outcome, now());
                }
                Action::OpenPassive => {
                    let outcome = Outcome::PassiveOpened(self.open_passive());
                    self.session.handle_outcome(outcome, now());
                }
                Action::ClosePassive => self.passive = None,
                Action::Transfer(request) => {
                    self.start_transfer(request);
                    if !self.advance_while_ready()? {
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

    /// AUTH TLS: the 234 reply went out; whatever the client sent after AUTH TLS and before
    /// its handshake is discarded (the session drops the complete lines, the buffer the
    /// rest), then the handshake runs on the TCP stream.
    async fn upgrade_to_tls(&mut self) -> Result<ferroftp_proto::session::TlsInfo, String> {
        let discarded = self.lines.pending();
        self.lines.clear();
        if discarded > 0 || self.session.discarded_lines() > 0 {
            warn!(
                bytes = discarded,
                lines = self.session.discarded_lines(),
                "discarded input pipelined after AUTH TLS"
            );
        }
        let Some(tls) = &self.context.tls else {
            return Err("TLS is not configured".to_owned());
        };
        let Some(lineage) = &mut self.lineage else {
            return Err("TLS is not configured".to_owned());
        };
        let ControlStream::Plain(tcp) = std::mem::replace(&mut self.stream, ControlStream::Closed)
        else {
            return Err("the control connection is not plain".to_owned());
        };
        match tls.accept(tcp, lineage).await {
            Ok(stream) => {
                telemetry::tls_handshake(telemetry::TlsConnection::Control, true);
                let info = tls::tls_info(stream.get_ref().1);
                debug!(
                    version = ?stream.get_ref().1.protocol_version(),
                    client_certificate = info
                        .client_name
                        .as_deref()
                        .map(|name| tracing::field::debug(Escaped(name))),
                    "control connection upgraded to TLS"
                );
                self.stream = ControlStream::Tls(Box::new(stream));
                Ok(info)
            }
            Err(error) => {
                debug!(error = %Escaped(&error), "TLS handshake after AUTH TLS failed");
                telemetry::tls_handshake(telemetry::TlsConnection::Control, false);
                self.context
                    .defender
                    .record(self.peer.ip(), DefenderEvent::TlsHandshakeFailure);
                Err(error.to_string())
            }
        }
    }

    /// CCC: close_notify, wait for the client's, then plain text on the same TCP connection.
    async fn clear_control_tls(&mut self) -> io::Result<()> {
        let ControlStream::Tls(mut stream) =
            std::mem::replace(&mut self.stream, ControlStream::Closed)
        else {
            return Ok(());
        };
        stream.get_mut().1.send_close_notify();
        stream.flush().await?;
        let timeout = self
            .context
            .tls
            .as_ref()
            .map_or(std::time::Duration::from_secs(10), |tls| {
                tls.handshake_timeout
            });
        let mut buffer = [0u8; CONTROL_READ];
        let wait = async {
            loop {
                // Protected bytes before the client's close_notify are still commands.
                match stream.read(&mut buffer).await? {
                    0 => return Ok::<_, io::Error>(()),
                    read => self.lines.push(&buffer[..read]),
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no close_notify from the client after CCC",
                ));
            }
        }
        let (tcp, _) = stream.into_inner();
        self.stream = ControlStream::Plain(tcp);
        while let Some(line) = self.lines.next_line() {
            self.handle_line(line);
        }
        debug!("control connection back to plain text (CCC)");
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        let written = self.write_out().await;
        std::mem::take(&mut self.after_reply).run();
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

    async fn authenticate(&mut self, request: LoginRequest) -> Outcome {
        let attempt = LoginAttempt {
            username: request.username,
            password: Password::new(request.password),
            peer: self.peer.ip().to_canonical(),
        };
        // A new login ends the account's previous one on this connection (after REIN).
        self.user_session = None;
        // A session opened before its address was banned: refused without spending a
        // password verification (argon2) on it.
        if self.context.defender.is_banned(attempt.peer) {
            return Outcome::Authenticated(Err(LoginFailure::Banned));
        }
        // Logins sent in parallel over many connections wait in the verification queue; the
        // ban that one of them causes answers the others at once (their queued verifications
        // are skipped, see `PasswordVerifier::run`).
        let verified = tokio::select! {
            verified = self.context.authenticator.authenticate(&attempt) => verified,
            () = self.context.defender.until_banned(attempt.peer) => {
                return Outcome::Authenticated(Err(LoginFailure::Banned));
            }
        };
        match verified {
            Ok(user) if !user.policy.allows_address(attempt.peer) => {
                // The session refuses it (530, the rule lives in proto); nothing is counted.
                login_refused(attempt.peer, &user.name, "allow-from");
                Outcome::Authenticated(Ok(user))
            }
            Ok(user) => {
                let storage = &*self.context.storage;
                self.context
                    .homes
                    .ensure(storage, &user.name, &user.home)
                    .await;
                let scoped = home::scoped(&self.context.storage, &user.name, &user.home).await;
                // The account's session cap; its quota usage is counted through the storage
                // confined to its home.
                match self.context.users.login(&user, &scoped) {
                    Ok(account) => self.user_session = Some(account),
                    Err(_) => {
                        login_refused(attempt.peer, &user.name, "max-sessions");
                        return Outcome::Authenticated(Err(LoginFailure::SessionLimit));
                    }
                }
                self.storage = scoped;
                self.span
                    .record("user", tracing::field::debug(Escaped(&user.name)));
                if let Some(lineage) = &mut self.lineage {
                    lineage.logged_in(&user.name);
                }
                self.user = user.name.clone();
                self.account_at_login = self.context.authenticator.account_state(&user.name).await;
                self.registration.set_user(&user.name);
                let per_user = self.registration.status().per_user_metrics();
                telemetry::login(LoginResult::Ok, per_user.then_some(user.name.as_str()));
                info!(user = ?Escaped(&user.name), reply = 230, "logged in");
                Outcome::Authenticated(Ok(user))
            }
            Err(rejection @ (AuthError::Rejected | AuthError::UnknownUser)) => {
                // One stable line per failed login, for fail2ban
                // (contrib/fail2ban/filter.d/ferroftp.conf): the client's address first, then
                // what the client sent, quoted and escaped, so that a user name can neither
                // break the line nor forge another address.
                warn!(
                    client = %attempt.peer,
                    user = ?Escaped(&attempt.username),
                    reason = %"bad-credentials",
                    reply = 530,
                    "login failed"
                );
                telemetry::login(LoginResult::Rejected, None);
                let event = match rejection {
                    AuthError::UnknownUser => DefenderEvent::UnknownUser,
                    _ => DefenderEvent::FailedLogin,
                };
                if let DefenderVerdict::Banned(_) =
                    self.context.defender.record(attempt.peer, event)
                {
                    // The reply says so and the connection closes: the next one is refused
                    // at accept anyway.
                    return Outcome::Authenticated(Err(LoginFailure::Banned));
                }
                // Slows password guessing on this connection; other sessions are not held up.
                tokio::time::sleep(self.context.failed_login_delay).await;
                Outcome::Authenticated(Err(LoginFailure::Rejected))
            }
            Err(error) => {
                warn!(%error, "authentication backend unavailable");
                telemetry::login(LoginResult::Unavailable, None);
                Outcome::Authenticated(Err(LoginFailure::Unavailable))
            }
        }
    }

    /// Asks the authenticator whether the logged-in account changed since the login, before
    /// the session runs the commands just received: deleted or given a new password, the
    /// session ends with 421 (after a running transfer); made read-only, its next write
    /// command gets 550. A database that cannot tell costs nothing here.
    async fn check_account(&mut self) {
        let AccountState::Active {
            credentials: credentials_at_login,
            ..
        } = self.account_at_login
        else {
            return;
        };
        if self.session.user_name().is_none() {
            return;
        }
        match self.context.authenticator.account_state(&self.user).await {
            AccountState::Unchecked => {}
            AccountState::Active {
                read_only,
                credentials,
            } if credentials == credentials_at_login => {
                self.session.handle_account_read_only(read_only);
            }
            AccountState::Active { .. } => {
                warn!("the account's password changed: session closed");
                self.session.handle_account_revoked();
            }
            AccountState::Gone => {
                warn!("the account was removed: session closed");
                self.session.handle_account_revoked();
            }
        }
    }

    /// Binds a new passive listener (the previous one, if any, is closed first: RFC 959 lets
    /// a new PASV replace the old, and one pending listener per session stops PASV floods).
    fn open_passive(&mut self) -> Result<SocketAddr, PassiveFailure> {
        if self.passive.take().is_some() {
            self.unused_passives += 1;
            if self.unused_passives.is_multiple_of(PASSIVE_FLOOD_UNUSED) {
                self.context
                    .defender
                    .record(self.peer.ip(), DefenderEvent::PassiveFlood);
            }
        }
        let local_ip = self.local.ip().to_canonical();
        let client_ip = self.peer.ip().to_canonical();
        match self
            .context
            .passive_pool
            .bind(local_ip, client_ip, &self.user)
        {
            Ok(listener) => {
                let (announced_ip, rule) = self.context.passive_addresses.current().choose(
                    client_ip,
                    self.listener_index,
                    self.stream.is_tls(),
                    local_ip,
                );
                let port = announced_port(listener.port(), self.context.announced_port_offset);
                let announced = SocketAddr::new(announced_ip, port);
                debug!(port = listener.port(), address = %announced, %rule, "passive address chosen");
                self.passive = Some(listener);
                Ok(announced)
            }
            Err(PassiveError::Exhausted) => {
                warn!(
                    in_use = self.context.passive_pool.ports_in_use(),
                    "passive port range exhausted: widen passive.ports"
                );
                Err(PassiveFailure::Exhausted)
            }
            Err(PassiveError::UserLimit(held)) => {
                warn!(held, "passive port refused: passive.max_per_user reached");
                Err(PassiveFailure::Other(format!(
                    "Too many passive ports held by this account ({held}, passive.max_per_user); \
                     try again when a transfer ends"
                )))
            }
            Err(PassiveError::ClientLimit(held)) => {
                warn!(held, "passive port refused: passive.max_per_client reached");
                Err(PassiveFailure::Other(format!(
                    "Too many passive ports held from this address ({held}, \
                     passive.max_per_client); try again when a transfer ends"
                )))
            }
            Err(error) => {
                warn!(%error, "passive listener failed");
                Err(PassiveFailure::Other(
                    "Can't open passive listener".to_owned(),
                ))
            }
        }
    }

    fn start_transfer(&mut self, request: TransferRequest) {
        let source = match request.endpoint {
            DataEndpoint::Passive => match self.passive.take() {
                Some(listener) => DataSource::Passive {
                    listener,
                    expected_peer: self.peer.ip(),
                    proxy: Arc::clone(&self.context.proxy_protocol),
                    defender: Arc::clone(&self.context.defender),
                },
                None => {
                    let failure = TransferFailure::DataConnection("no passive listener".to_owned());
                    self.session
                        .handle_outcome(Outcome::TransferFinished(Err(failure)), now());
                    return;
                }
            },
            DataEndpoint::Active(target) => DataSource::Active {
                local_ip: self.local.ip().to_canonical(),
                source_port: match self.context.active_source_port {
                    ActiveSourcePort::Any => None,
                    ActiveSourcePort::ControlMinusOne => self.local.port().checked_sub(1),
                },
                target,
            },
        };
        let (direction, path) = match &request.kind {
            TransferKind::Retrieve { path, .. } => (TransferDirection::Download, path.clone()),
            // STOU: the directory until the storage has chosen the name (`Prepared`).
            TransferKind::Store {
                target: UploadTarget::Path(path) | UploadTarget::UniqueIn(path),
                ..
            } => (TransferDirection::Upload, path.clone()),
            TransferKind::List { path, .. } => (TransferDirection::Listing, path.clone()),
        };
        self.progress = Progress::default();
        self.transfer_log = Some(TransferLog {
            command: TransferLog::command(&request.kind),
            direction,
            path,
            ascii: request.ascii,
            protected: matches!(request.protection, DataProtection::Private { .. }),
            started: now(),
            progress: self.progress.clone(),
            session: self.id,
            client: self.peer,
            user: self.user.clone(),
            observer: self.context.transfer_observer.clone(),
        });
        let tls = match request.protection {
            DataProtection::Clear => None,
            DataProtection::Private { require_resumption } => {
                match (&self.context.tls, &self.lineage) {
                    (Some(tls), Some(lineage)) => Some(DataTls {
                        config: tls.data_config(matches!(request.kind, TransferKind::Store { .. })),
                        lineage: lineage.for_data(),
                        require_resumption,
                        handshake_timeout: tls.handshake_timeout,
                    }),
                    _ => {
                        let failure =
                            TransferFailure::DataConnection("TLS is not configured".to_owned());
                        self.session
                            .handle_outcome(Outcome::TransferFinished(Err(failure)), now());
                        return;
                    }
                }
            }
        };
        let started = now();
        if let Some(log) = &self.transfer_log {
            self.registration.start_transfer(
                log.direction,
                log.path.to_string(),
                started,
                self.progress.clone(),
            );
            self.transfer = Some(RunningTransfer {
                direction: log.direction,
                started,
                data_complete: None,
            });
        }
        let policy = match (&self.user_session, &request.kind) {
            (Some(account), TransferKind::Retrieve { .. }) => TransferPolicy {
                throttle: account.download_throttle(),
                quota: None,
            },
            (Some(account), TransferKind::Store { .. }) => TransferPolicy {
                throttle: account.upload_throttle(),
                quota: account.quota(),
            },
            _ => TransferPolicy::default(),
        };
        self.upload_quota = None;
        let storage = Arc::clone(&self.storage);
        let options = self.context.data.clone();
        self.stage = TransferStage::Preparing(Box::pin(async move {
            data::prepare(request, storage, source, tls, &options, policy).await
        }));
    }

    fn abort_transfer(&mut self) {
        match self.stage {
            // The data is all in; committing it is quicker than arguing. The session
            // answers "226 Transfer complete, ABOR ignored".
            TransferStage::Committing(_) | TransferStage::Idle => {}
            TransferStage::Preparing(_) | TransferStage::Moving(_) | TransferStage::Securing(_) => {
                // Dropping the future closes the data connection; an upload is abandoned
                // (its previous version stays, its partial data is kept for a resume).
                self.stage = TransferStage::Idle;
                self.log_transfer(TransferEnd::Aborted);
                self.session.handle_outcome(
                    Outcome::TransferFinished(Err(TransferFailure::Aborted)),
                    now(),
                );
            }
        }
    }

    /// Moves the transfer on through every stage that completes without waiting; `false`
    /// when the client is gone. A small download is prepared, sent and finished here, so
    /// its preliminary and final replies (150 and 226) leave in one write after the data,
    /// with no trip through the event loop. Any
    /// stage that would wait (for the client, the disk or a thread) stops this, and the
    /// replies queued so far are flushed before the loop waits, so no client ever waits for
    /// a 150 that the server holds back. RFC 959 §5.4 orders the replies, not replies
    /// against data bytes on the other connection.
    fn advance_while_ready(&mut self) -> io::Result<bool> {
        while let Some(event) = next_stage_event(&mut self.stage).now_or_never() {
            if !self.advance_transfer(event)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Moves the transfer on by one stage; `false` when the client is gone.
    fn advance_transfer(&mut self, event: StageEvent) -> io::Result<bool> {
        self.stage = TransferStage::Idle;
        match event {
            StageEvent::Prepared(Ok(prepared)) => {
                let outcome = Outcome::TransferStarted {
                    size: prepared.size,
                    stored_as: prepared.stored_as.clone(),
                };
                if let (Some(log), Some(stored_as)) = (&mut self.transfer_log, &prepared.stored_as)
                {
                    log.path = stored_as.clone();
                }
                self.upload_quota = prepared.upload_quota.clone();
                let progress = self.progress.clone();
                self.stage = TransferStage::Moving(Box::pin(data::run(prepared, progress)));
                self.session.handle_outcome(outcome, now());
            }
            StageEvent::Moved(Ok(Moved::Received { upload, bytes })) => {
                self.transfer_bytes = bytes;
                if let Some(transfer) = &mut self.transfer {
                    transfer.data_complete = Some(now());
                }
                let publish_after = tokio::time::Instant::now() + CLIENT_GONE_GRACE;
                self.stage = TransferStage::Securing(Box::pin(secure(upload, publish_after)));
            }
            StageEvent::Secured(Ok(upload)) => {
                // Stream mode marks end of file by closing the data connection, which a
                // client that is killed also does, and the kernel closes its control
                // connection some 100 us later. Checking only now, at least
                // CLIENT_GONE_GRACE after the data connection ended (and after the fsync),
                // leaves that close time to arrive, with or without fsync: a killed client's
                // upload stays partial and the previous version stays whole. The kernel is
                // asked too, in case the event loop has not seen the close yet.
                if !self.control_still_open()? || self.stream.closed_by_peer() {
                    self.log_transfer(TransferEnd::Failed(
                        "client gone, upload kept as partial".to_owned(),
                    ));
                    drop(upload);
                    return Ok(false);
                }
                // Charged before publishing, atomically for the account: two sessions that
                // each fit alone cannot together publish past the quota.
                if let Some(quota) = &self.upload_quota
                    && !quota.charge(self.transfer_bytes)
                {
                    self.upload_quota = None;
                    drop(upload);
                    self.finish(Err(TransferFailure::Storage(
                        StorageErrorKind::QuotaExceeded,
                    )));
                    return Ok(true);
                }
                self.stage = TransferStage::Committing(Box::pin(commit(upload)));
            }
            StageEvent::Secured(Err(error)) => {
                warn!(error = %Escaped(&error), "securing upload failed");
                self.finish(Err(TransferFailure::Storage(error.kind)));
            }
            StageEvent::Moved(Ok(Moved::Sent { bytes, leftovers })) => {
                // The 226 first; the log line and the closes once it is written (`finish`
                // finds the log taken).
                self.after_reply = AfterReply {
                    log: self.transfer_log.take().map(|log| {
                        let duration = log.started.elapsed();
                        (log, bytes, duration)
                    }),
                    leftovers,
                };
                self.finish(Ok(bytes));
            }
            StageEvent::Prepared(Err(failure)) | StageEvent::Moved(Err(failure)) => {
                self.finish(Err(failure))
            }
            StageEvent::Committed(result) => {
                let received = self.transfer_bytes;
                self.settle_quota(received, result.as_ref().ok().copied());
                if result.is_ok()
                    && let Some(data_complete) = self
                        .transfer
                        .as_ref()
                        .and_then(|transfer| transfer.data_complete)
                {
                    telemetry::upload_committed(data_complete.elapsed());
                }
                self.finish(result.map(|_| received).map_err(|error| {
                    warn!(error = %Escaped(&error), "committing upload failed");
                    TransferFailure::Storage(error.kind)
                }))
            }
        }
        Ok(true)
    }

    /// After a charged upload's commit: the usage follows the published size, or the charge
    /// is given back when nothing was published.
    fn settle_quota(&mut self, received: u64, published_size: Option<u64>) {
        if let Some(quota) = self.upload_quota.take() {
            match published_size {
                Some(size) => quota.correct(received, size),
                None => quota.refund(received),
            }
        }
    }

    fn finish(&mut self, result: Result<u64, TransferFailure>) {
        match &result {
            Ok(bytes) => self.log_transfer(TransferEnd::Complete(*bytes)),
            Err(TransferFailure::Aborted) => self.log_transfer(TransferEnd::Aborted),
            Err(failure) => self.log_transfer(TransferEnd::Failed(format!("{failure:?}"))),
        }
        let outcome = Outcome::TransferFinished(result.map(|bytes| TransferSummary { bytes }));
        self.session.handle_outcome(outcome, now());
    }

    fn log_transfer(&mut self, end: TransferEnd) {
        // The metrics and the status, whether the log line is written now or (a completed
        // download) once the 226 is out.
        match &end {
            TransferEnd::Complete(bytes) => self.end_transfer(TransferResult::Ok, Some(*bytes)),
            TransferEnd::Aborted => self.end_transfer(TransferResult::Aborted, None),
            TransferEnd::Failed(_) => self.end_transfer(TransferResult::Failed, None),
        }
        if let Some(log) = self.transfer_log.take() {
            let duration = log.started.elapsed();
            log.write(end, duration);
        }
    }

    /// The running transfer is over: counted in the metrics (with `bytes`, or the bytes moved
    /// so far) and gone from the status. Nothing when no transfer runs.
    fn end_transfer(&mut self, result: TransferResult, bytes: Option<u64>) {
        let Some(transfer) = self.transfer.take() else {
            return;
        };
        self.registration.end_transfer();
        let per_user = self.registration.status().per_user_metrics();
        telemetry::transfer_finished(
            transfer.direction,
            result,
            bytes.unwrap_or_else(|| self.progress.bytes()),
            transfer.started.elapsed(),
            self.session.user_name().filter(|_| per_user),
        );
    }

    /// Hands a received line to the session, counting it and the session's activity.
    fn handle_line(&mut self, line: Result<Vec<u8>, LineError>) {
        score_line(&self.context, self.peer, &line);
        hand_line_to(&mut self.session, &self.registration, line);
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

    /// Reads what the control connection has without waiting: `false` when it is closed.
    /// Lines that arrived are handed to the session (they queue behind the transfer).
    fn control_still_open(&mut self) -> io::Result<bool> {
        let mut buffer = [0u8; CONTROL_READ];
        loop {
            // One poll, no waiting: `None` means nothing has arrived.
            match self.stream.read(&mut buffer).now_or_never() {
                None => return Ok(true),
                Some(Ok(0)) => return Ok(false),
                Some(Ok(read)) => {
                    self.lines.push(&buffer[..read]);
                    while let Some(line) = self.lines.next_line() {
                        self.handle_line(line);
                    }
                    if !self.read_past_urgent_mark()? {
                        return Ok(false);
                    }
                }
                Some(Err(error)) if error.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                // A TLS client that vanished without close_notify.
                Some(Err(error))
                    if matches!(
                        error.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return Ok(false);
                }
                Some(Err(error)) => return Err(error),
            }
        }
    }

    /// Reads on past TCP urgent data; `false` when the client closed the connection.
    ///
    /// RFC 959 §4.1.3 has clients send ABOR after Telnet IP and Synch, the Synch being
    /// IAC DM with TCP urgent data (lftp sends `IAC IP IAC` with `MSG_OOB`, then `DM ABOR`;
    /// Python's ftplib sends the whole `ABOR` line with `MSG_OOB`). With `SO_OOBINLINE` the
    /// urgent byte stays in the stream (the framer drops the Telnet commands), but the kernel
    /// ends a read just before the urgent mark, and tokio takes a read shorter than its
    /// buffer for a drained socket: it waits for the next edge, which comes only with the
    /// client's next command, so ABOR was answered only after the command that followed it.
    /// A read that ends inside a line is exactly what the mark produces (clients send whole
    /// lines), so only then the socket is read again directly, without waiting, until the
    /// line is complete or nothing more has arrived. TLS clients send no urgent data (it
    /// would land inside a TLS record), so only plain connections need this.
    fn read_past_urgent_mark(&mut self) -> io::Result<bool> {
        let ControlStream::Plain(tcp) = &self.stream else {
            return Ok(true);
        };
        let socket = socket2::SockRef::from(tcp);
        let mut buffer = [0u8; CONTROL_READ];
        // A few rounds at most: one urgent mark per ABOR, and a client that streams bytes
        // must not keep the thread here.
        for _ in 0..URGENT_MARK_READS {
            if self.lines.pending() == 0 {
                break;
            }
            // The socket is non-blocking (tokio's); bypassing tokio here is sound because
            // a `WouldBlock` leaves its readiness cleared, as the short read did.
            match io::Read::read(&mut &*socket, &mut buffer) {
                Ok(0) => return Ok(false),
                Ok(read) => {
                    self.lines.push(&buffer[..read]);
                    while let Some(line) = self.lines.next_line() {
                        score_line(&self.context, self.peer, &line);
                        hand_line_to(&mut self.session, &self.registration, line);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }

    async fn client_gone(&mut self) {
        match std::mem::replace(&mut self.stage, TransferStage::Idle) {
            TransferStage::Idle => {}
            // The client was still there when its upload was complete; the publication is
            // under way and finishes, only the 226 reply has no one to go to.
            TransferStage::Committing(commit) => {
                let result = commit.await;
                self.settle_quota(self.transfer_bytes, result.as_ref().ok().copied());
                match result {
                    Ok(_) => self.log_transfer(TransferEnd::Complete(self.transfer_bytes)),
                    Err(error) => self.log_transfer(TransferEnd::Failed(error.to_string())),
                }
            }
            _ => self.log_transfer(TransferEnd::Failed(
                "client closed the control connection".to_owned(),
            )),
        }
    }
}

/// A line over the length cap counts against the client's address (a protocol error).
fn score_line(context: &ServerContext, peer: SocketAddr, line: &Result<Vec<u8>, LineError>) {
    if matches!(line, Err(LineError::TooLong)) {
        context
            .defender
            .record(peer.ip(), DefenderEvent::ProtocolError);
    }
}

/// [`ControlConnection::handle_line`], for where the connection's stream is borrowed.
fn hand_line_to(
    session: &mut Session,
    registration: &SessionHandle,
    line: Result<Vec<u8>, LineError>,
) {
    let now = now();
    if let Ok(text) = &line {
        telemetry::command(telemetry::verb_label(text));
    }
    registration.touch(now);
    session.handle_line(line, now);
}

/// What a DELE or RNTO will take off the account's quota usage, when it has a quota
/// (`counter`): the size of the file removed or renamed over (a rename inside the home moves
/// usage, it does not change it).
async fn usage_change(
    counter: Option<Arc<crate::quota::UsageCounter>>,
    storage: &dyn ferroftp_backend::Storage,
    request: &StorageRequest,
) -> Option<(Arc<crate::quota::UsageCounter>, i64, i64)> {
    let counter = counter?;
    let removed = match request {
        StorageRequest::RemoveFile(path) => path,
        StorageRequest::Rename { from, to } if from != to => to,
        _ => return None,
    };
    let meta = storage.metadata(removed).await.ok()?;
    if meta.is_dir() {
        return None;
    }
    Some((counter, -i64::try_from(meta.size).unwrap_or(i64::MAX), -1))
}

/// A login with the right password that the account's policy refuses (530): logged and
/// counted apart from wrong passwords, and never fed to the defender.
fn login_refused(client: std::net::IpAddr, user: &str, reason: &'static str) {
    warn!(
        client = %client,
        user = ?Escaped(user),
        reason = %reason,
        reply = 530,
        "login refused"
    );
    telemetry::login(LoginResult::Refused, None);
}

async fn storage_operation(
    storage: &Arc<dyn Storage>,
    request: StorageRequest,
) -> Result<StorageResult, StorageErrorKind> {
    let result = match &request {
        StorageRequest::Metadata(path) => storage.metadata(path).await.map(StorageResult::Metadata),
        StorageRequest::ResumableSize(path) => {
            storage.resumable_size(path).await.map(StorageResult::Size)
        }
        StorageRequest::StatListing(path) => stat_listing(storage, path).await,
        StorageRequest::MakeDir(path) => storage.make_dir(path).await.map(|()| StorageResult::Done),
        StorageRequest::RemoveDir(path) => {
            storage.remove_dir(path).await.map(|()| StorageResult::Done)
        }
        StorageRequest::RemoveFile(path) => storage
            .remove_file(path)
            .await
            .map(|()| StorageResult::Done),
        StorageRequest::Rename { from, to } => {
            storage.rename(from, to).await.map(|()| StorageResult::Done)
        }
        StorageRequest::SetModified { path, time } => storage
            .set_modified(path, *time)
            .await
            .map(|()| StorageResult::Done),
        StorageRequest::SetMode { path, mode } => storage
            .set_mode(path, *mode)
            .await
            .map(|()| StorageResult::Done),
        // Answered by the control loop from the account's usage.
        StorageRequest::QuotaUsage => Ok(StorageResult::QuotaUsage(None)),
    };
    match result {
        Ok(result) => {
            // Changes are logged with the command and the paths in their client form.
            let change = match &request {
                StorageRequest::Metadata(_)
                | StorageRequest::ResumableSize(_)
                | StorageRequest::StatListing(_)
                | StorageRequest::QuotaUsage => None,
                StorageRequest::MakeDir(path) => Some(("MKD", path, None)),
                StorageRequest::RemoveDir(path) => Some(("RMD", path, None)),
                StorageRequest::RemoveFile(path) => Some(("DELE", path, None)),
                StorageRequest::Rename { from, to } => Some(("RNTO", from, Some(to))),
                StorageRequest::SetModified { path, .. } => Some(("MFMT", path, None)),
                StorageRequest::SetMode { path, .. } => Some(("SITE CHMOD", path, None)),
            };
            if let Some((command, path, to)) = change {
                info!(
                    command,
                    path = ?Escaped(path),
                    to = to.map(|to| tracing::field::debug(Escaped(to))),
                    "storage changed"
                );
            }
            Ok(result)
        }
        Err(error) => {
            // Debug escapes the client's paths in the request; the error may quote one too.
            debug!(?request, error = %Escaped(&error), "storage operation failed");
            Err(error.kind)
        }
    }
}

async fn stat_listing(
    storage: &Arc<dyn Storage>,
    path: &ferroftp_proto::VirtualPath,
) -> Result<StorageResult, StorageError> {
    let meta = storage.metadata(path).await?;
    if !meta.is_dir() {
        let name = path.file_name().unwrap_or("/").to_owned();
        return Ok(StorageResult::Entries {
            entries: vec![DirEntry { name, meta }],
            now: std::time::SystemTime::now(),
        });
    }
    let mut stream = storage.list(path).await?;
    let mut entries = Vec::new();
    while let Some(entry) = stream.next().await {
        entries.push(entry?);
        if entries.len() >= MAX_STAT_ENTRIES {
            break;
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(StorageResult::Entries {
        entries,
        now: std::time::SystemTime::now(),
    })
}

/// The port announced for a listening passive port (`passive.advertise_ports` maps the range
/// 1:1; validated to fit at start).
fn announced_port(listening: u16, offset: i32) -> u16 {
    u16::try_from(i32::from(listening) + offset).unwrap_or(listening)
}

/// Makes an upload's data durable (when the storage fsyncs), then waits until
/// `publish_after` if that has not passed yet: see [`CLIENT_GONE_GRACE`].
async fn secure(
    mut upload: Box<dyn Upload>,
    publish_after: tokio::time::Instant,
) -> Result<Box<dyn Upload>, StorageError> {
    upload.make_durable().await?;
    let remaining = publish_after.saturating_duration_since(tokio::time::Instant::now());
    if !remaining.is_zero() {
        // On a blocking thread: the async timer's resolution is a millisecond, which would
        // double the wait. The control loop keeps watching the control connection meanwhile.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(remaining)).await;
    }
    Ok(upload)
}

async fn commit(upload: Box<dyn Upload>) -> Result<u64, StorageError> {
    upload.commit().await
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
