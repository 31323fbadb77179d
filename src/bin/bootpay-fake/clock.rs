//! Wall-clock helpers. Bootpay writes v2 timestamps as RFC 3339 in Korea Standard Time
//! (`2024-05-01T10:00:30+09:00`) and v1 timestamps as the same local time without a zone
//! (`2024-05-01 10:00:30`); KST has had no daylight saving since 1988.

use std::time::{SystemTime, UNIX_EPOCH};

const KST_OFFSET_SECS: i64 = 9 * 3600;

/// Seconds since the Unix epoch; 0 for a clock set before 1970.
pub fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Formats `now` as RFC 3339 in KST, to whole seconds.
pub fn kst_rfc3339(now: SystemTime) -> String {
    format!("{}+09:00", kst_local(epoch_secs(now), 'T'))
}

/// Formats `now` as v1 does: `YYYY-MM-DD HH:MM:SS` in KST.
pub fn kst_v1(now: SystemTime) -> String {
    kst_local(epoch_secs(now), ' ')
}

/// Rewrites an RFC 3339 timestamp (any offset, fractions ignored) in v1's form, in KST;
/// `None` when `text` is not one.
pub fn v1_from_rfc3339(text: &str) -> Option<String> {
    parse_rfc3339(text).map(|secs| kst_local(secs, ' '))
}

fn epoch_secs(now: SystemTime) -> i64 {
    i64::try_from(unix_secs(now)).unwrap_or(i64::MAX - KST_OFFSET_SECS)
}

/// The KST wall time of `secs` since the epoch, date and time joined by `separator`.
fn kst_local(secs: i64, separator: char) -> String {
    let local = secs.saturating_add(KST_OFFSET_SECS);
    let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}{separator}{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators
        .iter()
        .any(|&(at, byte)| bytes.get(at) != Some(&byte))
        || !matches!(bytes.get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    let field = |from: usize, to: usize| digits(text.get(from..to));
    let (year, month, day) = (field(0, 4)?, field(5, 7)?, field(8, 10)?);
    let (hour, minute, second) = (field(11, 13)?, field(14, 16)?, field(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = text.get(19..)?;
    if let Some(fraction) = rest.strip_prefix('.') {
        let count = fraction.bytes().take_while(u8::is_ascii_digit).count();
        rest = fraction.get(count..)?;
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let offset = digits(rest.get(1..3))? * 3600 + digits(rest.get(4..6))? * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    // A leap second reads as the last second of its minute.
    let time = hour * 3600 + minute * 60 + second.min(59);
    Some(days_from_civil(year, month, day) * 86_400 + time - offset)
}

/// The value of an all-digit string.
fn digits(text: Option<&str>) -> Option<i64> {
    let text = text.filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))?;
    text.parse().ok()
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day count since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        kst_rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn formats_in_korea_standard_time() {
        assert_eq!(at(0), "1970-01-01T09:00:00+09:00");
        assert_eq!(at(1_714_525_230), "2024-05-01T10:00:30+09:00");
        // 2024-02-29T23:59:59Z, a leap day that rolls over in KST.
        assert_eq!(at(1_709_251_199), "2024-03-01T08:59:59+09:00");
        // 1999-12-31T15:00:00Z is midnight of the new millennium in Seoul.
        assert_eq!(at(946_652_400), "2000-01-01T00:00:00+09:00");
        assert_eq!(
            kst_v1(UNIX_EPOCH + Duration::from_secs(1_714_525_230)),
            "2024-05-01 10:00:30"
        );
    }

    #[test]
    fn rewrites_rfc3339_for_v1() {
        let v1 = |text| v1_from_rfc3339(text);
        assert_eq!(
            v1("2024-05-01T10:00:30+09:00").as_deref(),
            Some("2024-05-01 10:00:30")
        );
        assert_eq!(
            v1("2024-02-29T23:59:59Z").as_deref(),
            Some("2024-03-01 08:59:59")
        );
        assert_eq!(
            v1("2024-05-01T10:00:30.123-01:30").as_deref(),
            Some("2024-05-01 20:30:30")
        );
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T10:00:30",
            "yesterday",
            "2024-13-01T00:00:00Z",
        ] {
            assert_eq!(v1(bad), None, "{bad:?}");
        }
        for secs in [0, 951_782_400, 1_709_251_199, 4_102_444_800] {
            let text = at(secs);
            assert_eq!(parse_rfc3339(&text), Some(secs as i64), "{text}");
        }
    }
}
