//! The PROXY protocol (HAProxy, v1 text and v2 binary) on control and passive data
//! connections: behind a load balancer, the client address the server must log, check and
//! compare is the one the balancer reports in its header, not the balancer's own.
//!
//! Only connections from configured trusted sources may carry a header (anyone else could
//! claim any address); a header from another source is refused.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use ppp::{HeaderResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Which peers speak the PROXY protocol.
#[derive(Clone, Debug, Default)]
pub struct ProxyProtocolOptions {
    /// Sources whose connections start with a PROXY header. Empty: the protocol is off.
    pub trusted: Vec<IpNet>,
    /// How long a trusted source may take to send its header.
    pub header_timeout: Duration,
}

impl ProxyProtocolOptions {
    /// `true` when any source is trusted.
    pub fn is_enabled(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// `true` when connections from `ip` carry a header.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|network| network.contains(&ip))
    }
}

/// Why a header could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
    #[error("malformed PROXY header")]
    Malformed,
}

/// v2 headers start with this 12-byte signature (HAProxy's proxy-protocol.txt §2.2).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes, CRLF included (§2.1).
const V1_MAX: usize = 107;
/// v2 headers carrying TLVs can be longer; nothing legitimate comes near this.
const V2_MAX: usize = 16 + 1024;

/// `true` when `bytes` begin like a PROXY header (used to refuse one from an untrusted peer).
/// The first read of a connection may hold only part of a header; four bytes of the v2
/// signature are already unlike anything an FTP client sends first.
pub(crate) fn looks_like_header(bytes: &[u8]) -> bool {
    let is_v1 = bytes.starts_with(b"PROXY ");
    let is_v2 = bytes.len() >= 4 && V2_SIGNATURE.starts_with(&bytes[..bytes.len().min(12)]);
    is_v1 || is_v2
}

/// Reads exactly one header from `stream`, consuming its bytes and nothing after them (a
/// client's data may follow at once on a data connection). Returns the source address it
/// names, or `None` for a header without one (v2 LOCAL, v1 UNKNOWN: the balancer's own
/// health checks).
pub(crate) async fn read_header(
    stream: &mut TcpStream,
    header_timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    tokio::time::timeout(header_timeout, read_header_bytes(stream))
        .await
        .map_err(|_| ProxyHeaderError::Timeout(header_timeout))?
        .and_then(|bytes| parse_source(&bytes))
}

async fn read_header_bytes<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<Vec<u8>, ProxyHeaderError> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await?;
    if first[0] == V2_SIGNATURE[0] {
        let mut fixed = [0u8; 16];
        fixed[0] = first[0];
        stream.read_exact(&mut fixed[1..]).await?;
        if &fixed[..12] != V2_SIGNATURE {
            return Err(ProxyHeaderError::Malformed);
        }
        let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        if 16 + length > V2_MAX {
            return Err(ProxyHeaderError::Malformed);
        }
        let mut header = Vec::with_capacity(16 + length);
        header.extend_from_slice(&fixed);
        header.resize(16 + length, 0);
        stream.read_exact(&mut header[16..]).await?;
        return Ok(header);
    }
    // v1: a text line; read it byte by byte so nothing after its LF is consumed.
    let mut header = vec![first[0]];
    while header.last() != Some(&b'\n') {
        if header.len() >= V1_MAX {
            return Err(ProxyHeaderError::Malformed);
        }
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        header.push(byte[0]);
    }
    Ok(header)
}

/// The header reader and parser on a byte string, for the fuzzer (`fuzz/`): what a
/// connection would yield if these were its first bytes.
#[cfg(feature = "fuzzing")]
pub fn read_header_from_bytes(mut bytes: &[u8]) -> Result<Option<SocketAddr>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|error| error.to_string())?;
    runtime
        .block_on(async { parse_source(&read_header_bytes(&mut bytes).await?) })
        .map_err(|error| error.to_string())
}

fn parse_source(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(header)) => Ok(match header.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(header)) => Ok(match (header.command, header.addresses) {
            (v2::Command::Local, _) => None,
            (_, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, _) => None,
        }),
        _ => Err(ProxyHeaderError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn v1_header_is_consumed_exactly() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 2121\r\nSTOR data")
            .await
            .unwrap();
        let source = read_header(&mut server, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(source, Some("198.51.100.7:40000".parse().unwrap()));
        let mut rest = [0u8; 9];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"STOR data");
    }

    #[tokio::test]
    async fn v2_header_with_ipv6_and_local_command() {
        let addresses: v2::Addresses = v2::IPv6::new(
            "2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap(),
            "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap(),
            40000,
            2121,
        )
        .into();
        let header = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            addresses,
        )
        .build()
        .unwrap();
        let (mut client, mut server) = pair().await;
        client.write_all(&header).await.unwrap();
        client.write_all(b"x").await.unwrap();
        let source = read_header(&mut server, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(source, Some("[2001:db8::7]:40000".parse().unwrap()));
        let mut rest = [0u8; 1];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"x");

        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        let (mut client, mut server) = pair().await;
        client.write_all(&local).await.unwrap();
        assert_eq!(
            read_header(&mut server, Duration::from_secs(5))
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn garbage_and_silence_are_errors() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"USER alice\r\n").await.unwrap();
        assert!(matches!(
            read_header(&mut server, Duration::from_secs(5)).await,
            Err(ProxyHeaderError::Malformed)
        ));
        let (_client, mut server) = pair().await;
        assert!(matches!(
            read_header(&mut server, Duration::from_millis(50)).await,
            Err(ProxyHeaderError::Timeout(_))
        ));
    }

    #[test]
    fn header_detection_and_trust() {
        assert!(looks_like_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"));
        assert!(looks_like_header(V2_SIGNATURE));
        assert!(!looks_like_header(b"USER x\r\n"));
        let options = ProxyProtocolOptions {
            trusted: vec!["10.0.0.0/8".parse().unwrap()],
            header_timeout: Duration::from_secs(5),
        };
        assert!(options.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(options.is_trusted("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!options.is_trusted("192.0.2.1".parse().unwrap()));
    }
}
