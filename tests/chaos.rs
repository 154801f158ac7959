//! Issue 10, chaos: the whole pipeline as separate processes — two per group: `intake fetch`,
//! `intake validate`, `intake dedup`, `intake serve` — against the simulator with drift,
//! backdated updates, deletes, signed webhooks (shuffled, duplicated, retried), large records
//! and 5xx faults on, on a cluster of three KRaft brokers (replication factor 3,
//! `min.insync.replicas` 2; `scripts/stack cluster`). While the simulator writes, random stage
//! processes are SIGKILLed (the four stages in turn, restarted after a random pause with the
//! same instance id; the victim is a process of that stage seen with a transaction of its own
//! open on its `/metrics` gauge `intake_transaction_open`, every commit held 300 ms by the
//! debug-only fault `txn_hold`, and Kafka's own `kafka-transactions.sh list` says after each
//! kill whether that transaction was still open: at least half must have been), a broker is SIGKILLed and restarted (`CHAOS_BROKER_KILLS`, in turn the
//! leader of landing's partition 0 and the transaction coordinator of a fetch stream's
//! transactional id, each found with Kafka's own tools at that moment), the cluster gets a
//! rolling restart, the registry is restarted once, a validate process is made a zombie
//! (SIGSTOPped until its group is stable without it, then SIGCONTed), and the network between
//! intake and the brokers and registry fails through Toxiproxy (`scripts/stack proxy`): a black
//! hole to every broker longer than the transaction timeout, slow brokers, a trickle, a
//! black hole to the registry and a slow registry; and the registry answers 503 for a while (nginx in front of it,
//! `scripts/stack registry-fault`). As the black hole to every broker starts, one process of
//! each stage is restarted into it: it must wait for the brokers, not end (the fault outlasts
//! every start-up deadline of its own). Batch jobs are submitted through the balancer all along
//! (each retried under its idempotency key until a serve process accepts it); at the end each
//! job's counts are exactly its records, all valid, and the jobs' records are each once in
//! their valid topic.
//!
//! The simulator's writer starts once the backfill completed (the truth counts a drifted id
//! deleted before intake ever read it, which no DLQ can hold). A `read_committed` judge reads
//! the valid, curated and DLQ topics for the whole run and names any record committed twice or
//! curated version going backwards. Then the writer pauses, every webhook is delivered, fetch
//! is stopped and the ledger is judged before anything can repair it: every landed record in
//! exactly one valid topic or the DLQ, curated = the latest valid version per key, every
//! acknowledged webhook landed by event id. Then fetch restarts and, once every stream
//! completed a sync (a full one with delete detection for customers and orders) that started
//! after the pause, the run is compared exactly: the curated topics against the simulator's
//! truth (same keys, same versions, deleted keys tombstoned), the DLQ against the drifted ids
//! (each with its kind, no other kind), nothing committed twice anywhere, no stage process that
//! ended by itself, and the simulator's per-token counters against the quota (not one 429). It
//! prints kills survived, broker kills and whom they hit, records compared, lost, doubled,
//! stale and wrong.
//!
//! Brokers are killed, so the test runs on a PRIVATE stack (`scripts/stack` with its own
//! `INTAKE_STACK_DIR` under `target/`, the cluster's nodes on 19092, 19094 and 19096 with their
//! controllers one above and their own listeners behind Toxiproxy (API on 19112), the registry
//! on 18081/18091 and through Toxiproxy on 18084), which it starts (idempotent) and stops
//! at the end (`CHAOS_KEEP_STACK=1` keeps it). `CHAOS_CLUSTER=0` runs the older single-broker
//! form instead (the broker restarted with SIGTERM: a full outage each time).
//!
//! The short form (the default, run by `scripts/test`) makes 12 kills; `scripts/chaos` runs the
//! long form. Settings (environment): `CHAOS_KILLS` (12), `CHAOS_CLUSTER` (1),
//! `CHAOS_ZOMBIES` (1), `CHAOS_NET_FAULTS` (6, the kinds in turn; cluster only),
//! `CHAOS_BROKER_KILLS` (2), `CHAOS_BROKER_DOWN_MS` (`3000-10000`), `CHAOS_BROKER_RESTARTS` (1
//! rolling restart; 2 restarts of the single broker), `CHAOS_REGISTRY_RESTARTS` (1),
//! `CHAOS_GAP_MS` (`1000-3000`, pause between actions), `CHAOS_DOWN_MS` (`200-3000`, how long
//! a killed process stays down), `CHAOS_RECORDS` (400 per stream), `CHAOS_WRITE_RATE` (5
//! writes/s), `CHAOS_QUOTA` (20 requests/s), `CHAOS_SEED` (replays one schedule),
//! `CHAOS_KAFKA_PORT` (19092: the first node's port), `CHAOS_REGISTRY_PORT` (18081; management
//! on +10), `CHAOS_STACK_DIR` (`target/stack-chaos`), `CHAOS_KEEP_LOGS=1` (keep the process
//! logs after a pass).

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use support::e2e::{self, Knobs};
use support::proc::{self, Proc};
use support::*;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        Err(_) => default,
    }
}

fn env_range(name: &str, default: (u64, u64)) -> (u64, u64) {
    match std::env::var(name) {
        Ok(v) => {
            let (a, b) = v
                .split_once('-')
                .unwrap_or_else(|| panic!("{name}={v}: write MIN-MAX"));
            let (a, b) = (a.parse().unwrap(), b.parse().unwrap());
            assert!(a <= b, "{name}={v}: MIN > MAX");
            (a, b)
        }
        Err(_) => default,
    }
}

/// The run's settings, from the environment.
#[derive(Debug, Clone)]
struct Settings {
    kills: usize,
    /// Three KRaft brokers (`scripts/stack cluster`) instead of one.
    cluster: bool,
    /// SIGKILLs of a broker (cluster only): the leader of a landing partition and the
    /// transaction coordinator of a fetch stream's transactional id, in turn.
    broker_kills: usize,
    /// How long a killed broker stays down.
    broker_down_ms: (u64, u64),
    /// Clean restarts of the broker (the single broker: a full outage) or rolling restarts
    /// of the cluster.
    broker_restarts: usize,
    registry_restarts: usize,
    /// Zombies: a validate or dedup process (in turn) SIGSTOPped until its group has moved on
    /// without it, then SIGCONTed.
    zombies: usize,
    /// Network faults (cluster only), in turn: a black hole between intake and every broker
    /// longer than the transaction timeout, the registry answering 503, slow brokers, a black
    /// hole between intake and the registry, a trickle to the brokers, and a slow registry.
    net_faults: usize,
    gap_ms: (u64, u64),
    down_ms: (u64, u64),
    records: u32,
    write_rate: f64,
    quota: u32,
    seed: u64,
    kafka_port: u16,
    registry_port: u16,
    stack_dir: PathBuf,
    keep_stack: bool,
    keep_logs: bool,
}

