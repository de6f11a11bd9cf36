//! Values with a syntax of their own: port ranges (`"50000-50100"`), advertised addresses
//! (an IP or a DNS name) and byte rates (`"10MB/s"`).

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// An advertised address: an IP, or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertiseAddress {
    /// A fixed IP.
    Ip(IpAddr),
    /// A DNS name, resolved in the background.
    Name(String),
}

impl FromStr for AdvertiseAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let is_name = !text.is_empty()
            && text.len() <= 253
            && text.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if is_name {
            Ok(Self::Name(text.to_owned()))
        } else {
            Err(format!("{text:?} is neither an IP address nor a DNS name"))
        }
    }
}

impl<'de> Deserialize<'de> for AdvertiseAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for AdvertiseAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(formatter),
            Self::Name(name) => formatter.write_str(name),
        }
    }
}

/// A rate: a number of bytes per second, or text with a unit (`"10MB/s"`: MB = 10^6 bytes,
/// MiB = 2^20).
pub(crate) fn deserialize_rate<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Rate {
        Bytes(u64),
        Text(String),
    }
    let rate = match Rate::deserialize(deserializer)? {
        Rate::Bytes(0) => {
            Err("a rate of 0 would stop every transfer (leave it out for no limit)".to_owned())
        }
        Rate::Bytes(bytes) => Ok(bytes),
        Rate::Text(text) => {
            ferroftp_proto::policy::parse_byte_rate(&text).map_err(|error| error.to_string())
        }
    };
    rate.map(Some).map_err(serde::de::Error::custom)
}

/// A byte size written as a number of bytes or as text with a unit (`"8MiB"`).
pub(crate) fn deserialize_size<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(bytes) => Ok(Some(bytes)),
        Size::Text(text) => ferroftp_proto::policy::parse_byte_size(&text)
            .map(Some)
            .map_err(|error| serde::de::Error::custom(error.to_string())),
    }
}

/// An inclusive, non-empty range of TCP ports, written `"50000-50100"` (or `"50000"` for one
/// port). Port 0 ("any port") is never part of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub(crate) first: u16,
    pub(crate) last: u16,
}

/// Why a port range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// Not `FIRST-LAST` or `PORT`.
    #[error("expected a port range such as \"50000-50100\", got {0:?}")]
    Syntax(String),
    /// A bound is not a number from 1 to 65535.
    #[error("{0:?} is not a port number from 1 to 65535")]
    BadPort(String),
    /// The first port is after the last.
    #[error("the first port {first} is after the last port {last}")]
    Reversed {
        /// The first port given.
        first: u16,
        /// The last port given.
        last: u16,
    },
}

impl PortRange {
    /// The range `first..=last`; both must be non-zero and `first <= last`.
    pub fn new(first: u16, last: u16) -> Result<Self, PortRangeError> {
        if first == 0 {
            return Err(PortRangeError::BadPort("0".to_owned()));
        }
        if first > last {
            return Err(PortRangeError::Reversed { first, last });
        }
        Ok(Self { first, last })
    }

    /// The lowest port.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// The number of ports, at least 1.
    #[expect(clippy::len_without_is_empty, reason = "a port range is never empty")]
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// The ports, lowest first.
    pub fn ports(&self) -> RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(text: &str) -> Result<Self, PortRangeError> {
        let parse_port = |part: &str| {
            let part = part.trim();
            match part.parse::<u16>() {
                Ok(port) if port != 0 => Ok(port),
                _ if part.is_empty() => Err(PortRangeError::Syntax(text.to_owned())),
                _ => Err(PortRangeError::BadPort(part.to_owned())),
            }
        };
        match text.split_once('-') {
            Some((first, last)) => Self::new(parse_port(first)?, parse_port(last)?),
            None => {
                let port = parse_port(text)?;
                Self::new(port, port)
            }
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(formatter, "{}", self.first)
        } else {
            write!(formatter, "{}-{}", self.first, self.last)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
