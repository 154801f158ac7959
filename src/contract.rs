//! Typed contracts for what one stage writes to a topic and another reads back
//! (`docs/INVARIANTS.md`, Topics and Headers). Each contract has one writer and one reader here,
//! next to the header names of [`crate::headers`], and a round-trip test, so no stage builds or
//! parses these headers by hand:
//!
//! - [`Op`]: what a record does to its key (`intake.op`), on landed webhook events and on
//!   valid and curated records;
//! - [`ValidStamp`]: the stamp of a valid or curated record (`intake.op`, `intake.version`,
//!   `intake.hash`), which dedup's merge orders;
//! - [`SyncMarker`]: a `sync-begin` / `sync-end` marker (`intake.kind`, `intake.sync_id`,
//!   `intake.mode`), written by fetch to landing, copied by validate to every partition of the
//!   valid topic, read by dedup;
//! - [`DeadLetter`]: the `dlq.*` headers every stage puts on what it sends to the DLQ;
//! - [`LandingHeaders`]: the provenance every landed record carries (`intake.kind`, `intake.source`,
//!   `intake.stream`, `intake.fetched_at`, `intake.request`, and a page's `intake.sync_id` and
//!   `intake.stamp`), written by fetch and serve, read by validate;
//! - [`LandedBody`]: a landed (or dead-lettered) body inline, or by claim-check a reference to
//!   it in the blob store (`intake.kind` = `blob-ref`, `intake.blob`);
//! - [`DlqRepeat`]: an entry of `<prefix>.dlq-index` (compacted), written by validate with
//!   each dead letter and each repeat of one it counts instead of writing again, read back by
//!   validate (to restore what it has seen) and by `intake dlq summary`;
//! - [`stream_key`]: `source/stream`, the key of a stream's cursor, of its landed pages and
//!   of its sync markers.

use crate::headers::{self, Headers, Kind};

/// What a record does to its key: `intake.op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Creates or updates the record.
    Upsert,
    /// Deletes it (the record has no value).
    Delete,
}

impl Op {
    /// The header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Upsert => "upsert",
            Self::Delete => "delete",
        }
    }

    /// Parses a header value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "upsert" => Some(Self::Upsert),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

/// `intake.hash` of a delete: it has no content.
pub const DELETE_HASH: &str = "0000000000000000";

/// A content hash as `intake.hash` writes it: 16 lower-case hex digits.
pub fn hash_hex(hash: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    std::array::from_fn(|i| HEX[((hash >> (60 - 4 * i)) & 0xf) as usize])
}

/// Reads an `intake.hash` value: exactly 16 hex digits.
pub fn parse_hash(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// The stamp of a valid or curated record: what it does, at which upstream version, with
/// which content hash (the merge rule orders by version, then delete over upsert, then hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidStamp {
    /// `intake.op`.
    pub op: Op,
    /// `intake.version`. A record of a stream with neither a version pointer nor a page stamp
    /// has none, and dedup refuses it as a contract violation.
    pub version: Option<i64>,
    /// `intake.hash` of the raw record bytes; 0 (written [`DELETE_HASH`]) for a delete.
    pub hash: u64,
}

impl ValidStamp {
    /// A create or update.
    pub const fn upsert(version: Option<i64>, hash: u64) -> Self {
        Self {
            op: Op::Upsert,
            version,
            hash,
        }
    }

    /// A delete at `version`.
    pub const fn delete(version: i64) -> Self {
        Self {
            op: Op::Delete,
            version: Some(version),
            hash: 0,
        }
    }

    /// Whether this is a delete.
    pub const fn is_delete(&self) -> bool {
        matches!(self.op, Op::Delete)
    }

    /// Adds `intake.op`, `intake.version` (when known) and `intake.hash` to `h`.
    #[must_use]
    pub fn write(&self, h: Headers) -> Headers {
        let mut version = itoa::Buffer::new();
        let hash = match self.op {
            Op::Upsert => hash_hex(self.hash),
            Op::Delete => hash_hex(0),
        };
        h.with(headers::OP, self.op.as_str())
            .with_opt(headers::VERSION, self.version.map(|v| version.format(v)))
            .with(headers::HASH, hash)
    }

