//! One pacer per API token, shared by every stream of that token in the owning process.
//!
//! Two mechanisms, one for a smooth pace and one for the hard bound:
//!
//! - **Pace.** A GCRA (generic cell rate algorithm) schedule: each request is given a slot
//!   `interval = window / (quota × safety)` after the previous one, with no burst.
//! - **Bound.** Slots alone do not bound what the upstream counts: a request's slot is not
//!   when it reaches the upstream (the process can stall between the two, or after several
//!   slots fell due at once, and a request spends time in the network), so a window of the
//!   upstream could see slots of its neighbours. Before a request goes out the pacer therefore
//!   also checks its [`Permit`]s: a request is admitted only while fewer than `limit` of the
//!   token's requests are *in flight or ended less than one window ago* (a permit is held
//!   from admission until the response's headers arrive). The upstream counts a request at
//!   some instant between its admission and the end of its permit, so any window of the
//!   upstream's length (a sliding one, or fixed windows wherever their edges are) holds at
//!   most `limit` requests: the last one admitted among them found all the others in flight
//!   or ended within the window. No alignment to the upstream's window edges is needed.
//!   The measure is our monotonic clock; the upstream's must run at the same rate (it does,
//!   to a few parts per million). A request that timed out is counted as ended when we gave
//!   up on it, which is only right if the upstream did not receive it later than that.
//!
//! In steady state the pace keeps the bound from ever binding (at 0.95 of the quota, 19
//! slots of a 20-per-second quota span one second, so a 20th request is admitted only if
//! requests take more than a slot's length); after a stall it is the bound that holds.
//! On a 429 the whole token pauses until `Retry-After`; a pause is checked again at the
//! moment of admission, so slots handed out before it do not go out during it. Response
//! headers teach the pacer the real quota:
//!
//! - the limit (`X-RateLimit-Limit`, `RateLimit: limit=`): the pace follows it at once, down
//!   (the upstream lowered the quota) and back up, never above the configured quota;
//! - remaining and reset: when fewer requests remain than our pace would spend before the
//!   reset (another client of the token, a window we entered part-used), the pace slows to
//!   spread what remains until the reset; with none left the token pauses until the reset.
//!
//! [`Pacer::snapshot`] and [`Pacer::restore`] carry the state to the token's next owner
//! (`quota::state`): the successor starts no earlier than the predecessor's next slot and
//! counts the predecessor's requests of the last window against the bound. On an orderly
//! hand-over the predecessor's streams have stopped and their requests ended before its last
//! snapshot, so the bound holds across it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Fraction of the nominal quota the pacer aims for by default.
pub const DEFAULT_SAFETY: f64 = 0.95;

/// Whole-second `Reset` values are rounded up by most APIs (the simulator too), so the real
/// time left can be this much shorter than announced; comparisons use the shorter bound, so
/// rounding alone never slows the pace.
const RESET_GRANULARITY: Duration = Duration::from_secs(1);

/// Restored request ends (another process's, converted through unix time) are taken to be this
/// much later than stored, for the difference between two hosts' clocks.
pub const HANDOVER_CLOCK_SKEW: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct State {
    /// Theoretical arrival time of the next request.
    tat: Instant,
    /// Nothing may be sent before this (429 / Retry-After / nothing remaining).
    paused_until: Option<Instant>,
    /// The limit in force: the configured one, or a lower one the upstream announced.
    limit: u32,
    /// Spacing from `limit` (the pace returns to it after a learned slowdown).
    nominal: Duration,
    /// A slower spacing learned from remaining/reset, valid until the upstream's reset.
    learned: Option<(Duration, Instant)>,
    /// The last remaining count and reset time the upstream announced.
    last_seen: Option<(u64, Instant)>,
    /// Requests paced since the last [`Pacer::take_activity`].
    activity: u64,
    /// Requests admitted whose permit has not ended yet.
    in_flight: u32,
    /// When the requests of the last window ended, oldest first (for the bound).
    ended: VecDeque<Instant>,
}

impl State {
    fn interval(&self) -> Duration {
        self.learned
            .map_or(self.nominal, |(l, _)| l.max(self.nominal))
    }

    /// Forgets request ends older than one window.
    fn prune(&mut self, window: Duration, now: Instant) {
        while self.ended.front().is_some_and(|e| *e + window <= now) {
            self.ended.pop_front();
        }
    }

    /// Requests counted against the bound now (call [`State::prune`] first).
    fn occupied(&self) -> u64 {
        u64::from(self.in_flight) + self.ended.len() as u64
    }

