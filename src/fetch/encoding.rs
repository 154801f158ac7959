//! Compressed answers: fetch asks every API for gzip or deflate ([`ACCEPT_ENCODING`]) and
//! decodes what comes back here, so landing keeps the page as the API meant it (the decoded
//! body), never bytes a reader would have to inflate.
//!
//! Decoding is bounded: an answer that inflates past [`MAX_DECODED_BYTES`] fails the request
//! instead of exhausting memory (a compression bomb, or an export far larger than any page).
//! A corrupt or truncated stream fails the attempt like a cut connection, and is retried.
//!
//! Only fetch's client asks for compression. reqwest's own `gzip` feature is not used: Cargo
//! features are crate-wide, so it would turn compression on for every client of the process
//! (the schema registry's and the identity provider's too).

use std::io::Read;

use bytes::Bytes;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use reqwest::header::{CONTENT_ENCODING, CONTENT_LENGTH, HeaderMap};

/// What fetch sends as `Accept-Encoding`.
pub const ACCEPT_ENCODING: &str = "gzip, deflate";

/// The largest decoded answer accepted: 1 GiB. A page this large would go to the blob store by
/// claim-check anyway; larger is a bomb or a misconfigured endpoint.
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

/// Compressed bodies above this size are inflated on the blocking pool, not on a runtime
/// worker (about a millisecond of CPU per 256 KiB).
const INLINE_BYTES: usize = 256 * 1024;

/// Why an answer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The stream is corrupt or cut short: worth another attempt.
    #[error("could not decode a {encoding} answer: {reason}")]
    Corrupt {
        /// The encoding.
        encoding: String,
        /// What the decoder said.
        reason: String,
    },
    /// An encoding fetch did not ask for (`br`, `zstd`, ...): the server ignored the request's
    /// `Accept-Encoding`; retrying will not help.
    #[error(
        "the answer is encoded as `{0}`, which fetch did not ask for (it accepts {ACCEPT_ENCODING})"
    )]
    Unsupported(String),
    /// The answer inflates past [`MAX_DECODED_BYTES`].
    #[error("the {encoding} answer inflates past {cap} bytes ({compressed} bytes compressed)")]
    TooLarge {
        /// The encoding.
        encoding: String,
        /// The cap.
        cap: u64,
        /// The compressed size.
        compressed: usize,
    },
}

impl DecodeError {
    /// Another attempt may succeed (a stream cut short).
    pub fn retryable(&self) -> bool {
        matches!(self, DecodeError::Corrupt { .. })
    }
}

/// The codings of a `Content-Encoding` header in the order they were applied (`identity`
/// dropped, lower-cased).
fn codings(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect()
}

/// Decodes `body` as its `Content-Encoding` says (codings undone last first) and, when it
/// decoded anything, removes `Content-Encoding` and `Content-Length` from `headers` so they
/// describe the decoded body. An answer without an encoding is returned as is (no copy).
///
/// # Errors
/// [`DecodeError`] for a corrupt stream, an encoding not asked for, or too large an answer.
pub async fn decode(headers: &mut HeaderMap, body: Bytes) -> Result<Bytes, DecodeError> {
    decode_within(headers, body, MAX_DECODED_BYTES).await
}

/// [`decode`] with another cap on the decoded size.
async fn decode_within(
    headers: &mut HeaderMap,
    body: Bytes,
    cap: u64,
) -> Result<Bytes, DecodeError> {
    let codings = codings(headers);
    if codings.is_empty() {
        return Ok(body);
    }
    let decoded = if body.len() <= INLINE_BYTES {
        decode_all(&codings, body, cap)?
    } else {
        let codings = codings.clone();
        tokio::task::spawn_blocking(move || decode_all(&codings, body, cap))
            .await
            .map_err(|e| DecodeError::Corrupt {
                encoding: "gzip".into(),
                reason: format!("decoder task failed: {e}"),
            })??
    };
    headers.remove(CONTENT_ENCODING);
    headers.remove(CONTENT_LENGTH);
    Ok(decoded)
}

fn decode_all(codings: &[String], mut body: Bytes, cap: u64) -> Result<Bytes, DecodeError> {
    for coding in codings.iter().rev() {
        body = decode_one(coding, &body, cap)?;
    }
    Ok(body)
}

