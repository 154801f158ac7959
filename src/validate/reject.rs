//! Dead letters of the validate stage: what was rejected, why, and where it came from.
//!
//! A DLQ record keeps the rejected bytes exactly as received (one record of a page, or the whole
//! landing value when the page itself is bad), the landing key, and every landing header, plus
//! the `dlq.*` headers of `docs/INVARIANTS.md`. [`Rejection`] is the "why"; [`headers()`] builds the header
//! set; [`origin`] writes `dlq.origin`.
//!
//! Kinds come from [`DriftKind::as_str`] for data problems the pure core classifies, plus
//! [`BLOB_UNREADABLE`], which only the stage can see (the claim-checked page cannot be read).

use rdkafka::message::OwnedHeaders;

use super::error::{DriftKind, RecordError};
use crate::contract::DeadLetter;
use crate::headers;

/// `dlq.error.kind` of a `blob-ref` whose blob is missing, corrupt (sha256 mismatch) or in
/// another store.
pub const BLOB_UNREADABLE: &str = "blob_unreadable";

/// The stage name in `dlq.stage`.
pub const STAGE: &str = crate::stage::Stage::Validate.name();

/// Why something goes to the DLQ: the three `dlq.error.*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `dlq.error.kind`.
    pub kind: &'static str,
    /// `dlq.error.field`: the field at fault, when there is one.
    pub field: Option<String>,
    /// `dlq.error.detail`: one sentence, naming the field when there is one.
    pub detail: String,
}

impl From<&RecordError> for Rejection {
    fn from(e: &RecordError) -> Self {
        Rejection {
            kind: e.kind.as_str(),
            field: e.field.clone(),
            detail: e.to_string(),
        }
    }
}

impl From<RecordError> for Rejection {
    fn from(e: RecordError) -> Self {
        Rejection::from(&e)
    }
}

impl Rejection {
    /// A rejection about a named field.
    pub fn at(kind: DriftKind, field: impl Into<String>, detail: impl Into<String>) -> Self {
        RecordError::at(kind, field, detail).into()
    }

    /// A rejection about the record or page as a whole.
    pub fn whole(kind: DriftKind, detail: impl Into<String>) -> Self {
        RecordError::whole(kind, detail).into()
    }

    /// The claim-checked page of a `blob-ref` cannot be read.
    pub fn blob_unreadable(detail: impl std::fmt::Display) -> Self {
        Rejection {
            kind: BLOB_UNREADABLE,
            field: None,
            detail: format!("claim-checked page unreadable: {detail}"),
        }
    }

    /// The same rejection with a sentence appended to its detail.
    #[must_use]
    pub fn with_note(mut self, note: &str) -> Self {
        self.detail.push_str(" (");
        self.detail.push_str(note);
        self.detail.push(')');
        self
    }
}

/// `dlq.origin`: `<topic>/<partition>/<offset>` of the landing record, with `#<index>` of the
/// record in the page when one record (not the whole value) was rejected.
pub fn origin(topic: &str, partition: i32, offset: i64, index: Option<usize>) -> String {
    match index {
        Some(i) => format!("{topic}/{partition}/{offset}#{i}"),
        None => format!("{topic}/{partition}/{offset}"),
    }
}

/// A parsed [`origin`]: where a dead letter came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The input topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// The input record's offset.
    pub offset: i64,
    /// The record's position in the page, when one record (not the whole value) was rejected.
    pub index: Option<usize>,
}

impl Origin {
    /// Parses a `dlq.origin` value (`<topic>/<partition>/<offset>[#<index>]`; topic names
    /// have no `/`).
    pub fn parse(s: &str) -> Option<Self> {
        let (at, index) = match s.split_once('#') {
            Some((at, i)) => (at, Some(i.parse().ok()?)),
            None => (s, None),
        };
        let mut parts = at.rsplitn(3, '/');
        let offset = parts.next()?.parse().ok()?;
        let partition = parts.next()?.parse().ok()?;
        let topic = parts.next().filter(|t| !t.is_empty())?.to_owned();
        Some(Origin {
            topic,
            partition,
            offset,
            index,
        })
    }
}

/// The schema a record was checked against, for `dlq.schema.subject` and `dlq.schema.version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Against<'a> {
    /// Registry subject (known whenever the stream is).
    pub subject: &'a str,
    /// Version within the subject (unknown when nothing is registered).
    pub version: Option<u32>,
}

