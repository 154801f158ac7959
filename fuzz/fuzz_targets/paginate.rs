//! The pagination parsers (`src/fetch/paginate.rs`, and the rate-limit headers of
//! `src/fetch/http.rs`) on arbitrary responses.
//!
//! Input: the first line is a `Link` (and rate-limit) header value, the rest the page body.
//! Never panics; `next` never returns the cursor it was given (a loop) unless the sync is done;
//! a URL built for any cursor stays on the source's origin; a `rel="next"` target is a
//! substring of the header.
#![no_main]

use std::sync::OnceLock;

use intake::config::StreamConfig;
use intake::fetch::http::{announced_quota, retry_after};
use intake::fetch::paginate::{PageCursor, PageFacts, next, next_link, request_url};
use intake::fetch::request::Values;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const BASE: &str = "http://api.example:8080/base/";

fn streams() -> &'static [StreamConfig] {
    static STREAMS: OnceLock<Vec<StreamConfig>> = OnceLock::new();
    STREAMS.get_or_init(|| {
        [
            r#"{ style = "cursor" }"#,
            r#"{ style = "link", size_param = "per_page" }"#,
            r#"{ style = "next_url", pointer = "/links/next" }"#,
            r#"{ style = "page", has_more = "/has_more", total = "/total" }"#,
            r#"{ style = "offset", total = "/total" }"#,
            r#"{ style = "after" }"#,
        ]
        .iter()
        .map(|style| intake::testing::stream(BASE, &format!("page_size = 3\npagination = {style}")))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (header, body) = text.split_once('\n').unwrap_or((&text, ""));

    if let Some(target) = next_link(header) {
        assert!(header.contains(&target));
    }
    if let Ok(v) = http::HeaderValue::from_str(header) {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, v.clone());
        h.insert("ratelimit", v.clone());
        h.insert("x-ratelimit-remaining", v.clone());
        h.insert("x-ratelimit-reset", v);
        if let Some(d) = retry_after(&h) {
            assert!(d.as_secs() <= 3600);
        }
        if let Some(q) = announced_quota(&h, None) {
            assert!(q.reset_in.as_secs() <= 3600);
        }
    }

    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let records = parsed
        .as_ref()
        .and_then(|b| b.pointer("/data"))
        .and_then(Value::as_array);
    let count = records.map_or(data.len() % 5, Vec::len);
    let last_id = records
        .and_then(|r| r.last())
        .and_then(|r| r.pointer("/id"))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    let n = data.len() as u64;
    let cursors = [
        PageCursor::Start,
        PageCursor::Token(header.to_owned()),
        PageCursor::Url(header.to_owned()),
        PageCursor::Page(n),
        PageCursor::Offset(n.wrapping_mul(7)),
        PageCursor::After(header.to_owned()),
        PageCursor::Done,
    ];
    let base = url::Url::parse(BASE).unwrap();
    for stream in streams() {
        for at in &cursors {
            let facts = PageFacts {
                body: parsed.as_ref(),
                link: Some(header),
                records: count,
                last_id: last_id.clone(),
            };
            if let Ok(after) = next(stream, at, &facts) {
                assert!(
                    after == PageCursor::Done || &after != at,
                    "{at:?} -> {after:?}: pagination would loop"
                );
            }
            let values = Values::at_page(at, stream.page_size, Some(header.to_owned()), None);
            if let Ok(url) = request_url(BASE, stream, at, &values, &[("updated_since", header)]) {
                assert_eq!(url.origin(), base.origin(), "{at:?} -> {url}");
            }
            // The cursor survives its round trip through the cursor record.
            let json = serde_json::to_string(at).unwrap();
            assert_eq!(&serde_json::from_str::<PageCursor>(&json).unwrap(), at);
        }
    }
});
