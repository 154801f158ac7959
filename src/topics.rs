//! Topics as code: names in one place ([`TopicNames`]) and `intake topics apply`.
//!
//! `topics/topics.toml` declares every topic (partitions, cleanup policy, retention,
//! compaction). [`plan`] compares it with the broker and [`apply`] makes the broker match:
//! creates missing topics, sets the declared configs, adds partitions. It is idempotent: a
//! second run reports no change.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{
    AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::error::KafkaError;
use serde::Deserialize;

use crate::config::Config;
use crate::kafka::Kafka;

/// Every topic name intake uses, derived from the prefix.
#[derive(Debug, Clone)]
pub struct TopicNames {
    prefix: String,
}

impl TopicNames {
    /// Names under `prefix` (`topics.prefix`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }
    /// From a config.
    pub fn from_config(cfg: &Config) -> Self {
        Self::new(&cfg.topics.prefix)
    }
    /// Raw pages, events and batches.
    pub fn landing(&self) -> String {
        format!("{}.landing", self.prefix)
    }
    /// Cursor per stream (compacted).
    pub fn cursors(&self) -> String {
        format!("{}.cursors", self.prefix)
    }
    /// Dead letters.
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.prefix)
    }
    /// What each dead letter was counted for since it was written (compacted; the quiet DLQ,
    /// see [`crate::contract::DlqRepeat`]). Partition p holds the entries of landing partition p.
    pub fn dlq_index(&self) -> String {
        format!("{}.dlq-index", self.prefix)
    }
    /// Job registry (compacted).
    pub fn jobs(&self) -> String {
        format!("{}.jobs", self.prefix)
    }
    /// Quota state per token (compacted); its partitions are the unit of token ownership.
    pub fn quota(&self) -> String {
        format!("{}.quota", self.prefix)
    }
    /// OAuth 2.0 token state per token id (compacted), partitioned like [`Self::quota`]: the
    /// owner of quota partition p writes partition p. Refresh tokens in it are sealed.
    pub fn tokens(&self) -> String {
        format!("{}.tokens", self.prefix)
    }
    /// Validated Avro records of a stream.
    pub fn valid(&self, source: &str, stream: &str) -> String {
        format!("{}.{source}.{stream}.valid", self.prefix)
    }
    /// Latest version per key of a stream (compacted).
    pub fn curated(&self, source: &str, stream: &str) -> String {
        format!("{}.{source}.{stream}", self.prefix)
    }
    /// Registry subject of a stream's value schema (TopicNameStrategy).
    pub fn subject(&self, source: &str, stream: &str) -> String {
        format!("{}-value", self.valid(source, stream))
    }
    /// Parses a valid-topic name back into (source, stream).
    pub fn parse_valid<'a>(&self, topic: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = topic
            .strip_prefix(&self.prefix)?
            .strip_prefix('.')?
            .strip_suffix(".valid")?;
        rest.split_once('.')
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Declarations {
    #[serde(default)]
    topic: Vec<Declared>,
    #[serde(default)]
    per_stream: Vec<Declared>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Declared {
    name: String,
    partitions: i32,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

/// A topic as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Full name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Declared configs.
    pub config: BTreeMap<String, String>,
}

/// One difference between the declaration and the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The topic is missing and will be created.
    Create(TopicSpec),
    /// A config differs.
    SetConfig {
        /// Topic.
        topic: String,
        /// Config key.
        key: String,
        /// Current value (None: unset).
        from: Option<String>,
        /// Declared value.
        to: String,
    },
    /// The declaration has more partitions than the topic.
    AddPartitions {
        /// Topic.
        topic: String,
        /// Current count.
        from: i32,
        /// Declared count.
        to: i32,
    },
    /// The declaration has fewer partitions than the topic: never applied, reported.
    FewerPartitionsDeclared {
        /// Topic.
        topic: String,
        /// Current count.
        actual: i32,
        /// Declared count.
        declared: i32,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Create(t) => write!(
                f,
                "create {} ({} partitions, {:?})",
                t.name, t.partitions, t.config
            ),
            Change::SetConfig {
                topic,
                key,
                from,
                to,
            } => {
                write!(
                    f,
                    "set {topic} {key}: {} -> {to}",
                    from.as_deref().unwrap_or("(default)")
                )
            }
            Change::AddPartitions { topic, from, to } => {
                write!(f, "add partitions to {topic}: {from} -> {to}")
            }
            Change::FewerPartitionsDeclared {
                topic,
                actual,
                declared,
            } => write!(
                f,
                "warning: {topic} has {actual} partitions, {declared} declared; partitions are never removed"
            ),
        }
    }
}

