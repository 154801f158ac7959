//! Splitting a raw page into records, keeping each record's bytes exactly as received.
//!
//! A [`Splitter`] is built once per stream from three JSON pointers (RFC 6901): the *record
//! selector* (`/data`; empty for "the page itself"), the *primary key* (`/id`) and, optionally,
//! the *version* (`/updated_at`, `/seq`). [`Splitter::split`] then turns one page into records.
//!
//! # What a page may look like
//!
//! The selector must point at an array (each element is a record) or at an object (the object
//! is the one record: single-object endpoints and webhook events). Anything else — the selector
//! absent, `null`, a string — is `not_a_page`, and the whole page goes to the DLQ.
//!
//! # Raw bytes
//!
//! [`Record::raw`] and [`BadRecord::raw`] are sub-slices of the input page (leading and trailing
//! whitespace around the element excluded, everything inside kept byte for byte): nothing is
//! re-serialised, so the DLQ and any hash over the record see what the upstream sent. Navigation
//! uses [`RawValue`], so no `serde_json::Value` tree is built for the page or for a record: key
//! and version are found by one scan of the record's top-level members, skipping the values of
//! the others.
//!
//! # Cost
//!
//! A page is scanned three times: UTF-8 validation and the depth check (tight byte loops), then
//! one pass of the parser that checks the syntax, navigates to the selector and finds the
//! elements' bounds together (each element a [`RawValue`]: no allocation per value). Reading a
//! record's key and version scans its top-level members once more ([`Splitter::split`]), unless
//! the validator noted them while encoding the record ([`Splitter::elements`] then
//! [`Splitter::record`] with the noted values: the stage's hot path, where a record is read
//! once after the split). Per record the allocations are the key string (and the unescaped
//! member names that contain escapes).
//!
//! # Nesting
//!
//! serde_json's skipping of values ([`RawValue`], [`IgnoredAny`]) is iterative and has no depth
//! limit, while building a `Value` (as the converter does) stops at 127 levels. So that a page
//! that splits is also a page whose records convert, [`Splitter::split`] first checks the depth
//! of the whole page with a byte scan and rejects anything nested deeper than [`MAX_DEPTH`] as
//! `malformed_json`. Nothing here recurses on the input's depth: a 100 000-level page fails in
//! microseconds.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::{DriftKind, RecordError};
use crate::config::{StreamConfig, TimeFormat};

mod format;
mod pointer;
mod scan;
mod values;

pub use format::{BadLine, ByLook, Cell, CellTypes, Normalized, normalize};
pub use pointer::{JsonPointer, PointerError};
pub(crate) use scan::MemberName;
use scan::*;
pub(in crate::validate) use scan::{members, resolve};
use values::parse_key;
pub(crate) use values::rfc3339_nanos;
pub use values::{parse_version, parse_version_as};

/// The deepest nesting of arrays and objects accepted, the same as serde_json's recursion
/// limit (128 frames, of which it allows 127 levels of nesting).
pub const MAX_DEPTH: usize = 127;

/// Splits the pages of one stream. Cheap to clone; build once per stream configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splitter {
    /// Where the records are in a page.
    selector: JsonPointer,
    /// Where the primary key is in a record.
    key: JsonPointer,
    /// Where the version is in a record, if the stream has one.
    version: Option<JsonPointer>,
    /// How the version is read (`version_format`); absent: an integer or RFC 3339.
    version_format: Option<TimeFormat>,
}

/// One good record of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Position of the record in the page (0-based), for provenance and ordering.
    pub index: usize,
    /// Byte offset of [`Record::raw`] in the page.
    pub offset: usize,
    /// The record's bytes exactly as received: a sub-slice of the page, valid UTF-8 and JSON.
    pub raw: &'a str,
    /// The primary key: a string as is (unescaped), an integer in decimal.
    pub key: String,
    /// The version, if the stream has a version pointer: an integer as is, or an RFC 3339
    /// timestamp as microseconds since the Unix epoch (see [`parse_version`]).
    pub version: Option<i64>,
}