impl Settings {
    fn from_env() -> Self {
        let cluster = env_or("CHAOS_CLUSTER", 1u8) == 1;
        Self {
            kills: env_or("CHAOS_KILLS", 12),
            cluster,
            broker_kills: env_or("CHAOS_BROKER_KILLS", 2),
            broker_down_ms: env_range("CHAOS_BROKER_DOWN_MS", (3000, 10000)),
            broker_restarts: env_or("CHAOS_BROKER_RESTARTS", if cluster { 1 } else { 2 }),
            registry_restarts: env_or("CHAOS_REGISTRY_RESTARTS", 1),
            zombies: env_or("CHAOS_ZOMBIES", 1),
            net_faults: if cluster {
                env_or("CHAOS_NET_FAULTS", NET_FAULTS.len())
            } else {
                0
            },
            gap_ms: env_range("CHAOS_GAP_MS", (1000, 3000)),
            down_ms: env_range("CHAOS_DOWN_MS", (200, 3000)),
            records: env_or("CHAOS_RECORDS", 400),
            write_rate: env_or("CHAOS_WRITE_RATE", 5.0),
            quota: env_or("CHAOS_QUOTA", 20),
            seed: env_or("CHAOS_SEED", rand::random()),
            kafka_port: env_or("CHAOS_KAFKA_PORT", 19092),
            registry_port: env_or("CHAOS_REGISTRY_PORT", 18081),
            stack_dir: std::env::var("CHAOS_STACK_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root().join("target/stack-chaos")),
            keep_stack: env_or("CHAOS_KEEP_STACK", 0u8) == 1,
            keep_logs: env_or("CHAOS_KEEP_LOGS", 0u8) == 1,
        }
    }
}

/// The private stack, driven through `scripts/stack`.
#[derive(Clone)]
struct Stack {
    env: Vec<(&'static str, String)>,
    log: PathBuf,
}

impl Stack {
    fn new(s: &Settings, log: PathBuf) -> Self {
        Self {
            env: vec![
                ("INTAKE_STACK_DIR", s.stack_dir.display().to_string()),
                ("KAFKA_PORT", s.kafka_port.to_string()),
                ("KAFKA_CONTROLLER_PORT", (s.kafka_port + 1).to_string()),
                ("CLUSTER_PORT", s.kafka_port.to_string()),
                (
                    "CLUSTER_PROXY",
                    if s.cluster { "1" } else { "0" }.to_owned(),
                ),
                ("TOXIPROXY_PORT", (s.kafka_port + 20).to_string()),
                ("REGISTRY_PROXY_PORT", (s.registry_port + 3).to_string()),
                ("REGISTRY_PORT", s.registry_port.to_string()),
                ("REGISTRY_MGMT_PORT", (s.registry_port + 10).to_string()),
            ],
            log,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(root().join("scripts/stack"));
        c.args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null());
        c
    }

    fn log(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap()
    }

    /// Runs `scripts/stack ARGS...`; its output goes to the stack log.
    fn run(&self, args: &[&str]) -> Duration {
        self.run_while(args, || {})
    }

    /// [`Stack::run`], calling `meanwhile` every 50 ms until it ends (the stage processes'
    /// upkeep: a killed process comes back on time while a broker restarts).
    fn run_while(&self, args: &[&str], mut meanwhile: impl FnMut()) -> Duration {
        let started = Instant::now();
        let out = self.log();
        let mut child = self
            .command(args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("scripts/stack runs");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            meanwhile();
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "scripts/stack {args:?} failed ({status})\n{}",
            proc::tail(&self.log, 30)
        );
        started.elapsed()
    }

