//! [`Client`]: one control connection and the helpers that drive data transfers over it.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use ferroftp_proto::host_port::{
    format_eprt_argument, format_port_argument, parse_epsv_reply, parse_pasv_reply,
};
use ferroftp_proto::{Reply, ReplyCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::control::Control;
use crate::data::{Channel, DataMode, DataStream, PreparedData};
use crate::error::{ClientError, with_timeout};
use crate::tls::{ClientTls, MaybeTls};

/// Settings for a [`Client`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The longest the client waits for any one network event: connecting, a whole reply,
    /// one read or write on a data connection, the server connecting in active mode.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    /// A 30 second timeout.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
        }
    }
}

/// An FTP client: one control connection.
///
/// Methods that send a command read exactly one reply and return it as it came; the
/// higher-level helpers ([`login`](Self::login), [`retrieve`](Self::retrieve),
/// [`store`](Self::store), [`list`](Self::list)) check codes and turn anything unexpected
/// into [`ClientError::UnexpectedReply`].
#[derive(Debug)]
pub struct Client {
    control: Control,
    options: ClientOptions,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
    /// TLS settings, once AUTH TLS succeeded or for an implicit connection.
    tls: Option<ClientTls>,
    /// Data connections are protected (PROT P in effect).
    protect_data: bool,
}

impl Client {
    /// Connects with default options and reads the greeting, whatever its code (220, or a 421
    /// from a full server, or a 120 that a 220 will follow).
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<(Self, Reply), ClientError> {
        Self::connect_with_options(addr, ClientOptions::default()).await
    }

    /// Connects with `options` and reads the greeting, whatever its code.
    pub async fn connect_with_options(
        addr: impl ToSocketAddrs,
        options: ClientOptions,
    ) -> Result<(Self, Reply), ClientError> {
        let stream = with_timeout(options.timeout, TcpStream::connect(addr)).await?;
        let mut client = Self::from_stream(stream, options)?;
        let greeting = client.read_reply().await?;
        Ok((client, greeting))
    }

    /// Wraps an already connected control stream. Nothing is read: call
    /// [`read_reply`](Self::read_reply) for the greeting.
    pub fn from_stream(stream: TcpStream, options: ClientOptions) -> Result<Self, ClientError> {
        stream.set_nodelay(true)?;
        let local_addr = stream.local_addr()?;
        let peer_addr = stream.peer_addr()?;
        Ok(Self {
            control: Control::new(MaybeTls::Plain(stream)),
            options,
            local_addr,
            peer_addr,
            tls: None,
            protect_data: false,
        })
    }

    /// Connects to an implicit FTPS listener: TLS from the first byte, then the greeting.
    /// Data connections are protected (the server's default there); see
    /// [`set_data_protection`](Self::set_data_protection).
    pub async fn connect_implicit_tls(
        addr: impl ToSocketAddrs,
        options: ClientOptions,
        tls: ClientTls,
    ) -> Result<(Self, Reply), ClientError> {
        let stream = with_timeout(options.timeout, TcpStream::connect(addr)).await?;
        stream.set_nodelay(true)?;
        let local_addr = stream.local_addr()?;
        let peer_addr = stream.peer_addr()?;
        let protected = with_timeout(options.timeout, tls.connect_control(stream)).await?;
        let mut client = Self {
            control: Control::new(MaybeTls::Tls(Box::new(protected))),
            options,
            local_addr,
            peer_addr,
            tls: Some(tls),
            protect_data: true,
        };
        let greeting = client.read_reply().await?;
        Ok((client, greeting))
    }

    /// Explicit FTPS (RFC 4217): sends `AUTH TLS`, and on 234 runs the handshake. Any other
    /// reply is [`ClientError::UnexpectedReply`] and the connection stays plain.
    pub async fn auth_tls(&mut self, tls: ClientTls) -> Result<Reply, ClientError> {
        let reply = self.command_expecting("AUTH TLS", ReplyCode(234)).await?;
        self.upgrade_to_tls(tls).await?;
        Ok(reply)
    }

    /// Runs the TLS handshake on the control connection now, for a test that sent AUTH TLS
    /// itself and read the 234 reply. Nothing may be left unread.
    pub async fn upgrade_to_tls(&mut self, tls: ClientTls) -> Result<(), ClientError> {
        self.control.upgrade(&tls, self.options.timeout).await?;
        self.tls = Some(tls);
        Ok(())
    }

    /// Sends `PBSZ 0` and `PROT P` (both must answer 200); later data connections use TLS.
    pub async fn protect_data(&mut self) -> Result<(), ClientError> {
        self.command_expecting("PBSZ 0", ReplyCode::OK).await?;
        self.command_expecting("PROT P", ReplyCode::OK).await?;
        self.protect_data = true;
        Ok(())
    }

