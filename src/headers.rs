//! The header contract (`docs/INVARIANTS.md`, Headers): the names are the contract, so they
//! exist only here.
//!
//! Landing records carry `intake.*` headers describing where the bytes came from; DLQ records
//! carry `dlq.*` headers saying what was wrong. [`Headers`] builds them; [`get`] reads one
//! back from a consumed message without copying.

use rdkafka::message::Headers as _;
use rdkafka::message::{BorrowedHeaders, Header, OwnedHeaders};

/// Landing: source name.
pub const SOURCE: &str = "intake.source";
/// Landing: stream name.
pub const STREAM: &str = "intake.stream";
/// Landing: what the value is ([`Kind`]).
pub const KIND: &str = "intake.kind";
/// Landing: when the response was received (RFC 3339).
pub const FETCHED_AT: &str = "intake.fetched_at";
/// Landing: the request URL with secrets redacted.
pub const REQUEST: &str = "intake.request";
/// Landing: HTTP status of the response.
pub const STATUS: &str = "intake.status";
/// Landing: the cursor the page was requested with.
pub const CURSOR: &str = "intake.cursor";
/// Landing: the cursor after this page.
pub const NEXT_CURSOR: &str = "intake.next_cursor";
/// Landing: the sync this page belongs to.
pub const SYNC_ID: &str = "intake.sync_id";
/// Landing: page sequence number within the sync (events: the entity's sequence number).
pub const SEQ: &str = "intake.seq";
/// Landing: the window of a windowed backfill a page was read in (its start, RFC 3339); such
/// a page is identified by `(intake.sync_id, intake.window, intake.seq)`.
pub const WINDOW: &str = "intake.window";
/// Landing: claim-check reference `uri=<uri>;sha256=<hex>;size=<n>`.
pub const BLOB: &str = "intake.blob";
/// Landing: the stamp fetch gives a page (decimal i64, microseconds since the Unix epoch at
/// landing, strictly increasing per stream across restarts and owners): the version of the
/// page's records when the stream has no `version` pointer, so the later fetch wins.
pub const STAMP: &str = "intake.stamp";
/// Landing: sync mode of a `sync-begin` marker (`full` or `incremental`).
pub const MODE: &str = "intake.mode";
/// Events and batches: the id of the event, job or replay that produced the record.
pub const EVENT_ID: &str = "intake.event_id";
/// Landing: the format of a fetched page (`jsonl` or `csv`; absent: `json`), as its stream
/// was configured when fetched.
pub const FORMAT: &str = "intake.format";
/// Batches: the job id.
pub const JOB_ID: &str = "intake.job_id";
/// The landing of a job this batch is (a uuid, also in the job's record): when two serve
/// processes both land one job (a retry reached the other before the first's commit showed),
/// the registry counts only the landing its job record names.
pub const JOB_ATTEMPT: &str = "intake.job_attempt";
/// Valid and curated topics: record version (decimal i64).
pub const VERSION: &str = "intake.version";
/// Valid and curated topics: content hash (hex u64) breaking version ties.
pub const HASH: &str = "intake.hash";
/// Valid topic: provenance `topic/partition/offset` of the landing record.
pub const ORIGIN: &str = "intake.origin";
/// Valid topic: `upsert` or `delete` (a delete event's record has no value). Landing: what
/// serve mapped a webhook event to (with its version in `intake.seq` and the entity as key).
pub const OP: &str = "intake.op";
/// Replays: the replay id that re-landed the record.
pub const REPLAY_ID: &str = "intake.replay_id";
/// Replays: `topic/partition/offset` of the dead letter a replayed record was re-landed from.
pub const REPLAY_OF: &str = "intake.replay_of";
/// `intake reprocess`: the run id that copied the landing record.
pub const REPROCESS_ID: &str = "intake.reprocess_id";
/// `intake reprocess`: `topic/partition/offset` of the landing record a copy was made of.
pub const REPROCESS_OF: &str = "intake.reprocess_of";

