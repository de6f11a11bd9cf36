//! Probes for diagnosis (`ferroftp doctor`): each step of a data connection done separately,
//! timed and classified, so a caller can say *where* a transfer hangs and how long it waited.
//!
//! [`Client::open_data`](crate::Client::open_data) negotiates and connects in one go and turns
//! every failure into an error. Here the steps are apart: ask for a passive address without
//! connecting ([`Client::request_passive`], [`Client::request_extended_passive`]), connect
//! with a classified, timed outcome ([`connect_timed`]), announce an active address whatever
//! the server answers ([`Client::offer_active`]), and run a transfer command over a
//! connection made that way, recording every reply ([`Client::probe_transfer`],
//! [`Client::probe_active_transfer`]). Every wait is bounded.

use std::fmt;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use ferroftp_proto::host_port::{
    format_eprt_argument, format_port_argument, parse_epsv_reply, parse_pasv_reply,
};
use ferroftp_proto::{Reply, ReplyCode, ReplyParser};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::client::Client;
use crate::error::ClientError;
use crate::tls::{ClientTls, MaybeTls, ServerVerification};

/// How long an active probe still waits for the server's connection once the final reply
/// arrived (the connection may have been accepted by the kernel just before).
const ACCEPT_GRACE: Duration = Duration::from_millis(500);

/// Why a TCP connect failed, in the terms that locate the fault.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The peer (or a firewall rejecting) answered with a reset: nothing listens there.
    Refused,
    /// No answer at all within the limit: a firewall drops the packets, or the address leads
    /// nowhere.
    TimedOut,
    /// The local stack has no route to the address, or a router answered "unreachable".
    Unreachable(io::Error),
    /// Any other error.
    Other(io::Error),
}

impl ConnectFailure {
    fn classify(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::TimedOut => Self::TimedOut,
            io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => {
                Self::Unreachable(error)
            }
            _ => Self::Other(error),
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused => formatter.write_str("refused (reset)"),
            Self::TimedOut => formatter.write_str("no answer (timed out)"),
            Self::Unreachable(error) => write!(formatter, "unreachable ({error})"),
            Self::Other(error) => write!(formatter, "failed ({error})"),
        }
    }
}

/// One timed TCP connect and its outcome.
#[derive(Debug)]
pub struct ConnectAttempt {
    /// Where the connect went.
    pub target: SocketAddr,
    /// How long it took to succeed or fail.
    pub elapsed: Duration,
    /// The connection, or why there is none.
    pub result: Result<TcpStream, ConnectFailure>,
}

impl ConnectAttempt {
    /// `true` when the connection is established.
    pub fn is_connected(&self) -> bool {
        self.result.is_ok()
    }

    /// The failure, when there is one.
    pub fn failure(&self) -> Option<&ConnectFailure> {
        self.result.as_ref().err()
    }
}

impl fmt::Display for ConnectAttempt {
    /// `connect to 10.0.0.2:50012: unreachable (Network is unreachable) after 0.000 s`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        match &self.result {
            Ok(_) => write!(
                formatter,
                "connect to {}: connected in {seconds:.3} s",
                self.target
            ),
            Err(failure) => write!(
                formatter,
                "connect to {}: {failure} after {seconds:.3} s",
                self.target
            ),
        }
    }
}

/// Connects to `target` within `limit` and reports how it went and how long it took.
pub async fn connect_timed(target: SocketAddr, limit: Duration) -> ConnectAttempt {
    let started = Instant::now();
    let result = match tokio::time::timeout(limit, TcpStream::connect(target)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(ConnectFailure::classify(error)),
        Err(_elapsed) => Err(ConnectFailure::TimedOut),
    };
    ConnectAttempt {
        target,
        elapsed: started.elapsed(),
        result,
    }
}

/// The server's answer to PORT or EPRT, with the listener the client opened for it.
#[derive(Debug)]
pub struct ActiveOffer {
    /// The address sent in PORT or EPRT (the listener's).
    pub sent: SocketAddr,
    /// The command line sent, e.g. `PORT 192,168,1,10,195,80`.
    pub command: String,
    /// The server's reply, whatever its code.
    pub reply: Reply,
    /// Listening for the server's connection.
    pub listener: TcpListener,
}