/// Why topics could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    /// The declarations could not be read or parsed.
    #[error("topic declarations {path}: {message}")]
    Declarations {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The broker refused or could not be reached.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// One topic operation failed.
    #[error("{op} {topic}: {code}")]
    Operation {
        /// What was attempted.
        op: &'static str,
        /// Topic.
        topic: String,
        /// Broker error.
        code: rdkafka::types::RDKafkaErrorCode,
    },
    /// Created topics did not show up with leaders in the cluster's metadata in time.
    #[error("topics {topics} were created but not visible with leaders after {after:?}")]
    NotVisible {
        /// The topics, comma-separated.
        topics: String,
        /// How long was waited.
        after: Duration,
    },
}

impl TopicsError {
    /// Whether repeating the same step later may succeed (the cluster is unreachable, a leader
    /// or the controller is moving, a request timed out). Applying topics is idempotent, so a
    /// retry is always safe.
    pub fn is_retriable(&self) -> bool {
        use crate::kafka::error::{ErrorClass, classify};
        match self {
            TopicsError::Declarations { .. } => false,
            TopicsError::NotVisible { .. } => true,
            TopicsError::Kafka(e) => classify(e) == ErrorClass::Retry,
            TopicsError::Operation { code, .. } => {
                classify(&KafkaError::AdminOp(*code)) == ErrorClass::Retry
            }
        }
    }
}

/// The topics the config declares: core topics plus per-stream ones for every stream.
///
/// # Errors
/// When `topics/topics.toml` is missing or invalid.
pub fn declared(cfg: &Config) -> Result<Vec<TopicSpec>, TopicsError> {
    let path = cfg.topics.dir.join("topics.toml");
    declared_from(&path, cfg)
}