    /// The bound: the limit in force, but at least one request per window, so a token cut to
    /// 0 can still learn from a probe when its quota returns.
    fn bound(&self) -> u64 {
        u64::from(self.limit.max(1))
    }

    fn pause(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        self.tat = self.tat.max(until);
    }

    /// Slows the pace if `remaining` requests would not last until `reset_at` at our pace.
    fn spread(&mut self, remaining: u64, reset_at: Instant, now: Instant) {
        if reset_at <= now {
            return;
        }
        if remaining == 0 {
            self.pause(reset_at);
            return;
        }
        let left = reset_at - now;
        let surely_left = left.saturating_sub(RESET_GRANULARITY);
        let would_send = surely_left.as_secs_f64() / self.interval().as_secs_f64();
        if (remaining as f64) < would_send {
            let needed = left.div_f64(remaining as f64);
            if needed > self.interval() {
                self.learned = Some((needed, reset_at));
            }
        }
    }
}

/// What the upstream told us in one response's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The quota per window, if announced.
    pub limit: Option<u64>,
    /// Requests left in the window.
    pub remaining: u64,
    /// Time until the window resets.
    pub reset_in: Duration,
}

/// The pacer's state, for the next owner of the token.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The spacing in force.
    pub interval: Duration,
    /// The limit in force (configured, or lower as announced by the upstream).
    pub limit: u32,
    /// The next free slot.
    pub next_at: Instant,
    /// A pause in force (429, nothing remaining).
    pub paused_until: Option<Instant>,
    /// Last announced remaining count and reset time.
    pub last_seen: Option<(u64, Instant)>,
    /// Ends of the requests of the last window, oldest first; requests still in flight are
    /// given the snapshot's time.
    pub ended: Vec<Instant>,
}

/// The right to send one request, from admission until the response's headers arrived (or
/// the request failed): drop it then, after feeding the headers to [`Pacer::observe`], so
/// the next admission knows what they said.
#[derive(Debug)]
#[must_use = "the request counts as ended when the permit is dropped"]
pub struct Permit<'a> {
    pacer: &'a Pacer,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.pacer.bounded {
            return;
        }
        let mut s = self.pacer.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        let now = Instant::now();
        s.ended.push_back(now);
        s.prune(self.pacer.per, now);
        drop(s);
        self.pacer.freed.notify_waiters();
    }
}

/// Paces requests of one token.
#[derive(Debug)]
pub struct Pacer {
    /// Configured quota: requests per `per`, aiming at `safety` of it.
    requests: u32,
    per: Duration,
    safety: f64,
    /// Whether the bound applies (not for [`Pacer::unlimited`]).
    bounded: bool,
    state: Mutex<State>,
    /// Signalled when a permit ends.
    freed: Notify,
}

impl Pacer {
    /// `requests` per `per`, aiming at `safety` (0..=1) of it.
    pub fn new(requests: u32, per: Duration, safety: f64) -> Self {
        let nominal = interval(requests, per, safety);
        Self {
            requests,
            per,
            safety,
            bounded: requests != u32::MAX,
            state: Mutex::new(State {
                tat: Instant::now(),
                paused_until: None,
                limit: requests,
                nominal,
                learned: None,
                last_seen: None,
                activity: 0,
                in_flight: 0,
                ended: VecDeque::new(),
            }),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A pacer that never waits (sources without a quota).
    pub fn unlimited() -> Self {
        Self::new(u32::MAX, Duration::from_secs(1), 1.0)
    }

    /// Waits for the next slot of the schedule, then for admission under the bound, and
    /// returns the request's [`Permit`]. Slots are handed out in call order, so streams sharing
    /// a token take turns. A request that finds the token paused or the bound reached when its
    /// slot comes waits for that and takes a new slot, so what was held back does not go out
    /// in a burst.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let at = {
                let mut s = self.lock();
                let now = Instant::now();
                if let Some((_, until)) = s.learned
                    && now >= until
                {
                    s.learned = None;
                }
                let mut at = s.tat.max(now);
                if let Some(p) = s.paused_until {
                    at = at.max(p);
                }
                s.tat = at + s.interval();
                at
            };
            tokio::time::sleep_until(at).await;
            let freed = self.freed.notified();
            tokio::pin!(freed);
            let wait_until = {
                let mut s = self.lock();
                let now = Instant::now();
                if let Some(p) = s.paused_until.filter(|p| *p > now) {
                    p
                } else if !self.bounded {
                    s.activity += 1;
                    return Permit { pacer: self };
                } else {
                    s.prune(self.per, now);
                    if s.occupied() < s.bound() {
                        s.in_flight += 1;
                        s.activity += 1;
                        return Permit { pacer: self };
                    }
                    // Woken when a permit ends, or when the oldest end leaves the window.
                    freed.as_mut().enable();
                    s.ended.front().map_or(now + self.per, |e| *e + self.per)
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(wait_until) => {}
                () = &mut freed => {}
            }
        }
    }

