//! The exactly-once consume-transform-produce loop shared by validate and dedup.
//!
//! One dedicated thread per process runs: poll a batch → begin a transaction → the stage's
//! [`Processor`] sends outputs straight into the transaction (borrowing the input bytes; no
//! intermediate copies) → `send_offsets_to_transaction` with the consumer's group metadata →
//! commit. A transaction carries a batch (up to `max_batch` records or `linger`, or less when
//! the input runs dry: a poll that finds nothing for 5 ms commits what is open), so commits
//! are amortised while records keep coming and the last ones are not held back.
//!
//! The transaction is begun, committed and aborted by [`txn`]'s rules, with this loop's
//! `policy()`: a retriable commit is repeated up to 5 times; a batch that does not commit is
//! aborted, the processor is told (its in-memory state may be ahead of the committed output)
//! and every partition of the batch is rewound to where the batch began; when the producer is
//! fenced or broken, or its abort failed, it is replaced by a new one (whose init aborts the
//! open transaction) and the batch is rewound likewise.
//!
//! A fetcher that stops without saying so is caught: a partition whose position has not moved
//! for a whole [`STALL`] period (or twice the transaction timeout, if longer) while committed
//! records waited past it all along (the `read_committed` end, so another producer's open
//! transaction does not count) makes the loop start over with a new consumer and producer, as after a fatal consumer error.
//! The chaos test once saw a validate process keep its two partitions, poll, and receive
//! nothing from them for minutes after rewinding them during a registry outage.
//!
//! A loop that stops coming around (a call into librdkafka that does not return) is named: a
//! watchdog thread next to it logs an error with what the loop was doing once it has not
//! come around for [`STUCK`] (or twelve transaction timeouts, if longer), and counts it in
//! `intake_errors_total{class="loop_stuck"}`.
//!
//! Rebalances (cooperative-sticky) call back inside `poll`, on this same thread: on revoke the
//! open transaction is committed first (or aborted if it cannot commit), so no partition
//! changes owner with work in flight; the group metadata in the offsets makes a consumer that
//! lost its partitions unable to commit for them (KIP-447), which is what fences zombies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::consumed::Consumed;
use super::txn::{self, Backoff, OnFence, Outcome, Policy};
use super::{Kafka, Outgoing, TxnProducer, classify};
use crate::stage::StageError;
use crate::telemetry::metric;

/// How often the consumer-lag gauge is refreshed.
const LAG_EVERY: Duration = Duration::from_secs(2);
/// With a batch open, a poll that finds nothing for this long means the input is drained: the
/// batch commits then instead of waiting out `linger` (which only pays off while records keep
/// coming), so the last records of a burst are not held back. At 20 ms, input arriving every
/// 20 ms or so (pages at half of peak load) kept a batch open until its linger: `scripts/bench
/// latency` measured curated p99 1 095 ms at 20 ms and 728 ms at 5 ms, with the same throughput
/// in `scripts/bench all` (a backlog keeps the poll busy).
const IDLE: Duration = Duration::from_millis(5);

/// How long an assigned partition may keep its position with committed records waiting past it
/// before the loop starts over (at least; twice the transaction timeout when that is longer).
const STALL: Duration = Duration::from_secs(30);

/// How long the loop may go without coming around before the watchdog names what it is
/// doing (at least; twelve transaction timeouts when that is longer: a commit may be retried
/// five times, each with a flush and a commit bounded by the timeout).
const STUCK: Duration = Duration::from_secs(120);

/// A topic-partition.
pub type Tp = (String, i32);

/// What the loop is doing, for the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Starting = 0,
    Polling,
    Processing,
    Committing,
    Rewinding,
    Restoring,
    LookingForStalls,
    Stopping,
}

impl Phase {
    const ALL: [Self; 8] = [
        Self::Starting,
        Self::Polling,
        Self::Processing,
        Self::Committing,
        Self::Rewinding,
        Self::Restoring,
        Self::LookingForStalls,
        Self::Stopping,
    ];

