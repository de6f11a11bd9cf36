//! Replies: the three-digit code plus text the server sends on the control connection
//! (RFC 959 §4.2), encoded by the server and parsed back by the client.

use std::fmt;

/// An RFC 959 reply code. The named constants are the ones this project uses.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyCode(pub u16);

impl ReplyCode {
    /// 110 Restart marker reply.
    pub const RESTART_MARKER: Self = Self(110);
    /// 150 File status okay; about to open data connection.
    pub const OPENING_DATA: Self = Self(150);
    /// 200 Command okay.
    pub const OK: Self = Self(200);
    /// 202 Command not implemented, superfluous at this site.
    pub const SUPERFLUOUS: Self = Self(202);
    /// 211 System status, or system help reply (FEAT, STAT).
    pub const SYSTEM_STATUS: Self = Self(211);
    /// 212 Directory status (STAT path).
    pub const DIRECTORY_STATUS: Self = Self(212);
    /// 213 File status (SIZE, MDTM, STAT path).
    pub const FILE_STATUS: Self = Self(213);
    /// 214 Help message.
    pub const HELP: Self = Self(214);
    /// 215 NAME system type.
    pub const SYSTEM_TYPE: Self = Self(215);
    /// 220 Service ready for new user.
    pub const SERVICE_READY: Self = Self(220);
    /// 221 Service closing control connection.
    pub const CLOSING: Self = Self(221);
    /// 225 Data connection open; no transfer in progress.
    pub const DATA_OPEN_NO_TRANSFER: Self = Self(225);
    /// 226 Closing data connection; requested file action successful.
    pub const CLOSING_DATA: Self = Self(226);
    /// 227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).
    pub const ENTERING_PASSIVE: Self = Self(227);
    /// 229 Entering Extended Passive Mode (|||port|) (RFC 2428).
    pub const ENTERING_EXTENDED_PASSIVE: Self = Self(229);
    /// 230 User logged in, proceed.
    pub const LOGGED_IN: Self = Self(230);
    /// 234 Security data exchange complete (RFC 2228: AUTH accepted, the TLS handshake
    /// follows).
    pub const AUTH_OK: Self = Self(234);
    /// 250 Requested file action okay, completed.
    pub const FILE_ACTION_OK: Self = Self(250);
    /// 257 "PATHNAME" created / current directory.
    pub const PATH_CREATED: Self = Self(257);
    /// 331 User name okay, need password.
    pub const NEED_PASSWORD: Self = Self(331);
    /// 350 Requested file action pending further information (RNFR, REST).
    pub const PENDING_FURTHER_INFO: Self = Self(350);
    /// 421 Service not available, closing control connection.
    pub const SERVICE_UNAVAILABLE: Self = Self(421);
    /// 425 Can't open data connection.
    pub const CANT_OPEN_DATA: Self = Self(425);
    /// 426 Connection closed; transfer aborted.
    pub const TRANSFER_ABORTED: Self = Self(426);
    /// 450 Requested file action not taken; file unavailable (busy), may be retried.
    pub const FILE_BUSY: Self = Self(450);
    /// 451 Requested action aborted: local error in processing.
    pub const LOCAL_ERROR: Self = Self(451);
    /// 452 Requested action not taken; insufficient storage space.
    pub const INSUFFICIENT_STORAGE: Self = Self(452);
    /// 500 Syntax error, command unrecognized (also: line too long).
    pub const SYNTAX_ERROR: Self = Self(500);
    /// 501 Syntax error in parameters or arguments.
    pub const SYNTAX_ERROR_ARGS: Self = Self(501);
    /// 502 Command not implemented.
    pub const NOT_IMPLEMENTED: Self = Self(502);
    /// 503 Bad sequence of commands.
    pub const BAD_SEQUENCE: Self = Self(503);
    /// 504 Command not implemented for that parameter.
    pub const NOT_IMPLEMENTED_FOR_PARAMETER: Self = Self(504);
    /// 522 Network protocol not supported (RFC 2428).
    pub const PROTOCOL_NOT_SUPPORTED: Self = Self(522);
    /// 521 Data connection cannot be opened with this PROT setting (RFC 4217 §9).
    pub const PROT_REFUSED: Self = Self(521);
    /// 530 Not logged in.
    pub const NOT_LOGGED_IN: Self = Self(530);
    /// 533 Command protection level denied for policy reasons (RFC 2228).
    pub const PROTECTION_DENIED: Self = Self(533);
    /// 534 Request denied for policy reasons (RFC 2228).
    pub const POLICY_DENIED: Self = Self(534);
    /// 536 Requested PROT level not supported by mechanism (RFC 2228).
    pub const PROT_NOT_SUPPORTED: Self = Self(536);
    /// 550 Requested action not taken; file unavailable (not found, no access).
    pub const FILE_UNAVAILABLE: Self = Self(550);
    /// 551 Requested action aborted: page type unknown.
    pub const PAGE_TYPE_UNKNOWN: Self = Self(551);
    /// 552 Requested file action aborted; exceeded storage allocation.
    pub const EXCEEDED_STORAGE: Self = Self(552);
    /// 553 Requested action not taken; file name not allowed.
    pub const NAME_NOT_ALLOWED: Self = Self(553);
    /// 554 Requested action not taken: invalid REST parameter (RFC 3659 §5.4).
    pub const INVALID_RANGE: Self = Self(554);

