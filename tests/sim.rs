//! The simulator judged over real HTTP on 127.0.0.1: every pagination mode yields every record
//! exactly once, the truth agrees with the list endpoints, one seed gives the same bytes,
//! quota enforcement matches its own counters, faults never change the truth, and webhooks
//! verify with the documented signature scheme.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use intake::signing::{self, SignatureError};
use intake::sim::{self, SimArgs, SimHandle, Style};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "test";
const STREAMS: [&str; 3] = ["customers", "orders", "events"];

/// Starts a simulator with `flags` (space-separated), a generous token `test`, and no background
/// writer unless `flags` set one.
async fn start(flags: &str) -> SimHandle {
    let mut argv = vec!["sim", "--token", "test=1000000"];
    if !flags.contains("--write-rate") {
        argv.extend(["--write-rate", "0"]);
    }
    argv.extend(flags.split_whitespace());
    sim::spawn(SimArgs::try_parse_from(argv).expect("flags"))
        .await
        .expect("sim starts")
}

/// A simulator started with `flags` (see [`start`]), a [`client`], and the URL of `path` on it.
async fn start_at(flags: &str, path: &str) -> (SimHandle, reqwest::Client, String) {
    let sim = start(flags).await;
    let url = sim.url(path);
    (sim, client(), url)
}