    const fn describe(self) -> &'static str {
        match self {
            Self::Starting => "creating its consumer and producer",
            Self::Polling => "polling the consumer (rebalance callbacks run inside)",
            Self::Processing => "processing a record",
            Self::Committing => "committing a transaction",
            Self::Rewinding => "aborting a batch and rewinding its partitions",
            Self::Restoring => "restoring the state of assigned partitions",
            Self::LookingForStalls => "asking where its partitions stand",
            Self::Stopping => "stopping",
        }
    }
}

/// The loop's heartbeat: when it last came around, and what it is doing since.
struct Pulse {
    started: Instant,
    at_ms: AtomicU64,
    phase: AtomicU8,
}

impl Pulse {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            at_ms: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Starting as u8),
        }
    }

    /// The loop came around (or began a step that may block): `phase` is what it does now.
    fn beat(&self, phase: Phase) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms, Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Since when the loop is in its current phase, and that phase.
    fn since(&self) -> (Duration, Phase) {
        let at = Duration::from_millis(self.at_ms.load(Ordering::Relaxed));
        let phase = self.phase.load(Ordering::Relaxed);
        (
            self.started.elapsed().saturating_sub(at),
            Phase::ALL
                .get(usize::from(phase))
                .copied()
                .unwrap_or(Phase::Starting),
        )
    }
}

/// Logs (once per episode) when the loop has not come around for `limit`, until `done`.
fn watchdog(stage: &'static str, pulse: &Pulse, limit: Duration, done: &AtomicBool) {
    let mut reported = false;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        let (since, phase) = pulse.since();
        if since >= limit && !reported {
            reported = true;
            tracing::error!(
                stage,
                stuck_s = since.as_secs(),
                phase = phase.describe(),
                "the exactly-once loop has not come around for {} s; it is {}",
                since.as_secs(),
                phase.describe()
            );
            metrics::counter!(metric::ERRORS, "stage" => stage, "class" => "loop_stuck")
                .increment(1);
        } else if since < limit && reported {
            reported = false;
            tracing::warn!(stage, "the exactly-once loop came around again");
        }
    }
}

/// Catches partitions that stopped fetching: at each look (one per stall period), a partition
/// whose position is where the previous look found it has its `read_committed` end asked; it is
/// stalled when it is still there at the next look while that end was already past it (one
/// offset past the position is the last transaction's commit marker). Records must have waited
/// a whole period unread: records committed a moment before a look, to a partition idle since
/// the previous one, are not a stall (the watch once restarted an idle dedup for that, which
/// cost the full sync it was in the middle of its deletes). Only partitions that did not move
/// cost a request.
struct StallWatch {
    every: Duration,
    looked_at: Instant,
    /// Position at the last look, and the end asked then (when the position had not moved).
    positions: HashMap<Tp, (i64, Option<i64>)>,
}

/// One partition at one look: the end to remember (asked only when the position has not moved
/// since the previous look), and whether it is stalled.
fn stalled_at(
    previous: Option<(i64, Option<i64>)>,
    at: i64,
    end: impl FnOnce() -> Option<i64>,
) -> (Option<i64>, bool) {
    match previous {
        Some((was, waiting)) if was == at => {
            let end = end();
            let stalled = end.is_some() && waiting.is_some_and(|w| w - at > 1);
            (end, stalled)
        }
        _ => (None, false),
    }
}

impl StallWatch {
    fn new(every: Duration) -> Self {
        Self {
            every,
            looked_at: Instant::now(),
            positions: HashMap::new(),
        }
    }

    /// Forgets the positions (after a rebalance or a rewind: they may stand still for a reason).
    fn reset(&mut self) {
        self.looked_at = Instant::now();
        self.positions.clear();
    }

