//! Reading partitions to their committed end, to restore state before work starts.
//!
//! Cursors, dedup state, quota state and the job registry live in compacted topics. A stage
//! that takes over a unit of work reads the relevant partitions with `read_committed` from the
//! beginning to the end they had when it started, folding every record into its state, and
//! only then starts.
//!
//! **The end is the true high watermark**, asked of a `read_uncommitted` client
//! ([`Kafka::watermark_client`](super::Kafka::watermark_client)). A `read_committed` client's
//! offset query answers the last stable offset instead, which stops at the first offset of any
//! open transaction on the partition: another producer's transaction that happens to be open
//! would hide every record committed after it began (a previous owner's last transaction whose
//! markers are not written yet, or any unrelated writer). Reading with `read_committed` until
//! the position passes the high watermark waits for such transactions to end (commit, abort, or
//! the broker's `transaction.timeout.ms`), bounded by the caller's time-out.
//!
//! The end is reached when the consumer's position passes it, never by counting records:
//! transaction markers and aborted records take offsets too, and librdkafka moves the position
//! past them without delivering them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

/// A group-less `read_committed` consumer plus the shared `read_uncommitted` client that
/// answers its partitions' high watermarks. Built by
/// [`Kafka::reader_consumer`](super::Kafka::reader_consumer); derefs to the consumer.
pub struct Reader {
    consumer: BaseConsumer,
    watermarks: Arc<BaseConsumer>,
}

impl Reader {
    pub(crate) fn new(consumer: BaseConsumer, watermarks: Arc<BaseConsumer>) -> Self {
        Self {
            consumer,
            watermarks,
        }
    }

