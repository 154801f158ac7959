//! Issue 19: `intake reprocess` re-validates a stream's landed pages with today's schemas,
//! without one request to the API, exactly once across a crash, and dedup converges.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use intake::headers;
use intake::topics::TopicNames;
use serde_json::Value as Json;
use support::*;

const STREAMS: [&str; 2] = ["customers", "orders"];

/// The run's record in `intake.jobs` as Kafka holds it (its latest value).
fn progress(names: &TopicNames, id: &str) -> Option<Json> {
    let key = format!("~reprocess/{id}");
    read_all(&names.jobs(), "read_committed")
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
        .max_by_key(|r| r.offset)
        .and_then(|r| serde_json::from_slice(r.value.as_deref()?).ok())
}

/// `(stream, id)` → its latest curated record's version, for keys whose latest is not a
/// tombstone.
fn curated_versions(
    out: &BTreeMap<String, Vec<Rec>>,
    names: &TopicNames,
) -> BTreeMap<(String, String), u64> {
    let mut latest: BTreeMap<(String, String), Option<u64>> = BTreeMap::new();
    for s in STREAMS {
        let mut recs: Vec<&Rec> = out[&names.curated("sim", s)].iter().collect();
        recs.sort_by_key(|r| (r.partition, r.offset));
        for r in recs {
            let v = r
                .value
                .as_ref()
                .and(r.header(headers::VERSION))
                .and_then(|v| v.parse().ok());
            latest.insert((s.to_owned(), r.key_str().to_owned()), v);
        }
    }
    latest
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn reprocessing_revalidates_landed_pages_once_across_a_crash_without_api_calls() {
    let (sim, cfg, _dir, config_file, names, _) = land_drifted_sync("300", &STREAMS).await;

    // The simulator's truth: the live ids, their versions, and which drifted how.
    let truth = truth(&sim).await;
    let drifted = truth_drifted(&truth, &STREAMS);
    let versions: BTreeMap<(String, String), u64> = STREAMS
        .iter()
        .flat_map(|s| {
            truth_versions(&truth, s)
                .into_iter()
                .map(move |(id, v)| ((s.to_string(), id), v))
        })
        .collect();
    let live: BTreeSet<(String, String)> = versions.keys().cloned().collect();
    let dead = live_drifted(&drifted, &live);
    let enum_ids: BTreeSet<(String, String)> = dead
        .iter()
        .filter(|k| drifted[*k] == "unknown_enum")
        .cloned()
        .collect();
    assert_enum_drift_in_every_stream(&STREAMS, &enum_ids);
    assert!(
        dead.len() > enum_ids.len(),
        "the seed drifts other ways too: {dead:?}"
    );

    // Validate and dedup: the drifted records are dead letters, the rest curated.
    let mut outputs: Vec<String> = STREAMS
        .iter()
        .flat_map(|s| [names.valid("sim", s), names.curated("sim", s)])
        .collect();
    outputs.push(names.dlq());
    let clean: BTreeMap<(String, String), u64> = versions
        .iter()
        .filter(|(k, _)| !dead.contains(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let out = curate_until(&cfg, &outputs, "the first pass", |o| {
        curated_versions(o, &names) == clean && o[&names.dlq()].len() >= dead.len()
    })
    .await;
    let dead_letters = out[&names.dlq()].len();
    assert_eq!(
        dead_letters,
        dead.len(),
        "one dead letter per drifted record"
    );
    let landing_before = read_all(&names.landing(), "read_committed");
    let originals: BTreeMap<String, BTreeSet<String>> = STREAMS
        .iter()
        .map(|s| {
            let at = landing_before
                .iter()
                .filter(|r| {
                    r.header(headers::STREAM) == Some(*s) && r.header(headers::KIND) == Some("page")
                })
                .map(|r| format!("{}/{}/{}", names.landing(), r.partition, r.offset))
                .collect();
            (s.to_string(), at)
        })
        .collect();
    let pages_served = sim_stats(&sim).await["pages"].as_u64().unwrap();

    // The fix: schemas that accept the renamed enum values.
    for stream in STREAMS {
        let p = intake::dlq::propose::run(&cfg, stream, Some("unknown_enum"), true)
            .await
            .unwrap();
        assert!(
            p.applied
                .as_deref()
                .is_some_and(|a| a.starts_with("registered")),
            "{stream}: {p:?}"
        );
    }

    // Reprocess customers, one landing record per transaction, killed right after its second
    // committed transaction (a debug-only fault: the process aborts as a SIGKILL would end it).
    let (ok, crashed) = intake_cli_status(
        &["reprocess", "--stream", "sim/customers", "--batch", "1"],
        &config_file,
        &[("INTAKE_FAULTS", "reprocess_crash=2")],
    )
    .await;
    assert!(!ok, "the fault ends the first run: {crashed}");
    let id = "sim.customers@all";
    let p = progress(&names, id).expect("the run's progress is committed");
    assert_eq!(
        (p["copied"].as_u64(), p["done"].as_bool()),
        (Some(2), Some(false)),
        "two batches of one committed before the crash: {p}"
    );
    // Started again: it resumes after those two and finishes.
    let (ok, resumed) = intake_cli_status(
        &["reprocess", "--stream", "sim/customers", "--json"],
        &config_file,
        &[],
    )
    .await;
    assert!(ok, "{resumed}");
    let report: Json = serde_json::from_str(resumed.trim_start().split("\n\n").next().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {resumed}"));
    let n_pages = originals["customers"].len() as u64;
    assert_eq!(report["resumed"], Json::Bool(true), "{report}");
    assert_eq!(report["copied"].as_u64(), Some(n_pages - 2), "{report}");
    assert_eq!(report["copied_total"].as_u64(), Some(n_pages), "{report}");
    // A third run of the same id is a no-op.
    let (ok, again) = intake_cli_status(
        &["reprocess", "--stream", "sim/customers"],
        &config_file,
        &[],
    )
    .await;
    assert!(ok && again.contains("nothing to do"), "{again}");
    // And orders, in one go.
    let (ok, orders) =
        intake_cli_status(&["reprocess", "--stream", "orders"], &config_file, &[]).await;
    assert!(ok, "{orders}");

    // The landing topic holds each original page copied exactly once, and nothing else new.
    let landing = read_all(&names.landing(), "read_committed");
    let copies: Vec<&Rec> = landing
        .iter()
        .filter(|r| r.header(headers::REPROCESS_ID).is_some())
        .collect();
    for s in STREAMS {
        let of: Vec<String> = copies
            .iter()
            .filter(|r| r.header(headers::STREAM) == Some(s))
            .map(|r| r.header(headers::REPROCESS_OF).unwrap().to_owned())
            .collect();
        let distinct: BTreeSet<String> = of.iter().cloned().collect();
        assert_eq!(of.len(), distinct.len(), "{s}: a page copied twice");
        assert_eq!(distinct, originals[s], "{s}: every page copied once");
    }
    assert_eq!(
        landing.len(),
        landing_before.len() + copies.len(),
        "nothing but the copies was added"
    );
    for r in &copies {
        assert!(
            r.header(headers::SYNC_ID).is_none() && r.header(headers::CURSOR).is_none(),
            "a copy is part of no sync"
        );
    }
    assert_eq!(
        sim_stats(&sim).await["pages"].as_u64(),
        Some(pages_served),
        "no request to the API"
    );

    // Validate and dedup again: the renamed-enum records now pass and are curated at the
    // truth's versions; every other record is in its valid topic twice (the original and the
    // copy); the other drifted records fail again and are counted on their dead letters.
    let fixed: BTreeMap<(String, String), u64> = versions
        .iter()
        .filter(|(k, _)| !dead.contains(*k) || enum_ids.contains(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let expected_valid: BTreeMap<(String, String), usize> = live
        .iter()
        .filter(|k| !dead.contains(*k) || enum_ids.contains(*k))
        .map(|k| (k.clone(), if enum_ids.contains(k) { 1 } else { 2 }))
        .collect();
    let counted_twice = |o: &BTreeMap<String, Vec<Rec>>| {
        let mut occurrences: BTreeMap<String, u64> = BTreeMap::new();
        for r in &o[&names.dlq_index()] {
            let v: Json = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            occurrences.insert(r.key_str().to_owned(), v["occurrences"].as_u64().unwrap());
        }
        occurrences.values().filter(|n| **n == 2).count()
    };
    // Every count below only grows while validate and dedup work through the copies, so the
    // run waits for all of them to hold at once (a record twice too often never does).
    outputs.push(names.dlq_index());
    let out2 = curate_until(
        &cfg,
        &outputs,
        "the reprocessed pages: the fixed records curated, every other valid record twice, the other drifted ones counted twice",
        |o| {
            curated_versions(o, &names) == fixed
                && valid_ids(o, &names, &STREAMS) == expected_valid
                && counted_twice(o) == dead.len() - enum_ids.len()
        },
    )
    .await;
    assert_eq!(
        valid_ids(&out2, &names, &STREAMS),
        expected_valid,
        "valid: the originals' and the copies'"
    );
    assert_eq!(curated_versions(&out2, &names), fixed);
    assert_eq!(
        out2[&names.dlq()].len(),
        dead_letters,
        "the failures again are counted, not written again"
    );
    assert_eq!(
        counted_twice(&out2),
        dead.len() - enum_ids.len(),
        "each other drifted record failed once more"
    );
}
