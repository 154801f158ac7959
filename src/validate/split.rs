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

/// The deepest nesting of arrays and objects accepted, the same as serde_json's recursion
/// limit (128 frames, of which it allows 127 levels of nesting).
pub const MAX_DEPTH: usize = 127;

/// An RFC 6901 JSON pointer, parsed once: `""` is the whole document, `/a/0/b~1c` has the
/// tokens `a`, `0`, `b/c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPointer {
    /// The pointer as configured, for messages.
    text: String,
    /// Unescaped reference tokens.
    tokens: Vec<String>,
}

/// A JSON pointer that does not parse, or that cannot serve its role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// A non-empty pointer must start with `/`.
    #[error("JSON pointer {0:?} must be empty or start with '/'")]
    NoLeadingSlash(String),
    /// `~` must be followed by `0` or `1`.
    #[error("JSON pointer {0:?} has a '~' not followed by '0' or '1'")]
    BadEscape(String),
    /// A key or version pointer must name a member inside the record, not the record itself.
    #[error("the {0} pointer must not be empty: it names a field inside the record")]
    EmptyFieldPointer(&'static str),
}

impl JsonPointer {
    /// Parses a pointer.
    ///
    /// # Errors
    ///
    /// [`PointerError::NoLeadingSlash`] or [`PointerError::BadEscape`].
    pub fn parse(text: &str) -> Result<Self, PointerError> {
        if text.is_empty() {
            return Ok(JsonPointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| PointerError::NoLeadingSlash(text.to_owned()))?;
        let tokens = rest
            .split('/')
            .map(|token| {
                unescape_token(token).ok_or_else(|| PointerError::BadEscape(text.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(JsonPointer {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The unescaped tokens.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The pointer as a field path in the converter's notation (`customer.id`, `lines[0].sku`),
    /// so that DLQ summaries group key errors with field errors. All-digit tokens are shown as
    /// array indexes.
    pub fn field_path(&self) -> String {
        let mut out = String::new();
        for token in &self.tokens {
            if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
                out.push('[');
                out.push_str(token);
                out.push(']');
            } else {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(token);
            }
        }
        out
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn unescape_token(token: &str) -> Option<String> {
    if !token.contains('~') {
        return Some(token.to_owned());
    }
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

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

/// Rejects input nested deeper than [`MAX_DEPTH`], without recursion.
///
/// Strings are skipped with `memchr2` (to the next quote or backslash) rather than byte by
/// byte: records are mostly string bytes, and this scan of the whole page was the stage's
/// largest single cost when it looked at every byte.
fn check_depth(text: &str) -> Result<(), RecordError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // To the byte after the closing quote; an escape skips the byte it escapes.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                        Some(p) if bytes[i + p] == b'\\' => i = (i + p + 2).min(bytes.len()),
                        Some(p) => {
                            i += p + 1;
                            break;
                        }
                        // Unterminated: the parser reports it.
                        None => return Ok(()),
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let line = 1 + bytes[..i].iter().filter(|&&b| b == b'\n').count();
                    let line_start = bytes[..i]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |p| p + 1);
                    return Err(RecordError::whole(
                        DriftKind::MalformedJson,
                        format!(
                            "nested deeper than {MAX_DEPTH} levels (serde_json's recursion limit) \
                             at line {line} column {} (byte offset {i})",
                            i - line_start + 1
                        ),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The JSON type of a raw value, told by its first byte after JSON whitespace. Used to choose
/// how to read a value and in messages ("the record is an array").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonKind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    fn of(raw: &str) -> JsonKind {
        let first = raw
            .bytes()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        match first {
            Some(b'{') => JsonKind::Object,
            Some(b'[') => JsonKind::Array,
            Some(b'"') => JsonKind::String,
            Some(b'n') => JsonKind::Null,
            Some(b't' | b'f') => JsonKind::Boolean,
            _ => JsonKind::Number,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonKind::Null => "null",
            JsonKind::Boolean => "a boolean",
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        })
    }
}

/// One step of pointer navigation.
enum Step<'a> {
    Found(&'a RawValue),
    /// The container has no such member or index.
    Absent,
    /// The parent is not a container.
    Scalar(JsonKind),
    /// The parent is an array and the token is not an index (RFC 6901: digits, no leading zero).
    NotIndex,
}

/// The member `token` of an object, or the element at index `token` of an array.
fn child<'a>(raw: &'a str, token: &str) -> Result<Step<'a>, serde_json::Error> {
    match JsonKind::of(raw) {
        JsonKind::Object => Ok(members(raw, &[token])?[0].map_or(Step::Absent, Step::Found)),
        JsonKind::Array => match token.parse::<usize>() {
            // RFC 6901: no leading zeros, no signs.
            Ok(index) if token == index.to_string() => {
                let mut de = serde_json::Deserializer::from_str(raw);
                let found = de::Deserializer::deserialize_seq(&mut de, ElementAt(index))?;
                de.end()?;
                Ok(found.map_or(Step::Absent, Step::Found))
            }
            // Not an index, but is it JSON at all? (The first step is a page's only check.)
            _ => {
                let _: IgnoredAny = serde_json::from_str(raw)?;
                Ok(Step::NotIndex)
            }
        },
        kind => {
            // Not a container, but is it JSON at all? (The first step is a page's only check.)
            let _: IgnoredAny = serde_json::from_str(raw)?;
            Ok(Step::Scalar(kind))
        }
    }
}

/// Follows `rest` from `start`; `None` as soon as a step is absent or a parent is a scalar.
pub(super) fn resolve<'a>(
    start: Option<&'a str>,
    rest: &[String],
) -> Result<Option<&'a str>, serde_json::Error> {
    let Some(mut current) = start else {
        return Ok(None);
    };
    for token in rest {
        match child(current, token)? {
            Step::Found(raw) => current = raw.get(),
            Step::Absent | Step::Scalar(_) | Step::NotIndex => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// The raw values of the members named in `wanted` (one scan of the object; if a name occurs
/// twice, the last occurrence wins, as in `serde_json::Value`).
pub(super) fn members<'a>(
    raw: &'a str,
    wanted: &[&str],
) -> Result<Vec<Option<&'a RawValue>>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let found = de::Deserializer::deserialize_map(&mut de, Members(wanted))?;
    de.end()?;
    Ok(found)
}

/// Visitor behind [`members`].
struct Members<'w>(&'w [&'w str]);

impl<'de> Visitor<'de> for Members<'_> {
    type Value = Vec<Option<&'de RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = vec![None; self.0.len()];
        while let Some(MemberName(name)) = map.next_key()? {
            if self.0.contains(&name.as_ref()) {
                let value: &'de RawValue = map.next_value()?;
                for (slot, wanted) in found.iter_mut().zip(self.0) {
                    if *wanted == name.as_ref() {
                        *slot = Some(value);
                    }
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A member name, borrowed from the input unless it contains escapes.
pub(crate) struct MemberName<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = MemberName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// The value a record selector points at, as read in one pass: an array's elements (raw), or
/// only the kind of anything else (an object is read again as one raw value: it is one record).
enum Target<'a> {
    Array(Vec<&'a RawValue>),
    Object,
    Scalar(JsonKind),
}

impl<'de> Deserialize<'de> for Target<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TargetVisitor)
    }
}

struct TargetVisitor;

impl<'de> Visitor<'de> for TargetVisitor {
    type Value = Target<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            items.push(raw);
        }
        Ok(Target::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Target::Object)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Target::Scalar(JsonKind::Null))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Target::Scalar(JsonKind::Boolean))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Target::Scalar(JsonKind::Number))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Target::Scalar(JsonKind::Number))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Target::Scalar(JsonKind::Number))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Target::Scalar(JsonKind::String))
    }
}

