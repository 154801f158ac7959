//! Issue 5, crash test: validate processes SIGKILLed mid-stream (two in the group part of the
//! time) leave every committed landing record in the valid topics or the DLQ exactly once.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use intake::config::Config;
use intake::headers;
use intake::topics::TopicNames;
use intake::validate::Splitter;
use rand::{Rng, SeedableRng};
use support::proc::{self, Proc};
use support::*;

/// SIGKILLs that must find the victim with work in flight (committed landing records on its
/// partitions that it has not committed as processed); the test kills until it has that many.
const HITS: usize = 20;
/// A bound on all SIGKILLs: a run that cannot find work in flight this often is a failure
/// (validate would be idle with records waiting), not bad luck.
const MAX_KILLS: usize = 60;
/// Uncommitted landing records on a victim's partitions that count as work in flight (a
/// drained partition counts its last transaction marker).
const IN_FLIGHT: i64 = 8;
/// Validate processes at most.
const SLOTS: usize = 2;
/// Partitions of a valid topic (topics/topics.toml, per_stream).
const PARTITIONS: i32 = 4;

/// One validate process slot: its instance id is reused on restart, so the restarted process
/// fences its killed predecessor and aborts its open transaction at once. Every life of a slot
/// appends to the slot's log.
struct Slot {
    instance: String,
    child: Option<Proc>,
    log: std::path::PathBuf,
}

impl Slot {
    fn start(&mut self, config: &std::path::Path) {
        let child = proc::intake(&["validate"], &self.log)
            .config(config)
            .env("INTAKE_INSTANCE_ID", &self.instance)
            .env("RUST_LOG", "warn,intake=info")
            .spawn();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill(); // SIGKILL; panics unless the process was running and died of it
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SIGTERM: commit the open transaction, leave the group, exit 0.
        c.terminate(Duration::from_secs(120))
    }
}

/// What committed output must hold for one landing record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    /// A valid record: topic, `intake.origin`, key.
    Valid(String, String, String),
    /// A dead letter: `dlq.origin` (with the record's index), kind.
    Dead(String, String),
    /// A marker copy: topic, partition, kind, value (unique per landed marker: see `Amplifier`).
    Marker(String, i32, String, String),
}

/// Every output the committed landing topic calls for, with its multiplicity (always 1). A
/// drifted record landed several times (copies of its page) is one dead letter, at its first
/// landing (the quiet DLQ); the second map has, per such dead letter's `dlq.origin`, how often
/// its record was landed.
fn expected(
    cfg: &Config,
    drifted: &BTreeMap<String, String>,
) -> (BTreeMap<Expect, usize>, BTreeMap<String, u64>) {
    let names = TopicNames::from_config(cfg);
    let landing = names.landing();
    let splitter = Splitter::new("/data", "/id", Some("/version")).unwrap();
    let mut out = BTreeMap::new();
    // (stream, id) → earliest (partition, offset, origin) and times landed.
    type Landing = (i32, i64, String);
    let mut dead: BTreeMap<(String, String), (Landing, u64)> = BTreeMap::new();
    for r in read_all(&landing, "read_committed") {
        let stream = r.header(headers::STREAM).unwrap().to_owned();
        let valid = names.valid("sim", &stream);
        let at = format!("{landing}/{}/{}", r.partition, r.offset);
        match r.header(headers::KIND).unwrap() {
            "page" => {
                for rec in splitter.split(r.value.as_deref().unwrap()).unwrap() {
                    let rec = rec.unwrap();
                    if drifted.contains_key(&rec.key) {
                        let here = (r.partition, r.offset, format!("{at}#{}", rec.index));
                        let d = dead
                            .entry((stream.clone(), rec.key.clone()))
                            .or_insert((here.clone(), 0));
                        d.0 = d.0.clone().min(here);
                        d.1 += 1;
                        continue;
                    }
                    let e = Expect::Valid(valid.clone(), at.clone(), rec.key.clone());
                    *out.entry(e).or_default() += 1;
                }
            }
            kind => {
                let value = String::from_utf8(r.value.clone().unwrap()).unwrap();
                for p in 0..PARTITIONS {
                    *out.entry(Expect::Marker(
                        valid.clone(),
                        p,
                        kind.to_owned(),
                        value.clone(),
                    ))
                    .or_default() += 1;
                }
            }
        }
    }
    let mut repeats = BTreeMap::new();
    for ((_, id), ((_, _, origin), landed)) in dead {
        out.insert(Expect::Dead(origin.clone(), drifted[&id].clone()), 1);
        repeats.insert(origin, landed);
    }
    (out, repeats)
}