/// What happened to one transfer command run by [`Client::probe_transfer`] or
/// [`Client::probe_active_transfer`].
#[derive(Debug, Default)]
pub struct TransferProbe {
    /// The command line sent.
    pub command: String,
    /// Every reply received, in order (preliminary and final).
    pub replies: Vec<Reply>,
    /// Active modes: the server's data connection, its source address and how long after
    /// the command it arrived.
    pub accepted: Option<(SocketAddr, Duration)>,
    /// Bytes received on the data connection.
    pub bytes: u64,
    /// `true` when the data connection reached end of file.
    pub data_complete: bool,
    /// Set when the probe stopped before a final reply: what it was waiting for, e.g.
    /// `no connection from the server within 5.000 s`.
    pub stalled: Option<String>,
    /// With PROT P: the data connection's TLS session, e.g. `TLSv1_3, resumed`.
    pub data_tls: Option<String>,
    /// How long the whole probe took.
    pub elapsed: Duration,
}

impl TransferProbe {
    /// The final (non-1yz) reply, when one arrived.
    pub fn final_reply(&self) -> Option<&Reply> {
        self.replies
            .last()
            .filter(|reply| !reply.code.is_preliminary())
    }

    /// `true` when the data arrived completely and the final reply is a 2yz.
    pub fn succeeded(&self) -> bool {
        self.data_complete
            && self.stalled.is_none()
            && self
                .final_reply()
                .is_some_and(|reply| reply.code.is_positive_completion())
    }
}

impl Client {
    /// Sends PASV and returns the reply with the address it announces, without connecting.
    /// A reply other than 227 is [`ClientError::UnexpectedReply`]; a 227 without an address
    /// is [`ClientError::Protocol`].
    pub async fn request_passive(&mut self) -> Result<(Reply, SocketAddrV4), ClientError> {
        let reply = self
            .command_expecting("PASV", ReplyCode::ENTERING_PASSIVE)
            .await?;
        let address = parse_pasv_reply(&reply.text()).map_err(|error| {
            ClientError::Protocol(format!("PASV reply {:?}: {error}", reply.text()))
        })?;
        Ok((reply, address))
    }

    /// Sends EPSV and returns the reply with the port it announces, without connecting.
    pub async fn request_extended_passive(&mut self) -> Result<(Reply, u16), ClientError> {
        let reply = self
            .command_expecting("EPSV", ReplyCode::ENTERING_EXTENDED_PASSIVE)
            .await?;
        let port = parse_epsv_reply(&reply.text()).map_err(|error| {
            ClientError::Protocol(format!("EPSV reply {:?}: {error}", reply.text()))
        })?;
        Ok((reply, port))
    }

    /// Listens on the control connection's local address (port 0) and announces it with
    /// PORT (`extended == false`, IPv4 only) or EPRT. The reply is returned whatever its
    /// code, so a refusal can be shown as it came.
    pub async fn offer_active(&mut self, extended: bool) -> Result<ActiveOffer, ClientError> {
        let local_ip = self.local_addr().ip().to_canonical();
        let listener = TcpListener::bind(SocketAddr::new(local_ip, 0)).await?;
        let sent = listener.local_addr()?;
        let command = match (extended, sent) {
            (false, SocketAddr::V4(v4)) => format!("PORT {}", format_port_argument(v4)),
            (false, SocketAddr::V6(_)) => {
                return Err(ClientError::Protocol(
                    "PORT needs an IPv4 control connection; use EPRT".to_owned(),
                ));
            }
            (true, address) => format!("EPRT {}", format_eprt_argument(address)),
        };
        let reply = self.command(&command).await?;
        Ok(ActiveOffer {
            sent,
            command,
            reply,
            listener,
        })
    }

    /// Sends `line` (e.g. `LIST`) to use the already connected passive data connection
    /// `stream`, reads the data to its end and the replies up to the final one. With `tls`
    /// (PROT P in effect), the data connection's TLS handshake follows the preliminary reply,
    /// as in [`transfer_command`](Self::transfer_command). Nothing is an error: the record
    /// says how far it got. The whole probe takes at most `limit` plus one control timeout.
    pub async fn probe_transfer(
        &mut self,
        line: &str,
        stream: TcpStream,
        tls: Option<&ClientTls>,
        limit: Duration,
    ) -> TransferProbe {
        let started = Instant::now();
        let mut probe = TransferProbe {
            command: line.to_owned(),
            ..TransferProbe::default()
        };
        if let Some(stream) = self.probe_preliminary(line, &mut probe, stream).await {
            self.probe_data(&mut probe, stream, tls, started, limit, true)
                .await;
        }
        probe.elapsed = started.elapsed();
        probe
    }

