//! Text → logical-type values: ISO 8601 dates, times of day and decimal numbers (RFC 3339
//! timestamps are read by [`crate::validate::split::rfc3339_nanos`]). Shared by the tree walk and
//! the one-pass path, so both read a string the same way.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Number, Value as Json};
use time::{Date, Month};

/// The Julian day of 1970-01-01.
const EPOCH_JULIAN_DAY: i32 = 2_440_588;

/// Days since 1970-01-01 of a calendar date written `YYYY-MM-DD` (exactly that form: four-digit
/// year, two-digit month and day, no time, no offset).
pub(crate) fn date_days(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = Month::try_from(u8::try_from(digits(&b[5..7])?).ok()?).ok()?;
    let day = u8::try_from(digits(&b[8..10])?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(year).ok()?, month, day).ok()?;
    Some(date.to_julian_day() - EPOCH_JULIAN_DAY)
}

/// Nanoseconds since midnight of a time of day written `HH:MM:SS` with an optional fraction of
/// one to nine digits (`13:45:01.250`); no offset (Avro times belong to no time zone).
pub(crate) fn time_of_day_nanos(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (hour, minute, second) = (digits(&b[0..2])?, digits(&b[3..5])?, digits(&b[6..8])?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let nanos = match &b[8..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            digits(fraction)? * 10_i64.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    Some(((hour * 60 + minute) * 60 + second) * 1_000_000_000 + nanos)
}

/// The value of a run of ASCII digits (at most 18, so it fits).
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 18 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

/// A `decimal` logical type: the unscaled value is a two's-complement big-endian integer, in
/// `bytes` (minimal length) or in a `fixed` of `size` bytes (sign-extended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecimalType {
    pub(crate) precision: usize,
    pub(crate) scale: usize,
    /// `Some(size)` for a `fixed`, `None` for `bytes`.
    pub(crate) size: Option<usize>,
}

impl DecimalType {
    /// The Avro bytes of a decimal number written as text: a JSON number's own text, or a
    /// string of the same form (a leading `+` is also taken). Exact: the digits are used as
    /// written, never through a float. Fraction digits beyond the scale are an error unless
    /// they are zeros; so is an unscaled value of more digits than the precision.
    ///
    /// # Errors
    ///
    /// Why the text is not a decimal of this type, for a `type_mismatch` detail.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u8>, String> {
        let (negative, mut digits, scale) =
            parse_decimal(text).ok_or_else(|| "not a decimal number".to_owned())?;
        // Written scale → the schema's: drop trailing fraction zeros, or append zeros.
        let wanted = self.scale as i128;
        if scale > wanted {
            let excess = usize::try_from(scale - wanted).unwrap_or(usize::MAX);
            let zeros = digits.iter().rev().take_while(|&&d| d == 0).count();
            if excess > zeros {
                return Err(format!(
                    "more fraction digits than the scale {} allows",
                    self.scale
                ));
            }
            digits.truncate(digits.len() - excess);
        }
        let leading = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..leading);
        if !digits.is_empty() && scale < wanted {
            let append = wanted - scale;
            if digits.len() as i128 + append > self.precision as i128 {
                return Err(self.too_many_digits());
            }
            digits.resize(digits.len() + append as usize, 0);
        }
        if digits.len() > self.precision {
            return Err(self.too_many_digits());
        }
        let bytes = twos_complement(negative, &digits);
        match self.size {
            None => Ok(bytes),
            Some(size) if bytes.len() <= size => {
                let fill = if negative && bytes[0] & 0x80 != 0 {
                    0xff
                } else {
                    0
                };
                let mut fixed = vec![fill; size - bytes.len()];
                fixed.extend_from_slice(&bytes);
                Ok(fixed)
            }
            Some(size) => Err(format!("does not fit in the {size} bytes of the fixed")),
        }
    }

    fn too_many_digits(&self) -> String {
        format!("more digits than the precision {} allows", self.precision)
    }

    /// The Avro bytes of a field default, which the Avro specification writes as the bytes
    /// themselves (a JSON string whose code points 0–255 are the bytes); `None` if it is not.
    pub(crate) fn default_bytes(&self, s: &str) -> Option<Vec<u8>> {
        let bytes: Vec<u8> = s
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<_>>()?;
        (self.size.is_none_or(|size| size == bytes.len())).then_some(bytes)
    }
}

