//! Control-connection framing: bytes in, command lines out.
//!
//! RFC 959 §4.1 ends every command with Telnet end-of-line (CRLF); clients in the wild also
//! send bare LF, which is accepted. Lines are bounded: a client that sends more than
//! `max_line` bytes without a newline gets one [`LineError::TooLong`] for that line and the
//! rest of it is discarded, so no client can grow the buffer without limit. Telnet IAC
//! sequences (RFC 854), which clients send around ABOR (IAC IP, IAC DM), are removed.

/// The default longest command line, in bytes, CRLF excluded.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024;

/// A line the framer could not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line exceeded the limit; it was discarded up to its end.
    #[error("command line too long")]
    TooLong,
}

/// Accumulates received bytes and splits them into lines.
#[derive(Debug)]
pub struct LineBuffer {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already searched for a newline, so a slowly arriving line is not
    /// rescanned from its start on every read.
    scanned: usize,
    max_line: usize,
    discarding: bool,
}

const IAC: u8 = 255;
const WILL: u8 = 251;
const DONT: u8 = 254;

impl LineBuffer {
    /// A framer that refuses lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            buffer: Vec::new(),
            scanned: 0,
            max_line,
            discarding: false,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as lines.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Drops everything buffered. Used after AUTH TLS (RFC 4217 §10 / CVE-2011-0411): bytes a
    /// client pipelined before the handshake must not be executed as protected commands.
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.scanned = 0;
    }

    /// Frees the buffer's memory while it is empty, so an idle session costs little.
    pub fn shrink_when_empty(&mut self) {
        if self.buffer.is_empty() {
            self.buffer = Vec::new();
        }
    }

    /// The next complete line (without CR LF and Telnet commands), if one has arrived.
    pub fn next_line(&mut self) -> Option<Result<Vec<u8>, LineError>> {
        loop {
            let newline = self.buffer[self.scanned..].iter().position(|&b| b == b'\n');
            let Some(offset) = newline else {
                self.scanned = self.buffer.len();
                if self.buffer.len() > self.max_line {
                    self.buffer.clear();
                    self.scanned = 0;
                    if !self.discarding {
                        self.discarding = true;
                        return Some(Err(LineError::TooLong));
                    }
                }
                return None;
            };
            let end = self.scanned + offset;
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            self.scanned = 0;
            line.pop(); // '\n'
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if self.discarding {
                // The tail of an over-long line: already answered.
                self.discarding = false;
                continue;
            }
            if line.len() > self.max_line {
                return Some(Err(LineError::TooLong));
            }
            strip_telnet_commands(&mut line);
            return Some(Ok(line));
        }
    }
}

/// Removes Telnet command sequences in place: `IAC IAC` is a literal 255, `IAC WILL/WONT/
/// DO/DONT x` is a three-byte negotiation, any other `IAC x` is a two-byte command.
fn strip_telnet_commands(line: &mut Vec<u8>) {
    if !line.contains(&IAC) {
        return;
    }
    let mut read = 0;
    let mut write = 0;
    while read < line.len() {
        let byte = line[read];
        if byte != IAC {
            line[write] = byte;
            write += 1;
            read += 1;
            continue;
        }
        match line.get(read + 1) {
            Some(&IAC) => {
                line[write] = IAC;
                write += 1;
                read += 2;
            }
            Some(&command) if (WILL..=DONT).contains(&command) => read += 3,
            Some(_) => read += 2,
            None => read += 1,
        }
    }
    line.truncate(write);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(buffer: &mut LineBuffer) -> Vec<Result<Vec<u8>, LineError>> {
        std::iter::from_fn(|| buffer.next_line()).collect()
    }

    #[test]
    fn splits_crlf_and_bare_lf() {
        let mut buffer = LineBuffer::new(100);
        buffer.push(b"USER a\r\nPASS b\nNO");
        assert_eq!(
            lines(&mut buffer),
            vec![Ok(b"USER a".to_vec()), Ok(b"PASS b".to_vec())]
        );
        buffer.push(b"OP\r\n");
        assert_eq!(lines(&mut buffer), vec![Ok(b"NOOP".to_vec())]);
    }

    #[test]
    fn over_long_line_reported_once_then_recovers() {
        let mut buffer = LineBuffer::new(8);
        buffer.push(b"0123456789");
        assert_eq!(lines(&mut buffer), vec![Err(LineError::TooLong)]);
        buffer.push(b"abcdef\r\nNOOP\r\n");
        assert_eq!(lines(&mut buffer), vec![Ok(b"NOOP".to_vec())]);
        assert_eq!(buffer.pending(), 0);
    }

    #[test]
    fn over_long_complete_line_in_one_read() {
        let mut buffer = LineBuffer::new(4);
        buffer.push(b"ABCDEFG\r\nNOOP\r\n");
        assert_eq!(
            lines(&mut buffer),
            vec![Err(LineError::TooLong), Ok(b"NOOP".to_vec())]
        );
    }

    #[test]
    fn telnet_commands_are_stripped() {
        let mut buffer = LineBuffer::new(100);
        buffer.push(&[IAC, 244, IAC, 242, b'A', b'B', b'O', b'R', b'\r', b'\n']);
        buffer.push(&[b'X', IAC, IAC, IAC, 253, 1, b'\n']);
        assert_eq!(
            lines(&mut buffer),
            vec![Ok(b"ABOR".to_vec()), Ok(vec![b'X', IAC])]
        );
    }

    #[test]
    fn clear_discards_pipelined_bytes() {
        let mut buffer = LineBuffer::new(100);
        buffer.push(b"AUTH TLS\r\nUSER evil\r\n");
        assert_eq!(buffer.next_line(), Some(Ok(b"AUTH TLS".to_vec())));
        buffer.clear();
        assert_eq!(buffer.next_line(), None);
    }
}