/// [`start_at`] for the quota tests: five records a stream and one token `token` (`NAME=LIMIT`),
/// with `quota` its other `--quota-*` flags.
async fn start_quota(token: &str, quota: &str, path: &str) -> (SimHandle, reqwest::Client, String) {
    start_at(&format!("--records 5 --token {token} {quota}"), path).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn get(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answered")
}

async fn json(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Value {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// POSTs to an admin endpoint; its JSON answer.
async fn post(client: &reqwest::Client, url: &str) -> Value {
    json(client, reqwest::Method::POST, url, None).await
}

/// PUTs JSON to an admin endpoint; its JSON answer.
async fn put(client: &reqwest::Client, url: &str, body: Value) -> Value {
    json(client, reqwest::Method::PUT, url, Some(body)).await
}

#[derive(Deserialize)]
struct Live {
    version: u64,
    record: Box<RawValue>,
}

#[derive(Deserialize)]
struct Deleted {
    version: u64,
}

#[derive(Deserialize)]
struct StreamTruth {
    live: BTreeMap<String, Live>,
    deleted: BTreeMap<String, Deleted>,
    drifted: BTreeMap<String, String>,
    large: Vec<String>,
    backdated: Vec<String>,
}

#[derive(Deserialize)]
struct Truth {
    paused: bool,
    writes: u64,
    streams: BTreeMap<String, StreamTruth>,
}

/// The body of a GET of `path` on `sim` without a token (its admin and health endpoints).
async fn get_untokened(client: &reqwest::Client, sim: &SimHandle, path: &str) -> bytes::Bytes {
    let response = client.get(sim.url(path)).send().await.unwrap();
    response.bytes().await.unwrap()
}

/// The simulator's truth, as it answered it.
async fn truth_bytes(client: &reqwest::Client, sim: &SimHandle) -> bytes::Bytes {
    get_untokened(client, sim, "/admin/truth").await
}

async fn truth(client: &reqwest::Client, sim: &SimHandle) -> Truth {
    let bytes = truth_bytes(client, sim).await;
    serde_json::from_slice(&bytes).expect("truth parses")
}

async fn stats(client: &reqwest::Client, sim: &SimHandle) -> Value {
    json(client, reqwest::Method::GET, &sim.url("/admin/stats"), None).await
}

#[derive(Deserialize)]
struct Data {
    data: Vec<Box<RawValue>>,
}

/// One page as served.
struct Page {
    body: Vec<u8>,
    link: Option<String>,
    records: Vec<(String, String)>,
    meta: Value,
}

async fn page(client: &reqwest::Client, url: &str) -> Page {
    let response = get(client, url).await;
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    let link = response
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.bytes().await.unwrap().to_vec();
    let data: Data = serde_json::from_slice(&body).expect("page parses");
    let records = data
        .data
        .iter()
        .map(|raw| {
            let value: Value = serde_json::from_str(raw.get()).unwrap();
            (
                value["id"].as_str().unwrap().to_owned(),
                raw.get().to_owned(),
            )
        })
        .collect();
    let mut meta: Value = serde_json::from_slice(&body).unwrap();
    meta.as_object_mut().unwrap().remove("data");
    Page {
        body,
        link,
        records,
        meta,
    }
}

fn next_link(header: &str) -> String {
    let (url, rel) = header.split_once(';').unwrap();
    assert_eq!(rel.trim(), "rel=\"next\"");
    url.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// Walks every page of `path` in `style`, following the style's own protocol; returns the
/// pages in order.
async fn walk(
    client: &reqwest::Client,
    sim: &SimHandle,
    path: &str,
    style: Style,
    limit: usize,
    since: Option<&str>,
) -> Vec<Page> {
    let base = sim.url(path);
    let filter = since
        .map(|s| format!("&updated_since={}", urlencode(s)))
        .unwrap_or_default();
    let size = if style == Style::Page {
        "per_page"
    } else {
        "limit"
    };
    let mut url = match style {
        Style::Page => format!("{base}?page=1&{size}={limit}{filter}"),
        Style::Offset => format!("{base}?offset=0&{size}={limit}{filter}"),
        _ => format!("{base}?{size}={limit}{filter}"),
    };
    let mut pages: Vec<Page> = Vec::new();
    let mut seen = 0;
    loop {
        assert!(pages.len() < 10_000, "pagination does not end");
        let p = page(client, &url).await;
        seen += p.records.len();
        let next = match style {
            Style::Cursor => p.meta["next_cursor"]
                .as_str()
                .map(|c| format!("{base}?{size}={limit}&cursor={c}{filter}")),
            Style::Link => p.link.as_deref().map(next_link),
            Style::NextUrl => p.meta["links"]["next"].as_str().map(str::to_owned),
            Style::Page => {
                let n = p.meta["page"].as_u64().unwrap();
                (n < p.meta["total_pages"].as_u64().unwrap())
                    .then(|| format!("{base}?page={}&{size}={limit}{filter}", n + 1))
            }
            Style::Offset => (seen < p.meta["total"].as_u64().unwrap() as usize)
                .then(|| format!("{base}?offset={seen}&{size}={limit}{filter}")),
            Style::After => p.meta["has_more"].as_bool().unwrap().then(|| {
                let last = &p.records.last().unwrap().0;
                format!("{base}?{size}={limit}&starting_after={last}{filter}")
            }),
        };
        pages.push(p);
        match next {
            Some(n) => url = n,
            None => return pages,
        }
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn records(pages: &[Page]) -> Vec<(String, String)> {
    pages
        .iter()
        .flat_map(|p| p.records.iter().cloned())
        .collect()
}

fn time_field(stream: &str) -> &'static str {
    if stream == "events" {
        "occurred_at"
    } else {
        "updated_at"
    }
}

#[tokio::test]
async fn every_style_yields_every_record_exactly_once_and_agrees_with_the_truth() {
    let sim =
        start("--records 137 --seed 3 --drift-rate 0.2 --backdate-rate 0.3 --start-paused").await;
    let client = client();
    // History first: creates, updates (some backdated) and deletes, while the writer is paused.
    let writes = post(&client, &sim.url("/admin/writes?n=300")).await;
    assert_eq!(writes["changes"].as_array().unwrap().len(), 300);
    let truth = truth(&client, &sim).await;
    assert!(truth.paused);
    assert_eq!(truth.writes, 300);
    let mut checked_pages = 0;
    for stream in STREAMS {
        let t = &truth.streams[stream];
        if stream != "events" {
            assert!(!t.deleted.is_empty(), "{stream}: some records were deleted");
            assert!(
                !t.backdated.is_empty(),
                "{stream}: some updates were backdated"
            );
        }
        // The median `updated_at` as an updated_since threshold.
        let mut times: Vec<String> = t
            .live
            .values()
            .map(|l| {
                let v: Value = serde_json::from_str(l.record.get()).unwrap();
                v[time_field(stream)].as_str().unwrap().to_owned()
            })
            .collect();
        times.sort();
        let since = times[times.len() / 2].clone();
        for style in Style::ALL {
            for filter in [None, Some(since.as_str())] {
                let path = format!("/v1/styles/{}/{stream}", style.as_str());
                let pages = walk(&client, &sim, &path, style, 10, filter).await;
                checked_pages += pages.len();
                let served = records(&pages);
                let ids: Vec<&String> = served.iter().map(|(id, _)| id).collect();
                let unique: BTreeSet<&String> = ids.iter().copied().collect();
                assert_eq!(
                    unique.len(),
                    ids.len(),
                    "{style:?} {stream} {filter:?}: a record twice"
                );
                let expected: BTreeSet<&String> = t
                    .live
                    .iter()
                    .filter(|(_, l)| {
                        let v: Value = serde_json::from_str(l.record.get()).unwrap();
                        filter.is_none_or(|s| v[time_field(stream)].as_str().unwrap() >= s)
                    })
                    .map(|(id, _)| id)
                    .collect();
                assert_eq!(unique, expected, "{style:?} {stream} {filter:?}");
                if filter.is_none() {
                    let mut sorted = ids.clone();
                    sorted.sort();
                    assert_eq!(ids, sorted, "id order");
                    assert_eq!(
                        pages.len(),
                        expected.len().div_ceil(10),
                        "no empty last page"
                    );
                }
                for (id, raw) in &served {
                    assert_eq!(raw, t.live[id].record.get(), "served bytes equal the truth");
                    let v: Value = serde_json::from_str(raw).unwrap();
                    assert_eq!(v["version"], t.live[id].version);
                    assert!(!t.deleted.contains_key(id));
                }
            }
        }
    }
    assert!(checked_pages > 100);
    sim.stop().await.unwrap();
}

/// The drift kind a record shows, judged against the documented schema.
fn classify(stream: &str, record: &Value) -> Option<&'static str> {
    let obj = record.as_object().unwrap();
    let (fields, required, enum_field, values): (&[&str], &[&str], &str, &[&str]) = match stream {
        "customers" => (
            &[
                "id",
                "name",
                "email",
                "status",
                "created_at",
                "updated_at",
                "version",
                "notes",
            ],
            &["email"],
            "status",
            &["active", "inactive", "suspended"],
        ),
        "orders" => (
            &[
                "id",
                "customer_id",
                "amount_cents",
                "currency",
                "status",
                "created_at",
                "updated_at",
                "version",
                "notes",
            ],
            &["currency"],
            "status",
            &["pending", "paid", "shipped", "refunded"],
        ),
        _ => (
            &[
                "id",
                "type",
                "entity_id",
                "occurred_at",
                "version",
                "payload",
                "notes",
            ],
            &["entity_id"],
            "type",
            &["page_view", "login", "logout", "purchase"],
        ),
    };
    if obj.keys().any(|k| !fields.contains(&k.as_str())) {
        return Some("unknown_field");
    }
    if required.iter().any(|f| !obj.contains_key(*f)) {
        return Some("missing_field");
    }
    let typed_ok = match stream {
        "customers" => obj["email"].is_string(),
        "orders" => obj["amount_cents"].is_i64(),
        _ => obj["type"].is_string(),
    };
    if !typed_ok {
        return Some("type_mismatch");
    }
    if !values.contains(&obj[enum_field].as_str().unwrap()) {
        return Some("unknown_enum");
    }
    None
}

#[tokio::test]
async fn default_styles_serve_the_truth_with_drift_and_large_records_named_exactly() {
    let sim = start(
        "--records 60 --drift-rate 0.4 --large-rate 0.05 --large-bytes 1100000 --start-paused",
    )
    .await;
    let client = client();
    post(&client, &sim.url("/admin/writes?n=50")).await;
    let truth = truth(&client, &sim).await;
    let mut kinds_seen = BTreeSet::new();
    let mut large_seen = 0;
    for (stream, style) in STREAMS
        .into_iter()
        .zip([Style::Cursor, Style::Link, Style::After])
    {
        let t = &truth.streams[stream];
        let served = records(&walk(&client, &sim, &format!("/v1/{stream}"), style, 25, None).await);
        assert_eq!(served.len(), t.live.len(), "{stream}");
        let mut drifted = BTreeMap::new();
        let mut large = BTreeSet::new();
        for (id, raw) in &served {
            assert_eq!(raw, t.live[id].record.get());
            let value: Value = serde_json::from_str(raw).unwrap();
            if let Some(kind) = classify(stream, &value) {
                drifted.insert(id.clone(), kind.to_owned());
            }
            if value
                .get("notes")
                .and_then(Value::as_str)
                .is_some_and(|n| n.len() > 1 << 20)
            {
                large.insert(id.clone());
            }
        }
        let live_drifted: BTreeMap<String, String> = t
            .drifted
            .iter()
            .filter(|(id, _)| t.live.contains_key(*id))
            .map(|(id, kind)| (id.clone(), kind.clone()))
            .collect();
        assert_eq!(
            drifted, live_drifted,
            "{stream}: the truth names exactly the drifted records"
        );
        let live_large: BTreeSet<String> = t
            .large
            .iter()
            .filter(|id| t.live.contains_key(*id))
            .cloned()
            .collect();
        assert_eq!(
            large, live_large,
            "{stream}: the truth names exactly the large records"
        );
        kinds_seen.extend(drifted.into_values());
        large_seen += large.len();
    }
    assert_eq!(
        kinds_seen.len(),
        4,
        "every drift kind occurs: {kinds_seen:?}"
    );
    assert!(large_seen > 0);
    sim.stop().await.unwrap();
}

async fn all_bodies(client: &reqwest::Client, sim: &SimHandle) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    for stream in STREAMS {
        for style in Style::ALL {
            let path = format!("/v1/styles/{}/{stream}", style.as_str());
            for p in walk(client, sim, &path, style, 16, Some("2024-01-05T00:00:00Z")).await {
                let body = String::from_utf8(p.body).unwrap();
                bodies.push(body.replace(&sim.addr.to_string(), "HOST").into_bytes());
            }
            for p in walk(client, sim, &path, style, 16, None).await {
                // A `next_url` body names this simulator's port too.
                let body = String::from_utf8(p.body).unwrap();
                bodies.push(body.replace(&sim.addr.to_string(), "HOST").into_bytes());
                if let Some(link) = p.link {
                    // The Link URL names this simulator's port; the rest is the same.
                    bodies.push(link.replace(&sim.addr.to_string(), "HOST").into_bytes());
                }
            }
        }
    }
    bodies
}

#[tokio::test]
async fn the_same_seed_gives_byte_identical_pages() {
    let flags = "--records 70 --drift-rate 0.3 --large-rate 0.03";
    let a = start(&format!("{flags} --seed 7")).await;
    let b = start(&format!("{flags} --seed 7")).await;
    let c = start(&format!("{flags} --seed 8")).await;
    let client = client();
    let (pa, pb, pc) = (
        all_bodies(&client, &a).await,
        all_bodies(&client, &b).await,
        all_bodies(&client, &c).await,
    );
    assert!(pa.len() > 60);
    assert_eq!(pa.len(), pb.len());
    for (i, (x, y)) in pa.iter().zip(&pb).enumerate() {
        assert!(x == y, "page {i} differs between two sims of one seed");
    }
    assert_ne!(pa, pc, "another seed, other data");
    // The truth too, record for record.
    let (ta, tb) = (truth(&client, &a).await, truth(&client, &b).await);
    for stream in STREAMS {
        let ra: Vec<&str> = ta.streams[stream]
            .live
            .values()
            .map(|l| l.record.get())
            .collect();
        let rb: Vec<&str> = tb.streams[stream]
            .live
            .values()
            .map(|l| l.record.get())
            .collect();
        assert_eq!(ra, rb);
        assert_eq!(ta.streams[stream].drifted, tb.streams[stream].drifted);
    }
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_fixed_window_admits_exactly_its_limit_and_counts_every_request() {
    let (sim, client, url) = start_quota("q=5", "--quota-window 1h", "/v1/customers?limit=1").await;
    let mut answers = Vec::new();
    for _ in 0..8 {
        let r = get_as(&client, &url, "q").await;
        answers.push((
            r.status().as_u16(),
            header(&r, "x-ratelimit-limit").unwrap().to_owned(),
            header(&r, "x-ratelimit-remaining").unwrap().to_owned(),
            header(&r, "retry-after").map(str::to_owned),
        ));
        let reset: u64 = header(&r, "x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&reset));
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "rate_limited");
        }
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert!(answers.iter().all(|a| a.1 == "5"));
    let remaining: Vec<&str> = answers.iter().map(|a| a.2.as_str()).collect();
    assert_eq!(remaining, ["4", "3", "2", "1", "0", "0", "0", "0"]);
    for (_, _, _, retry) in &answers[5..] {
        let secs: u64 = retry.as_deref().unwrap().parse().unwrap();
        assert!((1..=3600).contains(&secs));
    }
    assert!(answers[..5].iter().all(|a| a.3.is_none()));

    // A new limit applies at once; accepted requests of the window still count.
    let changed = put(
        &client,
        &sim.url("/admin/quota/q"),
        serde_json::json!({"limit": 7}),
    )
    .await;
    assert_eq!(changed["limit"], 7);
    let more: Vec<u16> = send_n(&client, &url, "q", 3).await;
    assert_eq!(more, [200, 200, 429]);

    // Unknown and missing tokens: 401, never counted against a token.
    let r = get_as(&client, &url, "nope").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&r, "www-authenticate"), Some("Bearer"));
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unauthorized");

    let s = stats(&client, &sim).await;
    let q = &s["tokens"]["q"];
    assert_eq!(
        (
            q["requests"].as_u64(),
            q["accepted"].as_u64(),
            q["throttled"].as_u64()
        ),
        (Some(11), Some(7), Some(4))
    );
    assert_eq!(q["limit"], 7);
    let seconds = q["per_second"].as_object().unwrap();
    let total: u64 = seconds.values().map(|c| c["total"].as_u64().unwrap()).sum();
    let accepted: u64 = seconds
        .values()
        .map(|c| c["accepted"].as_u64().unwrap())
        .sum();
    assert_eq!((total, accepted), (11, 7));
    assert_eq!(s["unauthorized"], 2);
    assert_eq!(s["tokens"]["test"]["requests"], 0);
    sim.stop().await.unwrap();
}

/// A GET of `url` with the bearer `token`; the response, whatever its status.
async fn get_as(client: &reqwest::Client, url: &str, token: &str) -> reqwest::Response {
    client.get(url).bearer_auth(token).send().await.unwrap()
}

/// Sends `n` requests one after another; their statuses.
async fn send_n(client: &reqwest::Client, url: &str, token: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get_as(client, url, token).await.status().as_u16());
    }
    out
}

