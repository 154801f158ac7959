//! Issue 10: the bad-input suite. Malformed, truncated, deeply nested (100 000 levels), huge and
//! non-UTF-8 JSON, wrong content types, pages that are not objects and records without a
//! primary key, through fetch (from a tiny local upstream), serve (webhooks and jobs) and
//! validate, on the real stack. Each ends in a DLQ entry with its `dlq.error.kind` and detail,
//! or an HTTP status with a reason; none crashes or hangs a stage, none is dropped silently
//! (every count is exact), and serve keeps answering good requests while bad ones arrive.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use intake::config::Config;
use intake::fetch::{self, FetchOptions};
use intake::headers::{self, Headers};
use intake::registry::Registry;
use intake::topics::TopicNames;
use serde_json::{Value as Json, json};
use support::*;

/// The schema of every stream of this suite.
const SCHEMA: &str = r#"{"type": "record", "name": "Thing", "namespace": "bad_input", "fields": [
  {"name": "id", "type": "string"},
  {"name": "version", "type": "long"},
  {"name": "name", "type": ["null", "string"], "default": null},
  {"name": "notes", "type": ["null", "string"], "default": null}
]}"#;

/// A stage may take this long for one bad input before it counts as a hang.
const NO_HANG: Duration = Duration::from_secs(120);

/// The values of the headers `names` of each record `keep` selects, sorted.
fn header_pairs<'a>(
    recs: &'a [Rec],
    keep: impl Fn(&Rec) -> bool,
    names: (&str, &str),
) -> Vec<(&'a str, &'a str)> {
    let mut pairs: Vec<(&str, &str)> = recs
        .iter()
        .filter(|r| keep(r))
        .map(|r| (r.header(names.0).unwrap(), r.header(names.1).unwrap()))
        .collect();
    pairs.sort_unstable();
    pairs
}

/// 100 000 levels of arrays.
fn deep_array() -> Vec<u8> {
    format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes()
}

/// A record with a member nested 100 000 objects deep, inside an otherwise good page.
fn deep_record_page() -> Vec<u8> {
    format!(
        r#"{{"data":[{{"id":"d1","version":1,"x":{}1{}}}]}}"#,
        r#"{"a":"#.repeat(100_000),
        "}".repeat(100_000)
    )
    .into_bytes()
}

/// Registers [`SCHEMA`] for every stream of the config and creates the topics.
async fn prepare(cfg: &Config) {
    apply_topics(cfg).await;
    let reg = Registry::new(&cfg.registry).unwrap();
    let names = TopicNames::from_config(cfg);
    for s in &cfg.sources {
        for st in &s.streams {
            intake::registry::apply_one(&reg, &names.subject(&s.name, &st.name), SCHEMA)
                .await
                .unwrap();
        }
    }
}

/// Data records (not sync markers) of the valid topics, as `stream/key`.
fn valid_keys(out: &BTreeMap<String, Vec<Rec>>, names: &TopicNames) -> Vec<String> {
    let mut keys: Vec<String> = out
        .iter()
        .filter(|(t, _)| t.ends_with(".valid"))
        .flat_map(|(t, recs)| {
            let (_, stream) = names.parse_valid(t).unwrap();
            recs.iter()
                .filter(|r| r.header(headers::KIND).is_none())
                .map(move |r| format!("{stream}/{}", r.key_str()))
        })
        .collect();
    keys.sort();
    keys
}

/// Runs validate in-process (support's `validate_until`) over the DLQ and every valid topic of
/// the config until `done` holds; a stage that hangs or dies fails here.
async fn validate_bad(
    cfg: &Arc<Config>,
    done: impl Fn(&BTreeMap<String, Vec<Rec>>) -> bool,
) -> BTreeMap<String, Vec<Rec>> {
    let names = TopicNames::from_config(cfg);
    let mut topics = vec![names.dlq()];
    for s in &cfg.sources {
        for st in &s.streams {
            topics.push(names.valid(&s.name, &st.name));
        }
    }
    validate_until(cfg, &topics, "the end of the bad input", done).await
}

/// `(stage, kind, key, index)` of every DLQ record, sorted; checks that each has a detail.
fn dlq_entries(dlq: &[Rec]) -> Vec<(String, String, String, Option<usize>)> {
    let mut got: Vec<_> = dlq
        .iter()
        .map(|r| {
            let detail = r.header(headers::DLQ_DETAIL).unwrap_or_default();
            assert!(!detail.is_empty(), "a DLQ entry without a detail: {r:?}");
            let index = r
                .header(headers::DLQ_ORIGIN)
                .and_then(|o| o.rsplit_once('#'))
                .map(|(_, i)| i.parse().unwrap());
            (
                r.header(headers::DLQ_STAGE).unwrap().to_owned(),
                r.header(headers::DLQ_KIND).unwrap().to_owned(),
                r.key_str().to_owned(),
                index,
            )
        })
        .collect();
    got.sort();
    got
}

