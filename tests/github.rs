//! Issue 18: requests checked against a real API description. `examples/sources/github.toml`
//! (its streams, headers, pagination, quota and status rules as written; only the base URL,
//! the token, Kafka, the registry and the topic prefix are the test's) fetches through Prism,
//! the stack's validating proxy with GitHub's official OpenAPI description, from the
//! simulator's GitHub mode behind it, which refuses some requests with GitHub's 403 secondary
//! rate limit (`Retry-After` in seconds, then as an HTTP date).
//!
//! Judged by what intake does not control: Prism's log (every request intake made received,
//! none invalid by GitHub's description, each forwarded with `per_page=100`), the simulator's
//! counters (the same number of requests, no request before a `Retry-After` ended) and truth
//! (every issue landed once per sync; the curated topic holds exactly its ids and
//! `updated_at`s). Two controls at the end prove the judges can fail: a `since` that is not a
//! date is refused by Prism and shows in its log, a `limit` instead of `per_page` shows in
//! the simulator's counters.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use intake::config::Config;
use intake::fetch::{self, FetchOptions};
use intake::topics::TopicNames;
use support::*;

/// The stack's Prism, as `scripts/stack start prism` runs it.
struct Prism {
    /// `http://127.0.0.1:<port>`.
    url: String,
    /// Where Prism forwards to: the test serves the simulator there.
    upstream_port: u16,
    /// Prism's log.
    log: PathBuf,
}

/// Starts (idempotently) the stack's Prism on `INTAKE_TEST_PRISM_PORT` (default 4010) in front
/// of the next port, where this test serves the simulator. Blocking.
fn prism() -> Prism {
    let port: u16 = std::env::var("INTAKE_TEST_PRISM_PORT")
        .ok()
        .map_or(4010, |p| {
            p.parse().expect("INTAKE_TEST_PRISM_PORT is a port")
        });
    let upstream_port = port + 1;
    let stack = stack_start(
        "prism",
        &[
            ("STACK_HOST", "127.0.0.1".to_owned()),
            ("PRISM_PORT", port.to_string()),
            (
                "PRISM_UPSTREAM",
                format!("http://127.0.0.1:{upstream_port}"),
            ),
        ],
    );
    Prism {
        url: format!("http://127.0.0.1:{port}"),
        upstream_port,
        log: stack.join("prism/prism.log"),
    }
}

/// What Prism logged from a byte offset of its log on.
struct PrismLog {
    /// Requests Prism received.
    received: usize,
    /// The URLs it forwarded them to.
    forwarded: Vec<String>,
    /// Lines reporting a request that breaks GitHub's description (a violation of the
    /// request, or a request Prism refused or could not forward: it ends with an error).
    request_errors: Vec<String>,
    /// Lines reporting an answer that breaks it with error severity.
    response_errors: Vec<String>,
}

fn log_len(log: &std::path::Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

fn prism_log(log: &std::path::Path, from: u64) -> PrismLog {
    let mut f = std::fs::File::open(log).expect("Prism's log");
    f.seek(SeekFrom::Start(from)).unwrap();
    let mut text = String::new();
    f.read_to_string(&mut text).unwrap();
    let mut out = PrismLog {
        received: 0,
        forwarded: Vec::new(),
        request_errors: Vec::new(),
        response_errors: Vec::new(),
    };
    for line in text.lines() {
        if line.contains("Request received") {
            out.received += 1;
        }
        if let Some((_, rest)) = line.split_once("Forwarding \"get\" request to ") {
            out.forwarded
                .push(rest.trim_end().trim_end_matches("...").to_owned());
        }
        if line.contains("Request terminated with error") || line.contains("Violation: request") {
            out.request_errors.push(line.to_owned());
        }
        if line.contains("Violation: response") && line.contains("error") {
            out.response_errors.push(line.to_owned());
        }
    }
    out
}

/// The simulator's live issues: id → `updated_at`.
async fn issues_truth(sim: &intake::sim::SimHandle) -> BTreeMap<String, String> {
    sim_get(sim, "/admin/github/truth").await["issues"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, i)| (id.clone(), i["updated_at"].as_str().unwrap().to_owned()))
        .collect()
}

