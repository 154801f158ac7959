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

mod events;
mod output;
mod plan;
mod quiet;
mod schemas;

pub use events::{EventEnvelope, EventOp, parse_event};
pub use plan::EventShape;
use plan::{Limits, Plans, StreamPlan};
use schemas::{encode_key, pointer_leaf};

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::kafka::consumed::Consumed;
use apache_avro::Schema;
use bytes::Bytes;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, KafkaResult};
use serde_json::Value as Json;

use super::Validator;
use super::convert::Capture;
use super::counts::Tally;
use super::error::{DriftKind, RecordError};
use super::infer;
use super::key::{self, KeyFields};
use super::reject::{self, Against, Rejection};
use super::split::PointerError;
use super::split::{self, Splitter, parse_version};
use crate::blob::{BlobError, BlobRef, BlobStore, ClaimCheck};
use crate::config::{Config, ConfigError, DriftPolicy, KeyFormat, SubjectStrategy};
use crate::contract::{LandingHeaders, SyncMarker, ValidStamp};
use crate::dedup::merge::content_hash;
use crate::headers::{self, Headers, Kind};
use crate::kafka::eos::{self, LoopConfig, Processor, Sink, Tp};
use crate::kafka::{ErrorClass, Kafka, Outgoing, classify, reader};
use crate::registry::{self, Latest, Registry, RegistryError};
use crate::stage::{Stage, StageError};
use crate::topics::TopicNames;

/// Most landing records per transaction (a page is one record; it may hold hundreds).
const MAX_BATCH: usize = 100;
/// About the size of a batch in KiB (pages of 100 records of ~1 KiB are ~80 KiB; larger
/// pages make fuller queues, not a larger batch count): librdkafka's queues are sized from it.
const BATCH_KIB: usize = 8 * 1024;
/// Longest a transaction stays open collecting landing records. Each commit flushes the
/// producer and writes a marker to every output partition it touched (12 for three streams),
/// and processing stops meanwhile; 500 ms (as `scripts/bench`'s ProducerPerformance baseline
/// uses) keeps that cost a small share of the time.
const LINGER: Duration = Duration::from_millis(500);
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
    /// The stage's thread could not start or died.
    #[error(transparent)]
    Thread(#[from] crate::stage::ThreadError),
    /// The stage thread's runtime (for registry and blob calls) could not be built.
    #[error("building the validate thread's runtime: {0}")]
    Runtime(std::io::Error),
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
    crate::stage::on_thread(Stage::Validate, shutdown, move |stop| {
        run_blocking(&cfg, &stop)
    })
    .await
}

/// The stage on the calling thread, until `stop` is set.
fn run_blocking(cfg: &Config, stop: &AtomicBool) -> Result<(), ValidateError> {
    // Registry and blob lookups are async; this thread owns a small runtime to block on them,
    // so the stage works under any caller (current-thread runtime, or none).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ValidateError::Runtime)?;
    let names = TopicNames::from_config(cfg);
    let plans = Plans::from_config(cfg, &names)?;
    let base = Kafka::new(&cfg.kafka)?;
    let limits = rt.block_on(Limits::read(&base, cfg, &names, &plans, stop));
    let group = base.group(Stage::Validate);
    let member = crate::kafka::txn::stage_member(cfg, Stage::Validate);
    let kafka = base.clone().with_queues_for_batch(BATCH_KIB);
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
    let mut processor = Validate::new(cfg, &names, plans, rt, limits, &base)?;
    tracing::info!(group = %loop_cfg.group, transactional_id = %loop_cfg.transactional_id, landing = %processor.landing, "validate starting");
    eos::run(&kafka, &loop_cfg, &mut processor, stop)?;
    tracing::info!("validate stopped");
    Ok(())
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
    /// The quiet DLQ: dead letters seen, so a repeat is counted instead of written again.
    quiet: quiet::Quiet,
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
    fn of(msg: &Consumed<'_>) -> Self {
        let l = LandingHeaders::read(msg.headers());
        Self {
            origin: reject::origin(msg.topic(), msg.partition(), msg.offset(), None),
            fetched_at: l.fetched_at.map(<[u8]>::to_vec),
            sync_id: l.sync_id.map(<[u8]>::to_vec),
            stamp: l.stamp,
        }
    }
}

