//! Webhook delivery: every customer/order write is POSTed, signed, to `--webhook-url` as
//!
//! ```json
//! {"event_id":"<uuid>","type":"created|updated|deleted","stream":"customers","entity_id":"cus_000001",
//!  "seq":4,"occurred_at":"2025-01-01T00:00:00.000Z","data":{…the record…}|null}
//! ```
//!
//! `seq` is the record's version after the write (the delete's version for a delete), so a
//! receiver can order events per entity. `event_id` is derived from the seed and the write's
//! sequence number. Deliveries are shuffled within `--webhook-shuffle-window`, some are sent
//! twice (`--webhook-dup-rate`: same event id, same body), and failed attempts (non-2xx,
//! timeouts, connection errors) are retried with exponential backoff and jitter, up to
//! `--webhook-max-attempts`. Each attempt is signed afresh (see [`crate::signing`]) with the
//! time of sending.
//!
//! Memory is bounded: the queue from the writers holds at most `--webhook-shuffle-window`
//! events and the deliverer at most `--webhook-max-pending`; a full queue makes writers wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::clock::{self, format_ms};
use super::data::Stream;
use super::error::SimError;
use super::seeded::{self, Rand};
use super::store::Change;
use crate::config::SecretString;
use crate::signing;

/// Delivery settings from the flags.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// `--webhook-url`.
    pub url: url::Url,
    /// `--webhook-secret` (one, or two during a rotation).
    pub secrets: Vec<SecretString>,
    /// `--webhook-shuffle-window`.
    pub shuffle_window: usize,
    /// `--webhook-dup-rate`.
    pub dup_rate: f64,
    /// `--webhook-max-attempts`.
    pub max_attempts: u32,
    /// `--webhook-retry-base`.
    pub retry_base: Duration,
    /// `--webhook-retry-max`.
    pub retry_max: Duration,
    /// `--webhook-linger`.
    pub linger: Duration,
    /// `--webhook-timeout`.
    pub timeout: Duration,
    /// `--webhook-max-pending`.
    pub max_pending: usize,
}

/// Delivery counters, served in `/admin/stats`.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    enqueued: AtomicU64,
    duplicated: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    pending: AtomicU64,
}

/// A snapshot of [`WebhookCounters`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WebhookCounts {
    /// Events made (one per write; duplicates not included).
    pub enqueued: u64,
    /// Extra copies made of events.
    pub duplicated: u64,
    /// Delivery attempts (POSTs started).
    pub sent: u64,
    /// Attempts answered 2xx.
    pub acked: u64,
    /// Failed attempts scheduled for another try.
    pub retried: u64,
    /// Deliveries given up after `--webhook-max-attempts`.
    pub dropped: u64,
    /// Deliveries (copies included) neither acked nor dropped yet.
    pub pending: u64,
}

impl WebhookCounters {
    /// A consistent-enough snapshot (each counter is exact; they are read one by one).
    pub fn snapshot(&self) -> WebhookCounts {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        WebhookCounts {
            enqueued: get(&self.enqueued),
            duplicated: get(&self.duplicated),
            sent: get(&self.sent),
            acked: get(&self.acked),
            retried: get(&self.retried),
            dropped: get(&self.dropped),
            pending: get(&self.pending),
        }
    }
}

/// One event to deliver.
#[derive(Debug)]
struct Delivery {
    event_id: String,
    body: Bytes,
}

/// The writers' end: turns changes into events.
#[derive(Debug, Clone)]
pub struct WebhookQueue {
    tx: mpsc::Sender<Arc<Delivery>>,
    seed: u64,
    dup_rate: f64,
    counters: Arc<WebhookCounters>,
}

#[derive(Serialize)]
struct EventBody<'a> {
    event_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    stream: Stream,
    entity_id: &'a str,
    seq: u64,
    occurred_at: String,
    data: Option<&'a RawValue>,
}

impl WebhookQueue {
    /// Delivery counters.
    pub fn counters(&self) -> &WebhookCounters {
        &self.counters
    }

    /// Queues the event of a customer/order write (other streams send none), and a copy at
    /// the duplication rate; waits while the queue is full. Returns false once the deliverer
    /// has stopped.
    pub async fn enqueue(&self, change: &Change) -> bool {
        if !change.stream.mutable() {
            return true;
        }
        let uuid = uuid::Builder::from_random_bytes(seeded::bytes16(
            self.seed,
            "webhook-event",
            change.seq,
        ))
        .into_uuid()
        .to_string();
        let data = change
            .json
            .as_deref()
            .map(|json| serde_json::from_str::<&RawValue>(json).expect("stored records are JSON"));
        let body = serde_json::to_vec(&EventBody {
            event_id: &uuid,
            kind: change.kind.as_str(),
            stream: change.stream,
            entity_id: &change.id,
            seq: change.version,
            occurred_at: format_ms(change.at_ms),
            data,
        })
        .expect("an event serializes");
        let delivery = Arc::new(Delivery {
            event_id: uuid,
            body: body.into(),
        });
        let dup = seeded::unit(self.seed, "webhook-dup", &change.seq.to_string()) < self.dup_rate;
        self.counters.enqueued.fetch_add(1, Ordering::SeqCst);
        for copy in 0..=u8::from(dup) {
            if copy == 1 {
                self.counters.duplicated.fetch_add(1, Ordering::SeqCst);
            }
            self.counters.pending.fetch_add(1, Ordering::SeqCst);
            if self.tx.send(Arc::clone(&delivery)).await.is_err() {
                self.counters.pending.fetch_sub(1, Ordering::SeqCst);
                return false;
            }
        }
        true
    }
}

