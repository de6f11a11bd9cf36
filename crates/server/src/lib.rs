//! The tokio driver of ferroftp: listeners, control connections around
//! [`ferroftp_proto::Session`], the passive port pool, active connects and session limits.
//!
//! ```text
//! Server::bind ─► accept loop ─► SessionLimiter ─► connection::serve (one task each)
//!                                                      │  Session (proto) ◄─► actions
//!                                                      ├─ Storage / Authenticator (backend)
//!                                                      └─ data channel: PassivePortPool | connect
//! ```

mod advertise;
mod connection;
mod defender;
mod descriptors;
mod drain;
mod home;
mod limits;
mod memory_release;
mod passive;
mod proxy_protocol;
mod quota;
mod reload;
mod session_threads;
mod status;
pub mod telemetry;
mod throttle;
mod tls;
mod tls_lineage;
mod transfer;
mod user_policy;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use ferroftp_backend::{Authenticator, Storage};
use ferroftp_proto::SessionConfig;
use ferroftp_proto::framing::DEFAULT_MAX_LINE;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use advertise::PassiveAddressPolicy;
pub use advertise::{AdvertiseOptions, AdvertiseTarget};
pub use defender::{
    BanRecord, Defender, DefenderEvent, DefenderOptions, DefenderWeights,
    Verdict as DefenderVerdict,
};
pub use descriptors::DESCRIPTORS_PER_SESSION;
use drain::{Drain, Phase};
pub use ipnet::IpNet;
use limits::{LimitExceeded, SessionLimiter};
pub use memory_release::return_large_buffers_when_freed;
pub use passive::{PassiveLimits, PassivePortPool};
pub use proxy_protocol::ProxyProtocolOptions;
#[cfg(feature = "fuzzing")]
pub use proxy_protocol::read_header_from_bytes;
use reload::Swappable;
pub use reload::{ReloadReport, ServerHandle};
pub use session_threads::SessionThreads;
pub use status::{
    RecentError, RecentErrors, ServerStatus, SessionSnapshot, StatusSnapshot, TransferSnapshot,
};
pub use telemetry::record_reload;
pub use tls::{CertificateSource, ClientCertMode, TlsError, TlsOptions, TlsReloader, TlsVersion};
pub use transfer::{
    DataChannelOptions, TransferCompletion, TransferDirection, TransferObserver, TransferRecord,
};
pub use user_policy::UserLimitsOptions;

/// One control listener.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// Listen address (port 0 picks a free port).
    pub address: SocketAddr,
    /// What PASV announces to clients of this listener (rule 2 of the advertise rules).
    pub advertise: Option<IpAddr>,
    /// TLS on this listener; anything but `Off` needs [`ServerOptions::tls`].
    pub tls: ListenerTls,
}

impl ListenerOptions {
    /// A plain listener on `address` with no address of its own to announce.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            advertise: None,
            tls: ListenerTls::Off,
        }
    }
}

/// TLS on a control listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListenerTls {
    /// Plain FTP; AUTH TLS is refused.
    #[default]
    Off,
    /// Plain until AUTH TLS (RFC 4217).
    Explicit,
    /// TLS from the first byte (port 990 style); data protected unless PROT C.
    Implicit,
}

/// Which local port active-mode data connections leave from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ActiveSourcePort {
    /// Any (ephemeral) port.
    #[default]
    Any,
    /// The control port minus one (20 for 21), RFC 959's default, which some client
    /// firewalls expect; falls back to an ephemeral port, with one warning, when it cannot be
    /// bound (port 20 needs privileges).
    ControlMinusOne,
}

