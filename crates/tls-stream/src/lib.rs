//! A TCP connection that is plain or TLS, and can change between the two: FTP's control
//! connection starts plain and is upgraded by AUTH TLS (RFC 4217 §4), or cleared again by
//! CCC (§6), and its data connections are protected or not by PROT (§9). The server and the
//! client both drive such a connection, with rustls' server or client side: [`MaybeTls`] is
//! generic over that side.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TLS stream over TCP: rustls' server or client side.
pub trait TlsOverTcp: AsyncRead + AsyncWrite + Unpin {
    /// The TCP stream underneath.
    fn tcp(&self) -> &TcpStream;
}

impl TlsOverTcp for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl TlsOverTcp for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// A connection that is plain TCP or TLS over TCP.
pub enum MaybeTls<T> {
    /// Plain.
    Plain(TcpStream),
    /// TLS (boxed: a TLS stream is large, a plain one is not).
    Tls(Box<T>),
    /// Transiently, while a plain connection is being upgraded (or after that failed), or a
    /// TLS one cleared: nothing can be read or written.
    Closed,
}

impl<T: TlsOverTcp> MaybeTls<T> {
    /// The TCP stream underneath.
    pub fn tcp(&self) -> io::Result<&TcpStream> {
        match self {
            Self::Plain(stream) => Ok(stream),
            Self::Tls(stream) => Ok(stream.tcp()),
            Self::Closed => Err(closed()),
        }
    }

    /// Whether this is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

impl<T> fmt::Debug for MaybeTls<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self {
            Self::Plain(_) => "Plain",
            Self::Tls(_) => "Tls",
            Self::Closed => "Closed",
        };
        formatter.debug_tuple("MaybeTls").field(&state).finish()
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl<T: TlsOverTcp> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(context, buffer),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(context, buffer),
            Self::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl<T: TlsOverTcp> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(context, buffer),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, buffer),
            Self::Closed => Poll::Ready(Err(closed())),
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
