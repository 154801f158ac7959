//! Issue 20: the end-to-end tests' judges, proven by breaking the pipeline on purpose.
//!
//! A judge that never failed proves nothing. This test runs fetch, validate, dedup and serve as
//! separate processes against the simulator with one deliberate defect per stage
//! (`INTAKE_FAULTS`, `src/faults.rs`, debug builds only), and requires each judge to name
//! exactly the records its defect touched — as the defective process itself logged them:
//!
//! - validate drops every 40th record → the ledger (`support::ledger`), judged with fetch
//!   stopped and before any repair sync, reports exactly those (landing origin, key) as lost;
//! - dedup emits every 3rd record that lost the merge → the concurrent judge
//!   (`support::judge`) reports exactly that many curated versions that did not move
//!   forward, for exactly those keys;
//! - serve answers every 4th webhook as landed without landing it → the by-id webhook ledger
//!   (`e2e::webhook_ledger_faults`) finds exactly that many events missing, and none of their
//!   ids on the landing topic.
//!
//! Each defect must have hit at least a few times (the input is sized so it does), so no
//! verdict is left to chance.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use support::e2e::{self, Knobs};
use support::proc::{self, Proc};
use support::*;

/// The hits a defective process logged: each line's fields named `fields`.
fn hits(log: &Path, fault: &str, fields: &[&str]) -> Vec<Vec<String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fault"] == fault)
        .map(|v| {
            fields
                .iter()
                .map(|f| match &v[*f] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect()
}

/// The field `field` of each hit of `fault` in `log` (see [`hits`]).
fn hit_field<C: FromIterator<String>>(log: &Path, fault: &str, field: &str) -> C {
    hits(log, fault, &[field])
        .into_iter()
        .map(|mut h| h.remove(0))
        .collect()
}

/// Fails the test, with the logs' `tails`, unless a deliberate defect fired a few (5) times:
/// `n` times the stage `did` to `what`.
fn assert_a_few(n: usize, did: &str, what: &str, tails: impl Fn() -> String) {
    assert!(
        n >= 5,
        "{did} only {n} {what}; the test needs a few\n{}",
        tails()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_judge_names_exactly_what_its_deliberate_defect_broke() {
    let started = Instant::now();
    let (sim, serve_port) = support::scenario::paused_sim_with_webhooks(
        200,
        "--write-rate 20 --delete-share 0.1 --webhook-max-attempts 60",
    )
    .await;
    let knobs = Knobs {
        serve_port,
        quota: 100,
        poll: "1s",
        full_sync_every: "5s",
        lookback: "1m",
        page_size: 50,
    };
    // The quiet DLQ off: with it on, a dropped repeat of a dead-lettered record is one of
    // several identical occurrences, which the ledger counts but cannot name.
    let text = config_text(&e2e::sources(sim.addr, &knobs)) + "\n[dlq]\nquiet_for = \"0s\"\n";
    let cfg = intake::config::Config::from_toml(&text).unwrap();
    let dir = test_tmp().join(unique("judges-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = write_config(&dir, &text);
    apply_topics(&cfg).await;
    let reg = intake::registry::Registry::new(&cfg.registry).unwrap();
    intake::registry::apply_schemas(&cfg, &reg)
        .await
        .expect("schemas apply");

    let judge = support::judge::Judge::for_sim(&cfg);

    let log = |stage: &str| dir.join(format!("{stage}.log"));
    let start = |stage: &str, faults: &str| -> Proc {
        let mut p = proc::intake(&[stage], log(stage)).config(&path);
        if !faults.is_empty() {
            p = p.env(intake::faults::ENV, faults);
        }
        p.spawn()
    };
    let begun = time::OffsetDateTime::now_utc();
    let mut fetch = start("fetch", "");
    let mut stages = [
        start("validate", "validate_skip=40"),
        start("dedup", "dedup_stale=3"),
        start("serve", "serve_early_ack=4"),
    ];
    let tails = || {
        ["fetch", "validate", "dedup", "serve"]
            .iter()
            .map(|s| format!("--- {s}\n{}", proc::tail(&log(s), 15)))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // The backfill, then live writes with webhooks until enough of each happened.
    e2e::wait_for_syncs_after(&cfg, begun, Duration::from_secs(120), &tails).await;
    sim_admin(&sim, "/admin/resume").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = sim_stats(&sim).await;
        if stats["webhooks"]["enqueued"].as_u64().unwrap_or(0) >= 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer made too few webhooks: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sim_admin(&sim, "/admin/pause").await;
    let hooks = e2e::webhooks_delivered(&sim, Duration::from_secs(120)).await;

    // fetch stops, so nothing can re-land what validate dropped; then the ledger.
    let status = fetch.terminate(Duration::from_secs(120));
    assert!(
        status.success(),
        "fetch did not stop cleanly ({status})\n{}",
        tails()
    );
    let ledger = support::ledger::settle(&cfg, Duration::from_secs(30)).await;
    println!("{}", ledger.summary(10));

    // validate: exactly the dropped records are lost, and nothing else is.
    let dropped: BTreeSet<(String, String)> =
        hits(&log("validate"), "validate_skip", &["origin", "key"])
            .into_iter()
            .map(|h| (h[0].clone(), h[1].clone()))
            .collect();
    assert_a_few(dropped.len(), "validate dropped", "records", tails);
    assert_eq!(
        ledger.lost,
        dropped,
        "the ledger's lost records against those validate dropped\n{}",
        ledger.summary(20)
    );
    let other: Vec<&String> = ledger
        .faults
        .iter()
        .filter(|f| !f.ends_with(": lost") && !f.ends_with(": stale"))
        .collect();
    assert!(other.is_empty(), "faults no defect explains: {other:?}");

    // dedup: every stale emission is a curated version that did not move forward.
    let emitted: Vec<String> = hit_field(&log("dedup"), "dedup_stale", "key");
    assert_a_few(emitted.len(), "dedup emitted", "stale records", tails);
    let (verdict, reached) =
        tokio::task::spawn_blocking(move || judge.finish(Duration::from_secs(60), None))
            .await
            .unwrap();
    assert!(
        reached,
        "the concurrent judge did not reach the topics' ends"
    );
    let mut backwards: Vec<String> = verdict
        .faults
        .iter()
        .filter(|f| f.ends_with("not forward"))
        .map(|f| {
            f.split(" key ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut expected = emitted.clone();
    backwards.sort();
    expected.sort();
    assert_eq!(
        backwards, expected,
        "the concurrent judge's backward versions against dedup's stale emissions"
    );
    assert_eq!(
        verdict.faults.len(),
        emitted.len(),
        "faults no defect explains: {:?}",
        verdict.faults
    );
    // The ledger's stale keys are stale emissions no later emission overtook.
    let emitted_keys: BTreeSet<&String> = emitted.iter().collect();
    assert!(
        ledger.stale.iter().all(|(_, k)| emitted_keys.contains(k)),
        "stale keys no stale emission explains: {:?}",
        ledger.stale
    );

    // serve: every early-acknowledged event is missing from landing, and only those.
    let acked_only: BTreeSet<String> = hit_field(&log("serve"), "serve_early_ack", "event_id");
    assert_a_few(acked_only.len(), "serve skipped", "webhooks", tails);
    let landed = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || e2e::landed_events(&cfg)
    })
    .await
    .unwrap();
    let faults = e2e::webhook_ledger_faults(&hooks, &landed);
    assert!(
        faults.iter().any(|f| f.starts_with(&format!(
            "{} distinct event ids landed, the simulator made {} events",
            landed.1.len(),
            landed.1.len() + acked_only.len()
        ))),
        "the webhook ledger against serve's early acknowledgements ({} of them): {faults:?}",
        acked_only.len()
    );
    assert!(
        acked_only.is_disjoint(&landed.1),
        "an event serve did not land is on the landing topic"
    );

    for p in stages.iter_mut() {
        p.terminate(Duration::from_secs(60));
    }
    println!(
        "JUDGES: ledger named {} lost records (validate dropped {}), the concurrent judge {} backward versions (dedup emitted {} stale), the webhook ledger {} missing events (serve acknowledged {} without landing); {} landed records and {} curated keys judged; {:.1} s",
        ledger.lost.len(),
        dropped.len(),
        verdict.faults.len(),
        emitted.len(),
        acked_only.len(),
        acked_only.len(),
        ledger.landed,
        ledger.keys,
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
