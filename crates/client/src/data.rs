//! The data connection: how it is set up ([`DataMode`], [`PreparedData`]) and the stream that
//! carries a transfer ([`DataStream`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ferroftp_proto::Reply;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{ClientError, with_timeout};
use crate::tls::MaybeTls;

/// Size of the buffer used to copy between a data connection and a reader or writer.
const COPY_BUFFER_BYTES: usize = 64 * 1024;

/// Who opens the data connection, and which command negotiates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataMode {
    /// RFC 959 PASV: the server listens, the client connects to the IPv4 address in the 227
    /// reply.
    Passive,
    /// RFC 2428 EPSV: the server listens, the client connects to the port in the 229 reply on
    /// the control connection's peer address.
    ExtendedPassive,
    /// RFC 959 PORT: the client listens on an IPv4 address and the server connects.
    Active,
    /// RFC 2428 EPRT: the client listens (IPv4 or IPv6) and the server connects.
    ExtendedActive,
}

impl DataMode {
    /// All modes, for tests that run the same transfer four ways.
    pub const ALL: [Self; 4] = [
        Self::Passive,
        Self::ExtendedPassive,
        Self::Active,
        Self::ExtendedActive,
    ];

    /// The command that negotiates this mode: `PASV`, `EPSV`, `PORT` or `EPRT`.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Passive => "PASV",
            Self::ExtendedPassive => "EPSV",
            Self::Active => "PORT",
            Self::ExtendedActive => "EPRT",
        }
    }

    /// `true` when the server listens and the client connects.
    pub fn is_passive(self) -> bool {
        matches!(self, Self::Passive | Self::ExtendedPassive)
    }
}

/// A negotiated data connection, ready for the transfer command that will use it.
///
/// Made by [`Client::open_data`](crate::Client::open_data) and consumed by
/// [`Client::transfer_command`](crate::Client::transfer_command). In passive modes the
/// connection is already established; in active modes the client is listening and accepts
/// the server's connection after the preliminary (1yz) reply.
#[derive(Debug)]
pub struct PreparedData {
    pub(crate) mode: DataMode,
    pub(crate) reply: Reply,
    pub(crate) channel: Channel,
}

#[derive(Debug)]
pub(crate) enum Channel {
    /// Passive modes: connected to the server's data port.
    Connected(TcpStream),
    /// Active modes: waiting for the server to connect.
    Listening(TcpListener),
}

impl PreparedData {
    /// The mode that was negotiated.
    pub fn mode(&self) -> DataMode {
        self.mode
    }

    /// The server's reply to PASV, EPSV, PORT or EPRT.
    pub fn reply(&self) -> &Reply {
        &self.reply
    }

    /// In passive modes the server's data address the client connected to; in active modes the
    /// client's listening address that was sent in PORT or EPRT.
    pub fn address(&self) -> io::Result<SocketAddr> {
        match &self.channel {
            Channel::Connected(stream) => stream.peer_addr(),
            Channel::Listening(listener) => listener.local_addr(),
        }
    }
}

/// An open data connection.
///
/// The helper methods bound every network wait by the client's timeout: each read or write,
/// not the whole transfer, so large transfers are not cut short. `DataStream` also implements
/// [`AsyncRead`] and [`AsyncWrite`] without timeouts, for tests that need byte-level control
/// (read part of a file, then send ABOR).
#[derive(Debug)]
pub struct DataStream {
    stream: MaybeTls,
    timeout: Duration,
}

impl DataStream {
    pub(crate) fn new(stream: MaybeTls, timeout: Duration) -> Self {
        Self { stream, timeout }
    }

    /// The client's end of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.tcp()?.local_addr()
    }

    /// The server's end of the connection.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.tcp()?.peer_addr()
    }

    /// Whether the data connection is protected by TLS (PROT P).
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Reads until the server closes the connection and returns everything received.
    pub async fn receive_all(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut received = Vec::new();
        self.receive_into(&mut received).await?;
        Ok(received)
    }

    /// Copies everything received, until the server closes the connection, into `writer`
    /// (which is flushed) and returns the byte count.
    pub async fn receive_into<W>(&mut self, writer: &mut W) -> Result<u64, ClientError>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
        let mut total = 0u64;
        loop {
            let count = with_timeout(self.timeout, self.stream.read(&mut buffer)).await?;
            if count == 0 {
                break;
            }
            writer.write_all(&buffer[..count]).await?;
            total += count as u64;
        }
        writer.flush().await?;
        Ok(total)
    }

    /// Sends all of `data`. The connection stays open; see [`close`](Self::close).
    pub async fn send(&mut self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(COPY_BUFFER_BYTES) {
            with_timeout(self.timeout, self.stream.write_all(chunk)).await?;
        }
        Ok(())
    }

    /// Sends everything `reader` yields until its end and returns the byte count. The
    /// connection stays open; see [`close`](Self::close).
    pub async fn send_from<R>(&mut self, reader: &mut R) -> Result<u64, ClientError>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
        let mut total = 0u64;
        loop {
            let count = reader.read(&mut buffer).await?;
            if count == 0 {
                return Ok(total);
            }
            with_timeout(self.timeout, self.stream.write_all(&buffer[..count])).await?;
            total += count as u64;
        }
    }

    /// Ends the client's side of the transfer: flushes, sends FIN (end of file for an upload)
    /// and drops the connection. Over TLS, close_notify goes first and the server's is
    /// awaited, so the server knows the file is complete.
    pub async fn close(mut self) -> Result<(), ClientError> {
        with_timeout(self.timeout, self.stream.shutdown()).await?;
        if self.stream.is_tls() {
            let mut rest = [0u8; 1024];
            while with_timeout(self.timeout, self.stream.read(&mut rest)).await? > 0 {}
        }
        Ok(())
    }

    /// The underlying TCP stream (TLS, if any, is abandoned without close_notify).
    pub fn into_inner(self) -> TcpStream {
        match self.stream {
            MaybeTls::Plain(stream) => stream,
            MaybeTls::Tls(stream) => stream.into_inner().0,
            MaybeTls::Closed => unreachable!("a data stream is never built closed"),
        }
    }
}

impl AsyncRead for DataStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for DataStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}
