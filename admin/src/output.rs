//! Human output: UTC times, durations, byte counts, terminal-width-aware tables, and writing to stdout.
//!
//! Kept free of I/O (except `emit`) so the formatting can be unit-tested. No chrono or unicode-width:
//! the CLI needs one time format and an approximate width for CJK text, and both fit in a few lines.

use std::io::Write;

use exchange_wire::time::{CHINA_OFFSET_SECS, civil_from_days};

/// Formats milliseconds since the Unix epoch as UTC `YYYY-MM-DD HH:MM:SS.mmm`.
///
/// Times are always shown in UTC so that output from operators in different places (and the nodes'
/// logs) can be compared without converting.
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days(secs / 86_400);
    let sod = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms % 1000
    )
}

/// The calendar day in China Standard Time at `ms` since the Unix epoch, as days since 1970-01-01.
/// Deadlines (办理时限) are dates in China Standard Time, so "today" for them is this day.
pub fn china_day(ms: u64) -> i64 {
    ((ms / 1000 + CHINA_OFFSET_SECS) / 86_400) as i64
}

/// A `YYYY-MM-DD` date as days since 1970-01-01 (negative before), or `None` when it is not a real
/// calendar day. Howard Hinnant's `days_from_civil`, the inverse of
/// `exchange_wire::time::civil_from_days`.
pub fn date_days(date: &str) -> Option<i64> {
    let date = crate::parse::date(date).ok()?;
    let num = |r: std::ops::Range<usize>| date[r].parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Formats a duration given in milliseconds compactly, with at most two units: `850ms`, `42s`,
/// `5m03s`, `2h07m`, `3d04h`. Used for ages ("last seen 42s ago") and uptimes.
pub fn format_duration_ms(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0 => format!("{ms}ms"),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// How long ago `then_ms` was at `now_ms`. A time slightly in the future (the clocks of the node and
/// of this machine differ) counts as now.
pub fn format_age(now_ms: u64, then_ms: u64) -> String {
    format_duration_ms(now_ms.saturating_sub(then_ms))
}

/// Formats a byte count with binary units and one decimal: `0 B`, `1023 B`, `1.5 KiB`, `2.0 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Move up a unit when one decimal would round to 1024.0 (so 1048575 B is 1.0 MiB, not 1024.0 KiB).
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Labelled lines with the values aligned, for one record (a node's status, a verification result):
/// `label  value`, sanitized, each ending in a newline.
pub fn fields(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| display_width(k))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(k);
        out.extend(std::iter::repeat_n(' ', width - display_width(k) + 2));
        out.push_str(sanitize(v).trim_end());
        out.push('\n');
    }
    out
}

/// The line printed for an administrative action: the node's message and how many things it changed.
pub fn action_line(answer: &exchange_wire::api::AdminActionResponse) -> String {
    let message = sanitize(answer.message.trim());
    if message.is_empty() {
        format!("{} affected\n", answer.affected)
    } else {
        format!("{message} ({} affected)\n", answer.affected)
    }
}

/// The first characters of a message id: enough to tell messages apart in a table. Commands that
/// take an id accept the full one (see `--json` output).
pub fn short_id(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

/// Approximate terminal columns of a character: 2 for East Asian wide characters (Chinese titles are
/// the norm here), 0 for combining marks, 1 otherwise.
fn char_width(c: char) -> usize {
    let c = c as u32;
    const WIDE: &[(u32, u32)] = &[
        (0x1100, 0x115F),
        (0x2E80, 0x303E),
        (0x3041, 0x33FF),
        (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xA000, 0xA4CF),
        (0xAC00, 0xD7A3),
        (0xF900, 0xFAFF),
        (0xFE30, 0xFE4F),
        (0xFF00, 0xFF60),
        (0xFFE0, 0xFFE6),
        (0x1F300, 0x1F64F),
        (0x1F900, 0x1F9FF),
        (0x20000, 0x3FFFD),
    ];
    if (0x0300..=0x036F).contains(&c) || c == 0x200B {
        0
    } else if WIDE.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)) {
        2
    } else {
        1
    }
}