/// Everything the server needs to know, already validated and typed.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Control listeners.
    pub listeners: Vec<ListenerOptions>,
    /// Protocol policy.
    pub session: SessionConfig,
    /// Passive data ports (inclusive).
    pub passive_ports: RangeInclusive<u16>,
    /// What PASV announces (see `advertise.rs` for the order of the rules).
    pub advertise: AdvertiseOptions,
    /// Ports announced instead of the listening ones, 1:1 (L4 port translation in front of
    /// the server); must be as long as `passive_ports`.
    pub advertise_ports: Option<RangeInclusive<u16>>,
    /// A passive port is not handed to the same client again within this delay while
    /// another port is free.
    pub passive_reuse_delay: Duration,
    /// Most passive ports held at once per user and per client address; `None`: the
    /// defaults for the range's size ([`PassiveLimits::for_range`]).
    pub passive_limits: Option<PassiveLimits>,
    /// Source port of active-mode connections.
    pub active_source_port: ActiveSourcePort,
    /// PROXY protocol sources.
    pub proxy_protocol: ProxyProtocolOptions,
    /// Data-channel timeouts.
    pub data: DataChannelOptions,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Most sessions at once from one client IP.
    pub max_sessions_per_ip: usize,
    /// Pause before answering a failed login.
    pub failed_login_delay: Duration,
    /// Longest command line accepted.
    pub max_line: usize,
    /// FTPS certificate and settings; needed by listeners with TLS.
    pub tls: Option<TlsOptions>,
    /// After a shutdown begins, how long running transfers may take to finish before they
    /// are aborted (426).
    pub shutdown_grace: Duration,
    /// Told about every transfer that ended (the transfer log, metrics).
    pub transfer_observer: Option<Arc<dyn TransferObserver>>,
    /// Server-wide bandwidth limits and the default session cap per account (`[limits]`).
    pub limits: UserLimitsOptions,
    /// Auto-ban of misbehaving client addresses (`defender/`).
    pub defender: DefenderOptions,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listeners: vec![ListenerOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)))],
            session: SessionConfig::default(),
            passive_ports: 50000..=50100,
            advertise: AdvertiseOptions::default(),
            advertise_ports: None,
            passive_reuse_delay: Duration::from_secs(60),
            passive_limits: None,
            active_source_port: ActiveSourcePort::Any,
            proxy_protocol: ProxyProtocolOptions::default(),
            data: DataChannelOptions::default(),
            max_sessions: 1000,
            max_sessions_per_ip: 50,
            failed_login_delay: Duration::from_secs(1),
            max_line: DEFAULT_MAX_LINE,
            tls: None,
            shutdown_grace: Duration::from_secs(30),
            transfer_observer: None,
            limits: UserLimitsOptions::default(),
            defender: DefenderOptions::default(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listen address could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// TLS could not be set up (certificate, key, client CA).
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// A listener has TLS but no certificate was given.
    #[error("listener {0} uses TLS but no TLS certificate is configured")]
    TlsNotConfigured(SocketAddr),
    /// A reload asked for something only a restart can change.
    #[error("{0} cannot change without a restart")]
    NeedsRestart(&'static str),
}

/// What every connection of one configuration generation shares. Immutable: a reload
/// builds the next generation (see `reload.rs`); a session keeps the one it started with,
/// except for the passive-address rules, which every session reads anew at each PASV.
#[derive(Debug)]
pub(crate) struct ServerContext {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    /// Homes created or found at a first login.
    /// Shared by every generation: a reload does not forget which homes exist.
    pub(crate) homes: Arc<home::KnownHomes>,
    /// Logged-in accounts (session caps, bandwidth buckets, quota usage) and the server's
    /// buckets; shared by every generation.
    pub(crate) users: Arc<user_policy::UserRegistry>,
    pub(crate) session: Arc<SessionConfig>,
    pub(crate) passive_pool: Arc<PassivePortPool>,
    /// Shared by every generation: a reload replaces the rules for open sessions too.
    pub(crate) passive_addresses: Arc<Swappable<PassiveAddressPolicy>>,
    /// Added to a listening passive port to get the announced one.
    pub(crate) announced_port_offset: i32,
    pub(crate) active_source_port: ActiveSourcePort,
    pub(crate) proxy_protocol: Arc<ProxyProtocolOptions>,
    pub(crate) data: DataChannelOptions,
    pub(crate) failed_login_delay: Duration,
    pub(crate) max_line: usize,
    pub(crate) tls: Option<Arc<tls::TlsContext>>,
    /// TLS mode of each listener, by index.
    pub(crate) listener_tls: Vec<ListenerTls>,
    /// The options this generation was built from (a reload compares against them).
    pub(crate) options: ServerOptions,
    /// Shutdown phase and open sessions, shared by every generation.
    pub(crate) drain: Arc<Drain>,
    pub(crate) transfer_observer: Option<Arc<dyn TransferObserver>>,
    /// The live view (sessions, transfers, draining), shared by every generation.
    pub(crate) status: Arc<ServerStatus>,
    /// Scores and bans of client addresses, shared by every generation (a reload gives it
    /// the new policy; bans stay).
    pub(crate) defender: Arc<Defender>,
}

/// Builds a TLS context from `options` and drops it: loads the certificate, the key and
/// the client CA as the server would (for `check-config`).
pub fn check_tls_options(options: &TlsOptions) -> Result<(), TlsError> {
    tls::TlsContext::new(options).map(drop)
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<TcpListener>,
    /// The configuration generation new connections get; replaced by a reload.
    contexts: Arc<Swappable<ServerContext>>,
    limiter: Arc<SessionLimiter>,
    /// Where sessions run: these threads, or (`None`) the runtime that runs the server.
    session_threads: Option<Arc<SessionThreads>>,
    handle: ServerHandle,
    status: Arc<ServerStatus>,
}

impl Server {
    /// Binds every listener; nothing is accepted until [`run`](Self::run).
    pub async fn bind(
        options: ServerOptions,
        storage: Arc<dyn Storage>,
        authenticator: Arc<dyn Authenticator>,
    ) -> Result<Self, ServerError> {
        let mut listeners = Vec::with_capacity(options.listeners.len());
        for listener in &options.listeners {
            let bound =
                bind_control_listener(listener.address).map_err(|source| ServerError::Bind {
                    address: listener.address,
                    source,
                })?;
            listeners.push(bound);
        }
        Self::serve_listeners(options, listeners, storage, authenticator).await
    }

    /// Like [`bind`](Self::bind), on listening sockets that already exist (handed over by
    /// systemd's socket activation), one per [`ServerOptions::listeners`] entry, in order;
    /// the entries' addresses are not bound.
    pub async fn from_listeners(
        options: ServerOptions,
        listeners: Vec<std::net::TcpListener>,
        storage: Arc<dyn Storage>,
        authenticator: Arc<dyn Authenticator>,
    ) -> Result<Self, ServerError> {
        let mut bound = Vec::with_capacity(listeners.len());
        for (listener, options) in listeners.into_iter().zip(&options.listeners) {
            let registered = listener
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(listener))
                .map_err(|source| ServerError::Bind {
                    address: options.address,
                    source,
                })?;
            bound.push(registered);
        }
        Self::serve_listeners(options, bound, storage, authenticator).await
    }

    async fn serve_listeners(
        options: ServerOptions,
        listeners: Vec<TcpListener>,
        storage: Arc<dyn Storage>,
        authenticator: Arc<dyn Authenticator>,
    ) -> Result<Self, ServerError> {
        let limiter = Arc::new(SessionLimiter::new(
            options.max_sessions,
            options.max_sessions_per_ip,
        ));
        let status = Arc::new(ServerStatus::new(
            listeners
                .iter()
                .zip(&options.listeners)
                .map(|(bound, configured)| {
                    bound.local_addr().unwrap_or(configured.address).to_string()
                })
                .collect(),
            Arc::clone(&storage),
        ));
        let defender = Arc::new(Defender::new(options.defender.clone()));
        match defender.load() {
            Ok(0) => {}
            Ok(loaded) => info!(bans = loaded, "defender: bans loaded from the persist file"),
            Err(error) => {
                warn!(%error, "defender: cannot read the persist file; starting without its bans")
            }
        }
        status.set_defender(Arc::clone(&defender));
        let context = reload::build_context(
            options,
            None,
            storage,
            authenticator,
            Arc::new(Drain::new()),
            Arc::clone(&status),
            defender,
        )
        .await?;
        status.set_passive_pool(Arc::clone(&context.passive_pool));
        let contexts = Arc::new(Swappable::new(context));
        let handle = ServerHandle::new(Arc::clone(&contexts), Arc::clone(&limiter));
        Ok(Self {
            listeners,
            contexts,
            limiter,
            session_threads: None,
            handle,
            status,
        })
    }

    /// Reloads, drains and reports on the server while it runs.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Accepts on `threads`, so that every session runs there, instead of on the runtime
    /// that runs the server (which keeps the background jobs: address resolution,
    /// certificate reloads).
    pub fn with_session_threads(mut self, threads: Arc<SessionThreads>) -> Self {
        self.session_threads = Some(threads);
        self
    }

    /// The bound addresses, in the order of [`ServerOptions::listeners`].
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|listener| listener.local_addr().ok())
            .collect()
    }

    /// The live view of this server (sessions, transfers, passive pool, draining), cheap to
    /// clone and to read; the admin listener serves it.
    pub fn status(&self) -> Arc<ServerStatus> {
        Arc::clone(&self.status)
    }

    /// Replaces the TLS certificate of the running server (from its files), when TLS is
    /// configured.
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        self.contexts
            .current()
            .tls
            .as_deref()
            .map(tls::TlsContext::reloader)
    }

    /// Accepts connections until `shutdown` completes, then drains (see
    /// [`run_until`](Self::run_until)) without a second signal.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.run_until(shutdown, std::future::pending()).await;
    }

    /// Accepts connections until `drain` completes; then closes the listeners, closes idle
    /// sessions with 421 and lets running transfers finish (then 421), for at most
    /// [`ServerOptions::shutdown_grace`] or until `stop` completes, whichever is first;
    /// then aborts what still runs (426, 421). Returns once every session has ended (or a
    /// few seconds after the abort, for clients that do not read their replies).
    pub async fn run_until(self, drain: impl Future<Output = ()>, stop: impl Future<Output = ()>) {
        // Measured now: the listeners, session threads and files of the server are open.
        let descriptor_cap = descriptors::session_cap();
        if descriptor_cap < usize::MAX {
            info!(
                sessions = descriptor_cap,
                "the open-files limit allows this many sessions at once"
            );
        }
        self.limiter.set_descriptor_cap(descriptor_cap);
        let mut tasks = tokio::task::JoinSet::new();
        let mut accepting_on_threads = Vec::new();
        let mut every_listener_accepts = true;
        for (index, listener) in self.listeners.into_iter().enumerate() {
            let context = Arc::clone(&self.contexts);
            let limiter = Arc::clone(&self.limiter);
            match &self.session_threads {
                None => {
                    tasks.spawn(accept_loop(listener, index, context, limiter));
                }
                Some(threads) => match accept_on_each(threads, listener, index, context, limiter) {
                    Ok(handles) => accepting_on_threads.extend(handles),
                    Err(error) => {
                        every_listener_accepts = false;
                        error!(%error, "listener {index}: cannot accept on the session threads")
                    }
                },
            }
        }
        self.handle.start_background_jobs();
        tasks.spawn(memory_release::release_after_peaks(
            self.handle.drain().watch_sessions(),
            memory_release::CHECK_EVERY,
            memory_release::SETTLE,
            memory_release::PROBES,
        ));
        // Ready (for `/readyz`) only when every listener accepts.
        self.status.set_accepting(every_listener_accepts);
        tokio::pin!(stop);
        tokio::select! {
            () = drain => {}
            () = &mut stop => {}
        }
        // Not ready from the first moment of the drain: load balancers stop sending clients.
        self.status.set_draining();
        self.status.set_accepting(false);
        // Listeners first: their sockets are closed once the loops are gone, waited for, so
        // that no connection is accepted (or queued) once sessions hear of the drain.
        for accepting in &accepting_on_threads {
            accepting.abort();
        }
        for accepting in accepting_on_threads {
            let _ = accepting.await;
        }
        tasks.shutdown().await;
        let draining = self.handle.drain();
        draining.advance(Phase::Draining);
        let grace = self.contexts.current().options.shutdown_grace;
        info!(
            sessions = draining.open_sessions(),
            grace_s = grace.as_secs(),
            "shutting down: listeners closed, sessions finish what they are doing"
        );
        tokio::select! {
            () = draining.all_sessions_ended() => {}
            () = tokio::time::sleep(grace) => {
                info!(sessions = draining.open_sessions(), "shutdown grace period over: aborting transfers");
            }
            () = &mut stop => {
                info!(sessions = draining.open_sessions(), "stopping now: aborting transfers");
            }
        }
        draining.advance(Phase::Stopping);
        if tokio::time::timeout(SESSION_CLOSE_WAIT, draining.all_sessions_ended())
            .await
            .is_err()
        {
            warn!(
                sessions = draining.open_sessions(),
                "sessions still open after the shutdown; leaving them"
            );
        }
        self.handle.stop_background_jobs();
        if let Err(error) = self.contexts.current().defender.save() {
            warn!(%error, "defender: cannot write the persist file");
        }
    }
}

