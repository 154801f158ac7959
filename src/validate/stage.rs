//! The validate stage on Kafka: `intake.landing` → `intake.<source>.<stream>.valid` and
//! `intake.dlq`, exactly once.
//!
//! [`run`] starts one dedicated thread that drives the shared exactly-once loop
//! ([`crate::kafka::eos`]) with this module's [`Processor`]: every landing record's outputs
//! go into the loop's open transaction, which also carries the landing offsets, so a crash at
//! any point leaves either all of a batch's outputs committed with its offsets, or none.
//!
//! # What each landing record becomes
//!
//! | `intake.kind`        | output |
//! |----------------------|--------|
//! | `page`, `batch`      | split into records ([`Splitter`], raw bytes kept); each valid one → the valid topic, Avro in the Confluent wire format, keyed by primary key; each bad one → the DLQ with its raw bytes. A page that cannot be split → the DLQ whole. |
//! | `blob-ref`           | the claim-checked page is read from the blob store, then as `page`; a blob that cannot be read (missing, sha256 mismatch, foreign) → the DLQ as `blob_unreadable`, value = the reference |
//! | `sync-begin`, `sync-end` | one copy to **every** partition of the stream's valid topic (landing key and value), so dedup sees the marker on each partition it owns |
//! | `event`              | one webhook event: `created`/`updated` validate `data` as a record (version = `seq`); `deleted` → a null value keyed by `entity_id`, `intake.op = delete` |
//!
//! A `batch` is taken as a page of its stream (same record selector); serve, which lands them,
//! is not written yet.
//!
//! # Bad data versus a broken system
//!
//! Bad data never stops the stage: it goes to the DLQ with `dlq.error.kind` and a detail naming
//! the field. A subject that is not registered is bad data too (`no_schema`; replay after
//! registering), unless the stream's drift policy is `evolve`: then a first schema is inferred
//! from the record and registered. A registry or blob store that cannot be reached is not: the batch is aborted,
//! the input rewound, and retried after a pause that grows to 5 s while the outage lasts.
//!
//! # Sizes
//!
//! A record that would exceed its valid or curated topic's `max.message.bytes` (read from the
//! broker at start, bounded by the producer's `message.max.bytes`; `intake topics apply` sets
//! both to the stream's `max_message_bytes`) goes by claim-check: the whole framed Avro record
//! is stored in the blob store under its sha256 (so a retried batch rewrites the same object),
//! and the valid topic gets a small [`ClaimCheck`] record instead — registered schema, same key,
//! same `intake.version` and `intake.hash` (the full record's) and the `intake.blob` header —
//! which dedup compares, forwards and tombstones like any other. Only a record
//! over `blob.max_record_bytes` (or whose reference itself does not fit) goes to the DLQ as
//! `too_large`, with the limit in its detail.
//!
//! # Scaling and restarts
//!
//! Every process of the group `<group_prefix>-validate` is named by its instance id
//! (`INTAKE_INSTANCE_ID`): `<group>-<instance>` is both its transactional id and its static
//! group membership (`group.instance.id`). A restarted process thus fences its predecessor's
//! producer (aborting the open transaction at once) and takes its partitions back without a
//! rebalance; a process that does not come back loses its partitions to the others after the
//! session timeout. Processes running at the same time need distinct instance ids. A process
//! restarted between the two rounds of a cooperative rebalance would strand the partitions it
//! was giving up; the loop's group watch ([`crate::kafka::group`]) makes the group rebalance.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apache_avro::Schema;
use bytes::Bytes;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use serde_json::Value as Json;

use super::Validator;
use super::convert::Capture;
use super::counts::Tally;
use super::dlq::{self, Against, Rejection};
use super::error::{DriftKind, RecordError};
use super::infer;
use super::key::{self, KeyFields};
use super::split::PointerError;
use super::split::{Splitter, parse_version};
use crate::blob::{BlobError, BlobRef, BlobStore, ClaimCheck};
use crate::config::{Config, ConfigError, DriftPolicy, KeyFormat, SubjectStrategy};
use crate::dedup::merge::content_hash;
use crate::headers::{self, Headers, Kind};
use crate::kafka::eos::{self, LoopConfig, Processor, Sink, Tp};
use crate::kafka::{ErrorClass, Kafka, Outgoing, classify, reader};
use crate::registry::{self, Latest, Registry, RegistryError};
use crate::topics::TopicNames;

/// Most landing records per transaction (a page is one record; it may hold hundreds).
const MAX_BATCH: usize = 100;
/// Longest a transaction stays open collecting landing records. Each commit flushes the
/// producer and writes a marker to every output partition it touched (12 for three streams),
/// and processing stops meanwhile; 500 ms (as `scripts/bench`'s ProducerPerformance baseline
/// uses) keeps that cost a small share of the time.
const LINGER: Duration = Duration::from_millis(500);
/// The producer's `linger.ms` (the default of `Kafka::txn_producer` is 5): one landing page
/// becomes hundreds of ~1 KiB records spread over every partition of a valid topic, so 5 ms
/// sends batches of a few records each and the broker's per-request work dominates. A commit
/// flushes whatever lingers, so this adds no latency to a transaction.
const PRODUCER_LINGER_MS: &str = "50";
/// The most headers of a valid record.
const VALID_HEADERS: usize = 8;
/// Room for what a size estimate from key, value and header bytes leaves out (record and
/// batch framing, varints, timestamps).
const FRAMING: usize = 512;
/// The broker's default `message.max.bytes`, used when a topic's limit cannot be read.
const BROKER_DEFAULT_MAX: usize = 1_048_588;
/// The longest pause between retries after a system failure.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Metadata and admin calls wait this long.
const META_TIMEOUT: Duration = Duration::from_secs(10);
/// `intake.hash` of a delete (no content).
const NO_HASH: &str = "0000000000000000";

/// Why the stage could not run.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The configuration or a secret.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A stream's JSON pointers cannot split its pages.
    #[error("config of stream `{stream}`: {source}")]
    Pointer {
        /// `source/stream`.
        stream: String,
        /// What is wrong.
        source: PointerError,
    },
    /// The registry client cannot be built.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The blob store cannot be opened.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// Kafka clients cannot be built, or the producer cannot be (re)initialised.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The stage thread could not start or died.
    #[error("validate thread: {0}")]
    Thread(String),
}

/// Runs the validate stage until `shutdown` resolves, then commits the open transaction and
/// leaves the group.
///
/// # Errors
/// Configuration errors, and Kafka failures the loop cannot recover from (a producer that
/// cannot be initialised). Bad data and registry outages are never errors here.
pub async fn run(
    cfg: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ValidateError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("validate".into())
            .spawn(move || {
                let _ = tx.send(run_blocking(&cfg, &stop));
            })
            .map_err(|e| ValidateError::Thread(e.to_string()))?
    };
    tokio::pin!(shutdown);
    let result = tokio::select! {
        r = &mut rx => r,
        () = &mut shutdown => {
            stop.store(true, Ordering::Relaxed);
            rx.await
        }
    };
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    result.unwrap_or_else(|_| Err(ValidateError::Thread("the validate thread panicked".into())))
}

/// The stage on the calling thread, until `stop` is set.
fn run_blocking(cfg: &Config, stop: &AtomicBool) -> Result<(), ValidateError> {
    // Registry and blob lookups are async; this thread owns a small runtime to block on them,
    // so the stage works under any caller (current-thread runtime, or none).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ValidateError::Thread(e.to_string()))?;
    let names = TopicNames::from_config(cfg);
    let plans = Plans::from_config(cfg, &names)?;
    let base = Kafka::new(&cfg.kafka)?;
    let limits = rt.block_on(Limits::read(&base, cfg, &names, &plans));
    let group = base.group("validate");
    let member = crate::kafka::txn::transactional_id(
        &cfg.kafka.group_prefix,
        crate::kafka::txn::Writer::Stage {
            stage: "validate",
            instance: &cfg.instance_id(),
        },
    );
    let kafka = base
        .clone()
        .with_producer_setting("linger.ms", PRODUCER_LINGER_MS);
    let registry = Registry::new(&cfg.registry)?;
    let blobs = BlobStore::open(&cfg.blob)?;
    let meta = base.metadata_consumer("validate-metadata")?;
    let loop_cfg = LoopConfig {
        group,
        topics: vec![names.landing()],
        // Static group membership, named like the transactional id: a restarted process takes
        // its partitions back at once instead of stalling the group until the session of its
        // killed predecessor times out.
        group_instance: Some(member.clone()),
        transactional_id: member,
        max_batch: MAX_BATCH,
        linger: LINGER,
    };
    let mut processor = Validate {
        landing: names.landing(),
        dlq: names.dlq(),
        plans,
        registry,
        blobs,
        rt,
        validators: HashMap::new(),
        mirrored: HashMap::new(),
        partitions: HashMap::new(),
        limits,
        meta,
        buf: Vec::with_capacity(64 * 1024),
        backoff: Duration::ZERO,
        jobs: names.jobs(),
        tally: Tally::default(),
        valid_counter: metrics::counter!(crate::telemetry::metric::VALIDATE_RECORDS, "outcome" => "valid"),
        prov: Provenance::default(),
        max_record_bytes: cfg.blob.max_record_bytes,
        claim_ids: HashMap::new(),
        key_codecs: HashMap::new(),
    };
    tracing::info!(group = %loop_cfg.group, transactional_id = %loop_cfg.transactional_id, landing = %processor.landing, "validate starting");
    eos::run(&kafka, &loop_cfg, &mut processor, stop)?;
    tracing::info!("validate stopped");
    Ok(())
}

