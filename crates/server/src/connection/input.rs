//! Reading the control connection: bytes in, lines to the session. Every read (the loop's,
//! the reads past TCP urgent data) ends in [`ControlInput::receive`].

use std::io;
use std::net::SocketAddr;

use ferroftp_proto::Session;
use ferroftp_proto::framing::{LineBuffer, LineError};

use super::{ControlStream, now};
use crate::status::SessionHandle;
use crate::telemetry;
use crate::{Defender, DefenderEvent};

/// Bytes read from the control connection at once.
pub(super) const CONTROL_READ: usize = 2048;

/// Direct reads after a read that ended inside a line (see `read_past_urgent_mark`).
const URGENT_MARK_READS: usize = 4;

/// The control connection's input side, borrowed from the connection: what a line needs to
/// reach the session.
pub(super) struct ControlInput<'a> {
    pub(super) stream: &'a mut ControlStream,
    pub(super) lines: &'a mut LineBuffer,
    pub(super) session: &'a mut Session,
    pub(super) registration: &'a SessionHandle,
    pub(super) defender: &'a Defender,
    pub(super) peer: SocketAddr,
}

impl ControlInput<'_> {
    /// Pushes bytes read from the control connection and hands each complete line to the
    /// session.
    pub(super) fn receive(&mut self, bytes: &[u8]) {
        self.lines.push(bytes);
        self.hand_over_lines();
    }

    /// Hands each complete line buffered so far to the session, counting it and the
    /// session's activity; a line over the length cap counts against the client's address
    /// (a protocol error).
    pub(super) fn hand_over_lines(&mut self) {
        while let Some(line) = self.lines.next_line() {
            if matches!(line, Err(LineError::TooLong)) {
                self.defender
                    .record(self.peer.ip(), DefenderEvent::ProtocolError);
            }
            let now = now();
            if let Ok(text) = &line {
                telemetry::command(telemetry::verb_label(text));
            }
            self.registration.touch(now);
            self.session.handle_line(line, now);
        }
    }

    /// Reads on past TCP urgent data; `false` when the client closed the connection.
    ///
    /// RFC 959 §4.1.3 has clients send ABOR after Telnet IP and Synch, the Synch being
    /// IAC DM with TCP urgent data (lftp sends `IAC IP IAC` with `MSG_OOB`, then `DM ABOR`;
    /// Python's ftplib sends the whole `ABOR` line with `MSG_OOB`). With `SO_OOBINLINE` the
    /// urgent byte stays in the stream (the framer drops the Telnet commands), but the kernel
    /// ends a read just before the urgent mark, and tokio takes a read shorter than its
    /// buffer for a drained socket: it waits for the next edge, which comes only with the
    /// client's next command, so ABOR was answered only after the command that followed it.
    /// A read that ends inside a line is exactly what the mark produces (clients send whole
    /// lines), so only then the socket is read again directly, without waiting, until the
    /// line is complete or nothing more has arrived. TLS clients send no urgent data (it
    /// would land inside a TLS record), so only plain connections need this.
    pub(super) fn read_past_urgent_mark(&mut self) -> io::Result<bool> {
        let mut buffer = [0u8; CONTROL_READ];
        // A few rounds at most: one urgent mark per ABOR, and a client that streams bytes
        // must not keep the thread here.
        for _ in 0..URGENT_MARK_READS {
            if self.lines.pending() == 0 {
                break;
            }
            let ControlStream::Plain(tcp) = &*self.stream else {
                return Ok(true);
            };
            // The socket is non-blocking (tokio's); bypassing tokio here is sound because
            // a `WouldBlock` leaves its readiness cleared, as the short read did.
            match io::Read::read(&mut &*socket2::SockRef::from(tcp), &mut buffer) {
                Ok(0) => return Ok(false),
                Ok(read) => self.receive(&buffer[..read]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }
}
