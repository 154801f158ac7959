//! The dedup stage: every stream's valid topic → its curated compacted topic, exactly once.
//!
//! [`run`] drives the shared exactly-once loop ([`crate::kafka::eos`]) on a dedicated thread
//! with a [`DedupProcessor`], which keeps one [`PartitionState`] per assigned input partition.
//!
//! # Partitions
//!
//! A stream's valid and curated topics have the same partition count (checked at start) and the
//! same keying, and every output of valid partition `p` is written to curated partition `p`
//! explicitly. So curated partition `p` holds exactly the outputs of valid partition `p`, and the
//! state of `p` can be rebuilt from it alone, whoever wrote it before.
//!
//! # Input (the valid-topic contract)
//!
//! Data records: key = primary key; value = Confluent-framed Avro, passed through unchanged;
//! headers `intake.op` (`upsert` | `delete`), `intake.version` (decimal i64), `intake.hash` (16
//! hex digits). Sync markers: `intake.kind` = `sync-begin` | `sync-end` with `intake.sync_id` and
//! `intake.mode` (`full` | `incremental`), one on every partition. A record that breaks the
//! contract goes to the DLQ (`dlq.error.kind` = `contract_violation`) and nothing else changes.
//!
//! # Output
//!
//! Only when [`decide`](super::decide) says [`Decision::Emit`]: the input record (key, value,
//! headers) to the curated topic; a tombstone (value None) for a delete. Every output, tombstones
//! included, carries `intake.version`, `intake.hash` and `intake.op`, so the stamp of every key
//! can be restored from the curated topic alone. Tombstones of a full sync carry the key's stored
//! version, hash `0000000000000000`, `intake.op` = `delete` and the sync id.
//!
//! # State: restore, abort, rebalance
//!
//! - On assignment ([`Processor::assigned`], before any input of the partition): wait until the
//!   group's committed offsets of the partitions are stable (a read_committed offset fetch
//!   waits for the previous owner's pending transaction), then read curated partition `p` to its
//!   end with [`reader::read_to_end`] and [`PartitionState::restore`] every record. The restored
//!   state is exactly the effect of the input up to the committed offset, which is where
//!   consumption resumes.
//!
//!   The end matters: a transaction the previous owner committed just before the hand-over can
//!   still be pending (its commit markers are written after `commit_transaction` returns), and a
//!   read that stopped at the last stable offset would miss its records, so the state would emit
//!   older versions after newer ones. `read_to_end` reads to the true high watermark and waits
//!   for such transactions to end.
//! - After an abort ([`Processor::aborted`]): the state is ahead of the committed output, so it is
//!   thrown away and restored the same way; the loop rewinds the input to the last commit.
//! - On revocation: the state is dropped.
//!
//! # Scaling and restarts
//!
//! Every process of the group `<group_prefix>-dedup` is named by its instance id
//! (`INTAKE_INSTANCE_ID`): `<group>-<instance>` is both its transactional id and its static
//! group membership (`group.instance.id`), as in validate. A restarted process fences its
//! predecessor's producer (aborting its open transaction at once) and takes its partitions back
//! without a rebalance; partitions of a process that does not come back move to the others
//! after the session time-out; a new process joins by a cooperative rebalance, in which the
//! current owner commits its open transaction before it lets partitions go. Processes running
//! at the same time need distinct instance ids. A process restarted between the two rounds of
//! a cooperative rebalance would strand the partitions it was giving up; the loop's group watch
//! ([`crate::kafka::group`]) makes the group rebalance.
//!
//! # Full syncs after a restart (a known limit)
//!
//! Which keys an open full sync has seen lives only in memory. A restored state therefore has no
//! open sync: a `sync-end` whose `sync-begin` this process did not see in that partition since
//! the state was built (a restart, a rebalance or an abort in the middle of the sync) is skipped
//! with a log line and `intake_dedup_syncs_skipped_total`. Its deletes are then late (the next
//! complete full sync makes them), never wrong. Persisting the seen marks is out of scope.
//!
//! Tombstones restored from the curated topic keep deleted keys deleted against older versions
//! that arrive later, for as long as the broker keeps them (`delete.retention.ms`, one day in
//! `topics/topics.toml`); after that a key's delete is forgotten by a newly restored state.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::kafka::consumed::Consumed;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;