    /// Sends `line` after an accepted PORT/EPRT and waits, at most `limit`, for whichever
    /// comes first: the server's data connection or a reply (a 425 when it could not
    /// connect). Then reads the data and the final reply like
    /// [`probe_transfer`](Self::probe_transfer).
    pub async fn probe_active_transfer(
        &mut self,
        line: &str,
        listener: TcpListener,
        tls: Option<&ClientTls>,
        limit: Duration,
    ) -> TransferProbe {
        let started = Instant::now();
        let mut probe = TransferProbe {
            command: line.to_owned(),
            ..TransferProbe::default()
        };
        if let Err(error) = self.send_command_line(line).await {
            probe.stalled = Some(format!("sending {line}: {error}"));
            probe.elapsed = started.elapsed();
            return probe;
        }
        let deadline = tokio::time::Instant::now() + limit;
        let mut stream = None;
        // Until the connection arrives, read replies (vsftpd and ferroftp connect before 150,
        // others after it); a final reply ends the wait. The connection is looked at first:
        // a fast server may have connected, sent everything and said 226 already.
        while stream.is_none() {
            tokio::select! {
                biased;
                accepted = listener.accept() => match accepted {
                    Ok((data, source)) => {
                        probe.accepted = Some((source, started.elapsed()));
                        stream = Some(data);
                    }
                    Err(error) => {
                        probe.stalled = Some(format!("accepting the server's connection: {error}"));
                        break;
                    }
                },
                reply = self.read_reply_until(deadline) => match reply {
                    Ok(reply) => {
                        let is_final = !reply.code.is_preliminary();
                        probe.replies.push(reply);
                        if is_final {
                            break;
                        }
                    }
                    Err(ClientError::Timeout) => {
                        probe.stalled = Some(format!(
                            "no connection from the server within {:.3} s",
                            limit.as_secs_f64()
                        ));
                        break;
                    }
                    Err(error) => {
                        probe.stalled = Some(format!("waiting for the server: {error}"));
                        break;
                    }
                },
            }
        }
        let mut final_received = probe.final_reply().is_some();
        if stream.is_none()
            && final_received
            && let Ok(Ok((data, source))) =
                tokio::time::timeout(ACCEPT_GRACE, listener.accept()).await
        {
            // The final reply overtook the connection (both were on their way).
            probe.accepted = Some((source, started.elapsed()));
            stream = Some(data);
        }
        if let Some(stream) = stream {
            if probe.replies.is_empty() {
                match self.read_reply_until(deadline).await {
                    Ok(reply) => {
                        final_received = !reply.code.is_preliminary();
                        probe.replies.push(reply);
                    }
                    Err(error) => {
                        probe.stalled = Some(format!("waiting for the reply to {line}: {error}"));
                        probe.elapsed = started.elapsed();
                        return probe;
                    }
                }
            }
            self.probe_data(&mut probe, stream, tls, started, limit, !final_received)
                .await;
        }
        probe.elapsed = started.elapsed();
        probe
    }

    /// Sends `line`; returns the stream back when the reply is preliminary, else records the
    /// reply (or the failure) and returns `None`.
    async fn probe_preliminary(
        &mut self,
        line: &str,
        probe: &mut TransferProbe,
        stream: TcpStream,
    ) -> Option<TcpStream> {
        match self.command(line).await {
            Ok(reply) => {
                let preliminary = reply.code.is_preliminary();
                probe.replies.push(reply);
                preliminary.then_some(stream)
            }
            Err(error) => {
                probe.stalled = Some(format!("waiting for the reply to {line}: {error}"));
                None
            }
        }
    }

