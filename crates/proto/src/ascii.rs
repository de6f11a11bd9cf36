//! TYPE A (RFC 959 §3.1.1.1): the data connection carries text with CRLF line ends. Files
//! are stored with the local convention (LF), so downloads turn LF into CRLF and uploads
//! turn CRLF into LF. Both converters are streaming: a CR at the end of one chunk is
//! remembered until the next.

/// Local text (LF) to network text (CRLF).
#[derive(Debug, Default)]
pub struct ToNetwork {
    last_was_cr: bool,
}

impl ToNetwork {
    /// Converts one chunk, appending to `out`. A LF already preceded by CR is left alone so
    /// files that already hold CRLF are not doubled.
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16);
        for &byte in input {
            if byte == b'\n' && !self.last_was_cr {
                out.push(b'\r');
            }
            out.push(byte);
            self.last_was_cr = byte == b'\r';
        }
    }
}

/// Network text (CRLF) to local text (LF).
#[derive(Debug, Default)]
pub struct FromNetwork {
    pending_cr: bool,
}

impl FromNetwork {
    /// Converts one chunk, appending to `out`. A lone CR (not followed by LF) is kept.
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len());
        for &byte in input {
            if self.pending_cr {
                self.pending_cr = false;
                if byte != b'\n' {
                    out.push(b'\r');
                }
            }
            if byte == b'\r' {
                self.pending_cr = true;
            } else {
                out.push(byte);
            }
        }
    }

    /// Call at the end of the stream: a trailing lone CR is data.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_network(chunks: &[&[u8]]) -> Vec<u8> {
        let mut converter = ToNetwork::default();
        let mut out = Vec::new();
        for chunk in chunks {
            converter.convert(chunk, &mut out);
        }
        out
    }

    fn from_network(chunks: &[&[u8]]) -> Vec<u8> {
        let mut converter = FromNetwork::default();
        let mut out = Vec::new();
        for chunk in chunks {
            converter.convert(chunk, &mut out);
        }
        converter.finish(&mut out);
        out
    }

    #[test]
    fn lf_becomes_crlf_once() {
        assert_eq!(to_network(&[b"a\nb\r\nc\n"]), b"a\r\nb\r\nc\r\n");
        assert_eq!(to_network(&[b"a\r", b"\nb\n"]), b"a\r\nb\r\n");
    }

    #[test]
    fn crlf_becomes_lf_across_chunks() {
        assert_eq!(from_network(&[b"a\r\nb\r", b"\nc\rd\r"]), b"a\nb\nc\rd\r");
    }

    #[test]
    fn round_trip_of_lf_text_is_identity() {
        let text = b"line one\nline two\n\nend";
        assert_eq!(from_network(&[&to_network(&[text])]), text);
    }
}
