//! The record splitter (`src/validate/split.rs`) on arbitrary pages.
//!
//! Never panics, and agrees with `serde_json::Value`: every record (good or bad) is the exact
//! sub-slice of the page at its offset; a page that splits is JSON (numbers beyond f64 aside);
//! the records are the elements of the array the selector points at (or the one object); a
//! good record's key and version are what the tree says; a record whose key the tree cannot
//! give is bad.
#![no_main]

use intake::validate::{DriftKind, Splitter};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SELECTORS: [&str; 4] = ["/data", "", "/res/a~1b", "/pages/1"];

/// serde_json's errors about values its grammar check lets through.
const VALUE_ERRORS: [&str; 4] = [
    "number out of range",
    "lone leading surrogate in hex escape",
    "unexpected end of hex escape",
    "invalid unicode code point",
];

/// The member name serde_json's `Value` cannot take (see below).
const RAW_VALUE_TOKEN: &[u8] = b"$serde_json::private::RawValue";

fn usable_key(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, page)) = data.split_first() else {
        return;
    };
    let selector = SELECTORS[usize::from(pick) % SELECTORS.len()];
    let version = (pick & 0x80 != 0).then_some("/version");
    let splitter = Splitter::new(selector, "/id", version).unwrap();
    let Ok(split) = splitter.split(page) else {
        return;
    };
    let base = page.as_ptr() as usize;
    for (i, item) in split.iter().enumerate() {
        let (index, offset, raw) = match item {
            Ok(r) => (r.index, r.offset, r.raw),
            Err(b) => (b.index, b.offset, b.raw),
        };
        assert_eq!(index, i);
        assert_eq!(raw.as_ptr() as usize - base, offset);
        assert_eq!(&page[offset..offset + raw.len()], raw.as_bytes());
    }
    // serde_json (with `raw_value`, as intake builds it) reserves one member name for its own
    // RawValue plumbing: a `Value` cannot hold an object with that key, though it is valid
    // JSON. The splitter handles it like any other name; the tree cannot be the oracle then.
    if page
        .windows(RAW_VALUE_TOKEN.len())
        .any(|w| w == RAW_VALUE_TOKEN)
    {
        return;
    }
    let tree: Value = match serde_json::from_slice(page) {
        Ok(tree) => tree,
        // The splitter checks the grammar, as serde_json's own skipping does, not what a
        // value means: `1e400` (not an f64) and a lone UTF-16 surrogate escape (`"\ud83d"`,
        // not a char) are JSON by RFC 8259 but not for `Value`. Such a value fails later, in
        // the record's key, version or conversion, with its own error (the `convert` target
        // checks the conversion side).
        Err(e) if VALUE_ERRORS.iter().any(|m| e.to_string().starts_with(m)) => return,
        Err(e) => panic!("a page that splits is JSON, but serde_json says: {e}"),
    };
    let target = tree.pointer(selector).expect("the selector resolves");
    let expected = match target {
        Value::Array(items) => items.len(),
        Value::Object(_) => 1,
        other => panic!("split a page whose selector points at {other}"),
    };
    assert_eq!(split.len(), expected);
    for (i, item) in split.iter().enumerate() {
        let raw = match item {
            Ok(r) => r.raw,
            Err(b) => b.raw,
        };
        let record: Value = serde_json::from_str(raw).expect("a record is JSON");
        let element = match target {
            Value::Array(items) => &items[i],
            object => object,
        };
        assert_eq!(&record, element, "record {i} is the element at its index");
        let key = record
            .is_object()
            .then(|| usable_key(record.pointer("/id")))
            .flatten();
        match item {
            Ok(r) => {
                assert_eq!(Some(&r.key), key.as_ref(), "record {i}: key");
                if version.is_some() {
                    if let Some(n) = record.pointer("/version").and_then(Value::as_i64) {
                        assert_eq!(r.version, Some(n), "record {i}: version");
                    }
                } else {
                    assert_eq!(r.version, None);
                }
            }
            Err(b) => match b.error.kind {
                DriftKind::MissingKey => assert_eq!(key, None, "record {i}: a usable key"),
                DriftKind::BadVersion => assert!(key.is_some() && version.is_some()),
                other => panic!("record {i}: unexpected kind {other}"),
            },
        }
    }
});
