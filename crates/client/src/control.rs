//! The control connection: bounded, cancellation-safe reply reading and command writing.

use std::io;
use std::time::Duration;

use ferroftp_proto::{Reply, ReplyParser};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::error::{ClientError, with_timeout};
use crate::tls::{ClientTls, MaybeTls};

/// The longest reply line accepted from a server, in bytes, CRLF included.
pub const MAX_REPLY_LINE: usize = 64 * 1024;

/// The control connection's stream plus the partial line and reply received so far.
///
/// Received bytes move from the stream's buffer into `line` and lines into `parser` without an
/// await in between, so a read cancelled by a timeout loses nothing and can be retried.
#[derive(Debug)]
pub(crate) struct Control {
    stream: BufReader<MaybeTls>,
    line: Vec<u8>,
    parser: ReplyParser,
}

impl Control {
    pub(crate) fn new(stream: MaybeTls) -> Self {
        Self {
            stream: BufReader::new(stream),
            line: Vec::new(),
            parser: ReplyParser::new(),
        }
    }

    /// Whether the control connection is protected.
    pub(crate) fn is_tls(&self) -> bool {
        self.stream.get_ref().is_tls()
    }

    /// Runs the TLS handshake on the plain connection (after a 234 reply to AUTH TLS).
    pub(crate) async fn upgrade(
        &mut self,
        tls: &ClientTls,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        if !self.stream.buffer().is_empty() || !self.line.is_empty() {
            return Err(ClientError::Protocol(
                "the server sent more after its AUTH TLS reply".to_owned(),
            ));
        }
        let MaybeTls::Plain(tcp) = std::mem::replace(self.stream.get_mut(), MaybeTls::Closed)
        else {
            return Err(ClientError::Protocol(
                "the control connection is not plain".to_owned(),
            ));
        };
        let stream = with_timeout(timeout, tls.connect_control(tcp)).await?;
        *self.stream.get_mut() = MaybeTls::Tls(Box::new(stream));
        Ok(())
    }

    /// Writes `bytes` as they are and flushes them.
    pub(crate) async fn write(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let stream = self.stream.get_mut();
        with_timeout(timeout, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
    }

    /// Reads one complete reply, however many lines it has, within `timeout`.
    pub(crate) async fn read_reply(&mut self, timeout: Duration) -> Result<Reply, ClientError> {
        with_timeout(timeout, self.read_reply_unbounded()).await
    }

    async fn read_reply_unbounded(&mut self) -> Result<Reply, ClientError> {
        loop {
            let line = self.read_line().await?;
            match self.parser.feed_line(&line) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(error) => {
                    self.parser = ReplyParser::new();
                    return Err(ClientError::Protocol(error.to_string()));
                }
            }
        }
    }

    /// Reads one CRLF-terminated line and returns it without the CRLF. Bytes that are not
    /// UTF-8 (a Latin-1 file name in a 550 text) are replaced by U+FFFD.
    async fn read_line(&mut self) -> Result<String, ClientError> {
        loop {
            let available = self.stream.fill_buf().await?;
            if available.is_empty() {
                return Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the control connection",
                )));
            }
            let (taken, complete) = match available.iter().position(|&byte| byte == b'\n') {
                Some(newline) => (newline + 1, true),
                None => (available.len(), false),
            };
            if self.line.len() + taken > MAX_REPLY_LINE {
                self.line.clear();
                return Err(ClientError::Protocol(format!(
                    "reply line longer than {MAX_REPLY_LINE} bytes"
                )));
            }
            self.line.extend_from_slice(&available[..taken]);
            self.stream.consume(taken);
            if complete {
                break;
            }
        }
        let line = std::mem::take(&mut self.line);
        let Some(text) = line.strip_suffix(b"\r\n") else {
            return Err(ClientError::Protocol(format!(
                "reply line not terminated by CRLF: {:?}",
                String::from_utf8_lossy(&line)
            )));
        };
        Ok(String::from_utf8_lossy(text).into_owned())
    }
}
