//! Issue 4: fetch lands every served record exactly once, with its cursor, across crashes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use intake::fetch::{self, FetchOptions};
use support::*;

fn once() -> FetchOptions {
    FetchOptions {
        once: true,
        ..FetchOptions::default()
    }
}

/// (stream, id, version) multiset of landed records.
fn landed_versions(pages: &[Page], stream: &str) -> BTreeMap<(String, u64), usize> {
    let mut m = BTreeMap::new();
    for p in pages.iter().filter(|p| p.stream == stream) {
        for r in &p.records {
            *m.entry(r.clone()).or_default() += 1;
        }
    }
    m
}

/// The truth's (id, version) of a stream, each once: what landing it exactly once gives.
fn each_once(truth: &serde_json::Value, stream: &str) -> BTreeMap<(String, u64), usize> {
    truth_versions(truth, stream)
        .into_iter()
        .map(|(id, v)| ((id, v), 1))
        .collect()
}

/// Applies the topics and fetches once; returns the report, the landed pages (asserted unique
/// and contiguous), and what a stream of the simulator's customers must land: each of its 230
/// live customers once.
async fn fetch_230_customers(
    sim: &intake::sim::SimHandle,
    cfg: &Arc<intake::config::Config>,
) -> (
    fetch::FetchReport,
    Vec<Page>,
    BTreeMap<(String, u64), usize>,
) {
    apply_topics(cfg).await;
    let report = fetch_once(cfg).await.unwrap();
    let truth = truth(sim).await;
    let expected: BTreeMap<(String, u64), usize> = each_once(&truth, "customers");
    assert_eq!(expected.len(), 230);
    let pages = landed_pages(cfg).await;
    assert_pages_unique_and_contiguous(&pages);
    (report, pages, expected)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_pagination_style_lands_every_record_exactly_once() {
    let sim = sim(&["--records", "230", "--seed", "7"]).await;
    let styles = ["cursor", "link", "page", "offset", "after", "next_url"];
    let streams: Vec<(String, String, String)> = styles
        .iter()
        .map(|s| {
            (
                s.to_string(),
                format!("/v1/styles/{s}/customers"),
                s.to_string(),
            )
        })
        .collect();
    let refs: Vec<(&str, &str, &str)> = streams
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    let cfg = Arc::new(config(&sim_source(
        &sim,
        &refs,
        "pages_per_transaction = 2",
    )));
    let (report, pages, expected) = fetch_230_customers(&sim, &cfg).await;
    for s in styles {
        assert_eq!(
            landed_versions(&pages, s),
            expected,
            "style {s}: every record exactly once"
        );
        assert_eq!(report[&format!("sim/{s}")].records, 230, "style {s}");
        assert_eq!(report[&format!("sim/{s}")].syncs, 1);
    }
    // Each stream: one sync-begin and one sync-end around its pages, and a complete cursor.
    let landing = read_landing(&cfg);
    for s in styles {
        let kinds: Vec<&str> = landing
            .iter()
            .filter(|r| r.header("intake.stream") == Some(s))
            .map(|r| r.header("intake.kind").unwrap())
            .collect();
        assert_eq!(kinds.first(), Some(&"sync-begin"), "{s}");
        assert_eq!(kinds.last(), Some(&"sync-end"), "{s}");
        assert_eq!(kinds.iter().filter(|k| **k == "sync-end").count(), 1);
    }
    let cursors = fetch::stream::restore_cursors(
        &kafka(&cfg),
        &intake::topics::TopicNames::from_config(&cfg),
        &styles
            .iter()
            .map(|s| format!("sim/{s}"))
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    for s in styles {
        let c = &cursors[&format!("sim/{s}")];
        assert!(c.complete, "{s}");
        assert_eq!(c.records, 230, "{s}");
        assert_eq!(
            c.pages,
            pages.iter().filter(|p| p.stream == s).count() as u64,
            "{s}: cursor agrees with landed pages"
        );
    }
}

/// fetch asks for compressed answers (`Accept-Encoding: gzip, deflate`) and lands the decoded
/// page: against a simulator answering every list request gzip-, then deflate-encoded, every
/// record lands exactly once and the simulator counts every page it served as compressed.
#[tokio::test(flavor = "multi_thread")]
async fn gzip_and_deflate_answers_land_every_record_exactly_once() {
    for encoding in ["gzip", "deflate"] {
        let sim = sim(&["--records", "230", "--seed", "7", "--compress", encoding]).await;
        let cfg = Arc::new(config(&sim_source(
            &sim,
            &[("customers", "/v1/styles/cursor/customers", "cursor")],
            "",
        )));
        let (report, pages, expected) = fetch_230_customers(&sim, &cfg).await;
        assert_eq!(
            landed_versions(&pages, "customers"),
            expected,
            "{encoding}: every record exactly once"
        );
        assert_eq!(report["sim/customers"].records, 230, "{encoding}");
        let stats = sim_stats(&sim).await;
        let served = stats["pages"].as_u64().unwrap();
        assert!(served > 0, "{encoding}: {stats}");
        assert_eq!(
            stats["compressed"].as_u64(),
            Some(served),
            "{encoding}: every page was sent compressed: {stats}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_over_the_limit_lands_as_a_blob_ref_matching_its_sha256() {
    let sim = sim(&[
        "--records",
        "40",
        "--large-rate",
        "0.1",
        "--large-bytes",
        "1200000",
    ])
    .await;
    let mut text = config_text(&sim_source(
        &sim,
        &[("customers", "/v1/customers", "cursor")],
        "",
    ));
    text = text
        .replace("[topics]", "[topics]\n")
        .replace("[blob]\n", "[blob]\nmax_inline_bytes = 1000000\n");
    let cfg = Arc::new(intake::config::Config::from_toml(&text).unwrap());
    apply_topics(&cfg).await;
    fetch_once(&cfg).await.unwrap();

    let truth = truth(&sim).await;
    let large: BTreeSet<String> = truth["streams"]["customers"]["large"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(!large.is_empty(), "the simulator made large records");
    let landing = read_landing(&cfg);
    let refs: Vec<&Rec> = landing
        .iter()
        .filter(|r| r.header("intake.kind") == Some("blob-ref"))
        .collect();
    assert!(
        !refs.is_empty(),
        "pages with large records must be claim-checked"
    );
    let store = intake::blob::BlobStore::open(&cfg.blob).unwrap();
    for r in &refs {
        let b = intake::blob::BlobRef::parse_header(r.header("intake.blob").unwrap()).unwrap();
        // The landed value is the same reference, small enough for Kafka.
        let v: intake::blob::BlobRef = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(v, b);
        assert!(r.value.as_ref().unwrap().len() < 1024);
        let body = store.get(&b).await.unwrap();
        assert_eq!(intake::blob::sha256_hex(&body), b.sha256);
        assert_eq!(body.len() as u64, b.size);
        assert!(b.size > 1_000_000);
    }
    // And nothing was lost: every record is there once, inline or by reference.
    let pages = landed_pages(&cfg).await;
    let expected: BTreeMap<(String, u64), usize> = each_once(&truth, "customers");
    assert_eq!(landed_versions(&pages, "customers"), expected);
}

/// Fetch holds a transaction's pages until it commits, so a transaction stops taking pages
/// once those in hand hold `TXN_PAGE_BYTES` (2 MiB), whatever `pages_per_transaction` allows.
/// Pages of three ~300 KB records (~901 KB, inline): two hold 1.8 MB, the third crosses 2 MiB,
/// so each transaction of the sync carries three pages (the last the rest), where
/// `pages_per_transaction = 10` alone would put all ten in one. Judged by the cursor records
/// the transactions committed (one per transaction, each with the sync's page count so far)
/// and by landing holding every record once.
#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_takes_pages_up_to_its_byte_budget() {
    let flags: Vec<&str> = "--records 30 --large-rate 1 --large-bytes 300000"
        .split(' ')
        .collect();
    let sim = sim(&flags).await;
    let mut s = sim_source_head(&sim);
    s.push_str(&sim_stream(
        "customers",
        "/v1/customers",
        "cursor",
        3,
        "pages_per_transaction = 10",
    ));
    let cfg = Arc::new(config(&s));
    apply_topics(&cfg).await;
    fetch_once(&cfg).await.unwrap();

    let landing = read_landing(&cfg);
    let sizes: Vec<usize> = landing
        .iter()
        .filter(|r| r.header("intake.kind") == Some("page"))
        .map(|r| r.value.as_ref().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes.len(), 10, "30 records, 3 a page, all inline");
    assert!(
        sizes.iter().all(|&n| n > 880_000 && n < 921_600),
        "pages of ~901 KB: {sizes:?}"
    );
    let cursors = read_all(
        &intake::topics::TopicNames::from_config(&cfg).cursors(),
        "read_committed",
    );
    let counts: Vec<u64> = cursors
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"sim/customers".as_slice()))
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            v["pages"].as_u64().unwrap()
        })
        .collect();
    // The sync-begin's cursor (0 pages), then one per transaction of pages.
    assert_eq!(counts, [0, 3, 6, 9, 10], "pages landed after each commit");
    let pages = landed_pages(&cfg).await;
    let truth = truth(&sim).await;
    assert_eq!(
        landed_versions(&pages, "customers"),
        each_once(&truth, "customers")
    );
}