/// `examples/sources/github.toml` with only the base URL (Prism), the token (the simulator's),
/// Kafka, the registry and the topic prefix (the test's) replaced.
fn github_config(prism: &Prism) -> Arc<Config> {
    let text = std::fs::read_to_string(root().join("examples/sources/github.toml")).unwrap();
    let mut doc: toml::Table = text.parse().expect("the example is TOML");
    let top: BTreeSet<&str> = doc.keys().map(String::as_str).collect();
    assert_eq!(
        top,
        BTreeSet::from(["kafka", "sources"]),
        "the example gained a section this test does not know how to keep"
    );
    doc.remove("kafka");
    let sources = doc
        .get_mut("sources")
        .and_then(toml::Value::as_array_mut)
        .expect("the example's [[sources]]");
    assert_eq!(sources.len(), 1);
    let source = sources[0].as_table_mut().unwrap();
    source.insert("base_url".into(), prism.url.clone().into());
    let mut auth = toml::Table::new();
    auth.insert("kind".into(), "bearer".into());
    auth.insert("token".into(), "demo".into());
    source.insert("auth".into(), auth.into());
    let extra = toml::to_string(&doc).unwrap();
    Arc::new(Config::from_toml(&config_text(&extra)).expect("the example with the test's stack"))
}

/// Every issue page of the landing topic, by sync id: (id, `updated_at`) of each record.
fn landed_by_sync(cfg: &Config) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in read_landing(cfg) {
        match r.header("intake.kind") {
            Some("page") => {}
            Some("sync-begin" | "sync-end") => continue,
            other => panic!("unexpected landing record kind {other:?}"),
        }
        assert_eq!(r.header("intake.stream"), Some("issues"));
        let page: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let records = out
            .entry(r.header("intake.sync_id").unwrap().to_owned())
            .or_default();
        for issue in page.as_array().expect("GitHub's page is a bare array") {
            records.push((
                issue["id"].as_u64().unwrap().to_string(),
                issue["updated_at"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// `fetch --once`: every stream synced to its current end.
async fn fetch_once(cfg: &Arc<Config>) -> fetch::FetchReport {
    let opts = FetchOptions {
        once: true,
        ..FetchOptions::default()
    };
    tokio::time::timeout(
        Duration::from_secs(600),
        fetch::run(cfg.clone(), opts, std::future::pending()),
    )
    .await
    .expect("fetch --once finishes (a paused stream would wait for its poll interval)")
    .expect("fetch --once succeeds")
}

/// Waits until no secondary limit is in force (the simulator's own clock decides).
async fn wait_unblocked(sim: &intake::sim::SimHandle) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = sim_get(sim, "/admin/github/stats").await;
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        match stats["blocked_until_ms"].as_i64() {
            Some(until) if i128::from(until) > now_ms => {}
            _ => return,
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the limit never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn micros(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap();
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_github_example_passes_prism_and_lands_every_issue_once() {
    let prism = prism();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", prism.upstream_port))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Prism forwards to port {}, where this test serves the simulator: {e}",
                prism.upstream_port
            )
        });
    let args = intake::sim::SimArgs::try_parse_from([
        "sim",
        "--records",
        "240",
        "--seed",
        "18",
        // GitHub's primary quota: 5 000 requests an hour, announced in X-RateLimit-*.
        "--token",
        "demo=5000",
        "--quota-window",
        "1h",
        "--write-rate",
        "0",
        // GitHub lists no deleted issues, and an issue's updated_at only moves forward.
        "--delete-share",
        "0",
        "--backdate-rate",
        "0",
        "--github-public-url",
        &prism.url,
        "--github-secondary-limit-every",
        "2",
        // Longer than the 1 s a client that cannot read an HTTP date falls back to.
        "--github-secondary-limit-wait",
        "2s",
    ])
    .unwrap();
    let sim = intake::sim::spawn_on(args, listener).unwrap();
    let cfg = github_config(&prism);
    apply_topics(&cfg).await;
    let reg = intake::registry::Registry::new(&cfg.registry).unwrap();
    let applied = intake::registry::apply_schemas(&cfg, &reg).await.unwrap();
    assert!(
        applied
            .iter()
            .all(|o| !matches!(o, intake::registry::SchemaOutcome::Missing { .. })),
        "topics/schemas/github/issues.avsc is registered: {applied:?}"
    );
    let from = log_len(&prism.log);

    // A full sync.
    let report = fetch_once(&cfg).await;
    assert_eq!(report["github/issues"].syncs, 1);
    let truth1 = issues_truth(&sim).await;
    assert_eq!(truth1.len(), 240);
    let landed1 = landed_by_sync(&cfg);
    assert_eq!(landed1.len(), 1, "one sync");
    let (sync1, records1) = landed1.iter().next().unwrap();
    let mut once1: BTreeMap<String, String> = BTreeMap::new();
    for (id, at) in records1 {
        assert!(
            once1.insert(id.clone(), at.clone()).is_none(),
            "issue {id} landed twice in the full sync"
        );
    }
    assert_eq!(once1, truth1, "the full sync landed every issue once");

    // Changes, then an incremental sync: `since` goes out.
    sim_admin(&sim, "/admin/writes?n=150&stream=customers").await;
    let truth2 = issues_truth(&sim).await;
    let changed: BTreeSet<&String> = truth2
        .iter()
        .filter(|(id, at)| truth1.get(*id) != Some(*at))
        .map(|(id, _)| id)
        .collect();
    assert!(
        changed.len() > 100,
        "more than one page of changes: {}",
        changed.len()
    );
    let report = fetch_once(&cfg).await;
    assert_eq!(report["github/issues"].syncs, 1);
    let landed2 = landed_by_sync(&cfg);
    assert_eq!(landed2.len(), 2, "a second sync");
    let records2 = landed2
        .iter()
        .find(|(id, _)| *id != sync1)
        .map(|(_, r)| r)
        .unwrap();
    let mut once2: BTreeMap<String, String> = BTreeMap::new();
    for (id, at) in records2 {
        assert!(
            once2.insert(id.clone(), at.clone()).is_none(),
            "issue {id} landed twice in the incremental sync"
        );
        assert_eq!(Some(at), truth2.get(id), "issue {id} landed at its version");
    }
    let missed: Vec<&&String> = changed
        .iter()
        .filter(|id| !once2.contains_key(**id))
        .collect();
    assert!(missed.is_empty(), "changed issues not fetched: {missed:?}");

    // Validate and dedup: the curated topic ends at exactly the truth's ids and updated_at.
    let names = TopicNames::from_config(&cfg);
    let curated = names.curated("github", "issues");
    let want: BTreeMap<String, i64> = truth2
        .iter()
        .map(|(id, at)| (id.clone(), micros(at)))
        .collect();
    let last_versions = |recs: &[Rec]| -> BTreeMap<String, i64> {
        let mut m = BTreeMap::new();
        for r in recs {
            assert!(r.value.is_some(), "no deletes");
            let v: i64 = r.header("intake.version").unwrap().parse().unwrap();
            m.insert(r.key_str().to_owned(), v);
        }
        m
    };
    let out = curate_until(
        &cfg,
        std::slice::from_ref(&curated),
        "the truth's issues",
        |out| last_versions(&out[&curated]) == want,
    )
    .await;
    let recs = &out[&curated];
    assert_eq!(last_versions(recs), want, "curated = truth");
    // Exactly once: per key, each curated record raises the version.
    let mut by_key: BTreeMap<(i32, String), Vec<(i64, i64)>> = BTreeMap::new();
    for r in recs {
        by_key
            .entry((r.partition, r.key_str().to_owned()))
            .or_default()
            .push((
                r.offset,
                r.header("intake.version").unwrap().parse().unwrap(),
            ));
    }
    for ((_, key), mut v) in by_key {
        v.sort_unstable();
        assert!(
            v.windows(2).all(|w| w[0].1 < w[1].1),
            "key {key}: curated records that do not raise its version: {v:?}"
        );
    }
    assert_no_dead_letters(&cfg);

    // Prism saw every request intake made, none invalid by GitHub's description, each asking
    // GitHub for 100 issues a page.
    let seen = prism_log(&prism.log, from);
    let stats = sim_get(&sim, "/admin/github/stats").await;
    eprintln!(
        "Prism received {} requests, forwarded {}; the simulator: {stats}",
        seen.received,
        seen.forwarded.len()
    );
    assert!(seen.received > 0);
    assert!(
        seen.request_errors.is_empty(),
        "Prism found requests that break GitHub's description: {:#?}",
        seen.request_errors
    );
    assert!(
        seen.response_errors.is_empty(),
        "Prism found answers that break GitHub's description: {:#?}",
        seen.response_errors
    );
    assert_eq!(
        seen.forwarded.len(),
        seen.received,
        "every request forwarded"
    );
    assert_eq!(
        stats["requests"].as_u64(),
        Some(seen.received as u64),
        "the simulator got exactly what Prism received"
    );
    for url in &seen.forwarded {
        let url = url::Url::parse(url).unwrap();
        let per_page: Vec<String> = url
            .query_pairs()
            .filter(|(k, _)| k == "per_page")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(per_page, ["100"], "{url}");
    }
    let limits = stats["secondary_limits"].as_u64().unwrap();
    let early = stats["early"].as_u64().unwrap();
    assert!(
        stats["retry_after_seconds"].as_u64().unwrap() >= 1
            && stats["retry_after_dates"].as_u64().unwrap() >= 1,
        "secondary limits with Retry-After in both forms: {stats}"
    );
    assert_eq!(early, 0, "no request before Retry-After ended: {stats}");
    let pages = stats["pages"].as_u64().unwrap();
    assert_eq!(stats["requests"].as_u64().unwrap(), pages + limits + early);
    assert_eq!(
        stats["per_page"],
        serde_json::json!({ "100": pages }),
        "GitHub saw per_page=100 on every page"
    );
    assert!(stats["with_since"].as_u64().unwrap() >= 1, "since was sent");
    assert_eq!(stats["invalid"], 0);
    assert_eq!(stats["not_found"], 0);
    assert_eq!(stats["ignored_params"], serde_json::json!({}));
    let landed_records = (records1.len() + records2.len()) as u64;
    assert_eq!(
        stats["issues"].as_u64(),
        Some(landed_records),
        "every issue served landed"
    );

    // Controls: the judges above can fail. A `since` that is not a date is refused by Prism
    // (never forwarded) and logged; `limit` instead of `per_page` reaches the simulator, which
    // counts a request without per_page (GitHub would serve 30).
    let at = log_len(&prism.log);
    let http = reqwest::Client::new();
    let get = |query: &'static str| {
        http.get(format!("{}/repos/apache/kafka/issues?{query}", prism.url))
            .bearer_auth("demo")
            .send()
    };
    let r = get("state=all&since=last-tuesday&per_page=100")
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        422,
        "Prism refuses a since that is no date-time"
    );
    let why: serde_json::Value = r.json().await.unwrap();
    assert!(
        why["validation"]
            .as_array()
            .is_some_and(|v| v.iter().any(|d| d.to_string().contains("since"))),
        "Prism names the bad since: {why}"
    );
    // It may meet a secondary limit (every 2nd request): then it is sent again once the limit
    // ended, and the next request is never refused.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let r = get("state=all&limit=100").await.unwrap();
        if r.status().is_success() {
            break;
        }
        assert!(r.status() == 403 && attempts == 1, "{}", r.status());
        wait_unblocked(&sim).await;
    }
    let control = prism_log(&prism.log, at);
    assert_eq!(control.received, 1 + attempts);
    assert_eq!(
        control.request_errors.len(),
        1,
        "Prism logs the refused request: {:#?}",
        control.request_errors
    );
    let after = sim_get(&sim, "/admin/github/stats").await;
    assert_eq!(
        after["requests"].as_u64(),
        Some((seen.received + attempts) as u64),
        "the request with a bad since was not forwarded"
    );
    assert_eq!(after["per_page"]["absent"], 1);
    assert_eq!(after["ignored_params"]["limit"], 1);
    sim.stop().await.unwrap();
}