use super::merge::{Decision, Stamp};
use super::state::PartitionState;
use crate::config::{Config, ConfigError};
use crate::contract::{DeadLetter, SyncMarker, ValidStamp};
use crate::headers::{self, Headers};
use crate::kafka::eos::{self, LoopConfig, Processor, Sink, Tp};
use crate::kafka::txn::Backoff;
use crate::kafka::{Kafka, Outgoing, Reader, reader};
use crate::stage::{Stage, StageError};
use crate::telemetry::metric;
use crate::topics::TopicNames;

/// Most input records per transaction.
const MAX_BATCH: usize = 10_000;
/// About the size of a batch in KiB (records of ~1 KiB): librdkafka's queues are sized from it.
const BATCH_KIB: usize = 10 * 1024;
/// Longest a transaction stays open collecting a batch: the added latency of a record.
const LINGER: Duration = Duration::from_millis(200);
/// Update the state-size gauges after this many records (computing them walks every partition).
const GAUGE_EVERY: u64 = 65_536;

/// Why the dedup stage could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Kafka could not be reached or refused a client.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// No stream is configured, so there is nothing to consume.
    #[error("no stream is configured: dedup has nothing to consume")]
    NoStreams,
    /// A topic of a configured stream is missing.
    #[error("topic {topic}: {source} (create it with `intake topics apply`)")]
    MissingTopic {
        /// The topic.
        topic: String,
        /// The metadata error.
        source: KafkaError,
    },
    /// A stream's valid and curated topics differ in partition count.
    #[error(
        "{valid} has {valid_partitions} partitions but {curated} has {curated_partitions}: \
         dedup writes partition p of one to partition p of the other; give both the same count"
    )]
    PartitionMismatch {
        /// The valid topic.
        valid: String,
        /// Its partition count.
        valid_partitions: i32,
        /// The curated topic.
        curated: String,
        /// Its partition count.
        curated_partitions: i32,
    },
    /// The stage's thread could not start or died.
    #[error(transparent)]
    Thread(#[from] crate::stage::ThreadError),
}

