//! Helpers for `scripts/bench`, kept out of the product: a signed-webhook load generator, a
//! consumer-group drain timer and an end-to-end latency probe.
//!
//! ```text
//! cargo build --release --example bench_tool
//! bench_tool webhooks --url http://127.0.0.1:8080/v1/webhooks/hooks --secret S --concurrency 64 --secs 5
//! bench_tool webhooks --url ... --secret S --rate 2000 --secs 10
//! bench_tool drain --config F --stage validate
//! bench_tool latency --config F --expect 300000
//! bench_tool count --config F --topics valid,dlq
//! ```
//!
//! Each prints one line `<what> key=value ...` on stdout for the script to read.
//!
//! - `webhooks`: POSTs webhook events of about `--record-bytes` (a customer record in the
//!   simulator's event envelope), each signed afresh with [`intake::signing`] at the time it
//!   is sent. `--concurrency N`: a closed loop of N clients, each sending its next request when
//!   the previous one is answered (the peak). `--rate R`: an open loop sending R requests per
//!   second on schedule whatever the answers; latency counts from the scheduled time, so a
//!   server falling behind shows in the latency rather than slowing the sender down. Counts
//!   only answers to requests sent within `--secs`; anything but 2xx is an error.
//! - `drain`: reads where each input partition's last record ends, says `drain: ready` on
//!   stderr, then waits until the stage's consumer group (`<group_prefix>-validate` over the
//!   landing topic, `-dedup` over the valid topics) has committed every partition to that end
//!   (the offset after the last record), and prints the unix time.
//! - `latency`: reads the landing, valid and curated topics of the config (read_committed,
//!   from the beginning, sync markers skipped) and, for every page or record, the time from its
//!   `intake.fetched_at` header (when fetch received the simulator's response, or serve
//!   accepted the webhook) to the moment this consumer receives it: each hop's figures
//!   (`landing_`, `valid_`, `curated_` p50/p90/p99/p99.9/max) are cumulative from the
//!   response, so the differences are what each stage adds; the unprefixed figures are the
//!   curated ones (end to end). Stops after `--expect` curated records or `--idle-secs`
//!   without one. `--kill-file F`: F holds the unix time at which the script SIGKILLed a
//!   stage process (and restarted it); the line then adds the recovery (see [`Recovery`]).
//! - `count`: counts the committed messages (read_committed) of the config's topics of the given
//!   kinds (`landing`, `dlq`, `valid`, `curated`), to the end each partition had when it started:
//!   in all, per topic, and how many are sync markers (`intake.kind` `sync-begin`/`sync-end`,
//!   which validate passes on to every partition of the valid topic) or records.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use intake::config::Config;
use intake::headers;
use intake::kafka::Kafka;
use intake::stage::Stage;
use intake::topics::TopicNames;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Flags as `--name value` pairs (every flag takes a value).
struct Flags(BTreeMap<String, String>);

impl Flags {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut map = BTreeMap::new();
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            let name = a
                .strip_prefix("--")
                .ok_or_else(|| anyhow!("unexpected argument `{a}`"))?;
            let value = args
                .next()
                .ok_or_else(|| anyhow!("--{name} needs a value"))?;
            map.insert(name.to_owned(), value);
        }
        Ok(Self(map))
    }

    fn opt(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn req(&self, name: &str) -> anyhow::Result<&str> {
        self.opt(name)
            .ok_or_else(|| anyhow!("--{name} is required"))
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T> {
        match self.opt(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow!("--{name}: `{v}` is not a number")),
        }
    }
}

/// Percentile (nearest rank) of sorted microseconds, in milliseconds.
fn pct_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

// --- webhooks ----------------------------------------------------------------------------------

struct Load {
    url: String,
    secret: Vec<u8>,
    record_bytes: usize,
    next: AtomicU64,
}

