//! Issue 20, the soak: the whole pipeline — one process per stage: `intake fetch`, `validate`,
//! `dedup`, `serve` — at a steady load for `SOAK_SECS` (90 in `scripts/test`; `scripts/chaos
//! --soak 1h` runs an hour): the simulator writes (updates, deletes, backdated versions,
//! drift) and sends its webhooks the whole time, and every stream polls and syncs in full
//! every 30 s. Every `SOAK_EVERY_SECS` (10; a minute in the long form) it prints each stage's
//! resident memory (VmRSS, from /proc) and lag (its own `intake_lag_records` gauge, scraped
//! from its `/metrics`).
//!
//! Judged:
//! - **flat**: in the last third of the run, each stage's highest RSS is at most 25 % + 16 MiB
//!   above its highest in the middle third (the first third warms caches and buffers up), and
//!   its highest lag at most twice the middle third's + 1 000 records — a leak or a stage that
//!   falls behind grows without bound, a warm cache levels off;
//! - no stage process ended by itself;
//! - **exact at the end**: the writer pauses, every webhook is delivered, and once every stream
//!   completed a sync that started after the pause, the curated topics equal the simulator's
//!   truth (no record lost, doubled, stale or wrong; the DLQ holds exactly the drifted ids).
//!
//! Settings (environment): `SOAK_SECS` (90), `SOAK_EVERY_SECS` (10), `SOAK_WRITE_RATE` (20
//! writes/s), `SOAK_RECORDS` (400 per stream). Runs on the shared stack (`scripts/stack`).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::e2e::{self, Knobs};
use support::proc::{self, Proc};
use support::*;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} does not parse"))
        })
        .unwrap_or(default)
}

const STAGES: [&str; 4] = ["fetch", "validate", "dedup", "serve"];

/// One sample of a stage: resident MiB and lag records.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_mib: f64,
    lag: f64,
}

