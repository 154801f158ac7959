//! The record splitter (`src/validate/split.rs`) on arbitrary pages.
//!
//! Input: the first byte picks the record selector (and whether the stream has a version), the
//! rest is the page. Never panics, and agrees both ways with a reference split written here
//! from serde_json's own grammar check ([`IgnoredAny`], which takes every RFC 8259 text) and
//! its [`RawValue`] bounds:
//!
//! - the splitter refuses the page exactly when the reference does, with the same kind
//!   (`not_utf8`, `malformed_json`, `not_a_page`): a splitter that refuses what serde_json takes
//!   fails here as surely as one that takes what serde_json refuses;
//! - otherwise the records are the same: as many, each the same sub-slice of the page (same
//!   offset and bytes), the same good or bad, with the same key and version, or the same kind
//!   of error.
//!
//! The reference spells out where the splitter deliberately differs from the bare grammar:
//!
//! - nesting deeper than [`MAX_DEPTH`] is `malformed_json` (serde_json's recursion limit for
//!   trees; its skipping has none);
//! - the splitter decodes the member names of the objects it navigates through (the parents on
//!   the selector's path, and a record's top level when it reads the key and version): a name
//!   holding a lone UTF-16 surrogate escape (`"\ud83d"`, JSON by the grammar, not a Rust
//!   string) makes that page, or that record, `malformed_json`; with the empty selector a root
//!   object is read by the page scan itself, so such a name at its top level refuses the page;
//! - a selected scalar is read as a value, so a number beyond f64 (`1e400`) or a string with a
//!   lone surrogate there is `malformed_json` rather than `not_a_page`.
//!
//! Anywhere else such values are JSON like any other and split as such (they fail later, in
//! the key, the version or the conversion, with their own errors). serde_json's `Value` is not
//! used for pages: it refuses those values, and it cannot hold an object with its reserved
//! member name `$serde_json::private::RawValue`, which the splitter treats as any other name.
#![no_main]

use intake::validate::{DriftKind, MAX_DEPTH, Splitter};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Record selectors, unescaped into their tokens.
const SELECTORS: [(&str, &[&str]); 4] = [
    ("/data", &["data"]),
    ("", &[]),
    ("/res/a~1b", &["res", "a/b"]),
    ("/pages/1", &["pages", "1"]),
];
const KEY: &str = "id";
const VERSION: &str = "version";

/// What the reference expects of one record: key and version, or the kind of its error.
type Expected<'a> = (&'a str, Result<(String, Option<i64>), DriftKind>);

fuzz_target!(|data: &[u8]| {
    let Some((&pick, page)) = data.split_first() else {
        return;
    };
    let (selector, tokens) = SELECTORS[usize::from(pick) % SELECTORS.len()];
    let version = pick & 0x80 != 0;
    let splitter = Splitter::new(
        selector,
        &format!("/{KEY}"),
        version.then_some(&*format!("/{VERSION}")),
    )
    .unwrap();

    let got = splitter.split(page);
    let expected = reference(page, tokens, version);
    let (got, expected) = match (got, expected) {
        (Ok(got), Ok(expected)) => (got, expected),
        (Err(e), Err(kind)) => {
            assert_eq!(e.kind, kind, "the page is refused for another reason: {e}");
            return;
        }
        (Err(e), Ok(expected)) => panic!(
            "the splitter refuses a page serde_json takes ({} records): {e}",
            expected.len()
        ),
        (Ok(got), Err(kind)) => panic!(
            "the splitter takes a page the reference refuses as {kind} ({} records)",
            got.len()
        ),
    };
    assert_eq!(got.len(), expected.len(), "number of records");
    let base = page.as_ptr() as usize;
    for (i, (item, (raw, want))) in got.iter().zip(&expected).enumerate() {
        let (index, offset, got_raw) = match item {
            Ok(r) => (r.index, r.offset, r.raw),
            Err(b) => (b.index, b.offset, b.raw),
        };
        assert_eq!(index, i);
        assert_eq!(
            got_raw.as_ptr() as usize - base,
            offset,
            "record {i}: offset"
        );
        assert_eq!(offset, raw.as_ptr() as usize - base, "record {i}: offset");
        assert_eq!(got_raw, *raw, "record {i}: bytes");
        match (item, want) {
            (Ok(r), Ok((key, v))) => {
                assert_eq!(&r.key, key, "record {i}: key");
                assert_eq!(&r.version, v, "record {i}: version");
            }
            (Err(b), Err(kind)) => assert_eq!(b.error.kind, *kind, "record {i}: {}", b.error),
            (Ok(r), Err(kind)) => panic!("record {i} is good ({r:?}), the reference says {kind}"),
            (Err(b), Ok(_)) => panic!("record {i} is bad ({}), the reference's is good", b.error),
        }
    }
});

