//! A transactional producer whose blocking calls stay off the async runtime.
//!
//! librdkafka's transaction calls (`init`, `begin`, `send_offsets`, `commit`, `abort`) block
//! the calling thread for up to their timeout. Consuming stages run their loop on a dedicated
//! thread and call them directly; async callers (fetch, serve) go through
//! [`TxnProducer::blocking`], which moves the call to tokio's blocking pool.
//!
//! `send` never blocks either: when librdkafka's local queue is full it waits for deliveries
//! (bounded memory: back-pressure reaches the caller instead of growing a queue).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, TopicPartitionList};

/// Counts delivery failures so a commit can be refused when any record of the transaction
/// failed (librdkafka also fails the commit then; this makes the reason visible).
#[derive(Default)]
pub struct DeliveryContext {
    failures: AtomicU64,
    last_error: Mutex<Option<KafkaError>>,
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
        self.inner.init_transactions(self.timeout)
    }

    /// Starts a transaction. Blocking (briefly).
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
                Ok(()) => return Ok(()),
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
    /// # Errors
    /// The Kafka error.
    pub fn send_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> KafkaResult<()> {
        self.inner
            .send_offsets_to_transaction(offsets, group, self.timeout)
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
        self.inner.abort_transaction(self.timeout)
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