    /// The stalled partitions (position, end), when a look is due and finds any.
    fn look<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Vec<(Tp, i64, i64)> {
        if self.looked_at.elapsed() < self.every {
            return Vec::new();
        }
        self.looked_at = Instant::now();
        let Ok(positions) = consumer.position() else {
            return Vec::new();
        };
        let mut now = HashMap::new();
        let mut stalled = Vec::new();
        for e in positions.elements() {
            let Offset::Offset(at) = e.offset() else {
                continue;
            };
            let tp: Tp = (e.topic().to_owned(), e.partition());
            let (end, stuck) = stalled_at(self.positions.get(&tp).copied(), at, || {
                consumer
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                    .ok()
                    .map(|(_, end)| end)
            });
            if stuck && let Some(end) = end {
                stalled.push((tp.clone(), at, end));
            }
            now.insert(tp, (at, end));
        }
        self.positions = now;
        stalled
    }
}

/// The consumer's assigned partitions (`None` when librdkafka cannot say).
fn assignment_of<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<Vec<Tp>> {
    consumer.assignment().ok().map(|tpl| {
        tpl.elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect()
    })
}

/// How a consuming loop ended.
enum Ended {
    /// Stopped (or failed for good: the error).
    Done(KafkaResult<()>),
    /// Start over with a new consumer and producer: why.
    StartOver(String),
}

/// Where a processor sends its outputs: straight into the open transaction, or (in a unit
/// test) into memory.
pub struct Sink<'a> {
    to: SinkTo<'a>,
    sent: u64,
}

enum SinkTo<'a> {
    Txn(&'a TxnProducer),
    Memory(&'a mut Vec<Sent>),
}

/// A record a memory [`Sink`] kept, owned.
#[derive(Debug)]
pub struct Sent {
    /// Destination topic.
    pub topic: String,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value (None: a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Headers.
    pub headers: rdkafka::message::OwnedHeaders,
    /// Explicit partition, if any.
    pub partition: Option<i32>,
}

impl<'a> Sink<'a> {
    /// A sink that keeps what it is sent in `out` instead of producing it: a processor's
    /// outputs, checked by a unit test without a broker.
    pub fn memory(out: &'a mut Vec<Sent>) -> Self {
        Self {
            to: SinkTo::Memory(out),
            sent: 0,
        }
    }

    /// Sends one record in the open transaction.
    ///
    /// # Errors
    /// Produce errors (e.g. a record over the broker's size limit: [`super::ErrorClass::BadRecord`]).
    pub fn send(&mut self, rec: Outgoing<'_>) -> KafkaResult<()> {
        match &mut self.to {
            SinkTo::Txn(p) => p.send(rec)?,
            SinkTo::Memory(out) => out.push(Sent {
                topic: rec.topic.to_owned(),
                key: rec.key.map(<[u8]>::to_vec),
                payload: rec.payload.map(<[u8]>::to_vec),
                headers: rec.headers,
                partition: rec.partition,
            }),
        }
        self.sent += 1;
        Ok(())
    }
}

/// A stage's transformation.
pub trait Processor: Send {
    /// Name for logs and metrics (`validate`, `dedup`).
    fn stage(&self) -> &'static str;
    /// Partitions were assigned; called before any of their records (restore state here).
    ///
    /// # Errors
    /// A Kafka error while restoring; the loop retries.
    fn assigned(&mut self, kafka: &Kafka, tps: &[Tp]) -> KafkaResult<()>;
    /// Partitions were revoked (after the open transaction was committed or aborted).
    fn revoked(&mut self, tps: &[Tp]);
    /// Transforms one record. Outputs go to `sink`. Bad data goes to the DLQ and is not an
    /// error; an error aborts the batch and rewinds it.
    ///
    /// # Errors
    /// A dependency that is unavailable (the loop waits its hint, then retries), or a Kafka
    /// error from the sink.
    fn process(&mut self, msg: &Consumed<'_>, sink: &mut Sink<'_>) -> Result<(), StageError>;
    /// The open transaction was aborted: in-memory state may be ahead of committed output and
    /// must be rebuilt for `tps` (the loop then rewinds them).
    fn aborted(&mut self, kafka: &Kafka, tps: &[Tp]);
    /// Called every couple of seconds from the loop's thread (refresh gauges here).
    fn tick(&mut self) {}
}

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Consumer group.
    pub group: String,
    /// Input topics.
    pub topics: Vec<String>,
    /// Transactional id of this process (`<group>-<instance>`): stable across restarts so a
    /// restarted process fences its previous incarnation at once.
    pub transactional_id: String,
    /// Static group membership of the loop's consumer (`group.instance.id`), usually the
    /// transactional id: a restarted process takes its partitions back without a rebalance.
    pub group_instance: Option<String>,
    /// Most records per transaction.
    pub max_batch: usize,
    /// Longest a transaction stays open collecting a batch.
    pub linger: Duration,
}

#[derive(Default)]
struct Shared {
    /// The stage, for metrics.
    stage: &'static str,
    /// A transaction is open with these next offsets to commit.
    open: bool,
    /// Input records and outputs of the open transaction, counted in the metrics when it
    /// commits (an aborted batch is rewound and counted when it commits later).
    batch_in: u64,
    batch_out: u64,
    offsets: HashMap<Tp, i64>,
    /// Where each partition of the open batch began (for rewinding).
    starts: HashMap<Tp, i64>,
    assigned: Vec<Tp>,
    revoked: Vec<Tp>,
    /// The commit before a revocation failed (and was aborted): the partitions of the batch
    /// that stay assigned must be rewound and their state rebuilt, like after any abort.
    revoke_failure: Option<Outcome<()>>,
    producer: Option<TxnProducer>,
}

struct Ctx {
    shared: Arc<Mutex<Shared>>,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            let mut s = self.shared.lock().expect("poisoned");
            if s.open {
                let outcome = commit_open(&mut s, consumer);
                let committed = matches!(outcome, Outcome::Committed { .. });
                tracing::info!(committed, "open transaction closed before revocation");
                if !committed {
                    s.revoke_failure = Some(outcome);
                }
            }
            let tps: Vec<Tp> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            s.revoked.extend(tps);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            let tps: Vec<Tp> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            self.shared.lock().expect("poisoned").assigned.extend(tps);
        }
    }
}