/// The split of `page` as serde_json reads it, or the kind of error of the whole page.
fn reference<'a>(
    page: &'a [u8],
    tokens: &[&str],
    version: bool,
) -> Result<Vec<Expected<'a>>, DriftKind> {
    let text = std::str::from_utf8(page).map_err(|_| DriftKind::NotUtf8)?;
    // The grammar (any RFC 8259 text: serde_json's skipping), then the depth limit.
    serde_json::from_str::<IgnoredAny>(text).map_err(|_| DriftKind::MalformedJson)?;
    if depth(text) > MAX_DEPTH {
        return Err(DriftKind::MalformedJson);
    }
    let mut current: &RawValue = serde_json::from_str(text).unwrap();
    // With no selector, the page scan itself reads the root, and decodes the names of a root
    // object (the one record): a lone surrogate there refuses the page, not just the record.
    if tokens.is_empty()
        && let Level::Object(members) = level(current)
        && members.iter().any(|(name, _)| name.is_err())
    {
        return Err(DriftKind::MalformedJson);
    }
    for (step, token) in tokens.iter().enumerate() {
        let last = step + 1 == tokens.len();
        current = match level(current) {
            Level::Object(members) => {
                let mut found = None;
                for (name, value) in members {
                    if name.map_err(|()| DriftKind::MalformedJson)? == *token {
                        // The splitter reads every occurrence of the selected member (the last
                        // one wins) as it reads the one it keeps.
                        if last && refused_scalar(value) {
                            return Err(DriftKind::MalformedJson);
                        }
                        found = Some(value);
                    }
                }
                found.ok_or(DriftKind::NotAPage)?
            }
            Level::Array(items) => {
                // RFC 6901: an index is digits without a leading zero.
                let index = token
                    .parse::<usize>()
                    .ok()
                    .filter(|i| i.to_string() == *token);
                *index
                    .and_then(|i| items.get(i))
                    .ok_or(DriftKind::NotAPage)?
            }
            Level::Scalar => return Err(DriftKind::NotAPage),
        };
    }
    let records = match level(current) {
        Level::Array(items) => items,
        Level::Object(_) => vec![current],
        // A selected scalar is read as a value (see the top).
        Level::Scalar if refused_scalar(current) => return Err(DriftKind::MalformedJson),
        Level::Scalar => return Err(DriftKind::NotAPage),
    };
    Ok(records
        .into_iter()
        .map(|raw| (raw.get(), record(raw, version)))
        .collect())
}

/// Key and version of one record, as the splitter documents them.
fn record(raw: &RawValue, version: bool) -> Result<(String, Option<i64>), DriftKind> {
    let Level::Object(members) = level(raw) else {
        return Err(DriftKind::MissingKey);
    };
    // The last occurrence of a name wins, as in a `Value`.
    let (mut key, mut ver) = (None, None);
    for (name, value) in members {
        match name.map_err(|()| DriftKind::MalformedJson)?.as_str() {
            KEY => key = Some(value.get()),
            VERSION => ver = Some(value.get()),
            _ => {}
        }
    }
    // A key is a non-empty string or an integer (a number beyond f64 or a string that is not
    // a Rust string is none).
    let key = match key.map(scalar) {
        Some(Some(Value::String(s))) if !s.is_empty() => s,
        Some(Some(Value::Number(n))) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => return Err(DriftKind::MissingKey),
    };
    if !version {
        return Ok((key, None));
    }
    // A version is an i64, or an RFC 3339 timestamp in microseconds (floored) that fits one;
    // its date and time separated by `T`, `t` or a space (the `time` crate takes any byte).
    let version = match ver.map(scalar) {
        Some(Some(Value::Number(n))) => n.as_i64(),
        Some(Some(Value::String(s)))
            if !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) =>
        {
            None
        }
        Some(Some(Value::String(s))) => OffsetDateTime::parse(&s, &Rfc3339)
            .ok()
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000)).ok()),
        _ => None,
    };
    Ok((key, Some(version.ok_or(DriftKind::BadVersion)?)))
}

/// A raw scalar as a `Value` (`None` for a container, or for a scalar a `Value` cannot hold).
fn scalar(raw: &str) -> Option<Value> {
    match raw.as_bytes()[0] {
        b'{' | b'[' => None,
        _ => serde_json::from_str(raw).ok(),
    }
}

/// A scalar that a `Value` cannot hold: a number beyond f64, a string with a lone surrogate.
fn refused_scalar(raw: &RawValue) -> bool {
    !matches!(raw.get().as_bytes()[0], b'{' | b'[') && scalar(raw.get()).is_none()
}

/// One level of a (grammatical) value: an object's members with their names decoded (or not,
/// for a lone surrogate), an array's elements, or a scalar.
enum Level<'a> {
    Object(Vec<(Result<String, ()>, &'a RawValue)>),
    Array(Vec<&'a RawValue>),
    Scalar,
}

fn level(raw: &RawValue) -> Level<'_> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    match raw.get().as_bytes()[0] {
        b'{' => de.deserialize_map(LevelVisitor).unwrap(),
        b'[' => de.deserialize_seq(LevelVisitor).unwrap(),
        _ => Level::Scalar,
    }
}

struct LevelVisitor;

impl<'de> Visitor<'de> for LevelVisitor {
    type Value = Level<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array or an object")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Level::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // Names are taken raw (quotes and escapes as written) and decoded apart, so that one
        // that is not a Rust string does not end the walk.
        let mut members = Vec::new();
        while let Some((name, value)) = map.next_entry::<&RawValue, &RawValue>()? {
            let name = serde_json::from_str::<String>(name.get()).map_err(|_| ());
            members.push((name, value));
        }
        Ok(Level::Object(members))
    }
}

/// The deepest nesting of a grammatical text.
fn depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    deepest
}
