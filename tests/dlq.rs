//! Issue 5: DLQ triage on the real stack — summary, show, replay after a schema fix (exactly
//! once, a second replay adds nothing), and schema proposals the registry accepts.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use intake::config::Config;
use intake::dlq::{Filter, propose, replay, show, summary};
use intake::headers;
use intake::topics::TopicNames;
use serde_json::Value as Json;
use support::*;

const STREAMS: [&str; 3] = ["customers", "orders", "events"];
/// Partitions of every valid topic (topics/topics.toml): sync markers go to each.
const PARTITIONS: usize = 4;

/// `(stream, id)` of every dead letter (the record's own id), with how often each is there.
fn dlq_ids(
    out: &BTreeMap<String, Vec<Rec>>,
    names: &TopicNames,
) -> BTreeMap<(String, String), usize> {
    let mut ids = BTreeMap::new();
    for r in &out[&names.dlq()] {
        let v: Json = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let key = (
            r.header(headers::STREAM).unwrap().to_owned(),
            v["id"].as_str().unwrap().to_owned(),
        );
        *ids.entry(key).or_default() += 1;
    }
    ids
}

/// Runs the `intake` binary; returns its stdout (fails the test on a non-zero exit).
async fn intake_cli(args: &[&str], config: &Path) -> String {
    let (ok, out) = intake_cli_status(args, config, &[]).await;
    assert!(ok, "intake {args:?} failed: {out}");
    out
}