/// One record of a page that cannot go on (no usable key or version), kept with its bytes so
/// the caller can send it to the DLQ while the page's other records flow on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord<'a> {
    /// Position of the record in the page (0-based).
    pub index: usize,
    /// Byte offset of [`BadRecord::raw`] in the page.
    pub offset: usize,
    /// The record's bytes exactly as received (a sub-slice of the page).
    pub raw: &'a str,
    /// Why: `missing_key` or `bad_version`, with the field named.
    pub error: RecordError,
}

/// One element of a page, before its key and version are read ([`Splitter::elements`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    /// Position of the element in the page (0-based).
    pub index: usize,
    /// Byte offset of [`Element::raw`] in the page.
    pub offset: usize,
    /// The element's bytes exactly as received (a sub-slice of the page).
    pub raw: &'a str,
}

impl Record<'_> {
    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        self.raw.as_bytes()
    }
}

impl BadRecord<'_> {
    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        self.raw.as_bytes()
    }
}

/// The records of one page, in page order, good and bad.
pub type Split<'a> = Vec<Result<Record<'a>, BadRecord<'a>>>;

impl Splitter {
    /// A splitter from the stream's record selector, primary key and optional version pointers.
    ///
    /// # Errors
    ///
    /// A [`PointerError`] if a pointer does not parse, or the key or version pointer is empty.
    pub fn new(selector: &str, key: &str, version: Option<&str>) -> Result<Self, PointerError> {
        let selector = JsonPointer::parse(selector)?;
        let key = JsonPointer::parse(key)?;
        if key.tokens.is_empty() {
            return Err(PointerError::EmptyFieldPointer("primary key"));
        }
        let version = version.map(JsonPointer::parse).transpose()?;
        if version.as_ref().is_some_and(|v| v.tokens.is_empty()) {
            return Err(PointerError::EmptyFieldPointer("version"));
        }
        Ok(Splitter {
            selector,
            key,
            version,
            version_format: None,
        })
    }

    /// The splitter of a stream's pages: its record selector, primary key, and version
    /// pointer and format (none for a version-less stream).
    ///
    /// # Errors
    ///
    /// As [`Splitter::new`].
    pub fn for_stream(st: &StreamConfig) -> Result<Self, PointerError> {
        let mut s = Self::new(&st.records, st.primary_key.first(), st.version.as_deref())?;
        s.version_format = st.version_format.clone();
        Ok(s)
    }

    /// The same splitter for a [`Normalized`] page (JSON Lines, CSV): the page is the array of
    /// records, whatever the stream's record selector.
    pub fn rows(&self) -> Self {
        Splitter {
            selector: JsonPointer::parse("").expect("the empty pointer parses"),
            ..self.clone()
        }
    }

    /// Whether records carry a version (otherwise the landing stamp is theirs).
    pub fn has_version(&self) -> bool {
        self.version.is_some()
    }

    /// The record selector.
    pub fn selector(&self) -> &JsonPointer {
        &self.selector
    }

