//! How a transaction is run: begin, build, commit, and what to do when a call fails.
//!
//! librdkafka sorts every transactional error into three kinds (its `rd_kafka_error_t` flags,
//! which [`classify`] reads): *retriable* — the call's outcome is not known yet (typically a
//! time-out while the broker is away) and the same call must be repeated until it ends, since
//! librdkafka refuses any other transaction call meanwhile; *abortable* — the transaction cannot
//! commit: abort it, then begin the next one; *fatal* — the producer is unusable (fenced by a
//! newer producer with the same transactional id, or an idempotence failure), and only a new
//! producer, whose `init_transactions` resolves the open transaction, writes again.
//!
//! [`run`] applies those rules once for every writer; a [`Policy`] says how long a retriable
//! commit or abort is repeated, what happens when it is still unknown after that, and whether
//! fencing ends the caller. The outcome is typed ([`Outcome`]), so a caller matches on what
//! happened instead of classifying errors again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, KafkaResult};

use crate::kafka::error::{ErrorClass, classify, is_fenced_error};

/// Doubling pauses between tries, capped: the one backoff of the crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Pauses of `first`, then twice as long each time, never longer than `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { next: first, max }
    }

    /// The pause to take now; the following one is twice as long, up to the cap.
    pub fn next_pause(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }
}

impl Default for Backoff {
    /// 200 ms doubling up to 5 s: how the crate waits out a broker or a registry that is away.
    fn default() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(5))
    }
}

/// The transaction calls a policy makes. [`super::TxnProducer`] implements it with librdkafka's
/// blocking calls; unit tests use a fake.
pub trait Transactional {
    /// Begins a transaction.
    ///
    /// # Errors
    /// The Kafka error.
    fn begin_txn(&self) -> KafkaResult<()>;
    /// Commits the open transaction.
    ///
    /// # Errors
    /// The Kafka error.
    fn commit_txn(&self) -> KafkaResult<()>;
    /// Aborts the open transaction.
    ///
    /// # Errors
    /// The Kafka error.
    fn abort_txn(&self) -> KafkaResult<()>;
    /// Waits between two tries of a call.
    fn pause(&self, d: Duration) {
        std::thread::sleep(d);
    }
    /// The clock a policy's time limit is measured on.
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A transaction call whose outcome is not known yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `commit_transaction`.
    Commit,
    /// `abort_transaction`.
    Abort,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Commit => "commit",
            Call::Abort => "abort",
        }
    }
}

/// What a fenced producer means to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFence {
    /// Another owner took over (a stream, a quota partition, a cursor, a replay): report
    /// [`Outcome::Fenced`] and let the caller stop writing.
    End,
    /// The id belongs to this process for good (a stage member, a serve instance): report
    /// [`Outcome::Fatal`], and the caller replaces the producer like any broken one.
    Replace,
}

/// What a commit or abort that is still unknown after the policy's tries turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnknown {
    /// An unknown commit is aborted (an unknown abort leaves the producer to be replaced).
    Abort,
    /// Report the call as pending ([`Outcome::Unresolved`] with `pending`): the caller repeats
    /// it later with [`resume`] before its next transaction.
    Pending,
}

/// Told each time a call is repeated (e.g. to report not ready meanwhile).
pub type RetryHook = Arc<dyn Fn(Call, &KafkaError) + Send + Sync>;

/// How a transaction's commit and abort are tried.
#[derive(Clone)]
pub struct Policy {
    /// Most repetitions of a commit or abort that failed retriably.
    pub retries: u32,
    /// Longest a call is repeated, measured from its first try (`None`: only `retries` limits).
    pub within: Option<Duration>,
    /// Pauses between tries.
    pub backoff: Backoff,
    /// What a call still unknown after that turns into.
    pub when_unknown: WhenUnknown,
    /// What fencing means to the caller.
    pub on_fence: OnFence,
    /// Told each time a call is repeated.
    pub on_retry: Option<RetryHook>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("retries", &self.retries)
            .field("within", &self.within)
            .field("backoff", &self.backoff)
            .field("when_unknown", &self.when_unknown)
            .field("on_fence", &self.on_fence)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// One try of each call; an unknown commit is aborted; fencing ends the caller.
    pub fn once() -> Self {
        Self {
            retries: 0,
            within: None,
            backoff: Backoff::default(),
            when_unknown: WhenUnknown::Abort,
            on_fence: OnFence::End,
            on_retry: None,
        }
    }

