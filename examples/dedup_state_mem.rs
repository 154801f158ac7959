//! Measures the dedup state: bytes per key, from the allocator, and apply throughput.
//!
//! ```text
//! cargo run --release --example dedup_state_mem -- 1000000
//! cargo run --release --example dedup_state_mem -- 10000000 --key-len 24
//! ```
//!
//! Keys look like `cus_0001234`: `cus_` and a zero-padded number, `--key-len` bytes long (both
//! 11 and 24 by default, the ends of the 10–24 byte range). For each length it prints one
//! `dedup_state key=value ...` line for `scripts/bench dedup`:
//!
//! - `bytes_per_key`: bytes held by the state after inserting the keys, as counted by this
//!   binary's global allocator (every allocation and free goes through it);
//! - `peak_bytes_per_key`: the high-water mark while inserting (an index shard resizing holds its
//!   old and new tables at once);
//! - `approx_bytes_per_key`: what `PartitionState::approx_bytes` reports, for the metric;
//! - `insert_ops_per_s`: `apply` of new keys; `apply_ops_per_s`: `apply` of known keys in random
//!   order, a third each newer, identical and stale; `max_insert_ms`: the slowest single insert
//!   (an index shard resizing); `end_sync_ms`: closing a full sync that missed 1% of the keys.
//!
//! Key bytes are generated before the measurement starts, so neither their memory nor their
//! formatting is counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use intake::dedup::{Decision, PartitionState, Stamp};

/// Counts live heap bytes and their high-water mark around the system allocator.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; only counters are updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Counted as the old and new blocks both live for a moment, as in a moving realloc.
            grew(new_size);
            shrank(layout.size());
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Fixed-width keys `cus_000…n`, all in one buffer.
struct Keys {
    bytes: Vec<u8>,
    len: usize,
}

impl Keys {
    fn new(count: usize, len: usize) -> Result<Self, String> {
        let digits = len
            .checked_sub(4)
            .filter(|&d| d > 0)
            .ok_or("--key-len must be over 4")?;
        if digits < 20 && count as u128 > 10u128.pow(digits as u32) {
            return Err(format!("{count} keys do not fit in {len}-byte keys"));
        }
        let mut bytes = Vec::with_capacity(count * len);
        for i in 0..count {
            bytes.extend_from_slice(format!("cus_{i:0digits$}").as_bytes());
        }
        Ok(Self { bytes, len })
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.bytes[i * self.len..(i + 1) * self.len]
    }
}

/// A random permutation of `0..n` (splitmix64-driven Fisher–Yates: reproducible, no seed file).
fn permutation(n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..n).rev() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        order.swap(i, (z % (i as u64 + 1)) as usize);
    }
    order
}

fn measure(count: usize, key_len: usize) -> Result<(), String> {
    let keys = Keys::new(count, key_len)?;
    let order = permutation(count);

    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let mut state = PartitionState::new();

    let started = Instant::now();
    let mut longest = Duration::ZERO;
    for i in 0..count {
        let op = Instant::now();
        let decision = state.apply(keys.get(i), Stamp::upsert(1, i as u64));
        longest = longest.max(op.elapsed());
        debug_assert_eq!(decision, Decision::Emit);
    }
    let insert_secs = started.elapsed().as_secs_f64();
    let held = LIVE.load(Ordering::Relaxed) - baseline;
    let peak = PEAK.load(Ordering::Relaxed) - baseline;
    let approx = state.approx_bytes();

    // Known keys in random order: a third newer (emitted), a third identical, a third stale.
    let started = Instant::now();
    let mut emitted = 0usize;
    for (n, &i) in order.iter().enumerate() {
        let i = i as usize;
        let stamp = match n % 3 {
            0 => Stamp::upsert(2, i as u64),
            1 => Stamp::upsert(1, i as u64),
            _ => Stamp::upsert(0, i as u64),
        };
        emitted += usize::from(state.apply(keys.get(i), stamp) == Decision::Emit);
    }
    let apply_secs = started.elapsed().as_secs_f64();
    assert_eq!(
        emitted,
        count.div_ceil(3),
        "a third of the known keys are newer"
    );

    // A full sync that sees 99% of the keys.
    state.begin_sync("bench");
    for &i in &order {
        let i = i as usize;
        if !i.is_multiple_of(100) {
            state.apply(keys.get(i), Stamp::upsert(0, 0));
        }
    }
    let started = Instant::now();
    let tombstones = state.end_sync("bench").map_err(|e| e.to_string())?;
    let end_sync_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(tombstones.len(), count.div_ceil(100));
    drop(tombstones);

    let per_key = |bytes: usize| bytes as f64 / count as f64;
    println!(
        "dedup_state keys={count} key_len={key_len} bytes_per_key={:.1} \
         peak_bytes_per_key={:.1} approx_bytes_per_key={:.1} insert_ops_per_s={:.0} \
         apply_ops_per_s={:.0} max_insert_ms={:.1} end_sync_ms={end_sync_ms:.1}",
        per_key(held),
        per_key(peak),
        per_key(approx),
        count as f64 / insert_secs,
        count as f64 / apply_secs,
        longest.as_secs_f64() * 1e3,
    );
    Ok(())
}

fn main() -> ExitCode {
    let usage = "usage: dedup_state_mem KEYS [--key-len BYTES]";
    let mut args = std::env::args().skip(1);
    let mut count = None;
    let mut key_lens = vec![11, 24];
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--key-len" => match args.next().and_then(|v| v.parse().ok()) {
                Some(len) => key_lens = vec![len],
                None => {
                    eprintln!("{usage}");
                    return ExitCode::from(2);
                }
            },
            _ => match arg.replace('_', "").parse::<usize>() {
                Ok(n) if n > 0 && count.is_none() => count = Some(n),
                _ => {
                    eprintln!("{usage}");
                    return ExitCode::from(2);
                }
            },
        }
    }
    let Some(count) = count else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    if count > u32::MAX as usize {
        eprintln!("at most {} keys", u32::MAX);
        return ExitCode::from(2);
    }
    for key_len in key_lens {
        if let Err(error) = measure(count, key_len) {
            eprintln!("dedup_state_mem: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