impl Load {
    /// The next event: a customer record of about `record_bytes` in the simulator's envelope.
    fn body(&self) -> Vec<u8> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let notes = "x".repeat(self.record_bytes.saturating_sub(260));
        format!(
            concat!(
                r#"{{"event_id":"bench-{n:012}","type":"updated","stream":"customers","entity_id":"cus_{id:07}","seq":{n},"#,
                r#""occurred_at":"2025-01-01T00:00:00.000Z","data":{{"id":"cus_{id:07}","name":"Bench Customer {id}","#,
                r#""email":"c{id}@example.com","status":"active","created_at":"2025-01-01T00:00:00.000Z","#,
                r#""updated_at":"2025-01-01T00:00:00.000Z","version":{n},"notes":"{notes}"}}}}"#
            ),
            n = n,
            id = n % 1_000_000,
            notes = notes,
        )
        .into_bytes()
    }

    /// Sends one event; `Ok(status)` for an answer, `Err(kind)` for a transport failure.
    async fn send(&self, client: &reqwest::Client) -> Result<u16, &'static str> {
        let body = self.body();
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let sig = intake::signing::sign(&self.secret, t, &body);
        let r = client
            .post(&self.url)
            .header(intake::signing::HEADER, sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match r {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read the (small) answer so the connection goes back to the pool.
                let _ = resp.bytes().await;
                Ok(status)
            }
            Err(e) if e.is_timeout() => Err("timeout"),
            Err(e) if e.is_connect() => Err("connect"),
            Err(_) => Err("transport"),
        }
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    accepted: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, outcome: Result<u16, &'static str>, latency: Duration) {
        match outcome {
            Ok(s) if (200..300).contains(&s) => {
                self.accepted += 1;
                self.latencies_us.push(latency.as_micros() as u64);
            }
            Ok(s) => *self.errors.entry(s.to_string()).or_default() += 1,
            Err(kind) => *self.errors.entry(kind.to_owned()).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.accepted += other.accepted;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

async fn webhooks(f: &Flags) -> anyhow::Result<()> {
    let secs: f64 = f.num("secs", 5.0)?;
    let concurrency: usize = f.num("concurrency", 0)?;
    let rate: f64 = f.num("rate", 0.0)?;
    if (concurrency == 0) == (rate <= 0.0) {
        bail!("give exactly one of --concurrency N and --rate R");
    }
    let load = Arc::new(Load {
        url: f.req("url")?.to_owned(),
        secret: f.req("secret")?.as_bytes().to_vec(),
        record_bytes: f.num("record-bytes", 1024)?,
        next: AtomicU64::new(0),
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency.max(1024))
        .tcp_nodelay(true)
        .build()?;
    let window = Duration::from_secs_f64(secs);
    let started = Instant::now();
    let deadline = started + window;
    let mut tally = Tally::default();
    let mut sent = 0u64;
    if concurrency > 0 {
        let mut tasks = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let (load, client) = (load.clone(), client.clone());
            tasks.push(tokio::spawn(async move {
                let mut t = Tally::default();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let at = Instant::now();
                    let outcome = load.send(&client).await;
                    t.add(outcome, at.elapsed());
                    n += 1;
                }
                (t, n)
            }));
        }
        for task in tasks {
            let (t, n) = task.await?;
            tally.merge(t);
            sent += n;
        }
    } else {
        // Open loop: request i is due at started + i / rate. A bounded number in flight: past
        // it the request counts as an error of the generator ("overload") instead of queueing.
        let max_in_flight = 20_000usize;
        let in_flight = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut i = 0u64;
        loop {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if due >= deadline {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            i += 1;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                *tally.errors.entry("overload".into()).or_default() += 1;
                continue;
            };
            let (load, client, tx) = (load.clone(), client.clone(), tx.clone());
            tokio::spawn(async move {
                let outcome = load.send(&client).await;
                let _ = tx.send((outcome, due.elapsed()));
                drop(permit);
            });
        }
        sent = i;
        drop(tx);
        while let Some((outcome, latency)) = rx.recv().await {
            tally.add(outcome, latency);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    tally.latencies_us.sort_unstable();
    let errors: u64 = tally.errors.values().sum();
    let kinds = if tally.errors.is_empty() {
        "-".to_owned()
    } else {
        tally
            .errors
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "webhooks mode={} concurrency={concurrency} rate={rate:.0} secs={secs:.1} elapsed={elapsed:.2} \
         sent={sent} accepted={} errors={errors} error_kinds={kinds} accepted_per_s={:.1} \
         p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        if concurrency > 0 { "closed" } else { "open" },
        tally.accepted,
        tally.accepted as f64 / secs,
        pct_ms(&tally.latencies_us, 50.0),
        pct_ms(&tally.latencies_us, 99.0),
        pct_ms(&tally.latencies_us, 100.0),
    );
    Ok(())
}

// --- drain -------------------------------------------------------------------------------------

fn partitions(c: &BaseConsumer, topics: &[String]) -> anyhow::Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let md = c
            .fetch_metadata(Some(t), Duration::from_secs(10))
            .with_context(|| format!("metadata of {t}"))?;
        let n = md
            .topics()
            .first()
            .map(|m| m.partitions().len())
            .unwrap_or(0);
        if n == 0 {
            bail!("topic {t} has no partitions (does it exist?)");
        }
        for p in 0..n as i32 {
            tpl.add_partition(t, p);
        }
    }
    Ok(tpl)
}

