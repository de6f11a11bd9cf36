//! UTC calendar arithmetic for MDTM, MFMT and listings, without a date library: the
//! protocol needs only "YYYYMMDDHHMMSS" (RFC 3659 §2.3) and the `ls -l` date column.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    /// Year, e.g. 2026.
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=59.
    pub second: u32,
}

/// Seconds since the epoch, negative before 1970.
fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs() as i64,
        // Floor towards the past: 0.5 s before the epoch is second -1.
        Err(before) => {
            let before = before.duration();
            -(before.as_secs() as i64) - i64::from(before.subsec_nanos() > 0)
        }
    }
}

impl CivilTime {
    /// Breaks a time down (days-from-civil inverse, H. Hinnant's algorithm).
    pub fn from_system_time(time: SystemTime) -> Self {
        let seconds = unix_seconds(time);
        let days = seconds.div_euclid(86_400);
        let of_day = seconds.rem_euclid(86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let shifted_month = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
        let month = if shifted_month < 10 {
            shifted_month + 3
        } else {
            shifted_month - 9
        } as u32;
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
        }
    }

    /// The instant this civil time names, or `None` when a field is out of range.
    pub fn to_system_time(self) -> Option<SystemTime> {
        if !(1..=12).contains(&self.month)
            || !(1..=31).contains(&self.day)
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
        {
            return None;
        }
        let year = self.year - i64::from(self.month <= 2);
        let era = year.div_euclid(400);
        let year_of_era = year.rem_euclid(400);
        let month = i64::from(self.month);
        let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5
            + i64::from(self.day)
            - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        let days = era * 146_097 + day_of_era - 719_468;
        let seconds = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        if seconds >= 0 {
            UNIX_EPOCH.checked_add(Duration::from_secs(seconds as u64))
        } else {
            UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs()))
        }
    }
}

/// RFC 3659 §2.3 time-val, `YYYYMMDDHHMMSS`, UTC.
pub fn format_time_val(time: SystemTime) -> String {
    let mut text = Vec::with_capacity(14);
    write_time_val(time, &mut text);
    String::from_utf8(text).expect("digits only")
}

/// Appends the time-val of `time` (`YYYYMMDDHHMMSS`) to `out`, for listings that format
/// thousands of entries into one buffer.
pub fn write_time_val(time: SystemTime, out: &mut Vec<u8>) {
    let t = CivilTime::from_system_time(time);
    // Years outside 0..=9999 cannot be written in four digits; they print as 0000/9999
    // rather than breaking the fixed-width format clients parse.
    let year = t.year.clamp(0, 9999) as u32;
    push_digits(out, year, 4);
    for part in [t.month, t.day, t.hour, t.minute, t.second] {
        push_digits(out, part, 2);
    }
}

/// Appends the last `width` decimal digits of `value`, zero-padded (no formatter machinery:
/// MLSD formats one time-val per entry).
fn push_digits(out: &mut Vec<u8>, value: u32, width: u32) {
    for position in (0..width).rev() {
        out.push(b'0' + (value / 10u32.pow(position) % 10) as u8);
    }
}

/// Parses an RFC 3659 time-val; fractional seconds (`.sss`) are accepted and ignored.
pub fn parse_time_val(text: &str) -> Option<SystemTime> {
    let whole = text.split_once('.').map_or(text, |(whole, _)| whole);
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| whole[range].parse::<u32>().ok();
    CivilTime {
        year: i64::from(number(0..4)?),
        month: number(4..6)?,
        day: number(6..8)?,
        hour: number(8..10)?,
        minute: number(10..12)?,
        second: number(12..14)?,
    }
    .to_system_time()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        let time = UNIX_EPOCH + Duration::from_secs(1_764_084_918); // 2025-11-25 15:35:18
        assert_eq!(format_time_val(time), "20251125153518");
        assert_eq!(parse_time_val("20251125153518"), Some(time));
        assert_eq!(format_time_val(UNIX_EPOCH), "19700101000000");
        assert_eq!(
            parse_time_val("20240229120000.123"),
            parse_time_val("20240229120000")
        );
    }

    #[test]
    fn invalid_values_are_refused() {
        for text in [
            "2024022912000",
            "20241301000000",
            "2024x229120000",
            "20240230250000",
        ] {
            assert_eq!(parse_time_val(text), None, "{text}");
        }
    }

    #[test]
    fn round_trip_over_many_days() {
        for day in (-800_000i64..800_000).step_by(9_973) {
            let seconds = day * 86_400 + 12_345;
            let time = if seconds >= 0 {
                UNIX_EPOCH + Duration::from_secs(seconds as u64)
            } else {
                UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
            };
            assert_eq!(
                CivilTime::from_system_time(time).to_system_time(),
                Some(time)
            );
        }
    }
}