/// DLQ: error kind (`malformed_json`, `missing_field`, ...).
pub const DLQ_KIND: &str = "dlq.error.kind";
/// DLQ: human-readable detail naming the field.
pub const DLQ_DETAIL: &str = "dlq.error.detail";
/// DLQ: the field at fault, when there is one.
pub const DLQ_FIELD: &str = "dlq.error.field";
/// DLQ: the subject validated against.
pub const DLQ_SUBJECT: &str = "dlq.schema.subject";
/// DLQ: the schema version validated against.
pub const DLQ_SCHEMA_VERSION: &str = "dlq.schema.version";
/// DLQ: `topic/partition/offset` of the input record.
pub const DLQ_ORIGIN: &str = "dlq.origin";
/// DLQ: the stage that rejected it.
pub const DLQ_STAGE: &str = "dlq.stage";
/// DLQ: when (RFC 3339).
pub const DLQ_AT: &str = "dlq.at";

/// Values of [`KIND`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A raw API response page.
    Page,
    /// A webhook event.
    Event,
    /// A pushed batch.
    Batch,
    /// A claim-check reference to a blob.
    BlobRef,
    /// Start of a sync.
    SyncBegin,
    /// End of a sync.
    SyncEnd,
}

impl Kind {
    /// The header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Page => "page",
            Kind::Event => "event",
            Kind::Batch => "batch",
            Kind::BlobRef => "blob-ref",
            Kind::SyncBegin => "sync-begin",
            Kind::SyncEnd => "sync-end",
        }
    }

    /// Parses a header value.
    pub fn parse(s: &[u8]) -> Option<Self> {
        Some(match s {
            b"page" => Kind::Page,
            b"event" => Kind::Event,
            b"batch" => Kind::Batch,
            b"blob-ref" => Kind::BlobRef,
            b"sync-begin" => Kind::SyncBegin,
            b"sync-end" => Kind::SyncEnd,
            _ => return None,
        })
    }
}

/// A small builder over [`OwnedHeaders`] that also counts the bytes of names and values (the
/// stages check a message's size against its topic's limit before sending it).
#[derive(Default)]
pub struct Headers {
    inner: OwnedHeaders,
    bytes: usize,
}

impl Headers {
    /// No headers yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// No headers yet, with room for `n` (a record's headers are one allocation each in
    /// librdkafka; this saves growing the list on the way).
    pub fn with_capacity(n: usize) -> Self {
        Self {
            inner: OwnedHeaders::new_with_capacity(n),
            bytes: 0,
        }
    }
    /// Adds a header.
    #[must_use]
    pub fn with(self, key: &str, value: impl AsRef<[u8]>) -> Self {
        let value = value.as_ref();
        Self {
            bytes: self.bytes + key.len() + value.len(),
            inner: self.inner.insert(Header {
                key,
                value: Some(value),
            }),
        }
    }
    /// Adds a header when the value is present.
    #[must_use]
    pub fn with_opt(self, key: &str, value: Option<impl AsRef<[u8]>>) -> Self {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }
    /// The bytes of the names and values added so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// The rdkafka headers.
    pub fn build(self) -> OwnedHeaders {
        self.inner
    }
    /// A copy of the headers built so far.
    pub fn clone_owned(&self) -> OwnedHeaders {
        self.inner.clone()
    }
}

/// The headers of one consumed record, read out of librdkafka once.
///
/// Every [`get`] on a message's own headers walks all of them through librdkafka (a call, a
/// `strlen` and a UTF-8 check per header), so a stage that asks five questions of each record
/// pays that five times: in dedup it was about a third of the thread's time (`perf`, `scripts/bench
/// dedup`). A view asks librdkafka once and answers from its copy of the names and value slices
/// (borrowed, nothing is copied); it implements [`rdkafka::message::Headers`], so [`get`] and
/// every reader of the contracts take it as they take the message's headers. Headers past the
/// first [`View::CACHED`] are read from the message as before.
pub struct View<'a> {
    src: &'a BorrowedHeaders,
    n: usize,
    cached: [(&'a str, Option<&'a [u8]>); View::CACHED],
}

impl<'a> View<'a> {
    /// How many headers a view keeps (the valid-topic contract has 8 or 9).
    pub const CACHED: usize = 12;

    /// The view of a record's headers (none when it has none).
    pub fn of(headers: Option<&'a BorrowedHeaders>) -> Option<Self> {
        let src = headers?;
        let mut cached = [("", None); Self::CACHED];
        let mut n = 0;
        for (i, slot) in cached.iter_mut().enumerate() {
            let Some(h) = src.try_get(i) else { break };
            *slot = (h.key, h.value);
            n = i + 1;
        }
        Some(Self { src, n, cached })
    }

