//! Issue 8: central per-token quota, judged by the simulator's counters.
//!
//! Every test runs the real `intake fetch` binary as separate OS processes (long-running, each
//! with its own `INTAKE_INSTANCE_ID`, joining the fetch group) against an in-process simulator
//! whose quota is a fixed 1 s window aligned to unix seconds, so its per-second histogram is
//! exactly what the upstream saw. Requests per second are checked on `total` (every request
//! that reached the quota check, accepted or not), which is stronger than checking accepted
//! ones (the simulator never accepts more than the limit in a window anyway).
//!
//! - `one_token_many_processes`: 1, 2 and 4 processes over 4 streams of one token.
//! - `killed_owner_successor_resumes`: SIGKILL the owner; the survivor restores its state.
//! - `exhausted_token_waits_others_go_on`: two tokens, one cut to 0 at run time.
//! - `lowered_quota_is_followed_from_headers`: a limit cut at run time, learned from headers.
//!
//! The tests run one at a time (a lock), since they measure rates on a small shared machine.
//! Bounds are generous; the exact figures are printed.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::proc::{self, Proc};
use support::*;

static SERIAL: Mutex<()> = Mutex::new(());

const STYLES: [(&str, &str); 4] = [
    ("cursor", "customers"),
    ("link", "orders"),
    ("page", "events"),
    ("offset", "customers"),
];

/// A source of `n` streams (over the simulator's styles) with the given token and quota.
fn source(sim: &intake::sim::SimHandle, name: &str, token: &str, quota: u32, n: usize) -> String {
    let mut s = format!(
        r#"
[[sources]]
name = "{name}"
base_url = "http://{addr}"
auth = {{ kind = "bearer", token = "{token}" }}
quota = {{ requests = {quota}, per = "1s" }}
max_retries = 20
"#,
        addr = sim.addr
    );
    for i in 0..n {
        let (style, stream) = STYLES[i % STYLES.len()];
        s.push_str(&format!(
            r#"
[[sources.streams]]
name = "s{i}"
path = "/v1/styles/{style}/{stream}"
primary_key = "/id"
version = "/version"
pagination = {{ style = "{style}" }}
page_size = 10
poll_interval = "1s"
"#
        ));
    }
    s
}

/// A running `intake fetch` (SIGKILLed when dropped); its stderr goes to `<id>.log`.
struct Fetch {
    id: String,
    p: Proc,
}

impl Fetch {
    fn spawn(cfg: &Path, id: &str, dir: &Path) -> Self {
        let p = proc::intake(&["fetch"], dir.join(format!("{id}.log")))
            .config(cfg)
            .env("INTAKE_INSTANCE_ID", id)
            .spawn();
        Self {
            id: id.to_owned(),
            p,
        }
    }
}

impl Fetch {
    /// Whether a quota log line ("quota partition …", "quota state …") carried `field` =
    /// `value`.
    fn saw_field(&self, field: &str, value: &str) -> bool {
        self.p.any_line(|l| {
            (l.contains("quota partition") || l.contains("quota state"))
                && proc::has_field(l, field, value)
        })
    }
}