    /// Up to `n` repetitions of a retriable commit or abort, 200 ms apart and doubling up to
    /// 1 s; an unknown commit is then aborted.
    pub fn retrying(n: u32) -> Self {
        Self {
            retries: n,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(1)),
            ..Self::once()
        }
    }

    /// Repeats a retriable call every `pause` for up to `limit`.
    #[must_use]
    pub fn repeating_for(mut self, limit: Duration, pause: Duration) -> Self {
        self.retries = u32::MAX;
        self.within = Some(limit);
        self.backoff = Backoff::new(pause, pause);
        self
    }

    /// Sets what fencing means to the caller.
    #[must_use]
    pub fn on_fence(mut self, on_fence: OnFence) -> Self {
        self.on_fence = on_fence;
        self
    }

    /// Sets what a call still unknown after the tries turns into.
    #[must_use]
    pub fn when_unknown(mut self, when_unknown: WhenUnknown) -> Self {
        self.when_unknown = when_unknown;
        self
    }

    /// Sets the hook told each time a call is repeated.
    #[must_use]
    pub fn on_retry(mut self, hook: RetryHook) -> Self {
        self.on_retry = Some(hook);
        self
    }
}

/// How a transaction ended.
#[derive(Debug)]
#[must_use = "a transaction's outcome says whether its records are in Kafka"]
pub enum Outcome<T> {
    /// Committed: the records are visible to read_committed consumers.
    Committed {
        /// What the batch-building closure returned.
        value: T,
        /// How many times a retriable commit was repeated.
        retries: u32,
    },
    /// The build closure withdrew the batch (nothing to commit); the transaction was aborted.
    Withdrawn,
    /// Nothing of the transaction is visible: it was aborted, and the producer can begin the
    /// next one.
    Aborted {
        /// Why (the failed begin, send or commit).
        error: KafkaError,
        /// How many times a retriable commit or abort was repeated first.
        retries: u32,
    },
    /// How the transaction ends is not known yet. With `pending`, that call must be repeated
    /// ([`resume`]) before anything else; without, the producer is stuck (its abort failed) and
    /// must be replaced. Either way a new producer with the same transactional id resolves it.
    Unresolved {
        /// Why the transaction failed.
        error: KafkaError,
        /// The call to repeat, if repeating can still end it.
        pending: Option<Call>,
        /// How many times a retriable commit or abort was repeated.
        retries: u32,
    },
    /// Another producer with the same transactional id took over ([`OnFence::End`]): nothing
    /// of the transaction is visible, and this writer must stop.
    Fenced(KafkaError),
    /// The producer is unusable (or fenced, with [`OnFence::Replace`]): replace it; its
    /// transaction is aborted when the new producer initialises.
    Fatal(KafkaError),
}

impl<T> Outcome<T> {
    /// The error of a transaction that did not commit.
    pub fn error(&self) -> Option<&KafkaError> {
        match self {
            Outcome::Committed { .. } | Outcome::Withdrawn => None,
            Outcome::Aborted { error, .. }
            | Outcome::Unresolved { error, .. }
            | Outcome::Fenced(error)
            | Outcome::Fatal(error) => Some(error),
        }
    }

    /// Whether the producer must be replaced before the next transaction.
    pub fn needs_new_producer(&self) -> bool {
        matches!(
            self,
            Outcome::Fatal(_) | Outcome::Fenced(_) | Outcome::Unresolved { pending: None, .. }
        )
    }

    /// The error of a transaction that did not commit; `None` when it committed or was
    /// withdrawn (both ended well).
    pub fn into_error(self) -> Option<KafkaError> {
        self.error().cloned()
    }

    /// The committed value, or the error of a transaction that did not commit.
    ///
    /// # Errors
    /// The Kafka error; `Canceled` for a withdrawn batch (only [`run_with`] withdraws).
    pub fn into_result(self) -> KafkaResult<T> {
        match self {
            Outcome::Committed { value, .. } => Ok(value),
            other => Err(other.into_error().unwrap_or(KafkaError::Canceled)),
        }
    }
}

/// Runs one transaction: begins it, lets `build` send the batch into it, and commits it, by
/// `policy`. Blocking.
pub fn run<P, T>(p: &P, policy: &Policy, build: impl FnOnce(&P) -> KafkaResult<T>) -> Outcome<T>
where
    P: Transactional + ?Sized,
{
    run_with(p, policy, |p| build(p).map(Some))
}

/// [`run`] whose `build` may withdraw the batch (`Ok(None)`: nothing worth committing); the
/// transaction is then aborted and the outcome is [`Outcome::Withdrawn`]. Blocking.
pub fn run_with<P, T>(
    p: &P,
    policy: &Policy,
    build: impl FnOnce(&P) -> KafkaResult<Option<T>>,
) -> Outcome<T>
where
    P: Transactional + ?Sized,
{
    if let Err(failed) = begin(p, policy) {
        return failed;
    }
    match build(p) {
        Ok(Some(value)) => commit(p, policy, value),
        Ok(None) => withdraw(p, policy),
        Err(e) => fail(p, policy, e),
    }
}

/// Begins a transaction that stays open across calls (the consume-transform-produce loop adds
/// records as they are polled); end it with [`commit`] or [`fail`]. Blocking.
///
/// # Errors
/// How the failed begin ended: whatever the producer had open is aborted by `policy`, as after
/// any failure, so the outcome is never `Committed`.
pub fn begin<P, T>(p: &P, policy: &Policy) -> Result<(), Outcome<T>>
where
    P: Transactional + ?Sized,
{
    p.begin_txn().map_err(|e| fail(p, policy, e))
}

