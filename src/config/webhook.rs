//! `sources[].webhook`: how `POST /v1/webhooks/<source>` verifies a delivery's signature and
//! maps the event onto a record: an upsert or a delete of a key, at a version.
//!
//! The signature scheme is data ([`crate::signing::Scheme`]): a `preset` (`intake`, `stripe`,
//! `github`, `shopify`, `slack`) with any field overridden. The event's fields come from
//! JSON pointers into the body or from request headers ([`FieldSpec`]: `"/data/object/id"`,
//! `"header:X-GitHub-Delivery"`), so a provider's own event format lands without a
//! translation step.

use std::time::Duration;

use serde::Deserialize;

use super::source::check_pointer;
use super::timefmt::TimeFormat;
use super::{ConfigError, SecretRef, invalid};
use crate::signing::{Algorithm, Encoding, Scheme, Template, TimestampSource};

/// Webhook verification and mapping for a push source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Signing secrets: one, or two during a rotation (both accepted).
    pub secrets: Vec<SecretRef>,
    /// The signature scheme (default: intake's own, `X-Intake-Signature`).
    #[serde(default)]
    pub signature: WebhookSignature,
    /// Shortcut for `signature.header` (kept for configs written before presets existed).
    pub signature_header: Option<String>,
    /// Where the event id is (pointer or `header:<name>`).
    #[serde(default = "default_event_id")]
    pub event_id: String,
    /// Where the entity id is: the landing key and, for a delete, the key deleted.
    #[serde(default = "default_entity_id")]
    pub entity_id: String,
    /// Where the version is (the per-entity sequence number or the event's time): what dedup
    /// orders by.
    #[serde(default = "default_seq")]
    pub sequence: String,
    /// The format of the version when it is a time (`rfc3339`, `epoch_s`, `epoch_ms`, a
    /// pattern): it is kept as microseconds since the epoch, like a stream's timestamp
    /// versions. Absent: an integer as is, or an RFC 3339 string.
    pub version_format: Option<TimeFormat>,
    /// Where the stream name is inside the event (unless `stream` names it).
    #[serde(default = "default_stream_pointer")]
    pub stream_pointer: String,
    /// The one stream every event of this source belongs to (instead of `stream_pointer`).
    pub stream: Option<String>,
    /// Where the event type is: one field, or several whose values are joined with `.`
    /// (`["header:X-GitHub-Event", "/action"]` gives `issues.opened`; absent parts are left
    /// out, so GitHub's `ping` is `ping`).
    #[serde(default = "default_event_type")]
    pub event_type: OneOrMany,
    /// Event types that create or update the record (a trailing `*` matches any rest).
    #[serde(default = "default_upsert")]
    pub upsert: Vec<String>,
    /// Event types that delete the entity.
    #[serde(default = "default_delete")]
    pub delete: Vec<String>,
    /// Event types acknowledged (200 `ignored`) and not landed. Any other type is refused
    /// (422 `unknown_event_type`).
    #[serde(default)]
    pub ignore: Vec<String>,
    /// JSON pointer of the record inside an upsert event (`""`: the whole body).
    #[serde(default = "default_record")]
    pub record: String,
    /// A URL-verification handshake: a signed event whose `type_pointer` holds `event_type`
    /// is answered 200 `{"challenge": <the value at challenge>}` and lands nothing. Slack's
    /// Events API sends `{"type": "url_verification", "challenge": "..."}` when an app's
    /// request URL is set. Default: on with the `slack` preset (`challenge = {}`), off
    /// otherwise.
    pub challenge: Option<ChallengeConfig>,
}

/// `sources[].webhook.challenge`: a provider's URL-verification handshake.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChallengeConfig {
    /// Where the body says what kind of request it is.
    #[serde(default = "default_challenge_type_pointer")]
    pub type_pointer: String,
    /// The value there that makes it a handshake.
    #[serde(default = "default_challenge_type")]
    pub event_type: String,
    /// Where the challenge to echo is (a string).
    #[serde(default = "default_challenge")]
    pub challenge: String,
}

impl Default for ChallengeConfig {
    fn default() -> Self {
        Self {
            type_pointer: default_challenge_type_pointer(),
            event_type: default_challenge_type(),
            challenge: default_challenge(),
        }
    }
}

string_defaults! {
    fn default_challenge_type_pointer = "/type";
    fn default_challenge_type = "url_verification";
    fn default_challenge = "/challenge";
}

