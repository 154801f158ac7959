//! Pages of JSON Lines and CSV (`src/validate/split/format.rs`) on arbitrary input.
//!
//! Input: the first byte picks the format, the rest is the page. Never panics, and:
//!
//! - **JSON Lines** agrees with a reference written here from UTF-8 and serde_json's grammar
//!   check ([`IgnoredAny`], which skips strings without checking their UTF-8: a line is text
//!   first, as the fuzzer taught us): the page's non-blank lines (a trailing `\r` dropped) are its records; the
//!   normalised page is a JSON array whose elements are exactly the lines serde_json takes,
//!   byte for byte and in order, at the positions the reference gives them, and every other
//!   line is reported bad, with its bytes and its position, as `malformed_json` or `not_utf8`;
//! - **CSV**: the normalised page is a JSON array of objects whose member names are all in the
//!   header row, no record is both good and bad, and positions rise through the page.
#![no_main]

use intake::config::Format;
use intake::validate::split::{ByLook, normalize};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, page)) = data.split_first() else {
        return;
    };
    if pick & 1 == 0 {
        jsonl(page);
    } else {
        csv(page);
    }
});

fn jsonl(page: &[u8]) {
    let rows = normalize(Format::Jsonl, page, &ByLook).expect("JSON Lines never refuses a page");
    let lines: Vec<&[u8]> = page
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    let good: Vec<(usize, &[u8])> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            std::str::from_utf8(l).is_ok_and(|t| serde_json::from_str::<IgnoredAny>(t).is_ok())
        })
        .map(|(i, l)| (i, *l))
        .collect();
    let array: Vec<&RawValue> =
        serde_json::from_slice(&rows.page).expect("the normalised page is a JSON array");
    assert_eq!(array.len(), good.len(), "one element per good line");
    assert_eq!(
        rows.positions,
        good.iter().map(|(i, _)| *i).collect::<Vec<_>>()
    );
    for (element, (_, line)) in array.iter().zip(&good) {
        assert_eq!(
            element.get().as_bytes(),
            line.trim_ascii(),
            "a line's bytes are kept"
        );
    }
    assert_eq!(
        rows.bad.len(),
        lines.len() - good.len(),
        "every other line is bad"
    );
    for bad in &rows.bad {
        assert_eq!(bad.raw, lines[bad.index], "a bad line keeps its bytes");
        assert!(
            std::str::from_utf8(bad.raw)
                .map_or(true, |t| serde_json::from_str::<IgnoredAny>(t).is_err())
        );
        let kind = bad.error.kind.as_str();
        assert!(kind == "malformed_json" || kind == "not_utf8", "{kind}");
    }
}

fn csv(page: &[u8]) {
    let Ok(rows) = normalize(Format::Csv, page, &ByLook) else {
        return; // a header that cannot name records: the page is refused whole
    };
    let header: Vec<String> = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(page)
        .headers()
        .map(|h| h.iter().map(|n| n.trim().to_owned()).collect())
        .unwrap_or_default();
    let array: Vec<serde_json::Map<String, serde_json::Value>> =
        match serde_json::from_slice(&rows.page) {
            Ok(a) => a,
            // Numbers beyond f64 are kept as their text (valid JSON that Value cannot hold).
            Err(e) if e.to_string().contains("number out of range") => return,
            Err(e) => panic!("the normalised page is not a JSON array of objects: {e}"),
        };
    assert_eq!(array.len(), rows.positions.len());
    for object in &array {
        for name in object.keys() {
            assert!(
                header.contains(name),
                "member {name:?} is not in the header {header:?}"
            );
        }
    }
    let mut all: Vec<usize> = rows
        .positions
        .iter()
        .copied()
        .chain(rows.bad.iter().map(|b| b.index))
        .collect();
    all.sort_unstable();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "no record is both good and bad");
    assert!(rows.positions.windows(2).all(|w| w[0] < w[1]));
    for bad in &rows.bad {
        assert_eq!(bad.error.kind.as_str(), "malformed_csv");
    }
}