impl std::ops::Deref for Fetch {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.p
    }
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool, procs: &[Fetch]) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() > deadline {
            let logs: Vec<String> = procs
                .iter()
                .map(|p| format!("--- {}:\n{}", p.id, p.tail(20)))
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One token's counters from `GET /admin/stats`.
#[derive(Debug, Clone, Default)]
struct Counts {
    requests: u64,
    throttled: u64,
    /// unix second -> (total, accepted)
    per_second: BTreeMap<u64, (u64, u64)>,
}

async fn counts(sim: &intake::sim::SimHandle, token: &str) -> Counts {
    let v = sim_stats(sim).await;
    let t = &v["tokens"][token];
    Counts {
        requests: t["requests"].as_u64().unwrap_or(0),
        throttled: t["throttled"].as_u64().unwrap_or(0),
        per_second: t["per_second"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, c)| {
                        (
                            k.parse().unwrap(),
                            (
                                c["total"].as_u64().unwrap(),
                                c["accepted"].as_u64().unwrap(),
                            ),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

impl Counts {
    /// Highest request count of any second.
    fn max_total(&self) -> u64 {
        self.per_second.values().map(|c| c.0).max().unwrap_or(0)
    }
    /// Accepted requests per second over the whole seconds `from..=to` (missing seconds count 0).
    fn accepted_rate(&self, from: u64, to: u64) -> f64 {
        let n: u64 = (from..=to)
            .map(|s| self.per_second.get(&s).map_or(0, |c| c.1))
            .sum();
        n as f64 / (to - from + 1) as f64
    }
    /// Checks that `from..=to` was paced near `quota`: the median second accepted at least
    /// `share` of it and the mean at least 0.6 of it. One stalled second (a slow transaction
    /// commit on a busy 2-core machine) must not fail a pacing check, while a pacer that
    /// really waits (on another token, on a dead owner) shows in most seconds.
    fn assert_paced(&self, from: u64, to: u64, quota: u32, share: f64, what: &str) {
        let mut accepted: Vec<u64> = self.seconds(from, to).iter().map(|c| c.1).collect();
        accepted.sort_unstable();
        let median = accepted[accepted.len() / 2] as f64;
        let mean = self.accepted_rate(from, to);
        let q = f64::from(quota);
        assert!(
            median >= share * q && mean >= 0.6 * q,
            "{what}: median {median}/s, mean {mean:.1}/s over {from}..={to} (quota {quota}/s); per second {:?}",
            self.seconds(from, to)
        );
    }
    fn seconds(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        (from..=to)
            .map(|s| self.per_second.get(&s).copied().unwrap_or_default())
            .collect()
    }
    fn throttled_in(&self, from: u64, to: u64) -> u64 {
        (from..=to)
            .map(|s| self.per_second.get(&s).map_or(0, |c| c.0 - c.1))
            .sum()
    }
}

/// A fresh simulator, config and topics.
async fn setup(
    tokens: &[(&str, u32)],
    sources: impl Fn(&intake::sim::SimHandle) -> String,
) -> (intake::sim::SimHandle, tempfile::TempDir, PathBuf) {
    let mut flags = vec![
        "--records".to_owned(),
        "3000".to_owned(),
        "--quota-window".to_owned(),
        "1s".to_owned(),
        "--quota-mode".to_owned(),
        "window".to_owned(),
    ];
    for (t, q) in tokens {
        flags.push("--token".into());
        flags.push(format!("{t}={q}"));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let sim = sim(&flags).await;
    let text = config_text(&sources(&sim));
    let cfg = intake::config::Config::from_toml(&text).unwrap();
    apply_topics(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &text);
    (sim, dir, path)
}

const Q: u32 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_many_processes() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for n in [1usize, 2, 4] {
        let (sim, dir, cfg) = setup(&[("demo", Q)], |sim| source(sim, "sim", "demo", Q, 4)).await;
        let procs: Vec<Fetch> = (0..n)
            .map(|i| Fetch::spawn(&cfg, &format!("p{i}"), dir.path()))
            .collect();
        wait_for(
            "every process assigned",
            Duration::from_secs(60),
            || procs.iter().all(|p| p.saw("quota partition assigned")),
            &procs,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let from = unix_now() + 1;
        tokio::time::sleep(Duration::from_secs(7)).await;
        let to = unix_now() - 1;
        let c = counts(&sim, "demo").await;
        drop(procs);
        let rate = c.accepted_rate(from, to);
        let share = c.throttled as f64 / c.requests.max(1) as f64;
        println!(
            "{n} process(es): {} requests, {} throttled ({:.2} %), {rate:.1} accepted/s over {from}..={to} = {:.0} % of Q={Q}, max {} requests in a second; per second {:?}",
            c.requests,
            c.throttled,
            share * 100.0,
            rate / f64::from(Q) * 100.0,
            c.max_total(),
            c.seconds(from, to)
        );
        assert!(
            c.max_total() <= u64::from(Q) + 1,
            "{n} processes: a second saw {} requests (Q = {Q})",
            c.max_total()
        );
        assert!(
            share < 0.01,
            "{n} processes: {} of {} requests throttled",
            c.throttled,
            c.requests
        );
        c.assert_paced(
            from,
            to,
            Q,
            0.85,
            &format!("{n} processes: too few accepted while there was work"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_owner_successor_resumes() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (sim, dir, cfg) = setup(&[("demo", Q)], |sim| source(sim, "sim", "demo", Q, 4)).await;
    let mut procs: Vec<Fetch> = (0..2)
        .map(|i| Fetch::spawn(&cfg, &format!("p{i}"), dir.path()))
        .collect();
    wait_for(
        "an owner of the token",
        Duration::from_secs(60),
        || procs.iter().any(|p| p.saw_field("streams", "4")),
        &procs,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let owner = procs
        .iter()
        .position(|p| p.saw_field("streams", "4"))
        .unwrap();
    let mut dead = procs.remove(owner);
    dead.p.kill();
    let killed_at = unix_now();
    let dead_id = dead.id.clone();
    drop(dead);
    let survivor = &procs[0];
    // A SIGKILLed member's partitions move after session.timeout.ms (10 s).
    wait_for(
        "the survivor restores the state",
        Duration::from_secs(40),
        || survivor.saw_field("from", &dead_id),
        &procs,
    )
    .await;
    let resumed_at = unix_now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let to = unix_now() - 1;
    let c = counts(&sim, "demo").await;
    let rate = c.accepted_rate(resumed_at + 1, to);
    println!(
        "killed {dead_id} at {killed_at}, successor restored its state at {resumed_at}: {} requests, {} throttled, max {} in a second, {rate:.1}/s after; per second {:?}",
        c.requests,
        c.throttled,
        c.max_total(),
        c.seconds(killed_at.saturating_sub(3), to)
    );
    assert!(
        c.max_total() <= u64::from(Q) + 1,
        "a second saw {} requests (Q = {Q})",
        c.max_total()
    );
    c.assert_paced(resumed_at + 1, to, Q, 0.8, "the successor");
    assert!(
        c.throttled * 100 < c.requests,
        "{} of {} throttled",
        c.throttled,
        c.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_token_waits_others_go_on() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (qa, qb) = (20u32, 10u32);
    let (sim, dir, cfg) = setup(&[("ta", qa), ("tb", qb)], |sim| {
        source(sim, "a", "ta", qa, 4) + &source(sim, "b", "tb", qb, 4)
    })
    .await;
    let procs = vec![Fetch::spawn(&cfg, "p0", dir.path())];
    wait_for(
        "assignment",
        Duration::from_secs(60),
        || procs[0].saw("quota partition assigned"),
        &procs,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let client = reqwest::Client::new();
    let cut = unix_now();
    let r = client
        .put(sim.url("/admin/quota/tb"))
        .json(&serde_json::json!({ "limit": 0 }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let back = unix_now();
    let r = client
        .put(sim.url("/admin/quota/tb"))
        .json(&serde_json::json!({ "limit": qb }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let end = unix_now() - 1;
    let (a, b) = (counts(&sim, "ta").await, counts(&sim, "tb").await);
    println!(
        "cut tb at {cut}, restored at {back}\nta: {:?}\ntb: {:?}",
        a.seconds(cut - 2, end),
        b.seconds(cut - 2, end)
    );
    // While tb is exhausted: nothing of it accepted, about one probe a second, ta at its pace.
    // The window after the cut may still carry requests paced before the 0 was seen.
    let b_during = b.seconds(cut + 2, back - 1);
    assert!(
        b_during.iter().all(|(_, acc)| *acc == 0),
        "tb accepted while at 0: {b_during:?}"
    );
    assert!(
        b_during.iter().all(|(tot, _)| *tot <= 3),
        "tb kept hammering while at 0: {b_during:?}"
    );
    a.assert_paced(cut + 1, back - 1, qa, 0.8, "ta while tb waited");
    // After tb's quota returns, its streams go on.
    let b_after = b.accepted_rate(back + 2, end);
    assert!(
        b_after >= 0.6 * f64::from(qb),
        "tb did not resume: {b_after:.1}/s"
    );
    assert!(a.max_total() <= u64::from(qa) + 1 && b.max_total() <= u64::from(qb) + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowered_quota_is_followed_from_headers() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let low = 5u32;
    let (sim, dir, cfg) = setup(&[("demo", Q)], |sim| source(sim, "sim", "demo", Q, 4)).await;
    let procs = vec![Fetch::spawn(&cfg, "p0", dir.path())];
    wait_for(
        "assignment",
        Duration::from_secs(60),
        || procs[0].saw("quota partition assigned"),
        &procs,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cut = unix_now();
    let r = reqwest::Client::new()
        .put(sim.url("/admin/quota/demo"))
        .json(&serde_json::json!({ "limit": low }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let end = unix_now() - 1;
    let c = counts(&sim, "demo").await;
    let after = c.seconds(cut + 2, end);
    // Requests already paced for the old limit inside the window of the cut may be refused.
    // The cut lands somewhere in [cut, cut + 1 + the PUT's latency], so the window after it
    // starts at cut + 2 at the latest; from there on intake paces by the new limit.
    let throttled = c.throttled_in(cut + 2, end);
    println!(
        "limit {Q} -> {low} at {cut}: per second {:?}; {throttled} throttled since",
        c.seconds(cut - 2, end)
    );
    // Within one window the pace is the new limit's: no second above it, few 429s, still busy.
    assert!(
        after.iter().all(|(tot, _)| *tot <= u64::from(low) + 1),
        "did not follow the lower limit: {after:?}"
    );
    assert!(
        throttled <= 2,
        "{throttled} requests throttled after the window of the cut"
    );
    let rate = c.accepted_rate(cut + 2, end);
    assert!(
        rate >= 0.7 * f64::from(low),
        "only {rate:.1}/s after the cut"
    );
}