/// How the loop's transactions end: a retriable commit is repeated up to 5 times (200 ms
/// apart, doubling up to 1 s); the transactional id is this process's for good, so a fenced
/// producer is replaced like a broken one.
fn policy() -> Policy {
    Policy::retrying(5).on_fence(OnFence::Replace)
}

/// Commits the open transaction with its offsets; aborts it when that fails.
fn commit_open(s: &mut Shared, consumer: &BaseConsumer<Ctx>) -> Outcome<()> {
    let producer = s
        .producer
        .clone()
        .expect("a producer exists while a transaction is open");
    let started = Instant::now();
    let offsets = (|| {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &s.offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
        }
        let meta = consumer.group_metadata().ok_or(KafkaError::Canceled)?;
        producer.send_offsets(&tpl, meta)
    })();
    let outcome = match offsets {
        Ok(()) => txn::commit(&producer, &policy(), ()),
        Err(e) => txn::fail(&producer, &policy(), e),
    };
    s.open = false;
    let (stage, n_in, n_out) = (
        s.stage,
        std::mem::take(&mut s.batch_in),
        std::mem::take(&mut s.batch_out),
    );
    metrics::histogram!(metric::COMMIT_SECONDS, "stage" => stage)
        .record(started.elapsed().as_secs_f64());
    match outcome.error() {
        None => {
            metrics::counter!(metric::RECORDS_IN, "stage" => stage).increment(n_in);
            metrics::counter!(metric::RECORDS_OUT, "stage" => stage).increment(n_out);
        }
        Some(e) => tracing::warn!(error = %e, "transaction failed; aborted"),
    }
    outcome
}

