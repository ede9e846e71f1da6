//! Exact, integer-only time formatting for the manifests: ISO 8601 wall-clock
//! stamps, `xs:duration` values and HLS `EXTINF` decimals.
//!
//! Everything here works on integers (u128 where a product could overflow)
//! so that a long-running stream never accumulates floating-point drift and
//! the same record always prints the same text.

use std::fmt::Write;

/// Microseconds of a 90 kHz duration, correctly rounded (half up). 1/90000 s
/// has no finite decimal expansion, so six decimals is the precision every
/// printed media time uses; a 90 kHz tick is ~11.1 us, so the rounding never
/// merges two distinct frame boundaries.
pub(crate) fn ticks_to_micros(ticks: u64) -> u128 {
    // ticks * 1e6 / 90000 = ticks * 100 / 9, rounded: (2 * ticks * 100 + 9) / 18.
    (u128::from(ticks) * 200 + 9) / 18
}

/// Unix milliseconds as ISO 8601 UTC with milliseconds,
/// e.g. `2026-11-25T12:00:00.000Z`. No calendar dependency: the date comes
/// from Howard Hinnant's `civil_from_days` (proleptic Gregorian), which is
/// exact for every u64 input. Times past 9999-12-31T23:59:59.999Z (only
/// garbage input gets there) are clamped to it: a five-digit year is not
/// ISO 8601 without prior agreement, and parsers reject the whole playlist.
pub fn iso8601_ms(unix_ms: u64) -> String {
    let mut s = String::with_capacity(24);
    write_iso8601_ms(&mut s, unix_ms);
    s
}

/// [`iso8601_ms`] into an existing buffer.
pub(crate) fn write_iso8601_ms(out: &mut String, unix_ms: u64) {
    let unix_ms = unix_ms.min(MAX_ISO8601_MS);
    let millis = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(secs / 86_400);
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
}

/// 9999-12-31T23:59:59.999Z, the last instant with a four-digit year.
const MAX_ISO8601_MS: u64 = 253_402_300_799_999;

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a
    // 400-year era; all values stay non-negative because `days` is unsigned.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // March-based month, [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `xs:duration` of a microsecond count, seconds only (`PT2.002S`, `PT6S`,
/// `PT0S`): valid per XML Schema and parsed by every DASH player, and it
/// avoids hour/minute carries that would make equal durations print
/// differently.
pub(crate) fn write_xs_duration_micros(out: &mut String, micros: u128) {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let _ = write!(out, "PT{secs}");
    if frac != 0 {
        let mut digits = format!("{frac:06}");
        while digits.ends_with('0') {
            digits.pop();
        }
        let _ = write!(out, ".{digits}");
    }
    out.push('S');
}

/// `xs:duration` of a 90 kHz duration.
pub(crate) fn write_xs_duration_ticks(out: &mut String, ticks: u64) {
    write_xs_duration_micros(out, ticks_to_micros(ticks));
}

/// `xs:duration` of a millisecond duration (exact).
pub(crate) fn write_xs_duration_ms(out: &mut String, ms: u64) {
    write_xs_duration_micros(out, u128::from(ms) * 1000);
}

/// An `EXTINF` duration: seconds with exactly six decimals, correctly
/// rounded from the 90 kHz value (`180180` -> `2.002000`).
pub(crate) fn write_extinf_seconds(out: &mut String, ticks: u64) {
    let micros = ticks_to_micros(ticks);
    let _ = write!(out, "{}.{:06}", micros / 1_000_000, micros % 1_000_000);
}