/// Terminal columns a string takes.
pub fn display_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Makes text from the network safe to print: metadata such as titles is written by other units, and a
/// hostile one could otherwise move the cursor, rewrite earlier lines or reverse text with control and
/// bidirectional-override characters.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            let bidi = matches!(c as u32, 0x202A..=0x202E | 0x2066..=0x2069 | 0x200E | 0x200F);
            if c.is_control() || bidi {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// Shortens `s` to at most `max` columns, marking the cut with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    if display_width(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = char_width(c);
        if w + cw + 1 > max {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push('…');
    out
}

/// A plain text table: a header row and left-aligned columns two spaces apart.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells are sanitized, missing cells are left empty.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row.iter().map(|c| sanitize(c)).collect());
    }

    /// Renders the table, one line per row, each ending in a newline, with no trailing spaces.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| display_width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().take(cols).enumerate() {
                widths[i] = widths[i].max(display_width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - display_width(cell)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Writes to stdout. A closed pipe (`exchange-admin inbox | head`) is not an error worth reporting.
pub fn emit(text: &str) -> anyhow::Result<()> {
    emit_more(text).map(|_| ())
}

/// Writes to stdout, for output produced piece by piece: returns `false` once stdout is closed
/// (`exchange-admin audit export | head`), so the caller can stop producing.
pub fn emit_more(text: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(true),
    }
}