/// Runs the loop until `stop` is set. Blocking: call from a dedicated thread.
///
/// Next to it, on a thread of its own, [`group::watch`](super::group::watch) looks for
/// partitions of the group that no member owns and makes the group rebalance when it finds
/// some (a static member restarted between the rounds of a cooperative rebalance strands them).
///
/// # Errors
/// When the consumer or producer cannot be created.
pub fn run(
    kafka: &Kafka,
    cfg: &LoopConfig,
    processor: &mut dyn Processor,
    stop: &AtomicBool,
) -> KafkaResult<()> {
    let stage = processor.stage();
    let done = AtomicBool::new(false);
    let pulse = Pulse::new();
    std::thread::scope(|scope| {
        let watching = std::thread::Builder::new()
            .name(format!("intake-{stage}-group"))
            .spawn_scoped(scope, || {
                super::group::watch(kafka, stage, &cfg.group, &cfg.topics, &done);
            });
        if let Err(e) = watching {
            tracing::warn!(stage, error = %e, "cannot start the group watch; stranded partitions will wait for the next rebalance");
        }
        let limit = STUCK.max(kafka.transaction_timeout() * 12);
        let (pulse, done) = (&pulse, &done);
        let watchdog = std::thread::Builder::new()
            .name(format!("intake-{stage}-watchdog"))
            .spawn_scoped(scope, move || watchdog(stage, pulse, limit, done));
        if let Err(e) = watchdog {
            tracing::warn!(stage, error = %e, "cannot start the loop's watchdog");
        }
        // Ends the watch however the loop ends, a panic included (the scope joins it).
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _done = Done(done);
        let mut backoff = Backoff::default();
        loop {
            match run_loop(kafka, cfg, processor, stop, pulse) {
                Ended::StartOver(why) if !stop.load(Ordering::Relaxed) => {
                    tracing::error!(stage, reason = %why, "starting over with a new consumer and producer");
                    metrics::counter!(metric::ERRORS, "stage" => stage, "class" => "consumer_restart")
                        .increment(1);
                    std::thread::sleep(backoff.next_pause());
                }
                Ended::StartOver(_) => return Ok(()),
                Ended::Done(r) => return r,
            }
        }
    })
}

fn run_loop(
    kafka: &Kafka,
    cfg: &LoopConfig,
    processor: &mut dyn Processor,
    stop: &AtomicBool,
    pulse: &Pulse,
) -> Ended {
    pulse.beat(Phase::Starting);
    match consume(kafka, cfg, processor, stop, pulse) {
        Ok(Some(why)) => Ended::StartOver(why),
        Ok(None) => Ended::Done(Ok(())),
        // The consumer failed for good (e.g. a static member fenced after its coordinator
        // moved: librdkafka's FENCED_INSTANCE_ID): its partitions were given up and the open
        // transaction is left to the next producer with the same transactional id, which
        // aborts it. Start over rather than idle as a member that consumes nothing.
        Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
            Ended::StartOver(format!("the consumer failed fatally: {e}"))
        }
        Err(e) => Ended::Done(Err(e)),
    }
}

