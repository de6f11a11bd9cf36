//! What an account may use: its sessions, its bandwidth, its storage and where it may log in
//! from ([`UserPolicy`]), and the byte quantities it is written in (`"10MB/s"`, `"2GiB"`).
//!
//! The policy is data carried on the [`User`](crate::User) a login returns, so every user
//! source can provide it; the server enforces it (token buckets, usage counts), the session
//! only the parts it can decide alone (`allow_from`, the STAT line).

use std::fmt;
use std::net::IpAddr;

use crate::address::Cidr;

/// Limits of one account; `None` (or an empty `allow_from`) means no limit of that kind
/// beyond the server's own defaults (`[limits]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPolicy {
    /// Logged-in sessions of this account at once; the next login gets 530.
    pub max_sessions: Option<u32>,
    /// Bytes per second sent to this account, shared by all of its sessions.
    pub download_rate: Option<u64>,
    /// Bytes per second received from this account, shared by all of its sessions.
    pub upload_rate: Option<u64>,
    /// Bytes of files under the account's home.
    pub quota_bytes: Option<u64>,
    /// Number of files under the account's home.
    pub quota_files: Option<u64>,
    /// Networks the account may log in from; empty: anywhere.
    pub allow_from: Vec<Cidr>,
}

impl UserPolicy {
    /// Whether a login from `ip` is allowed.
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        self.allow_from.is_empty() || self.allow_from.iter().any(|net| net.contains(ip))
    }

    /// Whether uploads are limited by a quota (so usage must be counted).
    pub fn has_quota(&self) -> bool {
        self.quota_bytes.is_some() || self.quota_files.is_some()
    }
}

/// Why a byte quantity could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantityError(String);

impl fmt::Display for QuantityError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for QuantityError {}

/// Parses a size such as `"5000"`, `"10MB"`, `"1.5 GiB"` or `"64k"` into bytes. Decimal
/// units are powers of 1000 (`kB`/`k`, `MB`/`M`, `GB`/`G`, `TB`/`T`), binary ones powers of
/// 1024 (`KiB`, `MiB`, `GiB`, `TiB`); `B` or nothing means bytes. Case does not matter,
/// except that a unit ending in a lowercase `b` (`Mb`, `kb`) would be bits and is refused.
pub fn parse_byte_size(text: &str) -> Result<u64, QuantityError> {
    parse_size_shown_as(text, text)
}

/// [`parse_byte_size`] of `size`, naming `text` (what the user wrote) in errors.
fn parse_size_shown_as(size: &str, text: &str) -> Result<u64, QuantityError> {
    let trimmed = size.trim();
    let split = trimmed
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(QuantityError(format!(
            "{text:?} is not a size (expected a number and a unit, such as \"10MB\")"
        )));
    }
    if unit.len() > 1 && unit.ends_with('b') && !unit.ends_with("ib") && !unit.ends_with("iB") {
        return Err(QuantityError(format!(
            "{text:?}: units are bytes (B), not bits (b)"
        )));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(QuantityError(format!(
                "{text:?}: unknown unit {unit:?} (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            )));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| QuantityError(format!("{text:?}: {number:?} is not a number")))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(QuantityError(format!("{text:?} is too large")));
    }
    Ok(bytes.round() as u64)
}

/// Parses a rate such as `"10MB/s"`, `"512KiB/s"` or `"1000000"` (bytes per second) with
/// the units of [`parse_byte_size`]; the `/s` is optional. Zero is refused: leave the rate
/// out for no limit.
pub fn parse_byte_rate(text: &str) -> Result<u64, QuantityError> {
    let trimmed = text.trim();
    let size = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("/S"))
        .unwrap_or(trimmed);
    let rate = parse_size_shown_as(size, text)?;
    if rate == 0 {
        return Err(QuantityError(format!(
            "{text:?}: a rate of zero would stop every transfer (leave it out for no limit)"
        )));
    }
    Ok(rate)
}

/// Writes `bytes` with the largest exact decimal or binary unit (`"10MB"`, `"4MiB"`,
/// `"1234B"`), so [`parse_byte_size`] reads it back to the same number.
pub fn format_byte_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 8] = [
        (1 << 40, "TiB"),
        (1_000_000_000_000, "TB"),
        (1 << 30, "GiB"),
        (1_000_000_000, "GB"),
        (1 << 20, "MiB"),
        (1_000_000, "MB"),
        (1 << 10, "KiB"),
        (1_000, "kB"),
    ];
    for (size, unit) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// [`format_byte_size`] of a rate, with `/s`.
pub fn format_byte_rate(bytes_per_second: u64) -> String {
    format!("{}/s", format_byte_size(bytes_per_second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_decimal_and_binary_units() {
        assert_eq!(parse_byte_size("5000"), Ok(5000));
        assert_eq!(parse_byte_size("10MB"), Ok(10_000_000));
        assert_eq!(
            parse_byte_size("10 mb"),
            Err(QuantityError(
                "\"10 mb\": units are bytes (B), not bits (b)".to_owned()
            ))
        );
        assert_eq!(parse_byte_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_byte_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_byte_size("64k"), Ok(64_000));
        assert_eq!(parse_byte_size("2KiB"), Ok(2048));
        assert_eq!(parse_byte_size("3TB"), Ok(3_000_000_000_000));
        assert!(parse_byte_size("MB").is_err());
        assert!(parse_byte_size("10 parsecs").is_err());
        assert!(parse_byte_size("1.2.3MB").is_err());
        assert!(parse_byte_size("99999999999TiB").is_err());
    }

    #[test]
    fn rates_take_an_optional_per_second_and_refuse_zero() {
        assert_eq!(parse_byte_rate("10MB/s"), Ok(10_000_000));
        assert_eq!(parse_byte_rate("1MiB/s"), Ok(1_048_576));
        assert_eq!(parse_byte_rate("1000000"), Ok(1_000_000));
        assert_eq!(parse_byte_rate(" 512 KiB/s "), Ok(524_288));
        assert!(parse_byte_rate("0/s").is_err());
        assert!(parse_byte_rate("fast").is_err());
    }

    #[test]
    fn formatting_reads_back() {
        for bytes in [
            0,
            1,
            999,
            1000,
            1024,
            10_000_000,
            1 << 20,
            3 << 30,
            1_234_567,
        ] {
            assert_eq!(parse_byte_size(&format_byte_size(bytes)), Ok(bytes));
        }
        assert_eq!(format_byte_size(10_000_000), "10MB");
        assert_eq!(format_byte_size(4 << 20), "4MiB");
        assert_eq!(format_byte_rate(1_000_000), "1MB/s");
    }

    #[test]
    fn allow_from_empty_allows_everyone() {
        let mut policy = UserPolicy::default();
        assert!(policy.allows_address("203.0.113.9".parse().unwrap()));
        policy.allow_from = vec!["192.0.2.0/24".parse().unwrap()];
        assert!(policy.allows_address("192.0.2.77".parse().unwrap()));
        assert!(policy.allows_address("::ffff:192.0.2.77".parse().unwrap()));
        assert!(!policy.allows_address("203.0.113.9".parse().unwrap()));
    }
}
