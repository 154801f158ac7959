//! HMAC webhook signatures: the one implementation shared by `sim` (which signs) and `serve`
//! (which verifies), for intake's own scheme and for providers' ones.
//!
//! # Schemes
//!
//! A [`Scheme`] is data: the header that carries the signature, the HMAC algorithm, how the
//! MAC is written (hex or base64), how the header is laid out, where the signed timestamp
//! comes from and the template of the signed payload. Presets ([`Scheme::preset`]) are the
//! documented schemes of real providers; a source may also spell out its own.
//!
//! | preset | header | value | signed payload | MAC |
//! |---|---|---|---|---|
//! | `intake` (default) | `X-Intake-Signature` | `t=<unix>,v1=<mac>[,v1=<mac>]` | `{timestamp}.{body}` | HMAC-SHA256, hex |
//! | `stripe` | `Stripe-Signature` | `t=<unix>,v1=<mac>[,v1=…][,v0=…]` | `{timestamp}.{body}` | HMAC-SHA256, hex |
//! | `github` | `X-Hub-Signature-256` | `sha256=<mac>` | `{body}` | HMAC-SHA256, hex |
//! | `shopify` | `X-Shopify-Hmac-Sha256` | `<mac>` | `{body}` | HMAC-SHA256, base64 |
//! | `slack` | `X-Slack-Signature`, timestamp in `X-Slack-Request-Timestamp` | `v0=<mac>` | `v0:{timestamp}:{body}` | HMAC-SHA256, hex |
//!
//! In the `key=value` layout (intake, Stripe) the header is a comma-separated list; the
//! timestamp is the `t=` entry and every entry with the signature key (`v1`) is a candidate
//! signature — a sender rotating its secret signs with both and sends two. Other entries
//! (`v0=`, future schemes) are ignored. In the plain layout the whole value, after its prefix,
//! is the one signature. A receiver accepts when any candidate equals the MAC of the payload
//! under any of its secrets (give two during a rotation), compared in constant time.
//!
//! A scheme with a timestamp signs it, so a captured request cannot be replayed outside the
//! receiver's tolerance window. Schemes without one (GitHub, Shopify) cannot refuse a replay
//! by time: serve refuses the same body again for its tolerance window ([`crate::serve::replay`]),
//! and dedup makes a later replay harmless (the same version lands on the same key).
//!
//! Secrets are passed in as bytes and never stored here; hold them in
//! [`crate::config::SecretString`] so they stay out of logs. No error shows a secret or an
//! expected MAC.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

/// The name of intake's own signature header.
pub const HEADER: &str = "X-Intake-Signature";

/// The names of the presets, as `sources[].webhook.signature.preset` takes them.
pub const PRESETS: [&str; 5] = ["intake", "stripe", "github", "shopify", "slack"];

/// The HMAC's hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// HMAC-SHA256 (every preset).
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl Algorithm {
    /// The MAC's length in bytes.
    pub const fn mac_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    /// The configured name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }
}

/// How a MAC is written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Hexadecimal (either case accepted, lower case written).
    Hex,
    /// Standard base64 with padding.
    Base64,
}

impl Encoding {
    fn encode(self, mac: &[u8]) -> String {
        match self {
            Self::Hex => hex::encode(mac),
            Self::Base64 => B64.encode(mac),
        }
    }

    fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Self::Hex => hex::decode(text).ok(),
            Self::Base64 => B64.decode(text).ok(),
        }
    }

    /// The configured name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hex => "hex",
            Self::Base64 => "base64",
        }
    }
}

/// Where the signed timestamp comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampSource {
    /// The scheme signs no timestamp (GitHub, Shopify).
    None,
    /// An entry of the `key=value` signature header (`t` for intake and Stripe).
    Entry(String),
    /// Another request header (`X-Slack-Request-Timestamp`).
    Header(String),
}

/// The signed payload: what comes before the body and what after, each of which may hold
/// `{timestamp}` (`"{timestamp}.{body}"`, `"v0:{timestamp}:{body}"`, `"{body}"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    before: String,
    after: String,
}