    /// Says whether later data connections use TLS, for a test that sent PROT itself.
    /// Protection needs a TLS control connection first ([`ClientError::Protocol`]).
    pub fn set_data_protection(&mut self, protected: bool) -> Result<(), ClientError> {
        if protected && self.tls.is_none() {
            return Err(ClientError::Protocol(
                "data protection needs AUTH TLS or an implicit connection first".to_owned(),
            ));
        }
        self.protect_data = protected;
        Ok(())
    }

    /// Whether the control connection is protected by TLS.
    pub fn is_tls(&self) -> bool {
        self.control.is_tls()
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Changes the timeout for later operations (a test may shorten it before waiting for a
    /// reply that should not come).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.options.timeout = timeout;
    }

    /// The client's end of the control connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's end of the control connection.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Sends `line` followed by CRLF and reads one complete reply, skipping nothing: a 1yz
    /// preliminary reply is returned as is. `line` must not contain CR or LF
    /// ([`ClientError::Protocol`]); use [`send_raw`](Self::send_raw) for that.
    pub async fn command(&mut self, line: &str) -> Result<Reply, ClientError> {
        self.send_line(line).await?;
        self.read_reply().await
    }

    /// Like [`command`](Self::command), but a reply with another code than `expected` is
    /// [`ClientError::UnexpectedReply`].
    pub async fn command_expecting(
        &mut self,
        line: &str,
        expected: ReplyCode,
    ) -> Result<Reply, ClientError> {
        let reply = self.command(line).await?;
        if reply.code == expected {
            Ok(reply)
        } else {
            Err(ClientError::UnexpectedReply(reply))
        }
    }

    /// Sends `bytes` exactly as given (no CRLF is added) and reads nothing.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        tracing::debug!(bytes = bytes.len(), "control: sending raw bytes");
        self.control.write(bytes, self.options.timeout).await
    }