/// Writes a value as pretty JSON on stdout, for `--json`.
pub fn emit_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    emit(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(format_ms(1_709_164_800_007), "2024-02-29 00:00:00.007");
        assert_eq!(format_ms(4_102_444_799_999), "2099-12-31 23:59:59.999");
        assert_eq!(format_ms(253_402_300_799_000), "9999-12-31 23:59:59.000");
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // Walks 1970..2100 day by day: dates must increase by exactly one calendar day.
        let mut prev = civil_from_days(0);
        assert_eq!(prev, (1970, 1, 1));
        for day in 1..47_482 {
            let cur = civil_from_days(day);
            let next_in_month = (prev.0, prev.1, prev.2 + 1);
            let next_month = if prev.1 == 12 {
                (prev.0 + 1, 1, 1)
            } else {
                (prev.0, prev.1 + 1, 1)
            };
            assert!(
                cur == next_in_month || cur == next_month,
                "{prev:?} -> {cur:?}"
            );
            prev = cur;
        }
        assert_eq!(prev, (2099, 12, 31));
    }

    #[test]
    fn dates_to_days_and_back() {
        assert_eq!(date_days("1970-01-01"), Some(0));
        assert_eq!(date_days("1969-12-31"), Some(-1));
        assert_eq!(date_days("2000-02-29"), Some(11_016));
        assert_eq!(date_days(" 2000-03-01 "), Some(11_017));
        for day in [0u64, 11_016, 19_999, 20_240, 47_481] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(
                date_days(&format!("{y:04}-{m:02}-{d:02}")),
                Some(day as i64)
            );
        }
        for bad in ["2025-02-29", "2025-13-01", "2025/06/01", "", "-"] {
            assert_eq!(date_days(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn china_days_start_at_utc_16_00() {
        // 2005-05-21 00:00 in China is 2005-05-20 16:00 UTC.
        let midnight_cst = 1_116_604_800_000;
        assert_eq!(china_day(midnight_cst), date_days("2005-05-21").unwrap());
        assert_eq!(
            china_day(midnight_cst - 1),
            date_days("2005-05-20").unwrap()
        );
        assert_eq!(china_day(0), 0);
        assert_eq!(china_day(16 * 3600 * 1000), 1);
    }

    #[test]
    fn widths_count_cjk_as_two_columns() {
        assert_eq!(display_width("abc"), 3);
        assert_eq!(display_width("通知"), 4);
        assert_eq!(display_width("关于2025年"), 10);
        assert_eq!(display_width("（一）"), 6);
    }

    #[test]
    fn truncates_by_columns() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdefghijk", 5), "abcd…");
        assert_eq!(truncate("关于做好防汛工作的通知", 9), "关于做好…");
        assert!(display_width(&truncate("关于做好防汛工作的通知", 10)) <= 10);
    }

    #[test]
    fn sanitizes_terminal_escapes() {
        assert_eq!(sanitize("ok\x1b[2Jtitle"), "ok\u{FFFD}[2Jtitle");
        assert_eq!(sanitize("a\u{202E}b\nc"), "a\u{FFFD}b\u{FFFD}c");
        assert_eq!(sanitize("关于通知"), "关于通知");
    }

    #[test]
    fn renders_aligned_tables() {
        let mut t = Table::new(&["SEQ", "TITLE", "STATE"]);
        t.push(vec!["1".into(), "关于通知".into(), "delivered".into()]);
        t.push(vec!["12".into(), "x".into(), "signed-for".into()]);
        t.push(vec!["3".into()]);
        let expected = "\
SEQ  TITLE     STATE
1    关于通知  delivered
12   x         signed-for
3
";
        assert_eq!(t.render(), expected);
    }

    #[test]
    fn table_cells_are_sanitized() {
        let mut t = Table::new(&["A"]);
        t.push(vec!["\x1b]0;pwned\x07".into()]);
        assert!(!t.render().contains('\x1b'));
    }

    #[test]
    fn durations_use_at_most_two_units() {
        assert_eq!(format_duration_ms(0), "0ms");
        assert_eq!(format_duration_ms(850), "850ms");
        assert_eq!(format_duration_ms(1_000), "1s");
        assert_eq!(format_duration_ms(59_999), "59s");
        assert_eq!(format_duration_ms(60_000), "1m00s");
        assert_eq!(format_duration_ms(303_000), "5m03s");
        assert_eq!(format_duration_ms(3_599_999), "59m59s");
        assert_eq!(format_duration_ms(3_600_000), "1h00m");
        assert_eq!(format_duration_ms(7_620_000), "2h07m");
        assert_eq!(format_duration_ms(86_400_000), "1d00h");
        assert_eq!(format_duration_ms(273_600_000), "3d04h");
        assert_eq!(format_duration_ms(400 * 86_400_000), "400d00h");
    }

    #[test]
    fn ages_tolerate_clock_skew() {
        assert_eq!(format_age(10_000, 7_500), "2s");
        assert_eq!(format_age(10_000, 10_250), "0ms");
    }

    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(1_048_575), "1.0 MiB");
        assert_eq!(format_bytes(5 * 1024 * 1024 + 300 * 1024), "5.3 MiB");
        assert_eq!(format_bytes(1 << 30), "1.0 GiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn fields_align_values() {
        let text = fields(&[
            ("node", "gz.yuexiu".into()),
            ("directory", "version 7".into()),
            ("x", "a\x1bb".into()),
        ]);
        assert_eq!(
            text,
            "node       gz.yuexiu\ndirectory  version 7\nx          a\u{FFFD}b\n"
        );
    }

    #[test]
    fn action_lines() {
        let answer = |message: &str| exchange_wire::api::AdminActionResponse {
            affected: 3,
            message: message.into(),
        };
        assert_eq!(
            action_line(&answer("3 dead letters queued")),
            "3 dead letters queued (3 affected)\n"
        );
        assert_eq!(action_line(&answer(" ")), "3 affected\n");
    }

    #[test]
    fn short_ids() {
        let id = "ab".repeat(32);
        assert_eq!(short_id(&id), "abababababab");
        assert_eq!(short_id("abc"), "abc");
    }
}