impl Template {
    /// Parses a template, which holds `{body}` exactly once.
    ///
    /// # Errors
    /// The reason, for a config error.
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some((before, after)) = s.split_once("{body}") else {
            return Err(format!("`{s}` has no {{body}}"));
        };
        if after.contains("{body}") {
            return Err(format!("`{s}` has {{body}} more than once"));
        }
        Ok(Self {
            before: before.to_owned(),
            after: after.to_owned(),
        })
    }

    /// Whether it signs the timestamp.
    pub fn has_timestamp(&self) -> bool {
        self.before.contains("{timestamp}") || self.after.contains("{timestamp}")
    }

    /// As configured.
    pub fn text(&self) -> String {
        format!("{}{{body}}{}", self.before, self.after)
    }
}

/// A signature scheme (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheme {
    /// The header that carries the signature.
    pub header: String,
    /// The HMAC's hash.
    pub algorithm: Algorithm,
    /// How the MAC is written.
    pub encoding: Encoding,
    /// `Some(key)`: the header is a `key=value` list and the signatures are the entries with
    /// this key; `None`: the header's whole value (after [`Scheme::prefix`]) is the signature.
    pub signature_key: Option<String>,
    /// What precedes a signature (`sha256=`, `v0=`).
    pub prefix: String,
    /// Where the signed timestamp comes from.
    pub timestamp: TimestampSource,
    /// The signed payload.
    pub payload: Template,
}

/// A preset as data: header, algorithm, encoding, signature key, prefix, timestamp, payload.
struct Preset {
    name: &'static str,
    header: &'static str,
    encoding: Encoding,
    signature_key: Option<&'static str>,
    prefix: &'static str,
    /// `("entry", key)`, `("header", name)` or `("", "")`.
    timestamp: (&'static str, &'static str),
    payload: &'static str,
}

impl Preset {
    /// Stripe's scheme under `header`: `t=<unix>,v1=<hex>` entries, the HMAC of
    /// `{timestamp}.{body}` (intake's own scheme is Stripe's under its own header).
    const fn timestamped_v1(name: &'static str, header: &'static str) -> Preset {
        Preset {
            name,
            header,
            encoding: Encoding::Hex,
            signature_key: Some("v1"),
            prefix: "",
            timestamp: ("entry", "t"),
            payload: "{timestamp}.{body}",
        }
    }
}

const TABLE: [Preset; 5] = [
    Preset::timestamped_v1("intake", HEADER),
    // https://docs.stripe.com/webhooks#verify-manually
    Preset::timestamped_v1("stripe", "Stripe-Signature"),
    // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    Preset {
        name: "github",
        header: "X-Hub-Signature-256",
        encoding: Encoding::Hex,
        signature_key: None,
        prefix: "sha256=",
        timestamp: ("", ""),
        payload: "{body}",
    },
    // https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-5-verify-the-webhook
    Preset {
        name: "shopify",
        header: "X-Shopify-Hmac-Sha256",
        encoding: Encoding::Base64,
        signature_key: None,
        prefix: "",
        timestamp: ("", ""),
        payload: "{body}",
    },
    // https://api.slack.com/authentication/verifying-requests-from-slack
    Preset {
        name: "slack",
        header: "X-Slack-Signature",
        encoding: Encoding::Hex,
        signature_key: None,
        prefix: "v0=",
        timestamp: ("header", "X-Slack-Request-Timestamp"),
        payload: "v0:{timestamp}:{body}",
    },
];

/// Why a signature was rejected. The `Display` text is a reason fit for an HTTP error body or
/// a log line; it never contains a secret or an expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The request carried no signature header (or an empty one), or not the header the
    /// timestamp comes from.
    #[error("missing signature header {0}")]
    MissingHeader(String),
    /// The header was present but not of the scheme's form.
    #[error("malformed signature header: {0}")]
    MalformedHeader(String),
    /// The signed timestamp is further from now than the tolerance (a replay or a skewed
    /// clock).
    #[error(
        "stale signature: timestamp {timestamp} is {age_secs} s away from now, beyond the {tolerance_secs} s tolerance"
    )]
    StaleTimestamp {
        /// The signed timestamp.
        timestamp: i64,
        /// `|now - timestamp|` in seconds.
        age_secs: u64,
        /// The tolerance the receiver applied.
        tolerance_secs: i64,
    },
    /// No signature matches any of the receiver's secrets: wrong secret or altered body.
    #[error("bad signature: no signature matches the body under any configured secret")]
    BadSignature,
}

