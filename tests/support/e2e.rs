//! The whole pipeline against the simulator, judged exactly: shared by `tests/pipeline.rs`
//! (every stage in one `intake run`) and `tests/chaos.rs` (every stage in separate processes,
//! killed at random).
//!
//! - [`sources`]: the simulator's three streams (customers by cursor, orders by Link header,
//!   events by `starting_after`), incremental with a short look-back, full syncs with delete
//!   detection, and signed webhooks into `serve`.
//! - [`wait_for_syncs_after`]: until every stream completed a sync (a full one where full
//!   syncs are configured) that started after a moment, e.g. the simulator's pause.
//! - [`converge`]: polls `intake::verify::compare` until the curated topics equal the truth.
//! - [`doubles`]: what was committed twice anywhere in the pipeline (landing pages, valid and
//!   DLQ records per landing origin, curated emissions per key).
//! - [`Figures`]: lost, doubled, stale and wrong, from the comparison and [`doubles`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use intake::config::Config;
use intake::dedup::Stamp;
use intake::fetch::cursor::{CursorState, Mode};
use intake::headers;
use intake::topics::TopicNames;
use intake::verify::VerifyReport;

use super::{Rec, read_all};

/// The simulator's streams: (name, path, pagination, incremental with full syncs).
pub const STREAMS: [(&str, &str, &str, bool); 3] = [
    ("customers", "/v1/customers", "cursor", true),
    ("orders", "/v1/orders", "link", true),
    ("events", "/v1/events", "after", false),
];

/// Webhook signing secret shared by the simulator and serve.
pub const WEBHOOK_SECRET: &str = "whsec-e2e";

/// The simulator's faults in an end-to-end run (its flags, between its writer's and its
/// webhooks'): deletes, updates backdated by 2 to 30 minutes, drift, errors, and large records.
/// Those are over serve's and fetch's inline limit (900 KiB: pages holding one are
/// claim-checked); 0.99 MB records stay whole in the 1 MiB valid and curated topics, 1.5 MB
/// ones travel there by claim-check reference (resolved by `read_by_topic_name`).
pub const MESSY_SIM: [&str; 16] = [
    "--delete-share",
    "0.15",
    "--backdate-rate",
    "0.3",
    "--backdate-min",
    "2m",
    "--backdate-max",
    "30m",
    "--drift-rate",
    "0.05",
    "--large-rate",
    "0.01",
    "--large-bytes",
    "990000,1500000",
    "--error-rate",
    "0.02",
];

/// Drift kinds the simulator injects (the only DLQ kinds an end-to-end run may produce).
pub const DRIFT_KINDS: [&str; 4] = [
    "unknown_enum",
    "unknown_field",
    "type_mismatch",
    "missing_field",
];

/// A free TCP port on 127.0.0.1 (bound, then released, for a child process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `base` with a `telemetry.metrics_addr` on a free port of its own to
/// `dir/<name>.toml`, for one stage process; returns the file and the port.
pub fn config_with_metrics(
    dir: &std::path::Path,
    name: &str,
    base: &str,
) -> (std::path::PathBuf, u16) {
    assert!(
        !base.contains("[telemetry]"),
        "{name}: telemetry is set here"
    );
    let port = free_port();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("{base}\n[telemetry]\nmetrics_addr = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    (path, port)
}

/// Knobs of [`sources`].
#[derive(Debug, Clone)]
pub struct Knobs {
    /// `serve.listen` port.
    pub serve_port: u16,
    /// Requests per second of the token (`quota`).
    pub quota: u32,
    /// `poll_interval` of every stream.
    pub poll: &'static str,
    /// `full_sync_every` of customers and orders.
    pub full_sync_every: &'static str,
    /// Incremental look-back of customers and orders.
    pub lookback: &'static str,
    /// Records per page.
    pub page_size: u32,
}

/// The `[serve]` and `[[sources]]` blocks for the simulator at `sim_addr`.
pub fn sources(sim_addr: std::net::SocketAddr, k: &Knobs) -> String {
    let source = format!(
        r#"quota = {{ requests = {quota}, per = "1s" }}
max_retries = 30
webhook = {{ secrets = ["{WEBHOOK_SECRET}"] }}"#,
        quota = k.quota,
    );
    let mut s = format!(
        "\n[serve]\nlisten = \"127.0.0.1:{port}\"\n{head}",
        port = k.serve_port,
        head = super::bearer_source_head("sim", sim_addr, "demo", &source),
    );
    for (name, path, style, incremental) in STREAMS {
        s.push_str(&super::sim_stream(
            name,
            path,
            style,
            k.page_size,
            &format!("poll_interval = \"{}\"", k.poll),
        ));
        if incremental {
            s.push_str(&format!(
                "incremental = {{ param = \"updated_since\", field = \"/updated_at\", lookback = \"{}\" }}\n\
                 full_sync_every = \"{}\"\ndetect_deletes = true\n",
                k.lookback, k.full_sync_every
            ));
        }
    }
    s
}

/// Every committed cursor record, oldest first per key: the history of the cursors topic (it
/// is compacted, but never its active segment, so a test sees the whole history).
pub fn cursor_history(cfg: &Config) -> Vec<CursorState> {
    let mut recs = read_all(&TopicNames::from_config(cfg).cursors(), "read_committed");
    recs.sort_by_key(|r| (r.partition, r.offset));
    recs.iter()
        .filter_map(|r| r.value.as_deref())
        .map(|v| serde_json::from_slice::<CursorState>(v).expect("cursor record is JSON"))
        .collect()
}

/// An RFC 3339 timestamp, parsed.
pub fn parse_time(s: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
}

/// Streams that have not yet completed a sync started after `after` (a full sync for the
/// streams with full syncs).
pub fn syncs_missing_after(cfg: &Config, after: time::OffsetDateTime) -> Vec<&'static str> {
    missing_in(&cursor_history(cfg), after)
}