/// How one configured stream is validated.
#[derive(Debug)]
struct StreamPlan {
    source: String,
    stream: String,
    /// `intake.<source>.<stream>.valid`.
    valid_topic: String,
    /// `<valid topic>-value`.
    subject: String,
    /// The curated topic, whose value subject downstream tools read (named by `strategy`):
    /// every schema validate uses is registered there too.
    curated_topic: String,
    strategy: SubjectStrategy,
    /// The primary key's field name (the last segment of its pointer), as a claim-check
    /// reference names it.
    key_field: String,
    /// With `key_format = "avro"`: the key fields, written as an Avro record (`None`: the key
    /// is the primary key's UTF-8 text).
    key: Option<KeyFields>,
    /// Pages: the stream's record selector, primary key and version pointers.
    pages: Splitter,
    /// Webhook events: the record is at the source's `webhook.record` (`/data`); the version
    /// is the event's `seq`.
    events: Splitter,
    drift: DriftPolicy,
    /// The stream's configuration (a first schema is named and keyed from it).
    config: crate::config::StreamConfig,
}

/// Where a source's webhook events keep their fields (JSON pointers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventShape {
    /// The entity id (the key of a delete).
    pub entity_id: String,
    /// The per-entity sequence number (the version).
    pub sequence: String,
    /// The stream name.
    pub stream: String,
}

impl Default for EventShape {
    fn default() -> Self {
        EventShape {
            entity_id: "/entity_id".into(),
            sequence: "/seq".into(),
            stream: "/stream".into(),
        }
    }
}

/// Every configured stream, by source then stream (looked up with `&str`, no allocation).
#[derive(Debug, Default)]
struct Plans {
    streams: HashMap<String, HashMap<String, Arc<StreamPlan>>>,
    events: HashMap<String, EventShape>,
}

impl Plans {
    fn from_config(cfg: &Config, names: &TopicNames) -> Result<Self, ValidateError> {
        let mut plans = Plans::default();
        for s in &cfg.sources {
            let shape = s
                .webhook
                .as_ref()
                .map_or_else(EventShape::default, |w| EventShape {
                    entity_id: w.entity_id.clone(),
                    sequence: w.sequence.clone(),
                    stream: w.stream_pointer.clone(),
                });
            plans.events.insert(s.name.clone(), shape);
            for st in &s.streams {
                let err = |source| ValidateError::Pointer {
                    stream: format!("{}/{}", s.name, st.name),
                    source,
                };
                let plan = StreamPlan {
                    source: s.name.clone(),
                    stream: st.name.clone(),
                    valid_topic: names.valid(&s.name, &st.name),
                    subject: names.subject(&s.name, &st.name),
                    curated_topic: names.curated(&s.name, &st.name),
                    strategy: cfg.registry.subject_strategy,
                    key_field: pointer_leaf(st.primary_key.first()),
                    key: match st.key_format {
                        KeyFormat::String => None,
                        KeyFormat::Avro => Some(KeyFields::new(&st.primary_key).map_err(err)?),
                    },
                    pages: Splitter::for_stream(st).map_err(err)?,
                    events: Splitter::new(
                        s.webhook.as_ref().map_or("/data", |w| w.record.as_str()),
                        st.primary_key.first(),
                        None,
                    )
                    .map_err(err)?,
                    drift: st.drift,
                    config: st.clone(),
                };
                plans
                    .streams
                    .entry(s.name.clone())
                    .or_default()
                    .insert(st.name.clone(), Arc::new(plan));
            }
        }
        Ok(plans)
    }

    fn get(&self, source: &str, stream: &str) -> Option<Arc<StreamPlan>> {
        self.streams.get(source)?.get(stream).cloned()
    }
}

/// Largest record each output topic takes.
#[derive(Debug, Clone)]
struct Limits {
    /// The producer's `message.max.bytes`.
    producer: usize,
    /// The DLQ's limit.
    dlq: usize,
    /// Per valid topic: the smaller of its own limit and its curated topic's (dedup forwards
    /// the value unchanged), bounded by the producer's.
    valid: HashMap<String, usize>,
}

impl Limits {
    /// Reads `max.message.bytes` of the DLQ and every valid and curated topic from the broker;
    /// a topic that cannot be described counts with the broker default.
    async fn read(kafka: &Kafka, cfg: &Config, names: &TopicNames, plans: &Plans) -> Limits {
        let pairs: Vec<(String, String)> = plans
            .streams
            .values()
            .flat_map(|m| {
                m.values()
                    .map(|p| (p.valid_topic.clone(), p.curated_topic.clone()))
            })
            .collect();
        let mut topics = vec![names.dlq()];
        for (v, c) in &pairs {
            topics.push(v.clone());
            topics.push(c.clone());
        }
        let read = describe_max_bytes(kafka, &topics).await;
        let limit_of = |t: &str| read.get(t).copied().unwrap_or(BROKER_DEFAULT_MAX);
        let producer = cfg
            .kafka
            .properties
            .get("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(crate::kafka::PRODUCER_MAX_MESSAGE_BYTES);
        let valid = pairs
            .iter()
            .map(|(v, c)| (v.clone(), limit_of(v).min(limit_of(c)).min(producer)))
            .collect();
        Limits {
            producer,
            dlq: limit_of(&topics[0]).min(producer),
            valid,
        }
    }

    fn valid(&self, topic: &str) -> usize {
        self.valid
            .get(topic)
            .copied()
            .unwrap_or(BROKER_DEFAULT_MAX.min(self.producer))
    }
}

async fn describe_max_bytes(kafka: &Kafka, topics: &[String]) -> HashMap<String, usize> {
    use rdkafka::admin::{AdminOptions, ResourceSpecifier};
    let mut out = HashMap::new();
    let admin = match kafka.admin() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build an admin client; assuming the broker's default message size limit");
            return out;
        }
    };
    let specs: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    match admin
        .describe_configs(
            &specs,
            &AdminOptions::new().request_timeout(Some(META_TIMEOUT)),
        )
        .await
    {
        Ok(results) => {
            for (topic, r) in topics.iter().zip(results) {
                let value = r
                    .ok()
                    .and_then(|r| r.get("max.message.bytes").and_then(|e| e.value.clone()));
                match value.and_then(|v| v.parse::<usize>().ok()) {
                    Some(v) => {
                        out.insert(topic.clone(), v);
                    }
                    None => tracing::warn!(
                        topic,
                        "cannot read max.message.bytes; assuming the broker default"
                    ),
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot describe topics; assuming the broker's default message size limit")
        }
    }
    out
}

/// The schema records of a stream are checked against, resolved once per page.
#[derive(Clone)]
enum SchemaState {
    /// The latest registered version, compiled.
    Ready(Active),
    /// Nothing usable is registered: every record is a `no_schema` dead letter (unless the
    /// subject is `absent` and the stream's drift policy is `evolve`: then a first schema is
    /// inferred from the record and registered).
    Missing {
        version: Option<u32>,
        why: Rejection,
        absent: bool,
    },
}

impl SchemaState {
    fn version(&self) -> Option<u32> {
        match self {
            SchemaState::Ready(a) => Some(a.version),
            SchemaState::Missing { version, .. } => *version,
        }
    }
}

/// A compiled registered schema.
#[derive(Clone)]
struct Active {
    id: u32,
    version: u32,
    schema: Arc<Schema>,
    validator: Arc<Validator>,
}

/// A failure that is not the data's fault.
#[derive(Debug)]
enum Fail {
    /// From the transaction's sink: the loop classifies it.
    Kafka(KafkaError),
    /// Registry, blob store or broker metadata unavailable: abort, pause, retry.
    System(String),
}

/// One record to validate.
struct Input<'a> {
    /// Its bytes as received.
    raw: &'a [u8],
    /// Primary key.
    key: &'a str,
    /// `intake.version`.
    version: Option<i64>,
    /// Position in the page (`None` for an event: the whole value is the record's envelope).
    index: Option<usize>,
    /// What the DLQ keeps if it is rejected: the record's bytes, or the whole event.
    dlq_value: &'a [u8],
}

