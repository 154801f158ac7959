//! Issue 8: central per-token quota, judged by the simulator's counters.
//!
//! Every test runs the real `intake fetch` binary as separate OS processes (long-running, each
//! with its own `INTAKE_INSTANCE_ID`, joining the fetch group) against an in-process simulator
//! whose quota is a fixed 1 s window aligned to unix seconds, so its per-second histogram is
//! exactly what the upstream saw. Requests per second are checked on `total` (every request
//! that reached the quota check, accepted or not).
//!
//! What is asserted is what the pacer guarantees (`src/quota/pacer.rs`): a request is admitted
//! only while fewer than the limit of the token's requests are in flight or ended within the
//! last second, so no second of the upstream can see more than the limit — whatever the
//! machine's stalls — and the upstream never has a reason to answer 429. So, over **every**
//! second of every run (start-up, rebalances, the kill and the hand-over included):
//!
//! - at most Q requests, and zero 429s;
//! - where the upstream changes the limit at run time, 429s only in the second of the change
//!   (requests already under way when it happened), and from the next second on at most the
//!   new limit (a token cut to 0: at most one probe a second, none accepted).
//!
//! The lower bounds (the pacer does not wait for nothing) are progress conditions with a
//! deadline: so many requests accepted within so many seconds, at half the quota or less, so a
//! second or two stalled on a busy machine cannot fail them, while a pacer that really waits
//! (on another token, on a dead owner) does. Each test first makes sure of what it relies on
//! (the tokens are busy, the killed process owned the token and spent its quota) and fails
//! with a message saying so if not.
//!
//! - `one_token_many_processes`: 1, 2 and 4 processes over 4 streams of one token.
//! - `killed_owner_successor_resumes`: SIGKILL the owner; the survivor restores its state.
//! - `exhausted_token_waits_others_go_on`: two tokens, one cut to 0 at run time.
//! - `lowered_quota_is_followed_from_headers`: a limit cut at run time, learned from headers.
//!
//! The tests run one at a time (a lock), since they measure rates on a small shared machine.
//! The per-second figures are printed.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::proc::{self, Proc};
use support::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const STYLES: [(&str, &str); 4] = [
    ("cursor", "customers"),
    ("link", "orders"),
    ("page", "events"),
    ("offset", "customers"),
];