/// Runs: full sync, writes, incremental sync (so the high-water mark is "now"), then a second
/// batch of writes, some backdated by `backdate`. Returns the config, the ids whose current
/// version came from a backdated write of the second batch, and the live versions.
async fn backdated_scenario(
    sim: &intake::sim::SimHandle,
    lookback: &str,
) -> (
    Arc<intake::config::Config>,
    Vec<String>,
    BTreeMap<String, u64>,
) {
    let inc = format!(
        r#"incremental = {{ param = "updated_since", field = "/updated_at", lookback = "{lookback}" }}"#
    );
    let cfg = Arc::new(config(&sim_source(
        sim,
        &[("customers", "/v1/customers", "cursor")],
        &inc,
    )));
    apply_topics(&cfg).await;
    fetch_once(&cfg).await.unwrap();
    sim_admin(sim, "/admin/writes?n=30&stream=customers").await;
    fetch_once(&cfg).await.unwrap();
    let before = truth_versions(&truth(sim).await, "customers");
    sim_admin(sim, "/admin/writes?n=40&stream=customers").await;
    let t = truth(sim).await;
    let live = truth_versions(&t, "customers");
    let backdated: Vec<String> = t["streams"]["customers"]["backdated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        // Records created in this batch cannot be backdated before their creation.
        .filter(|id| before.contains_key(id) && before.get(id) != live.get(id))
        .collect();
    assert!(
        !backdated.is_empty(),
        "the second batch made backdated updates"
    );
    (cfg, backdated, live)
}

/// The landed versions of `customers`, counted, once every landed page was found unique and
/// contiguous.
async fn checked_customer_versions(cfg: &intake::config::Config) -> BTreeMap<(String, u64), usize> {
    let pages = landed_pages(cfg).await;
    assert_pages_unique_and_contiguous(&pages);
    landed_versions(&pages, "customers")
}

/// A simulator of 120 records per stream that backdates half its updates by `min` to `max`.
async fn backdating_sim(min: &str, max: &str) -> intake::sim::SimHandle {
    sim(&[
        "--records",
        "120",
        "--backdate-rate",
        "0.5",
        "--backdate-min",
        min,
        "--backdate-max",
        max,
    ])
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn backdated_updates_inside_the_lookback_window_are_caught_by_the_next_incremental_sync() {
    let sim = backdating_sim("2m", "10m").await;
    let (cfg, backdated, live) = backdated_scenario(&sim, "1h").await;
    fetch_once(&cfg).await.unwrap();
    let versions = checked_customer_versions(&cfg).await;
    for id in &backdated {
        assert!(
            versions.contains_key(&(id.clone(), live[id])),
            "backdated {id} v{} missed",
            live[id]
        );
    }
    let cursors = fetch::stream::restore_cursors(
        &kafka(&cfg),
        &intake::topics::TopicNames::from_config(&cfg),
        &["sim/customers".to_owned()],
    )
    .await
    .unwrap();
    let c = &cursors["sim/customers"];
    assert_eq!(
        c.mode,
        fetch::cursor::Mode::Incremental,
        "caught by the look-back, not by a full sync"
    );
    assert!(
        c.records < 120,
        "the incremental sync read {} records, not everything",
        c.records
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backdated_updates_beyond_the_lookback_are_missed_incrementally_and_caught_by_a_full_sync()
{
    let sim = backdating_sim("2d", "3d").await;
    let (cfg, backdated, live) = backdated_scenario(&sim, "10m").await;
    // A record created minutes ago cannot be backdated before its creation (the simulator
    // clamps it): keep the ids whose updated_at really lies beyond the window.
    let t = truth(&sim).await;
    let cutoff = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
    let backdated: Vec<String> = backdated
        .into_iter()
        .filter(|id| {
            let at = t["streams"]["customers"]["live"][id]["record"]["updated_at"]
                .as_str()
                .unwrap();
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap()
                < cutoff
        })
        .collect();
    assert!(backdated.len() >= 5, "{backdated:?}");

    // Incremental: the backdated versions are older than the look-back window, so missed.
    fetch_once(&cfg).await.unwrap();
    let versions = landed_versions(&landed_pages(&cfg).await, "customers");
    let missed = backdated
        .iter()
        .filter(|id| !versions.contains_key(&((*id).clone(), live[*id])))
        .count();
    assert_eq!(
        missed,
        backdated.len(),
        "an incremental sync cannot see updates backdated past its window"
    );

    // The full reconciliation sync catches every one of them.
    fetch::run(
        cfg.clone(),
        FetchOptions {
            once: true,
            full: true,
            ..FetchOptions::default()
        },
        std::future::pending(),
    )
    .await
    .unwrap();
    let versions = checked_customer_versions(&cfg).await;
    for id in &backdated {
        assert!(
            versions.contains_key(&(id.clone(), live[id])),
            "full sync missed {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fenced_owner_never_commits_and_the_new_owner_continues_its_sync() {
    // Slow responses so the first owner is mid-sync when the second takes over.
    let sim = sim(&["--records", "1000", "--slow-rate", "1", "--slow-ms", "300"]).await;
    let cfg = Arc::new(config(&sim_source(
        &sim,
        &[("customers", "/v1/customers", "cursor")],
        // Each sync lands every page here, so each can be checked whole.
        "pages_per_transaction = 1\nskip_unchanged = false",
    )));
    apply_topics(&cfg).await;
    let first = tokio::spawn(fetch::run(cfg.clone(), once(), std::future::pending()));
    // Wait until the first owner has committed some pages.
    let names = intake::topics::TopicNames::from_config(&cfg);
    let k = kafka(&cfg);
    for _ in 0..100 {
        let c = fetch::stream::restore_cursors(&k, &names, &["sim/customers".to_owned()])
            .await
            .unwrap();
        if c.get("sim/customers").is_some_and(|c| c.pages >= 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = fetch_once(&cfg).await.unwrap();
    let first = first.await.unwrap();
    let err = first.expect_err("the first owner must be fenced");
    assert!(matches!(err, fetch::FetchError::Fenced { .. }), "{err}");

    let pages = landed_pages(&cfg).await;
    assert_pages_unique_and_contiguous(&pages);
    // The first sync was started by the first owner and finished by the second, which then
    // ran one sync of its own (`--once` ends after a sync it started).
    let mut syncs: Vec<&str> = pages.iter().map(|p| p.sync_id.as_str()).collect();
    syncs.dedup();
    assert_eq!(syncs.len(), 2, "{syncs:?}");
    let expected: BTreeMap<(String, u64), usize> = truth_versions(&truth(&sim).await, "customers")
        .into_iter()
        .map(|(id, v)| ((id, v), 1))
        .collect();
    for sync in syncs {
        let in_sync: Vec<Page> = pages
            .iter()
            .filter(|p| p.sync_id == sync)
            .cloned()
            .collect();
        assert_eq!(in_sync.len(), 20, "sync {sync}");
        assert_eq!(
            landed_versions(&in_sync, "customers"),
            expected,
            "sync {sync}: every record exactly once"
        );
    }
    let s = second["sim/customers"];
    assert!(
        s.pages < 40 && s.pages > 20,
        "the second owner fetched the rest of the first sync and one sync: {}",
        s.pages
    );
}

/// Look-back polls re-read the same records again and again; a page lands again only when a
/// record on it changed (or is new), so validate and dedup are not flooded with copies.
#[tokio::test(flavor = "multi_thread")]
async fn lookback_pages_land_again_only_when_a_record_on_them_changed() {
    let sim = sim(&["--records", "120", "--seed", "11"]).await;
    let inc = r#"incremental = { param = "updated_since", field = "/updated_at", lookback = "3650d" }
poll_interval = "300ms""#;
    let cfg = Arc::new(config(&sim_source(
        &sim,
        &[("customers", "/v1/customers", "cursor")],
        inc,
    )));
    apply_topics(&cfg).await;
    let before = truth_versions(&truth(&sim).await, "customers");
    let (stop_tx, stop_rx) = stop_signal();
    let run = tokio::spawn(fetch::run(cfg.clone(), FetchOptions::default(), stop_rx));
    let served = || async {
        let s = sim_stats(&sim).await;
        s["pages"].as_u64().unwrap()
    };
    let wait_for = |n: u64| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while served().await < n {
            assert!(
                std::time::Instant::now() < deadline,
                "fetch served fewer than {n} pages"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // The full sync (3 pages), then idle look-backs over all 120 records (3 pages each).
    wait_for(3 + 3 * 6).await;
    sim_admin(&sim, "/admin/writes?n=8&stream=customers").await;
    let at_writes = served().await;
    wait_for(at_writes + 3 * 6).await;
    stop_tx.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert!(
        report["sim/customers"].syncs >= 12,
        "look-backs ran: {:?}",
        report["sim/customers"]
    );

    let pages = landed_pages(&cfg).await;
    assert_pages_unique_and_contiguous(&pages);
    let landed = landed_versions(&pages, "customers");
    let live = truth_versions(&truth(&sim).await, "customers");
    let written: BTreeSet<(String, u64)> = live
        .iter()
        .filter(|(id, v)| before.get(*id) != Some(*v))
        .map(|(id, v)| (id.clone(), *v))
        .collect();
    assert!(!written.is_empty(), "the writes changed records");
    for (id, v) in &written {
        assert_eq!(
            landed.get(&(id.clone(), *v)),
            Some(&1),
            "{id} v{v}: a changed record lands once, not once per look-back"
        );
    }
    for (id, v) in &live {
        assert!(
            landed.contains_key(&(id.clone(), *v)),
            "{id} v{v} never landed"
        );
    }
    // Every page without a written record belongs to the one full sync: the idle look-backs
    // (at least six of them) landed nothing.
    let unchanged: Vec<&Page> = pages
        .iter()
        .filter(|p| !p.records.iter().any(|r| written.contains(r)))
        .collect();
    let syncs: BTreeSet<&str> = unchanged.iter().map(|p| p.sync_id.as_str()).collect();
    assert_eq!(
        (unchanged.len(), syncs.len()),
        (3, 1),
        "pages without a change: {:?}",
        unchanged
            .iter()
            .map(|p| (&p.sync_id, p.seq))
            .collect::<Vec<_>>()
    );
    assert!(pages.len() <= 3 + 3, "{} pages landed", pages.len());
}

/// A stream without an incremental filter is re-read whole every poll: only pages with a
/// change land again, except when the full sync detects deletes (dedup must see every key).
#[tokio::test(flavor = "multi_thread")]
async fn re_read_streams_land_only_changes_unless_the_full_sync_detects_deletes() {
    let sim = sim(&["--records", "120", "--seed", "12"]).await;
    let mut text = sim_source(
        &sim,
        &[("events", "/v1/events", "after")],
        r#"poll_interval = "300ms""#,
    );
    text.push_str(
        r#"
[[sources.streams]]
name = "orders"
path = "/v1/orders"
primary_key = "/id"
version = "/version"
pagination = { style = "link", size_param = "limit" }
page_size = 50
poll_interval = "300ms"
detect_deletes = true
"#,
    );
    let cfg = Arc::new(config(&text));
    apply_topics(&cfg).await;
    let (stop_tx, stop_rx) = stop_signal();
    let run = tokio::spawn(fetch::run(cfg.clone(), FetchOptions::default(), stop_rx));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut syncs = BTreeMap::new();
    while syncs.len() < 2 || syncs.values().any(|&n| n < 6) {
        assert!(
            std::time::Instant::now() < deadline,
            "syncs so far: {syncs:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cfg = cfg.clone();
        syncs = tokio::task::spawn_blocking(move || {
            let mut m = BTreeMap::new();
            for c in support::e2e::cursor_history(&cfg) {
                if c.complete {
                    m.entry(c.stream)
                        .or_insert_with(BTreeSet::new)
                        .insert(c.sync_id);
                }
            }
            m.into_iter()
                .map(|(k, v)| (k, v.len()))
                .collect::<BTreeMap<_, _>>()
        })
        .await
        .unwrap();
    }
    stop_tx.send(()).unwrap();
    run.await.unwrap().unwrap();

    let pages = landed_pages(&cfg).await;
    assert_pages_unique_and_contiguous(&pages);
    let per_sync = |stream: &str| {
        let mut m: BTreeMap<&str, usize> = BTreeMap::new();
        for p in pages.iter().filter(|p| p.stream == stream) {
            *m.entry(p.sync_id.as_str()).or_default() += 1;
        }
        m
    };
    // events (no delete detection): the first sync landed its 120 records, later ones nothing.
    let events = per_sync("events");
    assert_eq!(
        events.values().copied().collect::<Vec<_>>(),
        [3],
        "events pages per sync"
    );
    // orders (full syncs detect deletes): every completed sync landed all 120 records.
    let orders = per_sync("orders");
    assert!(orders.len() >= 6, "{orders:?}");
    let complete = landed_versions(&pages, "orders");
    let n = complete.values().next().copied().unwrap();
    assert!(
        n >= 6 && complete.len() == 120,
        "{n} copies of {} records",
        complete.len()
    );
    assert!(
        complete.values().all(|&c| c == n || c == n + 1),
        "{complete:?}"
    );
}

/// A source on the simulator with one cursor-style stream `customers` at `path`, plus `extra`
/// stream lines.
fn customers_source(sim: &intake::sim::SimHandle, path: &str, extra: &str) -> String {
    let stream = format!(
        r#"
[[sources.streams]]
name = "customers"
path = "{path}"
primary_key = "/id"
pagination = {{ style = "cursor" }}
{extra}
"#
    );
    sim_bearer_source_head(sim, "") + &stream
}

/// Issue 18: a stream without `version` orders its records by the fetch that landed them. Two
/// full syncs of a version-less stream, with updates in between, land pages whose
/// `intake.stamp` strictly increases; those pages, copied to a second deployment's landing
/// topic in reverse order (the later fetch first), still leave the later fetch's content of
/// every record in the curated topic — judged by the simulator's truth (the record version
/// the truth holds, which intake does not read).
#[tokio::test(flavor = "multi_thread")]
async fn version_less_streams_keep_the_later_fetch_whatever_the_landing_order() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let sim = sim(&["--records", "60", "--seed", "18"]).await;
    // No `version`: the later fetch wins.
    let source = customers_source(&sim, "/v1/customers", "page_size = 20");
    let cfg = Arc::new(config(&source));
    apply_topics(&cfg).await;
    fetch_once(&cfg).await.unwrap();
    sim_admin(&sim, "/admin/writes?n=45&stream=customers").await;
    fetch_once(&cfg).await.unwrap();
    let truth_json = truth(&sim).await;
    let truth = truth_versions(&truth_json, "customers");
    let deleted: BTreeSet<String> = truth_json["streams"]["customers"]["deleted"]
        .as_object()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default();

    // Landed pages, in landing order: stamps strictly increase; every record's raw bytes by
    // (id, version) — what validate hashes.
    let names = intake::topics::TopicNames::from_config(&cfg);
    let landing: Vec<Rec> = read_all(&names.landing(), "read_committed")
        .into_iter()
        .filter(|r| r.header("intake.kind") == Some("page"))
        .collect();
    let stamps: Vec<i64> = landing
        .iter()
        .map(|r| {
            r.header("intake.stamp")
                .expect("every page is stamped")
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        stamps.len() >= 6,
        "two syncs of 60+ records: {}",
        stamps.len()
    );
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "stamps strictly increase in landing order: {stamps:?}"
    );
    let mut raw_by_version: BTreeMap<(String, u64), Vec<u8>> = BTreeMap::new();
    let mut updated = 0;
    for r in &landing {
        #[derive(serde::Deserialize)]
        struct P<'a> {
            #[serde(borrow)]
            data: Vec<&'a serde_json::value::RawValue>,
        }
        let page: P<'_> = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        for rec in page.data {
            let v: serde_json::Value = serde_json::from_str(rec.get()).unwrap();
            let id = v["id"].as_str().unwrap().to_owned();
            let version = v["version"].as_u64().unwrap();
            if version > 1 && !raw_by_version.contains_key(&(id.clone(), version)) {
                updated += 1;
            }
            raw_by_version.insert((id, version), rec.get().as_bytes().to_vec());
        }
    }
    assert!(
        updated >= 10,
        "the writes updated records between the syncs: {updated}"
    );

    // A second deployment gets the same landing records, the later fetch first.
    let cfg_b = Arc::new(config(&source));
    apply_topics(&cfg_b).await;
    let reg = intake::registry::Registry::new(&cfg_b.registry).unwrap();
    intake::registry::apply_schemas(&cfg_b, &reg).await.unwrap();
    let names_b = intake::topics::TopicNames::from_config(&cfg_b);
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for r in landing.iter().rev() {
        let mut h = OwnedHeaders::new();
        for (k, v) in &r.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        producer
            .send(
                FutureRecord::to(&names_b.landing())
                    .key(r.key.as_deref().unwrap())
                    .payload(r.value.as_deref().unwrap())
                    .headers(h),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let records: usize = landing
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(r.value.as_deref().unwrap()).unwrap()
                ["data"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    let valid = names_b.valid("sim", "customers");
    let dlq = names_b.dlq();
    let out = validate_until(
        &cfg_b,
        &[valid.clone(), dlq.clone()],
        "every record valid",
        |o| o[&valid].len() + o[&dlq].len() >= records,
    )
    .await;
    let kinds: Vec<&str> = out[&dlq]
        .iter()
        .filter_map(|r| r.header("dlq.error.detail"))
        .collect();
    assert_eq!(
        out[&valid].len(),
        records,
        "every landed record is valid: {kinds:?}"
    );

    let curated = names_b.curated("sim", "customers");
    let (stop, stopped) = stop_signal();
    let dedup = tokio::spawn(intake::dedup::stage::run(cfg_b.clone(), stopped));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let latest = loop {
        let recs = read_topics(std::slice::from_ref(&curated)).await;
        let mut latest: BTreeMap<String, Rec> = BTreeMap::new();
        for r in &recs[&curated] {
            latest.insert(r.key_str().to_owned(), r.clone());
        }
        let done = truth.keys().all(|id| {
            latest.get(id).and_then(|r| r.header("intake.hash"))
                == raw_by_version
                    .get(&(id.clone(), truth[id]))
                    .map(|raw| format!("{:016x}", intake::dedup::content_hash(raw)))
                    .as_deref()
        });
        if done {
            break latest;
        }
        assert!(!dedup.is_finished(), "dedup stopped: {:?}", dedup.await);
        assert!(
            std::time::Instant::now() < deadline,
            "the curated topic does not hold the later fetch of every record: {} of {} keys",
            latest.len(),
            truth.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    stop.send(()).unwrap();
    dedup.await.unwrap().unwrap();
    // Exactly the truth: every live key with the content of the version the truth holds,
    // its version the stamp of the later fetch's page; other keys only those deleted since
    // the first sync (no full sync detects deletes here).
    for id in latest.keys().filter(|k| !truth.contains_key(*k)) {
        assert!(
            deleted.contains(id),
            "{id} is neither live nor deleted in the truth"
        );
    }
    for id in truth.keys() {
        let v: i64 = latest[id]
            .header("intake.version")
            .unwrap()
            .parse()
            .unwrap();
        assert!(stamps.contains(&v), "{id}: version {v} is a page stamp");
    }
}

/// Issue 18: an incremental filter in epoch seconds (`format = "epoch_s"`) read from RFC 3339
/// fields (`field_format`): the incremental sync sends whole seconds, asks only for what
/// changed (less the look-back), and every version the truth holds lands.
#[tokio::test(flavor = "multi_thread")]
async fn epoch_second_filters_sync_incrementally() {
    let sim = sim(&["--records", "120", "--seed", "19"]).await;
    let cfg = Arc::new(config(&customers_source(
        &sim,
        "/v1/styles/cursor/customers",
        r#"version = "/version"
page_size = 25
incremental = { param = "updated_since", field = "/updated_at", format = "epoch_s", field_format = "rfc3339", lookback = "1s" }"#,
    )));
    apply_topics(&cfg).await;
    let first = fetch_once(&cfg).await.unwrap();
    assert_eq!(first["sim/customers"].records, 120);
    sim_admin(&sim, "/admin/writes?n=15&stream=customers").await;
    let second = fetch_once(&cfg).await.unwrap();
    let truth = truth_versions(&truth(&sim).await, "customers");
    let changed = second["sim/customers"].records;
    assert!(
        (1..60).contains(&changed),
        "the incremental sync reads what changed, not all {}: {changed}",
        truth.len()
    );
    let landing = read_landing(&cfg);
    let incremental: Vec<&str> = landing
        .iter()
        .filter(|r| r.header("intake.kind") == Some("page"))
        .filter_map(|r| r.header("intake.request"))
        .filter(|u| u.contains("updated_since="))
        .collect();
    assert!(!incremental.is_empty());
    for u in &incremental {
        let v = url::Url::parse(u).unwrap();
        let since = v
            .query_pairs()
            .find(|(k, _)| k == "updated_since")
            .unwrap()
            .1
            .into_owned();
        assert!(
            since.parse::<i64>().is_ok_and(|s| s > 1_700_000_000),
            "{u}: the filter is whole epoch seconds"
        );
    }
    let pages = landed_pages(&cfg).await;
    let landed: BTreeSet<(String, u64)> = pages
        .iter()
        .flat_map(|p| p.records.iter().cloned())
        .collect();
    for (id, v) in &truth {
        assert!(landed.contains(&(id.clone(), *v)), "{id} v{v} landed");
    }
}

/// Issue 18: session auth. The simulator takes only session tokens from its login endpoint and
/// ends each session after 4 requests; fetch logs in with the configured credentials (a
/// placeholder in the login body), and every 401 of an ended session triggers exactly one
/// login again: the simulator counts logins = 1 + sessions ended, and every record lands
/// exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn session_auth_logs_in_again_once_per_401_and_lands_everything_once() {
    let sim = sim(&[
        "--records",
        "230",
        "--seed",
        "11",
        "--session-login",
        "intake:s3ss10n-pw",
        "--session-max-requests",
        "4",
    ])
    .await;
    // SAFETY: this test is the only user of this variable name.
    unsafe { std::env::set_var("INTAKE_TEST_SESSION_PW", "s3ss10n-pw") };
    let source = sim_source(&sim, &[("customers", "/v1/customers", "cursor")], "").replace(
        r#"auth = { kind = "bearer", token = "demo" }"#,
        r#"auth = { kind = "session", login_url = "/v1/login", body = { json = { username = "{user}", password = "{password}" } }, credentials = { user = "intake", password = { env = "INTAKE_TEST_SESSION_PW" } }, token = "/session/token" }"#,
    );
    assert!(source.contains("kind = \"session\""));
    let cfg = Arc::new(config(&source));
    assert!(
        !format!("{cfg:?}").contains("s3ss10n-pw"),
        "the password stays out of Debug"
    );
    let (report, pages, expected) = fetch_230_customers(&sim, &cfg).await;
    assert_eq!(
        landed_versions(&pages, "customers"),
        expected,
        "every record exactly once"
    );
    assert_eq!(report["sim/customers"].records, 230);
    let stats = sim_stats(&sim).await;
    let s = &stats["sessions"];
    let (logins, ended) = (
        s["logins"].as_u64().unwrap(),
        s["sessions_expired"].as_u64().unwrap(),
    );
    let pages_served = stats["pages"].as_u64().unwrap();
    eprintln!(
        "session stats: {s}, pages served {pages_served}, unauthorized {}",
        stats["unauthorized"]
    );
    assert_eq!(s["failed_logins"], 0, "{s}");
    // 230 records in pages of 50: 5 pages, so at 4 requests a session the run outlives one.
    assert!(ended >= 1, "no session ended mid-run: {s}");
    assert_eq!(
        logins,
        ended + 1,
        "one login at the start and one per ended session: {s}"
    );
    assert_eq!(
        stats["unauthorized"].as_u64().unwrap(),
        ended,
        "each ended session was refused exactly once"
    );
}

/// A small tmpfs mounted for one test (the blob store's disk), unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = test_tmp().join(unique("small-disk-"));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "this test mounts a {size} tmpfs as the blob store's disk (to fill it), which needs root: mount -t tmpfs"
        );
        Self(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Issue 20: the blob store's disk is full. Fetch cannot store an oversize page, so it lands
/// nothing of that batch, says why, pauses and fetches the page again; once there is room,
/// every record lands exactly once (inline or by a reference whose body matches its sha256).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_blob_store_disk_pauses_fetch_and_loses_nothing() {
    let sim = sim(&[
        "--records",
        "300",
        "--seed",
        "11",
        "--large-rate",
        "0.005",
        "--large-bytes",
        "1200000",
    ])
    .await;
    let disk = SmallDisk::mount("16m");
    // Full: the filler leaves 512 KiB, less than any oversize page.
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 16 * 1024 * 1024 - 512 * 1024]).unwrap();
    let text = config_text(&sim_source(
        &sim,
        &[("customers", "/v1/customers", "cursor")],
        // One page per transaction: the pages before the first oversize one land inline.
        "pages_per_transaction = 1",
    ));
    let at = text.find("[blob]\nurl = \"file://").expect("a [blob] url") + "[blob]\n".len();
    let end = at + text[at..].find('\n').unwrap();
    let text = format!(
        "{}url = \"file://{}\"\nmax_inline_bytes = 1000000{}",
        &text[..at],
        disk.0.display(),
        &text[end..]
    );
    let (cfg, dir, path) = config_with_file(&text);
    apply_topics(&cfg).await;
    let log = dir.path().join("fetch.log");
    let mut fetch = support::proc::intake(&["fetch"], &log)
        .config(&path)
        .spawn();
    let refused = "the blob store refused an oversize page";
    assert!(
        fetch.wait_for(refused, 1, Duration::from_secs(90)),
        "fetch did not report the full disk:\n{}",
        fetch.tail(30)
    );
    // While the disk is full, no page that needed the blob store is committed.
    let landing = intake::topics::TopicNames::from_config(&cfg).landing();
    let during = {
        let landing = landing.clone();
        tokio::task::spawn_blocking(move || read_all(&landing, "read_committed"))
            .await
            .unwrap()
    };
    assert!(
        during
            .iter()
            .all(|r| r.header("intake.kind") != Some("blob-ref")),
        "a blob-ref was landed while the disk was full"
    );
    assert!(
        fetch.try_wait().is_none(),
        "fetch ended:\n{}",
        fetch.tail(30)
    );

    // Room again: the paused stream fetches the page again and lands everything once.
    std::fs::remove_file(&filler).unwrap();
    let truth = truth(&sim).await;
    let expected = each_once(&truth, "customers");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let pages = loop {
        let pages = landed_pages(&cfg).await;
        if landed_versions(&pages, "customers") == expected || std::time::Instant::now() > deadline
        {
            break pages;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let status = fetch.terminate(Duration::from_secs(60));
    let refusals = fetch.count(refused);
    println!(
        "{refusals} refusals while the disk was full, {} landed records before there was room, {} pages after",
        during.len(),
        pages.len()
    );
    assert!(status.success(), "fetch stops cleanly: {status}");
    assert_eq!(landed_versions(&pages, "customers"), expected);
    let landing_after = tokio::task::spawn_blocking(move || read_all(&landing, "read_committed"))
        .await
        .unwrap();
    let store = intake::blob::BlobStore::open(&cfg.blob).unwrap();
    let mut refs = 0;
    for r in landing_after
        .iter()
        .filter(|r| r.header("intake.kind") == Some("blob-ref"))
    {
        let b = intake::blob::BlobRef::parse_header(r.header("intake.blob").unwrap()).unwrap();
        let body = store.get(&b).await.unwrap();
        assert_eq!(intake::blob::sha256_hex(&body), b.sha256);
        refs += 1;
    }
    assert!(refs > 0, "the oversize pages landed by reference");
    assert!(
        during
            .iter()
            .any(|r| r.header("intake.kind") == Some("page")),
        "pages before the first oversize one landed while the disk was full"
    );
}

/// Issue 19 (async exports): a stream of kind export asks the simulator for an export of
/// 200 000 customers, polls it until its files are ready and lands each file (60 000 records,
/// claim-checked) with the cursor, exactly once, across a SIGKILL. Every response is 1.5 s slow, so the kill, sent as soon as the first file is
/// committed, lands before the second's commit (asserted, not assumed). The restarted
/// `fetch --once` resumes the same export from its committed cursor and completes that sync,
/// then runs one sync of its own (a second export): each sync holds each of its export's files
/// once and every customer of the truth exactly once, the simulator made exactly two exports,
/// served no file more than once but the one in flight at the kill, and deleted both.
#[tokio::test(flavor = "multi_thread")]
async fn an_async_export_lands_each_file_once_across_a_sigkill() {
    const RECORDS: usize = 200_000;
    const PER_FILE: usize = 60_000;
    let files = RECORDS.div_ceil(PER_FILE);
    let sim = sim(&[
        "--records",
        &RECORDS.to_string(),
        "--seed",
        "19",
        "--export-file-records",
        &PER_FILE.to_string(),
        "--export-polls",
        "2",
        "--compress",
        "gzip",
        "--slow-rate",
        "1",
        "--slow-ms",
        "1500",
    ])
    .await;
    let mut source = sim_source_head(&sim);
    source.push_str(
        r#"
[[sources.streams]]
name = "customers"
path = "/v1/exports/customers"
method = "POST"
query = { format = "jsonl" }
format = "jsonl"
primary_key = "/id"
version = "/version"
export = { status_path = "/v1/exports/{id}", poll_every = "100ms" }
"#,
    );
    let text = config_text(&source);
    let (cfg, dir, path) = config_with_file(&text);
    apply_topics(&cfg).await;
    let landing = intake::topics::TopicNames::from_config(&cfg).landing();
    let files_landed = |landing: String| async move {
        tokio::task::spawn_blocking(move || {
            read_all(&landing, "read_committed")
                .into_iter()
                .filter(|r| matches!(r.header("intake.kind"), Some("page" | "blob-ref")))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap()
    };

    let mut first = support::proc::intake(&["fetch", "--once"], dir.path().join("fetch-1.log"))
        .config(&path)
        .spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while files_landed(landing.clone()).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline && first.try_wait().is_none(),
            "no export file landed in 120 s:\n{}",
            first.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill();
    let at_kill = files_landed(landing.clone()).await.len();
    assert!(
        at_kill < files,
        "the kill interrupted the export ({at_kill} of {files} files had landed)"
    );

    let mut second = support::proc::intake(&["fetch", "--once"], dir.path().join("fetch-2.log"))
        .config(&path)
        .spawn();
    let (status, _) = second.wait_output(Duration::from_secs(300));
    assert!(
        status.success(),
        "the second fetch ends: {status}\n{}",
        second.tail(30)
    );

    let pages = files_landed(landing).await;
    let store = intake::blob::BlobStore::open(&cfg.blob).unwrap();
    type Landed = (usize, BTreeMap<(String, u64), usize>);
    let mut syncs: BTreeMap<String, Landed> = BTreeMap::new();
    for r in &pages {
        let sync = syncs
            .entry(r.header("intake.sync_id").unwrap().to_owned())
            .or_default();
        sync.0 += 1;
        let seen = &mut sync.1;
        assert_eq!(r.header("intake.format"), Some("jsonl"));
        let body = match r.header("intake.kind") {
            Some("blob-ref") => {
                let b =
                    intake::blob::BlobRef::parse_header(r.header("intake.blob").unwrap()).unwrap();
                store.get(&b).await.unwrap().to_vec()
            }
            _ => r.value.clone().unwrap(),
        };
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let key = (
                v["id"].as_str().unwrap().to_owned(),
                v["version"].as_u64().unwrap(),
            );
            *seen.entry(key).or_default() += 1;
        }
    }
    let truth = truth(&sim).await;
    let want = each_once(&truth, "customers");
    assert_eq!(
        syncs.len(),
        2,
        "the resumed sync and one of the second fetch's own"
    );
    for (sync, (n, seen)) in &syncs {
        assert_eq!(
            *n, files,
            "sync {sync}: each file landed once ({at_kill} before the kill)"
        );
        assert!(*seen == want, "sync {sync}: every customer exactly once");
    }
    let stats = sim_stats(&sim).await;
    let ex = &stats["exports"];
    println!("{files} files, {at_kill} landed before the kill; simulator: {ex}");
    assert_eq!(
        ex["created"], 2,
        "the restarted fetch resumed the first export: {ex}"
    );
    assert_eq!(
        ex["deleted"], 2,
        "each export was deleted once landed: {ex}"
    );
    assert!(
        ex["files"].as_u64().unwrap() <= 2 * files as u64 + 1,
        "each file served once, the one in flight at the kill at most twice: {ex}"
    );
}

/// Issue 19, windowed parallel backfill: 20 000 customers over seven months read in 14-day
/// windows, four at a time, each window split once it has read 250 records (the simulator
/// refuses any query past its 300th result, as HubSpot's search stops at 10 000), every answer
/// 400 ms slow. `fetch --once` is SIGKILLed 20 times, each time right after a page of the
/// backfill committed (the other slots' transactions open or not), then runs to the end.
/// Judged from the landing topic and the simulator:
/// every customer landed, exactly once unless its `updated_at` is where a window split (both
/// sides of the split hold that instant), no page twice (sync, window, seq), windows split,
/// and no request hit the simulator's cap.
#[tokio::test(flavor = "multi_thread")]
async fn a_windowed_backfill_lands_every_record_once_across_20_sigkills() {
    const RECORDS: usize = 20_000;
    const KILLS: usize = 20;
    let sim = sim(&[
        "--records",
        &RECORDS.to_string(),
        "--seed",
        "23",
        "--result-cap",
        "300",
        "--slow-rate",
        "1",
        "--slow-ms",
        "400",
    ])
    .await;
    let windowed = r#"incremental = { param = "updated_since", end_param = "updated_before", field = "/updated_at", lookback = "1m" }
backfill = { start = "2024-01-01T00:00:00Z", step = "14d", concurrency = 4, max_records_per_window = 250 }"#;
    let text = config_text(&sim_source(
        &sim,
        &[("customers", "/v1/customers", "cursor")],
        windowed,
    ));
    let (cfg, dir, path) = config_with_file(&text);
    apply_topics(&cfg).await;
    let landing = intake::topics::TopicNames::from_config(&cfg).landing();
    // Four window slots commit in turn, so a reader that waits for the end of the partition
    // rarely finds it while they run: the kills are timed by intake's own reader, which reads
    // to the last stable offset as it stood when it began; the outcome is judged afterwards.
    let committed = |cfg: Arc<intake::config::Config>| async move {
        tokio::task::spawn_blocking(move || {
            let kinds = landed_kinds(&cfg);
            (
                kinds
                    .iter()
                    .filter(|(k, _)| k.as_deref() == Some("page"))
                    .count(),
                kinds.iter().any(|(k, _)| k.as_deref() == Some("sync-end")),
            )
        })
        .await
        .unwrap()
    };
    let mut kills = 0;
    while kills < KILLS {
        let (before, _) = committed(cfg.clone()).await;
        let mut p = support::proc::intake(
            &["fetch", "--once"],
            dir.path().join(format!("fetch-{kills}.log")),
        )
        .config(&path)
        .spawn();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (now, ended) = committed(cfg.clone()).await;
            assert!(
                !ended,
                "the backfill completed before kill {} of {KILLS}: the precondition (a backfill long enough for every kill) does not hold\n{}",
                kills + 1,
                p.tail(40)
            );
            if now > before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline && p.try_wait().is_none(),
                "no page landed in 120 s after start {}:\n{}",
                kills + 1,
                p.tail(30)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p.kill();
        kills += 1;
    }
    let mut last = support::proc::intake(&["fetch", "--once"], dir.path().join("fetch-last.log"))
        .config(&path)
        .spawn();
    // Once the last fetch landed a page (every slot fenced its killed predecessor, whose open
    // transactions are aborted), `intake status` shows the backfill in progress, its windows
    // from their committed cursors.
    let (before, _) = committed(cfg.clone()).await;
    while committed(cfg.clone()).await.0 == before {
        assert!(
            last.try_wait().is_none(),
            "the last fetch ended before a page:\n{}",
            last.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = intake::status::gather(&cfg).await.unwrap();
    let b = status.cursors["sim/customers"]
        .as_ref()
        .and_then(|c| c.backfill.clone())
        .expect("a backfill in progress");
    assert!(
        b.windows >= 16 && b.done >= 1 && b.done < b.windows,
        "windows by status after the kills: {b:?}"
    );
    let (status, _) = last.wait_output(Duration::from_secs(300));
    assert!(
        status.success(),
        "the last fetch ends: {status}\n{}",
        last.tail(30)
    );

    let recs = tokio::task::spawn_blocking(move || read_all(&landing, "read_committed"))
        .await
        .unwrap();
    let truth = truth(&sim).await;
    let mut seen_pages: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    let mut windows: BTreeSet<String> = BTreeSet::new();
    let mut got: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for r in recs
        .iter()
        .filter(|r| r.header("intake.kind") == Some("page"))
    {
        let window = r
            .header("intake.window")
            .expect("a backfill page names its window");
        windows.insert(window.to_owned());
        *seen_pages
            .entry((
                r.header("intake.sync_id").unwrap().to_owned(),
                window.to_owned(),
                r.header("intake.seq").unwrap().to_owned(),
            ))
            .or_default() += 1;
        let page: serde_json::Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        for c in page["data"].as_array().unwrap() {
            *got.entry((
                c["id"].as_str().unwrap().to_owned(),
                c["version"].as_u64().unwrap(),
            ))
            .or_default() += 1;
        }
    }
    let twice: Vec<_> = seen_pages.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "pages landed twice: {twice:?}");
    // The plan's windows start every 14 days from the start; the others are splits.
    let start = time::OffsetDateTime::from_unix_timestamp(1_704_067_200).unwrap();
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let splits: BTreeSet<time::OffsetDateTime> = windows
        .iter()
        .map(|w| parse(w))
        .filter(|t| (*t - start).whole_seconds() % (14 * 86_400) != 0)
        .collect();
    assert!(
        splits.len() >= 8,
        "windows split at the cap: {} windows, {} splits",
        windows.len(),
        splits.len()
    );
    let mut lost = Vec::new();
    let mut doubled = Vec::new();
    let live = truth["streams"]["customers"]["live"].as_object().unwrap();
    for (id, rec) in live {
        let key = (id.clone(), rec["version"].as_u64().unwrap());
        let at = parse(rec["record"]["updated_at"].as_str().unwrap());
        match got.get(&key).copied().unwrap_or(0) {
            0 => lost.push(key),
            1 => {}
            2 if splits.contains(&at) => {}
            n => doubled.push((key, n)),
        }
    }
    assert_eq!(live.len(), RECORDS);
    assert_none(&lost, "customers lost");
    assert!(
        doubled.is_empty(),
        "customers landed more than once: {doubled:?}"
    );
    assert_eq!(got.len(), RECORDS, "nothing but the truth landed");
    let stats = sim_stats(&sim).await;
    assert_eq!(
        stats["result_cap_refusals"], 0,
        "no query ran past the cap: {stats}"
    );
    println!(
        "{KILLS} kills; {} pages in {} windows ({} splits); every customer once",
        seen_pages.len(),
        windows.len(),
        splits.len()
    );
}