/// The validate [`Processor`]. Stateless between landing records but for caches: compiled
/// validators per schema id (ids are immutable), partition counts per valid topic.
struct Validate {
    landing: String,
    dlq: String,
    plans: Plans,
    /// Latest versions cached for `registry.cache_ttl`, so new versions are picked up.
    registry: Registry,
    blobs: BlobStore,
    /// Blocks on registry and blob lookups from the loop's thread.
    rt: tokio::runtime::Runtime,
    validators: HashMap<u32, Result<Arc<Validator>, String>>,
    /// Per validate subject, the schema id last registered under its curated topic's subject
    /// too (see `mirror`).
    mirrored: HashMap<String, u32>,
    /// Partition counts, fetched once per topic (markers go to every partition).
    partitions: HashMap<String, i32>,
    limits: Limits,
    /// For metadata (partition counts) only; never subscribes.
    meta: BaseConsumer,
    /// The framed value being built (reused: one allocation for the process).
    buf: Vec<u8>,
    /// Pause before the retry of a batch that failed for a system reason; zero after success.
    backoff: Duration,
    /// `intake.jobs`: a job's landing record adds its counts there, in the same transaction.
    jobs: String,
    /// Outputs of the landing record being processed.
    tally: Tally,
    /// `intake_validate_records{outcome="valid"}`, resolved once: a counter looked up by name
    /// and labels for every record costs more than the rest of its bookkeeping.
    valid_counter: metrics::Counter,
    /// Provenance of the landing record being processed, shared by all of its records.
    prov: Provenance,
    /// `blob.max_record_bytes`: larger records are `too_large`, not claim-checked.
    max_record_bytes: usize,
    /// Per valid topic, the id of the claim-check schema registered for it and its curated
    /// topic (registered on first use).
    claim_ids: HashMap<String, u32>,
    /// Streams with `key_format = "avro"`: per valid topic and value schema id, the key
    /// schema derived from it, compiled, with its id (registered under both key subjects on
    /// first use), or why there is none.
    key_codecs: HashMap<String, HashMap<u32, Result<Arc<KeyCodec>, String>>>,
}

/// A stream's key schema, compiled, and its registry id.
struct KeyCodec {
    id: u32,
    validator: Validator,
}

/// The headers every valid record of one landing record carries alike: found once per landing
/// record instead of once per record (a page holds hundreds).
#[derive(Default)]
struct Provenance {
    /// `intake.origin`: landing topic/partition/offset.
    origin: String,
    fetched_at: Option<Vec<u8>>,
    sync_id: Option<Vec<u8>>,
    /// The version of the records of a version-less stream: the page's `intake.stamp`, or
    /// else its `intake.fetched_at` in microseconds (pushed batches, older landings).
    stamp: Option<i64>,
}

impl Provenance {
    fn of(msg: &BorrowedMessage<'_>) -> Self {
        let h = msg.headers();
        Self {
            origin: dlq::origin(msg.topic(), msg.partition(), msg.offset(), None),
            fetched_at: headers::get(h, headers::FETCHED_AT).map(<[u8]>::to_vec),
            sync_id: headers::get(h, headers::SYNC_ID).map(<[u8]>::to_vec),
            stamp: landing_stamp(h),
        }
    }
}

/// The stamp of a landing record (see [`Provenance::stamp`]).
fn landing_stamp<H: rdkafka::message::Headers>(h: Option<&H>) -> Option<i64> {
    headers::get_str(h, headers::STAMP)
        .and_then(|s| s.parse::<i64>().ok())
        .or_else(|| {
            let at = headers::get_str(h, headers::FETCHED_AT)?;
            i64::try_from(crate::validate::split::rfc3339_nanos(at)?.div_euclid(1_000)).ok()
        })
}

impl Processor for Validate {
    fn stage(&self) -> &'static str {
        "validate"
    }

    fn assigned(&mut self, _kafka: &Kafka, tps: &[Tp]) -> KafkaResult<()> {
        tracing::info!(partitions = ?tps, "landing partitions assigned");
        Ok(())
    }

    fn revoked(&mut self, tps: &[Tp]) {
        tracing::info!(partitions = ?tps, "landing partitions revoked");
    }

    fn process(&mut self, msg: &BorrowedMessage<'_>, sink: &mut Sink<'_>) -> KafkaResult<()> {
        self.tally = Tally::default();
        self.prov = Provenance::of(msg);
        let routed = self
            .route(msg, sink)
            .and_then(|()| self.tally.send(msg, &self.jobs, sink).map_err(Fail::Kafka));
        match routed {
            Ok(()) => {
                self.backoff = Duration::ZERO;
                Ok(())
            }
            Err(Fail::Kafka(e)) => Err(e),
            Err(Fail::System(why)) => {
                self.backoff = (self.backoff * 2).clamp(Duration::from_millis(200), MAX_BACKOFF);
                tracing::warn!(error = %why, partition = msg.partition(), offset = msg.offset(), retry_in_ms = self.backoff.as_millis() as u64, "system unavailable; aborting the batch to retry it");
                metrics::counter!(crate::telemetry::metric::ERRORS, "stage" => "validate", "class" => "system").increment(1);
                // Any non-fatal error makes the loop abort and rewind; the reason is logged above.
                Err(KafkaError::Canceled)
            }
        }
    }

    fn aborted(&mut self, _kafka: &Kafka, _tps: &[Tp]) {
        // Stateless: nothing to rebuild. Pause before the retry when a system is down, so an
        // outage is not hammered (the transaction is closed, so no timeout runs meanwhile).
        if !self.backoff.is_zero() {
            std::thread::sleep(self.backoff);
        }
    }
}

impl Validate {
    fn route(&mut self, msg: &BorrowedMessage<'_>, sink: &mut Sink<'_>) -> Result<(), Fail> {
        let h = msg.headers();
        let Some(kind) = headers::get(h, headers::KIND).and_then(Kind::parse) else {
            let why = Rejection::whole(
                DriftKind::NotAPage,
                format!("landing record without a known `{}` header", headers::KIND),
            );
            return self.dead_letter(msg, sink, msg.payload(), &why, None, None);
        };
        if kind == Kind::Event {
            return self.on_event(msg, sink);
        }
        let (Some(source), Some(stream)) = (
            headers::get_str(h, headers::SOURCE),
            headers::get_str(h, headers::STREAM),
        ) else {
            let why = Rejection::whole(
                DriftKind::NotAPage,
                format!(
                    "landing record without `{}` and `{}` headers",
                    headers::SOURCE,
                    headers::STREAM
                ),
            );
            return self.dead_letter(msg, sink, msg.payload(), &why, None, None);
        };
        let Some(plan) = self.plans.get(source, stream) else {
            let why = Rejection::whole(
                DriftKind::NoSchema,
                format!("stream `{source}/{stream}` is not in this process's configuration"),
            );
            return self.dead_letter(msg, sink, msg.payload(), &why, None, None);
        };
        match kind {
            Kind::Page | Kind::Batch => {
                self.on_page(msg, &plan, msg.payload().unwrap_or_default(), sink)
            }
            Kind::BlobRef => match self.read_blob(msg) {
                Ok(page) => self.on_page(msg, &plan, &page, sink),
                Err(Ok(why)) => {
                    let against = Against {
                        subject: &plan.subject,
                        version: None,
                    };
                    self.dead_letter(msg, sink, msg.payload(), &why, Some(against), None)
                }
                Err(Err(fail)) => Err(fail),
            },
            Kind::SyncBegin | Kind::SyncEnd => self.on_marker(msg, &plan, sink),
            Kind::Event => unreachable!("handled above"),
        }
    }