    /// Reads the data connection to its end (after its TLS handshake, with `tls`), then,
    /// when `read_final`, the final reply.
    async fn probe_data(
        &mut self,
        probe: &mut TransferProbe,
        stream: TcpStream,
        tls: Option<&ClientTls>,
        started: Instant,
        limit: Duration,
        read_final: bool,
    ) {
        let remaining = limit.saturating_sub(started.elapsed());
        let mut stream = match tls {
            None => MaybeTls::Plain(stream),
            Some(tls) => match tokio::time::timeout(remaining, tls.connect_data(stream)).await {
                Ok(Ok(protected)) => {
                    probe.data_tls = Some(describe_session(protected.get_ref().1));
                    MaybeTls::Tls(Box::new(protected))
                }
                Ok(Err(error)) => {
                    probe.stalled = Some(format!("TLS handshake on the data connection: {error}"));
                    if read_final {
                        self.probe_final_after_failure(probe).await;
                    }
                    return;
                }
                Err(_elapsed) => {
                    probe.stalled = Some(format!(
                        "TLS handshake on the data connection: no answer within {:.3} s",
                        limit.as_secs_f64()
                    ));
                    return;
                }
            },
        };
        let remaining = limit.saturating_sub(started.elapsed());
        let mut buffer = vec![0u8; 16 * 1024];
        let read_all = async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) => return Ok(()),
                    Ok(count) => probe.bytes += count as u64,
                    // A TLS peer that closes without close_notify: the data is all there
                    // for a listing; the final reply says whether it was complete.
                    Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(error) => return Err(error),
                }
            }
        };
        match tokio::time::timeout(remaining, read_all).await {
            Ok(Ok(())) => probe.data_complete = true,
            Ok(Err(error)) => {
                probe.stalled = Some(format!("reading the data connection: {error}"));
            }
            Err(_elapsed) => {
                probe.stalled = Some(format!(
                    "the data connection stayed open without end of file for {:.3} s",
                    limit.as_secs_f64()
                ));
                return;
            }
        }
        drop(stream);
        if !read_final {
            return;
        }
        match self.read_reply().await {
            Ok(reply) => probe.replies.push(reply),
            Err(error) => {
                probe.stalled = Some(format!("waiting for the final reply: {error}"));
            }
        }
    }

    /// After a failed data handshake the server usually explains itself (vsftpd: `522 SSL
    /// connection failed: session reuse required`); read that reply if it comes.
    async fn probe_final_after_failure(&mut self, probe: &mut TransferProbe) {
        if let Ok(reply) = self.read_reply().await {
            probe.replies.push(reply);
        }
    }

    async fn send_command_line(&mut self, line: &str) -> Result<(), ClientError> {
        if line.contains(['\r', '\n']) {
            return Err(ClientError::Protocol(format!(
                "command line contains CR or LF: {line:?}"
            )));
        }
        self.send_raw(format!("{line}\r\n").as_bytes()).await
    }

    /// Reads one reply, giving up at `deadline` (or after the client's timeout, whichever
    /// is sooner). Cancellation-safe: a partial reply is kept for the next read.
    async fn read_reply_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Reply, ClientError> {
        match tokio::time::timeout_at(deadline, self.read_reply()).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ClientError::Timeout),
        }
    }
}

/// What a TLS handshake with the server showed.
#[derive(Debug, Clone)]
pub struct TlsInspection {
    /// The protocol version and cipher suite, e.g. `TLSv1_3 TLS13_AES_256_GCM_SHA384`.
    pub session: String,
    /// The server's certificate chain as sent, leaf first (DER).
    pub certificates: Vec<Vec<u8>>,
    /// Whether the chain verifies for the server name against the system's CA store
    /// (`/etc/ssl/certs/ca-certificates.crt`), and if not, rustls's reason.
    pub verification: Result<(), String>,
}

/// Why [`inspect_tls`] could not complete a handshake; each says what a diagnosis needs to
/// tell apart (a server that refuses AUTH TLS is not one whose handshake breaks).
#[derive(Debug, thiserror::Error)]
pub enum TlsInspectionError {
    /// The client's TLS configuration could not be built.
    #[error("{0}")]
    Setup(String),
    /// The TCP connection failed (the attempt's own description).
    #[error("{0}")]
    Connect(String),
    /// The greeting was not 220.
    #[error("greeting {0}")]
    Greeting(String),
    /// The server answered AUTH TLS with something other than 234 (RFC 4217 §4).
    #[error("AUTH TLS → {code} {text}")]
    AuthTlsRefused {
        /// The reply code, e.g. 502 or 534.
        code: ReplyCode,
        /// The reply's text.
        text: String,
    },
    /// No reply to AUTH TLS within the time limit.
    #[error("no reply to AUTH TLS")]
    NoAuthTlsReply,
    /// Bytes after the 234 reply, before the handshake (a server or middlebox that
    /// would break the handshake).
    #[error("the server sent bytes after its 234 reply")]
    BytesAfter234,
    /// Reading or writing the control connection failed, or a reply was malformed.
    #[error("{0}")]
    Control(String),
    /// The handshake did not finish within the time limit.
    #[error("TLS handshake: no answer")]
    HandshakeTimeout,
    /// The handshake failed.
    #[error("TLS handshake: {0}")]
    Handshake(#[source] io::Error),
}

/// Opens two TLS sessions with the server at `target` (AUTH TLS first unless `implicit`):
/// one that accepts any certificate, to see the chain and the session parameters, and one
/// that verifies the chain for `server_name` against the system's CA store.
pub async fn inspect_tls(
    target: SocketAddr,
    implicit: bool,
    server_name: &str,
    timeout: Duration,
) -> Result<TlsInspection, TlsInspectionError> {
    let any = ClientTls::new(ServerVerification::AcceptAny, server_name, None)
        .map_err(|error| TlsInspectionError::Setup(error.to_string()))?;
    let stream = tls_ready_stream(target, implicit, timeout).await?;
    let session = tokio::time::timeout(timeout, any.connect_control(stream))
        .await
        .map_err(|_elapsed| TlsInspectionError::HandshakeTimeout)?
        .map_err(TlsInspectionError::Handshake)?;
    let connection = session.get_ref().1;
    let certificates = connection
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|certificate| certificate.as_ref().to_vec())
        .collect();
    let description = describe_session(connection);
    drop(session);