/// Runs the dedup stage until `shutdown` resolves: consumes every configured stream's valid
/// topic in the group `<group_prefix>-dedup` and writes the curated topics, exactly once.
///
/// The exactly-once loop blocks, so it runs on a dedicated thread; on shutdown the open
/// transaction is committed and the group is left.
///
/// # Errors
///
/// [`DedupError`] when the stage cannot start (no streams, missing topics, partition counts that
/// differ, Kafka unreachable) or its thread fails.
pub async fn run(
    cfg: Arc<Config>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DedupError> {
    let kafka = Kafka::new(&cfg.kafka)?.with_queues_for_batch(BATCH_KIB);
    let names = TopicNames::from_config(&cfg);
    let streams = streams(&cfg, &names);
    if streams.is_empty() {
        return Err(DedupError::NoStreams);
    }
    let group = kafka.group(Stage::Dedup);
    let member = crate::kafka::txn::stage_member(&cfg, Stage::Dedup);
    let loop_cfg = LoopConfig {
        group: group.clone(),
        topics: streams.iter().map(|s| s.valid.clone()).collect(),
        // Static group membership, named like the transactional id: a restarted process takes
        // its partitions back at once instead of stalling the group until the session of its
        // killed predecessor times out. Only the loop's consumer gets it; the processor's
        // readers never join the group.
        group_instance: Some(member.clone()),
        transactional_id: member,
        max_batch: MAX_BATCH,
        linger: LINGER,
    };
    let dlq = names.dlq();
    let restore_timeout = restore_timeout(&cfg);
    crate::stage::on_thread(Stage::Dedup, shutdown, move |stop| {
        // The processor's restores watch the same flag (a shutdown ends a long restore).
        let mut processor =
            DedupProcessor::new(&kafka, &group, streams, dlq, restore_timeout, stop.clone())?;
        processor.check_partitions(&stop)?;
        eos::run(&kafka, &loop_cfg, &mut processor, &stop)?;
        Ok(())
    })
    .await
}

/// How long one restore may take: long enough to wait out a vanished owner's open transaction
/// (`transaction_timeout`) and to read a large partition. On time-out the restore is retried.
fn restore_timeout(cfg: &Config) -> Duration {
    (cfg.kafka.transaction_timeout * 3).max(Duration::from_secs(300))
}

/// One configured stream as dedup sees it.
#[derive(Debug, Clone)]
pub struct StreamTopics {
    /// Source name.
    pub source: String,
    /// Stream name.
    pub stream: String,
    /// Input topic.
    pub valid: String,
    /// Output topic (compacted).
    pub curated: String,
    /// Whether completed full syncs tombstone the keys they did not see.
    pub detect_deletes: bool,
}

/// Every configured stream.
fn streams(cfg: &Config, names: &TopicNames) -> Vec<StreamTopics> {
    cfg.sources
        .iter()
        .flat_map(|src| {
            src.streams.iter().map(|st| StreamTopics {
                source: src.name.clone(),
                stream: st.name.clone(),
                valid: names.valid(&src.name, &st.name),
                curated: names.curated(&src.name, &st.name),
                detect_deletes: st.detect_deletes,
            })
        })
        .collect()
}

/// The counters and gauges of one stream, registered once.
struct StreamMetrics {
    emitted: metrics::Counter,
    stale: metrics::Counter,
    identical: metrics::Counter,
    tombstones: metrics::Counter,
    syncs_skipped: metrics::Counter,
    rejected: metrics::Counter,
    state_keys: metrics::Gauge,
    state_bytes: metrics::Gauge,
}

impl StreamMetrics {
    fn new(s: &StreamTopics) -> Self {
        let labels = [("source", s.source.clone()), ("stream", s.stream.clone())];
        Self {
            emitted: metrics::counter!(metric::DEDUP_EMITTED, &labels),
            stale: metrics::counter!(metric::DEDUP_STALE, &labels),
            identical: metrics::counter!(metric::DEDUP_IDENTICAL, &labels),
            tombstones: metrics::counter!(metric::DEDUP_TOMBSTONES, &labels),
            syncs_skipped: metrics::counter!(metric::DEDUP_SYNCS_SKIPPED, &labels),
            rejected: metrics::counter!(metric::DEDUP_REJECTED, &labels),
            state_keys: metrics::gauge!(metric::DEDUP_STATE_KEYS, &labels),
            state_bytes: metrics::gauge!(metric::DEDUP_STATE_BYTES, &labels),
        }
    }
}

/// One input topic and the state of its assigned partitions.
struct Topic {
    info: StreamTopics,
    metrics: StreamMetrics,
    /// Assigned partition → its state; `None` while it must be restored before use (a restore
    /// after an abort that was interrupted by shutdown).
    parts: BTreeMap<i32, Option<PartitionState>>,
}

impl Topic {
    fn update_gauges(&self) {
        let (keys, bytes) = self
            .parts
            .values()
            .flatten()
            .fold((0, 0), |(k, b), s| (k + s.len(), b + s.approx_bytes()));
        self.metrics.state_keys.set(keys as f64);
        self.metrics.state_bytes.set(bytes as f64);
    }
}

/// The dedup [`Processor`]: one [`PartitionState`] per assigned valid-topic partition.
pub struct DedupProcessor {
    /// Valid topic → stream and partition states.
    topics: HashMap<String, Topic>,
    /// Group-less read_committed reader that restores states from the curated topics.
    reader: Reader,
    /// A read_committed client of the stage's group that never joins it: fetching the group's
    /// committed offsets through it waits until no transaction of a previous owner is pending.
    offsets: BaseConsumer,
    /// The DLQ topic, for records that break the valid-topic contract.
    dlq: String,
    /// Longest one restore may take.
    restore_timeout: Duration,
    /// Set on shutdown: a restore that keeps failing gives up.
    stop: Arc<AtomicBool>,
    /// Records processed, for the gauge cadence.
    processed: u64,
}

impl DedupProcessor {
    /// A processor for `streams`, consuming in `group`.
    ///
    /// # Errors
    /// Invalid client configuration.
    pub fn new(
        kafka: &Kafka,
        group: &str,
        streams: Vec<StreamTopics>,
        dlq: String,
        restore_timeout: Duration,
        stop: Arc<AtomicBool>,
    ) -> KafkaResult<Self> {
        let topics = streams
            .into_iter()
            .map(|info| {
                let metrics = StreamMetrics::new(&info);
                (
                    info.valid.clone(),
                    Topic {
                        info,
                        metrics,
                        parts: BTreeMap::new(),
                    },
                )
            })
            .collect();
        Ok(Self {
            topics,
            reader: kafka.reader_consumer(Stage::Dedup.name())?,
            offsets: kafka.group_consumer(group, None, DefaultConsumerContext)?,
            dlq,
            restore_timeout,
            stop,
            processed: 0,
        })
    }

    /// Checks that every stream's valid and curated topics exist with one partition count.
    /// Started while the brokers are away, dedup waits for them here (logged, until `stop`)
    /// instead of ending.
    ///
    /// # Errors
    /// [`DedupError::MissingTopic`] or [`DedupError::PartitionMismatch`].
    pub fn check_partitions(&self, stop: &AtomicBool) -> Result<(), DedupError> {
        let count = |topic: &str| {
            crate::kafka::retry::retrying_here("count a topic's partitions", stop, || {
                reader::partition_count(&self.reader, topic, Duration::from_secs(30))
            })
            .map_err(|source| DedupError::MissingTopic {
                topic: topic.to_owned(),
                source,
            })
        };
        for t in self.topics.values() {
            let (valid, curated) = (count(&t.info.valid)?, count(&t.info.curated)?);
            if valid != curated {
                return Err(DedupError::PartitionMismatch {
                    valid: t.info.valid.clone(),
                    valid_partitions: valid,
                    curated: t.info.curated.clone(),
                    curated_partitions: curated,
                });
            }
        }
        Ok(())
    }

    /// Builds fresh states of `tps` from the curated topics. Nothing is installed here, so a
    /// failed restore leaves the processor as it was.
    fn restore(&self, tps: &[Tp]) -> KafkaResult<Vec<(Tp, PartitionState)>> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in tps {
            if self.topics.contains_key(t) {
                by_topic.entry(t).or_default().push(*p);
            } else {
                tracing::warn!(topic = %t, "assigned a topic that is not a configured valid topic; ignored");
            }
        }
        let mut out = Vec::with_capacity(tps.len());
        for (valid, partitions) in by_topic {
            let info = &self.topics[valid].info;
            let started = Instant::now();
            let mut states: BTreeMap<i32, PartitionState> = partitions
                .iter()
                .map(|p| (*p, PartitionState::new()))
                .collect();
            let mut skipped = 0u64;
            let read = reader::read_to_end(
                &self.reader,
                &info.curated,
                &partitions,
                self.restore_timeout,
                |m| {
                    let restored = m.key().ok_or(Violation::new("no key")).and_then(|key| {
                        let h = headers::View::of(m.headers());
                        Ok((key, stamp_of(&Consumed::of(m), h.as_ref())?))
                    });
                    match (restored, states.get_mut(&m.partition())) {
                        (Ok((key, stamp)), Some(state)) => state.restore(key, stamp),
                        (Err(v), _) => {
                            skipped += 1;
                            tracing::warn!(topic = %info.curated, partition = m.partition(), offset = m.offset(),
                            error = %v.detail, "curated record without a restorable stamp; skipped");
                        }
                        (Ok(_), None) => {}
                    }
                },
            )?;
            // Records applied before this restore are not remembered with their fetch time: a
            // full sync that started before now deletes nothing (see dedup::state).
            let now = u32::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
            for s in states.values_mut().filter(|s| !s.is_empty()) {
                s.forget_before(now);
            }
            let keys: usize = states.values().map(PartitionState::len).sum();
            tracing::info!(source = %info.source, stream = %info.stream, ?partitions, records = read, keys, skipped,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "dedup state restored");
            out.extend(states.into_iter().map(|(p, s)| ((valid.to_owned(), p), s)));
        }
        Ok(out)
    }

    /// Waits until the group's committed offsets of `tps` are stable (no pending transaction of
    /// a previous owner), so the curated topic read next already holds everything they cover.
    fn await_stable_offsets(&self, tps: &[Tp]) -> KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in tps {
            tpl.add_partition(t, *p);
        }
        let committed = self.offsets.committed_offsets(tpl, self.restore_timeout)?;
        for e in committed.elements() {
            tracing::debug!(topic = e.topic(), partition = e.partition(), offset = ?e.offset(), "committed offset");
        }
        Ok(())
    }

    fn install(&mut self, restored: Vec<(Tp, PartitionState)>) {
        let mut touched = Vec::new();
        for ((t, p), state) in restored {
            if let Some(topic) = self.topics.get_mut(&t) {
                topic.parts.insert(p, Some(state));
                touched.push(t);
            }
        }
        touched.dedup();
        for t in touched {
            self.topics[&t].update_gauges();
        }
    }

    /// Handles a sync marker of partition `partition`; returns the tombstones to emit.
    fn marker(
        info: &StreamTopics,
        metrics: &StreamMetrics,
        state: &mut PartitionState,
        partition: i32,
        m: SyncMarker<'_>,
        started: Option<u32>,
    ) -> Vec<super::Tombstone> {
        if !info.detect_deletes || !m.full {
            return Vec::new();
        }
        if m.begin {
            if let Some(abandoned) = state.begin_sync_at(m.sync_id, started) {
                tracing::info!(source = %info.source, stream = %info.stream, partition, sync_id = m.sync_id,
                    abandoned = %abandoned, "full sync began before the previous one ended; the previous one deletes nothing");
            }
            return Vec::new();
        }
        match state.end_sync(m.sync_id) {
            Ok(tombstones) => {
                tracing::info!(source = %info.source, stream = %info.stream, partition, sync_id = m.sync_id,
                    tombstones = tombstones.len(), "full sync ended");
                tombstones
            }
            Err(e) => {
                metrics.syncs_skipped.increment(1);
                tracing::info!(source = %info.source, stream = %info.stream, partition, error = %e,
                    "full sync end skipped; its deletes wait for the next full sync");
                Vec::new()
            }
        }
    }
}