    /// Splits one page into its records.
    ///
    /// # Errors
    ///
    /// The whole page is rejected (`Err`, send the page to the DLQ) when it is not UTF-8
    /// (`not_utf8`), not JSON or nested deeper than [`MAX_DEPTH`] (`malformed_json`, with byte
    /// offset, line and column), or the selector does not lead to an array or object
    /// (`not_a_page`). Otherwise each record is `Ok` or, when its key or version is unusable,
    /// a [`BadRecord`] (`missing_key`, `bad_version`).
    pub fn split<'a>(&self, page: &'a [u8]) -> Result<Split<'a>, RecordError> {
        Ok(self
            .elements(page)?
            .into_iter()
            .map(|element| self.record(element, None))
            .collect())
    }

    /// Splits one page into its elements, without reading their keys and versions (see
    /// [`Splitter::record`]): one scan of the page by the parser, which checks its syntax, finds
    /// the selector and the elements' bounds together.
    ///
    /// # Errors
    ///
    /// As [`Splitter::split`] for the whole page.
    pub fn elements<'a>(&self, page: &'a [u8]) -> Result<Vec<Element<'a>>, RecordError> {
        let text = std::str::from_utf8(page).map_err(|e| {
            RecordError::whole(
                DriftKind::NotUtf8,
                format!("invalid UTF-8 at byte offset {}", e.valid_up_to()),
            )
        })?;
        check_depth(text)?;
        let malformed = |e: serde_json::Error| RecordError::malformed(&e, page);

        // To the parent of the selected value (each step scans its parent: the first one, the
        // whole page, which checks the page's syntax; later ones cannot fail on syntax).
        let Some((last, parents)) = self.selector.tokens.split_last() else {
            let mut de = serde_json::Deserializer::from_str(text);
            let target = Target::deserialize(&mut de).map_err(malformed)?;
            de.end().map_err(malformed)?;
            return self.elements_of(page, target, || {
                serde_json::from_str::<&RawValue>(text).map_err(malformed)
            });
        };
        let mut parent = text;
        for (depth, token) in parents.iter().enumerate() {
            parent = match child(parent, token).map_err(malformed)? {
                Step::Found(raw) => raw.get(),
                step => return Err(self.step_error(depth, token, &step)),
            };
        }
        // The selected value, split as it is read when its parent is an object.
        let depth = parents.len();
        let found = match JsonKind::of(parent) {
            JsonKind::Object => {
                let mut de = serde_json::Deserializer::from_str(parent);
                let found = de::Deserializer::deserialize_map(&mut de, TargetMember(last))
                    .map_err(malformed)?;
                de.end().map_err(malformed)?;
                found
            }
            _ => match child(parent, last).map_err(malformed)? {
                Step::Found(raw) => Some(serde_json::from_str(raw.get()).map_err(malformed)?),
                step => return Err(self.step_error(depth, last, &step)),
            },
        };
        let Some(target) = found else {
            return Err(self.step_error(depth, last, &Step::Absent));
        };
        self.elements_of(page, target, || {
            match child(parent, last).map_err(malformed)? {
                Step::Found(raw) => Ok(raw),
                step => Err(self.step_error(depth, last, &step)),
            }
        })
    }

    /// The elements of the selected value; `whole` reads it again as one raw value (for an
    /// object, which is one record).
    fn elements_of<'a>(
        &self,
        page: &'a [u8],
        target: Target<'a>,
        whole: impl FnOnce() -> Result<&'a RawValue, RecordError>,
    ) -> Result<Vec<Element<'a>>, RecordError> {
        let base = page.as_ptr() as usize;
        let element = |index: usize, raw: &'a RawValue| {
            let raw = raw.get();
            Element {
                index,
                offset: raw.as_ptr() as usize - base,
                raw,
            }
        };
        match target {
            // A deliberate bug for `scripts/fuzz --mutants` only: a page of three or more
            // records is refused as malformed.
            #[cfg(feature = "fuzz-mutants")]
            Target::Array(items) if items.len() >= 3 && crate::fuzz_mutant("split") => {
                Err(RecordError::whole(
                    DriftKind::MalformedJson,
                    "fuzz mutant: three or more records".to_owned(),
                ))
            }
            Target::Array(items) => Ok(items
                .into_iter()
                .enumerate()
                .map(|(i, raw)| element(i, raw))
                .collect()),
            Target::Object => Ok(vec![element(0, whole()?)]),
            Target::Scalar(kind) => Err(RecordError::whole(
                DriftKind::NotAPage,
                format!(
                    "record selector `{}` points at {kind}, not an array of records or an object",
                    self.selector
                ),
            )),
        }
    }

    /// One element as a record: its key and version from `top` (the raw values of
    /// [`Splitter::top_members`], as noted by
    /// [`Validator::encode_str_into`](super::Validator::encode_str_into)), or else from a scan
    /// of the element's top-level members.
    ///
    /// # Errors
    ///
    /// A [`BadRecord`] (`missing_key`, `bad_version`) when the key or version is unusable.
    pub fn record<'a>(
        &self,
        element: Element<'a>,
        top: Option<[Option<&'a str>; 2]>,
    ) -> Result<Record<'a>, BadRecord<'a>> {
        let Element { index, offset, raw } = element;
        match self.extract(raw, top) {
            Ok((key, version)) => Ok(Record {
                index,
                offset,
                raw,
                key,
                version,
            }),
            Err(error) => Err(BadRecord {
                index,
                offset,
                raw,
                error,
            }),
        }
    }

    /// The names of the record's top-level members that hold the key and the version (in that
    /// order; the version's only when the stream has one).
    pub fn top_members(&self) -> Vec<&str> {
        std::iter::once(&self.key)
            .chain(&self.version)
            .map(|p| p.tokens[0].as_str())
            .collect()
    }

    /// The error of a navigation step that did not find a container member.
    fn step_error(&self, depth: usize, token: &str, step: &Step<'_>) -> RecordError {
        match step {
            Step::Found(_) | Step::Absent => self.not_a_page(depth, format!("`{token}` is absent")),
            Step::Scalar(kind) => {
                self.not_a_page(depth, format!("the parent of `{token}` is {kind}"))
            }
            Step::NotIndex => self.not_a_page(
                depth,
                format!("the parent of `{token}` is an array and `{token}` is not an index"),
            ),
        }
    }

    fn not_a_page(&self, depth: usize, why: String) -> RecordError {
        let prefix: String = self.selector.tokens[..=depth]
            .iter()
            .map(|t| format!("/{t}"))
            .collect();
        RecordError::whole(
            DriftKind::NotAPage,
            format!(
                "record selector `{}` not found: at `{prefix}`, {why}",
                self.selector
            ),
        )
    }

    /// Key and version of one record, from `top` or else a single scan of its top-level
    /// members (plus one scan per deeper pointer level).
    fn extract<'a>(
        &self,
        raw: &'a str,
        top: Option<[Option<&'a str>; 2]>,
    ) -> Result<(String, Option<i64>), RecordError> {
        let key_field = || self.key.field_path();
        let kind = JsonKind::of(raw);
        if kind != JsonKind::Object {
            return Err(RecordError::at(
                DriftKind::MissingKey,
                key_field(),
                format!("the record is {kind}, not an object"),
            ));
        }
        let malformed = |e: serde_json::Error| RecordError::malformed(&e, raw.as_bytes());
        let top = match top {
            Some(top) => top,
            None => {
                let found = members(raw, &self.top_members()).map_err(malformed)?;
                [
                    found[0].map(RawValue::get),
                    found.get(1).copied().flatten().map(RawValue::get),
                ]
            }
        };

        let key = resolve(top[0], &self.key.tokens[1..]).map_err(malformed)?;
        let key = parse_key(key)
            .map_err(|why| RecordError::at(DriftKind::MissingKey, key_field(), why))?;

        let version = match &self.version {
            None => None,
            Some(pointer) => {
                let found = resolve(top[1], &pointer.tokens[1..]).map_err(malformed)?;
                let version =
                    found.ok_or_else(|| "is absent".to_owned()).and_then(|raw| {
                        match &self.version_format {
                            None => parse_version(raw),
                            Some(f) => parse_version_as(raw, f),
                        }
                    });
                Some(version.map_err(|why| {
                    RecordError::at(DriftKind::BadVersion, pointer.field_path(), why)
                })?)
            }
        };
        Ok((key, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn ok<'s, 'a>(split: &'s Split<'a>) -> Vec<&'s Record<'a>> {
        split
            .iter()
            .map(|r| r.as_ref().expect("good record"))
            .collect()
    }

    /// Why a splitter of the records at `records` (keyed by `/id`) refuses `page` as a whole.
    fn page_error(records: &str, page: &[u8]) -> RecordError {
        Splitter::new(records, "/id", None)
            .unwrap()
            .split(page)
            .unwrap_err()
    }

    /// The slice is inside the page, at its offset, byte for byte.
    fn assert_slice_of(page: &[u8], offset: usize, raw: &str) {
        let start = page.as_ptr() as usize;
        let at = raw.as_ptr() as usize;
        assert!(
            at >= start && at + raw.len() <= start + page.len(),
            "not a sub-slice"
        );
        assert_eq!(at - start, offset);
        assert_eq!(&page[offset..offset + raw.len()], raw.as_bytes());
    }

    #[test]
    fn cursor_body_with_whitespace_keeps_raw_bytes() {
        let page = b"{\"next_cursor\": \"c2\",\n \"data\": [\n  {\"id\": \"a1\",   \"updated_at\": 5,\n   \"name\" : \"x\" } ,\n  {\"updated_at\":7,\"id\":\"a2\"}\n ]\n}\n";
        let s = Splitter::new("/data", "/id", Some("/updated_at")).unwrap();
        let split = s.split(page).unwrap();
        let records = ok(&split);
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].raw,
            "{\"id\": \"a1\",   \"updated_at\": 5,\n   \"name\" : \"x\" }"
        );
        assert_eq!(records[0].key, "a1");
        assert_eq!(records[0].version, Some(5));
        assert_eq!(records[0].index, 0);
        assert_eq!(records[0].offset, 35);
        assert_eq!(records[1].raw, "{\"updated_at\":7,\"id\":\"a2\"}");
        assert_eq!(records[1].key, "a2");
        assert_eq!(records[1].version, Some(7));
        assert_eq!(records[1].index, 1);
        for r in records {
            assert_slice_of(page, r.offset, r.raw);
        }
    }

    #[test]
    fn array_page_with_integer_keys() {
        let page = br#"[{"id":1},{"id":-20},{"id":18446744073709551615}]"#;
        let split = Splitter::new("", "/id", None).unwrap().split(page).unwrap();
        let keys: Vec<&str> = ok(&split).iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["1", "-20", "18446744073709551615"]);
        assert!(ok(&split).iter().all(|r| r.version.is_none()));
        assert_eq!(ok(&split)[2].offset, 21);
    }

    #[test]
    fn single_object_is_one_record() {
        let page = b"  {\"event\": {\"id\": \"e-9\", \"seq\": 3}}  ";
        let split = Splitter::new("/event", "/id", Some("/seq"))
            .unwrap()
            .split(page)
            .unwrap();
        let records = ok(&split);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].raw, "{\"id\": \"e-9\", \"seq\": 3}");
        assert_eq!(records[0].offset, 12);
        assert_eq!(
            (records[0].key.as_str(), records[0].version),
            ("e-9", Some(3))
        );

        let whole = Splitter::new("", "/id", None)
            .unwrap()
            .split(b"{\"id\":\"x\"}")
            .unwrap();
        assert_eq!(ok(&whole)[0].raw, "{\"id\":\"x\"}");
    }

    #[test]
    fn unicode_escapes_in_keys_and_values() {
        // Member name "i\u0064" is "id"; the key value has an escaped é and a surrogate pair.
        let page =
            "{\"d\\u0061ta\": [{\"i\\u0064\": \"caf\\u00e9-\\ud83d\\ude00\", \"n\": \"ü\"}]}"
                .as_bytes();
        let split = Splitter::new("/data", "/id", None)
            .unwrap()
            .split(page)
            .unwrap();
        let r = ok(&split)[0];
        assert_eq!(r.key, "café-😀");
        assert_eq!(
            r.raw,
            "{\"i\\u0064\": \"caf\\u00e9-\\ud83d\\ude00\", \"n\": \"ü\"}"
        );
        assert_slice_of(page, r.offset, r.raw);
    }

    #[test]
    fn nested_pointers_and_escaped_tokens() {
        let page = br#"{"res":{"a/b":[{"meta":{"id":"k","v":{"n":4}}}]}}"#;
        let s = Splitter::new("/res/a~1b", "/meta/id", Some("/meta/v/n")).unwrap();
        let split = s.split(page).unwrap();
        assert_eq!(
            (ok(&split)[0].key.as_str(), ok(&split)[0].version),
            ("k", Some(4))
        );
        // An array index in the selector.
        let page = br#"{"pages":[[{"id":1}],[{"id":2},{"id":3}]]}"#;
        let split = Splitter::new("/pages/1", "/id", None)
            .unwrap()
            .split(page)
            .unwrap();
        assert_eq!(
            ok(&split)
                .iter()
                .map(|r| r.key.as_str())
                .collect::<Vec<_>>(),
            ["2", "3"]
        );
    }

    #[test]
    fn duplicate_member_last_wins() {
        let split = Splitter::new("", "/id", None)
            .unwrap()
            .split(br#"[{"id":"a","id":"b"}]"#)
            .unwrap();
        assert_eq!(ok(&split)[0].key, "b");
    }

    #[test]
    fn bad_records_are_reported_individually_with_their_bytes() {
        let page = br#"{"data":[{"id":"ok"},{"name":"no key"},{"id":null},{"id":1.5},{"id":{"a":1}},{"id":""},7,{"id":"v","v":"soon"}]}"#;
        let s = Splitter::new("/data", "/id", Some("/v")).unwrap();
        let split = s.split(page).unwrap();
        assert_eq!(split.len(), 8);
        assert!(matches!(&split[0], Err(b) if b.error.kind == DriftKind::BadVersion));
        let errors: Vec<(usize, &str, DriftKind, Option<&str>, &str)> = split
            .iter()
            .map(|r| r.as_ref().unwrap_err())
            .map(|b| {
                (
                    b.index,
                    b.raw,
                    b.error.kind,
                    b.error.field.as_deref(),
                    b.error.detail.as_str(),
                )
            })
            .collect();
        assert_eq!(
            errors,
            [
                (
                    0,
                    r#"{"id":"ok"}"#,
                    DriftKind::BadVersion,
                    Some("v"),
                    "is absent"
                ),
                (
                    1,
                    r#"{"name":"no key"}"#,
                    DriftKind::MissingKey,
                    Some("id"),
                    "is absent"
                ),
                (
                    2,
                    r#"{"id":null}"#,
                    DriftKind::MissingKey,
                    Some("id"),
                    "is null"
                ),
                (
                    3,
                    r#"{"id":1.5}"#,
                    DriftKind::MissingKey,
                    Some("id"),
                    "is the non-integer number 1.5; expected a string or an integer"
                ),
                (
                    4,
                    r#"{"id":{"a":1}}"#,
                    DriftKind::MissingKey,
                    Some("id"),
                    "is an object; expected a string or an integer"
                ),
                (
                    5,
                    r#"{"id":""}"#,
                    DriftKind::MissingKey,
                    Some("id"),
                    "is an empty string"
                ),
                (
                    6,
                    "7",
                    DriftKind::MissingKey,
                    Some("id"),
                    "the record is a number, not an object"
                ),
                (
                    7,
                    r#"{"id":"v","v":"soon"}"#,
                    DriftKind::BadVersion,
                    Some("v"),
                    "\"soon\" is not an RFC 3339 timestamp"
                ),
            ]
        );
        for r in &split {
            let b = r.as_ref().unwrap_err();
            assert_slice_of(page, b.offset, b.raw);
        }
        assert_eq!(
            split[1].as_ref().unwrap_err().error.to_string(),
            "missing primary key at field `id`: is absent"
        );
    }

    #[test]
    fn good_records_flow_past_bad_ones() {
        let page = br#"[{"id":"a"},{"x":1},{"id":"c"}]"#;
        let split = Splitter::new("", "/id", None).unwrap().split(page).unwrap();
        let good: Vec<&str> = split
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| r.key.as_str())
            .collect();
        assert_eq!(good, ["a", "c"]);
        assert_eq!(split.iter().filter(|r| r.is_err()).count(), 1);
    }

    #[test]
    fn versions_integer_and_rfc3339() {
        assert_eq!(parse_version("42"), Ok(42));
        assert_eq!(parse_version("-3"), Ok(-3));
        assert_eq!(parse_version("\"1970-01-01T00:00:01Z\""), Ok(1_000_000));
        assert_eq!(
            parse_version("\"2024-05-06T07:08:09.123456789Z\""),
            Ok(1_714_979_289_123_456)
        );
        assert_eq!(
            parse_version("\"2024-05-06T09:08:09.123456+02:00\""),
            Ok(1_714_979_289_123_456)
        );
        // Before the epoch: floored, so order is kept.
        assert_eq!(parse_version("\"1969-12-31T23:59:59.9999999Z\""), Ok(-1));
        assert!(
            parse_version("\"1969-12-31T23:59:59.9999999Z\"").unwrap()
                < parse_version("\"1970-01-01T00:00:00Z\"").unwrap()
        );
        assert_eq!(
            parse_version("1.5"),
            Err("1.5 is not an integer".to_owned())
        );
        assert_eq!(
            parse_version("9223372036854775808"),
            Err("9223372036854775808 is beyond the range of a 64-bit signed integer".to_owned())
        );
        assert_eq!(
            parse_version("\"2024-05-06\""),
            Err("\"2024-05-06\" is not an RFC 3339 timestamp".to_owned())
        );
        // `T`, `t` or a space between date and time; nothing else.
        assert_eq!(parse_version("\"1970-01-01 00:00:01Z\""), Ok(1_000_000));
        assert_eq!(parse_version("\"1970-01-01t00:00:01Z\""), Ok(1_000_000));
        assert_eq!(
            parse_version("\"1970-01-01x00:00:01Z\""),
            Err("\"1970-01-01x00:00:01Z\" is not an RFC 3339 timestamp".to_owned())
        );
        assert_eq!(parse_version("null"), Err("is null".to_owned()));
        assert_eq!(
            parse_version("true"),
            Err("is a boolean; expected an integer or an RFC 3339 timestamp".to_owned())
        );
    }

    #[test]
    fn malformed_page_reports_position() {
        let page = b"{\"data\": [\n {\"id\": 1},\n {\"id\": 2,}\n]}";
        assert_eq!(
            page_error("/data", page),
            RecordError::whole(
                DriftKind::MalformedJson,
                "key must be a string at line 3 column 11 (byte offset 33)"
            )
        );
        assert_eq!(page[33], b'}');

        let err = page_error("", b"[{\"id\":1}] x");
        assert_eq!(
            err.detail,
            "trailing characters at line 1 column 12 (byte offset 11)"
        );
        let err = page_error("", b"");
        assert_eq!(
            err.detail,
            "EOF while parsing a value at line 1 column 0 (byte offset 0)"
        );
    }

    #[test]
    fn non_utf8_page() {
        let page = b"[{\"id\":\"caf\xe9\"}]";
        let err = page_error("", page);
        assert_eq!(
            err,
            RecordError::whole(DriftKind::NotUtf8, "invalid UTF-8 at byte offset 11")
        );
    }

    #[test]
    fn selector_problems_are_not_a_page() {
        let s = Splitter::new("/data/items", "/id", None).unwrap();
        let cases: [(&[u8], &str); 5] = [
            (
                br#"{"error":"rate limited"}"#,
                "record selector `/data/items` not found: at `/data`, `data` is absent",
            ),
            (
                br#"{"data":{"other":[]}}"#,
                "record selector `/data/items` not found: at `/data/items`, `items` is absent",
            ),
            (
                br#"{"data":"x"}"#,
                "record selector `/data/items` not found: at `/data/items`, the parent of `items` is a string",
            ),
            (
                br#"{"data":{"items":null}}"#,
                "record selector `/data/items` points at null, not an array of records or an object",
            ),
            (
                br#"{"data":{"items":3}}"#,
                "record selector `/data/items` points at a number, not an array of records or an object",
            ),
        ];
        for (page, detail) in cases {
            assert_eq!(
                s.split(page).unwrap_err(),
                RecordError::whole(DriftKind::NotAPage, detail)
            );
        }
        let err = page_error("/data/5", br#"{"data":[1]}"#);
        assert_eq!(
            err.detail,
            "record selector `/data/5` not found: at `/data/5`, `5` is absent"
        );
        let err = page_error("/data/01", br#"{"data":[1,2]}"#);
        assert_eq!(err.kind, DriftKind::NotAPage);
        // A page that is an array where an object was expected.
        let err = page_error("/data", br#"[{"id":1}]"#);
        assert_eq!(
            err,
            RecordError::whole(
                DriftKind::NotAPage,
                "record selector `/data` not found: at `/data`, the parent of `data` is an array and `data` is not an index"
            )
        );
    }

    /// A page whose root is no container is checked for syntax before the selector's error.
    #[test]
    fn a_scalar_page_is_malformed_unless_it_is_json() {
        let s = Splitter::new("/data", "/id", None).unwrap();
        for page in [&b""[..], b"  \n", b"4x", b"\"open", b"nul"] {
            assert_eq!(
                s.split(page).unwrap_err().kind,
                DriftKind::MalformedJson,
                "{page:?}"
            );
        }
        for page in [&b"42"[..], b" \"x\" ", b"null"] {
            assert_eq!(
                s.split(page).unwrap_err().kind,
                DriftKind::NotAPage,
                "{page:?}"
            );
        }
        let s = Splitter::new("", "/id", None).unwrap();
        assert_eq!(s.split(b"").unwrap_err().kind, DriftKind::MalformedJson);
        assert_eq!(s.split(b"42").unwrap_err().kind, DriftKind::NotAPage);
    }

    #[test]
    fn empty_page_has_no_records() {
        let split = Splitter::new("/data", "/id", None)
            .unwrap()
            .split(br#"{"data":[]}"#)
            .unwrap();
        assert!(split.is_empty());
    }

    #[test]
    fn depth_limit_matches_serde_json() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(serde_json::from_str::<serde_json::Value>(&nest(MAX_DEPTH)).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&nest(MAX_DEPTH + 1)).is_err());
        let s = Splitter::new("", "/id", None).unwrap();
        assert_eq!(s.split(nest(MAX_DEPTH).as_bytes()).unwrap().len(), 1);
        let err = s.split(nest(MAX_DEPTH + 1).as_bytes()).unwrap_err();
        assert_eq!(err.kind, DriftKind::MalformedJson);
        assert_eq!(
            err.detail,
            "nested deeper than 127 levels (serde_json's recursion limit) at line 1 column 128 (byte offset 127)"
        );
        // Brackets inside strings do not count.
        let page = format!(r#"[{{"id":"a","s":"{}\"["}}]"#, "[".repeat(1000));
        assert_eq!(s.split(page.as_bytes()).unwrap().len(), 1);
        // An escaped backslash ends in a real closing quote; the nesting after it counts, at
        // the right offset.
        let prefix = r#"["a\\", "{[\"", "#;
        let deep = format!("{prefix}{}{}]", nest(MAX_DEPTH).split_at(MAX_DEPTH).0, "]");
        let err = s.split(deep.as_bytes()).unwrap_err();
        assert_eq!(err.kind, DriftKind::MalformedJson);
        let at = prefix.len() + MAX_DEPTH - 1;
        assert!(
            err.detail.ends_with(&format!("(byte offset {at})")),
            "{}",
            err.detail
        );
    }

    #[test]
    fn hundred_thousand_levels_fail_fast_without_overflow() {
        let s = Splitter::new("/data", "/id", None).unwrap();
        let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let deep_record = format!(
            r#"{{"data":[{{"id":1,"x":{}{}}}]}}"#,
            "{\"a\":".repeat(100_000),
            "}".repeat(100_000)
        );
        let unclosed = "[".repeat(100_000);
        for page in [deep_array, deep_record, unclosed] {
            let started = Instant::now();
            let err = s.split(page.as_bytes()).unwrap_err();
            assert_eq!(err.kind, DriftKind::MalformedJson);
            assert!(
                err.detail.starts_with("nested deeper than 127 levels"),
                "{}",
                err.detail
            );
            assert!(started.elapsed() < Duration::from_secs(1));
        }
    }

    #[test]
    fn pointers_parse_and_render() {
        let p = JsonPointer::parse("/a~1b/0/c~0d").unwrap();
        assert_eq!(p.tokens(), ["a/b", "0", "c~d"]);
        assert_eq!(p.field_path(), "a/b[0].c~d");
        assert_eq!(p.as_str(), "/a~1b/0/c~0d");
        assert_eq!(JsonPointer::parse("").unwrap().tokens(), [] as [String; 0]);
        assert_eq!(
            JsonPointer::parse("data"),
            Err(PointerError::NoLeadingSlash("data".to_owned()))
        );
        assert_eq!(
            JsonPointer::parse("/a~2"),
            Err(PointerError::BadEscape("/a~2".to_owned()))
        );
        assert_eq!(
            Splitter::new("", "", None),
            Err(PointerError::EmptyFieldPointer("primary key"))
        );
        assert_eq!(
            Splitter::new("", "/id", Some("")),
            Err(PointerError::EmptyFieldPointer("version"))
        );
    }
}