fn decode_one(coding: &str, body: &[u8], cap: u64) -> Result<Bytes, DecodeError> {
    match coding {
        "gzip" | "x-gzip" => inflate(coding, body, MultiGzDecoder::new(body), cap),
        // RFC 9110's deflate is the zlib format; some servers send a raw deflate stream.
        "deflate" => match inflate(coding, body, ZlibDecoder::new(body), cap) {
            Err(DecodeError::Corrupt { .. }) => {
                inflate(coding, body, DeflateDecoder::new(body), cap)
            }
            other => other,
        },
        other => Err(DecodeError::Unsupported(other.to_owned())),
    }
}

fn inflate(coding: &str, body: &[u8], decoder: impl Read, cap: u64) -> Result<Bytes, DecodeError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(64 << 20));
    let read = decoder
        .take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt {
            encoding: coding.to_owned(),
            reason: e.to_string(),
        })?;
    if read as u64 > cap {
        return Err(DecodeError::TooLarge {
            encoding: coding.to_owned(),
            cap,
            compressed: body.len(),
        });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(encoding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, HeaderValue::from_str(encoding).unwrap());
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("12"));
        h
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    const PAGE: &[u8] = br#"{"data":[{"id":1},{"id":2}],"next":"abc"}"#;

    #[tokio::test]
    async fn gzip_zlib_and_raw_deflate_decode_and_headers_follow() {
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(PAGE).unwrap();
        let mut d = DeflateEncoder::new(Vec::new(), Compression::default());
        d.write_all(PAGE).unwrap();
        for (enc, body) in [
            ("gzip", gzip(PAGE)),
            ("x-gzip", gzip(PAGE)),
            ("deflate", z.finish().unwrap()),
            ("deflate", d.finish().unwrap()),
            ("identity, gzip", gzip(PAGE)),
            ("gzip, gzip", gzip(&gzip(PAGE))),
        ] {
            let mut h = headers(enc);
            let out = decode(&mut h, Bytes::from(body)).await.unwrap();
            assert_eq!(&out[..], PAGE, "{enc}");
            assert!(h.get(CONTENT_ENCODING).is_none(), "{enc}");
            assert!(h.get(CONTENT_LENGTH).is_none(), "{enc}");
        }
    }

    #[tokio::test]
    async fn plain_answers_pass_untouched() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("42"));
        let body = Bytes::from_static(PAGE);
        let out = decode(&mut h, body.clone()).await.unwrap();
        assert_eq!(out.as_ptr(), body.as_ptr(), "no copy");
        assert!(h.get(CONTENT_LENGTH).is_some());
        let mut h = headers("identity");
        assert_eq!(&decode(&mut h, body).await.unwrap()[..], PAGE);
    }

    #[tokio::test]
    async fn corrupt_truncated_unsupported_and_bombs_fail_clearly() {
        let whole = gzip(PAGE);
        let cut = Bytes::copy_from_slice(&whole[..whole.len() / 2]);
        let e = decode(&mut headers("gzip"), cut).await.unwrap_err();
        assert!(e.retryable(), "{e}");
        let e = decode(&mut headers("gzip"), Bytes::from_static(b"not gzip at all"))
            .await
            .unwrap_err();
        assert!(e.retryable(), "{e}");
        let e = decode(&mut headers("br"), Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert_eq!(e, DecodeError::Unsupported("br".into()));
        assert!(!e.retryable());
        // 4 MiB + 1 byte of zeros (about 4 KiB compressed) against a 4 MiB cap: decoding stops
        // there, and exactly 4 MiB passes; large bodies take the blocking pool.
        let mut g = GzEncoder::new(Vec::new(), Compression::fast());
        g.write_all(&vec![0u8; 4 << 20]).unwrap();
        let exact = Bytes::from(g.finish().unwrap());
        let out = decode_within(&mut headers("gzip"), exact, 4 << 20)
            .await
            .unwrap();
        assert_eq!(out.len(), 4 << 20);
        let mut g = GzEncoder::new(Vec::new(), Compression::fast());
        g.write_all(&vec![0u8; (4 << 20) + 1]).unwrap();
        let bomb = Bytes::from(g.finish().unwrap());
        let e = decode_within(&mut headers("gzip"), bomb, 4 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(e, DecodeError::TooLarge { cap: 4194304, .. }),
            "{e}"
        );
        assert!(!e.retryable());
        // Incompressible data: the compressed body is over INLINE_BYTES (the blocking pool).
        let noise: Vec<u8> = (0..INLINE_BYTES * 4)
            .map(|_| rand::random::<u8>())
            .collect();
        let big = gzip(&noise);
        assert!(big.len() > INLINE_BYTES);
        let out = decode(&mut headers("gzip"), Bytes::from(big))
            .await
            .unwrap();
        assert_eq!(&out[..], &noise[..]);
    }
}
