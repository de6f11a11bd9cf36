//! The client's error type.

use ferroftp_proto::Reply;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A socket operation failed, or the server closed the control connection
    /// (`std::io::ErrorKind::UnexpectedEof`).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A network wait took longer than [`ClientOptions::timeout`](crate::ClientOptions::timeout).
    #[error("timed out")]
    Timeout,
    /// The server answered with a reply the operation cannot continue from.
    #[error("unexpected reply: {} {}", .0.code, .0.text())]
    UnexpectedReply(Reply),
    /// The server broke the protocol (an unparseable reply, a reply line without CRLF or
    /// longer than [`MAX_REPLY_LINE`](crate::MAX_REPLY_LINE), a PASV reply without an
    /// address), or the caller asked for something the protocol cannot express.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's reply, for [`ClientError::UnexpectedReply`].
    pub fn unexpected_reply(&self) -> Option<&Reply> {
        match self {
            Self::UnexpectedReply(reply) => Some(reply),
            _ => None,
        }
    }
}

/// Runs `future` with a deadline of `limit`, mapping expiry to [`ClientError::Timeout`].
pub(crate) async fn with_timeout<T, E>(
    limit: std::time::Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, ClientError>
where
    ClientError: From<E>,
{
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result.map_err(ClientError::from),
        Err(_elapsed) => Err(ClientError::Timeout),
    }
}
