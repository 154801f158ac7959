//! Time formats of incremental filters, incremental fields and versions: `rfc3339`,
//! `epoch_s`, `epoch_ms`, or a pattern (strftime when it holds a `%`, such as
//! `%Y-%m-%dT%H:%M:%S.000%z`; otherwise the `time` crate's format description, such as
//! `[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory][offset_minute]`).
//!
//! The one place that turns an instant into what an API expects and a record's timestamp
//! (a JSON string or number) into an instant. Intake itself keeps instants as RFC 3339 (cursor
//! records) or microseconds since the Unix epoch (versions).

use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use time::format_description::OwnedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// A time format (see the module docs).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum TimeFormat {
    /// RFC 3339 (`2026-01-01T00:00:00Z`), the default.
    #[default]
    Rfc3339,
    /// Whole seconds since the Unix epoch (`1767225600`).
    EpochS,
    /// Milliseconds since the Unix epoch (`1767225600000`).
    EpochMs,
    /// A pattern: the text as configured and its parsed form.
    Pattern(String, OwnedFormatItem),
}

impl fmt::Debug for TimeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TimeFormat {
    /// Parses a configured format.
    ///
    /// # Errors
    /// The reason a pattern is not one.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "rfc3339" => Self::Rfc3339,
            "epoch_s" => Self::EpochS,
            "epoch_ms" => Self::EpochMs,
            "" => return Err("empty; expected rfc3339, epoch_s, epoch_ms or a pattern".into()),
            p if p.contains('%') => Self::Pattern(
                p.to_owned(),
                time::format_description::parse_strftime_owned(p)
                    .map_err(|e| format!("`{p}` is not a strftime pattern: {e}"))?,
            ),
            p if p.contains('[') => Self::Pattern(
                p.to_owned(),
                time::format_description::parse_owned::<2>(p)
                    .map_err(|e| format!("`{p}` is not a format description: {e}"))?,
            ),
            p => {
                return Err(format!(
                    "`{p}` is not rfc3339, epoch_s, epoch_ms, a strftime pattern (with `%`) or a format description (with `[`)"
                ));
            }
        })
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        match self {
            Self::Rfc3339 => "rfc3339",
            Self::EpochS => "epoch_s",
            Self::EpochMs => "epoch_ms",
            Self::Pattern(p, _) => p,
        }
    }

    /// An instant as the API expects it (UTC).
    pub fn format(&self, t: OffsetDateTime) -> String {
        let t = t.to_offset(UtcOffset::UTC);
        match self {
            Self::Rfc3339 => t.format(&Rfc3339).unwrap_or_default(),
            Self::EpochS => t.unix_timestamp().to_string(),
            Self::EpochMs => (t.unix_timestamp_nanos() / 1_000_000).to_string(),
            Self::Pattern(_, f) => t.format(f).unwrap_or_default(),
        }
    }

    /// A timestamp as text in this format (an epoch may also be fractional).
    pub fn parse_str(&self, s: &str) -> Option<OffsetDateTime> {
        let s = s.trim();
        match self {
            Self::Rfc3339 => {
                // RFC 3339 separates date and time by `T`, `t` or a space; `time` takes any byte.
                if !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
                    return None;
                }
                OffsetDateTime::parse(s, &Rfc3339).ok()
            }
            Self::EpochS | Self::EpochMs => {
                let per_s: i128 = if *self == Self::EpochS { 1 } else { 1_000 };
                let nanos = match s.parse::<i64>() {
                    Ok(n) => i128::from(n) * 1_000_000_000 / per_s,
                    Err(_) => {
                        let f = s.parse::<f64>().ok().filter(|f| f.is_finite())?;
                        (f * 1.0e9 / per_s as f64) as i128
                    }
                };
                OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
            }
            Self::Pattern(_, f) => OffsetDateTime::parse(s, f)
                .ok()
                .or_else(|| PrimitiveDateTime::parse(s, f).ok().map(|t| t.assume_utc())),
        }
    }

    /// A record's timestamp: a JSON string in this format, or for the epoch formats a number.
    pub fn parse_json(&self, v: &Value) -> Option<OffsetDateTime> {
        match (self, v) {
            (_, Value::String(s)) => self.parse_str(s),
            (Self::EpochS | Self::EpochMs, Value::Number(n)) => self.parse_str(&n.to_string()),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for TimeFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An instant as RFC 3339 (UTC), the form cursor records keep.
pub fn rfc3339(t: OffsetDateTime) -> String {
    TimeFormat::Rfc3339.format(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &Rfc3339).unwrap()
    }

    #[test]
    fn formats_and_parses_each_kind() {
        let t = at("2026-01-02T03:04:05.678Z");
        let cases = [
            ("rfc3339", "2026-01-02T03:04:05.678Z"),
            ("epoch_s", "1767323045"),
            ("epoch_ms", "1767323045678"),
            ("%Y-%m-%dT%H:%M:%S.000%z", "2026-01-02T03:04:05.000+0000"),
            (
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory][offset_minute]",
                "2026-01-02T03:04:05.678+0000",
            ),
            ("%Y-%m-%d %H:%M:%S", "2026-01-02 03:04:05"),
        ];
        for (name, text) in cases {
            let f = TimeFormat::parse(name).unwrap();
            assert_eq!(f.name(), name);
            assert_eq!(f.format(t), text, "{name}");
            let back = f
                .parse_str(text)
                .unwrap_or_else(|| panic!("{name}: {text}"));
            let whole = at("2026-01-02T03:04:05Z");
            assert!(back == t || back == whole, "{name}: {back}");
        }
    }

    #[test]
    fn epochs_from_numbers_strings_and_fractions() {
        let s = TimeFormat::EpochS;
        assert_eq!(
            s.parse_json(&serde_json::json!(1_767_323_045)),
            Some(at("2026-01-02T03:04:05Z"))
        );
        assert_eq!(
            s.parse_json(&serde_json::json!("1767323045.5")),
            Some(at("2026-01-02T03:04:05.5Z"))
        );
        let ms = TimeFormat::EpochMs;
        assert_eq!(
            ms.parse_json(&serde_json::json!(1_767_323_045_678_i64)),
            Some(at("2026-01-02T03:04:05.678Z"))
        );
        // RFC 3339 takes no numbers, epochs no booleans, and garbage is not a time.
        assert_eq!(TimeFormat::Rfc3339.parse_json(&serde_json::json!(5)), None);
        assert_eq!(s.parse_json(&serde_json::json!(true)), None);
        assert_eq!(s.parse_str("soon"), None);
        assert_eq!(TimeFormat::Rfc3339.parse_str("2026-01-02X03:04:05Z"), None);
    }

    #[test]
    fn bad_formats_are_refused_with_the_reason() {
        assert!(
            TimeFormat::parse("epoch")
                .unwrap_err()
                .contains("not rfc3339")
        );
        assert!(TimeFormat::parse("%Q").unwrap_err().contains("strftime"));
        assert!(
            TimeFormat::parse("[yeer]")
                .unwrap_err()
                .contains("format description")
        );
        assert!(TimeFormat::parse("").is_err());
    }
}