    /// A page (inline or read from the blob store): every record to the valid topic or the DLQ.
    fn on_page(
        &mut self,
        msg: &BorrowedMessage<'_>,
        plan: &StreamPlan,
        page: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<(), Fail> {
        let elements = match plan.pages.elements(page) {
            Ok(elements) => elements,
            Err(e) => {
                // The page as a whole: the DLQ keeps the landing value (for a blob-ref, the reference).
                let against = Against {
                    subject: &plan.subject,
                    version: None,
                };
                return self.dead_letter(msg, sink, msg.payload(), &e.into(), Some(against), None);
            }
        };
        if elements.is_empty() {
            return Ok(());
        }
        let mut schema = self.schema(plan)?;
        let names = plan.pages.top_members();
        let mut capture = Capture::new(&names);
        for element in elements {
            // Encoded first: the one pass also notes where the key and version are, so the
            // record is not scanned again for them (a record it cannot encode is, below).
            let encoded = match &schema {
                SchemaState::Ready(active) => {
                    Some(self.encode_str(active, element.raw, &mut capture))
                }
                SchemaState::Missing { .. } => None,
            };
            let top = encoded.as_ref().and_then(|_| capture.spans(element.raw));
            match plan.pages.record(element, top) {
                Ok(r) if r.version.is_none() && self.prov.stamp.is_none() => {
                    // A version-less stream's record takes its page's stamp; without one there
                    // is nothing to order it by.
                    let why = Rejection::whole(
                        DriftKind::BadVersion,
                        format!(
                            "the stream has no version pointer and the landing record has no `{}` or `{}` to order it by",
                            headers::STAMP,
                            headers::FETCHED_AT
                        ),
                    );
                    let against = Against {
                        subject: &plan.subject,
                        version: schema.version(),
                    };
                    self.dead_letter(
                        msg,
                        sink,
                        Some(r.bytes()),
                        &why,
                        Some(against),
                        Some(r.index),
                    )?;
                }
                Ok(r) if crate::faults::hit(crate::faults::Fault::ValidateSkip) => {
                    tracing::warn!(
                        fault = crate::faults::Fault::ValidateSkip.name(),
                        origin = %self.prov.origin,
                        key = %r.key,
                        "deliberate fault: a record dropped"
                    );
                }
                Ok(r) => {
                    let input = Input {
                        raw: r.bytes(),
                        key: &r.key,
                        version: r.version.or(self.prov.stamp),
                        index: Some(r.index),
                        dlq_value: r.bytes(),
                    };
                    self.on_record(msg, plan, &mut schema, &input, encoded, sink)?;
                }
                Err(bad) => {
                    let against = Against {
                        subject: &plan.subject,
                        version: schema.version(),
                    };
                    self.dead_letter(
                        msg,
                        sink,
                        Some(bad.bytes()),
                        &(&bad.error).into(),
                        Some(against),
                        Some(bad.index),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// One record: validate (evolving the schema if the stream allows it) and route. `encoded`
    /// is the outcome of [`Validate::encode`] with the current schema, if the caller did that.
    fn on_record(
        &mut self,
        msg: &BorrowedMessage<'_>,
        plan: &StreamPlan,
        schema: &mut SchemaState,
        input: &Input<'_>,
        encoded: Option<Result<(), RecordError>>,
        sink: &mut Sink<'_>,
    ) -> Result<(), Fail> {
        let checked = match schema.clone() {
            SchemaState::Missing {
                absent: true, why, ..
            } if plan.drift == DriftPolicy::Evolve => match self.first_schema(plan, input.raw)? {
                Some(first) => {
                    *schema = SchemaState::Ready(first.clone());
                    self.encode(&first, input.raw)
                        .map(|()| first)
                        .map_err(Rejection::from)
                }
                None => Err(why),
            },
            SchemaState::Missing { why, .. } => Err(why),
            SchemaState::Ready(active) => {
                match encoded.unwrap_or_else(|| self.encode(&active, input.raw)) {
                    Ok(()) => Ok(active),
                    Err(e) if e.kind.is_evolvable() && plan.drift == DriftPolicy::Evolve => {
                        match self.evolve(plan, &active, input.raw, &e)? {
                            Some(evolved) => {
                                *schema = SchemaState::Ready(evolved.clone());
                                self.encode(&evolved, input.raw)
                                    .map(|()| evolved)
                                    .map_err(Rejection::from)
                            }
                            None => Err(e.into()),
                        }
                    }
                    Err(e) => Err(e.into()),
                }
            }
        };
        let against = Against {
            subject: &plan.subject,
            version: schema.version(),
        };
        match checked {
            Ok(active) => {
                let key: Cow<'_, [u8]> = if plan.key.is_some() {
                    match self.avro_key(plan, &active, input.raw)? {
                        Ok(k) => Cow::Owned(k),
                        Err(why) => return self.reject(msg, sink, input, &why, against),
                    }
                } else {
                    Cow::Borrowed(input.key.as_bytes())
                };
                self.send_valid(msg, plan, &active, input, &key, sink)
            }
            Err(why) => self.reject(msg, sink, input, &why, against),
        }
    }

    /// The key schema of a stream with `key_format = "avro"` for the value schema `active`:
    /// derived, compiled and registered under both key subjects once per value schema id.
    /// `Ok(Err(_))`: no key schema can be made (the reason, for the DLQ); `Err`: the registry
    /// is down (the batch is retried).
    fn key_codec(
        &mut self,
        plan: &StreamPlan,
        active: &Active,
    ) -> Result<Result<Arc<KeyCodec>, String>, Fail> {
        if let Some(c) = self
            .key_codecs
            .get(plan.valid_topic.as_str())
            .and_then(|m| m.get(&active.id))
        {
            return Ok(c.clone());
        }
        let codec = match compile_key_schema(&active.schema, &plan.config.primary_key) {
            Err(e) => Err(e),
            Ok((text, validator)) => match self.rt.block_on(registry::apply_key(
                &self.registry,
                plan.strategy,
                &plan.valid_topic,
                &plan.curated_topic,
                &text,
            )) {
                Ok((id, _)) => Ok(Arc::new(KeyCodec { id, validator })),
                Err(
                    e @ (RegistryError::Incompatible { .. } | RegistryError::InvalidSchema { .. }),
                ) => Err(e.to_string()),
                Err(e) => {
                    return Err(Fail::System(format!(
                        "registering the key schema of `{}`: {e}",
                        plan.valid_topic
                    )));
                }
            },
        };
        if let Err(e) = &codec {
            tracing::warn!(source = %plan.source, stream = %plan.stream, value_schema_id = active.id, error = %e,
                "no Avro key schema for this value schema: its records go to the DLQ");
        }
        self.key_codecs
            .entry(plan.valid_topic.clone())
            .or_default()
            .insert(active.id, codec.clone());
        Ok(codec)
    }

    /// The Confluent-framed Avro key of a record (`key_format = "avro"`) from its raw JSON.
    /// `Ok(Err(_))`: a key field is absent, null or of the wrong type, or no key schema can
    /// be made (for the DLQ, naming the field); `Err`: the registry is down.
    fn avro_key(
        &mut self,
        plan: &StreamPlan,
        active: &Active,
        raw: &[u8],
    ) -> Result<Result<Vec<u8>, Rejection>, Fail> {
        let Some(fields) = &plan.key else {
            return Ok(Err(Rejection::whole(
                DriftKind::MissingKey,
                "the stream has no Avro key fields",
            )));
        };
        let codec = match self.key_codec(plan, active)? {
            Ok(c) => c,
            Err(e) => {
                return Ok(Err(Rejection::whole(
                    DriftKind::NoSchema,
                    format!("key_format = \"avro\": {e}"),
                )));
            }
        };
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(e) => {
                return Ok(Err(Rejection::whole(
                    DriftKind::NotUtf8,
                    format!("invalid UTF-8 at byte offset {}", e.valid_up_to()),
                )));
            }
        };
        let values = match fields.raw_values(text) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e.into())),
        };
        Ok(encode_key(&codec, &fields.json(&values)))
    }

    /// `self.buf` = the record in the Confluent wire format.
    fn encode(&mut self, active: &Active, raw: &[u8]) -> Result<(), RecordError> {
        self.frame(active);
        active.validator.encode_raw_into(raw, &mut self.buf)
    }

    /// [`Validate::encode`] for a record split from a page (so UTF-8), noting members on the
    /// way (see [`Validator::encode_str_into`]).
    fn encode_str(
        &mut self,
        active: &Active,
        raw: &str,
        capture: &mut Capture<'_>,
    ) -> Result<(), RecordError> {
        self.frame(active);
        active
            .validator
            .encode_str_into(raw, &mut self.buf, capture)
    }

    /// `self.buf` = the Confluent header (magic 0, schema id big-endian), written in place: no
    /// frame per record.
    fn frame(&mut self, active: &Active) {
        self.buf.clear();
        self.buf.push(0);
        self.buf.extend_from_slice(&active.id.to_be_bytes());
    }

    /// Sends `self.buf` (already encoded) to the stream's valid topic, or the record to the DLQ
    /// as `too_large` if the topic cannot take it.
    fn send_valid(
        &mut self,
        msg: &BorrowedMessage<'_>,
        plan: &StreamPlan,
        active: &Active,
        input: &Input<'_>,
        key: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<(), Fail> {
        let mut version = itoa::Buffer::new();
        let hdrs = Headers::with_capacity(VALID_HEADERS)
            .with(headers::SOURCE, &plan.source)
            .with(headers::STREAM, &plan.stream)
            .with(headers::OP, "upsert")
            .with_opt(headers::VERSION, input.version.map(|v| version.format(v)))
            .with(headers::HASH, hash_hex(input.raw))
            .with(headers::ORIGIN, &self.prov.origin)
            .with_opt(headers::FETCHED_AT, self.prov.fetched_at.as_deref())
            .with_opt(headers::SYNC_ID, self.prov.sync_id.as_deref());
        let size = key.len() + self.buf.len() + hdrs.bytes() + FRAMING;
        let limit = self.limits.valid(&plan.valid_topic);
        let against = Against {
            subject: &plan.subject,
            version: Some(active.version),
        };
        let sent = if size > limit {
            let reference =
                match self.claim_check(plan, active, input, key.len() + hdrs.bytes(), limit)? {
                    Ok(r) => r,
                    Err(why) => return self.reject(msg, sink, input, &why, against),
                };
            let (value, blob) = reference;
            // `intake.blob` marks the reference (`intake.kind` is for sync markers here).
            let hdrs = hdrs.with(headers::BLOB, blob.header_value()).build();
            sink.send(Outgoing {
                topic: &plan.valid_topic,
                key: Some(key),
                payload: Some(&value),
                headers: hdrs,
                partition: None,
            })
        } else {
            sink.send(Outgoing {
                topic: &plan.valid_topic,
                key: Some(key),
                payload: Some(&self.buf),
                headers: hdrs.build(),
                partition: None,
            })
        };
        match sent {
            Ok(()) => {
                self.valid_counter.increment(1);
                self.tally.valid();
                Ok(())
            }
            Err(e) if classify(&e) == ErrorClass::BadRecord => {
                let why = Rejection::whole(
                    DriftKind::TooLarge,
                    format!(
                        "the producer refused the Avro record for `{}`: {e}",
                        plan.valid_topic
                    ),
                );
                self.reject(msg, sink, input, &why, against)
            }
            Err(e) => Err(Fail::Kafka(e)),
        }
    }

    /// Stores the record in `self.buf` (framed Avro over the topic's `limit`) in the blob store
    /// and returns its framed [`ClaimCheck`] reference (`key_and_header_bytes`: what the key
    /// and headers add to the message). `Ok(Err(_))`: the record cannot be
    /// stored at all (`too_large`, naming the limit); `Err`: the registry or blob store is
    /// down (the batch is retried).
    fn claim_check(
        &mut self,
        plan: &StreamPlan,
        active: &Active,
        input: &Input<'_>,
        key_and_header_bytes: usize,
        limit: usize,
    ) -> Result<Result<(Vec<u8>, BlobRef), Rejection>, Fail> {
        if input.raw.len() > self.max_record_bytes {
            return Ok(Err(Rejection::whole(
                DriftKind::TooLarge,
                format!(
                    "the record is {} bytes; blob.max_record_bytes (the largest record stored by claim-check) is {}",
                    input.raw.len(),
                    self.max_record_bytes
                ),
            )));
        }
        let claim_id = self.claim_check_id(plan)?;
        let blob = match self
            .rt
            .block_on(self.blobs.put(Bytes::copy_from_slice(&self.buf)))
        {
            Ok(b) => b,
            Err(e) => {
                return Err(Fail::System(format!(
                    "storing a {} byte record of `{}` by claim-check: {e}",
                    self.buf.len(),
                    plan.valid_topic
                )));
            }
        };
        let reference = ClaimCheck {
            key: match &plan.key {
                // Every key field by name (the record's key was made from them just before).
                Some(fields) => std::str::from_utf8(input.raw)
                    .ok()
                    .and_then(|t| fields.raw_values(t).ok())
                    .map(|v| fields.texts(&v).into_iter().collect())
                    .unwrap_or_default(),
                None => [(plan.key_field.clone(), input.key.to_owned())].into(),
            },
            version: input.version,
            blob: blob.clone(),
            schema_id: active.id,
        };
        let value = crate::registry::wire::frame(claim_id, &reference.to_datum());
        // The reference carries two more headers than an inline record.
        let size = value.len() + key_and_header_bytes + blob.uri.len() + 160 + FRAMING;
        if size > limit {
            return Ok(Err(Rejection::whole(
                DriftKind::TooLarge,
                format!(
                    "even the claim-check reference is {size} bytes; `{}` takes at most {limit} (max_message_bytes)",
                    plan.valid_topic
                ),
            )));
        }
        metrics::counter!(crate::telemetry::metric::VALIDATE_RECORDS, "outcome" => "claim_checked")
            .increment(1);
        Ok(Ok((value, blob)))
    }

    /// The id of the claim-check schema for a stream, registered under the claim-check subject
    /// of its valid and of its curated topic on first use (the same text, so the same id).
    fn claim_check_id(&mut self, plan: &StreamPlan) -> Result<u32, Fail> {
        if let Some(id) = self.claim_ids.get(&plan.valid_topic) {
            return Ok(*id);
        }
        let mut id = 0;
        for topic in [&plan.valid_topic, &plan.curated_topic] {
            let subject = crate::blob::claim_check_subject(plan.strategy, topic);
            match self.rt.block_on(
                self.registry
                    .register(&subject, crate::blob::CLAIM_CHECK_SCHEMA),
            ) {
                Ok(r) => id = r.id,
                Err(e) => {
                    return Err(Fail::System(format!(
                        "registering the claim-check schema under `{subject}`: {e}"
                    )));
                }
            }
        }
        self.claim_ids.insert(plan.valid_topic.clone(), id);
        Ok(id)
    }

    /// One record to the DLQ: its own bytes (or the whole event), with its index in the page.
    fn reject(
        &mut self,
        msg: &BorrowedMessage<'_>,
        sink: &mut Sink<'_>,
        input: &Input<'_>,
        why: &Rejection,
        against: Against<'_>,
    ) -> Result<(), Fail> {
        self.dead_letter(
            msg,
            sink,
            Some(input.dlq_value),
            why,
            Some(against),
            input.index,
        )
    }

    /// Sends rejected bytes to the DLQ with the landing key and headers and the `dlq.*` ones.
    fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        sink: &mut Sink<'_>,
        value: Option<&[u8]>,
        why: &Rejection,
        against: Option<Against<'_>>,
        index: Option<usize>,
    ) -> Result<(), Fail> {
        let origin = dlq::origin(msg.topic(), msg.partition(), msg.offset(), index);
        let at = headers::now_rfc3339();
        let mut hdrs = dlq::headers(msg.headers(), why, against, &origin, &at);
        let mut value = value;
        let key_len = msg.key().map_or(0, <[u8]>::len);
        let size = key_len + value.map_or(0, <[u8]>::len) + dlq::header_bytes(&hdrs) + FRAMING;
        if size > self.limits.dlq && index.is_some() {
            // One record of a claim-checked page, too large even for the DLQ: keep it by
            // reference to the landing record it came from (`dlq.origin` has its index).
            let noted = why.clone().with_note(&format!(
                "the record is over the DLQ's {} byte limit: the value is the landing value it came from; record #{} of it",
                self.limits.dlq,
                index.unwrap_or_default()
            ));
            hdrs = dlq::headers(msg.headers(), &noted, against, &origin, &at);
            value = msg.payload();
        }
        tracing::debug!(kind = why.kind, field = why.field.as_deref(), origin = %origin, "dead letter");
        self.tally.dead_letter(index);
        metrics::counter!(crate::telemetry::metric::VALIDATE_RECORDS, "outcome" => "dlq", "kind" => why.kind)
            .increment(1);
        let sent = sink.send(Outgoing {
            topic: &self.dlq,
            key: msg.key(),
            payload: value,
            headers: hdrs,
            partition: None,
        });
        sent.map_err(|e| {
            tracing::error!(error = %e, origin = %origin, kind = why.kind, "cannot write a dead letter; the batch is retried (operator needed if this persists)");
            Fail::Kafka(e)
        })
    }

    /// One copy of a sync marker to every partition of the stream's valid topic.
    fn on_marker(
        &mut self,
        msg: &BorrowedMessage<'_>,
        plan: &StreamPlan,
        sink: &mut Sink<'_>,
    ) -> Result<(), Fail> {
        let n = self.partition_count(&plan.valid_topic)?;
        let h = msg.headers();
        for p in 0..n {
            let hdrs = Headers::new()
                .with_opt(headers::KIND, headers::get(h, headers::KIND))
                .with_opt(headers::SYNC_ID, headers::get(h, headers::SYNC_ID))
                .with_opt(headers::MODE, headers::get(h, headers::MODE))
                // Dedup takes a full sync's start from it (records can overtake the marker).
                .with_opt(headers::FETCHED_AT, headers::get(h, headers::FETCHED_AT))
                .with(headers::SOURCE, &plan.source)
                .with(headers::STREAM, &plan.stream)
                .build();
            sink.send(Outgoing {
                topic: &plan.valid_topic,
                key: msg.key(),
                payload: msg.payload(),
                headers: hdrs,
                partition: Some(p),
            })
            .map_err(Fail::Kafka)?;
        }
        metrics::counter!(crate::telemetry::metric::VALIDATE_RECORDS, "outcome" => "marker")
            .increment(1);
        Ok(())
    }

    /// A webhook event: an upsert validated like a page record, or a delete.
    fn on_event(&mut self, msg: &BorrowedMessage<'_>, sink: &mut Sink<'_>) -> Result<(), Fail> {
        // An event over serve's inline limit was stored by claim-check (`intake.blob`).
        let stored;
        let value = if headers::get(msg.headers(), headers::BLOB).is_some() {
            match self.read_blob(msg) {
                Ok(bytes) => {
                    stored = bytes;
                    &stored[..]
                }
                Err(Ok(why)) => {
                    return self.dead_letter(msg, sink, msg.payload(), &why, None, None);
                }
                Err(Err(fail)) => return Err(fail),
            }
        } else {
            msg.payload().unwrap_or_default()
        };
        let Some(source) = headers::get_str(msg.headers(), headers::SOURCE) else {
            let why = Rejection::whole(
                DriftKind::NotAPage,
                format!("event without a `{}` header", headers::SOURCE),
            );
            return self.dead_letter(msg, sink, Some(value), &why, None, None);
        };
        let Some(shape) = self.plans.events.get(source).cloned() else {
            let why = Rejection::whole(
                DriftKind::NoSchema,
                format!("source `{source}` is not in this process's configuration"),
            );
            return self.dead_letter(msg, sink, Some(value), &why, None, None);
        };
        let mapped = event_from_headers(msg);
        let event = match mapped.unwrap_or_else(|| parse_event(value, &shape)) {
            Ok(e) => e,
            Err(why) => return self.dead_letter(msg, sink, Some(value), &why, None, None),
        };
        let Some(plan) = self.plans.get(source, &event.stream) else {
            let why = Rejection::whole(
                DriftKind::NoSchema,
                format!(
                    "event for stream `{source}/{}`, which is not in this process's configuration",
                    event.stream
                ),
            );
            return self.dead_letter(msg, sink, Some(value), &why, None, None);
        };
        match event.op {
            EventOp::Delete => {
                let h = msg.headers();
                let hdrs = Headers::new()
                    .with(headers::SOURCE, &plan.source)
                    .with(headers::STREAM, &plan.stream)
                    .with(headers::OP, "delete")
                    .with(headers::VERSION, event.seq.to_string())
                    .with(headers::HASH, NO_HASH)
                    .with(
                        headers::ORIGIN,
                        dlq::origin(msg.topic(), msg.partition(), msg.offset(), None),
                    )
                    .with_opt(headers::FETCHED_AT, headers::get(h, headers::FETCHED_AT))
                    .with_opt(headers::SYNC_ID, headers::get(h, headers::SYNC_ID))
                    .build();
                let key = match &plan.key {
                    None => event.entity_id.unwrap_or_default().into_bytes(),
                    Some(_) => match self.delete_key(&plan, value, &shape)? {
                        Ok(k) => k,
                        Err(why) => {
                            let against = Against {
                                subject: &plan.subject,
                                version: None,
                            };
                            return self.dead_letter(
                                msg,
                                sink,
                                Some(value),
                                &why,
                                Some(against),
                                None,
                            );
                        }
                    },
                };
                sink.send(Outgoing {
                    topic: &plan.valid_topic,
                    key: Some(&key),
                    payload: None,
                    headers: hdrs,
                    partition: None,
                })
                .map_err(Fail::Kafka)?;
                metrics::counter!(crate::telemetry::metric::VALIDATE_RECORDS, "outcome" => "delete")
                    .increment(1);
                Ok(())
            }
            EventOp::Upsert => {
                let against = Against {
                    subject: &plan.subject,
                    version: None,
                };
                let record = match plan.events.split(value) {
                    Ok(mut split) if split.len() == 1 => split.swap_remove(0),
                    Ok(_) => {
                        let why = Rejection::whole(
                            DriftKind::NotAPage,
                            "an event's record (at the source's webhook.record) is one object",
                        );
                        return self.dead_letter(msg, sink, Some(value), &why, Some(against), None);
                    }
                    Err(e) => {
                        return self.dead_letter(
                            msg,
                            sink,
                            Some(value),
                            &e.into(),
                            Some(against),
                            None,
                        );
                    }
                };
                let mut schema = self.schema(&plan)?;
                match record {
                    Ok(r) => {
                        let input = Input {
                            raw: r.bytes(),
                            key: &r.key,
                            version: Some(event.seq),
                            index: None,
                            dlq_value: value,
                        };
                        self.on_record(msg, &plan, &mut schema, &input, None, sink)
                    }
                    Err(bad) => {
                        let against = Against {
                            subject: &plan.subject,
                            version: schema.version(),
                        };
                        self.dead_letter(
                            msg,
                            sink,
                            Some(value),
                            &(&bad.error).into(),
                            Some(against),
                            None,
                        )
                    }
                }
            }
        }
    }

    /// The Avro key of a delete event (`key_format = "avro"`): the key fields from the event's
    /// `data` when it holds them all, else — for a one-field key — the event's entity id. A
    /// composite key whose fields the event does not carry cannot be made (`missing_key`).
    fn delete_key(
        &mut self,
        plan: &StreamPlan,
        event: &[u8],
        shape: &EventShape,
    ) -> Result<Result<Vec<u8>, Rejection>, Fail> {
        let Some(fields) = &plan.key else {
            return Ok(Err(Rejection::whole(
                DriftKind::MissingKey,
                "the stream has no Avro key fields",
            )));
        };
        let active = match self.schema(plan)? {
            SchemaState::Ready(a) => a,
            SchemaState::Missing { why, .. } => return Ok(Err(why)),
        };
        let codec = match self.key_codec(plan, &active)? {
            Ok(c) => c,
            Err(e) => {
                return Ok(Err(Rejection::whole(
                    DriftKind::NoSchema,
                    format!("key_format = \"avro\": {e}"),
                )));
            }
        };
        // The envelope parsed before (`parse_event`), so it is JSON.
        let json: Json = serde_json::from_slice(event).unwrap_or(Json::Null);
        match fields.delete_json(&json, &shape.entity_id) {
            Ok(key) => Ok(encode_key(&codec, &key)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    /// Makes sure the curated topic's subject holds `latest` (the schema validate is about to
    /// use for a stream), so that tools looking schemas up by topic name find every schema the
    /// curated records carry, evolved ones included. `schemas apply` and evolve register both
    /// subjects with the same text (the same id); this repairs a process that died between the
    /// two, registering the schema unless the subject's latest version already is it. A
    /// registry that is down is retried like any lookup.
    fn mirror(&mut self, plan: &StreamPlan, latest: &Latest) -> Result<(), Fail> {
        let subject = plan.subject.as_str();
        let downstream = match registry::downstream_subject(
            plan.strategy,
            &plan.curated_topic,
            &latest.text,
        ) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(subject, error = %e, "no downstream subject for this schema under the configured registry.subject_strategy");
                self.mirrored.insert(subject.to_owned(), latest.id);
                return Ok(());
            }
        };
        let current = match self.rt.block_on(self.registry.latest(&downstream)) {
            Ok(l) => Some(l),
            Err(RegistryError::NotFound(_)) => None,
            Err(e) if e.is_retriable() => {
                return Err(Fail::System(format!("looking up `{downstream}`: {e}")));
            }
            Err(e) => {
                tracing::warn!(subject, downstream, error = %e, "cannot read the curated topic's subject");
                None
            }
        };
        let same = current.is_some_and(|c| {
            c.id == latest.id || c.schema.canonical_form() == latest.schema.canonical_form()
        });
        if !same {
            self.register_downstream(subject, &downstream, &latest.text)?;
        }
        self.mirrored.insert(subject.to_owned(), latest.id);
        Ok(())
    }

    /// Registers `text` under a stream's downstream subject (see `mirror`).
    fn register_downstream(&self, subject: &str, downstream: &str, text: &str) -> Result<(), Fail> {
        match self.rt.block_on(self.registry.register(downstream, text)) {
            Ok(r) => {
                tracing::info!(
                    subject,
                    downstream,
                    id = r.id,
                    version = r.version,
                    "schema registered under the curated topic's subject"
                );
                Ok(())
            }
            Err(e) if e.is_retriable() => Err(Fail::System(format!(
                "registering the schema of `{subject}` under `{downstream}`: {e}"
            ))),
            Err(e) => {
                tracing::warn!(subject, downstream, error = %e, "the curated topic's subject refuses the schema validate uses: tools that look schemas up by topic name will not find it");
                Ok(())
            }
        }
    }

    /// The latest schema of a stream's subject, compiled (cached per schema id), once it is
    /// also registered under the curated topic's subject.
    fn schema(&mut self, plan: &StreamPlan) -> Result<SchemaState, Fail> {
        let subject = plan.subject.as_str();
        let latest = match self.rt.block_on(self.registry.latest(subject)) {
            Ok(l) => l,
            Err(RegistryError::NotFound(_)) => {
                let why = Rejection::whole(
                    DriftKind::NoSchema,
                    format!("no schema is registered for subject `{subject}`"),
                );
                return Ok(SchemaState::Missing {
                    version: None,
                    why,
                    absent: true,
                });
            }
            Err(e @ RegistryError::InvalidSchema { .. }) => {
                let why = Rejection::whole(DriftKind::NoSchema, e.to_string());
                return Ok(SchemaState::Missing {
                    version: None,
                    why,
                    absent: false,
                });
            }
            Err(e) => return Err(Fail::System(format!("looking up `{subject}`: {e}"))),
        };
        if self.mirrored.get(subject) != Some(&latest.id) {
            self.mirror(plan, &latest)?;
        }
        let compiled = self
            .validators
            .entry(latest.id)
            .or_insert_with(|| {
                Validator::new(&latest.schema)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone();
        match compiled {
            Ok(validator) => Ok(SchemaState::Ready(Active {
                id: latest.id,
                version: latest.version,
                schema: latest.schema.clone(),
                validator,
            })),
            Err(e) => {
                let why = Rejection::whole(
                    DriftKind::NoSchema,
                    format!(
                        "schema id {} (version {}) of `{subject}` cannot validate JSON: {e}",
                        latest.id, latest.version
                    ),
                );
                Ok(SchemaState::Missing {
                    version: Some(latest.version),
                    why,
                    absent: false,
                })
            }
        }
    }

    /// The `evolve` drift policy for a stream with no schema yet: a first schema inferred from
    /// the record (key and version required, every other member optional), registered under
    /// both subjects. `None`: the record goes to the DLQ as `no_schema`.
    fn first_schema(&mut self, plan: &StreamPlan, raw: &[u8]) -> Result<Option<Active>, Fail> {
        let subject = plan.subject.clone();
        let Ok(sample) = serde_json::from_slice::<Json>(raw) else {
            return Ok(None);
        };
        let proposal = match infer::first_for(
            &plan.source,
            &plan.config,
            std::slice::from_ref(&sample),
        ) {
            Ok(p) if p.blockers.is_empty() => p,
            Ok(p) => {
                tracing::info!(subject, blockers = ?p.blockers, "drift policy evolve: no first schema accepts the record; dead-lettering it");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(subject, error = %e, "drift policy evolve: cannot infer a first schema; dead-lettering the record");
                return Ok(None);
            }
        };
        match self.rt.block_on(registry::apply_one(
            &self.registry,
            &subject,
            &proposal.schema_json,
        )) {
            Ok(outcome) => {
                tracing::info!(subject, %outcome, changes = ?proposal.changes, "drift policy evolve: registered a first schema");
                if let Ok(downstream) = registry::downstream_subject(
                    plan.strategy,
                    &plan.curated_topic,
                    &proposal.schema_json,
                ) {
                    self.register_downstream(&subject, &downstream, &proposal.schema_json)?;
                }
            }
            Err(e) if e.is_retriable() => {
                return Err(Fail::System(format!(
                    "registering a first schema for `{subject}`: {e}"
                )));
            }
            Err(e) => {
                tracing::warn!(subject, error = %e, "drift policy evolve: the first schema was refused; dead-lettering the record");
                return Ok(None);
            }
        }
        self.registry.invalidate(&subject);
        match self.schema(plan)? {
            SchemaState::Ready(a) => Ok(Some(a)),
            SchemaState::Missing { .. } => Ok(None),
        }
    }

    /// The `evolve` drift policy: a BACKWARD-compatible schema that accepts the record,
    /// registered if the registry agrees. `None`: the record goes to the DLQ.
    fn evolve(
        &mut self,
        plan: &StreamPlan,
        active: &Active,
        raw: &[u8],
        err: &RecordError,
    ) -> Result<Option<Active>, Fail> {
        let subject = plan.subject.as_str();
        let Ok(sample) = serde_json::from_slice::<Json>(raw) else {
            return Ok(None);
        };
        let proposal = match infer::propose(&active.schema, std::slice::from_ref(&sample)) {
            Ok(p) if p.is_complete() => p,
            Ok(p) => {
                tracing::info!(subject, kind = err.kind.as_str(), blockers = ?p.blockers, "drift policy evolve: no compatible change accepts the record; dead-lettering it");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(subject, error = %e, "drift policy evolve: cannot propose a schema; dead-lettering the record");
                return Ok(None);
            }
        };
        match self
            .rt
            .block_on(self.registry.is_compatible(subject, &proposal.schema_json))
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(subject, changes = ?proposal.changes, "drift policy evolve: the registry refuses the proposed version; dead-lettering the record");
                return Ok(None);
            }
            Err(e) if e.is_retriable() => {
                return Err(Fail::System(format!(
                    "checking compatibility of `{subject}`: {e}"
                )));
            }
            Err(e) => {
                tracing::warn!(subject, error = %e, "drift policy evolve: compatibility check failed; dead-lettering the record");
                return Ok(None);
            }
        }
        match self
            .rt
            .block_on(self.registry.register(subject, &proposal.schema_json))
        {
            Ok(r) => {
                tracing::info!(subject, id = r.id, version = r.version, changes = ?proposal.changes, "drift policy evolve: registered a new schema version");
                // The same text under the curated topic's subject: the same schema id there.
                if let Ok(downstream) = registry::downstream_subject(
                    plan.strategy,
                    &plan.curated_topic,
                    &proposal.schema_json,
                ) {
                    self.register_downstream(subject, &downstream, &proposal.schema_json)?;
                }
            }
            Err(e) if e.is_retriable() => {
                return Err(Fail::System(format!(
                    "registering a version of `{subject}`: {e}"
                )));
            }
            Err(e) => {
                tracing::warn!(subject, error = %e, "drift policy evolve: registration refused; dead-lettering the record");
                return Ok(None);
            }
        }
        self.registry.invalidate(subject);
        match self.schema(plan)? {
            SchemaState::Ready(a) if a.id != active.id => Ok(Some(a)),
            _ => Ok(None),
        }
    }

    /// The claim-checked page of a `blob-ref`. `Err(Ok)`: unreadable for good (bad data);
    /// `Err(Err)`: the store is unavailable (retry).
    fn read_blob(&self, msg: &BorrowedMessage<'_>) -> Result<Bytes, Result<Rejection, Fail>> {
        let from_header =
            headers::get_str(msg.headers(), headers::BLOB).and_then(BlobRef::parse_header);
        let reference = from_header
            .or_else(|| serde_json::from_slice::<BlobRef>(msg.payload().unwrap_or_default()).ok());
        let Some(reference) = reference else {
            return Err(Ok(Rejection::blob_unreadable(format!(
                "no `{}` header or reference value to read",
                headers::BLOB
            ))));
        };
        match self.rt.block_on(self.blobs.get(&reference)) {
            Ok(bytes) => Ok(bytes),
            Err(
                e @ (BlobError::Corrupt { .. } | BlobError::Foreign(_) | BlobError::Url { .. }),
            ) => Err(Ok(Rejection::blob_unreadable(e))),
            Err(BlobError::Store(object_store::Error::NotFound { path, .. })) => {
                Err(Ok(Rejection::blob_unreadable(format!(
                    "blob {} not found (path {path})",
                    reference.uri
                ))))
            }
            Err(e) => Err(Err(Fail::System(format!(
                "reading blob {}: {e}",
                reference.uri
            )))),
        }
    }

    fn partition_count(&mut self, topic: &str) -> Result<i32, Fail> {
        if let Some(n) = self.partitions.get(topic) {
            return Ok(*n);
        }
        let n = reader::partition_count(&self.meta, topic, META_TIMEOUT)
            .map_err(|e| Fail::System(format!("partition count of `{topic}`: {e}")))?;
        self.partitions.insert(topic.to_owned(), n);
        Ok(n)
    }
}

/// The last segment of a JSON pointer, unescaped (`/id` → `id`).
fn pointer_leaf(pointer: &str) -> String {
    pointer
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .replace("~1", "/")
        .replace("~0", "~")
}

/// The key schema a value schema implies for a primary key ([`key::key_schema`]), with its
/// compiled validator.
fn compile_key_schema(
    value: &Schema,
    pk: &crate::config::PrimaryKey,
) -> Result<(String, Validator), String> {
    let text = key::key_schema(value, pk)?;
    let schema = Schema::parse_str(&text).map_err(|e| e.to_string())?;
    let validator = Validator::new(&schema).map_err(|e| e.to_string())?;
    Ok((text, validator))
}

/// A key object's JSON text encoded with the key schema and framed (magic 0, key schema id).
fn encode_key(codec: &KeyCodec, json: &str) -> Result<Vec<u8>, Rejection> {
    let mut out = Vec::with_capacity(5 + json.len());
    out.push(0);
    out.extend_from_slice(&codec.id.to_be_bytes());
    codec
        .validator
        .encode_raw_into(json.as_bytes(), &mut out)
        .map(|()| out)
        .map_err(Rejection::from)
}

/// `intake.hash`: 16 lower-case hex digits of the XXH3-64 of the raw record bytes.
fn hash_hex(raw: &[u8]) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = content_hash(raw);
    std::array::from_fn(|i| HEX[((h >> (60 - 4 * i)) & 0xf) as usize])
}

/// What an event does to its entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOp {
    /// `created` or `updated`: `data` is the record.
    Upsert,
    /// `deleted`: no record.
    Delete,
}

