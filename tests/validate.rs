//! Issue 5: validate on the real stack — landing → valid topics and the DLQ, exactly once.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use intake::config::Config;
use intake::headers::{self, Headers};
use intake::registry::{Registry, wire};
use intake::topics::TopicNames;
use intake::validate::Splitter;
use serde_json::{Value as Json, json};
use support::*;

/// Runs validate until the committed outputs hold `expected` records in all; returns them.
async fn validate_count(
    cfg: &Arc<Config>,
    outputs: &[String],
    expected: usize,
) -> BTreeMap<String, Vec<Rec>> {
    validate_until(cfg, outputs, &format!("{expected} outputs"), |o| {
        o.values().map(Vec::len).sum::<usize>() >= expected
    })
    .await
}

/// Decodes a valid-topic value with the schema the registry has under its id. A top-level
/// `timestamp-micros` field becomes `{"timestamp-micros": n}`, for [`assert_same_record`].
async fn decode(reg: &Registry, value: &[u8]) -> (u32, Json) {
    let (id, datum) = wire::unframe(value).expect("Confluent framing");
    let schema = reg.schema_by_id(id).await.expect("schema by id");
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .unwrap();
    let avro = reader
        .read_value(&mut &datum[..])
        .expect("datum decodes with its schema");
    let apache_avro::types::Value::Record(fields) = avro else {
        panic!("a valid-topic value is a record: {avro:?}");
    };
    let fields = fields.into_iter().map(|(name, value)| {
        let json = match value {
            apache_avro::types::Value::TimestampMicros(n) => json!({"timestamp-micros": n}),
            other => Json::try_from(other).unwrap(),
        };
        (name, json)
    });
    (id, Json::Object(fields.collect()))
}

/// Microseconds since the epoch of an RFC 3339 string, read by the `time` crate.
fn rfc3339_micros(s: &str) -> i64 {
    let at = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s} is RFC 3339: {e}"));
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000)).unwrap()
}

/// Every member of `json` is in `avro` with the same value (a `timestamp-micros` field: the
/// instant of the JSON's RFC 3339 string, to the microsecond); members only in `avro` are null
/// (optional fields the record did not have).
fn assert_same_record(avro: &Json, json: &Json, what: &str) {
    let (a, j) = (avro.as_object().unwrap(), json.as_object().unwrap());
    for (k, v) in j {
        match a.get(k).and_then(|a| a.get("timestamp-micros")) {
            Some(micros) => assert_eq!(
                micros.as_i64(),
                Some(rfc3339_micros(v.as_str().unwrap())),
                "{what}: field {k} ({v})"
            ),
            None => assert_eq!(a.get(k), Some(v), "{what}: field {k}"),
        }
    }
    for (k, v) in a {
        if !j.contains_key(k) {
            assert_eq!(
                v,
                &Json::Null,
                "{what}: field {k} absent in JSON must be null"
            );
        }
    }
}

/// `(stream, id) → raw record bytes` of every landed page (blob-refs resolved), and the number
/// of sync markers per stream.
async fn landed_records(
    cfg: &Config,
) -> (BTreeMap<(String, String), Vec<u8>>, BTreeMap<String, usize>) {
    let names = TopicNames::from_config(cfg);
    let blobs = intake::blob::BlobStore::open(&cfg.blob).unwrap();
    let splitter = Splitter::new("/data", "/id", Some("/version")).unwrap();
    let mut records = BTreeMap::new();
    let mut markers = BTreeMap::new();
    for r in read_all(&names.landing(), "read_committed") {
        let stream = r.header(headers::STREAM).unwrap().to_owned();
        let body = match r.header(headers::KIND).unwrap() {
            "page" => r.value.clone().unwrap(),
            "blob-ref" => {
                let b =
                    intake::blob::BlobRef::parse_header(r.header(headers::BLOB).unwrap()).unwrap();
                blobs.get(&b).await.unwrap().to_vec()
            }
            _ => {
                *markers.entry(stream).or_default() += 1;
                continue;
            }
        };
        for rec in splitter.split(&body).unwrap() {
            let rec = rec.unwrap();
            let dup = records.insert((stream.clone(), rec.key.clone()), rec.bytes().to_vec());
            assert!(dup.is_none(), "{stream}/{} landed twice", rec.key);
        }
    }
    (records, markers)
}

