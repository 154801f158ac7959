//! HMAC-SHA256 webhook signatures: the one implementation shared by `sim` (which signs) and
//! `serve` (which verifies).
//!
//! # The scheme
//!
//! A delivery carries the header [`HEADER`] (`X-Intake-Signature`) with the value
//! `t=<unix seconds>,v1=<hex>` where `<hex>` is the lowercase hex HMAC-SHA256, keyed by the
//! shared secret, of the bytes `"{t}.{body}"`: the decimal timestamp, one ASCII dot, then the
//! raw request body exactly as sent. While a secret is being rotated the sender may sign with
//! both the old and the new secret and send several `v1=` entries
//! (`t=…,v1=<old>,v1=<new>`); a receiver accepts the request when any `v1` entry matches any of
//! its secrets. Entries with other keys (`v0=`, future schemes) are ignored.
//!
//! The timestamp is signed too, so a captured request cannot be replayed outside the receiver's
//! tolerance window (see [`verify`]). Secrets are passed in as bytes and never stored here; hold
//! them in [`crate::config::SecretString`] so they stay out of logs.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The name of the signature header.
pub const HEADER: &str = "X-Intake-Signature";

/// The signature scheme this module produces and checks.
const SCHEME: &str = "v1";

/// Length of an HMAC-SHA256 output in bytes.
const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was rejected. The `Display` text is a reason fit for an HTTP error body or
/// a log line; it never contains a secret or an expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The request carried no signature header (or an empty one).
    #[error("missing signature header {HEADER}")]
    MissingHeader,
    /// The header was present but not of the form `t=<unix>,v1=<hex>`.
    #[error("malformed signature header: {0}")]
    MalformedHeader(&'static str),
    /// The signed timestamp is further from now than the tolerance (a replay or a skewed
    /// clock).
    #[error(
        "stale signature: timestamp {timestamp} is {age_secs} s away from now, beyond the {tolerance_secs} s tolerance"
    )]
    StaleTimestamp {
        /// The `t=` value of the header.
        timestamp: i64,
        /// `|now - timestamp|` in seconds.
        age_secs: u64,
        /// The tolerance the receiver applied.
        tolerance_secs: i64,
    },
    /// No `v1` entry matches any of the receiver's secrets: wrong secret or altered body.
    #[error("bad signature: no v1 signature matches the body under any configured secret")]
    BadSignature,
}

/// Computes the MAC of `"{t}.{body}"` under `secret`.
fn mac(secret: &[u8], t: i64, body: &[u8]) -> [u8; MAC_LEN] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Signs `body` at unix time `t`: returns the full header value `t=<t>,v1=<hex>`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    sign_all(&[secret], t, body)
}

/// Signs `body` with every secret (a rotation: old and new), one `v1=` entry per secret, in
/// the order given: `t=<t>,v1=<hex>,v1=<hex>`.
pub fn sign_all(secrets: &[&[u8]], t: i64, body: &[u8]) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac(secret, t, body)));
    }
    header
}

/// A parsed header: the timestamp and every `v1` signature.
struct Parsed {
    timestamp: i64,
    signatures: Vec<[u8; MAC_LEN]>,
}

fn parse(header: &str) -> Result<Parsed, SignatureError> {
    use SignatureError::MalformedHeader;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(MalformedHeader("every entry must be key=value"))?;
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(MalformedHeader("more than one t= entry"));
                }
                let t = value
                    .parse::<i64>()
                    .map_err(|_| MalformedHeader("t= is not an integer unix time"))?;
                timestamp = Some(t);
            }
            SCHEME => {
                let mut sig = [0u8; MAC_LEN];
                hex::decode_to_slice(value, &mut sig)
                    .map_err(|_| MalformedHeader("v1= is not 64 hex digits"))?;
                signatures.push(sig);
            }
            // Other schemes are ignored so a sender can add one without breaking receivers.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(MalformedHeader("no t= entry"))?;
    if signatures.is_empty() {
        return Err(MalformedHeader("no v1= entry"));
    }
    Ok(Parsed {
        timestamp,
        signatures,
    })
}

/// The timestamp (`t=`) of a signature header, if it parses; authentic only once [`verify`]
/// accepted the header.
pub fn timestamp(header: &str) -> Option<i64> {
    parse(header).ok().map(|p| p.timestamp)
}

