//! Per-token quota: a fixed window or a token bucket, and the exact counters quota tests judge
//! intake by.
//!
//! Every request that reaches the check is counted, accepted or not, in the same critical
//! section as the decision, so the counters never disagree with what was answered. Time is
//! passed in (time since the unix epoch), so the arithmetic is tested without sleeping; all of
//! it is integer, so there is no rounding drift.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::args::{QuotaMode, TokenSpec};

const NS_PER_SEC: u128 = 1_000_000_000;

/// The answer to one request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed (else 429).
    pub accepted: bool,
    /// `X-RateLimit-Limit`: requests per window (the burst in bucket mode).
    pub limit: u32,
    /// `X-RateLimit-Remaining`: requests left now, after this one.
    pub remaining: u32,
    /// `X-RateLimit-Reset`: whole seconds until the quota is whole again (window: the window
    /// ends; bucket: the bucket is full), rounded up.
    pub reset_secs: u64,
    /// `Retry-After` of a 429: whole seconds until one request will be accepted, at least 1.
    pub retry_after_secs: u64,
}

/// Requests of one unix second.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SecondCount {
    /// Requests that reached the quota check.
    pub total: u64,
    /// Of which accepted.
    pub accepted: u64,
}

/// Counters of one token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TokenStats {
    /// The current limit.
    pub limit: u32,
    /// Requests that reached the quota check.
    pub requests: u64,
    /// Of which accepted.
    pub accepted: u64,
    /// Of which answered 429.
    pub throttled: u64,
    /// Unix second → counts, for the last `--stats-retention`.
    pub per_second: BTreeMap<u64, SecondCount>,
}

/// Quota state of one token.
#[derive(Debug)]
struct TokenState {
    limit: u32,
    /// Window mode: the index of the current window and requests accepted in it.
    window_index: u128,
    used: u32,
    /// Bucket mode: the fill level in units of which one request costs `window_ns` (so the
    /// bucket refills `limit` units per ns, exactly), and when it was last refilled.
    level: u128,
    refilled_ns: u128,
    stats: TokenStats,
}

/// The quota of every token.
#[derive(Debug)]
pub struct Quotas {
    mode: QuotaMode,
    window_ns: u128,
    retention_secs: u64,
    tokens: BTreeMap<String, TokenState>,
}

fn ceil_secs(ns: u128) -> u64 {
    u64::try_from(ns.div_ceil(NS_PER_SEC)).unwrap_or(u64::MAX)
}

impl Quotas {
    /// Quotas for `tokens`, all starting whole at `now`.
    pub fn new(
        mode: QuotaMode,
        window: Duration,
        retention: Duration,
        tokens: &[TokenSpec],
        now: Duration,
    ) -> Self {
        let mut quotas = Self {
            mode,
            window_ns: window.as_nanos().max(1),
            retention_secs: retention.as_secs(),
            tokens: BTreeMap::new(),
        };
        for spec in tokens {
            quotas.set_limit(&spec.token, spec.limit, now);
        }
        quotas
    }

    /// Sets (or creates) a token's limit at `now`. In window mode requests already accepted
    /// in the current window still count; in bucket mode a raise adds the difference to the
    /// bucket and a cut caps it at the new size.
    pub fn set_limit(&mut self, token: &str, limit: u32, now: Duration) {
        let now_ns = now.as_nanos();
        let window_ns = self.window_ns;
        let mode = self.mode;
        let state = self
            .tokens
            .entry(token.to_owned())
            .or_insert_with(|| TokenState {
                limit,
                window_index: now_ns / window_ns,
                used: 0,
                level: u128::from(limit) * window_ns,
                refilled_ns: now_ns,
                stats: TokenStats::default(),
            });
        if mode == QuotaMode::Bucket {
            refill(state, window_ns, now_ns);
            if limit > state.limit {
                state.level += u128::from(limit - state.limit) * window_ns;
            }
            state.level = state.level.min(u128::from(limit) * window_ns);
        }
        state.limit = limit;
        state.stats.limit = limit;
    }