impl Processor for DedupProcessor {
    fn stage(&self) -> &'static str {
        Stage::Dedup.name()
    }

    fn assigned(&mut self, _kafka: &Kafka, tps: &[Tp]) -> KafkaResult<()> {
        self.await_stable_offsets(tps)?;
        let restored = self.restore(tps)?;
        self.install(restored);
        Ok(())
    }

    fn tick(&mut self) {
        for t in self.topics.values() {
            t.update_gauges();
        }
    }

    fn revoked(&mut self, tps: &[Tp]) {
        for (t, p) in tps {
            if let Some(topic) = self.topics.get_mut(t) {
                topic.parts.remove(p);
                topic.update_gauges();
            }
        }
    }

    fn process(&mut self, msg: &Consumed<'_>, sink: &mut Sink<'_>) -> Result<(), StageError> {
        let partition = msg.partition();
        let Some(topic) = self.topics.get_mut(msg.topic()) else {
            tracing::warn!(
                topic = msg.topic(),
                "record of a topic that is not a configured valid topic; skipped"
            );
            return Ok(());
        };
        self.processed += 1;
        if self.processed.is_multiple_of(GAUGE_EVERY) {
            topic.update_gauges();
        }
        let state = match topic.parts.get_mut(&partition) {
            Some(Some(state)) => state,
            // Its restore after an abort gave up (shutdown): fail the batch rather than guess.
            Some(None) => {
                return Err(StageError::Unavailable {
                    what: format!("the state of {}/{partition} is not restored", msg.topic()),
                    retry_in: Duration::ZERO,
                });
            }
            None => {
                tracing::warn!(
                    topic = msg.topic(),
                    partition,
                    "record of an unassigned partition; skipped"
                );
                return Ok(());
            }
        };
        let info = &topic.info;
        let metrics = &topic.metrics;
        // Read once: the contract's readers below ask five questions of each record.
        let view = headers::View::of(msg.headers());
        let h = view.as_ref();
        match parse(msg, h) {
            Ok(Input::Record { key, stamp }) => {
                let decision = match headers::fetched_at_secs(h) {
                    Some(at) => state.apply_observed(key, stamp, at),
                    None => state.apply(key, stamp),
                };
                match decision {
                    Decision::Emit => {}
                    Decision::Stale => metrics.stale.increment(1),
                    Decision::Identical => metrics.identical.increment(1),
                }
                let emit = decision == Decision::Emit
                    || (crate::faults::hit(crate::faults::Fault::DedupStale) && {
                        tracing::warn!(
                            fault = crate::faults::Fault::DedupStale.name(),
                            key = %String::from_utf8_lossy(key),
                            ?stamp,
                            "deliberate fault: a record that lost the merge emitted"
                        );
                        true
                    });
                if emit {
                    sink.send(Outgoing {
                        topic: &info.curated,
                        key: Some(key),
                        payload: if stamp.is_delete() {
                            None
                        } else {
                            msg.payload()
                        },
                        headers: view.as_ref().map_or_else(
                            rdkafka::message::OwnedHeaders::new,
                            headers::View::to_owned_headers,
                        ),
                        partition: Some(partition),
                    })?;
                    metrics.emitted.increment(1);
                    if stamp.is_delete() {
                        metrics.tombstones.increment(1);
                    }
                }
            }
            Ok(Input::Marker(m)) => {
                let sync_id = m.sync_id;
                let started = headers::fetched_at_secs(h);
                for t in Self::marker(info, metrics, state, partition, m, started) {
                    let h = ValidStamp::delete(t.stamp.version())
                        .write(
                            Headers::new()
                                .with(headers::SOURCE, &info.source)
                                .with(headers::STREAM, &info.stream),
                        )
                        .with(headers::SYNC_ID, sync_id);
                    sink.send(Outgoing {
                        topic: &info.curated,
                        key: Some(&t.key),
                        payload: None,
                        headers: h.build(),
                        partition: Some(partition),
                    })?;
                    metrics.emitted.increment(1);
                    metrics.tombstones.increment(1);
                }
            }
            Err(v) => {
                metrics.rejected.increment(1);
                metrics::counter!(metric::ERRORS, "stage" => Stage::Dedup.name(), "class" => "bad_record").increment(1);
                let origin = format!("{}/{}/{}", msg.topic(), partition, msg.offset());
                tracing::warn!(source = %info.source, stream = %info.stream, %origin, error = %v.detail,
                    "record breaks the valid-topic contract; sent to the DLQ");
                let at = headers::now_rfc3339();
                let h = DeadLetter::new(
                    Stage::Dedup.name(),
                    "contract_violation",
                    &v.detail,
                    &origin,
                    &at,
                )
                .write(headers::copy_all(msg.headers()));
                let dlq_key = format!("{}/{}", info.source, info.stream);
                sink.send(Outgoing {
                    topic: &self.dlq,
                    key: Some(dlq_key.as_bytes()),
                    payload: msg.payload(),
                    headers: h.build(),
                    partition: None,
                })?;
            }
        }
        Ok(())
    }

    fn aborted(&mut self, _kafka: &Kafka, tps: &[Tp]) {
        let mut backoff = Backoff::default();
        let owned: Vec<Tp> = tps
            .iter()
            .filter(|(t, p)| self.topics.get(t).is_some_and(|x| x.parts.contains_key(p)))
            .cloned()
            .collect();
        for (t, p) in &owned {
            // Until restored, the partition refuses records (see `process`).
            if let Some(slot) = self.topics.get_mut(t).and_then(|x| x.parts.get_mut(p)) {
                *slot = None;
            }
        }
        loop {
            match self.restore(&owned) {
                Ok(restored) => return self.install(restored),
                Err(e) if !self.stop.load(Ordering::Relaxed) => {
                    tracing::warn!(error = %e, "rebuilding dedup state after an abort failed; retrying");
                    std::thread::sleep(backoff.next_pause());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rebuilding dedup state after an abort failed; stopping");
                    return;
                }
            }
        }
    }
}

