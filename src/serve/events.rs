//! Event mapping: what a verified webhook means, from the source's `webhook` settings — its
//! event id, the entity it is about (the landing key), the stream, the type (an upsert, a
//! delete, or a type to acknowledge and ignore), the version dedup orders by, and, for an
//! upsert, where the record is.
//!
//! Fields come from JSON pointers into the body or from request headers
//! ([`FieldSpec`]), so Stripe's `customer.updated` (`/data/object`), GitHub's `issues` events
//! (type from `X-GitHub-Event` and `/action`), Shopify's topics (`X-Shopify-Topic`) and
//! intake's own envelope all map without a translation step. An event that does not map is
//! refused at the door with the reason (nothing lands); the mapping travels with the landed
//! event in its headers (`intake.op`, `intake.stream`, `intake.seq`, the key), so validate
//! reads it from there.

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::ApiError;
use crate::config::{ConfigError, FieldSpec, SourceConfig, TimeFormat, WebhookConfig};
use crate::validate::split::{parse_version, parse_version_as};

/// What an event does (the `intake.op` it lands with).
pub use crate::contract::Op;

/// A mapped event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// To land.
    Land(Event),
    /// A type configured as `ignore`: acknowledged, not landed.
    Ignored {
        /// The event's type.
        event_type: String,
    },
}

/// An event to land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event id.
    pub event_id: String,
    /// The entity id: the landing key.
    pub entity_id: String,
    /// The stream.
    pub stream: String,
    /// The type, as the event gave it.
    pub event_type: String,
    /// Upsert or delete.
    pub op: Op,
    /// The version (an integer as is; a time as microseconds since the epoch).
    pub version: i64,
}

enum StreamFrom {
    Fixed(String),
    Pointer(String),
}

/// A source's compiled mapping.
pub struct EventMap {
    event_id: FieldSpec,
    entity_id: FieldSpec,
    version: FieldSpec,
    version_format: Option<TimeFormat>,
    stream: StreamFrom,
    event_type: Vec<FieldSpec>,
    upsert: Vec<String>,
    delete: Vec<String>,
    ignore: Vec<String>,
    record: String,
    streams: Vec<String>,
    challenge: Option<crate::config::ChallengeConfig>,
}

fn bad(code: &'static str, message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, code, message)
}

/// How well `pattern` matches `t`: exact beats any wildcard, a longer wildcard prefix beats a
/// shorter one; `None` when it does not match.
fn score(pattern: &str, t: &str) -> Option<usize> {
    match pattern.strip_suffix('*') {
        Some(prefix) => t.starts_with(prefix).then_some(prefix.len()),
        None => (pattern == t).then_some(usize::MAX),
    }
}

impl EventMap {
    /// Compiles a source's mapping (the config was validated; errors name the field).
    ///
    /// # Errors
    /// A field that does not parse.
    pub fn new(src: &SourceConfig, w: &WebhookConfig, at: &str) -> Result<Self, ConfigError> {
        let spec = |f: &str, s: &str| FieldSpec::parse(&format!("{at}.{f}"), s);
        Ok(Self {
            event_id: spec("event_id", &w.event_id)?,
            entity_id: spec("entity_id", &w.entity_id)?,
            version: spec("sequence", &w.sequence)?,
            version_format: w.version_format.clone(),
            stream: match &w.stream {
                Some(s) => StreamFrom::Fixed(s.clone()),
                None => StreamFrom::Pointer(w.stream_pointer.clone()),
            },
            event_type: w
                .event_type
                .as_slice()
                .iter()
                .enumerate()
                .map(|(i, s)| spec(&format!("event_type[{i}]"), s))
                .collect::<Result<_, _>>()?,
            upsert: w.upsert.clone(),
            delete: w.delete.clone(),
            ignore: w.ignore.clone(),
            record: w.record.clone(),
            streams: src.streams.iter().map(|s| s.name.clone()).collect(),
            challenge: w.handshake(),
        })
    }

    /// Whether this source answers a URL-verification handshake.
    pub const fn handshakes(&self) -> bool {
        self.challenge.is_some()
    }