/// The offset after the last committed record of a partition (0 when it holds none). A
/// partition ends with at least one transaction marker, often more (several transactional
/// producers write to it, each commit adds a marker after the others' records), and a consumer
/// group commits the offset after the last record it was given, so this, not the high
/// watermark, is what a drained group has committed.
fn last_record_end(
    reader: &intake::kafka::reader::Reader,
    topic: &str,
    p: i32,
) -> anyhow::Result<i64> {
    let (lo, hi) = reader.high_watermarks(topic, p, Duration::from_secs(10))?;
    let mut back = 64;
    loop {
        let from = (hi - back).max(lo);
        let mut last = None;
        intake::kafka::reader::read_from(
            reader,
            topic,
            &[(p, Offset::Offset(from))],
            Duration::from_secs(60),
            |m| last = Some(m.offset() + 1),
        )
        .with_context(|| format!("reading the end of {topic}/{p}"))?;
        match last {
            Some(end) => return Ok(end),
            None if from == lo => return Ok(0),
            None => back *= 4,
        }
    }
}

fn drain(f: &Flags) -> anyhow::Result<()> {
    let cfg = Config::load(f.req("config")?.as_ref())?;
    let stage = f.req("stage")?;
    let timeout = Duration::from_secs_f64(f.num("timeout-secs", 600.0)?);
    let (stage, topics) = match stage {
        "validate" => (Stage::Validate, topics_of(&cfg, "landing")?),
        "dedup" => (Stage::Dedup, topics_of(&cfg, "valid")?),
        other => bail!("--stage validate|dedup, not `{other}`"),
    };
    let kafka = Kafka::new(&cfg.kafka)?;
    let group = kafka.group(stage);
    let c = kafka.reader_consumer_in_group(&group)?;
    let tpl = partitions(&c, &topics)?;
    // The input is complete before the stage starts, so its ends are read once.
    let reader = kafka.reader_consumer("bench-drain")?;
    let mut ends = BTreeMap::new();
    for e in tpl.elements() {
        let end = last_record_end(&reader, e.topic(), e.partition())?;
        ends.insert((e.topic().to_owned(), e.partition()), end);
    }
    // Reading the ends takes seconds for a dozen partitions: the script starts the stage
    // (and its clock) only once this line is out, so the time is the stage's alone.
    eprintln!("drain: ready");
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let committed = c.committed_offsets(tpl.clone(), Duration::from_secs(10))?;
        let mut lag = 0i64;
        for e in committed.elements() {
            let end = ends[&(e.topic().to_owned(), e.partition())];
            lag += match e.offset() {
                Offset::Offset(o) => (end - o).max(0),
                _ => end,
            };
        }
        if lag == 0 {
            println!(
                "drain stage={stage} group={group} done_at={:.3}",
                unix_now()
            );
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!(
                "group {group} still {lag} records behind after {} s",
                timeout.as_secs()
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("drain: {group} is {lag} records behind");
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// --- count -------------------------------------------------------------------------------------

/// Topics of the config by kind: `landing`, `dlq`, `valid` or `curated` (one per stream).
fn topics_of(cfg: &Config, kind: &str) -> anyhow::Result<Vec<String>> {
    let names = TopicNames::from_config(cfg);
    let per_stream = |f: &dyn Fn(&str, &str) -> String| -> Vec<String> {
        cfg.sources
            .iter()
            .flat_map(|s| s.streams.iter().map(|st| f(&s.name, &st.name)))
            .collect()
    };
    Ok(match kind {
        "landing" => vec![names.landing()],
        "dlq" => vec![names.dlq()],
        "valid" => per_stream(&|s, st| names.valid(s, st)),
        "curated" => per_stream(&|s, st| names.curated(s, st)),
        other => bail!("no topic kind `{other}` (landing, dlq, valid, curated)"),
    })
}

fn count(f: &Flags) -> anyhow::Result<()> {
    let cfg = Config::load(f.req("config")?.as_ref())?;
    let mut topics = Vec::new();
    for kind in f.req("topics")?.split(',') {
        topics.extend(topics_of(&cfg, kind)?);
    }
    let kafka = Kafka::new(&cfg.kafka)?;
    let c = kafka.reader_consumer_in_group(&format!("{}-bench-count", cfg.kafka.group_prefix))?;
    let mut tpl = partitions(&c, &topics)?;
    // The end of each partition for read_committed (the last stable offset), taken now.
    let mut ends = BTreeMap::new();
    for (t, p) in tpl
        .elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect::<Vec<_>>()
    {
        let (_, end) = c.fetch_watermarks(&t, p, Duration::from_secs(10))?;
        if end > 0 {
            ends.insert((t.clone(), p), end);
        }
        tpl.set_partition_offset(&t, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut counts: BTreeMap<String, u64> = topics.iter().map(|t| (t.clone(), 0)).collect();
    let mut markers = 0u64;
    let deadline = Instant::now() + Duration::from_secs_f64(f.num("timeout-secs", 300.0)?);
    while !ends.is_empty() {
        if Instant::now() > deadline {
            bail!(
                "did not reach the end of {:?}",
                ends.keys().collect::<Vec<_>>()
            );
        }
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m?;
            *counts.entry(m.topic().to_owned()).or_default() += 1;
            let kind = headers::get(m.headers(), headers::KIND);
            if kind == Some(b"sync-begin") || kind == Some(b"sync-end") {
                markers += 1;
            }
        }
        // Positions pass transaction markers too, so the end is reached by position.
        let pos = c.position()?;
        for e in pos.elements() {
            if let Offset::Offset(o) = e.offset()
                && ends
                    .get(&(e.topic().to_owned(), e.partition()))
                    .is_some_and(|&end| o >= end)
            {
                ends.remove(&(e.topic().to_owned(), e.partition()));
            }
        }
    }
    let total: u64 = counts.values().sum();
    let each: Vec<String> = counts.iter().map(|(t, n)| format!("{t}={n}")).collect();
    println!(
        "count total={total} markers={markers} records={} {}",
        total - markers,
        each.join(" ")
    );
    Ok(())
}

// --- latency -----------------------------------------------------------------------------------

fn fetched_at_unix(v: &str) -> Option<f64> {
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

/// The hops of the latency probe, in the order a record passes them.
const HOPS: [&str; 3] = ["landing", "valid", "curated"];

fn latency(f: &Flags) -> anyhow::Result<()> {
    let cfg = Config::load(f.req("config")?.as_ref())?;
    let expect: u64 = f.num("expect", u64::MAX)?;
    let idle = Duration::from_secs_f64(f.num("idle-secs", 60.0)?);
    // Topic -> hop (index into HOPS).
    let mut hop_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, kind) in HOPS.iter().enumerate() {
        for t in topics_of(&cfg, kind)? {
            hop_of.insert(t, i);
        }
    }
    let topics: Vec<String> = hop_of.keys().cloned().collect();
    let kafka = Kafka::new(&cfg.kafka)?;
    // A group id is only needed by librdkafka for assign(); nothing is committed.
    let c = kafka.reader_consumer_in_group(&format!("{}-bench-latency", cfg.kafka.group_prefix))?;
    let mut tpl = partitions(&c, &topics)?;
    for e in tpl
        .elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect::<Vec<_>>()
    {
        tpl.set_partition_offset(&e.0, e.1, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    eprintln!("latency: reading {} partitions of {topics:?}", tpl.count());
    // Per hop: microseconds from `intake.fetched_at` to this consumer's receipt.
    let mut lat_us: [Vec<u64>; 3] = Default::default();
    let (mut count, mut without) = (0u64, 0u64);
    let (mut first_at, mut last_at) = (0f64, 0f64);
    // Curated arrivals (unix seconds, latency µs), for the recovery after a kill.
    let mut arrivals: Vec<(f64, u64)> = Vec::new();
    let mut last_msg = Instant::now();
    while count < expect {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let now = unix_now();
                last_msg = Instant::now();
                let hop = hop_of.get(m.topic()).copied().unwrap_or(HOPS.len() - 1);
                let marker = headers::get(m.headers(), headers::KIND)
                    .and_then(headers::Kind::parse)
                    .is_some_and(|k| {
                        matches!(k, headers::Kind::SyncBegin | headers::Kind::SyncEnd)
                    });
                if marker {
                    continue;
                }
                let at =
                    headers::get_str(m.headers(), headers::FETCHED_AT).and_then(fetched_at_unix);
                if hop == HOPS.len() - 1 {
                    count += 1;
                    if first_at == 0.0 {
                        first_at = now;
                    }
                    last_at = now;
                    if at.is_none() {
                        without += 1;
                    }
                }
                if let Some(t) = at {
                    let us = ((now - t).max(0.0) * 1e6) as u64;
                    lat_us[hop].push(us);
                    if hop == HOPS.len() - 1 {
                        arrivals.push((now, us));
                    }
                }
            }
            Some(Err(e)) => eprintln!("latency: {e}"),
            None => {
                if last_msg.elapsed() > idle {
                    eprintln!(
                        "latency: nothing for {} s; stopping at {count} records",
                        idle.as_secs()
                    );
                    break;
                }
            }
        }
    }
    let mut line = format!(
        "latency count={count} without_fetched_at={without} first_at={first_at:.3} last_at={last_at:.3}"
    );
    let figures = |prefix: &str, v: &[u64]| {
        format!(
            " {prefix}n={} {prefix}p50_ms={:.1} {prefix}p90_ms={:.1} {prefix}p99_ms={:.1} {prefix}p999_ms={:.1} {prefix}max_ms={:.1}",
            v.len(),
            pct_ms(v, 50.0),
            pct_ms(v, 90.0),
            pct_ms(v, 99.0),
            pct_ms(v, 99.9),
            pct_ms(v, 100.0),
        )
    };
    for (hop, v) in HOPS.iter().zip(lat_us.iter_mut()) {
        v.sort_unstable();
        line.push_str(&figures(&format!("{hop}_"), v));
    }
    // The curated hop is the end-to-end figure, also printed without a prefix.
    line.push_str(&figures("", &lat_us[HOPS.len() - 1]));
    if let Some(path) = f.opt("kill-file") {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let kill: f64 = text
            .split_whitespace()
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| anyhow!("{path}: no kill time (unix seconds)"))?;
        line.push_str(&recovery(&arrivals, kill).to_string());
    }
    println!("{line}");
    Ok(())
}

/// How the curated latency recovered from a stage process SIGKILLed (and restarted) at `kill`
/// (unix seconds). The baseline is the p99 of the records that arrived before the kill;
/// arrivals from the kill on fall into buckets of [`RECOVERY_BUCKET_S`], and a bucket is good
/// when its p99 is within [`RECOVERED_WITHIN`] of the baseline (or 50 ms over it, whichever is
/// more). Records already past the killed stage still arrive on time after the kill; the spike
/// begins at the first bad bucket (a gap of no arrivals is not a bucket: the next arrivals are
/// late), and the stage has recovered at the start of the first good bucket (of at least 10
/// records) after it. No bad bucket at all: recovered at once.
struct Recovery {
    baseline_p99_ms: f64,
    recovered_ms: Option<f64>,
    spike_max_ms: f64,
    during: usize,
}

const RECOVERY_BUCKET_S: f64 = 0.25;
const RECOVERED_WITHIN: f64 = 1.25;

fn recovery(arrivals: &[(f64, u64)], kill: f64) -> Recovery {
    let mut before: Vec<u64> = arrivals
        .iter()
        .filter(|(at, _)| *at < kill)
        .map(|(_, us)| *us)
        .collect();
    before.sort_unstable();
    let baseline = pct_ms(&before, 99.0);
    let limit = (baseline * RECOVERED_WITHIN).max(baseline + 50.0);
    let mut buckets: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (at, us) in arrivals.iter().filter(|(at, _)| *at >= kill) {
        buckets
            .entry(((at - kill) / RECOVERY_BUCKET_S) as u64)
            .or_default()
            .push(*us);
    }
    let mut out = Recovery {
        baseline_p99_ms: baseline,
        recovered_ms: None,
        spike_max_ms: 0.0,
        during: 0,
    };
    let mut spiking = false;
    for (k, mut v) in buckets {
        v.sort_unstable();
        let good = v.len() >= 10 && pct_ms(&v, 99.0) <= limit;
        if good && !spiking {
            continue;
        }
        if good {
            out.recovered_ms = Some(k as f64 * RECOVERY_BUCKET_S * 1000.0);
            return out;
        }
        spiking = true;
        out.during += v.len();
        out.spike_max_ms = out.spike_max_ms.max(pct_ms(&v, 100.0));
    }
    if !spiking {
        out.recovered_ms = Some(0.0);
    }
    out
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            " baseline_p99_ms={:.1} recovered_ms={} spike_max_ms={:.1} during_recovery={}",
            self.baseline_p99_ms,
            self.recovered_ms
                .map_or_else(|| "never".to_owned(), |ms| format!("{ms:.0}")),
            self.spike_max_ms,
            self.during
        )
    }
}

fn main() -> ExitCode {
    let usage = "usage: bench_tool webhooks|drain|latency --flag value ... (see the file's docs)";
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let result = Flags::parse(args).and_then(|f| match cmd.as_str() {
        "webhooks" => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(webhooks(&f))),
        "drain" => drain(&f),
        "latency" => latency(&f),
        "count" => count(&f),
        _ => Err(anyhow!("{usage}")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_tool {cmd}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