/// The schema a record of `plan` was checked against, for its dead letter.
fn dlq_against<'p>(plan: &'p StreamPlan, schema: &SchemaState) -> Against<'p> {
    Against {
        subject: &plan.subject,
        version: schema.version(),
    }
}

impl Processor for Validate {
    fn stage(&self) -> &'static str {
        Stage::Validate.name()
    }

    fn assigned(&mut self, _kafka: &Kafka, tps: &[Tp]) -> KafkaResult<()> {
        tracing::info!(partitions = ?tps, "landing partitions assigned");
        self.quiet.restore(&landing_partitions(tps))
    }

    fn revoked(&mut self, tps: &[Tp]) {
        tracing::info!(partitions = ?tps, "landing partitions revoked");
        self.quiet.forget(&landing_partitions(tps));
    }

    fn process(&mut self, msg: &Consumed<'_>, sink: &mut Sink<'_>) -> Result<(), StageError> {
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
            Err(Fail::Kafka(e)) => Err(StageError::Kafka(e)),
            Err(Fail::System(why)) => {
                // The loop aborts, waits this long (the transaction is closed, so no timeout
                // runs meanwhile), and retries the batch.
                self.backoff = (self.backoff * 2).clamp(Duration::from_millis(200), MAX_BACKOFF);
                Err(StageError::Unavailable {
                    what: why,
                    retry_in: self.backoff,
                })
            }
        }
    }

    fn aborted(&mut self, _kafka: &Kafka, tps: &[Tp]) {
        // The dead letters seen are the only state: the aborted batch's never happened. Until
        // restored, none are known (a repeat is then written again: never one too few).
        let partitions = landing_partitions(tps);
        self.quiet.forget(&partitions);
        let mut wait = Duration::from_millis(200);
        for attempt in 1.. {
            match self.quiet.restore(&partitions) {
                Ok(()) => break,
                Err(e) if attempt < 8 => {
                    tracing::warn!(error = %e, ?partitions, "restoring the dead letters seen failed; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?partitions, "restoring the dead letters seen failed; their repeats are written as new dead letters until the partitions are assigned again");
                    self.quiet.forget(&partitions);
                    break;
                }
            }
        }
    }
}

/// The partition numbers of `tps` (all of the landing topic).
fn landing_partitions(tps: &[Tp]) -> Vec<i32> {
    tps.iter().map(|(_, p)| *p).collect()
}

impl Validate {
    /// The processor of `cfg`'s streams. Needs no broker until it processes a record that
    /// asks broker metadata (a page's partition count), so its routing is unit-tested.
    fn new(
        cfg: &Config,
        names: &TopicNames,
        plans: Plans,
        rt: tokio::runtime::Runtime,
        limits: Limits,
        base: &Kafka,
    ) -> Result<Self, ValidateError> {
        Ok(Validate {
            landing: names.landing(),
            dlq: names.dlq(),
            plans,
            registry: Registry::new(&cfg.registry)?,
            blobs: BlobStore::open(&cfg.blob)?,
            rt,
            validators: HashMap::new(),
            mirrored: HashMap::new(),
            partitions: HashMap::new(),
            limits,
            meta: base.metadata_consumer("validate-metadata")?,
            buf: Vec::with_capacity(64 * 1024),
            backoff: Duration::ZERO,
            jobs: names.jobs(),
            tally: Tally::default(),
            valid_counter: metrics::counter!(crate::telemetry::metric::VALIDATE_RECORDS, "outcome" => "valid"),
            prov: Provenance::default(),
            quiet: quiet::Quiet::new(
                names.dlq_index(),
                cfg.dlq.quiet_for,
                Some(base.reader_consumer("validate-dlq-index")?),
            ),
            max_record_bytes: cfg.blob.max_record_bytes,
            claim_ids: HashMap::new(),
            key_codecs: HashMap::new(),
        })
    }