/// One field source, or several.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several, in order.
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Self::One(s) => std::slice::from_ref(s),
            Self::Many(v) => v,
        }
    }
}

/// `sources[].webhook.signature`: a preset and overrides. Every field is optional (absent: the
/// preset's value, or `serve.webhook_tolerance` for `tolerance`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSignature {
    /// The provider's documented scheme (default `intake`).
    pub preset: WebhookPreset,
    /// The header that carries the signature.
    pub header: Option<String>,
    /// `sha256` or `sha512`.
    pub algorithm: Option<Algorithm>,
    /// `hex` or `base64`.
    pub encoding: Option<Encoding>,
    /// The key of the signature entries when the header is a `key=value` list (`v1`); `""`:
    /// the whole value is the signature.
    pub signature_key: Option<String>,
    /// What precedes a signature (`sha256=`).
    pub prefix: Option<String>,
    /// Where the signed timestamp is: `entry:<key>` of the signature header,
    /// `header:<name>`, or `none`.
    pub timestamp: Option<String>,
    /// The signed payload: `{body}` once, `{timestamp}` where the scheme puts it.
    pub payload: Option<String>,
    /// How far a signed timestamp may be from now (default `serve.webhook_tolerance`).
    #[serde(with = "humantime_serde")]
    pub tolerance: Option<Duration>,
}

/// The signature presets.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookPreset {
    /// `X-Intake-Signature: t=<unix>,v1=<hex>`.
    #[default]
    Intake,
    /// `Stripe-Signature: t=<unix>,v1=<hex>`.
    Stripe,
    /// `X-Hub-Signature-256: sha256=<hex>` of the body.
    Github,
    /// `X-Shopify-Hmac-Sha256: <base64>` of the body.
    Shopify,
    /// `X-Slack-Signature: v0=<hex>` of `v0:<X-Slack-Request-Timestamp>:<body>`.
    Slack,
}

impl WebhookPreset {
    /// Its name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Intake => "intake",
            Self::Stripe => "stripe",
            Self::Github => "github",
            Self::Shopify => "shopify",
            Self::Slack => "slack",
        }
    }
}

/// Where one field of an event comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSpec {
    /// A JSON pointer into the body.
    Pointer(String),
    /// A request header.
    Header(String),
}

impl FieldSpec {
    /// Parses `"/a/b"`, `""` or `"header:<name>"`.
    ///
    /// # Errors
    /// A config error naming `field`.
    pub fn parse(field: &str, s: &str) -> Result<Self, ConfigError> {
        if let Some(h) = s.strip_prefix("header:") {
            check_header_name(field, h)?;
            return Ok(Self::Header(h.to_owned()));
        }
        check_pointer(field, s).map_err(|_| {
            invalid(
                field,
                format!(
                    "`{s}` is neither a JSON pointer (empty or starting with '/') nor header:<name>"
                ),
            )
        })?;
        Ok(Self::Pointer(s.to_owned()))
    }

    /// As configured.
    pub fn text(&self) -> String {
        match self {
            Self::Pointer(p) => p.clone(),
            Self::Header(h) => format!("header:{h}"),
        }
    }
}

fn check_header_name(field: &str, h: &str) -> Result<(), ConfigError> {
    if h.is_empty() || reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
        return Err(invalid(field, format!("`{h}` is not a valid header name")));
    }
    Ok(())
}

string_defaults! {
    fn default_event_id = "/event_id";
    fn default_entity_id = "/entity_id";
    fn default_seq = "/seq";
    fn default_stream_pointer = "/stream";
    fn default_record = "/data";
}
fn default_event_type() -> OneOrMany {
    OneOrMany::One("/type".into())
}
fn default_upsert() -> Vec<String> {
    vec!["created".into(), "updated".into()]
}
fn default_delete() -> Vec<String> {
    vec!["deleted".into()]
}

impl WebhookConfig {
    /// The URL-verification handshake in force: the configured one, else Slack's with the
    /// `slack` preset.
    pub fn handshake(&self) -> Option<ChallengeConfig> {
        self.challenge.clone().or_else(|| {
            (self.signature.preset == WebhookPreset::Slack).then(ChallengeConfig::default)
        })
    }