/// VmRSS of a process, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The sum of a stage's `intake_lag_records` series, from its own `/metrics`.
async fn lag(port: u16) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("intake_lag_records"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// The highest value of `f` over `samples`.
fn peak(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    samples.iter().map(f).fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_load_keeps_memory_and_lag_flat_and_the_result_exact() {
    let secs: u64 = env_or("SOAK_SECS", 90);
    let every = Duration::from_secs(env_or("SOAK_EVERY_SECS", 10));
    let write_rate: f64 = env_or("SOAK_WRITE_RATE", 20.0);
    let records: u32 = env_or("SOAK_RECORDS", 400);
    assert!(
        Duration::from_secs(secs) >= every * 6,
        "SOAK_SECS={secs}: at least six samples are needed"
    );
    let dir = test_tmp().join(unique("soak-"));
    std::fs::create_dir_all(&dir).unwrap();

    let serve_port = e2e::free_port();
    let hook = format!("http://127.0.0.1:{serve_port}/v1/webhooks/sim");
    let (records_s, rate_s) = (records.to_string(), write_rate.to_string());
    let sim = sim(&[
        "--seed",
        "20",
        "--records",
        &records_s,
        "--start-paused",
        "--write-rate",
        &rate_s,
        "--delete-share",
        "0.1",
        "--backdate-rate",
        "0.2",
        "--backdate-min",
        "2m",
        "--backdate-max",
        "30m",
        "--drift-rate",
        "0.02",
        "--webhook-url",
        &hook,
        "--webhook-secret",
        e2e::WEBHOOK_SECRET,
        "--webhook-dup-rate",
        "0.05",
        "--webhook-max-attempts",
        "60",
    ])
    .await;
    let knobs = Knobs {
        serve_port,
        quota: 1000,
        poll: "1s",
        full_sync_every: "30s",
        lookback: "1m",
        page_size: 100,
    };
    let sources = e2e::sources(sim.addr, &knobs);
    let base = config_text(&sources);
    let cfg = intake::config::Config::from_toml(&base).unwrap();
    apply_topics_and_schemas(&cfg).await;

    // One process per stage, each with its own metrics port.
    let mut procs: Vec<(&str, u16, Proc)> = Vec::new();
    let begun = time::OffsetDateTime::now_utc();
    for stage in STAGES {
        let (path, port) = e2e::config_with_metrics(&dir, stage, &base);
        let p = proc::intake(&[stage], dir.join(format!("{stage}.log")))
            .config(&path)
            .spawn();
        procs.push((stage, port, p));
    }
    let logs: Vec<PathBuf> = STAGES
        .iter()
        .map(|s| dir.join(format!("{s}.log")))
        .collect();
    let logs_tail = || {
        logs.iter()
            .map(|l| format!("--- {}\n{}", l.display(), proc::tail(l, 15)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    e2e::wait_for_syncs_after(&cfg, begun, Duration::from_secs(120), logs_tail).await;
    sim_admin(&sim, "/admin/resume").await;

    // --- the steady load, sampled.
    println!(
        "soak: {secs} s at {write_rate} writes/s, a sample every {} s",
        every.as_secs()
    );
    println!(
        "{:>6}  {}",
        "t (s)",
        STAGES
            .iter()
            .map(|s| format!("{s:>9} MiB {s:>9} lag"))
            .collect::<Vec<_>>()
            .join("  ")
    );
    let started = Instant::now();
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(every).await;
        let mut row = format!("{:>6}", started.elapsed().as_secs());
        for (stage, port, p) in &mut procs {
            if let Some(status) = p.try_wait() {
                panic!("{stage} ended by itself ({status}):\n{}", p.tail(30));
            }
            let s = Sample {
                rss_mib: rss_mib(p.pid()).unwrap_or_else(|| panic!("no VmRSS of {stage}")),
                lag: lag(*port)
                    .await
                    .unwrap_or_else(|| panic!("{stage}: no /metrics on {port}")),
            };
            row.push_str(&format!("  {:>13.1} {:>13.0}", s.rss_mib, s.lag));
            samples.entry(stage).or_default().push(s);
        }
        println!("{row}");
    }

    // --- flat: the last third against the middle third.
    let mut grew = Vec::new();
    for (stage, s) in &samples {
        let third = s.len() / 3;
        let (middle, last) = (&s[third..2 * third], &s[2 * third..]);
        let (rss_mid, rss_last) = (peak(middle, |x| x.rss_mib), peak(last, |x| x.rss_mib));
        let (lag_mid, lag_last) = (peak(middle, |x| x.lag), peak(last, |x| x.lag));
        println!(
            "soak: {stage}: peak RSS {rss_mid:.1} → {rss_last:.1} MiB, peak lag {lag_mid:.0} → {lag_last:.0} (middle → last third)"
        );
        if rss_last > rss_mid * 1.25 + 16.0 {
            grew.push(format!("{stage}: RSS {rss_mid:.1} → {rss_last:.1} MiB"));
        }
        if lag_last > lag_mid * 2.0 + 1000.0 {
            grew.push(format!("{stage}: lag {lag_mid:.0} → {lag_last:.0}"));
        }
    }

    // --- exact at the end.
    let paused = sim_admin(&sim, "/admin/pause").await;
    let paused_at = time::OffsetDateTime::now_utc();
    let hooks = e2e::webhooks_delivered(&sim, Duration::from_secs(180)).await;
    let (truth, report, doubles) =
        support::scenario::settled_after_pause(&cfg, &sim, &paused, paused_at, &logs, logs_tail)
            .await;
    let (f, table) = e2e::figures(&report, &doubles);
    for (stage, _, p) in &mut procs {
        if let Some(status) = p.try_wait() {
            panic!("{stage} ended by itself ({status}):\n{}", p.tail(30));
        }
    }
    println!(
        "\nSOAK RESULT: {secs} s, {} writes, webhooks {hooks}; records compared {}, lost {}, doubled {}, stale {}, wrong {}\n{table}",
        paused["writes"], f.compared, f.lost, f.doubled, f.stale, f.wrong
    );
    assert!(grew.is_empty(), "grew without levelling off: {grew:?}");
    e2e::assert_exact(&report, &doubles, &truth, true);
    for (_, _, p) in &mut procs {
        p.terminate(Duration::from_secs(60));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