/// Runs `intake schema propose ARGS --apply` (failing the test on a non-zero exit), shows the
/// command and what it printed, and returns its stdout.
async fn propose_and_apply(args: &[&str], config: &Path) -> String {
    let argv = [&["schema", "propose"][..], args, &["--apply"]].concat();
    let out = intake_cli(&argv, config).await;
    println!("$ intake schema propose {} --apply\n{out}", args.join(" "));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_summarised_replayed_once_after_a_fix_and_proposals_are_compatible() {
    let (sim, cfg, _dir, config_file, names, reg) = land_drifted_sync("400", &STREAMS).await;

    // The simulator's truth: which ids drifted, how.
    let truth = truth(&sim).await;
    let drifted = truth_drifted(&truth, &STREAMS);
    let live = truth_ids(&truth, &STREAMS, "live");
    let of_kind = |kind: &str| -> BTreeSet<(String, String)> {
        drifted
            .iter()
            .filter(|(k, v)| v.as_str() == kind && live.contains(*k))
            .map(|(k, _)| k.clone())
            .collect()
    };
    let enum_ids = of_kind("unknown_enum");
    let field_ids = of_kind("unknown_field");
    let dead = live_drifted(&drifted, &live);
    assert_enum_drift_in_every_stream(&STREAMS, &enum_ids);
    assert!(
        field_ids.iter().any(|(s, _)| s == "customers"),
        "the seed adds a field to a customer"
    );

    // Validate: the drifted records go to the DLQ.
    let mut outputs: Vec<String> = STREAMS.iter().map(|s| names.valid("sim", s)).collect();
    outputs.push(names.dlq());
    let markers = 2 * STREAMS.len() * PARTITIONS;
    let expected_total = live.len() + markers;
    let out = validate_until(&cfg, &outputs, "every landed record", |o| {
        o.values().map(Vec::len).sum::<usize>() >= expected_total
    })
    .await;
    let in_dlq = dlq_ids(&out, &names);
    assert_eq!(
        in_dlq.keys().cloned().collect::<BTreeSet<_>>(),
        dead,
        "the DLQ holds the drifted records"
    );
    assert!(in_dlq.values().all(|n| *n == 1));

    // Summary: counts by stream, kind and field equal the drifted ids per kind.
    let s = summary::gather(&cfg, &Filter::default()).await.unwrap();
    let mut expected_groups: BTreeMap<(String, String, Option<String>), u64> = BTreeMap::new();
    for ((stream, _), kind) in drifted.iter().filter(|(k, _)| live.contains(*k)) {
        *expected_groups
            .entry((
                format!("sim/{stream}"),
                kind.clone(),
                Some(drift_field(stream, kind).to_owned()),
            ))
            .or_default() += 1;
    }
    let got_groups: BTreeMap<(String, String, Option<String>), u64> = s
        .groups
        .iter()
        .map(|g| ((g.stream.clone(), g.kind.clone(), g.field.clone()), g.count))
        .collect();
    assert_eq!(got_groups, expected_groups, "summary groups");
    assert_eq!(s.total, dead.len() as u64);
    assert_eq!(s.replayed, 0);
    assert_eq!(
        s.by_kind["unknown_enum"],
        enum_ids.len() as u64,
        "by kind: {:?}",
        s.by_kind
    );
    for g in &s.groups {
        assert!(g.first_seen <= g.last_seen && g.first_seen != "-", "{g:?}");
        let field = g.field.as_deref().unwrap();
        assert!(
            g.sample
                .detail
                .as_deref()
                .unwrap()
                .contains(&format!("`{field}`")),
            "the sample's detail names the field: {g:?}"
        );
        assert!(g.sample.value.starts_with('{'), "{g:?}");
    }
    let customers = summary::gather(
        &cfg,
        &Filter {
            stream: Some("customers".into()),
            ..Filter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        customers.total,
        dead.iter().filter(|(s, _)| s == "customers").count() as u64
    );
    assert_eq!(
        customers.by_stream.keys().collect::<Vec<_>>(),
        ["sim/customers"]
    );

    // Show: the unknown_enum dead letters, each with its headers and raw record.
    let enum_filter = Filter {
        kind: Some("unknown_enum".into()),
        ..Filter::default()
    };
    let shown = show::gather(&cfg, &enum_filter, 0).await.unwrap();
    let shown_ids: BTreeSet<(String, String)> = shown
        .iter()
        .map(|d| {
            let v: Json = serde_json::from_str(d.value.as_deref().unwrap()).unwrap();
            (
                d.stream.trim_start_matches("sim/").to_owned(),
                v["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(shown_ids, enum_ids);
    assert!(shown.iter().all(|d| d.kind == "unknown_enum"
        && d.replayed_by.is_none()
        && d.origin.as_deref().is_some_and(|o| o.contains('#'))
        && d.headers.iter().any(|(k, _)| k == headers::SYNC_ID)));
    assert_eq!(show::gather(&cfg, &enum_filter, 2).await.unwrap().len(), 2);

    // The fix: a schema per stream that accepts the renamed enum values, proposed from the
    // dead letters and registered after the registry's compatibility check.
    for stream in STREAMS {
        let p = propose::run(&cfg, stream, Some("unknown_enum"), true)
            .await
            .unwrap();
        let n = enum_ids.iter().filter(|(s, _)| s == stream).count() as u64;
        assert_eq!(p.sample_count(), n, "{stream}: {p:?}");
        assert!(p.blockers.is_empty(), "{stream}: {:?}", p.blockers);
        assert_eq!(p.compatible, Some(true), "{stream}");
        assert!(
            p.changes
                .iter()
                .all(|c| c.contains(drift_field(stream, "unknown_enum"))),
            "{stream}: {:?}",
            p.changes
        );
        assert!(
            p.diff.iter().any(|l| l.starts_with("+ ")),
            "{stream}: a diff"
        );
        assert!(
            p.applied
                .as_deref()
                .is_some_and(|a| a.starts_with("registered")),
            "{stream}: {:?}",
            p.applied
        );
        assert_eq!(
            reg.latest(&names.subject("sim", stream))
                .await
                .unwrap()
                .version,
            2
        );
    }

    // Replay the unknown_enum dead letters: every one re-landed, in one transaction.
    let r1 = replay_filtered(&cfg, enum_filter.clone()).await.unwrap();
    let n_enum = enum_ids.len() as u64;
    assert_eq!(
        (
            r1.matched,
            r1.already_replayed,
            r1.chosen,
            r1.landed,
            r1.claim_checked
        ),
        (n_enum, 0, n_enum, n_enum, 0),
        "{r1:?}"
    );
    assert!(r1.skipped.is_empty() && r1.already_done.is_none(), "{r1:?}");
    let id1 = r1.replay_id.clone().unwrap();
    // A second replay, same filter or another id: nothing left to choose.
    let r2 = replay_filtered(&cfg, enum_filter.clone()).await.unwrap();
    assert_eq!(
        (r2.matched, r2.already_replayed, r2.chosen, r2.landed),
        (n_enum, n_enum, 0, 0),
        "{r2:?}"
    );
    let r3 = replay::run(
        &cfg,
        replay::Options {
            filter: Filter::default(),
            replay_id: Some(id1.clone()),
            progress: false,
        },
    )
    .await
    .unwrap();
    assert!(r3.already_done.is_some() && r3.landed == 0, "{r3:?}");

    // The landing topic holds each re-landed record once, with its provenance.
    let landing = read_all(&names.landing(), "read_committed");
    let relanded: Vec<&Rec> = landing
        .iter()
        .filter(|r| r.header(headers::REPLAY_ID).is_some())
        .collect();
    assert_eq!(relanded.len() as u64, n_enum);
    let dlq_positions: BTreeSet<String> = out[&names.dlq()]
        .iter()
        .filter(|r| r.header(headers::DLQ_KIND) == Some("unknown_enum"))
        .map(|r| format!("{}/{}/{}", names.dlq(), r.partition, r.offset))
        .collect();
    let replay_of: BTreeSet<String> = relanded
        .iter()
        .map(|r| r.header(headers::REPLAY_OF).unwrap().to_owned())
        .collect();
    assert_eq!(replay_of, dlq_positions, "each dead letter re-landed once");
    for r in &relanded {
        assert_eq!(r.header(headers::REPLAY_ID), Some(id1.as_str()));
        assert_eq!(r.header(headers::KIND), Some("page"));
        assert_eq!(r.header(headers::SOURCE), Some("sim"));
        assert!(r.header(headers::SEQ).is_none() && r.header(headers::DLQ_KIND).is_none());
        assert_eq!(
            r.key_str(),
            format!("sim/{}", r.header(headers::STREAM).unwrap())
        );
        let page: Json = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(page["data"].as_array().unwrap().len(), 1);
    }

    // Validate again: exactly the renamed-enum records reach the valid topics, once each, and
    // nothing new is dead-lettered.
    let before = valid_ids(&out, &names, &STREAMS);
    let expected_valid: BTreeMap<(String, String), usize> = live
        .iter()
        .filter(|k| !dead.contains(*k) || enum_ids.contains(*k))
        .map(|k| (k.clone(), 1))
        .collect();
    let out2 = validate_until(&cfg, &outputs, "the replayed records", |o| {
        valid_ids(o, &names, &STREAMS).len() >= expected_valid.len()
    })
    .await;
    let after = valid_ids(&out2, &names, &STREAMS);
    assert_eq!(
        after, expected_valid,
        "valid = non-drifted + replayed, once each"
    );
    let added: BTreeSet<(String, String)> = after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .cloned()
        .collect();
    assert_eq!(
        added, enum_ids,
        "the replay moved exactly the unknown_enum records"
    );
    assert_eq!(
        out2[&names.dlq()].len(),
        out[&names.dlq()].len(),
        "no new dead letters"
    );

    // The summary knows what was replayed.
    let s = summary::gather(&cfg, &enum_filter).await.unwrap();
    assert_eq!((s.total, s.replayed), (n_enum, n_enum));
    let shown = show::gather(&cfg, &enum_filter, 0).await.unwrap();
    assert!(
        shown
            .iter()
            .all(|d| d.replayed_by.as_deref() == Some(id1.as_str()))
    );

    // The CLI: a proposal for the new-field drift that the registry accepts as BACKWARD
    // compatible, then applied.
    let customers_subject = names.subject("sim", "customers");
    let n_field = field_ids.iter().filter(|(s, _)| s == "customers").count() as u64;
    let doc: Json = serde_json::from_str(
        &intake_cli(
            &[
                "schema",
                "propose",
                "--stream",
                "sim/customers",
                "--kind",
                "unknown_field",
                "--json",
            ],
            &config_file,
        )
        .await,
    )
    .unwrap();
    assert_eq!(doc["compatible"], Json::Bool(true), "{doc}");
    assert_eq!(doc["samples"]["unknown_field"], n_field, "{doc}");
    assert_eq!(doc["applied"], Json::Null);
    let candidate = doc["candidate"].as_str().unwrap();
    let parsed: Json = serde_json::from_str(candidate).unwrap();
    let tier = parsed["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "loyalty_tier")
        .expect("the candidate adds the new field");
    assert_eq!(tier["default"], Json::Null, "a new field is optional");
    let level: Json = reqwest::get(format!("{}/config/{customers_subject}", registry_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(level["compatibilityLevel"], "BACKWARD", "{level}");
    assert!(
        reg.is_compatible(&customers_subject, candidate)
            .await
            .unwrap()
    );
    let applied = propose_and_apply(
        &["--stream", "customers", "--kind", "unknown_field"],
        &config_file,
    )
    .await;
    assert!(applied.contains("applied: registered"), "{applied}");
    let latest = reg.latest(&customers_subject).await.unwrap();
    assert_eq!(latest.version, 3);
    assert!(latest.text.contains("loyalty_tier"));

    // The CLI replays the new-field dead letters of customers; the second run adds nothing.
    let replay_args = [
        "dlq",
        "replay",
        "--stream",
        "customers",
        "--kind",
        "unknown_field",
    ];
    let first = intake_cli(&replay_args, &config_file).await;
    assert!(first.contains(&format!("{n_field} re-landed")), "{first}");
    println!("$ intake dlq replay --stream customers --kind unknown_field\n{first}");
    let second = intake_cli(&replay_args, &config_file).await;
    println!("$ (again)\n{second}");
    assert!(second.contains("nothing to replay"), "{second}");
    assert!(
        second.contains(&format!("{n_field} replayed before, 0 chosen")),
        "{second}"
    );
    let summary_text = intake_cli(&["dlq", "summary"], &config_file).await;
    println!("$ intake dlq summary\n{summary_text}");
    let show_text = intake_cli(
        &["dlq", "show", "--kind", "unknown_field", "--limit", "1"],
        &config_file,
    )
    .await;
    println!("$ intake dlq show --kind unknown_field --limit 1\n{show_text}");
    assert!(
        show_text.starts_with("1 dead letter(s) (kind=unknown_field)"),
        "{show_text}"
    );
    assert!(
        summary_text.contains(&format!(
            "{} dead letter(s) (everything), {} of them replayed",
            dead.len(),
            n_enum + n_field
        )),
        "{summary_text}"
    );
    let landing = read_all(&names.landing(), "read_committed");
    assert_eq!(
        landing
            .iter()
            .filter(|r| r.header(headers::REPLAY_ID).is_some())
            .count() as u64,
        n_enum + n_field,
        "the second CLI replay re-landed nothing"
    );
}

fn customer(id: &str) -> Json {
    serde_json::json!({"id": id, "name": "Ada", "email": "ada@example.com", "status": "active", "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-02T00:00:00Z", "version": 1})
}

fn with(mut v: Json, k: &str, x: Json) -> Json {
    v[k] = x;
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_keep_events_whole_claim_check_large_pages_and_skip_references() {
    // Records over 1 MB are not stored by claim-check here (`blob.max_record_bytes`), so the
    // large ones are dead letters (too_large) to replay.
    let text = config_text(&unfetched_source(&[("customers", "")])).replacen(
        "[blob]\n",
        "[blob]\nmax_record_bytes = 1000000\n",
        1,
    );
    let cfg = Arc::new(intake::config::Config::from_toml(&text).unwrap());
    let names = TopicNames::from_config(&cfg);
    apply_topics_and_schemas(&cfg).await;
    let blobs = intake::blob::BlobStore::open(&cfg.blob).unwrap();
    let page_headers = |kind: &str| {
        headers::Headers::new()
            .with(headers::SOURCE, "sim")
            .with(headers::STREAM, "customers")
            .with(headers::KIND, kind)
            .with(headers::SYNC_ID, "sync-1")
            .with(headers::SEQ, "0")
            .with(headers::FETCHED_AT, "2024-05-01T00:00:00Z")
    };
    // A claim-checked page: c-1 valid; c-2 1.2 MB (too large to store, not for the DLQ); c-4
    // 9 MB (too large for the DLQ too: it keeps the page's reference).
    let big = with(
        customer("c-2"),
        "notes",
        Json::String("x".repeat(1_200_000)),
    );
    let huge = with(
        customer("c-4"),
        "notes",
        Json::String("y".repeat(9_000_000)),
    );
    let page =
        serde_json::to_vec(&serde_json::json!({"data": [customer("c-1"), big, huge]})).unwrap();
    let blob = blobs.put(page.into()).await.unwrap();
    // A webhook event whose record has a renamed enum value.
    let event = serde_json::to_vec(&serde_json::json!({"event_id": "e-3", "type": "updated", "stream": "customers", "entity_id": "c-3", "seq": 4, "data": with(customer("c-3"), "status", serde_json::json!("enabled"))})).unwrap();
    let malformed = br#"{"data":[{"id":"#.to_vec();
    land(
        &cfg,
        vec![
            (
                "sim/customers".into(),
                serde_json::to_vec(&blob).unwrap(),
                page_headers("blob-ref").with(headers::BLOB, blob.header_value()),
            ),
            (
                "c-3".into(),
                event.clone(),
                headers::Headers::new()
                    .with(headers::SOURCE, "sim")
                    .with(headers::STREAM, "customers")
                    .with(headers::KIND, "event")
                    .with(headers::EVENT_ID, "e-3")
                    .with(headers::SEQ, "4"),
            ),
            (
                "sim/customers".into(),
                malformed.clone(),
                page_headers("page"),
            ),
        ],
    )
    .await;
    let valid = names.valid("sim", "customers");
    let outputs = vec![valid.clone(), names.dlq()];
    let out = validate_until(&cfg, &outputs, "1 valid, 4 dead letters", |o| {
        !o[&valid].is_empty() && o[&names.dlq()].len() >= 4
    })
    .await;
    assert_eq!((out[&valid].len(), out[&names.dlq()].len()), (1, 4));

    // The event's record teaches the proposal (its `data`), which fixes the enum.
    let p = propose::run(&cfg, "customers", None, true).await.unwrap();
    assert_eq!(
        p.samples,
        BTreeMap::from([("unknown_enum".to_owned(), 1)]),
        "only the event's record is a schema-drift sample: {p:?}"
    );
    assert!(p.applied.is_some(), "{p:?}");

    // A dead letter of dedup (a valid-topic record that broke its contract) is not validate's
    // to replay.
    let dlq_topic = names.dlq();
    let from_dedup = headers::Headers::new()
        .with(headers::SOURCE, "sim")
        .with(headers::STREAM, "customers")
        .with(headers::DLQ_KIND, "contract_violation")
        .with(headers::DLQ_ORIGIN, format!("{valid}/0/0"))
        .with(headers::DLQ_STAGE, "dedup");
    let producer = kafka(&cfg).txn_producer(&unique("test-dlq-")).unwrap();
    producer
        .blocking(move |p| {
            p.init()?;
            p.begin()?;
            p.send(intake::kafka::Outgoing {
                topic: &dlq_topic,
                key: Some(b"c-9"),
                payload: Some(b"\x00\x00\x00\x00\x01avro"),
                headers: from_dedup.build(),
                partition: None,
            })?;
            p.commit()
        })
        .await
        .unwrap();

    // Replay everything: the event whole, the malformed page whole, c-2 claim-checked; c-4
    // skipped (the DLQ holds only its page's reference), and dedup's dead letter skipped.
    let r = replay::run(&cfg, replay::Options::default()).await.unwrap();
    assert_eq!(
        (
            r.matched,
            r.chosen,
            r.landed,
            r.claim_checked,
            r.skipped.len()
        ),
        (5, 5, 3, 1, 2),
        "{r:?}"
    );
    let skipped: BTreeMap<&str, &str> = r
        .skipped
        .iter()
        .map(|s| (s.kind.as_str(), s.reason.as_str()))
        .collect();
    assert!(skipped["too_large"].contains("reference"), "{skipped:?}");
    assert!(
        skipped["contract_violation"].contains("only what validate rejected"),
        "{skipped:?}"
    );
    let id = r.replay_id.clone().unwrap();
    let relanded: Vec<Rec> = read_all(&names.landing(), "read_committed")
        .into_iter()
        .filter(|r| r.header(headers::REPLAY_ID) == Some(id.as_str()))
        .collect();
    let kinds: BTreeSet<&str> = relanded
        .iter()
        .filter_map(|r| r.header(headers::KIND))
        .collect();
    assert_eq!(kinds, BTreeSet::from(["blob-ref", "event", "page"]));
    for r in &relanded {
        match r.header(headers::KIND).unwrap() {
            "event" => {
                assert_eq!(
                    r.value.as_deref(),
                    Some(&event[..]),
                    "an event is re-landed whole"
                );
                assert_eq!(r.key_str(), "c-3");
                assert_eq!(
                    r.header(headers::SEQ),
                    Some("4"),
                    "an event keeps its sequence"
                );
            }
            "page" => assert_eq!(r.value.as_deref(), Some(&malformed[..])),
            _ => {
                let b =
                    intake::blob::BlobRef::parse_header(r.header(headers::BLOB).unwrap()).unwrap();
                let body: Json = serde_json::from_slice(&blobs.get(&b).await.unwrap()).unwrap();
                assert_eq!(body["data"][0]["id"], "c-2");
                assert!(
                    r.header(headers::SEQ).is_none()
                        && r.header(headers::SYNC_ID) == Some("sync-1")
                );
            }
        }
    }

    // Validate again: c-3 becomes valid; c-2 and the malformed page are dead letters again,
    // new ones that carry the replay's provenance.
    let out = validate_until(&cfg, &outputs, "2 valid, 7 dead letters", |o| {
        o[&valid].len() >= 2 && o[&names.dlq()].len() >= 7
    })
    .await;
    assert_eq!((out[&valid].len(), out[&names.dlq()].len()), (2, 7));
    assert_eq!(
        out[&valid]
            .iter()
            .map(Rec::key_str)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["c-1", "c-3"])
    );
    let again: Vec<&Rec> = out[&names.dlq()]
        .iter()
        .filter(|r| r.header(headers::REPLAY_ID) == Some(id.as_str()))
        .collect();
    assert_eq!(
        again
            .iter()
            .map(|r| r.header(headers::DLQ_KIND).unwrap())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["malformed_json", "too_large"])
    );
    let s = summary::gather(&cfg, &Filter::default()).await.unwrap();
    assert_eq!((s.total, s.replayed), (7, 3));
    // The same replay id again is a no-op; the renamed enum has nothing left to replay.
    let r = replay::run(
        &cfg,
        replay::Options {
            replay_id: Some(id.clone()),
            ..replay::Options::default()
        },
    )
    .await
    .unwrap();
    assert!(r.already_done.is_some() && r.landed == 0, "{r:?}");
    let r = replay_kind(&cfg, "unknown_enum").await.unwrap();
    assert_eq!(
        (r.matched, r.already_replayed, r.chosen, r.landed),
        (1, 1, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_replays_re_land_each_dead_letter_once() {
    let cfg = Arc::new(config(&unfetched_source(&[("customers", "")])));
    let names = TopicNames::from_config(&cfg);
    apply_topics_and_schemas(&cfg).await;
    let n = 20;
    let records: Vec<Json> = (0..n)
        .map(|i| {
            with(
                customer(&format!("c-{i}")),
                "status",
                serde_json::json!("enabled"),
            )
        })
        .collect();
    land(
        &cfg,
        vec![(
            "sim/customers".into(),
            serde_json::to_vec(&serde_json::json!({ "data": records })).unwrap(),
            headers::Headers::new()
                .with(headers::SOURCE, "sim")
                .with(headers::STREAM, "customers")
                .with(headers::KIND, "page"),
        )],
    )
    .await;
    let outputs = vec![names.dlq()];
    validate_until(&cfg, &outputs, "20 dead letters", |o| {
        o[&names.dlq()].len() >= n
    })
    .await;

    // Three replays at once, same filter: each fences the ones before it, so whichever
    // commits, every dead letter is re-landed exactly once.
    let run = || {
        let cfg = cfg.clone();
        async move { replay_kind(&cfg, "unknown_enum").await }
    };
    let (a, b, c) = tokio::join!(run(), run(), run());
    let results = [a, b, c];
    let landed: u64 = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.landed)
        .sum();
    let failed = results.iter().filter(|r| r.is_err()).count();
    println!(
        "3 concurrent replays: {failed} fenced, {landed} re-landed: {:?}",
        results
            .iter()
            .map(|r| r.as_ref().map(|r| r.landed).map_err(|e| format!("{e:#}")))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        landed, n as u64,
        "the committed replays re-landed each once"
    );
    let relanded = read_all(&names.landing(), "read_committed");
    let of: Vec<&str> = relanded
        .iter()
        .filter_map(|r| r.header(headers::REPLAY_OF))
        .collect();
    assert_eq!(of.len(), n);
    assert_eq!(
        of.iter().collect::<BTreeSet<_>>().len(),
        n,
        "no dead letter twice"
    );
    let again = run().await.unwrap();
    assert_eq!((again.already_replayed, again.chosen), (n as u64, 0));
}

/// One record of a stream with 40 fields of every kind `schema propose` infers.
fn wide(i: usize) -> Json {
    let mut v = serde_json::json!({
        "id": format!("w-{i:03}"),
        "updated_at": format!("2024-05-{:02}T10:{:02}:00Z", 1 + i % 28, i % 60),
    });
    for f in 0..38 {
        let name = format!("f{f:02}");
        v[&name] = match f % 8 {
            0 => serde_json::json!(i as i64 * 7 + f),
            1 => serde_json::json!(i as f64 / 4.0 + 0.5),
            2 => serde_json::json!(i.is_multiple_of(2)),
            3 => serde_json::json!(format!("text {i} {f}")),
            4 => serde_json::json!(format!("2023-{:02}-{:02}", 1 + i % 12, 1 + i % 28)),
            5 => serde_json::json!({"city": "Oslo", "zip": format!("{:04}", i)}),
            6 => serde_json::json!([i, f]),
            // Sometimes null, sometimes absent, sometimes a string: optional.
            _ => match i % 3 {
                0 => Json::Null,
                1 => continue,
                _ => serde_json::json!("maybe"),
            },
        };
    }
    v
}

/// The data records (not sync markers) of `recs`.
fn data_records(recs: &[Rec]) -> impl Iterator<Item = &Rec> {
    recs.iter().filter(|r| r.header(headers::KIND).is_none())
}

/// Runs validate until the valid topic of `<source>/items` holds `n` data records; returns that
/// topic's name and the committed outputs (it and the DLQ).
async fn validate_items(
    cfg: &Arc<Config>,
    names: &TopicNames,
    source: &str,
    n: usize,
) -> (String, BTreeMap<String, Vec<Rec>>) {
    let valid = names.valid(source, "items");
    let outputs = vec![valid.clone(), names.dlq()];
    let out = validate_until(cfg, &outputs, "every record", |o| {
        data_records(&o[&valid]).count() >= n
    })
    .await;
    (valid, out)
}

/// A config with one stream `<source>/items` (records under `/results`, keyed by `/id`,
/// versioned by `/updated_at`, plus `extra` lines) whose schema directory is a fresh one of the
/// test's own, so the stream starts without a schema file.
fn schemaless_stream(source: &str, extra: &str) -> (tempfile::TempDir, String) {
    let schemas = tempfile::tempdir().unwrap();
    let stream = versioned_stream(
        "items",
        "/updated_at",
        &format!("records = \"/results\"\n{extra}"),
    );
    let text = config_text(&(source_head(source, UNFETCHED_BASE_URL) + &stream));
    let repo_schemas = format!("{}/topics/schemas", root().display());
    assert!(text.contains(&repo_schemas));
    let text = text.replace(&repo_schemas, &schemas.path().display().to_string());
    (schemas, text)
}

/// A landed page of `<source>/items` holding [`wide`] records `range` (each with an `extra`
/// member when asked), under landing key `key`.
fn wide_page(
    source: &str,
    key: &str,
    range: std::ops::Range<usize>,
    extra: bool,
) -> (String, Vec<u8>, headers::Headers) {
    let records: Vec<Json> = range
        .map(|i| {
            let mut r = wide(i);
            if extra {
                r["extra"] = Json::from(i as i64);
            }
            r
        })
        .collect();
    let h = headers::Headers::new()
        .with(headers::SOURCE, source)
        .with(headers::STREAM, "items")
        .with(headers::KIND, "page")
        .with(headers::SYNC_ID, "sync-1")
        .with(headers::FETCHED_AT, "2024-05-01T00:00:00Z");
    (
        key.to_owned(),
        serde_json::to_vec(&serde_json::json!({ "results": records })).unwrap(),
        h,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_schema_from_landed_data_is_registered_written_and_validates_every_record() {
    // The stream has no schema file: schemas live in a directory of this test's own.
    let (schemas, text) = schemaless_stream("wide", "");
    let (cfg, _dir, config_file) = config_with_file(&text);
    let names = TopicNames::from_config(&cfg);
    apply_topics(&cfg).await;
    let subject = names.subject("wide", "items");
    assert!(subject_versions(&subject).await.is_empty());

    // Without landed data there is nothing to learn from: a clear refusal.
    let (ok, out) = intake_cli_status(
        &[
            "schema",
            "propose",
            "--from-landing",
            "--stream",
            "wide/items",
        ],
        &config_file,
        &[],
    )
    .await;
    assert!(!ok && out.contains("no landed record"), "{out}");

    // 300 records in 10 pages, as fetch lands them.
    const N: usize = 300;
    let pages = (0..10)
        .map(|p| wide_page("wide", &format!("page-{p}"), p * 30..(p + 1) * 30, false))
        .collect();
    land(&cfg, pages).await;

    let out = propose_and_apply(&["--from-landing", "--stream", "wide/items"], &config_file).await;
    assert!(out.contains("nothing registered yet"), "{out}");
    assert!(
        out.contains(&format!("learned from {N} sample(s)")),
        "{out}"
    );

    // The registry holds it (asked over its HTTP API), under validate's subject and the
    // curated topic's: 40 fields, key and version required.
    let versions = subject_versions(&subject).await;
    assert_eq!(versions.len(), 1, "{versions:?}");
    let schema: Json = serde_json::from_str(&versions[0].2).unwrap();
    let fields = schema["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 40, "{schema}");
    let type_of = |n: &str| {
        fields
            .iter()
            .find(|f| f["name"] == n)
            .map(|f| f["type"].clone())
            .unwrap_or_else(|| panic!("no field {n}: {schema}"))
    };
    assert_eq!(type_of("id"), serde_json::json!("string"));
    assert!(!type_of("updated_at").is_array(), "the version is required");
    assert!(type_of("f00").is_array(), "other fields are optional");
    let curated = subject_versions(&format!("{}-value", names.curated("wide", "items"))).await;
    assert_eq!(curated.len(), 1, "{curated:?}");
    assert_eq!(curated[0].1, versions[0].1, "the same schema id");
    // ... and the schema directory keeps it for `intake schema apply`.
    let file = schemas.path().join("wide").join("items.avsc");
    let kept: Json = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(kept["fields"].as_array().unwrap().len(), 40);

    // With it, every landed record validates: N distinct keys in the valid topic, none in the
    // DLQ.
    let (valid, out) = validate_items(&cfg, &names, "wide", N).await;
    let records: Vec<&Rec> = data_records(&out[&valid]).collect();
    let keys: BTreeSet<String> = records.iter().map(|r| r.key_str().to_owned()).collect();
    let want: BTreeSet<String> = (0..N).map(|i| format!("w-{i:03}")).collect();
    assert_eq!((records.len(), keys), (N, want), "each record once");
    let dead: Vec<_> = out[&names.dlq()]
        .iter()
        .filter(|r| r.header(headers::STREAM) == Some("items"))
        .collect();
    assert!(dead.is_empty(), "{} dead letters", dead.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_with_drift_evolve_starts_without_a_schema() {
    let (_schemas, text) = schemaless_stream("fresh", r#"drift = "evolve""#);
    let cfg = Arc::new(Config::from_toml(&text).unwrap());
    let names = TopicNames::from_config(&cfg);
    apply_topics(&cfg).await;
    let subject = names.subject("fresh", "items");
    assert!(subject_versions(&subject).await.is_empty());

    // Two pages under one key (one partition, so validate reads them in order): the second
    // page's records carry a member the first page never had.
    land(
        &cfg,
        vec![
            wide_page("fresh", "pages", 0..30, false),
            wide_page("fresh", "pages", 30..60, true),
        ],
    )
    .await;

    let (valid, out) = validate_items(&cfg, &names, "fresh", 60).await;
    let keys: BTreeSet<String> = data_records(&out[&valid])
        .map(|r| r.key_str().to_owned())
        .collect();
    assert_eq!(keys.len(), 60);
    assert!(
        !out[&names.dlq()]
            .iter()
            .any(|r| r.header(headers::STREAM) == Some("items")),
        "nothing dead-lettered"
    );
    // The registry (over its HTTP API): a first version inferred from the first record, then
    // one that adds the new member as optional; the curated topic's subject has the same ids.
    let versions = subject_versions(&subject).await;
    assert_eq!(versions.len(), 2, "{versions:?}");
    let fields = |text: &str| -> Vec<Json> {
        serde_json::from_str::<Json>(text).unwrap()["fields"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert_eq!(fields(&versions[0].2).len(), 40);
    let v2 = fields(&versions[1].2);
    let extra = v2
        .iter()
        .find(|f| f["name"] == "extra")
        .expect("extra added");
    assert_eq!(extra["type"], serde_json::json!(["null", "long"]));
    let curated = subject_versions(&format!("{}-value", names.curated("fresh", "items"))).await;
    assert_eq!(
        curated.iter().map(|v| v.1).collect::<Vec<_>>(),
        versions.iter().map(|v| v.1).collect::<Vec<_>>()
    );
}

/// Issue 19, the quiet DLQ: ten full syncs of a stream with drifted records land each drifted
/// record ten times, unchanged; the DLQ holds one dead letter per record (key, content,
/// failure), its `intake.dlq-index` entry counts ten occurrences, `dlq summary` says so, and a
/// replay re-lands each dead letter once.
#[tokio::test(flavor = "multi_thread")]
async fn ten_full_syncs_make_one_dead_letter_per_drifted_record_counted_ten_times() {
    const SYNCS: u64 = 10;
    let sim = sim(&["--records", "200", "--seed", "11", "--drift-rate", "0.05"]).await;
    let text = config_text(&cursor_sim_source(&sim, &["customers"]));
    let cfg = Arc::new(Config::from_toml(&text).unwrap());
    let names = TopicNames::from_config(&cfg);
    apply_topics_and_schemas(&cfg).await;
    for _ in 0..SYNCS {
        intake::fetch::run(
            cfg.clone(),
            intake::fetch::FetchOptions {
                once: true,
                full: true,
                ..intake::fetch::FetchOptions::default()
            },
            std::future::pending(),
        )
        .await
        .unwrap();
    }
    let landing = read_all(&names.landing(), "read_committed");
    let syncs: BTreeSet<&str> = landing
        .iter()
        .filter(|r| r.header(headers::KIND) == Some("page"))
        .filter_map(|r| r.header(headers::SYNC_ID))
        .collect();
    assert_eq!(syncs.len() as u64, SYNCS, "ten syncs landed");

    let truth = truth(&sim).await;
    let live: BTreeSet<String> = truth_versions(&truth, "customers").into_keys().collect();
    let dead: BTreeSet<String> = truth_drifted(&truth, &["customers"])
        .into_keys()
        .map(|(_, id)| id)
        .filter(|id| live.contains(id))
        .collect();
    assert!(!dead.is_empty(), "the seed drifts some customers");
    let clean: BTreeMap<(String, String), usize> = live
        .iter()
        .filter(|id| !dead.contains(*id))
        .map(|id| (("customers".to_owned(), id.clone()), SYNCS as usize))
        .collect();
    let counts = |o: &BTreeMap<String, Vec<Rec>>| -> BTreeMap<String, u64> {
        let mut latest = BTreeMap::new();
        for r in &o[&names.dlq_index()] {
            let v: Json = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            latest.insert(r.key_str().to_owned(), v["occurrences"].as_u64().unwrap());
        }
        latest
    };
    let outputs = vec![
        names.valid("sim", "customers"),
        names.dlq(),
        names.dlq_index(),
    ];
    // Both only grow as validate works through the ten syncs.
    let out = validate_until(
        &cfg,
        &outputs,
        "every clean record ten times and every failure counted ten times",
        |o| {
            valid_ids(o, &names, &["customers"]) == clean
                && counts(o).len() == dead.len()
                && counts(o).values().all(|n| *n == SYNCS)
        },
    )
    .await;
    let dlq = &out[&names.dlq()];
    let ids: BTreeSet<String> = dlq
        .iter()
        .map(|r| {
            let v: Json = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(dlq.len(), dead.len(), "one dead letter per drifted record");
    assert_eq!(ids, dead);
    assert!(counts(&out).values().all(|n| *n == SYNCS));

    let s = intake::dlq::summary::gather(&cfg, &Filter::default())
        .await
        .unwrap();
    assert_eq!(
        (s.total, s.occurrences),
        (dead.len() as u64, SYNCS * dead.len() as u64),
        "{s:?}"
    );
    let r = replay_filtered(&cfg, Filter::default()).await.unwrap();
    assert_eq!(
        (r.chosen, r.landed),
        (dead.len() as u64, dead.len() as u64),
        "{r:?}"
    );
    let relanded = read_all(&names.landing(), "read_committed")
        .into_iter()
        .filter(|r| r.header(headers::REPLAY_ID).is_some())
        .count();
    assert_eq!(relanded, dead.len(), "each dead letter re-landed once");
}