/// A valid-topic record, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Input<'a> {
    /// A data record: an upsert (value passed through) or a delete.
    Record { key: &'a [u8], stamp: Stamp },
    /// A sync marker.
    Marker(SyncMarker<'a>),
}

/// How a record breaks the valid-topic contract.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    detail: String,
}

impl Violation {
    fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
        }
    }
}

/// Parses a valid-topic record (the contracts of [`SyncMarker`] and [`ValidStamp`]); `h` is
/// the view of its headers.
fn parse<'a>(msg: &Consumed<'a>, h: Option<&'a headers::View<'_>>) -> Result<Input<'a>, Violation> {
    if let Some(marker) = SyncMarker::read(h) {
        return marker.map(Input::Marker).map_err(Violation::new);
    }
    let key = msg
        .key()
        .ok_or_else(|| Violation::new("data record without a key"))?;
    if headers::get(h, headers::OP).is_none() {
        return Err(Violation::new(format!(
            "data record without {}",
            headers::OP
        )));
    }
    let stamp = stamp_of(msg, h)?;
    Ok(Input::Record { key, stamp })
}

/// The stamp in a record's headers (`h`): `intake.op`, `intake.version`, `intake.hash`. A
/// record without a value is a delete even without `intake.op` (a curated tombstone).
fn stamp_of<H: rdkafka::message::Headers>(
    msg: &Consumed<'_>,
    h: Option<&H>,
) -> Result<Stamp, Violation> {
    let s = ValidStamp::read(h, msg.payload().is_some()).map_err(Violation::new)?;
    let version = s.version.expect("a stamp read back has a version");
    Ok(if s.is_delete() {
        Stamp::delete(version)
    } else {
        Stamp::upsert(version, s.hash)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::DELETE_HASH;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn msg(key: Option<&str>, value: Option<&str>, h: &[(&str, &str)]) -> OwnedMessage {
        let headers = h
            .iter()
            .fold(Headers::new(), |acc, (k, v)| acc.with(k, v))
            .build();
        OwnedMessage::new(
            value.map(|v| v.as_bytes().to_vec()),
            key.map(|k| k.as_bytes().to_vec()),
            "p.s.t.valid".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(headers),
        )
    }

    /// What the loop would hand the processor for `m`.
    fn view(m: &OwnedMessage) -> Consumed<'_> {
        Consumed::new(
            m.topic(),
            m.partition(),
            m.offset(),
            m.key(),
            m.payload(),
            m.headers(),
        )
    }

    /// `parse` of `m` as `process` calls it, with the view of its headers.
    macro_rules! parsed {
        ($m:expr) => {
            parse(&view($m), headers::View::of(view($m).headers()).as_ref())
        };
    }

    fn violation(m: &OwnedMessage) -> String {
        parsed!(m).expect_err("a violation").detail
    }

    #[test]
    fn parses_upserts_and_deletes() {
        let m = msg(
            Some("k1"),
            Some("avro"),
            &[
                ("intake.op", "upsert"),
                ("intake.version", "-7"),
                ("intake.hash", "00000000000000ff"),
            ],
        );
        assert_eq!(
            parsed!(&m),
            Ok(Input::Record {
                key: b"k1",
                stamp: Stamp::upsert(-7, 255)
            })
        );
        let m = msg(
            Some("k1"),
            None,
            &[
                ("intake.op", "delete"),
                ("intake.version", "9"),
                ("intake.hash", DELETE_HASH),
            ],
        );
        assert_eq!(
            parsed!(&m),
            Ok(Input::Record {
                key: b"k1",
                stamp: Stamp::delete(9)
            })
        );
        // A delete needs no hash; a curated tombstone without `intake.op` is a delete.
        let m = msg(Some("k1"), None, &[("intake.version", "9")]);
        assert_eq!(stamp_of(&view(&m), m.headers()), Ok(Stamp::delete(9)));
    }

    #[test]
    fn parses_sync_markers() {
        // (key, kind, mode, the marker read)
        let cases = [
            (
                None,
                "sync-begin",
                "full",
                SyncMarker {
                    begin: true,
                    sync_id: "s1",
                    full: true,
                },
            ),
            (
                Some("x"),
                "sync-end",
                "incremental",
                SyncMarker {
                    begin: false,
                    sync_id: "s1",
                    full: false,
                },
            ),
        ];
        for (key, kind, mode, marker) in cases {
            let m = msg(
                key,
                None,
                &[
                    ("intake.kind", kind),
                    ("intake.sync_id", "s1"),
                    ("intake.mode", mode),
                ],
            );
            assert_eq!(parsed!(&m), Ok(Input::Marker(marker)), "{kind}");
        }
    }

    #[test]
    fn contract_violations_name_the_header() {
        let up = |h: &[(&str, &str)]| msg(Some("k"), Some("v"), h);
        assert!(
            violation(&up(&[("intake.op", "upsert"), ("intake.version", "1")]))
                .contains("intake.hash")
        );
        assert!(
            violation(&up(&[
                ("intake.op", "upsert"),
                ("intake.version", "1"),
                ("intake.hash", "ff")
            ]))
            .contains("16 hex")
        );
        assert!(
            violation(&up(&[
                ("intake.op", "upsert"),
                ("intake.version", "1.5"),
                ("intake.hash", DELETE_HASH)
            ]))
            .contains("intake.version")
        );
        assert!(
            violation(&up(&[("intake.op", "merge"), ("intake.version", "1")]))
                .contains("intake.op")
        );
        assert!(violation(&up(&[("intake.version", "1")])).contains("intake.op"));
        assert!(violation(&msg(Some("k"), None, &[("intake.version", "1")])).contains("intake.op"));
        let m = msg(
            None,
            Some("v"),
            &[
                ("intake.op", "upsert"),
                ("intake.version", "1"),
                ("intake.hash", DELETE_HASH),
            ],
        );
        assert!(violation(&m).contains("key"));
        let m = msg(
            Some("k"),
            None,
            &[
                ("intake.op", "upsert"),
                ("intake.version", "1"),
                ("intake.hash", DELETE_HASH),
            ],
        );
        assert!(violation(&m).contains("without a value"));
        let m = msg(None, None, &[("intake.kind", "page")]);
        assert!(violation(&m).contains("intake.kind"));
        let m = msg(
            None,
            None,
            &[("intake.kind", "sync-end"), ("intake.sync_id", "s")],
        );
        assert!(violation(&m).contains("intake.mode"));
        let m = msg(
            None,
            None,
            &[("intake.kind", "sync-end"), ("intake.mode", "full")],
        );
        assert!(violation(&m).contains("intake.sync_id"));
    }

    #[test]
    fn restore_timeout_outlasts_a_pending_transaction() {
        let cfg = crate::testing::config("transaction_timeout = \"200s\"");
        assert_eq!(restore_timeout(&cfg), Duration::from_secs(600));
        let cfg = crate::testing::config("");
        assert_eq!(restore_timeout(&cfg), Duration::from_secs(300));
    }

    #[test]
    fn streams_cover_every_configured_stream() {
        let cfg = crate::testing::config(&format!(
            "[topics]\nprefix = \"p\"\n{}{}{}",
            crate::testing::source_toml("a", "http://h", ""),
            crate::testing::stream_toml("s1", "/s1", "detect_deletes = true"),
            crate::testing::stream_toml("s2", "/s2", "")
        ));
        let s = streams(&cfg, &TopicNames::from_config(&cfg));
        assert_eq!(s.len(), 2);
        assert_eq!(
            (
                s[0].valid.as_str(),
                s[0].curated.as_str(),
                s[0].detect_deletes
            ),
            ("p.a.s1.valid", "p.a.s1", true)
        );
        assert!(!s[1].detect_deletes);
    }
}
