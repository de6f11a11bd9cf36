//! Data-connection addresses on the control connection: the `h1,h2,h3,h4,p1,p2` form of
//! RFC 959 PORT and PASV, and the `|proto|address|port|` form of RFC 2428 EPRT and EPSV.
//!
//! Server and client share these functions, so the text one side formats is exactly the text
//! the other side parses. Parsers are strict about what a peer commands (PORT, EPRT) and lenient
//! about where the numbers sit in free-form reply text (PASV, EPSV), as real servers vary.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

use crate::reply::{Reply, ReplyCode};

/// Why a host-port argument or reply text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostPortError {
    /// PORT or PASV text did not hold exactly six comma-separated numbers.
    #[error("expected six comma-separated numbers h1,h2,h3,h4,p1,p2")]
    FieldCount,
    /// A field was not a decimal number in its range (0..=255 for PORT and PASV fields).
    #[error("invalid number {0:?}")]
    InvalidNumber(String),
    /// The EPRT delimiter is not a printable ASCII character (RFC 2428 §2: 33..=126), or the
    /// argument is not `<d>proto<d>address<d>port<d>`.
    #[error("malformed extended address, expected <d>proto<d>address<d>port<d>")]
    InvalidDelimiter,
    /// The network address does not parse as the family the protocol number names
    /// (1 = IPv4, 2 = IPv6).
    #[error("invalid network address {0:?} for the given protocol")]
    InvalidAddress(String),
    /// The TCP port is not in 1..=65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// The EPRT protocol number is neither 1 (IPv4) nor 2 (IPv6).
    #[error("unsupported network protocol {0:?}")]
    UnsupportedFamily(String),
    /// A PASV or EPSV reply text did not contain an address.
    #[error("no address found in reply text")]
    NotFound,
}

impl HostPortError {
    /// The reply a server sends when a client's PORT or EPRT argument is refused: 522 with the
    /// supported protocols for an unknown family (RFC 2428 §2), 501 for anything malformed.
    pub fn reply(&self) -> Reply {
        match self {
            Self::UnsupportedFamily(_) => Reply::new(
                ReplyCode::PROTOCOL_NOT_SUPPORTED,
                "Network protocol not supported, use (1,2)",
            ),
            other => Reply::new(
                ReplyCode::SYNTAX_ERROR_ARGS,
                format!("Invalid address: {other}"),
            ),
        }
    }
}

/// Parses the RFC 959 PORT argument `h1,h2,h3,h4,p1,p2` (each field 0..=255, spaces tolerated
/// around the numbers). Port 0 is refused: nothing can be reached there.
pub fn parse_port_argument(arg: &str) -> Result<SocketAddrV4, HostPortError> {
    let mut fields = [0u8; 6];
    let mut count = 0;
    for field in arg.split(',') {
        if count == fields.len() {
            return Err(HostPortError::FieldCount);
        }
        fields[count] = parse_byte(field.trim_matches(is_blank))?;
        count += 1;
    }
    if count != fields.len() {
        return Err(HostPortError::FieldCount);
    }
    socket_from_fields(fields)
}

/// Formats `addr` as the RFC 959 PORT argument `h1,h2,h3,h4,p1,p2`.
pub fn format_port_argument(addr: SocketAddrV4) -> String {
    let [h1, h2, h3, h4] = addr.ip().octets();
    let [p1, p2] = addr.port().to_be_bytes();
    format!("{h1},{h2},{h3},{h4},{p1},{p2}")
}

/// Parses the RFC 2428 EPRT argument `<d>proto<d>address<d>port<d>`, such as
/// `|1|132.235.1.2|6275|` or `|2|::1|5282|`.
///
/// The delimiter may be any ASCII character in 33..=126. Protocol 1 must carry an IPv4
/// address and 2 an IPv6 address; any other protocol number is
/// [`HostPortError::UnsupportedFamily`] (reply 522). The port must be in 1..=65535.
pub fn parse_eprt_argument(arg: &str) -> Result<SocketAddr, HostPortError> {
    let arg = arg.trim_matches(is_blank);
    let delimiter = arg.chars().next().ok_or(HostPortError::InvalidDelimiter)?;
    if !is_extended_delimiter(delimiter) {
        return Err(HostPortError::InvalidDelimiter);
    }
    let mut parts = arg[delimiter.len_utf8()..].split(delimiter);
    let (Some(protocol), Some(address), Some(port), Some(""), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(HostPortError::InvalidDelimiter);
    };
    if !is_decimal(protocol) {
        return Err(HostPortError::InvalidNumber(protocol.to_owned()));
    }
    let ip = match protocol.trim_start_matches('0') {
        "1" => address
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| HostPortError::InvalidAddress(address.to_owned()))?,
        "2" => address
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| HostPortError::InvalidAddress(address.to_owned()))?,
        _ => return Err(HostPortError::UnsupportedFamily(protocol.to_owned())),
    };
    Ok(SocketAddr::new(ip, parse_port(port)?))
}

