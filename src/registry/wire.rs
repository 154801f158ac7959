//! The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, the Avro datum.

/// Why a value is not in the Confluent wire format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Fewer than five bytes.
    #[error("value of {0} bytes is too short for the Confluent wire format (needs at least 5)")]
    TooShort(usize),
    /// The first byte is not 0.
    #[error("unknown magic byte {0} (expected 0)")]
    BadMagic(u8),
}

/// Prepends the 5-byte header to an Avro datum.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a framed value into its schema id and datum, checking the length first.
///
/// # Errors
/// When the value is too short or the magic byte is wrong.
pub fn unframe(value: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if value.len() < 5 {
        return Err(WireError::TooShort(value.len()));
    }
    if value[0] != 0 {
        return Err(WireError::BadMagic(value[0]));
    }
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok((id, &value[5..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_unframes() {
        let v = frame(0x0102_0304, &[9, 8]);
        assert_eq!(v, [0, 1, 2, 3, 4, 9, 8]);
        assert_eq!(unframe(&v), Ok((0x0102_0304, &[9u8, 8][..])));
        assert_eq!(unframe(&[0, 0, 0]), Err(WireError::TooShort(3)));
        assert_eq!(unframe(&[1, 0, 0, 0, 0]), Err(WireError::BadMagic(1)));
        assert_eq!(unframe(&[0, 0, 0, 0, 7]), Ok((7, &[][..])));
    }
}