fn missing_in(history: &[CursorState], after: time::OffsetDateTime) -> Vec<&'static str> {
    STREAMS
        .iter()
        .filter(|(name, _, _, full)| {
            !history.iter().any(|c| {
                c.stream == *name
                    && c.complete
                    && (!full || c.mode == Mode::Full)
                    && c.started_at
                        .as_deref()
                        .is_some_and(|t| parse_time(t) > after)
            })
        })
        .map(|s| s.0)
        .collect()
}

/// Waits until every stream completed a sync that started after `after` (a full one for the
/// streams with full syncs). Fetch commits a cursor record with every page, so the wait lasts
/// while the cursor history grows; it panics with `context()` once no page was committed for
/// `quiet`.
pub async fn wait_for_syncs_after(
    cfg: &Config,
    after: time::OffsetDateTime,
    quiet: Duration,
    context: impl Fn() -> String,
) {
    let mut moved_at = Instant::now();
    let mut pages = 0;
    loop {
        let cfg2 = cfg.clone();
        let history = tokio::task::spawn_blocking(move || cursor_history(&cfg2))
            .await
            .unwrap();
        let missing = missing_in(&history, after);
        if missing.is_empty() {
            return;
        }
        if history.len() != pages {
            pages = history.len();
            moved_at = Instant::now();
        }
        assert!(
            moved_at.elapsed() < quiet,
            "no completed sync started after {after} for {missing:?}, and no page committed \
             for {quiet:?}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until the simulator has no webhook delivery pending; returns its webhook counters.
/// The wait lasts while deliveries make progress; it panics once the counters stood still for
/// `quiet` with deliveries pending.
pub async fn webhooks_delivered(
    sim: &intake::sim::SimHandle,
    quiet: Duration,
) -> serde_json::Value {
    let mut moved_at = Instant::now();
    let mut last = serde_json::Value::Null;
    loop {
        let stats = super::sim_stats(sim).await;
        let w = stats["webhooks"].clone();
        if w["pending"] == 0 {
            return w;
        }
        if w != last {
            last = w.clone();
            moved_at = Instant::now();
        }
        assert!(
            moved_at.elapsed() < quiet,
            "webhooks still pending, no delivery moved for {quiet:?}: {w}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a failed convergence needs to be understood from CI output alone: each stage group's
/// members, state and lag, and per process log the most frequent warnings and errors with
/// their last lines.
pub async fn diagnose(cfg: &Config, logs: &[std::path::PathBuf]) -> String {
    let mut out = String::from("--- diagnosis\n");
    match intake::status::gather(cfg).await {
        Ok(st) => {
            for g in &st.groups {
                out.push_str(&format!(
                    "group {} ({}): {} members, {}\n",
                    g.group, g.stage, g.members, g.state
                ));
            }
            for l in &st.lag {
                out.push_str(&format!(
                    "lag {} ({}): {:?} {:?}\n",
                    l.group, l.stage, l.lag, l.by_topic
                ));
            }
            for (k, c) in &st.cursors {
                if let Some(c) = c {
                    out.push_str(&format!(
                        "cursor {k}: {} {} complete {} pages {} last sync {:?}\n",
                        c.mode.as_str(),
                        &c.sync_id[..8],
                        c.complete,
                        c.pages,
                        c.last_sync_at
                    ));
                }
            }
        }
        Err(e) => out.push_str(&format!("status failed: {e:#}\n")),
    }
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let mut counts: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for line in text.lines() {
            let level = ["\"WARN\"", "\"ERROR\"", " WARN ", " ERROR "]
                .iter()
                .any(|l| line.contains(l));
            if !level {
                continue;
            }
            let msg = line
                .split("\"message\":\"")
                .nth(1)
                .and_then(|m| m.split('"').next())
                .unwrap_or(line);
            let msg: String = msg.chars().take(90).collect();
            let e = counts.entry(msg).or_default();
            e.0 += 1;
            e.1 = line
                .split("\"timestamp\":\"")
                .nth(1)
                .unwrap_or("")
                .chars()
                .take(23)
                .collect();
        }
        let mut top: Vec<_> = counts.into_iter().collect();
        top.sort_by_key(|b| std::cmp::Reverse(b.1.0));
        out.push_str(&format!(
            "log {} ({} lines)\n",
            log.file_name().unwrap_or_default().to_string_lossy(),
            text.lines().count()
        ));
        for (msg, (n, last)) in top.iter().take(6) {
            out.push_str(&format!("  {n:>5}x (last {last}) {msg}\n"));
        }
        for line in text
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let l: String = line.chars().take(300).collect();
            out.push_str(&format!("  | {l}\n"));
        }
    }
    out
}

/// Whether a report equals the truth in every stream.
pub fn equal(r: &VerifyReport) -> bool {
    r.ok()
        && r.streams
            .values()
            .all(|c| c.drifted_in_dlq == c.drifted && c.matched == c.expected_live)
}

/// Polls the comparison until the curated topics and the DLQ equal the truth, or until the
/// comparison stopped changing for `quiet` (the pipeline is drained or stuck), and never longer
/// than 10 × `quiet` in all. A busy machine only makes the pipeline slower, so the wait follows
/// its progress instead of a fixed deadline. Committed offsets are not a sign of progress:
/// periodic full syncs move them for ever. Returns the last report, which the caller asserts
/// on exactly.
pub async fn converge(cfg: &Config, truth: &serde_json::Value, quiet: Duration) -> VerifyReport {
    let started = Instant::now();
    let mut moved_at = Instant::now();
    let mut last = String::new();
    let mut said = Instant::now();
    loop {
        // A comparison that could not read the topics (a broker moving, a transport failure)
        // is tried again; one that keeps failing ends the wait like one that stopped moving.
        let r = match intake::verify::compare(cfg, "sim", truth).await {
            Ok(r) => r,
            Err(e) if started.elapsed() < quiet * 10 => {
                eprintln!("converge: comparing failed ({e}); trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => panic!("compare: {e}"),
        };
        if equal(&r) {
            return r;
        }
        let now = serde_json::to_string(&r).expect("report serialises");
        if now != last {
            last = now;
            moved_at = Instant::now();
        }
        if moved_at.elapsed() > quiet || started.elapsed() > quiet * 10 {
            println!(
                "converge: not equal after {:.0} s (the comparison last changed {:.0} s ago); comparing as it stands",
                started.elapsed().as_secs_f64(),
                moved_at.elapsed().as_secs_f64()
            );
            return r;
        }
        if said.elapsed() > Duration::from_secs(30) {
            said = Instant::now();
            println!(
                "converge: {:.0} s, not yet equal",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Per stream of the truth: (live and not drifted, deleted and not drifted, drifted).
pub fn truth_counts(truth: &serde_json::Value) -> BTreeMap<String, (usize, usize, usize)> {
    STREAMS
        .iter()
        .map(|(s, ..)| {
            let t = &truth["streams"][*s];
            let drifted: BTreeSet<&String> = t["drifted"].as_object().unwrap().keys().collect();
            // The ids the truth lists under `field` that did not drift.
            let undrifted = |field: &str| {
                t[field]
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| !drifted.contains(k))
                    .count()
            };
            (
                format!("sim/{s}"),
                (undrifted("live"), undrifted("deleted"), drifted.len()),
            )
        })
        .collect()
}

/// What was committed twice.
#[derive(Debug, Default, Clone)]
pub struct Doubles {
    /// Landing pages of one (stream, sync, seq) beyond the first.
    pub landing_pages: usize,
    /// Valid records of one (landing origin, key) beyond the first.
    pub valid: usize,
    /// Dead letters of one landing origin (with record index) beyond the first.
    pub dlq: usize,
    /// Curated records per key that do not raise the key's stamp (emitted twice or stale).
    pub curated: usize,
    /// Records read to find these.
    pub landing_records: usize,
    pub valid_records: usize,
    pub dlq_records: usize,
    pub curated_records: usize,
}

impl Doubles {
    /// Everything committed twice.
    pub fn total(&self) -> usize {
        self.landing_pages + self.valid + self.dlq + self.curated
    }
}

fn extra<K: Ord>(counts: BTreeMap<K, usize>) -> usize {
    counts.values().map(|n| n - 1).sum()
}

/// A curated record's stamp, from its headers.
fn stamp(r: &Rec) -> Stamp {
    let version = r
        .header(headers::VERSION)
        .and_then(|v| v.parse().ok())
        .expect("intake.version on every curated record");
    let hash = r
        .header(headers::HASH)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .expect("intake.hash on every curated record");
    Stamp::from_parts(version, hash, r.header(headers::OP) == Some("delete"))
}

/// Reads the committed landing, valid, DLQ and curated topics and counts what was committed
/// twice. Curated: per key, every record must carry a larger stamp than the one before (a
/// delete beats an upsert of the same version; then the larger hash).
pub fn doubles(cfg: &Config) -> Doubles {
    let names = TopicNames::from_config(cfg);
    let mut d = Doubles::default();
    let mut pages: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for r in read_all(&names.landing(), "read_committed") {
        d.landing_records += 1;
        if matches!(r.header(headers::KIND), Some("page" | "blob-ref")) {
            let k = (
                r.header(headers::STREAM).unwrap_or("?").to_owned(),
                r.header(headers::SYNC_ID).unwrap_or("?").to_owned(),
                r.header(headers::SEQ).unwrap_or("?").to_owned(),
            );
            *pages.entry(k).or_default() += 1;
        }
    }
    d.landing_pages = extra(pages);
    // Keys as bytes: an Avro key (`key_format = "avro"`) need not be UTF-8.
    let mut valid: BTreeMap<(String, Vec<u8>), usize> = BTreeMap::new();
    let mut curated_extra = 0;
    for (s, ..) in STREAMS {
        for r in read_all(&names.valid("sim", s), "read_committed") {
            d.valid_records += 1;
            if r.header(headers::KIND).is_none() {
                let k = (
                    r.header(headers::ORIGIN).unwrap_or("?").to_owned(),
                    r.key.clone().unwrap_or_default(),
                );
                *valid.entry(k).or_default() += 1;
            }
        }
        let mut recs = read_all(&names.curated("sim", s), "read_committed");
        recs.sort_by_key(|r| (r.partition, r.offset));
        let mut last: HashMap<Vec<u8>, Stamp> = HashMap::new();
        for r in recs {
            d.curated_records += 1;
            let st = stamp(&r);
            match last.insert(r.key.clone().unwrap_or_default(), st) {
                Some(prev) if prev >= st => curated_extra += 1,
                _ => {}
            }
        }
    }
    d.valid = extra(valid);
    d.curated = curated_extra;
    let mut dlq: BTreeMap<String, usize> = BTreeMap::new();
    for r in read_all(&names.dlq(), "read_committed") {
        d.dlq_records += 1;
        *dlq.entry(r.header(headers::DLQ_ORIGIN).unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    d.dlq = extra(dlq);
    d
}

/// The verdict of one end-to-end run.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// Keys compared with the truth (live, deleted and drifted).
    pub compared: usize,
    /// Live keys curated at the truth's version.
    pub matched: usize,
    /// Deleted keys tombstoned.
    pub tombstoned: usize,
    /// Drifted keys in the DLQ with their kind.
    pub drifted_in_dlq: usize,
    /// Missing live keys, deleted keys still live, drifted keys absent from the DLQ.
    pub lost: usize,
    /// Everything committed twice ([`Doubles::total`]).
    pub doubled: usize,
    /// Live keys curated at an older version.
    pub stale: usize,
    /// Keys at a version or with a key the truth does not have, drifted keys curated, and
    /// dead letters of a kind no drift explains.
    pub wrong: usize,
}

/// The figures of a comparison and the doubles, and a printable per-stream table.
pub fn figures(r: &VerifyReport, d: &Doubles) -> (Figures, String) {
    let mut f = Figures {
        doubled: d.total(),
        ..Figures::default()
    };
    let mut table = String::new();
    for (k, c) in &r.streams {
        f.compared += c.expected_live + c.tombstoned + c.not_tombstoned.len() + c.drifted;
        f.matched += c.matched;
        f.tombstoned += c.tombstoned;
        f.drifted_in_dlq += c.drifted_in_dlq;
        f.lost += c.missing.len() + c.not_tombstoned.len() + (c.drifted - c.drifted_in_dlq);
        f.stale += c.stale.len();
        f.wrong += c.wrong.len() + c.drifted_curated.len();
        table.push_str(&format!(
            "  {k:<14} live {:>5} matched {:>5} | tombstoned {:>4} | drifted {:>3} in DLQ {:>3} | missing {} stale {} wrong {} not tombstoned {} drifted curated {}\n",
            c.expected_live,
            c.matched,
            c.tombstoned,
            c.drifted,
            c.drifted_in_dlq,
            c.missing.len(),
            c.stale.len(),
            c.wrong.len(),
            c.not_tombstoned.len(),
            c.drifted_curated.len(),
        ));
        for (what, ids) in c.failing_ids() {
            table.push_str(&format!("      {what}: {ids}\n"));
        }
    }
    let odd_kinds: u64 = r
        .dlq_by_kind
        .iter()
        .filter(|(k, _)| !DRIFT_KINDS.contains(&k.as_str()))
        .map(|(_, n)| n)
        .sum();
    f.wrong += odd_kinds as usize;
    table.push_str(&format!(
        "  dead letters by kind: {:?}\n  committed twice: {d:?}\n",
        r.dlq_by_kind
    ));
    (f, table)
}

/// Asserts the report equals the truth exactly: per stream, every live non-drifted key
/// matched, every deleted non-drifted key tombstoned (`all_deletes_curated`: every deleted
/// key was curated before, as with webhooks on), every drifted key in the DLQ with its kind,
/// nothing else; no other DLQ kind; and nothing committed twice.
pub fn assert_exact(
    r: &VerifyReport,
    d: &Doubles,
    truth: &serde_json::Value,
    all_deletes_curated: bool,
) -> Figures {
    let (f, table) = figures(r, d);
    let counts = truth_counts(truth);
    assert_eq!(
        r.streams.keys().collect::<Vec<_>>(),
        counts.keys().collect::<Vec<_>>(),
        "streams compared"
    );
    for (k, c) in &r.streams {
        let (live, deleted, drifted) = counts[k];
        assert_eq!(c.expected_live, live, "{k}: live keys\n{table}");
        assert_eq!(c.matched, live, "{k}: matched\n{table}");
        assert!(c.missing.is_empty(), "{k}: missing\n{table}");
        assert!(c.stale.is_empty(), "{k}: stale\n{table}");
        assert!(c.wrong.is_empty(), "{k}: wrong\n{table}");
        assert!(c.not_tombstoned.is_empty(), "{k}: not tombstoned\n{table}");
        assert!(
            c.drifted_curated.is_empty(),
            "{k}: drifted curated\n{table}"
        );
        if all_deletes_curated {
            assert_eq!(c.tombstoned, deleted, "{k}: tombstoned\n{table}");
        } else {
            assert!(c.tombstoned <= deleted, "{k}: tombstoned\n{table}");
        }
        assert_eq!(c.drifted, drifted, "{k}: drifted\n{table}");
        assert_eq!(
            c.drifted_in_dlq, drifted,
            "{k}: drifted in the DLQ\n{table}"
        );
    }
    assert!(
        r.dlq_by_kind
            .keys()
            .all(|k| DRIFT_KINDS.contains(&k.as_str())),
        "dead letters of a kind no drift explains\n{table}"
    );
    assert_eq!(d.total(), 0, "committed twice\n{table}");
    assert_eq!(
        (f.lost, f.doubled, f.stale, f.wrong),
        (0, 0, 0, 0),
        "{table}"
    );
    f
}

/// [`converge`] to `truth`, then [`assert_exact`] with the [`doubles`] (the logs' diagnosis
/// printed first when the topics did not converge). Returns the figures and the doubles.
pub async fn assert_converged(
    cfg: &Config,
    truth: &serde_json::Value,
    logs: &[std::path::PathBuf],
    all_deletes_curated: bool,
) -> (Figures, Doubles) {
    let report = converge(cfg, truth, Duration::from_secs(60)).await;
    if !equal(&report) {
        println!("{}", diagnose(cfg, logs).await);
    }
    let d = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || doubles(&cfg))
            .await
            .unwrap()
    };
    (assert_exact(&report, &d, truth, all_deletes_curated), d)
}

/// Reads every curated topic as a tool that knows only the topic name would (Kafka Connect's
/// AvroConverter, Flink's `avro-confluent` format, a console): every version of the subject
/// `<topic>-value` fetched from the registry over its HTTP API, each record's writer schema
/// found among them by the id in its Confluent framing, and decoded by apache-avro into the
/// subject's latest version (schema resolution, as a table created from the subject reads).
/// Per stream, a number per key.
pub type PerStream = BTreeMap<String, BTreeMap<String, u64>>;

/// A claim-check reference (schema `intake.ClaimCheck`, fetched from `<topic>-intake.ClaimCheck`)
/// is resolved as docs/DOWNSTREAM.md tells a reader to: the body read from the blob store,
/// its sha256 checked, and decoded like any record.
/// Returns per stream the live keys with their `version` field (tombstoned keys removed), to
/// be compared with the truth, and the number of live keys read through a reference; panics,
/// naming topic and offset, on a record whose schema is not under the subject or that does
/// not decode.
pub async fn read_by_topic_name(cfg: &Config) -> BTreeMap<String, BTreeMap<String, u64>> {
    read_by_topic_name_resolving(cfg).await.0
}

/// [`read_by_topic_name`], and per stream the live keys whose record came by claim-check with
/// the size of its body.
pub async fn read_by_topic_name_resolving(cfg: &Config) -> (PerStream, PerStream) {
    let (live, resolved, _) = read_by_topic_name_with_keys(cfg).await;
    (live, resolved)
}

/// A curated key as a TopicNameStrategy tool reads it: with a schema under `<topic>-key`, its
/// Avro record's fields by name (strings as is, integers in decimal); `live` is false when
/// the key's last record is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRead {
    pub fields: Vec<(String, String)>,
    pub live: bool,
}

/// Per stream whose curated topic has a `<topic>-key` subject: every key by its `id` field.
pub type KeysPerStream = BTreeMap<String, BTreeMap<String, KeyRead>>;

/// [`read_by_topic_name_resolving`], and the keys of every stream whose curated topic has a
/// `<topic>-key` subject (`key_format = "avro"`), each decoded with its writer schema: a
/// version of that subject, looked up by the id in the key's frame (a key whose id is not
/// one panics, naming topic and offset). Such a stream's records are identified by the key's
/// `id` field; the others' by the key's UTF-8 text.
pub async fn read_by_topic_name_with_keys(cfg: &Config) -> (PerStream, PerStream, KeysPerStream) {
    let names = TopicNames::from_config(cfg);
    let blobs = intake::blob::BlobStore::open(&cfg.blob).unwrap();
    let mut out = BTreeMap::new();
    let mut resolved_out = BTreeMap::new();
    let mut keys_out = BTreeMap::new();
    for (s, ..) in STREAMS {
        let topic = names.curated("sim", s);
        let subject = format!("{topic}-value");
        let versions = super::subject_versions(&subject).await;
        assert!(!versions.is_empty(), "no subject {subject} in the registry");
        let schemas: BTreeMap<u32, apache_avro::Schema> = versions
            .iter()
            .map(|(_, id, text)| (*id, apache_avro::Schema::parse_str(text).unwrap()))
            .collect();
        let latest = &schemas[&versions.last().unwrap().1];
        let claim_subject = format!("{topic}-intake.ClaimCheck");
        let claim_schemas: BTreeMap<u32, apache_avro::Schema> =
            super::subject_versions(&claim_subject)
                .await
                .iter()
                .map(|(_, id, text)| (*id, apache_avro::Schema::parse_str(text).unwrap()))
                .collect();
        let key_subject = format!("{topic}-key");
        let key_schemas: BTreeMap<u32, apache_avro::Schema> = super::subject_versions(&key_subject)
            .await
            .iter()
            .map(|(_, id, text)| (*id, apache_avro::Schema::parse_str(text).unwrap()))
            .collect();
        let mut keys: BTreeMap<String, KeyRead> = BTreeMap::new();
        let mut resolved: BTreeMap<String, u64> = BTreeMap::new();
        let records = {
            let topic = topic.clone();
            tokio::task::spawn_blocking(move || read_all(&topic, "read_committed"))
                .await
                .unwrap()
        };
        let mut live: BTreeMap<String, u64> = BTreeMap::new();
        for r in records {
            let at = format!("{topic}/{}/{}", r.partition, r.offset);
            let (key, fields) = if key_schemas.is_empty() {
                (r.key_str().to_owned(), None)
            } else {
                let raw = r.key.as_deref().unwrap_or_else(|| panic!("{at}: no key"));
                let (id, datum) = intake::registry::wire::unframe(raw)
                    .unwrap_or_else(|e| panic!("{at}: key: {e}"));
                let writer = key_schemas.get(&id).unwrap_or_else(|| {
                    panic!("{at}: key schema id {id} is not a version of {key_subject}")
                });
                let v = apache_avro::reader::datum::GenericDatumReader::builder(writer)
                    .build()
                    .and_then(|r| r.read_value(&mut &datum[..]))
                    .unwrap_or_else(|e| {
                        panic!("{at}: key does not decode with {key_subject}: {e}")
                    });
                let apache_avro::types::Value::Record(fields) = v else {
                    panic!("{at}: the key is not a record");
                };
                let fields: Vec<(String, String)> = fields
                    .into_iter()
                    .map(|(n, v)| {
                        let text = match v {
                            apache_avro::types::Value::String(s) => s,
                            apache_avro::types::Value::Long(x) => x.to_string(),
                            apache_avro::types::Value::Int(x) => x.to_string(),
                            other => panic!("{at}: key field {n} {other:?}"),
                        };
                        (n, text)
                    })
                    .collect();
                let id = fields
                    .iter()
                    .find(|(n, _)| n == "id")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("{at}: no id among the key's fields {fields:?}"));
                (id, Some(fields))
            };
            if let Some(fields) = &fields {
                keys.insert(
                    key.clone(),
                    KeyRead {
                        fields: fields.clone(),
                        live: r.value.is_some(),
                    },
                );
            }
            let Some(value) = r.value.as_deref() else {
                live.remove(&key);
                resolved.remove(&key);
                continue;
            };
            let (id, datum) =
                intake::registry::wire::unframe(value).unwrap_or_else(|e| panic!("{at}: {e}"));
            let body;
            let (id, datum) = if let Some(claim) = claim_schemas.get(&id) {
                // A claim-check reference: decoded with its own registered schema, then the body.
                let v = apache_avro::reader::datum::GenericDatumReader::builder(claim)
                    .build()
                    .and_then(|r| r.read_value(&mut &datum[..]))
                    .unwrap_or_else(|e| panic!("{at}: reference does not decode: {e}"));
                let apache_avro::types::Value::Record(fields) = v else {
                    panic!("{at}: not a record");
                };
                let get = |n: &str| fields.iter().find(|(f, _)| f == n).map(|(_, v)| v.clone());
                let text = |n: &str| match get(n) {
                    Some(apache_avro::types::Value::String(s)) => s,
                    other => panic!("{at}: {n} {other:?}"),
                };
                let reference = intake::blob::BlobRef {
                    uri: text("uri"),
                    sha256: text("sha256"),
                    size: match get("size") {
                        Some(apache_avro::types::Value::Long(n)) => n as u64,
                        other => panic!("{at}: size {other:?}"),
                    },
                };
                let Some(apache_avro::types::Value::Int(schema_id)) = get("schema_id") else {
                    panic!("{at}: schema_id");
                };
                match get("key") {
                    Some(apache_avro::types::Value::Map(m)) => assert_eq!(
                        m.get("id"),
                        Some(&apache_avro::types::Value::String(key.clone())),
                        "{at}: the reference names the key"
                    ),
                    other => panic!("{at}: key {other:?}"),
                }
                body = blobs
                    .get(&reference)
                    .await
                    .unwrap_or_else(|e| panic!("{at}: the body of {}: {e}", reference.uri));
                assert_eq!(body.len() as u64, reference.size, "{at}: size");
                resolved.insert(key.clone(), reference.size);
                let (body_id, body_datum) = intake::registry::wire::unframe(&body)
                    .unwrap_or_else(|e| panic!("{at}: body: {e}"));
                assert_eq!(body_id, schema_id as u32, "{at}: the body's schema id");
                (body_id, body_datum)
            } else {
                resolved.remove(&key);
                (id, datum)
            };
            let writer = schemas
                .get(&id)
                .unwrap_or_else(|| panic!("{at}: schema id {id} is not a version of {subject}"));
            let v = apache_avro::reader::datum::GenericDatumReader::builder(writer)
                .reader_schema(latest)
                .build()
                .unwrap()
                .read_value(&mut &datum[..])
                .unwrap_or_else(|e| panic!("{at}: does not decode with {subject}: {e}"));
            let apache_avro::types::Value::Record(fields) = v else {
                panic!("{at}: not a record");
            };
            let field = |n: &str| fields.iter().find(|(f, _)| f == n).map(|(_, v)| v.clone());
            let id_field = match field("id") {
                Some(apache_avro::types::Value::String(s)) => s,
                other => panic!("{at}: id field {other:?}"),
            };
            assert_eq!(id_field, key, "{at}: the key is the record's id");
            let version = match field("version") {
                Some(apache_avro::types::Value::Long(n)) => u64::try_from(n).unwrap(),
                Some(apache_avro::types::Value::Int(n)) => u64::try_from(n).unwrap(),
                other => panic!("{at}: version field {other:?}"),
            };
            live.insert(key, version);
        }
        out.insert(s.to_owned(), live);
        resolved_out.insert(s.to_owned(), resolved);
        if !key_schemas.is_empty() {
            keys_out.insert(s.to_owned(), keys);
        }
    }
    (out, resolved_out, keys_out)
}

/// Per stream, the truth's live records that are not drifted: id → version (what a curated
/// topic must hold).
pub fn truth_live(truth: &serde_json::Value) -> BTreeMap<String, BTreeMap<String, u64>> {
    STREAMS
        .iter()
        .map(|(s, ..)| {
            let drifted = truth["streams"][*s]["drifted"].as_object().unwrap();
            let live = super::truth_versions(truth, s)
                .into_iter()
                .filter(|(id, _)| !drifted.contains_key(id))
                .collect();
            ((*s).to_owned(), live)
        })
        .collect()
}

/// Webhook events on the landing topic: how many records, and their distinct event ids.
pub fn landed_events(cfg: &Config) -> (u64, BTreeSet<String>) {
    let recs = read_all(&TopicNames::from_config(cfg).landing(), "read_committed");
    let events: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.header(headers::KIND) == Some("event"))
        .collect();
    let ids = events
        .iter()
        .map(|r| {
            r.header(headers::EVENT_ID)
                .expect("an event record carries its event id")
                .to_owned()
        })
        .collect();
    (events.len() as u64, ids)
}

/// The webhook ledger, judged by the simulator's delivery counters (`hooks`, from
/// `/admin/stats` once nothing is pending): every event the simulator made landed (its id is on
/// the landing topic), nothing else did, no delivery was given up, and no more event records
/// landed than were sent. A delivery answered `duplicate` (its identical twin landed) counts
/// as acknowledged without landing again.
pub fn assert_webhook_ledger(hooks: &serde_json::Value, landed: &(u64, BTreeSet<String>)) {
    let faults = webhook_ledger_faults(hooks, landed);
    assert!(
        faults.is_empty(),
        "the webhook ledger: {}",
        faults.join("; ")
    );
}

/// The faults of the webhook ledger ([`assert_webhook_ledger`]), each named; empty when it
/// holds.
pub fn webhook_ledger_faults(
    hooks: &serde_json::Value,
    landed: &(u64, BTreeSet<String>),
) -> Vec<String> {
    let n = |k: &str| {
        hooks[k]
            .as_u64()
            .unwrap_or_else(|| panic!("webhook stats lack {k}: {hooks}"))
    };
    let (records, ids) = landed;
    let mut faults = Vec::new();
    if (n("dropped"), n("pending")) != (0, 0) {
        faults.push(format!("webhooks given up or still pending: {hooks}"));
    }
    if n("acked") != n("enqueued") + n("duplicated") {
        faults.push(format!("not every delivery acknowledged once: {hooks}"));
    }
    if ids.len() as u64 != n("enqueued") {
        faults.push(format!(
            "{} distinct event ids landed, the simulator made {} events: {hooks}",
            ids.len(),
            n("enqueued")
        ));
    }
    if *records > n("sent") {
        faults.push(format!(
            "{records} event records landed from {} deliveries sent: {hooks}",
            n("sent")
        ));
    }
    faults
}