fn declared_from(path: &Path, cfg: &Config) -> Result<Vec<TopicSpec>, TopicsError> {
    let err = |message: String| TopicsError::Declarations {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let decl: Declarations = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let prefix = &cfg.topics.prefix;
    let mut out = Vec::new();
    let mk = |d: &Declared, name: String| TopicSpec {
        name,
        partitions: d.partitions,
        config: d.config.clone(),
    };
    for d in &decl.topic {
        out.push(mk(d, d.name.replace("{prefix}", prefix)));
    }
    let counts: std::collections::BTreeSet<i32> =
        decl.per_stream.iter().map(|d| d.partitions).collect();
    if counts.len() > 1 {
        return Err(err(
            "per_stream topics must share one partition count (dedup co-partitions them)".into(),
        ));
    }
    for s in &cfg.sources {
        for st in &s.streams {
            for d in &decl.per_stream {
                let name = d
                    .name
                    .replace("{prefix}", prefix)
                    .replace("{source}", &s.name)
                    .replace("{stream}", &st.name);
                let mut spec = mk(d, name);
                // Records up to the stream's limit stay whole; larger ones go by claim-check.
                spec.config.insert(
                    MAX_MESSAGE_BYTES.to_owned(),
                    st.max_message_bytes.to_string(),
                );
                out.push(spec);
            }
        }
    }
    if let Some(n) = cfg.topics.min_insync_replicas {
        if n < 1 || n > cfg.topics.replication_factor {
            return Err(err(format!(
                "topics.min_insync_replicas = {n} must be between 1 and replication_factor ({})",
                cfg.topics.replication_factor
            )));
        }
        for spec in &mut out {
            spec.config
                .insert(MIN_INSYNC_REPLICAS.to_owned(), n.to_string());
        }
    }
    Ok(out)
}

/// The topic config of how many in-sync copies a write needs (`topics.min_insync_replicas`).
const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

const TIMEOUT: Duration = Duration::from_secs(30);

/// The topic config of the largest record a topic takes.
const MAX_MESSAGE_BYTES: &str = "max.message.bytes";

/// The declared topics ([`declared`]), each stream's valid and curated topics'
/// `max.message.bytes` (the stream's `max_message_bytes`) bounded by the broker's
/// `message.max.bytes`, so a managed service does not refuse the setting and downstream
/// consumers sized for the broker's limit read every record (larger ones go by claim-check).
///
/// # Errors
/// Declaration or Kafka errors.
pub async fn declared_for(cfg: &Config, kafka: &Kafka) -> Result<Vec<TopicSpec>, TopicsError> {
    let mut specs = declared(cfg)?;
    let Some(broker_max) = broker_message_max_bytes(kafka).await? else {
        return Ok(specs);
    };
    // Only the streams' topics: the DLQ's declared 8 MiB is deliberate (it keeps whole pages).
    let names = TopicNames::from_config(cfg);
    let per_stream: std::collections::BTreeSet<String> = cfg
        .sources
        .iter()
        .flat_map(|s| {
            s.streams.iter().flat_map(|st| {
                [
                    names.valid(&s.name, &st.name),
                    names.curated(&s.name, &st.name),
                ]
            })
        })
        .collect();
    for spec in specs.iter_mut().filter(|s| per_stream.contains(&s.name)) {
        let Some(v) = spec.config.get_mut(MAX_MESSAGE_BYTES) else {
            continue;
        };
        if v.parse::<usize>().is_ok_and(|n| n > broker_max) {
            tracing::info!(
                topic = %spec.name,
                declared = %v,
                broker_max,
                "max.message.bytes bounded by the broker's message.max.bytes; larger records go by claim-check"
            );
            *v = broker_max.to_string();
        }
    }
    Ok(specs)
}

/// The broker's `message.max.bytes` (of the first broker the metadata names); `None` when the
/// broker does not say.
///
/// # Errors
/// Kafka errors.
pub async fn broker_message_max_bytes(kafka: &Kafka) -> Result<Option<usize>, TopicsError> {
    let admin = kafka.admin()?;
    let md = metadata(kafka).await?;
    let Some(id) = md
        .brokers()
        .iter()
        .map(rdkafka::metadata::MetadataBroker::id)
        .min()
    else {
        return Ok(None);
    };
    let described = admin
        .describe_configs(
            &[ResourceSpecifier::Broker(id)],
            &AdminOptions::new().request_timeout(Some(TIMEOUT)),
        )
        .await?;
    Ok(described.into_iter().next().and_then(|r| {
        r.ok()?
            .get("message.max.bytes")?
            .value
            .as_deref()?
            .parse()
            .ok()
    }))
}

/// The cluster's metadata (every topic), fetched off the async runtime.
async fn metadata(kafka: &Kafka) -> Result<rdkafka::metadata::Metadata, TopicsError> {
    let admin_client = kafka.admin()?;
    Ok(
        tokio::task::spawn_blocking(move || admin_client.inner().fetch_metadata(None, TIMEOUT))
            .await
            .map_err(|_| KafkaError::Canceled)??,
    )
}

/// Compares the declarations with the broker.
///
/// # Errors
/// Kafka errors.
pub async fn plan(kafka: &Kafka, specs: &[TopicSpec]) -> Result<Vec<Change>, TopicsError> {
    let admin = kafka.admin()?;
    let md = metadata(kafka).await?;
    let existing: BTreeMap<String, i32> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
        .collect();
    let mut changes = Vec::new();
    let present: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| existing.contains_key(&s.name))
        .collect();
    for s in specs.iter().filter(|s| !existing.contains_key(&s.name)) {
        changes.push(Change::Create(s.clone()));
    }
    if present.is_empty() {
        return Ok(changes);
    }
    let resources: Vec<ResourceSpecifier<'_>> = present
        .iter()
        .map(|s| ResourceSpecifier::Topic(&s.name))
        .collect();
    let described = admin
        .describe_configs(
            &resources,
            &AdminOptions::new().request_timeout(Some(TIMEOUT)),
        )
        .await?;
    for (spec, res) in present.iter().zip(described) {
        let res = res.map_err(|code| TopicsError::Operation {
            op: "describe",
            topic: spec.name.clone(),
            code,
        })?;
        let entries = res.entry_map();
        for (k, v) in &spec.config {
            let cur = entries.get(k.as_str()).and_then(|e| e.value.clone());
            if cur.as_deref() != Some(v.as_str()) {
                changes.push(Change::SetConfig {
                    topic: spec.name.clone(),
                    key: k.clone(),
                    from: cur,
                    to: v.clone(),
                });
            }
        }
        let actual = existing[&spec.name];
        if spec.partitions > actual {
            changes.push(Change::AddPartitions {
                topic: spec.name.clone(),
                from: actual,
                to: spec.partitions,
            });
        } else if spec.partitions < actual {
            changes.push(Change::FewerPartitionsDeclared {
                topic: spec.name.clone(),
                actual,
                declared: spec.partitions,
            });
        }
    }
    Ok(changes)
}