    fn route(&mut self, msg: &Consumed<'_>, sink: &mut Sink<'_>) -> Result<(), Fail> {
        let landing = LandingHeaders::read(msg.headers());
        let Some(kind) = landing.kind else {
            let why = Rejection::whole(
                DriftKind::NotAPage,
                format!("landing record without a known `{}` header", headers::KIND),
            );
            return self.dead_letter(msg, sink, msg.payload(), &why, None, None);
        };
        if kind == Kind::Event {
            return self.on_event(msg, sink);
        }
        let (Some(source), Some(stream)) = (landing.source, landing.stream) else {
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
        let Some(format) = landing.format else {
            let why = Rejection::whole(
                DriftKind::NotAPage,
                format!(
                    "landing record with an `{}` this version does not know: {}",
                    headers::FORMAT,
                    String::from_utf8_lossy(
                        headers::get(msg.headers(), headers::FORMAT).unwrap_or_default()
                    )
                ),
            );
            return self.dead_letter(msg, sink, msg.payload(), &why, None, None);
        };
        match kind {
            Kind::Page | Kind::Batch => {
                self.on_page(msg, &plan, msg.payload().unwrap_or_default(), format, sink)
            }
            Kind::BlobRef => match self.read_blob(msg) {
                Ok(page) => self.on_page(msg, &plan, &page, format, sink),
                Err(Ok(why)) => self.dead_letter_unversioned(msg, sink, &plan, msg.payload(), &why),
                Err(Err(fail)) => Err(fail),
            },
            Kind::SyncBegin | Kind::SyncEnd => self.on_marker(msg, &plan, sink),
            Kind::Event => unreachable!("handled above"),
        }
    }

    /// A page (inline or read from the blob store): every record to the valid topic or the DLQ.
    /// A page of JSON Lines or CSV is normalised first (its cells typed by the current schema);
    /// its unreadable lines go to the DLQ one by one.
    fn on_page(
        &mut self,
        msg: &Consumed<'_>,
        plan: &StreamPlan,
        page: &[u8],
        format: crate::config::Format,
        sink: &mut Sink<'_>,
    ) -> Result<(), Fail> {
        let rows;
        let mut positions: &[usize] = &[];
        let (page, splitter) = if format == crate::config::Format::Json {
            (page, &plan.pages)
        } else {
            let schema = self.schema(plan)?;
            let typed = match &schema {
                SchemaState::Ready(active) => split::normalize(format, page, &*active.validator),
                SchemaState::Missing { .. } => split::normalize(format, page, &split::ByLook),
            };
            rows = match typed {
                Ok(rows) => rows,
                Err(e) => {
                    return self.dead_letter_unversioned(msg, sink, plan, msg.payload(), &e.into());
                }
            };
            let against = dlq_against(plan, &schema);
            for bad in &rows.bad {
                self.dead_letter(
                    msg,
                    sink,
                    Some(bad.raw),
                    &(&bad.error).into(),
                    Some(against),
                    Some(bad.index),
                )?;
            }
            positions = &rows.positions;
            (&rows.page[..], &plan.rows)
        };
        // A record's position in the page as landed (a normalised page leaves bad lines out).
        let position = |i: usize| positions.get(i).copied().unwrap_or(i);
        let elements = match splitter.elements(page) {
            Ok(elements) => elements,
            Err(e) => {
                // The page as a whole: the DLQ keeps the landing value (for a blob-ref, the reference).
                return self.dead_letter_unversioned(msg, sink, plan, msg.payload(), &e.into());
            }
        };
        if elements.is_empty() {
            return Ok(());
        }
        let mut schema = self.schema(plan)?;
        let names = splitter.top_members();
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
            match splitter.record(element, top) {
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
                    let against = dlq_against(plan, &schema);
                    self.dead_letter(
                        msg,
                        sink,
                        Some(r.bytes()),
                        &why,
                        Some(against),
                        Some(position(r.index)),
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
                        index: Some(position(r.index)),
                        dlq_value: r.bytes(),
                    };
                    self.on_record(msg, plan, &mut schema, &input, encoded, sink)?;
                }
                Err(bad) => {
                    let against = dlq_against(plan, &schema);
                    self.dead_letter(
                        msg,
                        sink,
                        Some(bad.bytes()),
                        &(&bad.error).into(),
                        Some(against),
                        Some(position(bad.index)),
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
        msg: &Consumed<'_>,
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
        let against = dlq_against(plan, schema);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::hash_hex;
    #[test]
    fn hash_is_sixteen_lower_hex_digits() {
        let h = String::from_utf8(hash_hex(content_hash(br#"{"id":"a"}"#)).to_vec()).unwrap();
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
            hash_hex(content_hash(zero_led.as_bytes())),
            format!("{:016x}", content_hash(zero_led.as_bytes())).as_bytes(),
            "leading zeros are kept"
        );
        assert_eq!(
            h,
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(br#"{"id":"a"}"#))
        );
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

    /// A processor of one stream `s/a` (`/data` records keyed by `/id`) with nothing behind
    /// it: no broker (127.0.0.1:1) and no registry (127.0.0.1:1, refused at once).
    fn offline() -> (tempfile::TempDir, Validate, TopicNames) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_toml(&format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n[registry]\nurl = \"http://127.0.0.1:1\"\n\
             [blob]\nurl = \"file://{}\"\n\
             [[sources]]\nname = \"s\"\nbase_url = \"http://h\"\n\
             [[sources.streams]]\nname = \"a\"\npath = \"/a\"\nrecords = \"/data\"\n\
             primary_key = \"/id\"\nversion = \"/v\"\n",
            dir.path().display()
        ))
        .unwrap();
        let names = TopicNames::from_config(&cfg);
        let plans = Plans::from_config(&cfg, &names).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let limits = Limits {
            producer: 1 << 20,
            dlq: 1 << 20,
            valid: HashMap::new(),
        };
        let base = Kafka::new(&cfg.kafka).unwrap();
        let mut v = Validate::new(&cfg, &names, plans, rt, limits, &base).unwrap();
        // No broker to ask: the dlq-index has 4 partitions, and restoring it finds nothing.
        v.partitions.insert(names.dlq_index(), 4);
        v.quiet = quiet::Quiet::new(names.dlq_index(), cfg.dlq.quiet_for, None);
        (dir, v, names)
    }

    fn landing(pairs: &[(&str, &str)]) -> rdkafka::message::OwnedHeaders {
        pairs
            .iter()
            .fold(Headers::new(), |h, (k, v)| h.with(k, v))
            .build()
    }

    /// The headers of a landed record of `kind` of stream `s/<stream>`.
    fn landed(kind: &str, stream: &str) -> rdkafka::message::OwnedHeaders {
        landing(&[
            (headers::KIND, kind),
            (headers::SOURCE, "s"),
            (headers::STREAM, stream),
        ])
    }

    /// Processes one landing record (offset 7 of partition 2) into memory.
    fn process(
        v: &mut Validate,
        h: &rdkafka::message::OwnedHeaders,
        value: &[u8],
    ) -> (Result<(), StageError>, Vec<crate::kafka::eos::Sent>) {
        let landing = v.landing.clone();
        let msg = Consumed::new(&landing, 2, 7, Some(b"s/a"), Some(value), Some(h));
        let mut out = Vec::new();
        let r = v.process(&msg, &mut Sink::memory(&mut out));
        (r, out)
    }

    /// The one record sent, a dead letter: its kind, stage and origin, and its value.
    fn the_dead_letter(names: &TopicNames, out: &[crate::kafka::eos::Sent]) -> (String, Vec<u8>) {
        let (dead, index): (Vec<_>, Vec<_>) = out.iter().partition(|s| s.topic == names.dlq());
        assert_eq!(dead.len(), 1, "{out:?}");
        assert!(
            index.len() <= 1 && index.iter().all(|s| s.topic == names.dlq_index()),
            "besides the dead letter, at most its dlq-index entry: {out:?}"
        );
        let d = dead[0];
        assert_eq!(d.topic, names.dlq());
        let letter = crate::contract::DeadLetter::read(Some(&d.headers));
        assert_eq!(letter.stage, "validate");
        assert_eq!(letter.origin, format!("{}/2/7", names.landing()).as_str());
        (
            letter.kind.to_owned(),
            d.payload.clone().unwrap_or_default(),
        )
    }

    #[test]
    fn a_landing_record_without_a_kind_is_kept_in_the_dlq_as_it_came() {
        let (_dir, mut v, names) = offline();
        let h = landing(&[(headers::SOURCE, "s"), (headers::STREAM, "a")]);
        let (r, out) = process(&mut v, &h, br#"{"data":[{"id":"1","v":1}]}"#);
        r.unwrap();
        let (kind, value) = the_dead_letter(&names, &out);
        assert_eq!(kind, "not_a_page");
        assert_eq!(value, br#"{"data":[{"id":"1","v":1}]}"#);
    }

    #[test]
    fn a_page_of_a_stream_this_process_does_not_know_is_kept_in_the_dlq() {
        let (_dir, mut v, names) = offline();
        let h = landed("page", "elsewhere");
        let (r, out) = process(&mut v, &h, b"{}");
        r.unwrap();
        let (kind, _) = the_dead_letter(&names, &out);
        assert_eq!(kind, "no_schema");
        let detail = crate::contract::DeadLetter::read(Some(&out[0].headers))
            .detail
            .to_owned();
        assert!(detail.contains("s/elsewhere"), "{detail}");
    }

    /// The quiet DLQ: the same failure again is counted on the dead letter's entry (same key,
    /// one more occurrence, in the dlq-index partition of the landing partition) and not
    /// written again; a replayed one is always written; an aborted batch's repeats are undone.
    #[test]
    fn a_repeated_failure_is_counted_not_written_again() {
        let (_dir, mut v, names) = offline();
        let h = landed("page", "a");
        let page = br#"{"data":[{"id":"1""#;
        let entry = |out: &[crate::kafka::eos::Sent]| {
            let e: Vec<_> = out
                .iter()
                .filter(|s| s.topic == names.dlq_index())
                .collect();
            assert_eq!(e.len(), 1, "{out:?}");
            assert_eq!(e[0].partition, Some(2), "the landing partition's");
            let entry =
                crate::contract::DlqRepeat::parse(e[0].payload.as_deref().unwrap()).unwrap();
            assert_eq!(e[0].key.as_deref(), Some(entry.key().as_bytes()));
            entry
        };
        let (r, first) = process(&mut v, &h, page);
        r.unwrap();
        assert_eq!(the_dead_letter(&names, &first).0, "malformed_json");
        let e1 = entry(&first);
        assert_eq!((e1.occurrences, e1.landing_partition), (1, 2));
        for n in 2..=3 {
            let (r, again) = process(&mut v, &h, page);
            r.unwrap();
            assert!(again.iter().all(|s| s.topic != names.dlq()), "{again:?}");
            let e = entry(&again);
            assert_eq!((e.occurrences, e.key()), (n, e1.key()));
        }
        // Another page: another dead letter.
        let (_, other) = process(&mut v, &h, br#"{"data":["#);
        assert_eq!(the_dead_letter(&names, &other).0, "malformed_json");
        // A replay of it is written again.
        let replayed = landing(&[
            (headers::KIND, "page"),
            (headers::SOURCE, "s"),
            (headers::STREAM, "a"),
            (headers::REPLAY_ID, "r1"),
        ]);
        let (_, out) = process(&mut v, &replayed, page);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].topic, names.dlq());
        // After an abort (and a restore that finds nothing committed), the dead letters and
        // repeats of the aborted batch never happened: the next failure is written again.
        let base = Kafka::new(
            &Config::from_toml("[kafka]\nbrokers = \"127.0.0.1:1\"")
                .unwrap()
                .kafka,
        )
        .unwrap();
        v.aborted(&base, &[(names.landing(), 2)]);
        let (_, out) = process(&mut v, &h, page);
        assert_eq!(the_dead_letter(&names, &out).0, "malformed_json");
        assert_eq!(entry(&out).occurrences, 1);
    }

    /// A record too large for the DLQ is kept by reference to its landing record (the claim
    /// check of its page); its failure is still the record's: a later page (another
    /// reference) with the same record failing the same way is a repeat of it, and a page
    /// with the same reference but another record is not.
    #[test]
    fn a_record_kept_by_reference_is_judged_by_its_own_bytes() {
        let (_dir, mut v, names) = offline();
        v.limits.dlq = 600;
        let h = landed("blob-ref", "a");
        let big = format!(r#"{{"id":"1","v":1,"pad":"{}"}}"#, "x".repeat(700));
        let other = format!(r#"{{"id":"2","v":1,"pad":"{}"}}"#, "y".repeat(700));
        let why = Rejection::whole(DriftKind::BadVersion, "no version");
        let mut judge = |offset: i64, reference: &[u8], record: &str| {
            let landing_topic = v.landing.clone();
            let msg = Consumed::new(
                &landing_topic,
                2,
                offset,
                Some(b"s/a"),
                Some(reference),
                Some(&h),
            );
            let mut out = Vec::new();
            v.dead_letter(
                &msg,
                &mut Sink::memory(&mut out),
                Some(record.as_bytes()),
                &why,
                None,
                Some(0),
            )
            .unwrap();
            out
        };
        let first = judge(7, br#"{"blob":"page-1"}"#, &big);
        let dead: Vec<_> = first.iter().filter(|s| s.topic == names.dlq()).collect();
        assert_eq!(dead.len(), 1, "{first:?}");
        assert_eq!(
            dead[0].payload.as_deref(),
            Some(&br#"{"blob":"page-1"}"#[..]),
            "kept by reference"
        );
        let again = judge(8, br#"{"blob":"page-2"}"#, &big);
        assert!(
            again.iter().all(|s| s.topic != names.dlq()),
            "the same record from another page is a repeat: {again:?}"
        );
        let changed = judge(9, br#"{"blob":"page-1"}"#, &other);
        assert!(
            changed.iter().any(|s| s.topic == names.dlq()),
            "another record behind the same reference is a new dead letter: {changed:?}"
        );
    }

    #[test]
    fn a_page_that_is_not_json_is_kept_whole_without_asking_the_registry() {
        let (_dir, mut v, names) = offline();
        let h = landed("page", "a");
        let (r, out) = process(&mut v, &h, br#"{"data":[{"id":"1""#);
        r.unwrap();
        let (kind, value) = the_dead_letter(&names, &out);
        assert_eq!(kind, "malformed_json");
        assert_eq!(value, br#"{"data":[{"id":"1""#);
    }

    #[test]
    fn a_registry_outage_is_unavailable_with_a_growing_hint_and_sends_nothing() {
        let (_dir, mut v, _names) = offline();
        let h = landed("page", "a");
        let mut hints = Vec::new();
        for _ in 0..2 {
            let (r, out) = process(&mut v, &h, br#"{"data":[{"id":"1","v":1}]}"#);
            assert!(out.is_empty(), "{out:?}");
            match r {
                Err(StageError::Unavailable { retry_in, .. }) => hints.push(retry_in),
                other => panic!("not unavailable: {other:?}"),
            }
        }
        assert_eq!(
            hints,
            [Duration::from_millis(200), Duration::from_millis(400)]
        );
        // A record that needs no registry succeeds and resets the hint.
        let (r, _) = process(&mut v, &landing(&[]), b"{}");
        r.unwrap();
        assert_eq!(v.backoff, Duration::ZERO);
    }
}