/// Visitor of an object reading the member `0` as a [`Target`] (the last one, if repeated) and
/// skipping the others.
struct TargetMember<'t>(&'t str);

impl<'de> Visitor<'de> for TargetMember<'_> {
    type Value = Option<Target<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(MemberName(name)) = map.next_key()? {
            if name == self.0 {
                found = Some(map.next_value::<Target<'de>>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Visitor picking the element at an index of an array (and skipping the rest).
struct ElementAt(usize);

impl<'de> Visitor<'de> for ElementAt {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0;
        while i <= self.0 {
            match seq.next_element::<&'de RawValue>()? {
                Some(raw) if i == self.0 => found = Some(raw),
                Some(_) => {}
                None => return Ok(None),
            }
            i += 1;
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(found)
    }
}

impl<'de> DeserializeSeed<'de> for ElementAt {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

/// The primary key as a string, or why there is none.
fn parse_key(raw: Option<&str>) -> Result<String, String> {
    let Some(text) = raw else {
        return Err("is absent".to_owned());
    };
    match JsonKind::of(text) {
        JsonKind::String => {
            let key: String = serde_json::from_str(text).map_err(|e| e.to_string())?;
            if key.is_empty() {
                Err("is an empty string".to_owned())
            } else {
                Ok(key)
            }
        }
        JsonKind::Number => {
            let n: serde_json::Number = serde_json::from_str(text).map_err(|e| e.to_string())?;
            if n.is_i64() || n.is_u64() {
                Ok(n.to_string())
            } else {
                Err(format!(
                    "is the non-integer number {text}; expected a string or an integer"
                ))
            }
        }
        JsonKind::Null => Err("is null".to_owned()),
        kind => Err(format!("is {kind}; expected a string or an integer")),
    }
}

/// A version from its raw JSON: an integer as is, or an RFC 3339 timestamp string (any offset,
/// any fraction) as microseconds since the Unix epoch, UTC; sub-microsecond digits are floored
/// so that the order of instants is kept. Both fit i64 (RFC 3339 years 0000–9999 are about
/// ±2.5·10^17 µs). A stream uses one form for all its records: comparing a sequence number with
/// a timestamp is meaningless, and nothing here can tell them apart once converted.
///
/// # Errors
///
/// The reason, for a `bad_version` error: null, a non-integer number, an integer beyond i64,
/// a string that is not RFC 3339, or another JSON type.
pub fn parse_version(raw: &str) -> Result<i64, String> {
    match JsonKind::of(raw) {
        JsonKind::Number => {
            let n: serde_json::Number = serde_json::from_str(raw).map_err(|e| e.to_string())?;
            n.as_i64().ok_or_else(|| {
                if n.is_u64() {
                    format!("{raw} is beyond the range of a 64-bit signed integer")
                } else {
                    format!("{raw} is not an integer")
                }
            })
        }
        JsonKind::String => {
            let s: Cow<'_, str> = serde_json::from_str(raw).map_err(|e| e.to_string())?;
            rfc3339_micros(&s).ok_or_else(|| format!("{raw} is not an RFC 3339 timestamp"))
        }
        JsonKind::Null => Err("is null".to_owned()),
        kind => Err(format!(
            "is {kind}; expected an integer or an RFC 3339 timestamp"
        )),
    }
}

/// A version in a configured time format (`version_format`), as microseconds since the Unix
/// epoch (floored), so versions of one stream compare as instants whatever the format.
///
/// # Errors
///
/// The reason, for a `bad_version` error.
pub fn parse_version_as(raw: &str, format: &TimeFormat) -> Result<i64, String> {
    let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    if v.is_null() {
        return Err("is null".to_owned());
    }
    format
        .parse_json(&v)
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000)).ok())
        .ok_or_else(|| format!("{raw} is not a timestamp in the format `{}`", format.name()))
}