    /// Reads the stamp of a valid or curated record. A record without a value and without
    /// `intake.op` is a delete (a curated tombstone written before `intake.op` existed); an
    /// upsert needs a value, a version and a hash, a delete a version.
    pub fn read<H: rdkafka::message::Headers>(
        h: Option<&H>,
        has_value: bool,
    ) -> Result<Self, String> {
        let op = match headers::get_str(h, headers::OP) {
            Some(s) => Op::parse(s)
                .ok_or_else(|| format!("{} is {s:?}, not upsert or delete", headers::OP))?,
            None if !has_value => Op::Delete,
            None => return Err(format!("data record without {}", headers::OP)),
        };
        let version = headers::get_str(h, headers::VERSION)
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| format!("{} missing or not a decimal i64", headers::VERSION))?;
        match op {
            Op::Delete => Ok(Self::delete(version)),
            Op::Upsert => {
                if !has_value {
                    return Err("upsert without a value".into());
                }
                let hash = headers::get_str(h, headers::HASH)
                    .and_then(parse_hash)
                    .ok_or_else(|| format!("{} missing or not 16 hex digits", headers::HASH))?;
                Ok(Self::upsert(Some(version), hash))
            }
        }
    }
}

/// A sync marker: where a sync begins or ends in a stream's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncMarker<'a> {
    /// `sync-begin` (true) or `sync-end`.
    pub begin: bool,
    /// `intake.sync_id`.
    pub sync_id: &'a str,
    /// `intake.mode`: `full` (true) or `incremental`.
    pub full: bool,
}

impl<'a> SyncMarker<'a> {
    /// `intake.mode` of a full sync.
    pub const FULL: &'static str = "full";
    /// `intake.mode` of an incremental sync.
    pub const INCREMENTAL: &'static str = "incremental";

    /// Adds `intake.kind`, `intake.sync_id` and `intake.mode` to `h`.
    #[must_use]
    pub fn write(&self, h: Headers) -> Headers {
        let kind = if self.begin {
            Kind::SyncBegin
        } else {
            Kind::SyncEnd
        };
        h.with(headers::KIND, kind.as_str())
            .with(headers::SYNC_ID, self.sync_id)
            .with(
                headers::MODE,
                if self.full {
                    Self::FULL
                } else {
                    Self::INCREMENTAL
                },
            )
    }

    /// Reads a marker: `None` when the record has no `intake.kind` (it is a data record),
    /// an error when it has one that is not a marker's, or a marker without its sync id or
    /// mode.
    pub fn read<H: rdkafka::message::Headers>(h: Option<&'a H>) -> Option<Result<Self, String>> {
        let kind = headers::get(h, headers::KIND)?;
        Some(Self::parse(h, kind))
    }

    fn parse<H: rdkafka::message::Headers>(h: Option<&'a H>, kind: &[u8]) -> Result<Self, String> {
        let begin = match Kind::parse(kind) {
            Some(Kind::SyncBegin) => true,
            Some(Kind::SyncEnd) => false,
            _ => {
                return Err(format!(
                    "unexpected {} `{}`",
                    headers::KIND,
                    String::from_utf8_lossy(kind)
                ));
            }
        };
        let sync_id = headers::get_str(h, headers::SYNC_ID)
            .ok_or_else(|| format!("sync marker without {}", headers::SYNC_ID))?;
        let full = match headers::get_str(h, headers::MODE) {
            Some(Self::FULL) => true,
            Some(Self::INCREMENTAL) => false,
            other => return Err(format!("sync marker with {} {other:?}", headers::MODE)),
        };
        Ok(Self {
            begin,
            sync_id,
            full,
        })
    }

