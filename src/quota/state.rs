//! A token's quota state in `intake.quota` (compacted, key = token id), so the next owner of a
//! token after a rebalance or a crash starts where the last one stopped instead of bursting.
//!
//! The owner of a quota partition writes one record per active token about every second (not
//! per request) and a last one when the partition is revoked; a new owner reads the partition
//! (`read_committed`, to its end) before the first request of any of its tokens and seeds each
//! token's [`Pacer`] with [`Pacer::restore`].
//!
//! Writes go through a **transactional** producer whose id is tied to the quota partition
//! (`<group_prefix>-quota-<partition>`), one transaction per round of writes. Why not a plain
//! idempotent producer: a process that lost a partition but has not noticed yet (a long GC-like
//! stall, a network partition from the coordinator) could otherwise overwrite the new owner's
//! state with its stale one; with the id tied to the unit of ownership, the new owner's `init`
//! fences it (invariant 4 of `docs/INVARIANTS.md`, as for every other arrow into Kafka) and aborts its open
//! transaction before the state is read. The cost is one small transaction per second per
//! owned partition. Instants are stored as unix milliseconds, so the state survives the
//! process; the clocks of two hosts may differ by a little: restored request ends are taken
//! [`HANDOVER_CLOCK_SKEW`] later than stored, so hosts whose clocks agree that closely (NTP)
//! keep the bound across a hand-over.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::pacer::{HANDOVER_CLOCK_SKEW, Pacer, Snapshot};
use crate::kafka::txn::{self, Call, Outcome, Policy, WhenUnknown};
use crate::kafka::{Kafka, Outgoing, TxnProducer, reader};

/// The stored state of one token (the value of its `intake.quota` record, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaRecord {
    /// Token id (also the key).
    pub token: String,
    /// The pace in force, ms between requests (learned from headers, or from the quota).
    pub interval_ms: f64,
    /// The limit in force: the configured one, or a lower one announced by the upstream.
    pub limit: u32,
    /// The next free slot of the schedule (unix ms).
    pub next_at: i64,
    /// The token is paused until then (unix ms): a 429's Retry-After, or nothing remaining.
    #[serde(default)]
    pub paused_until: Option<i64>,
    /// The remaining count the upstream last announced.
    #[serde(default)]
    pub remaining: Option<u64>,
    /// When the upstream said its window resets (unix ms).
    #[serde(default)]
    pub reset_at: Option<i64>,
    /// When the token's requests of the last window ended (unix ms, oldest first; requests
    /// in flight are given `updated_at`), so the next owner counts them against its bound.
    #[serde(default)]
    pub recent_ends: Vec<i64>,
    /// When this record was taken (unix ms).
    pub updated_at: i64,
    /// The process that wrote it (`INTAKE_INSTANCE_ID` / `kafka.instance_id` / host).
    #[serde(default)]
    pub owner: String,
}

fn unix_ms_now() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// Converts between tokio instants and unix ms around one pair of "now"s.
#[derive(Debug, Clone, Copy)]
struct Clock {
    instant: Instant,
    unix_ms: i64,
}

impl Clock {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            unix_ms: unix_ms_now(),
        }
    }
    fn to_unix(self, i: Instant) -> i64 {
        if i >= self.instant {
            self.unix_ms + i64::try_from((i - self.instant).as_millis()).unwrap_or(i64::MAX / 2)
        } else {
            self.unix_ms - i64::try_from((self.instant - i).as_millis()).unwrap_or(i64::MAX / 2)
        }
    }
    fn to_instant(self, ms: i64) -> Instant {
        let d = Duration::from_millis(ms.abs_diff(self.unix_ms));
        if ms >= self.unix_ms {
            self.instant + d
        } else {
            self.instant.checked_sub(d).unwrap_or(self.instant)
        }
    }
}

impl QuotaRecord {
    /// The record of a pacer's state now.
    pub fn of(token: &str, owner: &str, pacer: &Pacer) -> Self {
        let c = Clock::now();
        let s = pacer.snapshot();
        Self {
            token: token.to_owned(),
            interval_ms: s.interval.as_secs_f64() * 1000.0,
            limit: s.limit,
            next_at: c.to_unix(s.next_at),
            paused_until: s
                .paused_until
                .map(|p| c.to_unix(p))
                .filter(|p| *p > c.unix_ms),
            remaining: s.last_seen.map(|(r, _)| r),
            reset_at: s.last_seen.map(|(_, at)| c.to_unix(at)),
            recent_ends: s.ended.iter().map(|e| c.to_unix(*e)).collect(),
            updated_at: c.unix_ms,
            owner: owner.to_owned(),
        }
    }