    /// 1yz: a positive preliminary reply; another reply follows.
    pub fn is_preliminary(self) -> bool {
        (100..200).contains(&self.0)
    }

    /// 2yz: positive completion.
    pub fn is_positive_completion(self) -> bool {
        (200..300).contains(&self.0)
    }

    /// 3yz: positive intermediate (more input expected).
    pub fn is_positive_intermediate(self) -> bool {
        (300..400).contains(&self.0)
    }

    /// 4yz or 5yz.
    pub fn is_negative(self) -> bool {
        self.0 >= 400
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:03}", self.0)
    }
}

impl fmt::Debug for ReplyCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:03}", self.0)
    }
}

/// One reply: a code and one or more lines of text.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Reply {
    /// The reply code.
    pub code: ReplyCode,
    /// The text lines; never empty. CR and LF never occur inside a line.
    pub lines: Vec<String>,
}

impl Reply {
    /// A single-line reply. CR and LF in `text` are replaced by spaces so a reply can never
    /// inject another reply (a file name with a newline, for instance).
    pub fn new(code: ReplyCode, text: impl Into<String>) -> Self {
        Self {
            code,
            lines: vec![sanitize(text.into())],
        }
    }

    /// A multi-line reply (RFC 959 §4.2: `code-first`, …, `code last`).
    pub fn multiline(code: ReplyCode, lines: impl IntoIterator<Item = String>) -> Self {
        let mut lines: Vec<String> = lines.into_iter().map(sanitize).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Self { code, lines }
    }

    /// The text of all lines joined with `\n` (for tests and logs).
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Appends the wire form to `out`.
    ///
    /// Multi-line replies follow RFC 959 §4.2: the first line is `code-text`, the last
    /// `code text`, and inner lines are prefixed by a space so that none of them can be
    /// mistaken for the terminating line (a listing line starting with three digits).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let code = self.code.0;
        let digits = [
            b'0' + (code / 100 % 10) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
        ];
        let last = self.lines.len() - 1;
        for (index, line) in self.lines.iter().enumerate() {
            if index == 0 {
                out.extend_from_slice(&digits);
                out.push(if last == 0 { b' ' } else { b'-' });
            } else if index == last {
                out.extend_from_slice(&digits);
                out.push(b' ');
            } else {
                out.push(b' ');
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.lines.iter().map(|l| l.len() + 6).sum::<usize>());
        self.encode_into(&mut out);
        out
    }
}

fn sanitize(text: String) -> String {
    if text.contains(['\r', '\n']) {
        text.replace(['\r', '\n'], " ")
    } else {
        text
    }
}

/// Why a reply from a server could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyParseError {
    /// A line did not start with three digits.
    #[error("malformed reply line: {0:?}")]
    Malformed(String),
    /// The reply grew beyond the limit.
    #[error("reply too long")]
    TooLong,
}

/// Client side: assembles replies from lines, following RFC 959 §4.2 multi-line rules.
#[derive(Debug, Default)]
pub struct ReplyParser {
    pending: Option<(ReplyCode, Vec<String>)>,
}

/// Most lines one reply may have (a STAT listing over the control connection can be long).
const MAX_REPLY_LINES: usize = 1_000_000;