#[tokio::test]
async fn a_token_bucket_bursts_to_its_limit_and_says_when_to_retry() {
    let (sim, client, url) = start_quota(
        "b=4",
        "--quota-window 1h --quota-mode bucket",
        "/v1/orders?limit=1",
    )
    .await;
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let r = get_as(&client, &url, "b").await;
        assert_eq!(r.status(), StatusCode::OK);
        remaining.push(header(&r, "x-ratelimit-remaining").unwrap().to_owned());
    }
    assert_eq!(remaining, ["3", "2", "1", "0"]);
    let r = get_as(&client, &url, "b").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // One request refills in 3600 s / 4 = 900 s (less the few ms since the burst, rounded up).
    assert_eq!(header(&r, "retry-after"), Some("900"));
    assert_eq!(header(&r, "x-ratelimit-reset"), Some("3600"));
    sim.stop().await.unwrap();
}

#[tokio::test]
async fn quota_under_concurrent_load_matches_the_counters_exactly() {
    let (sim, client, url) = start_quota("c=20", "", "/v1/events?limit=1").await;
    let deadline = Instant::now() + Duration::from_millis(2300);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut throttled) = (0u64, 0u64);
            while Instant::now() < deadline {
                let r = get_as(&client, &url, "c").await;
                match r.status() {
                    StatusCode::OK => ok += 1,
                    StatusCode::TOO_MANY_REQUESTS => {
                        let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
                        assert_eq!(retry, 1);
                        throttled += 1;
                    }
                    other => panic!("unexpected {other}"),
                }
            }
            (ok, throttled)
        }));
    }
    let (mut ok, mut throttled) = (0, 0);
    for task in tasks {
        let (o, t) = task.await.unwrap();
        ok += o;
        throttled += t;
    }
    let s = stats(&client, &sim).await;
    let c = &s["tokens"]["c"];
    assert_eq!(
        c["accepted"].as_u64(),
        Some(ok),
        "server and client agree on accepted"
    );
    assert_eq!(c["throttled"].as_u64(), Some(throttled), "… and on 429s");
    assert_eq!(c["requests"].as_u64(), Some(ok + throttled));
    assert!(throttled > 0);
    let seconds: Vec<(u64, u64, u64)> = c["per_second"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(sec, n)| {
            (
                sec.parse().unwrap(),
                n["total"].as_u64().unwrap(),
                n["accepted"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(seconds.len() >= 2);
    for (sec, _, accepted) in &seconds {
        assert!(
            *accepted <= 20,
            "second {sec}: {accepted} accepted over a limit of 20"
        );
    }
    // Every whole second under load admitted exactly the limit.
    for (sec, total, accepted) in &seconds[1..seconds.len() - 1] {
        assert_eq!(*accepted, 20, "second {sec} ({total} requests)");
    }
    let sum: u64 = seconds.iter().map(|s| s.2).sum();
    assert_eq!(sum, ok);
    sim.stop().await.unwrap();
}

#[tokio::test]
async fn faults_change_answers_but_never_the_truth() {
    let sim = start("--records 30").await;
    let client = client();
    let before = truth_bytes(&client, &sim).await;
    let url = sim.url("/v1/customers?limit=5");
    let faults = sim.url("/admin/faults");
    let set = |body: Value| put(&client, &faults, body);

    set(serde_json::json!({"error_rate": 1.0, "error_burst": 2})).await;
    for _ in 0..2 {
        let r = get(&client, &url).await;
        assert!(r.status().is_server_error(), "{}", r.status());
        assert!(
            header(&r, "x-ratelimit-limit").is_some(),
            "quota headers on errors too"
        );
    }
    set(serde_json::json!({"error_rate": 0.0, "reset_rate": 1.0})).await;
    let err = client
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_err();
    assert!(
        !err.is_status() && !err.is_timeout(),
        "a reset, not an answer: {err:?}"
    );
    // On the wire: not one byte of response, just the end of the connection.
    let mut socket = tokio::net::TcpStream::connect(sim.addr).await.unwrap();
    let request = format!(
        "GET /v1/customers HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
        sim.addr
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    match socket.read_to_end(&mut answer).await {
        Ok(n) => assert_eq!(n, 0, "{}", String::from_utf8_lossy(&answer)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    set(serde_json::json!({"reset_rate": 0.0, "slow_rate": 1.0, "slow_ms": 300})).await;
    let started = Instant::now();
    assert_eq!(get(&client, &url).await.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    set(serde_json::json!({"slow_rate": 0.0, "malformed_rate": 1.0})).await;
    let r = get(&client, &url).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.bytes().await.unwrap();
    assert!(
        serde_json::from_slice::<Value>(&body).is_err(),
        "a malformed page"
    );
    let config = set(serde_json::json!({"malformed_rate": 0.0})).await;
    assert_eq!(config["error_rate"], 0.0);
    assert_eq!(config["slow_ms"], 300);

    let bad = client
        .put(&faults)
        .json(&serde_json::json!({"error_rate": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "invalid_body");

    let s = stats(&client, &sim).await;
    assert_eq!(
        s["faults"],
        serde_json::json!({"errors": 2, "slow": 1, "resets": 2, "malformed": 1})
    );
    // Every request reached the quota check, the reset one included.
    assert_eq!(s["tokens"]["test"]["requests"], 6);
    assert_eq!(s["pages"], 2);
    let after = truth_bytes(&client, &sim).await;
    assert_eq!(before, after, "faults never change the truth");
    sim.stop().await.unwrap();
}

/// The customers a cursor walk (pages of 100) finds updated since `since`.
async fn customers_since(
    client: &reqwest::Client,
    sim: &SimHandle,
    since: &str,
) -> Vec<(String, String)> {
    let pages = walk(
        client,
        sim,
        "/v1/customers",
        Style::Cursor,
        100,
        Some(since),
    )
    .await;
    records(&pages)
}

#[tokio::test]
async fn backdated_updates_hide_from_updated_since() {
    let sim =
        start("--records 40 --start-paused --backdate-rate 1 --create-share 0 --delete-share 0")
            .await;
    let client = client();
    // Later than every initial record, earlier than any write from now on.
    let since = "2025-01-01T00:00:00Z";
    let before = customers_since(&client, &sim, since).await;
    assert!(before.is_empty());
    let writes = post(&client, &sim.url("/admin/writes?n=20&stream=customers")).await;
    let changes = writes["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .all(|c| c["kind"] == "updated" && c["backdated"] == true)
    );
    let touched: BTreeSet<String> = changes
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let now_minus_hour = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let cutoff = now_minus_hour
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let truth = truth(&client, &sim).await;
    let t = &truth.streams["customers"];
    assert_eq!(
        t.backdated.iter().cloned().collect::<BTreeSet<_>>(),
        touched
    );
    for id in &touched {
        let v: Value = serde_json::from_str(t.live[id].record.get()).unwrap();
        let updated = v["updated_at"].as_str().unwrap();
        assert!(
            updated < cutoff.as_str(),
            "{updated} lies at least an hour back"
        );
        assert!(t.live[id].version >= 2);
    }
    let last_change: BTreeMap<String, u64> = changes
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["version"].as_u64().unwrap(),
            )
        })
        .collect();
    for (id, version) in &last_change {
        assert_eq!(t.live[id].version, *version);
    }
    // A naive incremental sync from "an hour ago" misses every one of them.
    let naive = customers_since(&client, &sim, &cutoff).await;
    assert!(naive.is_empty(), "{naive:?}");
    sim.stop().await.unwrap();
}

#[tokio::test]
async fn pausing_the_writer_is_exact() {
    let sim = start("--records 20 --write-rate 400").await;
    let client = client();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused = post(&client, &sim.url("/admin/pause")).await;
    let writes = paused["writes"].as_u64().unwrap();
    assert!(writes > 20, "the writer ran: {writes}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = truth(&client, &sim).await;
    assert_eq!(t.writes, writes, "no write after the pause");
    let s = stats(&client, &sim).await;
    let w = &s["writer"];
    assert_eq!(w["writes"].as_u64(), Some(writes));
    assert_eq!(
        w["creates"].as_u64().unwrap()
            + w["updates"].as_u64().unwrap()
            + w["deletes"].as_u64().unwrap(),
        writes
    );
    let live: usize = t.streams.values().map(|s| s.live.len()).sum();
    let deleted: usize = t.streams.values().map(|s| s.deleted.len()).sum();
    assert_eq!(live + deleted, 60 + w["creates"].as_u64().unwrap() as usize);
    post(&client, &sim.url("/admin/resume")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(truth(&client, &sim).await.writes > writes);
    sim.stop().await.unwrap();
}

#[tokio::test]
async fn errors_are_json_with_clear_codes() {
    let sim = start("--records 3").await;
    let client = client();
    for (path, status, code) in [
        ("/v1/customer", 404, "not_found"),
        ("/v1/styles/pages/orders", 404, "not_found"),
        ("/v1/orders?page=2", 400, "invalid_parameter"),
        ("/v1/orders?limit=1001", 400, "invalid_parameter"),
        ("/v1/orders?cursor=zz", 400, "invalid_cursor"),
        (
            "/v1/events?starting_after=evt_999999",
            400,
            "invalid_parameter",
        ),
        (
            "/v1/events?updated_since=yesterday",
            400,
            "invalid_parameter",
        ),
        ("/nowhere", 404, "not_found"),
    ] {
        let r = get(&client, &sim.url(path)).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], code, "{path}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let r = client
        .post(sim.url("/v1/customers"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
    let r = client
        .put(sim.url("/admin/quota/x"))
        .body("{\"limit\": -1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_body");
    let r = client
        .post(sim.url("/admin/webhooks/send"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(get_untokened(&client, &sim, "/healthz").await, "ok");
    sim.stop().await.unwrap();
}

/// One request a receiver got: its signature header, body, and the status it answered.
type Received = (Option<String>, Vec<u8>, u16);

/// A webhook receiver: records every request; answers 500 to every `fail_every`th.
#[derive(Clone, Default)]
struct Receiver {
    log: Arc<Mutex<Vec<Received>>>,
}

async fn receiver(fail_every: usize) -> (Receiver, String) {
    use axum::routing::post;
    let rec = Receiver::default();
    let log = Arc::clone(&rec.log);
    let app = axum::Router::new().route(
        "/hook",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let log = Arc::clone(&log);
                async move {
                    let mut log = log.lock().unwrap();
                    let status = if (log.len() + 1) % fail_every == 0 {
                        500
                    } else {
                        200
                    };
                    let signature = headers
                        .get(signing::HEADER)
                        .map(|v| v.to_str().unwrap().to_owned());
                    log.push((signature, body.to_vec(), status));
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (rec, url)
}

async fn drained(client: &reqwest::Client, sim: &SimHandle) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = stats(client, sim).await;
        if s["webhooks"]["pending"] == 0 {
            return s["webhooks"].clone();
        }
        assert!(Instant::now() < deadline, "webhooks never drained: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn webhooks_are_signed_shuffled_duplicated_and_retried() {
    let (rec, hook) = receiver(4).await;
    let sim = start(&format!("--records 30 --start-paused --webhook-url {hook} --webhook-secret whsec_test --webhook-dup-rate 0.3 --webhook-shuffle-window 5 --webhook-retry-base 10ms --webhook-retry-max 50ms"))
    .await;
    let client = client();
    let sent = post(&client, &sim.url("/admin/webhooks/send?n=40")).await;
    let changes = sent["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 40);
    let counts = drained(&client, &sim).await;
    let log = rec.log.lock().unwrap().clone();

    let failed = log.iter().filter(|l| l.2 == 500).count() as u64;
    let acked = log.iter().filter(|l| l.2 == 200).count() as u64;
    let duplicated = counts["duplicated"].as_u64().unwrap();
    assert_eq!(counts["enqueued"], 40);
    assert!(duplicated > 0);
    assert_eq!(counts["acked"].as_u64(), Some(acked));
    assert_eq!(
        acked,
        40 + duplicated,
        "every event and every copy acked once"
    );
    assert_eq!(counts["retried"].as_u64(), Some(failed));
    assert_eq!(counts["sent"].as_u64(), Some(log.len() as u64));
    assert_eq!(counts["dropped"], 0);

    let now = unix_now();
    let mut events: BTreeMap<String, Value> = BTreeMap::new();
    let mut order = Vec::new();
    for (signature, body, status) in &log {
        let signature = signature.as_deref().expect("every delivery is signed");
        assert_eq!(
            signing::verify(signature, body, &[b"whsec_test"], now, 300),
            Ok(())
        );
        assert_eq!(
            signing::verify(signature, body, &[b"other"], now, 300),
            Err(SignatureError::BadSignature)
        );
        let event: Value = serde_json::from_slice(body).unwrap();
        let id = event["event_id"].as_str().unwrap().to_owned();
        if let Some(previous) = events.get(&id) {
            assert_eq!(previous, &event, "a duplicate is the same event");
        } else if *status == 200 {
            order.push((event["entity_id"].clone(), event["seq"].clone()));
        }
        if *status == 200 {
            events.insert(id, event);
        }
    }
    assert_eq!(events.len(), 40, "40 distinct events arrived");
    // Each write has its event: same entity, kind and sequence number.
    let mut by_write: BTreeSet<(String, String, u64)> = BTreeSet::new();
    for event in events.values() {
        by_write.insert((
            event["entity_id"].as_str().unwrap().to_owned(),
            event["type"].as_str().unwrap().to_owned(),
            event["seq"].as_u64().unwrap(),
        ));
        assert_eq!(event["data"].is_null(), event["type"] == "deleted");
        if !event["data"].is_null() {
            assert_eq!(event["data"]["version"], event["seq"]);
        }
    }
    let expected: BTreeSet<(String, String, u64)> = changes
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["kind"].as_str().unwrap().to_owned(),
                c["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_write, expected);
    // The last seq per entity is the truth's version (live or deleted).
    let truth = truth(&client, &sim).await;
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    for event in events.values() {
        let key = (
            event["stream"].as_str().unwrap().to_owned(),
            event["entity_id"].as_str().unwrap().to_owned(),
        );
        let seq = event["seq"].as_u64().unwrap();
        let slot = last.entry(key).or_default();
        *slot = (*slot).max(seq);
    }
    for ((stream, id), seq) in last {
        let t = &truth.streams[&stream];
        let version = t
            .live
            .get(&id)
            .map(|l| l.version)
            .or_else(|| t.deleted.get(&id).map(|d| d.version));
        assert_eq!(version, Some(seq), "{stream} {id}");
    }
    let write_order: Vec<(Value, Value)> = changes
        .iter()
        .map(|c| (c["id"].clone(), c["version"].clone()))
        .collect();
    assert_eq!(order.len(), write_order.len());
    assert_ne!(order, write_order, "deliveries are shuffled");
    sim.stop().await.unwrap();
}

#[tokio::test]
async fn webhooks_during_a_rotation_carry_both_signatures() {
    let (rec, hook) = receiver(usize::MAX).await;
    let sim = start(&format!("--records 5 --start-paused --webhook-url {hook} --webhook-secret old --webhook-secret new --webhook-shuffle-window 1"))
    .await;
    let client = client();
    post(&client, &sim.url("/admin/webhooks/send?n=3")).await;
    let counts = drained(&client, &sim).await;
    assert_eq!(counts["acked"], 3);
    let log = rec.log.lock().unwrap().clone();
    assert_eq!(log.len(), 3);
    for (signature, body, _) in &log {
        let signature = signature.as_deref().unwrap();
        assert_eq!(signature.matches("v1=").count(), 2);
        assert_eq!(
            signing::verify(signature, body, &[b"new"], unix_now(), 300),
            Ok(())
        );
        assert_eq!(
            signing::verify(signature, body, &[b"old"], unix_now(), 300),
            Ok(())
        );
    }
    sim.stop().await.unwrap();
}

#[test]
fn help_documents_every_flag_with_its_default() {
    use clap::Args;
    let mut command = SimArgs::augment_args(clap::Command::new("sim"));
    let help = command.render_long_help().to_string();
    for arg in command.get_arguments() {
        let name = arg.get_id().as_str();
        if name == "help" {
            continue;
        }
        let doc = arg.get_long_help().or(arg.get_help());
        assert!(
            doc.is_some_and(|h| !h.to_string().is_empty()),
            "--{name} has no help"
        );
    }
    for flag in [
        "--seed",
        "--records",
        "--write-rate",
        "--token",
        "--quota-mode",
        "--drift-rate",
        "--drift-kinds",
        "--large-rate",
        "--error-rate",
        "--slow-ms",
        "--reset-rate",
        "--webhook-dup-rate",
        "--customers-pagination",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.matches("[default: ").count() >= 30, "{help}");
}
