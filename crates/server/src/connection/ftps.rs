//! FTPS on the control connection: TLS from the start on an implicit listener, the upgrade
//! after AUTH TLS (RFC 4217 §4) and the way back to plain text after CCC (§6).

use std::io;
use std::net::SocketAddr;

use ferroftp_proto::Escaped;
use ferroftp_proto::session::{ControlTransport, TlsInfo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::input::CONTROL_READ;
use super::{ControlConnection, ControlStream, LOG_TARGET};
use crate::telemetry;
use crate::tls;
use crate::tls_lineage::ControlLineage;
use crate::{DefenderEvent, ListenerTls, ServerContext};

/// The stream a new control connection starts with: TLS at once on an implicit listener
/// (RFC 4217 §12; `None` when its handshake fails), plain text otherwise, and how the
/// session is told so.
pub(super) async fn open_control_stream(
    stream: TcpStream,
    peer: SocketAddr,
    listener_index: usize,
    context: &ServerContext,
    lineage: &mut Option<ControlLineage>,
) -> Option<(ControlStream, ControlTransport)> {
    let listener_tls = context
        .listener_tls
        .get(listener_index)
        .copied()
        .unwrap_or_default();
    match (listener_tls, &context.tls, lineage) {
        (ListenerTls::Implicit, Some(tls), Some(lineage)) => {
            match tls.accept(stream, lineage).await {
                Ok(stream) => {
                    telemetry::tls_handshake(telemetry::TlsConnection::Control, true);
                    let info = tls::tls_info(stream.get_ref().1);
                    Some((
                        ControlStream::Tls(Box::new(stream)),
                        ControlTransport::Implicit(info),
                    ))
                }
                Err(error) => {
                    debug!(target: LOG_TARGET, %peer, error = %Escaped(&error), "implicit TLS handshake failed");
                    telemetry::tls_handshake(telemetry::TlsConnection::Control, false);
                    context
                        .defender
                        .record(peer.ip(), DefenderEvent::TlsHandshakeFailure);
                    None
                }
            }
        }
        (ListenerTls::Explicit, Some(_), _) => {
            Some((ControlStream::Plain(stream), ControlTransport::Explicit))
        }
        _ => Some((ControlStream::Plain(stream), ControlTransport::Plain)),
    }
}

impl ControlConnection {
    /// AUTH TLS: the 234 reply went out; whatever the client sent after AUTH TLS and before
    /// its handshake is discarded (the session drops the complete lines, the buffer the
    /// rest), then the handshake runs on the TCP stream.
    pub(super) async fn upgrade_to_tls(&mut self) -> Result<TlsInfo, String> {
        let discarded = self.lines.pending();
        self.lines.clear();
        if discarded > 0 || self.session.discarded_lines() > 0 {
            warn!(target: LOG_TARGET,
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
                debug!(target: LOG_TARGET,
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
                debug!(target: LOG_TARGET, error = %Escaped(&error), "TLS handshake after AUTH TLS failed");
                telemetry::tls_handshake(telemetry::TlsConnection::Control, false);
                self.context
                    .defender
                    .record(self.peer.ip(), DefenderEvent::TlsHandshakeFailure);
                Err(error.to_string())
            }
        }
    }

    /// CCC: close_notify, wait for the client's, then plain text on the same TCP connection.
    pub(super) async fn clear_control_tls(&mut self) -> io::Result<()> {
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
        self.input().hand_over_lines();
        debug!(target: LOG_TARGET, "control connection back to plain text (CCC)");
        Ok(())
    }
}
