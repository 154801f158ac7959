//! Lands HTTP-submitted records in Kafka, many requests per transaction.
//!
//! Handlers send a [`Landing`] over a bounded queue and wait for its [`Ack`]; one task drains
//! the queue into a transaction (up to `MAX_BATCH` requests or `LINGER`), commits, and answers
//! every request of the batch. A request is acknowledged only after its transaction committed,
//! so a 2xx means the data is in Kafka; when the transaction fails, every request of the batch
//! gets an error (503) and nothing of it is visible to read_committed consumers. The bounded
//! queue turns a slow or absent broker into back-pressure and 503s instead of memory growth.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::message::OwnedHeaders;
use tokio::sync::{mpsc, oneshot};

use crate::kafka::txn::{Backoff, OnFence, Policy};
use crate::kafka::{Kafka, Outgoing, TxnProducer, classify};
use crate::stage::Stage;
use crate::telemetry::metric;

/// Most requests per transaction.
const MAX_BATCH: usize = 256;
/// Longest a batch waits for more requests.
const LINGER: Duration = Duration::from_millis(5);
/// Queue length before handlers get 503.
pub const QUEUE: usize = 1024;

/// One record to land.
pub struct ToLand {
    /// Topic.
    pub topic: String,
    /// Key.
    pub key: Bytes,
    /// Value (None: tombstone).
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: OwnedHeaders,
}

/// A request's records, landed together or not at all.
pub struct Landing {
    /// The records.
    pub records: Vec<ToLand>,
    /// Where the outcome goes.
    pub ack: oneshot::Sender<Ack>,
}

/// The outcome of a landing.
pub type Ack = Result<(), String>;

/// Starts the landing task; returns the queue. The task ends when every sender is dropped,
/// after answering what it holds.
///
/// # Errors
/// When the producer cannot be created (initialisation is retried inside the task).
pub fn start(
    kafka: &Kafka,
    transactional_id: &str,
) -> rdkafka::error::KafkaResult<(
    mpsc::Sender<Landing>,
    tokio::task::JoinHandle<()>,
    tokio::sync::watch::Receiver<bool>,
)> {
    let producer = kafka.txn_producer(transactional_id)?;
    let kafka = kafka.clone();
    let txn_id = transactional_id.to_owned();
    let (tx, mut rx) = mpsc::channel::<Landing>(QUEUE);
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let ready_tx = Arc::new(ready_tx);
    let task = tokio::spawn(async move {
        let mut producer = producer;
        init(&producer).await;
        let _ = ready_tx.send(true);
        // A commit or abort whose outcome is not known yet (the call timed out: the broker is
        // away) is not abandoned: librdkafka requires it to be repeated until it ends (an abort
        // meanwhile is refused, and the producer would refuse every later transaction). It is
        // repeated for up to `RESOLVE_LIMIT`, reporting not ready meanwhile; after that, or
        // when the producer is fenced or broken, the producer is replaced.
        let not_ready = ready_tx.clone();
        let policy = Policy::once()
            .repeating_for(RESOLVE_LIMIT, Duration::from_millis(500))
            .on_fence(OnFence::Replace)
            .on_retry(Arc::new(move |_, _| {
                let _ = not_ready.send(false);
            }));
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(l)) => batch.push(l),
                    _ => break,
                }
            }
            // A request whose handler gave up waiting (it answered 503) is not landed now:
            // it was not acknowledged, so the client retries it. (One that gives up while its
            // transaction commits may still land: a 503 never promises that nothing landed.)
            batch.retain(|l| !l.ack.is_closed());
            if batch.is_empty() {
                continue;
            }
            let (records, acks): (Vec<Vec<ToLand>>, Vec<oneshot::Sender<Ack>>) =
                batch.into_iter().map(|l| (l.records, l.ack)).unzip();
            // Requests still queued behind this batch: the stage's lag.
            metrics::gauge!(metric::LAG, "stage" => Stage::Serve.name()).set(rx.len() as f64);
            let (n_in, n_out) = (
                records.len() as u64,
                records.iter().map(|r| r.len() as u64).sum::<u64>(),
            );
            let started = std::time::Instant::now();
            let landed = producer
                .transaction(policy.clone(), move |p| {
                    records.iter().flatten().try_for_each(|r| {
                        p.send(Outgoing {
                            topic: &r.topic,
                            key: Some(&r.key),
                            payload: r.value.as_deref(),
                            headers: r.headers.clone(),
                            partition: None,
                        })
                    })
                })
                .await;
            metrics::histogram!(metric::COMMIT_SECONDS, "stage" => Stage::Serve.name())
                .record(started.elapsed().as_secs_f64());
            let replace = landed.needs_new_producer();
            let failure = landed.into_error();
            if failure.is_none() {
                metrics::counter!(metric::RECORDS_IN, "stage" => Stage::Serve.name())
                    .increment(n_in);
                metrics::counter!(metric::RECORDS_OUT, "stage" => Stage::Serve.name())
                    .increment(n_out);
            }
            let outcome: Ack = match &failure {
                None => Ok(()),
                Some(e) => Err(format!("the landing transaction failed: {e}")),
            };
            match failure {
                None => {
                    let _ = ready_tx.send(true);
                }
                Some(e) => {
                    tracing::error!(error = %e, requests = acks.len(), replace, "landing transaction failed; the requests were answered 503 (not acknowledged)");
                    metrics::counter!(metric::ERRORS, "stage" => Stage::Serve.name(), "class" => format!("{:?}", classify(&e))).increment(1);
                    let _ = ready_tx.send(false);
                    if replace {
                        // Fenced, broken, or a transaction whose outcome could not be learned:
                        // a fresh producer under the same id resolves it (its init aborts the
                        // open transaction, or completes one the coordinator already decided
                        // to commit) and starts clean.
                        match kafka.txn_producer(&txn_id) {
                            Ok(p) => {
                                init(&p).await;
                                let old = std::mem::replace(&mut producer, p);
                                // Destroying a producer may wait for the broker: not on the runtime.
                                let _ = tokio::task::spawn_blocking(move || drop(old)).await;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "serve: producer could not be rebuilt")
                            }
                        }
                    }
                }
            }
            for a in acks {
                let _ = a.send(outcome.clone());
            }
        }
    });
    Ok((tx, task, ready_rx))
}