    /// How long a request asked for now would wait for its slot of the schedule (or for a
    /// pause to end); zero when a slot is free. Nothing is taken. fetch closes its transaction
    /// rather than hold the pages it has through that wait.
    pub fn wait_for_slot(&self) -> Duration {
        if !self.bounded {
            return Duration::ZERO;
        }
        let s = self.lock();
        let now = Instant::now();
        let at = s.tat.max(s.paused_until.unwrap_or(now)).max(now);
        at - now
    }

    /// Stops every stream of the token until `until` (after a 429 with Retry-After).
    pub fn pause_until(&self, until: Instant) {
        self.lock().pause(until);
    }

    /// Learns from response headers (see the module docs).
    pub fn observe(&self, o: Observed) {
        let mut s = self.lock();
        let now = Instant::now();
        if let Some(limit) = o.limit {
            let limit = u32::try_from(limit).unwrap_or(u32::MAX).min(self.requests);
            if limit != s.limit {
                s.limit = limit;
                s.nominal = interval(limit, self.per, self.safety);
                // The schedule already handed out follows the new pace from now on.
                let next = now + s.nominal;
                if s.tat > next && s.paused_until.is_none_or(|p| p <= now) {
                    s.tat = next;
                }
            }
        }
        let reset_at = now + o.reset_in;
        s.last_seen = Some((o.remaining, reset_at));
        s.spread(o.remaining, reset_at, now);
    }

    /// Current spacing (for status and tests).
    pub fn interval(&self) -> Duration {
        self.lock().interval()
    }

    /// Requests paced since the last call (the state is worth storing only while active).
    pub fn take_activity(&self) -> u64 {
        std::mem::take(&mut self.lock().activity)
    }