/// `[+-]?digits[.digits][(e|E)[+-]?digits]` → (negative, every digit written, scale: fraction
/// digits minus the exponent).
fn parse_decimal(text: &str) -> Option<(bool, Vec<u8>, i128)> {
    let b = text.as_bytes();
    let (negative, rest) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let int_len = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if int_len == 0 {
        return None;
    }
    let mut digits: Vec<u8> = rest[..int_len].iter().map(|c| c - b'0').collect();
    let mut rest = &rest[int_len..];
    let mut scale: i128 = 0;
    if let [b'.', after @ ..] = rest {
        let frac_len = after.iter().take_while(|c| c.is_ascii_digit()).count();
        if frac_len == 0 {
            return None;
        }
        digits.extend(after[..frac_len].iter().map(|c| c - b'0'));
        scale = frac_len as i128;
        rest = &after[frac_len..];
    }
    if let [b'e' | b'E', after @ ..] = rest {
        let (sign, after) = match after {
            [b'-', a @ ..] => (-1, a),
            [b'+', a @ ..] => (1, a),
            a => (1, a),
        };
        if after.is_empty() || !after.iter().all(u8::is_ascii_digit) {
            return None;
        }
        // Saturates far beyond any scale or precision: such a number is refused either way.
        let exponent = after.iter().fold(0_i128, |n, d| {
            (n * 10 + i128::from(d - b'0')).min(i128::from(u64::MAX))
        });
        scale -= sign * exponent;
        rest = &[];
    }
    rest.is_empty().then_some((negative, digits, scale))
}

/// The minimal two's-complement big-endian bytes of ±(decimal digits).
fn twos_complement(negative: bool, digits: &[u8]) -> Vec<u8> {
    let mut magnitude = vec![0_u8];
    for &d in digits {
        let mut carry = u16::from(d);
        for byte in magnitude.iter_mut().rev() {
            let v = u16::from(*byte) * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            magnitude.insert(0, carry as u8);
        }
    }
    let zero = magnitude.iter().all(|&b| b == 0);
    if negative && !zero {
        // Negate: invert and add one.
        let mut carry = true;
        for byte in magnitude.iter_mut().rev() {
            let (v, c) = (!*byte).overflowing_add(u8::from(carry));
            *byte = v;
            carry = c;
        }
        if magnitude[0] & 0x80 == 0 {
            magnitude.insert(0, 0xff);
        }
        // Minimal: drop a leading 0xff whose next byte already carries the sign.
        while magnitude.len() > 1 && magnitude[0] == 0xff && magnitude[1] & 0x80 != 0 {
            magnitude.remove(0);
        }
    } else {
        if magnitude[0] & 0x80 != 0 {
            magnitude.insert(0, 0);
        }
        while magnitude.len() > 1 && magnitude[0] == 0 && magnitude[1] & 0x80 == 0 {
            magnitude.remove(0);
        }
    }
    magnitude
}

/// The text of each JSON number of a parsed record that a float holds only approximately, by
/// the address of its [`Number`] in the tree, read again from the record's raw text. A tree
/// walk that has it converts decimals from what was written, as the one-pass path does.
pub(crate) type NumberTexts<'r> = HashMap<usize, &'r str>;

