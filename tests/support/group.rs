//! What a stage's consumer group holds, asked of the broker (the group coordinator and the
//! partitions' offsets): which member owns which partitions, and how many committed input
//! records a set of partitions still has to process. Crash tests use it to kill a process only
//! when it provably has work in flight, instead of hoping a random moment finds some.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::brokers;

/// A topic partition.
pub type Tp = (String, i32);

const TIMEOUT: Duration = Duration::from_secs(5);

/// One long-lived client that looks at one group.
pub struct GroupView {
    consumer: BaseConsumer,
    group: String,
}

impl GroupView {
    pub fn new(group: &str) -> Self {
        let consumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", group)
            // read_committed would wait while a killed process's offsets are still pending in
            // its open transaction (require_stable); the last committed offsets are wanted.
            .set("isolation.level", "read_uncommitted")
            .create()
            .unwrap();
        GroupView {
            consumer,
            group: group.to_owned(),
        }
    }

    /// Members (by member id) and their partitions while the group is stable; `None` while it
    /// rebalances, is empty, or the coordinator does not answer in time.
    pub fn assignments(&self) -> Option<BTreeMap<String, Vec<Tp>>> {
        intake::kafka::group::assignments(&self.consumer, &self.group)
            .ok()
            .flatten()
    }

    /// The member id and partitions of the static member `instance` (its
    /// `group.instance.id`) in a stable group; `None` when it is not a member or the group is
    /// not stable. A restarted process rejoins under a new member id, so a changed id tells
    /// that the new life has joined.
    pub fn owned_by(&self, instance: &str) -> Option<(String, Vec<Tp>)> {
        let prefix = format!("{instance}-");
        self.assignments()?
            .into_iter()
            .find(|(member, _)| member.starts_with(&prefix))
    }

    /// The partition count of `topic`; `None` when the broker does not answer in time.
    pub fn partitions(&self, topic: &str) -> Option<i32> {
        intake::kafka::reader::partition_count(&self.consumer, topic, TIMEOUT).ok()
    }

    /// The group's committed offset of each of `partitions` (absent: none committed yet);
    /// `None` when the broker does not answer in time.
    pub fn committed(&self, partitions: &[Tp]) -> Option<BTreeMap<Tp, i64>> {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let committed = self.consumer.committed_offsets(tpl, TIMEOUT).ok()?;
        Some(
            committed
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    rdkafka::Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                    _ => None,
                })
                .collect(),
        )
    }

    /// Records of `partitions` past the group's committed offsets: the high watermark minus the
    /// committed offset (from the log start when none), summed. A partition written by
    /// transactions counts its last marker too, so a drained partition counts 1.
    /// `None` when the broker does not answer in time.
    pub fn backlog(&self, partitions: &[Tp]) -> Option<i64> {
        if partitions.is_empty() {
            return Some(0);
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let committed = self.consumer.committed_offsets(tpl, TIMEOUT).ok()?;
        let mut total = 0;
        for (t, p) in partitions {
            let (lo, hi) = self.consumer.fetch_watermarks(t, *p, TIMEOUT).ok()?;
            let at = match committed.find_partition(t, *p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o,
                _ => lo,
            };
            total += hi - at;
        }
        Some(total)
    }
}
