//! Shared helpers for integration tests against the real local stack (`scripts/stack start`).
//!
//! Every test gets its own topic prefix and group prefix, so tests run in parallel against one
//! broker without seeing each other's data.
#![allow(dead_code)]

use std::time::Duration;

use intake::config::Config;
use intake::kafka::Kafka;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};

/// Bootstrap servers of the local stack.
pub fn brokers() -> String {
    std::env::var("INTAKE_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Registry base URL of the local stack (Confluent API).
pub fn registry_url() -> String {
    std::env::var("INTAKE_TEST_REGISTRY").unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".into())
}

/// A fresh random name fragment.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// The repository root.
pub fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A config for one test: random topic and group prefixes, real broker and registry, plus
/// whatever `extra` TOML (sources) the test adds.
pub fn config(extra: &str) -> Config {
    let p = unique("t");
    let root = root();
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_prefix = "{p}"
instance_id = "test"
transaction_timeout = "10s"

[registry]
url = "{registry}"
schema_dir = "{root}/topics/schemas"
cache_ttl = "1s"

[blob]
url = "file://{blobs}"

[topics]
prefix = "{p}"
dir = "{root}/topics"

{extra}
"#,
        brokers = brokers(),
        registry = registry_url(),
        root = root.display(),
        blobs = std::env::temp_dir().join(format!("intake-blobs-{p}")).display(),
    );
    Config::from_toml(&text).expect("test config is valid")
}

/// Kafka factory for a config.
pub fn kafka(cfg: &Config) -> Kafka {
    Kafka::new(&cfg.kafka).unwrap()
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Rec {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.iter().rev().find(|(n, _)| n == k).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
    pub fn key_str(&self) -> &str {
        std::str::from_utf8(self.key.as_deref().unwrap_or_default()).unwrap()
    }
}

/// Reads a whole topic to its end with the given isolation level (`read_committed` or
/// `read_uncommitted`).
pub fn read_all(topic: &str, isolation: &str) -> Vec<Rec> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let parts = md.topics()[0].partitions().len() as i32;
    assert!(parts > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut pending: std::collections::HashSet<i32> = (0..parts).collect();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        assert!(std::time::Instant::now() < deadline, "reading {topic} timed out");
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => out.push(Rec {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|h| h.iter().map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec())).collect())
                    .unwrap_or_default(),
            }),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
        }
    }
    out
}

/// Creates the configured topics (fails the test on error).
pub async fn apply_topics(cfg: &Config) {
    intake::topics::ensure(cfg, &kafka(cfg)).await.expect("topics apply");
}