/// What the committed dlq-index says (its latest entry per key, read as JSON): per dead
/// letter's `dlq.origin`, the failures counted on it.
fn actual_repeats(cfg: &Config) -> BTreeMap<String, u64> {
    let topic = TopicNames::from_config(cfg).dlq_index();
    let mut latest: BTreeMap<String, (i32, i64, serde_json::Value)> = BTreeMap::new();
    for r in read_all(&topic, "read_committed") {
        let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let e = latest
            .entry(r.key_str().to_owned())
            .or_insert((r.partition, r.offset, v.clone()));
        assert_eq!(e.0, r.partition, "a key stays in one partition");
        if r.offset >= e.1 {
            *e = (r.partition, r.offset, v);
        }
    }
    latest
        .into_values()
        .map(|(_, _, v)| {
            (
                v["origin"].as_str().unwrap().to_owned(),
                v["occurrences"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// What the committed valid topics and DLQ hold, in the same terms.
fn actual(cfg: &Config, streams: &[String]) -> BTreeMap<Expect, usize> {
    let names = TopicNames::from_config(cfg);
    let mut out = BTreeMap::new();
    for s in streams {
        let topic = names.valid("sim", s);
        for r in read_all(&topic, "read_committed") {
            let e = match r.header(headers::KIND) {
                Some(kind) => Expect::Marker(
                    topic.clone(),
                    r.partition,
                    kind.to_owned(),
                    String::from_utf8(r.value.clone().unwrap()).unwrap(),
                ),
                None => Expect::Valid(
                    topic.clone(),
                    r.header(headers::ORIGIN).unwrap().to_owned(),
                    r.key_str().to_owned(),
                ),
            };
            *out.entry(e).or_default() += 1;
        }
    }
    for r in read_all(&names.dlq(), "read_committed") {
        let e = Expect::Dead(
            r.header(headers::DLQ_ORIGIN).unwrap().to_owned(),
            r.header(headers::DLQ_KIND).unwrap().to_owned(),
        );
        *out.entry(e).or_default() += 1;
    }
    out
}

/// Re-lands one copy of the pages and markers a real fetch landed, in one transaction (fetch
/// in a debug build is slower than validate; copies put work in front of the validators right
/// before a kill). Markers get the copy number in their value, so each landed marker is told
/// apart in the output.
fn land_copy(cfg: &Config, producer: &intake::kafka::TxnProducer, source: &[Rec], copy: u32) {
    let landing = TopicNames::from_config(cfg).landing();
    producer.begin().unwrap();
    for r in source {
        let mut value = r.value.clone().unwrap();
        if r.header(headers::KIND) != Some("page") {
            let mut v: serde_json::Value = serde_json::from_slice(&value).unwrap();
            v["copy"] = copy.into();
            value = serde_json::to_vec(&v).unwrap();
        }
        let h = r
            .headers
            .iter()
            .fold(intake::headers::Headers::new(), |h, (k, v)| h.with(k, v));
        let out = intake::kafka::Outgoing {
            topic: &landing,
            key: r.key.as_deref(),
            payload: Some(&value),
            headers: h.build(),
            partition: None,
        };
        producer.send(out).unwrap();
    }
    producer.commit().unwrap();
}

/// Records in the valid topics and the DLQ read with an isolation level: `read_uncommitted`
/// also sees the outputs of aborted transactions (those of killed processes).
fn output_records(cfg: &Config, streams: &[String], isolation: &str) -> usize {
    let names = TopicNames::from_config(cfg);
    let mut topics: Vec<String> = streams.iter().map(|s| names.valid("sim", s)).collect();
    topics.push(names.dlq());
    topics.iter().map(|t| read_all(t, isolation).len()).sum()
}

fn count(m: &BTreeMap<Expect, usize>) -> usize {
    m.values().sum()
}

/// Runs a blocking closure off the async runtime.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The landed data both tests validate: six streams (the simulator's three, each paged in two
/// styles) spread over the landing partitions, their schemas registered, one sync of each
/// landed by a real fetch, and the drifted ids (by id: their kind). The config is also written
/// to `config_path` in `dir`, for the validate processes (whose logs go to `dir` too).
struct Landed {
    _sim: intake::sim::SimHandle,
    cfg: Arc<Config>,
    names: TopicNames,
    streams: Vec<String>,
    dir: tempfile::TempDir,
    config_path: std::path::PathBuf,
    drifted: BTreeMap<String, String>,
}

async fn land_one_sync() -> Landed {
    let sim = sim(&["--records", "600", "--seed", "3", "--drift-rate", "0.05"]).await;
    // Six streams (the simulator's three, each paged in two styles) spread over the landing
    // partitions, so two validate processes share the work.
    let sim_streams = ["customers", "orders", "events"];
    let layout: Vec<(String, String, &str)> = ["cursor", "link"]
        .iter()
        .flat_map(|style| {
            sim_streams.iter().map(move |s| {
                (
                    format!("{s}-{style}"),
                    format!("/v1/styles/{style}/{s}"),
                    *style,
                )
            })
        })
        .collect();
    let streams: Vec<String> = layout.iter().map(|(n, _, _)| n.clone()).collect();
    let refs: Vec<(&str, &str, &str)> = layout
        .iter()
        .map(|(n, p, s)| (n.as_str(), p.as_str(), *s))
        .collect();
    let text = config_text(&sim_source(&sim, &refs, ""));
    let (cfg, dir, config_path) = config_with_file(&text);
    let names = TopicNames::from_config(&cfg);
    apply_topics(&cfg).await;
    let reg = intake::registry::Registry::new(&cfg.registry).unwrap();
    for (name, path, _) in &layout {
        let sim_stream = path.rsplit('/').next().unwrap();
        let schema =
            std::fs::read_to_string(root().join(format!("topics/schemas/sim/{sim_stream}.avsc")))
                .unwrap();
        intake::registry::apply_one(&reg, &names.subject("sim", name), &schema)
            .await
            .unwrap();
    }
    let truth = truth(&sim).await;
    // Ids are unique across the simulator's streams (`cus-`, `ord-`, `evt-`).
    let drifted: BTreeMap<String, String> = truth_drifted(&truth, &sim_streams)
        .into_iter()
        .map(|((_, id), kind)| (id, kind))
        .collect();
    assert!(drifted.len() > 30);
    let used: std::collections::BTreeSet<i32> = streams
        .iter()
        .map(|s| intake::kafka::partition::partition_for(format!("sim/{s}").as_bytes(), 4))
        .collect();
    assert!(used.len() >= 3, "landing partitions used: {used:?}");
    fetch_once(&cfg).await.unwrap();
    Landed {
        _sim: sim,
        cfg,
        names,
        streams,
        dir,
        config_path,
        drifted,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkilled_validators_leave_every_landing_record_in_valid_or_dlq_exactly_once() {
    // One real sync of every stream, then copies of it as fast as the validators drain them.
    let landed = land_one_sync().await;
    let (cfg, streams, drifted) = (&landed.cfg, &landed.streams, &landed.drifted);
    let (dir, config_path) = (&landed.dir, &landed.config_path);
    let landing = landed.names.landing();
    let source = blocking({
        let landing = landing.clone();
        move || read_all(&landing, "read_committed")
    })
    .await;
    let source = Arc::new(source);
    let lander = kafka(cfg).txn_producer(&unique("test-lander-")).unwrap();
    blocking({
        let lander = lander.clone();
        move || lander.init().unwrap()
    })
    .await;
    let mut slots: Vec<Slot> = (0..SLOTS)
        .map(|i| Slot {
            instance: format!("v{i}"),
            child: None,
            log: dir.path().join(format!("validate-v{i}.log")),
        })
        .collect();
    for s in &mut slots {
        s.start(config_path);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let started = Instant::now();
    let mut kills = 0;
    let mut alone = 0;
    let mut hits = 0;
    // Per kill: the victim's uncommitted landing records just before and just after it.
    let mut backlogs: Vec<(i64, i64)> = Vec::new();
    let group = kafka(cfg).group(intake::stage::Stage::Validate);
    let view = Arc::new(support::group::GroupView::new(&group));
    // The validators never run dry: a lander thread lands another copy of the sync whenever
    // fewer than two copies' worth of landing records wait for the group (a fast, idle machine
    // drains a copy in well under a second), so every kill below finds work to interrupt.
    let stop_landing = Arc::new(AtomicBool::new(false));
    let copies = Arc::new(AtomicU32::new(0));
    let lander_thread = std::thread::spawn({
        let (cfg, view, source) = (cfg.clone(), view.clone(), source.clone());
        let (stop, copies) = (stop_landing.clone(), copies.clone());
        let all: Vec<_> = (0..PARTITIONS).map(|p| (landing.clone(), p)).collect();
        let low = 2 * source.len() as i64;
        move || {
            while !stop.load(Ordering::Relaxed) {
                if view.backlog(&all).is_some_and(|b| b < low) {
                    let copy = copies.fetch_add(1, Ordering::Relaxed) + 1;
                    land_copy(&cfg, &lander, &source, copy);
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    });
    let mut killed_member: Vec<Option<String>> = vec![None; SLOTS];
    let all_landing: Vec<_> = (0..PARTITIONS).map(|p| (landing.clone(), p)).collect();
    // Per slot: the group's committed landing offsets when its current life started; a victim
    // must have committed past them on a partition it owns (it is processing, not starting).
    let snapshot = |view: Arc<support::group::GroupView>, all: Vec<_>| async move {
        blocking(move || view.committed(&all).unwrap_or_default()).await
    };
    let mut life_start = Vec::new();
    for _ in 0..SLOTS {
        life_start.push(snapshot(view.clone(), all_landing.clone()).await);
    }
    while hits < HITS {
        assert!(
            kills < MAX_KILLS,
            "only {hits} of {kills} SIGKILLs found the victim with work in flight: {backlogs:?}"
        );
        // The victim: a slot that owns landing partitions with committed records waiting on
        // them (a process that has just restarted may not have joined yet).
        let looking = Instant::now();
        let (i, owned) = loop {
            assert!(
                looking.elapsed() < Duration::from_secs(60),
                "no validate process held landing work for 60 s: {backlogs:?}"
            );
            let pick = rng.random_range(0..SLOTS);
            let found = blocking({
                let (view, member, landing) = (
                    view.clone(),
                    format!("{group}-{}", slots[pick].instance),
                    landing.clone(),
                );
                let killed = killed_member[pick].clone();
                let started = life_start[pick].clone();
                move || {
                    let (id, tps) = view.owned_by(&member)?;
                    // Its current life has joined (not the entry its killed life left behind).
                    if Some(&id) == killed.as_ref() {
                        return None;
                    }
                    let owned: Vec<_> = tps.into_iter().filter(|(t, _)| *t == landing).collect();
                    // ... has committed work in this life ...
                    let now = view.committed(&owned)?;
                    let progressed = now
                        .iter()
                        .any(|(tp, o)| started.get(tp).is_none_or(|s| o > s));
                    // ... and has more waiting.
                    let b = view.backlog(&owned)?;
                    (progressed && b > IN_FLIGHT).then_some((id, owned))
                }
            })
            .await;
            if let Some((id, owned)) = found {
                killed_member[pick] = Some(id);
                break (pick, owned);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..120))).await;
        slots[i].kill();
        kills += 1;
        // Its partitions stay with it until it restarts (or its session times out), and it can
        // commit nothing more: what its partitions hold uncommitted now is the work the kill
        // interrupted.
        let after = blocking({
            let (view, owned) = (view.clone(), owned.clone());
            move || view.backlog(&owned)
        })
        .await
        .unwrap_or(0);
        backlogs.push((owned.len() as i64, after));
        if after > IN_FLIGHT {
            hits += 1;
        }
        if kills == 8 || kills == 16 {
            // One process alone in the group for longer than the session timeout (10 s), with
            // work arriving: the group moves the dead member's partitions to the survivor, and
            // some back (cooperative revoke, open transaction committed first) on restart.
            alone += 1;
            tokio::time::sleep(Duration::from_secs(12)).await;
        }
        life_start[i] = snapshot(view.clone(), all_landing.clone()).await;
        slots[i].start(config_path);
    }
    let kill_phase = started.elapsed();

    // A third process joins while both others are live and busy: the group must take
    // partitions from a live process (cooperative revoke, its open transaction committed
    // first). Made certain and judged by the group's own assignment: both current lives have
    // joined, own landing partitions and committed work before the third starts; once it owns
    // landing partitions, both are still the same members (not restarted) and own fewer.
    let members: Vec<String> = slots
        .iter()
        .map(|s| format!("{group}-{}", s.instance))
        .collect();
    let owned_now = |members: Vec<String>| {
        let (view, landing) = (view.clone(), landing.clone());
        blocking(move || {
            let a = view.assignments()?;
            members
                .iter()
                .map(|m| {
                    a.iter()
                        .find(|(id, _)| id.starts_with(&format!("{m}-")))
                        .map(|(id, tps)| {
                            let tps: Vec<_> =
                                tps.iter().filter(|(t, _)| *t == landing).cloned().collect();
                            (id.clone(), tps)
                        })
                })
                .collect::<Option<Vec<_>>>()
        })
    };
    let settling = Instant::now();
    let before = loop {
        if let Some(owned) = owned_now(members.clone()).await {
            let mut ready = true;
            for (i, (id, tps)) in owned.iter().enumerate() {
                let now = blocking({
                    let (view, tps) = (view.clone(), tps.clone());
                    move || view.committed(&tps)
                })
                .await
                .unwrap_or_default();
                let progressed = now
                    .iter()
                    .any(|(tp, o)| life_start[i].get(tp).is_none_or(|s| o > s));
                ready &= Some(id) != killed_member[i].as_ref() && !tps.is_empty() && progressed;
            }
            if ready {
                break owned;
            }
        }
        assert!(
            settling.elapsed() < Duration::from_secs(60),
            "the two processes did not both own and process landing partitions in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut third = Slot {
        instance: "v2".into(),
        child: None,
        log: dir.path().join("validate-v2.log"),
    };
    third.start(config_path);
    let joined = Instant::now();
    let mut with_third = members.clone();
    with_third.push(format!("{group}-v2"));
    let after = loop {
        if let Some(owned) = owned_now(with_third.clone()).await
            && !owned[2].1.is_empty()
        {
            break owned;
        }
        assert!(
            joined.elapsed() < Duration::from_secs(60),
            "the third process got no partitions from the two live ones"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for i in 0..2 {
        assert_eq!(
            before[i].0, after[i].0,
            "{} stayed the same member while the third joined",
            slots[i].instance
        );
    }
    let given_up = before[0].1.len() + before[1].1.len() - after[0].1.len() - after[1].1.len();
    assert!(
        given_up >= 1,
        "partitions moved from a live process to the one that joined: before {before:?}, after {after:?}"
    );
    slots.push(third);
    stop_landing.store(true, Ordering::Relaxed);
    blocking(move || lander_thread.join().unwrap()).await;
    let copies = copies.load(Ordering::Relaxed);

    // Drain with every process up, then stop them gracefully.
    let (want, want_repeats) = blocking({
        let (cfg, drifted) = (cfg.clone(), drifted.clone());
        move || expected(&cfg, &drifted)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = blocking({
            let view = view.clone();
            let all: Vec<_> = (0..PARTITIONS).map(|p| (landing.clone(), p)).collect();
            move || view.backlog(&all)
        })
        .await;
        if b.is_some_and(|b| b <= 4) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for s in &mut slots {
        let status = s.terminate();
        assert!(
            status.success(),
            "{} exits cleanly on SIGTERM: {status}",
            s.instance
        );
    }
    let (got, committed, written) = blocking({
        let (cfg, streams) = (cfg.clone(), streams.clone());
        move || {
            (
                actual(&cfg, &streams),
                output_records(&cfg, &streams, "read_committed"),
                output_records(&cfg, &streams, "read_uncommitted"),
            )
        }
    })
    .await;
    let logs: String = slots
        .iter()
        .map(|s| std::fs::read_to_string(&s.log).unwrap())
        .collect();
    let revocations = logs.matches("landing partitions revoked").count();
    let assignments = logs.matches("landing partitions assigned").count();
    println!(
        "{kills} SIGKILLs over {:.1} s ({hits} with the victim's work in flight; (victim's partitions, its uncommitted landing records) per kill: {backlogs:?}); {alone} times one process alone past the session timeout; \
         {assignments} assignments, {revocations} revocations; 1 sync landed {copies} more times; expected {} outputs ({} dead letters), got {}; \
         {} output records written by transactions that never committed",
        kill_phase.as_secs_f64(),
        count(&want),
        want.keys()
            .filter(|e| matches!(e, Expect::Dead(..)))
            .count(),
        count(&got),
        written - committed,
    );
    let doubled: Vec<_> = got.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(doubled.is_empty(), "outputs committed twice: {doubled:?}");
    let missing: Vec<_> = want.keys().filter(|e| !got.contains_key(e)).collect();
    assert_none(&missing, "landing records without output");
    let extra: Vec<_> = got
        .keys()
        .filter(|e| !want.contains_key(e))
        .take(5)
        .collect();
    assert!(
        extra.is_empty(),
        "outputs without a landing record: {extra:?}"
    );
    assert_eq!(got, want);
    // The quiet DLQ: each drifted record, landed once per copy of its page, is one dead letter
    // (above) whose dlq-index entry counts every landing exactly: a repeat of an aborted
    // transaction is not counted, one of a committed one is not lost across kills and moves.
    let repeats = blocking({
        let cfg = cfg.clone();
        move || actual_repeats(&cfg)
    })
    .await;
    let landed_max = want_repeats.values().max().copied().unwrap_or(0);
    println!(
        "quiet DLQ: {} dead letters, each landed up to {landed_max} times",
        want_repeats.len()
    );
    assert!(
        landed_max > 1,
        "copies landed drifted records more than once"
    );
    assert_eq!(
        repeats, want_repeats,
        "each dead letter counts every landing of its record, exactly"
    );
    // The kills interrupted real work (checked after the invariants, so a run that proves them
    // reports its outcome first).
    assert!(
        written > committed,
        "kills interrupted transactions that had written outputs"
    );
}

/// A consumer that stops fetching a partition without a word (the deliberate fault
/// `consume_stall`: validate pauses the partition of the 60th landing record it reads, as
/// librdkafka was once seen to stop after a rewind) is caught by the loop's stall watch, which
/// starts over with a new consumer: every landed record still reaches a valid topic or the DLQ
/// exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_that_stops_fetching_is_caught_and_every_record_still_validated() {
    let landed = land_one_sync().await;
    let (cfg, streams, drifted) = (&landed.cfg, &landed.streams, &landed.drifted);
    let log = landed.dir.path().join("validate.log");
    let mut validate = proc::intake(&["validate"], &log)
        .config(&landed.config_path)
        .env(intake::faults::ENV, "consume_stall=60")
        .env("RUST_LOG", "warn,intake=info")
        .spawn();
    let (want, want_repeats) = blocking({
        let (cfg, drifted) = (cfg.clone(), drifted.clone());
        move || expected(&cfg, &drifted)
    })
    .await;
    // The stall is noticed within two looks of the watch (30 s each here), and the new
    // consumer then reads the rest: wait for every expected output, or for 180 s.
    let deadline = Instant::now() + Duration::from_secs(180);
    let got = loop {
        let got = blocking({
            let (cfg, streams) = (cfg.clone(), streams.clone());
            move || actual(&cfg, &streams)
        })
        .await;
        if want.keys().all(|e| got.contains_key(e)) || Instant::now() > deadline {
            break got;
        }
        assert!(
            validate.try_wait().is_none(),
            "validate ended by itself:\n{}",
            validate.tail(30)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let status = validate.terminate(Duration::from_secs(120));
    let logs = std::fs::read_to_string(&log).unwrap();
    let paused = logs
        .matches("deliberate fault: this partition stops fetching")
        .count();
    let caught = logs.matches("partitions stalled").count();
    let restarts = logs
        .matches("starting over with a new consumer and producer")
        .count();
    println!(
        "{paused} partitions stopped on purpose, {caught} stalls caught, {restarts} restarts; expected {} outputs, got {}",
        count(&want),
        count(&got)
    );
    assert!(
        status.success(),
        "validate exits cleanly on SIGTERM: {status}"
    );
    assert!(paused >= 1, "the fault never fired:\n{}", validate.tail(30));
    assert!(
        caught >= paused && restarts >= paused,
        "{paused} stalls made, {caught} caught, {restarts} restarts"
    );
    let missing: Vec<_> = want.keys().filter(|e| !got.contains_key(e)).collect();
    assert_none(&missing, "landing records without output after the stall");
    assert_eq!(
        got, want,
        "every landed record once in a valid topic or the DLQ"
    );
    let repeats = blocking({
        let cfg = cfg.clone();
        move || actual_repeats(&cfg)
    })
    .await;
    assert_eq!(
        repeats, want_repeats,
        "each dead letter counts every landing of its record"
    );
}