/// A delivery waiting in the deliverer.
struct Pending {
    delivery: Arc<Delivery>,
    /// Attempts made so far.
    attempts: u32,
    /// Not before this time (retry backoff).
    due: Instant,
    /// From this time it is sent even if the shuffle window is not full.
    ripe: Instant,
}

/// Starts the deliverer; it runs until `stop` turns true or every writer is gone.
///
/// # Errors
///
/// [`SimError::WebhookClient`] when the HTTP client cannot be built.
pub fn start(
    config: WebhookConfig,
    seed: u64,
    stop: watch::Receiver<bool>,
) -> Result<(WebhookQueue, tokio::task::JoinHandle<()>), SimError> {
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .user_agent("intake-sim")
        .build()
        .map_err(SimError::WebhookClient)?;
    let (tx, rx) = mpsc::channel(config.shuffle_window.max(1));
    let counters = Arc::new(WebhookCounters::default());
    let queue = WebhookQueue {
        tx,
        seed,
        dup_rate: config.dup_rate,
        counters: Arc::clone(&counters),
    };
    let deliverer = Deliverer {
        client,
        rng: Rand::new(seed, "webhook-delivery", ""),
        config,
        counters,
    };
    Ok((queue, tokio::spawn(deliverer.run(rx, stop))))
}

struct Deliverer {
    client: reqwest::Client,
    config: WebhookConfig,
    rng: Rand,
    counters: Arc<WebhookCounters>,
}

impl Deliverer {
    fn admit(&self, pending: &mut Vec<Pending>, delivery: Arc<Delivery>) {
        let now = Instant::now();
        pending.push(Pending {
            delivery,
            attempts: 0,
            due: now,
            ripe: now + self.config.linger,
        });
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Arc<Delivery>>, mut stop: watch::Receiver<bool>) {
        let window = self.config.shuffle_window.max(1);
        let mut pending: Vec<Pending> = Vec::new();
        let mut closed = false;
        loop {
            if *stop.borrow() {
                return;
            }
            while pending.len() < self.config.max_pending {
                match rx.try_recv() {
                    Ok(delivery) => self.admit(&mut pending, delivery),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed && pending.is_empty() {
                return;
            }
            let now = Instant::now();
            // Deliveries that may go now, in arrival order; the shuffle picks among the first
            // `window` of them.
            let due: Vec<usize> = pending
                .iter()
                .enumerate()
                .filter(|(_, p)| p.due <= now)
                .map(|(i, _)| i)
                .take(window)
                .collect();
            let ripe = due.len() >= window || closed || due.iter().any(|&i| pending[i].ripe <= now);
            if ripe && !due.is_empty() {
                let index = due[self.rng.below(due.len() as u64) as usize];
                let item = pending.remove(index);
                tokio::select! {
                    biased;
                    _ = stop.changed() => return,
                    retry = self.attempt(item) => {
                        if let Some(item) = retry {
                            pending.push(item);
                        }
                    }
                }
                continue;
            }
            let wake = pending
                .iter()
                .map(|p| if p.due <= now { p.ripe } else { p.due })
                .min();
            let room = !closed && pending.len() < self.config.max_pending;
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                received = rx.recv(), if room => match received {
                    Some(delivery) => self.admit(&mut pending, delivery),
                    None => closed = true,
                },
                () = sleep_until(wake), if wake.is_some() => {}
            }
        }
    }

    /// One attempt; the item back when it is to be retried.
    async fn attempt(&mut self, mut item: Pending) -> Option<Pending> {
        let delivery = &item.delivery;
        let t = clock::now_ms().div_euclid(1000);
        let secrets: Vec<&[u8]> = self
            .config
            .secrets
            .iter()
            .map(|s| s.expose().as_bytes())
            .collect();
        let signature = signing::sign_all(&secrets, t, &delivery.body);
        self.counters.sent.fetch_add(1, Ordering::SeqCst);
        item.attempts += 1;
        let result = self
            .client
            .post(self.config.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signing::HEADER, signature)
            .header("X-Intake-Event-Id", &delivery.event_id)
            .body(delivery.body.clone())
            .send()
            .await;
        let failure = match result {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("status {}", response.status().as_u16())),
            Err(error) => Some(error.to_string()),
        };
        let Some(reason) = failure else {
            self.counters.acked.fetch_add(1, Ordering::SeqCst);
            self.counters.pending.fetch_sub(1, Ordering::SeqCst);
            debug!(event_id = %delivery.event_id, attempts = item.attempts, "webhook delivered");
            return None;
        };
        if item.attempts >= self.config.max_attempts {
            self.counters.dropped.fetch_add(1, Ordering::SeqCst);
            self.counters.pending.fetch_sub(1, Ordering::SeqCst);
            warn!(event_id = %delivery.event_id, attempts = item.attempts, %reason, "webhook dropped after the last attempt");
            return None;
        }
        self.counters.retried.fetch_add(1, Ordering::SeqCst);
        let backoff = self.backoff(item.attempts);
        debug!(event_id = %delivery.event_id, attempts = item.attempts, %reason, ?backoff, "webhook attempt failed; will retry");
        let now = Instant::now();
        item.due = now + backoff;
        item.ripe = item.due;
        Some(item)
    }

