//! Lands HTTP-submitted records in Kafka, many requests per transaction.
//!
//! Handlers send a [`Landing`] over a bounded queue and wait for its [`Ack`]; one task drains
//! the queue into a transaction (up to `MAX_BATCH` requests or `LINGER`), commits, and answers
//! every request of the batch. A request is acknowledged only after its transaction committed,
//! so a 2xx means the data is in Kafka; when the transaction fails, every request of the batch
//! gets an error (503) and nothing of it is visible to read_committed consumers. The bounded
//! queue turns a slow or absent broker into back-pressure and 503s instead of memory growth.

use std::time::Duration;

use bytes::Bytes;
use rdkafka::message::OwnedHeaders;
use tokio::sync::{mpsc, oneshot};

use rdkafka::error::{KafkaError, KafkaResult};

use crate::kafka::{ErrorClass, Kafka, Outgoing, TxnProducer, classify};
use crate::telemetry::metric;

/// Most requests per transaction.
const MAX_BATCH: usize = 256;
/// Longest a batch waits for more requests.
const LINGER: Duration = Duration::from_millis(5);
/// Queue length before handlers get 503.
pub const QUEUE: usize = 1024;

/// One record to land.
pub struct Record {
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
    pub records: Vec<Record>,
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
    let ready_tx: Ready = std::sync::Arc::new(ready_tx);
    let task = tokio::spawn(async move {
        let mut producer = producer;
        let mut wait = Duration::from_millis(200);
        while let Err(e) = producer.blocking(|p| p.init()).await {
            tracing::warn!(error = %e, "serve: cannot initialise transactions yet; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        let _ = ready_tx.send(true);
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
            let (records, acks): (Vec<Vec<Record>>, Vec<oneshot::Sender<Ack>>) =
                batch.into_iter().map(|l| (l.records, l.ack)).unzip();
            // Requests still queued behind this batch: the stage's lag.
            metrics::gauge!(metric::LAG, "stage" => "serve").set(rx.len() as f64);
            let (n_in, n_out) = (
                records.len() as u64,
                records.iter().map(|r| r.len() as u64).sum::<u64>(),
            );
            let started = std::time::Instant::now();
            let not_ready = ready_tx.clone();
            let result = producer
                .blocking(move |p| Ok(land_batch(p, &records, &not_ready)))
                .await
                .unwrap_or_else(|e| Err((e, true)));
            metrics::histogram!(metric::COMMIT_SECONDS, "stage" => "serve")
                .record(started.elapsed().as_secs_f64());
            if result.is_ok() {
                metrics::counter!(metric::RECORDS_IN, "stage" => "serve").increment(n_in);
                metrics::counter!(metric::RECORDS_OUT, "stage" => "serve").increment(n_out);
            }
            let outcome: Ack = match &result {
                Ok(()) => Ok(()),
                Err((e, _)) => Err(format!("the landing transaction failed: {e}")),
            };
            match result {
                Ok(()) => {
                    let _ = ready_tx.send(true);
                }
                Err((e, replace)) => {
                    tracing::error!(error = %e, requests = acks.len(), replace, "landing transaction failed; the requests were answered 503 (not acknowledged)");
                    metrics::counter!(metric::ERRORS, "stage" => "serve", "class" => format!("{:?}", classify(&e))).increment(1);
                    let _ = ready_tx.send(false);
                    if replace {
                        // Fenced, broken, or a transaction whose outcome could not be learned:
                        // a fresh producer under the same id resolves it (its init aborts the
                        // open transaction, or completes one the coordinator already decided
                        // to commit) and starts clean.
                        match kafka.txn_producer(&txn_id) {
                            Ok(p) => {
                                let mut wait = Duration::from_millis(200);
                                while let Err(e) = p.blocking(|p| p.init()).await {
                                    tracing::warn!(error = %e, "serve: re-initialising transactions; retrying");
                                    tokio::time::sleep(wait).await;
                                    wait = (wait * 2).min(Duration::from_secs(5));
                                }
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

/// One transaction with every record of a batch. Blocking.
///
/// # Errors
/// The error, and whether the producer must be replaced (fatal, or left in a state it cannot
/// leave by itself). A commit that times out is not abandoned: librdkafka requires it to be
/// repeated until it succeeds or fails for good (an abort meanwhile is refused, and the
/// producer would refuse every later transaction).
fn land_batch(
    p: &TxnProducer,
    records: &[Vec<Record>],
    ready: &Ready,
) -> Result<(), (KafkaError, bool)> {
    p.begin().map_err(|e| (e, true))?;
    let sent = records.iter().flatten().try_for_each(|r| {
        p.send(Outgoing {
            topic: &r.topic,
            key: Some(&r.key),
            payload: r.value.as_deref(),
            headers: r.headers.clone(),
            partition: None,
        })
    });
    let e = match sent.and_then(|()| resolve("commit", ready, || p.commit())) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if classify(&e) == ErrorClass::Fatal {
        return Err((e, true));
    }
    match resolve("abort", ready, || p.abort()) {
        Ok(()) => Err((e, false)),
        Err(abort) => {
            tracing::warn!(error = %abort, "serve: the failed transaction could not be aborted");
            Err((e, true))
        }
    }
}

/// The readiness flag `/readyz` reports.
type Ready = std::sync::Arc<tokio::sync::watch::Sender<bool>>;

/// Repeats a transaction call while it fails retriably, up to [`RESOLVE_LIMIT`], reporting
/// not ready meanwhile. Blocking.
fn resolve(what: &str, ready: &Ready, call: impl Fn() -> KafkaResult<()>) -> KafkaResult<()> {
    let started = std::time::Instant::now();
    loop {
        match call() {
            Err(e) if classify(&e) == ErrorClass::Retry && started.elapsed() < RESOLVE_LIMIT => {
                let _ = ready.send(false);
                tracing::warn!(error = %e, what, "serve: transaction outcome not known yet (Kafka away?); repeating the call");
                std::thread::sleep(Duration::from_millis(500));
            }
            r => return r,
        }
    }
}

/// Lands records and waits for the commit.
///
/// # Errors
/// The queue is full (`busy`), the lander stopped, or the transaction failed.
pub async fn land(
    queue: &mpsc::Sender<Landing>,
    records: Vec<Record>,
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
