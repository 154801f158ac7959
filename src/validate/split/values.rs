//! A record's key and version from the raw text of their members.

use super::*;

/// The primary key as a string, or why there is none.
pub(super) fn parse_key(raw: Option<&str>) -> Result<String, String> {
    let Some(text) = raw else {
        return Err("is absent".to_owned());
    };
    match JsonKind::of(text) {
        JsonKind::String => {
            let key: String = serde_json::from_str(text).map_err(|e| e.to_string())?;
            if key.is_empty() {
                Err("is an empty string".to_owned())
            } else {
                Ok(key)
            }
        }
        JsonKind::Number => {
            let n: serde_json::Number = serde_json::from_str(text).map_err(|e| e.to_string())?;
            if n.is_i64() || n.is_u64() {
                Ok(n.to_string())
            } else {
                Err(format!(
                    "is the non-integer number {text}; expected a string or an integer"
                ))
            }
        }
        JsonKind::Null => Err("is null".to_owned()),
        kind => Err(format!("is {kind}; expected a string or an integer")),
    }
}

/// A version from its raw JSON: an integer as is, or an RFC 3339 timestamp string (any offset,
/// any fraction) as microseconds since the Unix epoch, UTC; sub-microsecond digits are floored
/// so that the order of instants is kept. Both fit i64 (RFC 3339 years 0000–9999 are about
/// ±2.5·10^17 µs). A stream uses one form for all its records: comparing a sequence number with
/// a timestamp is meaningless, and nothing here can tell them apart once converted.
///
/// # Errors
///
/// The reason, for a `bad_version` error: null, a non-integer number, an integer beyond i64,
/// a string that is not RFC 3339, or another JSON type.
pub fn parse_version(raw: &str) -> Result<i64, String> {
    match JsonKind::of(raw) {
        JsonKind::Number => {
            let n: serde_json::Number = serde_json::from_str(raw).map_err(|e| e.to_string())?;
            n.as_i64().ok_or_else(|| {
                if n.is_u64() {
                    format!("{raw} is beyond the range of a 64-bit signed integer")
                } else {
                    format!("{raw} is not an integer")
                }
            })
        }
        JsonKind::String => {
            let s: Cow<'_, str> = serde_json::from_str(raw).map_err(|e| e.to_string())?;
            rfc3339_micros(&s).ok_or_else(|| format!("{raw} is not an RFC 3339 timestamp"))
        }
        JsonKind::Null => Err("is null".to_owned()),
        kind => Err(format!(
            "is {kind}; expected an integer or an RFC 3339 timestamp"
        )),
    }
}

/// A version in a configured time format (`version_format`), as microseconds since the Unix
/// epoch (floored), so versions of one stream compare as instants whatever the format.
///
/// # Errors
///
/// The reason, for a `bad_version` error.
pub fn parse_version_as(raw: &str, format: &TimeFormat) -> Result<i64, String> {
    let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    if v.is_null() {
        return Err("is null".to_owned());
    }
    format
        .parse_json(&v)
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000)).ok())
        .ok_or_else(|| format!("{raw} is not a timestamp in the format `{}`", format.name()))
}

/// Microseconds since the Unix epoch of an RFC 3339 timestamp (floored).
pub(super) fn rfc3339_micros(s: &str) -> Option<i64> {
    i64::try_from(rfc3339_nanos(s)?.div_euclid(1_000)).ok()
}

/// Nanoseconds since the Unix epoch of an RFC 3339 timestamp. The date and time are separated
/// by `T`, `t` or a space (RFC 3339 allows the space; the `time` crate alone takes any byte).
pub(crate) fn rfc3339_nanos(s: &str) -> Option<i128> {
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    Some(
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()?
            .unix_timestamp_nanos(),
    )
}