/// What a player gets when it rounds the printed `EXTINF` to the nearest
/// integer (half up). Computed from the printed microseconds, not the exact
/// ticks, so the target-duration rule holds for the text players read.
#[cfg(test)]
pub(crate) fn extinf_rounded_secs(ticks: u64) -> u64 {
    let rounded = (ticks_to_micros(ticks) + 500_000) / 1_000_000;
    u64::try_from(rounded).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xs_ticks(t: u64) -> String {
        let mut s = String::new();
        write_xs_duration_ticks(&mut s, t);
        s
    }

    fn xs_ms(ms: u64) -> String {
        let mut s = String::new();
        write_xs_duration_ms(&mut s, ms);
        s
    }

    fn extinf(t: u64) -> String {
        let mut s = String::new();
        write_extinf_seconds(&mut s, t);
        s
    }

    #[test]
    fn iso8601_known_dates() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(1), "1970-01-01T00:00:00.001Z");
        // 2000-03-01 (day after a 400-year leap day).
        assert_eq!(iso8601_ms(951_868_800_000), "2000-03-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        // Leap day 2024 and the instant before/after midnight around it.
        assert_eq!(iso8601_ms(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_709_164_799_999), "2024-02-28T23:59:59.999Z");
        assert_eq!(iso8601_ms(1_709_251_200_000), "2024-03-01T00:00:00.000Z");
        // 2100 is not a leap year: Feb 28 is followed by Mar 1.
        assert_eq!(iso8601_ms(4_107_542_399_000), "2100-02-28T23:59:59.000Z");
        assert_eq!(iso8601_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_795_608_000_123), "2026-11-25T12:00:00.123Z");
        assert_eq!(iso8601_ms(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
        assert_eq!(iso8601_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        // Extreme input: clamped, no panic.
        assert_eq!(iso8601_ms(253_402_300_800_000), "9999-12-31T23:59:59.999Z");
        assert_eq!(iso8601_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn iso8601_matches_day_by_day_walk() {
        // Walk day by day from 1970 through 2400 with a naive calendar and
        // compare every date: covers every month length and leap rule.
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for day in 0..(431 * 366) {
            assert_eq!(civil_from_days(day), (y, m, d), "day {day}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn xs_duration_formatting() {
        assert_eq!(xs_ticks(0), "PT0S");
        assert_eq!(xs_ticks(180_180), "PT2.002S");
        assert_eq!(xs_ticks(540_000), "PT6S");
        assert_eq!(xs_ticks(1), "PT0.000011S");
        assert_eq!(xs_ticks(45_000), "PT0.5S");
        assert_eq!(xs_ticks(90_000 * 3600 + 9), "PT3600.0001S");
        // 89999.99999 ticks away from a whole second rounds up to it.
        assert_eq!(xs_ticks(89_999), "PT0.999989S");
        assert_eq!(xs_ms(2000), "PT2S");
        assert_eq!(xs_ms(6006), "PT6.006S");
        assert_eq!(xs_ms(0), "PT0S");
        assert_eq!(xs_ms(1), "PT0.001S");
        // No overflow at the extremes.
        assert!(xs_ticks(u64::MAX).starts_with("PT"));
        assert!(xs_ms(u64::MAX).ends_with('S'));
    }

    #[test]
    fn extinf_exact_decimals() {
        // 29.97 fps: 60 frames of 3003 ticks.
        assert_eq!(extinf(180_180), "2.002000");
        assert_eq!(extinf(3003), "0.033367"); // 0.0333666.. rounds up
        assert_eq!(extinf(90_000), "1.000000");
        assert_eq!(extinf(0), "0.000000");
        assert_eq!(extinf(1), "0.000011");
        assert_eq!(extinf(1501), "0.016678"); // 0.0166777.. rounds up
                                              // 25 fps, 50 frames; 59.94 fps, 120 frames of 1501.5 -> 180180.
        assert_eq!(extinf(50 * 3600), "2.000000");
        // Long streams stay exact: a day of 29.97 fps segments summed.
        assert_eq!(extinf(180_180 * 43_157), "86400.314000");
    }

    #[test]
    fn extinf_rounding_is_half_up_on_printed_value() {
        assert_eq!(extinf_rounded_secs(0), 0);
        assert_eq!(extinf_rounded_secs(44_999), 0); // 0.499989
        assert_eq!(extinf_rounded_secs(45_000), 1); // 0.500000
        assert_eq!(extinf_rounded_secs(180_180), 2);
        assert_eq!(extinf_rounded_secs(225_000), 3); // 2.5 rounds up
        assert_eq!(extinf_rounded_secs(224_999), 2);
        assert_eq!(extinf_rounded_secs(u64::MAX), 204_963_823_041_217);
    }
}
