//! The background writer: changes the data set at `--write-rate` writes per second until
//! stopped, skipping while paused.
//!
//! The pause flag lives in the store and is checked under the store's write lock, so once
//! `POST /admin/pause` has returned no background write can happen: a comparison with the
//! truth is exact.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::debug;

use super::clock;
use super::data::Stream;
use super::state::SimState;

/// Shortest tick: above 100 writes/s several writes are made per tick.
const MIN_TICK: Duration = Duration::from_millis(10);

/// Runs the writer until `stop` turns true. A rate of 0 (or less) writes nothing.
pub async fn run(state: Arc<SimState>, rate: f64, mut stop: watch::Receiver<bool>) {
    if rate <= 0.0 || !rate.is_finite() {
        return;
    }
    let tick = Duration::from_secs_f64(1.0 / rate).clamp(MIN_TICK, Duration::from_secs(1));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Writes owed: accrues at `rate` per second, capped at one second's worth so a stall is
    // not followed by a flood.
    let mut credit = 0.0_f64;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = ticks.tick() => {}
        }
        if *stop.borrow() {
            return;
        }
        let now = Instant::now();
        credit = (credit + rate * (now - last).as_secs_f64()).min(rate.max(1.0));
        last = now;
        while credit >= 1.0 {
            credit -= 1.0;
            let change = {
                let mut store = state.store_mut();
                if store.paused {
                    None
                } else {
                    Some(store.write(&Stream::ALL, clock::now_ms()))
                }
            };
            let Some(change) = change else {
                credit = 0.0;
                break;
            };
            debug!(stream = change.stream.as_str(), id = %change.id, kind = change.kind.as_str(), version = change.version, backdated = change.backdated, "sim write");
            state.notify(&change).await;
        }
    }
}