/// Formats `addr` as the RFC 2428 EPRT argument: `|1|a.b.c.d|port|` or `|2|ipv6|port|`.
/// The IPv6 flow label and scope are not representable and are left out.
pub fn format_eprt_argument(addr: SocketAddr) -> String {
    let protocol = match addr.ip() {
        IpAddr::V4(_) => 1,
        IpAddr::V6(_) => 2,
    };
    format!("|{protocol}|{}|{}|", addr.ip(), addr.port())
}

/// The text of a 227 reply: `Entering Passive Mode (h1,h2,h3,h4,p1,p2).`
pub fn format_pasv_text(addr: SocketAddrV4) -> String {
    format!("Entering Passive Mode ({}).", format_port_argument(addr))
}

/// Finds the address in the text of a 227 reply.
///
/// RFC 959 does not fix the wording around the numbers and RFC 1123 §4.1.2.6 tells clients to
/// scan for them, so the first run of six comma-separated numbers anywhere in `text` is taken,
/// with or without parentheses.
pub fn parse_pasv_reply(text: &str) -> Result<SocketAddrV4, HostPortError> {
    let bytes = text.as_bytes();
    let mut last_error = HostPortError::NotFound;
    for start in 0..bytes.len() {
        if !starts_number_group(bytes, start) {
            continue;
        }
        if let Some(fields) = scan_six_numbers(&bytes[start..]) {
            match socket_from_fields(fields) {
                Ok(addr) => return Ok(addr),
                Err(error) => last_error = error,
            }
        }
    }
    Err(last_error)
}

/// The text of a 229 reply: `Entering Extended Passive Mode (|||port|)`.
pub fn format_epsv_text(port: u16) -> String {
    format!("Entering Extended Passive Mode (|||{port}|)")
}