    /// The state to hand to the token's next owner.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.lock();
        let now = Instant::now();
        s.prune(self.per, now);
        let mut ended: Vec<Instant> = s.ended.iter().copied().collect();
        ended.extend(std::iter::repeat_n(now, s.in_flight as usize));
        Snapshot {
            interval: s.interval(),
            limit: s.limit,
            next_at: s.tat,
            paused_until: s.paused_until,
            last_seen: s.last_seen,
            ended,
        }
    }

    /// Starts from a predecessor's state, taken `age` ago. Before the first request:
    ///
    /// - the schedule continues the predecessor's: the first slot is no earlier than its next
    ///   one, so the hand-over adds no burst to what it sent;
    /// - a pause in force (Retry-After, nothing remaining) holds;
    /// - a lower limit learned from the upstream holds (the headers of the next response
    ///   correct it either way);
    /// - the predecessor's requests of the last window count against the bound (their ends
    ///   `skew` later than stored, for the difference between the two processes' clocks);
    /// - the upstream window is treated as partly used: the predecessor may have gone on at its
    ///   pace for `age` after the snapshot, so that many requests are taken off the remaining
    ///   count it saw, and what is left is spread until the reset (or, if none, the token
    ///   pauses until the reset).
    pub fn restore(&self, snap: &Snapshot, age: Duration, skew: Duration) {
        let mut s = self.lock();
        let now = Instant::now();
        let mut ended: Vec<Instant> = s.ended.drain(..).collect();
        ended.extend(snap.ended.iter().map(|e| *e + skew));
        ended.sort_unstable();
        s.ended = ended.into();
        s.prune(self.per, now);
        let limit = snap.limit.min(self.requests);
        if limit != s.limit {
            s.limit = limit;
            s.nominal = interval(limit, self.per, self.safety);
        }
        s.tat = s.tat.max(snap.next_at);
        if let Some(p) = snap.paused_until.filter(|p| *p > now) {
            s.pause(p);
        }
        if let Some((remaining, reset_at)) = snap.last_seen.filter(|(_, r)| *r > now) {
            if snap.interval > s.nominal {
                s.learned = Some((snap.interval, reset_at));
            }
            let gone_on = (age.as_secs_f64() / snap.interval.as_secs_f64().max(1e-9)).ceil() as u64;
            s.last_seen = Some((remaining.saturating_sub(gone_on), reset_at));
            s.spread(remaining.saturating_sub(gone_on), reset_at, now);
        }
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
    async fn the_wait_for_a_slot_is_told_without_taking_it() {
        let p = Pacer::new(10, Duration::from_secs(1), 1.0);
        assert_eq!(
            p.wait_for_slot(),
            Duration::ZERO,
            "a fresh token has a free slot"
        );
        drop(p.acquire().await);
        let w = p.wait_for_slot();
        assert!(
            w > Duration::from_millis(90) && w <= Duration::from_millis(100),
            "the next slot is one interval away: {w:?}"
        );
        assert_eq!(p.wait_for_slot(), w, "asking takes nothing");
        p.pause_until(Instant::now() + Duration::from_secs(5));
        assert!(p.wait_for_slot() >= Duration::from_secs(5) - Duration::from_millis(1));
        assert_eq!(Pacer::unlimited().wait_for_slot(), Duration::ZERO);
    }

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
                    drop(p.acquire().await);
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
            let n = t[i..]
                .iter()
                .take_while(|b| **b - *a < Duration::from_secs(1))
                .count();
            assert!(n <= 10, "{n} requests within 1 s from {a:?}");
        }
        assert_eq!(*t.last().unwrap(), Duration::from_millis(3900));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_until_blocks_every_caller() {
        let p = Pacer::new(100, Duration::from_secs(1), 1.0);
        let start = Instant::now();
        p.pause_until(start + Duration::from_secs(5));
        drop(p.acquire().await);
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn learns_a_lower_quota_from_headers() {
        let p = Pacer::new(100, Duration::from_secs(1), 1.0);
        assert_eq!(p.interval(), Duration::from_millis(10));
        // 10 left for 3 s (at least 2 s surely) while our pace would spend 200: spread them.
        p.observe(announced(None, 10, Duration::from_secs(3)));
        assert_eq!(p.interval(), Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(3001)).await;
        drop(p.acquire().await);
        assert_eq!(
            p.interval(),
            Duration::from_millis(10),
            "the learned pace expires at the reset"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_follows_the_announced_limit_within_the_configured_one() {
        // Each case: a pacer of 20 requests a second, then announcements (limit, remaining,
        // seconds to the reset), each with the pace it leaves (ms between requests) and why.
        type Step = (Option<u64>, u64, u64, u64, &'static str);
        let cases: &[&[Step]] = &[
            // A 1 s window half used at our pace: Reset says 1 (rounded up), 10 remain.
            &[(Some(20), 10, 1, 50, "whole-second resets do not slow it")],
            &[
                (Some(5), 3, 1, 200, "down to the announced limit"),
                (Some(100), 90, 1, 50, "never above the configured quota"),
            ],
        ];
        for steps in cases {
            let p = Pacer::new(20, Duration::from_secs(1), 1.0);
            for &(limit, remaining, reset_s, interval_ms, why) in *steps {
                p.observe(announced(limit, remaining, Duration::from_secs(reset_s)));
                assert_eq!(p.interval(), Duration::from_millis(interval_ms), "{why}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_remaining_pauses_until_the_reset() {
        let p = Pacer::new(20, Duration::from_secs(1), 1.0);
        let start = Instant::now();
        p.observe(announced(Some(0), 0, Duration::from_secs(1)));
        drop(p.acquire().await);
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restored_pacer_continues_the_schedule_and_holds_the_pause() {
        let old = Pacer::new(10, Duration::from_secs(1), 1.0);
        for _ in 0..5 {
            drop(old.acquire().await);
        }
        let start = Instant::now();
        let snap = old.snapshot();
        let new = Pacer::new(10, Duration::from_secs(1), 1.0);
        new.restore(&snap, Duration::ZERO, Duration::ZERO);
        drop(new.acquire().await);
        assert_eq!(
            Instant::now() - start,
            Duration::from_millis(100),
            "the next slot, not at once"
        );

        let paused = Pacer::new(10, Duration::from_secs(1), 1.0);
        paused.pause_until(Instant::now() + Duration::from_secs(4));
        let snap = paused.snapshot();
        let start = Instant::now();
        let new = Pacer::new(10, Duration::from_secs(1), 1.0);
        new.restore(&snap, Duration::ZERO, Duration::ZERO);
        drop(new.acquire().await);
        assert_eq!(Instant::now() - start, Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restored_pacer_counts_the_window_as_partly_used() {
        // The predecessor saw 6 left for 5 s, 1 s ago, at 100 ms per request: it may have sent
        // 10 more since, so nothing is left: wait for the reset (4 s from now).
        let old = Pacer::new(10, Duration::from_secs(1), 1.0);
        old.observe(announced(None, 6, Duration::from_secs(5)));
        let mut snap = old.snapshot();
        snap.interval = Duration::from_millis(100);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        let new = Pacer::new(10, Duration::from_secs(1), 1.0);
        new.restore(&snap, Duration::from_secs(1), Duration::ZERO);
        drop(new.acquire().await);
        assert_eq!(Instant::now() - start, Duration::from_secs(4));
    }

    /// What a response announced: the quota per window (if it did), the requests left and
    /// the time until the window resets.
    fn announced(limit: Option<u64>, remaining: u64, reset_in: Duration) -> Observed {
        Observed {
            limit,
            remaining,
            reset_in,
        }
    }

    /// At most `bound` of `(admitted, ended)` requests may meet any window of `window`: the
    /// worst window starts at some request's end.
    fn worst_window(reqs: &[(Instant, Instant)], window: Duration) -> usize {
        reqs.iter()
            .map(|(_, w)| {
                reqs.iter()
                    .filter(|(a, e)| *a < *w + window && *e >= *w)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// Runs `streams` tasks that each make `each` requests through one pacer of 10 per second:
    /// a request calls `stall(stream, i)` once admitted (which may block the thread), takes
    /// `took`, and ends. Answers every request's `(admitted, ended)`.
    async fn requests_through_pacer(
        streams: usize,
        each: usize,
        took: Duration,
        stall: fn(usize, usize),
    ) -> Vec<(Instant, Instant)> {
        let p = std::sync::Arc::new(Pacer::new(10, Duration::from_secs(1), 1.0));
        let reqs = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for t in 0..streams {
            let (p, reqs) = (p.clone(), reqs.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..each {
                    let permit = p.acquire().await;
                    let admitted = Instant::now();
                    stall(t, i);
                    tokio::time::sleep(took).await;
                    drop(permit);
                    reqs.lock().unwrap().push((admitted, Instant::now()));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        reqs.lock().unwrap().clone()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stall_does_not_let_due_slots_burst_past_the_bound() {
        // Real time: four streams at 10/s; one of them blocks the runtime's only thread for
        // 350 ms twice, so the slots the others hold fall due together.
        let reqs = requests_through_pacer(4, 8, Duration::from_millis(5), |t, i| {
            if t == 0 && (i == 2 || i == 5) {
                std::thread::sleep(Duration::from_millis(350));
            }
        })
        .await;
        assert_eq!(reqs.len(), 32);
        let worst = worst_window(&reqs, Duration::from_secs(1));
        assert!(worst <= 10, "{worst} requests could meet one 1 s window");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_responses_hold_the_bound() {
        // Requests that take 400 ms: the pace alone would have 12 meet a 1 s window.
        let reqs = requests_through_pacer(8, 5, Duration::from_millis(400), |_, _| {}).await;
        assert_eq!(reqs.len(), 40);
        let worst = worst_window(&reqs, Duration::from_secs(1));
        assert_eq!(worst, 10, "at most the limit, and the bound is reached");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_slots_already_handed_out() {
        let p = std::sync::Arc::new(Pacer::new(10, Duration::from_secs(1), 1.0));
        let start = Instant::now();
        drop(p.acquire().await);
        // A second caller holds the slot at 100 ms; a 429 at 50 ms pauses until 2 s.
        let q = p.clone();
        let waiter = tokio::spawn(async move {
            drop(q.acquire().await);
            Instant::now() - start
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        p.pause_until(start + Duration::from_secs(2));
        assert_eq!(waiter.await.unwrap(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restored_pacer_counts_the_predecessors_requests_against_the_bound() {
        let now = Instant::now();
        let snap = Snapshot {
            interval: Duration::from_millis(100),
            limit: 10,
            next_at: now,
            paused_until: None,
            last_seen: None,
            ended: vec![now - Duration::from_millis(500); 10],
        };
        let new = Pacer::new(10, Duration::from_secs(1), 1.0);
        new.restore(&snap, Duration::ZERO, Duration::from_millis(100));
        drop(new.acquire().await);
        assert_eq!(
            Instant::now() - now,
            Duration::from_millis(600),
            "until the oldest of the 10 (skew included) leaves the window"
        );
    }
}
