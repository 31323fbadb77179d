//! Bootpay's timestamps: v2 writes RFC 3339 with the Korean offset
//! (`2026-12-09T10:00:00+09:00`); v1 writes Korean local time without a zone
//! (`2026-12-09 10:00:00`). Both become a `SystemTime`; anything else is no time at all
//! (a due date Bootpay did not give), never an error.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Korea Standard Time, UTC+9, with no daylight saving: what v1's zoneless times mean.
const KST: &str = "+09:00";

pub fn parse(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    // Long enough for any timestamp; a longer answer is not one.
    if text.len() > 40 {
        return None;
    }
    let parsed = OffsetDateTime::parse(text, &Rfc3339).or_else(|_| {
        let local = text.replacen(' ', "T", 1);
        OffsetDateTime::parse(&format!("{local}{KST}"), &Rfc3339)
    });
    parsed.ok().map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn both_dialects_times_are_read_and_anything_else_is_none() {
        // 2024-05-01T01:00:30Z
        let expected = UNIX_EPOCH + Duration::from_secs(1_714_525_230);
        assert_eq!(parse("2024-05-01T10:00:30+09:00"), Some(expected));
        assert_eq!(parse("2024-05-01T01:00:30Z"), Some(expected));
        assert_eq!(parse("2024-05-01 10:00:30"), Some(expected));
        for odd in [
            "",
            "tomorrow",
            "2024-13-01 10:00:30",
            "2024-05-01",
            &"9".repeat(100),
        ] {
            assert_eq!(parse(odd), None, "{odd}");
        }
    }
}