/// How long a commit or abort whose outcome is not known yet (the call timed out: the broker
/// is away) is repeated before the producer is replaced instead.
const RESOLVE_LIMIT: Duration = Duration::from_secs(60);

/// Initialises the producer's transactions, repeating every failure until it works (serve
/// owns its transactional id: nothing else can take it over).
async fn init(p: &TxnProducer) {
    let mut backoff = Backoff::default();
    while let Err(e) = p.blocking(TxnProducer::init).await {
        tracing::warn!(error = %e, "serve: cannot initialise transactions yet; retrying");
        tokio::time::sleep(backoff.next_pause()).await;
    }
}

/// Lands records and waits for the commit.
///
/// # Errors
/// The queue is full (`busy`), the lander stopped, or the transaction failed.
pub async fn land(
    queue: &mpsc::Sender<Landing>,
    records: Vec<ToLand>,
    wait: Duration,
) -> Result<(), LandError> {
    let (ack, rx) = oneshot::channel();
    queue
        .try_send(Landing { records, ack })
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => LandError::Busy,
            mpsc::error::TrySendError::Closed(_) => LandError::Stopped,
        })?;
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(LandError::Failed(e)),
        Ok(Err(_)) => Err(LandError::Stopped),
        Err(_) => Err(LandError::Timeout),
    }
}

/// Why a landing was not acknowledged. Each maps to a 503: nothing was acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum LandError {
    /// Too many requests in flight.
    #[error("too many requests in flight; retry later")]
    Busy,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Stopped,
    /// The transaction did not commit.
    #[error("{0}")]
    Failed(String),
    /// The broker did not answer in time.
    #[error("Kafka did not acknowledge in time; retry later")]
    Timeout,
}