    /// Seeds a fresh pacer of the token from this record (see [`Pacer::restore`]).
    pub fn seed(&self, pacer: &Pacer) {
        let c = Clock::now();
        let snap = Snapshot {
            interval: Duration::from_secs_f64((self.interval_ms / 1000.0).clamp(0.0, 3600.0)),
            limit: self.limit,
            next_at: c.to_instant(self.next_at),
            paused_until: self.paused_until.map(|p| c.to_instant(p)),
            last_seen: self
                .remaining
                .zip(self.reset_at)
                .map(|(r, at)| (r, c.to_instant(at))),
            ended: self.recent_ends.iter().map(|e| c.to_instant(*e)).collect(),
        };
        let age = Duration::from_millis(
            c.unix_ms
                .saturating_sub(self.updated_at)
                .max(0)
                .unsigned_abs(),
        );
        pacer.restore(&snap, age, HANDOVER_CLOCK_SKEW);
    }
}

/// Reads and writes the quota state of one partition of `intake.quota`.
#[derive(Debug, Clone)]
pub struct QuotaStore {
    kafka: Kafka,
    topic: String,
    partition: i32,
    producer: TxnProducer,
    /// A transaction call whose outcome is not known yet (it timed out while the broker was
    /// away). librdkafka refuses every other transaction call ("Conflicting … API call is
    /// already in progress") until this one is repeated to its end.
    unresolved: std::sync::Arc<std::sync::Mutex<Option<Call>>>,
}

impl QuotaStore {
    /// Creates the partition's writer and fences the previous owner's (its open transaction
    /// is aborted), so what [`QuotaStore::read`] returns next is final. Blocking.
    ///
    /// # Errors
    /// The Kafka error (classify it to retry).
    pub fn open(
        kafka: &Kafka,
        group_prefix: &str,
        topic: &str,
        partition: i32,
    ) -> rdkafka::error::KafkaResult<Self> {
        let producer = kafka.txn_producer(&txn::transactional_id(
            group_prefix,
            txn::Writer::Quota { partition },
        ))?;
        producer.init()?;
        Ok(Self {
            kafka: kafka.clone(),
            topic: topic.to_owned(),
            partition,
            producer,
            unresolved: Default::default(),
        })
    }

    /// The latest committed record of every token in the partition. Blocking.
    ///
    /// # Errors
    /// The Kafka error, or a time-out.
    pub fn read(&self) -> rdkafka::error::KafkaResult<HashMap<String, QuotaRecord>> {
        self.read_latest(&self.topic, "quota")
    }

    /// The latest committed JSON record per key of this store's partition of `topic` (the
    /// quota topic, or a topic partitioned like it such as `intake.tokens`); a tombstone
    /// removes its key, an unreadable record is logged and skipped. Blocking.
    ///
    /// # Errors
    /// The Kafka error, or a time-out.
    pub fn read_latest<T: serde::de::DeserializeOwned>(
        &self,
        topic: &str,
        what: &str,
    ) -> rdkafka::error::KafkaResult<HashMap<String, T>> {
        let consumer = self.kafka.reader_consumer(what)?;
        let latest = read_latest(&consumer, topic, &[self.partition], Duration::from_secs(30))?;
        Ok(latest.into_iter().collect())
    }