#[tokio::test(flavor = "multi_thread")]
async fn drifted_records_go_to_the_dlq_and_the_rest_to_the_valid_topics_exactly_once() {
    let sim = sim(&[
        "--records",
        "400",
        "--seed",
        "11",
        "--drift-rate",
        "0.05",
        "--large-rate",
        "0.01",
        "--large-bytes",
        "1100000",
    ])
    .await;
    let streams = ["customers", "orders", "events"];
    let cfg = Arc::new(config(&cursor_sim_source(&sim, &streams)));
    let names = TopicNames::from_config(&cfg);
    let reg = apply_topics_and_schemas(&cfg).await;
    fetch_once(&cfg).await.unwrap();

    let truth = truth(&sim).await;
    let (landed, markers) = landed_records(&cfg).await;
    let drifted = truth_drifted(&truth, &streams);
    let large = truth_ids(&truth, &streams, "large");
    let kinds: BTreeSet<&str> = drifted.values().map(String::as_str).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "missing_field",
            "type_mismatch",
            "unknown_enum",
            "unknown_field"
        ]),
        "the seed drifts every kind"
    );
    assert!(
        large.iter().any(|k| !drifted.contains_key(k)),
        "the seed makes a large record that does not drift"
    );
    let live: usize = streams
        .iter()
        .map(|s| truth["streams"][s]["live"].as_object().unwrap().len())
        .sum();
    assert_eq!(landed.len(), live, "fetch landed every live record once");
    assert_eq!(
        markers.values().sum::<usize>(),
        2 * streams.len(),
        "one sync-begin and one sync-end per stream"
    );

    let valid_topics: Vec<String> = streams.iter().map(|s| names.valid("sim", s)).collect();
    let mut outputs = valid_topics.clone();
    outputs.push(names.dlq());
    let partitions = 4; // topics/topics.toml, per_stream
    let out = validate_count(
        &cfg,
        &outputs,
        landed.len() + markers.values().sum::<usize>() * partitions,
    )
    .await;
    let by_kind = drifted
        .values()
        .fold(BTreeMap::<&str, usize>::new(), |mut m, k| {
            *m.entry(k.as_str()).or_default() += 1;
            m
        });
    println!(
        "landed {} records; drifted {by_kind:?}; large {}; outputs {:?}",
        landed.len(),
        large.len(),
        out.iter()
            .map(|(t, r)| (t.as_str(), r.len()))
            .collect::<Vec<_>>()
    );

    // The DLQ: exactly the drifted ids, each once; large ones go by claim-check (below).
    let mut in_dlq: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &out[&names.dlq()] {
        let stream = r.header(headers::STREAM).unwrap().to_owned();
        let value = r.value.as_deref().unwrap();
        let id = serde_json::from_slice::<Json>(value).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let key = (stream.clone(), id.clone());
        *in_dlq.entry(key.clone()).or_default() += 1;
        assert_eq!(
            value,
            &landed[&key][..],
            "{stream}/{id}: the DLQ keeps the raw record bytes"
        );
        assert_eq!(r.key_str(), format!("sim/{stream}"), "the landing key");
        let kind = r.header(headers::DLQ_KIND).unwrap();
        let detail = r.header(headers::DLQ_DETAIL).unwrap();
        match drifted.get(&key) {
            Some(expected) => {
                let field = drift_field(&stream, expected);
                assert_eq!(kind, expected, "{stream}/{id}: {detail}");
                assert_eq!(r.header(headers::DLQ_FIELD), Some(field), "{stream}/{id}");
                assert!(
                    detail.contains(&format!("`{field}`")),
                    "{stream}/{id}: the detail names the field: {detail}"
                );
            }
            None => panic!("{stream}/{id} went to the DLQ without drifting: {kind}: {detail}"),
        }
        assert_eq!(r.header(headers::DLQ_STAGE), Some("validate"));
        assert_eq!(
            r.header(headers::DLQ_SUBJECT),
            Some(names.subject("sim", &stream).as_str())
        );
        assert_eq!(r.header(headers::DLQ_SCHEMA_VERSION), Some("1"));
        assert!(r.header(headers::DLQ_AT).is_some());
        let origin = r.header(headers::DLQ_ORIGIN).unwrap();
        let (at, index) = origin
            .split_once('#')
            .expect("a record's origin has its index");
        assert!(
            at.starts_with(&format!("{}/", names.landing())) && index.parse::<usize>().is_ok(),
            "{origin}"
        );
        // Landing headers are kept.
        assert_eq!(r.header(headers::SOURCE), Some("sim"));
        assert!(r.header(headers::SYNC_ID).is_some() && r.header(headers::FETCHED_AT).is_some());
    }
    let expected_dlq: BTreeMap<(String, String), usize> = drifted
        .keys()
        .filter(|k| landed.contains_key(*k))
        .map(|k| (k.clone(), 1))
        .collect();
    assert_eq!(
        in_dlq, expected_dlq,
        "the DLQ holds exactly the drifted records, once each"
    );

    // The valid topics: exactly the other ids, once each, decodable, equal to the JSON; the
    // large ones (over the topic's 1 MiB) as claim-check references whose blob holds the
    // framed record, the reference's schema registered under `<topic>-intake.ClaimCheck`.
    let blobs = intake::blob::BlobStore::open(&cfg.blob).unwrap();
    let mut claim_checked = 0;
    for (stream, topic) in streams.iter().zip(&valid_topics) {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_partition: BTreeMap<i32, Vec<&Rec>> = BTreeMap::new();
        for r in &out[topic] {
            by_partition.entry(r.partition).or_default().push(r);
            if r.header(headers::KIND).is_some() {
                continue; // a sync marker, checked below
            }
            let id = r.key_str().to_owned();
            *seen.entry(id.clone()).or_default() += 1;
            let body = match r.header(headers::BLOB) {
                Some(h) => {
                    let b = intake::blob::BlobRef::parse_header(h).unwrap();
                    let (claim_id, datum) =
                        intake::registry::wire::unframe(r.value.as_deref().unwrap()).unwrap();
                    let claim = intake::blob::ClaimCheck::from_datum(datum).unwrap();
                    assert_eq!(claim.blob, b, "{stream}/{id}: header and reference agree");
                    assert_eq!(claim.key["id"], id);
                    let subject = format!("{topic}-intake.ClaimCheck");
                    assert!(
                        subject_versions(&subject)
                            .await
                            .iter()
                            .any(|(_, i, _)| *i == claim_id),
                        "{subject} holds the reference's schema"
                    );
                    assert!(
                        large.contains(&(stream.to_string(), id.clone())),
                        "{stream}/{id}: only large records go by reference"
                    );
                    claim_checked += 1;
                    blobs.get(&b).await.unwrap().to_vec()
                }
                None => r.value.clone().unwrap(),
            };
            let (_, avro) = decode(&reg, &body).await;
            let record = &truth["streams"][stream]["live"][&id];
            assert_same_record(&avro, &record["record"], &format!("{stream}/{id}"));
            let raw = &landed[&(stream.to_string(), id.clone())];
            assert_eq!(r.header(headers::OP), Some("upsert"));
            assert_eq!(
                r.header(headers::VERSION),
                Some(record["version"].as_u64().unwrap().to_string().as_str())
            );
            assert_eq!(
                r.header(headers::HASH),
                Some(format!("{:016x}", intake::dedup::merge::content_hash(raw)).as_str())
            );
            assert_eq!(r.header(headers::SOURCE), Some("sim"));
            assert_eq!(r.header(headers::STREAM), Some(*stream));
            assert!(
                r.header(headers::ORIGIN)
                    .unwrap()
                    .starts_with(&format!("{}/", names.landing()))
            );
            assert!(!r.header(headers::ORIGIN).unwrap().contains('#'));
            assert!(
                r.header(headers::SYNC_ID).is_some() && r.header(headers::FETCHED_AT).is_some()
            );
        }
        let expected: BTreeMap<String, usize> = landed
            .keys()
            .filter(|k| k.0 == *stream && !drifted.contains_key(*k))
            .map(|k| (k.1.clone(), 1))
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(
            seen, expected,
            "{stream}: the valid topic holds exactly the non-drifted records, once each"
        );
        // Each partition opens with the sync-begin marker and closes with the sync-end one.
        assert_eq!(
            by_partition.len(),
            partitions,
            "{stream}: markers reach every partition"
        );
        for (p, recs) in by_partition {
            let kinds: Vec<&str> = recs
                .iter()
                .filter_map(|r| r.header(headers::KIND))
                .collect();
            assert_eq!(kinds, ["sync-begin", "sync-end"], "{stream} partition {p}");
            assert_eq!(
                recs.first().unwrap().header(headers::KIND),
                Some("sync-begin"),
                "{stream} partition {p}"
            );
            assert_eq!(
                recs.last().unwrap().header(headers::KIND),
                Some("sync-end"),
                "{stream} partition {p}"
            );
            let begin = recs.first().unwrap();
            assert_eq!(begin.key_str(), format!("sim/{stream}"));
            assert!(
                begin.header(headers::SYNC_ID).is_some()
                    && begin.header(headers::MODE) == Some("full")
            );
        }
    }
    let want = large
        .iter()
        .filter(|k| !drifted.contains_key(*k) && landed.contains_key(*k))
        .count();
    assert!(want > 0);
    assert_eq!(
        claim_checked, want,
        "every large record that does not drift, and no other, went by claim-check"
    );
}