fn detail_of<'a>(dlq: &'a [Rec], key: &str, kind: &str) -> Vec<&'a str> {
    dlq.iter()
        .filter(|r| r.key_str() == key && r.header(headers::DLQ_KIND) == Some(kind))
        .map(|r| r.header(headers::DLQ_DETAIL).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// fetch

/// A tiny upstream API: `GET /v1/{name}` answers the page registered under `name`, with its
/// content type, and counts requests.
struct Upstream {
    addr: std::net::SocketAddr,
    hits: Arc<Mutex<BTreeMap<String, u32>>>,
}

type Pages = Arc<HashMap<String, (&'static str, Bytes)>>;
/// Requests per page name.
type Hits = Arc<Mutex<BTreeMap<String, u32>>>;

async fn upstream(pages: HashMap<String, (&'static str, Bytes)>) -> Upstream {
    let hits: Hits = Arc::default();
    async fn page(
        State((pages, hits)): State<(Pages, Hits)>,
        Path(name): Path<String>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        *hits.lock().unwrap().entry(name.clone()).or_default() += 1;
        match pages.get(&name) {
            Some((ct, body)) => ([(CONTENT_TYPE, *ct)], body.clone()).into_response(),
            None => axum::http::StatusCode::NOT_FOUND.into_response(),
        }
    }
    let app = axum::Router::new()
        .route("/v1/{name}", axum::routing::get(page))
        .with_state((Arc::new(pages), hits.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream { addr, hits }
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_keeps_every_bad_page_with_a_clear_error_and_validate_sorts_the_rest() {
    const JSON: &str = "application/json";
    let huge_notes = "x".repeat(3 << 20);
    let mut truncated_huge =
        format!(r#"{{"data":[{{"id":"h1","version":1,"notes":"{huge_notes}"#).into_bytes();
    truncated_huge.truncate(truncated_huge.len() - 10);
    // (stream, pagination, content type, body)
    let cases: Vec<(&str, &str, &str, Vec<u8>)> = vec![
        (
            "truncated",
            "cursor",
            JSON,
            br#"{"data":[{"id":"t1","version":1},{"id":"t2""#.to_vec(),
        ),
        (
            "html",
            "cursor",
            "text/html",
            b"<html><body><h1>Down for maintenance</h1></body></html>".to_vec(),
        ),
        ("empty", "cursor", JSON, Vec::new()),
        ("deep", "cursor", JSON, deep_array()),
        ("deep_record", "cursor", JSON, deep_record_page()),
        (
            "latin1",
            "cursor",
            "application/json; charset=iso-8859-1",
            b"{\"data\":[{\"id\":\"caf\xe9\",\"version\":1}]}".to_vec(),
        ),
        ("huge_truncated", "cursor", JSON, truncated_huge.clone()),
        (
            "huge_record",
            "cursor",
            JSON,
            serde_json::to_vec(&json!({"data": [
                {"id": "big", "version": 1, "notes": huge_notes},
                {"id": "small", "version": 1}
            ]}))
            .unwrap(),
        ),
        (
            "array_top",
            "cursor",
            JSON,
            br#"[{"id":"a1","version":1}]"#.to_vec(),
        ),
        ("scalar_top", "cursor", JSON, br#""maintenance""#.to_vec()),
        (
            "no_pk",
            "cursor",
            JSON,
            br#"{"data":[{"id":"k1","version":1},{"name":"no id","version":1},{"id":null,"version":2},{"id":"k4","version":4}]}"#.to_vec(),
        ),
        (
            "no_pk_after",
            "after",
            JSON,
            br#"{"data":[{"id":"m1","version":1},{"name":"no id","version":1}],"has_more":true}"#
                .to_vec(),
        ),
        (
            "loop",
            "cursor",
            JSON,
            br#"{"data":[{"id":"l1","version":1}],"next_cursor":"c1"}"#.to_vec(),
        ),
        (
            "text_plain_json",
            "cursor",
            "text/plain",
            br#"{"data":[{"id":"p1","version":1}]}"#.to_vec(),
        ),
    ];
    let up = upstream(
        cases
            .iter()
            .map(|(n, _, ct, b)| (n.to_string(), (*ct, Bytes::from(b.clone()))))
            .collect(),
    )
    .await;
    let mut extra = format!(
        r#"
[[sources]]
name = "up"
base_url = "http://{}"
max_retries = 1
"#,
        up.addr
    );
    for (name, style, _, _) in &cases {
        extra.push_str(&sim_stream(
            name,
            &format!("/v1/{name}"),
            style,
            10,
            "pages_per_transaction = 1",
        ));
    }
    // The 3 MiB record is over what validate stores by claim-check here (2 MiB): too_large.
    let text = config_text(&extra).replacen("[blob]\n", "[blob]\nmax_record_bytes = 2097152\n", 1);
    let cfg = Arc::new(Config::from_toml(&text).unwrap());
    prepare(&cfg).await;
    let names = TopicNames::from_config(&cfg);

    // One fetch run per stream, all at once: each ends (Ok or a clear error), none hangs.
    let runs = cases.iter().map(|(name, ..)| {
        let cfg = cfg.clone();
        let name = name.to_string();
        async move {
            let opts = FetchOptions {
                once: true,
                streams: vec![format!("up/{name}")],
                ..FetchOptions::default()
            };
            let r = tokio::time::timeout(NO_HANG, fetch::run(cfg, opts, std::future::pending()))
                .await
                .unwrap_or_else(|_| panic!("fetch of `{name}` hung"));
            (name, r.map(|_| ()).map_err(|e| e.to_string()))
        }
    });
    let outcomes: BTreeMap<String, Result<(), String>> =
        futures::future::join_all(runs).await.into_iter().collect();
    let err = |name: &str| {
        outcomes[name]
            .as_ref()
            .expect_err(&format!("fetch of `{name}` should end in an error"))
            .clone()
    };
    for name in [
        "huge_record",
        "array_top",
        "scalar_top",
        "no_pk",
        "text_plain_json",
    ] {
        assert_eq!(outcomes[name], Ok(()), "{name}: the page lands");
    }
    for name in [
        "truncated",
        "html",
        "empty",
        "deep",
        "deep_record",
        "huge_truncated",
    ] {
        assert!(
            err(name).contains("is not valid JSON") && err(name).contains("kept in the DLQ"),
            "{name}: {}",
            err(name)
        );
    }
    assert_contains(&err("latin1"), "kept in the DLQ");
    assert_contains(
        &err("no_pk_after"),
        "no primary key at /id for starting_after",
    );
    assert_contains(&err("loop"), "pagination would loop");

    // Requests: a body that is not JSON is asked for three times, the rest once (the loop twice).
    let hits = up.hits.lock().unwrap().clone();
    let expected_hits: BTreeMap<String, u32> = cases
        .iter()
        .map(|(n, ..)| {
            let h = match *n {
                "truncated" | "html" | "empty" | "deep" | "deep_record" | "latin1"
                | "huge_truncated" => 3,
                "loop" => 2,
                _ => 1,
            };
            (n.to_string(), h)
        })
        .collect();
    assert_eq!(hits, expected_hits);

    // Landing: exactly the pages that could be followed, each once.
    let landing = read_topics(&[names.landing()])
        .await
        .remove(&names.landing())
        .unwrap();
    let pages = header_pairs(
        &landing,
        |r| matches!(r.header(headers::KIND), Some("page" | "blob-ref")),
        (headers::STREAM, headers::KIND),
    );
    assert_eq!(
        pages,
        [
            ("array_top", "page"),
            ("huge_record", "blob-ref"),
            ("loop", "page"),
            ("no_pk", "page"),
            ("scalar_top", "page"),
            ("text_plain_json", "page"),
        ]
    );

    // Validate takes the landed pages apart: good records on, bad ones to the DLQ.
    let fetch_dlq = 3 * 7 + 1 + 1;
    let out = validate_bad(&cfg, |out| {
        out[&names.dlq()].len() >= fetch_dlq + 5 && valid_keys(out, &names).len() >= 5
    })
    .await;
    assert_eq!(
        valid_keys(&out, &names),
        [
            "huge_record/small",
            "loop/l1",
            "no_pk/k1",
            "no_pk/k4",
            "text_plain_json/p1"
        ]
    );
    let dlq = &out[&names.dlq()];
    let f = |stage: &str, kind: &str, stream: &str, index: Option<usize>| {
        (
            stage.to_owned(),
            kind.to_owned(),
            format!("up/{stream}"),
            index,
        )
    };
    let mut expected = Vec::new();
    for (kind, stream) in [
        ("malformed_json", "truncated"),
        ("malformed_json", "html"),
        ("malformed_json", "empty"),
        ("malformed_json", "deep"),
        ("malformed_json", "deep_record"),
        ("not_utf8", "latin1"),
        ("malformed_json", "huge_truncated"),
    ] {
        expected.extend(std::iter::repeat_n(f("fetch", kind, stream, None), 3));
    }
    expected.push(f("fetch", "missing_key", "no_pk_after", None));
    expected.push(f("fetch", "bad_pagination", "loop", None));
    expected.push(f("validate", "too_large", "huge_record", Some(0)));
    expected.push(f("validate", "not_a_page", "array_top", None));
    expected.push(f("validate", "not_a_page", "scalar_top", None));
    expected.push(f("validate", "missing_key", "no_pk", Some(1)));
    expected.push(f("validate", "missing_key", "no_pk", Some(2)));
    expected.sort();
    assert_eq!(dlq_entries(dlq), expected);

    // Each entry says what was wrong, and keeps the bytes (or their blob reference).
    let check = |stream: &str, kind: &str, needles: &[&str]| {
        let details = detail_of(dlq, &format!("up/{stream}"), kind);
        assert!(!details.is_empty(), "{stream}");
        for d in details {
            for n in needles {
                assert!(d.contains(n), "{stream}: {d:?} lacks {n:?}");
            }
        }
    };
    check("truncated", "malformed_json", &["EOF while parsing"]);
    check(
        "html",
        "malformed_json",
        &[
            "content-type text/html",
            "expected value at line 1 column 1",
        ],
    );
    check("empty", "malformed_json", &["EOF while parsing a value"]);
    check("deep", "malformed_json", &["recursion limit exceeded"]);
    check(
        "deep_record",
        "malformed_json",
        &["recursion limit exceeded"],
    );
    check("latin1", "not_utf8", &["not UTF-8", "offset 19"]);
    check(
        "huge_truncated",
        "malformed_json",
        &["EOF while parsing", "the value is its blob reference"],
    );
    check(
        "no_pk_after",
        "missing_key",
        &["no primary key at /id for starting_after"],
    );
    check("loop", "bad_pagination", &["token:c1", "would loop"]);
    check(
        "array_top",
        "not_a_page",
        &["the parent of `data` is an array and `data` is not an index"],
    );
    check(
        "scalar_top",
        "not_a_page",
        &["the parent of `data` is a string"],
    );
    check(
        "huge_record",
        "too_large",
        &["bytes", "blob.max_record_bytes"],
    );
    check("no_pk", "missing_key", &["`id`"]);
    let body_of = |stream: &str| {
        cases
            .iter()
            .find(|(n, ..)| *n == stream)
            .map(|(.., b)| b.clone())
            .unwrap()
    };
    let blobs = intake::blob::BlobStore::open(&cfg.blob).unwrap();
    for r in dlq
        .iter()
        .filter(|r| r.header(headers::DLQ_STAGE) == Some("fetch"))
    {
        let stream = r.header(headers::STREAM).unwrap();
        if stream == "huge_truncated" {
            let b = intake::blob::BlobRef::parse_header(r.header(headers::BLOB).unwrap()).unwrap();
            assert_eq!(
                serde_json::from_slice::<intake::blob::BlobRef>(r.value.as_deref().unwrap())
                    .unwrap(),
                b
            );
            assert_eq!(&blobs.get(&b).await.unwrap()[..], &truncated_huge[..]);
        } else {
            assert_eq!(
                r.value.as_deref().unwrap_or_default(),
                &body_of(stream)[..],
                "{stream}: the DLQ keeps the page exactly as received"
            );
        }
    }
    let no_pk = dlq
        .iter()
        .filter(|r| r.key_str() == "up/no_pk")
        .map(|r| r.value.clone().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(
        no_pk,
        [
            br#"{"name":"no id","version":1}"#.to_vec(),
            br#"{"id":null,"version":2}"#.to_vec()
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// serve

const SECRET: &str = "whsec-bad-input";

use support::Serve as Server;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn event(id: &str, ty: &str, entity: &str, seq: u64, data: Json) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event_id": id, "type": ty, "stream": "things", "entity_id": entity, "seq": seq, "data": data
    }))
    .unwrap()
}

/// POSTs a webhook signed now with the given content type (None: no header).
async fn webhook(
    http: &reqwest::Client,
    base: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> (u16, Json) {
    webhook_signed_at(http, base, body, content_type, now()).await
}

/// [`webhook`] signed at `signed_at` (unix seconds): concurrent senders of one body sign at
/// distinct times, or serve would answer all but one 409 `in_flight` while the first is in flight.
async fn webhook_signed_at(
    http: &reqwest::Client,
    base: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
    signed_at: i64,
) -> (u16, Json) {
    let req = http
        .post(format!("{base}/v1/webhooks/shop"))
        .header(
            "X-Intake-Signature",
            intake::signing::sign(SECRET.as_bytes(), signed_at, &body),
        )
        .body(body);
    send_as(req, content_type).await
}

async fn job(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    query: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> (u16, Json) {
    let req = http
        .post(format!("{base}/v1/jobs?source=shop&stream=things{query}"))
        .header("Idempotency-Key", key)
        .body(body);
    send_as(req, content_type).await
}

/// Sends `req` with the `Content-Type` `content_type` (none if `None`); returns the status and
/// the JSON answer (null if none).
async fn send_as(mut req: reqwest::RequestBuilder, content_type: Option<&str>) -> (u16, Json) {
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Json::Null))
}

/// `(what, body, content type, status, error code, words the reason must contain)`.
type BadCase = (
    &'static str,
    Vec<u8>,
    Option<&'static str>,
    u16,
    &'static str,
    &'static [&'static str],
);

/// A JSON body `prefix` padded past `max_body` by 1 KiB: refused as too large (413).
fn too_big(what: &'static str, prefix: &[u8], max_body: usize) -> BadCase {
    let mut b = prefix.to_vec();
    b.resize(max_body + 1024, b'x');
    (what, b, Some("application/json"), 413, "", &[])
}

/// A body nested deeper than the parser's recursion limit: refused as malformed JSON (400).
fn too_deep(what: &'static str, body: Vec<u8>, content_type: Option<&'static str>) -> BadCase {
    (
        what,
        body,
        content_type,
        400,
        "malformed_json",
        &["recursion limit exceeded"],
    )
}

fn bad_webhooks(max_body: usize) -> Vec<BadCase> {
    let json = Some("application/json");
    let good = event(
        "e-ct",
        "updated",
        "t-ct",
        1,
        json!({"id": "t-ct", "version": 1}),
    );
    vec![
        (
            "truncated",
            br#"{"event_id":"x","type":"updated""#.to_vec(),
            json,
            400,
            "malformed_json",
            &["EOF while parsing"],
        ),
        (
            "empty",
            Vec::new(),
            json,
            400,
            "malformed_json",
            &["EOF while parsing a value"],
        ),
        too_deep("100 000 levels", deep_array(), json),
        too_deep("a record 100 000 levels deep", deep_record_page(), json),
        (
            "not UTF-8",
            b"{\"event_id\":\"caf\xe9\",\"type\":\"updated\"}".to_vec(),
            json,
            400,
            "not_utf8",
            &["not UTF-8", "offset 16"],
        ),
        too_big("huge", b"{\"event_id\":\"huge\",\"pad\":\"", max_body),
        (
            "text/plain",
            good.clone(),
            Some("text/plain"),
            415,
            "unsupported_media_type",
            &["\"text/plain\" is not JSON"],
        ),
        (
            "a form",
            good.clone(),
            Some("application/x-www-form-urlencoded"),
            415,
            "unsupported_media_type",
            &["not JSON"],
        ),
        (
            "an array",
            br#"[{"event_id":"a"}]"#.to_vec(),
            json,
            400,
            "not_an_object",
            &["must be a JSON object"],
        ),
        (
            "a string",
            br#""hello""#.to_vec(),
            json,
            400,
            "not_an_object",
            &["must be a JSON object"],
        ),
        (
            "null",
            b"null".to_vec(),
            None,
            400,
            "not_an_object",
            &["must be a JSON object"],
        ),
        (
            "no entity id",
            serde_json::to_vec(
                &json!({"event_id": "ne", "type": "updated", "stream": "things", "seq": 1}),
            )
            .unwrap(),
            json,
            400,
            "missing_field",
            &["no entity id at /entity_id"],
        ),
        (
            "a type the source does not map",
            event(
                "e-type",
                "exploded",
                "t-type",
                1,
                json!({"id": "t-type", "version": 1}),
            ),
            json,
            422,
            "unknown_event_type",
            &["event type `exploded`", "webhook.upsert"],
        ),
    ]
}

fn bad_jobs(max_body: usize) -> Vec<BadCase> {
    let json = Some("application/json");
    vec![
        (
            "truncated",
            br#"{"data":[{"id":"x""#.to_vec(),
            json,
            400,
            "malformed_json",
            &["EOF while parsing"],
        ),
        too_deep("100 000 levels", deep_array(), None),
        (
            "not UTF-8",
            b"{\"data\":[{\"id\":\"caf\xe9\"}]}".to_vec(),
            json,
            400,
            "not_utf8",
            &["not UTF-8", "offset 19"],
        ),
        too_big(
            "huge inline",
            b"{\"data\":[{\"id\":\"h\",\"pad\":\"",
            max_body,
        ),
        (
            "text/csv",
            b"id,version\nc1,1\n".to_vec(),
            Some("text/csv"),
            415,
            "unsupported_media_type",
            &["\"text/csv\" is not JSON"],
        ),
        (
            "an array",
            br#"[{"id":"a","version":1}]"#.to_vec(),
            json,
            400,
            "not_a_batch",
            &["no record array at `/data`"],
        ),
        (
            "data not an array",
            br#"{"data":"soon"}"#.to_vec(),
            json,
            400,
            "not_a_batch",
            &["no record array at `/data`"],
        ),
    ]
}

fn check_answer(what: &str, case: &BadCase, got: &(u16, Json)) {
    let (_, _, _, status, code, words) = case;
    assert_eq!(got.0, *status, "{what} {}: {}", case.0, got.1);
    if !code.is_empty() {
        assert_eq!(got.1["error"], *code, "{what} {}: {}", case.0, got.1);
        let message = got.1["message"].as_str().unwrap();
        for w in *words {
            assert!(
                message.contains(w),
                "{what} {}: {message:?} lacks {w:?}",
                case.0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_answers_every_bad_request_with_a_reason_keeps_serving_and_validate_keeps_the_rest() {
    // The 6 MiB job record is over what validate stores by claim-check here (4 MiB): too_large.
    let text = config_text(&shop_source(&[SECRET], &["things"])).replacen(
        "[blob]\n",
        "[blob]\nmax_record_bytes = 4194304\n",
        1,
    );
    let cfg = Arc::new(Config::from_toml(&text).unwrap());
    prepare(&cfg).await;
    let names = TopicNames::from_config(&cfg);
    let srv = Server::start(cfg.clone()).await;
    let max_body = cfg.serve.max_body_bytes;
    let http = serve_http();

    // Good webhooks flow all along, one at a time, and must keep getting 202 promptly.
    const GOOD: u64 = 150;
    let good = {
        let (http, base) = (http.clone(), srv.base.clone());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for i in 0..GOOD {
                let id = format!("t-{i}");
                let body = event(
                    &format!("e-{i}"),
                    "updated",
                    &id,
                    1,
                    json!({"id": id, "version": 1}),
                );
                let started = Instant::now();
                let (s, v) = webhook(&http, &base, body, Some("application/json")).await;
                assert_eq!(s, 202, "good event {i}: {v}");
                slowest = slowest.max(started.elapsed());
            }
            slowest
        })
    };

    // Meanwhile: three rounds of every bad webhook and job from four clients at once.
    let webhooks = Arc::new(bad_webhooks(max_body));
    let jobs = Arc::new(bad_jobs(max_body));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (http, base, webhooks, jobs) = (
            http.clone(),
            srv.base.clone(),
            webhooks.clone(),
            jobs.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut answered = 0;
            for round in 0..3 {
                for case in webhooks.iter() {
                    let signed_at = now() - c;
                    let got =
                        webhook_signed_at(&http, &base, case.1.clone(), case.2, signed_at).await;
                    check_answer("webhook", case, &got);
                    answered += 1;
                }
                for (i, case) in jobs.iter().enumerate() {
                    let key = format!("bad-{c}-{round}-{i}");
                    let got = job(&http, &base, &key, "", case.1.clone(), case.2).await;
                    check_answer("job", case, &got);
                    answered += 1;
                }
            }
            answered
        }));
    }
    let mut answered = 0;
    for c in clients {
        answered += tokio::time::timeout(NO_HANG, c)
            .await
            .expect("bad requests hung")
            .unwrap();
    }
    assert_eq!(answered, 4 * 3 * (webhooks.len() + jobs.len()));
    let slowest = tokio::time::timeout(NO_HANG, good)
        .await
        .expect("good requests hung")
        .unwrap();
    assert!(
        slowest < Duration::from_secs(10),
        "a good webhook waited {slowest:?} while bad ones arrived"
    );

    // Accepted by serve (the envelope is fine), refused by validate (the record is not).
    let j = Some("application/json");
    let accepted = [
        (
            event(
                "e-nopk",
                "updated",
                "t-nopk",
                1,
                json!({"name": "no id", "version": 1}),
            ),
            j,
        ),
        // JSON by another label, and no label at all.
        (
            event(
                "e-cs",
                "updated",
                "t-cs",
                1,
                json!({"id": "t-cs", "version": 1}),
            ),
            Some("application/json; charset=utf-8"),
        ),
        (
            event(
                "e-ce",
                "updated",
                "t-ce",
                1,
                json!({"id": "t-ce", "version": 1}),
            ),
            Some("application/cloudevents+json"),
        ),
        (
            event(
                "e-none",
                "updated",
                "t-none",
                1,
                json!({"id": "t-none", "version": 1}),
            ),
            None,
        ),
    ];
    for (body, ct) in accepted {
        let (s, v) = webhook(&http, &srv.base, body, ct).await;
        assert_eq!(s, 202, "{v}");
    }
    let nopk_batch =
        br#"{"data":[{"id":"j1","version":1},{"name":"no id","version":1},{"id":"j3","version":3}]}"#;
    let (s, v) = job(&http, &srv.base, "job-nopk", "", nopk_batch.to_vec(), j).await;
    assert_eq!((s, v["records"].as_u64()), (201, Some(3)), "{v}");

    // Jobs by reference: a path that escapes the upload area, a deep blob, a huge record.
    let (s, v) = job(
        &http,
        &srv.base,
        "job-escape",
        "&blob=../../../../etc/passwd",
        vec![],
        None,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("unknown_blob")), "{v}");
    let put = |name: &str, body: Vec<u8>| {
        http.put(format!("{}/v1/blobs/{name}", srv.base))
            .body(body)
            .send()
    };
    assert_eq!(
        put("deep.json", deep_array())
            .await
            .unwrap()
            .status()
            .as_u16(),
        201
    );
    let (s, v) = job(
        &http,
        &srv.base,
        "job-deep",
        "&blob=deep.json",
        vec![],
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("malformed_json")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("recursion limit exceeded"),
        "{v}"
    );
    let huge = serde_json::to_vec(&json!({"data": [
        {"id": "jbig", "version": 1, "notes": "y".repeat(6 << 20)},
        {"id": "jsmall", "version": 1}
    ]}))
    .unwrap();
    assert_eq!(put("huge.json", huge).await.unwrap().status().as_u16(), 201);
    let (s, v) = job(
        &http,
        &srv.base,
        "job-huge",
        "&blob=huge.json",
        vec![],
        None,
    )
    .await;
    assert_eq!((s, v["records"].as_u64()), (201, Some(2)), "{v}");

    // The server is still healthy.
    let r = http
        .get(format!("{}/healthz", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    srv.stop().await;

    // Landing holds exactly the accepted requests, once each: nothing refused landed.
    let landing = read_topics(&[names.landing()])
        .await
        .remove(&names.landing())
        .unwrap();
    let events: Vec<&str> = landing
        .iter()
        .filter(|r| r.header(headers::KIND) == Some("event"))
        .map(|r| r.header(headers::EVENT_ID).unwrap())
        .collect();
    let mut unique = events.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        (events.len(), unique.len()),
        (GOOD as usize + 4, GOOD as usize + 4)
    );
    let jobs_landed = header_pairs(
        &landing,
        |r| r.header(headers::JOB_ID).is_some(),
        (headers::JOB_ID, headers::KIND),
    );
    assert_eq!(
        jobs_landed,
        [("job-huge", "blob-ref"), ("job-nopk", "batch")]
    );
    assert_eq!(landing.len(), GOOD as usize + 4 + 2);

    // Validate: every accepted record valid or in the DLQ with its reason.
    let want_valid = GOOD as usize + 3 + 2 + 1;
    let out = validate_bad(&cfg, |out| {
        out[&names.dlq()].len() >= 3 && valid_keys(out, &names).len() >= want_valid
    })
    .await;
    let mut expected_valid: Vec<String> = (0..GOOD).map(|i| format!("things/t-{i}")).collect();
    for k in ["t-cs", "t-ce", "t-none", "j1", "j3", "jsmall"] {
        expected_valid.push(format!("things/{k}"));
    }
    expected_valid.sort();
    assert_eq!(valid_keys(&out, &names), expected_valid);
    let dlq = &out[&names.dlq()];
    let mut expected = vec![
        (
            "validate".to_owned(),
            "missing_key".to_owned(),
            "t-nopk".to_owned(),
            None,
        ),
        (
            "validate".to_owned(),
            "missing_key".to_owned(),
            "shop/things".to_owned(),
            Some(1),
        ),
        (
            "validate".to_owned(),
            "too_large".to_owned(),
            "shop/things".to_owned(),
            Some(0),
        ),
    ];
    expected.sort();
    assert_eq!(dlq_entries(dlq), expected);
    assert!(detail_of(dlq, "t-nopk", "missing_key")[0].contains("`id`"));
    // An event is kept whole; a batch record as its own bytes.
    let nopk_event = dlq.iter().find(|r| r.key_str() == "t-nopk").unwrap();
    assert_eq!(
        serde_json::from_slice::<Json>(nopk_event.value.as_deref().unwrap()).unwrap()["event_id"],
        "e-nopk"
    );
    let nopk_rec = dlq
        .iter()
        .find(|r| {
            r.header(headers::DLQ_KIND) == Some("missing_key") && r.key_str() == "shop/things"
        })
        .unwrap();
    assert_eq!(
        nopk_rec.value.as_deref(),
        Some(&br#"{"name":"no id","version":1}"#[..])
    );
}

// ---------------------------------------------------------------------------------------------
// validate

#[tokio::test(flavor = "multi_thread")]
async fn validate_keeps_landing_records_no_other_stage_would_write() {
    let cfg = Arc::new(config(&keyed_source("up", "", &[("things", "")])));
    prepare(&cfg).await;
    let names = TopicNames::from_config(&cfg);
    let page = |kind: &str| {
        Headers::new()
            .with(headers::SOURCE, "up")
            .with(headers::STREAM, "things")
            .with(headers::KIND, kind)
            .with(headers::SYNC_ID, "s-1")
    };
    let event = || {
        Headers::new()
            .with(headers::SOURCE, "up")
            .with(headers::KIND, "event")
    };
    let k = "up/things".to_owned();
    land(
        &cfg,
        vec![
            (k.clone(), Some(deep_array()), page("page")),
            (k.clone(), Some(deep_record_page()), page("batch")),
            ("e1".into(), Some(deep_record_page()), event()),
            (
                "e2".into(),
                Some(b"{\"event_id\":\"\xff\"}".to_vec()),
                event(),
            ),
            (
                "e3".into(),
                Some(br#"[{"event_id":"x"}]"#.to_vec()),
                event(),
            ),
            ("e4".into(), None, event()),
            (k.clone(), None, page("page")),
            (k.clone(), Some(b"42".to_vec()), page("batch")),
            (
                k.clone(),
                Some(b"{\"data\":[{\"id\":\"\xc3\"}]}".to_vec()),
                page("page"),
            ),
            (
                k.clone(),
                Some(b"not a reference".to_vec()),
                page("blob-ref"),
            ),
            (
                k.clone(),
                Some(br#"{"data":[{"id":"ok","version":1}]}"#.to_vec()),
                page("page"),
            ),
            // JSON by the grammar, not as values (the fuzzer's finds): a lone surrogate in a
            // field and in a key, a number beyond f64; a surrogate pair is fine.
            (
                k.clone(),
                Some(
                    br#"{"data":[{"id":"s1","version":1,"name":"\ud83dx"},{"id":"s2","version":1e400},{"id":"\ud83d","version":1},{"id":"s4","version":1,"name":"\ud83d\ude00"}]}"#
                        .to_vec(),
                ),
                page("page"),
            ),
        ],
    )
    .await;
    let out = validate_bad(&cfg, |out| {
        out[&names.dlq()].len() >= 13 && valid_keys(out, &names).len() >= 2
    })
    .await;
    assert_eq!(valid_keys(&out, &names), ["things/ok", "things/s4"]);
    let dlq = &out[&names.dlq()];
    let got: Vec<(String, String)> = {
        let mut v: Vec<_> = dlq
            .iter()
            .map(|r| {
                (
                    r.key_str().to_owned(),
                    r.header(headers::DLQ_KIND).unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    let mut expected = vec![
        s("up/things", "malformed_json"),
        s("up/things", "malformed_json"),
        s("e1", "malformed_json"),
        s("e2", "not_utf8"),
        s("e3", "not_a_page"),
        s("e4", "malformed_json"),
        s("up/things", "malformed_json"),
        s("up/things", "not_a_page"),
        s("up/things", "not_utf8"),
        s("up/things", "blob_unreadable"),
        s("up/things", "malformed_json"),
        s("up/things", "bad_version"),
        s("up/things", "missing_key"),
    ];
    expected.sort();
    assert_eq!(got, expected);
    for r in dlq {
        assert_eq!(r.header(headers::DLQ_STAGE), Some("validate"));
    }
    let deep: Vec<&str> = dlq
        .iter()
        .filter(|r| r.header(headers::DLQ_KIND) == Some("malformed_json"))
        .map(|r| r.header(headers::DLQ_DETAIL).unwrap())
        .collect();
    assert_eq!(
        deep.iter()
            .filter(|d| d.contains("nested deeper than 127 levels"))
            .count(),
        2,
        "{deep:?}"
    );
    assert_eq!(
        deep.iter()
            .filter(|d| d.contains("recursion limit exceeded"))
            .count(),
        1,
        "{deep:?}"
    );
    let detail = |kind: &str| {
        dlq.iter()
            .find(|r| {
                r.header(headers::DLQ_KIND) == Some(kind)
                    && r.header(headers::DLQ_ORIGIN)
                        .is_some_and(|o| o.contains('#'))
            })
            .and_then(|r| r.header(headers::DLQ_DETAIL))
            .unwrap_or_default()
    };
    assert_contains(detail("malformed_json"), "hex escape");
    assert_contains(detail("bad_version"), "number out of range");
    assert_contains(detail("missing_key"), "hex escape");
}