/// How long sessions have to write their 426/421 and close once transfers are aborted.
const SESSION_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Starts an accept loop for `listener` on every session thread: each registers the listening
/// socket with its own event loop, and a connection belongs to the thread that accepts it
/// (see [`SessionThreads`]).
fn accept_on_each(
    threads: &SessionThreads,
    listener: TcpListener,
    listener_index: usize,
    context: Arc<Swappable<ServerContext>>,
    limiter: Arc<SessionLimiter>,
) -> io::Result<Vec<tokio::task::JoinHandle<()>>> {
    let listener = listener.into_std()?;
    Ok(threads.spawn_on_each(|| {
        let copy = listener.try_clone();
        let context = Arc::clone(&context);
        let limiter = Arc::clone(&limiter);
        async move {
            match copy.and_then(TcpListener::from_std) {
                Ok(listener) => accept_loop(listener, listener_index, context, limiter).await,
                Err(error) => {
                    error!(%error, "listener {listener_index}: cannot accept on a session thread")
                }
            }
        }
    }))
}

async fn accept_loop(
    listener: TcpListener,
    listener_index: usize,
    contexts: Arc<Swappable<ServerContext>>,
    limiter: Arc<SessionLimiter>,
) {
    let mut spare = descriptors::SpareDescriptor::open();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors despite the budget: answered 421 with the spare one.
                if spare.refuse_one(&listener, &error).await {
                    continue;
                }
                // Anything else: back off instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let context = contexts.current();
        // A banned address costs nothing more: no task, no greeting, no log line (its ban
        // was logged once). Behind a trusted proxy the address is known only after the
        // header, where the same check follows.
        if context.defender.is_banned(peer.ip()) && !context.proxy_protocol.is_trusted(peer.ip()) {
            refuse_banned(stream);
            continue;
        }
        // Behind a trusted proxy the limits apply to the real client, known only once its
        // header is read: that happens in the connection's own task, and the limit with it.
        if context.proxy_protocol.is_trusted(peer.ip()) {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                connection::serve_proxied(stream, peer, listener_index, context, limiter).await;
            });
            continue;
        }
        let permit = match limiter.try_acquire(peer.ip()) {
            Ok(permit) => permit,
            Err(exceeded) => {
                tokio::spawn(refuse(stream, peer, exceeded));
                continue;
            }
        };
        tokio::spawn(async move {
            connection::serve(stream, peer, listener_index, context).await;
            drop(permit);
        });
    }
}