/// Every landing header, then the `dlq.*` headers. `at` is `dlq.at` (RFC 3339).
pub fn headers<H: rdkafka::message::Headers>(
    landing: Option<&H>,
    why: &Rejection,
    against: Option<Against<'_>>,
    origin: &str,
    at: &str,
) -> OwnedHeaders {
    DeadLetter {
        field: why.field.as_deref(),
        subject: against.map(|a| a.subject),
        schema_version: against.and_then(|a| a.version),
        ..DeadLetter::new(STAGE, why.kind, &why.detail, origin, at)
    }
    .write(headers::copy_all(landing))
    .build()
}

/// Bytes the headers add to a record (names and values), for size checks before sending.
pub fn header_bytes<H: rdkafka::message::Headers>(h: &H) -> usize {
    h.iter()
        .map(|x| x.key.len() + x.value.map_or(0, <[u8]>::len))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Headers;
    use rdkafka::message::Headers as _;

    fn get<'a>(h: &'a OwnedHeaders, k: &str) -> Option<&'a str> {
        headers::get_str(Some(h), k)
    }

    #[test]
    fn origin_has_an_index_only_for_records() {
        assert_eq!(origin("p.landing", 3, 42, Some(7)), "p.landing/3/42#7");
        assert_eq!(origin("p.landing", 0, 0, None), "p.landing/0/0");
    }

    #[test]
    fn origins_parse_back() {
        assert_eq!(
            Origin::parse(&origin("p.landing", 3, 42, Some(7))),
            Some(Origin {
                topic: "p.landing".into(),
                partition: 3,
                offset: 42,
                index: Some(7)
            })
        );
        let whole = Origin::parse("p.landing/0/9").unwrap();
        assert_eq!((whole.partition, whole.offset, whole.index), (0, 9, None));
        for bad in ["", "p/1", "/1/2", "p/x/2", "p/1/2#", "p/1/2#x"] {
            assert_eq!(Origin::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn headers_copy_the_landing_ones_and_add_the_dlq_ones() {
        let landing = Headers::new()
            .with(headers::SOURCE, "sim")
            .with(headers::STREAM, "orders")
            .with(headers::KIND, "page")
            .build();
        let why = Rejection::at(
            DriftKind::UnknownEnum,
            "status",
            "`settled` is not one of pending, paid",
        );
        let h = headers(
            Some(&landing),
            &why,
            Some(Against {
                subject: "t.sim.orders.valid-value",
                version: Some(2),
            }),
            "t.landing/1/5#3",
            "2024-01-01T00:00:00Z",
        );
        assert_eq!(get(&h, headers::SOURCE), Some("sim"));
        assert_eq!(get(&h, headers::KIND), Some("page"));
        assert_eq!(get(&h, headers::DLQ_KIND), Some("unknown_enum"));
        assert_eq!(get(&h, headers::DLQ_FIELD), Some("status"));
        assert_eq!(
            get(&h, headers::DLQ_DETAIL),
            Some("unknown enum symbol at field `status`: `settled` is not one of pending, paid")
        );
        assert_eq!(
            get(&h, headers::DLQ_SUBJECT),
            Some("t.sim.orders.valid-value")
        );
        assert_eq!(get(&h, headers::DLQ_SCHEMA_VERSION), Some("2"));
        assert_eq!(get(&h, headers::DLQ_ORIGIN), Some("t.landing/1/5#3"));
        assert_eq!(get(&h, headers::DLQ_STAGE), Some("validate"));
        assert_eq!(get(&h, headers::DLQ_AT), Some("2024-01-01T00:00:00Z"));
        assert_eq!(
            header_bytes(&h),
            h.iter()
                .map(|x| x.key.len() + x.value.unwrap().len())
                .sum::<usize>()
        );
    }

    #[test]
    fn whole_value_rejections_have_no_field_header() {
        let why = Rejection::blob_unreadable("blob file:///x/sha256/ab is not in this store");
        assert_eq!(why.kind, "blob_unreadable");
        let h = headers::<OwnedHeaders>(None, &why, None, "t.landing/0/1", "now");
        assert_eq!(get(&h, headers::DLQ_FIELD), None);
        assert_eq!(get(&h, headers::DLQ_SUBJECT), None);
        assert_eq!(get(&h, headers::DLQ_SCHEMA_VERSION), None);
        assert_eq!(
            get(&h, headers::DLQ_DETAIL),
            Some("claim-checked page unreadable: blob file:///x/sha256/ab is not in this store")
        );
        let noted = Rejection::whole(DriftKind::TooLarge, "the record is 2000000 bytes")
            .with_note("kept by reference");
        assert_eq!(
            noted.detail,
            "payload too large: the record is 2000000 bytes (kept by reference)"
        );
    }
}
