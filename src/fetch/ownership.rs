//! Token ownership through Kafka group assignment.
//!
//! Fetch processes form the group `<group_prefix>-fetch` over the partitions of
//! `intake.quota`. A token belongs to the process assigned the partition its id hashes to
//! (murmur2, like the quota records themselves), so each token — and every stream of it — has
//! exactly one owner at a time, and adding processes spreads tokens instead of multiplying
//! requests. The consumer runs on its own thread; rebalance callbacks are forwarded to the
//! async supervisor, and a revocation waits (bounded) until the supervisor has stopped the
//! streams of the revoked tokens, so the next owner starts after them.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use tokio::sync::mpsc;

use crate::kafka::Kafka;

/// A change of ownership.
#[derive(Debug)]
pub enum OwnershipEvent {
    /// These partitions of the quota topic are now ours.
    Assigned(Vec<i32>),
    /// These are taken away; reply on the channel once their streams have stopped.
    Revoked(Vec<i32>, std_mpsc::Sender<()>),
}

struct Ctx {
    tx: mpsc::Sender<OwnershipEvent>,
    revoke_timeout: Duration,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            if parts.is_empty() {
                return;
            }
            let (ack_tx, ack_rx) = std_mpsc::channel();
            if self
                .tx
                .blocking_send(OwnershipEvent::Revoked(parts.clone(), ack_tx))
                .is_ok()
                && ack_rx.recv_timeout(self.revoke_timeout).is_err()
            {
                tracing::warn!(
                    ?parts,
                    "streams did not stop in time on revocation; the next owner fences them"
                );
            }
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            if !parts.is_empty() {
                let _ = self.tx.blocking_send(OwnershipEvent::Assigned(parts));
            }
        }
    }
}

/// Joins the fetch group on a dedicated thread; events arrive on the returned channel. The
/// thread leaves the group when `stop` is set (revoking everything first).
///
/// # Errors
/// When the consumer cannot be created or subscribe.
pub fn spawn(
    kafka: &Kafka,
    group: &str,
    topic: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> rdkafka::error::KafkaResult<(mpsc::Receiver<OwnershipEvent>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(16);
    let consumer = kafka.group_consumer(
        group,
        None,
        Ctx {
            tx,
            revoke_timeout: Duration::from_secs(20),
        },
    )?;
    consumer.subscribe(&[topic])?;
    let handle = std::thread::Builder::new()
        .name("fetch-ownership".into())
        .spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Only rebalance events matter here: the group's records are read elsewhere.
                if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
                    tracing::warn!(error = %e, "fetch group consumer error");
                }
            }
            consumer.unsubscribe();
            // Let the revocation callback run before the consumer is dropped.
            for _ in 0..10 {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        })
        .expect("spawn ownership thread");
    Ok((rx, handle))
}