/// Answers a connection over a session cap with 421 and closes it.
pub(crate) async fn refuse(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    exceeded: LimitExceeded,
) {
    let text: &[u8] = match exceeded {
        LimitExceeded::Global => b"421 Too many sessions, try later\r\n",
        LimitExceeded::PerIp => b"421 Too many sessions from your address\r\n",
        LimitExceeded::Descriptors => descriptors::REFUSAL,
    };
    warn!(%peer, ?exceeded, "session refused");
    let _ = stream.write_all(text).await;
    let _ = stream.shutdown().await;
}

/// Closes a connection from a banned address at once: a reset (linger 0), so that a flood
/// of refused connections leaves no TIME_WAIT sockets on the server.
pub(crate) fn refuse_banned(stream: tokio::net::TcpStream) {
    telemetry::defender_refused();
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Connections the kernel queues for `accept` (capped by `net.core.somaxconn`, 4096 by
/// default). The standard library's 128 overflows when a few hundred clients connect at
/// once, and every overflowed client waits a second or more for its SYN to be retransmitted.
const CONTROL_BACKLOG: i32 = 4096;

fn bind_control_listener(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM.nonblocking(),
        Some(socket2::Protocol::TCP),
    )?;
    // A restarted server can listen while its old connections are in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(CONTROL_BACKLOG)?;
    TcpListener::from_std(socket.into())
}
