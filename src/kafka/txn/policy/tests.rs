//! The policy against a scripted fake producer: which calls it makes, in what order, how long
//! it pauses, and what it reports.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};

use rdkafka::error::RDKafkaErrorCode;

use super::*;

/// A producer whose calls answer from a script (then succeed), logging each call and pause.
struct Fake {
    begin: RefCell<VecDeque<KafkaError>>,
    commit: RefCell<VecDeque<KafkaError>>,
    abort: RefCell<VecDeque<KafkaError>>,
    log: RefCell<Vec<String>>,
    base: Instant,
    elapsed: Cell<Duration>,
}

impl Fake {
    fn new() -> Self {
        Self {
            begin: RefCell::default(),
            commit: RefCell::default(),
            abort: RefCell::default(),
            log: RefCell::default(),
            base: Instant::now(),
            elapsed: Cell::new(Duration::ZERO),
        }
    }
    fn failing(self, call: &str, errors: impl IntoIterator<Item = KafkaError>) -> Self {
        let queue = match call {
            "begin" => &self.begin,
            "commit" => &self.commit,
            _ => &self.abort,
        };
        queue.borrow_mut().extend(errors);
        self
    }
    fn answer(&self, call: &str, queue: &RefCell<VecDeque<KafkaError>>) -> KafkaResult<()> {
        self.log.borrow_mut().push(call.to_owned());
        queue.borrow_mut().pop_front().map_or(Ok(()), Err)
    }
    fn calls(&self) -> Vec<String> {
        self.log
            .borrow()
            .iter()
            .filter(|c| !c.starts_with("pause"))
            .cloned()
            .collect()
    }
    fn pauses(&self) -> Vec<String> {
        self.log
            .borrow()
            .iter()
            .filter(|c| c.starts_with("pause"))
            .cloned()
            .collect()
    }
}

impl Transactional for Fake {
    fn begin_txn(&self) -> KafkaResult<()> {
        self.answer("begin", &self.begin)
    }
    fn commit_txn(&self) -> KafkaResult<()> {
        self.answer("commit", &self.commit)
    }
    fn abort_txn(&self) -> KafkaResult<()> {
        self.answer("abort", &self.abort)
    }
    fn pause(&self, d: Duration) {
        self.log
            .borrow_mut()
            .push(format!("pause {}ms", d.as_millis()));
        self.elapsed.set(self.elapsed.get() + d);
    }
    fn now(&self) -> Instant {
        self.base + self.elapsed.get()
    }
}

fn timed_out() -> KafkaError {
    KafkaError::Global(RDKafkaErrorCode::OperationTimedOut)
}
fn abortable() -> KafkaError {
    KafkaError::Global(RDKafkaErrorCode::InvalidTransactionalState)
}
fn fenced() -> KafkaError {
    KafkaError::Global(RDKafkaErrorCode::ProducerFenced)
}
fn broken() -> KafkaError {
    KafkaError::Global(RDKafkaErrorCode::Fatal)
}

/// Runs a transaction whose build sends one record (logged as "send").
fn send_one(p: &Fake, policy: &Policy) -> Outcome<&'static str> {
    run(p, policy, |p| {
        p.log.borrow_mut().push("send".into());
        Ok("sent")
    })
}

#[test]
fn a_transaction_that_commits_makes_three_calls() {
    let p = Fake::new();
    let o = send_one(&p, &Policy::once());
    assert!(
        matches!(
            o,
            Outcome::Committed {
                value: "sent",
                retries: 0
            }
        ),
        "{o:?}"
    );
    assert_eq!(p.calls(), ["begin", "send", "commit"]);
}

#[test]
fn a_retriable_commit_is_repeated_with_doubling_pauses() {
    let p = Fake::new().failing("commit", [timed_out(), timed_out(), timed_out()]);
    let o = send_one(&p, &Policy::retrying(5));
    assert!(matches!(o, Outcome::Committed { retries: 3, .. }), "{o:?}");
    assert_eq!(
        p.calls(),
        ["begin", "send", "commit", "commit", "commit", "commit"]
    );
    assert_eq!(p.pauses(), ["pause 200ms", "pause 400ms", "pause 800ms"]);
}