    /// Reads the next complete reply. A read that times out loses nothing: the partial reply
    /// is kept and the next call continues it.
    pub async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        let reply = self.control.read_reply(self.options.timeout).await?;
        tracing::debug!(code = %reply.code, text = %reply.text(), "control: received reply");
        Ok(reply)
    }

    /// Logs in: USER, then PASS if the server asks for it (331). Returns the final reply
    /// (230, or 202 from a server that needs no password); anything else, including a 332
    /// asking for an account, is [`ClientError::UnexpectedReply`].
    pub async fn login(&mut self, user: &str, password: &str) -> Result<Reply, ClientError> {
        let reply = self.command(&format!("USER {user}")).await?;
        match reply.code {
            ReplyCode::LOGGED_IN => return Ok(reply),
            ReplyCode::NEED_PASSWORD => {}
            _ => return Err(ClientError::UnexpectedReply(reply)),
        }
        let reply = self.command(&format!("PASS {password}")).await?;
        match reply.code {
            ReplyCode::LOGGED_IN | ReplyCode::SUPERFLUOUS => Ok(reply),
            _ => Err(ClientError::UnexpectedReply(reply)),
        }
    }

    /// Sends QUIT and returns the reply (221). The connection stays usable for reading, so a
    /// test can check that the server then closes it.
    pub async fn quit(&mut self) -> Result<Reply, ClientError> {
        self.command_expecting("QUIT", ReplyCode::CLOSING).await
    }

    /// Negotiates a data connection in `mode`.
    ///
    /// Passive modes send PASV or EPSV and connect at once. PASV connects to the address in
    /// the 227 reply, or to the control connection's peer when that address is 0.0.0.0;
    /// EPSV connects to the control connection's peer. Active modes listen on the control
    /// connection's local address, port 0, and send PORT or EPRT; PORT needs an IPv4 control
    /// connection.
    pub async fn open_data(&mut self, mode: DataMode) -> Result<PreparedData, ClientError> {
        let timeout = self.options.timeout;
        match mode {
            DataMode::Passive => {
                let reply = self
                    .command_expecting("PASV", ReplyCode::ENTERING_PASSIVE)
                    .await?;
                let advertised = parse_pasv_reply(&reply.text())
                    .map_err(|error| protocol_error("PASV", &reply, error))?;
                let ip = if advertised.ip().is_unspecified() {
                    self.peer_addr.ip()
                } else {
                    (*advertised.ip()).into()
                };
                let target = SocketAddr::new(ip, advertised.port());
                let stream = with_timeout(timeout, TcpStream::connect(target)).await?;
                Ok(PreparedData {
                    mode,
                    reply,
                    channel: Channel::Connected(stream),
                })
            }
            DataMode::ExtendedPassive => {
                let reply = self
                    .command_expecting("EPSV", ReplyCode::ENTERING_EXTENDED_PASSIVE)
                    .await?;
                let port = parse_epsv_reply(&reply.text())
                    .map_err(|error| protocol_error("EPSV", &reply, error))?;
                let target = SocketAddr::new(self.peer_addr.ip(), port);
                let stream = with_timeout(timeout, TcpStream::connect(target)).await?;
                Ok(PreparedData {
                    mode,
                    reply,
                    channel: Channel::Connected(stream),
                })
            }
            DataMode::Active => {
                let ip = match self.local_addr.ip() {
                    IpAddr::V4(ip) => ip,
                    IpAddr::V6(ip) => ip.to_ipv4_mapped().ok_or_else(|| {
                        ClientError::Protocol(
                            "PORT needs an IPv4 control connection; use EPRT".to_owned(),
                        )
                    })?,
                };
                let listener = TcpListener::bind(SocketAddr::new(ip.into(), 0)).await?;
                let port = listener.local_addr()?.port();
                let argument = format_port_argument(SocketAddrV4::new(ip, port));
                let reply = self
                    .command_expecting(&format!("PORT {argument}"), ReplyCode::OK)
                    .await?;
                Ok(PreparedData {
                    mode,
                    reply,
                    channel: Channel::Listening(listener),
                })
            }
            DataMode::ExtendedActive => {
                let listener = TcpListener::bind(SocketAddr::new(self.local_addr.ip(), 0)).await?;
                let argument = format_eprt_argument(listener.local_addr()?);
                let reply = self
                    .command_expecting(&format!("EPRT {argument}"), ReplyCode::OK)
                    .await?;
                Ok(PreparedData {
                    mode,
                    reply,
                    channel: Channel::Listening(listener),
                })
            }
        }
    }

    /// Negotiates an active data connection (`mode` [`DataMode::Active`] or
    /// [`DataMode::ExtendedActive`]) on a listener the caller bound, e.g. on a port of the
    /// range its firewall opens; [`open_data`](Self::open_data) binds port 0 instead. PORT
    /// needs an IPv4 (or IPv4-mapped) listening address; a passive mode is
    /// [`ClientError::Protocol`].
    pub async fn open_active_data(
        &mut self,
        mode: DataMode,
        listener: TcpListener,
    ) -> Result<PreparedData, ClientError> {
        let address = listener.local_addr()?;
        let line = match mode {
            DataMode::Active => {
                let ip = match address.ip() {
                    IpAddr::V4(ip) => Some(ip),
                    IpAddr::V6(ip) => ip.to_ipv4_mapped(),
                };
                let ip = ip.ok_or_else(|| {
                    ClientError::Protocol(
                        "PORT needs an IPv4 listening address; use EPRT".to_owned(),
                    )
                })?;
                let argument = format_port_argument(SocketAddrV4::new(ip, address.port()));
                format!("PORT {argument}")
            }
            DataMode::ExtendedActive => format!("EPRT {}", format_eprt_argument(address)),
            DataMode::Passive | DataMode::ExtendedPassive => {
                return Err(ClientError::Protocol(format!(
                    "{} is not an active mode",
                    mode.verb()
                )));
            }
        };
        let reply = self.command_expecting(&line, ReplyCode::OK).await?;
        Ok(PreparedData {
            mode,
            reply,
            channel: Channel::Listening(listener),
        })
    }

    /// Sends a command that uses the data connection (`RETR a`, `STOR b`, `LIST`, `APPE c`)
    /// and reads its preliminary reply. On a 1yz reply, returns it with the open data stream
    /// (accepting the server's connection first in active modes). Any other reply is
    /// [`ClientError::UnexpectedReply`] and the prepared connection is dropped.
    ///
    /// After the transfer, call [`finish`](Self::finish) for the final reply.
    pub async fn transfer_command(
        &mut self,
        line: &str,
        prepared: PreparedData,
    ) -> Result<(Reply, DataStream), ClientError> {
        let reply = self.command(line).await?;
        if !reply.code.is_preliminary() {
            return Err(ClientError::UnexpectedReply(reply));
        }
        let timeout = self.options.timeout;
        let stream = match prepared.channel {
            Channel::Connected(stream) => stream,
            Channel::Listening(listener) => {
                let (stream, server) = with_timeout(timeout, listener.accept()).await?;
                tracing::debug!(%server, "data: accepted the server's connection");
                stream
            }
        };
        // PROT P: the client is the TLS client in both modes (RFC 4217 §7), once the server
        // said 150.
        let stream = match (&self.tls, self.protect_data) {
            (Some(tls), true) => {
                let protected = with_timeout(timeout, tls.connect_data(stream)).await?;
                MaybeTls::Tls(Box::new(protected))
            }
            _ => MaybeTls::Plain(stream),
        };
        Ok((reply, DataStream::new(stream, timeout)))
    }

    /// Reads the reply that ends a transfer and returns it whatever its code: usually 226,
    /// 426 or 451 after a failure, 226 or 225 after ABOR.
    pub async fn finish(&mut self) -> Result<Reply, ClientError> {
        self.read_reply().await
    }

    /// Downloads `path` (RETR) and returns its exact bytes.
    pub async fn retrieve(&mut self, path: &str, mode: DataMode) -> Result<Vec<u8>, ClientError> {
        let mut received = Vec::new();
        self.retrieve_to(path, mode, &mut received).await?;
        Ok(received)
    }

    /// Downloads `path` (RETR) into `writer` and returns the byte count.
    pub async fn retrieve_to<W>(
        &mut self,
        path: &str,
        mode: DataMode,
        writer: &mut W,
    ) -> Result<u64, ClientError>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let prepared = self.open_data(mode).await?;
        let (_preliminary, mut stream) = self
            .transfer_command(&format!("RETR {path}"), prepared)
            .await?;
        let received = stream.receive_into(writer).await;
        drop(stream);
        self.finish_after(received)
            .await
            .map(|(count, _final_reply)| count)
    }

    /// Uploads `data` to `path` (STOR) and returns the final reply (226).
    pub async fn store(
        &mut self,
        path: &str,
        mode: DataMode,
        data: &[u8],
    ) -> Result<Reply, ClientError> {
        let prepared = self.open_data(mode).await?;
        let (_preliminary, mut stream) = self
            .transfer_command(&format!("STOR {path}"), prepared)
            .await?;
        let sent = match stream.send(data).await {
            Ok(()) => stream.close().await,
            Err(error) => Err(error),
        };
        self.finish_after(sent)
            .await
            .map(|((), final_reply)| final_reply)
    }

    /// Uploads everything `reader` yields to `path` (STOR) and returns the byte count.
    pub async fn store_from<R>(
        &mut self,
        path: &str,
        mode: DataMode,
        reader: &mut R,
    ) -> Result<u64, ClientError>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let prepared = self.open_data(mode).await?;
        let (_preliminary, mut stream) = self
            .transfer_command(&format!("STOR {path}"), prepared)
            .await?;
        let sent = match stream.send_from(reader).await {
            Ok(count) => stream.close().await.map(|()| count),
            Err(error) => Err(error),
        };
        self.finish_after(sent)
            .await
            .map(|(count, _final_reply)| count)
    }

    /// Runs a listing command (`LIST`, `NLST` or `MLSD`, or any other verb), with `path` as
    /// its argument when given, and returns the listing's exact bytes.
    pub async fn list(
        &mut self,
        verb: &str,
        path: Option<&str>,
        mode: DataMode,
    ) -> Result<Vec<u8>, ClientError> {
        let line = match path {
            Some(path) => format!("{verb} {path}"),
            None => verb.to_owned(),
        };
        let prepared = self.open_data(mode).await?;
        let (_preliminary, mut stream) = self.transfer_command(&line, prepared).await?;
        let received = stream.receive_all().await;
        drop(stream);
        self.finish_after(received)
            .await
            .map(|(listing, _final_reply)| listing)
    }

    /// Sends `line` and CRLF, refusing a line that would smuggle in a second command.
    async fn send_line(&mut self, line: &str) -> Result<(), ClientError> {
        if line.contains(['\r', '\n']) {
            return Err(ClientError::Protocol(format!(
                "command line contains CR or LF: {line:?}; use send_raw"
            )));
        }
        tracing::debug!(command = %redact(line), "control: sending command");
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.control.write(&bytes, self.options.timeout).await
    }

    /// Reads the final reply once the data connection is done with, and requires a positive
    /// completion (2yz). When the data side failed, a negative final reply (552 quota
    /// exceeded, 426 aborted) explains it better than the socket error, so it wins; after a
    /// data timeout no reply is awaited.
    async fn finish_after<T>(
        &mut self,
        data_result: Result<T, ClientError>,
    ) -> Result<(T, Reply), ClientError> {
        match data_result {
            Ok(value) => {
                let reply = self.finish().await?;
                if reply.code.is_positive_completion() {
                    Ok((value, reply))
                } else {
                    Err(ClientError::UnexpectedReply(reply))
                }
            }
            Err(ClientError::Timeout) => Err(ClientError::Timeout),
            Err(data_error) => match self.finish().await {
                Ok(reply) if !reply.code.is_positive_completion() => {
                    Err(ClientError::UnexpectedReply(reply))
                }
                _ => Err(data_error),
            },
        }
    }
}

fn protocol_error(verb: &str, reply: &Reply, error: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(format!(
        "{verb} reply {} {:?}: {error}",
        reply.code,
        reply.text()
    ))
}

/// The command line as it may appear in logs: the PASS argument is hidden.
fn redact(line: &str) -> &str {
    let is_pass = line
        .as_bytes()
        .get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"PASS "));
    if is_pass { "PASS ****" } else { line }
}