/// Applies a plan. Config changes of one topic are applied together with all of that topic's
/// declared configs (AlterConfigs replaces a topic's dynamic configs as a set).
///
/// # Errors
/// The first failing operation.
pub async fn apply(
    kafka: &Kafka,
    specs: &[TopicSpec],
    changes: &[Change],
    replication: i32,
) -> Result<(), TopicsError> {
    let admin = kafka.admin()?;
    let opts = AdminOptions::new()
        .request_timeout(Some(TIMEOUT))
        .operation_timeout(Some(TIMEOUT));
    let creates: Vec<NewTopic<'_>> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Create(t) => Some(t.config.iter().fold(
                NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(replication)),
                |nt, (k, v)| nt.set(k, v),
            )),
            _ => None,
        })
        .collect();
    if !creates.is_empty() {
        for r in admin.create_topics(&creates, &opts).await? {
            if let Err((topic, code)) = r
                && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
            {
                return Err(TopicsError::Operation {
                    op: "create",
                    topic,
                    code,
                });
            }
        }
        let names: Vec<String> = creates.iter().map(|t| t.name.to_owned()).collect();
        wait_visible(kafka, names).await?;
    }
    let mut altered: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::SetConfig { topic, .. } => Some(topic.as_str()),
            _ => None,
        })
        .collect();
    altered.dedup();
    if !altered.is_empty() {
        let alters: Vec<AlterConfig<'_>> = altered
            .iter()
            .filter_map(|t| specs.iter().find(|s| s.name == *t))
            .map(|s| {
                s.config.iter().fold(
                    AlterConfig::new(ResourceSpecifier::Topic(&s.name)),
                    |a, (k, v)| a.set(k, v),
                )
            })
            .collect();
        for r in admin.alter_configs(&alters, &opts).await? {
            if let Err((spec, code)) = r {
                return Err(TopicsError::Operation {
                    op: "alter",
                    topic: format!("{spec:?}"),
                    code,
                });
            }
        }
    }
    let parts: Vec<NewPartitions<'_>> = changes
        .iter()
        .filter_map(|c| match c {
            Change::AddPartitions { topic, to, .. } => {
                Some(NewPartitions::new(topic, *to as usize))
            }
            _ => None,
        })
        .collect();
    if !parts.is_empty() {
        for r in admin.create_partitions(&parts, &opts).await? {
            if let Err((topic, code)) = r {
                return Err(TopicsError::Operation {
                    op: "add partitions",
                    topic,
                    code,
                });
            }
        }
    }
    Ok(())
}