#[test]
fn a_commit_still_unknown_after_the_retries_is_aborted() {
    let p = Fake::new().failing("commit", std::iter::repeat_with(timed_out).take(6));
    let o = send_one(&p, &Policy::retrying(5));
    assert!(matches!(o, Outcome::Aborted { retries: 5, .. }), "{o:?}");
    assert_eq!(
        o.error().and_then(KafkaError::rdkafka_error_code),
        Some(RDKafkaErrorCode::OperationTimedOut)
    );
    assert_eq!(p.calls().iter().filter(|c| *c == "commit").count(), 6);
    assert_eq!(p.calls().last().map(String::as_str), Some("abort"));
    // Capped at the policy's longest pause.
    assert_eq!(
        p.pauses(),
        [
            "pause 200ms",
            "pause 400ms",
            "pause 800ms",
            "pause 1000ms",
            "pause 1000ms"
        ]
    );
    assert!(!o.needs_new_producer());
}

#[test]
fn an_abortable_commit_is_aborted_at_once() {
    let p = Fake::new().failing("commit", [abortable()]);
    let o = send_one(&p, &Policy::retrying(5));
    assert!(matches!(o, Outcome::Aborted { retries: 0, .. }), "{o:?}");
    assert_eq!(p.calls(), ["begin", "send", "commit", "abort"]);
    assert!(p.pauses().is_empty());
}

#[test]
fn fencing_ends_the_caller_or_replaces_the_producer_by_policy() {
    let p = Fake::new().failing("commit", [fenced()]);
    let o = send_one(&p, &Policy::retrying(5));
    assert!(matches!(o, Outcome::Fenced(_)), "{o:?}");
    assert!(o.needs_new_producer());
    // A fenced producer is never asked to abort: every call would fail again.
    assert_eq!(p.calls(), ["begin", "send", "commit"]);

    let p = Fake::new().failing("commit", [fenced()]);
    let o = send_one(&p, &Policy::retrying(5).on_fence(OnFence::Replace));
    assert!(matches!(o, Outcome::Fatal(_)), "{o:?}");
    assert!(o.needs_new_producer());
}

#[test]
fn a_fatal_error_that_is_not_fencing_is_fatal_whatever_the_policy() {
    let p = Fake::new().failing("commit", [broken()]);
    let o = send_one(&p, &Policy::once());
    assert!(matches!(o, Outcome::Fatal(_)), "{o:?}");
    assert_eq!(p.calls(), ["begin", "send", "commit"]);
}

#[test]
fn a_failed_build_is_aborted_and_never_committed() {
    let p = Fake::new();
    let o: Outcome<()> = run(&p, &Policy::retrying(5), |_| Err(abortable()));
    assert!(matches!(o, Outcome::Aborted { retries: 0, .. }), "{o:?}");
    assert_eq!(p.calls(), ["begin", "abort"]);

    let p = Fake::new();
    let o: Outcome<()> = run(&p, &Policy::retrying(5), |_| Err(fenced()));
    assert!(matches!(o, Outcome::Fenced(_)), "{o:?}");
    assert_eq!(p.calls(), ["begin"]);
}

#[test]
fn a_failed_begin_aborts_and_never_builds() {
    let p = Fake::new().failing("begin", [abortable()]);
    let o = send_one(&p, &Policy::once());
    assert!(matches!(o, Outcome::Aborted { .. }), "{o:?}");
    assert_eq!(p.calls(), ["begin", "abort"]);
}

#[test]
fn a_failed_abort_leaves_a_producer_to_replace_and_reports_the_cause() {
    let p = Fake::new().failing("commit", [abortable()]).failing(
        "abort",
        [KafkaError::Global(
            RDKafkaErrorCode::InvalidTransactionalState,
        )],
    );
    let o = send_one(&p, &Policy::once());
    assert!(
        matches!(o, Outcome::Unresolved { pending: None, .. }),
        "{o:?}"
    );
    assert!(o.needs_new_producer());
    assert_eq!(p.calls(), ["begin", "send", "commit", "abort"]);
}

