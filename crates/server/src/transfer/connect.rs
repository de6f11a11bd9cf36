//! Making the data connection: accepting it on the session's passive listener (from the
//! control connection's client only) or connecting out for PORT/EPRT, and the server side of
//! its TLS handshake for PROT P.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferroftp_proto::session::{DataTlsFailure, TransferFailure};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use crate::passive::{PassiveListener, PortLease};
use crate::proxy_protocol::{self, ProxyProtocolOptions};
use crate::telemetry::{self, RefusedDataConnection};
use crate::{tls, tls_lineage};

/// The target of this file's log events: that of `data.rs`, where they were written before
/// the transfer module was split by job (log targets are matched by operators' filters).
const LOG_TARGET: &str = "ferroftp_server::data";

/// Why a data connection could not be made (425). Its text is the reply's detail.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DataConnectionError {
    /// PASV/EPSV was not sent, or its listener was used already.
    #[error("no passive listener")]
    NoPassiveListener,
    /// PROT P without TLS set up on the server.
    #[error("TLS is not configured")]
    TlsNotConfigured,
    /// The client did not connect to the passive port in time.
    #[error("no connection to passive port {port} within {}s", timeout.as_secs())]
    AcceptTimeout { port: u16, timeout: Duration },
    /// Accepting on the passive port failed.
    #[error("{0}")]
    Accept(#[source] io::Error),
    /// No socket for an active connection.
    #[error("{0}")]
    Socket(#[source] io::Error),
    /// The active connection was refused or failed.
    #[error("connecting to {target} failed: {source}")]
    Connect {
        target: SocketAddr,
        source: io::Error,
    },
    /// The active connection took too long.
    #[error("connecting to {target} timed out after {}s", timeout.as_secs())]
    ConnectTimeout {
        target: SocketAddr,
        timeout: Duration,
    },
}

impl From<DataConnectionError> for TransferFailure {
    fn from(error: DataConnectionError) -> Self {
        Self::DataConnection(error.to_string())
    }
}

/// PROT P: how the data connection's TLS handshake is run and checked.
pub(crate) struct DataTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    /// The control connection's lineage (see `tls_lineage.rs`).
    pub(crate) lineage: tls_lineage::DataLineage,
    pub(crate) require_resumption: bool,
    pub(crate) handshake_timeout: Duration,
}

/// Timeouts and sizes of the data channel.
#[derive(Clone, Debug)]
pub struct DataChannelOptions {
    /// How long a passive listener waits for the client to connect.
    pub accept_timeout: Duration,
    /// How long an active connect may take.
    pub connect_timeout: Duration,
    /// A transfer with no progress for this long is cut.
    pub idle_timeout: Duration,
}

