//! Wall-clock helpers. Bootpay writes timestamps as RFC 3339 in Korea Standard Time
//! (`2024-05-01T10:00:30+09:00`), which has had no daylight saving since 1988.

use std::time::{SystemTime, UNIX_EPOCH};

const KST_OFFSET_SECS: i64 = 9 * 3600;

/// Seconds since the Unix epoch; 0 for a clock set before 1970.
pub fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Formats `now` as RFC 3339 in KST, to whole seconds.
pub fn kst_rfc3339(now: SystemTime) -> String {
    let local =
        i64::try_from(unix_secs(now)).unwrap_or(i64::MAX - KST_OFFSET_SECS) + KST_OFFSET_SECS;
    let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+09:00",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
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
    }
}
