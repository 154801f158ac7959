//! Time as the simulator writes and reads it: unix milliseconds inside, RFC 3339 UTC with
//! exactly three fraction digits outside (`2024-01-01T00:00:00.000Z`), so that string order
//! equals time order.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// 2024-01-01T00:00:00Z: the initial data set is timestamped from here, not from the wall
/// clock, so a seed always gives the same bytes.
pub const BASE_MS: i64 = 1_704_067_200_000;

/// Time since the unix epoch, from the wall clock.
pub fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
}

/// Unix milliseconds, from the wall clock.
pub fn now_ms() -> i64 {
    i64::try_from(now().as_millis()).expect("unix millis fit i64")
}

/// Formats unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("simulator times lie within year 9999");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// Parses an RFC 3339 time (any offset) into unix nanoseconds. A space where the offset's
/// `+` belongs is read as `+`: that is what an unencoded `+` in a query string becomes.
///
/// # Errors
///
/// A message naming the expected format.
pub fn parse_rfc3339_ns(text: &str) -> Result<i128, String> {
    let fixed = text.replace(' ', "+");
    OffsetDateTime::parse(&fixed, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp_nanos)
        .map_err(|_| format!("'{text}' is not an RFC 3339 time such as 2024-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis() {
        assert_eq!(format_ms(BASE_MS), "2024-01-01T00:00:00.000Z");
        assert_eq!(
            format_ms(BASE_MS + 86_400_000 + 1_234),
            "2024-01-02T00:00:01.234Z"
        );
    }

    #[test]
    fn parses_offsets_and_plus_as_space() {
        assert_eq!(
            parse_rfc3339_ns("2024-01-01T00:00:00Z").unwrap(),
            i128::from(BASE_MS) * 1_000_000
        );
        assert_eq!(
            parse_rfc3339_ns("2024-01-01T01:00:00 01:00").unwrap(),
            i128::from(BASE_MS) * 1_000_000
        );
        assert_eq!(
            parse_rfc3339_ns("2024-01-01T00:00:00.000000001Z").unwrap(),
            i128::from(BASE_MS) * 1_000_000 + 1
        );
        assert!(parse_rfc3339_ns("yesterday").is_err());
    }
}
