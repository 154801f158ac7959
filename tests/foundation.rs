//! Issue 2: the real broker and registry behave as intake relies on.

mod support;

use std::time::Duration;

use apache_avro::types::Value;
use intake::config::Config;
use intake::headers::Headers;
use intake::kafka::{ErrorClass, Outgoing, classify};
use intake::registry::{self, Registry, RegistryError, wire};
use intake::topics::{self, Change, TopicNames};
use support::*;

fn send(p: &intake::kafka::TxnProducer, topic: &str, key: &str, value: &str) {
    p.send(Outgoing {
        topic,
        key: Some(key.as_bytes()),
        payload: Some(value.as_bytes()),
        headers: Headers::new().with("test", "1").build(),
        partition: None,
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn read_committed_sees_only_committed_transactions() {
    let (topic, k) = fresh_landing().await;
    let t = topic.clone();
    tokio::task::spawn_blocking(move || {
        let p = begun_producer(&k, &unique("txn"));
        for i in 0..3 {
            send(&p, &t, &format!("c{i}"), "committed");
        }
        p.commit().unwrap();
        p.begin().unwrap();
        for i in 0..2 {
            send(&p, &t, &format!("a{i}"), "aborted");
        }
        // Make sure the aborted records really reach the log before the abort marker.
        p.flush().unwrap();
        p.abort().unwrap();
    })
    .await
    .unwrap();

    let committed = read_all(&topic, "read_committed");
    let mut keys: Vec<&str> = committed.iter().map(Rec::key_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["c0", "c1", "c2"]);
    assert!(committed.iter().all(|r| r.header("test") == Some("1")));

    let all = read_all(&topic, "read_uncommitted");
    let mut keys: Vec<&str> = all.iter().map(Rec::key_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["a0", "a1", "c0", "c1", "c2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let (topic, k) = fresh_landing().await;
    let t = topic.clone();
    let err = tokio::task::spawn_blocking(move || {
        let id = unique("shared");
        let old = begun_producer(&k, &id);
        send(&old, &t, "zombie", "from the old owner");

        let new = k.txn_producer(&id).unwrap();
        new.init().unwrap(); // fences `old` and aborts its open transaction
        new.begin().unwrap();
        send(&new, &t, "owner", "from the new owner");
        new.commit().unwrap();

        let _ = old.send(Outgoing {
            topic: &t,
            key: Some(b"zombie2"),
            payload: Some(b"x"),
            headers: Headers::new().build(),
            partition: None,
        });
        old.commit()
            .expect_err("the fenced producer must not commit")
    })
    .await
    .unwrap();
    assert_eq!(
        classify(&err),
        ErrorClass::Fatal,
        "fencing must classify as fatal: {err}"
    );

    let keys: Vec<String> = read_all(&topic, "read_committed")
        .iter()
        .map(|r| r.key_str().to_owned())
        .collect();
    assert_eq!(keys, ["owner"]);
}

const SCHEMA_V1: &str = r#"{"type":"record","name":"Thing","namespace":"test","fields":[
  {"name":"id","type":"string"},{"name":"n","type":"long"}]}"#;
const SCHEMA_V2_COMPATIBLE: &str = r#"{"type":"record","name":"Thing","namespace":"test","fields":[
  {"name":"id","type":"string"},{"name":"n","type":"long"},
  {"name":"tag","type":["null","string"],"default":null}]}"#;
const SCHEMA_V3_INCOMPATIBLE: &str = r#"{"type":"record","name":"Thing","namespace":"test","fields":[
  {"name":"id","type":"string"},{"name":"n","type":"long"},{"name":"required_new","type":"string"}]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn schemas_register_encode_decode_and_incompatible_changes_are_refused() {
    let cfg = config("");
    let reg = Registry::new(&cfg.registry).unwrap();
    let subject = format!("{}-value", unique("subj"));

    let out = registry::apply_one(&reg, &subject, SCHEMA_V1)
        .await
        .unwrap();
    let registry::SchemaOutcome::Registered { version: 1, id, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        registry::apply_one(&reg, &subject, SCHEMA_V1)
            .await
            .unwrap(),
        registry::SchemaOutcome::Unchanged {
            subject: subject.clone(),
            version: 1
        }
    );

    // Encode through schema_registry_converter in the Confluent framing, decode with ours.
    let settings = schema_registry_converter::async_impl::schema_registry::SrSettings::new(
        cfg.registry.url.clone(),
    );
    let enc = schema_registry_converter::async_impl::avro::AvroEncoder::new(settings.clone());
    let strategy =
        schema_registry_converter::schema_registry_common::SubjectNameStrategy::TopicNameStrategy(
            subject.trim_end_matches("-value").to_owned(),
            false,
        );
    let bytes = enc
        .encode(
            vec![("id", Value::String("a".into())), ("n", Value::Long(42))],
            strategy,
        )
        .await
        .unwrap();
    let (wire_id, datum) = wire::unframe(&bytes).unwrap();
    assert_eq!(wire_id, id);
    let schema = reg.schema_by_id(wire_id).await.unwrap();
    let v = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .unwrap()
        .read_value(&mut &datum[..])
        .unwrap();
    assert_eq!(
        v,
        Value::Record(vec![
            ("id".into(), Value::String("a".into())),
            ("n".into(), Value::Long(42))
        ])
    );
    // And the converter's own decoder agrees.
    let dec = schema_registry_converter::async_impl::avro::AvroDecoder::new(settings);
    assert_eq!(dec.decode(Some(&bytes)).await.unwrap().value, v);

    // A compatible change registers as version 2; an incompatible one is refused by the registry.
    let out = registry::apply_one(&reg, &subject, SCHEMA_V2_COMPATIBLE)
        .await
        .unwrap();
    assert!(
        matches!(out, registry::SchemaOutcome::Registered { version: 2, .. }),
        "{out:?}"
    );
    assert!(
        !reg.is_compatible(&subject, SCHEMA_V3_INCOMPATIBLE)
            .await
            .unwrap()
    );
    let err = reg
        .register(&subject, SCHEMA_V3_INCOMPATIBLE)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Incompatible { .. }),
        "the registry itself must refuse: {err}"
    );
    let err = registry::apply_one(&reg, &subject, SCHEMA_V3_INCOMPATIBLE)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not compatible"), "{err}");
    reg.invalidate(&subject);
    assert_eq!(reg.latest(&subject).await.unwrap().version, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_apply_is_idempotent_and_aligns_drifted_configs() {
    let cfg = config(&keyed_source(
        "sim",
        r#"base_url = "http://127.0.0.1:1""#,
        &[("orders", r#"path = "/v1/orders""#)],
    ));
    let k = kafka(&cfg);
    let first = topics::ensure(&cfg, &k).await.unwrap();
    assert_eq!(
        first
            .iter()
            .filter(|c| matches!(c, Change::Create(_)))
            .count(),
        9, // landing, cursors, dlq, dlq-index, jobs, quota, tokens, and the stream's two
        "{first:?}"
    );
    let second = topics::ensure(&cfg, &k).await.unwrap();
    assert!(
        second.is_empty(),
        "second run must change nothing: {second:?}"
    );

    // Someone changes a retention by hand: apply puts it back, then reports nothing again.
    let names = TopicNames::from_config(&cfg);
    let dlq = names.dlq();
    let admin = k.admin().unwrap();
    let alter = rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(&dlq))
        .set("cleanup.policy", "delete")
        .set("retention.ms", "1000");
    admin
        .alter_configs([&alter], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = topics::ensure(&cfg, &k).await.unwrap();
    assert!(
        third.iter().any(|c| matches!(c, Change::SetConfig { topic, key, to, .. } if *topic == dlq && key == "retention.ms" && to == "2592000000")),
        "{third:?}"
    );
    assert!(topics::ensure(&cfg, &k).await.unwrap().is_empty());
}

/// Turns `scripts/stack registry-fault` off when dropped, so a failing test leaves the fault
/// port passing requests again.
struct RegistryFault;

impl RegistryFault {
    fn on() -> Self {
        stack_run(&["registry-fault", "on"], &[]);
        RegistryFault
    }
}

impl Drop for RegistryFault {
    fn drop(&mut self) {
        stack_run(&["registry-fault", "off"], &[]);
    }
}

/// `intake schema apply` waits out a registry that answers 503 (nginx in front of it on the
/// stack's fault port, `scripts/stack registry-fault on`): it logs each retry with the reason,
/// registers nothing meanwhile, and once the fault is off registers every subject — as the
/// registry itself, asked directly, then lists them with the schema text of the file.
#[tokio::test(flavor = "multi_thread")]
async fn schema_apply_waits_out_a_registry_answering_503() {
    let text = config_text(&unfetched_source(&[("customers", ""), ("orders", "")]));
    let direct = registry_url();
    let port: u16 = direct
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|h| h.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("the test registry's URL names its port");
    // The stack's fault port is the registry's port + 2 (REGISTRY_FAULT_PORT).
    let faulty = direct.replacen(&format!(":{port}/"), &format!(":{}/", port + 2), 1);
    assert_ne!(faulty, direct);
    let cfg = Config::from_toml(&text).unwrap();
    let names = TopicNames::from_config(&cfg);
    let subjects: Vec<String> = ["customers", "orders"]
        .into_iter()
        .flat_map(|st| {
            [
                names.subject("sim", st),
                format!("{}-value", names.curated("sim", st)),
            ]
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &text.replace(&direct, &faulty));
    let log = dir.path().join("schema-apply.log");

    let fault = RegistryFault::on();
    let mut p = proc::intake(&["schema", "apply"], &log)
        .config(&path)
        .capture_stdout()
        .spawn();
    // Two retries seen: the command is waiting, not failing.
    assert!(
        p.wait_for(
            "applying schemas: unavailable; retrying",
            2,
            Duration::from_secs(120)
        ),
        "no retry logged:\n{}",
        p.tail(30)
    );
    assert!(
        p.saw("503"),
        "the retry names the registry's answer:\n{}",
        p.tail(30)
    );
    let fresh = || Registry::new(&cfg.registry).unwrap();
    for s in &subjects {
        assert!(
            matches!(fresh().latest(s).await, Err(RegistryError::NotFound(_))),
            "{s} registered while the registry answered 503"
        );
    }
    drop(fault);
    let (status, out) = p.wait_output(Duration::from_secs(180));
    assert!(status.success(), "schema apply: {out}");
    let reg = fresh();
    for st in ["customers", "orders"] {
        let file =
            std::fs::read_to_string(root().join(format!("topics/schemas/sim/{st}.avsc"))).unwrap();
        let want = apache_avro::Schema::parse_str(&file)
            .unwrap()
            .canonical_form();
        for s in [
            names.subject("sim", st),
            format!("{}-value", names.curated("sim", st)),
        ] {
            let l = reg.latest(&s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(l.version, 1, "{s}");
            assert_eq!(
                apache_avro::Schema::parse_str(&l.text)
                    .unwrap()
                    .canonical_form(),
                want,
                "{s}"
            );
            assert!(out.contains(&format!("registered {s} version 1")), "{out}");
        }
    }
}
