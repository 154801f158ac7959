//! The pipeline's stages by name: one spelling for metric labels (`stage="…"`), consumer
//! groups (`<group_prefix>-<stage>`), transactional ids, `dlq.stage` and log fields.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Pulls HTTP sources and lands raw pages with their cursor.
    Fetch,
    /// Splits landed records, validates them against the registry, routes drift to the DLQ.
    Validate,
    /// Keeps the latest version per primary key in the curated topics.
    Dedup,
    /// Lands webhooks and batch jobs received over HTTP.
    Serve,
}

impl Stage {
    /// Every stage, in the order records pass them (serve lands beside fetch).
    pub const ALL: [Stage; 4] = [Stage::Fetch, Stage::Validate, Stage::Dedup, Stage::Serve];

    /// The stage's name, as every label, group and id spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Fetch => "fetch",
            Stage::Validate => "validate",
            Stage::Dedup => "dedup",
            Stage::Serve => "serve",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a stage's processor failed a record. Bad data is never an error: it goes to the DLQ
/// with its reason and the record counts as processed. Either error aborts the open
/// transaction and rewinds its partitions to the last commit, so the batch is retried whole.
#[derive(Debug)]
pub enum StageError {
    /// A dependency the stage cannot work without is unavailable (the schema registry, the
    /// blob store, broker metadata, a state restore that gave up): the loop aborts, waits
    /// `retry_in` (the processor's backoff hint), and retries the batch.
    Unavailable {
        /// What is unavailable and why, for the log.
        what: String,
        /// How long to wait before the retry.
        retry_in: std::time::Duration,
    },
    /// A Kafka error (from the transaction's sink): the loop classifies it (retriable,
    /// fenced, fatal) as for its own calls.
    Kafka(rdkafka::error::KafkaError),
}

impl From<rdkafka::error::KafkaError> for StageError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        Self::Kafka(e)
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable { what, retry_in } => {
                write!(
                    f,
                    "unavailable: {what} (retry in {} ms)",
                    retry_in.as_millis()
                )
            }
            Self::Kafka(e) => write!(f, "kafka: {e}"),
        }
    }
}

impl std::error::Error for StageError {}

/// A stage whose loop blocks (validate's and dedup's exactly-once loops) could not run on its
/// thread.
#[derive(Debug, thiserror::Error)]
pub enum ThreadError {
    /// The thread could not be started.
    #[error("starting the {0} thread: {1}")]
    Start(Stage, std::io::Error),
    /// The thread panicked (its panic message is in the log).
    #[error("the {0} thread panicked")]
    Panicked(Stage),
}

/// Runs a blocking stage: `body` on a thread named after `stage`, until it returns. When
/// `shutdown` resolves first, the stop flag `body` was given is set and `body` is waited for
/// (its loop commits the open transaction and leaves the group). The one way validate and
/// dedup start, stop and report their thread, alone (`intake validate`, `intake dedup`) or
/// together (`intake run`).
///
/// # Errors
/// `body`'s error, or a [`ThreadError`] (converted into `E`).
pub async fn on_thread<E>(
    stage: Stage,
    shutdown: impl Future<Output = ()>,
    body: impl FnOnce(Arc<AtomicBool>) -> Result<(), E> + Send + 'static,
) -> Result<(), E>
where
    E: From<ThreadError> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("intake-{stage}"))
            .spawn(move || {
                let _ = tx.send(body(stop));
            })
            .map_err(|e| ThreadError::Start(stage, e))?
    };
    tokio::pin!(shutdown);
    let result = tokio::select! {
        r = &mut rx => r,
        () = &mut shutdown => {
            stop.store(true, Ordering::Relaxed);
            rx.await
        }
    };
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    // The sender is dropped without a result only when `body` panicked.
    result.unwrap_or_else(|_| Err(ThreadError::Panicked(stage).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_lower_case_words() {
        let names: std::collections::BTreeSet<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Stage::ALL.len());
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_lowercase()))
        );
        assert_eq!(Stage::Dedup.to_string(), "dedup");
    }

    #[tokio::test]
    async fn a_thread_runs_until_shutdown_and_a_panic_is_named() {
        use std::sync::atomic::AtomicU32;
        // Shutdown sets the flag the body watches; the body's own result comes back.
        let turns = Arc::new(AtomicU32::new(0));
        let t = turns.clone();
        let r: Result<(), ThreadError> = on_thread(
            Stage::Dedup,
            tokio::time::sleep(std::time::Duration::from_millis(50)),
            move |stop| {
                while !stop.load(Ordering::Relaxed) {
                    t.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                assert_eq!(
                    std::thread::current().name(),
                    Some("intake-dedup"),
                    "named after its stage"
                );
                Ok(())
            },
        )
        .await;
        r.unwrap();
        assert!(turns.load(Ordering::Relaxed) > 0);
        // A body that ends by itself ends the call without a shutdown.
        let r: Result<(), ThreadError> =
            on_thread(Stage::Validate, std::future::pending(), |_| Ok(())).await;
        r.unwrap();
        // A panic is an error naming the stage.
        let r: Result<(), ThreadError> =
            on_thread(Stage::Validate, std::future::pending(), |_| panic!("boom")).await;
        assert_eq!(r.unwrap_err().to_string(), "the validate thread panicked");
    }
}