    /// Copies a marker's own headers from `from` (a landing record) onto `h` as they are,
    /// whatever they hold: validate passes markers on, and dedup is the one that refuses a
    /// malformed one (to the DLQ, with the reason).
    #[must_use]
    pub fn copy<H: rdkafka::message::Headers>(from: Option<&H>, h: Headers) -> Headers {
        h.with_opt(headers::KIND, headers::get(from, headers::KIND))
            .with_opt(headers::SYNC_ID, headers::get(from, headers::SYNC_ID))
            .with_opt(headers::MODE, headers::get(from, headers::MODE))
    }
}

/// One dead letter that input arriving again unchanged and failing the same way is counted
/// on (a *quiet DLQ*): the value of `<prefix>.dlq-index`, keyed by [`DlqRepeat::key`], written
/// by validate in the transaction of the dead letter and of every repeat.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DlqRepeat {
    /// `source`.
    pub source: String,
    /// `stream`.
    pub stream: String,
    /// The landing partition the input came from (its owner keeps this entry).
    pub landing_partition: i32,
    /// The dead letter's value hash (16 hex digits): with kind and field, what makes a repeat.
    pub hash: String,
    /// `dlq.error.kind` of the dead letter.
    pub kind: String,
    /// `dlq.error.field` of the dead letter.
    #[serde(default)]
    pub field: Option<String>,
    /// `dlq.at` of the dead letter (RFC 3339): repeats are counted on it for `dlq.quiet_for`
    /// from then, after which the next one is written again.
    pub dead_letter_at: String,
    /// `dlq.origin` of the dead letter.
    pub origin: String,
    /// Times the input failed this way since the dead letter: 1 for the dead letter itself.
    pub occurrences: u64,
    /// The last time (RFC 3339).
    pub last_seen: String,
}

impl DlqRepeat {
    /// The compaction key: `source/stream/kind/field/hash` (field empty when none).
    pub fn key(&self) -> String {
        Self::key_of(
            &self.source,
            &self.stream,
            &self.kind,
            self.field.as_deref(),
            &self.hash,
        )
    }

    /// [`DlqRepeat::key`] of an entry not built yet.
    pub fn key_of(
        source: &str,
        stream: &str,
        kind: &str,
        field: Option<&str>,
        hash: &str,
    ) -> String {
        format!("{source}/{stream}/{kind}/{}/{hash}", field.unwrap_or(""))
    }

    /// The JSON value.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an entry serialises")
    }

    /// Reads a value.
    ///
    /// # Errors
    /// A value that is not an entry.
    pub fn parse(value: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(value).map_err(|e| format!("not a dlq-index entry: {e}"))
    }
}

/// Why and where from a record went to the DLQ: the `dlq.*` headers, added after the
/// headers the record had (which a dead letter keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetter<'a> {
    /// `dlq.error.kind`: `malformed_json`, `missing_field`, `contract_violation`, ...
    pub kind: &'a str,
    /// `dlq.error.detail`: one sentence, naming the field when there is one.
    pub detail: &'a str,
    /// `dlq.error.field`: the field at fault, when there is one.
    pub field: Option<&'a str>,
    /// `dlq.schema.subject`: the subject the record was checked against.
    pub subject: Option<&'a str>,
    /// `dlq.schema.version`: its version, when one was registered.
    pub schema_version: Option<u32>,
    /// `dlq.origin`: where the input came from (`topic/partition/offset[#index]`, or the
    /// request URL for fetch's own dead letters).
    pub origin: &'a str,
    /// `dlq.stage`: the stage that refused it.
    pub stage: &'a str,
    /// `dlq.at` (RFC 3339).
    pub at: &'a str,
}

impl<'a> DeadLetter<'a> {
    /// A dead letter of `stage` with only the required headers; set the others as fields.
    pub fn new(
        stage: &'a str,
        kind: &'a str,
        detail: &'a str,
        origin: &'a str,
        at: &'a str,
    ) -> Self {
        Self {
            kind,
            detail,
            field: None,
            subject: None,
            schema_version: None,
            origin,
            stage,
            at,
        }
    }

