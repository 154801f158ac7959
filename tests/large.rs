//! Issue 22: records larger than their valid and curated topics take arrive, end to end.
//!
//! The simulator serves records whose `notes` make them 0.99 MB, 1.5 MB or 5 MB (the broker and
//! the stream keep the default 1 MiB `max.message.bytes`). They reach the curated topics three
//! ways — fetched pages, a batch job submitted by blob reference, and signed webhooks — while
//! `intake validate` and `intake dedup` (separate processes, as are fetch and serve) are
//! SIGKILLed and restarted. At the end `intake verify` equals the simulator's truth, and reading
//! every curated topic as docs/DOWNSTREAM.md tells a reader to (schemas by topic name,
//! claim-check references resolved from the blob store, sha256 checked) gives exactly the
//! truth's records: the 1.5 and 5 MB ones by reference, the 0.99 MB ones whole. Nothing is
//! dead-lettered as `too_large`.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use intake::topics::TopicNames;
use serde_json::{Value as Json, json};
use support::e2e::{self, Knobs};
use support::proc::{self, Proc};
use support::*;

/// The sizes of a large record's `notes`.
const SIZES: &str = "990000,1500000,5000000";
/// Kills of each of validate and dedup at least.
const KILLS: usize = 3;

/// One stage process, restarted under the same instance id after each SIGKILL.
struct Stage {
    args: &'static str,
    child: Option<Proc>,
    log: std::path::PathBuf,
    kills: usize,
}