/// A signature that verified: the signed timestamp, when the scheme has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The signed (hence authentic) timestamp.
    pub timestamp: Option<i64>,
}

fn malformed(why: impl Into<String>) -> SignatureError {
    SignatureError::MalformedHeader(why.into())
}

impl Scheme {
    /// intake's own scheme.
    pub fn intake() -> Self {
        Self::preset("intake").expect("the intake preset exists")
    }

    /// A provider's documented scheme by name (one of [`PRESETS`]).
    pub fn preset(name: &str) -> Option<Self> {
        let p = TABLE.iter().find(|p| p.name == name)?;
        Some(Self {
            header: p.header.to_owned(),
            algorithm: Algorithm::Sha256,
            encoding: p.encoding,
            signature_key: p.signature_key.map(str::to_owned),
            prefix: p.prefix.to_owned(),
            timestamp: match p.timestamp {
                ("entry", k) => TimestampSource::Entry(k.to_owned()),
                ("header", h) => TimestampSource::Header(h.to_owned()),
                _ => TimestampSource::None,
            },
            payload: Template::parse(p.payload).expect("presets' templates parse"),
        })
    }

    /// The MAC of the payload for timestamp `t` and `body` under `secret`.
    fn mac(&self, secret: &[u8], t: Option<i64>, body: &[u8]) -> Vec<u8> {
        let stamp = t.map(|t| t.to_string()).unwrap_or_default();
        let before = self.payload.before.replace("{timestamp}", &stamp);
        let after = self.payload.after.replace("{timestamp}", &stamp);
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        match self.algorithm {
            Algorithm::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
                m.update(before.as_bytes());
                m.update(body);
                m.update(after.as_bytes());
                m.finalize().into_bytes().to_vec()
            }
            Algorithm::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(secret).expect("any key length");
                m.update(before.as_bytes());
                m.update(body);
                m.update(after.as_bytes());
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    /// Signs `body` at unix time `t` (ignored by schemes without a timestamp) with every
    /// secret: the headers to send, signature header first. The `key=value` layout carries
    /// one entry per secret; the plain layout can carry one signature, so it signs with the
    /// first secret.
    pub fn sign(&self, secrets: &[&[u8]], t: i64, body: &[u8]) -> Vec<(String, String)> {
        let ts = (self.timestamp != TimestampSource::None).then_some(t);
        let sig = |secret: &[u8]| {
            format!(
                "{}{}",
                self.prefix,
                self.encoding.encode(&self.mac(secret, ts, body))
            )
        };
        let value = match (&self.signature_key, &self.timestamp) {
            (Some(key), stamp) => {
                let mut v = match stamp {
                    TimestampSource::Entry(k) => format!("{k}={t}"),
                    _ => String::new(),
                };
                for s in secrets {
                    if !v.is_empty() {
                        v.push(',');
                    }
                    v.push_str(&format!("{key}={}", sig(s)));
                }
                v
            }
            (None, _) => secrets.first().map(|s| sig(s)).unwrap_or_default(),
        };
        let mut out = vec![(self.header.clone(), value)];
        if let TimestampSource::Header(h) = &self.timestamp {
            out.push((h.clone(), t.to_string()));
        }
        out
    }

    /// Verifies a request: `header(name)` gives a request header's value (names compared
    /// without regard to case by the caller), `body` the raw body.
    ///
    /// Accepts when the signed timestamp (if the scheme has one) lies within
    /// `tolerance_secs` of `now` (either side) and some signature equals the MAC of the
    /// payload under some secret in `secrets` (give two during a rotation). MACs are compared
    /// in constant time, every pair without stopping at a match. With no secrets nothing
    /// matches.
    ///
    /// # Errors
    ///
    /// [`SignatureError::MissingHeader`] for an absent or empty header,
    /// [`SignatureError::MalformedHeader`] when it does not parse,
    /// [`SignatureError::StaleTimestamp`] outside the tolerance, and
    /// [`SignatureError::BadSignature`] when no signature matches. The timestamp is checked
    /// before the MAC, but only a matching MAC proves the timestamp authentic.
    pub fn verify<'h>(
        &self,
        header: impl Fn(&str) -> Option<&'h str>,
        body: &[u8],
        secrets: &[&[u8]],
        now: i64,
        tolerance_secs: i64,
    ) -> Result<Verified, SignatureError> {
        let value = header(&self.header)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SignatureError::MissingHeader(self.header.clone()))?;
        let (timestamp, signatures) = self.parse(value, &header)?;
        if let Some(t) = timestamp {
            let age_secs = now.abs_diff(t);
            if age_secs > tolerance_secs.max(0).unsigned_abs() {
                return Err(SignatureError::StaleTimestamp {
                    timestamp: t,
                    age_secs,
                    tolerance_secs,
                });
            }
        }
        // Every pair is compared, so timing does not tell which secret (if any) came close.
        let mut matched = subtle::Choice::from(0u8);
        for secret in secrets {
            let expected = self.mac(secret, timestamp, body);
            for sig in &signatures {
                // A deliberate bug for `scripts/fuzz --mutants` only: the last byte is not
                // compared.
                #[cfg(feature = "fuzz-mutants")]
                let (expected, sig) = if crate::fuzz_mutant("signing") {
                    (
                        &expected[..expected.len() - 1],
                        &sig[..sig.len().saturating_sub(1)],
                    )
                } else {
                    (&expected[..], &sig[..])
                };
                matched |= expected.ct_eq(sig);
            }
        }
        if bool::from(matched) {
            Ok(Verified { timestamp })
        } else {
            Err(SignatureError::BadSignature)
        }
    }

    /// The signed timestamp and the candidate signatures (decoded, of the MAC's length).
    fn parse<'h>(
        &self,
        value: &str,
        header: &impl Fn(&str) -> Option<&'h str>,
    ) -> Result<(Option<i64>, Vec<Vec<u8>>), SignatureError> {
        let len = self.algorithm.mac_len();
        let decode = |text: &str, what: &str| {
            let text = text.strip_prefix(self.prefix.as_str()).ok_or_else(|| {
                malformed(format!("{what} does not start with `{}`", self.prefix))
            })?;
            self.encoding
                .decode(text)
                .filter(|mac| mac.len() == len)
                .ok_or_else(|| {
                    malformed(format!(
                        "{what} is not a {} {} MAC",
                        self.algorithm.name(),
                        self.encoding.name()
                    ))
                })
        };
        let parse_t = |text: &str, what: &str| {
            text.parse::<i64>()
                .map_err(|_| malformed(format!("{what} is not an integer unix time")))
        };
        let mut timestamp = None;
        let mut signatures = Vec::new();
        match &self.signature_key {
            Some(key) => {
                let t_key = match &self.timestamp {
                    TimestampSource::Entry(k) => Some(k.as_str()),
                    _ => None,
                };
                for part in value.split(',') {
                    let (k, v) = part
                        .trim()
                        .split_once('=')
                        .ok_or_else(|| malformed("every entry must be key=value"))?;
                    if Some(k) == t_key {
                        if timestamp.is_some() {
                            return Err(malformed(format!("more than one {k}= entry")));
                        }
                        timestamp = Some(parse_t(v, &format!("{k}="))?);
                    } else if k == key {
                        signatures.push(decode(v, &format!("{key}="))?);
                    }
                    // Other schemes are ignored so a sender can add one without breaking
                    // receivers.
                }
                if let Some(k) = t_key
                    && timestamp.is_none()
                {
                    return Err(malformed(format!("no {k}= entry")));
                }
                if signatures.is_empty() {
                    return Err(malformed(format!("no {key}= entry")));
                }
            }
            None => signatures.push(decode(value, &self.header)?),
        }
        if let TimestampSource::Header(h) = &self.timestamp {
            let v = header(h)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| SignatureError::MissingHeader(h.clone()))?;
            timestamp = Some(parse_t(v.trim(), h)?);
        }
        Ok((timestamp, signatures))
    }
}