/// The loop of one consumer and producer: `Ok(Some(why))` when it must start over.
fn consume(
    kafka: &Kafka,
    cfg: &LoopConfig,
    processor: &mut dyn Processor,
    stop: &AtomicBool,
    pulse: &Pulse,
) -> KafkaResult<Option<String>> {
    let stage = processor.stage();
    let shared = Arc::new(Mutex::new(Shared {
        stage,
        ..Shared::default()
    }));
    let consumer = kafka.group_consumer(
        &cfg.group,
        cfg.group_instance.as_deref(),
        Ctx {
            shared: shared.clone(),
        },
    )?;
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let new_producer = || -> KafkaResult<TxnProducer> {
        let p = kafka.txn_producer(&cfg.transactional_id)?;
        p.init_retrying(Backoff::default(), None)?;
        Ok(p)
    };
    shared.lock().expect("poisoned").producer = Some(new_producer()?);
    tracing::info!(stage, group = %cfg.group, transactional_id = %cfg.transactional_id, "consuming");

    let mut batch_started: Option<Instant> = None;
    let mut in_batch = 0usize;
    let lag_gauge = metrics::gauge!(metric::LAG, "stage" => stage);
    let mut lag_at = Instant::now();
    let mut stalls = StallWatch::new(STALL.max(kafka.transaction_timeout() * 2));
    while !stop.load(Ordering::Relaxed) {
        pulse.beat(Phase::LookingForStalls);
        if lag_at.elapsed() >= LAG_EVERY {
            lag_at = Instant::now();
            lag_gauge.set(super::consumer_lag(&consumer).unwrap_or(0) as f64);
            processor.tick();
        }
        if batch_started.is_none() {
            let stalled = stalls.look(&consumer);
            if !stalled.is_empty() {
                let tps: Vec<Tp> = stalled.iter().map(|(tp, ..)| tp.clone()).collect();
                let why = stalled
                    .iter()
                    .map(|((t, p), at, end)| format!("{t}/{p} at {at} with records to {end}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::warn!(stage, partitions = %why, "partitions stalled: their position has not moved while committed records wait");
                metrics::counter!(metric::ERRORS, "stage" => stage, "class" => "stalled")
                    .increment(1);
                let all = assignment_of(&consumer).unwrap_or(tps);
                processor.revoked(&all);
                return Ok(Some(format!("stalled partitions: {why}")));
            }
        }
        let timeout = match batch_started {
            Some(t) => cfg.linger.saturating_sub(t.elapsed()).min(IDLE),
            None => Duration::from_millis(200),
        };
        pulse.beat(Phase::Polling);
        let polled = consumer.poll(timeout);
        // Rebalance callbacks ran inside poll.
        let (assigned, revoked) = {
            let mut s = shared.lock().expect("poisoned");
            (
                std::mem::take(&mut s.assigned),
                std::mem::take(&mut s.revoked),
            )
        };
        if !revoked.is_empty() {
            let failure = {
                let mut s = shared.lock().expect("poisoned");
                // The callback committed or aborted the batch; either way it is closed.
                s.offsets.clear();
                let failure = s.revoke_failure.take();
                if failure.is_some() {
                    // Aborted: the partitions that stay assigned are rewound below.
                    s.starts.retain(|tp, _| !revoked.contains(tp));
                } else {
                    s.starts.clear();
                }
                failure
            };
            batch_started = None;
            in_batch = 0;
            pulse.beat(Phase::Rewinding);
            processor.revoked(&revoked);
            if let Some(failed) = failure {
                handle_failure(kafka, &consumer, &shared, processor, failed, &new_producer)?;
            }
        }
        if !assigned.is_empty() {
            let mut backoff = Backoff::default();
            pulse.beat(Phase::Restoring);
            while let Err(e) = processor.assigned(kafka, &assigned) {
                tracing::warn!(stage, error = %e, "restoring state failed; retrying");
                std::thread::sleep(backoff.next_pause());
                pulse.beat(Phase::Restoring);
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
            }
        }
        if !assigned.is_empty() || !revoked.is_empty() {
            stalls.reset();
        }
        let idle = polled.is_none();
        match polled {
            None => {}
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                let tps = assignment_of(&consumer).unwrap_or_default();
                // Whatever the open batch changed in the processor's state goes with it.
                processor.revoked(&tps);
                return Err(e);
            }
            Some(Err(e)) => {
                tracing::warn!(stage, error = %e, "consumer error");
                metrics::counter!(metric::ERRORS, "stage" => stage, "class" => "consume")
                    .increment(1);
            }
            Some(Ok(m)) => {
                let tp: Tp = (m.topic().to_owned(), m.partition());
                let mut s = shared.lock().expect("poisoned");
                let producer = s.producer.clone().expect("producer");
                if !s.open {
                    pulse.beat(Phase::Committing);
                    if let Err(failed) = txn::begin(&producer, &policy()) {
                        // Rewind to this record (it is not processed); whatever state the
                        // producer was in is aborted, and `handle_failure` replaces it if that
                        // failed too.
                        s.starts.insert(tp, m.offset());
                        drop(s);
                        pulse.beat(Phase::Rewinding);
                        handle_failure(
                            kafka,
                            &consumer,
                            &shared,
                            processor,
                            failed,
                            &new_producer,
                        )?;
                        stalls.reset();
                        batch_started = None;
                        in_batch = 0;
                        continue;
                    }
                    s.open = true;
                    batch_started = Some(Instant::now());
                }
                s.starts.entry(tp.clone()).or_insert(m.offset());
                s.offsets.insert(tp, m.offset() + 1);
                drop(s);
                let mut sink = Sink {
                    to: SinkTo::Txn(&producer),
                    sent: 0,
                };
                pulse.beat(Phase::Processing);
                let r = processor.process(&Consumed::of(&m), &mut sink);
                {
                    let mut s = shared.lock().expect("poisoned");
                    s.batch_in += 1;
                    s.batch_out += sink.sent;
                }
                in_batch += 1;
                if crate::faults::hit(crate::faults::Fault::ConsumeStall) {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(m.topic(), m.partition());
                    tracing::warn!(
                        fault = "consume_stall",
                        topic = m.topic(),
                        partition = m.partition(),
                        offset = m.offset(),
                        "deliberate fault: this partition stops fetching without a word"
                    );
                    let _ = consumer.pause(&tpl);
                }
                if let Err(e) = r {
                    pulse.beat(Phase::Rewinding);
                    let (e, retry_in) = match e {
                        StageError::Kafka(e) => (e, None),
                        StageError::Unavailable { what, retry_in } => {
                            tracing::warn!(stage = processor.stage(), error = %what, partition = m.partition(), offset = m.offset(), retry_in_ms = retry_in.as_millis() as u64, "a dependency is unavailable; aborting the batch to retry it");
                            metrics::counter!(metric::ERRORS, "stage" => processor.stage(), "class" => "system").increment(1);
                            (KafkaError::Canceled, Some(retry_in))
                        }
                    };
                    let failed = txn::fail(&producer, &policy(), e);
                    handle_failure(kafka, &consumer, &shared, processor, failed, &new_producer)?;
                    // The transaction is closed (aborted): no timeout runs while the loop
                    // waits, so an outage is not hammered.
                    if let Some(wait) = retry_in.filter(|w| !w.is_zero()) {
                        std::thread::sleep(wait);
                    }
                    stalls.reset();
                    batch_started = None;
                    in_batch = 0;
                    continue;
                }
            }
        }
        let due = batch_started.is_some_and(|t| idle || t.elapsed() >= cfg.linger)
            || in_batch >= cfg.max_batch;
        if due {
            pulse.beat(Phase::Committing);
            let mut s = shared.lock().expect("poisoned");
            let outcome = if s.open {
                commit_open(&mut s, &consumer)
            } else {
                Outcome::Withdrawn
            };
            drop(s);
            if outcome.error().is_none() {
                let mut s = shared.lock().expect("poisoned");
                s.offsets.clear();
                s.starts.clear();
            } else {
                pulse.beat(Phase::Rewinding);
                handle_failure(kafka, &consumer, &shared, processor, outcome, &new_producer)?;
                stalls.reset();
            }
            batch_started = None;
            in_batch = 0;
        }
    }
    // Graceful stop: commit what is open, then leave the group.
    pulse.beat(Phase::Stopping);
    {
        let mut s = shared.lock().expect("poisoned");
        if s.open {
            let _ = commit_open(&mut s, &consumer);
        }
    }
    consumer.unsubscribe();
    for _ in 0..5 {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    Ok(None)
}

/// After a failed batch (already aborted by the policy, or left to a new producer): replace the
/// producer if the outcome needs it, let the processor rebuild its state, and rewind the
/// partitions of the batch to where it began.
fn handle_failure(
    kafka: &Kafka,
    consumer: &BaseConsumer<Ctx>,
    shared: &Arc<Mutex<Shared>>,
    processor: &mut dyn Processor,
    failed: Outcome<()>,
    new_producer: &dyn Fn() -> KafkaResult<TxnProducer>,
) -> KafkaResult<()> {
    let stage = processor.stage();
    let replace = failed.needs_new_producer();
    let err = failed.into_error().unwrap_or(KafkaError::Canceled);
    let class = classify(&err);
    metrics::counter!(metric::ERRORS, "stage" => stage, "class" => format!("{class:?}"))
        .increment(1);
    tracing::warn!(stage, error = %err, ?class, replace, "batch failed; rewinding to the last commit");
    let starts: Vec<(Tp, i64)> = {
        let mut s = shared.lock().expect("poisoned");
        s.offsets.clear();
        s.batch_in = 0;
        s.batch_out = 0;
        s.open = false;
        s.starts.drain().collect()
    };
    // A fenced or broken producer, or one whose abort failed (it stays in an error state where
    // every `begin` fails), is replaced: a new producer with the same transactional id aborts
    // the open transaction on the broker.
    if replace {
        let p = new_producer()?;
        shared.lock().expect("poisoned").producer = Some(p);
    }
    let tps: Vec<Tp> = starts.iter().map(|(tp, _)| tp.clone()).collect();
    processor.aborted(kafka, &tps);
    for ((t, p), o) in starts {
        if let Err(e) = consumer.seek(&t, p, Offset::Offset(o), Duration::from_secs(10)) {
            tracing::warn!(stage, topic = %t, partition = p, error = %e, "rewind failed; the group will redeliver from the last commit");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_records_left_unread_for_a_whole_period_not_records_just_committed() {
        // First look at a partition: nothing to compare with, no request.
        assert_eq!(stalled_at(None, 76, || panic!("asked")), (None, false));
        // It moved since the previous look: no request.
        assert_eq!(
            stalled_at(Some((70, None)), 76, || panic!("asked")),
            (None, false)
        );
        // Idle since the previous look, and records committed a moment before this one: the
        // end is remembered, but no stall (the consumer had no time to fetch them).
        assert_eq!(
            stalled_at(Some((76, None)), 76, || Some(84)),
            (Some(84), false)
        );
        assert_eq!(
            stalled_at(Some((76, Some(77))), 76, || Some(84)),
            (Some(84), false)
        );
        // Those records still unread a period later: stalled.
        assert_eq!(
            stalled_at(Some((76, Some(84))), 76, || Some(84)),
            (Some(84), true)
        );
        // Read meanwhile: not stalled.
        assert_eq!(
            stalled_at(Some((76, Some(84))), 84, || panic!("asked")),
            (None, false)
        );
        // The end cannot be asked: no verdict.
        assert_eq!(stalled_at(Some((76, Some(84))), 76, || None), (None, false));
        // Only the last transaction's marker past the position: nothing waits.
        assert_eq!(
            stalled_at(Some((76, Some(77))), 76, || Some(77)),
            (Some(77), false)
        );
    }

    #[test]
    fn the_pulse_names_the_phase_it_last_beat_and_how_long_ago() {
        let pulse = Pulse::new();
        for phase in Phase::ALL {
            pulse.beat(phase);
            let (since, seen) = pulse.since();
            assert_eq!(seen, phase);
            assert!(since < Duration::from_secs(5), "{since:?}");
        }
        // A beat long ago reads as long ago.
        pulse.at_ms.store(0, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(30));
        assert!(pulse.since().0 >= Duration::from_millis(30));
        // Every phase round-trips through its number.
        for (i, phase) in Phase::ALL.iter().enumerate() {
            assert_eq!(*phase as usize, i);
        }
    }
}