/// Waits until freshly created topics show up in the broker's metadata with leaders, so the
/// caller (and a second `apply`) sees them.
async fn wait_visible(kafka: &Kafka, names: Vec<String>) -> Result<(), TopicsError> {
    let admin = kafka.admin()?;
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let md = admin.inner().fetch_metadata(None, TIMEOUT)?;
            let ready = names.iter().all(|n| {
                md.topics().iter().any(|t| {
                    t.name() == n
                        && t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            });
            if ready {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(TopicsError::NotVisible {
                    topics: names.join(","),
                    after: TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .map_err(|_| KafkaError::Canceled)?
}

/// Plans and applies; returns what changed (empty when the broker already matched).
///
/// # Errors
/// Declaration or Kafka errors.
pub async fn ensure(cfg: &Config, kafka: &Kafka) -> Result<Vec<Change>, TopicsError> {
    let specs = declared_for(cfg, kafka).await?;
    let changes = plan(kafka, &specs).await?;
    let actionable: Vec<Change> = changes
        .iter()
        .filter(|c| !matches!(c, Change::FewerPartitionsDeclared { .. }))
        .cloned()
        .collect();
    if !actionable.is_empty() {
        apply(kafka, &specs, &actionable, cfg.topics.replication_factor).await?;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retried() {
        use rdkafka::types::RDKafkaErrorCode as C;
        let op = |code| TopicsError::Operation {
            op: "create",
            topic: "t".into(),
            code,
        };
        assert!(op(C::RequestTimedOut).is_retriable());
        assert!(op(C::NotController).is_retriable());
        assert!(!op(C::InvalidConfig).is_retriable());
        assert!(!op(C::TopicAuthorizationFailed).is_retriable());
        assert!(TopicsError::Kafka(KafkaError::AdminOp(C::AllBrokersDown)).is_retriable());
        assert!(
            TopicsError::NotVisible {
                topics: "t".into(),
                after: Duration::from_secs(30)
            }
            .is_retriable()
        );
        assert!(
            !TopicsError::Declarations {
                path: "topics.toml".into(),
                message: "bad".into()
            }
            .is_retriable()
        );
    }

    #[test]
    fn names() {
        let n = TopicNames::new("intake");
        assert_eq!(n.valid("sim", "orders"), "intake.sim.orders.valid");
        assert_eq!(n.curated("sim", "orders"), "intake.sim.orders");
        assert_eq!(n.subject("sim", "orders"), "intake.sim.orders.valid-value");
        assert_eq!(
            n.parse_valid("intake.sim.orders.valid"),
            Some(("sim", "orders"))
        );
        assert_eq!(n.parse_valid("intake.sim.orders"), None);
    }

    /// A config with `topics` lines in its `[topics]` table and one source, `sim`, of one
    /// stream, `orders`.
    fn sim_orders(topics: &str) -> Config {
        crate::testing::config(&format!(
            "[topics]\n{topics}\n{}{}",
            crate::testing::source_toml("sim", "http://x", ""),
            crate::testing::stream_toml("orders", "/o", "")
        ))
    }

    #[test]
    fn declarations_expand_per_stream() {
        let cfg = sim_orders("prefix = \"t1\"\ndir = \"topics\"");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("topics/topics.toml");
        let specs = declared_from(&path, &cfg).unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "t1.landing",
                "t1.cursors",
                "t1.dlq",
                "t1.dlq-index",
                "t1.jobs",
                "t1.quota",
                "t1.tokens",
                "t1.sim.orders.valid",
                "t1.sim.orders"
            ]
        );
        assert_eq!(specs[8].config["cleanup.policy"], "compact");
        // The owner of landing partition p writes dlq-index partition p.
        assert_eq!(specs[0].partitions, specs[3].partitions);
        assert_eq!(specs[3].config["cleanup.policy"], "compact");
        // The owner of quota partition p writes tokens partition p.
        assert_eq!(specs[5].partitions, specs[6].partitions);
        assert_eq!(specs[6].config["cleanup.policy"], "compact");
        for s in &specs[7..] {
            assert_eq!(s.config["max.message.bytes"], "1048588", "{}", s.name);
        }
        assert!(
            specs
                .iter()
                .all(|s| !s.config.contains_key(MIN_INSYNC_REPLICAS))
        );
    }

    #[test]
    fn min_insync_replicas_goes_on_every_topic_and_fits_the_replication() {
        let cfg = |rf: i32, isr: i32| {
            sim_orders(&format!(
                "replication_factor = {rf}\nmin_insync_replicas = {isr}"
            ))
        };
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("topics/topics.toml");
        let specs = declared_from(&path, &cfg(3, 2)).unwrap();
        assert_eq!(specs.len(), 9);
        for s in &specs {
            assert_eq!(s.config[MIN_INSYNC_REPLICAS], "2", "{}", s.name);
        }
        for (rf, isr) in [(1, 2), (3, 0)] {
            let err = declared_from(&path, &cfg(rf, isr)).unwrap_err().to_string();
            assert!(err.contains("topics.min_insync_replicas"), "{err}");
        }
    }
}