/// Finds the port in the text of a 229 reply: `(<d><d><d>port<d>)` per RFC 2428 §3, where
/// `<d>` is any delimiter in 33..=126, usually `|`. The parentheses are not required.
pub fn parse_epsv_reply(text: &str) -> Result<u16, HostPortError> {
    let bytes = text.as_bytes();
    let mut last_error = HostPortError::NotFound;
    for start in 0..bytes.len() {
        let delimiter = bytes[start];
        if !is_extended_delimiter(char::from(delimiter)) || delimiter.is_ascii_digit() {
            continue;
        }
        let Some(rest) = bytes[start..].strip_prefix(&[delimiter; 3]) else {
            continue;
        };
        let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
        if digits == 0 || rest.get(digits) != Some(&delimiter) {
            continue;
        }
        let number = std::str::from_utf8(&rest[..digits]).expect("ASCII digits are UTF-8");
        match parse_port(number) {
            Ok(port) => return Ok(port),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

/// Spaces and tabs, tolerated around numbers.
fn is_blank(character: char) -> bool {
    character == ' ' || character == '\t'
}

/// RFC 2428 §2: the delimiter is a character in the ASCII range 33..=126.
fn is_extended_delimiter(character: char) -> bool {
    ('!'..='~').contains(&character)
}

fn is_decimal(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

fn parse_byte(text: &str) -> Result<u8, HostPortError> {
    if !is_decimal(text) {
        return Err(HostPortError::InvalidNumber(text.to_owned()));
    }
    text.parse()
        .map_err(|_| HostPortError::InvalidNumber(text.to_owned()))
}

fn parse_port(text: &str) -> Result<u16, HostPortError> {
    if !is_decimal(text) {
        return Err(HostPortError::InvalidPort(text.to_owned()));
    }
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(HostPortError::InvalidPort(text.to_owned())),
    }
}

fn socket_from_fields(fields: [u8; 6]) -> Result<SocketAddrV4, HostPortError> {
    let [h1, h2, h3, h4, p1, p2] = fields;
    let port = u16::from_be_bytes([p1, p2]);
    if port == 0 {
        return Err(HostPortError::InvalidPort(format!("{p1},{p2}")));
    }
    Ok(SocketAddrV4::new(Ipv4Addr::new(h1, h2, h3, h4), port))
}

/// Reads `n1,n2,n3,n4,n5,n6` (blanks allowed around commas, each 0..=255) from the start of
/// `bytes`. `None` when the text there is not exactly six such numbers.
fn scan_six_numbers(bytes: &[u8]) -> Option<[u8; 6]> {
    let mut fields = [0u8; 6];
    let mut position = 0;
    for (index, field) in fields.iter_mut().enumerate() {
        if index > 0 {
            position += count_blanks(&bytes[position..]);
            if bytes.get(position) != Some(&b',') {
                return None;
            }
            position += 1;
            position += count_blanks(&bytes[position..]);
        }
        let digits = bytes[position..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if digits == 0 || digits > 3 {
            return None;
        }
        let number = std::str::from_utf8(&bytes[position..position + digits]).ok()?;
        *field = number.parse().ok()?;
        position += digits;
    }
    // A seventh number means this is not an address.
    let after = position + count_blanks(&bytes[position..]);
    if bytes.get(after) == Some(&b',') {
        return None;
    }
    Some(fields)
}

/// Whether a comma-separated group of numbers begins at `start`: a digit that continues no
/// number and follows no comma (so the tail of `1,2,3,4,5,6,7` is not taken for an address).
fn starts_number_group(bytes: &[u8], start: usize) -> bool {
    if !bytes[start].is_ascii_digit() {
        return false;
    }
    let before = &bytes[..start];
    if before.last().is_some_and(u8::is_ascii_digit) {
        return false;
    }
    let trailing_blanks = before
        .iter()
        .rev()
        .take_while(|&&byte| byte == b' ' || byte == b'\t')
        .count();
    before[..before.len() - trailing_blanks].last() != Some(&b',')
}

fn count_blanks(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|&&byte| byte == b' ' || byte == b'\t')
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(text: &str) -> SocketAddrV4 {
        text.parse().unwrap()
    }

    fn socket(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn port_argument_table() {
        let accepted = [
            ("132,235,1,2,24,131", "132.235.1.2:6275"),
            ("127,0,0,1,0,1", "127.0.0.1:1"),
            ("255,255,255,255,255,255", "255.255.255.255:65535"),
            (" 10 , 0,0 ,1, 4,1 ", "10.0.0.1:1025"),
            ("\t10,0,0,1,4,1", "10.0.0.1:1025"),
            ("010,000,000,001,004,001", "10.0.0.1:1025"),
        ];
        for (argument, expected) in accepted {
            assert_eq!(
                parse_port_argument(argument),
                Ok(v4(expected)),
                "{argument:?}"
            );
        }
        let refused = [
            ("", HostPortError::InvalidNumber(String::new())),
            ("1,2,3,4,5", HostPortError::FieldCount),
            ("1,2,3,4,5,6,7", HostPortError::FieldCount),
            ("1,2,3,4,5,256", HostPortError::InvalidNumber("256".into())),
            ("1,2,3,4,5,-1", HostPortError::InvalidNumber("-1".into())),
            ("1,2,3,4,5,+1", HostPortError::InvalidNumber("+1".into())),
            ("1,2,3,4,,6", HostPortError::InvalidNumber(String::new())),
            ("1,2,3,4,5,6,", HostPortError::FieldCount),
            ("1,2,3,4,5 6,7", HostPortError::InvalidNumber("5 6".into())),
            ("a,b,c,d,e,f", HostPortError::InvalidNumber("a".into())),
            ("1,2,3,4,0,0", HostPortError::InvalidPort("0,0".into())),
            ("(1,2,3,4,5,6)", HostPortError::InvalidNumber("(1".into())),
        ];
        for (argument, expected) in refused {
            assert_eq!(parse_port_argument(argument), Err(expected), "{argument:?}");
        }
    }

    #[test]
    fn port_argument_formatting() {
        assert_eq!(
            format_port_argument(v4("132.235.1.2:6275")),
            "132,235,1,2,24,131"
        );
        assert_eq!(format_port_argument(v4("0.0.0.0:65535")), "0,0,0,0,255,255");
    }

    #[test]
    fn eprt_argument_table() {
        let accepted = [
            ("|1|132.235.1.2|6275|", "132.235.1.2:6275"),
            (
                "|2|1080::8:800:200C:417A|5282|",
                "[1080::8:800:200c:417a]:5282",
            ),
            ("|2|::1|5282|", "[::1]:5282"),
            ("!1!10.0.0.1!21!", "10.0.0.1:21"),
            ("~2~::ffff:10.0.0.1~65535~", "[::ffff:10.0.0.1]:65535"),
            ("  |1|10.0.0.1|21|  ", "10.0.0.1:21"),
        ];
        for (argument, expected) in accepted {
            assert_eq!(
                parse_eprt_argument(argument),
                Ok(socket(expected)),
                "{argument:?}"
            );
        }
        let refused = [
            ("", HostPortError::InvalidDelimiter),
            (" |1|10.0.0.1|21", HostPortError::InvalidDelimiter),
            ("|1|10.0.0.1|21|x", HostPortError::InvalidDelimiter),
            ("|1|10.0.0.1|21||", HostPortError::InvalidDelimiter),
            ("|1|10.0.0.1|21", HostPortError::InvalidDelimiter),
            ("é1é10.0.0.1é21é", HostPortError::InvalidDelimiter),
            (
                "|3|10.0.0.1|21|",
                HostPortError::UnsupportedFamily("3".into()),
            ),
            (
                "|0|10.0.0.1|21|",
                HostPortError::UnsupportedFamily("0".into()),
            ),
            ("|x|10.0.0.1|21|", HostPortError::InvalidNumber("x".into())),
            (
                "||10.0.0.1|21|",
                HostPortError::InvalidNumber(String::new()),
            ),
            ("|1|::1|21|", HostPortError::InvalidAddress("::1".into())),
            (
                "|2|10.0.0.1|21|",
                HostPortError::InvalidAddress("10.0.0.1".into()),
            ),
            (
                "|1|10.0.0.256|21|",
                HostPortError::InvalidAddress("10.0.0.256".into()),
            ),
            (
                "|1|host.example|21|",
                HostPortError::InvalidAddress("host.example".into()),
            ),
            (
                "|2|fe80::1%eth0|21|",
                HostPortError::InvalidAddress("fe80::1%eth0".into()),
            ),
            ("|1|10.0.0.1|0|", HostPortError::InvalidPort("0".into())),
            (
                "|1|10.0.0.1|65536|",
                HostPortError::InvalidPort("65536".into()),
            ),
            ("|1|10.0.0.1||", HostPortError::InvalidPort(String::new())),
            ("|1|10.0.0.1|+21|", HostPortError::InvalidPort("+21".into())),
        ];
        for (argument, expected) in refused {
            assert_eq!(parse_eprt_argument(argument), Err(expected), "{argument:?}");
        }
    }

    #[test]
    fn eprt_argument_formatting() {
        assert_eq!(
            format_eprt_argument(socket("132.235.1.2:6275")),
            "|1|132.235.1.2|6275|"
        );
        assert_eq!(format_eprt_argument(socket("[::1]:5282")), "|2|::1|5282|");
    }

    #[test]
    fn pasv_text_formatting() {
        assert_eq!(
            format_pasv_text(v4("192.168.1.2:1025")),
            "Entering Passive Mode (192,168,1,2,4,1)."
        );
    }

    #[test]
    fn pasv_reply_table() {
        let accepted = [
            "Entering Passive Mode (192,168,1,2,4,1).",
            "Entering Passive Mode (192,168,1,2,4,1)",
            "Entering Passive Mode 192,168,1,2,4,1",
            "Entering Passive Mode (192, 168, 1, 2, 4, 1)",
            "=192,168,1,2,4,1",
            "192,168,1,2,4,1",
            "227 Entering Passive Mode (192,168,1,2,4,1)",
            "Entering Passive Mode in 2 seconds (192,168,1,2,4,1)",
        ];
        for text in accepted {
            assert_eq!(
                parse_pasv_reply(text),
                Ok(v4("192.168.1.2:1025")),
                "{text:?}"
            );
        }
        let refused = [
            ("Entering Passive Mode", HostPortError::NotFound),
            ("", HostPortError::NotFound),
            (
                "Entering Passive Mode (192,168,1,2,4)",
                HostPortError::NotFound,
            ),
            (
                "Entering Passive Mode (192,168,1,2,4,1,7)",
                HostPortError::NotFound,
            ),
            (
                "Entering Passive Mode (192,168,1,256,4,1)",
                HostPortError::NotFound,
            ),
            (
                "Entering Passive Mode (1192,168,1,2,4,1)",
                HostPortError::NotFound,
            ),
            (
                "Entering Passive Mode (192,168,1,2,0,0)",
                HostPortError::InvalidPort("0,0".into()),
            ),
        ];
        for (text, expected) in refused {
            assert_eq!(parse_pasv_reply(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn epsv_text_formatting() {
        assert_eq!(
            format_epsv_text(6446),
            "Entering Extended Passive Mode (|||6446|)"
        );
    }

    #[test]
    fn epsv_reply_table() {
        let accepted = [
            ("Entering Extended Passive Mode (|||6446|)", 6446),
            ("Entering Extended Passive Mode (!!!6446!)", 6446),
            ("Entering Extended Passive Mode |||6446|", 6446),
            ("Extended Passive mode OK (|||65535|)", 65535),
            ("229 Entering Extended Passive Mode (|||1|)", 1),
        ];
        for (text, expected) in accepted {
            assert_eq!(parse_epsv_reply(text), Ok(expected), "{text:?}");
        }
        let refused = [
            ("Entering Extended Passive Mode", HostPortError::NotFound),
            (
                "Entering Extended Passive Mode (||6446|)",
                HostPortError::NotFound,
            ),
            (
                "Entering Extended Passive Mode (|||6446)",
                HostPortError::NotFound,
            ),
            (
                "Entering Extended Passive Mode (|!|6446|)",
                HostPortError::NotFound,
            ),
            (
                "Entering Extended Passive Mode (|||abc|)",
                HostPortError::NotFound,
            ),
            (
                "Entering Extended Passive Mode (|||0|)",
                HostPortError::InvalidPort("0".into()),
            ),
            (
                "Entering Extended Passive Mode (|||65536|)",
                HostPortError::InvalidPort("65536".into()),
            ),
        ];
        for (text, expected) in refused {
            assert_eq!(parse_epsv_reply(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn errors_know_their_reply() {
        let unsupported = parse_eprt_argument("|3|10.0.0.1|21|").unwrap_err().reply();
        assert_eq!(unsupported.code, ReplyCode::PROTOCOL_NOT_SUPPORTED);
        assert_eq!(
            unsupported.text(),
            "Network protocol not supported, use (1,2)"
        );
        for malformed in [
            parse_port_argument("1,2,3").unwrap_err(),
            parse_eprt_argument("|1|::1|21|").unwrap_err(),
            parse_eprt_argument("|1|10.0.0.1|0|").unwrap_err(),
        ] {
            assert_eq!(
                malformed.reply().code,
                ReplyCode::SYNTAX_ERROR_ARGS,
                "{malformed:?}"
            );
        }
    }

    fn any_socket_addr_v4() -> impl Strategy<Value = SocketAddrV4> {
        (any::<[u8; 4]>(), 1..=u16::MAX)
            .prop_map(|(octets, port)| SocketAddrV4::new(octets.into(), port))
    }

    fn any_socket_addr() -> impl Strategy<Value = SocketAddr> {
        let ip = prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ];
        (ip, 1..=u16::MAX).prop_map(|(ip, port)| SocketAddr::new(ip, port))
    }

    proptest! {
        #[test]
        fn port_argument_round_trips(addr in any_socket_addr_v4()) {
            prop_assert_eq!(parse_port_argument(&format_port_argument(addr)), Ok(addr));
        }

        #[test]
        fn pasv_text_round_trips(addr in any_socket_addr_v4()) {
            prop_assert_eq!(parse_pasv_reply(&format_pasv_text(addr)), Ok(addr));
        }

        #[test]
        fn eprt_argument_round_trips(addr in any_socket_addr()) {
            prop_assert_eq!(parse_eprt_argument(&format_eprt_argument(addr)), Ok(addr));
        }

        #[test]
        fn epsv_text_round_trips(port in 1..=u16::MAX) {
            prop_assert_eq!(parse_epsv_reply(&format_epsv_text(port)), Ok(port));
        }

        #[test]
        fn parsers_never_panic(text in "\\PC{0,64}") {
            let _ = parse_port_argument(&text);
            let _ = parse_eprt_argument(&text);
            let _ = parse_pasv_reply(&text);
            let _ = parse_epsv_reply(&text);
        }
    }
}