/// Verifies a signature header against the raw `body`.
///
/// Accepts when the header's timestamp lies within `tolerance_secs` of `now` (either side)
/// and some `v1` entry equals the MAC of the body under some secret in `secrets` (give two
/// during a rotation). MACs are compared in constant time. With no secrets nothing matches.
///
/// # Errors
///
/// [`SignatureError::MissingHeader`] for an empty header, [`SignatureError::MalformedHeader`]
/// when it does not parse, [`SignatureError::StaleTimestamp`] outside the tolerance, and
/// [`SignatureError::BadSignature`] when no signature matches. The timestamp is checked before
/// the MAC, but only a matching MAC proves the timestamp authentic.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[&[u8]],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    if header.trim().is_empty() {
        return Err(SignatureError::MissingHeader);
    }
    let parsed = parse(header)?;
    let age_secs = now.abs_diff(parsed.timestamp);
    if age_secs > tolerance_secs.max(0).unsigned_abs() {
        return Err(SignatureError::StaleTimestamp {
            timestamp: parsed.timestamp,
            age_secs,
            tolerance_secs,
        });
    }
    // Compare against every pair without short-circuiting on the secret, so timing does not
    // tell which secret (if any) came close.
    let mut matched = subtle::Choice::from(0u8);
    for secret in secrets {
        let expected = mac(secret, parsed.timestamp, body);
        for sig in &parsed.signatures {
            // A deliberate bug for `scripts/fuzz --mutants` only: the last byte is not compared.
            #[cfg(feature = "fuzz-mutants")]
            let (expected, sig) = (&expected[..MAC_LEN - 1], &sig[..MAC_LEN - 1]);
            matched |= expected.ct_eq(sig);
        }
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(SignatureError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"event_id":"e1","seq":3}"#;

    #[test]
    fn sign_matches_a_known_vector() {
        // HMAC-SHA256(key="secret", msg="1700000000.{\"event_id\":\"e1\",\"seq\":3}"),
        // computed independently with `openssl dgst -sha256 -hmac secret`.
        let header = sign(b"secret", 1_700_000_000, BODY);
        assert_eq!(
            header,
            "t=1700000000,v1=d21383303c1d95ff3be3fbc7d061f851df2975881604270df542fc246d49446d"
        );
    }

    #[test]
    fn round_trip_verifies() {
        let header = sign(b"s3cret", 1000, BODY);
        assert_eq!(verify(&header, BODY, &[b"s3cret"], 1000, 300), Ok(()));
        assert_eq!(verify(&header, BODY, &[b"s3cret"], 1300, 300), Ok(()));
        assert_eq!(verify(&header, BODY, &[b"s3cret"], 700, 300), Ok(()));
    }

    #[test]
    fn rotation_accepts_either_secret() {
        let old_only = sign(b"old", 1000, BODY);
        let both = sign_all(&[b"old", b"new"], 1000, BODY);
        assert_eq!(
            verify(&old_only, BODY, &[b"new", b"old"], 1000, 300),
            Ok(())
        );
        assert_eq!(verify(&both, BODY, &[b"new"], 1000, 300), Ok(()));
        assert_eq!(both.matches(",v1=").count(), 2);
    }

    #[test]
    fn each_failure_has_its_own_variant() {
        let header = sign(b"k", 1000, BODY);
        assert_eq!(
            verify("", BODY, &[b"k"], 1000, 300),
            Err(SignatureError::MissingHeader)
        );
        assert!(matches!(
            verify("garbage", BODY, &[b"k"], 1000, 300),
            Err(SignatureError::MalformedHeader(_))
        ));
        assert!(matches!(
            verify("t=abc,v1=00", BODY, &[b"k"], 1000, 300),
            Err(SignatureError::MalformedHeader(_))
        ));
        assert!(matches!(
            verify("t=1000", BODY, &[b"k"], 1000, 300),
            Err(SignatureError::MalformedHeader("no v1= entry"))
        ));
        assert!(matches!(
            verify("v1=00", BODY, &[b"k"], 1000, 300),
            Err(SignatureError::MalformedHeader(_))
        ));
        assert_eq!(
            verify(&header, BODY, &[b"k"], 1301, 300),
            Err(SignatureError::StaleTimestamp {
                timestamp: 1000,
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        assert!(matches!(
            verify(&header, BODY, &[b"k"], 699, 300),
            Err(SignatureError::StaleTimestamp { age_secs: 301, .. })
        ));
        assert_eq!(
            verify(&header, BODY, &[b"other"], 1000, 300),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            verify(&header, b"tampered", &[b"k"], 1000, 300),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            verify(&header, BODY, &[], 1000, 300),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn the_timestamp_is_signed() {
        let header = sign(b"k", 1000, BODY);
        let moved = header.replacen("t=1000", "t=1001", 1);
        assert_eq!(
            verify(&moved, BODY, &[b"k"], 1000, 300),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn unknown_schemes_are_ignored() {
        let header = sign(b"k", 1000, BODY);
        let with_v0 = format!("{header},v0=deadbeef");
        assert_eq!(verify(&with_v0, BODY, &[b"k"], 1000, 300), Ok(()));
    }

    #[test]
    fn errors_never_show_the_secret() {
        let err = verify(&sign(b"hunter2", 1, BODY), BODY, &[b"x"], 1, 5).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        assert!(!format!("{err:?}").contains("hunter2"));
    }
}