impl Default for DataChannelOptions {
    fn default() -> Self {
        Self {
            accept_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Where the data connection comes from.
#[derive(Debug)]
pub(crate) enum DataSource {
    /// Accept on this listener a connection from `expected_peer` only (after the PROXY
    /// header, when the connection comes from a trusted proxy).
    Passive {
        listener: PassiveListener,
        expected_peer: IpAddr,
        proxy: Arc<ProxyProtocolOptions>,
        /// Scores a foreign address that connects (port stealing).
        defender: Arc<crate::Defender>,
    },
    /// Connect from `local_ip` (and `source_port` when it can be bound) to `target`.
    Active {
        local_ip: IpAddr,
        source_port: Option<u16>,
        target: SocketAddr,
    },
}

pub(super) async fn open_data_connection(
    source: DataSource,
    options: &DataChannelOptions,
) -> Result<(TcpStream, Option<PortLease>), TransferFailure> {
    let (stream, lease) = match source {
        DataSource::Passive {
            listener,
            expected_peer,
            proxy,
            defender,
        } => {
            let (stream, lease) = accept_from(
                listener,
                expected_peer,
                &proxy,
                &defender,
                options.accept_timeout,
            )
            .await?;
            (stream, Some(lease))
        }
        DataSource::Active {
            local_ip,
            source_port,
            target,
        } => {
            let stream = connect_to(local_ip, source_port, target, options.connect_timeout).await?;
            // (A passive connection has it from its listener.)
            let _ = stream.set_nodelay(true);
            (stream, None)
        }
    };
    Ok((stream, lease))
}

/// Accepts the data connection, refusing any from another address than the control
/// connection's client: a third party that guesses the port must not get the data. Behind a
/// trusted proxy, the address compared is the one its PROXY header names.
async fn accept_from(
    mut passive: PassiveListener,
    expected_peer: IpAddr,
    proxy: &ProxyProtocolOptions,
    defender: &crate::Defender,
    accept_timeout: Duration,
) -> Result<(TcpStream, PortLease), TransferFailure> {
    let expected_peer = expected_peer.to_canonical();
    let deadline = tokio::time::Instant::now() + accept_timeout;
    loop {
        let accepted = tokio::time::timeout_at(deadline, passive.accept()).await;
        let (mut stream, mut peer) = match accepted {
            Err(_) => {
                telemetry::data_connection_refused(RefusedDataConnection::Timeout, 1);
                return Err(DataConnectionError::AcceptTimeout {
                    port: passive.port(),
                    timeout: accept_timeout,
                }
                .into());
            }
            Ok(Err(error)) => return Err(DataConnectionError::Accept(error).into()),
            Ok(Ok(accepted)) => accepted,
        };
        if proxy.is_trusted(peer.ip()) {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match proxy_protocol::read_header(&mut stream, proxy.header_timeout.min(remaining))
                .await
            {
                Ok(Some(source)) => peer = source,
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(target: LOG_TARGET, %peer, %error, "passive data connection from the proxy without a valid PROXY header");
                    telemetry::proxy_header_rejected(telemetry::ProxyHeaderRejection::Invalid);
                    continue;
                }
            }
        }
        if peer.ip().to_canonical() == expected_peer {
            return Ok((stream, passive.into_lease()));
        }
        telemetry::data_connection_refused(RefusedDataConnection::ForeignPeer, 1);
        defender.record(peer.ip(), crate::DefenderEvent::ForeignDataConnection);
        tracing::warn!(target: LOG_TARGET,
            %peer,
            expected = %expected_peer,
            port = passive.port(),
            "refused passive data connection from a foreign address"
        );
    }
}

/// Set once the configured active source port could not be bound, so the fallback is
/// reported once, not at every transfer.
static SOURCE_PORT_WARNED: AtomicBool = AtomicBool::new(false);

async fn connect_to(
    local_ip: IpAddr,
    source_port: Option<u16>,
    target: SocketAddr,
    connect_timeout: Duration,
) -> Result<TcpStream, TransferFailure> {
    let new_socket = || {
        if target.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(DataConnectionError::Socket)
    };
    let mut socket = new_socket()?;
    // Leave from the address the client talks to, so its firewall sees the server it knows.
    if local_ip.is_ipv4() == target.is_ipv4() {
        let mut bound = false;
        if let Some(port) = source_port {
            // RFC 959 §3.2: the server's default data port is L-1. Several transfers may
            // leave from it at once (each to another client port): SO_REUSEADDR.
            let _ = socket.set_reuseaddr(true);
            match socket.bind(SocketAddr::new(local_ip, port)) {
                Ok(()) => bound = true,
                Err(error) => {
                    if !SOURCE_PORT_WARNED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(target: LOG_TARGET,
                            port,
                            %error,
                            "active.source_port: cannot bind the data source port, using an ephemeral port"
                        );
                    }
                    socket = new_socket()?;
                }
            }
        }
        if !bound {
            let _ = socket.bind(SocketAddr::new(local_ip, 0));
        }
    }
    match timeout(connect_timeout, socket.connect(target)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(DataConnectionError::Connect { target, source }.into()),
        Err(_) => {
            telemetry::data_connection_refused(RefusedDataConnection::Timeout, 1);
            Err(DataConnectionError::ConnectTimeout {
                target,
                timeout: connect_timeout,
            }
            .into())
        }
    }
}

/// The server side of the data connection's handshake, then the reuse check (see `tls.rs`).
pub(super) async fn protect(
    data: TcpStream,
    tls: &DataTls,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, TransferFailure> {
    let handshake =
        tls::handshake(&tls.config, data, tls.lineage.id(), tls.handshake_timeout).await;
    telemetry::tls_handshake(telemetry::TlsConnection::Data, handshake.is_ok());
    let (stream, resumed) = handshake
        .map_err(|error| TransferFailure::DataTls(DataTlsFailure::Handshake(error.to_string())))?;
    // Exempt transfers (`require_resumption` false) are not checked, and never wait.
    let accepted = !tls.require_resumption
        || match resumed {
            Some(lineage) => {
                tls.lineage
                    .accepts(lineage, tls.handshake_timeout, std::time::Instant::now())
                    .await
            }
            None => false,
        };
    if !accepted {
        metrics::counter!("ferroftp_tls_reuse_refused_total").increment(1);
        let connection = stream.get_ref().1;
        tracing::warn!(target: LOG_TARGET,
            handshake = ?connection.handshake_kind(),
            version = ?connection.protocol_version(),
            foreign_session = resumed.is_some(),
            "refused a protected data connection that did not resume a TLS session of its control connection's lineage"
        );
        return Err(TransferFailure::DataTls(DataTlsFailure::NotResumed));
    }
    Ok(stream)
}