impl ReplyParser {
    /// A parser with no partial reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one line (without CRLF). Returns a reply once its last line has arrived.
    pub fn feed_line(&mut self, line: &str) -> Result<Option<Reply>, ReplyParseError> {
        if let Some((code, lines)) = &mut self.pending {
            let terminator = format!("{code} ");
            if line.starts_with(&terminator) || line == format!("{code}") {
                lines.push(line.get(4..).unwrap_or("").to_owned());
                let (code, lines) = self.pending.take().expect("pending reply checked above");
                return Ok(Some(Reply { code, lines }));
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(ReplyParseError::TooLong);
            }
            // Inner lines: strip the leading space the encoder adds; keep others verbatim.
            let inner = line.strip_prefix(' ').unwrap_or(line);
            let inner = inner.strip_prefix(&format!("{code}-")).unwrap_or(inner);
            lines.push(inner.to_owned());
            return Ok(None);
        }
        let bytes = line.as_bytes();
        if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
            return Err(ReplyParseError::Malformed(line.to_owned()));
        }
        let code = ReplyCode(
            line[..3]
                .parse()
                .map_err(|_| ReplyParseError::Malformed(line.to_owned()))?,
        );
        match bytes.get(3) {
            Some(b'-') => {
                self.pending = Some((code, vec![line[4..].to_owned()]));
                Ok(None)
            }
            Some(b' ') => Ok(Some(Reply {
                code,
                lines: vec![line[4..].to_owned()],
            })),
            None => Ok(Some(Reply {
                code,
                lines: vec![String::new()],
            })),
            Some(_) => Err(ReplyParseError::Malformed(line.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_encoding() {
        assert_eq!(
            Reply::new(ReplyCode::OK, "Command okay").encode(),
            b"200 Command okay\r\n"
        );
    }

    #[test]
    fn multiline_encoding_prefixes_inner_lines() {
        let reply = Reply::multiline(
            ReplyCode::SYSTEM_STATUS,
            ["Features:".to_owned(), "UTF8".to_owned(), "End".to_owned()],
        );
        assert_eq!(reply.encode(), b"211-Features:\r\n UTF8\r\n211 End\r\n");
    }

    #[test]
    fn newlines_cannot_inject_a_reply() {
        let reply = Reply::new(ReplyCode::FILE_UNAVAILABLE, "a\r\n230 fake");
        assert_eq!(reply.encode(), b"550 a  230 fake\r\n");
    }

    #[test]
    fn parser_round_trips_encoded_replies() {
        let replies = [
            Reply::new(ReplyCode::SERVICE_READY, "hello"),
            Reply::multiline(
                ReplyCode::SYSTEM_STATUS,
                [
                    "a".to_owned(),
                    "211 looks like an end".to_owned(),
                    "end".to_owned(),
                ],
            ),
            Reply::multiline(ReplyCode::HELP, ["only".to_owned()]),
        ];
        for reply in replies {
            let wire = String::from_utf8(reply.encode()).unwrap();
            let mut parser = ReplyParser::new();
            let mut parsed = None;
            for line in wire.split("\r\n").filter(|l| !l.is_empty()) {
                parsed = parser.feed_line(line).unwrap();
            }
            assert_eq!(parsed, Some(reply));
        }
    }

    #[test]
    fn parser_accepts_other_servers_multiline_style() {
        // vsftpd and others repeat "211-" on inner lines or send them unprefixed.
        let mut parser = ReplyParser::new();
        assert_eq!(parser.feed_line("211-Features:").unwrap(), None);
        assert_eq!(parser.feed_line(" EPRT").unwrap(), None);
        assert_eq!(parser.feed_line("211-MDTM").unwrap(), None);
        let reply = parser.feed_line("211 End").unwrap().unwrap();
        assert_eq!(reply.lines, ["Features:", "EPRT", "MDTM", "End"]);
    }

    #[test]
    fn parser_rejects_garbage() {
        assert!(ReplyParser::new().feed_line("hello").is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Whatever text a reply carries (client bytes echoed in it included), its wire
            /// form is CRLF-terminated lines with no other CR or LF, and a client's parser
            /// reads back the same code and as many lines.
            #[test]
            fn any_reply_encodes_to_well_formed_lines_that_parse_back(
                code in 100u16..600,
                lines in proptest::collection::vec(any::<String>(), 0..6),
            ) {
                let reply = Reply::multiline(ReplyCode(code), lines.clone());
                let wire = reply.encode();
                prop_assert!(wire.ends_with(b"\r\n"));
                let text = String::from_utf8(wire).unwrap();
                let wire_lines: Vec<&str> = text.split_terminator("\r\n").collect();
                prop_assert_eq!(wire_lines.len(), lines.len().max(1));
                for line in &wire_lines {
                    prop_assert!(!line.contains('\r') && !line.contains('\n'), "{:?}", line);
                }
                let mut parser = ReplyParser::new();
                let mut parsed = None;
                for line in &wire_lines {
                    parsed = parser.feed_line(line).unwrap();
                }
                let parsed = parsed.expect("the last line completes the reply");
                prop_assert_eq!(parsed.code, ReplyCode(code));
                prop_assert_eq!(parsed.lines.len(), wire_lines.len());
            }
        }
    }
}