#[test]
fn an_abort_that_reports_fencing_is_fencing() {
    let p = Fake::new()
        .failing("commit", [abortable()])
        .failing("abort", [fenced()]);
    let o = send_one(&p, &Policy::once());
    assert!(matches!(o, Outcome::Fenced(_)), "{o:?}");
}

#[test]
fn an_unknown_call_can_be_left_pending_and_resumed() {
    let policy = Policy::once().when_unknown(WhenUnknown::Pending);
    let p = Fake::new().failing("commit", [timed_out(), timed_out()]);
    let o = send_one(&p, &policy);
    assert!(
        matches!(
            o,
            Outcome::Unresolved {
                pending: Some(Call::Commit),
                ..
            }
        ),
        "{o:?}"
    );
    assert!(!o.needs_new_producer());
    assert_eq!(p.calls(), ["begin", "send", "commit"]);
    // Still unknown: still pending.
    let again = resume(&p, &policy, Call::Commit);
    assert!(
        matches!(
            again,
            Outcome::Unresolved {
                pending: Some(Call::Commit),
                ..
            }
        ),
        "{again:?}"
    );
    let done = resume(&p, &policy, Call::Commit);
    assert!(matches!(done, Outcome::Committed { .. }), "{done:?}");

    // A send fails and its abort times out: the abort is pending.
    let p = Fake::new().failing("abort", [timed_out()]);
    let o: Outcome<()> = run(&p, &policy, |_| Err(abortable()));
    assert!(
        matches!(
            o,
            Outcome::Unresolved {
                pending: Some(Call::Abort),
                ..
            }
        ),
        "{o:?}"
    );
    assert_eq!(
        o.error().and_then(KafkaError::rdkafka_error_code),
        Some(RDKafkaErrorCode::InvalidTransactionalState),
        "the transaction's own error is reported, not the abort's"
    );
    let done = resume(&p, &policy, Call::Abort);
    assert!(matches!(done, Outcome::Withdrawn), "{done:?}");
    assert_eq!(p.calls(), ["begin", "abort", "abort"]);
}

#[test]
fn a_time_limited_policy_repeats_until_its_limit_and_tells_the_hook() {
    let told = Arc::new(AtomicU32::new(0));
    let hook_count = told.clone();
    let policy = Policy::once()
        .repeating_for(Duration::from_secs(60), Duration::from_millis(500))
        .on_retry(Arc::new(move |call, _| {
            assert_eq!(call, Call::Commit);
            hook_count.fetch_add(1, Ordering::Relaxed);
        }));
    let p = Fake::new().failing("commit", std::iter::repeat_with(timed_out).take(1000));
    let o = send_one(&p, &policy);
    // 500 ms apart for 60 s: 120 repetitions, then the unknown commit is aborted.
    assert!(matches!(o, Outcome::Aborted { retries: 120, .. }), "{o:?}");
    assert_eq!(told.load(Ordering::Relaxed), 120);
    assert!(p.pauses().iter().all(|x| x == "pause 500ms"));
    assert_eq!(p.calls().last().map(String::as_str), Some("abort"));
}

#[test]
fn a_withdrawn_batch_is_aborted_not_committed() {
    let p = Fake::new();
    let o: Outcome<()> = run_with(&p, &Policy::once(), |_| Ok(None));
    assert!(matches!(o, Outcome::Withdrawn), "{o:?}");
    assert_eq!(p.calls(), ["begin", "abort"]);
    assert!(matches!(o.into_result(), Err(KafkaError::Canceled)));
}

#[test]
fn an_outcome_becomes_a_result() {
    let p = Fake::new();
    assert_eq!(
        send_one(&p, &Policy::once()).into_result().ok(),
        Some("sent")
    );
    let p = Fake::new().failing("commit", [abortable()]);
    let e = send_one(&p, &Policy::once()).into_result().unwrap_err();
    assert_eq!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::InvalidTransactionalState)
    );
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let mut b = Backoff::default();
    let pauses: Vec<u128> = (0..7).map(|_| b.next_pause().as_millis()).collect();
    assert_eq!(pauses, [200, 400, 800, 1600, 3200, 5000, 5000]);
    let mut constant = Backoff::new(Duration::from_millis(500), Duration::from_millis(500));
    assert_eq!(constant.next_pause(), constant.next_pause());
}