/// The envelope of a webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// From `type`.
    pub op: EventOp,
    /// The stream the entity belongs to.
    pub stream: String,
    /// The entity id (required for a delete; strings as is, integers in decimal).
    pub entity_id: Option<String>,
    /// The sequence number: the version of the record.
    pub seq: i64,
}

/// The event as serve mapped it at landing (`intake.op`, `intake.stream`, `intake.seq` and the
/// key: see `serve::events`), or `None` for an event landed without a mapping (before serve
/// mapped events), whose envelope [`parse_event`] reads.
fn event_from_headers(msg: &BorrowedMessage<'_>) -> Option<Result<Event, Rejection>> {
    let h = msg.headers();
    let op = headers::get_str(h, headers::OP)?;
    let bad = |why: String| Rejection::whole(DriftKind::NotAPage, why);
    let op = match op {
        "upsert" => EventOp::Upsert,
        "delete" => EventOp::Delete,
        other => {
            return Some(Err(bad(format!(
                "the event's `{}` is `{other}`",
                headers::OP
            ))));
        }
    };
    let Some(stream) = headers::get_str(h, headers::STREAM).filter(|s| !s.is_empty()) else {
        return Some(Err(bad(format!(
            "a mapped event without `{}`",
            headers::STREAM
        ))));
    };
    let Some(seq) = headers::get_str(h, headers::SEQ).and_then(|s| s.parse::<i64>().ok()) else {
        return Some(Err(Rejection::whole(
            DriftKind::BadVersion,
            format!("a mapped event without an integer `{}`", headers::SEQ),
        )));
    };
    let entity_id = msg
        .key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    if op == EventOp::Delete && entity_id.is_none() {
        return Some(Err(Rejection::whole(
            DriftKind::MissingKey,
            "a mapped delete event without a key",
        )));
    }
    Some(Ok(Event {
        op,
        stream: stream.to_owned(),
        entity_id,
        seq,
    }))
}