    /// Exponential backoff from `--webhook-retry-base`, capped at `--webhook-retry-max`, with
    /// "equal jitter": half fixed, half random, so a retry never comes at once.
    fn backoff(&mut self, attempts: u32) -> Duration {
        let base = self.config.retry_base.as_millis() as u64;
        let max = self.config.retry_max.as_millis() as u64;
        let ceiling = base
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(32))
            .min(max);
        let half = ceiling / 2;
        Duration::from_millis(half + self.rng.below(ceiling - half + 1))
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::clock::BASE_MS;
    use crate::sim::store::ChangeKind;
    use serde_json::{Value, json};

    fn queue(dup_rate: f64) -> (WebhookQueue, mpsc::Receiver<Arc<Delivery>>) {
        let (tx, rx) = mpsc::channel(8);
        let queue = WebhookQueue {
            tx,
            seed: 1,
            dup_rate,
            counters: Arc::default(),
        };
        (queue, rx)
    }

    fn change(stream: Stream, kind: ChangeKind, json: Option<&str>) -> Change {
        Change {
            seq: 7,
            stream,
            kind,
            id: "ord_000001".into(),
            version: 3,
            backdated: false,
            at_ms: BASE_MS,
            json: json.map(Into::into),
        }
    }

    #[tokio::test]
    async fn an_event_carries_its_write() {
        let (q, mut rx) = queue(0.0);
        let record = r#"{"id":"ord_000001","version":3}"#;
        assert!(
            q.enqueue(&change(Stream::Orders, ChangeKind::Updated, Some(record)))
                .await
        );
        let d = rx.recv().await.unwrap();
        let event: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(
            event,
            json!({
                "event_id": d.event_id, "type": "updated", "stream": "orders",
                "entity_id": "ord_000001", "seq": 3, "occurred_at": "2024-01-01T00:00:00.000Z",
                "data": {"id": "ord_000001", "version": 3}
            })
        );
        let id = uuid::Uuid::parse_str(&d.event_id).unwrap();
        assert_eq!(id.get_version_num(), 4);

        // The same write of the same seed has the same id; a delete has no data.
        assert!(
            q.enqueue(&change(Stream::Orders, ChangeKind::Deleted, None))
                .await
        );
        let again = rx.recv().await.unwrap();
        assert_eq!(again.event_id, d.event_id);
        let event: Value = serde_json::from_slice(&again.body).unwrap();
        assert_eq!(event["data"], Value::Null);
        assert_eq!(q.counters().snapshot().pending, 2);
    }

    #[tokio::test]
    async fn events_send_none_and_duplicates_are_copies() {
        let (q, mut rx) = queue(1.0);
        assert!(
            q.enqueue(&change(Stream::Events, ChangeKind::Created, Some("{}")))
                .await
        );
        assert!(
            rx.try_recv().is_err(),
            "append-only events send no webhooks"
        );
        assert!(
            q.enqueue(&change(Stream::Customers, ChangeKind::Created, Some("{}")))
                .await
        );
        let (a, b) = (rx.recv().await.unwrap(), rx.recv().await.unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        let counts = q.counters().snapshot();
        assert_eq!(
            (counts.enqueued, counts.duplicated, counts.pending),
            (1, 1, 2)
        );
        drop(rx);
        assert!(
            !q.enqueue(&change(Stream::Orders, ChangeKind::Created, Some("{}")))
                .await
        );
        assert_eq!(
            q.counters().snapshot().pending,
            2,
            "a refused delivery is not pending"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut d = Deliverer {
            client: reqwest::Client::new(),
            config: WebhookConfig {
                url: "http://127.0.0.1:1/".parse().unwrap(),
                secrets: vec![],
                shuffle_window: 1,
                dup_rate: 0.0,
                max_attempts: 3,
                retry_base: Duration::from_millis(100),
                retry_max: Duration::from_millis(1000),
                linger: Duration::ZERO,
                timeout: Duration::from_secs(1),
                max_pending: 2,
            },
            rng: Rand::new(1, "t", ""),
            counters: Arc::default(),
        };
        for _ in 0..100 {
            for (attempts, ceiling) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1000),
                (40, 1000),
            ] {
                let b = d.backoff(attempts).as_millis() as u64;
                assert!(
                    (ceiling / 2..=ceiling).contains(&b),
                    "attempt {attempts}: {b} ms"
                );
            }
        }
    }
}