    /// The signature scheme: the preset with the overrides applied.
    ///
    /// # Errors
    /// A field that does not fit, named under `at` (`sources[0].webhook`).
    pub fn scheme(&self, at: &str) -> Result<Scheme, ConfigError> {
        let sig = &self.signature;
        let at = format!("{at}.signature");
        let mut s = Scheme::preset(sig.preset.as_str()).expect("every preset exists");
        if let (Some(_), Some(_)) = (&self.signature_header, &sig.header) {
            return Err(invalid(
                format!("{at}.header"),
                "set either signature.header or signature_header, not both",
            ));
        }
        if let Some(h) = sig.header.as_ref().or(self.signature_header.as_ref()) {
            check_header_name(&format!("{at}.header"), h)?;
            s.header = h.clone();
        }
        if let Some(a) = sig.algorithm {
            s.algorithm = a;
        }
        if let Some(e) = sig.encoding {
            s.encoding = e;
        }
        if let Some(k) = &sig.signature_key {
            s.signature_key = (!k.is_empty()).then(|| k.clone());
        }
        if let Some(p) = &sig.prefix {
            s.prefix = p.clone();
        }
        if let Some(t) = &sig.timestamp {
            let field = format!("{at}.timestamp");
            s.timestamp = if t == "none" {
                TimestampSource::None
            } else if let Some(k) = t.strip_prefix("entry:").filter(|k| !k.is_empty()) {
                TimestampSource::Entry(k.to_owned())
            } else if let Some(h) = t.strip_prefix("header:") {
                check_header_name(&field, h)?;
                TimestampSource::Header(h.to_owned())
            } else {
                return Err(invalid(
                    field,
                    format!("`{t}` is not entry:<key>, header:<name> or none"),
                ));
            };
        }
        if let Some(p) = &sig.payload {
            s.payload = Template::parse(p).map_err(|e| invalid(format!("{at}.payload"), e))?;
        }
        if matches!(s.timestamp, TimestampSource::Entry(_)) && s.signature_key.is_none() {
            return Err(invalid(
                format!("{at}.timestamp"),
                "an entry:<key> timestamp needs a key=value header (set signature_key)",
            ));
        }
        // The payload signs `{timestamp}` exactly when the scheme has a timestamp.
        let signs = s.payload.has_timestamp();
        if signs == (s.timestamp == TimestampSource::None) {
            let why = if signs {
                "signs {timestamp} but the scheme has none (set timestamp)"
            } else {
                "does not sign the timestamp, so it could be replayed with a fresh one; put {timestamp} in it or set timestamp = \"none\""
            };
            return Err(invalid(
                format!("{at}.payload"),
                format!("`{}` {why}", s.payload.text()),
            ));
        }
        Ok(s)
    }