impl Stage {
    fn start(&mut self, config: &std::path::Path) {
        self.child = Some(
            proc::intake(&[self.args], &self.log)
                .config(config)
                .env("INTAKE_INSTANCE_ID", format!("large-{}", self.args))
                .spawn(),
        );
    }
    fn kill_and_restart(&mut self, config: &std::path::Path) {
        if let Some(mut c) = self.child.take() {
            c.kill();
            self.kills += 1;
        }
        self.start(config);
    }
    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(Proc::running)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_the_topic_limit_arrive_by_claim_check_under_sigkills() {
    let started = Instant::now();
    let (sim, serve_port) = support::scenario::paused_sim_with_webhooks(
        36,
        &format!(
            "--seed 22 --write-rate 3 --delete-share 0.3 --large-rate 0.25 --large-bytes {SIZES} \
             --webhook-timeout 30s"
        ),
    )
    .await;
    let knobs = Knobs {
        serve_port,
        quota: 100,
        poll: "1s",
        full_sync_every: "15s",
        lookback: "1m",
        page_size: 10,
    };
    // Webhooks of 5 MB events: serve's body limit above them.
    let sources = e2e::sources(sim.addr, &knobs).replacen(
        "[serve]\n",
        "[serve]\nmax_body_bytes = 8388608\n",
        1,
    );
    let text = config_text(&format!("{sources}\n{}", serve_client()));
    let cfg = intake::config::Config::from_toml(&text).unwrap();
    apply_topics(&cfg).await;
    let names = TopicNames::from_config(&cfg);
    // The stream limit is the broker's default; `topics apply` set it on valid and curated.
    {
        let kafka = kafka(&cfg);
        let max = intake::topics::broker_message_max_bytes(&kafka)
            .await
            .unwrap();
        assert_eq!(max, Some(1_048_588), "the stack's broker keeps the default");
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path(), &text);
    let (code, out) = proc::intake(&["schema", "apply"], dir.path().join("schemas.log"))
        .config(&cfg_path)
        .run_output(Duration::from_secs(120));
    assert!(code.success(), "schema apply: {out}");

    let truth0 = truth(&sim).await;
    let size_of = |truth: &Json, stream: &str, id: &str| -> usize {
        truth["streams"][stream]["live"][id]["record"]["notes"]
            .as_str()
            .map_or(0, str::len)
    };
    let mut by_size: BTreeMap<usize, usize> = BTreeMap::new();
    for (s, ..) in e2e::STREAMS {
        for id in truth0["streams"][s]["large"].as_array().unwrap() {
            *by_size
                .entry(size_of(&truth0, s, id.as_str().unwrap()))
                .or_default() += 1;
        }
    }
    println!("large records at the start by size: {by_size:?}");
    for size in [990_000, 1_500_000, 5_000_000] {
        assert!(by_size.get(&size).is_some_and(|n| *n > 0), "{by_size:?}");
    }

    let mut serve = proc::intake(&["serve"], dir.path().join("serve.log"))
        .config(&cfg_path)
        .env("INTAKE_INSTANCE_ID", "large-serve")
        .spawn();
    let mut validate = Stage {
        args: "validate",
        child: None,
        log: dir.path().join("validate.log"),
        kills: 0,
    };
    let mut dedup = Stage {
        args: "dedup",
        child: None,
        log: dir.path().join("dedup.log"),
        kills: 0,
    };
    validate.start(&cfg_path);
    dedup.start(&cfg_path);
    let http = serve_http();
    let base = format!("http://127.0.0.1:{serve_port}");
    wait_ready(&base, 600, Duration::from_millis(200)).await;

    // --- 1. a job by blob reference: every large customer of the truth, as the API has it ---
    let job_records: Vec<Json> = truth0["streams"]["customers"]["large"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| truth0["streams"]["customers"]["live"][id.as_str().unwrap()]["record"].clone())
        .filter(|r| !r.is_null())
        .collect();
    assert!(!job_records.is_empty());
    let batch = serde_json::to_vec(&json!({ "data": job_records })).unwrap();
    println!(
        "job: {} large customers, {} bytes",
        job_records.len(),
        batch.len()
    );
    let r = http
        .put(format!("{base}/v1/blobs/large-job.json"))
        .body(batch)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "upload: {}", r.status());
    let r = http
        .post(format!(
            "{base}/v1/jobs?source=sim&stream=customers&blob=large-job.json"
        ))
        .header("Idempotency-Key", "large-job")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "job: {}", r.status());
    // validate is SIGKILLed while the job is processed; its counts are still exact.
    validate.kill_and_restart(&cfg_path);
    let job = loop {
        let j: Json = get_json(&http, &format!("{base}/v1/jobs/large-job")).await;
        if j["counts"]["pending"] == 0 && j["counts"]["landed"].as_u64() > Some(0) {
            break j;
        }
        assert!(validate.running(), "validate stopped");
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "job never validated: {j}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        job["counts"]["valid"].as_u64(),
        Some(job_records.len() as u64),
        "{job}"
    );
    assert_eq!(job["counts"]["dead_lettered"], 0, "{job}");

    // --- 2. backfill by fetch, then live writes with webhooks, under SIGKILLs ----------------
    let mut fetch = proc::intake(&["fetch"], dir.path().join("fetch.log"))
        .config(&cfg_path)
        .env("INTAKE_INSTANCE_ID", "large-fetch")
        .spawn();
    let begun = time::OffsetDateTime::now_utc();
    let landing = names.landing();
    // Kill each stage while large records are on their way: validate once claim-checked pages
    // are landed, dedup once claim-check references are in a valid topic.
    let valid_topics: Vec<String> = e2e::STREAMS
        .iter()
        .map(|(s, ..)| names.valid("sim", s))
        .collect();
    let mut live_started: Option<Instant> = None;
    while validate.kills < KILLS || dedup.kills < KILLS || live_started.is_none() {
        assert!(fetch.running() && serve.running(), "fetch or serve stopped");
        let (blob_pages, references) = tokio::task::spawn_blocking({
            let (landing, valid_topics) = (landing.clone(), valid_topics.clone());
            move || {
                let pages = read_all(&landing, "read_committed")
                    .iter()
                    .filter(|r| r.header("intake.blob").is_some())
                    .count();
                let refs: usize = valid_topics
                    .iter()
                    .map(|t| {
                        read_all(t, "read_committed")
                            .iter()
                            .filter(|r| r.header("intake.blob").is_some())
                            .count()
                    })
                    .sum();
                (pages, refs)
            }
        })
        .await
        .unwrap();
        if blob_pages > validate.kills && validate.kills < KILLS {
            validate.kill_and_restart(&cfg_path);
        }
        if references > dedup.kills && dedup.kills < KILLS {
            dedup.kill_and_restart(&cfg_path);
        }
        if live_started.is_none() && validate.kills >= 2 {
            // Live writes (and their webhooks) while the kills go on.
            sim_admin(&sim, "/admin/resume").await;
            live_started = Some(Instant::now());
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "kills: validate {}, dedup {}",
            validate.kills,
            dedup.kills
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Live writes for at least 15 s, until a large record went out as a webhook and a large
    // record that was curated by reference was deleted.
    loop {
        let stats = sim_stats(&sim).await;
        let events_by_blob = tokio::task::spawn_blocking({
            let landing = landing.clone();
            move || {
                read_all(&landing, "read_committed")
                    .iter()
                    .filter(|r| {
                        r.header("intake.kind") == Some("event")
                            && r.header("intake.blob").is_some()
                    })
                    .count()
            }
        })
        .await
        .unwrap();
        let deleted_by_reference = tokio::task::spawn_blocking({
            let cfg = cfg.clone();
            move || deleted_references(&cfg)
        })
        .await
        .unwrap();
        if live_started.unwrap().elapsed() > Duration::from_secs(15)
            && events_by_blob > 0
            && !deleted_by_reference.is_empty()
        {
            println!(
                "live: {events_by_blob} large webhook events landed by claim-check; {}",
                stats["writer"]
            );
            break;
        }
        assert!(
            live_started.unwrap().elapsed() < Duration::from_secs(300),
            "no large webhook event landed ({events_by_blob}) or no referenced key deleted ({deleted_by_reference:?}): {stats}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    sim_admin(&sim, "/admin/pause").await;
    let paused_at = time::OffsetDateTime::now_utc();
    assert!(paused_at > begun);

    // --- 3. every webhook delivered, a full sync after the pause, then the truth ------------
    let hooks = e2e::webhooks_delivered(&sim, Duration::from_secs(120)).await;
    let tail = || proc::tail(&dir.path().join("fetch.log"), 30);
    e2e::wait_for_syncs_after(&cfg, paused_at, Duration::from_secs(120), tail).await;
    let truth = truth(&sim).await;
    let report = e2e::converge(&cfg, &truth, Duration::from_secs(90)).await;
    let logs = [
        dir.path().join("validate.log"),
        dir.path().join("dedup.log"),
        dir.path().join("fetch.log"),
        dir.path().join("serve.log"),
    ];
    if !e2e::equal(&report) {
        println!("{}", e2e::diagnose(&cfg, &logs).await);
    }
    let claim_checked: usize = report.streams.values().map(|c| c.claim_checked).sum();
    for (stream, c) in &report.streams {
        assert!(c.ok() && c.matched == c.expected_live, "{stream}: {c:?}");
    }
    // Dedup tombstones keys it curated by reference like any other: every such key the truth
    // deleted ends in a tombstone.
    let deleted_refs = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || deleted_references(&cfg)
    })
    .await
    .unwrap();
    for (stream, id) in &deleted_refs {
        assert!(
            truth["streams"][stream.as_str()]["deleted"]
                .get(id.as_str())
                .is_some(),
            "{stream}/{id} tombstoned but not deleted in the truth"
        );
    }
    let tombstoned: usize = report.streams.values().map(|c| c.tombstoned).sum();
    assert!(!deleted_refs.is_empty() && tombstoned >= deleted_refs.len());
    assert!(
        !report.dlq_by_kind.contains_key("too_large"),
        "nothing is too large: {:?}",
        report.dlq_by_kind
    );

    // `intake verify`, the operator's command, agrees.
    let truth_path = dir.path().join("truth.json");
    std::fs::write(&truth_path, serde_json::to_vec(&truth).unwrap()).unwrap();
    let (status, out) = proc::intake(
        &[
            "verify",
            "--source",
            "sim",
            "--truth",
            truth_path.to_str().unwrap(),
        ],
        dir.path().join("verify.log"),
    )
    .config(&cfg_path)
    .run_output(Duration::from_secs(300));
    assert!(status.success(), "intake verify: {out}");
    assert!(out.contains("curated topics EQUAL"), "{out}");

    // Read as docs/DOWNSTREAM.md says: references resolved, bodies decoded by topic name.
    let (by_name, resolved) = e2e::read_by_topic_name_resolving(&cfg).await;
    let want = e2e::truth_live(&truth);
    let mut seen_sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for (stream, live) in &want {
        assert_eq!(&by_name[stream], live, "{stream} read by topic name");
        for id in live.keys() {
            let notes = size_of(&truth, stream, id);
            let by_reference = resolved[stream].contains_key(id);
            let class = match notes {
                0 => "small",
                990_000 => "0.99 MB",
                1_500_000 => "1.5 MB",
                5_000_000 => "5 MB",
                n => panic!("{stream}/{id}: notes of {n} bytes"),
            };
            // Over the 1 MiB topics: by reference; the rest whole.
            assert_eq!(
                by_reference,
                notes > 1_000_000,
                "{stream}/{id} ({class}) by reference: {by_reference}"
            );
            *seen_sizes.entry(class).or_default() += 1;
        }
    }
    for class in ["0.99 MB", "1.5 MB", "5 MB"] {
        assert!(
            seen_sizes.get(class).is_some_and(|n| *n > 0),
            "{seen_sizes:?}"
        );
    }
    // `intake blob get` fetches a reference's body: the framed record, sha256 checked.
    let (stream, id) = resolved
        .iter()
        .find_map(|(s, m)| m.keys().next().map(|k| (s.clone(), k.clone())))
        .unwrap();
    let curated = names.curated("sim", &stream);
    let last = tokio::task::spawn_blocking(move || {
        read_all(&curated, "read_committed")
            .into_iter()
            .rfind(|r| r.key_str() == id)
            .unwrap()
    })
    .await
    .unwrap();
    let reference =
        intake::blob::BlobRef::parse_header(last.header("intake.blob").unwrap()).unwrap();
    let (status, out) = proc::intake(
        &["blob", "get", &reference.uri, "--json"],
        dir.path().join("blob.log"),
    )
    .config(&cfg_path)
    .run_output(Duration::from_secs(120));
    assert!(status.success(), "intake blob get: {out}");
    let body: Json = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(body["id"].as_str(), Some(last.key_str()), "blob get --json");
    assert!(body["notes"].as_str().unwrap().len() > 1_000_000);

    let stats = sim_stats(&sim).await;
    for (name, p) in [("fetch", &mut fetch), ("serve", &mut serve)] {
        let st = p.terminate(Duration::from_secs(60));
        assert!(st.success(), "{name} stops cleanly: {st}");
    }
    for s in [&mut validate, &mut dedup] {
        if let Some(mut c) = s.child.take() {
            let st = c.terminate(Duration::from_secs(60));
            assert!(st.success(), "{} stops cleanly: {st}", s.args);
        }
    }
    println!(
        "large records: {seen_sizes:?} live keys by size class, {claim_checked} curated by claim-check and resolved; \
         {} keys carried by reference then tombstoned; job of {} records valid {}; SIGKILLs validate {} dedup {}; {} writes, webhooks {}; whole test {:.1} s",
        deleted_refs.len(),
        job_records.len(),
        job["counts"]["valid"],
        validate.kills,
        dedup.kills,
        stats["writer"]["writes"],
        hooks,
        started.elapsed().as_secs_f64()
    );
}

/// (stream, key) of every curated key whose last record is a tombstone and that the curated
/// topic carried by claim-check reference before.
fn deleted_references(cfg: &intake::config::Config) -> Vec<(String, String)> {
    let names = TopicNames::from_config(cfg);
    let mut out = Vec::new();
    for (s, ..) in e2e::STREAMS {
        let mut by_reference = std::collections::BTreeSet::new();
        let mut last_is_tombstone = BTreeMap::new();
        for r in read_all(&names.curated("sim", s), "read_committed") {
            if r.header("intake.blob").is_some() {
                by_reference.insert(r.key_str().to_owned());
            }
            last_is_tombstone.insert(r.key_str().to_owned(), r.value.is_none());
        }
        for k in by_reference {
            if last_is_tombstone[&k] {
                out.push((s.to_owned(), k));
            }
        }
    }
    out
}