/// Parses a webhook event's envelope:
/// `{"event_id", "type": "created|updated|deleted", "stream", "entity_id", "seq", "data"}`
/// (entity id, sequence and stream at the source's configured pointers).
///
/// # Errors
/// The [`Rejection`] for the DLQ: `not_utf8`, `malformed_json`, `not_a_page` (not an object,
/// no stream, an unknown type), `bad_version` (the sequence), `missing_key` (a delete without
/// an entity id).
pub fn parse_event(value: &[u8], shape: &EventShape) -> Result<Event, Rejection> {
    let text = std::str::from_utf8(value).map_err(|e| {
        Rejection::whole(
            DriftKind::NotUtf8,
            format!("invalid UTF-8 at byte offset {}", e.valid_up_to()),
        )
    })?;
    let json: Json = serde_json::from_str(text)
        .map_err(|e| Rejection::from(RecordError::malformed(&e, value)))?;
    if !json.is_object() {
        return Err(Rejection::whole(
            DriftKind::NotAPage,
            "an event is a JSON object",
        ));
    }
    let field = |pointer: &str| pointer.trim_start_matches('/').replace('/', ".");
    let stream = match json.pointer(&shape.stream) {
        Some(Json::String(s)) if !s.is_empty() => s.clone(),
        other => {
            return Err(Rejection::at(
                DriftKind::NotAPage,
                field(&shape.stream),
                format!("the event's stream {}", describe(other)),
            ));
        }
    };
    let op = match json.get("type") {
        Some(Json::String(t)) if t == "created" || t == "updated" => EventOp::Upsert,
        Some(Json::String(t)) if t == "deleted" => EventOp::Delete,
        other => {
            return Err(Rejection::at(
                DriftKind::NotAPage,
                "type",
                format!(
                    "the event type {}; expected created, updated or deleted",
                    describe(other)
                ),
            ));
        }
    };
    let seq = match json.pointer(&shape.sequence) {
        Some(v) => parse_version(&v.to_string()),
        None => Err("is absent".to_owned()),
    }
    .map_err(|why| Rejection::at(DriftKind::BadVersion, field(&shape.sequence), why))?;
    let entity_id = match json.pointer(&shape.entity_id) {
        Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Json::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    };
    if op == EventOp::Delete && entity_id.is_none() {
        let found = describe(json.pointer(&shape.entity_id));
        return Err(Rejection::at(
            DriftKind::MissingKey,
            field(&shape.entity_id),
            format!("a delete event's entity id {found}"),
        ));
    }
    Ok(Event {
        op,
        stream,
        entity_id,
        seq,
    })
}