/// Notes into `texts` the text of every number of `json` parsed as a float (a fraction, an
/// exponent, or an integer beyond 64 bits), given the raw text `raw` it was parsed from.
pub(crate) fn note_number_texts<'r>(raw: &'r str, json: &Json, texts: &mut NumberTexts<'r>) {
    match json {
        Json::Number(n) if n.is_f64() => {
            texts.insert(n as *const Number as usize, raw.trim());
        }
        Json::Array(items) => {
            if let Ok(raws) = serde_json::from_str::<Vec<&RawValue>>(raw) {
                for (raw, item) in raws.iter().zip(items) {
                    note_number_texts(raw.get(), item, texts);
                }
            }
        }
        Json::Object(members) => {
            // A duplicate member: the map keeps the last one, as the tree does.
            if let Ok(raws) = serde_json::from_str::<HashMap<String, &RawValue>>(raw) {
                for (name, raw) in raws {
                    if let Some(member) = members.get(&name) {
                        note_number_texts(raw.get(), member, texts);
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_read_strictly() {
        assert_eq!(date_days("1970-01-01"), Some(0));
        assert_eq!(date_days("2024-03-01"), Some(19_783));
        assert_eq!(date_days("1969-12-31"), Some(-1));
        for bad in [
            "2024-02-30",
            "2024-3-01",
            "2024-03-01T00:00:00Z",
            "20240301",
            "",
        ] {
            assert_eq!(date_days(bad), None, "{bad}");
        }
        assert_eq!(time_of_day_nanos("00:00:00"), Some(0));
        assert_eq!(time_of_day_nanos("13:45:01.250"), Some(49_501_250_000_000));
        assert_eq!(
            time_of_day_nanos("23:59:59.999999999"),
            Some(86_399_999_999_999)
        );
        for bad in [
            "24:00:00",
            "13:45",
            "13:45:01.",
            "13:45:01Z",
            "13:45:01.1234567891",
        ] {
            assert_eq!(time_of_day_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn decimals_are_exact_and_minimal() {
        let d = DecimalType {
            precision: 9,
            scale: 2,
            size: None,
        };
        assert_eq!(d.encode("0"), Ok(vec![0]));
        assert_eq!(d.encode("1.5"), Ok(vec![0, 150]));
        assert_eq!(d.encode("1.27"), Ok(vec![127]));
        assert_eq!(d.encode("1.28"), Ok(vec![0, 128]));
        assert_eq!(d.encode("-1.28"), Ok(vec![0x80]));
        assert_eq!(d.encode("-1.29"), Ok(vec![0xff, 0x7f]));
        assert_eq!(d.encode("-0.00"), Ok(vec![0]));
        assert_eq!(d.encode("1.2e1"), Ok(vec![0x04, 0xb0]));
        assert_eq!(d.encode("+12.300"), Ok(vec![0x04, 0xce]));
        assert_eq!(d.encode("9999999.99"), Ok(vec![0x3b, 0x9a, 0xc9, 0xff]));
        assert!(d.encode("10000000").unwrap_err().contains("precision 9"));
        assert!(d.encode("1.234").unwrap_err().contains("scale 2"));
        assert!(
            d.encode("1e999999999999")
                .unwrap_err()
                .contains("precision")
        );
        for bad in ["", "-", "1.", ".5", "1e", "0x10", "1,5", " 1", "NaN"] {
            assert_eq!(
                d.encode(bad),
                Err("not a decimal number".to_owned()),
                "{bad}"
            );
        }
        let fixed = DecimalType {
            precision: 4,
            scale: 0,
            size: Some(2),
        };
        assert_eq!(fixed.encode("-1"), Ok(vec![0xff, 0xff]));
        assert_eq!(fixed.encode("9999"), Ok(vec![0x27, 0x0f]));
        let tiny = DecimalType {
            precision: 4,
            scale: 0,
            size: Some(1),
        };
        assert!(tiny.encode("200").unwrap_err().contains("1 bytes"));
        assert_eq!(tiny.default_bytes("\u{ff}"), Some(vec![0xff]));
        assert_eq!(tiny.default_bytes("ab"), None);
    }
}
