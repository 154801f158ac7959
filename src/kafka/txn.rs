//! A transactional producer whose blocking calls stay off the async runtime.
//!
//! librdkafka's transaction calls (`init`, `begin`, `send_offsets`, `commit`, `abort`) block
//! the calling thread for up to their timeout. Consuming stages run their loop on a dedicated
//! thread and call them directly; async callers (fetch, serve) go through
//! [`TxnProducer::blocking`], which moves the call to tokio's blocking pool.
//!
//! `send` never blocks either: when librdkafka's local queue is full it waits for deliveries
//! (bounded memory: back-pressure reaches the caller instead of growing a queue).
//!
//! Every writer of the crate runs its transactions through [`run`] (or, for the
//! consume-transform-produce loop whose transaction stays open across polls, [`begin`],
//! [`commit`] and [`fail`]) with a [`Policy`], and matches on the [`Outcome`]: the retry, abort,
//! fencing and backoff rules are in `txn/policy.rs`, once. Every transactional id comes from
//! [`transactional_id`].

mod policy;

pub use policy::{
    Backoff, Call, OnFence, Outcome, Policy, RetryHook, Transactional, WhenUnknown, begin, commit,
    fail, resume, run, run_with,
};

use crate::stage::Stage;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, TopicPartitionList};

/// How long the deliberate fault `txn_hold` keeps a transaction open before its commit.
const TXN_HOLD: Duration = Duration::from_millis(300);

/// How long past its own timeout [`TxnProducer::send_offsets`] waits for librdkafka's call.
pub const SEND_OFFSETS_GRACE: Duration = Duration::from_secs(10);

/// Counts delivery failures so a commit can be refused when any record of the transaction
/// failed (librdkafka also fails the commit then; this makes the reason visible).
#[derive(Default)]
pub struct DeliveryContext {
    failures: AtomicU64,
    last_error: Mutex<Option<KafkaError>>,
    /// Whether the open transaction has records or offsets in it (shown by
    /// `intake_transaction_open`).
    filled: std::sync::atomic::AtomicBool,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            *self.last_error.lock().expect("poisoned") = Some(e.clone());
        }
    }
}

/// One outgoing record: borrowed key and payload, owned headers.
pub struct Outgoing<'a> {
    /// Destination topic.
    pub topic: &'a str,
    /// Record key (None for none).
    pub key: Option<&'a [u8]>,
    /// Record value (None: a tombstone).
    pub payload: Option<&'a [u8]>,
    /// Headers.
    pub headers: OwnedHeaders,
    /// Explicit partition (markers broadcast to every partition); None: by key (murmur2).
    pub partition: Option<i32>,
}

/// Who writes with a transactional id; [`transactional_id`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer<'a> {
    /// A stream's fetch worker, and `intake cursors --reset` of that stream (which fences it).
    Fetch {
        /// Source name.
        source: &'a str,
        /// Stream name.
        stream: &'a str,
    },
    /// One of the window slots of a stream's windowed backfill (`#` is in no stream name).
    FetchWindow {
        /// Source name.
        source: &'a str,
        /// Stream name.
        stream: &'a str,
        /// The slot, `0..concurrency`.
        slot: u32,
    },
    /// The state writer of one partition of the quota topic.
    Quota {
        /// The partition.
        partition: i32,
    },
    /// One serve instance's lander.
    Serve {
        /// The instance id.
        instance: &'a str,
    },
    /// DLQ replays: one id per deployment, so a replay fences any other.
    DlqReplay,
    /// `intake reprocess`: one id per deployment, so a run fences any other.
    Reprocess,
    /// A consuming stage's member (validate, dedup); also its static group membership.
    Stage {
        /// The stage (validate, dedup): its group is `<group_prefix>-<stage>`.
        stage: Stage,
        /// The instance id.
        instance: &'a str,
    },
}

/// The transactional id of this instance's member of the consuming `stage` (validate, dedup):
/// [`Writer::Stage`] with `cfg`'s group prefix and instance id.
pub fn stage_member(cfg: &crate::config::Config, stage: Stage) -> String {
    transactional_id(
        &cfg.kafka.group_prefix,
        Writer::Stage {
            stage,
            instance: &cfg.instance_id(),
        },
    )
}