    /// Adds the `dlq.*` headers to `h`.
    #[must_use]
    pub fn write(&self, h: Headers) -> Headers {
        let mut version = itoa::Buffer::new();
        h.with(headers::DLQ_KIND, self.kind)
            .with(headers::DLQ_DETAIL, self.detail)
            .with_opt(headers::DLQ_FIELD, self.field)
            .with_opt(headers::DLQ_SUBJECT, self.subject)
            .with_opt(
                headers::DLQ_SCHEMA_VERSION,
                self.schema_version.map(|v| version.format(v)),
            )
            .with(headers::DLQ_ORIGIN, self.origin)
            .with(headers::DLQ_STAGE, self.stage)
            .with(headers::DLQ_AT, self.at)
    }

    /// Reads the `dlq.*` headers back (`dlq.error.kind` `unknown` and an empty detail, origin,
    /// stage or time when absent: a dead letter is shown whatever it lacks).
    pub fn read<H: rdkafka::message::Headers>(h: Option<&'a H>) -> Self {
        let s = |k: &str| -> Option<&'a str> { headers::get_str(h, k) };
        Self {
            kind: s(headers::DLQ_KIND).unwrap_or("unknown"),
            detail: s(headers::DLQ_DETAIL).unwrap_or(""),
            field: s(headers::DLQ_FIELD),
            subject: s(headers::DLQ_SUBJECT),
            schema_version: s(headers::DLQ_SCHEMA_VERSION).and_then(|v| v.parse().ok()),
            origin: s(headers::DLQ_ORIGIN).unwrap_or(""),
            stage: s(headers::DLQ_STAGE).unwrap_or(""),
            at: s(headers::DLQ_AT).unwrap_or(""),
        }
    }
}

/// The provenance headers of a landed record, as validate reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LandingHeaders<'a> {
    /// `intake.kind`, when it names a known kind.
    pub kind: Option<Kind>,
    /// `intake.source`.
    pub source: Option<&'a str>,
    /// `intake.stream`.
    pub stream: Option<&'a str>,
    /// `intake.fetched_at` (RFC 3339), as written.
    pub fetched_at: Option<&'a [u8]>,
    /// `intake.sync_id` of a page.
    pub sync_id: Option<&'a [u8]>,
    /// The order of the records of a version-less stream: the page's `intake.stamp`, else
    /// its `intake.fetched_at` in microseconds (pushed batches, older landings).
    pub stamp: Option<i64>,
    /// `intake.format`: absent is JSON; `None` is a value this version does not know.
    pub format: Option<crate::config::Format>,
}

impl<'a> LandingHeaders<'a> {
    /// The headers every landed record starts with: `intake.source`, `intake.stream`,
    /// `intake.fetched_at` (now) and `intake.request` (what brought it: the URL of a page, the
    /// HTTP route of a webhook or batch). `intake.kind` is written with the body
    /// ([`LandedBody::write`]).
    pub fn provenance(source: &str, stream: &str, request: &str) -> Headers {
        Headers::new()
            .with(headers::SOURCE, source)
            .with(headers::STREAM, stream)
            .with(headers::FETCHED_AT, headers::now_rfc3339())
            .with(headers::REQUEST, request)
    }

    /// The headers of a mapped event (one whose stream, version and operation travel in
    /// headers, keyed by the entity): a webhook mapped by serve, or a delete fetch derives
    /// (a child whose parent is gone). `intake.kind` is written with the body.
    pub fn mapped_event(
        source: &str,
        stream: &str,
        request: &str,
        event_id: &str,
        seq: i64,
        op: &str,
    ) -> Headers {
        Self::provenance(source, stream, request)
            .with(headers::EVENT_ID, event_id)
            .with(headers::SEQ, seq.to_string())
            .with(headers::OP, op)
    }