    /// Cross-field checks, naming fields under `at` (`sources[0].webhook`).
    pub(crate) fn check(&self, at: &str) -> Result<(), ConfigError> {
        if self.secrets.is_empty() || self.secrets.len() > 2 {
            return Err(invalid(
                format!("{at}.secrets"),
                "one secret, or two during a rotation",
            ));
        }
        self.scheme(at)?;
        if let Some(t) = self.signature.tolerance
            && t.is_zero()
        {
            return Err(invalid(
                format!("{at}.signature.tolerance"),
                "must be longer than zero",
            ));
        }
        for (f, p) in [
            ("event_id", &self.event_id),
            ("entity_id", &self.entity_id),
            ("sequence", &self.sequence),
        ] {
            FieldSpec::parse(&format!("{at}.{f}"), p)?;
        }
        if self.event_type.as_slice().is_empty() {
            return Err(invalid(
                format!("{at}.event_type"),
                "name at least one field",
            ));
        }
        for (i, p) in self.event_type.as_slice().iter().enumerate() {
            FieldSpec::parse(&format!("{at}.event_type[{i}]"), p)?;
        }
        check_pointer(&format!("{at}.stream_pointer"), &self.stream_pointer)?;
        check_pointer(&format!("{at}.record"), &self.record)?;
        if let Some(c) = &self.challenge {
            check_pointer(&format!("{at}.challenge.type_pointer"), &c.type_pointer)?;
            check_pointer(&format!("{at}.challenge.challenge"), &c.challenge)?;
            if c.event_type.is_empty() {
                return Err(invalid(
                    format!("{at}.challenge.event_type"),
                    "must not be empty",
                ));
            }
        }
        if let Some(s) = &self.stream {
            super::check_name(&format!("{at}.stream"), s)?;
        }
        let mut seen = std::collections::BTreeMap::new();
        for (list, types) in [
            ("upsert", &self.upsert),
            ("delete", &self.delete),
            ("ignore", &self.ignore),
        ] {
            for t in types {
                if t.is_empty() {
                    return Err(invalid(format!("{at}.{list}"), "an empty event type"));
                }
                if let Some(other) = seen.insert(t.as_str(), list) {
                    return Err(invalid(
                        format!("{at}.{list}"),
                        format!("`{t}` is also in {other}"),
                    ));
                }
            }
        }
        if self.upsert.is_empty() && self.delete.is_empty() {
            return Err(invalid(
                format!("{at}.upsert"),
                "name the event types that upsert or delete records",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(extra: &str) -> Result<Scheme, String> {
        let w: WebhookConfig =
            toml::from_str(&format!("secrets = [\"s\"]\n{extra}")).map_err(|e| e.to_string())?;
        w.check("sources[0].webhook").map_err(|e| e.to_string())?;
        w.scheme("sources[0].webhook").map_err(|e| e.to_string())
    }

    #[test]
    fn presets_and_overrides() {
        assert_eq!(hook("").unwrap(), Scheme::intake());
        assert_eq!(
            hook("signature = { preset = \"github\" }").unwrap(),
            Scheme::preset("github").unwrap()
        );
        let s =
            hook("signature = { preset = \"stripe\", header = \"X-Sig\", tolerance = \"10m\" }")
                .unwrap();
        assert_eq!(s.header, "X-Sig");
        assert_eq!(s.signature_key.as_deref(), Some("v1"));
        let s = hook("signature_header = \"X-Old\"").unwrap();
        assert_eq!(s.header, "X-Old");
        let s = hook(
            "signature = { preset = \"github\", algorithm = \"sha512\", prefix = \"sha512=\", encoding = \"base64\" }",
        )
        .unwrap();
        assert_eq!(
            (s.algorithm, s.encoding, s.prefix.as_str()),
            (Algorithm::Sha512, Encoding::Base64, "sha512=")
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (extra, field, why) in [
            (
                "signature = { preset = \"github\", payload = \"{timestamp}.{body}\" }",
                "sources[0].webhook.signature.payload",
                "has none",
            ),
            (
                "signature = { timestamp = \"none\" }",
                "sources[0].webhook.signature.payload",
                "has none",
            ),
            (
                "signature = { payload = \"{body}\" }",
                "sources[0].webhook.signature.payload",
                "could be replayed",
            ),
            (
                "signature = { preset = \"shopify\", timestamp = \"entry:t\", payload = \"{timestamp}{body}\" }",
                "sources[0].webhook.signature.timestamp",
                "set signature_key",
            ),
            (
                "signature = { timestamp = \"later\" }",
                "sources[0].webhook.signature.timestamp",
                "not entry",
            ),
            (
                "signature = { payload = \"{timestamp}\" }",
                "sources[0].webhook.signature.payload",
                "no {body}",
            ),
            (
                "signature = { header = \"bad header\" }",
                "sources[0].webhook.signature.header",
                "not a valid header name",
            ),
            (
                "entity_id = \"data.id\"",
                "sources[0].webhook.entity_id",
                "neither a JSON pointer",
            ),
            (
                "event_type = [\"header:\", \"/action\"]",
                "sources[0].webhook.event_type[0]",
                "not a valid header name",
            ),
            (
                "upsert = [\"a\"]\ndelete = [\"a\"]",
                "sources[0].webhook.delete",
                "also in upsert",
            ),
        ] {
            let err = hook(extra).unwrap_err();
            assert!(err.contains(field) && err.contains(why), "{extra}: {err}");
        }
        let err = hook("signature = { preset = \"paypal\" }").unwrap_err();
        assert!(err.contains("unknown variant `paypal`"), "{err}");
    }

    #[test]
    fn a_payload_signs_the_timestamp_exactly_when_the_scheme_has_one() {
        assert_eq!(
            hook("signature = { timestamp = \"none\", payload = \"{timestamp}.{body}\" }")
                .unwrap_err(),
            "config field `sources[0].webhook.signature.payload`: `{timestamp}.{body}` signs \
             {timestamp} but the scheme has none (set timestamp)"
        );
        assert_eq!(
            hook("signature = { payload = \"{body}\" }").unwrap_err(),
            "config field `sources[0].webhook.signature.payload`: `{body}` does not sign the \
             timestamp, so it could be replayed with a fresh one; put {timestamp} in it or set \
             timestamp = \"none\""
        );
        let s = hook("signature = { timestamp = \"none\", payload = \"{body}\" }").unwrap();
        assert_eq!(s.timestamp, TimestampSource::None);
    }
}