/// "is absent", "is `x`", "is 3": for messages.
fn describe(v: Option<&Json>) -> String {
    match v {
        None => "is absent".into(),
        Some(Json::Null) => "is null".into(),
        Some(Json::String(s)) if s.is_empty() => "is empty".into(),
        Some(Json::String(s)) => format!("is `{s}`"),
        Some(other) => format!("is {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> EventShape {
        EventShape::default()
    }

    #[test]
    fn created_and_updated_events_are_upserts_versioned_by_seq() {
        let e = parse_event(br#"{"event_id":"e1","type":"created","stream":"customers","entity_id":"c-1","seq":7,"data":{"id":"c-1"}}"#, &shape()).unwrap();
        assert_eq!(
            e,
            Event {
                op: EventOp::Upsert,
                stream: "customers".into(),
                entity_id: Some("c-1".into()),
                seq: 7
            }
        );
        let e = parse_event(br#"{"type":"updated","stream":"orders","entity_id":42,"seq":"2024-01-01T00:00:00Z","data":{}}"#, &shape()).unwrap();
        assert_eq!(e.op, EventOp::Upsert);
        assert_eq!(e.entity_id.as_deref(), Some("42"));
        assert_eq!(e.seq, 1_704_067_200_000_000);
    }

    #[test]
    fn deleted_events_need_an_entity_id() {
        let e = parse_event(br#"{"event_id":"e2","type":"deleted","stream":"customers","entity_id":"c-1","seq":9,"data":null}"#, &shape()).unwrap();
        assert_eq!(
            e,
            Event {
                op: EventOp::Delete,
                stream: "customers".into(),
                entity_id: Some("c-1".into()),
                seq: 9
            }
        );
        let err = parse_event(
            br#"{"type":"deleted","stream":"customers","seq":9,"data":null}"#,
            &shape(),
        )
        .unwrap_err();
        assert_eq!(err.kind, "missing_key");
        assert_eq!(err.field.as_deref(), Some("entity_id"));
        assert_eq!(
            err.detail,
            "missing primary key at field `entity_id`: a delete event's entity id is absent"
        );
    }

    #[test]
    fn broken_envelopes_are_classified_and_name_the_field() {
        let cases: [(&[u8], &str, Option<&str>); 7] = [
            (b"\xff\xfe", "not_utf8", None),
            (b"{\"type\":", "malformed_json", None),
            (b"[1,2]", "not_a_page", None),
            (
                br#"{"type":"created","seq":1,"data":{}}"#,
                "not_a_page",
                Some("stream"),
            ),
            (
                br#"{"type":"renamed","stream":"s","seq":1}"#,
                "not_a_page",
                Some("type"),
            ),
            (
                br#"{"type":"created","stream":"s","seq":1.5}"#,
                "bad_version",
                Some("seq"),
            ),
            (
                br#"{"type":"created","stream":"s"}"#,
                "bad_version",
                Some("seq"),
            ),
        ];
        for (input, kind, field) in cases {
            let err = parse_event(input, &shape()).unwrap_err();
            assert_eq!(
                (err.kind, err.field.as_deref()),
                (kind, field),
                "{}",
                String::from_utf8_lossy(input)
            );
            if let Some(f) = field {
                assert!(err.detail.contains(&format!("`{f}`")), "{}", err.detail);
            }
        }
    }

    #[test]
    fn configured_pointers_are_used() {
        let shape = EventShape {
            entity_id: "/entity/id".into(),
            sequence: "/meta/seq".into(),
            stream: "/meta/stream".into(),
        };
        let e = parse_event(
            br#"{"type":"deleted","entity":{"id":"x"},"meta":{"seq":3,"stream":"orders"}}"#,
            &shape,
        )
        .unwrap();
        assert_eq!(
            e,
            Event {
                op: EventOp::Delete,
                stream: "orders".into(),
                entity_id: Some("x".into()),
                seq: 3
            }
        );
        let err =
            parse_event(br#"{"type":"created","meta":{"stream":"orders"}}"#, &shape).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("meta.seq"));
    }

    #[test]
    fn an_event_record_is_its_data_member_with_raw_bytes_kept() {
        let splitter = Splitter::new("/data", "/id", None).unwrap();
        let event = br#"{"type":"created","stream":"s","seq":1,"data": {"id":"c-1", "n":1} }"#;
        let split = splitter.split(event).unwrap();
        let r = split[0].as_ref().unwrap();
        assert_eq!(r.raw, r#"{"id":"c-1", "n":1}"#);
        assert_eq!(r.key, "c-1");
        let null_data = splitter
            .split(br#"{"type":"created","data":null}"#)
            .unwrap_err();
        assert_eq!(null_data.kind, DriftKind::NotAPage);
    }

    #[test]
    fn hash_is_sixteen_lower_hex_digits() {
        let h = String::from_utf8(hash_hex(br#"{"id":"a"}"#).to_vec()).unwrap();
        assert_eq!(h.len(), 16);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let zero_led = (0u32..)
            .map(|i| i.to_string())
            .find(|s| content_hash(s.as_bytes()) >> 60 == 0)
            .unwrap();
        assert_eq!(
            hash_hex(zero_led.as_bytes()),
            format!("{:016x}", content_hash(zero_led.as_bytes())).as_bytes(),
            "leading zeros are kept"
        );
        assert_eq!(
            h,
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(br#"{"id":"a"}"#))
        );
        assert_eq!(NO_HASH.len(), 16);
    }

    #[test]
    fn string_keys_stay_the_default_and_avro_keys_are_planned_per_stream() {
        let text = |extra: &str| {
            format!(
                "[kafka]\nbrokers = \"x:1\"\n[[sources]]\nname = \"s\"\nbase_url = \"http://h\"\n\
                 [[sources.streams]]\nname = \"plain\"\npath = \"/a\"\nprimary_key = \"/id\"\n\
                 [[sources.streams]]\nname = \"keyed\"\npath = \"/b\"\n{extra}\n"
            )
        };
        let cfg = Config::from_toml(&text(
            "primary_key = [\"/customer_id\", \"/id\"]\nkey_format = \"avro\"",
        ))
        .unwrap();
        let plans = Plans::from_config(&cfg, &TopicNames::from_config(&cfg)).unwrap();
        let plain = plans.get("s", "plain").unwrap();
        // The default: no key record; the key sent is the splitter's key text, as before.
        assert!(plain.key.is_none());
        let page = br#"{"data":[{"id":"c\u00e9-1"},{"id":42}]}"#;
        let keys: Vec<Vec<u8>> = plain
            .pages
            .split(page)
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap().key.into_bytes())
            .collect();
        assert_eq!(keys, [b"c\xc3\xa9-1".to_vec(), b"42".to_vec()]);
        let keyed = plans.get("s", "keyed").unwrap();
        let fields = keyed.key.as_ref().unwrap();
        assert_eq!(fields.names().collect::<Vec<_>>(), ["customer_id", "id"]);
        assert_eq!(keyed.key_field, "customer_id");
    }
}