/// A source of `n` streams (over the simulator's styles) with the given token and quota.
fn source(sim: &intake::sim::SimHandle, name: &str, token: &str, quota: u32, n: usize) -> String {
    let mut s = bearer_source_head(
        name,
        sim.addr,
        token,
        &format!("quota = {{ requests = {quota}, per = \"1s\" }}\nmax_retries = 20"),
    );
    for i in 0..n {
        let (style, stream) = STYLES[i % STYLES.len()];
        s.push_str(&sim_stream(
            &format!("s{i}"),
            &format!("/v1/styles/{style}/{stream}"),
            style,
            10,
            "poll_interval = \"1s\"",
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

/// The last lines of every process's log, each under its id.
fn logs(procs: &[Fetch]) -> String {
    let logs: Vec<String> = procs
        .iter()
        .map(|p| format!("--- {}:\n{}", p.id, p.tail(20)))
        .collect();
    logs.join("\n")
}

/// Spawns `n` fetch processes `p0`, `p1`, … and waits (up to 60 s, failing the test with
/// `what`) until each has been assigned a quota partition.
async fn spawn_assigned(cfg: &Path, dir: &Path, n: usize, what: &str) -> Vec<Fetch> {
    let procs: Vec<Fetch> = (0..n)
        .map(|i| Fetch::spawn(cfg, &format!("p{i}"), dir))
        .collect();
    wait_for(
        what,
        Duration::from_secs(60),
        || procs.iter().all(|p| p.saw("quota partition assigned")),
        &procs,
    )
    .await;
    procs
}

/// Sets the simulator's quota of `token` to `limit` requests a second, through `client`.
async fn set_quota(
    client: &reqwest::Client,
    sim: &intake::sim::SimHandle,
    token: &str,
    limit: u32,
) {
    let r = client
        .put(sim.url(&format!("/admin/quota/{token}")))
        .json(&serde_json::json!({ "limit": limit }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool, procs: &[Fetch]) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", logs(procs));
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
    /// Accepted requests in the seconds `from..`.
    fn accepted_since(&self, from: u64) -> u64 {
        self.per_second.range(from..).map(|(_, c)| c.1).sum()
    }
    /// Accepted requests of one second.
    fn accepted_at(&self, second: u64) -> u64 {
        self.per_second.get(&second).map_or(0, |c| c.1)
    }
    /// (total, accepted) of the seconds `from..=to` (missing seconds count 0).
    fn seconds(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        (from..=to)
            .map(|s| self.per_second.get(&s).copied().unwrap_or_default())
            .collect()
    }
    /// Every recorded second: (second, total, accepted).
    fn all(&self) -> Vec<(u64, u64, u64)> {
        self.per_second
            .iter()
            .map(|(s, (t, a))| (*s, *t, *a))
            .collect()
    }
    /// Seconds with a 429: (second, how many).
    fn throttled_seconds(&self) -> Vec<(u64, u64)> {
        self.per_second
            .iter()
            .filter(|(_, (t, a))| t > a)
            .map(|(s, (t, a))| (*s, t - a))
            .collect()
    }
    /// The guarantee: no second over `quota`, no 429 at all.
    fn assert_within(&self, quota: u32, what: &str) {
        assert!(
            self.max_total() <= u64::from(quota),
            "{what}: a second saw {} requests (quota {quota}/s); per second {:?}",
            self.max_total(),
            self.all()
        );
        assert_eq!(
            self.throttled,
            0,
            "{what}: {} of {} requests answered 429, in seconds {:?}",
            self.throttled,
            self.requests,
            self.throttled_seconds()
        );
    }
}

/// Waits until `token` has `n` accepted requests in the seconds `from..`, within `timeout`;
/// panics with the figures and the processes' logs if not. Returns the counters then.
async fn wait_accepted(
    sim: &intake::sim::SimHandle,
    token: &str,
    from: u64,
    n: u64,
    timeout: Duration,
    what: &str,
    procs: &[Fetch],
) -> Counts {
    let deadline = Instant::now() + timeout;
    loop {
        let c = counts(sim, token).await;
        if c.accepted_since(from) >= n {
            return c;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: {token} had {} accepted requests since {from}, {n} wanted within {timeout:?}; per second {:?}\n{}",
                c.accepted_since(from),
                c.seconds(from, unix_now()),
                logs(procs)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until a whole second of `token` had at least half its `quota` accepted (the token is
/// busy), within 30 s.
async fn wait_busy(sim: &intake::sim::SimHandle, token: &str, quota: u32, procs: &[Fetch]) -> u64 {
    let n = u64::from(quota) / 2;
    let timeout = Duration::from_secs(30);
    let deadline = Instant::now() + timeout;
    loop {
        let last = unix_now() - 1;
        let c = counts(sim, token).await;
        if c.accepted_at(last) >= n {
            return last;
        }
        if Instant::now() > deadline {
            panic!(
                "precondition: {token} never had {n} accepted requests in a second within {timeout:?}; per second {:?}\n{}",
                c.all(),
                logs(procs)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sleeps until the unix second `s` has begun.
async fn until_second(s: u64) {
    while unix_now() < s {
        tokio::time::sleep(Duration::from_millis(50)).await;
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

/// The latest committed quota state of the token id `token` (intake's id: the source name
/// unless `quota.token_id` says otherwise) in `intake.quota`.
fn stored_quota(cfg: &Path, token: &str) -> Option<intake::quota::QuotaRecord> {
    let text = std::fs::read_to_string(cfg).unwrap();
    let cfg = intake::config::Config::from_toml(&text).unwrap();
    let topic = intake::topics::TopicNames::from_config(&cfg).quota();
    read_all(&topic, "read_committed")
        .into_iter()
        .filter(|r| r.key_str() == token)
        .max_by_key(|r| r.offset)
        .and_then(|r| serde_json::from_slice(r.value.as_deref()?).ok())
}

const Q: u32 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_many_processes() {
    let _serial = SERIAL.lock().await;
    for n in [1usize, 2, 4] {
        let (sim, dir, cfg) = setup(&[("demo", Q)], |sim| source(sim, "sim", "demo", Q, 4)).await;
        let procs = spawn_assigned(&cfg, dir.path(), n, "every process assigned").await;
        // Progress: 6 s worth of half the quota within 6 s plus 6 s of slack.
        let from = unix_now() + 1;
        until_second(from).await;
        let started = Instant::now();
        wait_accepted(
            &sim,
            "demo",
            from,
            6 * u64::from(Q) / 2,
            Duration::from_secs(12),
            &format!("{n} processes: too few accepted while there was work"),
            &procs,
        )
        .await;
        let took = started.elapsed();
        // Measure at least 6 whole seconds, for the figures and the bound.
        until_second(from + 6).await;
        let to = unix_now() - 1;
        let c = counts(&sim, "demo").await;
        drop(procs);
        let rate = c.accepted_since(from) as f64 / (to - from + 1) as f64;
        println!(
            "{n} process(es): {} requests, {} throttled, {rate:.1} accepted/s over {from}..={to} = {:.0} % of Q={Q} (half the quota's worth took {took:.1?}), max {} requests in a second; per second from the start {:?}",
            c.requests,
            c.throttled,
            rate / f64::from(Q) * 100.0,
            c.max_total(),
            c.all().iter().map(|(_, t, _)| *t).collect::<Vec<_>>()
        );
        c.assert_within(Q, &format!("{n} processes"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_owner_successor_resumes() {
    let _serial = SERIAL.lock().await;
    let (sim, dir, cfg) = setup(&[("demo", Q)], |sim| source(sim, "sim", "demo", Q, 4)).await;
    let mut procs = spawn_assigned(&cfg, dir.path(), 2, "both processes assigned").await;
    // Preconditions, made sure of: the token is busy, and the process we kill owns it (the
    // latest committed state in intake.quota is its own and fresh: only the owner of the
    // partition can commit there, the writer being fenced by each new owner).
    let (victim, busy_at) = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let busy = wait_busy(&sim, "demo", Q, &procs).await;
            let stored = tokio::task::spawn_blocking({
                let cfg = cfg.clone();
                move || stored_quota(&cfg, "sim")
            })
            .await
            .unwrap();
            let now_ms = i64::try_from(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap();
            let owner = stored.as_ref().and_then(|r| {
                (now_ms - r.updated_at < 2500)
                    .then(|| procs.iter().position(|p| p.id == r.owner))
                    .flatten()
            });
            match owner {
                Some(o) if procs[o].saw_field("streams", "4") => break (o, busy),
                _ if Instant::now() > deadline => panic!(
                    "precondition: no process surely owns the token: stored state {stored:?}"
                ),
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    };
    let mut dead = procs.remove(victim);
    dead.p.kill();
    let killed_at = unix_now();
    let dead_id = dead.id.clone();
    drop(dead);
    let survivor = &procs[0];
    let before = counts(&sim, "demo").await;
    assert!(
        before.accepted_at(busy_at) >= u64::from(Q) / 2,
        "precondition: {dead_id} spent the quota before the kill"
    );
    // A SIGKILLed member's partitions move after session.timeout.ms (10 s).
    wait_for(
        "the survivor restores the state",
        Duration::from_secs(40),
        || survivor.saw_field("from", &dead_id),
        &procs,
    )
    .await;
    let restored_at = unix_now();
    wait_accepted(
        &sim,
        "demo",
        killed_at + 1,
        3 * u64::from(Q),
        Duration::from_secs(15),
        "the successor",
        &procs,
    )
    .await;
    let to = unix_now();
    let c = counts(&sim, "demo").await;
    // The first second after the kill with a request is the successor's (requests the
    // victim had under way reach the upstream within the second after the kill at most).
    let first = (killed_at + 2..=to)
        .find(|s| c.per_second.get(s).is_some_and(|x| x.0 > 0))
        .unwrap();
    println!(
        "killed {dead_id} at {killed_at} (busy at {busy_at}: {} accepted), successor restored its state by {restored_at}, first request after the kill at {first}: {} requests, {} throttled, max {} in a second; per second {:?}",
        before.accepted_at(busy_at),
        c.requests,
        c.throttled,
        c.max_total(),
        c.seconds(killed_at.saturating_sub(3), to)
    );
    // Nothing was sent between the kill and the successor's start: the victim was the only
    // sender (had the survivor owned the token, it would have gone on at once), and a
    // successor starts only once the victim's group session expired.
    assert!(
        first >= killed_at + 5,
        "requests {} s after the kill, before the successor could own the token: {:?}",
        first - killed_at,
        c.seconds(killed_at, to)
    );
    c.assert_within(Q, "across the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_token_waits_others_go_on() {
    let _serial = SERIAL.lock().await;
    let (qa, qb) = (20u32, 10u32);
    let (sim, dir, cfg) = setup(&[("ta", qa), ("tb", qb)], |sim| {
        source(sim, "a", "ta", qa, 4) + &source(sim, "b", "tb", qb, 4)
    })
    .await;
    let procs = spawn_assigned(&cfg, dir.path(), 1, "assignment").await;
    // Precondition: both tokens busy.
    wait_busy(&sim, "ta", qa, &procs).await;
    wait_busy(&sim, "tb", qb, &procs).await;
    let client = reqwest::Client::new();
    let cut_from = unix_now();
    set_quota(&client, &sim, "tb", 0).await;
    // The cut happened in a second of cut_from..=cut_to.
    let cut_to = unix_now();
    // tb stays at 0 until ta made progress meanwhile (half its quota over 5 s, within 10 s)
    // and for at least 5 whole seconds after the second of the cut.
    let a_from = cut_to + 1;
    wait_accepted(
        &sim,
        "ta",
        a_from,
        5 * u64::from(qa) / 2,
        Duration::from_secs(12),
        "ta while tb was exhausted",
        &procs,
    )
    .await;
    until_second(a_from + 5).await;
    let back_from = unix_now();
    set_quota(&client, &sim, "tb", qb).await;
    let back_to = unix_now();
    // After tb's quota returns, its streams go on.
    wait_accepted(
        &sim,
        "tb",
        back_to + 1,
        2 * u64::from(qb),
        Duration::from_secs(10),
        "tb after its quota returned",
        &procs,
    )
    .await;
    let end = unix_now();
    let (a, b) = (counts(&sim, "ta").await, counts(&sim, "tb").await);
    println!(
        "cut tb in {cut_from}..={cut_to}, restored in {back_from}..={back_to}\nta: {:?}\ntb: {:?}\nta from the start: {:?}\ntb from the start: {:?}",
        a.seconds(cut_from - 2, end),
        b.seconds(cut_from - 2, end),
        a.all().iter().map(|(_, t, _)| *t).collect::<Vec<_>>(),
        b.all().iter().map(|(_, t, _)| *t).collect::<Vec<_>>(),
    );
    a.assert_within(qa, "ta");
    assert!(
        b.max_total() <= u64::from(qb),
        "tb: a second saw {} requests (quota {qb}/s): {:?}",
        b.max_total(),
        b.all()
    );
    // While tb is at 0: nothing accepted after the cut's second; from the second after the
    // next, at most one probe a second (the bound at a limit of 0). The second right after
    // the cut's may also see the requests each stream had under way when the 0 was learned.
    let b_during = b.seconds(cut_to + 1, back_from - 1);
    assert!(
        b_during.iter().all(|(_, acc)| *acc == 0),
        "tb accepted while at 0, from {}: {b_during:?}",
        cut_to + 1
    );
    assert!(
        b_during.iter().skip(1).all(|(tot, _)| *tot <= 1),
        "tb sent more than one probe a second while at 0, from {}: {b_during:?}",
        cut_to + 2
    );
    // 429s only while the upstream said 0: none before the cut, none once it was back.
    let outside: Vec<(u64, u64)> = b
        .throttled_seconds()
        .into_iter()
        .filter(|(s, _)| *s < cut_from || *s > back_to)
        .collect();
    assert!(
        outside.is_empty(),
        "tb answered 429 outside its time at 0: {outside:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowered_quota_is_followed_from_headers() {
    let _serial = SERIAL.lock().await;
    // At least the number of streams: each stream may have one request under way, sent
    // before the new limit was known, that reaches the upstream after the cut.
    let low = 5u32;
    let (sim, dir, cfg) = setup(&[("demo", Q)], |sim| source(sim, "sim", "demo", Q, 4)).await;
    let procs = spawn_assigned(&cfg, dir.path(), 1, "assignment").await;
    // Precondition: the token is busy at the old limit.
    wait_busy(&sim, "demo", Q, &procs).await;
    let cut_from = unix_now();
    set_quota(&reqwest::Client::new(), &sim, "demo", low).await;
    let cut_to = unix_now();
    // Progress at the new limit: half of it over 6 s, within 12 s, and 6 whole seconds.
    let from = cut_to + 1;
    wait_accepted(
        &sim,
        "demo",
        from,
        6 * u64::from(low) / 2,
        Duration::from_secs(12),
        "after the cut",
        &procs,
    )
    .await;
    until_second(from + 6).await;
    let end = unix_now() - 1;
    let c = counts(&sim, "demo").await;
    let after = c.seconds(from, end);
    println!(
        "limit {Q} -> {low} in {cut_from}..={cut_to}: per second {:?}; 429s in seconds {:?}",
        c.seconds(cut_from - 2, end),
        c.throttled_seconds()
    );
    assert!(
        c.max_total() <= u64::from(Q),
        "a second saw {} requests (Q = {Q}): {:?}",
        c.max_total(),
        c.all()
    );
    // From the second after the cut's: at most the new limit, and so no 429.
    assert!(
        after.iter().all(|(tot, _)| *tot <= u64::from(low)),
        "did not follow the lower limit from {from}: {after:?}"
    );
    // 429s only in the second of the cut (requests under way when it happened).
    let outside: Vec<(u64, u64)> = c
        .throttled_seconds()
        .into_iter()
        .filter(|(s, _)| *s < cut_from || *s > cut_to)
        .collect();
    assert!(
        outside.is_empty(),
        "429s outside the second of the cut: {outside:?}"
    );
}