    /// Reads a landed record's provenance; what is missing or unparsable is `None` (validate
    /// names what it needed in the dead letter).
    pub fn read<H: rdkafka::message::Headers>(h: Option<&'a H>) -> Self {
        let fetched_at = headers::get(h, headers::FETCHED_AT);
        let stamp = headers::get_str(h, headers::STAMP)
            .and_then(|s| s.parse::<i64>().ok())
            .or_else(|| {
                let at = std::str::from_utf8(fetched_at?).ok()?;
                i64::try_from(crate::validate::split::rfc3339_nanos(at)?.div_euclid(1_000)).ok()
            });
        Self {
            kind: headers::get(h, headers::KIND).and_then(Kind::parse),
            source: headers::get_str(h, headers::SOURCE),
            stream: headers::get_str(h, headers::STREAM),
            fetched_at,
            sync_id: headers::get(h, headers::SYNC_ID),
            stamp,
            format: headers::get(h, headers::FORMAT).map_or(
                Some(crate::config::Format::Json),
                crate::config::Format::parse,
            ),
        }
    }
}

/// The value of a landed page, batch or event, and of fetch's dead letter of a page: the body
/// itself, or, over `blob.max_inline_bytes`, a reference to it in the blob store (claim-check:
/// the body is stored under its sha256, so a retried transaction stores the same object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LandedBody {
    /// The body is the record's value.
    Inline(bytes::Bytes),
    /// The body is in the blob store; the record's value is this reference as JSON and
    /// `intake.blob` names it again.
    Stored(crate::blob::BlobRef),
}

impl LandedBody {
    /// `body` inline when it is at most `max_inline` bytes, else stored in `blobs` first.
    ///
    /// # Errors
    /// The blob store's.
    pub async fn land(
        blobs: &crate::blob::BlobStore,
        body: bytes::Bytes,
        max_inline: usize,
    ) -> Result<Self, crate::blob::BlobError> {
        if body.len() > max_inline {
            Ok(Self::Stored(blobs.put(body).await?))
        } else {
            Ok(Self::Inline(body))
        }
    }

    /// The record's value: the body, or the reference as JSON.
    pub fn value(&self) -> bytes::Bytes {
        match self {
            Self::Inline(b) => b.clone(),
            Self::Stored(r) => {
                bytes::Bytes::from(serde_json::to_vec(r).expect("a reference serialises"))
            }
        }
    }

    /// The stored body's reference.
    pub fn blob(&self) -> Option<&crate::blob::BlobRef> {
        match self {
            Self::Inline(_) => None,
            Self::Stored(r) => Some(r),
        }
    }

    /// Writes `intake.kind` and, when stored, `intake.blob`. A page or batch that is stored
    /// becomes `blob-ref` (validate reads the body back, then splits it as a page); an event
    /// stays `event` with `intake.blob` (validate routes it as an event, reading its body
    /// back first).
    pub fn write(&self, h: Headers, kind: Kind) -> Headers {
        match self {
            Self::Inline(_) => h.with(headers::KIND, kind.as_str()),
            Self::Stored(r) => {
                let kind = if kind == Kind::Event {
                    kind
                } else {
                    Kind::BlobRef
                };
                h.with(headers::KIND, kind.as_str())
                    .with(headers::BLOB, r.header_value())
            }
        }
    }

    /// The reference a record's `intake.blob` names, if any.
    pub fn read_blob<H: rdkafka::message::Headers>(h: Option<&H>) -> Option<crate::blob::BlobRef> {
        headers::get_str(h, headers::BLOB).and_then(crate::blob::BlobRef::parse_header)
    }
}

/// The key of a stream's cursor in `intake.cursors`, of its landed pages and of its sync
/// markers: `source/stream`.
pub fn stream_key(source: &str, stream: &str) -> String {
    format!("{source}/{stream}")
}

/// The [`stream_key`] of every stream of the config, in config order.
pub fn stream_keys(cfg: &crate::config::Config) -> Vec<String> {
    cfg.sources
        .iter()
        .flat_map(|s| {
            s.streams
                .iter()
                .map(move |st| stream_key(&s.name, &st.name))
        })
        .collect()
}