    let verification = match system_roots() {
        None => {
            Err("no system CA store (/etc/ssl/certs/ca-certificates.crt) to verify with".to_owned())
        }
        Some(roots) => {
            let verifying = ClientTls::new(ServerVerification::Roots(roots), server_name, None)
                .map_err(|error| TlsInspectionError::Setup(error.to_string()))?;
            let stream = tls_ready_stream(target, implicit, timeout).await?;
            match tokio::time::timeout(timeout, verifying.connect_control(stream)).await {
                Ok(Ok(_session)) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_elapsed) => Err("TLS handshake: no answer".to_owned()),
            }
        }
    };
    Ok(TlsInspection {
        session: description,
        certificates,
        verification,
    })
}

/// `TLSv1_3 TLS13_AES_256_GCM_SHA384` and, for a data connection, whether it resumed.
fn describe_session(connection: &rustls::ClientConnection) -> String {
    let version = connection
        .protocol_version()
        .map(|version| format!("{version:?}"))
        .unwrap_or_else(|| "unknown version".to_owned());
    let suite = connection
        .negotiated_cipher_suite()
        .map(|suite| format!("{:?}", suite.suite()))
        .unwrap_or_default();
    let resumed = match connection.handshake_kind() {
        Some(rustls::HandshakeKind::Resumed) => ", resumed session",
        Some(_) => ", full handshake",
        None => "",
    };
    format!("{version} {suite}{resumed}")
}

fn system_roots() -> Option<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter("/etc/ssl/certs/ca-certificates.crt").ok()? {
        let _ = roots.add(certificate.ok()?);
    }
    (!roots.is_empty()).then_some(roots)
}

/// A connection to `target` ready for the TLS handshake: at once for implicit FTPS, after
/// the greeting and a 234 reply to AUTH TLS otherwise.
async fn tls_ready_stream(
    target: SocketAddr,
    implicit: bool,
    timeout: Duration,
) -> Result<TcpStream, TlsInspectionError> {
    let attempt = connect_timed(target, timeout).await;
    let Ok(stream) = attempt.result else {
        return Err(TlsInspectionError::Connect(attempt.to_string()));
    };
    if implicit {
        return Ok(stream);
    }
    let mut reader = BufReader::new(stream);
    let exchange = async {
        let greeting = read_raw_reply(&mut reader).await?;
        if greeting.code.0 != 220 {
            return Err(TlsInspectionError::Greeting(format!(
                "{} {}",
                greeting.code,
                greeting.text()
            )));
        }
        reader
            .get_mut()
            .write_all(b"AUTH TLS\r\n")
            .await
            .map_err(|error| TlsInspectionError::Control(error.to_string()))?;
        let reply = read_raw_reply(&mut reader).await?;
        if reply.code.0 != 234 {
            return Err(TlsInspectionError::AuthTlsRefused {
                code: reply.code,
                text: reply.text(),
            });
        }
        Ok(())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_elapsed| TlsInspectionError::NoAuthTlsReply)??;
    if !reader.buffer().is_empty() {
        return Err(TlsInspectionError::BytesAfter234);
    }
    Ok(reader.into_inner())
}

async fn read_raw_reply(reader: &mut BufReader<TcpStream>) -> Result<Reply, TlsInspectionError> {
    let mut parser = ReplyParser::new();
    loop {
        let mut line = Vec::new();
        let count = reader
            .read_until(b'\n', &mut line)
            .await
            .map_err(|error| TlsInspectionError::Control(error.to_string()))?;
        if count == 0 {
            return Err(TlsInspectionError::Control(
                "the server closed the connection".to_owned(),
            ));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        match parser.feed_line(text) {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) => {}
            Err(error) => return Err(TlsInspectionError::Control(error.to_string())),
        }
    }
}