/// The transactional id of a writer. Ids are what fences an older owner, so each unit of
/// ownership has exactly one, stable across restarts:
/// `<prefix>-fetch-<source>-<stream>` (`…#w<slot>` for a backfill's window slots),
/// `<prefix>-quota-<partition>`, `<prefix>-serve-<instance>`,
/// `<prefix>-dlq-replay`, `<prefix>-reprocess`, `<prefix>-<stage>-<instance>`.
pub fn transactional_id(group_prefix: &str, writer: Writer<'_>) -> String {
    match writer {
        Writer::Fetch { source, stream } => format!("{group_prefix}-fetch-{source}-{stream}"),
        Writer::FetchWindow {
            source,
            stream,
            slot,
        } => format!("{group_prefix}-fetch-{source}-{stream}#w{slot}"),
        Writer::Quota { partition } => format!("{group_prefix}-quota-{partition}"),
        Writer::Serve { instance } => format!("{group_prefix}-serve-{instance}"),
        Writer::DlqReplay => format!("{group_prefix}-dlq-replay"),
        Writer::Reprocess => format!("{group_prefix}-reprocess"),
        Writer::Stage { stage, instance } => format!("{group_prefix}-{stage}-{instance}"),
    }
}

/// A transactional producer bound to one `transactional.id`.
#[derive(Clone)]
pub struct TxnProducer {
    inner: Arc<ThreadedProducer<DeliveryContext>>,
    txn_id: Arc<str>,
    timeout: Duration,
}

impl std::fmt::Debug for TxnProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnProducer")
            .field("transactional_id", &self.txn_id)
            .finish()
    }
}

