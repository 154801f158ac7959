//! Reading partitions to their committed end, to restore state before work starts.
//!
//! Cursors, dedup state and the job registry live in compacted topics. A stage that takes
//! over a unit of work reads the relevant partitions with `read_committed` from the beginning
//! to the high watermark taken when it starts, folding every record into its state, and only
//! then starts. The end is reached when the consumer's position passes that watermark, never
//! by counting records: transaction markers and aborted records take offsets too.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

/// Reads the given partitions of `topic` from the beginning to their end, calling `f` for
/// every record. Blocking; run it on a blocking thread.
///
/// # Errors
/// A Kafka error, or a time-out when the partitions do not reach their end within `timeout`.
pub fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> KafkaResult<u64> {
    if partitions.is_empty() {
        return Ok(0);
    }
    // The end is the high watermark at the start; records after it are newer than the state
    // being restored. Under read_committed the consumer's position moves past transaction
    // markers and aborted records, so `position >= end` is reached even when the last offsets
    // hold no visible record. (librdkafka's EOF event alone can lag behind while other
    // producers keep transactions open on the partition.)
    let mut ends = std::collections::HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (lo, hi) = watermarks(consumer, topic, *p, timeout)?;
        if hi > lo {
            ends.insert(*p, hi);
            tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&tpl)?;
    let mut pending: HashSet<i32> = ends.keys().copied().collect();
    let deadline = Instant::now() + timeout;
    let mut n = 0u64;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            consumer.unassign()?;
            return Err(KafkaError::MessageConsumption(
                rdkafka::error::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        match consumer.poll(Duration::from_millis(50)) {
            None => {}
            Some(Ok(m)) => {
                if m.offset() < ends[&m.partition()] {
                    n += 1;
                    f(&m);
                }
                if m.offset() + 1 >= ends[&m.partition()] {
                    pending.remove(&m.partition());
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => {
                tracing::warn!(%e, topic, "error while restoring state; retrying");
            }
        }
        if !pending.is_empty() {
            for e in consumer.position()?.elements_for_topic(topic) {
                if let Offset::Offset(o) = e.offset()
                    && ends.get(&e.partition()).is_some_and(|end| o >= *end)
                {
                    pending.remove(&e.partition());
                }
            }
        }
    }
    consumer.unassign()?;
    Ok(n)
}

/// Low and high watermarks of a partition, retrying transient errors (a leader moving).
fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> KafkaResult<(i64, i64)> {
    let deadline = Instant::now() + timeout;
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Err(e)
                if super::classify(&e) == super::ErrorClass::Retry && Instant::now() < deadline =>
            {
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
            Err(e)
                if super::classify(&e) == super::ErrorClass::Retry && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}