    /// Decides one request of `token` at `now` and counts it. `None` for an unknown token
    /// (not counted here).
    pub fn check(&mut self, token: &str, now: Duration) -> Option<Decision> {
        let now_ns = now.as_nanos();
        let window_ns = self.window_ns;
        let state = self.tokens.get_mut(token)?;
        let limit = state.limit;
        let decision = match self.mode {
            QuotaMode::Window => {
                let index = now_ns / window_ns;
                if index != state.window_index {
                    state.window_index = index;
                    state.used = 0;
                }
                let accepted = state.used < limit;
                if accepted {
                    state.used += 1;
                }
                let reset_secs = ceil_secs((index + 1) * window_ns - now_ns);
                Decision {
                    accepted,
                    limit,
                    remaining: limit.saturating_sub(state.used),
                    reset_secs,
                    retry_after_secs: reset_secs.max(1),
                }
            }
            QuotaMode::Bucket => {
                refill(state, window_ns, now_ns);
                let accepted = state.level >= window_ns;
                if accepted {
                    state.level -= window_ns;
                }
                let rate = u128::from(limit);
                let (reset_secs, retry_after_secs) = if rate == 0 {
                    let window = ceil_secs(window_ns);
                    (window, window.max(1))
                } else {
                    let full = rate * window_ns;
                    (
                        ceil_secs((full - state.level).div_ceil(rate)),
                        ceil_secs(window_ns.saturating_sub(state.level).div_ceil(rate)).max(1),
                    )
                };
                Decision {
                    accepted,
                    limit,
                    remaining: u32::try_from(state.level / window_ns).unwrap_or(u32::MAX),
                    reset_secs,
                    retry_after_secs,
                }
            }
        };
        let stats = &mut state.stats;
        let second = now.as_secs();
        stats.requests += 1;
        let count = stats.per_second.entry(second).or_default();
        count.total += 1;
        if decision.accepted {
            stats.accepted += 1;
            count.accepted += 1;
        } else {
            stats.throttled += 1;
        }
        let horizon = second.saturating_sub(self.retention_secs);
        while let Some((&oldest, _)) = stats.per_second.first_key_value() {
            if oldest >= horizon {
                break;
            }
            stats.per_second.pop_first();
        }
        Some(decision)
    }

    /// A copy of every token's counters.
    pub fn stats(&self) -> BTreeMap<String, TokenStats> {
        self.tokens
            .iter()
            .map(|(token, state)| (token.clone(), state.stats.clone()))
            .collect()
    }

    /// Whether `token` is known.
    pub fn knows(&self, token: &str) -> bool {
        self.tokens.contains_key(token)
    }
}