/// Commits the open transaction by `policy`; aborts it when it cannot commit. Blocking.
pub fn commit<P, T>(p: &P, policy: &Policy, value: T) -> Outcome<T>
where
    P: Transactional + ?Sized,
{
    match end(p, policy, Call::Commit) {
        Ok(retries) => Outcome::Committed { value, retries },
        Err(f) if classify(&f.error) == ErrorClass::Fatal => fatal(policy, f.error),
        Err(f) if f.unknown && policy.when_unknown == WhenUnknown::Pending => Outcome::Unresolved {
            error: f.error,
            pending: Some(Call::Commit),
            retries: f.retries,
        },
        Err(f) => abort_after(p, policy, f.error, f.retries),
    }
}

/// The open transaction failed with `error` (a send, the stage's own processing, the begin):
/// aborts it by `policy`, unless the producer is fatally broken. Blocking.
pub fn fail<P, T>(p: &P, policy: &Policy, error: KafkaError) -> Outcome<T>
where
    P: Transactional + ?Sized,
{
    if classify(&error) == ErrorClass::Fatal {
        return fatal(policy, error);
    }
    abort_after(p, policy, error, 0)
}

/// Repeats a call that was left pending ([`Outcome::Unresolved`] with `pending`). A resumed
/// commit that ends well is `Committed`; a resumed abort, `Withdrawn`. Blocking.
pub fn resume<P>(p: &P, policy: &Policy, call: Call) -> Outcome<()>
where
    P: Transactional + ?Sized,
{
    match call {
        Call::Commit => commit(p, policy, ()),
        Call::Abort => withdraw(p, policy),
    }
}

/// A commit or abort that did not end well.
struct Failed {
    error: KafkaError,
    retries: u32,
    /// Still retriable when the tries ran out: its outcome is not known.
    unknown: bool,
}

fn withdraw<P, T>(p: &P, policy: &Policy) -> Outcome<T>
where
    P: Transactional + ?Sized,
{
    match end(p, policy, Call::Abort) {
        Ok(_) => Outcome::Withdrawn,
        Err(f) => abort_failed(policy, f, None, 0),
    }
}

fn abort_after<P, T>(p: &P, policy: &Policy, error: KafkaError, retries: u32) -> Outcome<T>
where
    P: Transactional + ?Sized,
{
    match end(p, policy, Call::Abort) {
        Ok(more) => Outcome::Aborted {
            error,
            retries: retries + more,
        },
        Err(f) => abort_failed(policy, f, Some(error), retries),
    }
}

/// An abort failed: the producer is fatally broken, stuck, or (by policy) its abort pending.
/// The transaction's own error (`cause`) is reported rather than the abort's.
fn abort_failed<T>(
    policy: &Policy,
    f: Failed,
    cause: Option<KafkaError>,
    retries: u32,
) -> Outcome<T> {
    if classify(&f.error) == ErrorClass::Fatal {
        return fatal(policy, f.error);
    }
    let pending = (f.unknown && policy.when_unknown == WhenUnknown::Pending).then_some(Call::Abort);
    tracing::warn!(error = %f.error, pending = pending.is_some(), "the failed transaction could not be aborted");
    Outcome::Unresolved {
        error: cause.unwrap_or(f.error),
        pending,
        retries: retries + f.retries,
    }
}

fn fatal<T>(policy: &Policy, error: KafkaError) -> Outcome<T> {
    if policy.on_fence == OnFence::End && is_fenced_error(&error) {
        Outcome::Fenced(error)
    } else {
        Outcome::Fatal(error)
    }
}

/// Makes `call`, repeating it while it fails retriably within the policy's limits. `Ok`: how
/// many times it was repeated.
fn end<P>(p: &P, policy: &Policy, call: Call) -> Result<u32, Failed>
where
    P: Transactional + ?Sized,
{
    let started = p.now();
    let mut backoff = policy.backoff;
    let mut retries = 0;
    loop {
        let result = match call {
            Call::Commit => p.commit_txn(),
            Call::Abort => p.abort_txn(),
        };
        let error = match result {
            Ok(()) => return Ok(retries),
            Err(e) => e,
        };
        let retriable = classify(&error) == ErrorClass::Retry;
        let in_time = policy
            .within
            .is_none_or(|limit| p.now().duration_since(started) < limit);
        if !(retriable && retries < policy.retries && in_time) {
            return Err(Failed {
                error,
                retries,
                unknown: retriable,
            });
        }
        tracing::warn!(call = call.name(), attempt = retries + 1, error = %error, "transaction call failed retriably (its outcome is not known yet); repeating it");
        if let Some(hook) = &policy.on_retry {
            hook(call, &error);
        }
        p.pause(backoff.next_pause());
        retries += 1;
    }
}

#[cfg(test)]
mod tests;