    /// The challenge to echo when `event` is a URL-verification handshake (Slack's
    /// `url_verification`); `None` for any other event.
    pub fn challenge<'e>(&self, event: &'e Value) -> Option<&'e str> {
        let c = self.challenge.as_ref()?;
        (event.pointer(&c.type_pointer)?.as_str()? == c.event_type)
            .then(|| event.pointer(&c.challenge)?.as_str())
            .flatten()
    }

    /// The text of a field: a non-empty string or an integer in the body, or a header.
    fn text(spec: &FieldSpec, event: &Value, headers: &HeaderMap) -> Option<String> {
        match spec {
            FieldSpec::Pointer(p) => match event.pointer(p)? {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                _ => None,
            },
            FieldSpec::Header(h) => headers
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
        }
    }

    fn version(&self, event: &Value, headers: &HeaderMap) -> Result<i64, String> {
        let raw = match &self.version {
            FieldSpec::Pointer(p) => event.pointer(p).cloned(),
            FieldSpec::Header(h) => {
                headers
                    .get(h.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(|v| match v.trim().parse::<i64>() {
                        Ok(n) if self.version_format.is_none() => Value::from(n),
                        _ => Value::String(v.trim().to_owned()),
                    })
            }
        }
        .ok_or_else(|| "is absent".to_owned())?;
        let raw = raw.to_string();
        match &self.version_format {
            Some(f) => parse_version_as(&raw, f),
            None => parse_version(&raw),
        }
    }

    /// Maps a parsed event.
    ///
    /// # Errors
    /// 400 `missing_field` (an id, the stream, the record), `unknown_stream`, `bad_version`;
    /// 422 `unknown_event_type` for a type no list names.
    pub fn map(&self, event: &Value, headers: &HeaderMap) -> Result<Mapped, ApiError> {
        let parts: Vec<String> = self
            .event_type
            .iter()
            .filter_map(|s| Self::text(s, event, headers))
            .collect();
        let event_type = parts.join(".");
        let shown = || {
            self.event_type
                .iter()
                .map(FieldSpec::text)
                .collect::<Vec<_>>()
                .join(" + ")
        };
        if event_type.is_empty() {
            return Err(bad(
                "missing_field",
                format!("the event has no type at {}", shown()),
            ));
        }
        let best = |list: &[String]| list.iter().filter_map(|p| score(p, &event_type)).max();
        let ranked = [
            (best(&self.upsert), Some(Op::Upsert)),
            (best(&self.delete), Some(Op::Delete)),
            (best(&self.ignore), None),
        ];
        let Some((_, op)) = ranked
            .into_iter()
            .filter(|(s, _)| s.is_some())
            .max_by_key(|(s, _)| *s)
        else {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_event_type",
                format!(
                    "event type `{event_type}` (from {}) is in none of webhook.upsert, webhook.delete, webhook.ignore",
                    shown()
                ),
            ));
        };
        let Some(op) = op else {
            return Ok(Mapped::Ignored { event_type });
        };
        let field = |name: &str, spec: &FieldSpec| {
            Self::text(spec, event, headers).ok_or_else(|| {
                bad(
                    "missing_field",
                    format!("the event has no {name} at {}", spec.text()),
                )
            })
        };
        let entity_id = field("entity id", &self.entity_id)?;
        let event_id = field("event id", &self.event_id)?;
        let stream = match &self.stream {
            StreamFrom::Fixed(s) => s.clone(),
            StreamFrom::Pointer(p) => field("stream", &FieldSpec::Pointer(p.clone()))?,
        };
        if !self.streams.contains(&stream) {
            return Err(bad(
                "unknown_stream",
                format!("the source has no stream `{stream}`"),
            ));
        }
        let version = self.version(event, headers).map_err(|why| {
            bad(
                "bad_version",
                format!("the event's version at {} {why}", self.version.text()),
            )
        })?;
        if op == Op::Upsert && !event.pointer(&self.record).is_some_and(Value::is_object) {
            return Err(bad(
                "missing_field",
                format!(
                    "the {event_type} event has no record object at `{}`",
                    self.record
                ),
            ));
        }
        Ok(Mapped::Land(Event {
            event_id,
            entity_id,
            stream,
            event_type,
            op,
            version,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn map_of(webhook: &str) -> EventMap {
        let cfg = Config::from_toml(&format!(
            "[kafka]\nbrokers = \"x:9092\"\n[[sources]]\nname = \"s\"\nwebhook = {{ secrets = [\"k\"], {webhook} }}\n[[sources.streams]]\nname = \"customers\"\nprimary_key = \"/id\"\n"
        ))
        .unwrap();
        let s = &cfg.sources[0];
        EventMap::new(s, s.webhook.as_ref().unwrap(), "sources[0].webhook").unwrap()
    }

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn refused(r: Result<Mapped, ApiError>) -> (u16, &'static str, String) {
        match r {
            Ok(m) => panic!("mapped: {m:?}"),
            Err(ApiError(s, c, m)) => (s.as_u16(), c, m),
        }
    }

    #[test]
    fn stripe_events_map_by_pointer_with_epoch_versions() {
        let m = map_of(
            r#"event_id = "/id", entity_id = "/data/object/id", sequence = "/created", version_format = "epoch_s", stream = "customers", upsert = ["customer.created", "customer.updated"], delete = ["customer.deleted"], ignore = ["invoice.*"], record = "/data/object""#,
        );
        let ev = serde_json::json!({"id": "evt_1", "type": "customer.updated", "created": 1_700_000_000,
            "data": {"object": {"id": "cus_1", "object": "customer"}}});
        assert_eq!(
            m.map(&ev, &HeaderMap::new()).unwrap(),
            Mapped::Land(Event {
                event_id: "evt_1".into(),
                entity_id: "cus_1".into(),
                stream: "customers".into(),
                event_type: "customer.updated".into(),
                op: Op::Upsert,
                version: 1_700_000_000_000_000,
            })
        );
        let del = serde_json::json!({"id": "evt_2", "type": "customer.deleted", "created": 1_700_000_001,
            "data": {"object": {"id": "cus_1", "deleted": true}}});
        let Mapped::Land(e) = m.map(&del, &HeaderMap::new()).unwrap() else {
            panic!("ignored")
        };
        assert_eq!((e.op, e.entity_id.as_str()), (Op::Delete, "cus_1"));
        let inv = serde_json::json!({"id": "evt_3", "type": "invoice.paid"});
        assert_eq!(
            m.map(&inv, &HeaderMap::new()).unwrap(),
            Mapped::Ignored {
                event_type: "invoice.paid".into()
            }
        );
        let (s, code, msg) = refused(m.map(
            &serde_json::json!({"id": "e", "type": "charge.succeeded"}),
            &HeaderMap::new(),
        ));
        assert_eq!((s, code), (422, "unknown_event_type"));
        assert!(msg.contains("`charge.succeeded`"), "{msg}");
        let (s, code, msg) = refused(m.map(
            &serde_json::json!({"id": "e", "type": "customer.updated", "created": "soon", "data": {"object": {"id": "c"}}}),
            &HeaderMap::new(),
        ));
        assert_eq!((s, code), (400, "bad_version"));
        assert!(msg.contains("/created"), "{msg}");
        let (_, code, msg) = refused(m.map(
            &serde_json::json!({"id": "e", "type": "customer.updated", "created": 1, "data": {"object": "cus_1"}}),
            &HeaderMap::new(),
        ));
        assert_eq!(code, "missing_field");
        assert!(msg.contains("no entity id at /data/object/id"), "{msg}");
    }

    #[test]
    fn github_types_join_a_header_and_a_pointer() {
        let m = map_of(
            r#"event_id = "header:X-GitHub-Delivery", entity_id = "/issue/id", sequence = "/issue/updated_at", stream = "customers", event_type = ["header:X-GitHub-Event", "/action"], upsert = ["issues.opened", "issues.edited"], delete = ["issues.deleted"], ignore = ["ping"], record = "/issue""#,
        );
        let h = headers(&[("x-github-event", "issues"), ("x-github-delivery", "d-1")]);
        let ev = serde_json::json!({"action": "deleted", "issue": {"id": 7, "updated_at": "2026-01-01T00:00:00Z"}});
        let Mapped::Land(e) = m.map(&ev, &h).unwrap() else {
            panic!("ignored")
        };
        assert_eq!(
            (e.op, e.entity_id.as_str(), e.event_id.as_str(), e.version),
            (Op::Delete, "7", "d-1", 1_767_225_600_000_000)
        );
        let ping = headers(&[("x-github-event", "ping")]);
        assert_eq!(
            m.map(&serde_json::json!({"zen": "hi"}), &ping).unwrap(),
            Mapped::Ignored {
                event_type: "ping".into()
            }
        );
        // Exact beats wildcard, a longer wildcard a shorter one.
        assert_eq!(score("issues.*", "issues.opened"), Some(7));
        assert_eq!(score("issues.opened", "issues.opened"), Some(usize::MAX));
        assert_eq!(score("pull_request.*", "issues.opened"), None);
    }
}