fn refill(state: &mut TokenState, window_ns: u128, now_ns: u128) {
    let elapsed = now_ns.saturating_sub(state.refilled_ns);
    let full = u128::from(state.limit) * window_ns;
    state.level = (state.level + elapsed * u128::from(state.limit)).min(full);
    state.refilled_ns = state.refilled_ns.max(now_ns);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(mode: QuotaMode, limit: u32, window: Duration) -> Quotas {
        let spec = TokenSpec {
            token: "t".into(),
            limit,
        };
        Quotas::new(
            mode,
            window,
            Duration::from_secs(3600),
            &[spec],
            Duration::ZERO,
        )
    }

    fn at(ms: u64) -> Duration {
        Duration::from_millis(1_700_000_000_000 + ms)
    }

    #[test]
    fn window_admits_limit_per_window_and_resets_on_the_boundary() {
        let mut q = quotas(QuotaMode::Window, 3, Duration::from_secs(1));
        let answers: Vec<Decision> = (0..5).map(|i| q.check("t", at(100 + i)).unwrap()).collect();
        assert_eq!(
            answers
                .iter()
                .map(|d| (d.accepted, d.remaining))
                .collect::<Vec<_>>(),
            vec![(true, 2), (true, 1), (true, 0), (false, 0), (false, 0)]
        );
        assert_eq!(answers[3].retry_after_secs, 1);
        assert_eq!(answers[0].reset_secs, 1);
        let next = q.check("t", at(1000)).unwrap();
        assert!(next.accepted);
        assert_eq!(next.remaining, 2);
        let stats = &q.stats()["t"];
        assert_eq!((stats.requests, stats.accepted, stats.throttled), (6, 4, 2));
        let seconds: Vec<_> = stats.per_second.values().copied().collect();
        assert_eq!(
            seconds,
            vec![
                SecondCount {
                    total: 5,
                    accepted: 3
                },
                SecondCount {
                    total: 1,
                    accepted: 1
                }
            ]
        );
        assert!(q.check("nobody", at(0)).is_none());
    }

    #[test]
    fn window_retry_after_counts_to_the_window_end() {
        let mut q = quotas(QuotaMode::Window, 1, Duration::from_secs(60));
        // 1_700_000_000 s is 20 s into a 60 s window (1_699_999_980 is a multiple of 60).
        assert!(q.check("t", at(0)).unwrap().accepted);
        let denied = q.check("t", at(500)).unwrap();
        assert!(!denied.accepted);
        assert_eq!(denied.retry_after_secs, 40);
        assert_eq!(denied.reset_secs, 40);
    }

    #[test]
    fn bucket_bursts_then_refills_at_the_rate() {
        let mut q = quotas(QuotaMode::Bucket, 4, Duration::from_secs(2));
        let burst: Vec<bool> = (0..6)
            .map(|_| q.check("t", at(0)).unwrap().accepted)
            .collect();
        assert_eq!(burst, vec![true, true, true, true, false, false]);
        let denied = q.check("t", at(0)).unwrap();
        // One request refills in 0.5 s: Retry-After rounds up to 1.
        assert_eq!(denied.retry_after_secs, 1);
        assert_eq!(denied.reset_secs, 2);
        assert!(!q.check("t", at(499)).unwrap().accepted);
        let ok = q.check("t", at(500)).unwrap();
        assert!(ok.accepted);
        assert_eq!(ok.remaining, 0);
        // After 2 s idle the bucket is full again, never more.
        let full = q.check("t", at(10_000)).unwrap();
        assert_eq!(full.remaining, 3);
    }

    #[test]
    fn limits_change_at_run_time() {
        let mut q = quotas(QuotaMode::Window, 2, Duration::from_secs(3600));
        assert!(q.check("t", at(0)).unwrap().accepted);
        assert!(q.check("t", at(0)).unwrap().accepted);
        assert!(!q.check("t", at(0)).unwrap().accepted);
        q.set_limit("t", 3, at(0));
        let d = q.check("t", at(0)).unwrap();
        assert!(d.accepted && d.remaining == 0 && d.limit == 3);
        q.set_limit("new", 1, at(0));
        assert!(q.check("new", at(0)).unwrap().accepted);

        let mut b = quotas(QuotaMode::Bucket, 2, Duration::from_secs(3600));
        assert!(b.check("t", at(0)).unwrap().accepted);
        b.set_limit("t", 4, at(0));
        assert_eq!(b.check("t", at(0)).unwrap().remaining, 2);
        b.set_limit("t", 1, at(0));
        let d = b.check("t", at(0)).unwrap();
        assert!(d.accepted && d.remaining == 0);
        assert!(!b.check("t", at(0)).unwrap().accepted);
    }

    #[test]
    fn zero_limit_refuses_everything() {
        for mode in [QuotaMode::Window, QuotaMode::Bucket] {
            let mut q = quotas(mode, 0, Duration::from_secs(1));
            let d = q.check("t", at(0)).unwrap();
            assert!(!d.accepted);
            assert!(d.retry_after_secs >= 1);
        }
    }

    #[test]
    fn the_histogram_is_bounded_by_retention() {
        let spec = TokenSpec {
            token: "t".into(),
            limit: 1,
        };
        let mut q = Quotas::new(
            QuotaMode::Window,
            Duration::from_secs(1),
            Duration::from_secs(10),
            &[spec],
            Duration::ZERO,
        );
        for s in 0..100 {
            q.check("t", at(s * 1000));
        }
        let stats = &q.stats()["t"];
        assert_eq!(stats.per_second.len(), 11);
        assert_eq!(stats.requests, 100);
    }
}
