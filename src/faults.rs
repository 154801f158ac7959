//! Deliberate defects, to prove that the end-to-end tests' judges catch what they claim to.
//!
//! A judge that has never failed proves nothing: `tests/judges.rs` runs the pipeline with one
//! defect per stage switched on and requires each judge to name exactly the records the defect
//! touched. The defects exist only in debug builds (`cfg(debug_assertions)`, which the tests
//! use); in a release build [`hit`] is the constant `false` and the optimiser removes every
//! call site, so no shipped binary can misbehave on purpose.
//!
//! `INTAKE_FAULTS` switches them on, e.g. `validate_skip=50,dedup_stale=20,serve_early_ack=5`:
//! every n-th occurrence of the named event misbehaves (counted per process, so which records
//! are touched is deterministic for a given input order). Each hit is logged at `warn` with the
//! fault's name and the record's key fields, which is how a test learns what to expect.

/// The defects a test can switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// validate drops a record of a page: nothing reaches the valid topic or the DLQ, and its
    /// landing offset is committed all the same.
    ValidateSkip,
    /// dedup emits a record that lost the merge (stale or identical) to the curated topic.
    DedupStale,
    /// serve answers a webhook as landed without landing it.
    ServeEarlyAck,
    /// validate's or dedup's consumer stops fetching a partition without a word (it pauses
    /// the partition of the record it just read), as librdkafka once did after a rewind: the
    /// loop's stall watch must notice and start over.
    ConsumeStall,
    /// A stage skips its start-up wait for Kafka (`kafka_reachable`), as if the brokers went
    /// away the moment after it passed: every start-up step after it then meets the outage,
    /// which is what the chaos test's restarts into a black hole need to be sure of.
    SkipStartGate,
    /// A transaction's commit waits 300 ms once its records are on the brokers (its
    /// coordinator holds it open), as a broker under load makes it wait: the chaos test kills
    /// a process while `intake_transaction_open` shows its transaction open, and this makes
    /// the kill meet it there rather than a moment after it committed.
    TxnHold,
    /// `intake reprocess` ends (abort) right after committing a batch, as a SIGKILL would:
    /// running it again must resume after that batch.
    ReprocessCrash,
}

impl Fault {
    /// The name used in `INTAKE_FAULTS` and in the log line of a hit.
    pub const fn name(self) -> &'static str {
        match self {
            Fault::ValidateSkip => "validate_skip",
            Fault::DedupStale => "dedup_stale",
            Fault::ServeEarlyAck => "serve_early_ack",
            Fault::ConsumeStall => "consume_stall",
            Fault::SkipStartGate => "skip_start_gate",
            Fault::TxnHold => "txn_hold",
            Fault::ReprocessCrash => "reprocess_crash",
        }
    }

    const ALL: [Fault; 7] = [
        Fault::ValidateSkip,
        Fault::DedupStale,
        Fault::ServeEarlyAck,
        Fault::ConsumeStall,
        Fault::SkipStartGate,
        Fault::TxnHold,
        Fault::ReprocessCrash,
    ];
}

/// The environment variable that switches defects on (debug builds only).
pub const ENV: &str = "INTAKE_FAULTS";

/// Parses `name=n,...` into (fault, every n-th) pairs; unknown names and n = 0 are errors.
pub fn parse(spec: &str) -> Result<Vec<(Fault, u64)>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|part| {
            let (name, n) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: write name=n"))?;
            let fault = Fault::ALL
                .into_iter()
                .find(|f| f.name() == name.trim())
                .ok_or_else(|| format!("`{name}` is not a fault"))?;
            let n: u64 = n
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("`{part}`: n must be a positive integer"))?;
            Ok((fault, n))
        })
        .collect()
}

#[cfg(debug_assertions)]
mod active {
    use super::{ENV, Fault, parse};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Armed {
        every: [u64; Fault::ALL.len()],
        seen: [AtomicU64; Fault::ALL.len()],
    }

    fn armed() -> &'static Option<Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED.get_or_init(|| {
            let spec = std::env::var(ENV).ok()?;
            let faults = match parse(&spec) {
                Ok(f) => f,
                Err(e) => panic!("{ENV}={spec}: {e}"),
            };
            let mut every = [0; Fault::ALL.len()];
            for (f, n) in faults {
                every[f as usize] = n;
            }
            tracing::warn!(faults = %spec, "deliberate faults are ON ({ENV}); this process will lose or corrupt data on purpose");
            Some(Armed {
                every,
                seen: Default::default(),
            })
        })
    }

    pub fn hit(f: Fault) -> bool {
        let Some(a) = armed() else { return false };
        let every = a.every[f as usize];
        every > 0 && (a.seen[f as usize].fetch_add(1, Ordering::Relaxed) + 1) % every == 0
    }
}

/// Whether this occurrence of `f` misbehaves. Always `false` in release builds.
#[cfg(debug_assertions)]
#[inline]
pub fn hit(f: Fault) -> bool {
    active::hit(f)
}

/// Whether this occurrence of `f` misbehaves. Always `false` in release builds.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub const fn hit(_: Fault) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse_what_they_should() {
        assert_eq!(
            parse("validate_skip=50, dedup_stale=20,serve_early_ack=5").unwrap(),
            vec![
                (Fault::ValidateSkip, 50),
                (Fault::DedupStale, 20),
                (Fault::ServeEarlyAck, 5)
            ]
        );
        assert!(parse("validate_skip=0").is_err());
        assert!(parse("validate_skip").is_err());
        assert!(parse("nothing=3").is_err());
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn nothing_misbehaves_unless_switched_on() {
        // The test process does not set INTAKE_FAULTS.
        assert!(std::env::var(ENV).is_err());
        assert!((0..10_000).all(|_| !hit(Fault::ValidateSkip)));
    }
}