impl TxnProducer {
    pub(crate) fn new(
        inner: ThreadedProducer<DeliveryContext>,
        txn_id: &str,
        timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(inner),
            txn_id: txn_id.into(),
            timeout,
        }
    }

    /// The transactional id (tied to the unit of ownership).
    pub fn transactional_id(&self) -> &str {
        &self.txn_id
    }

    /// Registers the transactional id with the coordinator, fencing any older producer with
    /// the same id and aborting its open transaction. Blocking.
    ///
    /// # Errors
    /// The Kafka error; classify it with [`super::classify`].
    pub fn init(&self) -> KafkaResult<()> {
        let r = self.inner.init_transactions(self.timeout);
        // Whatever an older producer with this id had open is aborted now.
        self.mark_closed();
        r
    }

    /// Starts a transaction. Blocking (briefly).
    ///
    /// `begin`, `commit` and `abort` are the raw librdkafka calls, for tests that need a
    /// transaction in a given state; writers run their transactions with [`run`] (or
    /// [`TxnProducer::transaction`]), which applies the retry, abort and fencing rules.
    ///
    /// # Errors
    /// The Kafka error.
    pub fn begin(&self) -> KafkaResult<()> {
        self.failures_reset();
        self.inner.begin_transaction()
    }

    /// Enqueues a record in the open transaction. Waits while librdkafka's queue is full.
    ///
    /// # Errors
    /// Non-retriable produce errors (e.g. message too large).
    pub fn send(&self, rec: Outgoing<'_>) -> KafkaResult<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(rec.topic).headers(rec.headers);
        if let Some(k) = rec.key {
            record = record.key(k);
        }
        if let Some(p) = rec.payload {
            record = record.payload(p);
        }
        if let Some(p) = rec.partition {
            record = record.partition(p);
        }
        loop {
            match self.inner.send(record) {
                Ok(()) => {
                    self.mark_filled();
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    // The threaded producer polls in the background; give deliveries a moment.
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Adds the consumer's input offsets to the open transaction (consume-transform-produce).
    /// The group metadata carries the consumer generation, so a consumer that lost its
    /// partitions in a rebalance cannot commit offsets for them (KIP-447).
    ///
    /// librdkafka's call can block past its timeout, for good, when the group coordinator
    /// went away while the request waited for it (librdkafka issues 5456 and 5511, open in
    /// 2.12 to 2.14: the coordinator request's deadline is never checked; the chaos test
    /// caught a stage stuck there after a rolling restart). So the call runs on a thread of
    /// its own, and when it has not returned [`SEND_OFFSETS_GRACE`] after its timeout, this
    /// producer is given up: the error is fatal (the caller replaces the producer, whose
    /// `init_transactions` with the same transactional id aborts the open transaction and
    /// fences this one) and no other call is made on it; the blocked thread keeps its handle
    /// until librdkafka returns, if ever.
    ///
    /// # Errors
    /// The Kafka error; [`RDKafkaErrorCode::Fatal`] when the call did not return in time.
    pub fn send_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: ConsumerGroupMetadata,
    ) -> KafkaResult<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (me, offsets) = (self.clone(), offsets.clone());
        let spawned = std::thread::Builder::new()
            .name("intake-send-offsets".into())
            .spawn(move || {
                let r = me
                    .inner
                    .send_offsets_to_transaction(&offsets, &group, me.timeout);
                let _ = tx.send(r);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread to send the offsets");
            return Err(KafkaError::Canceled);
        }
        self.mark_filled();
        let limit = self.timeout + SEND_OFFSETS_GRACE;
        rx.recv_timeout(limit).unwrap_or_else(|_| {
            tracing::error!(
                transactional_id = %self.txn_id,
                waited_s = limit.as_secs(),
                "sending the consumer offsets to the transaction did not return within its timeout (a librdkafka defect when the group coordinator moves); this producer is given up and replaced"
            );
            metrics::counter!(crate::telemetry::metric::ERRORS, "stage" => "kafka", "class" => "send_offsets_stuck")
                .increment(1);
            Err(KafkaError::Global(RDKafkaErrorCode::Fatal))
        })
    }

    /// Commits the open transaction (flushes first). Blocking.
    ///
    /// # Errors
    /// The Kafka error, or a delivery failure of a record in this transaction.
    pub fn commit(&self) -> KafkaResult<()> {
        // rdkafka's `commit_transaction` flushes first, and its flush sleeps in 100 ms polls of
        // a queue that the threaded producer's own thread serves: every commit took 100 or
        // 200 ms however little it carried. Flushed here first, its flush finds nothing left.
        self.flush()?;
        if crate::faults::hit(crate::faults::Fault::TxnHold) {
            // Its records are on the brokers and its coordinator holds it open: a commit slowed
            // as by a broker under load, so that a kill meets an open transaction (chaos tests).
            tracing::warn!(fault = crate::faults::Fault::TxnHold.name(), transactional_id = %self.txn_id, hold_ms = TXN_HOLD.as_millis() as u64, "deliberate fault: holding the transaction open before its commit");
            std::thread::sleep(TXN_HOLD);
        }
        self.mark_closed();
        self.inner.commit_transaction(self.timeout)?;
        if self.inner_failures() > 0 {
            // librdkafka already refuses to commit after a failed delivery; this is defence in depth.
            return Err(self
                .last_error()
                .unwrap_or(KafkaError::MessageProduction(RDKafkaErrorCode::Fail)));
        }
        Ok(())
    }

    /// Waits until every enqueued record is on the broker (still uncommitted). Blocking.
    ///
    /// # Errors
    /// Time-out.
    pub fn flush(&self) -> KafkaResult<()> {
        let ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the pointer is the live client owned by `self.inner`. The producer delivers
        // reports as events (rdkafka sets that up), which the threaded producer's thread
        // serves; librdkafka's flush then only waits until no message is in flight, waking
        // as soon as that happens (rdkafka's own flush polls in 100 ms steps instead).
        let err =
            unsafe { rdkafka::bindings::rd_kafka_flush(self.inner.client().native_ptr(), ms) };
        match err {
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
            e => Err(KafkaError::Flush(e.into())),
        }
    }

    /// Aborts the open transaction. Blocking.
    ///
    /// # Errors
    /// The Kafka error.
    pub fn abort(&self) -> KafkaResult<()> {
        self.mark_closed();
        self.inner.abort_transaction(self.timeout)
    }

    /// `intake_transaction_open{transactional_id}` goes to 1 with the first record or offsets
    /// of a transaction (from then on its coordinator holds it open: `read_committed` readers
    /// of its partitions wait for it) and back to 0 as its commit or abort is asked for (how
    /// long that takes is `intake_commit_seconds`). A transaction with nothing in it yet is
    /// not shown.
    fn mark_filled(&self) {
        let filled = &self.inner.context().filled;
        if !filled.load(Ordering::Relaxed) {
            filled.store(true, Ordering::Relaxed);
            self.gauge_open(1.0);
        }
    }

    fn mark_closed(&self) {
        self.inner.context().filled.store(false, Ordering::Relaxed);
        self.gauge_open(0.0);
    }

    fn gauge_open(&self, v: f64) {
        metrics::gauge!(crate::telemetry::metric::TXN_OPEN, "transactional_id" => self.txn_id.to_string())
            .set(v);
    }

    /// Initialises transactions ([`TxnProducer::init`]), repeating failures that are not fatal
    /// with `backoff` until `deadline` (none: until it works). Blocking.
    ///
    /// # Errors
    /// A fatal error (fenced), or the last error at the deadline.
    pub fn init_retrying(
        &self,
        mut backoff: Backoff,
        deadline: Option<std::time::Instant>,
    ) -> KafkaResult<()> {
        loop {
            match self.init() {
                Ok(()) => return Ok(()),
                Err(e)
                    if super::classify(&e) != super::ErrorClass::Fatal
                        && deadline.is_none_or(|d| std::time::Instant::now() < d) =>
                {
                    tracing::warn!(transactional_id = %self.txn_id, error = %e, "initialising transactions failed; retrying");
                    std::thread::sleep(backoff.next_pause());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs one transaction on tokio's blocking pool: [`run`] with this producer.
    pub async fn transaction<T, F>(&self, policy: Policy, build: F) -> Outcome<T>
    where
        F: FnOnce(&TxnProducer) -> KafkaResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || run(&me, &policy, build))
            .await
            .unwrap_or_else(|_| Outcome::Unresolved {
                // The closure panicked inside the transaction: its state is not known.
                error: KafkaError::Canceled,
                pending: None,
                retries: 0,
            })
    }

    /// Runs a blocking closure on tokio's blocking pool with this producer.
    ///
    /// # Errors
    /// The closure's error; a panic in it becomes a fatal error.
    pub async fn blocking<R, F>(&self, f: F) -> KafkaResult<R>
    where
        F: FnOnce(&TxnProducer) -> KafkaResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }

    fn failures_reset(&self) {
        self.inner.context().failures.store(0, Ordering::Relaxed);
    }
    fn inner_failures(&self) -> u64 {
        self.inner.context().failures.load(Ordering::Relaxed)
    }
    fn last_error(&self) -> Option<KafkaError> {
        self.inner
            .context()
            .last_error
            .lock()
            .expect("poisoned")
            .clone()
    }
}

impl Transactional for TxnProducer {
    fn begin_txn(&self) -> KafkaResult<()> {
        self.begin()
    }
    fn commit_txn(&self) -> KafkaResult<()> {
        self.commit()
    }
    fn abort_txn(&self) -> KafkaResult<()> {
        self.abort()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deployments fence on these values: they must not change.
    #[test]
    fn transactional_ids_keep_their_deployed_values() {
        let id = |w| transactional_id("intake", w);
        assert_eq!(
            id(Writer::Fetch {
                source: "shop",
                stream: "orders"
            }),
            "intake-fetch-shop-orders"
        );
        assert_eq!(id(Writer::Quota { partition: 3 }), "intake-quota-3");
        assert_eq!(id(Writer::Serve { instance: "a1" }), "intake-serve-a1");
        assert_eq!(id(Writer::DlqReplay), "intake-dlq-replay");
        assert_eq!(
            id(Writer::Stage {
                stage: Stage::Validate,
                instance: "a1"
            }),
            "intake-validate-a1"
        );
    }
}