    /// Low watermark and true high watermark of a partition (the high watermark counts
    /// records of open transactions), retrying transient errors (a leader moving) until
    /// `timeout`.
    ///
    /// # Errors
    /// A Kafka error that is not transient, or one that lasts past `timeout`.
    pub fn high_watermarks(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> KafkaResult<(i64, i64)> {
        // The client is never polled for messages; drain its error events so they do not pile up.
        while let Some(Err(e)) = self.watermarks.poll(Duration::ZERO) {
            tracing::debug!(%e, "watermark client event");
        }
        watermarks(&self.watermarks, topic, partition, timeout)
    }
}

impl std::ops::Deref for Reader {
    type Target = BaseConsumer;
    fn deref(&self) -> &BaseConsumer {
        &self.consumer
    }
}

/// Reads the given partitions of `topic` from the beginning to their end, calling `f` for
/// every committed record. The end is each partition's high watermark when the call starts;
/// transactions open at that moment are waited for (see the module docs). Returns the number
/// of records read. Blocking; run it on a blocking thread.
///
/// # Errors
/// A Kafka error, or [`RDKafkaErrorCode::OperationTimedOut`] when the partitions do not reach
/// their end within `timeout` (e.g. a transaction stays open that long).
///
/// [`RDKafkaErrorCode::OperationTimedOut`]: rdkafka::error::RDKafkaErrorCode::OperationTimedOut
pub fn read_to_end(
    reader: &Reader,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
    f: impl FnMut(&BorrowedMessage<'_>),
) -> KafkaResult<u64> {
    let starts: Vec<(i32, Offset)> = partitions.iter().map(|p| (*p, Offset::Beginning)).collect();
    read_from(reader, topic, &starts, timeout, f)
}

/// [`read_to_end`] over every partition of `topic` (their count asked of the broker first,
/// within 10 s). Returns the number of partitions and of records read.
///
/// # Errors
/// As [`read_to_end`], or the partition count's.
pub fn read_topic(
    reader: &Reader,
    topic: &str,
    timeout: Duration,
    f: impl FnMut(&BorrowedMessage<'_>),
) -> KafkaResult<(i32, u64)> {
    let n = partition_count(reader, topic, Duration::from_secs(10))?;
    let read = read_to_end(reader, topic, &(0..n).collect::<Vec<_>>(), timeout, f)?;
    Ok((n, read))
}

/// How many delivered messages [`read_from`] lets pass between asking for the positions.
const POSITION_EVERY: u32 = 1024;

/// [`read_to_end`] from the given start of each partition (`Offset::Beginning` or an offset)
/// instead of the beginning.
///
/// # Errors
/// As [`read_to_end`].
pub fn read_from(
    reader: &Reader,
    topic: &str,
    starts: &[(i32, Offset)],
    timeout: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> KafkaResult<u64> {
    if starts.is_empty() {
        return Ok(0);
    }
    let deadline = Instant::now() + timeout;
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for (p, start) in starts {
        let left = deadline.saturating_duration_since(Instant::now());
        let (lo, hi) = reader.high_watermarks(topic, *p, left)?;
        let from = match start {
            Offset::Offset(o) => (*o).max(lo),
            _ => lo,
        };
        if hi > from {
            ends.insert(*p, hi);
            tpl.add_partition_offset(topic, *p, *start)?;
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    let consumer = &reader.consumer;
    consumer.assign(&tpl)?;
    let result = (|| {
        let mut pending: HashSet<i32> = ends.keys().copied().collect();
        let mut n = 0u64;
        let mut since_check = 0u32;
        let mut last_wait_log = Instant::now();
        while !pending.is_empty() {
            if Instant::now() > deadline {
                tracing::warn!(
                    topic,
                    ?pending,
                    "partitions did not reach their high watermark in time (a transaction open too long?)"
                );
                return Err(KafkaError::MessageConsumption(
                    rdkafka::error::RDKafkaErrorCode::OperationTimedOut,
                ));
            }
            let mut idle = false;
            match consumer.poll(Duration::from_millis(50)) {
                None => idle = true,
                Some(Ok(m)) => {
                    let end = ends[&m.partition()];
                    if m.offset() < end {
                        n += 1;
                        f(&m);
                    }
                    if m.offset() + 1 >= end {
                        pending.remove(&m.partition());
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(%e, topic, "error while reading to the end; retrying");
                }
            }
            since_check += 1;
            // Markers and aborted records are never delivered; the position moves past them.
            // Asking for the positions is a round trip to librdkafka's main thread (two context
            // switches): done once the queue runs dry or every POSITION_EVERY messages, not per
            // message (that capped a restore at ~17 000 records/s).
            if !pending.is_empty() && (idle || since_check >= POSITION_EVERY) {
                since_check = 0;
                for e in consumer.position()?.elements_for_topic(topic) {
                    if let Offset::Offset(o) = e.offset()
                        && ends.get(&e.partition()).is_some_and(|end| o >= *end)
                    {
                        pending.remove(&e.partition());
                    }
                }
                if last_wait_log.elapsed() > Duration::from_secs(10) {
                    last_wait_log = Instant::now();
                    tracing::info!(
                        topic,
                        ?pending,
                        "still reading to the end (waiting for open transactions to end)"
                    );
                }
            }
        }
        Ok(n)
    })();
    consumer.unassign()?;
    result
}

/// Whether a metadata or watermark answer may change by itself: besides the errors every
/// client retries, a broker that has just restarted answers "unknown partition" until it has
/// loaded the partition (seen in the chaos test, where it ended a restarting serve).
fn transient_metadata(e: &KafkaError) -> bool {
    super::classify(e) == super::ErrorClass::Retry
        || e.rdkafka_error_code() == Some(rdkafka::error::RDKafkaErrorCode::UnknownPartition)
}

/// Low and high watermarks of a partition as `consumer` sees them (a `read_committed`
/// consumer answers the last stable offset as "high"), retrying transient errors (a leader
/// moving) until `timeout`.
///
/// # Errors
/// A Kafka error that is not transient, or one that lasts past `timeout`.
pub fn watermarks<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> KafkaResult<(i64, i64)> {
    let deadline = Instant::now() + timeout;
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Err(e) if transient_metadata(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Partition count of a topic, from the broker's metadata. Transient metadata errors (a
/// topic created a moment ago, a leader moving) are retried until `timeout`.
///
/// # Errors
/// When the topic does not exist or metadata cannot be fetched in time.
pub fn partition_count<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt =
            (|| {
                let md = consumer.fetch_metadata(Some(topic), timeout)?;
                let t = md.topics().iter().find(|t| t.name() == topic).ok_or(
                    KafkaError::MetadataFetch(rdkafka::error::RDKafkaErrorCode::UnknownTopic),
                )?;
                if let Some(e) = t.error() {
                    return Err(KafkaError::MetadataFetch(e.into()));
                }
                if t.partitions().is_empty() {
                    return Err(KafkaError::MetadataFetch(
                        rdkafka::error::RDKafkaErrorCode::LeaderNotAvailable,
                    ));
                }
                Ok(t.partitions().len() as i32)
            })();
        match attempt {
            Err(e) if transient_metadata(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::RDKafkaErrorCode as C;

    #[test]
    fn a_restarting_brokers_answers_are_waited_out() {
        assert!(transient_metadata(&KafkaError::MetadataFetch(
            C::UnknownPartition
        )));
        assert!(transient_metadata(&KafkaError::MetadataFetch(
            C::LeaderNotAvailable
        )));
        assert!(!transient_metadata(&KafkaError::MetadataFetch(
            C::UnknownTopic
        )));
        assert!(!transient_metadata(&KafkaError::MetadataFetch(
            C::TopicAuthorizationFailed
        )));
    }
}