/// Signs `body` at unix time `t` in intake's scheme: the header value `t=<t>,v1=<hex>`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    sign_all(&[secret], t, body)
}

/// Signs `body` with every secret (a rotation: old and new) in intake's scheme, one `v1=`
/// entry per secret, in the order given: `t=<t>,v1=<hex>,v1=<hex>`.
pub fn sign_all(secrets: &[&[u8]], t: i64, body: &[u8]) -> String {
    Scheme::intake().sign(secrets, t, body).swap_remove(0).1
}

/// Verifies intake's signature header against the raw `body` (see [`Scheme::verify`]).
///
/// # Errors
/// As [`Scheme::verify`].
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[&[u8]],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    Scheme::intake()
        .verify(|_| Some(header), body, secrets, now, tolerance_secs)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"event_id":"e1","seq":3}"#;

    /// The header lookup of a request with these headers (names without regard to case).
    fn headers<'a>(list: &'a [(String, String)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| {
            list.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn one(name: &str, value: &str) -> Vec<(String, String)> {
        vec![(name.to_owned(), value.to_owned())]
    }

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
    fn github_docs_vector() {
        // GitHub's "Testing the webhook payload validation": secret "It's a Secret to
        // Everybody", payload "Hello, World!".
        let s = Scheme::preset("github").unwrap();
        let h = one(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        );
        let ok = s.verify(
            headers(&h),
            b"Hello, World!",
            &[b"It's a Secret to Everybody"],
            0,
            0,
        );
        assert_eq!(ok, Ok(Verified { timestamp: None }));
        assert_eq!(
            s.sign(&[b"It's a Secret to Everybody"], 0, b"Hello, World!"),
            {
                let mut h = h.clone();
                h[0].0 = "X-Hub-Signature-256".into();
                h
            }
        );
        assert_eq!(
            s.verify(
                headers(&h),
                b"Hello, World?",
                &[b"It's a Secret to Everybody"],
                0,
                0
            ),
            Err(SignatureError::BadSignature)
        );
        // The prefix is required.
        let bare = one(
            "X-Hub-Signature-256",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        );
        let err = s
            .verify(headers(&bare), b"Hello, World!", &[b"x"], 0, 0)
            .unwrap_err();
        assert!(
            err.to_string().contains("does not start with `sha256=`"),
            "{err}"
        );
    }

    #[test]
    fn slack_docs_vector() {
        // Slack's "Verifying requests from Slack" walk-through.
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let secret: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
        let s = Scheme::preset("slack").unwrap();
        let h = vec![
            (
                "X-Slack-Signature".to_owned(),
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503".to_owned(),
            ),
            (
                "X-Slack-Request-Timestamp".to_owned(),
                "1531420618".to_owned(),
            ),
        ];
        assert_eq!(
            s.verify(
                headers(&h),
                body.as_bytes(),
                &[secret],
                1_531_420_618 + 300,
                300
            ),
            Ok(Verified {
                timestamp: Some(1_531_420_618)
            })
        );
        assert_eq!(s.sign(&[secret], 1_531_420_618, body.as_bytes()), h);
        assert!(matches!(
            s.verify(
                headers(&h),
                body.as_bytes(),
                &[secret],
                1_531_420_618 + 301,
                300
            ),
            Err(SignatureError::StaleTimestamp { age_secs: 301, .. })
        ));
        // Another timestamp header: the signature no longer matches.
        let mut moved = h.clone();
        moved[1].1 = "1531420619".into();
        assert_eq!(
            s.verify(
                headers(&moved),
                body.as_bytes(),
                &[secret],
                1_531_420_618,
                300
            ),
            Err(SignatureError::BadSignature)
        );
        let err = s
            .verify(headers(&h[..1]), body.as_bytes(), &[secret], 0, 300)
            .unwrap_err();
        assert_eq!(
            err,
            SignatureError::MissingHeader("X-Slack-Request-Timestamp".into())
        );
    }

    #[test]
    fn stripe_and_shopify_match_an_independent_hmac() {
        // Stripe: HMAC-SHA256 hex of "{t}.{body}"; Shopify: HMAC-SHA256 base64 of the body.
        // Both computed with openssl:
        // printf '1700000000.{"event_id":"e1","seq":3}' | openssl dgst -sha256 -hmac whsec_test
        // printf '{"event_id":"e1","seq":3}' | openssl dgst -sha256 -hmac shpss_test -binary | base64
        let stripe = Scheme::preset("stripe").unwrap();
        let h = one(
            "Stripe-Signature",
            "t=1700000000,v1=1b0e0d4f4e4e5a4b0f9b0b4b8e8fb7c4f1a30c5e6a0f1a0b2c3d4e5f60718293,v1=a4d5ae7b36a61f3a9b43d60d2e3c99d8a9d7e63ea1b1d6e5f7e2bb8c0fd0e0a7,v0=00",
        );
        // (The two v1 values above are not genuine: a rotation that lost both secrets.)
        assert_eq!(
            stripe.verify(headers(&h), BODY, &[b"whsec_test"], 1_700_000_000, 300),
            Err(SignatureError::BadSignature)
        );
        let signed = stripe.sign(&[b"whsec_test"], 1_700_000_000, BODY);
        assert_eq!(signed[0].0, "Stripe-Signature");
        assert_eq!(signed[0].1, format!("t=1700000000,v1={}", STRIPE_VECTOR));
        assert!(
            stripe
                .verify(headers(&signed), BODY, &[b"whsec_test"], 1_700_000_000, 300)
                .is_ok()
        );
        let shopify = Scheme::preset("shopify").unwrap();
        let signed = shopify.sign(&[b"shpss_test"], 0, BODY);
        assert_eq!(
            signed,
            one("X-Shopify-Hmac-Sha256", SHOPIFY_VECTOR),
            "base64 of the raw MAC"
        );
        assert_eq!(
            shopify.verify(headers(&signed), BODY, &[b"old", b"shpss_test"], 0, 0),
            Ok(Verified { timestamp: None })
        );
        let hex_instead = one("X-Shopify-Hmac-Sha256", &"ab".repeat(32));
        assert!(matches!(
            shopify.verify(headers(&hex_instead), BODY, &[b"shpss_test"], 0, 0),
            Err(SignatureError::MalformedHeader(_))
        ));
    }

    const STRIPE_VECTOR: &str = "90d5c8a1464cc19deed896f527d37e08a5e465264eb6c5f86d79b2d3cce85f53";
    const SHOPIFY_VECTOR: &str = "WgQupZ5E7xLrL33cSe2Jd4aEjBq3CrKnlVX/xjoHWy0=";

    #[test]
    fn round_trip_verifies() {
        let header = sign(b"s3cret", 1000, BODY);
        assert_eq!(verify(&header, BODY, &[b"s3cret"], 1000, 300), Ok(()));
        assert_eq!(verify(&header, BODY, &[b"s3cret"], 1300, 300), Ok(()));
        assert_eq!(verify(&header, BODY, &[b"s3cret"], 700, 300), Ok(()));
    }

    #[test]
    fn sha512_and_custom_templates() {
        let s = Scheme {
            header: "X-Sig".into(),
            algorithm: Algorithm::Sha512,
            encoding: Encoding::Base64,
            signature_key: None,
            prefix: "sha512=".into(),
            timestamp: TimestampSource::Header("X-Ts".into()),
            payload: Template::parse("{timestamp}\n{body}\n").unwrap(),
        };
        let signed = s.sign(&[b"k"], 42, BODY);
        assert_eq!(
            s.verify(headers(&signed), BODY, &[b"k"], 42, 0)
                .unwrap()
                .timestamp,
            Some(42)
        );
        assert!(Template::parse("{timestamp}").is_err());
        assert!(Template::parse("{body}{body}").is_err());
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
            Err(SignatureError::MissingHeader(HEADER.into()))
        );
        assert!(matches!(
            verify("garbage", BODY, &[b"k"], 1000, 300),
            Err(SignatureError::MalformedHeader(_))
        ));
        assert!(matches!(
            verify("t=abc,v1=00", BODY, &[b"k"], 1000, 300),
            Err(SignatureError::MalformedHeader(_))
        ));
        assert_eq!(
            verify("t=1000", BODY, &[b"k"], 1000, 300),
            Err(SignatureError::MalformedHeader("no v1= entry".into()))
        );
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
        for name in PRESETS {
            let s = Scheme::preset(name).unwrap();
            let signed = s.sign(&[b"hunter2"], 1, BODY);
            let err = s.verify(headers(&signed), BODY, &[b"x"], 1, 5).unwrap_err();
            assert_eq!(err, SignatureError::BadSignature, "{name}");
            assert!(!err.to_string().contains("hunter2"));
            assert!(!format!("{err:?}").contains("hunter2"));
        }
    }
}
