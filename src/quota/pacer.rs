//! One pacer per API token, shared by every stream of that token in the owning process.
//!
//! The pacer is a GCRA (generic cell rate algorithm) limiter: each request is given a slot
//! `interval = window / quota` after the previous one, with no burst, so no window of the
//! upstream's length ever sees more than the quota. A safety factor keeps a margin for clock
//! differences between us and the upstream's window edges. On a 429 the whole token pauses
//! until `Retry-After`; when response headers say fewer requests remain than our pace would
//! spend before the reset, the pace slows to spread the remainder (learning the real quota,
//! e.g. after the upstream lowered it).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Fraction of the nominal quota the pacer aims for by default.
pub const DEFAULT_SAFETY: f64 = 0.95;

#[derive(Debug)]
struct State {
    /// Theoretical arrival time of the next request.
    tat: Instant,
    /// Nothing may be sent before this (429 / Retry-After).
    paused_until: Option<Instant>,
    /// Current spacing between requests.
    interval: Duration,
    /// Spacing from the configured quota (the pace returns to it after a learned slowdown).
    nominal: Duration,
    /// A slower spacing learned from headers, valid until the upstream's window resets.
    learned: Option<(Duration, Instant)>,
}

/// Paces requests of one token.
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<State>,
}

impl Pacer {
    /// `requests` per `per`, aiming at `safety` (0..=1) of it.
    pub fn new(requests: u32, per: Duration, safety: f64) -> Self {
        let nominal = interval(requests, per, safety);
        Self {
            state: Mutex::new(State { tat: Instant::now(), paused_until: None, interval: nominal, nominal, learned: None }),
        }
    }

    /// A pacer that never waits (sources without a quota).
    pub fn unlimited() -> Self {
        Self::new(u32::MAX, Duration::from_secs(1), 1.0)
    }

    /// Reserves the next slot and waits for it. Slots are handed out in call order, so
    /// streams sharing a token take turns.
    pub async fn acquire(&self) {
        let at = {
            let mut s = self.state.lock().expect("pacer poisoned");
            let now = Instant::now();
            if let Some((_, until)) = s.learned
                && now >= until
            {
                s.learned = None;
                s.interval = s.nominal;
            }
            let mut at = s.tat.max(now);
            if let Some(p) = s.paused_until {
                at = at.max(p);
            }
            s.tat = at + s.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// Stops every stream of the token until `until` (after a 429 with Retry-After).
    pub fn pause_until(&self, until: Instant) {
        let mut s = self.state.lock().expect("pacer poisoned");
        s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
        if s.tat < until {
            s.tat = until;
        }
    }

    /// Learns from `X-RateLimit-Remaining` / `-Reset`: if fewer requests remain than our pace
    /// would send before the reset, spread what remains over the time left.
    pub fn observe(&self, remaining: u64, reset_in: Duration) {
        let mut s = self.state.lock().expect("pacer poisoned");
        let now = Instant::now();
        let until = now + reset_in;
        if remaining == 0 {
            s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
            s.tat = s.tat.max(until);
            return;
        }
        let needed = reset_in.div_f64(remaining as f64);
        if needed > s.interval {
            s.interval = needed;
            s.learned = Some((needed, until));
        }
    }

    /// Current spacing (for status and tests).
    pub fn interval(&self) -> Duration {
        self.state.lock().expect("pacer poisoned").interval
    }
}

fn interval(requests: u32, per: Duration, safety: f64) -> Duration {
    let rate = f64::from(requests.max(1)) * safety.clamp(0.01, 1.0);
    per.div_f64(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_exceeds_the_quota_in_any_window() {
        let p = std::sync::Arc::new(Pacer::new(10, Duration::from_secs(1), 1.0));
        let start = Instant::now();
        let times = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (p, times) = (p.clone(), times.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    p.acquire().await;
                    times.lock().unwrap().push(Instant::now() - start);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut t = times.lock().unwrap().clone();
        t.sort();
        assert_eq!(t.len(), 40);
        // Sliding 1 s windows hold at most 10 requests.
        for (i, a) in t.iter().enumerate() {
            let n = t[i..].iter().take_while(|b| **b - *a < Duration::from_secs(1)).count();
            assert!(n <= 10, "{n} requests within 1 s from {a:?}");
        }
        assert_eq!(*t.last().unwrap(), Duration::from_millis(3900));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_until_blocks_every_caller() {
        let p = Pacer::new(100, Duration::from_secs(1), 1.0);
        let start = Instant::now();
        p.pause_until(start + Duration::from_secs(5));
        p.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn learns_a_lower_quota_from_headers() {
        let p = Pacer::new(100, Duration::from_secs(1), 1.0);
        assert_eq!(p.interval(), Duration::from_millis(10));
        p.observe(10, Duration::from_secs(1));
        assert_eq!(p.interval(), Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(1001)).await;
        p.acquire().await;
        assert_eq!(p.interval(), Duration::from_millis(10), "the learned pace expires at the reset");
    }
}
