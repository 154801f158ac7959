//! One partition of `intake.quota` while this fetch process owns it (the group gave it the
//! partition, see `fetch::ownership`): the fenced writer of the partition's state, the pacers
//! of its tokens seeded from the stored state, and their state written back while they are
//! used and once more when the partition goes. Stored state makes a hand-over smooth (the next
//! owner starts where this one stopped); it is not needed for correctness, so a state that
//! cannot be read or written is logged and the tokens go on from a fresh pacer.

use std::collections::HashMap;
use std::sync::Arc;

use crate::kafka::{ErrorClass, Kafka, classify};

use super::{Pacer, QuotaRecord, QuotaStore};

/// The quota state of one owned partition.
pub struct OwnedPartition {
    partition: i32,
    /// This process (`quota.owner` of what it writes).
    owner: String,
    /// The partition's centrally paced tokens, by token id.
    pacers: HashMap<String, Arc<Pacer>>,
    /// The partition's writer; None when it could not be opened or was fenced.
    store: Option<QuotaStore>,
}

impl OwnedPartition {
    /// Opens the partition's state writer, which fences the previous owner's (its open
    /// transaction is aborted, so what is read next is final), and seeds `pacers` from the
    /// stored state. With `open_writer` false (no centrally paced token and no OAuth 2.0
    /// token in the partition) nothing is opened.
    pub async fn open(
        kafka: &Kafka,
        group_prefix: &str,
        topic: &str,
        partition: i32,
        owner: String,
        pacers: HashMap<String, Arc<Pacer>>,
        open_writer: bool,
    ) -> Self {
        let store = if open_writer {
            Self::restore(kafka, group_prefix, topic, partition, &pacers).await
        } else {
            None
        };
        Self {
            partition,
            owner,
            pacers,
            store,
        }
    }

    async fn restore(
        kafka: &Kafka,
        group_prefix: &str,
        topic: &str,
        partition: i32,
        pacers: &HashMap<String, Arc<Pacer>>,
    ) -> Option<QuotaStore> {
        let (k, prefix, t) = (kafka.clone(), group_prefix.to_owned(), topic.to_owned());
        let opened =
            crate::kafka::retry::retrying_blocking("open the quota state writer", move || {
                QuotaStore::open(&k, &prefix, &t, partition)
            })
            .await;
        let store = match opened {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(partition, error = %e, "quota state unavailable; tokens start from a fresh pacer");
                return None;
            }
        };
        let s = store.clone();
        match crate::kafka::retry::retrying_blocking("read the quota state", move || s.read()).await
        {
            Ok(records) => {
                for (token, pacer) in pacers {
                    if let Some(r) = records.get(token) {
                        r.seed(pacer);
                        tracing::info!(partition, token, from = %r.owner, interval_ms = r.interval_ms, limit = r.limit, paused_until = ?r.paused_until, "quota state restored");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "quota state unreadable; tokens start from a fresh pacer");
            }
        }
        Some(store)
    }

    /// The partition's writer, while this process holds it (OAuth 2.0 tokens are stored with
    /// it).
    pub fn store(&self) -> Option<&QuotaStore> {
        self.store.as_ref()
    }

    /// The pacer of a centrally paced token of this partition.
    pub fn pacer(&self, token: &str) -> Option<Arc<Pacer>> {
        self.pacers.get(token).cloned()
    }

    /// The partition's number.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Stores the state of the tokens used since the last call. True when the writer was
    /// fenced by this write: a newer owner has the partition, and its tokens are not this
    /// process's to use any more.
    pub async fn store_active(&mut self) -> bool {
        let active: Vec<QuotaRecord> = self
            .pacers
            .iter()
            .filter(|(_, p)| p.take_activity() > 0)
            .map(|(t, p)| QuotaRecord::of(t, &self.owner, p))
            .collect();
        let had = self.store.is_some();
        self.store = write(self.store.take(), active).await;
        had && self.store.is_none()
    }

    /// Stores every token's state, as the partition goes.
    pub async fn close(mut self) {
        let all: Vec<QuotaRecord> = self
            .pacers
            .iter()
            .map(|(t, p)| QuotaRecord::of(t, &self.owner, p))
            .collect();
        write(self.store.take(), all).await;
    }
}

/// Writes records; a fenced writer (a newer owner exists) stops writing.
async fn write(store: Option<QuotaStore>, records: Vec<QuotaRecord>) -> Option<QuotaStore> {
    let s = store?;
    if records.is_empty() {
        return Some(s);
    }
    let w = s.clone();
    match tokio::task::spawn_blocking(move || w.write(&records))
        .await
        .unwrap_or(Err(rdkafka::error::KafkaError::Canceled))
    {
        Ok(()) => Some(s),
        Err(e) if classify(&e) == ErrorClass::Fatal => {
            tracing::warn!(error = %e, "quota state writer fenced: another process owns these tokens now");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "storing quota state failed; the next round retries");
            Some(s)
        }
    }
}