fn page_headers(stream: &str, kind: &str) -> Headers {
    Headers::new()
        .with(headers::SOURCE, "sim")
        .with(headers::STREAM, stream)
        .with(headers::KIND, kind)
        .with(headers::SYNC_ID, "sync-1")
        .with(headers::MODE, "full")
        .with(headers::FETCHED_AT, "2024-05-01T00:00:00Z")
}

fn customer(id: &str, version: u64) -> Json {
    json!({"id": id, "name": "Ada", "email": "ada@example.com", "status": "active", "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-02T00:00:00Z", "version": version})
}

fn order(id: &str) -> Json {
    json!({"id": id, "customer_id": "c-1", "amount_cents": 1200, "currency": "EUR", "status": "paid", "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-02T00:00:00Z", "version": 1})
}

fn with(mut v: Json, k: &str, x: Json) -> Json {
    v[k] = x;
    v
}

fn bytes(v: &Json) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_bad_input_is_kept_with_its_error_events_and_evolve_work() {
    // Records over 4 MB are not stored by claim-check (`blob.max_record_bytes`): too_large.
    let text = config_text(&unfetched_source(&[
        ("customers", ""),
        ("orders", "drift = \"evolve\"\n"),
        ("ghost", ""),
    ]))
    .replacen("[blob]\n", "[blob]\nmax_record_bytes = 4000000\n", 1);
    let cfg = Arc::new(Config::from_toml(&text).unwrap());
    let names = TopicNames::from_config(&cfg);
    let reg = apply_topics_and_schemas(&cfg).await;
    let blobs = intake::blob::BlobStore::open(&cfg.blob).unwrap();

    let no_id = json!({"name": "nobody", "version": 1});
    let bad_version = with(customer("c-3", 1), "version", json!("soon"));
    let renamed = with(customer("c-4", 1), "status", json!("enabled"));
    let email_number = with(customer("c-5", 1), "email", json!(12345));
    // `updated_at` is a timestamp-micros in the schema: a string that is no RFC 3339 timestamp
    // is drift naming the field.
    let bad_time = with(
        customer("c-6", 1),
        "updated_at",
        json!("2024-13-01T00:00:00Z"),
    );
    let page1 = bytes(
        &json!({"data": [customer("c-1", 7), no_id, bad_version, renamed, email_number, bad_time], "next": null}),
    );
    let big1 = with(customer("c-11", 1), "notes", json!("x".repeat(1_200_000)));
    let big9 = with(customer("c-12", 1), "notes", json!("y".repeat(9_000_000)));
    let blob_page = bytes(&json!({"data": [customer("c-10", 1), big1, big9]}));
    let blob = blobs.put(blob_page.clone().into()).await.unwrap();
    let missing_blob = intake::blob::BlobRef {
        uri: blob.uri.replace(&blob.sha256, &"0".repeat(64)),
        sha256: "0".repeat(64),
        size: 3,
    };
    let event = |ty: &str, id: &str, seq: i64, data: Json| {
        bytes(
            &json!({"event_id": format!("e-{id}-{seq}"), "type": ty, "stream": "customers", "entity_id": id, "seq": seq, "data": data}),
        )
    };
    let event_headers = || {
        Headers::new()
            .with(headers::SOURCE, "sim")
            .with(headers::KIND, "event")
            .with(headers::FETCHED_AT, "2024-05-01T00:00:00Z")
    };
    let fulfilled = with(order("o-2"), "fulfillment_channel", json!("store"));
    let settled = with(order("o-3"), "status", json!("settled"));
    let amount_text = with(order("o-4"), "amount_cents", json!("12"));
    let orders_page =
        bytes(&json!({"data": [order("o-1"), fulfilled, settled.clone(), amount_text]}));
    let ghost_page =
        bytes(&json!({"data": [{"id": "g-1", "version": 1}, {"id": "g-2", "version": 2}]}));

    let k = |s: &str| format!("sim/{s}");
    land(
        &cfg,
        vec![
            (
                k("customers"),
                page1.clone(),
                page_headers("customers", "page"),
            ),
            (
                k("customers"),
                br#"{"data":[{"id":"#.to_vec(),
                page_headers("customers", "page"),
            ),
            (
                k("customers"),
                b"\xff\xfe{}".to_vec(),
                page_headers("customers", "page"),
            ),
            (
                k("customers"),
                br#"{"items":[]}"#.to_vec(),
                page_headers("customers", "page"),
            ),
            (k("ghost"), ghost_page, page_headers("ghost", "page")),
            (
                k("customers"),
                page1.clone(),
                Headers::new()
                    .with(headers::SOURCE, "sim")
                    .with(headers::STREAM, "customers"),
            ),
            (k("unknown"), page1.clone(), page_headers("unknown", "page")),
            (
                k("customers"),
                bytes(&json!(missing_blob)),
                page_headers("customers", "blob-ref")
                    .with(headers::BLOB, missing_blob.header_value()),
            ),
            (
                k("customers"),
                bytes(&json!(blob)),
                page_headers("customers", "blob-ref").with(headers::BLOB, blob.header_value()),
            ),
            (
                "c-20".into(),
                event("created", "c-20", 5, customer("c-20", 1)),
                event_headers(),
            ),
            (
                "c-21".into(),
                event(
                    "updated",
                    "c-21",
                    6,
                    with(customer("c-21", 1), "status", json!("enabled")),
                ),
                event_headers(),
            ),
            (
                "c-22".into(),
                event("deleted", "c-22", 9, Json::Null),
                event_headers(),
            ),
            (
                "c-23".into(),
                event("renamed", "c-23", 1, customer("c-23", 1)),
                event_headers(),
            ),
            (k("orders"), orders_page, page_headers("orders", "page")),
            (
                k("customers"),
                br#"{"sync_id":"sync-1"}"#.to_vec(),
                page_headers("customers", "sync-begin"),
            ),
        ],
    )
    .await;

    let valid_c = names.valid("sim", "customers");
    let valid_o = names.valid("sim", "orders");
    let outputs = vec![valid_c.clone(), valid_o.clone(), names.dlq()];
    // customers: c-1, c-10, c-11 (1.2 MB, by claim-check), c-20, the c-22 delete, 4 marker
    // copies; orders: 3; DLQ: 17.
    let out = validate_count(&cfg, &outputs, 9 + 3 + 17).await;

    // Valid customers.
    let data: Vec<&Rec> = out[&valid_c]
        .iter()
        .filter(|r| r.header(headers::KIND).is_none())
        .collect();
    let keys: Vec<&str> = data
        .iter()
        .map(|r| r.key_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(keys, ["c-1", "c-10", "c-11", "c-20", "c-22"]);
    assert_eq!(data.len(), 5);
    for r in &data {
        match r.key_str() {
            "c-22" => {
                assert_eq!(r.value, None, "a delete is a null value");
                assert_eq!(r.header(headers::OP), Some("delete"));
                assert_eq!(r.header(headers::VERSION), Some("9"));
                assert_eq!(r.header(headers::HASH), Some("0000000000000000"));
            }
            "c-11" => {
                // Over the topic's 1 MiB: a claim-check reference to the framed record.
                let b =
                    intake::blob::BlobRef::parse_header(r.header(headers::BLOB).unwrap()).unwrap();
                let (_, datum) = wire::unframe(r.value.as_deref().unwrap()).unwrap();
                let claim = intake::blob::ClaimCheck::from_datum(datum).unwrap();
                assert_eq!((claim.blob.clone(), claim.version), (b.clone(), Some(1)));
                let body = blobs.get(&b).await.unwrap();
                let (id, avro) = decode(&reg, &body).await;
                assert_eq!(id, claim.schema_id);
                assert_same_record(
                    &avro,
                    &with(customer("c-11", 1), "notes", json!("x".repeat(1_200_000))),
                    "c-11",
                );
            }
            id => {
                assert_eq!(r.header(headers::BLOB), None, "{id} is whole");
                let (_, avro) = decode(&reg, r.value.as_deref().unwrap()).await;
                let version = match id {
                    "c-1" => 7,
                    _ => 1,
                };
                assert_same_record(&avro, &customer(id, version), id);
                assert_eq!(r.header(headers::OP), Some("upsert"));
                // A page record's version is its own; an event's is the event's seq.
                let expected = if id == "c-20" {
                    "5"
                } else {
                    &version.to_string()
                };
                assert_eq!(r.header(headers::VERSION), Some(expected), "{id}");
            }
        }
    }
    assert_eq!(
        out[&valid_c]
            .iter()
            .filter(|r| r.header(headers::KIND) == Some("sync-begin"))
            .count(),
        4
    );

    // Orders under drift = evolve: the new field and the renamed enum were registered as new
    // versions; the type change was not (it cannot be a compatible change).
    let mut orders: BTreeMap<String, (u32, Json)> = BTreeMap::new();
    for r in &out[&valid_o] {
        orders.insert(
            r.key_str().to_owned(),
            decode(&reg, r.value.as_deref().unwrap()).await,
        );
    }
    assert_eq!(
        orders.keys().map(String::as_str).collect::<Vec<_>>(),
        ["o-1", "o-2", "o-3"]
    );
    assert_eq!(orders["o-2"].1["fulfillment_channel"], json!("store"));
    assert_eq!(orders["o-3"].1["status"], json!("settled"));
    assert!(
        orders["o-1"].0 != orders["o-2"].0 && orders["o-2"].0 != orders["o-3"].0,
        "each evolution is a new schema id"
    );
    let latest = reg.latest(&names.subject("sim", "orders")).await.unwrap();
    assert_eq!(latest.version, 3);
    // Downstream tools look the schema up by the curated topic's name (`<topic>-value`): it
    // holds every schema the orders records carry, evolved ones included, in the same order
    // and with the same ids as validate's subject; customers' too (from `schemas apply`).
    for stream in ["orders", "customers"] {
        let ours = subject_versions(&names.subject("sim", stream)).await;
        let theirs = subject_versions(&format!("{}-value", names.curated("sim", stream))).await;
        let ids = |v: &[(u32, u32, String)]| v.iter().map(|(_, id, _)| *id).collect::<Vec<_>>();
        assert_eq!(
            ids(&theirs),
            ids(&ours),
            "{stream}: the curated topic's subject"
        );
    }
    let carried: BTreeSet<u32> = orders.values().map(|(id, _)| *id).collect();
    let downstream: BTreeSet<u32> =
        subject_versions(&format!("{}-value", names.curated("sim", "orders")))
            .await
            .iter()
            .map(|(_, id, _)| *id)
            .collect();
    assert!(
        carried.is_subset(&downstream),
        "ids carried {carried:?}, under the curated topic's subject {downstream:?}"
    );

    // The DLQ: one record per rejection, with its kind, field and origin.
    let mut got: Vec<(String, Option<String>, String, Option<usize>)> = Vec::new();
    for r in &out[&names.dlq()] {
        let origin = r.header(headers::DLQ_ORIGIN).unwrap();
        let index = origin.split_once('#').map(|(_, i)| i.parse().unwrap());
        got.push((
            r.header(headers::DLQ_KIND).unwrap().to_owned(),
            r.header(headers::DLQ_FIELD).map(str::to_owned),
            r.key_str().to_owned(),
            index,
        ));
        assert_eq!(r.header(headers::DLQ_STAGE), Some("validate"));
        if let Some(f) = r.header(headers::DLQ_FIELD) {
            assert!(
                r.header(headers::DLQ_DETAIL)
                    .unwrap()
                    .contains(&format!("`{f}`")),
                "{:?}",
                r.header(headers::DLQ_DETAIL)
            );
        }
        match (r.header(headers::DLQ_KIND).unwrap(), r.key_str()) {
            ("unknown_enum", "c-21") | ("not_a_page", "c-23") => {
                assert!(serde_json::from_slice::<Json>(r.value.as_deref().unwrap()).unwrap()["event_id"].is_string(), "an event is kept whole");
            }
            ("too_large", _) => {
                let v: Json = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
                if index == Some(2) {
                    // 9 MB: over the DLQ's own limit, kept as the landing reference.
                    assert_eq!(v, json!(blob));
                    assert!(
                        r.header(headers::DLQ_DETAIL)
                            .unwrap()
                            .contains("landing value")
                    );
                } else {
                    panic!("only c-12 is too large: {v}");
                }
            }
            ("blob_unreadable", _) => assert_eq!(
                serde_json::from_slice::<Json>(r.value.as_deref().unwrap()).unwrap(),
                json!(missing_blob)
            ),
            ("no_schema", "sim/ghost") => {
                assert_eq!(
                    r.header(headers::DLQ_SUBJECT),
                    Some(names.subject("sim", "ghost").as_str())
                );
                assert_eq!(r.header(headers::DLQ_SCHEMA_VERSION), None);
            }
            _ => {}
        }
    }
    got.sort();
    let s = |x: &str| x.to_owned();
    let f = |x: &str| Some(x.to_owned());
    let mut expected = vec![
        (s("missing_key"), f("id"), s("sim/customers"), Some(1)),
        (s("bad_version"), f("version"), s("sim/customers"), Some(2)),
        (s("unknown_enum"), f("status"), s("sim/customers"), Some(3)),
        (s("type_mismatch"), f("email"), s("sim/customers"), Some(4)),
        (
            s("type_mismatch"),
            f("updated_at"),
            s("sim/customers"),
            Some(5),
        ),
        (s("malformed_json"), None, s("sim/customers"), None),
        (s("not_utf8"), None, s("sim/customers"), None),
        (s("not_a_page"), None, s("sim/customers"), None),
        (s("no_schema"), None, s("sim/ghost"), Some(0)),
        (s("no_schema"), None, s("sim/ghost"), Some(1)),
        (s("not_a_page"), None, s("sim/customers"), None),
        (s("no_schema"), None, s("sim/unknown"), None),
        (s("blob_unreadable"), None, s("sim/customers"), None),
        (s("too_large"), None, s("sim/customers"), Some(2)),
        (s("unknown_enum"), f("status"), s("c-21"), None),
        (s("not_a_page"), f("type"), s("c-23"), None),
        (
            s("type_mismatch"),
            f("amount_cents"),
            s("sim/orders"),
            Some(3),
        ),
    ];
    expected.sort();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_outage_is_retried_not_dead_lettered() {
    let text = config_text(&unfetched_source(&[("customers", "")]));
    let cfg = Arc::new(Config::from_toml(&text).unwrap());
    let down = Arc::new(
        Config::from_toml(&text.replace(&registry_url(), "http://127.0.0.1:1/apis/ccompat/v7"))
            .unwrap(),
    );
    let names = TopicNames::from_config(&cfg);
    apply_topics_and_schemas(&cfg).await;
    let page = bytes(
        &json!({"data": [customer("c-1", 1), customer("c-2", 2), with(customer("c-3", 1), "status", json!("enabled"))]}),
    );
    land(
        &cfg,
        vec![(
            "sim/customers".into(),
            page,
            page_headers("customers", "page"),
        )],
    )
    .await;
    let outputs = vec![names.valid("sim", "customers"), names.dlq()];

    // Registry unreachable: nothing is written, nothing is dead-lettered, the stage keeps going
    // and retries. Its attempts are counted by the metric every aborted attempt raises
    // (`intake_errors_total{stage="validate",class="system"}`, read from this process's
    // recorder, installed before the stage starts).
    let prom = intake::telemetry::prometheus();
    let system_errors = || -> u64 {
        prom.render()
            .lines()
            .filter(|l| l.starts_with("intake_errors_total{"))
            .filter(|l| l.contains(r#"class="system""#) && l.contains(r#"stage="validate""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let before = system_errors();
    let (stop, stopped) = stop_signal();
    let task = tokio::spawn(intake::validate::stage::run(down, stopped));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let retries = loop {
        let n = system_errors() - before;
        if n >= 3 {
            break n;
        }
        assert!(!task.is_finished(), "an outage does not stop the stage");
        assert!(
            std::time::Instant::now() < deadline,
            "the stage did not retry three times in 120 s ({n} attempts)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!task.is_finished(), "an outage does not stop the stage");
    let written = read_topics(&outputs).await;
    let during: usize = written.values().map(Vec::len).sum();
    let what: Vec<(&str, Option<&str>, Option<&str>)> = written
        .values()
        .flatten()
        .map(|r| {
            (
                r.key_str(),
                r.header(headers::DLQ_KIND),
                r.header(headers::DLQ_DETAIL),
            )
        })
        .collect();
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(during, 0, "a registry outage is not bad data: {what:?}");
    println!("registry down: {retries} aborted attempts, {during} outputs");

    // Registry back: the same landing record flows, once.
    let out = validate_count(&cfg, &outputs, 3).await;
    let keys: Vec<&str> = out[&outputs[0]].iter().map(Rec::key_str).collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&"c-1") && keys.contains(&"c-2"));
    assert_eq!(out[&outputs[1]].len(), 1);
    assert_eq!(
        out[&outputs[1]][0].header(headers::DLQ_KIND),
        Some("unknown_enum")
    );
}

/// Issue 19 (formats): a stream answering JSON Lines and one answering CSV, both gzip-encoded,
/// land as received (with `intake.format`) and validate like JSON: every record that does not
/// drift reaches its valid topic once, equal field by field to the simulator's truth (CSV cells
/// typed by the schema: numbers, timestamps, enums), and every drifted one is in the DLQ once
/// with the kind and field the truth names. CSV cannot carry a string field turned number, so
/// the drift kinds here are the three a CSV row can show.
#[tokio::test(flavor = "multi_thread")]
async fn jsonl_and_csv_answers_validate_like_json() {
    let sim = sim(&[
        "--records",
        "240",
        "--seed",
        "19",
        "--compress",
        "gzip",
        "--drift-rate",
        "0.08",
        "--drift-kinds",
        "unknown_enum,unknown_field,missing_field",
    ])
    .await;
    let mut source = sim_source_head(&sim);
    source.push_str(&sim_stream(
        "customers",
        "/v1/styles/link/customers",
        "link",
        40,
        "format = \"jsonl\"\nquery = { format = \"jsonl\" }",
    ));
    source.push_str(&sim_stream(
        "orders",
        "/v1/styles/page/orders",
        "page",
        40,
        "format = \"csv\"\nquery = { format = \"csv\" }",
    ));
    let cfg = Arc::new(config(&source));
    let names = TopicNames::from_config(&cfg);
    let reg = apply_topics_and_schemas(&cfg).await;
    fetch_once(&cfg).await.unwrap();
    let truth = truth(&sim).await;
    let stats = sim_stats(&sim).await;
    assert_eq!(
        stats["compressed"], stats["pages"],
        "every page was served gzip-encoded: {stats}"
    );

    let streams = ["customers", "orders"];
    let mut formats: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut markers = 0;
    for r in read_all(&names.landing(), "read_committed") {
        let stream = r.header(headers::STREAM).unwrap().to_owned();
        if r.header(headers::KIND) == Some("page") {
            formats
                .entry(stream)
                .or_default()
                .insert(r.header(headers::FORMAT).unwrap_or("absent").to_owned());
        } else {
            markers += 1;
        }
    }
    assert_eq!(
        formats,
        BTreeMap::from([
            ("customers".to_owned(), BTreeSet::from(["jsonl".to_owned()])),
            ("orders".to_owned(), BTreeSet::from(["csv".to_owned()])),
        ]),
        "pages land with their format"
    );
    let drifted = truth_drifted(&truth, &streams);
    let live: BTreeMap<(String, String), &Json> = streams
        .iter()
        .flat_map(|s| {
            truth["streams"][s]["live"]
                .as_object()
                .unwrap()
                .iter()
                .map(move |(id, r)| ((s.to_string(), id.clone()), r))
        })
        .collect();
    for s in streams {
        let kinds: BTreeSet<&str> = drifted
            .iter()
            .filter(|(k, _)| k.0 == s)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(kinds.len(), 3, "{s}: the seed drifts every kind: {kinds:?}");
    }
    let partitions = 4; // topics/topics.toml, per_stream
    let mut outputs: Vec<String> = streams.iter().map(|s| names.valid("sim", s)).collect();
    outputs.push(names.dlq());
    let out = validate_count(&cfg, &outputs, live.len() + markers * partitions).await;

    let mut in_dlq: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &out[&names.dlq()] {
        let stream = r.header(headers::STREAM).unwrap().to_owned();
        let value: Json = serde_json::from_slice(r.value.as_deref().unwrap())
            .expect("a dead letter of a JSON line or CSV row is a JSON object");
        let id = value["id"].as_str().unwrap().to_owned();
        let kind = r.header(headers::DLQ_KIND).unwrap();
        let key = (stream.clone(), id.clone());
        let expected = drifted
            .get(&key)
            .unwrap_or_else(|| panic!("{stream}/{id} dead-lettered without drifting: {kind}"));
        assert_eq!(kind, expected, "{stream}/{id}");
        assert_eq!(
            r.header(headers::DLQ_FIELD),
            Some(drift_field(&stream, expected)),
            "{stream}/{id}"
        );
        *in_dlq.entry(key).or_default() += 1;
    }
    let expected_dlq: BTreeMap<(String, String), usize> =
        drifted.keys().map(|k| (k.clone(), 1)).collect();
    assert_eq!(
        in_dlq, expected_dlq,
        "the DLQ holds exactly the drifted records, once each"
    );

    for stream in streams {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for r in &out[&names.valid("sim", stream)] {
            if r.header(headers::KIND).is_some() {
                continue; // a sync marker
            }
            let id = r.key_str().to_owned();
            *seen.entry(id.clone()).or_default() += 1;
            let (_, avro) = decode(&reg, r.value.as_deref().unwrap()).await;
            let record = live[&(stream.to_owned(), id.clone())];
            assert_same_record(&avro, &record["record"], &format!("{stream}/{id}"));
            assert_eq!(
                r.header(headers::VERSION),
                Some(record["version"].as_u64().unwrap().to_string().as_str())
            );
        }
        let expected: BTreeMap<String, usize> = live
            .keys()
            .filter(|k| k.0 == stream && !drifted.contains_key(*k))
            .map(|k| (k.1.clone(), 1))
            .collect();
        assert!(expected.len() > 150, "{stream}: {}", expected.len());
        assert_eq!(
            seen, expected,
            "{stream}: the valid topic holds exactly the non-drifted records, once each"
        );
    }
}
