//! Retrying a Kafka call that fails for a while: a broker restarting, a coordinator or leader
//! moving. One rule for every caller outside the transaction API (`kafka::txn` has its own
//! policies): a retriable error is retried for as long as it lasts, an error that would abort
//! a transaction up to ten times, and anything else (fatal: fenced; a refusal) is returned at
//! once. A topic the brokers answer does not exist (after the reader's own wait for a topic
//! just created) is a refusal: waiting longer would not create it.
//!
//! This is how a process started while the brokers are away (a network fault, a cluster
//! restarting) waits for them instead of ending: every Kafka call it needs to start goes
//! through here.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::error::{KafkaError, KafkaResult};

use super::txn::Backoff;
use super::{ErrorClass, classify};

/// How many attempts an error of class [`ErrorClass::Abort`] gets.
const ABORT_ATTEMPTS: u32 = 10;

/// Whether the `attempt`-th failure with `e` is retried.
fn retried(e: &KafkaError, attempt: u32) -> bool {
    if matches!(
        e,
        KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)
    ) {
        return false;
    }
    match classify(e) {
        ErrorClass::Retry => true,
        ErrorClass::Abort => attempt < ABORT_ATTEMPTS,
        _ => false,
    }
}

/// Calls `f` until it succeeds or fails with an error that is not retried (see the module
/// docs), pausing between attempts (doubling, capped) and logging each failure with `what`.
///
/// # Errors
/// The first error that is not retried.
pub async fn retrying<F, Fut, T>(what: &str, mut f: F) -> KafkaResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = KafkaResult<T>>,
{
    let mut backoff = Backoff::default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if retried(&e, attempt) => {
                tracing::warn!(what, attempt, error = %e, "kafka call failed; retrying");
                tokio::time::sleep(backoff.next_pause()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// [`retrying`] of a blocking Kafka call, each attempt on the blocking pool.
///
/// # Errors
/// As [`retrying`].
pub async fn retrying_blocking<F, T>(what: &str, f: F) -> KafkaResult<T>
where
    F: Fn() -> KafkaResult<T> + Clone + Send + 'static,
    T: Send + 'static,
{
    retrying(what, || {
        let f = f.clone();
        async move {
            tokio::task::spawn_blocking(f)
                .await
                .unwrap_or(Err(KafkaError::Canceled))
        }
    })
    .await
}

/// [`retrying`] on the calling thread (a stage's own thread), pausing with
/// [`std::thread::sleep`]; gives up with the last error once `stop` is set.
///
/// # Errors
/// As [`retrying`], or the last error when `stop` is set.
pub fn retrying_here<T>(
    what: &str,
    stop: &AtomicBool,
    mut f: impl FnMut() -> KafkaResult<T>,
) -> KafkaResult<T> {
    let mut backoff = Backoff::default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if retried(&e, attempt) && !stop.load(Ordering::Relaxed) => {
                tracing::warn!(what, attempt, error = %e, "kafka call failed; retrying");
                std::thread::sleep(backoff.next_pause());
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode as Code;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn retriable_errors_last_aborting_ones_get_ten_tries_fatal_ones_none() {
        let timed_out = KafkaError::AdminOp(Code::RequestTimedOut);
        let refused = KafkaError::AdminOp(Code::InvalidConfig);
        let fenced = KafkaError::AdminOp(Code::ProducerFenced);
        assert!(retried(&timed_out, 1) && retried(&timed_out, 1_000));
        assert!(retried(&refused, 9) && !retried(&refused, 10));
        assert!(!retried(&fenced, 1), "fenced is never retried");
        let missing = KafkaError::MetadataFetch(Code::UnknownTopicOrPartition);
        assert!(
            !retried(&missing, 1),
            "a topic that does not exist is not waited for"
        );
        let unreachable = KafkaError::MetadataFetch(Code::OperationTimedOut);
        assert!(retried(&unreachable, 1_000), "brokers away are waited for");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_repeated_until_it_succeeds_or_is_fenced() {
        let calls = AtomicU32::new(0);
        let r = retrying("t", || {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                if n < 3 {
                    Err(KafkaError::AdminOp(Code::RequestTimedOut))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        let calls = AtomicU32::new(0);
        let r: KafkaResult<()> = retrying("t", || {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(KafkaError::AdminOp(Code::ProducerFenced)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn on_a_thread_a_call_is_repeated_until_it_succeeds_or_stop_is_set() {
        let stop = AtomicBool::new(false);
        let mut calls = 0;
        let r = retrying_here("t", &stop, || {
            calls += 1;
            if calls < 3 {
                Err(KafkaError::MetadataFetch(Code::AllBrokersDown))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.unwrap(), 3);
        stop.store(true, Ordering::Relaxed);
        let mut calls = 0;
        let r: KafkaResult<()> = retrying_here("t", &stop, || {
            calls += 1;
            Err(KafkaError::MetadataFetch(Code::AllBrokersDown))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1, "a stopping stage does not wait");
    }
}