    /// A copy of every header, for a record sent on unchanged (one librdkafka call).
    pub fn to_owned_headers(&self) -> OwnedHeaders {
        self.src.detach()
    }
}

impl rdkafka::message::Headers for View<'_> {
    fn count(&self) -> usize {
        if self.n < Self::CACHED {
            self.n
        } else {
            self.src.count()
        }
    }

    fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
        if idx < self.n {
            let (key, value) = self.cached[idx];
            Some(Header { key, value })
        } else if self.n < Self::CACHED {
            None
        } else {
            self.src.try_get(idx)
        }
    }
}

/// Reads a header's value (the last one of that name).
pub fn get<'a, H: rdkafka::message::Headers>(
    headers: Option<&'a H>,
    key: &str,
) -> Option<&'a [u8]> {
    let h = headers?;
    h.iter()
        .filter(|h| h.key == key)
        .last()
        .and_then(|h| h.value)
}

/// Reads a header's value as UTF-8.
pub fn get_str<'a, H: rdkafka::message::Headers>(
    headers: Option<&'a H>,
    key: &str,
) -> Option<&'a str> {
    get(headers, key).and_then(|v| std::str::from_utf8(v).ok())
}

/// Copies every header of a message (the DLQ keeps the landing headers of a rejected record).
pub fn copy_all<H: rdkafka::message::Headers>(headers: Option<&H>) -> Headers {
    let mut out = Headers::with_capacity(headers.map_or(0, |h| h.count()));
    if let Some(h) = headers {
        for x in h.iter() {
            out = match x.value {
                Some(value) => out.with(x.key, value),
                None => Headers {
                    inner: out.inner.insert(Header {
                        key: x.key,
                        value: None::<&[u8]>,
                    }),
                    ..out
                },
            };
        }
    }
    out
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// The `intake.fetched_at` header as Unix seconds, if present and RFC 3339.
pub fn fetched_at_secs<H: rdkafka::message::Headers>(h: Option<&H>) -> Option<u32> {
    let s = get_str(h, FETCHED_AT)?;
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u32::try_from(t.unix_timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_round_trips() {
        for k in [
            Kind::Page,
            Kind::Event,
            Kind::Batch,
            Kind::BlobRef,
            Kind::SyncBegin,
            Kind::SyncEnd,
        ] {
            assert_eq!(Kind::parse(k.as_str().as_bytes()), Some(k));
        }
        assert_eq!(Kind::parse(b"nope"), None);
    }

    /// Two headers, with a name given no value (so not written) between them.
    fn sample() -> OwnedHeaders {
        Headers::new()
            .with(SOURCE, "sim")
            .with_opt(CURSOR, None::<&str>)
            .with(STREAM, "orders")
            .build()
    }

    #[test]
    fn a_view_answers_as_the_headers_do() {
        // 2 headers (all cached), and 15 with a repeated name past the cache (read through).
        let few = sample();
        let mut many = Headers::new();
        for i in 0..14 {
            many = many.with(&format!("h{i}"), i.to_string());
        }
        let many = many.with("h3", "last").build();
        for h in [&few, &many] {
            let v = View::of(Some(h.as_borrowed())).expect("a view");
            assert_eq!(v.count(), h.count());
            let all: Vec<_> = v.iter().map(|x| (x.key, x.value)).collect();
            let want: Vec<_> = h.iter().map(|x| (x.key, x.value)).collect();
            assert_eq!(all, want);
            for (k, _) in &want {
                assert_eq!(get(Some(&v), k), get(Some(h), k), "{k}");
            }
            assert_eq!(v.try_get(h.count()).map(|x| x.key), None);
            let copy = v.to_owned_headers();
            let copied: Vec<_> = copy.iter().map(|x| (x.key, x.value)).collect();
            assert_eq!(copied, want);
        }
        assert_eq!(
            get_str(View::of(Some(many.as_borrowed())).as_ref(), "h3"),
            Some("last")
        );
        assert_eq!(
            get_str(View::of(Some(few.as_borrowed())).as_ref(), CURSOR),
            None
        );
        assert!(View::of(None).is_none());
    }

    #[test]
    fn builder_and_get() {
        let h = sample();
        assert_eq!(h.count(), 2);
        assert_eq!(get_str(Some(&h), STREAM), Some("orders"));
        assert_eq!(get(Some(&h), CURSOR), None);
    }
}