/// Checks that the JSON records a struct is stored as on a topic (cursors, quota and token
/// state) keep their form: `old`, a record as an earlier version wrote it (perhaps without
/// fields added since), parses, and writing it back gives `written` byte for byte.
#[cfg(test)]
pub(crate) fn assert_record_json<T>(old: &str, written: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let record: T = serde_json::from_str(old).unwrap_or_else(|e| panic!("{old}: {e}"));
    assert_eq!(
        serde_json::to_string(&record).unwrap(),
        written,
        "from {old}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rdkafka::message::{Headers as _, OwnedHeaders};

    fn built(h: Headers) -> OwnedHeaders {
        h.build()
    }

    #[test]
    fn a_landing_provenance_round_trips_and_orders_by_stamp_or_fetch_time() {
        let h = built(
            LandedBody::Inline(bytes::Bytes::new()).write(
                LandingHeaders::provenance("s", "a", "https://api/x?page=2")
                    .with(headers::SYNC_ID, "sync-1")
                    .with(headers::STAMP, "1700000000000001"),
                Kind::Page,
            ),
        );
        let l = LandingHeaders::read(Some(&h));
        assert_eq!(l.kind, Some(Kind::Page));
        assert_eq!((l.source, l.stream), (Some("s"), Some("a")));
        assert_eq!(l.sync_id, Some(&b"sync-1"[..]));
        assert_eq!(l.stamp, Some(1_700_000_000_000_001));
        assert_eq!(
            headers::get_str(Some(&h), headers::REQUEST),
            Some("https://api/x?page=2")
        );
        let at = headers::get_str(Some(&h), headers::FETCHED_AT).unwrap();
        assert_eq!(l.fetched_at, Some(at.as_bytes()));
        // Without a stamp, the fetch time in microseconds.
        let h = built(
            Headers::new()
                .with(headers::FETCHED_AT, "2024-01-02T03:04:05.000006Z")
                .with(headers::KIND, "mystery"),
        );
        let l = LandingHeaders::read(Some(&h));
        assert_eq!(l.kind, None, "an unknown kind is not a kind");
        assert_eq!(l.stamp, Some(1_704_164_645_000_006));
        assert_eq!(
            l.format,
            Some(crate::config::Format::Json),
            "no format: JSON"
        );
        assert_eq!(
            LandingHeaders::read::<OwnedHeaders>(None),
            LandingHeaders {
                format: Some(crate::config::Format::Json),
                ..LandingHeaders::default()
            }
        );
        for (value, format) in [
            ("csv", Some(crate::config::Format::Csv)),
            ("jsonl", Some(crate::config::Format::Jsonl)),
            ("xml", None),
        ] {
            let h = built(Headers::new().with(headers::FORMAT, value));
            assert_eq!(LandingHeaders::read(Some(&h)).format, format, "{value}");
        }
    }

    #[test]
    fn a_dlq_repeat_round_trips_and_keys_by_what_makes_a_repeat() {
        let e = DlqRepeat {
            source: "s".into(),
            stream: "a".into(),
            landing_partition: 3,
            hash: "00000000000000ff".into(),
            kind: "unknown_enum".into(),
            field: Some("status".into()),
            dead_letter_at: "2026-01-01T00:00:00Z".into(),
            origin: "intake.landing/3/42#7".into(),
            occurrences: 5,
            last_seen: "2026-01-02T00:00:00Z".into(),
        };
        assert_eq!(DlqRepeat::parse(&e.to_json()), Ok(e.clone()));
        assert_eq!(e.key(), "s/a/unknown_enum/status/00000000000000ff");
        let whole = DlqRepeat { field: None, ..e };
        assert_eq!(whole.key(), "s/a/unknown_enum//00000000000000ff");
        assert!(DlqRepeat::parse(b"{}").is_err());
    }

    #[test]
    fn a_landed_body_round_trips_inline_and_stored() {
        let kind = |h: &OwnedHeaders| headers::get_str(Some(h), headers::KIND).map(str::to_owned);
        let inline = LandedBody::Inline(bytes::Bytes::from_static(b"[1]"));
        let h = built(inline.write(Headers::new(), Kind::Page));
        assert_eq!(kind(&h).as_deref(), Some("page"));
        assert_eq!(LandedBody::read_blob(Some(&h)), None);
        assert_eq!(inline.value(), bytes::Bytes::from_static(b"[1]"));

        let r = crate::blob::BlobRef {
            uri: "file:///b/sha256/ab".into(),
            sha256: "ab".into(),
            size: 9_000_000,
        };
        let stored = LandedBody::Stored(r.clone());
        for (landed_as, written) in [
            (Kind::Page, "blob-ref"),
            (Kind::Batch, "blob-ref"),
            (Kind::Event, "event"),
        ] {
            let h = built(stored.write(Headers::new(), landed_as));
            assert_eq!(kind(&h).as_deref(), Some(written), "{landed_as:?}");
            assert_eq!(LandedBody::read_blob(Some(&h)), Some(r.clone()));
            assert_eq!(h.count(), 2);
        }
        let value: crate::blob::BlobRef = serde_json::from_slice(&stored.value()).unwrap();
        assert_eq!(value, r);
    }

    #[tokio::test]
    async fn a_body_over_the_inline_limit_is_stored_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = crate::blob::BlobStore::open(&crate::config::BlobConfig {
            url: format!("file://{}", dir.path().display()),
            max_inline_bytes: 10,
            max_record_bytes: 1 << 20,
        })
        .unwrap();
        let body = bytes::Bytes::from(vec![b'x'; 11]);
        let small = LandedBody::land(&blobs, body.clone(), 11).await.unwrap();
        assert_eq!(small, LandedBody::Inline(body.clone()));
        let big = LandedBody::land(&blobs, body.clone(), 10).await.unwrap();
        let r = big.blob().expect("stored").clone();
        assert_eq!(r.size, 11);
        assert_eq!(blobs.get(&r).await.unwrap(), body);
    }

    #[test]
    fn ops_round_trip_and_nothing_else_parses() {
        for op in [Op::Upsert, Op::Delete] {
            assert_eq!(Op::parse(op.as_str()), Some(op));
        }
        for bad in ["", "Upsert", "del", "upsert "] {
            assert_eq!(Op::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_delete_writes_the_zero_hash() {
        let h = built(ValidStamp::delete(7).write(Headers::new()));
        assert_eq!(headers::get_str(Some(&h), headers::HASH), Some(DELETE_HASH));
        assert_eq!(headers::get_str(Some(&h), headers::OP), Some("delete"));
        assert_eq!(headers::get_str(Some(&h), headers::VERSION), Some("7"));
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn stamps_are_refused_with_a_reason() {
        let h = |pairs: &[(&str, &str)]| {
            let mut b = Headers::new();
            for (k, v) in pairs {
                b = b.with(k, v);
            }
            b.build()
        };
        // (headers, whether the record has a value, what the refusal says)
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, &'a str);
        let cases: &[Case] = &[
            (&[(headers::VERSION, "1")], true, "without intake.op"),
            (
                &[(headers::OP, "merge"), (headers::VERSION, "1")],
                true,
                "not upsert or delete",
            ),
            (
                &[(headers::OP, "upsert"), (headers::HASH, "00000000000000ff")],
                true,
                "intake.version",
            ),
            (
                &[
                    (headers::OP, "upsert"),
                    (headers::VERSION, "x"),
                    (headers::HASH, "00000000000000ff"),
                ],
                true,
                "intake.version",
            ),
            (
                &[(headers::OP, "upsert"), (headers::VERSION, "1")],
                true,
                "intake.hash",
            ),
            (
                &[
                    (headers::OP, "upsert"),
                    (headers::VERSION, "1"),
                    (headers::HASH, "ff"),
                ],
                true,
                "intake.hash",
            ),
            (
                &[
                    (headers::OP, "upsert"),
                    (headers::VERSION, "1"),
                    (headers::HASH, "00000000000000ff"),
                ],
                false,
                "without a value",
            ),
        ];
        for (pairs, has_value, why) in cases {
            let e = ValidStamp::read(Some(&h(pairs)), *has_value).unwrap_err();
            assert!(e.contains(why), "{pairs:?}: {e}");
        }
        // A tombstone without intake.op is a delete.
        assert_eq!(
            ValidStamp::read(Some(&h(&[(headers::VERSION, "4")])), false),
            Ok(ValidStamp::delete(4))
        );
    }

    #[test]
    fn markers_need_their_id_and_mode() {
        let no_kind = built(Headers::new().with(headers::SYNC_ID, "s"));
        assert_eq!(SyncMarker::read(Some(&no_kind)), None);
        let page = built(Headers::new().with(headers::KIND, Kind::Page.as_str()));
        assert!(
            SyncMarker::read(Some(&page))
                .unwrap()
                .unwrap_err()
                .contains("unexpected")
        );
        let no_mode = built(
            Headers::new()
                .with(headers::KIND, Kind::SyncEnd.as_str())
                .with(headers::SYNC_ID, "s"),
        );
        assert!(
            SyncMarker::read(Some(&no_mode))
                .unwrap()
                .unwrap_err()
                .contains("intake.mode")
        );
        let no_id = built(
            Headers::new()
                .with(headers::KIND, Kind::SyncBegin.as_str())
                .with(headers::MODE, "full"),
        );
        assert!(
            SyncMarker::read(Some(&no_id))
                .unwrap()
                .unwrap_err()
                .contains("intake.sync_id")
        );
    }

    #[test]
    fn fetch_writes_the_modes_markers_are_read_with() {
        use crate::fetch::cursor::Mode;
        assert_eq!(Mode::Full.as_str(), SyncMarker::FULL);
        assert_eq!(Mode::Incremental.as_str(), SyncMarker::INCREMENTAL);
    }

    #[test]
    fn a_copied_marker_reads_as_the_original() {
        let m = SyncMarker {
            begin: false,
            sync_id: "s-1",
            full: true,
        };
        let landing = built(m.write(Headers::new().with(headers::SOURCE, "sim")));
        let copied = built(SyncMarker::copy(Some(&landing), Headers::new()));
        assert_eq!(SyncMarker::read(Some(&copied)), Some(Ok(m)));
        assert_eq!(copied.count(), 3);
    }

    proptest! {
        #[test]
        fn hashes_round_trip(hash: u64) {
            let hex = hash_hex(hash);
            let s = std::str::from_utf8(&hex).unwrap();
            prop_assert_eq!(parse_hash(s), Some(hash));
            prop_assert_eq!(s.to_ascii_lowercase(), s);
        }

        #[test]
        fn stamps_round_trip(version: i64, hash: u64, delete: bool) {
            let stamp = if delete {
                ValidStamp::delete(version)
            } else {
                ValidStamp::upsert(Some(version), hash)
            };
            let h = built(stamp.write(Headers::new().with(headers::SOURCE, "sim")));
            prop_assert_eq!(ValidStamp::read(Some(&h), !delete), Ok(stamp));
        }

        #[test]
        fn markers_round_trip(begin: bool, full: bool, sync_id in "[a-z0-9-]{1,40}") {
            let m = SyncMarker { begin, sync_id: &sync_id, full };
            let h = built(m.write(Headers::new()));
            prop_assert_eq!(SyncMarker::read(Some(&h)), Some(Ok(m)));
        }

        #[test]
        fn dead_letters_round_trip(
            kind in "[a-z_]{1,20}",
            detail in ".{0,80}",
            field in proptest::option::of("[a-z.]{1,20}"),
            subject in proptest::option::of("[a-z.-]{1,30}"),
            schema_version in proptest::option::of(any::<u32>()),
            origin in "[a-z.]{1,20}/[0-9]{1,3}/[0-9]{1,9}",
        ) {
            let mut d = DeadLetter::new("validate", &kind, &detail, &origin, "2026-01-01T00:00:00Z");
            d.field = field.as_deref();
            d.subject = subject.as_deref();
            d.schema_version = schema_version;
            let h = built(d.write(Headers::new().with(headers::SOURCE, "sim")));
            prop_assert_eq!(DeadLetter::read(Some(&h)), d);
            prop_assert_eq!(headers::get_str(Some(&h), headers::SOURCE), Some("sim"));
        }
    }
}