/// Microseconds since the Unix epoch of an RFC 3339 timestamp (floored).
fn rfc3339_micros(s: &str) -> Option<i64> {
    i64::try_from(rfc3339_nanos(s)?.div_euclid(1_000)).ok()
}

/// Nanoseconds since the Unix epoch of an RFC 3339 timestamp. The date and time are separated
/// by `T`, `t` or a space (RFC 3339 allows the space; the `time` crate alone takes any byte).
pub(crate) fn rfc3339_nanos(s: &str) -> Option<i128> {
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    Some(
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()?
            .unix_timestamp_nanos(),
    )
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
        let err = Splitter::new("/data", "/id", None)
            .unwrap()
            .split(page)
            .unwrap_err();
        assert_eq!(err.kind, DriftKind::MalformedJson);
        assert_eq!(err.field, None);
        assert_eq!(
            err.detail,
            "key must be a string at line 3 column 11 (byte offset 33)"
        );
        assert_eq!(page[33], b'}');

        let err = Splitter::new("", "/id", None)
            .unwrap()
            .split(b"[{\"id\":1}] x")
            .unwrap_err();
        assert_eq!(
            err.detail,
            "trailing characters at line 1 column 12 (byte offset 11)"
        );
        let err = Splitter::new("", "/id", None)
            .unwrap()
            .split(b"")
            .unwrap_err();
        assert_eq!(
            err.detail,
            "EOF while parsing a value at line 1 column 0 (byte offset 0)"
        );
    }

    #[test]
    fn non_utf8_page() {
        let page = b"[{\"id\":\"caf\xe9\"}]";
        let err = Splitter::new("", "/id", None)
            .unwrap()
            .split(page)
            .unwrap_err();
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
        let err = Splitter::new("/data/5", "/id", None)
            .unwrap()
            .split(br#"{"data":[1]}"#)
            .unwrap_err();
        assert_eq!(
            err.detail,
            "record selector `/data/5` not found: at `/data/5`, `5` is absent"
        );
        let err = Splitter::new("/data/01", "/id", None)
            .unwrap()
            .split(br#"{"data":[1,2]}"#)
            .unwrap_err();
        assert_eq!(err.kind, DriftKind::NotAPage);
        // A page that is an array where an object was expected.
        let err = Splitter::new("/data", "/id", None)
            .unwrap()
            .split(br#"[{"id":1}]"#)
            .unwrap_err();
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
