//! Calendar dates from wire times (milliseconds since the Unix epoch), without a date library.
//!
//! Document deadlines (办理时限) and dates (成文日期) are calendar dates in China Standard Time
//! (UTC+8, no daylight saving), written `YYYY-MM-DD`.

/// Milliseconds since the Unix epoch, the one time unit on the wire.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// China Standard Time's offset from UTC, in seconds.
pub const CHINA_OFFSET_SECS: u64 = 8 * 3600;

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm,
/// for non-negative days: wire times are unsigned).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC at `ms`.
pub fn format_utc_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days(secs / 86_400);
    let t = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

/// The calendar date (`YYYY-MM-DD`) in China Standard Time at `ms`.
pub fn china_date(ms: u64) -> String {
    let (y, m, d) = civil_from_days((ms / 1000 + CHINA_OFFSET_SECS) / 86_400);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn china_dates() {
        assert_eq!(china_date(0), "1970-01-01");
        // 2005-05-20 16:00 UTC is already 2005-05-21 in Guangzhou.
        assert_eq!(china_date(1_116_604_800_000), "2005-05-21");
        assert_eq!(china_date(1_116_604_800_000 - 1), "2005-05-20");
        assert_eq!(china_date(951_782_400_000), "2000-02-29");
    }
}