    /// The standard output of `scripts/stack ARGS...`, trimmed (its log lines go to the log).
    fn output(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .stderr(self.log())
            .output()
            .expect("scripts/stack runs");
        assert!(
            out.status.success(),
            "scripts/stack {args:?} failed ({})\n{}",
            out.status,
            proc::tail(&self.log, 30)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

/// Stops the private stack when dropped (also when the test fails), unless kept.
/// Stops the private stack at the end; unless it is kept, deletes it too (`scripts/stack clean`):
/// every run starts from empty brokers, so a node restarted mid-run loads this run's logs only.
struct StopOnDrop(Stack, bool);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.1 {
            let _ = self
                .0
                .command(&["clean"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// One stage process, restarted with the same instance id (so it fences its predecessor).
struct Slot {
    stage: &'static str,
    instance: String,
    /// Its own config: the stage's, with its own `telemetry.metrics_addr` on `metrics_port`.
    config: PathBuf,
    metrics_port: u16,
    log: PathBuf,
    proc: Option<Proc>,
    /// When a killed process comes back.
    back_at: Option<Instant>,
    lives: usize,
    kills: usize,
}

impl Slot {
    fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts the process with the deliberate faults every chaos process runs with
    /// ([`FAULTS`]) and `extra` ones.
    fn start_with(&mut self, extra: &[&str]) {
        self.lives += 1;
        self.back_at = None;
        let faults = std::iter::once(FAULTS)
            .chain(extra.iter().copied())
            .collect::<Vec<_>>()
            .join(",");
        self.proc = Some(
            proc::intake(&[self.stage], &self.log)
                .config(&self.config)
                .env("INTAKE_INSTANCE_ID", &self.instance)
                .env(intake::faults::ENV, faults)
                .spawn(),
        );
    }

    /// The transactional ids this process has open now that are its own (a fetch process:
    /// any fetch stream's), from its `intake_transaction_open` gauge; None when its
    /// `/metrics` does not answer.
    fn open_transactions(&self, targets: &Targets) -> Option<Vec<String>> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = tokio::runtime::Handle::current().block_on(async {
            reqwest::Client::builder()
                .timeout(Duration::from_millis(500))
                .build()
                .ok()?
                .get(url)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()
        })?;
        Some(
            text.lines()
                .filter_map(|l| l.strip_prefix("intake_transaction_open{"))
                .filter_map(|l| {
                    let (labels, value) = l.rsplit_once(' ')?;
                    let id = labels
                        .split_once("transactional_id=\"")?
                        .1
                        .split_once('"')?
                        .0;
                    (value.parse::<f64>().ok()? > 0.0 && targets.owned_by(self, id))
                        .then(|| id.to_owned())
                })
                .collect(),
        )
    }
}

/// The deliberate faults every chaos process runs with (debug builds): each commit waits
/// 300 ms with its records on the brokers, as under a loaded broker, so a kill made while a
/// process's `intake_transaction_open` shows its transaction open meets that transaction still
/// open at its coordinator (which Kafka's own tool then confirms, kill by kill).
const FAULTS: &str = "txn_hold=1";

/// What a process that ended by itself is reported with: instance, status and the last lines
/// of its log.
fn ended(instance: &str, p: &Proc, status: std::process::ExitStatus) -> (String, String, String) {
    (instance.to_owned(), status.to_string(), p.tail(ENDED_TAIL))
}

/// What happened during the chaos phase.
#[derive(Debug, Default)]
struct Chaos {
    kills: usize,
    kills_by_stage: std::collections::BTreeMap<&'static str, usize>,
    /// Kills after which Kafka (`TransactionsCommand list`) showed the victim's transaction
    /// still open (`Ongoing`): it died mid-transaction. Cluster runs only.
    kills_in_txn: std::collections::BTreeMap<&'static str, usize>,
    broker_restarts: Vec<Duration>,
    broker_kills: Vec<BrokerKill>,
    registry_restarts: Vec<Duration>,
    /// Zombies: (instance, how long its group took to move on without it).
    zombies: Vec<(String, Duration)>,
    /// Network faults, as logged: what, and for how long.
    net_faults: Vec<String>,
    /// Processes restarted inside the black hole to every broker (see [`cold_starts`]).
    cold_starts: Vec<String>,
    /// Processes that ended by themselves: (instance, status, log tail).
    ended: Vec<(String, String, String)>,
}

/// How many of its last log lines a process that ended by itself is reported with: its error
/// and what led to it, short enough to be read whole in a CI log.
const ENDED_TAIL: usize = 8;

/// Restarts killed processes whose pause is over, and notes (and restarts) processes that
/// ended by themselves.
fn upkeep(slots: &mut [Slot], chaos: &mut Chaos) {
    for s in slots.iter_mut() {
        if let Some(p) = s.proc.as_mut()
            && let Some(status) = p.try_wait()
        {
            eprintln!("chaos: {} ended by itself: {status}", s.instance);
            chaos.ended.push(ended(&s.instance, p, status));
            s.proc = None;
            s.back_at = Some(Instant::now());
        }
        if s.proc.is_none() && s.back_at.is_some_and(|t| Instant::now() >= t) {
            s.start();
        }
    }
}

fn sleep_with_upkeep(d: Duration, slots: &mut [Slot], chaos: &mut Chaos) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        upkeep(slots, chaos);
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    upkeep(slots, chaos);
}

/// One broker SIGKILL: whom it hit, and how long the cluster took to be whole again.
#[derive(Debug)]
struct BrokerKill {
    /// `leader of <topic>-<partition>` or `coordinator of <transactional id>`.
    target: String,
    node: String,
    down: Duration,
    /// From the restart to every partition fully replicated again.
    back: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Kill,
    KillBroker,
    RestartBroker,
    RestartRegistry,
    Zombie,
    NetFault,
}

/// The kills, with the broker kills, broker restarts and registry restarts (in turn, broker
/// first) spread evenly between them.
fn plan(s: &Settings) -> Vec<Action> {
    let mut special = Vec::new();
    // How many of each are left, taken in turn in this order.
    let mut left = [
        (s.net_faults, Action::NetFault),
        (s.zombies, Action::Zombie),
        (
            if s.cluster { s.broker_kills } else { 0 },
            Action::KillBroker,
        ),
        (s.broker_restarts, Action::RestartBroker),
        (s.registry_restarts, Action::RestartRegistry),
    ];
    while left.iter().any(|(count, _)| *count > 0) {
        for (count, action) in &mut left {
            if *count > 0 {
                special.push(*action);
                *count -= 1;
            }
        }
    }
    let mut out = vec![Action::Kill; s.kills];
    let n = special.len();
    for (i, a) in special.into_iter().enumerate().rev() {
        out.insert((s.kills * (i + 1)) / (n + 1), a);
    }
    out
}

/// The stages whose processes are killed, two processes each.
const STAGES: [&str; 4] = ["fetch", "validate", "dedup", "serve"];

/// What a broker kill aims at: a landing partition's leader, and the transaction coordinator
/// of a fetch stream (its transactional id).
struct Targets {
    /// Toxiproxy's API.
    toxiproxy: String,
    landing: String,
    fetch_txn: String,
    /// The group prefix: the stages' transactional ids start with it.
    group_prefix: String,
}

impl Targets {
    /// Whether `txid` is one of the victim's transactional ids: its own (validate, dedup,
    /// serve), or any fetch stream's for a fetch process (the token's owner holds them all).
    fn owned_by(&self, slot: &Slot, txid: &str) -> bool {
        let gp = &self.group_prefix;
        match slot.stage {
            "fetch" => txid.starts_with(&format!("{gp}-fetch-")),
            stage => txid == format!("{gp}-{stage}-{}", slot.instance),
        }
    }
}

/// The chaos phase (blocking): every action after a random pause.
fn chaos(
    s: &Settings,
    stack: &Stack,
    targets: &Targets,
    slots: &mut [Slot],
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Chaos {
    let mut c = Chaos::default();
    let mut turns: Vec<&'static str> = Vec::new();
    for action in plan(s) {
        let gap = Duration::from_millis(rng.random_range(s.gap_ms.0..=s.gap_ms.1));
        sleep_with_upkeep(gap, slots, &mut c);
        match action {
            Action::Kill => {
                // Stages take turns (each round of four in a random order), so every stage is
                // killed as often as the others, whatever the seed; the victim is a running
                // process of that stage (the first stage in turn that has one).
                if turns.is_empty() {
                    turns = STAGES.to_vec();
                    turns.shuffle(rng);
                }
                let stage = turns.remove(0);
                let i = match await_open_transaction(stage, targets, slots, &mut c) {
                    Some(i) => i,
                    None => {
                        let running: Vec<usize> = (0..slots.len())
                            .filter(|i| slots[*i].proc.is_some())
                            .collect();
                        let of_stage: Vec<usize> = running
                            .iter()
                            .copied()
                            .filter(|i| slots[*i].stage == stage)
                            .collect();
                        let pool = if of_stage.is_empty() {
                            &running
                        } else {
                            &of_stage
                        };
                        pool[rng.random_range(0..pool.len())]
                    }
                };
                let slot = &mut slots[i];
                let mut p = slot.proc.take().unwrap();
                if let Some(status) = p.try_wait() {
                    c.ended.push(ended(&slot.instance, &p, status));
                } else {
                    p.kill();
                    c.kills += 1;
                    slot.kills += 1;
                    *c.kills_by_stage.entry(slot.stage).or_default() += 1;
                    if s.cluster {
                        // Asked before the victim comes back (its successor fences and
                        // aborts what it left open).
                        let listed = stack.output(&["cluster", "transactions"]);
                        let states: Vec<(&str, &str)> = listed
                            .lines()
                            .filter_map(|l| l.split_once(' '))
                            .filter(|(id, _)| targets.owned_by(slot, id))
                            .collect();
                        let open = states.iter().any(|(_, state)| *state == "Ongoing");
                        if open {
                            *c.kills_in_txn.entry(slot.stage).or_default() += 1;
                        }
                        eprintln!(
                            "chaos: {} died {} (Kafka: {states:?})",
                            slot.instance,
                            if open {
                                "with its transaction open"
                            } else {
                                "between transactions"
                            }
                        );
                    }
                }
                let down = rng.random_range(s.down_ms.0..=s.down_ms.1);
                slot.back_at = Some(Instant::now() + Duration::from_millis(down));
                eprintln!(
                    "chaos: SIGKILL {} (life {}), back in {down} ms",
                    slot.instance, slot.lives
                );
            }
            Action::KillBroker => {
                let (target, node) = if c.broker_kills.len() % 2 == 0 {
                    let node = stack.output(&["cluster", "leader", &targets.landing, "0"]);
                    (format!("leader of {}-0", targets.landing), node)
                } else {
                    let node = stack.output(&["cluster", "coordinator", &targets.fetch_txn]);
                    (format!("coordinator of {}", targets.fetch_txn), node)
                };
                stack.run(&["cluster", "kill", &node]);
                let down = Duration::from_millis(
                    rng.random_range(s.broker_down_ms.0..=s.broker_down_ms.1),
                );
                eprintln!(
                    "chaos: SIGKILL broker {node}, the {target}; back in {} ms",
                    down.as_millis()
                );
                sleep_with_upkeep(down, slots, &mut c);
                let back = stack.run_while(&["cluster", "restart", &node], || {
                    upkeep(slots, &mut c);
                });
                eprintln!(
                    "chaos: broker {node} back, every partition in sync after {:.1} s",
                    back.as_secs_f64()
                );
                c.broker_kills.push(BrokerKill {
                    target,
                    node,
                    down,
                    back,
                });
            }
            Action::RestartBroker => {
                let what: &[&str] = if s.cluster {
                    &["cluster", "roll"]
                } else {
                    &["restart-kafka"]
                };
                eprintln!("chaos: {what:?}");
                let took = stack.run_while(what, || upkeep(slots, &mut c));
                eprintln!("chaos: broker back after {:.1} s", took.as_secs_f64());
                c.broker_restarts.push(took);
            }
            Action::NetFault => {
                let fault = NET_FAULTS[c.net_faults.len() % NET_FAULTS.len()];
                eprintln!("chaos: network fault on: {}", fault.what);
                let started = Instant::now();
                fault.set(&targets.toxiproxy, stack, true);
                if fault.cold_starts {
                    cold_starts(slots, &mut c);
                }
                sleep_with_upkeep(fault.held, slots, &mut c);
                fault.set(&targets.toxiproxy, stack, false);
                let took = started.elapsed();
                eprintln!(
                    "chaos: network fault off after {:.1} s: {}",
                    took.as_secs_f64(),
                    fault.what
                );
                c.net_faults
                    .push(format!("{} for {:.1} s", fault.what, took.as_secs_f64()));
            }
            Action::Zombie => {
                let stage = if c.zombies.len() % 2 == 0 {
                    "validate"
                } else {
                    "dedup"
                };
                let zombie = zombie(stage, targets, slots, &mut c);
                c.zombies.push(zombie);
            }
            Action::RestartRegistry => {
                eprintln!("chaos: restarting the registry");
                let took = stack.run(&["restart-registry"]);
                eprintln!("chaos: registry back after {:.1} s", took.as_secs_f64());
                c.registry_restarts.push(took);
            }
        }
    }
    // Everything back up.
    for slot in slots.iter_mut() {
        if slot.proc.is_none() {
            slot.back_at = Some(Instant::now());
        }
    }
    upkeep(slots, &mut c);
    c
}

/// A network fault, held for a while, then removed: toxics on Toxiproxy's proxies (both
/// directions; removing a black hole closes the connections it held, as a healed network
/// whose peers gave up would), or the registry answering 503 (`scripts/stack registry-fault`).
#[derive(Clone, Copy)]
struct NetFault {
    what: &'static str,
    how: How,
    held: Duration,
    /// Whether one process of each stage is restarted as the fault starts.
    cold_starts: bool,
}

#[derive(Clone, Copy)]
enum How {
    /// A toxic's type and attributes (JSON) on these proxies.
    Toxic {
        proxies: &'static [&'static str],
        toxic: &'static str,
        attributes: &'static str,
    },
    /// The registry's server errors.
    Registry5xx,
}

const BROKERS: &[&str] = &["kafka-1", "kafka-2", "kafka-3"];

/// The network faults, in turn. The black hole outlasts the pipeline's transaction timeout
/// (10 s): every open transaction is aborted by its coordinator while its producer cannot
/// even learn it; and one process of each stage starts inside it (see [`cold_starts`]).
const NET_FAULTS: [NetFault; 6] = [
    NetFault {
        what: "black hole between intake and every broker",
        how: How::Toxic {
            proxies: BROKERS,
            toxic: "timeout",
            attributes: r#"{"timeout":0}"#,
        },
        held: Duration::from_secs(14),
        cold_starts: true,
    },
    NetFault {
        what: "registry answering 503",
        how: How::Registry5xx,
        held: Duration::from_secs(15),
        cold_starts: false,
    },
    NetFault {
        what: "slow brokers (1.5 s ± 0.5 s each way)",
        how: How::Toxic {
            proxies: BROKERS,
            toxic: "latency",
            attributes: r#"{"latency":1500,"jitter":500}"#,
        },
        held: Duration::from_secs(15),
        cold_starts: false,
    },
    NetFault {
        what: "black hole between intake and the registry",
        how: How::Toxic {
            proxies: &["registry"],
            toxic: "timeout",
            attributes: r#"{"timeout":0}"#,
        },
        held: Duration::from_secs(15),
        cold_starts: false,
    },
    NetFault {
        what: "a trickle to and from the brokers (32 KB/s)",
        how: How::Toxic {
            proxies: BROKERS,
            toxic: "bandwidth",
            attributes: r#"{"rate":32}"#,
        },
        held: Duration::from_secs(15),
        cold_starts: false,
    },
    NetFault {
        what: "a slow registry (2 s ± 0.5 s each way)",
        how: How::Toxic {
            proxies: &["registry"],
            toxic: "latency",
            attributes: r#"{"latency":2000,"jitter":500}"#,
        },
        held: Duration::from_secs(15),
        cold_starts: false,
    },
];

impl NetFault {
    /// Puts the fault on (or takes it off).
    fn set(&self, api: &str, stack: &Stack, on: bool) {
        let curl = |args: &[&str]| {
            let out = Command::new("curl")
                .args(["-sS", "-f", "-m", "10"])
                .args(args)
                .output()
                .expect("curl runs");
            assert!(
                out.status.success(),
                "toxiproxy {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let How::Toxic {
            proxies,
            toxic,
            attributes,
        } = self.how
        else {
            stack.run(&["registry-fault", if on { "on" } else { "off" }]);
            return;
        };
        for proxy in proxies {
            for stream in ["downstream", "upstream"] {
                if !on {
                    curl(&[
                        "-X",
                        "DELETE",
                        &format!("{api}/proxies/{proxy}/toxics/chaos-{stream}"),
                    ]);
                    continue;
                }
                curl(&[
                    "-X",
                    "POST",
                    &format!("{api}/proxies/{proxy}/toxics"),
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    &format!(
                        r#"{{"name":"chaos-{stream}","type":"{toxic}","stream":"{stream}","toxicity":1.0,"attributes":{attributes}}}"#
                    ),
                ]);
            }
        }
    }
}

/// Restarts one running process of each stage at once, inside a fault that keeps every broker
/// away, past its start-up wait for Kafka (`skip_start_gate`): each start-up step meets no
/// broker for longer than any deadline of its own, and must wait for them rather than end (an
/// ended process fails the run).
fn cold_starts(slots: &mut [Slot], c: &mut Chaos) {
    for stage in STAGES {
        // A running process of the stage, or (both down after kills) one brought back now.
        let i = (0..slots.len())
            .filter(|i| slots[*i].stage == stage)
            .max_by_key(|i| slots[*i].proc.is_some())
            .expect("every stage has processes");
        let slot = &mut slots[i];
        if let Some(mut p) = slot.proc.take() {
            if let Some(status) = p.try_wait() {
                c.ended.push(ended(&slot.instance, &p, status));
            } else {
                p.kill();
            }
        }
        // Past its wait for Kafka at once, as if the brokers went away the moment after it
        // got an answer (the window in which a start-up step used to give up and end).
        slot.start_with(&["skip_start_gate=1"]);
        c.cold_starts.push(slot.instance.clone());
        eprintln!(
            "chaos: {} restarted with every broker away (life {})",
            slot.instance, slot.lives
        );
    }
}

/// Waits (at most [`OPEN_WAIT`], keeping the other processes up) until a running process of
/// `stage` has a transaction of its own open, by its `intake_transaction_open` gauge, seen open
/// on two looks at least 20 ms apart (past its first records, in the commit's hold of
/// [`FAULTS`]), and returns that process: the victim. None when no process of the stage held
/// one open in that time (the kill then takes any, and counts as between transactions unless
/// Kafka says otherwise).
fn await_open_transaction(
    stage: &'static str,
    targets: &Targets,
    slots: &mut [Slot],
    c: &mut Chaos,
) -> Option<usize> {
    let until = Instant::now() + OPEN_WAIT;
    // Per slot: since when its open transactions have been seen open on every look.
    let mut open_since: Vec<Option<(Instant, Vec<String>)>> = vec![None; slots.len()];
    while Instant::now() < until {
        for i in 0..slots.len() {
            if slots[i].stage != stage || slots[i].proc.is_none() {
                continue;
            }
            let open = slots[i].open_transactions(targets).unwrap_or_default();
            let now = Instant::now();
            open_since[i] = match open_since[i].take() {
                _ if open.is_empty() => None,
                Some((since, seen)) if open.iter().any(|id| seen.contains(id)) => {
                    if now - since >= Duration::from_millis(20) {
                        return Some(i);
                    }
                    Some((since, open))
                }
                _ => Some((now, open)),
            };
        }
        upkeep(slots, c);
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "chaos: no {stage} process showed a transaction open in {} s",
        OPEN_WAIT.as_secs()
    );
    None
}

/// How long a kill waits for a victim with its transaction open.
const OPEN_WAIT: Duration = Duration::from_secs(10);

/// A zombie: a running process of `stage` is SIGSTOPped (it keeps its connections, its open
/// transaction and its belief that it owns its partitions), stays stopped until the
/// group coordinator has expelled it and the group is stable without it (its session timed
/// out; the other process owns its partitions), and is then SIGCONTed. Whatever it goes on
/// to do with its stale generation and producer must commit nothing: the concurrent judge
/// and the ledger say whether it did.
fn zombie(
    stage: &'static str,
    targets: &Targets,
    slots: &mut [Slot],
    c: &mut Chaos,
) -> (String, Duration) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let i = loop {
        if let Some(i) =
            (0..slots.len()).find(|i| slots[*i].stage == stage && slots[*i].proc.is_some())
        {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no {stage} process ran for 120 s"
        );
        sleep_with_upkeep(Duration::from_millis(200), slots, c);
    };
    let instance = slots[i].instance.clone();
    let pid = slots[i].proc.as_ref().unwrap().pid().to_string();
    let member = format!("{}-{stage}-{instance}-", targets.group_prefix);
    let view = support::group::GroupView::new(&format!("{}-{stage}", targets.group_prefix));
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} ({instance})");
    };
    signal("-STOP");
    let stopped = Instant::now();
    eprintln!("chaos: SIGSTOP {instance} (pid {pid}), a zombie until its group moves on");
    loop {
        // Stable, with members, none of them the zombie.
        if view
            .assignments()
            .is_some_and(|a| !a.is_empty() && !a.keys().any(|m| m.starts_with(&member)))
        {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(120),
            "the {stage} group did not move on without {instance} in 120 s: {:?}",
            view.assignments()
        );
        sleep_with_upkeep(Duration::from_millis(250), slots, c);
    }
    let moved = stopped.elapsed();
    signal("-CONT");
    eprintln!(
        "chaos: SIGCONT {instance}: its group moved on {:.1} s after it stopped",
        moved.as_secs_f64()
    );
    (instance, moved)
}

/// Records per batch job.
const JOB_RECORDS: u64 = 20;

/// Submits a batch job every two seconds until `stop`, each retried under its own idempotency key
/// until a serve process accepts it (a killed one answers nothing, or the balancer 502); returns
/// the ids of the accepted jobs.
async fn submit_jobs(
    base: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    let client = serve_http_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut accepted = Vec::new();
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let id = format!("chaos-job-{n}");
        let records: Vec<serde_json::Value> = (0..JOB_RECORDS)
            .map(|i| {
                serde_json::json!({"id": format!("{id}-{i}"), "name": "Ada", "email": "ada@example.com",
                    "status": "active", "created_at": "2024-01-01T00:00:00Z",
                    "updated_at": "2024-01-02T00:00:00Z", "version": 1})
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "data": records })).unwrap();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let r = client
                .post(format!("{base}/v1/jobs?source=sim&stream=jobs"))
                .header("Idempotency-Key", &id)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => break,
                Ok(r) if r.status().is_client_error() => {
                    panic!(
                        "job {id} refused: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )
                }
                _ => {
                    assert!(Instant::now() < deadline, "job {id} not accepted in 180 s");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        accepted.push(id);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    accepted
}

/// A load balancer in front of the serve processes: each request goes to the next backend in
/// turn (to the other one when a backend does not accept connections: killed), and its answer
/// (a 503 included) goes back to the simulator, which retries failed deliveries itself.
#[derive(Clone)]
struct Balancer {
    backends: Vec<SocketAddr>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    client: reqwest::Client,
}

async fn balance(
    axum::extract::State(b): axum::extract::State<Balancer>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let first = b.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for i in 0..b.backends.len() {
        let backend = b.backends[(first + i) % b.backends.len()];
        let mut rb = b
            .client
            .request(parts.method.clone(), format!("http://{backend}{path}"))
            .body(body.clone());
        for (k, v) in &parts.headers {
            if k != axum::http::header::HOST && k != axum::http::header::CONTENT_LENGTH {
                rb = rb.header(k, v);
            }
        }
        match rb.send().await {
            Ok(r) => {
                let status = r.status();
                let headers = r.headers().clone();
                let bytes = r.bytes().await.unwrap_or_default();
                let mut out = (status, bytes).into_response();
                for (k, v) in &headers {
                    if k != axum::http::header::CONTENT_LENGTH
                        && k != axum::http::header::TRANSFER_ENCODING
                    {
                        out.headers_mut().insert(k, v.clone());
                    }
                }
                return out;
            }
            Err(e) if e.is_connect() => continue,
            Err(_) => return axum::http::StatusCode::BAD_GATEWAY.into_response(),
        }
    }
    axum::http::StatusCode::BAD_GATEWAY.into_response()
}

/// Serves the balancer on `listener`.
async fn webhook_balancer(listener: tokio::net::TcpListener, backends: Vec<SocketAddr>) {
    let b = Balancer {
        backends,
        next: Default::default(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    };
    let app = axum::Router::new().fallback(balance).with_state(b);
    let _ = axum::serve(listener, app).await;
}

/// Whether a serve process answers `/readyz` with 200 (it lands again after the chaos).
async fn serve_ready(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The simulator's counters of one token: (requests, throttled, highest requests in a second).
async fn token_counts(sim: &intake::sim::SimHandle) -> (u64, u64, u64, serde_json::Value) {
    let stats = sim_stats(sim).await;
    let t = &stats["tokens"]["demo"];
    let max = t["per_second"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|c| c["total"].as_u64().unwrap())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    (
        t["requests"].as_u64().unwrap(),
        t["throttled"].as_u64().unwrap(),
        max,
        stats,
    )
}

#[test]
fn chaos_kills_and_restarts_lose_double_and_breach_nothing() {
    let s = Settings::from_env();
    let brokers = if s.cluster {
        (0..3)
            .map(|n| format!("127.0.0.1:{}", s.kafka_port + 2 * n))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        format!("127.0.0.1:{}", s.kafka_port)
    };
    // On the cluster, intake reaches the brokers and the registry through Toxiproxy.
    let registry_port = if s.cluster {
        s.registry_port + 3
    } else {
        s.registry_port
    };
    use_stack(
        &brokers,
        &format!("http://127.0.0.1:{registry_port}/apis/ccompat/v7"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(s));
}

async fn run(s: Settings) {
    let started = Instant::now();
    println!("chaos settings: {s:?} (CHAOS_SEED={})", s.seed);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s.seed);
    let dir = root().join("target/chaos").join(unique("run-"));
    std::fs::create_dir_all(&dir).unwrap();
    println!("logs in {}", dir.display());
    let stack = Stack::new(&s, dir.join("stack.log"));
    let _stop = StopOnDrop(stack.clone(), s.keep_stack);
    let took = blocking({
        let (stack, cluster, keep) = (stack.clone(), s.cluster, s.keep_stack);
        move || {
            if !keep {
                // A stack left by a run that did not end (its topics would slow every restart).
                stack.run(&["clean"]);
            }
            if cluster {
                stack.run(&["start", "registry"]) + stack.run(&["cluster", "start"])
            } else {
                stack.run(&["start"])
            }
        }
    })
    .await;
    println!("private stack up in {:.1} s", took.as_secs_f64());

    // The simulator, with webhooks to a balancer in front of the two serve processes.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let balancer = proxy.local_addr().unwrap();
    let hook = format!("http://{balancer}/v1/webhooks/sim");
    let serve_ports = [e2e::free_port(), e2e::free_port()];
    tokio::spawn(webhook_balancer(
        proxy,
        serve_ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect(),
    ));
    let (records, write_rate, token) = (
        s.records.to_string(),
        s.write_rate.to_string(),
        format!("demo={}", s.quota),
    );
    let seed = (s.seed % 1_000_000).to_string();
    let sim = sim(&[
        &[
            "--seed",
            &seed,
            "--records",
            &records,
            "--token",
            &token,
            "--start-paused",
            "--write-rate",
            &write_rate,
        ][..],
        &e2e::MESSY_SIM,
        &[
            "--webhook-url",
            &hook,
            "--webhook-secret",
            e2e::WEBHOOK_SECRET,
            "--webhook-dup-rate",
            "0.1",
            "--webhook-max-attempts",
            "60",
        ],
    ]
    .concat())
    .await;

    // One config (one topic prefix) per serve port; the other stages read the first.
    let knobs = Knobs {
        serve_port: serve_ports[0],
        quota: s.quota,
        poll: "1s",
        full_sync_every: "10s",
        lookback: "1m",
        page_size: 50,
    };
    // The simulator's streams, and `jobs`, a push-only stream (customers' schema) that batch
    // jobs are submitted to during the chaos.
    let mut text = config_text(&format!(
        "{}\n[[sources.streams]]\nname = \"jobs\"\nprimary_key = \"/id\"\nversion = \"/version\"\n{}",
        e2e::sources(sim.addr, &knobs),
        serve_client()
    ));
    if s.cluster {
        // Topics as code, per environment: three copies, two needed for a write.
        text = text.replacen(
            "[topics]\n",
            "[topics]\nreplication_factor = 3\nmin_insync_replicas = 2\n",
            1,
        );
    }
    let text1 = text.replace(
        &format!("listen = \"127.0.0.1:{}\"", serve_ports[0]),
        &format!("listen = \"127.0.0.1:{}\"", serve_ports[1]),
    );
    assert_ne!(text, text1);
    let cfg = intake::config::Config::from_toml(&text).unwrap();
    assert!(
        !text.contains("[telemetry]"),
        "each process gets its own metrics_addr"
    );
    let texts = [text.clone(), text1.clone()];
    apply_topics(&cfg).await;
    let reg = intake::registry::Registry::new(&cfg.registry).unwrap();
    // Through Toxiproxy and nginx: a connection closed between two calls is retried.
    support::registry_retrying("schemas apply", || {
        intake::registry::apply_schemas(&cfg, &reg)
    })
    .await;
    let customers =
        std::fs::read_to_string(root().join("topics/schemas/sim/customers.avsc")).unwrap();
    support::registry_retrying("the jobs stream's schema applies", || {
        intake::registry::apply_stream(&cfg, &reg, "sim", "jobs", &customers)
    })
    .await;

    // The concurrent judge reads the valid, curated and DLQ topics for the whole run.
    let judge = support::judge::Judge::for_sim(&cfg);

    let mut slots: Vec<Slot> = STAGES
        .into_iter()
        .flat_map(|stage| (0..2).map(move |i| (stage, i)))
        .map(|(stage, i)| {
            let instance = format!("{stage}{i}");
            let base = if stage == "serve" {
                &texts[i]
            } else {
                &texts[0]
            };
            let (config, metrics_port) =
                e2e::config_with_metrics(&dir, &format!("intake-{instance}"), base);
            (stage, instance, config, metrics_port)
        })
        .map(|(stage, instance, config, metrics_port)| Slot {
            stage,
            log: dir.join(format!("{instance}.log")),
            instance,
            config,
            metrics_port,
            proc: None,
            back_at: None,
            lives: 0,
            kills: 0,
        })
        .collect();
    let begun = time::OffsetDateTime::now_utc();
    for slot in &mut slots {
        slot.start();
    }

    // The backfill first: the truth counts a drifted id deleted before intake ever read it,
    // which no DLQ can hold. Then the writer (and its webhooks) starts, and the kills.
    let logs: Vec<PathBuf> = slots.iter().map(|s| s.log.clone()).collect();
    e2e::wait_for_syncs_after(&cfg, begun, Duration::from_secs(120), || {
        logs.iter()
            .map(|l| format!("--- {}\n{}", l.display(), proc::tail(l, 15)))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await;
    sim_admin(&sim, "/admin/resume").await;
    let chaos_started = Instant::now();
    // Batch jobs, through the balancer to either serve process, while the chaos lasts.
    let jobs_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let jobs = tokio::spawn(submit_jobs(format!("http://{balancer}"), jobs_stop.clone()));
    let targets = Targets {
        toxiproxy: format!("http://127.0.0.1:{}", s.kafka_port + 20),
        group_prefix: cfg.kafka.group_prefix.clone(),
        landing: intake::topics::TopicNames::from_config(&cfg).landing(),
        fetch_txn: intake::kafka::txn::transactional_id(
            &cfg.kafka.group_prefix,
            intake::kafka::txn::Writer::Fetch {
                source: "sim",
                stream: "customers",
            },
        ),
    };
    let (mut slots, chaos) = blocking({
        let (s, stack) = (s.clone(), stack.clone());
        move || {
            let c = chaos(&s, &stack, &targets, &mut slots, &mut rng);
            (slots, c)
        }
    })
    .await;
    let chaos_took = chaos_started.elapsed();
    jobs_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let jobs = jobs.await.unwrap();
    let paused = sim_admin(&sim, "/admin/pause").await;
    let paused_at = time::OffsetDateTime::now_utc();
    println!(
        "chaos phase {:.1} s: {} SIGKILLs {:?}, broker kills {:?}, broker restarts {:?}, registry restarts {:?}, zombies {:?}; {} writes; {} processes ended by themselves",
        chaos_took.as_secs_f64(),
        chaos.kills,
        chaos.kills_by_stage,
        chaos.broker_kills,
        chaos.broker_restarts,
        chaos.registry_restarts,
        chaos.zombies,
        paused["writes"],
        chaos.ended.len()
    );

    // --- settle: every webhook delivered, a full sync after the pause, the pipeline drained ----
    let logs_tail = {
        let logs: Vec<PathBuf> = slots.iter().map(|s| s.log.clone()).collect();
        move || {
            logs.iter()
                .map(|l| format!("--- {}\n{}", l.display(), proc::tail(l, 15)))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let hooks = e2e::webhooks_delivered(&sim, Duration::from_secs(180)).await;

    // --- the ledger, before anything can repair it: fetch stops (a full sync would re-land
    // every page of a stream with delete detection), validate and dedup drain, and the
    // committed topics alone must account for every landed record and every valid version.
    stop_fetch(&mut slots);
    let seen = judge.faults();
    assert!(
        seen.is_empty(),
        "the concurrent judge, during the fault phase:\n{}",
        seen.join("\n")
    );
    let ledger = support::ledger::settle(&cfg, Duration::from_secs(90)).await;
    println!("{}", ledger.summary(40));
    assert!(
        ledger.exact(),
        "the ledger after the fault phase, before any repair:\n{}\n{}",
        ledger.summary(40),
        logs_tail()
    );
    e2e::assert_webhook_ledger(&hooks, &{
        let cfg = cfg.clone();
        blocking(move || e2e::landed_events(&cfg)).await
    });

    // --- then the repair: fetch again, a full sync after the pause, compared with the truth.
    for slot in slots.iter_mut().filter(|s| s.stage == "fetch") {
        slot.start();
    }
    let logs: Vec<PathBuf> = slots.iter().map(|s| s.log.clone()).collect();
    let (truth, report, doubles) =
        support::scenario::settled_after_pause(&cfg, &sim, &paused, paused_at, &logs, &logs_tail)
            .await;
    let (f, table) = e2e::figures(&report, &doubles);
    // The judge must have read at least what the reading of whole topics above found.
    let at_least = [
        doubles.valid_records as u64,
        doubles.curated_records as u64,
        doubles.dlq_records as u64,
    ];
    let (verdict, judged_to_end) =
        blocking(move || judge.finish(Duration::from_secs(120), Some(at_least))).await;
    let (requests, throttled, max_per_second, stats) = token_counts(&sim).await;
    let mut ended = chaos.ended.clone();
    upkeep(&mut slots, &mut Chaos::default());
    for slot in &mut slots {
        if let Some(p) = slot.proc.as_mut()
            && let Some(status) = p.try_wait()
        {
            ended.push(self::ended(&slot.instance, p, status));
        }
    }
    let landed = blocking({
        let cfg = cfg.clone();
        move || e2e::landed_events(&cfg)
    })
    .await;
    let events = landed.0;
    println!(
        "\nCHAOS RESULT: {}; kills survived {} ({:?}; with a transaction open {:?}), broker SIGKILLs {} ({}), broker restarts {}, registry restarts {}, zombies {}, network faults {} ({}), processes started with every broker away {:?}; \
         ledger before repair: {} landed records and {} curated keys exact; \
         concurrent judge: {} valid, {} curated, {} DLQ records read, {} faults; \
         records compared {}, lost {}, doubled {}, stale {}, wrong {}; \
         matched {}, tombstoned {}, drifted in DLQ {}; \
         token demo: {requests} requests, {throttled} throttled (429), at most {max_per_second} in a second (quota {}/s); \
         webhooks {} (landed {events}); processes that ended by themselves {}; {:.1} s in all\n{table}",
        if s.cluster {
            "three brokers, replication factor 3, min.insync.replicas 2"
        } else {
            "one broker"
        },
        chaos.kills,
        chaos.kills_by_stage,
        chaos.kills_in_txn,
        chaos.broker_kills.len(),
        chaos
            .broker_kills
            .iter()
            .map(|k| format!(
                "node {}, the {}: down {:.1} s, whole again {:.1} s after its restart",
                k.node,
                k.target,
                k.down.as_secs_f64(),
                k.back.as_secs_f64()
            ))
            .collect::<Vec<_>>()
            .join("; "),
        chaos.broker_restarts.len(),
        chaos.registry_restarts.len(),
        chaos.zombies.len(),
        chaos.net_faults.len(),
        chaos.net_faults.join("; "),
        chaos.cold_starts,
        ledger.landed,
        ledger.keys,
        verdict.valid,
        verdict.curated,
        verdict.dlq,
        verdict.faults.len(),
        f.compared,
        f.lost,
        f.doubled,
        f.stale,
        f.wrong,
        f.matched,
        f.tombstoned,
        f.drifted_in_dlq,
        s.quota,
        hooks,
        ended.len(),
        started.elapsed().as_secs_f64()
    );
    for port in serve_ports {
        assert!(
            serve_ready(port).await,
            "serve on {port} is not ready after the chaos\n{}",
            logs_tail()
        );
    }
    let ended_text: Vec<String> = ended
        .iter()
        .map(|(i, st, tail)| format!("--- {i} ended by itself ({st}):\n{tail}"))
        .collect();
    assert!(
        ended.is_empty(),
        "stage processes ended by themselves:\n{}",
        ended_text.join("\n")
    );
    assert_eq!(
        chaos.kills, s.kills,
        "every planned kill hit a running process"
    );
    if s.cluster && s.net_faults > 0 {
        let black_holes = (0..s.net_faults)
            .filter(|i| NET_FAULTS[i % NET_FAULTS.len()].cold_starts)
            .count();
        assert_eq!(
            chaos.cold_starts.len(),
            STAGES.len() * black_holes,
            "one process of each stage started with every broker away, per black hole: {:?}",
            chaos.cold_starts
        );
    }
    for stage in STAGES {
        let k = chaos.kills_by_stage.get(stage).copied().unwrap_or(0);
        assert!(
            k >= s.kills / STAGES.len(),
            "{stage} was killed {k} times of {}: {:?}",
            s.kills,
            chaos.kills_by_stage
        );
    }
    if s.cluster {
        // Kafka's own view (kafka-transactions.sh list, asked before the victim came back).
        let in_txn: usize = chaos.kills_in_txn.values().sum();
        assert!(
            2 * in_txn >= chaos.kills,
            "at least half of the kills meet the victim's transaction open: {in_txn} of {} ({:?})",
            chaos.kills,
            chaos.kills_in_txn
        );
    }
    assert!(chaos.broker_restarts.len() == s.broker_restarts);
    assert_eq!(
        chaos.broker_kills.len(),
        if s.cluster { s.broker_kills } else { 0 }
    );
    assert!(chaos.registry_restarts.len() == s.registry_restarts);
    assert_eq!(chaos.zombies.len(), s.zombies);
    assert_eq!(chaos.net_faults.len(), s.net_faults);
    assert!(
        verdict.faults.is_empty(),
        "the concurrent judge:\n{}",
        verdict.faults.join("\n")
    );
    assert!(
        judged_to_end,
        "the concurrent judge read {} valid, {} curated and {} DLQ records in 120 s, fewer than {at_least:?}; not at the end of {:?}; client errors {:?}",
        verdict.valid, verdict.curated, verdict.dlq, verdict.behind, verdict.errors
    );
    e2e::assert_exact(&report, &doubles, &truth, true);
    assert_eq!(
        throttled, 0,
        "quota breached: {throttled} of {requests} requests over the limit; {}",
        stats["tokens"]["demo"]
    );
    assert!(max_per_second <= u64::from(s.quota));
    e2e::assert_webhook_ledger(&hooks, &landed);
    // Every job accepted during the chaos: its counts exactly its records, all valid, and its
    // records once each in the jobs stream's valid topic (read from Kafka).
    assert!(jobs.len() >= 10, "only {} jobs were submitted", jobs.len());
    let serve0 = format!("http://127.0.0.1:{}", serve_ports[0]);
    for id in &jobs {
        let want = serde_json::json!({"landed": JOB_RECORDS, "valid": JOB_RECORDS, "dead_lettered": 0, "replayed": 0, "pending": 0});
        let url = format!("{serve0}/v1/jobs/{id}");
        support::scenario::wait_job(
            id,
            &want,
            "validated",
            Duration::from_secs(60),
            Duration::from_millis(500),
            async || get_json(&serve_http(), &url).await,
        )
        .await;
    }
    // In Kafka: every job record in the curated topic exactly once (dedup keeps one version of
    // a key), and in the valid topic once per landing of its job. A job two serve processes
    // both landed (a retry reached the other before the first's commit showed) is in the valid
    // topic twice, from two landings, and counted once above.
    let (valid_recs, curated_recs) = {
        let names = intake::topics::TopicNames::from_config(&cfg);
        let (v, c) = (names.valid("sim", "jobs"), names.curated("sim", "jobs"));
        blocking(move || {
            (
                read_all(&v, "read_committed"),
                read_all(&c, "read_committed"),
            )
        })
        .await
    };
    let per_key = |recs: &[Rec]| {
        let mut m: std::collections::BTreeMap<String, usize> = Default::default();
        for r in recs
            .iter()
            .filter(|r| r.header(intake::headers::KIND).is_none())
        {
            *m.entry(r.key_str().to_owned()).or_default() += 1;
        }
        m
    };
    let want_keys: std::collections::BTreeMap<String, usize> = jobs
        .iter()
        .flat_map(|id| (0..JOB_RECORDS).map(move |i| (format!("{id}-{i}"), 1)))
        .collect();
    assert_eq!(
        per_key(&curated_recs),
        want_keys,
        "the jobs' records, each once in the curated topic"
    );
    let in_valid = per_key(&valid_recs);
    assert_eq!(
        in_valid.keys().collect::<Vec<_>>(),
        want_keys.keys().collect::<Vec<_>>(),
        "the jobs' records in the valid topic"
    );
    let landed_twice = jobs
        .iter()
        .filter(|id| in_valid.get(&format!("{id}-0")).is_some_and(|n| *n > 1))
        .count();
    println!(
        "jobs: {} submitted during the chaos ({landed_twice} landed by both serve processes), {} records; counts and curated topic exact",
        jobs.len(),
        jobs.len() * JOB_RECORDS as usize
    );
    drop(slots);
    if !s.keep_logs
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        eprintln!("removing {}: {e}", dir.display());
    }
}

/// Stops the fetch processes with SIGTERM (each must end cleanly) and keeps them stopped.
fn stop_fetch(slots: &mut [Slot]) {
    for slot in slots.iter_mut().filter(|s| s.stage == "fetch") {
        if let Some(mut p) = slot.proc.take() {
            let status = p.terminate(Duration::from_secs(120));
            // A process restarted a moment ago may meet SIGTERM before it handles it.
            use std::os::unix::process::ExitStatusExt;
            assert!(
                status.success() || status.signal() == Some(15),
                "{} did not stop cleanly ({status}):\n{}",
                slot.instance,
                p.tail(ENDED_TAIL)
            );
        }
        slot.back_at = None;
    }
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}
