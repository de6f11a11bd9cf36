//! The tokio driver of ferroftp: listeners, control connections around
//! [`ferroftp_proto::Session`], the passive port pool, active connects and session limits.
//!
//! ```text
//! Server::bind ─► accept loop ─► SessionLimiter ─► connection::serve (one task each)
//!                                                      │  Session (proto) ◄─► actions
//!                                                      ├─ Storage / Authenticator (backend)
//!                                                      └─ data channel: PassivePortPool | connect
//! ```

mod connection;
mod data;
mod limits;
mod passive;

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
use tracing::{info, warn};

pub use data::DataChannelOptions;
use limits::{LimitExceeded, SessionLimiter};
pub use passive::PassivePortPool;

/// Everything the server needs to know, already validated and typed.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Control-connection listen addresses (port 0 picks a free port).
    pub listeners: Vec<SocketAddr>,
    /// Protocol policy.
    pub session: SessionConfig,
    /// Passive data ports (inclusive).
    pub passive_ports: RangeInclusive<u16>,
    /// The address PASV announces; `None` announces the control connection's local
    /// address.
    pub advertise: Option<IpAddr>,
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
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listeners: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            session: SessionConfig::default(),
            passive_ports: 50000..=50100,
            advertise: None,
            data: DataChannelOptions::default(),
            max_sessions: 1000,
            max_sessions_per_ip: 50,
            failed_login_delay: Duration::from_secs(1),
            max_line: DEFAULT_MAX_LINE,
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
}

/// What every connection of one server shares. Immutable.
#[derive(Debug)]
pub(crate) struct ServerContext {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    pub(crate) session: Arc<SessionConfig>,
    pub(crate) passive_pool: Arc<PassivePortPool>,
    pub(crate) advertise: Option<IpAddr>,
    pub(crate) data: DataChannelOptions,
    pub(crate) failed_login_delay: Duration,
    pub(crate) max_line: usize,
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<TcpListener>,
    context: Arc<ServerContext>,
    limiter: Arc<SessionLimiter>,
}

impl Server {
    /// Binds every listener; nothing is accepted until [`run`](Self::run).
    pub async fn bind(
        options: ServerOptions,
        storage: Arc<dyn Storage>,
        authenticator: Arc<dyn Authenticator>,
    ) -> Result<Self, ServerError> {
        let mut listeners = Vec::with_capacity(options.listeners.len());
        for address in &options.listeners {
            let listener =
                TcpListener::bind(address)
                    .await
                    .map_err(|source| ServerError::Bind {
                        address: *address,
                        source,
                    })?;
            listeners.push(listener);
        }
        let mut session = options.session;
        session.allow_resume_upload = storage.capabilities().resume_upload;
        let context = Arc::new(ServerContext {
            storage,
            authenticator,
            session: Arc::new(session),
            passive_pool: Arc::new(PassivePortPool::new(options.passive_ports)),
            advertise: options.advertise,
            data: options.data,
            failed_login_delay: options.failed_login_delay,
            max_line: options.max_line,
        });
        let limiter = Arc::new(SessionLimiter::new(
            options.max_sessions,
            options.max_sessions_per_ip,
        ));
        Ok(Self {
            listeners,
            context,
            limiter,
        })
    }

    /// The bound addresses, in the order of [`ServerOptions::listeners`].
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|listener| listener.local_addr().ok())
            .collect()
    }

    /// Accepts connections until `shutdown` completes. Sessions already running continue
    /// until they end on their own or the runtime stops.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut accept_loops = tokio::task::JoinSet::new();
        for listener in self.listeners {
            accept_loops.spawn(accept_loop(
                listener,
                Arc::clone(&self.context),
                Arc::clone(&self.limiter),
            ));
        }
        shutdown.await;
        info!("shutting down: no new connections");
        accept_loops.shutdown().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    context: Arc<ServerContext>,
    limiter: Arc<SessionLimiter>,
) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match limiter.try_acquire(peer.ip()) {
            Ok(permit) => permit,
            Err(exceeded) => {
                let text: &[u8] = match exceeded {
                    LimitExceeded::Global => b"421 Too many sessions, try later\r\n",
                    LimitExceeded::PerIp => b"421 Too many sessions from your address\r\n",
                };
                warn!(%peer, ?exceeded, "session refused");
                tokio::spawn(async move {
                    let _ = stream.write_all(text).await;
                    let _ = stream.shutdown().await;
                });
                continue;
            }
        };
        let context = Arc::clone(&context);
        tokio::spawn(async move {
            connection::serve(stream, peer, context).await;
            drop(permit);
        });
    }
}