    /// The partition this store owns.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Writes records in one transaction. Blocking.
    ///
    /// # Errors
    /// The Kafka error; fatal when a newer owner fenced this writer.
    pub fn write(&self, records: &[QuotaRecord]) -> rdkafka::error::KafkaResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let values: Vec<(&str, Vec<u8>)> = records
            .iter()
            .map(|r| {
                (
                    r.token.as_str(),
                    serde_json::to_vec(r).expect("serialisable"),
                )
            })
            .collect();
        self.write_to(&self.topic, &values)
    }

    /// Writes `(key, value)` records to this store's partition of `topic` in one transaction
    /// of the partition's writer, so a newer owner of the partition fences them too. Blocking.
    ///
    /// A commit or abort that timed out (the broker is away) is repeated first, at the next
    /// write: until it ends, librdkafka refuses any other transaction call. Writes of one
    /// store are serialised.
    ///
    /// # Errors
    /// The Kafka error; fatal when a newer owner fenced this writer.
    pub fn write_to(
        &self,
        topic: &str,
        records: &[(&str, Vec<u8>)],
    ) -> rdkafka::error::KafkaResult<()> {
        // One try of each call; a call whose outcome is not known is repeated at the next write.
        let policy = Policy::once().when_unknown(WhenUnknown::Pending);
        let p = &self.producer;
        let mut unresolved = self.unresolved.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(call) = *unresolved {
            settle(&mut unresolved, txn::resume(p, &policy, call))?;
        }
        let outcome = txn::run(p, &policy, |p| {
            records.iter().try_for_each(|(key, value)| {
                p.send(Outgoing {
                    topic,
                    key: Some(key.as_bytes()),
                    payload: Some(value),
                    headers: rdkafka::message::OwnedHeaders::new(),
                    partition: Some(self.partition),
                })
            })
        });
        settle(&mut unresolved, outcome)
    }
}

/// Remembers the call a transaction left pending (a fenced or broken producer keeps what it
/// had: nothing more can be done with it); the transaction's error if it did not commit.
fn settle(unresolved: &mut Option<Call>, outcome: Outcome<()>) -> KafkaResult<()> {
    match &outcome {
        Outcome::Unresolved { pending, .. } => *unresolved = *pending,
        Outcome::Fenced(_) | Outcome::Fatal(_) => {}
        _ => *unresolved = None,
    }
    outcome.into_error().map_or(Ok(()), Err)
}

/// The latest committed JSON record per key of `partitions` of a compacted `topic`
/// (`intake.quota`, `intake.tokens`), read to their ends within `timeout`: a tombstone removes
/// its key, a record without a UTF-8 key is passed over, and one that does not parse is logged
/// and skipped. Blocking.
///
/// # Errors
/// The Kafka error, or a time-out.
pub(crate) fn read_latest<T: serde::de::DeserializeOwned>(
    r: &crate::kafka::Reader,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> KafkaResult<BTreeMap<String, T>> {
    let mut out = BTreeMap::new();
    reader::read_to_end(r, topic, partitions, timeout, |m| {
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            return;
        };
        match m.payload().map(serde_json::from_slice::<T>) {
            Some(Ok(rec)) => {
                out.insert(key.to_owned(), rec);
            }
            None => {
                out.remove(key);
            }
            Some(Err(e)) => tracing::warn!(topic, key, error = %e, "unreadable record ignored"),
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_record_round_trips_a_pacer() {
        let p = Pacer::new(10, Duration::from_secs(1), 1.0);
        p.pause_until(Instant::now() + Duration::from_secs(3));
        let r = QuotaRecord::of("tok", "a", &p);
        assert_eq!(r.interval_ms, 100.0);
        let paused = r.paused_until.unwrap() - r.updated_at;
        assert!((2990..=3010).contains(&paused), "{paused}");
        let json = serde_json::to_string(&r).unwrap();
        let back: QuotaRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let q = Pacer::new(10, Duration::from_secs(1), 1.0);
        back.seed(&q);
        let s = q.snapshot();
        let left = s.paused_until.unwrap() - Instant::now();
        assert!(
            left > Duration::from_millis(2900) && left <= Duration::from_secs(3),
            "{left:?}"
        );
    }

    #[test]
    fn reads_and_writes_the_stored_json() {
        let full = r#"{"token":"tok","interval_ms":62.5,"limit":16,"next_at":1767225600100,"paused_until":1767225603000,"remaining":7,"reset_at":1767225660000,"recent_ends":[1767225599000,1767225599500],"updated_at":1767225600000,"owner":"a"}"#;
        crate::contract::assert_record_json::<QuotaRecord>(full, full);
        crate::contract::assert_record_json::<QuotaRecord>(
            r#"{"token":"tok","interval_ms":62.5,"limit":16,"next_at":1767225600100,"updated_at":1767225600000}"#,
            r#"{"token":"tok","interval_ms":62.5,"limit":16,"next_at":1767225600100,"paused_until":null,"remaining":null,"reset_at":null,"recent_ends":[],"updated_at":1767225600000,"owner":""}"#,
        );
    }
}
